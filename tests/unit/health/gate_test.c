/* Unit tests of the stage health gate (controller/src/health_gate.c): the
 * unhealthy budget by cause, the per-hardware baseline comparison, the halt
 * reasons with their figures, the watch summary, and bad arguments. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
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

/* The fleet of issue 17: rev-b, 2 updated devices at cpu_pct 55 (a bad
 * release), 6 not updated at 20; plus, when liar_v is finite, one more
 * device (updated or not) reporting liar_v. Returns the device count. */
static size_t fleet(upk_gate_dev *d, bool liar_updated, double liar_v)
{
    size_t n = 0;
    for (int i = 0; i < 8; i++) {
        char id[16];
        (void)snprintf(id, sizeof(id), "b%d", i);
        d[n] = dev(id, "rev-b", i < 2);
        metric(&d[n++], "cpu_pct", i < 2 ? 55 : 20);
    }
    if (isfinite(liar_v)) {
        d[n] = dev("liar", "rev-b", liar_updated);
        metric(&d[n++], "cpu_pct", liar_v);
    }
    return n;
}

static void gate_one_liar_cannot_pass_a_bad_release(void **state)
{
    (void)state;
    upk_gate_cfg cfg;
    upk_gate_cfg_init(&cfg);
    cfg.compare_baseline = true;
    upk_gate_dev d[12];
    upk_gate_result honest, r;
    size_t n = fleet(d, false, NAN);
    assert_int_equal(upk_gate_eval(&cfg, d, n, &honest), UPK_OK);
    assert_true(honest.halt);
    assert_string_equal(honest.reason, "health gate: metric cpu_pct on hw rev-b is 55 on 2 updated"
                                       " devices vs 20 on 6 not updated (2.75x > 1.50x)");
    /* One not-updated device reporting 1000 (the mean became ~183 and the
     * bad release passed): the median stays 20 and the campaign halts. */
    n = fleet(d, false, 1000);
    assert_int_equal(upk_gate_eval(&cfg, d, n, &r), UPK_OK);
    assert_true(r.halt);
    assert_string_equal(r.reason, "health gate: metric cpu_pct on hw rev-b is 55 on 2 updated"
                                  " devices vs 20 on 7 not updated (2.75x > 1.50x)");
    /* One updated device reporting 0: the updated median moves only to the
     * next honest value, still over the factor. */
    n = fleet(d, true, 0);
    assert_int_equal(upk_gate_eval(&cfg, d, n, &r), UPK_OK);
    assert_true(r.halt);
    assert_true(r.metric_updated == 55);
}

static void gate_one_liar_cannot_halt_a_good_release(void **state)
{
    (void)state;
    upk_gate_cfg cfg;
    upk_gate_cfg_init(&cfg);
    cfg.compare_baseline = true;
    upk_gate_dev d[12];
    upk_gate_result r;
    size_t n = fleet(d, false, NAN);
    d[0].metric_value[0] = d[1].metric_value[0] = 21; /* a good release */
    /* A liar among the updated reporting 1e9, and one baseline at 1e-9. */
    d[n] = dev("liar-u", "rev-b", true);
    metric(&d[n++], "cpu_pct", 1e9);
    d[n] = dev("liar-b", "rev-b", false);
    metric(&d[n++], "cpu_pct", 1e-9);
    assert_int_equal(upk_gate_eval(&cfg, d, n, &r), UPK_OK);
    assert_false(r.halt);
    assert_true(r.metric_updated == 21);
    assert_true(r.metric_baseline == 20);
    assert_string_equal(r.reason, "");
}

static void gate_values_outside_the_declared_range_are_left_out(void **state)
{
    (void)state;
    upk_gate_cfg cfg;
    upk_gate_cfg_init(&cfg);
    cfg.compare_baseline = true;
    assert_int_equal(upk_gate_parse_metrics("cpu_pct:0..100", &cfg), UPK_OK);
    upk_gate_dev d[12];
    upk_gate_result r;
    size_t n = fleet(d, false, 1000);
    assert_int_equal(upk_gate_eval(&cfg, d, n, &r), UPK_OK);
    assert_int_equal(r.out_of_range, 1);
    assert_int_equal(r.metric_nb, 6); /* the liar is not counted at all */
    assert_true(r.halt);
    char line[320];
    upk_gate_summary(&r, 5, line, sizeof(line));
    assert_non_null(strstr(line, "; 1 values outside the declared range left out"));
}

static void gate_junk_names_cannot_crowd_out_the_real_metric(void **state)
{
    (void)state;
    /* 16 updated devices, 8 of them attackers that report 8 junk names each
     * (64 pairs: before issue 17 they filled the 64 pairs compared, so
     * cpu_pct on the honest devices was never compared); 8 honest updated
     * at 55 and 8 not updated at 20. */
    static upk_gate_dev d[40];
    size_t n = 0;
    for (int i = 0; i < 8; i++) {
        char id[16];
        (void)snprintf(id, sizeof(id), "evil%d", i);
        d[n] = dev(id, "rev-b", true);
        for (int k = 0; k < 8; k++) {
            char name[16];
            (void)snprintf(name, sizeof(name), "a%d_%d", i, k);
            metric(&d[n], name, 1);
        }
        n++;
    }
    for (int i = 0; i < 16; i++) {
        char id[16];
        (void)snprintf(id, sizeof(id), "b%d", i);
        d[n] = dev(id, "rev-b", i < 8);
        metric(&d[n++], "cpu_pct", i < 8 ? 55 : 20);
    }
    upk_gate_cfg cfg;
    upk_gate_cfg_init(&cfg);
    cfg.compare_baseline = true;
    upk_gate_result r;
    /* Default (no names): cpu_pct is reported by half the updated devices. */
    assert_int_equal(upk_gate_eval(&cfg, d, n, &r), UPK_OK);
    assert_true(r.halt);
    assert_string_equal(r.metric, "cpu_pct");
    /* Named: only cpu_pct is compared, whatever else devices send. */
    assert_int_equal(upk_gate_parse_metrics("cpu_pct", &cfg), UPK_OK);
    assert_int_equal(upk_gate_eval(&cfg, d, n, &r), UPK_OK);
    assert_true(r.halt);
    assert_string_equal(r.metric, "cpu_pct");
    /* A name only a minority of the updated devices reports is not compared
     * by default: one updated device and one baseline device agree on "rare"
     * (1000 vs 0.001) and nothing halts. */
    n = 0;
    for (int i = 0; i < 20; i++) {
        char id[16];
        (void)snprintf(id, sizeof(id), "h%d", i);
        d[n] = dev(id, "rev-b", i < 10);
        metric(&d[n++], "cpu_pct", 20);
    }
    metric(&d[0], "rare", 1000);
    metric(&d[19], "rare", 0.001);
    upk_gate_cfg_init(&cfg);
    cfg.compare_baseline = true;
    assert_int_equal(upk_gate_eval(&cfg, d, n, &r), UPK_OK);
    assert_false(r.halt);
    assert_string_equal(r.metric, "cpu_pct");
}

static void gate_metric_lists_parse_and_refuse_by_name(void **state)
{
    (void)state;
    upk_gate_cfg cfg;
    upk_gate_cfg_init(&cfg);
    assert_int_equal(upk_gate_parse_metrics("cpu_pct,rss_mb:0..4096", &cfg), UPK_OK);
    assert_int_equal(cfg.metric_count, 2);
    assert_true(cfg.metrics[1].ranged && cfg.metrics[1].hi == 4096);
    char buf[UPK_GATE_SPEC_MAX + 1];
    upk_gate_format_metrics(&cfg, buf, sizeof(buf));
    assert_string_equal(buf, "cpu_pct,rss_mb:0..4096");
    assert_int_equal(upk_gate_parse_metrics("cpu pct", &cfg), UPK_E_ID_INVALID);
    assert_int_equal(upk_gate_parse_metrics("cpu,", &cfg), UPK_E_ID_INVALID);
    assert_int_equal(upk_gate_parse_metrics("cpu:5..1", &cfg), UPK_E_FIELD_RANGE);
    assert_int_equal(upk_gate_parse_metrics("cpu:0..inf", &cfg), UPK_E_FIELD_RANGE);
    assert_int_equal(upk_gate_parse_metrics("cpu:0", &cfg), UPK_E_FIELD_RANGE);
    assert_int_equal(upk_gate_parse_metrics("cpu,cpu", &cfg), UPK_E_FIELD_RANGE);
    assert_int_equal(upk_gate_parse_metrics("a,b,c,d,e,f,g,h,i", &cfg), UPK_E_FIELD_TOO_LONG);
    assert_int_equal(cfg.metric_count, 2); /* untouched by the failures */
    assert_int_equal(upk_gate_parse_metrics("", &cfg), UPK_OK);
    assert_int_equal(cfg.metric_count, 0);
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
        cmocka_unit_test(gate_one_liar_cannot_pass_a_bad_release),
        cmocka_unit_test(gate_one_liar_cannot_halt_a_good_release),
        cmocka_unit_test(gate_values_outside_the_declared_range_are_left_out),
        cmocka_unit_test(gate_junk_names_cannot_crowd_out_the_real_metric),
        cmocka_unit_test(gate_metric_lists_parse_and_refuse_by_name),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
