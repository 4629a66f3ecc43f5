/* Post-commit health reporting (health.h): bake window state on disk, boot
 * detection, report rate and the health hook's "name value" parser. */
#include "health.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "agent_int.h"
#include "upkeep/fs.h"

#define BAKE_V 1

/* Bounded copy; callers pass ids no longer than cap - 1 (checked before). */
static void copy(char *dst, size_t cap, const char *src)
{
    size_t n = src != NULL ? strnlen(src, cap - 1) : 0;
    if (n > 0)
        memcpy(dst, src, n);
    dst[n] = '\0';
}

void upk__bake_begin(upk__bake *b, uint32_t bake_s, int64_t now, const char *campaign,
                     const char *release, const char *version, const char *boot_id)
{
    memset(b, 0, sizeof(*b));
    if (bake_s == 0)
        return;
    b->active = true;
    b->until = now + (int64_t)bake_s;
    copy(b->campaign, sizeof(b->campaign), campaign);
    copy(b->release, sizeof(b->release), release);
    copy(b->version, sizeof(b->version), version);
    copy(b->boot_id, sizeof(b->boot_id), boot_id);
}

void upk__bake_on_start(upk__bake *b, int64_t now, const char *boot_id)
{
    if (!b->active)
        return;
    if (now >= b->until) {
        b->active = false;
        return;
    }
    if (b->restarts < UINT32_MAX)
        b->restarts++;
    if (boot_id != NULL && boot_id[0] != '\0' && strcmp(boot_id, b->boot_id) != 0) {
        if (b->boots < UINT32_MAX)
            b->boots++;
        copy(b->boot_id, sizeof(b->boot_id), boot_id);
    }
}

bool upk__bake_due(const upk__bake *b, int64_t now, uint32_t interval_s)
{
    if (!b->active)
        return false;
    if (b->last_report == 0)
        return true;
    int64_t gap = interval_s > UPK__BAKE_MIN_GAP ? interval_s : UPK__BAKE_MIN_GAP;
    /* The closing report at the end of the window is always due. */
    return now - b->last_report >= gap || (now >= b->until && b->last_report < b->until);
}

void upk__bake_sent(upk__bake *b, int64_t now)
{
    b->last_report = now;
    if (b->reports < UINT32_MAX)
        b->reports++;
    if (now >= b->until)
        b->active = false;
}

upk_err upk__bake_save(const char *path, const upk__bake *b, bool do_sync)
{
    cJSON *o = cJSON_CreateObject();
    bool ok = o != NULL && cJSON_AddNumberToObject(o, "v", BAKE_V) &&
              cJSON_AddBoolToObject(o, "active", b->active) &&
              cJSON_AddNumberToObject(o, "until", (double)b->until) &&
              cJSON_AddStringToObject(o, "campaign", b->campaign) &&
              cJSON_AddStringToObject(o, "release", b->release) &&
              cJSON_AddStringToObject(o, "version", b->version) &&
              cJSON_AddNumberToObject(o, "restarts", b->restarts) &&
              cJSON_AddNumberToObject(o, "boots", b->boots) &&
              cJSON_AddStringToObject(o, "boot_id", b->boot_id) &&
              cJSON_AddNumberToObject(o, "last_report", (double)b->last_report) &&
              cJSON_AddNumberToObject(o, "reports", b->reports);
    char *text = ok ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    if (text == NULL)
        return UPK_E_NOMEM;
    upk_err err = UPK_OK;
    size_t len = strlen(text);
    if (do_sync) {
        err = upk_fs_write_atomic(path, text, len);
    } else {
        char tmp[4096 + 8];
        int n = snprintf(tmp, sizeof(tmp), "%s.tmp", path);
        FILE *f = NULL;
        if (n < 0 || (size_t)n >= sizeof(tmp) || (f = fopen(tmp, "wb")) == NULL) {
            err = UPK_E_IO;
        } else {
            bool w = fwrite(text, 1, len, f) == len;
            w = fclose(f) == 0 && w;
            if (!w || rename(tmp, path) != 0) {
                (void)unlink(tmp);
                err = UPK_E_IO;
            }
        }
    }
    free(text);
    return err;
}

static bool num_field(const cJSON *o, const char *k, double lo, double hi, double *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= lo && v->valuedouble <= hi))
        return false;
    *out = v->valuedouble;
    return true;
}

static bool str_field(const cJSON *o, const char *k, char *out, size_t cap)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!cJSON_IsString(v))
        return false;
    int r = snprintf(out, cap, "%s", v->valuestring);
    return r >= 0 && (size_t)r < cap;
}

upk_err upk__bake_load(const char *path, upk__bake *b)
{
    memset(b, 0, sizeof(*b));
    char buf[2048];
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return errno == ENOENT ? UPK_OK : UPK_E_IO;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    bool big = n == sizeof(buf) - 1;
    if (fclose(f) != 0 || big)
        return UPK_E_STATE_CORRUPT;
    buf[n] = '\0';
    cJSON *o = cJSON_ParseWithLength(buf, n);
    upk__bake t;
    memset(&t, 0, sizeof(t));
    double v = 0, until = 0, restarts = 0, boots = 0, last = 0, reports = 0;
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(o, "active");
    bool ok = o != NULL && num_field(o, "v", BAKE_V, BAKE_V, &v) && cJSON_IsBool(act) &&
              num_field(o, "until", 0, 9e15, &until) &&
              str_field(o, "campaign", t.campaign, sizeof(t.campaign)) &&
              str_field(o, "release", t.release, sizeof(t.release)) &&
              str_field(o, "version", t.version, sizeof(t.version)) &&
              num_field(o, "restarts", 0, UINT32_MAX, &restarts) &&
              num_field(o, "boots", 0, UINT32_MAX, &boots) &&
              str_field(o, "boot_id", t.boot_id, sizeof(t.boot_id)) &&
              num_field(o, "last_report", 0, 9e15, &last) &&
              num_field(o, "reports", 0, UINT32_MAX, &reports);
    cJSON_Delete(o);
    if (!ok)
        return UPK_E_STATE_CORRUPT;
    t.active = cJSON_IsTrue(act);
    t.until = (int64_t)until;
    t.restarts = (uint32_t)restarts;
    t.boots = (uint32_t)boots;
    t.last_report = (int64_t)last;
    t.reports = (uint32_t)reports;
    *b = t;
    return UPK_OK;
}

upk_err upk__boot_id(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path != NULL ? path : "/proc/sys/kernel/random/boot_id", "rb");
    if (f == NULL || cap < 2) {
        if (f != NULL)
            (void)fclose(f);
        return UPK_E_IO;
    }
    char tmp[UPK__BOOT_ID_MAX + 2];
    size_t n = fread(tmp, 1, sizeof(tmp) - 1, f);
    (void)fclose(f);
    while (n > 0 && (tmp[n - 1] == '\n' || tmp[n - 1] == ' '))
        n--;
    if (n == 0 || n > UPK__BOOT_ID_MAX || n >= cap)
        return UPK_E_IO;
    memcpy(buf, tmp, n);
    buf[n] = '\0';
    return UPK_OK;
}

/* Adds or replaces metric name. */
static upk_err put_metric(upk_health *h, const char *name, double value)
{
    for (size_t i = 0; i < h->metric_count; i++) {
        if (strcmp(h->metric_name[i], name) == 0) {
            h->metric_value[i] = value;
            return UPK_OK;
        }
    }
    if (h->metric_count >= 8)
        return UPK_E_FIELD_TOO_LONG;
    copy(h->metric_name[h->metric_count], sizeof(h->metric_name[0]), name);
    h->metric_value[h->metric_count++] = value;
    return UPK_OK;
}

/* Records the first error only: the caller hears of the first bad line. */
static upk_err note(upk_err first, upk_err e, char *why, size_t cap, const char *what, size_t line)
{
    if (first != UPK_OK)
        return first;
    int r = e == UPK_E_FIELD_TOO_LONG
                ? snprintf(why, cap, "health hook gave more than 8 metrics (line %zu)", line)
                : snprintf(why, cap, "health hook line %zu %s", line, what);
    (void)r;
    return e;
}

upk_err upk__health_parse(const char *out, size_t len, upk_health *h, char *why, size_t why_cap)
{
    size_t pos = 0, lineno = 0;
    upk_err first = UPK_OK;
    if (why_cap > 0)
        why[0] = '\0';
    while (pos < len) {
        size_t end = pos;
        while (end < len && out[end] != '\n')
            end++;
        lineno++;
        char line[160];
        size_t start = pos, n = end - pos;
        pos = end + 1;
        if (n > 0 && out[end - 1] == '\r')
            n--;
        if (n >= sizeof(line)) {
            first = note(first, UPK_E_FIELD_TYPE, why, why_cap, "is too long", lineno);
            continue;
        }
        memcpy(line, out + start, n);
        line[n] = '\0';
        char *p = line;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '\0' || *p == '#')
            continue;
        char *sp = p;
        while (*sp != '\0' && *sp != ' ' && *sp != '\t')
            sp++;
        char *val = sp;
        while (*val == ' ' || *val == '\t')
            val++;
        *sp = '\0';
        char *vend = NULL;
        errno = 0;
        double d = *val != '\0' ? strtod(val, &vend) : 0;
        if (vend != NULL)
            while (*vend == ' ' || *vend == '\t')
                vend++;
        if (!upk_id_valid(p) || *val == '\0' || vend == NULL || *vend != '\0' || errno != 0 ||
            !isfinite(d)) {
            first = note(first, UPK_E_FIELD_TYPE, why, why_cap, "is not \"name value\"", lineno);
            continue;
        }
        if (put_metric(h, p, d) != UPK_OK)
            first = note(first, UPK_E_FIELD_TOO_LONG, why, why_cap, "", lineno);
    }
    return first;
}

uint32_t upk__health_gap(const upk__bake *b, int64_t now, uint32_t interval_s)
{
    uint32_t gap = interval_s;
    if (b != NULL && b->active && b->until > now) {
        int64_t tenth = (b->until - now) / 10;
        if (tenth < (int64_t)gap)
            gap = (uint32_t)tenth;
    }
    return gap > UPK__BAKE_MIN_GAP ? gap : UPK__BAKE_MIN_GAP;
}

bool upk__baseline_due(int64_t last, int64_t now, uint32_t interval_s)
{
    int64_t gap = interval_s > UPK__BAKE_MIN_GAP ? interval_s : UPK__BAKE_MIN_GAP;
    return last == 0 || now - last >= gap || now < last;
}

/* ---- the hook runner */

typedef struct hook_ctx {
    uv_process_t proc;
    uv_pipe_t out;
    uv_timer_t timer;
    upk__hook_done done;
    void *cb_data;
    int open_handles;
    bool exited, eof, timed_out, truncated, finished;
    int status;
    size_t len;
    char buf[UPK__HOOK_OUT_MAX];
    char scratch[256]; /* output past buf is read here and discarded */
} hook_ctx;

static void hook_closed(uv_handle_t *h)
{
    hook_ctx *c = h->data;
    if (--c->open_handles > 0)
        return;
    upk__hook_result r = {
        .status = c->status, .out = c->buf, .len = c->len, .truncated = c->truncated};
    if (c->done != NULL)
        c->done(&r, c->cb_data);
    free(c);
}

/* The timer goes once both the child has exited and its output is closed. */
static void hook_maybe_finish(hook_ctx *c)
{
    if (!c->exited || !c->eof || c->finished)
        return;
    c->finished = true;
    (void)uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, hook_closed);
}

static void hook_close_pipe(hook_ctx *c)
{
    if (c->eof)
        return;
    c->eof = true;
    (void)uv_read_stop((uv_stream_t *)&c->out);
    uv_close((uv_handle_t *)&c->out, hook_closed);
}

static void hook_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    hook_ctx *c = h->data;
    if (c->len < sizeof(c->buf)) {
        *buf = uv_buf_init(c->buf + c->len, (unsigned)(sizeof(c->buf) - c->len));
    } else {
        *buf = uv_buf_init(c->scratch, sizeof(c->scratch));
    }
}

static void hook_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    hook_ctx *c = s->data;
    if (n < 0) {
        hook_close_pipe(c);
        hook_maybe_finish(c);
        return;
    }
    if (n == 0)
        return;
    if (buf->base == c->scratch)
        c->truncated = true;
    else
        c->len += (size_t)n;
}

static void hook_exit(uv_process_t *p, int64_t exit_status, int term_signal)
{
    hook_ctx *c = p->data;
    c->status = upk__spawn_status(c->timed_out, exit_status, term_signal);
    c->exited = true;
    uv_close((uv_handle_t *)&c->proc, hook_closed);
    hook_maybe_finish(c);
}

static void hook_timeout(uv_timer_t *t)
{
    hook_ctx *c = t->data;
    c->timed_out = true;
    if (!c->exited)
        upk__spawn_kill(&c->proc);
    /* A grandchild may hold the pipe open: stop reading regardless. */
    hook_close_pipe(c);
    hook_maybe_finish(c);
}

upk_err upk__hook_run(uv_loop_t *loop, char *const argv[], uint32_t timeout_ms, upk__hook_done done,
                      void *cb_data)
{
    if (loop == NULL || argv == NULL || argv[0] == NULL || argv[0][0] != '/' || done == NULL)
        return UPK_E_INVALID_ARG;
    hook_ctx *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return UPK_E_NOMEM;
    c->proc.data = c;
    c->out.data = c;
    c->timer.data = c;
    if (uv_pipe_init(loop, &c->out, 0) != 0) {
        free(c);
        return UPK_E_IO;
    }
    uv_stdio_container_t stdio[3];
    stdio[0].flags = UV_IGNORE;
    stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[1].data.stream = (uv_stream_t *)&c->out;
    stdio[2].flags = UV_INHERIT_FD;
    stdio[2].data.fd = 2;
    uv_process_options_t opt;
    memset(&opt, 0, sizeof(opt));
    opt.file = argv[0];
    opt.args = (char **)argv;
    opt.exit_cb = hook_exit;
    opt.stdio = stdio;
    opt.stdio_count = 3;
    opt.flags = UV_PROCESS_DETACHED; /* own process group: the timeout kills it all */
    int rc = uv_spawn(loop, &c->proc, &opt);
    if (rc != 0) {
        /* Both handles must be closed; done is not called (the async rule). */
        c->open_handles = 2;
        uv_close((uv_handle_t *)&c->proc, hook_closed);
        uv_close((uv_handle_t *)&c->out, hook_closed);
        return rc == UV_ENOENT || rc == UV_EACCES ? UPK_E_NOT_FOUND : UPK_E_IO;
    }
    c->done = done;
    c->cb_data = cb_data;
    (void)uv_timer_init(loop, &c->timer);
    c->open_handles = 3;
    if (uv_read_start((uv_stream_t *)&c->out, hook_alloc, hook_read) != 0)
        hook_close_pipe(c);
    if (timeout_ms > 0)
        (void)uv_timer_start(&c->timer, hook_timeout, timeout_ms, 0);
    return UPK_OK;
}
