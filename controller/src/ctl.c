/* Operator commands of `upkeep serve` (see ctl.h): decode, authorize on the
 * sender stamp, dispatch to one handler per command, audit, encode the reply. */
#include "ctl.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "clifmt.h"
#include "engine.h"
#include "campaign_ext.h"
#include "label.h"
#include "rollback.h"
#include "upkeep/fs.h"
#include "upkeep/hash.h"
#include "upkeep/log.h"
#include "upkeep/manifest.h"
#include "upkeep/msg.h"

#define MSG_CAP              (UPK_ERRMSG_MAX + 1)
#define SENDER_CAP           129
#define LIST_LIMIT_MAX       100000
#define CAMPAIGN_DEVICES_MAX 1000000

struct upload {
    bool used;
    char id[UPK_ID_MAX + 1];
    char op[UPK_ID_MAX + 1];
    char release[UPK_ID_MAX + 1];
    char tmp[UPK_PATH_MAX];
    int fd;
    uint64_t received;
    upk_sha256 hash;
    upk_manifest m;
    char *manifest;
    size_t manifest_len;
    uint8_t sig[UPK_SIG_MAX];
    size_t sig_len;
    char key_id[UPK_KEY_ID_LEN + 1];
    int64_t last_ms;
};

struct upk_ctl {
    upk_store *store;
    const upk_serve_config *cfg;
    upk_ctl_changed_fn changed;
    void *ud;
    int64_t now_ms;
    char op[UPK_ID_MAX + 1];
    char sender[SENDER_CAP];
    struct upload uploads[UPK_UPLOADS_MAX];
    uint32_t upload_seq;
};

typedef upk_err (*handler_fn)(upk_ctl *ctl, const cJSON *args, cJSON **data, char *msg);

struct command {
    const char *name;
    bool writes;
    handler_fn fn;
};

static upk_err fail(char *msg, upk_err err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static upk_err fail(char *msg, upk_err err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = vsnprintf(msg, MSG_CAP, fmt, ap);
    (void)r;
    va_end(ap);
    return err;
}

/* String argument (NULL when absent); false when present but not a string. */
static bool arg_str(const cJSON *args, const char *name, const char **out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(args, name);
    *out = NULL;
    if (v == NULL || cJSON_IsNull(v))
        return true;
    if (!cJSON_IsString(v))
        return false;
    *out = v->valuestring;
    return true;
}

static upk_err need_str(const cJSON *args, const char *name, const char **out, char *msg)
{
    if (!arg_str(args, name, out))
        return fail(msg, UPK_E_FIELD_TYPE, "argument '%s' must be a string", name);
    if (*out == NULL)
        return fail(msg, UPK_E_FIELD_MISSING, "argument '%s' is required", name);
    return UPK_OK;
}

static upk_err need_id(const cJSON *args, const char *name, const char **out, char *msg)
{
    upk_err err = need_str(args, name, out, msg);
    if (err == UPK_OK && !upk_id_valid(*out))
        return fail(msg, UPK_E_ID_INVALID, "argument '%s' is not a valid id", name);
    return err;
}

static long arg_limit(const cJSON *args, long dflt)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(args, "limit");
    if (!cJSON_IsNumber(v) || v->valuedouble < 1)
        return dflt;
    return v->valuedouble > LIST_LIMIT_MAX ? LIST_LIMIT_MAX : (long)v->valuedouble;
}

static void fmt_long(char *buf, size_t cap, long long v)
{
    int r = snprintf(buf, cap, "%lld", v);
    (void)r;
}

static upk_err query(upk_ctl *ctl, const char *sql, const char *const *b, size_t n, cJSON **out,
                     char *msg)
{
    upk_err err = upk_store_query_json(ctl->store, sql, b, n, out);
    if (err != UPK_OK)
        return fail(msg, err, "database query failed; see the controller log");
    return UPK_OK;
}

/* ---- target expressions */

upk_err upk_ctl_target_sql(const char *expr, char *where, size_t cap, char *copy, size_t copycap,
                           const char *binds[8], size_t *nbinds, char *why, size_t whycap)
{
    size_t pos = 0, nb = 0;
    int r;
    if (expr == NULL || strlen(expr) >= copycap || strlen(expr) > UPK_TARGET_MAX) {
        r = snprintf(why, whycap, "target is missing or longer than %d chars", UPK_TARGET_MAX);
        return UPK_E_FIELD_RANGE;
    }
    r = snprintf(where, cap, "1");
    if (strcmp(expr, "all") == 0 || expr[0] == '\0') {
        *nbinds = 0;
        return UPK_OK;
    }
    memcpy(copy, expr, strlen(expr) + 1);
    pos = 1;
    char *p = copy;
    while (p != NULL && *p != '\0') {
        char *comma = strchr(p, ',');
        if (comma != NULL)
            *comma = '\0';
        char *eq = strchr(p, '=');
        if (eq == NULL || eq == p || eq[1] == '\0' || nb >= 8) {
            r = snprintf(why, whycap,
                         "target term '%s' is not key=value (keys: hw, version, release, id, "
                         "group, status, online; up to 8 terms; or 'all')",
                         p);
            return UPK_E_FIELD_RANGE;
        }
        *eq = '\0';
        const char *col;
        const char *op = "=";
        if (strcmp(p, "hw") == 0)
            col = "hw";
        else if (strcmp(p, "version") == 0)
            col = "version";
        else if (strcmp(p, "release") == 0)
            col = "release";
        else if (strcmp(p, "id") == 0) {
            col = "id";
            op = " GLOB ";
        } else if (strcmp(p, "group") == 0)
            col = "grp";
        else if (strcmp(p, "status") == 0)
            col = "status";
        else if (strcmp(p, "online") == 0) {
            col = "online";
            if (strcmp(eq + 1, "1") != 0 && strcmp(eq + 1, "0") != 0) {
                r = snprintf(why, whycap, "target term online= takes 1 or 0");
                return UPK_E_FIELD_RANGE;
            }
        } else {
            r = snprintf(why, whycap,
                         "unknown target key '%s' (keys: hw, version, release, id, group, "
                         "status, online)",
                         p);
            return UPK_E_FIELD_RANGE;
        }
        r = snprintf(where + pos, cap - pos, " AND %s%s?", col, op);
        if (r < 0 || (size_t)r >= cap - pos) {
            r = snprintf(why, whycap, "target expression too long");
            return UPK_E_FIELD_RANGE;
        }
        pos += (size_t)r;
        binds[nb++] = eq + 1;
        p = comma != NULL ? comma + 1 : NULL;
    }
    (void)r;
    *nbinds = nb;
    return UPK_OK;
}

/* ---- commands */

static upk_err h_ping(upk_ctl *ctl, const cJSON *args, cJSON **data, char *msg)
{
    (void)args;
    (void)msg;
    cJSON *o = cJSON_CreateObject();
    if (o == NULL || cJSON_AddStringToObject(o, "version", UPK_VERSION) == NULL ||
        cJSON_AddStringToObject(o, "operator", ctl->op) == NULL ||
        cJSON_AddNumberToObject(o, "now_ms", (double)ctl->now_ms) == NULL) {
        cJSON_Delete(o);
        return UPK_E_NOMEM;
    }
    *data = o;
    return UPK_OK;
}

static upk_err h_device_list(upk_ctl *ctl, const cJSON *args, cJSON **data, char *msg)
{
    const char *target;
    if (!arg_str(args, "target", &target))
        return fail(msg, UPK_E_FIELD_TYPE, "argument 'target' must be a string");
    char where[1024], copy[UPK_TARGET_MAX + 1], sql[2400], lim[24];
    const char *b[10];
    size_t nb = 0;
    upk_err err = upk_ctl_target_sql(target != NULL ? target : "all", where, sizeof(where), copy,
                                     sizeof(copy), b, &nb, msg, MSG_CAP);
    if (err != UPK_OK)
        return err;
    /* Replies are bounded (UPK_MSG_MAX): callers page with "after" (the last
     * id they got) and a limit of at most 100 rows. */
    const char *after;
    if (!arg_str(args, "after", &after))
        return fail(msg, UPK_E_FIELD_TYPE, "argument 'after' must be a string");
    b[nb++] = after != NULL ? after : "";
    long limit = arg_limit(args, 100);
    fmt_long(lim, sizeof(lim), limit > 100 ? 100 : limit);
    b[nb++] = lim;
    int r =
        snprintf(sql, sizeof(sql),
                 "SELECT id, hw, release, version, security_version, status, campaign,"
                 " error, online, grp AS \"group\", support_until, last_patched, agent,"
                 " last_seen_ms, desired_release, stale, authed, " UPK_STORE_DRIFT_SQL " AS drift"
                 " FROM devices WHERE %s AND id > ?"
                 " ORDER BY id LIMIT ?",
                 where);
    (void)r;
    return query(ctl, sql, b, nb, data, msg);
}

static upk_err h_device_show(upk_ctl *ctl, const cJSON *args, cJSON **data, char *msg)
{
    const char *id;
    upk_err err = need_id(args, "id", &id, msg);
    if (err != UPK_OK)
        return err;
    cJSON *rows = NULL;
    const char *b[] = {id};
    if ((err = query(ctl,
                     "SELECT *, grp AS \"group\", " UPK_STORE_DRIFT_SQL
                     " AS drift FROM devices WHERE id=?",
                     b, 1, &rows, msg)) != UPK_OK)
        return err;
    if (cJSON_GetArraySize(rows) == 0) {
        cJSON_Delete(rows);
        return fail(msg, UPK_E_NOT_FOUND, "no device '%s'; `upkeep devices` lists them", id);
    }
    cJSON *dev = cJSON_DetachItemFromArray(rows, 0);
    cJSON_Delete(rows);
    cJSON *ev = NULL;
    if ((err = query(ctl,
                     "SELECT seq, ts, recv_ms, campaign, release, version, step, error, message"
                     " FROM events WHERE device=? ORDER BY seq DESC LIMIT 20",
                     b, 1, &ev, msg)) != UPK_OK) {
        cJSON_Delete(dev);
        return err;
    }
    cJSON_AddItemToObject(dev, "events", ev);
    /* What its health reports said (the health gate's inputs), per campaign
     * ("" = baseline reports of an idle device). */
    cJSON *health = NULL, *metrics = NULL;
    if ((err = query(ctl,
                     "SELECT campaign, restarts, boots, check_failed, recv_ms FROM health"
                     " WHERE device=? ORDER BY recv_ms DESC LIMIT 20",
                     b, 1, &health, msg)) != UPK_OK ||
        (err = query(ctl,
                     "SELECT campaign, name, sum / n AS mean, n AS reports, recv_ms FROM"
                     " health_metrics WHERE device=? ORDER BY recv_ms DESC, name LIMIT 40",
                     b, 1, &metrics, msg)) != UPK_OK) {
        cJSON_Delete(health);
        cJSON_Delete(dev);
        return err;
    }
    cJSON_AddItemToObject(dev, "health", health);
    cJSON_AddItemToObject(dev, "health_metrics", metrics);
    *data = dev;
    return UPK_OK;
}

static upk_err h_device_label(upk_ctl *ctl, const cJSON *args, cJSON **data, char *msg)
{
    (void)data;
    const char *id, *group;
    upk_err err = need_id(args, "id", &id, msg);
    if (err != UPK_OK)
        return err;
    if ((err = need_str(args, "group", &group, msg)) != UPK_OK)
        return err;
    if (group[0] != '\0' && !upk_id_valid(group))
        return fail(msg, UPK_E_ID_INVALID, "group must be an id, or \"\" to remove it");
    err = upk_store_device_group(ctl->store, id, group);
    if (err == UPK_E_NOT_FOUND)
        return fail(msg, err, "no device '%s'; `upkeep devices` lists them", id);
    return err;
}

/* The elements of a device's update-capability label (label.h), with the
 * signed manifest of its installed release for the support statement. */
static upk_err h_device_capability(upk_ctl *ctl, const cJSON *args, cJSON **data, char *msg)
{
    const char *id;
    upk_err err = need_id(args, "id", &id, msg);
    if (err != UPK_OK)
        return err;
    cJSON *rows = NULL;
    const char *b[] = {id};
    if ((err = query(ctl,
                     "SELECT id, hw, release, version, security_version, online, last_seen_ms,"
                     " state_ts, cap_automatic, cap_signed, cap_rollback, cap_delta,"
                     " support_until, support_signed, last_patched, (SELECT manifest FROM"
                     " releases r WHERE r.name=devices.release AND r.version=devices.version"
                     " ORDER BY imported_ms DESC LIMIT 1) AS manifest FROM devices WHERE id=?",
                     b, 1, &rows, msg)) != UPK_OK)
        return err;
    if (cJSON_GetArraySize(rows) == 0) {
        cJSON_Delete(rows);
        return fail(msg, UPK_E_NOT_FOUND, "no device '%s'; `upkeep devices` lists them", id);
    }
    *data = cJSON_DetachItemFromArray(rows, 0);
    cJSON_Delete(rows);
    return UPK_OK;
}

static upk_err h_release_list(upk_ctl *ctl, const cJSON *args, cJSON **data, char *msg)
{
    char lim[24];
    fmt_long(lim, sizeof(lim), arg_limit(args, 1000));
    const char *b[] = {lim};
    return query(ctl,
                 "SELECT id, name, version, security_version, type, module, hw, size, sha256,"
                 " key_id, created, expires, imported_ms, imported_by FROM releases"
                 " ORDER BY imported_ms, id LIMIT ?",
                 b, 1, data, msg);
}

static upk_err h_release_show(upk_ctl *ctl, const cJSON *args, cJSON **data, char *msg)
{
    const char *id;
    upk_err err = need_id(args, "id", &id, msg);
    if (err != UPK_OK)
        return err;
    const char *b[] = {id};
    cJSON *rows = NULL;
    if ((err = query(ctl,
                     "SELECT id, name, version, security_version, type, module, hw, size,"
                     " sha256, key_id, created, expires, imported_ms, imported_by, manifest,"
                     " (SELECT count(*) FROM devices WHERE desired_release=releases.id) AS"
                     " desired_by FROM releases WHERE id=?",
                     b, 1, &rows, msg)) != UPK_OK)
        return err;
    if (cJSON_GetArraySize(rows) == 0) {
        cJSON_Delete(rows);
        return fail(msg, UPK_E_NOT_FOUND, "no release '%s'; `upkeep release list` lists them", id);
    }
    *data = cJSON_DetachItemFromArray(rows, 0);
    cJSON_Delete(rows);
    return UPK_OK;
}

/* ---- release upload */

static void upload_drop(struct upload *u)
{
    if (!u->used)
        return;
    if (u->fd >= 0)
        close(u->fd);
    if (u->tmp[0] != '\0')
        unlink(u->tmp);
    upk_sha256_cleanup(&u->hash);
    free(u->manifest);
    memset(u, 0, sizeof(*u));
    u->fd = -1;
}

static struct upload *upload_find(upk_ctl *ctl, const char *id)
{
    for (size_t i = 0; i < UPK_UPLOADS_MAX; i++)
        if (ctl->uploads[i].used && strcmp(ctl->uploads[i].id, id) == 0 &&
            strcmp(ctl->uploads[i].op, ctl->op) == 0)
            return &ctl->uploads[i];
    return NULL;
}

void upk_ctl_expire(upk_ctl *ctl, int64_t now_ms)
{
    for (size_t i = 0; i < UPK_UPLOADS_MAX; i++)
        if (ctl->uploads[i].used && now_ms - ctl->uploads[i].last_ms > UPK_UPLOAD_IDLE_MS) {
            upk_warn("ctl: upload %s by %s idle; dropped", ctl->uploads[i].id, ctl->uploads[i].op);
            upload_drop(&ctl->uploads[i]);
        }
}

/* The reply of release.upload.begin: the upload id, the release id, the
 * largest chunk accepted, and the offset to send from (0 for a new upload,
 * the bytes already received when resumed). */
static upk_err upload_begin_reply(const struct upload *u, cJSON **data)
{
    cJSON *o = cJSON_CreateObject();
    if (o == NULL || cJSON_AddStringToObject(o, "upload", u->id) == NULL ||
        cJSON_AddStringToObject(o, "release", u->release) == NULL ||
        cJSON_AddNumberToObject(o, "chunk_max", UPK_UPLOAD_CHUNK_MAX) == NULL ||
        cJSON_AddNumberToObject(o, "offset", (double)u->received) == NULL ||
        cJSON_AddNumberToObject(o, "size", (double)u->m.size) == NULL) {
        cJSON_Delete(o);
        return UPK_E_NOMEM;
    }
    *data = o;
    return UPK_OK;
}

static upk_err h_upload_begin(upk_ctl *ctl, const cJSON *args, cJSON **data, char *msg)
{
    const char *manifest, *sig_b64, *key_id, *id;
    upk_err err;
    if ((err = need_str(args, "manifest", &manifest, msg)) != UPK_OK ||
        (err = need_str(args, "sig", &sig_b64, msg)) != UPK_OK ||
        (err = need_str(args, "key_id", &key_id, msg)) != UPK_OK)
        return err;
    if (!arg_str(args, "id", &id) || (id != NULL && !upk_id_valid(id)))
        return fail(msg, UPK_E_ID_INVALID, "argument 'id' must be a valid release id");
    uint8_t sig[UPK_SIG_MAX];
    size_t siglen = 0;
    if (upk_base64_decode(sig_b64, strlen(sig_b64), sig, sizeof(sig), &siglen) != UPK_OK)
        return fail(msg, UPK_E_SIG_INVALID, "signature is not base64 of at most %d bytes",
                    UPK_SIG_MAX);
    upk_manifest m;
    size_t mlen = strlen(manifest);
    err = upk_manifest_verify(ctl->cfg->ring, key_id, manifest, mlen, sig, siglen, &m);
    if (err == UPK_E_KEY_UNKNOWN)
        return fail(msg, err,
                    "release key %.16s... is not in the controller's release_keys; add its "
                    "public key to the serve config",
                    key_id);
    if (err != UPK_OK)
        return fail(msg, err, "release rejected: %s", upk_err_msg(err));
    if (m.expires <= ctl->now_ms / 1000)
        return fail(msg, UPK_E_MANIFEST_EXPIRED,
                    "release has expired; sign it again with a later --expires");
    char rid[UPK_ID_MAX + 1];
    int r;
    if (id != NULL)
        r = snprintf(rid, sizeof(rid), "%s", id);
    else
        r = snprintf(rid, sizeof(rid), "%s-%s", m.name, m.version);
    if (r < 0 || (size_t)r >= sizeof(rid) || !upk_id_valid(rid))
        return fail(msg, UPK_E_ID_INVALID,
                    "release id '%s-%s' is not a valid id; pass one with --id", m.name, m.version);
    upk_release_row existing;
    memset(&existing, 0, sizeof(existing));
    err = upk_store_release_get(ctl->store, rid, &existing);
    upk_release_row_cleanup(&existing);
    if (err == UPK_OK)
        return fail(msg, UPK_E_EXISTS, "release '%s' already exists", rid);
    if (err != UPK_E_NOT_FOUND)
        return fail(msg, err, "database error");
    struct upload *u = NULL;
    for (size_t i = 0; i < UPK_UPLOADS_MAX; i++) {
        struct upload *x = &ctl->uploads[i];
        if (x->used && strcmp(x->release, rid) == 0) {
            /* The same operator sending the same signed manifest again
             * resumes where the controller stopped receiving; the same
             * operator with another manifest starts over. Anyone else waits
             * until the upload ends or expires. */
            if (strcmp(x->op, ctl->op) != 0)
                return fail(msg, UPK_E_BUSY,
                            "release '%s' is being uploaded by '%s'; an abandoned upload expires "
                            "%d minutes after its last chunk",
                            rid, x->op, UPK_UPLOAD_IDLE_MS / 60000);
            if (x->manifest_len == mlen && memcmp(x->manifest, manifest, mlen) == 0 &&
                x->sig_len == siglen && memcmp(x->sig, sig, siglen) == 0 &&
                strcmp(x->key_id, key_id) == 0) {
                x->last_ms = ctl->now_ms;
                upk_info("ctl: upload %s of %s by %s resumed at byte %llu", x->id, x->release,
                         ctl->op, (unsigned long long)x->received);
                return upload_begin_reply(x, data);
            }
            upk_info("ctl: upload %s of %s by %s replaced by a new manifest", x->id, x->release,
                     ctl->op);
            upload_drop(x);
        }
        if (!x->used && u == NULL)
            u = x;
    }
    if (u == NULL)
        return fail(msg, UPK_E_BUSY, "too many uploads at once; retry in a minute");
    memset(u, 0, sizeof(*u));
    u->fd = -1;
    u->used = true;
    r = snprintf(u->id, sizeof(u->id), "up-%lld-%u", (long long)ctl->now_ms, ++ctl->upload_seq);
    r = snprintf(u->op, sizeof(u->op), "%s", ctl->op);
    r = snprintf(u->release, sizeof(u->release), "%s", rid);
    r = snprintf(u->tmp, sizeof(u->tmp), "%s/blobs/.%s", upk_store_dir(ctl->store), u->id);
    u->m = m;
    u->manifest = malloc(mlen + 1);
    if (u->manifest == NULL) {
        upload_drop(u);
        return UPK_E_NOMEM;
    }
    memcpy(u->manifest, manifest, mlen + 1);
    u->manifest_len = mlen;
    memcpy(u->sig, sig, siglen);
    u->sig_len = siglen;
    r = snprintf(u->key_id, sizeof(u->key_id), "%s", key_id);
    (void)r;
    upk_sha256_init(&u->hash);
    u->last_ms = ctl->now_ms;
    u->fd = open(u->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (u->fd < 0) {
        u->tmp[0] = '\0';
        upload_drop(u);
        return fail(msg, UPK_E_IO, "controller cannot write its blob store");
    }
    err = upload_begin_reply(u, data);
    if (err != UPK_OK)
        upload_drop(u);
    return err;
}

static upk_err upload_chunk_reply(const struct upload *u, cJSON **data)
{
    cJSON *o = cJSON_CreateObject();
    if (o == NULL || cJSON_AddNumberToObject(o, "received", (double)u->received) == NULL) {
        cJSON_Delete(o);
        return UPK_E_NOMEM;
    }
    *data = o;
    return UPK_OK;
}

/* A chunk at the offset received so far is appended; one that starts
 * earlier (sent again after a lost reply, or by a resumed upload) has its
 * already received part skipped; one that starts later is refused with
 * FIELD_RANGE "offset must be N" (a chunk before it was lost) and changes
 * nothing. The reply's data is {"received": N}. */
static upk_err h_upload_chunk(upk_ctl *ctl, const cJSON *args, cJSON **data, char *msg)
{
    const char *id, *b64;
    upk_err err;
    if ((err = need_id(args, "upload", &id, msg)) != UPK_OK ||
        (err = need_str(args, "data", &b64, msg)) != UPK_OK)
        return err;
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(args, "offset");
    struct upload *u = upload_find(ctl, id);
    if (u == NULL)
        return fail(msg, UPK_E_NOT_FOUND, "no upload '%s' (expired?); start again", id);
    if (!cJSON_IsNumber(off) || off->valuedouble < 0 || off->valuedouble > (double)u->received ||
        off->valuedouble != (double)(uint64_t)off->valuedouble)
        return fail(msg, UPK_E_FIELD_RANGE, "offset must be %llu", (unsigned long long)u->received);
    uint64_t skip = u->received - (uint64_t)off->valuedouble;
    static uint8_t buf[UPK_UPLOAD_CHUNK_MAX];
    size_t n = 0;
    if (upk_base64_decode(b64, strlen(b64), buf, sizeof(buf), &n) != UPK_OK)
        return fail(msg, UPK_E_FIELD_RANGE, "data must be base64 of at most %u bytes",
                    UPK_UPLOAD_CHUNK_MAX);
    u->last_ms = ctl->now_ms;
    if (skip >= n)
        return upload_chunk_reply(u, data); /* all received already */
    memmove(buf, buf + skip, n - (size_t)skip);
    n -= (size_t)skip;
    if (u->received + n > u->m.size) {
        upload_drop(u);
        return fail(msg, UPK_E_SIZE_MISMATCH, "artifact is larger than the manifest's size");
    }
    size_t done = 0;
    while (done < n) {
        ssize_t w = write(u->fd, buf + done, n - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            upload_drop(u);
            return fail(msg, UPK_E_IO, "controller cannot write its blob store");
        }
        done += (size_t)w;
    }
    upk_sha256_update(&u->hash, buf, n);
    u->received += n;
    return upload_chunk_reply(u, data);
}

static upk_err h_upload_end(upk_ctl *ctl, const cJSON *args, cJSON **data, char *msg)
{
    const char *id;
    upk_err err = need_id(args, "upload", &id, msg);
    if (err != UPK_OK)
        return err;
    struct upload *u = upload_find(ctl, id);
    if (u == NULL)
        return fail(msg, UPK_E_NOT_FOUND, "no upload '%s' (expired?); start again", id);
    uint8_t sha[UPK_SHA256_LEN];
    upk_sha256_final(&u->hash, sha);
    if (u->received != u->m.size) {
        upload_drop(u);
        return fail(msg, UPK_E_SIZE_MISMATCH, "received %llu bytes, the manifest says %llu",
                    (unsigned long long)u->received, (unsigned long long)u->m.size);
    }
    if (!upk_mem_equal_ct(sha, u->m.sha256, UPK_SHA256_LEN)) {
        upload_drop(u);
        return fail(msg, UPK_E_HASH_MISMATCH,
                    "artifact sha256 differs from the signed manifest; nothing imported");
    }
    if (fsync(u->fd) != 0) {
        upload_drop(u);
        return fail(msg, UPK_E_IO, "controller cannot sync its blob store");
    }
    close(u->fd);
    u->fd = -1;
    char hex[UPK_SHA256_HEX_LEN + 1], path[UPK_PATH_MAX];
    if ((err = upk_hex_encode(sha, sizeof(sha), hex, sizeof(hex))) != UPK_OK ||
        (err = upk_store_blob_path(ctl->store, hex, path, sizeof(path))) != UPK_OK) {
        upload_drop(u);
        return err;
    }
    if (rename(u->tmp, path) != 0 || upk_fs_sync_dir_of(path) != UPK_OK) {
        upload_drop(u);
        return fail(msg, UPK_E_IO, "controller cannot write its blob store");
    }
    u->tmp[0] = '\0';
    err = upk_store_release_insert(ctl->store, u->release, &u->m, u->manifest, u->manifest_len,
                                   u->sig, u->sig_len, u->key_id, ctl->sender, ctl->now_ms);
    cJSON *o = NULL;
    if (err == UPK_OK) {
        o = cJSON_CreateObject();
        if (o == NULL || cJSON_AddStringToObject(o, "release", u->release) == NULL ||
            cJSON_AddStringToObject(o, "sha256", hex) == NULL) {
            cJSON_Delete(o);
            o = NULL;
        }
        upk_info("ctl: release %s imported by %s sha256=%s", u->release, ctl->sender, hex);
    } else {
        (void)fail(msg, err, "release could not be recorded: %s", upk_err_msg(err));
    }
    upload_drop(u);
    *data = o;
    return err;
}

/* ---- campaigns */

static cJSON *campaign_json(const upk_campaign *c, const upk_cdev *devs, size_t n)
{
    cJSON *o = cJSON_CreateObject();
    if (o == NULL)
        return NULL;
    cJSON_AddStringToObject(o, "id", c->id);
    cJSON_AddStringToObject(o, "release", c->release);
    cJSON_AddStringToObject(o, "target", c->target);
    cJSON_AddStringToObject(o, "state", upk_camp_state_str(c->state));
    cJSON_AddStringToObject(o, "reason", c->reason);
    cJSON_AddBoolToObject(o, "halted", c->halted);
    cJSON_AddNumberToObject(o, "stage", c->stage + 1);
    cJSON_AddNumberToObject(o, "stage_count", (double)c->stage_count);
    cJSON_AddNumberToObject(o, "soak_s", c->soak_s);
    cJSON_AddNumberToObject(o, "max_fail_bp", c->max_fail_bp);
    cJSON_AddNumberToObject(o, "device_timeout_s", c->device_timeout_s);
    cJSON_AddNumberToObject(o, "rate_per_min", c->rate_per_min);
    cJSON_AddNumberToObject(o, "max_in_flight", c->max_in_flight);
    cJSON_AddBoolToObject(o, "auto_rollback", c->auto_rollback);
    cJSON_AddNumberToObject(o, "bake_s", c->gate.bake_s);
    cJSON_AddNumberToObject(o, "max_unhealthy_bp", c->gate.max_unhealthy_bp);
    cJSON_AddNumberToObject(o, "restart_limit", c->gate.restart_limit);
    cJSON_AddBoolToObject(o, "compare_baseline", c->gate.compare_baseline);
    cJSON_AddNumberToObject(o, "baseline_factor", c->gate.baseline_factor);
    cJSON_AddNumberToObject(o, "min_samples", c->gate.min_samples);
    char gms[UPK_GATE_SPEC_MAX * 2];
    upk_gate_format_metrics(&c->gate, gms, sizeof(gms));
    cJSON_AddStringToObject(o, "gate_metrics", gms);
    cJSON_AddNumberToObject(o, "created_ms", (double)c->created_ms);
    cJSON_AddNumberToObject(o, "updated_ms", (double)c->updated_ms);
    cJSON_AddNumberToObject(o, "finished_ms", (double)c->finished_ms);
    cJSON_AddNumberToObject(o, "stage_started_ms", (double)c->stage_started_ms);
    cJSON_AddNumberToObject(o, "stage_done_ms", (double)c->stage_done_ms);
    cJSON_AddStringToObject(o, "created_by", c->created_by);
    if (devs == NULL)
        return o;
    cJSON *stages = cJSON_AddArrayToObject(o, "stages");
    for (size_t s = 0; s < c->stage_count && stages != NULL; s++) {
        upk_stage_counts sc;
        upk_engine_count(devs, n, (uint32_t)s, &sc);
        cJSON *so = cJSON_CreateObject();
        if (so == NULL || !cJSON_AddItemToArray(stages, so)) {
            cJSON_Delete(so);
            break;
        }
        cJSON_AddNumberToObject(so, "stage", (double)s + 1);
        cJSON_AddNumberToObject(so, "share_bp", c->stage_bp[s]);
        cJSON_AddNumberToObject(so, "total", (double)sc.total);
        for (int k = 0; k < UPK_CDEV__COUNT; k++)
            cJSON_AddNumberToObject(so, upk_cdev_state_str((upk_cdev_state)k),
                                    (double)sc.by_state[k]);
    }
    upk_stage_counts all;
    upk_engine_count(devs, n, UINT32_MAX, &all);
    cJSON *counts = cJSON_AddObjectToObject(o, "counts");
    for (int k = 0; k < UPK_CDEV__COUNT && counts != NULL; k++)
        cJSON_AddNumberToObject(counts, upk_cdev_state_str((upk_cdev_state)k),
                                (double)all.by_state[k]);
    cJSON_AddNumberToObject(o, "devices", (double)all.total);
    /* ETA from the completion rate so far. */
    size_t done = 0, offline_waiting = 0;
    for (size_t i = 0; i < n; i++) {
        if (upk_cdev_state_is_final(devs[i].state))
            done++;
        else if (devs[i].state == UPK_CDEV_PENDING && !devs[i].online)
            offline_waiting++;
    }
    cJSON_AddNumberToObject(o, "offline_waiting", (double)offline_waiting);
    double eta = -1;
    if (c->state == UPK_CAMP_RUNNING && done > 0 && done < n && c->updated_ms > c->created_ms) {
        double per = (double)(c->updated_ms - c->created_ms) / (double)done;
        eta = per * (double)(n - done) / 1000.0;
    }
    cJSON_AddNumberToObject(o, "eta_s", eta);
    return o;
}

static upk_err h_campaign_create(upk_ctl *ctl, const cJSON *args, cJSON **data, char *msg)
{
    const char *release, *id, *target, *stages, *soak, *maxf, *timeout, *rate, *bake, *maxu;
    upk_err err;
    if ((err = need_id(args, "release", &release, msg)) != UPK_OK)
        return err;
    if (!arg_str(args, "id", &id) || !arg_str(args, "target", &target) ||
        !arg_str(args, "stages", &stages) || !arg_str(args, "soak", &soak) ||
        !arg_str(args, "max_failures", &maxf) || !arg_str(args, "device_timeout", &timeout) ||
        !arg_str(args, "rate", &rate) || !arg_str(args, "bake", &bake) ||
        !arg_str(args, "max_unhealthy", &maxu))
        return fail(msg, UPK_E_FIELD_TYPE, "campaign arguments must be strings");
    /* The target is shown to every operator (campaign show). */
    if (target != NULL && upk_text_unsafe(target))
        return fail(msg, UPK_E_TEXT_UNSAFE, "target holds control characters or invalid UTF-8");
    upk_campaign c;
    memset(&c, 0, sizeof(c));
    int r;
    if (id != NULL) {
        if (!upk_id_valid(id))
            return fail(msg, UPK_E_ID_INVALID, "campaign id '%s' is not a valid id", id);
        r = snprintf(c.id, sizeof(c.id), "%s", id);
    } else {
        r = snprintf(c.id, sizeof(c.id), "c-%lld", (long long)ctl->now_ms);
    }
    r = snprintf(c.release, sizeof(c.release), "%s", release);
    r = snprintf(c.target, sizeof(c.target), "%s", target != NULL ? target : "all");
    r = snprintf(c.created_by, sizeof(c.created_by), "%s", ctl->op);
    (void)r;
    if (upk_engine_parse_stages(stages != NULL ? stages : "100%", &c) != UPK_OK)
        return fail(msg, UPK_E_FIELD_RANGE,
                    "--stages must be increasing percentages ending at 100%%, e.g. "
                    "1%%,10%%,50%%,100%%");
    if (upk_engine_parse_duration(soak != NULL ? soak : "0", &c.soak_s) != UPK_OK)
        return fail(msg, UPK_E_FIELD_RANGE, "--soak must be a duration like 30s, 10m, 2h");
    if (upk_engine_parse_duration(timeout != NULL ? timeout : "30m", &c.device_timeout_s) != UPK_OK)
        return fail(msg, UPK_E_FIELD_RANGE,
                    "--device-timeout must be a duration like 30s, 10m, 2h");
    if (upk_engine_parse_percent(maxf != NULL ? maxf : "5%", &c.max_fail_bp) != UPK_OK)
        return fail(msg, UPK_E_FIELD_RANGE, "--max-failures must be a percentage like 5%%");
    if (upk_engine_parse_rate(rate != NULL ? rate : "0", &c.rate_per_min) != UPK_OK)
        return fail(msg, UPK_E_FIELD_RANGE, "--rate must look like 200/min, 10/s or 1000/h");
    const cJSON *mif = cJSON_GetObjectItemCaseSensitive(args, "max_in_flight");
    if (mif != NULL) {
        if (!cJSON_IsNumber(mif) || mif->valuedouble < 0 || mif->valuedouble > 10000000)
            return fail(msg, UPK_E_FIELD_RANGE, "--max-in-flight must be a number >= 0");
        c.max_in_flight = (uint32_t)mif->valuedouble;
    }
    const cJSON *ar = cJSON_GetObjectItemCaseSensitive(args, "auto_rollback");
    if (ar != NULL && !cJSON_IsBool(ar))
        return fail(msg, UPK_E_FIELD_TYPE, "auto_rollback must be true or false");
    c.auto_rollback = cJSON_IsTrue(ar);
    upk_gate_cfg_init(&c.gate);
    if (upk_engine_parse_duration(bake != NULL ? bake : "0", &c.gate.bake_s) != UPK_OK)
        return fail(msg, UPK_E_FIELD_RANGE, "--bake must be a duration like 30s, 10m, 2h");
    if (upk_engine_parse_percent(maxu != NULL ? maxu : "0%", &c.gate.max_unhealthy_bp) != UPK_OK)
        return fail(msg, UPK_E_FIELD_RANGE, "--max-unhealthy must be a percentage like 5%%");
    const cJSON *rl = cJSON_GetObjectItemCaseSensitive(args, "restart_limit");
    if (rl != NULL) {
        if (!cJSON_IsNumber(rl) || rl->valuedouble < 0 || rl->valuedouble > 1000000)
            return fail(msg, UPK_E_FIELD_RANGE, "--restart-limit must be a number >= 0");
        c.gate.restart_limit = (uint32_t)rl->valuedouble;
    }
    const cJSON *cb = cJSON_GetObjectItemCaseSensitive(args, "compare_baseline");
    if (cb != NULL && !cJSON_IsBool(cb))
        return fail(msg, UPK_E_FIELD_TYPE, "compare_baseline must be true or false");
    c.gate.compare_baseline = cJSON_IsTrue(cb);
    const cJSON *bf = cJSON_GetObjectItemCaseSensitive(args, "baseline_factor");
    if (bf != NULL) {
        if (!cJSON_IsNumber(bf) || !(bf->valuedouble >= 1.0 && bf->valuedouble <= 1000.0))
            return fail(msg, UPK_E_FIELD_RANGE, "--baseline-factor must be a number >= 1");
        c.gate.baseline_factor = bf->valuedouble;
    }
    const cJSON *ms = cJSON_GetObjectItemCaseSensitive(args, "min_samples");
    if (ms != NULL) {
        if (!cJSON_IsNumber(ms) || ms->valuedouble < 1 || ms->valuedouble > 1000000)
            return fail(msg, UPK_E_FIELD_RANGE, "--min-samples must be a number >= 1");
        c.gate.min_samples = (uint32_t)ms->valuedouble;
    }
    /* --gate-metric: only the metrics named are compared, each optionally
     * with the range its values must lie in (health_gate.h). */
    const char *gm;
    if (!arg_str(args, "gate_metric", &gm))
        return fail(msg, UPK_E_FIELD_TYPE, "gate_metric must be a string");
    if (gm != NULL && (err = upk_gate_parse_metrics(gm, &c.gate)) != UPK_OK)
        return fail(msg, err,
                    "--gate-metric must be up to %d metric names, each optionally with a range,"
                    " e.g. cpu_pct:0..100,rss_mb",
                    UPK_GATE_NAMED_MAX);
    if ((c.gate.compare_baseline || maxu != NULL || rl != NULL || bf != NULL || gm != NULL ||
         ms != NULL) &&
        c.gate.bake_s == 0)
        return fail(msg, UPK_E_FIELD_RANGE,
                    "health-gate options need --bake (the health window after commit)");
    const cJSON *cont = cJSON_GetObjectItemCaseSensitive(args, "continuous");
    if (cont != NULL && !cJSON_IsBool(cont))
        return fail(msg, UPK_E_FIELD_TYPE, "continuous must be true or false");
    const char *dfb;
    if (!arg_str(args, "delta_fallback", &dfb) ||
        (dfb != NULL && strcmp(dfb, "full") != 0 && strcmp(dfb, "refuse") != 0))
        return fail(msg, UPK_E_FIELD_RANGE, "--delta-fallback takes full or refuse");
    bool fallback_full = dfb != NULL && strcmp(dfb, "full") == 0;
    c.state = UPK_CAMP_RUNNING;
    c.created_ms = c.updated_ms = ctl->now_ms;
    upk_campaign exists;
    if (upk_store_campaign_get(ctl->store, c.id, &exists) == UPK_OK)
        return fail(msg, UPK_E_EXISTS, "campaign '%s' already exists", c.id);

    upk_release_row rel;
    memset(&rel, 0, sizeof(rel));
    if ((err = upk_store_release_get(ctl->store, release, &rel)) != UPK_OK)
        return fail(msg, err, "no release '%s'; import it with `upkeep release import`", release);
    upk_manifest m = rel.m;
    upk_release_row_cleanup(&rel);

    /* Target devices: the expression, compatible hardware, and not busy in
     * another active campaign. */
    char where[1024], copy[UPK_TARGET_MAX + 1], sql[2048];
    const char *b[8];
    size_t nb = 0;
    if ((err = upk_ctl_target_sql(c.target, where, sizeof(where), copy, sizeof(copy), b, &nb, msg,
                                  MSG_CAP)) != UPK_OK)
        return err;
    r = snprintf(sql, sizeof(sql),
                 "SELECT id, hw, (SELECT count(*) FROM campaign_devices cd JOIN campaigns k ON"
                 " k.id = cd.campaign WHERE cd.device = devices.id AND k.state IN"
                 " ('running','paused') AND cd.state IN ('pending','assigned','in_progress'))"
                 " + (SELECT count(*) FROM rollback_devices rb JOIN campaigns k ON"
                 " k.id = rb.campaign WHERE rb.device = devices.id AND rb.state = 'pending' AND"
                 " k.state = 'rolling_back') AS busy FROM devices WHERE %s ORDER BY id",
                 where);
    cJSON *rows = NULL;
    if ((err = query(ctl, sql, b, nb, &rows, msg)) != UPK_OK)
        return err;
    size_t total = (size_t)cJSON_GetArraySize(rows);
    if (total > CAMPAIGN_DEVICES_MAX) {
        cJSON_Delete(rows);
        return fail(msg, UPK_E_FIELD_RANGE, "target selects more than %d devices",
                    CAMPAIGN_DEVICES_MAX);
    }
    const char **ids = calloc(total ? total : 1, sizeof(*ids));
    uint32_t *st = calloc(total ? total : 1, sizeof(*st));
    size_t n = 0, incompatible = 0, busy = 0;
    upk_create_check chk;
    const char **fb = NULL;
    size_t fbn = 0;
    memset(&chk, 0, sizeof(chk));
    if (ids == NULL || st == NULL) {
        err = UPK_E_NOMEM;
        goto done;
    }
    const cJSON *row;
    cJSON_ArrayForEach(row, rows)
    {
        const char *hw = cJSON_GetObjectItem(row, "hw")->valuestring;
        bool ok = false;
        for (size_t i = 0; i < m.hw_count && !ok; i++)
            ok = strcmp(m.hw[i], hw) == 0;
        if (!ok) {
            incompatible++;
            continue;
        }
        if (cJSON_GetObjectItem(row, "busy")->valuedouble > 0) {
            busy++;
            continue;
        }
        ids[n++] = cJSON_GetObjectItem(row, "id")->valuestring;
    }
    /* Install module and delta base (campaign_ext.h). */
    if (n > 0 && (err = upk_create_check_devices(ctl->store, release, &m, ids, &n, fallback_full,
                                                 &chk, &fb, &fbn, msg, MSG_CAP)) != UPK_OK)
        goto done;
    if (n == 0) {
        err = fail(msg, UPK_E_NOT_FOUND,
                   "target '%s' selects no device that can take this release (%zu matched, "
                   "%zu incompatible hardware, %zu busy in another campaign)",
                   c.target, total, incompatible, busy);
        goto done;
    }
    /* Options first (rows keyed by the new id), then the campaign. */
    if ((err = upk_campaign_opts_save(ctl->store, c.id, cJSON_IsTrue(cont), chk.full_release, fb,
                                      fbn)) != UPK_OK) {
        err = fail(msg, err, "campaign could not be recorded");
        goto done;
    }
    if ((err = upk_engine_assign_stages(&c, ids, n, st)) != UPK_OK)
        goto done;
    err = upk_store_campaign_insert(ctl->store, &c, ids, st, n);
    if (err == UPK_E_EXISTS) {
        err = fail(msg, err, "campaign '%s' already exists", c.id);
        goto done;
    }
    if (err != UPK_OK) {
        err = fail(msg, err, "campaign could not be recorded");
        goto done;
    }
    cJSON *o = campaign_json(&c, NULL, 0);
    if (o != NULL) {
        cJSON_AddNumberToObject(o, "devices", (double)n);
        cJSON_AddNumberToObject(o, "incompatible", (double)incompatible);
        cJSON_AddNumberToObject(o, "busy", (double)busy);
        cJSON_AddNumberToObject(o, "no_module", (double)chk.no_module);
        cJSON_AddStringToObject(o, "module", m.module);
        cJSON_AddNumberToObject(o, "full_fallback", (double)chk.full_fallback);
        cJSON_AddStringToObject(o, "full_release", chk.full_release);
        cJSON_AddBoolToObject(o, "continuous", cJSON_IsTrue(cont));
    }
    *data = o;
    upk_info("ctl: campaign %s created by %s release=%s devices=%zu", c.id, ctl->sender, c.release,
             n);
done:
    free(fb);
    free(ids);
    free(st);
    cJSON_Delete(rows);
    return err;
}

static upk_err h_campaign_list(upk_ctl *ctl, const cJSON *args, cJSON **data, char *msg)
{
    char lim[24];
    fmt_long(lim, sizeof(lim), arg_limit(args, 1000));
    const char *b[] = {lim};
    return query(ctl,
                 "SELECT c.id, c.release, c.state, c.reason, c.stage + 1 AS stage,"
                 " length(c.stages) - length(replace(c.stages, ',', '')) + 1 AS stage_count,"
                 " c.created_ms, c.updated_ms, c.created_by,"
                 " (SELECT count(*) FROM campaign_devices WHERE campaign=c.id) AS devices,"
                 " (SELECT count(*) FROM campaign_devices WHERE campaign=c.id AND"
                 " state='succeeded') AS succeeded,"
                 " (SELECT count(*) FROM campaign_devices WHERE campaign=c.id AND"
                 " state IN ('failed','timed_out')) AS failed"
                 " FROM campaigns c ORDER BY c.created_ms DESC LIMIT ?",
                 b, 1, data, msg);
}

static upk_err h_campaign_show(upk_ctl *ctl, const cJSON *args, cJSON **data, char *msg)
{
    const char *id;
    upk_err err = need_id(args, "id", &id, msg);
    if (err != UPK_OK)
        return err;
    upk_campaign c;
    if ((err = upk_store_campaign_get(ctl->store, id, &c)) != UPK_OK)
        return fail(msg, err, "no campaign '%s'; `upkeep campaign list` lists them", id);
    upk_cdev *devs = NULL;
    size_t n = 0;
    if ((err = upk_store_campaign_devices(ctl->store, id, &devs, &n)) != UPK_OK)
        return fail(msg, err, "database error");
    cJSON *o = campaign_json(&c, devs, n);
    if (o == NULL) {
        free(devs);
        return UPK_E_NOMEM;
    }
    /* The controller's clock, for soak countdowns and the ETA. */
    cJSON_AddNumberToObject(o, "now_ms", (double)ctl->now_ms);
    cJSON_AddBoolToObject(o, "continuous", upk_campaign_is_continuous(ctl->store, id));
    /* Health gate of a done stage in its bake window: "bake 4m10s left: ..." */
    upk_gate_dev *health = NULL;
    size_t hn = 0;
    upk_gate_result g;
    if (c.state == UPK_CAMP_RUNNING && c.gate.bake_s > 0 && c.stage_done_ms > 0 &&
        upk_store_gate_devices(ctl->store, id, devs, n, &health, &hn) == UPK_OK &&
        upk_gate_eval(&c.gate, health, hn, &g) == UPK_OK) {
        uint32_t wait_s = c.soak_s > c.gate.bake_s ? c.soak_s : c.gate.bake_s;
        int64_t left_ms = c.stage_done_ms + (int64_t)wait_s * 1000 - ctl->now_ms;
        char line[UPK_GATE_REASON_MAX + 64];
        upk_gate_summary(&g, left_ms < 0 ? -1 : (left_ms + 999) / 1000, line, sizeof(line));
        cJSON_AddStringToObject(o, "gate", line);
    }
    free(health);
    /* Devices of this campaign that report another release than their
     * desired one while not updating (docs/security.md, drift). */
    size_t drift = 0;
    if (upk_store_campaign_drift(ctl->store, id, &drift) == UPK_OK)
        cJSON_AddNumberToObject(o, "drift", (double)drift);
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(args, "devices"))) {
        cJSON *arr = cJSON_AddArrayToObject(o, "device_list");
        for (size_t i = 0; i < n && arr != NULL; i++) {
            cJSON *d = cJSON_CreateObject();
            if (d == NULL || !cJSON_AddItemToArray(arr, d)) {
                cJSON_Delete(d);
                break;
            }
            cJSON_AddStringToObject(d, "device", devs[i].device);
            cJSON_AddNumberToObject(d, "stage", devs[i].stage + 1);
            cJSON_AddStringToObject(d, "state", upk_cdev_state_str(devs[i].state));
            cJSON_AddBoolToObject(d, "online", devs[i].online);
            cJSON_AddNumberToObject(d, "assigned_ms", (double)devs[i].assigned_ms);
            cJSON_AddNumberToObject(d, "done_ms", (double)devs[i].done_ms);
            cJSON_AddStringToObject(d, "error", devs[i].error);
        }
    }
    free(devs);
    if (upk_rollback_json(ctl->store, id, o) != UPK_OK) {
        cJSON_Delete(o);
        return fail(msg, UPK_E_DB, "database error reading the rollback");
    }
    *data = o;
    return UPK_OK;
}

static upk_err transition(upk_ctl *ctl, const cJSON *args, upk_camp_state to, char *msg)
{
    const char *id, *reason;
    upk_err err = need_id(args, "id", &id, msg);
    if (err != UPK_OK)
        return err;
    if (!arg_str(args, "reason", &reason))
        return fail(msg, UPK_E_FIELD_TYPE, "reason must be a string");
    /* Other operators read the reason in their terminals (clifmt.h). */
    if (reason != NULL && upk_text_unsafe(reason))
        return fail(msg, UPK_E_TEXT_UNSAFE,
                    "reason holds control characters or invalid UTF-8; nothing changed");
    char why[UPK_REASON_MAX + 1];
    int r = snprintf(why, sizeof(why), "%s by %s%s%s",
                     to == UPK_CAMP_ROLLING_BACK ? "rollback" : upk_camp_state_str(to), ctl->op,
                     reason != NULL ? ": " : "", reason != NULL ? reason : "");
    (void)r;
    err = upk_store_campaign_transition(ctl->store, id, to, to == UPK_CAMP_RUNNING ? "" : why,
                                        ctl->now_ms, ctl->changed, ctl->ud);
    if (err == UPK_E_NOT_FOUND)
        return fail(msg, err, "no campaign '%s'; `upkeep campaign list` lists them", id);
    if (err == UPK_E_STATE_INVALID) {
        upk_campaign c;
        if (upk_store_campaign_get(ctl->store, id, &c) == UPK_OK)
            return fail(msg, err, "campaign '%s' is %s; cannot go to %s", id,
                        upk_camp_state_str(c.state), upk_camp_state_str(to));
        return err;
    }
    if (err != UPK_OK)
        return fail(msg, err, "database error");
    upk_info("ctl: campaign %s -> %s by %s", id, upk_camp_state_str(to), ctl->sender);
    return UPK_OK;
}

static upk_err h_campaign_pause(upk_ctl *ctl, const cJSON *args, cJSON **data, char *msg)
{
    /* Pausing a paused campaign is no error: the reply says it already is. */
    const char *id;
    upk_campaign c;
    if (arg_str(args, "id", &id) && id != NULL && upk_id_valid(id) &&
        upk_store_campaign_get(ctl->store, id, &c) == UPK_OK && c.state == UPK_CAMP_PAUSED) {
        cJSON *o = cJSON_CreateObject();
        if (o == NULL || cJSON_AddBoolToObject(o, "already", true) == NULL ||
            cJSON_AddStringToObject(o, "state", "paused") == NULL ||
            cJSON_AddStringToObject(o, "reason", c.reason) == NULL) {
            cJSON_Delete(o);
            return UPK_E_NOMEM;
        }
        *data = o;
        return UPK_OK;
    }
    return transition(ctl, args, UPK_CAMP_PAUSED, msg);
}

static upk_err h_campaign_resume(upk_ctl *ctl, const cJSON *args, cJSON **data, char *msg)
{
    (void)data;
    return transition(ctl, args, UPK_CAMP_RUNNING, msg);
}

static upk_err h_campaign_abort(upk_ctl *ctl, const cJSON *args, cJSON **data, char *msg)
{
    (void)data;
    return transition(ctl, args, UPK_CAMP_ABORTED, msg);
}

static upk_err h_campaign_rollback(upk_ctl *ctl, const cJSON *args, cJSON **data, char *msg)
{
    upk_err err = transition(ctl, args, UPK_CAMP_ROLLING_BACK, msg);
    if (err != UPK_OK)
        return err;
    /* The reply is the plan: who was sent what, who cannot be rolled back. */
    const char *id = NULL;
    (void)arg_str(args, "id", &id);
    cJSON *o = cJSON_CreateObject();
    if (o == NULL || id == NULL || upk_rollback_json(ctl->store, id, o) != UPK_OK ||
        cJSON_AddStringToObject(o, "id", id) == NULL ||
        cJSON_AddStringToObject(o, "state", "rolling_back") == NULL) {
        cJSON_Delete(o);
        return UPK_OK; /* the rollback stands; `campaign show` has the plan */
    }
    *data = o;
    return UPK_OK;
}

/* `campaign retry ID DEVICE|--failed` (campaign_ext.h). */
static upk_err h_campaign_retry(upk_ctl *ctl, const cJSON *args, cJSON **data, char *msg)
{
    const char *id, *device;
    upk_err err = need_id(args, "id", &id, msg);
    if (err != UPK_OK)
        return err;
    if (!arg_str(args, "device", &device) || (device != NULL && !upk_id_valid(device)))
        return fail(msg, UPK_E_ID_INVALID, "argument 'device' must be a device id");
    bool failed = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(args, "failed"));
    if ((device == NULL) == !failed)
        return fail(msg, UPK_E_FIELD_MISSING, "name one device or --failed (not both)");
    size_t count = 0;
    err = upk_campaign_retry(ctl->store, id, device, ctl->now_ms, ctl->changed, ctl->ud, &count,
                             msg, MSG_CAP);
    if (err != UPK_OK)
        return err;
    cJSON *o = cJSON_CreateObject();
    if (o == NULL || cJSON_AddStringToObject(o, "id", id) == NULL ||
        cJSON_AddNumberToObject(o, "retried", (double)count) == NULL) {
        cJSON_Delete(o);
        return UPK_E_NOMEM;
    }
    upk_info("ctl: campaign %s retry of %zu devices by %s", id, count, ctl->sender);
    *data = o;
    return UPK_OK;
}

static upk_err h_audit_list(upk_ctl *ctl, const cJSON *args, cJSON **data, char *msg)
{
    char lim[24];
    fmt_long(lim, sizeof(lim), arg_limit(args, 100));
    const char *b[] = {lim};
    return query(ctl,
                 "SELECT * FROM (SELECT id, ts_ms, sender, cmd, args, result FROM audit"
                 " ORDER BY id DESC LIMIT ?) ORDER BY id",
                 b, 1, data, msg);
}

/* ---- posture report */

/* SQL over a devices row: its end of support counts as signed only when the
 * controller holds the signed manifest of the release the device reports
 * (name, version, listing its hw) and that manifest states the same date;
 * a device's own "signed" is only a claim (issue 17, label.h). */
#define SUPPORT_VERIFIED                                                                        \
    "(devices.support_until > 0 AND devices.support_signed AND EXISTS (SELECT 1 FROM releases"  \
    " sr WHERE sr.name = devices.release AND sr.version = devices.version AND"                  \
    " instr(',' || sr.hw || ',', ',' || devices.hw || ',') > 0 AND"                             \
    " CAST(strftime('%s', json_extract(sr.manifest, '$.support.security_until')) AS INTEGER) =" \
    " devices.support_until))"

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static double percentile(const int64_t *v, size_t n, double p)
{
    if (n == 0)
        return -1;
    size_t k = (size_t)(p * (double)(n - 1) + 0.5);
    return (double)v[k < n ? k : n - 1];
}

static upk_err campaign_posture(upk_ctl *ctl, cJSON *arr, char *msg)
{
    cJSON *camps = NULL;
    upk_err err = query(ctl,
                        "SELECT id, release, state, created_ms, finished_ms FROM campaigns"
                        " ORDER BY created_ms",
                        NULL, 0, &camps, msg);
    if (err != UPK_OK)
        return err;
    const cJSON *c;
    cJSON_ArrayForEach(c, camps)
    {
        const char *id = cJSON_GetObjectItem(c, "id")->valuestring;
        int64_t created = (int64_t)cJSON_GetObjectItem(c, "created_ms")->valuedouble;
        const char *b[] = {id};
        cJSON *done = NULL, *stages = NULL;
        if ((err = query(ctl,
                         "SELECT done_ms FROM campaign_devices WHERE campaign=? AND"
                         " state='succeeded' ORDER BY done_ms",
                         b, 1, &done, msg)) != UPK_OK ||
            (err = query(ctl,
                         "SELECT stage + 1 AS stage, min(assigned_ms) AS started_ms, count(*)"
                         " AS devices FROM campaign_devices WHERE campaign=? GROUP BY stage"
                         " ORDER BY stage",
                         b, 1, &stages, msg)) != UPK_OK) {
            cJSON_Delete(done);
            goto out;
        }
        size_t n = (size_t)cJSON_GetArraySize(done);
        int64_t *ttp = calloc(n ? n : 1, sizeof(*ttp));
        cJSON *o = cJSON_CreateObject();
        if (ttp == NULL || o == NULL || !cJSON_AddItemToArray(arr, o)) {
            free(ttp);
            cJSON_Delete(o);
            cJSON_Delete(done);
            cJSON_Delete(stages);
            err = UPK_E_NOMEM;
            goto out;
        }
        cJSON_AddStringToObject(o, "id", id);
        cJSON_AddStringToObject(o, "release", cJSON_GetObjectItem(c, "release")->valuestring);
        cJSON_AddStringToObject(o, "state", cJSON_GetObjectItem(c, "state")->valuestring);
        cJSON_AddNumberToObject(o, "created_ms", (double)created);
        cJSON_AddNumberToObject(o, "succeeded", (double)n);
        /* Rollout series: (time, cumulative devices updated), at most 200 points. */
        cJSON *series = cJSON_AddArrayToObject(o, "series");
        size_t stepn = n / 200 + 1, i = 0;
        const cJSON *d;
        cJSON_ArrayForEach(d, done)
        {
            int64_t t = (int64_t)d->child->valuedouble;
            ttp[i] = t - created;
            i++;
            if (series != NULL && (i % stepn == 0 || i == n)) {
                cJSON *pt = cJSON_CreateArray();
                if (pt != NULL && cJSON_AddItemToArray(series, pt)) {
                    cJSON_AddItemToArray(pt, cJSON_CreateNumber((double)t));
                    cJSON_AddItemToArray(pt, cJSON_CreateNumber((double)i));
                } else {
                    cJSON_Delete(pt);
                }
            }
        }
        qsort(ttp, n, sizeof(*ttp), cmp_i64);
        /* No device patched (e.g. rolled back at once): no time to patch
         * (null), never a -1 that reads as a figure. */
        if (n > 0) {
            cJSON_AddNumberToObject(o, "ttp_median_s", percentile(ttp, n, 0.5) / 1000.0);
            cJSON_AddNumberToObject(o, "ttp_p95_s", percentile(ttp, n, 0.95) / 1000.0);
        } else {
            cJSON_AddNullToObject(o, "ttp_median_s");
            cJSON_AddNullToObject(o, "ttp_p95_s");
        }
        cJSON_AddItemToObject(o, "stages", stages);
        free(ttp);
        cJSON_Delete(done);
    }
out:
    cJSON_Delete(camps);
    return err;
}

static upk_err h_report_posture(upk_ctl *ctl, const cJSON *args, cJSON **data, char *msg)
{
    const cJSON *dv = cJSON_GetObjectItemCaseSensitive(args, "days");
    long days = cJSON_IsNumber(dv) && dv->valuedouble >= 0 && dv->valuedouble < 36500
                    ? (long)dv->valuedouble
                    : 30;
    char now_s[24], cutoff_ms[24];
    fmt_long(now_s, sizeof(now_s), ctl->now_ms / 1000);
    fmt_long(cutoff_ms, sizeof(cutoff_ms), ctl->now_ms - (long long)days * 86400 * 1000);
    cJSON *o = cJSON_CreateObject();
    cJSON *tmp = NULL;
    upk_err err = UPK_OK;
    if (o == NULL)
        return UPK_E_NOMEM;
    cJSON_AddNumberToObject(o, "generated_ms", (double)ctl->now_ms);
    cJSON_AddNumberToObject(o, "days", (double)days);
    const char *bnow[] = {now_s};
    const char *bcut[] = {cutoff_ms};
    if ((err = query(ctl,
                     "SELECT count(*) AS total, COALESCE((SELECT max(security_version) FROM"
                     " releases), 0) AS latest_security_version, (SELECT count(*) FROM devices d"
                     " WHERE d.security_version >= COALESCE((SELECT max(r.security_version) FROM"
                     " releases r WHERE (',' || r.hw || ',') LIKE ('%,' || d.hw || ',%')), 0))"
                     " AS on_latest, (SELECT count(*) FROM devices WHERE"
                     " support_until > 0 AND support_until < ?) AS past_support FROM devices",
                     bnow, 1, &tmp, msg)) != UPK_OK)
        goto fail;
    cJSON *summary = cJSON_DetachItemFromArray(tmp, 0);
    cJSON_Delete(tmp);
    tmp = NULL;
    cJSON_AddItemToObject(o, "summary", summary);
    if ((err = query(ctl,
                     "SELECT count(*) AS n FROM devices d WHERE (SELECT min(imported_ms) FROM"
                     " releases r WHERE r.security_version > d.security_version AND"
                     " (',' || r.hw || ',') LIKE ('%,' || d.hw || ',%')) <= ?",
                     bcut, 1, &tmp, msg)) != UPK_OK)
        goto fail;
    cJSON_AddNumberToObject(summary, "unpatched",
                            cJSON_GetObjectItem(cJSON_GetArrayItem(tmp, 0), "n")->valuedouble);
    cJSON_Delete(tmp);
    tmp = NULL;
    if ((err = query(ctl,
                     "SELECT release, version, security_version, count(*) AS devices FROM"
                     " devices GROUP BY release, version, security_version ORDER BY"
                     " security_version DESC, version DESC",
                     NULL, 0, &tmp, msg)) != UPK_OK)
        goto fail;
    cJSON_AddItemToObject(o, "versions", tmp);
    if ((err = query(ctl,
                     "SELECT security_version, count(*) AS devices FROM devices GROUP BY"
                     " security_version ORDER BY security_version DESC",
                     NULL, 0, &tmp, msg)) != UPK_OK)
        goto fail;
    cJSON_AddItemToObject(o, "security_versions", tmp);
    /* Not patched N days after the release that raised the security version
     * above theirs was imported. */
    if ((err = query(ctl,
                     "SELECT d.id, d.version, d.security_version, (SELECT min(imported_ms)"
                     " FROM releases r WHERE r.security_version > d.security_version AND"
                     " (',' || r.hw || ',') LIKE ('%,' || d.hw || ',%')) AS fix_since_ms"
                     " FROM devices d WHERE fix_since_ms IS NOT NULL AND fix_since_ms <= ?"
                     " ORDER BY fix_since_ms, d.id LIMIT 50",
                     bcut, 1, &tmp, msg)) != UPK_OK)
        goto fail;
    cJSON_AddItemToObject(o, "unpatched", tmp);
    if ((err = query(ctl,
                     "SELECT id, version, support_until FROM devices WHERE support_until > 0"
                     " AND support_until < ? ORDER BY support_until LIMIT 50",
                     bnow, 1, &tmp, msg)) != UPK_OK)
        goto fail;
    cJSON_AddItemToObject(o, "past_support", tmp);
    /* Update-capability elements (docs/update-capability.md): counts, and the
     * devices whose security support ends within UPK_LABEL_NEAR_DAYS. */
    char near_s[24];
    fmt_long(near_s, sizeof(near_s), ctl->now_ms / 1000 + (long long)UPK_LABEL_NEAR_DAYS * 86400);
    const char *bnear[] = {now_s, near_s};
    if ((err = query(
             ctl,
             "SELECT total(state_ts > 0) AS reported, total(cap_automatic) AS automatic,"
             " total(cap_signed) AS signed_only, total(cap_rollback) AS rollback,"
             " total(cap_delta) AS delta, total(" SUPPORT_VERIFIED ") AS"
             " support_signed, total(support_until > 0 AND support_signed AND NOT " SUPPORT_VERIFIED
             ") AS support_claimed, total(support_until > 0 AND NOT"
             " support_signed) AS support_config, total(support_until = 0) AS"
             " support_unstated,"
             " total(support_until > ?2) AS supported, total(support_until >= ?1 AND"
             " support_until <= ?2) AS support_ending, total(support_until > 0 AND"
             " support_until < ?1) AS support_ended FROM devices",
             bnear, 2, &tmp, msg)) != UPK_OK)
        goto fail;
    cJSON_AddItemToObject(o, "capability", cJSON_DetachItemFromArray(tmp, 0));
    cJSON_Delete(tmp);
    tmp = NULL;
    cJSON_AddNumberToObject(o, "near_days", UPK_LABEL_NEAR_DAYS);
    if ((err = query(ctl,
                     "SELECT id, version, support_until, " SUPPORT_VERIFIED " AS support_signed"
                     " FROM devices WHERE support_until >= ?1 AND support_until <= ?2"
                     " ORDER BY support_until, id LIMIT 50",
                     bnear, 2, &tmp, msg)) != UPK_OK)
        goto fail;
    cJSON_AddItemToObject(o, "near_support", tmp);
    /* Drift: devices running another release than the controller desires
     * for them while not updating (a replayed older release, or an update
     * the controller counted that the device does not run). */
    if ((err = query(ctl,
                     "SELECT id, release, version, desired_release, desired_campaign, status"
                     " FROM devices WHERE " UPK_STORE_DRIFT_SQL " ORDER BY id LIMIT 50",
                     NULL, 0, &tmp, msg)) != UPK_OK)
        goto fail;
    cJSON_AddItemToObject(o, "drift", tmp);
    if ((err = query(ctl, "SELECT count(*) AS n FROM devices WHERE " UPK_STORE_DRIFT_SQL, NULL, 0,
                     &tmp, msg)) != UPK_OK)
        goto fail;
    cJSON_AddNumberToObject(summary, "drift",
                            cJSON_GetObjectItem(cJSON_GetArrayItem(tmp, 0), "n")->valuedouble);
    cJSON_Delete(tmp);
    tmp = NULL;
    tmp = cJSON_AddArrayToObject(o, "campaigns");
    if (tmp == NULL || (err = campaign_posture(ctl, tmp, msg)) != UPK_OK)
        goto fail;
    *data = o;
    return UPK_OK;
fail:
    cJSON_Delete(o);
    return err != UPK_OK ? err : UPK_E_NOMEM;
}

static const struct command commands[] = {
    {"audit.list", false, h_audit_list},
    {"campaign.abort", true, h_campaign_abort},
    {"campaign.create", true, h_campaign_create},
    {"campaign.list", false, h_campaign_list},
    {"campaign.pause", true, h_campaign_pause},
    {"campaign.resume", true, h_campaign_resume},
    {"campaign.retry", true, h_campaign_retry},
    {"campaign.rollback", true, h_campaign_rollback},
    {"campaign.show", false, h_campaign_show},
    {"device.capability", false, h_device_capability},
    {"device.label", true, h_device_label},
    {"device.list", false, h_device_list},
    {"device.show", false, h_device_show},
    {"ping", false, h_ping},
    {"release.list", false, h_release_list},
    {"release.show", false, h_release_show},
    {"release.upload.begin", true, h_upload_begin},
    {"release.upload.chunk", true, h_upload_chunk},
    {"release.upload.end", true, h_upload_end},
    {"report.posture", false, h_report_posture},
};

upk_err upk_ctl_new(upk_store *store, const upk_serve_config *cfg, upk_ctl_changed_fn changed,
                    void *ud, upk_ctl **out)
{
    upk_ctl *ctl = calloc(1, sizeof(*ctl));
    if (ctl == NULL)
        return UPK_E_NOMEM;
    ctl->store = store;
    ctl->cfg = cfg;
    ctl->changed = changed;
    ctl->ud = ud;
    for (size_t i = 0; i < UPK_UPLOADS_MAX; i++)
        ctl->uploads[i].fd = -1;
    *out = ctl;
    return UPK_OK;
}

void upk_ctl_free(upk_ctl *ctl)
{
    if (ctl == NULL)
        return;
    for (size_t i = 0; i < UPK_UPLOADS_MAX; i++)
        upload_drop(&ctl->uploads[i]);
    free(ctl);
}

/* Splits "role:name"; false unless role is operator/admin and name == op. */
static bool sender_ok(const char *sender, const char *op, bool *admin)
{
    const char *colon = sender != NULL ? strchr(sender, ':') : NULL;
    if (colon == NULL)
        return false;
    size_t rl = (size_t)(colon - sender);
    bool is_op = rl == 8 && strncmp(sender, "operator", 8) == 0;
    bool is_admin = rl == 5 && strncmp(sender, "admin", 5) == 0;
    *admin = is_admin;
    return (is_op || is_admin) && strcmp(colon + 1, op) == 0;
}

static bool readonly(const upk_ctl *ctl, const char *op)
{
    for (size_t i = 0; i < ctl->cfg->readonly_count; i++)
        if (strcmp(ctl->cfg->readonly[i], op) == 0)
            return true;
    return false;
}

static void audit(upk_ctl *ctl, const char *cmd, const cJSON *args, upk_err result)
{
    char *text = NULL;
    if (args != NULL) {
        cJSON *copy = cJSON_Duplicate(args, true);
        if (copy != NULL) {
            cJSON_DeleteItemFromObjectCaseSensitive(copy, "data");
            cJSON_DeleteItemFromObjectCaseSensitive(copy, "manifest");
            cJSON_DeleteItemFromObjectCaseSensitive(copy, "sig");
            /* The target first ("id", then "release", "target"), so that a
             * long reason or filter never hides what was acted on. */
            static const char *const first[] = {"target", "release", "id"};
            for (size_t i = 0; i < sizeof(first) / sizeof(first[0]); i++) {
                cJSON *t = cJSON_DetachItemFromObjectCaseSensitive(copy, first[i]);
                if (t != NULL && !cJSON_InsertItemInArray(copy, 0, t) &&
                    !cJSON_AddItemToObject(copy, first[i], t))
                    cJSON_Delete(t);
            }
            text = cJSON_PrintUnformatted(copy);
            cJSON_Delete(copy);
        }
    }
    if (upk_store_audit(ctl->store, ctl->now_ms, ctl->sender[0] ? ctl->sender : "(none)", cmd,
                        text != NULL ? text : "{}", upk_err_str(result)) != UPK_OK)
        upk_error("ctl: audit record failed for %s by %s", cmd, ctl->sender);
    free(text);
}

upk_err upk_ctl_handle(upk_ctl *ctl, const char *op, const char *sender, const uint8_t *payload,
                       size_t len, int64_t now_ms, char **out, size_t *outlen)
{
    upk_ctl_req req;
    memset(&req, 0, sizeof(req));
    upk_ctl_resp resp;
    memset(&resp, 0, sizeof(resp));
    char msg[MSG_CAP] = "";
    ctl->now_ms = now_ms;
    int r = snprintf(ctl->op, sizeof(ctl->op), "%s", op);
    r = snprintf(ctl->sender, sizeof(ctl->sender), "%s", sender != NULL ? sender : "");
    (void)r;
    bool admin = false;
    upk_err err = upk_ctl_req_decode((const char *)payload, len, &req);
    if (err != UPK_OK) {
        /* Answer with the correlation id when one can be read at all. */
        cJSON *j = cJSON_ParseWithLength((const char *)payload, len);
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(j, "id");
        r = snprintf(resp.id, sizeof(resp.id), "%s",
                     cJSON_IsString(id) && upk_id_valid(id->valuestring) ? id->valuestring
                                                                         : "invalid");
        cJSON_Delete(j);
        resp.error = err;
        r = snprintf(resp.message, sizeof(resp.message),
                     "malformed request (%s); use the upkeep CLI of the same version",
                     upk_err_str(err));
        audit(ctl, "(malformed)", NULL, err);
        goto reply;
    }
    memcpy(resp.id, req.id, sizeof(resp.id));
    const struct command *cmd = NULL;
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (strcmp(commands[i].name, req.cmd) == 0)
            cmd = &commands[i];
    if (!sender_ok(ctl->sender, op, &admin)) {
        resp.error = UPK_E_DENIED;
        r = snprintf(resp.message, sizeof(resp.message),
                     "sender '%s' may not send operator commands as '%s'", ctl->sender, op);
        upk_warn("ctl: denied %s from sender=%s on ctl/req/%s", req.cmd, ctl->sender, op);
        audit(ctl, req.cmd, req.args, UPK_E_DENIED);
        goto reply;
    }
    if (cmd == NULL) {
        resp.error = UPK_E_NOT_FOUND;
        r = snprintf(resp.message, sizeof(resp.message),
                     "unknown command '%s'; this controller is upkeep %s", req.cmd, UPK_VERSION);
        audit(ctl, req.cmd, req.args, UPK_E_NOT_FOUND); /* probing is recorded too */
        goto reply;
    }
    if (cmd->writes && !admin && readonly(ctl, op)) {
        resp.error = UPK_E_DENIED;
        r = snprintf(resp.message, sizeof(resp.message),
                     "operator '%s' is read-only on this controller; ask an admin", op);
        upk_warn("ctl: denied %s for read-only operator %s", req.cmd, op);
        audit(ctl, req.cmd, req.args, UPK_E_DENIED);
        goto reply;
    }
    resp.error = cmd->fn(ctl, req.args, &resp.data, msg);
    if (resp.error != UPK_OK && msg[0] == '\0')
        r = snprintf(msg, sizeof(msg), "%s", upk_err_msg(resp.error));
    memcpy(resp.message, msg, sizeof(resp.message));
    if (resp.error != UPK_OK) {
        cJSON_Delete(resp.data);
        resp.data = NULL;
    }
    if (cmd->writes && strcmp(cmd->name, "release.upload.chunk") != 0)
        audit(ctl, req.cmd, req.args, resp.error);
reply:
    err = upk_ctl_resp_encode(&resp, out, outlen);
    if (err != UPK_OK && resp.data != NULL) {
        /* Too large for one reply: say so instead. */
        cJSON_Delete(resp.data);
        resp.data = NULL;
        resp.error = UPK_E_MSG_TOO_LARGE;
        r = snprintf(resp.message, sizeof(resp.message),
                     "reply too large for one message; narrow it with --limit or a filter");
        err = upk_ctl_resp_encode(&resp, out, outlen);
    }
    upk_ctl_req_cleanup(&req);
    upk_ctl_resp_cleanup(&resp);
    return err;
}
