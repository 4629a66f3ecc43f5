/* Unit tests of the topic scheme (proto/src/topic.c): every kind builds and
 * parses back, and everything outside the scheme is refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "upkeep/topic.h"

#define P UPK_TOPIC_PREFIX_DEFAULT

static const struct {
    upk_topic_kind kind;
    const char *id;
    const char *topic;
    const char *name;
} kinds[] = {
    {UPK_TOPIC_DEV_STATE, "dev-1", "upkeep/v1/dev/dev-1/state", "state"},
    {UPK_TOPIC_DEV_ONLINE, "dev-1", "upkeep/v1/dev/dev-1/online", "online"},
    {UPK_TOPIC_DEV_DESIRED, "dev-1", "upkeep/v1/dev/dev-1/desired", "desired"},
    {UPK_TOPIC_DEV_EVENTS, "dev-1", "upkeep/v1/dev/dev-1/events", "events"},
    {UPK_TOPIC_DEV_CHUNK_REQ, "dev-1", "upkeep/v1/dev/dev-1/chunk/req", "chunk/req"},
    {UPK_TOPIC_DEV_CHUNK_DATA, "dev-1", "upkeep/v1/dev/dev-1/chunk/data", "chunk/data"},
    {UPK_TOPIC_DEV_ACK, "dev-1", "upkeep/v1/dev/dev-1/ack", "ack"},
    {UPK_TOPIC_CTL_REQ, "alice", "upkeep/v1/ctl/req/alice", "ctl/req"},
    {UPK_TOPIC_CTL_RESP, "alice", "upkeep/v1/ctl/resp/alice", "ctl/resp"},
    {UPK_TOPIC_BROKER_STATS, NULL, "upkeep/v1/broker/stats", "broker/stats"},
};
#define NKINDS (sizeof(kinds) / sizeof(kinds[0]))

static void expect_parse_err(const char *topic, const char *prefix, upk_err want)
{
    upk_topic t;
    memset(&t, 0x5c, sizeof(t));
    upk_err got = upk_topic_parse(topic, strlen(topic), prefix, &t);
    if (got != want)
        fail_msg("%s: got %s want %s", topic, upk_err_str(got), upk_err_str(want));
    for (size_t i = 0; i < sizeof(t); i++)
        assert_int_equal(((unsigned char *)&t)[i], 0x5c);
}

static void topic_every_kind_builds_and_parses_back(void **state)
{
    (void)state;
    assert_int_equal(NKINDS, UPK_TOPIC__COUNT);
    for (size_t i = 0; i < NKINDS; i++) {
        char buf[UPK_TOPIC_MAX + 1];
        assert_int_equal(upk_topic_build(buf, sizeof(buf), P, kinds[i].kind, kinds[i].id), UPK_OK);
        assert_string_equal(buf, kinds[i].topic);
        upk_topic t;
        assert_int_equal(upk_topic_parse(buf, strlen(buf), P, &t), UPK_OK);
        assert_int_equal(t.kind, kinds[i].kind);
        assert_string_equal(t.id, kinds[i].id != NULL ? kinds[i].id : "");
        assert_string_equal(upk_topic_kind_str(kinds[i].kind), kinds[i].name);
        assert_int_equal(upk_topic_kind_is_device(kinds[i].kind),
                         strncmp(kinds[i].topic, "upkeep/v1/dev/", 14) == 0);
    }
    assert_string_equal(upk_topic_kind_str(UPK_TOPIC__COUNT), "unknown");
}

static void topic_parse_dev_events_gives_device_and_kind(void **state)
{
    (void)state;
    upk_topic t;
    const char *s = "upkeep/v1/dev/d/events";
    assert_int_equal(upk_topic_parse(s, strlen(s), P, &t), UPK_OK);
    assert_int_equal(t.kind, UPK_TOPIC_DEV_EVENTS);
    assert_string_equal(t.id, "d");
}

static void topic_custom_prefix_round_trips(void **state)
{
    (void)state;
    char buf[UPK_TOPIC_MAX + 1];
    assert_int_equal(upk_topic_build(buf, sizeof(buf), "site-7/ota", UPK_TOPIC_DEV_STATE, "x"),
                     UPK_OK);
    assert_string_equal(buf, "site-7/ota/dev/x/state");
    upk_topic t;
    assert_int_equal(upk_topic_parse(buf, strlen(buf), "site-7/ota", &t), UPK_OK);
    assert_string_equal(t.id, "x");
    expect_parse_err(buf, P, UPK_E_TOPIC_INVALID);
}

static void topic_parse_uses_only_len_bytes(void **state)
{
    (void)state;
    const char *s = "upkeep/v1/dev/d/stateXYZ";
    upk_topic t;
    assert_int_equal(upk_topic_parse(s, strlen(s) - 3, P, &t), UPK_OK);
    assert_int_equal(t.kind, UPK_TOPIC_DEV_STATE);
}

static void topic_parse_rejects_wildcards(void **state)
{
    (void)state;
    expect_parse_err("upkeep/v1/dev/+/state", P, UPK_E_ID_INVALID);
    expect_parse_err("upkeep/v1/dev/#", P, UPK_E_TOPIC_INVALID);
    expect_parse_err("upkeep/v1/#", P, UPK_E_TOPIC_INVALID);
    expect_parse_err("upkeep/v1/ctl/req/+", P, UPK_E_ID_INVALID);
    expect_parse_err("upkeep/+/dev/d/state", P, UPK_E_TOPIC_INVALID);
}

static void topic_parse_rejects_extra_and_missing_levels(void **state)
{
    (void)state;
    expect_parse_err("upkeep/v1/dev/d/state/x", P, UPK_E_TOPIC_INVALID);
    expect_parse_err("upkeep/v1/dev/a/b/state", P, UPK_E_TOPIC_INVALID);
    expect_parse_err("upkeep/v1/dev/d", P, UPK_E_TOPIC_INVALID);
    expect_parse_err("upkeep/v1/dev//state", P, UPK_E_ID_INVALID);
    expect_parse_err("upkeep/v1/dev/d/chunk", P, UPK_E_TOPIC_INVALID);
    expect_parse_err("upkeep/v1/dev/d/chunk/req/1", P, UPK_E_TOPIC_INVALID);
    expect_parse_err("upkeep/v1/ctl/req", P, UPK_E_TOPIC_INVALID);
    expect_parse_err("upkeep/v1/ctl/req/", P, UPK_E_ID_INVALID);
    expect_parse_err("upkeep/v1/ctl/req/a/b", P, UPK_E_TOPIC_INVALID);
    expect_parse_err("upkeep/v1/broker/stats/x", P, UPK_E_TOPIC_INVALID);
    expect_parse_err("upkeep/v1/", P, UPK_E_TOPIC_INVALID);
    expect_parse_err("upkeep/v1", P, UPK_E_TOPIC_INVALID);
    expect_parse_err("", P, UPK_E_TOPIC_INVALID);
    expect_parse_err("upkeep/v1/dev/d/State", P, UPK_E_TOPIC_INVALID);
    expect_parse_err("upkeep/v1/dev/d/unknown", P, UPK_E_TOPIC_INVALID);
}

static void topic_parse_rejects_wrong_prefix(void **state)
{
    (void)state;
    expect_parse_err("upkeep/v2/dev/d/state", P, UPK_E_TOPIC_INVALID);
    expect_parse_err("upkeep/v10/dev/d/state", P, UPK_E_TOPIC_INVALID);
    expect_parse_err("/upkeep/v1/dev/d/state", P, UPK_E_TOPIC_INVALID);
    expect_parse_err("Upkeep/v1/dev/d/state", P, UPK_E_TOPIC_INVALID);
    expect_parse_err("dev/d/state", P, UPK_E_TOPIC_INVALID);
}

static void topic_parse_rejects_bad_ids(void **state)
{
    (void)state;
    expect_parse_err("upkeep/v1/dev/.d/state", P, UPK_E_ID_INVALID);
    expect_parse_err("upkeep/v1/dev/-d/events", P, UPK_E_ID_INVALID);
    expect_parse_err("upkeep/v1/dev/d d/state", P, UPK_E_ID_INVALID);
    expect_parse_err("upkeep/v1/ctl/resp/b$b", P, UPK_E_ID_INVALID);
    char topic[UPK_TOPIC_MAX + 64];
    char id[UPK_ID_MAX + 2];
    memset(id, 'x', UPK_ID_MAX + 1);
    id[UPK_ID_MAX + 1] = '\0';
    snprintf(topic, sizeof(topic), "upkeep/v1/dev/%s/state", id);
    expect_parse_err(topic, P, UPK_E_ID_INVALID);
    /* NUL inside the id */
    const char nul[] = "upkeep/v1/dev/a\0b/state";
    upk_topic t;
    assert_int_equal(upk_topic_parse(nul, sizeof(nul) - 1, P, &t), UPK_E_ID_INVALID);
}

static void topic_parse_rejects_overlong(void **state)
{
    (void)state;
    char topic[UPK_TOPIC_MAX + 2];
    memset(topic, 'a', sizeof(topic) - 1);
    topic[sizeof(topic) - 1] = '\0';
    memcpy(topic, "upkeep/v1/dev/", 14);
    expect_parse_err(topic, P, UPK_E_TOPIC_INVALID);
}

static void topic_parse_rejects_bad_prefix_argument(void **state)
{
    (void)state;
    const char *s = "a/dev/d/state";
    upk_topic t;
    assert_int_equal(upk_topic_parse(s, strlen(s), "a/", &t), UPK_E_INVALID_ARG);
    assert_int_equal(upk_topic_parse(s, strlen(s), "", &t), UPK_E_INVALID_ARG);
    assert_int_equal(upk_topic_parse(s, strlen(s), NULL, &t), UPK_E_INVALID_ARG);
    assert_int_equal(upk_topic_parse(NULL, 3, "a", &t), UPK_E_INVALID_ARG);
    assert_int_equal(upk_topic_parse(s, strlen(s), "a", NULL), UPK_E_INVALID_ARG);
}

static void topic_prefix_validation(void **state)
{
    (void)state;
    assert_true(upk_topic_prefix_valid("upkeep/v1"));
    assert_true(upk_topic_prefix_valid("x"));
    const char *bad[] = {"", "/a", "a/", "a//b", "a/+/b", "#", "$SYS", "a\x01"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (upk_topic_prefix_valid(bad[i]))
            fail_msg("accepted prefix %s", bad[i]);
    }
    assert_false(upk_topic_prefix_valid(NULL));
    char long_prefix[UPK_TOPIC_PREFIX_MAX + 2];
    memset(long_prefix, 'p', sizeof(long_prefix) - 1);
    long_prefix[sizeof(long_prefix) - 1] = '\0';
    assert_false(upk_topic_prefix_valid(long_prefix));
    long_prefix[UPK_TOPIC_PREFIX_MAX] = '\0';
    assert_true(upk_topic_prefix_valid(long_prefix));
}

static void topic_build_rejects_bad_input(void **state)
{
    (void)state;
    char buf[UPK_TOPIC_MAX + 1];
    assert_int_equal(upk_topic_build(buf, sizeof(buf), P, UPK_TOPIC_DEV_STATE, "a/b"),
                     UPK_E_ID_INVALID);
    assert_int_equal(upk_topic_build(buf, sizeof(buf), P, UPK_TOPIC_DEV_STATE, "+"),
                     UPK_E_ID_INVALID);
    assert_int_equal(upk_topic_build(buf, sizeof(buf), P, UPK_TOPIC_CTL_REQ, NULL),
                     UPK_E_ID_INVALID);
    assert_int_equal(upk_topic_build(buf, sizeof(buf), P, UPK_TOPIC__COUNT, "a"),
                     UPK_E_INVALID_ARG);
    assert_int_equal(upk_topic_build(buf, sizeof(buf), "bad/", UPK_TOPIC_DEV_STATE, "a"),
                     UPK_E_INVALID_ARG);
    assert_int_equal(upk_topic_build(NULL, 10, P, UPK_TOPIC_DEV_STATE, "a"), UPK_E_INVALID_ARG);
    /* "upkeep/v1/dev/a/state" is 21 chars: 21 bytes do not fit, 22 do. */
    assert_int_equal(upk_topic_build(buf, 21, P, UPK_TOPIC_DEV_STATE, "a"), UPK_E_BUFFER_TOO_SMALL);
    assert_int_equal(upk_topic_build(buf, 22, P, UPK_TOPIC_DEV_STATE, "a"), UPK_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(topic_every_kind_builds_and_parses_back),
        cmocka_unit_test(topic_parse_dev_events_gives_device_and_kind),
        cmocka_unit_test(topic_custom_prefix_round_trips),
        cmocka_unit_test(topic_parse_uses_only_len_bytes),
        cmocka_unit_test(topic_parse_rejects_wildcards),
        cmocka_unit_test(topic_parse_rejects_extra_and_missing_levels),
        cmocka_unit_test(topic_parse_rejects_wrong_prefix),
        cmocka_unit_test(topic_parse_rejects_bad_ids),
        cmocka_unit_test(topic_parse_rejects_overlong),
        cmocka_unit_test(topic_parse_rejects_bad_prefix_argument),
        cmocka_unit_test(topic_prefix_validation),
        cmocka_unit_test(topic_build_rejects_bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
