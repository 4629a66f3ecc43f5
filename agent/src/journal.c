/* The update journal and the installed facts: small JSON files replaced
 * atomically (temp, fsync, rename, fsync dir) so that a power cut leaves the
 * previous or the next version of each, never a mix. */
#include "agent_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "upkeep/fs.h"
#include "upkeep/hash.h"
#include "upkeep/id.h"

#define JOURNAL_V 1

void upk__journal_cleanup(upk__journal *j)
{
    free(j->manifest);
    memset(j, 0, sizeof(*j));
    j->status = UPK_STATUS_IDLE;
}

/* Replaces path atomically; without do_sync (simulators only) the rename is
 * still atomic but nothing is forced to disk. */
static upk_err write_replace(const char *path, const char *text, size_t len, bool do_sync)
{
    if (do_sync)
        return upk_fs_write_atomic(path, text, len);
    char tmp[UPK_AGENT_PATH_MAX + 8];
    int n = snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    if (n < 0 || (size_t)n >= sizeof(tmp))
        return UPK_E_BUFFER_TOO_SMALL;
    FILE *f = fopen(tmp, "wb");
    if (f == NULL)
        return UPK_E_IO;
    bool ok = fwrite(text, 1, len, f) == len;
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        (void)unlink(tmp);
        return UPK_E_IO;
    }
    return UPK_OK;
}

static upk_err save_json(const char *path, cJSON *root, bool do_sync)
{
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (text == NULL)
        return UPK_E_NOMEM;
    upk_err err = write_replace(path, text, strlen(text), do_sync);
    free(text);
    return err;
}

upk_err upk__journal_save(const char *path, const upk__journal *j)
{
    return upk__journal_save_ex(path, j, true);
}

upk_err upk__journal_save_ex(const char *path, const upk__journal *j, bool do_sync)
{
    cJSON *root = cJSON_CreateObject();
    if (root == NULL)
        return UPK_E_NOMEM;
    char sig64[UPK_SIG_MAX * 2 + 8];
    size_t siglen = 0;
    upk_err err = upk_base64_encode(j->sig, j->sig_len, sig64, sizeof(sig64), &siglen);
    if (err != UPK_OK) {
        cJSON_Delete(root);
        return err;
    }
    bool ok = cJSON_AddNumberToObject(root, "v", JOURNAL_V) &&
              cJSON_AddStringToObject(root, "status", upk_status_str(j->status)) &&
              cJSON_AddBoolToObject(root, "rolling_back", j->rolling_back) &&
              cJSON_AddStringToObject(root, "error", upk_err_str(j->error)) &&
              cJSON_AddStringToObject(root, "message", j->message) &&
              cJSON_AddStringToObject(root, "campaign", j->campaign) &&
              cJSON_AddStringToObject(root, "desired_id", j->desired_id) &&
              cJSON_AddStringToObject(root, "key_id", j->key_id) &&
              cJSON_AddStringToObject(root, "manifest", j->manifest != NULL ? j->manifest : "") &&
              cJSON_AddStringToObject(root, "sig", sig64) &&
              cJSON_AddStringToObject(root, "slot", j->slot) &&
              cJSON_AddNumberToObject(root, "restarts", j->restarts) &&
              cJSON_AddNumberToObject(root, "event_seq", (double)j->event_seq) &&
              cJSON_AddBoolToObject(root, "committing", j->committing);
    if (!ok) {
        cJSON_Delete(root);
        return UPK_E_NOMEM;
    }
    return save_json(path, root, do_sync);
}

/* Copies string field name (at most cap-1 chars) into out; false if absent,
 * not a string or too long. */
static bool read_str(const cJSON *o, const char *name, char *out, size_t cap)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!cJSON_IsString(v) || v->valuestring == NULL)
        return false;
    size_t n = strlen(v->valuestring);
    if (n >= cap)
        return false;
    memcpy(out, v->valuestring, n + 1);
    return true;
}

static bool read_u64(const cJSON *o, const char *name, uint64_t *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 9007199254740992.0)
        return false;
    *out = (uint64_t)v->valuedouble;
    return true;
}

/* Reads path as a JSON object with "v": 1; removes a stale temp file. */
static upk_err load_json(const char *path, size_t max, cJSON **out)
{
    char tmp[UPK_AGENT_PATH_MAX + 8];
    int n = snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    if (n > 0 && (size_t)n < sizeof(tmp))
        (void)unlink(tmp); /* a write cut short; the real file is intact */
    char *buf = NULL;
    size_t len = 0;
    upk_err err = upk_fs_read(path, max, &buf, &len);
    if (err == UPK_E_NOT_FOUND)
        return err;
    if (err != UPK_OK)
        return UPK_E_STATE_CORRUPT;
    cJSON *root = cJSON_ParseWithLength(buf, len);
    free(buf);
    uint64_t v = 0;
    if (root == NULL || !cJSON_IsObject(root) || !read_u64(root, "v", &v) || v != JOURNAL_V) {
        cJSON_Delete(root);
        return UPK_E_STATE_CORRUPT;
    }
    *out = root;
    return UPK_OK;
}

upk_err upk__journal_load(const char *path, upk__journal *j)
{
    upk__journal_cleanup(j);
    cJSON *root = NULL;
    upk_err err = load_json(path, UPK__JOURNAL_MAX, &root);
    if (err == UPK_E_NOT_FOUND)
        return UPK_OK;
    if (err != UPK_OK)
        return err;
    err = UPK_E_STATE_CORRUPT;
    char status[32], ename[64], sig64[UPK_SIG_MAX * 2 + 8];
    uint64_t restarts = 0;
    const cJSON *rb = cJSON_GetObjectItemCaseSensitive(root, "rolling_back");
    const cJSON *man = cJSON_GetObjectItemCaseSensitive(root, "manifest");
    if (!read_str(root, "status", status, sizeof(status)) ||
        !upk_status_from_str(status, &j->status) ||
        !read_str(root, "error", ename, sizeof(ename)) || !upk_err_from_str(ename, &j->error) ||
        !read_str(root, "message", j->message, sizeof(j->message)) ||
        !read_str(root, "campaign", j->campaign, sizeof(j->campaign)) ||
        !read_str(root, "desired_id", j->desired_id, sizeof(j->desired_id)) ||
        !read_str(root, "key_id", j->key_id, sizeof(j->key_id)) ||
        !read_str(root, "sig", sig64, sizeof(sig64)) ||
        !read_str(root, "slot", j->slot, sizeof(j->slot)) ||
        !read_u64(root, "restarts", &restarts) || !cJSON_IsBool(rb) || !cJSON_IsString(man) ||
        man->valuestring == NULL || strlen(man->valuestring) > UPK_MANIFEST_MAX)
        goto out_corrupt;
    if (upk_base64_decode(sig64, strlen(sig64), j->sig, sizeof(j->sig), &j->sig_len) != UPK_OK)
        goto out_corrupt;
    j->rolling_back = cJSON_IsTrue(rb);
    j->restarts = restarts > UINT32_MAX ? UINT32_MAX : (uint32_t)restarts;
    /* Absent in journals written before it existed: 0, unknown. */
    if (cJSON_GetObjectItemCaseSensitive(root, "event_seq") != NULL &&
        !read_u64(root, "event_seq", &j->event_seq))
        goto out_corrupt;
    const cJSON *cm = cJSON_GetObjectItemCaseSensitive(root, "committing");
    if (cm != NULL && !cJSON_IsBool(cm))
        goto out_corrupt;
    j->committing = cJSON_IsTrue(cm);
    j->manifest_len = strlen(man->valuestring);
    if (j->manifest_len > 0) {
        j->manifest = strdup(man->valuestring);
        if (j->manifest == NULL) {
            err = UPK_E_NOMEM;
            goto out_corrupt;
        }
    }
    /* An update in progress needs its manifest to be resumed or undone. */
    if (j->status != UPK_STATUS_IDLE && !upk_status_is_final(j->status) && j->manifest == NULL)
        goto out_corrupt;
    cJSON_Delete(root);
    return UPK_OK;
out_corrupt:
    cJSON_Delete(root);
    upk__journal_cleanup(j);
    return err;
}

upk_err upk__installed_save(const char *path, const upk__installed *f)
{
    return upk__installed_save_ex(path, f, true);
}

upk_err upk__installed_save_ex(const char *path, const upk__installed *f, bool do_sync)
{
    char hex[UPK_SHA256_HEX_LEN + 1];
    upk_err err = upk_hex_encode(f->image_sha256, UPK_SHA256_LEN, hex, sizeof(hex));
    if (err != UPK_OK)
        return err;
    cJSON *root = cJSON_CreateObject();
    if (root == NULL)
        return UPK_E_NOMEM;
    bool ok = cJSON_AddNumberToObject(root, "v", JOURNAL_V) &&
              cJSON_AddStringToObject(root, "release", f->release) &&
              cJSON_AddStringToObject(root, "version", f->version) &&
              cJSON_AddNumberToObject(root, "security_version", (double)f->security_version) &&
              cJSON_AddStringToObject(root, "image_sha256", hex) &&
              cJSON_AddStringToObject(root, "campaign", f->campaign) &&
              cJSON_AddNumberToObject(root, "last_patched", (double)f->last_patched) &&
              cJSON_AddNumberToObject(root, "support_until", (double)f->support_until) &&
              cJSON_AddNumberToObject(root, "created", (double)f->created);
    if (!ok) {
        cJSON_Delete(root);
        return UPK_E_NOMEM;
    }
    return save_json(path, root, do_sync);
}

upk_err upk__installed_load(const char *path, upk__installed *f)
{
    upk__installed tmp;
    memset(&tmp, 0, sizeof(tmp));
    cJSON *root = NULL;
    upk_err err = load_json(path, 8192, &root);
    if (err == UPK_E_NOT_FOUND) {
        *f = tmp;
        return UPK_OK;
    }
    if (err != UPK_OK)
        return err;
    char hex[UPK_SHA256_HEX_LEN + 1];
    uint64_t lp = 0, su = 0, cr = 0;
    bool ok = read_str(root, "release", tmp.release, sizeof(tmp.release)) &&
              read_str(root, "version", tmp.version, sizeof(tmp.version)) &&
              read_u64(root, "security_version", &tmp.security_version) &&
              read_str(root, "image_sha256", hex, sizeof(hex)) &&
              read_str(root, "campaign", tmp.campaign, sizeof(tmp.campaign)) &&
              read_u64(root, "last_patched", &lp) && read_u64(root, "support_until", &su) &&
              upk_hex_decode(hex, strlen(hex), tmp.image_sha256, UPK_SHA256_LEN) == UPK_OK;
    /* "created" came with link keys: absent in older files means unknown. */
    if (ok && cJSON_GetObjectItemCaseSensitive(root, "created") != NULL)
        ok = read_u64(root, "created", &cr);
    cJSON_Delete(root);
    if (!ok)
        return UPK_E_STATE_CORRUPT;
    tmp.created = (int64_t)cr;
    tmp.last_patched = (int64_t)lp;
    tmp.support_until = (int64_t)su;
    *f = tmp;
    return UPK_OK;
}

upk_err upk__link_save_ex(const char *path, const upk__link *f, bool do_sync)
{
    char hex[UPK_SHA256_HEX_LEN + 1];
    upk_err err = upk_hex_encode(f->sha, UPK_SHA256_LEN, hex, sizeof(hex));
    if (err != UPK_OK)
        return err;
    /* Written as exact integer text: cJSON prints doubles with 15
     * significant digits when that reads back "close enough", which would
     * lose the low digits of a counter near 2^53. */
    char ctr[24];
    int n = snprintf(ctr, sizeof(ctr), "%" PRIu64, f->ctr);
    if (n < 0 || (size_t)n >= sizeof(ctr))
        return UPK_E_INTERNAL;
    cJSON *root = cJSON_CreateObject();
    if (root == NULL)
        return UPK_E_NOMEM;
    bool ok = cJSON_AddNumberToObject(root, "v", JOURNAL_V) &&
              cJSON_AddRawToObject(root, "ctr", ctr) &&
              cJSON_AddStringToObject(root, "sha256", hex) &&
              cJSON_AddNumberToObject(root, "fresh_until", (double)f->fresh_until);
    if (!ok) {
        cJSON_Delete(root);
        return UPK_E_NOMEM;
    }
    return save_json(path, root, do_sync);
}

upk_err upk__link_load(const char *path, upk__link *f)
{
    memset(f, 0, sizeof(*f));
    cJSON *root = NULL;
    upk_err err = load_json(path, 4096, &root);
    if (err == UPK_E_NOT_FOUND)
        return UPK_OK;
    if (err != UPK_OK)
        return err;
    upk__link tmp;
    memset(&tmp, 0, sizeof(tmp));
    char hex[UPK_SHA256_HEX_LEN + 1];
    uint64_t fu = 0;
    bool ok = read_u64(root, "ctr", &tmp.ctr) && read_str(root, "sha256", hex, sizeof(hex)) &&
              read_u64(root, "fresh_until", &fu) &&
              upk_hex_decode(hex, strlen(hex), tmp.sha, UPK_SHA256_LEN) == UPK_OK;
    cJSON_Delete(root);
    if (!ok)
        return UPK_E_STATE_CORRUPT;
    tmp.fresh_until = (int64_t)fu;
    *f = tmp;
    return UPK_OK;
}
