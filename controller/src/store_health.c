/* Health data of the controller store (store.h, "health"): what devices
 * report after an update, bounded per device, read back for the health gate
 * by primary key only, and pruned by age. Split from store.c (issue 17) so
 * that the gate's data rules live in one place; it reaches the connection
 * through store_int.h. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "store.h"
#include "store_int.h"
#include "upkeep/log.h"

static void bind_text(sqlite3_stmt *st, int i, const char *v)
{
    sqlite3_bind_text(st, i, v != NULL ? v : "", -1, SQLITE_TRANSIENT);
}

static void col_text(sqlite3_stmt *st, int i, char *out, size_t cap)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    int r = snprintf(out, cap, "%s", t != NULL ? (const char *)t : "");
    (void)r; /* ids and names are bounded by the decoders */
}

upk_err upk__store_gate_save(upk_store *s, const char *id, const upk_gate_cfg *gate)
{
    if (gate->metric_count == 0)
        return UPK_OK;
    char spec[UPK_GATE_SPEC_MAX * 2];
    upk_gate_format_metrics(gate, spec, sizeof(spec));
    sqlite3_stmt *st = NULL;
    upk_err err = upk__store_prep(
        s, "INSERT OR REPLACE INTO campaign_gate(campaign, metrics) VALUES(?1, ?2)", &st);
    if (err != UPK_OK)
        return err;
    bind_text(st, 1, id);
    bind_text(st, 2, spec);
    if (sqlite3_step(st) != SQLITE_DONE)
        err = upk__store_db_err(s, "campaign gate save");
    upk__store_unprep(s, st);
    return err;
}

upk_err upk__store_gate_load(upk_store *s, const char *id, upk_gate_cfg *gate)
{
    sqlite3_stmt *st = NULL;
    gate->metric_count = 0;
    upk_err err = upk__store_prep(s, "SELECT metrics FROM campaign_gate WHERE campaign=?1", &st);
    if (err != UPK_OK)
        return err;
    bind_text(st, 1, id);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const unsigned char *t = sqlite3_column_text(st, 0);
        if (upk_gate_parse_metrics(t != NULL ? (const char *)t : "", gate) != UPK_OK) {
            upk_error("store: campaign=%s gate metrics unreadable", id);
            err = UPK_E_STATE_CORRUPT;
        }
    } else if (rc != SQLITE_DONE) {
        err = upk__store_db_err(s, "campaign gate load");
    }
    upk__store_unprep(s, st);
    return err;
}

/* True in *in when device is one of campaign's devices. */
static upk_err in_campaign(upk_store *s, const char *campaign, const char *device, bool *in)
{
    sqlite3_stmt *st = NULL;
    upk_err err =
        upk__store_prep(s, "SELECT 1 FROM campaign_devices WHERE campaign=?1 AND device=?2", &st);
    if (err != UPK_OK)
        return err;
    bind_text(st, 1, campaign);
    bind_text(st, 2, device);
    int rc = sqlite3_step(st);
    *in = rc == SQLITE_ROW;
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        err = upk__store_db_err(s, "campaign membership");
    upk__store_unprep(s, st);
    return err;
}

/* True in *known when device already has a latest value named name; *count
 * gets how many names it has. */
static upk_err names_of(upk_store *s, const char *device, const char *name, bool *known,
                        size_t *count)
{
    sqlite3_stmt *st = NULL;
    upk_err err = upk__store_prep(s,
                                  "SELECT count(*), total(name=?2) FROM health_metrics WHERE"
                                  " campaign='' AND device=?1",
                                  &st);
    if (err != UPK_OK)
        return err;
    bind_text(st, 1, device);
    bind_text(st, 2, name);
    if (sqlite3_step(st) == SQLITE_ROW) {
        *count = (size_t)sqlite3_column_int64(st, 0);
        *known = sqlite3_column_double(st, 1) > 0;
    } else {
        err = upk__store_db_err(s, "health names");
    }
    upk__store_unprep(s, st);
    return err;
}

static upk_err step_done(upk_store *s, sqlite3_stmt *st, const char *what)
{
    return sqlite3_step(st) == SQLITE_DONE ? UPK_OK : upk__store_db_err(s, what);
}

upk_err upk_store_health_record(upk_store *s, const char *device, const upk_event_msg *e,
                                int64_t now_ms)
{
    if (s == NULL || device == NULL || e == NULL || e->health.metric_count > UPK_GATE_METRICS_MAX)
        return UPK_E_INVALID_ARG;
    if (!e->health.present)
        return UPK_OK;
    const upk_health *h = &e->health;
    bool under = false;
    upk_gate_cfg gate;
    upk_gate_cfg_init(&gate);
    upk_err err = UPK_OK;
    if (e->campaign[0] != '\0') {
        if ((err = in_campaign(s, e->campaign, device, &under)) != UPK_OK)
            return err;
        if (under && (err = upk__store_gate_load(s, e->campaign, &gate)) != UPK_OK)
            return err;
        if (!under)
            upk_debug("store: health of device=%s under campaign=%s it is not in: kept only as"
                      " its latest values",
                      device, e->campaign);
    }
    /* Every value first: one out of range refuses the whole report. */
    for (size_t i = 0; i < h->metric_count; i++) {
        double v = h->metric_value[i];
        const upk_gate_metric *m = NULL;
        for (size_t k = 0; k < gate.metric_count && m == NULL; k++)
            if (strcmp(gate.metrics[k].name, h->metric_name[i]) == 0)
                m = &gate.metrics[k];
        bool bad = !isfinite(v) || fabs(v) > UPK_METRIC_ABS_MAX ||
                   (m != NULL && m->ranged && (v < m->lo || v > m->hi));
        if (bad) {
            upk_warn("store: health refused device=%s campaign=%s metric=%s value=%g err=%s"
                     " (outside the declared range)",
                     device, e->campaign, h->metric_name[i], v, upk_err_str(UPK_E_FIELD_RANGE));
            return UPK_E_FIELD_RANGE;
        }
    }
    if ((err = upk__store_begin(s)) != UPK_OK)
        return err;
    sqlite3_stmt *st = NULL;
    /* The health row: under the campaign when the device is in it, else the
     * device's idle row (campaign ''). */
    if ((err = upk__store_prep(
             s,
             "INSERT INTO health(campaign, device, restarts, boots, check_failed, recv_ms)"
             " VALUES(?1,?2,?3,?4,?5,?6) ON CONFLICT(campaign, device) DO UPDATE SET"
             " restarts=max(restarts, ?3), boots=max(boots, ?4),"
             " check_failed=max(check_failed, ?5), recv_ms=?6",
             &st)) != UPK_OK)
        goto fail;
    bind_text(st, 1, under ? e->campaign : "");
    bind_text(st, 2, device);
    sqlite3_bind_int64(st, 3, h->restarts);
    sqlite3_bind_int64(st, 4, h->boots);
    sqlite3_bind_int(st, 5, h->check_ok == 0);
    sqlite3_bind_int64(st, 6, now_ms);
    err = step_done(s, st, "health record");
    upk__store_unprep(s, st);
    st = NULL;
    if (err != UPK_OK)
        goto fail;
    size_t dropped = 0;
    for (size_t i = 0; i < h->metric_count; i++) {
        const char *name = h->metric_name[i];
        bool known = false;
        size_t count = 0;
        if ((err = names_of(s, device, name, &known, &count)) != UPK_OK)
            goto fail;
        if (!known && count >= UPK_HEALTH_NAMES_MAX) {
            dropped++;
            continue;
        }
        /* The latest value, what a baseline reads. */
        if ((err = upk__store_prep(
                 s,
                 "INSERT INTO health_metrics(campaign, device, name, sum, n, recv_ms)"
                 " VALUES('',?1,?2,?3,1,?4) ON CONFLICT(campaign, device, name) DO"
                 " UPDATE SET sum=?3, n=1, recv_ms=?4",
                 &st)) != UPK_OK)
            goto fail;
        bind_text(st, 1, device);
        bind_text(st, 2, name);
        sqlite3_bind_double(st, 3, h->metric_value[i]);
        sqlite3_bind_int64(st, 4, now_ms);
        err = step_done(s, st, "health latest");
        upk__store_unprep(s, st);
        st = NULL;
        if (err != UPK_OK)
            goto fail;
        bool wanted = gate.metric_count == 0;
        for (size_t k = 0; k < gate.metric_count && !wanted; k++)
            wanted = strcmp(gate.metrics[k].name, name) == 0;
        if (!under || !wanted)
            continue;
        /* Under the campaign: the device's own mean over its bake window. */
        if ((err = upk__store_prep(
                 s,
                 "INSERT INTO health_metrics(campaign, device, name, sum, n, recv_ms)"
                 " VALUES(?1,?2,?3,?4,1,?5) ON CONFLICT(campaign, device, name) DO"
                 " UPDATE SET sum=sum+?4, n=n+1, recv_ms=?5",
                 &st)) != UPK_OK)
            goto fail;
        bind_text(st, 1, e->campaign);
        bind_text(st, 2, device);
        bind_text(st, 3, name);
        sqlite3_bind_double(st, 4, h->metric_value[i]);
        sqlite3_bind_int64(st, 5, now_ms);
        err = step_done(s, st, "health metric");
        upk__store_unprep(s, st);
        st = NULL;
        if (err != UPK_OK)
            goto fail;
    }
    if ((err = upk__store_commit(s)) != UPK_OK)
        goto fail;
    if (dropped > 0) {
        upk_warn("store: health of device=%s: %zu new metric names dropped err=%s (at most %d"
                 " names per device)",
                 device, dropped, upk_err_str(UPK_E_FIELD_TOO_LONG), UPK_HEALTH_NAMES_MAX);
        return UPK_E_FIELD_TOO_LONG;
    }
    return UPK_OK;
fail:
    upk__store_rollback(s);
    return err;
}

/* Health and metrics of one device into d: for an updated device those
 * reported under campaign id, else its latest values received since since_ms
 * (the campaign's current stage started: the same window). With named gate
 * metrics only those are read. */
static upk_err gate_fill(upk_store *s, const char *id, const upk_gate_cfg *gate, int64_t since_ms,
                         upk_gate_dev *d)
{
    sqlite3_stmt *st = NULL;
    upk_err err = upk__store_prep(s, "SELECT hw FROM devices WHERE id=?1", &st);
    if (err != UPK_OK)
        return err;
    bind_text(st, 1, d->device);
    if (sqlite3_step(st) == SQLITE_ROW)
        col_text(st, 0, d->hw, sizeof(d->hw));
    upk__store_unprep(s, st);
    st = NULL;
    if (d->updated) {
        if ((err = upk__store_prep(s,
                                   "SELECT restarts, boots, check_failed FROM health WHERE"
                                   " campaign=?1 AND device=?2",
                                   &st)) != UPK_OK)
            return err;
        bind_text(st, 1, id);
        bind_text(st, 2, d->device);
        if (sqlite3_step(st) == SQLITE_ROW) {
            d->restarts = (uint32_t)sqlite3_column_int64(st, 0);
            d->boots = (uint32_t)sqlite3_column_int64(st, 1);
            d->check_failed = d->check_failed || sqlite3_column_int(st, 2) != 0;
        }
        upk__store_unprep(s, st);
        st = NULL;
    }
    /* At most UPK_HEALTH_NAMES_MAX rows either way (the cap per device),
     * found by the primary key: "+recv_ms" keeps the planner off the
     * (device, recv_ms) index, which would walk every row of the device. */
    if ((err = upk__store_prep(s,
                               "SELECT name, sum / n FROM health_metrics WHERE campaign=?1 AND"
                               " device=?2 AND +recv_ms >= ?3 ORDER BY name",
                               &st)) != UPK_OK)
        return err;
    bind_text(st, 1, d->updated ? id : "");
    bind_text(st, 2, d->device);
    sqlite3_bind_int64(st, 3, d->updated ? 0 : since_ms);
    while (sqlite3_step(st) == SQLITE_ROW && d->metric_count < UPK_GATE_METRICS_MAX) {
        size_t k = d->metric_count;
        col_text(st, 0, d->metric_name[k], sizeof(d->metric_name[k]));
        bool wanted = gate->metric_count == 0;
        for (size_t j = 0; j < gate->metric_count && !wanted; j++)
            wanted = strcmp(gate->metrics[j].name, d->metric_name[k]) == 0;
        if (!wanted)
            continue;
        d->metric_value[k] = sqlite3_column_double(st, 1);
        d->metric_count++;
    }
    upk__store_unprep(s, st);
    return UPK_OK;
}

upk_err upk_store_gate_devices(upk_store *s, const char *id, const upk_cdev *devs, size_t n,
                               upk_gate_dev **out, size_t *out_n)
{
    if (s == NULL || id == NULL || out == NULL || out_n == NULL || (n > 0 && devs == NULL))
        return UPK_E_INVALID_ARG;
    *out = NULL;
    *out_n = 0;
    upk_gate_cfg gate;
    upk_gate_cfg_init(&gate);
    upk_err err = upk__store_gate_load(s, id, &gate);
    if (err != UPK_OK)
        return err;
    int64_t since = 0;
    sqlite3_stmt *st = NULL;
    if ((err = upk__store_prep(s, "SELECT stage_started_ms FROM campaigns WHERE id=?1", &st)) !=
        UPK_OK)
        return err;
    bind_text(st, 1, id);
    if (sqlite3_step(st) == SQLITE_ROW)
        since = sqlite3_column_int64(st, 0);
    upk__store_unprep(s, st);
    upk_gate_dev *g = calloc(n > 0 ? n : 1, sizeof(*g));
    if (g == NULL)
        return UPK_E_NOMEM;
    for (size_t i = 0; i < n; i++) {
        upk_gate_dev *d = &g[i];
        int r = snprintf(d->device, sizeof(d->device), "%s", devs[i].device);
        (void)r;
        d->updated = devs[i].state == UPK_CDEV_SUCCEEDED || devs[i].state == UPK_CDEV_FAILED;
        d->rolled_back = devs[i].state == UPK_CDEV_FAILED;
        /* Committed but not online when judged: "did not come back online"
         * (before issue 17 nothing set this, so the rule never fired). */
        d->offline = devs[i].state == UPK_CDEV_SUCCEEDED && !devs[i].online;
        if ((err = gate_fill(s, id, &gate, since, d)) != UPK_OK) {
            free(g);
            return err;
        }
    }
    *out = g;
    *out_n = n;
    return UPK_OK;
}

/* Deletes at most batch rows chosen by sql (binds ?1 = cutoff, ?2 = batch). */
static upk_err prune_one(upk_store *s, const char *sql, int64_t cutoff, size_t batch,
                         size_t *deleted)
{
    sqlite3_stmt *st = NULL;
    upk_err err = upk__store_prep(s, sql, &st);
    if (err != UPK_OK)
        return err;
    sqlite3_bind_int64(st, 1, cutoff);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)batch);
    if (sqlite3_step(st) != SQLITE_DONE)
        err = upk__store_db_err(s, "prune");
    else
        *deleted += (size_t)sqlite3_changes(sqlite3_db_handle(st));
    upk__store_unprep(s, st);
    return err;
}

upk_err upk_store_prune(upk_store *s, int64_t now_ms, int64_t events_keep_ms,
                        int64_t health_keep_ms, size_t batch, size_t *deleted)
{
    if (s == NULL || batch == 0 || events_keep_ms < 0 || health_keep_ms < 0)
        return UPK_E_INVALID_ARG;
    size_t n = 0;
    upk_err err = upk__store_begin(s);
    if (err != UPK_OK)
        return err;
    if (events_keep_ms > 0 &&
        (err = prune_one(s,
                         "DELETE FROM events WHERE rowid IN (SELECT rowid FROM events WHERE"
                         " recv_ms < ?1 ORDER BY recv_ms LIMIT ?2)",
                         now_ms - events_keep_ms, batch, &n)) != UPK_OK)
        goto fail;
    if (health_keep_ms > 0) {
        int64_t cut = now_ms - health_keep_ms;
        /* Latest values and idle rows by age; a campaign's rows once it has
         * been finished for the keep time. */
        if ((err = prune_one(s,
                             "DELETE FROM health_metrics WHERE rowid IN (SELECT rowid FROM"
                             " health_metrics WHERE recv_ms < ?1 AND campaign='' ORDER BY recv_ms"
                             " LIMIT ?2)",
                             cut, batch, &n)) != UPK_OK ||
            (err = prune_one(s,
                             "DELETE FROM health WHERE rowid IN (SELECT rowid FROM health WHERE"
                             " recv_ms < ?1 AND campaign='' ORDER BY recv_ms LIMIT ?2)",
                             cut, batch, &n)) != UPK_OK ||
            (err = prune_one(s,
                             "DELETE FROM health_metrics WHERE rowid IN (SELECT m.rowid FROM"
                             " health_metrics m JOIN campaigns c ON c.id = m.campaign WHERE"
                             " c.finished_ms > 0 AND c.finished_ms < ?1 LIMIT ?2)",
                             cut, batch, &n)) != UPK_OK ||
            (err = prune_one(s,
                             "DELETE FROM health WHERE rowid IN (SELECT h.rowid FROM health h"
                             " JOIN campaigns c ON c.id = h.campaign WHERE c.finished_ms > 0 AND"
                             " c.finished_ms < ?1 LIMIT ?2)",
                             cut, batch, &n)) != UPK_OK)
            goto fail;
    }
    if ((err = upk__store_commit(s)) != UPK_OK)
        goto fail;
    if (deleted != NULL)
        *deleted = n;
    return UPK_OK;
fail:
    upk__store_rollback(s);
    return err;
}

upk_err upk_store_prune_device_events(upk_store *s, char cursor[UPK_ID_MAX + 1], uint64_t cap,
                                      size_t ndev, size_t batch, size_t *deleted)
{
    if (s == NULL || cursor == NULL || cap == 0 || cap > INT64_MAX || batch == 0)
        return UPK_E_INVALID_ARG;
    size_t n = 0;
    upk_err err = upk__store_begin(s);
    if (err != UPK_OK)
        return err;
    for (size_t d = 0; d < ndev; d++) {
        /* The next device with events, and its newest seq: two lookups in
         * the (device, seq) primary key. */
        sqlite3_stmt *st = NULL;
        char dev[UPK_ID_MAX + 1] = "";
        int64_t top = 0;
        if ((err = upk__store_prep(s,
                                   "SELECT device, (SELECT max(seq) FROM events m WHERE"
                                   " m.device = e.device) FROM events e WHERE device > ?1"
                                   " ORDER BY device LIMIT 1",
                                   &st)) != UPK_OK)
            goto fail;
        bind_text(st, 1, cursor);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            col_text(st, 0, dev, sizeof(dev));
            top = sqlite3_column_int64(st, 1);
        } else if (rc != SQLITE_DONE) {
            err = upk__store_db_err(s, "prune device events");
        }
        upk__store_unprep(s, st);
        st = NULL;
        if (err != UPK_OK)
            goto fail;
        memcpy(cursor, dev, sizeof(dev)); /* "" after the last device */
        if (dev[0] == '\0')
            break;
        if (top <= (int64_t)cap)
            continue;
        if ((err = upk__store_prep(s,
                                   "DELETE FROM events WHERE rowid IN (SELECT rowid FROM events"
                                   " WHERE device=?1 AND seq <= ?2 ORDER BY seq LIMIT ?3)",
                                   &st)) != UPK_OK)
            goto fail;
        bind_text(st, 1, dev);
        sqlite3_bind_int64(st, 2, top - (int64_t)cap);
        sqlite3_bind_int64(st, 3, (sqlite3_int64)batch);
        if (sqlite3_step(st) != SQLITE_DONE)
            err = upk__store_db_err(s, "prune device events");
        else
            n += (size_t)sqlite3_changes(sqlite3_db_handle(st));
        upk__store_unprep(s, st);
        if (err != UPK_OK)
            goto fail;
    }
    if ((err = upk__store_commit(s)) != UPK_OK)
        goto fail;
    if (deleted != NULL)
        *deleted = n;
    return UPK_OK;
fail:
    upk__store_rollback(s);
    return err;
}
