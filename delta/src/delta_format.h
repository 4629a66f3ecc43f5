/* Internal: the on-disk layout of a delta patch header (docs/delta-format.md)
 * and the constants the encoder and the decoder share. */
#ifndef UPKEEP_DELTA_FORMAT_H
#define UPKEEP_DELTA_FORMAT_H

#include <stdint.h>

#include "upkeep/delta.h"

#define UPK__DELTA_MAGIC          "UPKDELTA"
#define UPK__DELTA_MAGIC_LEN      8
#define UPK__DELTA_VERSION        1u
#define UPK__DELTA_WINDOW_LOG_MIN 10
#define UPK__DELTA_VARINT_MAX     10 /* bytes of a LEB128 uint64 */

/* The five streams, in patch order. The diff bytes are stored sparsely:
 * GAPS holds the length of each run of zero diff bytes before a run of
 * non-zero ones, LENS the length of that non-zero run, VALS its bytes;
 * diff bytes after the last run are zero. */
enum { UPK__DS_CTRL, UPK__DS_GAPS, UPK__DS_LENS, UPK__DS_VALS, UPK__DS_EXTRA, UPK__DS_COUNT };

/* Everything the header holds. */
typedef struct upk__delta_header {
    upk_delta_info info;
    uint32_t window_log;
    uint64_t stream_len[UPK__DS_COUNT];
} upk__delta_header;

/* Serialises h into buf (UPK_DELTA_HEADER_LEN bytes). */
void upk__delta_header_write(const upk__delta_header *h, uint8_t buf[UPK_DELTA_HEADER_LEN]);

/* Parses and checks a header; on success *patch_len_out receives the exact
 * patch length the header implies (header + streams). UPK_E_DELTA_CORRUPT
 * on any malformation. */
UPK_MUST_CHECK upk_err upk__delta_header_read(const uint8_t *buf, size_t len, upk__delta_header *h,
                                              uint64_t *patch_len_out);

#endif
