/* libFuzzer target: upk_chunk_req_decode on dev/{d}/chunk/req payloads. Any input must decode or
 * fail cleanly; a message that decodes must re-encode and decode to the same value. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "msg_eq.h"
#include "upkeep/msg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    upk_chunk_req a, b;
    memset(&a, 0, sizeof(a));
    if (upk_chunk_req_decode((const char *)data, size, &a) != UPK_OK)
        return 0;
    char *json = NULL;
    size_t len = 0;
    if (upk_chunk_req_encode(&a, &json, &len) != UPK_OK)
        abort();
    memset(&b, 0, sizeof(b));
    if (upk_chunk_req_decode(json, len, &b) != UPK_OK || !upk_test_chunk_req_eq(&a, &b))
        abort();
    free(json);
    return 0;
}
