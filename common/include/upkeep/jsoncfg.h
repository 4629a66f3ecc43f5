/* Strict reading of JSON config files, shared by `upkeep serve`, the agent
 * and the operator CLI so that all three refuse what the broker plugin
 * refuses (docs/broker-plugin.md): a syntax error is reported with its line
 * and column, an unknown field is an error that names it (and the known
 * field it most likely meant), and a private key where a public one belongs
 * is recognised by name.
 *
 * Messages go into the caller's buffer (why, whycap), never to a log.
 * Threads: any; cJSON's parse error position is not used (it is global). */
#ifndef UPKEEP_JSONCFG_H
#define UPKEEP_JSONCFG_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

#include "upkeep/err.h"

/* Parses text[0, len) as one JSON object. On success *out is the tree
 * (caller frees with cJSON_Delete). Fails with UPK_E_CONFIG_INVALID and
 * why = "line L, column C: JSON syntax error (...)" or "top level: not a
 * JSON object";
 * *out is untouched then. */
UPK_MUST_CHECK upk_err upk_jsoncfg_parse(const char *text, size_t len, cJSON **out, char *why,
                                         size_t whycap);

/* Fails (UPK_E_CONFIG_INVALID) naming the first member of obj that is not
 * in known (NULL-terminated): why = "CTXNAME: unknown field (did you mean
 * 'X'?)", where ctx is "" at the top level or e.g. "limits." inside an
 * object. UPK_OK when obj is not an object (the caller checks types). */
UPK_MUST_CHECK upk_err upk_jsoncfg_known(const cJSON *obj, const char *ctx,
                                         const char *const *known, char *why, size_t whycap);

/* True when pem[0, len) holds a private key (a PEM block whose label ends
 * in "PRIVATE KEY"), which must never be listed where a public key is
 * pinned. */
bool upk_jsoncfg_pem_is_private(const char *pem, size_t len);

#endif
