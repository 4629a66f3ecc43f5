/* The plugin's counters as the JSON payload of upkeep/v1/broker/stats. */
#include "core.h"

#include <inttypes.h>
#include <stdio.h>

upk_err upk__bp_stats_json(const upk_bp_stats *s, char *buf, size_t cap, size_t *len)
{
    if (s == NULL || buf == NULL || len == NULL)
        return UPK_E_INVALID_ARG;
    int n = snprintf(buf, cap,
                     "{\"auth_ok\":%" PRIu64 ",\"auth_failed\":%" PRIu64
                     ",\"auth_locked_out\":%" PRIu64 ",\"denied_topic\":%" PRIu64
                     ",\"dropped_rate\":%" PRIu64 ",\"dropped_too_large\":%" PRIu64
                     ",\"kicked\":%" PRIu64 ",\"messages\":%" PRIu64 ",\"clients\":%" PRIu64 "}",
                     s->auth_ok, s->auth_failed, s->auth_locked_out, s->denied_topic,
                     s->dropped_rate, s->dropped_too_large, s->kicked, s->messages, s->clients);
    if (n < 0 || (size_t)n >= cap)
        return UPK_E_BUFFER_TOO_SMALL;
    *len = (size_t)n;
    return UPK_OK;
}
