/* `upkeep device-key ID`: prints the broker password of a device, derived
 * from the fleet secret (see proto/include/upkeep/devkey.h), for provisioning.
 * The secret file is read exactly as the broker plugin reads it: its bytes
 * with trailing CR, LF, space and tab removed, at least 16 bytes.
 * With --link-secret-file it prints the device's link key instead
 * (proto/include/upkeep/linkauth.h), read the same way as `upkeep serve`
 * reads its link_secret_file. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
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
    fprintf(out, "usage: upkeep device-key [--secret-file PATH] [--epoch N] DEVICE_ID\n"
                 "       upkeep device-key --link-secret-file PATH DEVICE_ID\n\n"
                 "Prints the MQTT password of DEVICE_ID, derived from the fleet secret\n"
                 "(HMAC-SHA256, hex). The broker plugin derives the same password, so\n"
                 "devices need no entry in the broker's password file.\n"
                 "With --link-secret-file, prints instead the device's link key (64 hex\n"
                 "characters for the agent's link_key_file), derived from the controller's\n"
                 "link secret (serve.json link_secret_file).\n\n"
                 "  --secret-file PATH       fleet secret file (default: "
                 "$UPKEEP_FLEET_SECRET_FILE)\n"
                 "  --epoch N                the password of credential epoch N (0-999999999,\n"
                 "                           default 0): \"e<N>.\" + hex; raising the device's\n"
                 "                           minimum epoch at the broker revokes older ones\n"
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

/* A credential epoch: decimal, 0..UPK_DEVKEY_EPOCH_MAX, no sign, no leading
 * zeros (so that each epoch has one spelling, as in the password). */
static bool parse_epoch(const char *s, uint32_t *out)
{
    size_t n = strlen(s);
    if (n == 0 || n > 9 || (n > 1 && s[0] == '0'))
        return false;
    uint32_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10u + (uint32_t)(s[i] - '0');
    }
    *out = v;
    return true;
}

int upk_cli_device_key(int argc, char **argv)
{
    const char *secret_file = getenv("UPKEEP_FLEET_SECRET_FILE");
    const char *id = NULL, *link_file = NULL;
    unsigned char secret[SECRET_MAX];
    char key[UPK_DEVKEY_MAX + 1];
    uint32_t epoch = 0;
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
        } else if (strcmp(argv[i], "--epoch") == 0 && i + 1 < argc) {
            if (!parse_epoch(argv[++i], &epoch)) {
                fprintf(stderr,
                        "upkeep device-key: --epoch '%s': must be a whole number from 0 to %u "
                        "without leading zeros (error=%s)\n",
                        argv[i], UPK_DEVKEY_EPOCH_MAX, upk_err_str(UPK_E_FIELD_RANGE));
                return UPK_EXIT_USAGE;
            }
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
    upk_err err = upk_devkey_derive_epoch(secret, (size_t)len, id, epoch, key, sizeof(key));
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
