/* Patch header encoding and validation shared by the encoder and the
 * decoder. Every field is little-endian; flags and reserved bytes must be
 * zero so that a future version can give them a meaning. */
#include "delta_format.h"

#include <string.h>

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

void upk__delta_header_write(const upk__delta_header *h, uint8_t buf[UPK_DELTA_HEADER_LEN])
{
    memset(buf, 0, UPK_DELTA_HEADER_LEN);
    memcpy(buf, UPK__DELTA_MAGIC, UPK__DELTA_MAGIC_LEN);
    put_u32(buf + 8, UPK__DELTA_VERSION);
    /* 12..15 flags, zero */
    put_u64(buf + 16, h->info.old_size);
    put_u64(buf + 24, h->info.new_size);
    memcpy(buf + 32, h->info.old_sha256, UPK_SHA256_LEN);
    memcpy(buf + 64, h->info.new_sha256, UPK_SHA256_LEN);
    put_u32(buf + 96, h->window_log);
    /* 100..103 reserved, zero */
    for (int i = 0; i < UPK__DS_COUNT; i++)
        put_u64(buf + 104 + 8 * i, h->stream_len[i]);
}

upk_err upk__delta_header_read(const uint8_t *buf, size_t len, upk__delta_header *h,
                               uint64_t *patch_len_out)
{
    upk__delta_header t;
    uint64_t total = UPK_DELTA_HEADER_LEN;

    if (buf == NULL || h == NULL || patch_len_out == NULL)
        return UPK_E_INVALID_ARG;
    if (len < UPK_DELTA_HEADER_LEN)
        return UPK_E_DELTA_CORRUPT;
    if (memcmp(buf, UPK__DELTA_MAGIC, UPK__DELTA_MAGIC_LEN) != 0 ||
        get_u32(buf + 8) != UPK__DELTA_VERSION || get_u32(buf + 12) != 0 || get_u32(buf + 100) != 0)
        return UPK_E_DELTA_CORRUPT;
    memset(&t, 0, sizeof(t));
    t.info.old_size = get_u64(buf + 16);
    t.info.new_size = get_u64(buf + 24);
    memcpy(t.info.old_sha256, buf + 32, UPK_SHA256_LEN);
    memcpy(t.info.new_sha256, buf + 64, UPK_SHA256_LEN);
    t.window_log = get_u32(buf + 96);
    if (t.info.old_size > UPK_DELTA_MAX_SIZE || t.info.new_size > UPK_DELTA_MAX_SIZE)
        return UPK_E_DELTA_CORRUPT;
    if (t.window_log < UPK__DELTA_WINDOW_LOG_MIN || t.window_log > UPK_DELTA_WINDOW_LOG_MAX)
        return UPK_E_DELTA_CORRUPT;
    /* Overflow-safe: each length is bounded before it is added, so the sum
     * (at most 5 * 2^41 + 144) cannot wrap. */
    for (int i = 0; i < UPK__DS_COUNT; i++) {
        t.stream_len[i] = get_u64(buf + 104 + 8 * i);
        if (t.stream_len[i] > UPK_DELTA_MAX_SIZE * 2)
            return UPK_E_DELTA_CORRUPT;
        total += t.stream_len[i];
    }
    *h = t;
    *patch_len_out = total;
    return UPK_OK;
}

upk_err upk_delta_parse_info(const uint8_t *buf, size_t len, upk_delta_info *out)
{
    upk__delta_header h;
    uint64_t total;
    upk_err err;

    if (buf == NULL || out == NULL)
        return UPK_E_INVALID_ARG;
    err = upk__delta_header_read(buf, len, &h, &total);
    if (err != UPK_OK)
        return err;
    *out = h.info;
    return UPK_OK;
}
