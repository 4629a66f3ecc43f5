/* `upkeep serve` wiring (serve.h): registry updates from retained state and
 * online messages, event application, chunk serving to devices whose desired
 * names the artifact, operator commands, and the engine tick that advances
 * every running campaign. Everything runs on the loop thread.
 *
 * Flow control: desired messages and chunk replies wait in our own bounded
 * queues (outq.h, duplicates dropped) and at most PUB_WINDOW of them are
 * handed to Paho at a time, released by their completion callbacks. Paho
 * keeps its commands and in-flight messages in lists it scans per packet, so
 * a long backlog inside Paho made every publish slower (docs/benchmarks.md,
 * Scale). Replies to operators bypass the queues.
 *
 * Paho's send thread sleeps up to a second when a partial socket write
 * blocks the client and is woken only by a new command, not when the write
 * completes; with every slot of the window waiting inside Paho nothing new
 * would come. So when the window is full and nothing completed for NUDGE_MS,
 * one more publish is handed over (up to PUB_WINDOW_MAX), which wakes it. */
#include "serve.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <uv.h>

#include "campaign_ext.h"
#include "ctl.h"
#include "engine.h"
#include "outq.h"
#include "rollback.h"
#include "store.h"
#include "upkeep/hash.h"
#include "upkeep/linkauth.h"
#include "upkeep/log.h"
#include "upkeep/mqtt.h"
#include "upkeep/msg.h"
#include "upkeep/topic.h"

#define RUNNING_MAX        256              /* campaigns advanced per tick */
#define REPUBLISH_EVERY_MS 10000            /* retry of desired publishes that failed */
#define PUB_WINDOW         64               /* queued publishes handed to Paho, not done yet */
#define CHUNKQ_MAX         131072           /* chunk requests waiting (~150 bytes each) */
#define DESIREDQ_MAX       1048576          /* devices whose desired waits to be published */
#define WINDOW_STALL_MS    30000            /* no completion for this long: forget the window */
#define NUDGE_MS           10               /* window full and no completion this long: one more */
#define PUB_WINDOW_MAX     (2 * PUB_WINDOW) /* ... but never more than this */

enum { OQ_CHUNK = 1, OQ_DESIRED = 2 };

typedef struct srv {
    uv_loop_t loop;
    const upk_serve_config *cfg;
    upk_store *store;
    upk_ctl *ctl;
    upk_mqtt *mqtt;
    uv_timer_t tick, nudge;
    uv_signal_t sigint, sigterm;
    bool stopping;
    bool republish;
    bool started; /* connected once: later connects republish only unacked desired */
    int64_t last_republish_ms;
    /* Cache of the last encoded desired payload (release, campaign). */
    char cache_release[UPK_ID_MAX + 1], cache_campaign[UPK_ID_MAX + 1];
    char *cache_payload;
    size_t cache_len;
    /* ... and the message it encodes (its manifest is cache_manifest), from
     * which a link-authenticated desired is made per device with its ctr. */
    upk_desired_msg cache_msg;
    char *cache_manifest;
    int64_t last_refresh_ms; /* desired_refresh_s round, with a link secret */
    uint8_t *chunk_buf;
    /* Outbound flow control (see the top of this file). */
    upk_outq *chunkq, *desiredq;
    unsigned inflight;
    int64_t last_done_ms;
    bool turn_desired, pumping;
    /* The blob of the last chunk served, kept open (blobs are immutable). */
    int blob_fd;
    uint64_t blob_size;
    char blob_hex[UPK_SHA256_HEX_LEN + 1];
    uint64_t events, chunks, desired_sent, chunk_dropped;
    /* Retention (issue 17): the next prune; sooner while batches come full;
     * the device the per-device event cap visits next. */
    int64_t next_prune_ms;
    char prune_cursor[UPK_ID_MAX + 1];
} srv;

#define PRUNE_EVERY_MS 10000 /* between prunes once nothing old is left */
#define PRUNE_BATCH    500   /* rows of each kind per prune: a few ms of the loop */
#define PRUNE_DEVICES  20    /* devices the per-device event cap visits per tick */

/* Deletes device data older than the configured retention, one bounded
 * batch per tick, so the loop never stalls on a large backlog. */
static void prune(srv *s, int64_t now)
{
    if (now < s->next_prune_ms)
        return;
    size_t deleted = 0;
    upk_err err =
        upk_store_prune(s->store, now, (int64_t)s->cfg->events_keep_days * 86400000,
                        (int64_t)s->cfg->health_keep_days * 86400000, PRUNE_BATCH, &deleted);
    size_t capped = 0;
    if (err == UPK_OK && s->cfg->events_per_device > 0)
        err = upk_store_prune_device_events(s->store, s->prune_cursor, s->cfg->events_per_device,
                                            PRUNE_DEVICES, PRUNE_BATCH, &capped);
    if (err != UPK_OK)
        upk_error("serve: retention prune failed err=%s", upk_err_str(err));
    else if (deleted + capped > 0)
        upk_debug("serve: retention pruned %zu rows (%zu over a device's event cap)",
                  deleted + capped, capped);
    /* Again at the next tick while there is a backlog or devices are left
     * to visit, else after PRUNE_EVERY_MS. */
    bool more = deleted >= PRUNE_BATCH || capped > 0 || s->prune_cursor[0] != '\0';
    s->next_prune_ms = err == UPK_OK && more ? now : now + PRUNE_EVERY_MS;
}

struct pub_ctx {
    srv *s;
    char device[UPK_ID_MAX + 1];
    char release[UPK_ID_MAX + 1];
    char campaign[UPK_ID_MAX + 1];
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* True when sender is exactly "<role>:<id>". */
static bool stamped(const char *sender, const char *role, const char *id)
{
    size_t rl = strlen(role);
    return sender != NULL && strncmp(sender, role, rl) == 0 && sender[rl] == ':' &&
           strcmp(sender + rl + 1, id) == 0;
}

static void pump(srv *s);

/* ---- link authentication (docs/security.md, docs/protocol.md 8.1) */

static bool link_on(const srv *s)
{
    return s->cfg->link_secret_len > 0;
}

/* The upkeep-auth tag of payload on dev/{device}/{kind} into tag; "" when
 * no link secret is configured. False (and logged) when it cannot be made:
 * the caller then sends nothing, since an untagged message would be dropped
 * by a device with a link key anyway. */
static bool link_tag(const srv *s, const char *device, upk_topic_kind kind, const void *payload,
                     size_t len, char tag[UPK_LINK_TAG_LEN + 1])
{
    tag[0] = '\0';
    if (!link_on(s))
        return true;
    upk_link_key k;
    upk_err err = upk_link_key_derive(s->cfg->link_secret, s->cfg->link_secret_len, device, &k);
    if (err == UPK_OK)
        err = upk_link_tag(&k, device, kind, payload, len, tag, UPK_LINK_TAG_LEN + 1);
    upk_link_key_wipe(&k);
    if (err != UPK_OK) {
        upk_error("serve: cannot tag %s of device=%s err=%s", upk_topic_kind_str(kind), device,
                  upk_err_str(err));
        tag[0] = '\0';
        return false;
    }
    return true;
}

static void desired_fresh(srv *s, const char *device);

/* Whether a state, event or chunk request of device may be used: with a link
 * secret, a present tag must be right (else AUTH_INVALID, always refused);
 * an absent one is refused (AUTH_REQUIRED) once the device has sent a right
 * one, or always with require_device_auth. A refusal is logged with the
 * device and the code and changes nothing. The first right tag of a device
 * is remembered in the store, and its desired is issued afresh (a device
 * that just got its link key may hold a desired it cannot trust). */
static bool device_auth_ok(srv *s, const char *device, upk_topic_kind kind, const upk_mqtt_msg *m)
{
    if (!link_on(s))
        return true;
    const char *tag = m->auth != NULL ? m->auth : "";
    bool authed = false;
    if (upk_store_device_authed(s->store, device, &authed) != UPK_OK) {
        upk_error("serve: refused %s of device=%s err=DB", upk_topic_kind_str(kind), device);
        return false;
    }
    if (tag[0] == '\0') {
        if (authed || s->cfg->require_device_auth) {
            upk_warn("serve: refused %s of device=%s err=AUTH_REQUIRED (untagged; %s)",
                     upk_topic_kind_str(kind), device,
                     authed ? "the device has authenticated before" : "require_device_auth");
            return false;
        }
        return true; /* a device without a link key yet (docs/security.md, migration) */
    }
    upk_link_key k;
    upk_err err = upk_link_key_derive(s->cfg->link_secret, s->cfg->link_secret_len, device, &k);
    if (err == UPK_OK)
        err = upk_link_verify(&k, device, kind, m->payload, m->len, tag);
    upk_link_key_wipe(&k);
    if (err != UPK_OK) {
        upk_warn("serve: refused %s of device=%s err=%s", upk_topic_kind_str(kind), device,
                 upk_err_str(err == UPK_E_AUTH_INVALID ? err : UPK_E_AUTH_INVALID));
        return false;
    }
    if (!authed) {
        if (upk_store_device_set_authed(s->store, device) != UPK_OK) {
            upk_error("serve: refused %s of device=%s err=DB", upk_topic_kind_str(kind), device);
            return false;
        }
        upk_info("serve: device=%s authenticated with its link key; its untagged messages are "
                 "refused from now on",
                 device);
        desired_fresh(s, device);
    }
    return true;
}

/* A publish handed out by pump is done: its window slot is free again. */
static void slot_done(srv *s)
{
    if (s->inflight > 0)
        s->inflight--;
    s->last_done_ms = now_ms();
    pump(s);
}

static void chunk_done(upk_mqtt *c, upk_err err, void *cb_data)
{
    (void)c;
    (void)err; /* a lost reply is asked for again by the agent */
    slot_done(cb_data);
}

static void desired_done(upk_mqtt *c, upk_err err, void *cb_data)
{
    (void)c;
    struct pub_ctx *p = cb_data;
    srv *s = p->s;
    if (err == UPK_OK) {
        if (upk_store_desired_acked(p->s->store, p->device, p->release, p->campaign) != UPK_OK)
            upk_error("serve: could not record desired ack device=%s", p->device);
    } else {
        upk_warn("serve: desired publish failed device=%s release=%s err=%s", p->device, p->release,
                 upk_err_str(err));
        p->s->republish = true;
    }
    free(p);
    slot_done(s);
}

static upk_err desired_payload(srv *s, const char *release, const char *campaign)
{
    if (s->cache_payload != NULL && strcmp(s->cache_release, release) == 0 &&
        strcmp(s->cache_campaign, campaign) == 0)
        return UPK_OK;
    upk_release_row r;
    memset(&r, 0, sizeof(r));
    upk_err err = upk_store_release_get(s->store, release, &r);
    if (err != UPK_OK)
        return err;
    upk_desired_msg m;
    memset(&m, 0, sizeof(m));
    int n = snprintf(m.campaign, sizeof(m.campaign), "%s", campaign);
    n = snprintf(m.key_id, sizeof(m.key_id), "%s", r.key_id);
    (void)n;
    m.manifest = r.manifest;
    m.manifest_len = r.manifest_len;
    memcpy(m.sig, r.sig, r.sig_len);
    m.sig_len = r.sig_len;
    upk_campaign camp;
    if (campaign[0] != '\0' && upk_store_campaign_get(s->store, campaign, &camp) == UPK_OK) {
        m.bake_s = camp.gate.bake_s;
        /* A campaign's id with another release than the campaign's: the
         * previous release put back by a rollback, which the device may
         * install even below its version (docs/protocol.md 5.3). */
        m.rollback = strcmp(camp.release, release) != 0;
    }
    char *out = NULL;
    size_t len = 0;
    err = upk_desired_encode(&m, &out, &len);
    if (err != UPK_OK) {
        upk_release_row_cleanup(&r);
        return err;
    }
    free(s->cache_payload);
    free(s->cache_manifest);
    s->cache_payload = out;
    s->cache_len = len;
    s->cache_manifest = r.manifest; /* taken from r */
    s->cache_msg = m;
    s->cache_msg.manifest = s->cache_manifest;
    memcpy(s->cache_release, release, sizeof(s->cache_release));
    memcpy(s->cache_campaign, campaign, sizeof(s->cache_campaign));
    return UPK_OK;
}

/* The link-authenticated desired of device into *out (caller frees) and its
 * tag: the cached assignment (release "" = a clear) with the device's ctr and
 * fresh_until. A new ctr when fresh and the device can check it (it has
 * authenticated, or require_device_auth), else the last one for the same
 * assignment, so that an agent without a link key, which identifies a
 * desired by the hash of its whole payload, sees the same bytes again. */
static upk_err desired_linked(srv *s, const char *device, const char *release, const char *campaign,
                              bool fresh, uint32_t attempt, char **out, size_t *len,
                              char tag[UPK_LINK_TAG_LEN + 1])
{
    bool authed = false;
    upk_err err = upk_store_device_authed(s->store, device, &authed);
    if (err != UPK_OK)
        return err;
    bool checks = authed || s->cfg->require_device_auth;
    if (release[0] == '\0' && !checks) {
        /* An agent without a link key takes the empty payload as a clear
         * and would refuse {"v":1,"ctr":..} as FIELD_MISSING. */
        *out = NULL;
        *len = 0;
        return UPK_OK;
    }
    char assignment[2 * UPK_ID_MAX + 2];
    int r = snprintf(assignment, sizeof(assignment), "%s/%s", release, campaign);
    (void)r; /* two ids always fit */
    uint64_t ctr = 0;
    if ((err = upk_store_ctr_next(s->store, device, assignment, fresh && checks, now_ms(), &ctr)) !=
        UPK_OK)
        return err;
    upk_desired_msg m;
    if (release[0] == '\0') {
        memset(&m, 0, sizeof(m));
        m.clear = true;
    } else {
        m = s->cache_msg;
    }
    m.ctr = ctr;
    /* From the counter (about the issue time in ms), so that the same ctr
     * always comes with the same fresh_until. */
    m.fresh_until = (int64_t)(ctr / 1000) + 4 * (int64_t)s->cfg->desired_refresh_s;
    if ((err = upk_desired_encode(&m, out, len)) != UPK_OK)
        return err;
    if (attempt > 0 && !m.clear) {
        /* A retry's attempt number (see send_desired), under the tag. */
        cJSON *j = cJSON_ParseWithLength(*out, *len);
        char *with = NULL;
        if (j != NULL && cJSON_AddNumberToObject(j, "attempt", attempt) != NULL)
            with = cJSON_PrintUnformatted(j);
        cJSON_Delete(j);
        if (with != NULL) {
            free(*out);
            *out = with;
            *len = strlen(with);
        }
    }
    if (!link_tag(s, device, UPK_TOPIC_DEV_DESIRED, *out, *len, tag)) {
        free(*out);
        *out = NULL;
        return UPK_E_CRYPTO;
    }
    return UPK_OK;
}

/* Publishes the current desired of device (retained, QoS 1); the store
 * records it as acknowledged on PUBACK. fresh: issue a new ctr (see
 * desired_linked). True when handed to Paho. */
static bool send_desired(srv *s, const char *device, bool fresh)
{
    char release[UPK_ID_MAX + 1], campaign[UPK_ID_MAX + 1], topic[UPK_TOPIC_MAX + 1];
    if (upk_store_device_desired(s->store, device, release, campaign) != UPK_OK ||
        upk_topic_build(topic, sizeof(topic), s->cfg->prefix, UPK_TOPIC_DEV_DESIRED, device) !=
            UPK_OK)
        return false;
    const void *payload = "";
    size_t len = 0;
    char *linked = NULL;
    char tag[UPK_LINK_TAG_LEN + 1] = "";
    if (release[0] != '\0') {
        upk_err err = desired_payload(s, release, campaign);
        if (err != UPK_OK) {
            upk_error("serve: cannot build desired device=%s release=%s err=%s", device, release,
                      upk_err_str(err));
            return false;
        }
        payload = s->cache_payload;
        len = s->cache_len;
    }
    /* A retried device gets its attempt number in the message, so an agent
     * that already answered the identical one takes it again. */
    char *retry = NULL;
    uint32_t attempt = release[0] != '\0' ? upk_desired_attempt(s->store, device, campaign) : 0;
    if (attempt > 0 && !link_on(s)) {
        cJSON *j = cJSON_ParseWithLength(s->cache_payload, s->cache_len);
        if (j != NULL && cJSON_AddNumberToObject(j, "attempt", attempt) != NULL)
            retry = cJSON_PrintUnformatted(j);
        cJSON_Delete(j);
        if (retry != NULL) {
            payload = retry;
            len = strlen(retry);
        }
    }
    if (link_on(s)) {
        upk_err err =
            desired_linked(s, device, release, campaign, fresh, attempt, &linked, &len, tag);
        if (err != UPK_OK) {
            upk_error("serve: cannot build desired device=%s release=%s err=%s", device,
                      release[0] ? release : "(none)", upk_err_str(err));
            return false;
        }
        payload = linked != NULL ? linked : "";
    }
    struct pub_ctx *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        s->republish = true;
        return false;
    }
    p->s = s;
    memcpy(p->device, device, strlen(device) + 1);
    memcpy(p->release, release, sizeof(p->release));
    memcpy(p->campaign, campaign, sizeof(p->campaign));
    upk_err err =
        upk_mqtt_publish_auth(s->mqtt, topic, payload, len, 1, true, tag, desired_done, p);
    free(retry);
    free(linked); /* copied by the client */
    if (err != UPK_OK) {
        free(p);
        s->republish = true;
        return false;
    }
    s->desired_sent++;
    upk_debug("serve: desired device=%s release=%s campaign=%s", device,
              release[0] ? release : "(none)", campaign);
    return true;
}

/* Queues the publication of device's current desired (what the store says
 * when its turn comes; a device already queued is not queued twice). The
 * item's offset is 1 for a fresh one (a new ctr), 0 otherwise. */
static void queue_desired(srv *s, const char *device, bool fresh)
{
    upk_outq_item it;
    memset(&it, 0, sizeof(it));
    size_t dl = strlen(device);
    if (dl > UPK_ID_MAX)
        return;
    it.kind = OQ_DESIRED;
    it.offset = fresh ? 1 : 0;
    memcpy(it.device, device, dl + 1);
    bool dup = false;
    upk_err err = upk_outq_push(s->desiredq, &it, &dup);
    if (err != UPK_OK) {
        upk_warn("serve: desired of device=%s not queued err=%s; retried later", device,
                 upk_err_str(err));
        s->republish = true;
        return;
    }
    pump(s);
}

static void publish_desired(const char *device, void *ud)
{
    queue_desired(ud, device, false);
}

static void publish_desired_fresh(const char *device, void *ud)
{
    queue_desired(ud, device, true);
}

static void desired_fresh(srv *s, const char *device)
{
    if (link_on(s))
        queue_desired(s, device, true);
}

static void republish_all(srv *s)
{
    s->republish = false;
    s->last_republish_ms = now_ms();
    if (!s->started) {
        /* At start every desired goes out afresh (with a new counter), not
         * only those without a PUBACK: a retained desired someone else put
         * on the broker while we were down must not stay in place. */
        s->started = true;
        s->last_refresh_ms = now_ms();
        if (upk_store_desired_all(s->store, publish_desired_fresh, s) != UPK_OK) {
            upk_error("serve: cannot list desired releases");
            s->started = false;
        }
        return;
    }
    if (upk_store_desired_unacked(s->store, publish_desired, s) != UPK_OK)
        upk_error("serve: cannot list unacknowledged desired releases");
}

static void on_connect(upk_mqtt *c, void *ud)
{
    srv *s = ud;
    static const char *const subs[] = {"dev/+/state", "dev/+/online", "dev/+/events",
                                       "dev/+/chunk/req", "ctl/req/+"};
    for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
        char filter[UPK_TOPIC_MAX + 1];
        int r = snprintf(filter, sizeof(filter), "%s/%s", s->cfg->prefix, subs[i]);
        (void)r;
        upk_err err = upk_mqtt_subscribe(c, filter, 1);
        if (err != UPK_OK)
            upk_error("serve: subscribe %s failed: %s", filter, upk_err_str(err));
    }
    upk_info("serve: connected to %s", s->cfg->broker);
    republish_all(s);
    pump(s);
}

static void on_disconnect(upk_mqtt *c, upk_err err, void *ud)
{
    (void)c;
    srv *s = ud;
    if (err == UPK_E_AUTH_FAILED)
        return; /* logged by the client once per backoff step, with the wait */
    upk_warn("serve: broker %s: %s; reconnecting", s->cfg->broker, upk_err_str(err));
}

/* The blob of hex, open and sized in s->blob_*; false when it is not there. */
static bool blob_open(srv *s, const char *hex)
{
    if (s->blob_fd >= 0 && strcmp(s->blob_hex, hex) == 0)
        return true;
    char path[UPK_PATH_MAX];
    if (upk_store_blob_path(s->store, hex, path, sizeof(path)) != UPK_OK)
        return false;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        if (fd >= 0)
            close(fd);
        return false;
    }
    if (s->blob_fd >= 0)
        close(s->blob_fd);
    s->blob_fd = fd;
    s->blob_size = (uint64_t)st.st_size;
    memcpy(s->blob_hex, hex, sizeof(s->blob_hex));
    return true;
}

/* Answers one queued chunk request. True when handed to Paho. Whether the
 * device may fetch is decided now, not when it asked: a device whose desired
 * changed meanwhile gets NOT_FOUND, which its agent drops. */
static bool send_chunk(srv *s, const upk_outq_item *req)
{
    upk_chunk_hdr h;
    memset(&h, 0, sizeof(h));
    char topic[UPK_TOPIC_MAX + 1], hex[UPK_SHA256_HEX_LEN + 1];
    if (upk_topic_build(topic, sizeof(topic), s->cfg->prefix, UPK_TOPIC_DEV_CHUNK_DATA,
                        req->device) != UPK_OK ||
        upk_hex_encode(req->artifact, UPK_SHA256_LEN, hex, sizeof(hex)) != UPK_OK)
        return false;
    memcpy(h.artifact, req->artifact, UPK_SHA256_LEN);
    h.offset = req->offset;
    bool ok = false;
    size_t n = 0;
    if (upk_store_may_fetch(s->store, req->device, hex, &ok) != UPK_OK) {
        h.status = UPK_CHUNK_BUSY;
    } else if (!ok) {
        h.status = UPK_CHUNK_NOT_FOUND;
        upk_warn("serve: chunk refused device=%s artifact=%.16s: not in its desired", req->device,
                 hex);
    } else if (!blob_open(s, hex)) {
        h.status = UPK_CHUNK_NOT_FOUND;
    } else if (req->length == 0 || req->length > UPK_CHUNK_MAX || req->offset >= s->blob_size) {
        h.status = UPK_CHUNK_RANGE;
    } else {
        size_t want = req->length;
        if ((uint64_t)want > s->blob_size - req->offset)
            want = (size_t)(s->blob_size - req->offset);
        while (n < want) {
            ssize_t r = pread(s->blob_fd, s->chunk_buf + UPK_CHUNK_HDR_LEN + n, want - n,
                              (off_t)(req->offset + n));
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                break;
            n += (size_t)r;
        }
        h.status = n == want ? UPK_CHUNK_OK : UPK_CHUNK_BUSY;
    }
    if (h.status != UPK_CHUNK_OK)
        n = 0;
    h.length = (uint32_t)n;
    upk_chunk_hdr_write(&h, s->chunk_buf);
    char tag[UPK_LINK_TAG_LEN + 1];
    if (!link_tag(s, req->device, UPK_TOPIC_DEV_CHUNK_DATA, s->chunk_buf, UPK_CHUNK_HDR_LEN + n,
                  tag))
        return false;
    /* QoS 0: agents subscribe to chunk data at QoS 0 and ask again after a
     * timeout, so QoS 1 would buy nothing but Paho's tracking of every reply. */
    if (upk_mqtt_publish_auth(s->mqtt, topic, s->chunk_buf, UPK_CHUNK_HDR_LEN + n, 0, false, tag,
                              chunk_done, s) != UPK_OK) {
        upk_warn("serve: chunk reply dropped device=%s (broker busy)", req->device);
        return false;
    }
    s->chunks++;
    return true;
}

/* Hands queued publishes to Paho while the window has room, alternating
 * between desired messages and chunk replies when both wait. */
static void pump_upto(srv *s, unsigned window)
{
    if (s->pumping)
        return;
    s->pumping = true;
    while (s->inflight < window && upk_mqtt_connected(s->mqtt)) {
        upk_outq *first = s->turn_desired ? s->desiredq : s->chunkq;
        upk_outq *second = s->turn_desired ? s->chunkq : s->desiredq;
        s->turn_desired = !s->turn_desired;
        upk_outq_item it;
        if (!upk_outq_pop(first, &it) && !upk_outq_pop(second, &it))
            break;
        bool sent =
            it.kind == OQ_CHUNK ? send_chunk(s, &it) : send_desired(s, it.device, it.offset == 1);
        if (sent) {
            if (s->inflight++ == 0)
                s->last_done_ms = now_ms();
        }
    }
    s->pumping = false;
}

static void pump(srv *s)
{
    pump_upto(s, PUB_WINDOW);
}

static void on_nudge(uv_timer_t *t)
{
    srv *s = t->data;
    if (s->inflight >= PUB_WINDOW && s->inflight < PUB_WINDOW_MAX &&
        now_ms() - s->last_done_ms >= NUDGE_MS) {
        unsigned before = s->inflight;
        pump_upto(s, before + 1);
        /* Only a publish handed over restarts the clock: lost completions
         * must still reach the WINDOW_STALL_MS check in on_tick. */
        if (s->inflight > before)
            s->last_done_ms = now_ms();
    }
}

static void handle_chunk(srv *s, const char *device, const upk_mqtt_msg *m)
{
    upk_chunk_req req;
    upk_err derr = upk_chunk_req_decode((const char *)m->payload, m->len, &req);
    if (derr != UPK_OK) {
        upk_warn("serve: malformed chunk request device=%s err=%s", device, upk_err_str(derr));
        return;
    }
    upk_outq_item it;
    memset(&it, 0, sizeof(it));
    size_t dl = strlen(device);
    if (dl > UPK_ID_MAX)
        return;
    it.kind = OQ_CHUNK;
    memcpy(it.device, device, dl + 1);
    memcpy(it.artifact, req.artifact, UPK_SHA256_LEN);
    it.offset = req.offset;
    it.length = req.length;
    bool dup = false;
    upk_err err = upk_outq_push(s->chunkq, &it, &dup);
    if (err != UPK_OK) {
        /* Full: the agent asks again after its timeout. */
        if (s->chunk_dropped++ % 1000 == 0)
            upk_warn("serve: chunk request dropped device=%s err=%s (%llu so far)", device,
                     upk_err_str(err), (unsigned long long)s->chunk_dropped);
        return;
    }
    if (!dup)
        pump(s);
}

static void handle_ctl(srv *s, const char *op, const upk_mqtt_msg *m)
{
    char *out = NULL;
    size_t len = 0;
    char topic[UPK_TOPIC_MAX + 1];
    if (upk_ctl_handle(s->ctl, op, m->sender, m->payload, m->len, now_ms(), &out, &len) != UPK_OK)
        return;
    if (upk_topic_build(topic, sizeof(topic), s->cfg->prefix, UPK_TOPIC_CTL_RESP, op) == UPK_OK &&
        upk_mqtt_publish(s->mqtt, topic, out, len, 1, false, NULL, NULL) != UPK_OK)
        upk_warn("serve: reply to operator %s dropped (broker busy)", op);
    free(out);
}

/* Tells device that its event seq is stored (docs/protocol.md 5.9), so its
 * agent may delete it. QoS 0: a lost ack only makes the event come again,
 * which the store answers as a duplicate and acks anew. */
static void send_ack(srv *s, const char *device, uint64_t seq)
{
    char topic[UPK_TOPIC_MAX + 1];
    char *json = NULL;
    size_t len = 0;
    if (upk_topic_build(topic, sizeof(topic), s->cfg->prefix, UPK_TOPIC_DEV_ACK, device) !=
            UPK_OK ||
        upk_ack_encode(seq, &json, &len) != UPK_OK) {
        upk_error("serve: no ack for device=%s seq=%llu", device, (unsigned long long)seq);
        return;
    }
    char tag[UPK_LINK_TAG_LEN + 1];
    if (!link_tag(s, device, UPK_TOPIC_DEV_ACK, json, len, tag)) {
        free(json);
        return;
    }
    if (upk_mqtt_publish_auth(s->mqtt, topic, json, len, 0, false, tag, NULL, NULL) != UPK_OK)
        upk_debug("serve: ack device=%s seq=%llu not sent (the device will send the event again)",
                  device, (unsigned long long)seq);
    free(json);
}

static void on_message(upk_mqtt *c, const upk_mqtt_msg *m, void *ud)
{
    (void)c;
    srv *s = ud;
    upk_topic t;
    if (upk_topic_parse(m->topic, m->topic_len, s->cfg->prefix, &t) != UPK_OK) {
        upk_debug("serve: ignoring topic %s", m->topic);
        return;
    }
    if (t.kind == UPK_TOPIC_CTL_REQ) {
        handle_ctl(s, t.id, m);
        return;
    }
    /* Device reports count only when the plugin stamped that very device.
     * An offline will may arrive unstamped; "0" cannot harm. */
    bool from_device = stamped(m->sender, "device", t.id);
    if (!from_device && !(t.kind == UPK_TOPIC_DEV_ONLINE && m->sender[0] == '\0' && m->len == 1 &&
                          m->payload[0] == '0')) {
        upk_warn("serve: dropped %s of device=%s from sender=%s err=DENIED",
                 upk_topic_kind_str(t.kind), t.id, m->sender[0] ? m->sender : "(none)");
        return;
    }
    if ((t.kind == UPK_TOPIC_DEV_STATE || t.kind == UPK_TOPIC_DEV_EVENTS ||
         t.kind == UPK_TOPIC_DEV_CHUNK_REQ) &&
        !(t.kind == UPK_TOPIC_DEV_STATE && m->len == 0) && !device_auth_ok(s, t.id, t.kind, m))
        return; /* refused: not stored, not acked, not answered */
    switch (t.kind) {
    case UPK_TOPIC_DEV_STATE: {
        if (m->len == 0)
            return;
        upk_state_msg st;
        upk_err err = upk_state_decode((const char *)m->payload, m->len, &st);
        if (err != UPK_OK || strcmp(st.device, t.id) != 0) {
            upk_warn("serve: bad state device=%s err=%s", t.id,
                     err != UPK_OK ? upk_err_str(err) : "device id differs from topic");
            return;
        }
        if (upk_store_device_state(s->store, &st, now_ms()) != UPK_OK ||
            upk_store_state_outcome(s->store, &st, now_ms()) != UPK_OK)
            upk_error("serve: could not record state device=%s", t.id);
        if (upk_store_device_image(s->store, &st) != UPK_OK)
            upk_error("serve: could not record the image of device=%s", t.id);
        break;
    }
    case UPK_TOPIC_DEV_ONLINE: {
        bool online = m->len == 1 && m->payload[0] == '1';
        if (upk_store_device_online(s->store, t.id, online, now_ms()) != UPK_OK)
            upk_error("serve: could not record online device=%s", t.id);
        /* A device back online hears a fresh desired at once: it learns
         * whether it missed one while away (freshness, docs/security.md). */
        bool authed = false;
        if (online && link_on(s) &&
            (s->cfg->require_device_auth ||
             (upk_store_device_authed(s->store, t.id, &authed) == UPK_OK && authed)))
            desired_fresh(s, t.id);
        break;
    }
    case UPK_TOPIC_DEV_EVENTS: {
        upk_event_msg e;
        upk_err err = upk_event_decode((const char *)m->payload, m->len, &e);
        if (err != UPK_OK) {
            /* Refused and not stored; acked when its seq is readable, so the
             * device does not send it forever and its later events flow. */
            uint64_t seq = 0;
            bool ackable = upk_ack_decode((const char *)m->payload, m->len, &seq) == UPK_OK;
            upk_warn("serve: bad event device=%s err=%s%s", t.id, upk_err_str(err),
                     ackable ? " (refused; acked so the device moves on)" : "");
            if (ackable)
                send_ack(s, t.id, seq);
            return;
        }
        bool dup = false;
        if (upk_store_event_apply(s->store, t.id, &e, now_ms(), &dup) != UPK_OK) {
            upk_error("serve: could not record event device=%s seq=%llu", t.id,
                      (unsigned long long)e.seq);
            return; /* not acked: the device sends it again */
        }
        if (!dup)
            s->events++;
        if (!dup && e.health.present &&
            upk_store_health_record(s->store, t.id, &e, now_ms()) != UPK_OK)
            upk_error("serve: could not record health device=%s seq=%llu", t.id,
                      (unsigned long long)e.seq);
        upk_debug("serve: event device=%s seq=%llu step=%s campaign=%s%s", t.id,
                  (unsigned long long)e.seq, upk_status_str(e.step), e.campaign,
                  dup ? " (duplicate)" : "");
        send_ack(s, t.id, e.seq);
        break;
    }
    case UPK_TOPIC_DEV_CHUNK_REQ:
        handle_chunk(s, t.id, m);
        break;
    default:
        break;
    }
}

static void advance(srv *s, const char *id, int64_t now)
{
    upk_campaign c;
    upk_cdev *devs = NULL;
    size_t n = 0, hn = 0;
    upk_action *acts = NULL;
    upk_gate_dev *health = NULL;
    if (upk_store_campaign_get(s->store, id, &c) != UPK_OK ||
        upk_store_campaign_devices(s->store, id, &devs, &n) != UPK_OK)
        return;
    size_t cap = 2 * n + 1;
    acts = calloc(cap, sizeof(*acts));
    upk_step_result res;
    /* Health is read only when a done stage's bake window is over. */
    uint32_t wait_s = c.soak_s > c.gate.bake_s ? c.soak_s : c.gate.bake_s;
    if (c.state == UPK_CAMP_RUNNING && c.gate.bake_s > 0 && c.stage_done_ms > 0 &&
        now - c.stage_done_ms >= (int64_t)wait_s * 1000 &&
        upk_store_gate_devices(s->store, id, devs, n, &health, &hn) != UPK_OK) {
        upk_error("serve: campaign=%s health not readable", id);
        goto done;
    }
    upk_err serr = acts == NULL
                       ? UPK_E_NOMEM
                       : upk_engine_step_gated(&c, devs, n, health, hn, now, acts, cap, &res);
    if (serr != UPK_OK) {
        upk_error("serve: campaign=%s step failed err=%s", id, upk_err_str(serr));
        goto done;
    }
    /* A continuous campaign stays open after its last stage. */
    upk_continuous_hold(s->store, &c, &res);
    if (res.verdict == UPK_VERDICT_NONE && res.action_count == 0 &&
        memcmp(&res.next, &c, sizeof(c)) == 0)
        goto done;
    if (upk_store_campaign_apply(s->store, &res, devs, acts, now, publish_desired, s) != UPK_OK) {
        upk_error("serve: campaign=%s step not applied", id);
        goto done;
    }
    switch (res.verdict) {
    case UPK_VERDICT_ADVANCE:
        upk_info("serve: campaign=%s stage %u started", id, res.next.stage + 1);
        break;
    case UPK_VERDICT_SOAKING:
        upk_info("serve: campaign=%s stage %u done; soaking %us", id, res.next.stage + 1,
                 res.next.soak_s);
        break;
    case UPK_VERDICT_COMPLETE:
        upk_info("serve: campaign=%s completed", id);
        break;
    case UPK_VERDICT_HALT:
        upk_warn("serve: campaign=%s halted: %s", id, res.next.reason);
        break;
    case UPK_VERDICT_ROLLBACK:
        upk_warn("serve: campaign=%s rolling back: %s", id, res.next.reason);
        break;
    default:
        break;
    }
done:
    free(health);
    free(acts);
    free(devs);
}

static void on_tick(uv_timer_t *t)
{
    srv *s = t->data;
    int64_t now = now_ms();
    char(*ids)[UPK_ID_MAX + 1] = calloc(RUNNING_MAX, sizeof(*ids));
    size_t n = 0;
    if (ids != NULL && upk_store_campaigns_running(s->store, ids, RUNNING_MAX, &n) == UPK_OK) {
        for (size_t i = 0; i < n; i++) {
            size_t added = 0;
            if (upk_continuous_tick(s->store, ids[i], now, publish_desired, s, &added) != UPK_OK)
                upk_error("serve: campaign=%s continuous offers failed", ids[i]);
            advance(s, ids[i], now);
        }
    }
    free(ids);
    prune(s, now);
    /* Rollbacks end when the devices report them (rollback.h). */
    if (upk_rollback_tick(s->store, now, NULL) != UPK_OK)
        upk_error("serve: rollback progress not recorded; retried next tick");
    upk_ctl_expire(s->ctl, now);
    if (s->inflight > 0 && now - s->last_done_ms >= WINDOW_STALL_MS) {
        upk_warn("serve: no publish completed in %d ms; releasing %u window slots", WINDOW_STALL_MS,
                 s->inflight);
        s->inflight = 0;
    }
    pump(s);
    if (s->republish && upk_mqtt_connected(s->mqtt) &&
        now - s->last_republish_ms >= REPUBLISH_EVERY_MS)
        republish_all(s);
    /* Every desired_refresh_s every desired goes out again with a new ctr and
     * fresh_until, so a device notices when it stops hearing from us. */
    if (link_on(s) && s->started && upk_mqtt_connected(s->mqtt) &&
        now - s->last_refresh_ms >= (int64_t)s->cfg->desired_refresh_s * 1000) {
        s->last_refresh_ms = now;
        upk_info("serve: refreshing every desired (desired_refresh_s=%u)",
                 s->cfg->desired_refresh_s);
        if (upk_store_desired_all(s->store, publish_desired_fresh, s) != UPK_OK)
            upk_error("serve: cannot list desired releases");
    }
}

static void on_closed(uv_handle_t *h)
{
    (void)h;
}

static void mqtt_closed(void *ud)
{
    (void)ud;
}

static void on_signal(uv_signal_t *sig, int signum)
{
    srv *s = sig->data;
    if (s->stopping)
        return;
    s->stopping = true;
    upk_info("serve: signal %d; stopping", signum);
    uv_timer_stop(&s->tick);
    uv_close((uv_handle_t *)&s->tick, on_closed);
    uv_timer_stop(&s->nudge);
    uv_close((uv_handle_t *)&s->nudge, on_closed);
    uv_close((uv_handle_t *)&s->sigint, on_closed);
    uv_close((uv_handle_t *)&s->sigterm, on_closed);
    upk_mqtt_close(s->mqtt, mqtt_closed, s);
    s->mqtt = NULL;
}

upk_err upk_serve_run(const upk_serve_config *cfg)
{
    srv *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return UPK_E_NOMEM;
    s->cfg = cfg;
    upk_err err = UPK_OK;
    s->blob_fd = -1;
    s->chunk_buf = malloc(UPK_CHUNK_HDR_LEN + UPK_CHUNK_MAX);
    if (s->chunk_buf == NULL || upk_outq_new(CHUNKQ_MAX, &s->chunkq) != UPK_OK ||
        upk_outq_new(DESIREDQ_MAX, &s->desiredq) != UPK_OK || uv_loop_init(&s->loop) != 0) {
        upk_outq_free(s->chunkq);
        upk_outq_free(s->desiredq);
        free(s->chunk_buf);
        free(s);
        return UPK_E_NOMEM;
    }
    if ((err = upk_store_open(cfg->data_dir, &s->store)) != UPK_OK) {
        upk_error("serve: cannot open the store in %s: %s", cfg->data_dir, upk_err_str(err));
        goto out_loop;
    }
    if ((err = upk_ctl_new(s->store, cfg, publish_desired, s, &s->ctl)) != UPK_OK)
        goto out_store;
    upk_mqtt_opts o;
    memset(&o, 0, sizeof(o));
    o.url = cfg->broker;
    o.client_id = cfg->client_id;
    o.username = cfg->username[0] ? cfg->username : NULL;
    o.password = cfg->password[0] ? cfg->password : NULL;
    o.ca_file = cfg->ca_file[0] ? cfg->ca_file : NULL;
    o.cert_file = cfg->cert_file[0] ? cfg->cert_file : NULL;
    o.key_file = cfg->key_file[0] ? cfg->key_file : NULL;
    /* A persistent session: events published while we are down wait in the
     * broker (QoS 1) and are applied, deduplicated, after a restart. */
    o.clean_start = false;
    o.session_expiry_s = 7 * 24 * 3600;
    o.max_inflight = 512;
    o.max_buffered = 65535;
    o.reconnect_min_ms = 500;
    o.reconnect_max_ms = 10000;
    o.on_connect = on_connect;
    o.on_disconnect = on_disconnect;
    o.on_message = on_message;
    o.userdata = s;
    if ((err = upk_mqtt_new(&s->loop, &o, &s->mqtt)) != UPK_OK)
        goto out_ctl;
    if ((err = upk_mqtt_start(s->mqtt)) != UPK_OK)
        goto out_mqtt;
    uv_timer_init(&s->loop, &s->tick);
    s->tick.data = s;
    uv_timer_start(&s->tick, on_tick, cfg->tick_ms, cfg->tick_ms);
    uv_timer_init(&s->loop, &s->nudge);
    s->nudge.data = s;
    uv_timer_start(&s->nudge, on_nudge, NUDGE_MS, NUDGE_MS);
    uv_signal_init(&s->loop, &s->sigint);
    uv_signal_init(&s->loop, &s->sigterm);
    s->sigint.data = s->sigterm.data = s;
    uv_signal_start(&s->sigint, on_signal, SIGINT);
    uv_signal_start(&s->sigterm, on_signal, SIGTERM);
    upk_info("serve: data_dir=%s broker=%s prefix=%s tick=%ums", cfg->data_dir, cfg->broker,
             cfg->prefix, cfg->tick_ms);
    uv_run(&s->loop, UV_RUN_DEFAULT);
    upk_info("serve: stopped (events=%llu chunks=%llu desired=%llu chunk_dups=%llu "
             "chunk_dropped=%llu)",
             (unsigned long long)s->events, (unsigned long long)s->chunks,
             (unsigned long long)s->desired_sent, (unsigned long long)upk_outq_dups(s->chunkq),
             (unsigned long long)s->chunk_dropped);
    goto out_ctl;
out_mqtt:
    upk_mqtt_close(s->mqtt, NULL, NULL);
    uv_run(&s->loop, UV_RUN_DEFAULT);
out_ctl:
    upk_ctl_free(s->ctl);
out_store:
    upk_store_close(s->store);
out_loop:
    if (uv_loop_close(&s->loop) != 0)
        upk_warn("serve: loop closed with handles open");
    if (s->blob_fd >= 0)
        close(s->blob_fd);
    upk_outq_free(s->chunkq);
    upk_outq_free(s->desiredq);
    free(s->cache_payload);
    free(s->cache_manifest);
    free(s->chunk_buf);
    free(s);
    return err;
}
