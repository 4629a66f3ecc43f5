/* The fixed old image the delta fuzz target patches. The seed corpus was made
 * against it (gen_corpus.c), so mutated seeds keep a matching base hash and
 * the fuzzer reaches the record decoder instead of stopping at the base
 * check. */
#ifndef UPK_FUZZ_DELTA_OLD_H
#define UPK_FUZZ_DELTA_OLD_H

#include <stddef.h>
#include <stdint.h>

#define FUZZ_OLD_LEN 4096

static inline void fuzz_old_fill(uint8_t *buf)
{
    uint32_t x = 2463534242u;
    for (size_t i = 0; i < FUZZ_OLD_LEN; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        /* half noise, half structure, like a binary */
        buf[i] = (i / 512) % 2 ? (uint8_t)x : (uint8_t)(i * 3);
    }
}

#endif
