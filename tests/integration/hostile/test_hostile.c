/* Hostile input, end to end: every line of corpus.txt is one bad input fed
 * through a real mosquitto with upkeep_broker.so to the broker itself, to
 * `upkeep serve` or to a real `upkeep-agent`. Each case checks the named
 * error where it surfaces (a CONNACK/PUBACK/SUBACK reason, a broker counter,
 * a ctl reply, an agent event, a log line) and then that nothing changed:
 * every process alive, the agent's installed release and image on disk, the
 * controller's releases and campaigns, and the device's retained state.
 * A second test plays the controller (serve stopped) to feed corrupt,
 * truncated, unasked-for and reordered chunks to the agent during a download. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "harness.h"
#include "upkeep/devkey.h"
#include "upkeep/fs.h"
#include "upkeep/hash.h"
#include "upkeep/key.h"
#include "upkeep/manifest.h"
#include "upkeep/msg.h"

#define SECRET     "hostile-fleet-secret-0123456789abcdef"
#define PREFIX     "upkeep/v1"
#define DEV        "dev-a"
#define EVIL       "dev-evil"
#define ART_LEN    6000
#define ART2_LEN   9000
#define CHUNK_SIZE 1024
#define BIG_MAX    (1u << 20) /* largest generated payload: 1 MiB */
#define CASES_MAX  200
#define EVENTS_MAX 512
#define REQS_MAX   64

typedef struct ev_rec {
    upk_status step;
    upk_err error;
} ev_rec;

typedef struct hx {
    char dir[UPK_H_PATH_MAX];
    upk_h_broker b;
    pid_t serve, agent;
    upk_h_client *inj, *obs, *op, *evil;
    bool ack_events; /* serve is stopped: the test acks the agent's events */
    upk_key *rel, *rogue;
    char *legit; /* the controller's desired for dev-a, as delivered */
    size_t legit_len;
    uint8_t art[ART_LEN], art_sha[32];
    char installed_path[UPK_H_PATH_MAX + 64], target_path[UPK_H_PATH_MAX + 64];
    uint8_t base_installed[32], base_target[32];
    char *base_releases, *base_campaigns;
    /* what the observer saw */
    ev_rec ev[EVENTS_MAX];
    size_t nev;
    bool have_state;
    upk_state_msg state;
    cJSON *stats;     /* latest broker/stats */
    int chunk_status; /* of the last chunk/data the evil device got; -1 none */
    char last_sender[UPK_H_TOPIC_MAX];
    char last_sender_topic[UPK_H_TOPIC_MAX];
    int last_sender_count;
    /* chunk requests of dev-a (download test) */
    uint64_t req_off[REQS_MAX];
    uint32_t req_len[REQS_MAX];
    size_t nreq;
    unsigned id_seq, marker_seq;
} hx;

static upk_h_msg msgbuf;

/* ------------------------------------------------------------ processes */

static int run_wait(char *const argv[], const char *out_path, double timeout_s)
{
    pid_t pid = fork();
    if (pid == 0) {
        if (out_path != NULL) {
            int fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
            if (fd >= 0) {
                dup2(fd, 1);
                dup2(fd, 2);
                close(fd);
            }
        }
        execv(argv[0], argv);
        _exit(127);
    }
    if (pid < 0)
        return -1;
    double end = upk_h_now() + timeout_s;
    int st = 0;
    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            break;
        if (upk_h_now() > end) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            return -1;
        }
        usleep(10000);
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static pid_t spawn_logged(const char *log, char *const argv[])
{
    pid_t pid = fork();
    if (pid == 0) {
        (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

static bool alive(pid_t pid)
{
    int st;
    return pid > 0 && waitpid(pid, &st, WNOHANG) == 0;
}

static void stop_pid(pid_t *pid)
{
    if (*pid > 0) {
        kill(*pid, SIGCONT);
        kill(*pid, SIGTERM);
        double end = upk_h_now() + 10;
        int st;
        while (waitpid(*pid, &st, WNOHANG) == 0) {
            if (upk_h_now() > end) {
                kill(*pid, SIGKILL);
                waitpid(*pid, &st, 0);
                break;
            }
            usleep(10000);
        }
        *pid = 0;
    }
}

/* Runs `upkeep ARGS...` as operator alice; output into dir/out_name. */
static int cli(hx *e, const char *out_name, ...)
{
    char *argv[40];
    int n = 0;
    argv[n++] = (char *)UPK_BIN;
    va_list ap;
    va_start(ap, out_name);
    const char *a;
    while ((a = va_arg(ap, const char *)) != NULL && n < 38)
        argv[n++] = (char *)a;
    va_end(ap);
    argv[n] = NULL;
    char broker[64], pwf[UPK_H_PATH_MAX + 32], outp[UPK_H_PATH_MAX + 32];
    snprintf(broker, sizeof(broker), "tcp://127.0.0.1:%d", e->b.port);
    snprintf(pwf, sizeof(pwf), "%s/alice.pw", e->dir);
    snprintf(outp, sizeof(outp), "%s/%s", e->dir, out_name);
    setenv("UPKEEP_BROKER", broker, 1);
    setenv("UPKEEP_USER", "alice", 1);
    setenv("UPKEEP_PASSWORD_FILE", pwf, 1);
    setenv("HOME", e->dir, 1);
    return run_wait(argv, outp, 60);
}

static void dump_file(const char *dir, const char *name)
{
    char p[UPK_H_PATH_MAX + 64];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    FILE *f = fopen(p, "r");
    if (f == NULL)
        return;
    char line[1024];
    int n = 0, k = 0;
    while (fgets(line, sizeof(line), f) != NULL)
        n++;
    rewind(f);
    fprintf(stderr, "---- %s (tail) ----\n", name);
    while (fgets(line, sizeof(line), f) != NULL)
        if (++k > n - 40)
            fputs(line, stderr);
    fclose(f);
}

static void dump_all(hx *e)
{
    dump_file(e->dir, "serve.log");
    dump_file(e->dir, "agent.log");
    dump_file(e->dir, "mosquitto.log");
}

/* Size of dir/name now (the offset new log text starts at). */
static long log_size(hx *e, const char *name)
{
    char p[UPK_H_PATH_MAX + 64];
    struct stat st;
    snprintf(p, sizeof(p), "%s/%s", e->dir, name);
    return stat(p, &st) == 0 ? (long)st.st_size : 0;
}

/* True when dir/name has needle after byte offset from. */
static bool log_has(hx *e, const char *name, long from, const char *needle)
{
    char p[UPK_H_PATH_MAX + 64];
    snprintf(p, sizeof(p), "%s/%s", e->dir, name);
    char *buf = NULL;
    size_t len = 0;
    if (upk_fs_read(p, 64u << 20, &buf, &len) != UPK_OK)
        return false;
    bool hit = (size_t)from <= len && strstr(buf + from, needle) != NULL;
    free(buf);
    return hit;
}

static bool file_sha(const char *path, uint8_t out[32])
{
    char *buf = NULL;
    size_t len = 0;
    if (upk_fs_read(path, 64u << 20, &buf, &len) != UPK_OK)
        return false;
    upk_sha256_buf(buf, len, out);
    free(buf);
    return true;
}

/* ------------------------------------------------------------ observer */

/* Files one message the observer (admin, subscribed to everything) got. */
static void observe(hx *e, const upk_h_msg *m)
{
    const char *t = m->topic;
    if (strcmp(t, PREFIX "/broker/stats") == 0) {
        cJSON_Delete(e->stats);
        e->stats = cJSON_Parse(m->payload);
        return;
    }
    if (strcmp(t, PREFIX "/dev/" DEV "/events") == 0) {
        upk_event_msg ev;
        if (strcmp(m->sender, "device:" DEV) == 0 &&
            upk_event_decode(m->payload, m->len, &ev) == UPK_OK && e->nev < EVENTS_MAX) {
            e->ev[e->nev].step = ev.step;
            e->ev[e->nev].error = ev.error;
            e->nev++;
            /* Standing in for the stopped controller (protocol.md 5.9). */
            char *ack = NULL;
            size_t alen = 0;
            int reason;
            if (e->ack_events && (upk_ack_encode(ev.seq, &ack, &alen) != UPK_OK ||
                                  upk_h_client_publish(e->inj, PREFIX "/dev/" DEV "/ack", ack, alen,
                                                       0, false, NULL, &reason) != 0))
                fprintf(stderr, "hostile: ack of event %llu not sent\n",
                        (unsigned long long)ev.seq);
            free(ack);
        }
        return;
    }
    if (strcmp(t, PREFIX "/dev/" DEV "/ack") == 0)
        return;
    if (strcmp(t, PREFIX "/dev/" DEV "/state") == 0) {
        /* Like the controller, trust only what the plugin stamped as dev-a. */
        upk_state_msg st;
        if (m->len > 0 && strcmp(m->sender, "device:" DEV) == 0 &&
            upk_state_decode(m->payload, m->len, &st) == UPK_OK) {
            e->state = st;
            e->have_state = true;
        }
        return;
    }
    if (strcmp(t, PREFIX "/dev/" DEV "/chunk/req") == 0) {
        upk_chunk_req r;
        if (upk_chunk_req_decode(m->payload, m->len, &r) == UPK_OK && e->nreq < REQS_MAX) {
            e->req_off[e->nreq] = r.offset;
            e->req_len[e->nreq] = r.length;
            e->nreq++;
        }
        return;
    }
    snprintf(e->last_sender_topic, sizeof(e->last_sender_topic), "%s", t);
    snprintf(e->last_sender, sizeof(e->last_sender), "%s", m->sender);
    e->last_sender_count = m->sender_count;
}

static void pump(hx *e, double wait_s)
{
    if (upk_h_client_wait_msg(e->obs, wait_s, &msgbuf) == 0) {
        observe(e, &msgbuf);
        while (upk_h_client_wait_msg(e->obs, 0.0, &msgbuf) == 0)
            observe(e, &msgbuf);
    }
    if (e->evil != NULL)
        while (upk_h_client_wait_msg(e->evil, 0.0, &msgbuf) == 0) {
            upk_chunk_hdr h;
            const uint8_t *data;
            size_t tl = strlen(msgbuf.topic);
            if (tl > 11 && strcmp(msgbuf.topic + tl - 11, "/chunk/data") == 0 &&
                upk_chunk_parse((const uint8_t *)msgbuf.payload, msgbuf.len, &h, &data) == UPK_OK)
                e->chunk_status = (int)h.status;
        }
}

static double stat_of(hx *e, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(e->stats, name);
    return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

/* Waits until the broker counter name is above before (the plugin
 * publishes its counters every second). */
static bool stat_rose(hx *e, const char *name, double before)
{
    double end = upk_h_now() + 15;
    for (;;) {
        if (stat_of(e, name) > before)
            return true;
        if (upk_h_now() > end)
            return false;
        pump(e, 0.2);
    }
}

/* Waits for an event of dev-a with step and error at index from or later. */
static bool wait_event(hx *e, size_t from, upk_status step, upk_err err, double timeout_s)
{
    double end = upk_h_now() + timeout_s;
    for (;;) {
        for (size_t i = from; i < e->nev; i++)
            if (e->ev[i].step == step && e->ev[i].error == err)
                return true;
        if (upk_h_now() > end)
            return false;
        pump(e, 0.1);
    }
}

/* ------------------------------------------------------------ operator */

/* The next ctl reply to alice (with id want_id when not NULL), or NULL. */
static cJSON *op_reply(hx *e, const char *want_id, double timeout_s)
{
    double end = upk_h_now() + timeout_s;
    while (upk_h_now() < end) {
        if (upk_h_client_wait_msg(e->op, 0.2, &msgbuf) != 0)
            continue;
        cJSON *r = cJSON_Parse(msgbuf.payload);
        const char *id = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(r, "id"));
        if (want_id == NULL || (id != NULL && strcmp(id, want_id) == 0))
            return r;
        cJSON_Delete(r);
    }
    return NULL;
}

/* Runs cmd (no args) as alice and returns its data printed, or NULL when no
 * reply came within timeout_s. */
static char *op_data_within(hx *e, const char *cmd, double timeout_s)
{
    char req[256], id[32];
    snprintf(id, sizeof(id), "q%u", ++e->id_seq);
    int n = snprintf(req, sizeof(req), "{\"v\":1,\"id\":\"%s\",\"cmd\":\"%s\"}", id, cmd);
    int reason;
    if (upk_h_client_publish(e->op, PREFIX "/ctl/req/alice", req, (size_t)n, 1, false, NULL,
                             &reason) != 0)
        return NULL;
    cJSON *r = op_reply(e, id, timeout_s);
    if (r == NULL || !cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "ok"))) {
        cJSON_Delete(r);
        return NULL;
    }
    char *s = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(r, "data"));
    cJSON_Delete(r);
    return s;
}

static char *op_data(hx *e, const char *cmd)
{
    return op_data_within(e, cmd, 10);
}

/* ------------------------------------------------------------ builders */

static void base_manifest(hx *e, upk_manifest *m)
{
    memset(m, 0, sizeof(*m));
    snprintf(m->name, sizeof(m->name), "fw");
    snprintf(m->version, sizeof(m->version), "9.0");
    m->security_version = 5;
    m->hw_count = 1;
    snprintf(m->hw[0], sizeof(m->hw[0]), "hw-1");
    m->type = UPK_RELEASE_FULL;
    snprintf(m->module, sizeof(m->module), "file");
    m->size = m->target_size = ART_LEN;
    memcpy(m->sha256, e->art_sha, 32);
    memcpy(m->target_sha256, e->art_sha, 32);
    m->created = time(NULL) - 60;
    m->expires = time(NULL) + 3600;
}

/* A desired message for m, signed by signer, naming kid_of's key id. */
static char *desired_for(const upk_manifest *m, const char *campaign, const upk_key *signer,
                         const upk_key *kid_of, size_t *len)
{
    char *mj = NULL;
    size_t ml = 0;
    if (upk_manifest_encode(m, &mj, &ml) != UPK_OK)
        return NULL;
    upk_desired_msg d;
    memset(&d, 0, sizeof(d));
    snprintf(d.campaign, sizeof(d.campaign), "%s", campaign);
    snprintf(d.key_id, sizeof(d.key_id), "%s", upk_key_id(kid_of));
    d.manifest = mj;
    d.manifest_len = ml;
    char *out = NULL;
    if (upk_key_sign(signer, mj, ml, d.sig, &d.sig_len) != UPK_OK ||
        upk_desired_encode(&d, &out, len) != UPK_OK)
        out = NULL;
    free(mj);
    return out;
}

/* ${DESIRED:variant}: a desired message that must be refused (or the
 * controller's own, replayed). */
static char *desired_variant(hx *e, const char *v, size_t *len)
{
    upk_manifest m;
    base_manifest(e, &m);
    const upk_key *signer = e->rel, *kid = e->rel;
    if (strcmp(v, "expired") == 0) {
        m.created = time(NULL) - 7200;
        m.expires = time(NULL) - 3600;
    } else if (strcmp(v, "future") == 0) {
        m.created = time(NULL) + 3600;
        m.expires = time(NULL) + 7200;
    } else if (strcmp(v, "rollback") == 0) {
        m.security_version = 1;
    } else if (strcmp(v, "hw") == 0) {
        snprintf(m.hw[0], sizeof(m.hw[0]), "other-board");
    } else if (strcmp(v, "module") == 0) {
        snprintf(m.module, sizeof(m.module), "no-such-module");
    } else if (strcmp(v, "unpinned") == 0) {
        signer = kid = e->rogue;
    } else if (strcmp(v, "badsig") == 0) {
        signer = e->rogue;
    } else if (strcmp(v, "legit") == 0) {
        char *c = malloc(e->legit_len + 1);
        if (c != NULL) {
            memcpy(c, e->legit, e->legit_len);
            c[e->legit_len] = '\0';
            *len = e->legit_len;
        }
        return c;
    } else {
        return NULL;
    }
    return desired_for(&m, "hostile", signer, kid, len);
}

/* ${CHUNK:variant}: a chunk/data payload the agent must drop. */
static char *chunk_variant(hx *e, const char *v, size_t *len)
{
    uint8_t *p = calloc(1, UPK_CHUNK_HDR_LEN + 256);
    if (p == NULL)
        return NULL;
    upk_chunk_hdr h;
    memset(&h, 0, sizeof(h));
    h.status = UPK_CHUNK_OK;
    h.length = 256;
    for (int i = 0; i < 32; i++)
        h.artifact[i] = (uint8_t)(0xa0 + i);
    upk_chunk_hdr_write(&h, p);
    *len = UPK_CHUNK_HDR_LEN + 256;
    if (strcmp(v, "unasked") == 0) {
        /* well formed, for an artifact nobody asked for */
    } else if (strcmp(v, "truncated") == 0) {
        *len = UPK_CHUNK_HDR_LEN + 100;
    } else if (strcmp(v, "short") == 0) {
        *len = 20;
    } else if (strcmp(v, "badmagic") == 0) {
        p[0] = 'X';
    } else if (strcmp(v, "status9") == 0) {
        p[5] = 9;
    } else if (strcmp(v, "installed") == 0) {
        memcpy(p + 8, e->art_sha, 32); /* the installed artifact, unasked */
    } else {
        free(p);
        return NULL;
    }
    return (char *)p;
}

/* Expands the macros of a corpus field into a new buffer (*len bytes):
 *   \n \t \\ \0 escapes; ${A:N} N times 'a'; ${NUL}; ${DESIRED:v};
 *   ${CHUNK:v}; ${ART} the installed artifact's hex sha256. */
static char *expand(hx *e, const char *s, size_t *len)
{
    size_t cap = strlen(s) + 1 + BIG_MAX + 70000;
    char *out = malloc(cap);
    if (out == NULL)
        return NULL;
    size_t n = 0;
    while (*s != '\0') {
        if (s[0] == '\\' && s[1] != '\0') {
            char c = s[1];
            out[n++] = c == 'n' ? '\n' : c == 't' ? '\t' : c == '0' ? '\0' : c;
            s += 2;
            continue;
        }
        if (s[0] == '$' && s[1] == '{') {
            const char *end = strchr(s, '}');
            if (end == NULL)
                goto fail;
            char mac[64];
            snprintf(mac, sizeof(mac), "%.*s", (int)(end - s - 2), s + 2);
            s = end + 1;
            if (strncmp(mac, "A:", 2) == 0) {
                size_t k = strtoul(mac + 2, NULL, 10);
                if (k > BIG_MAX || n + k >= cap)
                    goto fail;
                memset(out + n, 'a', k);
                n += k;
            } else if (strcmp(mac, "NUL") == 0) {
                out[n++] = '\0';
            } else if (strcmp(mac, "ART") == 0) {
                char hex[65];
                if (upk_hex_encode(e->art_sha, 32, hex, sizeof(hex)) != UPK_OK)
                    goto fail;
                memcpy(out + n, hex, 64);
                n += 64;
            } else if (strncmp(mac, "DESIRED:", 8) == 0 || strncmp(mac, "CHUNK:", 6) == 0) {
                size_t l = 0;
                char *p =
                    mac[0] == 'D' ? desired_variant(e, mac + 8, &l) : chunk_variant(e, mac + 6, &l);
                if (p == NULL || n + l >= cap) {
                    free(p);
                    goto fail;
                }
                memcpy(out + n, p, l);
                n += l;
                free(p);
            } else {
                goto fail;
            }
            continue;
        }
        if (n + 1 >= cap)
            goto fail;
        out[n++] = *s++;
    }
    out[n] = '\0';
    *len = n;
    return out;
fail:
    free(out);
    return NULL;
}

/* ------------------------------------------------------------ setup */

static int add_user(const char *dir, const char *user, const char *pass)
{
    char path[UPK_H_PATH_MAX + 16];
    snprintf(path, sizeof(path), "%s/passwd", dir);
    char *argv[] = {(char *)UPK_MOSQUITTO_PASSWD, "-b", path, (char *)user, (char *)pass, NULL};
    return run_wait(argv, NULL, 30) == 0 ? 0 : -1;
}

static int connect_admin(hx *e, upk_h_client **c, const char *user)
{
    int reason;
    char pw[64];
    snprintf(pw, sizeof(pw), "%s-pw", user);
    return upk_h_client_connect(c, e->b.port, user, user, pw, &reason);
}

static int connect_evil(hx *e)
{
    char pw[UPK_DEVKEY_LEN + 1];
    int reason;
    if (upk_devkey_derive(SECRET, strlen(SECRET), EVIL, pw, sizeof(pw)) != UPK_OK ||
        upk_h_client_connect(&e->evil, e->b.port, EVIL, EVIL, pw, &reason) != 0 ||
        upk_h_client_subscribe(e->evil, PREFIX "/dev/" EVIL "/chunk/data", 0, &reason) != 0)
        return -1;
    return 0;
}

static int start_serve(hx *e)
{
    char cfgp[UPK_H_PATH_MAX + 32], logp[UPK_H_PATH_MAX + 32];
    snprintf(cfgp, sizeof(cfgp), "%s/serve.json", e->dir);
    snprintf(logp, sizeof(logp), "%s/serve.log", e->dir);
    char *argv[] = {(char *)UPK_BIN, "serve", "-c", cfgp, "--log-level", "debug", NULL};
    e->serve = spawn_logged(logp, argv);
    if (e->serve < 0)
        return -1;
    double end = upk_h_now() + 30;
    while (upk_h_now() < end) {
        /* Requests sent before serve subscribed are lost: ask again soon. */
        char *d = op_data_within(e, "ping", 0.5);
        if (d != NULL) {
            free(d);
            return 0;
        }
    }
    return -1;
}

static int start_agent(hx *e)
{
    char cfg[4096], pw[UPK_DEVKEY_LEN + 1];
    if (upk_devkey_derive(SECRET, strlen(SECRET), DEV, pw, sizeof(pw)) != UPK_OK)
        return -1;
    snprintf(cfg, sizeof(cfg),
             "{\"broker\":\"tcp://127.0.0.1:%d\",\"device_id\":\"" DEV "\",\"username\":\"" DEV
             "\",\"password\":\"%s\",\"hardware\":\"hw-1\",\"data_dir\":\"%s/agent\","
             "\"keys\":[\"%s/rel.pub\"],\"module\":\"file\",\"module_settings\":{\"path\":"
             "\"%s\"},\"reconnect_min_ms\":100,\"reconnect_max_ms\":400,\"limits\":{"
             "\"chunk_size\":%d,\"chunks_in_flight\":4,\"chunk_timeout_ms\":1500,"
             "\"step_timeout_s\":20}}",
             e->b.port, pw, e->dir, e->dir, e->target_path, CHUNK_SIZE);
    if (upk_h_write_file(e->dir, "agent.json", cfg) != 0)
        return -1;
    char cfgp[UPK_H_PATH_MAX + 32], logp[UPK_H_PATH_MAX + 32];
    snprintf(cfgp, sizeof(cfgp), "%s/agent.json", e->dir);
    snprintf(logp, sizeof(logp), "%s/agent.log", e->dir);
    char *argv[] = {(char *)UPK_AGENT_BIN, "-c", cfgp, "-l", "debug", NULL};
    e->agent = spawn_logged(logp, argv);
    return e->agent > 0 ? 0 : -1;
}

/* The legitimate update: release fw-2.0 (security_version 5) through the
 * CLI and a campaign; the agent installs it. */
static int legit_update(hx *e)
{
    char artp[UPK_H_PATH_MAX + 32], keyp[UPK_H_PATH_MAX + 32], bundle[UPK_H_PATH_MAX + 64];
    snprintf(artp, sizeof(artp), "%s/image.bin", e->dir);
    snprintf(keyp, sizeof(keyp), "%s/rel.key", e->dir);
    snprintf(bundle, sizeof(bundle), "%s/fw-2.0.release.json", e->dir);
    size_t from = e->nev;
    if (cli(e, "cli.txt", "release", "create", artp, "--name", "fw", "--version", "2.0",
            "--security-version", "5", "--hw", "hw-1", "--module", "file", "--expires", "30d",
            "--key", keyp, "--out", e->dir, (char *)NULL) != 0 ||
        cli(e, "cli.txt", "release", "import", bundle, (char *)NULL) != 0 ||
        cli(e, "cli.txt", "campaign", "create", "--release", "fw-2.0", "--id", "legit", "--stages",
            "100%", (char *)NULL) != 0) {
        dump_file(e->dir, "cli.txt");
        return -1;
    }
    if (!wait_event(e, from, UPK_STATUS_COMMITTED, UPK_OK, 60)) {
        dump_all(e);
        return -1;
    }
    /* The controller's retained desired, exactly as a device gets it. */
    upk_h_client *c = NULL;
    if (connect_admin(e, &c, "watch2") != 0)
        return -1;
    int reason;
    int rc = -1;
    if (upk_h_client_subscribe(c, PREFIX "/dev/" DEV "/desired", 1, &reason) == 0 &&
        upk_h_client_wait_msg(c, 10, &msgbuf) == 0 && msgbuf.len > 0 &&
        msgbuf.len < UPK_H_PAYLOAD_MAX) {
        e->legit = malloc(msgbuf.len);
        if (e->legit != NULL) {
            memcpy(e->legit, msgbuf.payload, msgbuf.len);
            e->legit_len = msgbuf.len;
            rc = 0;
        }
    }
    upk_h_client_close(c);
    return rc;
}

/* Setup failures say where, since cmocka only reports "GROUP SETUP". */
#define SETUP_FAIL()                                            \
    do {                                                        \
        fprintf(stderr, "setup failed at line %d\n", __LINE__); \
        return -1;                                              \
    } while (0)

static int setup(void **state)
{
    hx *e = calloc(1, sizeof(*e));
    if (e == NULL)
        SETUP_FAIL();
    *state = e;
    if (upk_h_tmpdir(e->dir, sizeof(e->dir)) != 0)
        SETUP_FAIL();
    e->chunk_status = -1;
    char cfg[4096];
    const char *users[] = {"ctl", "alice", "root", "watch", "watch2"};
    if (upk_h_write_file(e->dir, "passwd", "") != 0 ||
        upk_h_write_file(e->dir, "fleet.secret", SECRET "\n") != 0 ||
        upk_h_write_file(e->dir, "ctl.pw", "ctl-pw\n") != 0 ||
        upk_h_write_file(e->dir, "alice.pw", "alice-pw\n") != 0)
        SETUP_FAIL();
    for (size_t i = 0; i < sizeof(users) / sizeof(users[0]); i++) {
        char pw[64];
        snprintf(pw, sizeof(pw), "%s-pw", users[i]);
        if (add_user(e->dir, users[i], pw) != 0)
            SETUP_FAIL();
    }
    /* Lockout thresholds high: the login cases fail on purpose from
     * 127.0.0.1 and must not lock out the real clients. */
    snprintf(cfg, sizeof(cfg),
             "{\"password_file\":\"passwd\",\"fleet_secret_file\":\"fleet.secret\","
             "\"accounts\":{\"ctl\":\"controller\",\"alice\":\"operator\",\"root\":\"admin\","
             "\"watch\":\"admin\",\"watch2\":\"admin\"},\"stats_interval_seconds\":1,"
             "\"lockout\":{\"max_failures_per_username\":100000,"
             "\"max_failures_per_address\":100000}}");
    if (upk_h_write_file(e->dir, "upkeep.json", cfg) != 0)
        SETUP_FAIL();
    snprintf(cfg, sizeof(cfg),
             "allow_anonymous false\nplugin %s\nplugin_opt_config %s/upkeep.json\n"
             "log_type all\n",
             UPK_BROKER_PLUGIN, e->dir);
    if (upk_h_broker_start(&e->b, e->dir, cfg, 10.0) != 0)
        SETUP_FAIL();
    char keyp[UPK_H_PATH_MAX + 16];
    snprintf(keyp, sizeof(keyp), "%s/rel", e->dir);
    char *kg[] = {(char *)UPK_BIN, "keygen", "--out", keyp, NULL};
    if (run_wait(kg, NULL, 30) != 0)
        SETUP_FAIL();
    snprintf(keyp, sizeof(keyp), "%s/rel.key", e->dir);
    char *pem = NULL;
    size_t pl = 0;
    if (upk_fs_read(keyp, 65536, &pem, &pl) != UPK_OK ||
        upk_key_load_pem(pem, pl, &e->rel) != UPK_OK || upk_key_generate(&e->rogue) != UPK_OK) {
        free(pem);
        SETUP_FAIL();
    }
    free(pem);
    for (size_t i = 0; i < ART_LEN; i++)
        e->art[i] = (uint8_t)(i * 131 + 17);
    upk_sha256_buf(e->art, ART_LEN, e->art_sha);
    char artp[UPK_H_PATH_MAX + 16];
    snprintf(artp, sizeof(artp), "%s/image.bin", e->dir);
    if (upk_fs_write_atomic(artp, e->art, ART_LEN) != UPK_OK)
        SETUP_FAIL();
    snprintf(e->target_path, sizeof(e->target_path), "%s/target.bin", e->dir);
    snprintf(e->installed_path, sizeof(e->installed_path), "%s/agent/installed.json", e->dir);

    /* Clients first, so the observer sees everything from the start. */
    int reason;
    if (connect_admin(e, &e->obs, "watch") != 0 ||
        upk_h_client_subscribe(e->obs, PREFIX "/#", 1, &reason) != 0 ||
        connect_admin(e, &e->inj, "root") != 0 || connect_evil(e) != 0 ||
        upk_h_client_connect(&e->op, e->b.port, "alice", "alice", "alice-pw", &reason) != 0 ||
        upk_h_client_subscribe(e->op, PREFIX "/ctl/resp/alice", 1, &reason) != 0)
        SETUP_FAIL();
    snprintf(cfg, sizeof(cfg),
             "{\"data_dir\":\"%s/data\",\"broker\":\"tcp://127.0.0.1:%d\",\"username\":\"ctl\","
             "\"password_file\":\"%s/ctl.pw\",\"client_id\":\"ctl\",\"release_keys\":"
             "[\"%s/rel.pub\"],\"tick_ms\":100}",
             e->dir, e->b.port, e->dir, e->dir);
    if (upk_h_write_file(e->dir, "serve.json", cfg) != 0 || start_serve(e) != 0 ||
        start_agent(e) != 0) {
        dump_all(e);
        SETUP_FAIL();
    }
    if (legit_update(e) != 0)
        SETUP_FAIL();
    if (!file_sha(e->installed_path, e->base_installed) ||
        !file_sha(e->target_path, e->base_target) || memcmp(e->art_sha, e->base_target, 32) != 0)
        SETUP_FAIL();
    e->base_releases = op_data(e, "release.list");
    e->base_campaigns = op_data(e, "campaign.list");
    if (e->base_releases == NULL || e->base_campaigns == NULL)
        SETUP_FAIL();
    return 0;
}

static int teardown(void **state)
{
    hx *e = *state;
    if (e == NULL)
        return 0;
    upk_h_client_close(e->op);
    upk_h_client_close(e->evil);
    upk_h_client_close(e->inj);
    upk_h_client_close(e->obs);
    stop_pid(&e->agent);
    stop_pid(&e->serve);
    upk_h_broker_stop(&e->b);
    /* In the sanitizer build serve and the agent report there, at exit too. */
    int rc = 0;
    static const char *const logs[] = {"serve.log", "agent.log"};
    for (size_t i = 0; i < 2 && e->dir[0] != '\0'; i++)
        if (log_has(e, logs[i], 0, "Sanitizer") || log_has(e, logs[i], 0, "runtime error:")) {
            fprintf(stderr, "sanitizer report in %s\n", logs[i]);
            dump_file(e->dir, logs[i]);
            rc = -1;
        }
    if (e->dir[0] != '\0') {
        if (getenv("UPK_KEEP") == NULL)
            upk_h_rmtree(e->dir);
        else
            fprintf(stderr, "kept %s\n", e->dir);
    }
    upk_key_free(e->rel);
    upk_key_free(e->rogue);
    cJSON_Delete(e->stats);
    free(e->legit);
    free(e->base_releases);
    free(e->base_campaigns);
    free(e);
    return rc;
}

/* ------------------------------------------------------------ raw login */

static size_t put_str(uint8_t *p, const char *s, size_t n)
{
    p[0] = (uint8_t)(n >> 8);
    p[1] = (uint8_t)n;
    memcpy(p + 2, s, n);
    return n + 2;
}

/* Reads until n bytes are in buf (bounded by the socket timeout); the
 * number read, short when the peer closed. */
static size_t read_some(int fd, uint8_t *buf, size_t cap, size_t n)
{
    size_t got = 0;
    ssize_t r;
    while (got < n && got < cap && (r = read(fd, buf + got, cap - got)) > 0)
        got += (size_t)r;
    return got;
}

/* Puts the MQTT fixed header (type byte, variable-length size) into p. */
static size_t put_fixed(uint8_t *p, uint8_t type, size_t body)
{
    size_t n = 0;
    p[n++] = type;
    for (size_t rem = body;;) {
        uint8_t b = (uint8_t)(rem % 128);
        rem /= 128;
        p[n++] = (uint8_t)(b | (rem > 0 ? 0x80 : 0));
        if (rem == 0)
            break;
    }
    return n;
}

/* Sends one MQTT 5 CONNECT (clean start, client id, username, password) over
 * a plain socket and returns the CONNACK reason code, or -1 when the broker
 * closed the connection without one. On 0 with fd_out set, the connection
 * stays open in *fd_out. A hand-made packet, because Paho refuses to send a
 * NUL inside a string or a wildcard in a topic, and its connect in a busy
 * process is slow. */
static int raw_login(int port, const char *cid, size_t cid_len, const char *user, size_t user_len,
                     const char *pass, int *fd_out)
{
    size_t plen = strlen(pass), body = 10 + 1 + 2 + cid_len + 2 + user_len + 2 + plen;
    uint8_t *pkt = malloc(body + 8);
    if (pkt == NULL || cid_len > 65535 || user_len > 65535)
        fail_msg("raw_login: bad arguments");
    size_t n = put_fixed(pkt, 0x10, body);
    n += put_str(pkt + n, "MQTT", 4);
    pkt[n++] = 5;    /* protocol version */
    pkt[n++] = 0xc2; /* username, password, clean start */
    pkt[n++] = 0;
    pkt[n++] = 60; /* keep alive */
    pkt[n++] = 0;  /* no properties */
    n += put_str(pkt + n, cid, cid_len);
    n += put_str(pkt + n, user, user_len);
    n += put_str(pkt + n, pass, plen);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {10, 0};
    int reason = -1;
    if (fd >= 0 && setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) == 0 &&
        connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0 && write(fd, pkt, n) == (ssize_t)n) {
        uint8_t ack[64];
        if (read_some(fd, ack, 4, 4) == 4 && ack[0] == 0x20) {
            reason = ack[3];
            size_t rest = ack[1] > 2 ? (size_t)ack[1] - 2 : 0; /* CONNACK properties */
            if (rest > 0 && read_some(fd, ack, sizeof(ack), rest) != rest)
                reason = -1;
        }
    }
    if (reason == 0 && fd_out != NULL) {
        *fd_out = fd;
        fd = -1;
    }
    if (fd >= 0)
        close(fd);
    free(pkt);
    return reason;
}

/* Publishes at QoS 1 on a raw connection and returns the PUBACK reason
 * code, or -1 when the broker closed the connection instead. */
static int raw_publish(int fd, const char *topic, size_t tlen, const void *payload, size_t plen)
{
    size_t body = 2 + tlen + 2 + 1 + plen;
    uint8_t *pkt = malloc(body + 8);
    if (pkt == NULL || tlen > 65535)
        fail_msg("raw_publish: bad arguments");
    size_t n = put_fixed(pkt, 0x32, body); /* PUBLISH, QoS 1 */
    n += put_str(pkt + n, topic, tlen);
    pkt[n++] = 0;
    pkt[n++] = 1; /* packet id */
    pkt[n++] = 0; /* no properties */
    memcpy(pkt + n, payload, plen);
    n += plen;
    int reason = -1;
    uint8_t ack[64];
    /* PUBACK: 0x40, length, packet id, then a reason code when length >= 3. */
    if (write(fd, pkt, n) == (ssize_t)n && read_some(fd, ack, 2, 2) == 2 && ack[0] == 0x40 &&
        ack[1] >= 2 && ack[1] < sizeof(ack) - 2 &&
        read_some(fd, ack + 2, (size_t)ack[1], (size_t)ack[1]) == (size_t)ack[1])
        reason = ack[1] >= 3 ? ack[4] : 0;
    free(pkt);
    return reason;
}

/* ------------------------------------------------------------ the corpus */

typedef struct hcase {
    int line;
    char name[64];
    char actor[32];
    char topic[256];
    char payload[512];
    char expect[512];
} hcase;

static void trim(char *s)
{
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n'))
        s[--n] = '\0';
    size_t k = 0;
    while (s[k] == ' ' || s[k] == '\t')
        k++;
    memmove(s, s + k, n - k + 1);
}

/* Reads corpus.txt: "name | actor | topic | payload | expectations". */
static size_t load_corpus(hcase *out, size_t cap)
{
    FILE *f = fopen(UPK_HOSTILE_CORPUS, "r");
    assert_non_null(f);
    char line[2048];
    size_t n = 0;
    int ln = 0;
    while (fgets(line, sizeof(line), f) != NULL && n < cap) {
        ln++;
        trim(line);
        if (line[0] == '\0' || line[0] == '#')
            continue;
        char *field[5];
        int k = 0;
        char *p = line;
        while (k < 5) {
            field[k++] = p;
            char *bar = strstr(p, " | ");
            if (bar == NULL)
                break;
            *bar = '\0';
            p = bar + 3;
        }
        if (k != 5)
            fail_msg("corpus.txt:%d: want 5 fields separated by ' | '", ln);
        hcase *c = &out[n++];
        c->line = ln;
        snprintf(c->name, sizeof(c->name), "%s", field[0]);
        snprintf(c->actor, sizeof(c->actor), "%s", field[1]);
        snprintf(c->topic, sizeof(c->topic), "%s", field[2]);
        snprintf(c->payload, sizeof(c->payload), "%s", field[3]);
        snprintf(c->expect, sizeof(c->expect), "%s", field[4]);
    }
    fclose(f);
    return n;
}

/* Nothing changed: processes alive, the agent's disk, the store, the
 * device's retained state. On a change, why says what. */
static bool unchanged(hx *e, char *why, size_t cap)
{
    uint8_t s[32];
    const char *w = NULL;
    if (!alive(e->b.pid))
        w = "mosquitto died";
    else if (!alive(e->serve))
        w = "upkeep serve died";
    else if (!alive(e->agent))
        w = "upkeep-agent died";
    else if (!file_sha(e->installed_path, s) || memcmp(s, e->base_installed, 32) != 0)
        w = "the agent's installed.json changed";
    else if (!file_sha(e->target_path, s) || memcmp(s, e->base_target, 32) != 0)
        w = "the installed image changed";
    if (w == NULL) {
        char *r = op_data(e, "release.list"), *c = op_data(e, "campaign.list");
        if (r == NULL || c == NULL || strcmp(r, e->base_releases) != 0 ||
            strcmp(c, e->base_campaigns) != 0)
            w = "the controller's releases or campaigns changed";
        free(r);
        free(c);
    }
    pump(e, 0.0);
    if (w == NULL && (!e->have_state || strcmp(e->state.release, "fw") != 0 ||
                      strcmp(e->state.version, "2.0") != 0 || e->state.security_version != 5))
        w = "the retained state of " DEV " changed";
    if (w != NULL)
        snprintf(why, cap, "%s (state release=%s version=%s secver=%" PRIu64 ")", w,
                 e->state.release, e->state.version, e->state.security_version);
    return w == NULL;
}

static upk_err err_by_name(const char *name)
{
    for (int k = 0; k < 256; k++)
        if (strcmp(upk_err_str((upk_err)k), name) == 0)
            return (upk_err)k;
    fail_msg("unknown error name %s", name);
    return UPK_E_INTERNAL;
}

/* Publishes a fresh malformed desired and checks that its rejection is the
 * first event since index from: the case before it sent no event. */
static bool agent_quiet_since(hx *e, size_t from)
{
    char marker[32];
    int n = snprintf(marker, sizeof(marker), "marker-%u", ++e->marker_seq);
    int reason;
    if (upk_h_client_publish(e->inj, PREFIX "/dev/" DEV "/desired", marker, (size_t)n, 1, false,
                             NULL, &reason) != 0 ||
        !wait_event(e, from, UPK_STATUS_REJECTED, UPK_E_JSON_INVALID, 15))
        return false;
    return e->ev[from].step == UPK_STATUS_REJECTED && e->ev[from].error == UPK_E_JSON_INVALID;
}

/* Checks one expectation "key=value" of case c, waiting (bounded) for it. */
static bool expect_one(hx *e, const char *topic, const char *key, const char *val, int ack,
                       const cJSON *resp, size_t ev_from, const long logs_from[3])
{
    double end = upk_h_now() + 15;
    if (strcmp(key, "ack") == 0)
        return ack == (int)strtol(val, NULL, 0);
    if (strcmp(key, "resp") == 0) {
        if (resp == NULL)
            return false;
        bool ok = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(resp, "ok"));
        const char *err = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(resp, "error"));
        return strcmp(val, "OK") == 0 ? ok : (!ok && err != NULL && strcmp(err, val) == 0);
    }
    if (strcmp(key, "event") == 0) {
        char step[32];
        snprintf(step, sizeof(step), "%s", val);
        char *slash = strchr(step, '/');
        assert_non_null(slash);
        *slash = '\0';
        upk_status st = UPK_STATUS_IDLE;
        for (int k = 0; k <= UPK_STATUS_REJECTED; k++)
            if (strcmp(upk_status_str((upk_status)k), step) == 0)
                st = (upk_status)k;
        return wait_event(e, ev_from, st, err_by_name(slash + 1), 15);
    }
    if (strcmp(key, "broker") == 0 || strcmp(key, "serve") == 0 || strcmp(key, "agent") == 0) {
        int i = key[0] == 'b' ? 0 : key[0] == 's' ? 1 : 2;
        const char *f = i == 0 ? "mosquitto.log" : i == 1 ? "serve.log" : "agent.log";
        while (!log_has(e, f, logs_from[i], val)) {
            if (upk_h_now() > end)
                return false;
            pump(e, 0.1);
        }
        return true;
    }
    if (strcmp(key, "sender") == 0) {
        while (strcmp(e->last_sender_topic, topic) != 0) {
            if (upk_h_now() > end)
                return false;
            pump(e, 0.1);
        }
        return e->last_sender_count == 1 && strcmp(e->last_sender, val) == 0;
    }
    if (strcmp(key, "chunk") == 0) {
        while (e->chunk_status != (int)strtol(val, NULL, 10)) {
            if (upk_h_now() > end)
                return false;
            pump(e, 0.1);
        }
        return true;
    }
    if (strcmp(key, "quiet") == 0)
        return agent_quiet_since(e, ev_from);
    if (strcmp(key, "devnot") == 0) {
        /* The controller's record of dev-a does not contain val. */
        char req[128], id[32];
        snprintf(id, sizeof(id), "d%u", ++e->id_seq);
        int n = snprintf(
            req, sizeof(req),
            "{\"v\":1,\"id\":\"%s\",\"cmd\":\"device.show\",\"args\":{\"id\":\"" DEV "\"}}", id);
        int reason;
        if (upk_h_client_publish(e->op, PREFIX "/ctl/req/alice", req, (size_t)n, 1, false, NULL,
                                 &reason) != 0)
            return false;
        cJSON *r = op_reply(e, id, 10);
        char *text = r != NULL ? cJSON_PrintUnformatted(r) : NULL;
        bool ok = text != NULL && cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "ok")) &&
                  strstr(text, "\"fw\"") != NULL && strstr(text, val) == NULL;
        if (!ok)
            fprintf(stderr, "device.show " DEV ": %s\n", text != NULL ? text : "(no reply)");
        free(text);
        cJSON_Delete(r);
        return ok;
    }
    fail_msg("unknown expectation %s", key);
    return false;
}

/* Feeds one case and checks its expectations, then that nothing changed. */
static void run_case(hx *e, const hcase *c)
{
    size_t tlen = 0, plen = 0;
    char *topic = expand(e, c->topic, &tlen);
    char *payload = expand(e, c->payload, &plen);
    if (topic == NULL || payload == NULL)
        fail_msg("corpus.txt:%d: cannot expand topic or payload", c->line);
    pump(e, 0.0);
    /* Counters the case expects to rise, as they are now. */
    char exp[512];
    snprintf(exp, sizeof(exp), "%s", c->expect);
    double stat_before[8];
    char stat_name[8][32];
    int nstat = 0;
    for (char *p = strstr(exp, "stat="); p != NULL && nstat < 8; p = strstr(p + 5, "stat=")) {
        if (sscanf(p + 5, "%31[a-z_]", stat_name[nstat]) != 1)
            fail_msg("corpus.txt:%d: bad stat=", c->line);
        stat_before[nstat] = stat_of(e, stat_name[nstat]);
        nstat++;
    }
    long logs_from[3] = {log_size(e, "mosquitto.log"), log_size(e, "serve.log"),
                         log_size(e, "agent.log")};
    size_t ev_from = e->nev;
    e->chunk_status = -1;
    e->last_sender_topic[0] = '\0';
    int ack = 0, reason = 0, rc = 0;
    bool want_resp = strstr(c->expect, "resp=") != NULL;
    if (strcmp(c->actor, "op") == 0 || strcmp(c->actor, "op-forged") == 0) {
        const char *forged = c->actor[2] == '-' ? "admin:alice" : NULL;
        rc = upk_h_client_publish(e->op, topic, payload, plen, 1, false, forged, &reason);
    } else if (strcmp(c->actor, "admin") == 0) {
        rc = upk_h_client_publish(e->inj, topic, payload, plen, 1, false, NULL, &reason);
    } else if (strcmp(c->actor, "evil") == 0 || strcmp(c->actor, "evil-forged") == 0) {
        const char *forged = c->actor[4] == '-' ? "device:" DEV : NULL;
        rc = upk_h_client_publish(e->evil, topic, payload, plen, 1, false, forged, &reason);
    } else if (strcmp(c->actor, "evil-sub") == 0) {
        rc = upk_h_client_subscribe(e->evil, topic, 1, &reason);
    } else if (strcmp(c->actor, "login") == 0) {
        /* topic = client id, payload = username */
        /* dev-evil logs in with its real key: only the client id is wrong. */
        char pw[UPK_DEVKEY_LEN + 1] = "not-the-password";
        if (strcmp(payload, EVIL) == 0)
            assert_int_equal(upk_devkey_derive(SECRET, strlen(SECRET), EVIL, pw, sizeof(pw)),
                             UPK_OK);
        reason = raw_login(e->b.port, topic, tlen, payload, plen, pw, NULL);
        rc = reason == 0 ? 0 : -1;
    } else if (strcmp(c->actor, "raw") == 0) {
        /* Device dev-raw on a raw connection: for what Paho will not send. */
        char pw[UPK_DEVKEY_LEN + 1];
        int fd = -1;
        assert_int_equal(upk_devkey_derive(SECRET, strlen(SECRET), "dev-raw", pw, sizeof(pw)),
                         UPK_OK);
        assert_int_equal(raw_login(e->b.port, "dev-raw", 7, "dev-raw", 7, pw, &fd), 0);
        reason = raw_publish(fd, topic, tlen, payload, plen);
        rc = reason == 0 ? 0 : -1;
        close(fd);
    } else {
        fail_msg("corpus.txt:%d: unknown actor %s", c->line, c->actor);
    }
    ack = rc == 0 ? 0 : reason;
    /* A ctl request from anyone is answered on ctl/resp/alice. */
    cJSON *resp = rc == 0 && want_resp ? op_reply(e, NULL, 10) : NULL;
    /* Expectations: "key=value" separated by " ; ". */
    char *cur = exp;
    while (cur != NULL && *cur != '\0') {
        char *semi = strstr(cur, " ; ");
        if (semi != NULL)
            *semi = '\0';
        char *eq = strchr(cur, '=');
        if (eq == NULL)
            fail_msg("corpus.txt:%d: expectation without '=': %s", c->line, cur);
        *eq = '\0';
        const char *key = cur, *val = eq + 1;
        bool ok;
        if (strcmp(key, "stat") == 0) {
            int k = 0;
            while (k < nstat && strcmp(stat_name[k], val) != 0)
                k++;
            ok = k < nstat && stat_rose(e, val, stat_before[k]);
        } else {
            ok = expect_one(e, topic, key, val, ack, resp, ev_from, logs_from);
        }
        if (!ok) {
            char *r = resp != NULL ? cJSON_PrintUnformatted(resp) : NULL;
            dump_all(e);
            fail_msg("corpus.txt:%d %s: expectation %s=%s not met (ack=%d resp=%s)", c->line,
                     c->name, key, val, ack, r != NULL ? r : "none");
        }
        cur = semi != NULL ? semi + 3 : NULL;
    }
    cJSON_Delete(resp);
    /* A case may get the evil device disconnected; it comes back. */
    if (e->evil != NULL && !upk_h_client_connected(e->evil)) {
        upk_h_client_close(e->evil);
        e->evil = NULL;
        assert_int_equal(connect_evil(e), 0);
    }
    char why[512];
    if (!unchanged(e, why, sizeof(why))) {
        dump_all(e);
        fail_msg("corpus.txt:%d %s: %s", c->line, c->name, why);
    }
    free(topic);
    free(payload);
}

static void corpus_each_refused_with_named_error_and_nothing_changed(void **state)
{
    hx *e = *state;
    static hcase cases[CASES_MAX];
    size_t n = load_corpus(cases, CASES_MAX);
    assert_true(n >= 40);
    const char *only = getenv("UPK_HOSTILE_ONLY");
    size_t ran = 0;
    for (size_t i = 0; i < n; i++) {
        if (only != NULL && strstr(cases[i].name, only) == NULL)
            continue;
        fprintf(stderr, "[ case ] %s\n", cases[i].name);
        run_case(e, &cases[i]);
        ran++;
    }
    fprintf(stderr, "%zu hostile cases passed\n", ran);
}

/* ------------------------------------------------------------ chunks */

/* Publishes as admin a chunk of artifact sha at off: len bytes of data,
 * with claim_len in the header. */
static void send_chunk(hx *e, const uint8_t sha[32], uint64_t off, const uint8_t *data,
                       uint32_t len, uint32_t claim_len)
{
    static uint8_t buf[UPK_CHUNK_HDR_LEN + CHUNK_SIZE];
    upk_chunk_hdr h;
    memset(&h, 0, sizeof(h));
    memcpy(h.artifact, sha, 32);
    h.offset = off;
    h.length = claim_len;
    h.status = UPK_CHUNK_OK;
    upk_chunk_hdr_write(&h, buf);
    assert_true(len <= CHUNK_SIZE);
    memcpy(buf + UPK_CHUNK_HDR_LEN, data, len);
    int reason;
    assert_int_equal(upk_h_client_publish(e->inj, PREFIX "/dev/" DEV "/chunk/data", buf,
                                          UPK_CHUNK_HDR_LEN + len, 0, false, NULL, &reason),
                     0);
}

/* Answers the chunk requests recorded since *served, last first, with data
 * from art (len bytes); the record restarts when full. */
static void answer_reversed(hx *e, const uint8_t sha[32], const uint8_t *art, size_t len,
                            size_t *served)
{
    for (size_t k = e->nreq; k > *served; k--) {
        uint64_t off = e->req_off[k - 1];
        uint32_t l = e->req_len[k - 1];
        if (off < len) {
            uint32_t n = off + l > len ? (uint32_t)(len - off) : l;
            send_chunk(e, sha, off, art + off, n, n);
        }
    }
    *served = e->nreq;
    if (e->nreq >= REQS_MAX)
        e->nreq = *served = 0;
}

static void chunks_corrupt_truncated_unasked_and_reordered(void **state)
{
    hx *e = *state;
    static uint8_t art[ART2_LEN], bad[ART2_LEN];
    uint8_t sha[32], other[32], s[32];
    for (size_t i = 0; i < ART2_LEN; i++)
        art[i] = (uint8_t)(i * 7 + 3);
    upk_sha256_buf(art, ART2_LEN, sha);
    memcpy(bad, art, sizeof(bad));
    bad[100] ^= 0xff;
    memset(other, 0x5a, sizeof(other));
    upk_manifest m;
    base_manifest(e, &m);
    m.size = m.target_size = ART2_LEN;
    memcpy(m.sha256, sha, 32);
    memcpy(m.target_sha256, sha, 32);

    /* The test plays the controller: serve is stopped so it answers nothing. */
    assert_int_equal(kill(e->serve, SIGSTOP), 0);
    e->ack_events = true;

    /* 1. Every chunk of the right artifact, one byte wrong: HASH_MISMATCH,
     * nothing installed. */
    snprintf(m.version, sizeof(m.version), "3.1");
    size_t len = 0;
    char *d = desired_for(&m, "corrupt", e->rel, e->rel, &len);
    assert_non_null(d);
    size_t ev_from = e->nev;
    e->nreq = 0;
    int reason;
    assert_int_equal(upk_h_client_publish(e->inj, PREFIX "/dev/" DEV "/desired", d, len, 1, false,
                                          NULL, &reason),
                     0);
    free(d);
    double end = upk_h_now() + 30;
    size_t served = 0;
    while (!wait_event(e, ev_from, UPK_STATUS_REJECTED, UPK_E_HASH_MISMATCH, 0.0)) {
        if (upk_h_now() > end) {
            dump_all(e);
            fail_msg("corrupt download was not rejected with HASH_MISMATCH");
        }
        pump(e, 0.1);
        answer_reversed(e, sha, bad, ART2_LEN, &served);
    }
    assert_true(file_sha(e->target_path, s));
    assert_memory_equal(s, e->base_target, 32);
    assert_true(file_sha(e->installed_path, s));
    assert_memory_equal(s, e->base_installed, 32);

    /* 2. A truncated chunk and one of another artifact are dropped with
     * their codes; then every batch answered last-first assembles. */
    snprintf(m.version, sizeof(m.version), "3.0");
    m.security_version = 6;
    d = desired_for(&m, "reorder", e->rel, e->rel, &len);
    assert_non_null(d);
    ev_from = e->nev;
    long agent_from = log_size(e, "agent.log");
    e->nreq = 0;
    assert_int_equal(upk_h_client_publish(e->inj, PREFIX "/dev/" DEV "/desired", d, len, 1, false,
                                          NULL, &reason),
                     0);
    free(d);
    end = upk_h_now() + 20;
    while (e->nreq < 1) {
        assert_true(upk_h_now() < end);
        pump(e, 0.1);
    }
    send_chunk(e, sha, e->req_off[0], art + e->req_off[0], 100, e->req_len[0]); /* truncated */
    send_chunk(e, other, e->req_off[0], art + e->req_off[0], e->req_len[0], e->req_len[0]);
    end = upk_h_now() + 15;
    while (!log_has(e, "agent.log", agent_from, "error=CHUNK_INVALID") ||
           !log_has(e, "agent.log", agent_from, "error=CHUNK_UNEXPECTED")) {
        if (upk_h_now() > end) {
            dump_all(e);
            fail_msg("the agent did not log CHUNK_INVALID and CHUNK_UNEXPECTED");
        }
        pump(e, 0.1);
    }
    served = 0;
    end = upk_h_now() + 40;
    while (!wait_event(e, ev_from, UPK_STATUS_COMMITTED, UPK_OK, 0.0)) {
        if (upk_h_now() > end) {
            dump_all(e);
            fail_msg("the reordered download did not commit");
        }
        pump(e, 0.1);
        answer_reversed(e, sha, art, ART2_LEN, &served);
    }
    assert_true(file_sha(e->target_path, s));
    assert_memory_equal(s, sha, 32);
    assert_int_equal(kill(e->serve, SIGCONT), 0);
    e->ack_events = false;
    assert_true(alive(e->serve));
    assert_true(alive(e->agent));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(corpus_each_refused_with_named_error_and_nothing_changed),
        cmocka_unit_test(chunks_corrupt_truncated_unasked_and_reordered),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
