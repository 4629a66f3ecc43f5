/* The data directory lock of `upkeep serve` (datalock.h). */
#include "datalock.h"

#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifdef F_OFD_SETLK
#define LOCK_CMD F_OFD_SETLK /* per open file: two opens in one process exclude each other too */
#else
#define LOCK_CMD F_SETLK
#endif

struct upk_datalock {
    int fd;
};

static void say(char *why, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void say(char *why, size_t cap, const char *fmt, ...)
{
    if (why == NULL || cap == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    int r = vsnprintf(why, cap, fmt, ap);
    va_end(ap);
    (void)r; /* a cut message still names the file first */
}

/* The pid written in the lock file, or 0. */
static long read_pid(int fd)
{
    char buf[32];
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    char *end = NULL;
    long pid = strtol(buf, &end, 10);
    return end != buf && pid > 0 ? pid : 0;
}

upk_err upk_datalock_acquire(const char *data_dir, upk_datalock **out, long *holder_pid, char *why,
                             size_t whycap)
{
    char path[4200];
    if (data_dir == NULL || out == NULL || holder_pid == NULL)
        return UPK_E_INVALID_ARG;
    *holder_pid = 0;
    int r = snprintf(path, sizeof(path), "%s/%s", data_dir, UPK_DATALOCK_NAME);
    if (r < 0 || (size_t)r >= sizeof(path)) {
        say(why, whycap, "%s: data_dir is too long", data_dir);
        return UPK_E_INVALID_ARG;
    }
    if (mkdir(data_dir, 0700) != 0 && errno != EEXIST) {
        say(why, whycap, "cannot create the data directory %s: %s", data_dir, strerror(errno));
        return UPK_E_IO;
    }
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        say(why, whycap, "cannot open the lock file %s: %s", path, strerror(errno));
        return UPK_E_IO;
    }
    struct flock fl;
    memset(&fl, 0, sizeof(fl));
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    if (fcntl(fd, LOCK_CMD, &fl) != 0) {
        int e = errno;
        if (e == EAGAIN || e == EACCES) {
            *holder_pid = read_pid(fd);
            close(fd);
            say(why, whycap, "%s is held by pid %ld", path, *holder_pid);
            return UPK_E_BUSY;
        }
        close(fd);
        say(why, whycap, "cannot lock %s: %s", path, strerror(e));
        return UPK_E_IO;
    }
    char pid[32];
    r = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || r <= 0 || pwrite(fd, pid, (size_t)r, 0) != (ssize_t)r) {
        int e = errno;
        close(fd);
        say(why, whycap, "cannot write the lock file %s: %s", path, strerror(e));
        return UPK_E_IO;
    }
    upk_datalock *l = calloc(1, sizeof(*l));
    if (l == NULL) {
        close(fd);
        return UPK_E_NOMEM;
    }
    l->fd = fd;
    *out = l;
    return UPK_OK;
}

void upk_datalock_release(upk_datalock *l)
{
    if (l == NULL)
        return;
    /* Clear the pid first: a stale pid must never be reported as a holder. */
    if (ftruncate(l->fd, 0) != 0) {
        /* Harmless: the lock, not the pid, decides; closing releases it. */
    }
    close(l->fd);
    free(l);
}
