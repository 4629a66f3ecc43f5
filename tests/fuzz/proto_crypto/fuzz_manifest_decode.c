/* libFuzzer target for upk_manifest_decode: any input either fails cleanly or
 * decodes into a manifest that encodes, and whose encoding decodes back into
 * an identical struct and re-encodes to identical bytes. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "upkeep/manifest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    upk_manifest m, back;
    if (upk_manifest_decode((const char *)data, size, &m) != UPK_OK)
        return 0;
    char *json = NULL, *again = NULL;
    size_t len = 0, len2 = 0;
    if (upk_manifest_encode(&m, &json, &len) != UPK_OK)
        abort(); /* decoded but not encodable: the two validators disagree */
    if (upk_manifest_decode(json, len, &back) != UPK_OK)
        abort();
    if (memcmp(&m, &back, sizeof(m)) != 0)
        abort();
    if (upk_manifest_encode(&back, &again, &len2) != UPK_OK || len2 != len ||
        memcmp(json, again, len) != 0)
        abort();
    free(again);
    free(json);
    return 0;
}
