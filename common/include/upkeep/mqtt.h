/* An MQTT 5 client (Paho MQTTAsync) whose callbacks all run on one libuv
 * loop thread.
 *
 * Paho calls back on its own threads; this module copies what arrives into a
 * queue and wakes the loop with uv_async_send, so agent, controller and CLI
 * code only ever runs on the loop thread (STYLE.md rule 8). Reconnection is
 * done here, not by Paho: exponential backoff from reconnect_min_ms doubling
 * to reconnect_max_ms, each delay drawn uniformly from [d/2, d] ("equal
 * jitter") so that a broker restart does not bring a whole fleet back in the
 * same second. Many clients may share one loop (the simulator runs
 * thousands).
 *
 * Threads: every function must be called from the loop thread, except
 * nothing. Every callback runs on the loop thread. */
#ifndef UPKEEP_MQTT_H
#define UPKEEP_MQTT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "upkeep/err.h"

#define UPK_MQTT_SENDER_PROP "upkeep-sender"
#define UPK_MQTT_SENDER_MAX  128 /* bytes of an upkeep-sender value */
/* The link authentication tag (proto/include/upkeep/linkauth.h), carried as
 * one MQTT 5 user property; its value is 64 hex characters. */
#define UPK_MQTT_AUTH_PROP "upkeep-auth"
#define UPK_MQTT_AUTH_MAX  64 /* bytes of an upkeep-auth value */

typedef struct upk_mqtt upk_mqtt;

/* A received message; valid only during the on_message callback. */
typedef struct upk_mqtt_msg {
    const char *topic; /* NUL-terminated */
    size_t topic_len;
    const uint8_t *payload; /* may be NULL when len == 0 */
    size_t len;
    int qos;
    bool retained;
    /* The broker plugin's "upkeep-sender" user property ("role:name"), or ""
     * when absent. The only trustworthy statement of who published. */
    const char *sender;
    /* The "upkeep-auth" user property (a link tag), "" when absent, and "?"
     * (never a valid tag) when it is longer than UPK_MQTT_AUTH_MAX, holds a
     * NUL or appears more than once. Whether it is right is the receiver's
     * business (upk_link_verify). */
    const char *auth;
} upk_mqtt_msg;

typedef struct upk_mqtt_opts {
    const char *url;       /* tcp://127.0.0.1:1883 or ssl://host:8883; copied */
    const char *client_id; /* copied */
    const char *username;  /* NULL for none; copied */
    const char *password;  /* NULL for none; copied */

    /* TLS (ssl:// URLs only); NULL to leave unset. Copied. */
    const char *ca_file;   /* verify the broker against this CA */
    const char *cert_file; /* client certificate (PEM) */
    const char *key_file;  /* client private key (PEM) */

    /* Last will, published by the broker when the connection drops. */
    const char *will_topic; /* NULL for no will; copied */
    const void *will_payload;
    size_t will_len;
    int will_qos;
    bool will_retained;

    bool clean_start;          /* false: keep the session (subscriptions, QoS 1 queue) */
    uint32_t session_expiry_s; /* MQTT 5 session expiry when !clean_start */
    int keepalive_s;           /* 0 means 30 */
    uint32_t reconnect_min_ms; /* 0 means 1000 */
    uint32_t reconnect_max_ms; /* 0 means 60000 */
    int max_inflight;          /* QoS 1/2 messages in flight; 0 means 64 */
    int max_buffered;          /* messages Paho queues while sending; 0 means 1024 */

    /* A refused login (CONNACK reason >= 0x80 for a bad user name or
     * password, not authorized, banned: UPK_E_AUTH_FAILED) is not a network
     * failure, and retrying it fast would trip the broker plugin's lockout
     * (5 failures a minute by default) by ourselves. After a refusal the next
     * attempt waits refused_min_ms (0 means 60000) doubling to refused_max_ms
     * (0 means 900000), with the same equal jitter, so at most two attempts
     * fall in any minute; each refusal is logged once, at error level, naming
     * the account, the broker and the likely causes. With stop_on_refusal no
     * further attempt is made at all (for a command-line client, which
     * reports the refusal itself and exits); the client stays idle until
     * closed. */
    /* The largest MQTT packet this client accepts, in bytes (MQTT 5
     * Maximum Packet Size, sent in the CONNECT): the broker must not send
     * anything larger (Mosquitto drops such a message for this client and
     * delivers it to the others). mqtt_uv.c also refuses a larger packet
     * itself, from its header, without buffering it (the connection is
     * dropped). 0 means no limit announced (mqtt_uv.c still refuses more
     * than 64 MiB). */
    uint32_t max_packet;

    uint32_t refused_min_ms;
    uint32_t refused_max_ms;
    bool stop_on_refusal;

    /* After every successful (re)connect. Subscribe here. */
    void (*on_connect)(upk_mqtt *c, void *userdata);
    /* After a connection is lost or a connect attempt fails; reconnecting is
     * already scheduled. err is UPK_E_CONN or UPK_E_AUTH_FAILED. */
    void (*on_disconnect)(upk_mqtt *c, upk_err err, void *userdata);
    /* For every message received on a subscription. */
    void (*on_message)(upk_mqtt *c, const upk_mqtt_msg *msg, void *userdata);
    void *userdata;
} upk_mqtt_opts;

/* Creates a client on loop; nothing connects until upk_mqtt_start. Strings
 * in opts are copied. Caller closes with upk_mqtt_close. */
UPK_MUST_CHECK upk_err upk_mqtt_new(uv_loop_t *loop, const upk_mqtt_opts *opts, upk_mqtt **out);

/* Starts connecting; keeps reconnecting with backoff until closed. */
UPK_MUST_CHECK upk_err upk_mqtt_start(upk_mqtt *c);

/* Subscribes (no-local off, retain-as-published off). Returns UPK_E_CONN when
 * not connected: subscribe from on_connect. */
UPK_MUST_CHECK upk_err upk_mqtt_subscribe(upk_mqtt *c, const char *filter, int qos);

/* Called on the loop thread once a publish is done: err UPK_OK when QoS 0 was
 * handed to the socket or QoS 1 was acknowledged, else why it failed
 * (UPK_E_DENIED when the broker refused it with a reason code >= 0x80). */
typedef void (*upk_mqtt_done_cb)(upk_mqtt *c, upk_err err, void *cb_data);

/* Publishes len bytes (copied). done may be NULL. If this returns an error,
 * done is never called. Returns UPK_E_CONN when not connected, UPK_E_BUSY
 * when Paho's buffer is full. */
UPK_MUST_CHECK upk_err upk_mqtt_publish(upk_mqtt *c, const char *topic, const void *payload,
                                        size_t len, int qos, bool retain, upk_mqtt_done_cb done,
                                        void *cb_data);

/* upk_mqtt_publish with one "upkeep-auth" user property whose value is auth
 * (1..UPK_MQTT_AUTH_MAX printable ASCII bytes, copied); NULL or "" publishes
 * without one, exactly as upk_mqtt_publish. UPK_E_INVALID_ARG for a longer or
 * non-printable auth; otherwise the same results and callback rule. */
UPK_MUST_CHECK upk_err upk_mqtt_publish_auth(upk_mqtt *c, const char *topic, const void *payload,
                                             size_t len, int qos, bool retain, const char *auth,
                                             upk_mqtt_done_cb done, void *cb_data);

bool upk_mqtt_connected(const upk_mqtt *c);

/* Disconnects (the will is not sent) and frees c once Paho has let go;
 * closed (may be NULL) runs on the loop thread after that, and no other
 * callback of c runs after upk_mqtt_close returns. NULL is a no-op. */
void upk_mqtt_close(upk_mqtt *c, void (*closed)(void *userdata), void *userdata);

#endif
