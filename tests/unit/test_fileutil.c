/* tests/unit/test_fileutil.c - common/fileutil.c: the whole-file helpers used on
 * cgroup and /proc files, and bounded reads of a descriptor. */
#define _GNU_SOURCE
#include "common/fileutil.h"
#include "common/cleanup.h"
#include "unit.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char dir[64];
static int dirfd_ = -1;

static void make_dir(void)
{
    snprintf(dir, sizeof(dir), "/tmp/cq-fileutil-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    dirfd_ = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    ck_assert_int_ge(dirfd_, 0);
}

static void remove_dir(void)
{
    unlinkat(dirfd_, "f", 0);
    close(dirfd_);
    rmdir(dir);
}

static void create_file(const char *name, const char *content)
{
    int fd = openat(dirfd_, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, content, strlen(content)), (ssize_t)strlen(content));
    close(fd);
}

START_TEST(write_then_read)
{
    struct cq_error err = {0};
    create_file("f", "old contents that are longer");
    /* No O_TRUNC: like cgroup files, the text replaces from the start. */
    ck_assert_int_eq(cq_write_file_at(dirfd_, "f", "12345", &err), 0);
    char buf[64];
    ck_assert_int_eq(cq_read_file_at(dirfd_, "f", buf, sizeof(buf), &err), 28);
    ck_assert_int_eq(strncmp(buf, "12345", 5), 0);
}
END_TEST

START_TEST(write_does_not_create)
{
    struct cq_error err = {0};
    ck_assert_int_eq(cq_write_file_at(dirfd_, "missing", "1", &err), -1);
    ck_assert_int_eq(err.code, ENOENT);
    ck_assert_ptr_nonnull(strstr(err.msg, "missing"));
    struct stat st;
    ck_assert_int_eq(fstatat(dirfd_, "missing", &st, 0), -1);
}
END_TEST

START_TEST(write_error_names_the_file)
{
    struct cq_error err = {0};
    /* A directory cannot be opened for writing. */
    ck_assert_int_eq(cq_write_file_at(AT_FDCWD, dir, "x", &err), -1);
    ck_assert_int_eq(err.code, EISDIR);
    ck_assert_ptr_nonnull(strstr(err.msg, dir));
}
END_TEST

START_TEST(read_truncates_and_terminates)
{
    struct cq_error err = {0};
    create_file("f", "0123456789");
    struct {
        char buf[5];
        char canary[8];
    } g;
    memset(&g, 'x', sizeof(g));
    ck_assert_int_eq(cq_read_file_at(dirfd_, "f", g.buf, sizeof(g.buf), &err), 4);
    ck_assert_str_eq(g.buf, "0123");
    for (size_t i = 0; i < sizeof(g.canary); i++)
        ck_assert_msg(g.canary[i] == 'x', "write past the buffer at +%zu", i);
    char one[1] = {'x'};
    ck_assert_int_eq(cq_read_file_at(dirfd_, "f", one, sizeof(one), &err), 0);
    ck_assert_int_eq(one[0], '\0');
}
END_TEST

START_TEST(read_empty_and_proc_files)
{
    struct cq_error err = {0};
    create_file("f", "");
    char buf[64] = "garbage";
    ck_assert_int_eq(cq_read_file_at(dirfd_, "f", buf, sizeof(buf), &err), 0);
    ck_assert_str_eq(buf, "");
    /* /proc files report size 0 and must be read until EOF. */
    char self[4096];
    ck_assert_int_gt(cq_read_file_at(AT_FDCWD, "/proc/self/status", self, sizeof(self), &err), 100);
    ck_assert_ptr_nonnull(strstr(self, "Pid:"));
}
END_TEST

START_TEST(read_missing_file)
{
    struct cq_error err = {0};
    char buf[8];
    ck_assert_int_eq(cq_read_file_at(dirfd_, "nothing-here", buf, sizeof(buf), &err), -1);
    ck_assert_int_eq(err.code, ENOENT);
    ck_assert_ptr_nonnull(strstr(err.msg, "nothing-here"));
}
END_TEST

START_TEST(keyed_values)
{
    const char *text = "oom_kill_disable 0\nunder_oom 0\noom_kill 7\nmax 12\n";
    uint64_t v = 0;
    ck_assert_int_eq(cq_keyed_u64(text, "oom_kill", &v), 0);
    ck_assert_uint_eq(v, 7); /* not the value of oom_kill_disable */
    ck_assert_int_eq(cq_keyed_u64(text, "oom_kill_disable", &v), 0);
    ck_assert_uint_eq(v, 0);
    ck_assert_int_eq(cq_keyed_u64(text, "max", &v), 0);
    ck_assert_uint_eq(v, 12);
    ck_assert_int_eq(cq_keyed_u64("first 18446744073709551615", "first", &v), 0);
    ck_assert_uint_eq(v, UINT64_MAX);
}
END_TEST

START_TEST(keyed_missing_keys)
{
    uint64_t v = 42;
    ck_assert_int_eq(cq_keyed_u64("oom_kill_disable 0\n", "oom_kill", &v), -1);
    ck_assert_int_eq(cq_keyed_u64("a 1\nb 2", "c", &v), -1);
    ck_assert_int_eq(cq_keyed_u64("", "a", &v), -1);
    ck_assert_int_eq(cq_keyed_u64("xa 1\n", "a", &v), -1); /* keys match whole lines only */
    ck_assert_int_eq(cq_keyed_u64("a\n", "a", &v), -1);
    ck_assert_uint_eq(v, 42);
}
END_TEST

/* Reads "f" through cq_read_fd_limit. */
static int read_f(uint64_t limit, uint8_t **data, size_t *len, struct cq_error *err)
{
    int fd = openat(dirfd_, "f", O_RDONLY | O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    int rc = cq_read_fd_limit(fd, limit, data, len, err);
    close(fd);
    return rc;
}

START_TEST(read_fd_empty)
{
    struct cq_error err = {0};
    create_file("f", "");
    uint8_t *data = NULL;
    size_t len = 99;
    ck_assert_int_eq(read_f(10, &data, &len, &err), 0);
    ck_assert_uint_eq(len, 0);
    ck_assert_ptr_nonnull(data);
    ck_assert_int_eq(data[0], '\0');
    free(data);
    /* Nothing at all is allowed: the empty file still fits. */
    ck_assert_int_eq(read_f(0, &data, &len, &err), 0);
    ck_assert_uint_eq(len, 0);
    free(data);
}
END_TEST

START_TEST(read_fd_at_and_over_the_limit)
{
    struct cq_error err = {0};
    create_file("f", "0123456789");
    uint8_t *data = NULL;
    size_t len = 0;
    ck_assert_int_eq(read_f(10, &data, &len, &err), 0);
    ck_assert_uint_eq(len, 10);
    ck_assert_str_eq((const char *)data, "0123456789"); /* NUL-terminated */
    free(data);
    data = NULL;
    ck_assert_int_eq(read_f(9, &data, &len, &err), -1);
    ck_assert_int_eq(err.code, EFBIG);
    ck_assert_ptr_nonnull(strstr(err.msg, "9 bytes"));
    ck_assert_ptr_null(data);
    ck_assert_int_eq(read_f(0, &data, &len, &err), -1);
    ck_assert_int_eq(err.code, EFBIG);
}
END_TEST

/* A pipe has no size: the buffer grows as it fills, past the pipe's own capacity. */
START_TEST(read_fd_pipe)
{
    enum { TOTAL = 300000 };
    for (int over = 0; over < 2; over++) {
        int p[2];
        ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
            close(p[0]);
            char chunk[1000];
            memset(chunk, 'a', sizeof(chunk));
            for (int i = 0; i < TOTAL / 1000; i++)
                if (write(p[1], chunk, sizeof(chunk)) != (ssize_t)sizeof(chunk))
                    _exit(1);
            _exit(0);
        }
        close(p[1]);
        struct cq_error err = {0};
        uint8_t *data = NULL;
        size_t len = 0;
        int rc = cq_read_fd_limit(p[0], over ? TOTAL - 1 : TOTAL, &data, &len, &err);
        close(p[0]); /* a writer still writing then stops on EPIPE */
        waitpid(pid, NULL, 0);
        if (over) {
            ck_assert_int_eq(rc, -1);
            ck_assert_int_eq(err.code, EFBIG);
            continue;
        }
        ck_assert_int_eq(rc, 0);
        ck_assert_uint_eq(len, TOTAL);
        ck_assert_int_eq(data[0], 'a');
        ck_assert_int_eq(data[TOTAL - 1], 'a');
        ck_assert_int_eq(data[TOTAL], '\0');
        free(data);
    }
}
END_TEST

START_TEST(read_fd_error)
{
    struct cq_error err = {0};
    uint8_t *data = NULL;
    size_t len = 0;
    /* read() of a directory fails with EISDIR. */
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(cq_read_fd_limit(fd, 100, &data, &len, &err), -1);
    ck_assert_int_eq(err.code, EISDIR);
    ck_assert_ptr_nonnull(strstr(err.msg, "read"));
    ck_assert_ptr_null(data);
    close(fd);
    ck_assert_int_eq(cq_read_fd_limit(-1, 100, &data, &len, &err), -1);
    ck_assert_int_eq(err.code, EBADF);
}
END_TEST

START_TEST(private_files_only)
{
    create_file("f", "secret\n");
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/f", dir);
    struct cq_error err;
    int fd = cq_open_private(path, "key file", &err); /* 0644 */
    ck_assert_int_eq(fd, -1);
    ck_assert_int_eq(err.code, CQ_EINVALID);
    ck_assert_ptr_nonnull(strstr(err.msg, "key file"));
    ck_assert_ptr_nonnull(strstr(err.msg, "readable by others (mode 644)"));
    ck_assert_int_eq(fchmodat(dirfd_, "f", 0600, 0), 0);
    fd = cq_open_private(path, "key file", &err);
    ck_assert_int_ge(fd, 0);
    char buf[16] = {0};
    ck_assert_int_eq(read(fd, buf, sizeof(buf) - 1), 7);
    ck_assert_str_eq(buf, "secret\n");
    close(fd);
    ck_assert_int_eq(fchmodat(dirfd_, "f", 0640, 0), 0); /* group bits too */
    ck_assert_int_eq(cq_open_private(path, "key file", &err), -1);
    ck_assert_int_eq(cq_open_private("/nonexistent/f", "key file", &err), -1);
    ck_assert_int_eq(err.code, ENOENT);
    ck_assert_ptr_nonnull(strstr(err.msg, "open key file /nonexistent/f"));
}
END_TEST

/* A tree of its own, beside a directory "outside" that links inside the tree name. */
static void tree_path(char *out, size_t len, const char *name)
{
    snprintf(out, len, "%s/%s", dir, name);
}

static void make_at(const char *name, bool is_dir)
{
    char p[PATH_MAX];
    tree_path(p, sizeof(p), name);
    if (is_dir) {
        ck_assert_int_eq(mkdir(p, 0755), 0);
    } else {
        int fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        ck_assert_int_ge(fd, 0);
        close(fd);
    }
}

static bool exists_at(const char *name)
{
    struct stat st;
    return fstatat(dirfd_, name, &st, AT_SYMLINK_NOFOLLOW) == 0;
}

START_TEST(remove_tree_follows_no_link)
{
    make_at("outside", true);
    make_at("outside/keep", false);
    make_at("t", true);
    make_at("t/a", true);
    make_at("t/a/b", true);
    make_at("t/a/b/f", false);
    make_at("t/a/g", false);
    ck_assert_int_eq(fchmodat(dirfd_, "t/a/g", 0, 0), 0); /* mode 000 goes too */
    char target[PATH_MAX], link[PATH_MAX];
    tree_path(target, sizeof(target), "outside");
    tree_path(link, sizeof(link), "t/a/to-outside");
    ck_assert_int_eq(symlink(target, link), 0);
    tree_path(target, sizeof(target), "outside/keep");
    tree_path(link, sizeof(link), "t/to-keep");
    ck_assert_int_eq(symlink(target, link), 0);

    char t[PATH_MAX];
    tree_path(t, sizeof(t), "t");
    struct cq_error err;
    ck_assert_int_eq(cq_remove_tree(t, &err), 0);
    ck_assert(!exists_at("t"));
    /* What the links named is untouched. */
    ck_assert(exists_at("outside/keep"));
    /* Nothing there is no error; a link given as the path goes, not its target. */
    ck_assert_int_eq(cq_remove_tree(t, &err), 0);
    tree_path(link, sizeof(link), "link-to-outside");
    tree_path(target, sizeof(target), "outside");
    ck_assert_int_eq(symlink(target, link), 0);
    ck_assert_int_eq(cq_remove_tree(link, &err), 0);
    ck_assert(!exists_at("link-to-outside"));
    ck_assert(exists_at("outside/keep"));
    /* A plain file given as the path. */
    tree_path(t, sizeof(t), "outside/keep");
    ck_assert_int_eq(cq_remove_tree(t, &err), 0);
    ck_assert(!exists_at("outside/keep"));
    tree_path(t, sizeof(t), "outside");
    ck_assert_int_eq(cq_remove_tree(t, &err), 0);
    ck_assert(!exists_at("outside"));
}
END_TEST

START_TEST(remove_below_stops_at_its_depth)
{
    make_at("d", true);
    make_at("d/1", true);
    make_at("d/1/2", true);
    make_at("d/1/2/3", true);
    cq_autoclose int fd = openat(dirfd_, "d", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    errno = 0;
    ck_assert_int_eq(cq_remove_below(fd, 1), -1);
    ck_assert_int_eq(errno, ELOOP);
    ck_assert(exists_at("d/1/2")); /* nothing past the limit was touched */
    ck_assert_int_eq(cq_remove_below(fd, 3), 0);
    ck_assert(!exists_at("d/1"));
    ck_assert_int_eq(unlinkat(dirfd_, "d", AT_REMOVEDIR), 0);
}
END_TEST

START_TEST(open_files_limit_raised_to_the_hard_one)
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) { /* the test process's own limit is left alone */
        struct rlimit lim;
        if (getrlimit(RLIMIT_NOFILE, &lim) < 0 || lim.rlim_max < 128)
            _exit(2);
        rlim_t hard = lim.rlim_max;
        lim.rlim_cur = 64;
        if (setrlimit(RLIMIT_NOFILE, &lim) < 0)
            _exit(3);
        cq_raise_open_files_limit();
        if (getrlimit(RLIMIT_NOFILE, &lim) < 0)
            _exit(4);
        _exit(lim.rlim_cur == hard && lim.rlim_max == hard ? 0 : 1);
    }
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %d", status);
}
END_TEST

static Suite *fileutil_suite(void)
{
    Suite *s = suite_create("fileutil");
    TCase *tc = tcase_create("files");
    tcase_add_checked_fixture(tc, make_dir, remove_dir);
    tcase_add_test(tc, write_then_read);
    tcase_add_test(tc, write_does_not_create);
    tcase_add_test(tc, write_error_names_the_file);
    tcase_add_test(tc, read_truncates_and_terminates);
    tcase_add_test(tc, read_empty_and_proc_files);
    tcase_add_test(tc, read_missing_file);
    tcase_add_test(tc, read_fd_empty);
    tcase_add_test(tc, read_fd_at_and_over_the_limit);
    tcase_add_test(tc, read_fd_pipe);
    tcase_add_test(tc, read_fd_error);
    tcase_add_test(tc, private_files_only);
    tcase_add_test(tc, remove_tree_follows_no_link);
    tcase_add_test(tc, remove_below_stops_at_its_depth);
    tcase_add_test(tc, open_files_limit_raised_to_the_hard_one);
    suite_add_tcase(s, tc);

    tc = tcase_create("keyed");
    tcase_add_test(tc, keyed_values);
    tcase_add_test(tc, keyed_missing_keys);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return cq_unit_run(fileutil_suite(), false);
}
