/* Unit tests of the controller's side of a release upload that can be resumed
 * and whose chunks may arrive twice or out of order (controller/src/ctl.c,
 * release.upload.*): the same operator resumes at the offset received so
 * far, anyone else gets BUSY, a chunk sent again is skipped, a chunk after a
 * lost one is refused and changes nothing, an abandoned upload expires. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "config.h"
#include "ctl.h"
#include "store.h"
#include "upkeep/hash.h"
#include "upkeep/key.h"
#include "upkeep/manifest.h"
#include "upkeep/msg.h"

#define ART_LEN (3 * UPK_UPLOAD_CHUNK_MAX + 1000)
#define NOW_MS  1000000

struct fx {
    char dir[256];
    upk_store *s;
    upk_serve_config cfg;
    upk_ctl *ctl;
    upk_key *key;
    uint8_t art[ART_LEN];
    char *begin_args;
};

static void on_changed(const char *device, void *ud)
{
    (void)device;
    (void)ud;
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return -1;
    int r = snprintf(f->dir, sizeof(f->dir), "/tmp/upk-upload-test-XXXXXX");
    (void)r;
    if (mkdtemp(f->dir) == NULL || upk_store_open(f->dir, &f->s) != UPK_OK ||
        upk_key_generate(&f->key) != UPK_OK || upk_keyring_new(&f->cfg.ring) != UPK_OK ||
        upk_keyring_add(f->cfg.ring, f->key) != UPK_OK ||
        upk_ctl_new(f->s, &f->cfg, on_changed, f, &f->ctl) != UPK_OK)
        return -1;
    for (size_t i = 0; i < ART_LEN; i++)
        f->art[i] = (uint8_t)(i * 13 + (i >> 9));
    /* The signed manifest of the artifact, as `release import` sends it. */
    upk_manifest m;
    memset(&m, 0, sizeof(m));
    r = snprintf(m.name, sizeof(m.name), "fw");
    r = snprintf(m.version, sizeof(m.version), "3.0");
    r = snprintf(m.hw[0], sizeof(m.hw[0]), "hw-a");
    r = snprintf(m.module, sizeof(m.module), "file");
    m.hw_count = 1;
    m.size = m.target_size = ART_LEN;
    upk_sha256_buf(f->art, ART_LEN, m.sha256);
    memcpy(m.target_sha256, m.sha256, 32);
    m.created = 1;
    m.expires = 4000000000;
    char *json = NULL;
    size_t jlen = 0, siglen = 0, blen = 0;
    uint8_t sig[UPK_SIG_MAX];
    char b64[200];
    if (upk_manifest_encode(&m, &json, &jlen) != UPK_OK ||
        upk_manifest_sign(f->key, json, jlen, sig, &siglen) != UPK_OK ||
        upk_base64_encode(sig, siglen, b64, sizeof(b64), &blen) != UPK_OK)
        return -1;
    cJSON *a = cJSON_CreateObject();
    cJSON_AddStringToObject(a, "manifest", json);
    cJSON_AddStringToObject(a, "sig", b64);
    cJSON_AddStringToObject(a, "key_id", upk_key_id(f->key));
    f->begin_args = cJSON_PrintUnformatted(a);
    cJSON_Delete(a);
    free(json);
    *state = f;
    return f->begin_args != NULL ? 0 : -1;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    upk_ctl_free(f->ctl);
    upk_store_close(f->s);
    upk_serve_config_cleanup(&f->cfg);
    upk_key_free(f->key);
    free(f->begin_args);
    char cmd[512];
    int r = snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    r = system(cmd);
    (void)r;
    free(f);
    return 0;
}

/* Sends cmd with args (cJSON, borrowed) from operator op at now_ms; returns
 * the reply's error, its data in *data (may be NULL) and message in msg. */
static upk_err call(struct fx *f, const char *op, const char *cmd, const cJSON *args,
                    int64_t now_ms, cJSON **data, char *msg)
{
    upk_ctl_req req;
    memset(&req, 0, sizeof(req));
    char sender[64];
    int r = snprintf(req.id, sizeof(req.id), "req-1");
    r = snprintf(req.cmd, sizeof(req.cmd), "%s", cmd);
    r = snprintf(sender, sizeof(sender), "operator:%s", op);
    (void)r;
    req.args = (cJSON *)args;
    char *json = NULL, *out = NULL;
    size_t len = 0, outlen = 0;
    assert_int_equal(upk_ctl_req_encode(&req, &json, &len), UPK_OK);
    assert_true(len <= 65536);
    assert_int_equal(
        upk_ctl_handle(f->ctl, op, sender, (const uint8_t *)json, len, now_ms, &out, &outlen),
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

/* release.upload.begin as op; fills the upload id and the offset to send from. */
static upk_err begin(struct fx *f, const char *op, int64_t now_ms, char *up, size_t upcap,
                     uint64_t *offset, char *msg)
{
    cJSON *a = cJSON_Parse(f->begin_args), *data = NULL;
    assert_non_null(a);
    upk_err err = call(f, op, "release.upload.begin", a, now_ms, &data, msg);
    cJSON_Delete(a);
    if (err == UPK_OK) {
        int r =
            snprintf(up, upcap, "%s", cJSON_GetStringValue(cJSON_GetObjectItem(data, "upload")));
        (void)r;
        *offset = (uint64_t)cJSON_GetNumberValue(cJSON_GetObjectItem(data, "offset"));
        assert_int_equal((int)cJSON_GetNumberValue(cJSON_GetObjectItem(data, "chunk_max")),
                         UPK_UPLOAD_CHUNK_MAX);
        assert_int_equal((int)cJSON_GetNumberValue(cJSON_GetObjectItem(data, "size")), ART_LEN);
    }
    cJSON_Delete(data);
    return err;
}

/* Sends art[off, off+n) as one chunk; *received is the controller's count
 * after it (untouched on an error). */
static upk_err chunk(struct fx *f, const char *op, const char *up, size_t off, size_t n,
                     uint64_t *received, char *msg)
{
    static char b64[UPK_UPLOAD_CHUNK_MAX * 2];
    size_t blen = 0;
    assert_int_equal(upk_base64_encode(f->art + off, n, b64, sizeof(b64), &blen), UPK_OK);
    cJSON *a = cJSON_CreateObject(), *data = NULL;
    cJSON_AddStringToObject(a, "upload", up);
    cJSON_AddNumberToObject(a, "offset", (double)off);
    cJSON_AddStringToObject(a, "data", b64);
    upk_err err = call(f, op, "release.upload.chunk", a, NOW_MS, &data, msg);
    cJSON_Delete(a);
    if (err == UPK_OK)
        *received = (uint64_t)cJSON_GetNumberValue(cJSON_GetObjectItem(data, "received"));
    cJSON_Delete(data);
    return err;
}

static upk_err end(struct fx *f, const char *up, char *msg)
{
    cJSON *a = cJSON_CreateObject();
    cJSON_AddStringToObject(a, "upload", up);
    upk_err err = call(f, "alice", "release.upload.end", a, NOW_MS, NULL, msg);
    cJSON_Delete(a);
    return err;
}

static void upload_resumes_for_the_same_operator_only(void **state)
{
    struct fx *f = *state;
    char msg[UPK_ERRMSG_MAX + 1], up[80], up2[80];
    uint64_t off = 99, got = 0;
    const size_t C = UPK_UPLOAD_CHUNK_MAX;
    assert_int_equal(begin(f, "alice", NOW_MS, up, sizeof(up), &off, msg), UPK_OK);
    assert_int_equal(off, 0);
    assert_int_equal(chunk(f, "alice", up, 0, C, &got, msg), UPK_OK);
    assert_int_equal(got, C);
    /* The CLI was killed here; run again, it gets the same upload and the
     * offset to go on from, not BUSY. */
    assert_int_equal(begin(f, "alice", NOW_MS + 1000, up2, sizeof(up2), &off, msg), UPK_OK);
    assert_string_equal(up2, up);
    assert_int_equal(off, C);
    /* Another operator may not take it over. */
    assert_int_equal(begin(f, "bob", NOW_MS, up2, sizeof(up2), &off, msg), UPK_E_BUSY);
    assert_non_null(strstr(msg, "being uploaded by 'alice'"));
    /* A chunk after a lost one is refused and changes nothing. */
    assert_int_equal(chunk(f, "alice", up, 2 * C, C, &got, msg), UPK_E_FIELD_RANGE);
    assert_non_null(strstr(msg, "offset must be"));
    /* A chunk sent again (its reply was lost) is acknowledged, not written twice. */
    got = 0;
    assert_int_equal(chunk(f, "alice", up, 0, C, &got, msg), UPK_OK);
    assert_int_equal(got, C);
    /* One that overlaps what was received adds only its new part. */
    assert_int_equal(chunk(f, "alice", up, C / 2, C, &got, msg), UPK_OK);
    assert_int_equal(got, C + C / 2);
    for (size_t o = (size_t)got; o < ART_LEN; o += C) {
        size_t n = ART_LEN - o < C ? ART_LEN - o : C;
        assert_int_equal(chunk(f, "alice", up, o, n, &got, msg), UPK_OK);
        assert_int_equal(got, o + n);
    }
    /* The stored artifact is exactly the signed one (the hash is checked). */
    assert_int_equal(end(f, up, msg), UPK_OK);
}

static void abandoned_upload_expires(void **state)
{
    struct fx *f = *state;
    char msg[UPK_ERRMSG_MAX + 1], up[80], up2[80];
    uint64_t off = 0, got = 0;
    assert_int_equal(begin(f, "alice", NOW_MS, up, sizeof(up), &off, msg), UPK_OK);
    assert_int_equal(chunk(f, "alice", up, 0, 1000, &got, msg), UPK_OK);
    upk_ctl_expire(f->ctl, NOW_MS + UPK_UPLOAD_IDLE_MS); /* not yet */
    assert_int_equal(begin(f, "bob", NOW_MS, up2, sizeof(up2), &off, msg), UPK_E_BUSY);
    upk_ctl_expire(f->ctl, NOW_MS + UPK_UPLOAD_IDLE_MS + 1);
    /* Gone: its chunks are refused, and anyone may start the release anew. */
    assert_int_equal(chunk(f, "alice", up, 1000, 1000, &got, msg), UPK_E_NOT_FOUND);
    assert_int_equal(begin(f, "bob", NOW_MS + UPK_UPLOAD_IDLE_MS + 2, up2, sizeof(up2), &off, msg),
                     UPK_OK);
    assert_string_not_equal(up2, up);
    assert_int_equal(off, 0);
}

static void chunk_request_fits_the_operator_payload_limit(void **state)
{
    /* The largest chunk, with the longest offset and ids the CLI sends, must
     * stay within 65536 bytes (the plugin's default max_payload_bytes). */
    (void)state;
    static uint8_t raw[UPK_UPLOAD_CHUNK_MAX];
    static char b64[UPK_UPLOAD_CHUNK_MAX * 2];
    size_t blen = 0;
    assert_int_equal(upk_base64_encode(raw, sizeof(raw), b64, sizeof(b64), &blen), UPK_OK);
    upk_ctl_req req;
    memset(&req, 0, sizeof(req));
    memset(req.id, 'i', UPK_CORR_MAX);
    int r = snprintf(req.cmd, sizeof(req.cmd), "release.upload.chunk");
    (void)r;
    req.args = cJSON_CreateObject();
    char upid[UPK_ID_MAX + 1];
    memset(upid, 'u', UPK_ID_MAX);
    upid[UPK_ID_MAX] = '\0';
    cJSON_AddStringToObject(req.args, "upload", upid);
    cJSON_AddNumberToObject(req.args, "offset", 9007199254740991.0);
    cJSON_AddStringToObject(req.args, "data", b64);
    char *json = NULL;
    size_t len = 0;
    assert_int_equal(upk_ctl_req_encode(&req, &json, &len), UPK_OK);
    assert_true(len <= 65536);
    free(json);
    cJSON_Delete(req.args);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(upload_resumes_for_the_same_operator_only, setup, teardown),
        cmocka_unit_test_setup_teardown(abandoned_upload_expires, setup, teardown),
        cmocka_unit_test(chunk_request_fits_the_operator_payload_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
