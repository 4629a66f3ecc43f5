/* Unit tests of the agent's bake-window pieces (agent/src/health.c): window
 * begin/restart/boot counting, the bounded report rate, bake.json round trip
 * and corruption, boot id reading, and the health hook parser. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "health.h"

#define T0 1800000000LL

static void test_window_counts(void **state)
{
    (void)state;
    upk__bake b;
    upk__bake_begin(&b, 0, T0, "c1", "fw", "2.0", "boot-a");
    assert_false(b.active);
    assert_false(upk__bake_due(&b, T0, 30));
    upk__bake_begin(&b, 600, T0, "c1", "fw", "2.0", "boot-a");
    assert_true(b.active);
    assert_int_equal(b.until, T0 + 600);
    /* A restart in the same boot, then a reboot. */
    upk__bake_on_start(&b, T0 + 5, "boot-a");
    assert_int_equal(b.restarts, 1);
    assert_int_equal(b.boots, 0);
    upk__bake_on_start(&b, T0 + 9, "boot-b");
    assert_int_equal(b.restarts, 2);
    assert_int_equal(b.boots, 1);
    assert_string_equal(b.boot_id, "boot-b");
    /* A start after the window ends it without counting. */
    upk__bake_on_start(&b, T0 + 600, "boot-c");
    assert_false(b.active);
    assert_int_equal(b.restarts, 2);
    assert_int_equal(b.boots, 1);
}

static void test_rate(void **state)
{
    (void)state;
    upk__bake b;
    upk__bake_begin(&b, 100, T0, "c1", "fw", "2.0", "boot-a");
    assert_true(upk__bake_due(&b, T0, 30)); /* first report at once */
    upk__bake_sent(&b, T0);
    assert_false(upk__bake_due(&b, T0 + 29, 30));
    assert_true(upk__bake_due(&b, T0 + 30, 30));
    upk__bake_sent(&b, T0 + 30);
    /* An interval under the floor is raised to UPK__BAKE_MIN_GAP. */
    assert_false(upk__bake_due(&b, T0 + 30 + UPK__BAKE_MIN_GAP - 1, 1));
    assert_true(upk__bake_due(&b, T0 + 30 + UPK__BAKE_MIN_GAP, 1));
    /* The closing report at the window's end is due even inside the gap. */
    upk__bake_sent(&b, T0 + 95);
    assert_false(upk__bake_due(&b, T0 + 99, 30));
    assert_true(upk__bake_due(&b, T0 + 100, 30));
    upk__bake_sent(&b, T0 + 100);
    assert_false(b.active);
    assert_int_equal(b.reports, 4);
    assert_false(upk__bake_due(&b, T0 + 200, 30));
}

static void test_save_load(void **state)
{
    (void)state;
    char dir[] = "/tmp/upk-health-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256];
    (void)snprintf(path, sizeof(path), "%s/%s", dir, UPK__BAKE_FILE);
    upk__bake b, c;
    assert_int_equal(upk__bake_load(path, &c), UPK_OK); /* missing: idle */
    assert_false(c.active);
    upk__bake_begin(&b, 600, T0, "cve-1", "fw", "2.0", "boot-a");
    upk__bake_on_start(&b, T0 + 1, "boot-b");
    upk__bake_sent(&b, T0 + 2);
    assert_int_equal(upk__bake_save(path, &b, false), UPK_OK);
    assert_int_equal(upk__bake_load(path, &c), UPK_OK);
    assert_memory_equal(&b, &c, sizeof(b));
    assert_int_equal(upk__bake_save(path, &b, true), UPK_OK);
    assert_int_equal(upk__bake_load(path, &c), UPK_OK);
    assert_true(c.active && c.restarts == 1 && c.boots == 1 && c.reports == 1);
    /* Corrupt: wrong version, bad JSON, out-of-range field, too large. */
    const char *bad[] = {
        "{\"v\":2}",
        "{not json",
        ("{\"v\":1,\"active\":true,\"until\":-5,\"campaign\":\"\",\"release\":\"\",\"version\":"
         "\"\","
         "\"restarts\":0,\"boots\":0,\"boot_id\":\"\",\"last_report\":0,\"reports\":0}"),
    };
    for (size_t i = 0; i < 3; i++) {
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        assert_true(fputs(bad[i], f) >= 0);
        assert_int_equal(fclose(f), 0);
        assert_int_equal(upk__bake_load(path, &c), UPK_E_STATE_CORRUPT);
        assert_false(c.active);
    }
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    for (int i = 0; i < 3000; i++)
        assert_true(fputc(' ', f) != EOF);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(upk__bake_load(path, &c), UPK_E_STATE_CORRUPT);
    /* Unwritable target. */
    char nodir[300];
    (void)snprintf(nodir, sizeof(nodir), "%s/missing/bake.json", dir);
    assert_int_equal(upk__bake_save(nodir, &b, false), UPK_E_IO);
    assert_int_not_equal(upk__bake_save(nodir, &b, true), UPK_OK);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(rmdir(dir), 0);
}

static void test_boot_id(void **state)
{
    (void)state;
    char id[UPK__BOOT_ID_MAX + 1];
    assert_int_equal(upk__boot_id(NULL, id, sizeof(id)), UPK_OK);
    assert_true(strlen(id) >= 32);
    assert_int_equal(upk__boot_id("/nonexistent/boot_id", id, sizeof(id)), UPK_E_IO);
    char tiny[4];
    assert_int_equal(upk__boot_id(NULL, tiny, sizeof(tiny)), UPK_E_IO);
    assert_int_equal(upk__boot_id("/dev/null", id, sizeof(id)), UPK_E_IO); /* empty */
}

static void test_hook_parse(void **state)
{
    (void)state;
    upk_health h;
    char why[128];
    memset(&h, 0, sizeof(h));
    const char *ok = "# comment\ncpu 0.25\r\n\n  mem_mb\t112\nerrors 0\ncpu 0.5\n";
    assert_int_equal(upk__health_parse(ok, strlen(ok), &h, why, sizeof(why)), UPK_OK);
    assert_int_equal(h.metric_count, 3);
    assert_string_equal(h.metric_name[0], "cpu");
    assert_true(h.metric_value[0] == 0.5); /* last value wins */
    assert_string_equal(h.metric_name[1], "mem_mb");
    assert_true(h.metric_value[1] == 112);
    /* No trailing newline. */
    memset(&h, 0, sizeof(h));
    assert_int_equal(upk__health_parse("x 1", 3, &h, why, sizeof(why)), UPK_OK);
    assert_int_equal(h.metric_count, 1);

    const char *bad[] = {"cpu\n",        "cpu abc\n", "cpu 1 2\n",
                         "bad/name 1\n", "cpu nan\n", "cpu 1e999\n"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        memset(&h, 0, sizeof(h));
        assert_int_equal(upk__health_parse(bad[i], strlen(bad[i]), &h, why, sizeof(why)),
                         UPK_E_FIELD_TYPE);
        assert_string_equal(why, "health hook line 1 is not \"name value\"");
    }
    char longline[300];
    memset(longline, 'a', sizeof(longline));
    memset(&h, 0, sizeof(h));
    assert_int_equal(upk__health_parse(longline, sizeof(longline), &h, why, sizeof(why)),
                     UPK_E_FIELD_TYPE);
    assert_string_equal(why, "health hook line 1 is too long");
    const char *nine = "a 1\nb 1\nc 1\nd 1\ne 1\nf 1\ng 1\nh 1\ni 1\n";
    memset(&h, 0, sizeof(h));
    assert_int_equal(upk__health_parse(nine, strlen(nine), &h, why, sizeof(why)),
                     UPK_E_FIELD_TOO_LONG);
    assert_int_equal(h.metric_count, 8);
    assert_string_equal(why, "health hook gave more than 8 metrics (line 9)");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_window_counts), cmocka_unit_test(test_rate),
        cmocka_unit_test(test_save_load),     cmocka_unit_test(test_boot_id),
        cmocka_unit_test(test_hook_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
