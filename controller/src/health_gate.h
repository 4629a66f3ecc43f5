/* Health gate of a campaign stage: after a stage's devices committed, for a
 * bake window they report health (restarts, boots, health-check result,
 * metrics). This pure function counts the unhealthy ones (rolled back, failed
 * a post-commit check, restarted more than a limit, not back online after
 * activation) against a budget and, optionally, compares each metric of
 * updated devices with the same metric of not-yet-updated devices of the same
 * hardware.
 *
 * The comparison is built so that a device that lies counts as one device
 * (docs/security.md): each device gives one value per metric (its own mean
 * over the window, or its latest idle value), each side is summarized by its
 * median, so one device moves a side's figure at most to the next honest
 * value; values outside the range a campaign declares are left out and
 * counted; and only the metrics the campaign names are compared (without
 * names: those at least half of the updated devices of that hardware report),
 * so junk metric names cost nothing. It does no I/O; upk_gate_eval allocates
 * one scratch array of n doubles and frees it before it returns. Any thread. */
#ifndef UPKEEP_CONTROLLER_HEALTH_GATE_H
#define UPKEEP_CONTROLLER_HEALTH_GATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "upkeep/err.h"
#include "upkeep/id.h"

#define UPK_GATE_METRICS_MAX 8   /* metrics per device, as in upk_health */
#define UPK_GATE_REASON_MAX  255 /* chars of a halt reason (= UPK_REASON_MAX) */
#define UPK_GATE_NAMED_MAX   8   /* metrics a campaign names (--gate-metric) */
#define UPK_GATE_SPEC_MAX    512 /* chars of a --gate-metric list */

/* A metric the campaign compares, with the range its values must lie in. */
typedef struct upk_gate_metric {
    char name[UPK_ID_MAX + 1];
    bool ranged; /* lo..hi declared */
    double lo, hi;
} upk_gate_metric;

typedef struct upk_gate_cfg {
    uint32_t bake_s;           /* health window after commit; 0 = gate off */
    uint32_t max_unhealthy_bp; /* unhealthy share allowed, basis points */
    uint32_t restart_limit;    /* more restarts (or boots) than this = unhealthy */
    bool compare_baseline;
    double baseline_factor; /* halt when updated mean > factor x baseline mean */
    uint32_t min_samples;   /* devices needed on each side to compare; >= 1 */
    /* The metrics compared (--gate-metric); none = every metric that at
     * least half of the updated devices of a hardware report. */
    size_t metric_count;
    upk_gate_metric metrics[UPK_GATE_NAMED_MAX];
} upk_gate_cfg;

/* One device's health over the window. */
typedef struct upk_gate_dev {
    char device[UPK_ID_MAX + 1];
    char hw[UPK_ID_MAX + 1];
    bool updated;      /* in a started stage (else a baseline candidate) */
    bool rolled_back;  /* rolled back or failed after activation */
    bool check_failed; /* a post-commit health check failed */
    bool offline;      /* not back online after activation within the timeout */
    uint32_t restarts; /* agent restarts since commit (max reported) */
    uint32_t boots;    /* boots since commit (max reported) */
    size_t metric_count;
    char metric_name[UPK_GATE_METRICS_MAX][UPK_ID_MAX + 1];
    double metric_value[UPK_GATE_METRICS_MAX]; /* mean over the window */
} upk_gate_dev;

typedef struct upk_gate_result {
    size_t updated;     /* devices judged */
    size_t unhealthy;   /* of those, unhealthy for any reason */
    size_t rolled_back; /* by cause (a device may count under several) */
    size_t check_failed;
    size_t restart_loop;
    size_t offline;
    bool halt;
    char reason[UPK_GATE_REASON_MAX + 1]; /* names the cause and the figures; "" */
    /* With compare_baseline: the compared metric with the highest ratio of
     * updated to baseline mean (metric "" when none could be compared). */
    char metric[UPK_ID_MAX + 1];
    char metric_hw[UPK_ID_MAX + 1];
    double metric_updated, metric_baseline; /* medians */
    size_t metric_nu, metric_nb;            /* devices on each side */
    size_t out_of_range;                    /* values outside a declared range, left out */
} upk_gate_result;

/* Defaults: bake off, max_unhealthy 0, restart_limit 3, factor 1.5, min 1. */
void upk_gate_cfg_init(upk_gate_cfg *cfg);

/* Parses a --gate-metric list into cfg->metrics: comma-separated names
 * (ids), each optionally with a range, "cpu_pct:0..100,rss_mb:0..4096".
 * UPK_E_ID_INVALID on a bad name, UPK_E_FIELD_RANGE on a bad range (lo > hi,
 * not finite), UPK_E_FIELD_TOO_LONG on more than UPK_GATE_NAMED_MAX names or
 * a list over UPK_GATE_SPEC_MAX; cfg is untouched on failure. "" = none. */
UPK_MUST_CHECK upk_err upk_gate_parse_metrics(const char *spec, upk_gate_cfg *cfg);
/* The canonical text of cfg->metrics (what upk_gate_parse_metrics reads). */
void upk_gate_format_metrics(const upk_gate_cfg *cfg, char *buf, size_t cap);

/* Judges n devices (updated ones and baseline ones mixed). Returns
 * UPK_E_INVALID_ARG on a bad cfg (factor < 1 or not finite, min_samples 0)
 * or a device with more than UPK_GATE_METRICS_MAX metrics, UPK_E_NOMEM when
 * the scratch array cannot be had. */
UPK_MUST_CHECK upk_err upk_gate_eval(const upk_gate_cfg *cfg, const upk_gate_dev *devs, size_t n,
                                     upk_gate_result *out);

/* One line for `campaign watch`: "bake 4m10s left: 2/40 unhealthy (1 restart
 * loop, 1 rolled back)", then with a compared metric "; cpu on rev-b 0.9
 * (3 updated) vs 0.2 (9 not updated)". remaining_s < 0 prints "bake done". */
void upk_gate_summary(const upk_gate_result *r, int64_t remaining_s, char *buf, size_t cap);

#endif
