/* upkeep-sim core: many simulated devices in one process, each a full
 * upkeep agent (the real state machine, journal, outbox and verification,
 * its own MQTT connection and its own derived credentials) on one libuv
 * loop. Only the install, activate and health-check steps are simulated,
 * by a fake installer whose step durations and failure probabilities are
 * set per hardware class.
 *
 * Everything is in the static library upkeep_sim so that tests can drive
 * it without a process. No globals.
 *
 * Threads: every function must be called on the loop thread; every callback
 * runs on the loop thread. The spec parsers are pure and may be called from
 * any thread. */
#ifndef UPKEEP_SIM_H
#define UPKEEP_SIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "upkeep/agent.h"
#include "upkeep/err.h"
#include "upkeep/id.h"
#include "upkeep/msg.h"

#define UPK_SIM_CLASS_MAX   16       /* hardware classes per fleet */
#define UPK_SIM_DEVICES_MAX 200000u  /* devices per process */
#define UPK_SIM_SPEC_MAX    1024     /* bytes of one --hw/--fail/... spec */
#define UPK_SIM_PREFIX_MAX  32       /* chars of a device id prefix */
#define UPK_SIM_STEP_MS_MAX 3600000u /* one simulated step: at most an hour */
#define UPK_SIM_SECRET_MAX  1024     /* bytes of a fleet secret */

/* ---- per hardware class behaviour */

#define UPK_SIM_METRICS_MAX  8   /* --metric entries per class (= upk_health's metrics) */
#define UPK_SIM_RESTARTS_MAX 100 /* --restart-after-commit N */

/* A health metric a class's devices report (--metric): value, only while
 * running version when version is not "" (an entry for the running version
 * wins over one for every version). */
typedef struct upk_sim_metric {
    char name[UPK_ID_MAX + 1];
    double value;
    char version[UPK_VERSION_STR_MAX + 1];
} upk_sim_metric;

typedef struct upk_sim_class {
    char name[UPK_ID_MAX + 1]; /* hardware id reported by its devices */
    double share;              /* fraction of the fleet, 0..1 (from --hw) */
    uint32_t install_ms;       /* simulated install step; default 200 */
    uint32_t activate_ms;      /* simulated activate step; default 50 */
    uint32_t health_ms;        /* simulated health check; default 100 */
    double install_fail;       /* probability an install fails (--fail); default 0 */
    double health_fail;        /* probability a health check fails; default 0 */
    /* When not empty, health_fail applies only to releases of this version. */
    char health_fail_version[UPK_VERSION_STR_MAX + 1];
    /* --restart-after-commit: after committing restart_version ("" = any),
     * each device restarts its agent this many times (0 = never). */
    uint32_t restart_after_commit;
    char restart_version[UPK_VERSION_STR_MAX + 1];
    size_t metric_count;
    upk_sim_metric metrics[UPK_SIM_METRICS_MAX];
} upk_sim_class;

/* Parses "rev-a:50%,rev-b:50%" (percentages, or plain weights such as
 * "rev-a:1,rev-b:3") into classes[0..*n) with shares normalised to sum 1 and
 * every other field at its default. UPK_E_INVALID_ARG with a message in err
 * for a bad id, a duplicate class, a bad or zero weight, or more than
 * UPK_SIM_CLASS_MAX classes. */
UPK_MUST_CHECK upk_err upk_sim_parse_hw(const char *spec, upk_sim_class *classes, size_t *n,
                                        char *err, size_t err_cap);

/* Which per-class field a --install-ms/--fail/... spec sets. */
typedef enum upk_sim_field {
    UPK_SIM_INSTALL_MS,
    UPK_SIM_ACTIVATE_MS,
    UPK_SIM_HEALTH_MS,
    UPK_SIM_INSTALL_FAIL,
    UPK_SIM_HEALTH_FAIL, /* value may end in "@VERSION" */
} upk_sim_field;

/* Applies "CLASS:VALUE[,CLASS:VALUE...]" to the named classes, or a bare
 * "VALUE" to every class. Durations are whole milliseconds up to
 * UPK_SIM_STEP_MS_MAX; probabilities are 0..1. UPK_E_INVALID_ARG with a
 * message in err for an unknown class or a bad value; classes may be
 * partly updated then. */
UPK_MUST_CHECK upk_err upk_sim_apply_spec(upk_sim_class *classes, size_t n, upk_sim_field field,
                                          const char *spec, char *err, size_t err_cap);

/* Applies "--restart-after-commit CLASS:N[@VERSION][,...]": devices of
 * CLASS ("*" for every class) restart their agent N times (0..
 * UPK_SIM_RESTARTS_MAX) after committing VERSION (any version without @).
 * UPK_E_INVALID_ARG with a message in err for an unknown class, a bad count
 * or a bad version. */
UPK_MUST_CHECK upk_err upk_sim_parse_restart(upk_sim_class *classes, size_t n, const char *spec,
                                             char *err, size_t err_cap);

/* Applies "--metric NAME:CLASS:VALUE[@VERSION][,...]": devices of CLASS ("*"
 * for every class) report metric NAME (an id) with VALUE (a finite decimal
 * number, may be negative), only while running VERSION when given. The same
 * NAME and VERSION again replaces the value. UPK_E_INVALID_ARG with a message
 * in err for a bad name, an unknown class, a bad value or version, or more
 * than UPK_SIM_METRICS_MAX entries in a class. */
UPK_MUST_CHECK upk_err upk_sim_parse_metric(upk_sim_class *classes, size_t n, const char *spec,
                                            char *err, size_t err_cap);

/* The metrics a device of class c reports while running version ("" none)
 * are added to out (at most 8, as upk_health holds). */
void upk_sim_class_metrics(const upk_sim_class *c, const char *version, upk_health *out);

/* Assigns classes to device numbers 0, 1, 2, ... in turn by smooth
 * weighted round robin, so every prefix of the fleet is mixed in proportion
 * (each class within one device of its share) and the result depends only on
 * the device number and the shares. */
typedef struct upk_sim_class_iter {
    double credit[UPK_SIM_CLASS_MAX];
    size_t next; /* number of the device the next call assigns */
} upk_sim_class_iter;

void upk_sim_class_iter_init(upk_sim_class_iter *it);
size_t upk_sim_class_iter_next(const upk_sim_class *classes, size_t n, upk_sim_class_iter *it);

/* Class of device number i (O(i): iterates from device 0). */
size_t upk_sim_class_of(const upk_sim_class *classes, size_t n, size_t i);

/* ---- the fake installer */

/* Shared by all fake installers of a fleet: where installed images live
 * (content-addressed, so 10,000 devices with the same image cost one file)
 * and the random seed. The caller owns it; it must outlive every installer. */
typedef struct upk_sim_store {
    char images_dir[UPK_AGENT_PATH_MAX]; /* exists */
    uint64_t seed;
} upk_sim_store;

typedef struct upk_sim_inst upk_sim_inst;

/* The ops table of the fake installer ("sim" is not a manifest module name:
 * its name is set per fleet through upk_sim_opts.module). */
const upk_installer *upk_sim_installer_ops(void);

/* Creates the fake installer of one device. cls and store are borrowed and
 * must outlive it. state_dir (may be NULL) is where it keeps its installed
 * image and slot across restarts (a file "sim-image"); with NULL it starts
 * with base_sha256_hex (may be NULL for none) and keeps state in memory.
 * Caller frees with upk_sim_inst_free once no step is running. */
UPK_MUST_CHECK upk_err upk_sim_inst_new(uv_loop_t *loop, const upk_sim_class *cls,
                                        const upk_sim_store *store, const char *device_id,
                                        const char *state_dir, const char *base_sha256_hex,
                                        upk_sim_inst **out);

/* Installed image (sha256 hex, "" for none) and active slot ("a" or "b");
 * owned by inst. */
const char *upk_sim_inst_image(const upk_sim_inst *inst);
const char *upk_sim_inst_slot(const upk_sim_inst *inst);

/* True while a simulated step is running. */
bool upk_sim_inst_busy(const upk_sim_inst *inst);

/* Closes the step timer; the memory is freed on the loop afterwards. Must
 * not be called while a step is running (upk_sim_inst_busy). NULL no-op. */
void upk_sim_inst_free(upk_sim_inst *inst);

/* ---- the fleet */

typedef struct upk_sim_opts {
    const char *broker;    /* tcp://127.0.0.1:PORT */
    size_t count;          /* devices, 1..UPK_SIM_DEVICES_MAX */
    size_t first;          /* number of the first device (ids are prefix + number) */
    const char *id_prefix; /* e.g. "sim-"; prefix + number must be an id */
    const upk_sim_class *classes;
    size_t class_count;
    const uint8_t *fleet_secret; /* device passwords are derived from it */
    size_t fleet_secret_len;
    /* The controller's link secret (docs/protocol.md 8.2): each device's
     * link key is derived from it, as the controller derives it. NULL: the
     * agents run without link keys (legacy mode). */
    const uint8_t *link_secret;
    size_t link_secret_len;
    upk_keyring *keyring; /* pinned release keys; borrowed, shared by all agents */
    /* Where device data lives. NULL: a fresh temporary directory under
     * tmp_base, removed by upk_sim_close. Otherwise this directory (created
     * if missing) is kept, and devices resume from what it holds. */
    const char *data_dir;
    const char *tmp_base;     /* NULL: $UPK_SIM_TMPDIR, else /dev/shm, else $TMPDIR, else /tmp */
    const char *base_image;   /* file every device starts with installed; may be NULL */
    const char *module;       /* install module name the devices report; default "sim" */
    const char *topic_prefix; /* NULL: upkeep/v1 */
    uint32_t connect_rate;    /* devices started per second; 0 = 2000 */
    uint32_t reconnect_min_ms, reconnect_max_ms; /* 0 = agent defaults */
    uint32_t chunk_size;                         /* 0 = agent default */
    uint32_t chunks_in_flight;                   /* 0 = agent default */
    uint64_t seed;                               /* failure draws; same seed, same outcomes */
    uint32_t health_interval_s;                  /* agents' health report interval; 0 = default */
    uint32_t ack_timeout_ms;                     /* agents' event ack timeout; 0 = default */
} upk_sim_opts;

typedef struct upk_sim upk_sim;

typedef struct upk_sim_stats {
    size_t devices;   /* created */
    size_t started;   /* agents started so far (ramping up) */
    size_t connected; /* MQTT connection up */
    size_t by_status[UPK_STATUS__COUNT];
    size_t restarts;       /* agent restarts made for --restart-after-commit */
    size_t events_pending; /* events not yet acknowledged by the controller */
} upk_sim_stats;

/* Prepares the fleet: data directories, configs, derived passwords, fake
 * installers and agents (not yet connected). On failure a message is in err
 * and nothing is left behind once the loop has run (it may have handles to
 * close). Caller closes with upk_sim_close. */
UPK_MUST_CHECK upk_err upk_sim_new(uv_loop_t *loop, const upk_sim_opts *opts, upk_sim **out,
                                   char *err, size_t err_cap);

/* Starts the agents at opts->connect_rate per second. */
UPK_MUST_CHECK upk_err upk_sim_start(upk_sim *s);

/* Counts devices per status; cheap enough to call every second. */
void upk_sim_stats_get(const upk_sim *s, upk_sim_stats *out);

/* The root data directory (temporary or opts->data_dir); owned by s. */
const char *upk_sim_data_dir(const upk_sim *s);

/* Device id of device i (0-based within this fleet) into buf. */
UPK_MUST_CHECK upk_err upk_sim_device_id(const upk_sim *s, size_t i, char *buf, size_t cap);

/* Where temporary data goes: override when not NULL, else $UPK_SIM_TMPDIR,
 * else /dev/shm when writable (tmpfs: agents fsync their journals), else
 * $TMPDIR, else /tmp. */
const char *upk_sim_tmp_base(const char *override);

/* Closes every agent, waits for running steps, removes a temporary data
 * directory, frees s, then calls closed (may be NULL) on the loop. NULL is a
 * no-op. */
void upk_sim_close(upk_sim *s, void (*closed)(void *userdata), void *userdata);

#endif
