/* Strict JSON config reading (jsoncfg.h): syntax errors with line and
 * column, unknown fields by name, private keys recognised. */
#include "upkeep/jsoncfg.h"

#include <stdio.h>
#include <string.h>

/* Edit distance of a and b, capped: anything above 3 is 4. Both are field
 * names of at most 63 bytes (longer ones are never suggested). */
#define NAME_CMP_MAX 63

static size_t distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > NAME_CMP_MAX || lb > NAME_CMP_MAX)
        return 4;
    size_t prev[NAME_CMP_MAX + 1], cur[NAME_CMP_MAX + 1];
    for (size_t j = 0; j <= lb; j++)
        prev[j] = j;
    for (size_t i = 1; i <= la; i++) {
        cur[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t sub = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
            size_t del = prev[j] + 1, ins = cur[j - 1] + 1;
            size_t m = sub < del ? sub : del;
            cur[j] = m < ins ? m : ins;
        }
        memcpy(prev, cur, (lb + 1) * sizeof(prev[0]));
    }
    return prev[lb] > 3 ? 4 : prev[lb];
}

upk_err upk_jsoncfg_parse(const char *text, size_t len, cJSON **out, char *why, size_t whycap)
{
    int r;
    if (text == NULL || out == NULL)
        return UPK_E_INVALID_ARG;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, false);
    if (root == NULL) {
        /* end points at (or just past) the byte where parsing stopped. */
        size_t at =
            end != NULL && end >= text && (size_t)(end - text) <= len ? (size_t)(end - text) : len;
        bool blank = true, rest_blank = true;
        for (size_t i = 0; i < len; i++) {
            bool ws = text[i] == ' ' || text[i] == '\t' || text[i] == '\n' || text[i] == '\r';
            if (!ws && i < at)
                blank = false;
            if (!ws && i >= at)
                rest_blank = blank = false;
        }
        if (rest_blank)
            at = len; /* only blanks follow: the file ends before the object does */
        size_t line = 1, col = 1;
        for (size_t i = 0; i < at; i++) {
            if (text[i] == '\n') {
                line++;
                col = 1;
            } else {
                col++;
            }
        }
        if (blank)
            r = snprintf(why, whycap, "top level: empty file, not a JSON object");
        else if (rest_blank)
            r = snprintf(why, whycap,
                         "line %zu, column %zu: JSON syntax error (the file ends too early: "
                         "a missing '}', ']' or '\"'?)",
                         line, col);
        else
            r = snprintf(why, whycap,
                         "line %zu, column %zu: JSON syntax error (a missing or extra ',', "
                         "':' or quote near here?)",
                         line, col);
        (void)r; /* a cut message still names the position first */
        return UPK_E_CONFIG_INVALID;
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        r = snprintf(why, whycap, "top level: not a JSON object (the file must be one {...})");
        (void)r;
        return UPK_E_CONFIG_INVALID;
    }
    *out = root;
    return UPK_OK;
}

upk_err upk_jsoncfg_known(const cJSON *obj, const char *ctx, const char *const *known, char *why,
                          size_t whycap)
{
    if (!cJSON_IsObject(obj) || known == NULL)
        return UPK_OK;
    const cJSON *it;
    cJSON_ArrayForEach(it, obj)
    {
        const char *name = it->string != NULL ? it->string : "?";
        const char *best = NULL;
        size_t best_d = 4;
        bool found = false;
        for (size_t i = 0; known[i] != NULL && !found; i++) {
            found = strcmp(name, known[i]) == 0;
            size_t d = distance(name, known[i]);
            if (d < best_d) {
                best_d = d;
                best = known[i];
            }
        }
        if (found)
            continue;
        int r;
        if (best != NULL && best_d <= 2)
            r = snprintf(why, whycap, "%s%s: unknown field (did you mean '%s'?)",
                         ctx != NULL ? ctx : "", name, best);
        else
            r = snprintf(why, whycap, "%s%s: unknown field", ctx != NULL ? ctx : "", name);
        (void)r; /* a cut message still names the field first */
        return UPK_E_CONFIG_INVALID;
    }
    return UPK_OK;
}

bool upk_jsoncfg_pem_is_private(const char *pem, size_t len)
{
    static const char label[] = "PRIVATE KEY-----";
    size_t n = sizeof(label) - 1;
    if (pem == NULL)
        return false;
    for (size_t i = 0; i + n <= len; i++)
        if (pem[i] == 'P' && memcmp(pem + i, label, n) == 0)
            return true;
    return false;
}
