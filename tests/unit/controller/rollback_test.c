/* Unit tests of campaign rollback (controller/src/rollback.c) on a real
 * store: a rollback gives each device a release it can install or names why
 * not, and the campaign is rolled_back only once every device reported it
 * (issue 16 item 3). */
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

#include "engine.h"
#include "rollback.h"
#include "store.h"
#include "upkeep/manifest.h"

struct fx {
    char dir[256];
    upk_store *s;
    uint64_t seq;
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return -1;
    int r = snprintf(f->dir, sizeof(f->dir), "/tmp/upk-rollback-test-XXXXXX");
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

/* Release id of fw VERSION: full (base 0) or a delta from image base to
 * image target (images are named by one fill byte). */
static void add_rel(struct fx *f, const char *id, const char *version, uint8_t base, uint8_t target,
                    int64_t imported_ms)
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
    m.type = base ? UPK_RELEASE_DELTA : UPK_RELEASE_FULL;
    m.size = m.target_size = 10;
    memset(m.target_sha256, target, sizeof(m.target_sha256));
    if (base) {
        memset(m.base_sha256, base, sizeof(m.base_sha256));
        memset(m.sha256, (uint8_t)(target ^ 0x5a), sizeof(m.sha256));
    } else {
        memcpy(m.sha256, m.target_sha256, sizeof(m.sha256));
    }
    m.created = 1000;
    m.expires = 4000000000;
    char *json = NULL;
    size_t len = 0;
    assert_int_equal(upk_manifest_encode(&m, &json, &len), UPK_OK);
    uint8_t sig[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    assert_int_equal(upk_store_release_insert(f->s, id, &m, json, len, sig, sizeof(sig), "00",
                                              "alice", imported_ms),
                     UPK_OK);
    free(json);
}

/* What device id reports it runs (retained state). */
static void report(struct fx *f, const char *id, const char *version, upk_status status,
                   upk_err error, const char *campaign)
{
    upk_state_msg m;
    memset(&m, 0, sizeof(m));
    int r = snprintf(m.device, sizeof(m.device), "%s", id);
    r = snprintf(m.hw, sizeof(m.hw), "hw-a");
    r = snprintf(m.release, sizeof(m.release), "fw");
    r = snprintf(m.version, sizeof(m.version), "%s", version);
    r = snprintf(m.campaign, sizeof(m.campaign), "%s", campaign);
    (void)r;
    m.security_version = 2;
    m.status = status;
    m.error = error;
    assert_int_equal(upk_store_device_state(f->s, &m, 1000), UPK_OK);
    assert_int_equal(upk_store_device_image(f->s, &m), UPK_OK);
    assert_int_equal(upk_store_device_online(f->s, id, true, 1000), UPK_OK);
}

static void event(struct fx *f, const char *dev, const char *campaign, const char *version,
                  upk_status step, upk_err error, int64_t now)
{
    upk_event_msg e;
    memset(&e, 0, sizeof(e));
    e.seq = ++f->seq;
    e.ts = now / 1000;
    int r = snprintf(e.campaign, sizeof(e.campaign), "%s", campaign);
    r = snprintf(e.release, sizeof(e.release), "fw");
    r = snprintf(e.version, sizeof(e.version), "%s", version);
    (void)r;
    e.step = step;
    e.error = error;
    bool dup = true;
    assert_int_equal(upk_store_event_apply(f->s, dev, &e, now, &dup), UPK_OK);
    assert_false(dup);
}

/* Creates campaign id of release over ids (one stage) and starts them all. */
static upk_campaign start(struct fx *f, const char *id, const char *release, const char *const *ids,
                          size_t n, int64_t now)
{
    upk_campaign c;
    memset(&c, 0, sizeof(c));
    int r = snprintf(c.id, sizeof(c.id), "%s", id);
    r = snprintf(c.release, sizeof(c.release), "%s", release);
    r = snprintf(c.target, sizeof(c.target), "all");
    r = snprintf(c.created_by, sizeof(c.created_by), "alice");
    (void)r;
    c.state = UPK_CAMP_RUNNING;
    assert_int_equal(upk_engine_parse_stages("100%", &c), UPK_OK);
    c.device_timeout_s = 600;
    c.created_ms = c.updated_ms = now;
    uint32_t st[8];
    assert_int_equal(upk_engine_assign_stages(&c, ids, n, st), UPK_OK);
    assert_int_equal(upk_store_campaign_insert(f->s, &c, ids, st, n), UPK_OK);
    upk_cdev *devs = NULL;
    size_t dn = 0;
    upk_action acts[16];
    upk_step_result res;
    assert_int_equal(upk_store_campaign_devices(f->s, id, &devs, &dn), UPK_OK);
    assert_int_equal(upk_engine_step(&c, devs, dn, now, acts, 16, &res), UPK_OK);
    assert_int_equal(res.action_count, n);
    assert_int_equal(upk_store_campaign_apply(f->s, &res, devs, acts, now, NULL, NULL), UPK_OK);
    free(devs);
    return res.next;
}

/* One engine step of campaign id, applied. */
static upk_step_result tick(struct fx *f, const char *id, int64_t now)
{
    upk_campaign c;
    upk_cdev *devs = NULL;
    size_t n = 0;
    upk_action acts[16];
    upk_step_result res;
    assert_int_equal(upk_store_campaign_get(f->s, id, &c), UPK_OK);
    assert_int_equal(upk_store_campaign_devices(f->s, id, &devs, &n), UPK_OK);
    assert_int_equal(upk_engine_step(&c, devs, n, now, acts, 16, &res), UPK_OK);
    assert_int_equal(upk_store_campaign_apply(f->s, &res, devs, acts, now, NULL, NULL), UPK_OK);
    free(devs);
    assert_int_equal(upk_rollback_tick(f->s, now, NULL), UPK_OK);
    return res;
}

static upk_camp_state state_of(struct fx *f, const char *id, char *reason)
{
    upk_campaign c;
    assert_int_equal(upk_store_campaign_get(f->s, id, &c), UPK_OK);
    if (reason != NULL)
        memcpy(reason, c.reason, sizeof(c.reason));
    return c.state;
}

static void desired_of(struct fx *f, const char *dev, const char *want)
{
    char rel[UPK_ID_MAX + 1], camp[UPK_ID_MAX + 1];
    assert_int_equal(upk_store_device_desired(f->s, dev, rel, camp), UPK_OK);
    assert_string_equal(rel, want);
}

/* The rollback row of dev as "state error". */
static void rb_row(struct fx *f, const char *campaign, const char *dev, const char *want_state,
                   const char *want_error)
{
    cJSON *o = cJSON_CreateObject();
    assert_int_equal(upk_rollback_json(f->s, campaign, o), UPK_OK);
    const cJSON *d;
    bool found = false;
    cJSON_ArrayForEach(d, cJSON_GetObjectItem(cJSON_GetObjectItem(o, "rollback"), "devices"))
    {
        if (strcmp(cJSON_GetObjectItem(d, "device")->valuestring, dev) != 0)
            continue;
        found = true;
        assert_string_equal(cJSON_GetObjectItem(d, "state")->valuestring, want_state);
        assert_string_equal(cJSON_GetObjectItem(d, "error")->valuestring, want_error);
    }
    assert_true(found);
    cJSON_Delete(o);
}

/* The case: fw 2.7.0 (a delta from 2.6.0) halts; the devices'
 * previous release is the delta 2.6.0 (from 2.5.0's image), which a device
 * now on 2.7.0 cannot install. The rollback must not claim success. */
static void rollback_of_halted_delta_campaign_ends_honestly(void **state)
{
    struct fx *f = *state;
    add_rel(f, "fw-2.6.0", "2.6.0", 0xa5, 0xb6, 1000); /* delta 2.5.0 -> 2.6.0 */
    add_rel(f, "fw-2.7.0", "2.7.0", 0xb6, 0xc7, 1100); /* delta 2.6.0 -> 2.7.0 */
    const char *ids[] = {"dev-1", "dev-2", "dev-3"};
    for (size_t i = 0; i < 3; i++)
        report(f, ids[i], "2.5.0", UPK_STATUS_IDLE, UPK_OK, "");
    /* Campaign c26 puts the delta 2.6.0 on everyone. */
    (void)start(f, "c26", "fw-2.6.0", ids, 3, 2000);
    for (size_t i = 0; i < 3; i++) {
        event(f, ids[i], "c26", "2.6.0", UPK_STATUS_COMMITTED, UPK_OK, 2100);
        report(f, ids[i], "2.6.0", UPK_STATUS_COMMITTED, UPK_OK, "c26");
    }
    (void)tick(f, "c26", 2200);
    assert_int_equal(state_of(f, "c26", NULL), UPK_CAMP_COMPLETED);
    /* c27: dev-1 and dev-2 commit 2.7.0, dev-3 fails: halted (0% allowed). */
    (void)start(f, "c27", "fw-2.7.0", ids, 3, 3000);
    for (size_t i = 0; i < 2; i++) {
        event(f, ids[i], "c27", "2.7.0", UPK_STATUS_COMMITTED, UPK_OK, 3100);
        report(f, ids[i], "2.7.0", UPK_STATUS_COMMITTED, UPK_OK, "c27");
    }
    event(f, "dev-3", "c27", "2.7.0", UPK_STATUS_FAILED, UPK_E_HASH_MISMATCH, 3100);
    report(f, "dev-3", "2.6.0", UPK_STATUS_FAILED, UPK_E_HASH_MISMATCH, "c27");
    upk_step_result res = tick(f, "c27", 3200);
    char reason[UPK_REASON_MAX + 1];
    assert_int_equal(res.verdict, UPK_VERDICT_HALT);
    assert_int_equal(state_of(f, "c27", reason), UPK_CAMP_PAUSED);
    assert_string_equal(reason, "stage 1: 1 of 3 devices failed (HASH_MISMATCH on dev-3); "
                                "33.33% is above the threshold 0.00%");

    /* Rollback: the delta 2.6.0 is not sent to devices on 2.7.0 (its base
     * is 2.5.0's image); no full 2.6.0 or older full release exists, so they
     * are named with DELTA_BASE_MISMATCH at once and their desired cleared.
     * dev-3 still runs 2.6.0: done. */
    assert_int_equal(
        upk_store_campaign_transition(f->s, "c27", UPK_CAMP_ROLLED_BACK, "bad", 4000, NULL, NULL),
        UPK_OK);
    assert_int_equal(state_of(f, "c27", NULL), UPK_CAMP_ROLLING_BACK);
    rb_row(f, "c27", "dev-1", "failed", "DELTA_BASE_MISMATCH");
    rb_row(f, "c27", "dev-2", "failed", "DELTA_BASE_MISMATCH");
    desired_of(f, "dev-1", "");
    assert_int_equal(upk_rollback_tick(f->s, 4100, NULL), UPK_OK);
    assert_int_equal(state_of(f, "c27", reason), UPK_CAMP_ROLLBACK_INCOMPLETE);
    assert_string_equal(reason, "rollback incomplete: 2 of 3 devices not back on the previous "
                                "release (DELTA_BASE_MISMATCH on dev-1, DELTA_BASE_MISMATCH on "
                                "dev-2); `campaign show --devices` says why");

    /* The operator imports the full image of 2.6.0 and rolls back again:
     * dev-1 and dev-2 are sent it; rolling_back until both report it. */
    add_rel(f, "fw-2.6.0-full", "2.6.0", 0, 0xb6, 5000);
    assert_int_equal(
        upk_store_campaign_transition(f->s, "c27", UPK_CAMP_ROLLED_BACK, "again", 5100, NULL, NULL),
        UPK_OK);
    desired_of(f, "dev-1", "fw-2.6.0-full");
    desired_of(f, "dev-2", "fw-2.6.0-full");
    desired_of(f, "dev-3", ""); /* already on it at the first rollback */
    rb_row(f, "c27", "dev-1", "pending", "");
    assert_int_equal(upk_rollback_tick(f->s, 5200, NULL), UPK_OK);
    assert_int_equal(state_of(f, "c27", NULL), UPK_CAMP_ROLLING_BACK);
    /* dev-1 gets back; dev-2 rejects it (say its module broke). */
    report(f, "dev-1", "2.6.0", UPK_STATUS_COMMITTED, UPK_OK, "c27");
    event(f, "dev-2", "c27", "2.6.0", UPK_STATUS_REJECTED, UPK_E_MODULE_UNSUPPORTED, 5300);
    assert_int_equal(upk_rollback_tick(f->s, 5400, NULL), UPK_OK);
    rb_row(f, "c27", "dev-2", "failed", "MODULE_UNSUPPORTED");
    assert_int_equal(state_of(f, "c27", reason), UPK_CAMP_ROLLBACK_INCOMPLETE);
    assert_non_null(strstr(reason, "1 of 3 devices not back"));
    assert_non_null(strstr(reason, "MODULE_UNSUPPORTED on dev-2"));
    /* Once more: dev-2 reports 2.6.0 at last: rolled_back, nothing failed. */
    assert_int_equal(
        upk_store_campaign_transition(f->s, "c27", UPK_CAMP_ROLLED_BACK, "third", 6000, NULL, NULL),
        UPK_OK);
    desired_of(f, "dev-1", "fw-2.6.0-full"); /* done rows keep their release */
    assert_int_equal(upk_rollback_tick(f->s, 6100, NULL), UPK_OK);
    assert_int_equal(state_of(f, "c27", NULL), UPK_CAMP_ROLLING_BACK);
    report(f, "dev-2", "2.6.0", UPK_STATUS_COMMITTED, UPK_OK, "c27");
    size_t ended = 0;
    assert_int_equal(upk_rollback_tick(f->s, 6200, &ended), UPK_OK);
    assert_int_equal(ended, 1);
    assert_int_equal(state_of(f, "c27", reason), UPK_CAMP_ROLLED_BACK);
    assert_string_equal(reason, "third");
    /* A rolled-back campaign cannot be rolled back again. */
    assert_int_equal(
        upk_store_campaign_transition(f->s, "c27", UPK_CAMP_ROLLED_BACK, "x", 6300, NULL, NULL),
        UPK_E_STATE_INVALID);
}

/* An older full release of the name is the fallback; a silent device fails
 * its rollback at the device timeout. */
static void fallback_to_older_full_and_timeout(void **state)
{
    struct fx *f = *state;
    add_rel(f, "fw-2.5.0", "2.5.0", 0, 0xa5, 900);
    add_rel(f, "fw-2.6.0", "2.6.0", 0xa5, 0xb6, 1000);
    add_rel(f, "fw-2.7.0", "2.7.0", 0, 0xc7, 1100);
    const char *ids[] = {"dev-1", "dev-2"};
    for (size_t i = 0; i < 2; i++)
        report(f, ids[i], "2.5.0", UPK_STATUS_IDLE, UPK_OK, "");
    (void)start(f, "c26", "fw-2.6.0", ids, 2, 2000);
    for (size_t i = 0; i < 2; i++)
        report(f, ids[i], "2.6.0", UPK_STATUS_COMMITTED, UPK_OK, "c26");
    (void)start(f, "c27", "fw-2.7.0", ids, 2, 3000);
    for (size_t i = 0; i < 2; i++)
        report(f, ids[i], "2.7.0", UPK_STATUS_COMMITTED, UPK_OK, "c27");
    assert_int_equal(
        upk_store_campaign_transition(f->s, "c27", UPK_CAMP_ROLLED_BACK, "bad", 4000, NULL, NULL),
        UPK_OK);
    desired_of(f, "dev-1", "fw-2.5.0");
    desired_of(f, "dev-2", "fw-2.5.0");
    report(f, "dev-1", "2.5.0", UPK_STATUS_COMMITTED, UPK_OK, "c27");
    assert_int_equal(upk_rollback_tick(f->s, 5000, NULL), UPK_OK);
    assert_int_equal(state_of(f, "c27", NULL), UPK_CAMP_ROLLING_BACK);
    rb_row(f, "c27", "dev-1", "done", "");
    rb_row(f, "c27", "dev-2", "pending", "");
    /* 600 s device timeout after the rollback began. */
    assert_int_equal(upk_rollback_tick(f->s, 4000 + 600000, NULL), UPK_OK);
    rb_row(f, "c27", "dev-2", "failed", "TIMEOUT");
    char reason[UPK_REASON_MAX + 1];
    assert_int_equal(state_of(f, "c27", reason), UPK_CAMP_ROLLBACK_INCOMPLETE);
    assert_non_null(strstr(reason, "1 of 2 devices not back on the previous release (TIMEOUT on "
                                   "dev-2)"));
}

/* A device still installing the campaign's release when the rollback
 * starts is not counted back until it reports its previous release again
 * (it may yet commit the campaign's). */
static void updating_device_is_back_only_when_it_says_so(void **state)
{
    struct fx *f = *state;
    add_rel(f, "fw-2.6.0", "2.6.0", 0, 0xb6, 1000);
    add_rel(f, "fw-2.7.0", "2.7.0", 0, 0xc7, 1100);
    const char *ids[] = {"dev-1"};
    report(f, "dev-1", "2.5.0", UPK_STATUS_IDLE, UPK_OK, "");
    (void)start(f, "c26", "fw-2.6.0", ids, 1, 2000);
    report(f, "dev-1", "2.6.0", UPK_STATUS_COMMITTED, UPK_OK, "c26");
    (void)start(f, "c27", "fw-2.7.0", ids, 1, 3000);
    report(f, "dev-1", "2.6.0", UPK_STATUS_DOWNLOADING, UPK_OK, "c27");
    assert_int_equal(
        upk_store_campaign_transition(f->s, "c27", UPK_CAMP_ROLLED_BACK, "bad", 4000, NULL, NULL),
        UPK_OK);
    rb_row(f, "c27", "dev-1", "pending", "");
    desired_of(f, "dev-1", "fw-2.6.0");
    assert_int_equal(upk_rollback_tick(f->s, 4100, NULL), UPK_OK);
    assert_int_equal(state_of(f, "c27", NULL), UPK_CAMP_ROLLING_BACK);
    report(f, "dev-1", "2.6.0", UPK_STATUS_COMMITTED, UPK_OK, "c27");
    assert_int_equal(upk_rollback_tick(f->s, 4200, NULL), UPK_OK);
    assert_int_equal(state_of(f, "c27", NULL), UPK_CAMP_ROLLED_BACK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(rollback_of_halted_delta_campaign_ends_honestly, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(fallback_to_older_full_and_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(updating_device_is_back_only_when_it_says_so, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
