/* Unit tests behind the TLS integration test: the broker plugin's
 * certificate identities (certificate_identities, password_logins: every
 * config error names its field; CN -> role mapping), and libupkeep_common's
 * TLS file checks and connect diagnosis (tlsdiag.c) on certificates made here
 * with OpenSSL, so that every refusal path has its named error. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sys/socket.h>

#include "core.h"
#include "tlsdiag.h"

/* ---- plugin configuration ------------------------------------------------ */

static char g_dir[256];

static void write_file(const char *name, const char *text)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", g_dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

/* Parses json; returns the error and leaves the message in err. */
static upk_err parse(const char *json, upk_bp_config *cfg, char *err, size_t cap)
{
    assert_int_equal(upk__bp_config_init(cfg), UPK_OK);
    return upk__bp_config_parse(cfg, json, strlen(json), g_dir, err, cap);
}

static void expect_refused(const char *json, const char *needle)
{
    upk_bp_config cfg;
    char err[UPK_BP_ERRMSG_MAX];
    assert_int_equal(parse(json, &cfg, err, sizeof(err)), UPK_E_CONFIG_INVALID);
    if (strstr(err, needle) == NULL)
        fail_msg("error '%s' does not name '%s'", err, needle);
    upk__bp_config_cleanup(&cfg);
}

static void cert_config_errors_name_the_field(void **state)
{
    (void)state;
    expect_refused("{\"certificate_identities\": 1}", "'certificate_identities'");
    expect_refused("{\"certificate_identities\": {\"device\": true}}",
                   "'certificate_identities.device': unknown field");
    expect_refused("{\"certificate_identities\": {\"devices\": 1}}",
                   "'certificate_identities.devices'");
    expect_refused("{\"certificate_identities\": {\"accounts\": []}}",
                   "'certificate_identities.accounts'");
    expect_refused("{\"certificate_identities\": {\"accounts\": {\"ops\": \"root\"}}}",
                   "'certificate_identities.accounts.ops': role");
    expect_refused("{\"certificate_identities\": {\"accounts\": {\"ops\": 3}}}",
                   "'certificate_identities.accounts.ops': role");
    expect_refused("{\"certificate_identities\": {\"accounts\": {\"dev-1\": \"device\"}}}",
                   "'certificate_identities.accounts.dev-1': role");
    expect_refused("{\"certificate_identities\": {\"accounts\": {\"a/b\": \"admin\"}}}",
                   "'certificate_identities.accounts': a CN");
    expect_refused("{\"certificate_identities\": {\"accounts\": {\"\": \"admin\"}}}",
                   "'certificate_identities.accounts': a CN");
    expect_refused("{\"certificate_identities\": {\"accounts\": {\"x\": \"admin\", \"x\": "
                   "\"operator\"}}}",
                   "'certificate_identities.accounts.x': listed twice");
    expect_refused("{\"password_logins\": \"no\"}", "'password_logins'");
    /* A name may not be both a password account and a certificate account. */
    write_file("passwd", "alice:$7$101$AAAAAAAAAAAAAAAA$"
                         "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
                         "AAAAAAAAAAAAAAA==\n");
    expect_refused("{\"password_file\": \"passwd\", \"accounts\": {\"alice\": \"operator\"}, "
                   "\"certificate_identities\": {\"accounts\": {\"alice\": \"admin\"}}}",
                   "'certificate_identities.accounts.alice': also a password account");
}

static void cert_identities_map_cn_to_role(void **state)
{
    (void)state;
    upk_bp_config cfg;
    char err[UPK_BP_ERRMSG_MAX];
    upk_bp_identity who;
    assert_int_equal(parse("{\"password_file\": \"passwd\", \"accounts\": {\"alice\": "
                           "\"operator\"}, \"certificate_identities\": {\"devices\": true, "
                           "\"accounts\": {\"upkeep-controller\": \"controller\", \"carol\": "
                           "\"operator\", \"root-ca\": \"admin\"}}}",
                           &cfg, err, sizeof(err)),
                     UPK_OK);
    assert_true(cfg.password_logins);
    assert_true(upk__bp_cert_identity_of(&cfg, "upkeep-controller", &who));
    assert_int_equal(who.role, UPK_BP_ROLE_CONTROLLER);
    assert_string_equal(who.name, "upkeep-controller");
    assert_true(upk__bp_cert_identity_of(&cfg, "carol", &who));
    assert_int_equal(who.role, UPK_BP_ROLE_OPERATOR);
    assert_true(upk__bp_cert_identity_of(&cfg, "root-ca", &who));
    assert_int_equal(who.role, UPK_BP_ROLE_ADMIN);
    assert_true(upk__bp_cert_identity_of(&cfg, "pump-0001", &who));
    assert_int_equal(who.role, UPK_BP_ROLE_DEVICE);
    assert_string_equal(who.name, "pump-0001");
    /* A device certificate named like a password account is not that account
     * and not a device either. */
    assert_false(upk__bp_cert_identity_of(&cfg, "alice", &who));
    /* Not a device id, unsafe, or too long. */
    assert_false(upk__bp_cert_identity_of(&cfg, "ops@example.com", &who));
    assert_false(upk__bp_cert_identity_of(&cfg, "dev#1", &who));
    assert_false(upk__bp_cert_identity_of(&cfg, "a/b", &who));
    assert_false(upk__bp_cert_identity_of(&cfg, NULL, &who));
    char longname[UPK_BP_USERNAME_MAX + 2];
    memset(longname, 'a', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    assert_false(upk__bp_cert_identity_of(&cfg, longname, &who));
    /* A password login never gets a certificate-only account. */
    upk_bp_lockout lo;
    const char *why = NULL;
    assert_int_equal(upk__bp_lockout_init(&lo, &cfg.lockout), UPK_OK);
    assert_int_equal(upk__bp_auth_check(&cfg, &lo, "carol", "x", 1, "carol", NULL, 1.0, &who, &why),
                     UPK_E_AUTH_FAILED);
    upk__bp_lockout_cleanup(&lo);
    upk__bp_config_cleanup(&cfg);

    /* Without "devices", a device CN has no role. */
    assert_int_equal(parse("{\"certificate_identities\": {\"accounts\": {\"carol\": "
                           "\"operator\"}}}",
                           &cfg, err, sizeof(err)),
                     UPK_OK);
    assert_false(upk__bp_cert_identity_of(&cfg, "pump-0001", &who));
    assert_true(upk__bp_cert_identity_of(&cfg, "carol", &who));
    upk__bp_config_cleanup(&cfg);
}

static void password_logins_false_refuses_even_a_right_password(void **state)
{
    (void)state;
    upk_bp_config cfg;
    char err[UPK_BP_ERRMSG_MAX];
    upk_bp_identity who;
    const char *why = NULL;
    char key[UPK_DEVKEY_LEN + 1];
    write_file("fleet.secret", "0123456789abcdef0123456789abcdef\n");
    for (int on = 0; on <= 1; on++) {
        char json[256];
        snprintf(json, sizeof(json),
                 "{\"fleet_secret_file\": \"fleet.secret\", \"password_logins\": %s}",
                 on ? "true" : "false");
        assert_int_equal(parse(json, &cfg, err, sizeof(err)), UPK_OK);
        assert_int_equal(
            upk_devkey_derive(cfg.fleet_secret, cfg.fleet_secret_len, "dev-1", key, sizeof(key)),
            UPK_OK);
        upk_bp_lockout lo;
        assert_int_equal(upk__bp_lockout_init(&lo, &cfg.lockout), UPK_OK);
        upk_err e = upk__bp_auth_check(&cfg, &lo, "dev-1", key, UPK_DEVKEY_LEN, "dev-1", NULL, 1.0,
                                       &who, &why);
        if (on) {
            assert_int_equal(e, UPK_OK);
        } else {
            assert_int_equal(e, UPK_E_AUTH_FAILED);
            assert_non_null(strstr(why, "password logins are disabled"));
        }
        upk__bp_lockout_cleanup(&lo);
        upk__bp_config_cleanup(&cfg);
    }
}

/* ---- TLS files and diagnosis --------------------------------------------- */

/* Writes a P-256 key (NAME.key) and a certificate (NAME.crt) for cn, signed
 * by the issuer key/cert (self-signed when NULL), valid from now+from_s to
 * now+to_s. Returns the key; the certificate goes to *out_crt. */
static EVP_PKEY *make_cert(const char *name, const char *cn, EVP_PKEY *issuer_key, X509 *issuer,
                           long from_s, long to_s, X509 **out_crt)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    assert_non_null(k);
    assert_non_null(x);
    assert_int_equal(X509_set_version(x, 2), 1);
    assert_int_equal(ASN1_INTEGER_set(X509_get_serialNumber(x), (long)(cn[0] + 1000)), 1);
    assert_non_null(X509_gmtime_adj(X509_getm_notBefore(x), from_s));
    assert_non_null(X509_gmtime_adj(X509_getm_notAfter(x), to_s));
    X509_NAME *n = X509_get_subject_name(x);
    assert_int_equal(
        X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0), 1);
    assert_int_equal(X509_set_issuer_name(x, issuer != NULL ? X509_get_subject_name(issuer) : n),
                     1);
    assert_int_equal(X509_set_pubkey(x, k), 1);
    assert_true(X509_sign(x, issuer_key != NULL ? issuer_key : k, EVP_sha256()) > 0);
    char path[512];
    snprintf(path, sizeof(path), "%s/%s.key", g_dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL), 1);
    assert_int_equal(fclose(f), 0);
    snprintf(path, sizeof(path), "%s/%s.crt", g_dir, name);
    f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(PEM_write_X509(f, x), 1);
    assert_int_equal(fclose(f), 0);
    *out_crt = x;
    return k;
}

static char *p(const char *name)
{
    static char bufs[4][512];
    static int i;
    i = (i + 1) % 4;
    snprintf(bufs[i], sizeof(bufs[i]), "%s/%s", g_dir, name);
    return bufs[i];
}

static void tls_files_are_checked_before_connecting(void **state)
{
    (void)state;
    char why[UPK_TLS_WHY_MAX];
    X509 *ca, *dev, *other;
    EVP_PKEY *cak = make_cert("ca", "test-ca", NULL, NULL, -60, 86400, &ca);
    EVP_PKEY *devk = make_cert("dev", "dev-1", cak, ca, -60, 86400, &dev);
    EVP_PKEY *otherk = make_cert("other", "dev-2", cak, ca, -60, 86400, &other);
    write_file("garbage.pem", "not a certificate\n");

    assert_int_equal(
        upk__tls_check_files(p("ca.crt"), p("dev.crt"), p("dev.key"), why, sizeof(why)), UPK_OK);
    assert_int_equal(upk__tls_check_files(p("ca.crt"), NULL, NULL, why, sizeof(why)), UPK_OK);
    assert_int_equal(upk__tls_check_files(NULL, NULL, NULL, why, sizeof(why)),
                     UPK_E_CONFIG_INVALID);
    assert_non_null(strstr(why, "ca_file is required"));
    assert_int_equal(upk__tls_check_files(p("missing.crt"), NULL, NULL, why, sizeof(why)),
                     UPK_E_CONFIG_INVALID);
    assert_non_null(strstr(why, "missing.crt: no readable certificate"));
    assert_int_equal(upk__tls_check_files(p("garbage.pem"), NULL, NULL, why, sizeof(why)),
                     UPK_E_CONFIG_INVALID);
    assert_non_null(strstr(why, "garbage.pem: no readable certificate"));
    assert_int_equal(upk__tls_check_files(p("ca.crt"), p("dev.crt"), NULL, why, sizeof(why)),
                     UPK_E_CONFIG_INVALID);
    assert_non_null(strstr(why, "go together"));
    assert_int_equal(
        upk__tls_check_files(p("ca.crt"), p("garbage.pem"), p("dev.key"), why, sizeof(why)),
        UPK_E_CONFIG_INVALID);
    assert_non_null(strstr(why, "cert_file"));
    assert_int_equal(
        upk__tls_check_files(p("ca.crt"), p("dev.crt"), p("garbage.pem"), why, sizeof(why)),
        UPK_E_CONFIG_INVALID);
    assert_non_null(strstr(why, "key_file"));
    assert_int_equal(
        upk__tls_check_files(p("ca.crt"), p("dev.crt"), p("other.key"), why, sizeof(why)),
        UPK_E_CONFIG_INVALID);
    assert_non_null(strstr(why, "mismatch") != NULL ? why : strstr(why, "does not match"));

    /* Diagnosis: bad URL, an expired or future own certificate, no broker. */
    X509 *old, *future;
    EVP_PKEY *oldk = make_cert("old", "dev-1", cak, ca, -7200, -3600, &old);
    EVP_PKEY *futk = make_cert("future", "dev-1", cak, ca, 3600, 7200, &future);
    assert_int_equal(upk__tls_diagnose("ssl://", p("ca.crt"), NULL, NULL, 500, why, sizeof(why)),
                     UPK_E_CONFIG_INVALID);
    assert_int_equal(upk__tls_diagnose("nonsense", p("ca.crt"), NULL, NULL, 500, why, sizeof(why)),
                     UPK_E_CONFIG_INVALID);
    assert_int_equal(upk__tls_diagnose("ssl://localhost:1", p("ca.crt"), p("old.crt"), p("old.key"),
                                       500, why, sizeof(why)),
                     UPK_E_TLS_FAILED);
    assert_non_null(strstr(why, "has expired"));
    assert_int_equal(upk__tls_diagnose("ssl://localhost:1", p("ca.crt"), p("future.crt"),
                                       p("future.key"), 500, why, sizeof(why)),
                     UPK_E_TLS_FAILED);
    assert_non_null(strstr(why, "not valid yet"));
    assert_int_equal(
        upk__tls_diagnose("ssl://localhost:1", p("missing.crt"), NULL, NULL, 500, why, sizeof(why)),
        UPK_E_CONFIG_INVALID);

    /* A port with nobody listening: UPK_E_CONN, not a TLS error. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    char url[64];
    snprintf(url, sizeof(url), "ssl://127.0.0.1:%u", (unsigned)ntohs(sa.sin_port));
    assert_int_equal(
        upk__tls_diagnose(url, p("ca.crt"), p("dev.crt"), p("dev.key"), 500, why, sizeof(why)),
        UPK_E_CONN);
    assert_non_null(strstr(why, "no TCP connection"));
    snprintf(url, sizeof(url), "mqtts://[::1]:%u", (unsigned)ntohs(sa.sin_port));
    assert_int_equal(upk__tls_diagnose(url, p("ca.crt"), NULL, NULL, 500, why, sizeof(why)),
                     UPK_E_CONN);
    close(fd);
    assert_true(upk__tls_url("ssl://x:1"));
    assert_true(upk__tls_url("mqtts://x:1"));
    assert_false(upk__tls_url("tcp://x:1"));
    assert_false(upk__tls_url(NULL));

    X509_free(ca);
    X509_free(dev);
    X509_free(other);
    X509_free(old);
    X509_free(future);
    EVP_PKEY_free(cak);
    EVP_PKEY_free(devk);
    EVP_PKEY_free(otherk);
    EVP_PKEY_free(oldk);
    EVP_PKEY_free(futk);
}

static int setup(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof(g_dir), "%s/upk-tls-units-XXXXXX",
             getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp");
    return mkdtemp(g_dir) == NULL ? -1 : 0;
}

static int teardown(void **state)
{
    (void)state;
    static const char *const files[] = {
        "passwd",    "fleet.secret", "garbage.pem", "ca.crt",  "ca.key",     "dev.crt",   "dev.key",
        "other.crt", "other.key",    "old.crt",     "old.key", "future.crt", "future.key"};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
        (void)unlink(p(files[i]));
    return rmdir(g_dir) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(cert_config_errors_name_the_field),
        cmocka_unit_test(cert_identities_map_cn_to_role),
        cmocka_unit_test(password_logins_false_refuses_even_a_right_password),
        cmocka_unit_test(tls_files_are_checked_before_connecting),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
