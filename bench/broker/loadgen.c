/* Load generator for the broker benchmark: N device clients (Paho MQTT C,
 * MQTT 5) publish M messages each to their own upkeep/v1/dev/{d}/events topic
 * from a few publisher threads, while one consumer subscribed to
 * upkeep/v1/dev/+/events counts what arrives. Prints one line with
 * messages/s measured at the consumer. Bounded by M messages per device and a
 * wall-clock timeout; traffic goes to 127.0.0.1 only.
 *
 * Paho's synchronous MQTTClient API is used: a publish is written on the
 * calling thread, so the generator is not limited by MQTTAsync's single send
 * thread (measured here: ~8k msg/s with MQTTAsync for 100 clients, far below
 * the broker's own limit). */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <MQTTClient.h>

#include "upkeep/devkey.h"

#define DEVICES_MAX    10000
#define THREADS_MAX    64
#define CONNECTORS_MAX 50
#define SECRET_MAX     1024

struct dev {
    MQTTClient h;
    char id[32];
    char topic[128];
};

struct worker {
    pthread_t t;
    struct dev *devs;
    int ndev;
    long msgs;
    int qos;
    const char *payload;
    int payload_len;
    double stop;
    long sent;
    long failed;
    int port;
    int inflight;
    const unsigned char *secret;
    size_t secret_len;
    bool started;
    int connected;
};

static atomic_long g_received;
static atomic_long g_acked;
static _Atomic double g_last_rx;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void nap_us(long us)
{
    struct timespec ts = {us / 1000000L, (us % 1000000L) * 1000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static int on_msg(void *ctx, char *topic, int len, MQTTClient_message *m)
{
    (void)ctx;
    (void)len;
    atomic_fetch_add(&g_received, 1);
    atomic_store(&g_last_rx, now_s());
    MQTTClient_freeMessage(&m);
    MQTTClient_free(topic);
    return 1;
}

/* Devices subscribe to nothing; Paho still requires a message callback. */
static int on_dev_msg(void *ctx, char *topic, int len, MQTTClient_message *m)
{
    (void)ctx;
    (void)len;
    MQTTClient_freeMessage(&m);
    MQTTClient_free(topic);
    return 1;
}

static void on_delivered(void *ctx, MQTTClient_deliveryToken tok)
{
    (void)ctx;
    (void)tok;
    atomic_fetch_add(&g_acked, 1);
}

static void on_lost(void *ctx, char *cause)
{
    fprintf(stderr, "loadgen: %s lost its connection (%s)\n", (const char *)ctx,
            cause != NULL ? cause : "?");
}

static void usage(void)
{
    fprintf(stderr,
            "usage: loadgen --port P [--devices N] [--messages M] [--qos 0|1] [--payload BYTES]\n"
            "               [--secret-file F] [--sub-user U --sub-pass P] [--inflight K]\n"
            "               [--threads T] [--timeout S] [--label TEXT]\n"
            "Devices are bench-00000.. with the device password derived from F (no\n"
            "password without F). Prints: label qos devices sent received seconds msg/s.\n");
}

/* Connects one client; 0 on success. */
static int connect_client(MQTTClient *h, int port, const char *id, const char *user,
                          const char *pass, int inflight, void *ctx, bool consumer)
{
    char uri[64];
    snprintf(uri, sizeof(uri), "tcp://127.0.0.1:%d", port);
    MQTTClient_createOptions co = MQTTClient_createOptions_initializer;
    co.MQTTVersion = MQTTVERSION_5;
    if (MQTTClient_createWithOptions(h, uri, id, MQTTCLIENT_PERSISTENCE_NONE, NULL, &co) !=
        MQTTCLIENT_SUCCESS)
        return -1;
    if (MQTTClient_setCallbacks(*h, ctx, on_lost, consumer ? on_msg : on_dev_msg,
                                consumer ? NULL : on_delivered) != MQTTCLIENT_SUCCESS)
        return -1;
    MQTTClient_connectOptions o = MQTTClient_connectOptions_initializer5;
    o.cleanstart = 1;
    o.keepAliveInterval = 60;
    o.username = user;
    o.password = pass;
    o.reliable = 0;
    o.maxInflightMessages = inflight;
    MQTTResponse r = MQTTClient_connect5(*h, &o, NULL, NULL);
    int rc = (int)r.reasonCode;
    MQTTResponse_free(r);
    if (rc != MQTTCLIENT_SUCCESS) {
        fprintf(stderr, "loadgen: connect %s failed: %d\n", id, rc);
        return -1;
    }
    return 0;
}

static int connect_client(MQTTClient *h, int port, const char *id, const char *user,
                          const char *pass, int inflight, void *ctx, bool consumer);

static void *connector(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < w->ndev; i++) {
        char key[UPK_DEVKEY_LEN + 1];
        const char *pass = NULL;
        struct dev *d = &w->devs[i];
        if (w->secret_len > 0) {
            if (upk_devkey_derive(w->secret, w->secret_len, d->id, key, sizeof(key)) != 0)
                return NULL;
            pass = key;
        }
        if (connect_client(&d->h, w->port, d->id, d->id, pass, w->inflight, d->id, false) != 0)
            return NULL;
        w->connected++;
    }
    return NULL;
}

static void *publisher(void *arg)
{
    struct worker *w = arg;
    for (long m = 0; m < w->msgs && now_s() < w->stop; m++) {
        for (int i = 0; i < w->ndev; i++) {
            MQTTClient_message pm = MQTTClient_message_initializer;
            pm.payload = (void *)w->payload;
            pm.payloadlen = w->payload_len;
            pm.qos = w->qos;
            MQTTResponse r;
            for (;;) {
                r = MQTTClient_publishMessage5(w->devs[i].h, w->devs[i].topic, &pm, NULL);
                if ((int)r.reasonCode != MQTTCLIENT_MAX_MESSAGES_INFLIGHT || now_s() >= w->stop)
                    break;
                MQTTResponse_free(r);
                nap_us(20);
            }
            if ((int)r.reasonCode == MQTTCLIENT_SUCCESS)
                w->sent++;
            else
                w->failed++;
            MQTTResponse_free(r);
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    int port = 0, ndev = 100, qos = 0, inflight = 20, nthreads = 4;
    long msgs = 1000;
    int payload_len = 64;
    double timeout = 120;
    const char *secret_file = NULL, *sub_user = NULL, *sub_pass = NULL, *label = "run";
    for (int i = 1; i < argc; i += 2) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (v == NULL) {
            usage();
            return 2;
        }
        if (strcmp(a, "--port") == 0)
            port = (int)strtol(v, NULL, 10);
        else if (strcmp(a, "--devices") == 0)
            ndev = (int)strtol(v, NULL, 10);
        else if (strcmp(a, "--messages") == 0)
            msgs = strtol(v, NULL, 10);
        else if (strcmp(a, "--qos") == 0)
            qos = (int)strtol(v, NULL, 10);
        else if (strcmp(a, "--payload") == 0)
            payload_len = (int)strtol(v, NULL, 10);
        else if (strcmp(a, "--secret-file") == 0)
            secret_file = v;
        else if (strcmp(a, "--sub-user") == 0)
            sub_user = v;
        else if (strcmp(a, "--sub-pass") == 0)
            sub_pass = v;
        else if (strcmp(a, "--inflight") == 0)
            inflight = (int)strtol(v, NULL, 10);
        else if (strcmp(a, "--threads") == 0)
            nthreads = (int)strtol(v, NULL, 10);
        else if (strcmp(a, "--timeout") == 0)
            timeout = strtod(v, NULL);
        else if (strcmp(a, "--label") == 0)
            label = v;
        else {
            usage();
            return 2;
        }
    }
    if (port <= 0 || port > 65535 || ndev < 1 || ndev > DEVICES_MAX || msgs < 1 ||
        msgs > 10000000 || (qos != 0 && qos != 1) || payload_len < 0 || payload_len > 65536 ||
        inflight < 1 || inflight > 65535 || nthreads < 1 || nthreads > THREADS_MAX ||
        timeout <= 0 || timeout > 3600) {
        usage();
        return 2;
    }
    if (nthreads > ndev)
        nthreads = ndev;
    unsigned char secret[SECRET_MAX];
    size_t secret_len = 0;
    if (secret_file != NULL) {
        FILE *f = fopen(secret_file, "rb");
        if (f == NULL) {
            perror(secret_file);
            return 1;
        }
        secret_len = fread(secret, 1, sizeof(secret), f);
        fclose(f);
        while (secret_len > 0 &&
               (secret[secret_len - 1] == '\n' || secret[secret_len - 1] == '\r' ||
                secret[secret_len - 1] == ' ' || secret[secret_len - 1] == '\t'))
            secret_len--;
    }
    int rc = 1;
    struct dev *devs = calloc((size_t)ndev, sizeof(*devs));
    char *payload = malloc((size_t)payload_len + 1);
    struct worker *ws = calloc((size_t)nthreads, sizeof(*ws));
    MQTTClient sub = NULL;
    int nconn = 0;
    if (devs == NULL || payload == NULL || ws == NULL)
        goto out;
    memset(payload, 'p', (size_t)payload_len);

    if (connect_client(&sub, port, "bench-consumer", sub_user, sub_pass, inflight,
                       (void *)"bench-consumer", true) != 0)
        goto out;
    MQTTResponse sr = MQTTClient_subscribe5(sub, "upkeep/v1/dev/+/events", qos, NULL, NULL);
    int granted = (int)sr.reasonCode;
    MQTTResponse_free(sr);
    if (granted != qos) {
        fprintf(stderr, "loadgen: subscribe refused (%d)\n", granted);
        goto out;
    }

    /* Connect the devices from the worker threads in parallel (a synchronous
     * connect waits for its CONNACK). */
    for (int i = 0; i < ndev; i++) {
        snprintf(devs[i].id, sizeof(devs[i].id), "bench-%05d", i);
        snprintf(devs[i].topic, sizeof(devs[i].topic), "upkeep/v1/dev/%s/events", devs[i].id);
    }
    {
        /* More connector threads than publishers: a connect mostly waits. */
        int ncon = ndev < CONNECTORS_MAX ? ndev : CONNECTORS_MAX;
        struct worker cw[CONNECTORS_MAX];
        memset(cw, 0, sizeof(cw));
        int per = ndev / ncon, extra = ndev % ncon, off = 0;
        for (int t = 0; t < ncon; t++) {
            struct worker *w = &cw[t];
            w->devs = devs + off;
            w->ndev = per + (t < extra ? 1 : 0);
            off += w->ndev;
            w->port = port;
            w->inflight = inflight;
            w->secret = secret;
            w->secret_len = secret_len;
            w->started = pthread_create(&w->t, NULL, connector, w) == 0;
        }
        bool all = true;
        for (int t = 0; t < ncon; t++) {
            if (cw[t].started)
                pthread_join(cw[t].t, NULL);
            all = all && cw[t].started && cw[t].connected == cw[t].ndev;
        }
        if (!all) {
            fprintf(stderr, "loadgen: not every device connected\n");
            goto out;
        }
        nconn = ndev;
        per = ndev / nthreads;
        extra = ndev % nthreads;
        off = 0;
        for (int t = 0; t < nthreads; t++) {
            ws[t].devs = devs + off;
            ws[t].ndev = per + (t < extra ? 1 : 0);
            off += ws[t].ndev;
        }
    }

    double t0 = now_s();
    double stop = t0 + timeout;
    for (int t = 0; t < nthreads; t++) {
        struct worker *w = &ws[t];
        w->msgs = msgs;
        w->qos = qos;
        w->payload = payload;
        w->payload_len = payload_len;
        w->stop = stop;
        w->started = pthread_create(&w->t, NULL, publisher, w) == 0;
    }
    long sent = 0, failed = 0;
    for (int t = 0; t < nthreads; t++) {
        if (ws[t].started)
            pthread_join(ws[t].t, NULL);
        sent += ws[t].sent;
        failed += ws[t].failed;
    }
    /* Wait for the consumer: all messages, or 3 s without progress (QoS 0 may
     * drop under overload). */
    long last = -1;
    double last_change = now_s();
    while (now_s() < stop + 10) {
        long r = atomic_load(&g_received);
        if (r >= sent)
            break;
        if (r != last) {
            last = r;
            last_change = now_s();
        } else if (now_s() - last_change > 3.0) {
            break;
        }
        nap_us(1000);
    }
    double t1 = atomic_load(&g_last_rx);
    long rx = atomic_load(&g_received);
    double secs = t1 > t0 ? t1 - t0 : 0;
    printf("%s qos=%d devices=%d sent=%ld received=%ld failed=%ld seconds=%.3f msg_per_s=%.0f\n",
           label, qos, ndev, sent, rx, failed, secs, secs > 0 ? (double)rx / secs : 0.0);
    fflush(stdout);
    rc = rx > 0 ? 0 : 1;
out:
    for (int i = 0; devs != NULL && i < ndev; i++) {
        if (devs[i].h == NULL)
            continue;
        if (i < nconn)
            MQTTClient_disconnect5(devs[i].h, 0, MQTTREASONCODE_SUCCESS, NULL);
        MQTTClient_destroy(&devs[i].h);
    }
    if (sub != NULL) {
        MQTTClient_disconnect5(sub, 100, MQTTREASONCODE_SUCCESS, NULL);
        MQTTClient_destroy(&sub);
    }
    free(ws);
    free(devs);
    free(payload);
    return rc;
}
