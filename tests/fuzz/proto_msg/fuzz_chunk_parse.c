/* libFuzzer target: upk_chunk_parse on dev/{d}/chunk/data payloads. Any input must decode or fail
 * cleanly; a message that decodes must re-encode and decode to the same value. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "msg_eq.h"
#include "upkeep/msg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    upk_chunk_hdr h;
    const uint8_t *payload = NULL;
    if (upk_chunk_parse(data, size, &h, &payload) != UPK_OK)
        return 0;
    /* A parsed chunk is exactly its header plus length bytes, so writing the
     * header back must reproduce the input byte for byte. */
    if (size != UPK_CHUNK_HDR_LEN + (size_t)h.length || payload != data + UPK_CHUNK_HDR_LEN)
        abort();
    uint8_t *copy = malloc(size);
    if (copy == NULL)
        return 0;
    upk_chunk_hdr_write(&h, copy);
    memcpy(copy + UPK_CHUNK_HDR_LEN, payload, h.length);
    if (memcmp(copy, data, size) != 0)
        abort();
    upk_chunk_hdr g;
    const uint8_t *p2 = NULL;
    if (upk_chunk_parse(copy, size, &g, &p2) != UPK_OK || !upk_test_chunk_hdr_eq(&h, &g))
        abort();
    free(copy);
    return 0;
}
