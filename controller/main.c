/* `upkeep`: the operator's binary. `upkeep serve` runs the controller daemon;
 * every other subcommand is an operator command. This file only dispatches:
 * each subcommand lives in its own cli_<name>.c. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

/* Subcommand entry points (one cli_<name>.c each). Keep this list and the
 * table below sorted by name. */
int upk_cli_delta(int argc, char **argv);
int upk_cli_device_key(int argc, char **argv);
int upk_cli_device(int argc, char **argv);

static const struct upk_cli_cmd commands[] = {
    {"audit", upk_cli_audit, "who did what on the controller"},
    {"campaign", upk_cli_campaign, "staged rollouts: create, list, show, watch, pause, ..."},
    {"delta", upk_cli_delta, "make, apply or inspect binary delta patches"},
    {"device", upk_cli_device, "a device's update-capability label (text, JSON, HTML card)"},
    {"device-key", upk_cli_device_key,
     "print a device's broker password derived from the fleet secret"},
    {"devices", upk_cli_devices, "the device registry: list, show, label"},
    {"keygen", upk_cli_keygen, "make a release signing key pair (offline)"},
    {"release", upk_cli_release, "sign, import, list and show releases"},
    {"report", upk_cli_report, "fleet posture report (text, JSON, HTML)"},
    {"serve", upk_cli_serve, "run the controller daemon"},
    {NULL, NULL, NULL},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: upkeep COMMAND [ARGS...]\n\ncommands:\n");
    for (const struct upk_cli_cmd *c = commands; c->name != NULL; c++)
        fprintf(out, "  %-14s %s\n", c->name, c->summary);
    fprintf(out, "\n`upkeep COMMAND --help` explains each command.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "upkeep: a command is missing\n\n");
        usage(stderr);
        return UPK_EXIT_USAGE;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return UPK_EXIT_OK;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("upkeep %s\n", UPK_VERSION);
        return UPK_EXIT_OK;
    }
    for (const struct upk_cli_cmd *c = commands; c->name != NULL; c++) {
        if (strcmp(argv[1], c->name) == 0)
            return c->fn(argc - 1, argv + 1);
    }
    fprintf(stderr, "upkeep: unknown command '%s'; see `upkeep --help`\n", argv[1]);
    return UPK_EXIT_USAGE;
}
