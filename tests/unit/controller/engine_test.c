/* Unit tests of the campaign engine (controller/src/engine.c): stage
 * membership, rate and in-flight caps, soak, failure threshold, timeouts,
 * offline waiting, auto-rollback, and the knob parsers. No MQTT, no SQLite. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "engine.h"

#define N_MAX 2000

static upk_campaign base_campaign(void)
{
    upk_campaign c;
    memset(&c, 0, sizeof(c));
    int r = snprintf(c.id, sizeof(c.id), "camp-1");
    (void)r;
    r = snprintf(c.release, sizeof(c.release), "fw-2.0");
    c.state = UPK_CAMP_RUNNING;
    assert_int_equal(upk_engine_parse_stages("10%,50%,100%", &c), UPK_OK);
    c.soak_s = 60;
    c.max_fail_bp = 1000; /* 10% */
    c.device_timeout_s = 600;
    return c;
}

static void make_devs(upk_cdev *d, size_t n, const upk_campaign *c, bool online)
{
    static char ids[N_MAX][UPK_ID_MAX + 1];
    const char *p[N_MAX];
    uint32_t st[N_MAX];
    for (size_t i = 0; i < n; i++) {
        int r = snprintf(ids[i], sizeof(ids[i]), "dev-%04zu", i);
        (void)r;
        p[i] = ids[i];
    }
    assert_int_equal(upk_engine_assign_stages(c, p, n, st), UPK_OK);
    for (size_t i = 0; i < n; i++) {
        memset(&d[i], 0, sizeof(d[i]));
        memcpy(d[i].device, ids[i], sizeof(d[i].device));
        d[i].stage = st[i];
        d[i].online = online;
        d[i].state = UPK_CDEV_PENDING;
    }
}

/* Applies actions like the store would. */
static void apply(upk_campaign *c, upk_cdev *d, const upk_action *a, const upk_step_result *res,
                  int64_t now)
{
    for (size_t i = 0; i < res->action_count; i++) {
        upk_cdev *x = &d[a[i].index];
        switch (a[i].kind) {
        case UPK_ACT_START:
            assert_int_equal(x->state, UPK_CDEV_PENDING);
            x->state = UPK_CDEV_ASSIGNED;
            x->assigned_ms = now;
            break;
        case UPK_ACT_TIMEOUT:
            x->state = UPK_CDEV_TIMED_OUT;
            x->done_ms = now;
            break;
        case UPK_ACT_SKIP:
            x->state = UPK_CDEV_SKIPPED;
            break;
        }
    }
    *c = res->next;
}

static upk_action acts[N_MAX * 2];

static void step(upk_campaign *c, upk_cdev *d, size_t n, int64_t now, upk_step_result *res)
{
    assert_int_equal(upk_engine_step(c, d, n, now, acts, N_MAX * 2, res), UPK_OK);
    assert_false(res->truncated);
    apply(c, d, acts, res, now);
}

static size_t count_state(const upk_cdev *d, size_t n, upk_cdev_state s)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += d[i].state == s;
    return k;
}

static void stage_sizes_sum_and_grow(void **state)
{
    (void)state;
    const char *cfgs[] = {"1%,10%,50%,100%", "100%", "0.01%,100%", "33%,66%,100%",
                          "1%,2%,3%,4%,5%,100%"};
    for (size_t k = 0; k < sizeof(cfgs) / sizeof(cfgs[0]); k++) {
        upk_campaign c = base_campaign();
        assert_int_equal(upk_engine_parse_stages(cfgs[k], &c), UPK_OK);
        for (size_t n = 0; n <= 1200; n += (n < 50 ? 1 : 37)) {
            size_t sizes[UPK_STAGES_MAX];
            upk_engine_stage_sizes(&c, n, sizes);
            size_t sum = 0, nonempty_after_empty = 0;
            bool seen_empty = false;
            for (size_t i = 0; i < c.stage_count; i++) {
                sum += sizes[i];
                if (sizes[i] == 0)
                    seen_empty = true;
                else if (seen_empty)
                    nonempty_after_empty++;
            }
            assert_int_equal(sum, n);
            /* Stages fill in order: no empty stage before a non-empty one. */
            assert_int_equal(nonempty_after_empty, 0);
            if (n > 0)
                assert_true(sizes[0] >= 1);
        }
    }
    /* 1% of 1000 is exactly 10 devices, 10% is 100 (cumulative). */
    upk_campaign c = base_campaign();
    assert_int_equal(upk_engine_parse_stages("1%,10%,50%,100%", &c), UPK_OK);
    size_t sizes[UPK_STAGES_MAX];
    upk_engine_stage_sizes(&c, 1000, sizes);
    assert_int_equal(sizes[0], 10);
    assert_int_equal(sizes[1], 90);
    assert_int_equal(sizes[2], 400);
    assert_int_equal(sizes[3], 500);
}

static void stage_membership_is_deterministic(void **state)
{
    (void)state;
    static upk_cdev a[500], b[500];
    upk_campaign c = base_campaign();
    make_devs(a, 500, &c, true);
    make_devs(b, 500, &c, true);
    for (size_t i = 0; i < 500; i++)
        assert_int_equal(a[i].stage, b[i].stage);
    /* Independent of input order: reversing the list gives the same stages. */
    const char *ids[500];
    uint32_t st[500];
    for (size_t i = 0; i < 500; i++)
        ids[i] = a[499 - i].device;
    assert_int_equal(upk_engine_assign_stages(&c, ids, 500, st), UPK_OK);
    for (size_t i = 0; i < 500; i++)
        assert_int_equal(st[i], a[499 - i].stage);
    /* Another campaign id picks a different first stage. */
    upk_campaign c2 = base_campaign();
    int r = snprintf(c2.id, sizeof(c2.id), "camp-2");
    (void)r;
    make_devs(b, 500, &c2, true);
    size_t differ = 0;
    for (size_t i = 0; i < 500; i++)
        differ += (a[i].stage == 0) != (b[i].stage == 0);
    assert_true(differ > 0);
}

static void not_running_does_nothing(void **state)
{
    (void)state;
    static upk_cdev d[20];
    upk_campaign c = base_campaign();
    make_devs(d, 20, &c, true);
    upk_camp_state states[] = {UPK_CAMP_PAUSED, UPK_CAMP_COMPLETED, UPK_CAMP_ABORTED,
                               UPK_CAMP_ROLLED_BACK};
    for (size_t k = 0; k < 4; k++) {
        c.state = states[k];
        upk_step_result res;
        assert_int_equal(upk_engine_step(&c, d, 20, 1000, acts, 40, &res), UPK_OK);
        assert_int_equal(res.action_count, 0);
        assert_int_equal(res.verdict, UPK_VERDICT_NONE);
        assert_memory_equal(&res.next, &c, sizeof(c));
    }
}

static void rejects_bad_campaign_row(void **state)
{
    (void)state;
    upk_campaign c = base_campaign();
    upk_step_result res;
    c.stage = 3;
    assert_int_equal(upk_engine_step(&c, NULL, 0, 0, acts, 1, &res), UPK_E_INVALID_ARG);
    c.stage = 0;
    c.stage_count = 0;
    assert_int_equal(upk_engine_step(&c, NULL, 0, 0, acts, 1, &res), UPK_E_INVALID_ARG);
    assert_int_equal(upk_engine_step(NULL, NULL, 0, 0, acts, 1, &res), UPK_E_INVALID_ARG);
}

static void first_stage_only_starts(void **state)
{
    (void)state;
    static upk_cdev d[100];
    upk_campaign c = base_campaign();
    make_devs(d, 100, &c, true);
    upk_step_result res;
    step(&c, d, 100, 1000, &res);
    assert_int_equal(res.action_count, 10);
    for (size_t i = 0; i < 100; i++)
        assert_true(d[i].state == UPK_CDEV_PENDING || d[i].stage == 0);
    /* Running again starts nobody twice. */
    step(&c, d, 100, 2000, &res);
    assert_int_equal(res.action_count, 0);
}

static void in_flight_cap_is_respected(void **state)
{
    (void)state;
    static upk_cdev d[200];
    upk_campaign c = base_campaign();
    assert_int_equal(upk_engine_parse_stages("100%", &c), UPK_OK);
    c.max_in_flight = 7;
    make_devs(d, 200, &c, true);
    upk_step_result res;
    int64_t now = 1000;
    size_t done = 0;
    for (int round = 0; round < 100 && c.state == UPK_CAMP_RUNNING; round++) {
        step(&c, d, 200, now, &res);
        size_t inflight = count_state(d, 200, UPK_CDEV_ASSIGNED);
        assert_true(inflight <= 7);
        /* Finish three of them per round. */
        for (size_t i = 0, k = 0; i < 200 && k < 3; i++) {
            if (d[i].state == UPK_CDEV_ASSIGNED) {
                d[i].state = UPK_CDEV_SUCCEEDED;
                k++;
                done++;
            }
        }
        now += 1000;
    }
    assert_int_equal(done, 200);
}

static void rate_cap_is_respected(void **state)
{
    (void)state;
    static upk_cdev d[300];
    upk_campaign c = base_campaign();
    assert_int_equal(upk_engine_parse_stages("100%", &c), UPK_OK);
    c.rate_per_min = 120; /* 2 per second, burst 2 */
    make_devs(d, 300, &c, true);
    upk_step_result res;
    int64_t now = 10000;
    size_t started = 0;
    /* Tick every 250 ms for 30 s: at most burst + 2/s * 30 s starts. */
    for (int i = 0; i <= 120; i++) {
        step(&c, d, 300, now, &res);
        started += res.action_count;
        now += 250;
    }
    assert_true(started <= 2 + 60);
    assert_true(started >= 58);
    /* A long idle gap never banks more than the burst. */
    c.device_timeout_s = 0;
    step(&c, d, 300, now + 3600 * 1000, &res);
    assert_true(res.action_count <= 2);
    assert_true(res.action_count >= 1);
}

static void offline_devices_wait_then_time_out(void **state)
{
    (void)state;
    static upk_cdev d[10];
    upk_campaign c = base_campaign();
    assert_int_equal(upk_engine_parse_stages("100%", &c), UPK_OK);
    c.max_fail_bp = 10000;
    make_devs(d, 10, &c, false);
    d[0].online = true;
    upk_step_result res;
    step(&c, d, 10, 1000, &res);
    assert_int_equal(res.action_count, 1);
    assert_int_equal(d[0].state, UPK_CDEV_ASSIGNED);
    d[0].state = UPK_CDEV_SUCCEEDED;
    /* Before the timeout: offline devices are neither started nor failed. */
    step(&c, d, 10, 1000 + 599 * 1000, &res);
    assert_int_equal(res.action_count, 0);
    assert_int_equal(count_state(d, 10, UPK_CDEV_PENDING), 9);
    /* One comes online: it starts. */
    d[5].online = true;
    step(&c, d, 10, 1000 + 599 * 1000 + 1, &res);
    assert_int_equal(d[5].state, UPK_CDEV_ASSIGNED);
    /* After the timeout the remaining offline ones time out. */
    step(&c, d, 10, 1000 + 600 * 1000, &res);
    assert_int_equal(count_state(d, 10, UPK_CDEV_TIMED_OUT), 8);
    assert_int_equal(d[5].state, UPK_CDEV_ASSIGNED);
}

static void started_device_times_out(void **state)
{
    (void)state;
    static upk_cdev d[3];
    upk_campaign c = base_campaign();
    assert_int_equal(upk_engine_parse_stages("100%", &c), UPK_OK);
    c.max_fail_bp = 10000;
    c.device_timeout_s = 30;
    make_devs(d, 3, &c, true);
    upk_step_result res;
    step(&c, d, 3, 1000, &res);
    assert_int_equal(count_state(d, 3, UPK_CDEV_ASSIGNED), 3);
    d[1].state = UPK_CDEV_IN_PROGRESS;
    d[2].state = UPK_CDEV_SUCCEEDED;
    step(&c, d, 3, 1000 + 29999, &res);
    assert_int_equal(res.action_count, 0);
    step(&c, d, 3, 1000 + 30000, &res);
    assert_int_equal(d[0].state, UPK_CDEV_TIMED_OUT);
    assert_int_equal(d[1].state, UPK_CDEV_TIMED_OUT);
    assert_int_equal(d[2].state, UPK_CDEV_SUCCEEDED);
}

static void soak_then_advance_then_complete(void **state)
{
    (void)state;
    static upk_cdev d[20];
    upk_campaign c = base_campaign(); /* 10%, 50%, 100%; soak 60 s */
    make_devs(d, 20, &c, true);
    upk_step_result res;
    int64_t now = 5000;
    for (uint32_t stage = 0; stage < 3; stage++) {
        step(&c, d, 20, now, &res);
        assert_int_equal(c.stage, stage);
        for (size_t i = 0; i < 20; i++) {
            if (d[i].stage < stage)
                assert_int_equal(d[i].state, UPK_CDEV_SUCCEEDED);
            if (d[i].stage > stage)
                assert_int_equal(d[i].state, UPK_CDEV_PENDING);
            if (d[i].state == UPK_CDEV_ASSIGNED)
                d[i].state = UPK_CDEV_SUCCEEDED;
        }
        now += 1000;
        step(&c, d, 20, now, &res);
        assert_int_equal(res.verdict, UPK_VERDICT_SOAKING);
        assert_int_equal(c.stage_done_ms, now);
        step(&c, d, 20, now + 59999, &res);
        assert_int_equal(res.verdict, UPK_VERDICT_NONE);
        assert_int_equal(c.stage, stage);
        now += 60000;
        step(&c, d, 20, now, &res);
        assert_int_equal(res.verdict, stage < 2 ? UPK_VERDICT_ADVANCE : UPK_VERDICT_COMPLETE);
        now += 1000;
    }
    assert_int_equal(c.state, UPK_CAMP_COMPLETED);
    assert_int_equal(count_state(d, 20, UPK_CDEV_SUCCEEDED), 20);
}

static void empty_stages_pass_without_soak(void **state)
{
    (void)state;
    static upk_cdev d[2];
    upk_campaign c = base_campaign();
    assert_int_equal(upk_engine_parse_stages("1%,2%,3%,100%", &c), UPK_OK);
    c.soak_s = 0;
    make_devs(d, 2, &c, true);
    upk_step_result res;
    int64_t now = 1000;
    for (int i = 0; i < 10 && c.state == UPK_CAMP_RUNNING; i++) {
        step(&c, d, 2, now, &res);
        for (size_t k = 0; k < 2; k++)
            if (d[k].state == UPK_CDEV_ASSIGNED)
                d[k].state = UPK_CDEV_SUCCEEDED;
        now += 1000;
    }
    assert_int_equal(c.state, UPK_CAMP_COMPLETED);
    upk_campaign none = base_campaign();
    step(&none, NULL, 0, 1000, &res);
    assert_int_equal(none.state, UPK_CAMP_COMPLETED);
}

static void failures_over_threshold_halt_with_reason(void **state)
{
    (void)state;
    static upk_cdev d[100];
    upk_campaign c = base_campaign(); /* stage 0 = 10 devices, 10% => 1 allowed */
    make_devs(d, 100, &c, true);
    upk_step_result res;
    step(&c, d, 100, 1000, &res);
    size_t failed = 0;
    for (size_t i = 0; i < 100 && failed < 1; i++)
        if (d[i].state == UPK_CDEV_ASSIGNED) {
            d[i].state = UPK_CDEV_FAILED;
            failed++;
        }
    step(&c, d, 100, 2000, &res);
    assert_int_equal(c.state, UPK_CAMP_RUNNING); /* 1 of 10 is within 10% */
    for (size_t i = 0; i < 100 && failed < 2; i++)
        if (d[i].state == UPK_CDEV_ASSIGNED) {
            d[i].state = UPK_CDEV_FAILED;
            failed++;
        }
    step(&c, d, 100, 3000, &res);
    assert_int_equal(res.verdict, UPK_VERDICT_HALT);
    assert_int_equal(c.state, UPK_CAMP_PAUSED);
    assert_true(c.halted);
    assert_non_null(strstr(c.reason, "stage 1: 2 of 10"));
    assert_non_null(strstr(c.reason, "10.00%"));
    /* Halted: nothing else starts. */
    step(&c, d, 100, 4000, &res);
    assert_int_equal(res.action_count, 0);
}

/* A campaign of one device: "1 of 1 device", not "1 of 1 devices". */
static void single_device_halt_reason_is_singular(void **state)
{
    (void)state;
    static upk_cdev d[1];
    upk_campaign c = base_campaign();
    assert_int_equal(upk_engine_parse_stages("100%", &c), UPK_OK);
    make_devs(d, 1, &c, true);
    upk_step_result res;
    step(&c, d, 1, 1000, &res);
    assert_int_equal(d[0].state, UPK_CDEV_ASSIGNED);
    d[0].state = UPK_CDEV_FAILED;
    step(&c, d, 1, 2000, &res);
    assert_int_equal(res.verdict, UPK_VERDICT_HALT);
    assert_non_null(strstr(c.reason, "stage 1: 1 of 1 device failed"));
}

/* Issue 16 item 8: the halt reason names each failed device with its error
 * ("1 of 1 device failed (HASH_MISMATCH on dev-3)"), timeouts as such. */
static void halt_reason_names_errors_and_devices(void **state)
{
    (void)state;
    upk_cdev d[1];
    upk_campaign c = base_campaign();
    assert_int_equal(upk_engine_parse_stages("100%", &c), UPK_OK);
    c.max_fail_bp = 0;
    memset(d, 0, sizeof(d));
    int r = snprintf(d[0].device, sizeof(d[0].device), "dev-3");
    r = snprintf(d[0].error, sizeof(d[0].error), "HASH_MISMATCH");
    (void)r;
    d[0].state = UPK_CDEV_FAILED;
    d[0].online = true;
    upk_step_result res;
    step(&c, d, 1, 1000, &res);
    assert_int_equal(res.verdict, UPK_VERDICT_HALT);
    assert_string_equal(c.reason, "stage 1: 1 of 1 device failed (HASH_MISMATCH on dev-3); "
                                  "100.00% is above the threshold 0.00%");
    /* Many: as many as fit, then how many more; timeouts named as such. */
    static upk_cdev m[60];
    upk_campaign c2 = base_campaign();
    assert_int_equal(upk_engine_parse_stages("100%", &c2), UPK_OK);
    c2.max_fail_bp = 0;
    memset(m, 0, sizeof(m));
    for (int i = 0; i < 60; i++) {
        r = snprintf(m[i].device, sizeof(m[i].device), "sensor-%04d", i);
        m[i].state = i % 2 ? UPK_CDEV_TIMED_OUT : UPK_CDEV_FAILED;
        r = snprintf(m[i].error, sizeof(m[i].error), "%s", i % 2 ? "" : "DELTA_BASE_MISMATCH");
        m[i].online = true;
    }
    step(&c2, m, 60, 1000, &res);
    assert_non_null(strstr(c2.reason, "stage 1: 60 of 60 devices failed or timed out ("
                                      "DELTA_BASE_MISMATCH on sensor-0000, timed out on "
                                      "sensor-0001"));
    assert_non_null(strstr(c2.reason, " more); 100.00% is above the threshold 0.00%"));
}

static void auto_rollback_skips_pending(void **state)
{
    (void)state;
    static upk_cdev d[50];
    upk_campaign c = base_campaign();
    c.auto_rollback = true;
    c.max_fail_bp = 0;
    make_devs(d, 50, &c, true);
    upk_step_result res;
    step(&c, d, 50, 1000, &res);
    for (size_t i = 0; i < 50; i++)
        if (d[i].state == UPK_CDEV_ASSIGNED) {
            d[i].state = UPK_CDEV_FAILED;
            break;
        }
    step(&c, d, 50, 2000, &res);
    assert_int_equal(res.verdict, UPK_VERDICT_ROLLBACK);
    assert_int_equal(c.state, UPK_CAMP_ROLLING_BACK);
    assert_int_equal(count_state(d, 50, UPK_CDEV_PENDING), 0);
    assert_int_equal(count_state(d, 50, UPK_CDEV_SKIPPED), 45);
}

static void timeouts_count_as_failures(void **state)
{
    (void)state;
    static upk_cdev d[10];
    upk_campaign c = base_campaign();
    assert_int_equal(upk_engine_parse_stages("100%", &c), UPK_OK);
    c.max_fail_bp = 1000;
    c.device_timeout_s = 10;
    make_devs(d, 10, &c, true);
    upk_step_result res;
    step(&c, d, 10, 1000, &res);
    for (size_t i = 0; i < 8; i++)
        d[i].state = UPK_CDEV_SUCCEEDED;
    step(&c, d, 10, 11000, &res);
    assert_int_equal(res.verdict, UPK_VERDICT_HALT);
    assert_int_equal(count_state(d, 10, UPK_CDEV_TIMED_OUT), 2);
}

static void truncated_when_actions_do_not_fit(void **state)
{
    (void)state;
    static upk_cdev d[100];
    upk_campaign c = base_campaign();
    assert_int_equal(upk_engine_parse_stages("100%", &c), UPK_OK);
    make_devs(d, 100, &c, true);
    upk_step_result res;
    assert_int_equal(upk_engine_step(&c, d, 100, 1000, acts, 5, &res), UPK_OK);
    assert_int_equal(res.action_count, 5);
    assert_true(res.truncated);
}

/* Random whole campaigns: invariants hold at every step. */
static void random_campaigns_keep_invariants(void **state)
{
    (void)state;
    static upk_cdev d[400];
    uint32_t rng = 12345;
    for (int run = 0; run < 30; run++) {
        upk_campaign c = base_campaign();
        int r = snprintf(c.id, sizeof(c.id), "rand-%d", run);
        (void)r;
        assert_int_equal(upk_engine_parse_stages("1%,10%,50%,100%", &c), UPK_OK);
        c.max_in_flight = 1 + (uint32_t)run % 20;
        c.rate_per_min = (uint32_t)(run % 3) * 600;
        c.soak_s = (uint32_t)run % 5;
        c.device_timeout_s = 20;
        c.max_fail_bp = 500;
        size_t n = 50 + (size_t)run * 11;
        make_devs(d, n, &c, true);
        int64_t now = 1000;
        for (int t = 0; t < 5000 && c.state == UPK_CAMP_RUNNING; t++) {
            upk_step_result res;
            uint32_t before = c.stage;
            step(&c, d, n, now, &res);
            assert_true(c.stage >= before);
            size_t inflight = 0;
            for (size_t i = 0; i < n; i++) {
                if (d[i].state == UPK_CDEV_ASSIGNED || d[i].state == UPK_CDEV_IN_PROGRESS)
                    inflight++;
                if (d[i].stage > c.stage)
                    assert_int_equal(d[i].state, UPK_CDEV_PENDING);
                if (d[i].stage < c.stage)
                    assert_true(upk_cdev_state_is_final(d[i].state));
            }
            assert_true(inflight <= c.max_in_flight);
            for (size_t i = 0; i < n; i++) {
                rng = rng * 1103515245u + 12345u;
                if (d[i].state == UPK_CDEV_ASSIGNED && (rng >> 16) % 4 == 0)
                    d[i].state = ((rng >> 8) % 1000) == 0 ? UPK_CDEV_FAILED : UPK_CDEV_SUCCEEDED;
            }
            now += 500;
        }
        assert_true(c.state == UPK_CAMP_COMPLETED || c.state == UPK_CAMP_PAUSED);
        if (c.state == UPK_CAMP_COMPLETED)
            for (size_t i = 0; i < n; i++)
                assert_true(upk_cdev_state_is_final(d[i].state));
    }
}

/* Health gate: stage 0 of 20 devices (2 devices) done at t; gated step. */
static void gated(upk_campaign *c, upk_cdev *d, size_t n, const upk_gate_dev *h, size_t hn,
                  int64_t now, upk_step_result *res)
{
    assert_int_equal(upk_engine_step_gated(c, d, n, h, hn, now, acts, N_MAX * 2, res), UPK_OK);
    assert_false(res->truncated);
    apply(c, d, acts, res, now);
}

static int64_t gate_stage0_done(upk_campaign *c, upk_cdev *d, size_t n)
{
    upk_step_result res;
    gated(c, d, n, NULL, 0, 1000, &res);
    for (size_t i = 0; i < n; i++)
        if (d[i].state == UPK_CDEV_ASSIGNED)
            d[i].state = UPK_CDEV_SUCCEEDED;
    gated(c, d, n, NULL, 0, 2000, &res);
    assert_int_equal(res.verdict, UPK_VERDICT_SOAKING);
    return 2000;
}

/* Health of the stage-0 devices (updated) and the rest (baseline). */
static size_t gate_health(const upk_cdev *d, size_t n, upk_gate_dev *h, uint32_t restarts,
                          double cpu_updated)
{
    for (size_t i = 0; i < n; i++) {
        memset(&h[i], 0, sizeof(h[i]));
        int r = snprintf(h[i].device, sizeof(h[i].device), "%s", d[i].device);
        (void)r;
        r = snprintf(h[i].hw, sizeof(h[i].hw), "rev-b");
        h[i].updated = d[i].stage == 0;
        h[i].restarts = h[i].updated ? restarts : 0;
        h[i].metric_count = 1;
        r = snprintf(h[i].metric_name[0], sizeof(h[i].metric_name[0]), "cpu");
        h[i].metric_value[0] = h[i].updated ? cpu_updated : 0.3;
    }
    return n;
}

static upk_campaign gate_campaign(void)
{
    upk_campaign c = base_campaign(); /* soak 60 s */
    upk_gate_cfg_init(&c.gate);
    c.gate.bake_s = 300;
    return c;
}

static void bake_holds_stage_then_healthy_advances(void **state)
{
    (void)state;
    static upk_cdev d[20];
    static upk_gate_dev h[20];
    upk_campaign c = gate_campaign();
    make_devs(d, 20, &c, true);
    int64_t t = gate_stage0_done(&c, d, 20);
    size_t hn = gate_health(d, 20, h, 0, 0.3);
    upk_step_result res;
    gated(&c, d, 20, h, hn, t + 60000, &res); /* soak over, bake not */
    assert_int_equal(res.verdict, UPK_VERDICT_NONE);
    gated(&c, d, 20, h, hn, t + 299999, &res);
    assert_int_equal(res.verdict, UPK_VERDICT_NONE);
    assert_int_equal(c.stage, 0);
    gated(&c, d, 20, h, hn, t + 300000, &res);
    assert_int_equal(res.verdict, UPK_VERDICT_ADVANCE);
    assert_int_equal(c.stage, 1);
    assert_int_equal(c.state, UPK_CAMP_RUNNING);
}

static void restart_loop_halts_at_canary_with_figures(void **state)
{
    (void)state;
    static upk_cdev d[20];
    static upk_gate_dev h[20];
    upk_campaign c = gate_campaign();
    make_devs(d, 20, &c, true);
    int64_t t = gate_stage0_done(&c, d, 20);
    size_t hn = gate_health(d, 20, h, 5, 0.3);
    upk_step_result res;
    gated(&c, d, 20, h, hn, t + 300000, &res);
    assert_int_equal(res.verdict, UPK_VERDICT_HALT);
    assert_int_equal(c.state, UPK_CAMP_PAUSED);
    assert_true(c.halted);
    assert_int_equal(c.stage, 0);
    assert_non_null(strstr(c.reason, "stage 1: health gate: 2 of 2 updated devices unhealthy"));
    assert_non_null(strstr(c.reason, "restarted more than 3 times"));
    /* Paused: nothing more happens. */
    gated(&c, d, 20, h, hn, t + 900000, &res);
    assert_int_equal(res.verdict, UPK_VERDICT_NONE);
    assert_int_equal(count_state(d, 20, UPK_CDEV_PENDING), 18);
}

static void baseline_metric_halts_and_names_the_metric(void **state)
{
    (void)state;
    static upk_cdev d[20];
    static upk_gate_dev h[20];
    upk_campaign c = gate_campaign();
    c.gate.compare_baseline = true;
    c.gate.baseline_factor = 2.0;
    make_devs(d, 20, &c, true);
    int64_t t = gate_stage0_done(&c, d, 20);
    size_t hn = gate_health(d, 20, h, 0, 0.9);
    upk_step_result res;
    gated(&c, d, 20, h, hn, t + 300000, &res);
    assert_int_equal(res.verdict, UPK_VERDICT_HALT);
    assert_non_null(strstr(c.reason, "stage 1: health gate: metric cpu on hw rev-b is 0.9"));
    assert_non_null(strstr(c.reason, "0.3 on 18 not updated"));
    /* Within the factor: passes. */
    c = gate_campaign();
    c.gate.compare_baseline = true;
    c.gate.baseline_factor = 4.0;
    make_devs(d, 20, &c, true);
    t = gate_stage0_done(&c, d, 20);
    gated(&c, d, 20, h, hn, t + 300000, &res);
    assert_int_equal(res.verdict, UPK_VERDICT_ADVANCE);
}

static void gate_halt_with_auto_rollback_skips_pending(void **state)
{
    (void)state;
    static upk_cdev d[20];
    static upk_gate_dev h[20];
    upk_campaign c = gate_campaign();
    c.auto_rollback = true;
    make_devs(d, 20, &c, true);
    int64_t t = gate_stage0_done(&c, d, 20);
    size_t hn = gate_health(d, 20, h, 9, 0.3);
    upk_step_result res;
    gated(&c, d, 20, h, hn, t + 300000, &res);
    assert_int_equal(res.verdict, UPK_VERDICT_ROLLBACK);
    assert_int_equal(c.state, UPK_CAMP_ROLLING_BACK);
    assert_int_equal(count_state(d, 20, UPK_CDEV_SKIPPED), 18);
}

static void bad_gate_config_is_rejected_without_change(void **state)
{
    (void)state;
    static upk_cdev d[20];
    upk_campaign c = gate_campaign();
    c.gate.baseline_factor = 0.5;
    make_devs(d, 20, &c, true);
    int64_t t = gate_stage0_done(&c, d, 20);
    upk_step_result res;
    assert_int_equal(upk_engine_step_gated(&c, d, 20, NULL, 0, t + 300000, acts, N_MAX * 2, &res),
                     UPK_E_INVALID_ARG);
    assert_int_equal(res.next.stage, 0);
    assert_int_equal(res.next.state, UPK_CAMP_RUNNING);
    assert_int_equal(res.verdict, UPK_VERDICT_NONE);
    /* Health without a pointer. */
    assert_int_equal(upk_engine_step_gated(&c, d, 20, NULL, 3, t, acts, N_MAX * 2, &res),
                     UPK_E_INVALID_ARG);
}

static void parsers_accept_and_reject(void **state)
{
    (void)state;
    upk_campaign c;
    memset(&c, 0, sizeof(c));
    assert_int_equal(upk_engine_parse_stages("1%,10%,50%,100%", &c), UPK_OK);
    assert_int_equal(c.stage_count, 4);
    assert_int_equal(c.stage_bp[0], 100);
    assert_int_equal(c.stage_bp[3], 10000);
    const char *bad_stages[] = {"",          "10%,5%,100%", "10%,50%",     "0%,100%", "10,100%",
                                "10%,,100%", "101%",        "1.234%,100%", "%,100%",  "100%,"};
    for (size_t i = 0; i < sizeof(bad_stages) / sizeof(bad_stages[0]); i++)
        assert_int_equal(upk_engine_parse_stages(bad_stages[i], &c), UPK_E_FIELD_RANGE);
    assert_int_equal(upk_engine_parse_stages(NULL, &c), UPK_E_FIELD_RANGE);
    uint32_t v;
    assert_int_equal(upk_engine_parse_percent("0.5%", &v), UPK_OK);
    assert_int_equal(v, 50);
    assert_int_equal(upk_engine_parse_percent("5%", &v), UPK_OK);
    assert_int_equal(v, 500);
    assert_int_equal(upk_engine_parse_percent("5", &v), UPK_E_FIELD_RANGE);
    assert_int_equal(upk_engine_parse_percent("-5%", &v), UPK_E_FIELD_RANGE);
    assert_int_equal(upk_engine_parse_percent("100.01%", &v), UPK_E_FIELD_RANGE);
    assert_int_equal(upk_engine_parse_duration("10m", &v), UPK_OK);
    assert_int_equal(v, 600);
    assert_int_equal(upk_engine_parse_duration("30", &v), UPK_OK);
    assert_int_equal(v, 30);
    assert_int_equal(upk_engine_parse_duration("2h", &v), UPK_OK);
    assert_int_equal(v, 7200);
    assert_int_equal(upk_engine_parse_duration("1d", &v), UPK_OK);
    assert_int_equal(v, 86400);
    assert_int_equal(upk_engine_parse_duration("10x", &v), UPK_E_FIELD_RANGE);
    assert_int_equal(upk_engine_parse_duration("m", &v), UPK_E_FIELD_RANGE);
    assert_int_equal(upk_engine_parse_duration("99999999999", &v), UPK_E_FIELD_RANGE);
    assert_int_equal(upk_engine_parse_rate("200/min", &v), UPK_OK);
    assert_int_equal(v, 200);
    assert_int_equal(upk_engine_parse_rate("10/s", &v), UPK_OK);
    assert_int_equal(v, 600);
    assert_int_equal(upk_engine_parse_rate("120/h", &v), UPK_OK);
    assert_int_equal(v, 2);
    assert_int_equal(upk_engine_parse_rate("50", &v), UPK_OK);
    assert_int_equal(v, 50);
    assert_int_equal(upk_engine_parse_rate("fast", &v), UPK_E_FIELD_RANGE);
    assert_int_equal(upk_engine_parse_rate("5/week", &v), UPK_E_FIELD_RANGE);
}

static void state_names_round_trip(void **state)
{
    (void)state;
    for (int i = 0; i < UPK_CAMP__COUNT; i++) {
        upk_camp_state s;
        assert_true(upk_camp_state_from_str(upk_camp_state_str((upk_camp_state)i), &s));
        assert_int_equal(s, i);
    }
    for (int i = 0; i < UPK_CDEV__COUNT; i++) {
        upk_cdev_state s;
        assert_true(upk_cdev_state_from_str(upk_cdev_state_str((upk_cdev_state)i), &s));
        assert_int_equal(s, i);
    }
    upk_camp_state s;
    assert_false(upk_camp_state_from_str("nope", &s));
    assert_false(upk_camp_state_from_str(NULL, &s));
    assert_string_equal(upk_camp_state_str(UPK_CAMP__COUNT), "unknown");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(stage_sizes_sum_and_grow),
        cmocka_unit_test(stage_membership_is_deterministic),
        cmocka_unit_test(not_running_does_nothing),
        cmocka_unit_test(rejects_bad_campaign_row),
        cmocka_unit_test(first_stage_only_starts),
        cmocka_unit_test(in_flight_cap_is_respected),
        cmocka_unit_test(rate_cap_is_respected),
        cmocka_unit_test(offline_devices_wait_then_time_out),
        cmocka_unit_test(started_device_times_out),
        cmocka_unit_test(soak_then_advance_then_complete),
        cmocka_unit_test(empty_stages_pass_without_soak),
        cmocka_unit_test(failures_over_threshold_halt_with_reason),
        cmocka_unit_test(single_device_halt_reason_is_singular),
        cmocka_unit_test(halt_reason_names_errors_and_devices),
        cmocka_unit_test(auto_rollback_skips_pending),
        cmocka_unit_test(timeouts_count_as_failures),
        cmocka_unit_test(truncated_when_actions_do_not_fit),
        cmocka_unit_test(random_campaigns_keep_invariants),
        cmocka_unit_test(bake_holds_stage_then_healthy_advances),
        cmocka_unit_test(restart_loop_halts_at_canary_with_figures),
        cmocka_unit_test(baseline_metric_halts_and_names_the_metric),
        cmocka_unit_test(gate_halt_with_auto_rollback_skips_pending),
        cmocka_unit_test(bad_gate_config_is_rejected_without_change),
        cmocka_unit_test(parsers_accept_and_reject),
        cmocka_unit_test(state_names_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
