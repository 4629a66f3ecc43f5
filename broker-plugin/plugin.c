/* upkeep_broker.so: the Mosquitto 2.0 glue (plugin API v5). It turns broker
 * events into calls to the decision core (core.h) and back into Mosquitto
 * return codes: BASIC_AUTH -> auth, ACL_CHECK -> acl, MESSAGE -> rate limit
 * and sender stamping, TICK -> kicks, lockout pruning and stats. All state
 * lives in one struct handed to the broker as userdata; Mosquitto calls every
 * callback from its single main thread. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <mosquitto.h>
#include <mosquitto_broker.h> /* before mosquitto_plugin.h in 2.0.11 */
#include <mosquitto_plugin.h>
#include <mqtt_protocol.h>
#include <openssl/x509.h> /* X509_free; Mosquitto's own libcrypto provides it */

#include "core.h"

#define UPK_EXPORT       __attribute__((visibility("default")))
#define SENDER_PROP      "upkeep-sender"
#define KICK_QUEUE_MAX   256
#define PRUNE_INTERVAL_S 10.0
#define STATS_JSON_MAX   1024

struct upk_bp_state {
    mosquitto_plugin_id_t *pid;
    upk_bp_config cfg;
    upk_bp_lockout lockout;
    upk_bp_clients clients; /* connected clients by id, cached by connection */
    upk_bp_stats stats;
    char stats_topic[UPK_TOPIC_MAX + 1];
    double next_stats;
    double next_prune;
    char *kicks[KICK_QUEUE_MAX]; /* client ids to disconnect on the next tick */
    size_t nkicks;
    /* device_epochs_file: when to look at it next, and what it looked like
     * when last read (a change of any of these reads it again). */
    double next_epochs_check;
    struct epochs_seen {
        dev_t dev;
        ino_t ino;
        off_t size;
        struct timespec mtime;
    } epochs_seen;
    bool epochs_unreadable; /* the last check could not stat it (logged once) */
};

static double now_s(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
        return 0;
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- client records --------------------------------------------------- */

static void queue_kick(struct upk_bp_state *st, const char *client_id);

/* Decides a certificate login, which Mosquitto 2.0.11 never shows to
 * BASIC_AUTH: with use_identity_as_username it makes the certificate's CN the
 * username and accepts the client. So the first ACL check of a connection that
 * holds a certificate and did not log in by password decides here. A device
 * must use its CN as client id (else it could take another device's session);
 * an unknown CN has no role. Refused clients are kicked on the next tick.
 * False (and why) when refused. */
static bool cert_login(struct upk_bp_state *st, const char *id, const char *user,
                       upk_bp_identity *who, const char **why)
{
    if (!upk__bp_name_safe(id)) {
        *why = "client id contains '+', '#', '/' or control characters";
        return false;
    }
    if (!upk__bp_cert_identity_of(&st->cfg, user, who)) {
        *why = "certificate identity is not listed in certificate_identities";
        return false;
    }
    if (who->role == UPK_BP_ROLE_DEVICE && strcmp(id, user) != 0) {
        *why = "device client id differs from its certificate's CN";
        return false;
    }
    return true;
}

/* The record of this connection: made at BASIC_AUTH for password logins, at
 * the first check for certificate logins, or (a session restored from
 * persistence, a will after the connection is gone) from the username. NULL
 * when the client has no identity or was refused, which every caller treats
 * as deny. The clock is read only when a record is made. */
static upk_bp_client *client_get(struct upk_bp_state *st, struct mosquitto *client)
{
    const char *id = mosquitto_client_id(client);
    const char *user = mosquitto_client_username(client);
    if (id == NULL || user == NULL)
        return NULL;
    upk_bp_client *r = upk__bp_clients_find(&st->clients, client, id, user);
    if (r != NULL)
        return r->refused ? NULL : r;
    upk_bp_identity who;
    bool refused = false;
    const char *why = "ok";
    void *cert = mosquitto_client_certificate(client);
    if (cert != NULL) {
        X509_free(cert);
        refused = !cert_login(st, id, user, &who, &why);
        if (refused) {
            memset(&who, 0, sizeof(who));
            snprintf(who.name, sizeof(who.name), "%s", upk__bp_name_safe(user) ? user : "?");
        }
    } else if (!upk__bp_identity_of(&st->cfg, user, &who) &&
               !upk__bp_cert_identity_of(&st->cfg, user, &who)) {
        return NULL;
    }
    if (upk__bp_clients_bind(&st->clients, client, id, &who, refused, &st->cfg.limits[who.role],
                             now_s(), &r) != UPK_OK)
        return NULL;
    st->stats.clients = upk__bp_clients_count(&st->clients);
    if (cert != NULL) {
        const char *a = mosquitto_client_address(client);
        if (refused) {
            st->stats.auth_failed++;
            mosquitto_log_printf(MOSQ_LOG_NOTICE,
                                 "upkeep_broker: login refused user=%.128s client=%.128s "
                                 "address=%s error=AUTH_FAILED (%s)",
                                 who.name, upk__bp_name_safe(id) ? id : "?", a != NULL ? a : "?",
                                 why);
            queue_kick(st, id);
            return NULL;
        }
        st->stats.auth_ok++;
        mosquitto_log_printf(MOSQ_LOG_INFO,
                             "upkeep_broker: certificate login user=%s role=%s client=%.128s",
                             who.name, upk__bp_role_str(who.role), id);
    }
    return r;
}

/* Records a password login for this connection, so that client_get never
 * mistakes it for a certificate login. */
static upk_err remember_login(struct upk_bp_state *st, struct mosquitto *client,
                              const upk_bp_identity *who, double now)
{
    const char *id = mosquitto_client_id(client);
    if (id == NULL)
        return UPK_OK; /* client_get denies a client without id anyway */
    upk_err e = upk__bp_clients_bind(&st->clients, client, id, who, false,
                                     &st->cfg.limits[who->role], now, NULL);
    st->stats.clients = upk__bp_clients_count(&st->clients);
    return e;
}

/* ---- callbacks ---------------------------------------------------------- */

/* A name as logged: a printable id of at most UPK_BP_USERNAME_MAX bytes,
 * else '?', so that a hostile name can neither forge log text nor push the
 * error code out of Mosquitto's bounded log line. */
static const char *shown(const char *s)
{
    bool ok = upk__bp_name_safe(s) && strnlen(s, UPK_BP_USERNAME_MAX + 1) <= UPK_BP_USERNAME_MAX;
    return ok ? s : "?";
}

static int on_basic_auth(int event, void *event_data, void *userdata)
{
    struct upk_bp_state *st = userdata;
    struct mosquitto_evt_basic_auth *ed = event_data;
    const char *why = "";
    upk_bp_identity who;
    (void)event;
    const char *cid = mosquitto_client_id(ed->client);
    const char *addr = mosquitto_client_address(ed->client);
    double now = now_s();
    size_t plen = ed->password != NULL ? strnlen(ed->password, UPK_BP_PASSWORD_MAX + 1) : 0;
    upk_err err = upk__bp_auth_check(&st->cfg, &st->lockout, ed->username, ed->password, plen, cid,
                                     addr, now, &who, &why);
    if (err == UPK_OK) {
        if (remember_login(st, ed->client, &who, now) != UPK_OK)
            return MOSQ_ERR_NOMEM;
        st->stats.auth_ok++;
        return MOSQ_ERR_SUCCESS;
    }
    /* Log with printable ids only: an unsafe name is shown as '?'. */
    const char *u = shown(ed->username);
    const char *c = shown(cid);
    if (err == UPK_E_LOCKED_OUT) {
        st->stats.auth_locked_out++;
        mosquitto_log_printf(MOSQ_LOG_NOTICE,
                             "upkeep_broker: login refused user=%s client=%s address=%s "
                             "error=LOCKED_OUT (%s)",
                             u, c, addr != NULL ? addr : "?", why);
        return MOSQ_ERR_AUTH;
    }
    st->stats.auth_failed++;
    mosquitto_log_printf(MOSQ_LOG_NOTICE,
                         "upkeep_broker: login refused user=%s client=%s address=%s "
                         "error=%s (%s)",
                         u, c, addr != NULL ? addr : "?", upk_err_str(err), why);
    /* A failure never happens while locked, so a lock seen now just began. */
    if (ed->username != NULL &&
        upk__bp_lockout_is_locked(&st->lockout, UPK_BP_LOCK_USERNAME, ed->username, now))
        mosquitto_log_printf(MOSQ_LOG_WARNING,
                             "upkeep_broker: lockout user=%s for %u s after %u failed logins", u,
                             st->cfg.lockout.lockout_s, st->cfg.lockout.max_failures_per_username);
    if (addr != NULL && upk__bp_lockout_is_locked(&st->lockout, UPK_BP_LOCK_ADDRESS, addr, now))
        mosquitto_log_printf(
            MOSQ_LOG_WARNING, "upkeep_broker: lockout address=%s for %u s after %u failed logins",
            addr, st->cfg.lockout.lockout_s, st->cfg.lockout.max_failures_per_address);
    return MOSQ_ERR_AUTH;
}

static int on_acl_check(int event, void *event_data, void *userdata)
{
    struct upk_bp_state *st = userdata;
    struct mosquitto_evt_acl_check *ed = event_data;
    upk_bp_access access;
    (void)event;
    switch (ed->access) {
    case MOSQ_ACL_READ:
        access = UPK_BP_ACCESS_READ;
        break;
    case MOSQ_ACL_WRITE:
        access = UPK_BP_ACCESS_WRITE;
        break;
    case MOSQ_ACL_SUBSCRIBE:
        access = UPK_BP_ACCESS_SUBSCRIBE;
        break;
    case MOSQ_ACL_UNSUBSCRIBE:
        return MOSQ_ERR_SUCCESS; /* dropping a subscription reveals nothing */
    default:
        return MOSQ_ERR_ACL_DENIED;
    }
    upk_bp_client *r = client_get(st, ed->client);
    if (r != NULL &&
        (access == UPK_BP_ACCESS_WRITE ? upk__bp_client_may_write(&st->cfg, r, ed->topic)
                                       : upk__bp_acl_allows(&st->cfg, &r->who, access, ed->topic)))
        return MOSQ_ERR_SUCCESS;
    st->stats.denied_topic++;
    if (access != UPK_BP_ACCESS_READ) {
        const char *u = mosquitto_client_username(ed->client);
        mosquitto_log_printf(MOSQ_LOG_INFO, "upkeep_broker: %s denied user=%s error=DENIED",
                             access == UPK_BP_ACCESS_WRITE ? "publish" : "subscribe",
                             r != NULL ? r->who.name : (upk__bp_name_safe(u) ? u : "?"));
    }
    return MOSQ_ERR_ACL_DENIED;
}

/* Puts the property p into *list; false on failure. Used only to rebuild a
 * list from which a forged upkeep-sender is being removed. */
static bool copy_property(const mosquitto_property *p, mosquitto_property **list)
{
    int id = mosquitto_property_identifier(p);
    uint8_t b;
    uint16_t i16;
    uint32_t i32;
    void *bin = NULL;
    char *s1 = NULL, *s2 = NULL;
    int rc = MOSQ_ERR_INVAL;
    switch (id) {
    case MQTT_PROP_PAYLOAD_FORMAT_INDICATOR:
        if (mosquitto_property_read_byte(p, id, &b, false) != NULL)
            rc = mosquitto_property_add_byte(list, id, b);
        break;
    case MQTT_PROP_MESSAGE_EXPIRY_INTERVAL:
        if (mosquitto_property_read_int32(p, id, &i32, false) != NULL)
            rc = mosquitto_property_add_int32(list, id, i32);
        break;
    case MQTT_PROP_SUBSCRIPTION_IDENTIFIER:
        if (mosquitto_property_read_varint(p, id, &i32, false) != NULL)
            rc = mosquitto_property_add_varint(list, id, i32);
        break;
    case MQTT_PROP_TOPIC_ALIAS:
        if (mosquitto_property_read_int16(p, id, &i16, false) != NULL)
            rc = mosquitto_property_add_int16(list, id, i16);
        break;
    case MQTT_PROP_CONTENT_TYPE:
    case MQTT_PROP_RESPONSE_TOPIC:
        if (mosquitto_property_read_string(p, id, &s1, false) != NULL)
            rc = mosquitto_property_add_string(list, id, s1);
        break;
    case MQTT_PROP_CORRELATION_DATA:
        if (mosquitto_property_read_binary(p, id, &bin, &i16, false) != NULL)
            rc = mosquitto_property_add_binary(list, id, bin, i16);
        break;
    case MQTT_PROP_USER_PROPERTY:
        if (mosquitto_property_read_string_pair(p, id, &s1, &s2, false) != NULL)
            rc = mosquitto_property_add_string_pair(list, id, s1, s2);
        break;
    default:
        rc = MOSQ_ERR_SUCCESS; /* not a PUBLISH property: nothing to keep */
        break;
    }
    mosquitto_free(bin);
    mosquitto_free(s1);
    mosquitto_free(s2);
    return rc == MOSQ_ERR_SUCCESS;
}

/* True when the list carries a user property named upkeep-sender. */
static bool has_sender(const mosquitto_property *list)
{
    for (const mosquitto_property *p = list; p != NULL; p = mosquitto_property_next(p)) {
        char *name = NULL, *value = NULL;
        if (mosquitto_property_identifier(p) != MQTT_PROP_USER_PROPERTY)
            continue;
        if (mosquitto_property_read_string_pair(p, MQTT_PROP_USER_PROPERTY, &name, &value, false) ==
            NULL)
            continue;
        bool hit = name != NULL && strcmp(name, SENDER_PROP) == 0;
        mosquitto_free(name);
        mosquitto_free(value);
        if (hit)
            return true;
    }
    return false;
}

/* Sets upkeep-sender on the message, removing any the client supplied.
 * Returns a Mosquitto error code. */
static int stamp(struct mosquitto_evt_message *ed, const char *sender)
{
    if (has_sender(ed->properties)) {
        mosquitto_property *fresh = NULL;
        for (const mosquitto_property *p = ed->properties; p != NULL;
             p = mosquitto_property_next(p)) {
            if (mosquitto_property_identifier(p) == MQTT_PROP_USER_PROPERTY) {
                char *name = NULL, *value = NULL;
                if (mosquitto_property_read_string_pair(p, MQTT_PROP_USER_PROPERTY, &name, &value,
                                                        false) != NULL) {
                    bool forged = name != NULL && strcmp(name, SENDER_PROP) == 0;
                    mosquitto_free(name);
                    mosquitto_free(value);
                    if (forged)
                        continue;
                }
            }
            if (!copy_property(p, &fresh)) {
                mosquitto_property_free_all(&fresh);
                return MOSQ_ERR_NOMEM;
            }
        }
        mosquitto_property_free_all(&ed->properties);
        ed->properties = fresh;
    }
    return mosquitto_property_add_string_pair(&ed->properties, MQTT_PROP_USER_PROPERTY, SENDER_PROP,
                                              sender);
}

static void queue_kick(struct upk_bp_state *st, const char *client_id)
{
    if (st->nkicks >= KICK_QUEUE_MAX)
        return; /* the record stays flagged; its next message is dropped too */
    char *copy = strdup(client_id);
    if (copy != NULL)
        st->kicks[st->nkicks++] = copy;
}

static int on_message(int event, void *event_data, void *userdata)
{
    struct upk_bp_state *st = userdata;
    struct mosquitto_evt_message *ed = event_data;
    (void)event;
    upk_bp_client *r = client_get(st, ed->client);
    if (r == NULL)
        return MOSQ_ERR_ACL_DENIED;
    double now = now_s();
    const upk_bp_limits *lim = &st->cfg.limits[r->who.role];
    upk_bp_rate_verdict v = upk__bp_rate_check(&r->rate, lim, ed->payloadlen, now);
    switch (v) {
    case UPK_BP_RATE_PASS:
        break;
    case UPK_BP_RATE_TOO_LARGE:
        st->stats.dropped_too_large++;
        return MOSQ_ERR_ACL_DENIED;
    case UPK_BP_RATE_DROP:
        st->stats.dropped_rate++;
        return MOSQ_ERR_ACL_DENIED;
    case UPK_BP_RATE_KICK:
        st->stats.dropped_rate++;
        upk__bp_lockout_hold(&st->lockout, UPK_BP_LOCK_HOLDOFF, r->who.name, now,
                             (double)lim->hold_off_s);
        mosquitto_log_printf(MOSQ_LOG_WARNING,
                             "upkeep_broker: flooding user=%s: %u drops; disconnecting and "
                             "holding off for %u s error=RATE_LIMITED",
                             r->who.name, r->rate.drops, lim->hold_off_s);
        queue_kick(st, mosquitto_client_id(ed->client));
        return MOSQ_ERR_ACL_DENIED;
    }
    st->stats.messages++;
    return stamp(ed, r->sender);
}

static void publish_stats(struct upk_bp_state *st)
{
    char json[STATS_JSON_MAX];
    size_t len = 0;
    st->stats.clients = upk__bp_clients_count(&st->clients);
    if (upk__bp_stats_json(&st->stats, json, sizeof(json), &len) != UPK_OK)
        return;
    char *payload = mosquitto_malloc(len);
    if (payload == NULL)
        return;
    memcpy(payload, json, len);
    mosquitto_property *props = NULL;
    if (mosquitto_property_add_string_pair(&props, MQTT_PROP_USER_PROPERTY, SENDER_PROP,
                                           "broker:upkeep_broker") != MOSQ_ERR_SUCCESS) {
        mosquitto_free(payload);
        return;
    }
    /* The broker takes the payload and the properties whatever the result. */
    (void)mosquitto_broker_publish(NULL, st->stats_topic, (int)len, payload, 0, true, props);
}

/* ---- device credential epochs ------------------------------------------ */

static struct epochs_seen epochs_stamp(const struct stat *sb)
{
    struct epochs_seen s;
    memset(&s, 0, sizeof(s));
    s.dev = sb->st_dev;
    s.ino = sb->st_ino;
    s.size = sb->st_size;
    s.mtime = sb->st_mtim;
    return s;
}

static bool epochs_same(const struct epochs_seen *a, const struct epochs_seen *b)
{
    return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec;
}

/* A connected device whose password's epoch is now revoked: every check
 * denies it already (its record is refused); disconnect it on the next tick,
 * without its Will. */
static void revoke_one(upk_bp_client *r, void *ctx)
{
    struct upk_bp_state *st = ctx;
    mosquitto_log_printf(MOSQ_LOG_NOTICE,
                         "upkeep_broker: disconnecting user=%s client=%.128s: its password's "
                         "epoch %u is below the device's new minimum %u error=AUTH_FAILED",
                         r->who.name, r->id, r->who.epoch,
                         upk__bp_epochs_min(&st->cfg, r->who.name));
    queue_kick(st, r->id);
}

/* Reads device_epochs_file again when it changed since it was last read (or
 * always, with force). A file that cannot be read or parsed leaves the table
 * in use as it is (so a botched edit never lowers a minimum) and is logged
 * once per change. */
static void epochs_check(struct upk_bp_state *st, bool force)
{
    const char *path = st->cfg.epochs_path;
    struct stat sb;
    if (path[0] == '\0')
        return;
    if (stat(path, &sb) != 0) {
        if (!st->epochs_unreadable)
            mosquitto_log_printf(
                MOSQ_LOG_ERR,
                "upkeep_broker: device_epochs_file '%s': cannot read it (%s); "
                "keeping the table in use (%zu devices listed) error=CONFIG_INVALID",
                path, strerror(errno), upk__bp_epochs_count(&st->cfg));
        st->epochs_unreadable = true;
        return;
    }
    st->epochs_unreadable = false;
    struct epochs_seen now = epochs_stamp(&sb);
    if (!force && epochs_same(&now, &st->epochs_seen))
        return;
    st->epochs_seen = now;
    char err[UPK_BP_ERRMSG_MAX];
    upk_err e = upk__bp_epochs_load(&st->cfg, path, err, sizeof(err));
    if (e == UPK_OK) {
        mosquitto_log_printf(MOSQ_LOG_NOTICE,
                             "upkeep_broker: device_epochs_file '%s' read: %zu devices listed",
                             path, upk__bp_epochs_count(&st->cfg));
        (void)upk__bp_epochs_revoke(&st->clients, &st->cfg, revoke_one, st);
    } else
        mosquitto_log_printf(MOSQ_LOG_ERR,
                             "upkeep_broker: %s; keeping the table in use (%zu devices listed) "
                             "error=%s",
                             e == UPK_E_CONFIG_INVALID ? err : upk_err_msg(e),
                             upk__bp_epochs_count(&st->cfg), upk_err_str(e));
}

/* SIGHUP: Mosquitto reloads its own configuration (not the plugin's options
 * or JSON config); the plugin reads device_epochs_file again. */
static int on_reload(int event, void *event_data, void *userdata)
{
    struct upk_bp_state *st = userdata;
    (void)event;
    (void)event_data;
    epochs_check(st, true);
    return MOSQ_ERR_SUCCESS;
}

static int on_tick(int event, void *event_data, void *userdata)
{
    struct upk_bp_state *st = userdata;
    (void)event;
    (void)event_data;
    double now = now_s();
    for (size_t i = 0; i < st->nkicks; i++) {
        if (mosquitto_kick_client_by_clientid(st->kicks[i], false) == MOSQ_ERR_SUCCESS)
            st->stats.kicked++;
        free(st->kicks[i]);
        st->kicks[i] = NULL;
    }
    st->nkicks = 0;
    if (now >= st->next_prune) {
        (void)upk__bp_lockout_prune(&st->lockout, now);
        st->next_prune = now + PRUNE_INTERVAL_S;
    }
    if (st->cfg.epochs_path[0] != '\0' && now >= st->next_epochs_check) {
        epochs_check(st, false);
        st->next_epochs_check = now + st->cfg.epochs_check_s;
    }
    if (st->cfg.stats_interval_s > 0 && now >= st->next_stats) {
        publish_stats(st);
        st->next_stats = now + st->cfg.stats_interval_s;
    }
    return MOSQ_ERR_SUCCESS;
}

static int on_disconnect(int event, void *event_data, void *userdata)
{
    struct upk_bp_state *st = userdata;
    struct mosquitto_evt_disconnect *ed = event_data;
    (void)event;
    const char *id = mosquitto_client_id(ed->client);
    if (id == NULL)
        return MOSQ_ERR_SUCCESS;
    /* After a session takeover the record belongs to the new connection. */
    (void)upk__bp_clients_drop(&st->clients, ed->client, id);
    st->stats.clients = upk__bp_clients_count(&st->clients);
    return MOSQ_ERR_SUCCESS;
}

/* ---- entry points ------------------------------------------------------- */

static const struct {
    int event;
    MOSQ_FUNC_generic_callback cb;
} callbacks[] = {
    {MOSQ_EVT_BASIC_AUTH, on_basic_auth}, {MOSQ_EVT_ACL_CHECK, on_acl_check},
    {MOSQ_EVT_MESSAGE, on_message},       {MOSQ_EVT_TICK, on_tick},
    {MOSQ_EVT_DISCONNECT, on_disconnect}, {MOSQ_EVT_RELOAD, on_reload},
};
#define NCALLBACKS (sizeof(callbacks) / sizeof(callbacks[0]))

static void log_stats(const struct upk_bp_state *st, const char *when)
{
    char json[STATS_JSON_MAX];
    size_t len = 0;
    if (upk__bp_stats_json(&st->stats, json, sizeof(json), &len) == UPK_OK)
        mosquitto_log_printf(MOSQ_LOG_NOTICE, "upkeep_broker: stats at %s: %s", when, json);
}

static void state_free(struct upk_bp_state *st)
{
    if (st == NULL)
        return;
    for (size_t i = 0; i < st->nkicks; i++)
        free(st->kicks[i]);
    upk__bp_clients_cleanup(&st->clients);
    upk__bp_lockout_cleanup(&st->lockout);
    upk__bp_config_cleanup(&st->cfg);
    free(st);
}

UPK_EXPORT int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
    for (int i = 0; i < supported_version_count; i++) {
        if (supported_versions[i] == 5)
            return 5;
    }
    return -1;
}

UPK_EXPORT int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata,
                                     struct mosquitto_opt *options, int option_count)
{
    char err[UPK_BP_ERRMSG_MAX];
    const char *path = NULL;
    size_t registered = 0;
    for (int i = 0; i < option_count; i++) {
        if (strcmp(options[i].key, "config") == 0) {
            path = options[i].value;
        } else {
            mosquitto_log_printf(MOSQ_LOG_ERR,
                                 "upkeep_broker: unknown option plugin_opt_%s (only "
                                 "plugin_opt_config is known); refusing to start",
                                 options[i].key);
            return MOSQ_ERR_INVAL;
        }
    }
    if (path == NULL || path[0] == '\0') {
        mosquitto_log_printf(MOSQ_LOG_ERR, "upkeep_broker: plugin_opt_config is not set; "
                                           "refusing to start");
        return MOSQ_ERR_INVAL;
    }
    struct upk_bp_state *st = calloc(1, sizeof(*st));
    if (st == NULL)
        return MOSQ_ERR_NOMEM;
    st->pid = identifier;
    upk_err e = upk__bp_config_init(&st->cfg);
    if (e == UPK_OK)
        e = upk__bp_config_load(&st->cfg, path, err, sizeof(err));
    if (e != UPK_OK) {
        mosquitto_log_printf(MOSQ_LOG_ERR, "upkeep_broker: config %s: %s; refusing to start", path,
                             e == UPK_E_CONFIG_INVALID ? err : upk_err_msg(e));
        goto fail;
    }
    if (upk__bp_lockout_init(&st->lockout, &st->cfg.lockout) != UPK_OK ||
        upk__bp_clients_init(&st->clients) != UPK_OK ||
        upk_topic_build(st->stats_topic, sizeof(st->stats_topic), st->cfg.prefix,
                        UPK_TOPIC_BROKER_STATS, NULL) != UPK_OK)
        goto fail;
    double now = now_s();
    st->next_stats = now + 1.0; /* first stats soon after start, then every interval */
    st->next_prune = now + PRUNE_INTERVAL_S;
    if (st->cfg.epochs_path[0] != '\0') {
        /* Read at config load; remember how the file looked then. */
        struct stat sb;
        if (stat(st->cfg.epochs_path, &sb) == 0)
            st->epochs_seen = epochs_stamp(&sb);
        st->next_epochs_check = now + st->cfg.epochs_check_s;
        mosquitto_log_printf(MOSQ_LOG_NOTICE,
                             "upkeep_broker: device_epochs_file '%s': %zu devices listed; "
                             "checked for changes every %u s and on SIGHUP",
                             st->cfg.epochs_path, upk__bp_epochs_count(&st->cfg),
                             st->cfg.epochs_check_s);
    }
    for (registered = 0; registered < NCALLBACKS; registered++) {
        if (mosquitto_callback_register(identifier, callbacks[registered].event,
                                        callbacks[registered].cb, NULL, st) != MOSQ_ERR_SUCCESS) {
            mosquitto_log_printf(MOSQ_LOG_ERR, "upkeep_broker: cannot register callback %d",
                                 callbacks[registered].event);
            goto fail_callbacks;
        }
    }
    mosquitto_log_printf(
        MOSQ_LOG_NOTICE, "upkeep_broker: loaded %s: prefix=%s accounts=%zu device_keys=%s", path,
        st->cfg.prefix, st->cfg.accounts.count, st->cfg.fleet_secret_len > 0 ? "derived" : "off");
    *userdata = st;
    return MOSQ_ERR_SUCCESS;
fail_callbacks:
    while (registered-- > 0)
        (void)mosquitto_callback_unregister(identifier, callbacks[registered].event,
                                            callbacks[registered].cb, NULL);
fail:
    state_free(st);
    return MOSQ_ERR_INVAL;
}

UPK_EXPORT int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options,
                                        int option_count)
{
    struct upk_bp_state *st = userdata;
    (void)options;
    (void)option_count;
    if (st == NULL)
        return MOSQ_ERR_SUCCESS;
    for (size_t i = 0; i < NCALLBACKS; i++)
        (void)mosquitto_callback_unregister(st->pid, callbacks[i].event, callbacks[i].cb, NULL);
    log_stats(st, "shutdown");
    state_free(st);
    return MOSQ_ERR_SUCCESS;
}
