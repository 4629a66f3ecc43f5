/* Reusable integration-test harness: a real mosquitto on a free 127.0.0.1
 * port, plus a synchronous MQTT 5 test client over Paho MQTTAsync.
 *
 * Usage (any suite; link the `upk_test_harness` static library):
 *
 *   char dir[UPK_H_PATH_MAX];
 *   upk_h_broker b;
 *   assert(upk_h_tmpdir(dir, sizeof(dir)) == 0);             // fresh temp dir
 *   upk_h_write_file(dir, "acl", "...");                     // any files it needs
 *   // extra mosquitto.conf lines; the harness adds "listener <port> 127.0.0.1"
 *   assert(upk_h_broker_start(&b, dir, "allow_anonymous true\n", 10.0) == 0);
 *   upk_h_client *c;
 *   int reason;
 *   assert(upk_h_client_connect(&c, b.port, "id", "user", "pass", &reason) == 0);
 *   upk_h_client_subscribe(c, "t/#", 1, &reason);           // reason = granted QoS or 0x80+
 *   upk_h_client_publish(c, "t/x", "hi", 2, 1, false, NULL, &reason); // waits for PUBACK
 *   upk_h_msg m;
 *   upk_h_client_wait_msg(c, 2.0, &m);                       // bounded wait, no sleeps
 *   upk_h_client_close(c);
 *   upk_h_broker_stop(&b);                                   // SIGTERM by pid, then SIGKILL
 *   upk_h_rmtree(dir);
 *
 * The port is found by binding port 0 and releasing it; a start that loses
 * the race retries on a new port. Readiness is polled with connect() under a
 * deadline. The broker's log is dir/mosquitto.log (printed by
 * upk_h_broker_dump_log on failure). Environment: UPK_MOSQUITTO overrides the
 * mosquitto binary (default: mosquitto on PATH, then /usr/sbin/mosquitto).
 *
 * Threads: a client's Paho callbacks run on Paho's threads; every function
 * here may be called from the test's main thread only.
 *
 * Timing: with other MQTTAsync clients of the same process connected, a new
 * connect can take 1-2 s (Paho adds the socket to its poll set only when the
 * current poll times out), so keep the number of sequential logins in a test
 * modest, and never let a time limit in the broker config (lockout, hold-off)
 * be shorter than a few seconds when a test must observe it. */
#ifndef UPKEEP_TEST_HARNESS_H
#define UPKEEP_TEST_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define UPK_H_PATH_MAX 512

typedef struct upk_h_broker {
    pid_t pid;
    int port;
    char dir[UPK_H_PATH_MAX];
    char conf[UPK_H_PATH_MAX + 32];
    char log[UPK_H_PATH_MAX + 32];
} upk_h_broker;

/* Monotonic seconds. */
double upk_h_now(void);
/* Creates a fresh directory under $TMPDIR (or /tmp); 0 on success. */
int upk_h_tmpdir(char *out, size_t cap);
/* Writes text to dir/name; 0 on success. */
int upk_h_write_file(const char *dir, const char *name, const char *text);
/* Removes dir and everything below it. */
void upk_h_rmtree(const char *dir);
/* A TCP port on 127.0.0.1 that was free a moment ago; -1 on failure. */
int upk_h_free_port(void);

/* Starts mosquitto with dir/mosquitto.conf = listener line + extra_conf and
 * waits (at most timeout_s) until it accepts connections. 0 on success; on
 * failure nothing is left running and -1 is returned. */
int upk_h_broker_start(upk_h_broker *b, const char *dir, const char *extra_conf, double timeout_s);
/* Runs mosquitto with the same kind of config and expects it to exit by
 * itself within timeout_s. Returns its exit status (>= 0), or -1 when it was
 * still running (it is then killed). The log is in dir/mosquitto.log. */
int upk_h_broker_run_expect_exit(const char *dir, const char *extra_conf, double timeout_s);
/* SIGTERM by pid, waits up to 5 s, then SIGKILL. Safe to call twice. */
void upk_h_broker_stop(upk_h_broker *b);
/* SIGTERM by pid, waits up to grace_s, then SIGKILL. Returns the exit status
 * (>= 0; 128 + signal when a signal ended it) or -1 when nothing was running.
 * For brokers that need longer to stop (e.g. under valgrind). */
int upk_h_broker_stop_wait(upk_h_broker *b, double grace_s);
/* Starts mosquitto again after a stop, with the same config file and port
 * (clients configured with that port reconnect); its output is appended to
 * the log. 0 once it accepts connections within timeout_s; otherwise -1 and
 * nothing is left running. */
int upk_h_broker_restart(upk_h_broker *b, double timeout_s);
/* Prints the broker log to stderr (for failing tests). */
void upk_h_broker_dump_log(const char *dir);
/* True when the file at path contains needle. */
bool upk_h_file_contains(const char *path, const char *needle);

/* ---- MQTT 5 test client --------------------------------------------------- */
typedef struct upk_h_client upk_h_client;

#define UPK_H_TOPIC_MAX   512
#define UPK_H_PAYLOAD_MAX 4096
#define UPK_H_QUEUE_MAX   10000 /* received messages kept; more are counted only */

typedef struct upk_h_msg {
    char topic[UPK_H_TOPIC_MAX];
    char payload[UPK_H_PAYLOAD_MAX + 1]; /* NUL-terminated copy, truncated */
    size_t len;
    int qos;
    bool retained;
    int sender_count;             /* how many upkeep-sender properties it had */
    char sender[UPK_H_TOPIC_MAX]; /* the first one's value */
    int auth_count;               /* how many upkeep-auth (link tag) properties it had */
    char auth[UPK_H_TOPIC_MAX];   /* the first one's value */
} upk_h_msg;

/* Connects with MQTT 5 (clean start) and waits up to 5 s. Returns 0 when
 * connected; otherwise -1 with the CONNACK reason code (e.g. 0x87 or 0x86) in
 * *reason, or -1 in *reason when there was no CONNACK. user/pass may be NULL.
 * On failure *out is NULL. */
int upk_h_client_connect(upk_h_client **out, int port, const char *client_id, const char *user,
                         const char *pass, int *reason);
/* Like upk_h_client_connect, with a will message (QoS 1, retained). */
int upk_h_client_connect_will(upk_h_client **out, int port, const char *client_id, const char *user,
                              const char *pass, const char *will_topic, const char *will_payload,
                              int *reason);
/* Publishes and, for QoS 1, waits up to 5 s for the PUBACK. sender, when not
 * NULL, is sent as a client-supplied upkeep-sender user property. Returns 0
 * when the broker accepted it (QoS 0: when it was handed to the socket); -1
 * otherwise, with the PUBACK reason code (e.g. 0x87) or -1 in *reason. */
int upk_h_client_publish(upk_h_client *c, const char *topic, const void *payload, size_t len,
                         int qos, bool retain, const char *sender, int *reason);
/* upk_h_client_publish with, when auth is not NULL, one upkeep-auth user
 * property (a link tag, docs/protocol.md 8.1) with that value. */
int upk_h_client_publish_auth(upk_h_client *c, const char *topic, const void *payload, size_t len,
                              int qos, bool retain, const char *sender, const char *auth,
                              int *reason);
/* Subscribes one filter and waits up to 5 s. 0 when granted (*reason = QoS),
 * -1 when refused (*reason = SUBACK reason code such as 0x87, or -1). */
int upk_h_client_subscribe(upk_h_client *c, const char *filter, int qos, int *reason);
/* Waits up to timeout_s for the next received message and pops it into out
 * (heap-heavy struct: callers should allocate it statically or on the heap).
 * 0 when one arrived, -1 on timeout. */
int upk_h_client_wait_msg(upk_h_client *c, double timeout_s, upk_h_msg *out);
/* Total messages received so far (including ones not queued). */
size_t upk_h_client_received(upk_h_client *c);
/* Waits up to timeout_s until at least n messages were received in total. */
bool upk_h_client_wait_count(upk_h_client *c, size_t n, double timeout_s);
/* True while the connection is up. */
bool upk_h_client_connected(upk_h_client *c);
/* Waits up to timeout_s for the broker to drop the connection. */
bool upk_h_client_wait_disconnected(upk_h_client *c, double timeout_s);
/* Disconnects (if connected) and frees. NULL is a no-op. */
void upk_h_client_close(upk_h_client *c);

#endif
