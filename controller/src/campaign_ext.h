/* Campaign options beyond the campaigns row (store migration 6):
 *
 * - Checks at `campaign create`: target devices that report install modules
 *   without the release's module are left out (all of them: refused with
 *   MODULE_UNSUPPORTED and the count); for a delta release, devices whose
 *   installed image is not the delta's base refuse it, so the create is
 *   refused with DELTA_BASE_MISMATCH and their count, unless delta_fallback
 *   is "full": then those devices are given the full image of the same name
 *   and version (campaign_release rows; refused with NOT_FOUND when none is
 *   imported).
 * - Continuous campaigns (opt-in): while running, devices that come back
 *   online after their stage timed them out are offered the release again,
 *   devices that join or newly match the target are added to the current
 *   stage, and the campaign stays open (running) after its last stage until
 *   an operator ends it.
 * - `campaign retry`: devices that failed or timed out are offered the
 *   release again (their desired is published anew with a new attempt number
 *   so an agent that already refused the identical message takes it again).
 * Loop thread only, like the store. */
#ifndef UPKEEP_CONTROLLER_CAMPAIGN_EXT_H
#define UPKEEP_CONTROLLER_CAMPAIGN_EXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine.h"
#include "store.h"
#include "upkeep/err.h"
#include "upkeep/manifest.h"

typedef struct upk_create_check {
    size_t no_module;                  /* left out: no install module for the release */
    size_t not_on_base;                /* delta: devices not on the base image */
    size_t full_fallback;              /* of those, given the full image */
    char full_release[UPK_ID_MAX + 1]; /* that full image's release id */
} upk_create_check;

/* Filters ids[0..*n) in place for release m (id release) as described above;
 * with fallback_full the devices not on a delta's base stay in and are
 * listed in *fb (caller frees; *fbn entries). On a refusal writes why
 * (whycap) and returns the named error; nothing is changed in the store. */
UPK_MUST_CHECK upk_err upk_create_check_devices(upk_store *s, const char *release,
                                                const upk_manifest *m, const char **ids, size_t *n,
                                                bool fallback_full, upk_create_check *out,
                                                const char ***fb, size_t *fbn, char *why,
                                                size_t whycap);

/* Records campaign's options and the devices given the full image (one
 * transaction). */
UPK_MUST_CHECK upk_err upk_campaign_opts_save(upk_store *s, const char *campaign, bool continuous,
                                              const char *full_release, const char *const *fb,
                                              size_t fbn);

/* Whether campaign is continuous (false when it has no options row). */
bool upk_campaign_is_continuous(upk_store *s, const char *campaign);

/* For a continuous campaign, turns the engine's "complete" into staying
 * open: state running on its last stage, nothing else changed. */
void upk_continuous_hold(upk_store *s, const upk_campaign *c, upk_step_result *res);

/* Offers a continuous running campaign to devices back online after a
 * timeout and to devices newly matching its target; changed(device) for
 * each device whose desired must be published again. *added counts both. */
UPK_MUST_CHECK upk_err upk_continuous_tick(upk_store *s, const char *campaign, int64_t now_ms,
                                           void (*changed)(const char *device, void *ud), void *ud,
                                           size_t *added);

/* `campaign retry`: device (or, device NULL, every failed or timed-out
 * device) of running or paused campaign is offered the release again.
 * UPK_E_STATE_INVALID when the campaign is not open or the device did not
 * fail or time out (why says which), UPK_E_NOT_FOUND for an unknown device. */
UPK_MUST_CHECK upk_err upk_campaign_retry(upk_store *s, const char *campaign, const char *device,
                                          int64_t now_ms,
                                          void (*changed)(const char *device, void *ud), void *ud,
                                          size_t *count, char *why, size_t whycap);

/* Attempt number of device's desired in campaign (0 = first): serve adds it
 * to the desired message so a retried one differs from the refused one. */
uint32_t upk_desired_attempt(upk_store *s, const char *device, const char *campaign);

#endif
