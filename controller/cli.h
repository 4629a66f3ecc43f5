/* Subcommands of the `upkeep` binary. Each upk_cli_<name> parses its own
 * arguments (argv[0] is the subcommand name), prints for the operator, and
 * returns the process exit status: 0 success, 1 operation failed, 2 usage
 * error, 3 could not reach the controller or broker. main.c only dispatches. */
#ifndef UPKEEP_CONTROLLER_CLI_H
#define UPKEEP_CONTROLLER_CLI_H

#define UPK_EXIT_OK          0
#define UPK_EXIT_FAIL        1
#define UPK_EXIT_USAGE       2
#define UPK_EXIT_UNREACHABLE 3

typedef int (*upk_cli_fn)(int argc, char **argv);

struct upk_cli_cmd {
    const char *name;
    upk_cli_fn fn;
    const char *summary;
};

/* Shared by the remote subcommands (cli_common.c). */
struct cJSON;
struct upk_client_cfg;

/* Connects, sends cmd with args, prints any error for the operator and
 * returns an exit status; on success *data (may be NULL) is the reply data,
 * which the caller frees with cJSON_Delete. */
int upk_cli_call(const struct upk_client_cfg *cfg, const char *cmd, const struct cJSON *args,
                 struct cJSON **data);
/* True when stdout is a terminal. */
int upk_cli_isatty(void);

int upk_cli_audit(int argc, char **argv);
int upk_cli_campaign(int argc, char **argv);
int upk_cli_devices(int argc, char **argv);
int upk_cli_keygen(int argc, char **argv);
int upk_cli_release(int argc, char **argv);
int upk_cli_report(int argc, char **argv);
int upk_cli_serve(int argc, char **argv);

#endif
