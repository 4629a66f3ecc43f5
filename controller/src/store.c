/* Controller store over SQLite (see store.h): schema and migrations, one
 * transaction per state change, and the queries the controller and its
 * operator commands need. */
#include "store.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <sqlite3.h>

#include "store_int.h"
#include "upkeep/fs.h"
#include "upkeep/hash.h"
#include "upkeep/log.h"
#include "rollback.h"

/* Prepared statements are kept and reused: preparing (parsing and planning
 * the SQL) was the larger part of the store's CPU at 10,000 devices. An
 * entry is found by its SQL text's address and checked against the text;
 * one in use (a caller iterating it calls another query) is never handed
 * out twice: the second caller gets a statement of its own. */
#define STMT_CACHE 96

struct stmt_slot {
    const char *sql;
    sqlite3_stmt *st;
    bool busy;
};

struct upk_store {
    sqlite3 *db;
    char dir[UPK_PATH_MAX];
    int schema;
    struct stmt_slot cache[STMT_CACHE];
};

/* Migration i takes the schema from version i to i+1. Append only. */
static const char *const migrations[] = {
    /* 0 -> 1 */
    "CREATE TABLE devices("
    " id TEXT PRIMARY KEY, hw TEXT NOT NULL DEFAULT '', release TEXT NOT NULL DEFAULT '',"
    " version TEXT NOT NULL DEFAULT '', security_version INTEGER NOT NULL DEFAULT 0,"
    " status TEXT NOT NULL DEFAULT '', campaign TEXT NOT NULL DEFAULT '',"
    " error TEXT NOT NULL DEFAULT 'OK', online INTEGER NOT NULL DEFAULT 0,"
    " support_until INTEGER NOT NULL DEFAULT 0, last_patched INTEGER NOT NULL DEFAULT 0,"
    " agent TEXT NOT NULL DEFAULT '', state_ts INTEGER NOT NULL DEFAULT 0,"
    " last_seen_ms INTEGER NOT NULL DEFAULT 0, grp TEXT NOT NULL DEFAULT '',"
    " desired_release TEXT NOT NULL DEFAULT '', desired_campaign TEXT NOT NULL DEFAULT '',"
    " desired_acked INTEGER NOT NULL DEFAULT 1);"
    "CREATE TABLE releases("
    " id TEXT PRIMARY KEY, name TEXT NOT NULL, version TEXT NOT NULL,"
    " security_version INTEGER NOT NULL, type TEXT NOT NULL, module TEXT NOT NULL,"
    " hw TEXT NOT NULL, size INTEGER NOT NULL, sha256 TEXT NOT NULL, key_id TEXT NOT NULL,"
    " manifest TEXT NOT NULL, sig BLOB NOT NULL, created INTEGER NOT NULL,"
    " expires INTEGER NOT NULL, imported_ms INTEGER NOT NULL, imported_by TEXT NOT NULL);"
    "CREATE INDEX releases_sha ON releases(sha256);"
    "CREATE TABLE campaigns("
    " id TEXT PRIMARY KEY, release TEXT NOT NULL REFERENCES releases(id), target TEXT NOT NULL,"
    " state TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '', halted INTEGER NOT NULL DEFAULT 0,"
    " stages TEXT NOT NULL, stage INTEGER NOT NULL, soak_s INTEGER NOT NULL,"
    " max_fail_bp INTEGER NOT NULL, device_timeout_s INTEGER NOT NULL,"
    " rate_per_min INTEGER NOT NULL, max_in_flight INTEGER NOT NULL,"
    " auto_rollback INTEGER NOT NULL, tokens_milli INTEGER NOT NULL DEFAULT 0,"
    " tokens_at_ms INTEGER NOT NULL DEFAULT 0, stage_started_ms INTEGER NOT NULL DEFAULT 0,"
    " stage_done_ms INTEGER NOT NULL DEFAULT 0, created_ms INTEGER NOT NULL,"
    " updated_ms INTEGER NOT NULL, finished_ms INTEGER NOT NULL DEFAULT 0,"
    " created_by TEXT NOT NULL);"
    "CREATE TABLE campaign_devices("
    " campaign TEXT NOT NULL REFERENCES campaigns(id), device TEXT NOT NULL,"
    " stage INTEGER NOT NULL, rank INTEGER NOT NULL, state TEXT NOT NULL,"
    " assigned_ms INTEGER NOT NULL DEFAULT 0, done_ms INTEGER NOT NULL DEFAULT 0,"
    " prev_release TEXT NOT NULL DEFAULT '', error TEXT NOT NULL DEFAULT '',"
    " PRIMARY KEY(campaign, device));"
    "CREATE INDEX cd_device ON campaign_devices(device);"
    "CREATE TABLE events("
    " device TEXT NOT NULL, seq INTEGER NOT NULL, ts INTEGER NOT NULL, recv_ms INTEGER NOT NULL,"
    " campaign TEXT NOT NULL, release TEXT NOT NULL, version TEXT NOT NULL, step TEXT NOT NULL,"
    " error TEXT NOT NULL, message TEXT NOT NULL, PRIMARY KEY(device, seq));"
    "CREATE INDEX events_campaign ON events(campaign, step);"
    "CREATE TABLE audit("
    " id INTEGER PRIMARY KEY AUTOINCREMENT, ts_ms INTEGER NOT NULL, sender TEXT NOT NULL,"
    " cmd TEXT NOT NULL, args TEXT NOT NULL, result TEXT NOT NULL);",
    /* 1 -> 2: update-capability elements of the device state (label.h). */
    "ALTER TABLE devices ADD COLUMN support_signed INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE devices ADD COLUMN cap_automatic INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE devices ADD COLUMN cap_signed INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE devices ADD COLUMN cap_rollback INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE devices ADD COLUMN cap_delta INTEGER NOT NULL DEFAULT 0;",
    /* 2 -> 3: health gate of a campaign (health_gate.h); bake_s 0 = off. */
    "ALTER TABLE campaigns ADD COLUMN bake_s INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE campaigns ADD COLUMN max_unhealthy_bp INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE campaigns ADD COLUMN restart_limit INTEGER NOT NULL DEFAULT 3;"
    "ALTER TABLE campaigns ADD COLUMN compare_baseline INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE campaigns ADD COLUMN baseline_factor REAL NOT NULL DEFAULT 1.5;"
    "ALTER TABLE campaigns ADD COLUMN min_samples INTEGER NOT NULL DEFAULT 1;",
    /* 3 -> 4: health reports per campaign and device (campaign '' = none). */
    "CREATE TABLE health("
    " campaign TEXT NOT NULL, device TEXT NOT NULL, restarts INTEGER NOT NULL DEFAULT 0,"
    " boots INTEGER NOT NULL DEFAULT 0, check_failed INTEGER NOT NULL DEFAULT 0,"
    " recv_ms INTEGER NOT NULL, PRIMARY KEY(campaign, device));"
    "CREATE TABLE health_metrics("
    " campaign TEXT NOT NULL, device TEXT NOT NULL, name TEXT NOT NULL,"
    " sum REAL NOT NULL, n INTEGER NOT NULL, recv_ms INTEGER NOT NULL,"
    " PRIMARY KEY(campaign, device, name));",
    /* 4 -> 5: a campaign's devices in stage order straight from an index:
     * the engine reads them every tick, and sorting 10,000 rows each time
     * was a fifth of the controller's CPU in the scale benchmark. */
    "CREATE INDEX cd_order ON campaign_devices(campaign, stage, rank, device);",
    /* 5 -> 6 (issue 17, bounded health state): the metrics a campaign's gate
     * compares; indexes for retention by age; health rows only for campaigns
     * the device is in, plus one latest value per (device, metric) under
     * campaign '' (store_health.c). */
    "CREATE TABLE campaign_gate(campaign TEXT PRIMARY KEY, metrics TEXT NOT NULL);"
    "CREATE INDEX events_recv ON events(recv_ms);"
    "CREATE INDEX health_recv ON health(recv_ms);"
    "CREATE INDEX health_metrics_recv ON health_metrics(recv_ms);"
    "CREATE INDEX health_device ON health(device, recv_ms);"
    "CREATE INDEX health_metrics_device ON health_metrics(device, recv_ms);"
    "INSERT OR REPLACE INTO health_metrics(campaign, device, name, sum, n, recv_ms)"
    " SELECT '', device, name, sum / n, 1, max(recv_ms) FROM health_metrics GROUP BY device, name;"
    "DELETE FROM health_metrics WHERE campaign <> '' AND NOT EXISTS (SELECT 1 FROM"
    " campaign_devices cd WHERE cd.campaign = health_metrics.campaign AND"
    " cd.device = health_metrics.device);"
    "DELETE FROM health WHERE campaign <> '' AND NOT EXISTS (SELECT 1 FROM campaign_devices cd"
    " WHERE cd.campaign = health.campaign AND cd.device = health.device);",
    /* 6 -> 7: rollbacks that end only when the devices report them
     * (rollback.h), what each device reports it runs, and campaign options. */
    "CREATE TABLE rollback_devices("
    " campaign TEXT NOT NULL, device TEXT NOT NULL, release TEXT NOT NULL DEFAULT '',"
    " name TEXT NOT NULL DEFAULT '', version TEXT NOT NULL DEFAULT '', state TEXT NOT NULL,"
    " error TEXT NOT NULL DEFAULT '', message TEXT NOT NULL DEFAULT '',"
    " started_ms INTEGER NOT NULL, done_ms INTEGER NOT NULL DEFAULT 0,"
    " PRIMARY KEY(campaign, device));"
    "CREATE TABLE device_image("
    " device TEXT PRIMARY KEY, image_sha256 TEXT NOT NULL DEFAULT '',"
    " modules TEXT NOT NULL DEFAULT '');"
    "CREATE TABLE campaign_opts("
    " campaign TEXT PRIMARY KEY, continuous INTEGER NOT NULL DEFAULT 0,"
    " delta_full TEXT NOT NULL DEFAULT '');"
    "CREATE TABLE campaign_release("
    " campaign TEXT NOT NULL, device TEXT NOT NULL, release TEXT NOT NULL,"
    " PRIMARY KEY(campaign, device));"
    "CREATE TABLE campaign_attempts("
    " campaign TEXT NOT NULL, device TEXT NOT NULL, attempt INTEGER NOT NULL,"
    " PRIMARY KEY(campaign, device));",
    /* 7 -> 8 (issue 23, wire integrity): desired_ctr is the last counter the
     * controller put in a desired for the device (docs/protocol.md 5.3
     * `ctr`, strictly increasing per device); authed is 1 once a message
     * with a valid link-key tag came from the device, after which untagged
     * ones are refused (AUTH_REQUIRED). */
    ("ALTER TABLE devices ADD COLUMN desired_ctr INTEGER NOT NULL DEFAULT 0;"
     "ALTER TABLE devices ADD COLUMN desired_ctr_of TEXT NOT NULL DEFAULT '';"
     "ALTER TABLE devices ADD COLUMN authed INTEGER NOT NULL DEFAULT 0;"
     /* stale: the device's last state said it has not heard an
      * authenticated desired before its fresh_until (state "stale"). */
     "ALTER TABLE devices ADD COLUMN stale INTEGER NOT NULL DEFAULT 0;"),
};

#define N_MIGRATIONS (sizeof(migrations) / sizeof(migrations[0]))

static upk_err db_err(upk_store *s, const char *what)
{
    upk_error("store: %s: %s", what, sqlite3_errmsg(s->db));
    return UPK_E_DB;
}

static upk_err exec(upk_store *s, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        upk_error("store: %s", msg != NULL ? msg : "exec failed");
        sqlite3_free(msg);
        return UPK_E_DB;
    }
    return UPK_OK;
}

static void rollback(upk_store *s)
{
    if (sqlite3_get_autocommit(s->db) == 0) {
        upk_err e = exec(s, "ROLLBACK");
        (void)e;
    }
}

static upk_err prep(upk_store *s, const char *sql, sqlite3_stmt **st)
{
    struct stmt_slot *free_slot = NULL;
    for (size_t i = 0; i < STMT_CACHE; i++) {
        struct stmt_slot *e = &s->cache[i];
        if (e->st == NULL) {
            if (free_slot == NULL)
                free_slot = e;
            continue;
        }
        if (e->sql == sql && !e->busy && strcmp(sqlite3_sql(e->st), sql) == 0) {
            e->busy = true;
            *st = e->st;
            return UPK_OK;
        }
    }
    if (sqlite3_prepare_v2(s->db, sql, -1, st, NULL) != SQLITE_OK)
        return db_err(s, "prepare");
    if (free_slot != NULL) {
        free_slot->sql = sql;
        free_slot->st = *st;
        free_slot->busy = true;
    }
    return UPK_OK;
}

/* Gives a statement from prep back: reset for its next use, or finalized
 * if it was not cached. NULL is a no-op. */
static void unprep(upk_store *s, sqlite3_stmt *st)
{
    if (st == NULL)
        return;
    for (size_t i = 0; i < STMT_CACHE; i++) {
        if (s->cache[i].st == st) {
            (void)sqlite3_reset(st); /* the step's error was handled by the caller */
            (void)sqlite3_clear_bindings(st);
            s->cache[i].busy = false;
            return;
        }
    }
    sqlite3_finalize(st);
}

/* A statement without results through the cache (BEGIN, COMMIT). */
static upk_err exec_cached(upk_store *s, const char *sql)
{
    sqlite3_stmt *st = NULL;
    upk_err err = prep(s, sql, &st);
    if (err != UPK_OK)
        return err;
    if (sqlite3_step(st) != SQLITE_DONE)
        err = db_err(s, sql);
    unprep(s, st);
    return err;
}

static upk_err begin(upk_store *s)
{
    return exec_cached(s, "BEGIN IMMEDIATE");
}

static upk_err commit(upk_store *s)
{
    return exec_cached(s, "COMMIT");
}

static void cache_clear(upk_store *s)
{
    for (size_t i = 0; i < STMT_CACHE; i++) {
        sqlite3_finalize(s->cache[i].st);
        s->cache[i].st = NULL;
        s->cache[i].busy = false;
    }
}

static void bind_text(sqlite3_stmt *st, int i, const char *v)
{
    if (v == NULL)
        sqlite3_bind_null(st, i);
    else
        sqlite3_bind_text(st, i, v, -1, SQLITE_TRANSIENT);
}

static void col_text(sqlite3_stmt *st, int i, char *out, size_t cap)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    int r = snprintf(out, cap, "%s", t != NULL ? (const char *)t : "");
    (void)r;
}

/* Runs a one-shot statement with text binds; *changes gets the row count. */
static upk_err run(upk_store *s, const char *sql, const char *const *binds, size_t n, int *changes)
{
    sqlite3_stmt *st = NULL;
    upk_err err = prep(s, sql, &st);
    if (err != UPK_OK)
        return err;
    for (size_t i = 0; i < n; i++)
        bind_text(st, (int)i + 1, binds[i]);
    if (sqlite3_step(st) != SQLITE_DONE)
        err = db_err(s, "step");
    else if (changes != NULL)
        *changes = sqlite3_changes(s->db);
    unprep(s, st);
    return err;
}

static upk_err migrate(upk_store *s)
{
    upk_err err = exec(s, "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT "
                          "NOT NULL)");
    if (err != UPK_OK)
        return err;
    sqlite3_stmt *st = NULL;
    err = prep(s, "SELECT value FROM meta WHERE key='schema_version'", &st);
    if (err != UPK_OK)
        return err;
    int version = 0;
    if (sqlite3_step(st) == SQLITE_ROW)
        version = sqlite3_column_int(st, 0);
    unprep(s, st);
    if (version < 0 || (size_t)version > N_MIGRATIONS) {
        upk_error("store: database schema version %d is newer than this upkeep (%zu)", version,
                  N_MIGRATIONS);
        return UPK_E_STATE_CORRUPT;
    }
    for (size_t v = (size_t)version; v < N_MIGRATIONS; v++) {
        if ((err = begin(s)) != UPK_OK)
            return err;
        if ((err = exec(s, migrations[v])) != UPK_OK)
            goto fail;
        char num[16];
        int r = snprintf(num, sizeof(num), "%zu", v + 1);
        (void)r;
        const char *b[] = {num};
        if ((err = run(s, "INSERT OR REPLACE INTO meta(key, value) VALUES('schema_version', ?)", b,
                       1, NULL)) != UPK_OK)
            goto fail;
        if ((err = commit(s)) != UPK_OK)
            goto fail;
        upk_info("store: migrated schema to version %zu", v + 1);
    }
    s->schema = (int)N_MIGRATIONS;
    return UPK_OK;
fail:
    rollback(s);
    return err;
}

upk_err upk_store_open(const char *data_dir, upk_store **out)
{
    if (data_dir == NULL || out == NULL || strlen(data_dir) + 80 > UPK_PATH_MAX)
        return UPK_E_INVALID_ARG;
    upk_store *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return UPK_E_NOMEM;
    upk_err err;
    int r = snprintf(s->dir, sizeof(s->dir), "%s", data_dir);
    (void)r;
    char path[UPK_PATH_MAX];
    r = snprintf(path, sizeof(path), "%s/blobs", data_dir);
    if ((err = upk_fs_mkdirs(path)) != UPK_OK)
        goto fail_free;
    r = snprintf(path, sizeof(path), "%s/upkeep.db", data_dir);
    if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
        SQLITE_OK) {
        upk_error("store: cannot open %s: %s", path,
                  s->db != NULL ? sqlite3_errmsg(s->db) : "out of memory");
        err = UPK_E_DB;
        goto fail_close;
    }
    sqlite3_busy_timeout(s->db, 5000);
    if ((err = exec(s, "PRAGMA journal_mode=WAL")) != UPK_OK ||
        /* WAL + NORMAL: a commit survives kill -9 of this process (it is in
         * the WAL, in the OS cache) and the database is always consistent;
         * only a power cut can drop the last commits, which devices' retained
         * state and re-sent events restore. FULL would fsync per event. */
        (err = exec(s, "PRAGMA synchronous=NORMAL")) != UPK_OK ||
        (err = exec(s, "PRAGMA foreign_keys=ON")) != UPK_OK)
        goto fail_close;
    if ((err = migrate(s)) != UPK_OK)
        goto fail_close;
    *out = s;
    return UPK_OK;
fail_close:
    cache_clear(s);
    sqlite3_close(s->db);
fail_free:
    free(s);
    return err;
}

void upk_store_close(upk_store *s)
{
    if (s == NULL)
        return;
    cache_clear(s);
    sqlite3_close(s->db);
    free(s);
}

sqlite3 *upk_store_db(upk_store *s)
{
    return s->db;
}

int upk_store_schema_version(upk_store *s)
{
    return s->schema;
}

const char *upk_store_dir(upk_store *s)
{
    return s->dir;
}

upk_err upk_store_blob_path(upk_store *s, const char *sha_hex, char *buf, size_t cap)
{
    if (!upk_sha256_hex_valid(sha_hex))
        return UPK_E_INVALID_ARG;
    int r = snprintf(buf, cap, "%s/blobs/%s", s->dir, sha_hex);
    if (r < 0 || (size_t)r >= cap)
        return UPK_E_BUFFER_TOO_SMALL;
    return UPK_OK;
}

/* ---- devices */

upk_err upk_store_device_state(upk_store *s, const upk_state_msg *m, int64_t now_ms)
{
    sqlite3_stmt *st = NULL;
    upk_err err = prep(
        s,
        "INSERT INTO devices(id, hw, release, version, security_version, status, campaign, error,"
        " support_until, last_patched, agent, state_ts, last_seen_ms, support_signed,"
        " cap_automatic, cap_signed, cap_rollback, cap_delta, stale)"
        " VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18,?19)"
        " ON CONFLICT(id) DO UPDATE SET hw=?2, release=?3, version=?4, security_version=?5,"
        " status=?6, campaign=?7, error=?8, support_until=?9, last_patched=?10, agent=?11,"
        " state_ts=?12, last_seen_ms=?13, support_signed=?14, cap_automatic=?15,"
        " cap_signed=?16, cap_rollback=?17, cap_delta=?18, stale=?19",
        &st);
    if (err != UPK_OK)
        return err;
    bind_text(st, 1, m->device);
    bind_text(st, 2, m->hw);
    bind_text(st, 3, m->release);
    bind_text(st, 4, m->version);
    sqlite3_bind_int64(st, 5, (sqlite3_int64)m->security_version);
    bind_text(st, 6, upk_status_str(m->status));
    bind_text(st, 7, m->campaign);
    bind_text(st, 8, upk_err_str(m->error));
    sqlite3_bind_int64(st, 9, m->support_until);
    sqlite3_bind_int64(st, 10, m->last_patched);
    bind_text(st, 11, m->agent);
    sqlite3_bind_int64(st, 12, m->ts);
    sqlite3_bind_int64(st, 13, now_ms);
    sqlite3_bind_int(st, 14, m->support_signed);
    sqlite3_bind_int(st, 15, m->cap.automatic);
    sqlite3_bind_int(st, 16, m->cap.signed_only);
    sqlite3_bind_int(st, 17, m->cap.rollback);
    sqlite3_bind_int(st, 18, m->cap.delta);
    sqlite3_bind_int(st, 19, m->stale);
    if (sqlite3_step(st) != SQLITE_DONE)
        err = db_err(s, "device state");
    unprep(s, st);
    return err;
}

upk_err upk_store_device_online(upk_store *s, const char *device, bool online, int64_t now_ms)
{
    sqlite3_stmt *st = NULL;
    upk_err err = prep(s,
                       "INSERT INTO devices(id, online, last_seen_ms) VALUES(?1,?2,?3)"
                       " ON CONFLICT(id) DO UPDATE SET online=?2, last_seen_ms=?3",
                       &st);
    if (err != UPK_OK)
        return err;
    bind_text(st, 1, device);
    sqlite3_bind_int(st, 2, online ? 1 : 0);
    sqlite3_bind_int64(st, 3, now_ms);
    if (sqlite3_step(st) != SQLITE_DONE)
        err = db_err(s, "device online");
    unprep(s, st);
    return err;
}

upk_err upk_store_device_group(upk_store *s, const char *device, const char *group)
{
    const char *b[] = {group, device};
    int changes = 0;
    upk_err err = run(s, "UPDATE devices SET grp=? WHERE id=?", b, 2, &changes);
    if (err == UPK_OK && changes == 0)
        err = UPK_E_NOT_FOUND;
    return err;
}

upk_err upk_store_desired_acked(upk_store *s, const char *device, const char *release,
                                const char *campaign)
{
    const char *b[] = {device, release, campaign};
    return run(s,
               "UPDATE devices SET desired_acked=1 WHERE id=? AND desired_release=? AND "
               "desired_campaign=?",
               b, 3, NULL);
}

upk_err upk_store_may_fetch(upk_store *s, const char *device, const char *sha_hex, bool *ok)
{
    sqlite3_stmt *st = NULL;
    upk_err err = prep(s,
                       "SELECT 1 FROM devices d JOIN releases r ON r.id = d.desired_release"
                       " WHERE d.id=? AND r.sha256=?",
                       &st);
    if (err != UPK_OK)
        return err;
    bind_text(st, 1, device);
    bind_text(st, 2, sha_hex);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *ok = true;
    else if (rc == SQLITE_DONE)
        *ok = false;
    else
        err = db_err(s, "may fetch");
    unprep(s, st);
    return err;
}

upk_err upk_store_device_desired(upk_store *s, const char *device, char release[UPK_ID_MAX + 1],
                                 char campaign[UPK_ID_MAX + 1])
{
    sqlite3_stmt *st = NULL;
    upk_err err = prep(s, "SELECT desired_release, desired_campaign FROM devices WHERE id=?", &st);
    if (err != UPK_OK)
        return err;
    bind_text(st, 1, device);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        col_text(st, 0, release, UPK_ID_MAX + 1);
        col_text(st, 1, campaign, UPK_ID_MAX + 1);
    } else if (rc == SQLITE_DONE) {
        err = UPK_E_NOT_FOUND;
    } else {
        err = db_err(s, "device desired");
    }
    unprep(s, st);
    return err;
}

upk_err upk_store_desired_unacked(upk_store *s, void (*fn)(const char *device, void *ud), void *ud)
{
    sqlite3_stmt *st = NULL;
    upk_err err = prep(s, "SELECT id FROM devices WHERE desired_acked=0", &st);
    if (err != UPK_OK)
        return err;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        fn((const char *)sqlite3_column_text(st, 0), ud);
    if (rc != SQLITE_DONE)
        err = db_err(s, "desired unacked");
    unprep(s, st);
    return err;
}

/* ---- wire integrity (issue 23): desired counters, authenticated devices, drift */

upk_err upk_store_ctr_next(upk_store *s, const char *device, const char *assignment, bool fresh,
                           int64_t now_ms, uint64_t *ctr)
{
    if (s == NULL || device == NULL || assignment == NULL || ctr == NULL || now_ms < 0)
        return UPK_E_INVALID_ARG;
    sqlite3_stmt *st = NULL;
    upk_err err = prep(s,
                       "UPDATE devices SET desired_ctr = CASE WHEN ?3 = 0 AND desired_ctr > 0 AND"
                       " desired_ctr_of = ?4 THEN desired_ctr ELSE max(desired_ctr + 1, ?2) END,"
                       " desired_ctr_of = ?4 WHERE id=?1 RETURNING desired_ctr",
                       &st);
    if (err != UPK_OK)
        return err;
    bind_text(st, 1, device);
    sqlite3_bind_int64(st, 2, now_ms);
    sqlite3_bind_int(st, 3, fresh ? 1 : 0);
    bind_text(st, 4, assignment);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        sqlite3_int64 v = sqlite3_column_int64(st, 0);
        if (v <= 0) {
            err = UPK_E_STATE_CORRUPT;
        } else {
            *ctr = (uint64_t)v;
            /* RETURNING: the change is made when the statement runs to its end. */
            if (sqlite3_step(st) != SQLITE_DONE)
                err = db_err(s, "ctr next");
        }
    } else if (rc == SQLITE_DONE) {
        err = UPK_E_NOT_FOUND;
    } else {
        err = db_err(s, "ctr next");
    }
    unprep(s, st);
    return err;
}

upk_err upk_store_device_authed(upk_store *s, const char *device, bool *authed)
{
    if (s == NULL || device == NULL || authed == NULL)
        return UPK_E_INVALID_ARG;
    sqlite3_stmt *st = NULL;
    upk_err err = prep(s, "SELECT authed FROM devices WHERE id=?", &st);
    if (err != UPK_OK)
        return err;
    bind_text(st, 1, device);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *authed = sqlite3_column_int(st, 0) != 0;
    else if (rc == SQLITE_DONE)
        *authed = false;
    else
        err = db_err(s, "device authed");
    unprep(s, st);
    return err;
}

upk_err upk_store_device_set_authed(upk_store *s, const char *device)
{
    if (s == NULL || device == NULL)
        return UPK_E_INVALID_ARG;
    const char *b[] = {device};
    return run(s,
               "INSERT INTO devices(id, authed) VALUES(?1, 1)"
               " ON CONFLICT(id) DO UPDATE SET authed=1 WHERE authed=0",
               b, 1, NULL);
}

upk_err upk_store_desired_all(upk_store *s, void (*fn)(const char *device, void *ud), void *ud)
{
    sqlite3_stmt *st = NULL;
    upk_err err = prep(
        s, "SELECT id FROM devices WHERE desired_release<>'' OR desired_ctr>0 ORDER BY id", &st);
    if (err != UPK_OK)
        return err;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        fn((const char *)sqlite3_column_text(st, 0), ud);
    if (rc != SQLITE_DONE)
        err = db_err(s, "desired all");
    unprep(s, st);
    return err;
}

upk_err upk_store_campaign_drift(upk_store *s, const char *campaign, size_t *n)
{
    if (s == NULL || campaign == NULL || n == NULL)
        return UPK_E_INVALID_ARG;
    sqlite3_stmt *st = NULL;
    upk_err err = prep(
        s, "SELECT count(*) FROM devices WHERE desired_campaign=? AND " UPK_STORE_DRIFT_SQL, &st);
    if (err != UPK_OK)
        return err;
    bind_text(st, 1, campaign);
    if (sqlite3_step(st) == SQLITE_ROW)
        *n = (size_t)sqlite3_column_int64(st, 0);
    else
        err = db_err(s, "campaign drift");
    unprep(s, st);
    return err;
}

/* ---- events */

/* New campaign-device state for an event step, or -1 for no change. */
static int event_transition(upk_cdev_state cur, upk_status step)
{
    bool active = cur == UPK_CDEV_ASSIGNED || cur == UPK_CDEV_IN_PROGRESS;
    switch (step) {
    case UPK_STATUS_COMMITTED:
        return active ? UPK_CDEV_SUCCEEDED : -1;
    case UPK_STATUS_FAILED:
    case UPK_STATUS_ROLLED_BACK:
    case UPK_STATUS_REJECTED:
        /* A committed device that rolls back during its bake is a failure. */
        return (active || cur == UPK_CDEV_SUCCEEDED) ? UPK_CDEV_FAILED : -1;
    case UPK_STATUS_IDLE:
        return -1;
    default:
        return cur == UPK_CDEV_ASSIGNED ? UPK_CDEV_IN_PROGRESS : -1;
    }
}

/* Moves the campaign row of device for an outcome it reported (inside the
 * caller's transaction). Only a report that names the campaign and the
 * campaign's own release, by name and version, counts: no wildcard, so a
 * report without a release (a device refusing a forged desired that only
 * named the campaign) changes nothing, and a rollback to the previous
 * release, which reuses the campaign id, does not count either. */
static upk_err apply_outcome(upk_store *s, const char *device, const char *campaign,
                             const char *release, const char *version, upk_status step,
                             upk_err error, int64_t now_ms)
{
    if (campaign[0] == '\0' || release[0] == '\0' || version[0] == '\0')
        return UPK_OK;
    sqlite3_stmt *st = NULL;
    upk_err err = prep(s,
                       "SELECT cd.state FROM campaign_devices cd JOIN campaigns c ON"
                       " c.id = cd.campaign JOIN releases r ON r.id = c.release"
                       " WHERE cd.campaign=? AND cd.device=? AND r.name=? AND r.version=?",
                       &st);
    if (err != UPK_OK)
        return err;
    bind_text(st, 1, campaign);
    bind_text(st, 2, device);
    bind_text(st, 3, release);
    bind_text(st, 4, version);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) {
        unprep(s, st);
        return UPK_OK;
    }
    if (rc != SQLITE_ROW) {
        err = db_err(s, "outcome lookup");
        goto out;
    }
    upk_cdev_state cur;
    if (!upk_cdev_state_from_str((const char *)sqlite3_column_text(st, 0), &cur)) {
        err = UPK_E_STATE_CORRUPT;
        goto out;
    }
    unprep(s, st);
    st = NULL;
    int next = event_transition(cur, step);
    if (next < 0)
        return UPK_OK;
    if ((err = prep(s,
                    "UPDATE campaign_devices SET state=?, done_ms=?, error=?"
                    " WHERE campaign=? AND device=?",
                    &st)) != UPK_OK)
        return err;
    bind_text(st, 1, upk_cdev_state_str((upk_cdev_state)next));
    sqlite3_bind_int64(st, 2, upk_cdev_state_is_final((upk_cdev_state)next) ? now_ms : 0);
    bind_text(st, 3, error != UPK_OK ? upk_err_str(error) : "");
    bind_text(st, 4, campaign);
    bind_text(st, 5, device);
    if (sqlite3_step(st) != SQLITE_DONE)
        err = db_err(s, "outcome apply");
out:
    unprep(s, st);
    return err;
}

upk_err upk_store_state_outcome(upk_store *s, const upk_state_msg *m, int64_t now_ms)
{
    /* Only a commit: a state names the installed release, which after a
     * failure is the old one, so a failure in a state cannot name the
     * campaign's release (and a state that did would claim failure while
     * running it). Failures come from events, which are acknowledged and so
     * not lost. */
    if (m->campaign[0] == '\0' || m->status != UPK_STATUS_COMMITTED)
        return UPK_OK;
    upk_err err = begin(s);
    if (err != UPK_OK)
        return err;
    if ((err = apply_outcome(s, m->device, m->campaign, m->release, m->version, m->status, m->error,
                             now_ms)) != UPK_OK) {
        rollback(s);
        return err;
    }
    return commit(s);
}

upk_err upk_store_event_apply(upk_store *s, const char *device, const upk_event_msg *e,
                              int64_t now_ms, bool *dup)
{
    upk_err err = begin(s);
    if (err != UPK_OK)
        return err;
    sqlite3_stmt *st = NULL;
    if ((err = prep(s,
                    "INSERT OR IGNORE INTO events(device, seq, ts, recv_ms, campaign, release,"
                    " version, step, error, message) VALUES(?,?,?,?,?,?,?,?,?,?)",
                    &st)) != UPK_OK)
        goto fail;
    bind_text(st, 1, device);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)e->seq);
    sqlite3_bind_int64(st, 3, e->ts);
    sqlite3_bind_int64(st, 4, now_ms);
    bind_text(st, 5, e->campaign);
    bind_text(st, 6, e->release);
    bind_text(st, 7, e->version);
    bind_text(st, 8, upk_status_str(e->step));
    bind_text(st, 9, upk_err_str(e->error));
    bind_text(st, 10, e->message);
    if (sqlite3_step(st) != SQLITE_DONE) {
        err = db_err(s, "event insert");
        goto fail_st;
    }
    unprep(s, st);
    st = NULL;
    if (sqlite3_changes(s->db) == 0) {
        *dup = true;
        return commit(s);
    }
    *dup = false;
    if ((err = apply_outcome(s, device, e->campaign, e->release, e->version, e->step, e->error,
                             now_ms)) != UPK_OK)
        goto fail;
    return commit(s);
fail_st:
    unprep(s, st);
fail:
    rollback(s);
    return err;
}

/* ---- releases */

void upk_release_row_cleanup(upk_release_row *r)
{
    if (r == NULL)
        return;
    free(r->manifest);
    r->manifest = NULL;
}

upk_err upk_store_release_insert(upk_store *s, const char *id, const upk_manifest *m,
                                 const char *manifest, size_t manifest_len, const uint8_t *sig,
                                 size_t sig_len, const char *key_id, const char *by, int64_t now_ms)
{
    char sha[UPK_SHA256_HEX_LEN + 1];
    upk_err err = upk_hex_encode(m->sha256, UPK_SHA256_LEN, sha, sizeof(sha));
    if (err != UPK_OK)
        return err;
    char hw[UPK_HW_MAX * (UPK_ID_MAX + 1) + 1] = "";
    size_t pos = 0;
    for (size_t i = 0; i < m->hw_count; i++) {
        int r = snprintf(hw + pos, sizeof(hw) - pos, "%s%s", i ? "," : "", m->hw[i]);
        if (r < 0 || (size_t)r >= sizeof(hw) - pos)
            return UPK_E_FIELD_TOO_LONG;
        pos += (size_t)r;
    }
    sqlite3_stmt *st = NULL;
    if ((err = prep(s,
                    "INSERT INTO releases(id, name, version, security_version, type, module, hw,"
                    " size, sha256, key_id, manifest, sig, created, expires, imported_ms,"
                    " imported_by) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    &st)) != UPK_OK)
        return err;
    bind_text(st, 1, id);
    bind_text(st, 2, m->name);
    bind_text(st, 3, m->version);
    sqlite3_bind_int64(st, 4, (sqlite3_int64)m->security_version);
    bind_text(st, 5, m->type == UPK_RELEASE_DELTA ? "delta" : "full");
    bind_text(st, 6, m->module);
    bind_text(st, 7, hw);
    sqlite3_bind_int64(st, 8, (sqlite3_int64)m->size);
    bind_text(st, 9, sha);
    bind_text(st, 10, key_id);
    sqlite3_bind_text(st, 11, manifest, (int)manifest_len, SQLITE_TRANSIENT);
    sqlite3_bind_blob(st, 12, sig, (int)sig_len, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 13, m->created);
    sqlite3_bind_int64(st, 14, m->expires);
    sqlite3_bind_int64(st, 15, now_ms);
    bind_text(st, 16, by);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_CONSTRAINT)
        err = UPK_E_EXISTS;
    else if (rc != SQLITE_DONE)
        err = db_err(s, "release insert");
    unprep(s, st);
    return err;
}

upk_err upk_store_release_get(upk_store *s, const char *id, upk_release_row *out)
{
    sqlite3_stmt *st = NULL;
    upk_err err = prep(s, "SELECT key_id, manifest, sig FROM releases WHERE id=?", &st);
    if (err != UPK_OK)
        return err;
    bind_text(st, 1, id);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) {
        err = UPK_E_NOT_FOUND;
        goto done;
    }
    if (rc != SQLITE_ROW) {
        err = db_err(s, "release get");
        goto done;
    }
    upk_release_row r;
    memset(&r, 0, sizeof(r));
    int rr = snprintf(r.id, sizeof(r.id), "%s", id);
    (void)rr;
    col_text(st, 0, r.key_id, sizeof(r.key_id));
    int mlen = sqlite3_column_bytes(st, 1);
    const unsigned char *mtext = sqlite3_column_text(st, 1);
    int slen = sqlite3_column_bytes(st, 2);
    const void *sig = sqlite3_column_blob(st, 2);
    if (mtext == NULL || mlen <= 0 || slen <= 0 || (size_t)slen > UPK_SIG_MAX || sig == NULL) {
        err = UPK_E_STATE_CORRUPT;
        goto done;
    }
    r.manifest = malloc((size_t)mlen + 1);
    if (r.manifest == NULL) {
        err = UPK_E_NOMEM;
        goto done;
    }
    memcpy(r.manifest, mtext, (size_t)mlen);
    r.manifest[mlen] = '\0';
    r.manifest_len = (size_t)mlen;
    memcpy(r.sig, sig, (size_t)slen);
    r.sig_len = (size_t)slen;
    if ((err = upk_manifest_decode(r.manifest, r.manifest_len, &r.m)) != UPK_OK) {
        free(r.manifest);
        goto done;
    }
    *out = r;
done:
    unprep(s, st);
    return err;
}

/* ---- campaigns */

static void stages_text(const upk_campaign *c, char *buf, size_t cap)
{
    size_t pos = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < c->stage_count; i++) {
        int r = snprintf(buf + pos, cap - pos, "%s%u", i ? "," : "", c->stage_bp[i]);
        if (r < 0 || (size_t)r >= cap - pos)
            return;
        pos += (size_t)r;
    }
}

static bool stages_parse(const char *t, upk_campaign *c)
{
    c->stage_count = 0;
    while (t != NULL && *t != '\0' && c->stage_count < UPK_STAGES_MAX) {
        char *end = NULL;
        unsigned long v = strtoul(t, &end, 10);
        if (end == t || v > 10000)
            return false;
        c->stage_bp[c->stage_count++] = (uint32_t)v;
        t = *end == ',' ? end + 1 : end;
        if (*end != ',' && *end != '\0')
            return false;
    }
    return c->stage_count > 0;
}

static const char campaign_cols[] =
    "id, release, target, state, reason, halted, stages, stage, soak_s, max_fail_bp,"
    " device_timeout_s, rate_per_min, max_in_flight, auto_rollback, tokens_milli, tokens_at_ms,"
    " stage_started_ms, stage_done_ms, created_ms, updated_ms, finished_ms, created_by,"
    " bake_s, max_unhealthy_bp, restart_limit, compare_baseline, baseline_factor, min_samples";

static void bind_campaign(sqlite3_stmt *st, const upk_campaign *c)
{
    char stages[UPK_STAGES_MAX * 8];
    stages_text(c, stages, sizeof(stages));
    bind_text(st, 1, c->id);
    bind_text(st, 2, c->release);
    bind_text(st, 3, c->target);
    bind_text(st, 4, upk_camp_state_str(c->state));
    bind_text(st, 5, c->reason);
    sqlite3_bind_int(st, 6, c->halted);
    bind_text(st, 7, stages);
    sqlite3_bind_int64(st, 8, c->stage);
    sqlite3_bind_int64(st, 9, c->soak_s);
    sqlite3_bind_int64(st, 10, c->max_fail_bp);
    sqlite3_bind_int64(st, 11, c->device_timeout_s);
    sqlite3_bind_int64(st, 12, c->rate_per_min);
    sqlite3_bind_int64(st, 13, c->max_in_flight);
    sqlite3_bind_int(st, 14, c->auto_rollback);
    sqlite3_bind_int64(st, 15, c->tokens_milli);
    sqlite3_bind_int64(st, 16, c->tokens_at_ms);
    sqlite3_bind_int64(st, 17, c->stage_started_ms);
    sqlite3_bind_int64(st, 18, c->stage_done_ms);
    sqlite3_bind_int64(st, 19, c->created_ms);
    sqlite3_bind_int64(st, 20, c->updated_ms);
    sqlite3_bind_int64(st, 21, c->finished_ms);
    bind_text(st, 22, c->created_by);
    sqlite3_bind_int64(st, 23, c->gate.bake_s);
    sqlite3_bind_int64(st, 24, c->gate.max_unhealthy_bp);
    sqlite3_bind_int64(st, 25, c->gate.restart_limit);
    sqlite3_bind_int(st, 26, c->gate.compare_baseline);
    sqlite3_bind_double(st, 27, c->gate.baseline_factor);
    sqlite3_bind_int64(st, 28, c->gate.min_samples);
}

upk_err upk_store_campaign_insert(upk_store *s, const upk_campaign *c, const char *const *ids,
                                  const uint32_t *stages, size_t n)
{
    upk_err err = begin(s);
    if (err != UPK_OK)
        return err;
    sqlite3_stmt *st = NULL;
    char sql[1024];
    int r = snprintf(
        sql, sizeof(sql),
        "INSERT INTO campaigns(%s) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        campaign_cols);
    (void)r;
    if ((err = prep(s, sql, &st)) != UPK_OK)
        goto fail;
    bind_campaign(st, c);
    int rc = sqlite3_step(st);
    unprep(s, st);
    st = NULL;
    if (rc == SQLITE_CONSTRAINT) {
        err = UPK_E_EXISTS;
        goto fail;
    }
    if (rc != SQLITE_DONE) {
        err = db_err(s, "campaign insert");
        goto fail;
    }
    if ((err = prep(s,
                    "INSERT INTO campaign_devices(campaign, device, stage, rank, state)"
                    " VALUES(?,?,?,?,'pending')",
                    &st)) != UPK_OK)
        goto fail;
    /* Rank = order of the SHA-256 keys, so reads come back in stage order. */
    for (size_t i = 0; i < n; i++) {
        uint8_t key[32];
        upk_engine_rank_key(c->id, ids[i], key);
        sqlite3_int64 rank = 0;
        for (int k = 0; k < 7; k++)
            rank = (rank << 8) | key[k];
        sqlite3_reset(st);
        bind_text(st, 1, c->id);
        bind_text(st, 2, ids[i]);
        sqlite3_bind_int64(st, 3, stages[i]);
        sqlite3_bind_int64(st, 4, rank);
        if (sqlite3_step(st) != SQLITE_DONE) {
            err = db_err(s, "campaign device insert");
            goto fail_st;
        }
    }
    unprep(s, st);
    if ((err = upk__store_gate_save(s, c->id, &c->gate)) != UPK_OK) /* store_health.c */
        goto fail;
    return commit(s);
fail_st:
    unprep(s, st);
fail:
    rollback(s);
    return err;
}

upk_err upk_store_campaign_get(upk_store *s, const char *id, upk_campaign *out)
{
    char sql[1024];
    int r = snprintf(sql, sizeof(sql), "SELECT %s FROM campaigns WHERE id=?", campaign_cols);
    (void)r;
    sqlite3_stmt *st = NULL;
    upk_err err = prep(s, sql, &st);
    if (err != UPK_OK)
        return err;
    bind_text(st, 1, id);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) {
        err = UPK_E_NOT_FOUND;
        goto done;
    }
    if (rc != SQLITE_ROW) {
        err = db_err(s, "campaign get");
        goto done;
    }
    upk_campaign c;
    memset(&c, 0, sizeof(c));
    col_text(st, 0, c.id, sizeof(c.id));
    col_text(st, 1, c.release, sizeof(c.release));
    col_text(st, 2, c.target, sizeof(c.target));
    if (!upk_camp_state_from_str((const char *)sqlite3_column_text(st, 3), &c.state) ||
        !stages_parse((const char *)sqlite3_column_text(st, 6), &c)) {
        err = UPK_E_STATE_CORRUPT;
        goto done;
    }
    col_text(st, 4, c.reason, sizeof(c.reason));
    c.halted = sqlite3_column_int(st, 5) != 0;
    c.stage = (uint32_t)sqlite3_column_int64(st, 7);
    c.soak_s = (uint32_t)sqlite3_column_int64(st, 8);
    c.max_fail_bp = (uint32_t)sqlite3_column_int64(st, 9);
    c.device_timeout_s = (uint32_t)sqlite3_column_int64(st, 10);
    c.rate_per_min = (uint32_t)sqlite3_column_int64(st, 11);
    c.max_in_flight = (uint32_t)sqlite3_column_int64(st, 12);
    c.auto_rollback = sqlite3_column_int(st, 13) != 0;
    c.tokens_milli = sqlite3_column_int64(st, 14);
    c.tokens_at_ms = sqlite3_column_int64(st, 15);
    c.stage_started_ms = sqlite3_column_int64(st, 16);
    c.stage_done_ms = sqlite3_column_int64(st, 17);
    c.created_ms = sqlite3_column_int64(st, 18);
    c.updated_ms = sqlite3_column_int64(st, 19);
    c.finished_ms = sqlite3_column_int64(st, 20);
    col_text(st, 21, c.created_by, sizeof(c.created_by));
    c.gate.bake_s = (uint32_t)sqlite3_column_int64(st, 22);
    c.gate.max_unhealthy_bp = (uint32_t)sqlite3_column_int64(st, 23);
    c.gate.restart_limit = (uint32_t)sqlite3_column_int64(st, 24);
    c.gate.compare_baseline = sqlite3_column_int(st, 25) != 0;
    c.gate.baseline_factor = sqlite3_column_double(st, 26);
    c.gate.min_samples = (uint32_t)sqlite3_column_int64(st, 27);
    if (c.stage >= c.stage_count) {
        err = UPK_E_STATE_CORRUPT;
        goto done;
    }
    if ((err = upk__store_gate_load(s, c.id, &c.gate)) != UPK_OK) /* store_health.c */
        goto done;
    *out = c;
done:
    unprep(s, st);
    return err;
}

upk_err upk_store_campaign_devices(upk_store *s, const char *id, upk_cdev **out, size_t *n)
{
    sqlite3_stmt *st = NULL;
    upk_err err = prep(s,
                       "SELECT cd.device, cd.stage, cd.state, COALESCE(d.online, 0),"
                       " cd.assigned_ms, cd.done_ms, cd.error FROM campaign_devices cd"
                       " LEFT JOIN devices d ON d.id = cd.device WHERE cd.campaign=?"
                       " ORDER BY cd.stage, cd.rank, cd.device",
                       &st);
    if (err != UPK_OK)
        return err;
    bind_text(st, 1, id);
    upk_cdev *v = NULL;
    size_t count = 0, cap = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (count == cap) {
            size_t ncap = cap ? cap * 2 : 64;
            upk_cdev *nv = realloc(v, ncap * sizeof(*v));
            if (nv == NULL) {
                err = UPK_E_NOMEM;
                goto fail;
            }
            v = nv;
            cap = ncap;
        }
        upk_cdev *d = &v[count];
        memset(d, 0, sizeof(*d));
        col_text(st, 0, d->device, sizeof(d->device));
        d->stage = (uint32_t)sqlite3_column_int64(st, 1);
        if (!upk_cdev_state_from_str((const char *)sqlite3_column_text(st, 2), &d->state)) {
            err = UPK_E_STATE_CORRUPT;
            goto fail;
        }
        d->online = sqlite3_column_int(st, 3) != 0;
        d->assigned_ms = sqlite3_column_int64(st, 4);
        d->done_ms = sqlite3_column_int64(st, 5);
        col_text(st, 6, d->error, sizeof(d->error));
        count++;
    }
    if (rc != SQLITE_DONE) {
        err = db_err(s, "campaign devices");
        goto fail;
    }
    unprep(s, st);
    *out = v;
    *n = count;
    return UPK_OK;
fail:
    unprep(s, st);
    free(v);
    return err;
}

upk_err upk_store_campaigns_running(upk_store *s, char (*ids)[UPK_ID_MAX + 1], size_t cap,
                                    size_t *n)
{
    sqlite3_stmt *st = NULL;
    upk_err err =
        prep(s, "SELECT id FROM campaigns WHERE state='running' ORDER BY created_ms", &st);
    if (err != UPK_OK)
        return err;
    size_t count = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW && count < cap)
        col_text(st, 0, ids[count++], UPK_ID_MAX + 1);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        err = db_err(s, "campaigns running");
    unprep(s, st);
    *n = count;
    return err;
}

static upk_err campaign_update(upk_store *s, const upk_campaign *c)
{
    sqlite3_stmt *st = NULL;
    upk_err err = prep(s,
                       "UPDATE campaigns SET release=?2, target=?3, state=?4, reason=?5,"
                       " halted=?6, stages=?7, stage=?8, soak_s=?9, max_fail_bp=?10,"
                       " device_timeout_s=?11, rate_per_min=?12, max_in_flight=?13,"
                       " auto_rollback=?14, tokens_milli=?15, tokens_at_ms=?16,"
                       " stage_started_ms=?17, stage_done_ms=?18, created_ms=?19,"
                       " updated_ms=?20, finished_ms=?21, created_by=?22, bake_s=?23,"
                       " max_unhealthy_bp=?24, restart_limit=?25, compare_baseline=?26,"
                       " baseline_factor=?27, min_samples=?28 WHERE id=?1",
                       &st);
    if (err != UPK_OK)
        return err;
    bind_campaign(st, c);
    if (sqlite3_step(st) != SQLITE_DONE)
        err = db_err(s, "campaign update");
    else if (sqlite3_changes(s->db) != 1)
        err = UPK_E_NOT_FOUND;
    unprep(s, st);
    return err;
}

/* Sets the desired of every device the campaign started back to what it was
 * before, and marks never-started devices skipped. */
static upk_err restore_previous(upk_store *s, const char *id, int64_t now_ms)
{
    const char *b[] = {id};
    upk_err err = run(s,
                      "UPDATE devices SET desired_release = cd.prev_release,"
                      " desired_campaign = CASE WHEN cd.prev_release = '' THEN '' ELSE"
                      " cd.campaign END, desired_acked = 0"
                      " FROM campaign_devices cd WHERE cd.device = devices.id AND"
                      " cd.campaign = ? AND cd.assigned_ms > 0",
                      b, 1, NULL);
    if (err != UPK_OK)
        return err;
    char now[32];
    int r = snprintf(now, sizeof(now), "%lld", (long long)now_ms);
    (void)r;
    const char *b2[] = {now, id};
    if ((err = run(s,
                   "UPDATE campaign_devices SET state='skipped', done_ms=? WHERE campaign=? AND"
                   " state='pending'",
                   b2, 2, NULL)) != UPK_OK)
        return err;
    /* What each started device gets back, or why it cannot (rollback.h). */
    return upk_rollback_plan(s, id, now_ms);
}

static void notify_started(upk_store *s, const char *id,
                           void (*changed)(const char *device, void *ud), void *ud)
{
    sqlite3_stmt *st = NULL;
    if (changed == NULL ||
        prep(s, "SELECT device FROM campaign_devices WHERE campaign=? AND assigned_ms > 0", &st) !=
            UPK_OK)
        return;
    bind_text(st, 1, id);
    while (sqlite3_step(st) == SQLITE_ROW)
        changed((const char *)sqlite3_column_text(st, 0), ud);
    unprep(s, st);
}

upk_err upk_store_campaign_apply(upk_store *s, const upk_step_result *res, const upk_cdev *devs,
                                 const upk_action *actions, int64_t now_ms,
                                 void (*changed)(const char *device, void *ud), void *ud)
{
    const upk_campaign *c = &res->next;
    upk_err err = begin(s);
    if (err != UPK_OK)
        return err;
    sqlite3_stmt *start = NULL, *fin = NULL;
    if ((err = campaign_update(s, c)) != UPK_OK)
        goto fail;
    if ((err = prep(s,
                    "UPDATE campaign_devices SET state='assigned', assigned_ms=?1,"
                    " prev_release=COALESCE((SELECT desired_release FROM devices WHERE id=?3),"
                    " '') WHERE campaign=?2 AND device=?3 AND state='pending'",
                    &start)) != UPK_OK)
        goto fail;
    if ((err = prep(s,
                    "UPDATE campaign_devices SET state=?1, done_ms=?2 WHERE campaign=?3 AND"
                    " device=?4 AND state IN ('pending','assigned','in_progress')",
                    &fin)) != UPK_OK)
        goto fail;
    sqlite3_stmt *desired = NULL;
    if ((err = prep(s,
                    "UPDATE devices SET desired_release=COALESCE((SELECT release FROM"
                    " campaign_release WHERE campaign=?2 AND device=?3), ?1),"
                    " desired_campaign=?2, desired_acked=0 WHERE id=?3",
                    &desired)) != UPK_OK)
        goto fail;
    for (size_t i = 0; i < res->action_count; i++) {
        const upk_cdev *d = &devs[actions[i].index];
        if (actions[i].kind == UPK_ACT_START) {
            sqlite3_reset(start);
            sqlite3_bind_int64(start, 1, now_ms);
            bind_text(start, 2, c->id);
            bind_text(start, 3, d->device);
            if (sqlite3_step(start) != SQLITE_DONE) {
                err = db_err(s, "start");
                goto fail_desired;
            }
            /* A device is started at most once: skip it unless the row moved. */
            if (sqlite3_changes(s->db) != 1)
                continue;
            sqlite3_reset(desired);
            bind_text(desired, 1, c->release);
            bind_text(desired, 2, c->id);
            bind_text(desired, 3, d->device);
            if (sqlite3_step(desired) != SQLITE_DONE) {
                err = db_err(s, "desired");
                goto fail_desired;
            }
        } else {
            sqlite3_reset(fin);
            bind_text(fin, 1,
                      upk_cdev_state_str(actions[i].kind == UPK_ACT_TIMEOUT ? UPK_CDEV_TIMED_OUT
                                                                            : UPK_CDEV_SKIPPED));
            sqlite3_bind_int64(fin, 2, now_ms);
            bind_text(fin, 3, c->id);
            bind_text(fin, 4, d->device);
            if (sqlite3_step(fin) != SQLITE_DONE) {
                err = db_err(s, "finish");
                goto fail_desired;
            }
        }
    }
    unprep(s, desired);
    desired = NULL;
    if (res->verdict == UPK_VERDICT_ROLLBACK &&
        (err = restore_previous(s, c->id, now_ms)) != UPK_OK)
        goto fail;
    unprep(s, start);
    unprep(s, fin);
    start = fin = NULL;
    if ((err = commit(s)) != UPK_OK)
        goto fail;
    if (changed != NULL) {
        if (res->verdict == UPK_VERDICT_ROLLBACK) {
            notify_started(s, c->id, changed, ud);
        } else {
            for (size_t i = 0; i < res->action_count; i++)
                if (actions[i].kind == UPK_ACT_START)
                    changed(devs[actions[i].index].device, ud);
        }
    }
    return UPK_OK;
fail_desired:
    unprep(s, desired);
fail:
    unprep(s, start);
    unprep(s, fin);
    rollback(s);
    return err;
}

upk_err upk_store_campaign_transition(upk_store *s, const char *id, upk_camp_state to,
                                      const char *reason, int64_t now_ms,
                                      void (*changed)(const char *device, void *ud), void *ud)
{
    upk_err err = begin(s);
    if (err != UPK_OK)
        return err;
    upk_campaign c;
    if ((err = upk_store_campaign_get(s, id, &c)) != UPK_OK)
        goto fail;
    /* A rollback is rolled back only once the devices report it. */
    if (to == UPK_CAMP_ROLLED_BACK)
        to = UPK_CAMP_ROLLING_BACK;
    bool ok;
    switch (to) {
    case UPK_CAMP_PAUSED:
        ok = c.state == UPK_CAMP_RUNNING;
        break;
    case UPK_CAMP_RUNNING:
        ok = c.state == UPK_CAMP_PAUSED;
        break;
    case UPK_CAMP_ABORTED:
        ok = c.state == UPK_CAMP_RUNNING || c.state == UPK_CAMP_PAUSED;
        break;
    case UPK_CAMP_ROLLING_BACK:
        /* Again from rollback_incomplete: the devices not back yet. */
        ok = c.state != UPK_CAMP_ROLLED_BACK && c.state != UPK_CAMP_ROLLING_BACK;
        break;
    default:
        ok = false;
    }
    if (!ok) {
        err = UPK_E_STATE_INVALID;
        goto fail;
    }
    c.state = to;
    c.halted = false;
    c.updated_ms = now_ms;
    int r = snprintf(c.reason, sizeof(c.reason), "%s", reason != NULL ? reason : "");
    (void)r;
    if (to == UPK_CAMP_RUNNING) {
        /* Resuming restarts the device clocks of a halted stage's waiters
         * and the soak, but not of devices already running. */
        c.tokens_at_ms = 0;
        c.stage_done_ms = 0;
    } else if (to == UPK_CAMP_ABORTED) {
        c.finished_ms = now_ms;
    } else if (to == UPK_CAMP_ROLLING_BACK) {
        c.finished_ms = 0;
    }
    if ((err = campaign_update(s, &c)) != UPK_OK)
        goto fail;
    if (to == UPK_CAMP_ROLLING_BACK) {
        if ((err = restore_previous(s, id, now_ms)) != UPK_OK)
            goto fail;
    } else if (to == UPK_CAMP_ABORTED) {
        char now[32];
        r = snprintf(now, sizeof(now), "%lld", (long long)now_ms);
        const char *b[] = {now, id};
        if ((err = run(s,
                       "UPDATE campaign_devices SET state='skipped', done_ms=? WHERE"
                       " campaign=? AND state='pending'",
                       b, 2, NULL)) != UPK_OK)
            goto fail;
    }
    if ((err = commit(s)) != UPK_OK)
        goto fail;
    if (to == UPK_CAMP_ROLLING_BACK)
        notify_started(s, id, changed, ud);
    return UPK_OK;
fail:
    rollback(s);
    return err;
}

/* ---- audit */

upk_err upk_store_audit(upk_store *s, int64_t now_ms, const char *sender, const char *cmd,
                        const char *args, const char *result)
{
    char now[32];
    int r = snprintf(now, sizeof(now), "%lld", (long long)now_ms);
    (void)r;
    const char *b[] = {now, sender, cmd, args, result};
    return run(s, "INSERT INTO audit(ts_ms, sender, cmd, args, result) VALUES(?,?,?,?,?)", b, 5,
               NULL);
}

/* ---- generic read */

upk_err upk_store_query_json(upk_store *s, const char *sql, const char *const *binds, size_t nbinds,
                             cJSON **out)
{
    sqlite3_stmt *st = NULL;
    upk_err err = prep(s, sql, &st);
    if (err != UPK_OK)
        return err;
    for (size_t i = 0; i < nbinds; i++)
        bind_text(st, (int)i + 1, binds[i]);
    cJSON *arr = cJSON_CreateArray();
    if (arr == NULL) {
        err = UPK_E_NOMEM;
        goto done;
    }
    int rc;
    int cols = sqlite3_column_count(st);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        cJSON *row = cJSON_CreateObject();
        if (row == NULL || !cJSON_AddItemToArray(arr, row)) {
            cJSON_Delete(row);
            err = UPK_E_NOMEM;
            goto fail;
        }
        for (int i = 0; i < cols; i++) {
            const char *name = sqlite3_column_name(st, i);
            cJSON *v;
            switch (sqlite3_column_type(st, i)) {
            case SQLITE_INTEGER:
                v = cJSON_CreateNumber((double)sqlite3_column_int64(st, i));
                break;
            case SQLITE_FLOAT:
                v = cJSON_CreateNumber(sqlite3_column_double(st, i));
                break;
            case SQLITE_NULL:
                v = cJSON_CreateNull();
                break;
            default:
                v = cJSON_CreateString((const char *)sqlite3_column_text(st, i));
                break;
            }
            if (v == NULL || !cJSON_AddItemToObject(row, name, v)) {
                cJSON_Delete(v);
                err = UPK_E_NOMEM;
                goto fail;
            }
        }
    }
    if (rc != SQLITE_DONE) {
        err = db_err(s, "query");
        goto fail;
    }
    *out = arr;
    goto done;
fail:
    cJSON_Delete(arr);
done:
    unprep(s, st);
    return err;
}

/* ---- internal entry points for the store's other files (store_int.h) */

upk_err upk__store_prep(upk_store *s, const char *sql, sqlite3_stmt **st)
{
    return prep(s, sql, st);
}

void upk__store_unprep(upk_store *s, sqlite3_stmt *st)
{
    unprep(s, st);
}

upk_err upk__store_begin(upk_store *s)
{
    return begin(s);
}

upk_err upk__store_commit(upk_store *s)
{
    return commit(s);
}

void upk__store_rollback(upk_store *s)
{
    rollback(s);
}

upk_err upk__store_db_err(upk_store *s, const char *what)
{
    return db_err(s, what);
}

/* ---- cached statements for the modules beside the store (rollback.c,
 * campaign_ext.c) on their per-message paths */

upk_err upk_store_run(upk_store *s, const char *sql, const char *const *binds, size_t n,
                      int *changes)
{
    return run(s, sql, binds, n, changes);
}

upk_err upk_store_int(upk_store *s, const char *sql, const char *const *binds, size_t n,
                      int64_t *out, bool *found)
{
    sqlite3_stmt *st = NULL;
    upk_err err = prep(s, sql, &st);
    if (err != UPK_OK)
        return err;
    for (size_t i = 0; i < n; i++)
        bind_text(st, (int)i + 1, binds[i]);
    int rc = sqlite3_step(st);
    *found = rc == SQLITE_ROW;
    if (rc == SQLITE_ROW)
        *out = sqlite3_column_int64(st, 0);
    else if (rc != SQLITE_DONE)
        err = db_err(s, "int query");
    unprep(s, st);
    return err;
}
