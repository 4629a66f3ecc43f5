/* Agent download benchmark: one upkeep-agent process, a plain mosquitto and
 * the controller stand-in on 127.0.0.1; publishes a desired release of SIZE
 * MiB and reports the chunked download throughput (desired published ->
 * "verifying" event, i.e. every byte received, written and hashed) and the
 * time to commit. Also prints the agent's RSS when idle and its peak.
 *
 *   upk_agent_bench AGENT_BIN MOSQUITTO_BIN [SIZE_MIB] [CHUNK] [IN_FLIGHT] */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "standin.h"
#include "upkeep/fs.h"

static double now_s(void)
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

/* VmRSS / VmHWM of pid in KiB; -1 when unreadable. */
static long proc_kib(pid_t pid, const char *field)
{
    char p[64], line[256];
    (void)snprintf(p, sizeof(p), "/proc/%d/status", (int)pid);
    FILE *f = fopen(p, "r");
    if (f == NULL)
        return -1;
    long v = -1;
    size_t fl = strlen(field);
    while (fgets(line, sizeof(line), f) != NULL)
        if (strncmp(line, field, fl) == 0 && line[fl] == ':')
            v = strtol(line + fl + 1, NULL, 10);
    fclose(f);
    return v;
}

/* utime+stime of pid in seconds; -1 when unreadable. */
static double proc_cpu_s(pid_t pid)
{
    char p[64], buf[1024];
    (void)snprintf(p, sizeof(p), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(p, "r");
    if (f == NULL)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *q = strrchr(buf, ')');
    if (q == NULL)
        return -1;
    unsigned long ut = 0, st = 0;
    /* fields after ")": state(3) ... utime(14) stime(15) */
    if (sscanf(q + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static void tick(uv_timer_t *t)
{
    (void)t;
}

typedef bool (*pred_fn)(standin *s, const void *arg);

static bool run_until(uv_loop_t *loop, standin *s, pred_fn p, const void *arg, double timeout)
{
    uv_timer_t t;
    (void)uv_timer_init(loop, &t);
    (void)uv_timer_start(&t, tick, 5, 5);
    double end = now_s() + timeout;
    bool ok = p(s, arg);
    while (!ok && now_s() < end) {
        (void)uv_run(loop, UV_RUN_ONCE);
        ok = p(s, arg);
    }
    uv_close((uv_handle_t *)&t, NULL);
    (void)uv_run(loop, UV_RUN_NOWAIT);
    return ok;
}

static bool p_connected(standin *s, const void *arg)
{
    (void)arg;
    return s->connected && s->have_state;
}

static bool p_step(standin *s, const void *arg)
{
    upk_status want = *(const upk_status *)arg;
    for (size_t i = 0; i < s->event_count; i++)
        if (s->events[i].step == want || upk_status_is_final(s->events[i].step))
            return true;
    return false;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s AGENT_BIN MOSQUITTO_BIN [SIZE_MIB] [CHUNK] [IN_FLIGHT]\n",
                argv[0]);
        return 2;
    }
    const char *agent_bin = argv[1], *mosq = argv[2];
    size_t mib = argc > 3 ? strtoul(argv[3], NULL, 10) : 64;
    unsigned long chunk = argc > 4 ? strtoul(argv[4], NULL, 10) : 65536;
    unsigned long inflight = argc > 5 ? strtoul(argv[5], NULL, 10) : 8;
    if (mib == 0 || mib > 4096 || chunk < 512 || chunk > UPK_CHUNK_MAX || inflight < 1 ||
        inflight > 64) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    (void)signal(SIGPIPE, SIG_IGN);
    char dir[256];
    const char *base = getenv("TMPDIR");
    (void)snprintf(dir, sizeof(dir), "%s/upk-bench-agent-XXXXXX", base && *base ? base : "/tmp");
    if (mkdtemp(dir) == NULL)
        return 1;
    int rc = 1;
    pid_t broker = 0, agent = 0;
    int port = free_port();
    char conf[512], text[2048], cfgp[512], keyp[512], url[64];
    (void)snprintf(conf, sizeof(conf), "%s/mosquitto.conf", dir);
    (void)snprintf(text, sizeof(text),
                   "listener %d 127.0.0.1\nallow_anonymous true\nuser root\n"
                   "max_packet_size 1048576\n",
                   port);
    if (upk_fs_write_atomic(conf, text, strlen(text)) != UPK_OK)
        goto out;
    broker = fork();
    if (broker == 0) {
        int fd = open("/dev/null", O_WRONLY);
        if (fd >= 0) {
            (void)dup2(fd, 1);
            (void)dup2(fd, 2);
        }
        execl(mosq, "mosquitto", "-c", conf, (char *)NULL);
        _exit(127);
    }
    double end = now_s() + 10;
    while (!can_connect(port) && now_s() < end) {
        struct timespec ts = {0, 20000000};
        nanosleep(&ts, NULL);
    }
    upk_key *key = NULL;
    char *pem = NULL;
    (void)snprintf(keyp, sizeof(keyp), "%s/release.pub", dir);
    if (upk_key_generate(&key) != UPK_OK || upk_key_public_pem(key, &pem) != UPK_OK ||
        upk_fs_write_atomic(keyp, pem, strlen(pem)) != UPK_OK)
        goto out;
    free(pem);
    (void)snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", port);
    (void)snprintf(cfgp, sizeof(cfgp), "%s/agent.json", dir);
    (void)snprintf(text, sizeof(text),
                   "{\"broker\":\"%s\",\"device_id\":\"bench-1\",\"hardware\":\"hw-1\","
                   "\"data_dir\":\"%s/data\",\"keys\":[\"%s\"],\"module\":\"file\","
                   "\"module_settings\":{\"path\":\"%s/app.bin\"},"
                   "\"limits\":{\"chunk_size\":%lu,\"chunks_in_flight\":%lu,"
                   "\"max_artifact_size\":%zu}}",
                   url, dir, keyp, dir, chunk, inflight, (mib + 1) << 20);
    if (upk_fs_write_atomic(cfgp, text, strlen(text)) != UPK_OK)
        goto out;
    agent = fork();
    if (agent == 0) {
        int fd = open("/dev/null", O_WRONLY);
        if (fd >= 0)
            (void)dup2(fd, 2);
        execl(agent_bin, "upkeep-agent", "-c", cfgp, "-l", "warn", (char *)NULL);
        _exit(127);
    }
    uv_loop_t loop;
    standin *s = calloc(1, sizeof(*s));
    if (s == NULL || uv_loop_init(&loop) != 0 || standin_init(s, &loop, url, "bench-1") != 0)
        goto out;
    if (!run_until(&loop, s, p_connected, NULL, 10)) {
        fprintf(stderr, "agent did not connect\n");
        goto out;
    }
    /* Idle: connected, state published, nothing to do. */
    struct timespec settle = {1, 0};
    nanosleep(&settle, NULL);
    long idle_rss = proc_kib(agent, "VmRSS");

    size_t len = mib << 20;
    uint8_t *art = malloc(len);
    if (art == NULL)
        goto out;
    for (size_t i = 0; i < len; i++)
        art[i] = (uint8_t)(i * 2654435761u >> 13);
    upk_manifest m;
    memset(&m, 0, sizeof(m));
    (void)snprintf(m.name, sizeof(m.name), "bench");
    (void)snprintf(m.version, sizeof(m.version), "1");
    m.security_version = 1;
    m.hw_count = 1;
    (void)snprintf(m.hw[0], sizeof(m.hw[0]), "hw-1");
    (void)snprintf(m.module, sizeof(m.module), "file");
    m.size = m.target_size = len;
    upk_sha256_buf(art, len, m.sha256);
    memcpy(m.target_sha256, m.sha256, UPK_SHA256_LEN);
    m.created = (int64_t)time(NULL) - 60;
    m.expires = m.created + 86400;
    standin_set_artifact(s, art, len);
    free(art);
    double cpu0 = proc_cpu_s(agent), bcpu0 = proc_cpu_s(broker);
    double t0 = now_s();
    if (standin_publish_desired(s, &m, "bench", key, false) != 0)
        goto out;
    upk_status verifying = UPK_STATUS_VERIFYING, committed = UPK_STATUS_COMMITTED;
    if (!run_until(&loop, s, p_step, &verifying, 600))
        goto out;
    double t1 = now_s();
    double cpu1 = proc_cpu_s(agent), bcpu1 = proc_cpu_s(broker);
    if (!run_until(&loop, s, p_step, &committed, 600))
        goto out;
    double t2 = now_s();
    double cpu2 = proc_cpu_s(agent);
    const upk_event_msg *last = standin_last_event(s);
    long peak = proc_kib(agent, "VmHWM");
    printf("artifact_mib=%zu chunk=%lu in_flight=%lu\n", mib, chunk, inflight);
    printf("download_s=%.3f download_mb_per_s=%.1f download_mib_per_s=%.1f\n", t1 - t0,
           (double)len / 1e6 / (t1 - t0), (double)len / 1048576.0 / (t1 - t0));
    printf("agent_cpu_s=%.3f agent_cpu_bound_mb_per_s=%.1f broker_cpu_s=%.3f\n", cpu1 - cpu0,
           cpu1 > cpu0 ? (double)len / 1e6 / (cpu1 - cpu0) : 0.0, bcpu1 - bcpu0);
    printf("to_commit_s=%.3f outcome=%s\n", t2 - t0,
           last != NULL ? upk_status_str(last->step) : "none");
    /* Download plus everything up to commit (re-hash of the written file,
     * install by the file module): the agent's whole CPU for the update. */
    printf("agent_cpu_to_commit_s=%.3f agent_cpu_to_commit_mb_per_s=%.1f\n", cpu2 - cpu0,
           cpu2 > cpu0 ? (double)len / 1e6 / (cpu2 - cpu0) : 0.0);
    printf("agent_idle_rss_kib=%ld agent_peak_rss_kib=%ld\n", idle_rss, peak);
    rc = last != NULL && last->step == UPK_STATUS_COMMITTED ? 0 : 1;
    standin_close(s);
    (void)uv_loop_close(&loop);
    free(s);
    upk_key_free(key);
out:
    if (agent > 0) {
        (void)kill(agent, SIGTERM);
        (void)waitpid(agent, NULL, 0);
    }
    if (broker > 0) {
        (void)kill(broker, SIGTERM);
        (void)waitpid(broker, NULL, 0);
    }
    char cmd[400];
    (void)snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", dir);
    return rc;
}
