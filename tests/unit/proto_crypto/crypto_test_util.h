/* Helpers shared by the proto_crypto unit tests: reading test vectors from
 * tests/vectors (UPK_VECTORS_DIR) into exactly-sized heap buffers, so that an
 * over-read past len trips AddressSanitizer. Test code only. */
#ifndef UPKEEP_CRYPTO_TEST_UTIL_H
#define UPKEEP_CRYPTO_TEST_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef UPK_VECTORS_DIR
#error "UPK_VECTORS_DIR must be defined by the build"
#endif

#define CRYPTO_TEST_FILE_MAX (1024 * 1024)

/* Reads the whole file at path into a new buffer of exactly *len bytes (not
 * NUL-terminated; at least 1 byte allocated). Returns NULL on any failure.
 * Caller frees with free(). */
static inline char *ct_read_path(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    char *tmp = malloc(CRYPTO_TEST_FILE_MAX);
    char *out = NULL;
    size_t n = 0;
    if (tmp == NULL)
        goto out_file;
    n = fread(tmp, 1, CRYPTO_TEST_FILE_MAX, f);
    if (ferror(f) || n == CRYPTO_TEST_FILE_MAX)
        goto out_tmp;
    out = malloc(n > 0 ? n : 1);
    if (out == NULL)
        goto out_tmp;
    memcpy(out, tmp, n);
    *len = n;
out_tmp:
    free(tmp);
out_file:
    fclose(f);
    return out;
}

/* Reads UPK_VECTORS_DIR/name as ct_read_path does. */
static inline char *ct_read_vector(const char *name, size_t *len)
{
    char path[1024];
    int n = snprintf(path, sizeof(path), "%s/%s", UPK_VECTORS_DIR, name);
    if (n < 0 || (size_t)n >= sizeof(path))
        return NULL;
    return ct_read_path(path, len);
}

#ifdef UPKEEP_KEY_H
/* Every tampered form of a good signature sig of msg fails to verify under
 * key: any flipped message or signature byte, every truncation, a trailing
 * byte (sig has room for siglen + 1), an oversized length, and the
 * untouched pair under other. msg and sig are restored. Include cmocka and
 * upkeep/key.h first. */
static inline void ct_assert_tampering_fails(const upk_key *key, const upk_key *other, char *msg,
                                             size_t mlen, uint8_t *sig, size_t siglen)
{
    for (size_t i = 0; i < mlen; i++) {
        msg[i] ^= 0x01;
        assert_int_equal(upk_key_verify(key, msg, mlen, sig, siglen), UPK_E_SIG_INVALID);
        msg[i] ^= 0x01;
    }
    for (size_t i = 0; i < siglen; i++) {
        sig[i] ^= 0x80;
        assert_int_equal(upk_key_verify(key, msg, mlen, sig, siglen), UPK_E_SIG_INVALID);
        sig[i] ^= 0x80;
    }
    for (size_t n = 0; n < siglen; n++)
        assert_int_equal(upk_key_verify(key, msg, mlen, sig, n), UPK_E_SIG_INVALID);
    sig[siglen] = 0x00;
    assert_int_equal(upk_key_verify(key, msg, mlen, sig, siglen + 1), UPK_E_SIG_INVALID);
    assert_int_equal(upk_key_verify(key, msg, mlen, sig, UPK_SIG_MAX + 1), UPK_E_SIG_INVALID);
    assert_int_equal(upk_key_verify(other, msg, mlen, sig, siglen), UPK_E_SIG_INVALID);
}
#endif

#endif
