/* Power-cut campaign for upkeep-agent: real updates (full and delta releases
 * with the file module, ab-dir, an external module) by the real agent binary
 * against a real mosquitto and a controller stand-in; the agent and all its
 * children are SIGKILLed at random points, restarted, and after every trial
 * the device, its journal, its reported state and its events are checked.
 *
 * Usage: upk_powercut [--trials N] [--seed S] [--max-seconds T] [--max-kills K]
 *                     [--keep-going] [--window-checks]
 * Environment: UPK_AGENT overrides the agent binary under test.
 * The seed defaults to the UTC date (YYYYMMDD) and is printed; a failure
 * prints seed and trial. Timing on a shared machine decides exactly where a
 * kill lands, so a replay repeats the plan, not every landing. Single thread. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "harness.h"
#include "standin.h"
#include "upkeep/fs.h"
#include "upkeep/hash.h"
#ifdef UPK_HAVE_DELTA
#include "upkeep/delta.h"
#endif

#ifndef AGENT_BIN
#error AGENT_BIN must name the upkeep-agent binary
#endif

#define PATH_CAP      768
#define FILE_IMG_LEN  (1024u * 1024u)
#define EXT_IMG_LEN   (256u * 1024u)
#define AB_FILES      160
#define TRIAL_LIMIT_S 120.0
#define SEQ_CAP       200000u

/* ------------------------------------------------------------------ model */

typedef enum { SC_FILE, SC_ABDIR, SC_EXT, SC__N } scen;
static const char *const scen_name[SC__N] = {"file", "ab-dir", "external"};

/* Where a planned kill fires. The first five belong to one update step
 * (phase 1..5 = downloading..health_check); the others fire at any step. */
typedef enum {
    K_DOWNLOAD, /* the partial download reached a random fraction */
    K_VERIFY,   /* the journal says verifying (hash, fsync, delta apply) */
    K_INSTALL,  /* the staged image is being written (partial size seen) */
    K_ACTIVATE, /* the journal says activating */
    K_HEALTH,   /* the health-check script is running */
    K_JOURNAL,  /* right after the n-th journal write */
    K_SEQ,      /* right after the outbox reserved the n-th sequence number */
    K_EVENT,    /* right after the n-th event file was queued, before PUBACK */
    K_TIME,     /* a random time after the target was armed */
    K__N
} kind;
static const char *const kind_name[K__N] = {"download",          "verify",
                                            "install-write",     "activate",
                                            "health-check",      "after-journal-write",
                                            "after-seq-reserve", "after-event-queued",
                                            "random-time"};
static const int kind_phase[K__N] = {1, 2, 3, 4, 5, 0, 0, 0, 0};

#define PH_FINAL 6
#define LAND_N   12 /* journal steps a kill can land in, see land_index */
static const char *const land_name[LAND_N] = {"idle",
                                              "downloading",
                                              "verifying",
                                              "installing",
                                              "activating",
                                              "health_check",
                                              "final",
                                              "rolling back (before install)",
                                              "rolling back (installing)",
                                              "rolling back (activating)",
                                              "rolling back (health_check)",
                                              "journal unreadable"};

typedef struct target {
    kind k;
    int arm_phase; /* armed once the journal reached this phase */
    double frac;   /* K_DOWNLOAD, K_INSTALL */
    unsigned n;    /* K_JOURNAL, K_SEQ, K_EVENT */
    double delay_ms;
    bool armed;
    double armed_at;
    double seen_at; /* K_VERIFY/K_ACTIVATE/K_HEALTH: condition first seen */
    unsigned base_j, base_s, base_e;
} target;

typedef struct ev_rec {
    bool seen;
    uint8_t step;
    uint8_t progress;
    uint16_t err;
    uint32_t trial;
} ev_rec;

typedef struct image {
    uint8_t *data;
    size_t len;
    uint8_t sha[UPK_SHA256_LEN];
} image;

typedef struct dev {
    scen sc;
    char root[PATH_CAP], data[PATH_CAP], cfg[PATH_CAP], target[PATH_CAP], ab_root[PATH_CAP];
    char journal[PATH_CAP], installed[PATH_CAP], outbox[PATH_CAP], log[PATH_CAP];
    char hc_go[PATH_CAP], hc_started[PATH_CAP];
    char device[UPK_ID_MAX + 1];
    standin s;
    bool s_up;
    pid_t agent;
    int ino;
    image img[2];
    uint8_t *patch[2]; /* patch[i]: from img[i] to img[1 - i] */
    size_t patch_len[2];
    int cur;              /* image on the device */
    char cur_version[32]; /* installed.json version ("" = none yet) */
    size_t ev_done;       /* stand-in events already taken */
    ev_rec *seqs;         /* by seq: what arrived */
    bool *written;        /* by seq: event files seen queued */
    uint64_t last_seq;    /* highest seq received */
    uint64_t max_written; /* highest seq seen queued */
    unsigned jw, sw, ew;  /* writes since the agent started */
    upk_status jstatus;   /* journal status as last read */
    bool jrb;             /* journal rolling_back as last read */
    upk_status jmax;      /* highest step the journal was seen in, this trial */
} dev;

typedef struct run {
    uint64_t seed, rng;
    unsigned trials, max_kills;
    double max_seconds, t0;
    char dir[UPK_H_PATH_MAX];
    upk_h_broker broker;
    char url[64];
    uv_loop_t loop;
    upk_key *key;
    char key_path[PATH_CAP];
    dev devs[SC__N];
    unsigned trial;
    /* figures */
    unsigned kills, missed, failures, done_trials, redelivered;
    unsigned hits[K__N];
    unsigned land[LAND_N][K__N];
    unsigned outcome[SC__N][2]; /* committed, rolled back */
    unsigned deltas, fulls, partial_stage, switched_at_kill, unswitched_at_kill;
    int64_t now;
} run;

static run R;
static volatile sig_atomic_t g_stop; /* SIGTERM/SIGINT: stop after cleaning up */

static void on_stop(int sig)
{
    (void)sig;
    g_stop = 1;
}

static void failf(dev *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void failf(dev *d, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "FAIL seed=%" PRIu64 " trial=%u scenario=%s: ", R.seed, R.trial,
            d != NULL ? scen_name[d->sc] : "-");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n  replay: upk_powercut --seed %" PRIu64 " --trials %u\n", R.seed,
            R.trial + 1);
    va_end(ap);
    R.failures++;
}

static uint64_t rnd(void)
{
    uint64_t x = R.rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    R.rng = x;
    return x;
}

static double rnd01(void)
{
    return (double)(rnd() >> 11) / 9007199254740992.0;
}

static void nap_ms(double ms)
{
    struct timespec ts = {(time_t)(ms / 1000),
                          (long)((ms - (double)(time_t)(ms / 1000) * 1000) * 1e6)};
    (void)nanosleep(&ts, NULL);
}

/* out = a + sep + b, at most PATH_CAP bytes with the NUL; -1 (and "") if
 * longer. */
static int join(char *out, const char *a, const char *sep, const char *b)
{
    size_t la = strlen(a), ls = strlen(sep), lb = strlen(b);
    if (la + ls + lb >= PATH_CAP) {
        out[0] = '\0';
        return -1;
    }
    memcpy(out, a, la);
    memcpy(out + la, sep, ls);
    memcpy(out + la + ls, b, lb + 1);
    return 0;
}

static int path2(char *out, const char *a, const char *b)
{
    return join(out, a, "/", b);
}

static int write_text(const char *path, const char *text, mode_t mode)
{
    if (upk_fs_write_atomic(path, text, strlen(text)) != UPK_OK)
        return -1;
    return chmod(path, mode) == 0 ? 0 : -1;
}

static int write_bin(const char *path, const void *data, size_t len)
{
    return upk_fs_write_atomic(path, data, len) == UPK_OK ? 0 : -1;
}

static bool exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

static int64_t file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (int64_t)st.st_size : -1;
}

static void fill_random(uint8_t *p, size_t n, uint32_t seed)
{
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        p[i] = (uint8_t)x;
    }
}

static int set_image(image *im, uint8_t *data, size_t len)
{
    im->data = data;
    im->len = len;
    upk_sha256_buf(data, len, im->sha);
    return 0;
}

/* -1 when unreadable; 0/1 when path holds img[0]/img[1]; 2 otherwise. */
static int which_image(const dev *d, const char *path)
{
    char *buf = NULL;
    size_t len = 0;
    if (upk_fs_read(path, 64u << 20, &buf, &len) != UPK_OK)
        return -1;
    uint8_t sha[UPK_SHA256_LEN];
    upk_sha256_buf(buf, len, sha);
    free(buf);
    for (int i = 0; i < 2; i++)
        if (memcmp(sha, d->img[i].sha, UPK_SHA256_LEN) == 0)
            return i;
    return 2;
}

/* ---- ab-dir trees: file k of image i; every file differs between images */
static void ab_file(int img, int k, char *buf, size_t cap, size_t *len)
{
    int n = snprintf(buf, cap, "image %d file %03d\n", img, k);
    size_t used = n > 0 ? (size_t)n : 0;
    size_t want = 256 + (size_t)(k % 7) * 300;
    for (size_t i = used; i < want && i < cap; i++)
        buf[i] = (char)('a' + (int)((i * 31u + (unsigned)k + (unsigned)img * 7u) % 26u));
    *len = want < cap ? want : cap;
}

/* 0/1 when dir holds exactly tree 0/1; 2 for anything else (a mix). */
static int which_tree(const char *dir)
{
    int match = -1;
    for (int img = 0; img < 2 && match < 0; img++) {
        bool ok = true;
        for (int k = 0; k < AB_FILES && ok; k++) {
            char name[32], p[PATH_CAP], want[4096];
            size_t wl = 0;
            (void)snprintf(name, sizeof(name), "f%03d", k);
            ab_file(img, k, want, sizeof(want), &wl);
            char *got = NULL;
            size_t gl = 0;
            ok = path2(p, dir, name) == 0 && upk_fs_read(p, 1u << 20, &got, &gl) == UPK_OK &&
                 gl == wl && memcmp(got, want, wl) == 0;
            free(got);
        }
        if (ok)
            match = img;
    }
    if (match < 0)
        return 2;
    DIR *dd = opendir(dir);
    unsigned count = 0;
    struct dirent *de;
    while (dd != NULL && (de = readdir(dd)) != NULL)
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
            count++;
    if (dd != NULL)
        closedir(dd);
    return count == AB_FILES ? match : 2;
}

static int make_tar(const char *root, int img, image *out)
{
    char src[PATH_CAP], tarp[PATH_CAP], name[32], cmd[3 * PATH_CAP];
    (void)snprintf(name, sizeof(name), "src%d", img);
    if (path2(src, root, name) != 0 || mkdir(src, 0755) != 0)
        return -1;
    for (int k = 0; k < AB_FILES; k++) {
        char fn[32], p[PATH_CAP], buf[4096];
        size_t len = 0;
        (void)snprintf(fn, sizeof(fn), "f%03d", k);
        ab_file(img, k, buf, sizeof(buf), &len);
        if (path2(p, src, fn) != 0 || write_bin(p, buf, len) != 0)
            return -1;
    }
    (void)snprintf(name, sizeof(name), "img%d.tar", img);
    if (path2(tarp, root, name) != 0)
        return -1;
    int n = snprintf(cmd, sizeof(cmd), "tar -C '%s' -cf '%s' .", src, tarp);
    if (n < 0 || (size_t)n >= sizeof(cmd) || system(cmd) != 0)
        return -1;
    char *buf = NULL;
    size_t len = 0;
    if (upk_fs_read(tarp, 64u << 20, &buf, &len) != UPK_OK)
        return -1;
    return set_image(out, (uint8_t *)buf, len);
}

/* ------------------------------------------------------------ processes */

static void agent_start(dev *d)
{
    d->jw = d->sw = d->ew = 0;
    (void)unlink(d->hc_started);
    pid_t pid = fork();
    if (pid < 0) {
        failf(d, "fork: %s", strerror(errno));
        return;
    }
    if (pid == 0) {
        (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open(d->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        if (fd >= 0) {
            (void)dup2(fd, 1);
            (void)dup2(fd, 2);
        }
        const char *bin = getenv("UPK_AGENT");
        execl(bin != NULL && bin[0] != '\0' ? bin : AGENT_BIN, "upkeep-agent", "-c", d->cfg, "-l",
              "info", (char *)NULL);
        _exit(127);
    }
    d->agent = pid;
}

/* Parent pid of pid from /proc, or -1. */
static pid_t ppid_of(pid_t pid)
{
    char p[64], buf[512];
    (void)snprintf(p, sizeof(p), "/proc/%d/stat", (int)pid);
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    const char *rp = strrchr(buf, ')');
    if (rp == NULL)
        return -1;
    char state = 0;
    long pp = -1;
    if (sscanf(rp + 1, " %c %ld", &state, &pp) != 2)
        return -1;
    return (pid_t)pp;
}

#define TREE_MAX 64

/* A power cut: the agent and every process below it (module steps, the
 * health check) stop at once and die. Stopped first so none forks more. */
static void power_cut(dev *d)
{
    pid_t tree[TREE_MAX];
    size_t n = 0;
    tree[n++] = d->agent;
    (void)kill(d->agent, SIGSTOP);
    for (int pass = 0; pass < 6; pass++) {
        size_t before = n;
        DIR *pd = opendir("/proc");
        struct dirent *de;
        while (pd != NULL && (de = readdir(pd)) != NULL && n < TREE_MAX) {
            char *end = NULL;
            long v = strtol(de->d_name, &end, 10);
            if (end == de->d_name || *end != '\0' || v <= 0)
                continue;
            pid_t pid = (pid_t)v, pp = ppid_of(pid);
            bool known = false, parent_in = false;
            for (size_t i = 0; i < n; i++) {
                known = known || tree[i] == pid;
                parent_in = parent_in || tree[i] == pp;
            }
            if (!known && parent_in) {
                (void)kill(pid, SIGSTOP);
                tree[n++] = pid;
            }
        }
        if (pd != NULL)
            closedir(pd);
        if (n == before)
            break;
    }
    for (size_t i = 0; i < n; i++)
        (void)kill(tree[i], SIGKILL);
    int st;
    while (waitpid(d->agent, &st, 0) < 0 && errno == EINTR)
        ;
    d->agent = 0;
    /* The orphans are ours now (child subreaper): reap them. */
    double end = upk_h_now() + 3;
    for (size_t i = 1; i < n; i++) {
        while (upk_h_now() < end) {
            pid_t r = waitpid(tree[i], &st, WNOHANG);
            if (r == tree[i] || (r < 0 && errno == ECHILD))
                break;
            nap_ms(1);
        }
    }
    (void)unlink(d->hc_started);
}

/* Reaps processes that became ours without being started by us. */
static void reap_strays(void)
{
    for (int i = 0; i < 16; i++) {
        siginfo_t si;
        memset(&si, 0, sizeof(si));
        if (waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) != 0 || si.si_pid == 0)
            return;
        pid_t p = si.si_pid;
        bool ours = p == R.broker.pid;
        for (int k = 0; k < SC__N; k++)
            ours = ours || p == R.devs[k].agent;
        if (ours)
            return; /* the caller notices its own child exiting */
        (void)waitpid(p, NULL, WNOHANG);
    }
}

/* --------------------------------------------------------------- journal */

/* Reads journal.json: status, rolling_back and campaign. False if absent or
 * unreadable (it is replaced atomically, so never torn). */
static bool read_journal(const dev *d, upk_status *st, bool *rb, char *campaign, size_t cap)
{
    char *buf = NULL;
    size_t len = 0;
    if (upk_fs_read(d->journal, 1u << 20, &buf, &len) != UPK_OK)
        return false;
    cJSON *root = cJSON_ParseWithLength(buf, len);
    free(buf);
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(root, "status");
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(root, "rolling_back");
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(root, "campaign");
    bool ok = cJSON_IsString(s) && cJSON_IsBool(r) && cJSON_IsString(c) &&
              upk_status_from_str(s->valuestring, st);
    if (ok) {
        *rb = cJSON_IsTrue(r);
        if (campaign != NULL)
            (void)snprintf(campaign, cap, "%s", c->valuestring);
    }
    cJSON_Delete(root);
    return ok;
}

typedef struct facts {
    bool present;
    char version[32];
    uint8_t sha[UPK_SHA256_LEN];
} facts;

static bool read_installed(const dev *d, facts *f)
{
    memset(f, 0, sizeof(*f));
    char *buf = NULL;
    size_t len = 0;
    upk_err err = upk_fs_read(d->installed, 1u << 16, &buf, &len);
    if (err == UPK_E_NOT_FOUND)
        return true;
    if (err != UPK_OK)
        return false;
    cJSON *root = cJSON_ParseWithLength(buf, len);
    free(buf);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "version");
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(root, "image_sha256");
    bool ok =
        cJSON_IsString(v) && cJSON_IsString(h) &&
        upk_hex_decode(h->valuestring, strlen(h->valuestring), f->sha, UPK_SHA256_LEN) == UPK_OK;
    if (ok) {
        f->present = true;
        (void)snprintf(f->version, sizeof(f->version), "%s", v->valuestring);
    }
    cJSON_Delete(root);
    return ok;
}

static int phase_of(upk_status st)
{
    if (st >= UPK_STATUS_DOWNLOADING && st <= UPK_STATUS_HEALTH_CHECK)
        return (int)(st - UPK_STATUS_DOWNLOADING) + 1;
    return st == UPK_STATUS_IDLE ? 0 : PH_FINAL;
}

static int land_index(bool ok, upk_status st, bool rb)
{
    if (!ok)
        return 11;
    int ph = phase_of(st);
    if (!rb || ph == 0 || ph == PH_FINAL)
        return ph;
    if (st < UPK_STATUS_INSTALLING)
        return 7;
    return 8 + (int)(st - UPK_STATUS_INSTALLING);
}

/* ------------------------------------------------------------- events */

static bool parse_ev_name(const char *name, uint64_t *seq)
{
    size_t l = strlen(name);
    if (l != 23 || strcmp(name + 20, ".ev") != 0)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < 20; i++) {
        if (name[i] < '0' || name[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(name[i] - '0');
    }
    *seq = v;
    return v > 0 && v < SEQ_CAP;
}

/* Takes what the stand-in received: every seq once (a resend must be the
 * same event), new seqs strictly increasing. */
static void drain_events(dev *d)
{
    standin *s = &d->s;
    for (; d->ev_done < s->event_count; d->ev_done++) {
        const upk_event_msg *ev = &s->events[d->ev_done];
        if (ev->seq == 0 || ev->seq >= SEQ_CAP) {
            failf(d, "event seq %" PRIu64 " out of range", ev->seq);
            continue;
        }
        ev_rec *r = &d->seqs[ev->seq];
        if (r->seen) {
            R.redelivered++;
            if (r->step != (uint8_t)ev->step || r->progress != (uint8_t)ev->progress ||
                r->err != (uint16_t)ev->error)
                failf(d, "seq %" PRIu64 " arrived twice with different content", ev->seq);
            continue;
        }
        if (ev->seq <= d->last_seq)
            failf(d, "seq %" PRIu64 " arrived after seq %" PRIu64, ev->seq, d->last_seq);
        else
            d->last_seq = ev->seq;
        r->seen = true;
        r->step = (uint8_t)ev->step;
        r->progress = (uint8_t)ev->progress;
        r->err = (uint16_t)ev->error;
        r->trial = R.trial;
        if (strcmp(ev->campaign, "") != 0) {
            char want[32];
            (void)snprintf(want, sizeof(want), "pc-%u", R.trial);
            if (strcmp(ev->campaign, want) != 0)
                failf(d, "seq %" PRIu64 " (%s) of campaign %s arrived during %s", ev->seq,
                      upk_status_str(ev->step), ev->campaign, want);
        }
    }
    /* The stand-in keeps a bounded array: start it over once taken. */
    if (s->event_count > STANDIN_EVENTS_MAX / 2 && d->ev_done == s->event_count) {
        s->event_count = 0;
        d->ev_done = 0;
    }
}

/* Reads inotify events: journal writes, seq reservations, queued events. */
static void read_inotify(dev *d)
{
    char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
    for (;;) {
        ssize_t n = read(d->ino, buf, sizeof(buf));
        if (n <= 0)
            return;
        for (char *p = buf; p < buf + n;) {
            const struct inotify_event *ie = (const struct inotify_event *)(void *)p;
            if (ie->len > 0) {
                uint64_t seq;
                if (strcmp(ie->name, "journal.json") == 0) {
                    d->jw++;
                    upk_status st;
                    bool rb;
                    if (read_journal(d, &st, &rb, NULL, 0)) {
                        d->jstatus = st;
                        d->jrb = rb;
                        if (phase_of(st) < PH_FINAL && st > d->jmax)
                            d->jmax = st;
                    }
                } else if (strcmp(ie->name, "seq") == 0) {
                    d->sw++;
                } else if (parse_ev_name(ie->name, &seq)) {
                    d->ew++;
                    d->written[seq] = true;
                    if (seq > d->max_written)
                        d->max_written = seq;
                }
            }
            p += sizeof(struct inotify_event) + ie->len;
        }
    }
}

static bool outbox_empty(const dev *d)
{
    DIR *dd = opendir(d->outbox);
    if (dd == NULL)
        return true;
    bool empty = true;
    struct dirent *de;
    uint64_t seq;
    while ((de = readdir(dd)) != NULL)
        if (parse_ev_name(de->d_name, &seq))
            empty = false;
    closedir(dd);
    return empty;
}

/* --------------------------------------------------------------- setup */

static int write_config(dev *d)
{
    char settings[PATH_CAP + 64], text[8192], hc[PATH_CAP];
    const char *module = "file";
    if (d->sc == SC_FILE) {
        (void)snprintf(settings, sizeof(settings), "{\"path\":\"%s\"}", d->target);
    } else if (d->sc == SC_ABDIR) {
        module = "ab-dir";
        (void)snprintf(settings, sizeof(settings), "{\"root\":\"%s\"}", d->ab_root);
    } else {
        module = "slowmod";
        (void)snprintf(settings, sizeof(settings), "{\"target\":\"%s\"}", d->target);
    }
    if (path2(hc, d->root, "hc.sh") != 0)
        return -1;
    /* Small chunks, two in flight: the download takes hundreds of round
     * trips, so a kill can land anywhere in it. */
    int n = snprintf(text, sizeof(text),
                     "{\"broker\":\"%s\",\"device_id\":\"%s\",\"hardware\":\"hw-1\","
                     "\"data_dir\":\"%s\",\"keys\":[\"%s\"],\"module\":\"%s\","
                     "\"module_settings\":%s,\"modules_dir\":\"%s\","
                     "\"health_check\":{\"command\":[\"%s\"],\"timeout_s\":60},"
                     "\"reconnect_min_ms\":50,\"reconnect_max_ms\":200,"
                     "\"limits\":{\"chunk_size\":%u,\"chunks_in_flight\":2,"
                     "\"chunk_timeout_ms\":1000,\"step_timeout_s\":60,\"max_restarts\":1}}",
                     R.url, d->device, d->data, R.key_path, module, settings, d->root, hc,
                     d->sc == SC_ABDIR ? 1024u : 4096u);
    if (n < 0 || (size_t)n >= sizeof(text))
        return -1;
    return write_text(d->cfg, text, 0600);
}

/* The health check: says it runs, then waits (bounded) for the test's go. */
static const char hc_script[] =
    "#!/bin/sh\n"
    "# powercut health check: marks that it runs, waits for the test's go file\n"
    "d=$(dirname \"$0\")\n"
    ": > \"$d/hc.started\"\n"
    "i=0\n"
    "while [ ! -e \"$d/hc.go\" ]; do\n"
    "  i=$((i + 1)); [ $i -gt 4000 ] && exit 1\n"
    "  sleep 0.005\n"
    "done\n"
    "rm -f \"$d/hc.started\"\n"
    "exit 0\n";

/* An external module that writes the staged image slowly (16 KiB at a time)
 * and takes its time around the switch, so that kills land inside. */
static const char slowmod_script[] =
    "#!/bin/sh\n"
    "# powercut external module: replaces module_settings.target, slowly\n"
    "set -eu\n"
    "step=$1 work=$2 artifact=$3\n"
    "target=$(printf '%s' \"$UPK_SETTINGS\" | sed -n 's/.*\"target\":\"\\([^\"]*\\)\".*/\\1/p')\n"
    "[ -n \"$target\" ]\n"
    "case \"$step\" in\n"
    "download) [ -s \"$artifact\" ] ;;\n"
    "install)\n"
    "  rm -f \"$target.upkmod-new\" \"$target.upkmod-tmp\"\n"
    "  size=$(wc -c < \"$artifact\"); n=$(( (size + 16383) / 16384 )); i=0\n"
    "  : > \"$target.upkmod-tmp\"\n"
    "  while [ $i -lt $n ]; do\n"
    "    dd if=\"$artifact\" of=\"$target.upkmod-tmp\" bs=16384 skip=$i seek=$i count=1 "
    "conv=notrunc status=none\n"
    "    i=$((i + 1)); sleep 0.002\n"
    "  done\n"
    "  sync \"$target.upkmod-tmp\"\n"
    "  mv -f \"$target.upkmod-tmp\" \"$target.upkmod-new\"\n"
    "  sync \"$(dirname \"$target\")\" ;;\n"
    "activate)\n"
    "  if [ -e \"$target.upkmod-new\" ]; then\n"
    "    rm -f \"$work/previous\"; ln \"$target\" \"$work/previous\"\n"
    "    sleep 0.01\n"
    "    mv -f \"$target.upkmod-new\" \"$target\"\n"
    "    sync \"$(dirname \"$target\")\"\n"
    "    sleep 0.01\n"
    "  fi ;;\n"
    "health) [ -s \"$target\" ] ;;\n"
    "commit) rm -f \"$work/previous\" ;;\n"
    "rollback)\n"
    "  rm -f \"$target.upkmod-new\" \"$target.upkmod-tmp\"\n"
    "  if [ -e \"$work/previous\" ]; then\n"
    "    ln -f \"$work/previous\" \"$target.upkmod-rb\"; mv -f \"$target.upkmod-rb\" \"$target\"\n"
    "  fi\n"
    "  sync \"$(dirname \"$target\")\" ;;\n"
    "*) exit 2 ;;\n"
    "esac\n"
    "exit 0\n";

static int dev_setup(dev *d, scen sc, bool start)
{
    d->sc = sc;
    d->ino = -1;
    (void)snprintf(d->device, sizeof(d->device), "pc-%s-%d", sc == SC_ABDIR ? "ab" : scen_name[sc],
                   (int)getpid());
    if (path2(d->root, R.dir, scen_name[sc]) != 0 || mkdir(d->root, 0700) != 0 ||
        path2(d->data, d->root, "data") != 0 || path2(d->cfg, d->root, "agent.json") != 0 ||
        path2(d->target, d->root, "app.bin") != 0 || path2(d->ab_root, d->root, "ab") != 0 ||
        path2(d->journal, d->data, "journal.json") != 0 ||
        path2(d->installed, d->data, "installed.json") != 0 ||
        path2(d->outbox, d->data, "outbox") != 0 || path2(d->log, d->root, "agent.log") != 0 ||
        path2(d->hc_go, d->root, "hc.go") != 0 || path2(d->hc_started, d->root, "hc.started") != 0)
        return -1;
    char p[PATH_CAP];
    if (path2(p, d->root, "hc.sh") != 0 || write_text(p, hc_script, 0755) != 0)
        return -1;
    if (path2(p, d->root, "slowmod") != 0 || write_text(p, slowmod_script, 0755) != 0)
        return -1;
    d->seqs = calloc(SEQ_CAP, sizeof(*d->seqs));
    d->written = calloc(SEQ_CAP, sizeof(*d->written));
    if (d->seqs == NULL || d->written == NULL)
        return -1;
    if (sc == SC_ABDIR) {
        if (make_tar(d->root, 0, &d->img[0]) != 0 || make_tar(d->root, 1, &d->img[1]) != 0)
            return -1;
        /* The device starts on tree 0 in slot a, not known to the agent. */
        char cmd[3 * PATH_CAP];
        int n = snprintf(cmd, sizeof(cmd),
                         "mkdir -p '%s/a' && tar -C '%s/a' -xf '%s/img0.tar' "
                         "&& ln -s a '%s/current'",
                         d->ab_root, d->ab_root, d->root, d->ab_root);
        if (n < 0 || (size_t)n >= sizeof(cmd) || system(cmd) != 0)
            return -1;
    } else {
        size_t len = sc == SC_FILE ? FILE_IMG_LEN : EXT_IMG_LEN;
        uint8_t *a = malloc(len), *b = malloc(len);
        if (a == NULL || b == NULL) {
            free(a);
            free(b);
            return -1;
        }
        fill_random(a, len, sc == SC_FILE ? 11 : 21);
        if (sc == SC_FILE) {
            /* b is a few bytes away from a: small deltas both ways. */
            memcpy(b, a, len);
            for (size_t i = 0; i < len; i += 30011)
                b[i] ^= 0xa5;
        } else {
            fill_random(b, len, 22);
        }
        (void)set_image(&d->img[0], a, len);
        (void)set_image(&d->img[1], b, len);
        if (write_bin(d->target, a, len) != 0)
            return -1;
#ifdef UPK_HAVE_DELTA
        if (sc == SC_FILE)
            for (int i = 0; i < 2; i++)
                if (upk_delta_make_mem(d->img[i].data, len, d->img[1 - i].data, len, NULL,
                                       &d->patch[i], &d->patch_len[i]) != UPK_OK)
                    return -1;
#endif
    }
    d->cur = 0;
    if (upk_fs_mkdirs(d->outbox) != UPK_OK || write_config(d) != 0)
        return -1;
    d->ino = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (d->ino < 0 || inotify_add_watch(d->ino, d->data, IN_MOVED_TO | IN_CLOSE_WRITE) < 0 ||
        inotify_add_watch(d->ino, d->outbox, IN_MOVED_TO | IN_CLOSE_WRITE) < 0)
        return -1;
    if (standin_init(&d->s, &R.loop, R.url, d->device) != 0)
        return -1;
    d->s_up = true;
    if (!start)
        return 0;
    agent_start(d);
    return d->agent > 0 ? 0 : -1;
}

static void dev_cleanup(dev *d)
{
    if (d->agent > 0) {
        (void)kill(d->agent, SIGTERM);
        double end = upk_h_now() + 10;
        int st;
        while (upk_h_now() < end && waitpid(d->agent, &st, WNOHANG) == 0)
            nap_ms(10);
        if (waitpid(d->agent, &st, WNOHANG) == 0) {
            (void)kill(d->agent, SIGKILL);
            (void)waitpid(d->agent, &st, 0);
        }
        d->agent = 0;
    }
    /* The agent is built with the sanitizers in the test build. */
    if (d->log[0] != '\0' &&
        (upk_h_file_contains(d->log, "Sanitizer") || upk_h_file_contains(d->log, "runtime error")))
        failf(d, "sanitizer report in %s", d->log);
    if (d->s_up)
        standin_close(&d->s);
    d->s_up = false;
    if (d->ino >= 0)
        close(d->ino);
    for (int i = 0; i < 2; i++) {
        free(d->img[i].data);
        free(d->patch[i]);
    }
    free(d->seqs);
    free(d->written);
}

/* --------------------------------------------------------------- trials */

static void make_manifest(upk_manifest *m, const char *version, const image *full,
                          const char *module)
{
    memset(m, 0, sizeof(*m));
    (void)snprintf(m->name, sizeof(m->name), "fw");
    (void)snprintf(m->version, sizeof(m->version), "%s", version);
    m->security_version = 1;
    m->hw_count = 1;
    (void)snprintf(m->hw[0], sizeof(m->hw[0]), "hw-1");
    m->type = UPK_RELEASE_FULL;
    (void)snprintf(m->module, sizeof(m->module), "%s", module);
    m->size = full->len;
    memcpy(m->sha256, full->sha, UPK_SHA256_LEN);
    m->target_size = full->len;
    memcpy(m->target_sha256, full->sha, UPK_SHA256_LEN);
    m->created = R.now - 60;
    m->expires = R.now + 7 * 86400;
}

static void plan_kills(target *plan, unsigned *np)
{
    unsigned n = 1 + (unsigned)(rnd() % R.max_kills);
    unsigned planned[K__N] = {0};
    for (unsigned i = 0; i < n; i++) {
        /* The least-hit kinds first, so that every phase gets its share. */
        unsigned best = UINT32_MAX;
        kind pick = K_TIME;
        unsigned start = (unsigned)(rnd() % K__N);
        for (unsigned j = 0; j < K__N; j++) {
            kind k = (kind)((start + j) % K__N);
            if (R.hits[k] + planned[k] < best) {
                best = R.hits[k] + planned[k];
                pick = k;
            }
        }
        planned[pick]++;
        target *t = &plan[i];
        memset(t, 0, sizeof(*t));
        t->k = pick;
        t->arm_phase = kind_phase[pick] != 0 ? kind_phase[pick] : 1 + (int)(rnd() % 5);
        t->frac = 0.05 + 0.9 * rnd01();
        t->n = 1 + (unsigned)(rnd() % 3);
        t->delay_ms = pick == K_TIME ? 400 * rnd01() : 3 * rnd01();
        if (pick == K_HEALTH)
            t->delay_ms = 20 * rnd01();
    }
    /* In the order the update meets them. */
    for (unsigned i = 1; i < n; i++)
        for (unsigned j = i; j > 0 && plan[j].arm_phase < plan[j - 1].arm_phase; j--) {
            target tmp = plan[j];
            plan[j] = plan[j - 1];
            plan[j - 1] = tmp;
        }
    *np = n;
}

static const char *staged_path(const dev *d, char *buf)
{
    if (d->sc == SC_FILE)
        (void)join(buf, d->target, "", ".upktmp");
    else if (d->sc == SC_EXT)
        (void)join(buf, d->target, "", ".upkmod-tmp");
    else
        buf[0] = '\0';
    return buf;
}

/* Fraction of the new image written at the staging place (ab-dir: files in
 * the inactive slot); -1 when nothing is being staged. */
static double staged_fraction(const dev *d, const image *art)
{
    char p[PATH_CAP];
    if (d->sc != SC_ABDIR) {
        int64_t sz = file_size(staged_path(d, p));
        return sz < 0 ? -1 : (double)sz / (double)art->len;
    }
    char slot[8] = "";
    char link[PATH_CAP];
    if (path2(p, d->ab_root, "current") != 0)
        return -1;
    ssize_t n = readlink(p, link, sizeof(link) - 1);
    if (n > 0) {
        link[n] = '\0';
        (void)snprintf(slot, sizeof(slot), "%s", strcmp(link, "a") == 0 ? "b" : "a");
    }
    if (path2(p, d->ab_root, slot) != 0)
        return -1;
    DIR *dd = opendir(p);
    if (dd == NULL)
        return -1;
    unsigned count = 0;
    struct dirent *de;
    while ((de = readdir(dd)) != NULL)
        if (de->d_name[0] == 'f')
            count++;
    closedir(dd);
    return (double)count / AB_FILES;
}

/* Checks target t against what the device does now; true to kill. */
static bool fires(dev *d, target *t, const image *art, const char *part, double now)
{
    switch (t->k) {
    case K_DOWNLOAD: {
        int64_t sz = file_size(part);
        return d->jstatus == UPK_STATUS_DOWNLOADING && sz >= 0 &&
               (double)sz >= t->frac * (double)art->len;
    }
    case K_INSTALL: {
        double f = staged_fraction(d, art);
        return d->jstatus == UPK_STATUS_INSTALLING && f >= t->frac && f < 1.0;
    }
    case K_VERIFY:
    case K_ACTIVATE:
    case K_HEALTH: {
        bool cond = t->k == K_HEALTH ? exists(d->hc_started)
                                     : d->jstatus == (t->k == K_VERIFY ? UPK_STATUS_VERIFYING
                                                                       : UPK_STATUS_ACTIVATING);
        if (!cond || d->jrb)
            return false;
        if (t->seen_at == 0)
            t->seen_at = now;
        return now - t->seen_at >= t->delay_ms / 1000;
    }
    case K_JOURNAL:
        return d->jw - t->base_j >= t->n;
    case K_SEQ:
        return d->sw - t->base_s >= t->n;
    case K_EVENT:
        return d->ew - t->base_e >= t->n;
    case K_TIME:
        return now - t->armed_at >= t->delay_ms / 1000;
    default:
        return false;
    }
}

typedef struct trial_ctx {
    dev *d;
    char campaign[32], version[32];
    const image *new_img; /* the image the release installs */
    const image *art;     /* what is downloaded (image or patch) */
    image patch;
    int old_idx, new_idx;
    bool delta;
    char part[PATH_CAP];
} trial_ctx;

static void kill_now(trial_ctx *c, const target *t)
{
    dev *d = c->d;
    double staged = t->k == K_INSTALL ? staged_fraction(d, c->art) : -1;
    power_cut(d);
    upk_status st = UPK_STATUS_IDLE;
    bool rb = false, ok = read_journal(d, &st, &rb, NULL, 0);
    if (!ok && exists(d->journal))
        failf(d, "journal unreadable after a kill (%s)", kind_name[t->k]);
    if (!ok)
        st = UPK_STATUS_IDLE;
    R.kills++;
    R.hits[t->k]++;
    R.land[land_index(true, st, rb)][t->k]++;
    if (ok && phase_of(st) < PH_FINAL && st > d->jmax)
        d->jmax = st;
    d->jstatus = st;
    d->jrb = rb;
    if (t->k == K_INSTALL && staged > 0 && staged < 1)
        R.partial_stage++;
    if (t->k == K_ACTIVATE) {
        int w = d->sc == SC_ABDIR ? -1 : which_image(d, d->target);
        if (d->sc == SC_ABDIR) {
            char p[PATH_CAP];
            if (path2(p, d->ab_root, "current") == 0)
                w = which_tree(p);
        }
        if (w == c->new_idx)
            R.switched_at_kill++;
        else
            R.unswitched_at_kill++;
    }
    printf("    kill %-20s landed in %s\n", kind_name[t->k], land_name[land_index(ok, st, rb)]);
    agent_start(d);
}

static bool trial_settled(trial_ctx *c, bool *final_seen)
{
    dev *d = c->d;
    upk_status st;
    bool rb;
    char camp[64];
    *final_seen = false;
    if (!read_journal(d, &st, &rb, camp, sizeof(camp)) || !upk_status_is_final(st) ||
        strcmp(camp, c->campaign) != 0 || !outbox_empty(d))
        return false;
    for (uint64_t q = 1; q <= d->max_written; q++)
        if (d->written[q] && !d->seqs[q].seen)
            return false;
    for (uint64_t q = 1; q <= d->last_seq; q++)
        if (d->seqs[q].seen && d->seqs[q].trial == R.trial && upk_status_is_final(d->seqs[q].step))
            *final_seen = true;
    const upk_state_msg *s = &d->s.state;
    return d->s.have_state && strcmp(s->campaign, c->campaign) == 0 && s->status == st;
}

/* The invariants after a trial: the device on a verified version, state
 * and journal matching the disk, every event once. */
static void check_trial(trial_ctx *c)
{
    dev *d = c->d;
    upk_status st = UPK_STATUS_IDLE;
    bool rb = false;
    char camp[64] = "";
    if (!read_journal(d, &st, &rb, camp, sizeof(camp))) {
        failf(d, "journal unreadable at the end");
        return;
    }
    bool committed = st == UPK_STATUS_COMMITTED;
    if (!committed && st != UPK_STATUS_ROLLED_BACK)
        failf(d, "update ended %s (a power cut must end committed or rolled back)",
              upk_status_str(st));
    if (rb)
        failf(d, "journal still says rolling back after %s", upk_status_str(st));
    /* 1. The installed image is the old or the new one, whole. */
    int on_disk;
    if (d->sc == SC_ABDIR) {
        char p[PATH_CAP];
        on_disk = path2(p, d->ab_root, "current") == 0 ? which_tree(p) : -1;
    } else {
        on_disk = which_image(d, d->target);
    }
    int want = committed ? c->new_idx : c->old_idx;
    if (on_disk != want)
        failf(d, "installed image is %s, expected the %s image after %s",
              on_disk < 0             ? "missing"
              : on_disk == 2          ? "neither old nor new (a mix)"
              : on_disk == c->new_idx ? "the new one"
                                      : "the old one",
              committed ? "new" : "old", upk_status_str(st));
    char p[PATH_CAP];
    if (d->sc != SC_ABDIR && exists(staged_path(d, p)))
        failf(d, "half-staged %s left after %s", p, upk_status_str(st));
    if (d->sc == SC_FILE) {
        (void)join(p, d->target, "", ".upknew");
        if (exists(p))
            failf(d, "staged %s left after %s", p, upk_status_str(st));
    }
    if (d->sc == SC_EXT) {
        (void)join(p, d->target, "", ".upkmod-new");
        if (exists(p))
            failf(d, "staged %s left after %s", p, upk_status_str(st));
    }
    /* 2. The installed facts name what is on disk. */
    facts f;
    if (!read_installed(d, &f)) {
        failf(d, "installed.json unreadable");
    } else if (committed) {
        if (!f.present || strcmp(f.version, c->version) != 0 ||
            memcmp(f.sha, c->new_img->sha, UPK_SHA256_LEN) != 0)
            failf(d, "installed.json says %s, expected %s", f.present ? f.version : "nothing",
                  c->version);
    } else if (strcmp(f.version, d->cur_version) != 0 ||
               (f.present && memcmp(f.sha, d->img[c->old_idx].sha, UPK_SHA256_LEN) != 0)) {
        failf(d, "installed.json says %s after a rollback, expected %s",
              f.present ? f.version : "nothing", d->cur_version);
    }
    /* 3. The retained state matches journal and disk. */
    const upk_state_msg *s = &d->s.state;
    uint8_t zero[UPK_SHA256_LEN] = {0};
    if (s->status != st || strcmp(s->campaign, c->campaign) != 0 ||
        strcmp(s->version, f.version) != 0 ||
        memcmp(s->image_sha256, f.present ? f.sha : zero, UPK_SHA256_LEN) != 0)
        failf(d, "reported state %s/%s version %s differs from journal %s and installed %s",
              upk_status_str(s->status), s->campaign, s->version, upk_status_str(st), f.version);
    if (d->sc == SC_ABDIR) {
        char link[16] = "";
        char cp[PATH_CAP];
        ssize_t n =
            path2(cp, d->ab_root, "current") == 0 ? readlink(cp, link, sizeof(link) - 1) : -1;
        if (n > 0)
            link[n] = '\0';
        if (strcmp(s->slot, link) != 0)
            failf(d, "reported slot %s, current points at %s", s->slot, link);
    }
    /* 4. The journal and the data dir: nothing half-done left. */
    if (strcmp(camp, c->campaign) != 0)
        failf(d, "journal campaign %s, expected %s", camp, c->campaign);
    char dl[PATH_CAP], work[PATH_CAP], tmp[PATH_CAP];
    if (path2(dl, d->data, "download") == 0 && exists(dl)) {
        DIR *dd = opendir(dl);
        struct dirent *de;
        while (dd != NULL && (de = readdir(dd)) != NULL)
            if (de->d_name[0] != '.')
                failf(d, "download/%s left after the update", de->d_name);
        if (dd != NULL)
            closedir(dd);
    }
    if (path2(work, d->data, "work") == 0 && exists(work))
        failf(d, "work dir left after the update");
    if (path2(tmp, d->data, "journal.json.tmp") == 0 && exists(tmp) && d->agent <= 0)
        failf(d, "journal.json.tmp left");
    /* 5. Events: every queued one arrived; each step once, in order. */
    unsigned step_count[UPK_STATUS__COUNT] = {0}, progress_count[11] = {0}, finals = 0;
    upk_status last_step = UPK_STATUS_IDLE, final_step = UPK_STATUS_IDLE;
    uint64_t top = d->last_seq > d->max_written ? d->last_seq : d->max_written;
    for (uint64_t q = 1; q <= top; q++) {
        if (d->written[q] && !d->seqs[q].seen)
            failf(d, "event seq %" PRIu64 " was queued but never arrived (lost)", q);
        const ev_rec *r = &d->seqs[q];
        if (!r->seen || r->trial != R.trial)
            continue;
        upk_status step = (upk_status)r->step;
        if (upk_status_is_final(step)) {
            finals++;
            final_step = step;
        } else if (step == UPK_STATUS_DOWNLOADING && r->progress > 0) {
            progress_count[r->progress / 10 <= 10 ? r->progress / 10 : 10]++;
            continue;
        } else {
            step_count[step]++;
            if (step < last_step)
                failf(d, "event %s (seq %" PRIu64 ") after %s", upk_status_str(step), q,
                      upk_status_str(last_step));
            last_step = step;
        }
        if (finals > 0 && !upk_status_is_final(step))
            failf(d, "event %s after the final event", upk_status_str(step));
    }
    if (finals != 1 || final_step != st)
        failf(d, "%u final events (last %s) for an update that ended %s", finals,
              upk_status_str(final_step), upk_status_str(st));
    upk_status reached = committed ? UPK_STATUS_HEALTH_CHECK : d->jmax;
    if (!committed && reached < UPK_STATUS_ACTIVATING)
        reached = UPK_STATUS_ACTIVATING; /* rolled_back means it was activating */
    for (upk_status k = UPK_STATUS_DOWNLOADING; k <= UPK_STATUS_HEALTH_CHECK; k++) {
        if (step_count[k] > 1)
            failf(d, "event %s reported %u times", upk_status_str(k), step_count[k]);
        if (k <= reached && step_count[k] == 0)
            failf(d, "event %s never arrived (lost) though the journal reached %s",
                  upk_status_str(k), upk_status_str(reached));
    }
    for (unsigned k = 1; k < 10; k++)
        if (progress_count[k] > 1)
            failf(d, "download progress %u%% reported %u times", k * 10, progress_count[k]);
}

static void run_trial(dev *d)
{
    trial_ctx c;
    memset(&c, 0, sizeof(c));
    c.d = d;
    c.old_idx = d->cur;
    c.new_idx = 1 - d->cur;
    c.new_img = &d->img[c.new_idx];
    (void)snprintf(c.campaign, sizeof(c.campaign), "pc-%u", R.trial);
    (void)snprintf(c.version, sizeof(c.version), "%u.%d", 1 + R.trial, c.new_idx);
    upk_manifest m;
    make_manifest(&m, c.version, c.new_img,
                  d->sc == SC_FILE    ? "file"
                  : d->sc == SC_ABDIR ? "ab-dir"
                                      : "slowmod");
    c.art = c.new_img;
    c.delta = d->sc == SC_FILE && d->patch[c.old_idx] != NULL && (rnd() & 1) == 0;
    if (c.delta) {
        c.patch.data = d->patch[c.old_idx];
        c.patch.len = d->patch_len[c.old_idx];
        upk_sha256_buf(c.patch.data, c.patch.len, c.patch.sha);
        m.type = UPK_RELEASE_DELTA;
        m.size = c.patch.len;
        memcpy(m.sha256, c.patch.sha, UPK_SHA256_LEN);
        memcpy(m.base_sha256, d->img[c.old_idx].sha, UPK_SHA256_LEN);
        c.art = &c.patch;
        R.deltas++;
    } else {
        R.fulls++;
    }
    char hex[UPK_SHA256_HEX_LEN + 1], name[UPK_SHA256_HEX_LEN + 16];
    if (upk_hex_encode(m.sha256, UPK_SHA256_LEN, hex, sizeof(hex)) != UPK_OK) {
        failf(d, "hex encode");
        return;
    }
    (void)snprintf(name, sizeof(name), "download/%s.part", hex);
    (void)path2(c.part, d->data, name);

    target plan[8];
    unsigned np = 0, next = 0;
    plan_kills(plan, &np);
    printf("trial %u: %s %s update to %s, %u kill(s) planned\n", R.trial, scen_name[d->sc],
           c.delta ? "delta" : "full", c.version, np);
    d->jmax = UPK_STATUS_IDLE;
    d->jstatus = UPK_STATUS_IDLE;
    d->jrb = false;
    standin_set_artifact(&d->s, c.art->data, c.art->len);
    if (standin_publish_desired(&d->s, &m, c.campaign, R.key, false) != 0) {
        failf(d, "cannot publish desired");
        return;
    }
    double start = upk_h_now(), settled_at = 0;
    for (;;) {
        (void)uv_run(&R.loop, UV_RUN_NOWAIT);
        read_inotify(d);
        drain_events(d);
        reap_strays();
        double now = upk_h_now();
        int st;
        if (d->agent > 0 && waitpid(d->agent, &st, WNOHANG) == d->agent) {
            d->agent = 0;
            failf(d, "the agent exited by itself (status 0x%x); see %s", (unsigned)st, d->log);
            agent_start(d);
        }
        int ph = phase_of(d->jstatus);
        /* Targets the update went past, or that can no longer fire. */
        while (next < np && ph == PH_FINAL && d->jstatus != UPK_STATUS_IDLE) {
            R.missed++;
            next++;
        }
        while (next < np && kind_phase[plan[next].k] != 0 && ph > plan[next].arm_phase &&
               ph != PH_FINAL) {
            R.missed++;
            next++;
        }
        if (next < np) {
            target *t = &plan[next];
            if (!t->armed && ph >= t->arm_phase && ph != PH_FINAL) {
                t->armed = true;
                t->armed_at = now;
                t->base_j = d->jw;
                t->base_s = d->sw;
                t->base_e = d->ew;
            }
            if (t->armed && d->agent > 0 && fires(d, t, c.art, c.part, now)) {
                kill_now(&c, t);
                next++;
                continue;
            }
        }
        /* The health check passes unless a kill waits for it. */
        bool hold = next < np && plan[next].k == K_HEALTH;
        if (hold && exists(d->hc_go))
            (void)unlink(d->hc_go);
        else if (!hold && !exists(d->hc_go) && write_text(d->hc_go, "go\n", 0600) != 0)
            failf(d, "cannot write %s", d->hc_go);
        bool final_seen = false;
        if (trial_settled(&c, &final_seen) && next >= np) {
            if (final_seen)
                break;
            if (settled_at == 0)
                settled_at = now;
            if (now - settled_at > 3)
                break; /* check_trial names what is missing */
        }
        if (g_stop) {
            printf("  stopped by a signal; this trial is not counted\n");
            return;
        }
        if (now - start > TRIAL_LIMIT_S) {
            upk_status js = UPK_STATUS_IDLE;
            bool rb = false;
            (void)read_journal(d, &js, &rb, NULL, 0);
            failf(d, "no outcome in %.0f s (journal %s%s, outbox %s); see %s", TRIAL_LIMIT_S,
                  upk_status_str(js), rb ? " rolling back" : "",
                  outbox_empty(d) ? "empty" : "not empty", d->log);
            return;
        }
        struct pollfd pf = {d->ino, POLLIN, 0};
        (void)poll(&pf, 1, 1);
    }
    check_trial(&c);
    upk_status st = UPK_STATUS_IDLE;
    bool rb = false;
    (void)read_journal(d, &st, &rb, NULL, 0);
    if (st == UPK_STATUS_COMMITTED) {
        d->cur = c.new_idx;
        (void)snprintf(d->cur_version, sizeof(d->cur_version), "%s", c.version);
        R.outcome[d->sc][0]++;
    } else {
        R.outcome[d->sc][1]++;
    }
    printf("  -> %s in %.1f s\n", upk_status_str(st), upk_h_now() - start);
    R.done_trials++;
}

/* ------------------------------------------------------ requeue check */

/* Waits (bounded) for the next event the stand-in takes; false on timeout. */
static bool next_event(dev *d, upk_event_msg *out)
{
    double end = upk_h_now() + 30;
    while (upk_h_now() < end) {
        (void)uv_run(&R.loop, UV_RUN_NOWAIT);
        reap_strays();
        if (d->ev_done < d->s.event_count) {
            *out = d->s.events[d->ev_done++];
            return true;
        }
        nap_ms(2);
    }
    return false;
}

static void expect_event(dev *d, uint64_t seq, upk_status step, const char *campaign)
{
    upk_event_msg ev;
    if (!next_event(d, &ev)) {
        failf(d, "no event (expected seq %" PRIu64 " %s)", seq, upk_status_str(step));
        return;
    }
    if (ev.seq != seq || ev.step != step || strcmp(ev.campaign, campaign) != 0)
        failf(d, "event seq %" PRIu64 " %s of %s, expected seq %" PRIu64 " %s of %s", ev.seq,
              upk_status_str(ev.step), ev.campaign, seq, upk_status_str(step), campaign);
    else
        printf("  event seq %" PRIu64 " %s of %s arrived as expected\n", seq, upk_status_str(step),
               campaign);
}

/* Regression for events lost to a power cut between the journal write of a
 * step and the queueing of its event: the journal reserves the event's seq,
 * and a start that finds that seq never handed out queues the event under
 * it; a start that finds it handed out queues nothing. */
static void requeue_check(dev *d)
{
    char jtext[1024], p[PATH_CAP];
    int n = snprintf(jtext, sizeof(jtext),
                     "{\"v\":1,\"status\":\"committed\",\"rolling_back\":false,\"error\":\"%s\","
                     "\"message\":\"\",\"campaign\":\"requeue-a\",\"desired_id\":\"\","
                     "\"key_id\":\"\",\"manifest\":\"\",\"sig\":\"\",\"slot\":\"\","
                     "\"restarts\":0,\"event_seq\":5}",
                     upk_err_str(UPK_OK));
    if (n < 0 || (size_t)n >= sizeof(jtext) || write_text(d->journal, jtext, 0600) != 0 ||
        path2(p, d->outbox, "seq") != 0 || write_text(p, "5\n", 0600) != 0) {
        failf(d, "cannot write the crafted journal");
        return;
    }
    printf("requeue check: journal committed with event seq 5 reserved, outbox at seq 5\n");
    agent_start(d);
    expect_event(d, 5, UPK_STATUS_COMMITTED, "requeue-a");
    /* The next event continues the numbering. */
    upk_manifest m;
    make_manifest(&m, "9.9", &d->img[1], "file");
    if (standin_publish_desired(&d->s, &m, "requeue-b", R.key, true) != 0)
        failf(d, "cannot publish desired");
    expect_event(d, 6, UPK_STATUS_REJECTED, "requeue-b");
    /* A power cut after that event was made: nothing is queued again. */
    power_cut(d);
    printf("requeue check: power cut after seq 6 was sent; restart\n");
    agent_start(d);
    if (standin_publish_desired(&d->s, &m, "requeue-c", R.key, true) != 0)
        failf(d, "cannot publish desired");
    expect_event(d, 7, UPK_STATUS_REJECTED, "requeue-c");
    R.done_trials++;
}

/* The journal of an update signed for m, in health_check at the restart
 * limit (restarts 1), as the two commit-window checks below craft it; NULL
 * (and the trial failed) when it cannot be made. Caller frees. */
static char *crafted_health_check_journal(dev *d, const upk_manifest *m, const char *campaign,
                                          int event_seq, bool committing)
{
    char *json = NULL, sig64[256], *jtext = NULL;
    size_t jlen = 0, siglen = 0, slen = 0;
    uint8_t sig[UPK_SIG_MAX];
    if (upk_manifest_encode(m, &json, &jlen) != UPK_OK ||
        upk_manifest_sign(R.key, json, jlen, sig, &siglen) != UPK_OK ||
        upk_base64_encode(sig, siglen, sig64, sizeof(sig64), &slen) != UPK_OK) {
        failf(d, "cannot sign the crafted manifest");
        free(json);
        return NULL;
    }
    cJSON *root = cJSON_CreateObject();
    bool ok = root != NULL && cJSON_AddNumberToObject(root, "v", 1) &&
              cJSON_AddStringToObject(root, "status", "health_check") &&
              cJSON_AddBoolToObject(root, "rolling_back", false) &&
              cJSON_AddStringToObject(root, "error", upk_err_str(UPK_OK)) &&
              cJSON_AddStringToObject(root, "message", "") &&
              cJSON_AddStringToObject(root, "campaign", campaign) &&
              cJSON_AddStringToObject(root, "desired_id", "") &&
              cJSON_AddStringToObject(root, "key_id", upk_key_id(R.key)) &&
              cJSON_AddStringToObject(root, "manifest", json) &&
              cJSON_AddStringToObject(root, "sig", sig64) &&
              cJSON_AddStringToObject(root, "slot", "") &&
              cJSON_AddNumberToObject(root, "restarts", 1) &&
              cJSON_AddNumberToObject(root, "event_seq", event_seq) &&
              (!committing || cJSON_AddBoolToObject(root, "committing", true));
    jtext = ok ? cJSON_PrintUnformatted(root) : NULL;
    if (jtext == NULL)
        failf(d, "cannot write the crafted journal");
    cJSON_Delete(root);
    free(json);
    return jtext;
}

/* After a crafted journal: the agent restarted, sent event seq as committed
 * for campaign, and image img (of version) is what is installed. */
static void expect_committed_kept(dev *d, uint32_t seq, const char *campaign, int img,
                                  const char *version)
{
    agent_start(d);
    expect_event(d, seq, UPK_STATUS_COMMITTED, campaign);
    upk_status st = UPK_STATUS_IDLE;
    bool rb = false;
    facts f;
    if (!read_journal(d, &st, &rb, NULL, 0) || st != UPK_STATUS_COMMITTED)
        failf(d, "journal says %s, expected committed", upk_status_str(st));
    if (which_image(d, d->target) != img)
        failf(d, "the new image is no longer installed");
    if (!read_installed(d, &f) || strcmp(f.version, version) != 0)
        failf(d, "installed.json does not name %s", version);
    R.done_trials++;
}

/* Regression for a power cut between the commit's write of the installed
 * facts and the journal's "committed": the restart found the journal in
 * health_check, counted a restart over the limit and rolled back, leaving
 * installed.json naming a release no longer installed. Crafted: the new
 * image active, the facts naming it, the journal in health_check at the
 * restart limit; the update must end committed with the image kept. */
static void commit_window_check(dev *d)
{
    if (standin_clear_desired(&d->s) != 0)
        failf(d, "cannot clear desired");
    power_cut(d);
    printf("commit window check: facts written, journal in health_check at the restart limit\n");
    upk_manifest m;
    make_manifest(&m, "9.1", &d->img[1], "file");
    char hex[UPK_SHA256_HEX_LEN + 1], facts_text[1024];
    if (upk_hex_encode(d->img[1].sha, UPK_SHA256_LEN, hex, sizeof(hex)) != UPK_OK) {
        failf(d, "cannot encode the image hash");
        return;
    }
    int n = snprintf(facts_text, sizeof(facts_text),
                     "{\"v\":1,\"release\":\"fw\",\"version\":\"9.1\",\"security_version\":1,"
                     "\"image_sha256\":\"%s\",\"campaign\":\"commit-x\",\"last_patched\":%lld,"
                     "\"support_until\":0}",
                     hex, (long long)R.now);
    char *jtext = crafted_health_check_journal(d, &m, "commit-x", 7, false);
    if (jtext == NULL)
        return;
    if (n <= 0 || (size_t)n >= sizeof(facts_text) ||
        write_bin(d->target, d->img[1].data, d->img[1].len) != 0 ||
        write_text(d->installed, facts_text, 0600) != 0 ||
        write_text(d->journal, jtext, 0600) != 0) {
        failf(d, "cannot write the crafted journal");
        free(jtext);
        return;
    }
    free(jtext);
    expect_committed_kept(d, 8, "commit-x", 1, "9.1");
}

/* Regression for a power cut after the module's commit step began (it may
 * drop what a rollback needs) and before the installed facts were written:
 * the restart at the limit rolled back, leaving the new image in place under
 * facts naming the old one. Crafted: the new image active, no backup, the
 * journal in health_check, committing, at the restart limit. */
static void commit_begun_check(dev *d)
{
    power_cut(d);
    printf("commit-begun check: module commit started, facts not yet written\n");
    upk_manifest m;
    make_manifest(&m, "9.2", &d->img[0], "file");
    char prev[PATH_CAP];
    char *jtext = crafted_health_check_journal(d, &m, "commit-y", 8, true);
    if (jtext == NULL)
        return;
    (void)join(prev, d->target, "", ".upkprev");
    (void)unlink(prev);
    if (write_bin(d->target, d->img[0].data, d->img[0].len) != 0 ||
        write_text(d->journal, jtext, 0600) != 0) {
        failf(d, "cannot write the crafted journal");
        free(jtext);
        return;
    }
    free(jtext);
    expect_committed_kept(d, 9, "commit-y", 0, "9.2");
}

/* --------------------------------------------------------------- report */

static void report(void)
{
    printf("\n==== agent power-cut campaign: seed %" PRIu64 " ====\n", R.seed);
    printf("trials %u (full %u, delta %u), kills %u, planned kills the update went past %u\n",
           R.done_trials, R.fulls, R.deltas, R.kills, R.missed);
    for (int s = 0; s < SC__N; s++)
        printf("  %-9s committed %u, rolled back %u\n", scen_name[s], R.outcome[s][0],
               R.outcome[s][1]);
    printf("kills by trigger:");
    for (int k = 0; k < K__N; k++)
        printf(" %s=%u", kind_name[k], R.hits[k]);
    printf("\nkills by the journal step they landed in:\n");
    for (int l = 0; l < LAND_N; l++) {
        unsigned total = 0;
        for (int k = 0; k < K__N; k++)
            total += R.land[l][k];
        if (total == 0)
            continue;
        printf("  %-30s %5u  (", land_name[l], total);
        bool first = true;
        for (int k = 0; k < K__N; k++)
            if (R.land[l][k] > 0) {
                printf("%s%s %u", first ? "" : ", ", kind_name[k], R.land[l][k]);
                first = false;
            }
        printf(")\n");
    }
    printf("image write cut mid-way: %u; activation kills before/after the switch: %u/%u\n",
           R.partial_stage, R.unswitched_at_kill, R.switched_at_kill);
    printf("events redelivered after a kill (same seq, dropped by seq): %u\n", R.redelivered);
    printf("failures: %u\n", R.failures);
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0')
        return -1;
    *out = v;
    return 0;
}

int main(int argc, char **argv)
{
    uint64_t trials = 21, kills = 3, secs = 0;
    bool keep_going = false, requeue_only = false;
    time_t tnow = time(NULL);
    struct tm tm;
    (void)gmtime_r(&tnow, &tm);
    R.seed = (uint64_t)(tm.tm_year + 1900) * 10000 + (uint64_t)(tm.tm_mon + 1) * 100 +
             (uint64_t)tm.tm_mday;
    for (int i = 1; i < argc; i++) {
        bool has = i + 1 < argc;
        int bad = !has;
        if (strcmp(argv[i], "--trials") == 0 && has)
            bad = parse_u64(argv[++i], &trials);
        else if (strcmp(argv[i], "--seed") == 0 && has)
            bad = parse_u64(argv[++i], &R.seed);
        else if (strcmp(argv[i], "--max-seconds") == 0 && has)
            bad = parse_u64(argv[++i], &secs);
        else if (strcmp(argv[i], "--max-kills") == 0 && has)
            bad = parse_u64(argv[++i], &kills);
        else if (strcmp(argv[i], "--keep-going") == 0)
            bad = 0, keep_going = true;
        else if (strcmp(argv[i], "--window-checks") == 0)
            bad = 0, requeue_only = true;
        else
            bad = 1;
        if (bad || trials == 0 || trials > 100000 || kills == 0 || kills > 8) {
            fprintf(stderr, "usage: upk_powercut [--trials N] [--seed S] [--max-seconds T] "
                            "[--max-kills 1..8] [--keep-going] [--window-checks]\n");
            return 2;
        }
    }
    R.trials = (unsigned)trials;
    R.max_kills = (unsigned)kills;
    R.max_seconds = (double)secs;
    R.rng = R.seed * 0x9E3779B97F4A7C15ull + 1;
    R.now = (int64_t)tnow;
    printf("agent power cuts: seed %" PRIu64 ", %u trials (replay: upk_powercut --seed %" PRIu64
           " --trials %u)\n",
           R.seed, R.trials, R.seed, R.trials);
    (void)setvbuf(stdout, NULL, _IOLBF, 0);
    (void)prctl(PR_SET_CHILD_SUBREAPER, 1);
    (void)signal(SIGPIPE, SIG_IGN);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop;
    (void)sigemptyset(&sa.sa_mask);
    (void)sigaction(SIGTERM, &sa, NULL);
    (void)sigaction(SIGINT, &sa, NULL);
    int rc = 1;
    bool loop_up = false;
    char bdir[PATH_CAP] = "";
    R.broker.pid = -1;
    if (upk_h_tmpdir(R.dir, sizeof(R.dir)) != 0) {
        fprintf(stderr, "cannot make a temp dir\n");
        return 1;
    }
    char *pem = NULL;
    if (upk_key_generate(&R.key) != UPK_OK || upk_key_public_pem(R.key, &pem) != UPK_OK ||
        path2(R.key_path, R.dir, "release.pub") != 0 ||
        write_bin(R.key_path, pem, strlen(pem)) != 0) {
        fprintf(stderr, "cannot make the release key\n");
        free(pem);
        goto out;
    }
    free(pem);
    if (path2(bdir, R.dir, "broker") != 0 || mkdir(bdir, 0700) != 0 ||
        upk_h_broker_start(&R.broker, bdir, "allow_anonymous true\n", 10.0) != 0) {
        fprintf(stderr, "cannot start mosquitto\n");
        goto out;
    }
    (void)snprintf(R.url, sizeof(R.url), "tcp://127.0.0.1:%d", R.broker.port);
    if (uv_loop_init(&R.loop) != 0)
        goto out;
    loop_up = true;
    for (int s = 0; s < SC__N; s++)
        if (dev_setup(&R.devs[s], (scen)s, !requeue_only) != 0) {
            failf(&R.devs[s], "setup failed: %s", strerror(errno));
            goto out;
        }
    if (requeue_only) {
        requeue_check(&R.devs[SC_FILE]);
        commit_window_check(&R.devs[SC_FILE]);
        commit_begun_check(&R.devs[SC_FILE]);
        rc = 0;
        goto out;
    }
    /* Every stand-in connected and every agent reported its state. */
    double ready_by = upk_h_now() + 30;
    bool ready = false;
    while (!ready && upk_h_now() < ready_by) {
        (void)uv_run(&R.loop, UV_RUN_NOWAIT);
        reap_strays();
        ready = true;
        for (int s = 0; s < SC__N; s++)
            ready = ready && R.devs[s].s.connected && R.devs[s].s.have_state;
        nap_ms(2);
    }
    if (!ready) {
        failf(NULL, "stand-ins or agents did not come up in 30 s");
        goto out;
    }
    R.t0 = upk_h_now();
    for (R.trial = 0; R.trial < R.trials; R.trial++) {
        if (g_stop) {
            printf("stopped by a signal after %u trials\n", R.trial);
            break;
        }
        if (R.max_seconds > 0 && upk_h_now() - R.t0 > R.max_seconds) {
            printf("time cap of %.0f s reached after %u trials\n", R.max_seconds, R.trial);
            break;
        }
        run_trial(&R.devs[R.trial % SC__N]);
        fflush(stdout);
        if (R.failures > 0 && !keep_going)
            break;
    }
    rc = 0;
out:
    for (int s = 0; s < SC__N; s++)
        dev_cleanup(&R.devs[s]);
    if (loop_up) {
        (void)uv_run(&R.loop, UV_RUN_NOWAIT);
        (void)uv_loop_close(&R.loop);
    }
    if (R.broker.pid > 0) {
        if (R.failures > 0)
            upk_h_broker_dump_log(bdir);
        upk_h_broker_stop(&R.broker);
    }
    upk_key_free(R.key);
    if (!requeue_only)
        report();
    else
        printf("crash-window checks: %s\n", R.failures == 0 ? "passed" : "FAILED");
    bool all_phases = true;
    for (int k = 0; k < K_TIME; k++)
        all_phases = all_phases && R.hits[k] > 0;
    if (!requeue_only && rc == 0 && R.failures == 0 && R.done_trials > 0 && !all_phases)
        printf("note: not every trigger fired in this short run\n");
    if (R.failures == 0 && rc == 0)
        upk_h_rmtree(R.dir);
    else
        fprintf(stderr, "kept %s for inspection\n", R.dir);
    return rc == 0 && R.failures == 0 && R.done_trials > 0 ? 0 : 1;
}
