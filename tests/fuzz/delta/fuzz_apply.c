/* libFuzzer target: the delta decoder (upk_delta_apply_mem and the header
 * parser) on arbitrary patches against a fixed old image. Any crash, leak or
 * sanitizer report is a bug; every input must give UPK_OK or a named error,
 * and UPK_OK only with an output of the header's size. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_old.h"
#include "upkeep/delta.h"

#define OUT_CAP (1u << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t old[FUZZ_OLD_LEN];
    static uint8_t *out;
    static int ready;
    upk_delta_info info;
    size_t out_len = 0;
    upk_err err;

    if (!ready) {
        fuzz_old_fill(old);
        out = malloc(OUT_CAP);
        if (out == NULL)
            abort();
        ready = 1;
    }
    (void)upk_delta_parse_info(data, size, &info);
    err = upk_delta_apply_mem(old, sizeof(old), data, size, out, OUT_CAP, &out_len);
    if (err == UPK_OK) {
        if (upk_delta_parse_info(data, size, &info) != UPK_OK || info.new_size != out_len)
            abort();
    } else if (err != UPK_E_DELTA_CORRUPT && err != UPK_E_DELTA_BASE_MISMATCH &&
               err != UPK_E_HASH_MISMATCH && err != UPK_E_BUFFER_TOO_SMALL) {
        abort();
    }
    return 0;
}
