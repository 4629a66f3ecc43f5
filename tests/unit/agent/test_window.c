/* Chunk window: requests in order up to the in-flight limit, early chunks
 * wait, duplicates and strays are refused, timeouts re-request, a reset
 * after a lost connection restarts from the written prefix. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testutil.h"

static const uint8_t bytes[1000] = {1};

static void window_requests_up_to_limit_in_order(void **state)
{
    (void)state;
    upk__window w;
    upk__window_init(&w, 250, 100, 2, 1000, 0);
    uint64_t off;
    uint32_t len;
    assert_true(upk__window_next(&w, 0, &off, &len));
    assert_int_equal(off, 0);
    assert_int_equal(len, 100);
    assert_true(upk__window_next(&w, 0, &off, &len));
    assert_int_equal(off, 100);
    assert_false(upk__window_next(&w, 0, &off, &len)); /* window full */
    /* The second arrives first: it waits. */
    assert_int_equal(upk__window_accept(&w, 100, bytes, 100), UPK_OK);
    uint8_t *d;
    uint32_t dl;
    assert_false(upk__window_take(&w, &d, &dl));
    assert_int_equal(upk__window_accept(&w, 0, bytes, 100), UPK_OK);
    assert_true(upk__window_take(&w, &d, &dl));
    assert_int_equal(dl, 100);
    free(d);
    assert_true(upk__window_take(&w, &d, &dl));
    free(d);
    assert_int_equal(w.written, 200);
    assert_true(upk__window_next(&w, 0, &off, &len));
    assert_int_equal(off, 200);
    assert_int_equal(len, 50); /* the short tail */
    assert_false(upk__window_next(&w, 0, &off, &len));
    assert_int_equal(upk__window_accept(&w, 200, bytes, 50), UPK_OK);
    assert_true(upk__window_take(&w, &d, &dl));
    free(d);
    assert_true(upk__window_done(&w));
    upk__window_cleanup(&w);
}

static void window_refuses_strays_duplicates_and_wrong_lengths(void **state)
{
    (void)state;
    upk__window w;
    upk__window_init(&w, 1000, 100, 4, 1000, 0);
    uint64_t off;
    uint32_t len;
    assert_true(upk__window_next(&w, 0, &off, &len));
    assert_int_equal(upk__window_accept(&w, 500, bytes, 100), UPK_E_CHUNK_UNEXPECTED);
    assert_int_equal(upk__window_accept(&w, 50, bytes, 100), UPK_E_CHUNK_UNEXPECTED);
    assert_int_equal(upk__window_accept(&w, 0, bytes, 99), UPK_E_SIZE_MISMATCH);
    assert_int_equal(upk__window_accept(&w, 0, bytes, 101), UPK_E_SIZE_MISMATCH);
    assert_int_equal(upk__window_accept(&w, 0, bytes, 100), UPK_OK);
    assert_int_equal(upk__window_accept(&w, 0, bytes, 100), UPK_E_CHUNK_UNEXPECTED);
    uint8_t *d;
    uint32_t dl;
    assert_true(upk__window_take(&w, &d, &dl));
    free(d);
    assert_int_equal(upk__window_accept(&w, 0, bytes, 100), UPK_E_CHUNK_UNEXPECTED);
    upk__window_cleanup(&w);
}

/* upk__window_expects names exactly the outstanding, unanswered requests
 * and their lengths (the last one short), so a chunk is matched before its
 * status is read. */
static void window_expects_only_outstanding_requests(void **state)
{
    (void)state;
    upk__window w;
    upk__window_init(&w, 250, 100, 4, 1000, 0);
    uint64_t off;
    uint32_t len, want = 0;
    assert_false(upk__window_expects(&w, 0, &want)); /* nothing asked yet */
    while (upk__window_next(&w, 0, &off, &len))
        ;
    assert_true(upk__window_expects(&w, 0, &want));
    assert_int_equal(want, 100);
    assert_true(upk__window_expects(&w, 200, &want));
    assert_int_equal(want, 50);
    assert_false(upk__window_expects(&w, 300, &want));
    assert_false(upk__window_expects(&w, 150, &want));
    assert_false(upk__window_expects(&w, UINT64_MAX, &want));
    assert_int_equal(upk__window_accept(&w, 100, bytes, 100), UPK_OK);
    assert_false(upk__window_expects(&w, 100, &want)); /* answered */
    upk__window_reset(&w);
    assert_false(upk__window_expects(&w, 0, &want)); /* forgotten on reconnect */
    upk__window_cleanup(&w);
}

/* A refusal counts once per try of a request: repeating it within one try
 * (what a forger can do at will) does not bring the end nearer. */
static void window_counts_refusals_per_try(void **state)
{
    (void)state;
    upk__window w;
    upk__window_init(&w, 1000, 100, 2, 10, 0);
    uint64_t off;
    uint32_t len;
    assert_true(upk__window_next(&w, 0, &off, &len));
    assert_true(upk__window_next(&w, 0, &off, &len));
    assert_int_equal(upk__window_refused(&w, 500), 0); /* not outstanding */
    for (int i = 0; i < 10; i++)
        assert_int_equal(upk__window_refused(&w, 0), 1);
    assert_int_equal(upk__window_refused(&w, 100), 1); /* per request */
    /* The first request is overdue: its second try may be refused again. */
    assert_true(upk__window_next(&w, 1000, &off, &len));
    assert_int_equal(off, 0);
    assert_int_equal(upk__window_refused(&w, 0), 2);
    assert_int_equal(upk__window_refused(&w, 0), 2);
    upk__window_cleanup(&w);
}

static void window_rerequests_after_timeout(void **state)
{
    (void)state;
    upk__window w;
    upk__window_init(&w, 300, 100, 3, 500, 0);
    uint64_t off;
    uint32_t len;
    for (int i = 0; i < 3; i++)
        assert_true(upk__window_next(&w, 1000, &off, &len));
    assert_int_equal(upk__window_accept(&w, 100, bytes, 100), UPK_OK);
    assert_false(upk__window_next(&w, 1499, &off, &len));
    assert_true(upk__window_next(&w, 1500, &off, &len));
    assert_int_equal(off, 0); /* the oldest missing one first */
    assert_true(upk__window_next(&w, 1500, &off, &len));
    assert_int_equal(off, 200);
    assert_false(upk__window_next(&w, 1500, &off, &len)); /* 100 already arrived */
    assert_int_equal(w.slot[0].tries, 2);
    upk__window_cleanup(&w);
}

/* Each re-request of the same chunk waits about twice as long as the one
 * before (plus at most a quarter of jitter), up to the cap. */
static void window_rerequests_back_off_to_a_cap(void **state)
{
    (void)state;
    for (int round = 0; round < 50; round++) {
        upk__window w;
        upk__window_init(&w, 100, 100, 1, 1000, 0);
        uint64_t off, t = 0;
        uint32_t len;
        assert_true(upk__window_next(&w, t, &off, &len));
        uint64_t expect = 1000; /* the first timeout is exact */
        for (uint32_t tries = 2; tries <= 7; tries++) {
            assert_false(upk__window_next(&w, t + expect - 1, &off, &len));
            uint64_t hi = expect + (tries > 2 ? expect / 4 : 0);
            uint64_t at = t + expect;
            while (!upk__window_next(&w, at, &off, &len)) {
                at++;
                assert_true(at <= t + hi); /* never later than wait + jitter */
            }
            assert_int_equal(off, 0);
            assert_int_equal(w.slot[0].tries, tries);
            t = at;
            expect = (uint64_t)1000 << (tries - 1);
            if (expect > 1000u * UPK__WINDOW_BACKOFF_MAX)
                expect = 1000u * UPK__WINDOW_BACKOFF_MAX;
        }
        assert_true(w.slot[0].wait_ms >= 1000u * UPK__WINDOW_BACKOFF_MAX);
        assert_true(w.slot[0].wait_ms <= 1250u * UPK__WINDOW_BACKOFF_MAX);
        upk__window_cleanup(&w);
    }
}

static void window_resumes_from_written_and_resets(void **state)
{
    (void)state;
    upk__window w;
    upk__window_init(&w, 1000, 100, 4, 500, 300);
    uint64_t off;
    uint32_t len;
    assert_true(upk__window_next(&w, 0, &off, &len));
    assert_int_equal(off, 300);
    assert_true(upk__window_next(&w, 0, &off, &len));
    assert_int_equal(upk__window_accept(&w, 400, bytes, 100), UPK_OK);
    upk__window_reset(&w); /* connection lost: buffered data dropped */
    assert_int_equal(w.n, 0);
    assert_true(upk__window_next(&w, 0, &off, &len));
    assert_int_equal(off, 300);
    upk__window_cleanup(&w);
    /* A partial file longer than the artifact is clamped. */
    upk__window_init(&w, 100, 100, 4, 500, 5000);
    assert_true(upk__window_done(&w));
    assert_false(upk__window_next(&w, 0, &off, &len));
    upk__window_cleanup(&w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(window_requests_up_to_limit_in_order),
        cmocka_unit_test(window_refuses_strays_duplicates_and_wrong_lengths),
        cmocka_unit_test(window_expects_only_outstanding_requests),
        cmocka_unit_test(window_counts_refusals_per_try),
        cmocka_unit_test(window_rerequests_after_timeout),
        cmocka_unit_test(window_rerequests_back_off_to_a_cap),
        cmocka_unit_test(window_resumes_from_written_and_resets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
