/* common/fileutil.c - see fileutil.h. */
#define _GNU_SOURCE
#include "common/fileutil.h"
#include "common/cleanup.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int cq_open_private(const char *path, const char *what, struct cq_error *err)
{
    cq_autoclose int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return cq_error_sys(err, errno, "open %s %s", what, path);
    struct stat st;
    if (fstat(fd, &st) < 0)
        return cq_error_sys(err, errno, "stat %s", path);
    if ((st.st_mode & 077) != 0)
        return cq_error_set(err, CQ_EINVALID,
                            "%s %s is readable by others (mode %03o): chmod 600 it", what, path,
                            (unsigned)(st.st_mode & 0777));
    int out = fd;
    fd = -1;
    return out;
}

int cq_write_file_at(int dirfd, const char *path, const char *text, struct cq_error *err)
{
    cq_autoclose int fd = openat(dirfd, path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return cq_error_sys(err, errno, "open %s", path);
    size_t len = strlen(text);
    ssize_t n = write(fd, text, len);
    if (n < 0)
        return cq_error_sys(err, errno, "write '%s' to %s", text, path);
    if ((size_t)n != len)
        return cq_error_set(err, EIO, "short write of '%s' to %s", text, path);
    return 0;
}

ssize_t cq_read_file_at(int dirfd, const char *path, char *buf, size_t len, struct cq_error *err)
{
    cq_autoclose int fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return cq_error_sys(err, errno, "open %s", path);
    size_t used = 0;
    while (used + 1 < len) {
        ssize_t n = read(fd, buf + used, len - 1 - used);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return cq_error_sys(err, errno, "read %s", path);
        }
        if (n == 0)
            break;
        used += (size_t)n;
    }
    buf[used] = '\0';
    return (ssize_t)used;
}

/* The first buffer: a regular file's size (and one byte to see its end), else enough
 * for most inputs; never more than limit + 1, the most a call ever holds. */
static size_t first_capacity(int fd, size_t most)
{
    struct stat st;
    size_t cap = 65536;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0 &&
        (uint64_t)st.st_size < SIZE_MAX - 1)
        cap = (size_t)st.st_size + 1;
    return cap < most ? cap : most;
}

int cq_read_fd_limit(int fd, uint64_t limit, uint8_t **data, size_t *len, struct cq_error *err)
{
    /* Reading one byte past the limit tells a file of exactly limit bytes from a
     * larger one. */
    size_t most = limit < SIZE_MAX - 2 ? (size_t)limit + 1 : SIZE_MAX - 2;
    size_t cap = first_capacity(fd, most), used = 0;
    cq_autofree uint8_t *buf = malloc(cap + 1);
    if (buf == NULL)
        return cq_error_sys(err, ENOMEM, "allocate %zu bytes", cap + 1);
    for (;;) {
        if (used == cap) {
            size_t bigger_cap = cap < most / 2 ? cap * 2 : most;
            uint8_t *bigger = realloc(buf, bigger_cap + 1);
            if (bigger == NULL)
                return cq_error_sys(err, ENOMEM, "allocate %zu bytes", bigger_cap + 1);
            buf = bigger;
            cap = bigger_cap;
        }
        ssize_t n = read(fd, buf + used, cap - used);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return cq_error_sys(err, errno, "read");
        if (n == 0)
            break;
        used += (size_t)n;
        if (used > limit)
            return cq_error_set(err, EFBIG, "more than %llu bytes", (unsigned long long)limit);
    }
    buf[used] = '\0';
    *len = used;
    *data = cq_steal_ptr(&buf);
    return 0;
}

int cq_keyed_u64(const char *text, const char *key, uint64_t *out)
{
    size_t klen = strlen(key);
    for (const char *line = text; line != NULL && *line != '\0';) {
        if (strncmp(line, key, klen) == 0 && line[klen] == ' ') {
            *out = strtoull(line + klen + 1, NULL, 10);
            return 0;
        }
        line = strchr(line, '\n');
        if (line != NULL)
            line++;
    }
    return -1;
}
