/* Unit tests of the update-capability label (controller/src/label.c): the
 * elements built from a device row and a signed manifest, the support states
 * by date, text/JSON/HTML rendering with escaping, and every error path. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "label.h"
#include "upkeep/manifest.h"

#define NOW     1795000000LL /* 2026-11-18 */
#define DAY     86400LL
#define T_UNTIL 1924992000LL /* 2031-01-01 */

static char *manifest_json(bool support, const char *contact)
{
    upk_manifest m;
    memset(&m, 0, sizeof(m));
    memcpy(m.name, "sensor-fw", sizeof("sensor-fw"));
    memcpy(m.version, "1.2.3", sizeof("1.2.3"));
    m.security_version = 5;
    m.hw_count = 1;
    memcpy(m.hw[0], "rev-a", sizeof("rev-a"));
    m.type = UPK_RELEASE_FULL;
    memcpy(m.module, "file", sizeof("file"));
    m.size = 4096;
    m.target_size = 4096;
    memset(m.sha256, 1, sizeof(m.sha256));
    memset(m.target_sha256, 1, sizeof(m.target_sha256));
    m.created = NOW - DAY;
    m.expires = NOW + 100 * DAY;
    if (support) {
        m.support.present = true;
        m.support.security_until = T_UNTIL;
        memcpy(m.support.delivery, "user-approved", sizeof("user-approved"));
        memcpy(m.support.notice, "Owners are e-mailed.", sizeof("Owners are e-mailed."));
        int r = snprintf(m.support.contact, sizeof(m.support.contact), "%s", contact);
        assert_true(r > 0);
    }
    char *json = NULL;
    size_t len = 0;
    assert_int_equal(upk_manifest_encode(&m, &json, &len), UPK_OK);
    return json;
}

/* A device row as "device.capability" returns it. */
static cJSON *row(int64_t support_until, bool signed_support, const char *manifest)
{
    cJSON *o = cJSON_CreateObject();
    assert_non_null(o);
    cJSON_AddStringToObject(o, "id", "dev-1");
    cJSON_AddStringToObject(o, "hw", "rev-a");
    cJSON_AddStringToObject(o, "release", "sensor-fw");
    cJSON_AddStringToObject(o, "version", "1.2.3");
    cJSON_AddNumberToObject(o, "state_ts", (double)NOW);
    cJSON_AddNumberToObject(o, "cap_automatic", 1);
    cJSON_AddNumberToObject(o, "cap_signed", 1);
    cJSON_AddNumberToObject(o, "cap_rollback", 1);
    cJSON_AddNumberToObject(o, "cap_delta", 0);
    cJSON_AddNumberToObject(o, "support_until", (double)support_until);
    cJSON_AddNumberToObject(o, "support_signed", signed_support ? 1 : 0);
    cJSON_AddNumberToObject(o, "last_patched", (double)(NOW - 3 * DAY));
    if (manifest != NULL)
        cJSON_AddStringToObject(o, "manifest", manifest);
    else
        cJSON_AddNullToObject(o, "manifest");
    return o;
}

/* Renders with fn into a memory buffer (caller frees). */
static char *render(upk_err (*fn)(const upk_label *, FILE *), const upk_label *l)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    assert_int_equal(fn(l, f), UPK_OK);
    assert_int_equal(fclose(f), 0);
    return buf;
}

static void test_signed_support(void **state)
{
    (void)state;
    char *mj = manifest_json(true, "security@example.org");
    cJSON *r = row(T_UNTIL, true, mj);
    upk_label l;
    assert_int_equal(upk_label_build(r, NOW, &l), UPK_OK);
    assert_int_equal(l.support, UPK_LABEL_SUPPORTED);
    assert_string_equal(l.delivery, "user-approved");
    assert_string_equal(l.contact, "security@example.org");
    assert_true(l.support_signed && l.rollback && l.signed_only && !l.delta);

    char *txt = render(upk_label_text, &l);
    assert_non_null(strstr(txt, "security updates: yes, until 2031-01-01"));
    assert_non_null(strstr(txt, "signed by the manufacturer"));
    assert_non_null(strstr(txt, "updates arrive:   user-approved (signed statement)"));
    assert_non_null(strstr(txt, "last patched:     2026-11-15"));
    free(txt);

    cJSON *j = upk_label_json(&l);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItem(j, "security_updates")->valuestring, "yes");
    assert_string_equal(cJSON_GetObjectItem(j, "support_source")->valuestring, "signed-manifest");
    assert_string_equal(cJSON_GetObjectItem(j, "support_until_date")->valuestring, "2031-01-01");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(j, "rollback")));
    assert_true(cJSON_IsFalse(cJSON_GetObjectItem(j, "delta")));
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(j, "delivery_signed")));
    cJSON_Delete(j);
    cJSON_Delete(r);
    free(mj);
}

static void test_support_states(void **state)
{
    (void)state;
    struct {
        int64_t until;
        upk_label_support want;
        const char *text;
    } cases[] = {
        {0, UPK_LABEL_UNSTATED, "unknown: no end of support stated"},
        {NOW - DAY, UPK_LABEL_ENDED, "no, support ended 2026-11-17"},
        {NOW - 1, UPK_LABEL_ENDED, "no, support ended"},
        {NOW, UPK_LABEL_ENDING, "(in 0 days)"},
        {NOW + 10 * DAY, UPK_LABEL_ENDING, "(in 10 days)"},
        {NOW + 91 * DAY, UPK_LABEL_SUPPORTED, "yes, until"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cJSON *r = row(cases[i].until, false, NULL);
        upk_label l;
        assert_int_equal(upk_label_build(r, NOW, &l), UPK_OK);
        assert_int_equal(l.support, cases[i].want);
        char *txt = render(upk_label_text, &l);
        assert_non_null(strstr(txt, cases[i].text));
        /* No signed statement: config source, delivery from the capability. */
        assert_non_null(
            strstr(txt, cases[i].until ? "device configuration (not signed)" : "not stated"));
        assert_non_null(strstr(txt, "updates arrive:   automatic\n"));
        free(txt);
        cJSON_Delete(r);
    }
    assert_string_equal(upk_label_support_str(UPK_LABEL_ENDING), "ending");
    assert_string_equal(upk_label_support_str(UPK_LABEL_ENDED), "no");
    assert_string_equal(upk_label_support_str(UPK_LABEL_UNSTATED), "unknown");
}

static void test_never_reported(void **state)
{
    (void)state;
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "id", "dev-new");
    upk_label l;
    assert_int_equal(upk_label_build(r, NOW, &l), UPK_OK);
    assert_false(l.reported);
    char *txt = render(upk_label_text, &l);
    assert_non_null(strstr(txt, "Update capability of dev-new (hw unknown, no release)\n"));
    assert_non_null(strstr(txt, "rollback:         unknown"));
    assert_non_null(strstr(txt, "updates arrive:   unknown"));
    assert_non_null(strstr(txt, "last patched:     -"));
    free(txt);
    cJSON_Delete(r);
}

static void test_html_escaped_self_contained(void **state)
{
    (void)state;
    char *mj = manifest_json(true, "<script>alert('x')</script> & co");
    cJSON *r = row(T_UNTIL, true, mj);
    upk_label l;
    assert_int_equal(upk_label_build(r, NOW, &l), UPK_OK);
    char *html = render(upk_label_html, &l);
    assert_true(strncmp(html, "<!DOCTYPE html>", 15) == 0);
    assert_null(strstr(html, "<script"));
    assert_non_null(strstr(html, "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; co"));
    assert_non_null(strstr(html, "Security updates: yes, until 2031-01-01"));
    /* Self-contained: no external resources. */
    assert_null(strstr(html, "http"));
    assert_null(strstr(html, "src="));
    assert_null(strstr(html, "<link"));
    assert_non_null(strstr(html, "</html>"));
    free(html);
    cJSON_Delete(r);
    free(mj);
}

/* Issue 17 attack 5: a device claims a manufacturer-signed end of support
 * ("support_source":"manifest", until 2099) with an empty release, or with a
 * release whose signed manifest states another date or other hardware. The
 * label must say "claimed by the device", never "signed". */
static void label_device_claim_is_not_signed(void **state)
{
    (void)state;
    const int64_t y2099 = 4102358400LL; /* 2099-12-31 */
    char *mj = manifest_json(true, "security@example.org");
    struct {
        const char *release, *hw;
        int64_t until;
        const char *manifest;
    } cases[] = {
        {"", "rev-a", y2099, NULL},          /* no release, no manifest */
        {"sensor-fw", "rev-a", y2099, mj},   /* the manifest says 2031 */
        {"sensor-fw", "rev-z", T_UNTIL, mj}, /* not this hardware's */
        {"other-fw", "rev-a", T_UNTIL, mj},  /* another release's manifest */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cJSON *r = row(cases[i].until, true, cases[i].manifest);
        cJSON_ReplaceItemInObject(r, "release", cJSON_CreateString(cases[i].release));
        cJSON_ReplaceItemInObject(r, "hw", cJSON_CreateString(cases[i].hw));
        upk_label l;
        assert_int_equal(upk_label_build(r, NOW, &l), UPK_OK);
        assert_false(l.support_signed);
        assert_true(l.support_claimed);
        char *txt = render(upk_label_text, &l);
        assert_null(strstr(txt, "signed by the manufacturer"));
        assert_non_null(strstr(txt, "claimed by the device (no matching signed manifest)"));
        free(txt);
        char *html = render(upk_label_html, &l);
        assert_null(strstr(html, "signed by the manufacturer"));
        free(html);
        cJSON *j = upk_label_json(&l);
        assert_string_equal(cJSON_GetObjectItem(j, "support_source")->valuestring,
                            "claimed-by-device");
        cJSON_Delete(j);
        cJSON_Delete(r);
    }
    free(mj);
}

/* Device strings reach the terminal escaped (clifmt.h). */
static void label_text_escapes_device_strings(void **state)
{
    (void)state;
    cJSON *r = row(0, false, NULL);
    cJSON_ReplaceItemInObject(r, "version", cJSON_CreateString("1.0\x1b]0;PWNED\x07\x1b[2J"));
    upk_label l;
    assert_int_equal(upk_label_build(r, NOW, &l), UPK_OK);
    char *txt = render(upk_label_text, &l);
    assert_null(strchr(txt, '\x1b'));
    assert_null(strchr(txt, '\x07'));
    assert_non_null(strstr(txt, "1.0\\x1B]0;PWNED\\x07\\x1B[2J"));
    free(txt);
    cJSON_Delete(r);
}

static void test_errors(void **state)
{
    (void)state;
    upk_label l;
    cJSON *r = row(0, false, NULL);
    cJSON_DeleteItemFromObject(r, "id");
    assert_int_equal(upk_label_build(r, NOW, &l), UPK_E_FIELD_MISSING);
    cJSON_AddNumberToObject(r, "id", 7);
    assert_int_equal(upk_label_build(r, NOW, &l), UPK_E_FIELD_TYPE);
    cJSON_Delete(r);

    r = row(0, false, NULL);
    cJSON_ReplaceItemInObject(r, "support_until", cJSON_CreateString("2030"));
    assert_int_equal(upk_label_build(r, NOW, &l), UPK_E_FIELD_TYPE);
    cJSON_Delete(r);

    r = row(0, false, NULL);
    cJSON_ReplaceItemInObject(r, "manifest", cJSON_CreateNumber(1));
    assert_int_equal(upk_label_build(r, NOW, &l), UPK_E_FIELD_TYPE);
    cJSON_ReplaceItemInObject(r, "manifest", cJSON_CreateString("{not json"));
    assert_int_equal(upk_label_build(r, NOW, &l), UPK_E_JSON_INVALID);
    cJSON_Delete(r);

    r = row(0, false, NULL);
    char longhw[300];
    memset(longhw, 'a', sizeof(longhw) - 1);
    longhw[sizeof(longhw) - 1] = '\0';
    cJSON_ReplaceItemInObject(r, "hw", cJSON_CreateString(longhw));
    assert_int_equal(upk_label_build(r, NOW, &l), UPK_E_FIELD_TOO_LONG);
    cJSON_Delete(r);

    cJSON *arr = cJSON_CreateArray();
    assert_int_equal(upk_label_build(arr, NOW, &l), UPK_E_FIELD_TYPE);
    cJSON_Delete(arr);

    /* Write errors surface as UPK_E_IO. */
    r = row(T_UNTIL, true, NULL);
    assert_int_equal(upk_label_build(r, NOW, &l), UPK_OK);
    FILE *ro = fopen("/dev/null", "r");
    assert_non_null(ro);
    assert_int_equal(upk_label_text(&l, ro), UPK_E_IO);
    assert_int_equal(upk_label_html(&l, ro), UPK_E_IO);
    assert_int_equal(fclose(ro), 0);
    cJSON_Delete(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_signed_support),
        cmocka_unit_test(test_support_states),
        cmocka_unit_test(test_never_reported),
        cmocka_unit_test(test_html_escaped_self_contained),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(label_device_claim_is_not_signed),
        cmocka_unit_test(label_text_escapes_device_strings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
