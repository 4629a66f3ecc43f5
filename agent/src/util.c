/* Small helpers for the agent core: thread-pool work, child processes with a
 * deadline, paths, recursive removal and file copies. */
#include "agent_int.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct upk__work {
    uv_work_t req;
    upk__work_fn fn;
    upk__work_done done;
    void *arg;
};

static void work_cb(uv_work_t *req)
{
    upk__work *w = req->data;
    w->fn(w->arg);
}

static void after_work_cb(uv_work_t *req, int status)
{
    upk__work *w = req->data;
    w->done(w->arg, status == UV_ECANCELED);
    free(w);
}

upk_err upk__work_run(uv_loop_t *loop, upk__work_fn fn, upk__work_done done, void *arg)
{
    upk__work *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return UPK_E_NOMEM;
    w->fn = fn;
    w->done = done;
    w->arg = arg;
    w->req.data = w;
    if (uv_queue_work(loop, &w->req, work_cb, after_work_cb) != 0) {
        free(w);
        return UPK_E_INTERNAL;
    }
    return UPK_OK;
}

/* ---- child processes */
typedef struct spawn_ctx {
    uv_process_t proc;
    uv_timer_t timer;
    upk__spawn_done done;
    void *cb_data;
    int status;
    int open_handles;
    bool timed_out;
} spawn_ctx;

static void spawn_handle_closed(uv_handle_t *h)
{
    spawn_ctx *s = h->data;
    if (--s->open_handles > 0)
        return;
    if (s->done != NULL)
        s->done(s->status, s->cb_data);
    free(s);
}

int upk__spawn_status(bool timed_out, int64_t exit_status, int term_signal)
{
    if (timed_out)
        return -2;
    if (term_signal != 0)
        return -1;
    return (int)(exit_status & 0xff);
}

void upk__spawn_kill(uv_process_t *p)
{
    if (kill(-p->pid, SIGKILL) != 0)
        (void)uv_process_kill(p, SIGKILL);
}

static void spawn_exit_cb(uv_process_t *p, int64_t exit_status, int term_signal)
{
    spawn_ctx *s = p->data;
    s->status = upk__spawn_status(s->timed_out, exit_status, term_signal);
    uv_timer_stop(&s->timer);
    uv_close((uv_handle_t *)&s->timer, spawn_handle_closed);
    uv_close((uv_handle_t *)&s->proc, spawn_handle_closed);
}

static void spawn_timeout_cb(uv_timer_t *t)
{
    spawn_ctx *s = t->data;
    s->timed_out = true;
    upk__spawn_kill(&s->proc); /* it leads its own process group (detached) */
}

upk_err upk__spawn(uv_loop_t *loop, char *const argv[], char *const env[], uint32_t timeout_ms,
                   upk__spawn_done done, void *cb_data)
{
    extern char **environ;
    size_t nenv = 0, nextra = 0;
    while (environ[nenv] != NULL)
        nenv++;
    while (env != NULL && env[nextra] != NULL)
        nextra++;
    char **full = calloc(nenv + nextra + 1, sizeof(char *));
    spawn_ctx *s = calloc(1, sizeof(*s));
    if (full == NULL || s == NULL) {
        free(full);
        free(s);
        return UPK_E_NOMEM;
    }
    /* Extra entries first: getenv takes the first match. */
    for (size_t i = 0; i < nextra; i++)
        full[i] = env[i];
    for (size_t i = 0; i < nenv; i++)
        full[nextra + i] = environ[i];
    uv_stdio_container_t stdio[3];
    stdio[0].flags = UV_IGNORE;
    stdio[1].flags = UV_INHERIT_FD;
    stdio[1].data.fd = 2; /* module output goes to the agent's log */
    stdio[2].flags = UV_INHERIT_FD;
    stdio[2].data.fd = 2;
    uv_process_options_t opt;
    memset(&opt, 0, sizeof(opt));
    opt.file = argv[0];
    opt.args = (char **)argv;
    opt.env = full;
    opt.exit_cb = spawn_exit_cb;
    opt.stdio = stdio;
    opt.stdio_count = 3;
    opt.flags = UV_PROCESS_DETACHED; /* own process group, see spawn_timeout_cb */
    s->done = done;
    s->cb_data = cb_data;
    s->proc.data = s;
    s->timer.data = s;
    int rc = uv_spawn(loop, &s->proc, &opt);
    free(full);
    if (rc != 0) {
        /* libuv requires closing the handle even after a failed spawn; the
         * close callback frees s without reporting (the async rule). */
        s->done = NULL;
        s->open_handles = 1;
        uv_close((uv_handle_t *)&s->proc, spawn_handle_closed);
        return rc == UV_ENOENT || rc == UV_EACCES ? UPK_E_NOT_FOUND : UPK_E_IO;
    }
    /* uv_timer_init cannot fail on a live loop (it only fills the handle). */
    (void)uv_timer_init(loop, &s->timer);
    s->open_handles = 2;
    if (timeout_ms > 0)
        (void)uv_timer_start(&s->timer, spawn_timeout_cb, timeout_ms, 0);
    return UPK_OK;
}

/* ---- paths and files */
upk_err upk__path(char *buf, size_t cap, const char *dir, const char *name)
{
    int n = snprintf(buf, cap, "%s/%s", dir, name);
    return n < 0 || (size_t)n >= cap ? UPK_E_BUFFER_TOO_SMALL : UPK_OK;
}

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    int rc = flag == FTW_DP ? rmdir(path) : unlink(path);
    return rc != 0 && errno != ENOENT ? -1 : 0;
}

upk_err upk__rm_rf(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return errno == ENOENT ? UPK_OK : UPK_E_IO;
    if (!S_ISDIR(st.st_mode))
        return unlink(path) == 0 || errno == ENOENT ? UPK_OK : UPK_E_IO;
    return nftw(path, rm_cb, 16, FTW_DEPTH | FTW_PHYS) == 0 ? UPK_OK : UPK_E_IO;
}

upk_err upk__copy_file(const char *src, const char *dst, bool do_sync)
{
    upk_err err = UPK_E_IO;
    int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return errno == ENOENT ? UPK_E_NOT_FOUND : UPK_E_IO;
    int out = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (out < 0)
        goto out_in;
    char *buf = malloc(65536);
    if (buf == NULL) {
        err = UPK_E_NOMEM;
        goto out_out;
    }
    for (;;) {
        ssize_t r = read(in, buf, 65536);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            goto out_buf;
        if (r == 0)
            break;
        ssize_t off = 0;
        while (off < r) {
            ssize_t w = write(out, buf + off, (size_t)(r - off));
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0)
                goto out_buf;
            off += w;
        }
    }
    if (do_sync && fsync(out) != 0)
        goto out_buf;
    err = UPK_OK;
out_buf:
    free(buf);
out_out:
    if (close(out) != 0 && err == UPK_OK)
        err = UPK_E_IO;
out_in:
    close(in);
    return err;
}

uint64_t upk__now_ms(void)
{
    struct timespec ts;
    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}
