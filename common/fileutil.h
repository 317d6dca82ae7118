/* common/fileutil.h - small whole-file reads and writes (cgroup and /proc files). */
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

/* Find "key <number>" in a "key value" per line text (cgroup stat files). */
int cq_keyed_u64(const char *text, const char *key, uint64_t *out);

#endif
