/* Unit tests of RFC 3339 UTC time parsing and formatting
 * (proto/src/timefmt.c): known instants, leap years, and every bad form. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "upkeep/timefmt.h"

static void expect_parse(const char *s, int64_t want)
{
    int64_t t = -12345;
    upk_err err = upk_time_parse(s, &t);
    if (err != UPK_OK)
        fail_msg("%s: %s", s, upk_err_str(err));
    assert_int_equal(t, want);
}

static void expect_bad(const char *s)
{
    int64_t t = -12345;
    upk_err err = upk_time_parse(s, &t);
    if (err != UPK_E_FIELD_RANGE)
        fail_msg("\"%s\": got %s", s, upk_err_str(err));
    assert_int_equal(t, -12345);
}

static void time_parse_known_instants(void **state)
{
    (void)state;
    expect_parse("1970-01-01T00:00:00Z", 0);
    expect_parse("1970-01-01T00:00:01Z", 1);
    expect_parse("2000-03-01T00:00:00Z", 951868800);
    expect_parse("2038-01-19T03:14:07Z", 2147483647);
    expect_parse("2038-01-19T03:14:08Z", 2147483648LL);
    expect_parse("2026-11-27T03:19:29Z", 1795749569);
    expect_parse("9999-12-31T23:59:59Z", 253402300799LL);
}

static void time_parse_accepts_bare_date_as_midnight(void **state)
{
    (void)state;
    expect_parse("2030-01-01", 1893456000);
    expect_parse("1970-01-01", 0);
}

static void time_parse_knows_leap_years(void **state)
{
    (void)state;
    expect_parse("2024-02-29T00:00:00Z", 1709164800);
    expect_parse("2000-02-29T12:00:00Z", 951825600);
    expect_bad("2023-02-29T00:00:00Z");
    expect_bad("2100-02-29T00:00:00Z"); /* divisible by 100, not by 400 */
    expect_bad("2024-02-30T00:00:00Z");
    expect_parse("2100-02-28T00:00:00Z", 4107456000LL);
    expect_parse("2100-03-01T00:00:00Z", 4107542400LL);
}

static void time_parse_rejects_bad_forms(void **state)
{
    (void)state;
    const char *bad[] = {
        "",
        "2026",
        "2026-11",
        "2026-11-27T",
        "2026-11-27T03:19Z",
        "2026-11-27T03:19:29",
        "2026-11-27t03:19:29Z",
        "2026-11-27T03:19:29z",
        "2026-11-27 03:19:29Z",
        "2026-11-27T03:19:29+00:00",
        "2026-11-27T03:19:29.5Z",
        "2026-11-27T03:19:29ZZ",
        " 2026-11-27T03:19:29Z",
        "2026-13-01T00:00:00Z",
        "2026-00-01T00:00:00Z",
        "2026-01-00T00:00:00Z",
        "2026-04-31T00:00:00Z",
        "2026-01-01T24:00:00Z",
        "2026-01-01T23:60:00Z",
        "2016-12-31T23:59:60Z", /* leap seconds are not representable */
        "1969-12-31T23:59:59Z",
        "+026-01-01T00:00:00Z",
        "2026-1-01T00:00:00Z",
        "2026/01/01",
        "2026-01-0a",
        "20260101T000000Z",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_bad(bad[i]);
    int64_t t = 5;
    assert_int_equal(upk_time_parse(NULL, &t), UPK_E_FIELD_RANGE);
    assert_int_equal(upk_time_parse("2026-01-01", NULL), UPK_E_FIELD_RANGE);
    assert_int_equal(t, 5);
}

static void time_format_known_instants(void **state)
{
    (void)state;
    char buf[UPK_TIME_STR_LEN + 1];
    assert_int_equal(upk_time_format(0, buf, sizeof(buf)), UPK_OK);
    assert_string_equal(buf, "1970-01-01T00:00:00Z");
    assert_int_equal(upk_time_format(1709164800, buf, sizeof(buf)), UPK_OK);
    assert_string_equal(buf, "2024-02-29T00:00:00Z");
    assert_int_equal(upk_time_format(253402300799LL, buf, sizeof(buf)), UPK_OK);
    assert_string_equal(buf, "9999-12-31T23:59:59Z");
}

static void time_format_and_parse_round_trip_across_centuries(void **state)
{
    (void)state;
    /* Every ~day plus an odd offset, 1970 to 2400, so each month, leap day
     * and century rule is crossed. */
    for (int64_t t = 0; t < 13569465600LL; t += 86400 * 3 + 3671) {
        char buf[UPK_TIME_STR_LEN + 1];
        assert_int_equal(upk_time_format(t, buf, sizeof(buf)), UPK_OK);
        int64_t back = -1;
        assert_int_equal(upk_time_parse(buf, &back), UPK_OK);
        assert_int_equal(back, t);
    }
}

static void time_format_rejects_out_of_range_and_small_buffers(void **state)
{
    (void)state;
    char buf[UPK_TIME_STR_LEN + 1];
    assert_int_equal(upk_time_format(-1, buf, sizeof(buf)), UPK_E_FIELD_RANGE);
    assert_int_equal(upk_time_format(253402300800LL, buf, sizeof(buf)), UPK_E_FIELD_RANGE);
    assert_int_equal(upk_time_format(INT64_MAX, buf, sizeof(buf)), UPK_E_FIELD_RANGE);
    assert_int_equal(upk_time_format(0, buf, UPK_TIME_STR_LEN), UPK_E_BUFFER_TOO_SMALL);
    assert_int_equal(upk_time_format(0, NULL, 64), UPK_E_BUFFER_TOO_SMALL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(time_parse_known_instants),
        cmocka_unit_test(time_parse_accepts_bare_date_as_midnight),
        cmocka_unit_test(time_parse_knows_leap_years),
        cmocka_unit_test(time_parse_rejects_bad_forms),
        cmocka_unit_test(time_format_known_instants),
        cmocka_unit_test(time_format_and_parse_round_trip_across_centuries),
        cmocka_unit_test(time_format_rejects_out_of_range_and_small_buffers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
