/* Unit tests of the stage health gate (controller/src/health_gate.c): the
 * unhealthy budget by cause, the per-hardware baseline comparison, the halt
 * reasons with their figures, the watch summary, and bad arguments. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "health_gate.h"

static upk_gate_dev dev(const char *id, const char *hw, bool updated)
{
    upk_gate_dev d;
    memset(&d, 0, sizeof(d));
    int r = snprintf(d.device, sizeof(d.device), "%s", id);
    r |= snprintf(d.hw, sizeof(d.hw), "%s", hw);
    assert_true(r > 0);
    d.updated = updated;
    return d;
}

static void metric(upk_gate_dev *d, const char *name, double v)
{
    assert_true(d->metric_count < UPK_GATE_METRICS_MAX);
    int r = snprintf(d->metric_name[d->metric_count], sizeof(d->metric_name[0]), "%s", name);
    assert_true(r > 0);
    d->metric_value[d->metric_count++] = v;
}

static void test_healthy_passes(void **state)
{
    (void)state;
    upk_gate_cfg cfg;
    upk_gate_cfg_init(&cfg);
    cfg.compare_baseline = true;
    upk_gate_dev d[20];
    for (int i = 0; i < 20; i++) {
        char id[16];
        (void)snprintf(id, sizeof(id), "d%02d", i);
        d[i] = dev(id, i % 2 ? "rev-a" : "rev-b", i < 5);
        d[i].restarts = 1; /* the restart of the update itself */
        metric(&d[i], "cpu", 0.20 + 0.01 * (i % 3));
    }
    upk_gate_result r;
    assert_int_equal(upk_gate_eval(&cfg, d, 20, &r), UPK_OK);
    assert_false(r.halt);
    assert_int_equal(r.updated, 5);
    assert_int_equal(r.unhealthy, 0);
    assert_string_equal(r.reason, "");
}

static void test_restart_loop_halts(void **state)
{
    (void)state;
    upk_gate_cfg cfg;
    upk_gate_cfg_init(&cfg);
    cfg.max_unhealthy_bp = 200; /* 2% */
    cfg.restart_limit = 3;
    upk_gate_dev d[10];
    for (int i = 0; i < 10; i++)
        d[i] = dev("x", "rev-a", true);
    d[3].restarts = 4;
    d[7].boots = 9;
    d[8].rolled_back = true;
    d[8].restarts = 3; /* at the limit: not a loop */
    upk_gate_result r;
    assert_int_equal(upk_gate_eval(&cfg, d, 10, &r), UPK_OK);
    assert_true(r.halt);
    assert_int_equal(r.unhealthy, 3);
    assert_int_equal(r.restart_loop, 2);
    assert_int_equal(r.rolled_back, 1);
    assert_string_equal(r.reason, "health gate: 3 of 10 updated devices unhealthy (30.00% > "
                                  "2.00%): 1 rolled back, 2 restarted more than 3 times");
    /* One device and a limit of 1: singular words. */
    cfg.restart_limit = 1;
    d[0].restarts = 2;
    assert_int_equal(upk_gate_eval(&cfg, d, 1, &r), UPK_OK);
    assert_true(r.halt);
    assert_string_equal(r.reason, "health gate: 1 of 1 updated device unhealthy (100.00% > "
                                  "2.00%): 1 restarted more than 1 time");
    d[0].restarts = 0;
    cfg.restart_limit = 3;
    /* Within budget: 1 of 10 with 10% allowed. */
    d[3].restarts = 0;
    d[7].boots = 0;
    cfg.max_unhealthy_bp = 1000;
    assert_int_equal(upk_gate_eval(&cfg, d, 10, &r), UPK_OK);
    assert_false(r.halt);
    assert_int_equal(r.unhealthy, 1);
}

static void test_every_cause_counts(void **state)
{
    (void)state;
    upk_gate_cfg cfg;
    upk_gate_cfg_init(&cfg);
    upk_gate_dev d[4] = {dev("a", "h", true), dev("b", "h", true), dev("c", "h", true),
                         dev("d", "h", false)};
    d[0].check_failed = true;
    d[1].offline = true;
    d[3].rolled_back = true; /* not updated: not judged */
    upk_gate_result r;
    assert_int_equal(upk_gate_eval(&cfg, d, 4, &r), UPK_OK);
    assert_true(r.halt);
    assert_int_equal(r.updated, 3);
    assert_int_equal(r.unhealthy, 2);
    assert_int_equal(r.check_failed, 1);
    assert_int_equal(r.offline, 1);
    assert_int_equal(r.rolled_back, 0);
    assert_non_null(strstr(r.reason, "1 failed the health check, 1 not back online"));
}

static void test_baseline_one_hw(void **state)
{
    (void)state;
    upk_gate_cfg cfg;
    upk_gate_cfg_init(&cfg);
    cfg.compare_baseline = true;
    cfg.baseline_factor = 1.5;
    cfg.min_samples = 2;
    upk_gate_dev d[12];
    /* rev-a: updated 0.9 vs baseline 0.3 (3x); rev-b: same before and after. */
    for (int i = 0; i < 12; i++) {
        bool rev_a = i < 6, upd = i % 2 == 0;
        d[i] = dev("x", rev_a ? "rev-a" : "rev-b", upd);
        metric(&d[i], "mem_mb", 100);
        metric(&d[i], "cpu", rev_a && upd ? 0.9 : 0.3);
    }
    upk_gate_result r;
    assert_int_equal(upk_gate_eval(&cfg, d, 12, &r), UPK_OK);
    assert_true(r.halt);
    assert_int_equal(r.unhealthy, 0);
    assert_string_equal(r.reason, "health gate: metric cpu on hw rev-a is 0.9 on 3 updated devices"
                                  " vs 0.3 on 3 not updated (3.00x > 1.50x)");
    /* The figures watch shows: the worst compared pair. */
    assert_string_equal(r.metric, "cpu");
    assert_string_equal(r.metric_hw, "rev-a");
    assert_true(r.metric_updated > 0.89 && r.metric_updated < 0.91);
    assert_true(r.metric_baseline > 0.29 && r.metric_baseline < 0.31);
    assert_int_equal(r.metric_nu, 3);
    assert_int_equal(r.metric_nb, 3);
    char line[256];
    upk_gate_summary(&r, 30, line, sizeof(line));
    assert_string_equal(line, "bake 30s left: 0/6 unhealthy; cpu on rev-a 0.9 (3 updated) vs 0.3"
                              " (3 not updated)");
    /* Too few baseline devices to compare: no halt, no figures. */
    cfg.min_samples = 4;
    assert_int_equal(upk_gate_eval(&cfg, d, 12, &r), UPK_OK);
    assert_false(r.halt);
    assert_string_equal(r.metric, "");
    /* Off without --compare-baseline. */
    cfg.min_samples = 1;
    cfg.compare_baseline = false;
    assert_int_equal(upk_gate_eval(&cfg, d, 12, &r), UPK_OK);
    assert_false(r.halt);
    /* Under the factor: 0.4 vs 0.3 is 1.33x < 1.5x. */
    cfg.compare_baseline = true;
    for (int i = 0; i < 6; i += 2)
        d[i].metric_value[1] = 0.4;
    assert_int_equal(upk_gate_eval(&cfg, d, 12, &r), UPK_OK);
    assert_false(r.halt);
    assert_string_equal(r.metric, "cpu"); /* shown though under the factor */
    /* Baseline zero, updated positive: named without a ratio. */
    for (int i = 0; i < 6; i++)
        d[i].metric_value[1] = i % 2 == 0 ? 2 : 0;
    assert_int_equal(upk_gate_eval(&cfg, d, 12, &r), UPK_OK);
    assert_true(r.halt);
    assert_string_equal(r.reason, "health gate: metric cpu on hw rev-a is 2 on 3 updated devices"
                                  " vs 0 on 3 not updated");
}

static void test_summary(void **state)
{
    (void)state;
    upk_gate_result r;
    memset(&r, 0, sizeof(r));
    r.updated = 40;
    r.unhealthy = 2;
    r.restart_loop = 1;
    r.rolled_back = 1;
    char buf[128];
    upk_gate_summary(&r, 250, buf, sizeof(buf));
    assert_string_equal(buf, "bake 4m10s left: 2/40 unhealthy (1 rolled back, 1 restart loop)");
    memset(&r, 0, sizeof(r));
    r.updated = 5;
    upk_gate_summary(&r, 9, buf, sizeof(buf));
    assert_string_equal(buf, "bake 9s left: 0/5 unhealthy");
    upk_gate_summary(&r, -1, buf, sizeof(buf));
    assert_string_equal(buf, "bake done: 0/5 unhealthy");
}

static void test_bad_args(void **state)
{
    (void)state;
    upk_gate_cfg cfg;
    upk_gate_result r;
    upk_gate_dev d = dev("a", "h", true);
    upk_gate_cfg_init(&cfg);
    cfg.baseline_factor = 0.5;
    assert_int_equal(upk_gate_eval(&cfg, &d, 1, &r), UPK_E_INVALID_ARG);
    cfg.baseline_factor = 1.0 / 0.0;
    assert_int_equal(upk_gate_eval(&cfg, &d, 1, &r), UPK_E_INVALID_ARG);
    upk_gate_cfg_init(&cfg);
    cfg.min_samples = 0;
    assert_int_equal(upk_gate_eval(&cfg, &d, 1, &r), UPK_E_INVALID_ARG);
    upk_gate_cfg_init(&cfg);
    d.metric_count = UPK_GATE_METRICS_MAX + 1;
    assert_int_equal(upk_gate_eval(&cfg, &d, 1, &r), UPK_E_INVALID_ARG);
    assert_int_equal(upk_gate_eval(&cfg, NULL, 1, &r), UPK_E_INVALID_ARG);
    assert_int_equal(upk_gate_eval(&cfg, NULL, 0, &r), UPK_OK);
    assert_int_equal(r.updated, 0);
    assert_false(r.halt);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_healthy_passes),
        cmocka_unit_test(test_restart_loop_halts),
        cmocka_unit_test(test_every_cause_counts),
        cmocka_unit_test(test_baseline_one_hw),
        cmocka_unit_test(test_summary),
        cmocka_unit_test(test_bad_args),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
