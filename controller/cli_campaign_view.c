/* Campaign view of `upkeep campaign show|watch` (cli_campaign_view.h). */
#include "cli_campaign_view.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "clifmt.h"
#include "engine.h"

#define LINE_MAX_CHARS 1024
#define RB_SHOWN       10

static double num(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

/* A count or index from the reply as an int, clamped: a broken or hostile
 * reply must not reach an out-of-range conversion. */
static int inum(const cJSON *o, const char *k)
{
    double d = num(o, k);
    return !(d > -1e6) ? -1 : d > 1e6 ? 1000000 : (int)d;
}

static const char *str(const cJSON *o, const char *k)
{
    const char *s = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, k));
    return s != NULL ? s : "";
}

int upk_term_width(void)
{
    struct winsize ws;
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 20)
        return ws.ws_col;
    return 80;
}

struct view {
    FILE *out;
    int width;
    int lines;
};

/* One logical line, wrapped at spaces to width - 1 (continuations indented
 * two spaces), so the count of printed lines is exact. */
static void emit(struct view *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void emit(struct view *v, const char *fmt, ...)
{
    char raw[LINE_MAX_CHARS], buf[4 * LINE_MAX_CHARS];
    va_list ap;
    va_start(ap, fmt);
    int r = vsnprintf(raw, sizeof(raw), fmt, ap);
    va_end(ap);
    if (r < 0)
        return;
    for (char *p = raw; *p; p++)
        if (*p == '\n' || *p == '\r' || *p == '\t')
            *p = ' ';
    /* The line holds strings from devices and operators (reasons, errors,
     * messages): escaped for the terminal as every CLI view is (clifmt.h).
     * A cut line ends in "...". */
    bool whole = upk_term_escape(raw, buf, sizeof(buf));
    (void)whole;
    if (v->width <= 0) {
        fprintf(v->out, "%s\n", buf);
        v->lines++;
        return;
    }
    size_t max = (size_t)v->width - 1;
    const char *p = buf;
    bool first = true;
    for (int guard = 0; guard < 64; guard++) {
        size_t room = first ? max : max - 2;
        size_t len = strlen(p);
        if (len <= room) {
            fprintf(v->out, "%s%s\n", first ? "" : "  ", p);
            v->lines++;
            return;
        }
        size_t cut = room;
        while (cut > room / 2 && p[cut] != ' ')
            cut--;
        if (p[cut] != ' ')
            cut = room;
        fprintf(v->out, "%s%.*s\n", first ? "" : "  ", (int)cut, p);
        v->lines++;
        p += cut;
        while (*p == ' ')
            p++;
        if (*p == '\0')
            return;
        first = false;
    }
}

static bool is(const cJSON *c, const char *state)
{
    return strcmp(str(c, "state"), state) == 0;
}

/* The wait of a done stage: max(soak, bake), in ms. */
static double wait_ms(const cJSON *c)
{
    double soak = num(c, "soak_s"), bake = num(c, "bake_s");
    return (soak > bake ? soak : bake) * 1000;
}

double upk_campaign_eta(const cJSON *c)
{
    if (!is(c, "running"))
        return -1;
    const cJSON *counts = cJSON_GetObjectItem(c, "counts");
    double n = num(c, "devices");
    double done = num(counts, "succeeded") + num(counts, "failed") + num(counts, "timed_out") +
                  num(counts, "skipped");
    double now = num(c, "now_ms"), created = num(c, "created_ms");
    double stage = num(c, "stage"), stages = num(c, "stage_count");
    double w = wait_ms(c), done_ms = num(c, "stage_done_ms");
    if (now <= 0 || stage < 1)
        return -1;
    /* Soak still to come: the rest of the current stage's, then each later
     * stage's own. */
    double soak_left = done_ms > 0 ? done_ms + w - now : w;
    if (soak_left < 0)
        soak_left = 0;
    double later = (stages - stage) * w;
    if (done >= n) {
        /* A continuous campaign on its last stage stays open: no end. */
        if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "continuous")) && stage >= stages)
            return -1;
        return (soak_left + later) / 1000;
    }
    if (done <= 0)
        return -1;
    /* Time spent updating: elapsed minus the soaks already served. */
    double active = now - created - (stage - 1) * w - (done_ms > 0 ? now - done_ms : 0);
    if (active < 1000)
        active = 1000;
    return (active / done * (n - done) + soak_left + later) / 1000;
}

int upk_campaign_watch_exit(const cJSON *c, bool *final)
{
    bool halted = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "halted"));
    *final = false;
    if (is(c, "completed")) {
        *final = true;
        return 0;
    }
    if (is(c, "aborted") || is(c, "rolled_back") || is(c, "rollback_incomplete") ||
        (is(c, "paused") && halted)) {
        *final = true;
        return 1;
    }
    return is(c, "rolling_back") ? 1 : 0;
}

static void stage_line(struct view *v, const cJSON *c, const cJSON *s, int cur)
{
    char bar[64], pct[32];
    double total = num(s, "total"), ok = num(s, "succeeded");
    double bad = num(s, "failed") + num(s, "timed_out"), skipped = num(s, "skipped");
    double fin = ok + bad;
    int bw = v->width > 0 ? v->width - 66 : 30;
    bw = bw < 8 ? 8 : bw > 30 ? 30 : bw;
    if (total > 0 && skipped >= total) {
        /* Never started (aborted or rolled back first): not a full bar. */
        int r = snprintf(bar, sizeof(bar), "[%-*s]", bw, "skipped");
        (void)r;
    } else {
        upk_bar_format(fin, total - skipped, bw, bar, sizeof(bar));
    }
    int r = snprintf(pct, sizeof(pct), "%.2f%%", num(s, "share_bp") / 100);
    (void)r;
    /* The last column: devices running, or those never started. */
    double running = num(s, "assigned") + num(s, "in_progress");
    char last[48];
    if (skipped > 0 && running == 0)
        r = snprintf(last, sizeof(last), "skipped %.0f", skipped);
    else if (skipped > 0)
        r = snprintf(last, sizeof(last), "running %.0f skipped %.0f", running, skipped);
    else
        r = snprintf(last, sizeof(last), "running %.0f", running);
    (void)r;
    (void)c;
    emit(v, "%c stage %-2d %7s %s %5.0f/%-5.0f ok %-4.0f failed %-4.0f %s",
         inum(s, "stage") == cur ? '>' : ' ', inum(s, "stage"), pct, bar, fin, total, ok, bad,
         last);
}

int upk_campaign_render(FILE *out, const cJSON *c, int width)
{
    struct view v = {out, width, 0};
    char eta[32], left[32], soak[32];
    bool halted = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "halted"));
    emit(&v, "campaign %s  release %s  state %s%s  stage %d/%d%s", str(c, "id"), str(c, "release"),
         str(c, "state"), is(c, "paused") && halted ? " (halted)" : "", inum(c, "stage"),
         inum(c, "stage_count"),
         cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "continuous")) ? "  continuous" : "");
    if (str(c, "reason")[0] != '\0')
        emit(&v, "reason: %s", str(c, "reason"));
    const cJSON *stages = cJSON_GetObjectItem(c, "stages"), *s;
    int cur = inum(c, "stage");
    cJSON_ArrayForEach(s, stages)
    {
        stage_line(&v, c, s, cur);
    }
    /* Failure rate of the current stage against the threshold. */
    const cJSON *cs = cJSON_GetArrayItem(stages, cur - 1);
    if (cs != NULL) {
        double total = num(cs, "total"), bad = num(cs, "failed") + num(cs, "timed_out");
        emit(&v, "failures in stage %d: %.0f of %.0f (%.2f%%), threshold %.2f%%", cur, bad, total,
             total > 0 ? bad * 100 / total : 0.0, num(c, "max_fail_bp") / 100);
    }
    /* The soak (or bake) of a done stage: a countdown; paused, it restarts. */
    double w = wait_ms(c), done_ms = num(c, "stage_done_ms"), now = num(c, "now_ms");
    upk_duration_format(w / 1000, soak, sizeof(soak));
    bool open = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "continuous")) &&
                cur >= inum(c, "stage_count");
    if (open && is(c, "running") && done_ms > 0) {
        emit(&v, "open (continuous): devices that come back or join are offered the release "
                 "until you end it");
    } else if (is(c, "running") && done_ms > 0 && now > 0 && w > 0) {
        double l = (done_ms + w - now) / 1000;
        upk_duration_format(l < 0 ? 0 : l, left, sizeof(left));
        emit(&v, "soak: %s of %s left, then %s", left, soak,
             cur < inum(c, "stage_count") ? "the next stage starts" : "the campaign completes");
    } else if (is(c, "paused") && w > 0) {
        emit(&v, "paused: on resume the stage's soak of %s starts again once its devices are done",
             soak);
    }
    if (str(c, "gate")[0] != '\0')
        emit(&v, "%s", str(c, "gate"));
    const cJSON *counts = cJSON_GetObjectItem(c, "counts");
    char line[LINE_MAX_CHARS];
    size_t len = 0;
    for (int k = 0; k < UPK_CDEV__COUNT; k++) {
        int r = snprintf(line + len, sizeof(line) - len, " %s %.0f",
                         upk_cdev_state_str((upk_cdev_state)k),
                         num(counts, upk_cdev_state_str((upk_cdev_state)k)));
        if (r < 0 || (size_t)r >= sizeof(line) - len)
            break;
        len += (size_t)r;
    }
    emit(&v, "devices:%s (offline waiting %.0f)", line, num(c, "offline_waiting"));
    if (num(c, "drift") > 0)
        emit(&v,
             "DRIFT: %.0f devices run another release than this campaign's "
             "(upkeep devices: DRIFT)",
             num(c, "drift"));
    const cJSON *rb = cJSON_GetObjectItem(c, "rollback");
    if (rb != NULL) {
        emit(&v, "rollback: %.0f back on their previous release, %.0f waiting, %.0f failed",
             num(rb, "done"), num(rb, "pending"), num(rb, "failed"));
        const cJSON *d;
        int shown = 0;
        cJSON_ArrayForEach(d, cJSON_GetObjectItem(rb, "devices"))
        {
            if (strcmp(str(d, "state"), "done") == 0)
                continue;
            if (shown++ == RB_SHOWN) {
                emit(&v, "  ... (`campaign show ID --devices` lists them all)");
                break;
            }
            emit(&v, "  %s %s %s%s%s", str(d, "device"), str(d, "state"),
                 str(d, "error")[0] ? str(d, "error") : str(d, "release"),
                 str(d, "message")[0] ? ": " : "", str(d, "message"));
        }
    }
    upk_duration_format(upk_campaign_eta(c), eta, sizeof(eta));
    emit(&v, "ETA %s", eta);
    return v.lines;
}
