/* Cost of the broker plugin's own per-message decisions, outside Mosquitto:
 * publish check + rate limit + delivery check, for fleets of 10, 10,000 and
 * 1,000,000 devices (random device per message), showing that the cost does
 * not grow with the fleet. Prints ns per message. Bounded loops; no I/O. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "core.h"

#define MESSAGES 2000000L

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(void)
{
    static const long fleets[] = {10, 10000, 1000000};
    upk_bp_config cfg;
    if (upk__bp_config_init(&cfg) != UPK_OK)
        return 1;
    upk_bp_identity ctl = {.role = UPK_BP_ROLE_CONTROLLER};
    snprintf(ctl.name, sizeof(ctl.name), "upkeep-controller");
    upk_bp_limits lim = cfg.limits[UPK_BP_ROLE_DEVICE];
    lim.msgs_per_s = 1e12; /* measure the check, never drop */
    lim.burst_msgs = 1e12;
    lim.bytes_per_s = 0;
    for (size_t f = 0; f < sizeof(fleets) / sizeof(fleets[0]); f++) {
        long n = fleets[f];
        upk_bp_rate *rates = calloc((size_t)n, sizeof(*rates));
        if (rates == NULL)
            return 1;
        double t = now_s();
        for (long i = 0; i < n; i++)
            upk__bp_rate_init(&rates[i], &lim, t);
        unsigned long long x = 88172645463325252ULL, ok = 0;
        double t0 = now_s();
        for (long m = 0; m < MESSAGES; m++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            long d = (long)(x % (unsigned long long)n);
            upk_bp_identity dev = {.role = UPK_BP_ROLE_DEVICE};
            char topic[UPK_TOPIC_MAX + 1];
            snprintf(dev.name, sizeof(dev.name), "dev-%07ld", d);
            snprintf(topic, sizeof(topic), "upkeep/v1/dev/dev-%07ld/events", d);
            ok += upk__bp_acl_allows(&cfg, &dev, UPK_BP_ACCESS_WRITE, topic);
            ok += upk__bp_rate_check(&rates[d], &lim, 64, t0) == UPK_BP_RATE_PASS;
            ok += upk__bp_acl_allows(&cfg, &ctl, UPK_BP_ACCESS_READ, topic);
        }
        double secs = now_s() - t0;
        printf("fleet=%ld devices: %.0f ns per message (publish check + rate + delivery check, "
               "incl. building the topic), %llu/%ld checks passed\n",
               n, secs / (double)MESSAGES * 1e9, ok, 3 * MESSAGES);
        free(rates);
    }
    upk__bp_config_cleanup(&cfg);
    return 0;
}
