/* Campaign create checks, continuous campaigns and retries (campaign_ext.h). */
#include "campaign_ext.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "ctl.h"
#include "upkeep/hash.h"
#include "upkeep/log.h"

#define NAMES_SHOWN 3

/* snprintf into a bounded buffer; truncation is accepted (messages). */
static void setf(char *buf, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void setf(char *buf, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = vsnprintf(buf, cap, fmt, ap);
    (void)r;
    va_end(ap);
}

static upk_err db_fail(sqlite3 *db, const char *what)
{
    upk_error("campaign: %s: %s", what, sqlite3_errmsg(db));
    return UPK_E_DB;
}

static void bind_s(sqlite3_stmt *st, int i, const char *v)
{
    sqlite3_bind_text(st, i, v, -1, SQLITE_TRANSIENT);
}

static void col_s(sqlite3_stmt *st, int i, char *out, size_t cap)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    setf(out, cap, "%s", t != NULL ? (const char *)t : "");
}

static upk_err run(sqlite3 *db, const char *sql, const char *const *b, size_t n, int *changes)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        return db_fail(db, "prepare");
    for (size_t i = 0; i < n; i++)
        bind_s(st, (int)i + 1, b[i]);
    upk_err err = sqlite3_step(st) == SQLITE_DONE ? UPK_OK : db_fail(db, "write");
    if (changes != NULL)
        *changes = sqlite3_changes(db);
    sqlite3_finalize(st);
    return err;
}

static void fmt_ll(char *buf, size_t cap, long long v)
{
    setf(buf, cap, "%lld", v);
}

/* ---- create checks */

/* Reported modules ("a,b") and installed image of device ("" unknown; the
 * image from its reported release when it sent no hash). */
static void device_facts(sqlite3 *db, const char *device, char *mods, size_t mcap, char *image,
                         size_t icap)
{
    sqlite3_stmt *st = NULL;
    mods[0] = image[0] = '\0';
    if (sqlite3_prepare_v2(db,
                           "SELECT COALESCE((SELECT modules FROM device_image WHERE device=d.id),"
                           " ''), COALESCE((SELECT image_sha256 FROM device_image WHERE"
                           " device=d.id), ''), (SELECT manifest FROM releases r WHERE"
                           " r.name=d.release AND r.version=d.version LIMIT 1) FROM devices d"
                           " WHERE d.id=?",
                           -1, &st, NULL) != SQLITE_OK)
        return;
    bind_s(st, 1, device);
    if (sqlite3_step(st) == SQLITE_ROW) {
        col_s(st, 0, mods, mcap);
        col_s(st, 1, image, icap);
        const unsigned char *man = sqlite3_column_text(st, 2);
        upk_manifest m;
        if (image[0] == '\0' && man != NULL &&
            upk_manifest_decode((const char *)man, strlen((const char *)man), &m) == UPK_OK &&
            upk_hex_encode(m.target_sha256, UPK_SHA256_LEN, image, icap) != UPK_OK)
            image[0] = '\0';
    }
    sqlite3_finalize(st);
}

static bool has_module(const char *mods, const char *module)
{
    size_t ml = strlen(module);
    for (const char *p = mods; *p != '\0';) {
        const char *comma = strchr(p, ',');
        size_t len = comma != NULL ? (size_t)(comma - p) : strlen(p);
        if (len == ml && strncmp(p, module, ml) == 0)
            return true;
        if (comma == NULL)
            break;
        p = comma + 1;
    }
    return false;
}

upk_err upk_create_check_devices(upk_store *s, const char *release, const upk_manifest *m,
                                 const char **ids, size_t *n, bool fallback_full,
                                 upk_create_check *out, const char ***fb, size_t *fbn, char *why,
                                 size_t whycap)
{
    sqlite3 *db = upk_store_db(s);
    memset(out, 0, sizeof(*out));
    *fb = NULL;
    *fbn = 0;
    char base[UPK_SHA256_HEX_LEN + 1] = "";
    bool delta = m->type == UPK_RELEASE_DELTA;
    if (delta && upk_hex_encode(m->base_sha256, UPK_SHA256_LEN, base, sizeof(base)) != UPK_OK)
        return UPK_E_INTERNAL;
    const char **off = calloc(*n ? *n : 1, sizeof(*off));
    if (off == NULL)
        return UPK_E_NOMEM;
    char have[256] = "";
    size_t kept = 0, in = *n;
    int r;
    for (size_t i = 0; i < in; i++) {
        char mods[UPK_MODULES_MAX * (UPK_ID_MAX + 1) + 1], image[UPK_SHA256_HEX_LEN + 1];
        device_facts(db, ids[i], mods, sizeof(mods), image, sizeof(image));
        if (mods[0] != '\0' && !has_module(mods, m->module)) {
            if (have[0] == '\0')
                setf(have, sizeof(have), "%s", mods);
            out->no_module++;
            continue;
        }
        if (delta && strcmp(image, base) != 0)
            off[out->not_on_base++] = ids[i];
        ids[kept++] = ids[i];
    }
    *n = kept;
    upk_err err = UPK_OK;
    if (kept == 0 && out->no_module > 0) {
        setf(why, whycap,
             "release %s needs install module '%s', which none of the %zu target %s "
             "has (%s reports: %s); release it for their module",
             release, m->module, out->no_module, out->no_module == 1 ? "device" : "devices",
             out->no_module == 1 ? "it" : "the first", have);
        err = UPK_E_MODULE_UNSUPPORTED;
        goto done;
    }
    if (out->not_on_base == 0)
        goto done;
    /* A delta for devices not on its base: the full image, or refuse. */
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db,
                           "SELECT id FROM releases WHERE name=? AND version=? AND type='full'"
                           " ORDER BY imported_ms DESC LIMIT 1",
                           -1, &st, NULL) != SQLITE_OK) {
        err = db_fail(db, "full image lookup");
        goto done;
    }
    bind_s(st, 1, m->name);
    bind_s(st, 2, m->version);
    if (sqlite3_step(st) == SQLITE_ROW)
        col_s(st, 0, out->full_release, sizeof(out->full_release));
    sqlite3_finalize(st);
    if (fallback_full && out->full_release[0] != '\0') {
        out->full_fallback = out->not_on_base;
        *fb = off;
        *fbn = out->not_on_base;
        off = NULL;
        goto done;
    }
    char names[100] = "";
    size_t len = 0;
    for (size_t i = 0; i < out->not_on_base && i < NAMES_SHOWN; i++) {
        r = snprintf(names + len, sizeof(names) - len, "%s%s", i ? ", " : "", off[i]);
        if (r < 0 || (size_t)r >= sizeof(names) - len)
            break;
        len += (size_t)r;
    }
    char sh[9];
    setf(sh, sizeof(sh), "%.8s", base);
    if (fallback_full) {
        setf(why, whycap,
             "%zu of %zu target %s not on the base image (%s...) of delta %s: %s%s; "
             "--delta-fallback full needs a full image of %s %s: none is imported",
             out->not_on_base, kept, kept == 1 ? "device is" : "devices are", sh, release, names,
             out->not_on_base > NAMES_SHOWN ? ", ..." : "", m->name, m->version);
        err = UPK_E_NOT_FOUND;
    } else {
        setf(why, whycap,
             "%zu of %zu target %s not on the base image (%s...) of delta %s: %s%s; "
             "narrow --target to devices on the base, or --delta-fallback full sends "
             "them %s",
             out->not_on_base, kept, kept == 1 ? "device is" : "devices are", sh, release, names,
             out->not_on_base > NAMES_SHOWN ? ", ..." : "",
             out->full_release[0] ? out->full_release : "a full image (none imported)");
        err = UPK_E_DELTA_BASE_MISMATCH;
    }
done:
    (void)r;
    free(off);
    return err;
}

upk_err upk_campaign_opts_save(upk_store *s, const char *campaign, bool continuous,
                               const char *full_release, const char *const *fb, size_t fbn)
{
    sqlite3 *db = upk_store_db(s);
    if (!continuous && fbn == 0)
        return UPK_OK;
    if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return db_fail(db, "begin");
    const char *b[] = {campaign, continuous ? "1" : "0", fbn ? full_release : ""};
    upk_err err = run(db,
                      "INSERT OR REPLACE INTO campaign_opts(campaign, continuous, delta_full)"
                      " VALUES(?1, ?2, ?3)",
                      b, 3, NULL);
    for (size_t i = 0; i < fbn && err == UPK_OK; i++) {
        const char *b2[] = {campaign, fb[i], full_release};
        err = run(db,
                  "INSERT OR REPLACE INTO campaign_release(campaign, device, release)"
                  " VALUES(?1, ?2, ?3)",
                  b2, 3, NULL);
    }
    if (err == UPK_OK && sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        err = db_fail(db, "commit");
    if (err != UPK_OK)
        (void)sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return err;
}

bool upk_campaign_is_continuous(upk_store *s, const char *campaign)
{
    const char *b[] = {campaign};
    int64_t v = 0;
    bool found = false;
    if (upk_store_int(s, "SELECT continuous FROM campaign_opts WHERE campaign=?", b, 1, &v,
                      &found) != UPK_OK)
        return false;
    return found && v != 0;
}

void upk_continuous_hold(upk_store *s, const upk_campaign *c, upk_step_result *res)
{
    if (res->verdict != UPK_VERDICT_COMPLETE || !upk_campaign_is_continuous(s, c->id))
        return;
    res->next.state = UPK_CAMP_RUNNING;
    res->next.finished_ms = 0;
    res->next.updated_ms = c->updated_ms;
    res->verdict = UPK_VERDICT_NONE;
}

/* ---- re-offers */

/* Rows moved back to be offered again: a started device to assigned (its
 * desired stands and its outcome counts again; prev_release kept for a
 * rollback), a never-started one to pending. */
static const char reoffer_set[] =
    "UPDATE campaign_devices SET state=CASE WHEN assigned_ms>0 THEN 'assigned' ELSE"
    " 'pending' END, assigned_ms=CASE WHEN assigned_ms>0 THEN ?1 ELSE 0 END, done_ms=0,"
    " error=''";

static upk_err notify(sqlite3 *db, const char *sql, const char *campaign, const char *now,
                      void (*changed)(const char *device, void *ud), void *ud)
{
    sqlite3_stmt *st = NULL;
    if (changed == NULL)
        return UPK_OK;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        return db_fail(db, "notify");
    bind_s(st, 1, campaign);
    bind_s(st, 2, now);
    while (sqlite3_step(st) == SQLITE_ROW)
        changed((const char *)sqlite3_column_text(st, 0), ud);
    sqlite3_finalize(st);
    return UPK_OK;
}

upk_err upk_continuous_tick(upk_store *s, const char *campaign, int64_t now_ms,
                            void (*changed)(const char *device, void *ud), void *ud, size_t *added)
{
    sqlite3 *db = upk_store_db(s);
    *added = 0;
    upk_campaign c;
    upk_err err = upk_store_campaign_get(s, campaign, &c);
    if (err != UPK_OK)
        return err;
    if (c.state != UPK_CAMP_RUNNING || !upk_campaign_is_continuous(s, campaign))
        return UPK_OK;
    char now[24], stage[24];
    fmt_ll(now, sizeof(now), now_ms);
    fmt_ll(stage, sizeof(stage), c.stage);
    /* 1. Timed out, and seen online since: offered again. */
    char sql[512];
    int r = snprintf(sql, sizeof(sql),
                     "%s WHERE campaign=?2 AND state='timed_out' AND stage<=?3 AND device IN"
                     " (SELECT id FROM devices WHERE online=1 AND last_seen_ms>"
                     "campaign_devices.done_ms)",
                     reoffer_set);
    if (r < 0 || (size_t)r >= sizeof(sql))
        return UPK_E_INTERNAL;
    const char *b[] = {now, campaign, stage};
    int changes = 0;
    if ((err = run(db, sql, b, 3, &changes)) != UPK_OK)
        return err;
    *added += (size_t)changes;
    if (changes > 0) {
        upk_info("campaign: %s offers the release again to %d devices back online", campaign,
                 changes);
        err = notify(db,
                     "SELECT device FROM campaign_devices WHERE campaign=?1 AND"
                     " state='assigned' AND assigned_ms=?2",
                     campaign, now, changed, ud);
    }
    /* 2. Devices matching the target now and not in the campaign yet join
     * the current stage (compatible hardware, not busy elsewhere). */
    upk_release_row rel;
    memset(&rel, 0, sizeof(rel));
    if ((err = upk_store_release_get(s, c.release, &rel)) != UPK_OK)
        return err;
    upk_manifest m = rel.m;
    upk_release_row_cleanup(&rel);
    char where[1024], copy[UPK_TARGET_MAX + 1], why[256], q[2048];
    const char *tb[10];
    size_t nb = 0;
    if (upk_ctl_target_sql(c.target, where, sizeof(where), copy, sizeof(copy), tb, &nb, why,
                           sizeof(why)) != UPK_OK)
        return UPK_OK;
    r = snprintf(q, sizeof(q),
                 "SELECT id, hw FROM devices WHERE %s AND id NOT IN (SELECT device FROM"
                 " campaign_devices WHERE campaign=?) AND NOT EXISTS (SELECT 1 FROM"
                 " campaign_devices cd JOIN campaigns k ON k.id=cd.campaign WHERE"
                 " cd.device=devices.id AND k.state IN ('running','paused') AND cd.state IN"
                 " ('pending','assigned','in_progress')) ORDER BY id LIMIT 1000",
                 where);
    if (r < 0 || (size_t)r >= sizeof(q))
        return UPK_E_INTERNAL;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, q, -1, &st, NULL) != SQLITE_OK)
        return db_fail(db, "join select");
    for (size_t i = 0; i < nb; i++)
        bind_s(st, (int)i + 1, tb[i]);
    bind_s(st, (int)nb + 1, campaign);
    char(*ids)[UPK_ID_MAX + 1] = calloc(1000, sizeof(*ids));
    size_t n = 0;
    while (ids != NULL && n < 1000 && sqlite3_step(st) == SQLITE_ROW) {
        const unsigned char *hw = sqlite3_column_text(st, 1);
        bool ok = false;
        for (size_t k = 0; k < m.hw_count && !ok && hw != NULL; k++)
            ok = strcmp(m.hw[k], (const char *)hw) == 0;
        if (ok)
            col_s(st, 0, ids[n++], UPK_ID_MAX + 1);
    }
    sqlite3_finalize(st);
    if (ids == NULL)
        return UPK_E_NOMEM;
    for (size_t i = 0; i < n && err == UPK_OK; i++) {
        uint8_t key[32];
        upk_engine_rank_key(c.id, ids[i], key);
        long long rank = 0;
        for (int k = 0; k < 7; k++)
            rank = (rank << 8) | key[k];
        char rk[24];
        fmt_ll(rk, sizeof(rk), rank);
        const char *ib[] = {campaign, ids[i], stage, rk};
        err = run(db,
                  "INSERT OR IGNORE INTO campaign_devices(campaign, device, stage, rank, state)"
                  " VALUES(?1, ?2, ?3, ?4, 'pending')",
                  ib, 4, NULL);
    }
    if (n > 0 && err == UPK_OK) {
        upk_info("campaign: %s: %zu %s joined (continuous)", campaign, n,
                 n == 1 ? "device" : "devices");
        *added += n;
    }
    free(ids);
    return err;
}

upk_err upk_campaign_retry(upk_store *s, const char *campaign, const char *device, int64_t now_ms,
                           void (*changed)(const char *device, void *ud), void *ud, size_t *count,
                           char *why, size_t whycap)
{
    sqlite3 *db = upk_store_db(s);
    *count = 0;
    int r;
    upk_campaign c;
    upk_err err = upk_store_campaign_get(s, campaign, &c);
    if (err != UPK_OK) {
        setf(why, whycap, "no campaign '%s'; `upkeep campaign list` lists them", campaign);
        return err;
    }
    if (c.state != UPK_CAMP_RUNNING && c.state != UPK_CAMP_PAUSED) {
        setf(why, whycap, "campaign '%s' is %s; only a running or paused campaign retries",
             campaign, upk_camp_state_str(c.state));
        return UPK_E_STATE_INVALID;
    }
    if (device != NULL) {
        sqlite3_stmt *st = NULL;
        char state[32] = "";
        if (sqlite3_prepare_v2(db,
                               "SELECT state FROM campaign_devices WHERE campaign=? AND device=?",
                               -1, &st, NULL) != SQLITE_OK)
            return db_fail(db, "retry lookup");
        bind_s(st, 1, campaign);
        bind_s(st, 2, device);
        bool found = sqlite3_step(st) == SQLITE_ROW;
        if (found)
            col_s(st, 0, state, sizeof(state));
        sqlite3_finalize(st);
        if (!found) {
            setf(why, whycap, "device '%s' is not in campaign '%s'", device, campaign);
            return UPK_E_NOT_FOUND;
        }
        if (strcmp(state, "failed") != 0 && strcmp(state, "timed_out") != 0) {
            setf(why, whycap,
                 "device '%s' is %s in campaign '%s'; only a failed or "
                 "timed-out device is retried",
                 device, state, campaign);
            return UPK_E_STATE_INVALID;
        }
    }
    (void)r;
    if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return db_fail(db, "begin");
    char now[24], sql[512];
    fmt_ll(now, sizeof(now), now_ms);
    const char *dev = device != NULL ? device : "";
    const char *b[] = {now, campaign, dev};
    /* A new attempt number makes the desired message differ from the one
     * the device already answered. */
    err = run(db,
              "INSERT INTO campaign_attempts(campaign, device, attempt) SELECT campaign,"
              " device, 1 FROM campaign_devices WHERE campaign=?2 AND state IN"
              " ('failed','timed_out') AND assigned_ms>0 AND (?3='' OR device=?3) AND ?1<>''"
              " ON CONFLICT(campaign, device) DO UPDATE SET attempt=attempt+1",
              b, 3, NULL);
    int changes = 0;
    if (err == UPK_OK) {
        int rr = snprintf(sql, sizeof(sql),
                          "%s WHERE campaign=?2 AND state IN ('failed','timed_out') AND (?3=''"
                          " OR device=?3)",
                          reoffer_set);
        err = rr < 0 || (size_t)rr >= sizeof(sql) ? UPK_E_INTERNAL : run(db, sql, b, 3, &changes);
    }
    if (err == UPK_OK)
        err = run(db,
                  "UPDATE devices SET desired_acked=0 WHERE id IN (SELECT device FROM"
                  " campaign_devices WHERE campaign=?2 AND state='assigned' AND assigned_ms=?1)",
                  b, 2, NULL);
    if (err == UPK_OK && sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        err = db_fail(db, "commit");
    if (err != UPK_OK) {
        (void)sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        return err;
    }
    *count = (size_t)changes;
    return notify(db,
                  "SELECT device FROM campaign_devices WHERE campaign=?1 AND state='assigned'"
                  " AND assigned_ms=?2",
                  campaign, now, changed, ud);
}

uint32_t upk_desired_attempt(upk_store *s, const char *device, const char *campaign)
{
    const char *b[] = {campaign, device};
    int64_t v = 0;
    bool found = false;
    if (campaign[0] == '\0' ||
        upk_store_int(s, "SELECT attempt FROM campaign_attempts WHERE campaign=? AND device=?", b,
                      2, &v, &found) != UPK_OK ||
        !found || v < 0 || v > UINT32_MAX)
        return 0;
    return (uint32_t)v;
}
