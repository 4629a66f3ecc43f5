/* What the agent and its built-in modules need from a filesystem, checked at
 * start so that a module that cannot work on it is refused by name instead
 * of failing in the middle of an update (docs/agent.md, "Filesystem needs").
 * The decision is a pure function of the filesystem type and the kernel
 * version (tested directly); the probe adds a real link/symlink attempt. */
#include "agent_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/statfs.h>
#include <sys/utsname.h>
#include <unistd.h>

#define MAGIC_MSDOS 0x4d44u     /* vfat, fat: no links, rename-over not crash-atomic */
#define MAGIC_EXFAT 0x2011bab0u /* exfat: the same */

static const char *fs_name(unsigned long type)
{
    switch (type) {
    case MAGIC_MSDOS:
        return "vfat";
    case MAGIC_EXFAT:
        return "exfat";
    default:
        return NULL;
    }
}

upk_err upk__fs_verdict(unsigned long fs_type, unsigned needs, int kmajor, int kminor,
                        const char *dir, char *why, size_t cap)
{
    const char *fat = fs_name(fs_type);
    if (fat != NULL && (needs & (UPK__FS_LINK | UPK__FS_SYMLINK | UPK__FS_ATOMIC_RENAME)) != 0) {
        (void)snprintf(why, cap,
                       "%s is on %s, which has no %s and whose rename over a file is not atomic "
                       "across a power cut",
                       dir, fat,
                       (needs & UPK__FS_LINK) != 0      ? "hard links"
                       : (needs & UPK__FS_SYMLINK) != 0 ? "symbolic links"
                                                        : "links");
        return UPK_E_CONFIG_INVALID;
    }
    if ((needs & UPK__FS_SYNCFS) != 0 && (kmajor < 5 || (kmajor == 5 && kminor < 8))) {
        (void)snprintf(why, cap,
                       "Linux %d.%d: syncfs(2) before 5.8 does not report write-back errors, so "
                       "a slot written to %s could be switched to with lost data",
                       kmajor, kminor, dir);
        return UPK_E_CONFIG_INVALID;
    }
    return UPK_OK;
}

/* Tries link(2) or symlink(2) in dir with a scratch name; true when it works. */
static bool probe(const char *dir, bool hard)
{
    char a[UPK_AGENT_PATH_MAX + 32], b[UPK_AGENT_PATH_MAX + 32];
    int n1 = snprintf(a, sizeof(a), "%s/.upk-probe-%ld", dir, (long)getpid());
    int n2 = snprintf(b, sizeof(b), "%s/.upk-probe-%ld.l", dir, (long)getpid());
    if (n1 < 0 || (size_t)n1 >= sizeof(a) || n2 < 0 || (size_t)n2 >= sizeof(b))
        return false;
    (void)unlink(b);
    bool ok;
    if (hard) {
        int fd = open(a, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0)
            return false;
        close(fd);
        ok = link(a, b) == 0;
        (void)unlink(a);
    } else {
        ok = symlink(".", b) == 0;
    }
    (void)unlink(b);
    return ok;
}

upk_err upk__fs_check(const char *dir, unsigned needs, char *why, size_t cap)
{
    struct statfs sf;
    if (statfs(dir, &sf) != 0) {
        (void)snprintf(why, cap, "cannot inspect %s: %s", dir, strerror(errno));
        return UPK_E_CONFIG_INVALID;
    }
    int kmaj = 0, kmin = 0;
    struct utsname u;
    if ((needs & UPK__FS_SYNCFS) != 0 && uname(&u) == 0 &&
        sscanf(u.release, "%d.%d", &kmaj, &kmin) != 2)
        kmaj = kmin = 0;
    if ((needs & UPK__FS_SYNCFS) == 0)
        kmaj = 99;
    upk_err err = upk__fs_verdict((unsigned long)sf.f_type, needs, kmaj, kmin, dir, why, cap);
    if (err != UPK_OK)
        return err;
    if ((needs & UPK__FS_LINK) != 0 && !probe(dir, true)) {
        (void)snprintf(why, cap, "%s does not support hard links (link(2))", dir);
        return UPK_E_CONFIG_INVALID;
    }
    if ((needs & UPK__FS_SYMLINK) != 0 && !probe(dir, false)) {
        (void)snprintf(why, cap, "%s does not support symbolic links (symlink(2))", dir);
        return UPK_E_CONFIG_INVALID;
    }
    return UPK_OK;
}
