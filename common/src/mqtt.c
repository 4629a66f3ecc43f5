/* MQTT 5 client over Paho MQTTAsync with every callback moved onto a libuv
 * loop (see mqtt.h).
 *
 * Paho's threads only ever do one thing with a client: append an event to
 * its queue under the client's mutex and wake the loop (uv_async_send, while
 * still holding the mutex, so the loop cannot free the client between the
 * two). Everything else (state, reconnect timer, user callbacks) belongs to
 * the loop thread. Publish completions are matched by a numeric id, not a
 * pointer, so a completion Paho reports after we gave up on it is ignored
 * instead of touching freed memory. */
#include "upkeep/mqtt.h"

#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <MQTTAsync.h>

#include "mqtt_shared.h"
#include "upkeep/log.h"

#ifndef UPK_MQTT_NO_TLS
#include "tlsdiag.h"
#define TLS_DIAG_TIMEOUT_MS 3000
#endif

enum ev_type {
    EV_CONNECTED,
    EV_CONNECT_FAILED,
    EV_LOST,
    EV_MESSAGE,
    EV_PUB_DONE,
    EV_DISCONNECTED,
};

struct ev {
    struct ev *next;
    enum ev_type type;
    upk_err err;
    int reason; /* EV_CONNECT_FAILED: the CONNACK reason code, or 0 */
    uint64_t pub_id;
    /* EV_MESSAGE */
    char *topic;
    size_t topic_len;
    uint8_t *payload;
    size_t len;
    int qos;
    bool retained;
    char sender[UPK_MQTT_SENDER_MAX + 1];
    char auth[UPK_MQTT_AUTH_MAX + 1];
};

enum conn_state {
    ST_IDLE,       /* created, not started */
    ST_CONNECTING, /* MQTTAsync_connect in flight */
    ST_CONNECTED,
    ST_BACKOFF, /* waiting on the reconnect timer */
    ST_CLOSING, /* close asked; waiting for Paho to let go */
    ST_FINAL,   /* Paho destroyed; handles closing */
};

/* A publish waiting for its completion, by id. */
struct pending_pub {
    struct pending_pub *next;
    uint64_t id;
    upk_mqtt_done_cb done;
    void *cb_data;
};

struct upk_mqtt {
    uv_loop_t *loop;
    uv_async_t async;
    uv_timer_t timer;
    MQTTAsync client;

    /* Owned copies of the options' strings. */
    upk_mqtt_opts opts;
    char *url, *client_id, *username, *password, *ca_file, *cert_file, *key_file;
    char *will_topic;
    void *will_payload;

    /* Shared with Paho's threads; guarded by mu. */
    pthread_mutex_t mu;
    struct ev *head, *tail;

    /* Loop thread only. */
    enum conn_state state;
    bool connect_in_flight;
    uint32_t backoff_ms;
    uint64_t next_pub_id;
    /* Oldest first: completions mostly arrive in publish order, so the
     * search in EV_PUB_DONE ends at or near the head. */
    struct pending_pub *pending, *pending_tail;
    int handles_open;
    void (*closed)(void *userdata);
    void *closed_data;

    /* TLS connect-failure diagnosis on a libuv worker (loop thread owns the
     * flags; the worker writes only diag_err/diag_why until it is done). */
    bool tls;
    bool diag_busy;
    bool free_after_diag;
#ifndef UPK_MQTT_NO_TLS
    uv_work_t diag_req;
    upk_err diag_err; /* cause found by the last diagnosis */
    char diag_why[UPK_TLS_WHY_MAX];
    bool diag_fresh;  /* no diagnosis since the last successful connect */
    uint64_t diag_at; /* uv_now of the last diagnosis */
#endif
};

/* ---- Paho thread side: enqueue only. */

static void push(upk_mqtt *c, struct ev *e)
{
    e->next = NULL;
    pthread_mutex_lock(&c->mu);
    if (c->tail != NULL)
        c->tail->next = e;
    else
        c->head = e;
    c->tail = e;
    (void)uv_async_send(&c->async);
    pthread_mutex_unlock(&c->mu);
}

static void push_simple(upk_mqtt *c, enum ev_type type, upk_err err, uint64_t pub_id)
{
    struct ev *e = calloc(1, sizeof(*e));
    if (e == NULL) {
        /* Nothing can be reported without memory; the connection state will
         * be corrected by the next keepalive or publish failure. */
        return;
    }
    e->type = type;
    e->err = err;
    e->pub_id = pub_id;
    push(c, e);
}

static upk_err reason_to_err(int rc)
{
    switch (rc) {
    case MQTTREASONCODE_BAD_USER_NAME_OR_PASSWORD:
    case MQTTREASONCODE_NOT_AUTHORIZED:
    case MQTTREASONCODE_CLIENT_IDENTIFIER_NOT_VALID:
    case MQTTREASONCODE_BANNED:
    case MQTTREASONCODE_BAD_AUTHENTICATION_METHOD:
        return UPK_E_AUTH_FAILED;
    default:
        return UPK_E_CONN;
    }
}

static void on_connect_ok(void *ctx, MQTTAsync_successData5 *resp)
{
    (void)resp;
    push_simple(ctx, EV_CONNECTED, UPK_OK, 0);
}

static void on_connect_fail(void *ctx, MQTTAsync_failureData5 *resp)
{
    /* Paho 1.3.12 reports a refusing CONNACK's reason code in code (its own
     * failures are negative there), not in reasonCode, which stays 0. */
    int reason = 0;
    if (resp != NULL)
        reason = resp->code >= 0x80 && resp->code <= 0xff ? resp->code : (int)resp->reasonCode;
    struct ev *e = calloc(1, sizeof(*e));
    if (e == NULL)
        return; /* as push_simple: the next attempt's outcome is reported */
    e->type = EV_CONNECT_FAILED;
    e->err = reason_to_err(reason);
    e->reason = reason;
    push(ctx, e);
}

static void on_conn_lost(void *ctx, char *cause)
{
    (void)cause;
    push_simple(ctx, EV_LOST, UPK_E_CONN, 0);
}

static void on_disconnect_done(void *ctx, MQTTAsync_successData5 *resp)
{
    (void)resp;
    push_simple(ctx, EV_DISCONNECTED, UPK_OK, 0);
}

static void on_disconnect_fail(void *ctx, MQTTAsync_failureData5 *resp)
{
    (void)resp;
    push_simple(ctx, EV_DISCONNECTED, UPK_OK, 0);
}

/* Publish completions carry the client in a per-client id space: the context
 * is the client and the token's id travels through a small heap record that
 * Paho gives back exactly once (success or failure). */
struct pub_ctx {
    upk_mqtt *c;
    uint64_t id;
};

static void on_pub_ok(void *ctx, MQTTAsync_successData5 *resp)
{
    struct pub_ctx *p = ctx;
    upk_err err = UPK_OK;
    if (resp != NULL && resp->reasonCode >= 0x80)
        err = UPK_E_DENIED;
    push_simple(p->c, EV_PUB_DONE, err, p->id);
    free(p);
}

static void on_pub_fail(void *ctx, MQTTAsync_failureData5 *resp)
{
    struct pub_ctx *p = ctx;
    upk_err err = UPK_E_CONN;
    if (resp != NULL && resp->reasonCode >= 0x80)
        err = UPK_E_DENIED;
    push_simple(p->c, EV_PUB_DONE, err, p->id);
    free(p);
}

static void on_sub_fail(void *ctx, MQTTAsync_failureData5 *resp)
{
    (void)ctx;
    if (resp != NULL && resp->code == MQTTASYNC_OPERATION_INCOMPLETE)
        return; /* dropped because the connection went away; re-sent on connect */
    upk_warn("mqtt: subscribe failed (code %d, reason %d)", resp != NULL ? resp->code : -1,
             resp != NULL ? (int)resp->reasonCode : -1);
}

/* Copies the upkeep-sender and upkeep-auth user properties of props into
 * out and auth (see upk_mqtt_msg for what each holds). */
static void find_sender(const MQTTProperties *props, char *out, char *auth)
{
    out[0] = '\0';
    auth[0] = '\0';
    for (int i = 0; props != NULL && i < props->count; i++) {
        const MQTTProperty *p = &props->array[i];
        if (p->identifier != MQTTPROPERTY_CODE_USER_PROPERTY)
            continue;
        size_t klen = (size_t)p->value.data.len;
        size_t vlen = (size_t)p->value.value.len;
        if (klen == strlen(UPK_MQTT_AUTH_PROP) &&
            memcmp(p->value.data.data, UPK_MQTT_AUTH_PROP, klen) == 0) {
            upk__mqtt_auth_take(p->value.value.data, vlen, auth);
            continue;
        }
        if (klen != strlen(UPK_MQTT_SENDER_PROP) ||
            memcmp(p->value.data.data, UPK_MQTT_SENDER_PROP, klen) != 0)
            continue;
        if (vlen > UPK_MQTT_SENDER_MAX || memchr(p->value.value.data, '\0', vlen) != NULL) {
            out[0] = '\0';
            return;
        }
        memcpy(out, p->value.value.data, vlen);
        out[vlen] = '\0';
        /* The plugin stamps exactly one; keep the last if there are more. */
    }
}

static int on_message(void *ctx, char *topic, int topic_len, MQTTAsync_message *m)
{
    upk_mqtt *c = ctx;
    size_t tlen = topic_len > 0 ? (size_t)topic_len : strlen(topic);
    size_t plen = m->payloadlen > 0 ? (size_t)m->payloadlen : 0;
    struct ev *e = calloc(1, sizeof(*e));
    char *t = malloc(tlen + 1);
    uint8_t *pl = malloc(plen + 1);
    if (e == NULL || t == NULL || pl == NULL) {
        free(e);
        free(t);
        free(pl);
        upk_error("mqtt: out of memory; dropped a message");
        goto out;
    }
    memcpy(t, topic, tlen);
    t[tlen] = '\0';
    if (plen > 0)
        memcpy(pl, m->payload, plen);
    pl[plen] = '\0';
    e->type = EV_MESSAGE;
    e->topic = t;
    e->topic_len = tlen;
    e->payload = pl;
    e->len = plen;
    e->qos = m->qos;
    e->retained = m->retained != 0;
    find_sender(&m->properties, e->sender, e->auth);
    push(c, e);
out:
    MQTTAsync_freeMessage(&m);
    MQTTAsync_free(topic);
    return 1;
}

/* ---- loop thread side. */

static void ev_free(struct ev *e)
{
    if (e == NULL)
        return;
    free(e->topic);
    free(e->payload);
    free(e);
}

static void start_connect(upk_mqtt *c);

static void on_timer(uv_timer_t *t)
{
    upk_mqtt *c = t->data;
    if (c->state == ST_BACKOFF)
        start_connect(c);
}

/* A refused login: a slow backoff (or none at all), one log line. */
static void schedule_refused(upk_mqtt *c, int reason)
{
    c->state = ST_BACKOFF;
    if (c->opts.stop_on_refusal) {
        upk__mqtt_log_refused(c->url, c->username, c->client_id, reason, 0);
        return;
    }
    uint32_t delay = upk__mqtt_backoff_refused(&c->backoff_ms, &c->opts);
    upk__mqtt_log_refused(c->url, c->username, c->client_id, reason, delay);
    if (uv_timer_start(&c->timer, on_timer, delay, 0) != 0)
        upk_error("mqtt: cannot arm reconnect timer client=%s", c->client_id);
}

static void schedule_reconnect(upk_mqtt *c)
{
    c->state = ST_BACKOFF;
    uint32_t delay = upk__mqtt_backoff_next(&c->backoff_ms, c->opts.reconnect_max_ms);
    if (uv_timer_start(&c->timer, on_timer, delay, 0) != 0)
        upk_error("mqtt: cannot arm reconnect timer client=%s", c->client_id);
}

static void start_connect(upk_mqtt *c)
{
    MQTTAsync_connectOptions co = MQTTAsync_connectOptions_initializer5;
    MQTTAsync_willOptions will = MQTTAsync_willOptions_initializer;
    MQTTAsync_SSLOptions ssl = MQTTAsync_SSLOptions_initializer;
    MQTTProperties props = MQTTProperties_initializer;
    MQTTProperty expiry, maxpkt;

    co.keepAliveInterval = c->opts.keepalive_s;
    co.cleanstart = c->opts.clean_start ? 1 : 0;
    co.maxInflight = c->opts.max_inflight;
    co.username = c->username;
    co.password = c->password;
    co.connectTimeout = 10;
    co.automaticReconnect = 0;
    co.onSuccess5 = on_connect_ok;
    co.onFailure5 = on_connect_fail;
    co.context = c;
    if (c->will_topic != NULL) {
        will.topicName = c->will_topic;
        will.message = NULL;
        will.payload.data = c->will_payload;
        will.payload.len = (int)c->opts.will_len;
        will.qos = c->opts.will_qos;
        will.retained = c->opts.will_retained ? 1 : 0;
        co.will = &will;
    }
    if (!c->opts.clean_start && c->opts.session_expiry_s > 0) {
        expiry.identifier = MQTTPROPERTY_CODE_SESSION_EXPIRY_INTERVAL;
        expiry.value.integer4 = c->opts.session_expiry_s;
        if (MQTTProperties_add(&props, &expiry) != 0) {
            upk_error("mqtt: cannot set session expiry client=%s", c->client_id);
        }
        co.connectProperties = &props;
    }
    if (c->opts.max_packet > 0) {
        maxpkt.identifier = MQTTPROPERTY_CODE_MAXIMUM_PACKET_SIZE;
        maxpkt.value.integer4 = c->opts.max_packet;
        if (MQTTProperties_add(&props, &maxpkt) != 0)
            upk_error("mqtt: cannot set the maximum packet size client=%s", c->client_id);
        co.connectProperties = &props;
    }
    if (c->tls) {
        ssl.trustStore = c->ca_file;
        ssl.keyStore = c->cert_file;
        ssl.privateKey = c->key_file;
        ssl.enableServerCertAuth = 1;
        ssl.verify = 1;                   /* the broker's name must match the URL's host */
        ssl.disableDefaultTrustStore = 1; /* only ca_file, never the system store */
        co.ssl = &ssl;
    }
    c->state = ST_CONNECTING;
    c->connect_in_flight = true;
    int rc = MQTTAsync_connect(c->client, &co);
    MQTTProperties_free(&props);
    if (rc != MQTTASYNC_SUCCESS) {
        c->connect_in_flight = false;
        upk_warn("mqtt: connect not started client=%s rc=%d", c->client_id, rc);
        schedule_reconnect(c);
    }
}

static void fail_pending(upk_mqtt *c, upk_err err)
{
    struct pending_pub *p = c->pending;
    c->pending = c->pending_tail = NULL;
    while (p != NULL) {
        struct pending_pub *next = p->next;
        if (p->done != NULL && c->state != ST_CLOSING && c->state != ST_FINAL)
            p->done(c, err, p->cb_data);
        free(p);
        p = next;
    }
}

static void free_client(upk_mqtt *c);

static void on_handle_closed(uv_handle_t *h)
{
    upk_mqtt *c = h->data;
    if (--c->handles_open > 0)
        return;
    pthread_mutex_lock(&c->mu);
    struct ev *e = c->head;
    c->head = c->tail = NULL;
    pthread_mutex_unlock(&c->mu);
    while (e != NULL) {
        struct ev *next = e->next;
        ev_free(e);
        e = next;
    }
    fail_pending(c, UPK_E_CANCELLED);
    if (c->diag_busy) {
        c->free_after_diag = true; /* the diagnosis worker still holds c */
        return;
    }
    free_client(c);
}

static void free_client(upk_mqtt *c)
{
    pthread_mutex_destroy(&c->mu);
    void (*closed)(void *) = c->closed;
    void *closed_data = c->closed_data;
    free(c->url);
    free(c->client_id);
    free(c->username);
    free(c->password);
    free(c->ca_file);
    free(c->cert_file);
    free(c->key_file);
    free(c->will_topic);
    free(c->will_payload);
    free(c);
    if (closed != NULL)
        closed(closed_data);
}

/* Paho has let go (or never held on): destroy it and close our handles. */
static void finalize(upk_mqtt *c)
{
    c->state = ST_FINAL;
    MQTTAsync_destroy(&c->client);
    /* Taking the mutex once more waits out any Paho thread still inside
     * push() for this client. */
    pthread_mutex_lock(&c->mu);
    pthread_mutex_unlock(&c->mu);
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->async, on_handle_closed);
}

static void begin_disconnect(upk_mqtt *c)
{
    MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer5;
    d.timeout = 1000;
    d.onSuccess5 = on_disconnect_done;
    d.onFailure5 = on_disconnect_fail;
    d.context = c;
    if (MQTTAsync_disconnect(c->client, &d) != MQTTASYNC_SUCCESS)
        finalize(c);
}

#ifndef UPK_MQTT_NO_TLS
/* Paho says only "TCP/TLS connect failure": one handshake of our own names
 * the cause (untrusted or misnamed broker certificate, our expired one, a
 * refusal, or a broker that is down). */
static void diag_work(uv_work_t *req)
{
    upk_mqtt *c = req->data;
    c->diag_err = upk__tls_diagnose(c->url, c->ca_file, c->cert_file, c->key_file,
                                    TLS_DIAG_TIMEOUT_MS, c->diag_why, sizeof(c->diag_why));
}

static void diag_done(uv_work_t *req, int status)
{
    upk_mqtt *c = req->data;
    c->diag_busy = false;
    if (c->free_after_diag) {
        free_client(c);
        return;
    }
    if (c->state != ST_BACKOFF)
        return; /* closed meanwhile; finalize runs its course */
    upk_err err = status == 0 && c->diag_err != UPK_OK ? c->diag_err : UPK_E_CONN;
    if (err == UPK_E_CONN)
        upk_warn("mqtt: connect failed client=%s error=CONN", c->client_id);
    else
        upk_error("mqtt: connect failed client=%s error=%s (%s)", c->client_id, upk_err_str(err),
                  c->diag_why);
    schedule_reconnect(c);
    if (c->opts.on_disconnect != NULL)
        c->opts.on_disconnect(c, err, c->opts.userdata);
}

/* At most one diagnosis handshake per reconnect_max_ms while failing (a
 * fleet of clients must not hammer a broker with extra handshakes); the
 * first failure after a good connection is always diagnosed. */
static bool start_diag(upk_mqtt *c)
{
    uint64_t now = uv_now(c->loop);
    if (!c->diag_fresh && now - c->diag_at < c->opts.reconnect_max_ms)
        return false;
    c->diag_fresh = false;
    c->diag_at = now;
    c->state = ST_BACKOFF; /* no timer armed until diag_done */
    c->diag_req.data = c;
    c->diag_why[0] = '\0';
    if (uv_queue_work(c->loop, &c->diag_req, diag_work, diag_done) != 0)
        return false;
    c->diag_busy = true;
    return true;
}
#endif

static void handle_event(upk_mqtt *c, struct ev *e)
{
    bool closing = c->state == ST_CLOSING;
    switch (e->type) {
    case EV_CONNECTED:
        c->connect_in_flight = false;
        if (closing) {
            begin_disconnect(c);
            break;
        }
        c->state = ST_CONNECTED;
        c->backoff_ms = c->opts.reconnect_min_ms;
#ifndef UPK_MQTT_NO_TLS
        c->diag_fresh = true;
        c->diag_err = UPK_OK;
#endif
        upk_debug("mqtt: connected client=%s", c->client_id);
        if (c->opts.on_connect != NULL)
            c->opts.on_connect(c, c->opts.userdata);
        break;
    case EV_CONNECT_FAILED:
        c->connect_in_flight = false;
        if (closing) {
            finalize(c);
            break;
        }
#ifndef UPK_MQTT_NO_TLS
        if (c->tls && e->err != UPK_E_AUTH_FAILED) {
            if (start_diag(c))
                break; /* reported and rescheduled when the diagnosis is done */
            if (c->diag_err != UPK_OK && c->diag_err != UPK_E_CONN) {
                e->err = c->diag_err; /* as last diagnosed */
                upk_warn("mqtt: connect failed client=%s error=%s (%s)", c->client_id,
                         upk_err_str(e->err), c->diag_why);
                schedule_reconnect(c);
                if (c->opts.on_disconnect != NULL)
                    c->opts.on_disconnect(c, e->err, c->opts.userdata);
                break;
            }
        }
#endif
        if (e->err == UPK_E_AUTH_FAILED) {
            schedule_refused(c, e->reason);
        } else {
            upk_warn("mqtt: connect failed client=%s error=%s", c->client_id, upk_err_str(e->err));
            schedule_reconnect(c);
        }
        if (c->opts.on_disconnect != NULL)
            c->opts.on_disconnect(c, e->err, c->opts.userdata);
        break;
    case EV_LOST:
        if (closing || c->state != ST_CONNECTED)
            break;
        upk_warn("mqtt: connection lost client=%s", c->client_id);
        fail_pending(c, UPK_E_CONN);
        schedule_reconnect(c);
        if (c->opts.on_disconnect != NULL)
            c->opts.on_disconnect(c, UPK_E_CONN, c->opts.userdata);
        break;
    case EV_MESSAGE:
        if (closing || c->opts.on_message == NULL)
            break;
        {
            upk_mqtt_msg m = {
                .topic = e->topic,
                .topic_len = e->topic_len,
                .payload = e->len > 0 ? e->payload : NULL,
                .len = e->len,
                .qos = e->qos,
                .retained = e->retained,
                .sender = e->sender,
                .auth = e->auth,
            };
            c->opts.on_message(c, &m, c->opts.userdata);
        }
        break;
    case EV_PUB_DONE: {
        struct pending_pub **pp = &c->pending, *prev = NULL;
        while (*pp != NULL && (*pp)->id != e->pub_id) {
            prev = *pp;
            pp = &(*pp)->next;
        }
        struct pending_pub *p = *pp;
        if (p == NULL)
            break; /* already failed at a connection loss */
        *pp = p->next;
        if (c->pending_tail == p)
            c->pending_tail = prev;
        if (p->done != NULL && !closing)
            p->done(c, e->err, p->cb_data);
        free(p);
        break;
    }
    case EV_DISCONNECTED:
        if (closing)
            finalize(c);
        break;
    }
}

static void on_async(uv_async_t *a)
{
    upk_mqtt *c = a->data;
    pthread_mutex_lock(&c->mu);
    struct ev *e = c->head;
    c->head = c->tail = NULL;
    pthread_mutex_unlock(&c->mu);
    while (e != NULL) {
        struct ev *next = e->next;
        if (c->state != ST_FINAL)
            handle_event(c, e);
        ev_free(e);
        e = next;
    }
}

upk_err upk_mqtt_new(uv_loop_t *loop, const upk_mqtt_opts *opts, upk_mqtt **out)
{
    if (loop == NULL || opts == NULL || out == NULL || opts->url == NULL ||
        opts->client_id == NULL || opts->will_len > INT_MAX)
        return UPK_E_INVALID_ARG;
    upk_mqtt *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return UPK_E_NOMEM;
    upk_err err = UPK_E_NOMEM;
    bool ok = true;
    c->loop = loop;
    c->opts = *opts;
    c->url = upk__mqtt_strdup(opts->url, &ok);
    c->client_id = upk__mqtt_strdup(opts->client_id, &ok);
    c->username = upk__mqtt_strdup(opts->username, &ok);
    c->password = upk__mqtt_strdup(opts->password, &ok);
    c->ca_file = upk__mqtt_strdup(opts->ca_file, &ok);
    c->cert_file = upk__mqtt_strdup(opts->cert_file, &ok);
    c->key_file = upk__mqtt_strdup(opts->key_file, &ok);
    c->will_topic = upk__mqtt_strdup(opts->will_topic, &ok);
    c->tls = strncmp(opts->url, "ssl://", 6) == 0 || strncmp(opts->url, "mqtts://", 8) == 0;
#ifndef UPK_MQTT_NO_TLS
    c->diag_fresh = true;
#endif
    if (c->tls) {
#ifdef UPK_MQTT_NO_TLS
        upk_error("mqtt: %s: built without TLS; ssl:// is refused", opts->url);
        err = UPK_E_CONFIG_INVALID;
        goto out_free;
#else
        /* Never silently insecure: a TLS client needs a CA to verify the
         * broker, and readable files, before it ever connects. */
        char why[UPK_TLS_WHY_MAX];
        if (upk__tls_check_files(opts->ca_file, opts->cert_file, opts->key_file, why,
                                 sizeof(why)) != UPK_OK) {
            upk_error("mqtt: client=%s error=CONFIG_INVALID (%s)", opts->client_id, why);
            err = UPK_E_CONFIG_INVALID;
            goto out_free;
        }
#endif
    }
    if (opts->will_topic != NULL) {
        c->will_payload = malloc(opts->will_len + 1);
        if (c->will_payload == NULL)
            ok = false;
        else if (opts->will_len > 0)
            memcpy(c->will_payload, opts->will_payload, opts->will_len);
    }
    if (!ok)
        goto out_free;
    upk__mqtt_opts_normalize(&c->opts);
    c->backoff_ms = c->opts.reconnect_min_ms;
    c->next_pub_id = 1;

    MQTTAsync_createOptions co = MQTTAsync_createOptions_initializer5;
    co.sendWhileDisconnected = 0;
    co.maxBufferedMessages = c->opts.max_buffered;
    if (MQTTAsync_createWithOptions(&c->client, c->url, c->client_id, MQTTCLIENT_PERSISTENCE_NONE,
                                    NULL, &co) != MQTTASYNC_SUCCESS) {
        err = UPK_E_INVALID_ARG;
        goto out_free;
    }
    if (MQTTAsync_setCallbacks(c->client, c, on_conn_lost, on_message, NULL) != MQTTASYNC_SUCCESS) {
        err = UPK_E_INTERNAL;
        goto out_destroy;
    }
    if (pthread_mutex_init(&c->mu, NULL) != 0) {
        err = UPK_E_INTERNAL;
        goto out_destroy;
    }
    if (uv_async_init(loop, &c->async, on_async) != 0) {
        err = UPK_E_INTERNAL;
        goto out_mutex;
    }
    c->async.data = c;
    if (uv_timer_init(loop, &c->timer) != 0) {
        /* The async handle must be closed through the loop; finish there. */
        c->handles_open = 1;
        c->state = ST_FINAL;
        MQTTAsync_destroy(&c->client);
        uv_close((uv_handle_t *)&c->async, on_handle_closed);
        return UPK_E_INTERNAL;
    }
    c->timer.data = c;
    c->handles_open = 2;
    c->state = ST_IDLE;
    *out = c;
    return UPK_OK;

out_mutex:
    pthread_mutex_destroy(&c->mu);
out_destroy:
    MQTTAsync_destroy(&c->client);
out_free:
    free(c->url);
    free(c->client_id);
    free(c->username);
    free(c->password);
    free(c->ca_file);
    free(c->cert_file);
    free(c->key_file);
    free(c->will_topic);
    free(c->will_payload);
    free(c);
    return err;
}

upk_err upk_mqtt_start(upk_mqtt *c)
{
    if (c == NULL || c->state != ST_IDLE)
        return UPK_E_STATE_INVALID;
    start_connect(c);
    return UPK_OK;
}

bool upk_mqtt_connected(const upk_mqtt *c)
{
    return c != NULL && c->state == ST_CONNECTED;
}

upk_err upk_mqtt_subscribe(upk_mqtt *c, const char *filter, int qos)
{
    if (c == NULL || filter == NULL || qos < 0 || qos > 2)
        return UPK_E_INVALID_ARG;
    if (c->state != ST_CONNECTED)
        return UPK_E_CONN;
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    ro.onFailure5 = on_sub_fail;
    ro.context = c;
    int rc = MQTTAsync_subscribe(c->client, filter, qos, &ro);
    if (rc != MQTTASYNC_SUCCESS)
        return rc == MQTTASYNC_BAD_UTF8_STRING ? UPK_E_INVALID_ARG : UPK_E_CONN;
    return UPK_OK;
}

upk_err upk_mqtt_publish(upk_mqtt *c, const char *topic, const void *payload, size_t len, int qos,
                         bool retain, upk_mqtt_done_cb done, void *cb_data)
{
    return upk_mqtt_publish_auth(c, topic, payload, len, qos, retain, NULL, done, cb_data);
}

upk_err upk_mqtt_publish_auth(upk_mqtt *c, const char *topic, const void *payload, size_t len,
                              int qos, bool retain, const char *auth, upk_mqtt_done_cb done,
                              void *cb_data)
{
    if (c == NULL || topic == NULL || (payload == NULL && len > 0) || len > INT_MAX || qos < 0 ||
        qos > 2 || !upk__mqtt_auth_arg_valid(auth))
        return UPK_E_INVALID_ARG;
    if (c->state != ST_CONNECTED)
        return UPK_E_CONN;
    struct pending_pub *p = calloc(1, sizeof(*p));
    struct pub_ctx *ctx = calloc(1, sizeof(*ctx));
    if (p == NULL || ctx == NULL) {
        free(p);
        free(ctx);
        return UPK_E_NOMEM;
    }
    p->id = c->next_pub_id++;
    p->done = done;
    p->cb_data = cb_data;
    ctx->c = c;
    ctx->id = p->id;

    MQTTAsync_message m = MQTTAsync_message_initializer;
    m.payload = (void *)payload;
    m.payloadlen = (int)len;
    m.qos = qos;
    m.retained = retain ? 1 : 0;
    /* Paho copies the properties into its own publish record, so ours are
     * freed right after sendMessage whatever it returns. */
    MQTTProperties props = MQTTProperties_initializer;
    if (auth != NULL && auth[0] != '\0') {
        MQTTProperty up = {.identifier = MQTTPROPERTY_CODE_USER_PROPERTY};
        up.value.data.data = (char *)UPK_MQTT_AUTH_PROP;
        up.value.data.len = (int)strlen(UPK_MQTT_AUTH_PROP);
        up.value.value.data = (char *)auth;
        up.value.value.len = (int)strlen(auth);
        if (MQTTProperties_add(&props, &up) != 0) {
            MQTTProperties_free(&props);
            free(p);
            free(ctx);
            return UPK_E_NOMEM;
        }
        m.properties = props;
    }
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    ro.onSuccess5 = on_pub_ok;
    ro.onFailure5 = on_pub_fail;
    ro.context = ctx;
    int rc = MQTTAsync_sendMessage(c->client, topic, &m, &ro);
    MQTTProperties_free(&props);
    if (rc != MQTTASYNC_SUCCESS) {
        free(p);
        free(ctx);
        if (rc == MQTTASYNC_MAX_BUFFERED_MESSAGES)
            return UPK_E_BUSY;
        if (rc == MQTTASYNC_BAD_UTF8_STRING || rc == MQTTASYNC_BAD_QOS)
            return UPK_E_INVALID_ARG;
        return UPK_E_CONN;
    }
    p->next = NULL;
    if (c->pending_tail != NULL)
        c->pending_tail->next = p;
    else
        c->pending = p;
    c->pending_tail = p;
    return UPK_OK;
}

void upk_mqtt_close(upk_mqtt *c, void (*closed)(void *userdata), void *userdata)
{
    if (c == NULL || c->state == ST_CLOSING || c->state == ST_FINAL)
        return;
    enum conn_state was = c->state;
    c->closed = closed;
    c->closed_data = userdata;
    (void)uv_timer_stop(&c->timer);
    /* Closing first: pending publishes are dropped without callbacks. */
    c->state = ST_CLOSING;
    fail_pending(c, UPK_E_CANCELLED);
    if (was == ST_CONNECTED)
        begin_disconnect(c);
    else if (!c->connect_in_flight)
        finalize(c);
    /* else: the connect result arrives first; handle_event finishes then. */
}
