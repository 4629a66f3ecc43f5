/* Update-capability label of one device: whether it can receive security
 * updates, how, signed or not, rollback or not, until when, last patched when.
 * Pure: built from the controller's device row (JSON, as the
 * "device.capability" operator command returns it) and a time; rendered as
 * text, JSON or a self-contained HTML card. No I/O but the given FILE; any
 * thread; no shared state. See docs/update-capability.md. */
#ifndef UPKEEP_CONTROLLER_LABEL_H
#define UPKEEP_CONTROLLER_LABEL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "upkeep/err.h"
#include "upkeep/id.h"
#include "upkeep/manifest.h"

struct cJSON;

#define UPK_LABEL_NEAR_DAYS 90 /* "ends soon" threshold */

typedef enum upk_label_support {
    UPK_LABEL_SUPPORTED, /* end of security support stated and in the future */
    UPK_LABEL_ENDING,    /* ... within UPK_LABEL_NEAR_DAYS */
    UPK_LABEL_ENDED,     /* end of security support is past */
    UPK_LABEL_UNSTATED,  /* no end date known */
} upk_label_support;

typedef struct upk_label {
    char device[UPK_ID_MAX + 1];
    char hw[UPK_ID_MAX + 1];
    char release[UPK_ID_MAX + 1];
    char version[UPK_VERSION_STR_MAX + 1];
    bool reported;         /* the device has reported its state at least once */
    bool automatic;        /* applies updates without a person */
    bool signed_only;      /* installs signed releases only */
    bool rollback;         /* has a way back */
    bool delta;            /* can apply delta releases */
    int64_t support_until; /* epoch s; 0 = not stated */
    /* From a signed release manifest: only when the controller holds the
     * manifest of the release the device reports (name, version, its hw)
     * and that manifest's support.security_until equals support_until. */
    bool support_signed;
    bool support_claimed; /* the device says "signed" but that does not hold */
    int64_t last_patched; /* epoch s; 0 = never */
    /* From the signed "support" object of the installed release, when any. */
    char delivery[UPK_ID_MAX + 1]; /* "automatic" / "user-approved"; "" */
    char notice[UPK_TEXT_MAX + 1];
    char contact[UPK_TEXT_MAX + 1];
    int64_t now; /* epoch s the label was made */
    upk_label_support support;
} upk_label;

/* Builds *out from a device row: id, hw, release, version, state_ts,
 * cap_automatic, cap_signed, cap_rollback, cap_delta, support_until,
 * support_signed, last_patched (numbers; absent = 0) and "manifest" (the
 * signed manifest JSON text the controller holds for the release name and
 * version the device reports, or null). The device's support_signed is a
 * claim: it becomes support_signed only when that manifest lists the
 * device's hw and states the same end of support (else support_claimed). UPK_E_FIELD_MISSING
 * without an id; UPK_E_FIELD_TYPE on a wrong type. */
UPK_MUST_CHECK upk_err upk_label_build(const struct cJSON *row, int64_t now_s, upk_label *out);

/* "yes", "ending", "no", "unknown": can it receive security updates now. */
const char *upk_label_support_str(upk_label_support s);

/* A new JSON object with every element (caller frees); NULL on no memory. */
struct cJSON *upk_label_json(const upk_label *l);

/* Human text, one element per line. UPK_E_IO on a write error. */
UPK_MUST_CHECK upk_err upk_label_text(const upk_label *l, FILE *out);

/* A complete HTML document: one card, inline CSS, no external resources,
 * every string escaped. UPK_E_IO on a write error. */
UPK_MUST_CHECK upk_err upk_label_html(const upk_label *l, FILE *out);

#endif
