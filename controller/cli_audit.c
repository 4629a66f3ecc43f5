/* `upkeep audit`: who did what on the controller (every changing command and
 * every refusal, with the broker-stamped sender). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "client.h"
#include "clifmt.h"

static void usage(FILE *out)
{
    fprintf(out, "usage: upkeep audit [--limit N] [--json]\n\n"
                 "Shows the last N (default 100) audit records, oldest first.\n\n" UPK_CLIENT_HELP);
}

int upk_cli_audit(int argc, char **argv)
{
    static const struct option opts[] = {{"limit", required_argument, NULL, 'l'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"help", no_argument, NULL, 'h'},
                                         UPK_CLIENT_LONG_OPTS,
                                         {0}};
    upk_client_cfg cfg;
    upk_client_cfg_init(&cfg);
    bool json = false;
    long limit = 100;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == 'j') {
            json = true;
        } else if (c == 'l') {
            char *end = NULL;
            limit = strtol(optarg, &end, 10);
            if (end == optarg || *end != '\0' || limit < 1 || limit > 100000) {
                fprintf(stderr, "upkeep audit: --limit takes 1 to 100000\n");
                return UPK_EXIT_USAGE;
            }
        } else if (c == 'h') {
            usage(stdout);
            return UPK_EXIT_OK;
        } else if (!(c >= UPK_CLIENT_OPT_BROKER && upk_client_cfg_opt(&cfg, c, optarg))) {
            usage(stderr);
            return UPK_EXIT_USAGE;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "upkeep audit: unexpected operand '%s'\n\n", argv[optind]);
        usage(stderr);
        return UPK_EXIT_USAGE;
    }
    cJSON *args = cJSON_CreateObject(), *data = NULL;
    if (args == NULL)
        return UPK_EXIT_FAIL;
    cJSON_AddNumberToObject(args, "limit", (double)limit);
    int rc = upk_cli_call(&cfg, "audit.list", args, &data);
    cJSON_Delete(args);
    if (rc != UPK_EXIT_OK)
        return rc;
    if (json) {
        upk_json_print(stdout, data);
    } else {
        static const upk_col cols[] = {{"ts_ms", "TIME", UPK_COL_TIME_MS},
                                       {"sender", "WHO", UPK_COL_STR},
                                       {"cmd", "COMMAND", UPK_COL_STR},
                                       {"result", "RESULT", UPK_COL_STR},
                                       {"args", "ARGUMENTS", UPK_COL_STR}};
        upk_table_print(stdout, data, cols, sizeof(cols) / sizeof(cols[0]));
    }
    cJSON_Delete(data);
    return UPK_EXIT_OK;
}
