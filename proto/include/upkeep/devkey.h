/* Device passwords derived from a fleet secret, so that a fleet of a million
 * devices needs no million-line password file: the broker plugin recomputes
 * the password of any device id, and `upkeep device-key ID` prints it for
 * provisioning. password = lower-case hex of HMAC-SHA256(fleet_secret,
 * "upkeep-device-v1:" || device_id). No I/O. Any thread. */
#ifndef UPKEEP_DEVKEY_H
#define UPKEEP_DEVKEY_H

#include <stddef.h>

#include "upkeep/err.h"

#define UPK_DEVKEY_LEN       64 /* chars of a derived password, without NUL */
#define UPK_FLEET_SECRET_MIN 16 /* bytes a fleet secret must have at least */

/* Writes the password of device_id into out (cap > UPK_DEVKEY_LEN).
 * UPK_E_ID_INVALID for a bad id, UPK_E_INVALID_ARG for a secret shorter than
 * UPK_FLEET_SECRET_MIN, UPK_E_BUFFER_TOO_SMALL when cap is short. */
UPK_MUST_CHECK upk_err upk_devkey_derive(const void *secret, size_t secret_len,
                                         const char *device_id, char *out, size_t cap);

#endif
