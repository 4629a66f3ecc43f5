/* Regression tests for bugs the hostile-input work found, where a unit test
 * can reach them (the others are cases of corpus.txt): the CLI's formatting
 * of numbers a hostile controller reply may carry (huge, negative, NaN). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "clifmt.h"

static void cell_time_out_of_range_prints_dash(void **state)
{
    (void)state;
    static const double bad[] = {1e300, -1e300, 253402300800.0, 0, -1};
    char buf[64];
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cJSON *n = cJSON_CreateNumber(bad[i]);
        assert_non_null(n);
        upk_cell_format(n, UPK_COL_TIME_S, buf, sizeof(buf));
        assert_string_equal(buf, "-");
        upk_cell_format(n, UPK_COL_TIME_MS, buf, sizeof(buf));
        assert_string_equal(buf, bad[i] == 253402300800.0 ? "1978-01-11T21:31:40Z" : "-");
        cJSON_Delete(n);
    }
    cJSON *ok = cJSON_CreateNumber(1795000000);
    assert_non_null(ok);
    upk_cell_format(ok, UPK_COL_TIME_S, buf, sizeof(buf));
    assert_string_equal(buf, "2026-11-18T11:06:40Z");
    cJSON_Delete(ok);
}

static void cell_number_beyond_integers_prints_as_fraction(void **state)
{
    (void)state;
    char buf[512];
    cJSON *n = cJSON_CreateNumber(1e300);
    assert_non_null(n);
    upk_cell_format(n, UPK_COL_NUM, buf, sizeof(buf));
    assert_non_null(strstr(buf, ".00"));
    cJSON_Delete(n);
    n = cJSON_CreateNumber(42);
    assert_non_null(n);
    upk_cell_format(n, UPK_COL_NUM, buf, sizeof(buf));
    assert_string_equal(buf, "42");
    cJSON_Delete(n);
}

static void bar_clamps_huge_negative_and_nan(void **state)
{
    (void)state;
    char buf[16];
    upk_bar_format(1e300, 100, 10, buf, sizeof(buf));
    assert_string_equal(buf, "[##########]");
    upk_bar_format(-1e300, 100, 10, buf, sizeof(buf));
    assert_string_equal(buf, "[..........]");
    upk_bar_format(NAN, 100, 10, buf, sizeof(buf));
    assert_string_equal(buf, "[..........]");
    upk_bar_format(50, 100, 10, buf, sizeof(buf));
    assert_string_equal(buf, "[#####.....]");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(cell_time_out_of_range_prints_dash),
        cmocka_unit_test(cell_number_beyond_integers_prints_as_fraction),
        cmocka_unit_test(bar_clamps_huge_negative_and_nan),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
