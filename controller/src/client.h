/* The operator side of ctl/req/{o} -> ctl/resp/{o}: connection settings
 * (flags, then UPKEEP_* environment, then ~/.config/upkeep/cli.json), and a
 * blocking request/response call with a correlation id and a timeout over
 * upk_mqtt on a private libuv loop. For the `upkeep` CLI; one thread. */
#ifndef UPKEEP_CONTROLLER_CLIENT_H
#define UPKEEP_CONTROLLER_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

#include "upkeep/err.h"
#include "upkeep/id.h"
#include "upkeep/topic.h"

struct cJSON;

typedef struct upk_client_cfg {
    char broker[512];
    char user[UPK_ID_MAX + 1];
    char password_file[4096];
    char prefix[UPK_TOPIC_PREFIX_MAX + 1];
    char ca_file[4096];
    char cert_file[4096]; /* client certificate (a listener that wants one) */
    char key_file[4096];
    unsigned timeout_ms;
    /* cli.json's bytes_per_second and messages_per_second: the broker's
     * rate_limits.operator, for pacing release uploads; < 0 when unset. */
    double bytes_per_second;
    double messages_per_second;
    /* Why ~/.config/upkeep/cli.json was refused ("PATH: field: why"), or ""
     * (also when there is no such file). upk_client_connect refuses to run
     * with it set: a typo in the file is never silently ignored. */
    char file_error[640];
} upk_client_cfg;

/* getopt_long codes of the connection options every remote command takes. */
enum {
    UPK_CLIENT_OPT_BROKER = 1000,
    UPK_CLIENT_OPT_USER,
    UPK_CLIENT_OPT_PASSWORD_FILE,
    UPK_CLIENT_OPT_PREFIX,
    UPK_CLIENT_OPT_CA_FILE,
    UPK_CLIENT_OPT_TIMEOUT,
    UPK_CLIENT_OPT_CERT_FILE,
    UPK_CLIENT_OPT_KEY_FILE,
};

#define UPK_CLIENT_LONG_OPTS                                                      \
    {"broker", required_argument, NULL, UPK_CLIENT_OPT_BROKER},                   \
        {"user", required_argument, NULL, UPK_CLIENT_OPT_USER},                   \
        {"password-file", required_argument, NULL, UPK_CLIENT_OPT_PASSWORD_FILE}, \
        {"prefix", required_argument, NULL, UPK_CLIENT_OPT_PREFIX},               \
        {"ca-file", required_argument, NULL, UPK_CLIENT_OPT_CA_FILE},             \
        {"cert-file", required_argument, NULL, UPK_CLIENT_OPT_CERT_FILE},         \
        {"key-file", required_argument, NULL, UPK_CLIENT_OPT_KEY_FILE},           \
    {                                                                             \
        "timeout", required_argument, NULL, UPK_CLIENT_OPT_TIMEOUT                \
    }

#define UPK_CLIENT_HELP                                                                   \
    "connection (or UPKEEP_BROKER, UPKEEP_USER, UPKEEP_PASSWORD_FILE, UPKEEP_PREFIX,\n"   \
    "UPKEEP_CA_FILE, UPKEEP_CERT_FILE, UPKEEP_KEY_FILE, or ~/.config/upkeep/cli.json):\n" \
    "  --broker URL          tcp://host:1883 or ssl://host:8883\n"                        \
    "  --user NAME           your operator name\n"                                        \
    "  --password-file F     file holding your MQTT password\n"                           \
    "  --prefix P            topic prefix (default upkeep/v1)\n"                          \
    "  --ca-file F           CA for ssl:// brokers (required with ssl://)\n"              \
    "  --cert-file F         client certificate for ssl:// (its CN is your name)\n"       \
    "  --key-file F          private key of --cert-file\n"                                \
    "  --timeout SECONDS     reply timeout (default 15)\n"

/* Fills defaults, then the config file, then the environment. */
void upk_client_cfg_init(upk_client_cfg *cfg);
/* Applies one connection option; false when code is not one of them or the
 * value is unusable (message on stderr). */
bool upk_client_cfg_opt(upk_client_cfg *cfg, int code, const char *value);

typedef struct upk_client upk_client;

/* Connects and subscribes to ctl/resp/{user}. On failure why says what to
 * fix; returns UPK_E_CONFIG_INVALID (settings missing), UPK_E_CONN,
 * UPK_E_AUTH_FAILED or UPK_E_TIMEOUT. Close with upk_client_close. */
UPK_MUST_CHECK upk_err upk_client_connect(const upk_client_cfg *cfg, upk_client **out, char *why,
                                          size_t whycap);

/* Sends cmd with args (borrowed; NULL for {}) and waits for the reply. On
 * UPK_OK *data (may be NULL) is the reply's data, caller frees with
 * cJSON_Delete. Otherwise msg holds the controller's message or why it was
 * not reached (UPK_E_TIMEOUT, UPK_E_CONN). */
UPK_MUST_CHECK upk_err upk_client_call(upk_client *c, const char *cmd, const struct cJSON *args,
                                       struct cJSON **data, char *msg, size_t msgcap);
void upk_client_close(upk_client *c);

/* ---- pipelined requests, for uploads that keep several chunks in flight.
 * upk_client_send publishes a request without waiting; its reply (any
 * controller reply whose id is not the one upk_client_call waits for) goes
 * to on_reply, and the broker's verdict on the publish to on_sent, both
 * called on this thread from inside upk_client_poll or upk_client_call. */

#define UPK_CLIENT_SENDS_MAX 256 /* publishes awaiting the broker's PUBACK */

struct upk_ctl_resp;
/* resp (and its data) is borrowed for the call. */
typedef void (*upk_client_reply_fn)(const struct upk_ctl_resp *resp, void *ud);
/* err: UPK_OK when the broker took the publish, UPK_E_DENIED when it refused
 * it (the broker plugin's rate limit or max_payload_bytes: the only
 * refusals of ctl/req/{you}), UPK_E_CONN when the connection was lost. */
typedef void (*upk_client_sent_fn)(upk_err err, void *cb_data, void *ud);

void upk_client_on_reply(upk_client *c, upk_client_reply_fn on_reply, upk_client_sent_fn on_sent,
                         void *ud);
/* Publishes cmd with args (borrowed) under correlation id (an id). On
 * success on_sent is called once with cb_data (unless the client closes
 * first). UPK_E_BUSY when UPK_CLIENT_SENDS_MAX publishes are unanswered or
 * the MQTT buffer is full, UPK_E_CONN when not connected. */
UPK_MUST_CHECK upk_err upk_client_send(upk_client *c, const char *cmd, const struct cJSON *args,
                                       const char *id, void *cb_data);
/* Runs the client for at most ms, returning after the first event. */
void upk_client_poll(upk_client *c, unsigned ms);
bool upk_client_connected(const upk_client *c);
/* The operator name the client logged in as. */
const char *upk_client_user(const upk_client *c);

/* The exit status of a refused login (wrong password, unknown account,
 * locked out): distinct from 3 so that scripts never retry it (each retry
 * counts towards the broker's lockout). */
#define UPK_CLIENT_EXIT_REFUSED 4

/* Exit status for a client error: UPK_CLIENT_EXIT_REFUSED for a refused
 * login, 2 for settings to fix (UPK_E_CONFIG_INVALID: no broker or user, a
 * bad cli.json, an unreadable TLS file), 3 when the controller or broker was
 * not reached, else 1. */
int upk_client_exit_code(upk_err err);

#endif
