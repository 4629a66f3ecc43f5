/* libFuzzer target: one operator request through the controller's whole
 * command dispatcher (upk_ctl_handle) against a real store. The store is set
 * up once with a signed release and two devices so that commands reach past
 * their "not found" checks. The first input byte picks the sender stamp
 * (admin, operator, read-only operator, forged or none); the rest is the
 * payload. Every request must get one well-formed reply carrying its error
 * code, and a refused sender must never succeed. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "ctl.h"
#include "store.h"
#include "upkeep/hash.h"
#include "upkeep/key.h"
#include "upkeep/manifest.h"
#include "upkeep/msg.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[64];
static upk_store *store;
static upk_serve_config cfg;
static upk_ctl *ctl;
static upk_key *key;
static int64_t now_ms = 1800000000000;

static void on_changed(const char *device, void *ud)
{
    (void)device;
    (void)ud;
}

static void cleanup(void)
{
    upk_ctl_free(ctl);
    upk_store_close(store);
    upk_serve_config_cleanup(&cfg);
    upk_key_free(key);
    char cmd[128];
    if (dir[0] != '\0' && snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir) > 0 && system(cmd) != 0)
        fprintf(stderr, "fuzz_ctl_handle: cannot remove %s\n", dir);
}

/* Runs one request as admin "root" during setup; returns the reply. */
static cJSON *setup_req(const char *json)
{
    char *out = NULL;
    size_t len = 0;
    if (upk_ctl_handle(ctl, "root", "admin:root", (const uint8_t *)json, strlen(json), now_ms, &out,
                       &len) != UPK_OK)
        abort();
    cJSON *r = cJSON_ParseWithLength(out, len);
    free(out);
    if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "ok"))) {
        fprintf(stderr, "fuzz_ctl_handle: setup request failed: %s\n", json);
        abort();
    }
    return r;
}

/* Uploads release fw-1.0 (16 bytes, hw "hw-1", signed by key). */
static void upload_release(void)
{
    static const uint8_t art[16] = "0123456789abcdef";
    upk_manifest m;
    memset(&m, 0, sizeof(m));
    snprintf(m.name, sizeof(m.name), "fw");
    snprintf(m.version, sizeof(m.version), "1.0");
    m.security_version = 1;
    m.hw_count = 1;
    snprintf(m.hw[0], sizeof(m.hw[0]), "hw-1");
    m.type = UPK_RELEASE_FULL;
    snprintf(m.module, sizeof(m.module), "file");
    m.size = m.target_size = sizeof(art);
    upk_sha256_buf(art, sizeof(art), m.sha256);
    memcpy(m.target_sha256, m.sha256, sizeof(m.sha256));
    m.created = now_ms / 1000 - 60;
    m.expires = now_ms / 1000 + 86400 * 365;
    char *mj = NULL, sig64[128], art64[64];
    size_t ml = 0, siglen = 0, n = 0;
    uint8_t sig[UPK_SIG_MAX];
    if (upk_manifest_encode(&m, &mj, &ml) != UPK_OK ||
        upk_key_sign(key, mj, ml, sig, &siglen) != UPK_OK ||
        upk_base64_encode(sig, siglen, sig64, sizeof(sig64), &n) != UPK_OK ||
        upk_base64_encode(art, sizeof(art), art64, sizeof(art64), &n) != UPK_OK)
        abort();
    cJSON *args = cJSON_CreateObject();
    cJSON *req = cJSON_CreateObject();
    if (args == NULL || req == NULL || cJSON_AddStringToObject(args, "manifest", mj) == NULL ||
        cJSON_AddStringToObject(args, "sig", sig64) == NULL ||
        cJSON_AddStringToObject(args, "key_id", upk_key_id(key)) == NULL ||
        cJSON_AddNumberToObject(req, "v", 1) == NULL ||
        cJSON_AddStringToObject(req, "id", "s1") == NULL ||
        cJSON_AddStringToObject(req, "cmd", "release.upload.begin") == NULL)
        abort();
    cJSON_AddItemToObject(req, "args", args);
    free(mj);
    char *text = cJSON_PrintUnformatted(req);
    cJSON_Delete(req);
    cJSON *r = setup_req(text);
    free(text);
    const char *up = cJSON_GetStringValue(
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(r, "data"), "upload"));
    if (up == NULL)
        abort();
    char buf[512];
    snprintf(buf, sizeof(buf),
             "{\"v\":1,\"id\":\"s2\",\"cmd\":\"release.upload.chunk\",\"args\":{\"upload\":\"%s\","
             "\"offset\":0,\"data\":\"%s\"}}",
             up, art64);
    cJSON_Delete(setup_req(buf));
    snprintf(buf, sizeof(buf),
             "{\"v\":1,\"id\":\"s3\",\"cmd\":\"release.upload.end\",\"args\":{\"upload\":\"%s\"}}",
             up);
    cJSON_Delete(setup_req(buf));
    cJSON_Delete(r);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    snprintf(dir, sizeof(dir), "/tmp/upk-fuzz-ctl-XXXXXX");
    if (mkdtemp(dir) == NULL || upk_store_open(dir, &store) != UPK_OK ||
        upk_key_generate(&key) != UPK_OK || upk_keyring_new(&cfg.ring) != UPK_OK ||
        upk_keyring_add(cfg.ring, key) != UPK_OK)
        abort();
    snprintf(cfg.readonly[0], sizeof(cfg.readonly[0]), "viewer");
    cfg.readonly_count = 1;
    if (upk_ctl_new(store, &cfg, on_changed, NULL, &ctl) != UPK_OK)
        abort();
    atexit(cleanup);
    upload_release();
    for (int i = 0; i < 2; i++) {
        upk_state_msg st;
        memset(&st, 0, sizeof(st));
        snprintf(st.device, sizeof(st.device), "dev-%d", i);
        snprintf(st.hw, sizeof(st.hw), "hw-1");
        st.status = UPK_STATUS_IDLE;
        st.ts = now_ms / 1000;
        if (upk_store_device_state(store, &st, now_ms) != UPK_OK)
            abort();
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > UPK_MSG_MAX + 16)
        return 0;
    static const struct {
        const char *op, *sender;
        bool may;
    } who[] = {
        {"root", "admin:root", true},        {"alice", "operator:alice", true},
        {"viewer", "operator:viewer", true}, {"alice", "operator:mallory", false},
        {"alice", "device:alice", false},    {"alice", "", false},
    };
    size_t w = data[0] % (sizeof(who) / sizeof(who[0]));
    char *out = NULL;
    size_t len = 0;
    now_ms += 1000;
    if (upk_ctl_handle(ctl, who[w].op, who[w].sender, data + 1, size - 1, now_ms, &out, &len) !=
        UPK_OK)
        return 0; /* out of memory: nothing to check */
    upk_ctl_resp resp;
    memset(&resp, 0, sizeof(resp));
    /* The reply must decode as a reply, and a refused sender never succeeds. */
    if (out == NULL || upk_ctl_resp_decode(out, len, &resp) != UPK_OK)
        abort();
    if (!who[w].may && resp.error == UPK_OK)
        abort();
    upk_ctl_resp_cleanup(&resp);
    free(out);
    upk_ctl_expire(ctl, now_ms);
    return 0;
}
