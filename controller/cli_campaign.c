/* `upkeep campaign`: create, list, show, watch (live view), pause, resume,
 * abort and rollback of staged rollouts; all over MQTT to `upkeep serve`. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "client.h"
#include "clifmt.h"
#include "engine.h"
#include "upkeep/timefmt.h"

static void usage(FILE *out)
{
    fprintf(
        out,
        "usage: upkeep campaign create --release R [--target EXPR] [--stages 1%%,10%%,50%%,100%%]\n"
        "                              [--soak 10m] [--max-failures 5%%] [--device-timeout 30m]\n"
        "                              [--rate 200/min] [--max-in-flight 500] [--auto-rollback]\n"
        "                              [--bake 10m] [--max-unhealthy 0%%] [--restart-limit 3]\n"
        "                              [--compare-baseline] [--baseline-factor 1.5]\n"
        "                              [--id ID] [--json]\n"
        "       upkeep campaign list [--json]\n"
        "       upkeep campaign show ID [--devices] [--json]\n"
        "       upkeep campaign watch ID [--interval SECONDS] [--once]\n"
        "       upkeep campaign pause|resume|abort|rollback ID [--reason TEXT]\n\n"
        "--target selects devices: 'all' (default) or comma-separated key=value terms,\n"
        "all of which must hold: hw=, version=, release=, id= (glob, e.g. id=lab-*),\n"
        "group= (set with `upkeep devices label`), status=, online=1|0. Only devices\n"
        "whose hardware the release lists are included.\n"
        "A stage advances when its devices are done or timed out, failures stay within\n"
        "--max-failures and --soak has passed; otherwise the campaign halts (paused,\n"
        "with the reason) and, with --auto-rollback, puts the previous release back.\n"
        "--bake turns the health gate on: a done stage also waits the bake window, then\n"
        "halts when more than --max-unhealthy of its devices rolled back, failed a\n"
        "health check or restarted more than --restart-limit times, or (with\n"
        "--compare-baseline) a metric's mean on updated devices is above\n"
        "--baseline-factor times its mean on not-updated devices of the same hardware.\n"
        "watch exits 0 when the campaign completes, 1 when it is aborted or rolled "
        "back.\n\n" UPK_CLIENT_HELP);
}

static const upk_col list_cols[] = {{"id", "ID", UPK_COL_STR},
                                    {"release", "RELEASE", UPK_COL_STR},
                                    {"state", "STATE", UPK_COL_STR},
                                    {"stage", "STAGE", UPK_COL_NUM},
                                    {"stage_count", "OF", UPK_COL_NUM},
                                    {"devices", "DEVICES", UPK_COL_NUM},
                                    {"succeeded", "DONE", UPK_COL_NUM},
                                    {"failed", "FAILED", UPK_COL_NUM},
                                    {"created_ms", "CREATED", UPK_COL_TIME_MS},
                                    {"created_by", "BY", UPK_COL_STR},
                                    {"reason", "REASON", UPK_COL_STR}};

static const upk_col show_cols[] = {{"id", "campaign:", UPK_COL_STR},
                                    {"release", "release:", UPK_COL_STR},
                                    {"target", "target:", UPK_COL_STR},
                                    {"state", "state:", UPK_COL_STR},
                                    {"reason", "reason:", UPK_COL_STR},
                                    {"stage", "stage:", UPK_COL_NUM},
                                    {"stage_count", "stages:", UPK_COL_NUM},
                                    {"devices", "devices:", UPK_COL_NUM},
                                    {"soak_s", "soak (s):", UPK_COL_NUM},
                                    {"max_fail_bp", "max failures:", UPK_COL_BP},
                                    {"device_timeout_s", "device timeout (s):", UPK_COL_NUM},
                                    {"rate_per_min", "rate (/min, 0=any):", UPK_COL_NUM},
                                    {"max_in_flight", "max in flight (0=any):", UPK_COL_NUM},
                                    {"auto_rollback", "auto rollback:", UPK_COL_BOOL},
                                    {"bake_s", "bake (s, 0=off):", UPK_COL_NUM},
                                    {"max_unhealthy_bp", "max unhealthy:", UPK_COL_BP},
                                    {"restart_limit", "restart limit:", UPK_COL_NUM},
                                    {"compare_baseline", "compare baseline:", UPK_COL_BOOL},
                                    {"created_by", "created by:", UPK_COL_STR},
                                    {"created_ms", "created:", UPK_COL_TIME_MS},
                                    {"finished_ms", "finished:", UPK_COL_TIME_MS}};

static double num(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

static const char *str(const cJSON *o, const char *k)
{
    const char *s = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, k));
    return s != NULL ? s : "";
}

/* The watch view; returns the number of lines printed. */
static int render(FILE *out, const cJSON *c)
{
    int lines = 0;
    char bar[64], eta[32], pct[32];
    fprintf(out, "campaign %s  release %s  state %s  stage %d/%d\n", str(c, "id"),
            str(c, "release"), str(c, "state"), (int)num(c, "stage"), (int)num(c, "stage_count"));
    lines++;
    if (str(c, "reason")[0] != '\0') {
        fprintf(out, "reason: %s\n", str(c, "reason"));
        lines++;
    }
    const cJSON *stages = cJSON_GetObjectItem(c, "stages"), *s;
    int cur = (int)num(c, "stage");
    cJSON_ArrayForEach(s, stages)
    {
        double total = num(s, "total");
        double ok = num(s, "succeeded");
        double bad = num(s, "failed") + num(s, "timed_out");
        double fin = ok + bad + num(s, "skipped");
        upk_bar_format(fin, total, 30, bar, sizeof(bar));
        int r = snprintf(pct, sizeof(pct), "%.2f%%", num(s, "share_bp") / 100);
        (void)r;
        fprintf(out, "%c stage %-2d %7s %s %5.0f/%-5.0f ok %-5.0f failed %-4.0f running %-4.0f\n",
                (int)num(s, "stage") == cur ? '>' : ' ', (int)num(s, "stage"), pct, bar, fin, total,
                ok, bad, num(s, "assigned") + num(s, "in_progress"));
        lines++;
    }
    /* Failure rate of the current stage against the threshold. */
    const cJSON *cs = cJSON_GetArrayItem(stages, cur - 1);
    if (cs != NULL) {
        double total = num(cs, "total"), bad = num(cs, "failed") + num(cs, "timed_out");
        fprintf(out, "failures in stage %d: %.0f of %.0f (%.2f%%), threshold %.2f%%\n", cur, bad,
                total, total > 0 ? bad * 100 / total : 0.0, num(c, "max_fail_bp") / 100);
        lines++;
    }
    if (str(c, "gate")[0] != '\0') {
        fprintf(out, "%s\n", str(c, "gate"));
        lines++;
    }
    const cJSON *counts = cJSON_GetObjectItem(c, "counts");
    fprintf(out, "devices:");
    for (int k = 0; k < UPK_CDEV__COUNT; k++)
        fprintf(out, " %s %.0f", upk_cdev_state_str((upk_cdev_state)k),
                num(counts, upk_cdev_state_str((upk_cdev_state)k)));
    fprintf(out, " (offline waiting %.0f)\n", num(c, "offline_waiting"));
    lines++;
    upk_duration_format(num(c, "eta_s"), eta, sizeof(eta));
    fprintf(out, "ETA %s\n", strcmp(str(c, "state"), "running") == 0 ? eta : "-");
    lines++;
    return lines;
}

static volatile sig_atomic_t stop_watch;

static void on_sigint(int sig)
{
    (void)sig;
    stop_watch = 1;
}

static int watch(const upk_client_cfg *cfg, const char *id, unsigned interval_ms, bool once)
{
    char why[512];
    upk_client *c = NULL;
    upk_err err = upk_client_connect(cfg, &c, why, sizeof(why));
    if (err != UPK_OK) {
        fprintf(stderr, "upkeep: %s\n", why);
        return upk_client_exit_code(err);
    }
    bool tty = upk_cli_isatty();
    int prev_lines = 0, rc = UPK_EXIT_OK;
    char last[512] = "";
    cJSON *args = cJSON_CreateObject();
    if (args == NULL) {
        upk_client_close(c);
        return UPK_EXIT_FAIL;
    }
    cJSON_AddStringToObject(args, "id", id);
    signal(SIGINT, on_sigint);
    while (!stop_watch) {
        cJSON *data = NULL;
        err = upk_client_call(c, "campaign.show", args, &data, why, sizeof(why));
        if (err != UPK_OK) {
            fprintf(stderr, "upkeep: %s (%s)\n", why, upk_err_str(err));
            rc = upk_client_exit_code(err);
            break;
        }
        const char *state = str(data, "state");
        if (tty) {
            /* Redraw in place: move up over the previous frame and clear it. */
            if (prev_lines > 0)
                printf("\033[%dA\033[J", prev_lines);
            prev_lines = render(stdout, data);
        } else {
            const cJSON *counts = cJSON_GetObjectItem(data, "counts");
            char line[512];
            int r =
                snprintf(line, sizeof(line),
                         "campaign=%s state=%s stage=%d/%d succeeded=%.0f failed=%.0f "
                         "timed_out=%.0f running=%.0f pending=%.0f reason=\"%s\"",
                         id, state, (int)num(data, "stage"), (int)num(data, "stage_count"),
                         num(counts, "succeeded"), num(counts, "failed"), num(counts, "timed_out"),
                         num(counts, "assigned") + num(counts, "in_progress"),
                         num(counts, "pending"), str(data, "reason"));
            if (r > 0 && (size_t)r < sizeof(line) && str(data, "gate")[0] != '\0')
                r = snprintf(line + r, sizeof(line) - (size_t)r, " gate=\"%s\"", str(data, "gate"));
            (void)r;
            if (strcmp(line, last) != 0) {
                char ts[32];
                if (upk_time_format((int64_t)time(NULL), ts, sizeof(ts)) != UPK_OK)
                    ts[0] = '\0';
                printf("%s %s\n", ts, line);
                memcpy(last, line, sizeof(last));
            }
        }
        fflush(stdout);
        bool final = strcmp(state, "completed") == 0 || strcmp(state, "aborted") == 0 ||
                     strcmp(state, "rolled_back") == 0;
        if (final)
            rc = strcmp(state, "completed") == 0 ? UPK_EXIT_OK : UPK_EXIT_FAIL;
        cJSON_Delete(data);
        if (final || once)
            break;
        struct timespec ts = {(time_t)(interval_ms / 1000), (long)(interval_ms % 1000) * 1000000};
        nanosleep(&ts, NULL);
    }
    cJSON_Delete(args);
    upk_client_close(c);
    return rc;
}

int upk_cli_campaign(int argc, char **argv)
{
    enum {
        O_RELEASE = 1,
        O_TARGET,
        O_STAGES,
        O_SOAK,
        O_MAXF,
        O_TIMEOUT,
        O_RATE,
        O_MIF,
        O_AR,
        O_BAKE,
        O_MAXU,
        O_RL,
        O_CB,
        O_BF,
        O_ID,
        O_JSON,
        O_DEVICES,
        O_REASON,
        O_INTERVAL,
        O_ONCE
    };
    static const struct option opts[] = {{"release", required_argument, NULL, O_RELEASE},
                                         {"target", required_argument, NULL, O_TARGET},
                                         {"stages", required_argument, NULL, O_STAGES},
                                         {"soak", required_argument, NULL, O_SOAK},
                                         {"max-failures", required_argument, NULL, O_MAXF},
                                         {"device-timeout", required_argument, NULL, O_TIMEOUT},
                                         {"rate", required_argument, NULL, O_RATE},
                                         {"max-in-flight", required_argument, NULL, O_MIF},
                                         {"auto-rollback", no_argument, NULL, O_AR},
                                         {"bake", required_argument, NULL, O_BAKE},
                                         {"max-unhealthy", required_argument, NULL, O_MAXU},
                                         {"restart-limit", required_argument, NULL, O_RL},
                                         {"compare-baseline", no_argument, NULL, O_CB},
                                         {"baseline-factor", required_argument, NULL, O_BF},
                                         {"id", required_argument, NULL, O_ID},
                                         {"json", no_argument, NULL, O_JSON},
                                         {"devices", no_argument, NULL, O_DEVICES},
                                         {"reason", required_argument, NULL, O_REASON},
                                         {"interval", required_argument, NULL, O_INTERVAL},
                                         {"once", no_argument, NULL, O_ONCE},
                                         {"help", no_argument, NULL, 'h'},
                                         UPK_CLIENT_LONG_OPTS,
                                         {0}};
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        if (argc < 2)
            fprintf(stderr, "upkeep campaign: a subcommand is missing (create, list, show, "
                            "watch, pause, resume, abort, rollback)\n\n");
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? UPK_EXIT_USAGE : UPK_EXIT_OK;
    }
    const char *sub = argv[1];
    argc--;
    argv++;
    upk_client_cfg cfg;
    upk_client_cfg_init(&cfg);
    cJSON *args = cJSON_CreateObject();
    if (args == NULL)
        return UPK_EXIT_FAIL;
    bool json = false, once = false;
    unsigned interval_ms = 1000;
    int c, rc = UPK_EXIT_USAGE;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case O_RELEASE:
            cJSON_AddStringToObject(args, "release", optarg);
            break;
        case O_TARGET:
            cJSON_AddStringToObject(args, "target", optarg);
            break;
        case O_STAGES:
            cJSON_AddStringToObject(args, "stages", optarg);
            break;
        case O_SOAK:
            cJSON_AddStringToObject(args, "soak", optarg);
            break;
        case O_MAXF:
            cJSON_AddStringToObject(args, "max_failures", optarg);
            break;
        case O_TIMEOUT:
            cJSON_AddStringToObject(args, "device_timeout", optarg);
            break;
        case O_RATE:
            cJSON_AddStringToObject(args, "rate", optarg);
            break;
        case O_MIF: {
            char *end = NULL;
            long v = strtol(optarg, &end, 10);
            if (end == optarg || *end != '\0' || v < 0 || v > 10000000) {
                fprintf(stderr, "upkeep campaign: --max-in-flight takes a number (0 = no cap)\n");
                goto out;
            }
            cJSON_AddNumberToObject(args, "max_in_flight", (double)v);
            break;
        }
        case O_AR:
            cJSON_AddBoolToObject(args, "auto_rollback", true);
            break;
        case O_BAKE:
            cJSON_AddStringToObject(args, "bake", optarg);
            break;
        case O_MAXU:
            cJSON_AddStringToObject(args, "max_unhealthy", optarg);
            break;
        case O_RL: {
            char *end = NULL;
            long v = strtol(optarg, &end, 10);
            if (end == optarg || *end != '\0' || v < 0 || v > 1000000) {
                fprintf(stderr, "upkeep campaign: --restart-limit takes a number >= 0\n");
                goto out;
            }
            cJSON_AddNumberToObject(args, "restart_limit", (double)v);
            break;
        }
        case O_CB:
            cJSON_AddBoolToObject(args, "compare_baseline", true);
            break;
        case O_BF: {
            char *end = NULL;
            double v = strtod(optarg, &end);
            if (end == optarg || *end != '\0' || !(v >= 1.0 && v <= 1000.0)) {
                fprintf(stderr, "upkeep campaign: --baseline-factor takes a number >= 1\n");
                goto out;
            }
            cJSON_AddNumberToObject(args, "baseline_factor", v);
            break;
        }
        case O_ID:
            cJSON_AddStringToObject(args, "id", optarg);
            break;
        case O_JSON:
            json = true;
            break;
        case O_DEVICES:
            cJSON_AddBoolToObject(args, "devices", true);
            break;
        case O_REASON:
            cJSON_AddStringToObject(args, "reason", optarg);
            break;
        case O_INTERVAL: {
            char *end = NULL;
            double v = strtod(optarg, &end);
            if (end == optarg || *end != '\0' || v < 0.1 || v > 3600) {
                fprintf(stderr, "upkeep campaign watch: --interval takes 0.1 to 3600 seconds\n");
                goto out;
            }
            interval_ms = (unsigned)(v * 1000);
            break;
        }
        case O_ONCE:
            once = true;
            break;
        case 'h':
            usage(stdout);
            rc = UPK_EXIT_OK;
            goto out;
        default:
            if (c >= UPK_CLIENT_OPT_BROKER && upk_client_cfg_opt(&cfg, c, optarg))
                break;
            usage(stderr);
            goto out;
        }
    }
    int operands = argc - optind;
    const char *cmd = NULL;
    if (strcmp(sub, "create") == 0) {
        if (operands != 0 || cJSON_GetObjectItem(args, "release") == NULL) {
            fprintf(stderr, "upkeep campaign create: --release is required (see --help)\n");
            goto out;
        }
        cmd = "campaign.create";
    } else if (strcmp(sub, "list") == 0) {
        if (operands != 0)
            goto bad;
        cmd = "campaign.list";
    } else if (strcmp(sub, "show") == 0 || strcmp(sub, "watch") == 0 || strcmp(sub, "pause") == 0 ||
               strcmp(sub, "resume") == 0 || strcmp(sub, "abort") == 0 ||
               strcmp(sub, "rollback") == 0) {
        if (operands != 1)
            goto bad;
        if (cJSON_GetObjectItem(args, "id") != NULL)
            cJSON_DeleteItemFromObject(args, "id");
        cJSON_AddStringToObject(args, "id", argv[optind]);
        if (strcmp(sub, "watch") == 0) {
            rc = watch(&cfg, argv[optind], interval_ms, once);
            goto out;
        }
        static char name[32];
        int r = snprintf(name, sizeof(name), "campaign.%s", sub);
        (void)r;
        cmd = name;
    } else {
        fprintf(stderr, "upkeep campaign: unknown subcommand '%s'; see `upkeep campaign --help`\n",
                sub);
        goto out;
    }
    cJSON *data = NULL;
    rc = upk_cli_call(&cfg, cmd, args, &data);
    if (rc != UPK_EXIT_OK)
        goto out;
    if (json) {
        upk_json_print(stdout, data != NULL ? data : cJSON_GetObjectItem(args, "id"));
    } else if (strcmp(sub, "list") == 0) {
        upk_table_print(stdout, data, list_cols, sizeof(list_cols) / sizeof(list_cols[0]));
    } else if (strcmp(sub, "show") == 0) {
        upk_kv_print(stdout, data, show_cols, sizeof(show_cols) / sizeof(show_cols[0]));
        printf("\n");
        render(stdout, data);
        const cJSON *dl = cJSON_GetObjectItem(data, "device_list");
        if (dl != NULL) {
            static const upk_col dcols[] = {{"device", "DEVICE", UPK_COL_STR},
                                            {"stage", "STAGE", UPK_COL_NUM},
                                            {"state", "STATE", UPK_COL_STR},
                                            {"online", "ONLINE", UPK_COL_BOOL},
                                            {"assigned_ms", "STARTED", UPK_COL_TIME_MS},
                                            {"done_ms", "DONE", UPK_COL_TIME_MS}};
            printf("\n");
            upk_table_print(stdout, dl, dcols, sizeof(dcols) / sizeof(dcols[0]));
        }
    } else if (strcmp(sub, "create") == 0) {
        printf("campaign %s created: %.0f devices in %.0f stages (%.0f skipped: incompatible "
               "hardware; %.0f skipped: busy in another campaign)\n"
               "watch it with: upkeep campaign watch %s\n",
               str(data, "id"), num(data, "devices"), num(data, "stage_count"),
               num(data, "incompatible"), num(data, "busy"), str(data, "id"));
    } else {
        printf("campaign %s: %s done\n", argv[optind], sub);
    }
    cJSON_Delete(data);
    goto out;
bad:
    fprintf(stderr, "upkeep campaign %s: wrong number of operands; see --help\n", sub);
    rc = UPK_EXIT_USAGE;
out:
    cJSON_Delete(args);
    return rc;
}
