/* The operator side of a release upload's chunk phase (release.upload.chunk,
 * docs/operator-guide.md "Importing large releases"): a window of chunks in
 * flight, each acknowledged by the controller with the bytes it has received,
 * paced to stay within the broker plugin's rate limits for operators.
 *
 * Nothing is lost silently: a chunk the broker refuses (its PUBACK carries a
 * reason code >= 0x80, which on ctl/req/{you} means the plugin's rate limit or
 * max_payload_bytes) is reported through on_throttled, the sending rate is
 * lowered (x0.6) and the chunks from the refused one on are sent again after a
 * pause; a chunk without an acknowledgement within resend_ms is sent again
 * from the last acknowledged byte; without progress for timeout_ms the upload
 * stops with a named error. The controller skips what it has received
 * already, so a chunk sent twice is harmless.
 *
 * For the `upkeep` CLI; runs on the calling thread through the client's loop.
 * No allocation beyond one chunk buffer. */
#ifndef UPKEEP_CONTROLLER_UPLOAD_H
#define UPKEEP_CONTROLLER_UPLOAD_H

#include <stddef.h>
#include <stdint.h>

#include "client.h"
#include "upkeep/err.h"

#define UPK_UPLOAD_WINDOW_DEFAULT 8    /* chunks in flight */
#define UPK_UPLOAD_WINDOW_MAX     64   /* bounded by UPK_CLIENT_SENDS_MAX and Paho's in-flight */
#define UPK_UPLOAD_RESEND_MS      5000 /* no acknowledgement this long: send again */
#define UPK_UPLOAD_PACE           0.9  /* share of the configured rate actually used */
#define UPK_UPLOAD_THROTTLE_PAUSE 1000 /* ms to wait after a refusal before sending again */
#define UPK_UPLOAD_BACKOFF        0.6  /* a refusal multiplies the byte pace by this */
#define UPK_UPLOAD_CHUNK_MIN      1024 /* refusals at one offset halve the chunk down to this */

typedef struct upk_upload_opts {
    const char *upload_id; /* the controller's upload id (release.upload.begin) */
    int fd;                /* the artifact, read with pread; borrowed */
    uint64_t size;         /* the artifact's size (the manifest's) */
    uint64_t offset;       /* where to start: the controller's offset from begin */
    size_t chunk;          /* bytes per chunk, 1 .. the controller's chunk_max */
    double msgs_per_s;     /* the broker's messages_per_second for operators; 0 = unlimited */
    double bytes_per_s;    /* the broker's bytes_per_second for operators; 0 = unlimited */
    unsigned window;       /* chunks in flight, 1 .. UPK_UPLOAD_WINDOW_MAX */
    unsigned resend_ms;    /* no acknowledgement this long: send again from the last one */
    unsigned timeout_ms;   /* no progress this long: give up */
    /* Optional: after each acknowledgement that moved the offset. */
    void (*on_progress)(uint64_t done, uint64_t size, void *ud);
    /* Optional: the broker refused a chunk at byte at; from now on the
     * upload sends at most bytes_per_s (0: messages only) and msgs_per_s. */
    void (*on_throttled)(uint64_t at, double bytes_per_s, double msgs_per_s, void *ud);
    void *ud;
} upk_upload_opts;

typedef struct upk_upload_stats {
    uint64_t chunks;    /* chunk requests published */
    uint64_t resent;    /* of which sent again (after a refusal or a missing reply) */
    uint64_t throttled; /* refused by the broker */
    uint64_t done;      /* bytes the controller has acknowledged */
} upk_upload_stats;

/* Sends the artifact's bytes from o->offset to o->size. UPK_OK once the
 * controller has acknowledged all of them (then call release.upload.end).
 * Otherwise why says what happened and what to do: UPK_E_RATE_LIMITED when
 * the broker kept refusing chunks, UPK_E_TIMEOUT when the controller stopped
 * answering, UPK_E_CONN when the connection was lost, UPK_E_IO when the file
 * cannot be read, or the controller's error for a chunk (NOT_FOUND when the
 * upload expired, SIZE_MISMATCH, ...). stats (may be NULL) is filled either
 * way. */
UPK_MUST_CHECK upk_err upk_upload_send(upk_client *c, const upk_upload_opts *o,
                                       upk_upload_stats *stats, char *why, size_t whycap);

#endif
