/* Integration tests of upkeep_broker.so: a real mosquitto with the plugin on a
 * free loopback port, real MQTT 5 clients (Paho). Covers every cell of the
 * role table for publish, subscribe and receive; refused logins (anonymous,
 * unknown, wrong password, foreign client id, wildcard names); sender
 * stamping, also across reconnects of other roles and a session takeover;
 * lockout and its expiry; flood dropping, kicking and hold-off
 * while another device is unaffected; stats; refused configs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "upkeep/devkey.h"

#define SECRET "integration-fleet-secret-0123456789"

struct env {
    char dir[UPK_H_PATH_MAX];
    upk_h_broker b;
};

static upk_h_msg msgbuf; /* large; one at a time */

/* Adds user with password to dir/passwd using Mosquitto's own tool. */
static int add_user(const char *dir, const char *user, const char *pass)
{
    char path[UPK_H_PATH_MAX + 16];
    snprintf(path, sizeof(path), "%s/passwd", dir);
    pid_t pid = fork();
    if (pid == 0) {
        execl(UPK_MOSQUITTO_PASSWD, UPK_MOSQUITTO_PASSWD, "-b", path, user, pass, (char *)NULL);
        _exit(127);
    }
    int st = 0;
    if (pid < 0 || waitpid(pid, &st, 0) != pid)
        return -1;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

/* Makes dir with passwd (ctl, op1, op2, root), the fleet secret and a
 * plugin config whose extra JSON members are `extra` (may be ""). */
static int make_env(struct env *e, const char *extra)
{
    char cfg[4096];
    if (upk_h_tmpdir(e->dir, sizeof(e->dir)) != 0)
        return -1;
    if (upk_h_write_file(e->dir, "passwd", "") != 0 || add_user(e->dir, "ctl", "ctl-pw") != 0 ||
        add_user(e->dir, "op1", "op1-pw") != 0 || add_user(e->dir, "op2", "op2-pw") != 0 ||
        add_user(e->dir, "root", "root-pw") != 0 ||
        upk_h_write_file(e->dir, "fleet.secret", SECRET "\n") != 0)
        return -1;
    snprintf(cfg, sizeof(cfg),
             "{\"password_file\":\"passwd\",\"fleet_secret_file\":\"fleet.secret\","
             "\"accounts\":{\"ctl\":\"controller\",\"op1\":\"operator\",\"op2\":\"operator\","
             "\"root\":\"admin\"}%s%s}",
             extra[0] != '\0' ? "," : "", extra);
    return upk_h_write_file(e->dir, "upkeep.json", cfg);
}

static int start_env(struct env *e)
{
    char conf[2048];
    snprintf(conf, sizeof(conf),
             "allow_anonymous false\nplugin %s\nplugin_opt_config %s/upkeep.json\n"
             "log_dest stderr\nlog_type all\n",
             UPK_BROKER_PLUGIN, e->dir);
    return upk_h_broker_start(&e->b, e->dir, conf, 10.0);
}

static int env_setup(void **state, const char *extra)
{
    struct env *e = calloc(1, sizeof(*e));
    if (e == NULL || make_env(e, extra) != 0 || start_env(e) != 0) {
        if (e != NULL)
            upk_h_rmtree(e->dir);
        free(e);
        return -1;
    }
    *state = e;
    return 0;
}

static int env_teardown(void **state)
{
    struct env *e = *state;
    if (e == NULL)
        return 0;
    upk_h_broker_stop(&e->b);
    upk_h_rmtree(e->dir);
    free(e);
    return 0;
}

/* Generous limits: the role-table tests must not trip rate limits or lockout. */
static int setup_main(void **state)
{
    return env_setup(state, "\"lockout\":{\"max_failures_per_username\":0,"
                            "\"max_failures_per_address\":0},\"stats_interval_seconds\":1");
}

static void devkey(const char *id, char *out, size_t cap)
{
    assert_int_equal(upk_devkey_derive(SECRET, strlen(SECRET), id, out, cap), UPK_OK);
}

static upk_h_client *login(struct env *e, const char *cid, const char *user, const char *pass)
{
    upk_h_client *c = NULL;
    int reason = 0;
    if (upk_h_client_connect(&c, e->b.port, cid, user, pass, &reason) != 0) {
        upk_h_broker_dump_log(e->dir);
        fail_msg("login %s/%s refused, reason %d", cid, user, reason);
    }
    return c;
}

static upk_h_client *login_device(struct env *e, const char *id)
{
    char key[UPK_DEVKEY_LEN + 1];
    devkey(id, key, sizeof(key));
    return login(e, id, id, key);
}

/* ---- authentication -------------------------------------------------------- */

static void refuses(struct env *e, const char *cid, const char *user, const char *pass,
                    const char *what)
{
    upk_h_client *c = NULL;
    int reason = 0;
    if (upk_h_client_connect(&c, e->b.port, cid, user, pass, &reason) == 0) {
        upk_h_client_close(c);
        upk_h_broker_dump_log(e->dir);
        fail_msg("%s was accepted", what);
    }
    /* 0x86 bad user name or password / 0x87 not authorized */
    if (reason != 0x86 && reason != 0x87)
        fail_msg("%s: unexpected CONNACK reason %d", what, reason);
}

static void auth_accepts_every_role(void **state)
{
    struct env *e = *state;
    upk_h_client_close(login_device(e, "dev-a"));
    upk_h_client_close(login(e, "controller-1", "ctl", "ctl-pw"));
    upk_h_client_close(login(e, "op1-cli", "op1", "op1-pw"));
    upk_h_client_close(login(e, "root-cli", "root", "root-pw"));
}

static void auth_refuses_anonymous_unknown_and_wrong(void **state)
{
    struct env *e = *state;
    char key[UPK_DEVKEY_LEN + 1], other[UPK_DEVKEY_LEN + 1];
    devkey("dev-a", key, sizeof(key));
    devkey("dev-b", other, sizeof(other));
    refuses(e, "anon", NULL, NULL, "anonymous client");
    refuses(e, "x", "mallory", "whatever", "unknown user");
    refuses(e, "c", "ctl", "wrong", "controller with wrong password");
    refuses(e, "o", "op1", "op2-pw", "operator with another's password");
    refuses(e, "r", "root", "", "admin with empty password");
    refuses(e, "dev-a", "dev-a", other, "device with another device's key");
    refuses(e, "dev-a", "dev-a", "0000", "device with wrong key");
    refuses(e, "dev-b", "dev-a", key, "device with a client id that is not its own");
    refuses(e, "dev-a#", "dev-a", key, "device with wildcard client id");
    refuses(e, "c+1", "ctl", "ctl-pw", "client id with '+'");
    refuses(e, "dev/a", "dev/a", "x", "username with '/'");
    assert_true(upk_h_file_contains(e->b.log, "device client id differs from its username"));
}

/* ---- authorization: the role table ------------------------------------------ */

struct cell {
    const char *topic; /* under upkeep/v1/ unless it starts with '!' */
    const char *pub;   /* roles that may publish: d c o a */
    const char *recv;  /* roles that receive it */
};

/* Device = dev-a, operator = op1. Every topic kind for own and other ids. */
static const struct cell table[] = {
    {"dev/dev-a/state", "da", "coa"},
    {"dev/dev-a/online", "da", "ca"},
    {"dev/dev-a/events", "da", "coa"},
    {"dev/dev-a/chunk/req", "da", "ca"},
    {"dev/dev-a/desired", "ca", "dca"},
    {"dev/dev-a/chunk/data", "ca", "dca"},
    {"dev/dev-a/ack", "ca", "da"},
    {"dev/dev-b/state", "a", "coa"},
    {"dev/dev-b/online", "a", "ca"},
    {"dev/dev-b/events", "a", "coa"},
    {"dev/dev-b/chunk/req", "a", "ca"},
    {"dev/dev-b/desired", "ca", "ca"},
    {"dev/dev-b/chunk/data", "ca", "ca"},
    {"dev/dev-b/ack", "ca", "a"},
    {"ctl/req/op1", "oa", "ca"},
    {"ctl/req/op2", "a", "ca"},
    {"ctl/resp/op1", "ca", "oa"},
    {"ctl/resp/op2", "ca", "a"},
    {"broker/stats/x", "a", "a"},
    {"!other/topic", "a", "a"},
    {"!upkeep/v2/dev/dev-a/state", "a", "a"},
};
#define NCELLS (sizeof(table) / sizeof(table[0]))

static void full_topic(const struct cell *c, char *out, size_t cap)
{
    if (c->topic[0] == '!')
        snprintf(out, cap, "%s", c->topic + 1);
    else
        snprintf(out, cap, "upkeep/v1/%s", c->topic);
}

static void acl_publish_cells(void **state)
{
    struct env *e = *state;
    upk_h_client *cl[4] = {login_device(e, "dev-a"), login(e, "ctl", "ctl", "ctl-pw"),
                           login(e, "op1", "op1", "op1-pw"), login(e, "root", "root", "root-pw")};
    const char roles[] = "dcoa";
    for (size_t i = 0; i < NCELLS; i++) {
        char topic[256];
        full_topic(&table[i], topic, sizeof(topic));
        for (int r = 0; r < 4; r++) {
            int reason = 0;
            bool want = strchr(table[i].pub, roles[r]) != NULL;
            bool got = upk_h_client_publish(cl[r], topic, "x", 1, 1, false, NULL, &reason) == 0;
            if (got != want)
                fail_msg("publish %s by %c: got %s (reason %d), want %s", topic, roles[r],
                         got ? "allowed" : "denied", reason, want ? "allowed" : "denied");
            if (!got && reason != 0x87)
                fail_msg("publish %s by %c: reason %d, want 0x87", topic, roles[r], reason);
        }
    }
    for (int r = 0; r < 4; r++)
        upk_h_client_close(cl[r]);
}

static void acl_subscribe_filters(void **state)
{
    struct env *e = *state;
    static const struct {
        char role;
        const char *filter;
        bool ok;
    } cases[] = {
        {'d', "#", false},
        {'d', "upkeep/v1/#", false},
        {'d', "upkeep/v1/dev/+/desired", false},
        {'d', "upkeep/v1/dev/dev-b/desired", false},
        {'d', "upkeep/v1/dev/dev-a/state", false},
        {'d', "$SYS/#", false},
        {'d', "upkeep/v1/dev/dev-a/desired", true},
        {'d', "upkeep/v1/dev/dev-a/#", true},
        {'c', "upkeep/v1/dev/+/+", true},
        {'c', "upkeep/v1/ctl/req/+", true},
        {'c', "upkeep/v1/ctl/resp/+", false},
        {'c', "upkeep/v1/broker/stats", false},
        {'c', "other/#", false},
        {'o', "upkeep/v1/ctl/resp/op1", true},
        {'o', "upkeep/v1/ctl/resp/+", false},
        {'o', "upkeep/v1/dev/+/state", true},
        {'o', "upkeep/v1/dev/+/desired", false},
        {'a', "#", true},
        {'a', "$SYS/#", true},
    };
    upk_h_client *cl[4] = {login_device(e, "dev-a"), login(e, "ctl", "ctl", "ctl-pw"),
                           login(e, "op1", "op1", "op1-pw"), login(e, "root", "root", "root-pw")};
    const char roles[] = "dcoa";
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int r = (int)(strchr(roles, cases[i].role) - roles);
        int reason = 0;
        bool got = upk_h_client_subscribe(cl[r], cases[i].filter, 1, &reason) == 0;
        if (got != cases[i].ok)
            fail_msg("subscribe %s by %c: got %s (reason %d)", cases[i].filter, cases[i].role,
                     got ? "granted" : "refused", reason);
        if (!got && reason != 0x87)
            fail_msg("subscribe %s by %c: reason %d, want 0x87", cases[i].filter, cases[i].role,
                     reason);
    }
    for (int r = 0; r < 4; r++)
        upk_h_client_close(cl[r]);
}

/* Each role subscribes to the widest filter it is granted; the admin then
 * publishes to every topic of the table, and a final marker on a topic the
 * role may read. Whatever a role got before its marker must be exactly the
 * cells that list it as a receiver. */
static void acl_receive_cells(void **state)
{
    struct env *e = *state;
    const char roles[] = "dcoa";
    static const char *const filters[4] = {"upkeep/v1/dev/dev-a/#", "upkeep/v1/#", "upkeep/v1/#",
                                           "#"};
    static const char *const markers[4] = {"upkeep/v1/dev/dev-a/desired", "upkeep/v1/dev/m/state",
                                           "upkeep/v1/dev/m/state", "upkeep/v1/dev/m/state"};
    upk_h_client *cl[4] = {login_device(e, "dev-a"), login(e, "ctl", "ctl", "ctl-pw"),
                           login(e, "op1", "op1", "op1-pw"), login(e, "root", "root", "root-pw")};
    upk_h_client *admin = login(e, "root-pub", "root", "root-pw");
    for (int r = 0; r < 4; r++) {
        int reason;
        assert_int_equal(upk_h_client_subscribe(cl[r], filters[r], 1, &reason), 0);
    }
    for (size_t i = 0; i < NCELLS; i++) {
        char topic[256];
        int reason;
        full_topic(&table[i], topic, sizeof(topic));
        assert_int_equal(
            upk_h_client_publish(admin, topic, topic, strlen(topic), 1, false, NULL, &reason), 0);
    }
    for (int r = 0; r < 4; r++) {
        int reason;
        assert_int_equal(
            upk_h_client_publish(admin, markers[r], "MARK", 4, 1, false, NULL, &reason), 0);
    }
    for (int r = 0; r < 4; r++) {
        bool got[NCELLS] = {false};
        bool marked = false;
        while (!marked) {
            if (upk_h_client_wait_msg(cl[r], 5.0, &msgbuf) != 0)
                fail_msg("role %c: marker never arrived", roles[r]);
            if (strcmp(msgbuf.payload, "MARK") == 0 && strcmp(msgbuf.topic, markers[r]) == 0) {
                marked = true;
                continue;
            }
            if (strcmp(msgbuf.payload, "MARK") == 0)
                continue; /* another role's marker, readable by this one */
            if (strcmp(msgbuf.topic, "upkeep/v1/broker/stats") == 0 && roles[r] == 'a')
                continue; /* the plugin's own stats, published every second */
            size_t i = 0;
            for (; i < NCELLS; i++) {
                char topic[256];
                full_topic(&table[i], topic, sizeof(topic));
                if (strcmp(topic, msgbuf.topic) == 0)
                    break;
            }
            if (i == NCELLS)
                fail_msg("role %c got unexpected topic %s", roles[r], msgbuf.topic);
            got[i] = true;
        }
        for (size_t i = 0; i < NCELLS; i++) {
            bool want = strchr(table[i].recv, roles[r]) != NULL;
            if (got[i] != want)
                fail_msg("receive %s by %c: got %d want %d", table[i].topic, roles[r], got[i],
                         want);
        }
    }
    for (int r = 0; r < 4; r++)
        upk_h_client_close(cl[r]);
    upk_h_client_close(admin);
}

/* A device's will on another device's topic is refused like a publish. */
static void acl_device_will_only_on_own_topics(void **state)
{
    struct env *e = *state;
    char key[UPK_DEVKEY_LEN + 1];
    upk_h_client *ctl = login(e, "ctl", "ctl", "ctl-pw");
    int reason;
    assert_int_equal(upk_h_client_subscribe(ctl, "upkeep/v1/dev/+/online", 1, &reason), 0);
    devkey("dev-w", key, sizeof(key));
    upk_h_client *d = NULL;
    assert_int_equal(upk_h_client_connect_will(&d, e->b.port, "dev-w", "dev-w", key,
                                               "upkeep/v1/dev/dev-x/online", "0", &reason),
                     0);
    /* Dropping the broker-side connection triggers the will: kill it by a
     * takeover with the same (own) identity. */
    upk_h_client *d2 = login_device(e, "dev-w");
    assert_true(upk_h_client_wait_disconnected(d, 5.0));
    upk_h_client_close(d2);
    /* A publish on own topic is the marker. */
    upk_h_client *d3 = login_device(e, "dev-y");
    assert_int_equal(
        upk_h_client_publish(d3, "upkeep/v1/dev/dev-y/online", "1", 1, 1, false, NULL, &reason), 0);
    assert_int_equal(upk_h_client_wait_msg(ctl, 5.0, &msgbuf), 0);
    assert_string_equal(msgbuf.topic, "upkeep/v1/dev/dev-y/online");
    upk_h_client_close(d3);
    upk_h_client_close(d);
    upk_h_client_close(ctl);
}

/* ---- stamping ------------------------------------------------------------- */

static void stamp_present_and_unforgeable(void **state)
{
    struct env *e = *state;
    int reason;
    upk_h_client *ctl = login(e, "ctl", "ctl", "ctl-pw");
    upk_h_client *op = login(e, "op1", "op1", "op1-pw");
    upk_h_client *dev = login_device(e, "dev-s");
    assert_int_equal(upk_h_client_subscribe(ctl, "upkeep/v1/dev/dev-s/events", 1, &reason), 0);
    assert_int_equal(upk_h_client_subscribe(ctl, "upkeep/v1/ctl/req/+", 1, &reason), 0);
    assert_int_equal(upk_h_client_subscribe(dev, "upkeep/v1/dev/dev-s/desired", 1, &reason), 0);

    assert_int_equal(upk_h_client_publish(dev, "upkeep/v1/dev/dev-s/events", "e1", 2, 1, false,
                                          "controller:ctl", &reason),
                     0);
    assert_int_equal(upk_h_client_wait_msg(ctl, 5.0, &msgbuf), 0);
    assert_int_equal(msgbuf.sender_count, 1);
    assert_string_equal(msgbuf.sender, "device:dev-s");

    assert_int_equal(
        upk_h_client_publish(op, "upkeep/v1/ctl/req/op1", "r", 1, 0, false, "admin:root", &reason),
        0);
    assert_int_equal(upk_h_client_wait_msg(ctl, 5.0, &msgbuf), 0);
    assert_int_equal(msgbuf.sender_count, 1);
    assert_string_equal(msgbuf.sender, "operator:op1");

    assert_int_equal(
        upk_h_client_publish(ctl, "upkeep/v1/dev/dev-s/desired", "d", 1, 1, false, NULL, &reason),
        0);
    assert_int_equal(upk_h_client_wait_msg(dev, 5.0, &msgbuf), 0);
    assert_int_equal(msgbuf.sender_count, 1);
    assert_string_equal(msgbuf.sender, "controller:ctl");
    upk_h_client_close(dev);
    upk_h_client_close(op);
    upk_h_client_close(ctl);
}

/* The plugin keeps each client's identity in a cache keyed by Mosquitto's
 * connection pointer, which Mosquitto reuses once a client is gone. Clients
 * of different roles take turns (each disconnects before the next logs in,
 * so the broker is likely to hand the next one the same memory), and a
 * device's session is taken over by a second connection: every message must
 * carry its own sender's stamp and be judged by its own sender's role. */
#define TURNS 4

static void stamp_and_acl_follow_reconnects_and_takeovers(void **state)
{
    struct env *e = *state;
    int reason;
    char id[32], topic[128], want[64];
    upk_h_client *ctl = login(e, "ctl", "ctl", "ctl-pw");
    assert_int_equal(upk_h_client_subscribe(ctl, "upkeep/v1/dev/+/events", 1, &reason), 0);
    assert_int_equal(upk_h_client_subscribe(ctl, "upkeep/v1/ctl/req/+", 1, &reason), 0);
    for (int i = 0; i < TURNS; i++) {
        bool device = i % 2 == 0;
        upk_h_client *c;
        if (device) {
            snprintf(id, sizeof(id), "dev-turn%d", i);
            c = login_device(e, id);
            snprintf(topic, sizeof(topic), "upkeep/v1/dev/%s/events", id);
            snprintf(want, sizeof(want), "device:%s", id);
            /* An operator's topic, allowed to the previous client: refused. */
            assert_int_equal(
                upk_h_client_publish(c, "upkeep/v1/ctl/req/op1", "x", 1, 1, false, NULL, &reason),
                -1);
            assert_int_equal(reason, 0x87);
        } else {
            const char *op = i % 4 == 1 ? "op1" : "op2";
            c = login(e, op, op, i % 4 == 1 ? "op1-pw" : "op2-pw");
            snprintf(topic, sizeof(topic), "upkeep/v1/ctl/req/%s", op);
            snprintf(want, sizeof(want), "operator:%s", op);
            /* The previous client's (a device's) own topic: refused. */
            snprintf(id, sizeof(id), "upkeep/v1/dev/dev-turn%d/events", i - 1);
            assert_int_equal(upk_h_client_publish(c, id, "x", 1, 1, false, NULL, &reason), -1);
            assert_int_equal(reason, 0x87);
        }
        assert_int_equal(upk_h_client_publish(c, topic, "t", 1, 1, false, "admin:root", &reason),
                         0);
        assert_int_equal(upk_h_client_wait_msg(ctl, 5.0, &msgbuf), 0);
        assert_string_equal(msgbuf.topic, topic);
        assert_int_equal(msgbuf.sender_count, 1);
        assert_string_equal(msgbuf.sender, want);
        upk_h_client_close(c);
    }
    /* Session takeover: the second connection of dev-take owns the session;
     * its messages are stamped, the first connection is dropped. */
    upk_h_client *first = login_device(e, "dev-take");
    upk_h_client *second = login_device(e, "dev-take");
    assert_true(upk_h_client_wait_disconnected(first, 5.0));
    assert_int_equal(upk_h_client_publish(second, "upkeep/v1/dev/dev-take/events", "s", 1, 1, false,
                                          NULL, &reason),
                     0);
    assert_int_equal(upk_h_client_wait_msg(ctl, 5.0, &msgbuf), 0);
    assert_string_equal(msgbuf.sender, "device:dev-take");
    upk_h_client_close(first);
    upk_h_client_close(second);
    upk_h_client_close(ctl);
}

static void stats_published_retained(void **state)
{
    struct env *e = *state;
    int reason;
    upk_h_client *root = login(e, "root", "root", "root-pw");
    assert_int_equal(upk_h_client_subscribe(root, "upkeep/v1/broker/stats", 0, &reason), 0);
    assert_int_equal(upk_h_client_wait_msg(root, 5.0, &msgbuf), 0);
    assert_string_equal(msgbuf.topic, "upkeep/v1/broker/stats");
    assert_non_null(strstr(msgbuf.payload, "\"auth_ok\":"));
    assert_non_null(strstr(msgbuf.payload, "\"denied_topic\":"));
    assert_string_equal(msgbuf.sender, "broker:upkeep_broker");
    upk_h_client_close(root);
}

/* ---- lockout -------------------------------------------------------------- */

static int setup_lockout(void **state)
{
    return env_setup(state, "\"lockout\":{\"max_failures_per_username\":3,"
                            "\"max_failures_per_address\":0,\"window_seconds\":60,"
                            "\"lockout_seconds\":6}");
}

static void lockout_by_username_and_expiry(void **state)
{
    struct env *e = *state;
    upk_h_client *c = NULL;
    int reason;
    for (int i = 0; i < 3; i++)
        refuses(e, "op1", "op1", "bad", "wrong password");
    double locked_at = upk_h_now();
    refuses(e, "op1", "op1", "op1-pw", "right password while locked out");
    /* Another user is not affected. */
    upk_h_client_close(login(e, "op2", "op2", "op2-pw"));
    /* Poll until the lock expires (bounded). */
    double deadline = locked_at + 20.0;
    while (upk_h_client_connect(&c, e->b.port, "op1", "op1", "op1-pw", &reason) != 0) {
        if (upk_h_now() > deadline)
            fail_msg("lockout did not expire");
        struct timespec ts = {0, 100000000L};
        nanosleep(&ts, NULL);
    }
    assert_true(upk_h_now() - locked_at >= 4.0);
    upk_h_client_close(c);
    assert_true(upk_h_file_contains(e->b.log, "lockout user=op1"));
    assert_true(upk_h_file_contains(e->b.log, "error=LOCKED_OUT"));
}

static int setup_lockout_addr(void **state)
{
    return env_setup(state, "\"lockout\":{\"max_failures_per_username\":0,"
                            "\"max_failures_per_address\":4,\"window_seconds\":60,"
                            "\"lockout_seconds\":6}");
}

static void lockout_by_address(void **state)
{
    struct env *e = *state;
    refuses(e, "a", "u1", "x", "unknown 1");
    refuses(e, "b", "u2", "x", "unknown 2");
    refuses(e, "c", "u3", "x", "unknown 3");
    refuses(e, "d", NULL, NULL, "anonymous");
    refuses(e, "ctl", "ctl", "ctl-pw", "good login from a locked address");
    assert_true(upk_h_file_contains(e->b.log, "lockout address=127.0.0.1"));
    upk_h_client *c = NULL;
    int reason;
    double deadline = upk_h_now() + 20.0;
    while (upk_h_client_connect(&c, e->b.port, "ctl", "ctl", "ctl-pw", &reason) != 0) {
        if (upk_h_now() > deadline)
            fail_msg("address lockout did not expire");
        struct timespec ts = {0, 100000000L};
        nanosleep(&ts, NULL);
    }
    upk_h_client_close(c);
}

/* ---- rate limiting -------------------------------------------------------- */

static int setup_flood(void **state)
{
    return env_setup(state, "\"rate_limits\":{\"device\":{\"messages_per_second\":20,"
                            "\"burst_messages\":20,\"bytes_per_second\":100000,"
                            "\"burst_bytes\":100000,\"max_payload_bytes\":1000,"
                            "\"kick_after_drops\":300,\"flood_window_seconds\":30,"
                            "\"hold_off_seconds\":6}},\"stats_interval_seconds\":1");
}

#define FLOOD_N 1500
#define QUIET_N 15

static void flood_dropped_other_device_unaffected_then_kicked(void **state)
{
    struct env *e = *state;
    int reason;
    upk_h_client *ctl = login(e, "ctl", "ctl", "ctl-pw");
    assert_int_equal(upk_h_client_subscribe(ctl, "upkeep/v1/dev/+/events", 1, &reason), 0);
    upk_h_client *flood = login_device(e, "dev-flood");
    upk_h_client *quiet = login_device(e, "dev-quiet");
    char big[1001];
    memset(big, 'x', sizeof(big));
    /* Too large: refused alone. */
    assert_int_equal(upk_h_client_publish(quiet, "upkeep/v1/dev/dev-quiet/events", big, 1001, 1,
                                          false, NULL, &reason),
                     -1);
    assert_int_equal(reason, 0x87);
    size_t quiet_ok = 0, flood_ok = 0;
    double t0 = upk_h_now();
    for (int i = 0; i < FLOOD_N && upk_h_client_connected(flood); i++) {
        if (upk_h_client_publish(flood, "upkeep/v1/dev/dev-flood/events", "f", 1, 1, false, NULL,
                                 &reason) == 0)
            flood_ok++;
        if (i % 100 == 0 && quiet_ok < QUIET_N) {
            assert_int_equal(upk_h_client_publish(quiet, "upkeep/v1/dev/dev-quiet/events", "q", 1,
                                                  1, false, NULL, &reason),
                             0);
            quiet_ok++;
        }
    }
    while (quiet_ok < QUIET_N) {
        assert_int_equal(upk_h_client_publish(quiet, "upkeep/v1/dev/dev-quiet/events", "q", 1, 1,
                                              false, NULL, &reason),
                         0);
        quiet_ok++;
    }
    double elapsed = upk_h_now() - t0;
    /* The flooder got at most its burst plus its rate over the run. */
    assert_true((double)flood_ok <= 20.0 + 20.0 * elapsed + 2.0);
    /* ... and was disconnected after 300 drops, then held off. */
    assert_true(upk_h_client_wait_disconnected(flood, 5.0));
    char key[UPK_DEVKEY_LEN + 1];
    devkey("dev-flood", key, sizeof(key));
    refuses(e, "dev-flood", "dev-flood", key, "flooding device during its hold-off");
    /* Count what the controller got from each (bounded wait). */
    size_t want = flood_ok + quiet_ok, from_quiet = 0, from_flood = 0;
    while (from_quiet + from_flood < want && upk_h_client_wait_msg(ctl, 5.0, &msgbuf) == 0) {
        if (strstr(msgbuf.topic, "dev-quiet") != NULL)
            from_quiet++;
        else
            from_flood++;
    }
    assert_int_equal(from_quiet, QUIET_N);
    assert_int_equal(from_flood, flood_ok);
    assert_true(upk_h_file_contains(e->b.log, "flooding user=dev-flood"));
    upk_h_client_close(flood);
    upk_h_client_close(quiet);
    upk_h_client_close(ctl);
}

static void flood_hold_off_expires(void **state)
{
    struct env *e = *state;
    char key[UPK_DEVKEY_LEN + 1];
    upk_h_client *c = NULL;
    int reason;
    devkey("dev-flood", key, sizeof(key));
    double deadline = upk_h_now() + 20.0;
    while (upk_h_client_connect(&c, e->b.port, "dev-flood", "dev-flood", key, &reason) != 0) {
        if (upk_h_now() > deadline)
            fail_msg("hold-off did not expire");
        struct timespec ts = {0, 100000000L};
        nanosleep(&ts, NULL);
    }
    upk_h_client_close(c);
    /* Stats count the drops and the kick. */
    upk_h_client *root = login(e, "root", "root", "root-pw");
    assert_int_equal(upk_h_client_subscribe(root, "upkeep/v1/broker/stats", 0, &reason), 0);
    bool seen = false;
    deadline = upk_h_now() + 5.0;
    while (!seen && upk_h_now() < deadline && upk_h_client_wait_msg(root, 2.0, &msgbuf) == 0)
        seen = strstr(msgbuf.payload, "\"kicked\":1") != NULL &&
               strstr(msgbuf.payload, "\"dropped_rate\":0") == NULL &&
               strstr(msgbuf.payload, "\"dropped_too_large\":1") != NULL;
    assert_true(seen);
    upk_h_client_close(root);
}

/* ---- refused configurations ----------------------------------------------- */

/* Runs mosquitto with the plugin, config text json, and the option line
 * "<opt_key> <dir>/upkeep.json" (no option line when opt_key is NULL); the
 * broker must exit non-zero with needle in its log. */
static void expect_refused(const char *json, const char *opt_key, const char *needle)
{
    char dir[UPK_H_PATH_MAX], conf[2048], log[UPK_H_PATH_MAX + 32];
    assert_int_equal(upk_h_tmpdir(dir, sizeof(dir)), 0);
    assert_int_equal(upk_h_write_file(dir, "upkeep.json", json), 0);
    snprintf(conf, sizeof(conf), "allow_anonymous false\nplugin %s\n%s%s%s%s\nlog_dest stdout\n",
             UPK_BROKER_PLUGIN, opt_key != NULL ? opt_key : "", opt_key != NULL ? " " : "",
             opt_key != NULL ? dir : "", opt_key != NULL ? "/upkeep.json" : "");
    int st = upk_h_broker_run_expect_exit(dir, conf, 10.0);
    snprintf(log, sizeof(log), "%s/mosquitto.log", dir);
    bool named = upk_h_file_contains(log, needle);
    if (st <= 0 || !named)
        upk_h_broker_dump_log(dir);
    upk_h_rmtree(dir);
    if (st <= 0)
        fail_msg("broker did not refuse to start (status %d)", st);
    if (!named)
        fail_msg("log does not name '%s'", needle);
}

static void config_malformed_refused(void **state)
{
    (void)state;
    expect_refused("{\"rate_limits\":{\"device\":{\"messages_per_second\":\"lots\"}}}",
                   "plugin_opt_config", "rate_limits.device.messages_per_second");
    expect_refused("{\"password_file\":\"missing\"}", "plugin_opt_config", "password_file");
    expect_refused("{not json", "plugin_opt_config", "not a JSON object");
    expect_refused("{\"topic_prefx\":\"a\"}", "plugin_opt_config", "'topic_prefx': unknown field");
    expect_refused("{}", "plugin_opt_conf", "plugin_opt_conf");
    expect_refused("{}", NULL, "plugin_opt_config is not set");
}

/* ---- `upkeep device-key` ------------------------------------------------ */

/* The operator tool prints exactly the password the plugin accepts. */
static void device_key_cli_matches_plugin(void **state)
{
#ifdef UPK_UPKEEP_BIN
    struct env *e = *state;
    char cmd[2048], out[256] = "";
    snprintf(cmd, sizeof(cmd), "%s device-key --secret-file %s/fleet.secret dev-cli",
             UPK_UPKEEP_BIN, e->dir);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    if (fgets(out, sizeof(out), p) == NULL)
        out[0] = '\0';
    assert_int_equal(pclose(p), 0);
    out[strcspn(out, "\n")] = '\0';
    assert_int_equal(strlen(out), UPK_DEVKEY_LEN);
    upk_h_client_close(login(e, "dev-cli", "dev-cli", out));
    snprintf(cmd, sizeof(cmd), "%s device-key --secret-file %s/fleet.secret 'bad/id' 2>/dev/null",
             UPK_UPKEEP_BIN, e->dir);
    p = popen(cmd, "r");
    assert_non_null(p);
    int st = pclose(p);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 2);
#else
    (void)state;
    skip();
#endif
}

int main(void)
{
    /* UPK_TEST_FILTER=name_pattern runs only matching tests. */
    if (getenv("UPK_TEST_FILTER") != NULL)
        cmocka_set_test_filter(getenv("UPK_TEST_FILTER"));
    const struct CMUnitTest main_tests[] = {
        cmocka_unit_test(auth_accepts_every_role),
        cmocka_unit_test(auth_refuses_anonymous_unknown_and_wrong),
        cmocka_unit_test(acl_publish_cells),
        cmocka_unit_test(acl_subscribe_filters),
        cmocka_unit_test(acl_receive_cells),
        cmocka_unit_test(acl_device_will_only_on_own_topics),
        cmocka_unit_test(stamp_present_and_unforgeable),
        cmocka_unit_test(stamp_and_acl_follow_reconnects_and_takeovers),
        cmocka_unit_test(stats_published_retained),
        cmocka_unit_test(device_key_cli_matches_plugin),
    };
    const struct CMUnitTest other_tests[] = {
        cmocka_unit_test_setup_teardown(lockout_by_username_and_expiry, setup_lockout,
                                        env_teardown),
        cmocka_unit_test_setup_teardown(lockout_by_address, setup_lockout_addr, env_teardown),
        cmocka_unit_test(config_malformed_refused),
    };
    const struct CMUnitTest flood_tests[] = {
        cmocka_unit_test(flood_dropped_other_device_unaffected_then_kicked),
        cmocka_unit_test(flood_hold_off_expires),
    };
    int failed = cmocka_run_group_tests_name("broker_main", main_tests, setup_main, env_teardown);
    failed += cmocka_run_group_tests_name("broker_lockout_config", other_tests, NULL, NULL);
    failed += cmocka_run_group_tests_name("broker_flood", flood_tests, setup_flood, env_teardown);
    return failed;
}
