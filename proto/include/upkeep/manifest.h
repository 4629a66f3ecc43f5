/* Release manifests: what a release is, signed by an offline release key.
 *
 * A manifest is compact JSON. The signature covers the exact manifest bytes,
 * and the desired message carries those bytes verbatim beside the signature,
 * so no canonical-JSON step exists: a device verifies the bytes it received,
 * then decodes them. Fields (docs/protocol.md has the full table):
 *   v, name, version, security_version, hw[], type full|delta, module, size,
 *   sha256, target_size, target_sha256, base_sha256 (delta only), created,
 *   expires, support{} (optional signed update-capability disclosure).
 * No I/O. Any thread. */
#ifndef UPKEEP_MANIFEST_H
#define UPKEEP_MANIFEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "upkeep/err.h"
#include "upkeep/hash.h"
#include "upkeep/id.h"
#include "upkeep/key.h"

#define UPK_MANIFEST_VERSION 1
#define UPK_MANIFEST_MAX     16384 /* bytes of manifest JSON */
#define UPK_VERSION_STR_MAX  64    /* chars of a release version string */
#define UPK_HW_MAX           32    /* hardware ids per manifest */
#define UPK_TEXT_MAX         256   /* chars of free text (support contact etc.) */

typedef enum upk_release_type { UPK_RELEASE_FULL, UPK_RELEASE_DELTA } upk_release_type;

/* Signed update-capability disclosure (optional part of a manifest). */
typedef struct upk_support {
    bool present;
    int64_t security_until;        /* end of security support, epoch s */
    char delivery[UPK_ID_MAX + 1]; /* "automatic" or "user-approved" */
    char notice[UPK_TEXT_MAX + 1]; /* how owners are told */
    char contact[UPK_TEXT_MAX + 1];
} upk_support;

/* Plain value type: no heap pointers, so copy with '='. */
typedef struct upk_manifest {
    char name[UPK_ID_MAX + 1];             /* release name, an id */
    char version[UPK_VERSION_STR_MAX + 1]; /* printable, no spaces */
    uint64_t security_version;             /* monotonic; anti-rollback */
    size_t hw_count;
    char hw[UPK_HW_MAX][UPK_ID_MAX + 1]; /* compatible hardware ids */
    upk_release_type type;
    char module[UPK_ID_MAX + 1];           /* install module: file, ab-dir, or a module name */
    uint64_t size;                         /* bytes of the artifact (image or patch) */
    uint8_t sha256[UPK_SHA256_LEN];        /* of the artifact */
    uint64_t target_size;                  /* bytes of the installed image */
    uint8_t target_sha256[UPK_SHA256_LEN]; /* of the image after install */
    uint8_t base_sha256[UPK_SHA256_LEN];   /* delta only: image the patch applies to */
    int64_t created;                       /* epoch s */
    int64_t expires;                       /* epoch s; must be > created */
    upk_support support;
} upk_manifest;

/* Encodes m as compact JSON into a new NUL-terminated string (*out, *outlen);
 * caller frees with free(). Validates m first (ids, lengths, full =>
 * size==target_size and sha256==target_sha256, expires > created) and returns
 * UPK_E_MANIFEST_INVALID naming nothing else when it is not coherent. */
UPK_MUST_CHECK upk_err upk_manifest_encode(const upk_manifest *m, char **out, size_t *outlen);

/* Decodes len bytes of manifest JSON into *out. Rejects non-JSON
 * (UPK_E_JSON_INVALID), wrong types (UPK_E_FIELD_TYPE), missing fields
 * (UPK_E_FIELD_MISSING), oversized strings/lists (UPK_E_FIELD_TOO_LONG), other
 * "v" (UPK_E_VERSION_UNSUPPORTED), bad ids, hashes, times or incoherent
 * fields (UPK_E_MANIFEST_INVALID), inputs over UPK_MANIFEST_MAX
 * (UPK_E_MSG_TOO_LARGE). *out is untouched on failure. Unknown fields are
 * ignored (forward compatibility). */
UPK_MUST_CHECK upk_err upk_manifest_decode(const char *json, size_t len, upk_manifest *out);

/* Signs the manifest bytes with key: convenience over upk_key_sign. */
UPK_MUST_CHECK upk_err upk_manifest_sign(const upk_key *key, const char *json, size_t len,
                                         uint8_t sig[UPK_SIG_MAX], size_t *siglen);

/* Verifies sig over the exact manifest bytes with the pinned key key_id, then
 * decodes them into *out. Returns UPK_E_KEY_UNKNOWN when key_id is not in
 * ring, UPK_E_SIG_INVALID when the signature fails, else as decode. Nothing
 * is decoded before the signature verifies. */
UPK_MUST_CHECK upk_err upk_manifest_verify(const upk_keyring *ring, const char *key_id,
                                           const char *json, size_t len, const uint8_t *sig,
                                           size_t siglen, upk_manifest *out);

/* What a device knows about itself when judging a verified manifest. */
typedef struct upk_device_facts {
    int64_t now;    /* epoch s */
    const char *hw; /* this device's hardware id */
    uint64_t installed_security_version;
    const char *const *modules; /* install modules this device has */
    size_t module_count;
} upk_device_facts;

/* Checks a verified manifest against the device: UPK_E_MANIFEST_EXPIRED,
 * UPK_E_MANIFEST_NOT_YET_VALID (created more than 5 minutes in the future,
 * allowing for clock skew), UPK_E_ROLLBACK_REJECTED, UPK_E_HW_INCOMPATIBLE,
 * UPK_E_MODULE_UNSUPPORTED, in that order; UPK_OK when it may be installed.
 * An equal security_version is allowed (a re-release). */
UPK_MUST_CHECK upk_err upk_manifest_check(const upk_manifest *m, const upk_device_facts *facts);

#define UPK_CLOCK_SKEW_S 300

#endif
