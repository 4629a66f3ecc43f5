/* Bounded, typed readers over cJSON for the proto decoders (see json.h). */
#include "json.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "upkeep/hash.h"
#include "upkeep/id.h"

/* True when the len bytes at json are free of what RFC 8259 forbids but
 * cJSON lets through: a NUL byte or a \u0000 escape (which would end a C
 * string early, so a value could read differently here than in the sender's
 * JSON) and raw control characters inside strings (which the encoders would
 * print back six times as long). In valid JSON a '"' outside a string opens
 * one and every backslash inside starts an escape, so this one pass tracks
 * strings exactly; on invalid JSON the answer does not matter. */
static bool raw_text_ok(const char *json, size_t len)
{
    bool in_string = false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)json[i];
        if (c == 0)
            return false;
        if (!in_string) {
            if (c == '"')
                in_string = true;
            continue;
        }
        if (c < 0x20)
            return false;
        if (c == '"') {
            in_string = false;
        } else if (c == '\\') {
            if (i + 5 < len && json[i + 1] == 'u' && json[i + 2] == '0' && json[i + 3] == '0' &&
                json[i + 4] == '0' && json[i + 5] == '0')
                return false;
            i++; /* skip the escaped character */
        }
    }
    return true;
}

static int key_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* True when no object inside v (v included) has two members of the same
 * name. Which of two duplicates counts differs between JSON parsers, so a
 * signed manifest or a command with duplicates could mean one thing to the
 * signer and another here. Sorting keeps this O(n log n) per object;
 * recursion is bounded by cJSON's nesting limit. */
static bool keys_unique(const cJSON *v, bool *nomem)
{
    if (!cJSON_IsObject(v) && !cJSON_IsArray(v))
        return true;
    size_t n = 0;
    const cJSON *it = NULL;
    cJSON_ArrayForEach(it, v)
    {
        if (!keys_unique(it, nomem))
            return false;
        n++;
    }
    if (!cJSON_IsObject(v) || n < 2)
        return true;
    const char **keys = malloc(n * sizeof(*keys));
    if (keys == NULL) {
        *nomem = true;
        return false;
    }
    size_t i = 0;
    cJSON_ArrayForEach(it, v)
    {
        keys[i++] = it->string != NULL ? it->string : "";
    }
    qsort(keys, n, sizeof(*keys), key_cmp);
    bool ok = true;
    for (i = 1; i < n && ok; i++)
        ok = strcmp(keys[i - 1], keys[i]) != 0;
    free(keys);
    return ok;
}

upk_err upk__json_check_keys(const cJSON *v)
{
    bool nomem = false;
    if (keys_unique(v, &nomem))
        return UPK_OK;
    return nomem ? UPK_E_NOMEM : UPK_E_JSON_INVALID;
}

upk_err upk__json_parse_object(const char *json, size_t len, size_t max, int version, cJSON **out)
{
    if (json == NULL || out == NULL)
        return UPK_E_INVALID_ARG;
    if (len > max)
        return UPK_E_MSG_TOO_LARGE;
    if (!raw_text_ok(json, len))
        return UPK_E_JSON_INVALID;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, false);
    if (root == NULL)
        return UPK_E_JSON_INVALID;
    /* Only whitespace may follow the value. */
    for (const char *p = end; p != NULL && p < json + len; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n') {
            cJSON_Delete(root);
            return UPK_E_JSON_INVALID;
        }
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return UPK_E_FIELD_TYPE;
    }
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "v");
    upk_err err = UPK_OK;
    if (v == NULL)
        err = UPK_E_FIELD_MISSING;
    else if (!cJSON_IsNumber(v))
        err = UPK_E_FIELD_TYPE;
    else if (v->valuedouble != (double)version)
        err = UPK_E_VERSION_UNSUPPORTED;
    if (err != UPK_OK) {
        cJSON_Delete(root);
        return err;
    }
    *out = root;
    return UPK_OK;
}

upk_err upk__json_str(const cJSON *obj, const char *name, bool optional, char *out, size_t max)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (it == NULL) {
        if (!optional)
            return UPK_E_FIELD_MISSING;
        out[0] = '\0';
        return UPK_OK;
    }
    if (!cJSON_IsString(it) || it->valuestring == NULL)
        return UPK_E_FIELD_TYPE;
    size_t n = strnlen(it->valuestring, max + 1);
    if (n > max)
        return UPK_E_FIELD_TOO_LONG;
    memcpy(out, it->valuestring, n + 1);
    return UPK_OK;
}

upk_err upk__json_id(const cJSON *obj, const char *name, bool optional, char *out)
{
    char tmp[UPK_ID_MAX + 1];
    upk_err err = upk__json_str(obj, name, optional, tmp, UPK_ID_MAX);
    if (err != UPK_OK)
        return err;
    if (tmp[0] == '\0') {
        if (!optional)
            return UPK_E_ID_INVALID;
    } else if (!upk_id_valid(tmp)) {
        return UPK_E_ID_INVALID;
    }
    memcpy(out, tmp, strlen(tmp) + 1);
    return UPK_OK;
}

upk_err upk__json_u64(const cJSON *obj, const char *name, bool optional, uint64_t max,
                      uint64_t *out)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (it == NULL) {
        if (!optional)
            return UPK_E_FIELD_MISSING;
        *out = 0;
        return UPK_OK;
    }
    if (!cJSON_IsNumber(it))
        return UPK_E_FIELD_TYPE;
    double d = it->valuedouble;
    if (!isfinite(d) || d < 0 || d != floor(d) || d > (double)UPK__JSON_SAFE_INT_MAX ||
        d > (double)max)
        return UPK_E_FIELD_RANGE;
    *out = (uint64_t)d;
    return UPK_OK;
}

upk_err upk__json_i64(const cJSON *obj, const char *name, bool optional, int64_t min, int64_t max,
                      int64_t *out)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (it == NULL) {
        if (!optional)
            return UPK_E_FIELD_MISSING;
        *out = 0;
        return UPK_OK;
    }
    if (!cJSON_IsNumber(it))
        return UPK_E_FIELD_TYPE;
    double d = it->valuedouble;
    if (!isfinite(d) || d != floor(d) || d < (double)min || d > (double)max ||
        fabs(d) > (double)UPK__JSON_SAFE_INT_MAX)
        return UPK_E_FIELD_RANGE;
    *out = (int64_t)d;
    return UPK_OK;
}

upk_err upk__json_bool(const cJSON *obj, const char *name, bool optional, bool *out)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (it == NULL) {
        if (!optional)
            return UPK_E_FIELD_MISSING;
        *out = false;
        return UPK_OK;
    }
    if (!cJSON_IsBool(it))
        return UPK_E_FIELD_TYPE;
    *out = cJSON_IsTrue(it);
    return UPK_OK;
}

upk_err upk__json_sha256(const cJSON *obj, const char *name, bool optional, uint8_t out[32])
{
    char hex[UPK_SHA256_HEX_LEN + 1];
    upk_err err = upk__json_str(obj, name, optional, hex, UPK_SHA256_HEX_LEN);
    if (err != UPK_OK)
        return err;
    if (hex[0] == '\0' && optional) {
        memset(out, 0, 32);
        return UPK_OK;
    }
    if (!upk_sha256_hex_valid(hex))
        return UPK_E_FIELD_RANGE;
    uint8_t tmp[32];
    err = upk_hex_decode(hex, UPK_SHA256_HEX_LEN, tmp, sizeof(tmp));
    if (err != UPK_OK)
        return err;
    memcpy(out, tmp, 32);
    return UPK_OK;
}

upk_err upk__json_err(const cJSON *obj, const char *name, bool optional, upk_err *out)
{
    char code[UPK_ID_MAX + 1];
    upk_err err = upk__json_str(obj, name, optional, code, UPK_ID_MAX);
    if (err != UPK_OK)
        return err;
    if (code[0] == '\0' && optional) {
        *out = UPK_OK;
        return UPK_OK;
    }
    upk_err parsed;
    if (!upk_err_from_str(code, &parsed))
        return UPK_E_FIELD_RANGE;
    *out = parsed;
    return UPK_OK;
}

upk_err upk__json_print(const cJSON *obj, char **out, size_t *outlen)
{
    char *s = cJSON_PrintUnformatted(obj);
    if (s == NULL)
        return UPK_E_NOMEM;
    *out = s;
    if (outlen != NULL)
        *outlen = strlen(s);
    return UPK_OK;
}
