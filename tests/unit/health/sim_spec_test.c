/* Unit tests of upkeep-sim's health knobs (sim/src/spec.c):
 * --restart-after-commit CLASS:N[@VERSION] and --metric
 * NAME:CLASS:VALUE[@VERSION] parsing, bad input included, and which metrics
 * a device reports for the version it runs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "upkeep/sim.h"

static size_t two(upk_sim_class *c)
{
    size_t n = 0;
    char eb[256];
    assert_int_equal(upk_sim_parse_hw("rev-a:50%,rev-b:50%", c, &n, eb, sizeof(eb)), UPK_OK);
    assert_int_equal(n, 2);
    return n;
}

static void test_restart_spec(void **state)
{
    (void)state;
    upk_sim_class c[UPK_SIM_CLASS_MAX];
    size_t n = two(c);
    char eb[256];
    assert_int_equal(c[0].restart_after_commit, 0);
    assert_int_equal(upk_sim_parse_restart(c, n, "rev-b:5@2.0.0", eb, sizeof(eb)), UPK_OK);
    assert_int_equal(c[0].restart_after_commit, 0);
    assert_int_equal(c[1].restart_after_commit, 5);
    assert_string_equal(c[1].restart_version, "2.0.0");
    assert_int_equal(upk_sim_parse_restart(c, n, "*:2", eb, sizeof(eb)), UPK_OK);
    assert_int_equal(c[0].restart_after_commit, 2);
    assert_int_equal(c[1].restart_after_commit, 2);
    assert_string_equal(c[1].restart_version, "");
    assert_int_equal(upk_sim_parse_restart(c, n, "rev-a:1@1.0,rev-b:3@2.0", eb, sizeof(eb)),
                     UPK_OK);
    assert_int_equal(c[0].restart_after_commit, 1);
    assert_int_equal(c[1].restart_after_commit, 3);
    assert_string_equal(c[1].restart_version, "2.0");

    struct {
        const char *spec, *msg;
    } bad[] = {
        {"rev-c:2@2.0", "unknown hardware class 'rev-c' (not in --hw)"},
        {"rev-a", "'rev-a': expected CLASS:N[@VERSION], e.g. rev-b:5@2.0.0"},
        {"rev-a:x@2.0", "class rev-a: restart count 'x' must be 0..100"},
        {"rev-a:101", "class rev-a: restart count '101' must be 0..100"},
        {"rev-a:-1", "class rev-a: restart count '-1' must be 0..100"},
        {"rev-a:2@", "rev-a: bad release version after '@'"},
        {"rev-a:2@1@2", "rev-a: bad release version after '@'"},
        {"", "empty spec"},
        {"rev-a:1,", "empty item in 'rev-a:1,'"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        eb[0] = '\0';
        assert_int_equal(upk_sim_parse_restart(c, n, bad[i].spec, eb, sizeof(eb)),
                         UPK_E_INVALID_ARG);
        assert_string_equal(eb, bad[i].msg);
    }
    assert_int_equal(upk_sim_parse_restart(c, 0, "*:1", eb, sizeof(eb)), UPK_E_INVALID_ARG);
}

static double metric(const upk_health *h, const char *name)
{
    for (size_t i = 0; i < h->metric_count; i++) {
        if (strcmp(h->metric_name[i], name) == 0)
            return h->metric_value[i];
    }
    return -12345;
}

static void test_metric_spec(void **state)
{
    (void)state;
    upk_sim_class c[UPK_SIM_CLASS_MAX];
    size_t n = two(c);
    char eb[256];
    assert_int_equal(upk_sim_parse_metric(c, n, "cpu:*:0.2", eb, sizeof(eb)), UPK_OK);
    assert_int_equal(upk_sim_parse_metric(c, n, "cpu:rev-b:0.9@2.0.0", eb, sizeof(eb)), UPK_OK);
    assert_int_equal(upk_sim_parse_metric(c, n, "temp_c:rev-a:-4.5,errors:rev-b:3", eb, sizeof(eb)),
                     UPK_OK);
    assert_int_equal(c[0].metric_count, 2);
    assert_int_equal(c[1].metric_count, 3);

    upk_health h;
    memset(&h, 0, sizeof(h));
    upk_sim_class_metrics(&c[0], "2.0.0", &h);
    assert_int_equal(h.metric_count, 2);
    assert_true(metric(&h, "cpu") == 0.2); /* rev-a: not raised */
    assert_true(metric(&h, "temp_c") == -4.5);

    memset(&h, 0, sizeof(h));
    upk_sim_class_metrics(&c[1], "1.0.0", &h); /* the old version: the baseline value */
    assert_int_equal(h.metric_count, 2);
    assert_true(metric(&h, "cpu") == 0.2);
    assert_true(metric(&h, "errors") == 3);

    memset(&h, 0, sizeof(h));
    upk_sim_class_metrics(&c[1], "2.0.0", &h); /* the raised value wins */
    assert_int_equal(h.metric_count, 2);
    assert_true(metric(&h, "cpu") == 0.9);

    /* Order does not matter: a versioned entry first, then the generic one. */
    upk_sim_class d[UPK_SIM_CLASS_MAX];
    size_t dn = two(d);
    assert_int_equal(
        upk_sim_parse_metric(d, dn, "cpu:rev-b:0.9@2.0.0,cpu:rev-b:0.1", eb, sizeof(eb)), UPK_OK);
    memset(&h, 0, sizeof(h));
    upk_sim_class_metrics(&d[1], "2.0.0", &h);
    assert_int_equal(h.metric_count, 1);
    assert_true(metric(&h, "cpu") == 0.9);
    memset(&h, 0, sizeof(h));
    upk_sim_class_metrics(&d[1], "", &h);
    assert_true(metric(&h, "cpu") == 0.1);
    /* The same name and version again replaces the value. */
    assert_int_equal(upk_sim_parse_metric(d, dn, "cpu:rev-b:0.3", eb, sizeof(eb)), UPK_OK);
    assert_int_equal(d[1].metric_count, 2);
    memset(&h, 0, sizeof(h));
    upk_sim_class_metrics(&d[1], "1.0", &h);
    assert_true(metric(&h, "cpu") == 0.3);

    struct {
        const char *spec, *msg;
    } bad[] = {
        {"cpu:rev-c:1", "unknown hardware class 'rev-c' (not in --hw)"},
        {"cpu:rev-a", "'cpu:rev-a': expected NAME:CLASS:VALUE[@VERSION], e.g. cpu:rev-b:0.9@2.0.0"},
        {"cpu:rev-a:1:2", "'cpu:rev-a:1:2': expected NAME:CLASS:VALUE[@VERSION], e.g. "
                          "cpu:rev-b:0.9@2.0.0"},
        {"bad/name:rev-a:1", "metric name 'bad/name' is not a valid id"},
        {"cpu:rev-a:abc", "metric cpu: value 'abc' must be a decimal number"},
        {"cpu:rev-a:1e9", "metric cpu: value '1e9' must be a decimal number"},
        {"cpu:rev-a:", "metric cpu: value '' must be a decimal number"},
        {"cpu:rev-a:--1", "metric cpu: value '--1' must be a decimal number"},
        {"cpu:rev-a:1@", "cpu: bad release version after '@'"},
        {"", "empty spec"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        eb[0] = '\0';
        assert_int_equal(upk_sim_parse_metric(c, n, bad[i].spec, eb, sizeof(eb)),
                         UPK_E_INVALID_ARG);
        assert_string_equal(eb, bad[i].msg);
    }
    /* At most UPK_SIM_METRICS_MAX entries per class. */
    upk_sim_class e[UPK_SIM_CLASS_MAX];
    size_t en = two(e);
    for (int i = 0; i < UPK_SIM_METRICS_MAX; i++) {
        char spec[64];
        (void)snprintf(spec, sizeof(spec), "m%d:rev-a:%d", i, i);
        assert_int_equal(upk_sim_parse_metric(e, en, spec, eb, sizeof(eb)), UPK_OK);
    }
    assert_int_equal(upk_sim_parse_metric(e, en, "m9:rev-a:1", eb, sizeof(eb)), UPK_E_INVALID_ARG);
    assert_string_equal(eb, "class rev-a: more than 8 --metric entries");
    assert_int_equal(upk_sim_parse_metric(e, 0, "m:rev-a:1", eb, sizeof(eb)), UPK_E_INVALID_ARG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_restart_spec),
        cmocka_unit_test(test_metric_spec),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
