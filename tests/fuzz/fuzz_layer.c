/* tests/fuzz/fuzz_layer.c - a layer's stream, unpacked (runtime/layer.c).
 *
 * A stream comes from the fleet's Redis, packed by another host, and is unpacked on
 * this one as root: the input is the stream, unpacked into a fresh directory per input
 * (PARENT/tree, PARENT a directory of this process's own below $TMPDIR, else /dev/shm,
 * else /tmp), removed afterwards. On tmpfs it runs about five times faster than on
 * this host's disk (docs/performance.md, "Fuzzing"). An input writes at most its own length in file
 * bytes (a file's bytes are in the stream), so scripts/fuzz's -max_len bounds the disk it takes.
 * Checked for every input (abort on breach):
 *  - nothing is written outside the tree, accepted or refused: PARENT holds only the
 *    tree, and nothing else once it is removed;
 *  - an accepted tree holds only directories, regular files and links; no setuid,
 *    setgid or sticky bit, no write bit for group or others; every link, resolved by
 *    the kernel from the tree's root with RESOLVE_BENEATH, stays in the tree;
 *  - the tree packs (cq_layer_pack_dir) into a stream that unpacks into a tree that
 *    packs to the same bytes again. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "runtime/layer.h"

#define PACK_MAX (1u << 20) /* above -max_len plus the modes a directory gains */

static const char DIGEST[] = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
static char parent[PATH_MAX];

static void check(int ok)
{
    if (!ok)
        abort();
}

static int rm_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    return type == FTW_DP ? rmdir(path) : unlink(path);
}

static void remove_tree(const char *dir)
{
    if (access(dir, F_OK) == 0)
        check(nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS) == 0);
}

/* PARENT holds exactly the names given (none: it is empty). */
static void parent_holds(const char *a, const char *b)
{
    DIR *d = opendir(parent);
    check(d != NULL);
    int seen = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        check((a != NULL && strcmp(e->d_name, a) == 0) || (b != NULL && strcmp(e->d_name, b) == 0));
        seen++;
    }
    closedir(d);
    check(seen == (a != NULL) + (b != NULL));
}

static int root_fd = -1;
static size_t root_len;

static int check_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)type;
    (void)ftw;
    check(S_ISDIR(st->st_mode) || S_ISREG(st->st_mode) || S_ISLNK(st->st_mode));
    if (!S_ISLNK(st->st_mode))
        check((st->st_mode & (S_ISUID | S_ISGID | S_ISVTX | S_IWGRP | S_IWOTH)) == 0);
    if (S_ISLNK(st->st_mode)) {
        struct open_how how = {.flags = O_PATH | O_CLOEXEC, .resolve = RESOLVE_BENEATH};
        int fd, tries = 0;
        /* EAGAIN: a rename anywhere on the host while ".." was resolved (the kernel
         * cannot tell that it did not escape then); try again. */
        do
            fd = (int)syscall(SYS_openat2, root_fd, path + root_len + 1, &how, sizeof(how));
        while (fd < 0 && errno == EAGAIN && ++tries < 1000);
        /* ENOENT: it names nothing (yet); ELOOP: links in a circle. Never EXDEV. */
        if (fd < 0 && errno != ENOENT && errno != ELOOP && errno != ENOTDIR) {
            fprintf(stderr, "fuzz_layer: the link %s: %s\n", path, strerror(errno));
            abort();
        }
        if (fd >= 0)
            close(fd);
    }
    return 0;
}

static uint8_t *pack(const char *dir, size_t *len)
{
    uint8_t *out;
    struct cq_error err;
    check(cq_layer_pack_dir(dir, DIGEST, PACK_MAX, &out, len, &err) == 0);
    return out;
}

/* At libFuzzer's exit (an abort leaves PARENT and the input's tree for a look). */
static void cleanup(void)
{
    rmdir(parent);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *tmp = getenv("TMPDIR");
    if (tmp == NULL)
        tmp = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(parent, sizeof(parent), "%s/fuzz_layer-XXXXXX", tmp);
    check(mkdtemp(parent) != NULL);
    atexit(cleanup);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char tree[PATH_MAX + 8], again[PATH_MAX + 8];
    snprintf(tree, sizeof(tree), "%s/tree", parent);
    snprintf(again, sizeof(again), "%s/again", parent);
    check(mkdir(tree, 0700) == 0);
    struct cq_error err = {0};
    int rc = cq_layer_unpack_dir(data, size, NULL, tree, &err);
    parent_holds("tree", NULL);
    if (rc < 0) {
        check(err.msg[0] != '\0');
    } else {
        root_fd = open(tree, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        check(root_fd >= 0);
        root_len = strlen(tree);
        check(nftw(tree, check_entry, 16, FTW_PHYS) == 0);
        close(root_fd);

        size_t n1, n2;
        uint8_t *first = pack(tree, &n1);
        check(mkdir(again, 0700) == 0);
        check(cq_layer_unpack_dir(first, n1, DIGEST, again, &err) == 0);
        uint8_t *second = pack(again, &n2);
        check(n1 == n2 && memcmp(first, second, n1) == 0);
        free(first);
        free(second);
        parent_holds("tree", "again");
        remove_tree(again);
    }
    remove_tree(tree);
    parent_holds(NULL, NULL);
    return 0;
}
