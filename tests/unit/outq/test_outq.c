/* The controller's outbound backlog: FIFO order, duplicates (same kind,
 * device, artifact, offset) dropped while queued and accepted again once
 * popped, the bound, reuse of freed nodes, and bad arguments. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "outq.h"

static upk_outq_item item(int kind, const char *dev, uint8_t art, uint64_t off)
{
    upk_outq_item it;
    memset(&it, 0, sizeof(it));
    it.kind = kind;
    (void)snprintf(it.device, sizeof(it.device), "%s", dev);
    memset(it.artifact, art, sizeof(it.artifact));
    it.offset = off;
    it.length = 100;
    return it;
}

static void outq_is_fifo_and_drops_duplicates(void **state)
{
    (void)state;
    upk_outq *q = NULL;
    assert_int_equal(upk_outq_new(16, &q), UPK_OK);
    bool dup = true;
    upk_outq_item a = item(1, "dev-a", 1, 0), b = item(1, "dev-b", 1, 0);
    upk_outq_item a2 = item(1, "dev-a", 1, 65536), a3 = item(1, "dev-a", 2, 0);
    upk_outq_item ad = item(2, "dev-a", 1, 0); /* another kind */
    assert_int_equal(upk_outq_push(q, &a, &dup), UPK_OK);
    assert_false(dup);
    assert_int_equal(upk_outq_push(q, &b, &dup), UPK_OK);
    assert_false(dup);
    assert_int_equal(upk_outq_push(q, &a, &dup), UPK_OK); /* asked again */
    assert_true(dup);
    assert_int_equal(upk_outq_push(q, &a2, &dup), UPK_OK);
    assert_false(dup);
    assert_int_equal(upk_outq_push(q, &a3, &dup), UPK_OK);
    assert_false(dup);
    assert_int_equal(upk_outq_push(q, &ad, &dup), UPK_OK);
    assert_false(dup);
    assert_int_equal(upk_outq_len(q), 5);
    assert_int_equal(upk_outq_dups(q), 1);

    upk_outq_item got;
    const upk_outq_item *want[] = {&a, &b, &a2, &a3, &ad};
    for (size_t i = 0; i < 5; i++) {
        assert_true(upk_outq_pop(q, &got));
        assert_int_equal(got.kind, want[i]->kind);
        assert_string_equal(got.device, want[i]->device);
        assert_memory_equal(got.artifact, want[i]->artifact, sizeof(got.artifact));
        assert_int_equal(got.offset, want[i]->offset);
        assert_int_equal(got.length, want[i]->length);
    }
    assert_false(upk_outq_pop(q, &got));
    assert_int_equal(upk_outq_len(q), 0);
    /* Popped: the same request is queued again, not a duplicate. */
    assert_int_equal(upk_outq_push(q, &a, &dup), UPK_OK);
    assert_false(dup);
    upk_outq_free(q);
}

static void outq_is_bounded(void **state)
{
    (void)state;
    upk_outq *q = NULL;
    assert_int_equal(upk_outq_new(3, &q), UPK_OK);
    bool dup = false;
    for (uint64_t i = 0; i < 3; i++) {
        upk_outq_item it = item(1, "dev", 7, i);
        assert_int_equal(upk_outq_push(q, &it, &dup), UPK_OK);
    }
    upk_outq_item more = item(1, "dev", 7, 3);
    assert_int_equal(upk_outq_push(q, &more, &dup), UPK_E_BUSY);
    assert_int_equal(upk_outq_len(q), 3);
    /* A duplicate of a queued one is still recognised when full. */
    upk_outq_item again = item(1, "dev", 7, 1);
    assert_int_equal(upk_outq_push(q, &again, &dup), UPK_OK);
    assert_true(dup);
    upk_outq_item got;
    assert_true(upk_outq_pop(q, &got));
    assert_int_equal(got.offset, 0);
    assert_int_equal(upk_outq_push(q, &more, &dup), UPK_OK); /* room again */
    assert_false(dup);
    upk_outq_free(q);
}

/* Many rounds through a small queue: freed nodes are reused, hash chains stay
 * consistent (every queued key is found as a duplicate, none popped is). */
static void outq_survives_churn(void **state)
{
    (void)state;
    upk_outq *q = NULL;
    assert_int_equal(upk_outq_new(64, &q), UPK_OK);
    bool dup = false;
    uint64_t next = 0, head = 0;
    for (int round = 0; round < 2000; round++) {
        while (upk_outq_len(q) < 64) {
            char dev[16];
            (void)snprintf(dev, sizeof(dev), "d%llu", (unsigned long long)(next % 97));
            upk_outq_item it = item(1, dev, (uint8_t)(next % 5), next);
            assert_int_equal(upk_outq_push(q, &it, &dup), UPK_OK);
            assert_false(dup);
            assert_int_equal(upk_outq_push(q, &it, &dup), UPK_OK);
            assert_true(dup);
            next++;
        }
        for (int k = 0; k < 1 + round % 7; k++) {
            upk_outq_item got;
            assert_true(upk_outq_pop(q, &got));
            assert_int_equal(got.offset, head);
            head++;
        }
    }
    upk_outq_free(q);
}

static void outq_rejects_bad_arguments(void **state)
{
    (void)state;
    upk_outq *q = NULL;
    assert_int_equal(upk_outq_new(0, &q), UPK_E_INVALID_ARG);
    assert_int_equal(upk_outq_new((size_t)1 << 23, &q), UPK_E_INVALID_ARG);
    assert_int_equal(upk_outq_new(4, NULL), UPK_E_INVALID_ARG);
    assert_int_equal(upk_outq_new(4, &q), UPK_OK);
    bool dup = false;
    upk_outq_item it = item(1, "d", 0, 0);
    assert_int_equal(upk_outq_push(NULL, &it, &dup), UPK_E_INVALID_ARG);
    assert_int_equal(upk_outq_push(q, NULL, &dup), UPK_E_INVALID_ARG);
    assert_int_equal(upk_outq_push(q, &it, NULL), UPK_E_INVALID_ARG);
    upk_outq_item got;
    assert_false(upk_outq_pop(NULL, &got));
    assert_false(upk_outq_pop(q, NULL));
    assert_int_equal(upk_outq_len(NULL), 0);
    assert_int_equal(upk_outq_dups(NULL), 0);
    upk_outq_free(q);
    upk_outq_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(outq_is_fifo_and_drops_duplicates),
        cmocka_unit_test(outq_is_bounded),
        cmocka_unit_test(outq_survives_churn),
        cmocka_unit_test(outq_rejects_bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
