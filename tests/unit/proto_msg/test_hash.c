/* Unit tests of SHA-256, HMAC-SHA256, hex and base64 (proto/src/hash.c)
 * against the published FIPS 180-2 and RFC 4231 / RFC 4648 vectors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "upkeep/hash.h"

static void hex_of(const uint8_t *b, size_t n, char *out, size_t cap)
{
    assert_int_equal(upk_hex_encode(b, n, out, cap), UPK_OK);
}

static void expect_sha(const void *data, size_t len, const char *want)
{
    uint8_t d[UPK_SHA256_LEN];
    char hex[UPK_SHA256_HEX_LEN + 1];
    upk_sha256_buf(data, len, d);
    hex_of(d, sizeof(d), hex, sizeof(hex));
    assert_string_equal(hex, want);
}

/* FIPS 180-2 appendix B and the empty string. */
static void sha256_matches_fips_vectors(void **state)
{
    (void)state;
    expect_sha("abc", 3, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    expect_sha("", 0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    expect_sha(two, strlen(two),
               "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

static void sha256_streaming_equals_one_shot(void **state)
{
    (void)state;
    /* One million 'a' (FIPS 180-2 B.3), fed in uneven pieces. */
    size_t total = 1000000;
    char *a = malloc(total);
    assert_non_null(a);
    memset(a, 'a', total);
    upk_sha256 c;
    upk_sha256_init(&c);
    size_t off = 0, step = 1;
    while (off < total) {
        size_t n = step < total - off ? step : total - off;
        upk_sha256_update(&c, a + off, n);
        off += n;
        step = step * 3 + 1;
    }
    upk_sha256_update(&c, a, 0); /* empty update is harmless */
    uint8_t d[UPK_SHA256_LEN];
    upk_sha256_final(&c, d);
    upk_sha256_cleanup(&c);
    char hex[UPK_SHA256_HEX_LEN + 1];
    hex_of(d, sizeof(d), hex, sizeof(hex));
    assert_string_equal(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    expect_sha(a, total, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    free(a);
}

/* FIPS 180-2's 896-bit message (two blocks of input, padding in a third). */
static void sha256_matches_fips_896_bit_vector(void **state)
{
    (void)state;
    const char *m = "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmno"
                    "pqklmnopqrlmnopqrsmnopqrstnopqrstu";
    assert_int_equal(strlen(m), 112);
    expect_sha(m, strlen(m), "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
}

/* Digest of a run of bytes split in two at every offset, and fed one byte at
 * a time, against a reference computed elsewhere (Python's hashlib). */
static void expect_every_split(const uint8_t *m, size_t len, const char *want)
{
    uint8_t d[UPK_SHA256_LEN];
    char hex[UPK_SHA256_HEX_LEN + 1];
    for (size_t cut = 0; cut <= len; cut++) {
        upk_sha256 c;
        upk_sha256_init(&c);
        upk_sha256_update(&c, m, cut);
        upk_sha256_update(&c, m + cut, len - cut);
        upk_sha256_final(&c, d);
        upk_sha256_cleanup(&c);
        hex_of(d, sizeof(d), hex, sizeof(hex));
        assert_string_equal(hex, want);
    }
    upk_sha256 c;
    upk_sha256_init(&c);
    for (size_t i = 0; i < len; i++)
        upk_sha256_update(&c, m + i, 1);
    upk_sha256_final(&c, d);
    upk_sha256_cleanup(&c);
    hex_of(d, sizeof(d), hex, sizeof(hex));
    assert_string_equal(hex, want);
}

/* Lengths around the 64-byte block and the 55/56-byte padding edge, where a
 * block-at-a-time compress function (SHA-NI, ARMv8) and its buffering meet. */
static void sha256_block_and_padding_boundaries_split_anywhere(void **state)
{
    (void)state;
    static const struct {
        size_t len;
        const char *want;
    } v[] = {
        {55, "16fa57a0a3423a715d594516339f36189d6b5f93754a9714fef202616a9fabfe"},
        {56, "c37b44e5f1b18554b36966f4f8e08bfbf3164c4b6c10374d12d89850892073c5"},
        {63, "bbba992d2c85af960fb2987a1fd05e0aa82a3db3c740dd8982a9e273b75e36a3"},
        {64, "66bd4633ed6f71c4ecfa4763bf7ba1c8ec7612de9aa6c0578a7b675207c71e0b"},
        {65, "9f7dc47107b750a1f3d35db5d9547f24ef40da5b731b9540d4f43710a154f6c9"},
        {119, "a3ed307b730fa77c07531300c6e4a282330011d4d4caf6bb7b63ae05950f4b66"},
        {120, "8e3b15d9fea7472655aa069620b7f8c2e55ee1499f763200a7515fe826e99d20"},
        {127, "44480fb9672845177f5368a08b69ea263275f2a5ec42e06a933370fe0d2968a4"},
        {128, "e462c130fef8c97e34f7dc3ff3ad2f8b3533ab849af21c10531552a2852387a4"},
    };
    uint8_t m[128];
    for (size_t i = 0; i < sizeof(m); i++)
        m[i] = (uint8_t)(i * 7 + 1);
    for (size_t k = 0; k < sizeof(v) / sizeof(v[0]); k++) {
        expect_sha(m, v[k].len, v[k].want);
        expect_every_split(m, v[k].len, v[k].want);
    }
    uint8_t big[1000];
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (uint8_t)i;
    expect_every_split(big, sizeof(big),
                       "a8af099bf2e878609558dbf69d8f88f4a31040a8cf84b549a0cfa912f12ffc3f");
}

/* A context hashes a second message correctly after init again. */
static void sha256_context_reusable_after_init(void **state)
{
    (void)state;
    upk_sha256 c;
    uint8_t d[UPK_SHA256_LEN];
    char hex[UPK_SHA256_HEX_LEN + 1];
    for (int round = 0; round < 2; round++) {
        upk_sha256_init(&c);
        upk_sha256_update(&c, "abc", 3);
        upk_sha256_final(&c, d);
        upk_sha256_cleanup(&c);
        hex_of(d, sizeof(d), hex, sizeof(hex));
        assert_string_equal(hex,
                            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}

/* 600,000,007 bytes: the message's length in bits passes 2^32 (a 32-bit bit
 * counter would wrap at 512 MiB), fed in 1 MiB pieces and a short tail.
 * Reference from Python's hashlib over the same bytes. */
static void sha256_long_message_past_2_32_bits(void **state)
{
    (void)state;
    size_t piece = (size_t)1 << 20, total = 600000007;
    uint8_t *buf = malloc(piece);
    assert_non_null(buf);
    for (size_t i = 0; i < piece; i++)
        buf[i] = (uint8_t)(i % 251);
    upk_sha256 c;
    upk_sha256_init(&c);
    for (size_t done = 0; done < total;) {
        size_t n = piece < total - done ? piece : total - done;
        upk_sha256_update(&c, buf, n);
        done += n;
    }
    uint8_t d[UPK_SHA256_LEN];
    upk_sha256_final(&c, d);
    upk_sha256_cleanup(&c);
    free(buf);
    char hex[UPK_SHA256_HEX_LEN + 1];
    hex_of(d, sizeof(d), hex, sizeof(hex));
    assert_string_equal(hex, "28c6ba49f85cbc9c9634a2f8788edcf6b1ff84ed86970bba470c5438a8e0da9c");
}

static void expect_hmac(const void *key, size_t klen, const void *msg, size_t mlen,
                        const char *want)
{
    uint8_t d[UPK_SHA256_LEN];
    char hex[UPK_SHA256_HEX_LEN + 1];
    assert_int_equal(upk_hmac_sha256(key, klen, msg, mlen, d), UPK_OK);
    hex_of(d, sizeof(d), hex, sizeof(hex));
    assert_string_equal(hex, want);
}

/* RFC 4231 test cases 1, 2, 3, 4 and 6 (HMAC-SHA-256 column). */
static void hmac_sha256_matches_rfc4231(void **state)
{
    (void)state;
    uint8_t k[131];
    uint8_t m[50];
    memset(k, 0x0b, 20);
    expect_hmac(k, 20, "Hi There", 8,
                "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
    expect_hmac("Jefe", 4, "what do ya want for nothing?", 28,
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    memset(k, 0xaa, 20);
    memset(m, 0xdd, 50);
    expect_hmac(k, 20, m, 50, "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe");
    for (int i = 0; i < 25; i++)
        k[i] = (uint8_t)(i + 1);
    memset(m, 0xcd, 50);
    expect_hmac(k, 25, m, 50, "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b");
    memset(k, 0xaa, 131);
    const char *big = "Test Using Larger Than Block-Size Key - Hash Key First";
    expect_hmac(k, 131, big, strlen(big),
                "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
}

/* RFC 4231 test case 7, a key of exactly one block, and the empty key and
 * message (references from Python's hmac module). */
static void hmac_sha256_large_exact_and_empty_keys(void **state)
{
    (void)state;
    uint8_t k[131];
    memset(k, 0xaa, sizeof(k));
    const char *m7 = "This is a test using a larger than block-size key and a larger than "
                     "block-size data. The key needs to be hashed before being used by the HMAC "
                     "algorithm.";
    expect_hmac(k, 131, m7, strlen(m7),
                "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2");
    uint8_t k64[64], m64[64];
    memset(k64, 0x01, sizeof(k64));
    memset(m64, 'x', sizeof(m64));
    expect_hmac(k64, 64, m64, 64,
                "8f61677ba14b11aa43435ad0d0a35b69b8ad4164af1b56b833efb93dea2ceb16");
    expect_hmac("", 0, "", 0, "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad");
    expect_hmac(NULL, 0, NULL, 0,
                "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad");
    uint8_t d[UPK_SHA256_LEN];
    assert_int_equal(upk_hmac_sha256(NULL, 4, "x", 1, d), UPK_E_CRYPTO);
    assert_int_equal(upk_hmac_sha256("key", 3, NULL, 1, d), UPK_E_CRYPTO);
}

static void hex_encode_and_decode_round_trip(void **state)
{
    (void)state;
    uint8_t all[256], back[256];
    for (int i = 0; i < 256; i++)
        all[i] = (uint8_t)i;
    char hex[513];
    assert_int_equal(upk_hex_encode(all, 256, hex, sizeof(hex)), UPK_OK);
    assert_int_equal(strlen(hex), 512);
    assert_memory_equal(hex, "000102", 6);
    assert_memory_equal(hex + 506, "fdfeff", 6);
    assert_int_equal(upk_hex_decode(hex, 512, back, 256), UPK_OK);
    assert_memory_equal(all, back, 256);
    /* upper case decodes too */
    uint8_t two[2];
    assert_int_equal(upk_hex_decode("ABcd", 4, two, 2), UPK_OK);
    assert_int_equal(two[0], 0xab);
    assert_int_equal(two[1], 0xcd);
    /* zero bytes */
    char empty[1];
    assert_int_equal(upk_hex_encode(all, 0, empty, 1), UPK_OK);
    assert_string_equal(empty, "");
}

static void hex_rejects_bad_digits_lengths_and_small_buffers(void **state)
{
    (void)state;
    uint8_t out[4];
    assert_int_equal(upk_hex_decode("0g", 2, out, 1), UPK_E_FIELD_RANGE);
    assert_int_equal(upk_hex_decode(" 1", 2, out, 1), UPK_E_FIELD_RANGE);
    assert_int_equal(upk_hex_decode("abc", 3, out, 1), UPK_E_FIELD_RANGE);
    assert_int_equal(upk_hex_decode("abcd", 4, out, 1), UPK_E_FIELD_RANGE);
    assert_int_equal(upk_hex_decode("ab", 2, out, 2), UPK_E_FIELD_RANGE);
    assert_int_equal(upk_hex_decode(NULL, 0, out, 0), UPK_E_FIELD_RANGE);
    char small[4];
    const uint8_t in[2] = {1, 2};
    assert_int_equal(upk_hex_encode(in, 2, small, 4), UPK_E_BUFFER_TOO_SMALL);
    char fit[5];
    assert_int_equal(upk_hex_encode(in, 2, fit, 5), UPK_OK);
    assert_string_equal(fit, "0102");
}

static void sha256_hex_valid_is_exactly_64_lower_hex(void **state)
{
    (void)state;
    char s[70];
    memset(s, 'f', 64);
    s[64] = '\0';
    assert_true(upk_sha256_hex_valid(s));
    s[10] = 'F';
    assert_false(upk_sha256_hex_valid(s));
    s[10] = 'g';
    assert_false(upk_sha256_hex_valid(s));
    s[10] = '0';
    s[63] = '\0';
    assert_false(upk_sha256_hex_valid(s));
    s[63] = 'a';
    s[64] = 'a';
    s[65] = '\0';
    assert_false(upk_sha256_hex_valid(s));
    assert_false(upk_sha256_hex_valid(""));
    assert_false(upk_sha256_hex_valid(NULL));
}

/* RFC 4648 section 10 vectors, both ways. */
static void base64_matches_rfc4648_vectors(void **state)
{
    (void)state;
    const char *plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    const char *enc[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    for (size_t i = 0; i < 7; i++) {
        char out[16];
        size_t n = 99;
        assert_int_equal(
            upk_base64_encode((const uint8_t *)plain[i], strlen(plain[i]), out, sizeof(out), &n),
            UPK_OK);
        assert_string_equal(out, enc[i]);
        assert_int_equal(n, strlen(enc[i]));
        uint8_t back[16];
        n = 99;
        assert_int_equal(upk_base64_decode(enc[i], strlen(enc[i]), back, sizeof(back), &n), UPK_OK);
        assert_int_equal(n, strlen(plain[i]));
        assert_memory_equal(back, plain[i], n);
    }
}

static void base64_round_trips_every_byte(void **state)
{
    (void)state;
    uint8_t all[256], back[256];
    for (int i = 0; i < 256; i++)
        all[i] = (uint8_t)(255 - i);
    char text[400];
    size_t n = 0, m = 0;
    assert_int_equal(upk_base64_encode(all, 256, text, sizeof(text), &n), UPK_OK);
    assert_int_equal(n, 344);
    assert_int_equal(upk_base64_decode(text, n, back, sizeof(back), &m), UPK_OK);
    assert_int_equal(m, 256);
    assert_memory_equal(all, back, 256);
}

static void base64_decode_rejects_non_canonical_text(void **state)
{
    (void)state;
    const char *bad[] = {"Zm9",  "Zg",       "Z===",  "Zg=A", "Zm9v\n",  "Zm 9v",
                         "====", "Zg==Zg==", "Zm9v!", "Zm-_", "Zm9v===="};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint8_t out[16];
        size_t n = 77;
        upk_err err = upk_base64_decode(bad[i], strlen(bad[i]), out, sizeof(out), &n);
        if (err != UPK_E_FIELD_RANGE)
            fail_msg("\"%s\": got %s", bad[i], upk_err_str(err));
        assert_int_equal(n, 77);
    }
}

static void base64_reports_small_buffers(void **state)
{
    (void)state;
    uint8_t out[2];
    size_t n;
    assert_int_equal(upk_base64_decode("Zm9v", 4, out, 2, &n), UPK_E_BUFFER_TOO_SMALL);
    char text[4];
    assert_int_equal(upk_base64_encode((const uint8_t *)"foo", 3, text, 4, &n),
                     UPK_E_BUFFER_TOO_SMALL);
    char fits[5];
    assert_int_equal(upk_base64_encode((const uint8_t *)"foo", 3, fits, 5, &n), UPK_OK);
}

static void mem_equal_ct_compares_every_byte(void **state)
{
    (void)state;
    uint8_t a[40], b[40];
    memset(a, 7, sizeof(a));
    memset(b, 7, sizeof(b));
    assert_true(upk_mem_equal_ct(a, b, sizeof(a)));
    assert_true(upk_mem_equal_ct(a, b, 0));
    b[39] = 8;
    assert_false(upk_mem_equal_ct(a, b, sizeof(a)));
    assert_true(upk_mem_equal_ct(a, b, 39));
    b[39] = 7;
    b[0] = 0;
    assert_false(upk_mem_equal_ct(a, b, sizeof(a)));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sha256_matches_fips_vectors),
        cmocka_unit_test(sha256_streaming_equals_one_shot),
        cmocka_unit_test(sha256_matches_fips_896_bit_vector),
        cmocka_unit_test(sha256_block_and_padding_boundaries_split_anywhere),
        cmocka_unit_test(sha256_context_reusable_after_init),
        cmocka_unit_test(sha256_long_message_past_2_32_bits),
        cmocka_unit_test(hmac_sha256_matches_rfc4231),
        cmocka_unit_test(hmac_sha256_large_exact_and_empty_keys),
        cmocka_unit_test(hex_encode_and_decode_round_trip),
        cmocka_unit_test(hex_rejects_bad_digits_lengths_and_small_buffers),
        cmocka_unit_test(sha256_hex_valid_is_exactly_64_lower_hex),
        cmocka_unit_test(base64_matches_rfc4648_vectors),
        cmocka_unit_test(base64_round_trips_every_byte),
        cmocka_unit_test(base64_decode_rejects_non_canonical_text),
        cmocka_unit_test(base64_reports_small_buffers),
        cmocka_unit_test(mem_equal_ct_compares_every_byte),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
