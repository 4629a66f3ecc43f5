/* The device side of link authentication (docs/protocol.md 8.2 and 5.3):
 * which desired messages a device holding a link key may act on. Pure
 * decisions; the agent applies them and keeps the state (journal.c). */
#include "agent_int.h"

#include <string.h>

upk_err upk__link_check_desired(const upk__link *st, const upk_link_key *key, const char *device_id,
                                const char *payload, size_t len, const char *tag, int64_t now,
                                upk__link *next)
{
    if (st == NULL || key == NULL || next == NULL || (payload == NULL && len > 0))
        return UPK_E_INVALID_ARG;
    /* An empty retained payload cannot carry a tag: a clear is a tagged
     * {"v":1,"ctr":N,...} instead. */
    if (len == 0)
        return UPK_E_AUTH_INVALID;
    upk_err err = upk_link_verify(key, device_id, UPK_TOPIC_DEV_DESIRED, payload, len, tag);
    if (err != UPK_OK)
        return err;
    uint8_t sha[UPK_SHA256_LEN];
    upk_sha256_buf(payload, len, sha);
    upk_desired_msg d;
    memset(&d, 0, sizeof(d));
    if (upk_desired_decode(payload, len, &d) != UPK_OK) {
        /* Authentic but unreadable: the decoder names it later. */
        *next = *st;
        return UPK_OK;
    }
    upk_desired_cleanup(&d);
    if (d.ctr < st->ctr ||
        (d.ctr == st->ctr && st->ctr != 0 && !upk_mem_equal_ct(sha, st->sha, UPK_SHA256_LEN)))
        return UPK_E_REPLAYED;
    if (d.fresh_until != 0 && d.fresh_until <= now)
        return UPK_E_DESIRED_STALE;
    next->ctr = d.ctr;
    memcpy(next->sha, sha, UPK_SHA256_LEN);
    next->fresh_until = d.fresh_until;
    return UPK_OK;
}
