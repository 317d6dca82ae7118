/* sandbox/init/main.c - codeq-sandbox-init: pid 1 of a sandbox.
 *
 * Started by the supervisor (sandbox/supervisor.c) inside fresh user, pid, mount,
 * IPC and UTS namespaces, with the control socket on fd 3 and nothing else open. It
 *   1. reads CONFIG (the root file system plan, hostname, ids),
 *   2. forks a helper that creates the network namespace (only loopback, up) on
 *      another CPU, and meanwhile builds and enters the sandbox's root (rootfs.c),
 *   3. joins its cgroup (v1: through fds the supervisor sends) and a new cgroup
 *      namespace, and the helper's network namespace,
 *   4. answers READY (or ERROR with the reason) and then
 *   5. serves SPAWN requests, forking one shim per process (shim.c).
 * Nothing sandboxed runs before READY, so nothing runs outside the limits or in
 * the host's network namespace.
 * When the control socket closes, init exits and the kernel kills every process of
 * the sandbox: a supervisor that crashes cannot leave sandboxes running.
 */
#define _GNU_SOURCE
#include "sandbox/init/init.h"
#include "common/cleanup.h"
#include "sandbox/seccomp_bpf.h"

#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_MOUNTS 256

static uint8_t config_buf[CQ_PROTO_MAX_MSG];
static struct init_mount mounts[MAX_MOUNTS];

static void send_error(int fd, const struct cq_error *err)
{
    static struct cq_msg_writer w;
    int32_t code = err->code;
    cq_msg_begin(&w, CQ_MSG_ERROR);
    cq_msg_put(&w, CQ_F_ERRNO, &code, sizeof(code));
    cq_msg_put_str(&w, CQ_F_TEXT, err->msg);
    (void)cq_msg_send(fd, &w, NULL, 0, NULL); /* nobody else to tell */
}

static int read_config(int fd, struct init_config *cfg, struct cq_error *err)
{
    ssize_t n = cq_msg_recv(fd, config_buf, sizeof(config_buf), NULL, NULL, err);
    if (n < 0)
        return cq_error_prefix(err, "read configuration");
    if (n == 0)
        return cq_error_sys(err, EPIPE, "read configuration");
    struct cq_msg_reader r;
    if (cq_msg_reader_init(&r, config_buf, (size_t)n, NULL) < 0 || r.type != CQ_MSG_CONFIG)
        return cq_error_set(err, EPROTO, "expected a configuration message");
    memset(cfg, 0, sizeof(*cfg));
    cfg->hostname = "codeq";
    cfg->mounts = mounts;
    bool have_ids = false;
    uint16_t tag;
    const void *data;
    size_t len;
    int more;
    while ((more = cq_msg_next(&r, &tag, &data, &len, err)) > 0) {
        switch (tag) {
        case CQ_F_HOSTNAME:
            if ((cfg->hostname = cq_msg_str(data, len)) == NULL)
                return cq_error_set(err, EPROTO, "bad hostname field");
            break;
        case CQ_F_IDS:
            if (len != sizeof(cfg->ids))
                return cq_error_set(err, EPROTO, "bad ids field");
            memcpy(&cfg->ids, data, len);
            have_ids = true;
            break;
        case CQ_F_INIT_FLAGS:
            if (len != sizeof(cfg->flags))
                return cq_error_set(err, EPROTO, "bad flags field");
            memcpy(&cfg->flags, data, len);
            break;
        case CQ_F_MOUNT: {
            if (cfg->n_mounts == MAX_MOUNTS)
                return cq_error_set(err, E2BIG, "more than %d mount operations", MAX_MOUNTS);
            struct init_mount *m = &mounts[cfg->n_mounts];
            if (cq_msg_mount(data, len, &m->op, &m->src, &m->dst, err) < 0)
                return cq_error_prefix(err, "configuration");
            cfg->n_mounts++;
            break;
        }
        default:
            break;
        }
    }
    if (more < 0)
        return cq_error_prefix(err, "configuration");
    if (!have_ids)
        return cq_error_set(err, EPROTO, "configuration without ids");
    /* Sandboxed code must never run as the namespace's root. */
    if (cfg->ids.user_uid == 0 || cfg->ids.user_gid == 0)
        return cq_error_set(err, EPERM, "refusing to run sandboxed code as uid or gid 0");
    return 0;
}

static int bring_up_loopback(struct cq_error *err)
{
    cq_autoclose int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (sock < 0)
        return cq_error_sys(err, errno, "socket for loopback");
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "lo");
    if (ioctl(sock, SIOCGIFFLAGS, &ifr) < 0)
        return cq_error_sys(err, errno, "get flags of lo");
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    if (ioctl(sock, SIOCSIFFLAGS, &ifr) < 0)
        return cq_error_sys(err, errno, "bring up lo");
    return 0;
}

struct netns_helper {
    pid_t pid;
    int result_fd; /* the helper writes an int32 errno (0: ready) */
};

/* Creating a network namespace is the slowest part of a sandbox's start, so a
 * child makes it while init builds the root; init then joins it. */
static int start_netns_helper(struct netns_helper *h, struct cq_error *err)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return cq_error_sys(err, errno, "pipe");
    h->pid = fork();
    if (h->pid < 0) {
        close(p[0]);
        close(p[1]);
        return cq_error_sys(err, errno, "fork network helper");
    }
    if (h->pid == 0) {
        struct cq_error e = {0};
        int32_t code = 0;
        if (unshare(CLONE_NEWNET) < 0)
            code = errno;
        else if (bring_up_loopback(&e) < 0)
            code = e.code;
        (void)!write(p[1], &code, sizeof(code));
        for (;;)
            pause(); /* until init has joined the namespace and kills us */
    }
    close(p[1]);
    h->result_fd = p[0];
    return 0;
}

static int join_netns(struct netns_helper *h, struct cq_error *err)
{
    int32_t code = EPIPE;
    ssize_t n = read(h->result_fd, &code, sizeof(code));
    close(h->result_fd);
    int rc = 0;
    if (n != (ssize_t)sizeof(code) || code != 0) {
        rc = cq_error_sys(err, code, "create the network namespace");
    } else {
        /* A pidfd, not /proc/<pid>/ns/net: init's /proc is covered by the /proc
         * stand-ins by now (rootfs.c). pidfd_open (5.3) and setns on a pidfd (5.8)
         * are older than mount_setattr (5.12), which building the root needs. */
        int nsfd = (int)syscall(SYS_pidfd_open, h->pid, 0);
        if (nsfd < 0 || setns(nsfd, CLONE_NEWNET) < 0)
            rc = cq_error_sys(err, errno, "join the network namespace");
        if (nsfd >= 0)
            close(nsfd);
    }
    kill(h->pid, SIGKILL);
    waitpid(h->pid, NULL, 0);
    return rc;
}

/* cgroup v1: the supervisor sends one `tasks` fd per controller, opened by host
 * root; writing "0" moves init itself. Then a new cgroup namespace hides every
 * cgroup path above the sandbox's own. A failed write fails the sandbox, whichever fd
 * it was (cpuacct's too, though the supervisor runs sandboxes without one): init is
 * never left in some of its cgroups and not the others. */
static int join_cgroup(int control_fd, struct cq_error *err)
{
    uint8_t buf[64];
    int fds[CQ_PROTO_MAX_FDS];
    size_t nfds = CQ_PROTO_MAX_FDS;
    /* Any failure here has one meaning: the supervisor did not send the cgroup. */
    ssize_t n = cq_msg_recv(control_fd, buf, sizeof(buf), fds, &nfds, NULL);
    struct cq_msg_reader r;
    if (n <= 0 || cq_msg_reader_init(&r, buf, (size_t)n, NULL) < 0 || r.type != CQ_MSG_CGROUP ||
        nfds == 0) {
        for (size_t i = 0; i < nfds; i++)
            close(fds[i]);
        return cq_error_set(err, EPROTO, "expected the sandbox's cgroup");
    }
    int rc = 0;
    for (size_t i = 0; i < nfds; i++) {
        if (rc == 0 && write(fds[i], "0", 1) != 1)
            rc = cq_error_sys(err, errno, "join the sandbox's cgroup");
        close(fds[i]);
    }
    if (rc == 0 && unshare(CLONE_NEWCGROUP) < 0)
        rc = cq_error_sys(err, errno, "new cgroup namespace");
    return rc;
}

static void spawn(const struct init_config *cfg, int control_fd, int signal_fd, const void *buf,
                  size_t len, int *fds, size_t nfds)
{
    struct cq_msg_reader r;
    if (nfds == 0)
        return; /* no status socket: nobody to answer */
    if (cq_msg_reader_init(&r, buf, len, NULL) < 0 || r.type != CQ_MSG_SPAWN) {
        for (size_t i = 0; i < nfds; i++)
            close(fds[i]);
        return;
    }
    /* A new pid namespace makes the process tree killable as one; a new mount
     * namespace gives it a /proc that matches its pids. */
    pid_t pid = (pid_t)syscall(SYS_clone, CLONE_NEWPID | CLONE_NEWNS | SIGCHLD, 0, 0, 0, 0);
    if (pid == 0)
        init_run_shim(cfg, &r, fds, nfds, control_fd, signal_fd);
    if (pid < 0) {
        static struct cq_msg_writer w;
        int32_t code = errno;
        cq_msg_begin(&w, CQ_MSG_SPAWN_FAILED);
        cq_msg_put(&w, CQ_F_ERRNO, &code, sizeof(code));
        cq_msg_put_str(&w, CQ_F_TEXT, code == EAGAIN ? "fork (process limit reached)" : "fork");
        (void)cq_msg_send(fds[0], &w, NULL, 0, NULL);
    }
    for (size_t i = 0; i < nfds; i++)
        close(fds[i]);
}

/* Returns 0 when the supervisor is gone, -1 with err when init cannot go on. */
static int serve(const struct init_config *cfg, int control_fd, struct cq_error *err)
{
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, NULL);
    int sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0)
        return cq_error_sys(err, errno, "signalfd");
    static uint8_t buf[CQ_PROTO_MAX_MSG];
    for (;;) {
        struct pollfd pfd[2] = {{.fd = control_fd, .events = POLLIN},
                                {.fd = sfd, .events = POLLIN}};
        if (poll(pfd, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            return cq_error_sys(err, errno, "poll");
        }
        if (pfd[1].revents & POLLIN) {
            struct signalfd_siginfo si;
            while (read(sfd, &si, sizeof(si)) == sizeof(si))
                ;
            while (waitpid(-1, NULL, WNOHANG | __WALL) > 0)
                ;
        }
        if (pfd[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            int fds[CQ_PROTO_MAX_FDS];
            size_t nfds = CQ_PROTO_MAX_FDS;
            struct cq_error recv_err = {0};
            ssize_t n = cq_msg_recv(control_fd, buf, sizeof(buf), fds, &nfds, &recv_err);
            /* A refused message or a spurious wakeup is not the end: only a closed or
             * broken socket means the supervisor is gone, and then so is the sandbox. */
            if (n == 0 || (n < 0 && recv_err.code != CQ_EPROTO && recv_err.code != EAGAIN))
                return 0;
            if (n > 0)
                spawn(cfg, control_fd, sfd, buf, (size_t)n, fds, nfds);
        }
    }
}

static int set_up(int control_fd, struct init_config *cfg, struct cq_error *err)
{
    struct netns_helper netns = {.pid = -1, .result_fd = -1};
    if (read_config(control_fd, cfg, err) < 0 || start_netns_helper(&netns, err) < 0)
        return -1;
    int rc = init_build_root(cfg, err);
    if (rc == 0 && cfg->flags.join_cgroup)
        rc = join_cgroup(control_fd, err);
    /* Always collect the helper, also after a failure. */
    struct cq_error net_err = {0};
    if (join_netns(&netns, &net_err) < 0 && rc == 0) {
        *err = net_err;
        rc = -1;
    }
    if (rc == 0 && sethostname(cfg->hostname, strlen(cfg->hostname)) < 0)
        rc = cq_error_sys(err, errno, "sethostname");
    /* From here on init and every process of the sandbox are under the sandbox
     * filter; nothing after this point needs more. */
    if (rc == 0 && (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
                    init_install_filter(cq_seccomp_sandbox_bpf, cq_seccomp_sandbox_bpf_len) < 0))
        rc = cq_error_sys(err, errno, "attach the sandbox's seccomp filter");
    return rc;
}

/* fds of the adopted shim's exec (docs/zygote.md) */
#define ADOPTED_STATUS_FD  3
#define ADOPTED_CHANNEL_FD 4

int main(int argc, char **argv)
{
    /* The same static binary is the shim of a process a kernel zygote forked into a
     * sandbox: the zygote's child execs it from an fd, inside the sandbox. */
    if (argc == 2 && strcmp(argv[1], "adopted-shim") == 0)
        init_run_adopted_shim(ADOPTED_STATUS_FD, ADOPTED_CHANNEL_FD);
    int control_fd = INIT_CONTROL_FD;
    struct cq_error err = {0};
    struct init_config cfg;
    /* init itself is not dumpable: nothing in the sandbox may ptrace or read it. */
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    if (set_up(control_fd, &cfg, &err) < 0) {
        send_error(control_fd, &err);
        return 1;
    }
    if (cq_msg_send_type(control_fd, CQ_MSG_READY, NULL, 0, NULL) < 0)
        return 1;
    /* After READY there is nobody to report to: the exit status is all. */
    return serve(&cfg, control_fd, &err) < 0 ? 1 : 0;
}
