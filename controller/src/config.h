/* `upkeep serve` configuration: a JSON file (-c PATH). A bad file is refused
 * with the offending field named, so an operator knows what to fix.
 *   data_dir        (string, required) where upkeep.db and blobs/ live
 *   broker          (string, required) tcp://host:port or ssl://host:port
 *   username        (string) MQTT user of the controller role
 *   password_file   (string) file holding the MQTT password (first line)
 *   client_id       (string, default "upkeep-controller")
 *   topic_prefix    (string, default "upkeep/v1")
 *   release_keys    (array of PEM public key paths, required, >= 1)
 *   tick_ms         (integer 50..60000, default 1000)
 *   readonly_operators (array of operator ids that may only read)
 *   retention       (object) events_days, health_days: how long device events
 *                   and health data are kept (whole days, default 30, 0 =
 *                   forever); events_per_device: newest events kept per
 *                   device (default 100000, 0 = no cap); pruned in bounded
 *                   batches by upk_store_prune and upk_store_prune_device_events
 *   ca_file, cert_file, key_file (strings, TLS)
 *   link_secret_file (string) the controller's link secret (>= 16 bytes after
 *                   trailing CR/LF/space/tab are cut): every message to a
 *                   device is tagged with its link key and tags from devices
 *                   are checked (docs/security.md, link authentication)
 *   require_device_auth (bool, default false; needs link_secret_file) refuse
 *                   untagged state, events and chunk requests from every device
 *   desired_refresh_s (integer 60..2592000, default 21600) how often a
 *                   device's desired is re-issued with a new ctr and
 *                   fresh_until = now + 4 x this (with a link secret only)
 * Loaded on the main thread before the loop starts. */
#ifndef UPKEEP_CONTROLLER_CONFIG_H
#define UPKEEP_CONTROLLER_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"
#include "upkeep/err.h"
#include "upkeep/id.h"
#include "upkeep/key.h"
#include "upkeep/topic.h"

#define UPK_READONLY_MAX      64
#define UPK_LINK_SECRET_MAX   1024  /* bytes of a link secret file */
#define UPK_DESIRED_REFRESH_S 21600 /* default desired_refresh_s */

typedef struct upk_serve_config {
    char data_dir[UPK_PATH_MAX];
    char broker[512];
    char username[UPK_ID_MAX + 1];
    char password[256];
    char client_id[UPK_ID_MAX + 1];
    char prefix[UPK_TOPIC_PREFIX_MAX + 1];
    char ca_file[UPK_PATH_MAX], cert_file[UPK_PATH_MAX], key_file[UPK_PATH_MAX];
    uint32_t tick_ms;
    size_t readonly_count;
    char readonly[UPK_READONLY_MAX][UPK_ID_MAX + 1];
    uint32_t events_keep_days;  /* retention.events_days */
    uint32_t health_keep_days;  /* retention.health_days */
    uint64_t events_per_device; /* retention.events_per_device; 0 = no cap */
    upk_keyring *ring;          /* owned */
    /* Link authentication (issue 23); link_secret_len 0 = off. */
    uint8_t link_secret[UPK_LINK_SECRET_MAX];
    size_t link_secret_len;
    bool require_device_auth;
    uint32_t desired_refresh_s;
} upk_serve_config;

/* Parses the JSON text (len bytes; path files inside are read). On failure
 * writes "field: what is wrong" into why and returns UPK_E_CONFIG_INVALID
 * (or the read error). Release the config with upk_serve_config_cleanup. */
UPK_MUST_CHECK upk_err upk_serve_config_parse(const char *json, size_t len, upk_serve_config *out,
                                              char *why, size_t whycap);
UPK_MUST_CHECK upk_err upk_serve_config_load(const char *path, upk_serve_config *out, char *why,
                                             size_t whycap);
void upk_serve_config_cleanup(upk_serve_config *c);

#endif
