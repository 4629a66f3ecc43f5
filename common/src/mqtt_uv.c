/* The upk_mqtt contract (mqtt.h) as a single-threaded MQTT 5 client on the
 * caller's libuv loop, for the simulator: thousands of clients share one
 * epoll loop with no thread of their own.
 *
 * Why a second transport: Paho MQTTAsync gives every process one receive
 * thread that polls every socket of the process for each packet it reads,
 * and hands each event to the loop through a mutex and a wake-up. With
 * hundreds of simulated devices per process that was half of the
 * simulator's CPU (docs/benchmarks.md, Scale), a cost a real device, with
 * one connection, never pays. Real agents, the controller and the CLI keep
 * Paho (mqtt.c); everything above this interface is the same code.
 *
 * Scope: tcp:// only (ssl:// is refused at creation), MQTT 5, QoS 0 and 1
 * out, QoS 0, 1 and 2 in. Semantics follow mqtt.c: a lost connection fails
 * every pending publish with UPK_E_CONN (the caller's outbox resends),
 * reconnection uses the same backoff with equal jitter, and callbacks run
 * only on the loop thread, never after upk_mqtt_close returns. */
#include "upkeep/mqtt.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mqtt_shared.h"
#include "upkeep/log.h"

#define CONNECT_TIMEOUT_MS 10000
#define CLOSE_TIMEOUT_MS   1000
#define MAX_PACKET         (64u * 1024u * 1024u) /* inbound cap without opts.max_packet */
#define READ_CHUNK         (64u * 1024u)

enum pkt {
    P_CONNECT = 1,
    P_CONNACK = 2,
    P_PUBLISH = 3,
    P_PUBACK = 4,
    P_PUBREC = 5,
    P_PUBREL = 6,
    P_PUBCOMP = 7,
    P_SUBSCRIBE = 8,
    P_SUBACK = 9,
    P_PINGREQ = 12,
    P_PINGRESP = 13,
    P_DISCONNECT = 14,
};

enum conn_state {
    ST_IDLE,       /* created, not started */
    ST_CONNECTING, /* resolving, TCP connecting or waiting for CONNACK */
    ST_CONNECTED,
    ST_BACKOFF, /* waiting on the reconnect timer */
    ST_CLOSING, /* close asked; handles closing */
};

typedef struct conn conn;

/* A publish handed to us: queued until an in-flight slot is free, then
 * written; QoS 1 waits for PUBACK, QoS 0 for the write. */
struct pub {
    struct pub *next;
    uint64_t id;
    uint16_t pid; /* packet id, QoS 1 only */
    int qos;
    upk_mqtt_done_cb done;
    void *cb_data;
    uint8_t *pkt; /* encoded packet until written */
    size_t pkt_len;
    size_t pid_off; /* where the packet id goes in pkt (QoS 1) */
};

struct upk_mqtt {
    uv_loop_t *loop;
    uv_timer_t timer; /* reconnect backoff, connect timeout, close timeout */
    uv_timer_t ka;    /* keepalive */
    conn *cn;         /* the current connection attempt, or NULL */

    upk_mqtt_opts opts;
    char *client_id, *username, *password, *will_topic, *host;
    void *will_payload;
    int port;

    enum conn_state state;
    uint32_t backoff_ms;
    uint32_t keepalive_ms;
    uint64_t last_tx, ping_sent; /* uv_now; ping_sent 0 when no PINGREQ is out */
    /* A write failed inside a call from the user: the loss is reported from
     * the timer, never inside upk_mqtt_publish or _subscribe. */
    bool broken;
    char broken_why[64];
    uint16_t next_pid;
    int inflight_max; /* min(max_inflight, the broker's receive maximum) */
    int inflight;     /* QoS 1 publishes written, not acknowledged */
    int queued;
    uint64_t next_pub_id;
    struct pub *q_head, *q_tail; /* not written yet, in order */
    struct pub *w_head, *w_tail; /* written, waiting (QoS 1 ack or QoS 0 write) */

    int handles_open; /* our two timers plus a closing connection */
    void (*closed)(void *userdata);
    void *closed_data;
};

/* One TCP connection attempt. Outlives its client's interest in it: once
 * detached (c == NULL) it only finishes closing. */
struct conn {
    upk_mqtt *c;
    uv_tcp_t tcp;
    uv_connect_t creq;
    uv_getaddrinfo_t gai;
    uv_shutdown_t sreq;
    bool tcp_init, resolving, closing;
    uint8_t *rbuf;
    size_t rlen, rcap;
};

struct wreq {
    uv_write_t req;
    conn *cn;
    uint64_t pub_id; /* QoS 0 publish to complete on write, or 0 */
    size_t len;
    uint8_t data[];
};

/* ---- encoding */

static size_t varint_len(size_t v)
{
    return v < 128 ? 1 : v < 16384 ? 2 : v < 2097152 ? 3 : 4;
}

static uint8_t *put_varint(uint8_t *p, size_t v)
{
    do {
        uint8_t b = (uint8_t)(v % 128);
        v /= 128;
        *p++ = v > 0 ? (uint8_t)(b | 0x80) : b;
    } while (v > 0);
    return p;
}

static uint8_t *put_u16(uint8_t *p, uint16_t v)
{
    *p++ = (uint8_t)(v >> 8);
    *p++ = (uint8_t)v;
    return p;
}

static uint8_t *put_u32(uint8_t *p, uint32_t v)
{
    p = put_u16(p, (uint16_t)(v >> 16));
    return put_u16(p, (uint16_t)v);
}

static uint8_t *put_bin(uint8_t *p, const void *s, size_t n)
{
    p = put_u16(p, (uint16_t)n);
    if (n > 0)
        memcpy(p, s, n);
    return p + n;
}

/* A packet buffer of fixed header + body bytes; *body points past the
 * header. */
static uint8_t *pkt_alloc(uint8_t first, size_t body_len, size_t *total, uint8_t **body)
{
    size_t n = 1 + varint_len(body_len) + body_len;
    uint8_t *b = malloc(n);
    if (b == NULL)
        return NULL;
    b[0] = first;
    *body = put_varint(b + 1, body_len);
    *total = n;
    return b;
}

/* ---- connection plumbing */

static void start_connect(upk_mqtt *c);
static void on_timer(uv_timer_t *t);
static void finish_close(upk_mqtt *c);
static void conn_lost(upk_mqtt *c, upk_err err, const char *why);
static void drain(upk_mqtt *c);

static void free_client(upk_mqtt *c)
{
    free(c->client_id);
    free(c->username);
    free(c->password);
    free(c->will_topic);
    free(c->will_payload);
    free(c->host);
    free(c);
}

static void handle_closed(upk_mqtt *c)
{
    if (--c->handles_open > 0)
        return;
    void (*closed)(void *) = c->closed;
    void *closed_data = c->closed_data;
    free_client(c);
    if (closed != NULL)
        closed(closed_data);
}

static void on_timer_closed(uv_handle_t *h)
{
    handle_closed(h->data);
}

static void on_tcp_closed(uv_handle_t *h)
{
    conn *cn = h->data;
    upk_mqtt *c = cn->c;
    free(cn->rbuf);
    free(cn);
    if (c != NULL)
        handle_closed(c); /* a connection closed as part of upk_mqtt_close */
}

/* Detaches cn from its client and closes it. With owner set, the client
 * counts it among the handles it waits for before it frees itself. */
static void conn_close(conn *cn, upk_mqtt *owner)
{
    if (cn->closing)
        return;
    cn->closing = true;
    cn->c = owner;
    if (owner != NULL)
        owner->handles_open++;
    if (cn->resolving) {
        /* The resolver calls back with UV_ECANCELED; it frees cn then. */
        (void)uv_cancel((uv_req_t *)&cn->gai);
        return;
    }
    if (cn->tcp_init && !uv_is_closing((uv_handle_t *)&cn->tcp)) {
        uv_close((uv_handle_t *)&cn->tcp, on_tcp_closed);
        return;
    }
    free(cn->rbuf);
    free(cn);
    if (owner != NULL)
        handle_closed(owner);
}

static void on_write(uv_write_t *req, int status)
{
    struct wreq *w = (struct wreq *)req;
    conn *cn = w->cn;
    upk_mqtt *c = cn->closing ? NULL : cn->c;
    uint64_t id = w->pub_id;
    free(w);
    if (c == NULL)
        return;
    if (status != 0) {
        conn_lost(c, UPK_E_CONN, uv_strerror(status));
        return;
    }
    if (id == 0)
        return;
    /* A QoS 0 publish is done once written. */
    struct pub **pp = &c->w_head, *prev = NULL;
    while (*pp != NULL && (*pp)->id != id) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    struct pub *p = *pp;
    if (p == NULL)
        return;
    *pp = p->next;
    if (c->w_tail == p)
        c->w_tail = prev;
    if (p->done != NULL)
        p->done(c, UPK_OK, p->cb_data);
    free(p);
}

static void mark_broken(upk_mqtt *c, const char *why)
{
    if (c->broken)
        return;
    c->broken = true;
    (void)snprintf(c->broken_why, sizeof(c->broken_why), "%s", why);
    if (uv_timer_start(&c->timer, on_timer, 0, 0) != 0)
        upk_error("mqtt: cannot arm timer client=%s", c->client_id);
}

/* Writes n bytes of buf (taking ownership): straight to the socket when it
 * takes them all, else through libuv's queue. pub_id names a QoS 0 publish
 * to complete once written (always through the queue, so that done never
 * runs inside the caller's upk_mqtt_publish). A failure marks the
 * connection broken; the loss is reported from the timer. */
static upk_err send_bytes(upk_mqtt *c, uint8_t *buf, size_t n, uint64_t pub_id)
{
    conn *cn = c->cn;
    if (c->broken || cn == NULL) {
        free(buf);
        return UPK_E_CONN;
    }
    size_t off = 0;
    uv_buf_t b = uv_buf_init((char *)buf, (unsigned)n);
    int rc = pub_id == 0 ? uv_try_write((uv_stream_t *)&cn->tcp, &b, 1) : UV_EAGAIN;
    if (rc > 0)
        off = (size_t)rc;
    else if (rc != UV_EAGAIN) {
        free(buf);
        mark_broken(c, uv_strerror(rc));
        return UPK_E_CONN;
    }
    c->last_tx = uv_now(c->loop);
    if (off == n) {
        free(buf);
        return UPK_OK;
    }
    struct wreq *w = malloc(sizeof(*w) + (n - off));
    if (w == NULL) {
        free(buf);
        mark_broken(c, "out of memory");
        return UPK_E_NOMEM;
    }
    memcpy(w->data, buf + off, n - off);
    free(buf);
    w->cn = cn;
    w->pub_id = pub_id;
    w->len = n - off;
    b = uv_buf_init((char *)w->data, (unsigned)w->len);
    rc = uv_write(&w->req, (uv_stream_t *)&cn->tcp, &b, 1, on_write);
    if (rc != 0) {
        free(w);
        mark_broken(c, uv_strerror(rc));
        return UPK_E_CONN;
    }
    return UPK_OK;
}

static upk_err send_small(upk_mqtt *c, const uint8_t *bytes, size_t n)
{
    uint8_t *b = malloc(n);
    if (b == NULL)
        return UPK_E_NOMEM;
    memcpy(b, bytes, n);
    return send_bytes(c, b, n, 0);
}

static void fail_list(upk_mqtt *c, struct pub *p, upk_err err, bool report)
{
    while (p != NULL) {
        struct pub *next = p->next;
        if (report && p->done != NULL && c->state != ST_CLOSING)
            p->done(c, err, p->cb_data);
        free(p->pkt);
        free(p);
        p = next;
    }
}

/* Fails every publish not yet completed, in order: written ones first. */
static void fail_pending(upk_mqtt *c, upk_err err, bool report)
{
    struct pub *w = c->w_head, *q = c->q_head;
    c->w_head = c->w_tail = c->q_head = c->q_tail = NULL;
    c->inflight = c->queued = 0;
    fail_list(c, w, err, report);
    fail_list(c, q, err, report);
}

static void on_timer(uv_timer_t *t)
{
    upk_mqtt *c = t->data;
    if (c->state == ST_BACKOFF)
        start_connect(c);
    else if (c->broken)
        conn_lost(c, UPK_E_CONN, c->broken_why);
    else if (c->state == ST_CONNECTING)
        conn_lost(c, UPK_E_CONN, "connect timed out");
    else if (c->state == ST_CLOSING)
        finish_close(c);
}

/* Closing, and the DISCONNECT flushed (or the wait is over): close the
 * connection and the timer; the client is freed once both are closed. */
static void finish_close(upk_mqtt *c)
{
    conn *cn = c->cn;
    c->cn = NULL;
    if (cn != NULL)
        conn_close(cn, c);
    if (!uv_is_closing((uv_handle_t *)&c->timer))
        uv_close((uv_handle_t *)&c->timer, on_timer_closed);
}

static void schedule_reconnect(upk_mqtt *c)
{
    c->state = ST_BACKOFF;
    uint32_t delay = upk__mqtt_backoff_next(&c->backoff_ms, c->opts.reconnect_max_ms);
    if (uv_timer_start(&c->timer, on_timer, delay, 0) != 0)
        upk_error("mqtt: cannot arm reconnect timer client=%s", c->client_id);
}

/* A refused login: a slow backoff (or none at all), one log line. */
static void schedule_refused(upk_mqtt *c, int reason)
{
    char where[300];
    int r = snprintf(where, sizeof(where), "tcp://%s:%d", c->host, c->port);
    (void)r; /* a longer host name is cut in the log line only */
    c->state = ST_BACKOFF;
    if (c->opts.stop_on_refusal) {
        upk__mqtt_log_refused(where, c->username, c->client_id, reason, 0);
        return;
    }
    uint32_t delay = upk__mqtt_backoff_refused(&c->backoff_ms, &c->opts);
    upk__mqtt_log_refused(where, c->username, c->client_id, reason, delay);
    if (uv_timer_start(&c->timer, on_timer, delay, 0) != 0)
        upk_error("mqtt: cannot arm reconnect timer client=%s", c->client_id);
}

static void conn_end(upk_mqtt *c, upk_err err, const char *why, int reason);

/* The connection (or the attempt) is over: fail what was pending, schedule
 * the next attempt and tell the user. */
static void conn_lost(upk_mqtt *c, upk_err err, const char *why)
{
    conn_end(c, err, why, 0);
}

/* conn_lost, with the CONNACK reason of a refused login. */
static void conn_end(upk_mqtt *c, upk_err err, const char *why, int reason)
{
    if (c->state != ST_CONNECTING && c->state != ST_CONNECTED)
        return;
    bool was_connected = c->state == ST_CONNECTED;
    if (c->cn != NULL) {
        conn *cn = c->cn;
        c->cn = NULL;
        conn_close(cn, NULL);
    }
    (void)uv_timer_stop(&c->ka);
    (void)uv_timer_stop(&c->timer);
    if (was_connected) {
        upk_warn("mqtt: connection lost client=%s (%s)", c->client_id, why);
        schedule_reconnect(c);
    } else if (err == UPK_E_AUTH_FAILED) {
        schedule_refused(c, reason);
    } else {
        upk_warn("mqtt: connect failed client=%s error=%s (%s)", c->client_id, upk_err_str(err),
                 why);
        schedule_reconnect(c);
    }
    fail_pending(c, UPK_E_CONN, true);
    if (c->opts.on_disconnect != NULL && c->state == ST_BACKOFF)
        c->opts.on_disconnect(c, err, c->opts.userdata);
}

/* ---- outbound packets */

static upk_err send_connect(upk_mqtt *c)
{
    size_t cid = strlen(c->client_id);
    size_t props = 0;
    bool expiry = !c->opts.clean_start && c->opts.session_expiry_s > 0;
    if (expiry)
        props += 5;
    if (c->opts.max_packet > 0)
        props += 5;
    size_t body = 10 + varint_len(props) + props + 2 + cid;
    uint8_t flags = c->opts.clean_start ? 0x02 : 0x00;
    if (c->will_topic != NULL) {
        body += 1 + 2 + strlen(c->will_topic) + 2 + c->opts.will_len;
        flags |= 0x04 | (uint8_t)((c->opts.will_qos & 3) << 3);
        if (c->opts.will_retained)
            flags |= 0x20;
    }
    if (c->username != NULL) {
        body += 2 + strlen(c->username);
        flags |= 0x80;
    }
    if (c->password != NULL) {
        body += 2 + strlen(c->password);
        flags |= 0x40;
    }
    size_t n;
    uint8_t *p, *b = pkt_alloc(P_CONNECT << 4, body, &n, &p);
    if (b == NULL)
        return UPK_E_NOMEM;
    p = put_bin(p, "MQTT", 4);
    *p++ = 5;
    *p++ = flags;
    p = put_u16(p, (uint16_t)c->opts.keepalive_s);
    p = put_varint(p, props);
    if (expiry) {
        *p++ = 0x11;
        p = put_u32(p, c->opts.session_expiry_s);
    }
    if (c->opts.max_packet > 0) {
        *p++ = 0x27; /* maximum packet size */
        p = put_u32(p, c->opts.max_packet);
    }
    p = put_bin(p, c->client_id, cid);
    if (c->will_topic != NULL) {
        *p++ = 0; /* will properties */
        p = put_bin(p, c->will_topic, strlen(c->will_topic));
        p = put_bin(p, c->will_payload, c->opts.will_len);
    }
    if (c->username != NULL)
        p = put_bin(p, c->username, strlen(c->username));
    if (c->password != NULL)
        p = put_bin(p, c->password, strlen(c->password));
    return send_bytes(c, b, n, 0);
}

static uint16_t take_pid(upk_mqtt *c)
{
    /* At most 64K publishes are ever written and unacknowledged at once
     * (inflight_max <= 65535), and the subscribe ids share the space; a
     * plain counter that skips 0 is enough as long as ids in flight are
     * never reused: the in-flight list is short, check it. */
    for (;;) {
        uint16_t id = c->next_pid++;
        if (c->next_pid == 0)
            c->next_pid = 1;
        if (id == 0)
            continue;
        bool used = false;
        for (struct pub *p = c->w_head; p != NULL && !used; p = p->next)
            used = p->pid == id;
        if (!used)
            return id;
    }
}

/* Writes queued publishes while in-flight slots are free. */
static void drain(upk_mqtt *c)
{
    while (c->state == ST_CONNECTED && c->q_head != NULL &&
           (c->q_head->qos == 0 || c->inflight < c->inflight_max)) {
        struct pub *p = c->q_head;
        c->q_head = p->next;
        if (c->q_head == NULL)
            c->q_tail = NULL;
        c->queued--;
        if (p->qos > 0) {
            p->pid = take_pid(c);
            (void)put_u16(p->pkt + p->pid_off, p->pid);
            c->inflight++;
        }
        uint8_t *pkt = p->pkt;
        size_t len = p->pkt_len;
        p->pkt = NULL;
        bool tracked = p->qos > 0 || p->done != NULL;
        if (tracked) {
            p->next = NULL;
            if (c->w_tail != NULL)
                c->w_tail->next = p;
            else
                c->w_head = p;
            c->w_tail = p;
        }
        uint64_t id = p->qos == 0 && p->done != NULL ? p->id : 0;
        if (!tracked)
            free(p);
        if (send_bytes(c, pkt, len, id) != UPK_OK)
            return; /* the connection is gone; everything was failed */
    }
}

/* ---- inbound packets */

static bool get_varint(const uint8_t **p, const uint8_t *end, size_t *out)
{
    size_t v = 0, mul = 1;
    for (int i = 0; i < 4; i++) {
        if (*p >= end)
            return false;
        uint8_t b = *(*p)++;
        v += (size_t)(b & 0x7f) * mul;
        if ((b & 0x80) == 0) {
            *out = v;
            return true;
        }
        mul *= 128;
    }
    return false;
}

static bool get_u16(const uint8_t **p, const uint8_t *end, uint16_t *out)
{
    if (end - *p < 2)
        return false;
    *out = (uint16_t)(((*p)[0] << 8) | (*p)[1]);
    *p += 2;
    return true;
}

static bool get_bin(const uint8_t **p, const uint8_t *end, const uint8_t **s, size_t *n)
{
    uint16_t len;
    if (!get_u16(p, end, &len) || end - *p < len)
        return false;
    *s = *p;
    *n = len;
    *p += len;
    return true;
}

/* Walks an MQTT 5 property block, calling on_user for user properties and
 * on_u16 for two-byte integers. False on a malformed or unknown property. */
struct props_seen {
    char sender[UPK_MQTT_SENDER_MAX + 1];
    char auth[UPK_MQTT_AUTH_MAX + 1];
    bool has_receive_max, has_keepalive;
    uint16_t receive_max, keepalive;
};

static bool parse_props(const uint8_t **pp, const uint8_t *end, struct props_seen *seen)
{
    size_t len;
    if (!get_varint(pp, end, &len) || (size_t)(end - *pp) < len)
        return false;
    const uint8_t *p = *pp, *pe = p + len;
    *pp = pe;
    while (p < pe) {
        uint8_t id = *p++;
        const uint8_t *s, *v;
        size_t sn, vn, vi;
        uint16_t u16;
        switch (id) {
        case 0x01:
        case 0x17:
        case 0x19:
        case 0x24:
        case 0x25:
        case 0x28:
        case 0x29:
        case 0x2A:
            if (p >= pe)
                return false;
            p++;
            break;
        case 0x13:
        case 0x21:
        case 0x22:
        case 0x23:
            if (!get_u16(&p, pe, &u16))
                return false;
            if (id == 0x21) {
                seen->has_receive_max = true;
                seen->receive_max = u16;
            } else if (id == 0x13) {
                seen->has_keepalive = true;
                seen->keepalive = u16;
            }
            break;
        case 0x02:
        case 0x11:
        case 0x18:
        case 0x27:
            if (pe - p < 4)
                return false;
            p += 4;
            break;
        case 0x0B:
            if (!get_varint(&p, pe, &vi))
                return false;
            break;
        case 0x03:
        case 0x08:
        case 0x09:
        case 0x12:
        case 0x15:
        case 0x16:
        case 0x1A:
        case 0x1C:
        case 0x1F:
            if (!get_bin(&p, pe, &s, &sn))
                return false;
            break;
        case 0x26:
            if (!get_bin(&p, pe, &s, &sn) || !get_bin(&p, pe, &v, &vn))
                return false;
            if (sn == strlen(UPK_MQTT_SENDER_PROP) && memcmp(s, UPK_MQTT_SENDER_PROP, sn) == 0) {
                /* As mqtt.c: an oversized or NUL-bearing value is no sender. */
                if (vn > UPK_MQTT_SENDER_MAX || memchr(v, '\0', vn) != NULL) {
                    seen->sender[0] = '\0';
                } else {
                    memcpy(seen->sender, v, vn);
                    seen->sender[vn] = '\0';
                }
            } else if (sn == strlen(UPK_MQTT_AUTH_PROP) && memcmp(s, UPK_MQTT_AUTH_PROP, sn) == 0) {
                upk__mqtt_auth_take(v, vn, seen->auth);
            }
            break;
        default:
            return false;
        }
    }
    return true;
}

static upk_err reason_to_err(uint8_t rc)
{
    switch (rc) {
    case 0x85: /* client identifier not valid */
    case 0x86: /* bad user name or password */
    case 0x87: /* not authorized */
    case 0x8A: /* banned */
    case 0x8C: /* bad authentication method */
        return UPK_E_AUTH_FAILED;
    default:
        return UPK_E_CONN;
    }
}

static void on_ka(uv_timer_t *t);

static bool handle_connack(upk_mqtt *c, const uint8_t *p, const uint8_t *end)
{
    if (c->state != ST_CONNECTING || end - p < 2)
        return false;
    uint8_t rc = p[1];
    p += 2;
    struct props_seen seen = {0};
    if (p < end && !parse_props(&p, end, &seen))
        return false;
    if (rc >= 0x80) {
        char why[48];
        (void)snprintf(why, sizeof(why), "refused with reason 0x%02x", rc);
        conn_end(c, reason_to_err(rc), why, rc);
        return true;
    }
    (void)uv_timer_stop(&c->timer);
    c->state = ST_CONNECTED;
    c->backoff_ms = c->opts.reconnect_min_ms;
    c->inflight_max = c->opts.max_inflight;
    if (seen.has_receive_max && seen.receive_max > 0 && seen.receive_max < c->inflight_max)
        c->inflight_max = seen.receive_max;
    c->keepalive_ms = (uint32_t)c->opts.keepalive_s * 1000u;
    if (seen.has_keepalive)
        c->keepalive_ms = (uint32_t)seen.keepalive * 1000u;
    c->ping_sent = 0;
    if (c->keepalive_ms > 0 &&
        uv_timer_start(&c->ka, on_ka, c->keepalive_ms / 2, c->keepalive_ms / 2) != 0)
        upk_error("mqtt: cannot arm keepalive timer client=%s", c->client_id);
    upk_debug("mqtt: connected client=%s", c->client_id);
    if (c->opts.on_connect != NULL)
        c->opts.on_connect(c, c->opts.userdata);
    drain(c);
    return true;
}

static bool handle_publish(upk_mqtt *c, uint8_t flags, const uint8_t *p, const uint8_t *end)
{
    int qos = (flags >> 1) & 3;
    const uint8_t *topic;
    size_t tlen;
    uint16_t pid = 0;
    if (qos == 3 || !get_bin(&p, end, &topic, &tlen) || tlen == 0)
        return false;
    if (qos > 0 && !get_u16(&p, end, &pid))
        return false;
    struct props_seen seen = {0};
    if (!parse_props(&p, end, &seen))
        return false;
    if (memchr(topic, '\0', tlen) != NULL)
        return false;
    /* The topic must be NUL-terminated for the callback: copy it (it sits
     * between length-prefixed fields, so no byte after it is ours). */
    char tbuf[256];
    char *t = tlen < sizeof(tbuf) ? tbuf : malloc(tlen + 1);
    if (t == NULL)
        return false;
    memcpy(t, topic, tlen);
    t[tlen] = '\0';
    if (c->opts.on_message != NULL) {
        upk_mqtt_msg m = {
            .topic = t,
            .topic_len = tlen,
            .payload = end > p ? p : NULL,
            .len = (size_t)(end - p),
            .qos = qos,
            .retained = (flags & 1) != 0,
            .sender = seen.sender,
            .auth = seen.auth,
        };
        c->opts.on_message(c, &m, c->opts.userdata);
    }
    if (t != tbuf)
        free(t);
    if (qos > 0 && c->state == ST_CONNECTED) {
        uint8_t ack[4] = {(uint8_t)((qos == 1 ? P_PUBACK : P_PUBREC) << 4), 2, (uint8_t)(pid >> 8),
                          (uint8_t)pid};
        if (send_small(c, ack, sizeof(ack)) != UPK_OK)
            return true; /* connection handled */
    }
    return true;
}

static bool handle_puback(upk_mqtt *c, const uint8_t *p, const uint8_t *end)
{
    uint16_t pid;
    if (!get_u16(&p, end, &pid))
        return false;
    uint8_t rc = p < end ? *p : 0;
    struct pub **pp = &c->w_head, *prev = NULL;
    while (*pp != NULL && ((*pp)->qos == 0 || (*pp)->pid != pid)) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    struct pub *pub = *pp;
    if (pub == NULL)
        return true; /* not ours (any more): ignore, as Paho does */
    *pp = pub->next;
    if (c->w_tail == pub)
        c->w_tail = prev;
    c->inflight--;
    if (pub->done != NULL)
        pub->done(c, rc >= 0x80 ? UPK_E_DENIED : UPK_OK, pub->cb_data);
    free(pub);
    drain(c);
    return true;
}

/* One complete packet. False: protocol error (the connection is dropped). */
static bool handle_packet(upk_mqtt *c, uint8_t first, const uint8_t *p, const uint8_t *end)
{
    switch (first >> 4) {
    case P_CONNACK:
        return handle_connack(c, p, end);
    case P_PUBLISH:
        return c->state == ST_CONNECTED && handle_publish(c, first & 0x0f, p, end);
    case P_PUBACK:
        return c->state == ST_CONNECTED && handle_puback(c, p, end);
    case P_PUBREL: {
        uint16_t pid;
        if (c->state != ST_CONNECTED || !get_u16(&p, end, &pid))
            return false;
        uint8_t comp[4] = {P_PUBCOMP << 4, 2, (uint8_t)(pid >> 8), (uint8_t)pid};
        (void)send_small(c, comp, sizeof(comp));
        return true;
    }
    case P_SUBACK: {
        uint16_t pid;
        struct props_seen seen = {0};
        if (!get_u16(&p, end, &pid) || !parse_props(&p, end, &seen))
            return false;
        for (; p < end; p++)
            if (*p >= 0x80)
                upk_warn("mqtt: subscribe refused client=%s reason=0x%02x", c->client_id, *p);
        return true;
    }
    case P_PINGRESP:
        c->ping_sent = 0;
        return true;
    case P_DISCONNECT: {
        char why[48];
        (void)snprintf(why, sizeof(why), "broker disconnected, reason 0x%02x", p < end ? *p : 0);
        conn_lost(c, UPK_E_CONN, why);
        return true;
    }
    default:
        return false;
    }
}

/* Reads land in one buffer per thread (the loop's callbacks never nest);
 * only a packet cut in half by the socket is copied to its connection, so
 * ten thousand idle connections hold no read buffers. */
static _Thread_local uint8_t shared_rbuf[READ_CHUNK];

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)hint;
    conn *cn = h->data;
    if (cn->rlen == 0) {
        *buf = uv_buf_init((char *)shared_rbuf, sizeof(shared_rbuf));
        return;
    }
    if (cn->rcap - cn->rlen < READ_CHUNK) {
        size_t cap = cn->rcap * 2;
        while (cap - cn->rlen < READ_CHUNK)
            cap *= 2;
        uint8_t *nb = realloc(cn->rbuf, cap);
        if (nb == NULL) {
            *buf = uv_buf_init(NULL, 0); /* libuv reports UV_ENOBUFS */
            return;
        }
        cn->rbuf = nb;
        cn->rcap = cap;
    }
    *buf = uv_buf_init((char *)cn->rbuf + cn->rlen, (unsigned)(cn->rcap - cn->rlen));
}

/* Handles every complete packet in data[0, len); returns how many bytes
 * were consumed, or SIZE_MAX when the connection was lost or closed. */
static size_t parse_packets(upk_mqtt *c, conn *cn, const uint8_t *data, size_t len)
{
    size_t off = 0;
    while (len - off >= 2) {
        const uint8_t *p = data + off, *end = data + len;
        const uint8_t *q = p + 1;
        size_t body;
        if (!get_varint(&q, end, &body)) {
            if (end - p >= 5) {
                conn_lost(c, UPK_E_CONN, "malformed packet length");
                return SIZE_MAX;
            }
            break;
        }
        /* Judged from the header alone: a packet over the limit is never
         * buffered (MQTT 5 counts the whole packet, header included). */
        size_t limit = c->opts.max_packet > 0 ? c->opts.max_packet : MAX_PACKET;
        if (body > limit || (size_t)(q - p) + body > limit) {
            upk_warn("mqtt: refused a packet of %zu bytes over the limit of %zu client=%s",
                     (size_t)(q - p) + body, limit, c->client_id);
            conn_lost(c, UPK_E_CONN, "packet too large");
            return SIZE_MAX;
        }
        if ((size_t)(end - q) < body)
            break;
        off = (size_t)(q - data) + body;
        if (!handle_packet(c, p[0], q, q + body)) {
            if (c->cn == cn)
                conn_lost(c, UPK_E_CONN, "protocol error");
            return SIZE_MAX;
        }
        /* The packet may have called back into the user, who may have
         * closed the client, or its write may have failed. */
        if (c->cn != cn || cn->closing || c->state != ST_CONNECTED)
            return c->state == ST_CONNECTED || c->state == ST_CONNECTING ? off : SIZE_MAX;
    }
    return off;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    conn *cn = s->data;
    upk_mqtt *c = cn->c;
    if (nread == 0 || cn->closing || c == NULL)
        return;
    if (nread < 0) {
        conn_lost(c, UPK_E_CONN,
                  nread == UV_EOF ? "closed by the broker" : uv_strerror((int)nread));
        return;
    }
    bool shared = (uint8_t *)buf->base == shared_rbuf;
    const uint8_t *data = shared ? shared_rbuf : cn->rbuf;
    size_t len = shared ? (size_t)nread : cn->rlen + (size_t)nread;
    size_t off = parse_packets(c, cn, data, len);
    if (off == SIZE_MAX || c->cn != cn || cn->closing)
        return;
    size_t left = len - off;
    if (shared) {
        if (left == 0)
            return;
        if (cn->rcap < left) {
            size_t cap = left > READ_CHUNK ? left : READ_CHUNK;
            uint8_t *nb = realloc(cn->rbuf, cap);
            if (nb == NULL) {
                conn_lost(c, UPK_E_NOMEM, "out of memory");
                return;
            }
            cn->rbuf = nb;
            cn->rcap = cap;
        }
        memcpy(cn->rbuf, data + off, left);
        cn->rlen = left;
        return;
    }
    if (left == 0) {
        free(cn->rbuf);
        cn->rbuf = NULL;
        cn->rlen = cn->rcap = 0;
        return;
    }
    memmove(cn->rbuf, cn->rbuf + off, left);
    cn->rlen = left;
}

static void on_ka(uv_timer_t *t)
{
    upk_mqtt *c = t->data;
    if (c->state != ST_CONNECTED)
        return;
    uint64_t now = uv_now(c->loop);
    if (c->ping_sent != 0) {
        if (now - c->ping_sent >= c->keepalive_ms)
            conn_lost(c, UPK_E_CONN, "no answer to a keepalive ping");
        return;
    }
    if (now - c->last_tx >= c->keepalive_ms / 2) {
        static const uint8_t ping[2] = {P_PINGREQ << 4, 0};
        c->ping_sent = now > 0 ? now : 1;
        (void)send_small(c, ping, sizeof(ping));
    }
}

static void on_tcp_connect(uv_connect_t *req, int status)
{
    conn *cn = req->data;
    upk_mqtt *c = cn->c;
    if (cn->closing || c == NULL)
        return;
    if (status != 0) {
        conn_lost(c, UPK_E_CONN, uv_strerror(status));
        return;
    }
    (void)uv_tcp_nodelay(&cn->tcp, 1);
    int rc = uv_read_start((uv_stream_t *)&cn->tcp, on_alloc, on_read);
    if (rc != 0) {
        conn_lost(c, UPK_E_CONN, uv_strerror(rc));
        return;
    }
    if (send_connect(c) != UPK_OK && c->cn == cn)
        conn_lost(c, UPK_E_NOMEM, "out of memory");
}

static void tcp_connect(upk_mqtt *c, conn *cn, const struct sockaddr *sa)
{
    int rc = uv_tcp_init(c->loop, &cn->tcp);
    if (rc == 0) {
        cn->tcp_init = true;
        cn->tcp.data = cn;
        cn->creq.data = cn;
        rc = uv_tcp_connect(&cn->creq, &cn->tcp, sa, on_tcp_connect);
    }
    if (rc != 0)
        conn_lost(c, UPK_E_CONN, uv_strerror(rc));
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    conn *cn = req->data;
    upk_mqtt *c = cn->c;
    cn->resolving = false;
    if (cn->closing) {
        uv_freeaddrinfo(res);
        upk_mqtt *owner = cn->c;
        free(cn->rbuf);
        free(cn);
        if (owner != NULL)
            handle_closed(owner);
        return;
    }
    if (status != 0 || res == NULL) {
        uv_freeaddrinfo(res);
        conn_lost(c, UPK_E_CONN, status != 0 ? uv_strerror(status) : "no address");
        return;
    }
    tcp_connect(c, cn, res->ai_addr);
    uv_freeaddrinfo(res);
}

static void start_connect(upk_mqtt *c)
{
    conn *cn = calloc(1, sizeof(*cn));
    c->state = ST_CONNECTING;
    c->broken = false;
    if (cn == NULL) {
        conn_lost(c, UPK_E_NOMEM, "out of memory");
        return;
    }
    cn->c = c;
    c->cn = cn;
    if (uv_timer_start(&c->timer, on_timer, CONNECT_TIMEOUT_MS, 0) != 0)
        upk_error("mqtt: cannot arm connect timer client=%s", c->client_id);
    struct sockaddr_in a4;
    struct sockaddr_in6 a6;
    if (uv_ip4_addr(c->host, c->port, &a4) == 0) {
        tcp_connect(c, cn, (const struct sockaddr *)&a4);
        return;
    }
    if (uv_ip6_addr(c->host, c->port, &a6) == 0) {
        tcp_connect(c, cn, (const struct sockaddr *)&a6);
        return;
    }
    char port[8];
    (void)snprintf(port, sizeof(port), "%d", c->port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    cn->gai.data = cn;
    int rc = uv_getaddrinfo(c->loop, &cn->gai, on_resolved, c->host, port, &hints);
    if (rc != 0) {
        conn_lost(c, UPK_E_CONN, uv_strerror(rc));
        return;
    }
    cn->resolving = true;
}

/* ---- the contract */

/* tcp://host:port or mqtt://host:port; [v6]:port allowed. */
static upk_err parse_url(const char *url, char **host, int *port)
{
    const char *rest;
    if (strncmp(url, "tcp://", 6) == 0)
        rest = url + 6;
    else if (strncmp(url, "mqtt://", 7) == 0)
        rest = url + 7;
    else
        return UPK_E_CONFIG_INVALID;
    const char *colon = strrchr(rest, ':');
    const char *h = rest, *he = colon;
    if (colon == NULL || colon == rest)
        return UPK_E_CONFIG_INVALID;
    if (*h == '[') {
        if (he[-1] != ']')
            return UPK_E_CONFIG_INVALID;
        h++;
        he--;
    }
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (*end != '\0' || end == colon + 1 || p <= 0 || p > 65535 || he <= h)
        return UPK_E_CONFIG_INVALID;
    *host = strndup(h, (size_t)(he - h));
    if (*host == NULL)
        return UPK_E_NOMEM;
    *port = (int)p;
    return UPK_OK;
}

upk_err upk_mqtt_new(uv_loop_t *loop, const upk_mqtt_opts *opts, upk_mqtt **out)
{
    if (loop == NULL || opts == NULL || out == NULL || opts->url == NULL ||
        opts->client_id == NULL || opts->will_len > 65535 || strlen(opts->client_id) > 65535 ||
        (opts->username != NULL && strlen(opts->username) > 65535) ||
        (opts->password != NULL && strlen(opts->password) > 65535) ||
        (opts->will_topic != NULL && strlen(opts->will_topic) > 65535))
        return UPK_E_INVALID_ARG;
    upk_mqtt *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return UPK_E_NOMEM;
    upk_err err = parse_url(opts->url, &c->host, &c->port);
    if (err != UPK_OK) {
        if (err == UPK_E_CONFIG_INVALID)
            upk_error("mqtt: %s: this client speaks tcp://host:port only", opts->url);
        free(c);
        return err;
    }
    bool ok = true;
    c->loop = loop;
    c->opts = *opts;
    c->client_id = upk__mqtt_strdup(opts->client_id, &ok);
    c->username = upk__mqtt_strdup(opts->username, &ok);
    c->password = upk__mqtt_strdup(opts->password, &ok);
    c->will_topic = upk__mqtt_strdup(opts->will_topic, &ok);
    if (opts->will_topic != NULL) {
        c->will_payload = malloc(opts->will_len + 1);
        if (c->will_payload == NULL)
            ok = false;
        else if (opts->will_len > 0)
            memcpy(c->will_payload, opts->will_payload, opts->will_len);
    }
    c->opts.url = NULL;
    upk__mqtt_opts_normalize(&c->opts);
    c->backoff_ms = c->opts.reconnect_min_ms;
    c->next_pub_id = 1;
    c->next_pid = 1;
    if (!ok || uv_timer_init(loop, &c->timer) != 0) {
        free_client(c);
        return ok ? UPK_E_INTERNAL : UPK_E_NOMEM;
    }
    c->timer.data = c;
    if (uv_timer_init(loop, &c->ka) != 0) {
        /* The first timer is the loop's now: it frees c once closed. */
        c->handles_open = 1;
        c->state = ST_CLOSING;
        uv_close((uv_handle_t *)&c->timer, on_timer_closed);
        return UPK_E_INTERNAL;
    }
    c->ka.data = c;
    c->handles_open = 2;
    c->state = ST_IDLE;
    *out = c;
    return UPK_OK;
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
    size_t flen = strlen(filter);
    if (flen == 0 || flen > 65535)
        return UPK_E_INVALID_ARG;
    if (c->state != ST_CONNECTED)
        return UPK_E_CONN;
    size_t body = 2 + 1 + 2 + flen + 1, n;
    uint8_t *p, *b = pkt_alloc((P_SUBSCRIBE << 4) | 0x02, body, &n, &p);
    if (b == NULL)
        return UPK_E_NOMEM;
    p = put_u16(p, take_pid(c));
    *p++ = 0; /* properties */
    p = put_bin(p, filter, flen);
    *p = (uint8_t)qos; /* no-local and retain-as-published off */
    return send_bytes(c, b, n, 0);
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
        qos > 1 || !upk__mqtt_auth_arg_valid(auth))
        return UPK_E_INVALID_ARG;
    size_t tlen = strlen(topic);
    if (tlen == 0 || tlen > 65535 || strpbrk(topic, "+#") != NULL)
        return UPK_E_INVALID_ARG;
    /* One user property (0x26): name and value, each a two-byte length and
     * the bytes; the block's length fits one varint byte (< 128). */
    size_t alen = auth != NULL ? strlen(auth) : 0;
    size_t plen = alen > 0 ? 1 + 2 + strlen(UPK_MQTT_AUTH_PROP) + 2 + alen : 0;
    size_t body = 2 + tlen + (qos > 0 ? 2 : 0) + 1 + plen + len;
    if (body > 268435455u)
        return UPK_E_INVALID_ARG;
    if (c->state != ST_CONNECTED)
        return UPK_E_CONN;
    if (c->queued >= c->opts.max_buffered)
        return UPK_E_BUSY;
    struct pub *pub = calloc(1, sizeof(*pub));
    if (pub == NULL)
        return UPK_E_NOMEM;
    uint8_t *p;
    pub->pkt = pkt_alloc((uint8_t)((P_PUBLISH << 4) | (qos << 1) | (retain ? 1 : 0)), body,
                         &pub->pkt_len, &p);
    if (pub->pkt == NULL) {
        free(pub);
        return UPK_E_NOMEM;
    }
    p = put_bin(p, topic, tlen);
    pub->pid_off = (size_t)(p - pub->pkt);
    if (qos > 0)
        p = put_u16(p, 0); /* the packet id, set when written */
    *p++ = (uint8_t)plen;  /* properties */
    if (plen > 0) {
        *p++ = 0x26;
        p = put_bin(p, UPK_MQTT_AUTH_PROP, strlen(UPK_MQTT_AUTH_PROP));
        p = put_bin(p, auth, alen);
    }
    if (len > 0)
        memcpy(p, payload, len);
    pub->id = c->next_pub_id++;
    pub->qos = qos;
    pub->done = done;
    pub->cb_data = cb_data;
    if (c->q_tail != NULL)
        c->q_tail->next = pub;
    else
        c->q_head = pub;
    c->q_tail = pub;
    c->queued++;
    drain(c);
    return UPK_OK;
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    (void)status;
    conn *cn = req->data;
    upk_mqtt *c = cn->c;
    if (c == NULL || c->cn != cn)
        return; /* the close timer was first */
    (void)uv_timer_stop(&c->timer);
    finish_close(c);
}

void upk_mqtt_close(upk_mqtt *c, void (*closed)(void *userdata), void *userdata)
{
    if (c == NULL || c->state == ST_CLOSING)
        return;
    enum conn_state was = c->state;
    c->closed = closed;
    c->closed_data = userdata;
    c->state = ST_CLOSING;
    (void)uv_timer_stop(&c->timer);
    /* Closing first: pending publishes are dropped without callbacks. */
    fail_pending(c, UPK_E_CANCELLED, false);
    uv_close((uv_handle_t *)&c->ka, on_timer_closed);
    conn *cn = c->cn;
    if (cn != NULL && was == ST_CONNECTED && !c->broken) {
        /* DISCONNECT with reason 0 (the will is not sent), flushed by a
         * shutdown; the close timer bounds the wait. */
        (void)uv_read_stop((uv_stream_t *)&cn->tcp);
        struct wreq *w = malloc(sizeof(*w) + 2);
        if (w != NULL) {
            w->data[0] = P_DISCONNECT << 4;
            w->data[1] = 0;
            w->cn = cn;
            w->pub_id = 0;
            w->len = 2;
            uv_buf_t buf = uv_buf_init((char *)w->data, 2);
            if (uv_write(&w->req, (uv_stream_t *)&cn->tcp, &buf, 1, on_write) != 0)
                free(w);
        }
        cn->sreq.data = cn;
        if (uv_shutdown(&cn->sreq, (uv_stream_t *)&cn->tcp, on_shutdown) == 0 &&
            uv_timer_start(&c->timer, on_timer, CLOSE_TIMEOUT_MS, 0) == 0)
            return; /* finish_close runs when flushed or timed out */
    }
    finish_close(c);
}
