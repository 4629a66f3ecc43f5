/* Built-in install modules: "file" (one file replaced atomically, the
 * previous kept for rollback), "ab-dir" (two slot directories and an atomic
 * `current` symlink switch) and external update modules (an executable called
 * once per step). Blocking work runs on the thread pool or in a child. */
#include "agent_int.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "upkeep/fs.h"
#include "upkeep/log.h"

#define MSG_MAX 256

/* ---- running a step body on the pool */
typedef upk_err (*step_body)(void *self, upk_install_job *job, char *msg, size_t cap);

typedef struct step_ctx {
    void *self;
    upk_install_job *job;
    step_body body;
    upk_installer_cb cb;
    void *cb_data;
    upk_err err;
    char msg[MSG_MAX];
} step_ctx;

static void step_work(void *arg)
{
    step_ctx *c = arg;
    c->err = c->body(c->self, c->job, c->msg, sizeof(c->msg));
}

static void step_done(void *arg, bool cancelled)
{
    step_ctx *c = arg;
    upk_err err = cancelled ? UPK_E_CANCELLED : c->err;
    c->cb(err, c->msg[0] != '\0' ? c->msg : NULL, c->cb_data);
    free(c);
}

static upk_err run_step(uv_loop_t *loop, void *self, upk_install_job *job, step_body body,
                        upk_installer_cb cb, void *cb_data)
{
    step_ctx *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return UPK_E_NOMEM;
    c->self = self;
    c->job = job;
    c->body = body;
    c->cb = cb;
    c->cb_data = cb_data;
    upk_err err = upk__work_run(loop, step_work, step_done, c);
    if (err != UPK_OK)
        free(c);
    return err;
}

static upk_err fail(char *msg, size_t cap, upk_err err, const char *what, const char *path)
{
    (void)snprintf(msg, cap, "%s %s: %s", what, path, strerror(errno));
    return err;
}

static upk_err sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return UPK_E_IO;
    int rc = fsync(fd);
    close(fd);
    return rc == 0 ? UPK_OK : UPK_E_IO;
}

static upk_err settings_str(const char *json, const char *field, char *out, size_t cap,
                            bool required, char *eb, size_t ecap, const char *module)
{
    cJSON *root = cJSON_Parse(json);
    upk_err err = UPK_OK;
    const cJSON *v = root != NULL ? cJSON_GetObjectItemCaseSensitive(root, field) : NULL;
    if (v == NULL) {
        if (required) {
            (void)snprintf(eb, ecap, "module_settings.%s: is required by module %s", field, module);
            err = UPK_E_CONFIG_INVALID;
        }
    } else if (!cJSON_IsString(v) || v->valuestring == NULL || v->valuestring[0] != '/' ||
               strlen(v->valuestring) >= cap) {
        (void)snprintf(eb, ecap, "module_settings.%s: must be an absolute path under %zu bytes",
                       field, cap);
        err = UPK_E_CONFIG_INVALID;
    } else {
        memcpy(out, v->valuestring, strlen(v->valuestring) + 1);
    }
    cJSON_Delete(root);
    return err;
}

/* ================= file ================= */
typedef struct file_mod {
    uv_loop_t *loop;
    bool fsync;
    char path[UPK_AGENT_PATH_MAX];
    char newp[UPK_AGENT_PATH_MAX + 16];
    char prevp[UPK_AGENT_PATH_MAX + 16];
    char tmpp[UPK_AGENT_PATH_MAX + 16];
    char dir[UPK_AGENT_PATH_MAX];
} file_mod;

/* install: drop a stale previous copy, then stage the new file beside the
 * target (`<path>.upknew`), fsynced. The target is untouched. */
static upk_err file_install_body(void *self, upk_install_job *job, char *msg, size_t cap)
{
    file_mod *m = self;
    if (unlink(m->prevp) != 0 && errno != ENOENT)
        return fail(msg, cap, UPK_E_INSTALL_FAILED, "cannot remove", m->prevp);
    upk_err err = upk__copy_file(job->artifact_path, m->tmpp, m->fsync);
    if (err != UPK_OK)
        return fail(msg, cap, UPK_E_INSTALL_FAILED, "cannot stage", m->tmpp);
    struct stat st;
    mode_t mode = stat(m->path, &st) == 0 ? (st.st_mode & 07777) : 0755;
    if (chmod(m->tmpp, mode) != 0 || rename(m->tmpp, m->newp) != 0)
        return fail(msg, cap, UPK_E_INSTALL_FAILED, "cannot stage", m->newp);
    if (m->fsync && sync_dir(m->dir) != UPK_OK)
        return fail(msg, cap, UPK_E_INSTALL_FAILED, "cannot sync", m->dir);
    return UPK_OK;
}

/* activate: keep the current file as `<path>.upkprev` (a hard link), then
 * rename the staged file over the target: one atomic switch. Running it again
 * after it completed changes nothing. */
static upk_err file_activate_body(void *self, upk_install_job *job, char *msg, size_t cap)
{
    (void)job;
    file_mod *m = self;
    struct stat st;
    if (stat(m->newp, &st) != 0)
        return UPK_OK; /* already switched */
    if (stat(m->path, &st) == 0) {
        if (unlink(m->prevp) != 0 && errno != ENOENT)
            return fail(msg, cap, UPK_E_ACTIVATE_FAILED, "cannot remove", m->prevp);
        if (link(m->path, m->prevp) != 0)
            return fail(msg, cap, UPK_E_ACTIVATE_FAILED, "cannot keep", m->prevp);
    }
    if (rename(m->newp, m->path) != 0)
        return fail(msg, cap, UPK_E_ACTIVATE_FAILED, "cannot replace", m->path);
    if (m->fsync && sync_dir(m->dir) != UPK_OK)
        return fail(msg, cap, UPK_E_ACTIVATE_FAILED, "cannot sync", m->dir);
    return UPK_OK;
}

/* rollback: before activation only the staged file goes; after it, the kept
 * previous file is put back (a link renamed over the target, so the step can
 * run again), or the target removed if there was none before. */
static upk_err file_rollback_body(void *self, upk_install_job *job, char *msg, size_t cap)
{
    file_mod *m = self;
    struct stat st;
    if (unlink(m->tmpp) != 0 && errno != ENOENT)
        return fail(msg, cap, UPK_E_ROLLBACK_FAILED, "cannot remove", m->tmpp);
    bool staged = stat(m->newp, &st) == 0;
    if (staged && unlink(m->newp) != 0)
        return fail(msg, cap, UPK_E_ROLLBACK_FAILED, "cannot remove", m->newp);
    if (job->reached < UPK_STATUS_ACTIVATING || staged)
        return m->fsync ? sync_dir(m->dir) : UPK_OK;
    if (stat(m->prevp, &st) == 0) {
        if (unlink(m->tmpp) != 0 && errno != ENOENT)
            return fail(msg, cap, UPK_E_ROLLBACK_FAILED, "cannot remove", m->tmpp);
        if (link(m->prevp, m->tmpp) != 0 || rename(m->tmpp, m->path) != 0)
            return fail(msg, cap, UPK_E_ROLLBACK_FAILED, "cannot restore", m->path);
    } else if (unlink(m->path) != 0 && errno != ENOENT) {
        return fail(msg, cap, UPK_E_ROLLBACK_FAILED, "cannot remove", m->path);
    }
    if (m->fsync && sync_dir(m->dir) != UPK_OK)
        return fail(msg, cap, UPK_E_ROLLBACK_FAILED, "cannot sync", m->dir);
    return UPK_OK;
}

static upk_err file_install(void *self, upk_install_job *job, upk_installer_cb cb, void *d)
{
    return run_step(((file_mod *)self)->loop, self, job, file_install_body, cb, d);
}
static upk_err file_activate(void *self, upk_install_job *job, upk_installer_cb cb, void *d)
{
    return run_step(((file_mod *)self)->loop, self, job, file_activate_body, cb, d);
}
static upk_err file_rollback(void *self, upk_install_job *job, upk_installer_cb cb, void *d)
{
    return run_step(((file_mod *)self)->loop, self, job, file_rollback_body, cb, d);
}

static upk_err file_image_path(void *self, char *buf, size_t cap)
{
    file_mod *m = self;
    size_t n = strlen(m->path);
    if (n >= cap)
        return UPK_E_BUFFER_TOO_SMALL;
    memcpy(buf, m->path, n + 1);
    return UPK_OK;
}

static void plain_destroy(void *self)
{
    free(self);
}

static const upk_installer file_ops = {
    .name = "file",
    .can_rollback = true,
    .install = file_install,
    .activate = file_activate,
    .health = NULL,
    .commit = NULL,
    .rollback = file_rollback,
    .image_path = file_image_path,
    .active_slot = NULL,
    .destroy = plain_destroy,
};

static upk_err file_new(uv_loop_t *loop, const upk_agent_config *cfg, void **self, char *eb,
                        size_t ecap)
{
    file_mod *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return UPK_E_NOMEM;
    m->loop = loop;
    m->fsync = cfg->fsync;
    upk_err err = settings_str(cfg->module_settings, "path", m->path, sizeof(m->path), true, eb,
                               ecap, "file");
    if (err != UPK_OK) {
        free(m);
        return err;
    }
    (void)snprintf(m->newp, sizeof(m->newp), "%s.upknew", m->path);
    (void)snprintf(m->prevp, sizeof(m->prevp), "%s.upkprev", m->path);
    (void)snprintf(m->tmpp, sizeof(m->tmpp), "%s.upktmp", m->path);
    memcpy(m->dir, m->path, sizeof(m->dir));
    char *slash = strrchr(m->dir, '/');
    if (slash == m->dir)
        slash[1] = '\0';
    else
        *slash = '\0';
    char why[MSG_MAX];
    if (access(m->dir, F_OK) == 0 &&
        upk__fs_check(m->dir, UPK__FS_LINK | UPK__FS_ATOMIC_RENAME, why, sizeof(why)) != UPK_OK) {
        (void)snprintf(eb, ecap, "module_settings.path: module file cannot work here: %s", why);
        free(m);
        return UPK_E_CONFIG_INVALID;
    }
    *self = m;
    return UPK_OK;
}

/* ================= ab-dir ================= */
typedef struct abdir_mod {
    uv_loop_t *loop;
    bool fsync;
    char root[UPK_AGENT_PATH_MAX];
    char tar[UPK_AGENT_PATH_MAX];
} abdir_mod;

/* Active slot ("a"/"b") from the `current` link into out; "" when none. */
static void abdir_current(const abdir_mod *m, char *out, size_t cap)
{
    char link_path[UPK_AGENT_PATH_MAX + 16];
    char target[64];
    out[0] = '\0';
    if (upk__path(link_path, sizeof(link_path), m->root, "current") != UPK_OK)
        return;
    ssize_t n = readlink(link_path, target, sizeof(target) - 1);
    if (n <= 0)
        return;
    target[n] = '\0';
    /* Only the one-letter slot names are reported; copying that letter (not
     * the whole link target) is what fits in out. */
    if ((strcmp(target, "a") == 0 || strcmp(target, "b") == 0) && cap > 1) {
        out[0] = target[0];
        out[1] = '\0';
    }
}

static upk_err run_wait(char *const argv[], char *msg, size_t cap)
{
    extern char **environ;
    pid_t pid;
    int rc = posix_spawn(&pid, argv[0], NULL, NULL, argv, environ);
    if (rc != 0) {
        (void)snprintf(msg, cap, "cannot run %s: %s", argv[0], strerror(rc));
        return UPK_E_INSTALL_FAILED;
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            (void)snprintf(msg, cap, "waiting for %s: %s", argv[0], strerror(errno));
            return UPK_E_INSTALL_FAILED;
        }
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        (void)snprintf(msg, cap, "%s failed (status %d)", argv[0], status);
        return UPK_E_INSTALL_FAILED;
    }
    return UPK_OK;
}

/* install: the inactive slot is emptied and the artifact (a tar archive)
 * unpacked into it, then synced. The active slot is untouched. */
static upk_err abdir_install_body(void *self, upk_install_job *job, char *msg, size_t cap)
{
    abdir_mod *m = self;
    char cur[8];
    abdir_current(m, cur, sizeof(cur));
    if (job->slot[0] == '\0' || strcmp(job->slot, cur) == 0)
        (void)snprintf(job->slot, sizeof(job->slot), "%s", strcmp(cur, "a") == 0 ? "b" : "a");
    char dir[UPK_AGENT_PATH_MAX + 8];
    if (upk__path(dir, sizeof(dir), m->root, job->slot) != UPK_OK)
        return UPK_E_BUFFER_TOO_SMALL;
    if (upk__rm_rf(dir) != UPK_OK)
        return fail(msg, cap, UPK_E_INSTALL_FAILED, "cannot empty slot", dir);
    if (mkdir(dir, 0755) != 0)
        return fail(msg, cap, UPK_E_INSTALL_FAILED, "cannot create slot", dir);
    char *argv[] = {m->tar, "-x", "-f", (char *)job->artifact_path, "-C", dir, "--no-same-owner",
                    NULL};
    upk_err err = run_wait(argv, msg, cap);
    if (err != UPK_OK)
        return err;
    if (m->fsync) {
        int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0 || syncfs(fd) != 0) {
            if (fd >= 0)
                close(fd);
            return fail(msg, cap, UPK_E_INSTALL_FAILED, "cannot sync", dir);
        }
        close(fd);
    }
    return UPK_OK;
}

static upk_err abdir_point(abdir_mod *m, const char *slot, char *msg, size_t cap, upk_err code)
{
    char tmp[UPK_AGENT_PATH_MAX + 16], cur[UPK_AGENT_PATH_MAX + 16];
    if (upk__path(tmp, sizeof(tmp), m->root, "current.upktmp") != UPK_OK ||
        upk__path(cur, sizeof(cur), m->root, "current") != UPK_OK)
        return UPK_E_BUFFER_TOO_SMALL;
    if (unlink(tmp) != 0 && errno != ENOENT)
        return fail(msg, cap, code, "cannot remove", tmp);
    if (slot == NULL) {
        if (unlink(cur) != 0 && errno != ENOENT)
            return fail(msg, cap, code, "cannot remove", cur);
    } else if (symlink(slot, tmp) != 0 || rename(tmp, cur) != 0) {
        return fail(msg, cap, code, "cannot switch", cur);
    }
    if (m->fsync && sync_dir(m->root) != UPK_OK)
        return fail(msg, cap, code, "cannot sync", m->root);
    return UPK_OK;
}

static upk_err abdir_activate_body(void *self, upk_install_job *job, char *msg, size_t cap)
{
    if (job->slot[0] == '\0') {
        (void)snprintf(msg, cap, "no slot was installed");
        return UPK_E_ACTIVATE_FAILED;
    }
    return abdir_point(self, job->slot, msg, cap, UPK_E_ACTIVATE_FAILED);
}

/* rollback: if `current` points at the slot this update filled, point it
 * back at the other slot (or remove it when the other slot never existed). */
static upk_err abdir_rollback_body(void *self, upk_install_job *job, char *msg, size_t cap)
{
    abdir_mod *m = self;
    char cur[8];
    abdir_current(m, cur, sizeof(cur));
    if (job->slot[0] == '\0' || strcmp(cur, job->slot) != 0)
        return UPK_OK; /* never switched, or already switched back */
    const char *other = strcmp(job->slot, "a") == 0 ? "b" : "a";
    char dir[UPK_AGENT_PATH_MAX + 8];
    struct stat st;
    if (upk__path(dir, sizeof(dir), m->root, other) != UPK_OK)
        return UPK_E_BUFFER_TOO_SMALL;
    bool exists = stat(dir, &st) == 0 && S_ISDIR(st.st_mode);
    return abdir_point(m, exists ? other : NULL, msg, cap, UPK_E_ROLLBACK_FAILED);
}

static upk_err abdir_install(void *self, upk_install_job *job, upk_installer_cb cb, void *d)
{
    return run_step(((abdir_mod *)self)->loop, self, job, abdir_install_body, cb, d);
}
static upk_err abdir_activate(void *self, upk_install_job *job, upk_installer_cb cb, void *d)
{
    return run_step(((abdir_mod *)self)->loop, self, job, abdir_activate_body, cb, d);
}
static upk_err abdir_rollback(void *self, upk_install_job *job, upk_installer_cb cb, void *d)
{
    return run_step(((abdir_mod *)self)->loop, self, job, abdir_rollback_body, cb, d);
}
static void abdir_active_slot(void *self, char *buf, size_t cap)
{
    abdir_current(self, buf, cap);
}

static const upk_installer abdir_ops = {
    .name = "ab-dir",
    .can_rollback = true,
    .install = abdir_install,
    .activate = abdir_activate,
    .health = NULL,
    .commit = NULL,
    .rollback = abdir_rollback,
    .image_path = NULL,
    .active_slot = abdir_active_slot,
    .destroy = plain_destroy,
};

static upk_err abdir_new(uv_loop_t *loop, const upk_agent_config *cfg, void **self, char *eb,
                         size_t ecap)
{
    abdir_mod *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return UPK_E_NOMEM;
    m->loop = loop;
    m->fsync = cfg->fsync;
    (void)snprintf(m->tar, sizeof(m->tar), "/bin/tar");
    upk_err err = settings_str(cfg->module_settings, "root", m->root, sizeof(m->root) - 32, true,
                               eb, ecap, "ab-dir");
    if (err == UPK_OK)
        err = settings_str(cfg->module_settings, "tar", m->tar, sizeof(m->tar), false, eb, ecap,
                           "ab-dir");
    if (err == UPK_OK && upk_fs_mkdirs(m->root) != UPK_OK) {
        (void)snprintf(eb, ecap, "module_settings.root: cannot create %s", m->root);
        err = UPK_E_CONFIG_INVALID;
    }
    char why[MSG_MAX];
    if (err == UPK_OK &&
        upk__fs_check(m->root,
                      UPK__FS_SYMLINK | UPK__FS_ATOMIC_RENAME | (cfg->fsync ? UPK__FS_SYNCFS : 0),
                      why, sizeof(why)) != UPK_OK) {
        (void)snprintf(eb, ecap, "module_settings.root: module ab-dir cannot work here: %s", why);
        err = UPK_E_CONFIG_INVALID;
    }
    if (err != UPK_OK) {
        free(m);
        return err;
    }
    *self = m;
    return UPK_OK;
}

/* ================= external update modules ================= */
typedef struct ext_mod {
    uv_loop_t *loop;
    const upk_agent_config *cfg;
    char path[UPK_AGENT_PATH_MAX];
} ext_mod;

typedef struct ext_call {
    ext_mod *m;
    upk_install_job *job;
    const char *step;
    const char *next_step; /* install runs "download" then "install" */
    upk_installer_cb cb;
    void *cb_data;
} ext_call;

static upk_err ext_start(ext_call *c);

static void ext_done(int status, void *cb_data)
{
    ext_call *c = cb_data;
    upk_err err = UPK_OK;
    char msg[MSG_MAX];
    msg[0] = '\0';
    bool is_rollback = strcmp(c->step, "rollback") == 0;
    bool is_health = strcmp(c->step, "health") == 0;
    bool is_booted = strcmp(c->step, "booted") == 0;
    bool can_reboot = is_rollback || strcmp(c->step, "activate") == 0;
    if (is_booted) {
        /* 0: the installed slot runs; 3: another one (the bootloader fell
         * back); anything else: the module cannot tell (a module written
         * before this step existed exits 2 or fails on an unknown step). */
        err = status == 0 ? UPK_OK : status == 3 ? UPK_E_BOOT_FAILED : UPK_E_NOT_FOUND;
        if (status == 3)
            (void)snprintf(msg, sizeof(msg), "module %s: another slot than the installed one runs",
                           c->m->cfg->module);
    } else if (can_reboot && status == 4) {
        err = UPK_E_REBOOT_PENDING; /* armed; a reboot was requested */
    } else if (status == 0 || (status == 2 && !is_rollback)) {
        if (c->next_step != NULL) {
            c->step = c->next_step;
            c->next_step = NULL;
            err = ext_start(c);
            if (err == UPK_OK)
                return;
            (void)snprintf(msg, sizeof(msg), "cannot run %s %s", c->m->cfg->module, c->step);
        }
    } else {
        err = is_rollback                        ? UPK_E_ROLLBACK_FAILED
              : is_health && status == -2        ? UPK_E_HEALTH_TIMEOUT
              : is_health                        ? UPK_E_HEALTH_FAILED
              : strcmp(c->step, "activate") == 0 ? UPK_E_ACTIVATE_FAILED
              : status == -2                     ? UPK_E_TIMEOUT
                                                 : UPK_E_INSTALL_FAILED;
        if (status == -2)
            (void)snprintf(msg, sizeof(msg), "module %s step %s timed out", c->m->cfg->module,
                           c->step);
        else
            (void)snprintf(msg, sizeof(msg), "module %s step %s exited with %d", c->m->cfg->module,
                           c->step, status);
    }
    c->cb(err, msg[0] != '\0' ? msg : NULL, c->cb_data);
    free(c);
}

static upk_err ext_start(ext_call *c)
{
    const upk_install_job *j = c->job;
    enum { NENV = 11, ENV_MAX = UPK_AGENT_PATH_MAX + 64 };
    char *env[NENV + 1];
    char *bufs = calloc(NENV, ENV_MAX);
    if (bufs == NULL)
        return UPK_E_NOMEM;
    const char *names[NENV] = {"UPK_STEP",    "UPK_DEVICE",   "UPK_CAMPAIGN", "UPK_RELEASE",
                               "UPK_VERSION", "UPK_ARTIFACT", "UPK_WORK_DIR", "UPK_SLOT",
                               "UPK_REACHED", "UPK_MODULE",   "UPK_SETTINGS"};
    const char *vals[NENV] = {c->step,
                              j->device,
                              j->campaign,
                              j->manifest->name,
                              j->manifest->version,
                              j->artifact_path,
                              j->work_dir,
                              j->slot,
                              upk_status_str(j->reached),
                              c->m->cfg->module,
                              c->m->cfg->module_settings};
    for (size_t i = 0; i < NENV; i++) {
        env[i] = bufs + i * ENV_MAX;
        (void)snprintf(env[i], ENV_MAX, "%s=%s", names[i], vals[i] != NULL ? vals[i] : "");
    }
    env[NENV] = NULL;
    char *argv[] = {c->m->path, (char *)c->step, (char *)j->work_dir, (char *)j->artifact_path,
                    NULL};
    uint32_t timeout_ms = c->m->cfg->limits.step_timeout_s * 1000u;
    if (strcmp(c->step, "health") == 0)
        timeout_ms = c->m->cfg->health_timeout_s * 1000u;
    upk_info("module=%s step=%s release=%s campaign=%s", c->m->cfg->module, c->step,
             j->manifest->name, j->campaign);
    upk_err err = upk__spawn(c->m->loop, argv, env, timeout_ms, ext_done, c);
    free(bufs);
    return err;
}

static upk_err ext_call_new(void *self, upk_install_job *job, const char *step,
                            const char *next_step, upk_installer_cb cb, void *cb_data)
{
    ext_call *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return UPK_E_NOMEM;
    c->m = self;
    c->job = job;
    c->step = step;
    c->next_step = next_step;
    c->cb = cb;
    c->cb_data = cb_data;
    upk_err err = ext_start(c);
    if (err != UPK_OK)
        free(c);
    return err;
}

static upk_err ext_install(void *self, upk_install_job *job, upk_installer_cb cb, void *d)
{
    return ext_call_new(self, job, "download", "install", cb, d);
}
static upk_err ext_activate(void *self, upk_install_job *job, upk_installer_cb cb, void *d)
{
    return ext_call_new(self, job, "activate", NULL, cb, d);
}
static upk_err ext_health(void *self, upk_install_job *job, upk_installer_cb cb, void *d)
{
    return ext_call_new(self, job, "health", NULL, cb, d);
}
static upk_err ext_commit(void *self, upk_install_job *job, upk_installer_cb cb, void *d)
{
    return ext_call_new(self, job, "commit", NULL, cb, d);
}
static upk_err ext_rollback(void *self, upk_install_job *job, upk_installer_cb cb, void *d)
{
    return ext_call_new(self, job, "rollback", NULL, cb, d);
}
static upk_err ext_booted(void *self, upk_install_job *job, upk_installer_cb cb, void *d)
{
    return ext_call_new(self, job, "booted", NULL, cb, d);
}

static const upk_installer ext_ops = {
    .name = "external",
    .can_rollback = true,
    .install = ext_install,
    .activate = ext_activate,
    .health = ext_health,
    .commit = ext_commit,
    .rollback = ext_rollback,
    .image_path = NULL,
    .active_slot = NULL,
    .booted = ext_booted,
    .destroy = plain_destroy,
};

static upk_err ext_new(uv_loop_t *loop, const upk_agent_config *cfg, void **self, char *eb,
                       size_t ecap)
{
    ext_mod *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return UPK_E_NOMEM;
    m->loop = loop;
    m->cfg = cfg;
    if (upk__path(m->path, sizeof(m->path), cfg->modules_dir, cfg->module) != UPK_OK ||
        access(m->path, X_OK) != 0) {
        (void)snprintf(eb, ecap, "module: %s is not an executable update module in %s", cfg->module,
                       cfg->modules_dir);
        free(m);
        return UPK_E_CONFIG_INVALID;
    }
    *self = m;
    return UPK_OK;
}

upk_err upk_installer_new(uv_loop_t *loop, const upk_agent_config *cfg, const upk_installer **ops,
                          void **self, char *eb, size_t ecap)
{
    if (eb != NULL && ecap > 0)
        eb[0] = '\0';
    const char *mod = cfg->module != NULL ? cfg->module : "file";
    upk_err err;
    /* The journal, facts and outbox are replaced by rename: data_dir must
     * keep that atomic across a power cut (real devices; simulators do not
     * fsync and run thousands of agents in one process). */
    char why[MSG_MAX];
    if (cfg->fsync && cfg->data_dir != NULL && access(cfg->data_dir, F_OK) == 0 &&
        upk__fs_check(cfg->data_dir, UPK__FS_ATOMIC_RENAME, why, sizeof(why)) != UPK_OK) {
        (void)snprintf(eb, ecap, "data_dir: %s", why);
        return UPK_E_CONFIG_INVALID;
    }
    if (strcmp(mod, "file") == 0) {
        err = file_new(loop, cfg, self, eb, ecap);
        if (err == UPK_OK)
            *ops = &file_ops;
    } else if (strcmp(mod, "ab-dir") == 0) {
        err = abdir_new(loop, cfg, self, eb, ecap);
        if (err == UPK_OK)
            *ops = &abdir_ops;
    } else {
        err = ext_new(loop, cfg, self, eb, ecap);
        if (err == UPK_OK)
            *ops = &ext_ops;
    }
    return err;
}
