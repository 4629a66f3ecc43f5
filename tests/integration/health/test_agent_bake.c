/* The agent's post-commit health reports (bake window) in-process: one agent
 * with a fake installer against a plain mosquitto and the controller
 * stand-in. Before any update the idle agent reports its health hook's and
 * probe's metrics with no campaign (the baseline; the hook's bad line skipped
 * with a named error). After a commit with bake_s the agent reports health
 * through its outbox, with the re-run health check and the metrics; after a
 * restart inside the window it reports the restart. */
#include <errno.h>
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
#include "upkeep/agent.h"
#include "upkeep/fs.h"

#define AGENTS 1
/* ---- a fake installer: records steps, fails the health step on demand */
typedef struct fake {
    uv_loop_t *loop;
    char log[256];
    bool sick;
    int steps;
} fake;

typedef struct fake_call {
    uv_timer_t t;
    upk_installer_cb cb;
    void *cb_data;
    upk_err err;
} fake_call;

static void fake_closed(uv_handle_t *h)
{
    free(h->data);
}

static void fake_fire(uv_timer_t *t)
{
    fake_call *c = t->data;
    c->cb(c->err, c->err != UPK_OK ? "fake failure" : NULL, c->cb_data);
    uv_close((uv_handle_t *)&c->t, fake_closed);
}

/* Completes asynchronously on the loop, as a real module would. */
static upk_err fake_step(fake *f, const char *name, upk_err err, upk_installer_cb cb, void *d)
{
    fake_call *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return UPK_E_NOMEM;
    c->cb = cb;
    c->cb_data = d;
    c->err = err;
    c->t.data = c;
    (void)uv_timer_init(f->loop, &c->t);
    (void)uv_timer_start(&c->t, fake_fire, 1, 0);
    size_t n = strlen(f->log);
    (void)snprintf(f->log + n, sizeof(f->log) - n, "%s%s", n > 0 ? "," : "", name);
    f->steps++;
    return UPK_OK;
}

static upk_err f_install(void *self, upk_install_job *job, upk_installer_cb cb, void *d)
{
    (void)snprintf(job->slot, sizeof(job->slot), "b");
    return fake_step(self, "install", UPK_OK, cb, d);
}
static upk_err f_activate(void *self, upk_install_job *job, upk_installer_cb cb, void *d)
{
    if (strcmp(job->slot, "b") != 0)
        return UPK_E_STATE_INVALID; /* the slot from install must come back */
    return fake_step(self, "activate", UPK_OK, cb, d);
}
static upk_err f_health(void *self, upk_install_job *job, upk_installer_cb cb, void *d)
{
    (void)job;
    fake *f = self;
    return fake_step(f, "health", f->sick ? UPK_E_HEALTH_FAILED : UPK_OK, cb, d);
}
static upk_err f_commit(void *self, upk_install_job *job, upk_installer_cb cb, void *d)
{
    (void)job;
    return fake_step(self, "commit", UPK_OK, cb, d);
}
static upk_err f_rollback(void *self, upk_install_job *job, upk_installer_cb cb, void *d)
{
    (void)job;
    return fake_step(self, "rollback", UPK_OK, cb, d);
}
static void f_slot(void *self, char *buf, size_t cap)
{
    (void)self;
    (void)snprintf(buf, cap, "b");
}

static const upk_installer fake_ops = {
    .name = "sim",
    .can_rollback = true,
    .install = f_install,
    .activate = f_activate,
    .health = f_health,
    .commit = f_commit,
    .rollback = f_rollback,
    .image_path = NULL,
    .active_slot = f_slot,
    .destroy = NULL,
};

/* ---- environment */
typedef struct env {
    char dir[256];
    int port;
    pid_t broker;
    uv_loop_t loop;
    upk_key *key;
    upk_keyring *ring;
    standin s[AGENTS];
    fake fk[AGENTS];
    upk_agent_config cfg[AGENTS];
    upk_agent *agent[AGENTS];
    int closed;
} env;

static double now_mono(void)
{
    struct timespec ts;
    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t l = sizeof(a);
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &l) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
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

static void tick(uv_timer_t *t)
{
    (void)t;
}

static bool wait_for(env *e, bool (*pred)(env *), double timeout_s)
{
    uv_timer_t t;
    (void)uv_timer_init(&e->loop, &t);
    (void)uv_timer_start(&t, tick, 10, 10);
    double end = now_mono() + timeout_s;
    bool ok = pred(e);
    while (!ok && now_mono() < end) {
        (void)uv_run(&e->loop, UV_RUN_ONCE);
        ok = pred(e);
    }
    uv_close((uv_handle_t *)&t, NULL);
    (void)uv_run(&e->loop, UV_RUN_NOWAIT);
    return ok;
}

static bool connected(env *e)
{
    return e->s[0].connected && e->s[0].have_state;
}

/* A bake report: a health report under the campaign (not a baseline one). */
static bool is_bake(const upk_event_msg *e)
{
    return e->health.present && e->campaign[0] != '\0';
}

/* The last bake report's restarts, or -1 when none yet. */
static long last_health_restarts(const standin *s)
{
    for (size_t i = s->event_count; i > 0; i--) {
        if (is_bake(&s->events[i - 1]))
            return (long)s->events[i - 1].health.restarts;
    }
    return -1;
}

static size_t health_reports(const standin *s)
{
    size_t n = 0;
    for (size_t i = 0; i < s->event_count; i++)
        n += is_bake(&s->events[i]);
    return n;
}

/* The first baseline report (idle, no campaign), or NULL. */
static const upk_event_msg *baseline_report(const standin *s)
{
    for (size_t i = 0; i < s->event_count; i++) {
        if (s->events[i].health.present && s->events[i].campaign[0] == '\0')
            return &s->events[i];
    }
    return NULL;
}

static double metric_of(const upk_health *h, const char *name)
{
    for (size_t i = 0; i < h->metric_count; i++) {
        if (strcmp(h->metric_name[i], name) == 0)
            return h->metric_value[i];
    }
    return -1;
}

/* The in-process probe (as the simulator's): one metric, the version seen. */
static char probe_version[UPK_VERSION_STR_MAX + 1];
static void probe(void *self, const char *version, upk_health *out)
{
    (void)self;
    (void)snprintf(probe_version, sizeof(probe_version), "%s", version);
    out->metric_count = 1;
    (void)snprintf(out->metric_name[0], sizeof(out->metric_name[0]), "probe_x");
    out->metric_value[0] = 7;
}

static bool baseline_reported(env *e)
{
    return baseline_report(&e->s[0]) != NULL;
}
static bool committed(env *e)
{
    return standin_saw(&e->s[0], UPK_STATUS_COMMITTED, UPK_OK);
}
static bool reported(env *e)
{
    return health_reports(&e->s[0]) >= 1;
}
static bool restart_reported(env *e)
{
    return last_health_restarts(&e->s[0]) == 1;
}
static bool closed(env *e)
{
    return e->closed == 1;
}
static void on_closed(void *ud)
{
    ((env *)ud)->closed++;
}

static void start_agent(env *e, const char *url)
{
    upk_agent_config *c = &e->cfg[0];
    char dev[32], data[600];
    (void)snprintf(dev, sizeof(dev), "bake-%d", (int)getpid());
    (void)snprintf(data, sizeof(data), "%s/dev", e->dir);
    upk_agent_config_defaults(c);
    c->broker = strdup(url);
    c->device_id = strdup(dev);
    c->hardware = strdup("hw-sim");
    c->data_dir = strdup(data);
    c->module = strdup("sim");
    c->module_settings = strdup("{}");
    c->topic_prefix = strdup(UPK_TOPIC_PREFIX_DEFAULT);
    c->keyring = e->ring;
    c->keyring_owned = false;
    c->fsync = false;
    c->limits.chunk_size = 4096;
    c->reconnect_min_ms = 100;
    c->reconnect_max_ms = 400;
    char hook[600], check[600];
    (void)snprintf(hook, sizeof(hook), "%s/hook.sh", e->dir);
    (void)snprintf(check, sizeof(check), "%s/check.sh", e->dir);
    c->hook_argv[0] = strdup(hook);
    c->hook_argc = 1;
    c->health_argv[0] = strdup(check);
    c->health_argc = 1;
    assert_non_null(c->hook_argv[0]);
    assert_non_null(c->health_argv[0]);
    c->health_probe = probe;
    c->hook_timeout_s = 2;
    e->fk[0].loop = &e->loop;
    c->installer_ops = &fake_ops;
    c->installer_self = &e->fk[0];
    assert_int_equal(upk_agent_new(&e->loop, c, &e->agent[0]), UPK_OK);
    assert_int_equal(upk_agent_start(e->agent[0]), UPK_OK);
}

static void stop_agent(env *e)
{
    e->closed = 0;
    upk_agent_close(e->agent[0], on_closed, e);
    assert_true(wait_for(e, closed, 10));
    upk_agent_config_cleanup(&e->cfg[0]);
}

static void health_reports_in_bake_window_and_across_restart(void **state)
{
    (void)state;
    env *e = calloc(1, sizeof(*e));
    assert_non_null(e);
    const char *base = getenv("TMPDIR");
    (void)snprintf(e->dir, sizeof(e->dir), "%s/upk-bake-XXXXXX",
                   base != NULL && *base ? base : "/tmp");
    assert_non_null(mkdtemp(e->dir));
    e->port = free_port();
    char conf[512], text[1024], url[64];
    (void)snprintf(conf, sizeof(conf), "%s/mosquitto.conf", e->dir);
    struct passwd *pw = getpwuid(getuid());
    (void)snprintf(text, sizeof(text),
                   "listener %d 127.0.0.1\nallow_anonymous true\nuser %s\nlog_dest none\n", e->port,
                   pw != NULL ? pw->pw_name : "root");
    assert_int_equal(upk_fs_write_atomic(conf, text, strlen(text)), UPK_OK);
    e->broker = fork();
    assert_true(e->broker >= 0);
    if (e->broker == 0) {
        (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
        execl(MOSQUITTO_BIN, "mosquitto", "-c", conf, (char *)NULL);
        _exit(127);
    }
    double end = now_mono() + 10;
    while (!can_connect(e->port) && now_mono() < end) {
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL); /* polling a port: nothing to await */
    }
    assert_true(can_connect(e->port));
    (void)snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", e->port);
    assert_int_equal(uv_loop_init(&e->loop), 0);
    assert_int_equal(upk_key_generate(&e->key), UPK_OK);
    assert_int_equal(upk_keyring_new(&e->ring), UPK_OK);
    assert_int_equal(upk_keyring_add(e->ring, e->key), UPK_OK);

    static uint8_t art[20000];
    for (size_t i = 0; i < sizeof(art); i++)
        art[i] = (uint8_t)(i * 13);
    char dev[32];
    (void)snprintf(dev, sizeof(dev), "bake-%d", (int)getpid());
    assert_int_equal(standin_init(&e->s[0], &e->loop, url, dev), 0);
    standin_set_artifact(&e->s[0], art, sizeof(art));
    /* The health hook: two metrics around a bad line; the check passes. */
    const char *scripts[][2] = {
        {"hook.sh", "#!/bin/sh\necho 'cpu_pct 12.5'\necho 'not a metric line'\necho 'mem_mb 3'\n"},
        {"check.sh", "#!/bin/sh\nexit 0\n"},
    };
    for (size_t i = 0; i < 2; i++) {
        char path[600];
        (void)snprintf(path, sizeof(path), "%s/%s", e->dir, scripts[i][0]);
        assert_int_equal(upk_fs_write_atomic(path, scripts[i][1], strlen(scripts[i][1])), UPK_OK);
        assert_int_equal(chmod(path, 0755), 0);
    }
    start_agent(e, url);
    assert_true(wait_for(e, connected, 15));
    /* Idle: a baseline report with the hook's and the probe's metrics. */
    assert_true(wait_for(e, baseline_reported, 15));
    const upk_event_msg *bl = baseline_report(&e->s[0]);
    assert_int_equal(bl->step, UPK_STATUS_IDLE);
    assert_string_equal(bl->version, "");
    assert_int_equal(bl->health.check_ok, -1); /* the check judges updates only */
    assert_int_equal(bl->health.metric_count, 3);
    assert_true(metric_of(&bl->health, "probe_x") == 7);
    assert_true(metric_of(&bl->health, "cpu_pct") == 12.5);
    assert_true(metric_of(&bl->health, "mem_mb") == 3);
    assert_string_equal(bl->message,
                        "health hook line 2 is not \"name value\" (skipped) (FIELD_TYPE)");

    upk_manifest m;
    memset(&m, 0, sizeof(m));
    (void)snprintf(m.name, sizeof(m.name), "simfw");
    (void)snprintf(m.version, sizeof(m.version), "8");
    m.security_version = 1;
    m.hw_count = 1;
    (void)snprintf(m.hw[0], sizeof(m.hw[0]), "hw-sim");
    (void)snprintf(m.module, sizeof(m.module), "sim");
    m.size = m.target_size = sizeof(art);
    upk_sha256_buf(art, sizeof(art), m.sha256);
    memcpy(m.target_sha256, m.sha256, UPK_SHA256_LEN);
    m.created = (int64_t)time(NULL) - 60;
    m.expires = m.created + 3600;
    e->s[0].bake_s = 120;
    assert_int_equal(standin_publish_desired(&e->s[0], &m, "bake", e->key, false), 0);
    assert_true(wait_for(e, committed, 30));
    /* The first report follows the commit at once: nothing restarted yet. */
    assert_true(wait_for(e, reported, 10));
    assert_int_equal(last_health_restarts(&e->s[0]), 0);
    const upk_event_msg *ev = standin_last_event(&e->s[0]);
    assert_true(ev->health.present);
    assert_int_equal(ev->step, UPK_STATUS_COMMITTED);
    assert_string_equal(ev->campaign, "bake");
    assert_string_equal(ev->version, "8");
    assert_int_equal(ev->health.boots, 0);
    assert_int_equal(ev->health.check_ok, 1); /* the check was re-run */
    assert_true(metric_of(&ev->health, "cpu_pct") == 12.5);
    assert_true(metric_of(&ev->health, "probe_x") == 7);
    assert_string_equal(probe_version, "8");
    /* The rate is bounded: no second report within the minimum gap. */
    size_t before = health_reports(&e->s[0]);
    double t0 = now_mono();
    while (now_mono() - t0 < 2)
        (void)uv_run(&e->loop, UV_RUN_ONCE);
    assert_int_equal(health_reports(&e->s[0]), before);

    /* A restart inside the window is counted, persisted and reported; by then
     * the check fails and the hook hangs (killed at its timeout). */
    stop_agent(e);
    const char *sick[][2] = {
        {"hook.sh", "#!/bin/sh\necho 'cpu_pct 99'\nexec sleep 30\n"},
        {"check.sh", "#!/bin/sh\nexit 3\n"},
    };
    for (size_t i = 0; i < 2; i++) {
        char path[600];
        (void)snprintf(path, sizeof(path), "%s/%s", e->dir, sick[i][0]);
        assert_int_equal(upk_fs_write_atomic(path, sick[i][1], strlen(sick[i][1])), UPK_OK);
        assert_int_equal(chmod(path, 0755), 0);
    }
    char bake[700];
    (void)snprintf(bake, sizeof(bake), "%s/dev/bake.json", e->dir);
    struct stat st;
    assert_int_equal(stat(bake, &st), 0);
    start_agent(e, url);
    assert_true(wait_for(e, restart_reported, 30));
    ev = standin_last_event(&e->s[0]);
    assert_int_equal(ev->health.check_ok, 0);
    assert_int_equal(ev->health.metric_count, 1); /* the probe's; the hook timed out */
    assert_true(metric_of(&ev->health, "probe_x") == 7);
    assert_non_null(strstr(ev->message, "exited with 3 (HEALTH_FAILED)"));
    assert_int_equal(e->s[0].dup_events, 0);

    stop_agent(e);
    standin_close(&e->s[0]);
    (void)uv_run(&e->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&e->loop), 0);
    upk_keyring_free(e->ring);
    upk_key_free(e->key);
    (void)kill(e->broker, SIGTERM);
    int status;
    (void)waitpid(e->broker, &status, 0);
    char cmd[400];
    (void)snprintf(cmd, sizeof(cmd), "rm -rf '%s'", e->dir);
    assert_int_equal(system(cmd), 0);
    free(e);
}

int main(void)
{
    (void)signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(health_reports_in_bake_window_and_across_restart),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
