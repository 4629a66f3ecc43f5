/* `upkeep report posture`: fleet security posture from the controller —
 * devices per version and security_version, share on the latest, devices not
 * patched N days after a fix was released, devices past support_until, and
 * time-to-patch per campaign — as text, JSON, or a self-contained HTML file
 * with an SVG rollout chart per campaign. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "client.h"
#include "clifmt.h"
#include "upkeep/timefmt.h"

static void usage(FILE *out)
{
    fprintf(out, "usage: upkeep report posture [--days N] [--json | --html FILE]\n\n"
                 "--days N: a device counts as unpatched when a release with a higher\n"
                 "security_version for its hardware was imported more than N days ago\n"
                 "(default 30).\n\n" UPK_CLIENT_HELP);
}

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

static void text_report(const cJSON *d)
{
    const cJSON *s = cJSON_GetObjectItem(d, "summary");
    double total = num(s, "total"), on = num(s, "on_latest");
    printf("devices: %.0f\nlatest security_version: %.0f\non latest: %.0f (%.1f%%)\n"
           "unpatched %.0f days after a fix: %.0f\npast support_until: %.0f\n\n",
           total, num(s, "latest_security_version"), on, total > 0 ? on * 100 / total : 0.0,
           num(d, "days"), num(s, "unpatched"), num(s, "past_support"));
    static const upk_col vcols[] = {{"release", "RELEASE", UPK_COL_STR},
                                    {"version", "VERSION", UPK_COL_STR},
                                    {"security_version", "SECVER", UPK_COL_NUM},
                                    {"devices", "DEVICES", UPK_COL_NUM}};
    printf("devices per version:\n");
    upk_table_print_or_none(stdout, cJSON_GetObjectItem(d, "versions"), vcols, 4, "  ");
    static const upk_col scols[] = {{"security_version", "SECVER", UPK_COL_NUM},
                                    {"devices", "DEVICES", UPK_COL_NUM}};
    printf("\ndevices per security_version:\n");
    upk_table_print_or_none(stdout, cJSON_GetObjectItem(d, "security_versions"), scols, 2, "  ");
    static const upk_col ucols[] = {{"id", "DEVICE", UPK_COL_STR},
                                    {"version", "VERSION", UPK_COL_STR},
                                    {"security_version", "SECVER", UPK_COL_NUM},
                                    {"fix_since_ms", "FIX RELEASED", UPK_COL_TIME_MS}};
    printf("\nunpatched (first 50):\n");
    upk_table_print_or_none(stdout, cJSON_GetObjectItem(d, "unpatched"), ucols, 4, "  ");
    static const upk_col pcols[] = {{"id", "DEVICE", UPK_COL_STR},
                                    {"version", "VERSION", UPK_COL_STR},
                                    {"support_until", "SUPPORT UNTIL", UPK_COL_TIME_S}};
    printf("\npast support (first 50):\n");
    upk_table_print_or_none(stdout, cJSON_GetObjectItem(d, "past_support"), pcols, 3, "  ");
    static const upk_col dcols[] = {{"id", "DEVICE", UPK_COL_STR},
                                    {"release", "RELEASE", UPK_COL_STR},
                                    {"version", "VERSION", UPK_COL_STR},
                                    {"desired_release", "DESIRED", UPK_COL_STR},
                                    {"desired_campaign", "CAMPAIGN", UPK_COL_STR},
                                    {"status", "STATUS", UPK_COL_STR}};
    printf("\ndrift: %.0f devices run another release than desired, not updating "
           "(first 50):\n",
           num(s, "drift"));
    upk_table_print_or_none(stdout, cJSON_GetObjectItem(d, "drift"), dcols, 6, "  ");
    const cJSON *cap = cJSON_GetObjectItem(d, "capability");
    printf("\nupdate capability (docs/update-capability.md):\n"
           "  reported state: %.0f\n  automatic updates: %.0f\n  signed updates only: %.0f\n"
           "  rollback: %.0f\n  delta: %.0f\n"
           "  end of support signed: %.0f, claimed by the device (not verified): %.0f,"
           " from device config: %.0f, not stated: %.0f\n"
           "  security updates: %.0f supported, %.0f ending within %.0f days, %.0f ended\n",
           num(cap, "reported"), num(cap, "automatic"), num(cap, "signed_only"),
           num(cap, "rollback"), num(cap, "delta"), num(cap, "support_signed"),
           num(cap, "support_claimed"), num(cap, "support_config"), num(cap, "support_unstated"),
           num(cap, "supported"), num(cap, "support_ending"), num(d, "near_days"),
           num(cap, "support_ended"));
    static const upk_col ncols[] = {{"id", "DEVICE", UPK_COL_STR},
                                    {"version", "VERSION", UPK_COL_STR},
                                    {"support_until", "SUPPORT UNTIL", UPK_COL_TIME_S},
                                    {"support_signed", "SIGNED", UPK_COL_BOOL}};
    printf("\nnear end of support (first 50):\n");
    upk_table_print_or_none(stdout, cJSON_GetObjectItem(d, "near_support"), ncols, 4, "  ");
    static const upk_col ccols[] = {{"id", "CAMPAIGN", UPK_COL_STR},
                                    {"release", "RELEASE", UPK_COL_STR},
                                    {"state", "STATE", UPK_COL_STR},
                                    {"succeeded", "PATCHED", UPK_COL_NUM},
                                    {"ttp_median_s", "TTP MEDIAN (s)", UPK_COL_NUM},
                                    {"ttp_p95_s", "TTP P95 (s)", UPK_COL_NUM}};
    printf("\ntime to patch per campaign:\n");
    upk_table_print_or_none(stdout, cJSON_GetObjectItem(d, "campaigns"), ccols, 6, "  ");
}

static void html_escape(FILE *f, const char *s)
{
    for (; *s != '\0'; s++) {
        switch (*s) {
        case '<':
            fputs("&lt;", f);
            break;
        case '>':
            fputs("&gt;", f);
            break;
        case '&':
            fputs("&amp;", f);
            break;
        case '"':
            fputs("&quot;", f);
            break;
        default:
            fputc(*s, f);
        }
    }
}

/* One SVG chart: devices updated over time, stage starts as dashed lines. */
static void svg_chart(FILE *f, const cJSON *c)
{
    const double W = 640, H = 240, L = 50, B = 30, T = 10, R = 10;
    const cJSON *series = cJSON_GetObjectItem(c, "series");
    const cJSON *stages = cJSON_GetObjectItem(c, "stages");
    double t0 = num(c, "created_ms"), t1 = t0 + 1000, ymax = 1;
    const cJSON *p, *s;
    cJSON_ArrayForEach(p, series)
    {
        double t = cJSON_GetArrayItem(p, 0)->valuedouble, y = cJSON_GetArrayItem(p, 1)->valuedouble;
        if (t > t1)
            t1 = t;
        if (y > ymax)
            ymax = y;
    }
    double total = 0;
    cJSON_ArrayForEach(s, stages)
    {
        total += num(s, "devices");
        if (num(s, "started_ms") > t1)
            t1 = num(s, "started_ms");
    }
    if (total > ymax)
        ymax = total;
#define X(t) (L + ((t)-t0) / (t1 - t0) * (W - L - R))
#define Y(y) (H - B - (y) / ymax * (H - B - T))
    fprintf(f,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
            "role=\"img\"><rect width=\"100%%\" height=\"100%%\" fill=\"#fff\"/>\n",
            W, H);
    fprintf(f, "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"#333\"/>\n", L,
            H - B, W - R, H - B);
    fprintf(f, "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"#333\"/>\n", L, T, L,
            H - B);
    fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" font-size=\"11\" text-anchor=\"end\">%.0f</text>\n",
            L - 4, T + 10, ymax);
    fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" font-size=\"11\" text-anchor=\"end\">0</text>\n", L - 4,
            H - B);
    char dur[32];
    upk_duration_format((t1 - t0) / 1000, dur, sizeof(dur));
    fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" font-size=\"11\" text-anchor=\"end\">+%s</text>\n",
            W - R, H - 8, dur);
    fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" font-size=\"11\">start</text>\n", L, H - 8);
    cJSON_ArrayForEach(s, stages)
    {
        double t = num(s, "started_ms");
        if (t <= 0)
            continue;
        /* A label that would run past the right edge ends at its line. */
        bool right = X(t) + 2 + 48 > W - R;
        fprintf(f,
                "<line x1=\"%.1f\" y1=\"%.0f\" x2=\"%.1f\" y2=\"%.0f\" stroke=\"#c60\" "
                "stroke-dasharray=\"4 3\"/><text x=\"%.1f\" y=\"%.0f\" font-size=\"10\" "
                "fill=\"#c60\"%s>stage %d</text>\n",
                X(t), T, X(t), H - B, right ? X(t) - 2 : X(t) + 2, T + 10,
                right ? " text-anchor=\"end\"" : "", (int)num(s, "stage"));
    }
    fprintf(f, "<polyline fill=\"none\" stroke=\"#06c\" stroke-width=\"2\" points=\"%.1f,%.1f",
            X(t0), Y(0));
    cJSON_ArrayForEach(p, series)
    {
        fprintf(f, " %.1f,%.1f", X(cJSON_GetArrayItem(p, 0)->valuedouble),
                Y(cJSON_GetArrayItem(p, 1)->valuedouble));
    }
    fprintf(f, "\"/>\n</svg>\n");
#undef X
#undef Y
}

static void html_table(FILE *f, const cJSON *rows, const upk_col *cols, size_t n)
{
    char cell[256];
    fprintf(f, "<table><tr>");
    for (size_t i = 0; i < n; i++) {
        fprintf(f, "<th>");
        html_escape(f, cols[i].header);
        fprintf(f, "</th>");
    }
    fprintf(f, "</tr>\n");
    if (cJSON_GetArraySize(rows) == 0)
        fprintf(f, "<tr><td colspan=\"%zu\">none</td></tr>\n", n);
    const cJSON *r;
    cJSON_ArrayForEach(r, rows)
    {
        fprintf(f, "<tr>");
        for (size_t i = 0; i < n; i++) {
            upk_cell_format(cJSON_GetObjectItem(r, cols[i].key), cols[i].kind, cell, sizeof(cell));
            fprintf(f, "<td>");
            html_escape(f, cell);
            fprintf(f, "</td>");
        }
        fprintf(f, "</tr>\n");
    }
    fprintf(f, "</table>\n");
}

static int html_report(const cJSON *d, const char *path)
{
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        fprintf(stderr, "upkeep report: cannot write %s\n", path);
        return UPK_EXIT_FAIL;
    }
    const cJSON *s = cJSON_GetObjectItem(d, "summary");
    double total = num(s, "total"), on = num(s, "on_latest");
    char when[32];
    if (upk_time_format((int64_t)(num(d, "generated_ms") / 1000), when, sizeof(when)) != UPK_OK)
        when[0] = '\0';
    fprintf(f,
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>upkeep fleet "
            "posture</title>\n<style>body{font-family:sans-serif;margin:2em;color:#222}"
            "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;"
            "padding:2px 8px;text-align:left}th{background:#eee}.big{font-size:1.4em}"
            "</style></head><body>\n<h1>Fleet security posture</h1>\n<p>generated %s</p>\n",
            when);
    fprintf(f,
            "<p class=\"big\">%.0f devices; %.1f%% on the latest security_version (%.0f)</p>\n"
            "<p>unpatched %.0f days after a fix: <b>%.0f</b>; past support_until: <b>%.0f</b>"
            "</p>\n",
            total, total > 0 ? on * 100 / total : 0.0, num(s, "latest_security_version"),
            num(d, "days"), num(s, "unpatched"), num(s, "past_support"));
    static const upk_col vcols[] = {{"release", "release", UPK_COL_STR},
                                    {"version", "version", UPK_COL_STR},
                                    {"security_version", "security_version", UPK_COL_NUM},
                                    {"devices", "devices", UPK_COL_NUM}};
    fprintf(f, "<h2>Devices per version</h2>\n");
    html_table(f, cJSON_GetObjectItem(d, "versions"), vcols, 4);
    static const upk_col dcols[] = {{"id", "device", UPK_COL_STR},
                                    {"release", "release", UPK_COL_STR},
                                    {"version", "version", UPK_COL_STR},
                                    {"desired_release", "desired release", UPK_COL_STR},
                                    {"desired_campaign", "campaign", UPK_COL_STR},
                                    {"status", "status", UPK_COL_STR}};
    fprintf(f, "<h2>Drift: another release than desired, not updating (%.0f, first 50)</h2>\n",
            num(s, "drift"));
    html_table(f, cJSON_GetObjectItem(d, "drift"), dcols, 6);
    static const upk_col ucols[] = {{"id", "device", UPK_COL_STR},
                                    {"version", "version", UPK_COL_STR},
                                    {"security_version", "security_version", UPK_COL_NUM},
                                    {"fix_since_ms", "fix released", UPK_COL_TIME_MS}};
    fprintf(f, "<h2>Unpatched devices (first 50)</h2>\n");
    html_table(f, cJSON_GetObjectItem(d, "unpatched"), ucols, 4);
    static const upk_col pcols[] = {{"id", "device", UPK_COL_STR},
                                    {"version", "version", UPK_COL_STR},
                                    {"support_until", "support until", UPK_COL_TIME_S}};
    fprintf(f, "<h2>Past support (first 50)</h2>\n");
    html_table(f, cJSON_GetObjectItem(d, "past_support"), pcols, 3);
    const cJSON *cap = cJSON_GetObjectItem(d, "capability");
    fprintf(f,
            "<h2>Update capability</h2>\n<p>automatic updates: %.0f; signed updates only: %.0f;"
            " rollback: %.0f; delta: %.0f (of %.0f reporting)</p>\n<p>end of support signed:"
            " %.0f; claimed by the device (not verified): %.0f; from device config: %.0f; not"
            " stated: %.0f</p>\n<p>security updates: %.0f"
            " supported, %.0f ending within %.0f days, %.0f ended</p>\n",
            num(cap, "automatic"), num(cap, "signed_only"), num(cap, "rollback"), num(cap, "delta"),
            num(cap, "reported"), num(cap, "support_signed"), num(cap, "support_claimed"),
            num(cap, "support_config"), num(cap, "support_unstated"), num(cap, "supported"),
            num(cap, "support_ending"), num(d, "near_days"), num(cap, "support_ended"));
    static const upk_col ncols[] = {{"id", "device", UPK_COL_STR},
                                    {"version", "version", UPK_COL_STR},
                                    {"support_until", "support until", UPK_COL_TIME_S},
                                    {"support_signed", "signed", UPK_COL_BOOL}};
    fprintf(f, "<h2>Near end of support (first 50)</h2>\n");
    html_table(f, cJSON_GetObjectItem(d, "near_support"), ncols, 4);
    fprintf(f, "<h2>Campaigns</h2>\n");
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(d, "campaigns"))
    {
        fprintf(f, "<h3>");
        html_escape(f, str(c, "id"));
        fprintf(f, " &mdash; ");
        html_escape(f, str(c, "release"));
        fprintf(f, " (");
        html_escape(f, str(c, "state"));
        /* No device patched: no time to patch ("n/a"), not "-1 s". */
        char med[32] = "n/a", p95[32] = "n/a";
        if (cJSON_IsNumber(cJSON_GetObjectItem(c, "ttp_median_s"))) {
            int r = snprintf(med, sizeof(med), "%.0f s", num(c, "ttp_median_s"));
            r = snprintf(p95, sizeof(p95), "%.0f s", num(c, "ttp_p95_s"));
            (void)r;
        }
        fprintf(f, ")</h3>\n<p>%.0f devices patched; time to patch median %s, p95 %s</p>\n",
                num(c, "succeeded"), med, p95);
        svg_chart(f, c);
    }
    fprintf(f, "</body></html>\n");
    if (fclose(f) != 0) {
        fprintf(stderr, "upkeep report: write %s failed\n", path);
        return UPK_EXIT_FAIL;
    }
    printf("wrote %s\n", path);
    return UPK_EXIT_OK;
}

int upk_cli_report(int argc, char **argv)
{
    static const struct option opts[] = {{"days", required_argument, NULL, 'd'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"html", required_argument, NULL, 'H'},
                                         {"help", no_argument, NULL, 'h'},
                                         UPK_CLIENT_LONG_OPTS,
                                         {0}};
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? UPK_EXIT_USAGE : UPK_EXIT_OK;
    }
    if (strcmp(argv[1], "posture") != 0) {
        fprintf(stderr, "upkeep report: unknown report '%s' (try: posture)\n", argv[1]);
        return UPK_EXIT_USAGE;
    }
    argc--;
    argv++;
    upk_client_cfg cfg;
    upk_client_cfg_init(&cfg);
    bool json = false;
    const char *html = NULL;
    long days = 30;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == 'j') {
            json = true;
        } else if (c == 'H') {
            html = optarg;
        } else if (c == 'd') {
            char *end = NULL;
            days = strtol(optarg, &end, 10);
            if (end == optarg || *end != '\0' || days < 0 || days > 36500) {
                fprintf(stderr, "upkeep report: --days takes 0 to 36500\n");
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
    if (optind != argc || (json && html != NULL)) {
        if (optind != argc)
            fprintf(stderr, "upkeep report: unexpected operand '%s'\n\n", argv[optind]);
        else
            fprintf(stderr, "upkeep report: give --json or --html, not both\n\n");
        usage(stderr);
        return UPK_EXIT_USAGE;
    }
    cJSON *args = cJSON_CreateObject(), *data = NULL;
    if (args == NULL)
        return UPK_EXIT_FAIL;
    cJSON_AddNumberToObject(args, "days", (double)days);
    int rc = upk_cli_call(&cfg, "report.posture", args, &data);
    cJSON_Delete(args);
    if (rc != UPK_EXIT_OK)
        return rc;
    if (json)
        upk_json_print(stdout, data);
    else if (html != NULL)
        rc = html_report(data, html);
    else
        text_report(data);
    cJSON_Delete(data);
    return rc;
}
