/* Unit tests of libupkeep_delta: round trips on synthetic images in both
 * layouts, every rejection the decoder promises (base mismatch, output hash
 * mismatch, truncation, flipped bytes, hand-built hostile patches, zstd
 * bombs), cleanup of the output on failure, and the `upkeep delta` CLI. */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <zstd.h>

#include "upkeep/delta.h"
#include "upkeep/key.h"
#include "upkeep/manifest.h"

#ifdef UPK_TEST_UPKEEP_BIN
/* This source also builds delta_cli_test, which runs only the CLI case (the
 * library cases run in delta_test), so most functions go unused there. */
#pragma GCC diagnostic ignored "-Wunused-function"
#endif

/* ---- helpers */

typedef struct blob {
    uint8_t *data;
    size_t len;
} blob;

static uint64_t rng_state = 0x9e3779b97f4a7c15u;

static uint64_t rng(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    rng_state = x;
    return x;
}

static blob blob_new(size_t len)
{
    blob b = {malloc(len > 0 ? len : 1), len};
    assert_non_null(b.data);
    return b;
}

static blob blob_random(size_t len)
{
    blob b = blob_new(len);
    for (size_t i = 0; i < len; i++)
        b.data[i] = (uint8_t)rng();
    return b;
}

/* Something shaped like a binary: runs of structure and of noise. */
static blob blob_binary_like(size_t len)
{
    blob b = blob_new(len);
    for (size_t i = 0; i < len; i++) {
        if ((i / 4096) % 3 == 0)
            b.data[i] = (uint8_t)rng();
        else
            b.data[i] = (uint8_t)((i * 7) ^ (i >> 5));
    }
    return b;
}

static blob blob_copy(const blob *src)
{
    blob b = blob_new(src->len);
    if (src->len > 0)
        memcpy(b.data, src->data, src->len);
    return b;
}

static void blob_free(blob *b)
{
    free(b->data);
    b->data = NULL;
    b->len = 0;
}

typedef struct tmpdir {
    char path[256];
} tmpdir;

static void tmpdir_make(tmpdir *t)
{
    const char *base = getenv("TMPDIR");
    int n = snprintf(t->path, sizeof(t->path), "%s/upk-delta-XXXXXX", base ? base : "/tmp");
    assert_true(n > 0 && (size_t)n < sizeof(t->path));
    assert_non_null(mkdtemp(t->path));
}

static void tmpdir_file(const tmpdir *t, const char *name, char *out, size_t cap)
{
    int n = snprintf(out, cap, "%s/%s", t->path, name);
    assert_true(n > 0 && (size_t)n < cap);
}

static void tmpdir_remove(tmpdir *t)
{
    static const char *names[] = {"old", "new", "patch", "out", "bad", "stdout", "stderr"};
    char p[512];
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        tmpdir_file(t, names[i], p, sizeof(p));
        (void)unlink(p);
        int n = snprintf(p, sizeof(p), "%s/%s.tmp", t->path, names[i]);
        assert_true(n > 0 && (size_t)n < sizeof(p));
        (void)unlink(p);
    }
    assert_int_equal(rmdir(t->path), 0);
}

static void write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    if (len > 0)
        assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static blob read_file(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    blob b = blob_new((size_t)st.st_size);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    if (b.len > 0)
        assert_int_equal(fread(b.data, 1, b.len, f), b.len);
    assert_int_equal(fclose(f), 0);
    return b;
}

static bool file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static blob make_patch(const blob *old, const blob *nw, int level)
{
    upk_delta_options opts = {.level = level};
    blob p = {0};
    assert_int_equal(
        upk_delta_make_mem(old->data, old->len, nw->data, nw->len, &opts, &p.data, &p.len), UPK_OK);
    return p;
}

/* Applies in memory; returns the error, and on success checks the output. */
static upk_err apply_mem(const blob *old, const blob *patch, const blob *expect)
{
    size_t cap = expect->len + 64;
    uint8_t *out = malloc(cap);
    size_t out_len = 0;
    assert_non_null(out);
    upk_err err =
        upk_delta_apply_mem(old->data, old->len, patch->data, patch->len, out, cap, &out_len);
    if (err == UPK_OK) {
        assert_int_equal(out_len, expect->len);
        if (expect->len > 0)
            assert_memory_equal(out, expect->data, expect->len);
    }
    free(out);
    return err;
}

/* Applies through files in a fresh temp dir; checks the output on success
 * and that the output was removed on failure. */
static upk_err apply_files(const blob *old, const blob *patch, const blob *expect)
{
    tmpdir t;
    char po[512], pp[512], pout[512];
    tmpdir_make(&t);
    tmpdir_file(&t, "old", po, sizeof(po));
    tmpdir_file(&t, "patch", pp, sizeof(pp));
    tmpdir_file(&t, "out", pout, sizeof(pout));
    write_file(po, old->data, old->len);
    write_file(pp, patch->data, patch->len);
    upk_err err = upk_delta_apply(po, pp, pout);
    if (err == UPK_OK) {
        blob got = read_file(pout);
        assert_int_equal(got.len, expect->len);
        if (got.len > 0)
            assert_memory_equal(got.data, expect->data, got.len);
        blob_free(&got);
    } else {
        assert_false(file_exists(pout));
    }
    tmpdir_remove(&t);
    return err;
}

/* Full round trip: files (make_ex + apply) and memory, both layouts. */
static void round_trip(const blob *old, const blob *nw)
{
    for (int level = 3; level <= 19; level += 16) {
        blob p = make_patch(old, nw, level);
        upk_delta_info info;
        assert_int_equal(upk_delta_parse_info(p.data, p.len, &info), UPK_OK);
        assert_int_equal(info.old_size, old->len);
        assert_int_equal(info.new_size, nw->len);
        assert_int_equal(apply_mem(old, &p, nw), UPK_OK);
        assert_int_equal(apply_files(old, &p, nw), UPK_OK);
        blob_free(&p);
    }

    /* The file-based make gives a patch that applies too. */
    tmpdir t;
    char po[512], pn[512], pp[512], pout[512];
    tmpdir_make(&t);
    tmpdir_file(&t, "old", po, sizeof(po));
    tmpdir_file(&t, "new", pn, sizeof(pn));
    tmpdir_file(&t, "patch", pp, sizeof(pp));
    tmpdir_file(&t, "out", pout, sizeof(pout));
    write_file(po, old->data, old->len);
    write_file(pn, nw->data, nw->len);
    assert_int_equal(upk_delta_make(po, pn, pp), UPK_OK);
    upk_delta_info info;
    assert_int_equal(upk_delta_read_info(pp, &info), UPK_OK);
    assert_int_equal(info.new_size, nw->len);
    assert_int_equal(upk_delta_apply(po, pp, pout), UPK_OK);
    blob got = read_file(pout);
    assert_int_equal(got.len, nw->len);
    if (got.len > 0)
        assert_memory_equal(got.data, nw->data, got.len);
    blob_free(&got);
    tmpdir_remove(&t);
}

/* ---- round trips */

static void delta_round_trip_empty_old(void **state)
{
    (void)state;
    blob old = blob_new(0), nw = blob_random(5000);
    round_trip(&old, &nw);
    blob_free(&old);
    blob_free(&nw);
}

static void delta_round_trip_empty_new(void **state)
{
    (void)state;
    blob old = blob_random(5000), nw = blob_new(0);
    round_trip(&old, &nw);
    blob_free(&old);
    blob_free(&nw);
}

static void delta_round_trip_both_empty(void **state)
{
    (void)state;
    blob old = blob_new(0), nw = blob_new(0);
    round_trip(&old, &nw);
    blob_free(&old);
    blob_free(&nw);
}

static void delta_round_trip_identical_is_tiny(void **state)
{
    (void)state;
    blob old = blob_random(200000), nw = blob_copy(&old);
    round_trip(&old, &nw);
    blob p = make_patch(&old, &nw, 19);
    assert_true(p.len < 400);
    blob_free(&p);
    blob_free(&old);
    blob_free(&nw);
}

static void delta_round_trip_unrelated_random(void **state)
{
    (void)state;
    blob old = blob_random(30000), nw = blob_random(40000);
    round_trip(&old, &nw);
    blob_free(&old);
    blob_free(&nw);
}

static void delta_round_trip_small_edits_are_small(void **state)
{
    (void)state;
    blob old = blob_binary_like(300000), nw = blob_copy(&old);
    for (int i = 0; i < 100; i++) {
        size_t at = (size_t)(rng() % nw.len);
        nw.data[at] ^= 0x5a;
    }
    round_trip(&old, &nw);
    blob p = make_patch(&old, &nw, 19);
    assert_true(p.len < 3000); /* 100 scattered bytes of 300 kB */
    blob_free(&p);
    blob_free(&old);
    blob_free(&nw);
}

static void delta_round_trip_insertions_and_deletions(void **state)
{
    (void)state;
    blob old = blob_binary_like(200000);
    blob nw = blob_new(old.len + 5000);
    /* new = old[0..50k) + 3000 random + old[60k..150k) + old[0..2000) +
     * old[150k..200k) — an insertion, a deletion and a moved block. */
    size_t n = 0;
    memcpy(nw.data + n, old.data, 50000);
    n += 50000;
    for (int i = 0; i < 3000; i++)
        nw.data[n++] = (uint8_t)rng();
    memcpy(nw.data + n, old.data + 60000, 90000);
    n += 90000;
    memcpy(nw.data + n, old.data, 2000);
    n += 2000;
    memcpy(nw.data + n, old.data + 150000, 50000);
    n += 50000;
    nw.len = n;
    round_trip(&old, &nw);
    blob p = make_patch(&old, &nw, 19);
    assert_true(p.len < 3000 + 1500);
    blob_free(&p);
    blob_free(&old);
    blob_free(&nw);
}

static void delta_round_trip_large_few_changes(void **state)
{
    (void)state;
    blob old = blob_random(8u << 20), nw = blob_copy(&old);
    for (int i = 0; i < 20; i++) {
        size_t at = (size_t)(rng() % (nw.len - 100));
        for (int k = 0; k < 100; k++)
            nw.data[at + (size_t)k] = (uint8_t)rng();
    }
    blob p = make_patch(&old, &nw, 19);
    assert_true(p.len < 8000);
    assert_int_equal(apply_mem(&old, &p, &nw), UPK_OK);
    assert_int_equal(apply_files(&old, &p, &nw), UPK_OK);
    blob_free(&p);
    blob_free(&old);
    blob_free(&nw);
}

/* ---- header-level rejections */

static void delta_apply_rejects_base_mismatch(void **state)
{
    (void)state;
    blob old = blob_binary_like(50000), nw = blob_copy(&old);
    nw.data[100] ^= 1;
    blob p = make_patch(&old, &nw, 19);

    blob other = blob_copy(&old); /* same size, different content */
    other.data[40000] ^= 1;
    assert_int_equal(apply_mem(&other, &p, &nw), UPK_E_DELTA_BASE_MISMATCH);
    assert_int_equal(apply_files(&other, &p, &nw), UPK_E_DELTA_BASE_MISMATCH);

    blob shorter = blob_copy(&old); /* different size */
    shorter.len -= 1;
    assert_int_equal(apply_mem(&shorter, &p, &nw), UPK_E_DELTA_BASE_MISMATCH);
    assert_int_equal(apply_files(&shorter, &p, &nw), UPK_E_DELTA_BASE_MISMATCH);

    blob_free(&shorter);
    blob_free(&other);
    blob_free(&p);
    blob_free(&old);
    blob_free(&nw);
}

static void delta_apply_rejects_wrong_new_hash(void **state)
{
    (void)state;
    blob old = blob_binary_like(50000), nw = blob_copy(&old);
    nw.data[100] ^= 1;
    for (int level = 3; level <= 19; level += 16) {
        blob p = make_patch(&old, &nw, level);
        p.data[64 + 5] ^= 0x80; /* new_sha256 */
        assert_int_equal(apply_mem(&old, &p, &nw), UPK_E_HASH_MISMATCH);
        assert_int_equal(apply_files(&old, &p, &nw), UPK_E_HASH_MISMATCH);
        blob_free(&p);
    }
    blob_free(&old);
    blob_free(&nw);
}

static uint64_t hdr64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static void hdr_put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void delta_apply_rejects_truncation(void **state)
{
    (void)state;
    blob old = blob_binary_like(100000), nw = blob_copy(&old);
    for (int i = 0; i < 30; i++)
        nw.data[rng() % nw.len] ^= 0x11;
    memcpy(nw.data + 777, "some new literal bytes", 22);
    for (int level = 3; level <= 19; level += 16) {
        blob p = make_patch(&old, &nw, level);
        /* The patch cut at every 1/16 of its length. */
        for (int k = 0; k < 16; k++) {
            blob t = blob_copy(&p);
            t.len = p.len * (size_t)k / 16;
            assert_int_equal(apply_mem(&old, &t, &nw), UPK_E_DELTA_CORRUPT);
            assert_int_equal(apply_files(&old, &t, &nw), UPK_E_DELTA_CORRUPT);
            blob_free(&t);
        }
        /* Each stream cut at every 1/16 of its length, with the header's
         * length fixed to match, so that the stream decoder itself meets
         * the truncation. */
        size_t start = UPK_DELTA_HEADER_LEN;
        for (int s = 0; s < 5; s++) {
            size_t slen = (size_t)hdr64(p.data + 104 + 8 * s);
            for (int k = 1; k < 16; k++) {
                size_t cut = slen * (size_t)k / 16;
                if (cut == 0)
                    continue;
                blob t = blob_copy(&p);
                memmove(t.data + start + slen - cut, t.data + start + slen, p.len - (start + slen));
                t.len = p.len - cut;
                hdr_put64(t.data + 104 + 8 * s, slen - cut);
                assert_int_equal(apply_mem(&old, &t, &nw), UPK_E_DELTA_CORRUPT);
                if (k == 8)
                    assert_int_equal(apply_files(&old, &t, &nw), UPK_E_DELTA_CORRUPT);
                blob_free(&t);
            }
            start += slen;
        }
        blob_free(&p);
    }
    blob_free(&old);
    blob_free(&nw);
}

/* A flipped bit anywhere either gives a named error or (where zstd ignores
 * the bit) exactly the right image; never anything else. */
static void delta_apply_flipped_bytes_never_yield_wrong_output(void **state)
{
    (void)state;
    blob old = blob_binary_like(20000), nw = blob_copy(&old);
    for (int i = 0; i < 10; i++)
        nw.data[rng() % nw.len] ^= 0x42;
    memcpy(nw.data + 5000, "some literal bytes that are new", 31);
    for (int level = 3; level <= 19; level += 16) {
        blob p = make_patch(&old, &nw, level);
        for (size_t i = 0; i < p.len; i++) {
            for (int bit = 0; bit < 8; bit += 3) {
                p.data[i] ^= (uint8_t)(1u << bit);
                upk_err err = apply_mem(&old, &p, &nw); /* checks output on OK */
                assert_true(err == UPK_OK || err == UPK_E_DELTA_CORRUPT ||
                            err == UPK_E_DELTA_BASE_MISMATCH || err == UPK_E_HASH_MISMATCH ||
                            err == UPK_E_BUFFER_TOO_SMALL); /* new_size flipped upwards */
                /* Every header field but the window cap is exact. */
                if (i < UPK_DELTA_HEADER_LEN && (i < 96 || i >= 100))
                    assert_int_not_equal(err, UPK_OK);
                p.data[i] ^= (uint8_t)(1u << bit);
            }
        }
        /* Spot-check the file decoder on a few positions too. */
        for (size_t i = UPK_DELTA_HEADER_LEN; i < p.len; i += p.len / 7 + 1) {
            p.data[i] ^= 0xff;
            upk_err err = apply_files(&old, &p, &nw);
            assert_true(err == UPK_OK || err == UPK_E_DELTA_CORRUPT || err == UPK_E_HASH_MISMATCH);
            p.data[i] ^= 0xff;
        }
        blob_free(&p);
    }
    blob_free(&old);
    blob_free(&nw);
}

/* ---- hand-built hostile patches */

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

enum { S_CTRL, S_GAPS, S_LENS, S_VALS, S_EXTRA, S_COUNT };
#define STREAM_OFF(i) (104 + 8 * (i)) /* header offset of stream i's length */

/* The raw (uncompressed) content of the five streams of a hand-built patch. */
typedef struct raw5 {
    uint8_t data[S_COUNT][8192];
    size_t len[S_COUNT];
} raw5;

static void raw_bytes(raw5 *r, int s, const void *data, size_t len)
{
    assert_true(r->len[s] + len <= sizeof(r->data[s]));
    memcpy(r->data[s] + r->len[s], data, len);
    r->len[s] += len;
}

static void raw_varint(raw5 *r, int s, uint64_t v)
{
    uint8_t b[10];
    size_t n = 0;
    do {
        uint8_t x = (uint8_t)(v & 0x7f);
        v >>= 7;
        b[n++] = x | (v ? 0x80 : 0);
    } while (v);
    raw_bytes(r, s, b, n);
}

static uint64_t zigzag(int64_t s)
{
    return s < 0 ? ((uint64_t)(-(s + 1)) << 1) | 1 : (uint64_t)s << 1;
}

static void raw_record(raw5 *r, int64_t seek, uint64_t dlen, uint64_t elen)
{
    raw_varint(r, S_CTRL, zigzag(seek));
    raw_varint(r, S_CTRL, dlen);
    raw_varint(r, S_CTRL, elen);
}

/* Appends diff bytes in the sparse encoding, written here independently of
 * the encoder: (zeros before, run length) pairs and the non-zero bytes. */
static void raw_diff(raw5 *r, const uint8_t *d, size_t n)
{
    size_t i = 0, last = 0;
    while (i < n) {
        if (d[i] == 0) {
            i++;
            continue;
        }
        size_t j = i;
        while (j < n && d[j] != 0)
            j++;
        raw_varint(r, S_GAPS, i - last);
        raw_varint(r, S_LENS, j - i);
        raw_bytes(r, S_VALS, d + i, j - i);
        last = j;
        i = j;
    }
}

/* Builds a patch from raw streams (each compressed here as one zstd frame,
 * unless frames[i] gives the frame itself). */
static blob hostile(const blob *old, uint64_t new_size, const uint8_t nsha[32], const raw5 *r,
                    const blob *frames)
{
    size_t cap = UPK_DELTA_HEADER_LEN;
    for (int i = 0; i < S_COUNT; i++)
        cap += frames && frames[i].data ? frames[i].len : ZSTD_compressBound(r->len[i]);
    blob p = blob_new(cap);
    memset(p.data, 0, UPK_DELTA_HEADER_LEN);
    memcpy(p.data, "UPKDELTA", 8);
    put32(p.data + 8, 1);
    put64(p.data + 16, old->len);
    put64(p.data + 24, new_size);
    upk_sha256_buf(old->data, old->len, p.data + 32);
    memcpy(p.data + 64, nsha, 32);
    put32(p.data + 96, 20);
    size_t off = UPK_DELTA_HEADER_LEN;
    for (int i = 0; i < S_COUNT; i++) {
        size_t n;
        if (frames && frames[i].data) {
            memcpy(p.data + off, frames[i].data, frames[i].len);
            n = frames[i].len;
        } else {
            n = ZSTD_compress(p.data + off, cap - off, r->data[i], r->len[i], 3);
            assert_false(ZSTD_isError(n));
        }
        put64(p.data + STREAM_OFF(i), n);
        off += n;
    }
    p.len = off;
    return p;
}

/* Applies p to old expecting err, in memory and through files. */
static void expect_rejected(const blob *old, const blob *p, upk_err want)
{
    blob none = blob_new(0);
    size_t cap = 1u << 20;
    uint8_t *out = malloc(cap);
    size_t out_len = 0;
    assert_non_null(out);
    assert_int_equal(upk_delta_apply_mem(old->data, old->len, p->data, p->len, out, cap, &out_len),
                     want);
    free(out);
    assert_int_equal(apply_files(old, p, &none), want);
    blob_free(&none);
}

static void expect_raw_rejected(const blob *old, uint64_t new_size, const raw5 *r)
{
    uint8_t nsha[32] = {0};
    blob p = hostile(old, new_size, nsha, r, NULL);
    expect_rejected(old, &p, UPK_E_DELTA_CORRUPT);
    blob_free(&p);
}

static void delta_apply_rejects_hostile_records(void **state)
{
    (void)state;
    blob old = blob_random(1000);
    uint8_t ones[64];
    raw5 *r = calloc(1, sizeof(*r));
    assert_non_null(r);
    memset(ones, 1, sizeof(ones));

    /* diff beyond the end of the old image */
    memset(r, 0, sizeof(*r));
    raw_record(r, 900, 200, 0);
    expect_raw_rejected(&old, 200, r);

    /* seek before the start of the old image */
    memset(r, 0, sizeof(*r));
    raw_record(r, -1, 10, 0);
    expect_raw_rejected(&old, 10, r);

    /* seek past the end of the old image (even with nothing to copy) */
    memset(r, 0, sizeof(*r));
    raw_record(r, 1001, 0, 1);
    raw_bytes(r, S_EXTRA, "x", 1);
    expect_raw_rejected(&old, 1, r);

    /* the most negative seek (zigzag of INT64_MIN) */
    memset(r, 0, sizeof(*r));
    raw_varint(r, S_CTRL, UINT64_MAX);
    raw_varint(r, S_CTRL, 1);
    raw_varint(r, S_CTRL, 0);
    expect_raw_rejected(&old, 1, r);

    /* diff longer than the new image */
    memset(r, 0, sizeof(*r));
    raw_record(r, 0, 20, 0);
    expect_raw_rejected(&old, 10, r);

    /* diff + extra overflowing 64 bits */
    memset(r, 0, sizeof(*r));
    raw_record(r, 0, 5, UINT64_MAX - 2);
    expect_raw_rejected(&old, 10, r);

    /* records that make no progress (an endless loop otherwise) */
    memset(r, 0, sizeof(*r));
    for (int i = 0; i < 50; i++)
        raw_record(r, 0, 0, 0);
    expect_raw_rejected(&old, 10, r);

    /* a varint longer than 64 bits */
    memset(r, 0, sizeof(*r));
    memset(r->data[S_CTRL], 0xff, 11);
    r->data[S_CTRL][11] = 0x01;
    r->len[S_CTRL] = 12;
    expect_raw_rejected(&old, 10, r);

    /* the control stream ends before the records fill the new image */
    memset(r, 0, sizeof(*r));
    raw_record(r, 0, 0, 5);
    raw_bytes(r, S_EXTRA, "abcde", 5);
    expect_raw_rejected(&old, 10, r);

    /* extra bytes left over after the last record */
    memset(r, 0, sizeof(*r));
    raw_record(r, 0, 0, 5);
    raw_bytes(r, S_EXTRA, "abcdeXYZ", 8);
    expect_raw_rejected(&old, 5, r);

    /* a control record left over */
    memset(r, 0, sizeof(*r));
    raw_record(r, 0, 0, 5);
    raw_record(r, 0, 0, 5);
    raw_bytes(r, S_EXTRA, "abcde", 5);
    expect_raw_rejected(&old, 5, r);

    /* sparse diff: a run of length 0 */
    memset(r, 0, sizeof(*r));
    raw_record(r, 0, 10, 0);
    raw_varint(r, S_GAPS, 2);
    raw_varint(r, S_LENS, 0);
    expect_raw_rejected(&old, 10, r);

    /* sparse diff: a second run with no zeros before it */
    memset(r, 0, sizeof(*r));
    raw_record(r, 0, 10, 0);
    raw_varint(r, S_GAPS, 1);
    raw_varint(r, S_LENS, 2);
    raw_varint(r, S_GAPS, 0);
    raw_varint(r, S_LENS, 2);
    raw_bytes(r, S_VALS, ones, 4);
    expect_raw_rejected(&old, 10, r);

    /* sparse diff: a zero byte inside a non-zero run */
    memset(r, 0, sizeof(*r));
    raw_record(r, 0, 10, 0);
    raw_varint(r, S_GAPS, 1);
    raw_varint(r, S_LENS, 2);
    raw_bytes(r, S_VALS, "\x01\x00", 2);
    expect_raw_rejected(&old, 10, r);

    /* sparse diff: a gap and a run longer than the new image */
    memset(r, 0, sizeof(*r));
    raw_record(r, 0, 10, 0);
    raw_varint(r, S_GAPS, UINT64_MAX);
    raw_varint(r, S_LENS, 1);
    raw_bytes(r, S_VALS, ones, 1);
    expect_raw_rejected(&old, 10, r);
    memset(r, 0, sizeof(*r));
    raw_record(r, 0, 10, 0);
    raw_varint(r, S_GAPS, 0);
    raw_varint(r, S_LENS, UINT64_MAX);
    raw_bytes(r, S_VALS, ones, 10);
    expect_raw_rejected(&old, 10, r);

    /* sparse diff: a gap without its run length, and runs never used */
    memset(r, 0, sizeof(*r));
    raw_record(r, 0, 10, 0);
    raw_varint(r, S_GAPS, 3);
    expect_raw_rejected(&old, 10, r);
    memset(r, 0, sizeof(*r));
    raw_record(r, 0, 10, 0);
    raw_varint(r, S_GAPS, 3);
    raw_varint(r, S_LENS, 1);
    raw_varint(r, S_GAPS, 20);
    raw_varint(r, S_LENS, 1);
    raw_bytes(r, S_VALS, ones, 2);
    expect_raw_rejected(&old, 10, r);

    /* sparse diff: fewer non-zero bytes than the runs announce */
    memset(r, 0, sizeof(*r));
    raw_record(r, 0, 10, 0);
    raw_varint(r, S_GAPS, 3);
    raw_varint(r, S_LENS, 4);
    raw_bytes(r, S_VALS, ones, 2);
    expect_raw_rejected(&old, 10, r);

    /* a stream that is not zstd at all */
    memset(r, 0, sizeof(*r));
    raw_record(r, 0, 0, 5);
    raw_bytes(r, S_EXTRA, "abcde", 5);
    blob frames[S_COUNT] = {{0}};
    frames[S_VALS] = (blob){(uint8_t *)"this is not a zstd frame", 24};
    uint8_t nsha[32] = {0};
    blob p = hostile(&old, 5, nsha, r, frames);
    expect_rejected(&old, &p, UPK_E_DELTA_CORRUPT);
    blob_free(&p);

    /* ... and valid records, built the same way with the right hash, are
     * accepted, so the rejections above are for the stated reasons. */
    memset(r, 0, sizeof(*r));
    uint8_t diff[12] = {0, 0, 3, 4, 0, 0, 0, 9, 0, 0, 0, 0};
    uint8_t want[17];
    raw_record(r, 10, 8, 5);
    raw_record(r, -3, 4, 0);
    raw_diff(r, diff, sizeof(diff));
    raw_bytes(r, S_EXTRA, "abcde", 5);
    for (int i = 0; i < 8; i++)
        want[i] = (uint8_t)(old.data[10 + i] + diff[i]);
    memcpy(want + 8, "abcde", 5);
    for (int i = 0; i < 4; i++)
        want[13 + i] = (uint8_t)(old.data[15 + i] + diff[8 + i]);
    uint8_t wsha[32];
    upk_sha256_buf(want, sizeof(want), wsha);
    p = hostile(&old, sizeof(want), wsha, r, NULL);
    blob expect = {want, sizeof(want)};
    assert_int_equal(apply_mem(&old, &p, &expect), UPK_OK);
    assert_int_equal(apply_files(&old, &p, &expect), UPK_OK);
    blob_free(&p);

    free(r);
    blob_free(&old);
}

static void delta_apply_rejects_hostile_header(void **state)
{
    (void)state;
    blob old = blob_random(1000), nw = blob_copy(&old);
    nw.data[3] ^= 1;
    blob good = make_patch(&old, &nw, 19);
    struct {
        size_t off;
        uint64_t val;
        int width;
    } cases[] = {
        {0, 0x55504b44454c5441u, 8},      /* magic "UPKDELTA" byte-swapped */
        {8, 2, 4},                        /* version */
        {12, 1, 4},                       /* flags */
        {16, UINT64_MAX, 8},              /* old size overflow */
        {24, UINT64_MAX, 8},              /* new size overflow */
        {24, (UINT64_C(1) << 40) + 1, 8}, /* new size above the cap */
        {96, 30, 4},                      /* window above the cap */
        {96, 5, 4},                       /* window below zstd's minimum */
        {100, 1, 4},                      /* reserved */
        {104, UINT64_MAX, 8},             /* stream lengths that would wrap */
        {112, UINT64_MAX - 100, 8},
        {136, UINT64_C(1) << 41, 8},
        {128, 0, 8}, /* lengths not matching the file */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        blob p = blob_copy(&good);
        if (cases[i].width == 8)
            put64(p.data + cases[i].off, cases[i].val);
        else
            put32(p.data + cases[i].off, (uint32_t)cases[i].val);
        expect_rejected(&old, &p, UPK_E_DELTA_CORRUPT);
        blob_free(&p);
    }
    /* Shorter than a header. */
    upk_delta_info info;
    assert_int_equal(upk_delta_parse_info(good.data, UPK_DELTA_HEADER_LEN - 1, &info),
                     UPK_E_DELTA_CORRUPT);
    blob_free(&good);
    blob_free(&old);
    blob_free(&nw);
}

/* A frame declaring a window larger than the cap is a zstd bomb: refused
 * before zstd allocates it. The same frame with a window within the cap is
 * accepted, so the window is the reason. */
static blob windowed_frame(const uint8_t *src, size_t len, int window_log)
{
    ZSTD_CCtx *c = ZSTD_createCCtx();
    assert_non_null(c);
    assert_false(ZSTD_isError(ZSTD_CCtx_setParameter(c, ZSTD_c_windowLog, window_log)));
    assert_false(ZSTD_isError(ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, 1)));
    blob f = blob_new(ZSTD_compressBound(len));
    ZSTD_outBuffer ob = {f.data, f.len, 0};
    ZSTD_inBuffer ib = {src, len, 0}; /* size not pledged: the window stays as set */
    assert_false(ZSTD_isError(ZSTD_compressStream2(c, &ob, &ib, ZSTD_e_continue)));
    ZSTD_inBuffer empty = {NULL, 0, 0};
    size_t left;
    do {
        left = ZSTD_compressStream2(c, &ob, &empty, ZSTD_e_end);
        assert_false(ZSTD_isError(left));
    } while (left != 0);
    ZSTD_freeCCtx(c);
    f.len = ob.pos;
    assert_true(ZSTD_getFrameContentSize(f.data, f.len) == ZSTD_CONTENTSIZE_UNKNOWN);
    return f;
}

static void delta_apply_rejects_zstd_bomb(void **state)
{
    (void)state;
    blob old = blob_random(1000);
    const size_t extra = 5000;
    uint8_t *zeros = calloc(1, extra);
    raw5 *r = calloc(1, sizeof(*r));
    assert_non_null(zeros);
    assert_non_null(r);
    raw_record(r, 0, 0, extra);
    uint8_t nsha[32];
    upk_sha256_buf(zeros, extra, nsha);
    blob want = {zeros, extra};
    blob frames[S_COUNT] = {{0}};

    frames[S_EXTRA] = windowed_frame(zeros, extra, 27);
    blob p = hostile(&old, extra, nsha, r, frames);
    p.data[96] = 23; /* the header's cap is the format's; the frame wants 2^27 */
    expect_rejected(&old, &p, UPK_E_DELTA_CORRUPT);
    blob_free(&p);
    blob_free(&frames[S_EXTRA]);

    frames[S_EXTRA] = windowed_frame(zeros, extra, 20);
    p = hostile(&old, extra, nsha, r, frames);
    p.data[96] = 23;
    assert_int_equal(apply_mem(&old, &p, &want), UPK_OK);
    p.data[96] = 19; /* a header may lower the cap below what its frame needs */
    expect_rejected(&old, &p, UPK_E_DELTA_CORRUPT);
    blob_free(&p);
    blob_free(&frames[S_EXTRA]);

    free(r);
    free(zeros);
    blob_free(&old);
}

/* ---- API edges */

static void delta_apply_removes_output_on_failure(void **state)
{
    (void)state;
    tmpdir t;
    char po[512], pp[512], pout[512];
    blob old = blob_random(4000), nw = blob_copy(&old);
    nw.data[7] ^= 1;
    blob p = make_patch(&old, &nw, 19);
    p.data[p.len - 3] ^= 0x10; /* corrupt the stream */
    tmpdir_make(&t);
    tmpdir_file(&t, "old", po, sizeof(po));
    tmpdir_file(&t, "patch", pp, sizeof(pp));
    tmpdir_file(&t, "out", pout, sizeof(pout));
    write_file(po, old.data, old.len);
    write_file(pp, p.data, p.len);
    write_file(pout, "previous content", 16);
    upk_err err = upk_delta_apply(po, pp, pout);
    assert_true(err == UPK_E_DELTA_CORRUPT || err == UPK_E_HASH_MISMATCH);
    assert_false(file_exists(pout));
    /* Missing inputs: named errors, no output. */
    assert_int_equal(upk_delta_apply("/nonexistent/old", pp, pout), UPK_E_NOT_FOUND);
    assert_false(file_exists(pout));
    assert_int_equal(upk_delta_apply(po, "/nonexistent/patch", pout), UPK_E_NOT_FOUND);
    assert_false(file_exists(pout));
    tmpdir_remove(&t);
    blob_free(&p);
    blob_free(&old);
    blob_free(&nw);
}

static void delta_apply_refuses_to_overwrite_its_base(void **state)
{
    (void)state;
    tmpdir t;
    char po[512], pp[512];
    blob old = blob_random(4000), nw = blob_copy(&old);
    nw.data[7] ^= 1;
    blob p = make_patch(&old, &nw, 19);
    tmpdir_make(&t);
    tmpdir_file(&t, "old", po, sizeof(po));
    tmpdir_file(&t, "patch", pp, sizeof(pp));
    write_file(po, old.data, old.len);
    write_file(pp, p.data, p.len);
    assert_int_equal(upk_delta_apply(po, pp, po), UPK_E_INVALID_ARG);
    blob still = read_file(po);
    assert_int_equal(still.len, old.len);
    assert_memory_equal(still.data, old.data, old.len);
    blob_free(&still);
    tmpdir_remove(&t);
    blob_free(&p);
    blob_free(&old);
    blob_free(&nw);
}

static void delta_api_rejects_bad_arguments(void **state)
{
    (void)state;
    upk_delta_info info;
    uint8_t *pp = NULL;
    size_t plen = 0, out_len = 0;
    uint8_t buf[4];
    assert_int_equal(upk_delta_make(NULL, "a", "b"), UPK_E_INVALID_ARG);
    assert_int_equal(upk_delta_apply("a", NULL, "b"), UPK_E_INVALID_ARG);
    assert_int_equal(upk_delta_read_info(NULL, &info), UPK_E_INVALID_ARG);
    assert_int_equal(upk_delta_read_info("/nonexistent/patch", &info), UPK_E_NOT_FOUND);
    assert_int_equal(upk_delta_make_mem(NULL, 1, buf, 1, NULL, &pp, &plen), UPK_E_INVALID_ARG);
    upk_delta_options bad = {.level = 23};
    assert_int_equal(upk_delta_make_mem(buf, 1, buf, 1, &bad, &pp, &plen), UPK_E_INVALID_ARG);
    assert_int_equal(
        upk_delta_make_mem(buf, 1, buf, (size_t)UPK_DELTA_MAX_MAKE_SIZE + 1, NULL, &pp, &plen),
        UPK_E_FIELD_RANGE);
    assert_null(pp);
    assert_int_equal(upk_delta_make_ex("/nonexistent/old", "/nonexistent/new", "/tmp/x", NULL),
                     UPK_E_NOT_FOUND);
    assert_int_equal(upk_delta_apply_mem(buf, 4, NULL, 0, buf, 4, &out_len), UPK_E_INVALID_ARG);

    /* An output buffer too small for the header's new size. */
    blob old = blob_random(100), nw = blob_random(100);
    blob p = make_patch(&old, &nw, 19);
    assert_int_equal(
        upk_delta_apply_mem(old.data, old.len, p.data, p.len, buf, sizeof(buf), &out_len),
        UPK_E_BUFFER_TOO_SMALL);
    /* A patch file that is not a regular file, and one that is garbage. */
    assert_int_equal(upk_delta_read_info("/", &info), UPK_E_DELTA_CORRUPT);
    tmpdir t;
    char pb[512];
    tmpdir_make(&t);
    tmpdir_file(&t, "bad", pb, sizeof(pb));
    write_file(pb, "garbage", 7);
    assert_int_equal(upk_delta_read_info(pb, &info), UPK_E_DELTA_CORRUPT);
    tmpdir_remove(&t);
    blob_free(&p);
    blob_free(&old);
    blob_free(&nw);
}

/* ---- CLI */

#ifdef UPK_TEST_UPKEEP_BIN
/* Runs the upkeep binary with args, stdout to out_path; returns its exit
 * status (or -1 when it did not exit normally). */
static int run_cli(const char *out_path, const char *const *args)
{
    char *argv[32];
    size_t n = 0;
    argv[n++] = (char *)UPK_TEST_UPKEEP_BIN;
    for (; args[n - 1] != NULL && n < 31; n++)
        argv[n] = (char *)args[n - 1];
    argv[n] = NULL;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0)
            _exit(127);
        execv(argv[0], argv);
        _exit(127);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static bool output_contains(const char *path, const char *needle)
{
    blob b = read_file(path);
    bool found = false;
    uint8_t *grown = realloc(b.data, b.len + 1);
    assert_non_null(grown);
    b.data = grown;
    b.data[b.len] = '\0';
    found = strstr((char *)b.data, needle) != NULL;
    blob_free(&b);
    return found;
}

static void delta_cli_make_apply_info(void **state)
{
    (void)state;
    tmpdir t;
    char po[512], pn[512], pp[512], pout[512], ps[512], pb[512];
    blob old = blob_binary_like(100000), nw = blob_copy(&old);
    for (int i = 0; i < 20; i++)
        nw.data[rng() % nw.len] ^= 0x33;
    tmpdir_make(&t);
    tmpdir_file(&t, "old", po, sizeof(po));
    tmpdir_file(&t, "new", pn, sizeof(pn));
    tmpdir_file(&t, "patch", pp, sizeof(pp));
    tmpdir_file(&t, "out", pout, sizeof(pout));
    tmpdir_file(&t, "stdout", ps, sizeof(ps));
    tmpdir_file(&t, "bad", pb, sizeof(pb));
    write_file(po, old.data, old.len);
    write_file(pn, nw.data, nw.len);

    const char *make[] = {"delta", "make", po, pn, pp, NULL};
    assert_int_equal(run_cli(ps, make), 0);
    assert_true(output_contains(ps, "% of new"));
    const char *apply[] = {"delta", "apply", po, pp, pout, NULL};
    assert_int_equal(run_cli(ps, apply), 0);
    blob got = read_file(pout);
    assert_int_equal(got.len, nw.len);
    assert_memory_equal(got.data, nw.data, nw.len);
    blob_free(&got);
    const char *info[] = {"delta", "info", pp, NULL};
    assert_int_equal(run_cli(ps, info), 0);
    assert_true(output_contains(ps, "new size   100000"));

    /* Another level. */
    const char *make_level[] = {"delta", "make", "--level", "3", po, pn, pp, NULL};
    assert_int_equal(run_cli(ps, make_level), 0);
    assert_int_equal(run_cli(ps, apply), 0);

    /* Failure: the wrong base gives exit 1, a named error and no output. */
    const char *wrong_base[] = {"delta", "apply", pn, pp, pout, NULL};
    assert_int_equal(run_cli(ps, wrong_base), 1);
    assert_true(output_contains(ps, "DELTA_BASE_MISMATCH"));
    assert_false(file_exists(pout));
    write_file(pb, "garbage", 7);
    const char *bad_patch[] = {"delta", "apply", po, pb, pout, NULL};
    assert_int_equal(run_cli(ps, bad_patch), 1);
    assert_true(output_contains(ps, "DELTA_CORRUPT"));
    const char *bad_info[] = {"delta", "info", pb, NULL};
    assert_int_equal(run_cli(ps, bad_info), 1);

    /* Usage errors: exit 2. */
    const char *none[] = {"delta", NULL};
    assert_int_equal(run_cli(ps, none), 2);
    const char *unknown[] = {"delta", "frobnicate", NULL};
    assert_int_equal(run_cli(ps, unknown), 2);
    const char *few[] = {"delta", "make", po, pn, NULL};
    assert_int_equal(run_cli(ps, few), 2);
    const char *bad_level[] = {"delta", "make", "--level", "99", po, pn, pp, NULL};
    assert_int_equal(run_cli(ps, bad_level), 2);
    const char *help[] = {"delta", "--help", NULL};
    assert_int_equal(run_cli(ps, help), 0);
    assert_true(output_contains(ps, "usage: upkeep delta"));

    tmpdir_remove(&t);
    blob_free(&old);
    blob_free(&nw);
}

/* `upkeep release create NEW --delta-from OLD` makes the patch itself and
 * signs a delta release whose manifest names OLD as base and NEW as target. */
static void release_create_delta_from_signs_a_delta_release(void **state)
{
    (void)state;
    tmpdir t;
    char po[512], pn[512], ps[512], pk[512], pm[600], ppatch[600], pout[512];
    blob old = blob_binary_like(60000), nw = blob_copy(&old);
    for (int i = 0; i < 10; i++)
        nw.data[rng() % nw.len] ^= 0x5a;
    tmpdir_make(&t);
    tmpdir_file(&t, "old", po, sizeof(po));
    tmpdir_file(&t, "new", pn, sizeof(pn));
    tmpdir_file(&t, "stdout", ps, sizeof(ps));
    tmpdir_file(&t, "bad", pk, sizeof(pk)); /* the release key */
    tmpdir_file(&t, "out", pout, sizeof(pout));
    write_file(po, old.data, old.len);
    write_file(pn, nw.data, nw.len);
    upk_key *key = NULL;
    char *pem = NULL;
    assert_int_equal(upk_key_generate(&key), UPK_OK);
    assert_int_equal(upk_key_private_pem(key, &pem), UPK_OK);
    write_file(pk, pem, strlen(pem));
    free(pem);
    upk_key_free(key);

    const char *create[] = {"release", "create",
                            pn,        "--name",
                            "fw",      "--version",
                            "2.0",     "--security-version",
                            "2",       "--hw",
                            "rev-a",   "--module",
                            "file",    "--expires",
                            "30d",     "--key",
                            pk,        "--delta-from",
                            po,        "--out",
                            t.path,    NULL};
    assert_int_equal(run_cli(ps, create), 0);
    assert_true(output_contains(ps, "delta"));
    int n = snprintf(pm, sizeof(pm), "%s/fw-2.0.manifest.json", t.path);
    assert_true(n > 0 && (size_t)n < sizeof(pm));
    n = snprintf(ppatch, sizeof(ppatch), "%s/fw-2.0.patch", t.path);
    assert_true(n > 0 && (size_t)n < sizeof(ppatch));
    blob mj = read_file(pm);
    upk_manifest m;
    assert_int_equal(upk_manifest_decode((const char *)mj.data, mj.len, &m), UPK_OK);
    uint8_t h_old[UPK_SHA256_LEN], h_new[UPK_SHA256_LEN], h_patch[UPK_SHA256_LEN];
    upk_sha256_buf(old.data, old.len, h_old);
    upk_sha256_buf(nw.data, nw.len, h_new);
    blob patch = read_file(ppatch);
    upk_sha256_buf(patch.data, patch.len, h_patch);
    assert_int_equal(m.type, UPK_RELEASE_DELTA);
    assert_memory_equal(m.base_sha256, h_old, UPK_SHA256_LEN);
    assert_memory_equal(m.target_sha256, h_new, UPK_SHA256_LEN);
    assert_int_equal(m.target_size, nw.len);
    assert_memory_equal(m.sha256, h_patch, UPK_SHA256_LEN);
    assert_int_equal(m.size, patch.len);
    assert_true(patch.len < nw.len / 4);
    /* The patch it released rebuilds the new image from the old one. */
    assert_int_equal(upk_delta_apply(po, ppatch, pout), UPK_OK);
    blob got = read_file(pout);
    assert_int_equal(got.len, nw.len);
    assert_memory_equal(got.data, nw.data, nw.len);

    /* --delta with --delta-from is a usage error; a missing OLD fails. */
    const char *both[] = {"release", "create",       pn,      "--name",
                          "fw",      "--version",    "2.1",   "--security-version",
                          "2",       "--hw",         "rev-a", "--module",
                          "file",    "--expires",    "30d",   "--key",
                          pk,        "--delta-from", po,      "--delta",
                          NULL};
    assert_int_equal(run_cli(ps, both), 2);
    char missing[600];
    n = snprintf(missing, sizeof(missing), "%s/nope", t.path);
    assert_true(n > 0 && (size_t)n < sizeof(missing));
    const char *no_old[] = {"release", "create",
                            pn,        "--name",
                            "fw",      "--version",
                            "2.2",     "--security-version",
                            "2",       "--hw",
                            "rev-a",   "--module",
                            "file",    "--expires",
                            "30d",     "--key",
                            pk,        "--delta-from",
                            missing,   "--out",
                            t.path,    NULL};
    assert_int_equal(run_cli(ps, no_old), 1);
    assert_true(output_contains(ps, "cannot make a patch"));

    static const char *const made[] = {"fw-2.0.manifest.json", "fw-2.0.manifest.sig",
                                       "fw-2.0.release.json", "fw-2.0.patch"};
    for (size_t i = 0; i < sizeof(made) / sizeof(made[0]); i++) {
        n = snprintf(pm, sizeof(pm), "%s/%s", t.path, made[i]);
        assert_true(n > 0 && (size_t)n < sizeof(pm));
        assert_int_equal(unlink(pm), 0);
    }
    blob_free(&mj);
    blob_free(&patch);
    blob_free(&got);
    tmpdir_remove(&t);
    blob_free(&old);
    blob_free(&nw);
}
#endif

int main(void)
{
#ifdef UPK_TEST_UPKEEP_BIN
    /* delta_cli_test: only the CLI, which needs the upkeep binary. */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(delta_cli_make_apply_info),
        cmocka_unit_test(release_create_delta_from_signs_a_delta_release),
    };
#else
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(delta_round_trip_empty_old),
        cmocka_unit_test(delta_round_trip_empty_new),
        cmocka_unit_test(delta_round_trip_both_empty),
        cmocka_unit_test(delta_round_trip_identical_is_tiny),
        cmocka_unit_test(delta_round_trip_unrelated_random),
        cmocka_unit_test(delta_round_trip_small_edits_are_small),
        cmocka_unit_test(delta_round_trip_insertions_and_deletions),
        cmocka_unit_test(delta_round_trip_large_few_changes),
        cmocka_unit_test(delta_apply_rejects_base_mismatch),
        cmocka_unit_test(delta_apply_rejects_wrong_new_hash),
        cmocka_unit_test(delta_apply_rejects_truncation),
        cmocka_unit_test(delta_apply_flipped_bytes_never_yield_wrong_output),
        cmocka_unit_test(delta_apply_rejects_hostile_records),
        cmocka_unit_test(delta_apply_rejects_hostile_header),
        cmocka_unit_test(delta_apply_rejects_zstd_bomb),
        cmocka_unit_test(delta_apply_removes_output_on_failure),
        cmocka_unit_test(delta_apply_refuses_to_overwrite_its_base),
        cmocka_unit_test(delta_api_rejects_bad_arguments),
    };
#endif
    return cmocka_run_group_tests(tests, NULL, NULL);
}
