/* The agent core in-process, as the simulator uses it: several agents on
 * one libuv loop with a plugged-in fake installer (no files touched, no
 * child processes), a plain mosquitto and the controller stand-in. Checks
 * that the installer vtable drives every step, that a failing fake health
 * step rolls back, and that upk_agent_close releases everything. */
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
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "standin.h"
#include "upkeep/agent.h"
#include "upkeep/fs.h"

#define AGENTS 3

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

static bool all_connected(env *e)
{
    for (int i = 0; i < AGENTS; i++)
        if (!e->s[i].connected || !e->s[i].have_state)
            return false;
    return true;
}

static bool all_final(env *e)
{
    for (int i = 0; i < AGENTS; i++) {
        const upk_event_msg *ev = standin_last_event(&e->s[i]);
        if (ev == NULL || !upk_status_is_final(ev->step) || strcmp(ev->campaign, "sim") != 0)
            return false;
    }
    return true;
}

static bool all_closed(env *e)
{
    return e->closed == AGENTS;
}

static void on_closed(void *ud)
{
    ((env *)ud)->closed++;
}

static void agents_in_one_loop_with_a_fake_installer(void **state)
{
    (void)state;
    env *e = calloc(1, sizeof(*e));
    assert_non_null(e);
    const char *base = getenv("TMPDIR");
    (void)snprintf(e->dir, sizeof(e->dir), "%s/upk-agent-core-XXXXXX",
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

    static uint8_t art[50000];
    for (size_t i = 0; i < sizeof(art); i++)
        art[i] = (uint8_t)(i * 7);
    for (int i = 0; i < AGENTS; i++) {
        char dev[32], data[600];
        (void)snprintf(dev, sizeof(dev), "sim-%d-%d", (int)getpid(), i);
        (void)snprintf(data, sizeof(data), "%s/dev%d", e->dir, i);
        upk_agent_config *c = &e->cfg[i];
        upk_agent_config_defaults(c);
        c->broker = strdup(url);
        c->device_id = strdup(dev);
        c->hardware = strdup("hw-sim");
        c->data_dir = strdup(data);
        c->module = strdup("sim");
        c->module_settings = strdup("{}");
        c->topic_prefix = strdup(UPK_TOPIC_PREFIX_DEFAULT);
        c->keyring = e->ring; /* shared, not owned */
        c->keyring_owned = false;
        c->fsync = false;
        c->limits.chunk_size = 4096;
        c->reconnect_min_ms = 100;
        c->reconnect_max_ms = 400;
        e->fk[i].loop = &e->loop;
        e->fk[i].sick = i == AGENTS - 1; /* the last one fails its health step */
        c->installer_ops = &fake_ops;
        c->installer_self = &e->fk[i];
        assert_int_equal(standin_init(&e->s[i], &e->loop, url, dev), 0);
        standin_set_artifact(&e->s[i], art, sizeof(art));
        assert_int_equal(upk_agent_new(&e->loop, c, &e->agent[i]), UPK_OK);
        assert_int_equal(upk_agent_start(e->agent[i]), UPK_OK);
        assert_int_equal(upk_agent_start(e->agent[i]), UPK_E_STATE_INVALID);
    }
    assert_true(wait_for(e, all_connected, 15));
    upk_manifest m;
    memset(&m, 0, sizeof(m));
    (void)snprintf(m.name, sizeof(m.name), "simfw");
    (void)snprintf(m.version, sizeof(m.version), "7");
    m.security_version = 1;
    m.hw_count = 1;
    (void)snprintf(m.hw[0], sizeof(m.hw[0]), "hw-sim");
    (void)snprintf(m.module, sizeof(m.module), "sim");
    m.size = m.target_size = sizeof(art);
    upk_sha256_buf(art, sizeof(art), m.sha256);
    memcpy(m.target_sha256, m.sha256, UPK_SHA256_LEN);
    m.created = (int64_t)time(NULL) - 60;
    m.expires = m.created + 3600;
    for (int i = 0; i < AGENTS; i++)
        assert_int_equal(standin_publish_desired(&e->s[i], &m, "sim", e->key, false), 0);
    assert_true(wait_for(e, all_final, 30));
    for (int i = 0; i < AGENTS - 1; i++) {
        assert_int_equal(standin_last_event(&e->s[i])->step, UPK_STATUS_COMMITTED);
        assert_string_equal(e->fk[i].log, "install,activate,health,commit");
        assert_int_equal(upk_agent_status(e->agent[i]), UPK_STATUS_COMMITTED);
    }
    const upk_event_msg *ev = standin_last_event(&e->s[AGENTS - 1]);
    assert_int_equal(ev->step, UPK_STATUS_ROLLED_BACK);
    assert_int_equal(ev->error, UPK_E_HEALTH_FAILED);
    assert_string_equal(e->fk[AGENTS - 1].log, "install,activate,health,rollback");

    for (int i = 0; i < AGENTS; i++)
        upk_agent_close(e->agent[i], on_closed, e);
    assert_true(wait_for(e, all_closed, 10));
    for (int i = 0; i < AGENTS; i++) {
        standin_close(&e->s[i]);
        upk_agent_config_cleanup(&e->cfg[i]);
    }
    (void)uv_run(&e->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&e->loop), 0);
    upk_keyring_free(e->ring);
    upk_key_free(e->key);
    (void)kill(e->broker, SIGTERM);
    while (waitpid(e->broker, NULL, 0) < 0 && errno == EINTR)
        ;
    char cmd[400];
    (void)snprintf(cmd, sizeof(cmd), "rm -rf '%s'", e->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", e->dir);
    free(e);
}

int main(void)
{
    (void)signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(agents_in_one_loop_with_a_fake_installer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
