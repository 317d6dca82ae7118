/* sandbox/init/shim.c - one shim per sandboxed process.
 *
 * init forks the shim with CLONE_NEWPID | CLONE_NEWNS, so the shim is pid 1 of a
 * pid namespace that holds exactly the process it starts and that process's
 * descendants. That makes "the process tree" a kernel object:
 *  - setsid, double forks and daemonising cannot leave it;
 *  - kill(-1, SIGKILL) from the shim reaches all of it and nothing else;
 *  - when the shim exits, the kernel kills whatever is left in it.
 * The process also gets its own mount namespace with a /proc of its own pid
 * namespace, so getpid() and /proc agree (psutil and ps work) and it cannot see
 * other processes of the session.
 *
 * The shim reports on the status socket: STARTED once execve succeeded (or
 * SPAWN_FAILED with the errno), then EXITED with status, CPU, peak RSS and wall
 * time once the whole tree is gone. It ends the tree when the main process exits,
 * when the timeout passes, when the supervisor sends KILL, or when the supervisor
 * goes away (status socket closed).
 */
#define _GNU_SOURCE
#include "sandbox/init/init.h"
#include "sandbox/seccomp_bpf.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/audit.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void report_exit(int status_fd, const struct cq_exit_status *status)
{
    static struct cq_msg_writer w;
    cq_msg_begin(&w, CQ_MSG_EXITED);
    cq_msg_put(&w, CQ_F_EXIT, status, sizeof(*status));
    (void)cq_msg_send(status_fd, &w, NULL, 0,
                      NULL); /* a vanished supervisor is not an error here */
}

static void report_failure(int status_fd, int error, const char *what)
{
    static struct cq_msg_writer w;
    int32_t code = error;
    cq_msg_begin(&w, CQ_MSG_SPAWN_FAILED);
    cq_msg_put(&w, CQ_F_ERRNO, &code, sizeof(code));
    cq_msg_put_str(&w, CQ_F_TEXT, what);
    (void)cq_msg_send(status_fd, &w, NULL, 0, NULL);
}

static const char *env_lookup(const char *const *envp, const char *name)
{
    size_t n = strlen(name);
    for (; *envp != NULL; envp++)
        if (strncmp(*envp, name, n) == 0 && (*envp)[n] == '=')
            return *envp + n + 1;
    return NULL;
}

/* execvpe searches the PATH of the *current* environment; the command's PATH is the
 * one in envp, so the search is done here. */
static int exec_search(const char *const *argv, const char *const *envp)
{
    const char *file = argv[0];
    if (strchr(file, '/') != NULL) {
        execve(file, (char *const *)argv, (char *const *)envp);
        return errno;
    }
    const char *path = env_lookup(envp, "PATH");
    if (path == NULL)
        path = "/usr/local/bin:/usr/bin:/bin";
    int result = ENOENT;
    char candidate[PATH_MAX];
    for (const char *p = path;; p++) {
        const char *end = strchrnul(p, ':');
        /* An empty element is the working directory, as in POSIX shells. */
        int n = end == p
                    ? snprintf(candidate, sizeof(candidate), "./%s", file)
                    : snprintf(candidate, sizeof(candidate), "%.*s/%s", (int)(end - p), p, file);
        if (n > 0 && (size_t)n < sizeof(candidate)) {
            execve(candidate, (char *const *)argv, (char *const *)envp);
            if (errno == EACCES)
                result = EACCES; /* keep looking, but report it if nothing runs */
            else if (errno != ENOENT && errno != ENOTDIR)
                return errno;
        }
        if (*end == '\0')
            break;
        p = end;
    }
    return result;
}

/* Moves fd to at least `floor`, so dup2 onto 0..2 cannot clobber a source. */
static int lift_fd(int fd, int floor)
{
    if (fd < 0 || fd >= floor)
        return fd;
    return fcntl(fd, F_DUPFD_CLOEXEC, floor);
}

/* The child: becomes the sandboxed process. Reports an errno on fd 3 (close-on-
 * exec, so a successful execve closes it) and exits 127 on any failure. */
static void __attribute__((noreturn))
run_command(const struct init_config *cfg, const struct spawn_request *req, const int stdio[3],
            int exec_error_fd)
{
    int error = 0;
    const char *step = "setsid";
    /* No controlling terminal: TIOCSTI-style input injection needs one, and the
     * session must not be tied to anything of the host. */
    if (setsid() < 0)
        goto fail;
    step = "stdio";
    int lifted[3];
    for (int i = 0; i < 3; i++)
        lifted[i] = lift_fd(stdio[i], 10);
    exec_error_fd = lift_fd(exec_error_fd, 10);
    for (int i = 0; i < 3; i++) {
        int fd = lifted[i];
        if (fd < 0)
            fd = open("/dev/null", i == 0 ? O_RDONLY : O_WRONLY);
        if (fd < 0 || dup2(fd, i) < 0)
            goto fail;
    }
    if (dup3(exec_error_fd, EXEC_ERROR_FD, O_CLOEXEC) < 0)
        goto fail;
    /* Only fds 0-2 survive execve: the status socket, the control socket and any
     * other descriptor would otherwise be inherited (CVE-2024-21626 was a leaked
     * directory fd). */
    step = "close fds";
    if (syscall(SYS_close_range, EXEC_ERROR_FD + 1, ~0U, 0) < 0)
        goto fail;
    if (init_become_user(&cfg->ids, cfg->flags.keep_groups, req, &step) < 0)
        goto fail;
    step = "execve";
    error = exec_search(req->argv, req->envp);
    goto report;
fail:
    error = errno;
report:;
    struct {
        int32_t error;
        char step[28];
    } failure = {.error = error};
    snprintf(failure.step, sizeof(failure.step), "%s", step);
    (void)!write(EXEC_ERROR_FD, &failure, sizeof(failure));
    _exit(127);
}

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* SIGNAL: to the main process only (e.g. SIGINT to interrupt a kernel's cell). */
static void deliver_signal(const struct cq_msg_reader *msg, pid_t child)
{
    struct cq_msg_reader r = *msg;
    uint16_t tag;
    const void *data;
    size_t len;
    while (cq_msg_next(&r, &tag, &data, &len, NULL) > 0) {
        int32_t sig;
        if (tag != CQ_F_SIGNAL || len != sizeof(sig))
            continue;
        memcpy(&sig, data, sizeof(sig));
        if (sig > 0 && sig < NSIG)
            kill(child, sig);
    }
}

static void kill_tree(void)
{
    /* From pid 1 of a pid namespace, kill(-1) reaches every other process in the
     * namespace and its descendants, and never the caller. */
    kill(-1, SIGKILL);
}

/* The shim's state, from the spawn request to the final report. */
struct shim {
    int status_fd; /* to the supervisor */
    int signal_fd; /* SIGCHLD */
    int exec_fd;   /* read end of the exec-error pipe, until the exec is known */
    int timer_fd;  /* the timeout, or -1 */
    int stdio[3];  /* the process's stdio, or -1 for /dev/null */
    pid_t child;   /* the main process */
    uint64_t start_us;
    bool main_done; /* the main process has been reaped */
    bool supervisor_gone;
    struct cq_exit_status result;
};

/* The shim inherited init's channel to the supervisor; sandboxed code must never
 * reach it, and the shim has no use for it. */
static void isolate(int control_fd, int init_signal_fd)
{
    close(control_fd);
    close(init_signal_fd);
    /* If init dies the whole sandbox is going away; do not outlive it. */
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    /* Not dumpable: sandboxed processes may not open /proc/1/mem etc. of the shim. */
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
}

/* fds[0] is the status socket; the stdio fds that params marks as sent follow. */
static int take_stdio(struct shim *sh, const struct spawn_request *req, const int *fds, size_t nfds,
                      struct cq_error *err)
{
    size_t next = 1;
    for (int i = 0; i < 3; i++) {
        sh->stdio[i] = -1;
        if (req->params.stdio[i] != CQ_PROTO_STDIO_FD)
            continue;
        if (next >= nfds)
            return cq_error_set(err, EPROTO, "spawn request lacks a stdio fd");
        sh->stdio[i] = fds[next++];
    }
    return 0;
}

static int prepare_supervision(struct shim *sh, struct cq_error *err);

/* Everything before the fork: the request, the process's /proc, SIGCHLD as an fd. */
static int prepare(struct shim *sh, const struct cq_msg_reader *spawn_msg, int *fds, size_t nfds,
                   struct spawn_request *req, struct cq_error *err)
{
    if (init_parse_spawn(spawn_msg, req, err) < 0 || take_stdio(sh, req, fds, nfds, err) < 0)
        return -1;
    return prepare_supervision(sh, err);
}

/* The process's /proc, and SIGCHLD as an fd. */
static int prepare_supervision(struct shim *sh, struct cq_error *err)
{
    if (init_mount_process_proc(err) < 0)
        return -1;
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, NULL);
    sh->signal_fd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sh->signal_fd < 0)
        return cq_error_set(err, errno, "shim setup"); /* a step name: see parse_spawn */
    return 0;
}

/* Forks the process, which execs the command (run_command). */
static int start_command(struct shim *sh, const struct init_config *cfg,
                         const struct spawn_request *req, struct cq_error *err)
{
    int exec_pipe[2];
    if (pipe2(exec_pipe, O_CLOEXEC) < 0)
        return cq_error_set(err, errno, "shim setup");
    sh->child = fork();
    if (sh->child < 0)
        return cq_error_set(err, errno, "fork");
    if (sh->child == 0) {
        close(exec_pipe[0]);
        close(sh->status_fd);
        close(sh->signal_fd);
        run_command(cfg, req, sh->stdio, exec_pipe[1]);
    }
    close(exec_pipe[1]);
    sh->exec_fd = exec_pipe[0];
    /* The tree holds the only copies of its stdio now: EOF reaches the supervisor
     * exactly when the last process that could write has gone. */
    for (int i = 0; i < 3; i++)
        if (sh->stdio[i] >= 0)
            close(sh->stdio[i]);
    return 0;
}

/* 0 once the command was exec'd (the pipe closed empty), or -1 with the errno and
 * step run_command reported. */
static int await_exec(struct shim *sh, struct cq_error *err)
{
    struct {
        int32_t error;
        char step[28];
    } failure;
    ssize_t n;
    do
        n = read(sh->exec_fd, &failure, sizeof(failure));
    while (n < 0 && errno == EINTR);
    close(sh->exec_fd);
    sh->exec_fd = -1;
    if (n != (ssize_t)sizeof(failure))
        return 0;
    waitpid(sh->child, NULL, 0);
    failure.step[sizeof(failure.step) - 1] = '\0';
    return cq_error_set(err, failure.error, "%s", failure.step);
}

static int arm_timeout(struct shim *sh, uint64_t timeout_ms, struct cq_error *err)
{
    sh->timer_fd = -1;
    if (timeout_ms == 0)
        return 0;
    sh->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
    struct itimerspec its = {
        .it_value = {.tv_sec = (time_t)(timeout_ms / 1000),
                     .tv_nsec = (long)(timeout_ms % 1000) * 1000000L},
    };
    if (sh->timer_fd < 0 || timerfd_settime(sh->timer_fd, 0, &its, NULL) < 0)
        return cq_error_set(err, errno, "timer");
    return 0;
}

/* Reaps everything that has exited; orphans of the tree come to us as pid 1. True
 * when the main process is gone and nothing is left to reap. */
static bool reap(struct shim *sh)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG | __WALL)) > 0) {
        if (pid != sh->child)
            continue;
        sh->main_done = true;
        if (WIFEXITED(status))
            sh->result.exit_code = WEXITSTATUS(status);
        else if (WIFSIGNALED(status))
            sh->result.signal = WTERMSIG(status);
        /* The tree lives and dies with its main process. */
        kill_tree();
    }
    return pid < 0 && errno == ECHILD && sh->main_done;
}

/* A request from the supervisor (KILL, SIGNAL), or its departure. */
static void handle_request(struct shim *sh)
{
    uint8_t buf[64];
    ssize_t got = recv(sh->status_fd, buf, sizeof(buf), MSG_DONTWAIT);
    struct cq_msg_reader r;
    bool valid = got > 0 && cq_msg_reader_init(&r, buf, (size_t)got, NULL) == 0;
    if (valid && r.type == CQ_MSG_KILL) {
        sh->result.killed = 1;
        kill_tree();
    } else if (valid && r.type == CQ_MSG_SIGNAL && !sh->main_done) {
        deliver_signal(&r, sh->child);
    } else if (got == 0 || (got < 0 && errno != EAGAIN && errno != EINTR)) {
        /* Nobody is waiting for this process any more. */
        sh->supervisor_gone = true;
        kill_tree();
    }
}

static void handle_timeout(struct shim *sh)
{
    uint64_t expirations;
    (void)!read(sh->timer_fd, &expirations, sizeof(expirations));
    if (!sh->main_done)
        sh->result.timed_out = 1;
    kill_tree();
    close(sh->timer_fd);
    sh->timer_fd = -1;
}

/* Until the whole tree is gone: it ends when the main process exits, when the
 * timeout passes, on KILL, or when the supervisor goes away. */
static void supervise(struct shim *sh)
{
    while (!reap(sh)) {
        struct pollfd pfd[3] = {
            {.fd = sh->signal_fd, .events = POLLIN},
            {.fd = sh->supervisor_gone ? -1 : sh->status_fd, .events = POLLIN},
            {.fd = sh->timer_fd, .events = POLLIN},
        };
        if (poll(pfd, 3, -1) < 0 && errno != EINTR)
            break;
        if (pfd[0].revents & POLLIN) {
            struct signalfd_siginfo si;
            while (read(sh->signal_fd, &si, sizeof(si)) == sizeof(si))
                ;
        }
        if (pfd[1].revents & (POLLIN | POLLHUP | POLLERR))
            handle_request(sh);
        if (sh->timer_fd >= 0 && (pfd[2].revents & POLLIN))
            handle_timeout(sh);
    }
}

static void report(struct shim *sh)
{
    struct rusage ru;
    getrusage(RUSAGE_CHILDREN, &ru);
    sh->result.cpu_us = (uint64_t)ru.ru_utime.tv_sec * 1000000u + (uint64_t)ru.ru_utime.tv_usec +
                        (uint64_t)ru.ru_stime.tv_sec * 1000000u + (uint64_t)ru.ru_stime.tv_usec;
    sh->result.max_rss_bytes = (uint64_t)ru.ru_maxrss * 1024u;
    sh->result.wall_us = now_us() - sh->start_us;
    if (!sh->supervisor_gone)
        report_exit(sh->status_fd, &sh->result);
}

static void __attribute__((noreturn))
fail(const struct shim *sh, const struct cq_error *err, int status)
{
    report_failure(sh->status_fd, err->code, err->msg);
    _exit(status);
}

/* The adopted process is the first the zygote's child forked in this pid namespace
 * after us (docs/zygote.md): pid 2, our child. */
#define ADOPTED_PID 2

/* The shim of a kernel a zygote forked into the sandbox (docs/zygote.md). It was
 * forked from the zygote's child too, as pid 1 of a new pid namespace in a new mount
 * namespace below the sandbox's, made uid 0 of the sandbox and exec'd here with the
 * status socket on fd 3 and, on fd 4, a socket to the process it forked before the
 * exec (pid 2). It did not come from init, so it inherited none of init's state: it
 * takes the sandbox filter and non-dumpability itself. Then it reads the SPAWN the
 * supervisor sent (cq_sandbox_adopt: the process's limits, environment and directory),
 * passes it on to the process, which applies it to itself (become.c) before it runs
 * anything, and from then on supervises it as any shim its own. */
void init_run_adopted_shim(int status_fd, int channel_fd)
{
    static uint8_t buf[CQ_PROTO_MAX_MSG];
    static struct spawn_request req;
    struct shim sh = {
        .status_fd = status_fd,
        .signal_fd = -1,
        .exec_fd = -1,
        .timer_fd = -1,
        .stdio = {-1, -1, -1},
        .child = ADOPTED_PID,
        .start_us = now_us(),
        .result = {.exit_code = -1},
    };
    struct cq_error err = {0};
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
        init_install_filter(cq_seccomp_sandbox_bpf, cq_seccomp_sandbox_bpf_len) < 0) {
        cq_error_set(&err, errno, "adopted shim: sandbox filter");
        kill_tree();
        fail(&sh, &err, 1);
    }
    ssize_t n = cq_msg_recv(status_fd, buf, sizeof(buf), NULL, NULL, &err);
    struct cq_msg_reader r;
    if (n <= 0 || cq_msg_reader_init(&r, buf, (size_t)n, NULL) < 0 || r.type != CQ_MSG_SPAWN) {
        cq_error_set(&err, EPROTO, "adopted shim: no spawn request");
        kill_tree();
        fail(&sh, &err, 1);
    }
    /* The process must be there, and ours, before it is told to go on. */
    siginfo_t info = {0};
    if (init_parse_spawn(&r, &req, &err) < 0 || prepare_supervision(&sh, &err) < 0 ||
        waitid(P_PID, ADOPTED_PID, &info, WEXITED | WNOHANG | WNOWAIT) < 0 ||
        send(channel_fd, buf, (size_t)n, MSG_NOSIGNAL) != n) {
        if (err.code == 0)
            cq_error_set(&err, errno, "adopted shim: no process to adopt");
        kill_tree();
        fail(&sh, &err, 1);
    }
    close(channel_fd);
    (void)cq_msg_send_type(sh.status_fd, CQ_MSG_STARTED, NULL, 0, NULL);
    if (arm_timeout(&sh, req.params.timeout_ms, &err) < 0) {
        kill_tree();
        fail(&sh, &err, 1);
    }
    supervise(&sh);
    report(&sh);
    _exit(0);
}

void init_run_shim(const struct init_config *cfg, const struct cq_msg_reader *spawn_msg, int *fds,
                   size_t nfds, int control_fd, int signal_fd)
{
    static struct spawn_request req;
    struct shim sh = {
        .status_fd = fds[0],
        .signal_fd = -1,
        .exec_fd = -1,
        .timer_fd = -1,
        .start_us = now_us(),
        .result = {.exit_code = -1},
    };
    struct cq_error err = {0};
    isolate(control_fd, signal_fd);
    if (prepare(&sh, spawn_msg, fds, nfds, &req, &err) < 0 ||
        start_command(&sh, cfg, &req, &err) < 0)
        fail(&sh, &err, 1);
    if (await_exec(&sh, &err) < 0)
        fail(&sh, &err, 0); /* the shim did its part: the command could not run */
    (void)cq_msg_send_type(sh.status_fd, CQ_MSG_STARTED, NULL, 0, NULL);
    if (arm_timeout(&sh, req.params.timeout_ms, &err) < 0) {
        kill_tree();
        fail(&sh, &err, 1);
    }
    supervise(&sh);
    report(&sh);
    _exit(0);
}
