/* A small string-keyed chained hash map (FNV-1a) for the plugin's tables:
 * accounts, connected clients and the lockout table. Lookups cost O(key
 * length) on average whatever the number of entries. */
#include "core.h"

#include <stdlib.h>
#include <string.h>

#define MAP_MIN_BUCKETS 16

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s != '\0'; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

static size_t round_pow2(size_t n)
{
    size_t p = MAP_MIN_BUCKETS;
    while (p < n && p < ((size_t)1 << 40))
        p <<= 1;
    return p;
}

upk_err upk__bp_map_init(upk_bp_map *map, size_t nbuckets)
{
    if (map == NULL)
        return UPK_E_INVALID_ARG;
    size_t n = round_pow2(nbuckets);
    upk_bp_map_entry **b = calloc(n, sizeof(*b));
    if (b == NULL)
        return UPK_E_NOMEM;
    map->buckets = b;
    map->nbuckets = n;
    map->count = 0;
    return UPK_OK;
}

void upk__bp_map_cleanup(upk_bp_map *map, upk_bp_free_fn free_value)
{
    if (map == NULL || map->buckets == NULL)
        return;
    for (size_t i = 0; i < map->nbuckets; i++) {
        upk_bp_map_entry *e = map->buckets[i];
        while (e != NULL) {
            upk_bp_map_entry *next = e->next;
            if (free_value != NULL)
                free_value(e->value);
            free(e);
            e = next;
        }
    }
    free(map->buckets);
    map->buckets = NULL;
    map->nbuckets = 0;
    map->count = 0;
}

static upk_bp_map_entry **find_slot(const upk_bp_map *map, const char *key, uint64_t h)
{
    upk_bp_map_entry **slot = &map->buckets[h & (map->nbuckets - 1)];
    while (*slot != NULL && ((*slot)->hash != h || strcmp((*slot)->key, key) != 0))
        slot = &(*slot)->next;
    return slot;
}

void *upk__bp_map_get(const upk_bp_map *map, const char *key)
{
    if (map == NULL || map->buckets == NULL || key == NULL)
        return NULL;
    upk_bp_map_entry **slot = find_slot(map, key, fnv1a(key));
    return *slot != NULL ? (*slot)->value : NULL;
}

/* Doubles the table; on allocation failure the map simply stays longer-chained. */
static void grow(upk_bp_map *map)
{
    if (map->nbuckets > ((size_t)1 << 30))
        return;
    size_t n = map->nbuckets * 2;
    upk_bp_map_entry **b = calloc(n, sizeof(*b));
    if (b == NULL)
        return;
    for (size_t i = 0; i < map->nbuckets; i++) {
        upk_bp_map_entry *e = map->buckets[i];
        while (e != NULL) {
            upk_bp_map_entry *next = e->next;
            size_t j = e->hash & (n - 1);
            e->next = b[j];
            b[j] = e;
            e = next;
        }
    }
    free(map->buckets);
    map->buckets = b;
    map->nbuckets = n;
}

upk_err upk__bp_map_put(upk_bp_map *map, const char *key, void *value)
{
    if (map == NULL || map->buckets == NULL || key == NULL)
        return UPK_E_INVALID_ARG;
    uint64_t h = fnv1a(key);
    upk_bp_map_entry **slot = find_slot(map, key, h);
    if (*slot != NULL)
        return UPK_E_EXISTS;
    size_t klen = strlen(key);
    upk_bp_map_entry *e = malloc(sizeof(*e) + klen + 1);
    if (e == NULL)
        return UPK_E_NOMEM;
    e->next = NULL;
    e->hash = h;
    e->value = value;
    memcpy(e->key, key, klen + 1);
    *slot = e;
    map->count++;
    if (map->count > map->nbuckets)
        grow(map);
    return UPK_OK;
}

void *upk__bp_map_remove(upk_bp_map *map, const char *key)
{
    if (map == NULL || map->buckets == NULL || key == NULL)
        return NULL;
    upk_bp_map_entry **slot = find_slot(map, key, fnv1a(key));
    upk_bp_map_entry *e = *slot;
    if (e == NULL)
        return NULL;
    void *value = e->value;
    *slot = e->next;
    free(e);
    map->count--;
    return value;
}

size_t upk__bp_map_prune(upk_bp_map *map, bool (*drop)(const char *, void *, void *), void *ctx,
                         upk_bp_free_fn free_value)
{
    size_t removed = 0;
    if (map == NULL || map->buckets == NULL || drop == NULL)
        return 0;
    for (size_t i = 0; i < map->nbuckets; i++) {
        upk_bp_map_entry **slot = &map->buckets[i];
        while (*slot != NULL) {
            upk_bp_map_entry *e = *slot;
            if (drop(e->key, e->value, ctx)) {
                *slot = e->next;
                if (free_value != NULL)
                    free_value(e->value);
                free(e);
                map->count--;
                removed++;
            } else {
                slot = &e->next;
            }
        }
    }
    return removed;
}
