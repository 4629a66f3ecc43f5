/* `upkeep device label ID`: a device's update-capability label (can it
 * receive security updates, how, signed or not, rollback or not, until when,
 * last patched when) as text, JSON or a self-contained HTML card. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "client.h"
#include "clifmt.h"
#include "label.h"

int upk_cli_device(int argc, char **argv);

static void usage(FILE *out)
{
    fprintf(out, "usage: upkeep device label ID [--json | --html FILE]\n\n"
                 "Prints the device's update-capability label: can it receive security\n"
                 "updates, how they arrive, signed or not, rollback or not, until when and\n"
                 "who stated it (signed release manifest or device configuration), last\n"
                 "patched when. --html writes a self-contained HTML card to FILE.\n"
                 "See docs/update-capability.md.\n\n" UPK_CLIENT_HELP);
}

static int write_html(const upk_label *l, const char *path)
{
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        fprintf(stderr, "upkeep device label: cannot write %s\n", path);
        return UPK_EXIT_FAIL;
    }
    upk_err err = upk_label_html(l, f);
    if (fclose(f) != 0 || err != UPK_OK) {
        fprintf(stderr, "upkeep device label: write error on %s\n", path);
        return UPK_EXIT_FAIL;
    }
    printf("wrote %s\n", path);
    return UPK_EXIT_OK;
}

int upk_cli_device(int argc, char **argv)
{
    enum { O_JSON = 1, O_HTML };
    static const struct option opts[] = {{"json", no_argument, NULL, O_JSON},
                                         {"html", required_argument, NULL, O_HTML},
                                         {"help", no_argument, NULL, 'h'},
                                         UPK_CLIENT_LONG_OPTS,
                                         {0}};
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        if (argc < 2)
            fprintf(stderr, "upkeep device: a subcommand is missing (label)\n\n");
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? UPK_EXIT_USAGE : UPK_EXIT_OK;
    }
    if (strcmp(argv[1], "label") != 0) {
        fprintf(stderr, "upkeep device: unknown subcommand '%s' (try: label)\n", argv[1]);
        return UPK_EXIT_USAGE;
    }
    argc--;
    argv++;
    upk_client_cfg cfg;
    upk_client_cfg_init(&cfg);
    bool json = false;
    const char *html = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == O_JSON) {
            json = true;
        } else if (c == O_HTML) {
            html = optarg;
        } else if (c == 'h') {
            usage(stdout);
            return UPK_EXIT_OK;
        } else if (!(c >= UPK_CLIENT_OPT_BROKER && upk_client_cfg_opt(&cfg, c, optarg))) {
            usage(stderr);
            return UPK_EXIT_USAGE;
        }
    }
    if (optind + 1 != argc || (json && html != NULL)) {
        fprintf(stderr, "upkeep device label: %s\n\n",
                json && html != NULL ? "give --json or --html, not both"
                : optind == argc     ? "the device ID is missing"
                                     : "give one device ID");
        usage(stderr);
        return UPK_EXIT_USAGE;
    }
    cJSON *args = cJSON_CreateObject(), *data = NULL;
    if (args == NULL || cJSON_AddStringToObject(args, "id", argv[optind]) == NULL) {
        cJSON_Delete(args);
        return UPK_EXIT_FAIL;
    }
    int rc = upk_cli_call(&cfg, "device.capability", args, &data);
    cJSON_Delete(args);
    if (rc != UPK_EXIT_OK)
        return rc;
    upk_label l;
    upk_err err = upk_label_build(data, (int64_t)time(NULL), &l);
    cJSON_Delete(data);
    if (err != UPK_OK) {
        fprintf(stderr, "upkeep device label: bad reply from the controller: %s\n",
                upk_err_str(err));
        return UPK_EXIT_FAIL;
    }
    if (html != NULL)
        return write_html(&l, html);
    if (json) {
        cJSON *j = upk_label_json(&l);
        if (j == NULL)
            return UPK_EXIT_FAIL;
        upk_json_print(stdout, j);
        cJSON_Delete(j);
        return UPK_EXIT_OK;
    }
    return upk_label_text(&l, stdout) == UPK_OK ? UPK_EXIT_OK : UPK_EXIT_FAIL;
}
