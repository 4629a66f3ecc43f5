/* Fleet-secret device password derivation (see devkey.h). */
#include "upkeep/devkey.h"

#include <string.h>

#include "upkeep/hash.h"
#include "upkeep/id.h"

#define DEVKEY_LABEL "upkeep-device-v1:"

upk_err upk_devkey_derive(const void *secret, size_t secret_len, const char *device_id, char *out,
                          size_t cap)
{
    if (secret == NULL || secret_len < UPK_FLEET_SECRET_MIN || out == NULL)
        return UPK_E_INVALID_ARG;
    if (!upk_id_valid(device_id))
        return UPK_E_ID_INVALID;
    if (cap < UPK_DEVKEY_LEN + 1)
        return UPK_E_BUFFER_TOO_SMALL;
    char msg[sizeof(DEVKEY_LABEL) + UPK_ID_MAX];
    size_t llen = sizeof(DEVKEY_LABEL) - 1;
    size_t idlen = strlen(device_id);
    memcpy(msg, DEVKEY_LABEL, llen);
    memcpy(msg + llen, device_id, idlen);
    uint8_t mac[UPK_SHA256_LEN];
    upk_err err = upk_hmac_sha256(secret, secret_len, msg, llen + idlen, mac);
    if (err != UPK_OK)
        return err;
    return upk_hex_encode(mac, sizeof(mac), out, cap);
}
