/* Integration test of upkeep-sim against a real mosquitto with
 * upkeep_broker.so: N simulated agents connect with their own derived
 * credentials, publish their retained state (seen by an admin subscriber,
 * stamped by the plugin with each device's own identity), report through
 * the status file, and leave no temporary data behind after SIGTERM. A
 * wrong fleet secret connects nobody; bad arguments exit with status 2. */
#include <dirent.h>
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
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"
#include "upkeep/key.h"
#include "upkeep/linkauth.h"

#define SECRET      "sim-test-fleet-secret-0123456789"
#define LINK_SECRET "sim-test-link-secret-0123456789"
#define FLEET       40

struct env {
    pid_t sim; /* process group of the running simulator, 0 when none */
    upk_h_client *client;
    char dir[UPK_H_PATH_MAX];
    char shm[UPK_H_PATH_MAX + 16]; /* UPK_SIM_TMPDIR of the simulator */
    upk_h_broker b;
    char url[64];
};

static int run_wait(char *const argv[])
{
    pid_t pid = fork();
    if (pid == 0) {
        execvp(argv[0], argv);
        _exit(127);
    }
    int st = 0;
    if (pid < 0 || waitpid(pid, &st, 0) != pid)
        return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int write_pubkey(const char *dir)
{
    upk_key *k = NULL;
    char *pem = NULL;
    int rc = -1;
    if (upk_key_generate(&k) != UPK_OK)
        return -1;
    if (upk_key_public_pem(k, &pem) == UPK_OK && upk_h_write_file(dir, "pub.pem", pem) == 0)
        rc = 0;
    free(pem);
    upk_key_free(k);
    return rc;
}

static int setup(void **state)
{
    struct env *e = calloc(1, sizeof(*e));
    if (e == NULL || upk_h_tmpdir(e->dir, sizeof(e->dir)) != 0)
        goto fail;
    char pwfile[UPK_H_PATH_MAX + 16];
    snprintf(pwfile, sizeof(pwfile), "%s/passwd", e->dir);
    snprintf(e->shm, sizeof(e->shm), "%s/simtmp", e->dir);
    char *mp[] = {(char *)UPK_MOSQUITTO_PASSWD, "-c", "-b", pwfile, "root", "root-pw", NULL};
    if (mkdir(e->shm, 0700) != 0 || upk_h_write_file(e->dir, "fleet.secret", SECRET "\n") != 0 ||
        upk_h_write_file(e->dir, "link.secret", LINK_SECRET "\n") != 0 ||
        upk_h_write_file(e->dir, "short.secret", "too-short\n") != 0 ||
        upk_h_write_file(e->dir, "wrong.secret", "not-the-fleet-secret-at-all\n") != 0 ||
        run_wait(mp) != 0 || write_pubkey(e->dir) != 0 ||
        upk_h_write_file(e->dir, "upkeep.json",
                         "{\"password_file\":\"passwd\",\"fleet_secret_file\":\"fleet.secret\","
                         "\"accounts\":{\"root\":\"admin\"},"
                         "\"lockout\":{\"max_failures_per_username\":0,"
                         "\"max_failures_per_address\":0}}") != 0)
        goto fail;
    char conf[2048];
    snprintf(conf, sizeof(conf),
             "allow_anonymous false\nplugin %s\nplugin_opt_config %s/upkeep.json\n"
             "log_dest stderr\n",
             UPK_BROKER_PLUGIN, e->dir);
    if (upk_h_broker_start(&e->b, e->dir, conf, 10.0) != 0)
        goto fail;
    snprintf(e->url, sizeof(e->url), "tcp://127.0.0.1:%d", e->b.port);
    *state = e;
    return 0;
fail:
    if (e != NULL && e->dir[0] != '\0')
        upk_h_rmtree(e->dir);
    free(e);
    return -1;
}

static int teardown(void **state)
{
    struct env *e = *state;
    if (e == NULL)
        return 0;
    if (e->sim > 0) {
        /* A failed assertion left it running: end its whole process group. */
        (void)kill(-e->sim, SIGKILL);
        (void)waitpid(e->sim, NULL, 0);
    }
    upk_h_client_close(e->client);
    upk_h_broker_stop(&e->b);
    upk_h_rmtree(e->dir);
    free(e);
    return 0;
}

/* Starts upkeep-sim with the env's broker and extra args (NULL-ended). */
static pid_t start_sim(struct env *e, const char *secret_file, ...)
{
    char *argv[64];
    int n = 0;
    static char secret[UPK_H_PATH_MAX + 32], pub[UPK_H_PATH_MAX + 32];
    snprintf(secret, sizeof(secret), "%s/%s", e->dir, secret_file);
    snprintf(pub, sizeof(pub), "%s/pub.pem", e->dir);
    argv[n++] = (char *)UPK_SIM_BIN;
    argv[n++] = "--broker";
    argv[n++] = e->url;
    argv[n++] = "--fleet-secret-file";
    argv[n++] = secret;
    argv[n++] = "--keys";
    argv[n++] = pub;
    va_list ap;
    va_start(ap, secret_file);
    const char *a;
    while ((a = va_arg(ap, const char *)) != NULL && n < 62)
        argv[n++] = (char *)a;
    va_end(ap);
    argv[n] = NULL;
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        (void)setpgid(0, 0);
        setenv("UPK_SIM_TMPDIR", e->shm, 1);
        execv(argv[0], argv);
        _exit(127);
    }
    if (pid > 0) {
        (void)setpgid(pid, pid);
        e->sim = pid;
    }
    return pid;
}

/* Waits up to timeout_s for pid to exit; its exit status, or -1 (then it
 * is killed). */
static int wait_exit(struct env *e, pid_t pid, double timeout_s)
{
    e->sim = 0;
    double end = upk_h_now() + timeout_s;
    int st = 0;
    while (upk_h_now() < end) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        usleep(20000);
    }
    kill(pid, SIGKILL);
    (void)waitpid(pid, &st, 0);
    return -1;
}

/* Reads a number field of the status file; -1 when absent. */
static long status_field(const char *path, const char *key)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    char buf[4096];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char pat[64];
    snprintf(pat, sizeof(pat), "\"%s\":", key);
    const char *p = strstr(buf, pat);
    return p != NULL ? strtol(p + strlen(pat), NULL, 10) : -1;
}

static bool wait_status(const char *path, const char *key, long want, double timeout_s)
{
    double end = upk_h_now() + timeout_s;
    while (upk_h_now() < end) {
        if (status_field(path, key) == want)
            return true;
        usleep(50000);
    }
    return false;
}

static size_t dir_entries(const char *path)
{
    DIR *d = opendir(path);
    if (d == NULL)
        return 0;
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
            n++;
    }
    closedir(d);
    return n;
}

static void fleet_connects_with_own_credentials(struct env *e, int procs)
{
    int reason = 0;
    assert_int_equal(
        upk_h_client_connect(&e->client, e->b.port, "watcher", "root", "root-pw", &reason), 0);
    upk_h_client *c = e->client;
    assert_int_equal(upk_h_client_subscribe(c, "upkeep/v1/dev/+/state", 1, &reason), 0);

    char status[UPK_H_PATH_MAX + 32], nprocs[8];
    snprintf(status, sizeof(status), "%s/status.json", e->dir);
    snprintf(nprocs, sizeof(nprocs), "%d", procs);
    pid_t pid =
        start_sim(e, "fleet.secret", "--count", "40", "--hw", "rev-a:50%,rev-b:50%", "--id-prefix",
                  "fl-", "--status-file", status, "--procs", nprocs, "--quiet", (char *)NULL);
    assert_true(pid > 0);

    /* Every device's retained state arrives once, stamped with its own id. */
    static upk_h_msg m;
    bool seen[FLEET + 1];
    memset(seen, 0, sizeof(seen));
    int got = 0, rev_a = 0, rev_b = 0;
    double end = upk_h_now() + 60.0;
    while (got < FLEET && upk_h_now() < end) {
        if (upk_h_client_wait_msg(c, 1.0, &m) != 0)
            continue;
        const char *id = m.topic + strlen("upkeep/v1/dev/");
        char dev[64];
        size_t len = strcspn(id, "/");
        assert_true(len < sizeof(dev));
        memcpy(dev, id, len);
        dev[len] = '\0';
        assert_int_equal(strncmp(dev, "fl-", 3), 0);
        long num = strtol(dev + 3, NULL, 10);
        assert_true(num >= 1 && num <= FLEET);
        char want_sender[80];
        snprintf(want_sender, sizeof(want_sender), "device:%s", dev);
        assert_int_equal(m.sender_count, 1);
        assert_string_equal(m.sender, want_sender);
        assert_int_equal(m.auth_count, 0); /* no link secret: legacy agents */
        assert_non_null(strstr(m.payload, "\"status\":\"idle\""));
        if (!seen[num]) {
            seen[num] = true;
            got++;
            if (strstr(m.payload, "\"hw\":\"rev-a\"") != NULL)
                rev_a++;
            else if (strstr(m.payload, "\"hw\":\"rev-b\"") != NULL)
                rev_b++;
        }
    }
    assert_int_equal(got, FLEET);
    assert_int_equal(rev_a, FLEET / 2);
    assert_int_equal(rev_b, FLEET / 2);
    assert_true(wait_status(status, "connected", FLEET, 20.0));
    assert_int_equal(status_field(status, "idle"), FLEET);

    /* SIGTERM: every agent closed, exit 0, temporary data removed. */
    assert_int_equal(kill(pid, SIGTERM), 0);
    assert_int_equal(wait_exit(e, pid, 30.0), 0);
    assert_int_equal(dir_entries(e->shm), 0);
}

static void fleet_one_process(void **state)
{
    fleet_connects_with_own_credentials(*state, 1);
}

static void fleet_split_over_processes(void **state)
{
    fleet_connects_with_own_credentials(*state, 3);
}

/* With --link-secret-file each device tags its messages with its own link
 * key, derived as the controller derives it, and the broker plugin passes
 * the tag through beside its upkeep-sender stamp. */
static void link_secret_tags_each_device_with_its_own_key(void **state)
{
    struct env *e = *state;
    int reason = 0;
    assert_int_equal(
        upk_h_client_connect(&e->client, e->b.port, "watcher", "root", "root-pw", &reason), 0);
    upk_h_client *c = e->client;
    assert_int_equal(upk_h_client_subscribe(c, "upkeep/v1/dev/+/state", 1, &reason), 0);
    char status[UPK_H_PATH_MAX + 32], link[UPK_H_PATH_MAX + 32];
    snprintf(status, sizeof(status), "%s/status.json", e->dir);
    snprintf(link, sizeof(link), "%s/link.secret", e->dir);
    pid_t pid =
        start_sim(e, "fleet.secret", "--count", "6", "--id-prefix", "lk-", "--link-secret-file",
                  link, "--status-file", status, "--quiet", (char *)NULL);
    assert_true(pid > 0);
    static upk_h_msg m;
    bool seen[7] = {false};
    int got = 0;
    double end = upk_h_now() + 60.0;
    while (got < 6 && upk_h_now() < end) {
        if (upk_h_client_wait_msg(c, 1.0, &m) != 0)
            continue;
        char dev[64];
        const char *id = m.topic + strlen("upkeep/v1/dev/");
        size_t len = strcspn(id, "/");
        assert_true(len < sizeof(dev));
        memcpy(dev, id, len);
        dev[len] = '\0';
        long num = strtol(dev + 3, NULL, 10);
        assert_true(num >= 1 && num <= 6);
        assert_int_equal(m.auth_count, 1);
        upk_link_key k, other;
        assert_int_equal(upk_link_key_derive(LINK_SECRET, strlen(LINK_SECRET), dev, &k), UPK_OK);
        assert_int_equal(upk_link_verify(&k, dev, UPK_TOPIC_DEV_STATE, m.payload, m.len, m.auth),
                         UPK_OK);
        /* Not valid under another device's key, nor on another topic. */
        assert_int_equal(upk_link_key_derive(LINK_SECRET, strlen(LINK_SECRET), "lk-0", &other),
                         UPK_OK);
        assert_int_equal(
            upk_link_verify(&other, dev, UPK_TOPIC_DEV_STATE, m.payload, m.len, m.auth),
            UPK_E_AUTH_INVALID);
        assert_int_equal(upk_link_verify(&k, dev, UPK_TOPIC_DEV_EVENTS, m.payload, m.len, m.auth),
                         UPK_E_AUTH_INVALID);
        if (!seen[num]) {
            seen[num] = true;
            got++;
        }
    }
    assert_int_equal(got, 6);
    assert_int_equal(kill(pid, SIGTERM), 0);
    assert_int_equal(wait_exit(e, pid, 30.0), 0);
    assert_int_equal(dir_entries(e->shm), 0);
}

static void wrong_fleet_secret_connects_nobody(void **state)
{
    struct env *e = *state;
    char status[UPK_H_PATH_MAX + 32];
    snprintf(status, sizeof(status), "%s/status.json", e->dir);
    pid_t pid = start_sim(e, "wrong.secret", "--count", "5", "--status-file", status, "--quiet",
                          "--duration", "4", (char *)NULL);
    assert_true(pid > 0);
    assert_true(wait_status(status, "started", 5, 20.0));
    /* Refused CONNECTs come back at once; the sim keeps retrying with
     * backoff and its own --duration ends it. */
    assert_int_equal(wait_exit(e, pid, 30.0), 0);
    assert_int_equal(status_field(status, "connected"), 0);
}

static void bad_arguments_exit_2(void **state)
{
    struct env *e = *state;
    pid_t pid = start_sim(e, "fleet.secret", "--count", "0", (char *)NULL);
    assert_int_equal(wait_exit(e, pid, 10.0), 2);
    pid = start_sim(e, "fleet.secret", "--count", "3", "--fail", "rev-z:0.5", (char *)NULL);
    assert_int_equal(wait_exit(e, pid, 10.0), 2);
    pid = start_sim(e, "fleet.secret", "--count", "3", "--hw", "rev-a:0%", (char *)NULL);
    assert_int_equal(wait_exit(e, pid, 10.0), 2);
    pid = start_sim(e, "missing.secret", "--count", "3", (char *)NULL);
    assert_int_equal(wait_exit(e, pid, 10.0), 2);
    pid = start_sim(e, "fleet.secret", "--count", "3", "--id-prefix", "bad/", (char *)NULL);
    assert_int_equal(wait_exit(e, pid, 10.0), 2);
    char path[UPK_H_PATH_MAX + 32];
    snprintf(path, sizeof(path), "%s/short.secret", e->dir);
    pid = start_sim(e, "fleet.secret", "--count", "3", "--link-secret-file", path, (char *)NULL);
    assert_int_equal(wait_exit(e, pid, 10.0), 2);
    snprintf(path, sizeof(path), "%s/missing.secret", e->dir);
    pid = start_sim(e, "fleet.secret", "--count", "3", "--link-secret-file", path, (char *)NULL);
    assert_int_equal(wait_exit(e, pid, 10.0), 2);
    assert_int_equal(dir_entries(e->shm), 0);
}

int main(void)
{
    (void)signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(fleet_one_process, setup, teardown),
        cmocka_unit_test_setup_teardown(fleet_split_over_processes, setup, teardown),
        cmocka_unit_test_setup_teardown(link_secret_tags_each_device_with_its_own_key, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(wrong_fleet_secret_connects_nobody, setup, teardown),
        cmocka_unit_test_setup_teardown(bad_arguments_exit_2, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
