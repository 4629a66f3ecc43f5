/* Agent configuration: one JSON file parsed into upk_agent_config. Every
 * refusal names the offending field, so a bad config is fixed in one go. */
#include "upkeep/agent.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "upkeep/fs.h"
#include "upkeep/jsoncfg.h"
#include "upkeep/hash.h"
#include "upkeep/id.h"
#include "upkeep/timefmt.h"
#include "upkeep/topic.h"

#define PASSWORD_MAX 256
#define BROKER_MAX   512

void upk_agent_config_defaults(upk_agent_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->limits.chunk_size = 65536;
    cfg->limits.chunks_in_flight = 8;
    cfg->limits.max_artifact_size = 1024ull * 1024 * 1024;
    cfg->limits.outbox_max = 1000;
    cfg->limits.chunk_timeout_ms = 5000;
    cfg->limits.ack_timeout_ms = 10000;
    cfg->limits.step_timeout_s = 600;
    cfg->limits.max_restarts = 3;
    cfg->limits.max_packet = UPK_AGENT_MAX_PACKET;
    cfg->health_timeout_s = 60;
    cfg->hook_timeout_s = 10;
    cfg->health_interval_s = 60;
    cfg->fsync = true;
}

void upk_agent_config_cleanup(upk_agent_config *cfg)
{
    free(cfg->broker);
    free(cfg->device_id);
    free(cfg->username);
    if (cfg->password != NULL) {
        memset(cfg->password, 0, strlen(cfg->password));
        free(cfg->password);
    }
    upk_link_key_wipe(&cfg->link_key);
    cfg->has_link_key = false;
    free(cfg->hardware);
    free(cfg->data_dir);
    for (size_t i = 0; i < cfg->key_count; i++)
        free(cfg->key_paths[i]);
    free(cfg->module);
    free(cfg->module_settings);
    free(cfg->modules_dir);
    for (size_t i = 0; i < cfg->health_argc; i++)
        free(cfg->health_argv[i]);
    for (size_t i = 0; i < cfg->hook_argc; i++)
        free(cfg->hook_argv[i]);
    free(cfg->topic_prefix);
    free(cfg->tls_ca_file);
    free(cfg->tls_cert_file);
    free(cfg->tls_key_file);
    if (cfg->keyring_owned)
        upk_keyring_free(cfg->keyring);
    upk_agent_config_defaults(cfg);
}

/* Records "field: why" into the caller's buffer; returns CONFIG_INVALID. */
static upk_err bad(char *eb, size_t ecap, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static upk_err bad(char *eb, size_t ecap, const char *field, const char *fmt, ...)
{
    if (eb != NULL && ecap > 0) {
        int n = snprintf(eb, ecap, "%s: ", field);
        if (n >= 0 && (size_t)n < ecap) {
            va_list ap;
            va_start(ap, fmt);
            (void)vsnprintf(eb + n, ecap - (size_t)n, fmt, ap);
            va_end(ap);
        }
    }
    return UPK_E_CONFIG_INVALID;
}

/* Copies string field name (at most max bytes) into a new heap string. */
static upk_err get_str(const cJSON *obj, const char *name, bool required, size_t max, char **out,
                       char *eb, size_t ecap)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (v == NULL) {
        if (required)
            return bad(eb, ecap, name, "is required");
        return UPK_OK;
    }
    if (!cJSON_IsString(v) || v->valuestring == NULL)
        return bad(eb, ecap, name, "must be a string");
    size_t len = strlen(v->valuestring);
    if (len == 0)
        return bad(eb, ecap, name, "must not be empty");
    if (len > max)
        return bad(eb, ecap, name, "is longer than %zu bytes", max);
    char *s = strdup(v->valuestring);
    if (s == NULL)
        return UPK_E_NOMEM;
    free(*out);
    *out = s;
    return UPK_OK;
}

static upk_err dup_default(char **out, const char *def)
{
    if (*out != NULL)
        return UPK_OK;
    *out = strdup(def);
    return *out == NULL ? UPK_E_NOMEM : UPK_OK;
}

/* Unsigned integer field in [min, max]; absent keeps *out. */
static upk_err get_u64(const cJSON *obj, const char *name, uint64_t min, uint64_t max,
                       uint64_t *out, char *eb, size_t ecap)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (v == NULL)
        return UPK_OK;
    if (!cJSON_IsNumber(v))
        return bad(eb, ecap, name, "must be a number");
    double d = v->valuedouble;
    if (d != d || d < (double)min || d > (double)max || d != (double)(uint64_t)d)
        return bad(eb, ecap, name, "must be an integer in %llu..%llu", (unsigned long long)min,
                   (unsigned long long)max);
    *out = (uint64_t)d;
    return UPK_OK;
}

static upk_err get_u32(const cJSON *obj, const char *name, uint32_t min, uint32_t max,
                       uint32_t *out, char *eb, size_t ecap)
{
    uint64_t v = *out;
    upk_err err = get_u64(obj, name, min, max, &v, eb, ecap);
    if (err == UPK_OK)
        *out = (uint32_t)v;
    return err;
}

static upk_err load_keys(upk_agent_config *cfg, char *eb, size_t ecap)
{
    upk_err err = upk_keyring_new(&cfg->keyring);
    if (err != UPK_OK)
        return err;
    cfg->keyring_owned = true;
    for (size_t i = 0; i < cfg->key_count; i++) {
        char *pem = NULL;
        size_t len = 0;
        err = upk_fs_read(cfg->key_paths[i], UPK_KEY_PEM_MAX, &pem, &len);
        if (err != UPK_OK)
            return bad(eb, ecap, "keys", "cannot read %s (%s)", cfg->key_paths[i],
                       upk_err_str(err));
        if (upk_jsoncfg_pem_is_private(pem, len)) {
            memset(pem, 0, len);
            free(pem);
            return bad(eb, ecap, "keys",
                       "%s is a private key; pin the public key (the .pub that `upkeep keygen` "
                       "writes), never the signing key, on a device",
                       cfg->key_paths[i]);
        }
        upk_key *key = NULL;
        err = upk_key_load_pem(pem, len, &key);
        free(pem);
        if (err != UPK_OK)
            return bad(eb, ecap, "keys", "%s is not a P-256 public key (%s)", cfg->key_paths[i],
                       upk_err_str(err));
        err = upk_keyring_add(cfg->keyring, key);
        upk_key_free(key);
        if (err == UPK_E_EXISTS)
            continue; /* the same key listed twice is harmless */
        if (err != UPK_OK)
            return bad(eb, ecap, "keys", "cannot pin %s (%s)", cfg->key_paths[i], upk_err_str(err));
    }
    return UPK_OK;
}

static upk_err parse_limits(const cJSON *lim, upk_agent_config *cfg, char *eb, size_t ecap)
{
    if (lim == NULL)
        return UPK_OK;
    if (!cJSON_IsObject(lim))
        return bad(eb, ecap, "limits", "must be an object");
    static const char *const known[] = {
        "chunk_size",     "chunks_in_flight", "max_artifact_size", "outbox_max", "chunk_timeout_ms",
        "ack_timeout_ms", "step_timeout_s",   "max_restarts",      "max_packet", NULL};
    upk_agent_limits *l = &cfg->limits;
    upk_err err;
    if ((err = upk_jsoncfg_known(lim, "limits.", known, eb, ecap)))
        return err;
    if ((err = get_u32(lim, "chunk_size", 512, UPK_CHUNK_MAX, &l->chunk_size, eb, ecap)) ||
        (err = get_u32(lim, "chunks_in_flight", 1, 64, &l->chunks_in_flight, eb, ecap)) ||
        (err = get_u64(lim, "max_artifact_size", 1, 1ull << 50, &l->max_artifact_size, eb, ecap)) ||
        (err = get_u32(lim, "outbox_max", 1, 1000000, &l->outbox_max, eb, ecap)) ||
        (err = get_u32(lim, "chunk_timeout_ms", 50, 600000, &l->chunk_timeout_ms, eb, ecap)) ||
        (err = get_u32(lim, "ack_timeout_ms", 100, 600000, &l->ack_timeout_ms, eb, ecap)) ||
        (err = get_u32(lim, "step_timeout_s", 1, 86400, &l->step_timeout_s, eb, ecap)) ||
        (err = get_u32(lim, "max_restarts", 0, 100, &l->max_restarts, eb, ecap)) ||
        (err = get_u32(lim, "max_packet", UPK_MSG_MAX + UPK_AGENT_PACKET_OVERHEAD,
                       64u * 1024u * 1024u, &l->max_packet, eb, ecap)))
        return err;
    if (l->max_packet < UPK_CHUNK_HDR_LEN + l->chunk_size + UPK_AGENT_PACKET_OVERHEAD)
        return bad(eb, ecap, "limits.max_packet",
                   "must be at least limits.chunk_size + %u (a chunk with its header)",
                   UPK_CHUNK_HDR_LEN + UPK_AGENT_PACKET_OVERHEAD);
    return UPK_OK;
}

/* Parses object h (named name) holding "command": [absolute path, args...]
 * and "timeout_s" into argv/argc and *timeout_s. */
static upk_err parse_command(const cJSON *h, const char *name, char **argv, size_t *argc,
                             uint32_t *timeout_s, char *eb, size_t ecap)
{
    if (h == NULL)
        return UPK_OK;
    char field[48];
    (void)snprintf(field, sizeof(field), "%s.command", name);
    if (!cJSON_IsObject(h))
        return bad(eb, ecap, name, "must be an object");
    static const char *const known[] = {"command", "timeout_s", NULL};
    char ctx[48];
    (void)snprintf(ctx, sizeof(ctx), "%s.", name); /* names are short literals */
    upk_err kerr = upk_jsoncfg_known(h, ctx, known, eb, ecap);
    if (kerr != UPK_OK)
        return kerr;
    const cJSON *cmd = cJSON_GetObjectItemCaseSensitive(h, "command");
    if (cmd == NULL || !cJSON_IsArray(cmd))
        return bad(eb, ecap, field, "must be an array of strings");
    int n = cJSON_GetArraySize(cmd);
    if (n < 1 || n > UPK_AGENT_HEALTH_ARGV_MAX)
        return bad(eb, ecap, field, "must hold 1..%d strings", UPK_AGENT_HEALTH_ARGV_MAX);
    const cJSON *it;
    cJSON_ArrayForEach(it, cmd)
    {
        if (!cJSON_IsString(it) || it->valuestring == NULL || it->valuestring[0] == '\0' ||
            strlen(it->valuestring) > UPK_AGENT_PATH_MAX)
            return bad(eb, ecap, field, "must hold non-empty strings");
        char *s = strdup(it->valuestring);
        if (s == NULL)
            return UPK_E_NOMEM;
        argv[(*argc)++] = s;
    }
    argv[*argc] = NULL;
    if (argv[0][0] != '/')
        return bad(eb, ecap, field, "first word must be an absolute path");
    return get_u32(h, "timeout_s", 1, 86400, timeout_s, eb, ecap);
}

static upk_err parse_health(const cJSON *root, upk_agent_config *cfg, char *eb, size_t ecap)
{
    upk_err err;
    if ((err = parse_command(cJSON_GetObjectItemCaseSensitive(root, "health_check"), "health_check",
                             cfg->health_argv, &cfg->health_argc, &cfg->health_timeout_s, eb,
                             ecap)) ||
        (err = parse_command(cJSON_GetObjectItemCaseSensitive(root, "health_hook"), "health_hook",
                             cfg->hook_argv, &cfg->hook_argc, &cfg->hook_timeout_s, eb, ecap)))
        return err;
    return get_u32(root, "health_interval_s", 10, 86400, &cfg->health_interval_s, eb, ecap);
}

static upk_err parse_tls(const cJSON *t, upk_agent_config *cfg, char *eb, size_t ecap)
{
    if (t == NULL)
        return UPK_OK;
    if (!cJSON_IsObject(t))
        return bad(eb, ecap, "tls", "must be an object");
    static const char *const known[] = {"ca_file", "cert_file", "key_file", NULL};
    upk_err err;
    if ((err = upk_jsoncfg_known(t, "tls.", known, eb, ecap)))
        return err;
    if ((err = get_str(t, "ca_file", false, UPK_AGENT_PATH_MAX, &cfg->tls_ca_file, eb, ecap)) ||
        (err = get_str(t, "cert_file", false, UPK_AGENT_PATH_MAX, &cfg->tls_cert_file, eb, ecap)) ||
        (err = get_str(t, "key_file", false, UPK_AGENT_PATH_MAX, &cfg->tls_key_file, eb, ecap)))
        return err;
    if ((cfg->tls_cert_file == NULL) != (cfg->tls_key_file == NULL))
        return bad(eb, ecap, "tls.cert_file", "cert_file and key_file go together");
    return UPK_OK;
}

/* "factory_release": {"name", "version", "security_version", "image_sha256"}:
 * what the device runs before its first update. */
static upk_err parse_factory(const cJSON *f, upk_agent_config *cfg, char *eb, size_t ecap)
{
    if (f == NULL)
        return UPK_OK;
    if (!cJSON_IsObject(f))
        return bad(eb, ecap, "factory_release", "must be an object");
    static const char *const known[] = {"name", "version", "security_version", "image_sha256",
                                        NULL};
    upk_err err = upk_jsoncfg_known(f, "factory_release.", known, eb, ecap);
    if (err != UPK_OK)
        return err;
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(f, "name");
    if (!cJSON_IsString(n) || !upk_id_valid(n->valuestring))
        return bad(eb, ecap, "factory_release.name", "required: the release name, an id");
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(f, "version");
    bool vok = cJSON_IsString(v) && v->valuestring[0] != '\0' &&
               strlen(v->valuestring) <= UPK_VERSION_STR_MAX;
    for (const char *p = vok ? v->valuestring : ""; *p != '\0' && vok; p++)
        vok = *p > ' ' && *p < 0x7f;
    if (!vok)
        return bad(eb, ecap, "factory_release.version",
                   "required: 1..%d printable characters without spaces", UPK_VERSION_STR_MAX);
    uint64_t sv = 0;
    if (cJSON_GetObjectItemCaseSensitive(f, "security_version") == NULL)
        return bad(eb, ecap, "factory_release.security_version", "required: a number >= 0");
    if ((err = get_u64(f, "security_version", 0, (1ull << 53), &sv, eb, ecap)))
        return err;
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(f, "image_sha256");
    if (h != NULL && (!cJSON_IsString(h) || strlen(h->valuestring) != UPK_SHA256_HEX_LEN ||
                      upk_hex_decode(h->valuestring, UPK_SHA256_HEX_LEN, cfg->factory_image_sha256,
                                     UPK_SHA256_LEN) != UPK_OK))
        return bad(eb, ecap, "factory_release.image_sha256",
                   "must be the SHA-256 of the installed image in 64 hex digits");
    (void)snprintf(cfg->factory_name, sizeof(cfg->factory_name), "%s", n->valuestring);
    (void)snprintf(cfg->factory_version, sizeof(cfg->factory_version), "%s", v->valuestring);
    cfg->factory_security_version = sv;
    cfg->has_factory = true;
    return UPK_OK;
}

static upk_err parse_password(const cJSON *root, upk_agent_config *cfg, char *eb, size_t ecap)
{
    char *file = NULL;
    upk_err err = get_str(root, "password", false, PASSWORD_MAX, &cfg->password, eb, ecap);
    if (err != UPK_OK)
        return err;
    err = get_str(root, "password_file", false, UPK_AGENT_PATH_MAX, &file, eb, ecap);
    if (err != UPK_OK)
        return err;
    if (file == NULL)
        return UPK_OK;
    if (cfg->password != NULL) {
        free(file);
        return bad(eb, ecap, "password_file", "give password or password_file, not both");
    }
    char *buf = NULL;
    size_t len = 0;
    err = upk_fs_read(file, PASSWORD_MAX + 2, &buf, &len);
    if (err != UPK_OK) {
        err = bad(eb, ecap, "password_file", "cannot read %s (%s)", file, upk_err_str(err));
        free(file);
        return err;
    }
    free(file);
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
        buf[--len] = '\0';
    if (len == 0 || len > PASSWORD_MAX || strlen(buf) != len) {
        free(buf);
        return bad(eb, ecap, "password_file", "must hold one line of 1..%d bytes", PASSWORD_MAX);
    }
    cfg->password = buf;
    return UPK_OK;
}

/* "link_key_file": 64 hex characters (the device's link key, docs/protocol.md
 * 8.2) and an optional trailing newline. Absent = legacy mode. */
static upk_err parse_link_key(const cJSON *root, upk_agent_config *cfg, char *eb, size_t ecap)
{
    char *file = NULL;
    upk_err err = get_str(root, "link_key_file", false, UPK_AGENT_PATH_MAX, &file, eb, ecap);
    if (err != UPK_OK || file == NULL)
        return err;
    char *buf = NULL;
    size_t len = 0;
    err = upk_fs_read(file, UPK_LINK_KEY_HEX_LEN + 8, &buf, &len);
    if (err != UPK_OK) {
        err = bad(eb, ecap, "link_key_file", "cannot read %s (%s)", file, upk_err_str(err));
        free(file);
        return err;
    }
    err = upk_link_key_from_hex(buf, len, &cfg->link_key);
    memset(buf, 0, len);
    free(buf);
    if (err != UPK_OK) {
        err =
            bad(eb, ecap, "link_key_file", "%s must hold the link key as 64 hex characters", file);
        free(file);
        return err;
    }
    free(file);
    cfg->has_link_key = true;
    return UPK_OK;
}

static upk_err parse_root(const cJSON *root, upk_agent_config *cfg, char *eb, size_t ecap)
{
    /* Every field parsed here; anything else is a typo and refused by name
     * (as the broker plugin does). A new field must be added here. */
    static const char *const known[] = {"broker",
                                        "device_id",
                                        "username",
                                        "password",
                                        "password_file",
                                        "hardware",
                                        "data_dir",
                                        "keys",
                                        "module",
                                        "module_settings",
                                        "modules_dir",
                                        "health_check",
                                        "health_hook",
                                        "health_interval_s",
                                        "support_until",
                                        "topic_prefix",
                                        "limits",
                                        "tls",
                                        "reconnect_min_ms",
                                        "reconnect_max_ms",
                                        "fsync",
                                        "factory_release",
                                        "link_key_file",
                                        NULL};
    upk_err err;
    if (!cJSON_IsObject(root))
        return bad(eb, ecap, "(top level)", "must be a JSON object");
    if ((err = upk_jsoncfg_known(root, "", known, eb, ecap)))
        return err;
    if ((err = get_str(root, "broker", true, BROKER_MAX, &cfg->broker, eb, ecap)))
        return err;
    if (strncmp(cfg->broker, "tcp://", 6) != 0 && strncmp(cfg->broker, "ssl://", 6) != 0 &&
        strncmp(cfg->broker, "mqtt://", 7) != 0 && strncmp(cfg->broker, "mqtts://", 8) != 0)
        return bad(eb, ecap, "broker", "must start with tcp://, ssl://, mqtt:// or mqtts://");
#ifdef UPK_AGENT_NO_TLS
    if (strncmp(cfg->broker, "ssl://", 6) == 0 || strncmp(cfg->broker, "mqtts://", 8) == 0)
        return bad(eb, ecap, "broker", "this agent was built without TLS (UPK_AGENT_TLS=OFF)");
#endif
    if ((err = get_str(root, "device_id", true, UPK_ID_MAX, &cfg->device_id, eb, ecap)))
        return err;
    if (!upk_id_valid(cfg->device_id))
        return bad(eb, ecap, "device_id", "%s", upk_err_msg(UPK_E_ID_INVALID));
    if ((err = get_str(root, "username", false, 256, &cfg->username, eb, ecap)) ||
        (err = dup_default(&cfg->username, cfg->device_id)))
        return err;
    if ((err = parse_password(root, cfg, eb, ecap)) || (err = parse_link_key(root, cfg, eb, ecap)))
        return err;
    if ((err = get_str(root, "hardware", true, UPK_ID_MAX, &cfg->hardware, eb, ecap)))
        return err;
    if (!upk_id_valid(cfg->hardware))
        return bad(eb, ecap, "hardware", "%s", upk_err_msg(UPK_E_ID_INVALID));
    if ((err =
             get_str(root, "data_dir", false, UPK_AGENT_PATH_MAX - 64, &cfg->data_dir, eb, ecap)) ||
        (err = dup_default(&cfg->data_dir, "/var/lib/upkeep")))
        return err;
    if (cfg->data_dir[0] != '/')
        return bad(eb, ecap, "data_dir", "must be an absolute path");

    const cJSON *keys = cJSON_GetObjectItemCaseSensitive(root, "keys");
    if (keys == NULL)
        return bad(eb, ecap, "keys", "is required (pinned release public keys)");
    if (!cJSON_IsArray(keys))
        return bad(eb, ecap, "keys", "must be an array of PEM file paths");
    int nkeys = cJSON_GetArraySize(keys);
    if (nkeys < 1 || nkeys > UPK_KEYRING_MAX)
        return bad(eb, ecap, "keys", "must list 1..%d key files", UPK_KEYRING_MAX);
    const cJSON *it;
    cJSON_ArrayForEach(it, keys)
    {
        if (!cJSON_IsString(it) || it->valuestring == NULL || it->valuestring[0] == '\0' ||
            strlen(it->valuestring) > UPK_AGENT_PATH_MAX)
            return bad(eb, ecap, "keys", "must hold non-empty path strings");
        char *s = strdup(it->valuestring);
        if (s == NULL)
            return UPK_E_NOMEM;
        cfg->key_paths[cfg->key_count++] = s;
    }

    if ((err = get_str(root, "module", false, UPK_ID_MAX, &cfg->module, eb, ecap)) ||
        (err = dup_default(&cfg->module, "file")))
        return err;
    if (!upk_id_valid(cfg->module))
        return bad(eb, ecap, "module", "%s", upk_err_msg(UPK_E_ID_INVALID));
    const cJSON *ms = cJSON_GetObjectItemCaseSensitive(root, "module_settings");
    if (ms != NULL && !cJSON_IsObject(ms))
        return bad(eb, ecap, "module_settings", "must be an object");
    cfg->module_settings = ms != NULL ? cJSON_PrintUnformatted(ms) : strdup("{}");
    if (cfg->module_settings == NULL)
        return UPK_E_NOMEM;
    if ((err = get_str(root, "modules_dir", false, UPK_AGENT_PATH_MAX - 80, &cfg->modules_dir, eb,
                       ecap)) ||
        (err = dup_default(&cfg->modules_dir, "/usr/lib/upkeep/modules")))
        return err;

    if ((err = parse_health(root, cfg, eb, ecap)))
        return err;

    char *until = NULL;
    if ((err = get_str(root, "support_until", false, 32, &until, eb, ecap)))
        return err;
    if (until != NULL) {
        err = upk_time_parse(until, &cfg->support_until);
        free(until);
        if (err != UPK_OK)
            return bad(eb, ecap, "support_until", "must be YYYY-MM-DD or an RFC 3339 UTC time");
    }
    if ((err = get_str(root, "topic_prefix", false, UPK_TOPIC_PREFIX_MAX, &cfg->topic_prefix, eb,
                       ecap)) ||
        (err = dup_default(&cfg->topic_prefix, UPK_TOPIC_PREFIX_DEFAULT)))
        return err;
    if (!upk_topic_prefix_valid(cfg->topic_prefix))
        return bad(eb, ecap, "topic_prefix", "must be MQTT topic levels without wildcards");
    if ((err = parse_limits(cJSON_GetObjectItemCaseSensitive(root, "limits"), cfg, eb, ecap)))
        return err;
    if ((err = parse_tls(cJSON_GetObjectItemCaseSensitive(root, "tls"), cfg, eb, ecap)))
        return err;
    /* Never silently insecure: an ssl:// broker is verified against our CA. */
    if ((strncmp(cfg->broker, "ssl://", 6) == 0 || strncmp(cfg->broker, "mqtts://", 8) == 0) &&
        cfg->tls_ca_file == NULL)
        return bad(eb, ecap, "tls.ca_file", "required for an ssl:// broker");
    if ((err = get_u32(root, "reconnect_min_ms", 10, 3600000, &cfg->reconnect_min_ms, eb, ecap)) ||
        (err = get_u32(root, "reconnect_max_ms", 10, 3600000, &cfg->reconnect_max_ms, eb, ecap)))
        return err;
    if (cfg->reconnect_min_ms != 0 && cfg->reconnect_max_ms != 0 &&
        cfg->reconnect_min_ms > cfg->reconnect_max_ms)
        return bad(eb, ecap, "reconnect_min_ms", "must not exceed reconnect_max_ms");
    if ((err = parse_factory(cJSON_GetObjectItemCaseSensitive(root, "factory_release"), cfg, eb,
                             ecap)))
        return err;
    const cJSON *fs = cJSON_GetObjectItemCaseSensitive(root, "fsync");
    if (fs != NULL) {
        if (!cJSON_IsBool(fs))
            return bad(eb, ecap, "fsync", "must be true or false");
        cfg->fsync = cJSON_IsTrue(fs);
    }
    return load_keys(cfg, eb, ecap);
}

upk_err upk_agent_config_parse(const char *json, size_t len, upk_agent_config *cfg, char *eb,
                               size_t ecap)
{
    if (eb != NULL && ecap > 0)
        eb[0] = '\0';
    upk_agent_config_defaults(cfg);
    if (json == NULL || len > UPK_AGENT_CONFIG_MAX)
        return bad(eb, ecap, "(file)", "is larger than %u bytes", UPK_AGENT_CONFIG_MAX);
    cJSON *root = NULL;
    upk_err err = upk_jsoncfg_parse(json, len, &root, eb, ecap);
    if (err != UPK_OK)
        return err;
    err = parse_root(root, cfg, eb, ecap);
    cJSON_Delete(root);
    if (err != UPK_OK) {
        if (err != UPK_E_CONFIG_INVALID)
            (void)bad(eb, ecap, "(config)", "%s", upk_err_msg(err));
        upk_agent_config_cleanup(cfg);
    }
    return err;
}

upk_err upk_agent_config_load(const char *path, upk_agent_config *cfg, char *eb, size_t ecap)
{
    char *buf = NULL;
    size_t len = 0;
    upk_agent_config_defaults(cfg);
    upk_err err = upk_fs_read(path, UPK_AGENT_CONFIG_MAX, &buf, &len);
    if (err != UPK_OK)
        return bad(eb, ecap, path, "cannot read config (%s)", upk_err_str(err));
    err = upk_agent_config_parse(buf, len, cfg, eb, ecap);
    free(buf);
    return err;
}
