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
#include "cli_campaign_view.h"
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
        "                              [--gate-metric cpu_pct:0..100,rss_mb] [--min-samples 1]\n"
        "                              [--continuous] [--delta-fallback refuse|full]\n"
        "                              [--id ID] [--json]\n"
        "       upkeep campaign list [--json]\n"
        "       upkeep campaign show ID [--devices] [--json]\n"
        "       upkeep campaign watch ID [--interval SECONDS] [--once]\n"
        "       upkeep campaign pause|resume|abort ID [--reason TEXT]\n"
        "       upkeep campaign rollback ID [--reason TEXT] [--wait]\n"
        "       upkeep campaign retry ID DEVICE|--failed\n\n"
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
        "--compare-baseline) a metric's median on updated devices is above\n"
        "--baseline-factor times its median on not-updated devices of the same hardware\n"
        "(each device counts once). --gate-metric names the metrics compared, each with\n"
        "an optional range its values must lie in; without it, the metrics at least\n"
        "half of the updated devices of a hardware report are compared.\n"
        "--continuous keeps the campaign open after its last stage: devices back online\n"
        "after a timeout, and devices that join or newly match the target, are offered\n"
        "the release until an operator ends it. A delta release is refused for devices\n"
        "not on its base (the count is given); --delta-fallback full sends them the\n"
        "full image of the same version instead.\n"
        "rollback gives every started device a release it can install; the campaign is\n"
        "rolling_back until each reports it, then rolled_back, or rollback_incomplete\n"
        "naming the devices that are not back (run rollback again to retry them).\n"
        "watch exits 0 when the campaign completes, 1 when it halts, is aborted or is\n"
        "rolled back (also with --once, which otherwise exits 0).\n\n" UPK_CLIENT_HELP);
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
                                    {"gate_metrics", "gate metrics:", UPK_COL_STR},
                                    {"min_samples", "min samples:", UPK_COL_NUM},
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

/* str() escaped for the terminal (clifmt.h) into buf of UPK_ESC_CAP. */
#define UPK_ESC_CAP 1200
static const char *esc(const cJSON *o, const char *k, char *buf)
{
    bool whole = upk_term_escape(str(o, k), buf, UPK_ESC_CAP);
    (void)whole; /* a cut value ends in "..." */
    return buf;
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
    char last[3 * UPK_ESC_CAP] = "";
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
            fputs("upkeep: ", stderr);
            upk_term_puts(stderr, why);
            fprintf(stderr, " (%s)\n", upk_err_str(err));
            rc = upk_client_exit_code(err);
            break;
        }
        if (tty) {
            /* Redraw in place: move up over the previous frame and clear it;
             * the frame fits the terminal's width, so its line count holds. */
            if (prev_lines > 0)
                printf("\033[%dA\033[J", prev_lines);
            prev_lines = upk_campaign_render(stdout, data, upk_term_width());
        } else {
            const cJSON *counts = cJSON_GetObjectItem(data, "counts");
            char line[3 * UPK_ESC_CAP], e1[UPK_ESC_CAP], e2[UPK_ESC_CAP], e3[UPK_ESC_CAP];
            int r = snprintf(line, sizeof(line),
                             "campaign=%s state=%s stage=%d/%d succeeded=%.0f failed=%.0f "
                             "timed_out=%.0f running=%.0f pending=%.0f reason=\"%s\"",
                             id, esc(data, "state", e3), (int)num(data, "stage"),
                             (int)num(data, "stage_count"), num(counts, "succeeded"),
                             num(counts, "failed"), num(counts, "timed_out"),
                             num(counts, "assigned") + num(counts, "in_progress"),
                             num(counts, "pending"), esc(data, "reason", e1));
            if (r > 0 && (size_t)r < sizeof(line) && str(data, "gate")[0] != '\0')
                r = snprintf(line + r, sizeof(line) - (size_t)r, " gate=\"%s\"",
                             esc(data, "gate", e2));
            /* Devices running another release than this campaign's. */
            if (r > 0 && (size_t)r < sizeof(line) && num(data, "drift") > 0)
                r = snprintf(line + strlen(line), sizeof(line) - strlen(line), " drift=%.0f",
                             num(data, "drift"));
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
        /* Ends on completion (0) and on a halt, abort or finished rollback
         * (1); --once says the same of the state it saw. */
        bool final = false;
        rc = upk_campaign_watch_exit(data, &final);
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

/* `campaign rollback --wait`: follows the rollback to its end and says how
 * it ended: 0 rolled back (every device reported its previous release), 1
 * rollback incomplete (the devices not back are listed), 3 unreachable. */
static int rollback_wait(const upk_client_cfg *cfg, const char *id, unsigned interval_ms)
{
    char why[512];
    upk_client *c = NULL;
    upk_err err = upk_client_connect(cfg, &c, why, sizeof(why));
    if (err != UPK_OK) {
        fprintf(stderr, "upkeep: %s\n", why);
        return upk_client_exit_code(err);
    }
    cJSON *args = cJSON_CreateObject();
    if (args == NULL || cJSON_AddStringToObject(args, "id", id) == NULL) {
        cJSON_Delete(args);
        upk_client_close(c);
        return UPK_EXIT_FAIL;
    }
    int rc = UPK_EXIT_FAIL;
    signal(SIGINT, on_sigint);
    while (!stop_watch) {
        cJSON *data = NULL;
        err = upk_client_call(c, "campaign.show", args, &data, why, sizeof(why));
        if (err != UPK_OK) {
            fputs("upkeep: ", stderr);
            upk_term_puts(stderr, why);
            fprintf(stderr, " (%s)\n", upk_err_str(err));
            rc = upk_client_exit_code(err);
            break;
        }
        const char *state = str(data, "state");
        const cJSON *rb = cJSON_GetObjectItem(data, "rollback");
        bool end = strcmp(state, "rolling_back") != 0;
        if (strcmp(state, "rolled_back") == 0) {
            double n = num(rb, "done");
            printf("campaign %s: rollback done: %.0f %s back on their previous release\n", id, n,
                   n == 1 ? "device" : "devices");
            rc = UPK_EXIT_OK;
        } else if (end) {
            char e1[UPK_ESC_CAP], e2[UPK_ESC_CAP];
            printf("campaign %s: %s: %s\n", id, esc(data, "state", e1), esc(data, "reason", e2));
            const cJSON *d;
            cJSON_ArrayForEach(d, cJSON_GetObjectItem(rb, "devices"))
            {
                if (strcmp(str(d, "state"), "failed") == 0) {
                    char e3[UPK_ESC_CAP];
                    printf("  %s: %s: %s\n", esc(d, "device", e1), esc(d, "error", e2),
                           esc(d, "message", e3));
                }
            }
        }
        cJSON_Delete(data);
        if (end)
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
        O_ONCE,
        O_GM,
        O_MS,
        O_CONT,
        O_DFB,
        O_FAILED,
        O_WAIT
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
                                         {"gate-metric", required_argument, NULL, O_GM},
                                         {"min-samples", required_argument, NULL, O_MS},
                                         {"id", required_argument, NULL, O_ID},
                                         {"json", no_argument, NULL, O_JSON},
                                         {"devices", no_argument, NULL, O_DEVICES},
                                         {"reason", required_argument, NULL, O_REASON},
                                         {"interval", required_argument, NULL, O_INTERVAL},
                                         {"once", no_argument, NULL, O_ONCE},
                                         {"continuous", no_argument, NULL, O_CONT},
                                         {"delta-fallback", required_argument, NULL, O_DFB},
                                         {"failed", no_argument, NULL, O_FAILED},
                                         {"wait", no_argument, NULL, O_WAIT},
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
    bool json = false, once = false, wait_end = false;
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
        case O_GM:
            cJSON_AddStringToObject(args, "gate_metric", optarg);
            break;
        case O_MS: {
            char *end = NULL;
            long v = strtol(optarg, &end, 10);
            if (end == optarg || *end != '\0' || v < 1 || v > 1000000) {
                fprintf(stderr, "upkeep campaign: --min-samples takes a number >= 1\n");
                goto out;
            }
            cJSON_AddNumberToObject(args, "min_samples", (double)v);
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
        case O_CONT:
            cJSON_AddBoolToObject(args, "continuous", true);
            break;
        case O_DFB:
            if (strcmp(optarg, "full") != 0 && strcmp(optarg, "refuse") != 0) {
                fprintf(stderr, "upkeep campaign create: --delta-fallback takes full or refuse\n");
                goto out;
            }
            cJSON_AddStringToObject(args, "delta_fallback", optarg);
            break;
        case O_FAILED:
            cJSON_AddBoolToObject(args, "failed", true);
            break;
        case O_WAIT:
            wait_end = true;
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
    } else if (strcmp(sub, "retry") == 0) {
        bool failed = cJSON_IsTrue(cJSON_GetObjectItem(args, "failed"));
        if (operands != (failed ? 1 : 2)) {
            fprintf(stderr, "upkeep campaign retry: give the campaign and one device, or the "
                            "campaign and --failed\n");
            goto out;
        }
        cJSON_DeleteItemFromObject(args, "id");
        cJSON_AddStringToObject(args, "id", argv[optind]);
        if (!failed)
            cJSON_AddStringToObject(args, "device", argv[optind + 1]);
        cmd = "campaign.retry";
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
        upk_campaign_render(stdout, data, 0);
        const cJSON *dl = cJSON_GetObjectItem(data, "device_list");
        if (dl != NULL) {
            static const upk_col dcols[] = {
                {"device", "DEVICE", UPK_COL_STR},   {"stage", "STAGE", UPK_COL_NUM},
                {"state", "STATE", UPK_COL_STR},     {"error", "ERROR", UPK_COL_STR},
                {"online", "ONLINE", UPK_COL_BOOL},  {"assigned_ms", "STARTED", UPK_COL_TIME_MS},
                {"done_ms", "DONE", UPK_COL_TIME_MS}};
            printf("\n");
            if (cJSON_GetArraySize(dl) == 0)
                printf("devices: none\n");
            else
                upk_table_print(stdout, dl, dcols, sizeof(dcols) / sizeof(dcols[0]));
            const cJSON *rb = cJSON_GetObjectItem(cJSON_GetObjectItem(data, "rollback"), "devices");
            if (rb != NULL) {
                static const upk_col rcols[] = {
                    {"device", "DEVICE", UPK_COL_STR}, {"state", "ROLLBACK", UPK_COL_STR},
                    {"release", "SENT", UPK_COL_STR},  {"version", "VERSION", UPK_COL_STR},
                    {"error", "ERROR", UPK_COL_STR},   {"message", "WHY", UPK_COL_STR}};
                printf("\nrollback:\n");
                upk_table_print(stdout, rb, rcols, sizeof(rcols) / sizeof(rcols[0]));
            }
        }
    } else if (strcmp(sub, "create") == 0) {
        double nd = num(data, "devices"), ns = num(data, "stage_count");
        char e1[UPK_ESC_CAP], e2[UPK_ESC_CAP];
        printf("campaign %s created: %.0f %s in %.0f %s (%.0f skipped: incompatible "
               "hardware; %.0f skipped: busy in another campaign",
               esc(data, "id", e1), nd, nd == 1 ? "device" : "devices", ns,
               ns == 1 ? "stage" : "stages", num(data, "incompatible"), num(data, "busy"));
        if (num(data, "no_module") > 0)
            printf("; %.0f skipped: no install module %s", num(data, "no_module"),
                   esc(data, "module", e2));
        printf(")\n");
        if (num(data, "full_fallback") > 0)
            printf("%.0f %s not on the delta's base get the full image %s\n",
                   num(data, "full_fallback"),
                   num(data, "full_fallback") == 1 ? "device" : "devices",
                   esc(data, "full_release", e2));
        printf("watch it with: upkeep campaign watch %s\n", e1);
    } else if (strcmp(sub, "rollback") == 0) {
        const cJSON *rb = cJSON_GetObjectItem(data, "rollback");
        double done = num(rb, "done"), pend = num(rb, "pending"), failed = num(rb, "failed");
        printf("campaign %s: rolling back %.0f %s: %.0f sent a release to return to, %.0f "
               "already back, %.0f cannot be rolled back\n",
               argv[optind], done + pend + failed, done + pend + failed == 1 ? "device" : "devices",
               pend, done, failed);
        const cJSON *d;
        cJSON_ArrayForEach(d, cJSON_GetObjectItem(rb, "devices"))
        {
            /* With --wait the end lists every device not back. */
            if (!wait_end && strcmp(str(d, "state"), "failed") == 0) {
                char e1[UPK_ESC_CAP], e2[UPK_ESC_CAP], e3[UPK_ESC_CAP];
                printf("  %s: %s: %s\n", esc(d, "device", e1), esc(d, "error", e2),
                       esc(d, "message", e3));
            }
        }
        if (wait_end)
            rc = rollback_wait(&cfg, argv[optind], interval_ms);
        else
            printf("it is rolled_back only when every device reports its previous release "
                   "(rollback_incomplete otherwise); follow it with: upkeep campaign watch %s, "
                   "or use --wait\n",
                   argv[optind]);
    } else if (strcmp(sub, "pause") == 0) {
        char e1[UPK_ESC_CAP];
        if (cJSON_IsTrue(cJSON_GetObjectItem(data, "already")))
            printf("campaign %s is already paused (%s)\n", argv[optind],
                   str(data, "reason")[0] ? esc(data, "reason", e1) : "no reason given");
        else
            printf("campaign %s paused; on resume, a stage's soak starts again once its devices "
                   "are done\n",
                   argv[optind]);
    } else if (strcmp(sub, "retry") == 0) {
        double n = num(data, "retried");
        char e1[UPK_ESC_CAP];
        printf("campaign %s: %.0f %s offered the release again\n", esc(data, "id", e1), n,
               n == 1 ? "device" : "devices");
    } else {
        printf("campaign %s %s\n", argv[optind],
               strcmp(sub, "resume") == 0  ? "resumed"
               : strcmp(sub, "abort") == 0 ? "aborted"
                                           : sub);
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
