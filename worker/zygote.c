/* worker/zygote.c - the Python kernel zygote (docs/zygote.md): one process that
 * imported what kernels preload, from which each new kernel is forked into its
 * session's sandbox, so that the imported modules stay shared copy-on-write and a
 * kernel starts in milliseconds.
 *
 * The zygote (runtimes/python/codeq_zygote.py) runs as CQ_SANDBOX_ZYGOTE_UID, which
 * holds no capability on the host and owns only the user namespaces of enterable
 * sandboxes, in the mount namespace of a sandbox of its own (the template: the
 * runtime's files at the sandbox's paths, its /tmp, no network) and in that sandbox's
 * cgroup, which is charged the shared pages. It never runs submitted code. Each fork
 * is a short exchange on a SOCK_SEQPACKET socket (codeq_zygote.py's docstring); the
 * privileged step in it, moving the child into the session's cgroup before it forks
 * the kernel, is done here.
 *
 * A zygote that dies or answers wrong is stopped and replaced at the next kernel; the
 * caller starts that kernel the usual way meanwhile, so a broken zygote costs speed,
 * never a session. Kernels it forked are not its children and go on.
 */
#define _GNU_SOURCE
#include "worker/internal.h"
#include "worker/session.h"
#include "common/cleanup.h"
#include "common/fileutil.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define ZYGOTE_READY_TIMEOUT_MS  120000 /* the imports, on a loaded machine */
#define ZYGOTE_ANSWER_TIMEOUT_MS 10000
#define LIBEXEC_IN_SANDBOX       "/opt/codeq/libexec"
#define MAX_ENV                  256

struct cq_zygote {
    pthread_mutex_t lock; /* one fork at a time: the exchange is a conversation */
    struct cq_sandbox *template;
    /* The template's /workspace, the zygote's: matplotlib must write its cache and
     * configuration somewhere, and being this directory's owner maps the zygote's uid
     * in the template (the sandbox user's), so it can write the template's /tmp too. */
    char home[64];
    pid_t pid;
    int sock;
};

/* The launcher between fork and exec: a copy of the multi-threaded worker, so raw system
 * calls only. Enters the template's mount, network, IPC and UTS namespaces as root (not
 * its user namespace: the zygote must stay in the host's, where its uid owns the
 * sessions' namespaces), becomes the zygote's uid, which drops every capability, and
 * execs Python. */
static void __attribute__((noreturn))
launch(int entry, int go, int sock, int init_fd, const char *const *argv, const char *const *envp)
{
    char byte;
    if (syscall(SYS_read, go, &byte, 1) != 1)
        syscall(SYS_exit_group, 120);
    if (syscall(SYS_setns, entry, CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS) < 0)
        syscall(SYS_exit_group, 121);
    if (syscall(SYS_setgroups, 0, NULL) < 0 ||
        syscall(SYS_setresgid, CQ_SANDBOX_ZYGOTE_UID, CQ_SANDBOX_ZYGOTE_UID,
                CQ_SANDBOX_ZYGOTE_UID) < 0 ||
        syscall(SYS_setresuid, CQ_SANDBOX_ZYGOTE_UID, CQ_SANDBOX_ZYGOTE_UID,
                CQ_SANDBOX_ZYGOTE_UID) < 0)
        syscall(SYS_exit_group, 122);
    /* It gains nothing by exec. It ends when the worker does: its socket closes (not
     * PR_SET_PDEATHSIG, which follows the thread that forked it, often a request's). */
    if (syscall(SYS_prctl, PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        syscall(SYS_exit_group, 123);
    long s = syscall(SYS_fcntl, sock, F_DUPFD, 10), i = syscall(SYS_fcntl, init_fd, F_DUPFD, 10);
    if (s < 0 || i < 0 || syscall(SYS_dup3, s, 3, 0) < 0 || syscall(SYS_dup3, i, 4, 0) < 0 ||
        syscall(SYS_close_range, 5, ~0U, 0) < 0)
        syscall(SYS_exit_group, 124);
    syscall(SYS_execve, "/usr/bin/python3", argv, envp);
    syscall(SYS_exit_group, 127);
    __builtin_unreachable();
}

/* One message from the zygote within timeout_ms, NUL-terminated; -1 with err. */
static int receive(struct cq_zygote *z, char *buf, size_t len, int timeout_ms, struct cq_error *err)
{
    struct pollfd pfd = {.fd = z->sock, .events = POLLIN};
    int ready;
    do
        ready = poll(&pfd, 1, timeout_ms);
    while (ready < 0 && errno == EINTR);
    if (ready == 0)
        return cq_error_set(err, ETIMEDOUT, "the kernel zygote did not answer");
    ssize_t n = ready < 0 ? -1 : recv(z->sock, buf, len - 1, 0);
    if (n <= 0)
        return cq_error_set(err, EPIPE, "the kernel zygote went away");
    buf[n] = '\0';
    return 0;
}

void cq_zygote_stop(struct cq_zygote *z)
{
    if (z == NULL)
        return;
    if (z->pid > 0) {
        kill(z->pid, SIGKILL);
        waitpid(z->pid, NULL, 0);
    }
    if (z->sock >= 0)
        close(z->sock);
    cq_sandbox_destroy(z->template);
    if (z->home[0] != '\0') {
        /* What matplotlib wrote: a few small files. The zygote is dead by now and never
         * ran user code; the walk follows no link anyway. */
        struct cq_error err;
        if (cq_remove_tree(z->home, &err) < 0)
            fprintf(stderr, "codeq: %s\n", err.msg);
    }
    pthread_mutex_destroy(&z->lock);
    free(z);
}

int cq_zygote_start(struct cq_worker *w, struct cq_zygote **out, struct cq_error *err)
{
    struct cq_zygote *z = calloc(1, sizeof(*z));
    if (z == NULL)
        return cq_error_sys(err, ENOMEM, "allocate the kernel zygote");
    pthread_mutex_init(&z->lock, NULL);
    z->sock = -1;
    cq_autoclose int init_fd = -1, entry = -1, theirs = -1, go_read = -1, go_write = -1;
    char library[4200];
    if (cq_sandbox_zygote_files(&init_fd, library, sizeof(library), err) < 0)
        goto fail;
    /* The template: the default runtime, its libexec directory (the library) bound
     * read-only, no network; its limits are the zygote's, whose memory is the pages
     * every kernel shares. */
    char *slash = strrchr(library, '/');
    *slash = '\0';
    const struct cq_sandbox_bind lib_bind = {.host_path = library,
                                             .sandbox_path = LIBEXEC_IN_SANDBOX};
    struct cq_sandbox_limits limits = cq_worker_limits(w, &(struct cq_sandbox_limits){0});
    limits.memory_bytes = limits.memory_bytes < (1ULL << 30) ? 1ULL << 30 : limits.memory_bytes;
    snprintf(z->home, sizeof(z->home), "/tmp/codeq-zygote-XXXXXX");
    if (mkdtemp(z->home) == NULL) {
        cq_error_sys(err, errno, "the kernel zygote's directory");
        z->home[0] = '\0';
        goto fail;
    }
    if (chown(z->home, CQ_SANDBOX_ZYGOTE_UID, CQ_SANDBOX_ZYGOTE_UID) < 0) {
        cq_error_sys(err, errno, "chown %s", z->home);
        goto fail;
    }
    const struct cq_sandbox_extras extras = {
        .bind = &lib_bind, .enterable = true, .workspace_dir = z->home};
    if (cq_worker_sandbox_with(w, NULL, &limits, CQ_NETWORK_NONE, NULL, 0, &extras, &z->template,
                               err) < 0)
        goto fail;
    entry = cq_sandbox_entry_fd(z->template, err);
    int sv[2], go[2];
    if (entry < 0)
        goto fail;
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0 || pipe2(go, O_CLOEXEC) < 0) {
        cq_error_sys(err, errno, "the kernel zygote's channel");
        goto fail;
    }
    z->sock = sv[0];
    theirs = sv[1];
    go_read = go[0];
    go_write = go[1];

    char script[512], lib_arg[600];
    snprintf(script, sizeof(script), "%s/python/codeq_zygote.py", w->runtimes_seen);
    snprintf(lib_arg, sizeof(lib_arg), LIBEXEC_IN_SANDBOX "/libcodeq-adopt.so");
    const char *argv[] = {"python3", "-u", script, lib_arg, NULL};
    const char *envp[MAX_ENV + 2];
    size_t n = 0;
    for (const char *const *e = cq_sandbox_environ(z->template); *e != NULL && n < MAX_ENV; e++)
        envp[n++] = *e;
    envp[n++] = "MPLBACKEND=Agg";
    envp[n] = NULL;

    z->pid = fork();
    if (z->pid < 0) {
        cq_error_sys(err, errno, "fork the kernel zygote");
        goto fail;
    }
    if (z->pid == 0)
        launch(entry, go_read, theirs, init_fd, argv, envp);
    cq_close_reset(&theirs);
    /* Into the template's cgroup before it runs anything, then let it go on. */
    if (cq_sandbox_attach(z->template, z->pid, err) < 0)
        goto fail;
    if (write(go_write, "g", 1) != 1) {
        cq_error_sys(err, errno, "start the kernel zygote");
        goto fail;
    }
    char answer[64];
    if (receive(z, answer, sizeof(answer), ZYGOTE_READY_TIMEOUT_MS, err) < 0 ||
        strcmp(answer, "ready") != 0) {
        if (err->code == 0)
            cq_error_set(err, CQ_EPROTO, "the kernel zygote said '%s'", answer);
        cq_error_prefix(err, "start the kernel zygote");
        goto fail;
    }
    *out = z;
    return 0;
fail:
    cq_zygote_stop(z);
    return -1;
}

static int send_fork(struct cq_zygote *z, const int fds[5], struct cq_error *err)
{
    char control[CMSG_SPACE(5 * sizeof(int))];
    memset(control, 0, sizeof(control));
    struct iovec iov = {.iov_base = "fork", .iov_len = 4};
    struct msghdr msg = {
        .msg_iov = &iov,
        .msg_iovlen = 1,
        .msg_control = control,
        .msg_controllen = sizeof(control),
    };
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(5 * sizeof(int));
    memcpy(CMSG_DATA(c), fds, 5 * sizeof(int));
    if (sendmsg(z->sock, &msg, MSG_NOSIGNAL) < 0)
        return cq_error_sys(err, errno, "ask the kernel zygote");
    return 0;
}

/* Whether pid is the zygote's child, running as its uid: the only process the worker
 * may move into a session's cgroup on the zygote's word. A zygote that lied (it runs
 * imports of the runtime's packages) would otherwise have the worker move any process
 * of the host, the worker itself, into a small cgroup. */
static bool is_zygote_child(const struct cq_zygote *z, int pid)
{
    char path[64], text[1024];
    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    struct cq_error ignored;
    if (cq_read_file_at(AT_FDCWD, path, text, sizeof(text), &ignored) < 0)
        return false;
    const char *ppid = strstr(text, "\nPPid:"), *uid = strstr(text, "\nUid:");
    unsigned long parent = 0, real = 0, effective = 0;
    return ppid != NULL && uid != NULL && sscanf(ppid, "\nPPid: %lu", &parent) == 1 &&
           sscanf(uid, "\nUid: %lu %lu", &real, &effective) == 2 &&
           parent == (unsigned long)z->pid && real == CQ_SANDBOX_ZYGOTE_UID &&
           effective == CQ_SANDBOX_ZYGOTE_UID;
}

/* The exchange of one fork; the lock is held. */
static int fork_locked(struct cq_zygote *z, struct cq_sandbox *sb, const int fds[5],
                       struct cq_error *err)
{
    char answer[256];
    if (send_fork(z, fds, err) < 0 ||
        receive(z, answer, sizeof(answer), ZYGOTE_ANSWER_TIMEOUT_MS, err) < 0)
        return -1;
    int pid = 0;
    if (sscanf(answer, "pid %d", &pid) != 1 || pid <= 0)
        return cq_error_set(err, CQ_EPROTO, "the kernel zygote said '%s'", answer);
    bool moved = false;
    if (!is_zygote_child(z, pid))
        cq_error_set(err, CQ_EPROTO, "the kernel zygote named process %d, not its child", pid);
    else
        moved = cq_sandbox_attach(sb, pid, err) == 0;
    const char *word = moved ? "go" : "abort";
    if (send(z->sock, word, strlen(word), MSG_NOSIGNAL) < 0 && moved)
        return cq_error_sys(err, errno, "tell the kernel zygote");
    struct cq_error late = {0};
    if (receive(z, answer, sizeof(answer), ZYGOTE_ANSWER_TIMEOUT_MS, &late) < 0) {
        if (moved)
            *err = late;
        return -1;
    }
    if (!moved)
        return -1;
    if (strcmp(answer, "ok") != 0)
        return cq_error_set(err, CQ_EINTERNAL, "the kernel zygote: %s", answer);
    return 0;
}

int cq_zygote_fork(struct cq_zygote *z, struct cq_sandbox *sb, const struct cq_spawn *req,
                   struct cq_process **out, struct cq_error *err)
{
    int theirs[4];
    struct cq_process *p = NULL;
    if (cq_sandbox_adopt(sb, req, theirs, &p, err) < 0)
        return -1;
    int entry = cq_sandbox_entry_fd(sb, err);
    int fds[5] = {entry, theirs[0], theirs[1], theirs[2], theirs[3]};
    int rc = entry < 0 ? -1 : 0;
    for (int i = 1; i < 5 && rc == 0; i++)
        if (fds[i] < 0)
            rc = cq_error_set(err, CQ_EINVALID, "a forked kernel needs all of its stdio");
    if (rc == 0) {
        pthread_mutex_lock(&z->lock);
        rc = fork_locked(z, sb, fds, err);
        pthread_mutex_unlock(&z->lock);
    }
    for (int i = 0; i < 5; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    if (rc == 0)
        rc = cq_process_await_adopted(p, err);
    if (rc < 0) {
        cq_process_free(p);
        return -1;
    }
    *out = p;
    return 0;
}
