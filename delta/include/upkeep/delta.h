/* Binary delta patches: make a patch from an old and a new image, and apply
 * it on a device by reading the old image with random access and writing the
 * new one sequentially, in memory bounded independently of image size (apart
 * from the zstd window, which the format caps). Format: docs/delta-format.md.
 * Any thread; no shared state. */
#ifndef UPKEEP_DELTA_H
#define UPKEEP_DELTA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "upkeep/err.h"
#include "upkeep/hash.h"

/* What a patch's header says. */
typedef struct upk_delta_info {
    uint64_t old_size;
    uint64_t new_size;
    uint8_t old_sha256[UPK_SHA256_LEN];
    uint8_t new_sha256[UPK_SHA256_LEN];
} upk_delta_info;

/* Makes a patch turning old_path into new_path, written to patch_path
 * (replaced atomically). */
UPK_MUST_CHECK upk_err upk_delta_make(const char *old_path, const char *new_path,
                                      const char *patch_path);

/* Reads and checks a patch's header. UPK_E_DELTA_CORRUPT when malformed. */
UPK_MUST_CHECK upk_err upk_delta_read_info(const char *patch_path, upk_delta_info *out);

/* Applies patch_path to old_path, writing out_path (created or truncated;
 * fsynced; removed again on any failure). Checks old_path against the
 * header's old size and hash first (UPK_E_DELTA_BASE_MISMATCH) and the output
 * against its new size and hash (UPK_E_HASH_MISMATCH); UPK_E_DELTA_CORRUPT
 * for a corrupt, truncated or hostile patch; UPK_E_IO for I/O errors. */
UPK_MUST_CHECK upk_err upk_delta_apply(const char *old_path, const char *patch_path,
                                       const char *out_path);

/* ---- Extensions (owned by the delta engineer) ---------------------------- */

/* Notes on upk_delta_apply: a regular old image is mmapped read-only (block
 * devices and unmappable files are read with pread), so it must not shrink
 * while a patch is applied; out_path naming the old image itself is refused
 * (UPK_E_INVALID_ARG). The header's new_size comes from the patch: a caller
 * that knows the expected size (the agent, from the signed manifest) should
 * compare upk_delta_read_info's new_size first, so that a bad header cannot
 * make it write up to UPK_DELTA_MAX_SIZE bytes before the hash check. */

/* Limits. A patch's header may not claim sizes above UPK_DELTA_MAX_SIZE;
 * upk_delta_make refuses an old or new image above UPK_DELTA_MAX_MAKE_SIZE
 * (UPK_E_FIELD_RANGE), since it holds both plus a suffix array in memory.
 * Each zstd stream's window is at most 2^UPK_DELTA_WINDOW_LOG_MAX bytes; the
 * decoder refuses a frame demanding more (UPK_E_DELTA_CORRUPT). */
#define UPK_DELTA_MAX_SIZE       (UINT64_C(1) << 40)
#define UPK_DELTA_MAX_MAKE_SIZE  (UINT64_C(1) << 30)
#define UPK_DELTA_WINDOW_LOG_MAX 23

/* How upk_delta_make_ex builds a patch. Zero-initialised means the defaults
 * (those upk_delta_make uses). */
typedef struct upk_delta_options {
    int level; /* zstd level 1..22; 0 = default (19) */
} upk_delta_options;

/* upk_delta_make with options (opts may be NULL for the defaults). */
UPK_MUST_CHECK upk_err upk_delta_make_ex(const char *old_path, const char *new_path,
                                         const char *patch_path, const upk_delta_options *opts);

/* Makes a patch from memory. *patch receives a malloc'd buffer (caller
 * frees with free()) of *patch_len bytes; both untouched on failure. */
UPK_MUST_CHECK upk_err upk_delta_make_mem(const uint8_t *old_data, size_t old_len,
                                          const uint8_t *new_data, size_t new_len,
                                          const upk_delta_options *opts, uint8_t **patch,
                                          size_t *patch_len);

/* Parses a patch header from the first len bytes of a patch (at least
 * UPK_DELTA_HEADER_LEN); checks the header alone, not that the streams it
 * announces are present. UPK_E_DELTA_CORRUPT when malformed. */
#define UPK_DELTA_HEADER_LEN 144
UPK_MUST_CHECK upk_err upk_delta_parse_info(const uint8_t *buf, size_t len, upk_delta_info *out);

/* Applies a patch held in memory to old_data, writing the new image into
 * out (out_cap bytes; UPK_E_BUFFER_TOO_SMALL when the header's new size does
 * not fit). Same checks and errors as upk_delta_apply; *out_len receives the
 * new size on success; out's content is unspecified on failure. This is the
 * decoder the fuzz target drives. */
UPK_MUST_CHECK upk_err upk_delta_apply_mem(const uint8_t *old_data, size_t old_len,
                                           const uint8_t *patch, size_t patch_len, uint8_t *out,
                                           size_t out_cap, size_t *out_len);

#endif
