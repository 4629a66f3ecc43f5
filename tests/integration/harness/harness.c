/* Integration-test harness (see harness.h): mosquitto processes on free
 * loopback ports and a blocking MQTT 5 client over Paho MQTTAsync. */
#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <MQTTAsync.h>

#define START_ATTEMPTS 5
#define OP_TIMEOUT_S   5.0

double upk_h_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void nap_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

int upk_h_tmpdir(char *out, size_t cap)
{
    const char *base = getenv("TMPDIR");
    if (base == NULL || base[0] == '\0')
        base = "/tmp";
    int n = snprintf(out, cap, "%s/upk-it-XXXXXX", base);
    if (n < 0 || (size_t)n >= cap)
        return -1;
    return mkdtemp(out) != NULL ? 0 : -1;
}

int upk_h_write_file(const char *dir, const char *name, const char *text)
{
    char path[UPK_H_PATH_MAX * 2];
    int n = snprintf(path, sizeof(path), "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= sizeof(path))
        return -1;
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return -1;
    size_t len = strlen(text);
    int rc = fwrite(text, 1, len, f) == len ? 0 : -1;
    if (fclose(f) != 0)
        rc = -1;
    return rc;
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path) == 0 ? 0 : 0;
}

void upk_h_rmtree(const char *dir)
{
    if (dir != NULL && dir[0] != '\0')
        (void)nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

int upk_h_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    socklen_t len = sizeof(a);
    int port = -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static bool port_accepts(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return false;
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)port);
    bool ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    close(fd);
    return ok;
}

static const char *mosquitto_bin(void)
{
    const char *env = getenv("UPK_MOSQUITTO");
    if (env != NULL && env[0] != '\0')
        return env;
    return access("/usr/sbin/mosquitto", X_OK) == 0 ? "/usr/sbin/mosquitto" : "mosquitto";
}

/* Writes the config and forks mosquitto with its output in dir/mosquitto.log. */
static pid_t spawn(const char *dir, int port, const char *extra, char *conf, size_t confcap,
                   char *log, size_t logcap)
{
    char text[65536];
    /* Started as root, mosquitto drops to user "mosquitto", which cannot read
     * the 0700 test directory: keep the user we run as. */
    struct passwd *pw = getpwuid(geteuid());
    int n = snprintf(text, sizeof(text), "listener %d 127.0.0.1\nuser %s\n%s", port,
                     pw != NULL ? pw->pw_name : "root", extra != NULL ? extra : "");
    if (n < 0 || (size_t)n >= sizeof(text) || upk_h_write_file(dir, "mosquitto.conf", text) != 0)
        return -1;
    snprintf(conf, confcap, "%s/mosquitto.conf", dir);
    snprintf(log, logcap, "%s/mosquitto.log", dir);
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
        close(fd);
    }
    const char *bin = mosquitto_bin();
    execlp(bin, bin, "-c", conf, (char *)NULL);
    _exit(127);
}

int upk_h_broker_start(upk_h_broker *b, const char *dir, const char *extra_conf, double timeout_s)
{
    memset(b, 0, sizeof(*b));
    b->pid = -1;
    snprintf(b->dir, sizeof(b->dir), "%s", dir);
    for (int attempt = 0; attempt < START_ATTEMPTS; attempt++) {
        int port = upk_h_free_port();
        if (port < 0)
            return -1;
        pid_t pid = spawn(dir, port, extra_conf, b->conf, sizeof(b->conf), b->log, sizeof(b->log));
        if (pid < 0)
            return -1;
        double deadline = upk_h_now() + timeout_s;
        bool exited = false;
        while (upk_h_now() < deadline) {
            int st;
            if (waitpid(pid, &st, WNOHANG) == pid) {
                exited = true;
                break;
            }
            if (port_accepts(port)) {
                b->pid = pid;
                b->port = port;
                return 0;
            }
            nap_ms(20);
        }
        if (!exited) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            break;
        }
        /* It exited: a lost port race retries; a config error will not
         * change, but retrying costs only a moment. */
        if (!upk_h_file_contains(b->log, "Address already in use"))
            break;
    }
    upk_h_broker_dump_log(dir);
    return -1;
}

int upk_h_broker_run_expect_exit(const char *dir, const char *extra_conf, double timeout_s)
{
    char conf[UPK_H_PATH_MAX + 32], log[UPK_H_PATH_MAX + 32];
    int port = upk_h_free_port();
    if (port < 0)
        return -1;
    pid_t pid = spawn(dir, port, extra_conf, conf, sizeof(conf), log, sizeof(log));
    if (pid < 0)
        return -1;
    double deadline = upk_h_now() + timeout_s;
    while (upk_h_now() < deadline) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        nap_ms(20);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

void upk_h_broker_stop(upk_h_broker *b)
{
    if (b == NULL || b->pid <= 0)
        return;
    kill(b->pid, SIGTERM);
    double deadline = upk_h_now() + 5.0;
    int st;
    while (upk_h_now() < deadline) {
        if (waitpid(b->pid, &st, WNOHANG) == b->pid) {
            b->pid = -1;
            return;
        }
        nap_ms(10);
    }
    kill(b->pid, SIGKILL);
    waitpid(b->pid, &st, 0);
    b->pid = -1;
}

int upk_h_broker_stop_wait(upk_h_broker *b, double grace_s)
{
    if (b == NULL || b->pid <= 0)
        return -1;
    kill(b->pid, SIGTERM);
    double deadline = upk_h_now() + grace_s;
    int st = 0;
    pid_t got = 0;
    while ((got = waitpid(b->pid, &st, WNOHANG)) == 0 && upk_h_now() < deadline)
        nap_ms(10);
    if (got != b->pid) {
        kill(b->pid, SIGKILL);
        if (waitpid(b->pid, &st, 0) != b->pid)
            st = 0;
    }
    b->pid = -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int upk_h_broker_restart(upk_h_broker *b, double timeout_s)
{
    if (b == NULL || b->pid > 0 || b->port <= 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int fd = open(b->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        const char *bin = mosquitto_bin();
        execlp(bin, bin, "-c", b->conf, (char *)NULL);
        _exit(127);
    }
    double deadline = upk_h_now() + timeout_s;
    while (upk_h_now() < deadline) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid)
            return -1;
        if (port_accepts(b->port)) {
            b->pid = pid;
            return 0;
        }
        nap_ms(20);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

bool upk_h_file_contains(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return false;
    char line[4096];
    bool found = false;
    while (!found && fgets(line, sizeof(line), f) != NULL)
        found = strstr(line, needle) != NULL;
    fclose(f);
    return found;
}

void upk_h_broker_dump_log(const char *dir)
{
    char path[UPK_H_PATH_MAX * 2];
    snprintf(path, sizeof(path), "%s/mosquitto.log", dir);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return;
    char line[4096];
    fprintf(stderr, "---- %s\n", path);
    while (fgets(line, sizeof(line), f) != NULL)
        fputs(line, stderr);
    fprintf(stderr, "----\n");
    fclose(f);
}

/* ---- client --------------------------------------------------------------- */

struct qmsg {
    struct qmsg *next;
    upk_h_msg m;
};

struct upk_h_client {
    MQTTAsync handle;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool connected;
    struct qmsg *head, *tail;
    size_t queued;
    size_t received;
    struct op *abandoned;
};

/* One pending Paho operation. Heap-allocated: when a wait times out, Paho may
 * still call back later, so the op is parked on the client's list and freed
 * only after MQTTAsync_destroy (after which no callback can run). */
struct op {
    upk_h_client *c;
    bool done;
    bool ok;
    int reason;
    struct op *next_abandoned;
};

static struct op *op_new(upk_h_client *c)
{
    struct op *o = calloc(1, sizeof(*o));
    if (o != NULL) {
        o->c = c;
        o->reason = -1;
    }
    return o;
}

/* Frees o when Paho is done with it, else parks it until the client closes. */
static void op_release(struct op *o)
{
    pthread_mutex_lock(&o->c->mu);
    bool done = o->done;
    if (!done) {
        o->next_abandoned = o->c->abandoned;
        o->c->abandoned = o;
    }
    pthread_mutex_unlock(&o->c->mu);
    if (done)
        free(o);
}

static void op_finish(struct op *o, bool ok, int reason)
{
    pthread_mutex_lock(&o->c->mu);
    o->ok = ok;
    o->reason = reason;
    o->done = true;
    pthread_cond_broadcast(&o->c->cv);
    pthread_mutex_unlock(&o->c->mu);
}

static void on_ok5(void *ctx, MQTTAsync_successData5 *r)
{
    op_finish(ctx, true, r != NULL ? r->reasonCode : 0);
}

static void on_fail5(void *ctx, MQTTAsync_failureData5 *r)
{
    int rc = r != NULL ? (int)r->reasonCode : 0;
    /* A refused CONNECT reports its CONNACK reason code in code. */
    if (rc == 0 && r != NULL && r->code >= 0x80 && r->code <= 0xff)
        rc = r->code;
    if (getenv("UPK_H_DEBUG") != NULL && r != NULL)
        fprintf(stderr, "harness: failure code=%d reason=%d type=%d msg=%s\n", r->code,
                (int)r->reasonCode, r->packet_type, r->message != NULL ? r->message : "");
    op_finish(ctx, false, rc != 0 ? rc : -1);
}

/* Waits for o under c->mu; false on timeout. */
static bool op_wait(struct op *o, double timeout_s)
{
    double deadline = upk_h_now() + timeout_s;
    pthread_mutex_lock(&o->c->mu);
    while (!o->done && upk_h_now() < deadline) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 20 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&o->c->cv, &o->c->mu, &ts);
    }
    bool done = o->done;
    pthread_mutex_unlock(&o->c->mu);
    return done;
}

static int on_message(void *ctx, char *topic, int topic_len, MQTTAsync_message *msg)
{
    upk_h_client *c = ctx;
    struct qmsg *q = calloc(1, sizeof(*q));
    if (q != NULL) {
        size_t tl = topic_len > 0 ? (size_t)topic_len : strlen(topic);
        if (tl >= sizeof(q->m.topic))
            tl = sizeof(q->m.topic) - 1;
        memcpy(q->m.topic, topic, tl);
        size_t pl = msg->payloadlen > 0 ? (size_t)msg->payloadlen : 0;
        q->m.len = pl;
        if (pl > UPK_H_PAYLOAD_MAX)
            pl = UPK_H_PAYLOAD_MAX;
        if (pl > 0)
            memcpy(q->m.payload, msg->payload, pl);
        q->m.qos = msg->qos;
        q->m.retained = msg->retained != 0;
        for (int i = 0; i < msg->properties.count; i++) {
            MQTTProperty *p = &msg->properties.array[i];
            if (p->identifier != MQTTPROPERTY_CODE_USER_PROPERTY)
                continue;
            if (p->value.data.len == 13 && memcmp(p->value.data.data, "upkeep-sender", 13) == 0) {
                if (q->m.sender_count++ == 0) {
                    size_t vl = (size_t)p->value.value.len;
                    if (vl >= sizeof(q->m.sender))
                        vl = sizeof(q->m.sender) - 1;
                    memcpy(q->m.sender, p->value.value.data, vl);
                }
            } else if (p->value.data.len == 11 &&
                       memcmp(p->value.data.data, "upkeep-auth", 11) == 0) {
                if (q->m.auth_count++ == 0) {
                    size_t vl = (size_t)p->value.value.len;
                    if (vl >= sizeof(q->m.auth))
                        vl = sizeof(q->m.auth) - 1;
                    memcpy(q->m.auth, p->value.value.data, vl);
                }
            }
        }
    }
    pthread_mutex_lock(&c->mu);
    c->received++;
    if (q != NULL && c->queued < UPK_H_QUEUE_MAX) {
        if (c->tail != NULL)
            c->tail->next = q;
        else
            c->head = q;
        c->tail = q;
        c->queued++;
        q = NULL;
    }
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    free(q);
    MQTTAsync_freeMessage(&msg);
    MQTTAsync_free(topic);
    return 1;
}

static void on_lost(void *ctx, char *cause)
{
    upk_h_client *c = ctx;
    (void)cause;
    pthread_mutex_lock(&c->mu);
    c->connected = false;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static void on_disconnected(void *ctx, MQTTProperties *props, enum MQTTReasonCodes rc)
{
    (void)props;
    (void)rc;
    on_lost(ctx, NULL);
}

static int connect_common(upk_h_client **out, int port, const char *client_id, const char *user,
                          const char *pass, const char *will_topic, const char *will_payload,
                          int *reason)
{
    int dummy;
    if (reason == NULL)
        reason = &dummy;
    *reason = -1;
    *out = NULL;
    upk_h_client *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return -1;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    char uri[64];
    snprintf(uri, sizeof(uri), "tcp://127.0.0.1:%d", port);
    MQTTAsync_createOptions co = MQTTAsync_createOptions_initializer5;
    co.MQTTVersion = MQTTVERSION_5;
    co.sendWhileDisconnected = 0;
    co.maxBufferedMessages = 100000;
    if (MQTTAsync_createWithOptions(&c->handle, uri, client_id, MQTTCLIENT_PERSISTENCE_NONE, NULL,
                                    &co) != MQTTASYNC_SUCCESS)
        goto fail_create;
    if (MQTTAsync_setCallbacks(c->handle, c, on_lost, on_message, NULL) != MQTTASYNC_SUCCESS ||
        MQTTAsync_setDisconnected(c->handle, c, on_disconnected) != MQTTASYNC_SUCCESS)
        goto fail;
    struct op *o = op_new(c);
    if (o == NULL)
        goto fail;
    MQTTAsync_connectOptions opts = MQTTAsync_connectOptions_initializer5;
    MQTTAsync_willOptions will = MQTTAsync_willOptions_initializer;
    opts.cleanstart = 1;
    opts.keepAliveInterval = 30;
    opts.username = user;
    opts.password = pass;
    opts.onSuccess5 = on_ok5;
    opts.onFailure5 = on_fail5;
    opts.context = o;
    opts.connectTimeout = 5;
    if (will_topic != NULL) {
        will.topicName = will_topic;
        will.message = will_payload;
        will.qos = 1;
        will.retained = 1;
        opts.will = &will;
    }
    if (MQTTAsync_connect(c->handle, &opts) != MQTTASYNC_SUCCESS) {
        free(o);
        goto fail;
    }
    bool done = op_wait(o, OP_TIMEOUT_S + 1);
    bool ok = done && o->ok;
    *reason = done ? o->reason : -1;
    op_release(o);
    if (!ok)
        goto fail;
    *reason = 0;
    pthread_mutex_lock(&c->mu);
    c->connected = true;
    pthread_mutex_unlock(&c->mu);
    *out = c;
    return 0;
fail:
    MQTTAsync_destroy(&c->handle);
    while (c->abandoned != NULL) {
        struct op *next = c->abandoned->next_abandoned;
        free(c->abandoned);
        c->abandoned = next;
    }
fail_create:
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    free(c);
    return -1;
}

int upk_h_client_connect(upk_h_client **out, int port, const char *client_id, const char *user,
                         const char *pass, int *reason)
{
    return connect_common(out, port, client_id, user, pass, NULL, NULL, reason);
}

int upk_h_client_connect_will(upk_h_client **out, int port, const char *client_id, const char *user,
                              const char *pass, const char *will_topic, const char *will_payload,
                              int *reason)
{
    return connect_common(out, port, client_id, user, pass, will_topic, will_payload, reason);
}

int upk_h_client_publish(upk_h_client *c, const char *topic, const void *payload, size_t len,
                         int qos, bool retain, const char *sender, int *reason)
{
    return upk_h_client_publish_auth(c, topic, payload, len, qos, retain, sender, NULL, reason);
}

int upk_h_client_publish_auth(upk_h_client *c, const char *topic, const void *payload, size_t len,
                              int qos, bool retain, const char *sender, const char *auth,
                              int *reason)
{
    int dummy;
    if (reason == NULL)
        reason = &dummy;
    *reason = -1;
    struct op *o = op_new(c);
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    MQTTAsync_message m = MQTTAsync_message_initializer;
    MQTTProperties props = MQTTProperties_initializer;
    int rc = -1;
    if (o == NULL)
        return -1;
    if (sender != NULL) {
        MQTTProperty p;
        p.identifier = MQTTPROPERTY_CODE_USER_PROPERTY;
        p.value.data.data = (char *)"upkeep-sender";
        p.value.data.len = 13;
        p.value.value.data = (char *)sender;
        p.value.value.len = (int)strlen(sender);
        if (MQTTProperties_add(&props, &p) != 0) {
            free(o);
            return -1;
        }
        m.properties = props;
    }
    if (auth != NULL) {
        MQTTProperty p;
        p.identifier = MQTTPROPERTY_CODE_USER_PROPERTY;
        p.value.data.data = (char *)"upkeep-auth";
        p.value.data.len = 11;
        p.value.value.data = (char *)auth;
        p.value.value.len = (int)strlen(auth);
        if (MQTTProperties_add(&props, &p) != 0) {
            MQTTProperties_free(&props);
            free(o);
            return -1;
        }
        m.properties = props;
    }
    m.payload = (void *)payload;
    m.payloadlen = (int)len;
    m.qos = qos;
    m.retained = retain ? 1 : 0;
    ro.onSuccess5 = on_ok5;
    ro.onFailure5 = on_fail5;
    ro.context = o;
    if (MQTTAsync_sendMessage(c->handle, topic, &m, &ro) != MQTTASYNC_SUCCESS) {
        free(o);
        goto out;
    }
    /* A connection lost mid-flight may never call back: stop waiting then. */
    double deadline = upk_h_now() + OP_TIMEOUT_S;
    while (!op_wait(o, 0.05) && upk_h_now() < deadline && upk_h_client_connected(c)) {
    }
    if (o->done) {
        *reason = o->reason;
        rc = o->ok && o->reason < 0x80 ? 0 : -1;
    }
    op_release(o);
out:
    MQTTProperties_free(&props);
    return rc;
}

int upk_h_client_subscribe(upk_h_client *c, const char *filter, int qos, int *reason)
{
    int dummy;
    if (reason == NULL)
        reason = &dummy;
    *reason = -1;
    struct op *o = op_new(c);
    if (o == NULL)
        return -1;
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    ro.onSuccess5 = on_ok5;
    ro.onFailure5 = on_fail5;
    ro.context = o;
    if (MQTTAsync_subscribe(c->handle, filter, qos, &ro) != MQTTASYNC_SUCCESS) {
        free(o);
        return -1;
    }
    int rc = -1;
    if (op_wait(o, OP_TIMEOUT_S)) {
        *reason = o->reason;
        rc = o->ok && o->reason < 0x80 ? 0 : -1;
    }
    op_release(o);
    return rc;
}

int upk_h_client_wait_msg(upk_h_client *c, double timeout_s, upk_h_msg *out)
{
    double deadline = upk_h_now() + timeout_s;
    struct qmsg *q = NULL;
    pthread_mutex_lock(&c->mu);
    for (;;) {
        if (c->head != NULL) {
            q = c->head;
            c->head = q->next;
            if (c->head == NULL)
                c->tail = NULL;
            c->queued--;
            break;
        }
        if (upk_h_now() >= deadline)
            break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 20 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&c->cv, &c->mu, &ts);
    }
    pthread_mutex_unlock(&c->mu);
    if (q == NULL)
        return -1;
    memcpy(out, &q->m, sizeof(*out));
    free(q);
    return 0;
}

size_t upk_h_client_received(upk_h_client *c)
{
    pthread_mutex_lock(&c->mu);
    size_t n = c->received;
    pthread_mutex_unlock(&c->mu);
    return n;
}

bool upk_h_client_wait_count(upk_h_client *c, size_t n, double timeout_s)
{
    double deadline = upk_h_now() + timeout_s;
    while (upk_h_client_received(c) < n && upk_h_now() < deadline)
        nap_ms(10);
    return upk_h_client_received(c) >= n;
}

bool upk_h_client_connected(upk_h_client *c)
{
    pthread_mutex_lock(&c->mu);
    bool up = c->connected;
    pthread_mutex_unlock(&c->mu);
    return up;
}

bool upk_h_client_wait_disconnected(upk_h_client *c, double timeout_s)
{
    double deadline = upk_h_now() + timeout_s;
    while (upk_h_client_connected(c) && upk_h_now() < deadline)
        nap_ms(10);
    return !upk_h_client_connected(c);
}

void upk_h_client_close(upk_h_client *c)
{
    if (c == NULL)
        return;
    struct op *o = MQTTAsync_isConnected(c->handle) ? op_new(c) : NULL;
    if (o != NULL) {
        MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer5;
        d.timeout = 1000;
        d.onSuccess5 = on_ok5;
        d.onFailure5 = on_fail5;
        d.context = o;
        if (MQTTAsync_disconnect(c->handle, &d) == MQTTASYNC_SUCCESS) {
            (void)op_wait(o, 3.0);
            op_release(o);
        } else {
            free(o);
        }
    }
    MQTTAsync_destroy(&c->handle);
    while (c->abandoned != NULL) {
        struct op *next = c->abandoned->next_abandoned;
        free(c->abandoned);
        c->abandoned = next;
    }
    struct qmsg *q = c->head;
    while (q != NULL) {
        struct qmsg *next = q->next;
        free(q);
        q = next;
    }
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    free(c);
}
