/* The table of connected clients: records by client id (a map) with a
 * direct-mapped cache by the broker's connection pointer in front, so the
 * three lookups of every message (publish check, message, delivery check)
 * cost a multiply and two short compares instead of hashing the id; and
 * each record's memo of the last topic its identity may publish to. */
#include "core.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Fibonacci hashing of the pointer: contexts are heap blocks, so the low
 * bits carry little; the multiply spreads the rest over the top bits. */
static size_t slot_of(const void *conn)
{
    uint64_t x = (uint64_t)(uintptr_t)conn;
    return (size_t)((x * 0x9E3779B97F4A7C15ULL) >> (64 - UPK_BP_CLIENT_CACHE_BITS));
}

/* Removes r from the cache; r is only ever held in the slot of r->conn. */
static void uncache(upk_bp_clients *t, const upk_bp_client *r)
{
    size_t s = slot_of(r->conn);
    if (t->cache[s] == r)
        t->cache[s] = NULL;
}

upk_err upk__bp_clients_init(upk_bp_clients *t)
{
    if (t == NULL)
        return UPK_E_INVALID_ARG;
    memset(t->cache, 0, sizeof(t->cache));
    t->cache_hits = 0;
    t->cache_misses = 0;
    return upk__bp_map_init(&t->by_id, 1024);
}

void upk__bp_clients_cleanup(upk_bp_clients *t)
{
    if (t == NULL)
        return;
    memset(t->cache, 0, sizeof(t->cache));
    upk__bp_map_cleanup(&t->by_id, free);
}

upk_bp_client *upk__bp_clients_find(upk_bp_clients *t, const void *conn, const char *id,
                                    const char *user)
{
    if (t == NULL || conn == NULL || id == NULL || user == NULL)
        return NULL;
    size_t s = slot_of(conn);
    upk_bp_client *r = t->cache[s];
    if (r != NULL && r->conn == conn && strcmp(r->id, id) == 0 && strcmp(r->who.name, user) == 0) {
        t->cache_hits++;
        return r;
    }
    t->cache_misses++;
    r = upk__bp_map_get(&t->by_id, id);
    if (r == NULL || r->conn != conn || strcmp(r->who.name, user) != 0)
        return NULL;
    t->cache[s] = r; /* s is the slot of r->conn: the invariant holds */
    return r;
}

upk_err upk__bp_clients_bind(upk_bp_clients *t, const void *conn, const char *id,
                             const upk_bp_identity *who, bool refused, const upk_bp_limits *lim,
                             double now, upk_bp_client **out)
{
    if (t == NULL || conn == NULL || id == NULL || who == NULL || lim == NULL)
        return UPK_E_INVALID_ARG;
    upk_bp_client *r = upk__bp_map_get(&t->by_id, id);
    if (r == NULL) {
        size_t idlen = strlen(id);
        r = calloc(1, sizeof(*r) + idlen + 1);
        if (r == NULL)
            return UPK_E_NOMEM;
        memcpy(r->id, id, idlen + 1);
        upk_err e = upk__bp_map_put(&t->by_id, id, r);
        if (e != UPK_OK) {
            free(r);
            return e;
        }
    } else {
        uncache(t, r); /* it may move to another connection's slot */
    }
    r->conn = conn;
    r->who = *who;
    r->who.name[sizeof(r->who.name) - 1] = '\0';
    r->refused = refused;
    int n =
        snprintf(r->sender, sizeof(r->sender), "%s:%s", upk__bp_role_str(who->role), r->who.name);
    r->sender_len = n > 0 ? (size_t)n : 0; /* never truncated: role + ':' + name fit */
    upk__bp_rate_init(&r->rate, lim, now);
    r->write_ok[0] = '\0'; /* a verdict of the earlier identity */
    t->cache[slot_of(conn)] = r;
    if (out != NULL)
        *out = r;
    return UPK_OK;
}

bool upk__bp_clients_drop(upk_bp_clients *t, const void *conn, const char *id)
{
    if (t == NULL || id == NULL)
        return false;
    upk_bp_client *r = upk__bp_map_get(&t->by_id, id);
    if (r == NULL || r->conn != conn)
        return false;
    uncache(t, r);
    free(upk__bp_map_remove(&t->by_id, id));
    return true;
}

size_t upk__bp_clients_count(const upk_bp_clients *t)
{
    return t != NULL ? t->by_id.count : 0;
}

bool upk__bp_client_may_write(const upk_bp_config *cfg, upk_bp_client *r, const char *topic)
{
    if (cfg == NULL || r == NULL || topic == NULL)
        return false;
    if (r->write_ok[0] != '\0' && strcmp(r->write_ok, topic) == 0) {
        r->write_memo_hits++;
        return true;
    }
    if (!upk__bp_acl_allows(cfg, &r->who, UPK_BP_ACCESS_WRITE, topic))
        return false;
    size_t len = strnlen(topic, UPK_BP_WRITE_MEMO_MAX + 1);
    if (len <= UPK_BP_WRITE_MEMO_MAX)
        memcpy(r->write_ok, topic, len + 1);
    return true;
}
