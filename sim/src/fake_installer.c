/* The simulator's fake installer: install, activate, health check, commit
 * and rollback are uv timers whose durations and failure probabilities come
 * from the device's hardware class. Installed images are kept
 * content-addressed in a shared directory (hard links, so a fleet with one
 * image holds one file) so that delta releases find their base image. */
#include "upkeep/sim.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "upkeep/fs.h"
#include "upkeep/hash.h"

#define HEX_LEN    UPK_SHA256_HEX_LEN
#define STATE_FILE "sim-image"
#define STATE_MAX  512

typedef enum sim_step {
    STEP_NONE,
    STEP_INSTALL,
    STEP_ACTIVATE,
    STEP_HEALTH,
    STEP_COMMIT,
    STEP_ROLLBACK
} sim_step;

struct upk_sim_inst {
    uv_loop_t *loop;
    const upk_sim_class *cls;
    const upk_sim_store *store;
    char device[UPK_ID_MAX + 1];
    char state_path[UPK_AGENT_PATH_MAX]; /* "" when state is kept in memory only */

    char image[HEX_LEN + 1]; /* active image, "" for none */
    char slot[2];            /* active slot, "a" or "b" */
    char prev_image[HEX_LEN + 1];
    char prev_slot[2];

    uv_timer_t timer;
    bool busy;
    sim_step step;
    upk_install_job *job;
    upk_installer_cb cb;
    void *cb_data;
    uint64_t rng;
};

/* ---------------------------------------------------------------- random */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* True with probability p (0..1). */
static bool draw(upk_sim_inst *in, double p)
{
    if (p <= 0)
        return false;
    if (p >= 1)
        return true;
    double u = (double)(splitmix64(&in->rng) >> 11) * (1.0 / 9007199254740992.0);
    return u < p;
}

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s != '\0'; s++) {
        h ^= (uint8_t)*s;
        h *= 0x100000001b3ull;
    }
    return h;
}

/* ---------------------------------------------------------------- state */

static void save_state(upk_sim_inst *in)
{
    if (in->state_path[0] == '\0')
        return;
    char text[STATE_MAX];
    int n = snprintf(text, sizeof(text), "%s %s %s %s\n", in->image[0] ? in->image : "-", in->slot,
                     in->prev_image[0] ? in->prev_image : "-", in->prev_slot);
    if (n < 0 || (size_t)n >= sizeof(text))
        return;
    /* Simulated devices do not need power-cut safety: a plain rewrite. */
    int fd = open(in->state_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    ssize_t w = write(fd, text, (size_t)n);
    (void)w;
    (void)close(fd);
}

/* Copies src into dst (cap bytes), cut short when longer; always NUL-ends. */
static void copy_str(char *dst, size_t cap, const char *src)
{
    size_t n = strnlen(src, cap - 1);
    memcpy(dst, src, n);
    dst[n] = '\0';
}

static bool valid_slot(const char *s)
{
    return strcmp(s, "a") == 0 || strcmp(s, "b") == 0;
}

static void load_field(char *dst, size_t cap, const char *src)
{
    if (strcmp(src, "-") == 0 || !upk_sha256_hex_valid(src))
        dst[0] = '\0';
    else
        copy_str(dst, cap, src);
}

/* Reads "IMAGE SLOT PREV PREVSLOT"; false when absent or malformed. */
static bool load_state(upk_sim_inst *in)
{
    char *text = NULL;
    size_t len = 0;
    if (in->state_path[0] == '\0' || upk_fs_read(in->state_path, STATE_MAX, &text, &len) != UPK_OK)
        return false;
    char img[STATE_MAX], slot[STATE_MAX], prev[STATE_MAX], pslot[STATE_MAX];
    bool ok = false;
    if (sscanf(text, "%511s %511s %511s %511s", img, slot, prev, pslot) == 4 && valid_slot(slot) &&
        valid_slot(pslot)) {
        load_field(in->image, sizeof(in->image), img);
        load_field(in->prev_image, sizeof(in->prev_image), prev);
        copy_str(in->slot, sizeof(in->slot), slot);
        copy_str(in->prev_slot, sizeof(in->prev_slot), pslot);
        ok = true;
    }
    free(text);
    return ok;
}

/* Keeps the verified image at artifact_path as images_dir/<hex>. */
static upk_err store_image(upk_sim_inst *in, const char *artifact_path, const char *hex)
{
    char dst[UPK_AGENT_PATH_MAX];
    int n = snprintf(dst, sizeof(dst), "%s/%s", in->store->images_dir, hex);
    if (n < 0 || (size_t)n >= sizeof(dst))
        return UPK_E_BUFFER_TOO_SMALL;
    if (access(dst, F_OK) == 0)
        return UPK_OK;
    if (link(artifact_path, dst) == 0 || errno == EEXIST)
        return UPK_OK;
    /* Another file system: copy to a private name, then rename into place. */
    char tmp[UPK_AGENT_PATH_MAX + UPK_ID_MAX + 8];
    n = snprintf(tmp, sizeof(tmp), "%s.%s.tmp", dst, in->device);
    if (n < 0 || (size_t)n >= sizeof(tmp))
        return UPK_E_BUFFER_TOO_SMALL;
    char *data = NULL;
    size_t len = 0;
    upk_err err = upk_fs_read(artifact_path, (size_t)1 << 31, &data, &len);
    if (err != UPK_OK)
        return err;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        free(data);
        return UPK_E_IO;
    }
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, data + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    free(data);
    if (close(fd) != 0 || off != len || rename(tmp, dst) != 0) {
        (void)unlink(tmp);
        return UPK_E_IO;
    }
    return UPK_OK;
}

/* ---------------------------------------------------------------- steps */

static void target_hex(const upk_install_job *job, char out[HEX_LEN + 1])
{
    if (upk_hex_encode(job->manifest->target_sha256, UPK_SHA256_LEN, out, HEX_LEN + 1) != UPK_OK)
        out[0] = '\0';
}

static void on_step_timer(uv_timer_t *t)
{
    upk_sim_inst *in = t->data;
    upk_install_job *job = in->job;
    upk_installer_cb cb = in->cb;
    void *cb_data = in->cb_data;
    sim_step step = in->step;
    upk_err err = UPK_OK;
    char msg[160];
    msg[0] = '\0';
    char hex[HEX_LEN + 1];

    switch (step) {
    case STEP_INSTALL:
        if (draw(in, in->cls->install_fail)) {
            err = UPK_E_INSTALL_FAILED;
            (void)snprintf(msg, sizeof(msg), "simulated install failure on %s", in->cls->name);
            break;
        }
        target_hex(job, hex);
        err = store_image(in, job->artifact_path, hex);
        if (err != UPK_OK) {
            (void)snprintf(msg, sizeof(msg), "cannot keep the installed image: %s",
                           upk_err_str(err));
            err = UPK_E_INSTALL_FAILED;
            break;
        }
        (void)snprintf(job->slot, sizeof(job->slot), "%s", strcmp(in->slot, "a") == 0 ? "b" : "a");
        break;
    case STEP_ACTIVATE:
        target_hex(job, hex);
        if (strcmp(in->image, hex) != 0) {
            memcpy(in->prev_image, in->image, sizeof(in->image));
            memcpy(in->prev_slot, in->slot, sizeof(in->slot));
            (void)snprintf(in->image, sizeof(in->image), "%s", hex);
            if (valid_slot(job->slot))
                copy_str(in->slot, sizeof(in->slot), job->slot);
            else
                (void)snprintf(in->slot, sizeof(in->slot), "%s",
                               strcmp(in->slot, "a") == 0 ? "b" : "a");
            save_state(in);
        }
        break;
    case STEP_HEALTH: {
        const upk_sim_class *c = in->cls;
        bool applies = c->health_fail_version[0] == '\0' ||
                       strcmp(c->health_fail_version, job->manifest->version) == 0;
        if (applies && draw(in, c->health_fail)) {
            err = UPK_E_HEALTH_FAILED;
            (void)snprintf(msg, sizeof(msg), "simulated health check failure on %s", c->name);
        }
        break;
    }
    case STEP_COMMIT:
        in->prev_image[0] = '\0';
        memcpy(in->prev_slot, in->slot, sizeof(in->slot));
        save_state(in);
        break;
    case STEP_ROLLBACK:
        target_hex(job, hex);
        if (job->reached >= UPK_STATUS_ACTIVATING && strcmp(in->image, hex) == 0) {
            memcpy(in->image, in->prev_image, sizeof(in->image));
            memcpy(in->slot, in->prev_slot, sizeof(in->slot));
            in->prev_image[0] = '\0';
            save_state(in);
        }
        break;
    case STEP_NONE:
        return;
    }
    in->busy = false;
    in->step = STEP_NONE;
    in->job = NULL;
    in->cb = NULL;
    in->cb_data = NULL;
    cb(err, msg[0] != '\0' ? msg : NULL, cb_data);
}

static upk_err start_step(upk_sim_inst *in, sim_step step, uint32_t ms, upk_install_job *job,
                          upk_installer_cb cb, void *cb_data)
{
    if (in == NULL || job == NULL || job->manifest == NULL || cb == NULL)
        return UPK_E_INVALID_ARG;
    if (in->busy)
        return UPK_E_BUSY;
    in->step = step;
    in->job = job;
    in->cb = cb;
    in->cb_data = cb_data;
    if (uv_timer_start(&in->timer, on_step_timer, ms, 0) != 0) {
        in->step = STEP_NONE;
        in->job = NULL;
        in->cb = NULL;
        return UPK_E_INTERNAL;
    }
    in->busy = true;
    return UPK_OK;
}

static upk_err op_install(void *self, upk_install_job *job, upk_installer_cb cb, void *cb_data)
{
    upk_sim_inst *in = self;
    return start_step(in, STEP_INSTALL, in->cls->install_ms, job, cb, cb_data);
}

static upk_err op_activate(void *self, upk_install_job *job, upk_installer_cb cb, void *cb_data)
{
    upk_sim_inst *in = self;
    return start_step(in, STEP_ACTIVATE, in->cls->activate_ms, job, cb, cb_data);
}

static upk_err op_health(void *self, upk_install_job *job, upk_installer_cb cb, void *cb_data)
{
    upk_sim_inst *in = self;
    return start_step(in, STEP_HEALTH, in->cls->health_ms, job, cb, cb_data);
}

static upk_err op_commit(void *self, upk_install_job *job, upk_installer_cb cb, void *cb_data)
{
    return start_step(self, STEP_COMMIT, 0, job, cb, cb_data);
}

static upk_err op_rollback(void *self, upk_install_job *job, upk_installer_cb cb, void *cb_data)
{
    upk_sim_inst *in = self;
    return start_step(in, STEP_ROLLBACK, in->cls->activate_ms, job, cb, cb_data);
}

static upk_err op_image_path(void *self, char *buf, size_t cap)
{
    upk_sim_inst *in = self;
    if (in->image[0] == '\0')
        return UPK_E_NOT_FOUND;
    int n = snprintf(buf, cap, "%s/%s", in->store->images_dir, in->image);
    if (n < 0 || (size_t)n >= cap)
        return UPK_E_BUFFER_TOO_SMALL;
    return UPK_OK;
}

static void op_active_slot(void *self, char *buf, size_t cap)
{
    const upk_sim_inst *in = self;
    (void)snprintf(buf, cap, "%s", in->slot);
}

static void op_destroy(void *self)
{
    upk_sim_inst_free(self);
}

static const upk_installer sim_ops = {
    .name = "sim",
    .can_rollback = true,
    .install = op_install,
    .activate = op_activate,
    .health = op_health,
    .commit = op_commit,
    .rollback = op_rollback,
    .image_path = op_image_path,
    .active_slot = op_active_slot,
    .destroy = op_destroy,
};

const upk_installer *upk_sim_installer_ops(void)
{
    return &sim_ops;
}

/* ---------------------------------------------------------------- life cycle */

upk_err upk_sim_inst_new(uv_loop_t *loop, const upk_sim_class *cls, const upk_sim_store *store,
                         const char *device_id, const char *state_dir, const char *base_sha256_hex,
                         upk_sim_inst **out)
{
    if (loop == NULL || cls == NULL || store == NULL || device_id == NULL || out == NULL ||
        !upk_id_valid(device_id) ||
        (base_sha256_hex != NULL && !upk_sha256_hex_valid(base_sha256_hex)))
        return UPK_E_INVALID_ARG;
    upk_sim_inst *in = calloc(1, sizeof(*in));
    if (in == NULL)
        return UPK_E_NOMEM;
    in->loop = loop;
    in->cls = cls;
    in->store = store;
    (void)snprintf(in->device, sizeof(in->device), "%s", device_id);
    in->rng = store->seed ^ fnv1a(device_id);
    if (state_dir != NULL) {
        int n = snprintf(in->state_path, sizeof(in->state_path), "%s/%s", state_dir, STATE_FILE);
        if (n < 0 || (size_t)n >= sizeof(in->state_path)) {
            free(in);
            return UPK_E_BUFFER_TOO_SMALL;
        }
    }
    if (!load_state(in)) {
        (void)snprintf(in->image, sizeof(in->image), "%s",
                       base_sha256_hex != NULL ? base_sha256_hex : "");
        (void)snprintf(in->slot, sizeof(in->slot), "a");
        (void)snprintf(in->prev_slot, sizeof(in->prev_slot), "a");
        in->prev_image[0] = '\0';
    }
    if (uv_timer_init(loop, &in->timer) != 0) {
        free(in);
        return UPK_E_INTERNAL;
    }
    in->timer.data = in;
    *out = in;
    return UPK_OK;
}

const char *upk_sim_inst_image(const upk_sim_inst *inst)
{
    return inst->image;
}

const char *upk_sim_inst_slot(const upk_sim_inst *inst)
{
    return inst->slot;
}

bool upk_sim_inst_busy(const upk_sim_inst *inst)
{
    return inst != NULL && inst->busy;
}

static void inst_closed(uv_handle_t *h)
{
    free(h->data);
}

void upk_sim_inst_free(upk_sim_inst *inst)
{
    if (inst == NULL)
        return;
    (void)uv_timer_stop(&inst->timer);
    uv_close((uv_handle_t *)&inst->timer, inst_closed);
}
