/* sandbox/process.c - running processes in a sandbox (the host side).
 *
 * A spawn sends SPAWN to the sandbox's init with, as SCM_RIGHTS, one end of a fresh
 * status socket and the stdio fds. init forks a shim (sandbox/init/shim.c) which
 * execs the process and reports on the status socket. Output pipes go straight
 * from the process to us: the supervisor counts every byte itself (pipes are not
 * limited by RLIMIT_FSIZE), passes at most the output limit on, and drains the rest
 * so that a flood neither blocks the writer nor grows any buffer.
 */
#define _GNU_SOURCE
#include "sandbox/internal.h"
#include "sandbox/protocol.h"
#include "common/clock.h"
#include "common/cleanup.h"
#include "common/units.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define SPAWN_ANSWER_TIMEOUT_MS 30000
/* After the tree is gone, how long output may still trickle in. Only a process
 * that handed its stdout to another tree of the sandbox (over a unix socket)
 * can keep a pipe open past that; waiting for it would let it hold us forever. */
#define OUTPUT_GRACE_MS 200

static bool env_name_equal(const char *a, const char *b)
{
    size_t la = strcspn(a, "="), lb = strcspn(b, "=");
    return la == lb && strncmp(a, b, la) == 0;
}

/* Adds entry to the message unless a later source overrides it. Sources, lowest
 * priority first: sandbox defaults and configuration, the spawn's env, PWD. */
static void put_env(struct cq_msg_writer *w, const char *const *lists[], size_t nlists)
{
    for (size_t l = 0; l < nlists; l++) {
        for (const char *const *e = lists[l]; e != NULL && *e != NULL; e++) {
            bool overridden = false;
            for (size_t m = l; m < nlists && !overridden; m++)
                for (const char *const *f = m == l ? e + 1 : lists[m]; f != NULL && *f != NULL; f++)
                    if (env_name_equal(*e, *f)) {
                        overridden = true;
                        break;
                    }
            if (!overridden)
                cq_msg_put_str(w, CQ_F_ENV, *e);
        }
    }
}

static int make_pipe(int fds[2], struct cq_error *err)
{
    if (pipe2(fds, O_CLOEXEC) < 0)
        return cq_error_sys(err, errno, "pipe");
    return 0;
}

static void close_fd_list(int *fds, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (fds[i] >= 0)
            close(fds[i]);
}

/* Reads the shim's first answer: STARTED, or SPAWN_FAILED with the reason. */
static int await_started(struct cq_process *p, const char *program, struct cq_error *err)
{
    uint8_t buf[1024];
    struct cq_msg_reader r;
    int got = cq_msg_await(p->status_fd, SPAWN_ANSWER_TIMEOUT_MS, buf, sizeof(buf), &r, err);
    if (got < 0)
        return cq_error_prefix(err, "start '%s' in the sandbox", program);
    if (got == 0)
        return cq_error_set(err, ESRCH, "the sandbox went away while starting '%s'", program);
    if (r.type == CQ_MSG_STARTED)
        return 0;
    int code = CQ_EPROTO;
    const char *step = "start";
    cq_msg_error_fields(&r, &code, &step);
    if (strcmp(step, "execve") == 0)
        return cq_error_sys(err, code, "cannot run '%s'", program);
    return cq_error_sys(err, code, "cannot start '%s' (%s)", program, step);
}

int cq_process_open(struct cq_sandbox *sb, const struct cq_spawn *req, struct cq_process **out,
                    int theirs[4], size_t *ntheirs, struct cq_spawn_params *params,
                    struct cq_error *err)
{
    *out = NULL;
    *ntheirs = 0;
    for (const char *const *e = req->env; e != NULL && *e != NULL; e++)
        if (cq_env_entry_validate(*e, err) < 0)
            return -1;
    const char *cwd = req->cwd != NULL ? req->cwd : CQ_SANDBOX_WORKSPACE;
    if (cwd[0] != '/')
        return cq_error_set(err, CQ_EINVALID, "working directory '%s' is not absolute", cwd);
    if (!cq_sandbox_alive(sb))
        return cq_error_set(err, ESRCH, "the sandbox is not running");
    struct cq_process *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return cq_error_sys(err, ENOMEM, "allocate process");
    p->sb = sb;
    p->status_fd = p->stdin_fd = p->stdout_fd = p->stderr_fd = -1;
    p->output_limit =
        req->output_limit_bytes != 0 ? req->output_limit_bytes : CQ_SANDBOX_DEFAULT_OUTPUT;
    *params = (struct cq_spawn_params){
        .timeout_ms = req->timeout_ms,
        .rlimit_fsize = sb->limits.file_size_bytes,
        .rlimit_nofile = sb->limits.open_files,
        .rlimit_nproc = sb->cgroup.version == 0 ? sb->limits.pids : 0,
    };
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
        cq_error_sys(err, errno, "socketpair");
        goto fail;
    }
    p->status_fd = sv[0];
    theirs[(*ntheirs)++] = sv[1];

    const enum cq_stdio_mode modes[3] = {req->stdin_mode, req->stdout_mode, req->stderr_mode};
    const int given[3] = {req->stdin_fd, req->stdout_fd, req->stderr_fd};
    int *ours[3] = {&p->stdin_fd, &p->stdout_fd, &p->stderr_fd};
    for (int i = 0; i < 3; i++) {
        params->stdio[i] = CQ_PROTO_STDIO_NULL;
        if (modes[i] == CQ_STDIO_NULL)
            continue;
        int fd;
        if (modes[i] == CQ_STDIO_FD) {
            if (given[i] < 0) {
                cq_error_set(err, CQ_EINVALID, "stdio %d: CQ_STDIO_FD without an fd", i);
                goto fail;
            }
            /* Dup so that closing "theirs" never closes the caller's fd. */
            fd = fcntl(given[i], F_DUPFD_CLOEXEC, 3);
            if (fd < 0) {
                cq_error_sys(err, errno, "stdio %d", i);
                goto fail;
            }
        } else {
            int pipefd[2];
            if (make_pipe(pipefd, err) < 0)
                goto fail;
            /* stdin: they read, we write; stdout/stderr: they write, we read. */
            fd = i == 0 ? pipefd[0] : pipefd[1];
            *ours[i] = i == 0 ? pipefd[1] : pipefd[0];
        }
        theirs[(*ntheirs)++] = fd;
        params->stdio[i] = CQ_PROTO_STDIO_FD;
    }
    *out = p;
    return 0;
fail:
    close_fd_list(theirs, *ntheirs);
    *ntheirs = 0;
    cq_process_free(p);
    return -1;
}

int cq_process_environment(const struct cq_sandbox *sb, const struct cq_spawn *req,
                           struct cq_msg_writer *msg)
{
    const char *cwd = req->cwd != NULL ? req->cwd : CQ_SANDBOX_WORKSPACE;
    char pwd[4200];
    snprintf(pwd, sizeof(pwd), "PWD=%s", cwd);
    const char *const pwd_env[] = {pwd, NULL};
    const char *const *env_lists[] = {(const char *const *)sb->env, req->env, pwd_env};
    put_env(msg, env_lists, 3);
    cq_msg_put_str(msg, CQ_F_CWD, cwd);
    return msg->overflow ? -1 : 0;
}

int cq_process_started(struct cq_process *p, const char *program, struct cq_error *err)
{
    if (await_started(p, program, err) < 0)
        return -1;
    /* Writes to a stdin the process has stopped reading must fail, not block us. */
    if (p->stdin_fd >= 0)
        fcntl(p->stdin_fd, F_SETFL, O_NONBLOCK);
    return 0;
}

int cq_sandbox_spawn(struct cq_sandbox *sb, const struct cq_spawn *req, struct cq_process **out,
                     struct cq_error *err)
{
    if (req->argv == NULL || req->argv[0] == NULL || req->argv[0][0] == '\0')
        return cq_error_set(err, CQ_EINVALID, "no program to run");
    cq_autofree struct cq_msg_writer *msg = malloc(sizeof(*msg));
    if (msg == NULL)
        return cq_error_sys(err, ENOMEM, "allocate process");
    /* Theirs: [status, stdin?, stdout?, stderr?] - closed here once sent. */
    int theirs[4] = {-1, -1, -1, -1};
    size_t ntheirs;
    struct cq_spawn_params params;
    struct cq_process *p;
    if (cq_process_open(sb, req, &p, theirs, &ntheirs, &params, err) < 0)
        return -1;

    cq_msg_begin(msg, CQ_MSG_SPAWN);
    for (const char *const *a = req->argv; *a != NULL; a++)
        cq_msg_put_str(msg, CQ_F_ARG, *a);
    cq_process_environment(sb, req, msg);
    cq_msg_put(msg, CQ_F_SPAWN, &params, sizeof(params));
    if (msg->overflow) {
        cq_error_set(err, E2BIG, "arguments and environment exceed %d bytes", CQ_PROTO_MAX_MSG);
        goto fail;
    }

    cq_cgroup_counters(&sb->cgroup, &p->oom_before, &p->pids_before);
    int rc = cq_msg_send(sb->control_fd, msg, theirs, ntheirs, err);
    close_fd_list(theirs, ntheirs);
    ntheirs = 0;
    if (rc < 0) {
        cq_error_prefix(err, "send spawn request to the sandbox");
        goto fail;
    }
    if (cq_process_started(p, req->argv[0], err) < 0)
        goto fail;
    *out = p;
    return 0;
fail:
    close_fd_list(theirs, ntheirs);
    cq_process_free(p);
    return -1;
}

int cq_process_stdin_fd(struct cq_process *p)
{
    return p->stdin_fd;
}

void cq_process_close_stdin(struct cq_process *p)
{
    cq_close_reset(&p->stdin_fd);
}

int cq_process_kill(struct cq_process *p)
{
    /* The shim may still be between its last report and its exit: a KILL it would
     * never act on must not count as delivered. */
    if (atomic_load(&p->exited))
        return -1;
    return cq_msg_send_type(p->status_fd, CQ_MSG_KILL, NULL, 0, NULL);
}

int cq_process_signal(struct cq_process *p, int sig)
{
    if (atomic_load(&p->exited) || sig <= 0 || sig >= NSIG)
        return -1;
    return cq_msg_send_int(p->status_fd, CQ_MSG_SIGNAL, CQ_F_SIGNAL, sig, NULL);
}

int cq_process_status_fd(struct cq_process *p)
{
    return p->status_fd;
}

/* Handles one message on the status socket; false when the socket is finished. */
static bool read_status(struct cq_process *p)
{
    uint8_t buf[512];
    struct cq_error err = {0};
    ssize_t n = cq_msg_recv(p->status_fd, buf, sizeof(buf), NULL, NULL, &err);
    if (n < 0 && (err.code == EAGAIN || err.code == EINTR))
        return true;
    struct cq_msg_reader r;
    if (n <= 0 || cq_msg_reader_init(&r, buf, (size_t)n, NULL) < 0)
        return false;
    if (r.type != CQ_MSG_EXITED)
        return true;
    uint16_t tag;
    const void *data;
    size_t len;
    while (cq_msg_next(&r, &tag, &data, &len, NULL) > 0)
        if (tag == CQ_F_EXIT && len == sizeof(p->exit)) {
            memcpy(&p->exit, data, len);
            atomic_store(&p->exited, true);
        }
    return false;
}

struct pump {
    struct cq_process *p;
    const struct cq_wait_io *io;
    uint64_t produced, passed;
    bool truncated;
    char pending[65536]; /* input read but not yet accepted by stdin */
    size_t pending_len, pending_off;
    int input_fd;
};

/* Reads what one output pipe has; false at EOF. */
static bool pump_output(struct pump *pu, int *fd, int stream)
{
    char buf[65536];
    ssize_t n = read(*fd, buf, sizeof(buf));
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return true;
    if (n <= 0) {
        cq_close_reset(fd);
        return false;
    }
    pu->produced += (uint64_t)n;
    uint64_t room = pu->p->output_limit - pu->passed;
    size_t pass = (uint64_t)n <= room ? (size_t)n : (size_t)room;
    if (pass < (size_t)n)
        pu->truncated = true;
    if (pass > 0) {
        pu->passed += pass;
        if (pu->io != NULL && pu->io->on_output != NULL)
            pu->io->on_output(pu->io->ctx, stream, buf, pass);
    }
    return true;
}

/* write() to a pipe whose reader is gone raises SIGPIPE, which would kill the whole
 * supervisor unless the application ignores it. Block it for this thread, consume a
 * SIGPIPE this write raised, and restore the mask: EPIPE is reported instead. */
static ssize_t write_nosigpipe(int fd, const void *buf, size_t len)
{
    sigset_t pipe_set, old;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    sigset_t pending;
    sigpending(&pending);
    bool was_pending = sigismember(&pending, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
    ssize_t n = write(fd, buf, len);
    int saved = errno;
    if (n < 0 && saved == EPIPE && !was_pending) {
        struct timespec zero = {0, 0};
        while (sigtimedwait(&pipe_set, NULL, &zero) < 0 && errno == EINTR)
            ;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    errno = saved;
    return n;
}

static void pump_input(struct pump *pu, short in_events, short stdin_events)
{
    struct cq_process *p = pu->p;
    if (pu->pending_len == pu->pending_off && (in_events & (POLLIN | POLLHUP))) {
        ssize_t n = read(pu->input_fd, pu->pending, sizeof(pu->pending));
        if (n > 0) {
            pu->pending_len = (size_t)n;
            pu->pending_off = 0;
        } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
            pu->input_fd = -1; /* end of input: close stdin once pending is written */
        }
    }
    if (pu->pending_off < pu->pending_len && (stdin_events & (POLLOUT | POLLERR | POLLHUP))) {
        ssize_t n = write_nosigpipe(p->stdin_fd, pu->pending + pu->pending_off,
                                    pu->pending_len - pu->pending_off);
        if (n > 0)
            pu->pending_off += (size_t)n;
        else if (n < 0 && errno != EAGAIN && errno != EINTR) {
            /* The process closed its stdin: the rest of the input is dropped. */
            pu->input_fd = -1;
            pu->pending_off = pu->pending_len = 0;
        }
    }
    if (pu->input_fd < 0 && pu->pending_off == pu->pending_len)
        cq_process_close_stdin(p);
}

int cq_process_wait(struct cq_process *p, const struct cq_wait_io *io,
                    struct cq_process_report *report, struct cq_error *err)
{
    static struct pump zero;
    cq_autofree struct pump *pu = malloc(sizeof(*pu));
    if (pu == NULL)
        return cq_error_sys(err, ENOMEM, "wait");
    *pu = zero;
    pu->p = p;
    pu->io = io;
    pu->input_fd = io != NULL && p->stdin_fd >= 0 ? io->input_fd : -1;
    if (io != NULL && io->input_fd >= 0 && p->stdin_fd < 0)
        return cq_error_set(err, CQ_EINVALID, "input_fd given but stdin is not a pipe");

    bool status_open = p->status_fd >= 0 && !atomic_load(&p->exited);
    uint64_t grace_deadline = 0;
    while (status_open || p->stdout_fd >= 0 || p->stderr_fd >= 0) {
        if (!status_open && grace_deadline == 0)
            grace_deadline = cq_now_ms() + OUTPUT_GRACE_MS;
        int timeout = -1;
        if (grace_deadline != 0) {
            uint64_t now = cq_now_ms();
            if (now >= grace_deadline)
                break;
            timeout = (int)(grace_deadline - now);
        }
        bool want_stdin = p->stdin_fd >= 0 && pu->pending_off < pu->pending_len;
        struct pollfd pfd[5] = {
            {.fd = status_open ? p->status_fd : -1, .events = POLLIN},
            {.fd = p->stdout_fd, .events = POLLIN},
            {.fd = p->stderr_fd, .events = POLLIN},
            {.fd = pu->pending_off == pu->pending_len ? pu->input_fd : -1, .events = POLLIN},
            {.fd = want_stdin ? p->stdin_fd : -1, .events = POLLOUT},
        };
        int rc = poll(pfd, 5, timeout);
        if (rc < 0) {
            if (errno == EINTR)
                continue;
            return cq_error_sys(err, errno, "poll");
        }
        if (pfd[1].revents)
            pump_output(pu, &p->stdout_fd, 1);
        if (pfd[2].revents)
            pump_output(pu, &p->stderr_fd, 2);
        if (p->stdin_fd >= 0 && io != NULL && io->input_fd >= 0)
            pump_input(pu, pfd[3].revents, pfd[4].revents);
        if (pfd[0].revents)
            status_open = read_status(p);
    }
    cq_close_reset(&p->stdout_fd);
    cq_close_reset(&p->stderr_fd);
    cq_close_reset(&p->stdin_fd);
    /* The status socket stays open until cq_process_free: cq_process_kill may run
     * concurrently on another thread, and a closed-and-reused fd number would send
     * the KILL to an unrelated file. */

    memset(report, 0, sizeof(*report));
    report->output_bytes = pu->produced;
    report->output_truncated = pu->truncated;
    if (!atomic_load(&p->exited)) {
        /* The shim vanished without a report: the sandbox was destroyed or killed
         * from outside, or the shim itself was OOM-killed. */
        report->exit_code = -1;
        report->signal = SIGKILL;
        uint64_t oom_after = 0;
        cq_cgroup_counters(&p->sb->cgroup, &oom_after, NULL);
        report->oom_killed = oom_after > p->oom_before;
        if (!cq_sandbox_alive(p->sb))
            return cq_error_set(err, ESRCH, "the sandbox ended while the process ran");
        return 0;
    }
    report->exit_code = p->exit.exit_code;
    report->signal = p->exit.signal;
    report->timed_out = p->exit.timed_out != 0;
    report->killed = p->exit.killed != 0;
    report->wall_ms = p->exit.wall_us / 1000;
    report->cpu_ms = p->exit.cpu_us / 1000;
    report->peak_memory_bytes = p->exit.max_rss_bytes;
    uint64_t oom_after = 0, pids_after = 0;
    cq_cgroup_counters(&p->sb->cgroup, &oom_after, &pids_after);
    /* Attribution: the counter is per sandbox, so a SIGKILL (or a shell's 137 for
     * a child killed that way) during which the counter moved is taken as ours. */
    bool sigkilled = report->signal == SIGKILL || report->exit_code == 128 + SIGKILL;
    report->oom_killed =
        oom_after > p->oom_before && sigkilled && !report->timed_out && !report->killed;
    report->pids_limit_hit = pids_after > p->pids_before;
    return 0;
}

void cq_process_free(struct cq_process *p)
{
    if (p == NULL)
        return;
    /* Closing the status socket is enough: the shim kills the tree when its
     * supervisor goes away. */
    cq_close_reset(&p->status_fd);
    cq_close_reset(&p->stdin_fd);
    cq_close_reset(&p->stdout_fd);
    cq_close_reset(&p->stderr_fd);
    free(p);
}
