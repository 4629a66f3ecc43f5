/* libFuzzer target: upk_topic_parse under the default and a custom prefix.
 * A topic that parses must rebuild to the same bytes and parse to the same
 * kind and id. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "upkeep/topic.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(const uint8_t *data, size_t size, const char *prefix)
{
    upk_topic t;
    memset(&t, 0, sizeof(t));
    if (upk_topic_parse((const char *)data, size, prefix, &t) != UPK_OK)
        return;
    char buf[UPK_TOPIC_MAX + 1];
    const char *id = upk_topic_kind_is_device(t.kind) || t.kind == UPK_TOPIC_CTL_REQ ||
                             t.kind == UPK_TOPIC_CTL_RESP
                         ? t.id
                         : NULL;
    if (upk_topic_build(buf, sizeof(buf), prefix, t.kind, id) != UPK_OK)
        abort();
    if (strlen(buf) != size || memcmp(buf, data, size) != 0)
        abort();
    upk_topic u;
    if (upk_topic_parse(buf, strlen(buf), prefix, &u) != UPK_OK || u.kind != t.kind ||
        strcmp(u.id, t.id) != 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check(data, size, UPK_TOPIC_PREFIX_DEFAULT);
    check(data, size, "site-7/ota");
    return 0;
}
