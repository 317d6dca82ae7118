/* tests/unit/test_adopt.c - kernels forked into a sandbox by a zygote (docs/zygote.md),
 * through the sandbox library's public API and libcodeq-adopt.so, with real sandboxes.
 *
 * The test plays the zygote in C: a process of CQ_SANDBOX_ZYGOTE_UID without any
 * capability enters an enterable sandbox with one setns, has its child moved into
 * the sandbox's cgroup, and forks the adopted shim (pid 1 of a new pid namespace)
 * and the process (pid 2), which becomes sandboxed code through the library and then
 * execs a shell whose output the checks read. Needs root.
 */
#define _GNU_SOURCE
#include "sandbox/sandbox.h"
#include "unit.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define ALL_NAMESPACES                                                                             \
    (CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWCGROUP |  \
     CLONE_NEWPID)

typedef int (*become_fn)(int channel, const char *const **env, char *why, size_t why_len);

struct captured {
    char out[16384];
    size_t len;
};

static void capture(void *ctx, int stream, const char *data, size_t len)
{
    struct captured *c = ctx;
    (void)stream;
    if (len > sizeof(c->out) - 1 - c->len)
        len = sizeof(c->out) - 1 - c->len;
    memcpy(c->out + c->len, data, len);
    c->len += len;
    c->out[c->len] = '\0';
}

static void setup(void)
{
    if (getenv("CODEQ_SANDBOX_INIT") == NULL)
        setenv("CODEQ_SANDBOX_INIT", CQ_BUILD_DIR "/bin/codeq-sandbox-init", 0);
}

static struct cq_sandbox *make_sandbox(bool enterable)
{
    struct cq_sandbox_config cfg;
    cq_sandbox_config_init(&cfg);
    cfg.enterable = enterable;
    struct cq_sandbox *sb = NULL;
    struct cq_error err = {0};
    ck_assert_msg(cq_sandbox_create(&cfg, &sb, &err) == 0, "create: %s", err.msg);
    return sb;
}

/* The zygote's part, in a child of the test: never returns. Writes the host pid of its
 * forked child to report_fd and waits for a byte on go_fd (the cgroup move) before
 * that child goes on. fds: the entry pidfd, then theirs[4] of cq_sandbox_adopt. */
static void __attribute__((noreturn))
play_zygote(int entry_fd, const int theirs[4], const char *script, int report_fd, int go_fd)
{
    void *lib = dlopen(CQ_BUILD_DIR "/bin/libcodeq-adopt.so", RTLD_NOW);
    become_fn become = lib != NULL ? (become_fn)dlsym(lib, "cq_adopted_become") : NULL;
    int init_fd = open(getenv("CODEQ_SANDBOX_INIT"), O_PATH | O_CLOEXEC);
    if (become == NULL || init_fd < 0)
        _exit(10);
    /* Root to the zygote's uid: every capability goes with it. */
    if (setgroups(0, NULL) < 0 ||
        setresgid(CQ_SANDBOX_ZYGOTE_UID, CQ_SANDBOX_ZYGOTE_UID, CQ_SANDBOX_ZYGOTE_UID) < 0 ||
        setresuid(CQ_SANDBOX_ZYGOTE_UID, CQ_SANDBOX_ZYGOTE_UID, CQ_SANDBOX_ZYGOTE_UID) < 0)
        _exit(11);
    pid_t child = fork();
    if (child != 0) {
        int status = 0;
        waitpid(child, &status, 0);
        _exit(WIFEXITED(status) ? WEXITSTATUS(status) : 12);
    }
    if (setns(entry_fd, ALL_NAMESPACES) < 0)
        _exit(13);
    pid_t self = getpid();
    char go;
    if (write(report_fd, &self, sizeof(self)) != sizeof(self) || read(go_fd, &go, 1) != 1)
        _exit(14);
    pid_t p1 = fork(); /* in the sandbox's pid namespace */
    if (p1 != 0) {
        int status = 0;
        waitpid(p1, &status, 0);
        _exit(WIFEXITED(status) ? WEXITSTATUS(status) : 15);
    }
    if (unshare(CLONE_NEWPID | CLONE_NEWNS) < 0)
        _exit(16);
    if (fork() != 0)
        _exit(0); /* the shim is init's now */
    int ch[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, ch) < 0)
        _exit(17);
    if (fork() == 0) { /* pid 2: the process */
        close(ch[0]);
        int null = open("/dev/null", O_RDWR);
        for (int i = 0; i < 3; i++)
            if (dup2(theirs[i + 1] >= 0 ? theirs[i + 1] : null, i) < 0)
                _exit(18);
        const char *const *env;
        char why[200];
        if (become(ch[1], &env, why, sizeof(why)) < 0) {
            dprintf(2, "become: %s\n", why);
            _exit(19);
        }
        const char *argv[] = {"sh", "-c", script, NULL};
        execve("/bin/sh", (char *const *)argv, (char *const *)env);
        _exit(20);
    }
    /* pid 1: the adopted shim, uid 0 of the sandbox like init's shims. */
    close(ch[1]);
    if (setresgid(0, 0, 0) < 0 || setresuid(0, 0, 0) < 0 || dup2(theirs[0], 3) < 0 ||
        dup2(ch[0], 4) < 0 || dup2(init_fd, 5) < 0 || syscall(SYS_close_range, 6, ~0U, 0) < 0)
        _exit(21);
    const char *argv[] = {"codeq-sandbox-init", "adopted-shim", NULL};
    const char *envp[] = {NULL};
    syscall(SYS_execveat, 5, "", argv, envp, AT_EMPTY_PATH);
    _exit(22);
}

struct adopted {
    struct cq_process *proc;
    pid_t zygote;
};

/* Starts script as a process forked into sb by the played zygote. */
static struct adopted adopt(struct cq_sandbox *sb, const char *script, uint64_t timeout_ms)
{
    const char *env[] = {"ADOPT_TEST=yes", NULL};
    struct cq_spawn req;
    cq_spawn_init(&req, NULL);
    req.env = env;
    req.timeout_ms = timeout_ms;
    req.stdout_mode = req.stderr_mode = CQ_STDIO_PIPE;
    struct cq_error err = {0};
    int entry = cq_sandbox_entry_fd(sb, &err);
    ck_assert_msg(entry >= 0, "entry: %s", err.msg);
    int theirs[4];
    struct adopted a = {0};
    ck_assert_msg(cq_sandbox_adopt(sb, &req, theirs, &a.proc, &err) == 0, "adopt: %s", err.msg);
    int report[2], go[2];
    ck_assert_int_eq(pipe(report), 0);
    ck_assert_int_eq(pipe(go), 0);
    a.zygote = fork();
    ck_assert_int_ge(a.zygote, 0);
    if (a.zygote == 0)
        play_zygote(entry, theirs, script, report[1], go[0]);
    close(report[1]);
    close(go[0]);
    close(entry);
    for (int i = 0; i < 4; i++)
        if (theirs[i] >= 0)
            close(theirs[i]);
    pid_t child;
    ck_assert_int_eq(read(report[0], &child, sizeof(child)), sizeof(child));
    ck_assert_msg(cq_sandbox_attach(sb, child, &err) == 0, "attach: %s", err.msg);
    ck_assert_int_eq(write(go[1], "g", 1), 1);
    close(report[0]);
    close(go[1]);
    if (cq_process_await_adopted(a.proc, &err) < 0) {
        int status = 0;
        waitpid(a.zygote, &status, 0);
        ck_abort_msg("adopted: %s (zygote status %d)", err.msg, status);
    }
    return a;
}

static void finish(struct adopted *a, struct captured *cap, struct cq_process_report *rep)
{
    struct cq_error err = {0};
    struct cq_wait_io io = {.on_output = capture, .ctx = cap, .input_fd = -1};
    memset(cap, 0, sizeof(*cap));
    ck_assert_msg(cq_process_wait(a->proc, &io, rep, &err) == 0, "wait: %s", err.msg);
    cq_process_free(a->proc);
    int status = 0;
    ck_assert_int_eq(waitpid(a->zygote, &status, 0), a->zygote);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "zygote status %d", status);
}

static void expect_line(const struct captured *cap, const char *line)
{
    char want[256];
    snprintf(want, sizeof(want), "\n%s\n", line);
    char text[sizeof(cap->out) + 2];
    snprintf(text, sizeof(text), "\n%s", cap->out);
    if (strstr(text, want) == NULL)
        fprintf(stderr, "%s", cap->out);
    ck_assert_msg(strstr(text, want) != NULL, "no line %s", line);
}

/* What the forked process is: pid 2 under its shim, the sandbox user with no
 * capability under both seccomp filters, in the sandbox's namespaces and cgroup, with
 * the request's environment and directory. */
START_TEST(adopted_process_is_sandboxed_code)
{
    struct cq_sandbox *sb = make_sandbox(true);
    struct adopted a = adopt(sb,
                             "echo pid=$$; echo uid=$(id -u) gid=$(id -g) groups=$(id -G); "
                             "grep -E '^(CapEff|CapPrm|CapBnd|NoNewPrivs|Seccomp|Seccomp_filters):'"
                             " /proc/self/status | tr -d '\\t'; "
                             "echo cgroup=$(grep -vc ':/$' /proc/self/cgroup); "
                             "echo host=$(cat /proc/sys/kernel/hostname) pwd=$(pwd) "
                             "env=$ADOPT_TEST; "
                             "echo procs=$(cd /proc && set -- [0-9]*; echo $# $1); "
                             "echo links=$(grep -c : /proc/net/dev)",
                             0);
    struct captured cap;
    struct cq_process_report rep;
    finish(&a, &cap, &rep);
    ck_assert_msg(rep.exit_code == 0, "exit %d: %s", rep.exit_code, cap.out);
    expect_line(&cap, "pid=2");
    expect_line(&cap, "uid=1000 gid=1000 groups=1000");
    expect_line(&cap, "CapEff:0000000000000000");
    expect_line(&cap, "CapPrm:0000000000000000");
    expect_line(&cap, "CapBnd:0000000000000000");
    expect_line(&cap, "NoNewPrivs:1");
    expect_line(&cap, "Seccomp:2");
    expect_line(&cap, "Seccomp_filters:2"); /* the sandbox's and the process's */
    /* Every hierarchy at the root of the sandbox's cgroup namespace: its own cgroup. */
    expect_line(&cap, "cgroup=0");
    expect_line(&cap, "host=codeq pwd=/workspace env=yes");
    expect_line(&cap, "procs=3 1"); /* its shim, itself and the subshell */
    expect_line(&cap, "links=1");   /* lo only: the sandbox's network namespace */
    cq_sandbox_destroy(sb);
}
END_TEST

/* The shim supervises it as its own: a timeout ends the tree and says so, and a kill
 * from the supervisor reaches it. */
START_TEST(adopted_process_times_out_and_is_killed)
{
    struct cq_sandbox *sb = make_sandbox(true);
    struct adopted a = adopt(sb, "sleep 1000 & sleep 1000", 300);
    struct captured cap;
    struct cq_process_report rep;
    finish(&a, &cap, &rep);
    ck_assert(rep.timed_out);

    a = adopt(sb, "echo started; sleep 1000", 0);
    ck_assert_int_eq(cq_process_kill(a.proc), 0);
    finish(&a, &cap, &rep);
    ck_assert(rep.killed);
    cq_sandbox_destroy(sb);
}
END_TEST

/* The host pid of the sandboxed `sleep 1000`: the process running as the host id of
 * sandboxed code with that command line (not any sleep of the host). */
static int sandboxed_sleep(void)
{
    for (int tries = 0; tries < 100; tries++) {
        DIR *d = opendir("/proc");
        struct dirent *e;
        int found = 0;
        while (d != NULL && (e = readdir(d)) != NULL && found == 0) {
            char path[300], cmd[64] = "", status[2048] = "";
            snprintf(path, sizeof(path), "/proc/%s/cmdline", e->d_name);
            FILE *f = fopen(path, "re");
            size_t n = f != NULL ? fread(cmd, 1, sizeof(cmd) - 1, f) : 0;
            if (f != NULL)
                fclose(f);
            if (n != sizeof("sleep\0001000") || memcmp(cmd, "sleep\0001000", n) != 0)
                continue;
            snprintf(path, sizeof(path), "/proc/%s/status", e->d_name);
            f = fopen(path, "re");
            n = f != NULL ? fread(status, 1, sizeof(status) - 1, f) : 0;
            if (f != NULL)
                fclose(f);
            status[n] = '\0';
            if (strstr(status, "\nUid:\t1600001000\t") != NULL)
                found = atoi(e->d_name);
        }
        if (d != NULL)
            closedir(d);
        if (found > 0)
            return found;
        usleep(20000);
    }
    return -1;
}

/* A sandbox not created enterable keeps the zygote's uid out: its user namespace is
 * root's, and the uid holds no capability anywhere. */
START_TEST(zygote_uid_cannot_enter_other_sandboxes)
{
    struct cq_sandbox *sb = make_sandbox(false);
    struct cq_error err = {0};
    ck_assert_int_eq(cq_sandbox_entry_fd(sb, &err), -1);
    /* Through a pidfd of one of its processes, as a zygote that found one would. */
    const char *argv[] = {"sleep", "1000", NULL};
    struct cq_spawn req;
    cq_spawn_init(&req, argv);
    struct cq_process *p = NULL;
    ck_assert_msg(cq_sandbox_spawn(sb, &req, &p, &err) == 0, "%s", err.msg);
    int pid = sandboxed_sleep();
    ck_assert_int_gt(pid, 0);
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    ck_assert_int_ge(pidfd, 0);
    pid_t child = fork();
    if (child == 0) {
        if (setgroups(0, NULL) < 0 ||
            setresgid(CQ_SANDBOX_ZYGOTE_UID, CQ_SANDBOX_ZYGOTE_UID, CQ_SANDBOX_ZYGOTE_UID) < 0 ||
            setresuid(CQ_SANDBOX_ZYGOTE_UID, CQ_SANDBOX_ZYGOTE_UID, CQ_SANDBOX_ZYGOTE_UID) < 0)
            _exit(2);
        _exit(setns(pidfd, ALL_NAMESPACES) == 0 ? 0 : errno == EPERM ? 1 : 3);
    }
    int status = 0;
    waitpid(child, &status, 0);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 1, "setns status %d", status);
    cq_process_free(p);
    cq_sandbox_destroy(sb);
}
END_TEST

/* An enterable sandbox lets that uid in and no other: root's other ids and the
 * sandbox's own ids get EPERM. */
START_TEST(only_the_zygote_uid_enters)
{
    struct cq_sandbox *sb = make_sandbox(true);
    struct cq_error err = {0};
    int entry = cq_sandbox_entry_fd(sb, &err);
    ck_assert_msg(entry >= 0, "%s", err.msg);
    const uid_t others[] = {CQ_SANDBOX_ZYGOTE_UID + 1, 65534, 1600001000u};
    for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
        pid_t child = fork();
        if (child == 0) {
            if (setgroups(0, NULL) < 0 || setresgid(others[i], others[i], others[i]) < 0 ||
                setresuid(others[i], others[i], others[i]) < 0)
                _exit(2);
            _exit(setns(entry, ALL_NAMESPACES) == 0 ? 0 : errno == EPERM ? 1 : 3);
        }
        int status = 0;
        waitpid(child, &status, 0);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 1, "uid %u: status %d",
                      (unsigned)others[i], status);
    }
    close(entry);
    cq_sandbox_destroy(sb);
}
END_TEST

static Suite *adopt_suite(void)
{
    Suite *s = suite_create("adopt");
    TCase *tc = tcase_create("adopt");
    tcase_add_checked_fixture(tc, setup, NULL);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, adopted_process_is_sandboxed_code);
    tcase_add_test(tc, adopted_process_times_out_and_is_killed);
    tcase_add_test(tc, zygote_uid_cannot_enter_other_sandboxes);
    tcase_add_test(tc, only_the_zygote_uid_enters);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    if (geteuid() != 0) {
        fprintf(stderr, "test_adopt needs root\n");
        return EXIT_FAILURE;
    }
    return cq_unit_run(adopt_suite(), true);
}
