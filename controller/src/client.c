/* Operator client for ctl/req -> ctl/resp (client.h). */
#include "client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <uv.h>

#include "upkeep/fs.h"
#include "upkeep/hash.h"
#include "upkeep/jsoncfg.h"
#include "upkeep/log.h"
#include "upkeep/mqtt.h"
#include "upkeep/msg.h"

struct upk_client {
    uv_loop_t loop;
    upk_mqtt *mqtt;
    upk_client_cfg cfg;
    uv_timer_t timer;
    bool connected, timed_out, closed;
    upk_err conn_err;
    char want_id[UPK_CORR_MAX + 1];
    bool got;
    upk_ctl_resp resp;
    upk_err resp_err;
    unsigned seq;
    /* upk_client_send: replies to other ids, and publish results. */
    upk_client_reply_fn on_reply;
    upk_client_sent_fn on_sent;
    void *send_ud;
    bool polled; /* an event arrived during upk_client_poll */
    struct upk_client_send_rec {
        upk_client *c;
        void *cb_data;
        bool pending;
    } sends[UPK_CLIENT_SENDS_MAX];
    size_t send_next;
};

static void copy_str(char *dst, size_t cap, const char *src)
{
    int r = snprintf(dst, cap, "%s", src);
    (void)r;
}

/* Every field of cli.json; anything else is refused by name. */
static const char *const cli_fields[] = {"broker",
                                         "user",
                                         "password_file",
                                         "prefix",
                                         "ca_file",
                                         "cert_file",
                                         "key_file",
                                         "bytes_per_second",
                                         "messages_per_second",
                                         NULL};

/* Reads cli.json at path into cfg, strictly: a missing file is no error;
 * anything wrong with an existing one goes to cfg->file_error. */
static void read_cli_json(upk_client_cfg *cfg, const char *path)
{
    char *text = NULL;
    size_t len = 0;
    char why[512];
    int r;
    cJSON *j = NULL;
    upk_err err = upk_fs_read(path, 65536, &text, &len);
    if (err == UPK_E_NOT_FOUND)
        return;
    if (err != UPK_OK) {
        r = snprintf(cfg->file_error, sizeof(cfg->file_error), "%.400s: cannot read (%s)", path,
                     upk_err_str(err));
        (void)r;
        return;
    }
    if (upk_jsoncfg_parse(text, len, &j, why, sizeof(why)) != UPK_OK ||
        upk_jsoncfg_known(j, "", cli_fields, why, sizeof(why)) != UPK_OK)
        goto refused;
    struct {
        const char *name;
        char *dst;
        size_t cap;
    } fields[] = {
        {"broker", cfg->broker, sizeof(cfg->broker)},
        {"user", cfg->user, sizeof(cfg->user)},
        {"password_file", cfg->password_file, sizeof(cfg->password_file)},
        {"prefix", cfg->prefix, sizeof(cfg->prefix)},
        {"ca_file", cfg->ca_file, sizeof(cfg->ca_file)},
        {"cert_file", cfg->cert_file, sizeof(cfg->cert_file)},
        {"key_file", cfg->key_file, sizeof(cfg->key_file)},
    };
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, fields[i].name);
        if (v == NULL)
            continue;
        if (!cJSON_IsString(v) || v->valuestring[0] == '\0' ||
            strlen(v->valuestring) >= fields[i].cap) {
            r = snprintf(why, sizeof(why), "%s: must be a non-empty string of at most %zu bytes",
                         fields[i].name, fields[i].cap - 1);
            goto refused;
        }
        copy_str(fields[i].dst, fields[i].cap, v->valuestring);
    }
    struct {
        const char *name;
        double *dst;
        double max;
    } rates[] = {
        {"bytes_per_second", &cfg->bytes_per_second, 1e12},
        {"messages_per_second", &cfg->messages_per_second, 1e9},
    };
    for (size_t i = 0; i < sizeof(rates) / sizeof(rates[0]); i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, rates[i].name);
        if (v == NULL)
            continue;
        if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0) || v->valuedouble > rates[i].max) {
            r = snprintf(why, sizeof(why), "%s: must be a number from 0 (unlimited) to %.0f",
                         rates[i].name, rates[i].max);
            goto refused;
        }
        *rates[i].dst = v->valuedouble;
    }
    cJSON_Delete(j);
    free(text);
    return;
refused:
    r = snprintf(cfg->file_error, sizeof(cfg->file_error), "%.400s: %.230s", path, why);
    (void)r; /* a cut message still names the file and field first */
    cJSON_Delete(j);
    free(text);
}

void upk_client_cfg_init(upk_client_cfg *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    copy_str(cfg->prefix, sizeof(cfg->prefix), UPK_TOPIC_PREFIX_DEFAULT);
    cfg->timeout_ms = 15000;
    cfg->bytes_per_second = cfg->messages_per_second = -1;
    const char *home = getenv("HOME");
    if (home != NULL) {
        char path[4200];
        int r = snprintf(path, sizeof(path), "%s/.config/upkeep/cli.json", home);
        if (r > 0 && (size_t)r < sizeof(path))
            read_cli_json(cfg, path);
    }
    const char *e;
    if ((e = getenv("UPKEEP_BROKER")) != NULL)
        copy_str(cfg->broker, sizeof(cfg->broker), e);
    if ((e = getenv("UPKEEP_USER")) != NULL)
        copy_str(cfg->user, sizeof(cfg->user), e);
    if ((e = getenv("UPKEEP_PASSWORD_FILE")) != NULL)
        copy_str(cfg->password_file, sizeof(cfg->password_file), e);
    if ((e = getenv("UPKEEP_PREFIX")) != NULL)
        copy_str(cfg->prefix, sizeof(cfg->prefix), e);
    if ((e = getenv("UPKEEP_CA_FILE")) != NULL)
        copy_str(cfg->ca_file, sizeof(cfg->ca_file), e);
    if ((e = getenv("UPKEEP_CERT_FILE")) != NULL)
        copy_str(cfg->cert_file, sizeof(cfg->cert_file), e);
    if ((e = getenv("UPKEEP_KEY_FILE")) != NULL)
        copy_str(cfg->key_file, sizeof(cfg->key_file), e);
}

bool upk_client_cfg_opt(upk_client_cfg *cfg, int code, const char *value)
{
    switch (code) {
    case UPK_CLIENT_OPT_BROKER:
        copy_str(cfg->broker, sizeof(cfg->broker), value);
        return true;
    case UPK_CLIENT_OPT_USER:
        copy_str(cfg->user, sizeof(cfg->user), value);
        return true;
    case UPK_CLIENT_OPT_PASSWORD_FILE:
        copy_str(cfg->password_file, sizeof(cfg->password_file), value);
        return true;
    case UPK_CLIENT_OPT_PREFIX:
        copy_str(cfg->prefix, sizeof(cfg->prefix), value);
        return true;
    case UPK_CLIENT_OPT_CA_FILE:
        copy_str(cfg->ca_file, sizeof(cfg->ca_file), value);
        return true;
    case UPK_CLIENT_OPT_CERT_FILE:
        copy_str(cfg->cert_file, sizeof(cfg->cert_file), value);
        return true;
    case UPK_CLIENT_OPT_KEY_FILE:
        copy_str(cfg->key_file, sizeof(cfg->key_file), value);
        return true;
    case UPK_CLIENT_OPT_TIMEOUT: {
        char *end = NULL;
        unsigned long s = strtoul(value, &end, 10);
        if (end == value || *end != '\0' || s == 0 || s > 3600) {
            fprintf(stderr, "upkeep: --timeout takes seconds from 1 to 3600\n");
            return false;
        }
        cfg->timeout_ms = (unsigned)s * 1000;
        return true;
    }
    default:
        return false;
    }
}

int upk_client_exit_code(upk_err err)
{
    if (err == UPK_E_AUTH_FAILED)
        return UPK_CLIENT_EXIT_REFUSED;
    if (err == UPK_E_CONFIG_INVALID)
        return 2; /* no broker or user, a bad cli.json or TLS file: fix the settings */
    return (err == UPK_E_CONN || err == UPK_E_TIMEOUT) ? 3 : 1;
}

static void on_connect(upk_mqtt *m, void *ud)
{
    upk_client *c = ud;
    char topic[UPK_TOPIC_MAX + 1];
    if (upk_topic_build(topic, sizeof(topic), c->cfg.prefix, UPK_TOPIC_CTL_RESP, c->cfg.user) !=
            UPK_OK ||
        upk_mqtt_subscribe(m, topic, 1) != UPK_OK) {
        c->conn_err = UPK_E_CONN;
        return;
    }
    c->connected = true;
}

static void on_disconnect(upk_mqtt *m, upk_err err, void *ud)
{
    (void)m;
    upk_client *c = ud;
    c->connected = false;
    c->conn_err = err;
    c->polled = true;
}

static void on_message(upk_mqtt *m, const upk_mqtt_msg *msg, void *ud)
{
    (void)m;
    upk_client *c = ud;
    c->polled = true;
    upk_ctl_resp r;
    memset(&r, 0, sizeof(r));
    if (upk_ctl_resp_decode((const char *)msg->payload, msg->len, &r) != UPK_OK)
        return;
    /* Only the controller's replies count (the plugin stamps it). */
    if (c->got || strcmp(r.id, c->want_id) != 0 || strncmp(msg->sender, "controller:", 11) != 0) {
        if (strncmp(msg->sender, "controller:", 11) == 0 && c->on_reply != NULL &&
            strcmp(r.id, c->want_id) != 0)
            c->on_reply(&r, c->send_ud);
        upk_ctl_resp_cleanup(&r);
        return;
    }
    c->resp = r;
    c->got = true;
}

static void on_timer(uv_timer_t *t)
{
    upk_client *c = t->data;
    c->timed_out = true;
}

/* Runs the loop until *flag, an error or the timeout. */
static void wait_for(upk_client *c, const bool *flag, bool stop_on_conn_err)
{
    c->timed_out = false;
    uv_timer_start(&c->timer, on_timer, c->cfg.timeout_ms, 0);
    while (!*flag && !c->timed_out &&
           !(stop_on_conn_err &&
             (c->conn_err == UPK_E_AUTH_FAILED || c->conn_err == UPK_E_TLS_UNTRUSTED ||
              c->conn_err == UPK_E_TLS_FAILED)))
        uv_run(&c->loop, UV_RUN_ONCE);
    uv_timer_stop(&c->timer);
}

upk_err upk_client_connect(const upk_client_cfg *cfg, upk_client **out, char *why, size_t whycap)
{
    int r;
    if (cfg->file_error[0] != '\0') {
        r = snprintf(why, whycap, "%s", cfg->file_error);
        (void)r;
        return UPK_E_CONFIG_INVALID;
    }
    if (cfg->broker[0] == '\0' || cfg->user[0] == '\0') {
        r = snprintf(why, whycap,
                     "no broker or user: pass --broker URL --user NAME --password-file F, set "
                     "UPKEEP_BROKER/UPKEEP_USER/UPKEEP_PASSWORD_FILE, or write "
                     "~/.config/upkeep/cli.json (docs/operator-guide.md)");
        return UPK_E_CONFIG_INVALID;
    }
    if (!upk_id_valid(cfg->user) || !upk_topic_prefix_valid(cfg->prefix)) {
        r = snprintf(why, whycap, "user must be an id and prefix a topic prefix");
        return UPK_E_CONFIG_INVALID;
    }
    char *pw = NULL;
    size_t pwlen = 0;
    if (cfg->password_file[0] != '\0') {
        if (upk_fs_read(cfg->password_file, 1024, &pw, &pwlen) != UPK_OK) {
            r = snprintf(why, whycap, "cannot read the password file %s", cfg->password_file);
            return UPK_E_CONFIG_INVALID;
        }
        while (pwlen > 0 && (pw[pwlen - 1] == '\n' || pw[pwlen - 1] == '\r'))
            pw[--pwlen] = '\0';
    }
    upk_client *c = calloc(1, sizeof(*c));
    upk_err err = UPK_E_NOMEM;
    if (c == NULL)
        goto out_pw;
    c->cfg = *cfg;
    if (uv_loop_init(&c->loop) != 0) {
        free(c);
        goto out_pw;
    }
    uv_timer_init(&c->loop, &c->timer);
    c->timer.data = c;
    char cid[UPK_ID_MAX + 1];
    uint8_t rnd[4];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    unsigned long mix = (unsigned long)ts.tv_nsec ^ ((unsigned long)getpid() << 16);
    memcpy(rnd, &mix, sizeof(rnd));
    r = snprintf(cid, sizeof(cid), "%.40s-cli-%02x%02x%02x%02x", cfg->user, rnd[0], rnd[1], rnd[2],
                 rnd[3]);
    upk_mqtt_opts o;
    memset(&o, 0, sizeof(o));
    o.url = cfg->broker;
    o.client_id = cid;
    o.username = cfg->user;
    o.password = pw;
    o.ca_file = cfg->ca_file[0] ? cfg->ca_file : NULL;
    o.cert_file = cfg->cert_file[0] ? cfg->cert_file : NULL;
    o.key_file = cfg->key_file[0] ? cfg->key_file : NULL;
    o.clean_start = true;
    o.reconnect_min_ms = 200;
    o.reconnect_max_ms = 2000;
    /* Every retry of a refused login counts towards the plugin's lockout:
     * one attempt, then the refusal is reported. */
    o.stop_on_refusal = true;
    o.on_connect = on_connect;
    o.on_disconnect = on_disconnect;
    o.on_message = on_message;
    o.userdata = c;
    if ((err = upk_mqtt_new(&c->loop, &o, &c->mqtt)) != UPK_OK ||
        (err = upk_mqtt_start(c->mqtt)) != UPK_OK) {
        r = snprintf(why, whycap, "cannot start the MQTT client (%s)", upk_err_str(err));
        upk_client_close(c);
        goto out_pw;
    }
    wait_for(c, &c->connected, true);
    if (!c->connected) {
        err = c->conn_err == UPK_E_AUTH_FAILED || c->conn_err == UPK_E_TLS_UNTRUSTED ||
                      c->conn_err == UPK_E_TLS_FAILED
                  ? c->conn_err
                  : UPK_E_CONN;
        if (err == UPK_E_TLS_UNTRUSTED || err == UPK_E_TLS_FAILED)
            r = snprintf(why, whycap, "TLS to the broker at %s failed: %s (%s; details above)",
                         cfg->broker, upk_err_str(err), upk_err_msg(err));
        else if (err == UPK_E_AUTH_FAILED)
            r = snprintf(why, whycap,
                         "login refused for '%s' by the broker at %s: wrong password, unknown "
                         "account, or locked out after repeated failures (see the broker log)",
                         cfg->user, cfg->broker);
        else
            r = snprintf(why, whycap,
                         "cannot reach the broker at %s as '%s': check --broker and that it runs",
                         cfg->broker, cfg->user);
        upk_client_close(c);
        goto out_pw;
    }
    *out = c;
    err = UPK_OK;
out_pw:
    if (pw != NULL) {
        memset(pw, 0, pwlen);
        free(pw);
    }
    (void)r;
    return err;
}

upk_err upk_client_call(upk_client *c, const char *cmd, const cJSON *args, cJSON **data, char *msg,
                        size_t msgcap)
{
    upk_ctl_req req;
    memset(&req, 0, sizeof(req));
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int r = snprintf(req.id, sizeof(req.id), "r%lx%lx-%u", (unsigned long)ts.tv_sec,
                     (unsigned long)ts.tv_nsec, ++c->seq);
    r = snprintf(req.cmd, sizeof(req.cmd), "%s", cmd);
    req.args = (cJSON *)args;
    char *payload = NULL;
    size_t len = 0;
    char topic[UPK_TOPIC_MAX + 1];
    msg[0] = '\0';
    upk_err err = upk_ctl_req_encode(&req, &payload, &len);
    if (err != UPK_OK) {
        r = snprintf(msg, msgcap, "request could not be encoded (%s)", upk_err_str(err));
        return err;
    }
    if ((err = upk_topic_build(topic, sizeof(topic), c->cfg.prefix, UPK_TOPIC_CTL_REQ,
                               c->cfg.user)) != UPK_OK)
        goto out;
    memcpy(c->want_id, req.id, sizeof(c->want_id));
    c->got = false;
    if ((err = upk_mqtt_publish(c->mqtt, topic, payload, len, 1, false, NULL, NULL)) != UPK_OK) {
        r = snprintf(msg, msgcap, "could not send to the broker (%s)", upk_err_str(err));
        goto out;
    }
    wait_for(c, &c->got, false);
    if (!c->got) {
        err = UPK_E_TIMEOUT;
        r = snprintf(msg, msgcap,
                     "no reply from the controller within %us: is `upkeep serve` running and "
                     "connected to this broker, and may '%s' send commands?",
                     c->cfg.timeout_ms / 1000, c->cfg.user);
        goto out;
    }
    err = c->resp.error;
    if (err == UPK_OK) {
        if (data != NULL) {
            *data = c->resp.data;
            c->resp.data = NULL;
        }
    } else {
        r = snprintf(msg, msgcap, "%s", c->resp.message);
    }
    upk_ctl_resp_cleanup(&c->resp);
    memset(&c->resp, 0, sizeof(c->resp));
out:
    (void)r;
    free(payload);
    return err;
}

static void mqtt_closed(void *ud)
{
    upk_client *c = ud;
    c->closed = true;
}

void upk_client_close(upk_client *c)
{
    if (c == NULL)
        return;
    if (c->mqtt != NULL) {
        upk_mqtt_close(c->mqtt, mqtt_closed, c);
        c->mqtt = NULL;
        for (int i = 0; i < 1000 && !c->closed; i++)
            uv_run(&c->loop, UV_RUN_ONCE);
    }
    uv_close((uv_handle_t *)&c->timer, NULL);
    uv_run(&c->loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&c->loop) != 0)
        upk_debug("client: loop closed with handles open");
    free(c);
}

/* ---- pipelined requests (upk_client_send) */

void upk_client_on_reply(upk_client *c, upk_client_reply_fn on_reply, upk_client_sent_fn on_sent,
                         void *ud)
{
    c->on_reply = on_reply;
    c->on_sent = on_sent;
    c->send_ud = ud;
}

static void send_done(upk_mqtt *m, upk_err err, void *cb_data)
{
    (void)m;
    struct upk_client_send_rec *rec = cb_data;
    rec->pending = false;
    rec->c->polled = true;
    if (rec->c->on_sent != NULL)
        rec->c->on_sent(err, rec->cb_data, rec->c->send_ud);
}

upk_err upk_client_send(upk_client *c, const char *cmd, const cJSON *args, const char *id,
                        void *cb_data)
{
    struct upk_client_send_rec *rec = &c->sends[c->send_next % UPK_CLIENT_SENDS_MAX];
    if (rec->pending)
        return UPK_E_BUSY;
    upk_ctl_req req;
    memset(&req, 0, sizeof(req));
    int r = snprintf(req.id, sizeof(req.id), "%s", id);
    if (r < 0 || (size_t)r >= sizeof(req.id) || !upk_id_valid(req.id))
        return UPK_E_ID_INVALID;
    r = snprintf(req.cmd, sizeof(req.cmd), "%s", cmd);
    (void)r;
    req.args = (cJSON *)args;
    char *payload = NULL;
    size_t len = 0;
    char topic[UPK_TOPIC_MAX + 1];
    upk_err err = upk_ctl_req_encode(&req, &payload, &len);
    if (err != UPK_OK)
        return err;
    if ((err = upk_topic_build(topic, sizeof(topic), c->cfg.prefix, UPK_TOPIC_CTL_REQ,
                               c->cfg.user)) == UPK_OK) {
        rec->c = c;
        rec->cb_data = cb_data;
        rec->pending = true;
        err = upk_mqtt_publish(c->mqtt, topic, payload, len, 1, false, send_done, rec);
        if (err != UPK_OK)
            rec->pending = false;
        else
            c->send_next++;
    }
    free(payload);
    return err;
}

void upk_client_poll(upk_client *c, unsigned ms)
{
    /* libuv runs a due timer before it polls and then, with no timer left,
     * UV_RUN_ONCE would block until some I/O: a repeating timer keeps one
     * armed, and the loop waits for it or an event explicitly. */
    c->timed_out = false;
    c->polled = false;
    if (ms == 0) {
        uv_run(&c->loop, UV_RUN_NOWAIT);
        return;
    }
    uv_timer_start(&c->timer, on_timer, ms, ms);
    while (!c->timed_out && !c->polled)
        uv_run(&c->loop, UV_RUN_ONCE);
    uv_timer_stop(&c->timer);
}

bool upk_client_connected(const upk_client *c)
{
    return c->mqtt != NULL && upk_mqtt_connected(c->mqtt);
}

const char *upk_client_user(const upk_client *c)
{
    return c->cfg.user;
}
