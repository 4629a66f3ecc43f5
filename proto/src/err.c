/* Tables behind upk_err_str/upk_err_msg, generated from UPK_ERR_MAP so that
 * the enum, its wire names and its messages can never drift apart. */
#include "upkeep/err.h"

#include <string.h>

static const char *const names[] = {
#define UPK__ERR_NAME(name, msg) #name,
    UPK_ERR_MAP(UPK__ERR_NAME)
#undef UPK__ERR_NAME
};

static const char *const msgs[] = {
#define UPK__ERR_MSG(name, msg) msg,
    UPK_ERR_MAP(UPK__ERR_MSG)
#undef UPK__ERR_MSG
};

const char *upk_err_str(upk_err err)
{
    if ((unsigned)err >= (unsigned)UPK_E__COUNT)
        return "UNKNOWN";
    return names[err];
}

const char *upk_err_msg(upk_err err)
{
    if ((unsigned)err >= (unsigned)UPK_E__COUNT)
        return "unknown error";
    return msgs[err];
}

bool upk_err_from_str(const char *name, upk_err *out)
{
    if (name == NULL)
        return false;
    for (unsigned i = 0; i < (unsigned)UPK_E__COUNT; i++) {
        if (strcmp(names[i], name) == 0) {
            *out = (upk_err)i;
            return true;
        }
    }
    return false;
}
