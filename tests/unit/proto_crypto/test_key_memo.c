/* The verification memo (key.h, on in the simulator only): a remembered
 * success answers exactly the same (key, message, signature) again, and
 * nothing else: every tampered message or signature, another key, and a
 * failure asked twice still go through ECDSA and fail. Its own process,
 * since the memo is process-wide. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "upkeep/key.h"

#include "crypto_test_util.h"

static const char MSG[] = "{\"name\":\"fw\",\"version\":\"1.2.3\"}";

static void memo_answers_only_the_same_triple(void **state)
{
    (void)state;
    upk_key *key = NULL, *other = NULL;
    assert_int_equal(upk_key_generate(&key), UPK_OK);
    assert_int_equal(upk_key_generate(&other), UPK_OK);
    uint8_t sig[UPK_SIG_MAX + 8];
    size_t siglen = 0;
    char msg[sizeof(MSG)];
    memcpy(msg, MSG, sizeof(MSG));
    assert_int_equal(upk_key_sign(key, msg, sizeof(msg) - 1, sig, &siglen), UPK_OK);

    /* Off by default: nothing is answered from memory. */
    assert_int_equal(upk_key_verify(key, msg, sizeof(msg) - 1, sig, siglen), UPK_OK);
    assert_int_equal(upk_key_verify(key, msg, sizeof(msg) - 1, sig, siglen), UPK_OK);
    assert_int_equal(upk_key_verify_memo_hits(), 0);

    upk_key_verify_memo_enable();
    assert_int_equal(upk_key_verify(key, msg, sizeof(msg) - 1, sig, siglen), UPK_OK);
    assert_int_equal(upk_key_verify_memo_hits(), 0); /* first time: ECDSA */
    assert_int_equal(upk_key_verify(key, msg, sizeof(msg) - 1, sig, siglen), UPK_OK);
    assert_int_equal(upk_key_verify_memo_hits(), 1);

    ct_assert_tampering_fails(key, other, msg, sizeof(msg) - 1, sig, siglen);
    /* Another key again: failures are not remembered either. */
    assert_int_equal(upk_key_verify(other, msg, sizeof(msg) - 1, sig, siglen), UPK_E_SIG_INVALID);
    assert_int_equal(upk_key_verify_memo_hits(), 1);

    /* The memo is a bounded ring: UPK_KEY_VERIFY_MEMO newer successes push
     * the first out, and it is verified by ECDSA again. */
    for (int i = 0; i < UPK_KEY_VERIFY_MEMO; i++) {
        char m[16];
        uint8_t s[UPK_SIG_MAX];
        size_t sl = 0;
        m[0] = (char)('a' + i);
        assert_int_equal(upk_key_sign(key, m, 1, s, &sl), UPK_OK);
        assert_int_equal(upk_key_verify(key, m, 1, s, sl), UPK_OK);
    }
    assert_int_equal(upk_key_verify(key, msg, sizeof(msg) - 1, sig, siglen), UPK_OK);
    assert_int_equal(upk_key_verify_memo_hits(), 1);
    assert_int_equal(upk_key_verify(key, msg, sizeof(msg) - 1, sig, siglen), UPK_OK);
    assert_int_equal(upk_key_verify_memo_hits(), 2);
    upk_key_free(key);
    upk_key_free(other);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(memo_answers_only_the_same_triple),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
