/* libFuzzer target for upk_key_load_pem: any input either fails cleanly with
 * UPK_E_KEY_INVALID or gives a P-256 key whose public PEM reloads under the
 * same id and, for a private key, whose signatures verify. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "upkeep/key.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    upk_key *key = NULL, *pub = NULL;
    char *pem = NULL;
    upk_err err = upk_key_load_pem((const char *)data, size, &key);
    if (err != UPK_OK) {
        if (err != UPK_E_KEY_INVALID && err != UPK_E_NOMEM)
            abort();
        return 0;
    }
    if (upk_key_public_pem(key, &pem) != UPK_OK ||
        upk_key_load_pem(pem, strlen(pem), &pub) != UPK_OK ||
        strcmp(upk_key_id(key), upk_key_id(pub)) != 0 || upk_key_has_private(pub))
        abort();
    if (upk_key_has_private(key)) {
        uint8_t sig[UPK_SIG_MAX];
        size_t siglen = 0;
        if (upk_key_sign(key, data, size, sig, &siglen) != UPK_OK ||
            upk_key_verify(pub, data, size, sig, siglen) != UPK_OK)
            abort();
    }
    free(pem);
    upk_key_free(pub);
    upk_key_free(key);
    return 0;
}
