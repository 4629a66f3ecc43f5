/* The event outbox: events made while offline wait on disk, one file per
 * sequence number, and leave in order once the broker acknowledged them.
 * Each event file is written before the next sequence number is persisted,
 * and open() takes the larger of the persisted number and the highest queued
 * file + 1, so a restart never reuses a number and the controller can drop
 * duplicates by seq. */
#include "agent_int.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "upkeep/fs.h"

#define SEQ_FILE     "seq"
#define EVENT_SUFFIX ".ev"

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static upk_err event_path(const upk__outbox *ob, uint64_t seq, char *buf, size_t cap)
{
    int n = snprintf(buf, cap, "%s/%020" PRIu64 EVENT_SUFFIX, ob->dir, seq);
    return n < 0 || (size_t)n >= cap ? UPK_E_BUFFER_TOO_SMALL : UPK_OK;
}

static upk_err write_file(const upk__outbox *ob, const char *path, const char *data, size_t len)
{
    /* Atomic (temp file + rename) with or without fsync: a reader never
     * sees half an event (docs/agent.md, "fsync"). */
    return upk__write_replace(path, data, len, ob->fsync);
}

/* Parses "<20 digits>.ev"; false for anything else. */
static bool parse_name(const char *name, uint64_t *seq)
{
    size_t len = strlen(name);
    if (len != 20 + strlen(EVENT_SUFFIX) || strcmp(name + 20, EVENT_SUFFIX) != 0)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < 20; i++) {
        if (name[i] < '0' || name[i] > '9')
            return false;
        if (v > (UINT64_MAX - 9) / 10)
            return false;
        v = v * 10 + (uint64_t)(name[i] - '0');
    }
    *seq = v;
    return v > 0;
}

static upk_err read_seq_file(const upk__outbox *ob, uint64_t *out)
{
    char path[UPK_AGENT_PATH_MAX];
    upk_err err = upk__path(path, sizeof(path), ob->dir, SEQ_FILE);
    if (err != UPK_OK)
        return err;
    char *buf = NULL;
    size_t len = 0;
    err = upk_fs_read(path, 64, &buf, &len);
    if (err == UPK_E_NOT_FOUND) {
        *out = 1;
        return UPK_OK;
    }
    if (err != UPK_OK)
        return err;
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(buf, &end, 10);
    bool ok = errno == 0 && end != buf && v > 0;
    free(buf);
    if (!ok)
        return UPK_E_STATE_CORRUPT;
    *out = v;
    return UPK_OK;
}

upk_err upk__outbox_open(upk__outbox *ob, const char *dir, size_t max, bool do_fsync)
{
    memset(ob, 0, sizeof(*ob));
    if (max == 0)
        return UPK_E_INVALID_ARG;
    ob->max = max;
    ob->fsync = do_fsync;
    upk_err err = upk_fs_mkdirs(dir);
    if (err != UPK_OK)
        return err;
    ob->dir = strdup(dir);
    ob->seqs = calloc(max, sizeof(uint64_t));
    if (ob->dir == NULL || ob->seqs == NULL) {
        err = UPK_E_NOMEM;
        goto out_fail;
    }
    uint64_t from_file = 1;
    err = read_seq_file(ob, &from_file);
    if (err == UPK_E_STATE_CORRUPT)
        from_file = 1; /* recomputed from the queued files below */
    else if (err != UPK_OK)
        goto out_fail;
    DIR *d = opendir(dir);
    if (d == NULL) {
        err = UPK_E_IO;
        goto out_fail;
    }
    uint64_t highest = 0;
    struct dirent *de;
    size_t total = 0;
    uint64_t *all = NULL;
    size_t all_cap = 0;
    while ((de = readdir(d)) != NULL) {
        uint64_t seq;
        if (!parse_name(de->d_name, &seq)) {
            /* Temp files from a write cut short hold nothing acknowledged. */
            size_t l = strlen(de->d_name);
            if (l > 4 && strcmp(de->d_name + l - 4, ".tmp") == 0) {
                char p[UPK_AGENT_PATH_MAX];
                if (upk__path(p, sizeof(p), dir, de->d_name) == UPK_OK)
                    (void)unlink(p);
            }
            continue;
        }
        if (total == all_cap) {
            size_t nc = all_cap == 0 ? 64 : all_cap * 2;
            uint64_t *na = realloc(all, nc * sizeof(uint64_t));
            if (na == NULL) {
                free(all);
                closedir(d);
                err = UPK_E_NOMEM;
                goto out_fail;
            }
            all = na;
            all_cap = nc;
        }
        all[total++] = seq;
        if (seq > highest)
            highest = seq;
    }
    closedir(d);
    if (total > 0)
        qsort(all, total, sizeof(uint64_t), cmp_u64);
    /* Keep the newest max events if the limit shrank. */
    size_t skip = total > max ? total - max : 0;
    for (size_t i = 0; i < skip; i++) {
        char p[UPK_AGENT_PATH_MAX];
        if (event_path(ob, all[i], p, sizeof(p)) == UPK_OK)
            (void)unlink(p);
        ob->dropped++;
    }
    for (size_t i = skip; i < total; i++)
        ob->seqs[ob->count++] = all[i];
    free(all);
    ob->next_seq = from_file > highest ? from_file : highest + 1;
    if (ob->next_seq > from_file) {
        /* The seq file is behind a queued event (a crash between the two
         * writes of a push): bring it up now, before that event is sent
         * and removed and its number could come back. */
        char path[UPK_AGENT_PATH_MAX], num[32];
        int n = snprintf(num, sizeof(num), "%" PRIu64 "\n", ob->next_seq);
        err = upk__path(path, sizeof(path), ob->dir, SEQ_FILE);
        if (err == UPK_OK)
            err = write_file(ob, path, num, (size_t)n);
        if (err != UPK_OK)
            goto out_fail;
    }
    return UPK_OK;
out_fail:
    upk__outbox_cleanup(ob);
    return err;
}

upk_err upk__outbox_push(upk__outbox *ob, upk_event_msg *ev)
{
    if (ob->seqs == NULL)
        return UPK_E_STATE_INVALID;
    uint64_t seq = ob->next_seq;
    ev->seq = seq;
    char *json = NULL;
    size_t len = 0;
    upk_err err = upk_event_encode(ev, &json, &len);
    if (err != UPK_OK)
        return err;
    if (ob->count == ob->max) {
        char old[UPK_AGENT_PATH_MAX];
        if (event_path(ob, ob->seqs[0], old, sizeof(old)) == UPK_OK)
            (void)unlink(old);
        memmove(ob->seqs, ob->seqs + 1, (ob->count - 1) * sizeof(uint64_t));
        ob->count--;
        ob->dropped++;
    }
    /* The event file first, then the high-water mark: after a crash between
     * the two, open() still skips past the queued file. So "seq file above
     * N, or file N present" means event N was made: the journal relies on
     * it to re-queue a step event that a crash kept from being made. */
    char path[UPK_AGENT_PATH_MAX];
    err = event_path(ob, seq, path, sizeof(path));
    if (err == UPK_OK)
        err = write_file(ob, path, json, len);
    free(json);
    if (err != UPK_OK)
        return err;
    char num[32], seqp[UPK_AGENT_PATH_MAX];
    int n = snprintf(num, sizeof(num), "%" PRIu64 "\n", seq + 1);
    err = upk__path(seqp, sizeof(seqp), ob->dir, SEQ_FILE);
    if (err == UPK_OK)
        err = write_file(ob, seqp, num, (size_t)n);
    if (err != UPK_OK) {
        /* Not made after all: once sent and removed, its number could
         * come back after a restart. */
        (void)unlink(path);
        return err;
    }
    ob->seqs[ob->count++] = seq;
    ob->next_seq = seq + 1;
    return UPK_OK;
}

upk_err upk__outbox_peek(upk__outbox *ob, uint64_t *seq, char **json, size_t *len)
{
    while (ob->count > 0) {
        char path[UPK_AGENT_PATH_MAX];
        upk_err err = event_path(ob, ob->seqs[0], path, sizeof(path));
        if (err != UPK_OK)
            return err;
        err = upk_fs_read(path, UPK_MSG_MAX, json, len);
        if (err == UPK_OK) {
            *seq = ob->seqs[0];
            return UPK_OK;
        }
        if (err == UPK_E_NOMEM)
            return err;
        /* A lost or unreadable file cannot be sent; skip it. */
        (void)unlink(path);
        memmove(ob->seqs, ob->seqs + 1, (ob->count - 1) * sizeof(uint64_t));
        ob->count--;
        ob->dropped++;
    }
    return UPK_E_NOT_FOUND;
}

upk_err upk__outbox_pop(upk__outbox *ob, uint64_t seq)
{
    if (ob->count == 0 || ob->seqs[0] != seq)
        return UPK_E_NOT_FOUND;
    char path[UPK_AGENT_PATH_MAX];
    upk_err err = event_path(ob, seq, path, sizeof(path));
    if (err != UPK_OK)
        return err;
    if (unlink(path) != 0 && errno != ENOENT)
        return UPK_E_IO;
    memmove(ob->seqs, ob->seqs + 1, (ob->count - 1) * sizeof(uint64_t));
    ob->count--;
    return UPK_OK;
}

void upk__outbox_cleanup(upk__outbox *ob)
{
    free(ob->dir);
    free(ob->seqs);
    memset(ob, 0, sizeof(*ob));
}
