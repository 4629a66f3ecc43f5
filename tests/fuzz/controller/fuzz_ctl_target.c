/* libFuzzer target: the target-expression parser of operator commands
 * (upk_ctl_target_sql). Whatever the input, the SQL it builds must be
 * terminated, bind at most 8 values, and never carry input text into the SQL
 * itself (values go only through binds). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return 0;
    char *expr = malloc(size + 1);
    if (expr == NULL)
        return 0;
    memcpy(expr, data, size);
    expr[size] = '\0';
    char where[2048], copy[4200], why[256];
    const char *binds[8];
    size_t nbinds = 0;
    upk_err err = upk_ctl_target_sql(expr, where, sizeof(where), copy, sizeof(copy), binds, &nbinds,
                                     why, sizeof(why));
    if (err == UPK_OK) {
        if (memchr(where, '\0', sizeof(where)) == NULL || nbinds > 8)
            abort();
        /* No quote can come from the input: values are bound, not pasted. */
        if (strchr(where, '\'') != NULL || strchr(where, ';') != NULL)
            abort();
        for (size_t i = 0; i < nbinds; i++)
            if (binds[i] == NULL || binds[i] < copy || binds[i] >= copy + sizeof(copy))
                abort();
    }
    free(expr);
    return 0;
}
