/* Controller stand-in for the agent's integration tests (see standin.h). */
#include "standin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "upkeep/topic.h"

static void on_connect(upk_mqtt *c, void *ud)
{
    standin *s = ud;
    s->connected = true;
    if (upk_mqtt_subscribe(c, s->t_req, 0) != UPK_OK ||
        upk_mqtt_subscribe(c, s->t_events, 1) != UPK_OK ||
        upk_mqtt_subscribe(c, s->t_state, 1) != UPK_OK ||
        upk_mqtt_subscribe(c, s->t_online, 1) != UPK_OK)
        fprintf(stderr, "standin: subscribe failed\n");
}

static void on_disconnect(upk_mqtt *c, upk_err err, void *ud)
{
    (void)c;
    (void)err;
    standin *s = ud;
    s->connected = false;
}

/* Publishes on the device topic of kind, tagged under k when not NULL. */
static upk_err pub(standin *s, upk_topic_kind kind, const char *topic, const void *payload,
                   size_t len, int qos, bool retain, const upk_link_key *k)
{
    char tag[UPK_LINK_TAG_LEN + 1] = "";
    if (k != NULL && upk_link_tag(k, s->device, kind, payload, len, tag, sizeof(tag)) != UPK_OK)
        return UPK_E_INTERNAL;
    return upk_mqtt_publish_auth(s->mqtt, topic, payload, len, qos, retain, tag, NULL, NULL);
}

static const upk_link_key *own_key(const standin *s)
{
    return s->has_key ? &s->key : NULL;
}

/* With has_key, counts device messages whose tag does not verify. */
static void check_tag(standin *s, upk_topic_kind kind, const upk_mqtt_msg *m)
{
    if (s->has_key &&
        upk_link_verify(&s->key, s->device, kind, m->payload, m->len, m->auth) != UPK_OK)
        s->bad_tags++;
}

static void serve(standin *s, const upk_chunk_req *r)
{
    s->req_count++;
    if (!s->saw_req) {
        s->saw_req = true;
        s->first_req_off = r->offset;
    }
    if (s->stall)
        return;
    if (s->drop_every != 0 && s->req_count % s->drop_every == 0)
        return;
    upk_chunk_hdr h;
    memset(&h, 0, sizeof(h));
    memcpy(h.artifact, r->artifact, UPK_SHA256_LEN);
    h.offset = r->offset;
    if (s->art == NULL || memcmp(r->artifact, s->art_sha, UPK_SHA256_LEN) != 0) {
        h.status = UPK_CHUNK_NOT_FOUND;
    } else if (r->offset >= s->art_len) {
        h.status = UPK_CHUNK_RANGE;
    } else {
        h.status = UPK_CHUNK_OK;
        uint64_t left = s->art_len - r->offset;
        h.length = left < r->length ? (uint32_t)left : r->length;
    }
    size_t total = UPK_CHUNK_HDR_LEN + h.length;
    uint8_t *buf = malloc(total);
    if (buf == NULL)
        return;
    upk_chunk_hdr_write(&h, buf);
    if (h.length > 0) {
        memcpy(buf + UPK_CHUNK_HDR_LEN, s->art + r->offset, h.length);
        if (s->corrupt && s->corrupt_off == r->offset)
            buf[UPK_CHUNK_HDR_LEN] ^= 0x5a;
        if (r->offset + h.length > s->max_served_end)
            s->max_served_end = r->offset + h.length;
    }
    if (pub(s, UPK_TOPIC_DEV_CHUNK_DATA, s->t_data, buf, total, 0, false, own_key(s)) != UPK_OK)
        fprintf(stderr, "standin: chunk publish failed\n");
    free(buf);
}

/* As the controller does once an event is stored (protocol.md 5.9). */
static void ack(standin *s, uint64_t seq)
{
    char *json = NULL;
    size_t len = 0;
    if (upk_ack_encode(seq, &json, &len) != UPK_OK ||
        pub(s, UPK_TOPIC_DEV_ACK, s->t_ack, json, len, 0, false, own_key(s)) != UPK_OK)
        fprintf(stderr, "standin: ack of seq %llu not sent\n", (unsigned long long)seq);
    else
        s->acks_sent++;
    free(json);
}

static void on_message(upk_mqtt *c, const upk_mqtt_msg *m, void *ud)
{
    (void)c;
    standin *s = ud;
    if (strcmp(m->topic, s->t_req) == 0) {
        check_tag(s, UPK_TOPIC_DEV_CHUNK_REQ, m);
        upk_chunk_req r;
        if (upk_chunk_req_decode((const char *)m->payload, m->len, &r) == UPK_OK)
            serve(s, &r);
    } else if (strcmp(m->topic, s->t_events) == 0) {
        check_tag(s, UPK_TOPIC_DEV_EVENTS, m);
        upk_event_msg ev;
        if (upk_event_decode((const char *)m->payload, m->len, &ev) != UPK_OK) {
            fprintf(stderr, "standin: undecodable event\n");
            return;
        }
        bool dup = false;
        for (size_t i = 0; i < s->event_count && !dup; i++)
            dup = s->events[i].seq == ev.seq;
        if (dup)
            s->dup_events++;
        else if (s->event_count < STANDIN_EVENTS_MAX)
            s->events[s->event_count++] = ev;
        if (!s->hold_acks)
            ack(s, ev.seq);
    } else if (strcmp(m->topic, s->t_state) == 0) {
        if (m->len > 0)
            check_tag(s, UPK_TOPIC_DEV_STATE, m);
        if (m->len > 0 && upk_state_decode((const char *)m->payload, m->len, &s->state) == UPK_OK)
            s->have_state = true;
    } else if (strcmp(m->topic, s->t_online) == 0) {
        s->online = m->len > 0 ? (char)m->payload[0] : '?';
    }
}

int standin_init(standin *s, uv_loop_t *loop, const char *url, const char *device)
{
    memset(s, 0, sizeof(*s));
    s->loop = loop;
    (void)snprintf(s->device, sizeof(s->device), "%s", device);
    const char *p = UPK_TOPIC_PREFIX_DEFAULT;
    if (upk_topic_build(s->t_desired, sizeof(s->t_desired), p, UPK_TOPIC_DEV_DESIRED, device) ||
        upk_topic_build(s->t_data, sizeof(s->t_data), p, UPK_TOPIC_DEV_CHUNK_DATA, device) ||
        upk_topic_build(s->t_events, sizeof(s->t_events), p, UPK_TOPIC_DEV_EVENTS, device) ||
        upk_topic_build(s->t_state, sizeof(s->t_state), p, UPK_TOPIC_DEV_STATE, device) ||
        upk_topic_build(s->t_online, sizeof(s->t_online), p, UPK_TOPIC_DEV_ONLINE, device) ||
        upk_topic_build(s->t_req, sizeof(s->t_req), p, UPK_TOPIC_DEV_CHUNK_REQ, device) ||
        upk_topic_build(s->t_ack, sizeof(s->t_ack), p, UPK_TOPIC_DEV_ACK, device))
        return -1;
    char id[UPK_ID_MAX + 16];
    (void)snprintf(id, sizeof(id), "standin-%s", device);
    upk_mqtt_opts o;
    memset(&o, 0, sizeof(o));
    o.url = url;
    o.client_id = id;
    /* A kept session: events the agent sends while the stand-in is away
     * (e.g. across a broker restart with persistence) are queued for it. */
    o.clean_start = false;
    o.session_expiry_s = 3600;
    o.reconnect_min_ms = 100;
    o.reconnect_max_ms = 500;
    o.max_inflight = 64;
    o.max_buffered = 4096;
    o.on_connect = on_connect;
    o.on_disconnect = on_disconnect;
    o.on_message = on_message;
    o.userdata = s;
    if (upk_mqtt_new(loop, &o, &s->mqtt) != UPK_OK)
        return -1;
    return upk_mqtt_start(s->mqtt) == UPK_OK ? 0 : -1;
}

void standin_set_artifact(standin *s, const void *data, size_t len)
{
    free(s->art);
    s->art = malloc(len > 0 ? len : 1);
    if (s->art == NULL) {
        s->art_len = 0;
        return;
    }
    memcpy(s->art, data, len);
    s->art_len = len;
    upk_sha256_buf(data, len, s->art_sha);
}

int standin_publish_desired(standin *s, const upk_manifest *m, const char *campaign,
                            const upk_key *key, bool break_sig)
{
    char *out = NULL;
    size_t outlen = 0;
    if (standin_desired_payload(s, m, campaign, key, break_sig, &out, &outlen) != 0)
        return -1;
    upk_err err = pub(s, UPK_TOPIC_DEV_DESIRED, s->t_desired, out, outlen, 1, true, own_key(s));
    free(out);
    return err == UPK_OK ? 0 : -1;
}

int standin_publish_raw(standin *s, upk_topic_kind kind, const void *payload, size_t len,
                        bool retain, const upk_link_key *tag_key)
{
    char topic[UPK_TOPIC_MAX + 1];
    if (upk_topic_build(topic, sizeof(topic), UPK_TOPIC_PREFIX_DEFAULT, kind, s->device) != UPK_OK)
        return -1;
    return pub(s, kind, topic, payload, len, 1, retain, tag_key) == UPK_OK ? 0 : -1;
}

int standin_desired_payload(standin *s, const upk_manifest *m, const char *campaign,
                            const upk_key *key, bool break_sig, char **outp, size_t *outlenp)
{
    char *json = NULL;
    size_t len = 0;
    if (upk_manifest_encode(m, &json, &len) != UPK_OK)
        return -1;
    upk_desired_msg d;
    memset(&d, 0, sizeof(d));
    (void)snprintf(d.campaign, sizeof(d.campaign), "%s", campaign);
    (void)snprintf(d.key_id, sizeof(d.key_id), "%s", upk_key_id(key));
    d.manifest = json;
    d.manifest_len = len;
    d.bake_s = s->bake_s;
    if (s->has_key) {
        d.ctr = ++s->ctr;
        d.fresh_until = s->fresh_until;
        d.rollback = s->rollback;
    }
    if (upk_manifest_sign(key, json, len, d.sig, &d.sig_len) != UPK_OK) {
        free(json);
        return -1;
    }
    if (break_sig)
        d.sig[d.sig_len / 2] ^= 0x01;
    char *out = NULL;
    size_t outlen = 0;
    upk_err err = upk_desired_encode(&d, &out, &outlen);
    free(json);
    if (err != UPK_OK)
        return -1;
    *outp = out;
    *outlenp = outlen;
    return 0;
}

int standin_clear_desired(standin *s)
{
    if (!s->has_key)
        return upk_mqtt_publish(s->mqtt, s->t_desired, "", 0, 1, true, NULL, NULL) == UPK_OK ? 0
                                                                                             : -1;
    /* With link keys a clear is a tagged desired without an assignment. */
    upk_desired_msg d;
    memset(&d, 0, sizeof(d));
    d.clear = true;
    d.ctr = ++s->ctr;
    d.fresh_until = s->fresh_until;
    char *out = NULL;
    size_t len = 0;
    if (upk_desired_encode(&d, &out, &len) != UPK_OK)
        return -1;
    upk_err err = pub(s, UPK_TOPIC_DEV_DESIRED, s->t_desired, out, len, 1, true, &s->key);
    free(out);
    return err == UPK_OK ? 0 : -1;
}

const upk_event_msg *standin_last_event(const standin *s)
{
    return s->event_count > 0 ? &s->events[s->event_count - 1] : NULL;
}

bool standin_saw(const standin *s, upk_status step, upk_err err)
{
    for (size_t i = 0; i < s->event_count; i++)
        if (s->events[i].step == step && s->events[i].error == err)
            return true;
    return false;
}

static void closed_cb(void *ud)
{
    *(bool *)ud = true;
}

void standin_close(standin *s)
{
    bool closed = false;
    upk_mqtt_close(s->mqtt, closed_cb, &closed);
    for (int i = 0; i < 1000 && !closed; i++)
        (void)uv_run(s->loop, UV_RUN_ONCE);
    free(s->art);
    s->art = NULL;
}
