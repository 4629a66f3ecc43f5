/* Release signing keys (see key.h): ECDSA P-256 over mbedTLS 2.28, PEM in,
 * PEM out, deterministic (RFC 6979) DER signatures, key ids from the DER
 * SubjectPublicKeyInfo, and a small fixed-size keyring of pinned keys. */
#include "upkeep/key.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ecdsa.h>
#include <mbedtls/ecp.h>
#include <mbedtls/entropy.h>
#include <mbedtls/pk.h>
#include <mbedtls/platform_util.h>

/* Largest DER SubjectPublicKeyInfo of a P-256 key is 91 bytes; leave room. */
#define KEY_SPKI_DER_MAX 256

/* Private keys as PEM are ~230 bytes (SEC1); UPK_KEY_PEM_MAX is ample. */
#define KEY_PEM_OUT_MAX UPK_KEY_PEM_MAX

/* A parsed key. Invariant: pk holds an EC key on secp256r1 whose public point
 * is valid (and matches d when has_private); id is its key id. Immutable
 * after key_finish, so verification may share it between threads. */
struct upk_key {
    mbedtls_pk_context pk;
    bool has_private;
    char id[UPK_KEY_ID_LEN + 1];
};

struct upk_keyring {
    size_t count;
    upk_key *keys[UPK_KEYRING_MAX];
};

static const char KEYGEN_PERS[] = "upkeep-keygen";
static const char SIGN_PERS[] = "upkeep-sign-blinding";

/* A per-call RNG: entropy seeded CTR_DRBG. Both contexts are always
 * initialised, so rng_free is safe after a failed rng_seed. */
typedef struct key_rng {
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
} key_rng;

static upk_err rng_seed(key_rng *rng, const char *pers)
{
    mbedtls_entropy_init(&rng->entropy);
    mbedtls_ctr_drbg_init(&rng->drbg);
    if (mbedtls_ctr_drbg_seed(&rng->drbg, mbedtls_entropy_func, &rng->entropy,
                              (const unsigned char *)pers, strlen(pers)) != 0)
        return UPK_E_CRYPTO;
    return UPK_OK;
}

static void rng_free(key_rng *rng)
{
    mbedtls_ctr_drbg_free(&rng->drbg);
    mbedtls_entropy_free(&rng->entropy);
}

/* Writes the DER SubjectPublicKeyInfo of pk; *der points into buf (mbedTLS
 * writes at the END of the buffer). */
static upk_err spki_der(mbedtls_pk_context *pk, unsigned char *buf, size_t cap,
                        const unsigned char **der, size_t *derlen)
{
    int n = mbedtls_pk_write_pubkey_der(pk, buf, cap);
    if (n <= 0 || (size_t)n > cap)
        return UPK_E_CRYPTO;
    *der = buf + cap - (size_t)n;
    *derlen = (size_t)n;
    return UPK_OK;
}

/* Checks that pk is a P-256 EC key and fills in the key id. */
static upk_err key_finish(upk_key *key)
{
    mbedtls_pk_type_t t = mbedtls_pk_get_type(&key->pk);
    if (t != MBEDTLS_PK_ECKEY && t != MBEDTLS_PK_ECDSA)
        return UPK_E_KEY_INVALID;
    const mbedtls_ecp_keypair *ec = mbedtls_pk_ec(key->pk);
    if (ec == NULL || ec->grp.id != MBEDTLS_ECP_DP_SECP256R1)
        return UPK_E_KEY_INVALID;
    /* A SEC1/PKCS#8 file carries the public point beside d; mbedTLS does not
     * check that they belong together, so a mismatched file would sign
     * under one id and verify under another. */
    if (key->has_private && mbedtls_pk_check_pair(&key->pk, &key->pk) != 0)
        return UPK_E_KEY_INVALID;

    unsigned char buf[KEY_SPKI_DER_MAX];
    const unsigned char *der = NULL;
    size_t derlen = 0;
    upk_err err = spki_der(&key->pk, buf, sizeof(buf), &der, &derlen);
    if (err != UPK_OK)
        return err;
    uint8_t digest[UPK_SHA256_LEN];
    upk_sha256_buf(der, derlen, digest);
    return upk_hex_encode(digest, sizeof(digest), key->id, sizeof(key->id));
}

static upk_key *key_alloc(void)
{
    upk_key *key = calloc(1, sizeof(*key));
    if (key != NULL)
        mbedtls_pk_init(&key->pk);
    return key;
}

void upk_key_free(upk_key *key)
{
    if (key == NULL)
        return;
    mbedtls_pk_free(&key->pk);
    free(key);
}

upk_err upk_key_generate(upk_key **out)
{
    if (out == NULL)
        return UPK_E_INVALID_ARG;
    upk_err err = UPK_OK;
    key_rng rng;
    upk_key *key = key_alloc();
    if (key == NULL)
        return UPK_E_NOMEM;
    err = rng_seed(&rng, KEYGEN_PERS);
    if (err != UPK_OK)
        goto out_rng;
    if (mbedtls_pk_setup(&key->pk, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY)) != 0 ||
        mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(key->pk),
                            mbedtls_ctr_drbg_random, &rng.drbg) != 0) {
        err = UPK_E_CRYPTO;
        goto out_rng;
    }
    key->has_private = true;
    err = key_finish(key);
    if (err != UPK_OK)
        goto out_rng;
    *out = key;
    key = NULL;
out_rng:
    rng_free(&rng);
    upk_key_free(key);
    return err;
}

upk_err upk_key_load_pem(const char *pem, size_t len, upk_key **out)
{
    if (pem == NULL || out == NULL)
        return UPK_E_INVALID_ARG;
    /* PEM text only: bounded, no NUL inside, and armoured (mbedTLS would
     * otherwise fall back to parsing raw DER). */
    if (len == 0 || len > UPK_KEY_PEM_MAX || memchr(pem, '\0', len) != NULL)
        return UPK_E_KEY_INVALID;
    static const char armour[] = "-----BEGIN ";
    bool armoured = false;
    for (size_t i = 0; i + sizeof(armour) - 1 <= len && !armoured; i++)
        armoured = memcmp(pem + i, armour, sizeof(armour) - 1) == 0;
    if (!armoured)
        return UPK_E_KEY_INVALID;

    upk_err err = UPK_OK;
    upk_key *key = NULL;
    /* mbedtls_pk_parse_key wants PEM NUL-terminated, with len counting it. */
    unsigned char *buf = malloc(len + 1);
    if (buf == NULL)
        return UPK_E_NOMEM;
    memcpy(buf, pem, len);
    buf[len] = '\0';

    key = key_alloc();
    if (key == NULL) {
        err = UPK_E_NOMEM;
        goto out_buf;
    }
    if (mbedtls_pk_parse_key(&key->pk, buf, len + 1, NULL, 0) == 0) {
        key->has_private = true;
    } else {
        mbedtls_pk_free(&key->pk);
        mbedtls_pk_init(&key->pk);
        if (mbedtls_pk_parse_public_key(&key->pk, buf, len + 1) != 0) {
            err = UPK_E_KEY_INVALID;
            goto out_key;
        }
    }
    err = key_finish(key);
    if (err != UPK_OK)
        goto out_key;
    *out = key;
    key = NULL;
out_key:
    upk_key_free(key);
out_buf:
    mbedtls_platform_zeroize(buf, len + 1);
    free(buf);
    return err;
}

/* Copies the NUL-terminated PEM in buf into a new heap string. */
static upk_err pem_dup(const unsigned char *buf, size_t cap, char **out)
{
    size_t n = strnlen((const char *)buf, cap);
    if (n == 0 || n == cap)
        return UPK_E_CRYPTO;
    char *s = malloc(n + 1);
    if (s == NULL)
        return UPK_E_NOMEM;
    memcpy(s, buf, n + 1);
    *out = s;
    return UPK_OK;
}

upk_err upk_key_private_pem(const upk_key *key, char **out)
{
    if (key == NULL || out == NULL)
        return UPK_E_INVALID_ARG;
    if (!key->has_private)
        return UPK_E_KEY_INVALID;
    unsigned char buf[KEY_PEM_OUT_MAX];
    upk_err err = UPK_OK;
    /* mbedTLS takes a non-const context but only reads it here. */
    if (mbedtls_pk_write_key_pem((mbedtls_pk_context *)&key->pk, buf, sizeof(buf)) != 0)
        err = UPK_E_CRYPTO;
    else
        err = pem_dup(buf, sizeof(buf), out);
    mbedtls_platform_zeroize(buf, sizeof(buf));
    return err;
}

upk_err upk_key_public_pem(const upk_key *key, char **out)
{
    if (key == NULL || out == NULL)
        return UPK_E_INVALID_ARG;
    unsigned char buf[KEY_PEM_OUT_MAX];
    if (mbedtls_pk_write_pubkey_pem((mbedtls_pk_context *)&key->pk, buf, sizeof(buf)) != 0)
        return UPK_E_CRYPTO;
    return pem_dup(buf, sizeof(buf), out);
}

const char *upk_key_id(const upk_key *key)
{
    return key == NULL ? "" : key->id;
}

bool upk_key_has_private(const upk_key *key)
{
    return key != NULL && key->has_private;
}

upk_err upk_key_sign(const upk_key *key, const void *msg, size_t len, uint8_t sig[UPK_SIG_MAX],
                     size_t *siglen)
{
    if (key == NULL || (msg == NULL && len > 0) || sig == NULL || siglen == NULL)
        return UPK_E_INVALID_ARG;
    if (!key->has_private)
        return UPK_E_KEY_INVALID;
    uint8_t digest[UPK_SHA256_LEN];
    upk_sha256_buf(msg, len, digest);

    /* mbedTLS 2.28 writes up to MBEDTLS_ECDSA_MAX_LEN (sized for the largest
     * enabled curve), so sign into a buffer of that size and copy. */
    unsigned char der[MBEDTLS_ECDSA_MAX_LEN];
    size_t n = 0;
    key_rng rng;
    upk_err err = rng_seed(&rng, SIGN_PERS);
    if (err != UPK_OK)
        goto out_rng;
    /* With MBEDTLS_ECDSA_DETERMINISTIC the nonce comes from RFC 6979; the RNG
     * only blinds the scalar multiplication. */
    if (mbedtls_ecdsa_write_signature(mbedtls_pk_ec(key->pk), MBEDTLS_MD_SHA256, digest,
                                      sizeof(digest), der, &n, mbedtls_ctr_drbg_random,
                                      &rng.drbg) != 0) {
        err = UPK_E_CRYPTO;
        goto out_rng;
    }
    if (n == 0 || n > UPK_SIG_MAX) {
        err = UPK_E_CRYPTO;
        goto out_rng;
    }
    memcpy(sig, der, n);
    *siglen = n;
out_rng:
    rng_free(&rng);
    return err;
}

/* Checked only where mbedTLS's config is visible (static analysers may not see it). */
#if defined(MBEDTLS_ECDSA_C) && !defined(MBEDTLS_ECDSA_DETERMINISTIC)
#error "upkeep needs mbedTLS with MBEDTLS_ECDSA_DETERMINISTIC (RFC 6979 signatures)"
#endif

/* The verification memo (key.h): a ring of hashes of verified triples. */
static struct {
    pthread_mutex_t mu;
    atomic_bool on;
    size_t next;
    size_t used;
    size_t hits;
    uint8_t seen[UPK_KEY_VERIFY_MEMO][UPK_SHA256_LEN];
} memo = {.mu = PTHREAD_MUTEX_INITIALIZER};

void upk_key_verify_memo_enable(void)
{
    atomic_store(&memo.on, true);
}

size_t upk_key_verify_memo_hits(void)
{
    pthread_mutex_lock(&memo.mu);
    size_t n = memo.hits;
    pthread_mutex_unlock(&memo.mu);
    return n;
}

static void memo_hash(const upk_key *key, const uint8_t digest[UPK_SHA256_LEN], const uint8_t *sig,
                      size_t siglen, uint8_t out[UPK_SHA256_LEN])
{
    /* Fixed-length key id and digest first, so the fields cannot run into
     * each other. */
    uint8_t buf[UPK_KEY_ID_LEN + UPK_SHA256_LEN + UPK_SIG_MAX];
    memcpy(buf, key->id, UPK_KEY_ID_LEN);
    memcpy(buf + UPK_KEY_ID_LEN, digest, UPK_SHA256_LEN);
    memcpy(buf + UPK_KEY_ID_LEN + UPK_SHA256_LEN, sig, siglen);
    upk_sha256_buf(buf, UPK_KEY_ID_LEN + UPK_SHA256_LEN + siglen, out);
}

static bool memo_has(const uint8_t h[UPK_SHA256_LEN])
{
    bool found = false;
    pthread_mutex_lock(&memo.mu);
    for (size_t i = 0; i < memo.used && !found; i++)
        found = memcmp(memo.seen[i], h, UPK_SHA256_LEN) == 0;
    if (found)
        memo.hits++;
    pthread_mutex_unlock(&memo.mu);
    return found;
}

static void memo_add(const uint8_t h[UPK_SHA256_LEN])
{
    pthread_mutex_lock(&memo.mu);
    memcpy(memo.seen[memo.next], h, UPK_SHA256_LEN);
    memo.next = (memo.next + 1) % UPK_KEY_VERIFY_MEMO;
    if (memo.used < UPK_KEY_VERIFY_MEMO)
        memo.used++;
    pthread_mutex_unlock(&memo.mu);
}

upk_err upk_key_verify(const upk_key *key, const void *msg, size_t len, const uint8_t *sig,
                       size_t siglen)
{
    if (key == NULL || (msg == NULL && len > 0) || (sig == NULL && siglen > 0))
        return UPK_E_INVALID_ARG;
    if (siglen == 0 || siglen > UPK_SIG_MAX)
        return UPK_E_SIG_INVALID;
    uint8_t digest[UPK_SHA256_LEN];
    upk_sha256_buf(msg, len, digest);
    bool use_memo = atomic_load(&memo.on);
    uint8_t h[UPK_SHA256_LEN];
    if (use_memo) {
        memo_hash(key, digest, sig, siglen, h);
        if (memo_has(h))
            return UPK_OK;
    }
    /* mbedtls_pk_verify copies the EC key into a local ECDSA context and
     * rejects trailing bytes after the DER signature; it does not write to
     * key->pk, so sharing a key between threads is safe. */
    if (mbedtls_pk_verify((mbedtls_pk_context *)&key->pk, MBEDTLS_MD_SHA256, digest, sizeof(digest),
                          sig, siglen) != 0)
        return UPK_E_SIG_INVALID;
    if (use_memo)
        memo_add(h);
    return UPK_OK;
}

upk_err upk_keyring_new(upk_keyring **out)
{
    if (out == NULL)
        return UPK_E_INVALID_ARG;
    upk_keyring *ring = calloc(1, sizeof(*ring));
    if (ring == NULL)
        return UPK_E_NOMEM;
    *out = ring;
    return UPK_OK;
}

/* A new key holding only the public half of key. */
static upk_err key_public_copy(const upk_key *key, upk_key **out)
{
    unsigned char buf[KEY_SPKI_DER_MAX];
    const unsigned char *der = NULL;
    size_t derlen = 0;
    upk_err err = spki_der((mbedtls_pk_context *)&key->pk, buf, sizeof(buf), &der, &derlen);
    if (err != UPK_OK)
        return err;
    upk_key *copy = key_alloc();
    if (copy == NULL)
        return UPK_E_NOMEM;
    if (mbedtls_pk_parse_public_key(&copy->pk, der, derlen) != 0) {
        err = UPK_E_CRYPTO;
        goto out_copy;
    }
    err = key_finish(copy);
    if (err != UPK_OK)
        goto out_copy;
    *out = copy;
    copy = NULL;
out_copy:
    upk_key_free(copy);
    return err;
}

upk_err upk_keyring_add(upk_keyring *ring, const upk_key *key)
{
    if (ring == NULL || key == NULL)
        return UPK_E_INVALID_ARG;
    if (upk_keyring_find(ring, key->id) != NULL)
        return UPK_E_EXISTS;
    if (ring->count >= UPK_KEYRING_MAX)
        return UPK_E_FIELD_TOO_LONG;
    upk_key *copy = NULL;
    upk_err err = key_public_copy(key, &copy);
    if (err != UPK_OK)
        return err;
    ring->keys[ring->count++] = copy;
    return UPK_OK;
}

const upk_key *upk_keyring_find(const upk_keyring *ring, const char *key_id)
{
    if (ring == NULL || key_id == NULL)
        return NULL;
    for (size_t i = 0; i < ring->count; i++) {
        if (strncmp(ring->keys[i]->id, key_id, UPK_KEY_ID_LEN + 1) == 0)
            return ring->keys[i];
    }
    return NULL;
}

size_t upk_keyring_count(const upk_keyring *ring)
{
    return ring == NULL ? 0 : ring->count;
}

void upk_keyring_free(upk_keyring *ring)
{
    if (ring == NULL)
        return;
    for (size_t i = 0; i < ring->count; i++)
        upk_key_free(ring->keys[i]);
    free(ring);
}
