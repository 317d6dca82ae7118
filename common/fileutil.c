/* common/fileutil.c - see fileutil.h. */
#define _GNU_SOURCE
#include "common/fileutil.h"
#include "common/cleanup.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
