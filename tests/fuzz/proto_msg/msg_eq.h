/* Field-by-field equality of decoded upkeep messages, shared by the proto_msg
 * fuzz targets and unit tests to check that decode(encode(decode(x))) gives
 * back decode(x). Header-only; test code only. */
#ifndef UPK_TEST_MSG_EQ_H
#define UPK_TEST_MSG_EQ_H

#include <stdbool.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "upkeep/msg.h"

static inline bool upk_test_cap_eq(const upk_capability *a, const upk_capability *b)
{
    if (a->automatic != b->automatic || a->signed_only != b->signed_only ||
        a->rollback != b->rollback || a->delta != b->delta || a->module_count != b->module_count)
        return false;
    for (size_t i = 0; i < a->module_count; i++) {
        if (strcmp(a->modules[i], b->modules[i]) != 0)
            return false;
    }
    return true;
}

static inline bool upk_test_state_eq(const upk_state_msg *a, const upk_state_msg *b)
{
    return strcmp(a->device, b->device) == 0 && strcmp(a->hw, b->hw) == 0 &&
           strcmp(a->release, b->release) == 0 && strcmp(a->version, b->version) == 0 &&
           a->security_version == b->security_version && strcmp(a->slot, b->slot) == 0 &&
           a->status == b->status && strcmp(a->campaign, b->campaign) == 0 &&
           a->error == b->error && upk_test_cap_eq(&a->cap, &b->cap) &&
           a->support_until == b->support_until && a->support_signed == b->support_signed &&
           a->last_patched == b->last_patched &&
           memcmp(a->image_sha256, b->image_sha256, sizeof(a->image_sha256)) == 0 &&
           strcmp(a->agent, b->agent) == 0 && a->stale == b->stale && a->ts == b->ts;
}

static inline bool upk_test_desired_eq(const upk_desired_msg *a, const upk_desired_msg *b)
{
    if (a->clear || b->clear)
        return a->clear == b->clear && a->ctr == b->ctr && a->fresh_until == b->fresh_until;
    return strcmp(a->campaign, b->campaign) == 0 && strcmp(a->key_id, b->key_id) == 0 &&
           a->manifest_len == b->manifest_len && a->manifest != NULL && b->manifest != NULL &&
           memcmp(a->manifest, b->manifest, a->manifest_len) == 0 && a->sig_len == b->sig_len &&
           memcmp(a->sig, b->sig, a->sig_len) == 0 && a->bake_s == b->bake_s &&
           a->clear == b->clear && a->rollback == b->rollback && a->ctr == b->ctr &&
           a->fresh_until == b->fresh_until;
}

static inline bool upk_test_health_eq(const upk_health *a, const upk_health *b)
{
    if (a->present != b->present)
        return false;
    if (!a->present)
        return true;
    if (a->restarts != b->restarts || a->boots != b->boots || a->check_ok != b->check_ok ||
        a->metric_count != b->metric_count)
        return false;
    for (size_t i = 0; i < a->metric_count; i++) {
        /* == so that 0.0 and -0.0 (printed alike) compare equal. */
        if (strcmp(a->metric_name[i], b->metric_name[i]) != 0 ||
            !(a->metric_value[i] == b->metric_value[i]))
            return false;
    }
    return true;
}

static inline bool upk_test_event_eq(const upk_event_msg *a, const upk_event_msg *b)
{
    return a->seq == b->seq && a->ts == b->ts && strcmp(a->campaign, b->campaign) == 0 &&
           strcmp(a->release, b->release) == 0 && strcmp(a->version, b->version) == 0 &&
           a->step == b->step && a->progress == b->progress && a->error == b->error &&
           strcmp(a->message, b->message) == 0 && upk_test_health_eq(&a->health, &b->health);
}

static inline bool upk_test_chunk_req_eq(const upk_chunk_req *a, const upk_chunk_req *b)
{
    return memcmp(a->artifact, b->artifact, sizeof(a->artifact)) == 0 && a->offset == b->offset &&
           a->length == b->length;
}

static inline bool upk_test_chunk_hdr_eq(const upk_chunk_hdr *a, const upk_chunk_hdr *b)
{
    return a->status == b->status && memcmp(a->artifact, b->artifact, sizeof(a->artifact)) == 0 &&
           a->offset == b->offset && a->length == b->length;
}

static inline bool upk_test_ctl_req_eq(const upk_ctl_req *a, const upk_ctl_req *b)
{
    return strcmp(a->id, b->id) == 0 && strcmp(a->cmd, b->cmd) == 0 &&
           cJSON_Compare(a->args, b->args, true);
}

static inline bool upk_test_ctl_resp_eq(const upk_ctl_resp *a, const upk_ctl_resp *b)
{
    if (strcmp(a->id, b->id) != 0 || a->error != b->error || strcmp(a->message, b->message) != 0)
        return false;
    if (a->data == NULL || b->data == NULL)
        return a->data == b->data;
    return cJSON_Compare(a->data, b->data, true);
}

#endif
