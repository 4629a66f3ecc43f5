/* The controller's outbound backlog (serve.c): publishes waiting for a slot
 * in the small window of publishes handed to Paho. A FIFO with O(1) push and
 * pop, bounded in items, that drops a request equal to one already queued
 * (same kind, device, artifact and offset), so an agent that asks again
 * while its first request still waits costs nothing.
 *
 * Ownership: the queue owns copies of the items. Threads: not thread-safe;
 * serve.c uses it from the loop thread only. */
#ifndef UPKEEP_CONTROLLER_OUTQ_H
#define UPKEEP_CONTROLLER_OUTQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "upkeep/err.h"
#include "upkeep/hash.h"
#include "upkeep/id.h"

typedef struct upk_outq upk_outq;

/* What to publish later; the reply is built when its turn comes, so the
 * queue holds no payloads. kind is the caller's (a chunk reply, a desired). */
typedef struct upk_outq_item {
    int kind;
    char device[UPK_ID_MAX + 1];
    uint8_t artifact[UPK_SHA256_LEN]; /* zero for kinds without one */
    uint64_t offset;
    uint32_t length; /* not part of the key */
} upk_outq_item;

/* A queue of at most max_items (1 .. 1<<22). Caller frees with upk_outq_free. */
UPK_MUST_CHECK upk_err upk_outq_new(size_t max_items, upk_outq **out);
void upk_outq_free(upk_outq *q);

/* Appends a copy of it. When an item with the same key is already queued,
 * nothing is added and *dup is true. UPK_E_BUSY when the queue is full,
 * UPK_E_NOMEM when no memory; the queue is unchanged then. */
UPK_MUST_CHECK upk_err upk_outq_push(upk_outq *q, const upk_outq_item *it, bool *dup);

/* Takes the oldest item into *out; false when the queue is empty. */
bool upk_outq_pop(upk_outq *q, upk_outq_item *out);

size_t upk_outq_len(const upk_outq *q);

/* Items dropped as duplicates since creation. */
uint64_t upk_outq_dups(const upk_outq *q);

#endif
