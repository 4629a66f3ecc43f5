/* Unit tests of the controller store (controller/src/store.c) on a real
 * SQLite file in a temporary directory: migrations, registry, event dedup,
 * campaign apply/transition atomicity, rollback restoring previous desired,
 * chunk-fetch authorization, audit and the generic JSON query. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <cmocka.h>
#include <sqlite3.h>

#include "engine.h"
#include "rollback.h"
#include "store.h"
#include "upkeep/key.h"
#include "upkeep/manifest.h"

struct fx {
    char dir[256];
    upk_store *s;
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return -1;
    int r = snprintf(f->dir, sizeof(f->dir), "/tmp/upk-store-test-XXXXXX");
    (void)r;
    if (mkdtemp(f->dir) == NULL || upk_store_open(f->dir, &f->s) != UPK_OK) {
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    upk_store_close(f->s);
    char cmd[512];
    int r = snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    (void)r;
    r = system(cmd);
    free(f);
    return 0;
}

static void add_device(upk_store *s, const char *id, const char *hw, const char *version,
                       bool online)
{
    upk_state_msg m;
    memset(&m, 0, sizeof(m));
    int r = snprintf(m.device, sizeof(m.device), "%s", id);
    r = snprintf(m.hw, sizeof(m.hw), "%s", hw);
    r = snprintf(m.release, sizeof(m.release), "fw");
    r = snprintf(m.version, sizeof(m.version), "%s", version);
    (void)r;
    m.security_version = 1;
    m.status = UPK_STATUS_IDLE;
    assert_int_equal(upk_store_device_state(s, &m, 1000), UPK_OK);
    assert_int_equal(upk_store_device_online(s, id, online, 1000), UPK_OK);
}

static void add_release(upk_store *s, const char *id, const char *version, uint8_t fill)
{
    upk_manifest m;
    memset(&m, 0, sizeof(m));
    int r = snprintf(m.name, sizeof(m.name), "fw");
    r = snprintf(m.version, sizeof(m.version), "%s", version);
    r = snprintf(m.hw[0], sizeof(m.hw[0]), "hw-a");
    r = snprintf(m.module, sizeof(m.module), "file");
    (void)r;
    m.hw_count = 1;
    m.security_version = 2;
    m.type = UPK_RELEASE_FULL;
    m.size = m.target_size = 10;
    memset(m.sha256, fill, sizeof(m.sha256));
    memcpy(m.target_sha256, m.sha256, sizeof(m.sha256));
    m.created = 1000;
    m.expires = 4000000000;
    char *json = NULL;
    size_t len = 0;
    assert_int_equal(upk_manifest_encode(&m, &json, &len), UPK_OK);
    uint8_t sig[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    assert_int_equal(
        upk_store_release_insert(s, id, &m, json, len, sig, sizeof(sig), "00", "alice", 1000),
        UPK_OK);
    assert_int_equal(
        upk_store_release_insert(s, id, &m, json, len, sig, sizeof(sig), "00", "alice", 1000),
        UPK_E_EXISTS);
    free(json);
}

static upk_campaign make_campaign(upk_store *s, const char *id, const char *release,
                                  const char *const *ids, size_t n)
{
    upk_campaign c;
    memset(&c, 0, sizeof(c));
    int r = snprintf(c.id, sizeof(c.id), "%s", id);
    r = snprintf(c.release, sizeof(c.release), "%s", release);
    r = snprintf(c.target, sizeof(c.target), "all");
    r = snprintf(c.created_by, sizeof(c.created_by), "alice");
    (void)r;
    c.state = UPK_CAMP_RUNNING;
    assert_int_equal(upk_engine_parse_stages("50%,100%", &c), UPK_OK);
    c.max_fail_bp = 0;
    c.device_timeout_s = 60;
    c.created_ms = c.updated_ms = 1000;
    uint32_t st[16];
    assert_int_equal(upk_engine_assign_stages(&c, ids, n, st), UPK_OK);
    assert_int_equal(upk_store_campaign_insert(s, &c, ids, st, n), UPK_OK);
    assert_int_equal(upk_store_campaign_insert(s, &c, ids, st, n), UPK_E_EXISTS);
    return c;
}

static void open_migrates_and_reopens(void **state)
{
    struct fx *f = *state;
    assert_int_equal(upk_store_schema_version(f->s), UPK_STORE_SCHEMA_VERSION);
    upk_store_close(f->s);
    assert_int_equal(upk_store_open(f->dir, &f->s), UPK_OK);
    assert_int_equal(upk_store_schema_version(f->s), UPK_STORE_SCHEMA_VERSION);
}

static void newer_schema_is_refused(void **state)
{
    struct fx *f = *state;
    assert_int_equal(sqlite3_exec(upk_store_db(f->s),
                                  "UPDATE meta SET value='99' WHERE key='schema_version'", NULL,
                                  NULL, NULL),
                     SQLITE_OK);
    upk_store_close(f->s);
    f->s = NULL;
    upk_store *s2 = NULL;
    assert_int_equal(upk_store_open(f->dir, &s2), UPK_E_STATE_CORRUPT);
    assert_null(s2);
    /* Restore for teardown. */
    sqlite3 *db = NULL;
    char path[512];
    int r = snprintf(path, sizeof(path), "%s/upkeep.db", f->dir);
    (void)r;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    char sql[96];
    r = snprintf(sql, sizeof(sql), "UPDATE meta SET value='%d' WHERE key='schema_version'",
                 UPK_STORE_SCHEMA_VERSION);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(upk_store_open(f->dir, &f->s), UPK_OK);
}

static void campaign_gate_round_trips(void **state)
{
    struct fx *f = *state;
    add_release(f->s, "fw-2.0", "2.0", 0xaa);
    const char *ids[] = {"d1"};
    add_device(f->s, "d1", "hw-a", "1.0", true);
    upk_campaign c;
    memset(&c, 0, sizeof(c));
    int r = snprintf(c.id, sizeof(c.id), "cg");
    r = snprintf(c.release, sizeof(c.release), "fw-2.0");
    r = snprintf(c.target, sizeof(c.target), "all");
    r = snprintf(c.created_by, sizeof(c.created_by), "alice");
    (void)r;
    assert_int_equal(upk_engine_parse_stages("100%", &c), UPK_OK);
    upk_gate_cfg_init(&c.gate);
    c.gate.bake_s = 600;
    c.gate.max_unhealthy_bp = 250;
    c.gate.restart_limit = 2;
    c.gate.compare_baseline = true;
    c.gate.baseline_factor = 1.25;
    c.gate.min_samples = 4;
    uint32_t st[1] = {0};
    assert_int_equal(upk_store_campaign_insert(f->s, &c, ids, st, 1), UPK_OK);
    upk_campaign g;
    assert_int_equal(upk_store_campaign_get(f->s, "cg", &g), UPK_OK);
    assert_int_equal(g.gate.bake_s, 600);
    assert_int_equal(g.gate.max_unhealthy_bp, 250);
    assert_int_equal(g.gate.restart_limit, 2);
    assert_true(g.gate.compare_baseline);
    assert_true(g.gate.baseline_factor == 1.25);
    assert_int_equal(g.gate.min_samples, 4);
    /* The engine's row update keeps them. */
    upk_step_result res;
    memset(&res, 0, sizeof(res));
    res.next = g;
    res.next.gate.bake_s = 60;
    upk_cdev *devs = NULL;
    size_t n = 0;
    assert_int_equal(upk_store_campaign_devices(f->s, "cg", &devs, &n), UPK_OK);
    assert_int_equal(upk_store_campaign_apply(f->s, &res, devs, NULL, 2000, NULL, NULL), UPK_OK);
    free(devs);
    assert_int_equal(upk_store_campaign_get(f->s, "cg", &g), UPK_OK);
    assert_int_equal(g.gate.bake_s, 60);
    assert_true(g.gate.baseline_factor == 1.25);
}

static void health(upk_store *s, const char *dev, const char *camp, uint32_t restarts, int check_ok,
                   const char *metric, double v, int64_t now)
{
    upk_event_msg e;
    memset(&e, 0, sizeof(e));
    int r = snprintf(e.campaign, sizeof(e.campaign), "%s", camp);
    (void)r;
    e.health.present = true;
    e.health.restarts = restarts;
    e.health.boots = restarts;
    e.health.check_ok = check_ok;
    if (metric != NULL) {
        e.health.metric_count = 1;
        r = snprintf(e.health.metric_name[0], sizeof(e.health.metric_name[0]), "%s", metric);
        e.health.metric_value[0] = v;
    }
    assert_int_equal(upk_store_health_record(s, dev, &e, now), UPK_OK);
}

static void health_reports_feed_the_gate(void **state)
{
    struct fx *f = *state;
    add_device(f->s, "d1", "rev-b", "1.0", true);
    add_device(f->s, "d2", "rev-b", "1.0", true);
    /* Campaign c holds d1 only (health is kept only under campaigns the
     * device is in). */
    add_release(f->s, "fw-2.0", "2.0", 0xaa);
    upk_campaign c;
    memset(&c, 0, sizeof(c));
    int r = snprintf(c.id, sizeof(c.id), "c");
    r = snprintf(c.release, sizeof(c.release), "fw-2.0");
    r = snprintf(c.target, sizeof(c.target), "all");
    (void)r;
    assert_int_equal(upk_engine_parse_stages("100%", &c), UPK_OK);
    upk_gate_cfg_init(&c.gate);
    const char *ids[] = {"d1"};
    uint32_t st[1] = {0};
    assert_int_equal(upk_store_campaign_insert(f->s, &c, ids, st, 1), UPK_OK);
    /* d1 updated in campaign c: restarts 2 then 5 (max kept), cpu 0.8 and 1.0. */
    health(f->s, "d1", "c", 2, -1, "cpu", 0.8, 1000);
    health(f->s, "d1", "c", 5, 1, "cpu", 1.0, 2000);
    health(f->s, "d1", "c", 1, 0, NULL, 0, 3000);
    /* d2 not updated: older and newer baseline metrics outside c (under a
     * campaign d2 is not in: kept only as its latest value). */
    health(f->s, "d2", "", 0, -1, "cpu", 0.9, 1000);
    health(f->s, "d2", "old", 0, -1, "cpu", 0.3, 5000);
    upk_event_msg none;
    memset(&none, 0, sizeof(none));
    assert_int_equal(upk_store_health_record(f->s, "d1", &none, 1), UPK_OK); /* no report */
    none.health.present = true;
    none.health.metric_count = 9;
    assert_int_equal(upk_store_health_record(f->s, "d1", &none, 1), UPK_E_INVALID_ARG);
    assert_int_equal(upk_store_health_record(NULL, "d1", &none, 1), UPK_E_INVALID_ARG);

    upk_cdev devs[2];
    memset(devs, 0, sizeof(devs));
    r = snprintf(devs[0].device, sizeof(devs[0].device), "d1");
    r = snprintf(devs[1].device, sizeof(devs[1].device), "d2");
    (void)r;
    devs[0].state = UPK_CDEV_SUCCEEDED;
    devs[0].online = true;
    devs[1].state = UPK_CDEV_PENDING;
    upk_gate_dev *g = NULL;
    size_t gn = 0;
    assert_int_equal(upk_store_gate_devices(f->s, "c", devs, 2, &g, &gn), UPK_OK);
    assert_int_equal(gn, 2);
    assert_string_equal(g[0].hw, "rev-b");
    assert_true(g[0].updated);
    assert_int_equal(g[0].restarts, 5);
    assert_true(g[0].check_failed);
    assert_int_equal(g[0].metric_count, 1);
    assert_string_equal(g[0].metric_name[0], "cpu");
    assert_true(g[0].metric_value[0] > 0.89 && g[0].metric_value[0] < 0.91);
    assert_false(g[1].updated);
    assert_int_equal(g[1].restarts, 0);
    assert_int_equal(g[1].metric_count, 1);
    assert_true(g[1].metric_value[0] > 0.29 && g[1].metric_value[0] < 0.31);
    /* The gate judges them: 0.9 vs 0.3 on rev-b. */
    upk_gate_cfg cfg;
    upk_gate_cfg_init(&cfg);
    cfg.bake_s = 60;
    cfg.restart_limit = 10;
    cfg.compare_baseline = true;
    g[0].check_failed = false;
    upk_gate_result res;
    assert_int_equal(upk_gate_eval(&cfg, g, gn, &res), UPK_OK);
    assert_true(res.halt);
    assert_non_null(strstr(res.reason, "metric cpu on hw rev-b"));
    free(g);
    assert_int_equal(upk_store_gate_devices(f->s, "c", NULL, 2, &g, &gn), UPK_E_INVALID_ARG);
}

static void open_fails_on_unwritable_dir(void **state)
{
    (void)state;
    upk_store *s = NULL;
    assert_int_not_equal(upk_store_open("/proc/upk-no-such/dir", &s), UPK_OK);
    assert_null(s);
    assert_int_equal(upk_store_open(NULL, &s), UPK_E_INVALID_ARG);
}

static void registry_tracks_state_and_online(void **state)
{
    struct fx *f = *state;
    add_device(f->s, "d1", "hw-a", "1.0", true);
    add_device(f->s, "d1", "hw-b", "1.1", false);
    cJSON *rows = NULL;
    assert_int_equal(
        upk_store_query_json(f->s, "SELECT id, hw, version, online FROM devices", NULL, 0, &rows),
        UPK_OK);
    assert_int_equal(cJSON_GetArraySize(rows), 1);
    cJSON *r0 = cJSON_GetArrayItem(rows, 0);
    assert_string_equal(cJSON_GetObjectItem(r0, "hw")->valuestring, "hw-b");
    assert_string_equal(cJSON_GetObjectItem(r0, "version")->valuestring, "1.1");
    assert_int_equal(cJSON_GetObjectItem(r0, "online")->valueint, 0);
    cJSON_Delete(rows);
    assert_int_equal(upk_store_device_group(f->s, "d1", "lab"), UPK_OK);
    assert_int_equal(upk_store_device_group(f->s, "nobody", "lab"), UPK_E_NOT_FOUND);
    assert_int_not_equal(upk_store_query_json(f->s, "SELECT nonsense FROM", NULL, 0, &rows),
                         UPK_OK);
}

static void events_are_deduplicated_and_move_campaign_rows(void **state)
{
    struct fx *f = *state;
    add_release(f->s, "fw-2.0", "2.0", 0xaa);
    const char *ids[] = {"d1", "d2"};
    add_device(f->s, "d1", "hw-a", "1.0", true);
    add_device(f->s, "d2", "hw-a", "1.0", true);
    upk_campaign c = make_campaign(f->s, "c1", "fw-2.0", ids, 2);
    upk_cdev *devs = NULL;
    size_t n = 0;
    assert_int_equal(upk_store_campaign_devices(f->s, "c1", &devs, &n), UPK_OK);
    assert_int_equal(n, 2);
    upk_action acts[4];
    upk_step_result res;
    c.stage_bp[0] = 10000; /* everyone in the first stage for this test */
    c.stage_count = 1;
    for (size_t i = 0; i < n; i++)
        devs[i].stage = 0;
    assert_int_equal(upk_engine_step(&c, devs, n, 2000, acts, 4, &res), UPK_OK);
    size_t starts = 0;
    for (size_t i = 0; i < res.action_count; i++)
        starts += acts[i].kind == UPK_ACT_START;
    assert_true(starts >= 1);
    assert_int_equal(upk_store_campaign_apply(f->s, &res, devs, acts, 2000, NULL, NULL), UPK_OK);
    /* Applying the same step twice assigns no device twice. */
    assert_int_equal(upk_store_campaign_apply(f->s, &res, devs, acts, 2001, NULL, NULL), UPK_OK);
    cJSON *rows = NULL;
    assert_int_equal(upk_store_query_json(f->s,
                                          "SELECT device, state, assigned_ms FROM campaign_devices"
                                          " WHERE state='assigned' ORDER BY device",
                                          NULL, 0, &rows),
                     UPK_OK);
    assert_int_equal((size_t)cJSON_GetArraySize(rows), starts);
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(rows, 0), "assigned_ms")->valueint,
                     2000);
    cJSON_Delete(rows);
    char dev[UPK_ID_MAX + 1];
    memcpy(dev, devs[acts[0].index].device, sizeof(dev));
    char rel[UPK_ID_MAX + 1], camp[UPK_ID_MAX + 1];
    assert_int_equal(upk_store_device_desired(f->s, dev, rel, camp), UPK_OK);
    assert_string_equal(rel, "fw-2.0");
    assert_string_equal(camp, "c1");
    /* Chunk fetch allowed only for the desired artifact. */
    bool ok = false;
    char sha[65];
    memset(sha, 'a', 64);
    sha[64] = '\0';
    assert_int_equal(upk_store_may_fetch(f->s, dev, sha, &ok), UPK_OK);
    assert_true(ok);
    sha[0] = 'b';
    assert_int_equal(upk_store_may_fetch(f->s, dev, sha, &ok), UPK_OK);
    assert_false(ok);
    sha[0] = 'a';
    assert_int_equal(upk_store_may_fetch(f->s, "stranger", sha, &ok), UPK_OK);
    assert_false(ok);

    upk_event_msg e;
    memset(&e, 0, sizeof(e));
    e.seq = 1;
    e.ts = 2;
    int r = snprintf(e.campaign, sizeof(e.campaign), "c1");
    r = snprintf(e.release, sizeof(e.release), "fw");
    r = snprintf(e.version, sizeof(e.version), "2.0");
    (void)r;
    e.step = UPK_STATUS_DOWNLOADING;
    bool dup = true;
    assert_int_equal(upk_store_event_apply(f->s, dev, &e, 3000, &dup), UPK_OK);
    assert_false(dup);
    e.seq = 2;
    e.step = UPK_STATUS_COMMITTED;
    assert_int_equal(upk_store_event_apply(f->s, dev, &e, 3001, &dup), UPK_OK);
    assert_false(dup);
    /* A replay of seq 2 claiming failure changes nothing. */
    e.step = UPK_STATUS_FAILED;
    assert_int_equal(upk_store_event_apply(f->s, dev, &e, 3002, &dup), UPK_OK);
    assert_true(dup);
    /* An event about another version (the rollback target) changes nothing. */
    e.seq = 3;
    r = snprintf(e.version, sizeof(e.version), "1.0");
    assert_int_equal(upk_store_event_apply(f->s, dev, &e, 3003, &dup), UPK_OK);
    free(devs);
    assert_int_equal(upk_store_campaign_devices(f->s, "c1", &devs, &n), UPK_OK);
    for (size_t i = 0; i < n; i++)
        if (strcmp(devs[i].device, dev) == 0)
            assert_int_equal(devs[i].state, UPK_CDEV_SUCCEEDED);
    free(devs);
}

static int changed_count;
static void on_changed(const char *device, void *ud)
{
    (void)device;
    (void)ud;
    changed_count++;
}

static void rollback_restores_previous_desired(void **state)
{
    struct fx *f = *state;
    add_release(f->s, "fw-1.0", "1.0", 0x11);
    add_release(f->s, "fw-2.0", "2.0", 0x22);
    const char *ids[] = {"d1", "d2", "d3", "d4"};
    for (size_t i = 0; i < 4; i++)
        add_device(f->s, ids[i], "hw-a", "1.0", true);
    /* d1..d4 first get fw-1.0 from campaign c0 (all at once). */
    upk_campaign c0 = make_campaign(f->s, "c0", "fw-1.0", ids, 4);
    upk_cdev *devs = NULL;
    size_t n = 0;
    upk_action acts[16];
    upk_step_result res;
    c0.stage = 1; /* start everyone */
    assert_int_equal(upk_store_campaign_devices(f->s, "c0", &devs, &n), UPK_OK);
    assert_int_equal(upk_engine_step(&c0, devs, n, 2000, acts, 16, &res), UPK_OK);
    assert_int_equal(res.action_count, 4);
    assert_int_equal(upk_store_campaign_apply(f->s, &res, devs, acts, 2000, NULL, NULL), UPK_OK);
    free(devs);
    upk_campaign c1 = make_campaign(f->s, "c1", "fw-2.0", ids, 4);
    assert_int_equal(upk_store_campaign_devices(f->s, "c1", &devs, &n), UPK_OK);
    assert_int_equal(upk_engine_step(&c1, devs, n, 3000, acts, 16, &res), UPK_OK);
    assert_int_equal(res.action_count, 2); /* stage 1 = 50% */
    changed_count = 0;
    assert_int_equal(upk_store_campaign_apply(f->s, &res, devs, acts, 3000, on_changed, NULL),
                     UPK_OK);
    assert_int_equal(changed_count, 2);
    char started[UPK_ID_MAX + 1];
    memcpy(started, devs[acts[0].index].device, sizeof(started));
    free(devs);
    /* Paused campaigns cannot be paused again; resume works. */
    assert_int_equal(
        upk_store_campaign_transition(f->s, "c1", UPK_CAMP_PAUSED, "op", 3100, NULL, NULL), UPK_OK);
    assert_int_equal(
        upk_store_campaign_transition(f->s, "c1", UPK_CAMP_PAUSED, "op", 3100, NULL, NULL),
        UPK_E_STATE_INVALID);
    assert_int_equal(
        upk_store_campaign_transition(f->s, "nope", UPK_CAMP_PAUSED, "op", 3100, NULL, NULL),
        UPK_E_NOT_FOUND);
    changed_count = 0;
    assert_int_equal(upk_store_campaign_transition(f->s, "c1", UPK_CAMP_ROLLED_BACK, "bad", 3200,
                                                   on_changed, NULL),
                     UPK_OK);
    assert_int_equal(changed_count, 2);
    char rel[UPK_ID_MAX + 1], camp[UPK_ID_MAX + 1];
    assert_int_equal(upk_store_device_desired(f->s, started, rel, camp), UPK_OK);
    assert_string_equal(rel, "fw-1.0");
    upk_campaign got;
    assert_int_equal(upk_store_campaign_get(f->s, "c1", &got), UPK_OK);
    /* Rolled back once the devices report it: here they still run 1.0. */
    assert_int_equal(got.state, UPK_CAMP_ROLLING_BACK);
    assert_int_equal(upk_rollback_tick(f->s, 3250, NULL), UPK_OK);
    assert_int_equal(upk_store_campaign_get(f->s, "c1", &got), UPK_OK);
    assert_int_equal(got.state, UPK_CAMP_ROLLED_BACK);
    assert_string_equal(got.reason, "bad");
    assert_int_equal(
        upk_store_campaign_transition(f->s, "c1", UPK_CAMP_RUNNING, "", 3300, NULL, NULL),
        UPK_E_STATE_INVALID);
    cJSON *rows = NULL;
    assert_int_equal(upk_store_query_json(f->s,
                                          "SELECT count(*) AS n FROM campaign_devices WHERE"
                                          " campaign='c1' AND state='skipped'",
                                          NULL, 0, &rows),
                     UPK_OK);
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(rows, 0), "n")->valueint, 2);
    cJSON_Delete(rows);
    /* Unacked desireds are listed for re-publishing; acking clears them. */
    changed_count = 0;
    assert_int_equal(upk_store_desired_unacked(f->s, on_changed, NULL), UPK_OK);
    assert_int_equal(changed_count, 4);
    assert_int_equal(upk_store_desired_acked(f->s, started, "fw-1.0", "c1"), UPK_OK);
    changed_count = 0;
    assert_int_equal(upk_store_desired_unacked(f->s, on_changed, NULL), UPK_OK);
    assert_int_equal(changed_count, 3);
}

static void campaign_survives_reopen(void **state)
{
    struct fx *f = *state;
    add_release(f->s, "fw-2.0", "2.0", 0x22);
    const char *ids[] = {"a", "b", "c"};
    upk_campaign c = make_campaign(f->s, "c9", "fw-2.0", ids, 3);
    upk_store_close(f->s);
    assert_int_equal(upk_store_open(f->dir, &f->s), UPK_OK);
    upk_campaign got;
    assert_int_equal(upk_store_campaign_get(f->s, "c9", &got), UPK_OK);
    assert_memory_equal(&got, &c, sizeof(c));
    char ids_out[4][UPK_ID_MAX + 1];
    size_t n = 0;
    assert_int_equal(upk_store_campaigns_running(f->s, ids_out, 4, &n), UPK_OK);
    assert_int_equal(n, 1);
    assert_string_equal(ids_out[0], "c9");
    assert_int_equal(upk_store_campaign_get(f->s, "none", &got), UPK_E_NOT_FOUND);
}

static void state_outcome_recovers_lost_events(void **state)
{
    struct fx *f = *state;
    add_release(f->s, "fw-2.0", "2.0", 0x22);
    const char *ids[] = {"a", "b"};
    add_device(f->s, "a", "hw-a", "1.0", true);
    add_device(f->s, "b", "hw-a", "1.0", true);
    upk_campaign c = make_campaign(f->s, "c1", "fw-2.0", ids, 2);
    c.stage = 1;
    upk_cdev *devs = NULL;
    size_t n = 0;
    upk_action acts[4];
    upk_step_result res;
    assert_int_equal(upk_store_campaign_devices(f->s, "c1", &devs, &n), UPK_OK);
    assert_int_equal(upk_engine_step(&c, devs, n, 2000, acts, 4, &res), UPK_OK);
    assert_int_equal(upk_store_campaign_apply(f->s, &res, devs, acts, 2000, NULL, NULL), UPK_OK);
    free(devs);
    upk_state_msg m;
    memset(&m, 0, sizeof(m));
    int r = snprintf(m.device, sizeof(m.device), "a");
    r = snprintf(m.campaign, sizeof(m.campaign), "c1");
    r = snprintf(m.release, sizeof(m.release), "fw");
    r = snprintf(m.version, sizeof(m.version), "1.0");
    (void)r;
    /* Committed but still the old version: not this campaign's release. */
    m.status = UPK_STATUS_COMMITTED;
    assert_int_equal(upk_store_state_outcome(f->s, &m, 3000), UPK_OK);
    r = snprintf(m.version, sizeof(m.version), "2.0");
    m.status = UPK_STATUS_DOWNLOADING; /* not final: ignored */
    assert_int_equal(upk_store_state_outcome(f->s, &m, 3000), UPK_OK);
    m.status = UPK_STATUS_COMMITTED;
    assert_int_equal(upk_store_state_outcome(f->s, &m, 3001), UPK_OK);
    /* A failure in a state names the old installed release, never the
     * campaign's: it changes nothing (failures come from acked events). */
    m.device[0] = 'b';
    r = snprintf(m.version, sizeof(m.version), "1.0");
    m.status = UPK_STATUS_FAILED;
    assert_int_equal(upk_store_state_outcome(f->s, &m, 3002), UPK_OK);
    /* Nor does a failure claimed while running the campaign's release. */
    r = snprintf(m.version, sizeof(m.version), "2.0");
    m.status = UPK_STATUS_REJECTED;
    assert_int_equal(upk_store_state_outcome(f->s, &m, 3003), UPK_OK);
    assert_int_equal(upk_store_campaign_devices(f->s, "c1", &devs, &n), UPK_OK);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(devs[i].state,
                         strcmp(devs[i].device, "a") == 0 ? UPK_CDEV_SUCCEEDED : UPK_CDEV_ASSIGNED);
    free(devs);
}

/* Starts campaign id of release over ids (one stage, everyone assigned). */
static void start_all(upk_store *s, const char *id, const char *release, const char *const *ids,
                      size_t n)
{
    upk_campaign c = make_campaign(s, id, release, ids, n);
    c.stage = 1;
    upk_cdev *devs = NULL;
    size_t dn = 0;
    upk_action acts[16];
    upk_step_result res;
    assert_int_equal(upk_store_campaign_devices(s, id, &devs, &dn), UPK_OK);
    assert_int_equal(upk_engine_step(&c, devs, dn, 2000, acts, 16, &res), UPK_OK);
    assert_int_equal(res.action_count, n);
    assert_int_equal(upk_store_campaign_apply(s, &res, devs, acts, 2000, NULL, NULL), UPK_OK);
    free(devs);
}

static const char *cdev_state(upk_store *s, const char *campaign, const char *device)
{
    upk_cdev *devs = NULL;
    size_t n = 0;
    static char out[32];
    out[0] = '\0';
    assert_int_equal(upk_store_campaign_devices(s, campaign, &devs, &n), UPK_OK);
    for (size_t i = 0; i < n; i++)
        if (strcmp(devs[i].device, device) == 0) {
            int r = snprintf(out, sizeof(out), "%s", upk_cdev_state_str(devs[i].state));
            (void)r;
        }
    free(devs);
    return out;
}

static upk_event_msg event(uint64_t seq, const char *campaign, const char *release,
                           const char *version, upk_status step, upk_err error)
{
    upk_event_msg e;
    memset(&e, 0, sizeof(e));
    e.seq = seq;
    e.ts = 5;
    int r = snprintf(e.campaign, sizeof(e.campaign), "%s", campaign);
    r = snprintf(e.release, sizeof(e.release), "%s", release);
    r = snprintf(e.version, sizeof(e.version), "%s", version);
    (void)r;
    e.step = step;
    e.error = error;
    return e;
}

/* Attack 2 (issue 23): a forged desired naming a campaign made the device
 * report `rejected SIG_INVALID` without a release, which matched any
 * release and turned a success into a failure. Only a report naming the
 * campaign and its release's name and version moves the row. */
static void events_move_rows_only_when_naming_the_campaign_release(void **state)
{
    struct fx *f = *state;
    add_release(f->s, "fw-2.0", "2.0", 0x22);
    const char *ids[] = {"d1"};
    add_device(f->s, "d1", "hw-a", "1.0", true);
    start_all(f->s, "c1", "fw-2.0", ids, 1);
    bool dup = false;
    upk_event_msg e = event(1, "c1", "fw", "2.0", UPK_STATUS_COMMITTED, UPK_OK);
    assert_int_equal(upk_store_event_apply(f->s, "d1", &e, 3000, &dup), UPK_OK);
    assert_string_equal(cdev_state(f->s, "c1", "d1"), "succeeded");
    /* No release, no version: the forged-desired rejection. */
    e = event(2, "c1", "", "", UPK_STATUS_REJECTED, UPK_E_SIG_INVALID);
    assert_int_equal(upk_store_event_apply(f->s, "d1", &e, 3001, &dup), UPK_OK);
    assert_false(dup); /* stored, so `devices show` lists it */
    /* A version without a release name, a release name of another series
     * at the same version, and the right name at another version. */
    e = event(3, "c1", "", "2.0", UPK_STATUS_FAILED, UPK_E_HASH_MISMATCH);
    assert_int_equal(upk_store_event_apply(f->s, "d1", &e, 3002, &dup), UPK_OK);
    e = event(4, "c1", "other", "2.0", UPK_STATUS_ROLLED_BACK, UPK_E_HEALTH_FAILED);
    assert_int_equal(upk_store_event_apply(f->s, "d1", &e, 3003, &dup), UPK_OK);
    e = event(5, "c1", "fw", "1.0", UPK_STATUS_REJECTED, UPK_E_ROLLBACK_REJECTED);
    assert_int_equal(upk_store_event_apply(f->s, "d1", &e, 3004, &dup), UPK_OK);
    /* Another campaign's id with the right release: not this row either. */
    e = event(6, "c2", "fw", "2.0", UPK_STATUS_FAILED, UPK_E_HASH_MISMATCH);
    assert_int_equal(upk_store_event_apply(f->s, "d1", &e, 3005, &dup), UPK_OK);
    assert_string_equal(cdev_state(f->s, "c1", "d1"), "succeeded");
    cJSON *rows = NULL;
    assert_int_equal(upk_store_query_json(f->s,
                                          "SELECT done_ms, error FROM campaign_devices WHERE"
                                          " campaign='c1' AND device='d1'",
                                          NULL, 0, &rows),
                     UPK_OK);
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(rows, 0), "done_ms")->valuedouble,
                     3000);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(rows, 0), "error")->valuestring, "");
    cJSON_Delete(rows);
    /* The real failure of the campaign's release (rolled back in its bake)
     * still counts. */
    e = event(7, "c1", "fw", "2.0", UPK_STATUS_ROLLED_BACK, UPK_E_HEALTH_FAILED);
    assert_int_equal(upk_store_event_apply(f->s, "d1", &e, 3006, &dup), UPK_OK);
    assert_string_equal(cdev_state(f->s, "c1", "d1"), "failed");
}

static void ctr_strictly_increases_and_follows_the_clock(void **state)
{
    struct fx *f = *state;
    add_device(f->s, "d1", "hw-a", "1.0", true);
    uint64_t a = 0, b = 0, c = 0;
    assert_int_equal(upk_store_ctr_next(f->s, "d1", "fw-2.0/c1", true, 5000, &a), UPK_OK);
    assert_int_equal(a, 5000);
    /* The clock went back (or stood still): still one more. */
    assert_int_equal(upk_store_ctr_next(f->s, "d1", "fw-2.0/c1", true, 4000, &b), UPK_OK);
    assert_int_equal(b, 5001);
    /* Not fresh, same assignment: the same counter (byte-identical desired). */
    assert_int_equal(upk_store_ctr_next(f->s, "d1", "fw-2.0/c1", false, 9000, &c), UPK_OK);
    assert_int_equal(c, 5001);
    /* Not fresh but another assignment: a new one. */
    assert_int_equal(upk_store_ctr_next(f->s, "d1", "fw-3.0/c2", false, 9000, &c), UPK_OK);
    assert_int_equal(c, 9000);
    /* Kept across a reopen. */
    upk_store_close(f->s);
    assert_int_equal(upk_store_open(f->dir, &f->s), UPK_OK);
    assert_int_equal(upk_store_ctr_next(f->s, "d1", "fw-3.0/c2", false, 1, &c), UPK_OK);
    assert_int_equal(c, 9000);
    assert_int_equal(upk_store_ctr_next(f->s, "d1", "fw-3.0/c2", true, 1, &c), UPK_OK);
    assert_int_equal(c, 9001);
    uint64_t untouched = 77;
    assert_int_equal(upk_store_ctr_next(f->s, "nobody", "x", true, 1, &untouched), UPK_E_NOT_FOUND);
    assert_int_equal(untouched, 77);
}

static void authed_flag_is_remembered(void **state)
{
    struct fx *f = *state;
    bool authed = true;
    assert_int_equal(upk_store_device_authed(f->s, "d1", &authed), UPK_OK);
    assert_false(authed); /* unknown device */
    add_device(f->s, "d1", "hw-a", "1.0", true);
    assert_int_equal(upk_store_device_authed(f->s, "d1", &authed), UPK_OK);
    assert_false(authed);
    assert_int_equal(upk_store_device_set_authed(f->s, "d1"), UPK_OK);
    assert_int_equal(upk_store_device_set_authed(f->s, "d1"), UPK_OK);
    /* A later state does not reset it. */
    add_device(f->s, "d1", "hw-a", "1.1", false);
    upk_store_close(f->s);
    assert_int_equal(upk_store_open(f->dir, &f->s), UPK_OK);
    assert_int_equal(upk_store_device_authed(f->s, "d1", &authed), UPK_OK);
    assert_true(authed);
    /* A device first seen through a tagged message gets a row. */
    assert_int_equal(upk_store_device_set_authed(f->s, "d9"), UPK_OK);
    assert_int_equal(upk_store_device_authed(f->s, "d9", &authed), UPK_OK);
    assert_true(authed);
}

/* A state saying "stale" (no authenticated desired before its fresh_until)
 * is kept for `upkeep devices`, and cleared by the next state without it. */
static void stale_state_is_recorded(void **state)
{
    struct fx *f = *state;
    upk_state_msg m;
    memset(&m, 0, sizeof(m));
    int r = snprintf(m.device, sizeof(m.device), "d1");
    r = snprintf(m.hw, sizeof(m.hw), "hw-a");
    (void)r;
    m.stale = true;
    assert_int_equal(upk_store_device_state(f->s, &m, 1000), UPK_OK);
    cJSON *rows = NULL;
    assert_int_equal(upk_store_query_json(f->s, "SELECT stale FROM devices", NULL, 0, &rows),
                     UPK_OK);
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(rows, 0), "stale")->valueint, 1);
    cJSON_Delete(rows);
    m.stale = false;
    assert_int_equal(upk_store_device_state(f->s, &m, 1001), UPK_OK);
    assert_int_equal(upk_store_query_json(f->s, "SELECT stale FROM devices", NULL, 0, &rows),
                     UPK_OK);
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(rows, 0), "stale")->valueint, 0);
    cJSON_Delete(rows);
}

static void report_state(upk_store *s, const char *dev, const char *campaign, const char *version,
                         upk_status status)
{
    upk_state_msg m;
    memset(&m, 0, sizeof(m));
    int r = snprintf(m.device, sizeof(m.device), "%s", dev);
    r = snprintf(m.hw, sizeof(m.hw), "hw-a");
    r = snprintf(m.release, sizeof(m.release), "fw");
    r = snprintf(m.version, sizeof(m.version), "%s", version);
    r = snprintf(m.campaign, sizeof(m.campaign), "%s", campaign);
    (void)r;
    m.security_version = 2;
    m.status = status;
    m.ts = 10;
    assert_int_equal(upk_store_device_state(s, &m, 4000), UPK_OK);
}

static int drift_count(upk_store *s)
{
    cJSON *rows = NULL;
    assert_int_equal(
        upk_store_query_json(s, "SELECT count(*) AS n FROM devices WHERE " UPK_STORE_DRIFT_SQL,
                             NULL, 0, &rows),
        UPK_OK);
    int n = cJSON_GetObjectItem(cJSON_GetArrayItem(rows, 0), "n")->valueint;
    cJSON_Delete(rows);
    return n;
}

/* Attack 4 (issue 23): a device that committed fw 2.0 and then installed a
 * replayed fw 1.0 stayed `succeeded` with nothing flagged. Drift flags a
 * device reporting another release than its desired while not updating. */
static void drift_flags_a_device_running_another_release(void **state)
{
    struct fx *f = *state;
    add_release(f->s, "fw-2.0", "2.0", 0x22);
    const char *ids[] = {"d1", "d2"};
    add_device(f->s, "d1", "hw-a", "1.0", true);
    add_device(f->s, "d2", "hw-a", "1.0", true);
    add_device(f->s, "d3", "hw-a", "1.0", true); /* no desired: never drifts */
    assert_int_equal(drift_count(f->s), 0);
    start_all(f->s, "c1", "fw-2.0", ids, 2);
    /* Assigned but not started: updating, not drift. */
    assert_int_equal(drift_count(f->s), 0);
    report_state(f->s, "d1", "c1", "1.0", UPK_STATUS_DOWNLOADING);
    assert_int_equal(drift_count(f->s), 0);
    bool dup = false;
    upk_event_msg e = event(1, "c1", "fw", "2.0", UPK_STATUS_COMMITTED, UPK_OK);
    assert_int_equal(upk_store_event_apply(f->s, "d1", &e, 3000, &dup), UPK_OK);
    assert_int_equal(upk_store_event_apply(f->s, "d2", &e, 3000, &dup), UPK_OK);
    report_state(f->s, "d1", "c1", "2.0", UPK_STATUS_COMMITTED);
    report_state(f->s, "d2", "c1", "2.0", UPK_STATUS_COMMITTED);
    assert_int_equal(drift_count(f->s), 0);
    size_t n = 99;
    assert_int_equal(upk_store_campaign_drift(f->s, "c1", &n), UPK_OK);
    assert_int_equal(n, 0);
    /* d2 now runs 1.0 again under the campaign's id (a replayed desired). */
    report_state(f->s, "d2", "c1", "1.0", UPK_STATUS_COMMITTED);
    assert_int_equal(drift_count(f->s), 1);
    assert_int_equal(upk_store_campaign_drift(f->s, "c1", &n), UPK_OK);
    assert_int_equal(n, 1);
    assert_int_equal(upk_store_campaign_drift(f->s, "c-other", &n), UPK_OK);
    assert_int_equal(n, 0);
    /* The campaign row is not moved by that state, but drift shows it. */
    assert_string_equal(cdev_state(f->s, "c1", "d2"), "succeeded");
    /* While it updates again it is not drift. */
    report_state(f->s, "d2", "c1", "1.0", UPK_STATUS_VERIFYING);
    assert_int_equal(drift_count(f->s), 0);
}

static void desired_all_lists_every_device_ever_given_one(void **state)
{
    struct fx *f = *state;
    add_release(f->s, "fw-2.0", "2.0", 0x22);
    const char *ids[] = {"d1"};
    add_device(f->s, "d1", "hw-a", "1.0", true);
    add_device(f->s, "d2", "hw-a", "1.0", true);
    add_device(f->s, "d3", "hw-a", "1.0", true);
    start_all(f->s, "c1", "fw-2.0", ids, 1);
    uint64_t ctr = 0;
    /* d2 got a clear once (no release, but a counter). */
    assert_int_equal(upk_store_ctr_next(f->s, "d2", "", true, 100, &ctr), UPK_OK);
    changed_count = 0;
    assert_int_equal(upk_store_desired_all(f->s, on_changed, NULL), UPK_OK);
    assert_int_equal(changed_count, 2);
    /* Acknowledged desired are listed too (unlike desired_unacked). */
    assert_int_equal(upk_store_desired_acked(f->s, "d1", "fw-2.0", "c1"), UPK_OK);
    changed_count = 0;
    assert_int_equal(upk_store_desired_all(f->s, on_changed, NULL), UPK_OK);
    assert_int_equal(changed_count, 2);
}

static void release_round_trips(void **state)
{
    struct fx *f = *state;
    add_release(f->s, "fw-3.0", "3.0", 0x33);
    upk_release_row r;
    memset(&r, 0, sizeof(r));
    assert_int_equal(upk_store_release_get(f->s, "fw-3.0", &r), UPK_OK);
    assert_string_equal(r.m.version, "3.0");
    assert_int_equal(r.sig_len, 8);
    upk_release_row_cleanup(&r);
    assert_int_equal(upk_store_release_get(f->s, "fw-9", &r), UPK_E_NOT_FOUND);
    char path[512];
    assert_int_equal(upk_store_blob_path(f->s, "zz", path, sizeof(path)), UPK_E_INVALID_ARG);
}

static void audit_is_recorded(void **state)
{
    struct fx *f = *state;
    assert_int_equal(upk_store_audit(f->s, 5, "operator:alice", "campaign.pause", "{}", "OK"),
                     UPK_OK);
    cJSON *rows = NULL;
    const char *b[] = {"operator:alice"};
    assert_int_equal(
        upk_store_query_json(f->s, "SELECT cmd, result FROM audit WHERE sender=?", b, 1, &rows),
        UPK_OK);
    assert_int_equal(cJSON_GetArraySize(rows), 1);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(rows, 0), "cmd")->valuestring,
                        "campaign.pause");
    cJSON_Delete(rows);
}

/* The statement cache: one buffer (one address) holding different SQL
 * texts must never be answered with another text's statement, and more
 * distinct statements than the cache holds still run (uncached). */
static void statement_cache_keys_on_text_and_overflows(void **state)
{
    struct fx *f = *state;
    char sql[64];
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 300; i++) {
            (void)snprintf(sql, sizeof(sql), "SELECT %d AS v", i);
            cJSON *rows = NULL;
            assert_int_equal(upk_store_query_json(f->s, sql, NULL, 0, &rows), UPK_OK);
            assert_int_equal(cJSON_GetArraySize(rows), 1);
            assert_int_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(rows, 0), "v")->valueint, i);
            cJSON_Delete(rows);
        }
    }
    /* The store still works with the cache full of those. */
    add_device(f->s, "dev-1", "rev-a", "1.0.0", true);
    cJSON *rows = NULL;
    const char *binds[] = {"dev-1"};
    assert_int_equal(
        upk_store_query_json(f->s, "SELECT hw FROM devices WHERE id=?", binds, 1, &rows), UPK_OK);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(rows, 0), "hw")->valuestring,
                        "rev-a");
    cJSON_Delete(rows);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(open_migrates_and_reopens, setup, teardown),
        cmocka_unit_test_setup_teardown(newer_schema_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(campaign_gate_round_trips, setup, teardown),
        cmocka_unit_test_setup_teardown(health_reports_feed_the_gate, setup, teardown),
        cmocka_unit_test(open_fails_on_unwritable_dir),
        cmocka_unit_test_setup_teardown(registry_tracks_state_and_online, setup, teardown),
        cmocka_unit_test_setup_teardown(events_are_deduplicated_and_move_campaign_rows, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(rollback_restores_previous_desired, setup, teardown),
        cmocka_unit_test_setup_teardown(campaign_survives_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(state_outcome_recovers_lost_events, setup, teardown),
        cmocka_unit_test_setup_teardown(events_move_rows_only_when_naming_the_campaign_release,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(ctr_strictly_increases_and_follows_the_clock, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(authed_flag_is_remembered, setup, teardown),
        cmocka_unit_test_setup_teardown(stale_state_is_recorded, setup, teardown),
        cmocka_unit_test_setup_teardown(drift_flags_a_device_running_another_release, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(desired_all_lists_every_device_ever_given_one, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(release_round_trips, setup, teardown),
        cmocka_unit_test_setup_teardown(audit_is_recorded, setup, teardown),
        cmocka_unit_test_setup_teardown(statement_cache_keys_on_text_and_overflows, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
