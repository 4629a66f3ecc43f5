/* The simulator's libuv MQTT client (mqtt_uv.c) against a scripted broker on
 * the same loop: what mosquitto never sends on its own. Packets cut into
 * single bytes and several in one read, MQTT 5 properties of every shape,
 * the broker's receive maximum, PUBACK refusals, a refused CONNACK, garbage
 * and an unanswered keepalive (each a lost connection that fails what was
 * pending and reconnects), and close in the middle of a connect. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "upkeep/mqtt.h"

/* ---- a scripted broker: one listener, the latest accepted connection */

struct fake {
    uv_loop_t *loop;
    uv_tcp_t srv;
    uv_tcp_t *cli;
    int port;
    uint8_t rx[65536];
    size_t rxlen;
    int connects;       /* CONNECT packets seen */
    int publishes;      /* PUBLISH packets seen */
    int pubacks;        /* PUBACK packets seen */
    int pings;          /* PINGREQ seen */
    uint16_t pids[64];  /* packet ids of PUBLISHes seen */
    uint16_t last_ack;  /* packet id of the last PUBACK */
    char client_id[64]; /* of the last CONNECT */
    char username[64], password[64];
    int keepalive;
    uint8_t props[32]; /* the CONNECT's property block */
    size_t props_len;
    /* What to answer a CONNECT with (raw bytes); length 0: nothing. */
    uint8_t connack[64];
    size_t connack_len;
    bool answer_ping;
};

static void fake_send(struct fake *f, const void *bytes, size_t n)
{
    assert_non_null(f->cli);
    uv_buf_t b = uv_buf_init((char *)bytes, (unsigned)n);
    assert_int_equal(uv_try_write((uv_stream_t *)f->cli, &b, 1), (int)n);
}

/* Sends bytes one at a time, each its own write (and, on loopback with
 * NODELAY, mostly its own read on the other side). */
static void fake_send_bytewise(struct fake *f, const uint8_t *bytes, size_t n)
{
    for (size_t i = 0; i < n; i++)
        fake_send(f, bytes + i, 1);
}

static size_t str_field(const uint8_t *p, char *out, size_t cap)
{
    size_t n = ((size_t)p[0] << 8) | p[1];
    size_t m = n < cap - 1 ? n : cap - 1;
    memcpy(out, p + 2, m);
    out[m] = '\0';
    return 2 + n;
}

static void fake_packet(struct fake *f, uint8_t first, const uint8_t *p, size_t n)
{
    switch (first >> 4) {
    case 1: { /* CONNECT */
        f->connects++;
        assert_true(n >= 10);
        assert_memory_equal(p, "\0\4MQTT\5", 7);
        uint8_t flags = p[7];
        f->keepalive = (p[8] << 8) | p[9];
        size_t off = 10;
        size_t plen = p[off]; /* short property blocks only */
        assert_true(plen <= sizeof(f->props));
        memcpy(f->props, p + off + 1, plen);
        f->props_len = plen;
        off += 1 + plen;
        off += str_field(p + off, f->client_id, sizeof(f->client_id));
        if (flags & 0x04) {
            off += 1 + p[off];
            char skip[256];
            off += str_field(p + off, skip, sizeof(skip));
            off += str_field(p + off, skip, sizeof(skip));
        }
        if (flags & 0x80)
            off += str_field(p + off, f->username, sizeof(f->username));
        if (flags & 0x40)
            off += str_field(p + off, f->password, sizeof(f->password));
        assert_int_equal(off, n);
        if (f->connack_len > 0)
            fake_send(f, f->connack, f->connack_len);
        break;
    }
    case 3: /* PUBLISH, QoS 1 */
        assert_int_equal((first >> 1) & 3, 1);
        {
            size_t tlen = ((size_t)p[0] << 8) | p[1];
            assert_true(f->publishes < 64);
            f->pids[f->publishes++] = (uint16_t)((p[2 + tlen] << 8) | p[3 + tlen]);
        }
        break;
    case 4: /* PUBACK */
        f->pubacks++;
        f->last_ack = (uint16_t)((p[0] << 8) | p[1]);
        break;
    case 8: /* SUBSCRIBE */
        break;
    case 12: /* PINGREQ */
        f->pings++;
        if (f->answer_ping) {
            static const uint8_t resp[2] = {0xD0, 0};
            fake_send(f, resp, 2);
        }
        break;
    case 14: /* DISCONNECT */
        break;
    default:
        fail_msg("unexpected packet type %d", first >> 4);
    }
}

static void fake_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)hint;
    struct fake *f = h->data;
    *buf = uv_buf_init((char *)f->rx + f->rxlen, (unsigned)(sizeof(f->rx) - f->rxlen));
}

static void on_cli_closed(uv_handle_t *h)
{
    free(h);
}

static void fake_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    (void)buf;
    struct fake *f = s->data;
    if (n < 0) {
        if ((uv_tcp_t *)s == f->cli)
            f->cli = NULL;
        uv_close((uv_handle_t *)s, on_cli_closed);
        return;
    }
    f->rxlen += (size_t)n;
    for (;;) {
        if (f->rxlen < 2)
            break;
        size_t body = 0, mul = 1, i = 1;
        while (i < f->rxlen && (f->rx[i] & 0x80)) {
            body += (size_t)(f->rx[i] & 0x7f) * mul;
            mul *= 128;
            i++;
        }
        if (i >= f->rxlen)
            break;
        body += (size_t)(f->rx[i] & 0x7f) * mul;
        i++;
        if (f->rxlen - i < body)
            break;
        fake_packet(f, f->rx[0], f->rx + i, body);
        memmove(f->rx, f->rx + i + body, f->rxlen - i - body);
        f->rxlen -= i + body;
    }
}

/* Drops the current connection (a broker that goes away). */
static void fake_drop(struct fake *f)
{
    if (f->cli != NULL) {
        uv_close((uv_handle_t *)f->cli, on_cli_closed);
        f->cli = NULL;
    }
}

static void fake_accept(uv_stream_t *srv, int status)
{
    assert_int_equal(status, 0);
    struct fake *f = srv->data;
    uv_tcp_t *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    assert_int_equal(uv_tcp_init(f->loop, c), 0);
    assert_int_equal(uv_accept(srv, (uv_stream_t *)c), 0);
    fake_drop(f); /* one client at a time: the newest */
    c->data = f;
    f->cli = c;
    f->rxlen = 0;
    assert_int_equal(uv_read_start((uv_stream_t *)c, fake_alloc, fake_read), 0);
}

static void fake_init(struct fake *f, uv_loop_t *loop)
{
    memset(f, 0, sizeof(*f));
    f->loop = loop;
    f->answer_ping = true;
    static const uint8_t ok[] = {0x20, 3, 0, 0, 0};
    memcpy(f->connack, ok, sizeof(ok));
    f->connack_len = sizeof(ok);
    assert_int_equal(uv_tcp_init(loop, &f->srv), 0);
    f->srv.data = f;
    struct sockaddr_in a;
    assert_int_equal(uv_ip4_addr("127.0.0.1", 0, &a), 0);
    assert_int_equal(uv_tcp_bind(&f->srv, (const struct sockaddr *)&a, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&f->srv, 8, fake_accept), 0);
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    assert_int_equal(uv_tcp_getsockname(&f->srv, (struct sockaddr *)&ss, &len), 0);
    f->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static void fake_close(struct fake *f)
{
    fake_drop(f);
    uv_close((uv_handle_t *)&f->srv, NULL);
}

/* ---- the client side */

struct obs {
    int connects, disconnects, messages, closed;
    upk_err last_disc;
    char sender[UPK_MQTT_SENDER_MAX + 1];
    char auth[UPK_MQTT_AUTH_MAX + 1];
    char topic[64];
    uint8_t payload[64];
    size_t len;
    int qos;
    bool retained;
    int done_ok, done_denied, done_conn;
    int done_order[16];
    int ndone;
};

static void o_connect(upk_mqtt *c, void *u)
{
    (void)c;
    ((struct obs *)u)->connects++;
}

static void o_disconnect(upk_mqtt *c, upk_err err, void *u)
{
    (void)c;
    struct obs *o = u;
    o->disconnects++;
    o->last_disc = err;
}

static void o_message(upk_mqtt *c, const upk_mqtt_msg *m, void *u)
{
    (void)c;
    struct obs *o = u;
    o->messages++;
    (void)snprintf(o->sender, sizeof(o->sender), "%s", m->sender);
    (void)snprintf(o->auth, sizeof(o->auth), "%s", m->auth);
    (void)snprintf(o->topic, sizeof(o->topic), "%s", m->topic);
    assert_true(m->len <= sizeof(o->payload));
    if (m->len > 0)
        memcpy(o->payload, m->payload, m->len);
    o->len = m->len;
    o->qos = m->qos;
    o->retained = m->retained;
}

static struct obs *done_obs;

static void o_done(upk_mqtt *c, upk_err err, void *cb_data)
{
    (void)c;
    struct obs *o = done_obs;
    if (err == UPK_OK)
        o->done_ok++;
    else if (err == UPK_E_DENIED)
        o->done_denied++;
    else
        o->done_conn++;
    if (o->ndone < 16)
        o->done_order[o->ndone++] = (int)(intptr_t)cb_data;
}

static void o_closed(void *u)
{
    ((struct obs *)u)->closed++;
}

static upk_mqtt *client_new(uv_loop_t *loop, struct fake *f, struct obs *o, int keepalive)
{
    char url[64];
    (void)snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", f->port);
    upk_mqtt_opts opts = {
        .url = url,
        .client_id = "dev-0001",
        .username = "dev-0001",
        .password = "s3cret",
        .keepalive_s = keepalive,
        .reconnect_min_ms = 50,
        .reconnect_max_ms = 100,
        .refused_min_ms = 50, /* this fake broker keeps no lockout */
        .refused_max_ms = 100,
        .on_connect = o_connect,
        .on_disconnect = o_disconnect,
        .on_message = o_message,
        .userdata = o,
    };
    upk_mqtt *c = NULL;
    assert_int_equal(upk_mqtt_new(loop, &opts, &c), UPK_OK);
    done_obs = o;
    return c;
}

/* Runs the loop until *flag >= want (bounded: 10 s). */
static void run_until_at(uv_loop_t *loop, const int *flag, int want, int line)
{
    uint64_t end = uv_now(loop) + 10000;
    while (*flag < want && uv_now(loop) < end)
        (void)uv_run(loop, UV_RUN_ONCE);
    if (*flag < want)
        fail_msg("line %d: waited for %d, have %d", line, want, *flag);
}
#define run_until(loop, flag, want) run_until_at(loop, flag, want, __LINE__)

static void drain_loop(uv_loop_t *loop)
{
    while (uv_run(loop, UV_RUN_NOWAIT) != 0)
        ;
    assert_int_equal(uv_loop_close(loop), 0);
}

/* Closes the client and the scripted broker, waits for the client's closed
 * callback and closes the loop. */
static void close_all(uv_loop_t *loop, upk_mqtt *c, struct fake *f, struct obs *o)
{
    upk_mqtt_close(c, o_closed, o);
    fake_close(f);
    run_until(loop, &o->closed, 1);
    drain_loop(loop);
}

/* ---- tests */

static void wire_bytewise_publish_with_properties(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct fake f;
    struct obs o = {0};
    fake_init(&f, &loop);
    /* CONNACK with properties: receive maximum 2, assigned client id,
     * server keepalive, reason string. */
    static const uint8_t ack[] = {0x20, 22,  0,    0, 19, 0x21, 0, 2, 0x12, 0,   3,   'a',
                                  'b',  'c', 0x13, 0, 30, 0x1F, 0, 4, 'f',  'i', 'n', 'e'};
    memcpy(f.connack, ack, sizeof(ack));
    f.connack_len = sizeof(ack);
    upk_mqtt *c = client_new(&loop, &f, &o, 20);
    assert_int_equal(upk_mqtt_start(c), UPK_OK);
    run_until(&loop, &o.connects, 1);
    assert_string_equal(f.client_id, "dev-0001");
    assert_string_equal(f.username, "dev-0001");
    assert_string_equal(f.password, "s3cret");
    assert_int_equal(f.keepalive, 20);

    /* QoS 1 PUBLISH, retained, pid 7, topic "a/b", properties: payload
     * format, message expiry, content type, a forged-looking user property
     * first and the broker's upkeep-sender last, then payload "hi". */
    static const uint8_t pub[] = {
        0x33, 61,   0,   3,   'a', '/', 'b',  0,   7,   51,  0x01, 1,   0x02, 0,    0,  0,
        9,    0x03, 0,   2,   'j', 's', 0x26, 0,   1,   'x', 0,    1,   'y',  0x26, 0,  13,
        'u',  'p',  'k', 'e', 'e', 'p', '-',  's', 'e', 'n', 'd',  'e', 'r',  0,    14, 'c',
        'o',  'n',  't', 'r', 'o', 'l', 'l',  'e', 'r', ':', 'c',  't', 'l',  'h',  'i'};
    /* Two packets in one write, then the same one cut into bytes. */
    uint8_t two[2 * sizeof(pub)];
    memcpy(two, pub, sizeof(pub));
    memcpy(two + sizeof(pub), pub, sizeof(pub));
    fake_send(&f, two, sizeof(two));
    run_until(&loop, &o.messages, 2);
    fake_send_bytewise(&f, pub, sizeof(pub));
    run_until(&loop, &o.messages, 3);
    assert_string_equal(o.topic, "a/b");
    assert_string_equal(o.sender, "controller:ctl");
    assert_int_equal(o.len, 2);
    assert_memory_equal(o.payload, "hi", 2);
    assert_int_equal(o.qos, 1);
    assert_true(o.retained);
    run_until(&loop, &f.pubacks, 3);
    assert_int_equal(f.last_ack, 7);

    /* The broker's receive maximum (2) bounds what is in flight: 5
     * publishes, 2 on the wire until acknowledged; a refusal is DENIED. */
    for (int i = 0; i < 5; i++)
        assert_int_equal(upk_mqtt_publish(c, "t/x", "p", 1, 1, false, o_done, (void *)(intptr_t)i),
                         UPK_OK);
    run_until(&loop, &f.publishes, 2);
    for (int i = 0; i < 20; i++)
        (void)uv_run(&loop, UV_RUN_NOWAIT);
    assert_int_equal(f.publishes, 2);
    for (int k = 0; k < 5; k++) {
        run_until(&loop, &f.publishes, k + 1);
        uint16_t pid = f.pids[k];
        uint8_t pa[5] = {0x40, k == 3 ? 3 : 2, (uint8_t)(pid >> 8), (uint8_t)pid, 0x87};
        fake_send(&f, pa, k == 3 ? 5 : 4);
        run_until(&loop, &o.ndone, k + 1);
    }
    assert_int_equal(o.done_ok, 4);
    assert_int_equal(o.done_denied, 1);
    for (int i = 0; i < 5; i++)
        assert_int_equal(o.done_order[i], i);

    close_all(&loop, c, &f, &o);
    assert_int_equal(o.disconnects, 0);
}

static void wire_garbage_is_a_lost_connection(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct fake f;
    struct obs o = {0};
    fake_init(&f, &loop);
    upk_mqtt *c = client_new(&loop, &f, &o, 20);
    assert_int_equal(upk_mqtt_start(c), UPK_OK);
    run_until(&loop, &o.connects, 1);
    assert_int_equal(upk_mqtt_publish(c, "t/x", "p", 1, 1, false, o_done, (void *)1), UPK_OK);
    run_until(&loop, &f.publishes, 1);

    /* Each of these ends the connection: the pending publish fails with
     * CONN, on_disconnect says CONN, and the client connects again. */
    static const uint8_t bad_type[] = {0x00, 0};
    static const uint8_t bad_len[] = {0x30, 0xff, 0xff, 0xff, 0xff, 0x7f};
    static const uint8_t bad_prop[] = {0x30, 6, 0, 1, 't', 1, 0x7e, 0};
    static const uint8_t short_connack[] = {0x20, 1, 0};
    const struct {
        const uint8_t *b;
        size_t n;
    } cases[] = {{bad_type, sizeof(bad_type)},
                 {bad_len, sizeof(bad_len)},
                 {bad_prop, sizeof(bad_prop)},
                 {short_connack, sizeof(short_connack)}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        fake_send(&f, cases[i].b, cases[i].n);
        run_until(&loop, &o.disconnects, (int)i + 1);
        assert_int_equal(o.last_disc, UPK_E_CONN);
        run_until(&loop, &o.connects, (int)i + 2);
    }
    assert_int_equal(o.done_conn, 1);
    assert_int_equal(upk_mqtt_publish(c, "t/+", "p", 1, 1, false, NULL, NULL), UPK_E_INVALID_ARG);
    assert_int_equal(upk_mqtt_publish(c, "", "p", 1, 1, false, NULL, NULL), UPK_E_INVALID_ARG);

    /* The broker goes away: on_disconnect, then reconnection. */
    int before = o.connects;
    fake_drop(&f);
    run_until(&loop, &o.disconnects, 5);
    run_until(&loop, &o.connects, before + 1);

    close_all(&loop, c, &f, &o);
}

static void wire_refused_and_silent_brokers(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct fake f;
    struct obs o = {0};
    fake_init(&f, &loop);

    /* Bad user name or password: AUTH_FAILED, and retried with backoff. */
    static const uint8_t refuse[] = {0x20, 3, 0, 0x86, 0};
    memcpy(f.connack, refuse, sizeof(refuse));
    f.connack_len = sizeof(refuse);
    upk_mqtt *c = client_new(&loop, &f, &o, 1);
    assert_int_equal(upk_mqtt_start(c), UPK_OK);
    run_until(&loop, &o.disconnects, 2);
    assert_int_equal(o.last_disc, UPK_E_AUTH_FAILED);
    assert_int_equal(o.connects, 0);
    assert_int_equal(upk_mqtt_publish(c, "t/x", "p", 1, 1, false, NULL, NULL), UPK_E_CONN);

    /* Accepted, but PINGREQ goes unanswered: lost after the keepalive. */
    static const uint8_t ok[] = {0x20, 3, 0, 0, 0};
    memcpy(f.connack, ok, sizeof(ok));
    f.answer_ping = false;
    run_until(&loop, &o.connects, 1);
    int d = o.disconnects;
    run_until(&loop, &o.disconnects, d + 1);
    assert_true(f.pings >= 1);
    assert_int_equal(o.last_disc, UPK_E_CONN);

    /* No CONNACK at all: closing mid-connect still frees everything, and
     * nothing is called back after close. */
    f.connack_len = 0;
    int seen = f.connects;
    run_until(&loop, &f.connects, seen + 1);
    d = o.disconnects;
    close_all(&loop, c, &f, &o);
    assert_int_equal(o.disconnects, d);
}

/* A QoS 0 PUBLISH on "a/b" with payload "hi" and n upkeep-auth user
 * properties of value v (vn bytes each) into pkt; returns its length. */
static size_t auth_publish(uint8_t *pkt, size_t cap, int n, const char *v, size_t vn)
{
    size_t plen = (size_t)n * (1 + 2 + 11 + 2 + vn);
    size_t body = 2 + 3 + 1 + plen + 2;
    assert_true(plen < 128 && body < 128 && 2 + body <= cap);
    uint8_t *p = pkt;
    *p++ = 0x30;
    *p++ = (uint8_t)body;
    *p++ = 0;
    *p++ = 3;
    memcpy(p, "a/b", 3);
    p += 3;
    *p++ = (uint8_t)plen;
    for (int i = 0; i < n; i++) {
        *p++ = 0x26;
        *p++ = 0;
        *p++ = 11;
        memcpy(p, "upkeep-auth", 11);
        p += 11;
        *p++ = 0;
        *p++ = (uint8_t)vn;
        memcpy(p, v, vn);
        p += vn;
    }
    *p++ = 'h';
    *p++ = 'i';
    return (size_t)(p - pkt);
}

/* One upkeep-auth arrives as msg->auth; two, or one with a NUL or longer
 * than UPK_MQTT_AUTH_MAX, arrive as "?", which no tag equals. */
static void wire_upkeep_auth_once_or_invalid(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct fake f;
    struct obs o = {0};
    fake_init(&f, &loop);
    upk_mqtt *c = client_new(&loop, &f, &o, 0);
    assert_int_equal(upk_mqtt_start(c), UPK_OK);
    run_until(&loop, &o.connects, 1);
    uint8_t pkt[256];
    size_t n = auth_publish(pkt, sizeof(pkt), 1, "abc123", 6);
    fake_send(&f, pkt, n);
    run_until(&loop, &o.messages, 1);
    assert_string_equal(o.auth, "abc123");
    assert_string_equal(o.sender, "");
    n = auth_publish(pkt, sizeof(pkt), 2, "abc123", 6);
    fake_send(&f, pkt, n);
    run_until(&loop, &o.messages, 2);
    assert_string_equal(o.auth, "?");
    n = auth_publish(pkt, sizeof(pkt), 1, "ab\0c", 4);
    fake_send(&f, pkt, n);
    run_until(&loop, &o.messages, 3);
    assert_string_equal(o.auth, "?");
    char big[UPK_MQTT_AUTH_MAX + 1];
    memset(big, 'a', sizeof(big));
    n = auth_publish(pkt, sizeof(pkt), 1, big, sizeof(big));
    fake_send(&f, pkt, n);
    run_until(&loop, &o.messages, 4);
    assert_string_equal(o.auth, "?");
    n = auth_publish(pkt, sizeof(pkt), 0, "", 0);
    fake_send(&f, pkt, n);
    run_until(&loop, &o.messages, 5);
    assert_string_equal(o.auth, "");
    assert_int_equal(o.len, 2);
    close_all(&loop, c, &f, &o);
}

static void wire_rejects_what_it_cannot_do(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    const char *bad[] = {"ssl://127.0.0.1:8883", "tcp://127.0.0.1",       "tcp://:1883",
                         "tcp://127.0.0.1:0",    "tcp://127.0.0.1:70000", "ws://h:1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        upk_mqtt_opts opts = {.url = bad[i], .client_id = "x"};
        upk_mqtt *c = NULL;
        assert_int_equal(upk_mqtt_new(&loop, &opts, &c), UPK_E_CONFIG_INVALID);
        assert_null(c);
    }
    drain_loop(&loop);
}

/* opts.max_packet is announced in the CONNECT (Maximum Packet Size, 0x27)
 * and enforced by the client itself: a packet of exactly the limit is
 * delivered; one byte more, or a header announcing 10 MB, ends the
 * connection as soon as the header is read, before any body is buffered. */
static void wire_max_packet_is_announced_and_enforced(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct fake f;
    struct obs o = {0};
    fake_init(&f, &loop);
    char url[64];
    (void)snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", f.port);
    upk_mqtt_opts opts = {
        .url = url,
        .client_id = "dev-0001",
        .keepalive_s = 20,
        .reconnect_min_ms = 50,
        .reconnect_max_ms = 100,
        .max_packet = 64,
        .on_connect = o_connect,
        .on_disconnect = o_disconnect,
        .on_message = o_message,
        .userdata = &o,
    };
    upk_mqtt *c = NULL;
    assert_int_equal(upk_mqtt_new(&loop, &opts, &c), UPK_OK);
    done_obs = &o;
    assert_int_equal(upk_mqtt_start(c), UPK_OK);
    run_until(&loop, &o.connects, 1);
    static const uint8_t want[] = {0x27, 0, 0, 0, 64};
    assert_int_equal(f.props_len, sizeof(want));
    assert_memory_equal(f.props, want, sizeof(want));

    /* 64 bytes in all: 2 of fixed header, 62 of body (topic "t/x", no
     * packet id at QoS 0, an empty property block, 56 bytes of payload). */
    uint8_t pkt[65] = {0x30, 62, 0, 3, 't', '/', 'x', 0};
    memset(pkt + 8, 'a', 56);
    fake_send(&f, pkt, 64);
    run_until(&loop, &o.messages, 1);
    assert_int_equal(o.len, 56);
    assert_int_equal(o.disconnects, 0);

    pkt[1] = 63; /* 65 bytes */
    pkt[64] = 'a';
    fake_send(&f, pkt, 65);
    run_until(&loop, &o.disconnects, 1);
    assert_int_equal(o.last_disc, UPK_E_CONN);
    assert_int_equal(o.messages, 1);

    /* 10 MB announced, 10 bytes sent: refused on the header alone (the
     * rest never comes, so waiting for it would hang here). */
    run_until(&loop, &o.connects, 2);
    static const uint8_t big[] = {0x30, 0x80, 0xa8, 0xfa, 0x04, 0, 3, 't', '/', 'x'};
    fake_send(&f, big, sizeof(big));
    run_until(&loop, &o.disconnects, 2);
    assert_int_equal(o.last_disc, UPK_E_CONN);
    assert_int_equal(o.messages, 1);
    close_all(&loop, c, &f, &o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(wire_bytewise_publish_with_properties),
        cmocka_unit_test(wire_garbage_is_a_lost_connection),
        cmocka_unit_test(wire_refused_and_silent_brokers),
        cmocka_unit_test(wire_rejects_what_it_cannot_do),
        cmocka_unit_test(wire_max_packet_is_announced_and_enforced),
        cmocka_unit_test(wire_upkeep_auth_once_or_invalid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
