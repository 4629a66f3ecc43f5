/* Link authentication: what the controller tells a device (desired, chunk
 * data, acks) and what a device reports (state, events, chunk requests) is
 * authenticated with a per-device symmetric link key, so that a broker admin
 * account or an on-path writer can delay and drop messages but never decide
 * an outcome. Release manifests stay signed by the release key (key.h); this
 * module covers everything else (docs/protocol.md, "Link authentication").
 *
 *   link_key(d) = HMAC-SHA256(link_secret, "upkeep-link-v1:" || d)   (32 bytes)
 *   tag         = lower-case hex HMAC-SHA256(link_key(d),
 *                   "upkeep-auth-v1" 0x00 || "dev/" d "/" kind 0x00 || payload)
 *
 * where "dev/{d}/{kind}" is the topic after its prefix (kind as
 * upk_topic_kind_str: "desired", "chunk/data", ...), so a tagged payload
 * cannot be moved to another topic or device. The tag travels as the MQTT 5
 * user property UPK_LINK_AUTH_PROP. The controller holds link_secret (distinct
 * from the broker's fleet secret) and derives any device's key; a device holds
 * only its own key. No I/O, no clock, no allocation. Any thread. */
#ifndef UPKEEP_LINKAUTH_H
#define UPKEEP_LINKAUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "upkeep/err.h"
#include "upkeep/topic.h"

#define UPK_LINK_AUTH_PROP   "upkeep-auth" /* MQTT 5 user property carrying the tag */
#define UPK_LINK_KEY_LEN     32            /* bytes of a link key */
#define UPK_LINK_KEY_HEX_LEN 64            /* chars of a link key in hex, without NUL */
#define UPK_LINK_TAG_LEN     64            /* chars of a tag (lower-case hex), without NUL */
#define UPK_LINK_SECRET_MIN  16            /* bytes a link secret must have at least */

/* A device's link key. Plain struct; wipe it with upk_link_key_wipe. */
typedef struct upk_link_key {
    uint8_t k[UPK_LINK_KEY_LEN];
} upk_link_key;

/* Derives link_key(device_id) from the controller's link secret into *out.
 * UPK_E_INVALID_ARG for a NULL argument or a secret shorter than
 * UPK_LINK_SECRET_MIN, UPK_E_ID_INVALID for a bad id, UPK_E_CRYPTO when
 * mbedTLS fails; *out untouched on failure. */
UPK_MUST_CHECK upk_err upk_link_key_derive(const void *secret, size_t secret_len,
                                           const char *device_id, upk_link_key *out);

/* Reads a key written as exactly 64 hex digits (either case), optionally
 * followed by whitespace (a key file's trailing newline), from the len bytes
 * of text. UPK_E_KEY_INVALID for anything else; *out untouched on failure. */
UPK_MUST_CHECK upk_err upk_link_key_from_hex(const char *text, size_t len, upk_link_key *out);

/* Writes k as 64 lower-case hex digits and a NUL into out (cap > 64).
 * UPK_E_BUFFER_TOO_SMALL when cap is short. */
UPK_MUST_CHECK upk_err upk_link_key_to_hex(const upk_link_key *k, char *out, size_t cap);

/* Zeroes k in a way the compiler keeps. NULL is a no-op. */
void upk_link_key_wipe(upk_link_key *k);

/* Computes the tag of the len bytes of payload (NULL allowed when len is 0)
 * published on dev/{device_id}/{kind} and writes it, 64 lower-case hex digits
 * and a NUL, into out (cap > UPK_LINK_TAG_LEN). kind must be a device kind
 * (upk_topic_kind_is_device). UPK_E_INVALID_ARG for a NULL key or out, a
 * non-device kind or a NULL payload with len > 0; UPK_E_ID_INVALID for a bad
 * id; UPK_E_BUFFER_TOO_SMALL when cap is short; UPK_E_CRYPTO when mbedTLS
 * fails. */
UPK_MUST_CHECK upk_err upk_link_tag(const upk_link_key *k, const char *device_id,
                                    upk_topic_kind kind, const void *payload, size_t len, char *out,
                                    size_t cap);

/* Checks tag (a NUL-terminated string, "" or NULL when the message carried
 * none) against the tag of payload on dev/{device_id}/{kind}, in constant
 * time over the tag. UPK_OK when it matches; UPK_E_AUTH_INVALID when it is
 * absent, malformed (not 64 hex digits; upper-case is accepted) or wrong;
 * the errors of upk_link_tag for bad arguments. */
UPK_MUST_CHECK upk_err upk_link_verify(const upk_link_key *k, const char *device_id,
                                       upk_topic_kind kind, const void *payload, size_t len,
                                       const char *tag);

#endif
