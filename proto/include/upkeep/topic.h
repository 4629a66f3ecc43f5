/* The upkeep MQTT topic scheme: builders and a strict parser.
 *
 * Every topic is "<prefix>/<rest>" where prefix defaults to "upkeep/v1":
 *   dev/{d}/state  dev/{d}/online  dev/{d}/desired  dev/{d}/events
 *   dev/{d}/chunk/req  dev/{d}/chunk/data  dev/{d}/ack  ctl/req/{o}  ctl/resp/{o}
 *   broker/stats
 * {d} is a device id and {o} an operator id (see id.h). The parser accepts
 * exactly these shapes and returns the kind and id, so callers never split
 * topics themselves. Pure functions; any thread. */
#ifndef UPKEEP_TOPIC_H
#define UPKEEP_TOPIC_H

#include <stdbool.h>
#include <stddef.h>

#include "upkeep/err.h"
#include "upkeep/id.h"

#define UPK_TOPIC_PREFIX_DEFAULT "upkeep/v1"
#define UPK_TOPIC_PREFIX_MAX     128 /* bytes */
#define UPK_TOPIC_MAX            256 /* bytes of any upkeep topic, without NUL */

typedef enum upk_topic_kind {
    UPK_TOPIC_DEV_STATE,
    UPK_TOPIC_DEV_ONLINE,
    UPK_TOPIC_DEV_DESIRED,
    UPK_TOPIC_DEV_EVENTS,
    UPK_TOPIC_DEV_CHUNK_REQ,
    UPK_TOPIC_DEV_CHUNK_DATA,
    UPK_TOPIC_DEV_ACK, /* controller -> device: highest event seq stored */
    UPK_TOPIC_CTL_REQ,
    UPK_TOPIC_CTL_RESP,
    UPK_TOPIC_BROKER_STATS,
    UPK_TOPIC__COUNT
} upk_topic_kind;

typedef struct upk_topic {
    upk_topic_kind kind;
    char id[UPK_ID_MAX + 1]; /* device or operator id; "" for broker/stats */
} upk_topic;

/* True when prefix is usable: 1..UPK_TOPIC_PREFIX_MAX bytes, no '+', '#',
 * NUL, empty level, leading or trailing '/'. */
bool upk_topic_prefix_valid(const char *prefix);

/* Writes the topic of kind for id (NULL for UPK_TOPIC_BROKER_STATS) under
 * prefix into buf (cap bytes, NUL-terminated). Returns UPK_E_INVALID_ARG for a
 * bad prefix or kind, UPK_E_ID_INVALID for a bad id, UPK_E_BUFFER_TOO_SMALL
 * when it does not fit; buf is unspecified on failure. */
UPK_MUST_CHECK upk_err upk_topic_build(char *buf, size_t cap, const char *prefix,
                                       upk_topic_kind kind, const char *id);

/* Parses the len bytes of topic (need not be NUL-terminated) under prefix.
 * On success fills *out. Returns UPK_E_TOPIC_INVALID for anything outside the
 * scheme (wrong prefix, unknown kind, extra or missing levels, wildcards) and
 * UPK_E_ID_INVALID when the shape is right but the id is not; *out is
 * untouched on failure. */
UPK_MUST_CHECK upk_err upk_topic_parse(const char *topic, size_t len, const char *prefix,
                                       upk_topic *out);

/* upk_topic_parse for the rlen bytes of a topic after its "<prefix>/", for
 * hot paths (the broker plugin checks every message) that hold a validated
 * prefix and have matched it themselves. Same results and errors. */
UPK_MUST_CHECK upk_err upk_topic_parse_rest(const char *rest, size_t rlen, upk_topic *out);

/* Short name of a kind ("state", "chunk/req", "ctl/req", ...); static. For
 * the device kinds it is also the topic's tail after "dev/{d}/". */
const char *upk_topic_kind_str(upk_topic_kind kind);

/* True for the kinds that live under dev/{d}/. */
bool upk_topic_kind_is_device(upk_topic_kind kind);

#endif
