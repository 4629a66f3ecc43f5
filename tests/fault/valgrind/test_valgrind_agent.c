/* The real upkeep-agent (an uninstrumented build) under valgrind memcheck
 * through rounds of real updates: delta, full with a failing health check
 * (rollback), full across a broker restart, a rejected signature and a
 * cancel; then a clean SIGTERM stop. Passes only with zero memcheck errors
 * and zero definite/indirect leaks. UPK_VG_ROUNDS sets the number of rounds
 * (tests/fault/valgrind/soak.sh runs hundreds of updates this way). */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"
#include "standin.h"
#include "upkeep/delta.h"
#include "upkeep/fs.h"

#define ART_LEN        (192u * 1024u + 77u)
#define ROUNDS_MAX     1000
#define STEP_TIMEOUT_S 120.0 /* one campaign, under valgrind on a loaded machine */
#define STOP_TIMEOUT_S 120.0 /* SIGTERM to exit, including the leak check */
#define SKIP_RC        77

typedef struct env {
    char dir[UPK_H_PATH_MAX];
    char data_dir[UPK_H_PATH_MAX + 16], target[UPK_H_PATH_MAX + 16];
    char cfg_path[UPK_H_PATH_MAX + 16], key_path[UPK_H_PATH_MAX + 16];
    char sick[UPK_H_PATH_MAX + 16], vg_log[UPK_H_PATH_MAX + 32];
    char url[64];
    upk_h_broker b;
    pid_t agent;
    uv_loop_t loop;
    bool loop_ok, standin_ok;
    standin s;
    upk_key *key;
    char device[UPK_ID_MAX + 1];
    uint8_t *x, *y, *z; /* images: X and Y differ a little, Z is another */
    uint8_t *xy, *yx;   /* patches X->Y and Y->X */
    size_t xy_len, yx_len;
    int64_t now;
    unsigned campaigns; /* campaigns that reached their expected outcome */
    unsigned installs;  /* of which committed */
    unsigned rollbacks; /* of which rolled back */
    unsigned restarts;  /* broker restarts while downloading */
} env;

static void tick(uv_timer_t *t)
{
    (void)t;
}

/* Runs the loop until pred(e, arg) or timeout_s; returns pred's last value. */
static bool wait_for(env *e, bool (*pred)(env *, const void *), const void *arg, double timeout_s)
{
    uv_timer_t t;
    if (uv_timer_init(&e->loop, &t) != 0)
        return false;
    (void)uv_timer_start(&t, tick, 10, 10);
    double end = upk_h_now() + timeout_s;
    bool ok = pred(e, arg);
    while (!ok && upk_h_now() < end) {
        (void)uv_run(&e->loop, UV_RUN_ONCE);
        ok = pred(e, arg);
    }
    uv_close((uv_handle_t *)&t, NULL);
    (void)uv_run(&e->loop, UV_RUN_NOWAIT);
    return ok;
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

static void dump_file(const char *what, const char *path)
{
    char *buf = NULL;
    size_t len = 0;
    if (upk_fs_read(path, 1u << 22, &buf, &len) == UPK_OK) {
        fprintf(stderr, "---- %s (%s) ----\n%s\n----\n", what, path, buf);
        free(buf);
    }
}

static void dump_logs(env *e)
{
    char p[UPK_H_PATH_MAX + 32];
    (void)snprintf(p, sizeof(p), "%s/agent.log", e->dir);
    dump_file("agent log", p);
    dump_file("valgrind log", e->vg_log);
}

/* Starts the agent under valgrind; its memcheck report goes to e->vg_log. */
static void agent_start(env *e)
{
    char log[UPK_H_PATH_MAX + 32], vglog[UPK_H_PATH_MAX + 48];
    (void)snprintf(log, sizeof(log), "%s/agent.log", e->dir);
    (void)snprintf(vglog, sizeof(vglog), "--log-file=%s", e->vg_log);
    e->agent = fork();
    assert_true(e->agent >= 0);
    if (e->agent == 0) {
        (void)prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive a killed test */
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd >= 0) {
            (void)dup2(fd, 2);
            (void)dup2(fd, 1);
            (void)close(fd);
        }
        execl(VALGRIND_BIN, "valgrind", "--tool=memcheck", "--leak-check=full",
              "--show-leak-kinds=definite,indirect", "--errors-for-leak-kinds=definite,indirect",
              "--error-exitcode=99", "--child-silent-after-fork=yes", "--num-callers=30",
              "--suppressions=" VG_SUPP, vglog, AGENT_BIN, "-c", e->cfg_path, "-l", "info",
              (char *)NULL);
        _exit(127);
    }
}

/* SIGTERM, then waits for the exit (the leak check runs at exit). Returns
 * the exit status, or -1 when it had to be killed. */
static int agent_stop(env *e)
{
    if (e->agent <= 0)
        return -1;
    (void)kill(e->agent, SIGTERM);
    double end = upk_h_now() + STOP_TIMEOUT_S;
    int st = 0;
    pid_t got = 0;
    while ((got = waitpid(e->agent, &st, WNOHANG)) == 0 && upk_h_now() < end) {
        /* Keep the stand-in's connection serviced while we wait. */
        (void)uv_run(&e->loop, UV_RUN_NOWAIT);
        struct timespec ts = {0, 20 * 1000 * 1000};
        (void)nanosleep(&ts, NULL); /* polling a child's exit: no event to await */
    }
    if (got != e->agent) {
        (void)kill(e->agent, SIGKILL);
        (void)waitpid(e->agent, NULL, 0);
        e->agent = 0;
        return -1;
    }
    e->agent = 0;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void write_config(env *e)
{
    char text[4096];
    int n = snprintf(text, sizeof(text),
                     "{\"broker\":\"%s\",\"device_id\":\"%s\",\"hardware\":\"hw-1\","
                     "\"data_dir\":\"%s\",\"keys\":[\"%s\"],\"module\":\"file\","
                     "\"module_settings\":{\"path\":\"%s\"},"
                     "\"health_check\":{\"command\":[\"/bin/sh\",\"-c\",\"test ! -e '%s'\"],"
                     "\"timeout_s\":60},\"reconnect_min_ms\":100,\"reconnect_max_ms\":400,"
                     "\"limits\":{\"chunk_size\":16384,\"chunks_in_flight\":4,"
                     "\"chunk_timeout_ms\":3000,\"step_timeout_s\":120}}",
                     e->url, e->device, e->data_dir, e->key_path, e->target, e->sick);
    assert_true(n > 0 && (size_t)n < sizeof(text));
    assert_int_equal(upk_fs_write_atomic(e->cfg_path, text, (size_t)n), UPK_OK);
}

static void make_manifest(env *e, upk_manifest *m, const char *version, const uint8_t *img)
{
    memset(m, 0, sizeof(*m));
    (void)snprintf(m->name, sizeof(m->name), "fw");
    (void)snprintf(m->version, sizeof(m->version), "%s", version);
    m->security_version = 1;
    m->hw_count = 1;
    (void)snprintf(m->hw[0], sizeof(m->hw[0]), "hw-1");
    m->type = UPK_RELEASE_FULL;
    (void)snprintf(m->module, sizeof(m->module), "file");
    m->size = ART_LEN;
    upk_sha256_buf(img, ART_LEN, m->sha256);
    m->target_size = ART_LEN;
    memcpy(m->target_sha256, m->sha256, UPK_SHA256_LEN);
    m->created = e->now - 60;
    m->expires = e->now + 86400;
}

static void make_delta(env *e, upk_manifest *m, const char *version, const uint8_t *base,
                       const uint8_t *img, const uint8_t *patch, size_t plen)
{
    make_manifest(e, m, version, img);
    m->type = UPK_RELEASE_DELTA;
    m->size = plen;
    upk_sha256_buf(patch, plen, m->sha256);
    upk_sha256_buf(base, ART_LEN, m->base_sha256);
}

/* Makes a patch from a to b with the project's delta tool, in the test dir. */
static uint8_t *make_patch(env *e, const uint8_t *a, const uint8_t *b, size_t *plen)
{
    char pa[UPK_H_PATH_MAX + 16], pb[UPK_H_PATH_MAX + 16], pp[UPK_H_PATH_MAX + 16];
    (void)snprintf(pa, sizeof(pa), "%s/a.img", e->dir);
    (void)snprintf(pb, sizeof(pb), "%s/b.img", e->dir);
    (void)snprintf(pp, sizeof(pp), "%s/a-b.patch", e->dir);
    if (upk_fs_write_atomic(pa, a, ART_LEN) != UPK_OK ||
        upk_fs_write_atomic(pb, b, ART_LEN) != UPK_OK || upk_delta_make(pa, pb, pp) != UPK_OK)
        return NULL;
    char *buf = NULL;
    if (upk_fs_read(pp, 1u << 24, &buf, plen) != UPK_OK)
        return NULL;
    return (uint8_t *)buf;
}

/* ---- predicates */
static bool p_connected(env *e, const void *arg)
{
    (void)arg;
    return e->s.connected;
}

static bool p_state_any(env *e, const void *arg)
{
    (void)arg;
    return e->s.have_state;
}

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

static bool p_downloading(env *e, const void *arg)
{
    for (size_t i = 0; i < e->s.event_count; i++)
        if (strcmp(e->s.events[i].campaign, arg) == 0 &&
            e->s.events[i].step == UPK_STATUS_DOWNLOADING)
            return true;
    return false;
}

static bool p_served(env *e, const void *arg)
{
    return e->s.max_served_end >= *(const uint64_t *)arg;
}

/* True (and the child reaped) when the agent process has ended. */
static bool p_agent_exited(env *e, const void *arg)
{
    (void)arg;
    if (e->agent <= 0 || waitpid(e->agent, NULL, WNOHANG) != e->agent)
        return false;
    e->agent = 0;
    return true;
}

/* ---- checks */
static void expect_final(env *e, const char *campaign, upk_status st, upk_err err)
{
    if (!wait_for(e, p_final, campaign, STEP_TIMEOUT_S)) {
        dump_logs(e);
        fail_msg("campaign %s: no final event", campaign);
    }
    const upk_event_msg *ev = final_event(e, campaign);
    if (ev->step != st || ev->error != err) {
        dump_logs(e);
        fail_msg("campaign %s: ended %s/%s (%s), expected %s/%s", campaign,
                 upk_status_str(ev->step), upk_err_str(ev->error), ev->message, upk_status_str(st),
                 upk_err_str(err));
    }
    e->campaigns++;
    if (st == UPK_STATUS_COMMITTED)
        e->installs++;
    if (st == UPK_STATUS_ROLLED_BACK)
        e->rollbacks++;
    /* Campaign names are unique: the events seen so far are no longer needed
     * (the stand-in keeps a bounded number). */
    e->s.event_count = 0;
}

static void expect_target(env *e, const uint8_t *img)
{
    char *buf = NULL;
    size_t len = 0;
    assert_int_equal(upk_fs_read(e->target, 1u << 24, &buf, &len), UPK_OK);
    assert_int_equal(len, ART_LEN);
    assert_memory_equal(buf, img, ART_LEN);
    free(buf);
}

static void publish(env *e, const upk_manifest *m, const char *campaign, bool break_sig)
{
    assert_int_equal(standin_publish_desired(&e->s, m, campaign, e->key, break_sig), 0);
}

/* The first part of a round, from X installed to X installed: a delta
 * X->Y, a full Z that fails its health check (rolled back to Y), a full X
 * whose download is cut by a broker restart, a rejected signature and a
 * cancelled download. */
static void one_round(env *e, unsigned r)
{
    char c[64], v[32];
    upk_manifest m;

    (void)snprintf(c, sizeof(c), "r%u-delta-xy", r);
    (void)snprintf(v, sizeof(v), "%u.1", r + 2);
    make_delta(e, &m, v, e->x, e->y, e->xy, e->xy_len);
    standin_set_artifact(&e->s, e->xy, e->xy_len);
    publish(e, &m, c, false);
    expect_final(e, c, UPK_STATUS_COMMITTED, UPK_OK);
    expect_target(e, e->y);

    (void)snprintf(c, sizeof(c), "r%u-full-z-sick", r);
    (void)snprintf(v, sizeof(v), "%u.2", r + 2);
    assert_int_equal(upk_fs_write_atomic(e->sick, "1", 1), UPK_OK);
    make_manifest(e, &m, v, e->z);
    standin_set_artifact(&e->s, e->z, ART_LEN);
    publish(e, &m, c, false);
    expect_final(e, c, UPK_STATUS_ROLLED_BACK, UPK_E_HEALTH_FAILED);
    assert_int_equal(unlink(e->sick), 0);
    expect_target(e, e->y);

    /* Full Y->X download cut by a broker restart a third of the way in. */
    (void)snprintf(c, sizeof(c), "r%u-full-x-restart", r);
    (void)snprintf(v, sizeof(v), "%u.3", r + 2);
    make_manifest(e, &m, v, e->x);
    standin_set_artifact(&e->s, e->x, ART_LEN);
    e->s.max_served_end = 0;
    publish(e, &m, c, false);
    uint64_t third = ART_LEN / 3;
    assert_true(wait_for(e, p_served, &third, STEP_TIMEOUT_S));
    e->s.stall = true;
    (void)upk_h_broker_stop_wait(&e->b, 30.0);
    e->s.stall = false;
    if (upk_h_broker_restart(&e->b, 30.0) != 0) {
        upk_h_broker_dump_log(e->dir);
        fail_msg("broker did not restart on port %d", e->b.port);
    }
    e->restarts++;
    expect_final(e, c, UPK_STATUS_COMMITTED, UPK_OK);
    expect_target(e, e->x);

    (void)snprintf(c, sizeof(c), "r%u-badsig", r);
    (void)snprintf(v, sizeof(v), "%u.4", r + 2);
    make_manifest(e, &m, v, e->y);
    publish(e, &m, c, true);
    expect_final(e, c, UPK_STATUS_REJECTED, UPK_E_SIG_INVALID);

    /* A download the controller stops answering, then cancels. */
    (void)snprintf(c, sizeof(c), "r%u-cancel", r);
    (void)snprintf(v, sizeof(v), "%u.5", r + 2);
    make_manifest(e, &m, v, e->y);
    standin_set_artifact(&e->s, e->y, ART_LEN);
    e->s.stall = true;
    publish(e, &m, c, false);
    assert_true(wait_for(e, p_downloading, c, STEP_TIMEOUT_S));
    assert_int_equal(standin_clear_desired(&e->s), 0);
    expect_final(e, c, UPK_STATUS_FAILED, UPK_E_CANCELLED);
    e->s.stall = false;
    expect_target(e, e->x);
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
    e->now = (int64_t)time(NULL);
    (void)snprintf(e->data_dir, sizeof(e->data_dir), "%s/data", e->dir);
    (void)snprintf(e->target, sizeof(e->target), "%s/app.bin", e->dir);
    (void)snprintf(e->cfg_path, sizeof(e->cfg_path), "%s/agent.json", e->dir);
    (void)snprintf(e->key_path, sizeof(e->key_path), "%s/release.pub", e->dir);
    (void)snprintf(e->sick, sizeof(e->sick), "%s/sick", e->dir);
    (void)snprintf(e->vg_log, sizeof(e->vg_log), "%s/valgrind-agent.log", e->dir);
    (void)snprintf(e->device, sizeof(e->device), "vg-%d", (int)getpid());
    char *pem = NULL;
    if (upk_key_generate(&e->key) != UPK_OK || upk_key_public_pem(e->key, &pem) != UPK_OK ||
        upk_fs_write_atomic(e->key_path, pem, strlen(pem)) != UPK_OK) {
        free(pem);
        return -1; /* teardown cleans up */
    }
    free(pem);
    e->x = malloc(ART_LEN);
    e->y = malloc(ART_LEN);
    e->z = malloc(ART_LEN);
    if (e->x == NULL || e->y == NULL || e->z == NULL)
        return -1;
    fill_random(e->x, ART_LEN, 11);
    memcpy(e->y, e->x, ART_LEN);
    for (size_t i = 0; i < ART_LEN; i += 30000)
        e->y[i] ^= 0xa5;
    fill_random(e->z, ART_LEN, 12);
    e->xy = make_patch(e, e->x, e->y, &e->xy_len);
    e->yx = make_patch(e, e->y, e->x, &e->yx_len);
    if (e->xy == NULL || e->yx == NULL ||
        upk_fs_write_atomic(e->target, "factory image\n", 14) != UPK_OK)
        return -1;
    char conf[UPK_H_PATH_MAX * 2 + 128];
    (void)snprintf(conf, sizeof(conf),
                   "allow_anonymous true\npersistence true\npersistence_location %s/\n", e->dir);
    if (upk_h_broker_start(&e->b, e->dir, conf, 10.0) != 0)
        return -1;
    (void)snprintf(e->url, sizeof(e->url), "tcp://127.0.0.1:%d", e->b.port);
    if (uv_loop_init(&e->loop) != 0)
        return -1;
    e->loop_ok = true;
    e->standin_ok = standin_init(&e->s, &e->loop, e->url, e->device) == 0;
    return e->standin_ok ? 0 : -1;
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
    if (e->agent > 0) {
        (void)kill(e->agent, SIGKILL);
        (void)waitpid(e->agent, NULL, 0);
    }
    if (e->standin_ok)
        standin_close(&e->s);
    upk_h_broker_stop(&e->b);
    if (e->loop_ok) {
        (void)uv_run(&e->loop, UV_RUN_NOWAIT);
        (void)uv_loop_close(&e->loop);
    }
    upk_key_free(e->key);
    free(e->x);
    free(e->y);
    free(e->z);
    free(e->xy);
    free(e->yx);
    if (getenv("UPK_VG_KEEP") == NULL)
        upk_h_rmtree(e->dir);
    else
        fprintf(stderr, "kept %s\n", e->dir);
    free(e);
    *state = NULL;
    return 0;
}

/* Prints the lines of the memcheck report that carry the figures. */
static void print_summary(env *e, unsigned rounds, double secs)
{
    FILE *f = fopen(e->vg_log, "r");
    assert_non_null(f);
    char line[512];
    printf("valgrind agent: %u rounds, %u campaigns (%u committed, %u rolled back), "
           "%u broker restarts, %.0f s\n",
           rounds, e->campaigns, e->installs, e->rollbacks, e->restarts, secs);
    while (fgets(line, sizeof(line), f) != NULL)
        if (strstr(line, "ERROR SUMMARY") != NULL || strstr(line, "definitely lost") != NULL ||
            strstr(line, "indirectly lost") != NULL || strstr(line, "possibly lost") != NULL ||
            strstr(line, "in use at exit") != NULL || strstr(line, "total heap usage") != NULL ||
            strstr(line, "All heap blocks were freed") != NULL)
            fputs(line, stdout);
    (void)fclose(f);
    (void)fflush(stdout);
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

static void agent_updates_under_memcheck_without_leaks(void **state)
{
    env *e = *state;
    unsigned rounds = rounds_wanted();
    double t0 = upk_h_now();
    write_config(e);
    agent_start(e);
    if (!wait_for(e, p_connected, NULL, 30) || !wait_for(e, p_state_any, NULL, 60)) {
        dump_logs(e);
        fail_msg("the agent under valgrind did not report its state");
    }
    /* First a full X, the base of every round. */
    upk_manifest m;
    make_manifest(e, &m, "1.0", e->x);
    standin_set_artifact(&e->s, e->x, ART_LEN);
    publish(e, &m, "base-x", false);
    expect_final(e, "base-x", UPK_STATUS_COMMITTED, UPK_OK);
    expect_target(e, e->x);
    for (unsigned r = 0; r < rounds; r++) {
        one_round(e, r);
        /* Then a full Y and the delta Y->X back to the base. */
        char c[64], v[32];
        (void)snprintf(c, sizeof(c), "r%u-full-y", r);
        (void)snprintf(v, sizeof(v), "%u.6", r + 2);
        make_manifest(e, &m, v, e->y);
        standin_set_artifact(&e->s, e->y, ART_LEN);
        publish(e, &m, c, false);
        expect_final(e, c, UPK_STATUS_COMMITTED, UPK_OK);
        (void)snprintf(c, sizeof(c), "r%u-delta-yx", r);
        (void)snprintf(v, sizeof(v), "%u.7", r + 2);
        make_delta(e, &m, v, e->y, e->x, e->yx, e->yx_len);
        standin_set_artifact(&e->s, e->yx, e->yx_len);
        publish(e, &m, c, false);
        expect_final(e, c, UPK_STATUS_COMMITTED, UPK_OK);
        expect_target(e, e->x);
    }
    assert_false(wait_for(e, p_agent_exited, NULL, 0)); /* it did not crash meanwhile */
    int rc = agent_stop(e);
    print_summary(e, rounds, upk_h_now() - t0);
    if (rc != 0 || !upk_h_file_contains(e->vg_log, "ERROR SUMMARY: 0 errors from 0 contexts")) {
        dump_logs(e);
        fail_msg("agent under valgrind exited with %d (99 = memcheck errors or leaks)", rc);
    }
}

int main(void)
{
    if (VALGRIND_BIN[0] == '\0' || AGENT_BIN[0] == '\0') {
        printf("SKIP: %s\n", VALGRIND_BIN[0] == '\0' ? "valgrind not installed"
                                                     : "no uninstrumented upkeep-agent");
        return SKIP_RC;
    }
    (void)signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(agent_updates_under_memcheck_without_leaks, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
