/* Unit tests of operator command dispatch (controller/src/ctl.c) without
 * MQTT: sender-stamp authorization, read-only operators, malformed requests,
 * release upload with signature and hash checks, campaign commands, target
 * expressions, audit. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "client.h"
#include <sqlite3.h>

#include "config.h"
#include "ctl.h"
#include "store.h"
#include "upkeep/hash.h"
#include "upkeep/key.h"
#include "upkeep/manifest.h"
#include "upkeep/msg.h"

struct fx {
    char dir[256];
    upk_store *s;
    upk_serve_config cfg;
    upk_ctl *ctl;
    upk_key *key;
    int changed;
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
    int r = snprintf(f->dir, sizeof(f->dir), "/tmp/upk-ctl-test-XXXXXX");
    (void)r;
    if (mkdtemp(f->dir) == NULL || upk_store_open(f->dir, &f->s) != UPK_OK ||
        upk_key_generate(&f->key) != UPK_OK || upk_keyring_new(&f->cfg.ring) != UPK_OK ||
        upk_keyring_add(f->cfg.ring, f->key) != UPK_OK)
        return -1;
    r = snprintf(f->cfg.readonly[0], sizeof(f->cfg.readonly[0]), "viewer");
    f->cfg.readonly_count = 1;
    if (upk_ctl_new(f->s, &f->cfg, on_changed, f, &f->ctl) != UPK_OK)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    upk_ctl_free(f->ctl);
    upk_store_close(f->s);
    upk_serve_config_cleanup(&f->cfg);
    upk_key_free(f->key);
    char cmd[512];
    int r = snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    (void)r;
    r = system(cmd);
    free(f);
    return 0;
}

/* Sends cmd with args (JSON text) as sender on ctl/req/op; returns the
 * reply's error and leaves its data in *data (may be NULL). */
static upk_err call(struct fx *f, const char *op, const char *sender, const char *cmd,
                    const char *args, cJSON **data, char *msg)
{
    upk_ctl_req req;
    memset(&req, 0, sizeof(req));
    int r = snprintf(req.id, sizeof(req.id), "req-1");
    r = snprintf(req.cmd, sizeof(req.cmd), "%s", cmd);
    (void)r;
    req.args = cJSON_Parse(args != NULL ? args : "{}");
    assert_non_null(req.args);
    char *json = NULL, *out = NULL;
    size_t len = 0, outlen = 0;
    assert_int_equal(upk_ctl_req_encode(&req, &json, &len), UPK_OK);
    cJSON_Delete(req.args);
    assert_int_equal(
        upk_ctl_handle(f->ctl, op, sender, (const uint8_t *)json, len, 1000000, &out, &outlen),
        UPK_OK);
    free(json);
    upk_ctl_resp resp;
    memset(&resp, 0, sizeof(resp));
    assert_int_equal(upk_ctl_resp_decode(out, outlen, &resp), UPK_OK);
    free(out);
    assert_string_equal(resp.id, "req-1");
    if (msg != NULL) {
        int rr = snprintf(msg, UPK_ERRMSG_MAX + 1, "%s", resp.message);
        (void)rr;
    }
    if (data != NULL) {
        *data = resp.data;
        resp.data = NULL;
    }
    upk_err err = resp.error;
    upk_ctl_resp_cleanup(&resp);
    return err;
}

static void add_device(struct fx *f, const char *id, const char *hw)
{
    upk_state_msg m;
    memset(&m, 0, sizeof(m));
    int r = snprintf(m.device, sizeof(m.device), "%s", id);
    r = snprintf(m.hw, sizeof(m.hw), "%s", hw);
    r = snprintf(m.version, sizeof(m.version), "1.0");
    (void)r;
    assert_int_equal(upk_store_device_state(f->s, &m, 1), UPK_OK);
    assert_int_equal(upk_store_device_online(f->s, id, true, 1), UPK_OK);
}

/* Uploads a release of len bytes through the three upload commands. */
static upk_err upload(struct fx *f, const char *op, size_t len, bool corrupt, char *msg)
{
    uint8_t *art = malloc(len);
    assert_non_null(art);
    for (size_t i = 0; i < len; i++)
        art[i] = (uint8_t)(i * 7);
    upk_manifest m;
    memset(&m, 0, sizeof(m));
    int r = snprintf(m.name, sizeof(m.name), "fw");
    r = snprintf(m.version, sizeof(m.version), "2.0");
    r = snprintf(m.hw[0], sizeof(m.hw[0]), "hw-a");
    r = snprintf(m.module, sizeof(m.module), "file");
    (void)r;
    m.hw_count = 1;
    m.security_version = 3;
    m.size = m.target_size = len;
    upk_sha256_buf(art, len, m.sha256);
    memcpy(m.target_sha256, m.sha256, 32);
    m.created = 1;
    m.expires = 4000000000;
    char *json = NULL;
    size_t jlen = 0;
    uint8_t sig[UPK_SIG_MAX];
    size_t siglen = 0;
    char b64[200], *args = NULL;
    size_t blen = 0;
    assert_int_equal(upk_manifest_encode(&m, &json, &jlen), UPK_OK);
    assert_int_equal(upk_manifest_sign(f->key, json, jlen, sig, &siglen), UPK_OK);
    assert_int_equal(upk_base64_encode(sig, siglen, b64, sizeof(b64), &blen), UPK_OK);
    cJSON *a = cJSON_CreateObject();
    cJSON_AddStringToObject(a, "manifest", json);
    cJSON_AddStringToObject(a, "sig", b64);
    cJSON_AddStringToObject(a, "key_id", upk_key_id(f->key));
    args = cJSON_PrintUnformatted(a);
    cJSON_Delete(a);
    cJSON *data = NULL;
    upk_err err = call(f, op, "operator:alice", "release.upload.begin", args, &data, msg);
    free(args);
    free(json);
    if (err != UPK_OK) {
        free(art);
        return err;
    }
    char up[80];
    r = snprintf(up, sizeof(up), "%s", cJSON_GetObjectItem(data, "upload")->valuestring);
    cJSON_Delete(data);
    if (corrupt)
        art[len / 2] ^= 1;
    static char chunk[UPK_UPLOAD_CHUNK_MAX * 2];
    for (size_t off = 0; off < len; off += UPK_UPLOAD_CHUNK_MAX) {
        size_t n = len - off < UPK_UPLOAD_CHUNK_MAX ? len - off : UPK_UPLOAD_CHUNK_MAX;
        assert_int_equal(upk_base64_encode(art + off, n, chunk, sizeof(chunk), &blen), UPK_OK);
        cJSON *c = cJSON_CreateObject();
        cJSON_AddStringToObject(c, "upload", up);
        cJSON_AddNumberToObject(c, "offset", (double)off);
        cJSON_AddStringToObject(c, "data", chunk);
        char *ca = cJSON_PrintUnformatted(c);
        cJSON_Delete(c);
        err = call(f, op, "operator:alice", "release.upload.chunk", ca, NULL, msg);
        free(ca);
        assert_int_equal(err, UPK_OK);
    }
    char end[160];
    r = snprintf(end, sizeof(end), "{\"upload\":\"%s\"}", up);
    err = call(f, op, "operator:alice", "release.upload.end", end, NULL, msg);
    free(art);
    return err;
}

static size_t audit_count(struct fx *f, const char *result)
{
    cJSON *rows = NULL;
    const char *b[] = {result};
    assert_int_equal(
        upk_store_query_json(f->s, "SELECT count(*) AS n FROM audit WHERE result=?", b, 1, &rows),
        UPK_OK);
    size_t n = (size_t)cJSON_GetObjectItem(cJSON_GetArrayItem(rows, 0), "n")->valueint;
    cJSON_Delete(rows);
    return n;
}

static void ping_answers_operators_and_admins(void **state)
{
    struct fx *f = *state;
    cJSON *data = NULL;
    assert_int_equal(call(f, "alice", "operator:alice", "ping", NULL, &data, NULL), UPK_OK);
    assert_string_equal(cJSON_GetObjectItem(data, "operator")->valuestring, "alice");
    cJSON_Delete(data);
    assert_int_equal(call(f, "root", "admin:root", "ping", NULL, NULL, NULL), UPK_OK);
}

static void forged_or_foreign_senders_are_denied(void **state)
{
    struct fx *f = *state;
    char msg[UPK_ERRMSG_MAX + 1];
    const char *bad[] = {"operator:bob", "device:alice", "controller:alice", "",
                         "alice",        "operator:",    "operatorx:alice"};
    add_device(f, "d1", "hw-a");
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(call(f, "alice", bad[i], "device.label",
                              "{\"id\":\"d1\",\"group\":\"lab\"}", NULL, msg),
                         UPK_E_DENIED);
        assert_non_null(strstr(msg, "may not send"));
    }
    cJSON *rows = NULL;
    assert_int_equal(upk_store_query_json(f->s, "SELECT grp FROM devices", NULL, 0, &rows), UPK_OK);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(rows, 0), "grp")->valuestring, "");
    cJSON_Delete(rows);
    assert_int_equal(audit_count(f, "DENIED"), sizeof(bad) / sizeof(bad[0]));
}

static void readonly_operator_may_read_only(void **state)
{
    struct fx *f = *state;
    char msg[UPK_ERRMSG_MAX + 1];
    add_device(f, "d1", "hw-a");
    assert_int_equal(call(f, "viewer", "operator:viewer", "device.list", NULL, NULL, NULL), UPK_OK);
    assert_int_equal(call(f, "viewer", "operator:viewer", "device.label",
                          "{\"id\":\"d1\",\"group\":\"lab\"}", NULL, msg),
                     UPK_E_DENIED);
    assert_non_null(strstr(msg, "read-only"));
    /* An admin of the same name is not limited. */
    assert_int_equal(call(f, "viewer", "admin:viewer", "device.label",
                          "{\"id\":\"d1\",\"group\":\"lab\"}", NULL, NULL),
                     UPK_OK);
}

static void malformed_requests_get_error_replies(void **state)
{
    struct fx *f = *state;
    const char *bad[] = {"",
                         "not json",
                         "{\"v\":1}",
                         "{\"v\":2,\"id\":\"x\",\"cmd\":\"ping\"}",
                         "{\"v\":1,\"id\":\"x\",\"cmd\":\"ping\",\"args\":5}",
                         "[1,2]"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *out = NULL;
        size_t outlen = 0;
        assert_int_equal(upk_ctl_handle(f->ctl, "alice", "operator:alice", (const uint8_t *)bad[i],
                                        strlen(bad[i]), 1, &out, &outlen),
                         UPK_OK);
        upk_ctl_resp resp;
        memset(&resp, 0, sizeof(resp));
        assert_int_equal(upk_ctl_resp_decode(out, outlen, &resp), UPK_OK);
        assert_int_not_equal(resp.error, UPK_OK);
        assert_true(strlen(resp.message) > 0);
        upk_ctl_resp_cleanup(&resp);
        free(out);
    }
    char msg[UPK_ERRMSG_MAX + 1];
    assert_int_equal(call(f, "alice", "operator:alice", "no.such", NULL, NULL, msg),
                     UPK_E_NOT_FOUND);
    assert_int_equal(call(f, "alice", "operator:alice", "device.show", "{\"id\":5}", NULL, msg),
                     UPK_E_FIELD_TYPE);
    assert_int_equal(
        call(f, "alice", "operator:alice", "device.show", "{\"id\":\"../x\"}", NULL, msg),
        UPK_E_ID_INVALID);
    assert_int_equal(call(f, "alice", "operator:alice", "campaign.pause", "{}", NULL, msg),
                     UPK_E_FIELD_MISSING);
}

static void release_upload_checks_signature_and_hash(void **state)
{
    struct fx *f = *state;
    char msg[UPK_ERRMSG_MAX + 1];
    assert_int_equal(upload(f, "alice", 100000, true, msg), UPK_E_HASH_MISMATCH);
    assert_int_equal(upload(f, "alice", 100000, false, msg), UPK_OK);
    assert_int_equal(upload(f, "alice", 100000, false, msg), UPK_E_EXISTS);
    cJSON *data = NULL;
    assert_int_equal(
        call(f, "alice", "operator:alice", "release.show", "{\"id\":\"fw-2.0\"}", &data, NULL),
        UPK_OK);
    assert_int_equal(cJSON_GetObjectItem(data, "size")->valueint, 100000);
    cJSON_Delete(data);
    /* A signature by an unknown key is refused. */
    upk_key *other = NULL;
    assert_int_equal(upk_key_generate(&other), UPK_OK);
    upk_key *keep = f->key;
    f->key = other;
    assert_int_equal(upload(f, "alice", 10, false, msg), UPK_E_KEY_UNKNOWN);
    f->key = keep;
    upk_key_free(other);
    /* A tampered manifest does not verify. */
    assert_int_equal(call(f, "alice", "operator:alice", "release.upload.begin",
                          "{\"manifest\":\"{}\",\"sig\":\"AAAA\",\"key_id\":\"00\"}", NULL, msg),
                     UPK_E_KEY_UNKNOWN);
}

static void campaign_commands_follow_state_rules(void **state)
{
    struct fx *f = *state;
    char msg[UPK_ERRMSG_MAX + 1];
    for (int i = 0; i < 10; i++) {
        char id[16];
        int r = snprintf(id, sizeof(id), "d%d", i);
        (void)r;
        add_device(f, id, i < 8 ? "hw-a" : "hw-b");
    }
    assert_int_equal(upload(f, "alice", 1000, false, msg), UPK_OK);
    assert_int_equal(call(f, "alice", "operator:alice", "campaign.create",
                          "{\"release\":\"fw-2.0\",\"stages\":\"bogus\"}", NULL, msg),
                     UPK_E_FIELD_RANGE);
    assert_int_equal(
        call(f, "alice", "operator:alice", "campaign.create", "{\"release\":\"nope\"}", NULL, msg),
        UPK_E_NOT_FOUND);
    assert_int_equal(call(f, "alice", "operator:alice", "campaign.create",
                          "{\"release\":\"fw-2.0\",\"target\":\"color=red\"}", NULL, msg),
                     UPK_E_FIELD_RANGE);
    assert_non_null(strstr(msg, "color"));
    cJSON *data = NULL;
    assert_int_equal(call(f, "alice", "operator:alice", "campaign.create",
                          "{\"release\":\"fw-2.0\",\"id\":\"c1\",\"stages\":\"10%,100%\","
                          "\"target\":\"id=d*\",\"auto_rollback\":true}",
                          &data, msg),
                     UPK_OK);
    assert_int_equal(cJSON_GetObjectItem(data, "devices")->valueint, 8);
    assert_int_equal(cJSON_GetObjectItem(data, "incompatible")->valueint, 2);
    cJSON_Delete(data);
    /* Devices busy in c1 are not taken by a second campaign. */
    assert_int_equal(call(f, "alice", "operator:alice", "campaign.create",
                          "{\"release\":\"fw-2.0\",\"id\":\"c2\"}", NULL, msg),
                     UPK_E_NOT_FOUND);
    assert_non_null(strstr(msg, "8 busy"));
    assert_int_equal(
        call(f, "alice", "operator:alice", "campaign.resume", "{\"id\":\"c1\"}", NULL, msg),
        UPK_E_STATE_INVALID);
    assert_non_null(strstr(msg, "running"));
    assert_int_equal(call(f, "alice", "operator:alice", "campaign.pause",
                          "{\"id\":\"c1\",\"reason\":\"lunch\"}", NULL, NULL),
                     UPK_OK);
    assert_int_equal(
        call(f, "alice", "operator:alice", "campaign.show", "{\"id\":\"c1\"}", &data, NULL),
        UPK_OK);
    assert_string_equal(cJSON_GetObjectItem(data, "state")->valuestring, "paused");
    assert_non_null(strstr(cJSON_GetObjectItem(data, "reason")->valuestring, "lunch"));
    cJSON_Delete(data);
    assert_int_equal(
        call(f, "alice", "operator:alice", "campaign.resume", "{\"id\":\"c1\"}", NULL, NULL),
        UPK_OK);
    assert_int_equal(
        call(f, "alice", "operator:alice", "campaign.abort", "{\"id\":\"c1\"}", NULL, NULL),
        UPK_OK);
    assert_int_equal(
        call(f, "alice", "operator:alice", "campaign.abort", "{\"id\":\"c1\"}", NULL, msg),
        UPK_E_STATE_INVALID);
    assert_int_equal(call(f, "alice", "operator:alice", "campaign.list", NULL, &data, NULL),
                     UPK_OK);
    assert_int_equal(cJSON_GetArraySize(data), 1);
    cJSON_Delete(data);
    assert_int_equal(call(f, "alice", "operator:alice", "audit.list", NULL, &data, NULL), UPK_OK);
    assert_true(cJSON_GetArraySize(data) >= 5);
    cJSON_Delete(data);
    assert_int_equal(
        call(f, "alice", "operator:alice", "report.posture", "{\"days\":0}", &data, NULL), UPK_OK);
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(data, "summary"), "total")->valueint,
                     10);
    assert_int_equal(
        cJSON_GetObjectItem(cJSON_GetObjectItem(data, "summary"), "unpatched")->valueint, 8);
    cJSON_Delete(data);
}

static void campaign_health_gate_options(void **state)
{
    struct fx *f = *state;
    char msg[UPK_ERRMSG_MAX + 1];
    add_device(f, "d0", "hw-a");
    assert_int_equal(upload(f, "alice", 1000, false, msg), UPK_OK);
    static const char *const bad[] = {
        "{\"release\":\"fw-2.0\",\"bake\":\"soon\"}",
        "{\"release\":\"fw-2.0\",\"bake\":\"5m\",\"max_unhealthy\":\"lots\"}",
        "{\"release\":\"fw-2.0\",\"bake\":\"5m\",\"restart_limit\":-1}",
        "{\"release\":\"fw-2.0\",\"bake\":\"5m\",\"baseline_factor\":0.5}",
        "{\"release\":\"fw-2.0\",\"compare_baseline\":true}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(call(f, "alice", "operator:alice", "campaign.create", bad[i], NULL, msg),
                         UPK_E_FIELD_RANGE);
        assert_non_null(strstr(msg, "--"));
    }
    assert_int_equal(call(f, "alice", "operator:alice", "campaign.create",
                          "{\"release\":\"fw-2.0\",\"bake\":\"5m\",\"compare_baseline\":1}", NULL,
                          msg),
                     UPK_E_FIELD_TYPE);
    cJSON *data = NULL;
    assert_int_equal(call(f, "alice", "operator:alice", "campaign.create",
                          "{\"release\":\"fw-2.0\",\"id\":\"cg\",\"bake\":\"5m\","
                          "\"max_unhealthy\":\"2.5%\",\"restart_limit\":2,"
                          "\"compare_baseline\":true,\"baseline_factor\":1.25}",
                          &data, msg),
                     UPK_OK);
    cJSON_Delete(data);
    assert_int_equal(
        call(f, "alice", "operator:alice", "campaign.show", "{\"id\":\"cg\"}", &data, NULL),
        UPK_OK);
    assert_int_equal(cJSON_GetObjectItem(data, "bake_s")->valueint, 300);
    assert_int_equal(cJSON_GetObjectItem(data, "max_unhealthy_bp")->valueint, 250);
    assert_int_equal(cJSON_GetObjectItem(data, "restart_limit")->valueint, 2);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(data, "compare_baseline")));
    assert_true(cJSON_GetObjectItem(data, "baseline_factor")->valuedouble == 1.25);
    assert_null(cJSON_GetObjectItem(data, "gate")); /* stage not done: no bake line */
    cJSON_Delete(data);
    /* Stage done 60 s before now (1000000 ms), d0 committed and restarted 5 times. */
    assert_int_equal(sqlite3_exec(upk_store_db(f->s),
                                  "UPDATE campaigns SET stage_done_ms=940000 WHERE id='cg';"
                                  "UPDATE campaign_devices SET state='succeeded' WHERE"
                                  " campaign='cg'",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    upk_event_msg e;
    memset(&e, 0, sizeof(e));
    int r = snprintf(e.campaign, sizeof(e.campaign), "cg");
    (void)r;
    e.health.present = true;
    e.health.restarts = 5;
    e.health.check_ok = -1; /* not run */
    assert_int_equal(upk_store_health_record(f->s, "d0", &e, 950000), UPK_OK);
    assert_int_equal(
        call(f, "alice", "operator:alice", "campaign.show", "{\"id\":\"cg\"}", &data, NULL),
        UPK_OK);
    assert_string_equal(cJSON_GetObjectItem(data, "gate")->valuestring,
                        "bake 4m00s left: 1/1 unhealthy (1 restart loop)");
    cJSON_Delete(data);
}

static void target_expressions(void **state)
{
    (void)state;
    char where[512], copy[600], why[200];
    const char *b[8];
    size_t nb = 99;
    assert_int_equal(upk_ctl_target_sql("all", where, sizeof(where), copy, sizeof(copy), b, &nb,
                                        why, sizeof(why)),
                     UPK_OK);
    assert_int_equal(nb, 0);
    assert_int_equal(upk_ctl_target_sql("hw=a,version=1.0,id=x*,group=g,online=1", where,
                                        sizeof(where), copy, sizeof(copy), b, &nb, why,
                                        sizeof(why)),
                     UPK_OK);
    assert_int_equal(nb, 5);
    assert_string_equal(b[2], "x*");
    assert_non_null(strstr(where, "id GLOB ?"));
    const char *bad[] = {"hw", "=x", "hw=", "nope=1", "online=yes", "hw=a;DROP"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        upk_err e = upk_ctl_target_sql(bad[i], where, sizeof(where), copy, sizeof(copy), b, &nb,
                                       why, sizeof(why));
        /* "hw=a;DROP" is a harmless bound value, not SQL. */
        if (strcmp(bad[i], "hw=a;DROP") == 0)
            assert_int_equal(e, UPK_OK);
        else
            assert_int_equal(e, UPK_E_FIELD_RANGE);
    }
}

/* Attack 4 (issue 23): a device the controller counts as `succeeded` that
 * reports another release (a replayed older one) is flagged as drift in
 * `devices` (list and show), `campaign show`/`watch` and the posture report. */
static void drift_is_shown_in_devices_campaign_and_posture(void **state)
{
    struct fx *f = *state;
    char msg[UPK_ERRMSG_MAX + 1];
    add_device(f, "d0", "hw-a");
    add_device(f, "d1", "hw-a");
    assert_int_equal(upload(f, "alice", 1000, false, msg), UPK_OK);
    assert_int_equal(call(f, "alice", "operator:alice", "campaign.create",
                          "{\"release\":\"fw-2.0\",\"id\":\"c1\",\"stages\":\"100%\"}", NULL, msg),
                     UPK_OK);
    /* Both were given fw-2.0 and counted as succeeded. */
    assert_int_equal(sqlite3_exec(upk_store_db(f->s),
                                  "UPDATE devices SET desired_release='fw-2.0',"
                                  " desired_campaign='c1';"
                                  "UPDATE campaign_devices SET state='succeeded', assigned_ms=5,"
                                  " done_ms=6 WHERE campaign='c1'",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    const char *ver[] = {"2.0", "1.0"}; /* d1 runs 1.0 again */
    for (int i = 0; i < 2; i++) {
        upk_state_msg m;
        memset(&m, 0, sizeof(m));
        int r = snprintf(m.device, sizeof(m.device), "d%d", i);
        r = snprintf(m.hw, sizeof(m.hw), "hw-a");
        r = snprintf(m.release, sizeof(m.release), "fw");
        r = snprintf(m.version, sizeof(m.version), "%s", ver[i]);
        r = snprintf(m.campaign, sizeof(m.campaign), "c1");
        (void)r;
        m.status = UPK_STATUS_COMMITTED;
        m.ts = 100;
        assert_int_equal(upk_store_device_state(f->s, &m, 2), UPK_OK);
    }
    cJSON *data = NULL;
    assert_int_equal(call(f, "alice", "operator:alice", "device.list", NULL, &data, NULL), UPK_OK);
    assert_int_equal(cJSON_GetArraySize(data), 2);
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(data, 0), "drift")->valueint, 0);
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(data, 1), "drift")->valueint, 1);
    cJSON_Delete(data);
    assert_int_equal(
        call(f, "alice", "operator:alice", "device.show", "{\"id\":\"d1\"}", &data, NULL), UPK_OK);
    assert_int_equal(cJSON_GetObjectItem(data, "drift")->valueint, 1);
    cJSON_Delete(data);
    assert_int_equal(
        call(f, "alice", "operator:alice", "campaign.show", "{\"id\":\"c1\"}", &data, NULL),
        UPK_OK);
    assert_int_equal(cJSON_GetObjectItem(data, "drift")->valueint, 1);
    assert_int_equal(
        cJSON_GetObjectItem(cJSON_GetObjectItem(data, "counts"), "succeeded")->valueint, 2);
    cJSON_Delete(data);
    assert_int_equal(call(f, "alice", "operator:alice", "report.posture", NULL, &data, NULL),
                     UPK_OK);
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(data, "summary"), "drift")->valueint,
                     1);
    cJSON *list = cJSON_GetObjectItem(data, "drift");
    assert_int_equal(cJSON_GetArraySize(list), 1);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(list, 0), "id")->valuestring, "d1");
    assert_string_equal(
        cJSON_GetObjectItem(cJSON_GetArrayItem(list, 0), "desired_release")->valuestring, "fw-2.0");
    cJSON_Delete(data);
}

static void config_names_the_bad_field(void **state)
{
    (void)state;
    upk_serve_config c;
    char why[256];
    struct {
        const char *json, *field;
    } cases[] = {
        {"[]", "not a JSON object"},
        {"{}", "data_dir"},
        {"{\"data_dir\":\"/tmp/x\"}", "broker"},
        {"{\"data_dir\":\"/tmp/x\",\"broker\":\"http://x\"}", "broker"},
        {"{\"data_dir\":\"/tmp/x\",\"broker\":\"tcp://127.0.0.1:1\"}", "release_keys"},
        {"{\"data_dir\":\"/tmp/x\",\"broker\":\"tcp://127.0.0.1:1\",\"release_keys\":[\"/no\"]}",
         "release_keys"},
        {"{\"data_dir\":\"/tmp/x\",\"broker\":\"tcp://127.0.0.1:1\",\"tick_ms\":1}", "tick_ms"},
        {"{\"data_dir\":\"/tmp/x\",\"broker\":\"tcp://127.0.0.1:1\",\"username\":\"a b\"}",
         "username"},
        {"{\"data_dir\":\"/tmp/x\",\"broker\":\"tcp://127.0.0.1:1\",\"password_file\":\"/no\"}",
         "password_file"},
        {"{\"data_dir\":\"/tmp/x\",\"broker\":\"tcp://127.0.0.1:1\",\"topic_prefix\":\"a/#\"}",
         "topic_prefix"},
        {"{\"data_dir\":\"/tmp/x\",\"broker\":\"tcp://127.0.0.1:1\",\"readonly_operators\":[1]}",
         "readonly_operators"},
        {"{\"data_dir\":\"/tmp/x\",\"broker\":\"tcp://127.0.0.1:1\",\"retention\":7}", "retention"},
        {"{\"data_dir\":\"/tmp/x\",\"broker\":\"tcp://127.0.0.1:1\","
         "\"retention\":{\"events_days\":-1}}",
         "retention"},
        {"{\"data_dir\":\"/tmp/x\",\"broker\":\"tcp://127.0.0.1:1\","
         "\"retention\":{\"health_days\":1.5}}",
         "retention"},
        {"{\"data_dir\":\"/tmp/x\",\"broker\":\"tcp://127.0.0.1:1\","
         "\"retention\":{\"events_per_device\":-5}}",
         "events_per_device"},
        {"{\"data_dir\":\"/tmp/x\",\"broker\":\"tcp://127.0.0.1:1\",\"link_secret_file\":\"/no\"}",
         "link_secret_file"},
        {"{\"data_dir\":\"/tmp/x\",\"broker\":\"tcp://127.0.0.1:1\",\"link_secret_file\":7}",
         "link_secret_file"},
        {"{\"data_dir\":\"/tmp/x\",\"broker\":\"tcp://127.0.0.1:1\",\"require_device_auth\":1}",
         "require_device_auth"},
        {"{\"data_dir\":\"/tmp/x\",\"broker\":\"tcp://127.0.0.1:1\",\"require_device_auth\":true}",
         "require_device_auth"},
        {"{\"data_dir\":\"/tmp/x\",\"broker\":\"tcp://127.0.0.1:1\",\"desired_refresh_s\":59}",
         "desired_refresh_s"},
        {"{\"data_dir\":\"/tmp/x\",\"broker\":\"tcp://127.0.0.1:1\",\"desired_refresh_s\":60.5}",
         "desired_refresh_s"},
        {"{\"data_dir\":\"/tmp/x\",\"broker\":\"tcp://127.0.0.1:1\",\"desired_refresh_s\":\"1\"}",
         "desired_refresh_s"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(
            upk_serve_config_parse(cases[i].json, strlen(cases[i].json), &c, why, sizeof(why)),
            UPK_E_CONFIG_INVALID);
        assert_non_null(strstr(why, cases[i].field));
    }
}

/* Issue 16 item 10: as strict as the broker plugin. A misspelt field is
 * named (with the field it most likely meant), a syntax error gives its
 * line and column, and a private key listed in release_keys is refused as
 * such. */
static void config_is_as_strict_as_the_plugin(void **state)
{
    (void)state;
    upk_serve_config c;
    char why[512];
    const char *typo = "{\"data_dir\":\"/tmp/x\",\"broker\":\"tcp://127.0.0.1:1\","
                       "\"pasword_file\":\"/etc/upkeep/controller.password\"}";
    assert_int_equal(upk_serve_config_parse(typo, strlen(typo), &c, why, sizeof(why)),
                     UPK_E_CONFIG_INVALID);
    assert_string_equal(why, "pasword_file: unknown field (did you mean 'password_file'?)");
    const char *odd = "{\"data_dir\":\"/tmp/x\",\"colour\":1}";
    assert_int_equal(upk_serve_config_parse(odd, strlen(odd), &c, why, sizeof(why)),
                     UPK_E_CONFIG_INVALID);
    assert_string_equal(why, "colour: unknown field");
    const char *nested = "{\"data_dir\":\"/tmp/x\",\"broker\":\"tcp://127.0.0.1:1\","
                         "\"retention\":{\"event_days\":7}}";
    assert_int_equal(upk_serve_config_parse(nested, strlen(nested), &c, why, sizeof(why)),
                     UPK_E_CONFIG_INVALID);
    assert_non_null(strstr(why, "retention.event_days: unknown field"));
    const char *comma = "{\n  \"data_dir\": \"/tmp/x\"\n  \"broker\": \"tcp://h:1\"\n}\n";
    assert_int_equal(upk_serve_config_parse(comma, strlen(comma), &c, why, sizeof(why)),
                     UPK_E_CONFIG_INVALID);
    assert_non_null(strstr(why, "line 3, column 3: JSON syntax error"));
    const char *cut = "{\n  \"data_dir\": \"/tmp/x\",\n";
    assert_int_equal(upk_serve_config_parse(cut, strlen(cut), &c, why, sizeof(why)),
                     UPK_E_CONFIG_INVALID);
    assert_non_null(strstr(why, "line 3, column 1: JSON syntax error (the file ends too early"));

    char dir[] = "/tmp/upk-cfg-XXXXXX", path[64], json[512];
    assert_non_null(mkdtemp(dir));
    upk_key *k = NULL;
    char *pem = NULL;
    assert_int_equal(upk_key_generate(&k), UPK_OK);
    assert_int_equal(upk_key_private_pem(k, &pem), UPK_OK);
    (void)snprintf(path, sizeof(path), "%s/release.key", dir);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    assert_int_equal(fwrite(pem, 1, strlen(pem), fp), strlen(pem));
    fclose(fp);
    (void)snprintf(json, sizeof(json),
                   "{\"data_dir\":\"/tmp/x\",\"broker\":\"tcp://127.0.0.1:1\","
                   "\"release_keys\":[\"%s\"]}",
                   path);
    assert_int_equal(upk_serve_config_parse(json, strlen(json), &c, why, sizeof(why)),
                     UPK_E_CONFIG_INVALID);
    assert_non_null(strstr(why, "release_keys: "));
    assert_non_null(strstr(why, "release.key is a private key"));
    unlink(path);
    rmdir(dir);
    free(pem);
    upk_key_free(k);
}

/* The CLI's ~/.config/upkeep/cli.json is as strict as serve.json: a typo is
 * named and stops every remote command before it connects. */
static void cli_json_is_as_strict_as_the_plugin(void **state)
{
    (void)state;
    char home[] = "/tmp/upk-home-XXXXXX", dir[128], path[160];
    assert_non_null(mkdtemp(home));
    (void)snprintf(dir, sizeof(dir), "%s/.config", home);
    assert_int_equal(mkdir(dir, 0700), 0);
    (void)snprintf(dir, sizeof(dir), "%s/.config/upkeep", home);
    assert_int_equal(mkdir(dir, 0700), 0);
    (void)snprintf(path, sizeof(path), "%s/cli.json", dir);
    const char *old_home = getenv("HOME");
    char saved[512] = "";
    if (old_home != NULL)
        (void)snprintf(saved, sizeof(saved), "%s", old_home);
    assert_int_equal(setenv("HOME", home, 1), 0);
    static const struct {
        const char *json, *msg;
    } cases[] = {
        {"{\"broker\": \"tcp://127.0.0.1:1\", \"user\": \"alice\", \"pasword_file\": \"/p\"}",
         "cli.json: pasword_file: unknown field (did you mean 'password_file'?)"},
        {"{\"broker\": \"tcp://127.0.0.1:1\",\n \"user\": \"alice\"\n \"prefix\": \"x\"}",
         "cli.json: line 3, column 2: JSON syntax error"},
        {"{\"user\": 7}", "cli.json: user: must be a non-empty string"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        FILE *fp = fopen(path, "w");
        assert_non_null(fp);
        fputs(cases[i].json, fp);
        fclose(fp);
        upk_client_cfg cfg;
        upk_client_cfg_init(&cfg);
        upk_client *cl = NULL;
        char why[1024];
        assert_int_equal(upk_client_connect(&cfg, &cl, why, sizeof(why)), UPK_E_CONFIG_INVALID);
        assert_null(cl);
        if (strstr(why, cases[i].msg) == NULL || strstr(why, home) == NULL)
            fail_msg("case %zu: '%s'", i, why);
    }
    /* The example file is accepted as it is. */
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs("{\"broker\": \"tcp://broker.example.internal:1883\", \"user\": \"alice\", "
          "\"password_file\": \"/p\", \"prefix\": \"upkeep/v1\"}",
          fp);
    fclose(fp);
    upk_client_cfg cfg;
    upk_client_cfg_init(&cfg);
    assert_string_equal(cfg.file_error, "");
    assert_string_equal(cfg.user, "alice");
    unlink(path);
    rmdir(dir);
    (void)snprintf(dir, sizeof(dir), "%s/.config", home);
    rmdir(dir);
    rmdir(home);
    if (old_home != NULL)
        assert_int_equal(setenv("HOME", saved, 1), 0);
    else
        assert_int_equal(unsetenv("HOME"), 0);
}

/* link_secret_file is read like the broker's fleet secret (trailing
 * newlines cut, at least 16 bytes); require_device_auth needs it. */
static void config_reads_the_link_secret(void **state)
{
    (void)state;
    char dir[] = "/tmp/upk-ctl-cfg-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char pub[300], sec[300], shortsec[300], json[1400], why[256];
    int r = snprintf(pub, sizeof(pub), "%s/pub.pem", dir);
    r = snprintf(sec, sizeof(sec), "%s/link.secret", dir);
    r = snprintf(shortsec, sizeof(shortsec), "%s/short.secret", dir);
    upk_key *k = NULL;
    assert_int_equal(upk_key_generate(&k), UPK_OK);
    char *pem = NULL;
    assert_int_equal(upk_key_public_pem(k, &pem), UPK_OK);
    upk_key_free(k);
    FILE *fp = fopen(pub, "w");
    assert_non_null(fp);
    fputs(pem, fp);
    fclose(fp);
    free(pem);
    fp = fopen(sec, "w");
    assert_non_null(fp);
    fputs("link-secret-0123456789\r\n", fp);
    fclose(fp);
    fp = fopen(shortsec, "w");
    assert_non_null(fp);
    fputs("fifteen-bytes..\n", fp);
    fclose(fp);
    upk_serve_config c;
    r = snprintf(json, sizeof(json),
                 "{\"data_dir\":\"%s\",\"broker\":\"tcp://127.0.0.1:1\",\"release_keys\":[\"%s\"],"
                 "\"link_secret_file\":\"%s\",\"require_device_auth\":true,"
                 "\"desired_refresh_s\":600}",
                 dir, pub, sec);
    assert_int_equal(upk_serve_config_parse(json, strlen(json), &c, why, sizeof(why)), UPK_OK);
    assert_int_equal(c.link_secret_len, 22);
    assert_memory_equal(c.link_secret, "link-secret-0123456789", 22);
    assert_true(c.require_device_auth);
    assert_int_equal(c.desired_refresh_s, 600);
    upk_serve_config_cleanup(&c);
    assert_int_equal(c.link_secret_len, 0);
    r = snprintf(json, sizeof(json),
                 "{\"data_dir\":\"%s\",\"broker\":\"tcp://127.0.0.1:1\",\"release_keys\":[\"%s\"]}",
                 dir, pub);
    assert_int_equal(upk_serve_config_parse(json, strlen(json), &c, why, sizeof(why)), UPK_OK);
    assert_int_equal(c.link_secret_len, 0);
    assert_false(c.require_device_auth);
    assert_int_equal(c.desired_refresh_s, UPK_DESIRED_REFRESH_S);
    upk_serve_config_cleanup(&c);
    r = snprintf(json, sizeof(json),
                 "{\"data_dir\":\"%s\",\"broker\":\"tcp://127.0.0.1:1\",\"release_keys\":[\"%s\"],"
                 "\"link_secret_file\":\"%s\"}",
                 dir, pub, shortsec);
    (void)r;
    assert_int_equal(upk_serve_config_parse(json, strlen(json), &c, why, sizeof(why)),
                     UPK_E_CONFIG_INVALID);
    assert_non_null(strstr(why, "link_secret_file"));
    assert_non_null(strstr(why, "16"));
    char cmd[400];
    r = snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    r = system(cmd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(config_is_as_strict_as_the_plugin),
        cmocka_unit_test(cli_json_is_as_strict_as_the_plugin),
        cmocka_unit_test_setup_teardown(ping_answers_operators_and_admins, setup, teardown),
        cmocka_unit_test_setup_teardown(forged_or_foreign_senders_are_denied, setup, teardown),
        cmocka_unit_test_setup_teardown(readonly_operator_may_read_only, setup, teardown),
        cmocka_unit_test_setup_teardown(malformed_requests_get_error_replies, setup, teardown),
        cmocka_unit_test_setup_teardown(release_upload_checks_signature_and_hash, setup, teardown),
        cmocka_unit_test_setup_teardown(campaign_commands_follow_state_rules, setup, teardown),
        cmocka_unit_test_setup_teardown(campaign_health_gate_options, setup, teardown),
        cmocka_unit_test_setup_teardown(drift_is_shown_in_devices_campaign_and_posture, setup,
                                        teardown),
        cmocka_unit_test(target_expressions),
        cmocka_unit_test(config_names_the_bad_field),
        cmocka_unit_test(config_reads_the_link_secret),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
