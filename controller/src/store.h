/* Controller store: one SQLite file (WAL) in the data directory plus a
 * content-addressed blob directory (data_dir/blobs/<sha256 hex>).
 *
 * Tables: meta (schema version), devices (registry from retained state and
 * online, and the desired release the controller last set), releases,
 * campaigns, campaign_devices, events (dedup on (device, seq)), audit;
 * health, health_metrics and campaign_gate (store_health.c).
 * Each function that changes state runs as one transaction (BEGIN IMMEDIATE
 * ... COMMIT), so a kill -9 leaves either the old or the new state.
 * Single-threaded: a upk_store belongs to the loop thread of `upkeep serve`. */
#ifndef UPKEEP_CONTROLLER_STORE_H
#define UPKEEP_CONTROLLER_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine.h"
#include "upkeep/err.h"
#include "upkeep/msg.h"

struct cJSON;
struct sqlite3;

#define UPK_STORE_SCHEMA_VERSION 8
#define UPK_PATH_MAX             4096

typedef struct upk_store upk_store;

/* Opens (creating when needed) data_dir/upkeep.db and data_dir/blobs, and
 * migrates the schema to UPK_STORE_SCHEMA_VERSION. A database newer than this
 * program gives UPK_E_STATE_CORRUPT. Caller closes with upk_store_close. */
UPK_MUST_CHECK upk_err upk_store_open(const char *data_dir, upk_store **out);
void upk_store_close(upk_store *s);
struct sqlite3 *upk_store_db(upk_store *s);
int upk_store_schema_version(upk_store *s);

/* Path of the blob with the given sha256 hex into buf. */
UPK_MUST_CHECK upk_err upk_store_blob_path(upk_store *s, const char *sha_hex, char *buf,
                                           size_t cap);
const char *upk_store_dir(upk_store *s);

/* ---- devices */
UPK_MUST_CHECK upk_err upk_store_device_state(upk_store *s, const upk_state_msg *m, int64_t now_ms);
UPK_MUST_CHECK upk_err upk_store_device_online(upk_store *s, const char *device, bool online,
                                               int64_t now_ms);
UPK_MUST_CHECK upk_err upk_store_device_group(upk_store *s, const char *device, const char *group);
/* Marks the desired of device as acknowledged by the broker when it still
 * is release (and campaign). */
UPK_MUST_CHECK upk_err upk_store_desired_acked(upk_store *s, const char *device,
                                               const char *release, const char *campaign);
/* True in *ok when device's desired release has an artifact with sha_hex. */
UPK_MUST_CHECK upk_err upk_store_may_fetch(upk_store *s, const char *device, const char *sha_hex,
                                           bool *ok);

/* ---- events: applies one device event: dedup on (device, seq) and moves the
 * device's campaign row. *dup is true when it was seen before (nothing
 * changed). */
UPK_MUST_CHECK upk_err upk_store_event_apply(upk_store *s, const char *device,
                                             const upk_event_msg *e, int64_t now_ms, bool *dup);

/* Applies the outcome a device's retained state reports (campaign and a
 * final status), like the matching event would. This recovers outcomes whose
 * events were lost, e.g. received but not yet applied when the controller
 * was killed. No-op for states without a campaign or a final status. */
UPK_MUST_CHECK upk_err upk_store_state_outcome(upk_store *s, const upk_state_msg *m,
                                               int64_t now_ms);

/* ---- releases */
typedef struct upk_release_row {
    char id[UPK_ID_MAX + 1];
    char key_id[UPK_KEY_ID_LEN + 1];
    char *manifest; /* owned; free with upk_release_row_cleanup */
    size_t manifest_len;
    uint8_t sig[UPK_SIG_MAX];
    size_t sig_len;
    upk_manifest m;
} upk_release_row;

void upk_release_row_cleanup(upk_release_row *r);
/* Inserts a verified release; UPK_E_EXISTS if the id is taken. */
UPK_MUST_CHECK upk_err upk_store_release_insert(upk_store *s, const char *id, const upk_manifest *m,
                                                const char *manifest, size_t manifest_len,
                                                const uint8_t *sig, size_t sig_len,
                                                const char *key_id, const char *by, int64_t now_ms);
UPK_MUST_CHECK upk_err upk_store_release_get(upk_store *s, const char *id, upk_release_row *out);

/* ---- campaigns */
/* Inserts c and its target devices (ids with their stages) in one
 * transaction. UPK_E_EXISTS if the id is taken. */
UPK_MUST_CHECK upk_err upk_store_campaign_insert(upk_store *s, const upk_campaign *c,
                                                 const char *const *ids, const uint32_t *stages,
                                                 size_t n);
UPK_MUST_CHECK upk_err upk_store_campaign_get(upk_store *s, const char *id, upk_campaign *out);
/* Device rows of a campaign, in stage and rank order, with online from the
 * registry. Caller frees *out with free(). */
UPK_MUST_CHECK upk_err upk_store_campaign_devices(upk_store *s, const char *id, upk_cdev **out,
                                                  size_t *n);
/* Ids of campaigns in state running, up to cap. */
UPK_MUST_CHECK upk_err upk_store_campaigns_running(upk_store *s, char (*ids)[UPK_ID_MAX + 1],
                                                   size_t cap, size_t *n);

/* Applies one engine step in one transaction: the new campaign row, the
 * device actions and, for a rollback verdict, the previous desired of every
 * device the campaign changed. Devices whose desired changed are listed via
 * changed(device, ud) after the commit. */
UPK_MUST_CHECK upk_err upk_store_campaign_apply(upk_store *s, const upk_step_result *res,
                                                const upk_cdev *devs, const upk_action *actions,
                                                int64_t now_ms,
                                                void (*changed)(const char *device, void *ud),
                                                void *ud);
/* Operator transition: sets state (and reason) of campaign id; for
 * UPK_CAMP_ROLLED_BACK restores the previous desired of the devices it
 * changed and calls changed() for each after the commit. UPK_E_STATE_INVALID
 * when the transition is not allowed from the current state. */
UPK_MUST_CHECK upk_err upk_store_campaign_transition(upk_store *s, const char *id,
                                                     upk_camp_state to, const char *reason,
                                                     int64_t now_ms,
                                                     void (*changed)(const char *device, void *ud),
                                                     void *ud);

/* Calls fn for every device whose desired is not yet acknowledged. */
UPK_MUST_CHECK upk_err upk_store_desired_unacked(upk_store *s,
                                                 void (*fn)(const char *device, void *ud),
                                                 void *ud);
/* The desired of device: release id and campaign ("" when none). */
UPK_MUST_CHECK upk_err upk_store_device_desired(upk_store *s, const char *device,
                                                char release[UPK_ID_MAX + 1],
                                                char campaign[UPK_ID_MAX + 1]);

/* ---- wire integrity (issue 23, docs/security.md) */

/* The desired counter of device for assignment (the caller's key for what
 * the desired says: release, campaign, rollback) into *ctr. A new counter,
 * max(last + 1, now_ms), when fresh is true or the assignment differs from
 * the one the last counter was issued for, so that counters strictly
 * increase per device and still move forward after a database is restored
 * from a backup; otherwise the last counter again, so that a re-publication
 * to a device that may hash the whole payload (an agent without a link key)
 * is byte-identical. UPK_E_NOT_FOUND for an unknown device. */
UPK_MUST_CHECK upk_err upk_store_ctr_next(upk_store *s, const char *device, const char *assignment,
                                          bool fresh, int64_t now_ms, uint64_t *ctr);
/* Whether a validly tagged message ever came from device (false for an
 * unknown device); from then on untagged ones are refused. */
UPK_MUST_CHECK upk_err upk_store_device_authed(upk_store *s, const char *device, bool *authed);
/* Records that a validly tagged message came from device (creating its row). */
UPK_MUST_CHECK upk_err upk_store_device_set_authed(upk_store *s, const char *device);
/* Calls fn for every device that has, or once had, a desired (release set or
 * a counter issued): what `upkeep serve` publishes afresh at start. */
UPK_MUST_CHECK upk_err upk_store_desired_all(upk_store *s, void (*fn)(const char *device, void *ud),
                                             void *ud);
/* Drift: an SQL condition over a row of table devices (not aliased) that is
 * true when the device reports a release other than its desired release
 * (name and version) while it is not updating: its state is not an update
 * step and its row in the desired campaign is not assigned or in progress.
 * Devices that never reported a state do not drift. */
#define UPK_STORE_DRIFT_SQL                                                                \
    "(devices.desired_release <> '' AND devices.state_ts > 0 AND devices.status NOT IN"    \
    " ('downloading','verifying','installing','activating','health_check') AND NOT EXISTS" \
    " (SELECT 1 FROM releases r WHERE r.id = devices.desired_release AND r.name ="         \
    " devices.release AND r.version = devices.version) AND NOT EXISTS (SELECT 1 FROM"      \
    " campaign_devices cd WHERE cd.campaign = devices.desired_campaign AND cd.device ="    \
    " devices.id AND cd.state IN ('assigned','in_progress')))"
/* Number of devices whose desired comes from campaign and that drift. */
UPK_MUST_CHECK upk_err upk_store_campaign_drift(upk_store *s, const char *campaign, size_t *n);

/* ---- audit */
UPK_MUST_CHECK upk_err upk_store_audit(upk_store *s, int64_t now_ms, const char *sender,
                                       const char *cmd, const char *args, const char *result);

/* ---- health (store_health.c). A device's health data is bounded whatever
 * it sends (docs/security.md, issue 17): rows under a campaign only when the
 * device is one of that campaign's devices, plus one latest value per
 * (device, metric) under campaign ""; at most UPK_HEALTH_NAMES_MAX metric
 * names per device; old rows leave by upk_store_prune. */
#define UPK_HEALTH_NAMES_MAX 16   /* distinct metric names kept per device */
#define UPK_METRIC_ABS_MAX   1e12 /* |value| of any metric the store accepts */

/* Records the health report of event e (if present) of device: restarts,
 * boots and check failure as maxima and metrics as running sums for a mean
 * under e->campaign when the device is in that campaign (only the metrics
 * the campaign's gate names, when it names any), and each metric's latest
 * value under campaign "". Refused, nothing stored, UPK_E_FIELD_RANGE: a
 * metric outside +-UPK_METRIC_ABS_MAX or outside the range the campaign's
 * gate declares for it. UPK_E_FIELD_TOO_LONG: names beyond the device's
 * UPK_HEALTH_NAMES_MAX were dropped (the others were stored). Each refusal
 * is logged with the device and the code. */
UPK_MUST_CHECK upk_err upk_store_health_record(upk_store *s, const char *device,
                                               const upk_event_msg *e, int64_t now_ms);

/* Health-gate inputs for campaign id's n device rows: a device that
 * committed or failed is "updated" (its health and metric means under id;
 * a committed one that is not online counts as offline), any other device
 * is a baseline candidate with the latest values it reported since the
 * campaign's current stage started. Every lookup is by primary key, so the
 * cost is O(n log N) whatever the table holds. *out (n entries, caller
 * frees) on success. */
UPK_MUST_CHECK upk_err upk_store_gate_devices(upk_store *s, const char *id, const upk_cdev *devs,
                                              size_t n, upk_gate_dev **out, size_t *out_n);

/* Retention: deletes at most batch rows of each kind that are older than
 * their keep time: events received before now - events_keep_ms, latest
 * metric values and idle health before now - health_keep_ms, and health rows
 * of campaigns that finished before now - health_keep_ms (keep 0 = keep
 * forever). Indexed, so one call costs O(batch log N); *deleted (may be
 * NULL) gets the count. Call it again while it deletes a full batch. */
UPK_MUST_CHECK upk_err upk_store_prune(upk_store *s, int64_t now_ms, int64_t events_keep_ms,
                                       int64_t health_keep_ms, size_t batch, size_t *deleted);

/* Per-device cap on events (retention.events_per_device): visits up to ndev
 * devices that have events, in id order after *cursor ("" = from the first;
 * set to the last visited, "" again after the last device), and deletes at
 * most batch events of each whose seq is more than cap below that device's
 * newest seq (a device's seqs grow by one per event, so that keeps its
 * newest cap). Every step is an index lookup. *deleted (may be NULL) gets
 * the count. */
UPK_MUST_CHECK upk_err upk_store_prune_device_events(upk_store *s, char cursor[UPK_ID_MAX + 1],
                                                     uint64_t cap, size_t ndev, size_t batch,
                                                     size_t *deleted);

/* ---- generic read: runs sql with text binds (NULL binds as NULL) and
 * returns a JSON array of row objects keyed by column name (integers as
 * numbers, text as strings, NULL as null). Caller frees with cJSON_Delete. */
/* Runs sql (a string constant: prepared statements are cached by its
 * address) with text binds (NULL binds as NULL); *changes (may be NULL) gets
 * the rows changed. For the modules beside the store on per-message paths. */
UPK_MUST_CHECK upk_err upk_store_run(upk_store *s, const char *sql, const char *const *binds,
                                     size_t n, int *changes);
/* Runs a cached query whose first row's first column is an integer into
 * *out; *found is false when there is no row. */
UPK_MUST_CHECK upk_err upk_store_int(upk_store *s, const char *sql, const char *const *binds,
                                     size_t n, int64_t *out, bool *found);

UPK_MUST_CHECK upk_err upk_store_query_json(upk_store *s, const char *sql, const char *const *binds,
                                            size_t nbinds, struct cJSON **out);

#endif
