/* Helpers shared by the remote subcommands of `upkeep` (declared in cli.h). */
#include <stdio.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "client.h"
#include "clifmt.h"

int upk_cli_isatty(void)
{
    return isatty(STDOUT_FILENO);
}

int upk_cli_call(const upk_client_cfg *cfg, const char *cmd, const cJSON *args, cJSON **data)
{
    char why[512];
    upk_client *c = NULL;
    upk_err err = upk_client_connect(cfg, &c, why, sizeof(why));
    if (err != UPK_OK) {
        fprintf(stderr, "upkeep: %s\n", why);
        return upk_client_exit_code(err);
    }
    err = upk_client_call(c, cmd, args, data, why, sizeof(why));
    upk_client_close(c);
    if (err != UPK_OK) {
        /* The controller's message can quote operator or device text. */
        fputs("upkeep: ", stderr);
        upk_term_puts(stderr, why);
        fprintf(stderr, " (%s)\n", upk_err_str(err));
        return upk_client_exit_code(err);
    }
    return UPK_EXIT_OK;
}
