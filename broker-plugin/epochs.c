/* Device credential epochs: the table of minimum epochs that lets an operator
 * revoke a device's older derived passwords (devkey.h) by raising its
 * minimum. The table is a text file named by the config field
 * device_epochs_file, one "DEVICE_ID MIN_EPOCH" per line, parsed strictly: any
 * bad line makes the whole file invalid, and an invalid file never replaces
 * the table in use (so a botched edit cannot lower a minimum).
 * docs/broker-plugin.md documents the format and the rotation procedure. */
#include "core.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct epoch_entry {
    uint32_t min;
    uint32_t line; /* where it was listed, for the duplicate message */
} epoch_entry;

static bool is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r';
}

/* Parses one decimal epoch of n bytes: 0..UPK_DEVKEY_EPOCH_MAX, no sign, no
 * leading zeros. */
static bool parse_epoch(const char *s, size_t n, uint32_t *out)
{
    if (n == 0 || n > 9 || (n > 1 && s[0] == '0'))
        return false;
    uint32_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10u + (uint32_t)(s[i] - '0');
    }
    *out = v;
    return true;
}

/* Parses one line (len bytes, no '\n'); lineno for messages. */
static upk_err parse_line(upk_bp_map *out, const upk_bp_map *accounts, const char *line, size_t len,
                          uint32_t lineno, char *err, size_t errcap)
{
    size_t i = 0;
    while (i < len && is_blank(line[i]))
        i++;
    if (i == len || line[i] == '#')
        return UPK_OK; /* blank or comment */
    size_t id_start = i;
    while (i < len && !is_blank(line[i]))
        i++;
    size_t id_len = i - id_start;
    while (i < len && is_blank(line[i]))
        i++;
    size_t ep_start = i;
    while (i < len && !is_blank(line[i]))
        i++;
    size_t ep_len = i - ep_start;
    while (i < len && is_blank(line[i]))
        i++;
    if (ep_len == 0 || i != len) {
        snprintf(err, errcap, "line %u: expected \"DEVICE_ID MIN_EPOCH\"", lineno);
        return UPK_E_CONFIG_INVALID;
    }
    char id[UPK_ID_MAX + 1];
    if (id_len > UPK_ID_MAX || !upk_id_valid_n(line + id_start, id_len)) {
        snprintf(err, errcap, "line %u: '%.*s' is not a valid device id", lineno,
                 (int)(id_len > UPK_ID_MAX ? UPK_ID_MAX : id_len), line + id_start);
        return UPK_E_CONFIG_INVALID;
    }
    memcpy(id, line + id_start, id_len);
    id[id_len] = '\0';
    uint32_t min = 0;
    if (!parse_epoch(line + ep_start, ep_len, &min)) {
        snprintf(err, errcap,
                 "line %u: device '%s': minimum epoch must be a whole number from 0 to %u "
                 "without leading zeros",
                 lineno, id, UPK_DEVKEY_EPOCH_MAX);
        return UPK_E_CONFIG_INVALID;
    }
    if (accounts != NULL && upk__bp_map_get(accounts, id) != NULL) {
        snprintf(err, errcap,
                 "line %u: '%s' is an account of password_file, whose password is not derived; "
                 "change it there",
                 lineno, id);
        return UPK_E_CONFIG_INVALID;
    }
    const epoch_entry *prev = upk__bp_map_get(out, id);
    if (prev != NULL) {
        snprintf(err, errcap, "line %u: device '%s' is listed twice (first on line %u)", lineno, id,
                 prev->line);
        return UPK_E_CONFIG_INVALID;
    }
    epoch_entry *en = malloc(sizeof(*en));
    if (en == NULL)
        return UPK_E_NOMEM;
    en->min = min;
    en->line = lineno;
    upk_err e = upk__bp_map_put(out, id, en);
    if (e != UPK_OK)
        free(en);
    return e;
}

upk_err upk__bp_epochs_parse(upk_bp_map *out, const upk_bp_map *accounts, const char *text,
                             size_t len, char *err, size_t errcap)
{
    if (out == NULL || (text == NULL && len > 0) || err == NULL || errcap == 0)
        return UPK_E_INVALID_ARG;
    err[0] = '\0';
    if (memchr(text, '\0', len) != NULL) {
        snprintf(err, errcap, "contains a NUL byte");
        return UPK_E_CONFIG_INVALID;
    }
    size_t pos = 0;
    uint32_t lineno = 0;
    while (pos < len) {
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t end = nl != NULL ? (size_t)(nl - text) : len;
        lineno++;
        if (end - pos > UPK_BP_EPOCHS_LINE_MAX) {
            snprintf(err, errcap, "line %u: longer than %d bytes", lineno, UPK_BP_EPOCHS_LINE_MAX);
            return UPK_E_CONFIG_INVALID;
        }
        upk_err e = parse_line(out, accounts, text + pos, end - pos, lineno, err, errcap);
        if (e != UPK_OK)
            return e;
        pos = end + 1;
    }
    return UPK_OK;
}

/* Reads the whole file at path (at most UPK_BP_EPOCHS_FILE_MAX bytes) into a
 * heap buffer; a message naming the problem into err otherwise. */
static upk_err read_table(const char *path, char **out, size_t *outlen, char *err, size_t errcap)
{
    FILE *f = fopen(path, "rb");
    struct stat st;
    if (f == NULL || fstat(fileno(f), &st) != 0) {
        snprintf(err, errcap, "device_epochs_file '%s': cannot read it (%s)", path,
                 strerror(errno));
        if (f != NULL)
            fclose(f);
        return UPK_E_CONFIG_INVALID;
    }
    if (!S_ISREG(st.st_mode) || st.st_size < 0 ||
        (uint64_t)st.st_size > (uint64_t)UPK_BP_EPOCHS_FILE_MAX) {
        snprintf(err, errcap, "device_epochs_file '%s': %s", path,
                 S_ISREG(st.st_mode) ? "larger than 64 MiB" : "not a regular file");
        fclose(f);
        return UPK_E_CONFIG_INVALID;
    }
    size_t cap = (size_t)st.st_size;
    char *text = malloc(cap + 1);
    if (text == NULL) {
        fclose(f);
        return UPK_E_NOMEM;
    }
    size_t len = fread(text, 1, cap + 1, f);
    bool bad = ferror(f) != 0;
    fclose(f);
    if (bad || len > cap) {
        /* len > cap: it grew while being read; the next check reads it again */
        snprintf(err, errcap, "device_epochs_file '%s': %s", path,
                 bad ? "read error" : "changed while being read");
        free(text);
        return UPK_E_CONFIG_INVALID;
    }
    *out = text;
    *outlen = len;
    return UPK_OK;
}

upk_err upk__bp_epochs_load(upk_bp_config *cfg, const char *path, char *err, size_t errcap)
{
    if (cfg == NULL || path == NULL || err == NULL || errcap == 0)
        return UPK_E_INVALID_ARG;
    char msg[UPK_BP_ERRMSG_MAX];
    char *text = NULL;
    size_t len = 0;
    upk_err e = read_table(path, &text, &len, err, errcap);
    if (e != UPK_OK)
        return e;
    upk_bp_map fresh;
    e = upk__bp_map_init(&fresh, 64);
    if (e != UPK_OK) {
        free(text);
        return e;
    }
    e = upk__bp_epochs_parse(&fresh, &cfg->accounts, text, len, msg, sizeof(msg));
    free(text);
    if (e != UPK_OK) {
        if (e == UPK_E_CONFIG_INVALID)
            snprintf(err, errcap, "device_epochs_file '%s': %s", path, msg);
        upk__bp_map_cleanup(&fresh, free);
        return e;
    }
    upk__bp_map_cleanup(&cfg->device_min_epoch, free);
    cfg->device_min_epoch = fresh;
    return UPK_OK;
}

uint32_t upk__bp_epochs_min(const upk_bp_config *cfg, const char *id)
{
    if (cfg == NULL || id == NULL || cfg->device_min_epoch.buckets == NULL)
        return 0;
    const epoch_entry *en = upk__bp_map_get(&cfg->device_min_epoch, id);
    return en != NULL ? en->min : 0;
}

size_t upk__bp_epochs_count(const upk_bp_config *cfg)
{
    return cfg != NULL ? cfg->device_min_epoch.count : 0;
}

size_t upk__bp_epochs_revoke(struct upk_bp_clients *t, const upk_bp_config *cfg,
                             void (*revoked)(struct upk_bp_client *r, void *ctx), void *ctx)
{
    size_t n = 0;
    if (t == NULL || cfg == NULL || t->by_id.buckets == NULL)
        return 0;
    for (size_t i = 0; i < t->by_id.nbuckets; i++) {
        for (upk_bp_map_entry *en = t->by_id.buckets[i]; en != NULL; en = en->next) {
            upk_bp_client *r = en->value;
            if (r == NULL || r->refused || r->who.role != UPK_BP_ROLE_DEVICE || !r->who.derived ||
                r->who.epoch >= upk__bp_epochs_min(cfg, r->who.name))
                continue;
            r->refused = true;
            r->write_ok[0] = '\0';
            n++;
            if (revoked != NULL)
                revoked(r, ctx);
        }
    }
    return n;
}
