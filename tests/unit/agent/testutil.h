/* Shared helpers for the agent unit tests: temp dirs and small files. */
#ifndef UPK_AGENT_TESTUTIL_H
#define UPK_AGENT_TESTUTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent_int.h"
#include "upkeep/fs.h"

/* Creates a fresh temp dir into buf (cap bytes); returns buf or NULL. */
static inline char *tu_mkdtemp(char *buf, size_t cap)
{
    const char *base = getenv("TMPDIR");
    if (base == NULL || base[0] == '\0')
        base = "/tmp";
    int n = snprintf(buf, cap, "%s/upk-agent-ut-XXXXXX", base);
    if (n < 0 || (size_t)n >= cap)
        return NULL;
    return mkdtemp(buf);
}

static inline void tu_rmdir(const char *dir)
{
    if (upk__rm_rf(dir) != UPK_OK)
        fprintf(stderr, "cannot remove %s\n", dir);
}

/* Writes text to dir/name; returns 0 on success. */
static inline int tu_write(const char *dir, const char *name, const void *data, size_t len)
{
    char p[1024];
    if (upk__path(p, sizeof(p), dir, name) != UPK_OK)
        return -1;
    FILE *f = fopen(p, "wb");
    if (f == NULL)
        return -1;
    size_t w = fwrite(data, 1, len, f);
    return fclose(f) == 0 && w == len ? 0 : -1;
}

/* Reads dir/name into a new string (caller frees); NULL when missing. */
static inline char *tu_read(const char *dir, const char *name, size_t *len)
{
    char p[1024];
    char *buf = NULL;
    size_t l = 0;
    if (upk__path(p, sizeof(p), dir, name) != UPK_OK ||
        upk_fs_read(p, 1u << 26, &buf, &l) != UPK_OK)
        return NULL;
    if (len != NULL)
        *len = l;
    return buf;
}

#endif
