/* Codecs of upkeep's wire messages (see msg.h and docs/protocol.md): state,
 * desired, event, chunk request, chunk data header and operator request and
 * reply. Decoders work on a zeroed local copy and publish it only on success;
 * encoders validate first and never produce a message their decoder rejects. */
#include "upkeep/msg.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "upkeep/timefmt.h"

/* ---- status names */

static const char *const status_names[] = {
#define UPK__STATUS_NAME(name, str) str,
    UPK_STATUS_MAP(UPK__STATUS_NAME)
#undef UPK__STATUS_NAME
};

const char *upk_status_str(upk_status s)
{
    if ((unsigned)s >= (unsigned)UPK_STATUS__COUNT)
        return "unknown";
    return status_names[s];
}

bool upk_status_from_str(const char *s, upk_status *out)
{
    if (s == NULL || out == NULL)
        return false;
    for (unsigned i = 0; i < (unsigned)UPK_STATUS__COUNT; i++) {
        if (strcmp(status_names[i], s) == 0) {
            *out = (upk_status)i;
            return true;
        }
    }
    return false;
}

bool upk_status_is_final(upk_status s)
{
    return s == UPK_STATUS_COMMITTED || s == UPK_STATUS_FAILED || s == UPK_STATUS_ROLLED_BACK ||
           s == UPK_STATUS_REJECTED;
}

/* ---- shared validation helpers */

/* Wire names of the support_source field. */
#define SUPPORT_SOURCE_MANIFEST "manifest"
#define SUPPORT_SOURCE_CONFIG   "config"

/* Largest epoch second we put on the wire (9999-12-31T23:59:59Z): keeps every
 * time exactly representable as a JSON number and formattable as RFC 3339. */
#define TIME_MAX 253402300799LL

/* True when the fixed array s of cap bytes holds a NUL-terminated string. */
static bool str_fits(const char *s, size_t cap)
{
    return memchr(s, '\0', cap) != NULL;
}

/* Optional id held in a char array of UPK_ID_MAX+1: "" or a valid id. */
static upk_err check_opt_id(const char *s)
{
    if (!str_fits(s, UPK_ID_MAX + 1))
        return UPK_E_ID_INVALID;
    if (s[0] == '\0' || upk_id_valid(s))
        return UPK_OK;
    return UPK_E_ID_INVALID;
}

/* A version text (release version, agent version): printable ASCII without
 * spaces (0x21-0x7e), the rule manifests apply to their version, so that a
 * device can always report the version it installed. */
static bool version_text_ok(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if (*p < 0x21 || *p > 0x7e)
            return false;
    }
    return true;
}

/* Encoder-side check of a version array of UPK_VERSION_STR_MAX+1 bytes. */
static upk_err check_version(const char *s)
{
    if (!str_fits(s, UPK_VERSION_STR_MAX + 1))
        return UPK_E_FIELD_TOO_LONG;
    return version_text_ok(s) ? UPK_OK : UPK_E_FIELD_RANGE;
}

/* Decoder-side: optional version string field. */
static upk_err json_version(const cJSON *obj, const char *name, char *out)
{
    char tmp[UPK_VERSION_STR_MAX + 1];
    upk_err err = upk__json_str(obj, name, true, tmp, UPK_VERSION_STR_MAX);
    if (err != UPK_OK)
        return err;
    if (!version_text_ok(tmp))
        return UPK_E_FIELD_RANGE;
    memcpy(out, tmp, strlen(tmp) + 1);
    return UPK_OK;
}

/* Decoder-side: required status field holding a status wire name. */
static upk_err json_status(const cJSON *obj, const char *name, upk_status *out)
{
    char tmp[UPK_ID_MAX + 1];
    upk_err err = upk__json_str(obj, name, false, tmp, UPK_ID_MAX);
    if (err != UPK_OK)
        return err;
    if (!upk_status_from_str(tmp, out))
        return UPK_E_FIELD_RANGE;
    return UPK_OK;
}

static bool is_zero(const uint8_t *p, size_t n)
{
    uint8_t acc = 0;
    for (size_t i = 0; i < n; i++)
        acc |= p[i];
    return acc == 0;
}

/* Adds a string member; UPK_E_NOMEM when cJSON cannot allocate. */
static upk_err add_str(cJSON *obj, const char *name, const char *val)
{
    return cJSON_AddStringToObject(obj, name, val) != NULL ? UPK_OK : UPK_E_NOMEM;
}

/* Adds a string member unless val is "". */
static upk_err add_opt_str(cJSON *obj, const char *name, const char *val)
{
    return val[0] == '\0' ? UPK_OK : add_str(obj, name, val);
}

/* Adds a number member from its JSON text. cJSON's own printer keeps only
 * 15 significant digits when that compares "close enough", which would turn
 * 2^53 into 9007199254740990, so numbers are printed here, exactly. */
static upk_err add_raw_num(cJSON *obj, const char *name, const char *text)
{
    return cJSON_AddRawToObject(obj, name, text) != NULL ? UPK_OK : UPK_E_NOMEM;
}

/* Adds a non-negative integer member (callers keep values <= 2^53). */
static upk_err add_uint(cJSON *obj, const char *name, uint64_t val)
{
    char text[24];
    int n = snprintf(text, sizeof(text), "%" PRIu64, val);
    if (n < 0 || (size_t)n >= sizeof(text))
        return UPK_E_INTERNAL;
    return add_raw_num(obj, name, text);
}

/* Adds a finite double member in the shortest text that reads back as the
 * same double. */
static upk_err add_double(cJSON *obj, const char *name, double val)
{
    char text[32];
    for (int prec = 15; prec <= 17; prec++) {
        int n = snprintf(text, sizeof(text), "%.*g", prec, val);
        if (n < 0 || (size_t)n >= sizeof(text))
            return UPK_E_INTERNAL;
        if (strtod(text, NULL) == val)
            break;
    }
    return add_raw_num(obj, name, text);
}

static upk_err add_bool(cJSON *obj, const char *name, bool val)
{
    return cJSON_AddBoolToObject(obj, name, val) != NULL ? UPK_OK : UPK_E_NOMEM;
}

static upk_err add_sha256(cJSON *obj, const char *name, const uint8_t sha[UPK_SHA256_LEN])
{
    char hex[UPK_SHA256_HEX_LEN + 1];
    upk_err err = upk_hex_encode(sha, UPK_SHA256_LEN, hex, sizeof(hex));
    if (err != UPK_OK)
        return err;
    return add_str(obj, name, hex);
}

/* Starts a message object with "v". */
static upk_err new_msg(cJSON **out)
{
    cJSON *root = cJSON_CreateObject();
    if (root == NULL)
        return UPK_E_NOMEM;
    if (add_uint(root, "v", UPK_MSG_VERSION) != UPK_OK) {
        cJSON_Delete(root);
        return UPK_E_NOMEM;
    }
    *out = root;
    return UPK_OK;
}

/* Prints root and enforces UPK_MSG_MAX, so that every encoded message is one
 * its decoder accepts. */
static upk_err finish_msg(const cJSON *root, char **out, size_t *outlen)
{
    char *s = NULL;
    size_t n = 0;
    upk_err err = upk__json_print(root, &s, &n);
    if (err != UPK_OK)
        return err;
    if (n > UPK_MSG_MAX) {
        free(s);
        return UPK_E_MSG_TOO_LARGE;
    }
    *out = s;
    if (outlen != NULL)
        *outlen = n;
    return UPK_OK;
}

/* Parses a whole message: upk__json_parse_object, and no duplicate member
 * names anywhere, since JSON parsers disagree on which of two counts. */
static upk_err parse_msg(const char *json, size_t len, cJSON **out)
{
    cJSON *root = NULL;
    upk_err err = upk__json_parse_object(json, len, UPK_MSG_MAX, UPK_MSG_VERSION, &root);
    if (err != UPK_OK)
        return err;
    err = upk__json_check_keys(root);
    if (err != UPK_OK) {
        cJSON_Delete(root);
        return err;
    }
    *out = root;
    return UPK_OK;
}

/* ---- dev/{d}/state */

static upk_err state_check(const upk_state_msg *m)
{
    if (!upk_id_valid(m->device) || !upk_id_valid(m->hw))
        return UPK_E_ID_INVALID;
    upk_err err = check_opt_id(m->release);
    if (err == UPK_OK)
        err = check_opt_id(m->slot);
    if (err == UPK_OK)
        err = check_opt_id(m->campaign);
    if (err == UPK_OK)
        err = check_version(m->version);
    if (err == UPK_OK)
        err = check_version(m->agent);
    if (err != UPK_OK)
        return err;
    if ((unsigned)m->status >= (unsigned)UPK_STATUS__COUNT ||
        (unsigned)m->error >= (unsigned)UPK_E__COUNT)
        return UPK_E_FIELD_RANGE;
    if (m->security_version > UPK__JSON_SAFE_INT_MAX || m->support_until < 0 ||
        m->support_until > TIME_MAX || m->last_patched < 0 || m->last_patched > TIME_MAX ||
        m->ts < 0 || m->ts > TIME_MAX)
        return UPK_E_FIELD_RANGE;
    if (m->cap.module_count > UPK_MODULES_MAX)
        return UPK_E_FIELD_TOO_LONG;
    for (size_t i = 0; i < m->cap.module_count; i++) {
        if (!str_fits(m->cap.modules[i], UPK_ID_MAX + 1) || !upk_id_valid(m->cap.modules[i]))
            return UPK_E_ID_INVALID;
    }
    return UPK_OK;
}

static upk_err state_build(const upk_state_msg *m, cJSON *root)
{
    upk_err err = add_str(root, "device", m->device);
    if (err == UPK_OK)
        err = add_str(root, "hw", m->hw);
    if (err == UPK_OK)
        err = add_opt_str(root, "release", m->release);
    if (err == UPK_OK)
        err = add_opt_str(root, "version", m->version);
    if (err == UPK_OK)
        err = add_uint(root, "security_version", m->security_version);
    if (err == UPK_OK)
        err = add_opt_str(root, "slot", m->slot);
    if (err == UPK_OK)
        err = add_str(root, "status", upk_status_str(m->status));
    if (err == UPK_OK)
        err = add_opt_str(root, "campaign", m->campaign);
    if (err == UPK_OK && m->error != UPK_OK)
        err = add_str(root, "error", upk_err_str(m->error));
    if (err != UPK_OK)
        return err;

    cJSON *cap = cJSON_AddObjectToObject(root, "capability");
    if (cap == NULL)
        return UPK_E_NOMEM;
    err = add_bool(cap, "automatic", m->cap.automatic);
    if (err == UPK_OK)
        err = add_bool(cap, "signed", m->cap.signed_only);
    if (err == UPK_OK)
        err = add_bool(cap, "rollback", m->cap.rollback);
    if (err == UPK_OK)
        err = add_bool(cap, "delta", m->cap.delta);
    if (err != UPK_OK)
        return err;
    cJSON *mods = cJSON_AddArrayToObject(cap, "modules");
    if (mods == NULL)
        return UPK_E_NOMEM;
    for (size_t i = 0; i < m->cap.module_count; i++) {
        cJSON *s = cJSON_CreateString(m->cap.modules[i]);
        if (s == NULL || !cJSON_AddItemToArray(mods, s)) {
            cJSON_Delete(s);
            return UPK_E_NOMEM;
        }
    }

    if (m->support_until != 0) {
        char t[UPK_TIME_STR_LEN + 1];
        err = upk_time_format(m->support_until, t, sizeof(t));
        if (err == UPK_OK)
            err = add_str(root, "support_until", t);
        if (err != UPK_OK)
            return err;
    }
    if (m->support_until != 0 || m->support_signed) {
        err = add_str(root, "support_source",
                      m->support_signed ? SUPPORT_SOURCE_MANIFEST : SUPPORT_SOURCE_CONFIG);
        if (err != UPK_OK)
            return err;
    }
    if (m->last_patched != 0) {
        err = add_uint(root, "last_patched", (uint64_t)m->last_patched);
        if (err != UPK_OK)
            return err;
    }
    if (!is_zero(m->image_sha256, UPK_SHA256_LEN)) {
        err = add_sha256(root, "image_sha256", m->image_sha256);
        if (err != UPK_OK)
            return err;
    }
    err = add_opt_str(root, "agent", m->agent);
    if (err == UPK_OK && m->stale)
        err = add_bool(root, "stale", true);
    if (err == UPK_OK)
        err = add_uint(root, "ts", (uint64_t)m->ts);
    return err;
}

upk_err upk_state_encode(const upk_state_msg *m, char **out, size_t *outlen)
{
    if (m == NULL || out == NULL)
        return UPK_E_INVALID_ARG;
    upk_err err = state_check(m);
    if (err != UPK_OK)
        return err;
    cJSON *root = NULL;
    err = new_msg(&root);
    if (err != UPK_OK)
        return err;
    err = state_build(m, root);
    if (err == UPK_OK)
        err = finish_msg(root, out, outlen);
    cJSON_Delete(root);
    return err;
}

static upk_err capability_parse(const cJSON *root, upk_capability *cap)
{
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(root, "capability");
    if (c == NULL)
        return UPK_OK; /* all false, no modules */
    if (!cJSON_IsObject(c))
        return UPK_E_FIELD_TYPE;
    upk_err err = upk__json_bool(c, "automatic", true, &cap->automatic);
    if (err == UPK_OK)
        err = upk__json_bool(c, "signed", true, &cap->signed_only);
    if (err == UPK_OK)
        err = upk__json_bool(c, "rollback", true, &cap->rollback);
    if (err == UPK_OK)
        err = upk__json_bool(c, "delta", true, &cap->delta);
    if (err != UPK_OK)
        return err;
    const cJSON *mods = cJSON_GetObjectItemCaseSensitive(c, "modules");
    if (mods == NULL)
        return UPK_OK;
    if (!cJSON_IsArray(mods))
        return UPK_E_FIELD_TYPE;
    const cJSON *it = NULL;
    cJSON_ArrayForEach(it, mods)
    {
        if (cap->module_count >= UPK_MODULES_MAX)
            return UPK_E_FIELD_TOO_LONG;
        if (!cJSON_IsString(it) || it->valuestring == NULL)
            return UPK_E_FIELD_TYPE;
        size_t n = strnlen(it->valuestring, UPK_ID_MAX + 1);
        if (n > UPK_ID_MAX)
            return UPK_E_FIELD_TOO_LONG;
        if (!upk_id_valid(it->valuestring))
            return UPK_E_ID_INVALID;
        memcpy(cap->modules[cap->module_count], it->valuestring, n + 1);
        cap->module_count++;
    }
    return UPK_OK;
}

/* Optional RFC 3339 time field; absent or "" gives 0. */
static upk_err json_time_text(const cJSON *obj, const char *name, int64_t *out)
{
    char t[UPK_TIME_STR_LEN + 1];
    upk_err err = upk__json_str(obj, name, true, t, UPK_TIME_STR_LEN);
    if (err != UPK_OK)
        return err;
    if (t[0] == '\0') {
        *out = 0;
        return UPK_OK;
    }
    return upk_time_parse(t, out);
}

static upk_err state_parse(const cJSON *root, upk_state_msg *m)
{
    upk_err err = upk__json_id(root, "device", false, m->device);
    if (err == UPK_OK)
        err = upk__json_id(root, "hw", false, m->hw);
    if (err == UPK_OK)
        err = upk__json_id(root, "release", true, m->release);
    if (err == UPK_OK)
        err = json_version(root, "version", m->version);
    if (err == UPK_OK)
        err = upk__json_u64(root, "security_version", true, UPK__JSON_SAFE_INT_MAX,
                            &m->security_version);
    if (err == UPK_OK)
        err = upk__json_id(root, "slot", true, m->slot);
    if (err == UPK_OK)
        err = json_status(root, "status", &m->status);
    if (err == UPK_OK)
        err = upk__json_id(root, "campaign", true, m->campaign);
    if (err == UPK_OK)
        err = upk__json_err(root, "error", true, &m->error);
    if (err == UPK_OK)
        err = capability_parse(root, &m->cap);
    if (err == UPK_OK)
        err = json_time_text(root, "support_until", &m->support_until);
    if (err != UPK_OK)
        return err;

    char src[UPK_ID_MAX + 1];
    err = upk__json_str(root, "support_source", true, src, UPK_ID_MAX);
    if (err != UPK_OK)
        return err;
    if (strcmp(src, SUPPORT_SOURCE_MANIFEST) == 0)
        m->support_signed = true;
    else if (src[0] == '\0' || strcmp(src, SUPPORT_SOURCE_CONFIG) == 0)
        m->support_signed = false;
    else
        return UPK_E_FIELD_RANGE;

    err = upk__json_i64(root, "last_patched", true, 0, TIME_MAX, &m->last_patched);
    if (err == UPK_OK)
        err = upk__json_sha256(root, "image_sha256", true, m->image_sha256);
    if (err == UPK_OK)
        err = json_version(root, "agent", m->agent);
    if (err == UPK_OK)
        err = upk__json_bool(root, "stale", true, &m->stale);
    if (err == UPK_OK)
        err = upk__json_i64(root, "ts", false, 0, TIME_MAX, &m->ts);
    return err;
}

upk_err upk_state_decode(const char *json, size_t len, upk_state_msg *out)
{
    if (json == NULL || out == NULL)
        return UPK_E_INVALID_ARG;
    cJSON *root = NULL;
    upk_err err = parse_msg(json, len, &root);
    if (err != UPK_OK)
        return err;
    upk_state_msg *tmp = calloc(1, sizeof(*tmp));
    if (tmp == NULL) {
        err = UPK_E_NOMEM;
        goto out_root;
    }
    err = state_parse(root, tmp);
    if (err == UPK_OK)
        memcpy(out, tmp, sizeof(*out));
    free(tmp);
out_root:
    cJSON_Delete(root);
    return err;
}

/* ---- dev/{d}/desired */

/* Base64 text of a UPK_SIG_MAX-byte signature, at most. */
#define SIG_B64_MAX (((UPK_SIG_MAX + 2) / 3) * 4)

static upk_err desired_check(const upk_desired_msg *m)
{
    if (m->ctr > UPK_DESIRED_CTR_MAX || m->fresh_until < 0 ||
        m->fresh_until > UPK_DESIRED_FRESH_MAX)
        return UPK_E_FIELD_RANGE;
    if (m->clear)
        return m->campaign[0] == '\0' && m->key_id[0] == '\0' && m->manifest_len == 0 &&
                       m->sig_len == 0 && m->bake_s == 0 && !m->rollback
                   ? UPK_OK
                   : UPK_E_INVALID_ARG;
    if (!str_fits(m->campaign, sizeof(m->campaign)) || !upk_id_valid(m->campaign))
        return UPK_E_ID_INVALID;
    if (!str_fits(m->key_id, sizeof(m->key_id)))
        return UPK_E_FIELD_TOO_LONG;
    if (!upk_sha256_hex_valid(m->key_id))
        return UPK_E_FIELD_RANGE;
    if (m->manifest == NULL || m->manifest_len == 0 || m->sig_len == 0)
        return UPK_E_FIELD_MISSING;
    if (m->manifest_len > UPK_MANIFEST_MAX || m->sig_len > UPK_SIG_MAX)
        return UPK_E_FIELD_TOO_LONG;
    /* A NUL cannot travel inside a JSON string that C code reads back. */
    if (memchr(m->manifest, '\0', m->manifest_len) != NULL)
        return UPK_E_FIELD_RANGE;
    return UPK_OK;
}

/* The fields only the link tag covers, in wire order. */
static upk_err desired_add_link_fields(const upk_desired_msg *m, cJSON *root)
{
    upk_err err = UPK_OK;
    if (m->rollback)
        err = add_bool(root, "rollback", true);
    if (err == UPK_OK && m->ctr != 0)
        err = add_uint(root, "ctr", m->ctr);
    if (err == UPK_OK && m->fresh_until != 0)
        err = add_uint(root, "fresh_until", (uint64_t)m->fresh_until);
    return err;
}

upk_err upk_desired_encode(const upk_desired_msg *m, char **out, size_t *outlen)
{
    if (m == NULL || out == NULL)
        return UPK_E_INVALID_ARG;
    upk_err err = desired_check(m);
    if (err != UPK_OK)
        return err;
    if (m->clear) {
        cJSON *root = NULL;
        err = new_msg(&root);
        if (err != UPK_OK)
            return err;
        err = desired_add_link_fields(m, root);
        if (err == UPK_OK)
            err = finish_msg(root, out, outlen);
        cJSON_Delete(root);
        return err;
    }

    /* The manifest need not be NUL-terminated at manifest_len: copy it. */
    char *text = malloc(m->manifest_len + 1);
    if (text == NULL)
        return UPK_E_NOMEM;
    memcpy(text, m->manifest, m->manifest_len);
    text[m->manifest_len] = '\0';

    char sig[SIG_B64_MAX + 1];
    size_t siglen = 0;
    err = upk_base64_encode(m->sig, m->sig_len, sig, sizeof(sig), &siglen);
    if (err != UPK_OK)
        goto out_text;

    cJSON *root = NULL;
    err = new_msg(&root);
    if (err != UPK_OK)
        goto out_text;
    err = add_str(root, "campaign", m->campaign);
    if (err == UPK_OK)
        err = add_str(root, "key_id", m->key_id);
    if (err == UPK_OK)
        err = add_str(root, "manifest", text);
    if (err == UPK_OK)
        err = add_str(root, "sig", sig);
    if (err == UPK_OK && m->bake_s != 0)
        err = add_uint(root, "bake_s", m->bake_s);
    if (err == UPK_OK)
        err = desired_add_link_fields(m, root);
    if (err == UPK_OK)
        err = finish_msg(root, out, outlen);
    cJSON_Delete(root);
out_text:
    free(text);
    return err;
}

upk_err upk_desired_decode(const char *json, size_t len, upk_desired_msg *out)
{
    if (json == NULL || out == NULL)
        return UPK_E_INVALID_ARG;
    cJSON *root = NULL;
    upk_err err = parse_msg(json, len, &root);
    if (err != UPK_OK)
        return err;

    upk_desired_msg tmp;
    memset(&tmp, 0, sizeof(tmp));
    /* The link fields first: a clear has nothing else. */
    uint64_t ctr = 0;
    err = upk__json_u64(root, "ctr", true, UPK_DESIRED_CTR_MAX, &ctr);
    if (err == UPK_OK)
        err = upk__json_i64(root, "fresh_until", true, 0, UPK_DESIRED_FRESH_MAX, &tmp.fresh_until);
    if (err == UPK_OK)
        err = upk__json_bool(root, "rollback", true, &tmp.rollback);
    if (err != UPK_OK)
        goto out_root;
    tmp.ctr = ctr;
    static const char *const assignment[] = {"campaign", "key_id", "manifest", "sig", "bake_s"};
    bool any = false;
    for (size_t i = 0; i < sizeof(assignment) / sizeof(assignment[0]); i++)
        any = any || cJSON_GetObjectItemCaseSensitive(root, assignment[i]) != NULL;
    if (!any && !tmp.rollback) {
        tmp.clear = true;
        *out = tmp;
        goto out_root;
    }
    err = upk__json_id(root, "campaign", false, tmp.campaign);
    if (err == UPK_OK)
        err = upk__json_str(root, "key_id", false, tmp.key_id, UPK_KEY_ID_LEN);
    if (err == UPK_OK && !upk_sha256_hex_valid(tmp.key_id))
        err = UPK_E_FIELD_RANGE;
    if (err != UPK_OK)
        goto out_root;

    const cJSON *man = cJSON_GetObjectItemCaseSensitive(root, "manifest");
    if (man == NULL) {
        err = UPK_E_FIELD_MISSING;
        goto out_root;
    }
    if (!cJSON_IsString(man) || man->valuestring == NULL) {
        err = UPK_E_FIELD_TYPE;
        goto out_root;
    }
    /* upk__json_parse_object refused any NUL, so strnlen is the exact length
     * of the unescaped bytes. */
    size_t mlen = strnlen(man->valuestring, UPK_MANIFEST_MAX + 1);
    if (mlen > UPK_MANIFEST_MAX) {
        err = UPK_E_FIELD_TOO_LONG;
        goto out_root;
    }
    if (mlen == 0) {
        err = UPK_E_FIELD_RANGE;
        goto out_root;
    }

    char sig[SIG_B64_MAX + 1];
    err = upk__json_str(root, "sig", false, sig, SIG_B64_MAX);
    if (err != UPK_OK)
        goto out_root;
    err = upk_base64_decode(sig, strlen(sig), tmp.sig, sizeof(tmp.sig), &tmp.sig_len);
    if (err == UPK_E_BUFFER_TOO_SMALL)
        err = UPK_E_FIELD_TOO_LONG;
    else if (err != UPK_OK || tmp.sig_len == 0)
        err = UPK_E_FIELD_RANGE;
    if (err != UPK_OK)
        goto out_root;

    uint64_t bake = 0;
    err = upk__json_u64(root, "bake_s", true, UINT32_MAX, &bake);
    if (err != UPK_OK)
        goto out_root;
    tmp.bake_s = (uint32_t)bake;

    tmp.manifest = malloc(mlen + 1);
    if (tmp.manifest == NULL) {
        err = UPK_E_NOMEM;
        goto out_root;
    }
    memcpy(tmp.manifest, man->valuestring, mlen + 1);
    tmp.manifest_len = mlen;
    *out = tmp;
out_root:
    cJSON_Delete(root);
    return err;
}

/* Feeds a 4-byte big-endian length and then the bytes. */
static void hash_field(upk_sha256 *h, const void *p, size_t n)
{
    uint8_t len[4] = {(uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n};
    upk_sha256_update(h, len, sizeof(len));
    if (n > 0)
        upk_sha256_update(h, p, n);
}

upk_err upk_desired_assignment_id(const upk_desired_msg *m, uint8_t out[UPK_SHA256_LEN])
{
    if (m == NULL || out == NULL)
        return UPK_E_INVALID_ARG;
    if (m->clear) {
        memset(out, 0, UPK_SHA256_LEN);
        return UPK_OK;
    }
    static const char label[] = "upkeep-assignment-v1";
    uint8_t bake[4] = {(uint8_t)(m->bake_s >> 24), (uint8_t)(m->bake_s >> 16),
                       (uint8_t)(m->bake_s >> 8), (uint8_t)m->bake_s};
    uint8_t rb = m->rollback ? 1 : 0;
    upk_sha256 h;
    upk_sha256_init(&h);
    hash_field(&h, label, sizeof(label) - 1);
    hash_field(&h, m->campaign, strnlen(m->campaign, sizeof(m->campaign)));
    hash_field(&h, m->key_id, strnlen(m->key_id, sizeof(m->key_id)));
    hash_field(&h, m->manifest, m->manifest != NULL ? m->manifest_len : 0);
    hash_field(&h, m->sig, m->sig_len <= sizeof(m->sig) ? m->sig_len : sizeof(m->sig));
    hash_field(&h, bake, sizeof(bake));
    hash_field(&h, &rb, 1);
    upk_sha256_final(&h, out);
    upk_sha256_cleanup(&h);
    return UPK_OK;
}

void upk_desired_cleanup(upk_desired_msg *m)
{
    if (m == NULL)
        return;
    free(m->manifest);
    m->manifest = NULL;
    m->manifest_len = 0;
}

/* ---- dev/{d}/events */

#define HEALTH_METRICS_MAX (sizeof(((upk_health *)0)->metric_value) / sizeof(double))

static upk_err event_check(const upk_event_msg *m)
{
    upk_err err = check_opt_id(m->campaign);
    if (err == UPK_OK)
        err = check_opt_id(m->release);
    if (err == UPK_OK)
        err = check_version(m->version);
    if (err != UPK_OK)
        return err;
    if (!str_fits(m->message, sizeof(m->message)))
        return UPK_E_FIELD_TOO_LONG;
    if (m->seq == 0 || m->seq > UPK__JSON_SAFE_INT_MAX || m->ts < 0 || m->ts > TIME_MAX ||
        (unsigned)m->step >= (unsigned)UPK_STATUS__COUNT || m->progress > 100 ||
        (unsigned)m->error >= (unsigned)UPK_E__COUNT)
        return UPK_E_FIELD_RANGE;
    if (!m->health.present)
        return UPK_OK;
    const upk_health *h = &m->health;
    if (h->check_ok < -1 || h->check_ok > 1)
        return UPK_E_FIELD_RANGE;
    if (h->metric_count > HEALTH_METRICS_MAX)
        return UPK_E_FIELD_TOO_LONG;
    for (size_t i = 0; i < h->metric_count; i++) {
        if (!str_fits(h->metric_name[i], UPK_ID_MAX + 1) || !upk_id_valid(h->metric_name[i]))
            return UPK_E_ID_INVALID;
        if (!isfinite(h->metric_value[i]))
            return UPK_E_FIELD_RANGE;
        for (size_t j = 0; j < i; j++) {
            if (strcmp(h->metric_name[i], h->metric_name[j]) == 0)
                return UPK_E_FIELD_RANGE;
        }
    }
    return UPK_OK;
}

static upk_err health_build(const upk_health *h, cJSON *root)
{
    cJSON *obj = cJSON_AddObjectToObject(root, "health");
    if (obj == NULL)
        return UPK_E_NOMEM;
    upk_err err = add_uint(obj, "restarts", h->restarts);
    if (err == UPK_OK)
        err = add_uint(obj, "boots", h->boots);
    if (err == UPK_OK && h->check_ok >= 0)
        err = add_bool(obj, "check_ok", h->check_ok == 1);
    if (err != UPK_OK)
        return err;
    cJSON *metrics = cJSON_AddObjectToObject(obj, "metrics");
    if (metrics == NULL)
        return UPK_E_NOMEM;
    for (size_t i = 0; i < h->metric_count; i++) {
        err = add_double(metrics, h->metric_name[i], h->metric_value[i]);
        if (err != UPK_OK)
            return err;
    }
    return UPK_OK;
}

static upk_err event_build(const upk_event_msg *m, cJSON *root)
{
    upk_err err = add_uint(root, "seq", m->seq);
    if (err == UPK_OK)
        err = add_uint(root, "ts", (uint64_t)m->ts);
    if (err == UPK_OK)
        err = add_opt_str(root, "campaign", m->campaign);
    if (err == UPK_OK)
        err = add_opt_str(root, "release", m->release);
    if (err == UPK_OK)
        err = add_opt_str(root, "version", m->version);
    if (err == UPK_OK)
        err = add_str(root, "step", upk_status_str(m->step));
    if (err == UPK_OK && m->progress != 0)
        err = add_uint(root, "progress", m->progress);
    if (err == UPK_OK && m->error != UPK_OK)
        err = add_str(root, "error", upk_err_str(m->error));
    if (err == UPK_OK)
        err = add_opt_str(root, "message", m->message);
    if (err == UPK_OK && m->health.present)
        err = health_build(&m->health, root);
    return err;
}

upk_err upk_event_encode(const upk_event_msg *m, char **out, size_t *outlen)
{
    if (m == NULL || out == NULL)
        return UPK_E_INVALID_ARG;
    upk_err err = event_check(m);
    if (err != UPK_OK)
        return err;
    cJSON *root = NULL;
    err = new_msg(&root);
    if (err != UPK_OK)
        return err;
    err = event_build(m, root);
    if (err == UPK_OK)
        err = finish_msg(root, out, outlen);
    cJSON_Delete(root);
    return err;
}

static upk_err health_parse(const cJSON *root, upk_health *h)
{
    const cJSON *obj = cJSON_GetObjectItemCaseSensitive(root, "health");
    if (obj == NULL) {
        h->check_ok = -1;
        return UPK_OK;
    }
    if (!cJSON_IsObject(obj))
        return UPK_E_FIELD_TYPE;
    h->present = true;
    uint64_t v = 0;
    upk_err err = upk__json_u64(obj, "restarts", true, UINT32_MAX, &v);
    if (err != UPK_OK)
        return err;
    h->restarts = (uint32_t)v;
    err = upk__json_u64(obj, "boots", true, UINT32_MAX, &v);
    if (err != UPK_OK)
        return err;
    h->boots = (uint32_t)v;
    const cJSON *ok = cJSON_GetObjectItemCaseSensitive(obj, "check_ok");
    if (ok == NULL)
        h->check_ok = -1;
    else if (cJSON_IsBool(ok))
        h->check_ok = cJSON_IsTrue(ok) ? 1 : 0;
    else
        return UPK_E_FIELD_TYPE;

    const cJSON *metrics = cJSON_GetObjectItemCaseSensitive(obj, "metrics");
    if (metrics == NULL)
        return UPK_OK;
    if (!cJSON_IsObject(metrics))
        return UPK_E_FIELD_TYPE;
    const cJSON *it = NULL;
    cJSON_ArrayForEach(it, metrics)
    {
        if (h->metric_count >= HEALTH_METRICS_MAX)
            return UPK_E_FIELD_TOO_LONG;
        if (it->string == NULL || !upk_id_valid(it->string))
            return UPK_E_ID_INVALID;
        if (!cJSON_IsNumber(it))
            return UPK_E_FIELD_TYPE;
        if (!isfinite(it->valuedouble))
            return UPK_E_FIELD_RANGE;
        for (size_t j = 0; j < h->metric_count; j++) {
            if (strcmp(h->metric_name[j], it->string) == 0)
                return UPK_E_FIELD_RANGE;
        }
        memcpy(h->metric_name[h->metric_count], it->string, strlen(it->string) + 1);
        h->metric_value[h->metric_count] = it->valuedouble;
        h->metric_count++;
    }
    return UPK_OK;
}

static upk_err event_parse(const cJSON *root, upk_event_msg *m)
{
    upk_err err = upk__json_u64(root, "seq", false, UPK__JSON_SAFE_INT_MAX, &m->seq);
    if (err == UPK_OK && m->seq == 0)
        err = UPK_E_FIELD_RANGE;
    if (err == UPK_OK)
        err = upk__json_i64(root, "ts", false, 0, TIME_MAX, &m->ts);
    if (err == UPK_OK)
        err = upk__json_id(root, "campaign", true, m->campaign);
    if (err == UPK_OK)
        err = upk__json_id(root, "release", true, m->release);
    if (err == UPK_OK)
        err = json_version(root, "version", m->version);
    if (err == UPK_OK)
        err = json_status(root, "step", &m->step);
    if (err != UPK_OK)
        return err;
    uint64_t progress = 0;
    err = upk__json_u64(root, "progress", true, 100, &progress);
    if (err != UPK_OK)
        return err;
    m->progress = (uint32_t)progress;
    err = upk__json_err(root, "error", true, &m->error);
    if (err == UPK_OK)
        err = upk__json_str(root, "message", true, m->message, UPK_ERRMSG_MAX);
    if (err == UPK_OK)
        err = health_parse(root, &m->health);
    return err;
}

upk_err upk_event_decode(const char *json, size_t len, upk_event_msg *out)
{
    if (json == NULL || out == NULL)
        return UPK_E_INVALID_ARG;
    cJSON *root = NULL;
    upk_err err = parse_msg(json, len, &root);
    if (err != UPK_OK)
        return err;
    upk_event_msg *tmp = calloc(1, sizeof(*tmp));
    if (tmp == NULL) {
        err = UPK_E_NOMEM;
        goto out_root;
    }
    err = event_parse(root, tmp);
    if (err == UPK_OK)
        memcpy(out, tmp, sizeof(*out));
    free(tmp);
out_root:
    cJSON_Delete(root);
    return err;
}

/* ---- dev/{d}/chunk/req */

upk_err upk_chunk_req_encode(const upk_chunk_req *m, char **out, size_t *outlen)
{
    if (m == NULL || out == NULL)
        return UPK_E_INVALID_ARG;
    if (m->offset > UPK__JSON_SAFE_INT_MAX || m->length == 0 || m->length > UPK_CHUNK_MAX)
        return UPK_E_FIELD_RANGE;
    cJSON *root = NULL;
    upk_err err = new_msg(&root);
    if (err != UPK_OK)
        return err;
    err = add_sha256(root, "artifact", m->artifact);
    if (err == UPK_OK)
        err = add_uint(root, "offset", m->offset);
    if (err == UPK_OK)
        err = add_uint(root, "length", m->length);
    if (err == UPK_OK)
        err = finish_msg(root, out, outlen);
    cJSON_Delete(root);
    return err;
}

upk_err upk_chunk_req_decode(const char *json, size_t len, upk_chunk_req *out)
{
    if (json == NULL || out == NULL)
        return UPK_E_INVALID_ARG;
    cJSON *root = NULL;
    upk_err err = parse_msg(json, len, &root);
    if (err != UPK_OK)
        return err;
    upk_chunk_req tmp;
    memset(&tmp, 0, sizeof(tmp));
    uint64_t length = 0;
    err = upk__json_sha256(root, "artifact", false, tmp.artifact);
    if (err == UPK_OK)
        err = upk__json_u64(root, "offset", false, UPK__JSON_SAFE_INT_MAX, &tmp.offset);
    if (err == UPK_OK)
        err = upk__json_u64(root, "length", false, UPK_CHUNK_MAX, &length);
    if (err == UPK_OK && length == 0)
        err = UPK_E_FIELD_RANGE;
    if (err == UPK_OK) {
        tmp.length = (uint32_t)length;
        memcpy(out, &tmp, sizeof(*out));
    }
    cJSON_Delete(root);
    return err;
}

/* ---- dev/{d}/ack */

upk_err upk_ack_encode(uint64_t seq, char **out, size_t *outlen)
{
    if (out == NULL)
        return UPK_E_INVALID_ARG;
    if (seq == 0 || seq > UPK__JSON_SAFE_INT_MAX)
        return UPK_E_FIELD_RANGE;
    cJSON *root = NULL;
    upk_err err = new_msg(&root);
    if (err != UPK_OK)
        return err;
    err = add_uint(root, "seq", seq);
    if (err == UPK_OK)
        err = finish_msg(root, out, outlen);
    cJSON_Delete(root);
    return err;
}

upk_err upk_ack_decode(const char *json, size_t len, uint64_t *seq)
{
    if (json == NULL || seq == NULL)
        return UPK_E_INVALID_ARG;
    cJSON *root = NULL;
    upk_err err = parse_msg(json, len, &root);
    if (err != UPK_OK)
        return err;
    uint64_t v = 0;
    err = upk__json_u64(root, "seq", false, UPK__JSON_SAFE_INT_MAX, &v);
    if (err == UPK_OK && v == 0)
        err = UPK_E_FIELD_RANGE;
    if (err == UPK_OK)
        *seq = v;
    cJSON_Delete(root);
    return err;
}

/* ---- dev/{d}/chunk/data */

static const uint8_t chunk_magic[4] = {'U', 'P', 'K', 'C'};

void upk_chunk_hdr_write(const upk_chunk_hdr *h, uint8_t buf[UPK_CHUNK_HDR_LEN])
{
    memcpy(buf, chunk_magic, sizeof(chunk_magic));
    buf[4] = UPK_CHUNK_HDR_VERSION;
    buf[5] = (uint8_t)h->status;
    buf[6] = 0;
    buf[7] = 0;
    memcpy(buf + 8, h->artifact, UPK_SHA256_LEN);
    for (int i = 0; i < 8; i++)
        buf[40 + i] = (uint8_t)(h->offset >> (56 - 8 * i));
    for (int i = 0; i < 4; i++)
        buf[48 + i] = (uint8_t)(h->length >> (24 - 8 * i));
}

upk_err upk_chunk_parse(const uint8_t *payload, size_t len, upk_chunk_hdr *hdr,
                        const uint8_t **data)
{
    if (payload == NULL || hdr == NULL || data == NULL)
        return UPK_E_INVALID_ARG;
    if (len < UPK_CHUNK_HDR_LEN || memcmp(payload, chunk_magic, sizeof(chunk_magic)) != 0 ||
        payload[4] != UPK_CHUNK_HDR_VERSION || payload[5] > UPK_CHUNK_BUSY || payload[6] != 0 ||
        payload[7] != 0)
        return UPK_E_CHUNK_INVALID;
    uint64_t offset = 0;
    for (int i = 0; i < 8; i++)
        offset = (offset << 8) | payload[40 + i];
    uint32_t length = 0;
    for (int i = 0; i < 4; i++)
        length = (length << 8) | payload[48 + i];
    upk_chunk_status status = (upk_chunk_status)payload[5];
    if (length > UPK_CHUNK_MAX || (status != UPK_CHUNK_OK && length != 0) ||
        len - UPK_CHUNK_HDR_LEN != length)
        return UPK_E_CHUNK_INVALID;
    hdr->status = status;
    memcpy(hdr->artifact, payload + 8, UPK_SHA256_LEN);
    hdr->offset = offset;
    hdr->length = length;
    *data = payload + UPK_CHUNK_HDR_LEN;
    return UPK_OK;
}

/* ---- ctl/req/{o} and ctl/resp/{o} */

/* True when every number inside v is finite. cJSON reads 1e999 as infinity
 * but prints it as null, so such a value would not survive a round trip.
 * Recursion depth is bounded by cJSON's nesting limit. */
static bool json_all_finite(const cJSON *v)
{
    if (cJSON_IsNumber(v))
        return isfinite(v->valuedouble);
    const cJSON *it = NULL;
    if (cJSON_IsArray(v) || cJSON_IsObject(v)) {
        cJSON_ArrayForEach(it, v)
        {
            if (!json_all_finite(it))
                return false;
        }
    }
    return true;
}

static bool cmd_valid(const char *s)
{
    size_t n = strnlen(s, UPK_CMD_MAX + 1);
    if (n == 0 || n > UPK_CMD_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

upk_err upk_ctl_req_encode(const upk_ctl_req *m, char **out, size_t *outlen)
{
    if (m == NULL || out == NULL)
        return UPK_E_INVALID_ARG;
    if (!str_fits(m->id, sizeof(m->id)) || !upk_id_valid(m->id))
        return UPK_E_ID_INVALID;
    if (!str_fits(m->cmd, sizeof(m->cmd)) || !cmd_valid(m->cmd))
        return UPK_E_FIELD_RANGE;
    if (m->args != NULL && !cJSON_IsObject(m->args))
        return UPK_E_FIELD_TYPE;
    if (m->args != NULL && !json_all_finite(m->args))
        return UPK_E_FIELD_RANGE;
    if (m->args != NULL) {
        upk_err kerr = upk__json_check_keys(m->args);
        if (kerr != UPK_OK)
            return kerr == UPK_E_JSON_INVALID ? UPK_E_FIELD_RANGE : kerr;
    }
    cJSON *root = NULL;
    upk_err err = new_msg(&root);
    if (err != UPK_OK)
        return err;
    err = add_str(root, "id", m->id);
    if (err == UPK_OK)
        err = add_str(root, "cmd", m->cmd);
    if (err == UPK_OK) {
        cJSON *args = m->args != NULL ? cJSON_Duplicate(m->args, true) : cJSON_CreateObject();
        if (args == NULL || !cJSON_AddItemToObject(root, "args", args)) {
            cJSON_Delete(args);
            err = UPK_E_NOMEM;
        }
    }
    if (err == UPK_OK)
        err = finish_msg(root, out, outlen);
    cJSON_Delete(root);
    return err;
}

upk_err upk_ctl_req_decode(const char *json, size_t len, upk_ctl_req *out)
{
    if (json == NULL || out == NULL)
        return UPK_E_INVALID_ARG;
    cJSON *root = NULL;
    upk_err err = parse_msg(json, len, &root);
    if (err != UPK_OK)
        return err;
    upk_ctl_req tmp;
    memset(&tmp, 0, sizeof(tmp));
    err = upk__json_id(root, "id", false, tmp.id);
    if (err == UPK_OK)
        err = upk__json_str(root, "cmd", false, tmp.cmd, UPK_CMD_MAX);
    if (err == UPK_OK && !cmd_valid(tmp.cmd))
        err = UPK_E_FIELD_RANGE;
    if (err != UPK_OK)
        goto out_root;
    const cJSON *args = cJSON_GetObjectItemCaseSensitive(root, "args");
    if (args != NULL && !cJSON_IsObject(args)) {
        err = UPK_E_FIELD_TYPE;
        goto out_root;
    }
    if (args != NULL && !json_all_finite(args)) {
        err = UPK_E_FIELD_RANGE;
        goto out_root;
    }
    tmp.args =
        args != NULL ? cJSON_DetachItemFromObjectCaseSensitive(root, "args") : cJSON_CreateObject();
    if (tmp.args == NULL) {
        err = UPK_E_NOMEM;
        goto out_root;
    }
    *out = tmp;
out_root:
    cJSON_Delete(root);
    return err;
}

void upk_ctl_req_cleanup(upk_ctl_req *m)
{
    if (m == NULL)
        return;
    cJSON_Delete(m->args);
    m->args = NULL;
}

upk_err upk_ctl_resp_encode(const upk_ctl_resp *m, char **out, size_t *outlen)
{
    if (m == NULL || out == NULL)
        return UPK_E_INVALID_ARG;
    if (!str_fits(m->id, sizeof(m->id)) || !upk_id_valid(m->id))
        return UPK_E_ID_INVALID;
    if ((unsigned)m->error >= (unsigned)UPK_E__COUNT)
        return UPK_E_FIELD_RANGE;
    if (!str_fits(m->message, sizeof(m->message)))
        return UPK_E_FIELD_TOO_LONG;
    if (m->data != NULL && !json_all_finite(m->data))
        return UPK_E_FIELD_RANGE;
    if (m->data != NULL) {
        upk_err kerr = upk__json_check_keys(m->data);
        if (kerr != UPK_OK)
            return kerr == UPK_E_JSON_INVALID ? UPK_E_FIELD_RANGE : kerr;
    }
    cJSON *root = NULL;
    upk_err err = new_msg(&root);
    if (err != UPK_OK)
        return err;
    err = add_str(root, "id", m->id);
    if (err == UPK_OK)
        err = add_bool(root, "ok", m->error == UPK_OK);
    if (err == UPK_OK && m->error != UPK_OK)
        err = add_str(root, "error", upk_err_str(m->error));
    if (err == UPK_OK)
        err = add_opt_str(root, "message", m->message);
    if (err == UPK_OK && m->data != NULL && !cJSON_IsNull(m->data)) {
        cJSON *data = cJSON_Duplicate(m->data, true);
        if (data == NULL || !cJSON_AddItemToObject(root, "data", data)) {
            cJSON_Delete(data);
            err = UPK_E_NOMEM;
        }
    }
    if (err == UPK_OK)
        err = finish_msg(root, out, outlen);
    cJSON_Delete(root);
    return err;
}

upk_err upk_ctl_resp_decode(const char *json, size_t len, upk_ctl_resp *out)
{
    if (json == NULL || out == NULL)
        return UPK_E_INVALID_ARG;
    cJSON *root = NULL;
    upk_err err = parse_msg(json, len, &root);
    if (err != UPK_OK)
        return err;
    upk_ctl_resp tmp;
    memset(&tmp, 0, sizeof(tmp));
    bool ok = false;
    err = upk__json_id(root, "id", false, tmp.id);
    if (err == UPK_OK)
        err = upk__json_bool(root, "ok", false, &ok);
    if (err == UPK_OK)
        err = upk__json_err(root, "error", ok, &tmp.error);
    /* "ok" and "error" must agree: a failure names its code, a success none. */
    if (err == UPK_OK && ok != (tmp.error == UPK_OK))
        err = UPK_E_FIELD_RANGE;
    if (err == UPK_OK)
        err = upk__json_str(root, "message", true, tmp.message, UPK_ERRMSG_MAX);
    if (err != UPK_OK)
        goto out_root;
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(root, "data");
    if (data != NULL && !json_all_finite(data)) {
        err = UPK_E_FIELD_RANGE;
        goto out_root;
    }
    if (data != NULL && !cJSON_IsNull(data))
        tmp.data = cJSON_DetachItemFromObjectCaseSensitive(root, "data");
    *out = tmp;
out_root:
    cJSON_Delete(root);
    return err;
}

void upk_ctl_resp_cleanup(upk_ctl_resp *m)
{
    if (m == NULL)
        return;
    cJSON_Delete(m->data);
    m->data = NULL;
}
