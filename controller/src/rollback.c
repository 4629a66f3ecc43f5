/* Campaign rollback plan and progress (see rollback.h). Plain SQLite
 * statements on the store's connection: these run on a rollback and once per
 * tick per rolling-back campaign, not per device message. */
#include "rollback.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <sqlite3.h>

#include "upkeep/hash.h"
#include "upkeep/log.h"
#include "upkeep/manifest.h"

#define RB_LIST_MAX 100

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
    upk_error("rollback: %s: %s", what, sqlite3_errmsg(db));
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

/* Runs sql with up to 8 text binds (no rows wanted). */
static upk_err run(sqlite3 *db, const char *sql, const char *const *b, size_t n)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        return db_fail(db, "prepare");
    for (size_t i = 0; i < n; i++)
        bind_s(st, (int)i + 1, b[i]);
    upk_err err = sqlite3_step(st) == SQLITE_DONE ? UPK_OK : db_fail(db, "write");
    sqlite3_finalize(st);
    return err;
}

static void fmt_ll(char *buf, size_t cap, long long v)
{
    setf(buf, cap, "%lld", v);
}

/* ---- device image */

upk_err upk_store_device_image(upk_store *s, const upk_state_msg *m)
{
    static const uint8_t zero[UPK_SHA256_LEN];
    char hex[UPK_SHA256_HEX_LEN + 1] = "";
    if (memcmp(m->image_sha256, zero, sizeof(zero)) != 0 &&
        upk_hex_encode(m->image_sha256, UPK_SHA256_LEN, hex, sizeof(hex)) != UPK_OK)
        return UPK_E_INTERNAL;
    char mods[UPK_MODULES_MAX * (UPK_ID_MAX + 1) + 1] = "";
    size_t len = 0;
    for (size_t i = 0; i < m->cap.module_count && i < UPK_MODULES_MAX; i++) {
        int r = snprintf(mods + len, sizeof(mods) - len, "%s%s", i ? "," : "", m->cap.modules[i]);
        if (r < 0 || (size_t)r >= sizeof(mods) - len)
            break;
        len += (size_t)r;
    }
    const char *b[] = {m->device, hex, mods};
    return upk_store_run(s,
                         "INSERT INTO device_image(device, image_sha256, modules) VALUES(?1,?2,?3)"
                         " ON CONFLICT(device) DO UPDATE SET image_sha256=?2, modules=?3",
                         b, 3, NULL);
}

/* ---- plan */

struct rb_dev {
    char device[UPK_ID_MAX + 1];
    char prev[UPK_ID_MAX + 1];
    char name[UPK_ID_MAX + 1];    /* installed release name (reported) */
    char version[UPK_ID_MAX + 1]; /* installed version (reported) */
    char hw[UPK_ID_MAX + 1];
    char image[UPK_SHA256_HEX_LEN + 1]; /* reported image, or from its release */
    long long secver;
    char rb_state[16];
    char rb_release[UPK_ID_MAX + 1];
    char status[32]; /* reported update status */
};

struct rb_out {
    char release[UPK_ID_MAX + 1]; /* "" = desired cleared */
    char name[UPK_ID_MAX + 1];
    char version[UPK_ID_MAX + 1];
    const char *state; /* pending, done, failed */
    upk_err error;
    char message[UPK_ERRMSG_MAX + 1];
};

static bool hw_listed(const upk_manifest *m, const char *hw)
{
    for (size_t i = 0; i < m->hw_count; i++)
        if (strcmp(m->hw[i], hw) == 0)
            return true;
    return false;
}

static void short_hex(const uint8_t *sha, char out[17])
{
    if (upk_hex_encode(sha, 8, out, 17) != UPK_OK)
        out[0] = '\0';
}

/* The releases with name and version, full images first. Fills ids (up to
 * cap); returns the count. */
static size_t same_version(sqlite3 *db, const char *name, const char *version,
                           char (*ids)[UPK_ID_MAX + 1], size_t cap)
{
    sqlite3_stmt *st = NULL;
    size_t n = 0;
    if (sqlite3_prepare_v2(db,
                           "SELECT id FROM releases WHERE name=? AND version=? ORDER BY"
                           " type='full' DESC, imported_ms DESC, id",
                           -1, &st, NULL) != SQLITE_OK)
        return 0;
    bind_s(st, 1, name);
    bind_s(st, 2, version);
    while (n < cap && sqlite3_step(st) == SQLITE_ROW)
        col_s(st, 0, ids[n++], UPK_ID_MAX + 1);
    sqlite3_finalize(st);
    return n;
}

static bool in_progress(const char *status);

/* Decides what device d gets back in campaign camp (release cr). */
static void plan_one(upk_store *s, const upk_release_row *cr, struct rb_dev *d, struct rb_out *o)
{
    sqlite3 *db = upk_store_db(s);
    memset(o, 0, sizeof(*o));
    o->state = "pending";
    int r;
    if (d->prev[0] == '\0') {
        /* Nothing was desired before: nothing to send back. */
        bool updated = strcmp(d->name, cr->m.name) == 0 && strcmp(d->version, cr->m.version) == 0;
        o->state = updated ? "failed" : "done";
        o->error = updated ? UPK_E_NOT_FOUND : UPK_OK;
        setf(o->message, sizeof(o->message), "%s",
             updated ? "no release was desired for this device before the campaign, so "
                       "there is none to return to; release a fixed version"
                     : "not updated by this campaign; nothing to roll back");
        (void)r;
        return;
    }
    upk_release_row p;
    memset(&p, 0, sizeof(p));
    if (upk_store_release_get(s, d->prev, &p) != UPK_OK) {
        o->state = "failed";
        o->error = UPK_E_NOT_FOUND;
        setf(o->message, sizeof(o->message),
             "its previous release %s is no longer on the controller", d->prev);
        return;
    }
    setf(o->name, sizeof(o->name), "%s", p.m.name);
    setf(o->version, sizeof(o->version), "%s", p.m.version);
    bool on_prev = strcmp(d->name, p.m.name) == 0 && strcmp(d->version, p.m.version) == 0;
    /* Candidates of the previous version: an image the device can install
     * (a full one, or a delta from what it runs now). */
    char ids[8][UPK_ID_MAX + 1];
    size_t n = same_version(db, p.m.name, p.m.version, ids, 8);
    char chosen[UPK_ID_MAX + 1] = "";
    uint64_t chosen_sv = 0;
    for (size_t i = 0; i < n && chosen[0] == '\0'; i++) {
        upk_release_row c;
        memset(&c, 0, sizeof(c));
        if (upk_store_release_get(s, ids[i], &c) != UPK_OK)
            continue;
        bool ok = c.m.type == UPK_RELEASE_FULL;
        if (!ok && !on_prev && d->image[0] != '\0') {
            char base[UPK_SHA256_HEX_LEN + 1];
            ok = upk_hex_encode(c.m.base_sha256, UPK_SHA256_LEN, base, sizeof(base)) == UPK_OK &&
                 strcmp(base, d->image) == 0;
        }
        /* The previous release itself first when it qualifies. */
        if (ok && (strcmp(ids[i], d->prev) == 0 || chosen[0] == '\0')) {
            setf(chosen, sizeof(chosen), "%s", ids[i]);
            chosen_sv = c.m.security_version;
        }
        upk_release_row_cleanup(&c);
    }
    if (on_prev) {
        /* Already there: a full image of it is "already installed" to the
         * agent; a delta would be refused (its base is not installed). One
         * still updating (it may yet commit the campaign's release) is done
         * only once it reports the previous release again. */
        o->state = in_progress(d->status) ? "pending" : "done";
        setf(o->release, sizeof(o->release), "%s", chosen);
        setf(o->message, sizeof(o->message), "already runs %s %s", p.m.name, p.m.version);
        upk_release_row_cleanup(&p);
        return;
    }
    if (chosen[0] == '\0') {
        /* The newest full release of that name from before the campaign. */
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(db,
                               "SELECT id FROM releases WHERE name=?1 AND type='full' AND"
                               " version<>?2 AND imported_ms <= (SELECT imported_ms FROM releases"
                               " WHERE id=?3) AND id<>?3 ORDER BY imported_ms DESC, id DESC"
                               " LIMIT 16",
                               -1, &st, NULL) == SQLITE_OK) {
            bind_s(st, 1, p.m.name);
            bind_s(st, 2, cr->m.version);
            bind_s(st, 3, cr->id);
            while (chosen[0] == '\0' && sqlite3_step(st) == SQLITE_ROW) {
                char id[UPK_ID_MAX + 1];
                col_s(st, 0, id, sizeof(id));
                upk_release_row c;
                memset(&c, 0, sizeof(c));
                if (upk_store_release_get(s, id, &c) != UPK_OK)
                    continue;
                if (hw_listed(&c.m, d->hw) && (long long)c.m.security_version >= d->secver) {
                    setf(chosen, sizeof(chosen), "%s", id);
                    chosen_sv = c.m.security_version;
                    setf(o->name, sizeof(o->name), "%s", c.m.name);
                    setf(o->version, sizeof(o->version), "%s", c.m.version);
                }
                upk_release_row_cleanup(&c);
            }
            sqlite3_finalize(st);
        }
    }
    if (chosen[0] == '\0') {
        o->state = "failed";
        if (p.m.type == UPK_RELEASE_DELTA) {
            char base[17], have[17] = "unknown";
            short_hex(p.m.base_sha256, base);
            base[8] = '\0';
            if (d->image[0] != '\0')
                setf(have, sizeof(have), "%.8s", d->image);
            o->error = UPK_E_DELTA_BASE_MISMATCH;
            setf(o->message, sizeof(o->message),
                 "%s %s is a delta from image %s..., the device runs %s...; import a "
                 "full %s %s, then rollback again",
                 p.m.name, p.m.version, base, have, p.m.name, p.m.version);
        } else {
            o->error = UPK_E_NOT_FOUND;
            setf(o->message, sizeof(o->message), "no release of %s %s this device can install",
                 p.m.name, p.m.version);
        }
    } else if ((long long)chosen_sv < d->secver) {
        o->state = "failed";
        o->error = UPK_E_ROLLBACK_REJECTED;
        setf(o->message, sizeof(o->message),
             "the device runs security_version %lld and refuses %s (%llu)", d->secver, chosen,
             (unsigned long long)chosen_sv);
    } else {
        setf(o->release, sizeof(o->release), "%s", chosen);
        if (strcmp(chosen, d->prev) != 0)
            setf(o->message, sizeof(o->message), "sent %s instead of %s (%s)", chosen, d->prev,
                 p.m.type == UPK_RELEASE_DELTA ? "a delta from another image" : "");
    }
    (void)r;
    upk_release_row_cleanup(&p);
}

/* Installed image of d from the release it reports, when it did not send
 * its image hash. */
static void image_from_release(upk_store *s, struct rb_dev *d)
{
    if (d->image[0] != '\0' || d->name[0] == '\0')
        return;
    char ids[1][UPK_ID_MAX + 1];
    if (same_version(upk_store_db(s), d->name, d->version, ids, 1) != 1)
        return;
    upk_release_row c;
    memset(&c, 0, sizeof(c));
    if (upk_store_release_get(s, ids[0], &c) != UPK_OK)
        return;
    if (upk_hex_encode(c.m.target_sha256, UPK_SHA256_LEN, d->image, sizeof(d->image)) != UPK_OK)
        d->image[0] = '\0';
    upk_release_row_cleanup(&c);
}

upk_err upk_rollback_plan(upk_store *s, const char *campaign, int64_t now_ms)
{
    sqlite3 *db = upk_store_db(s);
    upk_campaign camp;
    upk_err err = upk_store_campaign_get(s, campaign, &camp);
    if (err != UPK_OK)
        return err;
    upk_release_row cr;
    memset(&cr, 0, sizeof(cr));
    if ((err = upk_store_release_get(s, camp.release, &cr)) != UPK_OK)
        return err;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(
            db,
            "SELECT cd.device, cd.prev_release, COALESCE(d.release,''), COALESCE(d.version,''),"
            " COALESCE(d.hw,''), COALESCE(di.image_sha256,''), COALESCE(d.security_version,0),"
            " COALESCE(rb.state,''), COALESCE(rb.release,''), COALESCE(d.status,'')"
            " FROM campaign_devices cd"
            " LEFT JOIN devices d ON d.id=cd.device LEFT JOIN device_image di ON"
            " di.device=cd.device LEFT JOIN rollback_devices rb ON rb.campaign=cd.campaign AND"
            " rb.device=cd.device WHERE cd.campaign=? AND cd.assigned_ms>0 ORDER BY cd.device",
            -1, &st, NULL) != SQLITE_OK) {
        upk_release_row_cleanup(&cr);
        return db_fail(db, "plan select");
    }
    bind_s(st, 1, campaign);
    struct rb_dev *v = NULL;
    size_t n = 0, cap = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 32;
            struct rb_dev *nv = realloc(v, nc * sizeof(*v));
            if (nv == NULL) {
                err = UPK_E_NOMEM;
                break;
            }
            v = nv;
            cap = nc;
        }
        struct rb_dev *d = &v[n++];
        memset(d, 0, sizeof(*d));
        col_s(st, 0, d->device, sizeof(d->device));
        col_s(st, 1, d->prev, sizeof(d->prev));
        col_s(st, 2, d->name, sizeof(d->name));
        col_s(st, 3, d->version, sizeof(d->version));
        col_s(st, 4, d->hw, sizeof(d->hw));
        col_s(st, 5, d->image, sizeof(d->image));
        d->secver = sqlite3_column_int64(st, 6);
        col_s(st, 7, d->rb_state, sizeof(d->rb_state));
        col_s(st, 8, d->rb_release, sizeof(d->rb_release));
        col_s(st, 9, d->status, sizeof(d->status));
    }
    if (err == UPK_OK && rc != SQLITE_DONE)
        err = db_fail(db, "plan rows");
    sqlite3_finalize(st);
    char now[24];
    fmt_ll(now, sizeof(now), now_ms);
    for (size_t i = 0; i < n && err == UPK_OK; i++) {
        struct rb_dev *d = &v[i];
        if (strcmp(d->rb_state, "done") == 0) {
            /* Back already: keep what it was given. */
            const char *b[] = {d->rb_release, d->rb_release[0] ? campaign : "", d->device};
            err = run(db,
                      "UPDATE devices SET desired_release=?1, desired_campaign=?2,"
                      " desired_acked=0 WHERE id=?3",
                      b, 3);
            continue;
        }
        image_from_release(s, d);
        struct rb_out o;
        plan_one(s, &cr, d, &o);
        const char *fin = strcmp(o.state, "pending") == 0 ? "0" : now;
        const char *b[] = {campaign,
                           d->device,
                           o.release,
                           o.name,
                           o.version,
                           o.state,
                           o.error != UPK_OK ? upk_err_str(o.error) : "",
                           o.message,
                           now,
                           fin};
        sqlite3_stmt *ins = NULL;
        if (sqlite3_prepare_v2(db,
                               "INSERT OR REPLACE INTO rollback_devices(campaign, device, release,"
                               " name, version, state, error, message, started_ms, done_ms)"
                               " VALUES(?,?,?,?,?,?,?,?,?,?)",
                               -1, &ins, NULL) != SQLITE_OK) {
            err = db_fail(db, "plan insert");
            break;
        }
        for (int k = 0; k < 10; k++)
            bind_s(ins, k + 1, b[k]);
        if (sqlite3_step(ins) != SQLITE_DONE)
            err = db_fail(db, "plan insert");
        sqlite3_finalize(ins);
        if (err != UPK_OK)
            break;
        /* A device that cannot be given an installable release keeps what it
         * runs: its desired is cleared rather than set to one it refuses. */
        const char *b2[] = {o.release, o.release[0] ? campaign : "", d->device};
        err = run(db,
                  "UPDATE devices SET desired_release=?1, desired_campaign=?2, desired_acked=0"
                  " WHERE id=?3",
                  b2, 3);
        if (err == UPK_OK && strcmp(o.state, "failed") == 0)
            upk_warn("rollback: campaign=%s device=%s cannot be rolled back: %s (%s)", campaign,
                     d->device, upk_err_str(o.error), o.message);
    }
    free(v);
    upk_release_row_cleanup(&cr);
    return err;
}

/* ---- progress */

static bool in_progress(const char *status)
{
    static const char *const busy[] = {"downloading", "verifying", "installing", "activating",
                                       "health_check"};
    for (size_t i = 0; i < sizeof(busy) / sizeof(busy[0]); i++)
        if (strcmp(status, busy[i]) == 0)
            return true;
    return false;
}

/* Final "rolled_back" / "rollback_incomplete" with the devices not back. */
static upk_err finish(sqlite3 *db, const char *campaign, int64_t now_ms)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db,
                           "SELECT device, error FROM rollback_devices WHERE campaign=? AND"
                           " state='failed' ORDER BY device",
                           -1, &st, NULL) != SQLITE_OK)
        return db_fail(db, "finish select");
    bind_s(st, 1, campaign);
    char list[UPK_REASON_MAX + 1] = "";
    size_t len = 0, failed = 0, shown = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        failed++;
        char item[2 * UPK_ID_MAX + 8];
        const unsigned char *dev = sqlite3_column_text(st, 0), *e = sqlite3_column_text(st, 1);
        int r = snprintf(item, sizeof(item), "%s%s on %s", shown ? ", " : "",
                         e != NULL && e[0] ? (const char *)e : "failed",
                         dev != NULL ? (const char *)dev : "?");
        if (r > 0 && len + (size_t)r < sizeof(list) - 90) {
            memcpy(list + len, item, (size_t)r + 1);
            len += (size_t)r;
            shown++;
        }
    }
    sqlite3_finalize(st);
    size_t total = 0;
    if (sqlite3_prepare_v2(db, "SELECT count(*) FROM rollback_devices WHERE campaign=?", -1, &st,
                           NULL) != SQLITE_OK)
        return db_fail(db, "finish count");
    bind_s(st, 1, campaign);
    if (sqlite3_step(st) == SQLITE_ROW)
        total = (size_t)sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    char reason[UPK_REASON_MAX + 1];
    int r;
    if (failed == 0) {
        reason[0] = '\0'; /* keeps the reason the rollback was given */
    } else {
        char more[32] = "";
        if (shown < failed)
            setf(more, sizeof(more), " and %zu more", failed - shown);
        setf(reason, sizeof(reason),
             "rollback incomplete: %zu of %zu %s not back on the previous release "
             "(%s%s); `campaign show --devices` says why",
             failed, total, total == 1 ? "device" : "devices", list, more);
    }
    (void)r;
    char now[24];
    fmt_ll(now, sizeof(now), now_ms);
    const char *b[] = {failed == 0 ? "rolled_back" : "rollback_incomplete", reason, now, campaign};
    upk_err err = run(db,
                      "UPDATE campaigns SET state=?1, reason=CASE WHEN ?2='' THEN reason ELSE ?2"
                      " END, finished_ms=?3, updated_ms=?3"
                      " WHERE id=?4 AND state='rolling_back'",
                      b, 4);
    if (err == UPK_OK) {
        if (failed == 0)
            upk_info("rollback: campaign=%s rolled back: all %zu devices report their previous "
                     "release",
                     campaign, total);
        else
            upk_warn("rollback: campaign=%s %s", campaign, reason);
    }
    return err;
}

static upk_err tick_one(sqlite3 *db, const char *campaign, int64_t now_ms, bool *ended)
{
    *ended = false;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(
            db,
            "SELECT rb.device, rb.name, rb.version, rb.started_ms, COALESCE(d.release,''),"
            " COALESCE(d.version,''), COALESCE(d.status,''), (SELECT e.step || ' ' || e.error"
            " FROM events e WHERE e.device=rb.device AND e.campaign=rb.campaign AND"
            " e.recv_ms>=rb.started_ms AND e.step IN ('failed','rejected','rolled_back') AND"
            " (e.version=rb.version OR (e.step='rejected' AND e.version<>(SELECT r.version FROM"
            " releases r JOIN campaigns c ON c.release=r.id WHERE c.id=rb.campaign))) ORDER BY"
            " e.seq DESC LIMIT 1), c.device_timeout_s FROM rollback_devices rb JOIN"
            " campaigns c ON c.id=rb.campaign LEFT JOIN devices d ON d.id=rb.device WHERE"
            " rb.campaign=? AND rb.state='pending'",
            -1, &st, NULL) != SQLITE_OK)
        return db_fail(db, "tick select");
    bind_s(st, 1, campaign);
    struct upd {
        char device[UPK_ID_MAX + 1];
        const char *state;
        char error[40];
        char message[128];
    } *u = NULL;
    size_t n = 0, cap = 0, pending = 0;
    upk_err err = UPK_OK;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        pending++;
        char dev[UPK_ID_MAX + 1], name[UPK_ID_MAX + 1], ver[UPK_ID_MAX + 1];
        char rel[UPK_ID_MAX + 1], rver[UPK_ID_MAX + 1], status[32], ev[128];
        col_s(st, 0, dev, sizeof(dev));
        col_s(st, 1, name, sizeof(name));
        col_s(st, 2, ver, sizeof(ver));
        int64_t started = sqlite3_column_int64(st, 3);
        col_s(st, 4, rel, sizeof(rel));
        col_s(st, 5, rver, sizeof(rver));
        col_s(st, 6, status, sizeof(status));
        col_s(st, 7, ev, sizeof(ev));
        int64_t timeout_ms = sqlite3_column_int64(st, 8) * 1000;
        struct upd x;
        memset(&x, 0, sizeof(x));
        setf(x.device, sizeof(x.device), "%s", dev);
        if (strcmp(rel, name) == 0 && strcmp(rver, ver) == 0 && !in_progress(status)) {
            x.state = "done";
        } else if (ev[0] != '\0') {
            const char *sp = strchr(ev, ' ');
            x.state = "failed";
            setf(x.error, sizeof(x.error), "%s", sp != NULL ? sp + 1 : "");
            setf(x.message, sizeof(x.message), "the device reported %.*s of %s %s",
                 sp != NULL ? (int)(sp - ev) : (int)strlen(ev), ev, name, ver);
        } else if (timeout_ms > 0 && now_ms - started >= timeout_ms) {
            x.state = "failed";
            setf(x.error, sizeof(x.error), "TIMEOUT");
            setf(x.message, sizeof(x.message),
                 "no report of %s %s within the device timeout; it runs %s %s", name, ver,
                 rel[0] ? rel : "-", rver[0] ? rver : "-");
        } else {
            continue;
        }
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 16;
            struct upd *nu = realloc(u, nc * sizeof(*u));
            if (nu == NULL) {
                err = UPK_E_NOMEM;
                break;
            }
            u = nu;
            cap = nc;
        }
        u[n++] = x;
    }
    if (err == UPK_OK && rc != SQLITE_DONE)
        err = db_fail(db, "tick rows");
    sqlite3_finalize(st);
    if (err != UPK_OK || (n == 0 && pending > 0)) {
        free(u);
        return err;
    }
    if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
        free(u);
        return db_fail(db, "begin");
    }
    char now[24];
    fmt_ll(now, sizeof(now), now_ms);
    for (size_t i = 0; i < n && err == UPK_OK; i++) {
        const char *b[] = {u[i].state, u[i].error, u[i].message, now, campaign, u[i].device};
        err = run(db,
                  "UPDATE rollback_devices SET state=?1, error=?2, message=CASE WHEN ?3='' THEN"
                  " message ELSE ?3 END, done_ms=?4 WHERE campaign=?5 AND device=?6 AND"
                  " state='pending'",
                  b, 6);
    }
    if (err == UPK_OK && n == pending) {
        err = finish(db, campaign, now_ms);
        *ended = err == UPK_OK;
    }
    if (err == UPK_OK && sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        err = db_fail(db, "commit");
    if (err != UPK_OK) {
        *ended = false;
        (void)sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    }
    free(u);
    return err;
}

upk_err upk_rollback_tick(upk_store *s, int64_t now_ms, size_t *finished)
{
    sqlite3 *db = upk_store_db(s);
    if (finished != NULL)
        *finished = 0;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db,
                           "SELECT id FROM campaigns WHERE state='rolling_back' ORDER BY"
                           " created_ms LIMIT 64",
                           -1, &st, NULL) != SQLITE_OK)
        return db_fail(db, "tick campaigns");
    char ids[64][UPK_ID_MAX + 1];
    size_t n = 0;
    while (n < 64 && sqlite3_step(st) == SQLITE_ROW)
        col_s(st, 0, ids[n++], UPK_ID_MAX + 1);
    sqlite3_finalize(st);
    upk_err err = UPK_OK;
    for (size_t i = 0; i < n; i++) {
        bool ended = false;
        upk_err e = tick_one(db, ids[i], now_ms, &ended);
        if (e != UPK_OK && err == UPK_OK)
            err = e;
        if (ended && finished != NULL)
            (*finished)++;
    }
    return err;
}

/* ---- view */

upk_err upk_rollback_json(upk_store *s, const char *campaign, cJSON *o)
{
    sqlite3 *db = upk_store_db(s);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db,
                           "SELECT total(state='done'), total(state='pending'),"
                           " total(state='failed'), count(*) FROM rollback_devices WHERE"
                           " campaign=?",
                           -1, &st, NULL) != SQLITE_OK)
        return db_fail(db, "view counts");
    bind_s(st, 1, campaign);
    double done = 0, pending = 0, failed = 0, all = 0;
    if (sqlite3_step(st) == SQLITE_ROW) {
        done = sqlite3_column_double(st, 0);
        pending = sqlite3_column_double(st, 1);
        failed = sqlite3_column_double(st, 2);
        all = sqlite3_column_double(st, 3);
    }
    sqlite3_finalize(st);
    if (all == 0)
        return UPK_OK;
    cJSON *rb = cJSON_AddObjectToObject(o, "rollback");
    cJSON *arr = rb != NULL ? cJSON_AddArrayToObject(rb, "devices") : NULL;
    if (arr == NULL || cJSON_AddNumberToObject(rb, "done", done) == NULL ||
        cJSON_AddNumberToObject(rb, "pending", pending) == NULL ||
        cJSON_AddNumberToObject(rb, "failed", failed) == NULL)
        return UPK_E_NOMEM;
    if (sqlite3_prepare_v2(db,
                           "SELECT device, release, name, version, state, error, message FROM"
                           " rollback_devices WHERE campaign=? ORDER BY state='done', state,"
                           " device LIMIT ?",
                           -1, &st, NULL) != SQLITE_OK)
        return db_fail(db, "view rows");
    bind_s(st, 1, campaign);
    sqlite3_bind_int(st, 2, RB_LIST_MAX);
    static const char *const keys[] = {"device", "release", "name",   "version",
                                       "state",  "error",   "message"};
    upk_err err = UPK_OK;
    while (sqlite3_step(st) == SQLITE_ROW) {
        cJSON *d = cJSON_CreateObject();
        if (d == NULL || !cJSON_AddItemToArray(arr, d)) {
            cJSON_Delete(d);
            err = UPK_E_NOMEM;
            break;
        }
        for (int k = 0; k < 7; k++) {
            const unsigned char *t = sqlite3_column_text(st, k);
            if (cJSON_AddStringToObject(d, keys[k], t != NULL ? (const char *)t : "") == NULL)
                err = UPK_E_NOMEM;
        }
    }
    sqlite3_finalize(st);
    return err;
}
