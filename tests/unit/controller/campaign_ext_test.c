/* Unit tests of the campaign commands of issue 16 through upk_ctl_handle on a
 * real store: create refuses a release no target device can install (install
 * module, delta base) with counts, --delta-fallback full, the halt reason and
 * error column, pausing a paused campaign, continuous campaigns and retries. */
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

#include "campaign_ext.h"
#include "config.h"
#include "ctl.h"
#include "engine.h"
#include "rollback.h"
#include "store.h"
#include "upkeep/manifest.h"
#include "upkeep/msg.h"

struct fx {
    char dir[256];
    upk_store *s;
    upk_serve_config cfg;
    upk_ctl *ctl;
    int changed;
    uint64_t seq;
};

static void on_changed(const char *device, void *ud)
{
    (void)device;
    struct fx *f = ud;
    f->changed++;
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return -1;
    int r = snprintf(f->dir, sizeof(f->dir), "/tmp/upk-campext-test-XXXXXX");
    (void)r;
    if (mkdtemp(f->dir) == NULL || upk_store_open(f->dir, &f->s) != UPK_OK ||
        upk_ctl_new(f->s, &f->cfg, on_changed, f, &f->ctl) != UPK_OK)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    upk_ctl_free(f->ctl);
    upk_store_close(f->s);
    char cmd[512];
    int r = snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    (void)r;
    r = system(cmd);
    free(f);
    return 0;
}

static upk_err call(struct fx *f, const char *cmd, const char *args, int64_t now, cJSON **data,
                    char *msg)
{
    upk_ctl_req req;
    memset(&req, 0, sizeof(req));
    int r = snprintf(req.id, sizeof(req.id), "req-1");
    r = snprintf(req.cmd, sizeof(req.cmd), "%s", cmd);
    (void)r;
    req.args = cJSON_Parse(args);
    assert_non_null(req.args);
    char *json = NULL, *out = NULL;
    size_t len = 0, outlen = 0;
    assert_int_equal(upk_ctl_req_encode(&req, &json, &len), UPK_OK);
    cJSON_Delete(req.args);
    assert_int_equal(upk_ctl_handle(f->ctl, "alice", "operator:alice", (const uint8_t *)json, len,
                                    now, &out, &outlen),
                     UPK_OK);
    free(json);
    upk_ctl_resp resp;
    memset(&resp, 0, sizeof(resp));
    assert_int_equal(upk_ctl_resp_decode(out, outlen, &resp), UPK_OK);
    free(out);
    if (msg != NULL) {
        r = snprintf(msg, UPK_ERRMSG_MAX + 1, "%s", resp.message);
        (void)r;
    }
    if (data != NULL) {
        *data = resp.data;
        resp.data = NULL;
    }
    upk_err err = resp.error;
    upk_ctl_resp_cleanup(&resp);
    return err;
}

/* fw VERSION as release id: full, or a delta from image base (fill bytes). */
static void add_rel(struct fx *f, const char *id, const char *version, const char *module,
                    uint8_t base, uint8_t target)
{
    upk_manifest m;
    memset(&m, 0, sizeof(m));
    int r = snprintf(m.name, sizeof(m.name), "fw");
    r = snprintf(m.version, sizeof(m.version), "%s", version);
    r = snprintf(m.hw[0], sizeof(m.hw[0]), "hw-a");
    r = snprintf(m.module, sizeof(m.module), "%s", module);
    (void)r;
    m.hw_count = 1;
    m.security_version = 2;
    m.type = base ? UPK_RELEASE_DELTA : UPK_RELEASE_FULL;
    m.size = m.target_size = 10;
    memset(m.target_sha256, target, sizeof(m.target_sha256));
    memset(m.base_sha256, base, base ? sizeof(m.base_sha256) : 0);
    memset(m.sha256, base ? (uint8_t)(target ^ 0x5a) : target, sizeof(m.sha256));
    m.created = 1000;
    m.expires = 4000000000;
    char *json = NULL;
    size_t len = 0;
    assert_int_equal(upk_manifest_encode(&m, &json, &len), UPK_OK);
    uint8_t sig[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    assert_int_equal(
        upk_store_release_insert(f->s, id, &m, json, len, sig, sizeof(sig), "00", "alice", 1000),
        UPK_OK);
    free(json);
}

/* Device id reports version with image (fill byte; 0 = unknown) and module. */
static void device(struct fx *f, const char *id, const char *version, uint8_t image,
                   const char *module, bool online)
{
    upk_state_msg m;
    memset(&m, 0, sizeof(m));
    int r = snprintf(m.device, sizeof(m.device), "%s", id);
    r = snprintf(m.hw, sizeof(m.hw), "hw-a");
    r = snprintf(m.release, sizeof(m.release), "fw");
    r = snprintf(m.version, sizeof(m.version), "%s", version);
    if (module != NULL) {
        r = snprintf(m.cap.modules[0], sizeof(m.cap.modules[0]), "%s", module);
        m.cap.module_count = 1;
    }
    (void)r;
    memset(m.image_sha256, image, sizeof(m.image_sha256));
    m.security_version = 2;
    assert_int_equal(upk_store_device_state(f->s, &m, 1000), UPK_OK);
    assert_int_equal(upk_store_device_image(f->s, &m), UPK_OK);
    assert_int_equal(upk_store_device_online(f->s, id, online, 1000), UPK_OK);
}

static size_t campaigns(struct fx *f)
{
    cJSON *rows = NULL;
    assert_int_equal(
        upk_store_query_json(f->s, "SELECT count(*) AS n FROM campaigns", NULL, 0, &rows), UPK_OK);
    size_t n = (size_t)cJSON_GetObjectItem(cJSON_GetArrayItem(rows, 0), "n")->valueint;
    cJSON_Delete(rows);
    return n;
}

static void desired_of(struct fx *f, const char *dev, const char *want)
{
    char rel[UPK_ID_MAX + 1], camp[UPK_ID_MAX + 1];
    assert_int_equal(upk_store_device_desired(f->s, dev, rel, camp), UPK_OK);
    assert_string_equal(rel, want);
}

/* One engine step of campaign id, applied (as serve's tick does). */
static upk_step_result step(struct fx *f, const char *id, int64_t now)
{
    upk_campaign c;
    upk_cdev *devs = NULL;
    size_t n = 0;
    upk_action acts[32];
    upk_step_result res;
    assert_int_equal(upk_store_campaign_get(f->s, id, &c), UPK_OK);
    assert_int_equal(upk_store_campaign_devices(f->s, id, &devs, &n), UPK_OK);
    assert_int_equal(upk_engine_step(&c, devs, n, now, acts, 32, &res), UPK_OK);
    upk_continuous_hold(f->s, &c, &res);
    assert_int_equal(upk_store_campaign_apply(f->s, &res, devs, acts, now, NULL, NULL), UPK_OK);
    free(devs);
    return res;
}

static void outcome(struct fx *f, const char *dev, const char *campaign, const char *version,
                    upk_status st, upk_err err)
{
    upk_event_msg e;
    memset(&e, 0, sizeof(e));
    e.seq = ++f->seq;
    int r = snprintf(e.campaign, sizeof(e.campaign), "%s", campaign);
    r = snprintf(e.version, sizeof(e.version), "%s", version);
    /* The release's name too: an event moves a campaign row only when it
     * names the campaign's release by name and version (issue 23). */
    r = snprintf(e.release, sizeof(e.release), "fw");
    (void)r;
    e.step = st;
    e.error = err;
    bool dup = true;
    assert_int_equal(upk_store_event_apply(f->s, dev, &e, 2000, &dup), UPK_OK);
}

static const char *state_in(cJSON *show, const char *dev, const char *key)
{
    const cJSON *d;
    cJSON_ArrayForEach(d, cJSON_GetObjectItem(show, "device_list"))
    {
        if (strcmp(cJSON_GetObjectItem(d, "device")->valuestring, dev) == 0)
            return cJSON_GetObjectItem(d, key)->valuestring;
    }
    fail_msg("device %s not in the campaign", dev);
    return NULL;
}

/* Item 8: no target device has the release's module: refused with the
 * count; nothing is created. Devices reporting other modules are left out. */
static void create_refuses_missing_module(void **state)
{
    struct fx *f = *state;
    add_rel(f, "fw-ab", "3.0", "ab-dir", 0, 0x33);
    device(f, "d1", "2.0", 0x22, "file", true);
    device(f, "d2", "2.0", 0x22, "file", true);
    char msg[UPK_ERRMSG_MAX + 1];
    cJSON *data = NULL;
    assert_int_equal(
        call(f, "campaign.create", "{\"release\":\"fw-ab\",\"id\":\"m1\"}", 1000, &data, msg),
        UPK_E_MODULE_UNSUPPORTED);
    assert_null(data);
    assert_string_equal(msg, "release fw-ab needs install module 'ab-dir', which none of the 2 "
                             "target devices has (the first reports: file); release it for "
                             "their module");
    assert_int_equal(campaigns(f), 0);
    /* One device with the module: the other is left out and counted. */
    device(f, "d3", "2.0", 0x22, "ab-dir", true);
    assert_int_equal(
        call(f, "campaign.create", "{\"release\":\"fw-ab\",\"id\":\"m2\"}", 1000, &data, msg),
        UPK_OK);
    assert_int_equal(cJSON_GetObjectItem(data, "devices")->valueint, 1);
    assert_int_equal(cJSON_GetObjectItem(data, "no_module")->valueint, 2);
    cJSON_Delete(data);
}

/* Item 8 and item 3: a delta campaign for devices not on its base is
 * refused with the count by default; --delta-fallback full sends them the
 * full image of the same version. */
static void create_delta_refuses_or_falls_back(void **state)
{
    struct fx *f = *state;
    add_rel(f, "fw-2.6.0", "2.6.0", "file", 0xa5, 0xb6);
    device(f, "d1", "2.5.0", 0xa5, "file", true);
    device(f, "d2", "2.4.0", 0x94, "file", true);
    device(f, "d3", "2.5.0", 0xa5, "file", true);
    char msg[UPK_ERRMSG_MAX + 1];
    assert_int_equal(
        call(f, "campaign.create", "{\"release\":\"fw-2.6.0\",\"id\":\"c1\"}", 1000, NULL, msg),
        UPK_E_DELTA_BASE_MISMATCH);
    assert_string_equal(msg, "1 of 3 target devices are not on the base image (a5a5a5a5...) of "
                             "delta fw-2.6.0: d2; narrow --target to devices on the base, or "
                             "--delta-fallback full sends them a full image (none imported)");
    assert_int_equal(call(f, "campaign.create",
                          "{\"release\":\"fw-2.6.0\",\"id\":\"c1\",\"delta_fallback\":\"full\"}",
                          1000, NULL, msg),
                     UPK_E_NOT_FOUND);
    assert_non_null(strstr(msg, "needs a full image of fw 2.6.0: none is imported"));
    assert_int_equal(campaigns(f), 0);
    add_rel(f, "fw-2.6.0-full", "2.6.0", "file", 0, 0xb6);
    cJSON *data = NULL;
    assert_int_equal(call(f, "campaign.create",
                          "{\"release\":\"fw-2.6.0\",\"id\":\"c1\",\"delta_fallback\":\"full\"}",
                          1000, &data, msg),
                     UPK_OK);
    assert_int_equal(cJSON_GetObjectItem(data, "full_fallback")->valueint, 1);
    assert_string_equal(cJSON_GetObjectItem(data, "full_release")->valuestring, "fw-2.6.0-full");
    cJSON_Delete(data);
    (void)step(f, "c1", 1000);
    desired_of(f, "d1", "fw-2.6.0");
    desired_of(f, "d2", "fw-2.6.0-full");
    desired_of(f, "d3", "fw-2.6.0");
}

/* Item 8: the halt names the error; `show --devices` has an error column;
 * item 7: pausing a paused campaign says it already is. */
static void halt_reason_error_column_and_pause_twice(void **state)
{
    struct fx *f = *state;
    add_rel(f, "fw-3.0", "3.0", "file", 0, 0x33);
    device(f, "dev-3", "2.0", 0x22, "file", true);
    char msg[UPK_ERRMSG_MAX + 1];
    assert_int_equal(call(f, "campaign.create",
                          "{\"release\":\"fw-3.0\",\"id\":\"h1\",\"max_failures\":\"0%\"}", 1000,
                          NULL, msg),
                     UPK_OK);
    (void)step(f, "h1", 1000);
    outcome(f, "dev-3", "h1", "3.0", UPK_STATUS_FAILED, UPK_E_HASH_MISMATCH);
    upk_step_result res = step(f, "h1", 2000);
    assert_int_equal(res.verdict, UPK_VERDICT_HALT);
    cJSON *show = NULL;
    assert_int_equal(call(f, "campaign.show", "{\"id\":\"h1\",\"devices\":true}", 3000, &show, msg),
                     UPK_OK);
    assert_string_equal(cJSON_GetObjectItem(show, "reason")->valuestring,
                        "stage 1: 1 of 1 device failed (HASH_MISMATCH on dev-3); 100.00% is "
                        "above the threshold 0.00%");
    assert_string_equal(state_in(show, "dev-3", "error"), "HASH_MISMATCH");
    assert_int_equal((int64_t)cJSON_GetObjectItem(show, "now_ms")->valuedouble, 3000);
    cJSON_Delete(show);
    cJSON *data = NULL;
    assert_int_equal(call(f, "campaign.pause", "{\"id\":\"h1\"}", 3000, &data, msg), UPK_OK);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(data, "already")));
    cJSON_Delete(data);
}

/* Item 9: a continuous campaign offers the release to a device back online
 * after its stage timed it out and to a device that joins later, and stays
 * open after its last stage; `campaign retry` re-offers a failed device
 * with a new attempt number. */
static void continuous_and_retry(void **state)
{
    struct fx *f = *state;
    add_rel(f, "fw-3.0", "3.0", "file", 0, 0x33);
    device(f, "on", "2.0", 0x22, "file", true);
    device(f, "off", "2.0", 0x22, "file", false);
    char msg[UPK_ERRMSG_MAX + 1];
    assert_int_equal(call(f, "campaign.create",
                          "{\"release\":\"fw-3.0\",\"id\":\"k\",\"continuous\":true,"
                          "\"max_failures\":\"100%\",\"device_timeout\":\"60s\"}",
                          1000, NULL, msg),
                     UPK_OK);
    (void)step(f, "k", 1000);
    outcome(f, "on", "k", "3.0", UPK_STATUS_COMMITTED, UPK_OK);
    (void)step(f, "k", 70000); /* "off" timed out */
    upk_step_result res = step(f, "k", 71000);
    upk_campaign c;
    assert_int_equal(upk_store_campaign_get(f->s, "k", &c), UPK_OK);
    assert_int_equal(c.state, UPK_CAMP_RUNNING); /* held open, not completed */
    (void)res;
    /* "off" comes back; "new" joins. */
    assert_int_equal(upk_store_device_online(f->s, "off", true, 80000), UPK_OK);
    device(f, "new", "2.0", 0x22, "file", true);
    size_t added = 0;
    f->changed = 0;
    assert_int_equal(upk_continuous_tick(f->s, "k", 80000, on_changed, f, &added), UPK_OK);
    assert_int_equal(added, 2);
    (void)step(f, "k", 80000);
    desired_of(f, "off", "fw-3.0");
    desired_of(f, "new", "fw-3.0");
    cJSON *show = NULL;
    assert_int_equal(call(f, "campaign.show", "{\"id\":\"k\",\"devices\":true}", 80000, &show, msg),
                     UPK_OK);
    assert_string_equal(state_in(show, "off", "state"), "assigned");
    assert_string_equal(state_in(show, "new", "state"), "assigned");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(show, "continuous")));
    cJSON_Delete(show);
    /* Retry: "new" fails; retried with attempt 1; a committed device is not
     * retried. */
    outcome(f, "new", "k", "3.0", UPK_STATUS_FAILED, UPK_E_INSTALL_FAILED);
    assert_int_equal(
        call(f, "campaign.retry", "{\"id\":\"k\",\"device\":\"on\"}", 81000, NULL, msg),
        UPK_E_STATE_INVALID);
    assert_string_equal(msg, "device 'on' is succeeded in campaign 'k'; only a failed or "
                             "timed-out device is retried");
    assert_int_equal(upk_desired_attempt(f->s, "new", "k"), 0);
    cJSON *data = NULL;
    f->changed = 0;
    assert_int_equal(call(f, "campaign.retry", "{\"id\":\"k\",\"failed\":true}", 82000, &data, msg),
                     UPK_OK);
    assert_int_equal(cJSON_GetObjectItem(data, "retried")->valueint, 1);
    cJSON_Delete(data);
    assert_int_equal(f->changed, 1);
    assert_int_equal(upk_desired_attempt(f->s, "new", "k"), 1);
    assert_int_equal(call(f, "campaign.show", "{\"id\":\"k\",\"devices\":true}", 82000, &show, msg),
                     UPK_OK);
    assert_string_equal(state_in(show, "new", "state"), "assigned");
    cJSON_Delete(show);
    /* Its outcome counts again. */
    outcome(f, "new", "k", "3.0", UPK_STATUS_COMMITTED, UPK_OK);
    assert_int_equal(call(f, "campaign.show", "{\"id\":\"k\",\"devices\":true}", 83000, &show, msg),
                     UPK_OK);
    assert_string_equal(state_in(show, "new", "state"), "succeeded");
    cJSON_Delete(show);
}

/* A device still returning from a rollback is busy for a new campaign. */
static void rolling_back_devices_are_busy(void **state)
{
    struct fx *f = *state;
    add_rel(f, "fw-2.0", "2.0", "file", 0, 0x22);
    add_rel(f, "fw-3.0", "3.0", "file", 0, 0x33);
    device(f, "d", "1.0", 0x11, "file", true);
    char msg[UPK_ERRMSG_MAX + 1];
    assert_int_equal(
        call(f, "campaign.create", "{\"release\":\"fw-2.0\",\"id\":\"c0\"}", 1000, NULL, msg),
        UPK_OK);
    (void)step(f, "c0", 1000);
    outcome(f, "d", "c0", "2.0", UPK_STATUS_COMMITTED, UPK_OK);
    device(f, "d", "2.0", 0x22, "file", true);
    (void)step(f, "c0", 2000);
    assert_int_equal(
        call(f, "campaign.create", "{\"release\":\"fw-3.0\",\"id\":\"c1\"}", 3000, NULL, msg),
        UPK_OK);
    (void)step(f, "c1", 3000);
    outcome(f, "d", "c1", "3.0", UPK_STATUS_COMMITTED, UPK_OK);
    device(f, "d", "3.0", 0x33, "file", true);
    cJSON *data = NULL;
    assert_int_equal(call(f, "campaign.rollback", "{\"id\":\"c1\"}", 4000, &data, msg), UPK_OK);
    assert_int_equal(
        cJSON_GetObjectItem(cJSON_GetObjectItem(data, "rollback"), "pending")->valueint, 1);
    cJSON_Delete(data);
    desired_of(f, "d", "fw-2.0");
    assert_int_equal(
        call(f, "campaign.create", "{\"release\":\"fw-3.0\",\"id\":\"c2\"}", 5000, NULL, msg),
        UPK_E_NOT_FOUND);
    assert_non_null(strstr(msg, "1 busy in another campaign"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(create_refuses_missing_module, setup, teardown),
        cmocka_unit_test_setup_teardown(create_delta_refuses_or_falls_back, setup, teardown),
        cmocka_unit_test_setup_teardown(halt_reason_error_column_and_pause_twice, setup, teardown),
        cmocka_unit_test_setup_teardown(continuous_and_retry, setup, teardown),
        cmocka_unit_test_setup_teardown(rolling_back_devices_are_busy, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
