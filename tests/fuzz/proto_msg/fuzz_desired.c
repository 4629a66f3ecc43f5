/* libFuzzer target: upk_desired_decode on dev/{d}/desired payloads. Any input must decode or fail
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
    upk_desired_msg a, b;
    memset(&a, 0, sizeof(a));
    if (upk_desired_decode((const char *)data, size, &a) != UPK_OK)
        return 0;
    char *json = NULL;
    size_t len = 0;
    if (upk_desired_encode(&a, &json, &len) != UPK_OK)
        abort();
    memset(&b, 0, sizeof(b));
    if (upk_desired_decode(json, len, &b) != UPK_OK || !upk_test_desired_eq(&a, &b))
        abort();
    upk_desired_cleanup(&a);
    upk_desired_cleanup(&b);
    free(json);
    return 0;
}
