/* The wire is hostile too (issue 23, docs/security.md "What the agent
 * refuses"): an agent core in-process with a fake installer, a plain
 * mosquitto, the controller stand-in, and an attacker that can publish on
 * the device's topics (what a broker admin account or an on-path writer
 * without TLS can do). Each test makes one attack, awaits the agent's drop
 * counter for the named error (upk_agent_dropped), and checks that nothing
 * else changed: no event for the campaign, the same status, the same
 * installed version, no install step run. Then the real update still
 * completes where it should. */
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

#define CHUNK       4096u
#define ART_LEN     (16u * CHUNK + 100u) /* 17 chunks, the last one short */
#define LINK_SECRET "wire-test-link-secret-0123456789"

/* ---- a fake installer that records the steps it ran */
typedef struct fake {
    uv_loop_t *loop;
    char log[256];
} fake;

typedef struct fake_call {
    uv_timer_t t;
    upk_installer_cb cb;
    void *cb_data;
} fake_call;

static void fake_closed(uv_handle_t *h)
{
    free(h->data);
}

static void fake_fire(uv_timer_t *t)
{
    fake_call *c = t->data;
    c->cb(UPK_OK, NULL, c->cb_data);
    uv_close((uv_handle_t *)&c->t, fake_closed);
}

static upk_err fake_step(fake *f, const char *name, upk_installer_cb cb, void *d)
{
    fake_call *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return UPK_E_NOMEM;
    c->cb = cb;
    c->cb_data = d;
    c->t.data = c;
    (void)uv_timer_init(f->loop, &c->t);
    (void)uv_timer_start(&c->t, fake_fire, 1, 0);
    size_t n = strlen(f->log);
    (void)snprintf(f->log + n, sizeof(f->log) - n, "%s%s", n > 0 ? "," : "", name);
    return UPK_OK;
}

static upk_err f_install(void *self, upk_install_job *job, upk_installer_cb cb, void *d)
{
    (void)job;
    return fake_step(self, "install", cb, d);
}
static upk_err f_activate(void *self, upk_install_job *job, upk_installer_cb cb, void *d)
{
    (void)job;
    return fake_step(self, "activate", cb, d);
}
static upk_err f_health(void *self, upk_install_job *job, upk_installer_cb cb, void *d)
{
    (void)job;
    return fake_step(self, "health", cb, d);
}
static upk_err f_commit(void *self, upk_install_job *job, upk_installer_cb cb, void *d)
{
    (void)job;
    return fake_step(self, "commit", cb, d);
}
static upk_err f_rollback(void *self, upk_install_job *job, upk_installer_cb cb, void *d)
{
    (void)job;
    return fake_step(self, "rollback", cb, d);
}

static const upk_installer fake_ops = {
    .name = "sim",
    .can_rollback = true,
    .install = f_install,
    .activate = f_activate,
    .health = f_health,
    .commit = f_commit,
    .rollback = f_rollback,
};

/* ---- environment */
typedef struct env {
    char dir[256];
    int port;
    pid_t broker;
    uv_loop_t loop;
    upk_key *key;
    upk_keyring *ring;
    standin s;
    fake fk;
    upk_agent_config cfg;
    upk_agent *agent;
    bool closed;
    bool with_key;
    upk_link_key wrong; /* a key an attacker might hold: another device's */
    uint8_t art[ART_LEN];
    int64_t now;
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

/* Runs the loop until pred(e, arg) or timeout_s; returns pred's last value. */
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

static bool broker_start(env *e)
{
    char conf[512], text[1024];
    (void)snprintf(conf, sizeof(conf), "%s/mosquitto.conf", e->dir);
    struct passwd *pw = getpwuid(getuid());
    (void)snprintf(text, sizeof(text),
                   "listener %d 127.0.0.1\nallow_anonymous true\nuser %s\nlog_dest none\n", e->port,
                   pw != NULL ? pw->pw_name : "root");
    if (upk_fs_write_atomic(conf, text, strlen(text)) != UPK_OK)
        return false;
    e->broker = fork();
    if (e->broker < 0) {
        e->broker = 0;
        return false;
    }
    if (e->broker == 0) {
        (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
        execl(MOSQUITTO_BIN, "mosquitto", "-c", conf, (char *)NULL);
        _exit(127);
    }
    double end = now_mono() + 10;
    while (!can_connect(e->port) && now_mono() < end) {
        int st;
        if (waitpid(e->broker, &st, WNOHANG) == e->broker) {
            e->broker = 0; /* the port was taken meanwhile */
            return false;
        }
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL); /* polling a port: nothing to await */
    }
    return can_connect(e->port);
}

static void rm_dir(const char *dir)
{
    char cmd[400];
    (void)snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", dir);
}

static int setup(void **state)
{
    env *e = calloc(1, sizeof(*e));
    if (e == NULL)
        return -1;
    const char *base = getenv("TMPDIR");
    (void)snprintf(e->dir, sizeof(e->dir), "%s/upk-agent-wire-XXXXXX",
                   base != NULL && *base ? base : "/tmp");
    if (mkdtemp(e->dir) == NULL) {
        free(e);
        return -1;
    }
    bool up = false;
    for (int i = 0; i < 3 && !up; i++) {
        e->port = free_port();
        up = e->port > 0 && broker_start(e);
    }
    if (!up || uv_loop_init(&e->loop) != 0 || upk_key_generate(&e->key) != UPK_OK ||
        upk_keyring_new(&e->ring) != UPK_OK || upk_keyring_add(e->ring, e->key) != UPK_OK) {
        if (e->broker > 0) {
            (void)kill(e->broker, SIGKILL);
            (void)waitpid(e->broker, NULL, 0);
        }
        rm_dir(e->dir);
        upk_keyring_free(e->ring);
        upk_key_free(e->key);
        free(e);
        return -1;
    }
    for (size_t i = 0; i < ART_LEN; i++)
        e->art[i] = (uint8_t)(i * 13 + 5);
    e->now = (int64_t)time(NULL);
    *state = e;
    return 0;
}

static void on_closed(void *ud)
{
    ((env *)ud)->closed = true;
}

static bool p_closed(env *e, const void *arg)
{
    (void)arg;
    return e->closed;
}

static int teardown(void **state)
{
    env *e = *state;
    if (e->agent != NULL) {
        upk_agent_close(e->agent, on_closed, e);
        (void)wait_for(e, p_closed, NULL, 10);
    }
    standin_close(&e->s);
    upk_agent_config_cleanup(&e->cfg);
    (void)uv_run(&e->loop, UV_RUN_DEFAULT);
    (void)uv_loop_close(&e->loop);
    upk_keyring_free(e->ring);
    upk_key_free(e->key);
    (void)kill(e->broker, SIGTERM);
    while (waitpid(e->broker, NULL, 0) < 0 && errno == EINTR)
        ;
    rm_dir(e->dir);
    free(e);
    return 0;
}

static bool p_ready(env *e, const void *arg)
{
    (void)arg;
    return e->s.connected && e->s.have_state && upk_agent_connected(e->agent);
}

/* Starts the agent, with its link key derived from LINK_SECRET when
 * with_key (and the stand-in tagging as the controller does), else in
 * legacy mode. */
static void start_agent(env *e, bool with_key)
{
    char dev[32], data[600], url[64];
    (void)snprintf(dev, sizeof(dev), "wire-%d", (int)getpid());
    (void)snprintf(data, sizeof(data), "%s/data", e->dir);
    (void)snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", e->port);
    upk_agent_config *c = &e->cfg;
    upk_agent_config_defaults(c);
    c->broker = strdup(url);
    c->device_id = strdup(dev);
    c->hardware = strdup("hw-w");
    c->data_dir = strdup(data);
    c->module = strdup("sim");
    c->module_settings = strdup("{}");
    c->topic_prefix = strdup(UPK_TOPIC_PREFIX_DEFAULT);
    assert_non_null(c->broker);
    assert_non_null(c->topic_prefix);
    c->keyring = e->ring;
    c->keyring_owned = false;
    c->fsync = false;
    c->limits.chunk_size = CHUNK;
    c->limits.chunks_in_flight = 4;
    c->limits.chunk_timeout_ms = 300;
    c->limits.ack_timeout_ms = 500;
    c->reconnect_min_ms = 100;
    c->reconnect_max_ms = 400;
    e->with_key = with_key;
    if (with_key) {
        assert_int_equal(upk_link_key_derive(LINK_SECRET, strlen(LINK_SECRET), dev, &c->link_key),
                         UPK_OK);
        c->has_link_key = true;
    }
    assert_int_equal(upk_link_key_derive(LINK_SECRET, strlen(LINK_SECRET), "other", &e->wrong),
                     UPK_OK);
    e->fk.loop = &e->loop;
    c->installer_ops = &fake_ops;
    c->installer_self = &e->fk;
    assert_int_equal(standin_init(&e->s, &e->loop, url, dev), 0);
    if (with_key) {
        e->s.has_key = true;
        e->s.key = c->link_key;
        e->s.fresh_until = e->now + 3600;
    }
    standin_set_artifact(&e->s, e->art, ART_LEN);
    assert_int_equal(upk_agent_new(&e->loop, c, &e->agent), UPK_OK);
    assert_int_equal(upk_agent_start(e->agent), UPK_OK);
    assert_true(wait_for(e, p_ready, NULL, 15));
}

static void make_manifest(env *e, upk_manifest *m, const char *version, int64_t created,
                          int64_t expires)
{
    memset(m, 0, sizeof(*m));
    (void)snprintf(m->name, sizeof(m->name), "fw-%s", version);
    (void)snprintf(m->version, sizeof(m->version), "%s", version);
    m->security_version = 3;
    m->hw_count = 1;
    (void)snprintf(m->hw[0], sizeof(m->hw[0]), "hw-w");
    (void)snprintf(m->module, sizeof(m->module), "sim");
    m->size = m->target_size = ART_LEN;
    upk_sha256_buf(e->art, ART_LEN, m->sha256);
    memcpy(m->target_sha256, m->sha256, UPK_SHA256_LEN);
    m->created = created;
    m->expires = expires;
}

/* ---- predicates and checks */

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
    return final_event(e, arg) != NULL && upk_agent_events_pending(e->agent) == 0;
}

static size_t campaign_events(env *e, const char *campaign)
{
    size_t n = 0;
    for (size_t i = 0; i < e->s.event_count; i++)
        n += strcmp(e->s.events[i].campaign, campaign) == 0;
    return n;
}

static void expect_final(env *e, const char *campaign, upk_status st, upk_err err)
{
    if (!wait_for(e, p_final, campaign, 30))
        fail_msg("campaign %s: no final event", campaign);
    const upk_event_msg *ev = final_event(e, campaign);
    if (ev->step != st || ev->error != err)
        fail_msg("campaign %s ended %s/%s (%s), expected %s/%s", campaign, upk_status_str(ev->step),
                 upk_err_str(ev->error), ev->message, upk_status_str(st), upk_err_str(err));
}

typedef struct drop_q {
    upk_err why;
    uint64_t n;
} drop_q;

static bool p_dropped(env *e, const void *arg)
{
    const drop_q *q = arg;
    return upk_agent_dropped(e->agent, q->why) >= q->n;
}

/* Awaits the n-th drop for why in total. */
static void expect_dropped(env *e, upk_err why, uint64_t n)
{
    drop_q q = {why, n};
    if (!wait_for(e, p_dropped, &q, 10))
        fail_msg("waited for %llu drops as %s, have %llu", (unsigned long long)n, upk_err_str(why),
                 (unsigned long long)upk_agent_dropped(e->agent, why));
}

static bool p_downloading(env *e, const void *arg)
{
    (void)arg;
    return upk_agent_status(e->agent) == UPK_STATUS_DOWNLOADING && e->s.req_count >= 4;
}

/* Publishes desired for campaign with the chunks held back; returns once the
 * agent is downloading and has asked for its first chunks. */
static void start_stalled_update(env *e, const upk_manifest *m, const char *campaign)
{
    e->s.stall = true;
    assert_int_equal(standin_publish_desired(&e->s, m, campaign, e->key, false), 0);
    assert_true(wait_for(e, p_downloading, NULL, 10));
}

/* What an attacker sends as chunk data: a header (status, offset, length)
 * and length bytes of the real artifact, tagged under k when not NULL. */
static void forge_chunk(env *e, upk_chunk_status st, uint64_t off, uint32_t len,
                        const upk_link_key *k)
{
    uint8_t *buf = calloc(1, UPK_CHUNK_HDR_LEN + len + 1);
    assert_non_null(buf);
    upk_chunk_hdr h = {.status = st, .offset = off, .length = len};
    upk_sha256_buf(e->art, ART_LEN, h.artifact);
    upk_chunk_hdr_write(&h, buf);
    if (len > 0)
        memcpy(buf + UPK_CHUNK_HDR_LEN, e->art + off, len);
    assert_int_equal(standin_publish_raw(&e->s, UPK_TOPIC_DEV_CHUNK_DATA, buf,
                                         UPK_CHUNK_HDR_LEN + len, false, k),
                     0);
    free(buf);
}

/* Nothing but the download moved: still downloading, no final or failed
 * event, no install step. */
static void expect_still_downloading(env *e, const char *campaign)
{
    assert_int_equal(upk_agent_status(e->agent), UPK_STATUS_DOWNLOADING);
    assert_null(final_event(e, campaign));
    assert_false(standin_saw(&e->s, UPK_STATUS_FAILED, UPK_E_NOT_FOUND));
    assert_false(standin_saw(&e->s, UPK_STATUS_REJECTED, UPK_E_SIZE_MISMATCH));
    assert_string_equal(e->fk.log, "");
}

static void finish_update(env *e, const char *campaign)
{
    e->s.stall = false;
    expect_final(e, campaign, UPK_STATUS_COMMITTED, UPK_OK);
    assert_string_equal(e->fk.log, "install,activate,health,commit");
    assert_int_equal(e->s.bad_tags, 0);
}

/* ================================================================ tests */

/* Attack 1 without a link key: the request is matched before the status
 * is read, and the length must be the one requested. A forged refusal at a
 * requested offset is not trusted either (legacy: only once 5 tries of the
 * request, each after its backoff, were refused). */
static void forged_chunks_never_end_a_download(void **state)
{
    env *e = *state;
    start_agent(e, false);
    upk_manifest m;
    make_manifest(e, &m, "2.0", e->now - 60, e->now + 3600);
    start_stalled_update(e, &m, "c-chunk");
    forge_chunk(e, UPK_CHUNK_NOT_FOUND, 12 * CHUNK, 0, NULL); /* never requested */
    forge_chunk(e, UPK_CHUNK_RANGE, 13 * CHUNK + 1, 0, NULL); /* no request there */
    forge_chunk(e, UPK_CHUNK_OK, 0, 100, NULL);               /* 4096 were asked */
    forge_chunk(e, UPK_CHUNK_OK, 15 * CHUNK, CHUNK, NULL);    /* right bytes, not asked */
    expect_dropped(e, UPK_E_CHUNK_UNEXPECTED, 4);
    /* Asked, but unauthenticated: many at once count as one try. */
    for (int i = 0; i < 10; i++)
        forge_chunk(e, UPK_CHUNK_NOT_FOUND, 0, 0, NULL);
    forge_chunk(e, UPK_CHUNK_RANGE, CHUNK, 0, NULL);
    expect_dropped(e, UPK_E_NOT_FOUND, 10);
    expect_dropped(e, UPK_E_SIZE_MISMATCH, 1);
    expect_still_downloading(e, "c-chunk");
    assert_true(campaign_events(e, "c-chunk") <= 1); /* downloading 0% at most */
    finish_update(e, "c-chunk");
    assert_false(standin_saw(&e->s, UPK_STATUS_FAILED, UPK_E_NOT_FOUND));
}

/* Attack 1 with a link key: untagged or wrongly tagged chunks are dropped
 * as AUTH_INVALID whatever they say, refusals at requested offsets
 * included; the device's own messages carry valid tags. */
static void unauthenticated_chunks_are_dropped(void **state)
{
    env *e = *state;
    start_agent(e, true);
    upk_manifest m;
    make_manifest(e, &m, "2.0", e->now - 60, e->now + 3600);
    start_stalled_update(e, &m, "c-chunk");
    forge_chunk(e, UPK_CHUNK_NOT_FOUND, 0, 0, NULL);
    forge_chunk(e, UPK_CHUNK_RANGE, CHUNK, 0, NULL);
    forge_chunk(e, UPK_CHUNK_OK, 0, 100, NULL);
    forge_chunk(e, UPK_CHUNK_NOT_FOUND, 0, 0, &e->wrong);
    forge_chunk(e, UPK_CHUNK_OK, 2 * CHUNK, CHUNK, &e->wrong); /* even right bytes */
    expect_dropped(e, UPK_E_AUTH_INVALID, 5);
    /* Tagged correctly but short or unrequested: CHUNK_UNEXPECTED. */
    forge_chunk(e, UPK_CHUNK_OK, 0, 100, &e->s.key);
    forge_chunk(e, UPK_CHUNK_NOT_FOUND, 12 * CHUNK, 0, &e->s.key);
    expect_dropped(e, UPK_E_CHUNK_UNEXPECTED, 2);
    expect_still_downloading(e, "c-chunk");
    finish_update(e, "c-chunk");
}

/* A refusal from the controller itself (tagged) is final at once. */
static void authenticated_refusal_ends_the_download(void **state)
{
    env *e = *state;
    start_agent(e, true);
    upk_manifest m;
    make_manifest(e, &m, "2.0", e->now - 60, e->now + 3600);
    uint8_t other[16] = {1, 2, 3};
    standin_set_artifact(&e->s, other, sizeof(other)); /* serves NOT_FOUND for ours */
    assert_int_equal(standin_publish_desired(&e->s, &m, "c-gone", e->key, false), 0);
    expect_final(e, "c-gone", UPK_STATUS_FAILED, UPK_E_NOT_FOUND);
    assert_string_equal(e->fk.log, "");
    assert_int_equal(e->s.bad_tags, 0);
}

/* Attack 2: a desired naming a campaign the device took part in, with a
 * garbage signature, untagged or under another key, and an attacker's
 * empty "clear": no event for that campaign, nothing changes. */
static void forged_desired_naming_a_campaign_changes_nothing(void **state)
{
    env *e = *state;
    start_agent(e, true);
    upk_manifest m;
    make_manifest(e, &m, "2.0", e->now - 60, e->now + 3600);
    assert_int_equal(standin_publish_desired(&e->s, &m, "c-ok", e->key, false), 0);
    expect_final(e, "c-ok", UPK_STATUS_COMMITTED, UPK_OK);
    size_t events = e->s.event_count;
    char *forged = NULL;
    size_t len = 0;
    e->s.ctr += 100; /* a counter far ahead does not help without the key */
    assert_int_equal(standin_desired_payload(&e->s, &m, "c-ok", e->key, true, &forged, &len), 0);
    assert_int_equal(standin_publish_raw(&e->s, UPK_TOPIC_DEV_DESIRED, forged, len, true, NULL), 0);
    assert_int_equal(
        standin_publish_raw(&e->s, UPK_TOPIC_DEV_DESIRED, forged, len, true, &e->wrong), 0);
    assert_int_equal(standin_publish_raw(&e->s, UPK_TOPIC_DEV_DESIRED, "", 0, true, NULL), 0);
    free(forged);
    expect_dropped(e, UPK_E_AUTH_INVALID, 3);
    assert_int_equal(e->s.event_count, events);
    assert_false(standin_saw(&e->s, UPK_STATUS_REJECTED, UPK_E_SIZE_MISMATCH));
    assert_false(standin_saw(&e->s, UPK_STATUS_REJECTED, UPK_E_SIG_INVALID));
    assert_false(standin_saw(&e->s, UPK_STATUS_FAILED, UPK_E_CANCELLED));
    assert_int_equal(upk_agent_status(e->agent), UPK_STATUS_COMMITTED);
    assert_string_equal(upk_agent_installed_version(e->agent), "2.0");
    assert_string_equal(e->fk.log, "install,activate,health,commit");
}

/* Attack 3: the same desired with an unsigned field changed (bake_s + 1)
 * mid-download is refused and the download goes on; the controller's own
 * refresh of the same assignment (new ctr, later fresh_until) is accepted
 * and does not restart it either. */
static void unsigned_field_change_mid_download_is_refused(void **state)
{
    env *e = *state;
    start_agent(e, true);
    upk_manifest m;
    make_manifest(e, &m, "2.0", e->now - 60, e->now + 3600);
    e->s.bake_s = 0;
    start_stalled_update(e, &m, "c-bake");
    char *first = NULL, *forged = NULL;
    size_t first_len = 0, len = 0;
    /* The payload the agent accepted (ctr 1), to replay later. */
    e->s.ctr = 0;
    assert_int_equal(
        standin_desired_payload(&e->s, &m, "c-bake", e->key, false, &first, &first_len), 0);
    e->s.bake_s = 1;
    assert_int_equal(standin_desired_payload(&e->s, &m, "c-bake", e->key, false, &forged, &len), 0);
    assert_int_equal(standin_publish_raw(&e->s, UPK_TOPIC_DEV_DESIRED, forged, len, true, NULL), 0);
    free(forged);
    expect_dropped(e, UPK_E_AUTH_INVALID, 1);
    expect_still_downloading(e, "c-bake");
    /* The controller refreshes: same assignment, ctr 3. */
    e->s.bake_s = 0;
    e->s.ctr = 2;
    e->s.fresh_until = e->now + 7200;
    assert_int_equal(standin_publish_desired(&e->s, &m, "c-bake", e->key, false), 0);
    /* ctr 1 again is now a replay: refused, which also shows the refresh
     * was taken (the messages arrive in order). */
    assert_int_equal(
        standin_publish_raw(&e->s, UPK_TOPIC_DEV_DESIRED, first, first_len, true, &e->s.key), 0);
    free(first);
    expect_dropped(e, UPK_E_REPLAYED, 1);
    expect_still_downloading(e, "c-bake");
    assert_false(standin_saw(&e->s, UPK_STATUS_FAILED, UPK_E_SUPERSEDED));
    finish_update(e, "c-bake");
    assert_false(standin_saw(&e->s, UPK_STATUS_FAILED, UPK_E_SUPERSEDED));
}

/* Attack 4: an older, legitimately signed release with the same
 * security_version. Replayed with its old tag it is REPLAYED (no event);
 * sent afresh without rollback it is DOWNGRADE_REJECTED and nothing is
 * installed; only the controller's rollback: true takes the device back. */
static void older_release_needs_a_controller_rollback(void **state)
{
    env *e = *state;
    start_agent(e, true);
    upk_manifest old, cur;
    make_manifest(e, &old, "1.0", e->now - 7200, e->now + 3600);
    make_manifest(e, &cur, "2.0", e->now - 60, e->now + 3600);
    char *replay = NULL;
    size_t replay_len = 0;
    uint64_t ctr = e->s.ctr;
    assert_int_equal(
        standin_desired_payload(&e->s, &old, "c-1", e->key, false, &replay, &replay_len), 0);
    e->s.ctr = ctr;
    assert_int_equal(standin_publish_desired(&e->s, &old, "c-1", e->key, false), 0);
    expect_final(e, "c-1", UPK_STATUS_COMMITTED, UPK_OK);
    assert_int_equal(standin_publish_desired(&e->s, &cur, "c-2", e->key, false), 0);
    expect_final(e, "c-2", UPK_STATUS_COMMITTED, UPK_OK);
    assert_string_equal(upk_agent_installed_version(e->agent), "2.0");
    size_t events = e->s.event_count;
    size_t c1 = campaign_events(e, "c-1");
    /* The attacker replays the retained desired of c-1, tag and all. */
    assert_int_equal(
        standin_publish_raw(&e->s, UPK_TOPIC_DEV_DESIRED, replay, replay_len, true, &e->s.key), 0);
    free(replay);
    expect_dropped(e, UPK_E_REPLAYED, 1);
    assert_int_equal(e->s.event_count, events);
    assert_int_equal(campaign_events(e, "c-1"), c1);
    assert_string_equal(upk_agent_installed_version(e->agent), "2.0");
    /* Authentic and fresh, but not a rollback: refused by name. */
    assert_int_equal(standin_publish_desired(&e->s, &old, "c-3", e->key, false), 0);
    expect_final(e, "c-3", UPK_STATUS_REJECTED, UPK_E_DOWNGRADE_REJECTED);
    assert_string_equal(upk_agent_installed_version(e->agent), "2.0");
    const char *two = "install,activate,health,commit,install,activate,health,commit";
    assert_string_equal(e->fk.log, two);
    /* The controller's rollback. */
    e->s.rollback = true;
    assert_int_equal(standin_publish_desired(&e->s, &old, "c-4", e->key, false), 0);
    expect_final(e, "c-4", UPK_STATUS_COMMITTED, UPK_OK);
    assert_string_equal(upk_agent_installed_version(e->agent), "1.0");
    assert_int_equal(e->s.bad_tags, 0);
}

static bool p_failed_expired(env *e, const void *arg)
{
    const upk_event_msg *ev = final_event(e, arg);
    return ev != NULL && ev->step == UPK_STATUS_FAILED && ev->error == UPK_E_MANIFEST_EXPIRED;
}

/* Attack 5: a manifest accepted shortly before it expires, its chunks held
 * back past expiry: the update ends MANIFEST_EXPIRED and nothing is
 * installed, even when the chunks come afterwards. */
static void expiry_passing_mid_download_installs_nothing(void **state)
{
    env *e = *state;
    start_agent(e, true);
    upk_manifest m;
    int64_t now = (int64_t)time(NULL);
    make_manifest(e, &m, "2.0", now - 60, now + 5);
    start_stalled_update(e, &m, "c-exp");
    if (!wait_for(e, p_failed_expired, "c-exp", 15)) {
        const upk_event_msg *ev = final_event(e, "c-exp");
        fail_msg("no MANIFEST_EXPIRED failure (last: %s)",
                 ev != NULL ? upk_err_str(ev->error) : "none");
    }
    assert_true((int64_t)time(NULL) >= m.expires);
    e->s.stall = false; /* the held-back chunks arrive now */
    forge_chunk(e, UPK_CHUNK_OK, 0, CHUNK, &e->s.key);
    expect_dropped(e, UPK_E_CHUNK_UNEXPECTED, 1);
    assert_int_equal(upk_agent_status(e->agent), UPK_STATUS_FAILED);
    assert_string_equal(e->fk.log, "");
    assert_string_equal(upk_agent_installed_version(e->agent), "");
    assert_false(standin_saw(&e->s, UPK_STATUS_INSTALLING, UPK_OK));
}

static bool p_seen_event(env *e, const void *arg)
{
    (void)arg;
    return e->s.event_count >= 1;
}

static bool p_acked(env *e, const void *arg)
{
    (void)arg;
    return upk_agent_events_pending(e->agent) == 0;
}

/* Attack 6: a forged ack for the event in flight does not release it; the
 * controller's own ack does. */
static void forged_ack_keeps_the_event(void **state)
{
    env *e = *state;
    start_agent(e, true);
    e->s.hold_acks = true;
    upk_manifest m;
    make_manifest(e, &m, "2.0", e->now - 60, e->now + 3600);
    assert_int_equal(standin_publish_desired(&e->s, &m, "c-ack", e->key, true), 0);
    assert_true(wait_for(e, p_seen_event, NULL, 10));
    uint64_t seq = e->s.events[0].seq;
    char *ack = NULL;
    size_t len = 0;
    assert_int_equal(upk_ack_encode(seq, &ack, &len), UPK_OK);
    assert_int_equal(standin_publish_raw(&e->s, UPK_TOPIC_DEV_ACK, ack, len, false, NULL), 0);
    assert_int_equal(standin_publish_raw(&e->s, UPK_TOPIC_DEV_ACK, ack, len, false, &e->wrong), 0);
    free(ack);
    expect_dropped(e, UPK_E_AUTH_INVALID, 2);
    assert_true(upk_agent_events_pending(e->agent) >= 1);
    /* The real ack (the agent sends the event again after its timeout). */
    e->s.hold_acks = false;
    assert_true(wait_for(e, p_acked, NULL, 10));
    expect_final(e, "c-ack", UPK_STATUS_REJECTED, UPK_E_SIG_INVALID);
    assert_int_equal(e->s.bad_tags, 0);
}

static bool p_state_stale(env *e, const void *arg)
{
    return e->s.have_state && e->s.state.stale == *(const bool *)arg;
}

/* A desired past its fresh_until is DESIRED_STALE and changes nothing; once
 * the last accepted one's fresh_until passes, the state says "stale" until
 * a fresh one comes. A legacy empty clear is ignored with a key. */
static void stale_desired_is_refused_and_staleness_reported(void **state)
{
    env *e = *state;
    start_agent(e, true);
    upk_manifest m;
    make_manifest(e, &m, "2.0", e->now - 60, e->now + 3600);
    e->s.fresh_until = (int64_t)time(NULL) - 1;
    assert_int_equal(standin_publish_desired(&e->s, &m, "c-stale", e->key, false), 0);
    expect_dropped(e, UPK_E_DESIRED_STALE, 1);
    assert_int_equal(campaign_events(e, "c-stale"), 0);
    assert_int_equal(upk_agent_status(e->agent), UPK_STATUS_IDLE);
    /* An authenticated clear fresh for 3 s: accepted, then stale. */
    e->s.fresh_until = (int64_t)time(NULL) + 3;
    assert_int_equal(standin_clear_desired(&e->s), 0);
    bool yes = true, no = false;
    assert_true(wait_for(e, p_state_stale, &yes, 10));
    e->s.fresh_until = (int64_t)time(NULL) + 3600;
    assert_int_equal(standin_clear_desired(&e->s), 0);
    assert_true(wait_for(e, p_state_stale, &no, 10));
    assert_int_equal(e->s.event_count, 0);
    assert_string_equal(e->fk.log, "");
}

int main(void)
{
    (void)signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(forged_chunks_never_end_a_download, setup, teardown),
        cmocka_unit_test_setup_teardown(unauthenticated_chunks_are_dropped, setup, teardown),
        cmocka_unit_test_setup_teardown(authenticated_refusal_ends_the_download, setup, teardown),
        cmocka_unit_test_setup_teardown(forged_desired_naming_a_campaign_changes_nothing, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(unsigned_field_change_mid_download_is_refused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(older_release_needs_a_controller_rollback, setup, teardown),
        cmocka_unit_test_setup_teardown(expiry_passing_mid_download_installs_nothing, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(forged_ack_keeps_the_event, setup, teardown),
        cmocka_unit_test_setup_teardown(stale_desired_is_refused_and_staleness_reported, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
