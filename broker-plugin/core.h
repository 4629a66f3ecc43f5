/* Internal header of the upkeep broker plugin's decision core: everything the
 * plugin decides (config, accounts, $7$ password check, device keys, lockout,
 * ACL by role, token buckets, stats) as plain C that unit tests call without
 * Mosquitto. plugin.c is the only file that talks to the broker.
 *
 * Threads: Mosquitto 2.0 runs plugin callbacks on its one main thread, so
 * nothing here locks; every structure belongs to the plugin state that the
 * broker hands back as userdata. Nothing here prints; errors come back as
 * upk_err plus a message in a caller-supplied buffer. */
#ifndef UPKEEP_BROKER_CORE_H
#define UPKEEP_BROKER_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "upkeep/devkey.h"
#include "upkeep/err.h"
#include "upkeep/id.h"
#include "upkeep/topic.h"

/* ---- limits --------------------------------------------------------------- */
#define UPK_BP_USERNAME_MAX      128                   /* bytes of an account name */
#define UPK_BP_PASSWORD_MAX      1024                  /* bytes of a password we will look at */
#define UPK_BP_PATH_MAX          4096                  /* bytes of a file name in the config */
#define UPK_BP_CONFIG_MAX        1048576               /* bytes of the JSON config file */
#define UPK_BP_PASSWD_MAX        (64u * 1024u * 1024u) /* bytes of the password file */
#define UPK_BP_SECRET_MAX        1024                  /* bytes of the fleet secret */
#define UPK_BP_SALT_MAX          64                    /* bytes of a $7$ salt */
#define UPK_BP_PBKDF2_ITER_MAX   10000000u
#define UPK_BP_FILTER_LEVELS_MAX 64 /* levels of a subscription filter we judge */
#define UPK_BP_ERRMSG_MAX        512
#define UPK_BP_DEV_TAIL_MAX      15 /* bytes of a device topic's tail ("chunk/data") */

/* ---- roles ---------------------------------------------------------------- */
typedef enum upk_bp_role {
    UPK_BP_ROLE_DEVICE,
    UPK_BP_ROLE_CONTROLLER,
    UPK_BP_ROLE_OPERATOR,
    UPK_BP_ROLE_ADMIN,
    UPK_BP_ROLE__COUNT
} upk_bp_role;

/* "device", "controller", "operator", "admin"; static; "unknown" otherwise. */
const char *upk__bp_role_str(upk_bp_role role);
/* Parses a role name; false (out untouched) for anything else. */
bool upk__bp_role_parse(const char *s, upk_bp_role *out);

/* ---- string-keyed hash map ------------------------------------------------ */
/* Chained hash table with FNV-1a, doubling when the load passes 1. Keys are
 * copied; values are owned by the caller unless a free function is given to
 * the calls that drop entries. */
typedef struct upk_bp_map_entry {
    struct upk_bp_map_entry *next;
    uint64_t hash;
    void *value;
    char key[]; /* NUL-terminated copy */
} upk_bp_map_entry;

typedef struct upk_bp_map {
    upk_bp_map_entry **buckets;
    size_t nbuckets; /* power of two */
    size_t count;
} upk_bp_map;

typedef void (*upk_bp_free_fn)(void *value);

UPK_MUST_CHECK upk_err upk__bp_map_init(upk_bp_map *map, size_t nbuckets);
/* Frees every entry (values with free_value when not NULL) and the table. */
void upk__bp_map_cleanup(upk_bp_map *map, upk_bp_free_fn free_value);
/* The value stored under key, or NULL. */
void *upk__bp_map_get(const upk_bp_map *map, const char *key);
/* Stores value under key; UPK_E_EXISTS when key is present (map unchanged). */
UPK_MUST_CHECK upk_err upk__bp_map_put(upk_bp_map *map, const char *key, void *value);
/* Removes key and returns its value (NULL when absent); the caller frees it. */
void *upk__bp_map_remove(upk_bp_map *map, const char *key);
/* Removes every entry for which drop(key, value, ctx) is true, freeing the
 * value with free_value. Returns how many were removed. */
size_t upk__bp_map_prune(upk_bp_map *map, bool (*drop)(const char *, void *, void *), void *ctx,
                         upk_bp_free_fn free_value);

/* ---- mosquitto_passwd $7$ hashes ------------------------------------------ */
typedef struct upk_bp_pwhash {
    uint32_t iterations;
    uint8_t salt[UPK_BP_SALT_MAX];
    size_t salt_len;
    uint8_t hash[64]; /* PBKDF2-HMAC-SHA512 output */
} upk_bp_pwhash;

/* Parses one "user:$7$iter$salt_b64$hash_b64" line (len bytes, no newline).
 * Writes the user name into user (cap bytes). UPK_E_FIELD_RANGE for a hash
 * that is not $7$ or is malformed, UPK_E_FIELD_TOO_LONG for a long name. */
UPK_MUST_CHECK upk_err upk__bp_passwd_parse_line(const char *line, size_t len, char *user,
                                                 size_t cap, upk_bp_pwhash *out);
/* True when password matches h (constant-time compare of the derived key). */
bool upk__bp_passwd_verify(const upk_bp_pwhash *h, const char *password, size_t password_len);

/* ---- configuration -------------------------------------------------------- */
typedef struct upk_bp_limits {
    double msgs_per_s;         /* 0 = unlimited */
    double burst_msgs;         /* bucket size in messages */
    double bytes_per_s;        /* 0 = unlimited */
    double burst_bytes;        /* bucket size in bytes */
    uint32_t max_payload;      /* bytes; 0 = broker's own limit only */
    uint32_t kick_after_drops; /* drops within flood_window_s that kick; 0 = never */
    uint32_t flood_window_s;
    uint32_t hold_off_s; /* refusal period after a kick */
} upk_bp_limits;

typedef struct upk_bp_lockout_cfg {
    uint32_t max_failures_per_username; /* 0 disables this key kind */
    uint32_t max_failures_per_address;
    uint32_t window_s;  /* failures older than this are forgotten */
    uint32_t lockout_s; /* how long a locked key is refused */
    size_t max_entries; /* bound of the tracking table */
} upk_bp_lockout_cfg;

typedef struct upk_bp_account {
    upk_bp_role role;
    upk_bp_pwhash pw;
} upk_bp_account;

/* One topic shape as levels, with the id level marked (see acl.c). */
typedef struct upk_bp_pattern {
    size_t nlevels;
    size_t id_level; /* index of the id level; == nlevels when none */
    char levels[UPK_BP_FILTER_LEVELS_MAX][UPK_TOPIC_PREFIX_MAX + 1];
} upk_bp_pattern;

typedef struct upk_bp_config {
    char prefix[UPK_TOPIC_PREFIX_MAX + 1];
    upk_bp_map accounts; /* username -> upk_bp_account* */
    uint8_t fleet_secret[UPK_BP_SECRET_MAX];
    size_t fleet_secret_len; /* 0 = no derived device keys */
    upk_bp_limits limits[UPK_BP_ROLE__COUNT];
    upk_bp_lockout_cfg lockout;
    uint32_t stats_interval_s; /* 0 = never publish */
    upk_bp_pattern *patterns;  /* UPK_TOPIC__COUNT entries, built at load */
    /* Built with patterns by upk__bp_acl_prepare: the prefix's length, the
     * device kinds by the length of their tails ("state", "chunk/req", ...),
     * and the role table as bitmasks of kinds: acl_mask[role][access][scope]
     * (access READ or WRITE, scope 0 = the client's own id, 1 = any id). */
    size_t prefix_len;
    /* dev_tail_kind[len][i]: the device kinds whose tail is len bytes long
     * (at most two share a length), UPK_TOPIC__COUNT for none. */
    uint8_t dev_tail_kind[UPK_BP_DEV_TAIL_MAX + 1][2];
    uint32_t acl_mask[UPK_BP_ROLE__COUNT][2][2];
    /* Certificate logins (a listener with use_identity_as_username): the
     * certificate's CN is the username. cert_accounts maps a CN to a role
     * (heap upk_bp_role); with cert_devices, any other CN that is a valid
     * device id is that device. */
    upk_bp_map cert_accounts;
    bool cert_devices;
    bool password_logins; /* false: every BASIC_AUTH (password) login is refused */
    /* Device credential epochs (epochs.c): device id -> minimum epoch of its
     * derived password (private entries); unlisted devices have minimum 0.
     * Loaded from epochs_path ("" = no table) at start, then again by the
     * plugin when the file changes (checked every epochs_check_s seconds) or
     * the broker reloads (SIGHUP). */
    upk_bp_map device_min_epoch;
    char epochs_path[UPK_BP_PATH_MAX];
    uint32_t epochs_check_s;
} upk_bp_config;

/* Defaults for everything, no accounts, no fleet secret. */
UPK_MUST_CHECK upk_err upk__bp_config_init(upk_bp_config *cfg);
/* Parses the JSON text (len bytes) into cfg (initialised with
 * upk__bp_config_init). Relative paths are taken from base_dir. On failure
 * returns UPK_E_CONFIG_INVALID (or NOMEM/IO) and writes a message naming the
 * field into err (errcap bytes). */
UPK_MUST_CHECK upk_err upk__bp_config_parse(upk_bp_config *cfg, const char *json, size_t len,
                                            const char *base_dir, char *err, size_t errcap);
/* Reads and parses the file at path; as upk__bp_config_parse. */
UPK_MUST_CHECK upk_err upk__bp_config_load(upk_bp_config *cfg, const char *path, char *err,
                                           size_t errcap);
void upk__bp_config_cleanup(upk_bp_config *cfg);

/* Loads a mosquitto_passwd file into cfg->accounts, giving each the role from
 * roles (username -> role name as parsed JSON, see config.c). Used by
 * config.c; exposed for tests. */
UPK_MUST_CHECK upk_err upk__bp_passwd_load(upk_bp_map *accounts, const char *text, size_t len,
                                           char *err, size_t errcap);

/* Reads a fleet secret file: its bytes with trailing CR/LF/space/tab removed;
 * at least UPK_FLEET_SECRET_MIN bytes remain. */
UPK_MUST_CHECK upk_err upk__bp_secret_load(const char *path, uint8_t *out, size_t cap,
                                           size_t *outlen, char *err, size_t errcap);

/* ---- device credential epochs (epochs.c) ---------------------------------- */
#define UPK_BP_EPOCHS_FILE_MAX (64u * 1024u * 1024u) /* bytes of the epochs file */
#define UPK_BP_EPOCHS_LINE_MAX 256                   /* bytes of one of its lines */
#define UPK_BP_EPOCHS_CHECK_S  10                    /* default seconds between checks */

/* Parses the text of an epochs file (len bytes): lines "DEVICE_ID MIN_EPOCH"
 * separated by blanks, '#' comments, blank lines; the id a valid device id
 * that is no account of accounts (may be NULL), listed once; the epoch
 * 0..UPK_DEVKEY_EPOCH_MAX without leading zeros. Adds the entries to out (an
 * initialised map, values private to epochs.c, freed with free). On failure
 * UPK_E_CONFIG_INVALID with "line N: ..." in err; out may then hold some
 * entries (the caller drops it). */
UPK_MUST_CHECK upk_err upk__bp_epochs_parse(upk_bp_map *out, const upk_bp_map *accounts,
                                            const char *text, size_t len, char *err, size_t errcap);
/* Reads and parses the file at path and, when all of it is valid, replaces
 * cfg->device_min_epoch with it. On any failure cfg is unchanged and err
 * names the file and the problem (UPK_E_CONFIG_INVALID, or UPK_E_NOMEM). */
UPK_MUST_CHECK upk_err upk__bp_epochs_load(upk_bp_config *cfg, const char *path, char *err,
                                           size_t errcap);
/* The minimum epoch of device id: its entry, or 0 when unlisted. */
uint32_t upk__bp_epochs_min(const upk_bp_config *cfg, const char *id);
/* Devices listed in the table in use. */
size_t upk__bp_epochs_count(const upk_bp_config *cfg);

struct upk_bp_clients;
struct upk_bp_client;
/* After the table changed: marks refused every connected client that logged
 * in with a derived device password whose epoch is now below its device's
 * minimum (so every later check denies it) and calls revoked(record, ctx)
 * for each (may be NULL), e.g. to disconnect it. Returns how many. */
size_t upk__bp_epochs_revoke(struct upk_bp_clients *t, const upk_bp_config *cfg,
                             void (*revoked)(struct upk_bp_client *r, void *ctx), void *ctx);

/* ---- lockout and hold-off table ------------------------------------------- */
typedef enum upk_bp_lock_kind {
    UPK_BP_LOCK_USERNAME = 'u',
    UPK_BP_LOCK_ADDRESS = 'a',
    UPK_BP_LOCK_HOLDOFF = 'h' /* flooding client held off, keyed by username */
} upk_bp_lock_kind;

typedef struct upk_bp_lockout {
    upk_bp_lockout_cfg cfg;
    upk_bp_map entries; /* "<kind>:<key>" -> struct lock_entry */
} upk_bp_lockout;

UPK_MUST_CHECK upk_err upk__bp_lockout_init(upk_bp_lockout *lo, const upk_bp_lockout_cfg *cfg);
void upk__bp_lockout_cleanup(upk_bp_lockout *lo);
/* True when key of kind is refused at time now (seconds, monotonic). */
bool upk__bp_lockout_is_locked(upk_bp_lockout *lo, upk_bp_lock_kind kind, const char *key,
                               double now);
/* Records a failed login; true when this failure starts a lockout. */
bool upk__bp_lockout_fail(upk_bp_lockout *lo, upk_bp_lock_kind kind, const char *key, double now);
/* Forgets the failures of key (after a good login). */
void upk__bp_lockout_forget(upk_bp_lockout *lo, upk_bp_lock_kind kind, const char *key);
/* Refuses key of kind until now + seconds. */
void upk__bp_lockout_hold(upk_bp_lockout *lo, upk_bp_lock_kind kind, const char *key, double now,
                          double seconds);
/* Drops expired entries; returns how many. */
size_t upk__bp_lockout_prune(upk_bp_lockout *lo, double now);
size_t upk__bp_lockout_count(const upk_bp_lockout *lo);

/* ---- authentication ------------------------------------------------------- */
typedef struct upk_bp_identity {
    upk_bp_role role;
    char name[UPK_BP_USERNAME_MAX + 1];
    /* A device that logged in with a password derived from the fleet secret:
     * derived is true and epoch is that password's credential epoch (so a
     * raised minimum can disconnect it). false/0 for every other login. */
    bool derived;
    uint32_t epoch;
} upk_bp_identity;

/* Decides a login. address may be NULL. Updates the lockout table. Returns
 * UPK_OK and fills *who, or UPK_E_AUTH_FAILED / UPK_E_LOCKED_OUT with a
 * one-line reason for the log in why (static string). */
UPK_MUST_CHECK upk_err upk__bp_auth_check(const upk_bp_config *cfg, upk_bp_lockout *lo,
                                          const char *username, const char *password,
                                          size_t password_len, const char *client_id,
                                          const char *address, double now, upk_bp_identity *who,
                                          const char **why);

/* Role of an already authenticated username (accounts first, then a valid
 * device id when a fleet secret is set). False when it has none. */
bool upk__bp_identity_of(const upk_bp_config *cfg, const char *username, upk_bp_identity *who);

/* Role of a certificate identity (the CN that Mosquitto made the username):
 * certificate_identities.accounts first, then (with devices enabled) a valid
 * device id that is no password account. False for anything else. */
bool upk__bp_cert_identity_of(const upk_bp_config *cfg, const char *cn, upk_bp_identity *who);

/* True when s is non-empty and holds no '+', '#', '/' or control bytes. */
bool upk__bp_name_safe(const char *s);

/* ---- authorization -------------------------------------------------------- */
typedef enum upk_bp_access {
    UPK_BP_ACCESS_READ,      /* delivery of a concrete topic to the client */
    UPK_BP_ACCESS_WRITE,     /* publish of a concrete topic by the client */
    UPK_BP_ACCESS_SUBSCRIBE, /* a subscription filter, wildcards allowed */
} upk_bp_access;

/* Builds cfg->patterns from cfg->prefix (called by config parsing). */
UPK_MUST_CHECK upk_err upk__bp_acl_prepare(upk_bp_config *cfg);
/* True when who may do access on topic (a filter for SUBSCRIBE). Cost is
 * bounded by the topic length, never by the number of devices. */
bool upk__bp_acl_allows(const upk_bp_config *cfg, const upk_bp_identity *who, upk_bp_access access,
                        const char *topic);

/* ---- token buckets and per-client rate state ------------------------------ */
typedef struct upk_bp_bucket {
    double tokens;
    double rate;  /* tokens per second; 0 = unlimited */
    double burst; /* capacity */
    double last;  /* time of the last refill, seconds */
} upk_bp_bucket;

/* Starts full at time now. */
void upk__bp_bucket_init(upk_bp_bucket *b, double rate, double burst, double now);
/* Takes n tokens if available (refilling for the time since last); true when
 * taken. An unlimited bucket always succeeds. */
bool upk__bp_bucket_take(upk_bp_bucket *b, double n, double now);

typedef enum upk_bp_rate_verdict {
    UPK_BP_RATE_PASS,
    UPK_BP_RATE_DROP,      /* over messages/s or bytes/s */
    UPK_BP_RATE_TOO_LARGE, /* payload above max_payload */
    UPK_BP_RATE_KICK       /* dropped, and the client should be disconnected */
} upk_bp_rate_verdict;

typedef struct upk_bp_rate {
    upk_bp_bucket msgs;
    upk_bp_bucket bytes;
    uint32_t drops;      /* within the current flood window */
    double window_start; /* start of the flood window */
    bool kicked;         /* a KICK verdict was already given */
} upk_bp_rate;

void upk__bp_rate_init(upk_bp_rate *r, const upk_bp_limits *l, double now);
/* Judges one publish of payload_len bytes. */
upk_bp_rate_verdict upk__bp_rate_check(upk_bp_rate *r, const upk_bp_limits *l, size_t payload_len,
                                       double now);

/* ---- connected clients ---------------------------------------------------- */
/* One record per connected client id: its identity, the "role:name" value
 * stamped on its messages (built once, at login), its rate state. conn is
 * the broker's opaque connection pointer, compared and hashed, never read.
 * Records live in a map by client id (disconnects, session takeovers) and in
 * a direct-mapped cache by conn pointer (every message looks its sender and
 * each subscriber up, so the cache spares them the hash of the id). A cache
 * hit is accepted only when the record is bound to that conn AND carries the
 * same client id and username, so a pointer that the broker reuses for
 * another client never finds the earlier client's record. */
#define UPK_BP_CLIENT_CACHE_BITS  12
#define UPK_BP_CLIENT_CACHE_SLOTS (1u << UPK_BP_CLIENT_CACHE_BITS)
#define UPK_BP_SENDER_MAX         (UPK_BP_USERNAME_MAX + 16)
#define UPK_BP_WRITE_MEMO_MAX     96 /* bytes of a remembered topic */

typedef struct upk_bp_client {
    const void *conn; /* the connection this record is bound to */
    upk_bp_identity who;
    bool refused; /* a refused certificate login: deny everything */
    upk_bp_rate rate;
    size_t sender_len;
    char sender[UPK_BP_SENDER_MAX]; /* "role:name" */
    /* The last topic this identity was allowed to publish to ("" = none):
     * a device publishes to the same few topics again and again, and the
     * verdict depends only on the identity and the topic. Reset by bind. */
    char write_ok[UPK_BP_WRITE_MEMO_MAX + 1];
    uint64_t write_memo_hits; /* for tests and profiling */
    char id[];                /* the client id (NUL-terminated) */
} upk_bp_client;

typedef struct upk_bp_clients {
    upk_bp_map by_id; /* client id -> upk_bp_client* (owned) */
    /* cache[slot(conn)] is NULL or a record r with slot(r->conn) == that
     * slot; binding a record to another conn and freeing it clear its slot. */
    upk_bp_client *cache[UPK_BP_CLIENT_CACHE_SLOTS];
    uint64_t cache_hits, cache_misses; /* for tests and profiling */
} upk_bp_clients;

/* The table is large (the cache): allocate it, e.g. with calloc. */
UPK_MUST_CHECK upk_err upk__bp_clients_init(upk_bp_clients *t);
void upk__bp_clients_cleanup(upk_bp_clients *t);
/* The record bound to conn whose client id is id and whose identity's name
 * is user; NULL otherwise (never a record of another connection or name).
 * Refused records are returned too (the caller checks refused). */
upk_bp_client *upk__bp_clients_find(upk_bp_clients *t, const void *conn, const char *id,
                                    const char *user);
/* Binds the record of id to conn (creating it, or taking it over from an
 * earlier connection with the same id) with identity who, the stamp value
 * built from it and fresh rate state for lim. *out (may be NULL) gets the
 * record. UPK_E_INVALID_ARG for a NULL argument, UPK_E_NOMEM. */
UPK_MUST_CHECK upk_err upk__bp_clients_bind(upk_bp_clients *t, const void *conn, const char *id,
                                            const upk_bp_identity *who, bool refused,
                                            const upk_bp_limits *lim, double now,
                                            upk_bp_client **out);
/* Forgets the record of id when it is bound to conn (after a session
 * takeover it belongs to the new connection and stays). True when removed. */
bool upk__bp_clients_drop(upk_bp_clients *t, const void *conn, const char *id);
size_t upk__bp_clients_count(const upk_bp_clients *t);
/* upk__bp_acl_allows(cfg, &r->who, UPK_BP_ACCESS_WRITE, topic), answered
 * from r->write_ok when topic is the last topic allowed. */
bool upk__bp_client_may_write(const upk_bp_config *cfg, upk_bp_client *r, const char *topic);

/* ---- stats ---------------------------------------------------------------- */
typedef struct upk_bp_stats {
    uint64_t auth_ok;
    uint64_t auth_failed;
    uint64_t auth_locked_out;
    uint64_t denied_topic;
    uint64_t dropped_rate;
    uint64_t dropped_too_large;
    uint64_t kicked;
    uint64_t messages;
    uint64_t clients; /* currently tracked */
} upk_bp_stats;

/* Writes the counters as one JSON object into buf (cap bytes, NUL-terminated)
 * and its length into *len. UPK_E_BUFFER_TOO_SMALL when it does not fit. */
UPK_MUST_CHECK upk_err upk__bp_stats_json(const upk_bp_stats *s, char *buf, size_t cap,
                                          size_t *len);

#endif
