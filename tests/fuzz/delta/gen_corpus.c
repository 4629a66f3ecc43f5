/* Writes the delta fuzz targets' seed corpora: valid patches at two zstd
 * levels against fuzz_old.h's image, plus broken ones, into argv[1]
 * (fuzz_delta_apply); the same patches' raw streams in fuzz_records.c's input
 * form into argv[2] (fuzz_delta_records). Run by hand when the format changes:
 *   cmake --build B --target delta_fuzz_gen_corpus && B/fuzz/delta_fuzz_gen_corpus
 * tests/fuzz/delta/corpus */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "fuzz_old.h"
#include "upkeep/delta.h"

static int put(const char *dir, const char *name, const uint8_t *data, size_t len)
{
    char path[512];
    FILE *f;
    int n = snprintf(path, sizeof(path), "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= sizeof(path))
        return -1;
    f = fopen(path, "wb");
    if (f == NULL)
        return -1;
    if (len > 0 && fwrite(data, 1, len, f) != len) {
        fclose(f);
        return -1;
    }
    return fclose(f) == 0 ? 0 : -1;
}

static const char *raw_dir;

/* Writes p's streams, decompressed, as a fuzz_delta_records input. */
static int put_raw(const char *name, const uint8_t *p, size_t plen)
{
    static uint8_t buf[65536];
    size_t n = 0, off = UPK_DELTA_HEADER_LEN;
    uint64_t new_size = 0;
    for (int b = 7; b >= 0; b--)
        new_size = (new_size << 8) | p[24 + b];
    buf[n++] = (uint8_t)new_size;
    buf[n++] = (uint8_t)(new_size >> 8);
    for (int i = 0; i < 5; i++) {
        uint64_t zlen = 0;
        for (int b = 7; b >= 0; b--)
            zlen = (zlen << 8) | p[104 + 8 * i + b];
        if (off + zlen > plen || n + 2 > sizeof(buf))
            return -1;
        size_t r = ZSTD_decompress(buf + n + 2, sizeof(buf) - n - 2, p + off, (size_t)zlen);
        if (ZSTD_isError(r) || r > 0xffff)
            return -1;
        buf[n] = (uint8_t)r;
        buf[n + 1] = (uint8_t)(r >> 8);
        n += 2 + r;
        off += (size_t)zlen;
    }
    return put(raw_dir, name, buf, n);
}

static int seed(const char *dir, const char *name, const uint8_t *old, const uint8_t *nw,
                size_t nlen, int level)
{
    upk_delta_options opts = {.level = level};
    uint8_t *p = NULL;
    size_t plen = 0;
    char nm[128];
    int rc;
    if (upk_delta_make_mem(old, FUZZ_OLD_LEN, nw, nlen, &opts, &p, &plen) != UPK_OK)
        return -1;
    snprintf(nm, sizeof(nm), "%s-%s", name, level == 19 ? "l19" : "l1");
    rc = put(dir, nm, p, plen);
    if (rc == 0 && raw_dir != NULL)
        rc = put_raw(nm, p, plen);
    if (rc == 0 && plen > 140) { /* a truncated and a bit-flipped variant */
        snprintf(nm, sizeof(nm), "%s-%s-trunc", name, level == 19 ? "l19" : "l1");
        rc = put(dir, nm, p, plen - 7);
        p[plen / 2] ^= 0x20;
        snprintf(nm, sizeof(nm), "%s-%s-flip", name, level == 19 ? "l19" : "l1");
        if (rc == 0)
            rc = put(dir, nm, p, plen);
    }
    free(p);
    return rc;
}

int main(int argc, char **argv)
{
    static uint8_t old[FUZZ_OLD_LEN], nw[FUZZ_OLD_LEN + 600];
    size_t n;
    int rc = 0;

    if (argc != 2 && argc != 3) {
        fprintf(stderr, "usage: %s APPLY_CORPUS_DIR [RECORDS_CORPUS_DIR]\n", argv[0]);
        return 2;
    }
    raw_dir = argc == 3 ? argv[2] : NULL;
    fuzz_old_fill(old);
    for (int level = 1; level <= 19 && rc == 0; level += 18) {
        rc |= seed(argv[1], "identical", old, old, FUZZ_OLD_LEN, level);
        memcpy(nw, old, FUZZ_OLD_LEN);
        for (int i = 0; i < 12; i++)
            nw[(size_t)i * 331 % FUZZ_OLD_LEN] ^= 0x5a;
        rc |= seed(argv[1], "edits", old, nw, FUZZ_OLD_LEN, level);
        /* insertion, deletion and a moved block */
        n = 0;
        memcpy(nw + n, old, 1000);
        n += 1000;
        memcpy(nw + n, "inserted text, new in this version", 34);
        n += 34;
        memcpy(nw + n, old + 1200, 2000);
        n += 2000;
        memcpy(nw + n, old + 100, 300);
        n += 300;
        memcpy(nw + n, old + 3200, FUZZ_OLD_LEN - 3200);
        n += FUZZ_OLD_LEN - 3200;
        rc |= seed(argv[1], "moves", old, nw, n, level);
        rc |= seed(argv[1], "empty-new", old, nw, 0, level);
        for (size_t i = 0; i < 700; i++)
            nw[i] = (uint8_t)(i * 37 + 11);
        rc |= seed(argv[1], "unrelated", old, nw, 700, level);
    }
    return rc == 0 ? 0 : 1;
}
