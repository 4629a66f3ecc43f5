/* Unit tests for proto/src/devkey.c: derived device passwords and their
 * credential epochs (docs/protocol.md section 8). The expected passwords were
 * computed with the openssl command line, independently of this code:
 *   printf 'upkeep-device-v1:dev-1:2' | openssl dgst -sha256 -hmac "$SECRET" */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "upkeep/devkey.h"

#define SECRET "unit-fleet-secret-0123456789abcdef"
#define SLEN   (sizeof(SECRET) - 1)

static const char HEX_E0[] = "69213b2cbff0b0de060054e566ec4507e1d98341da02d32fad6f72dbd9b99a5d";
static const char HEX_E1[] = "8d6efebc0e749ab0cb2d8054688db308333c25dee6a159af2421a6332a4f6279";
static const char HEX_E2[] = "91a7561391ca14139ab14d336a14f287bf727d53c3f5e8a70a5e1f20a97f6512";
static const char HEX_EMAX[] = "4c29446185edb8831d8eaa839866f451243e18bbe59812a674cf388ff5fc22ed";

static void derive_matches_openssl_vectors(void **state)
{
    (void)state;
    char out[UPK_DEVKEY_MAX + 1];
    assert_int_equal(upk_devkey_derive(SECRET, SLEN, "dev-1", out, sizeof(out)), UPK_OK);
    assert_string_equal(out, HEX_E0);
    /* epoch 0 is the original form, byte for byte */
    assert_int_equal(upk_devkey_derive_epoch(SECRET, SLEN, "dev-1", 0, out, sizeof(out)), UPK_OK);
    assert_string_equal(out, HEX_E0);
    assert_int_equal(upk_devkey_derive_epoch(SECRET, SLEN, "dev-1", 1, out, sizeof(out)), UPK_OK);
    assert_string_equal(out, "e1.8d6efebc0e749ab0cb2d8054688db308333c25dee6a159af2421a6332a4f6279");
    assert_int_equal(upk_devkey_derive_epoch(SECRET, SLEN, "dev-1", 2, out, sizeof(out)), UPK_OK);
    assert_string_equal(out, "e2.91a7561391ca14139ab14d336a14f287bf727d53c3f5e8a70a5e1f20a97f6512");
    assert_int_equal(
        upk_devkey_derive_epoch(SECRET, SLEN, "dev-1", UPK_DEVKEY_EPOCH_MAX, out, sizeof(out)),
        UPK_OK);
    assert_int_equal(strlen(out), UPK_DEVKEY_MAX);
    assert_memory_equal(out, "e999999999.", 11);
    assert_string_equal(out + 11, HEX_EMAX);
}

static void derive_epoch_rejects_bad_input(void **state)
{
    (void)state;
    char out[UPK_DEVKEY_MAX + 1];
    memset(out, 'x', sizeof(out));
    assert_int_equal(
        upk_devkey_derive_epoch(SECRET, SLEN, "dev-1", UPK_DEVKEY_EPOCH_MAX + 1u, out, sizeof(out)),
        UPK_E_FIELD_RANGE);
    assert_int_equal(upk_devkey_derive_epoch(SECRET, SLEN, "dev/1", 3, out, sizeof(out)),
                     UPK_E_ID_INVALID);
    assert_int_equal(upk_devkey_derive_epoch("short", 5, "dev-1", 3, out, sizeof(out)),
                     UPK_E_INVALID_ARG);
    /* "e3." + 64 + NUL = 68 bytes: one short is refused, exact fits */
    assert_int_equal(upk_devkey_derive_epoch(SECRET, SLEN, "dev-1", 3, out, 67),
                     UPK_E_BUFFER_TOO_SMALL);
    assert_int_equal(upk_devkey_derive_epoch(SECRET, SLEN, "dev-1", 3, out, 68), UPK_OK);
    assert_int_equal(strlen(out), 67);
}

static void verify_reports_the_epoch(void **state)
{
    (void)state;
    for (uint32_t ep = 0; ep <= 12; ep++) {
        char pw[UPK_DEVKEY_MAX + 1];
        uint32_t got = 777;
        assert_int_equal(upk_devkey_derive_epoch(SECRET, SLEN, "pump-7", ep, pw, sizeof(pw)),
                         UPK_OK);
        assert_int_equal(upk_devkey_verify(SECRET, SLEN, "pump-7", pw, strlen(pw), &got), UPK_OK);
        assert_int_equal(got, ep);
        /* another device's password of the same epoch is not this one's */
        assert_int_equal(upk_devkey_verify(SECRET, SLEN, "pump-8", pw, strlen(pw), &got),
                         UPK_E_AUTH_FAILED);
        assert_int_equal(got, ep); /* untouched on failure */
    }
    uint32_t got = 0;
    const char *max = "e999999999."
                      "4c29446185edb8831d8eaa839866f451243e18bbe59812a674cf388ff5fc22ed";
    assert_int_equal(upk_devkey_verify(SECRET, SLEN, "dev-1", max, strlen(max), &got), UPK_OK);
    assert_int_equal(got, UPK_DEVKEY_EPOCH_MAX);
}

/* Verifies a password given as text; the epoch pointer may be NULL. */
static upk_err check(const char *pw)
{
    return upk_devkey_verify(SECRET, SLEN, "dev-1", pw, strlen(pw), NULL);
}

static void verify_refuses_every_other_form(void **state)
{
    (void)state;
    char buf[256];
    assert_int_equal(check(HEX_E0), UPK_OK);
    /* the hex of one epoch under another epoch's prefix */
    snprintf(buf, sizeof(buf), "e2.%s", HEX_E1);
    assert_int_equal(check(buf), UPK_E_AUTH_FAILED);
    snprintf(buf, sizeof(buf), "e1.%s", HEX_E0);
    assert_int_equal(check(buf), UPK_E_AUTH_FAILED);
    /* the epoch-1 hex alone is not an epoch-0 password */
    assert_int_equal(check(HEX_E1), UPK_E_AUTH_FAILED);
    /* one spelling per epoch: no leading zero, no "e0.", no sign, no 10 digits */
    snprintf(buf, sizeof(buf), "e01.%s", HEX_E1);
    assert_int_equal(check(buf), UPK_E_AUTH_FAILED);
    snprintf(buf, sizeof(buf), "e0.%s", HEX_E0);
    assert_int_equal(check(buf), UPK_E_AUTH_FAILED);
    snprintf(buf, sizeof(buf), "e+1.%s", HEX_E1);
    assert_int_equal(check(buf), UPK_E_AUTH_FAILED);
    snprintf(buf, sizeof(buf), "e1000000000.%s", HEX_EMAX);
    assert_int_equal(check(buf), UPK_E_AUTH_FAILED);
    snprintf(buf, sizeof(buf), "E1.%s", HEX_E1);
    assert_int_equal(check(buf), UPK_E_AUTH_FAILED);
    snprintf(buf, sizeof(buf), "e1%s", HEX_E1);
    assert_int_equal(check(buf), UPK_E_AUTH_FAILED);
    snprintf(buf, sizeof(buf), "e.%s", HEX_E1);
    assert_int_equal(check(buf), UPK_E_AUTH_FAILED);
    /* wrong lengths and case */
    snprintf(buf, sizeof(buf), "e2.%s0", HEX_E2);
    assert_int_equal(check(buf), UPK_E_AUTH_FAILED);
    snprintf(buf, sizeof(buf), "e2.%.63s", HEX_E2);
    assert_int_equal(check(buf), UPK_E_AUTH_FAILED);
    snprintf(buf, sizeof(buf), "e2.%s", HEX_E2);
    assert_int_equal(check(buf), UPK_OK);
    for (char *p = buf + 3; *p != '\0'; p++)
        if (*p >= 'a' && *p <= 'f')
            *p = (char)(*p - 'a' + 'A');
    assert_int_equal(check(buf), UPK_E_AUTH_FAILED);
    assert_int_equal(check(""), UPK_E_AUTH_FAILED);
    assert_int_equal(check("e"), UPK_E_AUTH_FAILED);
    assert_int_equal(check("e1."), UPK_E_AUTH_FAILED);
    assert_int_equal(upk_devkey_verify(SECRET, SLEN, "dev-1", NULL, 0, NULL), UPK_E_AUTH_FAILED);
    /* a bad id or secret is the caller's error, not a failed login */
    assert_int_equal(upk_devkey_verify(SECRET, SLEN, "dev/1", HEX_E0, 64, NULL), UPK_E_ID_INVALID);
    assert_int_equal(upk_devkey_verify("short", 5, "dev-1", HEX_E0, 64, NULL), UPK_E_INVALID_ARG);
}

/* An epoch-0 password may begin with the hex digit 'e'; it must still be
 * read as epoch 0, not as a malformed prefix. */
static void verify_epoch0_starting_with_e(void **state)
{
    (void)state;
    char id[16], pw[UPK_DEVKEY_MAX + 1];
    int found = 0;
    for (int i = 0; i < 1000 && !found; i++) {
        snprintf(id, sizeof(id), "d-%d", i);
        assert_int_equal(upk_devkey_derive(SECRET, SLEN, id, pw, sizeof(pw)), UPK_OK);
        found = pw[0] == 'e';
    }
    assert_true(found);
    uint32_t got = 5;
    assert_int_equal(upk_devkey_verify(SECRET, SLEN, id, pw, strlen(pw), &got), UPK_OK);
    assert_int_equal(got, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(derive_matches_openssl_vectors),
        cmocka_unit_test(derive_epoch_rejects_bad_input),
        cmocka_unit_test(verify_reports_the_epoch),
        cmocka_unit_test(verify_refuses_every_other_form),
        cmocka_unit_test(verify_epoch0_starting_with_e),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
