/* libFuzzer target: upk_ctl_req_decode on ctl/req/{o} payloads. Any input must decode or fail
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
    upk_ctl_req a, b;
    memset(&a, 0, sizeof(a));
    if (upk_ctl_req_decode((const char *)data, size, &a) != UPK_OK)
        return 0;
    char *json = NULL;
    size_t len = 0;
    upk_err err = upk_ctl_req_encode(&a, &json, &len);
    if (err == UPK_E_MSG_TOO_LARGE) {
        /* cJSON may print a number longer than it was written ("1e9" becomes
         * "1000000000"), so free-form JSON can outgrow UPK_MSG_MAX; the
         * encoder must then refuse, which is what it did. */
        upk_ctl_req_cleanup(&a);
        return 0;
    }
    if (err != UPK_OK)
        abort();
    memset(&b, 0, sizeof(b));
    if (upk_ctl_req_decode(json, len, &b) != UPK_OK || !upk_test_ctl_req_eq(&a, &b))
        abort();
    upk_ctl_req_cleanup(&a);
    upk_ctl_req_cleanup(&b);
    free(json);
    return 0;
}
