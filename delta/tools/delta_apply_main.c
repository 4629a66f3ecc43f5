/* upkeep-delta-apply: applies a patch with libupkeep_delta alone, as the
 * agent does in-process, without the startup cost of the full `upkeep`
 * binary (which links every controller library). Used by bench/delta/run.sh
 * to time the decoder itself; operators use `upkeep delta apply`.
 * usage: upkeep-delta-apply OLD PATCH OUT; exit 0 on success, 1 on failure. */
#include <stdio.h>

#include "upkeep/delta.h"

int main(int argc, char **argv)
{
    upk_err err;

    if (argc != 4) {
        fprintf(stderr, "usage: upkeep-delta-apply OLD PATCH OUT\n");
        return 2;
    }
    err = upk_delta_apply(argv[1], argv[2], argv[3]);
    if (err != UPK_OK) {
        fprintf(stderr, "upkeep-delta-apply: %s: %s\n", upk_err_str(err), upk_err_msg(err));
        return 1;
    }
    return 0;
}
