/* SHA-256 and HMAC-SHA256 over nettle, hex and base64 (see hash.h).
 *
 * SHA-256 comes from nettle rather than mbedTLS (which stays the signature
 * library): Debian builds nettle as a "fat" library that picks its compress
 * function at load time from the CPU's features, the SHA extensions on x86-64
 * (SHA-NI) and the ARMv8 crypto extensions on arm64, about 5x mbedTLS 2.28's
 * portable C here (docs/benchmarks.md, "SHA-256"). */
#include "upkeep/hash.h"

#include <string.h>

#include <mbedtls/base64.h>
#include <nettle/hmac.h>
#include <nettle/sha2.h>

_Static_assert(sizeof(struct sha256_ctx) <= sizeof(((upk_sha256 *)0)->opaque),
               "upk_sha256 storage too small for nettle's sha256_ctx");
_Static_assert(_Alignof(struct sha256_ctx) <= 16, "upk_sha256 storage under-aligned");
_Static_assert(SHA256_DIGEST_SIZE == UPK_SHA256_LEN, "SHA-256 digest size");

static struct sha256_ctx *ctx_of(upk_sha256 *c)
{
    return (struct sha256_ctx *)(void *)c->opaque;
}

void upk_sha256_init(upk_sha256 *ctx)
{
    sha256_init(ctx_of(ctx));
}

void upk_sha256_update(upk_sha256 *ctx, const void *data, size_t len)
{
    if (len == 0)
        return;
    sha256_update(ctx_of(ctx), len, data);
}

void upk_sha256_final(upk_sha256 *ctx, uint8_t out[UPK_SHA256_LEN])
{
    /* nettle resets the context after a digest; cleanup still wipes it. */
    sha256_digest(ctx_of(ctx), UPK_SHA256_LEN, out);
}

void upk_sha256_cleanup(upk_sha256 *ctx)
{
    explicit_bzero(ctx->opaque, sizeof(ctx->opaque));
}

void upk_sha256_buf(const void *data, size_t len, uint8_t out[UPK_SHA256_LEN])
{
    upk_sha256 c = {{0}}; /* zeroed only to keep static analysers quiet */
    upk_sha256_init(&c);
    upk_sha256_update(&c, data, len);
    upk_sha256_final(&c, out);
    upk_sha256_cleanup(&c);
}

upk_err upk_hmac_sha256(const void *key, size_t keylen, const void *msg, size_t msglen,
                        uint8_t out[UPK_SHA256_LEN])
{
    static const uint8_t none[1] = {0};
    if ((key == NULL && keylen != 0) || (msg == NULL && msglen != 0))
        return UPK_E_CRYPTO;
    struct hmac_sha256_ctx h;
    hmac_sha256_set_key(&h, keylen, keylen != 0 ? key : none);
    if (msglen != 0)
        hmac_sha256_update(&h, msglen, msg);
    hmac_sha256_digest(&h, UPK_SHA256_LEN, out);
    explicit_bzero(&h, sizeof(h)); /* key-derived state */
    return UPK_OK;
}

upk_err upk_hex_encode(const uint8_t *in, size_t len, char *out, size_t cap)
{
    static const char digits[] = "0123456789abcdef";
    if (len > (SIZE_MAX - 1) / 2 || cap < 2 * len + 1)
        return UPK_E_BUFFER_TOO_SMALL;
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 0xf];
    }
    out[2 * len] = '\0';
    return UPK_OK;
}

static int hex_val(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

upk_err upk_hex_decode(const char *hex, size_t hexlen, uint8_t *out, size_t outlen)
{
    if (hex == NULL || outlen > SIZE_MAX / 2 || hexlen != 2 * outlen)
        return UPK_E_FIELD_RANGE;
    for (size_t i = 0; i < outlen; i++) {
        int hi = hex_val(hex[2 * i]);
        int lo = hex_val(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return UPK_E_FIELD_RANGE;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return UPK_OK;
}

bool upk_sha256_hex_valid(const char *s)
{
    if (s == NULL || strnlen(s, UPK_SHA256_HEX_LEN + 1) != UPK_SHA256_HEX_LEN)
        return false;
    for (size_t i = 0; i < UPK_SHA256_HEX_LEN; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return false;
    }
    return true;
}

upk_err upk_base64_encode(const uint8_t *in, size_t len, char *out, size_t cap, size_t *outlen)
{
    /* mbedTLS returns early for empty input without writing the NUL. */
    if (len == 0) {
        if (cap < 1)
            return UPK_E_BUFFER_TOO_SMALL;
        out[0] = '\0';
        *outlen = 0;
        return UPK_OK;
    }
    size_t n = 0;
    int rc = mbedtls_base64_encode((unsigned char *)out, cap, &n, in, len);
    if (rc == MBEDTLS_ERR_BASE64_BUFFER_TOO_SMALL)
        return UPK_E_BUFFER_TOO_SMALL;
    if (rc != 0)
        return UPK_E_CRYPTO;
    *outlen = n;
    return UPK_OK;
}

/* True for the characters of the standard base64 alphabet. */
static bool b64_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '/';
}

upk_err upk_base64_decode(const char *in, size_t len, uint8_t *out, size_t cap, size_t *outlen)
{
    /* Strict RFC 4648: whole 4-character groups, padding only at the end.
     * mbedTLS alone skips line breaks and silently drops a short last group
     * ("AQI" decodes to nothing), which would make two texts one signature. */
    if (in == NULL || len % 4 != 0)
        return UPK_E_FIELD_RANGE;
    size_t pad = 0;
    while (pad < 2 && pad < len && in[len - 1 - pad] == '=')
        pad++;
    for (size_t i = 0; i < len - pad; i++) {
        if (!b64_char(in[i]))
            return UPK_E_FIELD_RANGE;
    }
    size_t n = 0;
    int rc = mbedtls_base64_decode(out, cap, &n, (const unsigned char *)in, len);
    if (rc == MBEDTLS_ERR_BASE64_BUFFER_TOO_SMALL)
        return UPK_E_BUFFER_TOO_SMALL;
    if (rc != 0)
        return UPK_E_FIELD_RANGE;
    *outlen = n;
    return UPK_OK;
}

bool upk_mem_equal_ct(const void *a, const void *b, size_t len)
{
    const volatile uint8_t *x = a;
    const volatile uint8_t *y = b;
    uint8_t diff = 0;
    for (size_t i = 0; i < len; i++)
        diff |= x[i] ^ y[i];
    return diff == 0;
}
