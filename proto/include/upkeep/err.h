/* upkeep error codes: the one error type every part of upkeep returns.
 *
 * Action functions return upk_err; 0 (UPK_OK) is success. Each code has a
 * stable string name (upk_err_str) which is also what goes on the wire in
 * events and operator replies, so names never change once shipped; numeric
 * values are internal and may be renumbered. New codes are appended. */
#ifndef UPKEEP_ERR_H
#define UPKEEP_ERR_H

#include <stdbool.h>
#include <stddef.h>

#if defined(__GNUC__) || defined(__clang__)
#define UPK_MUST_CHECK __attribute__((warn_unused_result))
#else
#define UPK_MUST_CHECK
#endif

/* X(NAME, human message). The wire name is the NAME text. */
#define UPK_ERR_MAP(X)                                                                         \
    X(OK, "success")                                                                           \
    X(NOMEM, "out of memory")                                                                  \
    X(INVALID_ARG, "invalid argument")                                                         \
    X(BUFFER_TOO_SMALL, "output buffer too small")                                             \
    X(ID_INVALID, "identifier is not 1-64 chars of [A-Za-z0-9._-] starting with [A-Za-z0-9_]") \
    X(TOPIC_INVALID, "topic does not match the upkeep topic scheme")                           \
    X(JSON_INVALID, "payload is not valid JSON")                                               \
    X(FIELD_MISSING, "a required field is missing")                                            \
    X(FIELD_TYPE, "a field has the wrong type")                                                \
    X(FIELD_TOO_LONG, "a field or list is longer than its limit")                              \
    X(FIELD_RANGE, "a field value is out of range")                                            \
    X(MSG_TOO_LARGE, "message is larger than its limit")                                       \
    X(VERSION_UNSUPPORTED, "message version is not supported")                                 \
    X(KEY_INVALID, "key is malformed or not an ECDSA P-256 key")                               \
    X(KEY_UNKNOWN, "signing key is not pinned")                                                \
    X(SIG_INVALID, "signature does not verify")                                                \
    X(CRYPTO, "cryptographic library failure")                                                 \
    X(MANIFEST_INVALID, "release manifest is malformed")                                       \
    X(MANIFEST_EXPIRED, "release manifest has expired")                                        \
    X(MANIFEST_NOT_YET_VALID, "release manifest is not valid yet")                             \
    X(ROLLBACK_REJECTED, "security_version is below the installed one")                        \
    X(HW_INCOMPATIBLE, "release does not list this hardware")                                  \
    X(MODULE_UNSUPPORTED, "release needs an install module this device lacks")                 \
    X(SIZE_MISMATCH, "artifact size differs from the manifest")                                \
    X(HASH_MISMATCH, "artifact sha256 differs from the manifest")                              \
    X(DELTA_BASE_MISMATCH, "installed image is not the delta's base")                          \
    X(DELTA_CORRUPT, "delta patch is corrupt, truncated or hostile")                           \
    X(CHUNK_INVALID, "chunk message is malformed")                                             \
    X(CHUNK_UNEXPECTED, "chunk was not requested")                                             \
    X(NOT_FOUND, "no such object")                                                             \
    X(EXISTS, "object already exists")                                                         \
    X(DENIED, "not allowed")                                                                   \
    X(AUTH_FAILED, "authentication failed")                                                    \
    X(LOCKED_OUT, "too many failed logins; try again later")                                   \
    X(RATE_LIMITED, "rate limit exceeded")                                                     \
    X(CONFIG_INVALID, "configuration is invalid")                                              \
    X(IO, "input/output error")                                                                \
    X(TIMEOUT, "timed out")                                                                    \
    X(CONN, "connection to the broker failed or was lost")                                     \
    X(BUSY, "busy with another operation")                                                     \
    X(STATE_INVALID, "operation not allowed in the current state")                             \
    X(STATE_CORRUPT, "persisted state is corrupt")                                             \
    X(INSTALL_FAILED, "install module failed")                                                 \
    X(ACTIVATE_FAILED, "activation failed")                                                    \
    X(HEALTH_FAILED, "health check failed")                                                    \
    X(HEALTH_TIMEOUT, "health check timed out")                                                \
    X(ROLLBACK_FAILED, "rollback failed")                                                      \
    X(SUPERSEDED, "update superseded by a newer desired release")                              \
    X(CANCELLED, "update cancelled")                                                           \
    X(DB, "database error")                                                                    \
    X(INTERNAL, "internal error")                                                              \
    X(TLS_UNTRUSTED, "broker TLS certificate not trusted (unknown CA, wrong name or expired)") \
    X(TLS_FAILED, "TLS connection failed (the broker refused our certificate or TLS setup)")   \
    X(AUTH_INVALID, "link authentication tag is missing or wrong")                             \
    X(AUTH_REQUIRED, "message carries no link authentication tag where one is required")       \
    X(REPLAYED, "desired counter is not newer than the last accepted one")                     \
    X(DESIRED_STALE, "desired message is past its fresh_until time")                           \
    X(DOWNGRADE_REJECTED, "release is older than the installed one and not a rollback")        \
    X(TEXT_UNSAFE, "text holds control characters or is not valid UTF-8")

typedef enum upk_err {
#define UPK__ERR_ENUM(name, msg) UPK_E_##name,
    UPK_ERR_MAP(UPK__ERR_ENUM)
#undef UPK__ERR_ENUM
        UPK_E__COUNT
} upk_err;

#define UPK_OK UPK_E_OK

/* Stable wire name of err ("SIG_INVALID"); "UNKNOWN" for out-of-range values.
 * Returns a static string; never NULL. */
const char *upk_err_str(upk_err err);

/* Human message for err; static string, never NULL. */
const char *upk_err_msg(upk_err err);

/* Parses a wire name back into its code. Returns false (and leaves *out
 * untouched) when name is not a known code. */
bool upk_err_from_str(const char *name, upk_err *out);

#endif
