/* Lockout and hold-off table: counts failed logins per username and per
 * address inside a window, refuses a key for a cooling-off period once it
 * passes its limit, and holds off clients kicked for flooding. Bounded by
 * lockout.max_entries; expired entries are pruned when the table is full and
 * on the plugin's timer. */
#include "core.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct lock_entry {
    uint32_t failures;
    double window_start;
    double locked_until; /* 0 = not locked */
};

#define KEY_MAX (UPK_BP_USERNAME_MAX + 64)

static bool make_key(char *buf, size_t cap, upk_bp_lock_kind kind, const char *key)
{
    if (key == NULL)
        return false;
    int n = snprintf(buf, cap, "%c:%s", (char)kind, key);
    return n > 0 && (size_t)n < cap;
}

upk_err upk__bp_lockout_init(upk_bp_lockout *lo, const upk_bp_lockout_cfg *cfg)
{
    if (lo == NULL || cfg == NULL)
        return UPK_E_INVALID_ARG;
    lo->cfg = *cfg;
    return upk__bp_map_init(&lo->entries, 256);
}

void upk__bp_lockout_cleanup(upk_bp_lockout *lo)
{
    if (lo != NULL)
        upk__bp_map_cleanup(&lo->entries, free);
}

static uint32_t limit_of(const upk_bp_lockout *lo, upk_bp_lock_kind kind)
{
    switch (kind) {
    case UPK_BP_LOCK_USERNAME:
        return lo->cfg.max_failures_per_username;
    case UPK_BP_LOCK_ADDRESS:
        return lo->cfg.max_failures_per_address;
    case UPK_BP_LOCK_HOLDOFF:
        break;
    }
    return 0;
}

static bool expired(const char *key, void *value, void *ctx)
{
    const struct lock_entry *e = value;
    const upk_bp_lockout *lo = ((void **)ctx)[0];
    double now = *(const double *)((void **)ctx)[1];
    (void)key;
    if (e->locked_until > 0)
        return e->locked_until <= now;
    return now - e->window_start >= (double)lo->cfg.window_s;
}

size_t upk__bp_lockout_prune(upk_bp_lockout *lo, double now)
{
    if (lo == NULL)
        return 0;
    void *ctx[2] = {lo, &now};
    return upk__bp_map_prune(&lo->entries, expired, ctx, free);
}

size_t upk__bp_lockout_count(const upk_bp_lockout *lo)
{
    return lo != NULL ? lo->entries.count : 0;
}

/* Finds or creates the entry for k; NULL when the table is full of live
 * entries (the failure then goes uncounted, which errs on the side of letting
 * the broker keep working under a flood of distinct names). */
static struct lock_entry *entry_for(upk_bp_lockout *lo, const char *k, double now)
{
    struct lock_entry *e = upk__bp_map_get(&lo->entries, k);
    if (e != NULL)
        return e;
    if (lo->entries.count >= lo->cfg.max_entries &&
        (upk__bp_lockout_prune(lo, now) == 0 || lo->entries.count >= lo->cfg.max_entries))
        return NULL;
    e = calloc(1, sizeof(*e));
    if (e == NULL)
        return NULL;
    e->window_start = now;
    if (upk__bp_map_put(&lo->entries, k, e) != UPK_OK) {
        free(e);
        return NULL;
    }
    return e;
}

bool upk__bp_lockout_is_locked(upk_bp_lockout *lo, upk_bp_lock_kind kind, const char *key,
                               double now)
{
    char k[KEY_MAX];
    if (lo == NULL || !make_key(k, sizeof(k), kind, key))
        return false;
    struct lock_entry *e = upk__bp_map_get(&lo->entries, k);
    if (e == NULL || e->locked_until == 0)
        return false;
    if (e->locked_until > now)
        return true;
    /* The cooling-off period is over: start afresh. */
    free(upk__bp_map_remove(&lo->entries, k));
    return false;
}

bool upk__bp_lockout_fail(upk_bp_lockout *lo, upk_bp_lock_kind kind, const char *key, double now)
{
    char k[KEY_MAX];
    if (lo == NULL)
        return false;
    uint32_t limit = limit_of(lo, kind);
    if (limit == 0 || !make_key(k, sizeof(k), kind, key))
        return false;
    struct lock_entry *e = entry_for(lo, k, now);
    if (e == NULL)
        return false;
    if (e->locked_until > now)
        return false;
    if (now - e->window_start >= (double)lo->cfg.window_s) {
        e->window_start = now;
        e->failures = 0;
    }
    e->failures++;
    if (e->failures >= limit) {
        e->locked_until = now + (double)lo->cfg.lockout_s;
        return true;
    }
    return false;
}

void upk__bp_lockout_forget(upk_bp_lockout *lo, upk_bp_lock_kind kind, const char *key)
{
    char k[KEY_MAX];
    if (lo == NULL || !make_key(k, sizeof(k), kind, key))
        return;
    free(upk__bp_map_remove(&lo->entries, k));
}

void upk__bp_lockout_hold(upk_bp_lockout *lo, upk_bp_lock_kind kind, const char *key, double now,
                          double seconds)
{
    char k[KEY_MAX];
    if (lo == NULL || seconds <= 0 || !make_key(k, sizeof(k), kind, key))
        return;
    struct lock_entry *e = entry_for(lo, k, now);
    if (e != NULL)
        e->locked_until = now + seconds;
}
