/* Fleet-secret device password derivation (see devkey.h). */
#include "upkeep/devkey.h"

#include <stdio.h>
#include <string.h>

#include "upkeep/hash.h"
#include "upkeep/id.h"

#define DEVKEY_LABEL "upkeep-device-v1:"

/* Writes the 64 hex chars of the HMAC for (device_id, epoch) into out. */
static upk_err derive_hex(const void *secret, size_t secret_len, const char *device_id,
                          uint32_t epoch, char *out, size_t cap)
{
    if (secret == NULL || secret_len < UPK_FLEET_SECRET_MIN || out == NULL)
        return UPK_E_INVALID_ARG;
    if (!upk_id_valid(device_id))
        return UPK_E_ID_INVALID;
    if (epoch > UPK_DEVKEY_EPOCH_MAX)
        return UPK_E_FIELD_RANGE;
    if (cap < UPK_DEVKEY_LEN + 1)
        return UPK_E_BUFFER_TOO_SMALL;
    char msg[sizeof(DEVKEY_LABEL) + UPK_ID_MAX + 16];
    size_t llen = sizeof(DEVKEY_LABEL) - 1;
    size_t idlen = strlen(device_id);
    memcpy(msg, DEVKEY_LABEL, llen);
    memcpy(msg + llen, device_id, idlen);
    size_t mlen = llen + idlen;
    if (epoch > 0) {
        int n = snprintf(msg + mlen, sizeof(msg) - mlen, ":%u", (unsigned)epoch);
        if (n < 0 || (size_t)n >= sizeof(msg) - mlen)
            return UPK_E_INTERNAL;
        mlen += (size_t)n;
    }
    uint8_t mac[UPK_SHA256_LEN];
    upk_err err = upk_hmac_sha256(secret, secret_len, msg, mlen, mac);
    memset(msg, 0, sizeof(msg));
    if (err == UPK_OK)
        err = upk_hex_encode(mac, sizeof(mac), out, cap);
    memset(mac, 0, sizeof(mac));
    return err;
}

upk_err upk_devkey_derive(const void *secret, size_t secret_len, const char *device_id, char *out,
                          size_t cap)
{
    return derive_hex(secret, secret_len, device_id, 0, out, cap);
}

upk_err upk_devkey_derive_epoch(const void *secret, size_t secret_len, const char *device_id,
                                uint32_t epoch, char *out, size_t cap)
{
    if (epoch == 0)
        return derive_hex(secret, secret_len, device_id, 0, out, cap);
    if (epoch > UPK_DEVKEY_EPOCH_MAX)
        return UPK_E_FIELD_RANGE;
    if (out == NULL)
        return UPK_E_INVALID_ARG;
    char prefix[16];
    int n = snprintf(prefix, sizeof(prefix), "e%u.", (unsigned)epoch);
    if (n < 0 || (size_t)n >= sizeof(prefix))
        return UPK_E_INTERNAL;
    if (cap < (size_t)n + UPK_DEVKEY_LEN + 1)
        return UPK_E_BUFFER_TOO_SMALL;
    upk_err err = derive_hex(secret, secret_len, device_id, epoch, out + n, cap - (size_t)n);
    if (err == UPK_OK)
        memcpy(out, prefix, (size_t)n);
    return err;
}

/* Reads the "e<N>." prefix of p (len bytes): its length into *plen and N
 * into *epoch. False for anything else: no 'e', no digits, a leading zero,
 * more than 9 digits, no '.' after them. */
static bool parse_prefix(const char *p, size_t len, size_t *plen, uint32_t *epoch)
{
    if (len < 3 || p[0] != 'e' || p[1] == '0')
        return false;
    uint32_t n = 0;
    size_t i = 1;
    while (i < len && i <= 9 && p[i] >= '0' && p[i] <= '9') {
        n = n * 10u + (uint32_t)(p[i] - '0');
        i++;
    }
    if (i == 1 || i >= len || p[i] != '.')
        return false;
    *plen = i + 1;
    *epoch = n;
    return true;
}

upk_err upk_devkey_verify(const void *secret, size_t secret_len, const char *device_id,
                          const char *password, size_t len, uint32_t *epoch)
{
    if (password == NULL)
        return UPK_E_AUTH_FAILED;
    size_t plen = 0;
    uint32_t n = 0;
    /* An epoch-0 password is exactly 64 hex chars (which may start with the
     * hex digit 'e'); only a longer password has a prefix. */
    if (len != UPK_DEVKEY_LEN && !parse_prefix(password, len, &plen, &n))
        return UPK_E_AUTH_FAILED;
    if (len != plen + UPK_DEVKEY_LEN)
        return UPK_E_AUTH_FAILED;
    char key[UPK_DEVKEY_LEN + 1];
    upk_err err = derive_hex(secret, secret_len, device_id, n, key, sizeof(key));
    if (err != UPK_OK)
        return err;
    bool ok = upk_mem_equal_ct(key, password + plen, UPK_DEVKEY_LEN);
    memset(key, 0, sizeof(key));
    if (!ok)
        return UPK_E_AUTH_FAILED;
    if (epoch != NULL)
        *epoch = n;
    return UPK_OK;
}
