/* Unit tests of fleet-secret device password derivation
 * (proto/src/devkey.c). The expected values were computed independently with
 *   printf 'upkeep-device-v1:dev-0001' | openssl dgst -sha256 -hmac 'fleet-secret-0123456789'
 *   printf 'upkeep-device-v1:A' | openssl dgst -sha256 -mac HMAC \
 *       -macopt hexkey:000102030405060708090a0b0c0d0e0f */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "upkeep/devkey.h"
#include "upkeep/hash.h"

static const char secret[] = "fleet-secret-0123456789";

static void devkey_matches_openssl_hmac(void **state)
{
    (void)state;
    char out[UPK_DEVKEY_LEN + 1];
    assert_int_equal(upk_devkey_derive(secret, strlen(secret), "dev-0001", out, sizeof(out)),
                     UPK_OK);
    assert_string_equal(out, "ed54a84f0f68bebcc20e1025e0d93991e18b591a5e5cb68f736920d3a04f2cac");
    uint8_t bin[16];
    for (int i = 0; i < 16; i++)
        bin[i] = (uint8_t)i;
    assert_int_equal(upk_devkey_derive(bin, sizeof(bin), "A", out, sizeof(out)), UPK_OK);
    assert_string_equal(out, "5890d2bf50e2a1f69923a1c771c401d6ff310c031902d3808cdde4979b9bdd96");
}

static void devkey_is_hmac_of_label_and_id(void **state)
{
    (void)state;
    /* Same construction through upk_hmac_sha256, for a 64-char id. */
    const char *id = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ._";
    char msg[128];
    size_t n = strlen("upkeep-device-v1:");
    memcpy(msg, "upkeep-device-v1:", n);
    memcpy(msg + n, id, strlen(id));
    uint8_t mac[UPK_SHA256_LEN];
    assert_int_equal(upk_hmac_sha256(secret, strlen(secret), msg, n + strlen(id), mac), UPK_OK);
    char want[UPK_SHA256_HEX_LEN + 1];
    assert_int_equal(upk_hex_encode(mac, sizeof(mac), want, sizeof(want)), UPK_OK);
    char out[UPK_DEVKEY_LEN + 1];
    assert_int_equal(upk_devkey_derive(secret, strlen(secret), id, out, sizeof(out)), UPK_OK);
    assert_string_equal(out, want);
}

static void devkey_differs_per_device_and_secret(void **state)
{
    (void)state;
    char a[UPK_DEVKEY_LEN + 1], b[UPK_DEVKEY_LEN + 1], c[UPK_DEVKEY_LEN + 1];
    assert_int_equal(upk_devkey_derive(secret, strlen(secret), "d1", a, sizeof(a)), UPK_OK);
    assert_int_equal(upk_devkey_derive(secret, strlen(secret), "d2", b, sizeof(b)), UPK_OK);
    assert_string_not_equal(a, b);
    const char other[] = "fleet-secret-0123456780";
    assert_int_equal(upk_devkey_derive(other, strlen(other), "d1", c, sizeof(c)), UPK_OK);
    assert_string_not_equal(a, c);
    assert_int_equal(strlen(a), UPK_DEVKEY_LEN);
}

static void devkey_rejects_short_secret_bad_id_and_small_buffer(void **state)
{
    (void)state;
    char out[UPK_DEVKEY_LEN + 1];
    assert_int_equal(upk_devkey_derive(secret, UPK_FLEET_SECRET_MIN - 1, "d", out, sizeof(out)),
                     UPK_E_INVALID_ARG);
    assert_int_equal(upk_devkey_derive(secret, UPK_FLEET_SECRET_MIN, "d", out, sizeof(out)),
                     UPK_OK);
    assert_int_equal(upk_devkey_derive(NULL, 32, "d", out, sizeof(out)), UPK_E_INVALID_ARG);
    assert_int_equal(upk_devkey_derive(secret, strlen(secret), "d", NULL, 65), UPK_E_INVALID_ARG);
    assert_int_equal(upk_devkey_derive(secret, strlen(secret), "a/b", out, sizeof(out)),
                     UPK_E_ID_INVALID);
    assert_int_equal(upk_devkey_derive(secret, strlen(secret), "", out, sizeof(out)),
                     UPK_E_ID_INVALID);
    assert_int_equal(upk_devkey_derive(secret, strlen(secret), NULL, out, sizeof(out)),
                     UPK_E_ID_INVALID);
    assert_int_equal(upk_devkey_derive(secret, strlen(secret), "d", out, UPK_DEVKEY_LEN),
                     UPK_E_BUFFER_TOO_SMALL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(devkey_matches_openssl_hmac),
        cmocka_unit_test(devkey_is_hmac_of_label_and_id),
        cmocka_unit_test(devkey_differs_per_device_and_secret),
        cmocka_unit_test(devkey_rejects_short_secret_bad_id_and_small_buffer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
