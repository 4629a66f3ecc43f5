/* Patch decoder. Streaming: the patch is read in bounded chunks, the old
 * image by random access (pread, through a small cache), the new image is
 * written sequentially and hashed as it goes. Every record is checked with
 * overflow-safe arithmetic before any byte moves, the zstd window is capped
 * (a frame asking for more is a bomb), and the decompressed total is bounded
 * by the header's new size, so a hostile patch yields UPK_E_DELTA_CORRUPT,
 * never a crash or a write outside the output. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include "delta_format.h"

#define CHUNK     (64 * 1024)  /* diff/extra bytes moved per step */
#define OLD_CACHE (64 * 1024)  /* old-image read cache */
#define OUT_BUF   (256 * 1024) /* output write buffer */
#define HASH_BUF  (256 * 1024) /* buffer for hashing the old image */
#define ZR_IN     (32 * 1024)  /* compressed bytes read per stream step */
#define ZR_OUT    (32 * 1024)  /* decompressed bytes buffered per stream */

/* Where the decoder reads and writes; file- or memory-backed. */
typedef struct io {
    /* patch */
    int patch_fd;
    const uint8_t *patch_mem;
    /* old image */
    int old_fd;
    const uint8_t *old_mem;
    uint64_t old_size;
    uint8_t *cache;
    uint64_t cache_off;
    size_t cache_len;
    /* new image */
    int out_fd;
    uint8_t *out_mem;
    uint8_t *obuf;
    size_t obuf_len;
    uint64_t written;
    upk_sha256 sha;
} io;

static upk_err pread_full(int fd, void *buf, size_t len, uint64_t off)
{
    uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = pread(fd, p, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return UPK_E_IO;
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return UPK_OK;
}

static upk_err write_full(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return UPK_E_IO;
        p += n;
        len -= (size_t)n;
    }
    return UPK_OK;
}

static upk_err io_read_patch(io *x, uint64_t off, void *buf, size_t len)
{
    if (x->patch_mem != NULL) {
        memcpy(buf, x->patch_mem + off, len);
        return UPK_OK;
    }
    return pread_full(x->patch_fd, buf, len, off);
}

/* Reads old[off, off+len); the caller has checked the range. */
static upk_err io_read_old(io *x, uint64_t off, uint8_t *buf, size_t len)
{
    if (x->old_mem != NULL) {
        memcpy(buf, x->old_mem + off, len);
        return UPK_OK;
    }
    while (len > 0) {
        if (off < x->cache_off || off >= x->cache_off + x->cache_len) {
            uint64_t left = x->old_size - off;
            size_t n = left < OLD_CACHE ? (size_t)left : OLD_CACHE;
            upk_err err = pread_full(x->old_fd, x->cache, n, off);
            if (err != UPK_OK) {
                x->cache_len = 0;
                return err;
            }
            x->cache_off = off;
            x->cache_len = n;
        }
        size_t at = (size_t)(off - x->cache_off);
        size_t n = x->cache_len - at < len ? x->cache_len - at : len;
        memcpy(buf, x->cache + at, n);
        buf += n;
        off += n;
        len -= n;
    }
    return UPK_OK;
}

static upk_err io_flush(io *x)
{
    upk_err err = UPK_OK;
    if (x->out_mem == NULL && x->obuf_len > 0)
        err = write_full(x->out_fd, x->obuf, x->obuf_len);
    x->obuf_len = 0;
    return err;
}

/* Appends new-image bytes; the caller has checked they fit new_size. */
static upk_err io_emit(io *x, const uint8_t *buf, size_t len)
{
    upk_sha256_update(&x->sha, buf, len);
    if (x->out_mem != NULL) {
        memcpy(x->out_mem + x->written, buf, len);
        x->written += len;
        return UPK_OK;
    }
    x->written += len;
    if (x->obuf_len + len > OUT_BUF) {
        upk_err err = io_flush(x);
        if (err != UPK_OK)
            return err;
    }
    if (len >= OUT_BUF)
        return write_full(x->out_fd, buf, len);
    memcpy(x->obuf + x->obuf_len, buf, len);
    x->obuf_len += len;
    return UPK_OK;
}

/* One zstd frame occupying patch bytes [off, end). */
typedef struct zreader {
    io *x;
    ZSTD_DCtx *dctx;
    uint64_t off, end;
    uint8_t *in;
    size_t in_cap;
    ZSTD_inBuffer inb;
    uint8_t *out;
    size_t out_cap, out_pos, out_len;
    bool frame_done;
} zreader;

static upk_err zr_init(zreader *z, io *x, uint64_t off, uint64_t len, uint32_t window_log)
{
    memset(z, 0, sizeof(*z));
    z->x = x;
    z->off = off;
    z->end = off + len;
    z->in_cap = ZR_IN;
    z->out_cap = ZR_OUT;
    z->in = malloc(z->in_cap);
    z->out = malloc(z->out_cap);
    z->dctx = ZSTD_createDCtx();
    if (z->in == NULL || z->out == NULL || z->dctx == NULL)
        return UPK_E_NOMEM;
    /* The bomb guard: a frame whose window exceeds the header's (itself
     * capped at UPK_DELTA_WINDOW_LOG_MAX) is refused by zstd. */
    if (ZSTD_isError(ZSTD_DCtx_setParameter(z->dctx, ZSTD_d_windowLogMax, (int)window_log)))
        return UPK_E_INTERNAL;
    z->inb.src = z->in;
    return UPK_OK;
}

static void zr_cleanup(zreader *z)
{
    ZSTD_freeDCtx(z->dctx);
    free(z->in);
    free(z->out);
    memset(z, 0, sizeof(*z));
}

/* One decompression step into the (empty) output buffer. */
static upk_err zr_step(zreader *z)
{
    ZSTD_outBuffer ob = {z->out, z->out_cap, 0};
    size_t before, ret;

    if (z->inb.pos == z->inb.size) {
        uint64_t left = z->end - z->off;
        size_t n = left < z->in_cap ? (size_t)left : z->in_cap;
        upk_err err;
        if (n == 0)
            return UPK_E_DELTA_CORRUPT; /* truncated stream */
        err = io_read_patch(z->x, z->off, z->in, n);
        if (err != UPK_OK)
            return err;
        z->off += n;
        z->inb.size = n;
        z->inb.pos = 0;
    }
    before = z->inb.pos;
    ret = ZSTD_decompressStream(z->dctx, &ob, &z->inb);
    if (ZSTD_isError(ret))
        return UPK_E_DELTA_CORRUPT;
    if (ret == 0)
        z->frame_done = true;
    else if (ob.pos == 0 && z->inb.pos == before)
        return UPK_E_DELTA_CORRUPT; /* no progress: refuse to spin */
    z->out_pos = 0;
    z->out_len = ob.pos;
    return UPK_OK;
}

static upk_err zr_read(zreader *z, uint8_t *dst, size_t len)
{
    while (len > 0) {
        if (z->out_pos == z->out_len) {
            upk_err err;
            if (z->frame_done)
                return UPK_E_DELTA_CORRUPT; /* stream shorter than its records */
            err = zr_step(z);
            if (err != UPK_OK)
                return err;
            continue;
        }
        size_t n = z->out_len - z->out_pos < len ? z->out_len - z->out_pos : len;
        memcpy(dst, z->out + z->out_pos, n);
        z->out_pos += n;
        dst += n;
        len -= n;
    }
    return UPK_OK;
}

static upk_err zr_varint(zreader *z, uint64_t *out)
{
    uint64_t v = 0;
    for (int i = 0; i < UPK__DELTA_VARINT_MAX; i++) {
        uint8_t b;
        upk_err err = zr_read(z, &b, 1);
        if (err != UPK_OK)
            return err;
        if (i == UPK__DELTA_VARINT_MAX - 1 && b > 1)
            return UPK_E_DELTA_CORRUPT; /* more than 64 bits */
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if ((b & 0x80) == 0) {
            *out = v;
            return UPK_OK;
        }
    }
    return UPK_E_DELTA_CORRUPT;
}

/* The stream must end exactly here: no decoded bytes left, the frame
 * complete (checksum verified) and no patch bytes after it. */
static upk_err zr_finish(zreader *z)
{
    if (z->out_pos != z->out_len)
        return UPK_E_DELTA_CORRUPT;
    while (!z->frame_done) {
        upk_err err = zr_step(z);
        if (err != UPK_OK)
            return err;
        if (z->out_len != 0)
            return UPK_E_DELTA_CORRUPT;
    }
    if (z->inb.pos != z->inb.size || z->off != z->end)
        return UPK_E_DELTA_CORRUPT;
    return UPK_OK;
}

/* True when the stream has ended cleanly (frame complete, everything
 * read); false when more bytes follow. */
static upk_err zr_at_end(zreader *z, bool *at_end)
{
    while (z->out_pos == z->out_len && !z->frame_done) {
        upk_err err = zr_step(z);
        if (err != UPK_OK)
            return err;
    }
    *at_end = z->out_pos == z->out_len;
    return UPK_OK;
}

/* The diff bytes, rebuilt from the sparse gaps/lens/vals streams. */
typedef struct diffsrc {
    zreader *gaps, *lens, *vals;
    uint64_t zeros;   /* zero bytes left in the current gap */
    uint64_t nonzero; /* non-zero bytes left in the current run */
    bool done;        /* no runs left: only zeros from here */
    bool first;       /* the first gap may be 0; later ones may not */
    uint64_t limit;   /* new_size: no run can be longer */
} diffsrc;

static upk_err diff_read(diffsrc *d, uint8_t *dst, size_t len)
{
    upk_err err;

    while (len > 0) {
        if (d->zeros > 0 || d->done) {
            size_t n = (d->done || d->zeros >= len) ? len : (size_t)d->zeros;
            memset(dst, 0, n);
            if (!d->done)
                d->zeros -= n;
            dst += n;
            len -= n;
        } else if (d->nonzero > 0) {
            size_t n = d->nonzero >= len ? len : (size_t)d->nonzero;
            err = zr_read(d->vals, dst, n);
            if (err != UPK_OK)
                return err;
            /* A run is maximal and non-zero by construction; enforcing it
             * keeps one diff byte from having two encodings. */
            for (size_t i = 0; i < n; i++) {
                if (dst[i] == 0)
                    return UPK_E_DELTA_CORRUPT;
            }
            d->nonzero -= n;
            dst += n;
            len -= n;
        } else {
            bool end;
            err = zr_at_end(d->gaps, &end);
            if (err != UPK_OK)
                return err;
            if (end) {
                d->done = true;
                continue;
            }
            if ((err = zr_varint(d->gaps, &d->zeros)) != UPK_OK ||
                (err = zr_varint(d->lens, &d->nonzero)) != UPK_OK)
                return err;
            /* Every run makes progress, so a stream of empty runs (a bomb
             * of another kind) cannot spin; both are bounded by new_size. */
            if (d->nonzero == 0 || (d->zeros == 0 && !d->first) || d->zeros > d->limit ||
                d->nonzero > d->limit)
                return UPK_E_DELTA_CORRUPT;
            d->first = false;
        }
    }
    return UPK_OK;
}

/* Decodes the records after the header. */
static upk_err decode(io *x, const upk__delta_header *h)
{
    zreader zr[UPK__DS_COUNT];
    zreader *zc = &zr[UPK__DS_CTRL], *ze = &zr[UPK__DS_EXTRA];
    diffsrc ds = {&zr[UPK__DS_GAPS], &zr[UPK__DS_LENS], &zr[UPK__DS_VALS], 0, 0, false, true,
                  h->info.new_size};
    uint8_t *buf = NULL, *obuf = NULL;
    uint64_t np = 0, op = 0, off = UPK_DELTA_HEADER_LEN;
    const uint64_t new_size = h->info.new_size, old_size = h->info.old_size;
    upk_err err = UPK_OK;

    memset(zr, 0, sizeof(zr));
    buf = malloc(CHUNK);
    obuf = malloc(CHUNK);
    if (buf == NULL || obuf == NULL) {
        err = UPK_E_NOMEM;
        goto out;
    }
    for (int i = 0; i < UPK__DS_COUNT && err == UPK_OK; i++) {
        err = zr_init(&zr[i], x, off, h->stream_len[i], h->window_log);
        off += h->stream_len[i];
    }
    if (err != UPK_OK)
        goto out;

    while (np < new_size) {
        uint64_t zz, dlen, elen, mag;

        if ((err = zr_varint(zc, &zz)) != UPK_OK || (err = zr_varint(zc, &dlen)) != UPK_OK ||
            (err = zr_varint(zc, &elen)) != UPK_OK)
            goto out;
        /* Every record makes progress and stays inside the new image, so
         * the records (and the bytes they pull from the streams) are
         * bounded by new_size: no decompression bomb gets further. */
        if (dlen > new_size - np || elen > new_size - np - dlen || dlen + elen == 0) {
            err = UPK_E_DELTA_CORRUPT;
            goto out;
        }
        /* seek = zigzag(zz): op + seek must stay within [0, old_size]. */
        mag = (zz >> 1) + (zz & 1); /* |seek|, computed without overflow */
        if (zz & 1) {
            if (mag > op) {
                err = UPK_E_DELTA_CORRUPT;
                goto out;
            }
            op -= mag;
        } else {
            if (mag > old_size - op) {
                err = UPK_E_DELTA_CORRUPT;
                goto out;
            }
            op += mag;
        }
        if (dlen > old_size - op) {
            err = UPK_E_DELTA_CORRUPT;
            goto out;
        }
        while (dlen > 0) {
            size_t n = dlen < CHUNK ? (size_t)dlen : CHUNK;
            if ((err = diff_read(&ds, buf, n)) != UPK_OK ||
                (err = io_read_old(x, op, obuf, n)) != UPK_OK)
                goto out;
            for (size_t i = 0; i < n; i++)
                buf[i] = (uint8_t)(buf[i] + obuf[i]);
            if ((err = io_emit(x, buf, n)) != UPK_OK)
                goto out;
            op += n;
            np += n;
            dlen -= n;
        }
        while (elen > 0) {
            size_t n = elen < CHUNK ? (size_t)elen : CHUNK;
            if ((err = zr_read(ze, buf, n)) != UPK_OK || (err = io_emit(x, buf, n)) != UPK_OK)
                goto out;
            np += n;
            elen -= n;
        }
    }
    /* Every stream must be used up exactly: no run left half-read. */
    if (ds.zeros != 0 || ds.nonzero != 0) {
        err = UPK_E_DELTA_CORRUPT;
        goto out;
    }
    for (int i = 0; i < UPK__DS_COUNT && err == UPK_OK; i++)
        err = zr_finish(&zr[i]);
    if (err == UPK_OK)
        err = io_flush(x);
out:
    for (int i = 0; i < UPK__DS_COUNT; i++)
        zr_cleanup(&zr[i]);
    free(buf);
    free(obuf);
    return err;
}

/* Compares the finished output hash with the header's. */
static upk_err check_output(io *x, const upk__delta_header *h)
{
    uint8_t got[UPK_SHA256_LEN];
    upk_sha256_final(&x->sha, got);
    if (x->written != h->info.new_size ||
        !upk_mem_equal_ct(got, h->info.new_sha256, UPK_SHA256_LEN))
        return UPK_E_HASH_MISMATCH;
    return UPK_OK;
}

upk_err upk_delta_apply_mem(const uint8_t *old_data, size_t old_len, const uint8_t *patch,
                            size_t patch_len, uint8_t *out, size_t out_cap, size_t *out_len)
{
    upk__delta_header h;
    uint64_t total;
    uint8_t digest[UPK_SHA256_LEN];
    io x;
    upk_err err;

    if ((old_data == NULL && old_len > 0) || patch == NULL || out_len == NULL ||
        (out == NULL && out_cap > 0))
        return UPK_E_INVALID_ARG;
    err = upk__delta_header_read(patch, patch_len, &h, &total);
    if (err != UPK_OK)
        return err;
    if (total != patch_len)
        return UPK_E_DELTA_CORRUPT;
    upk_sha256_buf(old_data ? old_data : (const uint8_t *)"", old_len, digest);
    if (h.info.old_size != old_len || !upk_mem_equal_ct(digest, h.info.old_sha256, UPK_SHA256_LEN))
        return UPK_E_DELTA_BASE_MISMATCH;
    if (h.info.new_size > out_cap)
        return UPK_E_BUFFER_TOO_SMALL;

    memset(&x, 0, sizeof(x));
    x.patch_fd = x.old_fd = x.out_fd = -1;
    x.patch_mem = patch;
    x.old_mem = old_data ? old_data : (const uint8_t *)"";
    x.old_size = old_len;
    x.out_mem = out;
    upk_sha256_init(&x.sha);
    err = decode(&x, &h);
    if (err == UPK_OK)
        err = check_output(&x, &h);
    upk_sha256_cleanup(&x.sha);
    if (err == UPK_OK)
        *out_len = (size_t)h.info.new_size;
    return err;
}

/* Reads and checks a patch file's header, and that its length matches. */
static upk_err read_header_fd(int fd, upk__delta_header *h)
{
    uint8_t hb[UPK_DELTA_HEADER_LEN];
    struct stat st;
    uint64_t total;
    upk_err err;

    if (fstat(fd, &st) != 0)
        return UPK_E_IO;
    if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size < UPK_DELTA_HEADER_LEN)
        return UPK_E_DELTA_CORRUPT;
    err = pread_full(fd, hb, sizeof(hb), 0);
    if (err != UPK_OK)
        return err;
    err = upk__delta_header_read(hb, sizeof(hb), h, &total);
    if (err != UPK_OK)
        return err;
    if (total != (uint64_t)st.st_size)
        return UPK_E_DELTA_CORRUPT;
    return UPK_OK;
}

upk_err upk_delta_read_info(const char *patch_path, upk_delta_info *out)
{
    upk__delta_header h;
    upk_err err;
    int fd;

    if (patch_path == NULL || out == NULL)
        return UPK_E_INVALID_ARG;
    fd = open(patch_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? UPK_E_NOT_FOUND : UPK_E_IO;
    err = read_header_fd(fd, &h);
    close(fd);
    if (err == UPK_OK)
        *out = h.info;
    return err;
}

/* Hashes the old image through its descriptor and compares size and hash. */
/* Checks the old image's size and hash against the header. A regular file
 * is mapped (*map, *map_len; the caller unmaps) so that the hash and then
 * the decoder's random reads cost no copies; a block device, or a file that
 * cannot be mapped, is read with pread. */
static upk_err check_base(int fd, const upk__delta_header *h, void **map, size_t *map_len)
{
    uint8_t digest[UPK_SHA256_LEN];
    struct stat st;
    upk_sha256 sha;
    uint8_t *buf = NULL;
    uint64_t off = 0;
    upk_err err = UPK_OK;

    if (fstat(fd, &st) != 0)
        return UPK_E_IO;
    if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
        return UPK_E_INVALID_ARG;
    if (S_ISREG(st.st_mode) && (uint64_t)st.st_size != h->info.old_size)
        return UPK_E_DELTA_BASE_MISMATCH;
    upk_sha256_init(&sha);
    if (S_ISREG(st.st_mode) && h->info.old_size > 0 && h->info.old_size <= SIZE_MAX) {
        void *m = mmap(NULL, (size_t)h->info.old_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m != MAP_FAILED) {
            *map = m;
            *map_len = (size_t)h->info.old_size;
            upk_sha256_update(&sha, m, *map_len);
            off = h->info.old_size;
        }
    }
    if (off < h->info.old_size) {
        buf = malloc(HASH_BUF);
        if (buf == NULL)
            err = UPK_E_NOMEM;
    }
    while (err == UPK_OK && off < h->info.old_size) {
        uint64_t left = h->info.old_size - off;
        size_t n = left < HASH_BUF ? (size_t)left : HASH_BUF;
        ssize_t r = pread(fd, buf, n, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            err = UPK_E_IO;
            break;
        }
        if (r == 0) {
            err = UPK_E_DELTA_BASE_MISMATCH; /* shorter than the header says */
            break;
        }
        upk_sha256_update(&sha, buf, (size_t)r);
        off += (uint64_t)r;
    }
    upk_sha256_final(&sha, digest);
    upk_sha256_cleanup(&sha);
    free(buf);
    if (err == UPK_OK && !upk_mem_equal_ct(digest, h->info.old_sha256, UPK_SHA256_LEN))
        err = UPK_E_DELTA_BASE_MISMATCH;
    return err;
}

upk_err upk_delta_apply(const char *old_path, const char *patch_path, const char *out_path)
{
    upk__delta_header h;
    struct stat ost, st;
    bool created = false;
    void *map = NULL;
    size_t map_len = 0;
    io x;
    upk_err err;

    if (old_path == NULL || patch_path == NULL || out_path == NULL)
        return UPK_E_INVALID_ARG;
    memset(&x, 0, sizeof(x));
    x.patch_fd = x.old_fd = x.out_fd = -1;
    upk_sha256_init(&x.sha);

    x.old_fd = open(old_path, O_RDONLY | O_CLOEXEC);
    if (x.old_fd < 0) {
        err = errno == ENOENT ? UPK_E_NOT_FOUND : UPK_E_IO;
        goto out;
    }
    /* Never truncate the image we are reading from. */
    if (fstat(x.old_fd, &ost) != 0) {
        err = UPK_E_IO;
        goto out;
    }
    if (stat(out_path, &st) == 0 && st.st_dev == ost.st_dev && st.st_ino == ost.st_ino) {
        err = UPK_E_INVALID_ARG;
        goto out;
    }
    created = true; /* from here on, a failure removes out_path */

    x.patch_fd = open(patch_path, O_RDONLY | O_CLOEXEC);
    if (x.patch_fd < 0) {
        err = errno == ENOENT ? UPK_E_NOT_FOUND : UPK_E_IO;
        goto out;
    }
    err = read_header_fd(x.patch_fd, &h);
    if (err != UPK_OK)
        goto out;
    err = check_base(x.old_fd, &h, &map, &map_len);
    if (err != UPK_OK)
        goto out;
    if (map != NULL)
        x.old_mem = map;

    x.old_size = h.info.old_size;
    x.cache = malloc(OLD_CACHE);
    x.obuf = malloc(OUT_BUF);
    if (x.cache == NULL || x.obuf == NULL) {
        err = UPK_E_NOMEM;
        goto out;
    }
    x.out_fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (x.out_fd < 0) {
        err = UPK_E_IO;
        goto out;
    }
    err = decode(&x, &h);
    if (err == UPK_OK)
        err = check_output(&x, &h);
    if (err == UPK_OK && fsync(x.out_fd) != 0)
        err = UPK_E_IO;
    if (err == UPK_OK) {
        int fd = x.out_fd;
        x.out_fd = -1;
        if (close(fd) != 0)
            err = UPK_E_IO;
    }
out:
    if (x.out_fd >= 0)
        close(x.out_fd);
    if (x.patch_fd >= 0)
        close(x.patch_fd);
    if (x.old_fd >= 0)
        close(x.old_fd);
    if (map != NULL)
        (void)munmap(map, map_len);
    if (err != UPK_OK && created)
        (void)unlink(out_path);
    upk_sha256_cleanup(&x.sha);
    free(x.cache);
    free(x.obuf);
    return err;
}
