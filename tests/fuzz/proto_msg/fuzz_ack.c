/* libFuzzer target: upk_ack_decode on dev/{d}/ack payloads. Any input must decode or fail
 * cleanly; a seq that decodes must re-encode and decode to the same seq. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "upkeep/msg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint64_t a = 0, b = 0;
    if (upk_ack_decode((const char *)data, size, &a) != UPK_OK)
        return 0;
    char *json = NULL;
    size_t len = 0;
    if (upk_ack_encode(a, &json, &len) != UPK_OK)
        abort();
    if (upk_ack_decode(json, len, &b) != UPK_OK || a != b)
        abort();
    free(json);
    return 0;
}
