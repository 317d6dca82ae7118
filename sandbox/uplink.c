/* sandbox/uplink.c - codeq's own egress namespace, joined to the host by pasta.
 *
 * Three processes, made at the first sandbox with network that names no egress
 * namespace, and living as long as the codeq process:
 *
 *   guard   a child of codeq: it makes the other two, then waits for codeq to end (EOF
 *           on a pipe whose write end only codeq holds: this works whatever the thread
 *           that forked it does later, unlike PR_SET_PDEATHSIG, and after SIGKILL of
 *           codeq too) and then kills them;
 *   keeper  the guard's child: a new user namespace that maps nobody, with a new
 *           network namespace, held open by its existence: /proc/<keeper>/ns/net is
 *           the egress namespace;
 *   pasta   the guard's child, in the host's network namespace: it joins the keeper's
 *           namespaces, puts a tap link there with the host's addresses and routes
 *           (--config-net), and carries its packets as the host's own sockets.
 *
 * Why pasta runs as root (--runas 0:0) and inside a user namespace: /dev/net/tun is
 * root's alone on hardened hosts (mode 600, as here), so an unprivileged pasta could
 * not open it; and once pasta has joined the keeper's user namespace, its capabilities
 * are over that namespace only, none over the host. pasta then drops them itself,
 * confines itself with seccomp and leaves the file system behind (its own isolation).
 * It gets no port forwards (-t/-u/-T/-U none: nothing can connect in) and --no-map-gw
 * (the gateway address is not turned into the host's loopback); the egress filter
 * refuses the host's addresses and every non-public range before pasta sees a packet.
 *
 * Between fork and exec, and in the guard and keeper (which never exec), only
 * async-signal-safe calls are made: codeq is multi-threaded.
 */
#define _GNU_SOURCE
#include "sandbox/uplink.h"
#include "sandbox/rootless.h"
#include "common/cleanup.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define READY_TIMEOUT_MS 5000

/* What the guard tells codeq once it has made the keeper and started pasta. */
struct guard_report {
    int stage; /* 0: all started; else the step that failed (enum below) */
    int error; /* errno of that step */
    pid_t keeper, pasta;
};

enum { STAGE_OK, STAGE_PIPE, STAGE_FORK, STAGE_UNSHARE, STAGE_KEEPER };

static const char *const stage_names[] = {
    [STAGE_PIPE] = "pipe",
    [STAGE_FORK] = "fork",
    [STAGE_UNSHARE] = "make a user and network namespace",
    [STAGE_KEEPER] = "start the namespace's keeper",
};

static pthread_mutex_t uplink_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
    bool up;
    pid_t guard, keeper, pasta;
    int life_fd; /* the write end of the guard's pipe: codeq's end closes it */
} uplink = {.life_fd = -1};

/* --- the guard and its children (after fork: async-signal-safe only) ------------------ */

#define LIFE_FD   3
#define REPORT_FD 4

static void put_decimal(char *buf, long v)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0);
    for (int i = 0; i < n; i++)
        buf[i] = tmp[n - 1 - i];
    buf[n] = '\0';
}

static void report(int stage, int error, pid_t keeper, pid_t pasta)
{
    struct guard_report r = {.stage = stage, .error = error, .keeper = keeper, .pasta = pasta};
    ssize_t ignored = write(REPORT_FD, &r, sizeof(r));
    (void)ignored;
}

static _Noreturn void run_keeper(int ready_fd)
{
    pid_t guard = getppid();
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* the guard is single-threaded */
    if (getppid() != guard)
        _exit(1);
    int error = 0;
    if (unshare(CLONE_NEWUSER | CLONE_NEWNET) < 0)
        error = errno;
    ssize_t ignored = write(ready_fd, &error, sizeof(error));
    (void)ignored;
    close(ready_fd);
    for (;;)
        pause();
}

static _Noreturn void run_pasta(char *const argv[])
{
    pid_t guard = getppid();
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != guard)
        _exit(1);
    /* Ignored signals stay ignored across exec, and codeq ignores SIGPIPE; pasta of
     * Debian 12 takes an ignored SIGPIPE for a failure to set it up, and exits. */
    struct sigaction dfl = {.sa_handler = SIG_DFL};
    for (int sig = 1; sig < NSIG; sig++)
        sigaction(sig, &dfl, NULL);
    static char *const envp[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", NULL};
    execve(CQ_UPLINK_PASTA, argv, envp);
    _exit(127);
}

static _Noreturn void run_guard(int life_fd, int report_fd, char **pasta_argv, char *pid_slot)
{
    /* Keep only the two pipes (as 3 and 4) and /dev/null as 0-2: the guard lives as long
     * as codeq and must not hold copies of codeq's sockets or sandboxes' fds. */
    int life = fcntl(life_fd, F_DUPFD, 100), rep = fcntl(report_fd, F_DUPFD, 100);
    int devnull = open("/dev/null", O_RDWR);
    if (life < 0 || rep < 0 || devnull < 0)
        _exit(1);
    dup2(devnull, 0);
    dup2(devnull, 1);
    dup2(devnull, 2);
    dup2(life, LIFE_FD);
    dup2(rep, REPORT_FD);
    syscall(SYS_close_range, REPORT_FD + 1, ~0U, 0);
    sigset_t all;
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);

    int ready[2];
    if (pipe2(ready, O_CLOEXEC) < 0) {
        report(STAGE_PIPE, errno, 0, 0);
        _exit(1);
    }
    pid_t keeper = fork();
    if (keeper < 0) {
        report(STAGE_FORK, errno, 0, 0);
        _exit(1);
    }
    if (keeper == 0) {
        close(ready[0]);
        run_keeper(ready[1]);
    }
    close(ready[1]);
    int error = EPIPE;
    if (read(ready[0], &error, sizeof(error)) != sizeof(error) || error != 0) {
        report(error == EPIPE ? STAGE_KEEPER : STAGE_UNSHARE, error, keeper, 0);
        kill(keeper, SIGKILL);
        _exit(1);
    }
    close(ready[0]);
    put_decimal(pid_slot, keeper);
    pid_t pasta = fork();
    if (pasta < 0) {
        report(STAGE_FORK, errno, keeper, 0);
        kill(keeper, SIGKILL);
        _exit(1);
    }
    if (pasta == 0) {
        close(LIFE_FD);
        close(REPORT_FD);
        run_pasta(pasta_argv);
    }
    report(STAGE_OK, 0, keeper, pasta);
    close(REPORT_FD);
    /* Until codeq ends (EOF), or pasta does (then the uplink ends with it, and codeq's
     * next sandbox makes a new one). */
    for (;;) {
        struct pollfd p = {.fd = LIFE_FD, .events = POLLIN};
        int n = poll(&p, 1, 1000);
        if (n > 0)
            break;
        if (waitpid(pasta, NULL, WNOHANG) == pasta) {
            pasta = -1;
            break;
        }
    }
    if (pasta > 0)
        kill(pasta, SIGKILL);
    kill(keeper, SIGKILL);
    while (wait(NULL) > 0 || errno == EINTR)
        ;
    _exit(0);
}

/* --- codeq's side ----------------------------------------------------------------------- */

static void uplink_reset(void)
{
    if (uplink.life_fd >= 0)
        close(uplink.life_fd); /* the guard ends its children and itself */
    if (uplink.guard > 0)
        waitpid(uplink.guard, NULL, 0);
    uplink.life_fd = -1;
    uplink.guard = uplink.keeper = uplink.pasta = 0;
    uplink.up = false;
}

/* Which families have a default route in the namespace of pid: bit 0 IPv4, bit 1 IPv6.
 * /proc/PID/net shows the namespace of PID, so no thread has to enter it. */
static unsigned default_routes(pid_t pid)
{
    unsigned found = 0;
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/net/route", pid);
    cq_autofclose FILE *f4 = fopen(path, "re");
    while (f4 != NULL && fgets(line, sizeof(line), f4) != NULL) {
        char ifname[32], dest[16], gw[16];
        if (sscanf(line, "%31s %15s %15s", ifname, dest, gw) == 3 && strcmp(dest, "00000000") == 0)
            found |= 1;
    }
    snprintf(path, sizeof(path), "/proc/%d/net/ipv6_route", pid);
    cq_autofclose FILE *f6 = fopen(path, "re");
    while (f6 != NULL && fgets(line, sizeof(line), f6) != NULL) {
        char dest[40], plen[8], dev[32];
        /* The kernel's own catch-all is an unreachable route on lo, not a way out. */
        if (sscanf(line, "%39s %7s %*s %*s %*s %*s %*s %*s %*s %31s", dest, plen, dev) == 3 &&
            strcmp(dest, "00000000000000000000000000000000") == 0 && strcmp(plen, "00") == 0 &&
            strcmp(dev, "lo") != 0)
            found |= 2;
    }
    return found;
}

static bool process_running(pid_t pid)
{
    char path[64], state = '?';
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    cq_autofclose FILE *f = fopen(path, "re");
    if (f == NULL || fscanf(f, "%*d (%*[^)]) %c", &state) != 1)
        return false;
    return state != 'Z' && state != 'X';
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* pasta opens /dev/net/tun as the user it runs as: root of codeq's user namespace, which
 * for a normal user's codeq (rootless.c) is that user, without any power over the host's
 * device node. Most distributions make it 0666; where it is root's alone, say so rather
 * than let pasta fail out of sight. */
static int tun_refused(struct cq_error *err)
{
    if (cq_sandbox_ids_mode() == CQ_SANDBOX_IDS_ROOT || access("/dev/net/tun", R_OK | W_OK) == 0)
        return 0;
    int code = errno;
    struct stat st;
    char mode[32] = "missing";
    if (stat("/dev/net/tun", &st) == 0)
        snprintf(mode, sizeof(mode), "mode %o", (unsigned)(st.st_mode & 07777));
    return cq_error_set(err, code,
                        "network without an egress namespace needs pasta, and as a normal user "
                        "pasta needs /dev/net/tun to be open to you (it is %s here; most "
                        "distributions make it 0666): ask for network NONE, or run codeq as root",
                        mode);
}

static int uplink_start(struct cq_error *err)
{
    if (access(CQ_UPLINK_PASTA, X_OK) < 0)
        return cq_error_set(err, CQ_EINVALID,
                            "network without an egress namespace needs pasta (%s, Debian "
                            "package passt): install it, or name a namespace with "
                            "--egress-netns",
                            CQ_UPLINK_PASTA);
    if (tun_refused(err) < 0)
        return -1;
    /* Built before fork: the guard writes only the keeper's pid into its copy. */
    char pid_slot[24] = "0";
    char *argv[] = {"pasta",       "--quiet", "--foreground", "--runas", "0:0",  "--config-net",
                    "--no-map-gw", "-t",      "none",         "-u",      "none", "-T",
                    "none",        "-U",      "none",         pid_slot,  NULL};
    int life[2], rep[2];
    if (pipe2(life, O_CLOEXEC) < 0)
        return cq_error_sys(err, errno, "pipe");
    if (pipe2(rep, O_CLOEXEC) < 0) {
        close(life[0]);
        close(life[1]);
        return cq_error_sys(err, errno, "pipe");
    }
    pid_t guard = fork();
    if (guard == 0)
        run_guard(life[0], rep[1], argv, pid_slot);
    close(life[0]);
    close(rep[1]);
    cq_autoclose int rep_read = rep[0];
    if (guard < 0) {
        close(life[1]);
        return cq_error_sys(err, errno, "fork the uplink's guard");
    }
    uplink.guard = guard;
    uplink.life_fd = life[1];

    struct guard_report r = {.stage = STAGE_KEEPER, .error = EPIPE};
    struct pollfd p = {.fd = rep_read, .events = POLLIN};
    if (poll(&p, 1, READY_TIMEOUT_MS) != 1 || read(rep_read, &r, sizeof(r)) != sizeof(r)) {
        uplink_reset();
        return cq_error_set(err, CQ_EINTERNAL, "the uplink's guard did not start");
    }
    if (r.stage != STAGE_OK) {
        uplink_reset();
        return cq_error_sys(err, r.error, "codeq's egress namespace: %s", stage_names[r.stage]);
    }
    uplink.keeper = r.keeper;
    uplink.pasta = r.pasta;
    /* Ready once pasta has copied every default route the host has: a sandbox that
     * started between the IPv6 and the IPv4 one would find its resolver cut off. */
    unsigned want = default_routes(getpid());
    if (want == 0) {
        uplink_reset();
        return cq_error_set(err, CQ_EINVALID,
                            "the host has no default route for pasta to lend sandboxes; name an "
                            "egress namespace with --egress-netns");
    }
    for (int64_t deadline = now_ms() + READY_TIMEOUT_MS;
         (default_routes(r.keeper) & want) != want;) {
        if (!process_running(r.pasta)) {
            uplink_reset();
            return cq_error_set(err, CQ_EINTERNAL,
                                "pasta ended while joining codeq's egress namespace to the "
                                "host (does the host have a default route?)");
        }
        if (now_ms() > deadline) {
            uplink_reset();
            return cq_error_set(err, CQ_ETIMEOUT,
                                "pasta did not configure codeq's egress namespace within %d ms",
                                READY_TIMEOUT_MS);
        }
        struct timespec nap = {.tv_nsec = 2 * 1000 * 1000};
        nanosleep(&nap, NULL);
    }
    uplink.up = true;
    return 0;
}

int cq_uplink_netns(char *path, size_t len, struct cq_error *err)
{
    pthread_mutex_lock(&uplink_lock);
    /* An uplink whose pasta (or guard) ended is replaced: its namespace is gone. */
    if (uplink.up && (!process_running(uplink.pasta) || !process_running(uplink.keeper)))
        uplink_reset();
    int rc = uplink.up ? 0 : uplink_start(err);
    if (rc == 0)
        snprintf(path, len, "/proc/%d/ns/net", uplink.keeper);
    pthread_mutex_unlock(&uplink_lock);
    return rc;
}
