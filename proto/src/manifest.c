/* Release manifests (see manifest.h): strict decoding of signed manifest JSON,
 * encoding in one fixed key order, signature verification before any
 * decoding, and the device-side checks (expiry, rollback, hardware, module). */
#include "upkeep/manifest.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "json.h"
#include "upkeep/timefmt.h"

static const char TYPE_FULL[] = "full";
static const char TYPE_DELTA[] = "delta";
static const char DELIVERY_AUTO[] = "automatic";
static const char DELIVERY_USER[] = "user-approved";

/* Keys that may appear at most once. cJSON keeps duplicates and returns the
 * first, while other parsers take the last, so a signed manifest with a
 * repeated key could mean different things to different readers. */
static const char *const TOP_KEYS[] = {
    "v",       "name",   "version",     "security_version", "hw",          "type",    "module",
    "size",    "sha256", "target_size", "target_sha256",    "base_sha256", "created", "expires",
    "support",
};
static const char *const SUPPORT_KEYS[] = {"security_until", "delivery", "notice", "contact"};

/* ---- validation shared by encode and decode ---------------------------- */

/* A release version: 1..UPK_VERSION_STR_MAX printable ASCII, no spaces. */
static bool version_valid(const char *s)
{
    size_t n = strnlen(s, UPK_VERSION_STR_MAX + 1);
    if (n == 0 || n > UPK_VERSION_STR_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < 0x21 || s[i] > 0x7e)
            return false;
    }
    return true;
}

/* Free text: at most UPK_TEXT_MAX bytes of well-formed UTF-8 without control
 * characters (so that it is safe in logs and on a device's screen). */
static bool text_valid(const char *s)
{
    size_t n = strnlen(s, UPK_TEXT_MAX + 1);
    if (n > UPK_TEXT_MAX)
        return false;
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        unsigned c = p[i];
        size_t extra;
        unsigned min;
        if (c < 0x20 || c == 0x7f)
            return false;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) {
            extra = 1;
            min = 0x80;
            c &= 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            extra = 2;
            min = 0x800;
            c &= 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            extra = 3;
            min = 0x10000;
            c &= 0x07;
        } else {
            return false;
        }
        if (extra > n - i - 1)
            return false;
        for (size_t k = 1; k <= extra; k++) {
            if ((p[i + k] & 0xc0) != 0x80)
                return false;
            c = c << 6 | (p[i + k] & 0x3f);
        }
        if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
            return false;
        i += extra + 1;
    }
    return true;
}

/* A NUL-terminated id inside its array. */
static bool id_field_valid(const char s[UPK_ID_MAX + 1])
{
    return strnlen(s, UPK_ID_MAX + 1) <= UPK_ID_MAX && upk_id_valid(s);
}

static bool time_valid(int64_t t)
{
    char buf[UPK_TIME_STR_LEN + 1];
    return upk_time_format(t, buf, sizeof(buf)) == UPK_OK;
}

static bool all_zero(const uint8_t *p, size_t n)
{
    uint8_t acc = 0;
    for (size_t i = 0; i < n; i++)
        acc |= p[i];
    return acc == 0;
}

/* Everything a manifest must satisfy beyond its JSON shape. Decode applies it
 * after reading the fields, encode before writing them, so whatever decodes
 * also encodes. */
static bool manifest_coherent(const upk_manifest *m)
{
    if (!id_field_valid(m->name) || !version_valid(m->version) || !id_field_valid(m->module))
        return false;
    if (m->security_version > UPK__JSON_SAFE_INT_MAX || m->size > UPK__JSON_SAFE_INT_MAX ||
        m->target_size > UPK__JSON_SAFE_INT_MAX)
        return false;
    if (m->hw_count < 1 || m->hw_count > UPK_HW_MAX)
        return false;
    for (size_t i = 0; i < m->hw_count; i++) {
        if (!id_field_valid(m->hw[i]))
            return false;
    }
    switch (m->type) {
    case UPK_RELEASE_FULL:
        if (m->size != m->target_size || memcmp(m->sha256, m->target_sha256, UPK_SHA256_LEN) != 0 ||
            !all_zero(m->base_sha256, UPK_SHA256_LEN))
            return false;
        break;
    case UPK_RELEASE_DELTA:
        break;
    default:
        return false;
    }
    if (!time_valid(m->created) || !time_valid(m->expires) || m->expires <= m->created)
        return false;
    if (m->support.present) {
        const upk_support *s = &m->support;
        if (!time_valid(s->security_until))
            return false;
        if (strnlen(s->delivery, UPK_ID_MAX + 1) > UPK_ID_MAX ||
            (strcmp(s->delivery, DELIVERY_AUTO) != 0 && strcmp(s->delivery, DELIVERY_USER) != 0))
            return false;
        if (!text_valid(s->notice) || !text_valid(s->contact))
            return false;
    }
    return true;
}

/* ---- encode ------------------------------------------------------------ */

static bool add_str(cJSON *obj, const char *name, const char *value)
{
    return cJSON_AddStringToObject(obj, name, value) != NULL;
}

/* Integers are written as exact decimal text: cJSON's own number printer
 * keeps only 15 significant digits when that looks "close enough", which
 * would change values above 10^15 (and with them the signed bytes). */
static bool add_u64(cJSON *obj, const char *name, uint64_t value)
{
    char buf[24];
    int n = snprintf(buf, sizeof(buf), "%" PRIu64, value);
    if (n <= 0 || (size_t)n >= sizeof(buf))
        return false;
    return cJSON_AddRawToObject(obj, name, buf) != NULL;
}

static bool add_hash(cJSON *obj, const char *name, const uint8_t h[UPK_SHA256_LEN])
{
    char hex[UPK_SHA256_HEX_LEN + 1];
    if (upk_hex_encode(h, UPK_SHA256_LEN, hex, sizeof(hex)) != UPK_OK)
        return false;
    return add_str(obj, name, hex);
}

static bool add_time(cJSON *obj, const char *name, int64_t t)
{
    char buf[UPK_TIME_STR_LEN + 1];
    if (upk_time_format(t, buf, sizeof(buf)) != UPK_OK)
        return false;
    return add_str(obj, name, buf);
}

/* Adds the support object; notice and contact only when non-empty. */
static bool add_support(cJSON *root, const upk_support *s)
{
    cJSON *obj = cJSON_AddObjectToObject(root, "support");
    if (obj == NULL)
        return false;
    if (!add_time(obj, "security_until", s->security_until) ||
        !add_str(obj, "delivery", s->delivery))
        return false;
    if (s->notice[0] != '\0' && !add_str(obj, "notice", s->notice))
        return false;
    if (s->contact[0] != '\0' && !add_str(obj, "contact", s->contact))
        return false;
    return true;
}

/* Builds the JSON tree in the fixed key order of docs/signing.md. */
static bool manifest_build(cJSON *root, const upk_manifest *m)
{
    if (!add_u64(root, "v", UPK_MANIFEST_VERSION) || !add_str(root, "name", m->name) ||
        !add_str(root, "version", m->version) ||
        !add_u64(root, "security_version", m->security_version))
        return false;
    cJSON *hw = cJSON_AddArrayToObject(root, "hw");
    if (hw == NULL)
        return false;
    for (size_t i = 0; i < m->hw_count; i++) {
        cJSON *item = cJSON_CreateString(m->hw[i]);
        if (item == NULL)
            return false;
        cJSON_AddItemToArray(hw, item);
    }
    bool delta = m->type == UPK_RELEASE_DELTA;
    if (!add_str(root, "type", delta ? TYPE_DELTA : TYPE_FULL) ||
        !add_str(root, "module", m->module) || !add_u64(root, "size", m->size) ||
        !add_hash(root, "sha256", m->sha256) || !add_u64(root, "target_size", m->target_size) ||
        !add_hash(root, "target_sha256", m->target_sha256))
        return false;
    if (delta && !add_hash(root, "base_sha256", m->base_sha256))
        return false;
    if (!add_time(root, "created", m->created) || !add_time(root, "expires", m->expires))
        return false;
    if (m->support.present && !add_support(root, &m->support))
        return false;
    return true;
}

upk_err upk_manifest_encode(const upk_manifest *m, char **out, size_t *outlen)
{
    if (m == NULL || out == NULL || outlen == NULL)
        return UPK_E_INVALID_ARG;
    if (!manifest_coherent(m))
        return UPK_E_MANIFEST_INVALID;
    upk_err err = UPK_OK;
    cJSON *root = cJSON_CreateObject();
    if (root == NULL)
        return UPK_E_NOMEM;
    if (!manifest_build(root, m)) {
        err = UPK_E_NOMEM;
        goto out_root;
    }
    char *s = NULL;
    size_t n = 0;
    err = upk__json_print(root, &s, &n);
    if (err != UPK_OK)
        goto out_root;
    if (n > UPK_MANIFEST_MAX) {
        /* Cannot happen with the field limits above; kept as a guard. */
        free(s);
        err = UPK_E_MSG_TOO_LARGE;
        goto out_root;
    }
    *out = s;
    *outlen = n;
out_root:
    cJSON_Delete(root);
    return err;
}

/* ---- decode ------------------------------------------------------------ */

/* The json.h readers report a bad id as ID_INVALID and a bad number or hash
 * as FIELD_RANGE; manifest.h names both MANIFEST_INVALID. */
static upk_err as_manifest_err(upk_err err)
{
    if (err == UPK_E_ID_INVALID || err == UPK_E_FIELD_RANGE)
        return UPK_E_MANIFEST_INVALID;
    return err;
}

static bool keys_unique(const cJSON *obj, const char *const *keys, size_t nkeys)
{
    for (size_t k = 0; k < nkeys; k++) {
        size_t seen = 0;
        for (const cJSON *it = obj->child; it != NULL; it = it->next) {
            if (it->string != NULL && strcmp(it->string, keys[k]) == 0 && ++seen > 1)
                return false;
        }
    }
    return true;
}

/* Reads an RFC 3339 time field. With full_only, only the
 * "YYYY-MM-DDTHH:MM:SSZ" form; else a bare "YYYY-MM-DD" is accepted too. */
static upk_err read_time(const cJSON *obj, const char *name, bool full_only, int64_t *out)
{
    char buf[UPK_TIME_STR_LEN + 1];
    upk_err err = upk__json_str(obj, name, false, buf, UPK_TIME_STR_LEN);
    if (err == UPK_E_FIELD_TOO_LONG)
        return UPK_E_MANIFEST_INVALID; /* no valid time is longer */
    if (err != UPK_OK)
        return err;
    if (full_only && strlen(buf) != UPK_TIME_STR_LEN)
        return UPK_E_MANIFEST_INVALID;
    int64_t t = 0;
    if (upk_time_parse(buf, &t) != UPK_OK || !time_valid(t))
        return UPK_E_MANIFEST_INVALID;
    *out = t;
    return UPK_OK;
}

/* A sha256 hex field; any malformed value (also an overlong one) is
 * MANIFEST_INVALID. */
static upk_err read_hash(const cJSON *obj, const char *name, uint8_t out[UPK_SHA256_LEN])
{
    upk_err err = upk__json_sha256(obj, name, false, out);
    if (err == UPK_E_FIELD_TOO_LONG)
        return UPK_E_MANIFEST_INVALID;
    return err;
}

static upk_err read_hw(const cJSON *root, upk_manifest *m)
{
    const cJSON *hw = cJSON_GetObjectItemCaseSensitive(root, "hw");
    if (hw == NULL)
        return UPK_E_FIELD_MISSING;
    if (!cJSON_IsArray(hw))
        return UPK_E_FIELD_TYPE;
    size_t n = 0;
    for (const cJSON *it = hw->child; it != NULL; it = it->next) {
        if (n >= UPK_HW_MAX)
            return UPK_E_FIELD_TOO_LONG;
        if (!cJSON_IsString(it) || it->valuestring == NULL)
            return UPK_E_FIELD_TYPE;
        size_t len = strnlen(it->valuestring, UPK_ID_MAX + 1);
        if (len > UPK_ID_MAX)
            return UPK_E_FIELD_TOO_LONG;
        if (!upk_id_valid(it->valuestring))
            return UPK_E_MANIFEST_INVALID;
        memcpy(m->hw[n], it->valuestring, len + 1);
        n++;
    }
    if (n == 0)
        return UPK_E_MANIFEST_INVALID;
    m->hw_count = n;
    return UPK_OK;
}

static upk_err read_support(const cJSON *root, upk_support *s)
{
    const cJSON *obj = cJSON_GetObjectItemCaseSensitive(root, "support");
    if (obj == NULL)
        return UPK_OK;
    if (!cJSON_IsObject(obj))
        return UPK_E_FIELD_TYPE;
    if (!keys_unique(obj, SUPPORT_KEYS, sizeof(SUPPORT_KEYS) / sizeof(SUPPORT_KEYS[0])))
        return UPK_E_MANIFEST_INVALID;
    upk_err err = read_time(obj, "security_until", false, &s->security_until);
    if (err == UPK_OK)
        err = upk__json_str(obj, "delivery", false, s->delivery, UPK_ID_MAX);
    if (err == UPK_OK)
        err = upk__json_str(obj, "notice", true, s->notice, UPK_TEXT_MAX);
    if (err == UPK_OK)
        err = upk__json_str(obj, "contact", true, s->contact, UPK_TEXT_MAX);
    if (err != UPK_OK)
        return err;
    s->present = true;
    return UPK_OK;
}

static upk_err read_type(const cJSON *root, upk_release_type *out)
{
    char type[sizeof(TYPE_DELTA)];
    upk_err err = upk__json_str(root, "type", false, type, sizeof(type) - 1);
    if (err == UPK_E_FIELD_TOO_LONG)
        return UPK_E_MANIFEST_INVALID; /* a longer string is just an unknown type */
    if (err != UPK_OK)
        return err;
    if (strcmp(type, TYPE_FULL) == 0)
        *out = UPK_RELEASE_FULL;
    else if (strcmp(type, TYPE_DELTA) == 0)
        *out = UPK_RELEASE_DELTA;
    else
        return UPK_E_MANIFEST_INVALID;
    return UPK_OK;
}

/* Reads every field of root into m (zeroed by the caller), in document
 * order, returning the first problem. */
static upk_err manifest_read(const cJSON *root, upk_manifest *m)
{
    if (!keys_unique(root, TOP_KEYS, sizeof(TOP_KEYS) / sizeof(TOP_KEYS[0])))
        return UPK_E_MANIFEST_INVALID;
    upk_err err = upk__json_id(root, "name", false, m->name);
    if (err == UPK_OK) {
        err = upk__json_str(root, "version", false, m->version, UPK_VERSION_STR_MAX);
        if (err == UPK_OK && !version_valid(m->version))
            err = UPK_E_MANIFEST_INVALID;
    }
    if (err == UPK_OK)
        err = upk__json_u64(root, "security_version", false, UPK__JSON_SAFE_INT_MAX,
                            &m->security_version);
    if (err == UPK_OK)
        err = read_hw(root, m);
    if (err == UPK_OK)
        err = read_type(root, &m->type);
    if (err == UPK_OK)
        err = upk__json_id(root, "module", false, m->module);
    if (err == UPK_OK)
        err = upk__json_u64(root, "size", false, UPK__JSON_SAFE_INT_MAX, &m->size);
    if (err == UPK_OK)
        err = read_hash(root, "sha256", m->sha256);
    if (err == UPK_OK)
        err = upk__json_u64(root, "target_size", false, UPK__JSON_SAFE_INT_MAX, &m->target_size);
    if (err == UPK_OK)
        err = read_hash(root, "target_sha256", m->target_sha256);
    if (err == UPK_OK) {
        bool has_base = cJSON_GetObjectItemCaseSensitive(root, "base_sha256") != NULL;
        if (m->type == UPK_RELEASE_DELTA)
            err = read_hash(root, "base_sha256", m->base_sha256);
        else if (has_base)
            err = UPK_E_MANIFEST_INVALID; /* a full image has no base */
    }
    if (err == UPK_OK)
        err = read_time(root, "created", true, &m->created);
    if (err == UPK_OK)
        err = read_time(root, "expires", true, &m->expires);
    if (err == UPK_OK)
        err = read_support(root, &m->support);
    if (err != UPK_OK)
        return as_manifest_err(err);
    if (!manifest_coherent(m))
        return UPK_E_MANIFEST_INVALID;
    return UPK_OK;
}

upk_err upk_manifest_decode(const char *json, size_t len, upk_manifest *out)
{
    if (json == NULL || out == NULL)
        return UPK_E_INVALID_ARG;
    cJSON *root = NULL;
    upk_err err = upk__json_parse_object(json, len, UPK_MANIFEST_MAX, UPK_MANIFEST_VERSION, &root);
    if (err != UPK_OK)
        return err;
    /* Zeroed so that equal manifests are equal bytes (the fuzz target and
     * callers may memcmp them). ~2.6 KB, fine on any stack upkeep runs on. */
    upk_manifest m;
    memset(&m, 0, sizeof(m));
    err = manifest_read(root, &m);
    if (err == UPK_OK)
        *out = m;
    cJSON_Delete(root);
    return err;
}

/* ---- signatures -------------------------------------------------------- */

upk_err upk_manifest_sign(const upk_key *key, const char *json, size_t len,
                          uint8_t sig[UPK_SIG_MAX], size_t *siglen)
{
    if (key == NULL || json == NULL || sig == NULL || siglen == NULL)
        return UPK_E_INVALID_ARG;
    if (len > UPK_MANIFEST_MAX)
        return UPK_E_MSG_TOO_LARGE;
    return upk_key_sign(key, json, len, sig, siglen);
}

upk_err upk_manifest_verify(const upk_keyring *ring, const char *key_id, const char *json,
                            size_t len, const uint8_t *sig, size_t siglen, upk_manifest *out)
{
    if (ring == NULL || key_id == NULL || json == NULL || (sig == NULL && siglen > 0) ||
        out == NULL)
        return UPK_E_INVALID_ARG;
    const upk_key *key = upk_keyring_find(ring, key_id);
    if (key == NULL)
        return UPK_E_KEY_UNKNOWN;
    /* Refuse to even hash an oversized blob; no valid manifest is that big. */
    if (len > UPK_MANIFEST_MAX)
        return UPK_E_MSG_TOO_LARGE;
    upk_err err = upk_key_verify(key, json, len, sig, siglen);
    if (err != UPK_OK)
        return err;
    /* Only now, with the bytes authenticated, does the parser see them. */
    return upk_manifest_decode(json, len, out);
}

/* ---- device-side checks ------------------------------------------------ */

upk_err upk_manifest_check(const upk_manifest *m, const upk_device_facts *facts)
{
    if (m == NULL || facts == NULL || facts->hw == NULL ||
        (facts->modules == NULL && facts->module_count > 0))
        return UPK_E_INVALID_ARG;
    /* 1. Expired: the expires instant itself is no longer valid. */
    if (facts->now >= m->expires)
        return UPK_E_MANIFEST_EXPIRED;
    /* 2. Created in the future beyond the clock skew allowance. */
    if (facts->now <= INT64_MAX - UPK_CLOCK_SKEW_S && m->created > facts->now + UPK_CLOCK_SKEW_S)
        return UPK_E_MANIFEST_NOT_YET_VALID;
    /* 3. Anti-rollback; an equal security_version is a re-release. */
    if (m->security_version < facts->installed_security_version)
        return UPK_E_ROLLBACK_REJECTED;
    /* 4. Hardware. */
    bool hw_ok = false;
    size_t hw_count = m->hw_count <= UPK_HW_MAX ? m->hw_count : UPK_HW_MAX;
    for (size_t i = 0; i < hw_count && !hw_ok; i++)
        hw_ok = strncmp(m->hw[i], facts->hw, UPK_ID_MAX + 1) == 0;
    if (!hw_ok)
        return UPK_E_HW_INCOMPATIBLE;
    /* 5. Install module. */
    bool module_ok = false;
    for (size_t i = 0; i < facts->module_count && !module_ok; i++)
        module_ok =
            facts->modules[i] != NULL && strncmp(m->module, facts->modules[i], UPK_ID_MAX + 1) == 0;
    if (!module_ok)
        return UPK_E_MODULE_UNSUPPORTED;
    return UPK_OK;
}
