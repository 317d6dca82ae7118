/* sandbox/seccomp_policy.c - what system calls hostile code may make.
 *
 * The floor is Docker's default profile (an allowlist, without the capability-gated
 * groups since sandboxed code holds no capabilities). On top of it codeq:
 *  - denies ptrace, process_vm_*, kcmp, pidfd_getfd, process_madvise: reading or
 *    steering another process is never needed by analysis code and is the first
 *    step of most escapes;
 *  - answers io_uring_* and clone3 with ENOSYS rather than EPERM or a kill, so that
 *    glibc (clone3 -> clone) and libuv (io_uring -> epoll/threadpool) fall back;
 *    io_uring is excluded because its kernel surface has a long CVE record and
 *    it bypasses seccomp for the operations it performs; clone3 because its flags
 *    live in memory that BPF cannot inspect;
 *  - masks namespace flags on clone, and denies unshare/setns: a new user
 *    namespace would hand the process capabilities over new kernel objects;
 *  - denies the mount family, keyring, bpf, perf, userfaultfd (used to widen race
 *    windows in kernel exploits), kexec, modules, clock setters, reboot, swap;
 *  - restricts socket families: unix, inet/inet6 stream and datagram, and
 *    netlink route only (getifaddrs); raw and packet sockets get EPERM, other
 *    families (AF_VSOCK, AF_ALG, ...) EAFNOSUPPORT, as systemd's
 *    RestrictAddressFamilies does, so programs treat them as absent;
 *  - denies ioctl TIOCSTI (typing into a terminal) and TIOCLINUX, compared on the
 *    low 32 bits because the kernel truncates the request number: a 64-bit compare
 *    could be bypassed by setting high bits;
 *  - denies fcntl F_SETLEASE: a lease makes every open of the file by the host (the
 *    file tools, snapshots) wait for the kernel's lease-break time, 45 s by default,
 *    so code could stall host threads with it (the file tools refuse a leased file
 *    at once too: worker/files.c).
 * Unknown system calls get ENOSYS: new kernel interfaces are off until reviewed,
 * and libraries treat ENOSYS as "not available here" and fall back.
 * Non-native ABIs (32-bit int 0x80, x32) kill the process: their syscall numbers
 * differ, so an allowlist written for x86-64 numbers would not mean the same there.
 *
 * Two stacked filters, because attaching a filter costs ~200 us (the kernel JITs it
 * and precomputes a per-syscall cache), too much for every process start:
 *  - the sandbox filter, attached once by init when the sandbox is ready and so
 *    inherited by everything in it: the allowlist above, except that it still lets
 *    init and the shims mount (a process's own /proc) and clone new pid and mount
 *    namespaces (one per process);
 *  - the process filter, attached by every sandboxed process before execve: small,
 *    default ALLOW, it takes those three exceptions away again and denies TIOCSTI.
 * The kernel applies the strictest verdict of all filters, so sandboxed code gets
 * the intersection. A new denial for sandboxed code belongs in the sandbox filter
 * unless init or the shims need the call.
 */
#define _GNU_SOURCE
#include "sandbox/seccomp_policy.h"

#include <errno.h>
#include <sched.h>
#include <stddef.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/personality.h>
#include <sys/socket.h>
#include <linux/netlink.h>

/* Allowed without argument checks. Grouped by purpose for review. */
static const char *const allowed_syscalls[] = {
    /* process lifecycle and identity */
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "fork",
    "vfork",
    "wait4",
    "waitid",
    "getpid",
    "getppid",
    "gettid",
    "getpgid",
    "getpgrp",
    "setpgid",
    "getsid",
    "setsid",
    "getuid",
    "geteuid",
    "getgid",
    "getegid",
    "getresuid",
    "getresgid",
    "getgroups",
    "setuid",
    "setgid",
    "setreuid",
    "setregid",
    "setresuid",
    "setresgid",
    "setfsuid",
    "setfsgid",
    "setgroups",
    "capget",
    "capset",
    "prctl",
    "arch_prctl",
    "set_tid_address",
    "set_robust_list",
    "get_robust_list",
    "rseq",
    "seccomp",
    "getrlimit",
    "setrlimit",
    "prlimit64",
    "getrusage",
    "getpriority",
    "setpriority",
    "times",
    "umask",
    "uname",
    "sysinfo",
    "getcpu",
    "getrandom",
    "pidfd_open",
    "pidfd_send_signal",
    "process_mrelease",
    "restart_syscall",
    /* scheduling */
    "sched_yield",
    "sched_getaffinity",
    "sched_setaffinity",
    "sched_getattr",
    "sched_setattr",
    "sched_getparam",
    "sched_setparam",
    "sched_getscheduler",
    "sched_setscheduler",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_rr_get_interval",
    "ioprio_get",
    "ioprio_set",
    /* signals */
    "kill",
    "tkill",
    "tgkill",
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigpending",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigqueueinfo",
    "rt_tgsigqueueinfo",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "pause",
    "alarm",
    "getitimer",
    "setitimer",
    /* time (reading and sleeping only) */
    "clock_gettime",
    "clock_getres",
    "clock_nanosleep",
    "gettimeofday",
    "time",
    "nanosleep",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_settime",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_settime",
    /* memory */
    "brk",
    "mmap",
    "munmap",
    "mremap",
    "mprotect",
    "madvise",
    "mincore",
    "msync",
    "mlock",
    "mlock2",
    "munlock",
    "mlockall",
    "munlockall",
    "membarrier",
    "memfd_create",
    "remap_file_pages",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "map_shadow_stack",
    /* futexes and threads */
    "futex",
    "futex_waitv",
    "futex_wake",
    "futex_wait",
    "futex_requeue",
    "get_thread_area",
    "set_thread_area",
    /* files and directories */
    "read",
    "write",
    "readv",
    "writev",
    "pread64",
    "pwrite64",
    "preadv",
    "pwritev",
    "preadv2",
    "pwritev2",
    "open",
    "openat",
    "openat2",
    "creat",
    "close",
    "close_range",
    "dup",
    "dup2",
    "dup3",
    "lseek",
    "fcntl",
    "flock",
    "fsync",
    "fdatasync",
    "sync",
    "syncfs",
    "sync_file_range",
    "truncate",
    "ftruncate",
    "fallocate",
    "fadvise64",
    "readahead",
    "stat",
    "fstat",
    "lstat",
    "newfstatat",
    "statx",
    "statfs",
    "fstatfs",
    "access",
    "faccessat",
    "faccessat2",
    "getcwd",
    "chdir",
    "fchdir",
    "mkdir",
    "mkdirat",
    "rmdir",
    "rename",
    "renameat",
    "renameat2",
    "link",
    "linkat",
    "unlink",
    "unlinkat",
    "symlink",
    "symlinkat",
    "readlink",
    "readlinkat",
    "chmod",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "chown",
    "fchown",
    "lchown",
    "fchownat",
    "utime",
    "utimes",
    "utimensat",
    "futimesat",
    "mknod",
    "mknodat",
    "getdents",
    "getdents64",
    "getxattr",
    "lgetxattr",
    "fgetxattr",
    "setxattr",
    "lsetxattr",
    "fsetxattr",
    "listxattr",
    "llistxattr",
    "flistxattr",
    "removexattr",
    "lremovexattr",
    "fremovexattr",
    "name_to_handle_at",
    "copy_file_range",
    "sendfile",
    "splice",
    "tee",
    "vmsplice",
    "ioctl",
    "cachestat",
    /* waiting on fds */
    "pipe",
    "pipe2",
    "poll",
    "ppoll",
    "select",
    "pselect6",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
    "eventfd",
    "eventfd2",
    "inotify_init",
    "inotify_init1",
    "inotify_add_watch",
    "inotify_rm_watch",
    "fanotify_mark",
    /* Linux AIO (not io_uring) */
    "io_setup",
    "io_destroy",
    "io_submit",
    "io_cancel",
    "io_getevents",
    "io_pgetevents",
    /* sockets (creation is checked below) */
    "bind",
    "connect",
    "listen",
    "accept",
    "accept4",
    "getsockname",
    "getpeername",
    "sendto",
    "recvfrom",
    "sendmsg",
    "recvmsg",
    "sendmmsg",
    "recvmmsg",
    "shutdown",
    "setsockopt",
    "getsockopt",
    /* System V and POSIX IPC: private to the sandbox's IPC namespace */
    "shmget",
    "shmat",
    "shmdt",
    "shmctl",
    "semget",
    "semop",
    "semtimedop",
    "semctl",
    "msgget",
    "msgsnd",
    "msgrcv",
    "msgctl",
    "mq_open",
    "mq_unlink",
    "mq_timedsend",
    "mq_timedreceive",
    "mq_notify",
    "mq_getsetattr",
    /* self-sandboxing by the program itself only narrows what it can do */
    "landlock_create_ruleset",
    "landlock_add_rule",
    "landlock_restrict_self",
};

/* Denied with EPERM, listed so that the answer is exact and the intent reviewable.
 * mount and mount_setattr are denied by the process filter (see above). */
static const char *const denied_syscalls[] = {
    /* other processes */
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "process_madvise",
    "pidfd_getfd",
    "kcmp",
    /* mounts and namespaces */
    "umount2",
    "pivot_root",
    "chroot",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "unshare",
    "setns",
    /* kernel keyrings */
    "keyctl",
    "add_key",
    "request_key",
    /* kernel attack surface for exploits */
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "modify_ldt",
    "memfd_secret",
    "open_by_handle_at",
    "lookup_dcookie",
    "fanotify_init",
    /* the machine itself */
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "create_module",
    "get_kernel_syms",
    "query_module",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "quotactl",
    "quotactl_fd",
    "syslog",
    "iopl",
    "ioperm",
    "vhangup",
    "sethostname",
    "setdomainname",
    "uselib",
    "ustat",
    "sysfs",
    "_sysctl",
    "nfsservctl",
    /* clocks */
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    /* NUMA placement (Docker requires CAP_SYS_NICE) */
    "mbind",
    "set_mempolicy",
    "get_mempolicy",
    "migrate_pages",
    "move_pages",
    "set_mempolicy_home_node",
};

/* ENOSYS, so that callers fall back to an older interface. This is also the
 * default action; the list exists so that a later change of the default cannot
 * silently turn these into EPERM (which glibc and libuv do not fall back from). */
static const char *const unavailable_syscalls[] = {
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "clone3",
};

#define DEFAULT_ACTION SCMP_ACT_ERRNO(ENOSYS)

#define NAMESPACE_CLONE_FLAGS                                                                      \
    (CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID |  \
     CLONE_NEWNET)

static int add_named(scmp_filter_ctx ctx, uint32_t action, const char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int nr = seccomp_syscall_resolve_name(names[i]);
        if (nr == __NR_SCMP_ERROR)
            continue; /* not a system call on this architecture */
        /* libseccomp refuses (EACCES) a rule that repeats the default action. */
        if (action == DEFAULT_ACTION)
            continue;
        int rc = seccomp_rule_add(ctx, action, nr, 0);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* Namespaces the shims create for each process (pid 1 of its tree, its own /proc). */
#define SHIM_CLONE_FLAGS (CLONE_NEWPID | CLONE_NEWNS)

static const unsigned long namespace_flags[] = {CLONE_NEWNS,  CLONE_NEWCGROUP, CLONE_NEWUTS,
                                                CLONE_NEWIPC, CLONE_NEWUSER,   CLONE_NEWPID,
                                                CLONE_NEWNET};

/* x86-64 clone(flags, ...): flags is argument 0. `allowed` namespace flags pass. */
static int add_clone_rules(scmp_filter_ctx ctx, unsigned long allowed)
{
    int rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(clone), 1,
                              SCMP_A0(SCMP_CMP_MASKED_EQ, NAMESPACE_CLONE_FLAGS & ~allowed, 0));
    for (size_t i = 0; rc == 0 && i < sizeof(namespace_flags) / sizeof(namespace_flags[0]); i++) {
        if (namespace_flags[i] & allowed)
            continue;
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
                              SCMP_A0(SCMP_CMP_MASKED_EQ, namespace_flags[i], namespace_flags[i]));
    }
    return rc;
}

static int add_socket_rules(scmp_filter_ctx ctx)
{
    int rc = 0;
    /* Type carries SOCK_NONBLOCK/SOCK_CLOEXEC in high bits; the kind is the low nibble. */
    const int inet_families[] = {AF_INET, AF_INET6};
    for (size_t f = 0; rc == 0 && f < 2; f++) {
        for (int type = 0; rc == 0 && type <= 0xf; type++) {
            uint32_t action = (type == SOCK_STREAM || type == SOCK_DGRAM) ? SCMP_ACT_ALLOW
                                                                          : SCMP_ACT_ERRNO(EPERM);
            rc = seccomp_rule_add(ctx, action, SCMP_SYS(socket), 2,
                                  SCMP_A0(SCMP_CMP_EQ, inet_families[f]),
                                  SCMP_A1(SCMP_CMP_MASKED_EQ, 0xf, type));
        }
    }
    if (rc == 0)
        rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(socket), 1,
                              SCMP_A0(SCMP_CMP_EQ, AF_UNIX));
    if (rc == 0)
        rc =
            seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(socket), 2,
                             SCMP_A0(SCMP_CMP_EQ, AF_NETLINK), SCMP_A2(SCMP_CMP_EQ, NETLINK_ROUTE));
    if (rc == 0)
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(socket), 2,
                              SCMP_A0(SCMP_CMP_EQ, AF_NETLINK), SCMP_A2(SCMP_CMP_GE, 1));
    /* Every other family: AF_PACKET (raw frames), AF_VSOCK (the hypervisor), AF_ALG
     * (kernel crypto, a frequent exploit target), and the long tail. */
    for (int family = 0; rc == 0 && family < AF_MAX; family++) {
        if (family == AF_UNIX || family == AF_INET || family == AF_INET6 || family == AF_NETLINK)
            continue;
        uint32_t action =
            family == AF_PACKET ? SCMP_ACT_ERRNO(EPERM) : SCMP_ACT_ERRNO(EAFNOSUPPORT);
        rc = seccomp_rule_add(ctx, action, SCMP_SYS(socket), 1, SCMP_A0(SCMP_CMP_EQ, family));
    }
    if (rc == 0)
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EAFNOSUPPORT), SCMP_SYS(socket), 1,
                              SCMP_A0(SCMP_CMP_GE, AF_MAX));
    if (rc == 0)
        rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(socketpair), 1,
                              SCMP_A0(SCMP_CMP_EQ, AF_UNIX));
    if (rc == 0)
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EAFNOSUPPORT), SCMP_SYS(socketpair), 1,
                              SCMP_A0(SCMP_CMP_NE, AF_UNIX));
    return rc;
}

static int add_personality_rules(scmp_filter_ctx ctx)
{
    /* Queries and the harmless personas Docker allows; ADDR_NO_RANDOMIZE and
     * READ_IMPLIES_EXEC weaken exploit mitigations and are refused. */
    static const unsigned long allowed[] = {0x0, 0x8, 0x20000, 0x20008, 0xffffffff};
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < sizeof(allowed) / sizeof(allowed[0]); i++)
        rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(personality), 1,
                              SCMP_A0(SCMP_CMP_EQ, allowed[i]));
    /* The flags that weaken mitigations get an explicit EPERM (other values fall
     * to the default, ENOSYS). */
    static const unsigned long weakening[] = {ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC, MMAP_PAGE_ZERO,
                                              ADDR_COMPAT_LAYOUT};
    for (size_t i = 0; rc == 0 && i < sizeof(weakening) / sizeof(weakening[0]); i++)
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(personality), 1,
                              SCMP_A0(SCMP_CMP_MASKED_EQ, weakening[i], weakening[i]));
    return rc;
}

/* A filter with what both share: a system call of a foreign architecture kills the
 * process, and libseccomp leaves no_new_privs to the spawner, which sets it itself. */
static int new_filter(uint32_t default_action, scmp_filter_ctx *ctx)
{
    *ctx = seccomp_init(default_action);
    if (*ctx == NULL)
        return -ENOMEM;
    int rc = seccomp_attr_set(*ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
    if (rc == 0)
        rc = seccomp_attr_set(*ctx, SCMP_FLTATR_CTL_NNP, 0);
    return rc;
}

/* Hands the filter out when every rule went in (rc 0), releases it otherwise. */
static int finish_filter(scmp_filter_ctx ctx, int rc, scmp_filter_ctx *out)
{
    if (rc < 0) {
        if (ctx != NULL)
            seccomp_release(ctx);
        return rc;
    }
    *out = ctx;
    return 0;
}

static int build_sandbox_filter(scmp_filter_ctx *out)
{
    scmp_filter_ctx ctx;
    int rc = new_filter(DEFAULT_ACTION, &ctx);
    /* A binary search over syscall numbers instead of a linear chain: each system call
     * of sandboxed code and the kernel's per-filter cache computation at attach time
     * (one emulation per syscall number) then walk log(n) rules, not hundreds. */
    if (rc == 0)
        rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2);
    if (rc == 0)
        rc = add_named(ctx, SCMP_ACT_ALLOW, allowed_syscalls,
                       sizeof(allowed_syscalls) / sizeof(allowed_syscalls[0]));
    if (rc == 0)
        rc = add_named(ctx, SCMP_ACT_ERRNO(EPERM), denied_syscalls,
                       sizeof(denied_syscalls) / sizeof(denied_syscalls[0]));
    if (rc == 0)
        rc = add_named(ctx, SCMP_ACT_ERRNO(ENOSYS), unavailable_syscalls,
                       sizeof(unavailable_syscalls) / sizeof(unavailable_syscalls[0]));
    if (rc == 0)
        rc = add_clone_rules(ctx, SHIM_CLONE_FLAGS);
    /* For the shims' per-process /proc; the process filter takes them away. */
    if (rc == 0)
        rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(mount), 0);
    if (rc == 0)
        rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(mount_setattr), 0);
    if (rc == 0)
        rc = add_socket_rules(ctx);
    if (rc == 0)
        rc = add_personality_rules(ctx);
    return finish_filter(ctx, rc, out);
}

static int build_process_filter(scmp_filter_ctx *out)
{
    scmp_filter_ctx ctx;
    int rc = new_filter(SCMP_ACT_ALLOW, &ctx);
    if (rc == 0)
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(mount), 0);
    if (rc == 0)
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(mount_setattr), 0);
    for (size_t i = 0; rc == 0 && i < sizeof(namespace_flags) / sizeof(namespace_flags[0]); i++)
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
                              SCMP_A0(SCMP_CMP_MASKED_EQ, namespace_flags[i], namespace_flags[i]));
    static const unsigned long denied_ioctls[] = {TIOCSTI, TIOCLINUX};
    for (size_t i = 0; rc == 0 && i < sizeof(denied_ioctls) / sizeof(denied_ioctls[0]); i++)
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(ioctl), 1,
                              SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffUL, denied_ioctls[i]));
    /* The command is an int: compared on the low 32 bits, as for ioctl. */
    if (rc == 0)
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(fcntl), 1,
                              SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffUL, F_SETLEASE));
    return finish_filter(ctx, rc, out);
}

int cq_seccomp_policy_build(scmp_filter_ctx *sandbox_out, scmp_filter_ctx *process_out)
{
    int rc = build_sandbox_filter(sandbox_out);
    if (rc < 0)
        return rc;
    rc = build_process_filter(process_out);
    if (rc < 0) {
        seccomp_release(*sandbox_out);
        *sandbox_out = NULL;
    }
    return rc;
}
