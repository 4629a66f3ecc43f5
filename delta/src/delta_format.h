/* Internal: the on-disk layout of a delta patch header (docs/delta-format.md)
 * and the little helpers the encoder and the decoder share. */
#ifndef UPKEEP_DELTA_FORMAT_H
#define UPKEEP_DELTA_FORMAT_H

#include <stdint.h>

#include "upkeep/delta.h"

#define UPK__DELTA_MAGIC          "UPKDELTA"
#define UPK__DELTA_MAGIC_LEN      8
#define UPK__DELTA_VERSION        1u
#define UPK__DELTA_FLAG_SPLIT     1u /* three streams instead of one */
#define UPK__DELTA_WINDOW_LOG_MIN 10
#define UPK__DELTA_VARINT_MAX     10 /* bytes of a LEB128 uint64 */

/* Everything the header holds. In the interleaved layout only ctrl_len is
 * non-zero (the single stream); diff_len and extra_len are zero. */
typedef struct upk__delta_header {
    upk_delta_info info;
    uint32_t flags;
    uint32_t window_log;
    uint64_t ctrl_len;
    uint64_t diff_len;
    uint64_t extra_len;
} upk__delta_header;

/* Serialises h into buf (UPK_DELTA_HEADER_LEN bytes). */
void upk__delta_header_write(const upk__delta_header *h, uint8_t buf[UPK_DELTA_HEADER_LEN]);

/* Parses and checks a header; on success *patch_len_out receives the exact
 * patch length the header implies (header + streams). UPK_E_DELTA_CORRUPT
 * on any malformation. */
UPK_MUST_CHECK upk_err upk__delta_header_read(const uint8_t *buf, size_t len, upk__delta_header *h,
                                              uint64_t *patch_len_out);

#endif
