/* `upkeep device-key ID`: prints the broker password of a device, derived
 * from the fleet secret (see proto/include/upkeep/devkey.h), for provisioning.
 * The secret file is read exactly as the broker plugin reads it: its bytes
 * with trailing CR, LF, space and tab removed, at least 16 bytes.
 * With --link-secret-file it prints the device's link key instead
 * (proto/include/upkeep/linkauth.h), read the same way as `upkeep serve`
 * reads its link_secret_file. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "upkeep/devkey.h"
#include "upkeep/err.h"
#include "upkeep/id.h"
#include "upkeep/linkauth.h"

#define SECRET_MAX 1024

int upk_cli_device_key(int argc, char **argv);

static void usage(FILE *out)
{
    fprintf(out, "usage: upkeep device-key [--secret-file PATH] DEVICE_ID\n"
                 "       upkeep device-key --link-secret-file PATH DEVICE_ID\n\n"
                 "Prints the MQTT password of DEVICE_ID, derived from the fleet secret\n"
                 "(HMAC-SHA256, hex). The broker plugin derives the same password, so\n"
                 "devices need no entry in the broker's password file.\n"
                 "With --link-secret-file, prints instead the device's link key (64 hex\n"
                 "characters for the agent's link_key_file), derived from the controller's\n"
                 "link secret (serve.json link_secret_file).\n\n"
                 "  --secret-file PATH       fleet secret file (default: "
                 "$UPKEEP_FLEET_SECRET_FILE)\n"
                 "  --link-secret-file PATH  the controller's link secret file\n");
}

/* Reads the secret file into buf; returns its length or -1 with a message. */
static long read_secret(const char *path, unsigned char *buf, size_t cap)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "upkeep device-key: cannot open %s: %s\n", path, strerror(errno));
        return -1;
    }
    size_t n = fread(buf, 1, cap, f);
    int bad = ferror(f);
    int more = !bad && fgetc(f) != EOF;
    fclose(f);
    if (bad || more) {
        fprintf(stderr, "upkeep device-key: %s: %s\n", path,
                bad ? "read error" : "secret longer than 1024 bytes");
        return -1;
    }
    while (n > 0 &&
           (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ' || buf[n - 1] == '\t'))
        n--;
    return (long)n;
}

int upk_cli_device_key(int argc, char **argv)
{
    const char *secret_file = getenv("UPKEEP_FLEET_SECRET_FILE");
    const char *id = NULL, *link_file = NULL;
    unsigned char secret[SECRET_MAX];
    char key[UPK_DEVKEY_LEN + 1];
    upk_link_key lk;
    char lhex[UPK_LINK_KEY_HEX_LEN + 1];
    memset(&lk, 0, sizeof(lk));
    memset(lhex, 0, sizeof(lhex));
    int rc = UPK_EXIT_FAIL;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return UPK_EXIT_OK;
        } else if (strcmp(argv[i], "--secret-file") == 0 && i + 1 < argc) {
            secret_file = argv[++i];
        } else if (strcmp(argv[i], "--link-secret-file") == 0 && i + 1 < argc) {
            link_file = argv[++i];
        } else if (argv[i][0] == '-' || id != NULL) {
            usage(stderr);
            return UPK_EXIT_USAGE;
        } else {
            id = argv[i];
        }
    }
    if (link_file != NULL)
        secret_file = link_file;
    if (id == NULL || secret_file == NULL || secret_file[0] == '\0') {
        if (id != NULL)
            fprintf(stderr, "upkeep device-key: no secret file: give --secret-file PATH or "
                            "set UPKEEP_FLEET_SECRET_FILE\n");
        usage(stderr);
        return UPK_EXIT_USAGE;
    }
    if (!upk_id_valid(id)) {
        fprintf(stderr, "upkeep device-key: '%s': %s (error=%s)\n", id,
                upk_err_msg(UPK_E_ID_INVALID), upk_err_str(UPK_E_ID_INVALID));
        return UPK_EXIT_USAGE;
    }
    long len = read_secret(secret_file, secret, sizeof(secret));
    if (len < 0)
        goto out;
    if (link_file != NULL) {
        upk_err lerr = upk_link_key_derive(secret, (size_t)len, id, &lk);
        if (lerr == UPK_OK)
            lerr = upk_link_key_to_hex(&lk, lhex, sizeof(lhex));
        if (lerr != UPK_OK) {
            fprintf(stderr, "upkeep device-key: %s: %s (error=%s)\n", link_file,
                    lerr == UPK_E_INVALID_ARG ? "link secret shorter than 16 bytes"
                                              : upk_err_msg(lerr),
                    upk_err_str(lerr));
            goto out;
        }
        printf("%s\n", lhex);
        rc = UPK_EXIT_OK;
        goto out;
    }
    upk_err err = upk_devkey_derive(secret, (size_t)len, id, key, sizeof(key));
    if (err != UPK_OK) {
        fprintf(stderr, "upkeep device-key: %s: %s (error=%s)\n", secret_file,
                err == UPK_E_INVALID_ARG ? "fleet secret shorter than 16 bytes" : upk_err_msg(err),
                upk_err_str(err));
        goto out;
    }
    printf("%s\n", key);
    rc = UPK_EXIT_OK;
out:
    memset(secret, 0, sizeof(secret));
    memset(key, 0, sizeof(key));
    upk_link_key_wipe(&lk);
    memset(lhex, 0, sizeof(lhex));
    return rc;
}
