/* Integration tests of the controller half of link authentication (issue
 * 23, docs/security.md): `upkeep serve` with a link_secret_file against a
 * real mosquitto with upkeep_broker.so on a free 127.0.0.1 port. Devices are
 * scripted fake agents (harness MQTT clients) that hold their link key, tag
 * what they send and check the tags of what they get; attackers are a
 * client that logs in with a device's sniffed MQTT password (attack 7) and
 * the broker's admin account (a retained desired left while the controller
 * was down, attack 4). Every case asserts that nothing else changed: the
 * campaign rows, the stored events, the device's state in the registry. */
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
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "harness.h"
#include "upkeep/devkey.h"
#include "upkeep/hash.h"
#include "upkeep/linkauth.h"
#include "upkeep/manifest.h"
#include "upkeep/msg.h"

#define SECRET      "controller-fleet-secret-0123456789"
#define LINK_SECRET "controller-link-secret-0123456789"
#define PREFIX      "upkeep/v1"
#define NDEV_MAX    4
#define ART_LEN     3000

struct fdev {
    upk_h_client *c;
    char id[32];
    bool has_key; /* holds its link key: tags what it sends, checks what it gets */
    upk_link_key key;
    uint64_t seq;
    /* desired messages received */
    int desired_n, desired_bad_tag;
    bool last_clear, last_rollback, last_tag_ok;
    uint64_t last_ctr;
    int64_t last_fresh_until;
    char last_campaign[65], last_version[65];
    char last_payload[UPK_H_PAYLOAD_MAX + 1];
    size_t last_len;
    /* chunk replies and acks received */
    int chunk_status, chunk_bad_tag;
    int acks, acks_bad_tag;
    uint64_t last_ack;
};

struct env {
    char dir[UPK_H_PATH_MAX];
    upk_h_broker b;
    pid_t serve;
    struct fdev dev[NDEV_MAX];
    int ndev;
    uint8_t art[ART_LEN];
    uint8_t art_sha[32];
};

static upk_h_msg msgbuf;
static char outbuf[1 << 20];

static int run_wait(char *const argv[], const char *out_path, double timeout_s)
{
    pid_t pid = fork();
    if (pid == 0) {
        if (out_path != NULL) {
            int fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
            if (fd >= 0) {
                dup2(fd, 1);
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

static int add_user(const char *dir, const char *user, const char *pass)
{
    char path[UPK_H_PATH_MAX + 16];
    snprintf(path, sizeof(path), "%s/passwd", dir);
    char *argv[] = {(char *)UPK_MOSQUITTO_PASSWD, "-b", path, (char *)user, (char *)pass, NULL};
    return run_wait(argv, NULL, 30) == 0 ? 0 : -1;
}

/* Runs `upkeep ARGS...` as operator alice; stdout into outbuf. */
static int cli(struct env *e, ...)
{
    char *argv[40];
    int n = 0;
    argv[n++] = (char *)UPK_BIN;
    va_list ap;
    va_start(ap, e);
    const char *a;
    while ((a = va_arg(ap, const char *)) != NULL && n < 38)
        argv[n++] = (char *)a;
    va_end(ap);
    argv[n] = NULL;
    char broker[64], pwf[UPK_H_PATH_MAX + 32], outp[UPK_H_PATH_MAX + 32];
    snprintf(broker, sizeof(broker), "tcp://127.0.0.1:%d", e->b.port);
    snprintf(pwf, sizeof(pwf), "%s/alice.pw", e->dir);
    snprintf(outp, sizeof(outp), "%s/out.txt", e->dir);
    setenv("UPKEEP_BROKER", broker, 1);
    setenv("UPKEEP_USER", "alice", 1);
    setenv("UPKEEP_PASSWORD_FILE", pwf, 1);
    setenv("HOME", e->dir, 1);
    int rc = run_wait(argv, outp, 60);
    outbuf[0] = '\0';
    FILE *f = fopen(outp, "r");
    if (f != NULL) {
        size_t len = fread(outbuf, 1, sizeof(outbuf) - 1, f);
        outbuf[len] = '\0';
        fclose(f);
    }
    return rc;
}

static cJSON *cli_json(struct env *e, const char *a1, const char *a2, const char *a3)
{
    int rc = a3 != NULL   ? cli(e, a1, a2, a3, "--json", (char *)NULL)
             : a2 != NULL ? cli(e, a1, a2, "--json", (char *)NULL)
                          : cli(e, a1, "--json", (char *)NULL);
    return rc == 0 ? cJSON_Parse(outbuf) : NULL;
}

static const char *jstr(const cJSON *o, const char *k)
{
    const char *s = cJSON_GetStringValue(cJSON_GetObjectItem(o, k));
    return s != NULL ? s : "";
}

static double jnum(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItem(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

static void dump_logs(struct env *e)
{
    char p[UPK_H_PATH_MAX + 32];
    snprintf(p, sizeof(p), "%s/serve.log", e->dir);
    FILE *f = fopen(p, "r");
    if (f == NULL)
        return;
    char line[1024];
    int n = 0, k = 0;
    while (fgets(line, sizeof(line), f) != NULL)
        n++;
    rewind(f);
    fprintf(stderr, "---- serve.log (tail) ----\n");
    while (fgets(line, sizeof(line), f) != NULL)
        if (++k > n - 60)
            fputs(line, stderr);
    fclose(f);
}

static bool serve_log_has(struct env *e, const char *needle)
{
    char p[UPK_H_PATH_MAX + 32];
    snprintf(p, sizeof(p), "%s/serve.log", e->dir);
    return upk_h_file_contains(p, needle);
}

static int start_serve(struct env *e)
{
    char cfgp[UPK_H_PATH_MAX + 32], logp[UPK_H_PATH_MAX + 32];
    snprintf(cfgp, sizeof(cfgp), "%s/serve.json", e->dir);
    snprintf(logp, sizeof(logp), "%s/serve.log", e->dir);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(logp, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execl(UPK_BIN, UPK_BIN, "serve", "-c", cfgp, "--log-level", "debug", (char *)NULL);
        _exit(127);
    }
    if (pid < 0)
        return -1;
    e->serve = pid;
    double end = upk_h_now() + 20;
    while (upk_h_now() < end)
        if (cli(e, "campaign", "list", "--timeout", "2", (char *)NULL) == 0)
            return 0;
    return -1;
}

static void stop_serve(struct env *e)
{
    if (e->serve > 0) {
        kill(e->serve, SIGTERM);
        int st;
        waitpid(e->serve, &st, 0);
        e->serve = 0;
    }
}

/* The kind of a device topic, from its last levels. */
static upk_topic_kind kind_of(const char *topic)
{
    size_t tl = strlen(topic);
    if (tl > 11 && strcmp(topic + tl - 11, "/chunk/data") == 0)
        return UPK_TOPIC_DEV_CHUNK_DATA;
    if (tl > 4 && strcmp(topic + tl - 4, "/ack") == 0)
        return UPK_TOPIC_DEV_ACK;
    return UPK_TOPIC_DEV_DESIRED;
}

static bool tag_ok(const struct fdev *d, upk_topic_kind kind, const upk_h_msg *m)
{
    return m->auth_count == 1 && m->len <= UPK_H_PAYLOAD_MAX &&
           upk_link_verify(&d->key, d->id, kind, m->payload, m->len, m->auth) == UPK_OK;
}

/* Publishes payload on dev/{d}/{kind}; tagged with d's key when tagged (and
 * it has one); bad_tag: with the tag of other bytes. */
static int dev_publish(struct fdev *d, upk_topic_kind kind, const void *payload, size_t len,
                       int qos, bool retain, bool tagged, bool bad_tag)
{
    char topic[160], tag[UPK_LINK_TAG_LEN + 1];
    snprintf(topic, sizeof(topic), PREFIX "/dev/%s/%s", d->id, upk_topic_kind_str(kind));
    const char *auth = NULL;
    if (tagged && d->has_key) {
        assert_int_equal(upk_link_tag(&d->key, d->id, kind, bad_tag ? (const void *)"x" : payload,
                                      bad_tag ? 1 : len, tag, sizeof(tag)),
                         UPK_OK);
        auth = tag;
    }
    int reason;
    return upk_h_client_publish_auth(d->c, topic, payload, len, qos, retain, NULL, auth, &reason);
}

static void publish_state(struct fdev *d, const char *campaign, const char *version,
                          upk_status status, bool tagged)
{
    upk_state_msg m;
    memset(&m, 0, sizeof(m));
    snprintf(m.device, sizeof(m.device), "%s", d->id);
    snprintf(m.hw, sizeof(m.hw), "hw-a");
    snprintf(m.release, sizeof(m.release), "fw");
    snprintf(m.version, sizeof(m.version), "%s", version);
    snprintf(m.campaign, sizeof(m.campaign), "%s", campaign);
    m.security_version = 1;
    m.status = status;
    m.ts = time(NULL);
    char *json = NULL;
    size_t len = 0;
    assert_int_equal(upk_state_encode(&m, &json, &len), UPK_OK);
    assert_int_equal(dev_publish(d, UPK_TOPIC_DEV_STATE, json, len, 1, true, tagged, false), 0);
    free(json);
}

/* Publishes an event with seq (0: the next one). */
static void publish_event(struct fdev *d, uint64_t seq, const char *campaign, const char *release,
                          const char *version, upk_status step, upk_err err, bool tagged,
                          bool bad_tag)
{
    upk_event_msg e;
    memset(&e, 0, sizeof(e));
    e.seq = seq != 0 ? seq : ++d->seq;
    e.ts = time(NULL);
    snprintf(e.campaign, sizeof(e.campaign), "%s", campaign);
    snprintf(e.release, sizeof(e.release), "%s", release);
    snprintf(e.version, sizeof(e.version), "%s", version);
    e.step = step;
    e.error = err;
    char *json = NULL;
    size_t len = 0;
    assert_int_equal(upk_event_encode(&e, &json, &len), UPK_OK);
    assert_int_equal(dev_publish(d, UPK_TOPIC_DEV_EVENTS, json, len, 1, false, tagged, bad_tag), 0);
    free(json);
}

static void request_chunk(struct env *e, struct fdev *d, bool tagged)
{
    upk_chunk_req r;
    memset(&r, 0, sizeof(r));
    memcpy(r.artifact, e->art_sha, 32);
    r.offset = 0;
    r.length = 1000;
    char *json = NULL;
    size_t jl = 0;
    assert_int_equal(upk_chunk_req_encode(&r, &json, &jl), UPK_OK);
    assert_int_equal(dev_publish(d, UPK_TOPIC_DEV_CHUNK_REQ, json, jl, 1, false, tagged, false), 0);
    free(json);
}

static int connect_client(struct env *e, struct fdev *d)
{
    char pw[UPK_DEVKEY_LEN + 1];
    assert_int_equal(upk_devkey_derive(SECRET, strlen(SECRET), d->id, pw, sizeof(pw)), UPK_OK);
    int reason;
    if (upk_h_client_connect(&d->c, e->b.port, d->id, d->id, pw, &reason) != 0)
        return -1;
    static const char *const subs[] = {"desired", "chunk/data", "ack"};
    for (size_t i = 0; i < 3; i++) {
        char topic[128];
        snprintf(topic, sizeof(topic), PREFIX "/dev/%s/%s", d->id, subs[i]);
        if (upk_h_client_subscribe(d->c, topic, 1, &reason) != 0)
            return -1;
    }
    return 0;
}

static void say_online(struct fdev *d)
{
    char topic[128];
    int reason;
    snprintf(topic, sizeof(topic), PREFIX "/dev/%s/online", d->id);
    assert_int_equal(upk_h_client_publish(d->c, topic, "1", 1, 1, true, NULL, &reason), 0);
}

/* Handles what arrived for every device: records desired messages, chunk
 * replies and acks with whether their tags verify. */
static void pump(struct env *e, double wait_s)
{
    for (int i = 0; i < e->ndev; i++) {
        struct fdev *d = &e->dev[i];
        if (d->c == NULL)
            continue;
        while (upk_h_client_wait_msg(d->c, i == 0 ? wait_s : 0.0, &msgbuf) == 0) {
            upk_topic_kind kind = kind_of(msgbuf.topic);
            bool ok = d->has_key && tag_ok(d, kind, &msgbuf);
            if (kind == UPK_TOPIC_DEV_CHUNK_DATA) {
                upk_chunk_hdr h;
                const uint8_t *data = NULL;
                if (!ok)
                    d->chunk_bad_tag++;
                if (upk_chunk_parse((const uint8_t *)msgbuf.payload, msgbuf.len, &h, &data) ==
                    UPK_OK)
                    d->chunk_status = (int)h.status;
                continue;
            }
            if (kind == UPK_TOPIC_DEV_ACK) {
                uint64_t seq = 0;
                if (!ok)
                    d->acks_bad_tag++;
                if (upk_ack_decode(msgbuf.payload, msgbuf.len, &seq) == UPK_OK) {
                    d->acks++;
                    d->last_ack = seq;
                }
                continue;
            }
            d->desired_n++;
            if (!ok)
                d->desired_bad_tag++;
            d->last_tag_ok = ok;
            memcpy(d->last_payload, msgbuf.payload, sizeof(d->last_payload));
            d->last_len = msgbuf.len;
            d->last_clear = msgbuf.len == 0;
            d->last_campaign[0] = d->last_version[0] = '\0';
            if (msgbuf.len == 0)
                continue;
            upk_desired_msg des;
            memset(&des, 0, sizeof(des));
            if (upk_desired_decode(msgbuf.payload, msgbuf.len, &des) != UPK_OK)
                continue;
            d->last_clear = des.clear;
            d->last_rollback = des.rollback;
            d->last_ctr = des.ctr;
            d->last_fresh_until = des.fresh_until;
            snprintf(d->last_campaign, sizeof(d->last_campaign), "%s", des.campaign);
            upk_manifest m;
            if (!des.clear && upk_manifest_decode(des.manifest, des.manifest_len, &m) == UPK_OK)
                snprintf(d->last_version, sizeof(d->last_version), "%s", m.version);
            upk_desired_cleanup(&des);
        }
    }
}

/* Pumps until d has received more than n desired messages. */
static void await_desired(struct env *e, struct fdev *d, int n)
{
    double end = upk_h_now() + 20;
    while (d->desired_n <= n && upk_h_now() < end)
        pump(e, 0.05);
    if (d->desired_n <= n) {
        dump_logs(e);
        fail_msg("%s: no desired after the %d-th", d->id, n);
    }
}

static void await_acks(struct env *e, struct fdev *d, int want)
{
    double end = upk_h_now() + 20;
    while (d->acks < want && upk_h_now() < end)
        pump(e, 0.05);
    if (d->acks != want) {
        dump_logs(e);
        fail_msg("%s: %d acks, want %d", d->id, d->acks, want);
    }
}

/* Waits until serve.log has needle (the controller logged a refusal). */
static void await_log(struct env *e, const char *needle)
{
    double end = upk_h_now() + 20;
    while (!serve_log_has(e, needle) && upk_h_now() < end)
        pump(e, 0.05);
    if (!serve_log_has(e, needle)) {
        dump_logs(e);
        fail_msg("serve.log lacks '%s'", needle);
    }
}

/* Adds device i (with or without its link key), announces it with a state
 * (tagged when it has a key) and waits until the registry lists it. */
static void add_device(struct env *e, bool has_key)
{
    struct fdev *d = &e->dev[e->ndev];
    memset(d, 0, sizeof(*d));
    snprintf(d->id, sizeof(d->id), "dev-%02d", e->ndev);
    d->has_key = has_key;
    d->chunk_status = -1;
    assert_int_equal(upk_link_key_derive(LINK_SECRET, strlen(LINK_SECRET), d->id, &d->key), UPK_OK);
    assert_int_equal(connect_client(e, d), 0);
    e->ndev++;
    publish_state(d, "", "1.0", UPK_STATUS_IDLE, true);
    say_online(d);
    if (has_key) {
        char line[128];
        snprintf(line, sizeof(line), "device=%s authenticated with its link key", d->id);
        await_log(e, line);
    }
    double end = upk_h_now() + 20;
    for (;;) {
        assert_true(upk_h_now() < end);
        cJSON *a = cli_json(e, "devices", NULL, NULL);
        int got = cJSON_GetArraySize(a);
        cJSON_Delete(a);
        if (got == e->ndev)
            break;
        pump(e, 0.1);
    }
}

static int env_setup_common(void **state, const char *serve_extra)
{
    struct env *e = calloc(1, sizeof(*e));
    if (e == NULL || upk_h_tmpdir(e->dir, sizeof(e->dir)) != 0)
        return -1;
    char cfg[4096];
    if (upk_h_write_file(e->dir, "passwd", "") != 0 || add_user(e->dir, "ctl", "ctl-pw") != 0 ||
        add_user(e->dir, "alice", "alice-pw") != 0 || add_user(e->dir, "root", "root-pw") != 0 ||
        upk_h_write_file(e->dir, "fleet.secret", SECRET "\n") != 0 ||
        upk_h_write_file(e->dir, "link.secret", LINK_SECRET "\n") != 0 ||
        upk_h_write_file(e->dir, "ctl.pw", "ctl-pw\n") != 0 ||
        upk_h_write_file(e->dir, "alice.pw", "alice-pw\n") != 0)
        return -1;
    snprintf(cfg, sizeof(cfg),
             "{\"password_file\":\"passwd\",\"fleet_secret_file\":\"fleet.secret\","
             "\"accounts\":{\"ctl\":\"controller\",\"alice\":\"operator\",\"root\":\"admin\"}}");
    if (upk_h_write_file(e->dir, "upkeep.json", cfg) != 0)
        return -1;
    snprintf(cfg, sizeof(cfg),
             "allow_anonymous false\nplugin %s\nplugin_opt_config %s/upkeep.json\n"
             "max_queued_messages 100000\nlog_type all\n",
             UPK_BROKER_PLUGIN, e->dir);
    if (upk_h_broker_start(&e->b, e->dir, cfg, 10.0) != 0)
        return -1;
    char keyp[UPK_H_PATH_MAX + 16];
    snprintf(keyp, sizeof(keyp), "%s/rel", e->dir);
    char *kg[] = {(char *)UPK_BIN, "keygen", "--out", keyp, NULL};
    if (run_wait(kg, NULL, 30) != 0)
        return -1;
    snprintf(cfg, sizeof(cfg),
             "{\"data_dir\":\"%s/data\",\"broker\":\"tcp://127.0.0.1:%d\",\"username\":\"ctl\","
             "\"password_file\":\"%s/ctl.pw\",\"client_id\":\"ctl\",\"release_keys\":"
             "[\"%s/rel.pub\"],\"tick_ms\":100,\"link_secret_file\":\"%s/link.secret\"%s}",
             e->dir, e->b.port, e->dir, e->dir, e->dir, serve_extra);
    if (upk_h_write_file(e->dir, "serve.json", cfg) != 0 || start_serve(e) != 0)
        return -1;
    for (size_t i = 0; i < ART_LEN; i++)
        e->art[i] = (uint8_t)(i * 31 + 7);
    upk_sha256_buf(e->art, ART_LEN, e->art_sha);
    char artp[UPK_H_PATH_MAX + 16];
    snprintf(artp, sizeof(artp), "%s/image.bin", e->dir);
    FILE *f = fopen(artp, "wb");
    if (f == NULL || fwrite(e->art, 1, ART_LEN, f) != ART_LEN || fclose(f) != 0)
        return -1;
    *state = e;
    return 0;
}

static int env_setup(void **state)
{
    return env_setup_common(state, "");
}

static int env_setup_required(void **state)
{
    return env_setup_common(state, ",\"require_device_auth\":true");
}

static int env_setup_refresh(void **state)
{
    return env_setup_common(state, ",\"desired_refresh_s\":60");
}

static int env_teardown(void **state)
{
    struct env *e = *state;
    for (int i = 0; i < e->ndev; i++)
        upk_h_client_close(e->dev[i].c);
    stop_serve(e);
    upk_h_broker_stop(&e->b);
    if (getenv("UPK_KEEP") == NULL)
        upk_h_rmtree(e->dir);
    else
        fprintf(stderr, "kept %s\n", e->dir);
    free(e);
    return 0;
}

/* Signs and imports release fw-VERSION over MQTT. */
static void make_release(struct env *e, const char *version)
{
    char keyp[UPK_H_PATH_MAX + 16], artp[UPK_H_PATH_MAX + 16], bundle[UPK_H_PATH_MAX + 64];
    snprintf(keyp, sizeof(keyp), "%s/rel.key", e->dir);
    snprintf(artp, sizeof(artp), "%s/image.bin", e->dir);
    assert_int_equal(cli(e, "release", "create", artp, "--name", "fw", "--version", version,
                         "--security-version", "1", "--hw", "hw-a", "--module", "file", "--expires",
                         "30d", "--key", keyp, "--out", e->dir, (char *)NULL),
                     0);
    snprintf(bundle, sizeof(bundle), "%s/fw-%s.release.json", e->dir, version);
    assert_int_equal(cli(e, "release", "import", bundle, (char *)NULL), 0);
}

/* Waits until campaign id is in state; returns `campaign show --devices`. */
static cJSON *await_campaign(struct env *e, const char *id, const char *state)
{
    double end = upk_h_now() + 60;
    while (upk_h_now() < end) {
        pump(e, 0.2);
        if (cli(e, "campaign", "show", id, "--devices", "--json", (char *)NULL) == 0) {
            cJSON *c = cJSON_Parse(outbuf);
            if (c != NULL && strcmp(jstr(c, "state"), state) == 0)
                return c;
            cJSON_Delete(c);
        }
    }
    dump_logs(e);
    return NULL;
}

/* What the controller holds about d: campaign row state in campaign, the
 * number of stored events and the version in its registry. */
struct snapshot {
    char row[32];
    int events;
    char version[65];
    char status[32];
};

static struct snapshot snap(struct env *e, struct fdev *d, const char *campaign)
{
    struct snapshot s;
    memset(&s, 0, sizeof(s));
    cJSON *c = cli_json(e, "campaign", "show", campaign);
    assert_non_null(c);
    cJSON_Delete(c);
    assert_int_equal(cli(e, "campaign", "show", campaign, "--devices", "--json", (char *)NULL), 0);
    c = cJSON_Parse(outbuf);
    const cJSON *row;
    cJSON_ArrayForEach(row, cJSON_GetObjectItem(c, "device_list"))
    {
        if (strcmp(jstr(row, "device"), d->id) == 0)
            snprintf(s.row, sizeof(s.row), "%s", jstr(row, "state"));
    }
    cJSON_Delete(c);
    c = cli_json(e, "devices", "show", d->id);
    assert_non_null(c);
    s.events = cJSON_GetArraySize(cJSON_GetObjectItem(c, "events"));
    snprintf(s.version, sizeof(s.version), "%s", jstr(c, "version"));
    snprintf(s.status, sizeof(s.status), "%s", jstr(c, "status"));
    cJSON_Delete(c);
    return s;
}

static void assert_same(const struct snapshot *a, const struct snapshot *b)
{
    assert_string_equal(a->row, b->row);
    assert_int_equal(a->events, b->events);
    assert_string_equal(a->version, b->version);
    assert_string_equal(a->status, b->status);
}

/* Runs campaign id of fw-VERSION over the first device, which acts like an
 * agent with its link key: downloading, committed (tagged), acked. */
static void update_dev0(struct env *e, const char *id, const char *version)
{
    struct fdev *d = &e->dev[0];
    int before = d->desired_n;
    assert_int_equal(cli(e, "campaign", "create", "--release",
                         version[0] == '2' ? "fw-2.0" : "fw-3.0", "--id", id, "--stages", "100%",
                         "--target", "id=dev-00", (char *)NULL),
                     0);
    /* The desired of campaign id (an authenticated clear issued when the
     * device authenticated may come first). */
    double end = upk_h_now() + 20;
    while ((d->desired_n == before || strcmp(d->last_campaign, id) != 0) && upk_h_now() < end)
        pump(e, 0.05);
    if (strcmp(d->last_campaign, id) != 0)
        dump_logs(e);
    assert_true(d->last_tag_ok);
    assert_string_equal(d->last_campaign, id);
    assert_string_equal(d->last_version, version);
    int acks = d->acks;
    publish_event(d, 0, id, "fw", version, UPK_STATUS_DOWNLOADING, UPK_OK, true, false);
    await_acks(e, d, acks + 1);
    publish_event(d, 0, id, "fw", version, UPK_STATUS_COMMITTED, UPK_OK, true, false);
    await_acks(e, d, acks + 2);
    publish_state(d, id, version, UPK_STATUS_COMMITTED, true);
    cJSON *c = await_campaign(e, id, "completed");
    assert_non_null(c);
    cJSON_Delete(c);
}

/* The controller tags every desired (with ctr, fresh_until), chunk reply and
 * ack; a device's desired is issued again with a higher ctr (the same
 * assignment) when it comes back online; a rollback to "nothing" is an
 * authenticated clear, not an empty payload. */
static void controller_tags_desired_chunks_and_acks(void **state)
{
    struct env *e = *state;
    add_device(e, true);
    struct fdev *d = &e->dev[0];
    make_release(e, "2.0");
    int64_t now = (int64_t)time(NULL);
    update_dev0(e, "c1", "2.0");
    assert_int_equal(d->desired_bad_tag, 0);
    assert_false(d->last_rollback);
    assert_true(d->last_ctr > 0);
    /* fresh_until = issue time + 4 x desired_refresh_s (default 21600). */
    assert_true(d->last_fresh_until >= now + 4 * 21600 - 5);
    assert_true(d->last_fresh_until <= now + 4 * 21600 + 120);
    assert_int_equal(d->acks_bad_tag, 0);
    assert_true(d->acks >= 2);
    /* A chunk request (tagged) gets a tagged chunk reply. */
    request_chunk(e, d, true);
    double end = upk_h_now() + 10;
    while (d->chunk_status < 0 && upk_h_now() < end)
        pump(e, 0.05);
    assert_int_equal(d->chunk_status, UPK_CHUNK_OK);
    assert_int_equal(d->chunk_bad_tag, 0);
    /* Back online: the same assignment with a higher ctr, tagged. */
    uint64_t ctr = d->last_ctr;
    int n = d->desired_n;
    say_online(d);
    await_desired(e, d, n);
    assert_true(d->last_tag_ok);
    assert_true(d->last_ctr > ctr);
    assert_string_equal(d->last_campaign, "c1");
    assert_string_equal(d->last_version, "2.0");
    /* Rolled back: dev-00 had no desired before c1, so it gets a clear,
     * authenticated ({"v":1,"ctr":..,"fresh_until":..}). */
    ctr = d->last_ctr;
    n = d->desired_n;
    assert_int_equal(cli(e, "campaign", "rollback", "c1", (char *)NULL), 0);
    await_desired(e, d, n);
    assert_true(d->last_tag_ok);
    assert_true(d->last_len > 0);
    assert_true(d->last_clear);
    assert_true(d->last_ctr > ctr);
    assert_int_equal(d->desired_bad_tag, 0);
}

/* Attack 7 (a sniffed device password) with attacks 2 and 4 on the
 * controller side. Once dev-00 has authenticated, a client with only its
 * MQTT password can no longer claim events or state: untagged ones are
 * refused (AUTH_REQUIRED), wrongly tagged ones too (AUTH_INVALID), none is
 * acked or stored, no seq is pre-claimed, and the campaign row, stored
 * events and registry state stay as they were. A real (tagged) report
 * without a release (a device refusing a forged desired) does not move the
 * row; a real state on another release is flagged as drift. */
static void sniffed_password_changes_nothing(void **state)
{
    struct env *e = *state;
    add_device(e, true);
    struct fdev *d = &e->dev[0];
    make_release(e, "2.0");
    update_dev0(e, "c1", "2.0");
    struct snapshot before = snap(e, d, "c1");
    assert_string_equal(before.row, "succeeded");
    assert_string_equal(before.version, "2.0");
    /* The real link is cut; the thief logs in with the password alone. */
    upk_h_client_close(d->c);
    d->c = NULL;
    struct fdev thief = *d;
    thief.has_key = false;
    thief.acks = 0;
    assert_int_equal(connect_client(e, &thief), 0);
    e->dev[0] = thief;
    for (uint64_t seq = 3; seq <= 10; seq++)
        publish_event(&e->dev[0], seq, "c1", "fw", "2.0", UPK_STATUS_ROLLED_BACK,
                      UPK_E_HEALTH_FAILED, false, false);
    publish_state(&e->dev[0], "c1", "1.0", UPK_STATUS_ROLLED_BACK, false);
    request_chunk(e, &e->dev[0], false);
    await_log(e, "refused events of device=dev-00 err=AUTH_REQUIRED");
    await_log(e, "refused state of device=dev-00 err=AUTH_REQUIRED");
    await_log(e, "refused chunk/req of device=dev-00 err=AUTH_REQUIRED");
    /* A wrong tag (the thief guessing, or a tag moved from other bytes). */
    e->dev[0].has_key = true;
    publish_event(&e->dev[0], 11, "c1", "fw", "2.0", UPK_STATUS_FAILED, UPK_E_HASH_MISMATCH, true,
                  true);
    await_log(e, "refused events of device=dev-00 err=AUTH_INVALID");
    pump(e, 0.5);
    assert_int_equal(e->dev[0].acks, 0);
    assert_int_equal(e->dev[0].chunk_status, -1);
    struct snapshot after = snap(e, d, "c1");
    assert_same(&before, &after);
    /* The real device is back: its next real event (seq 3) is stored. */
    upk_h_client_close(e->dev[0].c);
    *d = thief;
    d->has_key = true;
    d->acks = 0;
    assert_int_equal(connect_client(e, d), 0);
    publish_event(d, 3, "", "", "", UPK_STATUS_IDLE, UPK_OK, true, false);
    await_acks(e, d, 1);
    assert_true(d->last_ack == 3);
    assert_int_equal(d->acks_bad_tag, 0);
    /* Attack 2: the device (tagged) reports the rejection of a desired that
     * named c1 but whose signature failed: no release, no version. */
    publish_event(d, 4, "c1", "", "", UPK_STATUS_REJECTED, UPK_E_SIG_INVALID, true, false);
    await_acks(e, d, 2);
    struct snapshot now = snap(e, d, "c1");
    assert_string_equal(now.row, "succeeded");
    assert_int_equal(now.events, before.events + 2);
    /* Attack 4: it runs 1.0 again (a replayed, validly signed release):
     * the row stays as it was, and drift shows it everywhere. */
    publish_state(d, "c1", "1.0", UPK_STATUS_COMMITTED, true);
    double end = upk_h_now() + 20;
    cJSON *list = NULL;
    while (upk_h_now() < end) {
        cJSON_Delete(list);
        list = cli_json(e, "devices", NULL, NULL);
        if (jnum(cJSON_GetArrayItem(list, 0), "drift") == 1)
            break;
        pump(e, 0.1);
    }
    assert_int_equal(jnum(cJSON_GetArrayItem(list, 0), "drift"), 1);
    assert_string_equal(jstr(cJSON_GetArrayItem(list, 0), "version"), "1.0");
    cJSON_Delete(list);
    cJSON *c = cli_json(e, "campaign", "show", "c1");
    assert_int_equal(jnum(c, "drift"), 1);
    assert_int_equal(jnum(cJSON_GetObjectItem(c, "counts"), "succeeded"), 1);
    cJSON_Delete(c);
    assert_int_equal(cli(e, "campaign", "watch", "c1", (char *)NULL), 0);
    assert_non_null(strstr(outbuf, "drift=1"));
    c = cli_json(e, "report", "posture", NULL);
    assert_int_equal(jnum(cJSON_GetObjectItem(c, "summary"), "drift"), 1);
    assert_string_equal(jstr(cJSON_GetArrayItem(cJSON_GetObjectItem(c, "drift"), 0), "id"),
                        "dev-00");
    cJSON_Delete(c);
}

/* Attack 4, the restart: a retained desired that the broker's admin account
 * left on a device's topic while the controller was down does not stay in
 * place: at start the controller publishes every desired afresh (higher
 * ctr, tagged). */
static void restart_replaces_a_foreign_retained_desired(void **state)
{
    struct env *e = *state;
    add_device(e, true);
    struct fdev *d = &e->dev[0];
    make_release(e, "2.0");
    update_dev0(e, "c1", "2.0");
    uint64_t ctr = d->last_ctr;
    struct snapshot before = snap(e, d, "c1");
    stop_serve(e);
    upk_h_client *root = NULL;
    int reason;
    assert_int_equal(upk_h_client_connect(&root, e->b.port, "root", "root", "root-pw", &reason), 0);
    char topic[128];
    snprintf(topic, sizeof(topic), PREFIX "/dev/%s/desired", d->id);
    /* The controller's own earlier payload, replayed without a valid tag. */
    assert_int_equal(
        upk_h_client_publish(root, topic, d->last_payload, d->last_len, 1, true, NULL, &reason), 0);
    int n = d->desired_n;
    await_desired(e, d, n);
    assert_false(d->last_tag_ok); /* the device sees the foreign one ... */
    n = d->desired_n;
    assert_int_equal(start_serve(e), 0);
    await_desired(e, d, n); /* ... and then the controller's */
    assert_true(d->last_tag_ok);
    assert_true(d->last_ctr > ctr);
    assert_string_equal(d->last_campaign, "c1");
    /* What the broker retains now is the controller's. */
    upk_h_client_close(root);
    root = NULL;
    assert_int_equal(upk_h_client_connect(&root, e->b.port, "root", "root", "root-pw", &reason), 0);
    assert_int_equal(upk_h_client_subscribe(root, topic, 1, &reason), 0);
    assert_int_equal(upk_h_client_wait_msg(root, 10, &msgbuf), 0);
    assert_true(msgbuf.retained);
    assert_true(tag_ok(d, UPK_TOPIC_DEV_DESIRED, &msgbuf));
    upk_h_client_close(root);
    struct snapshot after = snap(e, d, "c1");
    assert_same(&before, &after);
    /* The device's retained state kept its tag on the broker: the restarted
     * controller took it, not refused it. */
    assert_false(serve_log_has(e, "refused state of device=dev-00"));
}

/* require_device_auth: an untagged state, event or chunk request of a device
 * that never authenticated is refused too (AUTH_REQUIRED): it is not listed,
 * its event is not acked. A device with its link key works. */
static void required_auth_refuses_untagged_devices(void **state)
{
    struct env *e = *state;
    add_device(e, true);
    struct fdev *legacy = &e->dev[1];
    memset(legacy, 0, sizeof(*legacy));
    snprintf(legacy->id, sizeof(legacy->id), "dev-01");
    legacy->chunk_status = -1;
    assert_int_equal(connect_client(e, legacy), 0);
    e->ndev = 2;
    publish_state(legacy, "", "1.0", UPK_STATUS_IDLE, false);
    publish_event(legacy, 0, "", "", "", UPK_STATUS_IDLE, UPK_OK, false, false);
    await_log(e,
              "refused state of device=dev-01 err=AUTH_REQUIRED (untagged; require_device_auth)");
    await_log(e, "refused events of device=dev-01 err=AUTH_REQUIRED");
    pump(e, 0.5);
    assert_int_equal(legacy->acks, 0);
    cJSON *list = cli_json(e, "devices", NULL, NULL);
    assert_int_equal(cJSON_GetArraySize(list), 1);
    assert_string_equal(jstr(cJSON_GetArrayItem(list, 0), "id"), "dev-00");
    assert_int_equal(jnum(cJSON_GetArrayItem(list, 0), "authed"), 1);
    cJSON_Delete(list);
    publish_event(&e->dev[0], 0, "", "", "", UPK_STATUS_IDLE, UPK_OK, true, false);
    await_acks(e, &e->dev[0], 1);
}

/* Migration step 1: a device without a link key keeps working while the
 * controller has a link secret: its untagged reports count, and what it is
 * sent again for the same assignment (at reconnect, at a controller
 * restart) is byte-identical, since such an agent identifies a desired by
 * the hash of its whole payload and would otherwise restart its update. */
static void device_without_key_keeps_identical_desired(void **state)
{
    struct env *e = *state;
    add_device(e, false);
    struct fdev *d = &e->dev[0];
    make_release(e, "2.0");
    assert_int_equal(cli(e, "campaign", "create", "--release", "fw-2.0", "--id", "c1", "--stages",
                         "100%", (char *)NULL),
                     0);
    await_desired(e, d, 0);
    char first[UPK_H_PAYLOAD_MAX + 1];
    size_t first_len = d->last_len;
    memcpy(first, d->last_payload, sizeof(first));
    assert_string_equal(d->last_campaign, "c1");
    publish_event(d, 0, "c1", "fw", "2.0", UPK_STATUS_DOWNLOADING, UPK_OK, false, false);
    await_acks(e, d, 1);
    say_online(d);
    stop_serve(e);
    int n = d->desired_n;
    assert_int_equal(start_serve(e), 0);
    await_desired(e, d, n);
    assert_int_equal(d->last_len, first_len);
    assert_memory_equal(d->last_payload, first, first_len);
    publish_event(d, 0, "c1", "fw", "2.0", UPK_STATUS_COMMITTED, UPK_OK, false, false);
    await_acks(e, d, 2);
    cJSON *c = await_campaign(e, "c1", "completed");
    assert_non_null(c);
    cJSON_Delete(c);
    assert_false(serve_log_has(e, "device=dev-00 authenticated"));
    cJSON *list = cli_json(e, "devices", NULL, NULL);
    assert_int_equal(jnum(cJSON_GetArrayItem(list, 0), "authed"), 0);
    cJSON_Delete(list);
}

/* Freshness: every desired_refresh_s (here the minimum, 60 s) the
 * controller issues each authenticated device's desired again, the same
 * assignment with a higher ctr and a later fresh_until (= issue time + 4 x
 * desired_refresh_s), without the device doing anything. */
static void desired_is_refreshed_every_desired_refresh_s(void **state)
{
    struct env *e = *state;
    add_device(e, true);
    struct fdev *d = &e->dev[0];
    make_release(e, "2.0");
    update_dev0(e, "c1", "2.0");
    uint64_t ctr = d->last_ctr;
    int64_t fresh = d->last_fresh_until;
    int64_t now = (int64_t)time(NULL);
    assert_true(fresh >= now + 4 * 60 - 10 && fresh <= now + 4 * 60 + 10);
    int n = d->desired_n;
    double end = upk_h_now() + 90;
    while (d->desired_n == n && upk_h_now() < end)
        pump(e, 0.5);
    if (d->desired_n == n)
        dump_logs(e);
    assert_true(d->desired_n > n);
    assert_true(d->last_tag_ok);
    assert_true(d->last_ctr > ctr);
    assert_true(d->last_fresh_until > fresh);
    assert_string_equal(d->last_campaign, "c1");
    assert_string_equal(d->last_version, "2.0");
    assert_true(serve_log_has(e, "refreshing every desired (desired_refresh_s=60)"));
}

#ifdef UPK_AGENT_BIN
/* Writes image.bin with bytes that depend on seed (another artifact per
 * release) into e->art. */
static void set_image(struct env *e, uint8_t seed)
{
    for (size_t i = 0; i < ART_LEN; i++)
        e->art[i] = (uint8_t)(i * 31 + seed);
    upk_sha256_buf(e->art, ART_LEN, e->art_sha);
    char artp[UPK_H_PATH_MAX + 16];
    snprintf(artp, sizeof(artp), "%s/image.bin", e->dir);
    FILE *f = fopen(artp, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(e->art, 1, ART_LEN, f), ART_LEN);
    assert_int_equal(fclose(f), 0);
}

static bool file_is(const char *path, const uint8_t *want, size_t len)
{
    static uint8_t got[ART_LEN + 1];
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return false;
    size_t n = fread(got, 1, sizeof(got), f);
    fclose(f);
    return n == len && memcmp(got, want, len) == 0;
}

/* Real upkeep-agent processes with link keys (printed by `upkeep device-key
 * --link-secret-file`) against `upkeep serve` with the link secret: they
 * authenticate, complete a campaign, and a rollback of the next campaign
 * (the older release, same security_version, at a lower version) is taken
 * because the controller's tagged desired says rollback: true. */
static void real_agents_with_link_keys_update_and_roll_back(void **state)
{
    struct env *e = *state;
    enum { NAGENT = 2 };
    pid_t pids[NAGENT];
    char cfg[4096];
    for (int i = 0; i < NAGENT; i++) {
        char id[32], name[64], pw[UPK_DEVKEY_LEN + 2];
        snprintf(id, sizeof(id), "agent-%d", i);
        assert_int_equal(upk_devkey_derive(SECRET, strlen(SECRET), id, pw, sizeof(pw)), UPK_OK);
        snprintf(name, sizeof(name), "%s.pw", id);
        pw[UPK_DEVKEY_LEN] = '\n';
        pw[UPK_DEVKEY_LEN + 1] = '\0';
        assert_int_equal(upk_h_write_file(e->dir, name, pw), 0);
        char lsf[UPK_H_PATH_MAX + 32];
        snprintf(lsf, sizeof(lsf), "%s/link.secret", e->dir);
        assert_int_equal(cli(e, "device-key", "--link-secret-file", lsf, id, (char *)NULL), 0);
        assert_int_equal(strlen(outbuf), UPK_LINK_KEY_HEX_LEN + 1);
        snprintf(name, sizeof(name), "%s.link", id);
        assert_int_equal(upk_h_write_file(e->dir, name, outbuf), 0);
        snprintf(cfg, sizeof(cfg),
                 "{\"broker\":\"tcp://127.0.0.1:%d\",\"device_id\":\"%s\","
                 "\"password_file\":\"%s/%s.pw\",\"link_key_file\":\"%s/%s.link\","
                 "\"hardware\":\"hw-a\",\"data_dir\":\"%s/%s-data\",\"keys\":[\"%s/rel.pub\"],"
                 "\"module\":\"file\",\"module_settings\":{\"path\":\"%s/%s.bin\"}}",
                 e->b.port, id, e->dir, id, e->dir, id, e->dir, id, e->dir, e->dir, id);
        snprintf(name, sizeof(name), "%s.json", id);
        assert_int_equal(upk_h_write_file(e->dir, name, cfg), 0);
        char cfgp[UPK_H_PATH_MAX + 64], logp[UPK_H_PATH_MAX + 64], datap[UPK_H_PATH_MAX + 64];
        snprintf(cfgp, sizeof(cfgp), "%s/%s.json", e->dir, id);
        snprintf(logp, sizeof(logp), "%s/%s.log", e->dir, id);
        snprintf(datap, sizeof(datap), "%s/%s-data", e->dir, id);
        assert_int_equal(mkdir(datap, 0700), 0);
        pids[i] = fork();
        if (pids[i] == 0) {
            int fd = open(logp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
            if (fd >= 0) {
                dup2(fd, 1);
                dup2(fd, 2);
                close(fd);
            }
            execl(UPK_AGENT_BIN, UPK_AGENT_BIN, "-c", cfgp, (char *)NULL);
            _exit(127);
        }
        assert_true(pids[i] > 0);
    }
    await_log(e, "device=agent-0 authenticated with its link key");
    await_log(e, "device=agent-1 authenticated with its link key");
    set_image(e, 7);
    uint8_t v2[ART_LEN];
    memcpy(v2, e->art, ART_LEN);
    make_release(e, "2.0");
    assert_int_equal(cli(e, "campaign", "create", "--release", "fw-2.0", "--id", "c2", "--stages",
                         "100%", "--device-timeout", "60s", (char *)NULL),
                     0);
    cJSON *c = await_campaign(e, "c2", "completed");
    assert_non_null(c);
    assert_int_equal(jnum(cJSON_GetObjectItem(c, "counts"), "succeeded"), NAGENT);
    cJSON_Delete(c);
    set_image(e, 9);
    make_release(e, "3.0");
    assert_int_equal(cli(e, "campaign", "create", "--release", "fw-3.0", "--id", "c3", "--stages",
                         "100%", "--device-timeout", "60s", (char *)NULL),
                     0);
    c = await_campaign(e, "c3", "completed");
    assert_non_null(c);
    assert_int_equal(jnum(cJSON_GetObjectItem(c, "counts"), "succeeded"), NAGENT);
    cJSON_Delete(c);
    assert_int_equal(cli(e, "campaign", "rollback", "c3", (char *)NULL), 0);
    /* Both run 2.0 again: their registry versions, and the files. */
    double end = upk_h_now() + 60;
    int back = 0;
    while (upk_h_now() < end && back != NAGENT) {
        back = 0;
        cJSON *list = cli_json(e, "devices", NULL, NULL);
        const cJSON *row;
        cJSON_ArrayForEach(row, list)
        {
            back += strcmp(jstr(row, "version"), "2.0") == 0 &&
                    strcmp(jstr(row, "status"), "committed") == 0 && jnum(row, "drift") == 0;
        }
        cJSON_Delete(list);
    }
    if (back != NAGENT) {
        char p[UPK_H_PATH_MAX + 64];
        snprintf(p, sizeof(p), "tail -30 %s/agent-0.log >&2", e->dir);
        int r = system(p);
        (void)r;
        dump_logs(e);
    }
    assert_int_equal(back, NAGENT);
    for (int i = 0; i < NAGENT; i++) {
        char p[UPK_H_PATH_MAX + 64];
        snprintf(p, sizeof(p), "%s/agent-%d.bin", e->dir, i);
        assert_true(file_is(p, v2, ART_LEN));
        kill(pids[i], SIGTERM);
        waitpid(pids[i], NULL, 0);
    }
    assert_false(serve_log_has(e, "err=AUTH_INVALID"));
    assert_false(serve_log_has(e, "err=AUTH_REQUIRED"));
}
#endif

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(controller_tags_desired_chunks_and_acks, env_setup,
                                        env_teardown),
        cmocka_unit_test_setup_teardown(sniffed_password_changes_nothing, env_setup, env_teardown),
        cmocka_unit_test_setup_teardown(restart_replaces_a_foreign_retained_desired, env_setup,
                                        env_teardown),
        cmocka_unit_test_setup_teardown(required_auth_refuses_untagged_devices, env_setup_required,
                                        env_teardown),
        cmocka_unit_test_setup_teardown(device_without_key_keeps_identical_desired, env_setup,
                                        env_teardown),
        cmocka_unit_test_setup_teardown(desired_is_refreshed_every_desired_refresh_s,
                                        env_setup_refresh, env_teardown),
#ifdef UPK_AGENT_BIN
        cmocka_unit_test_setup_teardown(real_agents_with_link_keys_update_and_roll_back, env_setup,
                                        env_teardown),
#endif
    };
    if (getenv("UPK_TEST_FILTER") != NULL)
        cmocka_set_test_filter(getenv("UPK_TEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
