/* Unit tests of the agent's bake-window pieces (agent/src/health.c): window
 * begin/restart/boot counting, the bounded report rate, bake.json round trip
 * and corruption, boot id reading, the health hook parser (a bad line is
 * skipped, not fatal) and the hook runner (output, exit status, timeout,
 * bounded output, missing executable). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "health.h"
#include "upkeep/agent.h"
#include "upkeep/fs.h"
#include "upkeep/key.h"

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

static void test_hook_parse_skips_bad_lines(void **state)
{
    (void)state;
    upk_health h;
    char why[128];
    memset(&h, 0, sizeof(h));
    const char *mixed = "cpu 1\nnot a line\nmem 2\nbad/x 3\ntemp 4\n";
    assert_int_equal(upk__health_parse(mixed, strlen(mixed), &h, why, sizeof(why)),
                     UPK_E_FIELD_TYPE);
    assert_string_equal(why, "health hook line 2 is not \"name value\"");
    assert_int_equal(h.metric_count, 3);
    assert_string_equal(h.metric_name[2], "temp");
    assert_true(h.metric_value[2] == 4);
}

static void test_gap(void **state)
{
    (void)state;
    upk__bake b;
    upk__bake_begin(&b, 600, T0, "c1", "fw", "2.0", "boot-a");
    assert_int_equal(upk__health_gap(&b, T0, 300), 60);       /* a tenth of 600 s */
    assert_int_equal(upk__health_gap(&b, T0, 30), 30);        /* the interval caps it */
    assert_int_equal(upk__health_gap(&b, T0 + 590, 300), 10); /* never below 10 s */
    assert_int_equal(upk__health_gap(NULL, T0, 300), 300);
    assert_int_equal(upk__health_gap(NULL, T0, 1), UPK__BAKE_MIN_GAP);
    assert_true(upk__baseline_due(0, T0, 60));
    assert_false(upk__baseline_due(T0, T0 + 59, 60));
    assert_true(upk__baseline_due(T0, T0 + 60, 60));
    assert_false(upk__baseline_due(T0, T0 + 9, 1)); /* the floor holds */
    assert_true(upk__baseline_due(T0, T0 - 5, 60)); /* clock went back */
}

typedef struct hook_seen {
    int calls;
    int status;
    bool truncated;
    size_t len;
    char out[UPK__HOOK_OUT_MAX + 1];
} hook_seen;

static void hook_cb(const upk__hook_result *r, void *cb_data)
{
    hook_seen *s = cb_data;
    s->calls++;
    s->status = r->status;
    s->truncated = r->truncated;
    s->len = r->len;
    memcpy(s->out, r->out, r->len);
    s->out[r->len] = '\0';
}

/* Writes an executable shell script into dir/name; its path into path. */
static void script(const char *dir, const char *name, const char *body, char *path, size_t cap)
{
    int n = snprintf(path, cap, "%s/%s", dir, name);
    assert_true(n > 0 && (size_t)n < cap);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_true(fprintf(f, "#!/bin/sh\n%s\n", body) > 0);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(chmod(path, 0755), 0);
}

static void run_hook(const char *path, uint32_t timeout_ms, hook_seen *seen, upk_err want)
{
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    memset(seen, 0, sizeof(*seen));
    char *argv[] = {(char *)path, NULL};
    assert_int_equal(upk__hook_run(&loop, argv, timeout_ms, hook_cb, seen), want);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
    assert_int_equal(seen->calls, want == UPK_OK ? 1 : 0);
}

static void test_hook_run(void **state)
{
    (void)state;
    char dir[] = "/tmp/upk-hook-test-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char p_ok[256], p_fail[256], p_slow[256], p_big[256], p_bad[256];
    script(dir, "ok", "echo 'cpu 0.5'\necho 'mem_mb 12'", p_ok, sizeof(p_ok));
    script(dir, "fail", "echo 'cpu 1'\nexit 3", p_fail, sizeof(p_fail));
    script(dir, "slow", "echo 'cpu 1'\nexec sleep 30", p_slow, sizeof(p_slow));
    script(dir, "big", "i=0\nwhile [ $i -lt 2000 ]; do echo \"m$i 1\"; i=$((i+1)); done", p_big,
           sizeof(p_big));
    script(dir, "bad", "echo 'cpu'\necho 'x 1'", p_bad, sizeof(p_bad));
    hook_seen *s = calloc(1, sizeof(*s));
    assert_non_null(s);

    run_hook(p_ok, 10000, s, UPK_OK);
    assert_int_equal(s->status, 0);
    assert_false(s->truncated);
    assert_string_equal(s->out, "cpu 0.5\nmem_mb 12\n");
    upk_health h;
    char why[128];
    memset(&h, 0, sizeof(h));
    assert_int_equal(upk__health_parse(s->out, s->len, &h, why, sizeof(why)), UPK_OK);
    assert_int_equal(h.metric_count, 2);

    run_hook(p_fail, 10000, s, UPK_OK);
    assert_int_equal(s->status, 3);

    run_hook(p_slow, 300, s, UPK_OK);
    assert_int_equal(s->status, -2);
    assert_string_equal(s->out, "cpu 1\n");

    run_hook(p_big, 10000, s, UPK_OK);
    assert_int_equal(s->status, 0);
    assert_true(s->truncated);
    assert_int_equal(s->len, UPK__HOOK_OUT_MAX);

    run_hook(p_bad, 10000, s, UPK_OK);
    memset(&h, 0, sizeof(h));
    assert_int_equal(upk__health_parse(s->out, s->len, &h, why, sizeof(why)), UPK_E_FIELD_TYPE);
    assert_int_equal(h.metric_count, 1); /* the bad line skipped, the good one kept */

    char missing[300];
    (void)snprintf(missing, sizeof(missing), "%s/missing", dir);
    run_hook(missing, 1000, s, UPK_E_NOT_FOUND);
    char *rel[] = {(char *)"relative", NULL};
    assert_int_equal(upk__hook_run(uv_default_loop(), rel, 1000, hook_cb, s), UPK_E_INVALID_ARG);

    free(s);
    const char *names[] = {"ok", "fail", "slow", "big", "bad"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        char p[300];
        (void)snprintf(p, sizeof(p), "%s/%s", dir, names[i]);
        assert_int_equal(unlink(p), 0);
    }
    assert_int_equal(rmdir(dir), 0);
}

/* health_hook and health_interval_s in the agent config, and their errors. */
static void test_hook_config(void **state)
{
    (void)state;
    char dir[] = "/tmp/upk-hookcfg-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char keyp[300];
    (void)snprintf(keyp, sizeof(keyp), "%s/k.pem", dir);
    upk_key *k = NULL;
    char *pem = NULL;
    assert_int_equal(upk_key_generate(&k), UPK_OK);
    assert_int_equal(upk_key_public_pem(k, &pem), UPK_OK);
    assert_int_equal(upk_fs_write_atomic(keyp, pem, strlen(pem)), UPK_OK);
    free(pem);
    upk_key_free(k);
#define CFG_FMT                                                                  \
    "{\"broker\":\"tcp://127.0.0.1:1\",\"device_id\":\"d1\",\"hardware\":\"h\"," \
    "\"data_dir\":\"/tmp/x\",\"keys\":[\"%s\"]%s}"
    char json[1024], eb[256];
    upk_agent_config cfg;
    /* Defaults: no hook, 10 s hook timeout, a report a minute. */
    (void)snprintf(json, sizeof(json), CFG_FMT, keyp, "");
    assert_int_equal(upk_agent_config_parse(json, strlen(json), &cfg, eb, sizeof(eb)), UPK_OK);
    assert_int_equal(cfg.hook_argc, 0);
    assert_int_equal(cfg.hook_timeout_s, 10);
    assert_int_equal(cfg.health_interval_s, 60);
    upk_agent_config_cleanup(&cfg);
    (void)snprintf(json, sizeof(json), CFG_FMT, keyp,
                   ",\"health_hook\":{\"command\":[\"/usr/bin/metrics\",\"--all\"],"
                   "\"timeout_s\":3},\"health_interval_s\":15");
    assert_int_equal(upk_agent_config_parse(json, strlen(json), &cfg, eb, sizeof(eb)), UPK_OK);
    assert_int_equal(cfg.hook_argc, 2);
    assert_string_equal(cfg.hook_argv[0], "/usr/bin/metrics");
    assert_string_equal(cfg.hook_argv[1], "--all");
    assert_null(cfg.hook_argv[2]);
    assert_int_equal(cfg.hook_timeout_s, 3);
    assert_int_equal(cfg.health_interval_s, 15);
    assert_int_equal(cfg.health_argc, 0);
    upk_agent_config_cleanup(&cfg);

    struct {
        const char *extra, *field;
    } bad[] = {
        {",\"health_hook\":[]", "health_hook: must be an object"},
        {",\"health_hook\":{}", "health_hook.command"},
        {",\"health_hook\":{\"command\":[]}", "health_hook.command"},
        {",\"health_hook\":{\"command\":[\"metrics\"]}", "health_hook.command: first word must be"},
        {",\"health_hook\":{\"command\":[\"/m\",3]}", "health_hook.command"},
        {",\"health_hook\":{\"command\":[\"/m\"],\"timeout_s\":0}", "timeout_s"},
        {",\"health_interval_s\":5", "health_interval_s"},
        {",\"health_interval_s\":\"60\"", "health_interval_s"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        (void)snprintf(json, sizeof(json), CFG_FMT, keyp, bad[i].extra);
        eb[0] = '\0';
        assert_int_equal(upk_agent_config_parse(json, strlen(json), &cfg, eb, sizeof(eb)),
                         UPK_E_CONFIG_INVALID);
        if (strstr(eb, bad[i].field) == NULL)
            fail_msg("'%s' gave '%s', not naming %s", bad[i].extra, eb, bad[i].field);
    }
    assert_int_equal(unlink(keyp), 0);
    assert_int_equal(rmdir(dir), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_window_counts), cmocka_unit_test(test_rate),
        cmocka_unit_test(test_save_load),     cmocka_unit_test(test_boot_id),
        cmocka_unit_test(test_hook_parse),    cmocka_unit_test(test_hook_parse_skips_bad_lines),
        cmocka_unit_test(test_gap),           cmocka_unit_test(test_hook_run),
        cmocka_unit_test(test_hook_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
