/* Per-device link keys and message tags (see linkauth.h). The tag is an
 * HMAC-SHA256 streamed over a label, the topic after its prefix and the
 * payload, so a 256 KiB chunk is tagged without a copy. */
#include "upkeep/linkauth.h"

#include <string.h>

#include <mbedtls/md.h>
#include <mbedtls/platform_util.h>

#include "upkeep/hash.h"
#include "upkeep/id.h"

#define LINK_KEY_LABEL "upkeep-link-v1:"
#define LINK_TAG_LABEL "upkeep-auth-v1" /* followed by a 0x00 byte */

upk_err upk_link_key_derive(const void *secret, size_t secret_len, const char *device_id,
                            upk_link_key *out)
{
    if (secret == NULL || secret_len < UPK_LINK_SECRET_MIN || out == NULL)
        return UPK_E_INVALID_ARG;
    if (!upk_id_valid(device_id))
        return UPK_E_ID_INVALID;
    char msg[sizeof(LINK_KEY_LABEL) + UPK_ID_MAX];
    size_t llen = sizeof(LINK_KEY_LABEL) - 1;
    size_t idlen = strlen(device_id);
    memcpy(msg, LINK_KEY_LABEL, llen);
    memcpy(msg + llen, device_id, idlen);
    uint8_t mac[UPK_SHA256_LEN];
    upk_err err = upk_hmac_sha256(secret, secret_len, msg, llen + idlen, mac);
    if (err == UPK_OK)
        memcpy(out->k, mac, sizeof(out->k));
    mbedtls_platform_zeroize(mac, sizeof(mac));
    return err;
}

upk_err upk_link_key_from_hex(const char *text, size_t len, upk_link_key *out)
{
    if (text == NULL || out == NULL)
        return UPK_E_INVALID_ARG;
    /* Trailing whitespace only: a key file usually ends with a newline. */
    while (len > UPK_LINK_KEY_HEX_LEN && (text[len - 1] == '\n' || text[len - 1] == '\r' ||
                                          text[len - 1] == ' ' || text[len - 1] == '\t'))
        len--;
    if (len != UPK_LINK_KEY_HEX_LEN)
        return UPK_E_KEY_INVALID;
    uint8_t k[UPK_LINK_KEY_LEN];
    if (upk_hex_decode(text, len, k, sizeof(k)) != UPK_OK) {
        mbedtls_platform_zeroize(k, sizeof(k));
        return UPK_E_KEY_INVALID;
    }
    memcpy(out->k, k, sizeof(k));
    mbedtls_platform_zeroize(k, sizeof(k));
    return UPK_OK;
}

upk_err upk_link_key_to_hex(const upk_link_key *k, char *out, size_t cap)
{
    if (k == NULL || out == NULL)
        return UPK_E_INVALID_ARG;
    return upk_hex_encode(k->k, sizeof(k->k), out, cap);
}

void upk_link_key_wipe(upk_link_key *k)
{
    if (k != NULL)
        mbedtls_platform_zeroize(k->k, sizeof(k->k));
}

/* The raw 32-byte tag. */
static upk_err tag_raw(const upk_link_key *k, const char *device_id, upk_topic_kind kind,
                       const void *payload, size_t len, uint8_t mac[UPK_SHA256_LEN])
{
    if (k == NULL || (payload == NULL && len > 0) || !upk_topic_kind_is_device(kind))
        return UPK_E_INVALID_ARG;
    if (!upk_id_valid(device_id))
        return UPK_E_ID_INVALID;
    const char *kstr = upk_topic_kind_str(kind);
    const mbedtls_md_info_t *md = mbedtls_md_info_from_type(MBEDTLS_MD_SHA256);
    if (md == NULL)
        return UPK_E_CRYPTO;
    static const uint8_t zero = 0;
    mbedtls_md_context_t ctx;
    mbedtls_md_init(&ctx);
    upk_err err = UPK_E_CRYPTO;
    if (mbedtls_md_setup(&ctx, md, 1) != 0 ||
        mbedtls_md_hmac_starts(&ctx, k->k, sizeof(k->k)) != 0 ||
        mbedtls_md_hmac_update(&ctx, (const uint8_t *)LINK_TAG_LABEL, sizeof(LINK_TAG_LABEL) - 1) !=
            0 ||
        mbedtls_md_hmac_update(&ctx, &zero, 1) != 0 ||
        mbedtls_md_hmac_update(&ctx, (const uint8_t *)"dev/", 4) != 0 ||
        mbedtls_md_hmac_update(&ctx, (const uint8_t *)device_id, strlen(device_id)) != 0 ||
        mbedtls_md_hmac_update(&ctx, (const uint8_t *)"/", 1) != 0 ||
        mbedtls_md_hmac_update(&ctx, (const uint8_t *)kstr, strlen(kstr)) != 0 ||
        mbedtls_md_hmac_update(&ctx, &zero, 1) != 0 ||
        (len > 0 && mbedtls_md_hmac_update(&ctx, payload, len) != 0) ||
        mbedtls_md_hmac_finish(&ctx, mac) != 0)
        goto out_ctx;
    err = UPK_OK;
out_ctx:
    mbedtls_md_free(&ctx);
    return err;
}

upk_err upk_link_tag(const upk_link_key *k, const char *device_id, upk_topic_kind kind,
                     const void *payload, size_t len, char *out, size_t cap)
{
    if (out == NULL)
        return UPK_E_INVALID_ARG;
    if (cap < UPK_LINK_TAG_LEN + 1)
        return UPK_E_BUFFER_TOO_SMALL;
    uint8_t mac[UPK_SHA256_LEN];
    upk_err err = tag_raw(k, device_id, kind, payload, len, mac);
    if (err != UPK_OK)
        return err;
    return upk_hex_encode(mac, sizeof(mac), out, cap);
}

upk_err upk_link_verify(const upk_link_key *k, const char *device_id, upk_topic_kind kind,
                        const void *payload, size_t len, const char *tag)
{
    uint8_t want[UPK_SHA256_LEN];
    upk_err err = tag_raw(k, device_id, kind, payload, len, want);
    if (err != UPK_OK)
        return err;
    if (tag == NULL || strnlen(tag, UPK_LINK_TAG_LEN + 1) != UPK_LINK_TAG_LEN)
        return UPK_E_AUTH_INVALID;
    uint8_t got[UPK_SHA256_LEN];
    if (upk_hex_decode(tag, UPK_LINK_TAG_LEN, got, sizeof(got)) != UPK_OK)
        return UPK_E_AUTH_INVALID;
    return upk_mem_equal_ct(got, want, sizeof(want)) ? UPK_OK : UPK_E_AUTH_INVALID;
}
