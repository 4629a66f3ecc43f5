/* Health gate of a campaign stage (health_gate.h): unhealthy-device budget
 * and the per-hardware metric comparison with not-yet-updated devices. */
#include "health_gate.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PAIRS_MAX 64 /* distinct (hw, metric) pairs compared per evaluation */

void upk_gate_cfg_init(upk_gate_cfg *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->restart_limit = 3;
    cfg->baseline_factor = 1.5;
    cfg->min_samples = 1;
}

static void append(char *buf, size_t cap, size_t *len, size_t n, const char *what)
{
    if (n == 0 || *len >= cap)
        return;
    int r = snprintf(buf + *len, cap - *len, "%s%zu %s", *len > 0 ? ", " : "", n, what);
    if (r > 0)
        *len += (size_t)r < cap - *len ? (size_t)r : cap - *len - 1;
}

/* "2 restarted more than 3 times, 1 rolled back" style list into buf. */
static void causes(const upk_gate_result *r, const char *loop, char *buf, size_t cap)
{
    size_t len = 0;
    buf[0] = '\0';
    append(buf, cap, &len, r->rolled_back, "rolled back");
    append(buf, cap, &len, r->check_failed, "failed the health check");
    append(buf, cap, &len, r->restart_loop, loop);
    append(buf, cap, &len, r->offline, "not back online");
}

static int find_metric(const upk_gate_dev *d, const char *name)
{
    for (size_t k = 0; k < d->metric_count; k++) {
        if (strcmp(d->metric_name[k], name) == 0)
            return (int)k;
    }
    return -1;
}

static const upk_gate_metric *named(const upk_gate_cfg *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->metric_count; i++)
        if (strcmp(cfg->metrics[i].name, name) == 0)
            return &cfg->metrics[i];
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Median of v[0..n) (sorted in place); 0 for n 0. */
static double median(double *v, size_t n)
{
    if (n == 0)
        return 0;
    qsort(v, n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Medians of metric name over updated and baseline devices of hw, one value
 * per device; values outside m's range are left out and counted. */
static void medians(const upk_gate_dev *devs, size_t n, const char *hw, const char *name,
                    const upk_gate_metric *m, double *scratch, double *upd, size_t *nu,
                    double *base, size_t *nb, size_t *out_of_range)
{
    size_t a = 0, b = n; /* updated values grow up from 0, baseline down from n */
    for (size_t i = 0; i < n; i++) {
        if (strcmp(devs[i].hw, hw) != 0)
            continue;
        int k = find_metric(&devs[i], name);
        if (k < 0 || !isfinite(devs[i].metric_value[k]))
            continue;
        double v = devs[i].metric_value[k];
        if (m != NULL && m->ranged && (v < m->lo || v > m->hi)) {
            (*out_of_range)++;
            continue;
        }
        if (devs[i].updated)
            scratch[a++] = v;
        else
            scratch[--b] = v;
    }
    *nu = a;
    *nb = n - b;
    *upd = median(scratch, a);
    *base = median(scratch + b, n - b);
}

/* A (hardware, metric) pair to compare: indexes of a device of that hw and
 * of the metric in it (or of the named metric in cfg, with metric_dev < 0). */
struct pair {
    size_t dev;
    int metric; /* index into devs[dev]; -1: cfg->metrics[named] */
    size_t named;
    size_t count; /* Misra-Gries counter while choosing */
};

static const char *pair_name(const upk_gate_cfg *cfg, const upk_gate_dev *devs,
                             const struct pair *p)
{
    return p->metric < 0 ? cfg->metrics[p->named].name : devs[p->dev].metric_name[p->metric];
}

/* With named metrics: each of them on each distinct hardware of the updated
 * devices, up to PAIRS_MAX pairs. */
static size_t pairs_named(const upk_gate_cfg *cfg, const upk_gate_dev *devs, size_t n,
                          struct pair *pairs)
{
    size_t np = 0;
    for (size_t i = 0; i < n; i++) {
        if (!devs[i].updated)
            continue;
        bool seen = false;
        for (size_t p = 0; p < np && !seen; p++)
            seen = strcmp(devs[pairs[p].dev].hw, devs[i].hw) == 0;
        for (size_t k = 0; !seen && k < cfg->metric_count && np < PAIRS_MAX; k++)
            pairs[np++] = (struct pair){.dev = i, .metric = -1, .named = k};
    }
    return np;
}

/* Without names: the (hw, metric) pairs that at least half of the updated
 * devices of hw report (and min_samples of them). A Misra-Gries summary of
 * CAND_MAX counters finds every such pair of a hardware holding more than
 * 16/CAND_MAX of the updated devices whatever the others report (each device
 * gives at most UPK_GATE_METRICS_MAX names), so junk names from a few
 * devices cannot crowd out a metric the fleet reports. */
#define CAND_MAX 256
static size_t pairs_majority(const upk_gate_cfg *cfg, const upk_gate_dev *devs, size_t n,
                             struct pair *pairs)
{
    struct pair cand[CAND_MAX];
    size_t nc = 0, dec = 0;
    for (size_t i = 0; i < n; i++) {
        if (!devs[i].updated)
            continue;
        for (size_t k = 0; k < devs[i].metric_count; k++) {
            const char *name = devs[i].metric_name[k];
            bool hit = false;
            for (size_t c = 0; c < nc && !hit; c++) {
                if (strcmp(devs[cand[c].dev].hw, devs[i].hw) == 0 &&
                    strcmp(devs[cand[c].dev].metric_name[cand[c].metric], name) == 0) {
                    cand[c].count++;
                    hit = true;
                }
            }
            if (hit)
                continue;
            if (nc < CAND_MAX) {
                cand[nc++] = (struct pair){.dev = i, .metric = (int)k, .count = 1};
                continue;
            }
            /* Full: every counter loses one; empty ones leave. */
            dec++;
            size_t w = 0;
            for (size_t c = 0; c < nc; c++)
                if (--cand[c].count > 0)
                    cand[w++] = cand[c];
            nc = w;
        }
    }
    size_t np = 0;
    for (size_t c = 0; c < nc && np < PAIRS_MAX; c++) {
        const char *hw = devs[cand[c].dev].hw;
        const char *name = devs[cand[c].dev].metric_name[cand[c].metric];
        size_t nh = 0, have = cand[c].count;
        for (size_t i = 0; i < n; i++)
            nh += devs[i].updated && strcmp(devs[i].hw, hw) == 0;
        if (2 * (have + dec) < nh)
            continue;  /* cannot be a majority */
        if (dec > 0) { /* counters are lower bounds then: count exactly */
            have = 0;
            for (size_t i = 0; i < n; i++)
                have += devs[i].updated && strcmp(devs[i].hw, hw) == 0 &&
                        find_metric(&devs[i], name) >= 0;
        }
        if (2 * have >= nh && have >= cfg->min_samples)
            pairs[np++] = cand[c];
    }
    return np;
}

static void compare_baseline(const upk_gate_cfg *cfg, const upk_gate_dev *devs, size_t n,
                             double *scratch, upk_gate_result *out)
{
    struct pair pairs[PAIRS_MAX];
    size_t np = cfg->metric_count > 0 ? pairs_named(cfg, devs, n, pairs)
                                      : pairs_majority(cfg, devs, n, pairs);
    double worst = 0;
    for (size_t p = 0; p < np; p++) {
        const char *hw = devs[pairs[p].dev].hw, *name = pair_name(cfg, devs, &pairs[p]);
        double u, b;
        size_t nu, nb;
        medians(devs, n, hw, name, named(cfg, name), scratch, &u, &nu, &b, &nb, &out->out_of_range);
        if (nu >= cfg->min_samples && nb >= cfg->min_samples && b >= 0) {
            /* The figures watch shows: the worst pair compared so far. */
            double r = b > 0 ? u / b : (u > 0 ? INFINITY : 1.0);
            double best = out->metric[0] == '\0'     ? -1.0
                          : out->metric_baseline > 0 ? out->metric_updated / out->metric_baseline
                                                     : (out->metric_updated > 0 ? INFINITY : 1.0);
            if (r > best) {
                int w = snprintf(out->metric, sizeof(out->metric), "%s", name);
                w = snprintf(out->metric_hw, sizeof(out->metric_hw), "%s", hw);
                (void)w;
                out->metric_updated = u;
                out->metric_baseline = b;
                out->metric_nu = nu;
                out->metric_nb = nb;
            }
        }
        if (nu < cfg->min_samples || nb < cfg->min_samples || b < 0 || u <= b ||
            u <= cfg->baseline_factor * b)
            continue;
        /* Worse by more than the factor; keep the worst for the reason. */
        double ratio = b > 0 ? u / b : INFINITY;
        if (out->halt && ratio <= worst)
            continue;
        worst = ratio;
        out->halt = true;
        int r;
        if (b > 0)
            r = snprintf(out->reason, sizeof(out->reason),
                         "health gate: metric %s on hw %s is %.3g on %zu updated devices"
                         " vs %.3g on %zu not updated (%.2fx > %.2fx)",
                         name, hw, u, nu, b, nb, ratio, cfg->baseline_factor);
        else
            r = snprintf(out->reason, sizeof(out->reason),
                         "health gate: metric %s on hw %s is %.3g on %zu updated devices"
                         " vs 0 on %zu not updated",
                         name, hw, u, nu, nb);
        (void)r; /* a cut reason is still a reason */
    }
}

upk_err upk_gate_parse_metrics(const char *spec, upk_gate_cfg *cfg)
{
    if (spec == NULL || cfg == NULL)
        return UPK_E_INVALID_ARG;
    if (strlen(spec) > UPK_GATE_SPEC_MAX)
        return UPK_E_FIELD_TOO_LONG;
    upk_gate_metric ms[UPK_GATE_NAMED_MAX];
    memset(ms, 0, sizeof(ms));
    size_t nm = 0;
    const char *p = spec;
    while (*p != '\0') {
        const char *end = strchr(p, ',');
        size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
        if (nm == UPK_GATE_NAMED_MAX)
            return UPK_E_FIELD_TOO_LONG;
        char item[UPK_GATE_SPEC_MAX + 1];
        memcpy(item, p, len);
        item[len] = '\0';
        upk_gate_metric m;
        memset(&m, 0, sizeof(m));
        char *colon = strchr(item, ':');
        if (colon != NULL) {
            *colon = '\0';
            char *dots = strstr(colon + 1, "..");
            char *e1 = NULL, *e2 = NULL;
            if (dots == NULL)
                return UPK_E_FIELD_RANGE;
            *dots = '\0';
            m.lo = strtod(colon + 1, &e1);
            m.hi = strtod(dots + 2, &e2);
            if (e1 == colon + 1 || *e1 != '\0' || e2 == dots + 2 || *e2 != '\0' ||
                !isfinite(m.lo) || !isfinite(m.hi) || m.lo > m.hi)
                return UPK_E_FIELD_RANGE;
            m.ranged = true;
        }
        if (!upk_id_valid(item))
            return UPK_E_ID_INVALID;
        memcpy(m.name, item, strlen(item) + 1);
        for (size_t i = 0; i < nm; i++)
            if (strcmp(ms[i].name, m.name) == 0)
                return UPK_E_FIELD_RANGE; /* named twice */
        ms[nm++] = m;
        p += len;
        if (*p == ',') {
            p++;
            if (*p == '\0')
                return UPK_E_ID_INVALID; /* trailing comma: an empty name */
        }
    }
    memcpy(cfg->metrics, ms, nm * sizeof(ms[0]));
    cfg->metric_count = nm;
    return UPK_OK;
}

void upk_gate_format_metrics(const upk_gate_cfg *cfg, char *buf, size_t cap)
{
    size_t len = 0;
    if (cap == 0)
        return;
    buf[0] = '\0';
    for (size_t i = 0; i < cfg->metric_count && len < cap; i++) {
        const upk_gate_metric *m = &cfg->metrics[i];
        int r = m->ranged ? snprintf(buf + len, cap - len, "%s%s:%.17g..%.17g", i ? "," : "",
                                     m->name, m->lo, m->hi)
                          : snprintf(buf + len, cap - len, "%s%s", i ? "," : "", m->name);
        if (r < 0)
            return;
        len += (size_t)r;
    }
}

upk_err upk_gate_eval(const upk_gate_cfg *cfg, const upk_gate_dev *devs, size_t n,
                      upk_gate_result *out)
{
    if (cfg == NULL || out == NULL || (devs == NULL && n > 0) || !isfinite(cfg->baseline_factor) ||
        cfg->baseline_factor < 1.0 || cfg->min_samples == 0 ||
        cfg->metric_count > UPK_GATE_NAMED_MAX)
        return UPK_E_INVALID_ARG;
    for (size_t i = 0; i < n; i++) {
        if (devs[i].metric_count > UPK_GATE_METRICS_MAX)
            return UPK_E_INVALID_ARG;
    }
    upk_gate_result r;
    memset(&r, 0, sizeof(r));
    for (size_t i = 0; i < n; i++) {
        const upk_gate_dev *d = &devs[i];
        if (!d->updated)
            continue;
        r.updated++;
        bool loop = d->restarts > cfg->restart_limit || d->boots > cfg->restart_limit;
        r.rolled_back += d->rolled_back;
        r.check_failed += d->check_failed;
        r.restart_loop += loop;
        r.offline += d->offline;
        r.unhealthy += d->rolled_back || d->check_failed || loop || d->offline;
    }
    if (r.updated > 0 &&
        (uint64_t)r.unhealthy * 10000u > (uint64_t)cfg->max_unhealthy_bp * r.updated) {
        char why[160], loop[48];
        int l = snprintf(loop, sizeof(loop), "restarted more than %u time%s", cfg->restart_limit,
                         cfg->restart_limit == 1 ? "" : "s");
        (void)l;
        causes(&r, loop, why, sizeof(why));
        r.halt = true;
        int k = snprintf(r.reason, sizeof(r.reason),
                         "health gate: %zu of %zu updated device%s unhealthy (%.2f%% > %.2f%%): %s",
                         r.unhealthy, r.updated, r.updated == 1 ? "" : "s",
                         100.0 * (double)r.unhealthy / (double)r.updated,
                         cfg->max_unhealthy_bp / 100.0, why);
        (void)k;
    } else if (cfg->compare_baseline) {
        double *scratch = malloc((n > 0 ? n : 1) * sizeof(*scratch));
        if (scratch == NULL)
            return UPK_E_NOMEM;
        compare_baseline(cfg, devs, n, scratch, &r);
        free(scratch);
    }
    *out = r;
    return UPK_OK;
}

void upk_gate_summary(const upk_gate_result *r, int64_t remaining_s, char *buf, size_t cap)
{
    char left[48], why[160];
    int k;
    if (remaining_s < 0)
        k = snprintf(left, sizeof(left), "bake done");
    else if (remaining_s >= 60)
        k = snprintf(left, sizeof(left), "bake %lldm%02llds left", (long long)(remaining_s / 60),
                     (long long)(remaining_s % 60));
    else
        k = snprintf(left, sizeof(left), "bake %llds left", (long long)remaining_s);
    (void)k;
    causes(r, "restart loop", why, sizeof(why));
    char fig[320] = "";
    if (r->metric[0] != '\0')
        k = snprintf(fig, sizeof(fig), "; %s on %s %.3g (%zu updated) vs %.3g (%zu not updated)",
                     r->metric, r->metric_hw, r->metric_updated, r->metric_nu, r->metric_baseline,
                     r->metric_nb);
    char oor[96] = "";
    if (r->out_of_range > 0)
        k = snprintf(oor, sizeof(oor), "; %zu values outside the declared range left out",
                     r->out_of_range);
    k = snprintf(buf, cap, "%s: %zu/%zu unhealthy%s%s%s%s%s", left, r->unhealthy, r->updated,
                 why[0] ? " (" : "", why, why[0] ? ")" : "", fig, oor);
    (void)k;
}
