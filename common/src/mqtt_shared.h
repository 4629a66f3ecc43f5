/* What the two upk_mqtt clients (mqtt.c over Paho, mqtt_uv.c on libuv)
 * share so that they behave alike: option defaults, the reconnect backoff
 * with its jitter, and copying the options' strings. Internal to common/.
 *
 * Threads: pure functions, any thread. */
#ifndef UPKEEP_MQTT_SHARED_H
#define UPKEEP_MQTT_SHARED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "upkeep/mqtt.h"

/* Fills the documented defaults (mqtt.h) into o's zero fields and clamps
 * the rest: keepalive 30 s (at most 65535), reconnect 1 s doubling to 60 s
 * (the maximum never below the minimum), 64 in flight (at most 65535),
 * 1024 buffered. */
void upk__mqtt_opts_normalize(upk_mqtt_opts *o);

/* The wait before the next connect attempt, drawn from [d/2, d] ("equal
 * jitter") where d = *backoff_ms; then doubles *backoff_ms up to max_ms. */
uint32_t upk__mqtt_backoff_next(uint32_t *backoff_ms, uint32_t max_ms);

/* The wait before the next attempt after a refused login: *backoff_ms is
 * raised to at least o->refused_min_ms, the wait drawn from [d/2, d] as
 * above, then *backoff_ms doubles up to o->refused_max_ms. */
uint32_t upk__mqtt_backoff_refused(uint32_t *backoff_ms, const upk_mqtt_opts *o);

/* Logs one refused login at error level: account, broker, CONNACK reason
 * and the likely causes, and wait_ms, the delay before the next attempt.
 * With wait_ms 0 (no further attempt: the caller reports the refusal
 * itself) only a debug line. */
void upk__mqtt_log_refused(const char *broker, const char *username, const char *client_id,
                           int reason, uint32_t wait_ms);

/* strdup(s), NULL for NULL; clears *ok when out of memory. */
char *upk__mqtt_strdup(const char *s, bool *ok);

/* True when auth may go out as an "upkeep-auth" value: NULL or "" (none), or
 * 1..UPK_MQTT_AUTH_MAX printable ASCII bytes. */
bool upk__mqtt_auth_arg_valid(const char *auth);

/* Records one received "upkeep-auth" value (vn bytes at v) into out
 * (UPK_MQTT_AUTH_MAX + 1 bytes), which starts as "": the value itself the
 * first time, "?" (never a valid tag) for an oversized or NUL-bearing value
 * or a second occurrence, so both clients report the same thing. */
void upk__mqtt_auth_take(const void *v, size_t vn, char *out);

#endif
