/* Campaign rollback that lands or says who it did not land on.
 *
 * A rollback (by an operator, or a halt with auto_rollback) moves the
 * campaign to rolling_back and gives every device the campaign started a
 * release it can install:
 *   1. its previous release when that is a full image, or a delta whose base
 *      is the image the device runs now;
 *   2. otherwise a full image of that same name and version;
 *   3. otherwise the newest full release of that name imported before the
 *      campaign's release (never the campaign's version, never below the
 *      device's security_version);
 *   4. otherwise nothing, and the device's rollback fails at once with a
 *      named error (DELTA_BASE_MISMATCH, ROLLBACK_REJECTED, NOT_FOUND) and a
 *      message saying what to import.
 * A device already on its previous release is done at once. The campaign
 * becomes rolled_back only when every device has reported the release it was
 * sent (retained state); a device reporting a failure or rejection of it, or
 * silent for the campaign's device timeout, fails its rollback, and the
 * campaign ends rollback_incomplete with the count and the devices named.
 * `campaign rollback` on a rollback_incomplete campaign tries the devices
 * that are not back again.
 *
 * Tables (store.c migration 6): rollback_devices (one row per device and
 * campaign), device_image (installed image and modules from each state).
 * Loop thread only, like the store. */
#ifndef UPKEEP_CONTROLLER_ROLLBACK_H
#define UPKEEP_CONTROLLER_ROLLBACK_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"
#include "upkeep/err.h"
#include "upkeep/msg.h"

struct cJSON;

/* Plans campaign's rollback inside the caller's transaction: a
 * rollback_devices row per started device and its desired release as above.
 * Rows already done keep their release. */
UPK_MUST_CHECK upk_err upk_rollback_plan(upk_store *s, const char *campaign, int64_t now_ms);

/* Moves the rollback rows of every rolling_back campaign on what devices
 * reported, and ends a campaign whose devices have all answered or timed
 * out (rolled_back, or rollback_incomplete with the devices named).
 * *finished (may be NULL) counts the campaigns ended. One transaction per
 * campaign. */
UPK_MUST_CHECK upk_err upk_rollback_tick(upk_store *s, int64_t now_ms, size_t *finished);

/* Adds "rollback": {"done", "pending", "failed", "devices": [...]} to o for
 * campaign (nothing when it was never rolled back): the devices not done,
 * at most 100, each with release, version, state, error and message. */
UPK_MUST_CHECK upk_err upk_rollback_json(upk_store *s, const char *campaign, struct cJSON *o);

/* Records the installed image hash and install modules device m->device
 * reports (device_image), used to pick a release it can install. */
UPK_MUST_CHECK upk_err upk_store_device_image(upk_store *s, const upk_state_msg *m);

#endif
