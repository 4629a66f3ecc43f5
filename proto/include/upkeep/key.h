/* Release signing keys: ECDSA P-256 (ES256) with mbedTLS.
 *
 * Keys are PEM (SEC1/PKCS#8 private, SubjectPublicKeyInfo public), signatures
 * plain DER ECDSA over SHA-256, so `openssl dgst -sha256 -sign/-verify`
 * interoperates both ways. Signing is deterministic (RFC 6979): the same key
 * and message always give the same DER bytes. A key id is the lower-case hex
 * SHA-256 of the DER SubjectPublicKeyInfo. No file I/O: callers read and
 * write the PEM text. A upk_key is immutable after creation, so it may be
 * shared between threads for verification; signing uses a per-call RNG. */
#ifndef UPKEEP_KEY_H
#define UPKEEP_KEY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "upkeep/err.h"
#include "upkeep/hash.h"

#define UPK_SIG_MAX     72   /* bytes of a DER ES256 signature, at most */
#define UPK_KEY_ID_LEN  64   /* hex chars, without NUL */
#define UPK_KEY_PEM_MAX 4096 /* bytes of PEM text accepted */
#define UPK_KEYRING_MAX 16   /* pinned keys per keyring */

typedef struct upk_key upk_key;

/* Generates a new P-256 key pair. *out is set on success; caller frees with
 * upk_key_free. */
UPK_MUST_CHECK upk_err upk_key_generate(upk_key **out);

/* Parses a PEM private or public P-256 key from len bytes (NUL not needed).
 * Returns UPK_E_KEY_INVALID for anything else (including other curves and
 * RSA). Caller frees *out with upk_key_free. */
UPK_MUST_CHECK upk_err upk_key_load_pem(const char *pem, size_t len, upk_key **out);

/* Writes the private (fails with UPK_E_KEY_INVALID on a public-only key) or
 * public key as PEM into a new NUL-terminated string *out; caller frees with
 * free(). */
UPK_MUST_CHECK upk_err upk_key_private_pem(const upk_key *key, char **out);
UPK_MUST_CHECK upk_err upk_key_public_pem(const upk_key *key, char **out);

/* The key id (64 hex chars, NUL-terminated), owned by key. */
const char *upk_key_id(const upk_key *key);

bool upk_key_has_private(const upk_key *key);

/* No-op on NULL. */
void upk_key_free(upk_key *key);

/* Signs len bytes of msg with key's private half (ES256, DER, deterministic).
 * sig must have room for UPK_SIG_MAX bytes; *siglen receives the length. */
UPK_MUST_CHECK upk_err upk_key_sign(const upk_key *key, const void *msg, size_t len,
                                    uint8_t sig[UPK_SIG_MAX], size_t *siglen);

/* Verifies a DER ES256 signature of msg. UPK_OK or UPK_E_SIG_INVALID. */
UPK_MUST_CHECK upk_err upk_key_verify(const upk_key *key, const void *msg, size_t len,
                                      const uint8_t *sig, size_t siglen);

/* From now on this process remembers its last UPK_KEY_VERIFY_MEMO successful
 * verifications, each as SHA-256 over (key id, message digest, signature),
 * and answers the same question again with that hash instead of an ECDSA
 * verification. Failures are never remembered. Off by default: only the
 * simulator turns it on, where thousands of agents in one process verify the
 * same signed manifest (each real device verifies on its own CPU). Any
 * thread; the memo is guarded by a mutex. */
#define UPK_KEY_VERIFY_MEMO 16
void upk_key_verify_memo_enable(void);

/* How many verifications the memo has answered in this process. */
size_t upk_key_verify_memo_hits(void);

/* A set of pinned public keys, looked up by key id. */
typedef struct upk_keyring upk_keyring;

/* Caller frees with upk_keyring_free. */
UPK_MUST_CHECK upk_err upk_keyring_new(upk_keyring **out);

/* Adds a copy of key's public half. UPK_E_EXISTS if the id is already there,
 * UPK_E_FIELD_TOO_LONG past UPK_KEYRING_MAX. */
UPK_MUST_CHECK upk_err upk_keyring_add(upk_keyring *ring, const upk_key *key);

/* Pinned key with that id, or NULL. Owned by ring. */
const upk_key *upk_keyring_find(const upk_keyring *ring, const char *key_id);

size_t upk_keyring_count(const upk_keyring *ring);

/* No-op on NULL. */
void upk_keyring_free(upk_keyring *ring);

#endif
