/* Unit tests of the broker plugin core: token buckets and flood verdicts,
 * device key derivation, $7$ password lines, config errors that name the
 * field, the role table for publish/receive/subscribe, lockout and expiry,
 * and the login decision. No Mosquitto process is involved. */
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
#include "upkeep/hash.h"

/* Written by `mosquitto_passwd -b f op1 'correct horse'` (Mosquitto 2.0.11). */
static const char PW_LINE[] =
    "op1:$7$101$qgeWGLnxyrv2tBcl$rzRUA2NUGY+FxP7/1nHEZd8bLslv3q0gbew5aR+//"
    "X8i4LttN8EWknTguxcNB9MCVcWmtGCij9vevGNtLs+0iA==";
static const char SECRET[] = "0123456789abcdef";

/* ---- token bucket ---------------------------------------------------- */

static void bucket_allows_burst_then_refuses(void **state)
{
    (void)state;
    upk_bp_bucket b;
    upk__bp_bucket_init(&b, 10, 5, 100.0);
    for (int i = 0; i < 5; i++)
        assert_true(upk__bp_bucket_take(&b, 1, 100.0));
    assert_false(upk__bp_bucket_take(&b, 1, 100.0));
}

static void bucket_refills_at_rate_up_to_burst(void **state)
{
    (void)state;
    upk_bp_bucket b;
    upk__bp_bucket_init(&b, 10, 5, 0.0);
    for (int i = 0; i < 5; i++)
        assert_true(upk__bp_bucket_take(&b, 1, 0.0));
    /* 0.25 s at 10/s gives 2.5 tokens: two takes, not three. */
    assert_true(upk__bp_bucket_take(&b, 1, 0.25));
    assert_true(upk__bp_bucket_take(&b, 1, 0.25));
    assert_false(upk__bp_bucket_take(&b, 1, 0.25));
    /* A long pause refills only up to the burst. */
    int taken = 0;
    while (taken < 100 && upk__bp_bucket_take(&b, 1, 1000.0))
        taken++;
    assert_int_equal(taken, 5);
}

static void bucket_unlimited_always_takes(void **state)
{
    (void)state;
    upk_bp_bucket b;
    upk__bp_bucket_init(&b, 0, 0, 0.0);
    for (int i = 0; i < 1000; i++)
        assert_true(upk__bp_bucket_take(&b, 1e6, 0.0));
}

static void bucket_time_going_backwards_adds_nothing(void **state)
{
    (void)state;
    upk_bp_bucket b;
    upk__bp_bucket_init(&b, 10, 1, 50.0);
    assert_true(upk__bp_bucket_take(&b, 1, 50.0));
    assert_false(upk__bp_bucket_take(&b, 1, 10.0));
}

static void rate_drops_too_large_payload(void **state)
{
    (void)state;
    upk_bp_limits l = {100, 100, 0, 0, 1000, 0, 10, 0};
    upk_bp_rate r;
    upk__bp_rate_init(&r, &l, 0);
    assert_int_equal(upk__bp_rate_check(&r, &l, 1000, 0), UPK_BP_RATE_PASS);
    assert_int_equal(upk__bp_rate_check(&r, &l, 1001, 0), UPK_BP_RATE_TOO_LARGE);
}

static void rate_bytes_bucket_limits_volume(void **state)
{
    (void)state;
    upk_bp_limits l = {0, 0, 1000, 2000, 1000, 0, 10, 0};
    upk_bp_rate r;
    upk__bp_rate_init(&r, &l, 0);
    assert_int_equal(upk__bp_rate_check(&r, &l, 1000, 0), UPK_BP_RATE_PASS);
    assert_int_equal(upk__bp_rate_check(&r, &l, 1000, 0), UPK_BP_RATE_PASS);
    assert_int_equal(upk__bp_rate_check(&r, &l, 1, 0), UPK_BP_RATE_DROP);
    assert_int_equal(upk__bp_rate_check(&r, &l, 500, 0.5), UPK_BP_RATE_PASS);
}

static void rate_refused_bytes_do_not_spend_message_tokens(void **state)
{
    (void)state;
    upk_bp_limits l = {1, 1, 10, 10, 10, 0, 10, 0};
    upk_bp_rate r;
    upk__bp_rate_init(&r, &l, 0);
    assert_int_equal(upk__bp_rate_check(&r, &l, 10, 0), UPK_BP_RATE_PASS);
    assert_int_equal(upk__bp_rate_check(&r, &l, 10, 1.0), UPK_BP_RATE_PASS);
    /* bytes empty now; the drop must leave the message token of t=2 intact */
    assert_int_equal(upk__bp_rate_check(&r, &l, 10, 1.5), UPK_BP_RATE_DROP);
    assert_int_equal(upk__bp_rate_check(&r, &l, 10, 2.5), UPK_BP_RATE_PASS);
}

static void rate_kicks_once_after_sustained_drops(void **state)
{
    (void)state;
    upk_bp_limits l = {1, 1, 0, 0, 0, 3, 10, 60};
    upk_bp_rate r;
    upk__bp_rate_init(&r, &l, 0);
    assert_int_equal(upk__bp_rate_check(&r, &l, 1, 0), UPK_BP_RATE_PASS);
    assert_int_equal(upk__bp_rate_check(&r, &l, 1, 0), UPK_BP_RATE_DROP);
    assert_int_equal(upk__bp_rate_check(&r, &l, 1, 0), UPK_BP_RATE_DROP);
    assert_int_equal(upk__bp_rate_check(&r, &l, 1, 0), UPK_BP_RATE_KICK);
    assert_int_equal(upk__bp_rate_check(&r, &l, 1, 0), UPK_BP_RATE_DROP);
}

static void rate_drop_window_resets(void **state)
{
    (void)state;
    upk_bp_limits l = {1, 1, 0, 0, 0, 3, 10, 60};
    upk_bp_rate r;
    upk__bp_rate_init(&r, &l, 0);
    assert_int_equal(upk__bp_rate_check(&r, &l, 1, 0), UPK_BP_RATE_PASS);
    assert_int_equal(upk__bp_rate_check(&r, &l, 1, 0.1), UPK_BP_RATE_DROP);
    assert_int_equal(upk__bp_rate_check(&r, &l, 1, 0.2), UPK_BP_RATE_DROP);
    /* 11 s later the window restarted: the next drops count from zero. */
    assert_int_equal(upk__bp_rate_check(&r, &l, 1, 11.0), UPK_BP_RATE_PASS);
    assert_int_equal(upk__bp_rate_check(&r, &l, 1, 11.1), UPK_BP_RATE_DROP);
    assert_int_equal(upk__bp_rate_check(&r, &l, 1, 11.2), UPK_BP_RATE_DROP);
    assert_int_equal(upk__bp_rate_check(&r, &l, 1, 11.3), UPK_BP_RATE_KICK);
}

/* ---- device keys ------------------------------------------------------ */

static void devkey_is_hmac_of_label_and_id(void **state)
{
    (void)state;
    char key[UPK_DEVKEY_LEN + 1];
    uint8_t mac[UPK_SHA256_LEN];
    char hex[UPK_SHA256_HEX_LEN + 1];
    const char msg[] = "upkeep-device-v1:dev-1";
    assert_int_equal(upk_devkey_derive(SECRET, strlen(SECRET), "dev-1", key, sizeof(key)), UPK_OK);
    assert_int_equal(upk_hmac_sha256(SECRET, strlen(SECRET), msg, strlen(msg), mac), UPK_OK);
    assert_int_equal(upk_hex_encode(mac, sizeof(mac), hex, sizeof(hex)), UPK_OK);
    assert_string_equal(key, hex);
    /* Independent vector (Python hmac/hashlib). */
    assert_string_equal(key, "6ece71de6534563b89e472e272528bb6f40d269087c70dbdeab8e31f914fb2a4");
}

static void devkey_differs_per_device_and_secret(void **state)
{
    (void)state;
    char a[UPK_DEVKEY_LEN + 1], b[UPK_DEVKEY_LEN + 1], c[UPK_DEVKEY_LEN + 1];
    assert_int_equal(upk_devkey_derive(SECRET, strlen(SECRET), "dev-1", a, sizeof(a)), UPK_OK);
    assert_int_equal(upk_devkey_derive(SECRET, strlen(SECRET), "dev-2", b, sizeof(b)), UPK_OK);
    assert_int_equal(upk_devkey_derive("0123456789abcdeX", 16, "dev-1", c, sizeof(c)), UPK_OK);
    assert_string_not_equal(a, b);
    assert_string_not_equal(a, c);
}

static void devkey_rejects_bad_input(void **state)
{
    (void)state;
    char k[UPK_DEVKEY_LEN + 1];
    assert_int_equal(upk_devkey_derive("short", 5, "dev-1", k, sizeof(k)), UPK_E_INVALID_ARG);
    assert_int_equal(upk_devkey_derive(SECRET, 16, "dev/1", k, sizeof(k)), UPK_E_ID_INVALID);
    assert_int_equal(upk_devkey_derive(SECRET, 16, "dev-1", k, 10), UPK_E_BUFFER_TOO_SMALL);
}

/* ---- password file ---------------------------------------------------- */

static void passwd_parses_and_verifies_mosquitto_line(void **state)
{
    (void)state;
    char user[64];
    upk_bp_pwhash h;
    assert_int_equal(upk__bp_passwd_parse_line(PW_LINE, strlen(PW_LINE), user, sizeof(user), &h),
                     UPK_OK);
    assert_string_equal(user, "op1");
    assert_int_equal(h.iterations, 101);
    assert_int_equal(h.salt_len, 12);
    assert_true(upk__bp_passwd_verify(&h, "correct horse", 13));
    assert_false(upk__bp_passwd_verify(&h, "correct horsf", 13));
    assert_false(upk__bp_passwd_verify(&h, "correct hors", 12));
    assert_false(upk__bp_passwd_verify(&h, "", 0));
}

static void passwd_rejects_malformed_lines(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "nocolon",
        ":$7$101$qgeWGLnxyrv2tBcl$AAAA",
        "u:$6$salt$hash",
        "u:$7$$qgeWGLnxyrv2tBcl$AAAA",
        "u:$7$0$qgeWGLnxyrv2tBcl$AAAA",
        "u:$7$99999999999$qgeWGLnxyrv2tBcl$AAAA",
        "u:$7$101$qgeWGLnxyrv2tBcl",
        "u:$7$101$qgeWGLnxyrv2tBcl$AAAA", /* hash of the wrong length */
        ("u:$7$101$!!!$rzRUA2NUGY+FxP7/1nHEZd8bLslv3q0gbew5aR+//"
         "X8i4LttN8EWknTguxcNB9MCVcWmtGCij9vevGNtLs+0iA=="),
    };
    char user[64];
    upk_bp_pwhash h;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        upk_err e = upk__bp_passwd_parse_line(bad[i], strlen(bad[i]), user, sizeof(user), &h);
        if (e == UPK_OK)
            fail_msg("accepted bad line %zu: %s", i, bad[i]);
    }
    assert_int_equal(upk__bp_passwd_parse_line(PW_LINE, strlen(PW_LINE), user, 3, &h),
                     UPK_E_FIELD_TOO_LONG);
}

/* ---- config ----------------------------------------------------------- */

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

static int tmp_setup(void **state)
{
    struct tmpdir *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return -1;
    snprintf(t->path, sizeof(t->path), "/tmp/upk-bp-unit-XXXXXX");
    if (mkdtemp(t->path) == NULL) {
        free(t);
        return -1;
    }
    char pw[512];
    snprintf(pw, sizeof(pw), "%s\n", PW_LINE);
    write_file(t->path, "pw", pw);
    write_file(t->path, "secret", "0123456789abcdef\n");
    write_file(t->path, "short", "tooshort\n");
    *state = t;
    return 0;
}

static int tmp_teardown(void **state)
{
    struct tmpdir *t = *state;
    static const char *const names[] = {"pw", "secret", "short", "cfg.json"};
    for (size_t i = 0; i < 4; i++) {
        char p[256];
        snprintf(p, sizeof(p), "%s/%s", t->path, names[i]);
        (void)unlink(p);
    }
    (void)rmdir(t->path);
    free(t);
    return 0;
}

/* Parses json against the temp dir; returns the error and leaves the
 * message in err. */
static upk_err parse(struct tmpdir *t, const char *json, upk_bp_config *cfg, char *err, size_t cap)
{
    assert_int_equal(upk__bp_config_init(cfg), UPK_OK);
    return upk__bp_config_parse(cfg, json, strlen(json), t->path, err, cap);
}

static void config_full_example_parses(void **state)
{
    struct tmpdir *t = *state;
    upk_bp_config cfg;
    char err[UPK_BP_ERRMSG_MAX];
    const char *json =
        "{\"topic_prefix\":\"acme/up\",\"password_file\":\"pw\",\"accounts\":{\"op1\":"
        "\"operator\"},\"fleet_secret_file\":\"secret\",\"lockout\":{\"max_failures_per_"
        "username\":3,\"max_failures_per_address\":9,\"window_seconds\":30,\"lockout_seconds\":"
        "5,\"max_entries\":100},\"rate_limits\":{\"device\":{\"messages_per_second\":2,"
        "\"burst_messages\":4,\"bytes_per_second\":100,\"burst_bytes\":200,\"max_payload_"
        "bytes\":150,\"kick_after_drops\":7,\"flood_window_seconds\":3,\"hold_off_seconds\":"
        "9}},\"stats_interval_seconds\":2}";
    upk_err e = parse(t, json, &cfg, err, sizeof(err));
    if (e != UPK_OK)
        fail_msg("%s", err);
    assert_string_equal(cfg.prefix, "acme/up");
    assert_int_equal(cfg.accounts.count, 1);
    assert_int_equal(cfg.fleet_secret_len, 16);
    assert_int_equal(cfg.lockout.max_failures_per_username, 3);
    assert_int_equal(cfg.lockout.lockout_s, 5);
    assert_true(cfg.limits[UPK_BP_ROLE_DEVICE].msgs_per_s == 2);
    assert_int_equal(cfg.limits[UPK_BP_ROLE_DEVICE].kick_after_drops, 7);
    assert_int_equal(cfg.stats_interval_s, 2);
    upk__bp_config_cleanup(&cfg);
}

static void config_errors_name_the_field(void **state)
{
    struct tmpdir *t = *state;
    static const struct {
        const char *json;
        const char *field;
    } cases[] = {
        {"[1]", "JSON object"},
        {"{\"bogus\":1}", "'bogus'"},
        {"{\"topic_prefix\":\"a/#\"}", "'topic_prefix'"},
        {"{\"topic_prefix\":5}", "'topic_prefix'"},
        {"{\"password_file\":\"missing\"}", "'password_file'"},
        {"{\"accounts\":{\"op1\":\"operator\"}}", "'password_file'"},
        {"{\"password_file\":\"pw\"}", "'accounts'"},
        {"{\"password_file\":\"pw\",\"accounts\":{\"op1\":\"boss\"}}", "'accounts.op1'"},
        {"{\"password_file\":\"pw\",\"accounts\":{\"op1\":\"operator\",\"x\":\"admin\"}}",
         "'accounts.x'"},
        {"{\"fleet_secret_file\":\"short\"}", "fleet_secret_file"},
        {"{\"fleet_secret_file\":\"nope\"}", "fleet_secret_file"},
        {"{\"lockout\":{\"window_seconds\":-1}}", "'lockout.window_seconds'"},
        {"{\"lockout\":{\"lockout_seconds\":0}}", "'lockout.lockout_seconds'"},
        {"{\"lockout\":{\"typo\":1}}", "'lockout.typo'"},
        {"{\"rate_limits\":{\"robot\":{}}}", "'rate_limits.robot'"},
        {"{\"rate_limits\":{\"device\":{\"messages_per_second\":\"fast\"}}}",
         "'rate_limits.device.messages_per_second'"},
        {"{\"rate_limits\":{\"device\":{\"max_payload_bytes\":1.5}}}",
         "'rate_limits.device.max_payload_bytes'"},
        {"{\"rate_limits\":{\"device\":{\"messages_per_second\":5,\"burst_messages\":0.5}}}",
         "'rate_limits.device.burst_messages'"},
        {"{\"stats_interval_seconds\":true}", "'stats_interval_seconds'"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        upk_bp_config cfg;
        char err[UPK_BP_ERRMSG_MAX];
        upk_err e = parse(t, cases[i].json, &cfg, err, sizeof(err));
        if (e != UPK_E_CONFIG_INVALID || strstr(err, cases[i].field) == NULL)
            fail_msg("case %zu %s: got %s '%s'", i, cases[i].json, upk_err_str(e), err);
        upk__bp_config_cleanup(&cfg);
    }
}

static void config_load_reads_file_relative_paths(void **state)
{
    struct tmpdir *t = *state;
    upk_bp_config cfg;
    char err[UPK_BP_ERRMSG_MAX], path[256];
    write_file(t->path, "cfg.json",
               "{\"password_file\":\"pw\",\"accounts\":{\"op1\":\"admin\"},"
               "\"fleet_secret_file\":\"secret\"}");
    snprintf(path, sizeof(path), "%s/cfg.json", t->path);
    assert_int_equal(upk__bp_config_init(&cfg), UPK_OK);
    upk_err e = upk__bp_config_load(&cfg, path, err, sizeof(err));
    if (e != UPK_OK)
        fail_msg("%s", err);
    upk__bp_config_cleanup(&cfg);
    assert_int_equal(upk__bp_config_init(&cfg), UPK_OK);
    assert_int_equal(upk__bp_config_load(&cfg, "/nonexistent/upk.json", err, sizeof(err)),
                     UPK_E_CONFIG_INVALID);
    assert_non_null(strstr(err, "/nonexistent/upk.json"));
    upk__bp_config_cleanup(&cfg);
}

/* ---- ACL --------------------------------------------------------------- */

static upk_bp_identity id_of(upk_bp_role role, const char *name)
{
    upk_bp_identity w;
    memset(&w, 0, sizeof(w));
    w.role = role;
    snprintf(w.name, sizeof(w.name), "%s", name);
    return w;
}

/* The full role table of DESIGN.md: for each role and each topic kind, which
 * of publish (W) and receive (R) are allowed, for its own id and another. */
static void acl_role_table_for_concrete_topics(void **state)
{
    (void)state;
    upk_bp_config cfg;
    assert_int_equal(upk__bp_config_init(&cfg), UPK_OK);
    static const struct {
        upk_bp_role role;
        const char *topic;
        bool w, r;
    } cells[] = {
        {UPK_BP_ROLE_DEVICE, "upkeep/v1/dev/d1/state", true, false},
        {UPK_BP_ROLE_DEVICE, "upkeep/v1/dev/d1/online", true, false},
        {UPK_BP_ROLE_DEVICE, "upkeep/v1/dev/d1/events", true, false},
        {UPK_BP_ROLE_DEVICE, "upkeep/v1/dev/d1/chunk/req", true, false},
        {UPK_BP_ROLE_DEVICE, "upkeep/v1/dev/d1/desired", false, true},
        {UPK_BP_ROLE_DEVICE, "upkeep/v1/dev/d1/chunk/data", false, true},
        {UPK_BP_ROLE_DEVICE, "upkeep/v1/dev/d1/ack", false, true},
        {UPK_BP_ROLE_DEVICE, "upkeep/v1/dev/d2/ack", false, false},
        {UPK_BP_ROLE_DEVICE, "upkeep/v1/dev/d2/state", false, false},
        {UPK_BP_ROLE_DEVICE, "upkeep/v1/dev/d2/events", false, false},
        {UPK_BP_ROLE_DEVICE, "upkeep/v1/dev/d2/desired", false, false},
        {UPK_BP_ROLE_DEVICE, "upkeep/v1/dev/d2/chunk/data", false, false},
        /* Near misses of a device's own topics (the fast path must refuse
         * them as the parser does): another id that starts with ours, extra
         * or partial levels, a kind that is not a device topic. */
        {UPK_BP_ROLE_DEVICE, "upkeep/v1/dev/d10/state", false, false},
        {UPK_BP_ROLE_DEVICE, "upkeep/v1/dev/d/state", false, false},
        {UPK_BP_ROLE_DEVICE, "upkeep/v1/dev/d1/state/x", false, false},
        {UPK_BP_ROLE_DEVICE, "upkeep/v1/dev/d1/stat", false, false},
        {UPK_BP_ROLE_DEVICE, "upkeep/v1/dev/d1/", false, false},
        {UPK_BP_ROLE_DEVICE, "upkeep/v1/dev/d1", false, false},
        {UPK_BP_ROLE_DEVICE, "upkeep/v1/dev/d1/chunk", false, false},
        {UPK_BP_ROLE_DEVICE, "upkeep/v1/dev/d1/ctl/req", false, false},
        {UPK_BP_ROLE_DEVICE, "upkeep/v1/dev/d1/d1/state", false, false},
        {UPK_BP_ROLE_DEVICE, "upkeep/v1dev/d1/state", false, false},
        {UPK_BP_ROLE_DEVICE, "upkeep/v1/dev//state", false, false},
        {UPK_BP_ROLE_CONTROLLER, "upkeep/v1/dev/d1/state/x", false, false},
        {UPK_BP_ROLE_CONTROLLER, "upkeep/v1/dev/d1/chunk", false, false},
        {UPK_BP_ROLE_CONTROLLER, "upkeep/v1/dev/bad id/events", false, false},
        {UPK_BP_ROLE_DEVICE, "upkeep/v1/ctl/req/d1", false, false},
        {UPK_BP_ROLE_DEVICE, "upkeep/v1/ctl/resp/d1", false, false},
        {UPK_BP_ROLE_DEVICE, "upkeep/v1/broker/stats", false, false},
        {UPK_BP_ROLE_DEVICE, "other/topic", false, false},
        {UPK_BP_ROLE_DEVICE, "$SYS/broker/uptime", false, false},
        {UPK_BP_ROLE_CONTROLLER, "upkeep/v1/dev/d1/state", false, true},
        {UPK_BP_ROLE_CONTROLLER, "upkeep/v1/dev/d1/online", false, true},
        {UPK_BP_ROLE_CONTROLLER, "upkeep/v1/dev/d1/events", false, true},
        {UPK_BP_ROLE_CONTROLLER, "upkeep/v1/dev/d1/chunk/req", false, true},
        {UPK_BP_ROLE_CONTROLLER, "upkeep/v1/dev/d1/desired", true, true},
        {UPK_BP_ROLE_CONTROLLER, "upkeep/v1/dev/d1/chunk/data", true, true},
        {UPK_BP_ROLE_CONTROLLER, "upkeep/v1/dev/d1/ack", true, false},
        {UPK_BP_ROLE_CONTROLLER, "upkeep/v1/ctl/req/op1", false, true},
        {UPK_BP_ROLE_CONTROLLER, "upkeep/v1/ctl/resp/op1", true, false},
        {UPK_BP_ROLE_CONTROLLER, "upkeep/v1/broker/stats", false, false},
        {UPK_BP_ROLE_CONTROLLER, "other/topic", false, false},
        {UPK_BP_ROLE_OPERATOR, "upkeep/v1/ctl/req/op1", true, false},
        {UPK_BP_ROLE_OPERATOR, "upkeep/v1/ctl/req/op2", false, false},
        {UPK_BP_ROLE_OPERATOR, "upkeep/v1/ctl/resp/op1", false, true},
        {UPK_BP_ROLE_OPERATOR, "upkeep/v1/ctl/resp/op2", false, false},
        {UPK_BP_ROLE_OPERATOR, "upkeep/v1/dev/d1/state", false, true},
        {UPK_BP_ROLE_OPERATOR, "upkeep/v1/dev/d1/events", false, true},
        {UPK_BP_ROLE_OPERATOR, "upkeep/v1/dev/d1/desired", false, false},
        {UPK_BP_ROLE_OPERATOR, "upkeep/v1/dev/d1/chunk/data", false, false},
        {UPK_BP_ROLE_OPERATOR, "upkeep/v1/dev/d1/ack", false, false},
        {UPK_BP_ROLE_OPERATOR, "upkeep/v1/broker/stats", false, false},
        {UPK_BP_ROLE_ADMIN, "upkeep/v1/broker/stats", true, true},
        {UPK_BP_ROLE_ADMIN, "anything/at/all", true, true},
    };
    for (size_t i = 0; i < sizeof(cells) / sizeof(cells[0]); i++) {
        const char *self = cells[i].role == UPK_BP_ROLE_OPERATOR ? "op1" : "d1";
        upk_bp_identity w = id_of(cells[i].role, self);
        bool wr = upk__bp_acl_allows(&cfg, &w, UPK_BP_ACCESS_WRITE, cells[i].topic);
        bool rd = upk__bp_acl_allows(&cfg, &w, UPK_BP_ACCESS_READ, cells[i].topic);
        if (wr != cells[i].w || rd != cells[i].r)
            fail_msg("%s on %s: write %d read %d, want %d %d", upk__bp_role_str(cells[i].role),
                     cells[i].topic, wr, rd, cells[i].w, cells[i].r);
    }
    upk__bp_config_cleanup(&cfg);
}

static void acl_subscribe_filters_judged_by_what_they_match(void **state)
{
    (void)state;
    upk_bp_config cfg;
    assert_int_equal(upk__bp_config_init(&cfg), UPK_OK);
    static const struct {
        upk_bp_role role;
        const char *filter;
        bool ok;
    } cases[] = {
        {UPK_BP_ROLE_DEVICE, "#", false},
        {UPK_BP_ROLE_DEVICE, "+/#", false},
        {UPK_BP_ROLE_DEVICE, "upkeep/v1/#", false},
        {UPK_BP_ROLE_DEVICE, "upkeep/v1/dev/+/desired", false},
        {UPK_BP_ROLE_DEVICE, "upkeep/v1/dev/#", false},
        {UPK_BP_ROLE_DEVICE, "upkeep/v1/dev/d2/desired", false},
        {UPK_BP_ROLE_DEVICE, "upkeep/v1/dev/d1/desired", true},
        {UPK_BP_ROLE_DEVICE, "upkeep/v1/dev/d1/#", true},
        {UPK_BP_ROLE_DEVICE, "upkeep/v1/dev/d1/+", true},
        {UPK_BP_ROLE_DEVICE, "upkeep/v1/dev/d1/chunk/+", true},
        {UPK_BP_ROLE_DEVICE, "+/+/dev/d1/desired", true},
        {UPK_BP_ROLE_DEVICE, "upkeep/v1/dev/d1/state", false},
        {UPK_BP_ROLE_DEVICE, "upkeep/v1/dev/d1/desired/#", true},
        {UPK_BP_ROLE_DEVICE, "upkeep/v1/dev/d1/desired/x", false},
        {UPK_BP_ROLE_DEVICE, "$SYS/#", false},
        {UPK_BP_ROLE_CONTROLLER, "upkeep/v1/dev/+/state", true},
        {UPK_BP_ROLE_CONTROLLER, "upkeep/v1/dev/+/+", true},
        {UPK_BP_ROLE_CONTROLLER, "upkeep/v1/ctl/req/+", true},
        {UPK_BP_ROLE_CONTROLLER, "upkeep/v1/#", true},
        {UPK_BP_ROLE_CONTROLLER, "upkeep/v1/ctl/resp/+", false},
        {UPK_BP_ROLE_CONTROLLER, "upkeep/v1/broker/stats", false},
        {UPK_BP_ROLE_CONTROLLER, "other/#", false},
        {UPK_BP_ROLE_OPERATOR, "upkeep/v1/ctl/resp/op1", true},
        {UPK_BP_ROLE_OPERATOR, "upkeep/v1/ctl/resp/+", false},
        {UPK_BP_ROLE_OPERATOR, "upkeep/v1/ctl/resp/op2", false},
        {UPK_BP_ROLE_OPERATOR, "upkeep/v1/dev/+/state", true},
        {UPK_BP_ROLE_OPERATOR, "upkeep/v1/dev/+/desired", false},
        {UPK_BP_ROLE_OPERATOR, "upkeep/v1/ctl/req/op1", false},
        {UPK_BP_ROLE_ADMIN, "#", true},
        {UPK_BP_ROLE_ADMIN, "$SYS/#", true},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *self = cases[i].role == UPK_BP_ROLE_OPERATOR ? "op1" : "d1";
        upk_bp_identity w = id_of(cases[i].role, self);
        bool ok = upk__bp_acl_allows(&cfg, &w, UPK_BP_ACCESS_SUBSCRIBE, cases[i].filter);
        if (ok != cases[i].ok)
            fail_msg("%s subscribe %s: got %d want %d", upk__bp_role_str(cases[i].role),
                     cases[i].filter, ok, cases[i].ok);
    }
    upk__bp_config_cleanup(&cfg);
}

static void acl_follows_configured_prefix(void **state)
{
    struct tmpdir *t = *state;
    upk_bp_config cfg;
    char err[UPK_BP_ERRMSG_MAX];
    assert_int_equal(parse(t, "{\"topic_prefix\":\"acme/fleet/x\"}", &cfg, err, sizeof(err)),
                     UPK_OK);
    upk_bp_identity w = id_of(UPK_BP_ROLE_DEVICE, "d1");
    assert_true(upk__bp_acl_allows(&cfg, &w, UPK_BP_ACCESS_WRITE, "acme/fleet/x/dev/d1/state"));
    assert_false(upk__bp_acl_allows(&cfg, &w, UPK_BP_ACCESS_WRITE, "upkeep/v1/dev/d1/state"));
    assert_true(
        upk__bp_acl_allows(&cfg, &w, UPK_BP_ACCESS_SUBSCRIBE, "acme/fleet/x/dev/d1/desired"));
    assert_false(upk__bp_acl_allows(&cfg, &w, UPK_BP_ACCESS_SUBSCRIBE, "acme/fleet/#"));
    upk__bp_config_cleanup(&cfg);
}

/* ---- lockout ------------------------------------------------------------ */

static void lockout_locks_after_limit_and_expires(void **state)
{
    (void)state;
    upk_bp_lockout_cfg c = {3, 0, 60, 10, 100};
    upk_bp_lockout lo;
    assert_int_equal(upk__bp_lockout_init(&lo, &c), UPK_OK);
    assert_false(upk__bp_lockout_fail(&lo, UPK_BP_LOCK_USERNAME, "bob", 0));
    assert_false(upk__bp_lockout_fail(&lo, UPK_BP_LOCK_USERNAME, "bob", 1));
    assert_false(upk__bp_lockout_is_locked(&lo, UPK_BP_LOCK_USERNAME, "bob", 1));
    assert_true(upk__bp_lockout_fail(&lo, UPK_BP_LOCK_USERNAME, "bob", 2));
    assert_true(upk__bp_lockout_is_locked(&lo, UPK_BP_LOCK_USERNAME, "bob", 3));
    assert_false(upk__bp_lockout_is_locked(&lo, UPK_BP_LOCK_USERNAME, "alice", 3));
    assert_false(upk__bp_lockout_is_locked(&lo, UPK_BP_LOCK_ADDRESS, "bob", 3));
    assert_true(upk__bp_lockout_is_locked(&lo, UPK_BP_LOCK_USERNAME, "bob", 11.9));
    assert_false(upk__bp_lockout_is_locked(&lo, UPK_BP_LOCK_USERNAME, "bob", 12.1));
    /* after expiry the count starts again */
    assert_false(upk__bp_lockout_fail(&lo, UPK_BP_LOCK_USERNAME, "bob", 13));
    /* a disabled kind never locks */
    for (int i = 0; i < 50; i++)
        assert_false(upk__bp_lockout_fail(&lo, UPK_BP_LOCK_ADDRESS, "127.0.0.1", 13));
    upk__bp_lockout_cleanup(&lo);
}

static void lockout_failures_outside_window_are_forgotten(void **state)
{
    (void)state;
    upk_bp_lockout_cfg c = {2, 0, 10, 10, 100};
    upk_bp_lockout lo;
    assert_int_equal(upk__bp_lockout_init(&lo, &c), UPK_OK);
    assert_false(upk__bp_lockout_fail(&lo, UPK_BP_LOCK_USERNAME, "bob", 0));
    assert_false(upk__bp_lockout_fail(&lo, UPK_BP_LOCK_USERNAME, "bob", 20));
    assert_true(upk__bp_lockout_fail(&lo, UPK_BP_LOCK_USERNAME, "bob", 21));
    upk__bp_lockout_cleanup(&lo);
}

static void lockout_table_is_bounded(void **state)
{
    (void)state;
    upk_bp_lockout_cfg c = {5, 5, 60, 60, 8};
    upk_bp_lockout lo;
    assert_int_equal(upk__bp_lockout_init(&lo, &c), UPK_OK);
    for (int i = 0; i < 100; i++) {
        char name[16];
        snprintf(name, sizeof(name), "u%d", i);
        (void)upk__bp_lockout_fail(&lo, UPK_BP_LOCK_USERNAME, name, 0);
    }
    assert_true(upk__bp_lockout_count(&lo) <= 8);
    /* once entries expire, new names are tracked again */
    assert_false(upk__bp_lockout_fail(&lo, UPK_BP_LOCK_USERNAME, "late", 100));
    assert_int_equal(upk__bp_lockout_count(&lo), 1);
    upk__bp_lockout_hold(&lo, UPK_BP_LOCK_HOLDOFF, "flood", 100, 5);
    assert_true(upk__bp_lockout_is_locked(&lo, UPK_BP_LOCK_HOLDOFF, "flood", 104));
    assert_false(upk__bp_lockout_is_locked(&lo, UPK_BP_LOCK_HOLDOFF, "flood", 106));
    upk__bp_lockout_cleanup(&lo);
}

/* ---- login decisions --------------------------------------------------- */

static void auth_decides_accounts_devices_and_refusals(void **state)
{
    struct tmpdir *t = *state;
    upk_bp_config cfg;
    upk_bp_lockout lo;
    upk_bp_identity who;
    const char *why = NULL;
    char err[UPK_BP_ERRMSG_MAX], key[UPK_DEVKEY_LEN + 1];
    assert_int_equal(parse(t,
                           "{\"password_file\":\"pw\",\"accounts\":{\"op1\":\"operator\"},"
                           "\"fleet_secret_file\":\"secret\",\"lockout\":{\"max_failures_per_"
                           "username\":2,\"max_failures_per_address\":0}}",
                           &cfg, err, sizeof(err)),
                     UPK_OK);
    assert_int_equal(upk__bp_lockout_init(&lo, &cfg.lockout), UPK_OK);
    assert_int_equal(upk_devkey_derive(SECRET, 16, "dev-1", key, sizeof(key)), UPK_OK);

    assert_int_equal(
        upk__bp_auth_check(&cfg, &lo, "op1", "correct horse", 13, "any", "a", 0, &who, &why),
        UPK_OK);
    assert_int_equal(who.role, UPK_BP_ROLE_OPERATOR);
    assert_int_equal(upk__bp_auth_check(&cfg, &lo, "dev-1", key, 64, "dev-1", "a", 0, &who, &why),
                     UPK_OK);
    assert_int_equal(who.role, UPK_BP_ROLE_DEVICE);
    assert_string_equal(who.name, "dev-1");
    /* device with a client id that is not its own */
    assert_int_equal(upk__bp_auth_check(&cfg, &lo, "dev-1", key, 64, "dev-2", "a", 0, &who, &why),
                     UPK_E_AUTH_FAILED);
    /* another device's key */
    assert_int_equal(upk__bp_auth_check(&cfg, &lo, "dev-2", key, 64, "dev-2", "a", 0, &who, &why),
                     UPK_E_AUTH_FAILED);
    assert_int_equal(upk__bp_auth_check(&cfg, &lo, NULL, NULL, 0, "anon", "a", 0, &who, &why),
                     UPK_E_AUTH_FAILED);
    assert_int_equal(upk__bp_auth_check(&cfg, &lo, "nobody!", "x", 1, "c", "a", 0, &who, &why),
                     UPK_E_AUTH_FAILED);
    assert_int_equal(
        upk__bp_auth_check(&cfg, &lo, "op1", "correct horse", 13, "c/#", "a", 0, &who, &why),
        UPK_E_AUTH_FAILED);
    assert_int_equal(upk__bp_auth_check(&cfg, &lo, "op#1", "x", 1, "c", "a", 0, &who, &why),
                     UPK_E_AUTH_FAILED);
    /* op1: the bad client id above was its first failure; one wrong
     * password is the second and locks it, and then even the right one fails */
    assert_int_equal(upk__bp_auth_check(&cfg, &lo, "op1", "wrong", 5, "c", "a", 0, &who, &why),
                     UPK_E_AUTH_FAILED);
    assert_int_equal(
        upk__bp_auth_check(&cfg, &lo, "op1", "correct horse", 13, "c", "a", 1, &who, &why),
        UPK_E_LOCKED_OUT);
    assert_int_equal(
        upk__bp_auth_check(&cfg, &lo, "op1", "correct horse", 13, "c", "a", 301, &who, &why),
        UPK_OK);
    upk__bp_lockout_cleanup(&lo);
    upk__bp_config_cleanup(&cfg);
}

static void auth_without_fleet_secret_has_no_devices(void **state)
{
    (void)state;
    upk_bp_config cfg;
    upk_bp_lockout lo;
    upk_bp_identity who;
    char key[UPK_DEVKEY_LEN + 1];
    assert_int_equal(upk__bp_config_init(&cfg), UPK_OK);
    assert_int_equal(upk__bp_lockout_init(&lo, &cfg.lockout), UPK_OK);
    assert_int_equal(upk_devkey_derive(SECRET, 16, "dev-1", key, sizeof(key)), UPK_OK);
    assert_int_equal(upk__bp_auth_check(&cfg, &lo, "dev-1", key, 64, "dev-1", NULL, 0, &who, NULL),
                     UPK_E_AUTH_FAILED);
    assert_false(upk__bp_identity_of(&cfg, "dev-1", &who));
    upk__bp_lockout_cleanup(&lo);
    upk__bp_config_cleanup(&cfg);
}

/* ---- map and stats ------------------------------------------------------ */

static bool drop_odd(const char *key, void *value, void *ctx)
{
    (void)key;
    (void)ctx;
    return ((uintptr_t)value & 1) != 0;
}

/* ---- client table and its cache by connection pointer -------------------- */

/* Stand-ins for the broker's connection pointers: only compared and hashed. */
static char conn_mem[3 * UPK_BP_CLIENT_CACHE_SLOTS * 16];
#define CONN(i) ((const void *)&conn_mem[(size_t)(i)*16])

static upk_bp_clients *clients_new(void)
{
    upk_bp_clients *t = calloc(1, sizeof(*t));
    assert_non_null(t);
    assert_int_equal(upk__bp_clients_init(t), UPK_OK);
    return t;
}

static void clients_free(upk_bp_clients *t)
{
    upk__bp_clients_cleanup(t);
    free(t);
}

/* A connection pointer that the broker frees and hands to the next client
 * must never find the earlier client's record: not after a disconnect, and
 * not when a disconnect was missed (same pointer, other id or username). */
static void clients_reused_pointer_never_finds_earlier_client(void **state)
{
    (void)state;
    upk_bp_clients *t = clients_new();
    upk_bp_limits tight = {1, 1, 0, 0, 0, 0, 10, 0}; /* one message, then drops */
    upk_bp_identity a = id_of(UPK_BP_ROLE_CONTROLLER, "dev-a");
    upk_bp_client *ra = NULL;
    assert_int_equal(upk__bp_clients_bind(t, CONN(1), "dev-a", &a, false, &tight, 0, &ra), UPK_OK);
    assert_non_null(ra);
    assert_string_equal(ra->sender, "controller:dev-a");
    assert_int_equal(ra->sender_len, strlen("controller:dev-a"));
    assert_int_equal(upk__bp_rate_check(&ra->rate, &tight, 1, 0), UPK_BP_RATE_PASS);
    assert_int_equal(upk__bp_rate_check(&ra->rate, &tight, 1, 0), UPK_BP_RATE_DROP);
    uint64_t hits = t->cache_hits;
    assert_ptr_equal(upk__bp_clients_find(t, CONN(1), "dev-a", "dev-a"), ra);
    assert_int_equal(t->cache_hits, hits + 1); /* the cache answered */

    /* Disconnect, then another client on the same pointer. */
    assert_true(upk__bp_clients_drop(t, CONN(1), "dev-a"));
    assert_int_equal(upk__bp_clients_count(t), 0);
    assert_null(upk__bp_clients_find(t, CONN(1), "dev-a", "dev-a"));
    assert_null(upk__bp_clients_find(t, CONN(1), "dev-b", "dev-b"));
    upk_bp_identity b = id_of(UPK_BP_ROLE_DEVICE, "dev-b");
    upk_bp_client *rb = NULL;
    assert_int_equal(upk__bp_clients_bind(t, CONN(1), "dev-b", &b, false, &tight, 0, &rb), UPK_OK);
    assert_ptr_equal(upk__bp_clients_find(t, CONN(1), "dev-b", "dev-b"), rb);
    assert_int_equal(rb->who.role, UPK_BP_ROLE_DEVICE);
    assert_string_equal(rb->who.name, "dev-b");
    assert_string_equal(rb->sender, "device:dev-b");
    /* Fresh limits, not dev-a's spent bucket. */
    assert_int_equal(upk__bp_rate_check(&rb->rate, &tight, 1, 0), UPK_BP_RATE_PASS);

    /* A missed disconnect: dev-b's record is still bound to the pointer when
     * a client with another id, or the same id and another username, uses
     * it. Neither may see dev-b's record. */
    assert_null(upk__bp_clients_find(t, CONN(1), "dev-c", "dev-c"));
    assert_null(upk__bp_clients_find(t, CONN(1), "dev-c", "dev-b"));
    assert_null(upk__bp_clients_find(t, CONN(1), "dev-b", "dev-c"));
    assert_null(upk__bp_clients_find(t, CONN(2), "dev-b", "dev-b"));
    assert_ptr_equal(upk__bp_clients_find(t, CONN(1), "dev-b", "dev-b"), rb);
    /* Binding the new client on that pointer leaves dev-b's record unreachable
     * by it, and dev-b's own lookups (same pointer, its id) still work. */
    upk_bp_identity c = id_of(UPK_BP_ROLE_OPERATOR, "dev-c");
    upk_bp_client *rc = NULL;
    assert_int_equal(upk__bp_clients_bind(t, CONN(1), "dev-c", &c, false, &tight, 0, &rc), UPK_OK);
    assert_true(rc != rb);
    assert_ptr_equal(upk__bp_clients_find(t, CONN(1), "dev-c", "dev-c"), rc);
    assert_ptr_equal(upk__bp_clients_find(t, CONN(1), "dev-b", "dev-b"), rb);
    assert_ptr_equal(upk__bp_clients_find(t, CONN(1), "dev-c", "dev-c"), rc);
    assert_int_equal(upk__bp_clients_count(t), 2);
    clients_free(t);
}

/* A session takeover moves the record to the new connection: the old
 * pointer finds nothing, its disconnect drops nothing, and once the new
 * connection's disconnect frees the record no stale cache slot refers to it
 * (ASan would report the use after free). */
static void clients_session_takeover_moves_record(void **state)
{
    (void)state;
    upk_bp_clients *t = clients_new();
    upk_bp_limits lim = {0};
    upk_bp_identity d = id_of(UPK_BP_ROLE_DEVICE, "d1");
    upk_bp_client *r1 = NULL, *r2 = NULL;
    assert_int_equal(upk__bp_clients_bind(t, CONN(1), "d1", &d, false, &lim, 0, &r1), UPK_OK);
    assert_int_equal(upk__bp_clients_bind(t, CONN(2), "d1", &d, false, &lim, 0, &r2), UPK_OK);
    assert_ptr_equal(r1, r2);
    assert_int_equal(upk__bp_clients_count(t), 1);
    assert_null(upk__bp_clients_find(t, CONN(1), "d1", "d1"));
    assert_ptr_equal(upk__bp_clients_find(t, CONN(2), "d1", "d1"), r2);
    assert_false(upk__bp_clients_drop(t, CONN(1), "d1"));
    assert_int_equal(upk__bp_clients_count(t), 1);
    assert_true(upk__bp_clients_drop(t, CONN(2), "d1"));
    assert_int_equal(upk__bp_clients_count(t), 0);
    assert_null(upk__bp_clients_find(t, CONN(1), "d1", "d1"));
    assert_null(upk__bp_clients_find(t, CONN(2), "d1", "d1"));
    assert_false(upk__bp_clients_drop(t, CONN(2), "d1"));
    clients_free(t);
}

/* More clients than cache slots: pointers collide, and every lookup still
 * returns the client's own record (from the cache or by id); dropped
 * clients are never found. */
static void clients_cache_collisions_fall_back_to_id(void **state)
{
    (void)state;
    upk_bp_clients *t = clients_new();
    upk_bp_limits lim = {0};
    enum { N = 3 * UPK_BP_CLIENT_CACHE_SLOTS };
    upk_bp_client **recs = calloc(N, sizeof(*recs));
    assert_non_null(recs);
    char id[32];
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof(id), "d%d", i);
        upk_bp_identity w = id_of(UPK_BP_ROLE_DEVICE, id);
        assert_int_equal(upk__bp_clients_bind(t, CONN(i), id, &w, false, &lim, 0, &recs[i]),
                         UPK_OK);
    }
    assert_int_equal(upk__bp_clients_count(t), N);
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < N; i++) {
            snprintf(id, sizeof(id), "d%d", i);
            upk_bp_client *r = upk__bp_clients_find(t, CONN(i), id, id);
            if (pass == 1 && i % 2 == 1) {
                assert_null(r);
                continue;
            }
            assert_ptr_equal(r, recs[i]);
            assert_string_equal(r->id, id);
            /* Another client's pointer never yields this record. */
            assert_null(upk__bp_clients_find(t, CONN((i + 1) % N), id, id));
        }
        for (int i = 1; pass == 0 && i < N; i += 2) {
            snprintf(id, sizeof(id), "d%d", i);
            assert_true(upk__bp_clients_drop(t, CONN(i), id));
        }
    }
    assert_int_equal(upk__bp_clients_count(t), N / 2);
    assert_true(t->cache_misses > 0);
    free(recs);
    clients_free(t);
}

/* The memo of the last allowed publish topic answers only for the same
 * topic and the same identity: other topics are judged afresh, refusals are
 * never remembered, and a record bound to another identity forgets it. */
static void clients_write_memo_follows_identity(void **state)
{
    (void)state;
    upk_bp_config cfg;
    assert_int_equal(upk__bp_config_init(&cfg), UPK_OK);
    upk_bp_clients *t = clients_new();
    upk_bp_limits lim = {0};
    upk_bp_identity d1 = id_of(UPK_BP_ROLE_DEVICE, "d1");
    upk_bp_client *r = NULL;
    assert_int_equal(upk__bp_clients_bind(t, CONN(1), "d1", &d1, false, &lim, 0, &r), UPK_OK);
    const char *own = "upkeep/v1/dev/d1/events";
    assert_true(upk__bp_client_may_write(&cfg, r, own));
    assert_int_equal(r->write_memo_hits, 0);
    assert_true(upk__bp_client_may_write(&cfg, r, own));
    assert_int_equal(r->write_memo_hits, 1);
    /* A prefix or extension of the remembered topic is judged afresh. */
    assert_false(upk__bp_client_may_write(&cfg, r, "upkeep/v1/dev/d1/event"));
    assert_false(upk__bp_client_may_write(&cfg, r, "upkeep/v1/dev/d1/events/x"));
    assert_false(upk__bp_client_may_write(&cfg, r, "upkeep/v1/dev/d2/events"));
    assert_false(upk__bp_client_may_write(&cfg, r, "upkeep/v1/dev/d2/events"));
    assert_int_equal(r->write_memo_hits, 1);
    /* Same connection and client id, now an operator (e.g. a certificate
     * login decided again): the device's topic is no longer allowed. */
    upk_bp_identity op = id_of(UPK_BP_ROLE_OPERATOR, "d1");
    assert_int_equal(upk__bp_clients_bind(t, CONN(1), "d1", &op, false, &lim, 0, &r), UPK_OK);
    assert_false(upk__bp_client_may_write(&cfg, r, own));
    assert_true(upk__bp_client_may_write(&cfg, r, "upkeep/v1/ctl/req/d1"));
    assert_int_equal(r->write_memo_hits, 1);
    /* A topic longer than the memo is allowed but not remembered. */
    upk_bp_identity adm = id_of(UPK_BP_ROLE_ADMIN, "root");
    assert_int_equal(upk__bp_clients_bind(t, CONN(2), "root", &adm, false, &lim, 0, &r), UPK_OK);
    char longt[UPK_BP_WRITE_MEMO_MAX + 8];
    memset(longt, 'a', sizeof(longt) - 1);
    longt[sizeof(longt) - 1] = '\0';
    assert_true(upk__bp_client_may_write(&cfg, r, longt));
    assert_true(upk__bp_client_may_write(&cfg, r, longt));
    assert_int_equal(r->write_memo_hits, 0);
    assert_false(upk__bp_client_may_write(NULL, r, own));
    assert_false(upk__bp_client_may_write(&cfg, NULL, own));
    assert_false(upk__bp_client_may_write(&cfg, r, NULL));
    clients_free(t);
    upk__bp_config_cleanup(&cfg);
}

static void clients_reject_bad_arguments(void **state)
{
    (void)state;
    upk_bp_clients *t = clients_new();
    upk_bp_limits lim = {0};
    upk_bp_identity w = id_of(UPK_BP_ROLE_DEVICE, "d1");
    upk_bp_client *r = NULL;
    assert_int_equal(upk__bp_clients_init(NULL), UPK_E_INVALID_ARG);
    assert_int_equal(upk__bp_clients_bind(NULL, CONN(1), "d1", &w, false, &lim, 0, &r),
                     UPK_E_INVALID_ARG);
    assert_int_equal(upk__bp_clients_bind(t, NULL, "d1", &w, false, &lim, 0, &r),
                     UPK_E_INVALID_ARG);
    assert_int_equal(upk__bp_clients_bind(t, CONN(1), NULL, &w, false, &lim, 0, &r),
                     UPK_E_INVALID_ARG);
    assert_int_equal(upk__bp_clients_bind(t, CONN(1), "d1", NULL, false, &lim, 0, &r),
                     UPK_E_INVALID_ARG);
    assert_int_equal(upk__bp_clients_bind(t, CONN(1), "d1", &w, false, NULL, 0, &r),
                     UPK_E_INVALID_ARG);
    assert_null(r);
    assert_int_equal(upk__bp_clients_count(t), 0);
    assert_int_equal(upk__bp_clients_bind(t, CONN(1), "d1", &w, true, &lim, 0, NULL), UPK_OK);
    /* A refused record is found (the plugin then denies). */
    r = upk__bp_clients_find(t, CONN(1), "d1", "d1");
    assert_non_null(r);
    assert_true(r->refused);
    assert_null(upk__bp_clients_find(NULL, CONN(1), "d1", "d1"));
    assert_null(upk__bp_clients_find(t, NULL, "d1", "d1"));
    assert_null(upk__bp_clients_find(t, CONN(1), NULL, "d1"));
    assert_null(upk__bp_clients_find(t, CONN(1), "d1", NULL));
    assert_false(upk__bp_clients_drop(NULL, CONN(1), "d1"));
    assert_false(upk__bp_clients_drop(t, CONN(1), NULL));
    assert_false(upk__bp_clients_drop(t, CONN(1), "nobody"));
    assert_int_equal(upk__bp_clients_count(NULL), 0);
    upk__bp_clients_cleanup(NULL);
    clients_free(t);
}

static void map_grows_and_prunes(void **state)
{
    (void)state;
    upk_bp_map m;
    assert_int_equal(upk__bp_map_init(&m, 1), UPK_OK);
    for (uintptr_t i = 1; i <= 1000; i++) {
        char k[16];
        snprintf(k, sizeof(k), "k%u", (unsigned)i);
        assert_int_equal(upk__bp_map_put(&m, k, (void *)i), UPK_OK);
    }
    assert_int_equal(upk__bp_map_put(&m, "k5", NULL), UPK_E_EXISTS);
    assert_true(m.nbuckets >= 1000);
    assert_ptr_equal(upk__bp_map_get(&m, "k777"), (void *)(uintptr_t)777);
    assert_int_equal(upk__bp_map_prune(&m, drop_odd, NULL, NULL), 500);
    assert_null(upk__bp_map_get(&m, "k777"));
    assert_ptr_equal(upk__bp_map_remove(&m, "k2"), (void *)(uintptr_t)2);
    assert_null(upk__bp_map_remove(&m, "k2"));
    assert_int_equal(m.count, 499);
    upk__bp_map_cleanup(&m, NULL);
}

static void stats_json_lists_every_counter(void **state)
{
    (void)state;
    upk_bp_stats s = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    char buf[512];
    size_t len = 0;
    assert_int_equal(upk__bp_stats_json(&s, buf, sizeof(buf), &len), UPK_OK);
    assert_int_equal(len, strlen(buf));
    assert_non_null(strstr(buf, "\"auth_failed\":2"));
    assert_non_null(strstr(buf, "\"dropped_rate\":5"));
    assert_non_null(strstr(buf, "\"kicked\":7"));
    assert_int_equal(upk__bp_stats_json(&s, buf, 20, &len), UPK_E_BUFFER_TOO_SMALL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(bucket_allows_burst_then_refuses),
        cmocka_unit_test(bucket_refills_at_rate_up_to_burst),
        cmocka_unit_test(bucket_unlimited_always_takes),
        cmocka_unit_test(bucket_time_going_backwards_adds_nothing),
        cmocka_unit_test(rate_drops_too_large_payload),
        cmocka_unit_test(rate_bytes_bucket_limits_volume),
        cmocka_unit_test(rate_refused_bytes_do_not_spend_message_tokens),
        cmocka_unit_test(rate_kicks_once_after_sustained_drops),
        cmocka_unit_test(rate_drop_window_resets),
        cmocka_unit_test(devkey_is_hmac_of_label_and_id),
        cmocka_unit_test(devkey_differs_per_device_and_secret),
        cmocka_unit_test(devkey_rejects_bad_input),
        cmocka_unit_test(passwd_parses_and_verifies_mosquitto_line),
        cmocka_unit_test(passwd_rejects_malformed_lines),
        cmocka_unit_test_setup_teardown(config_full_example_parses, tmp_setup, tmp_teardown),
        cmocka_unit_test_setup_teardown(config_errors_name_the_field, tmp_setup, tmp_teardown),
        cmocka_unit_test_setup_teardown(config_load_reads_file_relative_paths, tmp_setup,
                                        tmp_teardown),
        cmocka_unit_test(acl_role_table_for_concrete_topics),
        cmocka_unit_test(acl_subscribe_filters_judged_by_what_they_match),
        cmocka_unit_test_setup_teardown(acl_follows_configured_prefix, tmp_setup, tmp_teardown),
        cmocka_unit_test(lockout_locks_after_limit_and_expires),
        cmocka_unit_test(lockout_failures_outside_window_are_forgotten),
        cmocka_unit_test(lockout_table_is_bounded),
        cmocka_unit_test_setup_teardown(auth_decides_accounts_devices_and_refusals, tmp_setup,
                                        tmp_teardown),
        cmocka_unit_test(auth_without_fleet_secret_has_no_devices),
        cmocka_unit_test(map_grows_and_prunes),
        cmocka_unit_test(clients_reused_pointer_never_finds_earlier_client),
        cmocka_unit_test(clients_session_takeover_moves_record),
        cmocka_unit_test(clients_cache_collisions_fall_back_to_id),
        cmocka_unit_test(clients_write_memo_follows_identity),
        cmocka_unit_test(clients_reject_bad_arguments),
        cmocka_unit_test(stats_json_lists_every_counter),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
