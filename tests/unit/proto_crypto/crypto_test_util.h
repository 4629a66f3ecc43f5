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

#endif
