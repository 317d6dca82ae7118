/* tests/unit/test_cgroup_v2.c - the cgroup v2 path of the sandbox library.
 *
 * This host has a hybrid layout: memory, pids and cpu are bound to v1 hierarchies and
 * the unified (v2) hierarchy has no controllers, so v2 limits cannot be enforced
 * here. Linked against the CQ_TESTING build of the library, these tests force the
 * v2 path (CODEQ_CGROUP_VERSION=2) without controllers and check its mechanics:
 * clone3(CLONE_INTO_CGROUP) places init in the sandbox's cgroup, the cgroup
 * namespace is rooted there, processes run, and destroy removes the cgroup. The
 * limit files themselves (memory.max, memory.swap.max, pids.max, cpu.max) are only
 * reviewed, not exercised, on this host. The last test makes a sandbox as a normal
 * user (sandbox/rootless.c) in a v2 cgroup delegated to it. */
#define _GNU_SOURCE
#include "sandbox/sandbox.h"
#include "unit.h"

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static void force_v2(void)
{
    setenv("CODEQ_CGROUP_VERSION", "2", 1);
    setenv("CODEQ_TESTING_V2_WITHOUT_CONTROLLERS", "1", 1);
}

/* The unified hierarchy's mount point, from /proc/self/mountinfo. */
static void unified_mount(char *out, size_t len)
{
    FILE *f = fopen("/proc/self/mountinfo", "re");
    ck_assert_ptr_nonnull(f);
    char line[8192];
    bool found = false;
    while (!found && fgets(line, sizeof(line), f) != NULL) {
        char root[PATH_MAX], point[PATH_MAX], fstype[32];
        char *sep = strstr(line, " - ");
        if (sep != NULL && sscanf(sep + 3, "%31s", fstype) == 1 && strcmp(fstype, "cgroup2") == 0 &&
            sscanf(line, "%*d %*d %*s %4095s %4095s", root, point) == 2) {
            snprintf(out, len, "%s", point);
            found = true;
        }
    }
    fclose(f);
    ck_assert_msg(found, "no cgroup2 mount on this host");
}

/* Number of sandbox cgroups of this process under <unified>/codeq. */
static int own_sandbox_cgroups(char *first, size_t len)
{
    char base[PATH_MAX], prefix[32];
    unified_mount(base, sizeof(base));
    strncat(base, "/codeq", sizeof(base) - strlen(base) - 1);
    snprintf(prefix, sizeof(prefix), "%d-", getpid());
    DIR *d = opendir(base);
    if (d == NULL)
        return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, prefix, strlen(prefix)) != 0)
            continue;
        if (n++ == 0 && first != NULL)
            snprintf(first, len, "%s/%s", base, e->d_name);
    }
    closedir(d);
    return n;
}

struct capture {
    char out[4096];
    size_t len;
};

static void on_output(void *ctx, int stream, const char *data, size_t len)
{
    struct capture *c = ctx;
    if (stream != 1)
        return;
    size_t room = sizeof(c->out) - 1 - c->len;
    size_t n = len < room ? len : room;
    memcpy(c->out + c->len, data, n);
    c->len += n;
    c->out[c->len] = '\0';
}

static int run(struct cq_sandbox *sb, const char *script, struct capture *cap)
{
    const char *const argv[] = {"/bin/sh", "-c", script, NULL};
    struct cq_spawn req;
    cq_spawn_init(&req, argv);
    req.stdout_mode = CQ_STDIO_PIPE;
    struct cq_error err;
    struct cq_process *p;
    ck_assert_msg(cq_sandbox_spawn(sb, &req, &p, &err) == 0, "spawn: %s", err.msg);
    struct cq_wait_io io = {.on_output = on_output, .ctx = cap, .input_fd = -1};
    struct cq_process_report report;
    ck_assert_msg(cq_process_wait(p, &io, &report, &err) == 0, "wait: %s", err.msg);
    cq_process_free(p);
    return report.exit_code;
}

START_TEST(init_is_cloned_into_the_sandbox_cgroup)
{
    force_v2();
    struct cq_sandbox_config cfg;
    cq_sandbox_config_init(&cfg);
    struct cq_error err;
    struct cq_sandbox *sb;
    ck_assert_msg(cq_sandbox_create(&cfg, &sb, &err) == 0, "create: %s", err.msg);

    char dir[PATH_MAX], procs_path[PATH_MAX + 16], procs[256] = "";
    ck_assert_int_eq(own_sandbox_cgroups(dir, sizeof(dir)), 1);
    snprintf(procs_path, sizeof(procs_path), "%s/cgroup.procs", dir);
    FILE *f = fopen(procs_path, "re");
    ck_assert_ptr_nonnull(f);
    size_t n = fread(procs, 1, sizeof(procs) - 1, f);
    fclose(f);
    procs[n] = '\0';
    /* init is there, and only init (the network helper has exited). */
    ck_assert_msg(n > 0 && strchr(procs, '\n') == procs + n - 1, "cgroup.procs: '%s'", procs);

    /* A process spawned now sits in the same cgroup, seen as the namespace root. */
    struct capture cap = {0};
    ck_assert_int_eq(run(sb, "grep '^0::' /proc/self/cgroup", &cap), 0);
    ck_assert_str_eq(cap.out, "0::/\n");
    cq_sandbox_destroy(sb);
}
END_TEST

START_TEST(destroy_removes_the_cgroup)
{
    force_v2();
    struct cq_sandbox_config cfg;
    cq_sandbox_config_init(&cfg);
    struct cq_error err;
    struct cq_sandbox *a, *b;
    ck_assert_msg(cq_sandbox_create(&cfg, &a, &err) == 0, "create: %s", err.msg);
    ck_assert_msg(cq_sandbox_create(&cfg, &b, &err) == 0, "create: %s", err.msg);
    ck_assert_int_eq(own_sandbox_cgroups(NULL, 0), 2);
    struct capture cap = {0};
    ck_assert_int_eq(run(a, "sleep 30 & echo started", &cap), 0);
    cq_sandbox_destroy(a);
    ck_assert_int_eq(own_sandbox_cgroups(NULL, 0), 1);
    cq_sandbox_destroy(b);
    ck_assert_int_eq(own_sandbox_cgroups(NULL, 0), 0);
}
END_TEST

START_TEST(missing_controllers_are_a_clear_error)
{
    /* Without the test override, a v2 hierarchy lacking the controllers must be
     * refused with a message naming what is missing, never run without limits. */
    setenv("CODEQ_CGROUP_VERSION", "2", 1);
    unsetenv("CODEQ_TESTING_V2_WITHOUT_CONTROLLERS");
    struct cq_sandbox_config cfg;
    cq_sandbox_config_init(&cfg);
    struct cq_error err;
    struct cq_sandbox *sb = NULL;
    ck_assert_int_eq(cq_sandbox_create(&cfg, &sb, &err), -1);
    ck_assert_ptr_null(sb);
    ck_assert_msg(strstr(err.msg, "controller is not available") != NULL, "message: %s", err.msg);
    ck_assert_int_eq(own_sandbox_cgroups(NULL, 0), 0);
}
END_TEST

/* The user tests/rootless runs codeq as, made here if missing (as those tests do). */
static struct passwd *test_user(void)
{
    struct passwd *pw = getpwnam("codeqtest");
    if (pw == NULL) {
        ck_assert_int_eq(system("useradd -m -s /bin/sh codeqtest"), 0);
        pw = getpwnam("codeqtest");
    }
    ck_assert_ptr_nonnull(pw);
    return pw;
}

static void write_text(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    ck_assert_msg(fd >= 0, "open %s", path);
    ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

/* In a child: joins dir (a v2 cgroup given to the user), becomes the user, makes a
 * sandbox as a normal user's codeq does (sandbox/rootless.c) and checks where it runs.
 * Returns 0, or a step number; the reason on stderr. */
static int rootless_child(const char *dir, const struct passwd *pw)
{
    char path[PATH_MAX + 32], pid[32];
    snprintf(path, sizeof(path), "%s/cgroup.procs", dir);
    snprintf(pid, sizeof(pid), "%d", getpid());
    write_text(path, pid);
    if (setgroups(0, NULL) < 0 || setgid(pw->pw_gid) < 0 || setuid(pw->pw_uid) < 0)
        return 1;
    /* setuid made this process undumpable, and its /proc files root's; execve of codeq
     * by a user would have made it dumpable again. */
    prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
    cq_sandbox_setup_process();
    if (cq_sandbox_ids_mode() == CQ_SANDBOX_IDS_NONE ||
        cq_sandbox_ids_mode() == CQ_SANDBOX_IDS_ROOT)
        return 2;
    struct cq_sandbox_config cfg;
    cq_sandbox_config_init(&cfg);
    struct cq_error err;
    struct cq_sandbox *sb;
    if (cq_sandbox_create(&cfg, &sb, &err) < 0) {
        fprintf(stderr, "create: %s\n", err.msg);
        return 3;
    }
    if (cq_sandbox_unenforced() != 0)
        return 4;
    /* Its cgroup is below the user's: <dir>/codeq/<pid>-0, made by the user. */
    char mine[PATH_MAX + 64];
    snprintf(mine, sizeof(mine), "%s/codeq/%d-0", dir, getpid());
    struct stat st;
    if (stat(mine, &st) < 0 || st.st_uid != 0 /* the user, as its namespace sees it */)
        return 5;
    struct capture cap = {0};
    if (run(sb, "grep '^0::' /proc/self/cgroup", &cap) != 0 || strcmp(cap.out, "0::/\n") != 0)
        return 6;
    cq_sandbox_destroy(sb);
    return access(mine, F_OK) == 0 ? 7 : 0;
}

START_TEST(a_normal_user_in_a_delegated_cgroup)
{
    /* As systemd's Delegate=yes gives one: the directory and its cgroup.procs,
     * cgroup.subtree_control and cgroup.threads belong to the user. */
    force_v2();
    struct passwd *pw = test_user();
    char dir[PATH_MAX], path[PATH_MAX + 64];
    unified_mount(dir, sizeof(dir));
    snprintf(dir + strlen(dir), sizeof(dir) - strlen(dir), "/codeq-rootless-unit-%d", getpid());
    ck_assert_int_eq(mkdir(dir, 0755), 0);
    ck_assert_int_eq(chown(dir, pw->pw_uid, pw->pw_gid), 0);
    static const char *const files[] = {"cgroup.procs", "cgroup.subtree_control", "cgroup.threads"};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
        ck_assert_int_eq(chown(path, pw->pw_uid, pw->pw_gid), 0);
    }
    pid_t child = fork();
    if (child == 0)
        _exit(rootless_child(dir, pw));
    int status;
    ck_assert_int_eq(waitpid(child, &status, 0), child);
    snprintf(path, sizeof(path), "%s/codeq", dir);
    rmdir(path);
    ck_assert_int_eq(rmdir(dir), 0);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the user's sandbox: step %d",
                  WIFEXITED(status) ? WEXITSTATUS(status) : -1);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cgroup_v2");
    TCase *tc = tcase_create("v2");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, init_is_cloned_into_the_sandbox_cgroup);
    tcase_add_test(tc, destroy_removes_the_cgroup);
    tcase_add_test(tc, missing_controllers_are_a_clear_error);
    tcase_add_test(tc, a_normal_user_in_a_delegated_cgroup);
    suite_add_tcase(s, tc);
    return cq_unit_run(s, true);
}
