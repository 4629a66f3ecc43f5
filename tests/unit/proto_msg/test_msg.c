/* Unit tests of the wire message codecs (proto/src/msg.c): round trips of
 * every message, and every rejection each decoder and encoder promises, each
 * asserting the exact upk_err and that outputs stay untouched on failure. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <cjson/cJSON.h>

#include "../../fuzz/proto_msg/msg_eq.h"
#include "upkeep/msg.h"

#define POISON    0xAB
#define MAX_EXACT 9007199254740992ULL /* 2^53: the largest integer on the wire */

/* Bounded copy into a char array. */
#define SET(dst, src) snprintf((dst), sizeof(dst), "%s", (src))

/* ---- helpers */

static void poison(void *p, size_t n)
{
    memset(p, POISON, n);
}

static bool is_poisoned(const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        if (b[i] != POISON)
            return false;
    }
    return true;
}

/* Copies s into a heap buffer of exactly strlen(s) bytes (no NUL), so that
 * ASan reports any read past len. Caller frees. */
static char *exact(const char *s, size_t *len)
{
    *len = strlen(s);
    char *b = malloc(*len > 0 ? *len : 1);
    assert_non_null(b);
    memcpy(b, s, *len);
    return b;
}

static upk_err state_dec(const char *s, upk_state_msg *out)
{
    size_t n;
    char *b = exact(s, &n);
    upk_err err = upk_state_decode(b, n, out);
    free(b);
    return err;
}

static upk_err event_dec(const char *s, upk_event_msg *out)
{
    size_t n;
    char *b = exact(s, &n);
    upk_err err = upk_event_decode(b, n, out);
    free(b);
    return err;
}

static upk_err desired_dec(const char *s, upk_desired_msg *out)
{
    size_t n;
    char *b = exact(s, &n);
    upk_err err = upk_desired_decode(b, n, out);
    free(b);
    return err;
}

static upk_err chunk_req_dec(const char *s, upk_chunk_req *out)
{
    size_t n;
    char *b = exact(s, &n);
    upk_err err = upk_chunk_req_decode(b, n, out);
    free(b);
    return err;
}

static upk_err ctl_req_dec(const char *s, upk_ctl_req *out)
{
    size_t n;
    char *b = exact(s, &n);
    upk_err err = upk_ctl_req_decode(b, n, out);
    free(b);
    return err;
}

static upk_err ctl_resp_dec(const char *s, upk_ctl_resp *out)
{
    size_t n;
    char *b = exact(s, &n);
    upk_err err = upk_ctl_resp_decode(b, n, out);
    free(b);
    return err;
}

/* Asserts that decoding s as a state fails with want and leaves out alone. */
static void expect_state_err(const char *s, upk_err want)
{
    upk_state_msg m;
    poison(&m, sizeof(m));
    upk_err got = upk_state_decode(s, strlen(s), &m);
    if (got != want)
        fail_msg("state %s: got %s want %s", s, upk_err_str(got), upk_err_str(want));
    assert_true(is_poisoned(&m, sizeof(m)));
}

static void expect_event_err(const char *s, upk_err want)
{
    upk_event_msg m;
    poison(&m, sizeof(m));
    upk_err got = event_dec(s, &m);
    if (got != want)
        fail_msg("event %s: got %s want %s", s, upk_err_str(got), upk_err_str(want));
    assert_true(is_poisoned(&m, sizeof(m)));
}

static void expect_desired_err(const char *s, upk_err want)
{
    upk_desired_msg m;
    poison(&m, sizeof(m));
    upk_err got = desired_dec(s, &m);
    if (got != want)
        fail_msg("desired %.200s: got %s want %s", s, upk_err_str(got), upk_err_str(want));
    assert_true(is_poisoned(&m, sizeof(m)));
}

static void expect_chunk_req_err(const char *s, upk_err want)
{
    upk_chunk_req m;
    poison(&m, sizeof(m));
    upk_err got = chunk_req_dec(s, &m);
    if (got != want)
        fail_msg("chunk_req %s: got %s want %s", s, upk_err_str(got), upk_err_str(want));
    assert_true(is_poisoned(&m, sizeof(m)));
}

static void expect_ctl_req_err(const char *s, upk_err want)
{
    upk_ctl_req m;
    poison(&m, sizeof(m));
    upk_err got = ctl_req_dec(s, &m);
    if (got != want)
        fail_msg("ctl_req %s: got %s want %s", s, upk_err_str(got), upk_err_str(want));
    assert_true(is_poisoned(&m, sizeof(m)));
}

static void expect_ctl_resp_err(const char *s, upk_err want)
{
    upk_ctl_resp m;
    poison(&m, sizeof(m));
    upk_err got = ctl_resp_dec(s, &m);
    if (got != want)
        fail_msg("ctl_resp %s: got %s want %s", s, upk_err_str(got), upk_err_str(want));
    assert_true(is_poisoned(&m, sizeof(m)));
}

/* Builds a string of n copies of c (caller frees). */
static char *repeat(char c, size_t n)
{
    char *s = malloc(n + 1);
    assert_non_null(s);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

/* snprintf into a new heap string (caller frees). */
__attribute__((format(printf, 1, 2))) static char *fmt(const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    int n = vsnprintf(NULL, 0, f, ap);
    va_end(ap);
    assert_true(n >= 0);
    char *s = malloc((size_t)n + 1);
    assert_non_null(s);
    va_start(ap, f);
    int n2 = vsnprintf(s, (size_t)n + 1, f, ap);
    va_end(ap);
    assert_int_equal(n, n2);
    return s;
}

static const char *HEX_A = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

/* ---- status names */

static void status_names_round_trip(void **state)
{
    (void)state;
    for (int i = 0; i < UPK_STATUS__COUNT; i++) {
        upk_status s = UPK_STATUS__COUNT;
        assert_true(upk_status_from_str(upk_status_str((upk_status)i), &s));
        assert_int_equal(s, i);
    }
    assert_string_equal(upk_status_str(UPK_STATUS_HEALTH_CHECK), "health_check");
    assert_string_equal(upk_status_str(UPK_STATUS__COUNT), "unknown");
    assert_string_equal(upk_status_str((upk_status)-1), "unknown");
}

static void status_from_str_rejects_unknown_and_leaves_out(void **state)
{
    (void)state;
    upk_status s = UPK_STATUS_FAILED;
    assert_false(upk_status_from_str("IDLE", &s));
    assert_false(upk_status_from_str("", &s));
    assert_false(upk_status_from_str("unknown", &s));
    assert_false(upk_status_from_str(NULL, &s));
    assert_int_equal(s, UPK_STATUS_FAILED);
}

static void status_is_final_only_for_outcomes(void **state)
{
    (void)state;
    int finals = 0;
    for (int i = 0; i < UPK_STATUS__COUNT; i++)
        finals += upk_status_is_final((upk_status)i);
    assert_int_equal(finals, 4);
    assert_true(upk_status_is_final(UPK_STATUS_COMMITTED));
    assert_true(upk_status_is_final(UPK_STATUS_FAILED));
    assert_true(upk_status_is_final(UPK_STATUS_ROLLED_BACK));
    assert_true(upk_status_is_final(UPK_STATUS_REJECTED));
    assert_false(upk_status_is_final(UPK_STATUS_HEALTH_CHECK));
}

/* ---- state */

static void full_state(upk_state_msg *m)
{
    memset(m, 0, sizeof(*m));
    SET(m->device, "dev-0001");
    SET(m->hw, "rpi4");
    SET(m->release, "fw-2.1.0");
    SET(m->version, "2.1.0+build.7");
    m->security_version = 42;
    SET(m->slot, "b");
    m->status = UPK_STATUS_ROLLED_BACK;
    SET(m->campaign, "cve-2026-0001");
    m->error = UPK_E_HEALTH_FAILED;
    m->cap.automatic = true;
    m->cap.signed_only = true;
    m->cap.rollback = true;
    m->cap.delta = false;
    m->cap.module_count = 2;
    SET(m->cap.modules[0], "file");
    SET(m->cap.modules[1], "ab-dir");
    m->support_until = 1893456000; /* 2030-01-01 */
    m->support_signed = true;
    m->last_patched = 1790000000;
    for (int i = 0; i < UPK_SHA256_LEN; i++)
        m->image_sha256[i] = (uint8_t)(i * 7 + 1);
    SET(m->agent, "0.1.0");
    m->ts = 1795000000;
}

static void state_round_trips_every_field(void **state)
{
    (void)state;
    upk_state_msg m, d;
    full_state(&m);
    char *json = NULL;
    size_t len = 0;
    assert_int_equal(upk_state_encode(&m, &json, &len), UPK_OK);
    assert_int_equal(len, strlen(json));
    assert_non_null(strstr(json, "\"v\":1"));
    assert_non_null(strstr(json, "\"support_until\":\"2030-01-01T00:00:00Z\""));
    assert_non_null(strstr(json, "\"support_source\":\"manifest\""));
    assert_non_null(strstr(json, "\"status\":\"rolled_back\""));
    assert_non_null(strstr(json, "\"error\":\"HEALTH_FAILED\""));
    assert_non_null(strstr(json, "\"signed\":true"));
    assert_non_null(strstr(json, "\"modules\":[\"file\",\"ab-dir\"]"));
    assert_non_null(strstr(json, "\"ts\":1795000000"));
    assert_int_equal(upk_state_decode(json, len, &d), UPK_OK);
    assert_true(upk_test_state_eq(&m, &d));
    free(json);
}

static void state_stale_flag_round_trips(void **state)
{
    (void)state;
    upk_state_msg m, d;
    full_state(&m);
    m.stale = true;
    char *json = NULL;
    size_t len = 0;
    assert_int_equal(upk_state_encode(&m, &json, &len), UPK_OK);
    assert_non_null(strstr(json, "\"stale\":true"));
    memset(&d, 0, sizeof(d));
    assert_int_equal(upk_state_decode(json, len, &d), UPK_OK);
    assert_true(d.stale);
    assert_true(upk_test_state_eq(&m, &d));
    free(json);
}

static void state_encode_omits_empty_optional_fields(void **state)
{
    (void)state;
    upk_state_msg m, d;
    memset(&m, 0, sizeof(m));
    SET(m.device, "d1");
    SET(m.hw, "hw1");
    m.status = UPK_STATUS_IDLE;
    m.ts = 5;
    char *json = NULL;
    size_t len = 0;
    assert_int_equal(upk_state_encode(&m, &json, &len), UPK_OK);
    const char *absent[] = {"release", "\"version\"",  "slot",         "campaign", "error",
                            "support", "last_patched", "image_sha256", "agent",    "stale"};
    for (size_t i = 0; i < sizeof(absent) / sizeof(absent[0]); i++) {
        if (strstr(json, absent[i]) != NULL)
            fail_msg("%s present in %s", absent[i], json);
    }
    assert_int_equal(upk_state_decode(json, len, &d), UPK_OK);
    assert_true(upk_test_state_eq(&m, &d));
    free(json);
}

static void state_config_support_source_round_trips(void **state)
{
    (void)state;
    upk_state_msg m, d;
    full_state(&m);
    m.support_signed = false;
    char *json = NULL;
    size_t len = 0;
    assert_int_equal(upk_state_encode(&m, &json, &len), UPK_OK);
    assert_non_null(strstr(json, "\"support_source\":\"config\""));
    assert_int_equal(upk_state_decode(json, len, &d), UPK_OK);
    assert_false(d.support_signed);
    assert_int_equal(d.support_until, m.support_until);
    free(json);
}

static void state_decode_accepts_minimal_and_defaults(void **state)
{
    (void)state;
    upk_state_msg m;
    poison(&m, sizeof(m));
    assert_int_equal(
        state_dec("{\"v\":1,\"device\":\"d\",\"hw\":\"h\",\"status\":\"idle\",\"ts\":0}", &m),
        UPK_OK);
    assert_string_equal(m.device, "d");
    assert_string_equal(m.release, "");
    assert_string_equal(m.version, "");
    assert_int_equal(m.error, UPK_OK);
    assert_int_equal(m.cap.module_count, 0);
    assert_false(m.cap.automatic);
    assert_int_equal(m.support_until, 0);
    assert_false(m.support_signed);
    for (int i = 0; i < UPK_SHA256_LEN; i++)
        assert_int_equal(m.image_sha256[i], 0);
}

static void state_decode_accepts_bare_date_support_until(void **state)
{
    (void)state;
    upk_state_msg m;
    assert_int_equal(state_dec("{\"v\":1,\"device\":\"d\",\"hw\":\"h\",\"status\":\"idle\",\"ts\":"
                               "1,\"support_until\":\"2030-01-01\"}",
                               &m),
                     UPK_OK);
    assert_int_equal(m.support_until, 1893456000);
}

static void state_decode_ignores_unknown_fields(void **state)
{
    (void)state;
    upk_state_msg m;
    assert_int_equal(
        state_dec("{\"v\":1,\"device\":\"d\",\"hw\":\"h\",\"status\":\"idle\",\"ts\":1,"
                  "\"future\":{\"x\":[1,2,{\"y\":null}]},\"capability\":{\"new\":true}}",
                  &m),
        UPK_OK);
}

#define ST_HEAD "{\"v\":1,\"device\":\"d\",\"hw\":\"h\",\"status\":\"idle\",\"ts\":1"

static void state_decode_rejects_wrong_version(void **state)
{
    (void)state;
    expect_state_err("{\"v\":2,\"device\":\"d\",\"hw\":\"h\",\"status\":\"idle\",\"ts\":1}",
                     UPK_E_VERSION_UNSUPPORTED);
    expect_state_err("{\"v\":0,\"device\":\"d\",\"hw\":\"h\",\"status\":\"idle\",\"ts\":1}",
                     UPK_E_VERSION_UNSUPPORTED);
    expect_state_err("{\"v\":1.5,\"device\":\"d\",\"hw\":\"h\",\"status\":\"idle\",\"ts\":1}",
                     UPK_E_VERSION_UNSUPPORTED);
    expect_state_err("{\"v\":\"1\",\"device\":\"d\",\"hw\":\"h\",\"status\":\"idle\",\"ts\":1}",
                     UPK_E_FIELD_TYPE);
    expect_state_err("{\"device\":\"d\",\"hw\":\"h\",\"status\":\"idle\",\"ts\":1}",
                     UPK_E_FIELD_MISSING);
}

static void state_decode_rejects_missing_required_fields(void **state)
{
    (void)state;
    expect_state_err("{\"v\":1,\"hw\":\"h\",\"status\":\"idle\",\"ts\":1}", UPK_E_FIELD_MISSING);
    expect_state_err("{\"v\":1,\"device\":\"d\",\"status\":\"idle\",\"ts\":1}",
                     UPK_E_FIELD_MISSING);
    expect_state_err("{\"v\":1,\"device\":\"d\",\"hw\":\"h\",\"ts\":1}", UPK_E_FIELD_MISSING);
    expect_state_err("{\"v\":1,\"device\":\"d\",\"hw\":\"h\",\"status\":\"idle\"}",
                     UPK_E_FIELD_MISSING);
}

static void state_decode_rejects_wrong_types(void **state)
{
    (void)state;
    expect_state_err("{\"v\":1,\"device\":7,\"hw\":\"h\",\"status\":\"idle\",\"ts\":1}",
                     UPK_E_FIELD_TYPE);
    expect_state_err(ST_HEAD ",\"security_version\":\"3\"}", UPK_E_FIELD_TYPE);
    expect_state_err(ST_HEAD ",\"capability\":[]}", UPK_E_FIELD_TYPE);
    expect_state_err(ST_HEAD ",\"capability\":{\"automatic\":1}}", UPK_E_FIELD_TYPE);
    expect_state_err(ST_HEAD ",\"capability\":{\"signed\":\"yes\"}}", UPK_E_FIELD_TYPE);
    expect_state_err(ST_HEAD ",\"capability\":{\"modules\":\"file\"}}", UPK_E_FIELD_TYPE);
    expect_state_err(ST_HEAD ",\"capability\":{\"modules\":[1]}}", UPK_E_FIELD_TYPE);
    expect_state_err(ST_HEAD ",\"support_until\":1893456000}", UPK_E_FIELD_TYPE);
    expect_state_err(ST_HEAD ",\"last_patched\":\"2030-01-01T00:00:00Z\"}", UPK_E_FIELD_TYPE);
    expect_state_err(ST_HEAD ",\"image_sha256\":null}", UPK_E_FIELD_TYPE);
    expect_state_err(ST_HEAD ",\"error\":false}", UPK_E_FIELD_TYPE);
    expect_state_err("{\"v\":1,\"device\":\"d\",\"hw\":\"h\",\"status\":\"idle\",\"ts\":\"1\"}",
                     UPK_E_FIELD_TYPE);
}

static void state_decode_rejects_bad_ids(void **state)
{
    (void)state;
    expect_state_err("{\"v\":1,\"device\":\"../etc\",\"hw\":\"h\",\"status\":\"idle\",\"ts\":1}",
                     UPK_E_ID_INVALID);
    expect_state_err("{\"v\":1,\"device\":\"\",\"hw\":\"h\",\"status\":\"idle\",\"ts\":1}",
                     UPK_E_ID_INVALID);
    expect_state_err("{\"v\":1,\"device\":\"d\",\"hw\":\"a b\",\"status\":\"idle\",\"ts\":1}",
                     UPK_E_ID_INVALID);
    expect_state_err(ST_HEAD ",\"release\":\"-x\"}", UPK_E_ID_INVALID);
    expect_state_err(ST_HEAD ",\"slot\":\"a/b\"}", UPK_E_ID_INVALID);
    expect_state_err(ST_HEAD ",\"campaign\":\"c+\"}", UPK_E_ID_INVALID);
    expect_state_err(ST_HEAD ",\"capability\":{\"modules\":[\"file\",\".hidden\"]}}",
                     UPK_E_ID_INVALID);
}

static void state_decode_rejects_oversized_strings(void **state)
{
    (void)state;
    char *id65 = repeat('x', UPK_ID_MAX + 1);
    char *s = fmt("{\"v\":1,\"device\":\"%s\",\"hw\":\"h\",\"status\":\"idle\",\"ts\":1}", id65);
    expect_state_err(s, UPK_E_FIELD_TOO_LONG);
    free(s);
    s = fmt(ST_HEAD ",\"version\":\"%s\"}", id65);
    expect_state_err(s, UPK_E_FIELD_TOO_LONG);
    free(s);
    s = fmt(ST_HEAD ",\"agent\":\"%s\"}", id65);
    expect_state_err(s, UPK_E_FIELD_TOO_LONG);
    free(s);
    s = fmt(ST_HEAD ",\"capability\":{\"modules\":[\"%s\"]}}", id65);
    expect_state_err(s, UPK_E_FIELD_TOO_LONG);
    free(s);
    /* exactly the limit is fine */
    id65[UPK_ID_MAX] = '\0';
    s = fmt("{\"v\":1,\"device\":\"%s\",\"hw\":\"h\",\"status\":\"idle\",\"ts\":1}", id65);
    upk_state_msg m;
    assert_int_equal(state_dec(s, &m), UPK_OK);
    assert_int_equal(strlen(m.device), UPK_ID_MAX);
    free(s);
    free(id65);
}

static void state_decode_rejects_too_many_modules(void **state)
{
    (void)state;
    expect_state_err(ST_HEAD ",\"capability\":{\"modules\":[\"a\",\"b\",\"c\",\"d\",\"e\",\"f\","
                             "\"g\",\"h\",\"i\"]}}",
                     UPK_E_FIELD_TOO_LONG);
    upk_state_msg m;
    assert_int_equal(state_dec(ST_HEAD ",\"capability\":{\"modules\":[\"a\",\"b\",\"c\",\"d\","
                                       "\"e\",\"f\",\"g\",\"h\"]}}",
                               &m),
                     UPK_OK);
    assert_int_equal(m.cap.module_count, UPK_MODULES_MAX);
    assert_string_equal(m.cap.modules[7], "h");
}

static void state_decode_rejects_out_of_range_values(void **state)
{
    (void)state;
    expect_state_err("{\"v\":1,\"device\":\"d\",\"hw\":\"h\",\"status\":\"sleeping\",\"ts\":1}",
                     UPK_E_FIELD_RANGE);
    expect_state_err("{\"v\":1,\"device\":\"d\",\"hw\":\"h\",\"status\":\"IDLE\",\"ts\":1}",
                     UPK_E_FIELD_RANGE);
    expect_state_err(ST_HEAD ",\"error\":\"NO_SUCH_CODE\"}", UPK_E_FIELD_RANGE);
    expect_state_err(ST_HEAD ",\"support_source\":\"rumour\"}", UPK_E_FIELD_RANGE);
    expect_state_err(ST_HEAD ",\"support_until\":\"2030-02-30T00:00:00Z\"}", UPK_E_FIELD_RANGE);
    expect_state_err(ST_HEAD ",\"support_until\":\"2030-01-01 00:00:00\"}", UPK_E_FIELD_RANGE);
    expect_state_err(ST_HEAD ",\"image_sha256\":\"abc\"}", UPK_E_FIELD_RANGE);
    expect_state_err(ST_HEAD ",\"security_version\":-1}", UPK_E_FIELD_RANGE);
    expect_state_err(ST_HEAD ",\"security_version\":1.5}", UPK_E_FIELD_RANGE);
    expect_state_err(ST_HEAD ",\"security_version\":1e300}", UPK_E_FIELD_RANGE);
    expect_state_err(ST_HEAD ",\"last_patched\":-5}", UPK_E_FIELD_RANGE);
    expect_state_err(ST_HEAD ",\"version\":\"1.0 beta\"}", UPK_E_FIELD_RANGE);
    expect_state_err(ST_HEAD ",\"agent\":\"a\\tb\"}", UPK_E_FIELD_RANGE);
    expect_state_err(ST_HEAD ",\"version\":\"1.0-\xc3\xa9\"}", UPK_E_FIELD_RANGE);
    expect_state_err(ST_HEAD ",\"version\":\"1.0\x7f\"}", UPK_E_FIELD_RANGE);
    expect_state_err("{\"v\":1,\"device\":\"d\",\"hw\":\"h\",\"status\":\"idle\",\"ts\":-1}",
                     UPK_E_FIELD_RANGE);
    expect_state_err("{\"v\":1,\"device\":\"d\",\"hw\":\"h\",\"status\":\"idle\",\"ts\":1e999}",
                     UPK_E_FIELD_RANGE);
}

static void state_decode_rejects_non_json_and_non_objects(void **state)
{
    (void)state;
    expect_state_err("{\"v\":1,\"device\":\"d\",\"hw\":\"h\",\"status\":\"idle\",\"ts\":1,"
                     "\"device\":\"evil\"}",
                     UPK_E_JSON_INVALID);
    expect_state_err(ST_HEAD ",\"x\":[{\"k\":1},{\"k\":1,\"k\":2}]}", UPK_E_JSON_INVALID);
    expect_state_err("", UPK_E_JSON_INVALID);
    expect_state_err("not json", UPK_E_JSON_INVALID);
    expect_state_err("{\"v\":1,}", UPK_E_JSON_INVALID);
    expect_state_err("[1,2]", UPK_E_FIELD_TYPE);
    expect_state_err("\"str\"", UPK_E_FIELD_TYPE);
    expect_state_err("null", UPK_E_FIELD_TYPE);
}

static void state_decode_rejects_every_truncation(void **state)
{
    (void)state;
    upk_state_msg m;
    full_state(&m);
    char *json = NULL;
    size_t len = 0;
    assert_int_equal(upk_state_encode(&m, &json, &len), UPK_OK);
    for (size_t n = 0; n < len; n++) {
        char *b = malloc(n > 0 ? n : 1);
        assert_non_null(b);
        memcpy(b, json, n);
        upk_state_msg d;
        poison(&d, sizeof(d));
        upk_err err = upk_state_decode(b, n, &d);
        assert_int_equal(err, UPK_E_JSON_INVALID);
        assert_true(is_poisoned(&d, sizeof(d)));
        free(b);
    }
    free(json);
}

static void state_decode_rejects_trailing_garbage_but_not_whitespace(void **state)
{
    (void)state;
    expect_state_err(ST_HEAD "}x", UPK_E_JSON_INVALID);
    expect_state_err(ST_HEAD "}{}", UPK_E_JSON_INVALID);
    expect_state_err(ST_HEAD "}}", UPK_E_JSON_INVALID);
    upk_state_msg m;
    assert_int_equal(state_dec(" \n" ST_HEAD "} \r\n\t", &m), UPK_OK);
}

static void state_decode_reads_only_len_bytes(void **state)
{
    (void)state;
    /* A valid message followed by bytes outside len: only len counts. */
    const char *s = ST_HEAD "}GARBAGE";
    upk_state_msg m;
    assert_int_equal(upk_state_decode(s, strlen(ST_HEAD "}"), &m), UPK_OK);
}

static void state_decode_rejects_nul_bytes_and_escapes(void **state)
{
    (void)state;
    /* A raw NUL inside a string value. */
    const char raw[] = "{\"v\":1,\"device\":\"d\0x\",\"hw\":\"h\",\"status\":\"idle\",\"ts\":1}";
    upk_state_msg m;
    poison(&m, sizeof(m));
    assert_int_equal(upk_state_decode(raw, sizeof(raw) - 1, &m), UPK_E_JSON_INVALID);
    assert_true(is_poisoned(&m, sizeof(m)));
    /* An escaped NUL would truncate "d\u0000evil" to "d". */
    expect_state_err(
        "{\"v\":1,\"device\":\"d\\u0000evil\",\"hw\":\"h\",\"status\":\"idle\",\"ts\":1}",
        UPK_E_JSON_INVALID);
    expect_state_err(ST_HEAD ",\"x\\u0000\":1}", UPK_E_JSON_INVALID);
    /* RFC 8259: control characters inside strings must be escaped. */
    expect_state_err("{\"v\":1,\"device\":\"d\nx\",\"hw\":\"h\",\"status\":\"idle\",\"ts\":1}",
                     UPK_E_JSON_INVALID);
    expect_state_err(ST_HEAD ",\"future\":\"\x01\"}", UPK_E_JSON_INVALID);
    /* but whitespace between tokens and raw UTF-8 inside strings are fine */
    assert_int_equal(state_dec("{\n\t\"v\":1,\"device\":\"d\",\"hw\":\"h\",\"status\":"
                               "\"idle\",\"ts\":1,\"note\":\"caf\xc3\xa9\"}\n",
                               &m),
                     UPK_OK);
}

static void state_decode_rejects_over_message_limit(void **state)
{
    (void)state;
    /* A 1 MB string field: refused on size before parsing. */
    char *big = repeat('a', 1024 * 1024);
    char *s = fmt(ST_HEAD ",\"agent\":\"%s\"}", big);
    expect_state_err(s, UPK_E_MSG_TOO_LARGE);
    free(s);
    /* Just under the limit the size check passes and the field limit bites. */
    big[UPK_MSG_MAX - 200] = '\0';
    s = fmt(ST_HEAD ",\"agent\":\"%s\"}", big);
    assert_true(strlen(s) <= UPK_MSG_MAX);
    expect_state_err(s, UPK_E_FIELD_TOO_LONG);
    free(s);
    free(big);
}

static void state_decode_handles_nesting(void **state)
{
    (void)state;
    /* Deep but within cJSON's nesting limit: an ignored unknown field. */
    size_t depth = 500;
    char *open = repeat('[', depth), *close = repeat(']', depth);
    char *s = fmt(ST_HEAD ",\"deep\":%s%s}", open, close);
    upk_state_msg m;
    assert_int_equal(state_dec(s, &m), UPK_OK);
    free(s);
    free(open);
    free(close);
    /* Past the limit: refused as invalid JSON, without a stack overflow. */
    depth = 5000;
    open = repeat('[', depth);
    close = repeat(']', depth);
    s = fmt(ST_HEAD ",\"deep\":%s%s}", open, close);
    expect_state_err(s, UPK_E_JSON_INVALID);
    free(s);
    free(open);
    free(close);
}

static void state_decode_rejects_null_args(void **state)
{
    (void)state;
    upk_state_msg m;
    assert_int_equal(upk_state_decode(NULL, 3, &m), UPK_E_INVALID_ARG);
    assert_int_equal(upk_state_decode("{}", 2, NULL), UPK_E_INVALID_ARG);
}

static void expect_state_enc_err(const upk_state_msg *m, upk_err want)
{
    char *json = (char *)0x1;
    size_t len = 77;
    upk_err got = upk_state_encode(m, &json, &len);
    if (got != want)
        fail_msg("state encode: got %s want %s", upk_err_str(got), upk_err_str(want));
    assert_ptr_equal(json, (char *)0x1);
    assert_int_equal(len, 77);
}

static void state_encode_rejects_invalid_input(void **state)
{
    (void)state;
    upk_state_msg m;
    char *json = NULL;
    assert_int_equal(upk_state_encode(NULL, &json, NULL), UPK_E_INVALID_ARG);
    full_state(&m);
    assert_int_equal(upk_state_encode(&m, NULL, NULL), UPK_E_INVALID_ARG);

    full_state(&m);
    SET(m.device, "bad/id");
    expect_state_enc_err(&m, UPK_E_ID_INVALID);
    full_state(&m);
    m.hw[0] = '\0';
    expect_state_enc_err(&m, UPK_E_ID_INVALID);
    full_state(&m);
    SET(m.campaign, "-c");
    expect_state_enc_err(&m, UPK_E_ID_INVALID);
    full_state(&m);
    memset(m.slot, 'a', sizeof(m.slot)); /* unterminated */
    expect_state_enc_err(&m, UPK_E_ID_INVALID);
    full_state(&m);
    memset(m.version, '1', sizeof(m.version)); /* unterminated */
    expect_state_enc_err(&m, UPK_E_FIELD_TOO_LONG);
    full_state(&m);
    SET(m.version, "1 0");
    expect_state_enc_err(&m, UPK_E_FIELD_RANGE);
    full_state(&m);
    m.status = UPK_STATUS__COUNT;
    expect_state_enc_err(&m, UPK_E_FIELD_RANGE);
    full_state(&m);
    m.error = UPK_E__COUNT;
    expect_state_enc_err(&m, UPK_E_FIELD_RANGE);
    full_state(&m);
    m.ts = -1;
    expect_state_enc_err(&m, UPK_E_FIELD_RANGE);
    full_state(&m);
    m.support_until = 253402300800LL; /* year 10000 */
    expect_state_enc_err(&m, UPK_E_FIELD_RANGE);
    full_state(&m);
    m.security_version = MAX_EXACT + 1;
    expect_state_enc_err(&m, UPK_E_FIELD_RANGE);
    full_state(&m);
    m.cap.module_count = UPK_MODULES_MAX + 1;
    expect_state_enc_err(&m, UPK_E_FIELD_TOO_LONG);
    full_state(&m);
    SET(m.cap.modules[1], "a b");
    expect_state_enc_err(&m, UPK_E_ID_INVALID);
}

/* ---- desired */

static void desired_fill(upk_desired_msg *m, char *manifest, size_t mlen, size_t siglen)
{
    memset(m, 0, sizeof(*m));
    SET(m->campaign, "camp-1");
    SET(m->key_id, HEX_A);
    m->manifest = manifest;
    m->manifest_len = mlen;
    for (size_t i = 0; i < siglen; i++)
        m->sig[i] = (uint8_t)(0xff - i);
    m->sig_len = siglen;
    m->bake_s = 3600;
}

static void desired_round_trips_exact_manifest_bytes(void **state)
{
    (void)state;
    /* Every byte value but NUL, plus JSON's special characters, in order. */
    char manifest[300];
    size_t n = 0;
    const char *special = "{\"name\":\"a\\\"b\",\"x\":\"\\\\u0041/\"}\n\t\r\b\f";
    memcpy(manifest, special, strlen(special));
    n = strlen(special);
    for (int c = 1; c < 256; c++)
        manifest[n++] = (char)c;
    manifest[n] = '\0';

    upk_desired_msg m, d;
    desired_fill(&m, manifest, n, UPK_SIG_MAX);
    char *json = NULL;
    size_t len = 0;
    assert_int_equal(upk_desired_encode(&m, &json, &len), UPK_OK);
    assert_non_null(strstr(json, "\"bake_s\":3600"));
    assert_int_equal(upk_desired_decode(json, len, &d), UPK_OK);
    assert_int_equal(d.manifest_len, n);
    assert_memory_equal(d.manifest, manifest, n);
    assert_int_equal(d.manifest[n], '\0');
    assert_true(upk_test_desired_eq(&m, &d));
    upk_desired_cleanup(&d);
    assert_null(d.manifest);
    upk_desired_cleanup(&d); /* twice is fine */
    free(json);
}

static void desired_encode_copies_unterminated_manifest(void **state)
{
    (void)state;
    char buf[] = "{\"v\":1}XYZ"; /* only the first 7 bytes are the manifest */
    upk_desired_msg m, d;
    desired_fill(&m, buf, 7, 1);
    m.bake_s = 0;
    char *json = NULL;
    size_t len = 0;
    assert_int_equal(upk_desired_encode(&m, &json, &len), UPK_OK);
    assert_null(strstr(json, "bake_s"));
    assert_null(strstr(json, "XYZ"));
    assert_int_equal(upk_desired_decode(json, len, &d), UPK_OK);
    assert_int_equal(d.manifest_len, 7);
    assert_string_equal(d.manifest, "{\"v\":1}");
    assert_int_equal(d.sig_len, 1);
    assert_int_equal(d.bake_s, 0);
    upk_desired_cleanup(&d);
    free(json);
}

static void desired_decode_unescapes_json_string(void **state)
{
    (void)state;
    upk_desired_msg d;
    assert_int_equal(
        desired_dec("{\"v\":1,\"campaign\":\"c\",\"key_id\":\"aaaaaaaaaaaaaaaaaaaaaaaaa"
                    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\",\"manifest\":\"{\\\"a"
                    "\\\":\\\"\\u00e9\\\\n\\\"}\\n\",\"sig\":\"AQID\"}",
                    &d),
        UPK_OK);
    assert_string_equal(d.manifest, "{\"a\":\"\xc3\xa9\\n\"}\n");
    assert_int_equal(d.manifest_len, strlen("{\"a\":\"\xc3\xa9\\n\"}\n"));
    assert_int_equal(d.sig_len, 3);
    assert_int_equal(d.sig[2], 3);
    upk_desired_cleanup(&d);
}

static void desired_accepts_manifest_at_limit_and_rejects_over(void **state)
{
    (void)state;
    char *man = repeat('m', UPK_MANIFEST_MAX + 1);
    upk_desired_msg m, d;
    desired_fill(&m, man, UPK_MANIFEST_MAX, 8);
    char *json = NULL;
    size_t len = 0;
    assert_int_equal(upk_desired_encode(&m, &json, &len), UPK_OK);
    assert_int_equal(upk_desired_decode(json, len, &d), UPK_OK);
    assert_int_equal(d.manifest_len, UPK_MANIFEST_MAX);
    upk_desired_cleanup(&d);
    free(json);

    m.manifest_len = UPK_MANIFEST_MAX + 1;
    json = NULL;
    assert_int_equal(upk_desired_encode(&m, &json, &len), UPK_E_FIELD_TOO_LONG);
    assert_null(json);

    char *s = fmt("{\"v\":1,\"campaign\":\"c\",\"key_id\":\"%s\",\"manifest\":\"%s\",\"sig\":"
                  "\"AQID\"}",
                  HEX_A, man);
    expect_desired_err(s, UPK_E_FIELD_TOO_LONG);
    free(s);
    free(man);
}

static void desired_encode_rejects_message_over_limit(void **state)
{
    (void)state;
    /* Control bytes escape to six characters each: 16 KiB becomes 96 KiB. */
    char *man = repeat('\x01', UPK_MANIFEST_MAX);
    upk_desired_msg m;
    desired_fill(&m, man, UPK_MANIFEST_MAX, 8);
    char *json = NULL;
    size_t len = 0;
    assert_int_equal(upk_desired_encode(&m, &json, &len), UPK_E_MSG_TOO_LARGE);
    assert_null(json);
    free(man);
}

#define DS_KEY "\"key_id\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\""

static void desired_decode_rejects_missing_fields(void **state)
{
    (void)state;
    expect_desired_err("{\"v\":1," DS_KEY ",\"manifest\":\"m\",\"sig\":\"AQID\"}",
                       UPK_E_FIELD_MISSING);
    expect_desired_err("{\"v\":1,\"campaign\":\"c\",\"manifest\":\"m\",\"sig\":\"AQID\"}",
                       UPK_E_FIELD_MISSING);
    expect_desired_err("{\"v\":1,\"campaign\":\"c\"," DS_KEY ",\"sig\":\"AQID\"}",
                       UPK_E_FIELD_MISSING);
    expect_desired_err("{\"v\":1,\"campaign\":\"c\"," DS_KEY ",\"manifest\":\"m\"}",
                       UPK_E_FIELD_MISSING);
    expect_desired_err("{\"campaign\":\"c\"," DS_KEY ",\"manifest\":\"m\",\"sig\":\"AQID\"}",
                       UPK_E_FIELD_MISSING);
}

static void desired_decode_rejects_wrong_types(void **state)
{
    (void)state;
    expect_desired_err("{\"v\":1,\"campaign\":\"c\"," DS_KEY ",\"manifest\":{},\"sig\":\"AQID\"}",
                       UPK_E_FIELD_TYPE);
    expect_desired_err("{\"v\":1,\"campaign\":\"c\"," DS_KEY ",\"manifest\":\"m\",\"sig\":[1]}",
                       UPK_E_FIELD_TYPE);
    expect_desired_err("{\"v\":1,\"campaign\":1," DS_KEY ",\"manifest\":\"m\",\"sig\":\"AQID\"}",
                       UPK_E_FIELD_TYPE);
    expect_desired_err("{\"v\":1,\"campaign\":\"c\",\"key_id\":7,\"manifest\":\"m\",\"sig\":"
                       "\"AQID\"}",
                       UPK_E_FIELD_TYPE);
    expect_desired_err("{\"v\":1,\"campaign\":\"c\"," DS_KEY
                       ",\"manifest\":\"m\",\"sig\":\"AQID\",\"bake_s\":\"60\"}",
                       UPK_E_FIELD_TYPE);
}

static void desired_decode_rejects_bad_values(void **state)
{
    (void)state;
    expect_desired_err("{\"v\":2,\"campaign\":\"c\"," DS_KEY
                       ",\"manifest\":\"m\",\"sig\":\"AQID\"}",
                       UPK_E_VERSION_UNSUPPORTED);
    expect_desired_err("{\"v\":1,\"campaign\":\"c c\"," DS_KEY
                       ",\"manifest\":\"m\",\"sig\":\"AQID\"}",
                       UPK_E_ID_INVALID);
    expect_desired_err("{\"v\":1,\"campaign\":\"c\",\"key_id\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
                       "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\",\"manifest\":\"m\",\"sig\":\"AQID\"}",
                       UPK_E_FIELD_RANGE);
    expect_desired_err("{\"v\":1,\"campaign\":\"c\",\"key_id\":\"abc\",\"manifest\":\"m\",\"sig\":"
                       "\"AQID\"}",
                       UPK_E_FIELD_RANGE);
    expect_desired_err("{\"v\":1,\"campaign\":\"c\",\"key_id\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                       "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\",\"manifest\":\"m\",\"sig\":\"AQID\"}",
                       UPK_E_FIELD_TOO_LONG);
    expect_desired_err("{\"v\":1,\"campaign\":\"c\"," DS_KEY ",\"manifest\":\"\",\"sig\":\"AQID\"}",
                       UPK_E_FIELD_RANGE);
    expect_desired_err("{\"v\":1,\"campaign\":\"c\"," DS_KEY ",\"manifest\":\"m\",\"sig\":\"\"}",
                       UPK_E_FIELD_RANGE);
    expect_desired_err("{\"v\":1,\"campaign\":\"c\"," DS_KEY
                       ",\"manifest\":\"m\",\"sig\":\"A!==\"}",
                       UPK_E_FIELD_RANGE);
    expect_desired_err("{\"v\":1,\"campaign\":\"c\"," DS_KEY
                       ",\"manifest\":\"m\",\"sig\":\"AQID\",\"bake_s\":-1}",
                       UPK_E_FIELD_RANGE);
    expect_desired_err("{\"v\":1,\"campaign\":\"c\"," DS_KEY
                       ",\"manifest\":\"m\",\"sig\":\"AQID\",\"bake_s\":4294967296}",
                       UPK_E_FIELD_RANGE);
    expect_desired_err("{\"v\":1,\"campaign\":\"c\"," DS_KEY
                       ",\"manifest\":\"m\\u0000\",\"sig\":\"AQID\"}",
                       UPK_E_JSON_INVALID);
}

static void desired_decode_rejects_oversized_signature(void **state)
{
    (void)state;
    /* 100 base64 chars is longer than any 72-byte signature's text. */
    char *b64 = repeat('A', 100);
    char *s = fmt("{\"v\":1,\"campaign\":\"c\"," DS_KEY ",\"manifest\":\"m\",\"sig\":\"%s\"}", b64);
    expect_desired_err(s, UPK_E_FIELD_TOO_LONG);
    free(s);
    /* 96 chars decode to exactly 72 bytes: accepted. */
    b64[96] = '\0';
    s = fmt("{\"v\":1,\"campaign\":\"c\"," DS_KEY ",\"manifest\":\"m\",\"sig\":\"%s\"}", b64);
    upk_desired_msg d;
    assert_int_equal(desired_dec(s, &d), UPK_OK);
    assert_int_equal(d.sig_len, UPK_SIG_MAX);
    upk_desired_cleanup(&d);
    free(s);
    free(b64);
}

static void expect_desired_enc_err(const upk_desired_msg *m, upk_err want)
{
    char *json = NULL;
    size_t len = 0;
    upk_err got = upk_desired_encode(m, &json, &len);
    if (got != want)
        fail_msg("desired encode: got %s want %s", upk_err_str(got), upk_err_str(want));
    assert_null(json);
}

static void desired_encode_rejects_invalid_input(void **state)
{
    (void)state;
    char man[] = "{\"v\":1}";
    upk_desired_msg m;
    char *json = NULL;
    assert_int_equal(upk_desired_encode(NULL, &json, NULL), UPK_E_INVALID_ARG);
    desired_fill(&m, man, strlen(man), 8);
    assert_int_equal(upk_desired_encode(&m, NULL, NULL), UPK_E_INVALID_ARG);
    SET(m.campaign, "a b");
    expect_desired_enc_err(&m, UPK_E_ID_INVALID);
    desired_fill(&m, man, strlen(man), 8);
    m.key_id[0] = 'G';
    expect_desired_enc_err(&m, UPK_E_FIELD_RANGE);
    desired_fill(&m, man, strlen(man), 8);
    memset(m.key_id, 'a', sizeof(m.key_id)); /* unterminated */
    expect_desired_enc_err(&m, UPK_E_FIELD_TOO_LONG);
    desired_fill(&m, NULL, 0, 8);
    expect_desired_enc_err(&m, UPK_E_FIELD_MISSING);
    desired_fill(&m, man, 0, 8);
    expect_desired_enc_err(&m, UPK_E_FIELD_MISSING);
    desired_fill(&m, man, strlen(man), 0);
    expect_desired_enc_err(&m, UPK_E_FIELD_MISSING);
    desired_fill(&m, man, strlen(man), 8);
    m.sig_len = UPK_SIG_MAX + 1;
    expect_desired_enc_err(&m, UPK_E_FIELD_TOO_LONG);
    desired_fill(&m, man, sizeof(man), 8); /* includes the NUL */
    expect_desired_enc_err(&m, UPK_E_FIELD_RANGE);
}

/* ctr, fresh_until and rollback round-trip, after bake_s, and are omitted
 * when zero or false. */
static void desired_round_trips_link_fields(void **state)
{
    (void)state;
    char man[] = "m";
    upk_desired_msg m, d;
    desired_fill(&m, man, 1, 3);
    m.ctr = UPK_DESIRED_CTR_MAX;
    m.fresh_until = 1800000000;
    m.rollback = true;
    char *json = NULL;
    size_t len = 0;
    assert_int_equal(upk_desired_encode(&m, &json, &len), UPK_OK);
    assert_non_null(strstr(json, "\"bake_s\":3600,\"rollback\":true,\"ctr\":9007199254740992,"
                                 "\"fresh_until\":1800000000}"));
    memset(&d, 0, sizeof(d));
    assert_int_equal(upk_desired_decode(json, len, &d), UPK_OK);
    assert_true(upk_test_desired_eq(&m, &d));
    assert_false(d.clear);
    upk_desired_cleanup(&d);
    free(json);
    m.ctr = 0;
    m.fresh_until = 0;
    m.rollback = false;
    assert_int_equal(upk_desired_encode(&m, &json, &len), UPK_OK);
    assert_null(strstr(json, "ctr"));
    assert_null(strstr(json, "fresh_until"));
    assert_null(strstr(json, "rollback"));
    free(json);
}

/* A clear is {"v":1,"ctr":N,"fresh_until":T}: no assignment fields. */
static void desired_clear_round_trips(void **state)
{
    (void)state;
    upk_desired_msg m, d;
    memset(&m, 0, sizeof(m));
    m.clear = true;
    m.ctr = 5;
    m.fresh_until = 1800000000;
    char *json = NULL;
    size_t len = 0;
    assert_int_equal(upk_desired_encode(&m, &json, &len), UPK_OK);
    assert_string_equal(json, "{\"v\":1,\"ctr\":5,\"fresh_until\":1800000000}");
    memset(&d, 0xff, sizeof(d));
    assert_int_equal(upk_desired_decode(json, len, &d), UPK_OK);
    assert_true(d.clear);
    assert_int_equal(d.ctr, 5);
    assert_int_equal(d.fresh_until, 1800000000);
    assert_string_equal(d.campaign, "");
    assert_null(d.manifest);
    assert_int_equal(d.sig_len, 0);
    assert_false(d.rollback);
    upk_desired_cleanup(&d);
    free(json);
    assert_int_equal(desired_dec("{\"v\":1}", &d), UPK_OK);
    assert_true(d.clear);
    assert_int_equal(d.ctr, 0);
    upk_desired_cleanup(&d);
    /* A clear carries no assignment: the encoder refuses a mixed one. */
    m.bake_s = 1;
    assert_int_equal(upk_desired_encode(&m, &json, &len), UPK_E_INVALID_ARG);
    m.bake_s = 0;
    m.rollback = true;
    assert_int_equal(upk_desired_encode(&m, &json, &len), UPK_E_INVALID_ARG);
}

static void desired_partial_assignment_is_field_missing(void **state)
{
    (void)state;
    expect_desired_err("{\"v\":1,\"campaign\":\"c\",\"ctr\":1}", UPK_E_FIELD_MISSING);
    expect_desired_err("{\"v\":1,\"rollback\":true,\"ctr\":1}", UPK_E_FIELD_MISSING);
    expect_desired_err("{\"v\":1,\"bake_s\":60}", UPK_E_FIELD_MISSING);
    expect_desired_err("{\"v\":1,\"sig\":\"AQID\"}", UPK_E_FIELD_MISSING);
}

static void desired_link_fields_are_range_and_type_checked(void **state)
{
    (void)state;
    expect_desired_err("{\"v\":1,\"ctr\":9007199254740994}", UPK_E_FIELD_RANGE);
    expect_desired_err("{\"v\":1,\"ctr\":-1}", UPK_E_FIELD_RANGE);
    expect_desired_err("{\"v\":1,\"ctr\":1.5}", UPK_E_FIELD_RANGE);
    expect_desired_err("{\"v\":1,\"ctr\":\"1\"}", UPK_E_FIELD_TYPE);
    expect_desired_err("{\"v\":1,\"fresh_until\":253402300800}", UPK_E_FIELD_RANGE);
    expect_desired_err("{\"v\":1,\"fresh_until\":-5}", UPK_E_FIELD_RANGE);
    expect_desired_err("{\"v\":1,\"fresh_until\":true}", UPK_E_FIELD_TYPE);
    expect_desired_err("{\"v\":1,\"campaign\":\"c\"," DS_KEY
                       ",\"manifest\":\"m\",\"sig\":\"AQID\",\"rollback\":1}",
                       UPK_E_FIELD_TYPE);
    char man[] = "m";
    upk_desired_msg m;
    desired_fill(&m, man, 1, 3);
    char *json = NULL;
    size_t len = 0;
    m.ctr = UPK_DESIRED_CTR_MAX + 1;
    assert_int_equal(upk_desired_encode(&m, &json, &len), UPK_E_FIELD_RANGE);
    m.ctr = 1;
    m.fresh_until = -1;
    assert_int_equal(upk_desired_encode(&m, &json, &len), UPK_E_FIELD_RANGE);
    assert_null(json);
}

/* A refresh (new ctr, new fresh_until) is the same assignment; any signed
 * or assignment field makes another one. */
static void desired_assignment_id_ignores_only_ctr_and_freshness(void **state)
{
    (void)state;
    char man[] = "manifest-bytes";
    upk_desired_msg m;
    desired_fill(&m, man, strlen(man), 8);
    uint8_t a[UPK_SHA256_LEN], b[UPK_SHA256_LEN];
    assert_int_equal(upk_desired_assignment_id(&m, a), UPK_OK);
    m.ctr = 99;
    m.fresh_until = 1900000000;
    assert_int_equal(upk_desired_assignment_id(&m, b), UPK_OK);
    assert_memory_equal(a, b, sizeof(a));
    upk_desired_msg v = m;
    v.bake_s++;
    assert_int_equal(upk_desired_assignment_id(&v, b), UPK_OK);
    assert_memory_not_equal(a, b, sizeof(a));
    v = m;
    v.rollback = true;
    assert_int_equal(upk_desired_assignment_id(&v, b), UPK_OK);
    assert_memory_not_equal(a, b, sizeof(a));
    v = m;
    SET(v.campaign, "camp-2");
    assert_int_equal(upk_desired_assignment_id(&v, b), UPK_OK);
    assert_memory_not_equal(a, b, sizeof(a));
    v = m;
    v.sig[0] ^= 1;
    assert_int_equal(upk_desired_assignment_id(&v, b), UPK_OK);
    assert_memory_not_equal(a, b, sizeof(a));
    v = m;
    v.manifest_len--;
    assert_int_equal(upk_desired_assignment_id(&v, b), UPK_OK);
    assert_memory_not_equal(a, b, sizeof(a));
    upk_desired_msg c;
    memset(&c, 0, sizeof(c));
    c.clear = true;
    c.ctr = 7;
    assert_int_equal(upk_desired_assignment_id(&c, b), UPK_OK);
    uint8_t zero[UPK_SHA256_LEN] = {0};
    assert_memory_equal(b, zero, sizeof(zero));
    assert_int_equal(upk_desired_assignment_id(NULL, b), UPK_E_INVALID_ARG);
    assert_int_equal(upk_desired_assignment_id(&m, NULL), UPK_E_INVALID_ARG);
}

static void desired_cleanup_is_safe_on_zeroed_and_null(void **state)
{
    (void)state;
    upk_desired_msg m;
    memset(&m, 0, sizeof(m));
    upk_desired_cleanup(&m);
    upk_desired_cleanup(NULL);
    assert_null(m.manifest);
}

/* ---- event */

static void full_event(upk_event_msg *m)
{
    memset(m, 0, sizeof(*m));
    m->seq = 9007199254740992ULL; /* 2^53, the largest exact integer */
    m->ts = 1795000000;
    SET(m->campaign, "camp.1");
    SET(m->release, "fw");
    SET(m->version, "1.2.3");
    m->step = UPK_STATUS_HEALTH_CHECK;
    m->progress = 100;
    m->error = UPK_E_HASH_MISMATCH;
    SET(m->message, "sha256 \"mismatch\"\n\xc3\xa9 \\ done");
    m->health.present = true;
    m->health.restarts = UINT32_MAX;
    m->health.boots = 2;
    m->health.check_ok = 0;
    m->health.metric_count = 8;
    for (size_t i = 0; i < 8; i++) {
        snprintf(m->health.metric_name[i], sizeof(m->health.metric_name[i]), "metric_%zu", i);
        m->health.metric_value[i] = (double)i * 1.1 - 3.0;
    }
    m->health.metric_value[7] = 1e300;
    m->health.metric_value[6] = 0.1;
}

static void event_round_trips_every_field(void **state)
{
    (void)state;
    upk_event_msg m, d;
    full_event(&m);
    char *json = NULL;
    size_t len = 0;
    assert_int_equal(upk_event_encode(&m, &json, &len), UPK_OK);
    assert_non_null(strstr(json, "\"step\":\"health_check\""));
    assert_non_null(strstr(json, "\"check_ok\":false"));
    assert_non_null(strstr(json, "\"seq\":9007199254740992"));
    assert_int_equal(upk_event_decode(json, len, &d), UPK_OK);
    assert_true(upk_test_event_eq(&m, &d));
    free(json);

    full_event(&m);
    m.health.check_ok = 1;
    assert_int_equal(upk_event_encode(&m, &json, &len), UPK_OK);
    assert_non_null(strstr(json, "\"check_ok\":true"));
    assert_int_equal(upk_event_decode(json, len, &d), UPK_OK);
    assert_true(upk_test_event_eq(&m, &d));
    free(json);
}

static void event_round_trips_minimal(void **state)
{
    (void)state;
    upk_event_msg m, d;
    memset(&m, 0, sizeof(m));
    m.seq = 1;
    m.step = UPK_STATUS_DOWNLOADING;
    char *json = NULL;
    size_t len = 0;
    assert_int_equal(upk_event_encode(&m, &json, &len), UPK_OK);
    assert_string_equal(json, "{\"v\":1,\"seq\":1,\"ts\":0,\"step\":\"downloading\"}");
    assert_int_equal(upk_event_decode(json, len, &d), UPK_OK);
    assert_false(d.health.present);
    assert_true(upk_test_event_eq(&m, &d));
    free(json);
}

static void event_health_without_check_means_not_run(void **state)
{
    (void)state;
    upk_event_msg m, d;
    memset(&m, 0, sizeof(m));
    m.seq = 3;
    m.step = UPK_STATUS_COMMITTED;
    m.health.present = true;
    m.health.check_ok = -1;
    char *json = NULL;
    size_t len = 0;
    assert_int_equal(upk_event_encode(&m, &json, &len), UPK_OK);
    assert_null(strstr(json, "check_ok"));
    assert_int_equal(upk_event_decode(json, len, &d), UPK_OK);
    assert_true(d.health.present);
    assert_int_equal(d.health.check_ok, -1);
    free(json);
}

static void event_message_keeps_escaped_backslash_u0000_text(void **state)
{
    (void)state;
    /* "\\u0000" on the wire is a backslash then "u0000": text, not a NUL. */
    upk_event_msg d;
    assert_int_equal(event_dec("{\"v\":1,\"seq\":1,\"ts\":1,\"step\":\"idle\",\"message\":\"a\\\\"
                               "u0000b\"}",
                               &d),
                     UPK_OK);
    assert_string_equal(d.message, "a\\u0000b");
}

#define EV_HEAD "{\"v\":1,\"seq\":1,\"ts\":1,\"step\":\"failed\""

static void event_decode_rejects_missing_and_wrong_types(void **state)
{
    (void)state;
    expect_event_err("{\"v\":1,\"ts\":1,\"step\":\"idle\"}", UPK_E_FIELD_MISSING);
    expect_event_err("{\"v\":1,\"seq\":1,\"step\":\"idle\"}", UPK_E_FIELD_MISSING);
    expect_event_err("{\"v\":1,\"seq\":1,\"ts\":1}", UPK_E_FIELD_MISSING);
    expect_event_err("{\"v\":1,\"seq\":\"1\",\"ts\":1,\"step\":\"idle\"}", UPK_E_FIELD_TYPE);
    expect_event_err("{\"v\":1,\"seq\":1,\"ts\":1,\"step\":3}", UPK_E_FIELD_TYPE);
    expect_event_err(EV_HEAD ",\"progress\":\"50%\"}", UPK_E_FIELD_TYPE);
    expect_event_err(EV_HEAD ",\"message\":[\"x\"]}", UPK_E_FIELD_TYPE);
    expect_event_err(EV_HEAD ",\"health\":[]}", UPK_E_FIELD_TYPE);
    expect_event_err(EV_HEAD ",\"health\":{\"check_ok\":1}}", UPK_E_FIELD_TYPE);
    expect_event_err(EV_HEAD ",\"health\":{\"restarts\":true}}", UPK_E_FIELD_TYPE);
    expect_event_err(EV_HEAD ",\"health\":{\"metrics\":[1]}}", UPK_E_FIELD_TYPE);
    expect_event_err(EV_HEAD ",\"health\":{\"metrics\":{\"cpu\":\"high\"}}}", UPK_E_FIELD_TYPE);
    expect_event_err("{\"v\":3,\"seq\":1,\"ts\":1,\"step\":\"idle\"}", UPK_E_VERSION_UNSUPPORTED);
}

static void event_decode_rejects_out_of_range_values(void **state)
{
    (void)state;
    expect_event_err("{\"v\":1,\"seq\":0,\"ts\":1,\"step\":\"idle\"}", UPK_E_FIELD_RANGE);
    expect_event_err("{\"v\":1,\"seq\":9007199254740994,\"ts\":1,\"step\":\"idle\"}",
                     UPK_E_FIELD_RANGE);
    expect_event_err("{\"v\":1,\"seq\":2.5,\"ts\":1,\"step\":\"idle\"}", UPK_E_FIELD_RANGE);
    expect_event_err("{\"v\":1,\"seq\":1,\"ts\":1,\"step\":\"done\"}", UPK_E_FIELD_RANGE);
    expect_event_err(EV_HEAD ",\"progress\":101}", UPK_E_FIELD_RANGE);
    expect_event_err(EV_HEAD ",\"error\":\"sig_invalid\"}", UPK_E_FIELD_RANGE);
    expect_event_err(EV_HEAD ",\"version\":\"1\\n2\"}", UPK_E_FIELD_RANGE);
    expect_event_err(EV_HEAD ",\"health\":{\"restarts\":-1}}", UPK_E_FIELD_RANGE);
    expect_event_err(EV_HEAD ",\"health\":{\"boots\":4294967296}}", UPK_E_FIELD_RANGE);
    expect_event_err(EV_HEAD ",\"health\":{\"metrics\":{\"a\":1e999}}}", UPK_E_FIELD_RANGE);
    /* duplicate names are refused as JSON, at any depth */
    expect_event_err(EV_HEAD ",\"health\":{\"metrics\":{\"a\":1,\"a\":2}}}", UPK_E_JSON_INVALID);
}

static void event_decode_rejects_bad_ids_and_lengths(void **state)
{
    (void)state;
    expect_event_err(EV_HEAD ",\"campaign\":\"/x\"}", UPK_E_ID_INVALID);
    expect_event_err(EV_HEAD ",\"release\":\"r#\"}", UPK_E_ID_INVALID);
    expect_event_err(EV_HEAD ",\"health\":{\"metrics\":{\"bad name\":1}}}", UPK_E_ID_INVALID);
    expect_event_err(EV_HEAD ",\"health\":{\"metrics\":{\"\":1}}}", UPK_E_ID_INVALID);
    expect_event_err(EV_HEAD ",\"health\":{\"metrics\":{\"a\":1,\"b\":2,\"c\":3,\"d\":4,\"e\":5,"
                             "\"f\":6,\"g\":7,\"h\":8,\"i\":9}}}",
                     UPK_E_FIELD_TOO_LONG);
    char *msg = repeat('m', UPK_ERRMSG_MAX + 1);
    char *s = fmt(EV_HEAD ",\"message\":\"%s\"}", msg);
    expect_event_err(s, UPK_E_FIELD_TOO_LONG);
    free(s);
    msg[UPK_ERRMSG_MAX] = '\0';
    s = fmt(EV_HEAD ",\"message\":\"%s\"}", msg);
    upk_event_msg d;
    assert_int_equal(event_dec(s, &d), UPK_OK);
    assert_int_equal(strlen(d.message), UPK_ERRMSG_MAX);
    free(s);
    free(msg);
}

static void event_decode_rejects_every_truncation(void **state)
{
    (void)state;
    upk_event_msg m;
    full_event(&m);
    char *json = NULL;
    size_t len = 0;
    assert_int_equal(upk_event_encode(&m, &json, &len), UPK_OK);
    for (size_t n = 0; n < len; n++) {
        char *b = malloc(n > 0 ? n : 1);
        assert_non_null(b);
        memcpy(b, json, n);
        upk_event_msg d;
        poison(&d, sizeof(d));
        assert_int_equal(upk_event_decode(b, n, &d), UPK_E_JSON_INVALID);
        assert_true(is_poisoned(&d, sizeof(d)));
        free(b);
    }
    free(json);
}

static void expect_event_enc_err(const upk_event_msg *m, upk_err want)
{
    char *json = NULL;
    size_t len = 0;
    upk_err got = upk_event_encode(m, &json, &len);
    if (got != want)
        fail_msg("event encode: got %s want %s", upk_err_str(got), upk_err_str(want));
    assert_null(json);
}

static void event_encode_rejects_invalid_input(void **state)
{
    (void)state;
    upk_event_msg m;
    char *json = NULL;
    assert_int_equal(upk_event_encode(NULL, &json, NULL), UPK_E_INVALID_ARG);
    full_event(&m);
    m.seq = 0;
    expect_event_enc_err(&m, UPK_E_FIELD_RANGE);
    full_event(&m);
    m.seq = MAX_EXACT + 1;
    expect_event_enc_err(&m, UPK_E_FIELD_RANGE);
    full_event(&m);
    m.progress = 101;
    expect_event_enc_err(&m, UPK_E_FIELD_RANGE);
    full_event(&m);
    m.step = UPK_STATUS__COUNT;
    expect_event_enc_err(&m, UPK_E_FIELD_RANGE);
    full_event(&m);
    m.error = UPK_E__COUNT;
    expect_event_enc_err(&m, UPK_E_FIELD_RANGE);
    full_event(&m);
    m.health.check_ok = 2;
    expect_event_enc_err(&m, UPK_E_FIELD_RANGE);
    full_event(&m);
    m.health.metric_value[3] = INFINITY;
    expect_event_enc_err(&m, UPK_E_FIELD_RANGE);
    full_event(&m);
    SET(m.health.metric_name[5], "metric_1");
    expect_event_enc_err(&m, UPK_E_FIELD_RANGE);
    full_event(&m);
    m.health.metric_count = 9;
    expect_event_enc_err(&m, UPK_E_FIELD_TOO_LONG);
    full_event(&m);
    SET(m.health.metric_name[0], "no good");
    expect_event_enc_err(&m, UPK_E_ID_INVALID);
    full_event(&m);
    memset(m.message, 'x', sizeof(m.message));
    expect_event_enc_err(&m, UPK_E_FIELD_TOO_LONG);
    full_event(&m);
    SET(m.release, "r/1");
    expect_event_enc_err(&m, UPK_E_ID_INVALID);
    /* health ignored when not present, so its garbage does not matter */
    full_event(&m);
    m.health.present = false;
    m.health.check_ok = 99;
    assert_int_equal(upk_event_encode(&m, &json, NULL), UPK_OK);
    free(json);
}

/* ---- chunk request */

static void chunk_req_round_trips(void **state)
{
    (void)state;
    upk_chunk_req m, d;
    for (int i = 0; i < UPK_SHA256_LEN; i++)
        m.artifact[i] = (uint8_t)(0xf0 + i);
    m.offset = MAX_EXACT;
    m.length = UPK_CHUNK_MAX;
    char *json = NULL;
    size_t len = 0;
    assert_int_equal(upk_chunk_req_encode(&m, &json, &len), UPK_OK);
    assert_int_equal(upk_chunk_req_decode(json, len, &d), UPK_OK);
    assert_true(upk_test_chunk_req_eq(&m, &d));
    free(json);
    m.offset = 0;
    m.length = 1;
    assert_int_equal(upk_chunk_req_encode(&m, &json, &len), UPK_OK);
    assert_int_equal(upk_chunk_req_decode(json, len, &d), UPK_OK);
    assert_true(upk_test_chunk_req_eq(&m, &d));
    free(json);
}

/* ---- event acknowledgement */

static upk_err ack_dec(const char *s, uint64_t *seq)
{
    size_t n;
    char *b = exact(s, &n);
    upk_err err = upk_ack_decode(b, n, seq);
    free(b);
    return err;
}

static void ack_round_trips_and_reads_an_event_seq(void **state)
{
    (void)state;
    const uint64_t seqs[] = {1, 17, MAX_EXACT};
    for (size_t i = 0; i < sizeof(seqs) / sizeof(seqs[0]); i++) {
        char *json = NULL;
        size_t len = 0;
        uint64_t got = 0;
        assert_int_equal(upk_ack_encode(seqs[i], &json, &len), UPK_OK);
        assert_int_equal(upk_ack_decode(json, len, &got), UPK_OK);
        assert_true(got == seqs[i]);
        free(json);
    }
    /* The seq of an event the controller cannot otherwise decode. */
    uint64_t got = 0;
    assert_int_equal(ack_dec("{\"v\":1,\"seq\":42,\"step\":\"no_such_step\"}", &got), UPK_OK);
    assert_true(got == 42);
}

static void ack_rejects_bad_input_and_leaves_seq(void **state)
{
    (void)state;
    static const struct {
        const char *json;
        upk_err want;
    } bad[] = {
        {"{\"v\":1}", UPK_E_FIELD_MISSING},
        {"{\"v\":1,\"seq\":0}", UPK_E_FIELD_RANGE},
        {"{\"v\":1,\"seq\":-3}", UPK_E_FIELD_RANGE},
        {"{\"v\":1,\"seq\":1.5}", UPK_E_FIELD_RANGE},
        {"{\"v\":1,\"seq\":\"7\"}", UPK_E_FIELD_TYPE},
        {"{\"v\":1,\"seq\":9007199254740994}", UPK_E_FIELD_RANGE},
        {"{\"v\":1,\"seq\":1,\"seq\":2}", UPK_E_JSON_INVALID},
        {"{\"seq\":1}", UPK_E_FIELD_MISSING},
        {"[1]", UPK_E_FIELD_TYPE},
        {"", UPK_E_JSON_INVALID},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint64_t seq = 99;
        upk_err got = ack_dec(bad[i].json, &seq);
        if (got != bad[i].want)
            fail_msg("ack %s: got %s want %s", bad[i].json, upk_err_str(got),
                     upk_err_str(bad[i].want));
        assert_true(seq == 99);
    }
    char *json = NULL;
    assert_int_equal(upk_ack_encode(0, &json, NULL), UPK_E_FIELD_RANGE);
    assert_int_equal(upk_ack_encode(MAX_EXACT + 1, &json, NULL), UPK_E_FIELD_RANGE);
    assert_null(json);
    assert_int_equal(upk_ack_encode(1, NULL, NULL), UPK_E_INVALID_ARG);
    assert_int_equal(upk_ack_decode(NULL, 0, NULL), UPK_E_INVALID_ARG);
}

#define CR_ART "\"artifact\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\""

static void chunk_req_decode_rejects_bad_input(void **state)
{
    (void)state;
    expect_chunk_req_err("{\"v\":1,\"offset\":0,\"length\":1}", UPK_E_FIELD_MISSING);
    expect_chunk_req_err("{\"v\":1," CR_ART ",\"length\":1}", UPK_E_FIELD_MISSING);
    expect_chunk_req_err("{\"v\":1," CR_ART ",\"offset\":0}", UPK_E_FIELD_MISSING);
    expect_chunk_req_err("{\"v\":1," CR_ART ",\"offset\":\"0\",\"length\":1}", UPK_E_FIELD_TYPE);
    expect_chunk_req_err("{\"v\":1,\"artifact\":5,\"offset\":0,\"length\":1}", UPK_E_FIELD_TYPE);
    expect_chunk_req_err("{\"v\":1," CR_ART ",\"offset\":0,\"length\":0}", UPK_E_FIELD_RANGE);
    expect_chunk_req_err("{\"v\":1," CR_ART ",\"offset\":0,\"length\":262145}", UPK_E_FIELD_RANGE);
    expect_chunk_req_err("{\"v\":1," CR_ART ",\"offset\":-1,\"length\":1}", UPK_E_FIELD_RANGE);
    expect_chunk_req_err("{\"v\":1," CR_ART ",\"offset\":9007199254740994,\"length\":1}",
                         UPK_E_FIELD_RANGE);
    expect_chunk_req_err("{\"v\":1,\"artifact\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
                         "AAAAAAAAAAAAAAA\",\"offset\":0,\"length\":1}",
                         UPK_E_FIELD_RANGE);
    expect_chunk_req_err("{\"v\":1,\"artifact\":\"abc\",\"offset\":0,\"length\":1}",
                         UPK_E_FIELD_RANGE);
    expect_chunk_req_err("{\"v\":1,\"artifact\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                         "aaaaaaaaaaaaaaaaaa\",\"offset\":0,\"length\":1}",
                         UPK_E_FIELD_TOO_LONG);
    expect_chunk_req_err("{\"v\":7," CR_ART ",\"offset\":0,\"length\":1}",
                         UPK_E_VERSION_UNSUPPORTED);
    expect_chunk_req_err("{\"v\":1," CR_ART ",\"offset\":0,\"length\":1", UPK_E_JSON_INVALID);
    expect_chunk_req_err("{\"v\":1," CR_ART ",\"offset\":0,\"length\":1} 1", UPK_E_JSON_INVALID);
}

static void chunk_req_encode_rejects_bad_range(void **state)
{
    (void)state;
    upk_chunk_req m;
    memset(&m, 0, sizeof(m));
    char *json = NULL;
    m.length = 0;
    assert_int_equal(upk_chunk_req_encode(&m, &json, NULL), UPK_E_FIELD_RANGE);
    m.length = UPK_CHUNK_MAX + 1;
    assert_int_equal(upk_chunk_req_encode(&m, &json, NULL), UPK_E_FIELD_RANGE);
    m.length = 1;
    m.offset = MAX_EXACT + 1;
    assert_int_equal(upk_chunk_req_encode(&m, &json, NULL), UPK_E_FIELD_RANGE);
    assert_int_equal(upk_chunk_req_encode(NULL, &json, NULL), UPK_E_INVALID_ARG);
    assert_null(json);
}

/* ---- chunk data */

static void chunk_hdr_layout_is_big_endian(void **state)
{
    (void)state;
    upk_chunk_hdr h;
    h.status = UPK_CHUNK_OK;
    for (int i = 0; i < UPK_SHA256_LEN; i++)
        h.artifact[i] = (uint8_t)i;
    h.offset = 0x0102030405060708ULL;
    h.length = 0x00010203;
    uint8_t buf[UPK_CHUNK_HDR_LEN];
    upk_chunk_hdr_write(&h, buf);
    const uint8_t want_head[8] = {'U', 'P', 'K', 'C', 1, 0, 0, 0};
    assert_memory_equal(buf, want_head, 8);
    assert_memory_equal(buf + 8, h.artifact, UPK_SHA256_LEN);
    const uint8_t want_off[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    assert_memory_equal(buf + 40, want_off, 8);
    const uint8_t want_len[4] = {0, 1, 2, 3};
    assert_memory_equal(buf + 48, want_len, 4);
}

/* Builds header + length data bytes into a new buffer; caller frees. */
static uint8_t *chunk_build(const upk_chunk_hdr *h, size_t datalen, size_t *total)
{
    *total = UPK_CHUNK_HDR_LEN + datalen;
    uint8_t *p = malloc(*total);
    assert_non_null(p);
    upk_chunk_hdr_write(h, p);
    for (size_t i = 0; i < datalen; i++)
        p[UPK_CHUNK_HDR_LEN + i] = (uint8_t)(i * 31);
    return p;
}

static void chunk_parse_round_trips_data(void **state)
{
    (void)state;
    size_t sizes[] = {0, 1, 4096, UPK_CHUNK_MAX};
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        upk_chunk_hdr h, g;
        h.status = UPK_CHUNK_OK;
        memset(h.artifact, 0x5a, sizeof(h.artifact));
        h.offset = 123456789012ULL;
        h.length = (uint32_t)sizes[k];
        size_t total;
        uint8_t *p = chunk_build(&h, sizes[k], &total);
        const uint8_t *data = NULL;
        assert_int_equal(upk_chunk_parse(p, total, &g, &data), UPK_OK);
        assert_true(upk_test_chunk_hdr_eq(&h, &g));
        assert_ptr_equal(data, p + UPK_CHUNK_HDR_LEN);
        free(p);
    }
}

static void chunk_parse_accepts_refusals_without_data(void **state)
{
    (void)state;
    upk_chunk_status st[] = {UPK_CHUNK_NOT_FOUND, UPK_CHUNK_RANGE, UPK_CHUNK_BUSY};
    for (size_t k = 0; k < 3; k++) {
        upk_chunk_hdr h = {.status = st[k], .offset = 5, .length = 0}, g;
        memset(h.artifact, 1, sizeof(h.artifact));
        size_t total;
        uint8_t *p = chunk_build(&h, 0, &total);
        const uint8_t *data = NULL;
        assert_int_equal(upk_chunk_parse(p, total, &g, &data), UPK_OK);
        assert_int_equal(g.status, st[k]);
        free(p);
    }
}

static void expect_chunk_invalid(const uint8_t *p, size_t len)
{
    upk_chunk_hdr g;
    const uint8_t *data = (const uint8_t *)0x1;
    poison(&g, sizeof(g));
    assert_int_equal(upk_chunk_parse(p, len, &g, &data), UPK_E_CHUNK_INVALID);
    assert_true(is_poisoned(&g, sizeof(g)));
    assert_ptr_equal(data, (const uint8_t *)0x1);
}

static void chunk_parse_rejects_malformed_headers(void **state)
{
    (void)state;
    upk_chunk_hdr h = {.status = UPK_CHUNK_OK, .offset = 0, .length = 16};
    memset(h.artifact, 2, sizeof(h.artifact));
    size_t total;
    uint8_t *p = chunk_build(&h, 16, &total);
    /* every truncation, including inside the header */
    for (size_t n = 0; n < total; n++)
        expect_chunk_invalid(p, n);
    size_t offs[] = {0, 3, 4, 5, 6, 7};
    uint8_t vals[] = {'X', 'x', 2, 4, 1, 1};
    for (size_t k = 0; k < sizeof(offs) / sizeof(offs[0]); k++) {
        uint8_t saved = p[offs[k]];
        p[offs[k]] = vals[k];
        expect_chunk_invalid(p, total);
        p[offs[k]] = saved;
    }
    free(p);

    /* one byte more than the header says */
    p = chunk_build(&h, 17, &total);
    expect_chunk_invalid(p, total);
    free(p);

    /* a refusal carrying data */
    h.status = UPK_CHUNK_BUSY;
    p = chunk_build(&h, 16, &total);
    expect_chunk_invalid(p, total);
    free(p);

    /* length over the chunk limit, with that many bytes present */
    h.status = UPK_CHUNK_OK;
    h.length = UPK_CHUNK_MAX + 1;
    p = chunk_build(&h, UPK_CHUNK_MAX + 1, &total);
    expect_chunk_invalid(p, total);
    free(p);

    upk_chunk_hdr g;
    const uint8_t *data;
    assert_int_equal(upk_chunk_parse(NULL, 60, &g, &data), UPK_E_INVALID_ARG);
}

/* ---- operator request / reply */

static void ctl_req_round_trips_args(void **state)
{
    (void)state;
    upk_ctl_req m, d;
    memset(&m, 0, sizeof(m));
    SET(m.id, "req-1");
    SET(m.cmd, "campaign.create");
    m.args = cJSON_Parse("{\"release\":\"fw\",\"stages\":[1,10,50,100],\"x\":{\"y\":null,"
                         "\"z\":-1.5e-7}}");
    assert_non_null(m.args);
    char *json = NULL;
    size_t len = 0;
    assert_int_equal(upk_ctl_req_encode(&m, &json, &len), UPK_OK);
    assert_int_equal(upk_ctl_req_decode(json, len, &d), UPK_OK);
    assert_true(upk_test_ctl_req_eq(&m, &d));
    upk_ctl_req_cleanup(&d);
    assert_null(d.args);
    upk_ctl_req_cleanup(&d);
    free(json);
    cJSON_Delete(m.args);
}

static void ctl_req_null_args_encode_as_empty_object(void **state)
{
    (void)state;
    upk_ctl_req m, d;
    memset(&m, 0, sizeof(m));
    SET(m.id, "r");
    SET(m.cmd, "status");
    char *json = NULL;
    size_t len = 0;
    assert_int_equal(upk_ctl_req_encode(&m, &json, &len), UPK_OK);
    assert_string_equal(json, "{\"v\":1,\"id\":\"r\",\"cmd\":\"status\",\"args\":{}}");
    free(json);
    assert_int_equal(ctl_req_dec("{\"v\":1,\"id\":\"r\",\"cmd\":\"status\"}", &d), UPK_OK);
    assert_non_null(d.args);
    assert_true(cJSON_IsObject(d.args));
    assert_null(d.args->child);
    upk_ctl_req_cleanup(&d);
}

static void ctl_req_decode_rejects_bad_input(void **state)
{
    (void)state;
    expect_ctl_req_err("{\"v\":1,\"cmd\":\"status\"}", UPK_E_FIELD_MISSING);
    expect_ctl_req_err("{\"v\":1,\"id\":\"r\"}", UPK_E_FIELD_MISSING);
    expect_ctl_req_err("{\"v\":1,\"id\":\"r r\",\"cmd\":\"status\"}", UPK_E_ID_INVALID);
    expect_ctl_req_err("{\"v\":1,\"id\":\"r\",\"cmd\":\"Status\"}", UPK_E_FIELD_RANGE);
    expect_ctl_req_err("{\"v\":1,\"id\":\"r\",\"cmd\":\"\"}", UPK_E_FIELD_RANGE);
    expect_ctl_req_err("{\"v\":1,\"id\":\"r\",\"cmd\":\"a b\"}", UPK_E_FIELD_RANGE);
    expect_ctl_req_err("{\"v\":1,\"id\":\"r\",\"cmd\":1}", UPK_E_FIELD_TYPE);
    expect_ctl_req_err("{\"v\":1,\"id\":\"r\",\"cmd\":\"s\",\"args\":[]}", UPK_E_FIELD_TYPE);
    expect_ctl_req_err("{\"v\":1,\"id\":\"r\",\"cmd\":\"s\",\"args\":null}", UPK_E_FIELD_TYPE);
    expect_ctl_req_err("{\"v\":1,\"id\":\"r\",\"cmd\":\"s\",\"args\":{\"n\":[1e999]}}",
                       UPK_E_FIELD_RANGE);
    expect_ctl_req_err("{\"v\":2,\"id\":\"r\",\"cmd\":\"s\"}", UPK_E_VERSION_UNSUPPORTED);
    expect_ctl_req_err("{\"v\":1,\"id\":\"r\",\"cmd\":\"s\",\"args\":{\"a\":{\"\":1,\"\":2}}}",
                       UPK_E_JSON_INVALID);
    char *cmd = repeat('c', UPK_CMD_MAX + 1);
    char *s = fmt("{\"v\":1,\"id\":\"r\",\"cmd\":\"%s\"}", cmd);
    expect_ctl_req_err(s, UPK_E_FIELD_TOO_LONG);
    free(s);
    free(cmd);
}

static void ctl_req_encode_rejects_bad_input(void **state)
{
    (void)state;
    upk_ctl_req m;
    memset(&m, 0, sizeof(m));
    char *json = NULL;
    SET(m.id, "bad id");
    SET(m.cmd, "status");
    assert_int_equal(upk_ctl_req_encode(&m, &json, NULL), UPK_E_ID_INVALID);
    SET(m.id, "ok");
    SET(m.cmd, "Status");
    assert_int_equal(upk_ctl_req_encode(&m, &json, NULL), UPK_E_FIELD_RANGE);
    SET(m.cmd, "status");
    m.args = cJSON_CreateArray();
    assert_int_equal(upk_ctl_req_encode(&m, &json, NULL), UPK_E_FIELD_TYPE);
    cJSON_Delete(m.args);
    m.args = cJSON_CreateObject();
    assert_non_null(cJSON_AddNumberToObject(m.args, "n", INFINITY));
    assert_int_equal(upk_ctl_req_encode(&m, &json, NULL), UPK_E_FIELD_RANGE);
    cJSON_Delete(m.args);
    m.args = cJSON_CreateObject();
    assert_non_null(cJSON_AddNumberToObject(m.args, "n", 1));
    assert_non_null(cJSON_AddNumberToObject(m.args, "n", 2));
    assert_int_equal(upk_ctl_req_encode(&m, &json, NULL), UPK_E_FIELD_RANGE);
    cJSON_Delete(m.args);
    assert_int_equal(upk_ctl_req_encode(NULL, &json, NULL), UPK_E_INVALID_ARG);
    assert_null(json);
}

static void ctl_resp_round_trips_success_and_failure(void **state)
{
    (void)state;
    upk_ctl_resp m, d;
    memset(&m, 0, sizeof(m));
    SET(m.id, "req-1");
    m.data = cJSON_Parse("[{\"device\":\"d1\",\"status\":\"idle\"},2,\"x\",true,null]");
    assert_non_null(m.data);
    char *json = NULL;
    size_t len = 0;
    assert_int_equal(upk_ctl_resp_encode(&m, &json, &len), UPK_OK);
    assert_non_null(strstr(json, "\"ok\":true"));
    assert_null(strstr(json, "error"));
    assert_int_equal(upk_ctl_resp_decode(json, len, &d), UPK_OK);
    assert_true(upk_test_ctl_resp_eq(&m, &d));
    upk_ctl_resp_cleanup(&d);
    free(json);
    cJSON_Delete(m.data);

    memset(&m, 0, sizeof(m));
    SET(m.id, "req-2");
    m.error = UPK_E_NOT_FOUND;
    SET(m.message, "no release \"fw\"; list them with `upkeep release list`");
    assert_int_equal(upk_ctl_resp_encode(&m, &json, &len), UPK_OK);
    assert_non_null(strstr(json, "\"ok\":false,\"error\":\"NOT_FOUND\""));
    assert_null(strstr(json, "data"));
    assert_int_equal(upk_ctl_resp_decode(json, len, &d), UPK_OK);
    assert_true(upk_test_ctl_resp_eq(&m, &d));
    assert_null(d.data);
    upk_ctl_resp_cleanup(&d);
    free(json);
}

static void ctl_resp_null_data_decodes_as_absent(void **state)
{
    (void)state;
    upk_ctl_resp d;
    assert_int_equal(ctl_resp_dec("{\"v\":1,\"id\":\"r\",\"ok\":true,\"data\":null}", &d), UPK_OK);
    assert_null(d.data);
    assert_int_equal(
        ctl_resp_dec("{\"v\":1,\"id\":\"r\",\"ok\":true,\"error\":\"OK\",\"data\":7}", &d), UPK_OK);
    assert_non_null(d.data);
    assert_true(cJSON_IsNumber(d.data));
    upk_ctl_resp_cleanup(&d);
    upk_ctl_resp_cleanup(NULL);
}

static void ctl_resp_decode_rejects_bad_input(void **state)
{
    (void)state;
    expect_ctl_resp_err("{\"v\":1,\"ok\":true}", UPK_E_FIELD_MISSING);
    expect_ctl_resp_err("{\"v\":1,\"id\":\"r\"}", UPK_E_FIELD_MISSING);
    expect_ctl_resp_err("{\"v\":1,\"id\":\"r\",\"ok\":false}", UPK_E_FIELD_MISSING);
    expect_ctl_resp_err("{\"v\":1,\"id\":\"r\",\"ok\":1}", UPK_E_FIELD_TYPE);
    expect_ctl_resp_err("{\"v\":1,\"id\":\"r\",\"ok\":false,\"error\":404}", UPK_E_FIELD_TYPE);
    expect_ctl_resp_err("{\"v\":1,\"id\":\"r\",\"ok\":true,\"message\":{}}", UPK_E_FIELD_TYPE);
    expect_ctl_resp_err("{\"v\":1,\"id\":\"r\",\"ok\":true,\"error\":\"DENIED\"}",
                        UPK_E_FIELD_RANGE);
    expect_ctl_resp_err("{\"v\":1,\"id\":\"r\",\"ok\":false,\"error\":\"OK\"}", UPK_E_FIELD_RANGE);
    expect_ctl_resp_err("{\"v\":1,\"id\":\"r\",\"ok\":false,\"error\":\"NOPE\"}",
                        UPK_E_FIELD_RANGE);
    expect_ctl_resp_err("{\"v\":1,\"id\":\"r\",\"ok\":true,\"data\":{\"a\":-1e999}}",
                        UPK_E_FIELD_RANGE);
    expect_ctl_resp_err("{\"v\":1,\"id\":\"\",\"ok\":true}", UPK_E_ID_INVALID);
    expect_ctl_resp_err("{\"v\":9,\"id\":\"r\",\"ok\":true}", UPK_E_VERSION_UNSUPPORTED);
    char *msg = repeat('m', UPK_ERRMSG_MAX + 1);
    char *s = fmt("{\"v\":1,\"id\":\"r\",\"ok\":false,\"error\":\"IO\",\"message\":\"%s\"}", msg);
    expect_ctl_resp_err(s, UPK_E_FIELD_TOO_LONG);
    free(s);
    free(msg);
}

static void ctl_resp_encode_rejects_bad_input(void **state)
{
    (void)state;
    upk_ctl_resp m;
    memset(&m, 0, sizeof(m));
    char *json = NULL;
    SET(m.id, ".x");
    assert_int_equal(upk_ctl_resp_encode(&m, &json, NULL), UPK_E_ID_INVALID);
    SET(m.id, "x");
    m.error = UPK_E__COUNT;
    assert_int_equal(upk_ctl_resp_encode(&m, &json, NULL), UPK_E_FIELD_RANGE);
    m.error = UPK_E_IO;
    memset(m.message, 'a', sizeof(m.message));
    assert_int_equal(upk_ctl_resp_encode(&m, &json, NULL), UPK_E_FIELD_TOO_LONG);
    m.message[0] = '\0';
    m.data = cJSON_CreateNumber(-INFINITY);
    assert_int_equal(upk_ctl_resp_encode(&m, &json, NULL), UPK_E_FIELD_RANGE);
    cJSON_Delete(m.data);
    m.data = cJSON_Parse("[{\"a\":1,\"a\":1}]");
    assert_non_null(m.data);
    assert_int_equal(upk_ctl_resp_encode(&m, &json, NULL), UPK_E_FIELD_RANGE);
    cJSON_Delete(m.data);
    assert_int_equal(upk_ctl_resp_encode(NULL, &json, NULL), UPK_E_INVALID_ARG);
    assert_null(json);
}

static void ctl_resp_encode_refuses_message_over_limit(void **state)
{
    (void)state;
    upk_ctl_resp m;
    memset(&m, 0, sizeof(m));
    SET(m.id, "x");
    char *big = repeat('b', UPK_MSG_MAX);
    m.data = cJSON_CreateString(big);
    assert_non_null(m.data);
    char *json = NULL;
    assert_int_equal(upk_ctl_resp_encode(&m, &json, NULL), UPK_E_MSG_TOO_LARGE);
    assert_null(json);
    cJSON_Delete(m.data);
    free(big);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(status_names_round_trip),
        cmocka_unit_test(status_from_str_rejects_unknown_and_leaves_out),
        cmocka_unit_test(status_is_final_only_for_outcomes),
        cmocka_unit_test(state_round_trips_every_field),
        cmocka_unit_test(state_stale_flag_round_trips),
        cmocka_unit_test(state_encode_omits_empty_optional_fields),
        cmocka_unit_test(state_config_support_source_round_trips),
        cmocka_unit_test(state_decode_accepts_minimal_and_defaults),
        cmocka_unit_test(state_decode_accepts_bare_date_support_until),
        cmocka_unit_test(state_decode_ignores_unknown_fields),
        cmocka_unit_test(state_decode_rejects_wrong_version),
        cmocka_unit_test(state_decode_rejects_missing_required_fields),
        cmocka_unit_test(state_decode_rejects_wrong_types),
        cmocka_unit_test(state_decode_rejects_bad_ids),
        cmocka_unit_test(state_decode_rejects_oversized_strings),
        cmocka_unit_test(state_decode_rejects_too_many_modules),
        cmocka_unit_test(state_decode_rejects_out_of_range_values),
        cmocka_unit_test(state_decode_rejects_non_json_and_non_objects),
        cmocka_unit_test(state_decode_rejects_every_truncation),
        cmocka_unit_test(state_decode_rejects_trailing_garbage_but_not_whitespace),
        cmocka_unit_test(state_decode_reads_only_len_bytes),
        cmocka_unit_test(state_decode_rejects_nul_bytes_and_escapes),
        cmocka_unit_test(state_decode_rejects_over_message_limit),
        cmocka_unit_test(state_decode_handles_nesting),
        cmocka_unit_test(state_decode_rejects_null_args),
        cmocka_unit_test(state_encode_rejects_invalid_input),
        cmocka_unit_test(desired_round_trips_exact_manifest_bytes),
        cmocka_unit_test(desired_encode_copies_unterminated_manifest),
        cmocka_unit_test(desired_decode_unescapes_json_string),
        cmocka_unit_test(desired_accepts_manifest_at_limit_and_rejects_over),
        cmocka_unit_test(desired_encode_rejects_message_over_limit),
        cmocka_unit_test(desired_decode_rejects_missing_fields),
        cmocka_unit_test(desired_decode_rejects_wrong_types),
        cmocka_unit_test(desired_decode_rejects_bad_values),
        cmocka_unit_test(desired_decode_rejects_oversized_signature),
        cmocka_unit_test(desired_encode_rejects_invalid_input),
        cmocka_unit_test(desired_round_trips_link_fields),
        cmocka_unit_test(desired_clear_round_trips),
        cmocka_unit_test(desired_partial_assignment_is_field_missing),
        cmocka_unit_test(desired_link_fields_are_range_and_type_checked),
        cmocka_unit_test(desired_assignment_id_ignores_only_ctr_and_freshness),
        cmocka_unit_test(desired_cleanup_is_safe_on_zeroed_and_null),
        cmocka_unit_test(event_round_trips_every_field),
        cmocka_unit_test(event_round_trips_minimal),
        cmocka_unit_test(event_health_without_check_means_not_run),
        cmocka_unit_test(event_message_keeps_escaped_backslash_u0000_text),
        cmocka_unit_test(event_decode_rejects_missing_and_wrong_types),
        cmocka_unit_test(event_decode_rejects_out_of_range_values),
        cmocka_unit_test(event_decode_rejects_bad_ids_and_lengths),
        cmocka_unit_test(event_decode_rejects_every_truncation),
        cmocka_unit_test(event_encode_rejects_invalid_input),
        cmocka_unit_test(ack_round_trips_and_reads_an_event_seq),
        cmocka_unit_test(ack_rejects_bad_input_and_leaves_seq),
        cmocka_unit_test(chunk_req_round_trips),
        cmocka_unit_test(chunk_req_decode_rejects_bad_input),
        cmocka_unit_test(chunk_req_encode_rejects_bad_range),
        cmocka_unit_test(chunk_hdr_layout_is_big_endian),
        cmocka_unit_test(chunk_parse_round_trips_data),
        cmocka_unit_test(chunk_parse_accepts_refusals_without_data),
        cmocka_unit_test(chunk_parse_rejects_malformed_headers),
        cmocka_unit_test(ctl_req_round_trips_args),
        cmocka_unit_test(ctl_req_null_args_encode_as_empty_object),
        cmocka_unit_test(ctl_req_decode_rejects_bad_input),
        cmocka_unit_test(ctl_req_encode_rejects_bad_input),
        cmocka_unit_test(ctl_resp_round_trips_success_and_failure),
        cmocka_unit_test(ctl_resp_null_data_decodes_as_absent),
        cmocka_unit_test(ctl_resp_decode_rejects_bad_input),
        cmocka_unit_test(ctl_resp_encode_rejects_bad_input),
        cmocka_unit_test(ctl_resp_encode_refuses_message_over_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
