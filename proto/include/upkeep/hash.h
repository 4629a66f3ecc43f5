/* SHA-256, HMAC-SHA256 and hex/base64 helpers shared by every part (SHA-256
 * and HMAC from nettle, which uses the CPU's SHA extensions; base64 from
 * mbedTLS). No I/O. Any thread; a upk_sha256 context belongs to one thread at a time. */
#ifndef UPKEEP_HASH_H
#define UPKEEP_HASH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "upkeep/err.h"

#define UPK_SHA256_LEN     32
#define UPK_SHA256_HEX_LEN 64 /* without NUL */

/* Streaming SHA-256. Embedded struct: init, update*, final; cleanup always.
 * The body is opaque storage large enough for the library's context. */
typedef struct upk_sha256 {
    _Alignas(16) unsigned char opaque[256];
} upk_sha256;

void upk_sha256_init(upk_sha256 *ctx);
void upk_sha256_update(upk_sha256 *ctx, const void *data, size_t len);
void upk_sha256_final(upk_sha256 *ctx, uint8_t out[UPK_SHA256_LEN]);
void upk_sha256_cleanup(upk_sha256 *ctx);

/* One-shot SHA-256 of len bytes. */
void upk_sha256_buf(const void *data, size_t len, uint8_t out[UPK_SHA256_LEN]);

/* HMAC-SHA256 of msg under key. */
UPK_MUST_CHECK upk_err upk_hmac_sha256(const void *key, size_t keylen, const void *msg,
                                       size_t msglen, uint8_t out[UPK_SHA256_LEN]);

/* Lower-case hex of len bytes into out (cap >= 2*len+1, NUL-terminated).
 * Returns UPK_E_BUFFER_TOO_SMALL when it does not fit. */
UPK_MUST_CHECK upk_err upk_hex_encode(const uint8_t *in, size_t len, char *out, size_t cap);

/* Decodes exactly 2*outlen hex digits (either case) from hex (hexlen bytes)
 * into out. Returns UPK_E_FIELD_RANGE on a bad digit or wrong length; out is
 * unspecified on failure. */
UPK_MUST_CHECK upk_err upk_hex_decode(const char *hex, size_t hexlen, uint8_t *out, size_t outlen);

/* True when s is exactly 64 lower-case hex digits (a sha256 in upkeep's
 * canonical text form). */
bool upk_sha256_hex_valid(const char *s);

/* Standard base64 (RFC 4648, with padding). *outlen receives the length
 * written, without the NUL that encode adds. Both return
 * UPK_E_BUFFER_TOO_SMALL when cap is short; decode returns UPK_E_FIELD_RANGE
 * for invalid input. */
UPK_MUST_CHECK upk_err upk_base64_encode(const uint8_t *in, size_t len, char *out, size_t cap,
                                         size_t *outlen);
UPK_MUST_CHECK upk_err upk_base64_decode(const char *in, size_t len, uint8_t *out, size_t cap,
                                         size_t *outlen);

/* Constant-time comparison of len bytes; true when equal. */
bool upk_mem_equal_ct(const void *a, const void *b, size_t len);

#endif
