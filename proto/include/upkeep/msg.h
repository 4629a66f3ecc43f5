/* Wire messages of upkeep and their JSON (and binary) codecs.
 *
 * Every JSON message carries "v": UPK_MSG_VERSION; a decoder rejects any other
 * version, wrong types, missing required fields, oversized strings and
 * invalid ids with a named upk_err, never reads past len and never crashes.
 * Unknown fields are ignored so that newer senders stay readable. Encoders
 * return a new NUL-terminated string the caller frees with free().
 * docs/protocol.md shows each message with an example. No I/O. Any thread. */
#ifndef UPKEEP_MSG_H
#define UPKEEP_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "upkeep/err.h"
#include "upkeep/hash.h"
#include "upkeep/id.h"
#include "upkeep/key.h"
#include "upkeep/manifest.h"

struct cJSON;

#define UPK_MSG_VERSION 1
#define UPK_MSG_MAX     65536 /* bytes of any JSON message */
#define UPK_ERRMSG_MAX  256   /* chars of a human error message */
#define UPK_MODULES_MAX 8     /* install modules listed in a state */

/* ---- update status (agent state machine, DESIGN.md "Agent update states") */
#define UPK_STATUS_MAP(X)           \
    X(IDLE, "idle")                 \
    X(DOWNLOADING, "downloading")   \
    X(VERIFYING, "verifying")       \
    X(INSTALLING, "installing")     \
    X(ACTIVATING, "activating")     \
    X(HEALTH_CHECK, "health_check") \
    X(COMMITTED, "committed")       \
    X(FAILED, "failed")             \
    X(ROLLED_BACK, "rolled_back")   \
    X(REJECTED, "rejected")

typedef enum upk_status {
#define UPK__STATUS_ENUM(name, str) UPK_STATUS_##name,
    UPK_STATUS_MAP(UPK__STATUS_ENUM)
#undef UPK__STATUS_ENUM
        UPK_STATUS__COUNT
} upk_status;

/* Wire name ("health_check"); "unknown" when out of range. Static. */
const char *upk_status_str(upk_status s);
/* False (and *out untouched) for an unknown name. */
bool upk_status_from_str(const char *s, upk_status *out);
/* True for committed, failed, rolled_back, rejected. */
bool upk_status_is_final(upk_status s);

/* ---- dev/{d}/state (retained, device -> all) */
typedef struct upk_capability {
    bool automatic;   /* applies updates without a person */
    bool signed_only; /* installs signed releases only ("signed" on the wire) */
    bool rollback;    /* has a way back */
    bool delta;       /* can apply delta releases */
    size_t module_count;
    char modules[UPK_MODULES_MAX][UPK_ID_MAX + 1];
} upk_capability;

typedef struct upk_state_msg {
    char device[UPK_ID_MAX + 1];
    char hw[UPK_ID_MAX + 1];
    char release[UPK_ID_MAX + 1];          /* installed release name; "" if none */
    char version[UPK_VERSION_STR_MAX + 1]; /* installed version; "" if none */
    uint64_t security_version;
    char slot[UPK_ID_MAX + 1]; /* active slot ("a"/"b") or "" */
    upk_status status;
    char campaign[UPK_ID_MAX + 1]; /* campaign of the current/last update; "" */
    upk_err error;                 /* UPK_OK unless the last update failed */
    upk_capability cap;
    int64_t support_until;                /* epoch s; 0 = unknown */
    bool support_signed;                  /* true: from a signed manifest; false: config */
    int64_t last_patched;                 /* epoch s of last commit; 0 = never */
    uint8_t image_sha256[UPK_SHA256_LEN]; /* installed image; all zero if unknown */
    char agent[UPK_VERSION_STR_MAX + 1];  /* agent software version */
    /* The fresh_until of the last authenticated desired has passed: the
     * device has not heard from its controller in time ("stale"). */
    bool stale;
    int64_t ts; /* epoch s when reported */
} upk_state_msg;

UPK_MUST_CHECK upk_err upk_state_encode(const upk_state_msg *m, char **out, size_t *outlen);
UPK_MUST_CHECK upk_err upk_state_decode(const char *json, size_t len, upk_state_msg *out);

/* ---- dev/{d}/desired (retained, controller -> device). An empty payload
 * means "no desired release" and is not passed to the decoder. A desired
 * without campaign, key_id, manifest and sig is a *clear* (clear = true):
 * the link-authenticated form of "no desired release"
 * ({"v":1,"ctr":N,"fresh_until":T}); one with some of them but not all is
 * FIELD_MISSING. */
#define UPK_DESIRED_CTR_MAX   (UINT64_C(1) << 53)   /* largest ctr */
#define UPK_DESIRED_FRESH_MAX INT64_C(253402300799) /* 9999-12-31T23:59:59Z */

typedef struct upk_desired_msg {
    bool clear; /* true: no assignment; the five fields below are empty */
    char campaign[UPK_ID_MAX + 1];
    char key_id[UPK_KEY_ID_LEN + 1];
    char *manifest; /* exact signed bytes, NUL-terminated; owned */
    size_t manifest_len;
    uint8_t sig[UPK_SIG_MAX];
    size_t sig_len;
    uint32_t bake_s; /* post-commit health reporting window; 0 = none */
    /* Covered by the link tag (linkauth.h), not by the release signature: */
    bool rollback;       /* controller-authorized downgrade of the version */
    uint64_t ctr;        /* per-device counter, strictly increasing; 0 = absent */
    int64_t fresh_until; /* Unix s after which this desired is stale; 0 = absent */
} upk_desired_msg;

/* Encodes m (manifest bytes copied into a JSON string, sig as base64; for a
 * clear only v, ctr and fresh_until). Omits rollback when false and ctr and
 * fresh_until when 0. */
UPK_MUST_CHECK upk_err upk_desired_encode(const upk_desired_msg *m, char **out, size_t *outlen);
/* On success out->manifest is allocated (NULL for a clear); release with
 * upk_desired_cleanup. Does not verify the signature (see
 * upk_manifest_verify) nor the link tag (upk_link_verify). */
UPK_MUST_CHECK upk_err upk_desired_decode(const char *json, size_t len, upk_desired_msg *out);

/* The identity of the assignment m carries: SHA-256 over its campaign,
 * key_id, manifest bytes, signature, bake_s and rollback (each
 * length-prefixed), but not ctr or fresh_until, so that a refreshed desired
 * (new counter, later freshness) is the same assignment and never restarts
 * or supersedes an update. A clear has the all-zero id. UPK_E_INVALID_ARG for
 * NULL arguments. */
UPK_MUST_CHECK upk_err upk_desired_assignment_id(const upk_desired_msg *m,
                                                 uint8_t out[UPK_SHA256_LEN]);
/* Frees what decode allocated; safe on a zeroed or cleaned struct. */
void upk_desired_cleanup(upk_desired_msg *m);

/* ---- dev/{d}/events (QoS 1, device -> controller) */
typedef struct upk_health {
    bool present;
    uint32_t restarts; /* agent (re)starts since commit */
    uint32_t boots;    /* boots since commit */
    int check_ok;      /* -1 not run, 0 failed, 1 passed */
    size_t metric_count;
    char metric_name[8][UPK_ID_MAX + 1];
    double metric_value[8];
} upk_health;

typedef struct upk_event_msg {
    uint64_t seq;                          /* per-device, strictly increasing from 1 */
    int64_t ts;                            /* epoch s */
    char campaign[UPK_ID_MAX + 1];         /* "" when none */
    char release[UPK_ID_MAX + 1];          /* release name; "" when none */
    char version[UPK_VERSION_STR_MAX + 1]; /* release version; "" when none */
    upk_status step;
    uint32_t progress;                /* 0..100 */
    upk_err error;                    /* UPK_OK unless failed/rolled_back/rejected */
    char message[UPK_ERRMSG_MAX + 1]; /* human text; may be "" */
    upk_health health;                /* post-commit health report */
} upk_event_msg;

UPK_MUST_CHECK upk_err upk_event_encode(const upk_event_msg *m, char **out, size_t *outlen);
UPK_MUST_CHECK upk_err upk_event_decode(const char *json, size_t len, upk_event_msg *out);

/* ---- dev/{d}/ack (controller -> device, QoS 0): {"v":1,"seq":N} says the
 * controller has stored the device's event N (or had it already). The agent
 * keeps each event on disk until this arrives, so an event acknowledged by a
 * broker that then died, or taken by a controller that then crashed, is sent
 * again (docs/protocol.md, "Event acknowledgement"). */
UPK_MUST_CHECK upk_err upk_ack_encode(uint64_t seq, char **out, size_t *outlen);
/* Reads seq (1..2^53-1) of an ack. Other members are ignored, so the
 * controller can also read the seq of an event it cannot decode, refuse that
 * event by name and still release it from the device's outbox. */
UPK_MUST_CHECK upk_err upk_ack_decode(const char *json, size_t len, uint64_t *seq);

/* ---- dev/{d}/chunk/req (device -> controller) */
#define UPK_CHUNK_MAX (256u * 1024u) /* bytes of one chunk, at most */

typedef struct upk_chunk_req {
    uint8_t artifact[UPK_SHA256_LEN]; /* artifact sha256 */
    uint64_t offset;
    uint32_t length; /* 1..UPK_CHUNK_MAX */
} upk_chunk_req;

UPK_MUST_CHECK upk_err upk_chunk_req_encode(const upk_chunk_req *m, char **out, size_t *outlen);
UPK_MUST_CHECK upk_err upk_chunk_req_decode(const char *json, size_t len, upk_chunk_req *out);

/* ---- dev/{d}/chunk/data (controller -> device): binary header + bytes.
 *  off len field
 *    0   4 magic "UPKC"
 *    4   1 header version (1)
 *    5   1 status: 0 ok, else a refusal (upk_chunk_status)
 *    6   2 reserved, zero
 *    8  32 artifact sha256
 *   40   8 offset, big-endian
 *   48   4 data length, big-endian (0 unless status is ok)
 *   52   . data */
#define UPK_CHUNK_HDR_LEN     52
#define UPK_CHUNK_HDR_VERSION 1

typedef enum upk_chunk_status {
    UPK_CHUNK_OK = 0,
    UPK_CHUNK_NOT_FOUND = 1, /* unknown artifact, or not in this device's desired */
    UPK_CHUNK_RANGE = 2,     /* offset/length outside the artifact */
    UPK_CHUNK_BUSY = 3       /* controller overloaded: retry later */
} upk_chunk_status;

typedef struct upk_chunk_hdr {
    upk_chunk_status status;
    uint8_t artifact[UPK_SHA256_LEN];
    uint64_t offset;
    uint32_t length;
} upk_chunk_hdr;

/* Writes the 52-byte header into buf. */
void upk_chunk_hdr_write(const upk_chunk_hdr *h, uint8_t buf[UPK_CHUNK_HDR_LEN]);
/* Parses a whole chunk/data payload of len bytes: checks magic, version,
 * status, reserved bytes, length <= UPK_CHUNK_MAX and that exactly length data
 * bytes follow. On success *data points into payload. UPK_E_CHUNK_INVALID
 * otherwise; outputs untouched on failure. */
UPK_MUST_CHECK upk_err upk_chunk_parse(const uint8_t *payload, size_t len, upk_chunk_hdr *hdr,
                                       const uint8_t **data);

/* ---- ctl/req/{o} and ctl/resp/{o} (operator <-> controller) */
#define UPK_CMD_MAX  64 /* chars of a command name ("campaign.create") */
#define UPK_CORR_MAX 64 /* chars of a correlation id (an id) */

typedef struct upk_ctl_req {
    char id[UPK_CORR_MAX + 1]; /* correlation id, an id */
    char cmd[UPK_CMD_MAX + 1]; /* [a-z0-9._-]+ */
    struct cJSON *args;        /* JSON object (never NULL after decode); owned */
} upk_ctl_req;

/* args may be NULL (encoded as {}); it is not consumed. */
UPK_MUST_CHECK upk_err upk_ctl_req_encode(const upk_ctl_req *m, char **out, size_t *outlen);
UPK_MUST_CHECK upk_err upk_ctl_req_decode(const char *json, size_t len, upk_ctl_req *out);
void upk_ctl_req_cleanup(upk_ctl_req *m);

typedef struct upk_ctl_resp {
    char id[UPK_CORR_MAX + 1];
    upk_err error;                    /* UPK_OK on success */
    char message[UPK_ERRMSG_MAX + 1]; /* what went wrong and what to do; "" on success */
    struct cJSON *data;               /* JSON value or NULL; owned */
} upk_ctl_resp;

UPK_MUST_CHECK upk_err upk_ctl_resp_encode(const upk_ctl_resp *m, char **out, size_t *outlen);
UPK_MUST_CHECK upk_err upk_ctl_resp_decode(const char *json, size_t len, upk_ctl_resp *out);
void upk_ctl_resp_cleanup(upk_ctl_resp *m);

#endif
