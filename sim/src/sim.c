/* A simulated fleet: N real agents on one libuv loop, each with its own data
 * directory, derived password and MQTT connection, and a fake installer of
 * its hardware class. Agents start at a bounded rate so that a large fleet
 * does not hit the broker with every CONNECT in the same millisecond. A
 * class's metrics are handed to its agents in-process (health probe), and
 * --restart-after-commit restarts agents through upk_agent_close/new/start,
 * the path a real restart takes (the agent's bake window counts it). */
#include "upkeep/sim.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "upkeep/devkey.h"
#include "upkeep/fs.h"
#include "upkeep/hash.h"
#include "upkeep/key.h"
#include "upkeep/linkauth.h"
#include "upkeep/log.h"

#define RAMP_TICK_MS   10
#define DEFAULT_RATE   2000u
#define DEFAULT_MODULE "ab-dir"

#define RESTART_TICK_MS 500
#define RESTART_GAP_MS  1500 /* between two restarts of one device */

typedef struct sim_dev {
    upk_sim *sim;
    upk_agent_config cfg;
    upk_agent *agent;
    upk_sim_inst *inst;
    const upk_sim_class *cls;
    bool restarting;       /* its agent is closing to start again */
    uint32_t restarts;     /* made for --restart-after-commit */
    uint64_t next_restart; /* ms (uv_now) */
} sim_dev;

struct upk_sim {
    uv_loop_t *loop;
    upk_sim_opts opts;
    upk_sim_class classes[UPK_SIM_CLASS_MAX];
    upk_sim_store store;
    char root[UPK_AGENT_PATH_MAX];
    bool root_temp;
    char base_hex[UPK_SHA256_HEX_LEN + 1];
    int id_width;
    upk_sim_class_iter cls_it; /* class assignment by device number */

    sim_dev *devs;
    size_t count;   /* devices created */
    size_t started; /* agents started */
    uv_timer_t ramp;
    bool ramp_live;
    uv_timer_t restart; /* --restart-after-commit checks */
    bool restart_live, restart_open;
    size_t restarts;

    bool closing;
    size_t open_agents;
    bool ramp_open;
    void (*closed_cb)(void *);
    void *closed_data;
};

static upk_err fail(char *err, size_t cap, upk_err code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static upk_err fail(char *err, size_t cap, upk_err code, const char *fmt, ...)
{
    if (err != NULL && cap > 0) {
        va_list ap;
        va_start(ap, fmt);
        (void)vsnprintf(err, cap, fmt, ap);
        va_end(ap);
    }
    return code;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    if (flag == FTW_DP)
        (void)rmdir(path);
    else
        (void)unlink(path);
    return 0;
}

static void rm_tree(const char *path)
{
    if (path[0] != '\0')
        (void)nftw(path, rm_entry, 64, FTW_DEPTH | FTW_PHYS);
}

const char *upk_sim_tmp_base(const char *override)
{
    if (override != NULL)
        return override;
    const char *e = getenv("UPK_SIM_TMPDIR");
    if (e != NULL && e[0] != '\0')
        return e;
    /* tmpfs: the agents' journals are fsynced, and thousands of devices
     * writing journals on a disk would measure the disk, not upkeep. */
    if (access("/dev/shm", W_OK) == 0)
        return "/dev/shm";
    e = getenv("TMPDIR");
    return e != NULL && e[0] != '\0' ? e : "/tmp";
}

static char *dup_str(const char *s)
{
    return s != NULL ? strdup(s) : NULL;
}

static int digits(size_t v)
{
    int d = 1;
    while (v >= 10) {
        v /= 10;
        d++;
    }
    return d;
}

upk_err upk_sim_device_id(const upk_sim *s, size_t i, char *buf, size_t cap)
{
    if (s == NULL || buf == NULL)
        return UPK_E_INVALID_ARG;
    int n = snprintf(buf, cap, "%s%0*zu", s->opts.id_prefix, s->id_width, s->opts.first + i);
    if (n < 0 || (size_t)n >= cap)
        return UPK_E_BUFFER_TOO_SMALL;
    return UPK_OK;
}

/* Copies the base image into the store; its hash goes to s->base_hex. */
static upk_err seed_base_image(upk_sim *s, char *err, size_t cap)
{
    uint8_t sha[UPK_SHA256_LEN];
    char *data = NULL;
    size_t len = 0;
    upk_err e = upk_fs_read(s->opts.base_image, (size_t)1 << 30, &data, &len);
    if (e != UPK_OK)
        return fail(err, cap, e, "cannot read base image %s: %s", s->opts.base_image,
                    upk_err_str(e));
    upk_sha256_buf(data, len, sha);
    e = upk_hex_encode(sha, sizeof(sha), s->base_hex, sizeof(s->base_hex));
    char path[UPK_AGENT_PATH_MAX + UPK_SHA256_HEX_LEN + 2];
    if (e == UPK_OK) {
        int n = snprintf(path, sizeof(path), "%s/%s", s->store.images_dir, s->base_hex);
        if (n < 0 || (size_t)n >= sizeof(path))
            e = UPK_E_BUFFER_TOO_SMALL;
    }
    if (e == UPK_OK && access(path, F_OK) != 0)
        e = upk_fs_write_atomic(path, data, len);
    free(data);
    if (e != UPK_OK)
        return fail(err, cap, e, "cannot store base image: %s", upk_err_str(e));
    return UPK_OK;
}

static upk_err make_root(upk_sim *s, char *err, size_t cap)
{
    int n;
    if (s->opts.data_dir != NULL) {
        n = snprintf(s->root, sizeof(s->root), "%s", s->opts.data_dir);
        if (n < 0 || (size_t)n >= sizeof(s->root))
            return fail(err, cap, UPK_E_BUFFER_TOO_SMALL, "data dir path too long");
        upk_err e = upk_fs_mkdirs(s->root);
        if (e != UPK_OK)
            return fail(err, cap, e, "cannot create %s: %s", s->root, strerror(errno));
    } else {
        n = snprintf(s->root, sizeof(s->root), "%s/upkeep-sim-XXXXXX",
                     upk_sim_tmp_base(s->opts.tmp_base));
        if (n < 0 || (size_t)n >= sizeof(s->root))
            return fail(err, cap, UPK_E_BUFFER_TOO_SMALL, "temp dir path too long");
        if (mkdtemp(s->root) == NULL) {
            int saved = errno;
            s->root[0] = '\0';
            return fail(err, cap, UPK_E_IO, "cannot create a temp dir: %s", strerror(saved));
        }
        s->root_temp = true;
    }
    n = snprintf(s->store.images_dir, sizeof(s->store.images_dir), "%s/images", s->root);
    if (n < 0 || (size_t)n >= sizeof(s->store.images_dir))
        return fail(err, cap, UPK_E_BUFFER_TOO_SMALL, "data dir path too long");
    upk_err e = upk_fs_mkdirs(s->store.images_dir);
    if (e != UPK_OK)
        return fail(err, cap, e, "cannot create %s", s->store.images_dir);
    return UPK_OK;
}

/* The agent's health probe: the class's metrics for the running version. */
static void dev_probe(void *self, const char *version, upk_health *out)
{
    const sim_dev *d = self;
    upk_sim_class_metrics(d->cls, version, out);
}

static upk_err make_device(upk_sim *s, size_t i, char *err, size_t cap)
{
    sim_dev *d = &s->devs[i];
    const upk_sim_opts *o = &s->opts;
    char id[UPK_ID_MAX + 1];
    char dir[UPK_AGENT_PATH_MAX];
    char pw[UPK_DEVKEY_LEN + 1];
    d->sim = s;
    upk_agent_config_defaults(&d->cfg);
    upk_err e = upk_sim_device_id(s, i, id, sizeof(id));
    if (e != UPK_OK || !upk_id_valid(id))
        return fail(err, cap, UPK_E_ID_INVALID, "device id '%s%zu' is not a valid id", o->id_prefix,
                    o->first + i);
    int n = snprintf(dir, sizeof(dir), "%s/dev/%s", s->root, id);
    if (n < 0 || (size_t)n >= sizeof(dir))
        return fail(err, cap, UPK_E_BUFFER_TOO_SMALL, "data dir path too long");
    e = upk_devkey_derive(o->fleet_secret, o->fleet_secret_len, id, pw, sizeof(pw));
    if (e != UPK_OK)
        return fail(err, cap, e, "cannot derive the password of %s: %s", id, upk_err_str(e));
    /* By device number, so that a fleet split over processes mixes the same. */
    while (s->cls_it.next < o->first + i)
        (void)upk_sim_class_iter_next(s->classes, o->class_count, &s->cls_it);
    const upk_sim_class *cls =
        &s->classes[upk_sim_class_iter_next(s->classes, o->class_count, &s->cls_it)];
    d->cls = cls;
    upk_agent_config *c = &d->cfg;
    c->broker = dup_str(o->broker);
    c->device_id = dup_str(id);
    c->username = dup_str(id);
    c->password = dup_str(pw);
    c->hardware = dup_str(cls->name);
    c->data_dir = dup_str(dir);
    c->module = dup_str(o->module != NULL ? o->module : DEFAULT_MODULE);
    c->module_settings = dup_str("{}");
    c->topic_prefix = dup_str(o->topic_prefix);
    memset(pw, 0, sizeof(pw));
    if (c->broker == NULL || c->device_id == NULL || c->username == NULL || c->password == NULL ||
        c->hardware == NULL || c->data_dir == NULL || c->module == NULL ||
        c->module_settings == NULL || (o->topic_prefix != NULL && c->topic_prefix == NULL))
        return fail(err, cap, UPK_E_NOMEM, "out of memory");
    c->fsync = false;
    if (o->link_secret != NULL) {
        e = upk_link_key_derive(o->link_secret, o->link_secret_len, id, &c->link_key);
        if (e != UPK_OK)
            return fail(err, cap, e, "cannot derive the link key of %s: %s", id, upk_err_str(e));
        c->has_link_key = true;
    }
    c->legacy_quiet = true; /* upk_sim_new warns once for the fleet */
    c->keyring = o->keyring;
    c->keyring_owned = false;
    c->reconnect_min_ms = o->reconnect_min_ms;
    c->reconnect_max_ms = o->reconnect_max_ms;
    if (o->chunk_size != 0)
        c->limits.chunk_size = o->chunk_size;
    if (o->chunks_in_flight != 0)
        c->limits.chunks_in_flight = o->chunks_in_flight;
    if (o->health_interval_s != 0)
        c->health_interval_s = o->health_interval_s;
    if (o->ack_timeout_ms != 0)
        c->limits.ack_timeout_ms = o->ack_timeout_ms;
    if (cls->metric_count > 0) {
        c->health_probe = dev_probe;
        c->health_probe_self = d;
    }
    e = upk_fs_mkdirs(dir);
    if (e != UPK_OK)
        return fail(err, cap, e, "cannot create %s: %s", dir, strerror(errno));
    e = upk_sim_inst_new(s->loop, cls, &s->store, id, dir, s->base_hex[0] ? s->base_hex : NULL,
                         &d->inst);
    if (e != UPK_OK)
        return fail(err, cap, e, "device %s: cannot create its installer: %s", id, upk_err_str(e));
    c->installer_ops = upk_sim_installer_ops();
    c->installer_self = d->inst;
    e = upk_agent_new(s->loop, c, &d->agent);
    if (e != UPK_OK)
        return fail(err, cap, e, "device %s: cannot create its agent: %s", id, upk_err_str(e));
    return UPK_OK;
}

static void free_now(upk_sim *s)
{
    /* Only for a fleet whose agents were never started or are all closed. */
    if (s->root_temp)
        rm_tree(s->root);
    free(s->devs);
    free(s);
}

static void maybe_done(upk_sim *s)
{
    if (s->open_agents > 0 || s->ramp_open || s->restart_open)
        return;
    void (*cb)(void *) = s->closed_cb;
    void *data = s->closed_data;
    free_now(s);
    if (cb != NULL)
        cb(data);
}

static void dev_closed(void *userdata)
{
    sim_dev *d = userdata;
    upk_sim *s = d->sim;
    d->agent = NULL;
    upk_sim_inst_free(d->inst);
    d->inst = NULL;
    upk_agent_config_cleanup(&d->cfg);
    s->open_agents--;
    maybe_done(s);
}

static void ramp_closed(uv_handle_t *h)
{
    upk_sim *s = h->data;
    s->ramp_open = false;
    maybe_done(s);
}

static void restart_closed(uv_handle_t *h)
{
    upk_sim *s = h->data;
    s->restart_open = false;
    maybe_done(s);
}

/* The old agent is gone: start a new one on the same config and data, as a
 * restarted process would. */
static void dev_restart_closed(void *userdata)
{
    sim_dev *d = userdata;
    upk_sim *s = d->sim;
    d->agent = NULL;
    d->restarting = false;
    if (s->closing) {
        dev_closed(d);
        return;
    }
    upk_err e = upk_agent_new(s->loop, &d->cfg, &d->agent);
    if (e == UPK_OK)
        e = upk_agent_start(d->agent);
    if (e != UPK_OK)
        upk_error("device=%s cannot restart its agent: %s", d->cfg.device_id, upk_err_str(e));
}

/* --restart-after-commit: a device of such a class that committed the named
 * version restarts its agent, RESTART_GAP_MS apart, until it has done so N
 * times. */
static void restart_cb(uv_timer_t *t)
{
    upk_sim *s = t->data;
    uint64_t now = uv_now(s->loop);
    for (size_t i = 0; i < s->started; i++) {
        sim_dev *d = &s->devs[i];
        const upk_sim_class *c = d->cls;
        if (c->restart_after_commit == 0 || d->restarting || d->agent == NULL ||
            d->restarts >= c->restart_after_commit || now < d->next_restart ||
            upk_agent_status(d->agent) != UPK_STATUS_COMMITTED ||
            (c->restart_version[0] != '\0' &&
             strcmp(upk_agent_installed_version(d->agent), c->restart_version) != 0))
            continue;
        d->restarting = true;
        d->restarts++;
        s->restarts++;
        d->next_restart = now + RESTART_GAP_MS;
        upk_info("device=%s restarting its agent (%u of %u after commit)", d->cfg.device_id,
                 d->restarts, c->restart_after_commit);
        upk_agent_close(d->agent, dev_restart_closed, d);
    }
}

/* Closes devices [0, n) (all created); then frees s. */
static void close_all(upk_sim *s)
{
    s->closing = true;
    if (s->ramp_live) {
        (void)uv_timer_stop(&s->ramp);
        s->ramp_live = false;
        s->ramp_open = true;
        uv_close((uv_handle_t *)&s->ramp, ramp_closed);
    }
    if (s->restart_live) {
        (void)uv_timer_stop(&s->restart);
        s->restart_live = false;
        s->restart_open = true;
        uv_close((uv_handle_t *)&s->restart, restart_closed);
    }
    size_t n = s->count;
    s->open_agents = 0;
    for (size_t i = 0; i < n; i++) {
        if (s->devs[i].agent != NULL)
            s->open_agents++;
    }
    for (size_t i = 0; i < n; i++) {
        sim_dev *d = &s->devs[i];
        if (d->restarting) {
            continue; /* dev_restart_closed finishes it */
        } else if (d->agent != NULL) {
            upk_agent_close(d->agent, dev_closed, d);
        } else {
            upk_sim_inst_free(d->inst);
            d->inst = NULL;
            upk_agent_config_cleanup(&d->cfg);
        }
    }
    maybe_done(s);
}

static upk_err check_opts(const upk_sim_opts *o, char *err, size_t cap)
{
    if (o->broker == NULL || o->broker[0] == '\0')
        return fail(err, cap, UPK_E_INVALID_ARG, "no broker URL");
    if (o->count == 0 || o->count > UPK_SIM_DEVICES_MAX)
        return fail(err, cap, UPK_E_INVALID_ARG, "device count must be 1..%u", UPK_SIM_DEVICES_MAX);
    if (o->id_prefix == NULL || strlen(o->id_prefix) > UPK_SIM_PREFIX_MAX)
        return fail(err, cap, UPK_E_INVALID_ARG, "id prefix longer than %d chars",
                    UPK_SIM_PREFIX_MAX);
    if (o->classes == NULL || o->class_count == 0 || o->class_count > UPK_SIM_CLASS_MAX)
        return fail(err, cap, UPK_E_INVALID_ARG, "1..%d hardware classes needed",
                    UPK_SIM_CLASS_MAX);
    if (o->fleet_secret == NULL || o->fleet_secret_len < UPK_FLEET_SECRET_MIN ||
        o->fleet_secret_len > UPK_SIM_SECRET_MAX)
        return fail(err, cap, UPK_E_INVALID_ARG, "fleet secret must be %d to %d bytes",
                    UPK_FLEET_SECRET_MIN, UPK_SIM_SECRET_MAX);
    if (o->link_secret != NULL &&
        (o->link_secret_len < UPK_LINK_SECRET_MIN || o->link_secret_len > UPK_SIM_SECRET_MAX))
        return fail(err, cap, UPK_E_INVALID_ARG, "link secret must be %d to %d bytes",
                    UPK_LINK_SECRET_MIN, UPK_SIM_SECRET_MAX);
    if (o->keyring == NULL || upk_keyring_count(o->keyring) == 0)
        return fail(err, cap, UPK_E_INVALID_ARG, "no pinned release key");
    if (o->module != NULL && !upk_id_valid(o->module))
        return fail(err, cap, UPK_E_INVALID_ARG, "module '%s' is not an id", o->module);
    return UPK_OK;
}

upk_err upk_sim_new(uv_loop_t *loop, const upk_sim_opts *opts, upk_sim **out, char *err,
                    size_t err_cap)
{
    if (loop == NULL || opts == NULL || out == NULL)
        return fail(err, err_cap, UPK_E_INVALID_ARG, "missing argument");
    upk_err e = check_opts(opts, err, err_cap);
    if (e != UPK_OK)
        return e;
    upk_sim *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return fail(err, err_cap, UPK_E_NOMEM, "out of memory");
    /* Every agent here verifies the same signed manifest, each through
     * upk_manifest_verify; the first does the ECDSA, the rest find the
     * hash of the same (key, manifest, signature) (key.h). A real device
     * pays one verification on its own CPU; here 10,000 of them were a
     * quarter of the simulator's CPU. */
    upk_key_verify_memo_enable();
    if (opts->link_secret == NULL)
        upk_warn("sim: no link secret: the %zu agents take controller messages without link "
                 "authentication (legacy mode)",
                 opts->count);
    s->loop = loop;
    s->opts = *opts;
    memcpy(s->classes, opts->classes, opts->class_count * sizeof(s->classes[0]));
    s->opts.classes = s->classes;
    s->store.seed = opts->seed;
    upk_sim_class_iter_init(&s->cls_it);
    s->id_width = digits(opts->first + opts->count - 1);
    if (s->id_width < 5)
        s->id_width = 5;
    s->devs = calloc(opts->count, sizeof(*s->devs));
    if (s->devs == NULL) {
        free(s);
        return fail(err, err_cap, UPK_E_NOMEM, "out of memory for %zu devices", opts->count);
    }
    e = make_root(s, err, err_cap);
    if (e == UPK_OK && opts->base_image != NULL)
        e = seed_base_image(s, err, err_cap);
    if (e != UPK_OK) {
        free_now(s);
        return e;
    }
    if (uv_timer_init(loop, &s->ramp) != 0) {
        free_now(s);
        return fail(err, err_cap, UPK_E_INTERNAL, "cannot create a timer");
    }
    s->ramp.data = s;
    s->ramp_live = true;
    if (uv_timer_init(loop, &s->restart) != 0) {
        s->count = 0;
        close_all(s);
        return fail(err, err_cap, UPK_E_INTERNAL, "cannot create a timer");
    }
    s->restart.data = s;
    s->restart_live = true;
    for (size_t i = 0; i < opts->count; i++) {
        s->count = i + 1;
        e = make_device(s, i, err, err_cap);
        if (e != UPK_OK)
            break;
    }
    if (e != UPK_OK) {
        /* Nothing was started: close what exists; the loop finishes it. */
        close_all(s);
        return e;
    }
    *out = s;
    return UPK_OK;
}

static void ramp_cb(uv_timer_t *t)
{
    upk_sim *s = t->data;
    uint32_t rate = s->opts.connect_rate != 0 ? s->opts.connect_rate : DEFAULT_RATE;
    size_t batch = (size_t)rate * RAMP_TICK_MS / 1000;
    if (batch == 0)
        batch = 1;
    while (batch-- > 0 && s->started < s->count) {
        sim_dev *d = &s->devs[s->started++];
        upk_err e = upk_agent_start(d->agent);
        if (e != UPK_OK)
            upk_error("device=%s cannot start: %s", d->cfg.device_id, upk_err_str(e));
    }
    if (s->started >= s->count)
        (void)uv_timer_stop(&s->ramp);
}

upk_err upk_sim_start(upk_sim *s)
{
    if (s == NULL || s->closing || s->started > 0)
        return UPK_E_STATE_INVALID;
    uint32_t rate = s->opts.connect_rate != 0 ? s->opts.connect_rate : DEFAULT_RATE;
    uint64_t period = rate >= 1000u / RAMP_TICK_MS ? RAMP_TICK_MS : 1000u / rate;
    if (uv_timer_start(&s->ramp, ramp_cb, 0, period) != 0)
        return UPK_E_INTERNAL;
    bool restarts = false;
    for (size_t k = 0; k < s->opts.class_count; k++)
        restarts = restarts || s->classes[k].restart_after_commit > 0;
    if (restarts && uv_timer_start(&s->restart, restart_cb, RESTART_TICK_MS, RESTART_TICK_MS) != 0)
        return UPK_E_INTERNAL;
    return UPK_OK;
}

void upk_sim_stats_get(const upk_sim *s, upk_sim_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (s == NULL)
        return;
    out->devices = s->count;
    out->started = s->started;
    out->restarts = s->restarts;
    for (size_t i = 0; i < s->count; i++) {
        const upk_agent *a = s->devs[i].agent;
        if (a == NULL)
            continue;
        upk_status st = upk_agent_status(a);
        if ((int)st >= 0 && st < UPK_STATUS__COUNT)
            out->by_status[st]++;
        if (upk_agent_connected(a))
            out->connected++;
        out->events_pending += upk_agent_events_pending(a);
    }
}

const char *upk_sim_data_dir(const upk_sim *s)
{
    return s->root;
}

void upk_sim_close(upk_sim *s, void (*closed)(void *userdata), void *userdata)
{
    if (s == NULL || s->closing)
        return;
    s->closed_cb = closed;
    s->closed_data = userdata;
    close_all(s);
}
