/* Unit tests for proto/src/key.c: P-256 key generation, PEM round trips,
 * rejection of every non-P-256 or malformed key, deterministic signatures,
 * key ids (against the committed openssl-made vector) and keyrings. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <mbedtls/ecp.h>
#include <mbedtls/pk.h>

#include "upkeep/key.h"

#include "crypto_test_util.h"

static const char MSG[] = "{\"v\":1,\"name\":\"rel\"}";

static upk_key *load_vector(const char *name)
{
    size_t len = 0;
    char *pem = ct_read_vector(name, &len);
    assert_non_null(pem);
    upk_key *key = NULL;
    assert_int_equal(upk_key_load_pem(pem, len, &key), UPK_OK);
    free(pem);
    return key;
}

static void assert_vector_rejected(const char *name)
{
    size_t len = 0;
    char *pem = ct_read_vector(name, &len);
    assert_non_null(pem);
    upk_key *key = NULL;
    assert_int_equal(upk_key_load_pem(pem, len, &key), UPK_E_KEY_INVALID);
    assert_null(key);
    free(pem);
}

static void assert_hex_id(const char *id)
{
    assert_int_equal(strlen(id), UPK_KEY_ID_LEN);
    for (size_t i = 0; i < UPK_KEY_ID_LEN; i++)
        assert_true((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f'));
}

static void key_generate_gives_private_key_with_hex_id(void **state)
{
    (void)state;
    upk_key *a = NULL, *b = NULL;
    assert_int_equal(upk_key_generate(&a), UPK_OK);
    assert_int_equal(upk_key_generate(&b), UPK_OK);
    assert_true(upk_key_has_private(a));
    assert_hex_id(upk_key_id(a));
    assert_string_not_equal(upk_key_id(a), upk_key_id(b));
    upk_key_free(a);
    upk_key_free(b);
}

static void key_private_pem_round_trips(void **state)
{
    (void)state;
    upk_key *key = NULL, *again = NULL;
    char *pem = NULL;
    assert_int_equal(upk_key_generate(&key), UPK_OK);
    assert_int_equal(upk_key_private_pem(key, &pem), UPK_OK);
    assert_non_null(strstr(pem, "-----BEGIN EC PRIVATE KEY-----"));
    assert_int_equal(upk_key_load_pem(pem, strlen(pem), &again), UPK_OK);
    assert_true(upk_key_has_private(again));
    assert_string_equal(upk_key_id(key), upk_key_id(again));

    /* The reloaded key signs what the original verifies. */
    uint8_t sig[UPK_SIG_MAX];
    size_t siglen = 0;
    assert_int_equal(upk_key_sign(again, MSG, sizeof(MSG) - 1, sig, &siglen), UPK_OK);
    assert_int_equal(upk_key_verify(key, MSG, sizeof(MSG) - 1, sig, siglen), UPK_OK);
    free(pem);
    upk_key_free(again);
    upk_key_free(key);
}

static void key_public_pem_round_trips_without_private_half(void **state)
{
    (void)state;
    upk_key *key = NULL, *pub = NULL;
    char *pem = NULL, *pem2 = NULL;
    assert_int_equal(upk_key_generate(&key), UPK_OK);
    assert_int_equal(upk_key_public_pem(key, &pem), UPK_OK);
    assert_non_null(strstr(pem, "-----BEGIN PUBLIC KEY-----"));
    assert_null(strstr(pem, "PRIVATE"));
    assert_int_equal(upk_key_load_pem(pem, strlen(pem), &pub), UPK_OK);
    assert_false(upk_key_has_private(pub));
    assert_string_equal(upk_key_id(key), upk_key_id(pub));
    assert_int_equal(upk_key_public_pem(pub, &pem2), UPK_OK);
    assert_string_equal(pem, pem2);
    free(pem);
    free(pem2);
    upk_key_free(pub);
    upk_key_free(key);
}

static void key_public_only_cannot_sign_or_export_private(void **state)
{
    (void)state;
    upk_key *pub = load_vector("release-p256.pub.pem");
    uint8_t sig[UPK_SIG_MAX];
    size_t siglen = 12345;
    char *pem = NULL;
    assert_false(upk_key_has_private(pub));
    assert_int_equal(upk_key_sign(pub, MSG, sizeof(MSG) - 1, sig, &siglen), UPK_E_KEY_INVALID);
    assert_int_equal(siglen, 12345);
    assert_int_equal(upk_key_private_pem(pub, &pem), UPK_E_KEY_INVALID);
    assert_null(pem);
    upk_key_free(pub);
}

static void key_sign_is_deterministic(void **state)
{
    (void)state;
    upk_key *key = NULL;
    assert_int_equal(upk_key_generate(&key), UPK_OK);
    uint8_t s1[UPK_SIG_MAX], s2[UPK_SIG_MAX], s3[UPK_SIG_MAX];
    size_t l1 = 0, l2 = 0, l3 = 0;
    assert_int_equal(upk_key_sign(key, MSG, sizeof(MSG) - 1, s1, &l1), UPK_OK);
    assert_int_equal(upk_key_sign(key, MSG, sizeof(MSG) - 1, s2, &l2), UPK_OK);
    assert_int_equal(l1, l2);
    assert_memory_equal(s1, s2, l1);
    /* A different message gives a different signature. */
    assert_int_equal(upk_key_sign(key, MSG, sizeof(MSG) - 2, s3, &l3), UPK_OK);
    assert_true(l1 != l3 || memcmp(s1, s3, l1) != 0);
    /* DER SEQUENCE of two INTEGERs, within the documented bound. */
    assert_true(l1 >= 8 && l1 <= UPK_SIG_MAX);
    assert_int_equal(s1[0], 0x30);
    assert_int_equal(s1[1], l1 - 2);
    upk_key_free(key);
}

static void key_sign_vector_key_is_deterministic_across_loads(void **state)
{
    (void)state;
    /* The same PEM loaded twice must sign identically (RFC 6979 depends only
     * on the key and the message). */
    upk_key *a = load_vector("release-p256.key.pem");
    upk_key *b = load_vector("release-p256.key.pem");
    uint8_t s1[UPK_SIG_MAX], s2[UPK_SIG_MAX];
    size_t l1 = 0, l2 = 0;
    assert_int_equal(upk_key_sign(a, "", 0, s1, &l1), UPK_OK);
    assert_int_equal(upk_key_sign(b, "", 0, s2, &l2), UPK_OK);
    assert_int_equal(l1, l2);
    assert_memory_equal(s1, s2, l1);
    assert_int_equal(upk_key_verify(a, "", 0, s1, l1), UPK_OK);
    upk_key_free(a);
    upk_key_free(b);
}

static void key_verify_rejects_tampering(void **state)
{
    (void)state;
    upk_key *key = NULL, *other = NULL;
    assert_int_equal(upk_key_generate(&key), UPK_OK);
    assert_int_equal(upk_key_generate(&other), UPK_OK);
    uint8_t sig[UPK_SIG_MAX + 8];
    size_t siglen = 0;
    char msg[sizeof(MSG)];
    memcpy(msg, MSG, sizeof(MSG));
    assert_int_equal(upk_key_sign(key, msg, sizeof(msg) - 1, sig, &siglen), UPK_OK);
    assert_int_equal(upk_key_verify(key, msg, sizeof(msg) - 1, sig, siglen), UPK_OK);

    ct_assert_tampering_fails(key, other, msg, sizeof(msg) - 1, sig, siglen);
    upk_key_free(key);
    upk_key_free(other);
}

static void key_loads_sec1_and_pkcs8_private_and_public(void **state)
{
    (void)state;
    upk_key *sec1 = load_vector("release-p256.key.pem");
    upk_key *sec1pub = load_vector("release-p256.pub.pem");
    upk_key *p8 = load_vector("pkcs8-p256.key.pem");
    upk_key *p8pub = load_vector("pkcs8-p256.pub.pem");
    assert_true(upk_key_has_private(sec1));
    assert_true(upk_key_has_private(p8));
    assert_false(upk_key_has_private(sec1pub));
    assert_false(upk_key_has_private(p8pub));
    assert_string_equal(upk_key_id(sec1), upk_key_id(sec1pub));
    assert_string_equal(upk_key_id(p8), upk_key_id(p8pub));
    assert_string_not_equal(upk_key_id(sec1), upk_key_id(p8));

    uint8_t sig[UPK_SIG_MAX];
    size_t siglen = 0;
    assert_int_equal(upk_key_sign(p8, MSG, sizeof(MSG) - 1, sig, &siglen), UPK_OK);
    assert_int_equal(upk_key_verify(p8pub, MSG, sizeof(MSG) - 1, sig, siglen), UPK_OK);
    assert_int_equal(upk_key_verify(sec1pub, MSG, sizeof(MSG) - 1, sig, siglen), UPK_E_SIG_INVALID);
    upk_key_free(sec1);
    upk_key_free(sec1pub);
    upk_key_free(p8);
    upk_key_free(p8pub);
}

static void key_id_matches_openssl_for_vector_key(void **state)
{
    (void)state;
    /* release-p256.keyid was written by
     * `openssl pkey -pubin -in release-p256.pub.pem -outform DER | sha256sum`. */
    size_t len = 0;
    char *want = ct_read_vector("release-p256.keyid", &len);
    assert_non_null(want);
    assert_true(len >= UPK_KEY_ID_LEN);
    upk_key *priv = load_vector("release-p256.key.pem");
    upk_key *pub = load_vector("release-p256.pub.pem");
    assert_memory_equal(upk_key_id(priv), want, UPK_KEY_ID_LEN);
    assert_memory_equal(upk_key_id(pub), want, UPK_KEY_ID_LEN);
    assert_hex_id(upk_key_id(pub));
    free(want);
    upk_key_free(priv);
    upk_key_free(pub);
}

static void key_load_does_not_need_nul_terminator(void **state)
{
    (void)state;
    size_t len = 0;
    char *pem = ct_read_vector("release-p256.pub.pem", &len);
    assert_non_null(pem);
    /* ct_read_vector allocates exactly len bytes: any read past them is an
     * ASan error. Also give a prefix of a larger buffer with junk after it. */
    upk_key *key = NULL;
    assert_int_equal(upk_key_load_pem(pem, len, &key), UPK_OK);
    upk_key_free(key);
    key = NULL;
    char *big = malloc(len + 16);
    assert_non_null(big);
    memcpy(big, pem, len);
    memset(big + len, 'Z', 16);
    assert_int_equal(upk_key_load_pem(big, len, &key), UPK_OK);
    upk_key_free(key);
    free(big);
    free(pem);
}

static void key_load_rejects_rsa(void **state)
{
    (void)state;
    assert_vector_rejected("rsa1024.key.pem");
    assert_vector_rejected("rsa1024.pub.pem");
}

static void key_load_rejects_other_curves(void **state)
{
    (void)state;
    assert_vector_rejected("p384.key.pem");
    assert_vector_rejected("p384.pub.pem");
    assert_vector_rejected("secp256k1.key.pem");
    assert_vector_rejected("secp256k1.pub.pem");
    assert_vector_rejected("ed25519.key.pem");
}

static void key_load_rejects_encrypted_pem(void **state)
{
    (void)state;
    assert_vector_rejected("encrypted-p256.key.pem");
}

static void assert_text_rejected(const char *text, size_t len)
{
    upk_key *key = NULL;
    assert_int_equal(upk_key_load_pem(text, len, &key), UPK_E_KEY_INVALID);
    assert_null(key);
}

static void key_load_rejects_compressed_public_point(void **state)
{
    (void)state;
    /* mbedTLS 2.28 reads only uncompressed points; docs/signing.md says so. */
    assert_vector_rejected("release-p256.compressed.pub.pem");
}

static void key_load_rejects_public_point_off_curve(void **state)
{
    (void)state;
    /* Re-armour the vector public key with the last byte of Y changed: the
     * point is then not on P-256 and must not load. */
    size_t len = 0;
    char *pem = ct_read_vector("release-p256.pub.pem", &len);
    assert_non_null(pem);
    char b64[256];
    size_t n = 0;
    for (size_t i = strlen("-----BEGIN PUBLIC KEY-----"); i < len && pem[i] != '-'; i++) {
        if (pem[i] != '\n' && pem[i] != '\r') {
            assert_true(n < sizeof(b64));
            b64[n++] = pem[i];
        }
    }
    uint8_t der[128];
    size_t derlen = 0;
    assert_int_equal(upk_base64_decode(b64, n, der, sizeof(der), &derlen), UPK_OK);
    assert_int_equal(derlen, 91);
    der[derlen - 1] ^= 0x01;
    char body[256];
    size_t bodylen = 0;
    assert_int_equal(upk_base64_encode(der, derlen, body, sizeof(body), &bodylen), UPK_OK);
    char bad[512];
    int m =
        snprintf(bad, sizeof(bad), "-----BEGIN PUBLIC KEY-----\n%.*s\n-----END PUBLIC KEY-----\n",
                 (int)bodylen, body);
    assert_true(m > 0 && (size_t)m < sizeof(bad));
    assert_text_rejected(bad, (size_t)m);
    /* The unchanged DER, re-armoured the same way, loads: the test is sound. */
    der[derlen - 1] ^= 0x01;
    assert_int_equal(upk_base64_encode(der, derlen, body, sizeof(body), &bodylen), UPK_OK);
    m = snprintf(bad, sizeof(bad), "-----BEGIN PUBLIC KEY-----\n%.*s\n-----END PUBLIC KEY-----\n",
                 (int)bodylen, body);
    assert_true(m > 0 && (size_t)m < sizeof(bad));
    upk_key *key = NULL;
    assert_int_equal(upk_key_load_pem(bad, (size_t)m, &key), UPK_OK);
    upk_key_free(key);
    free(pem);
}

static void key_load_rejects_garbage(void **state)
{
    (void)state;
    static const char junk[] = "hello, this is not a key";
    static const char empty_armour[] = "-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n";
    static const char bad_b64[] = "-----BEGIN PUBLIC KEY-----\n!!!!\n-----END PUBLIC KEY-----\n";
    assert_text_rejected(junk, sizeof(junk) - 1);
    assert_text_rejected(junk, 0);
    assert_text_rejected(empty_armour, sizeof(empty_armour) - 1);
    assert_text_rejected(bad_b64, sizeof(bad_b64) - 1);

    size_t len = 0;
    char *pem = ct_read_vector("release-p256.key.pem", &len);
    assert_non_null(pem);
    /* Truncated PEM: every prefix is rejected. */
    for (size_t n = 0; n < len - 1; n += 7)
        assert_text_rejected(pem, n);
    /* One corrupted base64 character (inside the body). */
    char *bad = malloc(len);
    assert_non_null(bad);
    memcpy(bad, pem, len);
    bad[40] = bad[40] == 'A' ? 'B' : 'A';
    assert_text_rejected(bad, len);
    /* A NUL inside the text. */
    memcpy(bad, pem, len);
    bad[len / 2] = '\0';
    assert_text_rejected(bad, len);
    free(bad);
    free(pem);
}

static void key_load_rejects_der_and_oversized_input(void **state)
{
    (void)state;
    /* A valid DER SubjectPublicKeyInfo prefix is not PEM. */
    static const char der[] = "\x30\x59\x30\x13\x06\x07\x2a\x86\x48\xce\x3d\x02\x01";
    assert_text_rejected(der, sizeof(der) - 1);

    size_t len = 0;
    char *pem = ct_read_vector("release-p256.pub.pem", &len);
    assert_non_null(pem);
    char *big = malloc(UPK_KEY_PEM_MAX + 1);
    assert_non_null(big);
    memset(big, '\n', UPK_KEY_PEM_MAX + 1);
    memcpy(big, pem, len);
    /* Trailing newlines are fine up to the limit, one byte more is not. */
    upk_key *key = NULL;
    assert_int_equal(upk_key_load_pem(big, UPK_KEY_PEM_MAX, &key), UPK_OK);
    upk_key_free(key);
    assert_text_rejected(big, UPK_KEY_PEM_MAX + 1);
    free(big);
    free(pem);
}

static void key_load_rejects_mismatched_private_and_public_halves(void **state)
{
    (void)state;
    /* Build a SEC1 file whose public point belongs to another key: d from
     * release-p256, Q from pkcs8-p256. */
    size_t la = 0, lb = 0;
    char *a = ct_read_vector("release-p256.key.pem", &la);
    char *b = ct_read_vector("pkcs8-p256.key.pem", &lb);
    assert_non_null(a);
    assert_non_null(b);
    char *az = calloc(1, la + 1), *bz = calloc(1, lb + 1);
    assert_non_null(az);
    assert_non_null(bz);
    memcpy(az, a, la);
    memcpy(bz, b, lb);
    mbedtls_pk_context pa, pb;
    mbedtls_pk_init(&pa);
    mbedtls_pk_init(&pb);
    assert_int_equal(mbedtls_pk_parse_key(&pa, (unsigned char *)az, la + 1, NULL, 0), 0);
    assert_int_equal(mbedtls_pk_parse_key(&pb, (unsigned char *)bz, lb + 1, NULL, 0), 0);
    assert_int_equal(mbedtls_ecp_copy(&mbedtls_pk_ec(pa)->Q, &mbedtls_pk_ec(pb)->Q), 0);
    unsigned char out[1024];
    assert_int_equal(mbedtls_pk_write_key_pem(&pa, out, sizeof(out)), 0);
    assert_text_rejected((const char *)out, strlen((const char *)out));
    mbedtls_pk_free(&pa);
    mbedtls_pk_free(&pb);
    free(az);
    free(bz);
    free(a);
    free(b);
}

static void key_rejects_invalid_arguments(void **state)
{
    (void)state;
    upk_key *key = load_vector("release-p256.key.pem");
    uint8_t sig[UPK_SIG_MAX];
    size_t siglen = 0;
    char *s = NULL;
    assert_int_equal(upk_key_generate(NULL), UPK_E_INVALID_ARG);
    assert_int_equal(upk_key_load_pem(NULL, 10, &key), UPK_E_INVALID_ARG);
    assert_int_equal(upk_key_load_pem("x", 1, NULL), UPK_E_INVALID_ARG);
    assert_int_equal(upk_key_private_pem(NULL, &s), UPK_E_INVALID_ARG);
    assert_int_equal(upk_key_public_pem(key, NULL), UPK_E_INVALID_ARG);
    assert_int_equal(upk_key_sign(NULL, "a", 1, sig, &siglen), UPK_E_INVALID_ARG);
    assert_int_equal(upk_key_sign(key, NULL, 1, sig, &siglen), UPK_E_INVALID_ARG);
    assert_int_equal(upk_key_sign(key, "a", 1, NULL, &siglen), UPK_E_INVALID_ARG);
    assert_int_equal(upk_key_sign(key, "a", 1, sig, NULL), UPK_E_INVALID_ARG);
    assert_int_equal(upk_key_verify(NULL, "a", 1, sig, 8), UPK_E_INVALID_ARG);
    assert_int_equal(upk_key_verify(key, "a", 1, NULL, 8), UPK_E_INVALID_ARG);
    assert_int_equal(upk_key_verify(key, NULL, 1, sig, 8), UPK_E_INVALID_ARG);
    assert_string_equal(upk_key_id(NULL), "");
    assert_false(upk_key_has_private(NULL));
    upk_key_free(NULL);
    upk_key_free(key);
}

static void keyring_adds_finds_and_counts(void **state)
{
    (void)state;
    upk_keyring *ring = NULL;
    assert_int_equal(upk_keyring_new(&ring), UPK_OK);
    assert_int_equal(upk_keyring_count(ring), 0);
    upk_key *priv = load_vector("release-p256.key.pem");
    upk_key *other = load_vector("pkcs8-p256.pub.pem");
    assert_null(upk_keyring_find(ring, upk_key_id(priv)));
    assert_int_equal(upk_keyring_add(ring, priv), UPK_OK);
    assert_int_equal(upk_keyring_add(ring, other), UPK_OK);
    assert_int_equal(upk_keyring_count(ring), 2);

    const upk_key *pinned = upk_keyring_find(ring, upk_key_id(priv));
    assert_non_null(pinned);
    assert_true(pinned != priv);
    assert_string_equal(upk_key_id(pinned), upk_key_id(priv));
    /* The ring holds only the public half. */
    assert_false(upk_key_has_private(pinned));
    uint8_t sig[UPK_SIG_MAX];
    size_t siglen = 0;
    assert_int_equal(upk_key_sign(priv, MSG, sizeof(MSG) - 1, sig, &siglen), UPK_OK);
    assert_int_equal(upk_key_verify(pinned, MSG, sizeof(MSG) - 1, sig, siglen), UPK_OK);
    assert_int_equal(upk_key_sign(pinned, MSG, sizeof(MSG) - 1, sig, &siglen), UPK_E_KEY_INVALID);

    /* The pinned copy outlives the key it was made from. */
    char id[UPK_KEY_ID_LEN + 1];
    memcpy(id, upk_key_id(priv), sizeof(id));
    upk_key_free(priv);
    assert_non_null(upk_keyring_find(ring, id));

    /* Unknown, prefix and NULL ids are not found. */
    assert_null(upk_keyring_find(ring, "00"));
    char prefix[UPK_KEY_ID_LEN];
    memcpy(prefix, id, UPK_KEY_ID_LEN - 1);
    prefix[UPK_KEY_ID_LEN - 1] = '\0';
    assert_null(upk_keyring_find(ring, prefix));
    assert_null(upk_keyring_find(ring, NULL));
    assert_null(upk_keyring_find(NULL, id));
    assert_int_equal(upk_keyring_count(NULL), 0);
    upk_key_free(other);
    upk_keyring_free(ring);
}

static void keyring_rejects_duplicate_key(void **state)
{
    (void)state;
    upk_keyring *ring = NULL;
    assert_int_equal(upk_keyring_new(&ring), UPK_OK);
    upk_key *priv = load_vector("release-p256.key.pem");
    upk_key *pub = load_vector("release-p256.pub.pem");
    assert_int_equal(upk_keyring_add(ring, priv), UPK_OK);
    /* Same public key, loaded from the public PEM: same id. */
    assert_int_equal(upk_keyring_add(ring, pub), UPK_E_EXISTS);
    assert_int_equal(upk_keyring_add(ring, priv), UPK_E_EXISTS);
    assert_int_equal(upk_keyring_count(ring), 1);
    upk_key_free(priv);
    upk_key_free(pub);
    upk_keyring_free(ring);
}

static void keyring_rejects_key_past_limit(void **state)
{
    (void)state;
    upk_keyring *ring = NULL;
    assert_int_equal(upk_keyring_new(&ring), UPK_OK);
    for (size_t i = 0; i < UPK_KEYRING_MAX; i++) {
        upk_key *k = NULL;
        assert_int_equal(upk_key_generate(&k), UPK_OK);
        assert_int_equal(upk_keyring_add(ring, k), UPK_OK);
        upk_key_free(k);
    }
    assert_int_equal(upk_keyring_count(ring), UPK_KEYRING_MAX);
    upk_key *k = NULL;
    assert_int_equal(upk_key_generate(&k), UPK_OK);
    assert_int_equal(upk_keyring_add(ring, k), UPK_E_FIELD_TOO_LONG);
    assert_null(upk_keyring_find(ring, upk_key_id(k)));
    assert_int_equal(upk_keyring_count(ring), UPK_KEYRING_MAX);
    upk_key_free(k);
    upk_keyring_free(ring);
}

static void keyring_rejects_invalid_arguments(void **state)
{
    (void)state;
    upk_keyring *ring = NULL;
    upk_key *key = load_vector("release-p256.pub.pem");
    assert_int_equal(upk_keyring_new(NULL), UPK_E_INVALID_ARG);
    assert_int_equal(upk_keyring_new(&ring), UPK_OK);
    assert_int_equal(upk_keyring_add(NULL, key), UPK_E_INVALID_ARG);
    assert_int_equal(upk_keyring_add(ring, NULL), UPK_E_INVALID_ARG);
    assert_int_equal(upk_keyring_count(ring), 0);
    upk_keyring_free(NULL);
    upk_keyring_free(ring);
    upk_key_free(key);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(key_generate_gives_private_key_with_hex_id),
        cmocka_unit_test(key_private_pem_round_trips),
        cmocka_unit_test(key_public_pem_round_trips_without_private_half),
        cmocka_unit_test(key_public_only_cannot_sign_or_export_private),
        cmocka_unit_test(key_sign_is_deterministic),
        cmocka_unit_test(key_sign_vector_key_is_deterministic_across_loads),
        cmocka_unit_test(key_verify_rejects_tampering),
        cmocka_unit_test(key_loads_sec1_and_pkcs8_private_and_public),
        cmocka_unit_test(key_id_matches_openssl_for_vector_key),
        cmocka_unit_test(key_load_does_not_need_nul_terminator),
        cmocka_unit_test(key_load_rejects_rsa),
        cmocka_unit_test(key_load_rejects_other_curves),
        cmocka_unit_test(key_load_rejects_encrypted_pem),
        cmocka_unit_test(key_load_rejects_compressed_public_point),
        cmocka_unit_test(key_load_rejects_public_point_off_curve),
        cmocka_unit_test(key_load_rejects_garbage),
        cmocka_unit_test(key_load_rejects_der_and_oversized_input),
        cmocka_unit_test(key_load_rejects_mismatched_private_and_public_halves),
        cmocka_unit_test(key_rejects_invalid_arguments),
        cmocka_unit_test(keyring_adds_finds_and_counts),
        cmocka_unit_test(keyring_rejects_duplicate_key),
        cmocka_unit_test(keyring_rejects_key_past_limit),
        cmocka_unit_test(keyring_rejects_invalid_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
