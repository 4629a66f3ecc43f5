/* Chunk-window bookkeeping for the download: which ranges are requested and
 * not yet written. Invariant: slot[i] covers [written + i*chunk, +len), so the
 * outstanding requests are always one contiguous run after the written
 * prefix, and the partial file's length is the resume offset. */
#include "agent_int.h"

#include <stdlib.h>
#include <string.h>

/* The wait after the tries-th sending of a request: timeout doubled per
 * re-request up to the cap, plus jitter in [0, wait/4] from re-requests on. */
static uint32_t backoff_ms(uint32_t timeout, uint32_t tries)
{
    uint64_t w = timeout;
    for (uint32_t i = 1; i < tries && w < (uint64_t)timeout * UPK__WINDOW_BACKOFF_MAX; i++)
        w *= 2;
    if (w > (uint64_t)timeout * UPK__WINDOW_BACKOFF_MAX)
        w = (uint64_t)timeout * UPK__WINDOW_BACKOFF_MAX;
    if (w > UINT32_MAX / 2)
        w = UINT32_MAX / 2;
    if (tries > 1)
        w += (uint64_t)((unsigned)rand() % (unsigned)(w / 4 + 1)); /* spreads load only */
    return (uint32_t)w;
}

void upk__window_init(upk__window *w, uint64_t size, uint32_t chunk, uint32_t max_inflight,
                      uint32_t timeout_ms, uint64_t written)
{
    memset(w, 0, sizeof(*w));
    w->size = size;
    w->chunk = chunk == 0 ? 1 : chunk;
    w->max_inflight = max_inflight == 0                ? 1
                      : max_inflight > UPK__WINDOW_MAX ? UPK__WINDOW_MAX
                                                       : max_inflight;
    w->timeout_ms = timeout_ms;
    w->written = written > size ? size : written;
    w->next = w->written;
}

bool upk__window_next(upk__window *w, uint64_t now_ms, uint64_t *off, uint32_t *len)
{
    /* Overdue requests first, oldest offset first, so a lost chunk cannot
     * stall the writer for long. */
    for (size_t i = 0; i < w->n; i++) {
        upk__window_slot *s = &w->slot[i];
        if (s->data == NULL && now_ms >= s->sent_ms + s->wait_ms) {
            s->sent_ms = now_ms;
            s->tries++;
            s->wait_ms = backoff_ms(w->timeout_ms, s->tries);
            *off = s->off;
            *len = s->len;
            return true;
        }
    }
    if (w->n >= w->max_inflight || w->next >= w->size)
        return false;
    uint64_t left = w->size - w->next;
    upk__window_slot *s = &w->slot[w->n++];
    s->off = w->next;
    s->len = left < w->chunk ? (uint32_t)left : w->chunk;
    s->tries = 1;
    s->sent_ms = now_ms;
    s->wait_ms = backoff_ms(w->timeout_ms, 1);
    s->data = NULL;
    w->next += s->len;
    *off = s->off;
    *len = s->len;
    return true;
}

bool upk__window_expects(const upk__window *w, uint64_t off, uint32_t *len)
{
    if (off < w->written || (off - w->written) % w->chunk != 0)
        return false;
    uint64_t i = (off - w->written) / w->chunk;
    if (i >= w->n || w->slot[i].data != NULL)
        return false;
    *len = w->slot[i].len;
    return true;
}

uint32_t upk__window_refused(upk__window *w, uint64_t off)
{
    uint32_t len;
    if (!upk__window_expects(w, off, &len))
        return 0;
    upk__window_slot *s = &w->slot[(off - w->written) / w->chunk];
    if (s->refused_try != s->tries) {
        s->refused_try = s->tries;
        s->refusals++;
    }
    return s->refusals;
}

upk_err upk__window_accept(upk__window *w, uint64_t off, const uint8_t *data, size_t len)
{
    if (off < w->written || (off - w->written) % w->chunk != 0)
        return UPK_E_CHUNK_UNEXPECTED;
    uint64_t i = (off - w->written) / w->chunk;
    if (i >= w->n)
        return UPK_E_CHUNK_UNEXPECTED;
    upk__window_slot *s = &w->slot[i];
    if (s->data != NULL)
        return UPK_E_CHUNK_UNEXPECTED; /* a duplicate of one already here */
    if (len != s->len)
        return UPK_E_SIZE_MISMATCH;
    s->data = malloc(len > 0 ? len : 1);
    if (s->data == NULL)
        return UPK_E_NOMEM;
    if (len > 0)
        memcpy(s->data, data, len);
    return UPK_OK;
}

bool upk__window_take(upk__window *w, uint8_t **data, uint32_t *len)
{
    if (w->n == 0 || w->slot[0].data == NULL)
        return false;
    *data = w->slot[0].data;
    *len = w->slot[0].len;
    w->written += w->slot[0].len;
    memmove(&w->slot[0], &w->slot[1], (w->n - 1) * sizeof(w->slot[0]));
    w->n--;
    return true;
}

void upk__window_reset(upk__window *w)
{
    for (size_t i = 0; i < w->n; i++)
        free(w->slot[i].data);
    w->n = 0;
    w->next = w->written;
}

bool upk__window_done(const upk__window *w)
{
    return w->written >= w->size;
}

void upk__window_cleanup(upk__window *w)
{
    upk__window_reset(w);
}
