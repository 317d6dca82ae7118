/* common/fileutil.c - see fileutil.h. */
#define _GNU_SOURCE
#include "common/fileutil.h"
#include "common/cleanup.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

int cq_remove_below(int dirfd, int max_depth)
{
    if (max_depth < 0) {
        errno = ELOOP;
        return -1;
    }
    int fd = fcntl(dirfd, F_DUPFD_CLOEXEC, 3);
    if (fd < 0)
        return -1;
    DIR *d = fdopendir(fd);
    if (d == NULL) {
        close(fd);
        return -1;
    }
    /* The copy shares dirfd's offset: a walk of it before would leave this one empty. */
    rewinddir(d);
    int failed = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        struct stat st;
        if (fstatat(dirfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
            if (errno != ENOENT && failed == 0)
                failed = errno;
            continue;
        }
        if (S_ISDIR(st.st_mode)) {
            int sub = openat(dirfd, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if ((sub < 0 || cq_remove_below(sub, max_depth - 1) < 0) && failed == 0)
                failed = errno;
            if (sub >= 0)
                close(sub);
            if (unlinkat(dirfd, e->d_name, AT_REMOVEDIR) < 0 && errno != ENOENT && failed == 0)
                failed = errno;
        } else if (unlinkat(dirfd, e->d_name, 0) < 0 && errno != ENOENT && failed == 0) {
            failed = errno;
        }
    }
    closedir(d);
    if (failed != 0) {
        errno = failed;
        return -1;
    }
    return 0;
}

/* Deep enough for any tree codeq makes (package layers, a kernel's home); a deeper one
 * is someone's attack on the walk and is left for the operator. */
#define REMOVE_TREE_DEPTH 256

int cq_remove_tree(const char *path, struct cq_error *err)
{
    cq_autoclose int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return 0;
        /* Not a directory (or a link): the name alone goes. */
        if ((errno == ENOTDIR || errno == ELOOP) && (unlink(path) == 0 || errno == ENOENT))
            return 0;
        return cq_error_sys(err, errno, "remove %s", path);
    }
    if (cq_remove_below(fd, REMOVE_TREE_DEPTH) < 0)
        return cq_error_sys(err, errno, "remove what is below %s", path);
    if (rmdir(path) < 0 && errno != ENOENT)
        return cq_error_sys(err, errno, "remove %s", path);
    return 0;
}

void cq_raise_open_files_limit(void)
{
    struct rlimit lim;
    if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
        lim.rlim_cur = lim.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &lim);
    }
}

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
