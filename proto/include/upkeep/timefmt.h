/* Strict RFC 3339 UTC timestamps ("2026-11-27T03:19:29Z"), the only time text
 * form on upkeep's wire. Pure functions; any thread. */
#ifndef UPKEEP_TIMEFMT_H
#define UPKEEP_TIMEFMT_H

#include <stddef.h>
#include <stdint.h>

#include "upkeep/err.h"

#define UPK_TIME_STR_LEN 20 /* "YYYY-MM-DDTHH:MM:SSZ" without NUL */

/* Parses exactly "YYYY-MM-DDTHH:MM:SSZ" (also a bare "YYYY-MM-DD", meaning
 * 00:00:00Z) into seconds since the epoch. Returns UPK_E_FIELD_RANGE for any
 * other form or an impossible date; *out untouched on failure. */
UPK_MUST_CHECK upk_err upk_time_parse(const char *s, int64_t *out);

/* Formats t as "YYYY-MM-DDTHH:MM:SSZ" into buf (cap >= UPK_TIME_STR_LEN+1). */
UPK_MUST_CHECK upk_err upk_time_format(int64_t t, char *buf, size_t cap);

#endif
