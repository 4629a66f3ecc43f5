/* Integration tests of `upkeep serve` and the `upkeep` operator CLI against a
 * real mosquitto with upkeep_broker.so on a free 127.0.0.1 port. Devices are
 * scripted fake agents (harness MQTT clients with device credentials) that
 * report state, follow their desired release, fetch a chunk and publish
 * events, so that every campaign rule can be checked exactly: a 3-stage
 * campaign completes in stage order; a failing stage halts and auto-rollback
 * restores the previous release; pause/resume/abort; per-device timeout;
 * rate and in-flight caps (from the controller's timestamps); kill -9 of
 * the controller mid-campaign; operators without rights and malformed or
 * forged requests are refused and change nothing. */
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
#include "upkeep/manifest.h"
#include "upkeep/msg.h"

#define SECRET   "controller-fleet-secret-0123456789"
#define PREFIX   "upkeep/v1"
#define NDEV_MAX 24
#define ART_LEN  5000

typedef enum { DEV_OK, DEV_FAIL, DEV_SILENT, DEV_SLOW } dev_mode;

struct fdev {
    upk_h_client *c;
    char id[32];
    dev_mode mode;
    uint64_t seq;
    char version[65];
    uint64_t secver;
    int desired_count; /* desired messages with a release */
    char last_campaign[65];
    char last_version[65];
    char acted[8][140]; /* campaign/version pairs already acted on */
    int acted_n;
    double due; /* DEV_SLOW: when to commit */
    int commits;
    int chunk_status;     /* of the last chunk reply, -1 none */
    char st_campaign[65]; /* reported in state, like an agent */
    upk_status st_status;
    int acks;          /* dev/{d}/ack messages received */
    uint64_t last_ack; /* seq of the last one */
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

/* Runs `upkeep ARGS...` as operator user; stdout into e->dir/out.txt (and
 * returned in out when given). Returns the exit status. */
static int cli(struct env *e, const char *user, char *out, size_t cap, ...)
{
    char *argv[40];
    int n = 0;
    argv[n++] = (char *)UPK_BIN;
    va_list ap;
    va_start(ap, cap);
    const char *a;
    while ((a = va_arg(ap, const char *)) != NULL && n < 38)
        argv[n++] = (char *)a;
    va_end(ap);
    argv[n] = NULL;
    char broker[64], pwf[UPK_H_PATH_MAX + 32], outp[UPK_H_PATH_MAX + 32];
    snprintf(broker, sizeof(broker), "tcp://127.0.0.1:%d", e->b.port);
    snprintf(pwf, sizeof(pwf), "%s/%s.pw", e->dir, user);
    snprintf(outp, sizeof(outp), "%s/out.txt", e->dir);
    setenv("UPKEEP_BROKER", broker, 1);
    setenv("UPKEEP_USER", user, 1);
    setenv("UPKEEP_PASSWORD_FILE", pwf, 1);
    setenv("HOME", e->dir, 1);
    int rc = run_wait(argv, outp, 60);
    if (out != NULL) {
        out[0] = '\0';
        FILE *f = fopen(outp, "r");
        if (f != NULL) {
            size_t len = fread(out, 1, cap - 1, f);
            out[len] = '\0';
            fclose(f);
        }
    }
    return rc;
}

static char outbuf[1 << 20];

/* `upkeep campaign show ID --devices --json`, parsed. */
static cJSON *campaign_show(struct env *e, const char *id)
{
    if (cli(e, "alice", outbuf, sizeof(outbuf), "campaign", "show", id, "--devices", "--json",
            (char *)NULL) != 0)
        return NULL;
    return cJSON_Parse(outbuf);
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

static int write_pw(struct env *e, const char *user, const char *pw)
{
    char name[80];
    snprintf(name, sizeof(name), "%s.pw", user);
    return upk_h_write_file(e->dir, name, pw);
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
    /* Ready when it answers a ping... via the CLI's reachability. */
    double end = upk_h_now() + 20;
    while (upk_h_now() < end) {
        if (cli(e, "alice", NULL, 0, "campaign", "list", "--timeout", "2", (char *)NULL) == 0)
            return 0;
    }
    return -1;
}

static void stop_serve(struct env *e, int sig)
{
    if (e->serve > 0) {
        kill(e->serve, sig);
        int st;
        waitpid(e->serve, &st, 0);
        e->serve = 0;
    }
}

static void dump_logs(struct env *e)
{
    char p[UPK_H_PATH_MAX + 32];
    snprintf(p, sizeof(p), "%s/serve.log", e->dir);
    FILE *f = fopen(p, "r");
    if (f != NULL) {
        char line[1024];
        int n = 0;
        fprintf(stderr, "---- serve.log (tail) ----\n");
        while (fgets(line, sizeof(line), f) != NULL)
            n++;
        rewind(f);
        int k = 0;
        while (fgets(line, sizeof(line), f) != NULL)
            if (++k > n - 60)
                fputs(line, stderr);
        fclose(f);
    }
}

static void publish_state(struct fdev *d)
{
    upk_state_msg m;
    memset(&m, 0, sizeof(m));
    snprintf(m.device, sizeof(m.device), "%s", d->id);
    snprintf(m.hw, sizeof(m.hw), "hw-a");
    snprintf(m.release, sizeof(m.release), "fw");
    snprintf(m.version, sizeof(m.version), "%s", d->version);
    m.security_version = d->secver;
    m.status = d->st_status;
    snprintf(m.campaign, sizeof(m.campaign), "%s", d->st_campaign);
    m.cap.automatic = m.cap.signed_only = m.cap.rollback = true;
    m.cap.module_count = 1;
    snprintf(m.cap.modules[0], sizeof(m.cap.modules[0]), "file");
    m.ts = time(NULL);
    snprintf(m.agent, sizeof(m.agent), "fake-1");
    char *json = NULL;
    size_t len = 0;
    assert_int_equal(upk_state_encode(&m, &json, &len), UPK_OK);
    char topic[128];
    snprintf(topic, sizeof(topic), PREFIX "/dev/%s/state", d->id);
    int reason;
    assert_int_equal(upk_h_client_publish(d->c, topic, json, len, 1, true, NULL, &reason), 0);
    free(json);
}

static void publish_event(struct fdev *d, const char *campaign, const char *version,
                          upk_status step, upk_err err)
{
    upk_event_msg e;
    memset(&e, 0, sizeof(e));
    e.seq = ++d->seq;
    e.ts = time(NULL);
    snprintf(e.campaign, sizeof(e.campaign), "%s", campaign);
    snprintf(e.release, sizeof(e.release), "fw");
    snprintf(e.version, sizeof(e.version), "%s", version);
    e.step = step;
    e.error = err;
    char *json = NULL;
    size_t len = 0;
    assert_int_equal(upk_event_encode(&e, &json, &len), UPK_OK);
    char topic[128];
    snprintf(topic, sizeof(topic), PREFIX "/dev/%s/events", d->id);
    int reason;
    assert_int_equal(upk_h_client_publish(d->c, topic, json, len, 1, false, NULL, &reason), 0);
    free(json);
}

static void request_chunk(struct fdev *d, const uint8_t sha[32], uint64_t off, uint32_t len)
{
    upk_chunk_req r;
    memset(&r, 0, sizeof(r));
    memcpy(r.artifact, sha, 32);
    r.offset = off;
    r.length = len;
    char *json = NULL;
    size_t jl = 0;
    assert_int_equal(upk_chunk_req_encode(&r, &json, &jl), UPK_OK);
    char topic[128];
    snprintf(topic, sizeof(topic), PREFIX "/dev/%s/chunk/req", d->id);
    int reason;
    assert_int_equal(upk_h_client_publish(d->c, topic, json, jl, 1, false, NULL, &reason), 0);
    free(json);
}

static int connect_dev(struct env *e, int i, dev_mode mode)
{
    struct fdev *d = &e->dev[i];
    memset(d, 0, sizeof(*d));
    snprintf(d->id, sizeof(d->id), "dev-%02d", i);
    snprintf(d->version, sizeof(d->version), "1.0");
    d->secver = 1;
    d->mode = mode;
    d->chunk_status = -1;
    char pw[UPK_DEVKEY_LEN + 1];
    assert_int_equal(upk_devkey_derive(SECRET, strlen(SECRET), d->id, pw, sizeof(pw)), UPK_OK);
    int reason;
    if (upk_h_client_connect(&d->c, e->b.port, d->id, d->id, pw, &reason) != 0)
        return -1;
    char topic[128];
    snprintf(topic, sizeof(topic), PREFIX "/dev/%s/desired", d->id);
    if (upk_h_client_subscribe(d->c, topic, 1, &reason) != 0)
        return -1;
    snprintf(topic, sizeof(topic), PREFIX "/dev/%s/chunk/data", d->id);
    if (upk_h_client_subscribe(d->c, topic, 1, &reason) != 0)
        return -1;
    snprintf(topic, sizeof(topic), PREFIX "/dev/%s/ack", d->id);
    if (upk_h_client_subscribe(d->c, topic, 0, &reason) != 0)
        return -1;
    publish_state(d);
    snprintf(topic, sizeof(topic), PREFIX "/dev/%s/online", d->id);
    return upk_h_client_publish(d->c, topic, "1", 1, 1, true, NULL, &reason);
}

/* Handles what arrived for every device; acts like an agent per its mode. */
static void pump(struct env *e, double wait_s)
{
    for (int i = 0; i < e->ndev; i++) {
        struct fdev *d = &e->dev[i];
        while (upk_h_client_wait_msg(d->c, i == 0 ? wait_s : 0.0, &msgbuf) == 0) {
            size_t tl = strlen(msgbuf.topic);
            if (tl > 11 && strcmp(msgbuf.topic + tl - 11, "/chunk/data") == 0) {
                upk_chunk_hdr h;
                const uint8_t *data = NULL;
                if (msgbuf.len <= UPK_H_PAYLOAD_MAX &&
                    upk_chunk_parse((const uint8_t *)msgbuf.payload, msgbuf.len, &h, &data) ==
                        UPK_OK) {
                    d->chunk_status = (int)h.status;
                    if (h.status == UPK_CHUNK_OK &&
                        (h.offset + h.length > ART_LEN ||
                         memcmp(data, e->art + h.offset, h.length) != 0))
                        d->chunk_status = 99; /* wrong bytes */
                }
                continue;
            }
            if (tl > 4 && strcmp(msgbuf.topic + tl - 4, "/ack") == 0) {
                uint64_t seq = 0;
                if (upk_ack_decode(msgbuf.payload, msgbuf.len, &seq) == UPK_OK) {
                    d->acks++;
                    d->last_ack = seq;
                }
                continue;
            }
            if (msgbuf.len == 0)
                continue;
            upk_desired_msg des;
            memset(&des, 0, sizeof(des));
            if (upk_desired_decode(msgbuf.payload, msgbuf.len, &des) != UPK_OK)
                continue;
            upk_manifest m;
            int ok = upk_manifest_decode(des.manifest, des.manifest_len, &m) == UPK_OK;
            upk_desired_cleanup(&des);
            if (!ok)
                continue;
            d->desired_count++;
            snprintf(d->last_campaign, sizeof(d->last_campaign), "%s", des.campaign);
            snprintf(d->last_version, sizeof(d->last_version), "%s", m.version);
            /* Act once per (campaign, version), like an agent's journal. */
            char key[140];
            snprintf(key, sizeof(key), "%s/%s", des.campaign, m.version);
            bool seen = false;
            for (int k = 0; k < d->acted_n; k++)
                seen = seen || strcmp(d->acted[k], key) == 0;
            if (seen || strcmp(m.version, d->version) == 0 || d->acted_n >= 8)
                continue;
            snprintf(d->acted[d->acted_n++], sizeof(d->acted[0]), "%s", key);
            if (d->mode == DEV_SILENT)
                continue;
            publish_event(d, des.campaign, m.version, UPK_STATUS_DOWNLOADING, UPK_OK);
            if (d->mode == DEV_FAIL) {
                publish_event(d, des.campaign, m.version, UPK_STATUS_FAILED, UPK_E_HASH_MISMATCH);
                snprintf(d->st_campaign, sizeof(d->st_campaign), "%s", des.campaign);
                d->st_status = UPK_STATUS_FAILED;
                publish_state(d);
                continue;
            }
            if (d->mode == DEV_SLOW) {
                d->due = upk_h_now() + 0.6;
                continue;
            }
            publish_event(d, des.campaign, m.version, UPK_STATUS_COMMITTED, UPK_OK);
            d->commits++;
            snprintf(d->version, sizeof(d->version), "%s", m.version);
            d->secver = m.security_version;
            snprintf(d->st_campaign, sizeof(d->st_campaign), "%s", des.campaign);
            d->st_status = UPK_STATUS_COMMITTED;
            publish_state(d);
        }
        if (d->mode == DEV_SLOW && d->due > 0 && upk_h_now() >= d->due) {
            d->due = 0;
            char *slash = strchr(d->acted[d->acted_n - 1], '/');
            char camp[65];
            snprintf(camp, sizeof(camp), "%.*s", (int)(slash - d->acted[d->acted_n - 1]),
                     d->acted[d->acted_n - 1]);
            publish_event(d, camp, slash + 1, UPK_STATUS_COMMITTED, UPK_OK);
            d->commits++;
            snprintf(d->version, sizeof(d->version), "%s", slash + 1);
            snprintf(d->st_campaign, sizeof(d->st_campaign), "%s", camp);
            d->st_status = UPK_STATUS_COMMITTED;
            publish_state(d);
        }
    }
}

/* Pumps devices until campaign id reaches state (or timeout). */
static cJSON *pump_until(struct env *e, const char *id, const char *state, double timeout_s)
{
    double end = upk_h_now() + timeout_s;
    double next_check = 0;
    while (upk_h_now() < end) {
        pump(e, 0.05);
        if (upk_h_now() < next_check)
            continue;
        next_check = upk_h_now() + 0.5;
        cJSON *c = campaign_show(e, id);
        if (c != NULL && strcmp(jstr(c, "state"), state) == 0)
            return c;
        cJSON_Delete(c);
    }
    dump_logs(e);
    return NULL;
}

static int env_setup(void **state)
{
    struct env *e = calloc(1, sizeof(*e));
    if (e == NULL || upk_h_tmpdir(e->dir, sizeof(e->dir)) != 0)
        return -1;
    char cfg[4096];
    if (upk_h_write_file(e->dir, "passwd", "") != 0 || add_user(e->dir, "ctl", "ctl-pw") != 0 ||
        add_user(e->dir, "alice", "alice-pw") != 0 ||
        add_user(e->dir, "viewer", "viewer-pw") != 0 || add_user(e->dir, "root", "root-pw") != 0 ||
        upk_h_write_file(e->dir, "fleet.secret", SECRET "\n") != 0 ||
        write_pw(e, "ctl", "ctl-pw\n") != 0 || write_pw(e, "alice", "alice-pw\n") != 0 ||
        write_pw(e, "viewer", "viewer-pw\n") != 0 || write_pw(e, "mallory", "nope\n") != 0)
        return -1;
    snprintf(cfg, sizeof(cfg),
             "{\"password_file\":\"passwd\",\"fleet_secret_file\":\"fleet.secret\","
             "\"accounts\":{\"ctl\":\"controller\",\"alice\":\"operator\",\"viewer\":"
             "\"operator\",\"root\":\"admin\"}}");
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
             "[\"%s/rel.pub\"],\"tick_ms\":100,\"readonly_operators\":[\"viewer\"]}",
             e->dir, e->b.port, e->dir, e->dir);
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

static int env_teardown(void **state)
{
    struct env *e = *state;
    for (int i = 0; i < e->ndev; i++)
        upk_h_client_close(e->dev[i].c);
    stop_serve(e, SIGTERM);
    upk_h_broker_stop(&e->b);
    if (getenv("UPK_KEEP") == NULL)
        upk_h_rmtree(e->dir);
    else
        fprintf(stderr, "kept %s\n", e->dir);
    free(e);
    return 0;
}

/* Signs and imports release fw-VERSION (security_version secver) over MQTT. */
static void make_release(struct env *e, const char *version, const char *secver)
{
    char keyp[UPK_H_PATH_MAX + 16], artp[UPK_H_PATH_MAX + 16], bundle[UPK_H_PATH_MAX + 64];
    snprintf(keyp, sizeof(keyp), "%s/rel.key", e->dir);
    snprintf(artp, sizeof(artp), "%s/image.bin", e->dir);
    assert_int_equal(cli(e, "alice", outbuf, sizeof(outbuf), "release", "create", artp, "--name",
                         "fw", "--version", version, "--security-version", secver, "--hw", "hw-a",
                         "--module", "file", "--expires", "30d", "--key", keyp, "--out", e->dir,
                         (char *)NULL),
                     0);
    snprintf(bundle, sizeof(bundle), "%s/fw-%s.release.json", e->dir, version);
    int rc = cli(e, "alice", outbuf, sizeof(outbuf), "release", "import", bundle, (char *)NULL);
    if (rc != 0)
        dump_logs(e);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(outbuf, "imported release fw-"));
}

static void add_devices(struct env *e, int n, dev_mode mode)
{
    for (int i = e->ndev; i < e->ndev + n; i++)
        assert_int_equal(connect_dev(e, i, mode), 0);
    e->ndev += n;
    /* Wait until the controller has them all in its registry. */
    double end = upk_h_now() + 20;
    for (;;) {
        assert_true(upk_h_now() < end);
        if (cli(e, "alice", outbuf, sizeof(outbuf), "devices", "--online", "--json",
                (char *)NULL) == 0) {
            cJSON *a = cJSON_Parse(outbuf);
            int got = cJSON_GetArraySize(a);
            cJSON_Delete(a);
            if (got == e->ndev)
                break;
        }
    }
}

/* Stage order: no device of stage k+1 started before every device of stage
 * k finished. Returns the number of devices checked. */
static int check_stage_order(const cJSON *c, double soak_ms)
{
    double last_done[16] = {0}, first_start[16];
    for (int k = 0; k < 16; k++)
        first_start[k] = 1e300;
    const cJSON *d;
    int n = 0;
    cJSON_ArrayForEach(d, cJSON_GetObjectItem(c, "device_list"))
    {
        int s = (int)jnum(d, "stage");
        assert_true(s >= 1 && s < 16);
        if (jnum(d, "done_ms") > last_done[s])
            last_done[s] = jnum(d, "done_ms");
        if (jnum(d, "assigned_ms") > 0 && jnum(d, "assigned_ms") < first_start[s])
            first_start[s] = jnum(d, "assigned_ms");
        n++;
    }
    for (int s = 1; s + 1 < 16; s++)
        if (first_start[s + 1] < 1e300)
            assert_true(first_start[s + 1] >= last_done[s] + soak_ms);
    return n;
}

static void three_stage_campaign_completes(void **state)
{
    struct env *e = *state;
    add_devices(e, 10, DEV_OK);
    make_release(e, "2.0", "2");
    /* Before any campaign a device may not fetch the artifact. */
    request_chunk(&e->dev[0], e->art_sha, 0, 1000);
    double end = upk_h_now() + 10;
    while (e->dev[0].chunk_status < 0 && upk_h_now() < end)
        pump(e, 0.05);
    assert_int_equal(e->dev[0].chunk_status, UPK_CHUNK_NOT_FOUND);
    assert_int_equal(cli(e, "alice", outbuf, sizeof(outbuf), "campaign", "create", "--release",
                         "fw-2.0", "--id", "c1", "--stages", "10%,50%,100%", "--soak", "1s",
                         "--max-failures", "0%", "--device-timeout", "60s", (char *)NULL),
                     0);
    assert_non_null(strstr(outbuf, "10 devices in 3 stages"));
    cJSON *c = pump_until(e, "c1", "completed", 90);
    assert_non_null(c);
    assert_int_equal(check_stage_order(c, 1000), 10);
    assert_int_equal(jnum(cJSON_GetObjectItem(c, "counts"), "succeeded"), 10);
    cJSON_Delete(c);
    for (int i = 0; i < e->ndev; i++) {
        assert_int_equal(e->dev[i].commits, 1);
        assert_string_equal(e->dev[i].last_version, "2.0");
    }
    /* Now the artifact is served, byte-exact, and ranges are checked. */
    e->dev[3].chunk_status = -1;
    request_chunk(&e->dev[3], e->art_sha, 1000, 2000);
    end = upk_h_now() + 10;
    while (e->dev[3].chunk_status < 0 && upk_h_now() < end)
        pump(e, 0.05);
    assert_int_equal(e->dev[3].chunk_status, UPK_CHUNK_OK);
    e->dev[3].chunk_status = -1;
    request_chunk(&e->dev[3], e->art_sha, ART_LEN + 5, 10);
    end = upk_h_now() + 10;
    while (e->dev[3].chunk_status < 0 && upk_h_now() < end)
        pump(e, 0.05);
    assert_int_equal(e->dev[3].chunk_status, UPK_CHUNK_RANGE);
    /* Views work and the posture report has the rollout chart. */
    assert_int_equal(
        cli(e, "alice", outbuf, sizeof(outbuf), "campaign", "watch", "c1", (char *)NULL), 0);
    assert_non_null(strstr(outbuf, "state=completed"));
    assert_int_equal(cli(e, "alice", outbuf, sizeof(outbuf), "devices", (char *)NULL), 0);
    assert_non_null(strstr(outbuf, "dev-09"));
    char html[UPK_H_PATH_MAX + 32];
    snprintf(html, sizeof(html), "%s/posture.html", e->dir);
    assert_int_equal(
        cli(e, "alice", outbuf, sizeof(outbuf), "report", "posture", "--html", html, (char *)NULL),
        0);
    assert_true(upk_h_file_contains(html, "<svg"));
    assert_true(upk_h_file_contains(html, "stage 3"));
    assert_int_equal(
        cli(e, "alice", outbuf, sizeof(outbuf), "report", "posture", "--json", (char *)NULL), 0);
    cJSON *p = cJSON_Parse(outbuf);
    assert_int_equal(jnum(cJSON_GetObjectItem(p, "summary"), "on_latest"), 10);
    cJSON_Delete(p);
}

static void failing_stage_halts_and_rolls_back(void **state)
{
    struct env *e = *state;
    add_devices(e, 10, DEV_OK);
    make_release(e, "2.0", "2");
    assert_int_equal(cli(e, "alice", outbuf, sizeof(outbuf), "campaign", "create", "--release",
                         "fw-2.0", "--id", "base", "--stages", "100%", (char *)NULL),
                     0);
    cJSON *c = pump_until(e, "base", "completed", 60);
    assert_non_null(c);
    cJSON_Delete(c);
    make_release(e, "3.0", "3");
    for (int i = 0; i < e->ndev; i++)
        e->dev[i].mode = DEV_FAIL;
    assert_int_equal(cli(e, "alice", outbuf, sizeof(outbuf), "campaign", "create", "--release",
                         "fw-3.0", "--id", "bad", "--stages", "20%,100%", "--max-failures", "0%",
                         "--auto-rollback", (char *)NULL),
                     0);
    c = pump_until(e, "bad", "rolled_back", 60);
    assert_non_null(c);
    assert_non_null(strstr(jstr(c, "reason"), "stage 1"));
    /* Only stage 1 was started; those devices got 2.0 back as desired. */
    int started = 0;
    const cJSON *d;
    cJSON_ArrayForEach(d, cJSON_GetObjectItem(c, "device_list"))
    {
        if (jnum(d, "stage") == 1) {
            assert_string_equal(jstr(d, "state"), "failed");
            started++;
        } else {
            assert_string_equal(jstr(d, "state"), "skipped");
        }
    }
    cJSON_Delete(c);
    assert_int_equal(started, 2);
    double end = upk_h_now() + 10;
    int back = 0;
    while (upk_h_now() < end) {
        pump(e, 0.05);
        back = 0;
        for (int i = 0; i < e->ndev; i++)
            back += strcmp(e->dev[i].last_version, "2.0") == 0 && e->dev[i].desired_count == 3;
        if (back == 2)
            break;
    }
    assert_int_equal(back, 2);
    assert_int_equal(
        cli(e, "alice", outbuf, sizeof(outbuf), "campaign", "watch", "bad", (char *)NULL), 1);
}

static void pause_resume_abort_and_device_timeout(void **state)
{
    struct env *e = *state;
    add_devices(e, 4, DEV_SILENT);
    make_release(e, "2.0", "2");
    assert_int_equal(cli(e, "alice", outbuf, sizeof(outbuf), "campaign", "create", "--release",
                         "fw-2.0", "--id", "pr", "--stages", "100%", (char *)NULL),
                     0);
    assert_int_equal(cli(e, "alice", outbuf, sizeof(outbuf), "campaign", "pause", "pr", "--reason",
                         "maintenance window", (char *)NULL),
                     0);
    cJSON *c = campaign_show(e, "pr");
    assert_string_equal(jstr(c, "state"), "paused");
    assert_non_null(strstr(jstr(c, "reason"), "maintenance window"));
    cJSON_Delete(c);
    /* Pausing a paused campaign is no error; it says it already is. */
    assert_int_equal(
        cli(e, "alice", outbuf, sizeof(outbuf), "campaign", "pause", "pr", (char *)NULL), 0);
    assert_non_null(strstr(outbuf, "campaign pr is already paused (paused by alice: maintenance "
                                   "window)"));
    assert_int_equal(
        cli(e, "alice", outbuf, sizeof(outbuf), "campaign", "resume", "pr", (char *)NULL), 0);
    c = pump_until(e, "pr", "running", 10);
    assert_non_null(c);
    cJSON_Delete(c);
    assert_int_equal(
        cli(e, "alice", outbuf, sizeof(outbuf), "campaign", "abort", "pr", (char *)NULL), 0);
    c = campaign_show(e, "pr");
    assert_string_equal(jstr(c, "state"), "aborted");
    cJSON_Delete(c);
    assert_int_equal(
        cli(e, "alice", outbuf, sizeof(outbuf), "campaign", "resume", "pr", (char *)NULL), 1);
    /* Per-device timeout: silent devices time out and count as failures. */
    for (int i = 0; i < e->ndev; i++)
        e->dev[i].mode = i == 0 ? DEV_SILENT : DEV_OK;
    assert_int_equal(cli(e, "alice", outbuf, sizeof(outbuf), "campaign", "create", "--release",
                         "fw-2.0", "--id", "to", "--stages", "100%", "--device-timeout", "2s",
                         "--max-failures", "50%", (char *)NULL),
                     0);
    c = pump_until(e, "to", "completed", 30);
    assert_non_null(c);
    const cJSON *counts = cJSON_GetObjectItem(c, "counts");
    assert_int_equal(jnum(counts, "timed_out"), 1);
    assert_int_equal(jnum(counts, "succeeded"), 3);
    cJSON_Delete(c);
}

static void rate_and_in_flight_caps_hold(void **state)
{
    struct env *e = *state;
    add_devices(e, 12, DEV_SLOW);
    make_release(e, "2.0", "2");
    assert_int_equal(cli(e, "alice", outbuf, sizeof(outbuf), "campaign", "create", "--release",
                         "fw-2.0", "--id", "caps", "--stages", "100%", "--rate", "120/min",
                         "--max-in-flight", "3", (char *)NULL),
                     0);
    cJSON *c = pump_until(e, "caps", "completed", 60);
    assert_non_null(c);
    double starts[NDEV_MAX], dones[NDEV_MAX];
    int n = 0;
    const cJSON *d;
    cJSON_ArrayForEach(d, cJSON_GetObjectItem(c, "device_list"))
    {
        starts[n] = jnum(d, "assigned_ms");
        dones[n] = jnum(d, "done_ms");
        n++;
    }
    cJSON_Delete(c);
    assert_int_equal(n, 12);
    for (int i = 0; i < n; i++) {
        /* In flight at each start: never more than 3. */
        int inflight = 0, window = 0;
        for (int k = 0; k < n; k++) {
            if (starts[k] <= starts[i] && dones[k] > starts[i])
                inflight++;
            /* Rate 2/s with a burst of 2: at most 4 starts in any 1 s window. */
            if (starts[k] >= starts[i] && starts[k] < starts[i] + 1000)
                window++;
        }
        assert_true(inflight <= 3);
        assert_true(window <= 4);
    }
}

static void controller_kill9_mid_campaign_resumes(void **state)
{
    struct env *e = *state;
    add_devices(e, 16, DEV_OK);
    make_release(e, "2.0", "2");
    assert_int_equal(cli(e, "alice", outbuf, sizeof(outbuf), "campaign", "create", "--release",
                         "fw-2.0", "--id", "k9", "--stages", "25%,50%,100%", "--soak", "1s",
                         "--rate", "240/min", (char *)NULL),
                     0);
    /* Let it get going, then kill -9 and restart twice at different points. */
    for (int round = 0; round < 2; round++) {
        double end = upk_h_now() + 20;
        int committed = 0;
        while (upk_h_now() < end) {
            pump(e, 0.05);
            committed = 0;
            for (int i = 0; i < e->ndev; i++)
                committed += e->dev[i].commits;
            if (committed >= 4 + round * 5)
                break;
        }
        stop_serve(e, SIGKILL);
        pump(e, 0.3); /* devices keep reporting while the controller is down */
        assert_int_equal(start_serve(e), 0);
    }
    cJSON *c = pump_until(e, "k9", "completed", 90);
    assert_non_null(c);
    assert_int_equal(check_stage_order(c, 1000), 16);
    assert_int_equal(jnum(cJSON_GetObjectItem(c, "counts"), "succeeded"), 16);
    cJSON_Delete(c);
    for (int i = 0; i < e->ndev; i++)
        assert_int_equal(e->dev[i].commits, 1);
}

static void operators_without_rights_and_bad_requests_are_refused(void **state)
{
    struct env *e = *state;
    add_devices(e, 2, DEV_SILENT);
    make_release(e, "2.0", "2");
    assert_int_equal(cli(e, "alice", outbuf, sizeof(outbuf), "campaign", "create", "--release",
                         "fw-2.0", "--id", "x1", "--stages", "100%", (char *)NULL),
                     0);
    /* A read-only operator may look but not act. */
    assert_int_equal(cli(e, "viewer", outbuf, sizeof(outbuf), "campaign", "list", (char *)NULL), 0);
    assert_non_null(strstr(outbuf, "x1"));
    assert_int_equal(
        cli(e, "viewer", outbuf, sizeof(outbuf), "campaign", "abort", "x1", (char *)NULL), 1);
    /* Wrong password: a refused login (exit 4), never "unreachable". */
    assert_int_equal(cli(e, "mallory", outbuf, sizeof(outbuf), "campaign", "list", "--timeout", "3",
                         (char *)NULL),
                     4);
    /* Forged requests: alice writing as bob is refused by the broker; a
     * self-made upkeep-sender is replaced by the broker's stamp; garbage gets
     * an error reply. */
    upk_h_client *a = NULL;
    int reason;
    assert_int_equal(upk_h_client_connect(&a, e->b.port, "alice-raw", "alice", "alice-pw", &reason),
                     0);
    assert_int_equal(upk_h_client_subscribe(a, PREFIX "/ctl/resp/alice", 1, &reason), 0);
    const char *abort_x1 = "{\"v\":1,\"id\":\"f1\",\"cmd\":\"campaign.abort\",\"args\":{\"id\":"
                           "\"x1\"}}";
    assert_int_not_equal(upk_h_client_publish(a, PREFIX "/ctl/req/viewer", abort_x1,
                                              strlen(abort_x1), 1, false, NULL, &reason),
                         0);
    assert_int_equal(upk_h_client_publish(a, PREFIX "/ctl/req/alice", "garbage", 7, 1, false,
                                          "admin:root", &reason),
                     0);
    assert_int_equal(upk_h_client_wait_msg(a, 10, &msgbuf), 0);
    upk_ctl_resp resp;
    memset(&resp, 0, sizeof(resp));
    assert_int_equal(upk_ctl_resp_decode(msgbuf.payload, msgbuf.len, &resp), UPK_OK);
    assert_int_equal(resp.error, UPK_E_JSON_INVALID);
    assert_string_equal(msgbuf.sender, "controller:ctl");
    upk_ctl_resp_cleanup(&resp);
    upk_h_client_close(a);
    cJSON *c = campaign_show(e, "x1");
    assert_string_equal(jstr(c, "state"), "running");
    cJSON_Delete(c);
    /* The audit log has who did what, including the refusal. */
    assert_int_equal(cli(e, "alice", outbuf, sizeof(outbuf), "audit", "--json", (char *)NULL), 0);
    cJSON *au = cJSON_Parse(outbuf);
    int denied = 0, created = 0;
    const cJSON *r;
    cJSON_ArrayForEach(r, au)
    {
        if (strcmp(jstr(r, "sender"), "operator:viewer") == 0 &&
            strcmp(jstr(r, "result"), "DENIED") == 0)
            denied++;
        if (strcmp(jstr(r, "sender"), "operator:alice") == 0 &&
            strcmp(jstr(r, "cmd"), "campaign.create") == 0)
            created++;
    }
    cJSON_Delete(au);
    assert_int_equal(denied, 1);
    assert_int_equal(created, 1);
}

#ifdef UPK_AGENT_BIN
/* Real upkeep-agent processes (module "file") run a 2-stage campaign: each
 * downloads the artifact from the controller's chunk server, verifies the
 * signature and hash, installs it and reports committed. */
static void real_agents_complete_a_campaign(void **state)
{
    struct env *e = *state;
    enum { NAGENT = 3 };
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
        snprintf(cfg, sizeof(cfg),
                 "{\"broker\":\"tcp://127.0.0.1:%d\",\"device_id\":\"%s\","
                 "\"password_file\":\"%s/%s.pw\",\"hardware\":\"hw-a\",\"data_dir\":"
                 "\"%s/%s-data\",\"keys\":[\"%s/rel.pub\"],\"module\":\"file\","
                 "\"module_settings\":{\"path\":\"%s/%s.bin\"}}",
                 e->b.port, id, e->dir, id, e->dir, id, e->dir, e->dir, id);
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
    double end = upk_h_now() + 30;
    int seen = 0;
    while (upk_h_now() < end && seen != NAGENT) {
        if (cli(e, "alice", outbuf, sizeof(outbuf), "devices", "--json", (char *)NULL) == 0) {
            cJSON *a = cJSON_Parse(outbuf);
            seen = cJSON_GetArraySize(a);
            cJSON_Delete(a);
        }
    }
    assert_int_equal(seen, NAGENT);
    make_release(e, "2.0", "2");
    assert_int_equal(cli(e, "alice", outbuf, sizeof(outbuf), "campaign", "create", "--release",
                         "fw-2.0", "--id", "real", "--stages", "34%,100%", "--max-failures", "0%",
                         "--device-timeout", "60s", (char *)NULL),
                     0);
    cJSON *c = pump_until(e, "real", "completed", 120);
    if (c == NULL) {
        char p[UPK_H_PATH_MAX + 64];
        snprintf(p, sizeof(p), "cat %s/agent-*.log | tail -40 >&2", e->dir);
        int r = system(p);
        (void)r;
    }
    assert_non_null(c);
    assert_int_equal(jnum(cJSON_GetObjectItem(c, "counts"), "succeeded"), NAGENT);
    check_stage_order(c, 0);
    cJSON_Delete(c);
    for (int i = 0; i < NAGENT; i++) {
        char p[UPK_H_PATH_MAX + 64];
        snprintf(p, sizeof(p), "%s/agent-%d.bin", e->dir, i);
        uint8_t sha[32];
        uint64_t size = 0;
        FILE *f = fopen(p, "rb");
        assert_non_null(f);
        static uint8_t got[ART_LEN + 1];
        size = fread(got, 1, sizeof(got), f);
        fclose(f);
        assert_int_equal(size, ART_LEN);
        upk_sha256_buf(got, (size_t)size, sha);
        assert_memory_equal(sha, e->art_sha, 32);
        kill(pids[i], SIGTERM);
        waitpid(pids[i], NULL, 0);
    }
}
#endif

static void pump_acks(struct env *e, struct fdev *d, int want)
{
    double end = upk_h_now() + 20;
    while (d->acks < want && upk_h_now() < end)
        pump(e, 0.05);
    if (d->acks != want) {
        dump_logs(e);
        fail_msg("%s: %d acks, want %d", d->id, d->acks, want);
    }
}

/* Events listed by `upkeep devices show` for d. */
static int stored_events(struct env *e, struct fdev *d)
{
    assert_int_equal(
        cli(e, "alice", outbuf, sizeof(outbuf), "devices", "show", d->id, "--json", (char *)NULL),
        0);
    cJSON *o = cJSON_Parse(outbuf);
    assert_non_null(o);
    int n = cJSON_GetArraySize(cJSON_GetObjectItem(o, "events"));
    cJSON_Delete(o);
    return n;
}

/* The controller acknowledges an event on dev/{d}/ack once stored, and
 * again when it comes twice; an event it cannot decode but whose seq it can
 * read is refused (not stored) and still acknowledged, so the device moves
 * on; one without a readable seq gets no ack at all. */
static void events_are_acked_once_stored(void **state)
{
    struct env *e = *state;
    add_devices(e, 1, DEV_SILENT);
    struct fdev *d = &e->dev[0];
    publish_event(d, "", "", UPK_STATUS_IDLE, UPK_OK);
    pump_acks(e, d, 1);
    assert_true(d->last_ack == 1);
    d->seq = 0; /* the same seq again, as after a lost ack */
    publish_event(d, "", "", UPK_STATUS_IDLE, UPK_OK);
    pump_acks(e, d, 2);
    assert_true(d->last_ack == 1);
    assert_int_equal(stored_events(e, d), 1);
    char topic[128];
    int reason;
    snprintf(topic, sizeof(topic), PREFIX "/dev/%s/events", d->id);
    static const char bad[] = "{\"v\":1,\"seq\":2,\"ts\":1,\"step\":\"no_such_step\"}";
    assert_int_equal(upk_h_client_publish(d->c, topic, bad, strlen(bad), 1, false, NULL, &reason),
                     0);
    pump_acks(e, d, 3);
    assert_true(d->last_ack == 2);
    static const char noseq[] = "{\"v\":1,\"step\":\"idle\"}";
    assert_int_equal(
        upk_h_client_publish(d->c, topic, noseq, strlen(noseq), 1, false, NULL, &reason), 0);
    d->seq = 2;
    publish_event(d, "", "", UPK_STATUS_IDLE, UPK_OK); /* seq 3: acked after the one before */
    pump_acks(e, d, 4);
    assert_true(d->last_ack == 3);
    assert_int_equal(stored_events(e, d), 2);
    char logp[UPK_H_PATH_MAX + 16];
    snprintf(logp, sizeof(logp), "%s/serve.log", e->dir);
    assert_true(upk_h_file_contains(logp, "bad event device=dev-00 err=FIELD_RANGE (refused"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(events_are_acked_once_stored, env_setup, env_teardown),
        cmocka_unit_test_setup_teardown(three_stage_campaign_completes, env_setup, env_teardown),
        cmocka_unit_test_setup_teardown(failing_stage_halts_and_rolls_back, env_setup,
                                        env_teardown),
        cmocka_unit_test_setup_teardown(pause_resume_abort_and_device_timeout, env_setup,
                                        env_teardown),
        cmocka_unit_test_setup_teardown(rate_and_in_flight_caps_hold, env_setup, env_teardown),
        cmocka_unit_test_setup_teardown(controller_kill9_mid_campaign_resumes, env_setup,
                                        env_teardown),
        cmocka_unit_test_setup_teardown(operators_without_rights_and_bad_requests_are_refused,
                                        env_setup, env_teardown),
#ifdef UPK_AGENT_BIN
        cmocka_unit_test_setup_teardown(real_agents_complete_a_campaign, env_setup, env_teardown),
#endif
    };
    if (getenv("UPK_TEST_FILTER") != NULL)
        cmocka_set_test_filter(getenv("UPK_TEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
