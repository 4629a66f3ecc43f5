/* Unit tests of the broker plugin's device credential epochs (epochs.c and
 * their use in auth.c): the strict format of device_epochs_file with errors
 * naming the line, the config fields, a table that fails to load leaving the
 * one in use untouched, and login decisions: a password of an epoch below the
 * device's minimum is refused (and counts towards lockout), its current and
 * later epochs are accepted, unlisted devices keep every epoch. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core.h"
#include "upkeep/devkey.h"

/* Written by `mosquitto_passwd -b f op1 'correct horse'` (Mosquitto 2.0.11). */
static const char PW_LINE[] =
    "op1:$7$101$qgeWGLnxyrv2tBcl$rzRUA2NUGY+FxP7/1nHEZd8bLslv3q0gbew5aR+//"
    "X8i4LttN8EWknTguxcNB9MCVcWmtGCij9vevGNtLs+0iA==";
static const char SECRET[] = "0123456789abcdef";

struct tmpdir {
    char path[64];
};

static void write_file(const char *dir, const char *name, const char *text)
{
    char p[256];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

static const char *const FILES[] = {"pw", "secret", "epochs", "bad", "cfg.json"};

static int tmp_setup(void **state)
{
    struct tmpdir *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return -1;
    snprintf(t->path, sizeof(t->path), "/tmp/upk-bp-epochs-XXXXXX");
    if (mkdtemp(t->path) == NULL) {
        free(t);
        return -1;
    }
    char pw[512];
    snprintf(pw, sizeof(pw), "%s\n", PW_LINE);
    write_file(t->path, "pw", pw);
    write_file(t->path, "secret", "0123456789abcdef\n");
    write_file(t->path, "epochs", "# device minimum-epoch\ndev-1 2\n");
    *state = t;
    return 0;
}

static int tmp_teardown(void **state)
{
    struct tmpdir *t = *state;
    for (size_t i = 0; i < sizeof(FILES) / sizeof(FILES[0]); i++) {
        char p[256];
        snprintf(p, sizeof(p), "%s/%s", t->path, FILES[i]);
        (void)unlink(p);
    }
    (void)rmdir(t->path);
    free(t);
    return 0;
}

static upk_err parse_cfg(struct tmpdir *t, const char *json, upk_bp_config *cfg, char *err,
                         size_t cap)
{
    assert_int_equal(upk__bp_config_init(cfg), UPK_OK);
    return upk__bp_config_parse(cfg, json, strlen(json), t->path, err, cap);
}

/* Parses text as an epochs file with op1 as the only password account. */
static upk_err parse_table(const char *text, upk_bp_map *out, char *err, size_t cap)
{
    upk_bp_map accounts;
    assert_int_equal(upk__bp_map_init(&accounts, 4), UPK_OK);
    static int dummy; /* any non-NULL value: the map is looked up, never read */
    assert_int_equal(upk__bp_map_put(&accounts, "op1", &dummy), UPK_OK);
    assert_int_equal(upk__bp_map_init(out, 4), UPK_OK);
    upk_err e = upk__bp_epochs_parse(out, &accounts, text, strlen(text), err, cap);
    upk__bp_map_cleanup(&accounts, NULL);
    return e;
}

static void epochs_file_format(void **state)
{
    (void)state;
    upk_bp_map m;
    upk_bp_config cfg;
    char err[UPK_BP_ERRMSG_MAX];
    const char *text = "# rotated 2026-12-08\n"
                       "\n"
                       "dev-1 2\n"
                       "  pump_0002\t\t7  \r\n"
                       "Dev.3 0\n"
                       "dev-4 999999999"; /* no final newline */
    upk_err e = parse_table(text, &m, err, sizeof(err));
    if (e != UPK_OK)
        fail_msg("%s", err);
    assert_int_equal(m.count, 4);
    /* look them up through a config that holds the table */
    assert_int_equal(upk__bp_config_init(&cfg), UPK_OK);
    upk__bp_map_cleanup(&cfg.device_min_epoch, free);
    cfg.device_min_epoch = m;
    assert_int_equal(upk__bp_epochs_min(&cfg, "dev-1"), 2);
    assert_int_equal(upk__bp_epochs_min(&cfg, "pump_0002"), 7);
    assert_int_equal(upk__bp_epochs_min(&cfg, "Dev.3"), 0);
    assert_int_equal(upk__bp_epochs_min(&cfg, "dev-4"), UPK_DEVKEY_EPOCH_MAX);
    assert_int_equal(upk__bp_epochs_min(&cfg, "dev-5"), 0);
    assert_int_equal(upk__bp_epochs_min(&cfg, "DEV-1"), 0); /* ids are case-sensitive */
    assert_int_equal(upk__bp_epochs_count(&cfg), 4);
    upk__bp_config_cleanup(&cfg);
    /* an empty file is an empty table */
    assert_int_equal(parse_table("", &m, err, sizeof(err)), UPK_OK);
    assert_int_equal(m.count, 0);
    upk__bp_map_cleanup(&m, free);
}

static void epochs_file_errors_name_the_line(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        const char *want;
    } cases[] = {
        {"dev-1\n", "line 1: expected"},
        {"dev-1 1 2\n", "line 1: expected"},
        {"# ok\ndev-1 1\ndev/2 1\n", "line 3: 'dev/2' is not a valid device id"},
        {".dev 1\n", "line 1: '.dev' is not a valid device id"},
        {"dev-1 01\n", "line 1: device 'dev-1': minimum epoch"},
        {"dev-1 -1\n", "line 1: device 'dev-1': minimum epoch"},
        {"dev-1 +1\n", "line 1: device 'dev-1': minimum epoch"},
        {"dev-1 1000000000\n", "line 1: device 'dev-1': minimum epoch"},
        {"dev-1 two\n", "line 1: device 'dev-1': minimum epoch"},
        {"dev-1 1.5\n", "line 1: device 'dev-1': minimum epoch"},
        {"dev-1 1 # comment\n", "line 1: expected"},
        {"dev-1 1\n\ndev-1 3\n", "line 3: device 'dev-1' is listed twice (first on line 1)"},
        {"op1 2\n", "line 1: 'op1' is an account of password_file"},
        {"dev-1,2\n", "line 1: expected"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        upk_bp_map m;
        char err[UPK_BP_ERRMSG_MAX];
        upk_err e = parse_table(cases[i].text, &m, err, sizeof(err));
        if (e != UPK_E_CONFIG_INVALID || strstr(err, cases[i].want) == NULL)
            fail_msg("case %zu: got %s '%s', want '%s'", i, upk_err_str(e), err, cases[i].want);
        upk__bp_map_cleanup(&m, free);
    }
    /* an over-long line and a NUL byte */
    char longline[UPK_BP_EPOCHS_LINE_MAX + 16];
    memset(longline, ' ', sizeof(longline) - 1);
    longline[sizeof(longline) - 1] = '\0';
    memcpy(longline, "ok 1\n", 5);
    upk_bp_map m;
    char err[UPK_BP_ERRMSG_MAX];
    assert_int_equal(parse_table(longline, &m, err, sizeof(err)), UPK_E_CONFIG_INVALID);
    assert_non_null(strstr(err, "line 2: longer than"));
    upk__bp_map_cleanup(&m, free);
    assert_int_equal(upk__bp_map_init(&m, 4), UPK_OK);
    assert_int_equal(upk__bp_epochs_parse(&m, NULL, "dev-1 1\0\n", 9, err, sizeof(err)),
                     UPK_E_CONFIG_INVALID);
    assert_non_null(strstr(err, "NUL"));
    assert_int_equal(m.count, 0);
    upk__bp_map_cleanup(&m, free);
}

static void epochs_config_fields(void **state)
{
    struct tmpdir *t = *state;
    upk_bp_config cfg;
    char err[UPK_BP_ERRMSG_MAX];
    /* relative to the config's directory; default check interval */
    upk_err e = parse_cfg(t, "{\"fleet_secret_file\":\"secret\",\"device_epochs_file\":\"epochs\"}",
                          &cfg, err, sizeof(err));
    if (e != UPK_OK)
        fail_msg("%s", err);
    assert_int_equal(upk__bp_epochs_min(&cfg, "dev-1"), 2);
    assert_int_equal(cfg.epochs_check_s, UPK_BP_EPOCHS_CHECK_S);
    assert_non_null(strstr(cfg.epochs_path, t->path));
    upk__bp_config_cleanup(&cfg);
    e = parse_cfg(t,
                  "{\"fleet_secret_file\":\"secret\",\"device_epochs_file\":\"epochs\","
                  "\"device_epochs_check_seconds\":3}",
                  &cfg, err, sizeof(err));
    assert_int_equal(e, UPK_OK);
    assert_int_equal(cfg.epochs_check_s, 3);
    upk__bp_config_cleanup(&cfg);
    /* without the field there is no table and no path */
    assert_int_equal(parse_cfg(t, "{\"fleet_secret_file\":\"secret\"}", &cfg, err, sizeof(err)),
                     UPK_OK);
    assert_string_equal(cfg.epochs_path, "");
    assert_int_equal(upk__bp_epochs_count(&cfg), 0);
    upk__bp_config_cleanup(&cfg);

    write_file(t->path, "bad", "dev-1 2\ndev-2 x\n");
    static const struct {
        const char *json;
        const char *want;
    } cases[] = {
        {"{\"device_epochs_file\":\"epochs\"}", "'device_epochs_file': needs fleet_secret_file"},
        {"{\"fleet_secret_file\":\"secret\",\"device_epochs_file\":3}", "'device_epochs_file'"},
        {"{\"fleet_secret_file\":\"secret\",\"device_epochs_file\":\"\"}", "'device_epochs_file'"},
        {"{\"fleet_secret_file\":\"secret\",\"device_epochs_file\":\"missing\"}",
         "device_epochs_file '"},
        {"{\"fleet_secret_file\":\"secret\",\"device_epochs_file\":\"bad\"}", "bad': line 2:"},
        {"{\"fleet_secret_file\":\"secret\",\"device_epochs_check_seconds\":5}",
         "'device_epochs_check_seconds': only valid with device_epochs_file"},
        {"{\"fleet_secret_file\":\"secret\",\"device_epochs_file\":\"epochs\","
         "\"device_epochs_check_seconds\":0}",
         "'device_epochs_check_seconds'"},
        {"{\"fleet_secret_file\":\"secret\",\"device_epochs_file\":\"epochs\","
         "\"device_epochs_check_seconds\":1.5}",
         "'device_epochs_check_seconds'"},
        {"{\"fleet_secret_file\":\"secret\",\"device_epochs_file\":\"epochs\","
         "\"device_epochs_check_seconds\":86401}",
         "'device_epochs_check_seconds'"},
        {"{\"fleet_secret_file\":\"secret\",\"device_epoch_file\":\"epochs\"}",
         "'device_epoch_file': unknown field"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        e = parse_cfg(t, cases[i].json, &cfg, err, sizeof(err));
        if (e != UPK_E_CONFIG_INVALID || strstr(err, cases[i].want) == NULL)
            fail_msg("case %zu %s: got %s '%s'", i, cases[i].json, upk_err_str(e), err);
        upk__bp_config_cleanup(&cfg);
    }
}

/* A file that cannot be read or parsed never replaces (nor empties) the
 * table in use; a valid one replaces it, also when it lowers a minimum. */
static void epochs_failed_load_keeps_table(void **state)
{
    struct tmpdir *t = *state;
    upk_bp_config cfg;
    char err[UPK_BP_ERRMSG_MAX], path[256], bad[256];
    assert_int_equal(parse_cfg(t,
                               "{\"fleet_secret_file\":\"secret\",\"device_epochs_file\":"
                               "\"epochs\"}",
                               &cfg, err, sizeof(err)),
                     UPK_OK);
    snprintf(path, sizeof(path), "%s/epochs", t->path);
    snprintf(bad, sizeof(bad), "%s/bad", t->path);
    write_file(t->path, "bad", "dev-1 5\ndev-2 3\ndev-3 0x1\n");
    assert_int_equal(upk__bp_epochs_load(&cfg, bad, err, sizeof(err)), UPK_E_CONFIG_INVALID);
    assert_non_null(strstr(err, "line 3"));
    assert_int_equal(upk__bp_epochs_min(&cfg, "dev-1"), 2);
    assert_int_equal(upk__bp_epochs_min(&cfg, "dev-2"), 0);
    assert_int_equal(upk__bp_epochs_count(&cfg), 1);
    (void)unlink(bad);
    assert_int_equal(upk__bp_epochs_load(&cfg, bad, err, sizeof(err)), UPK_E_CONFIG_INVALID);
    assert_non_null(strstr(err, "cannot read"));
    assert_int_equal(upk__bp_epochs_min(&cfg, "dev-1"), 2);
    assert_int_equal(upk__bp_epochs_load(&cfg, t->path, err, sizeof(err)), UPK_E_CONFIG_INVALID);
    assert_non_null(strstr(err, "not a regular file"));
    assert_int_equal(upk__bp_epochs_min(&cfg, "dev-1"), 2);
    write_file(t->path, "epochs", "dev-1 1\ndev-2 4\n");
    assert_int_equal(upk__bp_epochs_load(&cfg, path, err, sizeof(err)), UPK_OK);
    assert_int_equal(upk__bp_epochs_min(&cfg, "dev-1"), 1);
    assert_int_equal(upk__bp_epochs_min(&cfg, "dev-2"), 4);
    assert_int_equal(upk__bp_epochs_count(&cfg), 2);
    upk__bp_config_cleanup(&cfg);
}

static void devpw(const char *id, uint32_t epoch, char *out)
{
    assert_int_equal(upk_devkey_derive_epoch(SECRET, 16, id, epoch, out, UPK_DEVKEY_MAX + 1),
                     UPK_OK);
}

static upk_err login(upk_bp_config *cfg, upk_bp_lockout *lo, const char *id, uint32_t epoch,
                     double now, const char **why)
{
    char pw[UPK_DEVKEY_MAX + 1];
    upk_bp_identity who;
    devpw(id, epoch, pw);
    memset(&who, 0, sizeof(who));
    upk_err e = upk__bp_auth_check(cfg, lo, id, pw, strlen(pw), id, NULL, now, &who, why);
    if (e == UPK_OK) {
        assert_int_equal(who.role, UPK_BP_ROLE_DEVICE);
        assert_string_equal(who.name, id);
        assert_true(who.derived);
        assert_int_equal(who.epoch, epoch);
    }
    return e;
}

static void auth_refuses_epochs_below_the_minimum(void **state)
{
    struct tmpdir *t = *state;
    upk_bp_config cfg;
    upk_bp_lockout lo;
    const char *why = NULL;
    char err[UPK_BP_ERRMSG_MAX];
    write_file(t->path, "epochs", "dev-1 2\ndev-3 1\n");
    assert_int_equal(parse_cfg(t,
                               "{\"password_file\":\"pw\",\"accounts\":{\"op1\":\"operator\"},"
                               "\"fleet_secret_file\":\"secret\",\"device_epochs_file\":\"epochs\","
                               "\"lockout\":{\"max_failures_per_username\":3,"
                               "\"max_failures_per_address\":0}}",
                               &cfg, err, sizeof(err)),
                     UPK_OK);
    assert_int_equal(upk__bp_lockout_init(&lo, &cfg.lockout), UPK_OK);
    /* dev-1, minimum 2: epochs 0 and 1 are revoked, 2 and later are good */
    assert_int_equal(login(&cfg, &lo, "dev-1", 0, 0, &why), UPK_E_AUTH_FAILED);
    assert_non_null(strstr(why, "revoked epoch"));
    assert_int_equal(login(&cfg, &lo, "dev-1", 1, 0, &why), UPK_E_AUTH_FAILED);
    assert_non_null(strstr(why, "revoked epoch"));
    assert_int_equal(login(&cfg, &lo, "dev-1", 2, 0, &why), UPK_OK);
    assert_int_equal(login(&cfg, &lo, "dev-1", 3, 0, &why), UPK_OK);
    /* the right form with the wrong hex is a wrong password, not a revoked one */
    char pw[UPK_DEVKEY_MAX + 1];
    upk_bp_identity who;
    devpw("dev-2", 2, pw);
    assert_int_equal(
        upk__bp_auth_check(&cfg, &lo, "dev-1", pw, strlen(pw), "dev-1", NULL, 0, &who, &why),
        UPK_E_AUTH_FAILED);
    assert_string_equal(why, "wrong password");
    /* unlisted dev-2 keeps every epoch; dev-3 (minimum 1) loses only epoch 0 */
    for (uint32_t ep = 0; ep < 4; ep++)
        assert_int_equal(login(&cfg, &lo, "dev-2", ep, 0, &why), UPK_OK);
    assert_int_equal(login(&cfg, &lo, "dev-3", 0, 0, &why), UPK_E_AUTH_FAILED);
    assert_int_equal(login(&cfg, &lo, "dev-3", 1, 0, &why), UPK_OK);
    /* the account op1 is unaffected by the table */
    assert_int_equal(
        upk__bp_auth_check(&cfg, &lo, "op1", "correct horse", 13, "c", NULL, 0, &who, &why),
        UPK_OK);
    /* revoked passwords count as failed logins (limit 3): the good logins
     * above cleared dev-1's first two, the wrong one is the first of the
     * count, two revoked ones lock it, and then even epoch 2 is refused */
    for (int i = 0; i < 2; i++)
        assert_int_equal(login(&cfg, &lo, "dev-1", 1, 10, &why), UPK_E_AUTH_FAILED);
    assert_int_equal(login(&cfg, &lo, "dev-1", 2, 11, &why), UPK_E_LOCKED_OUT);
    assert_int_equal(login(&cfg, &lo, "dev-2", 0, 11, &why), UPK_OK);
    upk__bp_lockout_cleanup(&lo);
    upk__bp_config_cleanup(&cfg);
}

/* ---- connected devices when a minimum is raised --------------------------- */

static char conns[8];

static void bind_dev(upk_bp_clients *t, int i, const char *id, upk_bp_role role, bool derived,
                     uint32_t epoch, const upk_bp_config *cfg)
{
    upk_bp_identity who;
    memset(&who, 0, sizeof(who));
    who.role = role;
    snprintf(who.name, sizeof(who.name), "%s", id);
    who.derived = derived;
    who.epoch = epoch;
    assert_int_equal(
        upk__bp_clients_bind(t, &conns[i], id, &who, false, &cfg->limits[role], 0, NULL), UPK_OK);
}

static void note_revoked(struct upk_bp_client *r, void *ctx)
{
    char *seen = ctx;
    strncat(seen, r->id, 64);
    strncat(seen, ";", 2);
}

static void revoke_marks_only_connected_devices_below_minimum(void **state)
{
    struct tmpdir *t = *state;
    upk_bp_config cfg;
    char err[UPK_BP_ERRMSG_MAX], seen[256] = "";
    write_file(t->path, "epochs", "dev-1 2\ndev-3 1\ndev-4 2\n");
    assert_int_equal(parse_cfg(t,
                               "{\"fleet_secret_file\":\"secret\",\"device_epochs_file\":"
                               "\"epochs\"}",
                               &cfg, err, sizeof(err)),
                     UPK_OK);
    upk_bp_clients *tab = calloc(1, sizeof(*tab));
    assert_non_null(tab);
    assert_int_equal(upk__bp_clients_init(tab), UPK_OK);
    bind_dev(tab, 0, "dev-1", UPK_BP_ROLE_DEVICE, true, 1, &cfg);  /* below: revoked */
    bind_dev(tab, 1, "dev-2", UPK_BP_ROLE_DEVICE, true, 0, &cfg);  /* unlisted */
    bind_dev(tab, 2, "dev-3", UPK_BP_ROLE_DEVICE, false, 0, &cfg); /* certificate login */
    bind_dev(tab, 3, "dev-4", UPK_BP_ROLE_DEVICE, true, 3, &cfg);  /* above the minimum */
    bind_dev(tab, 4, "op1", UPK_BP_ROLE_OPERATOR, false, 0, &cfg);
    assert_int_equal(upk__bp_epochs_revoke(tab, &cfg, note_revoked, seen), 1);
    assert_string_equal(seen, "dev-1;");
    upk_bp_client *r = upk__bp_clients_find(tab, &conns[0], "dev-1", "dev-1");
    assert_non_null(r);
    assert_true(r->refused);
    static const char *const kept[] = {"dev-2", "dev-3", "dev-4", "op1"};
    for (int i = 0; i < 4; i++) {
        r = upk__bp_clients_find(tab, &conns[i + 1], kept[i], kept[i]);
        assert_non_null(r);
        assert_false(r->refused);
    }
    /* already refused: not counted again */
    assert_int_equal(upk__bp_epochs_revoke(tab, &cfg, NULL, NULL), 0);
    /* the device's new connection at its current epoch is a fresh record */
    bind_dev(tab, 5, "dev-1", UPK_BP_ROLE_DEVICE, true, 2, &cfg);
    r = upk__bp_clients_find(tab, &conns[5], "dev-1", "dev-1");
    assert_non_null(r);
    assert_false(r->refused);
    assert_int_equal(upk__bp_epochs_revoke(tab, &cfg, NULL, NULL), 0);
    upk__bp_clients_cleanup(tab);
    free(tab);
    upk__bp_config_cleanup(&cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(epochs_file_format),
        cmocka_unit_test(epochs_file_errors_name_the_line),
        cmocka_unit_test_setup_teardown(epochs_config_fields, tmp_setup, tmp_teardown),
        cmocka_unit_test_setup_teardown(epochs_failed_load_keeps_table, tmp_setup, tmp_teardown),
        cmocka_unit_test_setup_teardown(auth_refuses_epochs_below_the_minimum, tmp_setup,
                                        tmp_teardown),
        cmocka_unit_test_setup_teardown(revoke_marks_only_connected_devices_below_minimum,
                                        tmp_setup, tmp_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
