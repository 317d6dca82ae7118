/* common/fileutil.h - whole-file reads and writes: small ones (cgroup and /proc files)
 * and bounded reads of a descriptor. */
#ifndef CQ_COMMON_FILEUTIL_H
#define CQ_COMMON_FILEUTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include "common/error.h"

/* Write all of text to path (relative to dirfd, or AT_FDCWD), no O_CREAT. */
int cq_write_file_at(int dirfd, const char *path, const char *text, struct cq_error *err);

/* Read up to len-1 bytes of path into buf, NUL-terminated. Returns bytes read or -1. */
ssize_t cq_read_file_at(int dirfd, const char *path, char *buf, size_t len, struct cq_error *err);

/* Read fd to its end into *data (malloc'd, caller frees; followed by a NUL byte that
 * *len does not count, so text can be used as a string). More than limit bytes is
 * refused with EFBIG: at most limit + 1 bytes are ever read or held. */
int cq_read_fd_limit(int fd, uint64_t limit, uint8_t **data, size_t *len, struct cq_error *err);

/* Opens path for reading when it is private to its owner (no group or other bits), as
 * a file of secrets must be; else an error naming it as what ("credentials file"). The
 * mode is checked on the open descriptor, so the file cannot be swapped in between.
 * Returns the descriptor or -1. */
int cq_open_private(const char *path, const char *what, struct cq_error *err);

/* Removes everything below the directory dirfd, never following a link (a link is
 * removed, not what it names) and never leaving the tree: each level is opened from
 * its parent with O_NOFOLLOW, so a directory swapped for a link mid-walk is refused
 * rather than followed. More than max_depth levels fails with ELOOP (each level holds
 * a descriptor). Goes on past entries it cannot remove; returns -1 with errno of the
 * first failure, else 0. */
int cq_remove_below(int dirfd, int max_depth);

/* Removes path and everything below it the same way (nothing there: 0). */
int cq_remove_tree(const char *path, struct cq_error *err);

/* Raises this process's soft limit on open files to its hard limit. A process that
 * holds sandboxes needs many (~11 each: the usual soft limit of 1024 would stop a
 * worker near 90 sessions); every wait in codeq is poll or epoll, never select, so
 * descriptors past 1024 are safe. Failing leaves the limit as it was. */
void cq_raise_open_files_limit(void);

/* Find "key <number>" in a "key value" per line text (cgroup stat files). */
int cq_keyed_u64(const char *text, const char *key, uint64_t *out);

#endif
