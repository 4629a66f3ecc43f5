/* Token buckets per client for messages/s and bytes/s, a maximum payload,
 * and flood detection: a client whose drops in one flood window reach
 * kick_after_drops gets a KICK verdict (once). All O(1) per message. */
#include "core.h"

void upk__bp_bucket_init(upk_bp_bucket *b, double rate, double burst, double now)
{
    b->rate = rate > 0 ? rate : 0;
    b->burst = burst > 0 ? burst : (rate > 0 ? rate : 0);
    b->tokens = b->burst;
    b->last = now;
}

bool upk__bp_bucket_take(upk_bp_bucket *b, double n, double now)
{
    if (b->rate <= 0)
        return true;
    if (now > b->last) {
        b->tokens += (now - b->last) * b->rate;
        if (b->tokens > b->burst)
            b->tokens = b->burst;
        b->last = now;
    }
    if (b->tokens < n)
        return false;
    b->tokens -= n;
    return true;
}

void upk__bp_rate_init(upk_bp_rate *r, const upk_bp_limits *l, double now)
{
    upk__bp_bucket_init(&r->msgs, l->msgs_per_s, l->burst_msgs, now);
    upk__bp_bucket_init(&r->bytes, l->bytes_per_s, l->burst_bytes, now);
    r->drops = 0;
    r->window_start = now;
    r->kicked = false;
}

upk_bp_rate_verdict upk__bp_rate_check(upk_bp_rate *r, const upk_bp_limits *l, size_t payload_len,
                                       double now)
{
    upk_bp_rate_verdict v = UPK_BP_RATE_PASS;
    if (l->max_payload > 0 && payload_len > l->max_payload) {
        v = UPK_BP_RATE_TOO_LARGE;
    } else {
        /* Check bytes before taking a message token, so a refusal by one
         * bucket does not spend the other. */
        bool bytes_ok = r->bytes.rate <= 0;
        if (!bytes_ok) {
            (void)upk__bp_bucket_take(&r->bytes, 0, now); /* refill only */
            bytes_ok = r->bytes.tokens >= (double)payload_len;
        }
        if (!bytes_ok || !upk__bp_bucket_take(&r->msgs, 1, now))
            v = UPK_BP_RATE_DROP;
        else if (r->bytes.rate > 0)
            r->bytes.tokens -= (double)payload_len;
    }
    if (v == UPK_BP_RATE_PASS)
        return v;
    if (l->kick_after_drops == 0)
        return v;
    if (now - r->window_start >= (double)l->flood_window_s) {
        r->window_start = now;
        r->drops = 0;
    }
    if (r->drops < UINT32_MAX)
        r->drops++;
    if (r->drops >= l->kick_after_drops && !r->kicked) {
        r->kicked = true;
        return UPK_BP_RATE_KICK;
    }
    return v;
}
