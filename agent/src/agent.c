/* The agent's update state machine on one libuv loop: desired message in,
 * verify, chunked download with resume, verify again, install through the
 * installer, activate, health-check, commit or roll back; every step
 * journaled first and reported as an event through the on-disk outbox. */
#include "agent_int.h"
#include "health.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "upkeep/fs.h"
#include "upkeep/log.h"
#include "upkeep/mqtt.h"
#include "upkeep/topic.h"
#ifdef UPK_HAVE_DELTA
#include "upkeep/delta.h"
#endif

#ifndef UPK_VERSION
#define UPK_VERSION "0.0.0"
#endif

#define TICK_MS 200
/* Tries of one chunk request that must come back refused (not found,
 * range) before an agent without a link key, which cannot tell a forged
 * refusal, gives up on the download. */
#define UPK__REFUSALS_MAX 5

struct upk_agent {
    uv_loop_t *loop;
    const upk_agent_config *cfg;
    upk_mqtt *mqtt;
    const upk_installer *ops;
    void *inst;
    bool inst_owned;
    uv_timer_t timer;

    char journal_path[UPK_AGENT_PATH_MAX];
    char installed_path[UPK_AGENT_PATH_MAX];
    char dl_dir[UPK_AGENT_PATH_MAX];
    char work_dir[UPK_AGENT_PATH_MAX];
    char part_path[UPK_AGENT_PATH_MAX];
    char artifact_path[UPK_AGENT_PATH_MAX];
    char t_state[UPK_TOPIC_MAX + 1], t_online[UPK_TOPIC_MAX + 1], t_desired[UPK_TOPIC_MAX + 1];
    char t_events[UPK_TOPIC_MAX + 1], t_req[UPK_TOPIC_MAX + 1], t_data[UPK_TOPIC_MAX + 1];
    char t_ack[UPK_TOPIC_MAX + 1];

    upk__journal j;
    upk_manifest m; /* decoded j.manifest when an update is under way */
    upk__installed facts;
    upk_err load_err; /* journal or facts were corrupt at start */

    /* link authentication (link.c): the last accepted desired, and whether
     * its fresh_until has passed (reported as "stale" in state) */
    char link_path[UPK_AGENT_PATH_MAX];
    upk__link link;
    bool stale;
    uint64_t dropped[UPK_E__COUNT]; /* controller messages dropped, by why */

    /* post-commit health reports (health.h) */
    char bake_path[UPK_AGENT_PATH_MAX];
    upk__bake bake;
    uint32_t bake_s;                     /* of the current desired message */
    bool probing;                        /* a health report is being made (check, hook) */
    bool probe_bake;                     /* ... for the bake window (else a baseline report) */
    upk_health probe;                    /* what it found so far */
    char probe_note[UPK_ERRMSG_MAX + 1]; /* a named hook/check problem, or "" */
    int64_t last_baseline;               /* epoch s of the last idle (baseline) report; 0 none */

    /* Events leave one at a time: published (ob_sending until the broker's
     * PUBACK), then awaited (ob_waiting) until the controller's ack of
     * ob_seq, or sent again on reconnect or after the ack timeout. */
    upk__outbox ob;
    bool ob_sending;
    bool ob_waiting;
    uint64_t ob_seq;
    uint64_t ob_sent_ms; /* when ob_seq was last handed to the broker */
    unsigned ob_tries;   /* ack timeouts in a row for ob_seq, at most 5 (backoff) */

    /* download */
    bool dl_ready; /* window and hash are live (not re-hashing) */
    upk__window win;
    int part_fd;
    upk_sha256 sha;
    uint64_t rehash_len;
    upk_err work_err;
    unsigned last_pct_step;

    upk_install_job job;
    bool busy;       /* an asynchronous step is outstanding */
    int outstanding; /* thread-pool items and children still to call back */

    bool have_pending;
    char *pending; /* a desired payload that arrived while busy; NULL+have = cleared */
    size_t pending_len;

    bool started;
    bool closing;
    int close_waits;
    void (*closed_cb)(void *);
    void *closed_data;
};

static void handle_desired(upk_agent *a, const char *payload, size_t len);
static void start_download(upk_agent *a);
static void step_install(upk_agent *a);
static void step_activate(upk_agent *a);
static void step_health(upk_agent *a);
static void step_commit(upk_agent *a);
static void start_rollback(upk_agent *a, upk_err err, const char *msg);
static void finish(upk_agent *a, upk_status st, upk_err err, const char *msg);
static void request_more(upk_agent *a);
static void ob_kick(upk_agent *a);
static void maybe_free(upk_agent *a);

/* ---------------------------------------------------------------- helpers */

static int64_t now_s(void)
{
    return (int64_t)time(NULL);
}

static bool in_progress(upk_status s)
{
    return s != UPK_STATUS_IDLE && !upk_status_is_final(s);
}

static void set_msg(char *dst, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_msg(char *dst, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(dst, cap, fmt, ap);
    va_end(ap);
}

/* Publishes on one of this device's topics, tagged with the link key
 * (docs/protocol.md 8.2) when the device has one. Same results as
 * upk_mqtt_publish. */
static upk_err pub_tagged(upk_agent *a, upk_topic_kind kind, const char *topic, const void *payload,
                          size_t len, int qos, bool retain, upk_mqtt_done_cb done, void *cb_data)
{
    char tag[UPK_LINK_TAG_LEN + 1];
    tag[0] = '\0';
    if (a->cfg->has_link_key) {
        upk_err err = upk_link_tag(&a->cfg->link_key, a->cfg->device_id, kind, payload, len, tag,
                                   sizeof(tag));
        if (err != UPK_OK)
            return err;
    }
    return upk_mqtt_publish_auth(a->mqtt, topic, payload, len, qos, retain, tag, done, cb_data);
}

static void publish_state(upk_agent *a)
{
    if (a->mqtt == NULL || !upk_mqtt_connected(a->mqtt))
        return;
    upk_state_msg *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return;
    const upk_agent_config *c = a->cfg;
    (void)snprintf(s->device, sizeof(s->device), "%s", c->device_id);
    (void)snprintf(s->hw, sizeof(s->hw), "%s", c->hardware);
    (void)snprintf(s->release, sizeof(s->release), "%s", a->facts.release);
    (void)snprintf(s->version, sizeof(s->version), "%s", a->facts.version);
    s->security_version = a->facts.security_version;
    if (a->ops->active_slot != NULL)
        a->ops->active_slot(a->inst, s->slot, sizeof(s->slot));
    s->status = a->j.status;
    (void)snprintf(s->campaign, sizeof(s->campaign), "%s", a->j.campaign);
    s->error = a->j.error != UPK_OK ? a->j.error : a->load_err;
    s->cap.automatic = true;
    s->cap.signed_only = true;
    s->cap.rollback = a->ops->can_rollback;
#ifdef UPK_HAVE_DELTA
    s->cap.delta = a->ops->image_path != NULL;
#endif
    s->cap.module_count = 1;
    (void)snprintf(s->cap.modules[0], sizeof(s->cap.modules[0]), "%s", c->module);
    if (a->facts.support_until != 0) {
        s->support_until = a->facts.support_until;
        s->support_signed = true;
    } else {
        s->support_until = c->support_until;
    }
    s->last_patched = a->facts.last_patched;
    memcpy(s->image_sha256, a->facts.image_sha256, UPK_SHA256_LEN);
    (void)snprintf(s->agent, sizeof(s->agent), "%s", UPK_VERSION);
    s->stale = a->stale;
    s->ts = now_s();
    char *json = NULL;
    size_t len = 0;
    upk_err err = upk_state_encode(s, &json, &len);
    free(s);
    if (err != UPK_OK) {
        upk_error("device=%s cannot encode state: %s", c->device_id, upk_err_str(err));
        return;
    }
    err = pub_tagged(a, UPK_TOPIC_DEV_STATE, a->t_state, json, len, 1, true, NULL, NULL);
    if (err != UPK_OK)
        upk_warn("device=%s state not published: %s", c->device_id, upk_err_str(err));
    free(json);
}

/* Queues an event for the current update (campaign/release from the journal). */
static void emit(upk_agent *a, upk_status step, uint32_t progress, upk_err err, const char *msg)
{
    upk_event_msg *ev = calloc(1, sizeof(*ev));
    if (ev == NULL)
        return;
    ev->ts = now_s();
    (void)snprintf(ev->campaign, sizeof(ev->campaign), "%s", a->j.campaign);
    if (a->j.manifest != NULL) {
        (void)snprintf(ev->release, sizeof(ev->release), "%s", a->m.name);
        (void)snprintf(ev->version, sizeof(ev->version), "%s", a->m.version);
    }
    ev->step = step;
    ev->progress = progress > 100 ? 100 : progress;
    ev->error = err;
    (void)snprintf(ev->message, sizeof(ev->message), "%s", msg != NULL ? msg : "");
    upk_err e = upk__outbox_push(&a->ob, ev);
    if (e != UPK_OK)
        upk_error("device=%s campaign=%s event %s not queued: %s", a->cfg->device_id, a->j.campaign,
                  upk_status_str(step), upk_err_str(e));
    else if (err != UPK_OK)
        upk_warn("device=%s campaign=%s release=%s step=%s error=%s %s", a->cfg->device_id,
                 ev->campaign, ev->release, upk_status_str(step), upk_err_str(err), ev->message);
    else
        upk_info("device=%s campaign=%s release=%s step=%s progress=%u", a->cfg->device_id,
                 ev->campaign, ev->release, upk_status_str(step), ev->progress);
    free(ev);
    ob_kick(a);
}

/* Journals a new status (before the step runs), reports it, publishes state. */
static upk_err advance(upk_agent *a, upk_status st)
{
    a->j.status = st;
    a->j.event_seq = a->ob.next_seq; /* the seq emit() is about to use */
    upk_err err = upk__journal_save_ex(a->journal_path, &a->j, a->cfg->fsync);
    if (err != UPK_OK) {
        upk_error("device=%s cannot write journal: %s", a->cfg->device_id, upk_err_str(err));
        return err;
    }
    emit(a, st, st == UPK_STATUS_COMMITTED ? 100 : 0, UPK_OK, NULL);
    publish_state(a);
    return UPK_OK;
}

static void close_part(upk_agent *a)
{
    if (a->part_fd >= 0) {
        close(a->part_fd);
        a->part_fd = -1;
    }
    a->dl_ready = false;
    upk__window_cleanup(&a->win);
}

static void clean_downloads(upk_agent *a)
{
    close_part(a);
    if (upk__rm_rf(a->dl_dir) != UPK_OK || upk__rm_rf(a->work_dir) != UPK_OK)
        upk_warn("device=%s cannot clean %s", a->cfg->device_id, a->dl_dir);
}

static void prepare_job(upk_agent *a, upk_status reached)
{
    memset(&a->job, 0, sizeof(a->job));
    a->job.manifest = &a->m;
    a->job.campaign = a->j.campaign;
    a->job.device = a->cfg->device_id;
    a->job.artifact_path = a->artifact_path;
    a->job.work_dir = a->work_dir;
    a->job.reached = reached;
    (void)snprintf(a->job.slot, sizeof(a->job.slot), "%s", a->j.slot);
    if (upk_fs_mkdirs(a->work_dir) != UPK_OK)
        upk_warn("device=%s cannot create %s", a->cfg->device_id, a->work_dir);
}

/* A step callback after close started only counts down. */
static bool op_returned(upk_agent *a)
{
    a->outstanding--;
    a->busy = false;
    if (a->closing) {
        maybe_free(a);
        return false;
    }
    return true;
}

/* The identity of a desired payload (docs/protocol.md 5.3): the hex
 * assignment id of a decodable one (a refresh with a new ctr keeps it), else
 * the SHA-256 of its bytes; legacy gets the SHA-256 of the bytes in any case,
 * which is what agents before link keys journaled. *clear is true for an
 * empty payload and a decoded clear (id ""). */
static void desired_ident(const char *payload, size_t len, char *id, char *legacy, bool *clear)
{
    uint8_t b[UPK_SHA256_LEN];
    id[0] = legacy[0] = '\0';
    *clear = len == 0;
    if (len == 0)
        return;
    upk_sha256_buf(payload, len, b);
    if (upk_hex_encode(b, sizeof(b), legacy, UPK_SHA256_HEX_LEN + 1) != UPK_OK)
        legacy[0] = '\0';
    upk_desired_msg d;
    memset(&d, 0, sizeof(d));
    if (upk_desired_decode(payload, len, &d) != UPK_OK) {
        memcpy(id, legacy, UPK_SHA256_HEX_LEN + 1);
        return;
    }
    *clear = d.clear;
    if (!d.clear && (upk_desired_assignment_id(&d, b) != UPK_OK ||
                     upk_hex_encode(b, sizeof(b), id, UPK_SHA256_HEX_LEN + 1) != UPK_OK))
        memcpy(id, legacy, UPK_SHA256_HEX_LEN + 1);
    upk_desired_cleanup(&d);
}

/* True when payload carries the assignment the journal holds. */
static bool same_assignment(const upk_agent *a, const char *payload, size_t len)
{
    char id[UPK_SHA256_HEX_LEN + 1], legacy[UPK_SHA256_HEX_LEN + 1];
    bool clear;
    desired_ident(payload, len, id, legacy, &clear);
    return !clear && a->j.desired_id[0] != '\0' &&
           (strcmp(id, a->j.desired_id) == 0 || strcmp(legacy, a->j.desired_id) == 0);
}

/* Handles a desired message that arrived while a step ran, when the update
 * may still be abandoned. Returns true when the caller must stop. */
static bool checkpoint(upk_agent *a)
{
    if (!a->have_pending)
        return false;
    char *p = a->pending;
    size_t len = a->pending_len;
    a->pending = NULL;
    a->have_pending = false;
    if (p != NULL && same_assignment(a, p, len)) {
        free(p);
        return false; /* the same desired again */
    }
    handle_desired(a, p, len);
    free(p);
    return true;
}

/* ---------------------------------------------------------------- finish */

static void run_pending(upk_agent *a)
{
    if (!a->have_pending || a->busy)
        return;
    char *p = a->pending;
    size_t len = a->pending_len;
    a->pending = NULL;
    a->have_pending = false;
    handle_desired(a, p, len);
    free(p);
}

/* Ends the update with a final status: journal, event, state, cleanup. */
static void finish(upk_agent *a, upk_status st, upk_err err, const char *msg)
{
    a->j.status = st;
    a->j.rolling_back = false;
    a->j.committing = false;
    a->j.error = err;
    a->j.event_seq = a->ob.next_seq; /* the seq emit() is about to use */
    (void)snprintf(a->j.message, sizeof(a->j.message), "%s", msg != NULL ? msg : "");
    upk_err e = upk__journal_save_ex(a->journal_path, &a->j, a->cfg->fsync);
    if (e != UPK_OK)
        upk_error("device=%s cannot write journal: %s", a->cfg->device_id, upk_err_str(e));
    emit(a, st, st == UPK_STATUS_COMMITTED ? 100 : 0, err, msg);
    publish_state(a);
    clean_downloads(a);
    run_pending(a);
}

static void rollback_done(upk_err err, const char *msg, void *cb_data)
{
    upk_agent *a = cb_data;
    if (!op_returned(a))
        return;
    upk_status reached = a->j.status;
    if (err != UPK_OK) {
        char m[UPK_ERRMSG_MAX + 1];
        set_msg(m, sizeof(m), "rollback after %s failed: %s", upk_err_str(a->j.error),
                msg != NULL ? msg : upk_err_msg(err));
        finish(a, UPK_STATUS_FAILED, UPK_E_ROLLBACK_FAILED, m);
        return;
    }
    char keep[UPK_ERRMSG_MAX + 1];
    (void)snprintf(keep, sizeof(keep), "%s", a->j.message);
    finish(a, reached >= UPK_STATUS_ACTIVATING ? UPK_STATUS_ROLLED_BACK : UPK_STATUS_FAILED,
           a->j.error, keep);
}

/* Undoes the update from the journaled step: journal first (rolling_back),
 * then the installer's rollback, then the final status. */
static void start_rollback(upk_agent *a, upk_err err, const char *msg)
{
    a->j.rolling_back = true;
    a->j.error = err;
    (void)snprintf(a->j.message, sizeof(a->j.message), "%s", msg != NULL ? msg : "");
    upk_err e = upk__journal_save_ex(a->journal_path, &a->j, a->cfg->fsync);
    if (e != UPK_OK)
        upk_error("device=%s cannot write journal: %s", a->cfg->device_id, upk_err_str(e));
    upk_warn("device=%s campaign=%s rolling back from %s: %s %s", a->cfg->device_id, a->j.campaign,
             upk_status_str(a->j.status), upk_err_str(err), a->j.message);
    if (a->j.status < UPK_STATUS_INSTALLING || a->ops->rollback == NULL) {
        char keep[UPK_ERRMSG_MAX + 1];
        (void)snprintf(keep, sizeof(keep), "%s", a->j.message);
        finish(a, a->j.status >= UPK_STATUS_ACTIVATING ? UPK_STATUS_ROLLED_BACK : UPK_STATUS_FAILED,
               err, keep);
        return;
    }
    prepare_job(a, a->j.status);
    e = a->ops->rollback(a->inst, &a->job, rollback_done, a);
    if (e != UPK_OK) {
        finish(a, UPK_STATUS_FAILED, UPK_E_ROLLBACK_FAILED, "rollback could not start");
        return;
    }
    a->busy = true;
    a->outstanding++;
}

/* The manifest's expires is checked at every step (docs/protocol.md 5.3),
 * not only on arrival, so a release whose chunks were held back past its
 * expiry is never installed, activated or committed. When it has expired,
 * starts the rollback (a plain failure before installing) with
 * MANIFEST_EXPIRED and returns true. */
static bool expired_before(upk_agent *a, const char *step)
{
    int64_t now = now_s();
    if (a->j.manifest == NULL || now < a->m.expires)
        return false;
    char why[UPK_ERRMSG_MAX + 1];
    set_msg(why, sizeof(why), "release %s %s expired %" PRId64 " s before %s", a->m.name,
            a->m.version, now - a->m.expires, step);
    start_rollback(a, UPK_E_MANIFEST_EXPIRED, why);
    return true;
}

/* On the tick: a download still running when its manifest expires ends. */
static void expiry_tick(upk_agent *a)
{
    if (a->closing || a->busy || a->j.status != UPK_STATUS_DOWNLOADING || a->j.rolling_back)
        return;
    (void)expired_before(a, "the download completed");
}

/* Rejections happen before anything is installed: no rollback needed. */
static void reject(upk_agent *a, upk_err err, const char *msg)
{
    finish(a, UPK_STATUS_REJECTED, err, msg != NULL ? msg : upk_err_msg(err));
}

/* ---------------------------------------------------------------- desired */

static upk_err decode_manifest(upk_agent *a, char *why, size_t cap)
{
    upk_err err = upk_manifest_verify(a->cfg->keyring, a->j.key_id, a->j.manifest,
                                      a->j.manifest_len, a->j.sig, a->j.sig_len, &a->m);
    if (err != UPK_OK)
        set_msg(why, cap, "manifest signed by key %.16s: %s", a->j.key_id, upk_err_msg(err));
    return err;
}

/* Everything a device checks before downloading a byte. */
static upk_err judge(upk_agent *a, char *why, size_t cap)
{
    const char *mods[1] = {a->cfg->module};
    upk_device_facts f = {
        .now = now_s(),
        .hw = a->cfg->hardware,
        .installed_security_version = a->facts.security_version,
        .modules = mods,
        .module_count = 1,
    };
    upk_err err = upk_manifest_check(&a->m, &f);
    if (err != UPK_OK) {
        set_msg(why, cap, "release %s %s: %s", a->m.name, a->m.version, upk_err_msg(err));
        return err;
    }
    if (a->m.size > a->cfg->limits.max_artifact_size) {
        set_msg(why, cap, "artifact of %" PRIu64 " bytes exceeds limits.max_artifact_size",
                a->m.size);
        return UPK_E_SIZE_MISMATCH;
    }
    if (a->m.type == UPK_RELEASE_DELTA) {
#ifdef UPK_HAVE_DELTA
        char img[UPK_AGENT_PATH_MAX];
        if (a->ops->image_path == NULL || a->ops->image_path(a->inst, img, sizeof(img)) != UPK_OK) {
            set_msg(why, cap, "module %s cannot apply delta releases", a->cfg->module);
            return UPK_E_MODULE_UNSUPPORTED;
        }
        /* The installed facts say which image is installed; only when they
         * are unknown is the image hashed (once, before any download). The
         * apply step checks the real file again. */
        static const uint8_t zero[UPK_SHA256_LEN];
        uint8_t have[UPK_SHA256_LEN];
        memcpy(have, a->facts.image_sha256, UPK_SHA256_LEN);
        uint64_t sz = 0;
        if (memcmp(have, zero, UPK_SHA256_LEN) == 0 && upk_fs_sha256(img, have, &sz) != UPK_OK)
            memset(have, 0, sizeof(have));
        if (!upk_mem_equal_ct(have, a->m.base_sha256, UPK_SHA256_LEN)) {
            set_msg(why, cap, "installed image %s is not the delta's base", img);
            return UPK_E_DELTA_BASE_MISMATCH;
        }
#else
        set_msg(why, cap, "this agent was built without delta support");
        return UPK_E_MODULE_UNSUPPORTED;
#endif
    }
    return UPK_OK;
}

/* Aborts an update that has not reached activation, in favour of what comes
 * next (SUPERSEDED or CANCELLED). Returns true when a rollback is running and
 * the next desired must wait in pending. */
static bool abandon(upk_agent *a, upk_err why)
{
    if (a->j.status >= UPK_STATUS_INSTALLING) {
        start_rollback(a, why, upk_err_msg(why));
        return a->busy;
    }
    finish(a, UPK_STATUS_FAILED, why, upk_err_msg(why));
    return false;
}

static void set_pending(upk_agent *a, const char *payload, size_t len)
{
    free(a->pending);
    a->pending = NULL;
    a->pending_len = 0;
    if (len > 0) {
        a->pending = malloc(len + 1);
        if (a->pending == NULL) {
            upk_error("device=%s out of memory keeping a desired message", a->cfg->device_id);
            return;
        }
        memcpy(a->pending, payload, len);
        a->pending[len] = '\0';
        a->pending_len = len;
    }
    a->have_pending = true;
}

static void handle_desired(upk_agent *a, const char *payload, size_t len)
{
    const char *dev = a->cfg->device_id;
    char id[UPK_SHA256_HEX_LEN + 1], legacy[UPK_SHA256_HEX_LEN + 1];
    bool clear;
    desired_ident(payload, len, id, legacy, &clear);
    if (clear) {
        payload = NULL; /* a decoded clear is handled as the empty payload */
        len = 0;
    }
    if (len > 0) {
        if (same_assignment(a, payload, len)) {
            /* Redelivered retained message: already handled or under way;
             * only its bake window is taken again (not journaled). */
            upk_desired_msg rd;
            memset(&rd, 0, sizeof(rd));
            if (upk_desired_decode(payload, len, &rd) == UPK_OK)
                a->bake_s = rd.bake_s;
            upk_desired_cleanup(&rd);
            return;
        }
    }
    if (a->busy || a->j.status == UPK_STATUS_ACTIVATING || a->j.status == UPK_STATUS_HEALTH_CHECK ||
        a->j.rolling_back) {
        /* Never abandon a half-switched device: finish first. */
        set_pending(a, payload, len);
        return;
    }
    if (len == 0) {
        if (in_progress(a->j.status)) {
            upk_info("device=%s campaign=%s desired cleared: cancelling", dev, a->j.campaign);
            (void)abandon(a, UPK_E_CANCELLED);
        }
        return;
    }
    if (in_progress(a->j.status)) {
        upk_info("device=%s campaign=%s superseded by a newer desired release", dev, a->j.campaign);
        if (abandon(a, UPK_E_SUPERSEDED)) {
            set_pending(a, payload, len);
            return;
        }
    }

    /* A new update: journal what we got, whatever its fate. */
    upk_desired_msg d;
    memset(&d, 0, sizeof(d));
    upk__journal_cleanup(&a->j);
    memset(&a->m, 0, sizeof(a->m));
    memcpy(a->j.desired_id, id, sizeof(id));
    char why[UPK_ERRMSG_MAX + 1];
    upk_err err = upk_desired_decode(payload, len, &d);
    if (err != UPK_OK) {
        set_msg(why, sizeof(why), "desired message is malformed: %s", upk_err_msg(err));
        reject(a, err, why);
        return;
    }
    (void)snprintf(a->j.campaign, sizeof(a->j.campaign), "%s", d.campaign);
    (void)snprintf(a->j.key_id, sizeof(a->j.key_id), "%s", d.key_id);
    a->bake_s = d.bake_s;
    bool rollback_ok = d.rollback;
    memcpy(a->j.sig, d.sig, d.sig_len);
    a->j.sig_len = d.sig_len;
    a->j.manifest = d.manifest;
    a->j.manifest_len = d.manifest_len;
    d.manifest = NULL;
    upk_desired_cleanup(&d);

    err = decode_manifest(a, why, sizeof(why));
    if (err != UPK_OK) {
        /* Unverified bytes are not kept: the journal must only ever hold a
         * manifest that verifies. */
        free(a->j.manifest);
        a->j.manifest = NULL;
        a->j.manifest_len = 0;
        reject(a, err, why);
        return;
    }
    err = judge(a, why, sizeof(why));
    if (err != UPK_OK) {
        reject(a, err, why);
        return;
    }
    /* Same security_version but older than what runs (the signed created
     * time says so): only the controller may ask for that, as a rollback.
     * Only with a link key: then "rollback" is authenticated, and the
     * controller that tags also sets it; a legacy controller never does. */
    if (a->cfg->has_link_key && !rollback_ok && a->facts.release[0] != '\0' &&
        a->facts.created != 0 && a->m.security_version == a->facts.security_version &&
        a->m.created < a->facts.created) {
        set_msg(why, sizeof(why),
                "release %s %s is older than the installed %s %s and not a rollback", a->m.name,
                a->m.version, a->facts.release, a->facts.version);
        reject(a, UPK_E_DOWNGRADE_REJECTED, why);
        return;
    }
    if (a->m.security_version == a->facts.security_version && a->facts.release[0] != '\0' &&
        strcmp(a->m.name, a->facts.release) == 0 && strcmp(a->m.version, a->facts.version) == 0 &&
        upk_mem_equal_ct(a->m.target_sha256, a->facts.image_sha256, UPK_SHA256_LEN)) {
        finish(a, UPK_STATUS_COMMITTED, UPK_OK, "already installed");
        return;
    }
    upk_info("device=%s campaign=%s release=%s version=%s accepted", dev, a->j.campaign, a->m.name,
             a->m.version);
    if (advance(a, UPK_STATUS_DOWNLOADING) != UPK_OK) {
        finish(a, UPK_STATUS_FAILED, UPK_E_IO, "cannot write the journal");
        return;
    }
    start_download(a);
}

/* ---------------------------------------------------------------- download */

typedef struct rehash_ctx {
    upk_agent *a;
} rehash_ctx;

/* Pool thread: hash the first rehash_len bytes of the partial file into a->sha. */
static void rehash_work(void *arg)
{
    upk_agent *a = arg;
    a->work_err = UPK_OK;
    uint8_t *buf = malloc(65536);
    if (buf == NULL) {
        a->work_err = UPK_E_NOMEM;
        return;
    }
    uint64_t done = 0;
    while (done < a->rehash_len) {
        uint64_t want = a->rehash_len - done;
        ssize_t r = pread(a->part_fd, buf, want > 65536 ? 65536 : (size_t)want, (off_t)done);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            a->work_err = UPK_E_IO;
            break;
        }
        upk_sha256_update(&a->sha, buf, (size_t)r);
        done += (uint64_t)r;
    }
    free(buf);
}

static void finish_download(upk_agent *a);

static void rehash_done(void *arg, bool cancelled)
{
    upk_agent *a = arg;
    if (!op_returned(a))
        return;
    if (cancelled || a->work_err != UPK_OK) {
        finish(a, UPK_STATUS_FAILED, UPK_E_IO, "cannot read the partial download");
        return;
    }
    if (a->j.status == UPK_STATUS_DOWNLOADING && checkpoint(a))
        return;
    upk__window_init(&a->win, a->m.size, a->cfg->limits.chunk_size, a->cfg->limits.chunks_in_flight,
                     a->cfg->limits.chunk_timeout_ms, a->rehash_len);
    a->dl_ready = true;
    a->last_pct_step = (unsigned)(a->m.size > 0 ? (a->rehash_len * 10) / a->m.size : 10);
    if (a->rehash_len > 0)
        upk_info("device=%s campaign=%s resuming download at %" PRIu64 " of %" PRIu64,
                 a->cfg->device_id, a->j.campaign, a->rehash_len, a->m.size);
    if (upk__window_done(&a->win))
        finish_download(a);
    else
        request_more(a);
}

/* Opens the partial file and re-hashes what it already holds, then asks for
 * the rest. Also the resume path after a restart in downloading/verifying/
 * installing: the artifact is always re-verified before use. */
static void start_download(upk_agent *a)
{
    char hex[UPK_SHA256_HEX_LEN + 1];
    char name[UPK_SHA256_HEX_LEN + 8];
    close_part(a);
    if (upk_hex_encode(a->m.sha256, UPK_SHA256_LEN, hex, sizeof(hex)) != UPK_OK)
        goto out_io;
    (void)snprintf(name, sizeof(name), "%s.part", hex);
    if (upk_fs_mkdirs(a->dl_dir) != UPK_OK ||
        upk__path(a->part_path, sizeof(a->part_path), a->dl_dir, name) != UPK_OK)
        goto out_io;
    a->part_fd = open(a->part_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (a->part_fd < 0)
        goto out_io;
    struct stat st;
    if (fstat(a->part_fd, &st) != 0)
        goto out_io;
    uint64_t have = (uint64_t)st.st_size;
    if (have > a->m.size) {
        if (ftruncate(a->part_fd, 0) != 0)
            goto out_io;
        have = 0;
    }
    upk_sha256_cleanup(&a->sha);
    upk_sha256_init(&a->sha);
    a->rehash_len = have;
    if (upk__work_run(a->loop, rehash_work, rehash_done, a) != UPK_OK)
        goto out_io;
    a->busy = true;
    a->outstanding++;
    return;
out_io:
    finish(a, UPK_STATUS_FAILED, UPK_E_IO, "cannot open the download file");
}

static void request_more(upk_agent *a)
{
    if (!a->dl_ready || a->busy || a->j.status != UPK_STATUS_DOWNLOADING || a->mqtt == NULL ||
        !upk_mqtt_connected(a->mqtt))
        return;
    uint64_t now = upk__now_ms();
    uint64_t off;
    uint32_t len;
    while (upk__window_next(&a->win, now, &off, &len)) {
        upk_chunk_req r;
        memcpy(r.artifact, a->m.sha256, UPK_SHA256_LEN);
        r.offset = off;
        r.length = len;
        char *json = NULL;
        size_t jl = 0;
        if (upk_chunk_req_encode(&r, &json, &jl) != UPK_OK)
            return;
        upk_err err =
            pub_tagged(a, UPK_TOPIC_DEV_CHUNK_REQ, a->t_req, json, jl, 0, false, NULL, NULL);
        free(json);
        if (err != UPK_OK)
            return; /* the timeout asks again */
    }
}

static void verify_work(void *arg)
{
    upk_agent *a = arg;
    a->work_err = UPK_OK;
    if (a->cfg->fsync && fsync(a->part_fd) != 0)
        a->work_err = UPK_E_IO;
}

static void delta_work(void *arg)
{
    upk_agent *a = arg;
#ifdef UPK_HAVE_DELTA
    char img[UPK_AGENT_PATH_MAX];
    a->work_err = a->ops->image_path(a->inst, img, sizeof(img));
    if (a->work_err != UPK_OK)
        return;
    a->work_err = upk_delta_apply(img, a->part_path, a->artifact_path);
    if (a->work_err != UPK_OK)
        return;
    uint8_t got[UPK_SHA256_LEN];
    uint64_t size = 0;
    a->work_err = upk_fs_sha256(a->artifact_path, got, &size);
    if (a->work_err == UPK_OK &&
        (size != a->m.target_size || !upk_mem_equal_ct(got, a->m.target_sha256, UPK_SHA256_LEN)))
        a->work_err = UPK_E_HASH_MISMATCH;
#else
    a->work_err = UPK_E_MODULE_UNSUPPORTED;
#endif
}

static void delta_done(void *arg, bool cancelled)
{
    upk_agent *a = arg;
    if (!op_returned(a))
        return;
    if (cancelled || a->work_err != UPK_OK) {
        upk_err err = cancelled ? UPK_E_CANCELLED : a->work_err;
        char why[UPK_ERRMSG_MAX + 1];
        set_msg(why, sizeof(why), "applying the delta failed: %s", upk_err_msg(err));
        reject(a, err, why);
        return;
    }
    if (checkpoint(a))
        return;
    step_install(a);
}

static void verify_done(void *arg, bool cancelled)
{
    upk_agent *a = arg;
    if (!op_returned(a))
        return;
    if (cancelled || a->work_err != UPK_OK) {
        finish(a, UPK_STATUS_FAILED, UPK_E_IO, "cannot sync the download");
        return;
    }
    close_part(a);
    if (checkpoint(a))
        return;
    if (a->m.type == UPK_RELEASE_DELTA) {
        char name[] = "target.img";
        if (upk_fs_mkdirs(a->work_dir) != UPK_OK ||
            upk__path(a->artifact_path, sizeof(a->artifact_path), a->work_dir, name) != UPK_OK ||
            upk__work_run(a->loop, delta_work, delta_done, a) != UPK_OK) {
            finish(a, UPK_STATUS_FAILED, UPK_E_IO, "cannot start the delta apply");
            return;
        }
        a->busy = true;
        a->outstanding++;
        return;
    }
    (void)snprintf(a->artifact_path, sizeof(a->artifact_path), "%s", a->part_path);
    step_install(a);
}

/* All bytes are in: check size and streamed hash, then sync and go on. */
static void finish_download(upk_agent *a)
{
    uint8_t got[UPK_SHA256_LEN];
    uint64_t size = a->win.written;
    upk_sha256_final(&a->sha, got);
    upk_sha256_cleanup(&a->sha);
    upk_sha256_init(&a->sha);
    a->dl_ready = false;
    if (a->j.status == UPK_STATUS_DOWNLOADING && advance(a, UPK_STATUS_VERIFYING) != UPK_OK) {
        finish(a, UPK_STATUS_FAILED, UPK_E_IO, "cannot write the journal");
        return;
    }
    if (size != a->m.size) {
        char why[UPK_ERRMSG_MAX + 1];
        set_msg(why, sizeof(why), "got %" PRIu64 " bytes, manifest says %" PRIu64, size, a->m.size);
        reject(a, UPK_E_SIZE_MISMATCH, why);
        return;
    }
    if (!upk_mem_equal_ct(got, a->m.sha256, UPK_SHA256_LEN)) {
        reject(a, UPK_E_HASH_MISMATCH, "downloaded artifact does not match the manifest sha256");
        return;
    }
    if (upk__work_run(a->loop, verify_work, verify_done, a) != UPK_OK) {
        finish(a, UPK_STATUS_FAILED, UPK_E_IO, "cannot start verification");
        return;
    }
    a->busy = true;
    a->outstanding++;
}

static bool write_all_at(int fd, const uint8_t *p, size_t len, uint64_t off)
{
    while (len > 0) {
        ssize_t w = pwrite(fd, p, len, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        p += w;
        len -= (size_t)w;
        off += (uint64_t)w;
    }
    return true;
}

/* A chunk answer. Nothing in it may end an update unless it is
 * authenticated (docs/protocol.md 5.6): a malformed, untagged (with a link
 * key), unrequested or wrongly sized chunk is dropped and its range asked
 * again on the normal timeout, and the request is matched BEFORE the status
 * is looked at, so a forged refusal for a range never asked cannot end
 * anything. A refusal ends the update only when tagged; without a link key
 * only once UPK__REFUSALS_MAX tries of one request (each after its backoff)
 * were refused. */
static void on_chunk(upk_agent *a, const uint8_t *payload, size_t len, const char *auth)
{
    const char *dev = a->cfg->device_id;
    upk_chunk_hdr h;
    const uint8_t *data = NULL;
    upk_err perr = upk_chunk_parse(payload, len, &h, &data);
    if (perr != UPK_OK) {
        upk_warn("device=%s malformed chunk ignored error=%s", dev, upk_err_str(perr));
        a->dropped[perr]++;
        return;
    }
    if (!a->dl_ready || a->busy || a->j.status != UPK_STATUS_DOWNLOADING ||
        !upk_mem_equal_ct(h.artifact, a->m.sha256, UPK_SHA256_LEN)) {
        /* Not asked for now: a late answer for an earlier artifact, or
         * someone else's bytes. Debug only: it is harmless and may be many. */
        upk_debug("device=%s chunk dropped offset=%" PRIu64 " error=CHUNK_UNEXPECTED", dev,
                  h.offset);
        a->dropped[UPK_E_CHUNK_UNEXPECTED]++;
        return;
    }
    upk_err err;
    if (a->cfg->has_link_key &&
        (err = upk_link_verify(&a->cfg->link_key, dev, UPK_TOPIC_DEV_CHUNK_DATA, payload, len,
                               auth)) != UPK_OK) {
        upk_warn("device=%s campaign=%s chunk dropped offset=%" PRIu64 " error=%s", dev,
                 a->j.campaign, h.offset, upk_err_str(err));
        a->dropped[err]++;
        return;
    }
    uint32_t want = 0;
    if (!upk__window_expects(&a->win, h.offset, &want)) {
        /* A duplicate, a late answer after a reconnect, or never asked. */
        upk_debug("device=%s chunk dropped offset=%" PRIu64 " error=CHUNK_UNEXPECTED", dev,
                  h.offset);
        a->dropped[UPK_E_CHUNK_UNEXPECTED]++;
        return;
    }
    switch (h.status) {
    case UPK_CHUNK_OK:
        break;
    case UPK_CHUNK_BUSY:
        return; /* asked again after the timeout */
    default: {
        uint32_t tries = a->cfg->has_link_key ? 0 : upk__window_refused(&a->win, h.offset);
        if (!a->cfg->has_link_key && tries < UPK__REFUSALS_MAX) {
            upk_warn("device=%s campaign=%s chunk refused (status %d) at offset=%" PRIu64
                     ", try %u of %u; asking again",
                     dev, a->j.campaign, (int)h.status, h.offset, tries, UPK__REFUSALS_MAX);
            a->dropped[h.status == UPK_CHUNK_RANGE ? UPK_E_SIZE_MISMATCH : UPK_E_NOT_FOUND]++;
            return; /* unauthenticated: asked again on the timeout */
        }
        if (h.status == UPK_CHUNK_RANGE)
            reject(a, UPK_E_SIZE_MISMATCH,
                   "controller says the artifact is shorter than the manifest");
        else
            finish(a, UPK_STATUS_FAILED, UPK_E_NOT_FOUND,
                   "controller does not serve this artifact");
        return;
    }
    }
    if (h.length != want) {
        /* The manifest fixes every length: a short or long chunk is not the
         * answer to this request. */
        upk_warn("device=%s campaign=%s chunk of %" PRIu32 " bytes at offset=%" PRIu64
                 " dropped (%" PRIu32 " asked) error=CHUNK_UNEXPECTED",
                 dev, a->j.campaign, h.length, h.offset, want);
        a->dropped[UPK_E_CHUNK_UNEXPECTED]++;
        return;
    }
    err = upk__window_accept(&a->win, h.offset, data, h.length);
    if (err == UPK_E_CHUNK_UNEXPECTED || err == UPK_E_SIZE_MISMATCH)
        return; /* cannot happen after the checks above; harmless */
    if (err != UPK_OK) {
        finish(a, UPK_STATUS_FAILED, err, "cannot keep a chunk");
        return;
    }
    uint8_t *buf;
    uint32_t blen;
    while (upk__window_take(&a->win, &buf, &blen)) {
        bool ok = write_all_at(a->part_fd, buf, blen, a->win.written - blen);
        if (ok)
            upk_sha256_update(&a->sha, buf, blen);
        free(buf);
        if (!ok) {
            finish(a, UPK_STATUS_FAILED, UPK_E_IO, "cannot write the download");
            return;
        }
    }
    unsigned step = (unsigned)(a->m.size > 0 ? (a->win.written * 10) / a->m.size : 10);
    if (step > a->last_pct_step && step < 10) {
        a->last_pct_step = step;
        emit(a, UPK_STATUS_DOWNLOADING, step * 10, UPK_OK, NULL);
    }
    if (upk__window_done(&a->win))
        finish_download(a);
    else
        request_more(a);
}

/* ---------------------------------------------------------------- install steps */

static void install_done(upk_err err, const char *msg, void *cb_data)
{
    upk_agent *a = cb_data;
    if (!op_returned(a))
        return;
    (void)snprintf(a->j.slot, sizeof(a->j.slot), "%s", a->job.slot);
    if (err != UPK_OK) {
        start_rollback(a, err == UPK_E_CANCELLED ? err : UPK_E_INSTALL_FAILED,
                       msg != NULL ? msg : upk_err_msg(err));
        return;
    }
    if (a->have_pending) {
        /* A newer (or a cleared) desired came while installing: undo. */
        upk_err why = a->pending == NULL ? UPK_E_CANCELLED : UPK_E_SUPERSEDED;
        start_rollback(a, why, upk_err_msg(why));
        return;
    }
    step_activate(a);
}

static void step_install(upk_agent *a)
{
    if (expired_before(a, "install"))
        return;
    if (a->j.status != UPK_STATUS_INSTALLING && advance(a, UPK_STATUS_INSTALLING) != UPK_OK) {
        finish(a, UPK_STATUS_FAILED, UPK_E_IO, "cannot write the journal");
        return;
    }
    prepare_job(a, UPK_STATUS_INSTALLING);
    if (a->ops->install == NULL) {
        a->busy = true;
        a->outstanding++;
        install_done(UPK_OK, NULL, a);
        return;
    }
    if (a->ops->install(a->inst, &a->job, install_done, a) != UPK_OK) {
        start_rollback(a, UPK_E_INSTALL_FAILED, "install module could not start");
        return;
    }
    a->busy = true;
    a->outstanding++;
}

static void activate_done(upk_err err, const char *msg, void *cb_data)
{
    upk_agent *a = cb_data;
    if (!op_returned(a))
        return;
    if (err != UPK_OK) {
        start_rollback(a, UPK_E_ACTIVATE_FAILED, msg != NULL ? msg : upk_err_msg(err));
        return;
    }
    step_health(a);
}

static void step_activate(upk_agent *a)
{
    if (expired_before(a, "activation"))
        return;
    if (a->j.status != UPK_STATUS_ACTIVATING && advance(a, UPK_STATUS_ACTIVATING) != UPK_OK) {
        start_rollback(a, UPK_E_IO, "cannot write the journal");
        return;
    }
    prepare_job(a, UPK_STATUS_ACTIVATING);
    if (a->ops->activate == NULL) {
        a->busy = true;
        a->outstanding++;
        activate_done(UPK_OK, NULL, a);
        return;
    }
    if (a->ops->activate(a->inst, &a->job, activate_done, a) != UPK_OK) {
        start_rollback(a, UPK_E_ACTIVATE_FAILED, "install module could not start");
        return;
    }
    a->busy = true;
    a->outstanding++;
}

static void health_cmd_done(int status, void *cb_data)
{
    upk_agent *a = cb_data;
    if (!op_returned(a))
        return;
    if (status == 0) {
        step_commit(a);
        return;
    }
    char why[UPK_ERRMSG_MAX + 1];
    if (status == -2) {
        set_msg(why, sizeof(why), "health check %s did not finish in %u s", a->cfg->health_argv[0],
                a->cfg->health_timeout_s);
        start_rollback(a, UPK_E_HEALTH_TIMEOUT, why);
    } else {
        set_msg(why, sizeof(why), "health check %s exited with %d", a->cfg->health_argv[0], status);
        start_rollback(a, UPK_E_HEALTH_FAILED, why);
    }
}

static void module_health_done(upk_err err, const char *msg, void *cb_data)
{
    upk_agent *a = cb_data;
    if (!op_returned(a))
        return;
    if (err != UPK_OK) {
        start_rollback(a, err == UPK_E_HEALTH_TIMEOUT ? err : UPK_E_HEALTH_FAILED,
                       msg != NULL ? msg : upk_err_msg(err));
        return;
    }
    if (a->cfg->health_argc == 0) {
        step_commit(a);
        return;
    }
    if (upk__spawn(a->loop, a->cfg->health_argv, NULL, a->cfg->health_timeout_s * 1000u,
                   health_cmd_done, a) != UPK_OK) {
        start_rollback(a, UPK_E_HEALTH_FAILED, "health check command could not start");
        return;
    }
    a->busy = true;
    a->outstanding++;
}

static void step_health(upk_agent *a)
{
    if (a->j.status != UPK_STATUS_HEALTH_CHECK && advance(a, UPK_STATUS_HEALTH_CHECK) != UPK_OK) {
        start_rollback(a, UPK_E_IO, "cannot write the journal");
        return;
    }
    prepare_job(a, UPK_STATUS_HEALTH_CHECK);
    a->busy = true;
    a->outstanding++;
    if (a->ops->health == NULL) {
        module_health_done(UPK_OK, NULL, a);
        return;
    }
    if (a->ops->health(a->inst, &a->job, module_health_done, a) != UPK_OK) {
        a->busy = false;
        a->outstanding--;
        start_rollback(a, UPK_E_HEALTH_FAILED, "install module could not start");
    }
}

/* After the installed facts name the new release: the bake window, then the
 * final status. Also the resume path when a restart fell between the two. */
static void commit_complete(upk_agent *a)
{
    /* Health reports for the bake window, counted from this boot. */
    char boot[UPK__BOOT_ID_MAX + 1] = "";
    if (upk__boot_id(NULL, boot, sizeof(boot)) != UPK_OK)
        boot[0] = '\0';
    upk__bake_begin(&a->bake, a->bake_s, now_s(), a->j.campaign, a->facts.release, a->facts.version,
                    boot);
    if (upk__bake_save(a->bake_path, &a->bake, a->cfg->fsync) != UPK_OK)
        upk_warn("device=%s cannot record the bake window", a->cfg->device_id);
    finish(a, UPK_STATUS_COMMITTED, UPK_OK, NULL);
}

/* True when the installed facts were written by the commit of the update in
 * the journal: health passed, the module committed, only the journal's final
 * write was lost. */
static bool commit_recorded(const upk_agent *a)
{
    return a->j.status == UPK_STATUS_HEALTH_CHECK && !a->j.rolling_back &&
           strcmp(a->facts.campaign, a->j.campaign) == 0 &&
           strcmp(a->facts.release, a->m.name) == 0 &&
           strcmp(a->facts.version, a->m.version) == 0 &&
           upk_mem_equal_ct(a->facts.image_sha256, a->m.target_sha256, UPK_SHA256_LEN);
}

static void commit_done(upk_err err, const char *msg, void *cb_data)
{
    upk_agent *a = cb_data;
    if (!op_returned(a))
        return;
    if (err != UPK_OK) {
        start_rollback(a, err, msg != NULL ? msg : "commit failed");
        return;
    }
    /* The installed facts first: anti-rollback depends on them, and a crash
     * before the journal says committed only repeats the commit. */
    upk__installed f;
    memset(&f, 0, sizeof(f));
    (void)snprintf(f.release, sizeof(f.release), "%s", a->m.name);
    (void)snprintf(f.version, sizeof(f.version), "%s", a->m.version);
    f.security_version = a->m.security_version;
    memcpy(f.image_sha256, a->m.target_sha256, UPK_SHA256_LEN);
    (void)snprintf(f.campaign, sizeof(f.campaign), "%s", a->j.campaign);
    f.last_patched = now_s();
    f.support_until = a->m.support.present ? a->m.support.security_until : 0;
    f.created = a->m.created;
    upk_err e = upk__installed_save_ex(a->installed_path, &f, a->cfg->fsync);
    if (e != UPK_OK) {
        start_rollback(a, e, "cannot record the installed release");
        return;
    }
    a->facts = f;
    commit_complete(a);
}

static void step_commit(upk_agent *a)
{
    /* Once the commit began it is finished, never rolled back. */
    if (!a->j.committing && expired_before(a, "commit"))
        return;
    /* Journaled first: once the module's commit step may have run, a
     * restart must finish the commit, not roll back. */
    if (!a->j.committing) {
        a->j.committing = true;
        if (upk__journal_save_ex(a->journal_path, &a->j, a->cfg->fsync) != UPK_OK) {
            a->j.committing = false;
            start_rollback(a, UPK_E_IO, "cannot write the journal");
            return;
        }
    }
    prepare_job(a, UPK_STATUS_HEALTH_CHECK);
    a->busy = true;
    a->outstanding++;
    if (a->ops->commit == NULL) {
        commit_done(UPK_OK, NULL, a);
        return;
    }
    if (a->ops->commit(a->inst, &a->job, commit_done, a) != UPK_OK) {
        a->busy = false;
        a->outstanding--;
        start_rollback(a, UPK_E_INSTALL_FAILED, "commit could not start");
    }
}

/* ---------------------------------------------------------------- outbox */

/* The oldest queued event's seq; 0 when the outbox is empty. */
static uint64_t ob_head(const upk_agent *a)
{
    return a->ob.count > 0 ? a->ob.seqs[0] : 0;
}

/* The broker took the event (PUBACK). That is not delivery: the controller
 * acknowledges it once stored (on_ack); until then it stays queued. */
static void ob_done(upk_mqtt *c, upk_err err, void *cb_data)
{
    (void)c;
    upk_agent *a = cb_data;
    a->ob_sending = false;
    if (err != UPK_OK) {
        upk_warn("device=%s event seq=%" PRIu64 " not taken by the broker (%s); will resend",
                 a->cfg->device_id, a->ob_seq, upk_err_str(err));
        return;
    }
    if (ob_head(a) == a->ob_seq)
        a->ob_waiting = true; /* else the ack came first, or it was dropped */
    else
        ob_kick(a);
}

/* dev/{d}/ack: the controller has stored event seq. Only the oldest queued
 * event can be acked (the controller acks nothing it has not stored, and
 * nothing newer is sent before it); anything else is stale (a second ack of
 * a re-sent event) and changes nothing. */
static void on_ack(upk_agent *a, const char *payload, size_t len, const char *auth)
{
    uint64_t seq = 0;
    upk_err err = UPK_OK;
    /* Only the controller may release an event: with a link key, an ack
     * without its tag is dropped (a forged ack would delete an event the
     * controller never stored). */
    if (a->cfg->has_link_key &&
        (err = upk_link_verify(&a->cfg->link_key, a->cfg->device_id, UPK_TOPIC_DEV_ACK, payload,
                               len, auth)) != UPK_OK) {
        upk_warn("device=%s unauthenticated ack ignored error=%s", a->cfg->device_id,
                 upk_err_str(err));
        a->dropped[err]++;
        return;
    }
    err = upk_ack_decode(payload, len, &seq);
    if (err != UPK_OK) {
        upk_warn("device=%s bad ack ignored error=%s", a->cfg->device_id, upk_err_str(err));
        a->dropped[err]++;
        return;
    }
    if (seq != ob_head(a)) {
        upk_debug("device=%s stale ack seq=%" PRIu64 " ignored", a->cfg->device_id, seq);
        return;
    }
    if (upk__outbox_pop(&a->ob, seq) != UPK_OK)
        upk_warn("device=%s outbox lost track of seq=%" PRIu64, a->cfg->device_id, seq);
    a->ob_waiting = false;
    a->ob_tries = 0;
    ob_kick(a);
}

/* Ack timeout for the try-th wait in a row: limits.ack_timeout_ms doubling,
 * at most 32 times that, so a fleet whose controller is away for a while
 * does not fill its queue with copies. */
static uint64_t ob_ack_timeout(const upk_agent *a)
{
    return (uint64_t)a->cfg->limits.ack_timeout_ms << a->ob_tries;
}

/* On the tick: an event whose ack is overdue goes again; so does the next
 * one at once when the awaited event was dropped from a full outbox. */
static void ob_check(upk_agent *a)
{
    if (a->ob_waiting && ob_head(a) != a->ob_seq) {
        a->ob_waiting = false;
        ob_kick(a);
        return;
    }
    if (!a->ob_waiting || upk__now_ms() - a->ob_sent_ms < ob_ack_timeout(a))
        return;
    upk_warn("device=%s no ack for event seq=%" PRIu64 " in %" PRIu64 " ms; sending it again",
             a->cfg->device_id, a->ob_seq, ob_ack_timeout(a));
    a->ob_waiting = false;
    if (a->ob_tries < 5)
        a->ob_tries++;
    ob_kick(a);
}

/* Sends the oldest queued event; one at a time so that order holds. */
static void ob_kick(upk_agent *a)
{
    if (a->closing || a->ob_sending || a->ob_waiting || a->mqtt == NULL ||
        !upk_mqtt_connected(a->mqtt))
        return;
    uint64_t seq;
    char *json = NULL;
    size_t len = 0;
    if (upk__outbox_peek(&a->ob, &seq, &json, &len) != UPK_OK)
        return;
    upk_err err = pub_tagged(a, UPK_TOPIC_DEV_EVENTS, a->t_events, json, len, 1, false, ob_done, a);
    free(json);
    if (err != UPK_OK)
        return; /* retried on the next tick */
    if (seq != a->ob_seq)
        a->ob_tries = 0;
    a->ob_sending = true;
    a->ob_seq = seq;
    a->ob_sent_ms = upk__now_ms();
}

/* ---------------------------------------------------------------- mqtt glue */

static void on_connect(upk_mqtt *c, void *userdata)
{
    upk_agent *a = userdata;
    if (a->closing)
        return;
    upk_info("device=%s connected to %s", a->cfg->device_id, a->cfg->broker);
    if (upk_mqtt_subscribe(c, a->t_desired, 1) != UPK_OK ||
        upk_mqtt_subscribe(c, a->t_data, 0) != UPK_OK ||
        upk_mqtt_subscribe(c, a->t_ack, 0) != UPK_OK)
        upk_error("device=%s subscribe failed", a->cfg->device_id);
    if (upk_mqtt_publish(c, a->t_online, "1", 1, 1, true, NULL, NULL) != UPK_OK)
        upk_warn("device=%s online flag not published", a->cfg->device_id);
    publish_state(a);
    if (a->dl_ready)
        upk__window_reset(&a->win);
    request_more(a);
    /* The event in flight may have died with the old connection (a broker
     * that acked it and crashed): send it again now. */
    a->ob_waiting = false;
    ob_kick(a);
}

static void on_disconnect(upk_mqtt *c, upk_err err, void *userdata)
{
    (void)c;
    upk_agent *a = userdata;
    if (err != UPK_E_AUTH_FAILED) /* else logged by the client, once per backoff step */
        upk_warn("device=%s disconnected: %s", a->cfg->device_id, upk_err_str(err));
    if (a->dl_ready)
        upk__window_reset(&a->win); /* ask again from the written prefix */
}

/* The link checks of a desired message (link.c) for a device with a link
 * key. A refused one is logged with its code and changes nothing: no event,
 * not even for the campaign it names, since it cannot be trusted to name
 * one. An accepted one moves the kept counter forward (journaled first) and
 * clears the stale flag. */
static bool desired_authentic(upk_agent *a, const upk_mqtt_msg *msg)
{
    const char *dev = a->cfg->device_id;
    upk__link next;
    upk_err err =
        upk__link_check_desired(&a->link, &a->cfg->link_key, dev, (const char *)msg->payload,
                                msg->len, msg->auth, now_s(), &next);
    if (err != UPK_OK) {
        upk_warn("device=%s desired message refused (%zu bytes, last ctr %" PRIu64 ") error=%s",
                 dev, msg->len, a->link.ctr, upk_err_str(err));
        a->dropped[err]++;
        return false;
    }
    if (memcmp(&next, &a->link, sizeof(next)) != 0) {
        err = upk__link_save_ex(a->link_path, &next, a->cfg->fsync);
        if (err != UPK_OK) {
            /* Acting on it without the counter kept would let it be replayed. */
            upk_error("device=%s cannot record the desired counter: %s; message ignored", dev,
                      upk_err_str(err));
            return false;
        }
        a->link = next;
    }
    if (a->stale) {
        upk_info("device=%s fresh desired received (ctr %" PRIu64 "); no longer stale", dev,
                 a->link.ctr);
        a->stale = false;
        publish_state(a);
    }
    return true;
}

/* On the tick: the last authenticated desired's fresh_until has passed, so
 * newer ones may be withheld. Logged once; reported in state. */
static void stale_check(upk_agent *a)
{
    if (!a->cfg->has_link_key || a->stale || a->link.fresh_until == 0 ||
        now_s() < a->link.fresh_until)
        return;
    a->stale = true;
    upk_warn("device=%s no fresh desired since %" PRId64 " (ctr %" PRIu64
             "): the controller is unreachable or its messages are withheld error=DESIRED_STALE",
             a->cfg->device_id, a->link.fresh_until, a->link.ctr);
    publish_state(a);
}

static void on_message(upk_mqtt *c, const upk_mqtt_msg *msg, void *userdata)
{
    (void)c;
    upk_agent *a = userdata;
    if (a->closing || !a->started)
        return;
    if (strcmp(msg->topic, a->t_data) == 0) {
        on_chunk(a, msg->payload, msg->len, msg->auth);
    } else if (strcmp(msg->topic, a->t_ack) == 0) {
        on_ack(a, (const char *)msg->payload, msg->len, msg->auth);
    } else if (strcmp(msg->topic, a->t_desired) == 0) {
        if (msg->len > UPK_MSG_MAX) {
            upk_warn("device=%s oversized desired message ignored (%zu bytes) error=MSG_TOO_LARGE",
                     a->cfg->device_id, msg->len);
            a->dropped[UPK_E_MSG_TOO_LARGE]++;
            return;
        }
        if (a->cfg->has_link_key && !desired_authentic(a, msg))
            return;
        handle_desired(a, (const char *)msg->payload, msg->len);
    }
}

/* ---------------------------------------------------------------- health reports */

/* Health reports (docs/agent.md): in a bake window, restarts and boots since
 * commit, the health check re-run and the hook's metrics; outside one, on an
 * idle device with a hook or probe, the metrics alone under no campaign (the
 * controller's baseline). Each goes through the outbox; at most one per
 * upk__health_gap, and none while the outbox is half full, so that reports
 * never push a step event out. */
static void probe_note(upk_agent *a, upk_err err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void probe_note(upk_agent *a, upk_err err, const char *fmt, ...)
{
    char why[UPK_ERRMSG_MAX + 1];
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    upk_warn("device=%s %s error=%s", a->cfg->device_id, why, upk_err_str(err));
    if (a->probe_note[0] == '\0')
        set_msg(a->probe_note, sizeof(a->probe_note), "%s (%s)", why, upk_err_str(err));
}

static void probe_finish(upk_agent *a)
{
    a->probing = false;
    upk_event_msg *ev = calloc(1, sizeof(*ev));
    if (ev == NULL)
        return;
    int64_t now = now_s();
    ev->ts = now;
    ev->health = a->probe;
    (void)snprintf(ev->message, sizeof(ev->message), "%s", a->probe_note);
    if (a->probe_bake) {
        (void)snprintf(ev->campaign, sizeof(ev->campaign), "%s", a->bake.campaign);
        (void)snprintf(ev->release, sizeof(ev->release), "%s", a->bake.release);
        (void)snprintf(ev->version, sizeof(ev->version), "%s", a->bake.version);
        ev->step = UPK_STATUS_COMMITTED;
        ev->progress = 100;
        ev->health.restarts = a->bake.restarts;
        ev->health.boots = a->bake.boots;
    } else {
        (void)snprintf(ev->release, sizeof(ev->release), "%s", a->facts.release);
        (void)snprintf(ev->version, sizeof(ev->version), "%s", a->facts.version);
        ev->step = UPK_STATUS_IDLE;
    }
    upk_err e = upk__outbox_push(&a->ob, ev);
    free(ev);
    if (e != UPK_OK) {
        upk_warn("device=%s health report not queued: %s", a->cfg->device_id, upk_err_str(e));
        return;
    }
    if (a->probe_bake) {
        upk__bake_sent(&a->bake, now);
        if (upk__bake_save(a->bake_path, &a->bake, a->cfg->fsync) != UPK_OK)
            upk_warn("device=%s cannot record the bake window", a->cfg->device_id);
    }
    ob_kick(a);
}

static void probe_hook_done(const upk__hook_result *r, void *cb_data)
{
    upk_agent *a = cb_data;
    a->outstanding--;
    if (a->closing) {
        maybe_free(a);
        return;
    }
    const char *hook = a->cfg->hook_argv[0];
    if (r->status == -2) {
        probe_note(a, UPK_E_HEALTH_TIMEOUT, "health hook %s did not finish in %u s", hook,
                   a->cfg->hook_timeout_s);
    } else if (r->status != 0) {
        probe_note(a, UPK_E_HEALTH_FAILED, "health hook %s exited with %d", hook, r->status);
    } else {
        size_t len = r->len;
        if (r->truncated) {
            probe_note(a, UPK_E_FIELD_TOO_LONG, "health hook %s printed more than %d bytes", hook,
                       UPK__HOOK_OUT_MAX);
            while (len > 0 && r->out[len - 1] != '\n')
                len--; /* the cut line is not a line */
        }
        char why[UPK_ERRMSG_MAX + 1];
        upk_err e = upk__health_parse(r->out, len, &a->probe, why, sizeof(why));
        if (e != UPK_OK)
            probe_note(a, e, "%s (skipped)", why);
    }
    probe_finish(a);
}

static void probe_hook(upk_agent *a)
{
    if (a->cfg->hook_argc == 0) {
        probe_finish(a);
        return;
    }
    upk_err e = upk__hook_run(a->loop, a->cfg->hook_argv, a->cfg->hook_timeout_s * 1000u,
                              probe_hook_done, a);
    if (e != UPK_OK) {
        probe_note(a, e, "health hook %s could not start", a->cfg->hook_argv[0]);
        probe_finish(a);
        return;
    }
    a->outstanding++;
}

static void probe_check_done(int status, void *cb_data)
{
    upk_agent *a = cb_data;
    a->outstanding--;
    if (a->closing) {
        maybe_free(a);
        return;
    }
    a->probe.check_ok = status == 0 ? 1 : 0;
    if (status == -2)
        probe_note(a, UPK_E_HEALTH_TIMEOUT, "health check %s did not finish in %u s",
                   a->cfg->health_argv[0], a->cfg->health_timeout_s);
    else if (status != 0)
        probe_note(a, UPK_E_HEALTH_FAILED, "health check %s exited with %d", a->cfg->health_argv[0],
                   status);
    probe_hook(a);
}

static void probe_start(upk_agent *a, bool bake)
{
    a->probing = true;
    a->probe_bake = bake;
    a->probe_note[0] = '\0';
    memset(&a->probe, 0, sizeof(a->probe));
    a->probe.present = true;
    a->probe.check_ok = -1;
    if (a->cfg->health_probe != NULL)
        a->cfg->health_probe(a->cfg->health_probe_self, a->facts.version, &a->probe);
    if (a->probe.check_ok < -1 || a->probe.check_ok > 1 || a->probe.metric_count > 8) {
        probe_note(a, UPK_E_FIELD_RANGE, "health probe gave a bad report");
        memset(&a->probe, 0, sizeof(a->probe));
        a->probe.present = true;
        a->probe.check_ok = -1;
    }
    /* The check is re-run in a bake window only: it judges the update. */
    if (!bake || a->cfg->health_argc == 0) {
        probe_hook(a);
        return;
    }
    upk_err e = upk__spawn(a->loop, a->cfg->health_argv, NULL, a->cfg->health_timeout_s * 1000u,
                           probe_check_done, a);
    if (e != UPK_OK) {
        a->probe.check_ok = 0;
        probe_note(a, e, "health check %s could not start", a->cfg->health_argv[0]);
        probe_hook(a);
        return;
    }
    a->outstanding++;
}

static void health_tick(upk_agent *a)
{
    if (a->probing || a->busy || a->closing || a->ob.count * 2 >= a->ob.max)
        return;
    int64_t now = now_s();
    if (a->bake.active) {
        if (upk__bake_due(&a->bake, now, upk__health_gap(&a->bake, now, a->cfg->health_interval_s)))
            probe_start(a, true);
        return;
    }
    if ((a->cfg->hook_argc == 0 && a->cfg->health_probe == NULL) || in_progress(a->j.status) ||
        a->j.rolling_back || !upk__baseline_due(a->last_baseline, now, a->cfg->health_interval_s))
        return;
    a->last_baseline = now;
    probe_start(a, false);
}

static void tick_cb(uv_timer_t *t)
{
    upk_agent *a = t->data;
    request_more(a);
    health_tick(a);
    ob_check(a);
    ob_kick(a);
    stale_check(a);
    expiry_tick(a);
}

/* ---------------------------------------------------------------- life cycle */

static upk_err build_topics(upk_agent *a)
{
    const char *p = a->cfg->topic_prefix != NULL ? a->cfg->topic_prefix : UPK_TOPIC_PREFIX_DEFAULT;
    const char *d = a->cfg->device_id;
    upk_err err;
    if ((err = upk_topic_build(a->t_state, sizeof(a->t_state), p, UPK_TOPIC_DEV_STATE, d)) ||
        (err = upk_topic_build(a->t_online, sizeof(a->t_online), p, UPK_TOPIC_DEV_ONLINE, d)) ||
        (err = upk_topic_build(a->t_desired, sizeof(a->t_desired), p, UPK_TOPIC_DEV_DESIRED, d)) ||
        (err = upk_topic_build(a->t_events, sizeof(a->t_events), p, UPK_TOPIC_DEV_EVENTS, d)) ||
        (err = upk_topic_build(a->t_req, sizeof(a->t_req), p, UPK_TOPIC_DEV_CHUNK_REQ, d)) ||
        (err = upk_topic_build(a->t_data, sizeof(a->t_data), p, UPK_TOPIC_DEV_CHUNK_DATA, d)) ||
        (err = upk_topic_build(a->t_ack, sizeof(a->t_ack), p, UPK_TOPIC_DEV_ACK, d)))
        return err;
    return UPK_OK;
}

upk_err upk_agent_new(uv_loop_t *loop, const upk_agent_config *cfg, upk_agent **out)
{
    if (loop == NULL || cfg == NULL || out == NULL || cfg->device_id == NULL ||
        cfg->data_dir == NULL || cfg->hardware == NULL || cfg->broker == NULL ||
        cfg->keyring == NULL || cfg->module == NULL)
        return UPK_E_INVALID_ARG;
    upk_agent *a = calloc(1, sizeof(*a));
    if (a == NULL)
        return UPK_E_NOMEM;
    a->loop = loop;
    a->cfg = cfg;
    a->part_fd = -1;
    upk__journal_cleanup(&a->j);
    upk_sha256_init(&a->sha);
    upk_err err = build_topics(a);
    if (err != UPK_OK)
        goto out_free;
    char obdir[UPK_AGENT_PATH_MAX];
    if ((err = upk_fs_mkdirs(cfg->data_dir)) ||
        (err = upk__path(a->journal_path, sizeof(a->journal_path), cfg->data_dir,
                         UPK__JOURNAL_FILE)) ||
        (err = upk__path(a->installed_path, sizeof(a->installed_path), cfg->data_dir,
                         UPK__INSTALLED_FILE)) ||
        (err = upk__path(a->dl_dir, sizeof(a->dl_dir), cfg->data_dir, "download")) ||
        (err = upk__path(a->work_dir, sizeof(a->work_dir), cfg->data_dir, "work")) ||
        (err = upk__path(a->bake_path, sizeof(a->bake_path), cfg->data_dir, UPK__BAKE_FILE)) ||
        (err = upk__path(a->link_path, sizeof(a->link_path), cfg->data_dir, UPK__LINK_FILE)) ||
        (err = upk__path(obdir, sizeof(obdir), cfg->data_dir, "outbox")))
        goto out_free;
    err = upk__outbox_open(&a->ob, obdir, cfg->limits.outbox_max, cfg->fsync);
    if (err != UPK_OK)
        goto out_free;
    err = upk__installed_load(a->installed_path, &a->facts);
    if (err == UPK_E_STATE_CORRUPT) {
        upk_error("device=%s %s is corrupt; reporting no installed release", cfg->device_id,
                  a->installed_path);
        a->load_err = err;
    } else if (err != UPK_OK) {
        goto out_outbox;
    }
    if (a->facts.release[0] == '\0' && a->load_err == UPK_OK && cfg->has_factory) {
        /* Never updated: the release installed at the factory is what runs,
         * so it is reported (and judged against) until the first commit
         * writes the installed facts. */
        (void)snprintf(a->facts.release, sizeof(a->facts.release), "%s", cfg->factory_name);
        (void)snprintf(a->facts.version, sizeof(a->facts.version), "%s", cfg->factory_version);
        a->facts.security_version = cfg->factory_security_version;
        memcpy(a->facts.image_sha256, cfg->factory_image_sha256, UPK_SHA256_LEN);
    }
    if (upk__link_load(a->link_path, &a->link) != UPK_OK)
        upk_error("device=%s %s is corrupt; accepting desired counters from 0", cfg->device_id,
                  a->link_path);
    err = upk__journal_load(a->journal_path, &a->j);
    if (err == UPK_E_STATE_CORRUPT) {
        upk_error("device=%s %s is corrupt; starting idle", cfg->device_id, a->journal_path);
        a->load_err = err;
    } else if (err != UPK_OK) {
        goto out_outbox;
    }
    if (cfg->installer_ops != NULL) {
        a->ops = cfg->installer_ops;
        a->inst = cfg->installer_self;
    } else {
        char eb[256];
        err = upk_installer_new(loop, cfg, &a->ops, &a->inst, eb, sizeof(eb));
        if (err != UPK_OK) {
            upk_error("device=%s %s", cfg->device_id, eb);
            goto out_journal;
        }
        a->inst_owned = true;
    }
    upk_mqtt_opts mo;
    memset(&mo, 0, sizeof(mo));
    mo.url = cfg->broker;
    mo.client_id = cfg->device_id;
    mo.username = cfg->username;
    mo.password = cfg->password;
    mo.ca_file = cfg->tls_ca_file;
    mo.cert_file = cfg->tls_cert_file;
    mo.key_file = cfg->tls_key_file;
    mo.will_topic = a->t_online;
    mo.will_payload = "0";
    mo.will_len = 1;
    mo.will_qos = 1;
    mo.will_retained = true;
    mo.clean_start = true;
    mo.reconnect_min_ms = cfg->reconnect_min_ms;
    mo.reconnect_max_ms = cfg->reconnect_max_ms;
    mo.max_inflight = (int)cfg->limits.chunks_in_flight + 16;
    mo.max_packet = cfg->limits.max_packet; /* bounded receive: nothing larger arrives */
    mo.on_connect = on_connect;
    mo.on_disconnect = on_disconnect;
    mo.on_message = on_message;
    mo.userdata = a;
    err = upk_mqtt_new(loop, &mo, &a->mqtt);
    if (err != UPK_OK)
        goto out_inst;
    if (uv_timer_init(loop, &a->timer) != 0) {
        err = UPK_E_INTERNAL;
        goto out_mqtt;
    }
    a->timer.data = a;
    *out = a;
    return UPK_OK;
out_mqtt:
    upk_mqtt_close(a->mqtt, NULL, NULL);
out_inst:
    if (a->inst_owned)
        a->ops->destroy(a->inst);
out_journal:
    upk__journal_cleanup(&a->j);
out_outbox:
    upk__outbox_cleanup(&a->ob);
out_free:
    upk_sha256_cleanup(&a->sha);
    free(a);
    return err;
}

/* The journal takes a status (and reserves the seq of its event) before
 * the event is queued. When a crash fell between the two, the outbox never
 * handed that seq out: queue the event now, under that seq, so that every
 * journaled step is reported exactly once. */
static void requeue_step_event(upk_agent *a)
{
    upk__journal *j = &a->j;
    if (j->event_seq == 0 || j->event_seq < a->ob.next_seq || j->status == UPK_STATUS_IDLE)
        return;
    char why[UPK_ERRMSG_MAX + 1];
    if (j->manifest != NULL && decode_manifest(a, why, sizeof(why)) != UPK_OK)
        memset(&a->m, 0, sizeof(a->m));
    upk_info("device=%s campaign=%s queueing the %s event a restart kept from being sent",
             a->cfg->device_id, j->campaign, upk_status_str(j->status));
    if (a->ob.next_seq < j->event_seq)
        a->ob.next_seq = j->event_seq; /* numbers only ever go up */
    bool final = upk_status_is_final(j->status);
    char msg[UPK_ERRMSG_MAX + 1];
    (void)snprintf(msg, sizeof(msg), "%s", final ? j->message : "");
    emit(a, j->status, j->status == UPK_STATUS_COMMITTED ? 100 : 0, final ? j->error : UPK_OK,
         msg[0] != '\0' ? msg : NULL);
}

/* Picks up whatever the journal says after a start. */
static void resume(upk_agent *a)
{
    upk__journal *j = &a->j;
    requeue_step_event(a);
    if (!in_progress(j->status))
        return;
    char why[UPK_ERRMSG_MAX + 1];
    upk_err err = decode_manifest(a, why, sizeof(why));
    if (err != UPK_OK) {
        /* The journal only ever holds verified manifests; a key removed
         * from the config since then is the likely cause. */
        if (j->status >= UPK_STATUS_INSTALLING) {
            upk_error("device=%s journaled manifest no longer verifies: %s", a->cfg->device_id,
                      why);
            memset(&a->m, 0, sizeof(a->m));
            start_rollback(a, err, why);
        } else {
            finish(a, UPK_STATUS_FAILED, err, why);
        }
        return;
    }
    upk_info("device=%s campaign=%s resuming from %s%s", a->cfg->device_id, j->campaign,
             upk_status_str(j->status), j->rolling_back ? " (rolling back)" : "");
    if (j->rolling_back) {
        char keep[UPK_ERRMSG_MAX + 1];
        (void)snprintf(keep, sizeof(keep), "%s", j->message);
        start_rollback(a, j->error, keep);
        return;
    }
    if (commit_recorded(a)) {
        /* Rolling back now would leave the facts naming a release that is
         * no longer installed. */
        upk_info("device=%s campaign=%s the commit was recorded before the restart; completing it",
                 a->cfg->device_id, j->campaign);
        commit_complete(a);
        return;
    }
    if (j->status == UPK_STATUS_HEALTH_CHECK && j->committing) {
        upk_info("device=%s campaign=%s health passed and the commit had begun; committing again",
                 a->cfg->device_id, j->campaign);
        step_commit(a);
        return;
    }
    if (expired_before(a, "resuming"))
        return;
    switch (j->status) {
    case UPK_STATUS_DOWNLOADING:
    case UPK_STATUS_VERIFYING:
    case UPK_STATUS_INSTALLING:
        /* The artifact is re-hashed before any install step reuses it. */
        start_download(a);
        return;
    case UPK_STATUS_ACTIVATING:
    case UPK_STATUS_HEALTH_CHECK:
        j->restarts++;
        if (j->restarts > a->cfg->limits.max_restarts) {
            set_msg(why, sizeof(why), "agent restarted %u times during %s", j->restarts,
                    upk_status_str(j->status));
            start_rollback(a, UPK_E_HEALTH_FAILED, why);
            return;
        }
        if (upk__journal_save_ex(a->journal_path, j, a->cfg->fsync) != UPK_OK) {
            start_rollback(a, UPK_E_IO, "cannot write the journal");
            return;
        }
        if (j->status == UPK_STATUS_ACTIVATING)
            step_activate(a);
        else
            step_health(a);
        return;
    default:
        return;
    }
}

upk_err upk_agent_start(upk_agent *a)
{
    if (a == NULL || a->started)
        return UPK_E_STATE_INVALID;
    a->started = true;
    if (!a->cfg->has_link_key && !a->cfg->legacy_quiet)
        upk_warn("device=%s no link_key_file: controller messages are taken without link "
                 "authentication (legacy mode); anyone who can publish to this device's topics "
                 "can decide its updates",
                 a->cfg->device_id);
    /* A start inside a bake window is a restart (and a boot when the boot id
     * changed): both are reported so that a reboot loop is visible. */
    if (upk__bake_load(a->bake_path, &a->bake) != UPK_OK)
        upk_warn("device=%s %s is corrupt; no health reports", a->cfg->device_id, a->bake_path);
    if (a->bake.active) {
        char boot[UPK__BOOT_ID_MAX + 1] = "";
        if (upk__boot_id(NULL, boot, sizeof(boot)) != UPK_OK)
            boot[0] = '\0';
        upk__bake_on_start(&a->bake, now_s(), boot);
        if (upk__bake_save(a->bake_path, &a->bake, a->cfg->fsync) != UPK_OK)
            upk_warn("device=%s cannot record the bake window", a->cfg->device_id);
    }
    resume(a);
    upk_err err = upk_mqtt_start(a->mqtt);
    if (err != UPK_OK)
        return err;
    uint64_t period = a->cfg->limits.chunk_timeout_ms / 4;
    if (period < 20)
        period = 20;
    if (period > TICK_MS)
        period = TICK_MS;
    if (uv_timer_start(&a->timer, tick_cb, period, period) != 0)
        return UPK_E_INTERNAL;
    return UPK_OK;
}

uint64_t upk_agent_dropped(const upk_agent *a, upk_err why)
{
    return a != NULL && (unsigned)why < UPK_E__COUNT ? a->dropped[why] : 0;
}

upk_status upk_agent_status(const upk_agent *a)
{
    return a->j.status;
}

bool upk_agent_connected(const upk_agent *a)
{
    return a != NULL && a->mqtt != NULL && upk_mqtt_connected(a->mqtt);
}

size_t upk_agent_events_pending(const upk_agent *a)
{
    return a != NULL ? a->ob.count : 0;
}

const char *upk_agent_installed_version(const upk_agent *a)
{
    return a->facts.version;
}

uint32_t upk_agent_bake_restarts(const upk_agent *a)
{
    return a->bake.active ? a->bake.restarts : 0;
}

static void maybe_free(upk_agent *a)
{
    if (a->close_waits > 0 || a->outstanding > 0)
        return;
    void (*cb)(void *) = a->closed_cb;
    void *data = a->closed_data;
    close_part(a);
    if (a->inst_owned)
        a->ops->destroy(a->inst);
    upk__journal_cleanup(&a->j);
    upk__outbox_cleanup(&a->ob);
    upk_sha256_cleanup(&a->sha);
    free(a->pending);
    free(a);
    if (cb != NULL)
        cb(data);
}

static void timer_closed(uv_handle_t *h)
{
    upk_agent *a = h->data;
    a->close_waits--;
    maybe_free(a);
}

static void mqtt_closed(void *userdata)
{
    upk_agent *a = userdata;
    a->close_waits--;
    maybe_free(a);
}

/* The retained offline flag is out (or could not be sent): now disconnect. */
static void offline_published(upk_mqtt *c, upk_err err, void *cb_data)
{
    upk_agent *a = cb_data;
    if (err != UPK_OK)
        upk_warn("device=%s offline flag not confirmed: %s", a->cfg->device_id, upk_err_str(err));
    uv_timer_stop(&a->timer);
    if (!uv_is_closing((uv_handle_t *)&a->timer))
        uv_close((uv_handle_t *)&a->timer, timer_closed);
    upk_mqtt_close(c, mqtt_closed, a);
}

/* The broker did not confirm the offline flag in time: disconnect anyway
 * (closing drops the publish without calling offline_published). */
static void offline_wait_over(uv_timer_t *t)
{
    upk_agent *a = t->data;
    upk_warn("device=%s offline flag not confirmed within %u ms; disconnecting", a->cfg->device_id,
             (unsigned)UPK_AGENT_OFFLINE_WAIT_MS);
    uv_close((uv_handle_t *)&a->timer, timer_closed);
    upk_mqtt_close(a->mqtt, mqtt_closed, a);
}

void upk_agent_close(upk_agent *a, void (*closed)(void *userdata), void *userdata)
{
    if (a == NULL || a->closing)
        return;
    a->closing = true;
    a->closed_cb = closed;
    a->closed_data = userdata;
    a->close_waits = 2;
    uv_timer_stop(&a->timer);
    /* A clean disconnect suppresses the will, so say "offline" ourselves
     * first; otherwise a stopped device would look online to the controller
     * and be assigned work until its timeout. A broker that hangs without
     * closing the connection never confirms it: wait UPK_AGENT_OFFLINE_WAIT_MS
     * at most, so that the agent stops within its bound (docs/agent.md). */
    if (a->mqtt != NULL && upk_mqtt_connected(a->mqtt) &&
        upk_mqtt_publish(a->mqtt, a->t_online, "0", 1, 1, true, offline_published, a) == UPK_OK) {
        if (uv_timer_start(&a->timer, offline_wait_over, UPK_AGENT_OFFLINE_WAIT_MS, 0) == 0)
            return;
        upk_mqtt_close(a->mqtt, mqtt_closed, a); /* no timer: do not wait */
    } else {
        upk_mqtt_close(a->mqtt, mqtt_closed, a);
    }
    uv_close((uv_handle_t *)&a->timer, timer_closed);
}
