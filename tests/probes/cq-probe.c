/* tests/probes/cq-probe.c - hostile probes for codeq's sandbox.
 *
 * `cq-probe NAME [ARGS]` performs one attack or check and prints exactly one result
 * line on stdout (unless noted otherwise for a probe):
 *   ok                      the operation succeeded
 *   errno=ENAME             it failed with that errno (strerrorname_np)
 *   key=value ...           data, for probes that report something
 * and exits 0 once it managed to report: the end-to-end tests (tests/e2e) decide what
 * outcome is a pass, inside a sandbox and on the host. A nonzero exit means a bug of
 * the probe itself (bad arguments, an unexpected failure of its own plumbing).
 *
 * The probes use raw system calls where glibc has no wrapper, and only harmless
 * arguments where they may also be run on the host as root: every "machine" call
 * (kexec, modules, reboot, swap, clocks) gets arguments the kernel rejects or that
 * change nothing, so that run on the host it shows that the call reaches the
 * kernel's own checks, while in the sandbox seccomp answers before the kernel looks.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <linux/bpf.h>
#include <linux/filter.h>
#include <linux/if_ether.h>
#include <linux/io_uring.h>
#include <linux/keyctl.h>
#include <linux/netlink.h>
#include <linux/perf_event.h>
#include <linux/sched.h>
#include <linux/vm_sockets.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/timex.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef AF_ALG
#define AF_ALG 38
#endif
#ifndef OPEN_TREE_CLONE
#define OPEN_TREE_CLONE 1
#endif
#ifndef FSOPEN_CLOEXEC
#define FSOPEN_CLOEXEC 1
#endif

/* ------------------------------------------------------------------------------ */
/* Reporting helpers                                                              */

static const char *errname(int e)
{
    const char *name = strerrorname_np(e);
    static char buf[32];
    if (name != NULL)
        return name;
    snprintf(buf, sizeof(buf), "E%d", e);
    return buf;
}

/* Prints `ok` for rc >= 0, else `errno=ENAME`; returns 0 (the probe's exit status). */
static int result(long rc)
{
    if (rc >= 0)
        printf("ok\n");
    else
        printf("errno=%s\n", errname(errno));
    return 0;
}

static int result_errno(int e)
{
    if (e == 0)
        printf("ok\n");
    else
        printf("errno=%s\n", errname(e));
    return 0;
}

static void __attribute__((noreturn)) die(const char *what)
{
    fprintf(stderr, "cq-probe: %s: %s\n", what, strerror(errno));
    exit(99);
}

static void __attribute__((noreturn)) usage_die(const char *msg)
{
    fprintf(stderr, "cq-probe: %s\n", msg);
    exit(98);
}

/* True when this process runs in the host's initial user namespace (identity uid
 * map) rather than in a sandbox. */
static bool on_host(void)
{
    FILE *f = fopen("/proc/self/uid_map", "re");
    if (f == NULL)
        return false;
    unsigned long inner, outer, count;
    int n = fscanf(f, "%lu %lu %lu", &inner, &outer, &count);
    fclose(f);
    return n == 3 && inner == 0 && outer == 0 && count == 4294967295UL;
}

/* Probes that change or exhaust things refuse to run on the host: they are meant for
 * a sandbox only, and a mistaken host run must not damage the machine. */
static void sandbox_only(const char *probe)
{
    if (on_host()) {
        fprintf(stderr, "cq-probe: refusing to run '%s' on the host (sandbox only)\n", probe);
        exit(95);
    }
}

/* Probes whose host run is allowed only on a path that does not exist (the kernel
 * then fails the lookup and nothing happens). */
static void host_needs_missing(const char *probe, const char *path)
{
    struct stat st;
    if (on_host() && lstat(path, &st) == 0) {
        fprintf(stderr, "cq-probe: refusing '%s' on the existing host path %s\n", probe, path);
        exit(95);
    }
}

/* Probes whose host run is allowed only below a scratch directory of the tests. */
static void host_needs_scratch(const char *probe, const char *path)
{
    if (on_host() && (strncmp(path, "/tmp/", 5) != 0 || strchr(path + 5, '/') != NULL ||
                      strstr(path, "..") != NULL || strlen(path) < 10)) {
        fprintf(stderr, "cq-probe: refusing '%s' on host path %s (only /tmp/<scratch>)\n", probe,
                path);
        exit(95);
    }
}

/* Runs fn in a forked child (so that a successful namespace change, trace, ... never
 * affects the probe itself) and returns the errno it reported (0: success). */
static int in_child(int (*fn)(void *), void *arg)
{
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) < 0)
        die("pipe");
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0) {
        close(pipefd[0]);
        int e = fn(arg);
        if (write(pipefd[1], &e, sizeof(e)) != (ssize_t)sizeof(e))
            _exit(97);
        _exit(0);
    }
    close(pipefd[1]);
    int e = -1;
    ssize_t n = read(pipefd[0], &e, sizeof(e));
    close(pipefd[0]);
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (n != (ssize_t)sizeof(e)) {
        errno = EPROTO;
        die("child did not report");
    }
    return e;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cmp_long(const void *a, const void *b)
{
    long x = *(const long *)a, y = *(const long *)b;
    return (x > y) - (x < y);
}

/* Sorted names of a directory (without . and ..); NULL with errno on failure. */
static char **list_dir(const char *path, size_t *count)
{
    DIR *d = opendir(path);
    if (d == NULL)
        return NULL;
    size_t n = 0, cap = 64;
    char **names = malloc(cap * sizeof(*names));
    if (names == NULL)
        die("malloc");
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (n == cap) {
            cap *= 2;
            names = realloc(names, cap * sizeof(*names));
            if (names == NULL)
                die("realloc");
        }
        names[n++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof(*names), cmp_str);
    *count = n;
    return names;
}

/* ------------------------------------------------------------------------------ */
/* Files                                                                          */

/* read PATH: open it read-only and read from it. */
static int p_read(int argc, char **argv)
{
    if (argc < 1)
        usage_die("read PATH");
    int fd = open(argv[0], O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return result(-1);
    char buf[4096];
    ssize_t n = read(fd, buf, sizeof(buf));
    int e = errno;
    close(fd);
    if (n < 0)
        return result_errno(e);
    printf("ok\n");
    return 0;
}

/* size PATH: read the whole file; bytes=<how many> (at most 256M are read). */
static int p_size(int argc, char **argv)
{
    if (argc < 1)
        usage_die("size PATH");
    int fd = open(argv[0], O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return result(-1);
    static char buf[65536];
    unsigned long long total = 0;
    ssize_t n;
    while ((n = read(fd, buf, sizeof(buf))) > 0 && total < (256ULL << 20))
        total += (unsigned long long)n;
    int e = errno;
    close(fd);
    if (n < 0)
        return result_errno(e);
    printf("bytes=%llu\n", total);
    return 0;
}

/* list PATH: the sorted names in a directory, as entries=a,b,c. */
static int p_list(int argc, char **argv)
{
    if (argc < 1)
        usage_die("list PATH");
    size_t n;
    char **names = list_dir(argv[0], &n);
    if (names == NULL)
        return result(-1);
    printf("entries=");
    for (size_t i = 0; i < n; i++)
        printf("%s%s", i ? "," : "", names[i]);
    printf("\n");
    return 0;
}

/* create PATH: create a new file (O_EXCL) and write a byte into it. */
static int p_create(int argc, char **argv)
{
    sandbox_only("create");
    if (argc < 1)
        usage_die("create PATH");
    int fd = open(argv[0], O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return result(-1);
    ssize_t n = write(fd, "x", 1);
    int e = errno;
    close(fd);
    return result_errno(n == 1 ? 0 : e);
}

/* openw PATH: open an existing file for writing (no O_TRUNC: even success changes
 * nothing by itself). */
static int p_openw(int argc, char **argv)
{
    if (argc < 1)
        usage_die("openw PATH");
    int fd = open(argv[0], O_WRONLY | O_CLOEXEC);
    if (fd >= 0)
        close(fd);
    return result(fd);
}

/* append PATH: open an existing file for appending and write one line to it. */
static int p_append(int argc, char **argv)
{
    sandbox_only("append");
    if (argc < 1)
        usage_die("append PATH");
    int fd = open(argv[0], O_WRONLY | O_APPEND | O_CLOEXEC);
    if (fd < 0)
        return result(-1);
    ssize_t n = write(fd, "codeq-probe:x:0:0::/:/bin/sh\n", 29);
    int e = errno;
    close(fd);
    return result_errno(n == 29 ? 0 : e);
}

/* ------------------------------------------------------------------------------ */
/* /proc and processes                                                            */

static bool all_digits(const char *s)
{
    if (*s == '\0')
        return false;
    for (; *s != '\0'; s++)
        if (*s < '0' || *s > '9')
            return false;
    return true;
}

/* pids: the numeric entries of /proc, as pids=1,2 self=2. */
static int p_pids(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    size_t n;
    char **names = list_dir("/proc", &n);
    if (names == NULL)
        return result(-1);
    long *pids = calloc(n + 1, sizeof(long));
    size_t np = 0;
    for (size_t i = 0; i < n; i++)
        if (all_digits(names[i]))
            pids[np++] = strtol(names[i], NULL, 10);
    qsort(pids, np, sizeof(long), cmp_long);
    printf("pids=");
    for (size_t i = 0; i < np; i++)
        printf("%s%ld", i ? "," : "", pids[i]);
    printf(" self=%ld\n", (long)getpid());
    return 0;
}

/* status: the identity and privilege lines of /proc/self/status. */
static int p_status(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    FILE *f = fopen("/proc/self/status", "re");
    if (f == NULL)
        return result(-1);
    static const char *const keys[] = {
        "Uid",    "Gid",    "CapInh",     "CapPrm",  "CapEff",
        "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp", "Seccomp_filters"};
    char line[512];
    bool first = true;
    while (fgets(line, sizeof(line), f) != NULL) {
        char *colon = strchr(line, ':');
        if (colon == NULL)
            continue;
        *colon = '\0';
        for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
            if (strcmp(line, keys[i]) != 0)
                continue;
            char *v = colon + 1;
            v += strspn(v, " \t");
            v[strcspn(v, "\n")] = '\0';
            for (char *p = v; *p != '\0'; p++)
                if (*p == '\t' || *p == ' ')
                    *p = ',';
            printf("%s%s=%s", first ? "" : " ", keys[i], v);
            first = false;
        }
    }
    fclose(f);
    printf("\n");
    return 0;
}

/* fds: the fds open in this process (the directory fd used to list them excluded). */
static int p_fds(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL)
        return result(-1);
    int self = dirfd(d);
    long fds[4096];
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && n < 4096) {
        if (!all_digits(e->d_name))
            continue;
        long fd = strtol(e->d_name, NULL, 10);
        if (fd != self)
            fds[n++] = fd;
    }
    closedir(d);
    qsort(fds, n, sizeof(long), cmp_long);
    printf("fds=");
    for (size_t i = 0; i < n; i++)
        printf("%s%ld", i ? "," : "", fds[i]);
    printf("\n");
    return 0;
}

/* env: the sorted names of the environment, as env=A,B,C. */
static int p_env(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    extern char **environ;
    size_t n = 0;
    for (char **e = environ; *e != NULL; e++)
        n++;
    char **names = calloc(n + 1, sizeof(char *));
    for (size_t i = 0; i < n; i++)
        names[i] = strndup(environ[i], strcspn(environ[i], "="));
    qsort(names, n, sizeof(char *), cmp_str);
    printf("env=");
    for (size_t i = 0; i < n; i++)
        printf("%s%s", i ? "," : "", names[i]);
    printf("\n");
    return 0;
}

/* getenv NAME: value=VALUE or unset. */
static int p_getenv(int argc, char **argv)
{
    if (argc < 1)
        usage_die("getenv NAME");
    const char *v = getenv(argv[0]);
    if (v == NULL)
        printf("unset\n");
    else
        printf("value=%s\n", v);
    return 0;
}

/* kill PID SIG */
static int p_kill(int argc, char **argv)
{
    if (argc < 2)
        usage_die("kill PID SIG");
    long pid = strtol(argv[0], NULL, 10), sig = strtol(argv[1], NULL, 10);
    /* On the host only the existence check (signal 0) of one given process. */
    if (on_host() && (pid <= 1 || sig != 0)) {
        fprintf(stderr, "cq-probe: refusing to send signal %ld to %ld on the host\n", sig, pid);
        exit(95);
    }
    return result(kill((pid_t)pid, (int)sig));
}

/* ------------------------------------------------------------------------------ */
/* Mounts and namespaces                                                          */

/* mount-tmpfs DIR: mount a tmpfs on DIR and, when that worked, unmount it again. */
static int p_mount_tmpfs(int argc, char **argv)
{
    if (argc < 1)
        usage_die("mount-tmpfs DIR");
    host_needs_scratch("mount-tmpfs", argv[0]);
    if (mount("tmpfs", argv[0], "tmpfs", MS_NOSUID | MS_NODEV, "size=1m") < 0)
        return result(-1);
    if (umount2(argv[0], 0) < 0) {
        printf("ok umount=%s\n", errname(errno));
        return 0;
    }
    printf("ok\n");
    return 0;
}

/* umount PATH */
static int p_umount(int argc, char **argv)
{
    if (argc < 1)
        usage_die("umount PATH");
    host_needs_scratch("umount", argv[0]);
    return result(umount2(argv[0], 0));
}

/* pivot-root NEW OLD */
static int p_pivot_root(int argc, char **argv)
{
    if (argc < 2)
        usage_die("pivot-root NEW OLD");
    host_needs_missing("pivot-root", argv[0]);
    return result(syscall(SYS_pivot_root, argv[0], argv[1]));
}

/* chroot PATH (in a child: success must not change the probe) */
static int chroot_child(void *arg)
{
    return chroot((const char *)arg) < 0 ? errno : 0;
}

static int p_chroot(int argc, char **argv)
{
    if (argc < 1)
        usage_die("chroot PATH");
    return result_errno(in_child(chroot_child, argv[0]));
}

/* open-tree PATH: a detached clone of the mount at PATH (closed at once). */
static int p_open_tree(int argc, char **argv)
{
    if (argc < 1)
        usage_die("open-tree PATH");
    long fd = syscall(SYS_open_tree, AT_FDCWD, argv[0], OPEN_TREE_CLONE | O_CLOEXEC);
    if (fd >= 0)
        close((int)fd);
    return result(fd);
}

/* fsopen FSTYPE: a new file system context (closed at once). */
static int p_fsopen(int argc, char **argv)
{
    if (argc < 1)
        usage_die("fsopen FSTYPE");
    long fd = syscall(SYS_fsopen, argv[0], FSOPEN_CLOEXEC);
    if (fd >= 0)
        close((int)fd);
    return result(fd);
}

static unsigned long ns_flag(const char *name)
{
    static const struct {
        const char *name;
        unsigned long flag;
    } flags[] = {
        {"user", CLONE_NEWUSER},     {"mnt", CLONE_NEWNS},  {"pid", CLONE_NEWPID},
        {"net", CLONE_NEWNET},       {"ipc", CLONE_NEWIPC}, {"uts", CLONE_NEWUTS},
        {"cgroup", CLONE_NEWCGROUP},
    };
    for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++)
        if (strcmp(flags[i].name, name) == 0)
            return flags[i].flag;
    usage_die("namespace: user, mnt, pid, net, ipc, uts or cgroup");
}

static int unshare_child(void *arg)
{
    return unshare((int)*(unsigned long *)arg) < 0 ? errno : 0;
}

/* unshare NS: unshare(CLONE_NEW<NS>) in a forked child. */
static int p_unshare(int argc, char **argv)
{
    if (argc < 1)
        usage_die("unshare NS");
    unsigned long flag = ns_flag(argv[0]);
    return result_errno(in_child(unshare_child, &flag));
}

/* clone-ns NS: raw clone(CLONE_NEW<NS> | SIGCHLD); the child exits at once. */
static int p_clone_ns(int argc, char **argv)
{
    if (argc < 1)
        usage_die("clone-ns NS");
    unsigned long flag = ns_flag(argv[0]);
    long pid = syscall(SYS_clone, flag | SIGCHLD, 0, 0, 0, 0);
    if (pid == 0)
        _exit(0);
    if (pid < 0)
        return result(-1);
    waitpid((pid_t)pid, NULL, 0);
    return result(0);
}

static int setns_child(void *arg)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/ns/%s", (const char *)arg);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 1000 + errno; /* distinguishable from setns's own answer */
    int rc = setns(fd, 0);
    return rc < 0 ? errno : 0;
}

/* setns NS: join (again) this process's own namespace NS, in a forked child. */
static int p_setns(int argc, char **argv)
{
    if (argc < 1)
        usage_die("setns NS");
    (void)ns_flag(argv[0]);
    int e = in_child(setns_child, argv[0]);
    if (e >= 1000) {
        printf("open-errno=%s\n", errname(e - 1000));
        return 0;
    }
    return result_errno(e);
}

/* clone3: a plain fork through clone3 (no namespace flags at all). */
static int p_clone3(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    struct clone_args args;
    memset(&args, 0, sizeof(args));
    args.exit_signal = SIGCHLD;
    long pid = syscall(SYS_clone3, &args, sizeof(args));
    if (pid == 0)
        _exit(0);
    if (pid < 0)
        return result(-1);
    waitpid((pid_t)pid, NULL, 0);
    return result(0);
}

/* ------------------------------------------------------------------------------ */
/* Other processes                                                                */

static int traceme_child(void *arg)
{
    (void)arg;
    return ptrace(PTRACE_TRACEME, 0, NULL, NULL) < 0 ? errno : 0;
}

/* ptrace-traceme: PTRACE_TRACEME in a forked child. */
static int p_ptrace_traceme(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return result_errno(in_child(traceme_child, NULL));
}

static pid_t start_sleeper(void)
{
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0) {
        for (;;)
            pause();
    }
    return pid;
}

static void stop_child(pid_t pid)
{
    kill(pid, SIGKILL);
    while (waitpid(pid, NULL, __WALL) < 0 && errno == EINTR)
        ;
}

/* ptrace-attach: PTRACE_ATTACH to a child it forked itself. */
static int p_ptrace_attach(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    pid_t child = start_sleeper();
    long rc = ptrace(PTRACE_ATTACH, child, NULL, NULL);
    int e = errno;
    if (rc == 0) {
        waitpid(child, NULL, __WALL);
        ptrace(PTRACE_DETACH, child, NULL, NULL);
    }
    stop_child(child);
    return result_errno(rc == 0 ? 0 : e);
}

static volatile long vm_secret = 0x5ec7e7;

/* process-vm-readv: read a variable out of a child it forked itself. */
static int p_process_vm_readv(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    pid_t child = start_sleeper();
    long value = 0;
    struct iovec local = {.iov_base = &value, .iov_len = sizeof(value)};
    struct iovec remote = {.iov_base = (void *)&vm_secret, .iov_len = sizeof(value)};
    ssize_t n = process_vm_readv(child, &local, 1, &remote, 1, 0);
    int e = errno;
    stop_child(child);
    if (n == (ssize_t)sizeof(value) && value != 0x5ec7e7) {
        printf("wrong-value\n");
        return 0;
    }
    return result_errno(n == (ssize_t)sizeof(value) ? 0 : e);
}

/* ------------------------------------------------------------------------------ */
/* Kernel attack surface                                                          */

/* keyctl: KEYCTL_GET_KEYRING_ID of the session keyring (without creating one). */
static int p_keyctl(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return result(syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0));
}

/* add-key: a key of a type that does not exist (the kernel answers ENODEV). */
static int p_add_key(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return result(syscall(SYS_add_key, "codeq-no-such-type", "codeq-probe", "x", (size_t)1,
                          KEY_SPEC_PROCESS_KEYRING));
}

/* request-key: a user key that does not exist, without an upcall (ENOKEY). */
static int p_request_key(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return result(syscall(SYS_request_key, "user", "codeq-probe-no-such-key", NULL, 0));
}

/* bpf: BPF_PROG_LOAD of a trivial socket filter (r0 = 0; exit). */
static int p_bpf(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    struct bpf_insn insns[2];
    memset(insns, 0, sizeof(insns));
    insns[0].code = BPF_ALU64 | BPF_MOV | BPF_K; /* r0 = 0 */
    insns[0].dst_reg = BPF_REG_0;
    insns[0].imm = 0;
    insns[1].code = BPF_JMP | BPF_EXIT;
    static const char license[] = "GPL";
    union bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
    attr.insns = (uint64_t)(uintptr_t)insns;
    attr.insn_cnt = 2;
    attr.license = (uint64_t)(uintptr_t)license;
    long fd = syscall(SYS_bpf, BPF_PROG_LOAD, &attr, sizeof(attr));
    if (fd >= 0)
        close((int)fd);
    return result(fd);
}

/* perf: perf_event_open of the software cpu-clock counter on itself. */
static int p_perf(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    struct perf_event_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.type = PERF_TYPE_SOFTWARE;
    attr.size = sizeof(attr);
    attr.config = PERF_COUNT_SW_CPU_CLOCK;
    attr.disabled = 1;
    attr.exclude_kernel = 1;
    attr.exclude_hv = 1;
    long fd = syscall(SYS_perf_event_open, &attr, 0, -1, -1, 0);
    if (fd >= 0)
        close((int)fd);
    return result(fd);
}

/* userfaultfd */
static int p_userfaultfd(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    long fd = syscall(SYS_userfaultfd, O_CLOEXEC);
    if (fd >= 0)
        close((int)fd);
    return result(fd);
}

/* io-uring: io_uring_setup; `errno=E survived` shows that the process lives on. */
static int p_io_uring(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    struct io_uring_params params;
    memset(&params, 0, sizeof(params));
    long fd = syscall(SYS_io_uring_setup, 4, &params);
    if (fd >= 0) {
        close((int)fd);
        printf("ok\n");
    } else {
        printf("errno=%s survived\n", errname(errno));
    }
    return 0;
}

/* modify-ldt: write an (empty) LDT entry. */
static int p_modify_ldt(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    unsigned char desc[16];
    memset(desc, 0, sizeof(desc));
    return result(syscall(SYS_modify_ldt, 0 /* read */, desc, sizeof(desc)));
}

/* open-by-handle: open_by_handle_at with a made-up handle (the "shocker" escape). */
static int p_open_by_handle(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    struct {
        unsigned int handle_bytes;
        int handle_type;
        unsigned char f_handle[8];
    } h = {.handle_bytes = 8, .handle_type = 1, .f_handle = {2, 0, 0, 0, 0, 0, 0, 0}};
    long fd = syscall(SYS_open_by_handle_at, AT_FDCWD, &h, O_RDONLY | O_CLOEXEC);
    if (fd >= 0)
        close((int)fd);
    return result(fd);
}

/* kexec-load: flags with an undefined bit, more segments than allowed and no segment
 * array: the kernel rejects it (EINVAL) before anything is read or loaded. */
static int p_kexec_load(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return result(syscall(SYS_kexec_load, 0UL, 17UL, NULL, 0x80UL));
}

/* kexec-file-load: invalid fds and an undefined flag bit (never KEXEC_FILE_UNLOAD). */
static int p_kexec_file_load(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return result(syscall(SYS_kexec_file_load, -1, -1, 0UL, "", 1UL << 20));
}

/* init-module: an empty image (ENOEXEC where modules exist). */
static int p_init_module(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return result(syscall(SYS_init_module, NULL, 0UL, ""));
}

/* finit-module: an invalid fd (EBADF where modules exist). */
static int p_finit_module(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return result(syscall(SYS_finit_module, -1, "", 0));
}

/* delete-module: a module name that does not exist (ENOENT where modules exist). */
static int p_delete_module(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return result(syscall(SYS_delete_module, "codeq_probe_no_such_module", O_NONBLOCK));
}

/* clock-settime: set CLOCK_MONOTONIC, which cannot be set (EINVAL on the host). */
static int p_clock_settime(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return result(syscall(SYS_clock_settime, CLOCK_MONOTONIC, &ts));
}

/* settimeofday: settimeofday(NULL, NULL), a no-op that still needs CAP_SYS_TIME. */
static int p_settimeofday(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return result(syscall(SYS_settimeofday, NULL, NULL));
}

/* adjtimex: ADJ_TICK with tick 0, which the kernel rejects (EINVAL) as out of range. */
static int p_adjtimex(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    struct timex tx;
    memset(&tx, 0, sizeof(tx));
    tx.modes = ADJ_TICK;
    tx.tick = 0;
    return result(syscall(SYS_adjtimex, &tx));
}

/* reboot: wrong magic numbers (EINVAL on the host, after the capability check). */
static int p_reboot(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return result(syscall(SYS_reboot, 0x0badc0de, 0x12345678, 0, NULL));
}

/* swapon PATH / swapoff PATH: a path that does not exist. */
static int p_swapon(int argc, char **argv)
{
    if (argc < 1)
        usage_die("swapon PATH");
    host_needs_missing("swapon", argv[0]);
    return result(syscall(SYS_swapon, argv[0], 0));
}

static int p_swapoff(int argc, char **argv)
{
    if (argc < 1)
        usage_die("swapoff PATH");
    host_needs_missing("swapoff", argv[0]);
    return result(syscall(SYS_swapoff, argv[0]));
}

/* sethostname: set the (sandbox's own) host name to the same value. */
static int p_sethostname(int argc, char **argv)
{
    sandbox_only("sethostname");
    (void)argc;
    (void)argv;
    char name[256];
    if (gethostname(name, sizeof(name)) < 0)
        die("gethostname");
    return result(sethostname(name, strlen(name)));
}

/* setuid0: become uid 0. */
static int p_setuid0(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return result(setuid(0));
}

/* int80: the i386 getpid (eax=20) through int $0x80: ret=<its answer> pid=<getpid()>.
 * Under codeq's seccomp filter this ABI kills the process (SIGSYS) instead. */
static int p_int80(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    long ret = 20;
    __asm__ volatile("int $0x80" : "+a"(ret) : : "memory", "r8", "r9", "r10", "r11");
    printf("ret=%ld pid=%ld\n", ret, (long)getpid());
    return 0;
}

/* x32: getpid through the x32 ABI (syscall number | __X32_SYSCALL_BIT):
 * ret=<its answer> pid=<getpid()>, or errno=E where the kernel has no x32 ABI. */
static int p_x32(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    long ret = syscall(0x40000000L | SYS_getpid);
    if (ret < 0)
        return result(-1);
    printf("ret=%ld pid=%ld\n", ret, (long)getpid());
    return 0;
}

/* ------------------------------------------------------------------------------ */
/* Terminal                                                                       */

/* isatty: tty=<isatty(0)>,<isatty(1)>,<isatty(2)> */
static int p_isatty(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    printf("tty=%d,%d,%d\n", isatty(0), isatty(1), isatty(2));
    return 0;
}

/* tiocsti [high]: push "x" into fd 0's input queue; `high` sets bit 32 of the request,
 * which the kernel ignores (it truncates the request to 32 bits). */
static int p_tiocsti(int argc, char **argv)
{
    unsigned long req = TIOCSTI;
    if (argc >= 1 && strcmp(argv[0], "high") == 0)
        req |= 1UL << 32;
    char c = 'x';
    return result(syscall(SYS_ioctl, 0, req, &c));
}

/* open-tty: open the controlling terminal. */
static int p_open_tty(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    int fd = open("/dev/tty", O_RDWR | O_CLOEXEC | O_NOCTTY);
    if (fd >= 0)
        close(fd);
    return result(fd);
}

/* ------------------------------------------------------------------------------ */
/* Network                                                                        */

/* socket KIND: create a socket of a named kind (closed at once). */
static int p_socket(int argc, char **argv)
{
    if (argc < 1)
        usage_die("socket KIND");
    static const struct {
        const char *name;
        int family, type, protocol;
    } kinds[] = {
        {"inet-stream", AF_INET, SOCK_STREAM, 0},
        {"inet-dgram", AF_INET, SOCK_DGRAM, 0},
        {"inet6-stream", AF_INET6, SOCK_STREAM, 0},
        {"unix-stream", AF_UNIX, SOCK_STREAM, 0},
        {"inet-raw", AF_INET, SOCK_RAW, IPPROTO_ICMP},
        {"inet6-raw", AF_INET6, SOCK_RAW, IPPROTO_ICMPV6},
        {"inet-raw-cloexec", AF_INET, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, IPPROTO_RAW},
        {"packet", AF_PACKET, SOCK_RAW, 0 /* no protocol: receives nothing */},
        {"packet-dgram", AF_PACKET, SOCK_DGRAM, 0},
        {"vsock", AF_VSOCK, SOCK_STREAM, 0},
        {"alg", AF_ALG, SOCK_SEQPACKET, 0},
        {"netlink-route", AF_NETLINK, SOCK_RAW, NETLINK_ROUTE},
        {"netlink-audit", AF_NETLINK, SOCK_RAW, NETLINK_AUDIT},
        {"netlink-uevent", AF_NETLINK, SOCK_DGRAM, NETLINK_KOBJECT_UEVENT},
        {"netlink-sock-diag", AF_NETLINK, SOCK_RAW, NETLINK_SOCK_DIAG},
    };
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        if (strcmp(kinds[i].name, argv[0]) != 0)
            continue;
        int fd = socket(kinds[i].family, kinds[i].type, kinds[i].protocol);
        if (fd >= 0)
            close(fd);
        return result(fd);
    }
    usage_die("unknown socket kind");
}

/* connect4 ADDR PORT: a TCP connection to an IPv4 address (non-blocking, 5 s). */
static int p_connect4(int argc, char **argv)
{
    if (argc < 2)
        usage_die("connect4 ADDR PORT");
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1]))};
    if (inet_pton(AF_INET, argv[0], &sa.sin_addr) != 1)
        usage_die("bad address");
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return result(-1);
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    int rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
    int e = errno;
    close(fd);
    return result_errno(rc == 0 ? 0 : e);
}

/* connect-abstract NAME: a unix stream connection to the abstract address "\0NAME". */
static int p_connect_abstract(int argc, char **argv)
{
    if (argc < 1)
        usage_die("connect-abstract NAME");
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t len = strlen(argv[0]);
    if (len + 1 > sizeof(sa.sun_path))
        usage_die("name too long");
    memcpy(sa.sun_path + 1, argv[0], len);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return result(-1);
    int rc = connect(fd, (struct sockaddr *)&sa,
                     (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + len));
    int e = errno;
    close(fd);
    return result_errno(rc == 0 ? 0 : e);
}

/* dns NAME: getaddrinfo; ok or gai=EAI_... */
static int p_dns(int argc, char **argv)
{
    if (argc < 1)
        usage_die("dns NAME");
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(argv[0], "443", &hints, &res);
    if (rc == 0) {
        freeaddrinfo(res);
        printf("ok\n");
        return 0;
    }
    static const struct {
        int code;
        const char *name;
    } names[] = {
        {EAI_AGAIN, "EAI_AGAIN"},   {EAI_FAIL, "EAI_FAIL"},     {EAI_NONAME, "EAI_NONAME"},
        {EAI_NODATA, "EAI_NODATA"}, {EAI_SYSTEM, "EAI_SYSTEM"}, {EAI_SERVICE, "EAI_SERVICE"},
        {EAI_FAMILY, "EAI_FAMILY"}, {EAI_MEMORY, "EAI_MEMORY"},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (names[i].code == rc) {
            printf("gai=%s\n", names[i].name);
            return 0;
        }
    printf("gai=%d\n", rc);
    return 0;
}

/* ifaces: the sorted, distinct names of the network interfaces (getifaddrs). */
static int p_ifaces(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    struct ifaddrs *ifa;
    if (getifaddrs(&ifa) < 0)
        return result(-1);
    char *names[256];
    size_t n = 0;
    for (struct ifaddrs *i = ifa; i != NULL && n < 256; i = i->ifa_next) {
        bool seen = false;
        for (size_t j = 0; j < n && !seen; j++)
            seen = strcmp(names[j], i->ifa_name) == 0;
        if (!seen)
            names[n++] = strdup(i->ifa_name);
    }
    freeifaddrs(ifa);
    qsort(names, n, sizeof(char *), cmp_str);
    printf("ifaces=");
    for (size_t i = 0; i < n; i++)
        printf("%s%s", i ? "," : "", names[i]);
    printf("\n");
    return 0;
}

/* ------------------------------------------------------------------------------ */
/* Resource exhaustion                                                            */

/* forkbomb: forks children that wait until it stops, until fork fails; reports
 * forks=N errno=E. The children are killed before it exits. */
static int p_forkbomb(int argc, char **argv)
{
    sandbox_only("forkbomb");
    (void)argc;
    (void)argv;
    size_t cap = 1 << 16;
    pid_t *kids = malloc(cap * sizeof(pid_t));
    size_t n = 0;
    int e = 0;
    while (n < cap) {
        pid_t pid = fork();
        if (pid == 0) {
            for (;;)
                pause();
        }
        if (pid < 0) {
            e = errno;
            break;
        }
        kids[n++] = pid;
    }
    for (size_t i = 0; i < n; i++)
        kill(kids[i], SIGKILL);
    for (size_t i = 0; i < n; i++)
        waitpid(kids[i], NULL, 0);
    printf("forks=%zu errno=%s\n", n, e ? errname(e) : "none");
    return 0;
}

/* membomb: touches 1M chunks of fresh memory forever; the memory limit must end it.
 * Prints `survived` only if allocation itself ever fails. */
static int p_membomb(int argc, char **argv)
{
    sandbox_only("membomb");
    (void)argc;
    (void)argv;
    for (;;) {
        char *p = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) {
            printf("survived errno=%s\n", errname(errno));
            return 0;
        }
        memset(p, 0xa5, 1 << 20);
    }
}

static char chunk[65536];

/* Writes up to `limit` bytes (0: no limit) to fd in 64K chunks; returns the bytes
 * written and sets *e to the errno that stopped it (0 if the limit was reached). */
static uint64_t write_until(int fd, uint64_t limit, int *e)
{
    uint64_t total = 0;
    *e = 0;
    memset(chunk, 'z', sizeof(chunk));
    while (limit == 0 || total < limit) {
        size_t want = sizeof(chunk);
        if (limit != 0 && limit - total < want)
            want = (size_t)(limit - total);
        ssize_t n = write(fd, chunk, want);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            *e = errno;
            break;
        }
        total += (uint64_t)n;
    }
    return total;
}

/* fill-files DIR SIZE: writes files of SIZE bytes into DIR until an error; reports
 * errno=E bytes=<written> files=<files created>. */
static int p_fill_files(int argc, char **argv)
{
    sandbox_only("fill-files");
    if (argc < 2)
        usage_die("fill-files DIR SIZE");
    uint64_t size = strtoull(argv[1], NULL, 10);
    uint64_t bytes = 0;
    unsigned files = 0;
    int e = 0;
    for (;;) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/fill-%06u", argv[0], files);
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0) {
            e = errno;
            break;
        }
        files++;
        bytes += write_until(fd, size, &e);
        close(fd);
        if (e != 0)
            break;
    }
    printf("errno=%s bytes=%llu files=%u\n", errname(e), (unsigned long long)bytes, files);
    return 0;
}

/* fill-one PATH [ignore-xfsz]: writes one file until an error; reports errno=E
 * bytes=N. Without ignore-xfsz, SIGXFSZ keeps its default action (kill). */
static int p_fill_one(int argc, char **argv)
{
    sandbox_only("fill-one");
    if (argc < 1)
        usage_die("fill-one PATH [ignore-xfsz]");
    if (argc >= 2 && strcmp(argv[1], "ignore-xfsz") == 0)
        signal(SIGXFSZ, SIG_IGN);
    int fd = open(argv[0], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return result(-1);
    int e;
    uint64_t bytes = write_until(fd, 0, &e);
    close(fd);
    printf("errno=%s bytes=%llu\n", errname(e), (unsigned long long)bytes);
    return 0;
}

/* fill-inodes DIR: creates empty files until an error; errno=E files=N. */
static int p_fill_inodes(int argc, char **argv)
{
    sandbox_only("fill-inodes");
    if (argc < 1)
        usage_die("fill-inodes DIR");
    unsigned files = 0;
    int e = 0;
    for (;;) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/i%07u", argv[0], files);
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0) {
            e = errno;
            break;
        }
        close(fd);
        files++;
    }
    printf("errno=%s files=%u\n", errname(e), files);
    return 0;
}

/* flood BYTES: writes BYTES bytes to stdout (no result line: the output is the data). */
static int p_flood(int argc, char **argv)
{
    if (argc < 1)
        usage_die("flood BYTES");
    int e;
    uint64_t want = strtoull(argv[0], NULL, 10);
    uint64_t n = write_until(STDOUT_FILENO, want, &e);
    if (n != want) {
        fprintf(stderr, "cq-probe: flood stopped after %llu bytes: %s\n", (unsigned long long)n,
                errname(e));
        return 96;
    }
    return 0;
}

static void __attribute__((noreturn)) burn_forever(void)
{
    volatile unsigned long x = 0;
    for (;;)
        x++;
}

/* burn: a busy loop that never ends (the timeout must end it). */
static int p_burn(int argc, char **argv)
{
    sandbox_only("burn");
    (void)argc;
    (void)argv;
    printf("burning\n");
    fflush(stdout);
    burn_forever();
}

/* burn-daemon: forks two burning children, and a daemon (fork, setsid, fork again,
 * the middle process exits) that burns too, with stdio closed; then burns itself. */
static int p_burn_daemon(int argc, char **argv)
{
    sandbox_only("burn-daemon");
    (void)argc;
    (void)argv;
    for (int i = 0; i < 2; i++) {
        pid_t pid = fork();
        if (pid < 0)
            die("fork");
        if (pid == 0)
            burn_forever();
    }
    pid_t mid = fork();
    if (mid < 0)
        die("fork");
    if (mid == 0) {
        setsid();
        pid_t d = fork();
        if (d < 0)
            _exit(1);
        if (d == 0) {
            int null = open("/dev/null", O_RDWR);
            dup2(null, 0);
            dup2(null, 1);
            dup2(null, 2);
            signal(SIGHUP, SIG_IGN);
            burn_forever();
        }
        _exit(0);
    }
    waitpid(mid, NULL, 0);
    printf("burning\n");
    fflush(stdout);
    burn_forever();
}

/* ------------------------------------------------------------------------------ */

struct probe {
    const char *name;
    int (*fn)(int argc, char **argv);
};

static const struct probe probes[] = {
    {"read", p_read},
    {"list", p_list},
    {"size", p_size},
    {"create", p_create},
    {"openw", p_openw},
    {"append", p_append},
    {"pids", p_pids},
    {"status", p_status},
    {"fds", p_fds},
    {"env", p_env},
    {"getenv", p_getenv},
    {"kill", p_kill},
    {"mount-tmpfs", p_mount_tmpfs},
    {"umount", p_umount},
    {"pivot-root", p_pivot_root},
    {"chroot", p_chroot},
    {"open-tree", p_open_tree},
    {"fsopen", p_fsopen},
    {"unshare", p_unshare},
    {"clone-ns", p_clone_ns},
    {"setns", p_setns},
    {"clone3", p_clone3},
    {"ptrace-traceme", p_ptrace_traceme},
    {"ptrace-attach", p_ptrace_attach},
    {"process-vm-readv", p_process_vm_readv},
    {"keyctl", p_keyctl},
    {"add-key", p_add_key},
    {"request-key", p_request_key},
    {"bpf", p_bpf},
    {"perf", p_perf},
    {"userfaultfd", p_userfaultfd},
    {"io-uring", p_io_uring},
    {"modify-ldt", p_modify_ldt},
    {"open-by-handle", p_open_by_handle},
    {"kexec-load", p_kexec_load},
    {"kexec-file-load", p_kexec_file_load},
    {"init-module", p_init_module},
    {"finit-module", p_finit_module},
    {"delete-module", p_delete_module},
    {"clock-settime", p_clock_settime},
    {"settimeofday", p_settimeofday},
    {"adjtimex", p_adjtimex},
    {"reboot", p_reboot},
    {"swapon", p_swapon},
    {"swapoff", p_swapoff},
    {"sethostname", p_sethostname},
    {"setuid0", p_setuid0},
    {"int80", p_int80},
    {"x32", p_x32},
    {"isatty", p_isatty},
    {"tiocsti", p_tiocsti},
    {"open-tty", p_open_tty},
    {"socket", p_socket},
    {"connect4", p_connect4},
    {"connect-abstract", p_connect_abstract},
    {"dns", p_dns},
    {"ifaces", p_ifaces},
    {"forkbomb", p_forkbomb},
    {"membomb", p_membomb},
    {"fill-files", p_fill_files},
    {"fill-one", p_fill_one},
    {"fill-inodes", p_fill_inodes},
    {"flood", p_flood},
    {"burn", p_burn},
    {"burn-daemon", p_burn_daemon},
};

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: cq-probe NAME [ARGS]\nprobes:");
        for (size_t i = 0; i < sizeof(probes) / sizeof(probes[0]); i++)
            fprintf(stderr, " %s", probes[i].name);
        fprintf(stderr, "\n");
        return 98;
    }
    /* Line-buffered even into a pipe: one result line, written before anything that
     * could kill the probe afterwards. */
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (size_t i = 0; i < sizeof(probes) / sizeof(probes[0]); i++)
        if (strcmp(probes[i].name, argv[1]) == 0)
            return probes[i].fn(argc - 2, argv + 2);
    fprintf(stderr, "cq-probe: unknown probe '%s'\n", argv[1]);
    return 98;
}
