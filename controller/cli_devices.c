/* `upkeep devices`: the device registry as the controller sees it (list with
 * filters, show one device with its recent events, label a device with a
 * group for campaign targets). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "client.h"
#include "clifmt.h"

#define PAGE     100
#define LIST_MAX 1000000

static void usage(FILE *out)
{
    fprintf(out,
            "usage: upkeep devices [list] [--target EXPR] [--hw HW] [--version V] [--group G]\n"
            "                      [--online|--offline] [--limit N] [--json]\n"
            "       upkeep devices show ID [--json]\n"
            "       upkeep devices label ID GROUP      (GROUP \"\" removes the label)\n\n"
            "EXPR is the campaign target syntax: 'all' or comma-separated key=value terms\n"
            "(hw, version, release, id glob, group, status, online).\n\n" UPK_CLIENT_HELP);
}

static const upk_col cols[] = {
    {"id", "DEVICE", UPK_COL_STR},       {"hw", "HW", UPK_COL_STR},
    {"version", "VERSION", UPK_COL_STR}, {"security_version", "SECVER", UPK_COL_NUM},
    {"status", "STATUS", UPK_COL_STR},   {"online", "ONLINE", UPK_COL_BOOL},
    {"group", "GROUP", UPK_COL_STR},     {"campaign", "CAMPAIGN", UPK_COL_STR},
    {"error", "ERROR", UPK_COL_STR},     {"last_seen_ms", "LAST SEEN", UPK_COL_TIME_MS},
    {"drift", "DRIFT", UPK_COL_BOOL},    {"stale", "STALE", UPK_COL_BOOL},
    {"authed", "LINK KEY", UPK_COL_BOOL}};

static bool append_term(char *expr, size_t cap, const char *key, const char *value)
{
    size_t len = strlen(expr);
    int r = snprintf(expr + len, cap - len, "%s%s=%s", len ? "," : "", key, value);
    return r > 0 && (size_t)r < cap - len;
}

int upk_cli_devices(int argc, char **argv)
{
    enum { O_TARGET = 1, O_HW, O_VERSION, O_GROUP, O_ONLINE, O_OFFLINE, O_LIMIT, O_JSON };
    static const struct option opts[] = {{"target", required_argument, NULL, O_TARGET},
                                         {"hw", required_argument, NULL, O_HW},
                                         {"version", required_argument, NULL, O_VERSION},
                                         {"group", required_argument, NULL, O_GROUP},
                                         {"online", no_argument, NULL, O_ONLINE},
                                         {"offline", no_argument, NULL, O_OFFLINE},
                                         {"limit", required_argument, NULL, O_LIMIT},
                                         {"json", no_argument, NULL, O_JSON},
                                         {"help", no_argument, NULL, 'h'},
                                         UPK_CLIENT_LONG_OPTS,
                                         {0}};
    upk_client_cfg cfg;
    upk_client_cfg_init(&cfg);
    char expr[600] = "";
    bool json = false, ok = true;
    long limit = LIST_MAX;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case O_TARGET: {
            int r = snprintf(expr, sizeof(expr), "%s", strcmp(optarg, "all") == 0 ? "" : optarg);
            ok = r >= 0 && (size_t)r < sizeof(expr);
            break;
        }
        case O_HW:
            ok = append_term(expr, sizeof(expr), "hw", optarg);
            break;
        case O_VERSION:
            ok = append_term(expr, sizeof(expr), "version", optarg);
            break;
        case O_GROUP:
            ok = append_term(expr, sizeof(expr), "group", optarg);
            break;
        case O_ONLINE:
            ok = append_term(expr, sizeof(expr), "online", "1");
            break;
        case O_OFFLINE:
            ok = append_term(expr, sizeof(expr), "online", "0");
            break;
        case O_LIMIT: {
            char *end = NULL;
            limit = strtol(optarg, &end, 10);
            if (end == optarg || *end != '\0' || limit < 1 || limit > LIST_MAX) {
                fprintf(stderr, "upkeep devices: --limit takes 1 to %d\n", LIST_MAX);
                return UPK_EXIT_USAGE;
            }
            break;
        }
        case O_JSON:
            json = true;
            break;
        case 'h':
            usage(stdout);
            return UPK_EXIT_OK;
        default:
            if (c >= UPK_CLIENT_OPT_BROKER && upk_client_cfg_opt(&cfg, c, optarg))
                break;
            usage(stderr);
            return UPK_EXIT_USAGE;
        }
        if (!ok) {
            fprintf(stderr, "upkeep devices: filter too long\n");
            return UPK_EXIT_USAGE;
        }
    }
    int operands = argc - optind;
    const char *sub = operands > 0 ? argv[optind] : "list";
    cJSON *args = cJSON_CreateObject(), *data = NULL;
    int rc = UPK_EXIT_USAGE;
    if (args == NULL)
        return UPK_EXIT_FAIL;
    if (strcmp(sub, "show") == 0 && operands == 2) {
        cJSON_AddStringToObject(args, "id", argv[optind + 1]);
        if ((rc = upk_cli_call(&cfg, "device.show", args, &data)) != UPK_EXIT_OK)
            goto out;
        if (json) {
            upk_json_print(stdout, data);
        } else {
            static const upk_col kv[] = {{"id", "device:", UPK_COL_STR},
                                         {"hw", "hardware:", UPK_COL_STR},
                                         {"release", "release:", UPK_COL_STR},
                                         {"version", "version:", UPK_COL_STR},
                                         {"security_version", "security_version:", UPK_COL_NUM},
                                         {"status", "status:", UPK_COL_STR},
                                         {"error", "error:", UPK_COL_STR},
                                         {"online", "online:", UPK_COL_BOOL},
                                         {"group", "group:", UPK_COL_STR},
                                         {"campaign", "campaign:", UPK_COL_STR},
                                         {"desired_release", "desired release:", UPK_COL_STR},
                                         {"drift", "drift:", UPK_COL_BOOL},
                                         {"stale", "stale:", UPK_COL_BOOL},
                                         {"authed", "link key in use:", UPK_COL_BOOL},
                                         {"support_until", "support until:", UPK_COL_TIME_S},
                                         {"last_patched", "last patched:", UPK_COL_TIME_S},
                                         {"agent", "agent:", UPK_COL_STR},
                                         {"last_seen_ms", "last seen:", UPK_COL_TIME_MS}};
            static const upk_col ev[] = {
                {"seq", "SEQ", UPK_COL_NUM},           {"ts", "TIME", UPK_COL_TIME_S},
                {"campaign", "CAMPAIGN", UPK_COL_STR}, {"version", "VERSION", UPK_COL_STR},
                {"step", "STEP", UPK_COL_STR},         {"error", "ERROR", UPK_COL_STR},
                {"message", "MESSAGE", UPK_COL_STR}};
            upk_kv_print(stdout, data, kv, sizeof(kv) / sizeof(kv[0]));
            printf("\nrecent events:\n");
            upk_table_print(stdout, cJSON_GetObjectItem(data, "events"), ev,
                            sizeof(ev) / sizeof(ev[0]));
        }
    } else if (strcmp(sub, "label") == 0 && operands == 3) {
        cJSON_AddStringToObject(args, "id", argv[optind + 1]);
        cJSON_AddStringToObject(args, "group", argv[optind + 2]);
        if ((rc = upk_cli_call(&cfg, "device.label", args, NULL)) == UPK_EXIT_OK)
            printf("device %s: group '%s'\n", argv[optind + 1], argv[optind + 2]);
    } else if (strcmp(sub, "list") == 0 && operands <= 1) {
        /* Page through with "after" so that no reply exceeds a message. */
        char why[512];
        upk_client *cl = NULL;
        upk_err err = upk_client_connect(&cfg, &cl, why, sizeof(why));
        if (err != UPK_OK) {
            fprintf(stderr, "upkeep: %s\n", why);
            rc = upk_client_exit_code(err);
            goto out;
        }
        cJSON *all = cJSON_CreateArray();
        char after[80] = "";
        cJSON_AddStringToObject(args, "target", expr[0] ? expr : "all");
        cJSON_AddNumberToObject(args, "limit", PAGE);
        rc = UPK_EXIT_OK;
        while (all != NULL && cJSON_GetArraySize(all) < limit) {
            cJSON_DeleteItemFromObject(args, "after");
            cJSON_AddStringToObject(args, "after", after);
            cJSON *page = NULL;
            err = upk_client_call(cl, "device.list", args, &page, why, sizeof(why));
            if (err != UPK_OK) {
                fputs("upkeep: ", stderr);
                upk_term_puts(stderr, why);
                fprintf(stderr, " (%s)\n", upk_err_str(err));
                rc = upk_client_exit_code(err);
                break;
            }
            int n = cJSON_GetArraySize(page);
            cJSON *row;
            while ((row = cJSON_DetachItemFromArray(page, 0)) != NULL &&
                   cJSON_GetArraySize(all) < limit) {
                int r = snprintf(after, sizeof(after), "%s",
                                 cJSON_GetStringValue(cJSON_GetObjectItem(row, "id")));
                (void)r;
                cJSON_AddItemToArray(all, row);
            }
            cJSON_Delete(row);
            cJSON_Delete(page);
            if (n < PAGE)
                break;
        }
        upk_client_close(cl);
        if (rc == UPK_EXIT_OK) {
            if (json)
                upk_json_print(stdout, all);
            else
                upk_table_print(stdout, all, cols, sizeof(cols) / sizeof(cols[0]));
        }
        cJSON_Delete(all);
    } else {
        if (strcmp(sub, "label") == 0)
            fprintf(stderr, "upkeep devices label: give a device ID and a GROUP (\"\" removes "
                            "the label)\n\n");
        else if (strcmp(sub, "show") == 0)
            fprintf(stderr, "upkeep devices show: give one device ID\n\n");
        else if (strcmp(sub, "list") == 0)
            fprintf(stderr, "upkeep devices list: takes no operand (filter with --target)\n\n");
        else
            fprintf(stderr, "upkeep devices: unknown subcommand '%s' (list, show, label)\n\n", sub);
        usage(stderr);
    }
out:
    cJSON_Delete(data);
    cJSON_Delete(args);
    return rc;
}
