/* `upkeep keygen`: makes an ES256 release signing key pair on this machine
 * (keep the private key offline; give the .pub to the controller config). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "upkeep/fs.h"
#include "upkeep/key.h"

static void usage(FILE *out)
{
    fprintf(out, "usage: upkeep keygen --out PREFIX\n\n"
                 "Writes PREFIX.key (private, mode 0600; keep it offline) and PREFIX.pub\n"
                 "(public; list it in the controller's release_keys and pin it on devices),\n"
                 "and prints the key id. Refuses to overwrite an existing key.\n");
}

static int write_new(const char *path, const char *text, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0) {
        fprintf(stderr, "upkeep keygen: cannot create %s: %s%s\n", path, strerror(errno),
                errno == EEXIST ? " (remove it first if you really mean to replace it)" : "");
        return -1;
    }
    size_t len = strlen(text), done = 0;
    while (done < len) {
        ssize_t w = write(fd, text + done, len - done);
        if (w <= 0) {
            close(fd);
            fprintf(stderr, "upkeep keygen: write %s failed\n", path);
            return -1;
        }
        done += (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        fprintf(stderr, "upkeep keygen: sync %s failed\n", path);
        return -1;
    }
    return 0;
}

int upk_cli_keygen(int argc, char **argv)
{
    static const struct option opts[] = {
        {"out", required_argument, NULL, 'o'}, {"help", no_argument, NULL, 'h'}, {0}};
    const char *prefix = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
        if (c == 'o')
            prefix = optarg;
        else if (c == 'h') {
            usage(stdout);
            return UPK_EXIT_OK;
        } else {
            usage(stderr);
            return UPK_EXIT_USAGE;
        }
    }
    if (prefix == NULL || optind != argc || strlen(prefix) > 4000) {
        fprintf(stderr, "upkeep keygen: %s\n\n",
                prefix == NULL   ? "--out PREFIX is missing"
                : optind != argc ? "takes no operand besides --out PREFIX"
                                 : "--out PREFIX is too long");
        usage(stderr);
        return UPK_EXIT_USAGE;
    }
    upk_key *key = NULL;
    char *priv = NULL, *pub = NULL;
    int rc = UPK_EXIT_FAIL;
    char kpath[4100], ppath[4100];
    int r = snprintf(kpath, sizeof(kpath), "%s.key", prefix);
    r = snprintf(ppath, sizeof(ppath), "%s.pub", prefix);
    (void)r;
    if (upk_key_generate(&key) != UPK_OK || upk_key_private_pem(key, &priv) != UPK_OK ||
        upk_key_public_pem(key, &pub) != UPK_OK) {
        fprintf(stderr, "upkeep keygen: key generation failed\n");
        goto out;
    }
    if (write_new(kpath, priv, 0600) != 0)
        goto out;
    if (write_new(ppath, pub, 0644) != 0) {
        unlink(kpath);
        goto out;
    }
    printf("private key: %s (keep offline)\npublic key:  %s\nkey id:      %s\n", kpath, ppath,
           upk_key_id(key));
    rc = UPK_EXIT_OK;
out:
    if (priv != NULL) {
        memset(priv, 0, strlen(priv));
        free(priv);
    }
    free(pub);
    upk_key_free(key);
    return rc;
}
