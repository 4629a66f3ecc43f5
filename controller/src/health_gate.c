/* Health gate of a campaign stage (health_gate.h): unhealthy-device budget
 * and the per-hardware metric comparison with not-yet-updated devices. */
#include "health_gate.h"

#include <math.h>
#include <stdio.h>
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

/* Means of metric name over updated and baseline devices of hw. */
static void means(const upk_gate_dev *devs, size_t n, const char *hw, const char *name, double *upd,
                  size_t *nu, double *base, size_t *nb)
{
    double su = 0, sb = 0;
    *nu = *nb = 0;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(devs[i].hw, hw) != 0)
            continue;
        int k = find_metric(&devs[i], name);
        if (k < 0 || !isfinite(devs[i].metric_value[k]))
            continue;
        if (devs[i].updated) {
            su += devs[i].metric_value[k];
            (*nu)++;
        } else {
            sb += devs[i].metric_value[k];
            (*nb)++;
        }
    }
    *upd = *nu ? su / (double)*nu : 0;
    *base = *nb ? sb / (double)*nb : 0;
}

static void compare_baseline(const upk_gate_cfg *cfg, const upk_gate_dev *devs, size_t n,
                             upk_gate_result *out)
{
    struct {
        size_t dev, metric;
    } pairs[PAIRS_MAX];
    size_t np = 0;
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        if (!devs[i].updated)
            continue;
        for (size_t k = 0; k < devs[i].metric_count; k++) {
            const char *hw = devs[i].hw, *name = devs[i].metric_name[k];
            bool seen = false;
            for (size_t p = 0; p < np && !seen; p++) {
                seen = strcmp(devs[pairs[p].dev].hw, hw) == 0 &&
                       strcmp(devs[pairs[p].dev].metric_name[pairs[p].metric], name) == 0;
            }
            if (seen || np == PAIRS_MAX)
                continue;
            pairs[np].dev = i;
            pairs[np].metric = k;
            np++;
            double u, b;
            size_t nu, nb;
            means(devs, n, hw, name, &u, &nu, &b, &nb);
            if (nu >= cfg->min_samples && nb >= cfg->min_samples && b >= 0) {
                /* The figures watch shows: the worst pair compared so far. */
                double r = b > 0 ? u / b : (u > 0 ? INFINITY : 1.0);
                double best = out->metric[0] == '\0' ? -1.0
                              : out->metric_baseline > 0
                                  ? out->metric_updated / out->metric_baseline
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
                             "health gate: metric %s on hw %s is %.3g on %zu updated devices vs"
                             " %.3g on %zu not updated (%.2fx > %.2fx)",
                             name, hw, u, nu, b, nb, ratio, cfg->baseline_factor);
            else
                r = snprintf(out->reason, sizeof(out->reason),
                             "health gate: metric %s on hw %s is %.3g on %zu updated devices vs"
                             " 0 on %zu not updated",
                             name, hw, u, nu, nb);
            (void)r; /* a cut reason is still a reason */
        }
    }
}

upk_err upk_gate_eval(const upk_gate_cfg *cfg, const upk_gate_dev *devs, size_t n,
                      upk_gate_result *out)
{
    if (cfg == NULL || out == NULL || (devs == NULL && n > 0) || !isfinite(cfg->baseline_factor) ||
        cfg->baseline_factor < 1.0 || cfg->min_samples == 0)
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
        compare_baseline(cfg, devs, n, &r);
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
    k = snprintf(buf, cap, "%s: %zu/%zu unhealthy%s%s%s%s", left, r->unhealthy, r->updated,
                 why[0] ? " (" : "", why, why[0] ? ")" : "", fig);
    (void)k;
}
