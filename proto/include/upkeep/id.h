/* Identifier validation for devices, operators, campaigns and releases.
 *
 * Every id that enters upkeep (from a topic, a message, a config file or a
 * command line) passes through here first. An id is 1-64 characters of
 * [A-Za-z0-9._-] and does not start with '.' or '-', so it is always safe as
 * one MQTT topic level, as a file name and in logs. Pure functions; any thread. */
#ifndef UPKEEP_ID_H
#define UPKEEP_ID_H

#include <stdbool.h>
#include <stddef.h>

#include "upkeep/err.h"

#define UPK_ID_MAX 64 /* characters, without the terminating NUL */

/* True when the NUL-terminated s is a valid id. s may be NULL (false). */
bool upk_id_valid(const char *s);

/* True when the len bytes at s (not NUL-terminated, may contain NUL) form a
 * valid id. */
bool upk_id_valid_n(const char *s, size_t len);

/* Returns UPK_OK or UPK_E_ID_INVALID. For callers that propagate upk_err. */
UPK_MUST_CHECK upk_err upk_id_check(const char *s);

#endif
