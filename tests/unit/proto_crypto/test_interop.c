/* openssl interoperability of release keys and manifest signatures, both ways,
 * run at test time with the openssl binary found by CMake (OPENSSL_BIN):
 * upkeep keys and signatures verify with `openssl dgst -sha256 -verify`, and
 * keys made and signatures made by openssl load and verify in upkeep. Each
 * test works in a fresh temp dir that it removes again. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "upkeep/manifest.h"

#include "crypto_test_util.h"

#ifndef OPENSSL_BIN
#error "OPENSSL_BIN must be defined by the build"
#endif

#define PATH_CAP 512
#define ARGV_MAX 16

typedef struct interop {
    char dir[PATH_CAP];
    char *manifest; /* compact manifest JSON made by upkeep */
    size_t manifest_len;
} interop;

static void path_in(const interop *t, const char *name, char out[PATH_CAP])
{
    int n = snprintf(out, PATH_CAP, "%s/%s", t->dir, name);
    assert_true(n > 0 && n < PATH_CAP);
}

static void write_in(const interop *t, const char *name, const void *data, size_t len)
{
    char path[PATH_CAP];
    path_in(t, name, path);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static char *read_in(const interop *t, const char *name, size_t *len)
{
    char path[PATH_CAP];
    path_in(t, name, path);
    char *data = ct_read_path(path, len);
    assert_non_null(data);
    return data;
}

/* Runs OPENSSL_BIN with args (NULL-terminated; each "@name" becomes the path
 * of name in the temp dir), output to the temp dir's openssl.log. Returns the
 * exit status, or -1 when it did not exit normally. */
static int run_openssl(const interop *t, const char *const *args)
{
    char paths[ARGV_MAX][PATH_CAP];
    char *argv[ARGV_MAX + 2];
    size_t n = 0;
    argv[0] = (char *)OPENSSL_BIN;
    for (; args[n] != NULL; n++) {
        assert_true(n < ARGV_MAX);
        if (args[n][0] == '@') {
            path_in(t, args[n] + 1, paths[n]);
            argv[n + 1] = paths[n];
        } else {
            argv[n + 1] = (char *)args[n];
        }
    }
    argv[n + 1] = NULL;

    char log[PATH_CAP];
    path_in(t, "openssl.log", log);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd >= 0) {
            (void)dup2(fd, STDOUT_FILENO);
            (void)dup2(fd, STDERR_FILENO);
            close(fd);
        }
        execv(OPENSSL_BIN, argv);
        _exit(127);
    }
    int status = 0;
    pid_t got;
    do {
        got = waitpid(pid, &status, 0);
    } while (got < 0 && errno == EINTR);
    assert_int_equal(got, pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int interop_setup(void **state)
{
    interop *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return -1;
    const char *base = getenv("TMPDIR");
    if (base == NULL || base[0] == '\0')
        base = "/tmp";
    int n = snprintf(t->dir, sizeof(t->dir), "%s/upk-interop-XXXXXX", base);
    if (n < 0 || (size_t)n >= sizeof(t->dir) || mkdtemp(t->dir) == NULL) {
        free(t);
        return -1;
    }
    upk_manifest m;
    memset(&m, 0, sizeof(m));
    memcpy(m.name, "interop", sizeof("interop"));
    memcpy(m.version, "0.9.1", sizeof("0.9.1"));
    m.security_version = 3;
    m.hw_count = 1;
    memcpy(m.hw[0], "board-x", sizeof("board-x"));
    m.type = UPK_RELEASE_FULL;
    memcpy(m.module, "file", sizeof("file"));
    m.size = m.target_size = 777;
    memset(m.sha256, 0x42, sizeof(m.sha256));
    memset(m.target_sha256, 0x42, sizeof(m.target_sha256));
    m.created = 1793534400;
    m.expires = 1825070400;
    *state = t;
    if (upk_manifest_encode(&m, &t->manifest, &t->manifest_len) != UPK_OK)
        return -1;
    return 0;
}

static int interop_teardown(void **state)
{
    interop *t = *state;
    if (t == NULL)
        return 0;
    int rc = nftw(t->dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    free(t->manifest);
    free(t);
    return rc == 0 ? 0 : -1;
}

/* Writes the manifest and a copy with one byte changed. */
static void write_manifests(const interop *t)
{
    write_in(t, "manifest.json", t->manifest, t->manifest_len);
    char *bad = malloc(t->manifest_len);
    assert_non_null(bad);
    memcpy(bad, t->manifest, t->manifest_len);
    char *p = strstr(bad, "0.9.1");
    assert_non_null(p);
    p[4] = '2';
    write_in(t, "tampered.json", bad, t->manifest_len);
    free(bad);
}

static void assert_id_matches_openssl_der(const interop *t, const upk_key *key, const char *pub_pem)
{
    const char *der_args[] = {"pkey", "-pubin", "-in",      pub_pem, "-outform",
                              "DER",  "-out",   "@pub.der", NULL};
    assert_int_equal(run_openssl(t, der_args), 0);
    size_t len = 0;
    char *der = read_in(t, "pub.der", &len);
    uint8_t digest[UPK_SHA256_LEN];
    char hex[UPK_SHA256_HEX_LEN + 1];
    upk_sha256_buf(der, len, digest);
    assert_int_equal(upk_hex_encode(digest, sizeof(digest), hex, sizeof(hex)), UPK_OK);
    assert_string_equal(upk_key_id(key), hex);
    free(der);
}

static void upkeep_signature_verifies_with_openssl(void **state)
{
    interop *t = *state;
    upk_key *key = NULL;
    char *pub = NULL, *priv = NULL;
    uint8_t sig[UPK_SIG_MAX];
    size_t siglen = 0;
    assert_int_equal(upk_key_generate(&key), UPK_OK);
    assert_int_equal(upk_key_public_pem(key, &pub), UPK_OK);
    assert_int_equal(upk_key_private_pem(key, &priv), UPK_OK);
    write_in(t, "pub.pem", pub, strlen(pub));
    write_in(t, "key.pem", priv, strlen(priv));
    write_manifests(t);
    assert_int_equal(upk_manifest_sign(key, t->manifest, t->manifest_len, sig, &siglen), UPK_OK);
    write_in(t, "manifest.sig", sig, siglen);

    const char *verify[] = {"dgst",       "-sha256",       "-verify",        "@pub.pem",
                            "-signature", "@manifest.sig", "@manifest.json", NULL};
    assert_int_equal(run_openssl(t, verify), 0);
    const char *verify_bad[] = {"dgst",       "-sha256",       "-verify",        "@pub.pem",
                                "-signature", "@manifest.sig", "@tampered.json", NULL};
    assert_int_not_equal(run_openssl(t, verify_bad), 0);

    /* openssl reads upkeep's private key PEM too, and its key id agrees. */
    const char *to_pub[] = {"pkey", "-in", "@key.pem", "-pubout", "-out", "@pub2.pem", NULL};
    assert_int_equal(run_openssl(t, to_pub), 0);
    size_t len = 0;
    char *pub2 = read_in(t, "pub2.pem", &len);
    assert_int_equal(len, strlen(pub));
    assert_memory_equal(pub2, pub, len);
    assert_id_matches_openssl_der(t, key, "@pub.pem");
    free(pub2);
    free(pub);
    free(priv);
    upk_key_free(key);
}

/* openssl signs with key.pem (pub.pem beside it); upkeep verifies, and
 * upkeep signs with the same private key for openssl to verify. */
static void assert_openssl_key_interoperates(const interop *t)
{
    const char *sign[] = {"dgst", "-sha256",       "-sign",          "@key.pem",
                          "-out", "@manifest.sig", "@manifest.json", NULL};
    assert_int_equal(run_openssl(t, sign), 0);

    size_t plen = 0, klen = 0, slen = 0;
    char *pub = read_in(t, "pub.pem", &plen);
    char *priv = read_in(t, "key.pem", &klen);
    char *sig = read_in(t, "manifest.sig", &slen);
    upk_key *pubkey = NULL, *privkey = NULL;
    upk_keyring *ring = NULL;
    assert_int_equal(upk_key_load_pem(pub, plen, &pubkey), UPK_OK);
    assert_int_equal(upk_key_load_pem(priv, klen, &privkey), UPK_OK);
    assert_true(upk_key_has_private(privkey));
    assert_string_equal(upk_key_id(pubkey), upk_key_id(privkey));
    assert_id_matches_openssl_der(t, pubkey, "@pub.pem");

    assert_int_equal(upk_keyring_new(&ring), UPK_OK);
    assert_int_equal(upk_keyring_add(ring, pubkey), UPK_OK);
    upk_manifest m;
    assert_int_equal(upk_manifest_verify(ring, upk_key_id(pubkey), t->manifest, t->manifest_len,
                                         (const uint8_t *)sig, slen, &m),
                     UPK_OK);
    assert_string_equal(m.name, "interop");
    size_t tlen = 0;
    char *bad = read_in(t, "tampered.json", &tlen);
    assert_int_equal(
        upk_manifest_verify(ring, upk_key_id(pubkey), bad, tlen, (const uint8_t *)sig, slen, &m),
        UPK_E_SIG_INVALID);

    /* The other way with the same openssl-made private key. */
    uint8_t mysig[UPK_SIG_MAX];
    size_t mylen = 0;
    assert_int_equal(upk_manifest_sign(privkey, t->manifest, t->manifest_len, mysig, &mylen),
                     UPK_OK);
    write_in(t, "upkeep.sig", mysig, mylen);
    const char *verify[] = {"dgst",       "-sha256",     "-verify",        "@pub.pem",
                            "-signature", "@upkeep.sig", "@manifest.json", NULL};
    assert_int_equal(run_openssl(t, verify), 0);

    free(bad);
    upk_keyring_free(ring);
    upk_key_free(pubkey);
    upk_key_free(privkey);
    free(pub);
    free(priv);
    free(sig);
}

static void openssl_ecparam_noout_key_interoperates(void **state)
{
    interop *t = *state;
    write_manifests(t);
    const char *gen[] = {"ecparam", "-name", "prime256v1", "-genkey",
                         "-noout",  "-out",  "@key.pem",   NULL};
    assert_int_equal(run_openssl(t, gen), 0);
    const char *pub[] = {"ec", "-in", "@key.pem", "-pubout", "-out", "@pub.pem", NULL};
    assert_int_equal(run_openssl(t, pub), 0);
    assert_openssl_key_interoperates(t);
}

static void openssl_ecparam_with_parameters_block_interoperates(void **state)
{
    interop *t = *state;
    write_manifests(t);
    /* Without -noout the file starts with an "EC PARAMETERS" block. */
    const char *gen[] = {"ecparam", "-name", "prime256v1", "-genkey", "-out", "@key.pem", NULL};
    assert_int_equal(run_openssl(t, gen), 0);
    size_t len = 0;
    char *pem = read_in(t, "key.pem", &len);
    char *z = calloc(1, len + 1);
    assert_non_null(z);
    memcpy(z, pem, len);
    assert_non_null(strstr(z, "EC PARAMETERS"));
    free(z);
    free(pem);
    const char *pub[] = {"ec", "-in", "@key.pem", "-pubout", "-out", "@pub.pem", NULL};
    assert_int_equal(run_openssl(t, pub), 0);
    assert_openssl_key_interoperates(t);
}

static void openssl_genpkey_pkcs8_key_interoperates(void **state)
{
    interop *t = *state;
    write_manifests(t);
    const char *gen[] = {"genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                         "-out",    "@key.pem",   NULL};
    assert_int_equal(run_openssl(t, gen), 0);
    size_t len = 0;
    char *pem = read_in(t, "key.pem", &len);
    assert_true(len > 27);
    assert_memory_equal(pem, "-----BEGIN PRIVATE KEY-----", 27);
    free(pem);
    const char *pub[] = {"pkey", "-in", "@key.pem", "-pubout", "-out", "@pub.pem", NULL};
    assert_int_equal(run_openssl(t, pub), 0);
    assert_openssl_key_interoperates(t);
}

static void openssl_p384_and_rsa_keys_are_rejected(void **state)
{
    interop *t = *state;
    const char *p384[] = {"genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384",
                          "-out",    "@p384.pem",  NULL};
    assert_int_equal(run_openssl(t, p384), 0);
    const char *rsa[] = {"genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024",
                         "-out",    "@rsa.pem",   NULL};
    assert_int_equal(run_openssl(t, rsa), 0);
    static const char *const names[] = {"p384.pem", "rsa.pem"};
    for (size_t i = 0; i < 2; i++) {
        size_t len = 0;
        char *pem = read_in(t, names[i], &len);
        upk_key *key = NULL;
        assert_int_equal(upk_key_load_pem(pem, len, &key), UPK_E_KEY_INVALID);
        assert_null(key);
        free(pem);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(upkeep_signature_verifies_with_openssl, interop_setup,
                                        interop_teardown),
        cmocka_unit_test_setup_teardown(openssl_ecparam_noout_key_interoperates, interop_setup,
                                        interop_teardown),
        cmocka_unit_test_setup_teardown(openssl_ecparam_with_parameters_block_interoperates,
                                        interop_setup, interop_teardown),
        cmocka_unit_test_setup_teardown(openssl_genpkey_pkcs8_key_interoperates, interop_setup,
                                        interop_teardown),
        cmocka_unit_test_setup_teardown(openssl_p384_and_rsa_keys_are_rejected, interop_setup,
                                        interop_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
