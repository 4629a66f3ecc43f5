/* The chunk phase of a release upload from the CLI (upload.h): a paced window
 * of release.upload.chunk requests, acknowledged by the controller, sent
 * again when the broker refuses one or no acknowledgement comes. */
#include "upload.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "ctl.h"
#include "upkeep/hash.h"
#include "upkeep/msg.h"

#define SLOTS 512 /* twice UPK_CLIENT_SENDS_MAX: a slot is reused long after its PUBACK */

/* What one published chunk was, for the broker's verdict on it. */
struct slot {
    uint32_t gen;
    uint64_t offset;
};

struct up {
    const upk_upload_opts *o;
    char nonce[12];
    uint32_t gen;       /* bumped on every rewind; older chunks' refusals are ignored */
    uint64_t acked;     /* the controller's received count */
    uint64_t next;      /* next offset to send */
    uint64_t hi;        /* highest offset sent so far */
    size_t chunk;       /* current chunk size */
    double msgs_per_s;  /* current pace (0 = unlimited) */
    double bytes_per_s; /* current pace (0 = unlimited) */
    double next_send;   /* ms: earliest time of the next chunk */
    double pause_until; /* ms: after a refusal */
    double last_progress, last_rewind, last_throttle, last_connected;
    uint64_t denied_at; /* offset of the last refusal, and how often in a row */
    unsigned denied_row;
    upk_err fatal;
    char fatal_msg[UPK_ERRMSG_MAX + 1];
    upk_upload_stats st;
    struct slot slots[SLOTS];
};

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

/* Sending again from offset: chunks sent before are now of an older gen. */
static void rewind_to(struct up *u, uint64_t offset, double now)
{
    u->gen++;
    if (offset < u->next)
        u->next = offset;
    if (u->next < u->acked)
        u->next = u->acked;
    u->last_rewind = now;
}

/* Parses "<nonce>-<gen>-<offset>"; false for another run's or command's id. */
static bool parse_id(const struct up *u, const char *id, uint32_t *gen, uint64_t *offset)
{
    size_t nl = strlen(u->nonce);
    if (strncmp(id, u->nonce, nl) != 0 || id[nl] != '-')
        return false;
    char *end = NULL;
    errno = 0;
    unsigned long g = strtoul(id + nl + 1, &end, 10);
    if (errno != 0 || end == NULL || *end != '-')
        return false;
    const char *o = end + 1;
    unsigned long long off = strtoull(o, &end, 10);
    if (errno != 0 || end == o || *end != '\0')
        return false;
    *gen = (uint32_t)g;
    *offset = off;
    return true;
}

static void on_reply(const upk_ctl_resp *r, void *ud)
{
    struct up *u = ud;
    uint32_t gen;
    uint64_t offset;
    if (!parse_id(u, r->id, &gen, &offset))
        return;
    double now = now_ms();
    if (r->error == UPK_OK) {
        const cJSON *rv = cJSON_GetObjectItemCaseSensitive(r->data, "received");
        if (!cJSON_IsNumber(rv) || rv->valuedouble < 0 || rv->valuedouble > (double)u->o->size)
            return;
        uint64_t received = (uint64_t)rv->valuedouble;
        if (received > u->acked) {
            u->acked = received;
            u->last_progress = now;
            u->denied_row = 0;
            if (u->o->on_progress != NULL)
                u->o->on_progress(u->acked, u->o->size, u->o->ud);
        }
        if (u->next < u->acked)
            u->next = u->acked;
        return;
    }
    if (r->error == UPK_E_FIELD_RANGE && strncmp(r->message, "offset must be", 14) == 0) {
        /* A chunk before this one never reached the controller. Replies come
         * in order, so acked is exactly what it has: go on from there (once
         * per loss: later chunks of the same gen say the same). */
        if (gen == u->gen && offset > u->acked)
            rewind_to(u, u->acked, now);
        return;
    }
    if (u->fatal == UPK_OK) {
        u->fatal = r->error;
        int w = snprintf(u->fatal_msg, sizeof(u->fatal_msg), "%s", r->message);
        (void)w;
    }
}

/* The size on the wire of a chunk request of n bytes (base64 plus the JSON
 * around it), for pacing by bytes. */
static double wire_bytes(size_t n)
{
    return (double)((n + 2) / 3 * 4) + 200.0;
}

static void on_sent(upk_err err, void *cb_data, void *ud)
{
    struct up *u = ud;
    const struct slot *s = cb_data;
    if (err == UPK_OK || s->gen != u->gen)
        return;
    double now = now_ms();
    if (err != UPK_E_DENIED) {
        rewind_to(u, s->offset, now); /* lost with the connection: send again */
        return;
    }
    /* The broker dropped it: its rate limit for operators (or its payload
     * limit) is below what we sent. Slow down, wait for its bucket to
     * fill a little, and send again from the refused chunk. */
    u->st.throttled++;
    u->last_throttle = now;
    u->denied_row = s->offset == u->denied_at ? u->denied_row + 1 : 1;
    u->denied_at = s->offset;
    if (u->denied_row >= 3 && u->chunk / 2 >= UPK_UPLOAD_CHUNK_MIN)
        u->chunk /= 2; /* perhaps max_payload_bytes, not the rate */
    /* Lower the byte pace actually used, whichever limit set it; the
     * message pace stays (a lower byte pace lowers it for full chunks). */
    double eff = u->bytes_per_s;
    if (u->msgs_per_s > 0) {
        double m = u->msgs_per_s * wire_bytes(u->chunk);
        if (eff <= 0 || m < eff)
            eff = m;
    }
    if (eff <= 0) {
        double elapsed = now - u->last_rewind;
        eff = elapsed > 0 ? (double)u->hi * 1000.0 / elapsed : 65536;
    }
    eff *= UPK_UPLOAD_BACKOFF;
    u->bytes_per_s = eff < 1024 ? 1024 : eff;
    u->pause_until = now + UPK_UPLOAD_THROTTLE_PAUSE;
    rewind_to(u, s->offset, now);
    if (u->o->on_throttled != NULL)
        u->o->on_throttled(s->offset, u->bytes_per_s, u->msgs_per_s, u->o->ud);
}

static upk_err send_chunk(upk_client *c, struct up *u, uint8_t *buf, char *b64, size_t b64cap,
                          double now)
{
    uint64_t left = u->o->size - u->next;
    size_t n = left < u->chunk ? (size_t)left : u->chunk;
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(u->o->fd, buf + got, n - got, (off_t)(u->next + got));
        if (r < 0 && errno == EINTR)
            continue;
        if (r == 0)
            errno = ENODATA; /* shorter than the manifest says */
        if (r <= 0)
            return UPK_E_IO;
        got += (size_t)r;
    }
    size_t blen = 0;
    upk_err err = upk_base64_encode(buf, n, b64, b64cap, &blen);
    if (err != UPK_OK)
        return err;
    cJSON *a = cJSON_CreateObject();
    if (a == NULL || cJSON_AddStringToObject(a, "upload", u->o->upload_id) == NULL ||
        cJSON_AddNumberToObject(a, "offset", (double)u->next) == NULL ||
        cJSON_AddStringToObject(a, "data", b64) == NULL) {
        cJSON_Delete(a);
        return UPK_E_NOMEM;
    }
    char id[UPK_CORR_MAX + 1];
    int w = snprintf(id, sizeof(id), "%s-%u-%llu", u->nonce, u->gen, (unsigned long long)u->next);
    (void)w;
    struct slot *s = &u->slots[u->st.chunks % SLOTS];
    s->gen = u->gen;
    s->offset = u->next;
    err = upk_client_send(c, "release.upload.chunk", a, id, s);
    cJSON_Delete(a);
    if (err != UPK_OK)
        return err;
    if (u->next == u->acked)
        u->last_progress = now; /* nothing was outstanding: the clock starts now */
    if (u->next < u->hi)
        u->st.resent++;
    u->st.chunks++;
    u->next += n;
    if (u->next > u->hi)
        u->hi = u->next;
    /* The pace: the later of what the message and the byte rate allow. */
    double gap = 0;
    if (u->msgs_per_s > 0)
        gap = 1000.0 / (u->msgs_per_s * UPK_UPLOAD_PACE);
    if (u->bytes_per_s > 0) {
        double g = wire_bytes(n) * 1000.0 / (u->bytes_per_s * UPK_UPLOAD_PACE);
        if (g > gap)
            gap = g;
    }
    u->next_send = (u->next_send > now - gap ? u->next_send : now) + gap;
    return UPK_OK;
}

upk_err upk_upload_send(upk_client *c, const upk_upload_opts *o, upk_upload_stats *stats, char *why,
                        size_t whycap)
{
    int w;
    if (o->chunk == 0 || o->chunk > UPK_UPLOAD_CHUNK_MAX || o->window == 0 ||
        o->window > UPK_UPLOAD_WINDOW_MAX || o->offset > o->size || o->resend_ms == 0 ||
        o->timeout_ms == 0) {
        w = snprintf(why, whycap, "bad upload options");
        return UPK_E_INVALID_ARG;
    }
    struct up *u = calloc(1, sizeof(*u));
    uint8_t *buf = malloc(UPK_UPLOAD_CHUNK_MAX);
    size_t b64cap = UPK_UPLOAD_CHUNK_MAX / 3 * 4 + 8;
    char *b64 = malloc(b64cap);
    upk_err err = UPK_E_NOMEM;
    if (u == NULL || buf == NULL || b64 == NULL) {
        w = snprintf(why, whycap, "out of memory");
        goto out;
    }
    u->o = o;
    u->acked = u->next = o->offset;
    u->chunk = o->chunk;
    u->msgs_per_s = o->msgs_per_s;
    u->bytes_per_s = o->bytes_per_s;
    u->fatal = UPK_OK;
    double now = now_ms();
    u->last_progress = u->last_rewind = u->next_send = u->last_connected = now;
    u->last_throttle = -1;
    uint8_t rnd[4];
    upk_sha256 h;
    upk_sha256_init(&h);
    upk_sha256_update(&h, &now, sizeof(now));
    pid_t pid = getpid();
    upk_sha256_update(&h, &pid, sizeof(pid));
    uint8_t dig[UPK_SHA256_LEN];
    upk_sha256_final(&h, dig);
    upk_sha256_cleanup(&h);
    memcpy(rnd, dig, sizeof(rnd));
    w = snprintf(u->nonce, sizeof(u->nonce), "u%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2], rnd[3]);
    upk_client_on_reply(c, on_reply, on_sent, u);
    err = UPK_OK;
    while (u->acked < o->size) {
        now = now_ms();
        if (u->fatal != UPK_OK) {
            err = u->fatal;
            w = snprintf(why, whycap, "%s", u->fatal_msg);
            break;
        }
        bool outstanding = u->next > u->acked;
        if (upk_client_connected(c))
            u->last_connected = now;
        else if (now - u->last_connected >= o->timeout_ms) {
            err = UPK_E_CONN;
            w = snprintf(why, whycap,
                         "lost the broker at byte %llu and could not get back within %us; run "
                         "the same import again to resume",
                         (unsigned long long)u->acked, o->timeout_ms / 1000);
            break;
        }
        if (outstanding && now - u->last_progress >= o->timeout_ms) {
            if (u->last_throttle >= u->last_progress) {
                err = UPK_E_RATE_LIMITED;
                w = snprintf(why, whycap,
                             "throttled by the broker's rate limit: it kept refusing chunks at "
                             "byte %llu for %us; set --bytes-per-second and --messages-per-second "
                             "to the broker's rate_limits.operator (docs/broker-plugin.md)",
                             (unsigned long long)u->acked, o->timeout_ms / 1000);
            } else {
                err = upk_client_connected(c) ? UPK_E_TIMEOUT : UPK_E_CONN;
                if (err == UPK_E_CONN)
                    w = snprintf(why, whycap,
                                 "lost the broker at byte %llu and could not get back within "
                                 "%us; run the same import again to resume",
                                 (unsigned long long)u->acked, o->timeout_ms / 1000);
                else
                    w = snprintf(why, whycap,
                                 "no reply from the controller within %us at byte %llu: is "
                                 "`upkeep serve` running? Run the same import again to resume",
                                 o->timeout_ms / 1000, (unsigned long long)u->acked);
            }
            break;
        }
        double since =
            now - (u->last_progress > u->last_rewind ? u->last_progress : u->last_rewind);
        if (outstanding && since >= o->resend_ms && now >= u->pause_until)
            rewind_to(u, u->acked, now); /* a chunk or its reply was lost */
        double wait = 1000;
        bool room = u->next < o->size && u->next - u->acked < (uint64_t)o->window * u->chunk;
        if (room && upk_client_connected(c)) {
            double at = u->next_send > u->pause_until ? u->next_send : u->pause_until;
            if (now >= at) {
                err = send_chunk(c, u, buf, b64, b64cap, now);
                if (err == UPK_E_IO) {
                    w = snprintf(why, whycap, "cannot read the artifact at byte %llu: %s",
                                 (unsigned long long)u->next, strerror(errno));
                    break;
                }
                if (err != UPK_OK && err != UPK_E_BUSY && err != UPK_E_CONN) {
                    w = snprintf(why, whycap, "cannot send a chunk (%s)", upk_err_str(err));
                    break;
                }
                /* Busy or reconnecting: let the client work a little. */
                wait = err == UPK_OK ? 0 : 10;
                err = UPK_OK;
            } else {
                wait = at - now;
            }
        }
        if (wait > 0)
            upk_client_poll(c, (unsigned)(wait < 1 ? 1 : wait > 1000 ? 1000 : wait));
        else
            upk_client_poll(c, 0);
    }
    (void)w;
    upk_client_on_reply(c, NULL, NULL, NULL);
    if (stats != NULL) {
        *stats = u->st;
        stats->done = u->acked;
    }
out:
    free(b64);
    free(buf);
    free(u);
    return err;
}
