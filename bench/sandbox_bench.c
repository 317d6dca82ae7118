/* bench/sandbox_bench.c - sandbox start-up costs, side by side in one run.
 *
 *   one-shot:   `codeq sandbox -- /bin/true` against `bwrap --unshare-all` with
 *               equivalent binds, and against a bare fork+exec of /bin/true;
 *               the three are interleaved round by round, so that a noisy
 *               neighbour or a frequency change hits all of them alike;
 *               `codeq sandbox --network public` runs in the same rounds
 *               (issue 13: at most 3 ms over `--network none`); each is timed
 *               from spawn to the reaped exit of the codeq process, as a caller
 *               sees it (not the child a PUBLIC run leaves for a moment to release
 *               an nftables socket, sandbox/egress.c: the caller does not wait for it);
 *   phases:     the same two modes through the library, in the same rounds, with
 *               the sandbox's creation, its first process (spawn, run /bin/true,
 *               wait) and its destruction timed apart: what a one-shot run pays
 *               before the command runs, and what after; and in PUBLIC, one read
 *               of the byte counters (cq_sandbox_net_stats);
 *   in-sandbox: one more process in an existing sandbox (spawn, run /bin/true,
 *               wait for its report) through the library, against a bare
 *               fork+exec+wait of /bin/true from the same process.
 *
 * usage: codeq-bench-sandbox [--runs N] [--codeq PATH] [--bwrap PATH] [--no-network]
 * Prints a table of median, mean, p95 and min in milliseconds. The network series
 * need root (an egress namespace of the bench's own, see make_egress_netns);
 * without it, or with --no-network, they are skipped with a note.
 */
#define _GNU_SOURCE
#include "common/clock.h"
#include "common/units.h"
#include "sandbox/sandbox.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

struct series {
    const char *name;
    double *ms;
    int n;
};

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void print_series(struct series *s)
{
    if (s->n == 0) {
        printf("%-44s %8s\n", s->name, "n/a");
        return;
    }
    qsort(s->ms, (size_t)s->n, sizeof(double), cmp_double);
    double sum = 0;
    for (int i = 0; i < s->n; i++)
        sum += s->ms[i];
    printf("%-44s %8.3f %8.3f %8.3f %8.3f %6d\n", s->name, s->ms[s->n / 2], sum / s->n,
           s->ms[(int)(s->n * 0.95)], s->ms[0], s->n);
}

/* Wall time of running argv to completion, in ms; -1 if it failed. */
static double run_once(char *const argv[])
{
    uint64_t t0 = cq_now_us();
    pid_t pid;
    if (posix_spawn(&pid, argv[0], NULL, NULL, argv, environ) != 0)
        return -1;
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    uint64_t t1 = cq_now_us();
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return -1;
    return (double)(t1 - t0) / 1000.0;
}

static const char *const etc_entries[] = {
    "alternatives", "ld.so.cache",   "ld.so.conf", "ld.so.conf.d",    "localtime",
    "timezone",     "nsswitch.conf", "host.conf",  "gai.conf",        "protocols",
    "services",     "mime.types",    "ssl",        "ca-certificates", "fonts",
    "matplotlibrc", "python3",       "python3.11", "debian_version",  "os-release",
    "bash.bashrc",  "inputrc",       "magic",      "magic.mime",
};

/* bwrap with what codeq's sandbox has: all namespaces, the same read-only runtime
 * and /etc entries, /proc, a minimal /dev, tmpfs /tmp and /workspace, uid 1000, a
 * new session, a cleared environment. (No cgroup limits or seccomp: bwrap has
 * neither by default.) */
static char **bwrap_argv(const char *bwrap)
{
    static char *argv[256];
    static char paths[64][PATH_MAX];
    int n = 0, p = 0;
    const char *fixed[] = {bwrap,        "--unshare-all", "--new-session", "--die-with-parent",
                           "--clearenv", "--uid",         "1000",          "--gid",
                           "1000",       "--hostname",    "codeq",         "--ro-bind",
                           "/usr",       "/usr",          "--symlink",     "usr/bin",
                           "/bin",       "--symlink",     "usr/sbin",      "/sbin",
                           "--symlink",  "usr/lib",       "/lib",          "--symlink",
                           "usr/lib64",  "/lib64",        "--proc",        "/proc",
                           "--dev",      "/dev",          "--tmpfs",       "/tmp",
                           "--tmpfs",    "/workspace",    "--chdir",       "/workspace"};
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
        argv[n++] = (char *)fixed[i];
    for (size_t i = 0; i < sizeof(etc_entries) / sizeof(etc_entries[0]); i++) {
        snprintf(paths[p], PATH_MAX, "/etc/%s", etc_entries[i]);
        argv[n++] = "--ro-bind-try";
        argv[n++] = paths[p];
        argv[n++] = paths[p];
        p++;
    }
    argv[n++] = "/bin/true";
    argv[n] = NULL;
    return argv;
}

static double spawn_in_sandbox(struct cq_sandbox *sb)
{
    static const char *const argv[] = {"/bin/true", NULL};
    struct cq_spawn req;
    cq_spawn_init(&req, argv);
    struct cq_error err;
    struct cq_process *p;
    uint64_t t0 = cq_now_us();
    if (cq_sandbox_spawn(sb, &req, &p, &err) < 0) {
        fprintf(stderr, "spawn: %s\n", err.msg);
        return -1;
    }
    struct cq_process_report r;
    int rc = cq_process_wait(p, NULL, &r, &err);
    uint64_t t1 = cq_now_us();
    cq_process_free(p);
    return rc == 0 && r.exit_code == 0 ? (double)(t1 - t0) / 1000.0 : -1;
}

static void add(struct series *s, double ms)
{
    if (ms >= 0)
        s->ms[s->n++] = ms;
}

/* PUBLIC needs an egress namespace. The bench makes its own, unnamed: a thread
 * unshares a network namespace and opens it, and codeq is given that fd's path,
 * /proc/<pid>/fd/<n>. Nothing is mounted under /run/netns, so nothing can be left
 * behind: the namespace, with the links and nftables tables codeq adds to it, goes
 * when the bench exits, however it exits (SIGKILL and Ctrl-C included), and the
 * processes a killed run leaves hold it only until they exit themselves. It has no
 * uplink, only a loopback that is down: no packet can leave the machine, and /bin/true
 * sends none. codeq needs nothing else of it (it turns forwarding on itself). */
static void *unshare_net(void *arg)
{
    int *fd = arg;
    /* The network namespace is per thread: the bench's other threads stay where
     * they are. */
    if (unshare(CLONE_NEWNET) < 0)
        *fd = -errno;
    else if ((*fd = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC)) < 0)
        *fd = -errno;
    return NULL;
}

/* The egress namespace's path into path; 0, or a reason in why for skipping. */
static int make_egress_netns(char *path, size_t len, char *why, size_t why_len)
{
    if (geteuid() != 0) {
        snprintf(why, why_len, "needs root (the veth pair and nftables table codeq adds)");
        return -1;
    }
    int fd = -EINVAL;
    pthread_t t;
    if (pthread_create(&t, NULL, unshare_net, &fd) != 0) {
        snprintf(why, why_len, "no thread to make the egress namespace");
        return -1;
    }
    pthread_join(t, NULL);
    if (fd < 0) {
        snprintf(why, why_len, "make an egress namespace: %s", strerror(-fd));
        return -1;
    }
    snprintf(path, len, "/proc/%d/fd/%d", (int)getpid(), fd);
    return 0;
}

/* A sandbox's life through the library in three parts: creation, its first process
 * (spawn /bin/true and wait for its report) and destruction, each in ms. */
struct phases {
    struct series create, first, destroy, stats;
    char names[4][48];
};

static int time_phases(const struct cq_sandbox_config *cfg, struct phases *ph)
{
    struct cq_error err;
    struct cq_sandbox *sb;
    uint64_t t0 = cq_now_us();
    if (cq_sandbox_create(cfg, &sb, &err) < 0) {
        fprintf(stderr, "create (%s): %s\n", cfg->network == CQ_NETWORK_PUBLIC ? "public" : "none",
                err.msg);
        return -1;
    }
    uint64_t t1 = cq_now_us();
    double first = spawn_in_sandbox(sb);
    /* What a call's before/after byte count costs (two reads of the counters). */
    struct cq_sandbox_net_stats net;
    uint64_t s0 = cq_now_us();
    int stats_rc = cq_sandbox_net_stats(sb, &net, &err);
    uint64_t s1 = cq_now_us();
    uint64_t t2 = cq_now_us();
    cq_sandbox_destroy(sb);
    uint64_t t3 = cq_now_us();
    if (first < 0)
        return -1;
    add(&ph->create, (double)(t1 - t0) / 1000.0);
    add(&ph->first, first);
    add(&ph->destroy, (double)(t3 - t2) / 1000.0);
    if (stats_rc == 0)
        add(&ph->stats, (double)(s1 - s0) / 1000.0);
    return 0;
}

static void phases_init(struct phases *ph, const char *mode, int runs)
{
    snprintf(ph->names[0], sizeof(ph->names[0]), "phases, %s: create", mode);
    snprintf(ph->names[1], sizeof(ph->names[1]), "phases, %s: first spawn+wait", mode);
    snprintf(ph->names[2], sizeof(ph->names[2]), "phases, %s: destroy", mode);
    snprintf(ph->names[3], sizeof(ph->names[3]), "phases, %s: net stats", mode);
    ph->create = (struct series){ph->names[0], calloc(runs, 8), 0};
    ph->first = (struct series){ph->names[1], calloc(runs, 8), 0};
    ph->destroy = (struct series){ph->names[2], calloc(runs, 8), 0};
    ph->stats = (struct series){ph->names[3], calloc(runs, 8), 0};
}

/* The warm-up's figures are not kept. */
static void phases_reset(struct phases *ph)
{
    ph->create.n = ph->first.n = ph->destroy.n = ph->stats.n = 0;
}

int main(int argc, char **argv)
{
    int runs = 300;
    char codeq[PATH_MAX] = "";
    const char *bwrap = "/usr/bin/bwrap";
    bool network = true;
    static const struct option opts[] = {
        {"runs", required_argument, NULL, 'r'},  {"codeq", required_argument, NULL, 'c'},
        {"bwrap", required_argument, NULL, 'b'}, {"no-network", no_argument, NULL, 'n'},
        {"help", no_argument, NULL, 'h'},        {NULL, 0, NULL, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'r':
            runs = atoi(optarg);
            break;
        case 'c':
            snprintf(codeq, sizeof(codeq), "%s", optarg);
            break;
        case 'b':
            bwrap = optarg;
            break;
        case 'n':
            network = false;
            break;
        default:
            fprintf(stderr, "usage: %s [--runs N] [--codeq PATH] [--bwrap PATH] [--no-network]\n",
                    argv[0]);
            return c == 'h' ? 0 : 2;
        }
    }
    if (runs < 10)
        runs = 10;
    if (codeq[0] == '\0') {
        /* The codeq binary next to this one. */
        ssize_t n = readlink("/proc/self/exe", codeq, sizeof(codeq) - 16);
        if (n > 0) {
            codeq[n] = '\0';
            char *slash = strrchr(codeq, '/');
            snprintf(slash + 1, sizeof(codeq) - (size_t)(slash + 1 - codeq), "codeq");
        }
    }
    char *codeq_argv[] = {codeq, "sandbox", "--", "/bin/true", NULL};
    char *true_argv[] = {"/bin/true", NULL};
    char **bw_argv = bwrap_argv(bwrap);
    /* The smallest bwrap sandbox, for reference: less isolation than codeq's. */
    char *bw_min_argv[] = {
        (char *)bwrap, "--unshare-all", "--ro-bind", "/usr",      "/usr",   "--symlink",
        "usr/lib",     "/lib",          "--symlink", "usr/lib64", "/lib64", "--symlink",
        "usr/bin",     "/bin",          "--proc",    "/proc",     "--dev",  "/dev",
        "--tmpfs",     "/tmp",          "/bin/true", NULL};
    bool have_bwrap = access(bwrap, X_OK) == 0;

    char egress[64] = "", no_network[160] = "--no-network";
    if (network && make_egress_netns(egress, sizeof(egress), no_network, sizeof(no_network)) < 0)
        network = false;
    char *public_argv[] = {codeq,  "sandbox", "--network", "public", "--egress-netns",
                           egress, "--",      "/bin/true", NULL};
    struct cq_sandbox_config none_cfg, public_cfg;
    cq_sandbox_config_init(&none_cfg);
    cq_sandbox_config_init(&public_cfg);
    public_cfg.network = CQ_NETWORK_PUBLIC;
    public_cfg.egress_netns = egress;

    struct series oneshot_codeq = {"one-shot: codeq sandbox -- /bin/true", calloc(runs, 8), 0};
    struct series oneshot_bwrap = {"one-shot: bwrap --unshare-all ... /bin/true", calloc(runs, 8),
                                   0};
    struct series oneshot_bwrap_min = {"one-shot: bwrap --unshare-all, only /usr", calloc(runs, 8),
                                       0};
    struct series oneshot_bare = {"one-shot: /bin/true (no sandbox)", calloc(runs, 8), 0};
    struct series in_sandbox = {"in sandbox: spawn+wait /bin/true", calloc(runs, 8), 0};
    struct series in_bare = {"in process: fork+exec+wait /bin/true", calloc(runs, 8), 0};
    struct series oneshot_public = {"one-shot: codeq sandbox --network public", calloc(runs, 8), 0};
    struct phases ph_none, ph_public;
    phases_init(&ph_none, "none", runs);
    phases_init(&ph_public, "public", runs);

    /* Warm-up: page cache, cgroup detection, first-use paths of the kernel. */
    for (int i = 0; i < 10; i++) {
        run_once(codeq_argv);
        if (have_bwrap)
            run_once(bw_argv);
        time_phases(&none_cfg, &ph_none);
        /* A kernel or a libnftables without what the filter needs fails here, and its
         * error is on stderr already: the other series still run. */
        if (network && (run_once(public_argv) < 0 || time_phases(&public_cfg, &ph_public) < 0)) {
            network = false;
            snprintf(no_network, sizeof(no_network), "network mode public failed in the warm-up");
        }
    }
    phases_reset(&ph_none);
    phases_reset(&ph_public);
    for (int i = 0; i < runs; i++) {
        add(&oneshot_codeq, run_once(codeq_argv));
        if (network)
            add(&oneshot_public, run_once(public_argv));
        if (have_bwrap) {
            add(&oneshot_bwrap, run_once(bw_argv));
            add(&oneshot_bwrap_min, run_once(bw_min_argv));
        }
        add(&oneshot_bare, run_once(true_argv));
        time_phases(&none_cfg, &ph_none);
        if (network)
            time_phases(&public_cfg, &ph_public);
    }

    struct cq_sandbox_config cfg;
    cq_sandbox_config_init(&cfg);
    struct cq_error err;
    struct cq_sandbox *sb;
    if (cq_sandbox_create(&cfg, &sb, &err) < 0) {
        fprintf(stderr, "create: %s\n", err.msg);
        return 1;
    }
    for (int i = 0; i < 10; i++)
        spawn_in_sandbox(sb);
    for (int i = 0; i < runs; i++) {
        add(&in_sandbox, spawn_in_sandbox(sb));
        add(&in_bare, run_once(true_argv));
    }
    cq_sandbox_destroy(sb);

    printf("%-44s %8s %8s %8s %8s %6s\n", "benchmark (ms)", "median", "mean", "p95", "min", "runs");
    print_series(&oneshot_codeq);
    if (network)
        print_series(&oneshot_public);
    print_series(&oneshot_bwrap);
    print_series(&oneshot_bwrap_min);
    print_series(&oneshot_bare);
    print_series(&in_sandbox);
    print_series(&in_bare);
    struct series *by_mode[] = {&ph_none.create,  &ph_public.create, &ph_none.first,
                                &ph_public.first, &ph_none.destroy,  &ph_public.destroy,
                                &ph_none.stats,   &ph_public.stats};
    for (size_t i = 0; i < sizeof(by_mode) / sizeof(by_mode[0]); i++)
        if (network || i % 2 == 0)
            print_series(by_mode[i]);
    if (!have_bwrap)
        printf("(bwrap not found at %s: install bubblewrap for the comparison)\n", bwrap);
    if (!network)
        printf("(network series skipped: %s)\n", no_network);
    bool complete = oneshot_codeq.n == runs && in_sandbox.n == runs && ph_none.first.n == runs &&
                    (!network || (oneshot_public.n == runs && ph_public.first.n == runs));
    struct series *all[] = {
        &oneshot_codeq,    &oneshot_bwrap,   &oneshot_bwrap_min, &oneshot_bare,  &in_sandbox,
        &in_bare,          &oneshot_public,  &ph_none.create,    &ph_none.first, &ph_none.destroy,
        &ph_public.create, &ph_public.first, &ph_public.destroy, &ph_none.stats, &ph_public.stats};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        free(all[i]->ms);
    return complete ? 0 : 1;
}
