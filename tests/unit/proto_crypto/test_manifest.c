/* Unit tests for proto/src/manifest.c: encode/decode round trips, every
 * rejection with its exact error, signature verification before decoding
 * (including the committed openssl-signed vector) and the device checks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <cjson/cJSON.h>

#include "upkeep/manifest.h"

#include "crypto_test_util.h"

#define SAFE_INT_MAX 9007199254740992ULL /* 2^53: largest integer JSON carries exactly */
#define T_CREATED    1793534400          /* 2026-11-01T12:00:00Z */
#define T_EXPIRES    1825070400          /* 2027-11-01T12:00:00Z */

static void fill_hash(uint8_t h[UPK_SHA256_LEN], uint8_t seed)
{
    for (size_t i = 0; i < UPK_SHA256_LEN; i++)
        h[i] = (uint8_t)(seed + i * 7);
}

static upk_manifest good_full(void)
{
    upk_manifest m;
    memset(&m, 0, sizeof(m));
    memcpy(m.name, "sensor-fw", sizeof("sensor-fw"));
    memcpy(m.version, "1.2.3", sizeof("1.2.3"));
    m.security_version = 5;
    m.hw_count = 2;
    memcpy(m.hw[0], "rev-a", sizeof("rev-a"));
    memcpy(m.hw[1], "rev-b", sizeof("rev-b"));
    m.type = UPK_RELEASE_FULL;
    memcpy(m.module, "file", sizeof("file"));
    m.size = 4096;
    fill_hash(m.sha256, 1);
    m.target_size = 4096;
    fill_hash(m.target_sha256, 1);
    m.created = T_CREATED;
    m.expires = T_EXPIRES;
    return m;
}

static upk_manifest good_delta(void)
{
    upk_manifest m = good_full();
    m.type = UPK_RELEASE_DELTA;
    memcpy(m.module, "ab-dir", sizeof("ab-dir"));
    m.size = 300;
    fill_hash(m.sha256, 9);
    m.target_size = 1048576;
    fill_hash(m.target_sha256, 33);
    fill_hash(m.base_sha256, 77);
    m.support.present = true;
    m.support.security_until = 1924905600; /* 2031-01-01 */
    memcpy(m.support.delivery, "user-approved", sizeof("user-approved"));
    memcpy(m.support.notice, "Owners are asked first.", sizeof("Owners are asked first."));
    return m;
}

static char *encode_ok(const upk_manifest *m, size_t *len)
{
    char *json = NULL;
    assert_int_equal(upk_manifest_encode(m, &json, len), UPK_OK);
    assert_non_null(json);
    assert_int_equal(strlen(json), *len);
    return json;
}

static void assert_round_trip(const upk_manifest *m)
{
    size_t len = 0, len2 = 0;
    char *json = encode_ok(m, &len);
    upk_manifest back;
    assert_int_equal(upk_manifest_decode(json, len, &back), UPK_OK);
    assert_memory_equal(&back, m, sizeof(back));
    char *again = encode_ok(&back, &len2);
    assert_int_equal(len, len2);
    assert_memory_equal(json, again, len);
    free(again);
    free(json);
}

/* ---- round trips ------------------------------------------------------- */

static void manifest_full_round_trips(void **state)
{
    (void)state;
    upk_manifest m = good_full();
    assert_round_trip(&m);
}

static void manifest_delta_with_support_round_trips(void **state)
{
    (void)state;
    upk_manifest m = good_delta();
    assert_round_trip(&m);
    /* Limits exactly reached are fine. */
    m.hw_count = UPK_HW_MAX;
    for (size_t i = 0; i < UPK_HW_MAX; i++) {
        memset(m.hw[i], 'h', UPK_ID_MAX);
        m.hw[i][0] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef"[i];
        m.hw[i][UPK_ID_MAX] = '\0';
    }
    memset(m.name, 'n', UPK_ID_MAX);
    memset(m.version, '~', UPK_VERSION_STR_MAX);
    memset(m.support.contact, 'c', UPK_TEXT_MAX);
    /* Multi-byte UTF-8 text is kept as is. */
    memcpy(m.support.notice, "Mises \xc3\xa0 jour \xe2\x9c\x93 \xf0\x9f\x94\x92",
           sizeof("Mises \xc3\xa0 jour \xe2\x9c\x93 \xf0\x9f\x94\x92"));
    m.security_version = SAFE_INT_MAX;
    m.size = SAFE_INT_MAX;
    assert_round_trip(&m);
}

static void manifest_encode_uses_fixed_compact_key_order(void **state)
{
    (void)state;
    upk_manifest m = good_full();
    memset(m.sha256, 0xab, sizeof(m.sha256));
    memset(m.target_sha256, 0xab, sizeof(m.target_sha256));
    size_t len = 0;
    char *json = encode_ok(&m, &len);
    static const char want[] =
        "{\"v\":1,\"name\":\"sensor-fw\",\"version\":\"1.2.3\",\"security_version\":5,"
        "\"hw\":[\"rev-a\",\"rev-b\"],\"type\":\"full\",\"module\":\"file\",\"size\":4096,"
        "\"sha256\":\"abababababababababababababababababababababababababababababababab\","
        "\"target_size\":4096,"
        "\"target_sha256\":\"abababababababababababababababababababababababababababababababab\","
        "\"created\":\"2026-11-01T12:00:00Z\",\"expires\":\"2027-11-01T12:00:00Z\"}";
    assert_string_equal(json, want);
    free(json);
}

static void manifest_vector_decodes_and_re_encodes_byte_identically(void **state)
{
    (void)state;
    size_t len = 0, len2 = 0;
    char *json = ct_read_vector("manifest.json", &len);
    assert_non_null(json);
    upk_manifest m;
    assert_int_equal(upk_manifest_decode(json, len, &m), UPK_OK);
    assert_string_equal(m.name, "gateway-fw");
    assert_string_equal(m.version, "2.4.1+build.7");
    assert_int_equal(m.security_version, 7);
    assert_int_equal(m.hw_count, 2);
    assert_string_equal(m.hw[1], "gw-rev-b");
    assert_int_equal(m.type, UPK_RELEASE_DELTA);
    assert_string_equal(m.module, "ab-dir");
    assert_int_equal(m.size, 123456);
    assert_int_equal(m.target_size, 8388608);
    assert_int_equal(m.created, T_CREATED);
    assert_int_equal(m.expires, T_EXPIRES);
    assert_true(m.support.present);
    assert_string_equal(m.support.delivery, "automatic");
    assert_string_equal(m.support.contact, "security@example.org");
    uint8_t want[UPK_SHA256_LEN];
    assert_int_equal(
        upk_hex_decode("f15ff348c30b41de1342e2f6c8308b0bb1d7145b3fc53157b8d17f3cf9b4728e", 64, want,
                       sizeof(want)),
        UPK_OK);
    assert_memory_equal(m.base_sha256, want, sizeof(want));
    char *again = encode_ok(&m, &len2);
    assert_int_equal(len2, len);
    assert_memory_equal(again, json, len);
    free(again);
    free(json);
}

/* ---- decode rejections ------------------------------------------------- */

/* Encodes base, applies one change to the JSON tree (value NULL deletes the
 * field; in_support targets the support object), and decodes the result. */
static upk_err decode_changed(const upk_manifest *base, bool in_support, const char *field,
                              cJSON *value)
{
    size_t len = 0;
    char *json = encode_ok(base, &len);
    cJSON *root = cJSON_Parse(json);
    assert_non_null(root);
    free(json);
    cJSON *obj = in_support ? cJSON_GetObjectItemCaseSensitive(root, "support") : root;
    assert_non_null(obj);
    if (value == NULL)
        cJSON_DeleteItemFromObjectCaseSensitive(obj, field);
    else if (cJSON_GetObjectItemCaseSensitive(obj, field) != NULL)
        assert_true(cJSON_ReplaceItemInObjectCaseSensitive(obj, field, value));
    else
        cJSON_AddItemToObject(obj, field, value);
    char *changed = cJSON_PrintUnformatted(root);
    assert_non_null(changed);
    cJSON_Delete(root);

    upk_manifest out, before;
    memset(&out, 0x5a, sizeof(out));
    memcpy(&before, &out, sizeof(out));
    upk_err err = upk_manifest_decode(changed, strlen(changed), &out);
    if (err != UPK_OK)
        assert_memory_equal(&out, &before, sizeof(out)); /* untouched on failure */
    free(changed);
    return err;
}

static upk_err decode_top(const char *field, cJSON *value)
{
    upk_manifest base = good_delta();
    return decode_changed(&base, false, field, value);
}

static upk_err decode_full_top(const char *field, cJSON *value)
{
    upk_manifest base = good_full();
    return decode_changed(&base, false, field, value);
}

static upk_err decode_support(const char *field, cJSON *value)
{
    upk_manifest base = good_delta();
    return decode_changed(&base, true, field, value);
}

static upk_err decode_text(const char *text)
{
    upk_manifest out;
    return upk_manifest_decode(text, strlen(text), &out);
}

static char *repeat(char c, size_t n)
{
    char *s = malloc(n + 1);
    assert_non_null(s);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

static cJSON *str_n(char c, size_t n)
{
    char *s = repeat(c, n);
    cJSON *j = cJSON_CreateString(s);
    free(s);
    return j;
}

static void manifest_rejects_wrong_v(void **state)
{
    (void)state;
    assert_int_equal(decode_top("v", cJSON_CreateNumber(2)), UPK_E_VERSION_UNSUPPORTED);
    assert_int_equal(decode_top("v", cJSON_CreateNumber(0)), UPK_E_VERSION_UNSUPPORTED);
    assert_int_equal(decode_top("v", cJSON_CreateNumber(1.5)), UPK_E_VERSION_UNSUPPORTED);
    assert_int_equal(decode_top("v", cJSON_CreateString("1")), UPK_E_FIELD_TYPE);
    assert_int_equal(decode_top("v", NULL), UPK_E_FIELD_MISSING);
}

static void manifest_rejects_each_missing_required_field(void **state)
{
    (void)state;
    static const char *const fields[] = {
        "name",   "version",     "security_version", "hw",          "type",    "module",  "size",
        "sha256", "target_size", "target_sha256",    "base_sha256", "created", "expires",
    };
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        print_message("missing %s\n", fields[i]);
        assert_int_equal(decode_top(fields[i], NULL), UPK_E_FIELD_MISSING);
    }
    assert_int_equal(decode_support("security_until", NULL), UPK_E_FIELD_MISSING);
    assert_int_equal(decode_support("delivery", NULL), UPK_E_FIELD_MISSING);
    /* Optional parts may be absent. */
    assert_int_equal(decode_support("notice", NULL), UPK_OK);
    assert_int_equal(decode_support("contact", NULL), UPK_OK);
    assert_int_equal(decode_top("support", NULL), UPK_OK);
}

static void manifest_rejects_wrong_field_types(void **state)
{
    (void)state;
    static const char *const strings[] = {"name",        "version", "type",
                                          "module",      "sha256",  "target_sha256",
                                          "base_sha256", "created", "expires"};
    for (size_t i = 0; i < sizeof(strings) / sizeof(strings[0]); i++) {
        print_message("number for %s\n", strings[i]);
        assert_int_equal(decode_top(strings[i], cJSON_CreateNumber(1)), UPK_E_FIELD_TYPE);
    }
    static const char *const numbers[] = {"security_version", "size", "target_size"};
    for (size_t i = 0; i < sizeof(numbers) / sizeof(numbers[0]); i++) {
        assert_int_equal(decode_top(numbers[i], cJSON_CreateString("1")), UPK_E_FIELD_TYPE);
        assert_int_equal(decode_top(numbers[i], cJSON_CreateTrue()), UPK_E_FIELD_TYPE);
    }
    assert_int_equal(decode_top("hw", cJSON_CreateString("rev-a")), UPK_E_FIELD_TYPE);
    cJSON *hw = cJSON_CreateArray();
    cJSON_AddItemToArray(hw, cJSON_CreateString("rev-a"));
    cJSON_AddItemToArray(hw, cJSON_CreateNumber(3));
    assert_int_equal(decode_top("hw", hw), UPK_E_FIELD_TYPE);
    assert_int_equal(decode_top("name", cJSON_CreateNull()), UPK_E_FIELD_TYPE);
    assert_int_equal(decode_top("support", cJSON_CreateString("yes")), UPK_E_FIELD_TYPE);
    assert_int_equal(decode_top("support", cJSON_CreateArray()), UPK_E_FIELD_TYPE);
    assert_int_equal(decode_support("delivery", cJSON_CreateNumber(1)), UPK_E_FIELD_TYPE);
    assert_int_equal(decode_support("security_until", cJSON_CreateNumber(1)), UPK_E_FIELD_TYPE);
    assert_int_equal(decode_support("notice", cJSON_CreateFalse()), UPK_E_FIELD_TYPE);
    assert_int_equal(decode_support("contact", cJSON_CreateObject()), UPK_E_FIELD_TYPE);
}

static void manifest_rejects_oversized_fields(void **state)
{
    (void)state;
    assert_int_equal(decode_top("name", str_n('n', UPK_ID_MAX + 1)), UPK_E_FIELD_TOO_LONG);
    assert_int_equal(decode_top("version", str_n('1', UPK_VERSION_STR_MAX + 1)),
                     UPK_E_FIELD_TOO_LONG);
    assert_int_equal(decode_top("module", str_n('m', UPK_ID_MAX + 1)), UPK_E_FIELD_TOO_LONG);
    cJSON *hw = cJSON_CreateArray();
    for (int i = 0; i < UPK_HW_MAX + 1; i++)
        cJSON_AddItemToArray(hw, cJSON_CreateString("rev-a"));
    assert_int_equal(decode_top("hw", hw), UPK_E_FIELD_TOO_LONG);
    hw = cJSON_CreateArray();
    cJSON_AddItemToArray(hw, str_n('h', UPK_ID_MAX + 1));
    assert_int_equal(decode_top("hw", hw), UPK_E_FIELD_TOO_LONG);
    assert_int_equal(decode_support("notice", str_n('x', UPK_TEXT_MAX + 1)), UPK_E_FIELD_TOO_LONG);
    assert_int_equal(decode_support("contact", str_n('x', UPK_TEXT_MAX + 1)), UPK_E_FIELD_TOO_LONG);
    assert_int_equal(decode_support("delivery", str_n('x', UPK_ID_MAX + 1)), UPK_E_FIELD_TOO_LONG);

    /* The whole document: padded with whitespace past UPK_MANIFEST_MAX. */
    upk_manifest m = good_delta();
    size_t len = 0;
    char *json = encode_ok(&m, &len);
    char *big = malloc(UPK_MANIFEST_MAX + 1);
    assert_non_null(big);
    memset(big, ' ', UPK_MANIFEST_MAX + 1);
    memcpy(big, json, len);
    upk_manifest out;
    assert_int_equal(upk_manifest_decode(big, UPK_MANIFEST_MAX, &out), UPK_OK);
    assert_int_equal(upk_manifest_decode(big, UPK_MANIFEST_MAX + 1, &out), UPK_E_MSG_TOO_LARGE);
    free(big);
    free(json);
}

static void manifest_rejects_bad_ids_and_versions(void **state)
{
    (void)state;
    assert_int_equal(decode_top("name", cJSON_CreateString(".hidden")), UPK_E_MANIFEST_INVALID);
    assert_int_equal(decode_top("name", cJSON_CreateString("")), UPK_E_MANIFEST_INVALID);
    assert_int_equal(decode_top("name", cJSON_CreateString("a/b")), UPK_E_MANIFEST_INVALID);
    assert_int_equal(decode_top("module", cJSON_CreateString("../sh")), UPK_E_MANIFEST_INVALID);
    assert_int_equal(decode_top("version", cJSON_CreateString("")), UPK_E_MANIFEST_INVALID);
    assert_int_equal(decode_top("version", cJSON_CreateString("1 0")), UPK_E_MANIFEST_INVALID);
    assert_int_equal(decode_top("version", cJSON_CreateString("1\t0")), UPK_E_MANIFEST_INVALID);
    assert_int_equal(decode_top("version", cJSON_CreateString("v\xc3\xa9")),
                     UPK_E_MANIFEST_INVALID);
    assert_int_equal(decode_top("hw", cJSON_CreateArray()), UPK_E_MANIFEST_INVALID);
    cJSON *hw = cJSON_CreateArray();
    cJSON_AddItemToArray(hw, cJSON_CreateString("-rev"));
    assert_int_equal(decode_top("hw", hw), UPK_E_MANIFEST_INVALID);
    assert_int_equal(decode_top("type", cJSON_CreateString("patch")), UPK_E_MANIFEST_INVALID);
    assert_int_equal(decode_top("type", cJSON_CreateString("fullest")), UPK_E_MANIFEST_INVALID);
    assert_int_equal(decode_top("type", cJSON_CreateString("")), UPK_E_MANIFEST_INVALID);
}

static void manifest_rejects_bad_hash_hex(void **state)
{
    (void)state;
    static const char *const fields[] = {"sha256", "target_sha256", "base_sha256"};
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        const char *f = fields[i];
        assert_int_equal(decode_top(f, str_n('a', 63)), UPK_E_MANIFEST_INVALID);
        assert_int_equal(decode_top(f, str_n('a', 65)), UPK_E_MANIFEST_INVALID);
        assert_int_equal(decode_top(f, str_n('A', 64)), UPK_E_MANIFEST_INVALID); /* upper case */
        assert_int_equal(decode_top(f, str_n('g', 64)), UPK_E_MANIFEST_INVALID);
        assert_int_equal(decode_top(f, cJSON_CreateString("")), UPK_E_MANIFEST_INVALID);
        assert_int_equal(decode_top(f, str_n('0', 64)), UPK_OK);
    }
}

static void manifest_rejects_bad_numbers(void **state)
{
    (void)state;
    static const char *const numbers[] = {"security_version", "size", "target_size"};
    for (size_t i = 0; i < sizeof(numbers) / sizeof(numbers[0]); i++) {
        assert_int_equal(decode_top(numbers[i], cJSON_CreateNumber(-1)), UPK_E_MANIFEST_INVALID);
        assert_int_equal(decode_top(numbers[i], cJSON_CreateNumber(1.5)), UPK_E_MANIFEST_INVALID);
        assert_int_equal(decode_top(numbers[i], cJSON_CreateNumber(1e300)), UPK_E_MANIFEST_INVALID);
    }
    assert_int_equal(decode_top("security_version", cJSON_CreateNumber(0)), UPK_OK);
}

static void manifest_rejects_bad_times(void **state)
{
    (void)state;
    assert_int_equal(decode_top("created", cJSON_CreateString("2026-11-01")),
                     UPK_E_MANIFEST_INVALID);
    assert_int_equal(decode_top("created", cJSON_CreateString("2026-11-01T12:00:00+00:00")),
                     UPK_E_MANIFEST_INVALID);
    assert_int_equal(decode_top("created", cJSON_CreateString("2026-13-01T12:00:00Z")),
                     UPK_E_MANIFEST_INVALID);
    assert_int_equal(decode_top("expires", cJSON_CreateString("2027-02-29T00:00:00Z")),
                     UPK_E_MANIFEST_INVALID);
    assert_int_equal(decode_top("expires", cJSON_CreateString("tomorrow")), UPK_E_MANIFEST_INVALID);
    /* expires must be strictly after created. */
    assert_int_equal(decode_top("expires", cJSON_CreateString("2026-11-01T12:00:00Z")),
                     UPK_E_MANIFEST_INVALID);
    assert_int_equal(decode_top("expires", cJSON_CreateString("2026-11-01T11:59:59Z")),
                     UPK_E_MANIFEST_INVALID);
    assert_int_equal(decode_top("expires", cJSON_CreateString("2026-11-01T12:00:01Z")), UPK_OK);
    /* security_until takes either form. */
    assert_int_equal(decode_support("security_until", cJSON_CreateString("2030-06-30")), UPK_OK);
    assert_int_equal(decode_support("security_until", cJSON_CreateString("2030-06-31")),
                     UPK_E_MANIFEST_INVALID);
}

static void manifest_rejects_incoherent_full_and_delta(void **state)
{
    (void)state;
    assert_int_equal(decode_full_top("size", cJSON_CreateNumber(4097)), UPK_E_MANIFEST_INVALID);
    assert_int_equal(decode_full_top("target_size", cJSON_CreateNumber(1)), UPK_E_MANIFEST_INVALID);
    assert_int_equal(decode_full_top("sha256", str_n('e', 64)), UPK_E_MANIFEST_INVALID);
    /* A full image has no base. */
    assert_int_equal(decode_full_top("base_sha256", str_n('e', 64)), UPK_E_MANIFEST_INVALID);
    /* A delta needs one, and turning a full release into a delta without one
     * is caught too. */
    assert_int_equal(decode_top("base_sha256", NULL), UPK_E_FIELD_MISSING);
    assert_int_equal(decode_full_top("type", cJSON_CreateString("delta")), UPK_E_FIELD_MISSING);
}

static void manifest_rejects_bad_support(void **state)
{
    (void)state;
    assert_int_equal(decode_support("delivery", cJSON_CreateString("sometimes")),
                     UPK_E_MANIFEST_INVALID);
    assert_int_equal(decode_support("delivery", cJSON_CreateString("automatic")), UPK_OK);
    assert_int_equal(decode_support("notice", cJSON_CreateString("line\nbreak")),
                     UPK_E_MANIFEST_INVALID);
    assert_int_equal(decode_support("notice", cJSON_CreateString("bad \xc3 utf8")),
                     UPK_E_MANIFEST_INVALID);
    assert_int_equal(decode_support("contact", cJSON_CreateString("\xed\xa0\x80")),
                     UPK_E_MANIFEST_INVALID); /* UTF-16 surrogate */
    assert_int_equal(decode_support("contact", cJSON_CreateString("\xc0\xaf")),
                     UPK_E_MANIFEST_INVALID); /* overlong */
}

static void manifest_rejects_non_json_and_duplicates(void **state)
{
    (void)state;
    assert_int_equal(decode_text("not json"), UPK_E_JSON_INVALID);
    assert_int_equal(decode_text(""), UPK_E_JSON_INVALID);
    assert_int_equal(decode_text("{\"v\":1"), UPK_E_JSON_INVALID);
    assert_int_equal(decode_text("[1,2]"), UPK_E_FIELD_TYPE);
    assert_int_equal(decode_text("{}"), UPK_E_FIELD_MISSING);

    upk_manifest m = good_delta();
    size_t len = 0;
    char *json = encode_ok(&m, &len);
    /* Trailing garbage after the object. */
    char *tail = malloc(len + 2);
    assert_non_null(tail);
    memcpy(tail, json, len);
    tail[len] = 'x';
    upk_manifest out;
    assert_int_equal(upk_manifest_decode(tail, len + 1, &out), UPK_E_JSON_INVALID);
    tail[len] = '\n';
    assert_int_equal(upk_manifest_decode(tail, len + 1, &out), UPK_OK);
    free(tail);

    /* A repeated key is ambiguous between parsers. */
    char *dup = malloc(len + 32);
    assert_non_null(dup);
    int n = snprintf(dup, len + 32, "{\"name\":\"evil\",%s", json + 1);
    assert_true(n > 0);
    assert_int_equal(upk_manifest_decode(dup, (size_t)n, &out), UPK_E_MANIFEST_INVALID);
    free(dup);
    /* Duplicates inside support too. */
    char *sup = strstr(json, "\"support\":{");
    assert_non_null(sup);
    size_t head = (size_t)(sup - json) + strlen("\"support\":{");
    dup = malloc(len + 64);
    assert_non_null(dup);
    n = snprintf(dup, len + 64, "%.*s\"delivery\":\"automatic\",%s", (int)head, json, json + head);
    assert_true(n > 0);
    assert_int_equal(upk_manifest_decode(dup, (size_t)n, &out), UPK_E_MANIFEST_INVALID);
    free(dup);
    free(json);
}

static void manifest_ignores_unknown_fields(void **state)
{
    (void)state;
    assert_int_equal(decode_top("future_field", cJSON_CreateString("x")), UPK_OK);
    assert_int_equal(decode_support("future_field", cJSON_CreateNumber(3)), UPK_OK);
}

static void manifest_decode_rejects_invalid_arguments(void **state)
{
    (void)state;
    upk_manifest out;
    assert_int_equal(upk_manifest_decode(NULL, 3, &out), UPK_E_INVALID_ARG);
    assert_int_equal(upk_manifest_decode("{}", 2, NULL), UPK_E_INVALID_ARG);
}

/* ---- encode rejections ------------------------------------------------- */

static void assert_encode_rejects(const upk_manifest *m)
{
    char *json = NULL;
    size_t len = 77;
    assert_int_equal(upk_manifest_encode(m, &json, &len), UPK_E_MANIFEST_INVALID);
    assert_null(json);
    assert_int_equal(len, 77);
}

static void manifest_encode_rejects_incoherent_struct(void **state)
{
    (void)state;
#define REJECTS(base, change)       \
    do {                            \
        upk_manifest m_ = base();   \
        change;                     \
        assert_encode_rejects(&m_); \
    } while (0)
    REJECTS(good_full, m_.name[0] = '.');
    REJECTS(good_full, m_.name[0] = '\0');
    REJECTS(good_full, memset(m_.name, 'a', sizeof(m_.name)));
    REJECTS(good_full, m_.version[1] = ' ');
    REJECTS(good_full, m_.version[0] = '\0');
    REJECTS(good_full, m_.module[0] = '-');
    REJECTS(good_full, m_.hw_count = 0);
    REJECTS(good_full, m_.hw_count = UPK_HW_MAX + 1);
    REJECTS(good_full, m_.hw[1][0] = '/');
    REJECTS(good_full, m_.type = (upk_release_type)7);
    REJECTS(good_full, m_.size = 1);
    REJECTS(good_full, m_.target_sha256[3] ^= 1);
    REJECTS(good_full, m_.base_sha256[0] = 1);
    REJECTS(good_full, m_.expires = m_.created);
    REJECTS(good_full, m_.created = -1);
    REJECTS(good_full, m_.security_version = SAFE_INT_MAX + 1);
    REJECTS(good_delta, m_.target_size = SAFE_INT_MAX + 1);
    REJECTS(good_delta, memcpy(m_.support.delivery, "never", 6));
    REJECTS(good_delta, m_.support.notice[2] = '\x01');
    REJECTS(good_delta, m_.support.security_until = -5);
#undef REJECTS
    /* Support fields do not matter when support is absent. */
    upk_manifest m = good_delta();
    m.support.present = false;
    memcpy(m.support.delivery, "never", 6);
    char *json = NULL;
    size_t len = 0;
    assert_int_equal(upk_manifest_encode(&m, &json, &len), UPK_OK);
    assert_null(strstr(json, "support"));
    free(json);
    assert_int_equal(upk_manifest_encode(NULL, &json, &len), UPK_E_INVALID_ARG);
    assert_int_equal(upk_manifest_encode(&m, NULL, &len), UPK_E_INVALID_ARG);
    assert_int_equal(upk_manifest_encode(&m, &json, NULL), UPK_E_INVALID_ARG);
}

/* ---- signatures -------------------------------------------------------- */

typedef struct sig_fixture {
    upk_key *key;
    upk_key *other;
    upk_keyring *ring; /* pins key only */
    char *json;
    size_t len;
    uint8_t sig[UPK_SIG_MAX];
    size_t siglen;
} sig_fixture;

static int sig_setup(void **state)
{
    sig_fixture *f = calloc(1, sizeof(*f));
    if (f == NULL || upk_key_generate(&f->key) != UPK_OK || upk_key_generate(&f->other) != UPK_OK ||
        upk_keyring_new(&f->ring) != UPK_OK || upk_keyring_add(f->ring, f->key) != UPK_OK)
        return -1;
    upk_manifest m = good_delta();
    if (upk_manifest_encode(&m, &f->json, &f->len) != UPK_OK ||
        upk_manifest_sign(f->key, f->json, f->len, f->sig, &f->siglen) != UPK_OK)
        return -1;
    *state = f;
    return 0;
}

static int sig_teardown(void **state)
{
    sig_fixture *f = *state;
    if (f == NULL)
        return 0;
    upk_key_free(f->key);
    upk_key_free(f->other);
    upk_keyring_free(f->ring);
    free(f->json);
    free(f);
    return 0;
}

static void manifest_verify_accepts_signed_manifest(void **state)
{
    sig_fixture *f = *state;
    upk_manifest out, want = good_delta();
    assert_int_equal(
        upk_manifest_verify(f->ring, upk_key_id(f->key), f->json, f->len, f->sig, f->siglen, &out),
        UPK_OK);
    assert_memory_equal(&out, &want, sizeof(out));
}

static void manifest_verify_rejects_any_tampered_byte(void **state)
{
    sig_fixture *f = *state;
    upk_manifest out;
    memset(&out, 0x5a, sizeof(out));
    /* Every 11th byte and the last one: each verification is a full ECDSA
     * check, slow under sanitizers, and every byte is hashed alike. */
    for (size_t i = 0; i < f->len; i = (i + 11 < f->len || i == f->len - 1) ? i + 11 : f->len - 1) {
        f->json[i] ^= 0x01;
        assert_int_equal(upk_manifest_verify(f->ring, upk_key_id(f->key), f->json, f->len, f->sig,
                                             f->siglen, &out),
                         UPK_E_SIG_INVALID);
        f->json[i] ^= 0x01;
    }
    /* Cut short or extended by one byte. */
    assert_int_equal(upk_manifest_verify(f->ring, upk_key_id(f->key), f->json, f->len - 1, f->sig,
                                         f->siglen, &out),
                     UPK_E_SIG_INVALID);
    assert_int_equal(out.size, 0x5a5a5a5a5a5a5a5aULL); /* untouched */
}

static void manifest_verify_rejects_unknown_key(void **state)
{
    sig_fixture *f = *state;
    upk_manifest out;
    uint8_t sig[UPK_SIG_MAX];
    size_t siglen = 0;
    /* Signed by a key that is not pinned, naming that key. */
    assert_int_equal(upk_manifest_sign(f->other, f->json, f->len, sig, &siglen), UPK_OK);
    assert_int_equal(
        upk_manifest_verify(f->ring, upk_key_id(f->other), f->json, f->len, sig, siglen, &out),
        UPK_E_KEY_UNKNOWN);
    assert_int_equal(upk_manifest_verify(f->ring, "", f->json, f->len, f->sig, f->siglen, &out),
                     UPK_E_KEY_UNKNOWN);
}

static void manifest_verify_rejects_other_key_claiming_pinned_id(void **state)
{
    sig_fixture *f = *state;
    upk_manifest out;
    uint8_t sig[UPK_SIG_MAX];
    size_t siglen = 0;
    /* An attacker with another key names the pinned key's id: the lookup
     * succeeds but the signature must not. */
    assert_int_equal(upk_manifest_sign(f->other, f->json, f->len, sig, &siglen), UPK_OK);
    assert_int_equal(
        upk_manifest_verify(f->ring, upk_key_id(f->key), f->json, f->len, sig, siglen, &out),
        UPK_E_SIG_INVALID);
}

static void manifest_verify_rejects_truncated_or_padded_signature(void **state)
{
    sig_fixture *f = *state;
    upk_manifest out;
    const char *id = upk_key_id(f->key);
    for (size_t n = 0; n < f->siglen; n++)
        assert_int_equal(upk_manifest_verify(f->ring, id, f->json, f->len, f->sig, n, &out),
                         UPK_E_SIG_INVALID);
    uint8_t longer[UPK_SIG_MAX + 1];
    memcpy(longer, f->sig, f->siglen);
    longer[f->siglen] = 0;
    assert_int_equal(upk_manifest_verify(f->ring, id, f->json, f->len, longer, f->siglen + 1, &out),
                     UPK_E_SIG_INVALID);
    assert_int_equal(upk_manifest_verify(f->ring, id, f->json, f->len, NULL, 0, &out),
                     UPK_E_SIG_INVALID);
}

static void manifest_verify_checks_signature_before_decoding(void **state)
{
    sig_fixture *f = *state;
    upk_manifest out;
    const char *id = upk_key_id(f->key);
    static const char junk[] = "{not json";
    /* Unsigned junk: the signature error, not the parser's. */
    assert_int_equal(
        upk_manifest_verify(f->ring, id, junk, sizeof(junk) - 1, f->sig, f->siglen, &out),
        UPK_E_SIG_INVALID);
    /* Properly signed junk: verified, then the decoder rejects it. */
    uint8_t sig[UPK_SIG_MAX];
    size_t siglen = 0;
    assert_int_equal(upk_manifest_sign(f->key, junk, sizeof(junk) - 1, sig, &siglen), UPK_OK);
    assert_int_equal(upk_manifest_verify(f->ring, id, junk, sizeof(junk) - 1, sig, siglen, &out),
                     UPK_E_JSON_INVALID);
    /* A signed but expired-before-created manifest is still MANIFEST_INVALID. */
    upk_manifest bad = good_full();
    size_t len = 0;
    char *json = encode_ok(&bad, &len);
    char *p = strstr(json, "2027-11-01");
    assert_non_null(p);
    memcpy(p, "2025", 4);
    assert_int_equal(upk_manifest_sign(f->key, json, len, sig, &siglen), UPK_OK);
    assert_int_equal(upk_manifest_verify(f->ring, id, json, len, sig, siglen, &out),
                     UPK_E_MANIFEST_INVALID);
    free(json);
}

static void manifest_verify_and_sign_reject_bad_arguments(void **state)
{
    sig_fixture *f = *state;
    upk_manifest out;
    const char *id = upk_key_id(f->key);
    uint8_t sig[UPK_SIG_MAX];
    size_t siglen = 0;
    assert_int_equal(upk_manifest_verify(NULL, id, f->json, f->len, f->sig, f->siglen, &out),
                     UPK_E_INVALID_ARG);
    assert_int_equal(upk_manifest_verify(f->ring, NULL, f->json, f->len, f->sig, f->siglen, &out),
                     UPK_E_INVALID_ARG);
    assert_int_equal(upk_manifest_verify(f->ring, id, NULL, f->len, f->sig, f->siglen, &out),
                     UPK_E_INVALID_ARG);
    assert_int_equal(upk_manifest_verify(f->ring, id, f->json, f->len, f->sig, f->siglen, NULL),
                     UPK_E_INVALID_ARG);
    assert_int_equal(upk_manifest_sign(NULL, f->json, f->len, sig, &siglen), UPK_E_INVALID_ARG);
    assert_int_equal(upk_manifest_sign(f->key, NULL, f->len, sig, &siglen), UPK_E_INVALID_ARG);
    /* Over the size limit: neither signed nor verified. */
    char *big = repeat(' ', UPK_MANIFEST_MAX + 1);
    assert_int_equal(upk_manifest_sign(f->key, big, UPK_MANIFEST_MAX + 1, sig, &siglen),
                     UPK_E_MSG_TOO_LARGE);
    assert_int_equal(
        upk_manifest_verify(f->ring, id, big, UPK_MANIFEST_MAX + 1, f->sig, f->siglen, &out),
        UPK_E_MSG_TOO_LARGE);
    free(big);
    /* A public-only key cannot sign. */
    assert_int_equal(
        upk_manifest_sign(upk_keyring_find(f->ring, id), f->json, f->len, sig, &siglen),
        UPK_E_KEY_INVALID);
}

static void manifest_vector_openssl_signature_verifies(void **state)
{
    (void)state;
    size_t plen = 0, jlen = 0, slen = 0, ilen = 0;
    char *pem = ct_read_vector("release-p256.pub.pem", &plen);
    char *json = ct_read_vector("manifest.json", &jlen);
    char *sig = ct_read_vector("manifest.json.sig", &slen);
    char *id = ct_read_vector("release-p256.keyid", &ilen);
    assert_non_null(pem);
    assert_non_null(json);
    assert_non_null(sig);
    assert_non_null(id);
    assert_true(ilen > UPK_KEY_ID_LEN);
    id[UPK_KEY_ID_LEN] = '\0'; /* the file ends with a newline */

    upk_key *key = NULL;
    upk_keyring *ring = NULL;
    assert_int_equal(upk_key_load_pem(pem, plen, &key), UPK_OK);
    assert_string_equal(upk_key_id(key), id);
    assert_int_equal(upk_keyring_new(&ring), UPK_OK);
    assert_int_equal(upk_keyring_add(ring, key), UPK_OK);
    upk_manifest m;
    assert_int_equal(upk_manifest_verify(ring, id, json, jlen, (const uint8_t *)sig, slen, &m),
                     UPK_OK);
    assert_string_equal(m.name, "gateway-fw");
    json[10] ^= 0x20;
    assert_int_equal(upk_manifest_verify(ring, id, json, jlen, (const uint8_t *)sig, slen, &m),
                     UPK_E_SIG_INVALID);
    upk_keyring_free(ring);
    upk_key_free(key);
    free(pem);
    free(json);
    free(sig);
    free(id);
}

/* ---- device checks ----------------------------------------------------- */

static const char *const MODULES[] = {"file", "ab-dir"};

static upk_device_facts facts_ok(void)
{
    upk_device_facts f = {
        .now = T_CREATED + 3600,
        .hw = "rev-b",
        .installed_security_version = 4,
        .modules = MODULES,
        .module_count = 2,
    };
    return f;
}

static void manifest_check_accepts_compatible_release(void **state)
{
    (void)state;
    upk_manifest m = good_full();
    upk_device_facts f = facts_ok();
    assert_int_equal(upk_manifest_check(&m, &f), UPK_OK);
    /* An equal security_version is a re-release. */
    f.installed_security_version = m.security_version;
    assert_int_equal(upk_manifest_check(&m, &f), UPK_OK);
}

static void manifest_check_rejects_expired(void **state)
{
    (void)state;
    upk_manifest m = good_full();
    upk_device_facts f = facts_ok();
    f.now = m.expires - 1;
    assert_int_equal(upk_manifest_check(&m, &f), UPK_OK);
    f.now = m.expires;
    assert_int_equal(upk_manifest_check(&m, &f), UPK_E_MANIFEST_EXPIRED);
    f.now = m.expires + 86400;
    assert_int_equal(upk_manifest_check(&m, &f), UPK_E_MANIFEST_EXPIRED);
}

static void manifest_check_rejects_not_yet_valid_beyond_skew(void **state)
{
    (void)state;
    upk_manifest m = good_full();
    upk_device_facts f = facts_ok();
    f.now = m.created - UPK_CLOCK_SKEW_S;
    assert_int_equal(upk_manifest_check(&m, &f), UPK_OK);
    f.now = m.created - UPK_CLOCK_SKEW_S - 1;
    assert_int_equal(upk_manifest_check(&m, &f), UPK_E_MANIFEST_NOT_YET_VALID);
    f.now = 0;
    assert_int_equal(upk_manifest_check(&m, &f), UPK_E_MANIFEST_NOT_YET_VALID);
}

static void manifest_check_rejects_rollback(void **state)
{
    (void)state;
    upk_manifest m = good_full();
    upk_device_facts f = facts_ok();
    f.installed_security_version = m.security_version + 1;
    assert_int_equal(upk_manifest_check(&m, &f), UPK_E_ROLLBACK_REJECTED);
}

static void manifest_check_rejects_incompatible_hw(void **state)
{
    (void)state;
    upk_manifest m = good_full();
    upk_device_facts f = facts_ok();
    f.hw = "rev-c";
    assert_int_equal(upk_manifest_check(&m, &f), UPK_E_HW_INCOMPATIBLE);
    f.hw = "rev-"; /* a prefix is not a match */
    assert_int_equal(upk_manifest_check(&m, &f), UPK_E_HW_INCOMPATIBLE);
    f.hw = "REV-B";
    assert_int_equal(upk_manifest_check(&m, &f), UPK_E_HW_INCOMPATIBLE);
}

static void manifest_check_rejects_unsupported_module(void **state)
{
    (void)state;
    upk_manifest m = good_full();
    upk_device_facts f = facts_ok();
    memcpy(m.module, "swupdate", sizeof("swupdate"));
    assert_int_equal(upk_manifest_check(&m, &f), UPK_E_MODULE_UNSUPPORTED);
    m = good_full();
    f.modules = NULL;
    f.module_count = 0;
    assert_int_equal(upk_manifest_check(&m, &f), UPK_E_MODULE_UNSUPPORTED);
}

static void manifest_check_reports_in_documented_order(void **state)
{
    (void)state;
    /* Everything wrong at once: each fix reveals the next error. */
    upk_manifest m = good_full();
    memcpy(m.module, "other", sizeof("other"));
    upk_device_facts f = facts_ok();
    f.hw = "rev-z";
    f.installed_security_version = 99;
    f.now = m.expires + 1;
    assert_int_equal(upk_manifest_check(&m, &f), UPK_E_MANIFEST_EXPIRED);
    f.now = m.created - UPK_CLOCK_SKEW_S - 10;
    assert_int_equal(upk_manifest_check(&m, &f), UPK_E_MANIFEST_NOT_YET_VALID);
    f.now = m.created;
    assert_int_equal(upk_manifest_check(&m, &f), UPK_E_ROLLBACK_REJECTED);
    f.installed_security_version = 0;
    assert_int_equal(upk_manifest_check(&m, &f), UPK_E_HW_INCOMPATIBLE);
    f.hw = "rev-a";
    assert_int_equal(upk_manifest_check(&m, &f), UPK_E_MODULE_UNSUPPORTED);
    memcpy(m.module, "ab-dir", sizeof("ab-dir"));
    assert_int_equal(upk_manifest_check(&m, &f), UPK_OK);
}

static void manifest_check_rejects_bad_arguments(void **state)
{
    (void)state;
    upk_manifest m = good_full();
    upk_device_facts f = facts_ok();
    assert_int_equal(upk_manifest_check(NULL, &f), UPK_E_INVALID_ARG);
    assert_int_equal(upk_manifest_check(&m, NULL), UPK_E_INVALID_ARG);
    f.hw = NULL;
    assert_int_equal(upk_manifest_check(&m, &f), UPK_E_INVALID_ARG);
    f = facts_ok();
    f.modules = NULL;
    assert_int_equal(upk_manifest_check(&m, &f), UPK_E_INVALID_ARG);
    /* Extreme clocks do not overflow. */
    f = facts_ok();
    f.now = INT64_MAX;
    assert_int_equal(upk_manifest_check(&m, &f), UPK_E_MANIFEST_EXPIRED);
    f.now = INT64_MIN;
    assert_int_equal(upk_manifest_check(&m, &f), UPK_E_MANIFEST_NOT_YET_VALID);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(manifest_full_round_trips),
        cmocka_unit_test(manifest_delta_with_support_round_trips),
        cmocka_unit_test(manifest_encode_uses_fixed_compact_key_order),
        cmocka_unit_test(manifest_vector_decodes_and_re_encodes_byte_identically),
        cmocka_unit_test(manifest_rejects_wrong_v),
        cmocka_unit_test(manifest_rejects_each_missing_required_field),
        cmocka_unit_test(manifest_rejects_wrong_field_types),
        cmocka_unit_test(manifest_rejects_oversized_fields),
        cmocka_unit_test(manifest_rejects_bad_ids_and_versions),
        cmocka_unit_test(manifest_rejects_bad_hash_hex),
        cmocka_unit_test(manifest_rejects_bad_numbers),
        cmocka_unit_test(manifest_rejects_bad_times),
        cmocka_unit_test(manifest_rejects_incoherent_full_and_delta),
        cmocka_unit_test(manifest_rejects_bad_support),
        cmocka_unit_test(manifest_rejects_non_json_and_duplicates),
        cmocka_unit_test(manifest_ignores_unknown_fields),
        cmocka_unit_test(manifest_decode_rejects_invalid_arguments),
        cmocka_unit_test(manifest_encode_rejects_incoherent_struct),
        cmocka_unit_test_setup_teardown(manifest_verify_accepts_signed_manifest, sig_setup,
                                        sig_teardown),
        cmocka_unit_test_setup_teardown(manifest_verify_rejects_any_tampered_byte, sig_setup,
                                        sig_teardown),
        cmocka_unit_test_setup_teardown(manifest_verify_rejects_unknown_key, sig_setup,
                                        sig_teardown),
        cmocka_unit_test_setup_teardown(manifest_verify_rejects_other_key_claiming_pinned_id,
                                        sig_setup, sig_teardown),
        cmocka_unit_test_setup_teardown(manifest_verify_rejects_truncated_or_padded_signature,
                                        sig_setup, sig_teardown),
        cmocka_unit_test_setup_teardown(manifest_verify_checks_signature_before_decoding, sig_setup,
                                        sig_teardown),
        cmocka_unit_test_setup_teardown(manifest_verify_and_sign_reject_bad_arguments, sig_setup,
                                        sig_teardown),
        cmocka_unit_test(manifest_vector_openssl_signature_verifies),
        cmocka_unit_test(manifest_check_accepts_compatible_release),
        cmocka_unit_test(manifest_check_rejects_expired),
        cmocka_unit_test(manifest_check_rejects_not_yet_valid_beyond_skew),
        cmocka_unit_test(manifest_check_rejects_rollback),
        cmocka_unit_test(manifest_check_rejects_incompatible_hw),
        cmocka_unit_test(manifest_check_rejects_unsupported_module),
        cmocka_unit_test(manifest_check_reports_in_documented_order),
        cmocka_unit_test(manifest_check_rejects_bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
