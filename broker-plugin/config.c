/* The plugin's one JSON configuration file (named by plugin_opt_config):
 * strict parsing where every unknown or bad field is an error that names the
 * field, so a typo makes the broker refuse to start rather than run open.
 * docs/broker-plugin.md documents every field. */
#include "core.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

static const upk_bp_limits default_limits[UPK_BP_ROLE__COUNT] = {
    [UPK_BP_ROLE_DEVICE] = {20, 50, 262144, 524288, 262144, 200, 10, 60},
    [UPK_BP_ROLE_CONTROLLER] = {0, 0, 0, 0, 4194304, 0, 10, 0},
    /* Operators upload releases (36 KiB chunks, one per round trip): 1 MiB/s
     * lets that through while still bounding a stolen operator account. */
    [UPK_BP_ROLE_OPERATOR] = {10, 20, 1048576, 2097152, 65536, 200, 10, 60},
    [UPK_BP_ROLE_ADMIN] = {0, 0, 0, 0, 0, 0, 10, 0},
};

upk_err upk__bp_config_init(upk_bp_config *cfg)
{
    if (cfg == NULL)
        return UPK_E_INVALID_ARG;
    memset(cfg, 0, sizeof(*cfg));
    snprintf(cfg->prefix, sizeof(cfg->prefix), "%s", UPK_TOPIC_PREFIX_DEFAULT);
    memcpy(cfg->limits, default_limits, sizeof(cfg->limits));
    cfg->lockout.max_failures_per_username = 5;
    cfg->lockout.max_failures_per_address = 20;
    cfg->lockout.window_s = 60;
    cfg->lockout.lockout_s = 300;
    cfg->lockout.max_entries = 100000;
    cfg->stats_interval_s = 10;
    cfg->password_logins = true;
    upk_err err = upk__bp_map_init(&cfg->accounts, 64);
    if (err != UPK_OK)
        return err;
    err = upk__bp_map_init(&cfg->cert_accounts, 16);
    if (err != UPK_OK)
        return err;
    err = upk__bp_map_init(&cfg->device_min_epoch, 16);
    if (err != UPK_OK)
        return err;
    cfg->epochs_check_s = UPK_BP_EPOCHS_CHECK_S;
    return upk__bp_acl_prepare(cfg);
}

void upk__bp_config_cleanup(upk_bp_config *cfg)
{
    if (cfg == NULL)
        return;
    upk__bp_map_cleanup(&cfg->accounts, free);
    upk__bp_map_cleanup(&cfg->cert_accounts, free);
    upk__bp_map_cleanup(&cfg->device_min_epoch, free);
    free(cfg->patterns);
    cfg->patterns = NULL;
    memset(cfg->fleet_secret, 0, sizeof(cfg->fleet_secret));
    cfg->fleet_secret_len = 0;
}

/* Reads a whole file of at most max bytes into a NUL-terminated heap buffer. */
static upk_err read_file(const char *path, size_t max, char **out, size_t *outlen)
{
    upk_err err = UPK_E_IO;
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return UPK_E_IO;
    char *buf = malloc(max + 1);
    if (buf == NULL) {
        err = UPK_E_NOMEM;
        goto out_file;
    }
    size_t n = fread(buf, 1, max + 1, f);
    if (ferror(f))
        goto out_buf;
    if (n > max) {
        err = UPK_E_FIELD_TOO_LONG;
        goto out_buf;
    }
    buf[n] = '\0';
    *out = buf;
    *outlen = n;
    fclose(f);
    return UPK_OK;
out_buf:
    free(buf);
out_file:
    fclose(f);
    return err;
}

/* Joins base_dir and a relative path; absolute paths are kept. */
static upk_err resolve(const char *base_dir, const char *path, char *out, size_t cap)
{
    int n;
    if (path[0] == '/' || base_dir == NULL || base_dir[0] == '\0')
        n = snprintf(out, cap, "%s", path);
    else
        n = snprintf(out, cap, "%s/%s", base_dir, path);
    if (n < 0 || (size_t)n >= cap)
        return UPK_E_FIELD_TOO_LONG;
    return UPK_OK;
}

upk_err upk__bp_secret_load(const char *path, uint8_t *out, size_t cap, size_t *outlen, char *err,
                            size_t errcap)
{
    char *buf = NULL;
    size_t len = 0;
    upk_err e = read_file(path, UPK_BP_SECRET_MAX, &buf, &len);
    if (e != UPK_OK) {
        snprintf(err, errcap, "fleet_secret_file '%s': cannot read it (%s%s)", path,
                 e == UPK_E_FIELD_TOO_LONG ? "longer than 1024 bytes" : strerror(errno), "");
        return UPK_E_CONFIG_INVALID;
    }
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r' || buf[len - 1] == ' ' ||
                       buf[len - 1] == '\t'))
        len--;
    if (len < UPK_FLEET_SECRET_MIN || len > cap) {
        snprintf(err, errcap, "fleet_secret_file '%s': secret must be %d to %zu bytes", path,
                 UPK_FLEET_SECRET_MIN, cap);
        memset(buf, 0, len);
        free(buf);
        return UPK_E_CONFIG_INVALID;
    }
    memcpy(out, buf, len);
    *outlen = len;
    memset(buf, 0, len);
    free(buf);
    return UPK_OK;
}

/* Reads a non-negative number field; integral when want_int. */
static upk_err get_num(const cJSON *obj, const char *name, const char *ctx, double max,
                       bool want_int, double *out, char *err, size_t errcap)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (v == NULL)
        return UPK_OK; /* keep the default */
    double d = cJSON_IsNumber(v) ? v->valuedouble : -1;
    if (!cJSON_IsNumber(v) || !isfinite(d) || d < 0 || d > max || (want_int && d != floor(d))) {
        snprintf(err, errcap, "field '%s%s': must be a %s from 0 to %.0f", ctx, name,
                 want_int ? "whole number" : "number", max);
        return UPK_E_CONFIG_INVALID;
    }
    *out = d;
    return UPK_OK;
}

static upk_err get_u32(const cJSON *obj, const char *name, const char *ctx, uint32_t max,
                       uint32_t *out, char *err, size_t errcap)
{
    double d = *out;
    upk_err e = get_num(obj, name, ctx, max, true, &d, err, errcap);
    if (e == UPK_OK)
        *out = (uint32_t)d;
    return e;
}

/* Fails naming the first member of obj that is not in known (NULL-ended). */
static upk_err check_known(const cJSON *obj, const char *ctx, const char *const *known, char *err,
                           size_t errcap)
{
    const cJSON *it;
    cJSON_ArrayForEach(it, obj)
    {
        bool found = false;
        for (size_t i = 0; known[i] != NULL && !found; i++)
            found = it->string != NULL && strcmp(it->string, known[i]) == 0;
        if (!found) {
            snprintf(err, errcap, "field '%s%s': unknown field", ctx,
                     it->string != NULL ? it->string : "?");
            return UPK_E_CONFIG_INVALID;
        }
    }
    return UPK_OK;
}

static upk_err parse_limits(const cJSON *obj, upk_bp_limits *l, const char *ctx, char *err,
                            size_t errcap)
{
    static const char *const known[] = {
        "messages_per_second",  "burst_messages",    "bytes_per_second",
        "burst_bytes",          "max_payload_bytes", "kick_after_drops",
        "flood_window_seconds", "hold_off_seconds",  NULL};
    if (!cJSON_IsObject(obj)) {
        snprintf(err, errcap, "field '%s': must be an object", ctx);
        return UPK_E_CONFIG_INVALID;
    }
    char c[64];
    snprintf(c, sizeof(c), "%s.", ctx);
    upk_err e = check_known(obj, c, known, err, errcap);
    if (e == UPK_OK)
        e = get_num(obj, "messages_per_second", c, 1e9, false, &l->msgs_per_s, err, errcap);
    if (e == UPK_OK)
        e = get_num(obj, "burst_messages", c, 1e9, false, &l->burst_msgs, err, errcap);
    if (e == UPK_OK)
        e = get_num(obj, "bytes_per_second", c, 1e12, false, &l->bytes_per_s, err, errcap);
    if (e == UPK_OK)
        e = get_num(obj, "burst_bytes", c, 1e12, false, &l->burst_bytes, err, errcap);
    if (e == UPK_OK)
        e = get_u32(obj, "max_payload_bytes", c, 268435455u, &l->max_payload, err, errcap);
    if (e == UPK_OK)
        e = get_u32(obj, "kick_after_drops", c, 1000000000u, &l->kick_after_drops, err, errcap);
    if (e == UPK_OK)
        e = get_u32(obj, "flood_window_seconds", c, 86400u, &l->flood_window_s, err, errcap);
    if (e == UPK_OK)
        e = get_u32(obj, "hold_off_seconds", c, 86400u * 30u, &l->hold_off_s, err, errcap);
    if (e != UPK_OK)
        return e;
    /* A bucket smaller than one message would refuse everything. */
    if (l->msgs_per_s > 0 && l->burst_msgs < 1) {
        snprintf(err, errcap,
                 "field '%sburst_messages': must be >= 1 when messages_per_second is set", c);
        return UPK_E_CONFIG_INVALID;
    }
    if (l->bytes_per_s > 0 && l->burst_bytes < l->max_payload) {
        snprintf(err, errcap,
                 "field '%sburst_bytes': must be >= max_payload_bytes when bytes_per_second is set",
                 c);
        return UPK_E_CONFIG_INVALID;
    }
    if (l->bytes_per_s > 0 && l->max_payload == 0) {
        snprintf(err, errcap,
                 "field '%smax_payload_bytes': must be set when bytes_per_second is set", c);
        return UPK_E_CONFIG_INVALID;
    }
    if (l->kick_after_drops > 0 && l->flood_window_s == 0) {
        snprintf(err, errcap, "field '%sflood_window_seconds': must be >= 1 when kicking", c);
        return UPK_E_CONFIG_INVALID;
    }
    return UPK_OK;
}

static upk_err parse_lockout(const cJSON *obj, upk_bp_lockout_cfg *l, char *err, size_t errcap)
{
    static const char *const known[] = {"max_failures_per_username",
                                        "max_failures_per_address",
                                        "window_seconds",
                                        "lockout_seconds",
                                        "max_entries",
                                        NULL};
    if (!cJSON_IsObject(obj)) {
        snprintf(err, errcap, "field 'lockout': must be an object");
        return UPK_E_CONFIG_INVALID;
    }
    const char *c = "lockout.";
    double entries = (double)l->max_entries;
    upk_err e = check_known(obj, c, known, err, errcap);
    if (e == UPK_OK)
        e = get_u32(obj, "max_failures_per_username", c, 1000000u, &l->max_failures_per_username,
                    err, errcap);
    if (e == UPK_OK)
        e = get_u32(obj, "max_failures_per_address", c, 1000000u, &l->max_failures_per_address, err,
                    errcap);
    if (e == UPK_OK)
        e = get_u32(obj, "window_seconds", c, 86400u * 30u, &l->window_s, err, errcap);
    if (e == UPK_OK)
        e = get_u32(obj, "lockout_seconds", c, 86400u * 30u, &l->lockout_s, err, errcap);
    if (e == UPK_OK)
        e = get_num(obj, "max_entries", c, 100000000, true, &entries, err, errcap);
    if (e != UPK_OK)
        return e;
    if (entries < 1) {
        snprintf(err, errcap, "field 'lockout.max_entries': must be >= 1");
        return UPK_E_CONFIG_INVALID;
    }
    l->max_entries = (size_t)entries;
    if ((l->max_failures_per_username > 0 || l->max_failures_per_address > 0) &&
        (l->window_s == 0 || l->lockout_s == 0)) {
        snprintf(err, errcap, "field 'lockout.%s': must be >= 1 when lockout is enabled",
                 l->window_s == 0 ? "window_seconds" : "lockout_seconds");
        return UPK_E_CONFIG_INVALID;
    }
    return UPK_OK;
}

static const char *get_str(const cJSON *root, const char *name, char *err, size_t errcap,
                           upk_err *e)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, name);
    if (v == NULL)
        return NULL;
    if (!cJSON_IsString(v) || v->valuestring == NULL || v->valuestring[0] == '\0') {
        snprintf(err, errcap, "field '%s': must be a non-empty string", name);
        *e = UPK_E_CONFIG_INVALID;
        return NULL;
    }
    return v->valuestring;
}

static upk_err load_passwords(upk_bp_config *cfg, const char *base_dir, const char *file,
                              const cJSON *accounts, char *err, size_t errcap)
{
    char path[UPK_BP_PATH_MAX];
    char *text = NULL;
    size_t len = 0;
    if (accounts != NULL && !cJSON_IsObject(accounts)) {
        snprintf(err, errcap, "field 'accounts': must be an object of \"user\": \"role\"");
        return UPK_E_CONFIG_INVALID;
    }
    if (file == NULL) {
        if (accounts != NULL && cJSON_GetArraySize(accounts) > 0) {
            snprintf(err, errcap, "field 'password_file': required when 'accounts' lists users");
            return UPK_E_CONFIG_INVALID;
        }
        return UPK_OK;
    }
    upk_err e = resolve(base_dir, file, path, sizeof(path));
    if (e == UPK_OK)
        e = read_file(path, UPK_BP_PASSWD_MAX, &text, &len);
    if (e != UPK_OK) {
        snprintf(err, errcap, "field 'password_file': cannot read '%s' (%s)", path,
                 e == UPK_E_FIELD_TOO_LONG ? "too large" : strerror(errno));
        return UPK_E_CONFIG_INVALID;
    }
    e = upk__bp_passwd_load(&cfg->accounts, text, len, err, errcap);
    free(text);
    if (e != UPK_OK)
        return e;
    const cJSON *it;
    cJSON_ArrayForEach(it, accounts)
    {
        upk_bp_role role;
        if (!cJSON_IsString(it) || !upk__bp_role_parse(it->valuestring, &role)) {
            snprintf(err, errcap,
                     "field 'accounts.%s': role must be device, controller, operator or admin",
                     it->string);
            return UPK_E_CONFIG_INVALID;
        }
        upk_bp_account *a = upk__bp_map_get(&cfg->accounts, it->string);
        if (a == NULL) {
            snprintf(err, errcap, "field 'accounts.%s': user is not in password_file", it->string);
            return UPK_E_CONFIG_INVALID;
        }
        if (role == UPK_BP_ROLE_DEVICE && !upk_id_valid(it->string)) {
            snprintf(err, errcap, "field 'accounts.%s': a device account must be a valid device id",
                     it->string);
            return UPK_E_CONFIG_INVALID;
        }
        a->role = role;
    }
    /* Every password entry needs a role: an account with no role would be a
     * login that nothing can authorize, which is a config mistake. */
    for (size_t i = 0; i < cfg->accounts.nbuckets; i++) {
        for (upk_bp_map_entry *en = cfg->accounts.buckets[i]; en != NULL; en = en->next) {
            const upk_bp_account *a = en->value;
            if (a->role == UPK_BP_ROLE__COUNT) {
                snprintf(err, errcap, "field 'accounts': user '%s' of password_file has no role",
                         en->key);
                return UPK_E_CONFIG_INVALID;
            }
        }
    }
    return UPK_OK;
}

/* "certificate_identities": {"devices": bool, "accounts": {"CN": "role"}}.
 * Needs the password accounts loaded first (a name may not be both). */
static upk_err parse_cert_identities(upk_bp_config *cfg, const cJSON *obj, char *err, size_t errcap)
{
    static const char *const known[] = {"devices", "accounts", NULL};
    if (!cJSON_IsObject(obj)) {
        snprintf(err, errcap, "field 'certificate_identities': must be an object");
        return UPK_E_CONFIG_INVALID;
    }
    upk_err e = check_known(obj, "certificate_identities.", known, err, errcap);
    if (e != UPK_OK)
        return e;
    const cJSON *dev = cJSON_GetObjectItemCaseSensitive(obj, "devices");
    if (dev != NULL) {
        if (!cJSON_IsBool(dev)) {
            snprintf(err, errcap, "field 'certificate_identities.devices': must be true or false");
            return UPK_E_CONFIG_INVALID;
        }
        cfg->cert_devices = cJSON_IsTrue(dev);
    }
    const cJSON *acc = cJSON_GetObjectItemCaseSensitive(obj, "accounts");
    if (acc == NULL)
        return UPK_OK;
    if (!cJSON_IsObject(acc)) {
        snprintf(err, errcap,
                 "field 'certificate_identities.accounts': must be an object of \"CN\": \"role\"");
        return UPK_E_CONFIG_INVALID;
    }
    const cJSON *it;
    cJSON_ArrayForEach(it, acc)
    {
        upk_bp_role role;
        if (!upk__bp_name_safe(it->string) || strlen(it->string) > UPK_BP_USERNAME_MAX) {
            snprintf(err, errcap,
                     "field 'certificate_identities.accounts': a CN must be 1-%d bytes without "
                     "'+', '#', '/' or control characters",
                     UPK_BP_USERNAME_MAX);
            return UPK_E_CONFIG_INVALID;
        }
        if (!cJSON_IsString(it) || !upk__bp_role_parse(it->valuestring, &role) ||
            role == UPK_BP_ROLE_DEVICE) {
            snprintf(err, errcap,
                     "field 'certificate_identities.accounts.%s': role must be controller, "
                     "operator or admin (devices come from 'devices')",
                     it->string);
            return UPK_E_CONFIG_INVALID;
        }
        if (upk__bp_map_get(&cfg->accounts, it->string) != NULL) {
            snprintf(err, errcap,
                     "field 'certificate_identities.accounts.%s': also a password account; "
                     "use another CN",
                     it->string);
            return UPK_E_CONFIG_INVALID;
        }
        upk_bp_role *r = malloc(sizeof(*r));
        if (r == NULL)
            return UPK_E_NOMEM;
        *r = role;
        e = upk__bp_map_put(&cfg->cert_accounts, it->string, r);
        if (e != UPK_OK) {
            free(r);
            if (e == UPK_E_EXISTS)
                snprintf(err, errcap, "field 'certificate_identities.accounts.%s': listed twice",
                         it->string);
            return e == UPK_E_EXISTS ? UPK_E_CONFIG_INVALID : e;
        }
    }
    return UPK_OK;
}

/* "device_epochs_file" and "device_epochs_check_seconds" (see epochs.c).
 * Needs the password accounts and the fleet secret loaded first. */
static upk_err parse_epochs(upk_bp_config *cfg, const cJSON *root, const char *base_dir, char *err,
                            size_t errcap)
{
    upk_err e = UPK_OK;
    const char *file = get_str(root, "device_epochs_file", err, errcap, &e);
    if (e != UPK_OK)
        return e;
    bool has_check = cJSON_GetObjectItemCaseSensitive(root, "device_epochs_check_seconds") != NULL;
    if (file == NULL) {
        if (has_check) {
            snprintf(err, errcap,
                     "field 'device_epochs_check_seconds': only valid with device_epochs_file");
            return UPK_E_CONFIG_INVALID;
        }
        return UPK_OK;
    }
    if (cfg->fleet_secret_len == 0) {
        snprintf(err, errcap,
                 "field 'device_epochs_file': needs fleet_secret_file (epochs apply to derived "
                 "device passwords)");
        return UPK_E_CONFIG_INVALID;
    }
    e = get_u32(root, "device_epochs_check_seconds", "", 86400u, &cfg->epochs_check_s, err, errcap);
    if (e != UPK_OK)
        return e;
    if (cfg->epochs_check_s == 0) {
        snprintf(err, errcap, "field 'device_epochs_check_seconds': must be from 1 to 86400");
        return UPK_E_CONFIG_INVALID;
    }
    if (resolve(base_dir, file, cfg->epochs_path, sizeof(cfg->epochs_path)) != UPK_OK) {
        cfg->epochs_path[0] = '\0';
        snprintf(err, errcap, "field 'device_epochs_file': path too long");
        return UPK_E_CONFIG_INVALID;
    }
    return upk__bp_epochs_load(cfg, cfg->epochs_path, err, errcap);
}

upk_err upk__bp_config_parse(upk_bp_config *cfg, const char *json, size_t len, const char *base_dir,
                             char *err, size_t errcap)
{
    static const char *const known[] = {"topic_prefix",
                                        "password_file",
                                        "accounts",
                                        "fleet_secret_file",
                                        "lockout",
                                        "rate_limits",
                                        "stats_interval_seconds",
                                        "certificate_identities",
                                        "password_logins",
                                        "device_epochs_file",
                                        "device_epochs_check_seconds",
                                        NULL};
    upk_err e = UPK_OK;
    if (cfg == NULL || json == NULL || err == NULL || errcap == 0)
        return UPK_E_INVALID_ARG;
    err[0] = '\0';
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (root == NULL || !cJSON_IsObject(root)) {
        snprintf(err, errcap, "not a JSON object (syntax error near byte %zu)",
                 root == NULL ? (size_t)(cJSON_GetErrorPtr() - json) : (size_t)0);
        e = UPK_E_CONFIG_INVALID;
        goto out;
    }
    e = check_known(root, "", known, err, errcap);
    if (e != UPK_OK)
        goto out;

    const char *prefix = get_str(root, "topic_prefix", err, errcap, &e);
    if (e != UPK_OK)
        goto out;
    if (prefix != NULL) {
        if (!upk_topic_prefix_valid(prefix)) {
            snprintf(err, errcap, "field 'topic_prefix': not a valid topic prefix");
            e = UPK_E_CONFIG_INVALID;
            goto out;
        }
        snprintf(cfg->prefix, sizeof(cfg->prefix), "%s", prefix);
        e = upk__bp_acl_prepare(cfg);
        if (e != UPK_OK)
            goto out;
    }

    const char *pwfile = get_str(root, "password_file", err, errcap, &e);
    if (e != UPK_OK)
        goto out;
    e = load_passwords(cfg, base_dir, pwfile, cJSON_GetObjectItemCaseSensitive(root, "accounts"),
                       err, errcap);
    if (e != UPK_OK)
        goto out;

    const char *secret = get_str(root, "fleet_secret_file", err, errcap, &e);
    if (e != UPK_OK)
        goto out;
    if (secret != NULL) {
        char path[UPK_BP_PATH_MAX];
        e = resolve(base_dir, secret, path, sizeof(path));
        if (e != UPK_OK) {
            snprintf(err, errcap, "field 'fleet_secret_file': path too long");
            e = UPK_E_CONFIG_INVALID;
            goto out;
        }
        e = upk__bp_secret_load(path, cfg->fleet_secret, sizeof(cfg->fleet_secret),
                                &cfg->fleet_secret_len, err, errcap);
        if (e != UPK_OK)
            goto out;
    }

    e = parse_epochs(cfg, root, base_dir, err, errcap);
    if (e != UPK_OK)
        goto out;

    const cJSON *lo = cJSON_GetObjectItemCaseSensitive(root, "lockout");
    if (lo != NULL) {
        e = parse_lockout(lo, &cfg->lockout, err, errcap);
        if (e != UPK_OK)
            goto out;
    }

    const cJSON *rl = cJSON_GetObjectItemCaseSensitive(root, "rate_limits");
    if (rl != NULL) {
        if (!cJSON_IsObject(rl)) {
            snprintf(err, errcap, "field 'rate_limits': must be an object keyed by role");
            e = UPK_E_CONFIG_INVALID;
            goto out;
        }
        const cJSON *it;
        cJSON_ArrayForEach(it, rl)
        {
            upk_bp_role role;
            if (!upk__bp_role_parse(it->string, &role)) {
                snprintf(err, errcap, "field 'rate_limits.%s': unknown role", it->string);
                e = UPK_E_CONFIG_INVALID;
                goto out;
            }
            char ctx[48];
            snprintf(ctx, sizeof(ctx), "rate_limits.%s", upk__bp_role_str(role));
            e = parse_limits(it, &cfg->limits[role], ctx, err, errcap);
            if (e != UPK_OK)
                goto out;
        }
    }

    const cJSON *ci = cJSON_GetObjectItemCaseSensitive(root, "certificate_identities");
    if (ci != NULL) {
        e = parse_cert_identities(cfg, ci, err, errcap);
        if (e != UPK_OK)
            goto out;
    }
    const cJSON *pl = cJSON_GetObjectItemCaseSensitive(root, "password_logins");
    if (pl != NULL) {
        if (!cJSON_IsBool(pl)) {
            snprintf(err, errcap, "field 'password_logins': must be true or false");
            e = UPK_E_CONFIG_INVALID;
            goto out;
        }
        cfg->password_logins = cJSON_IsTrue(pl);
    }

    e = get_u32(root, "stats_interval_seconds", "", 86400u, &cfg->stats_interval_s, err, errcap);
out:
    cJSON_Delete(root);
    return e;
}

upk_err upk__bp_config_load(upk_bp_config *cfg, const char *path, char *err, size_t errcap)
{
    char *text = NULL;
    size_t len = 0;
    char dir[UPK_BP_PATH_MAX];
    if (cfg == NULL || path == NULL || err == NULL || errcap == 0)
        return UPK_E_INVALID_ARG;
    upk_err e = read_file(path, UPK_BP_CONFIG_MAX, &text, &len);
    if (e != UPK_OK) {
        snprintf(err, errcap, "cannot read '%s' (%s)", path,
                 e == UPK_E_FIELD_TOO_LONG ? "larger than 1 MiB" : strerror(errno));
        return UPK_E_CONFIG_INVALID;
    }
    int n = snprintf(dir, sizeof(dir), "%s", path);
    if (n < 0 || (size_t)n >= sizeof(dir)) {
        free(text);
        snprintf(err, errcap, "config path too long");
        return UPK_E_CONFIG_INVALID;
    }
    char *slash = strrchr(dir, '/');
    if (slash == NULL)
        snprintf(dir, sizeof(dir), ".");
    else if (slash == dir)
        dir[1] = '\0';
    else
        *slash = '\0';
    e = upk__bp_config_parse(cfg, text, len, dir, err, errcap);
    free(text);
    return e;
}
