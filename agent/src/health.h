/* Post-commit health reporting of the agent (bake window): the persisted bake
 * state (data_dir/bake.json: window end, agent restarts and device boots
 * since commit, last report time), boot detection by the kernel's boot id,
 * the report rate, the health hook runner and the parser of its "name value"
 * lines. Loop thread only; no shared state. */
#ifndef UPKEEP_AGENT_HEALTH_H
#define UPKEEP_AGENT_HEALTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "upkeep/err.h"
#include "upkeep/id.h"
#include "upkeep/manifest.h"
#include "upkeep/msg.h"

#define UPK__BAKE_FILE    "bake.json"
#define UPK__BOOT_ID_MAX  40
#define UPK__HOOK_OUT_MAX 4096 /* bytes of hook output read */
#define UPK__BAKE_MIN_GAP 10   /* seconds between reports, at least */

typedef struct upk__bake {
    bool active;
    int64_t until; /* epoch s: end of the window */
    char campaign[UPK_ID_MAX + 1];
    char release[UPK_ID_MAX + 1];
    char version[UPK_VERSION_STR_MAX + 1];
    uint32_t restarts; /* agent starts since commit */
    uint32_t boots;    /* device boots since commit */
    char boot_id[UPK__BOOT_ID_MAX + 1];
    int64_t last_report; /* epoch s; 0 = none yet */
    uint32_t reports;    /* sent so far */
} upk__bake;

/* Starts a window of bake_s seconds at now for the committed release; the
 * current boot is the commit's boot (not counted). bake_s 0 leaves b idle. */
void upk__bake_begin(upk__bake *b, uint32_t bake_s, int64_t now, const char *campaign,
                     const char *release, const char *version, const char *boot_id);

/* At agent start during a window: one more restart, and one more boot when
 * boot_id differs from the one recorded. Ends the window when it is over. */
void upk__bake_on_start(upk__bake *b, int64_t now, const char *boot_id);

/* True when a report is due at now: inside the window and at least
 * max(interval_s, UPK__BAKE_MIN_GAP) after the last one (bounded rate). */
bool upk__bake_due(const upk__bake *b, int64_t now, uint32_t interval_s);

/* Records a report sent at now; ends the window when now >= until. */
void upk__bake_sent(upk__bake *b, int64_t now);

UPK_MUST_CHECK upk_err upk__bake_save(const char *path, const upk__bake *b, bool do_sync);
/* Missing file: idle and UPK_OK; malformed: idle and UPK_E_STATE_CORRUPT. */
UPK_MUST_CHECK upk_err upk__bake_load(const char *path, upk__bake *b);

/* The kernel's boot id (/proc/sys/kernel/random/boot_id, or path when not
 * NULL, for tests). UPK_E_IO when unreadable; "" is never returned on OK. */
UPK_MUST_CHECK upk_err upk__boot_id(const char *path, char *buf, size_t cap);

/* Parses a health hook's output: lines "name value" (name an id, value a
 * finite number); blank lines and lines starting with '#' are skipped. Adds
 * up to 8 metrics to h (a repeated name keeps the last value). A bad line is
 * skipped and parsing goes on: returns UPK_E_FIELD_TYPE naming the first bad
 * line in why (h keeps every good one), UPK_E_FIELD_TOO_LONG when a 9th
 * distinct name was dropped (the first error wins). */
UPK_MUST_CHECK upk_err upk__health_parse(const char *out, size_t len, upk_health *h, char *why,
                                         size_t why_cap);

/* Seconds between health reports: in a bake window, a tenth of what is
 * left, at most interval_s; outside one, interval_s; never below
 * UPK__BAKE_MIN_GAP. */
uint32_t upk__health_gap(const upk__bake *b, int64_t now, uint32_t interval_s);

/* True when an idle (baseline) report is due: interval elapsed since last
 * (0 = never sent) and at least UPK__BAKE_MIN_GAP. */
bool upk__baseline_due(int64_t last, int64_t now, uint32_t interval_s);

/* ---- running the health hook: argv[0] an absolute path, stdin closed,
 * stderr to the agent's, stdout read up to UPK__HOOK_OUT_MAX bytes (the rest
 * is discarded and reported as truncated). The child leads its own process
 * group; at timeout_ms the whole group is killed. */
typedef struct upk__hook_result {
    int status;      /* exit status; -1 killed by a signal, -2 timed out */
    const char *out; /* stdout bytes; valid during the callback only */
    size_t len;
    bool truncated; /* more than UPK__HOOK_OUT_MAX bytes were printed */
} upk__hook_result;

typedef void (*upk__hook_done)(const upk__hook_result *r, void *cb_data);

/* Starts the hook; done runs exactly once on the loop thread, after every
 * handle is closed. When this returns an error, done never runs
 * (UPK_E_NOT_FOUND: no such executable). */
UPK_MUST_CHECK upk_err upk__hook_run(uv_loop_t *loop, char *const argv[], uint32_t timeout_ms,
                                     upk__hook_done done, void *cb_data);

#endif
