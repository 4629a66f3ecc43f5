/* libFuzzer target: the delta record decoder behind the zstd layer. The
 * input is the five streams' raw content (control records, diff gaps, run
 * lengths, run bytes, extra bytes), which the harness compresses and wraps
 * in a valid header for a fixed old image. Mutations thus reach record and
 * run validation directly instead of dying on a zstd checksum (the other
 * target, fuzz_delta_apply, covers the header and the zstd layer).
 * Input: u16 new_size (LE), then up to five (u16 length, bytes) streams. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "delta_format.h"
#include "fuzz_old.h"

#define OUT_CAP    65536u
#define STREAM_MAX 8192u

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t old[FUZZ_OLD_LEN];
    static uint8_t *patch, *out;
    static ZSTD_CCtx *cctx;
    static int ready;
    const size_t patch_cap = UPK_DELTA_HEADER_LEN + 5 * ZSTD_compressBound(STREAM_MAX);
    upk__delta_header h;
    size_t pos = 2, off = UPK_DELTA_HEADER_LEN, out_len = 0;
    upk_err err;

    if (!ready) {
        fuzz_old_fill(old);
        patch = malloc(patch_cap);
        out = malloc(OUT_CAP);
        cctx = ZSTD_createCCtx();
        if (patch == NULL || out == NULL || cctx == NULL)
            abort();
        ready = 1;
    }
    if (size < 2)
        return 0;
    memset(&h, 0, sizeof(h));
    h.info.old_size = FUZZ_OLD_LEN;
    h.info.new_size = (uint64_t)(data[0] | (data[1] << 8)) % OUT_CAP;
    upk_sha256_buf(old, sizeof(old), h.info.old_sha256);
    h.window_log = 17;
    for (int i = 0; i < UPK__DS_COUNT; i++) {
        size_t len = 0;
        if (pos + 2 <= size) {
            len = (size_t)(data[pos] | (data[pos + 1] << 8));
            pos += 2;
        }
        if (len > size - pos)
            len = size - pos;
        if (len > STREAM_MAX)
            len = STREAM_MAX;
        size_t n = ZSTD_compressCCtx(cctx, patch + off, patch_cap - off, data + pos, len, 1);
        if (ZSTD_isError(n))
            abort();
        h.stream_len[i] = n;
        off += n;
        pos += len;
    }
    upk__delta_header_write(&h, patch);
    err = upk_delta_apply_mem(old, sizeof(old), patch, off, out, OUT_CAP, &out_len);
    /* The header's new hash is zero, so a full decode ends in a mismatch. */
    if (err != UPK_E_DELTA_CORRUPT && err != UPK_E_HASH_MISMATCH)
        abort();
    return 0;
}
