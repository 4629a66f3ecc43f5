/* SHA-256 throughput and resident cost of the Debian libraries upkeep could
 * hash with (bench/hash/run.sh builds this once per library with -DUSE_*).
 * Hashes 256 MiB in CHUNK-byte updates, best of 3, and prints MB/s; the
 * script reads the library's resident pages from /proc/PID/smaps while the
 * program runs. Not part of the build: a measurement tool only. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <stdint.h>
#if defined(USE_NETTLE)
#include <nettle/sha2.h>
#define NAME "nettle"
typedef struct sha256_ctx C;
static void h_init(C *c)
{
    sha256_init(c);
}
static void h_upd(C *c, const void *d, size_t n)
{
    sha256_update(c, n, d);
}
static void h_fin(C *c, uint8_t *o)
{
    sha256_digest(c, 32, o);
}
#elif defined(USE_OPENSSL)
#include <openssl/sha.h>
#define NAME "openssl SHA256_*"
typedef SHA256_CTX C;
static void h_init(C *c)
{
    SHA256_Init(c);
}
static void h_upd(C *c, const void *d, size_t n)
{
    SHA256_Update(c, d, n);
}
static void h_fin(C *c, uint8_t *o)
{
    SHA256_Final(o, c);
}
#elif defined(USE_EVP)
#include <openssl/evp.h>
#define NAME "openssl EVP"
typedef EVP_MD_CTX *C;
static void h_init(C *c)
{
    *c = EVP_MD_CTX_new();
    EVP_DigestInit_ex(*c, EVP_sha256(), NULL);
}
static void h_upd(C *c, const void *d, size_t n)
{
    EVP_DigestUpdate(*c, d, n);
}
static void h_fin(C *c, uint8_t *o)
{
    unsigned l;
    EVP_DigestFinal_ex(*c, o, &l);
    EVP_MD_CTX_free(*c);
}
#elif defined(USE_GCRYPT)
#include <gcrypt.h>
#define NAME "gcrypt"
typedef gcry_md_hd_t C;
static void h_init(C *c)
{
    static int i;
    if (!i) {
        gcry_check_version(NULL);
        gcry_control(GCRYCTL_INITIALIZATION_FINISHED, 0);
        i = 1;
    }
    gcry_md_open(c, GCRY_MD_SHA256, 0);
}
static void h_upd(C *c, const void *d, size_t n)
{
    gcry_md_write(*c, d, n);
}
static void h_fin(C *c, uint8_t *o)
{
    memcpy(o, gcry_md_read(*c, 0), 32);
    gcry_md_close(*c);
}
#elif defined(USE_MBEDTLS)
#include <mbedtls/sha256.h>
#define NAME "mbedtls"
typedef mbedtls_sha256_context C;
static void h_init(C *c)
{
    mbedtls_sha256_init(c);
    mbedtls_sha256_starts_ret(c, 0);
}
static void h_upd(C *c, const void *d, size_t n)
{
    mbedtls_sha256_update_ret(c, d, n);
}
static void h_fin(C *c, uint8_t *o)
{
    mbedtls_sha256_finish_ret(c, o);
    mbedtls_sha256_free(c);
}
#else
#error "define one of USE_NETTLE USE_OPENSSL USE_EVP USE_GCRYPT USE_MBEDTLS"
#endif
static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}
static long kib(const char *f)
{
    FILE *p = fopen("/proc/self/status", "r");
    char l[256];
    long v = -1;
    while (fgets(l, sizeof l, p))
        if (!strncmp(l, f, strlen(f)))
            v = atol(l + strlen(f) + 1);
    fclose(p);
    return v;
}
int main(int argc, char **argv)
{
    size_t total = 256u << 20, chunk = argc > 1 ? strtoul(argv[1], 0, 0) : 65536;
    long rss0 = kib("VmRSS");
    uint8_t *buf = malloc(chunk);
    memset(buf, 0x5a, chunk);
    uint8_t out[32];
    C c;
    /* warm: hash "abc" */
    h_init(&c);
    h_upd(&c, "abc", 3);
    h_fin(&c, out);
    long rss1 = kib("VmRSS");
    double best = 1e9;
    for (int r = 0; r < 3; r++) {
        double t0 = now();
        h_init(&c);
        for (size_t d = 0; d < total; d += chunk)
            h_upd(&c, buf, chunk);
        h_fin(&c, out);
        double t = now() - t0;
        if (t < best)
            best = t;
    }
    printf("%-18s chunk %6zu: %7.0f MB/s  VmRSS start %ld KiB, after first hash %ld KiB  digest "
           "%02x%02x..\n",
           NAME, chunk, total / best / 1e6, rss0, rss1, out[0], out[1]);
    return 0;
}
