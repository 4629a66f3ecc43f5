/* libFuzzer target: the campaign view of `upkeep campaign show|watch`
 * (controller/cli_campaign_view.c) over any reply a controller may send: a
 * hostile or broken controller chooses it, so any JSON must render without a
 * crash or undefined behaviour, every line within the width asked for, and
 * the ETA and watch exit must be computed. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <cjson/cJSON.h>

#include "cli_campaign_view.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 65536)
        return 0;
    cJSON *j = cJSON_ParseWithLength((const char *)data + 1, size - 1);
    if (j == NULL)
        return 0;
    int width = data[0] < 20 ? 0 : data[0];
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (f != NULL) {
        int lines = upk_campaign_render(f, j, width);
        fclose(f);
        int nl = 0;
        size_t col = 0;
        for (size_t i = 0; i < len; i++) {
            if (buf[i] == '\n') {
                nl++;
                col = 0;
            } else if (width > 0 && ++col > (size_t)width - 1) {
                abort(); /* a line wider than asked for */
            }
        }
        if (nl != lines)
            abort(); /* the redraw would move up the wrong number of lines */
        free(buf);
    }
    bool final = false;
    (void)upk_campaign_eta(j);
    (void)upk_campaign_watch_exit(j, &final);
    cJSON_Delete(j);
    return 0;
}
