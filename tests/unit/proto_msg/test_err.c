/* Unit tests of the error table (proto/src/err.c), plus the check that
 * docs/protocol.md names every error code and agent status, so the wire
 * documentation cannot drift from err.h and msg.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "upkeep/err.h"
#include "upkeep/msg.h"

static const char *const all_names[] = {
#define X(name, msg) #name,
    UPK_ERR_MAP(X)
#undef X
};

static void err_ok_is_zero_and_named_ok(void **state)
{
    (void)state;
    assert_int_equal(UPK_OK, 0);
    assert_string_equal(upk_err_str(UPK_OK), "OK");
    assert_string_equal(upk_err_msg(UPK_OK), "success");
}

static void err_every_code_has_a_unique_name_and_message(void **state)
{
    (void)state;
    assert_int_equal(sizeof(all_names) / sizeof(all_names[0]), UPK_E__COUNT);
    for (int i = 0; i < UPK_E__COUNT; i++) {
        const char *n = upk_err_str((upk_err)i);
        assert_string_equal(n, all_names[i]);
        assert_true(strlen(upk_err_msg((upk_err)i)) > 0);
        /* Wire names are upper-case identifiers. */
        for (const char *p = n; *p != '\0'; p++)
            assert_true((*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_');
        for (int j = 0; j < i; j++)
            assert_string_not_equal(n, upk_err_str((upk_err)j));
    }
}

static void err_from_str_round_trips_every_code(void **state)
{
    (void)state;
    for (int i = 0; i < UPK_E__COUNT; i++) {
        upk_err e = UPK_E__COUNT;
        assert_true(upk_err_from_str(upk_err_str((upk_err)i), &e));
        assert_int_equal(e, i);
    }
}

static void err_from_str_rejects_unknown_and_leaves_out(void **state)
{
    (void)state;
    upk_err e = UPK_E_IO;
    assert_false(upk_err_from_str("sig_invalid", &e)); /* case matters */
    assert_false(upk_err_from_str("SIG_INVALID ", &e));
    assert_false(upk_err_from_str("", &e));
    assert_false(upk_err_from_str("UNKNOWN", &e));
    assert_false(upk_err_from_str(NULL, &e));
    assert_int_equal(e, UPK_E_IO);
}

static void err_out_of_range_gives_unknown(void **state)
{
    (void)state;
    assert_string_equal(upk_err_str(UPK_E__COUNT), "UNKNOWN");
    assert_string_equal(upk_err_str((upk_err)-1), "UNKNOWN");
    assert_string_equal(upk_err_msg(UPK_E__COUNT), "unknown error");
    assert_string_equal(upk_err_msg((upk_err)-7), "unknown error");
}

/* Reads docs/protocol.md into a new string; fails the test when absent. */
static char *read_doc(void)
{
    FILE *f = fopen(UPK_DOCS_PROTOCOL, "rb");
    if (f == NULL)
        fail_msg("cannot open %s", UPK_DOCS_PROTOCOL);
    size_t cap = 1 << 20, n = 0;
    char *buf = malloc(cap + 1);
    assert_non_null(buf);
    n = fread(buf, 1, cap, f);
    assert_int_equal(ferror(f), 0);
    assert_true(feof(f)); /* the document is under 1 MiB */
    fclose(f);
    buf[n] = '\0';
    return buf;
}

static void docs_protocol_lists_every_error_code(void **state)
{
    (void)state;
    char *doc = read_doc();
    for (int i = 0; i < UPK_E__COUNT; i++) {
        /* Each code appears as a table cell: "| `NAME` | message |". */
        char cell[128];
        int n = snprintf(cell, sizeof(cell), "| `%s` | %s |", upk_err_str((upk_err)i),
                         upk_err_msg((upk_err)i));
        assert_true(n > 0 && (size_t)n < sizeof(cell));
        if (strstr(doc, cell) == NULL)
            fail_msg("docs/protocol.md lacks the row %s", cell);
    }
    free(doc);
}

static void docs_protocol_lists_every_status(void **state)
{
    (void)state;
    char *doc = read_doc();
    for (int i = 0; i < UPK_STATUS__COUNT; i++) {
        char cell[64];
        int n = snprintf(cell, sizeof(cell), "| `%s` |", upk_status_str((upk_status)i));
        assert_true(n > 0 && (size_t)n < sizeof(cell));
        if (strstr(doc, cell) == NULL)
            fail_msg("docs/protocol.md lacks the status row %s", cell);
    }
    free(doc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(err_ok_is_zero_and_named_ok),
        cmocka_unit_test(err_every_code_has_a_unique_name_and_message),
        cmocka_unit_test(err_from_str_round_trips_every_code),
        cmocka_unit_test(err_from_str_rejects_unknown_and_leaves_out),
        cmocka_unit_test(err_out_of_range_gives_unknown),
        cmocka_unit_test(docs_protocol_lists_every_error_code),
        cmocka_unit_test(docs_protocol_lists_every_status),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
