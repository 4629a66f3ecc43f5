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
