/* Internal pieces of the agent core (upk__ prefix): journal and installed
 * facts, the on-disk event outbox, chunk-window bookkeeping, thread-pool and
 * child-process helpers. Not part of the public API; loop thread only unless
 * a function says otherwise. */
#ifndef UPKEEP_AGENT_INT_H
#define UPKEEP_AGENT_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "upkeep/agent.h"
#include "upkeep/hash.h"
#include "upkeep/linkauth.h"
#include "upkeep/msg.h"

/* ---- journal: the update in progress (data_dir/journal.json). */
#define UPK__JOURNAL_FILE   "journal.json"
#define UPK__INSTALLED_FILE "installed.json"
#define UPK__JOURNAL_MAX    (UPK_MANIFEST_MAX * 2 + 8192)

typedef struct upk__journal {
    upk_status status;
    bool rolling_back; /* a rollback started and must be finished */
    upk_err error;     /* why it failed / rolled back / was rejected */
    char message[UPK_ERRMSG_MAX + 1];
    char campaign[UPK_ID_MAX + 1];
    char desired_id[UPK_SHA256_HEX_LEN + 1]; /* sha256 of the desired payload */
    char key_id[UPK_KEY_ID_LEN + 1];
    char *manifest; /* exact signed bytes, owned; NULL when idle */
    size_t manifest_len;
    uint8_t sig[UPK_SIG_MAX];
    size_t sig_len;
    char slot[UPK_AGENT_SLOT_MAX + 1];
    uint32_t restarts; /* agent starts seen in activating/health_check */
    /* Outbox seq of the event that reports status: reserved in the journal
     * before the event is queued, so that a start finding the seq never
     * handed out queues that event (exactly once). 0 = not known. */
    uint64_t event_seq;
    /* The module's commit step was started: a restart re-runs it and never
     * rolls back (the module may have dropped what a rollback needs). */
    bool committing;
} upk__journal;

/* Frees the manifest copy; leaves an idle journal. Safe twice. */
void upk__journal_cleanup(upk__journal *j);
/* Writes j atomically to path (temp, fsync, rename, fsync dir). */
UPK_MUST_CHECK upk_err upk__journal_save(const char *path, const upk__journal *j);
/* As upk__journal_save; do_sync false skips the fsyncs (config "fsync":
 * false, for simulators): still atomic against crashes of the process, not
 * against power loss. */
UPK_MUST_CHECK upk_err upk__journal_save_ex(const char *path, const upk__journal *j, bool do_sync);
/* Reads path into *j (cleaned first). A missing file gives an idle journal
 * and UPK_OK; unreadable or malformed content gives UPK_E_STATE_CORRUPT and an
 * idle journal. A leftover "<path>.tmp" from a write cut short is removed. */
UPK_MUST_CHECK upk_err upk__journal_load(const char *path, upk__journal *j);

/* ---- installed facts (data_dir/installed.json): anti-rollback depends on them. */
typedef struct upk__installed {
    char release[UPK_ID_MAX + 1];
    char version[UPK_VERSION_STR_MAX + 1];
    uint64_t security_version;
    uint8_t image_sha256[UPK_SHA256_LEN];
    char campaign[UPK_ID_MAX + 1];
    int64_t last_patched;
    int64_t support_until; /* from the signed manifest; 0 = none */
    int64_t created;       /* the installed manifest's signed created time; 0 = unknown */
} upk__installed;

UPK_MUST_CHECK upk_err upk__installed_save(const char *path, const upk__installed *f);
UPK_MUST_CHECK upk_err upk__installed_save_ex(const char *path, const upk__installed *f,
                                              bool do_sync);
/* Missing file: zeroed facts and UPK_OK; corrupt: UPK_E_STATE_CORRUPT. */
UPK_MUST_CHECK upk_err upk__installed_load(const char *path, upk__installed *f);

/* ---- link authentication of controller messages (link.c; docs/protocol.md
 * 8.2 and 5.3). The state of the last accepted desired lives in
 * data_dir/link.json so that a replay stays refused across restarts. */
#define UPK__LINK_FILE "link.json"

typedef struct upk__link {
    uint64_t ctr;                /* ctr of the last accepted desired; 0 = none */
    uint8_t sha[UPK_SHA256_LEN]; /* SHA-256 of that desired's payload */
    int64_t fresh_until;         /* its fresh_until (Unix s); 0 = none */
} upk__link;

/* Writes f atomically (as the journal; without fsync when do_sync is false). */
UPK_MUST_CHECK upk_err upk__link_save_ex(const char *path, const upk__link *f, bool do_sync);
/* Missing file: zeroed state and UPK_OK; corrupt: zeroed and UPK_E_STATE_CORRUPT. */
UPK_MUST_CHECK upk_err upk__link_load(const char *path, upk__link *f);

/* Decides whether a desired payload (len bytes, tag the upkeep-auth value
 * it came with, "" when none) published on dev/{device_id}/desired may be
 * acted on by a device holding key, whose last accepted desired is *st, at
 * Unix time now. In order: UPK_E_AUTH_INVALID for an empty payload (it
 * cannot carry a tag) or a missing or wrong tag; UPK_E_REPLAYED when its ctr
 * is below st->ctr, or equal with other bytes; UPK_E_DESIRED_STALE when its
 * fresh_until is set and not after now. UPK_OK otherwise, with *next the
 * state to keep once it is accepted (a tagged payload that does not decode
 * keeps *st: it is refused later by the decoder). Pure: no I/O, no clock. */
UPK_MUST_CHECK upk_err upk__link_check_desired(const upk__link *st, const upk_link_key *key,
                                               const char *device_id, const char *payload,
                                               size_t len, const char *tag, int64_t now,
                                               upk__link *next);

/* ---- outbox: bounded on-disk FIFO of encoded events, one file per seq. */
typedef struct upk__outbox {
    char *dir;
    uint64_t next_seq; /* never reused: the event file, then dir/seq, are written before use */
    uint64_t *seqs;    /* queued, ascending */
    size_t count, max;
    bool fsync;
    uint64_t dropped; /* events dropped because the outbox was full */
} upk__outbox;

/* Opens (creating) dir; recovers queued events and the next seq. */
UPK_MUST_CHECK upk_err upk__outbox_open(upk__outbox *ob, const char *dir, size_t max, bool fsync);
/* Assigns ev->seq, encodes and stores it. When full, the oldest event is
 * dropped (counted in ob->dropped) to make room. */
UPK_MUST_CHECK upk_err upk__outbox_push(upk__outbox *ob, upk_event_msg *ev);
/* Oldest queued event: its seq and JSON (caller frees). UPK_E_NOT_FOUND when empty. */
UPK_MUST_CHECK upk_err upk__outbox_peek(upk__outbox *ob, uint64_t *seq, char **json, size_t *len);
/* Removes seq (once the controller acked it). UPK_E_NOT_FOUND if it is not the oldest. */
UPK_MUST_CHECK upk_err upk__outbox_pop(upk__outbox *ob, uint64_t seq);
void upk__outbox_cleanup(upk__outbox *ob);

/* ---- chunk window: which chunk requests are outstanding. Chunks are
 * written strictly in order, so the partial file's length is always the
 * resume offset; chunks that arrive early wait here (bounded by the window). */
#define UPK__WINDOW_MAX 64

typedef struct upk__window_slot {
    uint64_t off;
    uint32_t len;
    uint32_t tries;
    uint64_t sent_ms;
    uint32_t wait_ms;     /* answer overdue at sent_ms + wait_ms (backs off per try) */
    uint32_t refused_try; /* the try whose refusal was last counted; 0 = none */
    uint32_t refusals;    /* tries of this request refused (unauthenticated) */
    uint8_t *data;        /* owned copy once arrived */
} upk__window_slot;

typedef struct upk__window {
    uint64_t size;    /* artifact bytes */
    uint64_t written; /* contiguous bytes handed to the writer */
    uint64_t next;    /* next offset never requested */
    uint32_t chunk;
    uint32_t max_inflight;
    uint32_t timeout_ms;
    size_t n; /* slots in use; slot[i].off == written + i*chunk */
    upk__window_slot slot[UPK__WINDOW_MAX];
} upk__window;

/* chunk >= 1, max_inflight in 1..UPK__WINDOW_MAX, written <= size. */
void upk__window_init(upk__window *w, uint64_t size, uint32_t chunk, uint32_t max_inflight,
                      uint32_t timeout_ms, uint64_t written);
/* Next request to send at now_ms (a new one, or one whose answer is overdue).
 * Returns false when nothing needs sending now. A request is overdue
 * timeout_ms after its first sending; each re-request doubles the wait, up
 * to UPK__WINDOW_BACKOFF_MAX times timeout_ms, plus up to a quarter of it at
 * random, so that late answers from a busy controller are not met with a
 * synchronised wave of repeats. */
#define UPK__WINDOW_BACKOFF_MAX 8
bool upk__window_next(upk__window *w, uint64_t now_ms, uint64_t *off, uint32_t *len);
/* True when a request for off is outstanding and its answer has not
 * arrived; *len is then the length requested (the last chunk of the
 * artifact is shorter: its length is fixed by the manifest's size). */
bool upk__window_expects(const upk__window *w, uint64_t off, uint32_t *len);
/* Records an unauthenticated refusal (not found, range) of the outstanding
 * request at off and returns how many of its tries were refused so far; a
 * second refusal of the same try is not counted again. 0 when off is not
 * outstanding. Lets an agent without a link key trust a refusal only after
 * it came back for several re-requests, each after its backoff. */
uint32_t upk__window_refused(upk__window *w, uint64_t off);
/* Takes an arriving chunk (copied). UPK_E_CHUNK_UNEXPECTED when not
 * outstanding (duplicate, never requested); UPK_E_SIZE_MISMATCH when its
 * length differs from the request. */
UPK_MUST_CHECK upk_err upk__window_accept(upk__window *w, uint64_t off, const uint8_t *data,
                                          size_t len);
/* Pops the next in-order chunk if it has arrived; *data is owned by the caller. */
bool upk__window_take(upk__window *w, uint8_t **data, uint32_t *len);
/* Forgets every outstanding request (connection lost): next = written. */
void upk__window_reset(upk__window *w);
bool upk__window_done(const upk__window *w);
void upk__window_cleanup(upk__window *w);

/* ---- blocking work on the thread pool. */
typedef struct upk__work upk__work;
typedef void (*upk__work_fn)(void *arg);                   /* pool thread */
typedef void (*upk__work_done)(void *arg, bool cancelled); /* loop thread */
/* Runs fn(arg) on the pool then done(arg) on the loop. If this fails, done never runs. */
UPK_MUST_CHECK upk_err upk__work_run(uv_loop_t *loop, upk__work_fn fn, upk__work_done done,
                                     void *arg);

/* ---- child processes with a deadline. */
/* status: exit code (0..255), -1 when killed by a signal, -2 on timeout (the
 * child was sent SIGKILL). */
typedef void (*upk__spawn_done)(int status, void *cb_data);
/* Runs argv (argv[0] a path) with extra environment entries env (NULL-ended,
 * may be NULL) added to the agent's own. If this fails, done never runs. */
UPK_MUST_CHECK upk_err upk__spawn(uv_loop_t *loop, char *const argv[], char *const env[],
                                  uint32_t timeout_ms, upk__spawn_done done, void *cb_data);

/* The status above from a libuv exit callback's figures. */
int upk__spawn_status(bool timed_out, int64_t exit_status, int term_signal);

/* SIGKILL to a detached child's whole process group (so that a shell
 * script's children do not outlive it), or to the child alone if that
 * fails. */
void upk__spawn_kill(uv_process_t *p);

/* ---- small helpers */
/* snprintf into buf; UPK_E_BUFFER_TOO_SMALL when truncated. */
UPK_MUST_CHECK upk_err upk__path(char *buf, size_t cap, const char *dir, const char *name);
/* rm -r of path (files and directories, no symlink following); ENOENT ok. */
UPK_MUST_CHECK upk_err upk__rm_rf(const char *path);
/* Copies src to dst (created 0644 or truncated), fsynced when do_sync. */
UPK_MUST_CHECK upk_err upk__copy_file(const char *src, const char *dst, bool do_sync);
uint64_t upk__now_ms(void);

#endif
