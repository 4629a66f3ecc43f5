/* File helpers (see fs.h): bounded reads and power-safe atomic replacement. */
#include "upkeep/fs.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "upkeep/hash.h"

upk_err upk_fs_read(const char *path, size_t max, char **out, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? UPK_E_NOT_FOUND : UPK_E_IO;
    upk_err err = UPK_E_IO;
    char *buf = NULL;
    struct stat st;
    if (fstat(fd, &st) != 0)
        goto out_close;
    if (st.st_size < 0 || (uint64_t)st.st_size > max) {
        err = UPK_E_MSG_TOO_LARGE;
        goto out_close;
    }
    size_t size = (size_t)st.st_size;
    buf = malloc(size + 1);
    if (buf == NULL) {
        err = UPK_E_NOMEM;
        goto out_close;
    }
    size_t got = 0;
    while (got < size) {
        ssize_t r = read(fd, buf + got, size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            goto out_free;
        got += (size_t)r;
    }
    buf[size] = '\0';
    *out = buf;
    *len = size;
    close(fd);
    return UPK_OK;
out_free:
    free(buf);
out_close:
    close(fd);
    return err;
}

static upk_err write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return UPK_E_IO;
        p += w;
        len -= (size_t)w;
    }
    return UPK_OK;
}

upk_err upk_fs_sync_dir_of(const char *path)
{
    char dir[PATH_MAX];
    size_t n = strnlen(path, sizeof(dir));
    if (n >= sizeof(dir))
        return UPK_E_INVALID_ARG;
    memcpy(dir, path, n + 1);
    char *slash = strrchr(dir, '/');
    if (slash == NULL) {
        dir[0] = '.';
        dir[1] = '\0';
    } else if (slash == dir) {
        dir[1] = '\0';
    } else {
        *slash = '\0';
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return UPK_E_IO;
    int rc = fsync(fd);
    close(fd);
    return rc == 0 ? UPK_OK : UPK_E_IO;
}

upk_err upk_fs_write_atomic(const char *path, const void *data, size_t len)
{
    char tmp[PATH_MAX];
    int n = snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    if (n < 0 || (size_t)n >= sizeof(tmp))
        return UPK_E_INVALID_ARG;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return UPK_E_IO;
    upk_err err = write_all(fd, data, len);
    if (err == UPK_OK && fsync(fd) != 0)
        err = UPK_E_IO;
    if (close(fd) != 0 && err == UPK_OK)
        err = UPK_E_IO;
    if (err != UPK_OK)
        goto out_unlink;
    if (rename(tmp, path) != 0) {
        err = UPK_E_IO;
        goto out_unlink;
    }
    return upk_fs_sync_dir_of(path);
out_unlink:
    (void)unlink(tmp);
    return err;
}

upk_err upk_fs_mkdirs(const char *path)
{
    char buf[PATH_MAX];
    size_t n = strnlen(path, sizeof(buf));
    if (n == 0 || n >= sizeof(buf))
        return UPK_E_INVALID_ARG;
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        char saved = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0700) != 0 && errno != EEXIST)
            return UPK_E_IO;
        buf[i] = saved;
    }
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
        return UPK_E_IO;
    return UPK_OK;
}

upk_err upk_fs_sha256(const char *path, uint8_t out[32], uint64_t *size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? UPK_E_NOT_FOUND : UPK_E_IO;
    upk_sha256 h;
    upk_sha256_init(&h);
    uint64_t total = 0;
    upk_err err = UPK_OK;
    unsigned char buf[65536];
    for (;;) {
        ssize_t r = read(fd, buf, sizeof(buf));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            err = UPK_E_IO;
            break;
        }
        if (r == 0)
            break;
        upk_sha256_update(&h, buf, (size_t)r);
        total += (uint64_t)r;
    }
    close(fd);
    if (err == UPK_OK) {
        upk_sha256_final(&h, out);
        *size = total;
    }
    upk_sha256_cleanup(&h);
    return err;
}
