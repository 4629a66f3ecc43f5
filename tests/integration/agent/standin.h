/* A stand-in for the upkeep controller in agent tests: signs manifests with
 * a test key, publishes the retained desired message, serves chunk requests
 * with the binary chunk header, and records the events and state the agent
 * reports, acknowledging each event as the controller does. Faults on
 * demand: stall, drop, corrupt a chunk, serve a shorter artifact, hold acks. Runs on the test's
 * libuv loop (upk_mqtt); loop thread only. */
#ifndef UPK_AGENT_STANDIN_H
#define UPK_AGENT_STANDIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "upkeep/key.h"
#include "upkeep/linkauth.h"
#include "upkeep/manifest.h"
#include "upkeep/msg.h"
#include "upkeep/mqtt.h"
#include "upkeep/topic.h"

#define STANDIN_EVENTS_MAX 512

typedef struct standin {
    uv_loop_t *loop;
    upk_mqtt *mqtt;
    bool connected;
    char device[UPK_ID_MAX + 1];
    char t_desired[UPK_TOPIC_MAX + 1], t_data[UPK_TOPIC_MAX + 1];
    char t_events[UPK_TOPIC_MAX + 1], t_state[UPK_TOPIC_MAX + 1], t_req[UPK_TOPIC_MAX + 1];
    char t_online[UPK_TOPIC_MAX + 1], t_ack[UPK_TOPIC_MAX + 1];

    /* artifact served */
    uint8_t *art;
    size_t art_len;
    uint8_t art_sha[UPK_SHA256_LEN];

    uint32_t bake_s; /* bake_s of the desired messages published; 0 = none */

    /* Link authentication (docs/protocol.md 8.2). With has_key the stand-in
     * tags desired, chunk data and acks with key, as the controller does,
     * puts ctr (incremented before each desired), fresh_until and rollback
     * into its desired messages, and checks the device's tags. */
    bool has_key;
    upk_link_key key;
    uint64_t ctr;
    int64_t fresh_until;
    bool rollback;
    size_t bad_tags; /* device messages whose tag was missing or wrong (has_key only) */

    /* faults */
    bool stall;           /* answer nothing */
    uint64_t corrupt_off; /* flip a byte in the chunk at this offset (once per request) */
    bool corrupt;
    uint32_t drop_every; /* drop every n-th request (0 = none) */
    bool hold_acks;      /* record events but do not acknowledge them */

    /* observations */
    size_t req_count;
    uint64_t first_req_off; /* of the first request since standin_reset_obs */
    bool saw_req;
    uint64_t max_served_end;
    size_t event_count;
    upk_event_msg events[STANDIN_EVENTS_MAX];
    size_t dup_events; /* events whose seq was already seen */
    size_t acks_sent;
    bool have_state;
    upk_state_msg state;
    char online;
} standin;

/* Connects to broker url as a client with id "standin-<device>". */
int standin_init(standin *s, uv_loop_t *loop, const char *url, const char *device);
void standin_set_artifact(standin *s, const void *data, size_t len);
/* Signs json of m with key and publishes the retained desired. */
int standin_publish_desired(standin *s, const upk_manifest *m, const char *campaign,
                            const upk_key *key, bool break_sig);
int standin_clear_desired(standin *s);
/* The desired payload standin_publish_desired would publish (with the next
 * ctr when has_key, without publishing); caller frees *out. */
int standin_desired_payload(standin *s, const upk_manifest *m, const char *campaign,
                            const upk_key *key, bool break_sig, char **out, size_t *len);
/* Publishes len bytes on the device's topic of kind (QoS 1, retain as
 * given), tagged under tag_key when it is not NULL: what an attacker with a
 * broker account (tag_key NULL, or a wrong key) or the controller sends. */
int standin_publish_raw(standin *s, upk_topic_kind kind, const void *payload, size_t len,
                        bool retain, const upk_link_key *tag_key);
/* Last event seen, or NULL. */
const upk_event_msg *standin_last_event(const standin *s);
/* True when an event with that step was seen (and err matches when err_match). */
bool standin_saw(const standin *s, upk_status step, upk_err err);
void standin_close(standin *s);

#endif
