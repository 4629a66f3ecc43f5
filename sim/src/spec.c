/* Parsing of upkeep-sim's per hardware class specs ("rev-a:50%,rev-b:50%",
 * "rev-b:0.3", "rev-a:200", "rev-b:1@2.0.0") and the deterministic
 * assignment of devices to classes. Pure functions, no I/O. */
#include "upkeep/sim.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static upk_err fail(char *err, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static upk_err fail(char *err, size_t cap, const char *fmt, ...)
{
    if (err != NULL && cap > 0) {
        va_list ap;
        va_start(ap, fmt);
        (void)vsnprintf(err, cap, fmt, ap);
        va_end(ap);
    }
    return UPK_E_INVALID_ARG;
}

static void class_defaults(upk_sim_class *c)
{
    memset(c, 0, sizeof(*c));
    c->install_ms = 200;
    c->activate_ms = 50;
    c->health_ms = 100;
}

/* Parses a whole non-negative decimal number (no sign, no exponent). */
static bool parse_double(const char *s, double *out)
{
    if (s[0] == '\0' || s[0] == '-' || s[0] == '+' || s[0] == ' ')
        return false;
    for (const char *p = s; *p != '\0'; p++) {
        if ((*p < '0' || *p > '9') && *p != '.')
            return false;
    }
    char *end = NULL;
    errno = 0;
    double d = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !isfinite(d) || d < 0)
        return false;
    *out = d;
    return true;
}

static bool parse_u32(const char *s, uint32_t max, uint32_t *out)
{
    if (s[0] < '0' || s[0] > '9')
        return false;
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v > max)
        return false;
    *out = (uint32_t)v;
    return true;
}

/* Splits spec into comma-separated items in a bounded copy; calls fn per item. */
typedef upk_err (*item_fn)(char *item, void *ctx, char *err, size_t cap);

static upk_err for_each_item(const char *spec, item_fn fn, void *ctx, char *err, size_t cap)
{
    if (spec == NULL || spec[0] == '\0')
        return fail(err, cap, "empty spec");
    size_t len = strnlen(spec, UPK_SIM_SPEC_MAX + 1);
    if (len > UPK_SIM_SPEC_MAX)
        return fail(err, cap, "spec longer than %d bytes", UPK_SIM_SPEC_MAX);
    char buf[UPK_SIM_SPEC_MAX + 1];
    memcpy(buf, spec, len + 1);
    char *p = buf;
    for (;;) {
        char *comma = strchr(p, ',');
        if (comma != NULL)
            *comma = '\0';
        if (p[0] == '\0')
            return fail(err, cap, "empty item in '%s'", spec);
        upk_err e = fn(p, ctx, err, cap);
        if (e != UPK_OK)
            return e;
        if (comma == NULL)
            break;
        p = comma + 1;
    }
    return UPK_OK;
}

typedef struct hw_ctx {
    upk_sim_class *classes;
    size_t n;
    double total;
} hw_ctx;

static upk_err hw_item(char *item, void *vctx, char *err, size_t cap)
{
    hw_ctx *h = vctx;
    char *colon = strrchr(item, ':');
    if (colon == NULL)
        return fail(err, cap, "'%s': expected CLASS:SHARE, e.g. rev-a:50%%", item);
    *colon = '\0';
    char *val = colon + 1;
    size_t vlen = strlen(val);
    if (vlen > 0 && val[vlen - 1] == '%')
        val[vlen - 1] = '\0';
    if (!upk_id_valid(item))
        return fail(err, cap, "'%s' is not a valid hardware id", item);
    double w = 0;
    if (!parse_double(val, &w) || w <= 0 || w > 1e9)
        return fail(err, cap, "class %s: share '%s' must be a number above 0", item, colon + 1);
    for (size_t i = 0; i < h->n; i++) {
        if (strcmp(h->classes[i].name, item) == 0)
            return fail(err, cap, "class %s listed twice", item);
    }
    if (h->n >= UPK_SIM_CLASS_MAX)
        return fail(err, cap, "more than %d hardware classes", UPK_SIM_CLASS_MAX);
    upk_sim_class *c = &h->classes[h->n++];
    class_defaults(c);
    (void)snprintf(c->name, sizeof(c->name), "%s", item);
    c->share = w;
    h->total += w;
    return UPK_OK;
}

upk_err upk_sim_parse_hw(const char *spec, upk_sim_class *classes, size_t *n, char *err,
                         size_t err_cap)
{
    if (classes == NULL || n == NULL)
        return UPK_E_INVALID_ARG;
    hw_ctx h = {.classes = classes, .n = 0, .total = 0};
    upk_err e = for_each_item(spec, hw_item, &h, err, err_cap);
    if (e != UPK_OK)
        return e;
    for (size_t i = 0; i < h.n; i++)
        classes[i].share /= h.total;
    *n = h.n;
    return UPK_OK;
}

typedef struct apply_ctx {
    upk_sim_class *classes;
    size_t n;
    upk_sim_field field;
} apply_ctx;

static upk_err set_field(upk_sim_class *c, upk_sim_field field, const char *val, char *err,
                         size_t cap)
{
    double p = 0;
    char tmp[UPK_SIM_SPEC_MAX + 1];
    switch (field) {
    case UPK_SIM_INSTALL_MS:
    case UPK_SIM_ACTIVATE_MS:
    case UPK_SIM_HEALTH_MS: {
        uint32_t ms = 0;
        if (!parse_u32(val, UPK_SIM_STEP_MS_MAX, &ms))
            return fail(err, cap, "class %s: '%s' must be whole milliseconds up to %u", c->name,
                        val, UPK_SIM_STEP_MS_MAX);
        if (field == UPK_SIM_INSTALL_MS)
            c->install_ms = ms;
        else if (field == UPK_SIM_ACTIVATE_MS)
            c->activate_ms = ms;
        else
            c->health_ms = ms;
        return UPK_OK;
    }
    case UPK_SIM_INSTALL_FAIL:
        if (!parse_double(val, &p) || p > 1)
            return fail(err, cap, "class %s: probability '%s' must be from 0 to 1", c->name, val);
        c->install_fail = p;
        return UPK_OK;
    case UPK_SIM_HEALTH_FAIL: {
        (void)snprintf(tmp, sizeof(tmp), "%s", val);
        char *at = strchr(tmp, '@');
        const char *version = "";
        if (at != NULL) {
            *at = '\0';
            version = at + 1;
            if (version[0] == '\0' || strlen(version) > UPK_VERSION_STR_MAX ||
                strpbrk(version, " \t") != NULL)
                return fail(err, cap, "class %s: bad release version after '@' in '%s'", c->name,
                            val);
        }
        if (!parse_double(tmp, &p) || p > 1)
            return fail(err, cap, "class %s: probability '%s' must be from 0 to 1", c->name, tmp);
        c->health_fail = p;
        (void)snprintf(c->health_fail_version, sizeof(c->health_fail_version), "%s", version);
        return UPK_OK;
    }
    }
    return fail(err, cap, "unknown field");
}

static upk_err apply_item(char *item, void *vctx, char *err, size_t cap)
{
    apply_ctx *a = vctx;
    char *colon = strchr(item, ':');
    if (colon == NULL) {
        for (size_t i = 0; i < a->n; i++) {
            upk_err e = set_field(&a->classes[i], a->field, item, err, cap);
            if (e != UPK_OK)
                return e;
        }
        return UPK_OK;
    }
    *colon = '\0';
    for (size_t i = 0; i < a->n; i++) {
        if (strcmp(a->classes[i].name, item) == 0)
            return set_field(&a->classes[i], a->field, colon + 1, err, cap);
    }
    return fail(err, cap, "unknown hardware class '%s' (not in --hw)", item);
}

upk_err upk_sim_apply_spec(upk_sim_class *classes, size_t n, upk_sim_field field, const char *spec,
                           char *err, size_t err_cap)
{
    if (classes == NULL || n == 0)
        return fail(err, err_cap, "no hardware classes");
    apply_ctx a = {.classes = classes, .n = n, .field = field};
    return for_each_item(spec, apply_item, &a, err, err_cap);
}

void upk_sim_class_iter_init(upk_sim_class_iter *it)
{
    memset(it, 0, sizeof(*it));
}

size_t upk_sim_class_iter_next(const upk_sim_class *classes, size_t n, upk_sim_class_iter *it)
{
    /* Smooth weighted round robin: every class earns its share per device,
     * the richest class takes the device and pays 1. Each class's count
     * stays within 1 of its share of every prefix of the fleet. */
    if (n <= 1) {
        it->next++;
        return 0;
    }
    size_t best = 0;
    for (size_t k = 0; k < n; k++) {
        it->credit[k] += classes[k].share;
        if (it->credit[k] > it->credit[best] + 1e-9)
            best = k;
    }
    it->credit[best] -= 1.0;
    it->next++;
    return best;
}

size_t upk_sim_class_of(const upk_sim_class *classes, size_t n, size_t i)
{
    upk_sim_class_iter it;
    upk_sim_class_iter_init(&it);
    size_t k = 0;
    for (size_t j = 0; j <= i; j++)
        k = upk_sim_class_iter_next(classes, n, &it);
    return k;
}

/* "@VERSION" suffix of val, cut off in place into version ("" without). */
static upk_err split_version(char *val, char *version, size_t cap, const char *what, char *err,
                             size_t ecap)
{
    version[0] = '\0';
    char *at = strchr(val, '@');
    if (at == NULL)
        return UPK_OK;
    *at = '\0';
    const char *v = at + 1;
    if (v[0] == '\0' || strlen(v) >= cap || strpbrk(v, " \t@") != NULL)
        return fail(err, ecap, "%s: bad release version after '@'", what);
    (void)snprintf(version, cap, "%s", v);
    return UPK_OK;
}

/* Classes named by cls ("*" = all) into a mask; false when unknown. */
static bool class_mask(const upk_sim_class *classes, size_t n, const char *cls, bool *mask)
{
    bool any = false;
    for (size_t i = 0; i < n; i++) {
        mask[i] = strcmp(cls, "*") == 0 || strcmp(classes[i].name, cls) == 0;
        any = any || mask[i];
    }
    return any;
}

static upk_err restart_item(char *item, void *vctx, char *err, size_t cap)
{
    apply_ctx *a = vctx;
    char *colon = strchr(item, ':');
    if (colon == NULL)
        return fail(err, cap, "'%s': expected CLASS:N[@VERSION], e.g. rev-b:5@2.0.0", item);
    *colon = '\0';
    char *val = colon + 1;
    char version[UPK_VERSION_STR_MAX + 1];
    upk_err e = split_version(val, version, sizeof(version), item, err, cap);
    if (e != UPK_OK)
        return e;
    uint32_t count = 0;
    if (!parse_u32(val, UPK_SIM_RESTARTS_MAX, &count))
        return fail(err, cap, "class %s: restart count '%s' must be 0..%d", item, val,
                    UPK_SIM_RESTARTS_MAX);
    bool mask[UPK_SIM_CLASS_MAX];
    if (!class_mask(a->classes, a->n, item, mask))
        return fail(err, cap, "unknown hardware class '%s' (not in --hw)", item);
    for (size_t i = 0; i < a->n; i++) {
        if (!mask[i])
            continue;
        a->classes[i].restart_after_commit = count;
        (void)snprintf(a->classes[i].restart_version, sizeof(a->classes[i].restart_version), "%s",
                       version);
    }
    return UPK_OK;
}

upk_err upk_sim_parse_restart(upk_sim_class *classes, size_t n, const char *spec, char *err,
                              size_t err_cap)
{
    if (classes == NULL || n == 0 || n > UPK_SIM_CLASS_MAX)
        return fail(err, err_cap, "no hardware classes");
    apply_ctx a = {.classes = classes, .n = n, .field = UPK_SIM_INSTALL_MS};
    return for_each_item(spec, restart_item, &a, err, err_cap);
}

/* A finite decimal number, optionally negative, no exponent. */
static bool parse_signed(const char *s, double *out)
{
    bool neg = s[0] == '-';
    double d = 0;
    if (!parse_double(neg ? s + 1 : s, &d))
        return false;
    *out = neg ? -d : d;
    return true;
}

static upk_err metric_item(char *item, void *vctx, char *err, size_t cap)
{
    apply_ctx *a = vctx;
    char *c1 = strchr(item, ':');
    char *c2 = c1 != NULL ? strchr(c1 + 1, ':') : NULL;
    if (c1 == NULL || c2 == NULL || strchr(c2 + 1, ':') != NULL)
        return fail(err, cap, "'%s': expected NAME:CLASS:VALUE[@VERSION], e.g. cpu:rev-b:0.9@2.0.0",
                    item);
    *c1 = '\0';
    *c2 = '\0';
    const char *name = item, *cls = c1 + 1;
    char *val = c2 + 1;
    if (!upk_id_valid(name))
        return fail(err, cap, "metric name '%s' is not a valid id", name);
    char version[UPK_VERSION_STR_MAX + 1];
    upk_err e = split_version(val, version, sizeof(version), name, err, cap);
    if (e != UPK_OK)
        return e;
    double v = 0;
    if (!parse_signed(val, &v))
        return fail(err, cap, "metric %s: value '%s' must be a decimal number", name, val);
    bool mask[UPK_SIM_CLASS_MAX];
    if (!class_mask(a->classes, a->n, cls, mask))
        return fail(err, cap, "unknown hardware class '%s' (not in --hw)", cls);
    for (size_t i = 0; i < a->n; i++) {
        if (!mask[i])
            continue;
        upk_sim_class *c = &a->classes[i];
        size_t k = 0;
        while (k < c->metric_count && !(strcmp(c->metrics[k].name, name) == 0 &&
                                        strcmp(c->metrics[k].version, version) == 0))
            k++;
        if (k == c->metric_count) {
            if (c->metric_count >= UPK_SIM_METRICS_MAX)
                return fail(err, cap, "class %s: more than %d --metric entries", c->name,
                            UPK_SIM_METRICS_MAX);
            c->metric_count++;
        }
        (void)snprintf(c->metrics[k].name, sizeof(c->metrics[k].name), "%s", name);
        (void)snprintf(c->metrics[k].version, sizeof(c->metrics[k].version), "%s", version);
        c->metrics[k].value = v;
    }
    return UPK_OK;
}

upk_err upk_sim_parse_metric(upk_sim_class *classes, size_t n, const char *spec, char *err,
                             size_t err_cap)
{
    if (classes == NULL || n == 0 || n > UPK_SIM_CLASS_MAX)
        return fail(err, err_cap, "no hardware classes");
    apply_ctx a = {.classes = classes, .n = n, .field = UPK_SIM_INSTALL_MS};
    return for_each_item(spec, metric_item, &a, err, err_cap);
}

void upk_sim_class_metrics(const upk_sim_class *c, const char *version, upk_health *out)
{
    const char *v = version != NULL ? version : "";
    for (size_t k = 0; k < c->metric_count && k < UPK_SIM_METRICS_MAX; k++) {
        const upk_sim_metric *m = &c->metrics[k];
        bool exact = m->version[0] != '\0' && strcmp(m->version, v) == 0;
        if (m->version[0] != '\0' && !exact)
            continue;
        /* An entry for every version yields to one for the running version. */
        bool shadowed = false;
        for (size_t j = 0; j < c->metric_count && !exact && !shadowed; j++)
            shadowed = j != k && strcmp(c->metrics[j].name, m->name) == 0 &&
                       c->metrics[j].version[0] != '\0' && strcmp(c->metrics[j].version, v) == 0;
        if (shadowed)
            continue;
        size_t i = 0;
        while (i < out->metric_count && strcmp(out->metric_name[i], m->name) != 0)
            i++;
        if (i == out->metric_count) {
            if (out->metric_count >= 8)
                continue;
            out->metric_count++;
        }
        (void)snprintf(out->metric_name[i], sizeof(out->metric_name[i]), "%s", m->name);
        out->metric_value[i] = m->value;
    }
}
