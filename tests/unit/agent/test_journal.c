/* Journal and installed facts: round trips, a missing file, a corrupt or
 * half-written file, and a leftover temp file from a write cut short. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "testutil.h"

static int setup(void **state)
{
    char *dir = calloc(1, 256);
    if (dir == NULL || tu_mkdtemp(dir, 256) == NULL)
        return -1;
    *state = dir;
    return 0;
}

static int teardown(void **state)
{
    tu_rmdir(*state);
    free(*state);
    return 0;
}

static void fill(upk__journal *j)
{
    upk__journal_cleanup(j);
    j->status = UPK_STATUS_ACTIVATING;
    j->rolling_back = true;
    j->error = UPK_E_HEALTH_FAILED;
    (void)snprintf(j->message, sizeof(j->message), "exit 3 \"quoted\"");
    (void)snprintf(j->campaign, sizeof(j->campaign), "camp-1");
    memset(j->desired_id, 'a', UPK_SHA256_HEX_LEN);
    memset(j->key_id, 'b', UPK_KEY_ID_LEN);
    j->manifest = strdup("{\"v\":1,\"name\":\"fw\"}");
    j->manifest_len = strlen(j->manifest);
    for (size_t i = 0; i < 70; i++)
        j->sig[i] = (uint8_t)i;
    j->sig_len = 70;
    (void)snprintf(j->slot, sizeof(j->slot), "b");
    j->restarts = 2;
}

static void journal_round_trips(void **state)
{
    char path[512];
    assert_int_equal(upk__path(path, sizeof(path), *state, "journal.json"), UPK_OK);
    upk__journal j, k;
    memset(&j, 0, sizeof(j));
    memset(&k, 0, sizeof(k));
    fill(&j);
    assert_int_equal(upk__journal_save(path, &j), UPK_OK);
    assert_int_equal(upk__journal_load(path, &k), UPK_OK);
    assert_int_equal(k.status, UPK_STATUS_ACTIVATING);
    assert_true(k.rolling_back);
    assert_int_equal(k.error, UPK_E_HEALTH_FAILED);
    assert_string_equal(k.message, j.message);
    assert_string_equal(k.campaign, "camp-1");
    assert_string_equal(k.desired_id, j.desired_id);
    assert_string_equal(k.key_id, j.key_id);
    assert_string_equal(k.manifest, j.manifest);
    assert_int_equal(k.manifest_len, j.manifest_len);
    assert_int_equal(k.sig_len, 70);
    assert_memory_equal(k.sig, j.sig, 70);
    assert_string_equal(k.slot, "b");
    assert_int_equal(k.restarts, 2);
    upk__journal_cleanup(&j);
    upk__journal_cleanup(&k);
}

static void journal_without_fsync_round_trips(void **state)
{
    char path[512];
    assert_int_equal(upk__path(path, sizeof(path), *state, "journal.json"), UPK_OK);
    upk__journal j, k;
    memset(&j, 0, sizeof(j));
    memset(&k, 0, sizeof(k));
    fill(&j);
    assert_int_equal(upk__journal_save_ex(path, &j, false), UPK_OK);
    assert_int_equal(upk__journal_load(path, &k), UPK_OK);
    assert_string_equal(k.manifest, j.manifest);
    assert_null(tu_read(*state, "journal.json.tmp", NULL));
    upk__installed f, g;
    memset(&f, 0, sizeof(f));
    f.security_version = 3;
    assert_int_equal(upk__path(path, sizeof(path), *state, "installed.json"), UPK_OK);
    assert_int_equal(upk__installed_save_ex(path, &f, false), UPK_OK);
    assert_int_equal(upk__installed_load(path, &g), UPK_OK);
    assert_int_equal(g.security_version, 3);
    /* A directory in the way is an I/O error, not a crash. */
    assert_int_equal(upk__path(path, sizeof(path), *state, "sub"), UPK_OK);
    assert_int_equal(mkdir(path, 0700), 0);
    assert_int_equal(upk__journal_save_ex(path, &j, false), UPK_E_IO);
    assert_int_equal(upk__journal_save(path, &j), UPK_E_IO);
    upk__journal_cleanup(&j);
    upk__journal_cleanup(&k);
}

static void journal_missing_is_idle(void **state)
{
    char path[512];
    assert_int_equal(upk__path(path, sizeof(path), *state, "none.json"), UPK_OK);
    upk__journal j;
    memset(&j, 0, sizeof(j));
    fill(&j);
    assert_int_equal(upk__journal_load(path, &j), UPK_OK);
    assert_int_equal(j.status, UPK_STATUS_IDLE);
    assert_null(j.manifest);
}

static void journal_corrupt_is_reported_and_idle(void **state)
{
    static const char *bad[] = {
        "",                                    /* empty (torn) */
        "{\"v\":1,\"status\":\"downloading\"", /* cut short */
        "{\"v\":2}",                           /* other version */
        "{\"v\":1,\"status\":\"flying\"}",     /* unknown status */
        "[]",
    };
    char path[512];
    assert_int_equal(upk__path(path, sizeof(path), *state, "journal.json"), UPK_OK);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(tu_write(*state, "journal.json", bad[i], strlen(bad[i])), 0);
        upk__journal j;
        memset(&j, 0, sizeof(j));
        assert_int_equal(upk__journal_load(path, &j), UPK_E_STATE_CORRUPT);
        assert_int_equal(j.status, UPK_STATUS_IDLE);
        assert_null(j.manifest);
    }
}

static void journal_in_progress_without_manifest_is_corrupt(void **state)
{
    char path[512];
    assert_int_equal(upk__path(path, sizeof(path), *state, "journal.json"), UPK_OK);
    upk__journal j;
    memset(&j, 0, sizeof(j));
    fill(&j);
    free(j.manifest);
    j.manifest = NULL;
    j.manifest_len = 0;
    assert_int_equal(upk__journal_save(path, &j), UPK_OK);
    assert_int_equal(upk__journal_load(path, &j), UPK_E_STATE_CORRUPT);
}

static void journal_ignores_half_written_temp(void **state)
{
    char path[512], tmp[520];
    assert_int_equal(upk__path(path, sizeof(path), *state, "journal.json"), UPK_OK);
    (void)snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    upk__journal j, k;
    memset(&j, 0, sizeof(j));
    memset(&k, 0, sizeof(k));
    fill(&j);
    j.status = UPK_STATUS_DOWNLOADING;
    assert_int_equal(upk__journal_save(path, &j), UPK_OK);
    /* A crash mid-write of the next state leaves a torn temp file. */
    assert_int_equal(tu_write(*state, "journal.json.tmp", "{\"v\":1,\"sta", 11), 0);
    assert_int_equal(upk__journal_load(path, &k), UPK_OK);
    assert_int_equal(k.status, UPK_STATUS_DOWNLOADING);
    struct stat st;
    assert_int_not_equal(stat(tmp, &st), 0); /* cleaned away */
    upk__journal_cleanup(&j);
    upk__journal_cleanup(&k);
}

static void installed_round_trips_and_detects_corruption(void **state)
{
    char path[512];
    assert_int_equal(upk__path(path, sizeof(path), *state, "installed.json"), UPK_OK);
    upk__installed f, g;
    memset(&f, 0, sizeof(f));
    assert_int_equal(upk__installed_load(path, &g), UPK_OK); /* missing: zeroed */
    assert_int_equal(g.security_version, 0);
    assert_string_equal(g.release, "");
    (void)snprintf(f.release, sizeof(f.release), "fw");
    (void)snprintf(f.version, sizeof(f.version), "1.2.3");
    f.security_version = 42;
    memset(f.image_sha256, 0xab, sizeof(f.image_sha256));
    (void)snprintf(f.campaign, sizeof(f.campaign), "c1");
    f.last_patched = 1700000000;
    f.support_until = 1900000000;
    f.created = 1690000000;
    assert_int_equal(upk__installed_save(path, &f), UPK_OK);
    assert_int_equal(upk__installed_load(path, &g), UPK_OK);
    assert_memory_equal(&f, &g, sizeof(f));
    assert_int_equal(tu_write(*state, "installed.json", "{\"v\":1}", 7), 0);
    upk__installed keep = g;
    assert_int_equal(upk__installed_load(path, &g), UPK_E_STATE_CORRUPT);
    assert_memory_equal(&keep, &g, sizeof(g)); /* untouched on failure */
}

/* Facts written before link keys have no "created": read as unknown (0). */
static void installed_without_created_reads_as_unknown(void **state)
{
    char path[512];
    assert_int_equal(upk__path(path, sizeof(path), *state, "installed.json"), UPK_OK);
    static const char old[] =
        "{\"v\":1,\"release\":\"fw\",\"version\":\"1\",\"security_version\":2,"
        "\"image_sha256\":\"abababababababababababababababababababababababababababababababab\","
        "\"campaign\":\"c\",\"last_patched\":5,\"support_until\":0}";
    assert_int_equal(tu_write(*state, "installed.json", old, strlen(old)), 0);
    upk__installed g;
    assert_int_equal(upk__installed_load(path, &g), UPK_OK);
    assert_int_equal(g.created, 0);
    assert_int_equal(g.security_version, 2);
    static const char bad[] =
        "{\"v\":1,\"release\":\"fw\",\"version\":\"1\",\"security_version\":2,"
        "\"image_sha256\":\"abababababababababababababababababababababababababababababababab\","
        "\"campaign\":\"c\",\"last_patched\":5,\"support_until\":0,\"created\":\"x\"}";
    assert_int_equal(tu_write(*state, "installed.json", bad, strlen(bad)), 0);
    assert_int_equal(upk__installed_load(path, &g), UPK_E_STATE_CORRUPT);
}

/* link.json: the last accepted desired counter survives a restart; missing
 * is zero; corrupt is named and zero. */
static void link_state_round_trips(void **state)
{
    char path[512];
    assert_int_equal(upk__path(path, sizeof(path), *state, "link.json"), UPK_OK);
    upk__link a, b;
    memset(&b, 0x5a, sizeof(b));
    assert_int_equal(upk__link_load(path, &b), UPK_OK);
    assert_int_equal(b.ctr, 0);
    assert_int_equal(b.fresh_until, 0);
    memset(&a, 0, sizeof(a));
    a.ctr = (UINT64_C(1) << 53) - 1;
    memset(a.sha, 0xc3, sizeof(a.sha));
    a.fresh_until = 1900000000;
    assert_int_equal(upk__link_save_ex(path, &a, true), UPK_OK);
    assert_int_equal(upk__link_load(path, &b), UPK_OK);
    assert_memory_equal(&a, &b, sizeof(a));
    a.ctr = 7;
    assert_int_equal(upk__link_save_ex(path, &a, false), UPK_OK);
    assert_int_equal(upk__link_load(path, &b), UPK_OK);
    assert_int_equal(b.ctr, 7);
    assert_int_equal(tu_write(*state, "link.json", "{\"v\":1,\"ctr\":-1}", 16), 0);
    assert_int_equal(upk__link_load(path, &b), UPK_E_STATE_CORRUPT);
    assert_int_equal(b.ctr, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(journal_round_trips, setup, teardown),
        cmocka_unit_test_setup_teardown(journal_without_fsync_round_trips, setup, teardown),
        cmocka_unit_test_setup_teardown(journal_missing_is_idle, setup, teardown),
        cmocka_unit_test_setup_teardown(journal_corrupt_is_reported_and_idle, setup, teardown),
        cmocka_unit_test_setup_teardown(journal_in_progress_without_manifest_is_corrupt, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(journal_ignores_half_written_temp, setup, teardown),
        cmocka_unit_test_setup_teardown(installed_round_trips_and_detects_corruption, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(installed_without_created_reads_as_unknown, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(link_state_round_trips, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
