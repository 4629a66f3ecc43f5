/* Unit tests of identifier validation (proto/src/id.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "upkeep/id.h"

static void id_accepts_valid_forms(void **state)
{
    (void)state;
    const char *ok[] = {"a",
                        "Z",
                        "0",
                        "_",
                        "_x",
                        "dev-0001",
                        "a.b-c_d",
                        "ALL.caps-9",
                        "0123456789012345678901234567890123456789012345678901234567890123"};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        if (!upk_id_valid(ok[i]))
            fail_msg("rejected %s", ok[i]);
        assert_int_equal(upk_id_check(ok[i]), UPK_OK);
        assert_true(upk_id_valid_n(ok[i], strlen(ok[i])));
    }
    assert_int_equal(strlen(ok[8]), UPK_ID_MAX);
}

static void id_rejects_invalid_forms(void **state)
{
    (void)state;
    const char *bad[] = {"",
                         ".a",
                         "-a",
                         "..",
                         "a/b",
                         "a+b",
                         "a#",
                         "a b",
                         "a\tb",
                         "\xc3\xa9",
                         "a$",
                         "a:b",
                         "a\\b",
                         "*",
                         "a\"",
                         "a\n",
                         "01234567890123456789012345678901234567890123456789012345678901234"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (upk_id_valid(bad[i]))
            fail_msg("accepted %s", bad[i]);
        assert_int_equal(upk_id_check(bad[i]), UPK_E_ID_INVALID);
    }
    assert_false(upk_id_valid(NULL));
    assert_int_equal(upk_id_check(NULL), UPK_E_ID_INVALID);
}

static void id_allows_dots_and_dashes_after_the_first_char(void **state)
{
    (void)state;
    assert_true(upk_id_valid("a."));
    assert_true(upk_id_valid("a-"));
    assert_true(upk_id_valid("_."));
    assert_true(upk_id_valid("9..-"));
}

static void id_valid_n_counts_len_bytes_only(void **state)
{
    (void)state;
    const char buf[] = {'a', 'b', '\0', 'c'};
    assert_true(upk_id_valid_n(buf, 2));
    assert_false(upk_id_valid_n(buf, 3)); /* NUL inside */
    assert_false(upk_id_valid_n(buf, 4));
    assert_false(upk_id_valid_n(buf, 0));
    assert_false(upk_id_valid_n(NULL, 1));
    const char *s = "dev/x";
    assert_true(upk_id_valid_n(s, 3));
    assert_false(upk_id_valid_n(s, 4));
}

/* Every byte value after a valid first char: exactly [A-Za-z0-9._-] pass. */
static void id_chars_are_exactly_the_allowed_set(void **state)
{
    (void)state;
    for (int c = 1; c < 256; c++) {
        char s[3] = {'a', (char)c, '\0'};
        bool want = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
        if (upk_id_valid(s) != want)
            fail_msg("byte %d: valid %d, want %d", c, !want, want);
    }
}

static void id_rejects_long_unterminated_without_overread(void **state)
{
    (void)state;
    /* 65 valid chars then a NUL: strnlen stops at 65, rejects as too long. */
    char buf[UPK_ID_MAX + 2];
    memset(buf, 'x', UPK_ID_MAX + 1);
    buf[UPK_ID_MAX + 1] = '\0';
    assert_false(upk_id_valid(buf));
    assert_false(upk_id_valid_n(buf, UPK_ID_MAX + 1));
    assert_true(upk_id_valid_n(buf, UPK_ID_MAX));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(id_accepts_valid_forms),
        cmocka_unit_test(id_chars_are_exactly_the_allowed_set),
        cmocka_unit_test(id_rejects_invalid_forms),
        cmocka_unit_test(id_allows_dots_and_dashes_after_the_first_char),
        cmocka_unit_test(id_valid_n_counts_len_bytes_only),
        cmocka_unit_test(id_rejects_long_unterminated_without_overread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
