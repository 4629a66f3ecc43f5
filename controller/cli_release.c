/* `upkeep release`: create (sign locally with an offline key), import
 * (upload a signed bundle to the controller over MQTT, chunked and
 * hash-checked), list, show. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "client.h"
#include "clifmt.h"
#include "ctl.h"
#include "engine.h"
#include "upkeep/fs.h"
#include "upkeep/hash.h"
#include "upkeep/key.h"
#include "upkeep/manifest.h"
#include "upkeep/timefmt.h"
#include "upload.h"
#ifdef UPK_HAVE_DELTA
#include "upkeep/delta.h"
#endif

#define BUNDLE_MAX (64 * 1024)

static void usage(FILE *out)
{
    fprintf(
        out,
        "usage: upkeep release create ARTIFACT --name NAME --version V --security-version N\n"
        "                             --hw HW [--hw HW...] --module MODULE --expires WHEN\n"
        "                             --key KEY.key [--delta | --delta-from OLD] [--out DIR]\n"
        "                             [--upload]\n"
        "                             [--support-until DATE --delivery automatic|user-approved\n"
        "                              --notice TEXT --contact TEXT]\n"
        "       upkeep release import BUNDLE [--id ID] [--artifact FILE]\n"
        "                             [--bytes-per-second N] [--messages-per-second N]\n"
        "       upkeep release list [--json]\n"
        "       upkeep release show ID [--json]\n\n"
        "create signs a manifest for ARTIFACT on this machine and writes the bundle\n"
        "DIR/NAME-V.release.json (manifest, signature, artifact path) plus\n"
        "NAME-V.manifest.json and NAME-V.manifest.sig (DER; `openssl dgst -sha256 -verify\n"
        "KEY.pub -signature ...` checks it). --delta: ARTIFACT is a patch from `upkeep\n"
        "delta make`; --delta-from OLD: ARTIFACT is the new image, and the release is a\n"
        "patch from OLD made beside the bundle (base_sha256 = OLD, target_sha256 =\n"
        "ARTIFACT). --expires takes a date (2027-01-01) or a duration from now (365d).\n"
        "--out DIR is made when missing. The bundle names the artifact relative to\n"
        "DIR, so DIR and the artifact can move together to another machine.\n"
        "--upload imports the bundle right away. import uploads a bundle to the\n"
        "controller (any machine that reaches the broker). It finds the artifact\n"
        "where the bundle says or beside the bundle; --artifact FILE names it. Chunks\n"
        "are paced to the broker's rate limit for operators: --bytes-per-second\n"
        "(default 1048576, or UPKEEP_BYTES_PER_SECOND, or cli.json's bytes_per_second)\n"
        "and --messages-per-second (default 10, UPKEEP_MESSAGES_PER_SECOND,\n"
        "messages_per_second) are its rate_limits.operator (0 = unlimited). Run an\n"
        "interrupted import again to resume it.\n\n" UPK_CLIENT_HELP);
}

/* ---- upload */

/* How `release import` paces its chunks and where it finds the artifact. */
struct import_opts {
    const char *id;       /* --id: the release id, or NULL for NAME-VERSION */
    const char *artifact; /* --artifact: the artifact file, or NULL to look beside the bundle */
    double bytes_per_s;   /* --bytes-per-second: the broker's rate_limits.operator */
    double msgs_per_s;    /* --messages-per-second */
};

/* The plugin's defaults for operators (docs/broker-plugin.md). */
#define IMPORT_BYTES_PER_S_DEFAULT 1048576.0
#define IMPORT_MSGS_PER_S_DEFAULT  10.0

/* The defaults, then cli.json (through cfg), then the environment; the
 * options come last. */
static void import_opts_init(struct import_opts *io, const upk_client_cfg *cfg)
{
    memset(io, 0, sizeof(*io));
    io->bytes_per_s = IMPORT_BYTES_PER_S_DEFAULT;
    io->msgs_per_s = IMPORT_MSGS_PER_S_DEFAULT;
    if (cfg->bytes_per_second >= 0)
        io->bytes_per_s = cfg->bytes_per_second;
    if (cfg->messages_per_second >= 0)
        io->msgs_per_s = cfg->messages_per_second;
    const char *e;
    char *end = NULL;
    if ((e = getenv("UPKEEP_BYTES_PER_SECOND")) != NULL && *e != '\0') {
        double v = strtod(e, &end);
        if (end != e && *end == '\0' && v >= 0 && v <= 1e12)
            io->bytes_per_s = v;
    }
    if ((e = getenv("UPKEEP_MESSAGES_PER_SECOND")) != NULL && *e != '\0') {
        double v = strtod(e, &end);
        if (end != e && *end == '\0' && v >= 0 && v <= 1e9)
            io->msgs_per_s = v;
    }
}

/* --bytes-per-second / --messages-per-second: a number >= 0 (0 = unlimited). */
static bool parse_rate(const char *opt, const char *s, double max, double *out)
{
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end != '\0' || errno != 0 || !(v >= 0) || v > max) {
        fprintf(stderr, "upkeep release: %s takes a number from 0 (unlimited) to %.0f\n", opt, max);
        return false;
    }
    *out = v;
    return true;
}

/* Finds the artifact of a bundle: --artifact when given; else the bundle's
 * path, relative to the bundle's folder (or absolute, in bundles of older
 * versions); else a file of the same name beside the bundle, so a bundle and
 * its artifact copied together to another machine import from there. */
static bool find_artifact(const char *bundle_path, const char *art, const char *given, char *out,
                          size_t cap)
{
    int r;
    if (given != NULL) {
        r = snprintf(out, cap, "%s", given);
        return r >= 0 && (size_t)r < cap;
    }
    const char *slash = strrchr(bundle_path, '/');
    int dirlen = slash ? (int)(slash - bundle_path + 1) : 0;
    if (art[0] == '/')
        r = snprintf(out, cap, "%s", art);
    else
        r = snprintf(out, cap, "%.*s%s", dirlen, bundle_path, art);
    if (r >= 0 && (size_t)r < cap && access(out, F_OK) == 0)
        return true;
    const char *base = strrchr(art, '/');
    base = base ? base + 1 : art;
    char beside[PATH_MAX];
    r = snprintf(beside, sizeof(beside), "%.*s%s", dirlen, bundle_path, base);
    if (r >= 0 && (size_t)r < sizeof(beside) && access(beside, F_OK) == 0) {
        r = snprintf(out, cap, "%s", beside);
        return r >= 0 && (size_t)r < cap;
    }
    return true; /* out names the recorded path; opening it reports the error */
}

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void fmt_bytes(char *buf, size_t cap, double b)
{
    int r;
    if (b >= 1024.0 * 1024 * 1024)
        r = snprintf(buf, cap, "%.2f GiB", b / (1024.0 * 1024 * 1024));
    else if (b >= 1024.0 * 1024)
        r = snprintf(buf, cap, "%.1f MiB", b / (1024.0 * 1024));
    else if (b >= 1024.0)
        r = snprintf(buf, cap, "%.1f KiB", b / 1024.0);
    else
        r = snprintf(buf, cap, "%.0f B", b);
    (void)r;
}

struct progress {
    const char *release;
    bool tty;     /* stdout is a terminal: draw the progress line */
    bool drawn;   /* a line is on the screen (end it before other output) */
    double start; /* mono_s at the first chunk */
    uint64_t from;
    double last_draw;
};

static void on_progress(uint64_t done, uint64_t size, void *ud)
{
    struct progress *p = ud;
    double now = mono_s();
    if (!p->tty || (now - p->last_draw < 0.25 && done < size))
        return;
    p->last_draw = now;
    double el = now - p->start, rate = el > 0 ? (double)(done - p->from) / el : 0;
    char d[32], t[32], rt[32], eta[32] = "";
    fmt_bytes(d, sizeof(d), (double)done);
    fmt_bytes(t, sizeof(t), (double)size);
    fmt_bytes(rt, sizeof(rt), rate);
    int r = 0;
    if (rate > 0 && done < size) {
        double left = (double)(size - done) / rate;
        r = snprintf(eta, sizeof(eta), ", %um%02us left", (unsigned)(left / 60),
                     (unsigned)left % 60);
    }
    (void)r;
    printf("\ruploading %s: %s of %s (%.0f%%), %s/s%s\033[K", p->release, d, t,
           size ? 100.0 * (double)done / (double)size : 100.0, rt, eta);
    fflush(stdout);
    p->drawn = true;
}

static void on_throttled(uint64_t at, double bytes_per_s, double msgs_per_s, void *ud)
{
    struct progress *p = ud;
    if (p->drawn) {
        printf("\n");
        fflush(stdout);
        p->drawn = false;
    }
    fprintf(stderr,
            "upkeep release import: throttled by the broker's rate limit at byte %llu (it refused "
            "a chunk); sending again from there at most %.0f bytes/s. Set --bytes-per-second "
            "and --messages-per-second to the broker's rate_limits.operator\n",
            (unsigned long long)at, bytes_per_s);
    (void)msgs_per_s;
}

static int upload_bundle(const upk_client_cfg *cfg, const char *bundle_path,
                         const struct import_opts *io)
{
    char *text = NULL;
    size_t len = 0;
    int rc = UPK_EXIT_FAIL;
    cJSON *b = NULL, *args = NULL, *data = NULL;
    upk_client *c = NULL;
    int fd = -1;
    char why[512];
    if (upk_fs_read(bundle_path, BUNDLE_MAX, &text, &len) != UPK_OK) {
        fprintf(stderr, "upkeep release import: cannot read bundle %s: %s\n", bundle_path,
                strerror(errno));
        return UPK_EXIT_FAIL;
    }
    b = cJSON_ParseWithLength(text, len);
    const cJSON *man = cJSON_GetObjectItem(b, "manifest"), *sig = cJSON_GetObjectItem(b, "sig"),
                *kid = cJSON_GetObjectItem(b, "key_id"), *art = cJSON_GetObjectItem(b, "artifact");
    if (!cJSON_IsString(man) || !cJSON_IsString(sig) || !cJSON_IsString(kid) ||
        !cJSON_IsString(art)) {
        fprintf(stderr,
                "upkeep release import: %s is not a release bundle (make one with `upkeep "
                "release create`)\n",
                bundle_path);
        goto out;
    }
    upk_manifest m;
    if (upk_manifest_decode(man->valuestring, strlen(man->valuestring), &m) != UPK_OK) {
        fprintf(stderr, "upkeep release import: the bundle's manifest is malformed\n");
        goto out;
    }
    char apath[PATH_MAX];
    if (!find_artifact(bundle_path, art->valuestring, io->artifact, apath, sizeof(apath))) {
        fprintf(stderr, "upkeep release import: the artifact path is too long\n");
        goto out;
    }
    fd = open(apath, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr,
                "upkeep release import: cannot open artifact %s: %s (put the artifact beside "
                "the bundle, or name it with --artifact FILE)\n",
                apath, strerror(errno));
        goto out;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || (uint64_t)st.st_size != m.size) {
        fprintf(stderr,
                "upkeep release import: artifact %s is %lld bytes, the signed manifest says %llu: "
                "not the file this bundle was made for\n",
                apath, (long long)st.st_size, (unsigned long long)m.size);
        goto out;
    }
    if ((args = cJSON_CreateObject()) == NULL)
        goto out;
    cJSON_AddStringToObject(args, "manifest", man->valuestring);
    cJSON_AddStringToObject(args, "sig", sig->valuestring);
    cJSON_AddStringToObject(args, "key_id", kid->valuestring);
    if (io->id != NULL)
        cJSON_AddStringToObject(args, "id", io->id);
    upk_err err = upk_client_connect(cfg, &c, why, sizeof(why));
    if (err != UPK_OK) {
        fprintf(stderr, "upkeep: %s\n", why);
        rc = upk_client_exit_code(err);
        goto out;
    }
    if ((err = upk_client_call(c, "release.upload.begin", args, &data, why, sizeof(why))) !=
        UPK_OK) {
        fprintf(stderr, "upkeep release import: %s (%s)\n", why, upk_err_str(err));
        rc = upk_client_exit_code(err);
        goto out;
    }
    char upload[UPK_ID_MAX + 1], release[UPK_ID_MAX + 1];
    int r = snprintf(upload, sizeof(upload), "%s",
                     cJSON_GetStringValue(cJSON_GetObjectItem(data, "upload")));
    r = snprintf(release, sizeof(release), "%s",
                 cJSON_GetStringValue(cJSON_GetObjectItem(data, "release")));
    (void)r;
    double chunk_max = cJSON_GetNumberValue(cJSON_GetObjectItem(data, "chunk_max"));
    double offset = cJSON_GetNumberValue(cJSON_GetObjectItem(data, "offset"));
    cJSON_Delete(data);
    data = NULL;
    size_t chunk = UPK_UPLOAD_CHUNK_MAX;
    if (chunk_max >= 1 && chunk_max < (double)chunk)
        chunk = (size_t)chunk_max; /* an older controller takes smaller chunks */
    if (!(offset >= 0) || offset > (double)m.size)
        offset = 0; /* an older controller: no offset, a new upload */
    if (offset > 0)
        printf("resuming the upload of %s at byte %.0f of %llu\n", release, offset,
               (unsigned long long)m.size);
    struct progress p = {.release = release,
                         .tty = isatty(STDOUT_FILENO) == 1,
                         .start = mono_s(),
                         .from = (uint64_t)offset};
    upk_upload_opts uo = {.upload_id = upload,
                          .fd = fd,
                          .size = m.size,
                          .offset = (uint64_t)offset,
                          .chunk = chunk,
                          .msgs_per_s = io->msgs_per_s,
                          .bytes_per_s = io->bytes_per_s,
                          .window = UPK_UPLOAD_WINDOW_DEFAULT,
                          .resend_ms = UPK_UPLOAD_RESEND_MS,
                          .timeout_ms = cfg->timeout_ms,
                          .on_progress = on_progress,
                          .on_throttled = on_throttled,
                          .ud = &p};
    upk_upload_stats us;
    err = upk_upload_send(c, &uo, &us, why, sizeof(why));
    if (p.drawn)
        printf("\n");
    if (err != UPK_OK) {
        fflush(stdout);
        fprintf(stderr, "upkeep release import: upload of %s stopped at byte %llu: %s (%s)\n",
                release, (unsigned long long)us.done, why, upk_err_str(err));
        rc = upk_client_exit_code(err);
        goto out;
    }
    double secs = mono_s() - p.start;
    cJSON *a = cJSON_CreateObject();
    if (a == NULL)
        goto out;
    cJSON_AddStringToObject(a, "upload", upload);
    err = upk_client_call(c, "release.upload.end", a, &data, why, sizeof(why));
    cJSON_Delete(a);
    if (err != UPK_OK) {
        fprintf(stderr, "upkeep release import: %s (%s)\n", why, upk_err_str(err));
        rc = upk_client_exit_code(err);
        goto out;
    }
    char sent[32], rate[32];
    fmt_bytes(sent, sizeof(sent), (double)(m.size - (uint64_t)offset));
    fmt_bytes(rate, sizeof(rate), secs > 0 ? (double)(m.size - (uint64_t)offset) / secs : 0);
    printf("imported release %s (sha256 %s)\n", release,
           cJSON_GetStringValue(cJSON_GetObjectItem(data, "sha256")));
    printf("sent %s in %.1f s (%s/s), %llu chunks, %llu sent again, %llu refused by the "
           "broker\n",
           sent, secs, rate, (unsigned long long)us.chunks, (unsigned long long)us.resent,
           (unsigned long long)us.throttled);
    rc = UPK_EXIT_OK;
out:
    if (fd >= 0)
        close(fd);
    upk_client_close(c);
    cJSON_Delete(data);
    cJSON_Delete(args);
    cJSON_Delete(b);
    free(text);
    return rc;
}

/* ---- create */

static bool parse_when(const char *s, int64_t now, int64_t *out)
{
    uint32_t secs;
    if (upk_time_parse(s, out) == UPK_OK)
        return true;
    if (upk_engine_parse_duration(s, &secs) == UPK_OK && secs > 0) {
        *out = now + secs;
        return true;
    }
    return false;
}

static int write_file(const char *path, const void *data, size_t len)
{
    errno = 0;
    if (upk_fs_write_atomic(path, data, len) != UPK_OK) {
        fprintf(stderr, "upkeep release create: cannot write %s: %s\n", path,
                errno != 0 ? strerror(errno) : "I/O error");
        return -1;
    }
    return 0;
}

/* The path of file (absolute, resolved) relative to the folder dir
 * (absolute, resolved), e.g. "../fw.bin"; false when out is too small. */
static bool rel_path(const char *dir, const char *file, char *out, size_t cap)
{
    size_t common = 0, i = 0;
    /* The longest common prefix that ends at a '/' boundary of both. */
    while (dir[i] != '\0' && dir[i] == file[i]) {
        i++;
        if (file[i] == '/' && (dir[i] == '/' || dir[i] == '\0'))
            common = i;
    }
    if (dir[i] == '\0' && file[i] == '/')
        common = i;
    if (strcmp(dir, "/") == 0)
        common = 0;
    size_t n = 0;
    const char *rest = dir + common;
    while (*rest == '/')
        rest++;
    while (*rest != '\0') {
        if (n + 3 >= cap)
            return false;
        memcpy(out + n, "../", 3);
        n += 3;
        const char *sl = strchr(rest, '/');
        rest = sl ? sl + 1 : rest + strlen(rest);
        while (*rest == '/')
            rest++;
    }
    const char *tail = file + common;
    while (*tail == '/')
        tail++;
    int r = snprintf(out + n, cap - n, "%s", tail);
    return r >= 0 && (size_t)r < cap - n;
}

static int cmd_create(int argc, char **argv)
{
    enum {
        O_NAME = 1,
        O_VERSION,
        O_SECVER,
        O_HW,
        O_MODULE,
        O_EXPIRES,
        O_KEY,
        O_DELTA,
        O_DELTA_FROM,
        O_OUT,
        O_UPLOAD,
        O_SUPPORT,
        O_DELIVERY,
        O_NOTICE,
        O_CONTACT,
        O_ID,
        O_BPS,
        O_MPS
    };
    static const struct option opts[] = {{"name", required_argument, NULL, O_NAME},
                                         {"version", required_argument, NULL, O_VERSION},
                                         {"security-version", required_argument, NULL, O_SECVER},
                                         {"hw", required_argument, NULL, O_HW},
                                         {"module", required_argument, NULL, O_MODULE},
                                         {"expires", required_argument, NULL, O_EXPIRES},
                                         {"key", required_argument, NULL, O_KEY},
                                         {"delta", no_argument, NULL, O_DELTA},
                                         {"delta-from", required_argument, NULL, O_DELTA_FROM},
                                         {"out", required_argument, NULL, O_OUT},
                                         {"upload", no_argument, NULL, O_UPLOAD},
                                         {"support-until", required_argument, NULL, O_SUPPORT},
                                         {"delivery", required_argument, NULL, O_DELIVERY},
                                         {"notice", required_argument, NULL, O_NOTICE},
                                         {"contact", required_argument, NULL, O_CONTACT},
                                         {"id", required_argument, NULL, O_ID},
                                         {"bytes-per-second", required_argument, NULL, O_BPS},
                                         {"messages-per-second", required_argument, NULL, O_MPS},
                                         {"help", no_argument, NULL, 'h'},
                                         UPK_CLIENT_LONG_OPTS,
                                         {0}};
    upk_manifest m;
    memset(&m, 0, sizeof(m));
    upk_client_cfg cfg;
    upk_client_cfg_init(&cfg);
    struct import_opts io;
    import_opts_init(&io, &cfg);
    const char *keypath = NULL, *outdir = ".", *expires = NULL, *id = NULL, *delta_from = NULL;
    bool delta = false, upload = false, have_secver = false;
    int64_t now = (int64_t)time(NULL);
    int c, r;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case O_NAME:
            r = snprintf(m.name, sizeof(m.name), "%s", optarg);
            break;
        case O_VERSION:
            r = snprintf(m.version, sizeof(m.version), "%s", optarg);
            break;
        case O_SECVER: {
            char *end = NULL;
            errno = 0;
            unsigned long long v = strtoull(optarg, &end, 10);
            if (end == optarg || *end != '\0' || errno != 0 || optarg[0] == '-') {
                fprintf(stderr, "upkeep release create: --security-version takes a number\n");
                return UPK_EXIT_USAGE;
            }
            m.security_version = v;
            have_secver = true;
            break;
        }
        case O_HW: {
            /* Repeatable, and comma-separated lists too. */
            const char *p = optarg;
            while (*p != '\0') {
                const char *comma = strchr(p, ',');
                size_t len = comma ? (size_t)(comma - p) : strlen(p);
                if (m.hw_count >= UPK_HW_MAX || len == 0 || len > UPK_ID_MAX) {
                    fprintf(stderr, "upkeep release create: bad --hw list (at most %d ids)\n",
                            UPK_HW_MAX);
                    return UPK_EXIT_USAGE;
                }
                memcpy(m.hw[m.hw_count], p, len);
                m.hw[m.hw_count][len] = '\0';
                m.hw_count++;
                p = comma ? comma + 1 : p + len;
            }
            break;
        }
        case O_MODULE:
            r = snprintf(m.module, sizeof(m.module), "%s", optarg);
            break;
        case O_EXPIRES:
            expires = optarg;
            break;
        case O_KEY:
            keypath = optarg;
            break;
        case O_DELTA:
            delta = true;
            break;
        case O_DELTA_FROM:
            delta_from = optarg;
            break;
        case O_OUT:
            outdir = optarg;
            break;
        case O_UPLOAD:
            upload = true;
            break;
        case O_SUPPORT:
            if (upk_time_parse(optarg, &m.support.security_until) != UPK_OK) {
                fprintf(stderr, "upkeep release create: --support-until takes a date\n");
                return UPK_EXIT_USAGE;
            }
            m.support.present = true;
            break;
        case O_DELIVERY:
            r = snprintf(m.support.delivery, sizeof(m.support.delivery), "%s", optarg);
            break;
        case O_NOTICE:
            r = snprintf(m.support.notice, sizeof(m.support.notice), "%s", optarg);
            break;
        case O_CONTACT:
            r = snprintf(m.support.contact, sizeof(m.support.contact), "%s", optarg);
            break;
        case O_ID:
            id = optarg;
            break;
        case O_BPS:
            if (!parse_rate("--bytes-per-second", optarg, 1e12, &io.bytes_per_s))
                return UPK_EXIT_USAGE;
            break;
        case O_MPS:
            if (!parse_rate("--messages-per-second", optarg, 1e9, &io.msgs_per_s))
                return UPK_EXIT_USAGE;
            break;
        case 'h':
            usage(stdout);
            return UPK_EXIT_OK;
        default:
            if (c >= UPK_CLIENT_OPT_BROKER && upk_client_cfg_opt(&cfg, c, optarg))
                break;
            usage(stderr);
            return UPK_EXIT_USAGE;
        }
    }
    (void)r;
    if (optind + 1 != argc) {
        fprintf(stderr, "upkeep release create: give exactly one ARTIFACT file\n");
        return UPK_EXIT_USAGE;
    }
    const char *artifact = argv[optind];
    char patch_path[PATH_MAX];
    const char *missing = m.name[0] == '\0'      ? "--name"
                          : m.version[0] == '\0' ? "--version"
                          : !have_secver         ? "--security-version"
                          : m.hw_count == 0      ? "--hw"
                          : m.module[0] == '\0'  ? "--module"
                          : expires == NULL      ? "--expires"
                          : keypath == NULL      ? "--key"
                                                 : NULL;
    if (missing != NULL) {
        fprintf(stderr, "upkeep release create: %s is required (see --help)\n", missing);
        return UPK_EXIT_USAGE;
    }
    if (m.support.present && m.support.delivery[0] == '\0')
        r = snprintf(m.support.delivery, sizeof(m.support.delivery), "automatic");
    m.created = now;
    if (!parse_when(expires, now, &m.expires) || m.expires <= now) {
        fprintf(stderr, "upkeep release create: --expires must be a future date (2027-01-01) or a "
                        "duration (365d)\n");
        return UPK_EXIT_USAGE;
    }
    struct stat ost;
    errno = 0;
    if (upk_fs_mkdirs(outdir) != UPK_OK) {
        int e = errno;
        fprintf(stderr, "upkeep release create: cannot make the --out folder %s: %s\n", outdir,
                stat(outdir, &ost) == 0 && !S_ISDIR(ost.st_mode) ? "it is not a folder"
                : e != 0                                         ? strerror(e)
                                                                 : "I/O error");
        return UPK_EXIT_FAIL;
    }
    if (delta_from != NULL) {
        if (delta) {
            fprintf(stderr, "upkeep release create: give either --delta (ARTIFACT is a patch) or "
                            "--delta-from OLD (ARTIFACT is the new image), not both\n");
            return UPK_EXIT_USAGE;
        }
#ifdef UPK_HAVE_DELTA
        /* ARTIFACT is the new image: make the patch from OLD beside the bundle
         * and release the patch. */
        r = snprintf(patch_path, sizeof(patch_path), "%s/%s-%s.patch", outdir, m.name, m.version);
        if (r < 0 || (size_t)r >= sizeof(patch_path)) {
            fprintf(stderr, "upkeep release create: --out path is too long\n");
            return UPK_EXIT_USAGE;
        }
        upk_err derr = upk_delta_make(delta_from, artifact, patch_path);
        if (derr != UPK_OK) {
            fprintf(stderr, "upkeep release create: cannot make a patch from %s to %s: %s (%s)\n",
                    delta_from, artifact, upk_err_str(derr), upk_err_msg(derr));
            return UPK_EXIT_FAIL;
        }
        artifact = patch_path;
        delta = true;
#else
        fprintf(stderr, "upkeep release create: this build has no delta support\n");
        return UPK_EXIT_FAIL;
#endif
    }
    errno = 0;
    if (upk_fs_sha256(artifact, m.sha256, &m.size) != UPK_OK) {
        fprintf(stderr, "upkeep release create: cannot read %s: %s\n", artifact,
                errno != 0 ? strerror(errno) : "I/O error");
        return UPK_EXIT_FAIL;
    }
    if (delta) {
#ifdef UPK_HAVE_DELTA
        upk_delta_info info;
        if (upk_delta_read_info(artifact, &info) != UPK_OK) {
            fprintf(stderr, "upkeep release create: %s is not a patch from `upkeep delta make`\n",
                    artifact);
            return UPK_EXIT_FAIL;
        }
        m.type = UPK_RELEASE_DELTA;
        m.target_size = info.new_size;
        memcpy(m.target_sha256, info.new_sha256, UPK_SHA256_LEN);
        memcpy(m.base_sha256, info.old_sha256, UPK_SHA256_LEN);
#else
        fprintf(stderr, "upkeep release create: this build has no delta support\n");
        return UPK_EXIT_FAIL;
#endif
    } else {
        m.type = UPK_RELEASE_FULL;
        m.target_size = m.size;
        memcpy(m.target_sha256, m.sha256, UPK_SHA256_LEN);
    }
    char *pem = NULL, *json = NULL, *bundle = NULL;
    size_t pemlen = 0, jlen = 0;
    upk_key *key = NULL;
    int rc = UPK_EXIT_FAIL;
    if (upk_fs_read(keypath, UPK_KEY_PEM_MAX, &pem, &pemlen) != UPK_OK ||
        upk_key_load_pem(pem, pemlen, &key) != UPK_OK || !upk_key_has_private(key)) {
        fprintf(stderr, "upkeep release create: %s is not a private key from `upkeep keygen`\n",
                keypath);
        goto out;
    }
    upk_err err = upk_manifest_encode(&m, &json, &jlen);
    if (err != UPK_OK) {
        fprintf(stderr,
                "upkeep release create: the manifest is not valid (%s): check that --name, "
                "--hw and --module are ids and --version has no spaces\n",
                upk_err_str(err));
        goto out;
    }
    uint8_t sig[UPK_SIG_MAX];
    size_t siglen = 0;
    char sigb64[UPK_SIG_MAX * 2];
    size_t b64len = 0;
    if (upk_manifest_sign(key, json, jlen, sig, &siglen) != UPK_OK ||
        upk_base64_encode(sig, siglen, sigb64, sizeof(sigb64), &b64len) != UPK_OK) {
        fprintf(stderr, "upkeep release create: signing failed\n");
        goto out;
    }
    char abs_art[PATH_MAX], abs_out[PATH_MAX], rel_art[PATH_MAX];
    if (realpath(artifact, abs_art) == NULL || realpath(outdir, abs_out) == NULL) {
        fprintf(stderr, "upkeep release create: cannot resolve %s or %s: %s\n", artifact, outdir,
                strerror(errno));
        goto out;
    }
    /* The bundle names its artifact relative to its own folder, never by an
     * absolute path: signed offline, imported elsewhere. */
    if (!rel_path(abs_out, abs_art, rel_art, sizeof(rel_art))) {
        fprintf(stderr, "upkeep release create: the artifact path is too long\n");
        goto out;
    }
    cJSON *b = cJSON_CreateObject();
    if (b == NULL)
        goto out;
    cJSON_AddNumberToObject(b, "v", 1);
    cJSON_AddStringToObject(b, "manifest", json);
    cJSON_AddStringToObject(b, "sig", sigb64);
    cJSON_AddStringToObject(b, "key_id", upk_key_id(key));
    cJSON_AddStringToObject(b, "artifact", rel_art);
    bundle = cJSON_Print(b);
    cJSON_Delete(b);
    if (bundle == NULL)
        goto out;
    char path[PATH_MAX + 32], base[PATH_MAX];
    r = snprintf(base, sizeof(base), "%s/%s-%s", outdir, m.name, m.version);
    r = snprintf(path, sizeof(path), "%s.manifest.json", base);
    if (write_file(path, json, jlen) != 0)
        goto out;
    r = snprintf(path, sizeof(path), "%s.manifest.sig", base);
    if (write_file(path, sig, siglen) != 0)
        goto out;
    r = snprintf(path, sizeof(path), "%s.release.json", base);
    if (write_file(path, bundle, strlen(bundle)) != 0)
        goto out;
    char hex[UPK_SHA256_HEX_LEN + 1];
    if (upk_hex_encode(m.sha256, UPK_SHA256_LEN, hex, sizeof(hex)) != UPK_OK)
        goto out;
    printf("release bundle: %s\nrelease:        %s-%s (%s, security_version %llu)\n"
           "artifact:       %s (%llu bytes, sha256 %s)\nsigned by key:  %s\n",
           path, m.name, m.version, delta ? "delta" : "full",
           (unsigned long long)m.security_version, abs_art, (unsigned long long)m.size, hex,
           upk_key_id(key));
    rc = UPK_EXIT_OK;
    if (upload) {
        io.id = id;
        rc = upload_bundle(&cfg, path, &io);
    }
out:
    if (pem != NULL) {
        memset(pem, 0, pemlen);
        free(pem);
    }
    upk_key_free(key);
    free(json);
    free(bundle);
    return rc;
}

/* ---- import, list, show */

static int cmd_remote(int argc, char **argv, int which)
{
    static const struct option opts[] = {{"json", no_argument, NULL, 'j'},
                                         {"id", required_argument, NULL, 'i'},
                                         {"artifact", required_argument, NULL, 'a'},
                                         {"bytes-per-second", required_argument, NULL, 'B'},
                                         {"messages-per-second", required_argument, NULL, 'M'},
                                         {"help", no_argument, NULL, 'h'},
                                         UPK_CLIENT_LONG_OPTS,
                                         {0}};
    upk_client_cfg cfg;
    upk_client_cfg_init(&cfg);
    struct import_opts io;
    import_opts_init(&io, &cfg);
    bool json = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == 'j')
            json = true;
        else if (c == 'i' || c == 'a' || c == 'B' || c == 'M') {
            if (which != 0) {
                fprintf(stderr, "upkeep release: --%s is an option of `release import`\n",
                        c == 'i'   ? "id"
                        : c == 'a' ? "artifact"
                        : c == 'B' ? "bytes-per-second"
                                   : "messages-per-second");
                return UPK_EXIT_USAGE;
            }
            if (c == 'i')
                io.id = optarg;
            else if (c == 'a')
                io.artifact = optarg;
            else if (c == 'B' && !parse_rate("--bytes-per-second", optarg, 1e12, &io.bytes_per_s))
                return UPK_EXIT_USAGE;
            else if (c == 'M' && !parse_rate("--messages-per-second", optarg, 1e9, &io.msgs_per_s))
                return UPK_EXIT_USAGE;
        } else if (c == 'h') {
            usage(stdout);
            return UPK_EXIT_OK;
        } else if (!(c >= UPK_CLIENT_OPT_BROKER && upk_client_cfg_opt(&cfg, c, optarg))) {
            usage(stderr);
            return UPK_EXIT_USAGE;
        }
    }
    int want = which == 1 ? 0 : 1; /* list takes no operand */
    if (argc - optind != want) {
        fprintf(stderr, "upkeep release: %s\n\n",
                want == 0              ? "list takes no operand"
                : argc - optind < want ? "the operand is missing (a bundle file or release id)"
                                       : "give one operand");
        usage(stderr);
        return UPK_EXIT_USAGE;
    }
    if (which == 0)
        return upload_bundle(&cfg, argv[optind], &io);
    cJSON *args = cJSON_CreateObject(), *data = NULL;
    if (args == NULL)
        return UPK_EXIT_FAIL;
    if (which == 2)
        cJSON_AddStringToObject(args, "id", argv[optind]);
    int rc = upk_cli_call(&cfg, which == 1 ? "release.list" : "release.show", args, &data);
    cJSON_Delete(args);
    if (rc != UPK_EXIT_OK)
        return rc;
    if (json) {
        upk_json_print(stdout, data);
    } else if (which == 1) {
        static const upk_col cols[] = {{"id", "ID", UPK_COL_STR},
                                       {"version", "VERSION", UPK_COL_STR},
                                       {"security_version", "SECVER", UPK_COL_NUM},
                                       {"type", "TYPE", UPK_COL_STR},
                                       {"hw", "HW", UPK_COL_STR},
                                       {"size", "SIZE", UPK_COL_NUM},
                                       {"expires", "EXPIRES", UPK_COL_TIME_S},
                                       {"imported_by", "IMPORTED BY", UPK_COL_STR}};
        upk_table_print(stdout, data, cols, sizeof(cols) / sizeof(cols[0]));
    } else {
        static const upk_col cols[] = {{"id", "id:", UPK_COL_STR},
                                       {"name", "name:", UPK_COL_STR},
                                       {"version", "version:", UPK_COL_STR},
                                       {"security_version", "security_version:", UPK_COL_NUM},
                                       {"type", "type:", UPK_COL_STR},
                                       {"module", "module:", UPK_COL_STR},
                                       {"hw", "hardware:", UPK_COL_STR},
                                       {"size", "size:", UPK_COL_NUM},
                                       {"sha256", "sha256:", UPK_COL_STR},
                                       {"key_id", "key id:", UPK_COL_STR},
                                       {"created", "created:", UPK_COL_TIME_S},
                                       {"expires", "expires:", UPK_COL_TIME_S},
                                       {"imported_ms", "imported:", UPK_COL_TIME_MS},
                                       {"imported_by", "imported by:", UPK_COL_STR},
                                       {"desired_by", "desired by:", UPK_COL_NUM}};
        upk_kv_print(stdout, data, cols, sizeof(cols) / sizeof(cols[0]));
    }
    cJSON_Delete(data);
    return UPK_EXIT_OK;
}

int upk_cli_release(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? UPK_EXIT_USAGE : UPK_EXIT_OK;
    }
    if (strcmp(argv[1], "create") == 0)
        return cmd_create(argc - 1, argv + 1);
    if (strcmp(argv[1], "import") == 0)
        return cmd_remote(argc - 1, argv + 1, 0);
    if (strcmp(argv[1], "list") == 0)
        return cmd_remote(argc - 1, argv + 1, 1);
    if (strcmp(argv[1], "show") == 0)
        return cmd_remote(argc - 1, argv + 1, 2);
    fprintf(stderr, "upkeep release: unknown subcommand '%s'; see `upkeep release --help`\n",
            argv[1]);
    return UPK_EXIT_USAGE;
}
