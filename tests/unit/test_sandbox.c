/* tests/unit/test_sandbox.c - the sandbox library through its public API
 * (sandbox/sandbox.h), with real sandboxes: lifecycle, process I/O and reports,
 * limits, isolation, concurrency.
 *
 * Needs root. Every test runs in its own process (forced fork mode), so the cgroups
 * of a test's sandboxes are exactly those named "<that process's pid>-<n>" under the
 * library's codeq cgroup directories; the helpers below find them from the outside,
 * as an administrator would, to check that nothing is left behind. */
#define _GNU_SOURCE
#include "sandbox/sandbox.h"
#include "common/clock.h"
#include "common/units.h"
#include "host_cgroups.h"
#include "unit.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* The host pids in this process's only sandbox's memory (v1) or unified (v2) cgroup. */
static size_t own_sandbox_tasks(pid_t *pids, size_t max)
{
    struct cgroup_bases b;
    find_bases(&b);
    DIR *d = opendir(b.dir[0]);
    ck_assert_ptr_nonnull(d);
    char path[PATH_MAX + 300] = "";
    int found = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_type != DT_DIR || !is_ours(e->d_name))
            continue;
        snprintf(path, sizeof(path), "%s/%s/%s", b.dir[0], e->d_name,
                 b.version == 1 ? "tasks" : "cgroup.procs");
        found++;
    }
    closedir(d);
    ck_assert_int_eq(found, 1);
    FILE *f = fopen(path, "re");
    ck_assert_ptr_nonnull(f);
    size_t n = 0;
    long pid;
    while (n < max && fscanf(f, "%ld", &pid) == 1)
        pids[n++] = (pid_t)pid;
    fclose(f);
    return n;
}

static pid_t parent_of(pid_t pid)
{
    char path[64], buf[4096];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return -1;
    pid_t ppid = -1;
    while (fgets(buf, sizeof(buf), f) != NULL)
        if (sscanf(buf, "PPid: %d", &ppid) == 1)
            break;
    fclose(f);
    return ppid;
}

/* --- running things ----------------------------------------------------------------- */

struct captured {
    char out[65536];
    size_t out_len;
    char err[65536];
    size_t err_len;
    uint64_t bytes; /* all bytes passed to the callback */
};

static void capture(void *ctx, int stream, const char *data, size_t len)
{
    struct captured *c = ctx;
    c->bytes += len;
    char *buf = stream == 1 ? c->out : c->err;
    size_t *used = stream == 1 ? &c->out_len : &c->err_len;
    size_t room = sizeof(c->out) - 1 - *used;
    size_t n = len < room ? len : room;
    memcpy(buf + *used, data, n);
    *used += n;
    buf[*used] = '\0';
}

static struct cq_sandbox *create_sandbox(const struct cq_sandbox_config *cfg)
{
    struct cq_sandbox_config defaults;
    if (cfg == NULL) {
        cq_sandbox_config_init(&defaults);
        cfg = &defaults;
    }
    struct cq_sandbox *sb = NULL;
    struct cq_error err = {0};
    ck_assert_msg(cq_sandbox_create(cfg, &sb, &err) == 0, "create: %s", err.msg);
    ck_assert_ptr_nonnull(sb);
    return sb;
}

static void pipes(struct cq_spawn *req)
{
    req->stdout_mode = CQ_STDIO_PIPE;
    req->stderr_mode = CQ_STDIO_PIPE;
}

/* Spawns and waits; fails the test if either step fails. */
static void run_req(struct cq_sandbox *sb, const struct cq_spawn *req, struct captured *cap,
                    struct cq_process_report *rep)
{
    struct cq_process *p = NULL;
    struct cq_error err = {0};
    ck_assert_msg(cq_sandbox_spawn(sb, req, &p, &err) == 0, "spawn %s: %s", req->argv[0], err.msg);
    struct cq_wait_io io = {.on_output = capture, .ctx = cap, .input_fd = -1};
    memset(cap, 0, sizeof(*cap));
    ck_assert_msg(cq_process_wait(p, &io, rep, &err) == 0, "wait %s: %s", req->argv[0], err.msg);
    cq_process_free(p);
}

/* Runs argv with piped stdout and stderr and no timeout. */
static void run(struct cq_sandbox *sb, const char *const *argv, struct captured *cap,
                struct cq_process_report *rep)
{
    struct cq_spawn req;
    cq_spawn_init(&req, argv);
    pipes(&req);
    run_req(sb, &req, cap, rep);
}

/* Runs `sh -c script` and returns its exit code. */
static int sh(struct cq_sandbox *sb, const char *script, struct captured *cap)
{
    const char *argv[] = {"sh", "-c", script, NULL};
    struct cq_process_report rep;
    run(sb, argv, cap, &rep);
    return rep.exit_code;
}

/* Polls the sandbox's pids counter until it reaches want; returns the last value. */
static uint64_t settle_pids(struct cq_sandbox *sb, uint64_t want)
{
    struct cq_sandbox_stats st = {0};
    struct cq_error err = {0};
    for (int i = 0; i < 200; i++) {
        ck_assert_msg(cq_sandbox_stats(sb, &st, &err) == 0, "stats: %s", err.msg);
        if (st.pids_current == want)
            break;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return st.pids_current;
}

static void setup(void)
{
    unsetenv("CODEQ_CGROUP_VERSION");
    if (getenv("CODEQ_SANDBOX_INIT") == NULL)
        setenv("CODEQ_SANDBOX_INIT", CQ_BUILD_DIR "/bin/codeq-sandbox-init", 0);
}

/* --- lifecycle ---------------------------------------------------------------------- */

START_TEST(create_and_destroy_leave_nothing)
{
    ck_assert_int_eq(count_own_cgroups(), 0);
    struct cq_sandbox *sb = create_sandbox(NULL);
    ck_assert(cq_sandbox_alive(sb));
    struct cgroup_bases b;
    find_bases(&b);
    ck_assert_int_eq(count_own_cgroups(), b.n);

    /* Right after creation the sandbox's init is its only task, and our child. */
    pid_t tasks[16];
    size_t n = own_sandbox_tasks(tasks, 16);
    ck_assert_uint_eq(n, 1);
    ck_assert_int_eq(parent_of(tasks[0]), getpid());

    /* Some processes, so that there is something to clean up. */
    struct captured cap;
    ck_assert_int_eq(sh(sb, "echo hi", &cap), 0);

    /* Mode NONE: no network, so no bytes (and no error). */
    struct cq_sandbox_net_stats net = {1, 1};
    struct cq_error err = {0};
    ck_assert_msg(cq_sandbox_net_stats(sb, &net, &err) == 0, "%s", err.msg);
    ck_assert(net.bytes_sent == 0 && net.bytes_received == 0);

    cq_sandbox_destroy(sb);
    ck_assert_int_eq(count_own_cgroups(), 0);
    ck_assert_msg(kill(tasks[0], 0) == -1 && errno == ESRCH, "init %d survived", tasks[0]);
    /* No child left behind, not even a zombie. */
    ck_assert_int_eq(waitpid(-1, NULL, WNOHANG | __WALL), -1);
    ck_assert_int_eq(errno, ECHILD);
    cq_sandbox_destroy(NULL); /* a no-op */
}
END_TEST

START_TEST(destroy_kills_running_processes)
{
    struct cq_sandbox *sb = create_sandbox(NULL);
    static const char *const argv[] = {"sh", "-c", "sleep 100 & sleep 100", NULL};
    struct cq_spawn req;
    cq_spawn_init(&req, argv);
    struct cq_process *p = NULL;
    struct cq_error err = {0};
    ck_assert_int_eq(cq_sandbox_spawn(sb, &req, &p, &err), 0);
    /* init, shim, sh and two sleeps (or one, if the shell execs the last command) */
    ck_assert_uint_ge(settle_pids(sb, 5), 4);
    pid_t tasks[16];
    size_t n = own_sandbox_tasks(tasks, 16);
    ck_assert_uint_ge(n, 4);

    uint64_t t0 = cq_now_ms();
    cq_sandbox_destroy(sb);
    ck_assert_uint_lt(cq_now_ms() - t0, 5000);
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(kill(tasks[i], 0) == -1 && errno == ESRCH, "task %d survived", tasks[i]);
    ck_assert_int_eq(count_own_cgroups(), 0);
    cq_process_free(p);
}
END_TEST

START_TEST(invalid_configuration_costs_nothing)
{
    struct cq_sandbox_config cfg;
    cq_sandbox_config_init(&cfg);
    cfg.limits.pids = 1;
    struct cq_sandbox *sb = (struct cq_sandbox *)0x1;
    struct cq_error err = {0};
    ck_assert_int_eq(cq_sandbox_create(&cfg, &sb, &err), -1);
    ck_assert_int_eq(err.code, CQ_EINVALID);
    ck_assert_ptr_eq(sb, (struct cq_sandbox *)0x1); /* untouched on failure */
    ck_assert_int_eq(count_own_cgroups(), 0);
    ck_assert_int_eq(waitpid(-1, NULL, WNOHANG | __WALL), -1);
}
END_TEST

START_TEST(root_owned_workspace_is_refused)
{
    struct cq_sandbox_config cfg;
    cq_sandbox_config_init(&cfg);
    cfg.workspace_dir = "/";
    struct cq_sandbox *sb = NULL;
    struct cq_error err = {0};
    ck_assert_int_eq(cq_sandbox_create(&cfg, &sb, &err), -1);
    ck_assert_int_eq(err.code, EPERM);
    ck_assert_ptr_nonnull(strstr(err.msg, "root"));
    cfg.workspace_dir = "/nonexistent-codeq-workspace";
    ck_assert_int_eq(cq_sandbox_create(&cfg, &sb, &err), -1);
    ck_assert_int_eq(err.code, ENOENT);
    ck_assert_int_eq(count_own_cgroups(), 0);
}
END_TEST

START_TEST(spawn_after_init_was_killed)
{
    struct cq_sandbox *sb = create_sandbox(NULL);
    pid_t tasks[4];
    ck_assert_uint_eq(own_sandbox_tasks(tasks, 4), 1);
    pid_t init = tasks[0];
    ck_assert_int_eq(parent_of(init), getpid());
    ck_assert_int_eq(kill(init, SIGKILL), 0);
    /* Wait for its death, but leave the reaping to the library. */
    siginfo_t si;
    ck_assert_int_eq(waitid(P_PID, (id_t)init, &si, WEXITED | WNOWAIT), 0);

    ck_assert(!cq_sandbox_alive(sb));
    static const char *const argv[] = {"true", NULL};
    struct cq_spawn req;
    cq_spawn_init(&req, argv);
    struct cq_process *p = NULL;
    struct cq_error err = {0};
    ck_assert_int_eq(cq_sandbox_spawn(sb, &req, &p, &err), -1);
    ck_assert_int_eq(err.code, ESRCH);
    ck_assert_msg(strstr(err.msg, "not running") != NULL, "message: %s", err.msg);
    ck_assert_ptr_null(p);

    cq_sandbox_destroy(sb);
    ck_assert_int_eq(count_own_cgroups(), 0);
    ck_assert_int_eq(waitpid(-1, NULL, WNOHANG | __WALL), -1);
}
END_TEST

START_TEST(wait_reports_a_sandbox_killed_under_it)
{
    struct cq_sandbox *sb = create_sandbox(NULL);
    pid_t tasks[4];
    ck_assert_uint_eq(own_sandbox_tasks(tasks, 4), 1);
    static const char *const argv[] = {"sleep", "100", NULL};
    struct cq_spawn req;
    cq_spawn_init(&req, argv);
    pipes(&req);
    struct cq_process *p = NULL;
    struct cq_error err = {0};
    ck_assert_int_eq(cq_sandbox_spawn(sb, &req, &p, &err), 0);
    ck_assert_int_eq(kill(tasks[0], SIGKILL), 0);

    struct captured cap = {0};
    struct cq_wait_io io = {.on_output = capture, .ctx = &cap, .input_fd = -1};
    struct cq_process_report rep;
    uint64_t t0 = cq_now_ms();
    ck_assert_int_eq(cq_process_wait(p, &io, &rep, &err), -1);
    ck_assert_uint_lt(cq_now_ms() - t0, 5000);
    ck_assert_int_eq(err.code, ESRCH);
    ck_assert_int_eq(rep.signal, SIGKILL);
    ck_assert_int_eq(rep.exit_code, -1);
    ck_assert(!cq_sandbox_alive(sb));
    cq_process_free(p);
    cq_sandbox_destroy(sb);
}
END_TEST

/* --- processes: output, status, errors ---------------------------------------------- */

START_TEST(stdout_and_stderr_are_separate)
{
    struct cq_sandbox *sb = create_sandbox(NULL);
    struct captured cap;
    ck_assert_int_eq(sh(sb, "echo out; echo err >&2; printf more; printf ' again' >&2", &cap), 0);
    ck_assert_str_eq(cap.out, "out\nmore");
    ck_assert_str_eq(cap.err, "err\n again");
    ck_assert_uint_eq(cap.bytes, strlen("out\nmore") + strlen("err\n again"));
    cq_sandbox_destroy(sb);
}
END_TEST

START_TEST(report_fields)
{
    struct cq_sandbox *sb = create_sandbox(NULL);
    static const char *const argv[] = {"sh", "-c", "echo 12345; exit 7", NULL};
    struct captured cap;
    struct cq_process_report rep;
    run(sb, argv, &cap, &rep);
    ck_assert_int_eq(rep.exit_code, 7);
    ck_assert_int_eq(rep.signal, 0);
    ck_assert(!rep.timed_out && !rep.killed && !rep.oom_killed && !rep.output_truncated);
    ck_assert(!rep.pids_limit_hit);
    ck_assert_uint_eq(rep.output_bytes, 6);
    ck_assert_uint_lt(rep.wall_ms, 10000);
    ck_assert_uint_gt(rep.peak_memory_bytes, 0);
    cq_sandbox_destroy(sb);
}
END_TEST

START_TEST(signal_is_reported)
{
    struct cq_sandbox *sb = create_sandbox(NULL);
    static const char *const argv[] = {"sh", "-c", "kill -TERM $$; sleep 10", NULL};
    struct captured cap;
    struct cq_process_report rep;
    run(sb, argv, &cap, &rep);
    ck_assert_int_eq(rep.exit_code, -1);
    ck_assert_int_eq(rep.signal, SIGTERM);
    ck_assert(!rep.timed_out && !rep.killed && !rep.oom_killed);

    /* A SIGKILL is not an OOM kill unless the kernel's OOM killer sent it. */
    static const char *const self_kill[] = {"sh", "-c", "kill -KILL $$", NULL};
    run(sb, self_kill, &cap, &rep);
    ck_assert_int_eq(rep.signal, SIGKILL);
    ck_assert(!rep.oom_killed && !rep.timed_out && !rep.killed);
    cq_sandbox_destroy(sb);
}
END_TEST

START_TEST(missing_program_is_enoent)
{
    struct cq_sandbox *sb = create_sandbox(NULL);
    static const char *const argv[] = {"no-such-program-codeq", "--flag", NULL};
    struct cq_spawn req;
    cq_spawn_init(&req, argv);
    pipes(&req);
    struct cq_process *p = NULL;
    struct cq_error err = {0};
    ck_assert_int_eq(cq_sandbox_spawn(sb, &req, &p, &err), -1);
    ck_assert_int_eq(err.code, ENOENT);
    ck_assert_msg(strstr(err.msg, "no-such-program-codeq") != NULL, "message: %s", err.msg);
    ck_assert_ptr_null(p);

    static const char *const abs_argv[] = {"/nonexistent/bin/tool", NULL};
    cq_spawn_init(&req, abs_argv);
    ck_assert_int_eq(cq_sandbox_spawn(sb, &req, &p, &err), -1);
    ck_assert_int_eq(err.code, ENOENT);
    ck_assert_ptr_nonnull(strstr(err.msg, "/nonexistent/bin/tool"));

    /* Not executable. */
    static const char *const noexec_argv[] = {"/etc/passwd", NULL};
    cq_spawn_init(&req, noexec_argv);
    ck_assert_int_eq(cq_sandbox_spawn(sb, &req, &p, &err), -1);
    ck_assert_int_eq(err.code, EACCES);

    /* The sandbox is unharmed. */
    ck_assert(cq_sandbox_alive(sb));
    struct captured cap;
    ck_assert_int_eq(sh(sb, "echo still here", &cap), 0);
    ck_assert_str_eq(cap.out, "still here\n");
    cq_sandbox_destroy(sb);
}
END_TEST

START_TEST(bad_spawn_requests)
{
    struct cq_sandbox *sb = create_sandbox(NULL);
    struct cq_spawn req;
    struct cq_process *p = NULL;
    struct cq_error err = {0};

    static const char *const empty[] = {NULL};
    cq_spawn_init(&req, empty);
    ck_assert_int_eq(cq_sandbox_spawn(sb, &req, &p, &err), -1);
    ck_assert_int_eq(err.code, CQ_EINVALID);
    static const char *const blank[] = {"", NULL};
    cq_spawn_init(&req, blank);
    ck_assert_int_eq(cq_sandbox_spawn(sb, &req, &p, &err), -1);
    ck_assert_int_eq(err.code, CQ_EINVALID);

    static const char *const argv[] = {"true", NULL};
    cq_spawn_init(&req, argv);
    req.cwd = "relative/dir";
    ck_assert_int_eq(cq_sandbox_spawn(sb, &req, &p, &err), -1);
    ck_assert_int_eq(err.code, CQ_EINVALID);

    cq_spawn_init(&req, argv);
    static const char *const env[] = {"NOT VALID=1", NULL};
    req.env = env;
    ck_assert_int_eq(cq_sandbox_spawn(sb, &req, &p, &err), -1);
    ck_assert_int_eq(err.code, CQ_EINVALID);

    cq_spawn_init(&req, argv);
    req.stdout_mode = CQ_STDIO_FD; /* and no fd */
    ck_assert_int_eq(cq_sandbox_spawn(sb, &req, &p, &err), -1);
    ck_assert_int_eq(err.code, CQ_EINVALID);

    cq_spawn_init(&req, argv);
    req.cwd = "/nonexistent-dir";
    ck_assert_int_eq(cq_sandbox_spawn(sb, &req, &p, &err), -1);
    ck_assert_int_eq(err.code, ENOENT);
    ck_assert_ptr_null(p);

    ck_assert_uint_eq(settle_pids(sb, 1), 1); /* nothing left running */
    cq_sandbox_destroy(sb);
}
END_TEST

START_TEST(stdin_and_fd_stdio)
{
    struct cq_sandbox *sb = create_sandbox(NULL);
    /* stdin from our input fd, copied in by cq_process_wait. */
    int in[2];
    ck_assert_int_eq(pipe2(in, O_CLOEXEC), 0);
    ck_assert_int_eq(write(in[1], "hello\nworld\n", 12), 12);
    close(in[1]);
    static const char *const cat[] = {"cat", NULL};
    struct cq_spawn req;
    cq_spawn_init(&req, cat);
    pipes(&req);
    req.stdin_mode = CQ_STDIO_PIPE;
    struct cq_process *p = NULL;
    struct cq_error err = {0};
    ck_assert_int_eq(cq_sandbox_spawn(sb, &req, &p, &err), 0);
    ck_assert_int_ge(cq_process_stdin_fd(p), 0);
    struct captured cap = {0};
    struct cq_wait_io io = {.on_output = capture, .ctx = &cap, .input_fd = in[0]};
    struct cq_process_report rep;
    ck_assert_int_eq(cq_process_wait(p, &io, &rep, &err), 0);
    ck_assert_int_eq(rep.exit_code, 0);
    ck_assert_str_eq(cap.out, "hello\nworld\n");
    cq_process_free(p);
    close(in[0]);

    /* stdout to a file of ours; our fd stays ours. */
    int fd = open("/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    ck_assert_int_ge(fd, 0);
    static const char *const echo[] = {"echo", "to a file", NULL};
    cq_spawn_init(&req, echo);
    req.stdout_mode = CQ_STDIO_FD;
    req.stdout_fd = fd;
    ck_assert_int_eq(cq_sandbox_spawn(sb, &req, &p, &err), 0);
    ck_assert_int_eq(cq_process_wait(p, NULL, &rep, &err), 0);
    ck_assert_int_eq(rep.exit_code, 0);
    cq_process_free(p);
    char buf[64] = "";
    ck_assert_int_eq(pread(fd, buf, sizeof(buf) - 1, 0), 10);
    ck_assert_str_eq(buf, "to a file\n");
    ck_assert_int_ge(fcntl(fd, F_GETFD), 0);
    close(fd);
    cq_sandbox_destroy(sb);
}
END_TEST

START_TEST(path_search)
{
    struct cq_sandbox *sb = create_sandbox(NULL);
    struct captured cap;
    ck_assert_int_eq(sh(sb,
                        "printf '#!/bin/sh\\necho mine\\n' > /workspace/mytool && "
                        "chmod +x /workspace/mytool",
                        &cap),
                     0);
    /* The program is looked up in the PATH of the process's environment. */
    static const char *const argv[] = {"mytool", NULL};
    static const char *const with_workspace[] = {"PATH=/usr/bin:/workspace", NULL};
    struct cq_spawn req;
    cq_spawn_init(&req, argv);
    pipes(&req);
    req.env = with_workspace;
    struct cq_process_report rep;
    run_req(sb, &req, &cap, &rep);
    ck_assert_str_eq(cap.out, "mine\n");

    /* Without it, it is not found. */
    struct cq_process *p = NULL;
    struct cq_error err = {0};
    cq_spawn_init(&req, argv);
    ck_assert_int_eq(cq_sandbox_spawn(sb, &req, &p, &err), -1);
    ck_assert_int_eq(err.code, ENOENT);

    /* An empty PATH element is the working directory (POSIX, execvp; the search
     * in the shim means it to be "."). */
    static const char *const leading_empty[] = {"PATH=:/usr/bin", NULL};
    cq_spawn_init(&req, argv);
    pipes(&req);
    req.env = leading_empty;
    ck_assert_msg(cq_sandbox_spawn(sb, &req, &p, &err) == 0, "PATH=:/usr/bin, cwd /workspace: %s",
                  err.msg);
    ck_assert_int_eq(cq_process_wait(p, NULL, &rep, &err), 0);
    ck_assert_int_eq(rep.exit_code, 0);
    cq_process_free(p);
    cq_sandbox_destroy(sb);
}
END_TEST

START_TEST(rlimits_and_workspace_limits)
{
    struct cq_sandbox_config cfg;
    cq_sandbox_config_init(&cfg);
    cfg.limits.open_files = 100;
    cfg.limits.file_size_bytes = 1ULL << 20;
    cfg.limits.workspace_bytes = 2ULL << 20;
    cfg.limits.workspace_inodes = 64;
    struct cq_sandbox *sb = create_sandbox(&cfg);
    struct captured cap;
    ck_assert_int_eq(sh(sb, "ulimit -n; ulimit -f", &cap), 0);
    ck_assert_str_eq(cap.out, "100\n2048\n"); /* dash counts -f in 512-byte blocks */
    /* A file beyond RLIMIT_FSIZE: the writer gets SIGXFSZ. */
    ck_assert_int_eq(sh(sb, "head -c 2000000 /dev/zero > /workspace/big; echo $?", &cap), 0);
    ck_assert_str_eq(cap.out, "153\n");
    /* The workspace is full at its size, and at its inode count. */
    ck_assert_int_eq(sh(sb,
                        "rm -f /workspace/big; for i in 1 2 3; do "
                        "head -c 1000000 /dev/zero > /workspace/f$i || exit 9; done",
                        &cap),
                     9);
    ck_assert_ptr_nonnull(strstr(cap.err, "No space left"));
    ck_assert_int_eq(sh(sb,
                        "rm -f /workspace/f*; i=0; while [ $i -lt 100 ]; do "
                        "true > /workspace/n$i || exit 9; i=$((i+1)); done",
                        &cap),
                     9);
    ck_assert_ptr_nonnull(strstr(cap.err, "No space left"));
    cq_sandbox_destroy(sb);
}
END_TEST

START_TEST(input_to_a_process_that_does_not_read)
{
    /* Forwarding input to a process that exits without reading it must end in EPIPE
     * for the library, not in a SIGPIPE that kills the supervisor. */
    signal(SIGPIPE, SIG_DFL);
    struct cq_sandbox *sb = create_sandbox(NULL);
    int in = open("/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    ck_assert_int_ge(in, 0);
    char *block = calloc(1, 1 << 20);
    ck_assert_ptr_nonnull(block);
    ck_assert_int_eq(write(in, block, 1 << 20), 1 << 20);
    free(block);
    ck_assert_int_eq(lseek(in, 0, SEEK_SET), 0);

    static const char *const argv[] = {"sh", "-c", "exec 0<&-; sleep 0.2", NULL};
    struct cq_spawn req;
    cq_spawn_init(&req, argv);
    req.stdin_mode = CQ_STDIO_PIPE;
    struct cq_process *p = NULL;
    struct cq_error err = {0};
    ck_assert_int_eq(cq_sandbox_spawn(sb, &req, &p, &err), 0);
    struct cq_wait_io io = {.input_fd = in};
    struct cq_process_report rep;
    ck_assert_msg(cq_process_wait(p, &io, &rep, &err) == 0, "wait: %s", err.msg);
    ck_assert_int_eq(rep.exit_code, 0);
    ck_assert_int_eq(cq_process_stdin_fd(p), -1);
    cq_process_free(p);
    close(in);

    /* Nothing of it is left pending or blocked in this thread. */
    sigset_t pending, mask;
    sigpending(&pending);
    ck_assert(!sigismember(&pending, SIGPIPE));
    pthread_sigmask(SIG_SETMASK, NULL, &mask);
    ck_assert(!sigismember(&mask, SIGPIPE));
    cq_sandbox_destroy(sb);
}
END_TEST

START_TEST(identity_and_hostname)
{
    struct cq_sandbox_config cfg;
    cq_sandbox_config_init(&cfg);
    cfg.hostname = "unit-box";
    struct cq_sandbox *sb = create_sandbox(&cfg);
    struct captured cap;
    ck_assert_int_eq(sh(sb, "id -u; id -g; uname -n; pwd", &cap), 0);
    ck_assert_str_eq(cap.out, "1000\n1000\nunit-box\n/workspace\n");
    cq_sandbox_destroy(sb);
}
END_TEST

/* --- environment -------------------------------------------------------------------- */

/* The value of name in `env` output, and how often name appears. */
static int env_lookup(const char *out, const char *name, char *value, size_t len)
{
    int count = 0;
    size_t n = strlen(name);
    for (const char *line = out; line != NULL && *line != '\0';) {
        const char *end = strchrnul(line, '\n');
        if (strncmp(line, name, n) == 0 && line[n] == '=') {
            count++;
            snprintf(value, len, "%.*s", (int)(end - line - n - 1), line + n + 1);
        }
        line = *end != '\0' ? end + 1 : NULL;
    }
    return count;
}

static void expect_env(const char *out, const char *name, const char *expected)
{
    char value[512] = "";
    int count = env_lookup(out, name, value, sizeof(value));
    ck_assert_msg(count == 1, "%s appears %d times in:\n%s", name, count, out);
    ck_assert_msg(strcmp(value, expected) == 0, "%s=%s, expected %s", name, value, expected);
}

START_TEST(environment_layers)
{
    setenv("CQ_UNIT_HOST_ONLY", "leaked", 1);
    struct cq_sandbox_config cfg;
    cq_sandbox_config_init(&cfg);
    static const char *const sandbox_env[] = {"FOO=sandbox", "BAR=sandbox",  "LANG=C",
                                              "TWICE=first", "TWICE=second", NULL};
    cfg.env = sandbox_env;
    struct cq_sandbox *sb = create_sandbox(&cfg);

    static const char *const argv[] = {"env", NULL};
    static const char *const spawn_env[] = {"BAR=spawn", "PWD=/elsewhere", "EXTRA=1", NULL};
    struct cq_spawn req;
    cq_spawn_init(&req, argv);
    pipes(&req);
    req.env = spawn_env;
    req.cwd = "/tmp";
    struct captured cap;
    struct cq_process_report rep;
    run_req(sb, &req, &cap, &rep);
    ck_assert_int_eq(rep.exit_code, 0);

    expect_env(cap.out, "FOO", "sandbox");
    expect_env(cap.out, "BAR", "spawn"); /* the spawn overrides the sandbox */
    expect_env(cap.out, "PWD", "/tmp");  /* and PWD always follows cwd */
    expect_env(cap.out, "EXTRA", "1");
    expect_env(cap.out, "LANG", "C");       /* the configuration overrides a default */
    expect_env(cap.out, "TWICE", "second"); /* later wins within one list too */
    expect_env(cap.out, "HOME", "/workspace");
    expect_env(cap.out, "TMPDIR", "/tmp");
    char value[512];
    ck_assert_int_eq(env_lookup(cap.out, "PATH", value, sizeof(value)), 1);
    ck_assert_ptr_nonnull(strstr(value, "/usr/bin"));
    ck_assert_int_eq(env_lookup(cap.out, "CQ_UNIT_HOST_ONLY", value, sizeof(value)), 0);

    /* The working directory is the one asked for. */
    static const char *const pwd[] = {"sh", "-c", "pwd -P", NULL};
    cq_spawn_init(&req, pwd);
    pipes(&req);
    req.cwd = "/tmp";
    run_req(sb, &req, &cap, &rep);
    ck_assert_str_eq(cap.out, "/tmp\n");
    cq_sandbox_destroy(sb);
}
END_TEST

/* --- limits ------------------------------------------------------------------------- */

START_TEST(timeout_kills_the_whole_tree)
{
    struct cq_sandbox *sb = create_sandbox(NULL);
    static const char *const argv[] = {"sh", "-c", "sleep 100 & sleep 100", NULL};
    struct cq_spawn req;
    cq_spawn_init(&req, argv);
    pipes(&req); /* the background sleep holds the pipes too */
    req.timeout_ms = 300;
    struct captured cap;
    struct cq_process_report rep;
    uint64_t t0 = cq_now_ms();
    run_req(sb, &req, &cap, &rep);
    uint64_t took = cq_now_ms() - t0;
    ck_assert(rep.timed_out);
    ck_assert(!rep.killed && !rep.oom_killed);
    ck_assert_int_eq(rep.signal, SIGKILL);
    ck_assert_int_eq(rep.exit_code, -1);
    ck_assert_uint_ge(rep.wall_ms, 300);
    ck_assert_msg(took < 5000, "wait took %llu ms", (unsigned long long)took);
    /* Only init is left: the background sleep went with the tree. */
    ck_assert_uint_eq(settle_pids(sb, 1), 1);
    cq_sandbox_destroy(sb);
}
END_TEST

START_TEST(fast_process_is_not_timed_out)
{
    struct cq_sandbox *sb = create_sandbox(NULL);
    static const char *const argv[] = {"true", NULL};
    struct cq_spawn req;
    cq_spawn_init(&req, argv);
    req.timeout_ms = 10000;
    struct captured cap;
    struct cq_process_report rep;
    run_req(sb, &req, &cap, &rep);
    ck_assert(!rep.timed_out);
    ck_assert_int_eq(rep.exit_code, 0);
    ck_assert_uint_lt(rep.wall_ms, 10000);
    cq_sandbox_destroy(sb);
}
END_TEST

struct killer {
    struct cq_process *p;
    int rc;
};

static void *kill_later(void *arg)
{
    struct killer *k = arg;
    struct timespec ts = {0, 200 * 1000 * 1000};
    nanosleep(&ts, NULL);
    k->rc = cq_process_kill(k->p);
    return NULL;
}

START_TEST(kill_from_another_thread)
{
    struct cq_sandbox *sb = create_sandbox(NULL);
    static const char *const argv[] = {"sh", "-c", "sleep 100 & sleep 100", NULL};
    struct cq_spawn req;
    cq_spawn_init(&req, argv);
    pipes(&req);
    struct cq_process *p = NULL;
    struct cq_error err = {0};
    ck_assert_int_eq(cq_sandbox_spawn(sb, &req, &p, &err), 0);

    struct killer k = {.p = p, .rc = -99};
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, kill_later, &k), 0);
    struct captured cap = {0};
    struct cq_wait_io io = {.on_output = capture, .ctx = &cap, .input_fd = -1};
    struct cq_process_report rep;
    uint64_t t0 = cq_now_ms();
    int rc = cq_process_wait(p, &io, &rep, &err);
    pthread_join(t, NULL);
    ck_assert_msg(rc == 0, "wait: %s", err.msg);
    ck_assert_int_eq(k.rc, 0);
    ck_assert(rep.killed);
    ck_assert(!rep.timed_out && !rep.oom_killed);
    ck_assert_int_eq(rep.signal, SIGKILL);
    ck_assert_uint_lt(cq_now_ms() - t0, 5000);
    /* Once it has ended, a kill says so. */
    ck_assert_int_eq(cq_process_kill(p), -1);
    cq_process_free(p);
    ck_assert_uint_eq(settle_pids(sb, 1), 1);
    cq_sandbox_destroy(sb);
}
END_TEST

START_TEST(free_kills_a_running_process)
{
    struct cq_sandbox *sb = create_sandbox(NULL);
    static const char *const argv[] = {"sleep", "100", NULL};
    struct cq_spawn req;
    cq_spawn_init(&req, argv);
    struct cq_process *p = NULL;
    struct cq_error err = {0};
    ck_assert_int_eq(cq_sandbox_spawn(sb, &req, &p, &err), 0);
    ck_assert_uint_eq(settle_pids(sb, 3), 3); /* init, shim, sleep */
    cq_process_free(p);
    ck_assert_uint_eq(settle_pids(sb, 1), 1);
    cq_sandbox_destroy(sb);
}
END_TEST

START_TEST(output_limit_truncates_and_counts)
{
    struct cq_sandbox *sb = create_sandbox(NULL);
    static const char *const argv[] = {"sh", "-c", "head -c 100000 /dev/zero; echo tail >&2", NULL};
    struct cq_spawn req;
    cq_spawn_init(&req, argv);
    pipes(&req);
    req.output_limit_bytes = 1000;
    struct captured cap;
    struct cq_process_report rep;
    run_req(sb, &req, &cap, &rep);
    ck_assert_int_eq(rep.exit_code, 0);
    ck_assert(rep.output_truncated);
    ck_assert_uint_eq(cap.bytes, 1000);
    ck_assert_uint_eq(rep.output_bytes, 100000 + 5);

    /* Under the limit nothing is cut. */
    static const char *const small[] = {"echo", "fits", NULL};
    cq_spawn_init(&req, small);
    pipes(&req);
    req.output_limit_bytes = 5;
    run_req(sb, &req, &cap, &rep);
    ck_assert(!rep.output_truncated);
    ck_assert_str_eq(cap.out, "fits\n");
    ck_assert_uint_eq(rep.output_bytes, 5);
    cq_sandbox_destroy(sb);
}
END_TEST

START_TEST(memory_limit_is_reported_as_oom)
{
    struct cq_sandbox_config cfg;
    cq_sandbox_config_init(&cfg);
    cfg.limits.memory_bytes = 64ULL << 20;
    struct cq_sandbox *sb = create_sandbox(&cfg);
    static const char *const argv[] = {"python3", "-c", "x = b'a' * (512 << 20)", NULL};
    struct cq_spawn req;
    cq_spawn_init(&req, argv);
    pipes(&req);
    req.timeout_ms = 30000;
    struct captured cap;
    struct cq_process_report rep;
    run_req(sb, &req, &cap, &rep);
    ck_assert_msg(rep.oom_killed, "not oom_killed: exit %d signal %d stderr %s", rep.exit_code,
                  rep.signal, cap.err);
    ck_assert_int_eq(rep.signal, SIGKILL);
    ck_assert(!rep.timed_out && !rep.killed);

    struct cq_sandbox_stats st;
    struct cq_error err = {0};
    ck_assert_int_eq(cq_sandbox_stats(sb, &st, &err), 0);
    ck_assert_uint_ge(st.oom_kills, 1);
    ck_assert_uint_le(st.memory_peak_bytes, 64ULL << 20);
    /* The sandbox survives its process's OOM kill. */
    ck_assert(cq_sandbox_alive(sb));
    ck_assert_int_eq(sh(sb, "echo alive", &cap), 0);
    ck_assert_str_eq(cap.out, "alive\n");
    cq_sandbox_destroy(sb);
}
END_TEST

START_TEST(pids_limit_is_reported)
{
    struct cq_sandbox_config cfg;
    cq_sandbox_config_init(&cfg);
    cfg.limits.pids = 16;
    struct cq_sandbox *sb = create_sandbox(&cfg);
    static const char *const argv[] = {
        "sh", "-c", "i=0; while [ $i -lt 40 ]; do sleep 30 & i=$((i+1)); done; wait", NULL};
    struct cq_spawn req;
    cq_spawn_init(&req, argv);
    pipes(&req);
    req.timeout_ms = 20000;
    struct captured cap;
    struct cq_process_report rep;
    run_req(sb, &req, &cap, &rep);
    ck_assert(rep.pids_limit_hit);
    ck_assert(!rep.timed_out);
    ck_assert_uint_eq(settle_pids(sb, 1), 1);
    struct cq_sandbox_stats st;
    struct cq_error err = {0};
    ck_assert_int_eq(cq_sandbox_stats(sb, &st, &err), 0);
    ck_assert_uint_ge(st.pids_limit_hits, 1);

    /* The next process does not inherit the flag. */
    static const char *const t[] = {"true", NULL};
    run(sb, t, &cap, &rep);
    ck_assert_int_eq(rep.exit_code, 0);
    ck_assert(!rep.pids_limit_hit);
    cq_sandbox_destroy(sb);
}
END_TEST

START_TEST(spawn_at_the_pids_limit_is_eagain)
{
    struct cq_sandbox_config cfg;
    cq_sandbox_config_init(&cfg);
    cfg.limits.pids = 4; /* init + (shim + process) + one more shim */
    struct cq_sandbox *sb = create_sandbox(&cfg);
    static const char *const sleeper[] = {"sleep", "100", NULL};
    struct cq_spawn req;
    cq_spawn_init(&req, sleeper);
    struct cq_process *p = NULL, *q = NULL;
    struct cq_error err = {0};
    ck_assert_int_eq(cq_sandbox_spawn(sb, &req, &p, &err), 0);

    static const char *const t[] = {"true", NULL};
    cq_spawn_init(&req, t);
    ck_assert_int_eq(cq_sandbox_spawn(sb, &req, &q, &err), -1);
    ck_assert_int_eq(err.code, EAGAIN);
    ck_assert_msg(strstr(err.msg, "true") != NULL, "message: %s", err.msg);

    /* Room again once the first one is gone. */
    ck_assert_int_eq(cq_process_kill(p), 0);
    struct cq_process_report rep;
    ck_assert_int_eq(cq_process_wait(p, NULL, &rep, &err), 0);
    ck_assert(rep.killed);
    cq_process_free(p);
    ck_assert_uint_eq(settle_pids(sb, 1), 1);
    ck_assert_int_eq(cq_sandbox_spawn(sb, &req, &q, &err), 0);
    ck_assert_int_eq(cq_process_wait(q, NULL, &rep, &err), 0);
    ck_assert_int_eq(rep.exit_code, 0);
    cq_process_free(q);
    cq_sandbox_destroy(sb);
}
END_TEST

START_TEST(cpu_limit_throttles)
{
    struct cq_sandbox_config cfg;
    cq_sandbox_config_init(&cfg);
    cfg.limits.cpus = 0.1;
    struct cq_sandbox *sb = create_sandbox(&cfg);
    static const char *const argv[] = {"sh", "-c", "while :; do :; done", NULL};
    struct cq_spawn req;
    cq_spawn_init(&req, argv);
    req.timeout_ms = 1000;
    struct captured cap;
    struct cq_process_report rep;
    run_req(sb, &req, &cap, &rep);
    ck_assert(rep.timed_out);
    /* A tenth of a core for a second: about 100 ms of CPU, far from 1000. */
    ck_assert_msg(rep.cpu_ms >= 20 && rep.cpu_ms <= 400, "cpu_ms %llu in 1 s at 0.1 cpus",
                  (unsigned long long)rep.cpu_ms);
    cq_sandbox_destroy(sb);
}
END_TEST

START_TEST(stats_count_the_cpu_time_of_a_busy_loop)
{
    /* The sandbox's CPU time comes from its cgroup: cpu.stat on v2, cpuacct.usage on
     * v1, from the cpu directory where cpuacct is mounted with cpu and from a cgroup
     * of the sandbox's own in the cpuacct hierarchy where it is mounted apart (as on
     * this project's machines). */
    struct cgroup_bases b;
    find_bases(&b);
    struct cq_sandbox *sb = create_sandbox(NULL);
    if (b.cpuacct >= 0)
        ck_assert_msg(count_own_cgroups_in(b.dir[b.cpuacct]) == 1, "no cgroup below %s",
                      b.dir[b.cpuacct]);
    struct cq_sandbox_stats before, after;
    struct cq_error err = {0};
    ck_assert_msg(cq_sandbox_stats(sb, &before, &err) == 0, "stats: %s", err.msg);
    static const char *const argv[] = {"sh", "-c", "while :; do :; done", NULL};
    struct cq_spawn req;
    cq_spawn_init(&req, argv);
    req.timeout_ms = 300;
    struct captured cap;
    struct cq_process_report rep;
    run_req(sb, &req, &cap, &rep);
    ck_assert(rep.timed_out);
    ck_assert_msg(cq_sandbox_stats(sb, &after, &err) == 0, "stats: %s", err.msg);
    ck_assert_msg(after.cpu_usage_us > before.cpu_usage_us, "cpu_usage_us %llu, then %llu",
                  (unsigned long long)before.cpu_usage_us, (unsigned long long)after.cpu_usage_us);
    /* The cgroup counts at least what the loop's own process tree used (rusage, which
     * counts in scheduler ticks: half of it leaves room for their rounding). */
    ck_assert_msg(after.cpu_usage_us - before.cpu_usage_us >= rep.cpu_ms * 1000 / 2,
                  "cgroup %llu us, process tree %llu ms",
                  (unsigned long long)(after.cpu_usage_us - before.cpu_usage_us),
                  (unsigned long long)rep.cpu_ms);
    cq_sandbox_destroy(sb);
    ck_assert_int_eq(count_own_cgroups(), 0);
    if (b.cpuacct >= 0)
        ck_assert_int_eq(count_own_cgroups_in(b.dir[b.cpuacct]), 0);
}
END_TEST

START_TEST(sandbox_runs_without_its_cpuacct_cgroup)
{
    /* Where the cgroup in a cpuacct hierarchy of its own cannot be made (here: a
     * directory of its name is there already; this process's first sandbox is named
     * "<pid>-0"), the sandbox still runs, within its limits, without its CPU time. */
    struct cgroup_bases b;
    find_bases(&b);
    if (b.cpuacct < 0)
        return;
    char taken[PATH_MAX + 32];
    mkdir(b.dir[b.cpuacct], 0755);
    snprintf(taken, sizeof(taken), "%s/%d-0", b.dir[b.cpuacct], (int)getpid());
    ck_assert_msg(mkdir(taken, 0755) == 0, "mkdir %s: %s", taken, strerror(errno));
    struct cq_sandbox *sb = create_sandbox(NULL);
    struct captured cap;
    ck_assert_int_eq(sh(sb, "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; echo $i", &cap), 0);
    ck_assert_str_eq(cap.out, "20000\n");
    struct cq_sandbox_stats st;
    struct cq_error err = {0};
    ck_assert_msg(cq_sandbox_stats(sb, &st, &err) == 0, "stats: %s", err.msg);
    ck_assert_uint_eq(st.cpu_usage_us, 0); /* unknown */
    ck_assert_uint_gt(st.memory_limit_bytes, 0);
    cq_sandbox_destroy(sb);
    ck_assert_msg(access(taken, F_OK) == 0, "destroy removed %s, which it did not make", taken);
    ck_assert_int_eq(rmdir(taken), 0);
    ck_assert_int_eq(count_own_cgroups(), 0);
}
END_TEST

START_TEST(stats_report_the_configured_limit)
{
    struct cq_sandbox_config cfg;
    cq_sandbox_config_init(&cfg);
    cfg.limits.memory_bytes = 96ULL << 20;
    struct cq_sandbox *sb = create_sandbox(&cfg);
    struct cq_sandbox_stats st;
    struct cq_error err = {0};
    ck_assert_int_eq(cq_sandbox_stats(sb, &st, &err), 0);
    ck_assert_uint_eq(st.memory_limit_bytes, 96ULL << 20);
    ck_assert_uint_eq(st.pids_current, 1); /* init */
    ck_assert_uint_eq(st.oom_kills, 0);
    ck_assert_uint_eq(st.pids_limit_hits, 0);
    struct captured cap;
    ck_assert_int_eq(sh(sb, "head -c 1000000 /dev/urandom > /dev/null", &cap), 0);
    ck_assert_int_eq(cq_sandbox_stats(sb, &st, &err), 0);
    ck_assert_uint_gt(st.memory_peak_bytes, 0);
    ck_assert_uint_le(st.memory_peak_bytes, 96ULL << 20);
    cq_sandbox_destroy(sb);
}
END_TEST

/* --- isolation and concurrency ------------------------------------------------------ */

START_TEST(sandboxes_do_not_see_each_other)
{
    struct cq_sandbox *a = create_sandbox(NULL);
    struct cq_sandbox *b = create_sandbox(NULL);
    struct captured cap;
    ck_assert_int_eq(sh(a,
                        "echo secret > /workspace/file && echo tmp > /tmp/t && cat "
                        "/workspace/file",
                        &cap),
                     0);
    ck_assert_str_eq(cap.out, "secret\n");
    ck_assert_int_eq(sh(b, "test -e /workspace/file", &cap), 1);
    ck_assert_int_eq(sh(b, "test -e /tmp/t", &cap), 1);
    ck_assert_int_eq(sh(b, "ls -A /workspace | wc -l", &cap), 0);
    ck_assert_str_eq(cap.out, "0\n");
    /* And the file is still there for a later process of a. */
    ck_assert_int_eq(sh(a, "cat /workspace/file", &cap), 0);
    ck_assert_str_eq(cap.out, "secret\n");
    cq_sandbox_destroy(a);
    ck_assert(cq_sandbox_alive(b));
    ck_assert_int_eq(sh(b, "echo b", &cap), 0);
    cq_sandbox_destroy(b);
    ck_assert_int_eq(count_own_cgroups(), 0);
}
END_TEST

/* Runs a process in a sandbox on a host directory owned by uid/gid 54321 with the
 * given mode, and checks that what it wrote is there, owned by that uid. */
static void check_host_workspace(mode_t mode)
{
    char dir[] = "/tmp/cq-unit-ws-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    ck_assert_int_eq(chown(dir, 54321, 54321), 0);
    ck_assert_int_eq(chmod(dir, mode), 0);
    char path[64];
    snprintf(path, sizeof(path), "%s/out", dir);
    struct cq_sandbox_config cfg;
    cq_sandbox_config_init(&cfg);
    cfg.workspace_dir = dir;
    struct cq_sandbox *sb = create_sandbox(&cfg);
    static const char *const argv[] = {"sh", "-c", "echo from-sandbox > /workspace/out", NULL};
    struct cq_spawn req;
    cq_spawn_init(&req, argv);
    struct cq_process *p = NULL;
    struct cq_error err = {0};
    int rc = cq_sandbox_spawn(sb, &req, &p, &err);
    struct cq_process_report rep = {.exit_code = -1};
    if (rc == 0)
        cq_process_wait(p, NULL, &rep, &err);
    cq_process_free(p);
    cq_sandbox_destroy(sb);

    struct stat st;
    int have = stat(path, &st);
    char buf[64] = "";
    FILE *f = have == 0 ? fopen(path, "re") : NULL;
    if (f != NULL) {
        (void)!fgets(buf, sizeof(buf), f);
        fclose(f);
    }
    unlink(path);
    rmdir(dir);

    ck_assert_msg(rc == 0, "workspace of mode %04o: %s", (unsigned)mode, err.msg);
    ck_assert_int_eq(rep.exit_code, 0);
    ck_assert_int_eq(have, 0);
    ck_assert_uint_eq(st.st_uid, 54321); /* the directory's owner, never root */
    ck_assert_str_eq(buf, "from-sandbox\n");
}

START_TEST(host_workspace_directory)
{
    check_host_workspace(0755);
}
END_TEST

START_TEST(private_host_workspace_directory)
{
    /* Sandboxed code acts as the directory's owner (sandbox.h), so the owner's own
     * private directory (mkdtemp, umask 077, a home directory) must work too. */
    check_host_workspace(0700);
}
END_TEST

START_TEST(relative_workspace_directory)
{
    /* A relative workspace_dir either works (resolved against our cwd, like the
     * CLI's realpath) or is refused up front as invalid input; it must not reach
     * init as a path it resolves somewhere else. */
    ck_assert_int_eq(chdir("/tmp"), 0);
    char name[] = "cq-unit-rel-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(name));
    ck_assert_int_eq(chown(name, 54321, 54321), 0);
    ck_assert_int_eq(chmod(name, 0755), 0);
    struct cq_sandbox_config cfg;
    cq_sandbox_config_init(&cfg);
    cfg.workspace_dir = name;
    struct cq_sandbox *sb = NULL;
    struct cq_error err = {0};
    int rc = cq_sandbox_create(&cfg, &sb, &err);
    int exit_code = -1;
    char path[64];
    snprintf(path, sizeof(path), "/tmp/%s/out", name);
    if (rc == 0) {
        struct captured cap;
        exit_code = sh(sb, "echo here > /workspace/out", &cap);
        cq_sandbox_destroy(sb);
    }
    bool written = access(path, F_OK) == 0;
    unlink(path);
    rmdir(name);
    if (rc < 0) {
        ck_assert_msg(err.code == CQ_EINVALID, "relative workspace: code %s, message: %s",
                      cq_error_code_name(err.code), err.msg);
    } else {
        ck_assert_int_eq(exit_code, 0);
        ck_assert(written);
    }
}
END_TEST

#define THREADS           4
#define SPAWNS_PER_THREAD 3

struct worker {
    struct cq_sandbox *sb;
    int index;
    int failures;
    char why[256];
};

static void *spawn_worker(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < SPAWNS_PER_THREAD; i++) {
        char tag[32], expected[40];
        snprintf(tag, sizeof(tag), "thread%d-run%d", w->index, i);
        snprintf(expected, sizeof(expected), "%s\n", tag);
        const char *argv[] = {"sh", "-c", "echo $1", "sh", tag, NULL};
        struct cq_spawn req;
        cq_spawn_init(&req, argv);
        pipes(&req);
        struct cq_process *p = NULL;
        struct cq_error err = {0};
        struct captured *cap = calloc(1, sizeof(*cap));
        struct cq_process_report rep;
        struct cq_wait_io io = {.on_output = capture, .ctx = cap, .input_fd = -1};
        if (cq_sandbox_spawn(w->sb, &req, &p, &err) < 0 ||
            cq_process_wait(p, &io, &rep, &err) < 0) {
            w->failures++;
            snprintf(w->why, sizeof(w->why), "%s: %s", tag, err.msg);
        } else if (rep.exit_code != 0 || strcmp(cap->out, expected) != 0) {
            w->failures++;
            snprintf(w->why, sizeof(w->why), "%s: exit %d output '%s'", tag, rep.exit_code,
                     cap->out);
        }
        cq_process_free(p);
        free(cap);
    }
    return NULL;
}

START_TEST(concurrent_spawns_in_one_sandbox)
{
    struct cq_sandbox *sb = create_sandbox(NULL);
    struct worker workers[THREADS];
    pthread_t threads[THREADS];
    for (int i = 0; i < THREADS; i++) {
        workers[i] = (struct worker){.sb = sb, .index = i};
        ck_assert_int_eq(pthread_create(&threads[i], NULL, spawn_worker, &workers[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(threads[i], NULL);
    for (int i = 0; i < THREADS; i++)
        ck_assert_msg(workers[i].failures == 0, "thread %d: %d failures, last: %s", i,
                      workers[i].failures, workers[i].why);
    ck_assert_uint_eq(settle_pids(sb, 1), 1);
    cq_sandbox_destroy(sb);
}
END_TEST

static Suite *sandbox_suite(void)
{
    Suite *s = suite_create("sandbox");
    TCase *tc = tcase_create("lifecycle");
    tcase_add_checked_fixture(tc, setup, NULL);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, create_and_destroy_leave_nothing);
    tcase_add_test(tc, destroy_kills_running_processes);
    tcase_add_test(tc, invalid_configuration_costs_nothing);
    tcase_add_test(tc, root_owned_workspace_is_refused);
    tcase_add_test(tc, spawn_after_init_was_killed);
    tcase_add_test(tc, wait_reports_a_sandbox_killed_under_it);
    suite_add_tcase(s, tc);

    tc = tcase_create("processes");
    tcase_add_checked_fixture(tc, setup, NULL);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, stdout_and_stderr_are_separate);
    tcase_add_test(tc, report_fields);
    tcase_add_test(tc, signal_is_reported);
    tcase_add_test(tc, missing_program_is_enoent);
    tcase_add_test(tc, bad_spawn_requests);
    tcase_add_test(tc, stdin_and_fd_stdio);
    tcase_add_test(tc, identity_and_hostname);
    tcase_add_test(tc, input_to_a_process_that_does_not_read);
    tcase_add_test(tc, path_search);
    tcase_add_test(tc, environment_layers);
    suite_add_tcase(s, tc);

    tc = tcase_create("limits");
    tcase_add_checked_fixture(tc, setup, NULL);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, timeout_kills_the_whole_tree);
    tcase_add_test(tc, fast_process_is_not_timed_out);
    tcase_add_test(tc, kill_from_another_thread);
    tcase_add_test(tc, free_kills_a_running_process);
    tcase_add_test(tc, output_limit_truncates_and_counts);
    tcase_add_test(tc, memory_limit_is_reported_as_oom);
    tcase_add_test(tc, pids_limit_is_reported);
    tcase_add_test(tc, spawn_at_the_pids_limit_is_eagain);
    tcase_add_test(tc, stats_report_the_configured_limit);
    tcase_add_test(tc, cpu_limit_throttles);
    tcase_add_test(tc, stats_count_the_cpu_time_of_a_busy_loop);
    tcase_add_test(tc, sandbox_runs_without_its_cpuacct_cgroup);
    tcase_add_test(tc, rlimits_and_workspace_limits);
    suite_add_tcase(s, tc);

    tc = tcase_create("isolation");
    tcase_add_checked_fixture(tc, setup, NULL);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, sandboxes_do_not_see_each_other);
    tcase_add_test(tc, host_workspace_directory);
    tcase_add_test(tc, private_host_workspace_directory);
    tcase_add_test(tc, relative_workspace_directory);
    tcase_add_test(tc, concurrent_spawns_in_one_sandbox);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    if (geteuid() != 0) {
        fprintf(stderr, "test_sandbox needs root\n");
        return EXIT_FAILURE;
    }
    return cq_unit_run(sandbox_suite(), true);
}
