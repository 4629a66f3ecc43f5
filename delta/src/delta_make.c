/* Patch encoder: bsdiff-style approximate matching over a suffix array of the
 * old image (libdivsufsort), emitting (seek, diff, extra) records whose
 * streams are compressed by zstd with a capped window. The encoder holds both
 * images in memory; it runs on the operator's machine, not on devices. */
#include <divsufsort.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "delta_format.h"
#include "upkeep/fs.h"

#define DEFAULT_LEVEL 19
/* A new match must beat the current alignment by this many bytes before the
 * encoder switches to it (bsdiff's heuristic). */
#define SWITCH_MARGIN 8

/* Growable byte buffer. */
typedef struct bbuf {
    uint8_t *data;
    size_t len;
    size_t cap;
} bbuf;

static upk_err bbuf_reserve(bbuf *b, size_t more)
{
    size_t want, cap;
    uint8_t *p;

    if (more > SIZE_MAX - b->len)
        return UPK_E_NOMEM;
    want = b->len + more;
    if (want <= b->cap)
        return UPK_OK;
    cap = b->cap ? b->cap : 4096;
    while (cap < want) {
        if (cap > SIZE_MAX / 2)
            return UPK_E_NOMEM;
        cap *= 2;
    }
    p = realloc(b->data, cap);
    if (p == NULL)
        return UPK_E_NOMEM;
    b->data = p;
    b->cap = cap;
    return UPK_OK;
}

static upk_err bbuf_append(bbuf *b, const void *data, size_t len)
{
    upk_err err = bbuf_reserve(b, len);
    if (err != UPK_OK)
        return err;
    if (len > 0)
        memcpy(b->data + b->len, data, len);
    b->len += len;
    return UPK_OK;
}

static upk_err bbuf_varint(bbuf *b, uint64_t v)
{
    uint8_t tmp[UPK__DELTA_VARINT_MAX];
    size_t n = 0;

    do {
        uint8_t byte = (uint8_t)(v & 0x7f);
        v >>= 7;
        tmp[n++] = byte | (v ? 0x80 : 0);
    } while (v != 0);
    return bbuf_append(b, tmp, n);
}

/* Where the encoder puts its records: the control stream, the raw diff
 * bytes (made sparse at the end) and the extra bytes. */
typedef struct sink {
    bbuf ctrl;
    bbuf diff;
    bbuf extra;
} sink;

static upk_err sink_record(sink *s, int64_t seek, const uint8_t *old_data, const uint8_t *new_data,
                           int64_t dpos_old, int64_t dpos_new, int64_t dlen, int64_t epos,
                           int64_t elen)
{
    uint64_t zz = seek < 0 ? ((uint64_t)(-(seek + 1)) << 1) | 1 : (uint64_t)seek << 1;
    upk_err err;

    if ((err = bbuf_varint(&s->ctrl, zz)) != UPK_OK ||
        (err = bbuf_varint(&s->ctrl, (uint64_t)dlen)) != UPK_OK ||
        (err = bbuf_varint(&s->ctrl, (uint64_t)elen)) != UPK_OK)
        return err;
    err = bbuf_reserve(&s->diff, (size_t)dlen);
    if (err != UPK_OK)
        return err;
    for (int64_t i = 0; i < dlen; i++)
        s->diff.data[s->diff.len++] = (uint8_t)(new_data[dpos_new + i] - old_data[dpos_old + i]);
    return bbuf_append(&s->extra, new_data + epos, (size_t)elen);
}

/* Splits the diff bytes into runs: (zeros before, non-zero length) pairs in
 * gaps/lens, the non-zero bytes in vals. Diff bytes are mostly zero (code
 * that only moved), and the three streams compress better apart than the
 * raw bytes do together (measured in docs/delta-format.md). */
static upk_err sparse_diff(const bbuf *diff, bbuf *gaps, bbuf *lens, bbuf *vals)
{
    size_t i = 0, last = 0, n = diff->len;
    upk_err err;

    while (i < n) {
        if (diff->data[i] == 0) {
            i++;
            continue;
        }
        size_t j = i;
        while (j < n && diff->data[j] != 0)
            j++;
        if ((err = bbuf_varint(gaps, i - last)) != UPK_OK ||
            (err = bbuf_varint(lens, j - i)) != UPK_OK ||
            (err = bbuf_append(vals, diff->data + i, j - i)) != UPK_OK)
            return err;
        last = j;
        i = j;
    }
    return UPK_OK;
}

/* Length of the common prefix of a[0..alen) and b[0..blen). */
static int64_t common_len(const uint8_t *a, int64_t alen, const uint8_t *b, int64_t blen)
{
    int64_t n = alen < blen ? alen : blen;
    int64_t i = 0;
    while (i < n && a[i] == b[i])
        i++;
    return i;
}

/* Longest prefix of want[0..wlen) occurring in old; its position goes to
 * *pos. The sorted suffixes sharing the longest prefix with want sit next to
 * want's insertion point, so a binary search and two comparisons suffice. */
static int64_t longest_match(const saidx_t *sa, const uint8_t *old_data, int64_t old_len,
                             const uint8_t *want, int64_t wlen, int64_t *pos)
{
    int64_t lo = 0, hi = old_len, best = 0;

    *pos = 0;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        int64_t s = sa[mid];
        int64_t slen = old_len - s;
        int64_t n = slen < wlen ? slen : wlen;
        int c = memcmp(old_data + s, want, (size_t)n);
        if (c < 0 || (c == 0 && slen < wlen))
            lo = mid + 1;
        else
            hi = mid;
    }
    for (int64_t k = lo - 1; k <= lo; k++) {
        if (k < 0 || k >= old_len)
            continue;
        int64_t l = common_len(old_data + sa[k], old_len - sa[k], want, wlen);
        if (l > best) {
            best = l;
            *pos = sa[k];
        }
    }
    return best;
}

/* The bsdiff matching loop. `scan` walks the new image looking for an exact
 * match in the old one that beats the running alignment (lastoffset) by
 * SWITCH_MARGIN bytes; the region between two such matches is split into a
 * forward extension of the previous match (diff bytes, which are mostly zero
 * where the code only moved), literal bytes (extra), and a backward extension
 * of the next match. */
static upk_err encode(const uint8_t *old_data, int64_t old_len, const uint8_t *new_data,
                      int64_t new_len, const saidx_t *sa, sink *out)
{
    int64_t scan = 0, len = 0, pos = 0;
    int64_t lastscan = 0, lastpos = 0, lastoffset = 0;
    int64_t pending_seek = 0; /* seek to prefix to the next emitted record */
    upk_err err;

    while (scan < new_len) {
        int64_t oldscore = 0;
        int64_t scsc;

        scan += len;
        for (scsc = scan; scan < new_len; scan++) {
            len = old_len > 0
                      ? longest_match(sa, old_data, old_len, new_data + scan, new_len - scan, &pos)
                      : 0;
            for (; scsc < scan + len; scsc++) {
                if (scsc + lastoffset >= 0 && scsc + lastoffset < old_len &&
                    old_data[scsc + lastoffset] == new_data[scsc])
                    oldscore++;
            }
            if ((len == oldscore && len != 0) || len > oldscore + SWITCH_MARGIN)
                break;
            if (scan + lastoffset >= 0 && scan + lastoffset < old_len &&
                old_data[scan + lastoffset] == new_data[scan])
                oldscore--;
        }
        if (len == oldscore && scan != new_len)
            continue;

        /* Forward extension of the previous match: the longest stretch
         * where more than half the bytes agree. */
        int64_t s = 0, best_s = 0, lenf = 0;
        for (int64_t i = 0; lastscan + i < scan && lastpos + i < old_len;) {
            if (old_data[lastpos + i] == new_data[lastscan + i])
                s++;
            i++;
            if (s * 2 - i > best_s * 2 - lenf) {
                best_s = s;
                lenf = i;
            }
        }
        /* Backward extension of the new match. */
        int64_t lenb = 0;
        if (scan < new_len) {
            s = 0;
            best_s = 0;
            for (int64_t i = 1; scan >= lastscan + i && pos >= i; i++) {
                if (old_data[pos - i] == new_data[scan - i])
                    s++;
                if (s * 2 - i > best_s * 2 - lenb) {
                    best_s = s;
                    lenb = i;
                }
            }
        }
        /* Where the two extensions overlap, split at the best point. */
        if (lastscan + lenf > scan - lenb) {
            int64_t overlap = (lastscan + lenf) - (scan - lenb);
            int64_t best = 0, lens = 0;
            s = 0;
            for (int64_t i = 0; i < overlap; i++) {
                if (new_data[lastscan + lenf - overlap + i] ==
                    old_data[lastpos + lenf - overlap + i])
                    s++;
                if (new_data[scan - lenb + i] == old_data[pos - lenb + i])
                    s--;
                if (s > best) {
                    best = s;
                    lens = i + 1;
                }
            }
            lenf += lens - overlap;
            lenb -= lens;
        }

        int64_t elen = (scan - lenb) - (lastscan + lenf);
        if (lenf + elen > 0) {
            err = sink_record(out, pending_seek, old_data, new_data, lastpos, lastscan, lenf,
                              lastscan + lenf, elen);
            if (err != UPK_OK)
                return err;
            pending_seek = 0;
        }
        /* The next record starts reading the old image at pos - lenb. */
        pending_seek += (pos - lenb) - (lastpos + lenf);
        if (scan >= new_len)
            break;
        lastscan = scan - lenb;
        lastpos = pos - lenb;
        lastoffset = pos - scan;
    }
    return UPK_OK;
}

static int window_log_for(size_t len)
{
    int wl = UPK__DELTA_WINDOW_LOG_MIN;
    while (wl < UPK_DELTA_WINDOW_LOG_MAX && ((size_t)1 << wl) < len)
        wl++;
    return wl;
}

/* Compresses src as one zstd frame (checksummed, window capped) onto dst. */
static upk_err compress_stream(ZSTD_CCtx *cctx, int level, const bbuf *src, bbuf *dst,
                               uint64_t *stream_len, uint32_t *window_log)
{
    int wl = window_log_for(src->len);
    size_t bound = ZSTD_compressBound(src->len);
    size_t n;
    upk_err err;

    if (ZSTD_isError(ZSTD_CCtx_reset(cctx, ZSTD_reset_session_and_parameters)) ||
        ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level)) ||
        ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_windowLog, wl)) ||
        ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1)) ||
        ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 1)))
        return UPK_E_INTERNAL;
    err = bbuf_reserve(dst, bound);
    if (err != UPK_OK)
        return err;
    n = ZSTD_compress2(cctx, dst->data + dst->len, bound, src->data ? src->data : (const void *)"",
                       src->len);
    if (ZSTD_isError(n))
        return UPK_E_INTERNAL;
    dst->len += n;
    *stream_len = n;
    if ((uint32_t)wl > *window_log)
        *window_log = (uint32_t)wl;
    return UPK_OK;
}

upk_err upk_delta_make_mem(const uint8_t *old_data, size_t old_len, const uint8_t *new_data,
                           size_t new_len, const upk_delta_options *opts, uint8_t **patch,
                           size_t *patch_len)
{
    int level = (opts != NULL && opts->level != 0) ? opts->level : DEFAULT_LEVEL;
    sink s = {0};
    bbuf streams[UPK__DS_COUNT] = {{0}};
    bbuf outb = {0};
    upk__delta_header h;
    saidx_t *sa = NULL;
    ZSTD_CCtx *cctx = NULL;
    upk_err err;

    if ((old_data == NULL && old_len > 0) || (new_data == NULL && new_len > 0) || patch == NULL ||
        patch_len == NULL || level < 1 || level > ZSTD_maxCLevel())
        return UPK_E_INVALID_ARG;
    if (old_len > UPK_DELTA_MAX_MAKE_SIZE || new_len > UPK_DELTA_MAX_MAKE_SIZE)
        return UPK_E_FIELD_RANGE;

    if (old_len > 0) {
        sa = malloc(old_len * sizeof(*sa));
        if (sa == NULL) {
            err = UPK_E_NOMEM;
            goto out;
        }
        if (divsufsort(old_data, sa, (saidx_t)old_len) != 0) {
            err = UPK_E_INTERNAL;
            goto out;
        }
    }
    err = encode(old_data, (int64_t)old_len, new_data, (int64_t)new_len, sa, &s);
    if (err != UPK_OK)
        goto out;
    free(sa);
    sa = NULL;
    err = sparse_diff(&s.diff, &streams[UPK__DS_GAPS], &streams[UPK__DS_LENS],
                      &streams[UPK__DS_VALS]);
    if (err != UPK_OK)
        goto out;
    streams[UPK__DS_CTRL] = s.ctrl;
    streams[UPK__DS_EXTRA] = s.extra;
    s.ctrl = (bbuf){0};
    s.extra = (bbuf){0};

    memset(&h, 0, sizeof(h));
    h.info.old_size = old_len;
    h.info.new_size = new_len;
    upk_sha256_buf(old_data ? old_data : (const uint8_t *)"", old_len, h.info.old_sha256);
    upk_sha256_buf(new_data ? new_data : (const uint8_t *)"", new_len, h.info.new_sha256);
    h.window_log = UPK__DELTA_WINDOW_LOG_MIN;

    cctx = ZSTD_createCCtx();
    if (cctx == NULL) {
        err = UPK_E_NOMEM;
        goto out;
    }
    err = bbuf_reserve(&outb, UPK_DELTA_HEADER_LEN);
    if (err != UPK_OK)
        goto out;
    outb.len = UPK_DELTA_HEADER_LEN;
    for (int i = 0; i < UPK__DS_COUNT && err == UPK_OK; i++)
        err = compress_stream(cctx, level, &streams[i], &outb, &h.stream_len[i], &h.window_log);
    if (err != UPK_OK)
        goto out;
    upk__delta_header_write(&h, outb.data);
    *patch = outb.data;
    *patch_len = outb.len;
    outb.data = NULL;
    err = UPK_OK;
out:
    ZSTD_freeCCtx(cctx);
    free(sa);
    free(s.ctrl.data);
    free(s.diff.data);
    free(s.extra.data);
    for (int i = 0; i < UPK__DS_COUNT; i++)
        free(streams[i].data);
    free(outb.data);
    return err;
}

upk_err upk_delta_make_ex(const char *old_path, const char *new_path, const char *patch_path,
                          const upk_delta_options *opts)
{
    char *old_data = NULL, *new_data = NULL;
    size_t old_len = 0, new_len = 0, patch_len = 0;
    uint8_t *patch = NULL;
    upk_err err;

    if (old_path == NULL || new_path == NULL || patch_path == NULL)
        return UPK_E_INVALID_ARG;
    err = upk_fs_read(old_path, UPK_DELTA_MAX_MAKE_SIZE, &old_data, &old_len);
    if (err != UPK_OK)
        goto out;
    err = upk_fs_read(new_path, UPK_DELTA_MAX_MAKE_SIZE, &new_data, &new_len);
    if (err != UPK_OK)
        goto out;
    err = upk_delta_make_mem((const uint8_t *)old_data, old_len, (const uint8_t *)new_data, new_len,
                             opts, &patch, &patch_len);
    if (err != UPK_OK)
        goto out;
    err = upk_fs_write_atomic(patch_path, patch, patch_len);
out:
    if (err == UPK_E_MSG_TOO_LARGE)
        err = UPK_E_FIELD_RANGE;
    free(patch);
    free(old_data);
    free(new_data);
    return err;
}

upk_err upk_delta_make(const char *old_path, const char *new_path, const char *patch_path)
{
    return upk_delta_make_ex(old_path, new_path, patch_path, NULL);
}
