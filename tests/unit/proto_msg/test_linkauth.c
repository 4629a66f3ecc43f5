/* Unit tests of link keys and message tags (proto/src/linkauth.c). The fixed
 * vectors were computed independently with openssl, as docs/protocol.md
 * shows:
 *   printf 'upkeep-link-v1:dev-0001' | openssl dgst -sha256 -hmac 'link-secret-0123456789'
 *   printf 'upkeep-auth-v1\0dev/dev-0001/desired\0{"v":1,"ctr":1,"fresh_until":2000000000}' \
 *       | openssl dgst -sha256 -mac HMAC -macopt hexkey:<the key above>
 *   printf 'upkeep-auth-v1\0dev/dev-0001/ack\0{"v":1,"seq":17}' | openssl dgst ... (same)
 *   printf 'upkeep-auth-v1\0dev/dev-0001/ack\0' | openssl dgst ... (same) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "upkeep/linkauth.h"

static const char secret[] = "link-secret-0123456789";
static const char key_hex[] = "78f6e06f6b8a8e167a99b5eb34dd37e7f2e4bd00642de7f047cf131174fd2f50";
static const char desired[] = "{\"v\":1,\"ctr\":1,\"fresh_until\":2000000000}";
static const char desired_tag[] =
    "4944f730f4e560a4860683739fabeac838a2d907489b9c46ff495683d885b25a";
static const char ack[] = "{\"v\":1,\"seq\":17}";
static const char ack_tag[] = "7135e5df6290262bb36f915ebad9b614ae243c35e6210c51534aa8046ecf2576";
static const char empty_ack_tag[] =
    "15a5766f8e88512da97d9188ae0aeaf92b3d3ef11728827385dd5cb4201856d3";

static upk_link_key derive(const char *id)
{
    upk_link_key k;
    assert_int_equal(upk_link_key_derive(secret, strlen(secret), id, &k), UPK_OK);
    return k;
}

static void link_key_matches_openssl_hmac(void **state)
{
    (void)state;
    upk_link_key k = derive("dev-0001");
    char hex[UPK_LINK_KEY_HEX_LEN + 1];
    assert_int_equal(upk_link_key_to_hex(&k, hex, sizeof(hex)), UPK_OK);
    assert_string_equal(hex, key_hex);
    assert_int_equal(upk_link_key_to_hex(&k, hex, UPK_LINK_KEY_HEX_LEN), UPK_E_BUFFER_TOO_SMALL);
}

static void tag_matches_openssl_vectors(void **state)
{
    (void)state;
    upk_link_key k = derive("dev-0001");
    char tag[UPK_LINK_TAG_LEN + 1];
    assert_int_equal(upk_link_tag(&k, "dev-0001", UPK_TOPIC_DEV_DESIRED, desired, strlen(desired),
                                  tag, sizeof(tag)),
                     UPK_OK);
    assert_string_equal(tag, desired_tag);
    assert_int_equal(
        upk_link_tag(&k, "dev-0001", UPK_TOPIC_DEV_ACK, ack, strlen(ack), tag, sizeof(tag)),
        UPK_OK);
    assert_string_equal(tag, ack_tag);
    assert_int_equal(upk_link_tag(&k, "dev-0001", UPK_TOPIC_DEV_ACK, NULL, 0, tag, sizeof(tag)),
                     UPK_OK);
    assert_string_equal(tag, empty_ack_tag);
}

static void verify_accepts_the_tag_in_either_case(void **state)
{
    (void)state;
    upk_link_key k = derive("dev-0001");
    assert_int_equal(upk_link_verify(&k, "dev-0001", UPK_TOPIC_DEV_DESIRED, desired,
                                     strlen(desired), desired_tag),
                     UPK_OK);
    char upper[UPK_LINK_TAG_LEN + 1];
    for (size_t i = 0; i <= UPK_LINK_TAG_LEN; i++)
        upper[i] = (char)(desired_tag[i] >= 'a' && desired_tag[i] <= 'f' ? desired_tag[i] - 32
                                                                         : desired_tag[i]);
    assert_int_equal(
        upk_link_verify(&k, "dev-0001", UPK_TOPIC_DEV_DESIRED, desired, strlen(desired), upper),
        UPK_OK);
}

static void verify_refuses_missing_malformed_and_wrong_tags(void **state)
{
    (void)state;
    upk_link_key k = derive("dev-0001");
    size_t n = strlen(desired);
    const upk_topic_kind kd = UPK_TOPIC_DEV_DESIRED;
    assert_int_equal(upk_link_verify(&k, "dev-0001", kd, desired, n, NULL), UPK_E_AUTH_INVALID);
    assert_int_equal(upk_link_verify(&k, "dev-0001", kd, desired, n, ""), UPK_E_AUTH_INVALID);
    /* One character short, one too many, a non-hex digit. */
    char bad[UPK_LINK_TAG_LEN + 2];
    memcpy(bad, desired_tag, UPK_LINK_TAG_LEN - 1);
    bad[UPK_LINK_TAG_LEN - 1] = '\0';
    assert_int_equal(upk_link_verify(&k, "dev-0001", kd, desired, n, bad), UPK_E_AUTH_INVALID);
    memcpy(bad, desired_tag, UPK_LINK_TAG_LEN);
    bad[UPK_LINK_TAG_LEN] = '0';
    bad[UPK_LINK_TAG_LEN + 1] = '\0';
    assert_int_equal(upk_link_verify(&k, "dev-0001", kd, desired, n, bad), UPK_E_AUTH_INVALID);
    memcpy(bad, desired_tag, UPK_LINK_TAG_LEN + 1);
    bad[10] = 'g';
    assert_int_equal(upk_link_verify(&k, "dev-0001", kd, desired, n, bad), UPK_E_AUTH_INVALID);
    /* One flipped bit of the tag, of the payload. */
    memcpy(bad, desired_tag, UPK_LINK_TAG_LEN + 1);
    bad[63] = bad[63] == '0' ? '1' : '0';
    assert_int_equal(upk_link_verify(&k, "dev-0001", kd, desired, n, bad), UPK_E_AUTH_INVALID);
    char other[sizeof(desired)];
    memcpy(other, desired, sizeof(desired));
    other[12] ^= 1;
    assert_int_equal(upk_link_verify(&k, "dev-0001", kd, other, n, desired_tag),
                     UPK_E_AUTH_INVALID);
    /* A truncated payload. */
    assert_int_equal(upk_link_verify(&k, "dev-0001", kd, desired, n - 1, desired_tag),
                     UPK_E_AUTH_INVALID);
}

static void tag_is_bound_to_topic_device_and_key(void **state)
{
    (void)state;
    upk_link_key k = derive("dev-0001");
    size_t n = strlen(desired);
    /* The same bytes moved to another topic of the device. */
    assert_int_equal(upk_link_verify(&k, "dev-0001", UPK_TOPIC_DEV_ACK, desired, n, desired_tag),
                     UPK_E_AUTH_INVALID);
    /* To another device, under its own key and under this one. */
    upk_link_key k2 = derive("dev-0002");
    assert_memory_not_equal(k.k, k2.k, sizeof(k.k));
    assert_int_equal(
        upk_link_verify(&k2, "dev-0002", UPK_TOPIC_DEV_DESIRED, desired, n, desired_tag),
        UPK_E_AUTH_INVALID);
    assert_int_equal(
        upk_link_verify(&k, "dev-0002", UPK_TOPIC_DEV_DESIRED, desired, n, desired_tag),
        UPK_E_AUTH_INVALID);
    /* Another secret gives another key. */
    const char other[] = "link-secret-0123456780";
    upk_link_key k3;
    assert_int_equal(upk_link_key_derive(other, strlen(other), "dev-0001", &k3), UPK_OK);
    assert_memory_not_equal(k.k, k3.k, sizeof(k.k));
}

static void key_from_hex_takes_64_digits_and_trailing_space(void **state)
{
    (void)state;
    upk_link_key want = derive("dev-0001"), k;
    assert_int_equal(upk_link_key_from_hex(key_hex, strlen(key_hex), &k), UPK_OK);
    assert_memory_equal(k.k, want.k, sizeof(k.k));
    char line[80];
    int n = snprintf(line, sizeof(line), "%s \r\n", key_hex);
    assert_true(n > 0 && (size_t)n < sizeof(line));
    memset(&k, 0, sizeof(k));
    assert_int_equal(upk_link_key_from_hex(line, (size_t)n, &k), UPK_OK);
    assert_memory_equal(k.k, want.k, sizeof(k.k));
    /* Untouched on failure. */
    upk_link_key before = k;
    assert_int_equal(upk_link_key_from_hex(key_hex, 63, &k), UPK_E_KEY_INVALID);
    assert_int_equal(
        upk_link_key_from_hex(" 78f6e06f6b8a8e167a99b5eb34dd37e7f2e4bd00642de7f047cf1311"
                              "74fd2f50",
                              65, &k),
        UPK_E_KEY_INVALID);
    memcpy(line, key_hex, 64);
    line[5] = 'z';
    assert_int_equal(upk_link_key_from_hex(line, 64, &k), UPK_E_KEY_INVALID);
    assert_int_equal(upk_link_key_from_hex("", 0, &k), UPK_E_KEY_INVALID);
    assert_memory_equal(k.k, before.k, sizeof(k.k));
    upk_link_key_wipe(&k);
    uint8_t zero[UPK_LINK_KEY_LEN] = {0};
    assert_memory_equal(k.k, zero, sizeof(zero));
    upk_link_key_wipe(NULL);
}

static void bad_arguments_are_named(void **state)
{
    (void)state;
    upk_link_key k = derive("dev-0001");
    char tag[UPK_LINK_TAG_LEN + 1];
    assert_int_equal(upk_link_key_derive(secret, UPK_LINK_SECRET_MIN - 1, "d", &k),
                     UPK_E_INVALID_ARG);
    assert_int_equal(upk_link_key_derive(secret, UPK_LINK_SECRET_MIN, "d", &k), UPK_OK);
    assert_int_equal(upk_link_key_derive(NULL, 32, "d", &k), UPK_E_INVALID_ARG);
    assert_int_equal(upk_link_key_derive(secret, strlen(secret), "d", NULL), UPK_E_INVALID_ARG);
    assert_int_equal(upk_link_key_derive(secret, strlen(secret), "a/b", &k), UPK_E_ID_INVALID);
    assert_int_equal(upk_link_key_derive(secret, strlen(secret), "", &k), UPK_E_ID_INVALID);
    assert_int_equal(upk_link_tag(&k, "d", UPK_TOPIC_CTL_REQ, "x", 1, tag, sizeof(tag)),
                     UPK_E_INVALID_ARG);
    assert_int_equal(upk_link_tag(&k, "d", UPK_TOPIC_DEV_ACK, NULL, 1, tag, sizeof(tag)),
                     UPK_E_INVALID_ARG);
    assert_int_equal(upk_link_tag(NULL, "d", UPK_TOPIC_DEV_ACK, "x", 1, tag, sizeof(tag)),
                     UPK_E_INVALID_ARG);
    assert_int_equal(upk_link_tag(&k, "d+", UPK_TOPIC_DEV_ACK, "x", 1, tag, sizeof(tag)),
                     UPK_E_ID_INVALID);
    assert_int_equal(upk_link_tag(&k, "d", UPK_TOPIC_DEV_ACK, "x", 1, tag, UPK_LINK_TAG_LEN),
                     UPK_E_BUFFER_TOO_SMALL);
    assert_int_equal(upk_link_verify(&k, "d", UPK_TOPIC_BROKER_STATS, "x", 1, ack_tag),
                     UPK_E_INVALID_ARG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(link_key_matches_openssl_hmac),
        cmocka_unit_test(tag_matches_openssl_vectors),
        cmocka_unit_test(verify_accepts_the_tag_in_either_case),
        cmocka_unit_test(verify_refuses_missing_malformed_and_wrong_tags),
        cmocka_unit_test(tag_is_bound_to_topic_device_and_key),
        cmocka_unit_test(key_from_hex_takes_64_digits_and_trailing_space),
        cmocka_unit_test(bad_arguments_are_named),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
