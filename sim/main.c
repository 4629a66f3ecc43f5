/* upkeep-sim: runs a simulated fleet of real upkeep agents in one process
 * until SIGINT/SIGTERM (or --duration), printing a one-line summary per
 * second. Parses arguments and wires; all logic is in the upkeep_sim library. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <uv.h>

#include "upkeep/fs.h"
#include "upkeep/key.h"
#include "upkeep/log.h"
#include "upkeep/sim.h"

#ifndef UPK_VERSION
#define UPK_VERSION "0.0.0"
#endif

#define KEYS_MAX  UPK_KEYRING_MAX
#define SPECS_MAX 32

static void usage(FILE *out)
{
    fprintf(out,
            "usage: upkeep-sim --broker URL --count N --fleet-secret-file FILE --keys PUB.pem\n"
            "                  [--hw CLASS:SHARE,...] [--id-prefix P] [--first N]\n"
            "                  [--install-ms SPEC] [--activate-ms SPEC] [--health-ms SPEC]\n"
            "                  [--fail SPEC] [--health-fail SPEC] [--data-dir DIR]\n"
            "                  [--base-image FILE] [--module NAME] [--topic-prefix P]\n"
            "                  [--connect-rate N] [--reconnect-max-ms MS] [--chunk-size B]\n"
            "                  [--chunks-in-flight N] [--seed N] [--duration S]\n"
            "                  [--status-file PATH] [--quiet] [--procs K] [-l LEVEL]\n"
            "                  [--restart-after-commit SPEC] [--metric SPEC]...\n"
            "                  [--health-interval S] [--ack-timeout-ms MS]\n"
            "                  [--link-secret-file FILE]\n"
            "\n"
            "Runs N simulated devices in one process. Each is a full upkeep agent (state\n"
            "machine, journal, outbox, signature and hash verification) with its own MQTT\n"
            "connection and its own password, derived from the fleet secret as the broker\n"
            "plugin derives it. Only install, activate and health-check are simulated.\n"
            "\n"
            "  --broker URL          tcp://127.0.0.1:PORT\n"
            "  --count N             devices (1..%u)\n"
            "  --fleet-secret-file F the broker plugin's fleet secret\n"
            "  --link-secret-file F  the controller's link secret: each device derives its\n"
            "                        link key from it as the controller does (default: none,\n"
            "                        agents run without link authentication)\n"
            "  --keys PUB.pem        pinned release public key; repeat or comma-separate\n"
            "  --hw SPEC             hardware classes and shares (default rev-a:100%%),\n"
            "                        e.g. rev-a:50%%,rev-b:50%%\n"
            "  --id-prefix P         device ids are P + a zero-padded number (default sim-)\n"
            "  --first N             number of the first device (default 1)\n"
            "  --install-ms SPEC     simulated install time per class, e.g. rev-a:200,rev-b:500\n"
            "                        or 200 for every class (default 200)\n"
            "  --activate-ms SPEC    simulated activation time (default 50)\n"
            "  --health-ms SPEC      simulated health check time (default 100)\n"
            "  --fail SPEC           install failure probability, e.g. rev-b:0.3 (default 0)\n"
            "  --health-fail SPEC    health check failure probability; CLASS:P@VERSION limits\n"
            "                        it to releases of that version, e.g. rev-b:1@2.0.0\n"
            "  --data-dir DIR        keep device data here (devices resume from it); default\n"
            "                        a temporary dir under $UPK_SIM_TMPDIR, /dev/shm or /tmp,\n"
            "                        removed at exit\n"
            "  --restart-after-commit CLASS:N[@VERSION]\n"
            "                        devices of CLASS (* for all) restart their agent N times\n"
            "                        after committing VERSION (any without @), 1.5 s apart\n"
            "  --metric NAME:CLASS:VALUE[@VERSION]\n"
            "                        devices of CLASS (* for all) report health metric NAME\n"
            "                        = VALUE, only while running VERSION when given; repeat\n"
            "                        for more metrics (at most 8 per class)\n"
            "  --health-interval S   seconds between the agents' health reports (default 60,\n"
            "                        at least 10)\n"
            "  --ack-timeout-ms MS   agents re-send an event the controller has not\n"
            "                        acknowledged after MS (default 10000, doubling)\n"
            "  --base-image FILE     image every device starts with installed (for deltas)\n"
            "  --module NAME         install module the devices report (default ab-dir)\n"
            "  --connect-rate N      devices started per second (default 2000)\n"
            "  --seed N              seed of the failure draws (default 1)\n"
            "  --duration S          stop by itself after S seconds (default: run until signal)\n"
            "  --status-file PATH    rewrite PATH each second with the summary as JSON\n"
            "  --quiet               no per-second summary on stdout\n"
            "  --procs K             split the fleet over K worker processes (default: one per\n"
            "                        1000 devices, at most 200), to use every core\n"
            "  -l, --log LEVEL       agent log level: debug, info, warn, error (default warn)\n"
            "\n"
            "The open-file limit is raised to its hard limit at start (one socket per\n"
            "device). Exit status: 0 after a clean stop, 1 on a runtime error, 2 on bad\n"
            "arguments.\n",
            UPK_SIM_DEVICES_MAX);
}

typedef struct app {
    uv_loop_t *loop;
    upk_sim *sim;
    uv_signal_t sigint, sigterm;
    uv_timer_t tick;
    bool stopping;
    bool quiet;
    const char *status_file;
    uint64_t start_ms;
    uint64_t duration_s;
} app;

static bool parse_u64(const char *s, uint64_t max, uint64_t *out)
{
    if (s == NULL || s[0] < '0' || s[0] > '9')
        return false;
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v > max)
        return false;
    *out = v;
    return true;
}

/* Raises RLIMIT_NOFILE to its hard limit and says so; warns when it is
 * still short of what `need` sockets take. */
static void raise_nofile(size_t need)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        fprintf(stderr, "upkeep-sim: cannot read the open-file limit: %s\n", strerror(errno));
        return;
    }
    rlim_t before = rl.rlim_cur;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
            fprintf(stderr, "upkeep-sim: cannot raise the open-file limit: %s\n", strerror(errno));
            rl.rlim_cur = before;
        } else {
            fprintf(stderr, "upkeep-sim: raised the open-file limit from %llu to %llu\n",
                    (unsigned long long)before, (unsigned long long)rl.rlim_cur);
        }
    }
    if (rl.rlim_cur != RLIM_INFINITY && (uint64_t)rl.rlim_cur < (uint64_t)need + 64)
        fprintf(stderr,
                "upkeep-sim: warning: the open-file limit (%llu) is below the %zu devices "
                "need; raise the hard limit (ulimit -Hn) as root\n",
                (unsigned long long)rl.rlim_cur, need + 64);
}

static uint64_t now_ms(void)
{
    return uv_hrtime() / 1000000u;
}

static void write_status(const char *path, const upk_sim_stats *st, uint64_t t_s, bool stopping)
{
    char buf[2048];
    size_t off = 0;
    int n = snprintf(buf, sizeof(buf),
                     "{\"t\":%" PRIu64 ",\"devices\":%zu,\"started\":%zu,\"connected\":%zu,"
                     "\"status\":{",
                     t_s, st->devices, st->started, st->connected);
    if (n < 0 || (size_t)n >= sizeof(buf))
        return;
    off = (size_t)n;
    for (int s = 0; s < UPK_STATUS__COUNT; s++) {
        n = snprintf(buf + off, sizeof(buf) - off, "%s\"%s\":%zu", s == 0 ? "" : ",",
                     upk_status_str((upk_status)s), st->by_status[s]);
        if (n < 0 || (size_t)n >= sizeof(buf) - off)
            return;
        off += (size_t)n;
    }
    n = snprintf(buf + off, sizeof(buf) - off,
                 "},\"restarts\":%zu,\"events_pending\":%zu,\"stopping\":%s}\n", st->restarts,
                 st->events_pending, stopping ? "true" : "false");
    if (n < 0 || (size_t)n >= sizeof(buf) - off)
        return;
    off += (size_t)n;
    if (upk_fs_write_atomic(path, buf, off) != UPK_OK)
        upk_warn("cannot write status file %s", path);
}

static void print_stats(bool quiet, const char *status_file, const upk_sim_stats *st, uint64_t t_s,
                        bool stopping)
{
    if (!quiet) {
        char line[1024];
        int n = snprintf(line, sizeof(line), "upkeep-sim: t=%" PRIu64 "s devices=%zu connected=%zu",
                         t_s, st->devices, st->connected);
        size_t off = n > 0 && (size_t)n < sizeof(line) ? (size_t)n : 0;
        if (st->started < st->devices && off > 0) {
            n = snprintf(line + off, sizeof(line) - off, " started=%zu", st->started);
            off = n > 0 && (size_t)n < sizeof(line) - off ? off + (size_t)n : off;
        }
        for (int s = 0; s < UPK_STATUS__COUNT && off > 0; s++) {
            if (st->by_status[s] == 0)
                continue;
            n = snprintf(line + off, sizeof(line) - off, " %s=%zu", upk_status_str((upk_status)s),
                         st->by_status[s]);
            if (n < 0 || (size_t)n >= sizeof(line) - off)
                break;
            off += (size_t)n;
        }
        printf("%s\n", line);
        fflush(stdout);
    }
    if (status_file != NULL)
        write_status(status_file, st, t_s, stopping);
}

static void summary(app *a)
{
    upk_sim_stats st;
    upk_sim_stats_get(a->sim, &st);
    print_stats(a->quiet, a->status_file, &st, (now_ms() - a->start_ms) / 1000u, a->stopping);
}

static void sim_closed(void *userdata)
{
    app *a = userdata;
    a->sim = NULL;
    uv_close((uv_handle_t *)&a->sigint, NULL);
    uv_close((uv_handle_t *)&a->sigterm, NULL);
    uv_close((uv_handle_t *)&a->tick, NULL);
}

static void stop(app *a, const char *why)
{
    if (a->stopping)
        return;
    a->stopping = true;
    if (!a->quiet) {
        printf("upkeep-sim: stopping (%s): closing every agent\n", why);
        fflush(stdout);
    }
    if (a->status_file != NULL && a->sim != NULL) {
        upk_sim_stats st;
        upk_sim_stats_get(a->sim, &st);
        print_stats(true, a->status_file, &st, (now_ms() - a->start_ms) / 1000u, true);
    }
    (void)uv_timer_stop(&a->tick);
    upk_sim_close(a->sim, sim_closed, a);
}

static void on_signal(uv_signal_t *s, int signum)
{
    app *a = s->data;
    stop(a, signum == SIGINT ? "SIGINT" : "SIGTERM");
}

static void on_tick(uv_timer_t *t)
{
    app *a = t->data;
    if (a->sim == NULL || a->stopping)
        return;
    summary(a);
    if (a->duration_s > 0 && now_ms() - a->start_ms >= a->duration_s * 1000u)
        stop(a, "duration reached");
}

/* Reads a secret (fleet or link) as the broker plugin and the controller
 * do: trailing whitespace is not part of it. */
static int read_secret(const char *what, const char *path, uint8_t *out, size_t cap, size_t *len)
{
    char *buf = NULL;
    size_t n = 0;
    upk_err e = upk_fs_read(path, cap, &buf, &n);
    if (e != UPK_OK) {
        fprintf(stderr, "upkeep-sim: cannot read %s %s: %s\n", what, path, upk_err_str(e));
        return -1;
    }
    while (n > 0 &&
           (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ' || buf[n - 1] == '\t'))
        n--;
    memcpy(out, buf, n);
    *len = n;
    memset(buf, 0, n);
    free(buf);
    return 0;
}

static int add_keys(upk_keyring *ring, const char *list)
{
    char buf[UPK_SIM_SPEC_MAX + 1];
    if (strlen(list) > UPK_SIM_SPEC_MAX) {
        fprintf(stderr, "upkeep-sim: --keys list too long\n");
        return -1;
    }
    (void)snprintf(buf, sizeof(buf), "%s", list);
    char *p = buf;
    while (p != NULL && *p != '\0') {
        char *comma = strchr(p, ',');
        if (comma != NULL)
            *comma = '\0';
        char *pem = NULL;
        size_t len = 0;
        upk_key *k = NULL;
        upk_err e = upk_fs_read(p, UPK_KEY_PEM_MAX, &pem, &len);
        if (e == UPK_OK) {
            e = upk_key_load_pem(pem, len, &k);
            free(pem);
        }
        if (e == UPK_OK) {
            e = upk_keyring_add(ring, k);
            upk_key_free(k);
            if (e == UPK_E_EXISTS)
                e = UPK_OK;
        }
        if (e != UPK_OK) {
            fprintf(stderr, "upkeep-sim: cannot pin key %s: %s\n", p, upk_err_str(e));
            return -1;
        }
        p = comma != NULL ? comma + 1 : NULL;
    }
    return 0;
}

/* ---- parent of worker processes (--procs K > 1). Each worker runs its
 * share of the fleet on one libuv loop; K of them use every core. The
 * parent only aggregates their status files. At 10,000 devices, 10 workers
 * used 25.6 CPU s where 100 used 29.6 (more processes, more wake-ups;
 * docs/benchmarks.md, Scale). */

#define PROCS_MAX 200
#define PER_PROC  1000u

typedef struct worker {
    uv_process_t proc;
    bool running;
    int exit_status;
    char status_path[600];
} worker;

typedef struct parent {
    uv_loop_t *loop;
    worker w[PROCS_MAX];
    size_t n, running;
    uv_signal_t sigint, sigterm;
    uv_timer_t tick;
    bool stopping, failed, quiet;
    const char *status_file;
    char dir[512];
    uint64_t start_ms, duration_s;
} parent;

static void parent_kill_all(parent *p, int sig)
{
    for (size_t i = 0; i < p->n; i++) {
        if (p->w[i].running)
            (void)uv_process_kill(&p->w[i].proc, sig);
    }
}

static void parent_stop(parent *p, const char *why)
{
    if (p->stopping)
        return;
    p->stopping = true;
    if (!p->quiet) {
        printf("upkeep-sim: stopping (%s): closing every agent\n", why);
        fflush(stdout);
    }
    parent_kill_all(p, SIGTERM);
}

/* Sums the workers' status files into st; false when one is missing. */
static bool parent_collect(parent *p, upk_sim_stats *st)
{
    memset(st, 0, sizeof(*st));
    bool all = true;
    for (size_t i = 0; i < p->n; i++) {
        char *text = NULL;
        size_t len = 0;
        if (upk_fs_read(p->w[i].status_path, 4096, &text, &len) != UPK_OK) {
            all = false;
            continue;
        }
        size_t dev = 0, started = 0, conn = 0;
        const char *q = strstr(text, "\"devices\":");
        if (q != NULL)
            dev = strtoull(q + 10, NULL, 10);
        q = strstr(text, "\"started\":");
        if (q != NULL)
            started = strtoull(q + 10, NULL, 10);
        q = strstr(text, "\"connected\":");
        if (q != NULL)
            conn = strtoull(q + 12, NULL, 10);
        q = strstr(text, "\"restarts\":");
        if (q != NULL)
            st->restarts += strtoull(q + 11, NULL, 10);
        q = strstr(text, "\"events_pending\":");
        if (q != NULL)
            st->events_pending += strtoull(q + 17, NULL, 10);
        st->devices += dev;
        st->started += started;
        st->connected += conn;
        for (int s = 0; s < UPK_STATUS__COUNT; s++) {
            char key[64];
            (void)snprintf(key, sizeof(key), "\"%s\":", upk_status_str((upk_status)s));
            q = strstr(text, key);
            if (q != NULL)
                st->by_status[s] += strtoull(q + strlen(key), NULL, 10);
        }
        free(text);
    }
    return all;
}

static void print_stats(bool quiet, const char *status_file, const upk_sim_stats *st, uint64_t t_s,
                        bool stopping);

static void parent_tick(uv_timer_t *t)
{
    parent *p = t->data;
    upk_sim_stats st;
    (void)parent_collect(p, &st);
    uint64_t t_s = (now_ms() - p->start_ms) / 1000u;
    print_stats(p->quiet, p->status_file, &st, t_s, p->stopping);
    if (!p->stopping && p->duration_s > 0 && now_ms() - p->start_ms >= p->duration_s * 1000u)
        parent_stop(p, "duration reached");
}

static void parent_on_signal(uv_signal_t *s, int signum)
{
    parent *p = s->data;
    parent_stop(p, signum == SIGINT ? "SIGINT" : "SIGTERM");
}

static void parent_closed_proc(uv_handle_t *h)
{
    (void)h;
}

static void parent_on_exit(uv_process_t *proc, int64_t status, int term_signal)
{
    parent *p = proc->data;
    for (size_t i = 0; i < p->n; i++) {
        if (&p->w[i].proc != proc)
            continue;
        p->w[i].running = false;
        p->w[i].exit_status = (int)status;
        if (status != 0 || (term_signal != 0 && !p->stopping)) {
            fprintf(stderr, "upkeep-sim: worker %zu exited with status %d (signal %d)\n", i,
                    (int)status, term_signal);
            p->failed = true;
            parent_stop(p, "a worker failed");
        }
    }
    uv_close((uv_handle_t *)proc, parent_closed_proc);
    if (--p->running == 0) {
        uv_close((uv_handle_t *)&p->sigint, NULL);
        uv_close((uv_handle_t *)&p->sigterm, NULL);
        (void)uv_timer_stop(&p->tick);
        uv_close((uv_handle_t *)&p->tick, NULL);
    }
}

static int rm_flat_dir(const char *dir, const parent *p)
{
    for (size_t i = 0; i < p->n; i++)
        (void)unlink(p->w[i].status_path);
    return rmdir(dir);
}

/* Runs procs copies of this program, each with a slice of the fleet. */
static int run_parent(int argc, char **argv, size_t count, size_t first, size_t procs,
                      uint64_t duration_s, const char *status_file, bool quiet, const char *tmpbase)
{
    static parent p; /* one per process; static keeps it off main's stack */
    memset(&p, 0, sizeof(p));
    p.loop = uv_default_loop();
    p.n = procs;
    p.quiet = quiet;
    p.status_file = status_file;
    p.duration_s = duration_s;
    p.start_ms = now_ms();
    int n = snprintf(p.dir, sizeof(p.dir), "%s/upkeep-sim-parent-XXXXXX", tmpbase);
    if (n < 0 || (size_t)n >= sizeof(p.dir) || mkdtemp(p.dir) == NULL) {
        fprintf(stderr, "upkeep-sim: cannot create a temp dir under %s\n", tmpbase);
        return 1;
    }
    char exe[1024];
    ssize_t el = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (el <= 0) {
        fprintf(stderr, "upkeep-sim: cannot find my own executable\n");
        (void)rmdir(p.dir);
        return 1;
    }
    exe[el] = '\0';
    if (uv_signal_init(p.loop, &p.sigint) != 0 || uv_signal_init(p.loop, &p.sigterm) != 0 ||
        uv_timer_init(p.loop, &p.tick) != 0) {
        fprintf(stderr, "upkeep-sim: cannot set up signal handling\n");
        (void)rmdir(p.dir);
        return 1;
    }
    p.sigint.data = &p;
    p.sigterm.data = &p;
    p.tick.data = &p;
    (void)uv_signal_start(&p.sigint, parent_on_signal, SIGINT);
    (void)uv_signal_start(&p.sigterm, parent_on_signal, SIGTERM);

    size_t base = count / procs, extra = count % procs, next = first;
    char **args = calloc((size_t)argc + 16, sizeof(char *));
    if (args == NULL) {
        fprintf(stderr, "upkeep-sim: out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < procs; i++) {
        worker *w = &p.w[i];
        size_t slice = base + (i < extra ? 1 : 0);
        char cnt[32], fst[32];
        (void)snprintf(cnt, sizeof(cnt), "%zu", slice);
        (void)snprintf(fst, sizeof(fst), "%zu", next);
        next += slice;
        (void)snprintf(w->status_path, sizeof(w->status_path), "%s/worker-%zu.json", p.dir, i);
        int k = 0;
        args[k++] = exe;
        for (int j = 1; j < argc; j++)
            args[k++] = argv[j];
        /* Later options win: the worker's slice, status file and no fan-out. */
        args[k++] = (char *)"--count";
        args[k++] = cnt;
        args[k++] = (char *)"--first";
        args[k++] = fst;
        args[k++] = (char *)"--status-file";
        args[k++] = w->status_path;
        args[k++] = (char *)"--procs";
        args[k++] = (char *)"1";
        args[k++] = (char *)"--quiet";
        args[k++] = (char *)"--duration";
        args[k++] = (char *)"0";
        args[k] = NULL;
        uv_stdio_container_t stdio[3] = {{.flags = UV_IGNORE},
                                         {.flags = UV_INHERIT_FD, .data.fd = 1},
                                         {.flags = UV_INHERIT_FD, .data.fd = 2}};
        uv_process_options_t po;
        memset(&po, 0, sizeof(po));
        po.file = exe;
        po.args = args;
        po.exit_cb = parent_on_exit;
        po.stdio = stdio;
        po.stdio_count = 3;
        w->proc.data = &p;
        int rc = uv_spawn(p.loop, &w->proc, &po);
        if (rc != 0) {
            fprintf(stderr, "upkeep-sim: cannot start worker %zu: %s\n", i, uv_strerror(rc));
            p.failed = true;
            p.n = i;
            break;
        }
        w->running = true;
        p.running++;
    }
    free(args);
    if (!quiet) {
        printf("upkeep-sim: %zu devices in %zu worker processes (pids", count, p.n);
        for (size_t i = 0; i < p.n; i++)
            printf(" %d", p.w[i].proc.pid);
        printf(")\n");
        fflush(stdout);
    }
    if (p.running == 0) {
        uv_close((uv_handle_t *)&p.sigint, NULL);
        uv_close((uv_handle_t *)&p.sigterm, NULL);
        uv_close((uv_handle_t *)&p.tick, NULL);
    } else {
        if (p.failed)
            parent_stop(&p, "a worker did not start");
        (void)uv_timer_start(&p.tick, parent_tick, 1000, 1000);
    }
    (void)uv_run(p.loop, UV_RUN_DEFAULT);
    if (status_file != NULL) {
        upk_sim_stats st;
        (void)parent_collect(&p, &st);
        print_stats(true, status_file, &st, (now_ms() - p.start_ms) / 1000u, true);
    }
    (void)rm_flat_dir(p.dir, &p);
    (void)uv_loop_close(p.loop);
    return p.failed ? 1 : 0;
}

#define FIELD_RESTART 100 /* spec_arg.field of --restart-after-commit */
#define FIELD_METRIC  101 /* ... of --metric */

typedef struct spec_arg {
    int field; /* an upk_sim_field or FIELD_* */
    const char *value;
} spec_arg;

int main(int argc, char **argv)
{
    upk_sim_opts o;
    memset(&o, 0, sizeof(o));
    o.id_prefix = "sim-";
    o.first = 1;
    o.seed = 1;
    const char *hw = "rev-a:100%";
    const char *secret_path = NULL;
    const char *link_path = NULL;
    const char *keys[KEYS_MAX];
    size_t nkeys = 0;
    spec_arg specs[SPECS_MAX];
    size_t nspecs = 0;
    uint64_t count = 0, v = 0, procs = 0;
    app a;
    memset(&a, 0, sizeof(a));
    upk_log_set_level(UPK_LOG_WARN);
    /* Thousands of agents allocate and free chunk-sized buffers all the
     * time; glibc's defaults give large blocks back to the kernel at once
     * (munmap, heap trimming), and every return flushes the TLB of every
     * core: 7% of the simulator's CPU at 10,000 devices (perf). Keep them.
     * Failure only costs speed. */
    (void)mallopt(M_MMAP_THRESHOLD, 8 << 20);
    (void)mallopt(M_TRIM_THRESHOLD, 256 << 20);

    for (int i = 1; i < argc; i++) {
        const char *k = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(k, "-h") == 0 || strcmp(k, "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(k, "-V") == 0 || strcmp(k, "--version") == 0) {
            printf("upkeep-sim %s\n", UPK_VERSION);
            return 0;
        }
        if (strcmp(k, "--quiet") == 0) {
            a.quiet = true;
            continue;
        }
        if (val == NULL) {
            fprintf(stderr, "upkeep-sim: '%s' needs a value (or is unknown); see --help\n", k);
            return 2;
        }
        i++;
        int field = -1;
        if (strcmp(k, "--broker") == 0) {
            o.broker = val;
        } else if (strcmp(k, "--count") == 0) {
            if (!parse_u64(val, UPK_SIM_DEVICES_MAX, &count) || count == 0)
                goto bad_value;
        } else if (strcmp(k, "--first") == 0) {
            if (!parse_u64(val, 1000000000u, &v))
                goto bad_value;
            o.first = (size_t)v;
        } else if (strcmp(k, "--id-prefix") == 0) {
            o.id_prefix = val;
        } else if (strcmp(k, "--hw") == 0) {
            hw = val;
        } else if (strcmp(k, "--fleet-secret-file") == 0) {
            secret_path = val;
        } else if (strcmp(k, "--link-secret-file") == 0) {
            link_path = val;
        } else if (strcmp(k, "--keys") == 0) {
            if (nkeys >= KEYS_MAX)
                goto bad_value;
            keys[nkeys++] = val;
        } else if (strcmp(k, "--data-dir") == 0) {
            o.data_dir = val;
        } else if (strcmp(k, "--base-image") == 0) {
            o.base_image = val;
        } else if (strcmp(k, "--module") == 0) {
            o.module = val;
        } else if (strcmp(k, "--topic-prefix") == 0) {
            o.topic_prefix = val;
        } else if (strcmp(k, "--connect-rate") == 0) {
            if (!parse_u64(val, 1000000u, &v) || v == 0)
                goto bad_value;
            o.connect_rate = (uint32_t)v;
        } else if (strcmp(k, "--reconnect-max-ms") == 0) {
            if (!parse_u64(val, 3600000u, &v) || v < 100)
                goto bad_value;
            o.reconnect_max_ms = (uint32_t)v;
            o.reconnect_min_ms = (uint32_t)(v < 1000 ? v : 1000);
        } else if (strcmp(k, "--chunk-size") == 0) {
            if (!parse_u64(val, 1u << 20, &v) || v < 1024)
                goto bad_value;
            o.chunk_size = (uint32_t)v;
        } else if (strcmp(k, "--chunks-in-flight") == 0) {
            if (!parse_u64(val, 64, &v) || v == 0)
                goto bad_value;
            o.chunks_in_flight = (uint32_t)v;
        } else if (strcmp(k, "--seed") == 0) {
            if (!parse_u64(val, UINT64_MAX, &v))
                goto bad_value;
            o.seed = v;
        } else if (strcmp(k, "--duration") == 0) {
            if (!parse_u64(val, 86400u * 365u, &a.duration_s))
                goto bad_value;
        } else if (strcmp(k, "--procs") == 0) {
            if (!parse_u64(val, PROCS_MAX, &procs))
                goto bad_value;
        } else if (strcmp(k, "--status-file") == 0) {
            a.status_file = val;
        } else if (strcmp(k, "-l") == 0 || strcmp(k, "--log") == 0) {
            int lvl = upk_log_level_parse(val);
            if (lvl < 0)
                goto bad_value;
            upk_log_set_level((upk_log_level)lvl);
        } else if (strcmp(k, "--install-ms") == 0) {
            field = UPK_SIM_INSTALL_MS;
        } else if (strcmp(k, "--activate-ms") == 0) {
            field = UPK_SIM_ACTIVATE_MS;
        } else if (strcmp(k, "--health-ms") == 0) {
            field = UPK_SIM_HEALTH_MS;
        } else if (strcmp(k, "--fail") == 0) {
            field = UPK_SIM_INSTALL_FAIL;
        } else if (strcmp(k, "--health-fail") == 0) {
            field = UPK_SIM_HEALTH_FAIL;
        } else if (strcmp(k, "--restart-after-commit") == 0) {
            field = FIELD_RESTART;
        } else if (strcmp(k, "--metric") == 0) {
            field = FIELD_METRIC;
        } else if (strcmp(k, "--health-interval") == 0) {
            if (!parse_u64(val, 86400u, &v) || v < 10)
                goto bad_value;
            o.health_interval_s = (uint32_t)v;
        } else if (strcmp(k, "--ack-timeout-ms") == 0) {
            if (!parse_u64(val, 600000u, &v) || v < 100)
                goto bad_value;
            o.ack_timeout_ms = (uint32_t)v;
        } else {
            fprintf(stderr, "upkeep-sim: unknown argument '%s'; see --help\n", k);
            return 2;
        }
        if (field >= 0) {
            if (nspecs >= SPECS_MAX)
                goto bad_value;
            specs[nspecs].field = field;
            specs[nspecs].value = val;
            nspecs++;
        }
        continue;
    bad_value:
        fprintf(stderr, "upkeep-sim: bad value '%s' for %s; see --help\n", val, k);
        return 2;
    }
    if (o.broker == NULL || count == 0 || secret_path == NULL || nkeys == 0) {
        fprintf(stderr, "upkeep-sim: --broker, --count, --fleet-secret-file and --keys are "
                        "required; see --help\n");
        return 2;
    }
    o.count = (size_t)count;

    upk_sim_class classes[UPK_SIM_CLASS_MAX];
    size_t nclasses = 0;
    char eb[512];
    if (upk_sim_parse_hw(hw, classes, &nclasses, eb, sizeof(eb)) != UPK_OK) {
        fprintf(stderr, "upkeep-sim: --hw: %s\n", eb);
        return 2;
    }
    for (size_t i = 0; i < nspecs; i++) {
        upk_err se;
        if (specs[i].field == FIELD_RESTART)
            se = upk_sim_parse_restart(classes, nclasses, specs[i].value, eb, sizeof(eb));
        else if (specs[i].field == FIELD_METRIC)
            se = upk_sim_parse_metric(classes, nclasses, specs[i].value, eb, sizeof(eb));
        else
            se = upk_sim_apply_spec(classes, nclasses, (upk_sim_field)specs[i].field,
                                    specs[i].value, eb, sizeof(eb));
        if (se != UPK_OK) {
            fprintf(stderr, "upkeep-sim: '%s': %s\n", specs[i].value, eb);
            return 2;
        }
    }
    o.classes = classes;
    o.class_count = nclasses;

    uint8_t secret[UPK_SIM_SECRET_MAX];
    size_t secret_len = 0;
    if (read_secret("fleet secret", secret_path, secret, sizeof(secret), &secret_len) != 0)
        return 2;
    o.fleet_secret = secret;
    o.fleet_secret_len = secret_len;
    uint8_t link_buf[UPK_SIM_SECRET_MAX];
    size_t link_len = 0;
    if (link_path != NULL) {
        if (read_secret("link secret", link_path, link_buf, sizeof(link_buf), &link_len) != 0) {
            memset(secret, 0, sizeof(secret));
            return 2;
        }
        o.link_secret = link_buf;
        o.link_secret_len = link_len;
    }

    int rc = 2;
    upk_keyring *ring = NULL;
    if (upk_keyring_new(&ring) != UPK_OK) {
        fprintf(stderr, "upkeep-sim: out of memory\n");
        rc = 1;
        goto out_secret;
    }
    for (size_t i = 0; i < nkeys; i++) {
        if (add_keys(ring, keys[i]) != 0)
            goto out_ring;
    }
    o.keyring = ring;

    (void)signal(SIGPIPE, SIG_IGN);
    raise_nofile(o.count);
    if (procs == 0)
        procs = (o.count + PER_PROC - 1) / PER_PROC;
    if (procs > PROCS_MAX)
        procs = PROCS_MAX;
    if (procs > o.count)
        procs = o.count;
    if (procs > 1) {
        rc = run_parent(argc, argv, o.count, o.first, (size_t)procs, a.duration_s, a.status_file,
                        a.quiet, upk_sim_tmp_base(NULL));
        goto out_ring;
    }

    a.loop = uv_default_loop();
    a.start_ms = now_ms();
    upk_err err = upk_sim_new(a.loop, &o, &a.sim, eb, sizeof(eb));
    if (err != UPK_OK) {
        fprintf(stderr, "upkeep-sim: %s\n", eb);
        (void)uv_run(a.loop, UV_RUN_DEFAULT); /* finishes closing what was made */
        rc = err == UPK_E_INVALID_ARG || err == UPK_E_ID_INVALID ? 2 : 1;
        goto out_loop;
    }
    rc = 1;
    a.sigint.data = &a;
    a.sigterm.data = &a;
    a.tick.data = &a;
    if (uv_signal_init(a.loop, &a.sigint) != 0 || uv_signal_init(a.loop, &a.sigterm) != 0 ||
        uv_timer_init(a.loop, &a.tick) != 0) {
        fprintf(stderr, "upkeep-sim: cannot set up signal handling\n");
        upk_sim_close(a.sim, NULL, NULL);
        a.sim = NULL;
        (void)uv_run(a.loop, UV_RUN_DEFAULT);
        goto out_loop;
    }
    if (uv_signal_start(&a.sigint, on_signal, SIGINT) != 0 ||
        uv_signal_start(&a.sigterm, on_signal, SIGTERM) != 0 ||
        uv_timer_start(&a.tick, on_tick, 1000, 1000) != 0 || upk_sim_start(a.sim) != UPK_OK) {
        fprintf(stderr, "upkeep-sim: cannot start\n");
        stop(&a, "start failed");
        (void)uv_run(a.loop, UV_RUN_DEFAULT);
        goto out_loop;
    }
    if (!a.quiet) {
        char first_id[UPK_ID_MAX + 1];
        if (upk_sim_device_id(a.sim, 0, first_id, sizeof(first_id)) != UPK_OK)
            first_id[0] = '\0';
        printf("upkeep-sim: %zu devices (%s...) on %s, %zu hardware class(es), data in %s%s\n",
               o.count, first_id, o.broker, nclasses, upk_sim_data_dir(a.sim),
               o.data_dir == NULL ? " (temporary)" : "");
        fflush(stdout);
    }
    (void)uv_run(a.loop, UV_RUN_DEFAULT);
    rc = 0;
out_loop:
    (void)uv_loop_close(a.loop);
out_ring:
    upk_keyring_free(ring);
out_secret:
    memset(secret, 0, sizeof(secret));
    memset(link_buf, 0, sizeof(link_buf));
    return rc;
}
