/* Controller benchmark: one real mosquitto with upkeep_broker.so on a free
 * 127.0.0.1 port, `upkeep serve`, and N fake devices (upk_mqtt clients on one
 * libuv loop) that report state, follow their desired release and report
 * downloading + committed. Runs one campaign over all N devices and prints the
 * controller's CPU time (utime+stime from /proc/PID/stat) per device and per
 * status message, and the campaign's wall time.
 *
 *   upk_controller_bench UPKEEP_BIN PLUGIN_SO DEVICES [STAGES]
 *
 * Loopback only; everything it starts is stopped by pid; its temp dir is
 * removed at the end. Not a test: numbers depend on the machine. */
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "upkeep/devkey.h"
#include "upkeep/log.h"
#include "upkeep/manifest.h"
#include "upkeep/mqtt.h"
#include "upkeep/msg.h"

#define SECRET  "bench-fleet-secret-0123456789abcdef"
#define DEV_MAX 20000

struct dev {
    upk_mqtt *c;
    char id[32];
    int idx;
    bool connected, acted;
    uint64_t seq;
};

static struct dev *devs;
static int ndev, nconnected, ncommitted, nstarted;
static char work[256], upkeep_bin[1024];
static int port;
static pid_t broker_pid, serve_pid;
static uv_loop_t *loop;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int write_file(const char *name, const char *text)
{
    char p[512];
    snprintf(p, sizeof(p), "%s/%s", work, name);
    FILE *f = fopen(p, "w");
    if (f == NULL)
        return -1;
    fputs(text, f);
    return fclose(f);
}

static int run(char *const argv[], const char *out)
{
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(out != NULL ? out : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execvp(argv[0], argv);
        _exit(127);
    }
    int st = 0;
    if (pid < 0 || waitpid(pid, &st, 0) != pid)
        return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Runs `upkeep ARGS` as operator alice; stdout to work/out.txt. */
static int cli(const char *a1, const char *a2, const char *a3, const char *a4, const char *a5,
               const char *a6, const char *a7, const char *a8, const char *a9, const char *a10)
{
    char *argv[] = {upkeep_bin, (char *)a1, (char *)a2, (char *)a3, (char *)a4,  (char *)a5,
                    (char *)a6, (char *)a7, (char *)a8, (char *)a9, (char *)a10, NULL};
    char out[512];
    snprintf(out, sizeof(out), "%s/out.txt", work);
    return run(argv, out);
}

static long read_out(char *buf, size_t cap)
{
    char p[512];
    snprintf(p, sizeof(p), "%s/out.txt", work);
    FILE *f = fopen(p, "r");
    if (f == NULL)
        return -1;
    size_t n = fread(buf, 1, cap - 1, f);
    buf[n] = '\0';
    fclose(f);
    return (long)n;
}

static double proc_cpu_s(pid_t pid)
{
    char p[64], buf[4096];
    snprintf(p, sizeof(p), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(p, "r");
    if (f == NULL)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *s = strrchr(buf, ')');
    if (s == NULL)
        return -1;
    unsigned long ut = 0, st = 0;
    /* fields after ") ": state(3) ... utime(14) stime(15) */
    int field = 2;
    char *tok = s + 2;
    while (*tok != '\0' && field < 15) {
        if (*tok == ' ') {
            field++;
            if (field == 14)
                ut = strtoul(tok + 1, NULL, 10);
            if (field == 15)
                st = strtoul(tok + 1, NULL, 10);
        }
        tok++;
    }
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0)
        return -1;
    close(fd);
    return ntohs(a.sin_port);
}

static void publish_state(struct dev *d, const char *version, const char *campaign,
                          upk_status status)
{
    upk_state_msg m;
    memset(&m, 0, sizeof(m));
    snprintf(m.device, sizeof(m.device), "%s", d->id);
    snprintf(m.hw, sizeof(m.hw), "hw-a");
    snprintf(m.release, sizeof(m.release), "fw");
    snprintf(m.version, sizeof(m.version), "%s", version);
    snprintf(m.campaign, sizeof(m.campaign), "%s", campaign);
    m.security_version = strcmp(version, "1.0") == 0 ? 1 : 2;
    m.status = status;
    m.ts = time(NULL);
    char *json = NULL;
    size_t len = 0;
    char topic[128];
    snprintf(topic, sizeof(topic), "upkeep/v1/dev/%s/state", d->id);
    if (upk_state_encode(&m, &json, &len) == UPK_OK &&
        upk_mqtt_publish(d->c, topic, json, len, 1, true, NULL, NULL) != UPK_OK)
        fprintf(stderr, "state publish failed %s\n", d->id);
    free(json);
}

static void publish_event(struct dev *d, const char *campaign, upk_status step)
{
    upk_event_msg e;
    memset(&e, 0, sizeof(e));
    e.seq = ++d->seq;
    e.ts = time(NULL);
    snprintf(e.campaign, sizeof(e.campaign), "%s", campaign);
    snprintf(e.release, sizeof(e.release), "fw");
    snprintf(e.version, sizeof(e.version), "2.0");
    e.step = step;
    char *json = NULL;
    size_t len = 0;
    char topic[128];
    snprintf(topic, sizeof(topic), "upkeep/v1/dev/%s/events", d->id);
    if (upk_event_encode(&e, &json, &len) == UPK_OK &&
        upk_mqtt_publish(d->c, topic, json, len, 1, false, NULL, NULL) != UPK_OK)
        fprintf(stderr, "event publish failed %s\n", d->id);
    free(json);
}

static void on_connect(upk_mqtt *c, void *ud)
{
    struct dev *d = ud;
    char topic[128];
    snprintf(topic, sizeof(topic), "upkeep/v1/dev/%s/desired", d->id);
    if (upk_mqtt_subscribe(c, topic, 1) != UPK_OK)
        fprintf(stderr, "subscribe failed %s\n", d->id);
    if (!d->connected) {
        d->connected = true;
        nconnected++;
        publish_state(d, "1.0", "", UPK_STATUS_IDLE);
        snprintf(topic, sizeof(topic), "upkeep/v1/dev/%s/online", d->id);
        if (upk_mqtt_publish(c, topic, "1", 1, 1, true, NULL, NULL) != UPK_OK)
            fprintf(stderr, "online publish failed %s\n", d->id);
    }
}

static void on_message(upk_mqtt *c, const upk_mqtt_msg *m, void *ud)
{
    (void)c;
    struct dev *d = ud;
    if (m->len == 0 || d->acted)
        return;
    upk_desired_msg des;
    memset(&des, 0, sizeof(des));
    if (upk_desired_decode((const char *)m->payload, m->len, &des) != UPK_OK)
        return;
    d->acted = true;
    nstarted++;
    publish_event(d, des.campaign, UPK_STATUS_DOWNLOADING);
    publish_event(d, des.campaign, UPK_STATUS_COMMITTED);
    publish_state(d, "2.0", des.campaign, UPK_STATUS_COMMITTED);
    ncommitted++;
    upk_desired_cleanup(&des);
}

static void on_disconnect(upk_mqtt *c, upk_err err, void *ud)
{
    (void)c;
    (void)err;
    (void)ud;
}

static int next_start;
static uv_timer_t start_timer;

static void start_batch(uv_timer_t *t)
{
    for (int k = 0; k < 250 && next_start < ndev; k++, next_start++) {
        struct dev *d = &devs[next_start];
        char pw[UPK_DEVKEY_LEN + 1], url[64];
        if (upk_devkey_derive(SECRET, strlen(SECRET), d->id, pw, sizeof(pw)) != UPK_OK)
            exit(1);
        snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", port);
        upk_mqtt_opts o;
        memset(&o, 0, sizeof(o));
        o.url = url;
        o.client_id = d->id;
        o.username = d->id;
        o.password = pw;
        o.clean_start = true;
        o.keepalive_s = 300;
        o.reconnect_min_ms = 1000;
        o.reconnect_max_ms = 10000;
        o.on_connect = on_connect;
        o.on_message = on_message;
        o.on_disconnect = on_disconnect;
        o.userdata = d;
        if (upk_mqtt_new(loop, &o, &d->c) != UPK_OK || upk_mqtt_start(d->c) != UPK_OK) {
            fprintf(stderr, "client %s failed\n", d->id);
            exit(1);
        }
    }
    if (next_start >= ndev)
        uv_timer_stop(t);
}

/* Runs the loop until cond() or timeout_s. */
static bool spin(bool (*cond)(void), double timeout_s)
{
    double end = now_s() + timeout_s;
    while (!cond() && now_s() < end)
        uv_run(loop, UV_RUN_NOWAIT), usleep(1000);
    return cond();
}

static bool all_connected(void)
{
    return nconnected == ndev;
}

static bool all_committed(void)
{
    return ncommitted == ndev;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s UPKEEP_BIN PLUGIN_SO DEVICES [STAGES]\n", argv[0]);
        return 2;
    }
    upk_log_set_level(UPK_LOG_WARN);
    snprintf(upkeep_bin, sizeof(upkeep_bin), "%s", argv[1]);
    const char *plugin = argv[2];
    long want = strtol(argv[3], NULL, 10);
    ndev = want > 0 && want <= DEV_MAX ? (int)want : 1000;
    const char *stages = argc > 4 ? argv[4] : "1%,10%,50%,100%";
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    snprintf(work, sizeof(work), "%s/upk-bench-ctl-XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (mkdtemp(work) == NULL)
        return 1;
    char buf[8192], p[512];
    port = free_port();
    snprintf(p, sizeof(p), "%s/passwd", work);
    write_file("passwd", "");
    char *pw1[] = {"mosquitto_passwd", "-b", p, "ctl", "ctl-pw", NULL};
    char *pw2[] = {"mosquitto_passwd", "-b", p, "alice", "alice-pw", NULL};
    if (run(pw1, NULL) != 0 || run(pw2, NULL) != 0) {
        fprintf(stderr, "mosquitto_passwd failed\n");
        return 1;
    }
    write_file("fleet.secret", SECRET "\n");
    write_file("ctl.pw", "ctl-pw\n");
    write_file("alice.pw", "alice-pw\n");
    write_file("upkeep.json",
               "{\"password_file\":\"passwd\",\"fleet_secret_file\":\"fleet.secret\","
               "\"accounts\":{\"ctl\":\"controller\",\"alice\":\"operator\"}}");
    snprintf(buf, sizeof(buf),
             "listener %d 127.0.0.1\nuser %s\nallow_anonymous false\nplugin %s\n"
             "plugin_opt_config %s/upkeep.json\nmax_queued_messages 1000000\n"
             "max_inflight_messages 1000\nlog_dest file %s/mosquitto.log\n",
             port, getpwuid(geteuid()) != NULL ? getpwuid(geteuid())->pw_name : "root", plugin,
             work, work);
    write_file("mosquitto.conf", buf);
    broker_pid = fork();
    if (broker_pid == 0) {
        snprintf(p, sizeof(p), "%s/mosquitto.conf", work);
        execlp("mosquitto", "mosquitto", "-c", p, (char *)NULL);
        execl("/usr/sbin/mosquitto", "mosquitto", "-c", p, (char *)NULL);
        _exit(127);
    }
    usleep(500000);
    if (waitpid(broker_pid, NULL, WNOHANG) != 0) {
        fprintf(stderr, "mosquitto did not start; see %s/mosquitto.log\n", work);
        return 1;
    }
    snprintf(p, sizeof(p), "%s/rel", work);
    char *kg[] = {upkeep_bin, "keygen", "--out", p, NULL};
    if (run(kg, NULL) != 0)
        return 1;
    snprintf(buf, sizeof(buf),
             "{\"data_dir\":\"%s/data\",\"broker\":\"tcp://127.0.0.1:%d\",\"username\":\"ctl\","
             "\"password_file\":\"%s/ctl.pw\",\"client_id\":\"ctl\",\"release_keys\":"
             "[\"%s/rel.pub\"],\"tick_ms\":200}",
             work, port, work, work);
    write_file("serve.json", buf);
    serve_pid = fork();
    if (serve_pid == 0) {
        snprintf(p, sizeof(p), "%s/serve.log", work);
        int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        dup2(fd, 1);
        dup2(fd, 2);
        snprintf(p, sizeof(p), "%s/serve.json", work);
        execl(upkeep_bin, upkeep_bin, "serve", "-c", p, (char *)NULL);
        _exit(127);
    }
    char broker_url[64], pwf[512];
    snprintf(broker_url, sizeof(broker_url), "tcp://127.0.0.1:%d", port);
    snprintf(pwf, sizeof(pwf), "%s/alice.pw", work);
    setenv("UPKEEP_BROKER", broker_url, 1);
    setenv("UPKEEP_USER", "alice", 1);
    setenv("UPKEEP_PASSWORD_FILE", pwf, 1);
    setenv("HOME", work, 1);
    for (int i = 0; i < 100 && cli("campaign", "list", "--timeout", "2", NULL, NULL, NULL, NULL,
                                   NULL, NULL) != 0;
         i++)
        ;
    /* Release. */
    snprintf(p, sizeof(p), "%s/image.bin", work);
    FILE *f = fopen(p, "w");
    for (int i = 0; i < 100000; i++)
        fputc(i & 0xff, f);
    fclose(f);
    char keyp[512];
    snprintf(keyp, sizeof(keyp), "%s/rel.key", work);
    char *rc[] = {upkeep_bin,  "release", "create",
                  p,           "--name",  "fw",
                  "--version", "2.0",     "--security-version",
                  "2",         "--hw",    "hw-a",
                  "--module",  "file",    "--expires",
                  "30d",       "--key",   keyp,
                  "--out",     work,      "--upload",
                  NULL};
    snprintf(buf, sizeof(buf), "%s/out.txt", work);
    if (run(rc, buf) != 0) {
        fprintf(stderr, "release create failed\n");
        return 1;
    }
    /* Devices. */
    loop = uv_default_loop();
    devs = calloc((size_t)ndev, sizeof(*devs));
    for (int i = 0; i < ndev; i++) {
        devs[i].idx = i;
        snprintf(devs[i].id, sizeof(devs[i].id), "bench-%05d", i);
    }
    double t_conn = now_s();
    uv_timer_init(loop, &start_timer);
    uv_timer_start(&start_timer, start_batch, 0, 100);
    if (!spin(all_connected, 300)) {
        fprintf(stderr, "only %d of %d devices connected\n", nconnected, ndev);
        return 1;
    }
    printf("devices connected: %d in %.1f s\n", ndev, now_s() - t_conn);
    /* Wait until the registry has them all. */
    for (int i = 0; i < 600; i++) {
        spin(all_committed, 0.2);
        if (cli("report", "posture", "--json", NULL, NULL, NULL, NULL, NULL, NULL, NULL) == 0 &&
            read_out(buf, sizeof(buf)) > 0) {
            char *t = strstr(buf, "\"total\":");
            if (t != NULL && strtol(t + 8, NULL, 10) == ndev)
                break;
        }
    }
    double cpu0 = proc_cpu_s(serve_pid), t0 = now_s();
    if (cli("campaign", "create", "--release", "fw-2.0", "--id", "bench", "--stages", stages,
            "--max-failures", "5%") != 0) {
        fprintf(stderr, "campaign create failed\n");
        return 1;
    }
    if (!spin(all_committed, 1800)) {
        fprintf(stderr, "only %d of %d committed\n", ncommitted, ndev);
        return 1;
    }
    double t_dev = now_s();
    bool done = false;
    for (int i = 0; i < 3000 && !done; i++) {
        spin(all_connected, 0.05);
        if (cli("campaign", "show", "bench", "--json", NULL, NULL, NULL, NULL, NULL, NULL) == 0 &&
            read_out(buf, sizeof(buf)) > 0)
            done = strstr(buf, "\"state\":\t\"completed\"") != NULL ||
                   strstr(buf, "\"state\": \"completed\"") != NULL ||
                   strstr(buf, "\"state\":\"completed\"") != NULL;
    }
    double t1 = now_s(), cpu1 = proc_cpu_s(serve_pid);
    double cpu = cpu1 - cpu0;
    /* Status messages the controller handled: 2 events + 1 state per device. */
    printf("devices: %d  stages: %s  completed: %s\n", ndev, stages, done ? "yes" : "NO");
    printf("campaign wall time: %.2f s (last device committed after %.2f s)\n", t1 - t0,
           t_dev - t0);
    printf("controller CPU over the campaign: %.3f s = %.3f ms/device, %.3f ms/status message "
           "(%d events + %d states)\n",
           cpu, cpu * 1000 / ndev, cpu * 1000 / (3.0 * ndev), 2 * ndev, ndev);
    kill(serve_pid, SIGTERM);
    waitpid(serve_pid, NULL, 0);
    for (int i = 0; i < ndev; i++)
        upk_mqtt_close(devs[i].c, NULL, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    kill(broker_pid, SIGTERM);
    waitpid(broker_pid, NULL, 0);
    char *rm[] = {"rm", "-rf", work, NULL};
    if (getenv("UPK_KEEP") == NULL)
        run(rm, NULL);
    return done ? 0 : 1;
}
