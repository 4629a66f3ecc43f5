/* Option defaults, backoff and string copies shared by both upk_mqtt
 * clients (see mqtt_shared.h). */
#include "mqtt_shared.h"

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
