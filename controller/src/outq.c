/* Bounded FIFO with duplicate suppression for the controller's outbound
 * backlog (outq.h): a singly linked list in arrival order plus a chained hash
 * index on the item key; freed nodes are kept on a free list for reuse. */
#include "outq.h"

#include <stdlib.h>
#include <string.h>

#define OUTQ_LIMIT ((size_t)1 << 22)

struct node {
    struct node *next;  /* FIFO order (or free list) */
    struct node *hnext; /* hash chain */
    uint64_t hash;
    upk_outq_item it;
};

struct upk_outq {
    struct node *head, *tail, *free_list;
    struct node **buckets;
    size_t nbuckets; /* power of two */
    size_t len, max;
    uint64_t dups;
};

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 1099511628211ull;
    }
    return h;
}

static uint64_t key_hash(const upk_outq_item *it)
{
    uint64_t h = 14695981039346656037ull;
    h = fnv(h, &it->kind, sizeof(it->kind));
    h = fnv(h, it->device, strnlen(it->device, sizeof(it->device)));
    h = fnv(h, it->artifact, sizeof(it->artifact));
    return fnv(h, &it->offset, sizeof(it->offset));
}

static bool key_equal(const upk_outq_item *a, const upk_outq_item *b)
{
    return a->kind == b->kind && a->offset == b->offset &&
           strncmp(a->device, b->device, sizeof(a->device)) == 0 &&
           memcmp(a->artifact, b->artifact, sizeof(a->artifact)) == 0;
}

upk_err upk_outq_new(size_t max_items, upk_outq **out)
{
    if (out == NULL || max_items == 0 || max_items > OUTQ_LIMIT)
        return UPK_E_INVALID_ARG;
    upk_outq *q = calloc(1, sizeof(*q));
    if (q == NULL)
        return UPK_E_NOMEM;
    q->nbuckets = 64;
    while (q->nbuckets < max_items)
        q->nbuckets *= 2;
    q->buckets = calloc(q->nbuckets, sizeof(*q->buckets));
    if (q->buckets == NULL) {
        free(q);
        return UPK_E_NOMEM;
    }
    q->max = max_items;
    *out = q;
    return UPK_OK;
}

static void free_chain(struct node *n)
{
    while (n != NULL) {
        struct node *next = n->next;
        free(n);
        n = next;
    }
}

void upk_outq_free(upk_outq *q)
{
    if (q == NULL)
        return;
    free_chain(q->head);
    free_chain(q->free_list);
    free(q->buckets);
    free(q);
}

upk_err upk_outq_push(upk_outq *q, const upk_outq_item *it, bool *dup)
{
    if (q == NULL || it == NULL || dup == NULL)
        return UPK_E_INVALID_ARG;
    *dup = false;
    uint64_t h = key_hash(it);
    struct node **b = &q->buckets[h & (q->nbuckets - 1)];
    for (struct node *n = *b; n != NULL; n = n->hnext) {
        if (n->hash == h && key_equal(&n->it, it)) {
            *dup = true;
            q->dups++;
            return UPK_OK;
        }
    }
    if (q->len >= q->max)
        return UPK_E_BUSY;
    struct node *n = q->free_list;
    if (n != NULL)
        q->free_list = n->next;
    else if ((n = malloc(sizeof(*n))) == NULL)
        return UPK_E_NOMEM;
    n->it = *it;
    n->it.device[UPK_ID_MAX] = '\0';
    n->hash = h;
    n->next = NULL;
    n->hnext = *b;
    *b = n;
    if (q->tail != NULL)
        q->tail->next = n;
    else
        q->head = n;
    q->tail = n;
    q->len++;
    return UPK_OK;
}

bool upk_outq_pop(upk_outq *q, upk_outq_item *out)
{
    if (q == NULL || out == NULL || q->head == NULL)
        return false;
    struct node *n = q->head;
    q->head = n->next;
    if (q->head == NULL)
        q->tail = NULL;
    /* Unlink from its hash chain; chains are short (buckets >= max items). */
    struct node **pp = &q->buckets[n->hash & (q->nbuckets - 1)];
    while (*pp != NULL && *pp != n)
        pp = &(*pp)->hnext;
    if (*pp == n)
        *pp = n->hnext;
    *out = n->it;
    q->len--;
    n->next = q->free_list;
    q->free_list = n;
    return true;
}

size_t upk_outq_len(const upk_outq *q)
{
    return q != NULL ? q->len : 0;
}

uint64_t upk_outq_dups(const upk_outq *q)
{
    return q != NULL ? q->dups : 0;
}
