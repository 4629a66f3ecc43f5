/* Authorization by role (DESIGN.md "Roles"). A concrete topic is split once
 * into kind and id (device topics by a fast path, the rest by
 * upk_topic_parse_rest) and judged against a short fixed rule list of the
 * client's role, so a check costs the same with ten devices or a million. A
 * subscription filter is judged level by level against the shapes the role
 * may read: it must be able to match one, and where the rule demands the
 * client's own id the filter must name it, so a device's `#` or
 * `dev/+/desired` is refused. Deliveries are re-checked on the concrete
 * topic, so even an allowed filter never delivers someone else's message. */
#include "core.h"

#include <stdlib.h>
#include <string.h>

/* The sentinel id used to find the id level of each topic shape. */
#define ID_SENTINEL "upk_id_level_"

enum scope { SCOPE_SELF, SCOPE_ANY };

struct rule {
    upk_topic_kind kind;
    enum scope scope;
};

#define RULES_MAX 10
struct rule_set {
    size_t n;
    struct rule r[RULES_MAX];
};

/* [role][access]: what a role may write (publish) and read (receive and
 * subscribe). Admin is handled before the table. */
static const struct rule_set rules[UPK_BP_ROLE__COUNT][2] =
    {
        [UPK_BP_ROLE_DEVICE] =
            {
                [UPK_BP_ACCESS_READ] = {3,
                                        {{UPK_TOPIC_DEV_DESIRED, SCOPE_SELF},
                                         {UPK_TOPIC_DEV_CHUNK_DATA, SCOPE_SELF},
                                         {UPK_TOPIC_DEV_ACK, SCOPE_SELF}}},
                [UPK_BP_ACCESS_WRITE] = {4,
                                         {{UPK_TOPIC_DEV_STATE, SCOPE_SELF},
                                          {UPK_TOPIC_DEV_ONLINE, SCOPE_SELF},
                                          {UPK_TOPIC_DEV_EVENTS, SCOPE_SELF},
                                          {UPK_TOPIC_DEV_CHUNK_REQ, SCOPE_SELF}}},
            },
        [UPK_BP_ROLE_CONTROLLER] =
            {
                [UPK_BP_ACCESS_READ] = {7,
                                        {{UPK_TOPIC_DEV_STATE, SCOPE_ANY},
                                         {UPK_TOPIC_DEV_ONLINE, SCOPE_ANY},
                                         {UPK_TOPIC_DEV_DESIRED, SCOPE_ANY},
                                         {UPK_TOPIC_DEV_EVENTS, SCOPE_ANY},
                                         {UPK_TOPIC_DEV_CHUNK_REQ, SCOPE_ANY},
                                         {UPK_TOPIC_DEV_CHUNK_DATA, SCOPE_ANY},
                                         {UPK_TOPIC_CTL_REQ, SCOPE_ANY}}},
                [UPK_BP_ACCESS_WRITE] = {4,
                                         {{UPK_TOPIC_DEV_DESIRED, SCOPE_ANY},
                                          {UPK_TOPIC_DEV_CHUNK_DATA, SCOPE_ANY},
                                          {UPK_TOPIC_DEV_ACK, SCOPE_ANY},
                                          {UPK_TOPIC_CTL_RESP, SCOPE_ANY}}},
            },
        [UPK_BP_ROLE_OPERATOR] =
            {
                [UPK_BP_ACCESS_READ] = {3,
                                        {{UPK_TOPIC_CTL_RESP, SCOPE_SELF},
                                         {UPK_TOPIC_DEV_STATE, SCOPE_ANY},
                                         {UPK_TOPIC_DEV_EVENTS, SCOPE_ANY}}},
                [UPK_BP_ACCESS_WRITE] = {1, {{UPK_TOPIC_CTL_REQ, SCOPE_SELF}}},
            },
        [UPK_BP_ROLE_ADMIN] = {{0, {{0, 0}}}, {0, {{0, 0}}}},
};

/* Splits s into its '/'-separated levels; false when there are too many or
 * one is too long for a pattern slot. */
static bool split_levels(const char *s, char levels[][UPK_TOPIC_PREFIX_MAX + 1], size_t max,
                         size_t *n)
{
    size_t count = 0;
    const char *p = s;
    for (;;) {
        const char *slash = strchr(p, '/');
        size_t len = slash != NULL ? (size_t)(slash - p) : strlen(p);
        if (count >= max || len > UPK_TOPIC_PREFIX_MAX)
            return false;
        memcpy(levels[count], p, len);
        levels[count][len] = '\0';
        count++;
        if (slash == NULL)
            break;
        p = slash + 1;
    }
    *n = count;
    return true;
}

upk_err upk__bp_acl_prepare(upk_bp_config *cfg)
{
    if (cfg == NULL)
        return UPK_E_INVALID_ARG;
    upk_bp_pattern *p = calloc(UPK_TOPIC__COUNT, sizeof(*p));
    if (p == NULL)
        return UPK_E_NOMEM;
    for (unsigned k = 0; k < (unsigned)UPK_TOPIC__COUNT; k++) {
        char topic[UPK_TOPIC_MAX + 1];
        bool has_id = k != UPK_TOPIC_BROKER_STATS;
        upk_err err = upk_topic_build(topic, sizeof(topic), cfg->prefix, (upk_topic_kind)k,
                                      has_id ? ID_SENTINEL : NULL);
        if (err != UPK_OK ||
            !split_levels(topic, p[k].levels, UPK_BP_FILTER_LEVELS_MAX, &p[k].nlevels)) {
            free(p);
            return err != UPK_OK ? err : UPK_E_FIELD_TOO_LONG;
        }
        p[k].id_level = p[k].nlevels;
        for (size_t i = 0; i < p[k].nlevels && has_id; i++) {
            if (strcmp(p[k].levels[i], ID_SENTINEL) == 0)
                p[k].id_level = i;
        }
    }
    free(cfg->patterns);
    cfg->patterns = p;
    cfg->prefix_len = strlen(cfg->prefix);
    memset(cfg->dev_tail_kind, UPK_TOPIC__COUNT, sizeof(cfg->dev_tail_kind));
    for (unsigned k = 0; k < (unsigned)UPK_TOPIC__COUNT; k++) {
        if (!upk_topic_kind_is_device((upk_topic_kind)k))
            continue;
        size_t len = strlen(upk_topic_kind_str((upk_topic_kind)k));
        uint8_t *slot = cfg->dev_tail_kind[len <= UPK_BP_DEV_TAIL_MAX ? len : 0];
        if (len > UPK_BP_DEV_TAIL_MAX || slot[1] != UPK_TOPIC__COUNT)
            return UPK_E_INTERNAL; /* the topic scheme outgrew this table */
        slot[slot[0] != UPK_TOPIC__COUNT] = (uint8_t)k;
    }
    memset(cfg->acl_mask, 0, sizeof(cfg->acl_mask));
    for (unsigned role = 0; role < (unsigned)UPK_BP_ROLE__COUNT; role++) {
        for (unsigned a = 0; a < 2; a++) {
            const struct rule_set *rs = &rules[role][a];
            for (size_t i = 0; i < rs->n; i++)
                cfg->acl_mask[role][a][rs->r[i].scope == SCOPE_ANY] |= 1u << rs->r[i].kind;
        }
    }
    return UPK_OK;
}

/* True when the klen bytes of tail are the tail of device kind k. */
static bool tail_is(unsigned k, const char *tail, size_t klen)
{
    const char *name = upk_topic_kind_str((upk_topic_kind)k);
    return name[0] == tail[0] && memcmp(name, tail, klen) == 0;
}

/* True when id (idlen bytes) is who's own name. */
static bool is_self(const upk_bp_identity *who, const char *id, size_t idlen)
{
    return idlen <= UPK_BP_USERNAME_MAX && strncmp(who->name, id, idlen) == 0 &&
           who->name[idlen] == '\0';
}

/* True when the concrete topic matches one of the rules of who for access
 * (READ or WRITE), judged with the bitmasks built from the rule table. */
static bool concrete_allowed(const upk_bp_config *cfg, const upk_bp_identity *who,
                             upk_bp_access access, const char *topic, size_t tlen)
{
    const uint32_t *mask = cfg->acl_mask[who->role][access]; /* [0] own id, [1] any */
    /* The prefix was validated with the config: match it here and parse the
     * rest, which is what upk_topic_parse would do at twice the cost. */
    size_t plen = cfg->prefix_len;
    if (tlen <= plen || memcmp(topic, cfg->prefix, plen) != 0 || topic[plen] != '/')
        return false;
    const char *rest = topic + plen + 1;
    size_t rlen = tlen - plen - 1;
    /* Fast path for "dev/<id>/<tail>", the bulk of all checks (every device
     * message is checked on publish and again on delivery): one split, the
     * tail matched against the six device tails by length and bytes, one
     * bit test, with the same verdicts as the parser. The id of a device's
     * own topic needs no validation: it is the authenticated name. Anything
     * else goes through the parser. */
    if (rlen > 4 && memcmp(rest, "dev/", 4) == 0) {
        const char *id = rest + 4;
        const char *slash = memchr(id, '/', rlen - 4);
        if (slash == NULL)
            return false;
        size_t idlen = (size_t)(slash - id);
        const char *tail = slash + 1;
        size_t klen = rlen - 4 - idlen - 1;
        if (klen > UPK_BP_DEV_TAIL_MAX)
            return false;
        const uint8_t *cand = cfg->dev_tail_kind[klen];
        unsigned k = cand[0];
        if (k != UPK_TOPIC__COUNT && !tail_is(k, tail, klen)) {
            k = cand[1];
            if (k != UPK_TOPIC__COUNT && !tail_is(k, tail, klen))
                k = UPK_TOPIC__COUNT;
        }
        if (k == UPK_TOPIC__COUNT)
            return false;
        uint32_t bit = 1u << k;
        if (mask[1] & bit)
            return upk_id_valid_n(id, idlen) ||
                   (who->role == UPK_BP_ROLE_DEVICE && is_self(who, id, idlen));
        if (!(mask[0] & bit) || !is_self(who, id, idlen))
            return false;
        return who->role == UPK_BP_ROLE_DEVICE || upk_id_valid_n(id, idlen);
    }
    upk_topic t;
    if (upk_topic_parse_rest(rest, rlen, &t) != UPK_OK)
        return false;
    uint32_t bit = 1u << t.kind;
    return (mask[1] & bit) || ((mask[0] & bit) && strcmp(t.id, who->name) == 0);
}

/* True when a filter level (no wildcard) may stand at the id level. */
static bool id_level_ok(const char *lvl, size_t len, enum scope scope, const char *self)
{
    if (scope == SCOPE_SELF)
        return strlen(self) == len && memcmp(lvl, self, len) == 0;
    return upk_id_valid_n(lvl, len);
}

/* True when the filter can match a topic of pattern p under the rule's scope,
 * with the id level pinned to the client's own id for SCOPE_SELF. */
static bool filter_fits(const char *filter, const upk_bp_pattern *p, enum scope scope,
                        const char *self)
{
    const char *f = filter;
    size_t i = 0;
    for (;;) {
        const char *slash = strchr(f, '/');
        size_t len = slash != NULL ? (size_t)(slash - f) : strlen(f);
        if (len == 1 && f[0] == '#') {
            /* '#' must be last; it covers the remaining levels (possibly
             * none), which must not include a level that has to be pinned. */
            if (slash != NULL)
                return false;
            return !(scope == SCOPE_SELF && p->id_level >= i && p->id_level < p->nlevels);
        }
        if (i >= p->nlevels)
            return false;
        bool plus = len == 1 && f[0] == '+';
        if (i == p->id_level) {
            if (plus) {
                if (scope == SCOPE_SELF)
                    return false;
            } else if (!id_level_ok(f, len, scope, self)) {
                return false;
            }
        } else if (!plus) {
            if (strlen(p->levels[i]) != len || memcmp(p->levels[i], f, len) != 0)
                return false;
        }
        i++;
        if (slash == NULL)
            break;
        f = slash + 1;
    }
    return i == p->nlevels;
}

bool upk__bp_acl_allows(const upk_bp_config *cfg, const upk_bp_identity *who, upk_bp_access access,
                        const char *topic)
{
    if (cfg == NULL || who == NULL || topic == NULL || cfg->patterns == NULL ||
        (unsigned)who->role >= (unsigned)UPK_BP_ROLE__COUNT)
        return false;
    if (who->role == UPK_BP_ROLE_ADMIN)
        return true;
    size_t tlen = strnlen(topic, UPK_TOPIC_MAX + 1);
    if (tlen == 0 || tlen > UPK_TOPIC_MAX)
        return false; /* longer than any upkeep topic */
    switch (access) {
    case UPK_BP_ACCESS_WRITE:
    case UPK_BP_ACCESS_READ:
        return concrete_allowed(cfg, who, access, topic, tlen);
    case UPK_BP_ACCESS_SUBSCRIBE: {
        const struct rule_set *rs = &rules[who->role][UPK_BP_ACCESS_READ];
        for (size_t i = 0; i < rs->n; i++) {
            if (filter_fits(topic, &cfg->patterns[rs->r[i].kind], rs->r[i].scope, who->name))
                return true;
        }
        return false;
    }
    }
    return false;
}
