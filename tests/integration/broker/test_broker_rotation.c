/* Integration test of device password rotation (credential epochs): a real
 * mosquitto with upkeep_broker.so and a device_epochs_file, Paho MQTT 5
 * clients. After an operator raises dev-a's minimum epoch to 1 (a new file
 * renamed over the old one, as docs/broker-plugin.md says): the connected
 * session that used the old password is disconnected, the old password is
 * refused, the new one (printed by `upkeep device-key --epoch 1`) is
 * accepted and its messages flow, and dev-b, whose entry did not change,
 * is unaffected. A broken table file is logged and the one in use is kept;
 * SIGHUP re-reads the file at once; a broken file at start stops the broker. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "upkeep/devkey.h"

#define SECRET "rotation-fleet-secret-0123456789"
#define EVENTS "upkeep/v1/dev/+/events"

struct env {
    char dir[UPK_H_PATH_MAX];
    upk_h_broker b;
};

static upk_h_msg msgbuf; /* large; one at a time */

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

/* A broker whose device_epochs_file starts as `table`, checked every
 * check_s seconds. */
static int env_setup_with(void **state, const char *table, int check_s)
{
    char cfg[1024], conf[2048];
    struct env *e = calloc(1, sizeof(*e));
    if (e == NULL)
        return -1;
    snprintf(cfg, sizeof(cfg),
             "{\"password_file\":\"passwd\",\"accounts\":{\"ctl\":\"controller\"},"
             "\"fleet_secret_file\":\"fleet.secret\",\"device_epochs_file\":\"epochs\","
             "\"device_epochs_check_seconds\":%d,"
             "\"lockout\":{\"max_failures_per_username\":0,\"max_failures_per_address\":0}}",
             check_s);
    if (upk_h_tmpdir(e->dir, sizeof(e->dir)) != 0 || upk_h_write_file(e->dir, "passwd", "") != 0 ||
        add_user(e->dir, "ctl", "ctl-pw") != 0 ||
        upk_h_write_file(e->dir, "fleet.secret", SECRET "\n") != 0 ||
        upk_h_write_file(e->dir, "epochs", table) != 0 ||
        upk_h_write_file(e->dir, "upkeep.json", cfg) != 0)
        goto fail;
    snprintf(conf, sizeof(conf),
             "allow_anonymous false\nplugin %s\nplugin_opt_config %s/upkeep.json\n"
             "log_dest stderr\nlog_type all\n",
             UPK_BROKER_PLUGIN, e->dir);
    if (upk_h_broker_start(&e->b, e->dir, conf, 10.0) != 0)
        goto fail;
    *state = e;
    return 0;
fail:
    upk_h_rmtree(e->dir);
    free(e);
    return -1;
}

static int setup_rotation(void **state)
{
    return env_setup_with(state, "# device minimum-epoch\n", 1);
}

/* Checked once an hour: only SIGHUP makes the plugin read it in time. */
static int setup_sighup(void **state)
{
    return env_setup_with(state, "dev-a 1\n", 3600);
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

/* Occurrences of needle in the file at path. */
static int count_in_file(const char *path, const char *needle)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return 0;
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    int count = 0;
    for (const char *p = buf; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        count++;
    return count;
}

/* Waits (at most timeout_s) until the broker log holds more than `before`
 * occurrences of needle. */
static void wait_log(struct env *e, const char *needle, int before, double timeout_s)
{
    double deadline = upk_h_now() + timeout_s;
    while (count_in_file(e->b.log, needle) <= before) {
        if (upk_h_now() > deadline) {
            upk_h_broker_dump_log(e->dir);
            fail_msg("the broker log did not show '%s' within %.0f s", needle, timeout_s);
        }
        struct timespec ts = {0, 50000000L};
        nanosleep(&ts, NULL);
    }
}

/* Replaces the table the documented way: a new file renamed over the old. */
static void put_table(struct env *e, const char *text)
{
    char tmp[UPK_H_PATH_MAX + 32], path[UPK_H_PATH_MAX + 32];
    assert_int_equal(upk_h_write_file(e->dir, "epochs.new", text), 0);
    snprintf(tmp, sizeof(tmp), "%s/epochs.new", e->dir);
    snprintf(path, sizeof(path), "%s/epochs", e->dir);
    assert_int_equal(rename(tmp, path), 0);
}

/* The password of id at epoch: from `upkeep device-key --epoch` when the
 * controller is built (checked against the library), else the library's. */
static void password(struct env *e, const char *id, uint32_t epoch, char *out, size_t cap)
{
    assert_true(cap > UPK_DEVKEY_MAX);
    assert_int_equal(upk_devkey_derive_epoch(SECRET, strlen(SECRET), id, epoch, out, cap), UPK_OK);
#ifdef UPK_UPKEEP_BIN
    char cmd[2048], got[256] = "";
    snprintf(cmd, sizeof(cmd), "%s device-key --secret-file %s/fleet.secret --epoch %u %s",
             UPK_UPKEEP_BIN, e->dir, (unsigned)epoch, id);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    if (fgets(got, sizeof(got), p) == NULL)
        got[0] = '\0';
    assert_int_equal(pclose(p), 0);
    got[strcspn(got, "\n")] = '\0';
    assert_string_equal(got, out);
#else
    (void)e;
#endif
}

static upk_h_client *login(struct env *e, const char *id, const char *user, const char *pass)
{
    upk_h_client *c = NULL;
    int reason = 0;
    if (upk_h_client_connect(&c, e->b.port, id, user, pass, &reason) != 0) {
        upk_h_broker_dump_log(e->dir);
        fail_msg("login %s refused, reason %d", id, reason);
    }
    return c;
}

static void refused(struct env *e, const char *id, const char *pass, const char *what)
{
    upk_h_client *c = NULL;
    int reason = 0;
    if (upk_h_client_connect(&c, e->b.port, id, id, pass, &reason) == 0) {
        upk_h_client_close(c);
        upk_h_broker_dump_log(e->dir);
        fail_msg("%s was accepted", what);
    }
    if (reason != 0x86 && reason != 0x87)
        fail_msg("%s: unexpected CONNACK reason %d", what, reason);
}

/* dev publishes one event; the controller must receive exactly it. */
static void event_arrives(upk_h_client *dev, const char *id, upk_h_client *ctl, const char *body)
{
    char topic[128];
    int reason = 0;
    snprintf(topic, sizeof(topic), "upkeep/v1/dev/%s/events", id);
    assert_int_equal(upk_h_client_publish(dev, topic, body, strlen(body), 1, false, NULL, &reason),
                     0);
    assert_int_equal(upk_h_client_wait_msg(ctl, 5.0, &msgbuf), 0);
    assert_string_equal(msgbuf.topic, topic);
    assert_string_equal(msgbuf.payload, body);
}

static void rotation_revokes_old_password_only(void **state)
{
    struct env *e = *state;
    char a0[UPK_DEVKEY_MAX + 1], a1[UPK_DEVKEY_MAX + 1], b0[UPK_DEVKEY_MAX + 1];
    int reason = 0;
    password(e, "dev-a", 0, a0, sizeof(a0));
    password(e, "dev-a", 1, a1, sizeof(a1));
    password(e, "dev-b", 0, b0, sizeof(b0));
    int reads = count_in_file(e->b.log, "' read: ");

    upk_h_client *ctl = login(e, "ctl", "ctl", "ctl-pw");
    assert_int_equal(upk_h_client_subscribe(ctl, EVENTS, 1, &reason), 0);
    /* Step 1 of the procedure: the device gets its epoch-1 password, which
     * works alongside the old one until the minimum is raised. */
    upk_h_client *a = login(e, "dev-a", "dev-a", a1);
    event_arrives(a, "dev-a", ctl, "a-new-before");
    upk_h_client_close(a);
    /* Whoever sniffed the old password is connected with it, and so is dev-b. */
    upk_h_client *thief = login(e, "dev-a", "dev-a", a0);
    event_arrives(thief, "dev-a", ctl, "thief-before");
    upk_h_client *b = login(e, "dev-b", "dev-b", b0);

    /* Step 2: raise dev-a's minimum to 1. */
    put_table(e, "# device minimum-epoch\ndev-a 1\n");
    wait_log(e, "' read: 1 devices listed", 0, 10.0);
    assert_true(count_in_file(e->b.log, "' read: ") > reads);
    /* The thief's session is closed by the broker, without its will. */
    assert_true(upk_h_client_wait_disconnected(thief, 5.0));
    assert_true(upk_h_file_contains(e->b.log, "disconnecting user=dev-a client=dev-a: its "
                                              "password's epoch 0 is below the device's new "
                                              "minimum 1"));
    upk_h_client_close(thief);
    /* The old password is refused from now on, by name in the log. */
    refused(e, "dev-a", a0, "dev-a's revoked epoch-0 password");
    assert_true(upk_h_file_contains(e->b.log, "user=dev-a client=dev-a"));
    assert_true(upk_h_file_contains(e->b.log, "revoked epoch"));
    /* The new one is accepted and its events arrive. */
    a = login(e, "dev-a", "dev-a", a1);
    event_arrives(a, "dev-a", ctl, "a-new-after");
    /* dev-b: still connected, its events arrive, its password still logs in. */
    assert_true(upk_h_client_connected(b));
    event_arrives(b, "dev-b", ctl, "b-after");
    upk_h_client_close(b);
    b = login(e, "dev-b", "dev-b", b0);
    event_arrives(b, "dev-b", ctl, "b-relogin");
    /* Nothing else reached the controller (the thief's session said nothing
     * after the raise: no will, no message). */
    assert_int_equal(upk_h_client_wait_msg(ctl, 0.5, &msgbuf), -1);
    assert_true(upk_h_client_connected(a));
    upk_h_client_close(a);
    upk_h_client_close(b);
    upk_h_client_close(ctl);
}

/* Runs after rotation_revokes_old_password_only on the same broker (dev-a's
 * minimum is 1). */
static void broken_table_keeps_the_one_in_use(void **state)
{
    struct env *e = *state;
    char a0[UPK_DEVKEY_MAX + 1], a1[UPK_DEVKEY_MAX + 1];
    password(e, "dev-a", 0, a0, sizeof(a0));
    password(e, "dev-a", 1, a1, sizeof(a1));
    int kept = count_in_file(e->b.log, "keeping the table in use (1 devices listed)");
    /* An edit with a bad line: logged, nothing lowered. */
    put_table(e, "dev-b 1\ndev-a one\n");
    wait_log(e, "keeping the table in use (1 devices listed)", kept, 10.0);
    assert_true(upk_h_file_contains(e->b.log, "line 2: device 'dev-a': minimum epoch"));
    refused(e, "dev-a", a0, "dev-a's epoch-0 password after a broken table");
    upk_h_client_close(login(e, "dev-a", "dev-a", a1));
    /* A table that went missing: logged, nothing lowered. */
    char path[UPK_H_PATH_MAX + 32];
    snprintf(path, sizeof(path), "%s/epochs", e->dir);
    assert_int_equal(unlink(path), 0);
    wait_log(e, "cannot read it (No such file or directory); keeping the table in use", 0, 10.0);
    refused(e, "dev-a", a0, "dev-a's epoch-0 password after the table went missing");
    /* A valid table replaces it, and may lower a minimum on purpose. */
    int reads = count_in_file(e->b.log, "' read: ");
    put_table(e, "dev-a 0\n");
    wait_log(e, "' read: ", reads, 10.0);
    upk_h_client_close(login(e, "dev-a", "dev-a", a0));
}

static void sighup_rereads_the_table(void **state)
{
    struct env *e = *state;
    char c0[UPK_DEVKEY_MAX + 1], c2[UPK_DEVKEY_MAX + 1];
    password(e, "dev-c", 0, c0, sizeof(c0));
    password(e, "dev-c", 2, c2, sizeof(c2));
    upk_h_client_close(login(e, "dev-c", "dev-c", c0));
    int reads = count_in_file(e->b.log, "' read: ");
    put_table(e, "dev-a 1\ndev-c 2\n");
    assert_int_equal(kill(e->b.pid, SIGHUP), 0);
    wait_log(e, "' read: 2 devices listed", 0, 10.0);
    assert_true(count_in_file(e->b.log, "' read: ") > reads);
    refused(e, "dev-c", c0, "dev-c's epoch-0 password after SIGHUP");
    upk_h_client_close(login(e, "dev-c", "dev-c", c2));
}

/* A broken table at start stops the broker, naming the file and line. */
static void broken_table_at_start_refused(void **state)
{
    (void)state;
    char dir[UPK_H_PATH_MAX], conf[2048], log[UPK_H_PATH_MAX + 32];
    assert_int_equal(upk_h_tmpdir(dir, sizeof(dir)), 0);
    assert_int_equal(upk_h_write_file(dir, "fleet.secret", SECRET "\n"), 0);
    assert_int_equal(upk_h_write_file(dir, "epochs", "dev-a 1\ndev-a 2\n"), 0);
    assert_int_equal(upk_h_write_file(dir, "upkeep.json",
                                      "{\"fleet_secret_file\":\"fleet.secret\","
                                      "\"device_epochs_file\":\"epochs\"}"),
                     0);
    snprintf(conf, sizeof(conf),
             "allow_anonymous false\nplugin %s\nplugin_opt_config %s/upkeep.json\n"
             "log_dest stdout\n",
             UPK_BROKER_PLUGIN, dir);
    int st = upk_h_broker_run_expect_exit(dir, conf, 10.0);
    snprintf(log, sizeof(log), "%s/mosquitto.log", dir);
    bool named = upk_h_file_contains(log, "epochs': line 2: device 'dev-a' is listed twice");
    if (st <= 0 || !named)
        upk_h_broker_dump_log(dir);
    upk_h_rmtree(dir);
    assert_true(st > 0);
    assert_true(named);
}

int main(void)
{
    if (getenv("UPK_TEST_FILTER") != NULL)
        cmocka_set_test_filter(getenv("UPK_TEST_FILTER"));
    const struct CMUnitTest rotation[] = {
        cmocka_unit_test(rotation_revokes_old_password_only),
        cmocka_unit_test(broken_table_keeps_the_one_in_use),
    };
    const struct CMUnitTest sighup[] = {
        cmocka_unit_test(sighup_rereads_the_table),
    };
    const struct CMUnitTest start[] = {
        cmocka_unit_test(broken_table_at_start_refused),
    };
    int failed = cmocka_run_group_tests_name("rotation", rotation, setup_rotation, env_teardown);
    failed += cmocka_run_group_tests_name("sighup", sighup, setup_sighup, env_teardown);
    failed += cmocka_run_group_tests_name("start", start, NULL, NULL);
    return failed;
}
