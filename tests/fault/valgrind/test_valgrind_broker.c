/* mosquitto with upkeep_broker.so (an uninstrumented build) under valgrind
 * memcheck: clients log in with good and bad passwords until one is locked
 * out, publish and are stamped, are denied, flood until rate-limited and
 * kicked, leave wills; then a clean SIGTERM stop. Passes only with zero
 * memcheck errors and zero definite/indirect leaks (mosquitto's own known
 * one-time allocations are suppressed narrowly in valgrind.supp).
 * UPK_VG_ROUNDS repeats the client traffic (soak.sh). */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"
#include "upkeep/devkey.h"
#include "upkeep/fs.h"

#define SECRET     "valgrind-fleet-secret-0123456789abcdef"
#define START_S    90.0  /* mosquitto under valgrind on a loaded machine */
#define STOP_S     120.0 /* SIGTERM to exit, including the leak check */
#define FLOOD_MAX  3000  /* publishes before giving up on a kick */
#define ROUNDS_MAX 1000
#define SKIP_RC    77

typedef struct env {
    char dir[UPK_H_PATH_MAX];
    char vg_log[UPK_H_PATH_MAX + 32];
    upk_h_broker b;
    unsigned logins_ok, logins_refused, denied, kicked, published;
} env;

static upk_h_msg msgbuf; /* large; one at a time */

static int run(const char *const argv[])
{
    pid_t pid = fork();
    if (pid == 0) {
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    int st = 0;
    if (pid < 0 || waitpid(pid, &st, 0) != pid)
        return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int add_user(env *e, const char *user, const char *pass)
{
    char path[UPK_H_PATH_MAX + 16];
    (void)snprintf(path, sizeof(path), "%s/passwd", e->dir);
    const char *argv[] = {MOSQUITTO_PASSWD, "-b", path, user, pass, NULL};
    return run(argv);
}

static void dump_vg(env *e)
{
    char *buf = NULL;
    size_t len = 0;
    upk_h_broker_dump_log(e->dir);
    if (upk_fs_read(e->vg_log, 1u << 22, &buf, &len) == UPK_OK) {
        fprintf(stderr, "---- valgrind log ----\n%s\n----\n", buf);
        free(buf);
    }
}

static int teardown(void **state);

/* cmocka runs no teardown when a setup fails: setup() does it then. */
static int setup_body(void **state)
{
    env *e = calloc(1, sizeof(*e));
    if (e == NULL || upk_h_tmpdir(e->dir, sizeof(e->dir)) != 0) {
        free(e);
        return -1;
    }
    *state = e;
    (void)snprintf(e->vg_log, sizeof(e->vg_log), "%s/valgrind-broker.log", e->dir);
    char wrapper[4096], conf[2048];
    /* The harness starts $UPK_MOSQUITTO: a script that puts it under valgrind. */
    int n = snprintf(wrapper, sizeof(wrapper),
                     "#!/bin/sh\nexec '%s' --tool=memcheck --leak-check=full "
                     "--show-leak-kinds=definite,indirect "
                     "--errors-for-leak-kinds=definite,indirect --error-exitcode=99 "
                     "--num-callers=30 --suppressions='%s' --log-file='%s' '%s' \"$@\"\n",
                     VALGRIND_BIN, VG_SUPP, e->vg_log, MOSQUITTO_BIN);
    char wpath[UPK_H_PATH_MAX + 16];
    (void)snprintf(wpath, sizeof(wpath), "%s/vg-mosquitto.sh", e->dir);
    if (n < 0 || (size_t)n >= sizeof(wrapper) ||
        upk_h_write_file(e->dir, "vg-mosquitto.sh", wrapper) != 0 || chmod(wpath, 0700) != 0 ||
        setenv("UPK_MOSQUITTO", wpath, 1) != 0)
        return -1;
    if (upk_h_write_file(e->dir, "passwd", "") != 0 || add_user(e, "ctl", "ctl-pw") != 0 ||
        add_user(e, "op1", "op1-pw") != 0 || add_user(e, "root", "root-pw") != 0 ||
        upk_h_write_file(e->dir, "fleet.secret", SECRET "\n") != 0)
        return -1;
    if (upk_h_write_file(
            e->dir, "upkeep.json",
            "{\"password_file\":\"passwd\",\"fleet_secret_file\":\"fleet.secret\","
            "\"accounts\":{\"ctl\":\"controller\",\"op1\":\"operator\",\"root\":\"admin\"},"
            "\"lockout\":{\"max_failures_per_username\":3,\"max_failures_per_address\":0,"
            "\"window_seconds\":60,\"lockout_seconds\":3},"
            "\"rate_limits\":{\"device\":{\"messages_per_second\":5,\"burst_messages\":5,"
            "\"bytes_per_second\":100000,\"burst_bytes\":100000,\"max_payload_bytes\":1000,"
            "\"kick_after_drops\":40,\"flood_window_seconds\":60,\"hold_off_seconds\":3}},"
            "\"stats_interval_seconds\":1}") != 0)
        return -1;
    (void)snprintf(conf, sizeof(conf),
                   "allow_anonymous false\nplugin %s\nplugin_opt_config %s/upkeep.json\n"
                   "log_dest stderr\nlog_type all\n",
                   PLUGIN_SO, e->dir);
    return upk_h_broker_start(&e->b, e->dir, conf, START_S);
}

static int setup(void **state)
{
    *state = NULL;
    if (setup_body(state) == 0)
        return 0;
    (void)teardown(state);
    return -1;
}

static int teardown(void **state)
{
    env *e = *state;
    if (e == NULL)
        return 0;
    (void)upk_h_broker_stop_wait(&e->b, STOP_S);
    (void)unsetenv("UPK_MOSQUITTO");
    if (getenv("UPK_VG_KEEP") == NULL)
        upk_h_rmtree(e->dir);
    else
        fprintf(stderr, "kept %s\n", e->dir);
    free(e);
    *state = NULL;
    return 0;
}

static void devkey(const char *id, char *out, size_t cap)
{
    assert_int_equal(upk_devkey_derive(SECRET, strlen(SECRET), id, out, cap), UPK_OK);
}

static upk_h_client *login(env *e, const char *cid, const char *user, const char *pass)
{
    upk_h_client *c = NULL;
    int reason = 0;
    if (upk_h_client_connect(&c, e->b.port, cid, user, pass, &reason) != 0) {
        dump_vg(e);
        fail_msg("login %s/%s refused, reason %d", cid, user, reason);
    }
    e->logins_ok++;
    return c;
}

static upk_h_client *login_device(env *e, const char *id)
{
    char key[UPK_DEVKEY_LEN + 1];
    devkey(id, key, sizeof(key));
    return login(e, id, id, key);
}

static void refused(env *e, const char *cid, const char *user, const char *pass, const char *what)
{
    upk_h_client *c = NULL;
    int reason = 0;
    if (upk_h_client_connect(&c, e->b.port, cid, user, pass, &reason) == 0) {
        upk_h_client_close(c);
        fail_msg("%s was accepted", what);
    }
    if (reason != 0x86 && reason != 0x87)
        fail_msg("%s: unexpected CONNACK reason %d", what, reason);
    e->logins_refused++;
}

/* One round of traffic; r makes the device ids of the round unique. */
static void traffic(env *e, unsigned r)
{
    char dev[32], flood[32], topic[128], other[128], key[UPK_DEVKEY_LEN + 1];
    int reason = 0;
    (void)snprintf(dev, sizeof(dev), "dev-%u", r);
    (void)snprintf(flood, sizeof(flood), "flood-%u", r);

    upk_h_client *ctl = login(e, "ctl", "ctl", "ctl-pw");
    /* Only this round's device: earlier rounds left retained wills. */
    (void)snprintf(topic, sizeof(topic), "upkeep/v1/dev/%s/+", dev);
    assert_int_equal(upk_h_client_subscribe(ctl, topic, 1, &reason), 0);
    upk_h_client *d = login_device(e, dev);
    (void)snprintf(topic, sizeof(topic), "upkeep/v1/dev/%s/desired", dev);
    assert_int_equal(upk_h_client_subscribe(d, topic, 1, &reason), 0);

    /* Allowed both ways, stamped with the sender the broker knows. */
    (void)snprintf(topic, sizeof(topic), "upkeep/v1/dev/%s/events", dev);
    assert_int_equal(upk_h_client_publish(d, topic, "{}", 2, 1, false, "controller:ctl", &reason),
                     0);
    assert_int_equal(upk_h_client_wait_msg(ctl, 20.0, &msgbuf), 0);
    assert_string_equal(msgbuf.topic, topic);
    assert_int_equal(msgbuf.sender_count, 1);
    (void)snprintf(other, sizeof(other), "device:%s", dev);
    assert_string_equal(msgbuf.sender, other);
    (void)snprintf(topic, sizeof(topic), "upkeep/v1/dev/%s/desired", dev);
    assert_int_equal(upk_h_client_publish(ctl, topic, "d", 1, 1, true, NULL, &reason), 0);
    assert_int_equal(upk_h_client_wait_msg(d, 20.0, &msgbuf), 0);
    assert_string_equal(msgbuf.sender, "controller:ctl");
    assert_int_equal(upk_h_client_publish(ctl, topic, "", 0, 1, true, NULL, &reason), 0);
    e->published += 3;

    /* Denied: another device's topics, a wide filter, an oversized payload. */
    (void)snprintf(other, sizeof(other), "upkeep/v1/dev/not-%s/state", dev);
    assert_int_equal(upk_h_client_publish(d, other, "x", 1, 1, false, NULL, &reason), -1);
    assert_int_equal(reason, 0x87);
    assert_int_equal(upk_h_client_subscribe(d, "upkeep/v1/#", 1, &reason), -1);
    static char big[1500];
    memset(big, 'b', sizeof(big));
    (void)snprintf(topic, sizeof(topic), "upkeep/v1/dev/%s/state", dev);
    assert_int_equal(upk_h_client_publish(d, topic, big, sizeof(big), 1, false, NULL, &reason), -1);
    e->denied += 3;

    /* Bad logins: unknown, anonymous, another device's key, then wrong
     * passwords until the operator is locked out even with the right one. */
    refused(e, "x", "nobody", "pw", "unknown user");
    refused(e, "anon", NULL, NULL, "anonymous");
    devkey(flood, key, sizeof(key));
    refused(e, dev, dev, key, "device with another's key");
    for (int i = 0; i < 3; i++)
        refused(e, "op1-cli", "op1", "wrong", "wrong password");
    refused(e, "op1-cli", "op1", "op1-pw", "right password while locked out");

    /* A device with a will, taken over by its own identity. */
    upk_h_client *w = NULL;
    char wid[32];
    (void)snprintf(wid, sizeof(wid), "will-%u", r);
    devkey(wid, key, sizeof(key));
    (void)snprintf(topic, sizeof(topic), "upkeep/v1/dev/%s/online", wid);
    assert_int_equal(upk_h_client_connect_will(&w, e->b.port, wid, wid, key, topic, "0", &reason),
                     0);
    upk_h_client *w2 = login_device(e, wid);
    assert_true(upk_h_client_wait_disconnected(w, 20.0));
    upk_h_client_close(w2);
    upk_h_client_close(w);

    /* Flood until rate-limited and kicked, then held off. */
    upk_h_client *f = login_device(e, flood);
    (void)snprintf(topic, sizeof(topic), "upkeep/v1/dev/%s/events", flood);
    size_t dropped = 0;
    for (int i = 0; i < FLOOD_MAX && upk_h_client_connected(f); i++)
        if (upk_h_client_publish(f, topic, "f", 1, 1, false, NULL, &reason) != 0 && reason == 0x87)
            dropped++;
    assert_true(dropped > 0);
    if (!upk_h_client_wait_disconnected(f, 20.0)) {
        dump_vg(e);
        fail_msg("flooding device %s was not kicked (%zu dropped)", flood, dropped);
    }
    e->kicked++;
    devkey(flood, key, sizeof(key));
    refused(e, flood, flood, key, "flooding device during its hold-off");
    upk_h_client_close(f);

    upk_h_client_close(d);
    upk_h_client_close(ctl);
}

static unsigned rounds_wanted(void)
{
    const char *s = getenv("UPK_VG_ROUNDS");
    if (s == NULL || s[0] == '\0')
        return 1;
    char *end = NULL;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < 1 || v > ROUNDS_MAX)
        return 1;
    return (unsigned)v;
}

static void print_summary(env *e, unsigned rounds, double secs)
{
    FILE *f = fopen(e->vg_log, "r");
    assert_non_null(f);
    char line[512];
    printf("valgrind broker: %u rounds, %u logins ok, %u refused, %u denied, %u kicked, "
           "%u published, %.0f s\n",
           rounds, e->logins_ok, e->logins_refused, e->denied, e->kicked, e->published, secs);
    while (fgets(line, sizeof(line), f) != NULL)
        if (strstr(line, "ERROR SUMMARY") != NULL || strstr(line, "definitely lost") != NULL ||
            strstr(line, "indirectly lost") != NULL || strstr(line, "possibly lost") != NULL ||
            strstr(line, "in use at exit") != NULL || strstr(line, "total heap usage") != NULL ||
            strstr(line, "All heap blocks were freed") != NULL ||
            strstr(line, "suppressed:") != NULL)
            fputs(line, stdout);
    (void)fclose(f);
    (void)fflush(stdout);
}

static void broker_plugin_under_memcheck_without_leaks(void **state)
{
    env *e = *state;
    unsigned rounds = rounds_wanted();
    double t0 = upk_h_now();
    for (unsigned r = 0; r < rounds; r++) {
        traffic(e, r);
        /* The next round's operator lockout must start from a clean slate. */
        if (r + 1 < rounds) {
            double deadline = upk_h_now() + 30.0;
            upk_h_client *c = NULL;
            int reason = 0;
            while (upk_h_client_connect(&c, e->b.port, "op1-cli", "op1", "op1-pw", &reason) != 0) {
                if (upk_h_now() > deadline)
                    fail_msg("lockout did not expire");
                struct timespec ts = {0, 200 * 1000 * 1000};
                (void)nanosleep(&ts, NULL); /* polling an expiry: no event to await */
            }
            upk_h_client_close(c);
        }
    }
    assert_true(upk_h_file_contains(e->b.log, "lockout user=op1"));
    assert_true(upk_h_file_contains(e->b.log, "flooding user=flood-0"));
    int rc = upk_h_broker_stop_wait(&e->b, STOP_S);
    print_summary(e, rounds, upk_h_now() - t0);
    if (rc != 0 || !upk_h_file_contains(e->vg_log, "ERROR SUMMARY: 0 errors from 0 contexts")) {
        dump_vg(e);
        fail_msg("mosquitto + plugin under valgrind exited with %d (99 = memcheck errors or "
                 "leaks)",
                 rc);
    }
}

int main(void)
{
    if (VALGRIND_BIN[0] == '\0') {
        printf("SKIP: valgrind not installed\n");
        return SKIP_RC;
    }
    (void)signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(broker_plugin_under_memcheck_without_leaks, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
