/* upk_mqtt against a real mosquitto on a free loopback port: messages arrive
 * byte-exact on the loop thread, QoS 1 completions are reported, a broker
 * restart is survived by reconnecting, and closing in any state frees
 * everything (ASan checks the latter). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "upkeep/mqtt.h"

struct broker {
    pid_t pid;
    int port;
    char dir[64];
    char conf[128];
};

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    socklen_t len = sizeof(a);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static int can_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return 0;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    close(fd);
    return ok;
}

static void broker_start(struct broker *b)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int devnull = open("/dev/null", 1);
        if (devnull >= 0) {
            dup2(devnull, 1);
            dup2(devnull, 2);
        }
        execl(MOSQUITTO_BIN, "mosquitto", "-c", b->conf, (char *)NULL);
        _exit(127);
    }
    b->pid = pid;
    /* Wait (bounded) until the broker accepts connections. */
    for (int i = 0; i < 200 && !can_connect(b->port); i++) {
        struct timespec ts = {0, 25 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    assert_true(can_connect(b->port));
}

static void broker_stop(struct broker *b)
{
    if (b->pid > 0) {
        kill(b->pid, SIGTERM);
        int st;
        while (waitpid(b->pid, &st, 0) < 0 && errno == EINTR)
            ;
        b->pid = 0;
    }
}

static void broker_init(struct broker *b)
{
    memset(b, 0, sizeof(*b));
    snprintf(b->dir, sizeof(b->dir), "/tmp/upk-mqtt-XXXXXX");
    assert_non_null(mkdtemp(b->dir));
    snprintf(b->conf, sizeof(b->conf), "%s/mosquitto.conf", b->dir);
    b->port = free_port();
    FILE *f = fopen(b->conf, "w");
    assert_non_null(f);
    fprintf(f, "listener %d 127.0.0.1\nallow_anonymous true\npersistence false\n", b->port);
    fclose(f);
    broker_start(b);
}

static void broker_cleanup(struct broker *b)
{
    broker_stop(b);
    unlink(b->conf);
    rmdir(b->dir);
}

/* ---- loop helpers */

struct waiter {
    int (*done)(void *);
    void *arg;
};

static void tick(uv_timer_t *t)
{
    struct waiter *w = t->data;
    if (w->done(w->arg))
        uv_stop(t->loop);
}

/* Runs loop until done(arg) or ms elapse; returns done(arg). */
static int run_until(uv_loop_t *loop, int (*done)(void *), void *arg, int ms)
{
    struct waiter w = {done, arg};
    uv_timer_t t;
    uv_timer_init(loop, &t);
    t.data = &w;
    uv_timer_start(&t, tick, 10, 10);
    uint64_t end = uv_now(loop) + (uint64_t)ms;
    while (!done(arg) && uv_now(loop) < end)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return done(arg);
}

struct client_state {
    int connects;
    int disconnects;
    int messages;
    char last_topic[128];
    uint8_t last_payload[64];
    size_t last_len;
    int last_qos;
    char last_auth[80];
    const char *subscribe;
    int pub_done;
    upk_err pub_err;
    int closed;
    upk_err last_err;
    uint64_t disc_at[4]; /* uv_now of the first disconnects */
    uv_loop_t *loop;
};

static void on_connect(upk_mqtt *c, void *ud)
{
    struct client_state *s = ud;
    s->connects++;
    if (s->subscribe != NULL)
        assert_int_equal(upk_mqtt_subscribe(c, s->subscribe, 1), UPK_OK);
}

static void on_disconnect(upk_mqtt *c, upk_err err, void *ud)
{
    (void)c;
    struct client_state *s = ud;
    if (s->loop != NULL && s->disconnects < 4)
        s->disc_at[s->disconnects] = uv_now(s->loop);
    s->last_err = err;
    s->disconnects++;
}

static void on_message(upk_mqtt *c, const upk_mqtt_msg *m, void *ud)
{
    (void)c;
    struct client_state *s = ud;
    s->messages++;
    snprintf(s->last_topic, sizeof(s->last_topic), "%s", m->topic);
    s->last_len = m->len < sizeof(s->last_payload) ? m->len : sizeof(s->last_payload);
    if (m->len > 0)
        memcpy(s->last_payload, m->payload, s->last_len);
    s->last_qos = m->qos;
    assert_non_null(m->auth);
    snprintf(s->last_auth, sizeof(s->last_auth), "%s", m->auth);
}

static void on_pub_done(upk_mqtt *c, upk_err err, void *ud)
{
    (void)c;
    struct client_state *s = ud;
    s->pub_done++;
    s->pub_err = err;
}

static void on_closed(void *ud)
{
    ((struct client_state *)ud)->closed = 1;
}

static upk_mqtt *client_new(uv_loop_t *loop, int port, const char *id, struct client_state *s)
{
    char url[64];
    snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", port);
    upk_mqtt_opts o = {
        .url = url,
        .client_id = id,
        .clean_start = true,
        .reconnect_min_ms = 50,
        .reconnect_max_ms = 200,
        .on_connect = on_connect,
        .on_disconnect = on_disconnect,
        .on_message = on_message,
        .userdata = s,
    };
    upk_mqtt *c = NULL;
    assert_int_equal(upk_mqtt_new(loop, &o, &c), UPK_OK);
    return c;
}

static int connected1(void *arg)
{
    return ((struct client_state *)arg)->connects >= 1;
}
static int connected2(void *arg)
{
    return ((struct client_state *)arg)->connects >= 2;
}
static int got_message(void *arg)
{
    return ((struct client_state *)arg)->messages >= 1;
}
static int got_pub_done(void *arg)
{
    return ((struct client_state *)arg)->pub_done >= 1;
}
static int got_disconnect(void *arg)
{
    return ((struct client_state *)arg)->disconnects >= 1;
}
static int got_closed(void *arg)
{
    return ((struct client_state *)arg)->closed;
}

static int got_disconnect2(void *arg)
{
    return ((struct client_state *)arg)->disconnects >= 2;
}

static void close_client(uv_loop_t *loop, upk_mqtt *c, struct client_state *s)
{
    upk_mqtt_close(c, on_closed, s);
    assert_true(run_until(loop, got_closed, s, 5000));
}

static void mqtt_delivers_qos1_bytes_and_reports_completion(void **state)
{
    (void)state;
    struct broker b;
    broker_init(&b);
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct client_state sub = {.subscribe = "t/#"}, pub = {0};
    upk_mqtt *cs = client_new(&loop, b.port, "sub-1", &sub);
    upk_mqtt *cp = client_new(&loop, b.port, "pub-1", &pub);
    assert_int_equal(upk_mqtt_start(cs), UPK_OK);
    assert_int_equal(upk_mqtt_start(cp), UPK_OK);
    assert_true(run_until(&loop, connected1, &sub, 5000));
    assert_true(run_until(&loop, connected1, &pub, 5000));
    /* The subscription is in flight; a retained message makes the order
     * irrelevant: it is delivered on subscribe or live. */
    static const uint8_t payload[] = {'a', 0, 'b', 0xff, '\n'};
    assert_int_equal(
        upk_mqtt_publish(cp, "t/x", payload, sizeof(payload), 1, true, on_pub_done, &pub), UPK_OK);
    assert_true(run_until(&loop, got_pub_done, &pub, 5000));
    assert_int_equal(pub.pub_err, UPK_OK);
    assert_true(run_until(&loop, got_message, &sub, 5000));
    assert_string_equal(sub.last_topic, "t/x");
    assert_int_equal(sub.last_len, sizeof(payload));
    assert_memory_equal(sub.last_payload, payload, sizeof(payload));
    /* Clear the retained message so that the broker holds nothing. */
    assert_int_equal(upk_mqtt_publish(cp, "t/x", NULL, 0, 1, true, NULL, NULL), UPK_OK);
    close_client(&loop, cs, &sub);
    close_client(&loop, cp, &pub);
    assert_int_equal(uv_loop_close(&loop), 0);
    broker_cleanup(&b);
}

static int got_messages2(void *arg)
{
    return ((struct client_state *)arg)->messages >= 2;
}

/* An upkeep-auth user property set on publish arrives as msg->auth; a
 * message without one arrives with auth "". */
static void mqtt_carries_upkeep_auth_user_property(void **state)
{
    (void)state;
    struct broker b;
    broker_init(&b);
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct client_state sub = {.subscribe = "a/#"}, pub = {0};
    upk_mqtt *cs = client_new(&loop, b.port, "sub-a", &sub);
    upk_mqtt *cp = client_new(&loop, b.port, "pub-a", &pub);
    assert_int_equal(upk_mqtt_start(cs), UPK_OK);
    assert_int_equal(upk_mqtt_start(cp), UPK_OK);
    assert_true(run_until(&loop, connected1, &sub, 5000));
    assert_true(run_until(&loop, connected1, &pub, 5000));
    static const char tag[] = "4944f730f4e560a4860683739fabeac838a2d907489b9c46ff495683d885b25a";
    /* Too long, or not printable: refused before anything is sent. */
    char longtag[UPK_MQTT_AUTH_MAX + 2];
    memset(longtag, 'a', sizeof(longtag) - 1);
    longtag[sizeof(longtag) - 1] = '\0';
    assert_int_equal(upk_mqtt_publish_auth(cp, "a/x", "p", 1, 1, true, longtag, NULL, NULL),
                     UPK_E_INVALID_ARG);
    assert_int_equal(upk_mqtt_publish_auth(cp, "a/x", "p", 1, 1, true, "a b", NULL, NULL),
                     UPK_E_INVALID_ARG);
    assert_int_equal(pub.pub_done, 0);
    /* Retained, so that it arrives whether or not the subscription is
     * already in place. */
    assert_int_equal(upk_mqtt_publish_auth(cp, "a/x", "p1", 2, 1, true, tag, on_pub_done, &pub),
                     UPK_OK);
    assert_true(run_until(&loop, got_pub_done, &pub, 5000));
    assert_int_equal(pub.pub_err, UPK_OK);
    assert_true(run_until(&loop, got_message, &sub, 5000));
    assert_string_equal(sub.last_topic, "a/x");
    assert_string_equal(sub.last_auth, tag);
    /* Live, without a tag ("" and NULL both mean none). */
    assert_int_equal(upk_mqtt_publish_auth(cp, "a/y", "p2", 2, 1, false, "", NULL, NULL), UPK_OK);
    assert_true(run_until(&loop, got_messages2, &sub, 5000));
    assert_string_equal(sub.last_topic, "a/y");
    assert_string_equal(sub.last_auth, "");
    assert_int_equal(sub.messages, 2);
    assert_int_equal(upk_mqtt_publish(cp, "a/x", NULL, 0, 1, true, NULL, NULL), UPK_OK);
    close_client(&loop, cs, &sub);
    close_client(&loop, cp, &pub);
    assert_int_equal(uv_loop_close(&loop), 0);
    broker_cleanup(&b);
}

static void mqtt_publish_while_disconnected_is_refused(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct client_state s = {0};
    upk_mqtt *c = client_new(&loop, free_port(), "lonely", &s);
    assert_int_equal(upk_mqtt_publish(c, "t/x", "x", 1, 1, false, on_pub_done, &s), UPK_E_CONN);
    assert_int_equal(upk_mqtt_subscribe(c, "t/#", 1), UPK_E_CONN);
    assert_int_equal(upk_mqtt_publish(c, "t/x", NULL, 3, 1, false, NULL, NULL), UPK_E_INVALID_ARG);
    /* Nobody listens on that port: the connect fails and backoff starts;
     * closing then must still free everything and call closed once. */
    assert_int_equal(upk_mqtt_start(c), UPK_OK);
    assert_true(run_until(&loop, got_disconnect, &s, 5000));
    assert_int_equal(s.pub_done, 0);
    close_client(&loop, c, &s);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void mqtt_reconnects_after_broker_restart(void **state)
{
    (void)state;
    struct broker b;
    broker_init(&b);
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct client_state s = {.subscribe = "r/#"};
    upk_mqtt *c = client_new(&loop, b.port, "phoenix", &s);
    assert_int_equal(upk_mqtt_start(c), UPK_OK);
    assert_true(run_until(&loop, connected1, &s, 5000));
    broker_stop(&b);
    assert_true(run_until(&loop, got_disconnect, &s, 5000));
    assert_false(upk_mqtt_connected(c));
    broker_start(&b);
    assert_true(run_until(&loop, connected2, &s, 10000));
    assert_true(upk_mqtt_connected(c));
    close_client(&loop, c, &s);
    assert_int_equal(uv_loop_close(&loop), 0);
    broker_cleanup(&b);
}

/* A broker that wants a password: user "alice" with password "right". */
static void broker_init_auth(struct broker *b)
{
    memset(b, 0, sizeof(*b));
    snprintf(b->dir, sizeof(b->dir), "/tmp/upk-mqtt-XXXXXX");
    assert_non_null(mkdtemp(b->dir));
    snprintf(b->conf, sizeof(b->conf), "%s/mosquitto.conf", b->dir);
    char pw[128], cmd[512];
    snprintf(pw, sizeof(pw), "%s/passwd", b->dir);
    FILE *f = fopen(pw, "w");
    assert_non_null(f);
    fclose(f);
    snprintf(cmd, sizeof(cmd), "mosquitto_passwd -b %s alice right", pw);
    assert_int_equal(system(cmd), 0);
    b->port = free_port();
    f = fopen(b->conf, "w");
    assert_non_null(f);
    /* Run as ourselves: the password file is in our private directory. */
    const struct passwd *me = getpwuid(getuid());
    assert_non_null(me);
    fprintf(f,
            "listener %d 127.0.0.1\nuser %s\nallow_anonymous false\npassword_file %s\n"
            "persistence false\n",
            b->port, me->pw_name, pw);
    fclose(f);
    broker_start(b);
}

static upk_mqtt *client_new_auth(uv_loop_t *loop, int port, const char *password,
                                 uint32_t refused_min_ms, bool stop, struct client_state *s)
{
    char url[64];
    snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", port);
    upk_mqtt_opts o = {
        .url = url,
        .client_id = "alice-1",
        .username = "alice",
        .password = password,
        .clean_start = true,
        .reconnect_min_ms = 50,
        .reconnect_max_ms = 200,
        .refused_min_ms = refused_min_ms,
        .refused_max_ms = refused_min_ms * 2,
        .stop_on_refusal = stop,
        .on_connect = on_connect,
        .on_disconnect = on_disconnect,
        .on_message = on_message,
        .userdata = s,
    };
    s->loop = loop;
    upk_mqtt *c = NULL;
    assert_int_equal(upk_mqtt_new(loop, &o, &c), UPK_OK);
    return c;
}

/* A refused login is AUTH_FAILED, never CONN, and is retried no sooner than
 * refused_min_ms / 2 (the reconnect backoff of 50 ms would otherwise trip a
 * broker's lockout in a fraction of a second); with stop_on_refusal it is
 * not retried at all; the right password then connects at once. */
static void mqtt_refused_login_is_auth_failed_and_backs_off(void **state)
{
    (void)state;
    struct broker b;
    broker_init_auth(&b);
    uv_loop_t loop;
    uv_loop_init(&loop);

    struct client_state s = {0};
    upk_mqtt *c = client_new_auth(&loop, b.port, "wrong", 1200, false, &s);
    assert_int_equal(upk_mqtt_start(c), UPK_OK);
    assert_true(run_until(&loop, got_disconnect, &s, 5000));
    assert_int_equal(s.last_err, UPK_E_AUTH_FAILED);
    assert_true(run_until(&loop, got_disconnect2, &s, 5000));
    assert_int_equal(s.last_err, UPK_E_AUTH_FAILED);
    assert_true(s.disc_at[1] - s.disc_at[0] >= 600);
    assert_int_equal(s.connects, 0);
    close_client(&loop, c, &s);

    struct client_state once = {0};
    c = client_new_auth(&loop, b.port, "wrong", 100, true, &once);
    assert_int_equal(upk_mqtt_start(c), UPK_OK);
    assert_true(run_until(&loop, got_disconnect, &once, 5000));
    assert_int_equal(once.last_err, UPK_E_AUTH_FAILED);
    /* Ten times refused_min_ms: a retry would have come and failed. */
    assert_false(run_until(&loop, got_disconnect2, &once, 1000));
    assert_false(upk_mqtt_connected(c));
    close_client(&loop, c, &once);

    struct client_state ok = {0};
    c = client_new_auth(&loop, b.port, "right", 100, true, &ok);
    assert_int_equal(upk_mqtt_start(c), UPK_OK);
    assert_true(run_until(&loop, connected1, &ok, 5000));
    assert_int_equal(ok.disconnects, 0);
    close_client(&loop, c, &ok);
    assert_int_equal(uv_loop_close(&loop), 0);
    broker_stop(&b);
    char pw[128];
    snprintf(pw, sizeof(pw), "%s/passwd", b.dir);
    unlink(pw);
    broker_cleanup(&b);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(mqtt_delivers_qos1_bytes_and_reports_completion),
        cmocka_unit_test(mqtt_carries_upkeep_auth_user_property),
        cmocka_unit_test(mqtt_publish_while_disconnected_is_refused),
        cmocka_unit_test(mqtt_reconnects_after_broker_restart),
        cmocka_unit_test(mqtt_refused_login_is_auth_failed_and_backs_off),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
