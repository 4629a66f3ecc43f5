/* Binary delta patches: make a patch from an old and a new image, and apply
 * it on a device by reading the old image with random access and writing the
 * new one sequentially, in memory bounded independently of image size (apart
 * from the zstd window, which the format caps). Format: docs/delta-format.md.
 * Any thread; no shared state. */
#ifndef UPKEEP_DELTA_H
#define UPKEEP_DELTA_H

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

#endif
