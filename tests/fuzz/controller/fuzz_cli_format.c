/* libFuzzer target: the CLI's printing of reply data from the controller
 * (clifmt: tables, key/value lists, cells of every kind, pretty JSON). A
 * hostile or broken controller chooses that data, so any JSON must print
 * without a crash, and every formatted cell must stay within its buffer. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "clifmt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static FILE *sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 65536)
        return 0;
    if (sink == NULL && (sink = fopen("/dev/null", "w")) == NULL)
        return 0;
    cJSON *j = cJSON_ParseWithLength((const char *)data, size);
    if (j == NULL)
        return 0;
    static const upk_col cols[] = {
        {"id", "ID", UPK_COL_STR},  {"n", "N", UPK_COL_NUM},  {"t", "T", UPK_COL_TIME_MS},
        {"s", "S", UPK_COL_TIME_S}, {"b", "B", UPK_COL_BOOL}, {"bp", "BP", UPK_COL_BP},
    };
    const size_t ncols = sizeof(cols) / sizeof(cols[0]);
    upk_table_print(sink, j, cols, ncols);
    upk_kv_print(sink, j, cols, ncols);
    upk_json_print(sink, j);
    const cJSON *v;
    char buf[8];
    cJSON_ArrayForEach(v, j)
    {
        for (size_t k = 0; k < ncols; k++) {
            memset(buf, 'x', sizeof(buf));
            upk_cell_format(v, cols[k].kind, buf, sizeof(buf));
            if (memchr(buf, '\0', sizeof(buf)) == NULL)
                abort();
        }
        if (cJSON_IsNumber(v)) {
            char bar[16];
            upk_duration_format(v->valuedouble, buf, sizeof(buf));
            upk_bar_format(v->valuedouble, 100.0, 10, bar, sizeof(bar));
            if (memchr(buf, '\0', sizeof(buf)) == NULL || strlen(bar) != 12)
                abort();
        }
    }
    cJSON_Delete(j);
    return 0;
}
