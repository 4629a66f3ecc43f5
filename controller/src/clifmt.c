/* Terminal output helpers (clifmt.h). */
#include "clifmt.h"

#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "upkeep/timefmt.h"

#define CELL_MAX 128
#define COLS_MAX 24

/* Length of the valid UTF-8 sequence at p that is not a C1 control, or 0
 * when the byte at p must be escaped. */
static size_t safe_len(const unsigned char *p)
{
    unsigned char b = p[0];
    if (b < 0x20 || b == 0x7f)
        return 0;
    if (b < 0x80)
        return 1;
    size_t n;
    unsigned char lo = 0x80, hi = 0xbf;
    if (b >= 0xc2 && b <= 0xdf) {
        n = 2;
        if (b == 0xc2)
            lo = 0xa0; /* U+0080-U+009F are the C1 controls */
    } else if (b >= 0xe0 && b <= 0xef) {
        n = 3;
        if (b == 0xe0)
            lo = 0xa0; /* overlong */
        else if (b == 0xed)
            hi = 0x9f; /* surrogates */
    } else if (b >= 0xf0 && b <= 0xf4) {
        n = 4;
        if (b == 0xf0)
            lo = 0x90;
        else if (b == 0xf4)
            hi = 0x8f;
    } else {
        return 0;
    }
    if (p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if (p[i] < 0x80 || p[i] > 0xbf)
            return 0;
    return n;
}

bool upk_text_unsafe(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p != '\0') {
        size_t n = safe_len(p);
        if (n == 0)
            return true;
        p += n;
    }
    return false;
}

bool upk_term_escape(const char *s, char *buf, size_t cap)
{
    if (cap == 0)
        return false;
    const unsigned char *p = (const unsigned char *)(s != NULL ? s : "");
    size_t len = 0;
    size_t starts[4] = {0, 0, 0, 0}; /* where the last four pieces began */
    size_t np = 0;
    buf[0] = '\0';
    while (*p != '\0') {
        char esc[5];
        const char *piece = (const char *)p;
        size_t n = safe_len(p), step = n;
        if (n == 0) {
            int r = snprintf(esc, sizeof(esc), "\\x%02X", p[0]);
            (void)r; /* always 4 characters */
            piece = esc;
            n = 4;
            step = 1;
        }
        if (len + n >= cap) {
            /* Cut: make room for "..." so that the cut shows. */
            size_t keep = cap > 4 ? cap - 4 : 0;
            /* Never end inside a UTF-8 sequence or an escape: back to the
             * start of a piece (pieces are 1-4 bytes, so one of the last
             * four starts is at or before keep). */
            if (len > keep) {
                size_t best = 0;
                for (size_t k = 0; k < 4 && k < np; k++)
                    if (starts[k] <= keep && starts[k] > best)
                        best = starts[k];
                len = best;
            }
            int r = snprintf(buf + len, cap - len, "...");
            (void)r; /* cap < 4 keeps what fits */
            return false;
        }
        starts[np++ % 4] = len;
        memcpy(buf + len, piece, n);
        len += n;
        buf[len] = '\0';
        p += step;
    }
    return true;
}

void upk_term_puts(FILE *out, const char *s)
{
    const unsigned char *p = (const unsigned char *)(s != NULL ? s : "");
    while (*p != '\0') {
        size_t n = safe_len(p);
        if (n == 0) {
            fprintf(out, "\\x%02X", p[0]);
            p++;
        } else {
            fwrite(p, 1, n, out);
            p += n;
        }
    }
}

void upk_duration_format(double s, char *buf, size_t cap)
{
    int r;
    if (s < 0) {
        r = snprintf(buf, cap, "-");
    } else if (s < 60) {
        r = snprintf(buf, cap, "%.0fs", s);
    } else if (s < 3600) {
        r = snprintf(buf, cap, "%dm%02ds", (int)s / 60, (int)s % 60);
    } else if (s < 86400 * 3) {
        r = snprintf(buf, cap, "%dh%02dm", (int)(s / 3600), ((int)s % 3600) / 60);
    } else {
        r = snprintf(buf, cap, "%.1fd", s / 86400);
    }
    (void)r;
}

void upk_bar_format(double done, double total, int width, char *buf, size_t cap)
{
    if (cap < (size_t)width + 3 || width <= 0) {
        if (cap > 0)
            buf[0] = '\0';
        return;
    }
    /* The ratio is clamped before the conversion: a huge or NaN value in a
     * reply must not reach an out-of-range (undefined) cast. */
    double ratio = total > 0 ? done / total : 0;
    int fill = !(ratio > 0) ? 0 : ratio >= 1 ? width : (int)(ratio * width + 0.5);
    if (fill > width)
        fill = width;
    buf[0] = '[';
    for (int i = 0; i < width; i++)
        buf[1 + i] = i < fill ? '#' : '.';
    buf[width + 1] = ']';
    buf[width + 2] = '\0';
}

void upk_cell_format(const cJSON *v, upk_col_kind kind, char *buf, size_t cap)
{
    int r = 0;
    if (v == NULL || cJSON_IsNull(v)) {
        r = snprintf(buf, cap, "-");
    } else if (cJSON_IsString(v)) {
        /* Escaped for the terminal; a cut cell ends in "...". */
        bool whole = upk_term_escape(v->valuestring[0] ? v->valuestring : "-", buf, cap);
        (void)whole;
    } else if (cJSON_IsBool(v)) {
        r = snprintf(buf, cap, "%s", cJSON_IsTrue(v) ? "yes" : "no");
    } else if (cJSON_IsNumber(v)) {
        double d = v->valuedouble;
        switch (kind) {
        case UPK_COL_TIME_MS:
        case UPK_COL_TIME_S: {
            /* A time outside 1970..9999 (a broken or hostile reply) prints
             * as "-"; converting it to an integer would be undefined. */
            double t = kind == UPK_COL_TIME_MS ? d / 1000 : d;
            if (!(t >= 1 && t < 253402300800.0) || upk_time_format((int64_t)t, buf, cap) != UPK_OK)
                r = snprintf(buf, cap, "-");
            break;
        }
        case UPK_COL_BOOL:
            r = snprintf(buf, cap, "%s", d != 0 ? "yes" : "no");
            break;
        case UPK_COL_BP:
            r = snprintf(buf, cap, "%.2f%%", d / 100);
            break;
        default:
            if (d > -9007199254740992.0 && d < 9007199254740992.0 && d == (double)(long long)d)
                r = snprintf(buf, cap, "%lld", (long long)d);
            else
                r = snprintf(buf, cap, "%.2f", d);
        }
    } else {
        r = snprintf(buf, cap, "?");
    }
    (void)r;
}

void upk_table_print(FILE *out, const cJSON *rows, const upk_col *cols, size_t ncols)
{
    size_t w[COLS_MAX];
    char cell[CELL_MAX];
    if (ncols > COLS_MAX)
        ncols = COLS_MAX;
    for (size_t i = 0; i < ncols; i++)
        w[i] = strlen(cols[i].header);
    const cJSON *row;
    cJSON_ArrayForEach(row, rows)
    {
        for (size_t i = 0; i < ncols; i++) {
            upk_cell_format(cJSON_GetObjectItemCaseSensitive(row, cols[i].key), cols[i].kind, cell,
                            sizeof(cell));
            if (strlen(cell) > w[i])
                w[i] = strlen(cell);
        }
    }
    for (size_t i = 0; i < ncols; i++)
        fprintf(out, "%-*s%s", (int)w[i], cols[i].header, i + 1 < ncols ? "  " : "\n");
    cJSON_ArrayForEach(row, rows)
    {
        for (size_t i = 0; i < ncols; i++) {
            upk_cell_format(cJSON_GetObjectItemCaseSensitive(row, cols[i].key), cols[i].kind, cell,
                            sizeof(cell));
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(row, cols[i].key);
            if (i + 1 < ncols) {
                fprintf(out, "%-*s  ", (int)w[i], cell);
            } else if (cJSON_IsString(v) && v->valuestring[0] != '\0') {
                /* The last column is printed whole (escaped): an audit's
                 * arguments or an event's message are never cut. */
                upk_term_puts(out, v->valuestring);
                fputc('\n', out);
            } else {
                fprintf(out, "%s\n", cell);
            }
        }
    }
}

void upk_kv_print(FILE *out, const cJSON *obj, const upk_col *cols, size_t ncols)
{
    char cell[CELL_MAX * 4];
    size_t w = 0;
    for (size_t i = 0; i < ncols; i++)
        if (strlen(cols[i].header) > w)
            w = strlen(cols[i].header);
    for (size_t i = 0; i < ncols; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, cols[i].key);
        if (cJSON_IsString(v) && v->valuestring[0] != '\0') {
            fprintf(out, "%-*s  ", (int)w + 1, cols[i].header);
            upk_term_puts(out, v->valuestring); /* whole, escaped */
            fputc('\n', out);
            continue;
        }
        upk_cell_format(v, cols[i].kind, cell, sizeof(cell));
        fprintf(out, "%-*s  %s\n", (int)w + 1, cols[i].header, cell);
    }
}

void upk_json_print(FILE *out, const cJSON *v)
{
    char *s = v != NULL ? cJSON_Print(v) : NULL;
    fprintf(out, "%s\n", s != NULL ? s : "null");
    free(s);
}

void upk_table_print_or_none(FILE *out, const cJSON *rows, const upk_col *cols, size_t ncols,
                             const char *indent)
{
    if (cJSON_GetArraySize(rows) == 0)
        fprintf(out, "%snone\n", indent != NULL ? indent : "");
    else
        upk_table_print(out, rows, cols, ncols);
}
