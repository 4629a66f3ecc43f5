/* Unit tests of `upkeep report posture` (issue 16 item 11, posture part):
 * report.posture through upk_ctl_handle on a real store, rendered by the
 * CLI's own text and HTML code (controller/cli_report.c is included here to
 * reach its static renderers). A device on its own hardware's latest release
 * is not behind; a campaign that patched no device has no time to patch
 * ("-" / "n/a", never -1); empty tables say "none"; the last stage label of
 * a chart is not cut off at the right edge. */
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

#include "../../../controller/cli_report.c"
#include "config.h"
#include "ctl.h"
#include "store.h"
#include "upkeep/manifest.h"
#include "upkeep/msg.h"

static void add_rel(upk_store *s, const char *id, const char *hw, uint64_t secver)
{
    upk_manifest m;
    memset(&m, 0, sizeof(m));
    int r = snprintf(m.name, sizeof(m.name), "fw");
    r = snprintf(m.version, sizeof(m.version), "%s", id + 3);
    r = snprintf(m.hw[0], sizeof(m.hw[0]), "%s", hw);
    r = snprintf(m.module, sizeof(m.module), "file");
    (void)r;
    m.hw_count = 1;
    m.security_version = secver;
    m.type = UPK_RELEASE_FULL;
    m.size = m.target_size = 10;
    memset(m.sha256, (int)secver, sizeof(m.sha256));
    memcpy(m.target_sha256, m.sha256, sizeof(m.sha256));
    m.created = 1000;
    m.expires = 4000000000;
    char *json = NULL;
    size_t len = 0;
    assert_int_equal(upk_manifest_encode(&m, &json, &len), UPK_OK);
    uint8_t sig[8] = {1};
    assert_int_equal(
        upk_store_release_insert(s, id, &m, json, len, sig, sizeof(sig), "00", "alice", 1000),
        UPK_OK);
    free(json);
}

static void add_dev(upk_store *s, const char *id, const char *hw, uint64_t secver)
{
    upk_state_msg m;
    memset(&m, 0, sizeof(m));
    int r = snprintf(m.device, sizeof(m.device), "%s", id);
    r = snprintf(m.hw, sizeof(m.hw), "%s", hw);
    r = snprintf(m.release, sizeof(m.release), "fw");
    r = snprintf(m.version, sizeof(m.version), "x");
    (void)r;
    m.security_version = secver;
    assert_int_equal(upk_store_device_state(s, &m, 1000), UPK_OK);
}

static cJSON *posture(upk_ctl *ctl)
{
    upk_ctl_req req;
    memset(&req, 0, sizeof(req));
    int r = snprintf(req.id, sizeof(req.id), "r1");
    r = snprintf(req.cmd, sizeof(req.cmd), "report.posture");
    (void)r;
    req.args = cJSON_Parse("{\"days\":30}");
    char *json = NULL, *out = NULL;
    size_t len = 0, outlen = 0;
    assert_int_equal(upk_ctl_req_encode(&req, &json, &len), UPK_OK);
    cJSON_Delete(req.args);
    assert_int_equal(upk_ctl_handle(ctl, "alice", "operator:alice", (const uint8_t *)json, len,
                                    5000000, &out, &outlen),
                     UPK_OK);
    free(json);
    upk_ctl_resp resp;
    memset(&resp, 0, sizeof(resp));
    assert_int_equal(upk_ctl_resp_decode(out, outlen, &resp), UPK_OK);
    free(out);
    assert_int_equal(resp.error, UPK_OK);
    cJSON *d = resp.data;
    resp.data = NULL;
    upk_ctl_resp_cleanup(&resp);
    return d;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    static char buf[65536];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static void posture_is_honest(void **state)
{
    (void)state;
    char dir[] = "/tmp/upk-posture-test-XXXXXX";
    assert_non_null(mkdtemp(dir));
    upk_store *s = NULL;
    upk_ctl *ctl = NULL;
    upk_serve_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    assert_int_equal(upk_store_open(dir, &s), UPK_OK);
    assert_int_equal(upk_ctl_new(s, &cfg, NULL, NULL, &ctl), UPK_OK);
    /* board-a's latest is security_version 5, board-b's is 2. */
    add_rel(s, "fw-5.0", "board-a", 5);
    add_rel(s, "fw-2.0", "board-b", 2);
    add_dev(s, "a1", "board-a", 5);
    add_dev(s, "a2", "board-a", 4);
    add_dev(s, "b1", "board-b", 2); /* on its hardware's latest */
    /* A campaign that patched nobody (rolled back at once). */
    upk_campaign c;
    memset(&c, 0, sizeof(c));
    int r = snprintf(c.id, sizeof(c.id), "rb");
    r = snprintf(c.release, sizeof(c.release), "fw-5.0");
    r = snprintf(c.target, sizeof(c.target), "all");
    (void)r;
    c.state = UPK_CAMP_ROLLED_BACK;
    assert_int_equal(upk_engine_parse_stages("50%,100%", &c), UPK_OK);
    c.created_ms = 1000;
    const char *ids[] = {"a2"};
    uint32_t st[1] = {0};
    assert_int_equal(upk_store_campaign_insert(s, &c, ids, st, 1), UPK_OK);
    cJSON *d = posture(ctl);
    const cJSON *sum = cJSON_GetObjectItem(d, "summary");
    assert_int_equal(cJSON_GetObjectItem(sum, "on_latest")->valueint, 2);
    const cJSON *camp = cJSON_GetArrayItem(cJSON_GetObjectItem(d, "campaigns"), 0);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(camp, "ttp_median_s")));
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(camp, "ttp_p95_s")));
    /* A stage started at the end of the chart. */
    cJSON *stages = cJSON_GetObjectItem((cJSON *)camp, "stages");
    cJSON_DeleteItemFromObject((cJSON *)camp, "stages");
    stages = cJSON_CreateArray();
    cJSON *s1 = cJSON_CreateObject(), *s2 = cJSON_CreateObject();
    cJSON_AddNumberToObject(s1, "stage", 1);
    cJSON_AddNumberToObject(s1, "started_ms", 1000);
    cJSON_AddNumberToObject(s1, "devices", 1);
    cJSON_AddNumberToObject(s2, "stage", 2);
    cJSON_AddNumberToObject(s2, "started_ms", 900000);
    cJSON_AddNumberToObject(s2, "devices", 1);
    cJSON_AddItemToArray(stages, s1);
    cJSON_AddItemToArray(stages, s2);
    cJSON_AddItemToObject((cJSON *)camp, "stages", stages);

    char html[300];
    r = snprintf(html, sizeof(html), "%s/posture.html", dir);
    assert_int_equal(html_report(d, html), UPK_EXIT_OK);
    char *out = slurp(html);
    assert_null(strstr(out, "-1 s"));
    assert_non_null(strstr(out, "time to patch median n/a, p95 n/a"));
    assert_non_null(strstr(out, ">none</td>"));
    assert_non_null(strstr(out, "text-anchor=\"end\">stage 2</text>"));
    assert_non_null(strstr(out, "fill=\"#c60\">stage 1</text>"));

    char txt[300];
    r = snprintf(txt, sizeof(txt), "%s/posture.txt", dir);
    fflush(stdout);
    int saved = dup(STDOUT_FILENO);
    assert_non_null(freopen(txt, "w", stdout));
    text_report(d);
    fflush(stdout);
    assert_int_equal(dup2(saved, STDOUT_FILENO), STDOUT_FILENO);
    close(saved);
    out = slurp(txt);
    assert_null(strstr(out, "-1"));
    assert_non_null(strstr(out, "on latest: 2 (66.7%)"));
    assert_non_null(strstr(out, "past support (first 50):\n  none\n"));
    assert_non_null(strstr(out, "TTP MEDIAN (s)"));
    cJSON_Delete(d);
    upk_ctl_free(ctl);
    upk_store_close(s);
    char cmd[300];
    r = snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    r = system(cmd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(posture_is_honest),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
