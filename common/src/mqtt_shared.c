/* Option defaults, backoff and string copies shared by both upk_mqtt
 * clients (see mqtt_shared.h). */
#include "mqtt_shared.h"

#include "upkeep/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void upk__mqtt_opts_normalize(upk_mqtt_opts *o)
{
    if (o->keepalive_s <= 0)
        o->keepalive_s = 30;
    if (o->keepalive_s > 65535)
        o->keepalive_s = 65535;
    if (o->reconnect_min_ms == 0)
        o->reconnect_min_ms = 1000;
    if (o->reconnect_max_ms == 0)
        o->reconnect_max_ms = 60000;
    if (o->reconnect_max_ms < o->reconnect_min_ms)
        o->reconnect_max_ms = o->reconnect_min_ms;
    if (o->max_inflight <= 0 || o->max_inflight > 65535)
        o->max_inflight = 64;
    if (o->max_buffered <= 0)
        o->max_buffered = 1024;
    if (o->refused_min_ms == 0)
        o->refused_min_ms = 60000;
    if (o->refused_max_ms == 0)
        o->refused_max_ms = 900000;
    if (o->refused_max_ms < o->refused_min_ms)
        o->refused_max_ms = o->refused_min_ms;
}

uint32_t upk__mqtt_backoff_next(uint32_t *backoff_ms, uint32_t max_ms)
{
    /* rand() is fine: this spreads load, it protects nothing. */
    uint32_t d = *backoff_ms, half = d / 2;
    uint32_t wait = half + (uint32_t)((unsigned)rand() % (half + 1));
    uint64_t doubled = (uint64_t)d * 2;
    *backoff_ms = doubled > max_ms ? max_ms : (uint32_t)doubled;
    return wait;
}

uint32_t upk__mqtt_backoff_refused(uint32_t *backoff_ms, const upk_mqtt_opts *o)
{
    if (*backoff_ms < o->refused_min_ms)
        *backoff_ms = o->refused_min_ms;
    return upk__mqtt_backoff_next(backoff_ms, o->refused_max_ms);
}

void upk__mqtt_log_refused(const char *broker, const char *username, const char *client_id,
                           int reason, uint32_t wait_ms)
{
    char next[64];
    int r = wait_ms > 0 ? snprintf(next, sizeof(next), "next attempt in %u s",
                                   (unsigned)((wait_ms + 999) / 1000))
                        : snprintf(next, sizeof(next), "not retrying");
    (void)r;            /* 64 bytes hold either text */
    if (wait_ms == 0) { /* the caller reports it and gives up */
        upk_debug("mqtt: login refused client=%s reason=0x%02x; not retrying", client_id,
                  (unsigned)reason);
        return;
    }
    upk_error("mqtt: login refused for '%s' by the broker at %s: wrong password, unknown "
              "account, or locked out after repeated failures (see the broker log); %s "
              "(client=%s reason=0x%02x error=AUTH_FAILED)",
              username != NULL ? username : "", broker, next, client_id, (unsigned)reason);
}

char *upk__mqtt_strdup(const char *s, bool *ok)
{
    if (s == NULL)
        return NULL;
    char *d = strdup(s);
    if (d == NULL)
        *ok = false;
    return d;
}

bool upk__mqtt_auth_arg_valid(const char *auth)
{
    if (auth == NULL)
        return true;
    size_t n = strnlen(auth, UPK_MQTT_AUTH_MAX + 1);
    if (n > UPK_MQTT_AUTH_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (auth[i] < 0x21 || auth[i] > 0x7e)
            return false;
    return true;
}

void upk__mqtt_auth_take(const void *v, size_t vn, char *out)
{
    if (out[0] != '\0' || vn == 0 || vn > UPK_MQTT_AUTH_MAX || memchr(v, '\0', vn) != NULL) {
        out[0] = '?';
        out[1] = '\0';
        return;
    }
    memcpy(out, v, vn);
    out[vn] = '\0';
}
