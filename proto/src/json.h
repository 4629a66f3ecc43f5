/* Internal (upk__json_*) helpers for the proto decoders: typed, bounded field
 * readers over cJSON that return the named upk_err of the first problem.
 * Every reader leaves its output untouched on failure. Not part of the
 * public API. */
#ifndef UPKEEP_PROTO_JSON_H
#define UPKEEP_PROTO_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "upkeep/err.h"

/* Parses exactly len bytes (no NUL needed) into an object. Returns
 * UPK_E_MSG_TOO_LARGE over max; UPK_E_JSON_INVALID for non-JSON, trailing
 * bytes, any NUL (a raw 0 byte or a \u0000 escape, which C strings cannot
 * carry) and raw control characters inside strings; UPK_E_FIELD_TYPE when
 * the top level is not an object; and UPK_E_VERSION_UNSUPPORTED unless "v" equals version
 * (UPK_E_FIELD_MISSING when "v" is absent). Caller frees *out with
 * cJSON_Delete. */
upk_err upk__json_parse_object(const char *json, size_t len, size_t max, int version, cJSON **out);

/* UPK_OK when no object inside v (v included) has two members of the same
 * name, UPK_E_JSON_INVALID when one has, UPK_E_NOMEM. The message decoders
 * apply it to whole messages, the encoders to caller-built JSON. (Manifests
 * check their own keys and report MANIFEST_INVALID.) */
upk_err upk__json_check_keys(const cJSON *v);

/* String field of at most max chars (no NUL inside) copied into out (cap >
 * max). Missing: UPK_E_FIELD_MISSING unless optional (then out = ""). */
upk_err upk__json_str(const cJSON *obj, const char *name, bool optional, char *out, size_t max);

/* Like upk__json_str and the value must also be a valid id (UPK_E_ID_INVALID);
 * an optional absent or "" value gives "". */
upk_err upk__json_id(const cJSON *obj, const char *name, bool optional, char *out);

/* Non-negative integer field <= max (exactly representable: <= 2^53).
 * Missing optional gives 0. */
upk_err upk__json_u64(const cJSON *obj, const char *name, bool optional, uint64_t max,
                      uint64_t *out);

/* Signed integer field in [min, max]. Missing optional gives 0. */
upk_err upk__json_i64(const cJSON *obj, const char *name, bool optional, int64_t min, int64_t max,
                      int64_t *out);

/* Boolean field. Missing optional gives false. */
upk_err upk__json_bool(const cJSON *obj, const char *name, bool optional, bool *out);

/* 64-hex sha256 field decoded into out. Missing optional gives all zero. */
upk_err upk__json_sha256(const cJSON *obj, const char *name, bool optional, uint8_t out[32]);

/* Error-code field holding a wire name (upk_err_str); unknown names give
 * UPK_E_FIELD_RANGE. Missing optional gives UPK_OK. */
upk_err upk__json_err(const cJSON *obj, const char *name, bool optional, upk_err *out);

/* Prints obj compactly into a new string (*out, *outlen); frees nothing.
 * UPK_E_NOMEM on failure. */
upk_err upk__json_print(const cJSON *obj, char **out, size_t *outlen);

#define UPK__JSON_SAFE_INT_MAX 9007199254740992ULL /* 2^53 */

#endif
