/* The device's link checks of a desired message (agent/src/link.c), in
 * their order: tag (AUTH_INVALID), counter (REPLAYED), freshness
 * (DESIRED_STALE); and the state kept once one is accepted. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testutil.h"

#define DEV "dev-0001"
#define NOW INT64_C(1800000000)

static upk_link_key key(const char *secret)
{
    upk_link_key k;
    assert_int_equal(upk_link_key_derive(secret, strlen(secret), DEV, &k), UPK_OK);
    return k;
}

/* A clear with ctr and fresh_until, and its tag under k. */
static char *clear_msg(uint64_t ctr, int64_t fresh, const upk_link_key *k, char *tag)
{
    upk_desired_msg d;
    memset(&d, 0, sizeof(d));
    d.clear = true;
    d.ctr = ctr;
    d.fresh_until = fresh;
    char *json = NULL;
    size_t len = 0;
    assert_int_equal(upk_desired_encode(&d, &json, &len), UPK_OK);
    assert_int_equal(
        upk_link_tag(k, DEV, UPK_TOPIC_DEV_DESIRED, json, len, tag, UPK_LINK_TAG_LEN + 1), UPK_OK);
    return json;
}

static upk_err check(const upk__link *st, const upk_link_key *k, const char *json, const char *tag,
                     upk__link *next)
{
    return upk__link_check_desired(st, k, DEV, json, strlen(json), tag, NOW, next);
}

static void link_accepts_tagged_fresh_newer_and_keeps_its_state(void **state)
{
    (void)state;
    upk_link_key k = key("link-secret-0123456789");
    upk__link st, next;
    memset(&st, 0, sizeof(st));
    char tag[UPK_LINK_TAG_LEN + 1];
    char *m = clear_msg(5, NOW + 60, &k, tag);
    assert_int_equal(check(&st, &k, m, tag, &next), UPK_OK);
    assert_int_equal(next.ctr, 5);
    assert_int_equal(next.fresh_until, NOW + 60);
    uint8_t sha[UPK_SHA256_LEN];
    upk_sha256_buf(m, strlen(m), sha);
    assert_memory_equal(next.sha, sha, sizeof(sha));
    /* The same bytes again (a retained redelivery) are fine. */
    st = next;
    assert_int_equal(check(&st, &k, m, tag, &next), UPK_OK);
    assert_memory_equal(&next, &st, sizeof(st));
    free(m);
    /* No freshness limit at all is accepted too. */
    m = clear_msg(6, 0, &k, tag);
    assert_int_equal(check(&st, &k, m, tag, &next), UPK_OK);
    assert_int_equal(next.fresh_until, 0);
    free(m);
}

static void link_refuses_in_order_with_named_errors(void **state)
{
    (void)state;
    upk_link_key k = key("link-secret-0123456789");
    upk_link_key other = key("link-secret-0123456780");
    upk__link st, next, keep;
    memset(&st, 0, sizeof(st));
    st.ctr = 10;
    memset(st.sha, 0x11, sizeof(st.sha));
    memset(&next, 0x77, sizeof(next));
    keep = next;
    char tag[UPK_LINK_TAG_LEN + 1];
    /* Tag first: even a stale replay with a wrong tag is AUTH_INVALID. */
    char *m = clear_msg(3, NOW - 5, &other, tag);
    assert_int_equal(check(&st, &k, m, tag, &next), UPK_E_AUTH_INVALID);
    assert_int_equal(check(&st, &k, m, "", &next), UPK_E_AUTH_INVALID);
    assert_int_equal(check(&st, &k, m, NULL, &next), UPK_E_AUTH_INVALID);
    free(m);
    assert_int_equal(upk__link_check_desired(&st, &k, DEV, "", 0, "", NOW, &next),
                     UPK_E_AUTH_INVALID);
    /* Then the counter: lower, or equal with other bytes. */
    m = clear_msg(9, NOW + 60, &k, tag);
    assert_int_equal(check(&st, &k, m, tag, &next), UPK_E_REPLAYED);
    free(m);
    m = clear_msg(10, NOW + 60, &k, tag);
    assert_int_equal(check(&st, &k, m, tag, &next), UPK_E_REPLAYED);
    free(m);
    /* Then freshness: fresh_until at or before now. */
    m = clear_msg(11, NOW, &k, tag);
    assert_int_equal(check(&st, &k, m, tag, &next), UPK_E_DESIRED_STALE);
    free(m);
    assert_memory_equal(&next, &keep, sizeof(next)); /* untouched on refusal */
    /* A tag for another device's topic does not count here. */
    m = clear_msg(12, NOW + 60, &k, tag);
    assert_int_equal(upk__link_check_desired(&st, &k, "dev-0002", m, strlen(m), tag, NOW, &next),
                     UPK_E_AUTH_INVALID);
    free(m);
}

/* An authentic message that does not decode keeps the state: the decoder
 * names it later (the controller's bug, not an attack). */
static void link_passes_undecodable_authentic_message_unchanged(void **state)
{
    (void)state;
    upk_link_key k = key("link-secret-0123456789");
    upk__link st, next;
    memset(&st, 0, sizeof(st));
    st.ctr = 4;
    const char *m = "{\"v\":1,\"ctr\":\"x\"}";
    char tag[UPK_LINK_TAG_LEN + 1];
    assert_int_equal(upk_link_tag(&k, DEV, UPK_TOPIC_DEV_DESIRED, m, strlen(m), tag, sizeof(tag)),
                     UPK_OK);
    assert_int_equal(check(&st, &k, m, tag, &next), UPK_OK);
    assert_memory_equal(&next, &st, sizeof(st));
    assert_int_equal(upk__link_check_desired(NULL, &k, DEV, m, 1, tag, NOW, &next),
                     UPK_E_INVALID_ARG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(link_accepts_tagged_fresh_newer_and_keeps_its_state),
        cmocka_unit_test(link_refuses_in_order_with_named_errors),
        cmocka_unit_test(link_passes_undecodable_authentic_message_unchanged),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
