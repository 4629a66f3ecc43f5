/* Device passwords derived from a fleet secret, so that a fleet of a million
 * devices needs no million-line password file: the broker plugin recomputes
 * the password of any device id, and `upkeep device-key ID` prints it for
 * provisioning. password = lower-case hex of HMAC-SHA256(fleet_secret,
 * "upkeep-device-v1:" || device_id). No I/O. Any thread.
 *
 * Credential epochs (docs/protocol.md section 8): so that a device's password
 * can be rotated without changing the fleet secret, a password may carry an
 * epoch N >= 1: "e<N>." || lower-case hex of HMAC-SHA256(fleet_secret,
 * "upkeep-device-v1:" || device_id || ":" || N), N in decimal without leading
 * zeros. The form above is epoch 0. A device id never contains ':', so no
 * (id, epoch) pair shares its HMAC input with another. The broker refuses a
 * password whose epoch is below the device's minimum. */
#ifndef UPKEEP_DEVKEY_H
#define UPKEEP_DEVKEY_H

#include <stddef.h>
#include <stdint.h>

#include "upkeep/err.h"

#define UPK_DEVKEY_LEN       64         /* chars of a derived password, without NUL */
#define UPK_FLEET_SECRET_MIN 16         /* bytes a fleet secret must have at least */
#define UPK_DEVKEY_EPOCH_MAX 999999999u /* highest epoch (9 decimal digits) */
/* chars of the longest password ("e999999999." + 64 hex), without NUL */
#define UPK_DEVKEY_MAX (UPK_DEVKEY_LEN + 11)

/* Writes the password of device_id into out (cap > UPK_DEVKEY_LEN).
 * UPK_E_ID_INVALID for a bad id, UPK_E_INVALID_ARG for a secret shorter than
 * UPK_FLEET_SECRET_MIN, UPK_E_BUFFER_TOO_SMALL when cap is short. */
UPK_MUST_CHECK upk_err upk_devkey_derive(const void *secret, size_t secret_len,
                                         const char *device_id, char *out, size_t cap);

/* Writes the password of device_id at credential epoch `epoch` into out:
 * for epoch 0 exactly what upk_devkey_derive writes, for 1..UPK_DEVKEY_EPOCH_MAX
 * the "e<N>." form. Errors as upk_devkey_derive, plus UPK_E_FIELD_RANGE for an
 * epoch above UPK_DEVKEY_EPOCH_MAX (cap > UPK_DEVKEY_MAX always suffices). */
UPK_MUST_CHECK upk_err upk_devkey_derive_epoch(const void *secret, size_t secret_len,
                                               const char *device_id, uint32_t epoch, char *out,
                                               size_t cap);

/* Checks the len bytes at password (not NUL-terminated) against the derived
 * password of device_id at the epoch the password names (its "e<N>." prefix,
 * else 0), comparing the HMAC in constant time. UPK_OK with that epoch in
 * *epoch (may be NULL) when it matches; UPK_E_AUTH_FAILED for any mismatch or
 * malformed password (a bad prefix, an epoch with leading zeros or above
 * UPK_DEVKEY_EPOCH_MAX, upper-case hex, a wrong length); errors of
 * upk_devkey_derive for a bad secret or id. *epoch is untouched on failure. */
UPK_MUST_CHECK upk_err upk_devkey_verify(const void *secret, size_t secret_len,
                                         const char *device_id, const char *password, size_t len,
                                         uint32_t *epoch);

#endif
