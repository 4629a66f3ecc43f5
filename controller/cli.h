/* Subcommands of the `upkeep` binary. Each upk_cli_<name> parses its own
 * arguments (argv[0] is the subcommand name), prints for the operator, and
 * returns the process exit status: 0 success, 1 operation failed, 2 usage
 * error, 3 could not reach the controller or broker. main.c only dispatches. */
#ifndef UPKEEP_CONTROLLER_CLI_H
#define UPKEEP_CONTROLLER_CLI_H

#define UPK_EXIT_OK 0
#define UPK_EXIT_FAIL 1
#define UPK_EXIT_USAGE 2
#define UPK_EXIT_UNREACHABLE 3

typedef int (*upk_cli_fn)(int argc, char **argv);

struct upk_cli_cmd {
    const char *name;
    upk_cli_fn fn;
    const char *summary;
};

#endif
