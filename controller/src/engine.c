/* Campaign engine: pure decisions over a campaign row and its device rows
 * (see engine.h). Also the parsers for the campaign knobs an operator types
 * (stages, durations, percentages, rates), so the CLI and the controller
 * agree on one meaning of "10m" or "0.5%". */
#include "engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "upkeep/hash.h"

static const char *const camp_state_names[UPK_CAMP__COUNT] = {
    "running",     "paused",       "completed",          "aborted",
    "rolled_back", "rolling_back", "rollback_incomplete"};
static const char *const cdev_state_names[UPK_CDEV__COUNT] = {
    "pending", "assigned", "in_progress", "succeeded", "failed", "timed_out", "skipped"};

const char *upk_camp_state_str(upk_camp_state s)
{
    return (unsigned)s < UPK_CAMP__COUNT ? camp_state_names[s] : "unknown";
}

bool upk_camp_state_from_str(const char *s, upk_camp_state *out)
{
    for (int i = 0; i < UPK_CAMP__COUNT && s != NULL; i++) {
        if (strcmp(s, camp_state_names[i]) == 0) {
            *out = (upk_camp_state)i;
            return true;
        }
    }
    return false;
}

const char *upk_cdev_state_str(upk_cdev_state s)
{
    return (unsigned)s < UPK_CDEV__COUNT ? cdev_state_names[s] : "unknown";
}

bool upk_cdev_state_from_str(const char *s, upk_cdev_state *out)
{
    for (int i = 0; i < UPK_CDEV__COUNT && s != NULL; i++) {
        if (strcmp(s, cdev_state_names[i]) == 0) {
            *out = (upk_cdev_state)i;
            return true;
        }
    }
    return false;
}

bool upk_cdev_state_is_final(upk_cdev_state s)
{
    return s == UPK_CDEV_SUCCEEDED || s == UPK_CDEV_FAILED || s == UPK_CDEV_TIMED_OUT ||
           s == UPK_CDEV_SKIPPED;
}

void upk_engine_stage_sizes(const upk_campaign *c, size_t n, size_t sizes[UPK_STAGES_MAX])
{
    size_t prev = 0;
    for (size_t i = 0; i < UPK_STAGES_MAX; i++)
        sizes[i] = 0;
    for (size_t i = 0; i < c->stage_count && i < UPK_STAGES_MAX; i++) {
        /* Cumulative size rounded up, at least one more device than the
         * previous stage while devices remain, the last stage takes all. */
        uint64_t cum = ((uint64_t)c->stage_bp[i] * n + 9999u) / 10000u;
        if (cum <= prev && prev < n)
            cum = prev + 1;
        if (cum > n || i + 1 == c->stage_count)
            cum = n;
        sizes[i] = (size_t)cum - prev;
        prev = (size_t)cum;
    }
}

void upk_engine_rank_key(const char *campaign, const char *device, uint8_t out[32])
{
    upk_sha256 h;
    upk_sha256_init(&h);
    upk_sha256_update(&h, campaign, strlen(campaign));
    upk_sha256_update(&h, "\n", 1);
    upk_sha256_update(&h, device, strlen(device));
    upk_sha256_final(&h, out);
    upk_sha256_cleanup(&h);
}

struct rank_item {
    uint8_t key[32];
    size_t index;
};

static int rank_cmp(const void *a, const void *b)
{
    const struct rank_item *x = a, *y = b;
    int r = memcmp(x->key, y->key, sizeof(x->key));
    if (r != 0)
        return r;
    return x->index < y->index ? -1 : (x->index > y->index);
}

upk_err upk_engine_assign_stages(const upk_campaign *c, const char *const *ids, size_t n,
                                 uint32_t *out_stage)
{
    if (n == 0)
        return UPK_OK;
    if (c->stage_count == 0 || c->stage_count > UPK_STAGES_MAX)
        return UPK_E_INVALID_ARG;
    struct rank_item *items = calloc(n, sizeof(*items));
    if (items == NULL)
        return UPK_E_NOMEM;
    for (size_t i = 0; i < n; i++) {
        upk_engine_rank_key(c->id, ids[i], items[i].key);
        items[i].index = i;
    }
    qsort(items, n, sizeof(*items), rank_cmp);
    size_t sizes[UPK_STAGES_MAX];
    upk_engine_stage_sizes(c, n, sizes);
    size_t pos = 0;
    for (size_t s = 0; s < c->stage_count; s++) {
        for (size_t k = 0; k < sizes[s] && pos < n; k++, pos++)
            out_stage[items[pos].index] = (uint32_t)s;
    }
    free(items);
    return UPK_OK;
}

void upk_engine_count(const upk_cdev *devs, size_t n, uint32_t stage, upk_stage_counts *out)
{
    memset(out, 0, sizeof(*out));
    for (size_t i = 0; i < n; i++) {
        if (stage != UINT32_MAX && devs[i].stage != stage)
            continue;
        out->total++;
        if ((unsigned)devs[i].state < UPK_CDEV__COUNT)
            out->by_state[devs[i].state]++;
    }
}

static bool push(upk_action *actions, size_t cap, upk_step_result *res, upk_action_kind kind,
                 size_t index)
{
    if (res->action_count >= cap) {
        res->truncated = true;
        return false;
    }
    actions[res->action_count].kind = kind;
    actions[res->action_count].index = index;
    res->action_count++;
    return true;
}

/* The state a device will have once the actions listed so far apply. */
static upk_cdev_state effective(const upk_cdev *d, size_t i, const upk_action *actions,
                                const upk_step_result *res)
{
    for (size_t k = 0; k < res->action_count; k++) {
        if (actions[k].index != i)
            continue;
        switch (actions[k].kind) {
        case UPK_ACT_START:
            return UPK_CDEV_ASSIGNED;
        case UPK_ACT_TIMEOUT:
            return UPK_CDEV_TIMED_OUT;
        case UPK_ACT_SKIP:
            return UPK_CDEV_SKIPPED;
        }
    }
    return d->state;
}

static size_t fmt_pct(char *buf, size_t cap, uint64_t bp)
{
    int r = snprintf(buf, cap, "%llu.%02llu%%", (unsigned long long)(bp / 100),
                     (unsigned long long)(bp % 100));
    return r < 0 ? 0 : (size_t)r;
}

/* "stage 1: 1 of 1 device failed (HASH_MISMATCH on dev-3); 100.00% is
 * above the threshold 0.00%": the failed devices of the current stage with
 * the error each reported, as many as fit, then "and N more". */
static void halt_reason(upk_campaign *nx, const upk_cdev *devs, size_t n, const upk_action *actions,
                        const upk_step_result *res, size_t failures, size_t total, const char *pct,
                        const char *thr)
{
    size_t failed = 0, timed = 0;
    for (size_t i = 0; i < n; i++) {
        if (devs[i].stage != nx->stage)
            continue;
        upk_cdev_state s = effective(&devs[i], i, actions, res);
        failed += s == UPK_CDEV_FAILED;
        timed += s == UPK_CDEV_TIMED_OUT;
    }
    const char *verb = timed == 0 ? "failed" : failed == 0 ? "timed out" : "failed or timed out";
    char list[UPK_REASON_MAX + 1];
    size_t len = 0, shown = 0;
    list[0] = '\0';
    /* Room for the rest of the reason: about 90 chars plus the ids. */
    size_t room = sizeof(list) > 110 ? sizeof(list) - 110 : 0;
    for (size_t i = 0; i < n; i++) {
        if (devs[i].stage != nx->stage)
            continue;
        upk_cdev_state s = effective(&devs[i], i, actions, res);
        if (s != UPK_CDEV_FAILED && s != UPK_CDEV_TIMED_OUT)
            continue;
        const char *what = s == UPK_CDEV_TIMED_OUT    ? "timed out"
                           : devs[i].error[0] != '\0' ? devs[i].error
                                                      : "failed";
        char item[UPK_ID_MAX + 64];
        int r = snprintf(item, sizeof(item), "%s%s on %s", shown ? ", " : "", what, devs[i].device);
        if (r < 0 || len + (size_t)r >= room)
            break;
        memcpy(list + len, item, (size_t)r + 1);
        len += (size_t)r;
        shown++;
    }
    int r;
    if (shown == 0)
        r = snprintf(nx->reason, sizeof(nx->reason),
                     "stage %u: %zu of %zu device%s %s; %s is above the threshold %s",
                     nx->stage + 1, failures, total, total == 1 ? "" : "s", verb, pct, thr);
    else if (shown < failures)
        r = snprintf(nx->reason, sizeof(nx->reason),
                     "stage %u: %zu of %zu device%s %s (%s and %zu more); %s is above the "
                     "threshold %s",
                     nx->stage + 1, failures, total, total == 1 ? "" : "s", verb, list,
                     failures - shown, pct, thr);
    else
        r = snprintf(nx->reason, sizeof(nx->reason),
                     "stage %u: %zu of %zu device%s %s (%s); %s is above the threshold %s",
                     nx->stage + 1, failures, total, total == 1 ? "" : "s", verb, list, pct, thr);
    (void)r;
}

upk_err upk_engine_step(const upk_campaign *c, const upk_cdev *devs, size_t n, int64_t now_ms,
                        upk_action *actions, size_t cap, upk_step_result *res)
{
    return upk_engine_step_gated(c, devs, n, NULL, 0, now_ms, actions, cap, res);
}

/* Pauses (or rolls back) nx with its reason already set. */
static bool halt(const upk_campaign *c, upk_campaign *nx, const upk_cdev *devs, size_t n,
                 int64_t now_ms, upk_action *actions, size_t cap, upk_step_result *res)
{
    nx->halted = true;
    nx->stage_done_ms = 0;
    nx->updated_ms = now_ms;
    if (!c->auto_rollback) {
        nx->state = UPK_CAMP_PAUSED;
        res->verdict = UPK_VERDICT_HALT;
        return true;
    }
    /* Rolled back only once the devices report it (rollback.h). */
    nx->state = UPK_CAMP_ROLLING_BACK;
    res->verdict = UPK_VERDICT_ROLLBACK;
    for (size_t i = 0; i < n; i++) {
        if (effective(&devs[i], i, actions, res) == UPK_CDEV_PENDING &&
            !push(actions, cap, res, UPK_ACT_SKIP, i))
            return false;
    }
    return true;
}

upk_err upk_engine_step_gated(const upk_campaign *c, const upk_cdev *devs, size_t n,
                              const upk_gate_dev *health, size_t hn, int64_t now_ms,
                              upk_action *actions, size_t cap, upk_step_result *res)
{
    if (c == NULL || res == NULL || (n > 0 && devs == NULL) || (cap > 0 && actions == NULL) ||
        (hn > 0 && health == NULL))
        return UPK_E_INVALID_ARG;
    if (c->stage_count == 0 || c->stage_count > UPK_STAGES_MAX || c->stage >= c->stage_count)
        return UPK_E_INVALID_ARG;
    memset(res, 0, sizeof(*res));
    res->next = *c;
    if (c->state != UPK_CAMP_RUNNING)
        return UPK_OK;
    upk_campaign *nx = &res->next;
    int64_t timeout_ms = (int64_t)c->device_timeout_s * 1000;

    /* Token bucket for the start rate: refills at rate/min, holds at most one
     * second of starts (at least one token) so a pause never banks a burst. */
    int64_t tokens = 0;
    if (c->rate_per_min > 0) {
        int64_t burst = (int64_t)c->rate_per_min * 1000 / 60;
        if (burst < 1000)
            burst = 1000;
        if (nx->tokens_at_ms == 0) {
            nx->tokens_milli = burst;
        } else if (now_ms > nx->tokens_at_ms) {
            int64_t add = (now_ms - nx->tokens_at_ms) * (int64_t)c->rate_per_min / 60;
            nx->tokens_milli += add;
        }
        if (nx->tokens_milli > burst)
            nx->tokens_milli = burst;
        if (nx->tokens_milli < 0)
            nx->tokens_milli = 0;
        nx->tokens_at_ms = now_ms;
        tokens = nx->tokens_milli;
    }
    if (nx->stage_started_ms == 0)
        nx->stage_started_ms = now_ms;

    /* Timeouts: a started device without a final outcome in time, or a device
     * that stayed offline (never started) for the timeout since its stage
     * began. Offline devices otherwise just wait. */
    size_t inflight = 0;
    for (size_t i = 0; i < n; i++) {
        const upk_cdev *d = &devs[i];
        if (d->stage > nx->stage)
            continue;
        if (d->state == UPK_CDEV_ASSIGNED || d->state == UPK_CDEV_IN_PROGRESS) {
            if (timeout_ms > 0 && now_ms - d->assigned_ms >= timeout_ms) {
                if (!push(actions, cap, res, UPK_ACT_TIMEOUT, i))
                    return UPK_OK;
            } else {
                inflight++;
            }
        } else if (d->state == UPK_CDEV_PENDING && !d->online && timeout_ms > 0 &&
                   now_ms - nx->stage_started_ms >= timeout_ms) {
            if (!push(actions, cap, res, UPK_ACT_TIMEOUT, i))
                return UPK_OK;
        }
    }

    /* Failure threshold of the current stage. */
    size_t total = 0, failures = 0;
    for (size_t i = 0; i < n; i++) {
        if (devs[i].stage != nx->stage)
            continue;
        total++;
        upk_cdev_state s = effective(&devs[i], i, actions, res);
        if (s == UPK_CDEV_FAILED || s == UPK_CDEV_TIMED_OUT)
            failures++;
    }
    uint64_t allowed = (uint64_t)c->max_fail_bp * total / 10000u;
    if (failures > allowed) {
        char a[24], b[24];
        fmt_pct(a, sizeof(a), (uint64_t)failures * 10000u / total);
        fmt_pct(b, sizeof(b), c->max_fail_bp);
        halt_reason(nx, devs, n, actions, res, failures, total, a, b);
        (void)halt(c, nx, devs, n, now_ms, actions, cap, res);
        return UPK_OK;
    }

    /* Starts: online pending devices of the current (or an earlier) stage, in
     * the order given, within the rate and in-flight caps. */
    for (size_t i = 0; i < n; i++) {
        const upk_cdev *d = &devs[i];
        if (d->stage > nx->stage || d->state != UPK_CDEV_PENDING || !d->online)
            continue;
        if (effective(d, i, actions, res) != UPK_CDEV_PENDING)
            continue;
        if (c->max_in_flight > 0 && inflight >= c->max_in_flight)
            break;
        if (c->rate_per_min > 0 && tokens < 1000)
            break;
        if (!push(actions, cap, res, UPK_ACT_START, i))
            return UPK_OK;
        inflight++;
        if (c->rate_per_min > 0) {
            tokens -= 1000;
            nx->tokens_milli = tokens;
        }
    }

    /* Stage completion, soak, advance; empty stages pass without soaking. */
    for (;;) {
        size_t in_stage = 0;
        bool done = true;
        for (size_t i = 0; i < n; i++) {
            if (devs[i].stage > nx->stage)
                continue;
            if (devs[i].stage == nx->stage)
                in_stage++;
            if (!upk_cdev_state_is_final(effective(&devs[i], i, actions, res))) {
                done = false;
                break;
            }
        }
        if (!done)
            break;
        if (in_stage > 0) {
            if (nx->stage_done_ms == 0) {
                nx->stage_done_ms = now_ms;
                res->verdict = UPK_VERDICT_SOAKING;
            }
            uint32_t wait_s = c->soak_s > c->gate.bake_s ? c->soak_s : c->gate.bake_s;
            if (now_ms - nx->stage_done_ms < (int64_t)wait_s * 1000)
                break;
            if (c->gate.bake_s > 0) {
                upk_gate_result g;
                upk_err e = upk_gate_eval(&c->gate, health, hn, &g);
                if (e != UPK_OK) {
                    res->next = *c;
                    res->verdict = UPK_VERDICT_NONE;
                    res->action_count = 0;
                    return e;
                }
                if (g.halt) {
                    int r = snprintf(nx->reason, sizeof(nx->reason), "stage %u: ", nx->stage + 1);
                    size_t len = r > 0 ? (size_t)r : 0;
                    if (len < sizeof(nx->reason)) {
                        size_t room = sizeof(nx->reason) - 1 - len;
                        size_t gl = strnlen(g.reason, sizeof(g.reason));
                        if (gl > room)
                            gl = room;
                        memcpy(nx->reason + len, g.reason, gl);
                        nx->reason[len + gl] = '\0';
                    }
                    (void)halt(c, nx, devs, n, now_ms, actions, cap, res);
                    return UPK_OK;
                }
            }
        }
        if (nx->stage + 1 >= nx->stage_count) {
            nx->state = UPK_CAMP_COMPLETED;
            nx->finished_ms = now_ms;
            res->verdict = UPK_VERDICT_COMPLETE;
            break;
        }
        nx->stage++;
        nx->stage_started_ms = now_ms;
        nx->stage_done_ms = 0;
        res->verdict = UPK_VERDICT_ADVANCE;
    }
    if (res->verdict != UPK_VERDICT_NONE || res->action_count > 0)
        nx->updated_ms = now_ms;
    return UPK_OK;
}

/* Parses a non-negative decimal with up to two fraction digits into
 * hundredths; the whole of s[0..len) must be consumed. */
static bool parse_hundredths(const char *s, size_t len, uint64_t max, uint64_t *out)
{
    uint64_t whole = 0, frac = 0;
    size_t i = 0, digits = 0, fdigits = 0;
    for (; i < len && s[i] >= '0' && s[i] <= '9'; i++, digits++) {
        whole = whole * 10 + (uint64_t)(s[i] - '0');
        if (whole > max)
            return false;
    }
    if (i < len && s[i] == '.') {
        for (i++; i < len && s[i] >= '0' && s[i] <= '9'; i++, fdigits++) {
            if (fdigits >= 2)
                return false;
            frac = frac * 10 + (uint64_t)(s[i] - '0');
        }
        if (fdigits == 0)
            return false;
        if (fdigits == 1)
            frac *= 10;
    }
    if (i != len || digits == 0)
        return false;
    uint64_t v = whole * 100 + frac;
    if (v > max * 100)
        return false;
    *out = v;
    return true;
}

upk_err upk_engine_parse_percent(const char *s, uint32_t *out_bp)
{
    if (s == NULL)
        return UPK_E_FIELD_RANGE;
    size_t len = strlen(s);
    if (len == 0 || len > 16 || s[len - 1] != '%')
        return UPK_E_FIELD_RANGE;
    uint64_t v;
    if (!parse_hundredths(s, len - 1, 100, &v))
        return UPK_E_FIELD_RANGE;
    *out_bp = (uint32_t)v;
    return UPK_OK;
}

upk_err upk_engine_parse_stages(const char *s, upk_campaign *c)
{
    if (s == NULL || strlen(s) > 256)
        return UPK_E_FIELD_RANGE;
    uint32_t bp[UPK_STAGES_MAX] = {0};
    size_t count = 0;
    const char *p = s;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma != NULL ? (size_t)(comma - p) : strlen(p);
        char part[24];
        if (len == 0 || len >= sizeof(part) || count >= UPK_STAGES_MAX)
            return UPK_E_FIELD_RANGE;
        memcpy(part, p, len);
        part[len] = '\0';
        uint32_t v;
        if (upk_engine_parse_percent(part, &v) != UPK_OK || v == 0 ||
            (count > 0 && v <= bp[count - 1]))
            return UPK_E_FIELD_RANGE;
        bp[count++] = v;
        if (comma == NULL)
            break;
        p = comma + 1;
    }
    if (bp[count - 1] != 10000)
        return UPK_E_FIELD_RANGE;
    memcpy(c->stage_bp, bp, count * sizeof(bp[0]));
    c->stage_count = count;
    return UPK_OK;
}

/* Leading decimal digits of s into *v (bounded); returns chars consumed. */
static size_t parse_uint(const char *s, uint64_t max, uint64_t *v)
{
    size_t i = 0;
    uint64_t x = 0;
    for (; s[i] >= '0' && s[i] <= '9'; i++) {
        x = x * 10 + (uint64_t)(s[i] - '0');
        if (x > max)
            return 0;
    }
    *v = x;
    return i;
}

upk_err upk_engine_parse_duration(const char *s, uint32_t *out_s)
{
    if (s == NULL)
        return UPK_E_FIELD_RANGE;
    uint64_t v;
    size_t i = parse_uint(s, 100000000, &v);
    if (i == 0)
        return UPK_E_FIELD_RANGE;
    uint64_t mul;
    if (strcmp(s + i, "") == 0 || strcmp(s + i, "s") == 0)
        mul = 1;
    else if (strcmp(s + i, "m") == 0)
        mul = 60;
    else if (strcmp(s + i, "h") == 0)
        mul = 3600;
    else if (strcmp(s + i, "d") == 0)
        mul = 86400;
    else
        return UPK_E_FIELD_RANGE;
    if (v * mul > UINT32_MAX)
        return UPK_E_FIELD_RANGE;
    *out_s = (uint32_t)(v * mul);
    return UPK_OK;
}

upk_err upk_engine_parse_rate(const char *s, uint32_t *out_per_min)
{
    if (s == NULL)
        return UPK_E_FIELD_RANGE;
    uint64_t v;
    size_t i = parse_uint(s, 10000000, &v);
    if (i == 0)
        return UPK_E_FIELD_RANGE;
    uint64_t per_min;
    if (strcmp(s + i, "") == 0 || strcmp(s + i, "/min") == 0 || strcmp(s + i, "/m") == 0)
        per_min = v;
    else if (strcmp(s + i, "/s") == 0)
        per_min = v * 60;
    else if (strcmp(s + i, "/h") == 0)
        per_min = (v + 59) / 60;
    else
        return UPK_E_FIELD_RANGE;
    if (per_min > UINT32_MAX)
        return UPK_E_FIELD_RANGE;
    *out_per_min = (uint32_t)per_min;
    return UPK_OK;
}
