/* Identifier validation (see id.h): the single place that decides what a
 * device, operator, campaign or release id may look like. */
#include "upkeep/id.h"

#include <stdint.h>
#include <string.h>

/* [A-Za-z0-9._-] as a bitmap of the 128 ASCII codes, one lookup per char,
 * as the broker checks an id per message: '-' 45, '.' 46, '0'-'9' 48-57;
 * 'A'-'Z' 65-90, '_' 95, 'a'-'z' 97-122. */
static const uint64_t ID_CHARS[2] = {
    (1ULL << 45) | (1ULL << 46) | (0x3FFULL << 48),
    (0x3FFFFFFULL << 1) | (1ULL << 31) | (0x3FFFFFFULL << 33),
};

static bool id_char_ok(char c)
{
    unsigned u = (unsigned char)c;
    return u < 128u && ((ID_CHARS[u >> 6] >> (u & 63u)) & 1u) != 0;
}

bool upk_id_valid_n(const char *s, size_t len)
{
    if (s == NULL || len == 0 || len > UPK_ID_MAX)
        return false;
    if (s[0] == '.' || s[0] == '-')
        return false;
    for (size_t i = 0; i < len; i++) {
        if (!id_char_ok(s[i]))
            return false;
    }
    return true;
}

bool upk_id_valid(const char *s)
{
    if (s == NULL)
        return false;
    /* strnlen bounds the scan: a long string is rejected without reading it all. */
    size_t len = strnlen(s, UPK_ID_MAX + 1);
    return upk_id_valid_n(s, len);
}

upk_err upk_id_check(const char *s)
{
    return upk_id_valid(s) ? UPK_OK : UPK_E_ID_INVALID;
}
