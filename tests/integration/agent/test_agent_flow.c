/* upkeep-agent against a real mosquitto on loopback, with a stand-in for
 * the controller: full updates with each module, every rejection case, a
 * failing health check, resume after kill -9 and after a broker restart,
 * kill -9 at each state, cancel and supersede. The agent runs as its own
 * process (the binary under test); the stand-in runs on this test's loop. */
#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
#include <netinet/in.h>
#include <pwd.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "standin.h"
#include "upkeep/fs.h"
#ifdef UPK_HAVE_DELTA
#include "upkeep/delta.h"
#endif

#ifndef AGENT_BIN
#error AGENT_BIN must name the upkeep-agent binary
#endif

#define ART_LEN (256u * 1024u + 123u)

typedef struct env {
    char dir[256];
    char data_dir[512], target[512], cfg_path[512], key_path[512], ab_root[512];
    char modules_dir[512]; /* "" = the examples' modules */
    char url[64];
    int port;
    pid_t broker;
    pid_t agent;
    uv_loop_t loop;
    standin s;
    upk_key *key, *other;
    char device[UPK_ID_MAX + 1];
    uint8_t *art;
    uint8_t *art2;
    int64_t now;
} env;

static char *tmp_root(char *buf, size_t cap)
{
    const char *base = getenv("TMPDIR");
    (void)snprintf(buf, cap, "%s/upk-agent-it-XXXXXX", base != NULL && *base ? base : "/tmp");
    return mkdtemp(buf);
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t l = sizeof(a);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &l) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return ntohs(a.sin_port);
}

static bool can_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)port);
    bool ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

static double now_mono(void)
{
    struct timespec ts;
    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void tick(uv_timer_t *t)
{
    (void)t;
}

/* Runs the loop until pred(e) or timeout_s; returns pred's last value. */
static bool wait_for(env *e, bool (*pred)(env *, const void *), const void *arg, double timeout_s)
{
    uv_timer_t t;
    (void)uv_timer_init(&e->loop, &t);
    (void)uv_timer_start(&t, tick, 10, 10);
    double end = now_mono() + timeout_s;
    bool ok = pred(e, arg);
    while (!ok && now_mono() < end) {
        (void)uv_run(&e->loop, UV_RUN_ONCE);
        ok = pred(e, arg);
    }
    uv_close((uv_handle_t *)&t, NULL);
    (void)uv_run(&e->loop, UV_RUN_NOWAIT);
    return ok;
}

/* Starts mosquitto on e->port; true once it accepts connections. False when
 * it exited (e.g. the port was taken meanwhile) or did not come up in 10 s;
 * nothing is left running then. */
static bool broker_try_start(env *e)
{
    char conf[600], text[1024];
    (void)snprintf(conf, sizeof(conf), "%s/mosquitto.conf", e->dir);
    /* As root, mosquitto drops to its own user unless told to stay. */
    struct passwd *pw = getpwuid(getuid());
    (void)snprintf(text, sizeof(text),
                   "listener %d 127.0.0.1\nallow_anonymous true\npersistence true\n"
                   "persistence_location %s/\nlog_dest file %s/mosquitto.log\nuser %s\n",
                   e->port, e->dir, e->dir, pw != NULL ? pw->pw_name : "root");
    if (upk_fs_write_atomic(conf, text, strlen(text)) != UPK_OK)
        return false;
    e->broker = fork();
    if (e->broker < 0) {
        e->broker = 0;
        return false;
    }
    if (e->broker == 0) {
        (void)prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive a killed test */
        execl(MOSQUITTO_BIN, "mosquitto", "-c", conf, (char *)NULL);
        _exit(127);
    }
    double end = now_mono() + 10;
    while (!can_connect(e->port) && now_mono() < end) {
        int st;
        if (waitpid(e->broker, &st, WNOHANG) == e->broker) {
            e->broker = 0; /* it gave up: the port was taken */
            return false;
        }
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL); /* polling a port: nothing to await */
    }
    if (can_connect(e->port))
        return true;
    (void)kill(e->broker, SIGKILL);
    (void)waitpid(e->broker, NULL, 0);
    e->broker = 0;
    return false;
}

/* Restarts on the same port (the agent's config names it). */
static void broker_start(env *e)
{
    assert_true(broker_try_start(e));
}

static void reap(pid_t *pid, int sig)
{
    if (*pid <= 0)
        return;
    (void)kill(*pid, sig);
    int st;
    while (waitpid(*pid, &st, 0) < 0 && errno == EINTR)
        ;
    *pid = 0;
}

static void agent_start(env *e)
{
    char log[600];
    (void)snprintf(log, sizeof(log), "%s/agent.log", e->dir);
    e->agent = fork();
    assert_true(e->agent >= 0);
    if (e->agent == 0) {
        (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd >= 0) {
            (void)dup2(fd, 2);
            (void)dup2(fd, 1);
        }
        execl(AGENT_BIN, "upkeep-agent", "-c", e->cfg_path, "-l", "debug", (char *)NULL);
        _exit(127);
    }
}

static void dump_agent_log(env *e)
{
    char p[600];
    (void)snprintf(p, sizeof(p), "%s/agent.log", e->dir);
    char *buf = NULL;
    size_t len = 0;
    if (upk_fs_read(p, 1u << 20, &buf, &len) == UPK_OK) {
        fprintf(stderr, "---- agent log ----\n%s\n-------------------\n", buf);
        free(buf);
    }
}

/* Writes the agent config: module and its settings JSON, optional health
 * command JSON array, optional extra fields. */
static void write_config(env *e, const char *module, const char *settings, const char *health,
                         const char *extra)
{
    char text[4096];
    (void)snprintf(text, sizeof(text),
                   "{\"broker\":\"%s\",\"device_id\":\"%s\",\"hardware\":\"hw-1\","
                   "\"data_dir\":\"%s\",\"keys\":[\"%s\"],\"module\":\"%s\","
                   "\"module_settings\":%s,\"modules_dir\":\"%s\",%s%s%s"
                   "\"support_until\":\"2031-01-01\",\"reconnect_min_ms\":100,"
                   "\"reconnect_max_ms\":400,\"limits\":{\"chunk_size\":16384,"
                   "\"chunks_in_flight\":4,\"chunk_timeout_ms\":500,\"ack_timeout_ms\":1000,"
                   "\"step_timeout_s\":20}%s%s}",
                   e->url, e->device, e->data_dir, e->key_path, module, settings,
                   e->modules_dir[0] != '\0' ? e->modules_dir : MODULES_DIR,
                   health != NULL ? "\"health_check\":{\"command\":" : "",
                   health != NULL ? health : "", health != NULL ? ",\"timeout_s\":2}," : "",
                   extra != NULL ? "," : "", extra != NULL ? extra : "");
    assert_int_equal(upk_fs_write_atomic(e->cfg_path, text, strlen(text)), UPK_OK);
}

static void fill_random(uint8_t *p, size_t n, unsigned seed)
{
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        p[i] = (uint8_t)x;
    }
}

static void make_manifest(env *e, upk_manifest *m, const char *version, uint64_t secver,
                          const uint8_t *art, size_t len, const char *module)
{
    memset(m, 0, sizeof(*m));
    (void)snprintf(m->name, sizeof(m->name), "fw");
    (void)snprintf(m->version, sizeof(m->version), "%s", version);
    m->security_version = secver;
    m->hw_count = 1;
    (void)snprintf(m->hw[0], sizeof(m->hw[0]), "hw-1");
    m->type = UPK_RELEASE_FULL;
    (void)snprintf(m->module, sizeof(m->module), "%s", module);
    m->size = len;
    upk_sha256_buf(art, len, m->sha256);
    m->target_size = len;
    memcpy(m->target_sha256, m->sha256, UPK_SHA256_LEN);
    m->created = e->now - 60;
    m->expires = e->now + 86400;
}

/* Undoes a half-done setup: cmocka runs no teardown when setup fails. */
static int setup_fail(env *e)
{
    if (e == NULL)
        return -1;
    if (e->broker > 0) {
        (void)kill(e->broker, SIGKILL);
        (void)waitpid(e->broker, NULL, 0);
    }
    upk_key_free(e->key);
    upk_key_free(e->other);
    free(e->art);
    free(e->art2);
    if (e->dir[0] != '\0') {
        char cmd[600];
        (void)snprintf(cmd, sizeof(cmd), "rm -rf '%s'", e->dir);
        if (system(cmd) != 0)
            fprintf(stderr, "cannot remove %s\n", e->dir);
    }
    free(e);
    return -1;
}

static int setup(void **state)
{
    env *e = calloc(1, sizeof(*e));
    if (e == NULL)
        return -1;
    if (tmp_root(e->dir, sizeof(e->dir)) == NULL) {
        e->dir[0] = '\0';
        return setup_fail(e);
    }
    e->now = (int64_t)time(NULL);
    (void)snprintf(e->data_dir, sizeof(e->data_dir), "%s/data", e->dir);
    (void)snprintf(e->target, sizeof(e->target), "%s/app.bin", e->dir);
    (void)snprintf(e->ab_root, sizeof(e->ab_root), "%s/ab", e->dir);
    (void)snprintf(e->cfg_path, sizeof(e->cfg_path), "%s/agent.json", e->dir);
    (void)snprintf(e->key_path, sizeof(e->key_path), "%s/release.pub", e->dir);
    (void)snprintf(e->device, sizeof(e->device), "dev-%d", (int)getpid());
    char *pem = NULL;
    if (upk_key_generate(&e->key) != UPK_OK || upk_key_generate(&e->other) != UPK_OK ||
        upk_key_public_pem(e->key, &pem) != UPK_OK ||
        upk_fs_write_atomic(e->key_path, pem, strlen(pem)) != UPK_OK) {
        free(pem);
        return setup_fail(e);
    }
    free(pem);
    e->art = malloc(ART_LEN);
    e->art2 = malloc(ART_LEN);
    if (e->art == NULL || e->art2 == NULL)
        return setup_fail(e);
    fill_random(e->art, ART_LEN, 1);
    fill_random(e->art2, ART_LEN, 2);
    if (upk_fs_write_atomic(e->target, "old version\n", 12) != UPK_OK)
        return setup_fail(e);
    /* A free port may be taken before mosquitto binds it: try a few. */
    bool up = false;
    for (int attempt = 0; attempt < 3 && !up; attempt++) {
        e->port = free_port();
        up = e->port > 0 && broker_try_start(e);
    }
    if (!up)
        return setup_fail(e);
    (void)snprintf(e->url, sizeof(e->url), "tcp://127.0.0.1:%d", e->port);
    if (uv_loop_init(&e->loop) != 0)
        return setup_fail(e);
    if (standin_init(&e->s, &e->loop, e->url, e->device) != 0) {
        /* The loop holds the stand-in's handles; this is a fatal setup bug. */
        return setup_fail(e);
    }
    *state = e;
    return 0;
}

static int teardown(void **state)
{
    env *e = *state;
    int rc = 0;
    reap(&e->agent, SIGTERM);
    /* The agent is built with the sanitizers in the test build: any report
     * in its log fails the test. */
    char logp[600];
    (void)snprintf(logp, sizeof(logp), "%s/agent.log", e->dir);
    char *log = NULL;
    size_t loglen = 0;
    if (upk_fs_read(logp, 1u << 24, &log, &loglen) == UPK_OK &&
        (strstr(log, "Sanitizer") != NULL || strstr(log, "runtime error") != NULL)) {
        fprintf(stderr, "sanitizer report in the agent log:\n%s\n", log);
        rc = -1;
    }
    free(log);
    standin_close(&e->s);
    reap(&e->broker, SIGKILL);
    (void)uv_run(&e->loop, UV_RUN_NOWAIT);
    (void)uv_loop_close(&e->loop);
    upk_key_free(e->key);
    upk_key_free(e->other);
    free(e->art);
    free(e->art2);
    char cmd[600];
    (void)snprintf(cmd, sizeof(cmd), "rm -rf '%s'", e->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", e->dir);
    free(e);
    return rc;
}

/* ---- predicates */
static bool p_connected(env *e, const void *arg)
{
    (void)arg;
    return e->s.connected;
}

typedef struct final_q {
    const char *campaign;
} final_q;

/* Last event of the campaign is final. */
static const upk_event_msg *final_event(env *e, const char *campaign)
{
    for (size_t i = e->s.event_count; i > 0; i--) {
        const upk_event_msg *ev = &e->s.events[i - 1];
        if (strcmp(ev->campaign, campaign) == 0 && upk_status_is_final(ev->step))
            return ev;
    }
    return NULL;
}

static bool p_final(env *e, const void *arg)
{
    return final_event(e, arg) != NULL;
}

typedef struct step_q {
    const char *campaign;
    upk_status step;
} step_q;

static bool p_step(env *e, const void *arg)
{
    const step_q *q = arg;
    for (size_t i = 0; i < e->s.event_count; i++)
        if (strcmp(e->s.events[i].campaign, q->campaign) == 0 && e->s.events[i].step >= q->step)
            return true;
    return false;
}

static bool p_state_version(env *e, const void *arg)
{
    return e->s.have_state && strcmp(e->s.state.version, arg) == 0 &&
           upk_status_is_final(e->s.state.status);
}

static bool p_offline(env *e, const void *arg)
{
    (void)arg;
    return e->s.online == '0';
}

static bool p_state_campaign(env *e, const void *arg)
{
    return e->s.have_state && strcmp(e->s.state.campaign, arg) == 0;
}

static bool p_state_any(env *e, const void *arg)
{
    (void)arg;
    return e->s.have_state;
}

static bool p_part_at_least(env *e, const void *arg)
{
    uint64_t want = *(const uint64_t *)arg;
    char dir[600];
    (void)snprintf(dir, sizeof(dir), "%s/download", e->data_dir);
    DIR *d = opendir(dir);
    if (d == NULL)
        return false;
    bool ok = false;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        char p[1200];
        struct stat st;
        (void)snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
        if (strstr(de->d_name, ".part") != NULL && stat(p, &st) == 0 &&
            (uint64_t)st.st_size >= want)
            ok = true;
    }
    closedir(d);
    return ok;
}

static bool p_served(env *e, const void *arg)
{
    return e->s.max_served_end >= *(const uint64_t *)arg;
}

/* ---- checks */
static void expect_final(env *e, const char *campaign, upk_status st, upk_err err)
{
    if (!wait_for(e, p_final, campaign, 30)) {
        dump_agent_log(e);
        fail_msg("campaign %s: no final event", campaign);
    }
    const upk_event_msg *ev = final_event(e, campaign);
    if (ev->step != st || ev->error != err) {
        dump_agent_log(e);
        fail_msg("campaign %s: ended %s/%s (%s), expected %s/%s", campaign,
                 upk_status_str(ev->step), upk_err_str(ev->error), ev->message, upk_status_str(st),
                 upk_err_str(err));
    }
}

static void expect_file(const char *path, const void *data, size_t len)
{
    char *buf = NULL;
    size_t got = 0;
    assert_int_equal(upk_fs_read(path, 1u << 24, &buf, &got), UPK_OK);
    assert_int_equal(got, len);
    assert_memory_equal(buf, data, len);
    free(buf);
}

/* Sequence numbers strictly increase in arrival order once duplicates of a
 * resend are dropped, and start at 1 for a fresh device. */
static void expect_seqs_in_order(env *e)
{
    for (size_t i = 1; i < e->s.event_count; i++)
        if (e->s.events[i].seq <= e->s.events[i - 1].seq)
            fail_msg("event %zu seq %llu after %llu", i, (unsigned long long)e->s.events[i].seq,
                     (unsigned long long)e->s.events[i - 1].seq);
    if (e->s.event_count > 0)
        assert_int_equal(e->s.events[0].seq, 1);
}

static void start_file_agent(env *e, const char *health)
{
    char settings[700];
    (void)snprintf(settings, sizeof(settings), "{\"path\":\"%s\"}", e->target);
    write_config(e, "file", settings, health, NULL);
    agent_start(e);
    assert_true(wait_for(e, p_connected, NULL, 10));
    assert_true(wait_for(e, p_state_any, NULL, 10));
}

/* ================================================================ tests */

static void file_module_full_update_commits(void **state)
{
    env *e = *state;
    start_file_agent(e, "[\"/bin/true\"]");
    assert_int_equal(e->s.state.status, UPK_STATUS_IDLE);
    assert_true(e->s.state.cap.signed_only && e->s.state.cap.rollback && e->s.state.cap.automatic);
    assert_int_equal(e->s.state.support_until, 1924992000); /* 2031-01-01 from config */
    assert_false(e->s.state.support_signed);
    assert_int_equal(e->s.online, '1');
    upk_manifest m;
    make_manifest(e, &m, "2.0", 5, e->art, ART_LEN, "file");
    m.support.present = true;
    m.support.security_until = 1956528000; /* 2032-01-01 */
    (void)snprintf(m.support.delivery, sizeof(m.support.delivery), "automatic");
    standin_set_artifact(&e->s, e->art, ART_LEN);
    assert_int_equal(standin_publish_desired(&e->s, &m, "camp-full", e->key, false), 0);
    expect_final(e, "camp-full", UPK_STATUS_COMMITTED, UPK_OK);
    expect_file(e->target, e->art, ART_LEN);
    for (upk_status st = UPK_STATUS_DOWNLOADING; st <= UPK_STATUS_HEALTH_CHECK; st++)
        assert_true(standin_saw(&e->s, st, UPK_OK));
    assert_true(wait_for(e, p_state_version, "2.0", 10));
    assert_string_equal(e->s.state.release, "fw");
    assert_int_equal(e->s.state.security_version, 5);
    assert_int_equal(e->s.state.status, UPK_STATUS_COMMITTED);
    assert_memory_equal(e->s.state.image_sha256, m.target_sha256, UPK_SHA256_LEN);
    assert_int_equal(e->s.state.support_until, 1956528000); /* now from the signed manifest */
    assert_true(e->s.state.support_signed);
    assert_true(e->s.state.last_patched > 0);
    expect_seqs_in_order(e);
    /* The same retained desired again (reconnect) changes nothing. */
    size_t before = e->s.event_count;
    reap(&e->agent, SIGTERM);
    /* A stopped agent says so itself: a clean disconnect sends no will. */
    assert_true(wait_for(e, p_offline, NULL, 10));
    agent_start(e);
    assert_true(wait_for(e, p_state_version, "2.0", 10));
    assert_int_equal(e->s.event_count, before);
}

static void abdir_module_full_update_commits(void **state)
{
    env *e = *state;
    char cmd[1500], settings[700];
    (void)snprintf(cmd, sizeof(cmd),
                   "mkdir -p %s/src && echo v2 > %s/src/version && tar -C %s/src -cf %s/img.tar .",
                   e->dir, e->dir, e->dir, e->dir);
    assert_int_equal(system(cmd), 0);
    (void)snprintf(cmd, sizeof(cmd), "%s/img.tar", e->dir);
    char *tar = NULL;
    size_t tlen = 0;
    assert_int_equal(upk_fs_read(cmd, 1u << 24, &tar, &tlen), UPK_OK);
    (void)snprintf(settings, sizeof(settings), "{\"root\":\"%s\"}", e->ab_root);
    /* Also exercises "fsync": false (the simulator's setting). */
    write_config(e, "ab-dir", settings, "[\"/bin/true\"]", "\"fsync\":false");
    agent_start(e);
    assert_true(wait_for(e, p_connected, NULL, 10));
    upk_manifest m;
    make_manifest(e, &m, "2.0", 1, (const uint8_t *)tar, tlen, "ab-dir");
    standin_set_artifact(&e->s, tar, tlen);
    assert_int_equal(standin_publish_desired(&e->s, &m, "camp-ab", e->key, false), 0);
    expect_final(e, "camp-ab", UPK_STATUS_COMMITTED, UPK_OK);
    char p[700];
    (void)snprintf(p, sizeof(p), "%s/current/version", e->ab_root);
    expect_file(p, "v2\n", 3);
    assert_true(wait_for(e, p_state_version, "2.0", 10));
    assert_string_equal(e->s.state.slot, "a");
    free(tar);
}

static void external_module_full_update_commits(void **state)
{
    env *e = *state;
    char settings[700];
    (void)snprintf(settings, sizeof(settings), "{\"target\":\"%s\"}", e->target);
    write_config(e, "upkeep-module-example", settings, NULL, NULL);
    agent_start(e);
    assert_true(wait_for(e, p_connected, NULL, 10));
    upk_manifest m;
    make_manifest(e, &m, "3.0", 1, e->art, ART_LEN, "upkeep-module-example");
    standin_set_artifact(&e->s, e->art, ART_LEN);
    assert_int_equal(standin_publish_desired(&e->s, &m, "camp-ext", e->key, false), 0);
    expect_final(e, "camp-ext", UPK_STATUS_COMMITTED, UPK_OK);
    expect_file(e->target, e->art, ART_LEN);
}

static void failing_health_check_rolls_back(void **state)
{
    env *e = *state;
    start_file_agent(e, "[\"/bin/false\"]");
    upk_manifest m;
    make_manifest(e, &m, "2.0", 1, e->art, ART_LEN, "file");
    standin_set_artifact(&e->s, e->art, ART_LEN);
    assert_int_equal(standin_publish_desired(&e->s, &m, "camp-sick", e->key, false), 0);
    expect_final(e, "camp-sick", UPK_STATUS_ROLLED_BACK, UPK_E_HEALTH_FAILED);
    expect_file(e->target, "old version\n", 12);
    assert_true(wait_for(e, p_state_campaign, "camp-sick", 5));
    assert_string_equal(e->s.state.version, "");
}

static void health_check_timeout_rolls_back(void **state)
{
    env *e = *state;
    start_file_agent(e, "[\"/bin/sleep\",\"30\"]");
    upk_manifest m;
    make_manifest(e, &m, "2.0", 1, e->art, 4096, "file");
    standin_set_artifact(&e->s, e->art, 4096);
    assert_int_equal(standin_publish_desired(&e->s, &m, "camp-slow", e->key, false), 0);
    expect_final(e, "camp-slow", UPK_STATUS_ROLLED_BACK, UPK_E_HEALTH_TIMEOUT);
    expect_file(e->target, "old version\n", 12);
}

static void rejections_end_in_named_errors_with_nothing_installed(void **state)
{
    env *e = *state;
    /* The device already runs security_version 5. */
    char inst[700], text[600];
    (void)snprintf(inst, sizeof(inst), "%s/installed.json", e->data_dir);
    assert_int_equal(upk_fs_mkdirs(e->data_dir), UPK_OK);
    (void)snprintf(text, sizeof(text),
                   "{\"v\":1,\"release\":\"fw\",\"version\":\"1.0\",\"security_version\":5,"
                   "\"image_sha256\":\"%064d\",\"campaign\":\"\",\"last_patched\":0,"
                   "\"support_until\":0}",
                   0);
    assert_int_equal(upk_fs_write_atomic(inst, text, strlen(text)), UPK_OK);
    start_file_agent(e, NULL);
    assert_int_equal(e->s.state.security_version, 5);
    standin_set_artifact(&e->s, e->art, ART_LEN);
    static const struct {
        const char *campaign;
        upk_err err;
    } cases[] = {
        {"rej-sig", UPK_E_SIG_INVALID},          {"rej-key", UPK_E_KEY_UNKNOWN},
        {"rej-expired", UPK_E_MANIFEST_EXPIRED}, {"rej-rollback", UPK_E_ROLLBACK_REJECTED},
        {"rej-hw", UPK_E_HW_INCOMPATIBLE},       {"rej-size", UPK_E_SIZE_MISMATCH},
        {"rej-hash", UPK_E_HASH_MISMATCH},       {"rej-module", UPK_E_MODULE_UNSUPPORTED},
        {"rej-big", UPK_E_SIZE_MISMATCH},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        upk_manifest m;
        make_manifest(e, &m, "9.0", 6, e->art, ART_LEN, "file");
        const upk_key *key = e->key;
        bool broken = false;
        e->s.corrupt = false;
        standin_set_artifact(&e->s, e->art, ART_LEN);
        switch (cases[i].err) {
        case UPK_E_SIG_INVALID:
            broken = true;
            break;
        case UPK_E_KEY_UNKNOWN:
            key = e->other;
            break;
        case UPK_E_MANIFEST_EXPIRED:
            m.created = e->now - 7200;
            m.expires = e->now - 3600;
            break;
        case UPK_E_ROLLBACK_REJECTED:
            m.security_version = 4;
            break;
        case UPK_E_HW_INCOMPATIBLE:
            (void)snprintf(m.hw[0], sizeof(m.hw[0]), "hw-2");
            break;
        case UPK_E_MODULE_UNSUPPORTED:
            (void)snprintf(m.module, sizeof(m.module), "ab-dir");
            break;
        case UPK_E_HASH_MISMATCH:
            e->s.corrupt = true;
            e->s.corrupt_off = 16384 * 3;
            break;
        case UPK_E_SIZE_MISMATCH:
            if (strcmp(cases[i].campaign, "rej-big") == 0) {
                m.size = m.target_size = (uint64_t)2 << 30; /* over max_artifact_size */
            } else {
                /* The controller has fewer bytes than the manifest says. */
                standin_set_artifact(&e->s, e->art, ART_LEN - 5000);
                memcpy(e->s.art_sha, m.sha256, UPK_SHA256_LEN);
            }
            break;
        default:
            break;
        }
        assert_int_equal(standin_publish_desired(&e->s, &m, cases[i].campaign, key, broken), 0);
        expect_final(e, cases[i].campaign, UPK_STATUS_REJECTED, cases[i].err);
        expect_file(e->target, "old version\n", 12);
        const upk_event_msg *ev = final_event(e, cases[i].campaign);
        assert_true(strlen(ev->message) > 0);
    }
    /* The retained state reports the last outcome. */
    assert_true(wait_for(e, p_state_campaign, "rej-big", 5));
    assert_int_equal(e->s.state.status, UPK_STATUS_REJECTED);
    assert_int_equal(e->s.state.error, UPK_E_SIZE_MISMATCH);
    assert_string_equal(e->s.state.version, "1.0");
    expect_seqs_in_order(e);
}

static void download_resumes_after_agent_kill(void **state)
{
    env *e = *state;
    start_file_agent(e, NULL);
    upk_manifest m;
    make_manifest(e, &m, "2.0", 1, e->art, ART_LEN, "file");
    standin_set_artifact(&e->s, e->art, ART_LEN);
    uint64_t half = ART_LEN / 2;
    e->s.drop_every = 0;
    assert_int_equal(standin_publish_desired(&e->s, &m, "camp-resume", e->key, false), 0);
    /* Stall once the agent has half of it on disk, then kill it. */
    assert_true(wait_for(e, p_served, &half, 20));
    e->s.stall = true;
    uint64_t some = 16384;
    assert_true(wait_for(e, p_part_at_least, &some, 10));
    reap(&e->agent, SIGKILL);
    /* The broker publishes the agent's last will: offline. */
    assert_true(wait_for(e, p_offline, NULL, 10));
    e->s.saw_req = false;
    e->s.stall = false;
    agent_start(e);
    expect_final(e, "camp-resume", UPK_STATUS_COMMITTED, UPK_OK);
    assert_int_equal(e->s.online, '1');
    assert_true(e->s.first_req_off >= some); /* did not start over */
    expect_file(e->target, e->art, ART_LEN);
    expect_seqs_in_order(e);
}

static void download_resumes_after_broker_restart(void **state)
{
    env *e = *state;
    start_file_agent(e, NULL);
    upk_manifest m;
    make_manifest(e, &m, "2.0", 1, e->art, ART_LEN, "file");
    standin_set_artifact(&e->s, e->art, ART_LEN);
    uint64_t third = ART_LEN / 3;
    assert_int_equal(standin_publish_desired(&e->s, &m, "camp-broker", e->key, false), 0);
    assert_true(wait_for(e, p_served, &third, 20));
    e->s.stall = true;
    reap(&e->broker, SIGTERM);
    e->s.saw_req = false;
    e->s.stall = false;
    broker_start(e);
    expect_final(e, "camp-broker", UPK_STATUS_COMMITTED, UPK_OK);
    assert_true(e->s.saw_req && e->s.first_req_off > 0);
    expect_file(e->target, e->art, ART_LEN);
}

static void kill9_at_each_state_ends_consistent(void **state)
{
    env *e = *state;
    /* A slow health check keeps the agent in health_check for a while. */
    char hc[700];
    (void)snprintf(hc, sizeof(hc), "[\"/bin/sh\",\"-c\",\"sleep 0.3\"]");
    start_file_agent(e, hc);
    const uint8_t *cur = (const uint8_t *)"old version\n";
    size_t cur_len = 12;
    static const upk_status steps[] = {UPK_STATUS_DOWNLOADING, UPK_STATUS_VERIFYING,
                                       UPK_STATUS_INSTALLING, UPK_STATUS_ACTIVATING,
                                       UPK_STATUS_HEALTH_CHECK};
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        char campaign[32], version[16];
        (void)snprintf(campaign, sizeof(campaign), "k9-%zu", i);
        (void)snprintf(version, sizeof(version), "4.%zu", i);
        const uint8_t *art = (i % 2) == 0 ? e->art : e->art2;
        upk_manifest m;
        make_manifest(e, &m, version, 1, art, ART_LEN, "file");
        standin_set_artifact(&e->s, art, ART_LEN);
        assert_int_equal(standin_publish_desired(&e->s, &m, campaign, e->key, false), 0);
        step_q q = {campaign, steps[i]};
        assert_true(wait_for(e, p_step, &q, 30));
        reap(&e->agent, SIGKILL);
        agent_start(e);
        if (!wait_for(e, p_final, campaign, 30)) {
            dump_agent_log(e);
            fail_msg("%s: no outcome after kill -9 in %s", campaign, upk_status_str(steps[i]));
        }
        const upk_event_msg *ev = final_event(e, campaign);
        if (ev->step == UPK_STATUS_COMMITTED) {
            cur = art;
            cur_len = ART_LEN;
            assert_true(wait_for(e, p_state_version, version, 10));
        } else if (ev->step != UPK_STATUS_ROLLED_BACK) {
            dump_agent_log(e);
            fail_msg("%s: ended %s/%s: %s", campaign, upk_status_str(ev->step),
                     upk_err_str(ev->error), ev->message);
        }
        expect_file(e->target, cur, cur_len);
    }
    expect_seqs_in_order(e);
}

static void newer_desired_supersedes_and_clear_cancels(void **state)
{
    env *e = *state;
    start_file_agent(e, NULL);
    upk_manifest m;
    make_manifest(e, &m, "2.0", 1, e->art, ART_LEN, "file");
    standin_set_artifact(&e->s, e->art, ART_LEN);
    e->s.stall = true;
    assert_int_equal(standin_publish_desired(&e->s, &m, "camp-a", e->key, false), 0);
    step_q q = {"camp-a", UPK_STATUS_DOWNLOADING};
    assert_true(wait_for(e, p_step, &q, 10));
    /* A newer release arrives while downloading: the first is superseded. */
    upk_manifest m2;
    make_manifest(e, &m2, "2.1", 1, e->art2, ART_LEN, "file");
    standin_set_artifact(&e->s, e->art2, ART_LEN);
    assert_int_equal(standin_publish_desired(&e->s, &m2, "camp-b", e->key, false), 0);
    expect_final(e, "camp-a", UPK_STATUS_FAILED, UPK_E_SUPERSEDED);
    step_q q2 = {"camp-b", UPK_STATUS_DOWNLOADING};
    assert_true(wait_for(e, p_step, &q2, 10));
    /* The desired is cleared: the update is cancelled, nothing installed. */
    assert_int_equal(standin_clear_desired(&e->s), 0);
    expect_final(e, "camp-b", UPK_STATUS_FAILED, UPK_E_CANCELLED);
    expect_file(e->target, "old version\n", 12);
    /* Publishing it again starts it afresh and it completes. */
    e->s.stall = false;
    assert_int_equal(standin_publish_desired(&e->s, &m2, "camp-c", e->key, false), 0);
    expect_final(e, "camp-c", UPK_STATUS_COMMITTED, UPK_OK);
    expect_file(e->target, e->art2, ART_LEN);
}

static bool p_journal_says(env *e, const void *arg)
{
    char p[600];
    (void)snprintf(p, sizeof(p), "%s/journal.json", e->data_dir);
    char *buf = NULL;
    size_t len = 0;
    if (upk_fs_read(p, 1u << 20, &buf, &len) != UPK_OK)
        return false;
    bool ok = strstr(buf, arg) != NULL;
    free(buf);
    return ok;
}

/* Finds the one partial download in data_dir/download into out. */
static void part_path(env *e, char *out, size_t cap)
{
    char dir[600];
    (void)snprintf(dir, sizeof(dir), "%s/download", e->data_dir);
    DIR *d = opendir(dir);
    assert_non_null(d);
    out[0] = '\0';
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (strstr(de->d_name, ".part") != NULL)
            (void)snprintf(out, cap, "%s/%s", dir, de->d_name);
    closedir(d);
    assert_true(out[0] != '\0');
}

/* What a power cut can leave: the journal says `status` while the partial
 * download holds only `keep` good bytes of `size` (the rest zeros, as when a
 * filesystem persisted the size before the data). The agent must end the
 * update committed, never stuck and never HASH_MISMATCH. */
static void cut_leaves(env *e, const char *campaign, const char *status, uint64_t keep,
                       uint64_t size, bool expect_from_zero)
{
    start_file_agent(e, "[\"/bin/sh\",\"-c\",\"sleep 1.5\"]");
    upk_manifest m;
    make_manifest(e, &m, "2.0", 1, e->art, ART_LEN, "file");
    standin_set_artifact(&e->s, e->art, ART_LEN);
    assert_int_equal(standin_publish_desired(&e->s, &m, campaign, e->key, false), 0);
    assert_true(wait_for(e, p_journal_says, "\"status\":\"health_check\"", 30));
    reap(&e->agent, SIGKILL);
    assert_true(wait_for(e, p_offline, NULL, 10));
    /* Rewrite what the disk kept. */
    char jp[600], part[1200];
    (void)snprintf(jp, sizeof(jp), "%s/journal.json", e->data_dir);
    char *buf = NULL;
    size_t len = 0;
    assert_int_equal(upk_fs_read(jp, 1u << 20, &buf, &len), UPK_OK);
    char *at = strstr(buf, "\"status\":\"health_check\"");
    assert_non_null(at);
    char out[1u << 16];
    (void)snprintf(out, sizeof(out), "%.*s\"status\":\"%s\"%s", (int)(at - buf), buf, status,
                   at + strlen("\"status\":\"health_check\""));
    free(buf);
    assert_int_equal(upk_fs_write_atomic(jp, out, strlen(out)), UPK_OK);
    part_path(e, part, sizeof(part));
    assert_int_equal(truncate(part, (off_t)keep), 0);
    assert_int_equal(truncate(part, (off_t)size), 0);
    /* The restart: nothing else changes, the same desired stays retained. */
    e->s.saw_req = false;
    char settings[700];
    (void)snprintf(settings, sizeof(settings), "{\"path\":\"%s\"}", e->target);
    write_config(e, "file", settings, "[\"/bin/true\"]", NULL);
    agent_start(e);
    expect_final(e, campaign, UPK_STATUS_COMMITTED, UPK_OK);
    assert_false(standin_saw(&e->s, UPK_STATUS_REJECTED, UPK_E_HASH_MISMATCH));
    assert_true(e->s.saw_req);
    if (expect_from_zero)
        assert_int_equal(e->s.first_req_off, 0);
    else
        assert_true(e->s.first_req_off >= keep - keep % 16384);
    expect_file(e->target, e->art, ART_LEN);
    expect_seqs_in_order(e);
}

/* Regressions for the write order of a download (issue 19): the journal said
 * verifying before the .part file was fsynced, and a restart with a short
 * file in verifying or installing then waited forever. */
static void cut_in_verifying_with_short_part_downloads_the_rest(void **state)
{
    cut_leaves(*state, "camp-cut-v", "verifying", ART_LEN / 4 * 3, ART_LEN / 4 * 3, false);
}

static void cut_in_installing_with_half_part_downloads_the_rest(void **state)
{
    cut_leaves(*state, "camp-cut-i", "installing", ART_LEN / 2, ART_LEN / 2, false);
}

/* The size reached the disk but not the data: a whole-length file whose tail
 * is zeros. A cut, not a bad release: downloaded again from 0. */
static void cut_with_size_but_not_data_downloads_again(void **state)
{
    cut_leaves(*state, "camp-cut-z", "downloading", ART_LEN / 2, ART_LEN, true);
}

static void cut_in_verifying_with_size_but_not_data_downloads_again(void **state)
{
    cut_leaves(*state, "camp-cut-vz", "verifying", ART_LEN / 3, ART_LEN, true);
}

/* A module whose switch takes a reboot, as rauc or swupdate with a
 * bootloader: activate arms and asks for a reboot (exit 4), booted answers
 * what the test put in state/booted (0 = the new slot runs, 3 = the
 * bootloader fell back). Every step is logged to state/steps. */
static const char rebootmod[] =
    "#!/bin/sh\n"
    "st=$(printf '%s' \"$UPK_SETTINGS\" | sed 's/.*\"state\":\"\\([^\"]*\\)\".*/\\1/')\n"
    "echo \"$1 $UPK_REACHED\" >> \"$st/steps\"\n"
    "case \"$1\" in\n"
    "activate) exit 4 ;;\n"
    "booted) exit $(cat \"$st/booted\") ;;\n"
    "*) exit 0 ;;\n"
    "esac\n";

static int count_lines_with(const char *path, const char *word)
{
    char *buf = NULL;
    size_t len = 0;
    if (upk_fs_read(path, 1u << 20, &buf, &len) != UPK_OK)
        return 0;
    int n = 0;
    for (char *line = buf; line != NULL && *line != '\0';) {
        char *nl = strchr(line, '\n');
        if (nl != NULL)
            *nl = '\0';
        if (strncmp(line, word, strlen(word)) == 0 &&
            (line[strlen(word)] == ' ' || line[strlen(word)] == '\0'))
            n++;
        line = nl != NULL ? nl + 1 : NULL;
    }
    free(buf);
    return n;
}

static bool p_file_exists(env *e, const void *arg)
{
    (void)e;
    struct stat st;
    return stat(arg, &st) == 0;
}

/* Runs one update with rebootmod up to the reboot, "reboots" (new boot id,
 * the module answers `booted`), and returns with the agent restarted. */
static void reboot_update(env *e, const char *campaign, const char *booted, char *steps, size_t cap)
{
    char state_dir[700], p[800], boot[700], settings[800];
    (void)snprintf(e->modules_dir, sizeof(e->modules_dir), "%s/mods", e->dir);
    (void)snprintf(state_dir, sizeof(state_dir), "%s/modstate", e->dir);
    assert_int_equal(upk_fs_mkdirs(e->modules_dir), UPK_OK);
    assert_int_equal(upk_fs_mkdirs(state_dir), UPK_OK);
    (void)snprintf(p, sizeof(p), "%s/rebootmod", e->modules_dir);
    assert_int_equal(upk_fs_write_atomic(p, rebootmod, strlen(rebootmod)), UPK_OK);
    assert_int_equal(chmod(p, 0755), 0);
    (void)snprintf(steps, cap, "%s/steps", state_dir);
    (void)snprintf(p, sizeof(p), "%s/booted", state_dir);
    assert_int_equal(upk_fs_write_atomic(p, booted, strlen(booted)), UPK_OK);
    (void)snprintf(boot, sizeof(boot), "%s/boot_id", e->dir);
    assert_int_equal(upk_fs_write_atomic(boot, "boot-1\n", 7), UPK_OK);
    assert_int_equal(setenv("UPK_BOOT_ID_FILE", boot, 1), 0);
    (void)snprintf(settings, sizeof(settings), "{\"state\":\"%s\"}", state_dir);
    write_config(e, "rebootmod", settings, "[\"/bin/true\"]", NULL);
    agent_start(e);
    assert_true(wait_for(e, p_connected, NULL, 10));
    upk_manifest m;
    make_manifest(e, &m, "4.0", 1, e->art, 4096, "rebootmod");
    standin_set_artifact(&e->s, e->art, 4096);
    assert_int_equal(standin_publish_desired(&e->s, &m, campaign, e->key, false), 0);
    step_q q = {campaign, UPK_STATUS_ACTIVATING};
    assert_true(wait_for(e, p_step, &q, 20));
    assert_true(wait_for(e, p_journal_says, "\"status\":\"activating\"", 10));
    /* Armed: the agent waits for the reboot and runs nothing more. */
    for (int i = 0; i < 50 && count_lines_with(steps, "activate") == 0; i++)
        (void)wait_for(e, p_file_exists, "/nonexistent", 0.1);
    assert_int_equal(count_lines_with(steps, "activate"), 1);
    (void)wait_for(e, p_file_exists, "/nonexistent", 1.0);
    step_q h = {campaign, UPK_STATUS_HEALTH_CHECK};
    assert_false(p_step(e, &h));
    /* The reboot: the agent dies with the system, the next boot has a new id. */
    reap(&e->agent, SIGKILL);
    assert_true(wait_for(e, p_offline, NULL, 10));
    assert_int_equal(upk_fs_write_atomic(boot, "boot-2\n", 7), UPK_OK);
    agent_start(e);
}

/* Issue 19: after the reboot the module says the new slot runs: health
 * check, then commit; activate is not run again. */
static void reboot_into_new_slot_commits(void **state)
{
    env *e = *state;
    char steps[800];
    reboot_update(e, "camp-boot-ok", "0", steps, sizeof(steps));
    expect_final(e, "camp-boot-ok", UPK_STATUS_COMMITTED, UPK_OK);
    assert_int_equal(count_lines_with(steps, "booted"), 1);
    assert_int_equal(count_lines_with(steps, "activate"), 1);
    assert_int_equal(count_lines_with(steps, "commit"), 1);
    assert_int_equal(count_lines_with(steps, "rollback"), 0);
    (void)unsetenv("UPK_BOOT_ID_FILE");
}

/* The bootloader gave up on the new slot and booted the old one: rolled
 * back with BOOT_FAILED, never committed, and the same (retained) desired
 * is not tried again after a further restart. */
static void bootloader_fallback_rolls_back_boot_failed(void **state)
{
    env *e = *state;
    char steps[800];
    reboot_update(e, "camp-boot-bad", "3", steps, sizeof(steps));
    expect_final(e, "camp-boot-bad", UPK_STATUS_ROLLED_BACK, UPK_E_BOOT_FAILED);
    assert_int_equal(count_lines_with(steps, "commit"), 0);
    assert_int_equal(count_lines_with(steps, "rollback"), 1);
    assert_false(standin_saw(&e->s, UPK_STATUS_COMMITTED, UPK_OK));
    /* Another start (a third boot): nothing runs again. */
    reap(&e->agent, SIGTERM);
    size_t before = e->s.event_count;
    agent_start(e);
    assert_true(wait_for(e, p_connected, NULL, 10));
    (void)wait_for(e, p_file_exists, "/nonexistent", 1.5);
    assert_int_equal(count_lines_with(steps, "activate"), 1);
    assert_int_equal(count_lines_with(steps, "install"), 1);
    for (size_t i = before; i < e->s.event_count; i++)
        assert_true(e->s.events[i].step == UPK_STATUS_ROLLED_BACK);
    (void)unsetenv("UPK_BOOT_ID_FILE");
}

static void events_made_offline_arrive_after_reconnect(void **state)
{
    env *e = *state;
    start_file_agent(e, "[\"/bin/sh\",\"-c\",\"sleep 1\"]");
    upk_manifest m;
    make_manifest(e, &m, "2.0", 1, e->art, 4096, "file");
    standin_set_artifact(&e->s, e->art, 4096);
    assert_int_equal(standin_publish_desired(&e->s, &m, "camp-off", e->key, false), 0);
    step_q q = {"camp-off", UPK_STATUS_HEALTH_CHECK};
    assert_true(wait_for(e, p_step, &q, 20));
    /* The broker goes away while the health check runs: the agent commits
     * offline and keeps the events on disk. */
    reap(&e->broker, SIGTERM);
    assert_true(wait_for(e, p_journal_says, "\"status\":\"committed\"", 20));
    assert_false(standin_saw(&e->s, UPK_STATUS_COMMITTED, UPK_OK));
    broker_start(e);
    expect_final(e, "camp-off", UPK_STATUS_COMMITTED, UPK_OK);
    /* Every step arrived once, in order. */
    static const upk_status want[] = {UPK_STATUS_DOWNLOADING,  UPK_STATUS_VERIFYING,
                                      UPK_STATUS_INSTALLING,   UPK_STATUS_ACTIVATING,
                                      UPK_STATUS_HEALTH_CHECK, UPK_STATUS_COMMITTED};
    size_t k = 0;
    for (size_t i = 0; i < e->s.event_count && k < 6; i++)
        if (e->s.events[i].step == want[k])
            k++;
    assert_int_equal(k, 6);
    expect_seqs_in_order(e);
    /* A restart sends nothing again. */
    size_t before = e->s.event_count;
    reap(&e->agent, SIGTERM);
    /* A stopped agent says so itself: a clean disconnect sends no will. */
    assert_true(wait_for(e, p_offline, NULL, 10));
    agent_start(e);
    assert_true(wait_for(e, p_state_version, "2.0", 10));
    assert_int_equal(e->s.event_count, before);
}

static size_t outbox_files(env *e);

static bool p_outbox_empty(env *e, const void *arg)
{
    (void)arg;
    return outbox_files(e) == 0;
}

static bool p_resent_twice(env *e, const void *arg)
{
    (void)arg;
    return e->s.event_count >= 1 && e->s.dup_events >= 2;
}

/* Event files queued in the agent's outbox. */
static size_t outbox_files(env *e)
{
    char dir[1200];
    (void)snprintf(dir, sizeof(dir), "%s/outbox", e->data_dir);
    DIR *d = opendir(dir);
    assert_non_null(d);
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        n += strstr(de->d_name, ".ev") != NULL;
    closedir(d);
    return n;
}

/* The broker's PUBACK does not release an event: only the controller's ack
 * does (protocol.md 5.9). While acks are held the agent re-sends the first
 * event (ack_timeout_ms 1000, doubling), sends nothing after it and keeps
 * the rest on disk; once acks flow again everything arrives once, in order. */
static void events_stay_until_the_controller_acks_them(void **state)
{
    env *e = *state;
    start_file_agent(e, "[\"/bin/true\"]");
    e->s.hold_acks = true;
    upk_manifest m;
    make_manifest(e, &m, "2.0", 1, e->art, 4096, "file");
    standin_set_artifact(&e->s, e->art, 4096);
    assert_int_equal(standin_publish_desired(&e->s, &m, "camp-ack", e->key, false), 0);
    assert_true(wait_for(e, p_journal_says, "\"status\":\"committed\"", 20));
    if (!wait_for(e, p_resent_twice, NULL, 20)) {
        dump_agent_log(e);
        fail_msg("first event not re-sent while unacknowledged (%zu events, %zu copies)",
                 e->s.event_count, e->s.dup_events);
    }
    assert_int_equal(e->s.event_count, 1);
    assert_true(outbox_files(e) >= 6); /* every step of the update, still queued */
    e->s.hold_acks = false;
    expect_final(e, "camp-ack", UPK_STATUS_COMMITTED, UPK_OK);
    expect_seqs_in_order(e);
    assert_true(wait_for(e, p_outbox_empty, NULL, 10));
}

/* A module script in the test dir that fails the steps matching pattern. */
static void write_failing_module(env *e, const char *pattern)
{
    char text[600], p[600];
    (void)snprintf(text, sizeof(text), "#!/bin/sh\ncase \"$1\" in %s) exit 7;; esac\nexit 0\n",
                   pattern);
    (void)snprintf(p, sizeof(p), "%s/failmod", e->dir);
    assert_int_equal(upk_fs_write_atomic(p, text, strlen(text)), UPK_OK);
    assert_int_equal(chmod(p, 0755), 0);
}

static void module_failures_end_failed_or_rolled_back(void **state)
{
    env *e = *state;
    char extra[700];
    (void)snprintf(extra, sizeof(extra), "\"modules_dir\":\"%s\"", e->dir);
    static const struct {
        const char *step;
        upk_status st;
        upk_err err;
    } cases[] = {
        {"install", UPK_STATUS_FAILED, UPK_E_INSTALL_FAILED},
        {"activate", UPK_STATUS_ROLLED_BACK, UPK_E_ACTIVATE_FAILED},
        {"health", UPK_STATUS_ROLLED_BACK, UPK_E_HEALTH_FAILED},
        {"health|rollback", UPK_STATUS_FAILED, UPK_E_ROLLBACK_FAILED},
        {"rollback", UPK_STATUS_COMMITTED, UPK_OK}, /* never needed */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        write_failing_module(e, cases[i].step);
        /* The module lives in the test dir: its own config. */
        char text[2048];
        (void)snprintf(text, sizeof(text),
                       "{\"broker\":\"%s\",\"device_id\":\"%s\",\"hardware\":\"hw-1\","
                       "\"data_dir\":\"%s\",\"keys\":[\"%s\"],\"module\":\"failmod\",%s,"
                       "\"reconnect_min_ms\":100,\"reconnect_max_ms\":400}",
                       e->url, e->device, e->data_dir, e->key_path, extra);
        assert_int_equal(upk_fs_write_atomic(e->cfg_path, text, strlen(text)), UPK_OK);
        agent_start(e);
        assert_true(wait_for(e, p_connected, NULL, 10));
        char campaign[32], version[16];
        (void)snprintf(campaign, sizeof(campaign), "mod-%zu", i);
        (void)snprintf(version, sizeof(version), "5.%zu", i);
        upk_manifest m;
        make_manifest(e, &m, version, 1, e->art, 8192, "failmod");
        standin_set_artifact(&e->s, e->art, 8192);
        assert_int_equal(standin_publish_desired(&e->s, &m, campaign, e->key, false), 0);
        expect_final(e, campaign, cases[i].st, cases[i].err);
        reap(&e->agent, SIGTERM);
    }
}

static void controller_refusal_and_corrupt_journal_are_reported(void **state)
{
    env *e = *state;
    /* A journal torn by something outside the agent's control. */
    assert_int_equal(upk_fs_mkdirs(e->data_dir), UPK_OK);
    char p[600];
    (void)snprintf(p, sizeof(p), "%s/journal.json", e->data_dir);
    static const char torn[] = "{\"v\":1,\"status\":\"instal";
    assert_int_equal(upk_fs_write_atomic(p, torn, strlen(torn)), UPK_OK);
    start_file_agent(e, NULL);
    assert_int_equal(e->s.state.error, UPK_E_STATE_CORRUPT);
    assert_int_equal(e->s.state.status, UPK_STATUS_IDLE);
    /* The controller does not serve the artifact. */
    upk_manifest m;
    make_manifest(e, &m, "2.0", 1, e->art, ART_LEN, "file");
    standin_set_artifact(&e->s, e->art2, ART_LEN); /* some other artifact */
    assert_int_equal(standin_publish_desired(&e->s, &m, "camp-404", e->key, false), 0);
    expect_final(e, "camp-404", UPK_STATUS_FAILED, UPK_E_NOT_FOUND);
    expect_file(e->target, "old version\n", 12);
}

#ifdef UPK_HAVE_DELTA
static uint8_t *read_all(const char *path, size_t *len)
{
    char *buf = NULL;
    assert_int_equal(upk_fs_read(path, 1u << 26, &buf, len), UPK_OK);
    return (uint8_t *)buf;
}

static void delta_release_applies_to_installed_base(void **state)
{
    env *e = *state;
    /* Install a full v1 first, so the device knows its image. */
    start_file_agent(e, NULL);
    upk_manifest m;
    make_manifest(e, &m, "1.0", 1, e->art, ART_LEN, "file");
    standin_set_artifact(&e->s, e->art, ART_LEN);
    assert_int_equal(standin_publish_desired(&e->s, &m, "camp-v1", e->key, false), 0);
    expect_final(e, "camp-v1", UPK_STATUS_COMMITTED, UPK_OK);
    assert_true(wait_for(e, p_state_version, "1.0", 10));
    assert_true(e->s.state.cap.delta);
    /* v2 differs from v1 in a few places: a patch much smaller than v2. */
    uint8_t *v2 = malloc(ART_LEN);
    assert_non_null(v2);
    memcpy(v2, e->art, ART_LEN);
    for (size_t i = 0; i < ART_LEN; i += 40000)
        v2[i] ^= 0xff;
    char oldp[600], newp[600], patchp[600];
    (void)snprintf(oldp, sizeof(oldp), "%s/v1.img", e->dir);
    (void)snprintf(newp, sizeof(newp), "%s/v2.img", e->dir);
    (void)snprintf(patchp, sizeof(patchp), "%s/v1-v2.patch", e->dir);
    assert_int_equal(upk_fs_write_atomic(oldp, e->art, ART_LEN), UPK_OK);
    assert_int_equal(upk_fs_write_atomic(newp, v2, ART_LEN), UPK_OK);
    assert_int_equal(upk_delta_make(oldp, newp, patchp), UPK_OK);
    size_t plen = 0;
    uint8_t *patch = read_all(patchp, &plen);
    assert_true(plen < ART_LEN / 4);
    upk_manifest d;
    make_manifest(e, &d, "2.0", 2, v2, ART_LEN, "file");
    d.type = UPK_RELEASE_DELTA;
    d.size = plen;
    upk_sha256_buf(patch, plen, d.sha256);
    upk_sha256_buf(e->art, ART_LEN, d.base_sha256);
    /* A delta for another base is refused before any chunk is asked for. */
    upk_manifest wrong = d;
    wrong.base_sha256[0] ^= 1;
    size_t reqs = e->s.req_count;
    assert_int_equal(standin_publish_desired(&e->s, &wrong, "camp-wrongbase", e->key, false), 0);
    expect_final(e, "camp-wrongbase", UPK_STATUS_REJECTED, UPK_E_DELTA_BASE_MISMATCH);
    assert_int_equal(e->s.req_count, reqs);
    expect_file(e->target, e->art, ART_LEN);
    /* The right base: the patch is downloaded, applied and verified. */
    standin_set_artifact(&e->s, patch, plen);
    e->s.max_served_end = 0;
    assert_int_equal(standin_publish_desired(&e->s, &d, "camp-delta", e->key, false), 0);
    expect_final(e, "camp-delta", UPK_STATUS_COMMITTED, UPK_OK);
    expect_file(e->target, v2, ART_LEN);
    assert_int_equal(e->s.max_served_end, plen); /* only the patch was downloaded */
    assert_true(wait_for(e, p_state_version, "2.0", 10));
    assert_memory_equal(e->s.state.image_sha256, d.target_sha256, UPK_SHA256_LEN);
    free(patch);
    free(v2);
}
#endif

static void bad_config_is_refused_with_field_named(void **state)
{
    env *e = *state;
    write_config(e, "file", "{\"path\":\"relative\"}", NULL, NULL);
    char cmd[2400], out[700];
    (void)snprintf(out, sizeof(out), "%s/check.txt", e->dir);
    (void)snprintf(cmd, sizeof(cmd), "%s -c %s > %s 2>&1", AGENT_BIN, e->cfg_path, out);
    int rc = system(cmd);
    assert_true(WIFEXITED(rc) && WEXITSTATUS(rc) == 2);
    char *text = NULL;
    size_t len = 0;
    assert_int_equal(upk_fs_read(out, 65536, &text, &len), UPK_OK);
    assert_non_null(strstr(text, "module_settings.path"));
    free(text);
    (void)snprintf(cmd, sizeof(cmd), "%s --version > %s 2>&1", AGENT_BIN, out);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(upk_fs_read(out, 65536, &text, &len), UPK_OK);
    assert_non_null(strstr(text, "upkeep-agent "));
    free(text);
    (void)snprintf(cmd, sizeof(cmd), "%s --help > %s 2>&1", AGENT_BIN, out);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    (void)signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(file_module_full_update_commits, setup, teardown),
        cmocka_unit_test_setup_teardown(abdir_module_full_update_commits, setup, teardown),
        cmocka_unit_test_setup_teardown(external_module_full_update_commits, setup, teardown),
        cmocka_unit_test_setup_teardown(failing_health_check_rolls_back, setup, teardown),
        cmocka_unit_test_setup_teardown(health_check_timeout_rolls_back, setup, teardown),
        cmocka_unit_test_setup_teardown(rejections_end_in_named_errors_with_nothing_installed,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(download_resumes_after_agent_kill, setup, teardown),
        cmocka_unit_test_setup_teardown(download_resumes_after_broker_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(reboot_into_new_slot_commits, setup, teardown),
        cmocka_unit_test_setup_teardown(bootloader_fallback_rolls_back_boot_failed, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(cut_in_verifying_with_short_part_downloads_the_rest, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(cut_in_installing_with_half_part_downloads_the_rest, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(cut_with_size_but_not_data_downloads_again, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(cut_in_verifying_with_size_but_not_data_downloads_again,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(kill9_at_each_state_ends_consistent, setup, teardown),
        cmocka_unit_test_setup_teardown(newer_desired_supersedes_and_clear_cancels, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(events_made_offline_arrive_after_reconnect, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(events_stay_until_the_controller_acks_them, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(module_failures_end_failed_or_rolled_back, setup, teardown),
        cmocka_unit_test_setup_teardown(controller_refusal_and_corrupt_journal_are_reported, setup,
                                        teardown),
#ifdef UPK_HAVE_DELTA
        cmocka_unit_test_setup_teardown(delta_release_applies_to_installed_base, setup, teardown),
#endif
        cmocka_unit_test_setup_teardown(bad_config_is_refused_with_field_named, setup, teardown),
    };
    /* AGENT_TEST_FILTER=name runs one test (while debugging). */
    const char *filter = getenv("AGENT_TEST_FILTER");
    if (filter != NULL && filter[0] != '\0')
        cmocka_set_test_filter(filter);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
