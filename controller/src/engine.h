/* Campaign engine: the pure decision function of the controller.
 *
 * Given one campaign row, its device rows and the current time, upk_engine_step
 * returns what should happen next (start devices, time them out, soak, advance
 * or complete a stage, halt with a reason, roll back) and the campaign fields
 * that change. It does no I/O, touches no clock and allocates nothing, so the
 * store can apply its result in one transaction and tests can drive it
 * exhaustively. Any thread; no shared state. (The health gate that
 * upk_engine_step_gated calls takes one scratch array for its medians and
 * frees it before returning; see health_gate.h.) */
#ifndef UPKEEP_CONTROLLER_ENGINE_H
#define UPKEEP_CONTROLLER_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "health_gate.h"
#include "upkeep/err.h"
#include "upkeep/id.h"

#define UPK_STAGES_MAX 16  /* stages per campaign */
#define UPK_REASON_MAX 255 /* chars of a halt reason */
#define UPK_TARGET_MAX 512 /* chars of a target expression */

typedef enum upk_camp_state {
    UPK_CAMP_RUNNING,
    UPK_CAMP_PAUSED, /* by an operator, or halted by the engine (reason says) */
    UPK_CAMP_COMPLETED,
    UPK_CAMP_ABORTED,
    UPK_CAMP_ROLLED_BACK, /* every device it started reported its previous release */
    /* Rolling back: each started device was sent a release it can install
     * (rollback.h); the campaign stays here until each has reported it. */
    UPK_CAMP_ROLLING_BACK,
    /* Rolled back as far as it could: some devices failed to return or could
     * not be given a release they can install (the reason names them). */
    UPK_CAMP_ROLLBACK_INCOMPLETE,
    UPK_CAMP__COUNT
} upk_camp_state;

typedef enum upk_cdev_state {
    UPK_CDEV_PENDING,     /* not started */
    UPK_CDEV_ASSIGNED,    /* desired set, no progress seen yet */
    UPK_CDEV_IN_PROGRESS, /* device reported a step */
    UPK_CDEV_SUCCEEDED,   /* committed */
    UPK_CDEV_FAILED,      /* failed, rolled back or rejected */
    UPK_CDEV_TIMED_OUT,   /* no final outcome within the device timeout */
    UPK_CDEV_SKIPPED,     /* never started: campaign aborted or rolled back */
    UPK_CDEV__COUNT
} upk_cdev_state;

typedef struct upk_campaign {
    char id[UPK_ID_MAX + 1];
    char release[UPK_ID_MAX + 1];
    char target[UPK_TARGET_MAX + 1];
    upk_camp_state state;
    char reason[UPK_REASON_MAX + 1]; /* why paused/halted/aborted; "" */
    bool halted;                     /* paused by the engine, not an operator */
    size_t stage_count;
    uint32_t stage_bp[UPK_STAGES_MAX]; /* cumulative share in basis points, last = 10000 */
    uint32_t stage;                    /* current stage index */
    uint32_t soak_s;
    uint32_t max_fail_bp; /* failures allowed per stage, basis points */
    uint32_t device_timeout_s;
    uint32_t rate_per_min;  /* device starts per minute; 0 = unlimited */
    uint32_t max_in_flight; /* 0 = unlimited */
    bool auto_rollback;
    int64_t tokens_milli; /* token bucket for the start rate */
    int64_t tokens_at_ms;
    int64_t stage_started_ms;
    int64_t stage_done_ms; /* when the stage's devices were all done; 0 = not yet */
    int64_t created_ms;
    int64_t updated_ms;
    int64_t finished_ms;
    char created_by[UPK_ID_MAX + 1];
    /* Health gate: gate.bake_s > 0 holds a done stage for max(soak, bake)
     * and then judges it with upk_gate_eval before it advances. */
    upk_gate_cfg gate;
} upk_campaign;

typedef struct upk_cdev {
    char device[UPK_ID_MAX + 1];
    uint32_t stage;
    upk_cdev_state state;
    bool online;
    int64_t assigned_ms; /* 0 until started */
    int64_t done_ms;     /* 0 until final */
    char error[40];      /* error name the device reported ("" = none) */
} upk_cdev;

typedef enum upk_action_kind {
    UPK_ACT_START,   /* set the campaign release as the device's desired */
    UPK_ACT_TIMEOUT, /* mark the device timed out */
    UPK_ACT_SKIP,    /* mark a never-started device skipped */
} upk_action_kind;

typedef struct upk_action {
    upk_action_kind kind;
    size_t index; /* into the device array given to upk_engine_step */
} upk_action;

typedef enum upk_verdict {
    UPK_VERDICT_NONE,     /* keep going (device actions may still be listed) */
    UPK_VERDICT_SOAKING,  /* the stage is done; soak started (stage_done_ms set) */
    UPK_VERDICT_ADVANCE,  /* next stage began */
    UPK_VERDICT_COMPLETE, /* last stage done and soaked */
    UPK_VERDICT_HALT,     /* paused with a reason */
    UPK_VERDICT_ROLLBACK, /* halted and auto-rollback: state is rolling_back */
} upk_verdict;

typedef struct upk_step_result {
    upk_verdict verdict;
    upk_campaign next;   /* campaign row after the step */
    size_t action_count; /* entries written to the caller's actions array */
    bool truncated;      /* more actions were due than fitted */
} upk_step_result;

/* Per-stage counts, for views and decisions. */
typedef struct upk_stage_counts {
    size_t total;
    size_t by_state[UPK_CDEV__COUNT];
} upk_stage_counts;

/* Decides one step for campaign c (not modified) over n device rows at now_ms.
 * Writes at most cap actions into actions and the new campaign row and the
 * verdict into *res. Devices must be the campaign's rows (any order).
 * Nothing happens unless c is running. Returns UPK_E_INVALID_ARG on a bad
 * campaign row (no stages, stage out of range). */
UPK_MUST_CHECK upk_err upk_engine_step(const upk_campaign *c, const upk_cdev *devs, size_t n,
                                       int64_t now_ms, upk_action *actions, size_t cap,
                                       upk_step_result *res);

/* As upk_engine_step, with the stage's health over the bake window: when
 * c->gate.bake_s > 0, a done stage waits max(soak_s, bake_s) and then
 * upk_gate_eval judges health[0..hn) (updated devices and baseline ones);
 * a halt pauses the campaign (or rolls it back with auto_rollback) with
 * "stage N: <gate reason>" (the gate reason starts "health gate:"). health may be NULL when hn is
 * 0. Also returns upk_gate_eval's UPK_E_INVALID_ARG on a bad gate config. */
UPK_MUST_CHECK upk_err upk_engine_step_gated(const upk_campaign *c, const upk_cdev *devs, size_t n,
                                             const upk_gate_dev *health, size_t hn, int64_t now_ms,
                                             upk_action *actions, size_t cap, upk_step_result *res);

/* Stage sizes: given n target devices, fills sizes[i] (i < c->stage_count)
 * with how many devices stage i holds (each at least 1 while devices remain;
 * the sum is n). */
void upk_engine_stage_sizes(const upk_campaign *c, size_t n, size_t sizes[UPK_STAGES_MAX]);

/* Rank key of a device in a campaign: SHA-256(campaign id "\n" device id).
 * Stage membership follows the ascending order of these keys. */
void upk_engine_rank_key(const char *campaign, const char *device, uint8_t out[32]);

/* Assigns stages to n device ids in place of out_stage[] (index-aligned with
 * ids) by ranking on upk_engine_rank_key. Returns UPK_E_NOMEM. */
UPK_MUST_CHECK upk_err upk_engine_assign_stages(const upk_campaign *c, const char *const *ids,
                                                size_t n, uint32_t *out_stage);

/* Parses "1%,10%,50%,100%" (percent with up to two decimals, strictly
 * increasing, last 100%) into c->stage_bp/stage_count. UPK_E_FIELD_RANGE. */
UPK_MUST_CHECK upk_err upk_engine_parse_stages(const char *s, upk_campaign *c);

/* Parses a duration "30", "30s", "10m", "2h", "1d" into seconds. */
UPK_MUST_CHECK upk_err upk_engine_parse_duration(const char *s, uint32_t *out_s);

/* Parses "5%" or "0.5%" into basis points. */
UPK_MUST_CHECK upk_err upk_engine_parse_percent(const char *s, uint32_t *out_bp);

/* Parses "200/min", "10/s", "1000/h" or a bare number (per minute). */
UPK_MUST_CHECK upk_err upk_engine_parse_rate(const char *s, uint32_t *out_per_min);

/* Counts the devices of stage (or all stages when stage == UINT32_MAX). */
void upk_engine_count(const upk_cdev *devs, size_t n, uint32_t stage, upk_stage_counts *out);

const char *upk_camp_state_str(upk_camp_state s);
bool upk_camp_state_from_str(const char *s, upk_camp_state *out);
const char *upk_cdev_state_str(upk_cdev_state s);
bool upk_cdev_state_from_str(const char *s, upk_cdev_state *out);
bool upk_cdev_state_is_final(upk_cdev_state s);

#endif
