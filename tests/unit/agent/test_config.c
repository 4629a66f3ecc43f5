/* Agent config parsing: a good file parses with defaults, and every bad
 * field is refused with its name in the message. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testutil.h"
#include "upkeep/key.h"

typedef struct fixture {
    char dir[256];
    char key[512];
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return -1;
    if (tu_mkdtemp(f->dir, sizeof(f->dir)) == NULL) {
        free(f);
        return -1;
    }
    upk_key *k = NULL;
    char *pem = NULL;
    int rc = -1;
    if (upk_key_generate(&k) == UPK_OK && upk_key_public_pem(k, &pem) == UPK_OK)
        rc = tu_write(f->dir, "pub.pem", pem, strlen(pem));
    upk_key_free(k);
    free(pem);
    if (rc != 0 || tu_write(f->dir, "bad.pem", "nope", 4) != 0 ||
        tu_write(f->dir, "pw", "secret\n", 7) != 0) {
        tu_rmdir(f->dir);
        free(f);
        return -1;
    }
    (void)snprintf(f->key, sizeof(f->key), "%s/pub.pem", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    tu_rmdir(f->dir);
    free(f);
    return 0;
}

/* Builds a config with extra (a JSON fragment of more fields, may be ""); a
 * base field that extra names is left out so that extra replaces it. */
static upk_err parse(fixture *f, const char *extra, upk_agent_config *cfg, char *eb, size_t ecap)
{
    char json[4096], field[1200];
    const char *names[] = {"broker", "device_id", "hardware", "data_dir", "keys"};
    char vals[5][600];
    (void)snprintf(vals[0], sizeof(vals[0]), "\"tcp://127.0.0.1:1883\"");
    (void)snprintf(vals[1], sizeof(vals[1]), "\"dev-1\"");
    (void)snprintf(vals[2], sizeof(vals[2]), "\"hw-a\"");
    (void)snprintf(vals[3], sizeof(vals[3]), "\"%s/data\"", f->dir);
    (void)snprintf(vals[4], sizeof(vals[4]), "[\"%s\"]", f->key);
    size_t n = 0;
    json[n++] = '{';
    for (size_t i = 0; i < 5; i++) {
        char key[64];
        (void)snprintf(key, sizeof(key), "\"%s\":", names[i]);
        if (strstr(extra, key) != NULL)
            continue;
        int w = snprintf(field, sizeof(field), "%s%s%s", n > 1 ? "," : "", key, vals[i]);
        assert_true(w > 0 && n + (size_t)w < sizeof(json));
        memcpy(json + n, field, (size_t)w);
        n += (size_t)w;
    }
    int w = snprintf(json + n, sizeof(json) - n, "%s%s}", extra[0] != '\0' ? "," : "", extra);
    assert_true(w > 0 && n + (size_t)w < sizeof(json));
    return upk_agent_config_parse(json, strlen(json), cfg, eb, ecap);
}

static void config_minimal_gets_defaults(void **state)
{
    fixture *f = *state;
    upk_agent_config cfg;
    char eb[256];
    assert_int_equal(parse(f, "", &cfg, eb, sizeof(eb)), UPK_OK);
    assert_string_equal(cfg.device_id, "dev-1");
    assert_string_equal(cfg.username, "dev-1");
    assert_null(cfg.password);
    assert_string_equal(cfg.module, "file");
    assert_string_equal(cfg.module_settings, "{}");
    assert_string_equal(cfg.topic_prefix, "upkeep/v1");
    assert_int_equal(cfg.limits.chunk_size, 65536);
    assert_int_equal(cfg.limits.chunks_in_flight, 8);
    assert_int_equal(cfg.limits.outbox_max, 1000);
    assert_int_equal(cfg.health_argc, 0);
    assert_true(cfg.fsync);
    assert_int_equal(upk_keyring_count(cfg.keyring), 1);
    upk_agent_config_cleanup(&cfg);
    upk_agent_config_cleanup(&cfg); /* safe twice */
}

static void config_full_parses_every_field(void **state)
{
    fixture *f = *state;
    upk_agent_config cfg;
    char eb[256], extra[1024];
    (void)snprintf(extra, sizeof(extra),
                   "\"username\":\"u1\",\"password_file\":\"%s/pw\",\"module\":\"ab-dir\","
                   "\"module_settings\":{\"root\":\"/x\"},\"modules_dir\":\"/m\","
                   "\"health_check\":{\"command\":[\"/bin/true\",\"-x\"],\"timeout_s\":5},"
                   "\"support_until\":\"2030-12-31\",\"topic_prefix\":\"acme/u\","
                   "\"limits\":{\"chunk_size\":4096,\"chunks_in_flight\":4,"
                   "\"max_artifact_size\":1000000,\"outbox_max\":10,\"chunk_timeout_ms\":100,"
                   "\"step_timeout_s\":9,\"max_restarts\":1},"
                   "\"tls\":{\"ca_file\":\"/ca.pem\"},\"reconnect_min_ms\":100,"
                   "\"reconnect_max_ms\":2000,\"fsync\":false",
                   f->dir);
    assert_int_equal(parse(f, extra, &cfg, eb, sizeof(eb)), UPK_OK);
    assert_string_equal(cfg.username, "u1");
    assert_string_equal(cfg.password, "secret");
    assert_string_equal(cfg.module, "ab-dir");
    assert_non_null(strstr(cfg.module_settings, "\"root\""));
    assert_int_equal(cfg.health_argc, 2);
    assert_string_equal(cfg.health_argv[1], "-x");
    assert_null(cfg.health_argv[2]);
    assert_int_equal(cfg.health_timeout_s, 5);
    assert_int_equal(cfg.support_until, 1924905600); /* 2030-12-31T00:00:00Z */
    assert_int_equal(cfg.limits.chunk_size, 4096);
    assert_int_equal(cfg.limits.max_restarts, 1);
    assert_string_equal(cfg.tls_ca_file, "/ca.pem");
    assert_false(cfg.fsync);
    upk_agent_config_cleanup(&cfg);
}

/* Each case: a fragment that breaks one field, and the field name expected. */
static void config_rejects_each_bad_field(void **state)
{
    fixture *f = *state;
    static const struct {
        const char *extra;
        const char *field;
    } cases[] = {
        {"\"device_id\":\"-bad\"", "device_id"},
        {"\"device_id\":7", "device_id"},
        {"\"hardware\":\"a b\"", "hardware"},
        {"\"broker\":\"http://x\"", "broker"},
        {"\"data_dir\":\"relative\"", "data_dir"},
        {"\"keys\":[]", "keys"},
        {"\"keys\":\"x\"", "keys"},
        {"\"keys\":[\"/nonexistent/key.pem\"]", "keys"},
        {"\"module\":\"a/b\"", "module"},
        {"\"module_settings\":[1]", "module_settings"},
        {"\"health_check\":{\"command\":[]}", "health_check.command"},
        {"\"health_check\":{\"command\":[\"rel\"]}", "health_check.command"},
        {"\"health_check\":{\"command\":[\"/bin/true\"],\"timeout_s\":0}", "timeout_s"},
        {"\"support_until\":\"next year\"", "support_until"},
        {"\"topic_prefix\":\"a/#\"", "topic_prefix"},
        {"\"limits\":{\"chunk_size\":1}", "chunk_size"},
        {"\"limits\":{\"chunk_size\":999999999}", "chunk_size"},
        {"\"limits\":{\"chunks_in_flight\":0}", "chunks_in_flight"},
        {"\"limits\":{\"outbox_max\":1.5}", "outbox_max"},
        {"\"limits\":5", "limits"},
        {"\"tls\":{\"cert_file\":\"/c\"}", "tls.cert_file"},
        {"\"reconnect_min_ms\":5000,\"reconnect_max_ms\":100", "reconnect_min_ms"},
        {"\"fsync\":1", "fsync"},
        {"\"password\":\"a\",\"password_file\":\"/x\"", "password_file"},
        {"\"password_file\":\"/nonexistent/pw\"", "password_file"},
        {"\"username\":\"\"", "username"},
        {"\"factory_release\":{\"version\":\"1\",\"security_version\":1}", "factory_release.name"},
        {"\"factory_release\":{\"name\":\"fw\",\"version\":\"1 0\",\"security_version\":1}",
         "factory_release.version"},
        {"\"factory_release\":{\"name\":\"fw\",\"version\":\"1\"}",
         "factory_release.security_version"},
        {"\"factory_release\":{\"name\":\"fw\",\"version\":\"1\",\"security_version\":1,"
         "\"image_sha256\":\"abc\"}",
         "factory_release.image_sha256"},
        {"\"factory_release\":{\"name\":\"fw\",\"version\":\"1\",\"security_version\":1,"
         "\"sha\":\"abc\"}",
         "factory_release.sha: unknown field"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        upk_agent_config cfg;
        char eb[256];
        upk_err err = parse(f, cases[i].extra, &cfg, eb, sizeof(eb));
        if (err != UPK_E_CONFIG_INVALID || strstr(eb, cases[i].field) == NULL)
            fail_msg("case %zu (%s): err %s, message '%s'", i, cases[i].extra, upk_err_str(err),
                     eb);
    }
}

static void config_rejects_missing_required(void **state)
{
    (void)state;
    static const char *cases[][2] = {
        {"{\"device_id\":\"d\",\"hardware\":\"h\",\"keys\":[\"/k\"]}", "broker"},
        {"{\"broker\":\"tcp://h:1\",\"hardware\":\"h\",\"keys\":[\"/k\"]}", "device_id"},
        {"{\"broker\":\"tcp://h:1\",\"device_id\":\"d\",\"keys\":[\"/k\"]}", "hardware"},
        {"{\"broker\":\"tcp://h:1\",\"device_id\":\"d\",\"hardware\":\"h\"}", "keys"},
        {"[1,2]", "top level"},
        {"{not json", "JSON"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        upk_agent_config cfg;
        char eb[256];
        upk_err err =
            upk_agent_config_parse(cases[i][0], strlen(cases[i][0]), &cfg, eb, sizeof(eb));
        if (err != UPK_E_CONFIG_INVALID || strstr(eb, cases[i][1]) == NULL)
            fail_msg("case %zu: err %s, message '%s'", i, upk_err_str(err), eb);
    }
}

static void config_rejects_non_key_file(void **state)
{
    fixture *f = *state;
    upk_agent_config cfg;
    char eb[256], extra[600];
    (void)snprintf(extra, sizeof(extra), "\"keys\":[\"%s/bad.pem\"]", f->dir);
    assert_int_equal(parse(f, extra, &cfg, eb, sizeof(eb)), UPK_E_CONFIG_INVALID);
    assert_non_null(strstr(eb, "keys"));
    assert_non_null(strstr(eb, "bad.pem"));
}

/* link_key_file: 64 hex characters and an optional newline; absent means
 * legacy mode; anything else names the field and the file. */
static void config_link_key_file(void **state)
{
    fixture *f = *state;
    upk_agent_config cfg;
    char eb[256], extra[600];
    static const char hex[] = "78f6e06f6b8a8e167a99b5eb34dd37e7f2e4bd00642de7f047cf131174fd2f50";
    assert_int_equal(parse(f, "", &cfg, eb, sizeof(eb)), UPK_OK);
    assert_false(cfg.has_link_key);
    upk_agent_config_cleanup(&cfg);

    char line[80];
    int n = snprintf(line, sizeof(line), "%s\n", hex);
    assert_int_equal(tu_write(f->dir, "link.key", line, (size_t)n), 0);
    (void)snprintf(extra, sizeof(extra), "\"link_key_file\":\"%s/link.key\"", f->dir);
    assert_int_equal(parse(f, extra, &cfg, eb, sizeof(eb)), UPK_OK);
    assert_true(cfg.has_link_key);
    upk_link_key want;
    assert_int_equal(upk_link_key_from_hex(hex, strlen(hex), &want), UPK_OK);
    assert_memory_equal(cfg.link_key.k, want.k, sizeof(want.k));
    upk_agent_config_cleanup(&cfg);
    assert_false(cfg.has_link_key);
    uint8_t zero[UPK_LINK_KEY_LEN] = {0};
    assert_memory_equal(cfg.link_key.k, zero, sizeof(zero)); /* wiped */

    const char *bad[] = {"short\n",
                         "78f6e06f6b8a8e167a99b5eb34dd37e7f2e4bd00642de7f047cf131174fd2f5z",
                         "x78f6e06f6b8a8e167a99b5eb34dd37e7f2e4bd00642de7f047cf131174fd2f50"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(tu_write(f->dir, "bad.key", bad[i], strlen(bad[i])), 0);
        (void)snprintf(extra, sizeof(extra), "\"link_key_file\":\"%s/bad.key\"", f->dir);
        assert_int_equal(parse(f, extra, &cfg, eb, sizeof(eb)), UPK_E_CONFIG_INVALID);
        assert_non_null(strstr(eb, "link_key_file"));
        assert_non_null(strstr(eb, "bad.key"));
    }
    (void)snprintf(extra, sizeof(extra), "\"link_key_file\":\"%s/none.key\"", f->dir);
    assert_int_equal(parse(f, extra, &cfg, eb, sizeof(eb)), UPK_E_CONFIG_INVALID);
    assert_non_null(strstr(eb, "none.key"));
    assert_int_equal(parse(f, "\"link_key_file\":7", &cfg, eb, sizeof(eb)), UPK_E_CONFIG_INVALID);
    assert_non_null(strstr(eb, "link_key_file"));
}

static void config_load_missing_file_names_path(void **state)
{
    (void)state;
    upk_agent_config cfg;
    char eb[256];
    assert_int_equal(upk_agent_config_load("/nonexistent/agent.json", &cfg, eb, sizeof(eb)),
                     UPK_E_CONFIG_INVALID);
    assert_non_null(strstr(eb, "/nonexistent/agent.json"));
}

/* Issue 16 item 10: as strict as the broker plugin, in every object. */
static void config_is_as_strict_as_the_plugin(void **state)
{
    fixture *f = *state;
    static const struct {
        const char *extra;
        const char *msg;
    } cases[] = {
        {"\"password_fle\":\"/etc/upkeep/agent.password\"",
         "password_fle: unknown field (did you mean 'password_file'?)"},
        {"\"limits\":{\"chunk_sise\":4096}",
         "limits.chunk_sise: unknown field (did you mean 'chunk_size'?)"},
        {"\"tls\":{\"ca\":\"/c\"}", "tls.ca: unknown field"},
        {"\"health_check\":{\"command\":[\"/bin/true\"],\"timeout\":5}",
         "health_check.timeout: unknown field (did you mean 'timeout_s'?)"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        upk_agent_config cfg;
        char eb[256];
        upk_err err = parse(f, cases[i].extra, &cfg, eb, sizeof(eb));
        if (err != UPK_E_CONFIG_INVALID || strcmp(eb, cases[i].msg) != 0)
            fail_msg("case %zu (%s): err %s, message '%s'", i, cases[i].extra, upk_err_str(err),
                     eb);
    }
    /* The factory release, with and without the image hash. */
    {
        upk_agent_config fc;
        char feb[256];
        assert_int_equal(
            parse(f,
                  "\"factory_release\":{\"name\":\"fw\",\"version\":\"1.0.0\","
                  "\"security_version\":3,\"image_sha256\":\""
                  "abababababababababababababababababababababababababababababababab\"}",
                  &fc, feb, sizeof(feb)),
            UPK_OK);
        assert_true(fc.has_factory);
        assert_string_equal(fc.factory_name, "fw");
        assert_string_equal(fc.factory_version, "1.0.0");
        assert_int_equal(fc.factory_security_version, 3);
        assert_int_equal(fc.factory_image_sha256[31], 0xab);
        upk_agent_config_cleanup(&fc);
        assert_int_equal(parse(f, "", &fc, feb, sizeof(feb)), UPK_OK);
        assert_false(fc.has_factory);
        upk_agent_config_cleanup(&fc);
    }
    /* module_settings belongs to the module: free-form. */
    upk_agent_config cfg;
    char eb[256];
    assert_int_equal(parse(f, "\"module_settings\":{\"anything\":1}", &cfg, eb, sizeof(eb)),
                     UPK_OK);
    upk_agent_config_cleanup(&cfg);

    const char *bad = "{\n\t\"broker\": \"tcp://h:1\"\n\t\"device_id\": \"d\"\n}";
    assert_int_equal(upk_agent_config_parse(bad, strlen(bad), &cfg, eb, sizeof(eb)),
                     UPK_E_CONFIG_INVALID);
    if (strstr(eb, "line 3, column 2: JSON syntax error") == NULL)
        fail_msg("message '%s'", eb);

    upk_key *k = NULL;
    char *pem = NULL, extra[600];
    assert_int_equal(upk_key_generate(&k), UPK_OK);
    assert_int_equal(upk_key_private_pem(k, &pem), UPK_OK);
    assert_int_equal(tu_write(f->dir, "release.key", pem, strlen(pem)), 0);
    (void)snprintf(extra, sizeof(extra), "\"keys\":[\"%s/release.key\"]", f->dir);
    assert_int_equal(parse(f, extra, &cfg, eb, sizeof(eb)), UPK_E_CONFIG_INVALID);
    assert_non_null(strstr(eb, "keys: "));
    assert_non_null(strstr(eb, "release.key is a private key"));
    free(pem);
    upk_key_free(k);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(config_minimal_gets_defaults),
        cmocka_unit_test(config_full_parses_every_field),
        cmocka_unit_test(config_rejects_each_bad_field),
        cmocka_unit_test(config_rejects_missing_required),
        cmocka_unit_test(config_rejects_non_key_file),
        cmocka_unit_test(config_link_key_file),
        cmocka_unit_test(config_load_missing_file_names_path),
        cmocka_unit_test(config_is_as_strict_as_the_plugin),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
