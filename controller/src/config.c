/* Parsing and validation of the `upkeep serve` JSON configuration (config.h). */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "upkeep/fs.h"
#include "upkeep/jsoncfg.h"
#include "upkeep/linkauth.h"

#define CONFIG_FILE_MAX (256 * 1024)

static upk_err bad(char *why, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static upk_err bad(char *why, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = vsnprintf(why, cap, fmt, ap);
    (void)r;
    va_end(ap);
    return UPK_E_CONFIG_INVALID;
}

/* Copies an optional string field; false when present but not a fitting string. */
static bool get_str(const cJSON *root, const char *name, char *out, size_t cap, bool *present)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, name);
    *present = v != NULL;
    if (v == NULL)
        return true;
    if (!cJSON_IsString(v) || strlen(v->valuestring) >= cap || v->valuestring[0] == '\0')
        return false;
    memcpy(out, v->valuestring, strlen(v->valuestring) + 1);
    return true;
}

/* Every field parse below reads; anything else is a typo and refused by
 * name (as the broker plugin does), never silently ignored. A new field
 * must be added here. */
static const char *const serve_fields[] = {"data_dir",
                                           "broker",
                                           "username",
                                           "password_file",
                                           "client_id",
                                           "topic_prefix",
                                           "ca_file",
                                           "cert_file",
                                           "key_file",
                                           "tick_ms",
                                           "readonly_operators",
                                           "release_keys",
                                           "retention",
                                           "link_secret_file",
                                           "require_device_auth",
                                           "desired_refresh_s",
                                           NULL};
static const char *const retention_fields[] = {"events_days", "health_days", "events_per_device",
                                               NULL};

upk_err upk_serve_config_parse(const char *json, size_t len, upk_serve_config *out, char *why,
                               size_t whycap)
{
    upk_serve_config c;
    memset(&c, 0, sizeof(c));
    upk_err err = UPK_OK;
    bool present;
    cJSON *root = NULL;
    if ((err = upk_jsoncfg_parse(json, len, &root, why, whycap)) != UPK_OK)
        return err;
    if ((err = upk_jsoncfg_known(root, "", serve_fields, why, whycap)) != UPK_OK)
        goto done;
    if (!get_str(root, "data_dir", c.data_dir, sizeof(c.data_dir) - 80, &present) || !present) {
        err = bad(why, whycap, "data_dir: required string (a directory for the database)");
        goto done;
    }
    if (!get_str(root, "broker", c.broker, sizeof(c.broker), &present) || !present ||
        (strncmp(c.broker, "tcp://", 6) != 0 && strncmp(c.broker, "ssl://", 6) != 0 &&
         strncmp(c.broker, "mqtt://", 7) != 0 && strncmp(c.broker, "mqtts://", 8) != 0)) {
        err = bad(why, whycap, "broker: required URL like tcp://127.0.0.1:1883");
        goto done;
    }
    if (!get_str(root, "username", c.username, sizeof(c.username), &present) ||
        (present && !upk_id_valid(c.username))) {
        err = bad(why, whycap, "username: must be an id (1-64 of [A-Za-z0-9._-])");
        goto done;
    }
    char pwfile[UPK_PATH_MAX];
    if (!get_str(root, "password_file", pwfile, sizeof(pwfile), &present)) {
        err = bad(why, whycap, "password_file: must be a path");
        goto done;
    }
    if (present) {
        char *pw = NULL;
        size_t pwlen = 0;
        if (upk_fs_read(pwfile, sizeof(c.password) - 1, &pw, &pwlen) != UPK_OK) {
            err = bad(why, whycap, "password_file: cannot read %s", pwfile);
            goto done;
        }
        while (pwlen > 0 && (pw[pwlen - 1] == '\n' || pw[pwlen - 1] == '\r'))
            pw[--pwlen] = '\0';
        memcpy(c.password, pw, pwlen + 1);
        free(pw);
    }
    int r = snprintf(c.client_id, sizeof(c.client_id), "upkeep-controller");
    (void)r;
    if (!get_str(root, "client_id", c.client_id, sizeof(c.client_id), &present) ||
        !upk_id_valid(c.client_id)) {
        err = bad(why, whycap, "client_id: must be an id");
        goto done;
    }
    r = snprintf(c.prefix, sizeof(c.prefix), "%s", UPK_TOPIC_PREFIX_DEFAULT);
    if (!get_str(root, "topic_prefix", c.prefix, sizeof(c.prefix), &present) ||
        !upk_topic_prefix_valid(c.prefix)) {
        err = bad(why, whycap, "topic_prefix: must be a topic prefix without wildcards");
        goto done;
    }
    if (!get_str(root, "ca_file", c.ca_file, sizeof(c.ca_file), &present) ||
        !get_str(root, "cert_file", c.cert_file, sizeof(c.cert_file), &present) ||
        !get_str(root, "key_file", c.key_file, sizeof(c.key_file), &present)) {
        err = bad(why, whycap, "ca_file/cert_file/key_file: must be paths");
        goto done;
    }
    if ((c.cert_file[0] == '\0') != (c.key_file[0] == '\0')) {
        err = bad(why, whycap, "cert_file/key_file: give both or neither");
        goto done;
    }
    if ((strncmp(c.broker, "ssl://", 6) == 0 || strncmp(c.broker, "mqtts://", 8) == 0) &&
        c.ca_file[0] == '\0') {
        err = bad(why, whycap, "ca_file: required for an ssl:// broker");
        goto done;
    }
    c.tick_ms = 1000;
    const cJSON *tick = cJSON_GetObjectItemCaseSensitive(root, "tick_ms");
    if (tick != NULL) {
        if (!cJSON_IsNumber(tick) || tick->valuedouble < 50 || tick->valuedouble > 60000) {
            err = bad(why, whycap, "tick_ms: must be an integer from 50 to 60000");
            goto done;
        }
        c.tick_ms = (uint32_t)tick->valuedouble;
    }
    /* Retention of device-sent data (issue 17): days, 0 = keep forever. */
    c.events_keep_days = 30;
    c.health_keep_days = 30;
    c.events_per_device = 100000;
    const cJSON *ret = cJSON_GetObjectItemCaseSensitive(root, "retention");
    if (ret != NULL) {
        if ((err = upk_jsoncfg_known(ret, "retention.", retention_fields, why, whycap)) != UPK_OK)
            goto done;
        const cJSON *pd = cJSON_GetObjectItemCaseSensitive(ret, "events_per_device");
        if (pd != NULL && (!cJSON_IsNumber(pd) || pd->valuedouble < 0 || pd->valuedouble > 1e12 ||
                           pd->valuedouble != (double)(int64_t)pd->valuedouble)) {
            err = bad(why, whycap,
                      "retention: events_per_device must be a whole number from 0 (no cap) to"
                      " 1e12");
            goto done;
        }
        if (pd != NULL)
            c.events_per_device = (uint64_t)pd->valuedouble;
        const cJSON *ev = cJSON_GetObjectItemCaseSensitive(ret, "events_days");
        const cJSON *he = cJSON_GetObjectItemCaseSensitive(ret, "health_days");
        if (!cJSON_IsObject(ret) ||
            (ev != NULL && (!cJSON_IsNumber(ev) || ev->valuedouble < 0 || ev->valuedouble > 36500 ||
                            ev->valuedouble != (int)ev->valuedouble)) ||
            (he != NULL && (!cJSON_IsNumber(he) || he->valuedouble < 0 || he->valuedouble > 36500 ||
                            he->valuedouble != (int)he->valuedouble))) {
            err = bad(why, whycap,
                      "retention: must be an object with events_days and health_days, whole"
                      " days from 0 (keep forever) to 36500");
            goto done;
        }
        if (ev != NULL)
            c.events_keep_days = (uint32_t)ev->valuedouble;
        if (he != NULL)
            c.health_keep_days = (uint32_t)he->valuedouble;
    }
    const cJSON *ro = cJSON_GetObjectItemCaseSensitive(root, "readonly_operators");
    if (ro != NULL) {
        const cJSON *it;
        if (!cJSON_IsArray(ro) || cJSON_GetArraySize(ro) > UPK_READONLY_MAX) {
            err = bad(why, whycap, "readonly_operators: must be an array of at most %d ids",
                      UPK_READONLY_MAX);
            goto done;
        }
        cJSON_ArrayForEach(it, ro)
        {
            if (!cJSON_IsString(it) || !upk_id_valid(it->valuestring)) {
                err = bad(why, whycap, "readonly_operators: every entry must be an operator id");
                goto done;
            }
            memcpy(c.readonly[c.readonly_count++], it->valuestring, strlen(it->valuestring) + 1);
        }
    }
    char lsfile[UPK_PATH_MAX];
    if (!get_str(root, "link_secret_file", lsfile, sizeof(lsfile), &present)) {
        err = bad(why, whycap, "link_secret_file: must be a path");
        goto done;
    }
    if (present) {
        char *ls = NULL;
        size_t lslen = 0;
        upk_err rerr = upk_fs_read(lsfile, sizeof(c.link_secret), &ls, &lslen);
        if (rerr != UPK_OK) {
            err = bad(why, whycap, "link_secret_file: cannot read %s (%s; at most %d bytes)",
                      lsfile, upk_err_str(rerr), UPK_LINK_SECRET_MAX);
            goto done;
        }
        /* Read as `upkeep device-key --link-secret-file` reads it. */
        while (lslen > 0 && (ls[lslen - 1] == '\n' || ls[lslen - 1] == '\r' ||
                             ls[lslen - 1] == ' ' || ls[lslen - 1] == '\t'))
            lslen--;
        if (lslen < UPK_LINK_SECRET_MIN) {
            memset(ls, 0, lslen);
            free(ls);
            err = bad(why, whycap, "link_secret_file: %s holds fewer than %d bytes", lsfile,
                      UPK_LINK_SECRET_MIN);
            goto done;
        }
        memcpy(c.link_secret, ls, lslen);
        c.link_secret_len = lslen;
        memset(ls, 0, lslen);
        free(ls);
    }
    const cJSON *rda = cJSON_GetObjectItemCaseSensitive(root, "require_device_auth");
    if (rda != NULL) {
        if (!cJSON_IsBool(rda)) {
            err = bad(why, whycap, "require_device_auth: must be true or false");
            goto done;
        }
        c.require_device_auth = cJSON_IsTrue(rda);
        if (c.require_device_auth && c.link_secret_len == 0) {
            err = bad(why, whycap, "require_device_auth: needs link_secret_file");
            goto done;
        }
    }
    c.desired_refresh_s = UPK_DESIRED_REFRESH_S;
    const cJSON *refresh = cJSON_GetObjectItemCaseSensitive(root, "desired_refresh_s");
    if (refresh != NULL) {
        if (!cJSON_IsNumber(refresh) || refresh->valuedouble < 60 ||
            refresh->valuedouble > 2592000 ||
            refresh->valuedouble != (double)(uint32_t)refresh->valuedouble) {
            err = bad(why, whycap, "desired_refresh_s: must be an integer from 60 to 2592000");
            goto done;
        }
        c.desired_refresh_s = (uint32_t)refresh->valuedouble;
    }
    const cJSON *keys = cJSON_GetObjectItemCaseSensitive(root, "release_keys");
    if (keys == NULL || !cJSON_IsArray(keys) || cJSON_GetArraySize(keys) < 1) {
        err = bad(why, whycap,
                  "release_keys: required array of public key PEM paths (from `upkeep keygen`)");
        goto done;
    }
    if ((err = upk_keyring_new(&c.ring)) != UPK_OK)
        goto done;
    const cJSON *k;
    cJSON_ArrayForEach(k, keys)
    {
        char *pem = NULL;
        size_t pemlen = 0;
        upk_key *key = NULL;
        if (!cJSON_IsString(k)) {
            err = bad(why, whycap, "release_keys: entries must be paths");
            goto done;
        }
        if (upk_fs_read(k->valuestring, UPK_KEY_PEM_MAX, &pem, &pemlen) != UPK_OK) {
            err = bad(why, whycap, "release_keys: cannot read %s", k->valuestring);
            goto done;
        }
        if (upk_jsoncfg_pem_is_private(pem, pemlen)) {
            memset(pem, 0, pemlen);
            free(pem);
            err = bad(why, whycap,
                      "release_keys: %s is a private key; list the public key (the .pub that "
                      "`upkeep keygen` writes) and keep the private key offline",
                      k->valuestring);
            goto done;
        }
        upk_err kerr = upk_key_load_pem(pem, pemlen, &key);
        free(pem);
        if (kerr != UPK_OK) {
            err = bad(why, whycap, "release_keys: %s is not a P-256 PEM key", k->valuestring);
            goto done;
        }
        kerr = upk_keyring_add(c.ring, key);
        upk_key_free(key);
        if (kerr != UPK_OK && kerr != UPK_E_EXISTS) {
            err = bad(why, whycap, "release_keys: too many keys (at most %d)", UPK_KEYRING_MAX);
            goto done;
        }
    }
    *out = c;
    c.ring = NULL;
done:
    upk_keyring_free(c.ring);
    memset(c.link_secret, 0, sizeof(c.link_secret));
    memset(c.password, 0, sizeof(c.password));
    cJSON_Delete(root);
    return err;
}

upk_err upk_serve_config_load(const char *path, upk_serve_config *out, char *why, size_t whycap)
{
    char *text = NULL;
    size_t len = 0;
    upk_err err = upk_fs_read(path, CONFIG_FILE_MAX, &text, &len);
    if (err != UPK_OK) {
        int r = snprintf(why, whycap, "%s: cannot read (%s)", path, upk_err_str(err));
        (void)r;
        return err;
    }
    err = upk_serve_config_parse(text, len, out, why, whycap);
    free(text);
    return err;
}

void upk_serve_config_cleanup(upk_serve_config *c)
{
    if (c == NULL)
        return;
    upk_keyring_free(c->ring);
    c->ring = NULL;
    memset(c->password, 0, sizeof(c->password));
    memset(c->link_secret, 0, sizeof(c->link_secret));
    c->link_secret_len = 0;
}
