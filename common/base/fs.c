/* fs.c: see fs.h. */
#include "fs.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

aha_status aha_read_file(const char *path, size_t max_bytes, char **out, size_t *len, aha_err *err)
{
    *out = NULL;
    if (len) *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return aha_errf(err, errno == ENOENT ? AHA_ENOTFOUND : AHA_EIO, "%s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return aha_errf(err, AHA_EIO, "%s: not a regular file", path);
    }
    if ((uint64_t)sb.st_size > max_bytes) {
        close(fd);
        return aha_errf(err, AHA_ELIMIT, "%s: %lld bytes is over the limit of %zu", path,
                        (long long)sb.st_size, max_bytes);
    }
    size_t n = (size_t)sb.st_size;
    char *buf = malloc(n + 1);
    if (!buf) {
        close(fd);
        return aha_errf(err, AHA_ENOMEM, "%s: cannot allocate %zu bytes", path, n + 1);
    }
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            free(buf);
            close(fd);
            return aha_errf(err, AHA_EIO, "%s: read failed: %s", path, r < 0 ? strerror(errno) : "short file");
        }
        got += (size_t)r;
    }
    close(fd);
    buf[n] = '\0';
    *out = buf;
    if (len) *len = n;
    return AHA_OK;
}

aha_status aha_fsync_dir_of(const char *path, aha_err *err)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", path);
    const char *dir = dirname(tmp);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return aha_errf(err, AHA_EIO, "%s: %s", dir, strerror(errno));
    int rc = fsync(fd);
    close(fd);
    if (rc != 0 && errno != EINVAL) return aha_errf(err, AHA_EIO, "fsync %s: %s", dir, strerror(errno));
    return AHA_OK;
}

aha_status aha_write_file_atomic(const char *path, const void *data, size_t len, aha_err *err)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp)
        return aha_errf(err, AHA_EINVAL, "path too long: %s", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return aha_errf(err, AHA_EIO, "%s: %s", tmp, strerror(errno));
    const char *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) {
            int e = errno;
            close(fd);
            unlink(tmp);
            return aha_errf(err, e == ENOSPC ? AHA_ELIMIT : AHA_EIO, "write %s: %s", tmp, strerror(e));
        }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) != 0) {
        int e = errno;
        close(fd);
        unlink(tmp);
        return aha_errf(err, AHA_EIO, "fsync %s: %s", tmp, strerror(e));
    }
    close(fd);
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return aha_errf(err, AHA_EIO, "rename %s -> %s: %s", tmp, path, strerror(e));
    }
    return aha_fsync_dir_of(path, err);
}

aha_status aha_mkdirs(const char *path, aha_err *err)
{
    char buf[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof buf) return aha_errf(err, AHA_EINVAL, "bad directory path '%s'", path);
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] == '/' || buf[i] == '\0') {
            char c = buf[i];
            buf[i] = '\0';
            if (mkdir(buf, 0755) != 0 && errno != EEXIST)
                return aha_errf(err, AHA_EIO, "mkdir %s: %s", buf, strerror(errno));
            buf[i] = c;
        }
    }
    if (!aha_path_is_dir(path)) return aha_errf(err, AHA_EIO, "%s exists and is not a directory", path);
    return AHA_OK;
}

bool aha_path_is_dir(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

bool aha_path_exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

aha_status aha_path_join(char *out, size_t cap, const char *a, const char *b, aha_err *err)
{
    size_t la = strlen(a);
    const char *sep = (la > 0 && a[la - 1] == '/') ? "" : "/";
    int n = snprintf(out, cap, "%s%s%s", a, sep, b);
    if (n < 0 || (size_t)n >= cap) return aha_errf(err, AHA_EINVAL, "path too long: %s/%s", a, b);
    return AHA_OK;
}

static int remove_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

aha_status aha_remove_tree(const char *path, aha_err *err)
{
    if (!aha_path_exists(path)) return AHA_OK;
    if (nftw(path, remove_cb, 16, FTW_DEPTH | FTW_PHYS) != 0)
        return aha_errf(err, AHA_EIO, "remove %s: %s", path, strerror(errno));
    return AHA_OK;
}

double aha_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

double aha_wall_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}
