/* upkeep device agent core: the update state machine of one device on a
 * caller-owned libuv loop.
 *
 * All agent logic lives in the static library upkeep_agent_core so that
 * upkeep-agent (one device) and the simulator (thousands of devices on one
 * loop) share it. Nothing here uses globals. Install steps go through a small
 * installer vtable so a simulator can plug in a fake one.
 *
 * Threads: every function must be called on the loop thread; every callback
 * runs on the loop thread. Blocking work runs on libuv's thread pool or in a
 * child process. */
#ifndef UPKEEP_AGENT_H
#define UPKEEP_AGENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "upkeep/err.h"
#include "upkeep/key.h"
#include "upkeep/linkauth.h"
#include "upkeep/manifest.h"
#include "upkeep/msg.h"

#define UPK_AGENT_CONFIG_DEFAULT  "/etc/upkeep/agent.json"
#define UPK_AGENT_CONFIG_MAX      (64u * 1024u) /* bytes of config JSON */
#define UPK_AGENT_PATH_MAX        1024          /* bytes of any configured path */
#define UPK_AGENT_HEALTH_ARGV_MAX 16            /* health check command words */
#define UPK_AGENT_SLOT_MAX        16            /* chars of a slot name */

/* ---- installers: how a verified artifact becomes the running version. */

/* What one install step works on. Owned by the agent; valid until the step's
 * callback has run. */
typedef struct upk_install_job {
    const upk_manifest *manifest;
    const char *campaign;      /* "" when none */
    const char *device;        /* device id */
    const char *artifact_path; /* the verified full image (after any delta apply) */
    const char *work_dir;      /* per-update scratch directory; exists */
    upk_status reached;        /* rollback only: the last step the journal recorded */
    /* install may write the slot it filled; the agent journals it and passes
     * it back to every later step (also after a restart). */
    char slot[UPK_AGENT_SLOT_MAX + 1];
} upk_install_job;

/* Completion of a step: err UPK_OK or why it failed; message is a human
 * explanation (may be NULL), valid during the call only. */
typedef void (*upk_installer_cb)(upk_err err, const char *message, void *cb_data);

/* Each step starts asynchronous work and returns UPK_OK, then calls cb
 * exactly once on the loop thread. If a step returns an error, cb never
 * fires. Steps must be idempotent: after a crash the agent may run the same
 * step again. A NULL step counts as success. */
typedef upk_err (*upk_installer_step)(void *self, upk_install_job *job, upk_installer_cb cb,
                                      void *cb_data);

typedef struct upk_installer_ops {
    const char *name;  /* module name as in manifests ("file", "ab-dir", ...) */
    bool can_rollback; /* reported in the update capability */
    upk_installer_step install;
    upk_installer_step activate;
    upk_installer_step health;
    upk_installer_step commit;
    upk_installer_step rollback;
    /* Path of the installed image a delta applies to, into buf; NULL op or
     * UPK_E_NOT_FOUND when the module cannot apply deltas. */
    upk_err (*image_path)(void *self, char *buf, size_t cap);
    /* Active slot name into buf ("" when the module has no slots); may be NULL. */
    void (*active_slot)(void *self, char *buf, size_t cap);
    /* Frees self; no step is running. */
    void (*destroy)(void *self);
} upk_installer;

typedef struct upk_agent_config upk_agent_config;

/* Builds the installer named by cfg->module (file, ab-dir, or an external
 * module in cfg->modules_dir). *ops and *self are set on success; release
 * with ops->destroy(self). UPK_E_CONFIG_INVALID (message in err_buf) when
 * its settings are wrong. */
UPK_MUST_CHECK upk_err upk_installer_new(uv_loop_t *loop, const upk_agent_config *cfg,
                                         const upk_installer **ops, void **self, char *err_buf,
                                         size_t err_cap);

/* ---- configuration (one JSON file; docs/agent.md lists every field). */

typedef struct upk_agent_limits {
    uint32_t chunk_size;        /* bytes per chunk request; default 65536 */
    uint32_t chunks_in_flight;  /* requests outstanding; default 8 */
    uint64_t max_artifact_size; /* bytes; default 1 GiB */
    uint32_t outbox_max;        /* events kept while offline; default 1000 */
    uint32_t chunk_timeout_ms;  /* re-request a chunk after this; default 5000 */
    uint32_t ack_timeout_ms;    /* re-send an event not acked by the controller; default 10000 */
    uint32_t step_timeout_s;    /* install module steps; default 600 */
    uint32_t max_restarts;      /* restarts mid-activation before rolling back; default 3 */
    uint32_t max_packet;        /* largest MQTT packet accepted; default UPK_AGENT_MAX_PACKET */
} upk_agent_limits;

/* The default limits.max_packet: a chunk of the largest size (its 52-byte
 * header and UPK_CHUNK_MAX bytes) or a JSON message of UPK_MSG_MAX bytes,
 * whichever is larger, plus 2 KiB for the MQTT header, topic and properties.
 * The broker is told in the CONNECT and sends nothing larger. */
#define UPK_AGENT_PACKET_OVERHEAD 2048u
#define UPK_AGENT_MAX_PACKET      (UPK_CHUNK_HDR_LEN + UPK_CHUNK_MAX + UPK_AGENT_PACKET_OVERHEAD)

struct upk_agent_config {
    char *broker;    /* tcp://host:port or ssl://host:port */
    char *device_id; /* an id */
    char *username;  /* default device_id */
    char *password;  /* from "password" or "password_file"; may be NULL */
    char *hardware;  /* an id */
    char *data_dir;  /* journal, installed facts, outbox, downloads */
    size_t key_count;
    char *key_paths[UPK_KEYRING_MAX];
    char *module;          /* file | ab-dir | external module name */
    char *module_settings; /* JSON object text ("{}" when absent) */
    char *modules_dir;     /* default /usr/lib/upkeep/modules */
    size_t health_argc;
    char *health_argv[UPK_AGENT_HEALTH_ARGV_MAX + 1]; /* NULL-terminated; argc 0 = none */
    uint32_t health_timeout_s;                        /* default 60 */
    /* Health hook (docs/agent.md): an executable printing "name value" lines
     * of numeric metrics; argc 0 = none. Run with the health check during a
     * bake window and, on an idle device, for the baseline. */
    size_t hook_argc;
    char *hook_argv[UPK_AGENT_HEALTH_ARGV_MAX + 1]; /* NULL-terminated */
    uint32_t hook_timeout_s;                        /* default 10 */
    uint32_t health_interval_s; /* s between health reports; default 60, >= 10 */
    /* Optional in-process health probe (simulator), called on the loop
     * thread with the installed version ("" for none) when a report is made:
     * adds metrics to out and may set out->check_ok (0 or 1). NULL = none. */
    void (*health_probe)(void *self, const char *version, upk_health *out);
    void *health_probe_self;
    int64_t support_until; /* epoch s; 0 = not stated */
    char *topic_prefix;    /* default upkeep/v1 */
    upk_agent_limits limits;
    char *tls_ca_file, *tls_cert_file, *tls_key_file; /* NULL when unset */
    uint32_t reconnect_min_ms, reconnect_max_ms;      /* 0 = mqtt.h defaults */
    bool fsync;                                       /* default true; false only for simulators */
    /* The release installed at the factory ("factory_release"), reported
     * and used for anti-rollback until the first update commits: has_factory
     * false when not given; image_sha256 all zero when not given. */
    bool has_factory;
    char factory_name[UPK_ID_MAX + 1];
    char factory_version[UPK_VERSION_STR_MAX + 1];
    uint64_t factory_security_version;
    uint8_t factory_image_sha256[UPK_SHA256_LEN];
    /* The device's link key (docs/protocol.md 8.2), from "link_key_file".
     * has_link_key false = legacy mode: controller messages are taken
     * untagged, as before link keys existed (warned once at start). */
    bool has_link_key;
    upk_link_key link_key;
    /* Legacy mode without the warning at start: a program running many
     * agents (the simulator) has warned once for all of them. */
    bool legacy_quiet;

    /* Set by the loader from key_paths; owned by the config. A caller that
     * builds a config by hand may point it at a shared keyring instead (then
     * set keyring_owned false). */
    upk_keyring *keyring;
    bool keyring_owned;
    /* Optional plugged-in installer (simulator); NULL = upk_installer_new.
     * Not owned: destroy is not called by the agent. */
    const upk_installer *installer_ops;
    void *installer_self;
};

/* Fills cfg with defaults (all strings NULL). */
void upk_agent_config_defaults(upk_agent_config *cfg);

/* Parses len bytes of config JSON into cfg (defaults first) and loads the
 * pinned keys. On failure returns UPK_E_CONFIG_INVALID (or UPK_E_NOMEM) with
 * a message naming the field in err_buf, and cfg is cleaned. Reads the key
 * and password files named in it. */
UPK_MUST_CHECK upk_err upk_agent_config_parse(const char *json, size_t len, upk_agent_config *cfg,
                                              char *err_buf, size_t err_cap);

/* Reads and parses the file at path (see upk_agent_config_parse). */
UPK_MUST_CHECK upk_err upk_agent_config_load(const char *path, upk_agent_config *cfg, char *err_buf,
                                             size_t err_cap);

/* Frees every string and an owned keyring; safe to call twice. */
void upk_agent_config_cleanup(upk_agent_config *cfg);

/* ---- the agent */

typedef struct upk_agent upk_agent;

/* Creates an agent on loop. cfg must outlive the agent. Opens the data dir,
 * reads the journal and the outbox; nothing connects until upk_agent_start.
 * Caller closes with upk_agent_close. */
UPK_MUST_CHECK upk_err upk_agent_new(uv_loop_t *loop, const upk_agent_config *cfg, upk_agent **out);

/* Resumes or rolls back whatever the journal holds, then connects and keeps
 * reconnecting until closed. */
UPK_MUST_CHECK upk_err upk_agent_start(upk_agent *a);

/* Current status of the update state machine (for tests and the simulator). */
upk_status upk_agent_status(const upk_agent *a);

/* True while the agent's MQTT connection is up (for tests and the simulator). */
bool upk_agent_connected(const upk_agent *a);

/* Events in the outbox that the controller has not acknowledged yet (for
 * tests and the simulator: 0 means every event made so far is stored). */
size_t upk_agent_events_pending(const upk_agent *a);

/* Version of the installed release ("" for none) and the agent restarts
 * counted in the current bake window (0 outside one); owned by a. For tests
 * and the simulator. */
const char *upk_agent_installed_version(const upk_agent *a);
uint32_t upk_agent_bake_restarts(const upk_agent *a);

/* How long a closing agent waits for the broker to confirm its retained
 * "offline" flag before it disconnects anyway (a hung broker never does). */
#define UPK_AGENT_OFFLINE_WAIT_MS 2000u
/* The bound on stopping the upkeep-agent daemon after SIGTERM/SIGINT,
 * whatever its outbox holds and whether or not the broker answers: past it
 * the process exits without waiting for a clean disconnect. Its state is on
 * disk (journal, outbox), so this is as safe as a power cut. */
#define UPK_AGENT_STOP_BOUND_MS 5000u
/* Controller messages the agent dropped since it was created because of
 * why: AUTH_INVALID (untagged or wrongly tagged), REPLAYED, DESIRED_STALE,
 * CHUNK_INVALID, CHUNK_UNEXPECTED (unrequested, duplicate or wrongly sized
 * chunk), MSG_TOO_LARGE, or NOT_FOUND and SIZE_MISMATCH for chunk refusals
 * an agent without a link key did not trust yet; 0 for any other code. Each
 * drop is also logged with its code. For tests and operators' debugging. */
uint64_t upk_agent_dropped(const upk_agent *a, upk_err why);

/* Stops everything; closed (may be NULL) runs on the loop once all handles
 * are released and the agent is freed. Work already handed to the thread
 * pool finishes first. The MQTT side takes at most UPK_AGENT_OFFLINE_WAIT_MS
 * plus the client's disconnect timeout (1 s). NULL is a no-op. */
void upk_agent_close(upk_agent *a, void (*closed)(void *userdata), void *userdata);

#endif
