/* Terminal output helpers (clifmt.h). */
#include "clifmt.h"

#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "upkeep/timefmt.h"

#define CELL_MAX 128
#define COLS_MAX 24

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
        r = snprintf(buf, cap, "%s", v->valuestring[0] ? v->valuestring : "-");
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
            if (i + 1 < ncols)
                fprintf(out, "%-*s  ", (int)w[i], cell);
            else
                fprintf(out, "%s\n", cell);
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
        upk_cell_format(cJSON_GetObjectItemCaseSensitive(obj, cols[i].key), cols[i].kind, cell,
                        sizeof(cell));
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
