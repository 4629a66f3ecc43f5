/* `upkeep serve -c CONFIG`: runs the controller daemon (serve.c). */
#include <getopt.h>
#include <stdio.h>

#include "cli.h"
#include "config.h"
#include "datalock.h"
#include "serve.h"
#include "upkeep/log.h"

static void usage(FILE *out)
{
    fprintf(out, "usage: upkeep serve -c CONFIG.json [--log-level debug|info|warn|error]\n\n"
                 "Runs the controller: device registry, releases, campaigns, chunk server.\n"
                 "CONFIG fields: data_dir, broker, username, password_file, client_id,\n"
                 "topic_prefix, release_keys (public keys it accepts releases from), tick_ms,\n"
                 "readonly_operators, ca_file/cert_file/key_file. See docs/operator-guide.md and\n"
                 "examples/controller/serve.json. Stops cleanly on SIGINT/SIGTERM.\n");
}

int upk_cli_serve(int argc, char **argv)
{
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"log-level", required_argument, NULL, 'l'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0}};
    const char *path = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "c:l:h", opts, NULL)) != -1) {
        if (c == 'c') {
            path = optarg;
        } else if (c == 'l') {
            int lvl = upk_log_level_parse(optarg);
            if (lvl < 0) {
                fprintf(stderr, "upkeep serve: --log-level takes debug, info, warn or error\n");
                return UPK_EXIT_USAGE;
            }
            upk_log_set_level((upk_log_level)lvl);
        } else if (c == 'h') {
            usage(stdout);
            return UPK_EXIT_OK;
        } else {
            usage(stderr);
            return UPK_EXIT_USAGE;
        }
    }
    if (path == NULL || optind != argc) {
        usage(stderr);
        return UPK_EXIT_USAGE;
    }
    upk_serve_config cfg;
    char why[512];
    if (upk_serve_config_load(path, &cfg, why, sizeof(why)) != UPK_OK) {
        fprintf(stderr, "upkeep serve: config %s refused: %s\n", path, why);
        return UPK_EXIT_USAGE;
    }
    /* One daemon per data directory, refused before it touches the store or
     * the broker (where two would knock each other off every few seconds). */
    upk_datalock *lock = NULL;
    long holder = 0;
    upk_err err = upk_datalock_acquire(cfg.data_dir, &lock, &holder, why, sizeof(why));
    if (err == UPK_E_BUSY) {
        fprintf(stderr,
                "upkeep serve: the data directory %s is in use: its lock %s/%s is held by "
                "pid %ld (another `upkeep serve`); stop that one first, or give this one "
                "its own data_dir\n",
                cfg.data_dir, cfg.data_dir, UPK_DATALOCK_NAME, holder);
        upk_serve_config_cleanup(&cfg);
        return UPK_EXIT_FAIL;
    }
    if (err != UPK_OK) {
        fprintf(stderr, "upkeep serve: %s\n", why);
        upk_serve_config_cleanup(&cfg);
        return UPK_EXIT_FAIL;
    }
    err = upk_serve_run(&cfg);
    upk_datalock_release(lock);
    upk_serve_config_cleanup(&cfg);
    if (err != UPK_OK) {
        fprintf(stderr, "upkeep serve: %s (%s)\n", upk_err_msg(err), upk_err_str(err));
        return UPK_EXIT_FAIL;
    }
    return UPK_EXIT_OK;
}
