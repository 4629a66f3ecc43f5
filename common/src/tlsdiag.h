/* Internal to libupkeep_common: checks of the TLS files a client is given and
 * a diagnosis of why a TLS connect to the broker failed, so that mqtt.c can
 * report a named error (Paho only says "TCP/TLS connect failure").
 *
 * Built only into the TLS variant of the library (OpenSSL, like Paho's
 * paho-mqtt3as). Threads: every function is self-contained and may run on
 * any thread; upk__tls_diagnose blocks (bounded by its timeout) and is meant
 * for a libuv worker thread. Nothing here keeps state between calls. */
#ifndef UPKEEP_TLSDIAG_H
#define UPKEEP_TLSDIAG_H

#include <stddef.h>

#include "upkeep/err.h"

#define UPK_TLS_WHY_MAX 256

/* True when url starts with ssl:// or mqtts://. */
int upk__tls_url(const char *url);

/* Checks, before any connect, that ca_file (required) holds at least one
 * readable certificate and that cert_file and key_file (both or neither) are
 * a readable certificate and its private key. UPK_E_CONFIG_INVALID with a
 * reason in why (cap bytes) otherwise. */
UPK_MUST_CHECK upk_err upk__tls_check_files(const char *ca_file, const char *cert_file,
                                            const char *key_file, char *why, size_t cap);

/* Makes one TLS handshake to url's host and port, verifying the broker's
 * certificate against ca_file and the URL's host name, and presenting
 * cert_file/key_file, then waits up to timeout_ms for the broker to refuse
 * our certificate. Returns:
 *   UPK_E_CONN           when no TCP connection could be made;
 *   UPK_E_TLS_UNTRUSTED  when the broker's certificate fails verification
 *                        (why names the check: unknown issuer, expired,
 *                        host name mismatch, ...);
 *   UPK_E_TLS_FAILED     when our own certificate has expired or is not yet
 *                        valid, or the handshake or the broker refused us;
 *   UPK_E_CONFIG_INVALID when the files cannot be loaded;
 *   UPK_OK               when TLS itself works (the failure was elsewhere). */
UPK_MUST_CHECK upk_err upk__tls_diagnose(const char *url, const char *ca_file,
                                         const char *cert_file, const char *key_file,
                                         int timeout_ms, char *why, size_t cap);

#endif
