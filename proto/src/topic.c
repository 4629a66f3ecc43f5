/* The topic scheme (see topic.h). One table lists every kind with its shape,
 * so that builder, parser and docs/protocol.md agree. */
#include "upkeep/topic.h"

#include <stdio.h>
#include <string.h>

/* Each kind is "<head>{id}<tail>" under the prefix; broker/stats has no id.
 * The lengths are kept with the literals: the broker parses every message. */
struct kind_shape {
    const char *name;
    const char *head;
    const char *tail;
    size_t hlen;
    size_t tlen;
    bool has_id;
};

#define SHAPE(name, head, tail, has_id)                              \
    {                                                                \
        name, head, tail, sizeof(head) - 1, sizeof(tail) - 1, has_id \
    }

static const struct kind_shape shapes[UPK_TOPIC__COUNT] = {
    [UPK_TOPIC_DEV_STATE] = SHAPE("state", "dev/", "/state", true),
    [UPK_TOPIC_DEV_ONLINE] = SHAPE("online", "dev/", "/online", true),
    [UPK_TOPIC_DEV_DESIRED] = SHAPE("desired", "dev/", "/desired", true),
    [UPK_TOPIC_DEV_EVENTS] = SHAPE("events", "dev/", "/events", true),
    [UPK_TOPIC_DEV_CHUNK_REQ] = SHAPE("chunk/req", "dev/", "/chunk/req", true),
    [UPK_TOPIC_DEV_CHUNK_DATA] = SHAPE("chunk/data", "dev/", "/chunk/data", true),
    [UPK_TOPIC_DEV_ACK] = SHAPE("ack", "dev/", "/ack", true),
    [UPK_TOPIC_CTL_REQ] = SHAPE("ctl/req", "ctl/req/", "", true),
    [UPK_TOPIC_CTL_RESP] = SHAPE("ctl/resp", "ctl/resp/", "", true),
    [UPK_TOPIC_BROKER_STATS] = SHAPE("broker/stats", "broker/stats", "", false),
};

bool upk_topic_prefix_valid(const char *prefix)
{
    if (prefix == NULL)
        return false;
    size_t len = strnlen(prefix, UPK_TOPIC_PREFIX_MAX + 1);
    if (len == 0 || len > UPK_TOPIC_PREFIX_MAX)
        return false;
    if (prefix[0] == '/' || prefix[len - 1] == '/')
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = prefix[i];
        if (c == '+' || c == '#' || (c == '$' && i == 0))
            return false;
        if (c == '/' && prefix[i + 1] == '/')
            return false;
        if ((unsigned char)c < 0x20 || c == 0x7f)
            return false;
    }
    return true;
}

bool upk_topic_kind_is_device(upk_topic_kind kind)
{
    return kind <= UPK_TOPIC_DEV_ACK;
}

const char *upk_topic_kind_str(upk_topic_kind kind)
{
    if ((unsigned)kind >= (unsigned)UPK_TOPIC__COUNT)
        return "unknown";
    return shapes[kind].name;
}

upk_err upk_topic_build(char *buf, size_t cap, const char *prefix, upk_topic_kind kind,
                        const char *id)
{
    if (buf == NULL || (unsigned)kind >= (unsigned)UPK_TOPIC__COUNT ||
        !upk_topic_prefix_valid(prefix))
        return UPK_E_INVALID_ARG;
    const struct kind_shape *k = &shapes[kind];
    if (k->has_id && !upk_id_valid(id))
        return UPK_E_ID_INVALID;
    int n = snprintf(buf, cap, "%s/%s%s%s", prefix, k->head, k->has_id ? id : "", k->tail);
    if (n < 0 || (size_t)n >= cap)
        return UPK_E_BUFFER_TOO_SMALL;
    return UPK_OK;
}

/* True when the len bytes at s start with the NUL-terminated lit. */
static bool starts_with(const char *s, size_t len, const char *lit)
{
    size_t n = strlen(lit);
    return len >= n && memcmp(s, lit, n) == 0;
}

upk_err upk_topic_parse(const char *topic, size_t len, const char *prefix, upk_topic *out)
{
    if (topic == NULL || out == NULL || !upk_topic_prefix_valid(prefix))
        return UPK_E_INVALID_ARG;
    if (len > UPK_TOPIC_MAX || !starts_with(topic, len, prefix))
        return UPK_E_TOPIC_INVALID;
    size_t plen = strlen(prefix);
    if (len <= plen || topic[plen] != '/')
        return UPK_E_TOPIC_INVALID;
    return upk_topic_parse_rest(topic + plen + 1, len - plen - 1, out);
}

upk_err upk_topic_parse_rest(const char *rest, size_t rlen, upk_topic *out)
{
    if (rest == NULL || out == NULL)
        return UPK_E_INVALID_ARG;
    if (rlen == 0 || rlen > UPK_TOPIC_MAX)
        return UPK_E_TOPIC_INVALID;
    for (unsigned i = 0; i < (unsigned)UPK_TOPIC__COUNT; i++) {
        const struct kind_shape *k = &shapes[i];
        if (rlen < k->hlen + k->tlen || rest[0] != k->head[0] ||
            memcmp(rest, k->head, k->hlen) != 0)
            continue;
        if (!k->has_id) {
            if (rlen != k->hlen)
                continue;
            out->kind = (upk_topic_kind)i;
            out->id[0] = '\0';
            return UPK_OK;
        }
        /* The id is one level: it runs to the next '/', and the tail must be
         * exactly what is left (dev/x/chunk/req is not state of "x/chunk"). */
        const char *id = rest + k->hlen;
        const char *slash = memchr(id, '/', rlen - k->hlen);
        size_t idlen = slash != NULL ? (size_t)(slash - id) : rlen - k->hlen;
        if (k->hlen + idlen + k->tlen != rlen || memcmp(id + idlen, k->tail, k->tlen) != 0)
            continue;
        if (!upk_id_valid_n(id, idlen))
            return UPK_E_ID_INVALID;
        out->kind = (upk_topic_kind)i;
        memcpy(out->id, id, idlen);
        out->id[idlen] = '\0';
        return UPK_OK;
    }
    return UPK_E_TOPIC_INVALID;
}
