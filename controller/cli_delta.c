/* `upkeep delta`: make, apply or inspect binary delta patches (libupkeep_delta,
 * docs/delta-format.md). `apply` is for tests and for operators checking a
 * patch before they publish it; devices apply patches inside the agent. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cli.h"
#include "upkeep/delta.h"

int upk_cli_delta(int argc, char **argv);

static void usage(FILE *out)
{
    fprintf(out, "usage: upkeep delta make [--level N] OLD NEW PATCH\n"
                 "       upkeep delta apply OLD PATCH OUT\n"
                 "       upkeep delta info PATCH\n"
                 "\n"
                 "make   writes PATCH, turning image OLD into image NEW (zstd level N,\n"
                 "       1-22, default 19)\n"
                 "apply  rebuilds OUT from OLD and PATCH, checking OLD's and OUT's\n"
                 "       sizes and sha256 against PATCH's header\n"
                 "info   prints PATCH's header\n");
}

static int fail(const char *what, const char *path, upk_err err)
{
    fprintf(stderr, "upkeep delta %s: %s: %s (%s)\n", what, path, upk_err_str(err),
            upk_err_msg(err));
    return UPK_EXIT_FAIL;
}

static double now_s(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
        return 0.0;
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long long file_size(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return -1;
    return (long long)st.st_size;
}

static void print_hex(const char *label, const uint8_t *h)
{
    char hex[UPK_SHA256_HEX_LEN + 1];
    if (upk_hex_encode(h, UPK_SHA256_LEN, hex, sizeof(hex)) != UPK_OK)
        hex[0] = '\0';
    printf("%s%s\n", label, hex);
}

static int cmd_make(int argc, char **argv)
{
    upk_delta_options opts = {0};
    const char *pos[3];
    int npos = 0;
    double t0;
    upk_err err;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--level") == 0 && i + 1 < argc) {
            char *end = NULL;
            long v;
            errno = 0;
            v = strtol(argv[++i], &end, 10);
            if (errno != 0 || end == argv[i] || *end != '\0' || v < 1 || v > 22) {
                fprintf(stderr, "upkeep delta make: --level wants 1-22\n");
                return UPK_EXIT_USAGE;
            }
            opts.level = (int)v;
        } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
            fprintf(stderr, "upkeep delta make: unknown option '%s'\n", argv[i]);
            return UPK_EXIT_USAGE;
        } else if (npos < 3) {
            pos[npos++] = argv[i];
        } else {
            npos++;
        }
    }
    if (npos != 3) {
        usage(stderr);
        return UPK_EXIT_USAGE;
    }
    t0 = now_s();
    err = upk_delta_make_ex(pos[0], pos[1], pos[2], &opts);
    if (err != UPK_OK)
        return fail("make", pos[2], err);
    long long ps = file_size(pos[2]), ns = file_size(pos[1]), os = file_size(pos[0]);
    printf("%s: %lld bytes (old %lld, new %lld; %.2f%% of new) in %.2f s\n", pos[2], ps, os, ns,
           ns > 0 ? 100.0 * (double)ps / (double)ns : 0.0, now_s() - t0);
    return UPK_EXIT_OK;
}

static int cmd_apply(int argc, char **argv)
{
    upk_delta_info info;
    double t0;
    upk_err err;

    if (argc != 4) {
        usage(stderr);
        return UPK_EXIT_USAGE;
    }
    t0 = now_s();
    err = upk_delta_apply(argv[1], argv[2], argv[3]);
    if (err != UPK_OK)
        return fail("apply", argv[2], err);
    err = upk_delta_read_info(argv[2], &info);
    if (err != UPK_OK)
        return fail("apply", argv[2], err);
    printf("%s: %llu bytes (patch %lld bytes) in %.3f s\n", argv[3],
           (unsigned long long)info.new_size, file_size(argv[2]), now_s() - t0);
    print_hex("sha256 ", info.new_sha256);
    return UPK_EXIT_OK;
}

static int cmd_info(int argc, char **argv)
{
    upk_delta_info info;
    upk_err err;

    if (argc != 2) {
        usage(stderr);
        return UPK_EXIT_USAGE;
    }
    err = upk_delta_read_info(argv[1], &info);
    if (err != UPK_OK)
        return fail("info", argv[1], err);
    long long ps = file_size(argv[1]);
    printf("patch      %lld bytes (%.2f%% of new)\n", ps,
           info.new_size > 0 ? 100.0 * (double)ps / (double)info.new_size : 0.0);
    printf("old size   %llu\n", (unsigned long long)info.old_size);
    print_hex("old sha256 ", info.old_sha256);
    printf("new size   %llu\n", (unsigned long long)info.new_size);
    print_hex("new sha256 ", info.new_sha256);
    return UPK_EXIT_OK;
}

int upk_cli_delta(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return UPK_EXIT_USAGE;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return UPK_EXIT_OK;
    }
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return UPK_EXIT_OK;
        }
    }
    if (strcmp(argv[1], "make") == 0)
        return cmd_make(argc - 1, argv + 1);
    if (strcmp(argv[1], "apply") == 0)
        return cmd_apply(argc - 1, argv + 1);
    if (strcmp(argv[1], "info") == 0)
        return cmd_info(argc - 1, argv + 1);
    fprintf(stderr, "upkeep delta: unknown subcommand '%s'\n", argv[1]);
    usage(stderr);
    return UPK_EXIT_USAGE;
}
