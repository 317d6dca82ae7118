/* tests/unit/test_seccomp.c - the compiled seccomp policy (sandbox/seccomp_policy.c,
 * built into build/sandbox/seccomp_bpf.c at build time).
 *
 * Each probe runs in a fresh child that attaches the filters the way codeq does:
 * the sandbox filter alone (what init and the shims run under), or the sandbox
 * filter and then the process filter (what sandboxed code runs under). The probes
 * are chosen so that the kernel without the filter would answer differently (as
 * root: success, EFAULT, ENOTTY, EOPNOTSUPP, ...), so each one shows the filter's
 * verdict and not the kernel's. */
#define _GNU_SOURCE
#include "sandbox/seccomp_bpf.h"
#include "unit.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/sched.h>
#include <linux/seccomp.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef AF_VSOCK
#define AF_VSOCK 40
#endif
#ifndef AF_ALG
#define AF_ALG 38
#endif
#define NETLINK_ROUTE_PROTO 0
#define NETLINK_AUDIT_PROTO 9

enum filters {
    NO_FILTER = 0,
    SANDBOX_FILTER = 1, /* init and the shims */
    BOTH_FILTERS = 2,   /* sandboxed code */
};

struct probe_result {
    long ret;
    int err;
};

static int attach(const unsigned char *bpf, unsigned long len)
{
    struct sock_fprog prog = {
        .len = (unsigned short)(len / sizeof(struct sock_filter)),
        .filter = (struct sock_filter *)bpf,
    };
    return (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog);
}

static int install(enum filters filters)
{
    if (filters == NO_FILTER)
        return 0;
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        return -1;
    if (attach(cq_seccomp_sandbox_bpf, cq_seccomp_sandbox_bpf_len) < 0)
        return -1;
    if (filters == BOTH_FILTERS && attach(cq_seccomp_process_bpf, cq_seccomp_process_bpf_len) < 0)
        return -1;
    return 0;
}

/* Runs probe in a child under the given filters and returns what it got. The child
 * leaves with _exit: no atexit handler (LeakSanitizer's included) runs under the
 * filter. */
static struct probe_result run(enum filters filters, long (*probe)(void))
{
    int p[2];
    ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(p[0]);
        struct probe_result r = {.ret = -2};
        if (install(filters) < 0) {
            r.err = errno;
        } else {
            errno = 0;
            r.ret = probe();
            r.err = r.ret < 0 ? errno : 0;
        }
        (void)!write(p[1], &r, sizeof(r));
        _exit(0);
    }
    close(p[1]);
    struct probe_result r = {.ret = -3};
    ssize_t n = read(p[0], &r, sizeof(r));
    close(p[0]);
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "probe child died: %#x", status);
    ck_assert_int_eq(n, (ssize_t)sizeof(r));
    ck_assert_msg(r.ret != -2, "attaching the filters failed: %s", strerror(r.err));
    return r;
}

/* The probe failed with exactly errno e. */
#define expect_errno(filters, probe, e)                                                            \
    do {                                                                                           \
        struct probe_result r_ = run(filters, probe);                                              \
        ck_assert_msg(r_.ret == -1 && r_.err == (e), "%s: ret %ld errno %s, expected %s", #probe,  \
                      r_.ret, strerrorname_np(r_.err), strerrorname_np(e));                        \
    } while (0)

/* The probe succeeded (returned >= 0). */
#define expect_ok(filters, probe)                                                                  \
    do {                                                                                           \
        struct probe_result r_ = run(filters, probe);                                              \
        ck_assert_msg(r_.ret >= 0, "%s: ret %ld errno %s, expected success", #probe, r_.ret,       \
                      strerrorname_np(r_.err));                                                    \
    } while (0)

/* --- probes: each makes one decision of the policy visible -------------------------- */

static long raw_clone(unsigned long flags)
{
    long pid = syscall(SYS_clone, flags | SIGCHLD, 0, NULL, NULL, 0);
    if (pid == 0)
        syscall(SYS_exit_group, 0);
    if (pid > 0) {
        waitpid((pid_t)pid, NULL, __WALL);
        return 1;
    }
    return pid;
}

static long probe_getpid(void)
{
    return syscall(SYS_getpid) == getpid() ? 0 : -1;
}

static long probe_fork(void)
{
    return raw_clone(0);
}

static long probe_mount(void)
{
    return syscall(SYS_mount, "none", "/nonexistent-codeq-unit", "codeq-bogus-fs", 0UL, NULL);
}

static long probe_mount_setattr(void)
{
    return syscall(SYS_mount_setattr, -1, "", 0, NULL, 0);
}

static long probe_unshare_user(void)
{
    return syscall(SYS_unshare, CLONE_NEWUSER);
}

static long probe_setns(void)
{
    return syscall(SYS_setns, -1, 0);
}

static long probe_clone_newuser(void)
{
    return raw_clone(CLONE_NEWUSER);
}

static long probe_clone_newnet(void)
{
    return raw_clone(CLONE_NEWNET);
}

static long probe_clone_newcgroup(void)
{
    return raw_clone(CLONE_NEWCGROUP);
}

static long probe_clone_newipc(void)
{
    return raw_clone(CLONE_NEWIPC);
}

static long probe_clone_newuts(void)
{
    return raw_clone(CLONE_NEWUTS);
}

static long probe_clone_newpid(void)
{
    return raw_clone(CLONE_NEWPID);
}

static long probe_clone_shim(void)
{
    return raw_clone(CLONE_NEWPID | CLONE_NEWNS);
}

static long probe_clone_thread_flags(void)
{
    /* What glibc's fork uses: no namespace flags, so it must pass. */
    return raw_clone(CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID);
}

static long probe_clone3(void)
{
    struct clone_args args = {.exit_signal = SIGCHLD};
    long pid = syscall(SYS_clone3, &args, sizeof(args));
    if (pid == 0)
        syscall(SYS_exit_group, 0);
    if (pid > 0)
        waitpid((pid_t)pid, NULL, 0);
    return pid;
}

static long probe_io_uring_setup(void)
{
    char params[256] = {0}; /* struct io_uring_params and then some */
    return syscall(SYS_io_uring_setup, 1, params);
}

static long probe_keyctl(void)
{
    return syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3 /* session */, 0);
}

static long probe_bpf(void)
{
    return syscall(SYS_bpf, 5 /* BPF_PROG_LOAD */, NULL, 0);
}

static long probe_perf_event_open(void)
{
    return syscall(SYS_perf_event_open, NULL, 0, -1, -1, 0);
}

static long probe_userfaultfd(void)
{
    return syscall(SYS_userfaultfd, 0);
}

static long probe_ptrace(void)
{
    /* Unfiltered: ESRCH (the parent is not our tracee). */
    return syscall(SYS_ptrace, 2 /* PTRACE_PEEKDATA */, getppid(), NULL, NULL);
}

static long probe_chroot(void)
{
    return syscall(SYS_chroot, "/");
}

static long probe_socket(int family, int type, int protocol)
{
    long fd = syscall(SYS_socket, family, type, protocol);
    if (fd >= 0)
        close((int)fd);
    return fd;
}

static long probe_socket_vsock(void)
{
    return probe_socket(AF_VSOCK, SOCK_STREAM, 0);
}

static long probe_socket_alg(void)
{
    return probe_socket(AF_ALG, SOCK_SEQPACKET, 0);
}

static long probe_socket_beyond_af_max(void)
{
    return probe_socket(1000, SOCK_STREAM, 0);
}

static long probe_socket_raw(void)
{
    return probe_socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
}

static long probe_socket_raw_with_flags(void)
{
    /* SOCK_CLOEXEC and SOCK_NONBLOCK live in the high bits of type. */
    return probe_socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, IPPROTO_ICMP);
}

static long probe_socket_raw6(void)
{
    return probe_socket(AF_INET6, SOCK_RAW, IPPROTO_ICMPV6);
}

static long probe_socket_packet(void)
{
    return probe_socket(AF_PACKET, SOCK_RAW, 0);
}

static long probe_socket_stream(void)
{
    return probe_socket(AF_INET, SOCK_STREAM, 0);
}

static long probe_socket_dgram_with_flags(void)
{
    return probe_socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
}

static long probe_socket_unix(void)
{
    return probe_socket(AF_UNIX, SOCK_SEQPACKET, 0);
}

static long probe_socket_netlink_route(void)
{
    return probe_socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE_PROTO);
}

static long probe_socket_netlink_audit(void)
{
    return probe_socket(AF_NETLINK, SOCK_RAW, NETLINK_AUDIT_PROTO);
}

static long probe_socketpair(int family)
{
    int sv[2];
    long rc = syscall(SYS_socketpair, family, SOCK_STREAM, 0, sv);
    if (rc == 0) {
        close(sv[0]);
        close(sv[1]);
    }
    return rc;
}

static long probe_socketpair_inet(void)
{
    /* Unfiltered: EOPNOTSUPP. */
    return probe_socketpair(AF_INET);
}

static long probe_socketpair_unix(void)
{
    return probe_socketpair(AF_UNIX);
}

static long probe_ioctl(unsigned long request)
{
    int p[2];
    if (pipe(p) < 0)
        return -100;
    char c = 'x';
    long rc = syscall(SYS_ioctl, p[0], request, &c);
    int saved = errno;
    close(p[0]);
    close(p[1]);
    errno = saved;
    return rc;
}

static long probe_ioctl_tiocsti(void)
{
    /* Unfiltered, on a pipe: ENOTTY. */
    return probe_ioctl(TIOCSTI);
}

static long probe_ioctl_tiocsti_high_bits(void)
{
    /* The kernel truncates the request to 32 bits: this is TIOCSTI too. */
    return probe_ioctl(TIOCSTI | (1UL << 32));
}

static long probe_ioctl_tioclinux(void)
{
    return probe_ioctl(TIOCLINUX);
}

static long probe_ioctl_fionread(void)
{
    return probe_ioctl(FIONREAD);
}

static long probe_personality_query(void)
{
    return syscall(SYS_personality, 0xffffffffUL);
}

static long probe_personality_no_randomize(void)
{
    long rc = syscall(SYS_personality, (unsigned long)ADDR_NO_RANDOMIZE);
    int saved = errno;
    /* Refused must also mean unchanged. */
    long now = syscall(SYS_personality, 0xffffffffUL);
    if (rc < 0 && now >= 0 && (now & ADDR_NO_RANDOMIZE))
        return -200;
    errno = saved;
    return rc;
}

static long probe_personality_linux(void)
{
    return syscall(SYS_personality, 0UL /* PER_LINUX */);
}

static long probe_syscall_1000(void)
{
    return syscall(1000, 0, 0, 0);
}

static long probe_statmount(void)
{
    /* A real system call (Linux 6.8) that the policy does not list: the default
     * action answers. Unfiltered it fails with EFAULT or EINVAL. */
    return syscall(457, NULL, NULL, 0, 0);
}

/* --- tests: sandboxed code (both filters) -------------------------------------------- */

START_TEST(basics_work)
{
    expect_ok(BOTH_FILTERS, probe_getpid);
    expect_ok(BOTH_FILTERS, probe_fork);
    expect_ok(BOTH_FILTERS, probe_clone_thread_flags);
    expect_ok(BOTH_FILTERS, probe_ioctl_fionread);
}
END_TEST

START_TEST(execve_works)
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        if (install(BOTH_FILTERS) < 0)
            _exit(126);
        char *const argv[] = {"true", NULL};
        char *const envp[] = {NULL};
        execve("/bin/true", argv, envp);
        _exit(127);
    }
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %#x", status);
}
END_TEST

START_TEST(mount_family_is_denied)
{
    expect_errno(BOTH_FILTERS, probe_mount, EPERM);
    expect_errno(BOTH_FILTERS, probe_mount_setattr, EPERM);
    expect_errno(BOTH_FILTERS, probe_chroot, EPERM);
}
END_TEST

START_TEST(namespaces_are_denied)
{
    expect_errno(BOTH_FILTERS, probe_unshare_user, EPERM);
    expect_errno(BOTH_FILTERS, probe_setns, EPERM);
    expect_errno(BOTH_FILTERS, probe_clone_newuser, EPERM);
    expect_errno(BOTH_FILTERS, probe_clone_newnet, EPERM);
    /* What the shims may do, sandboxed code may not. */
    expect_errno(BOTH_FILTERS, probe_clone_newpid, EPERM);
    expect_errno(BOTH_FILTERS, probe_clone_shim, EPERM);
}
END_TEST

START_TEST(clone3_and_io_uring_are_absent)
{
    /* ENOSYS, so that glibc and libuv fall back instead of failing. */
    expect_errno(BOTH_FILTERS, probe_clone3, ENOSYS);
    expect_errno(BOTH_FILTERS, probe_io_uring_setup, ENOSYS);
}
END_TEST

START_TEST(kernel_attack_surface_is_denied)
{
    expect_errno(BOTH_FILTERS, probe_keyctl, EPERM);
    expect_errno(BOTH_FILTERS, probe_bpf, EPERM);
    expect_errno(BOTH_FILTERS, probe_perf_event_open, EPERM);
    expect_errno(BOTH_FILTERS, probe_userfaultfd, EPERM);
    expect_errno(BOTH_FILTERS, probe_ptrace, EPERM);
}
END_TEST

START_TEST(socket_families)
{
    expect_errno(BOTH_FILTERS, probe_socket_vsock, EAFNOSUPPORT);
    expect_errno(BOTH_FILTERS, probe_socket_alg, EAFNOSUPPORT);
    expect_errno(BOTH_FILTERS, probe_socket_beyond_af_max, EAFNOSUPPORT);
    expect_errno(BOTH_FILTERS, probe_socket_packet, EPERM);
    expect_errno(BOTH_FILTERS, probe_socket_netlink_audit, EPERM);
    expect_ok(BOTH_FILTERS, probe_socket_unix);
    expect_ok(BOTH_FILTERS, probe_socket_netlink_route);
}
END_TEST

START_TEST(inet_socket_types)
{
    expect_errno(BOTH_FILTERS, probe_socket_raw, EPERM);
    expect_errno(BOTH_FILTERS, probe_socket_raw_with_flags, EPERM);
    expect_errno(BOTH_FILTERS, probe_socket_raw6, EPERM);
    expect_ok(BOTH_FILTERS, probe_socket_stream);
    expect_ok(BOTH_FILTERS, probe_socket_dgram_with_flags);
}
END_TEST

START_TEST(socketpair_families)
{
    expect_errno(BOTH_FILTERS, probe_socketpair_inet, EAFNOSUPPORT);
    expect_ok(BOTH_FILTERS, probe_socketpair_unix);
}
END_TEST

START_TEST(terminal_injection_is_denied)
{
    expect_errno(BOTH_FILTERS, probe_ioctl_tiocsti, EPERM);
    expect_errno(BOTH_FILTERS, probe_ioctl_tiocsti_high_bits, EPERM);
    expect_errno(BOTH_FILTERS, probe_ioctl_tioclinux, EPERM);
}
END_TEST

START_TEST(personality_values)
{
    expect_ok(BOTH_FILTERS, probe_personality_query);
    expect_ok(BOTH_FILTERS, probe_personality_linux);
    /* ADDR_NO_RANDOMIZE weakens ASLR: refused explicitly. */
    expect_errno(BOTH_FILTERS, probe_personality_no_randomize, EPERM);
}
END_TEST

START_TEST(unknown_syscalls_are_enosys)
{
    expect_errno(BOTH_FILTERS, probe_syscall_1000, ENOSYS);
    expect_errno(BOTH_FILTERS, probe_statmount, ENOSYS);
    expect_errno(SANDBOX_FILTER, probe_statmount, ENOSYS);
}
END_TEST

/* --- tests: init and shims (the sandbox filter alone) -------------------------------- */

START_TEST(sandbox_filter_lets_mount_through)
{
    /* As root the kernel then refuses the bogus file system type itself. */
    struct probe_result r = run(SANDBOX_FILTER, probe_mount);
    ck_assert_int_eq(r.ret, -1);
    ck_assert_msg(r.err == ENODEV || r.err == ENOENT, "mount got %s, not the kernel's answer",
                  strerrorname_np(r.err));
    r = run(SANDBOX_FILTER, probe_mount_setattr);
    ck_assert_int_eq(r.ret, -1);
    ck_assert_msg(r.err != EPERM && r.err != ENOSYS, "mount_setattr got %s",
                  strerrorname_np(r.err));
}
END_TEST

START_TEST(sandbox_filter_allows_shim_namespaces_only)
{
    expect_ok(SANDBOX_FILTER, probe_clone_shim);
    expect_ok(SANDBOX_FILTER, probe_clone_newpid);
    expect_ok(SANDBOX_FILTER, probe_fork);
    expect_errno(SANDBOX_FILTER, probe_clone_newuser, EPERM);
    expect_errno(SANDBOX_FILTER, probe_clone_newnet, EPERM);
    expect_errno(SANDBOX_FILTER, probe_clone_newcgroup, EPERM);
    expect_errno(SANDBOX_FILTER, probe_clone_newipc, EPERM);
    expect_errno(SANDBOX_FILTER, probe_clone_newuts, EPERM);
    expect_errno(SANDBOX_FILTER, probe_unshare_user, EPERM);
}
END_TEST

START_TEST(tiocsti_is_the_process_filters_job)
{
    /* The sandbox filter allows ioctl, so the kernel answers (a pipe is no tty). */
    expect_errno(SANDBOX_FILTER, probe_ioctl_tiocsti, ENOTTY);
    expect_errno(SANDBOX_FILTER, probe_socket_raw, EPERM);
}
END_TEST

START_TEST(probes_differ_without_filters)
{
    /* The premise of the tests above: unfiltered, the kernel answers otherwise. */
    expect_errno(NO_FILTER, probe_ioctl_tiocsti, ENOTTY);
    expect_errno(NO_FILTER, probe_socketpair_inet, EOPNOTSUPP);
    expect_errno(NO_FILTER, probe_ptrace, ESRCH);
    if (geteuid() == 0) {
        expect_ok(NO_FILTER, probe_socket_raw);
        expect_ok(NO_FILTER, probe_clone_newnet);
    }
}
END_TEST

/* --- non-native ABIs ----------------------------------------------------------------- */

static long int80_getpid(void)
{
    long ret;
    /* i386 getpid is 20; through int $0x80 the kernel sees AUDIT_ARCH_I386. */
    __asm__ volatile("int $0x80"
                     : "=a"(ret)
                     : "a"(20L)
                     : "memory", "rcx", "r8", "r9", "r10", "r11");
    return ret;
}

static int run_raw(enum filters filters, long (*fn)(void))
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        if (install(filters) < 0)
            _exit(126);
        long ret = fn();
        _exit(ret == syscall(SYS_getpid) ? 0 : 1);
    }
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    return status;
}

START_TEST(int80_kills_the_process)
{
    int status = run_raw(NO_FILTER, int80_getpid);
    if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0))
        return; /* no 32-bit emulation in this kernel: nothing to filter */
    status = run_raw(SANDBOX_FILTER, int80_getpid);
    ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS,
                  "int $0x80 under the sandbox filter: status %#x", status);
    status = run_raw(BOTH_FILTERS, int80_getpid);
    ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS,
                  "int $0x80 under both filters: status %#x", status);
}
END_TEST

static long x32_getpid(void)
{
    return syscall(0x40000000L | SYS_getpid);
}

START_TEST(x32_syscalls_kill_the_process)
{
    int status = run_raw(SANDBOX_FILTER, x32_getpid);
    ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS,
                  "x32 getpid under the sandbox filter: status %#x", status);
}
END_TEST

START_TEST(filters_are_whole_programs)
{
    ck_assert_uint_gt(cq_seccomp_sandbox_bpf_len, 0);
    ck_assert_uint_gt(cq_seccomp_process_bpf_len, 0);
    ck_assert_uint_eq(cq_seccomp_sandbox_bpf_len % sizeof(struct sock_filter), 0);
    ck_assert_uint_eq(cq_seccomp_process_bpf_len % sizeof(struct sock_filter), 0);
    ck_assert_uint_le(cq_seccomp_sandbox_bpf_len / sizeof(struct sock_filter), BPF_MAXINSNS);
    ck_assert_uint_le(cq_seccomp_process_bpf_len / sizeof(struct sock_filter), BPF_MAXINSNS);
}
END_TEST

static Suite *seccomp_suite(void)
{
    Suite *s = suite_create("seccomp");
    TCase *tc = tcase_create("sandboxed_code");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, filters_are_whole_programs);
    tcase_add_test(tc, basics_work);
    tcase_add_test(tc, execve_works);
    tcase_add_test(tc, mount_family_is_denied);
    tcase_add_test(tc, namespaces_are_denied);
    tcase_add_test(tc, clone3_and_io_uring_are_absent);
    tcase_add_test(tc, kernel_attack_surface_is_denied);
    tcase_add_test(tc, socket_families);
    tcase_add_test(tc, inet_socket_types);
    tcase_add_test(tc, socketpair_families);
    tcase_add_test(tc, terminal_injection_is_denied);
    tcase_add_test(tc, personality_values);
    tcase_add_test(tc, unknown_syscalls_are_enosys);
    suite_add_tcase(s, tc);

    tc = tcase_create("init_and_shims");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, sandbox_filter_lets_mount_through);
    tcase_add_test(tc, sandbox_filter_allows_shim_namespaces_only);
    tcase_add_test(tc, tiocsti_is_the_process_filters_job);
    tcase_add_test(tc, probes_differ_without_filters);
    suite_add_tcase(s, tc);

    tc = tcase_create("abi");
    tcase_add_test(tc, int80_kills_the_process);
    tcase_add_test(tc, x32_syscalls_kill_the_process);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return cq_unit_run(seccomp_suite(), true);
}
