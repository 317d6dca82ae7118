/* sandbox/cgroup.c - see cgroup.h.
 *
 * Limits per sandbox: memory including swap (v1 memory.limit_in_bytes and
 * memory.memsw.limit_in_bytes; v2 memory.max and memory.swap.max=0), pids.max, and
 * CPU bandwidth (v1 cpu.cfs_quota_us/cfs_period_us; v2 cpu.max). Memory is limited
 * here and never with RLIMIT_AS: V8 reserves gigabytes of address space it never
 * touches and dies under an address-space limit.
 *
 * CPU time per sandbox: v2 cpu.stat; v1 cpuacct.usage, from the cpu directory where
 * cpuacct is mounted with cpu, else from a cgroup of the sandbox's own in the cpuacct
 * hierarchy (optional: it limits nothing, see detect_v1_cpuacct).
 */
#define _GNU_SOURCE
#include "sandbox/cgroup.h"
#include "common/cleanup.h"
#include "common/fileutil.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char *const controller_names[CQ_CG_NCONTROLLERS] = {"memory", "pids", "cpu",
                                                                 "cpuacct"};

static struct {
    int version;
    char base[CQ_CG_NCONTROLLERS][PATH_MAX]; /* v2: base[0]; v1 cpuacct: "" when unused */
    /* v1: the directory (index into cq_cgroup.dirfd) with cpuacct.usage, -1 if none. */
    int cpuacct;
    struct cq_error error;
} detected;
static pthread_once_t detect_once = PTHREAD_ONCE_INIT;

/* Is `word` one of the `sep`-separated words of `list`? */
static bool has_word(const char *list, const char *word, char sep)
{
    size_t n = strlen(word);
    for (const char *p = list; p != NULL && *p != '\0';) {
        if (strncmp(p, word, n) == 0 && (p[n] == sep || p[n] == '\0' || p[n] == '\n'))
            return true;
        p = strchr(p, sep);
        if (p != NULL)
            p++;
    }
    return false;
}

static bool has_option(const char *list, const char *word)
{
    return has_word(list, word, ',');
}

/* /proc/self/cgroup and the cgroup mounts of /proc/self/mountinfo, read once. */
#define MAX_CGROUP_LINES 32
struct mount_entry {
    char root[PATH_MAX];
    char point[PATH_MAX];
    char fstype[16];
    char options[256];
};
static struct {
    char own_controllers[MAX_CGROUP_LINES][128];
    char own_paths[MAX_CGROUP_LINES][PATH_MAX];
    int n_own;
    struct mount_entry mounts[MAX_CGROUP_LINES];
    int n_mounts;
} host;

static void read_host_cgroups(void)
{
    cq_autofclose FILE *f = fopen("/proc/self/cgroup", "re");
    char line[4 * PATH_MAX];
    while (f != NULL && host.n_own < MAX_CGROUP_LINES && fgets(line, sizeof(line), f) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        char *controllers = strchr(line, ':');
        char *path = controllers != NULL ? strchr(controllers + 1, ':') : NULL;
        if (path == NULL)
            continue;
        *path++ = '\0';
        /* "0::/path" is the unified hierarchy; its controller list is empty. */
        snprintf(host.own_controllers[host.n_own], 128, "%s",
                 strcmp(line, "0") == 0 && controllers[1] == '\0' ? "" : controllers + 1);
        snprintf(host.own_paths[host.n_own], PATH_MAX, "%s", path);
        host.n_own++;
    }
    cq_autofclose FILE *m = fopen("/proc/self/mountinfo", "re");
    while (m != NULL && host.n_mounts < MAX_CGROUP_LINES && fgets(line, sizeof(line), m) != NULL) {
        struct mount_entry *e = &host.mounts[host.n_mounts];
        char *sep = strstr(line, " - ");
        if (sep == NULL || sscanf(line, "%*d %*d %*s %4095s %4095s", e->root, e->point) != 2)
            continue;
        char source[PATH_MAX];
        if (sscanf(sep + 3, "%15s %4095s %255s", e->fstype, source, e->options) != 3)
            continue;
        if (strcmp(e->fstype, "cgroup") == 0 || strcmp(e->fstype, "cgroup2") == 0)
            host.n_mounts++;
    }
}

/* Our cgroup path in the v1 hierarchy that has `controller`, or the unified one
 * when controller is "". */
static int own_cgroup_path(const char *controller, char *out, size_t len)
{
    for (int i = 0; i < host.n_own; i++) {
        bool match = controller[0] == '\0' ? host.own_controllers[i][0] == '\0'
                                           : has_option(host.own_controllers[i], controller);
        if (match) {
            snprintf(out, len, "%s", host.own_paths[i]);
            return 0;
        }
    }
    return -1;
}

/* Finds the mount of a v1 hierarchy with `controller`, or of cgroup2 when NULL. */
static int find_cgroup_mount(const char *controller, struct mount_entry *out)
{
    for (int i = 0; i < host.n_mounts; i++) {
        const struct mount_entry *e = &host.mounts[i];
        bool match = controller == NULL
                         ? strcmp(e->fstype, "cgroup2") == 0
                         : strcmp(e->fstype, "cgroup") == 0 && has_option(e->options, controller);
        if (match) {
            *out = *e;
            return 0;
        }
    }
    return -1;
}

/* Joins a mount point and our cgroup path relative to the mount's root. */
static void join_mount_path(const struct mount_entry *m, const char *cgpath, char *out, size_t len)
{
    size_t rootlen = strlen(m->root);
    const char *rel = cgpath;
    if (strcmp(m->root, "/") != 0 && strncmp(cgpath, m->root, rootlen) == 0)
        rel = cgpath + rootlen;
    snprintf(out, len, "%s%s%s", m->point, rel[0] == '/' || rel[0] == '\0' ? "" : "/",
             strcmp(rel, "/") == 0 ? "" : rel);
}

static int make_dir(const char *path, struct cq_error *err)
{
    /* One that exists must also be ours to fill: a normal user's codeq finds the
     * directories root's made in the same cgroup (sandbox/rootless.c). */
    if (mkdir(path, 0755) == 0)
        return 0;
    int code = errno;
    if (code == EEXIST) {
        if (access(path, W_OK | X_OK) == 0)
            return 0;
        code = errno;
    }
    cq_error_sys(err, code, "mkdir %s", path);
    if (code == EACCES || code == EPERM || code == EROFS)
        cq_error_prefix(err, "codeq needs root (or a delegated cgroup) to create sandboxes");
    return -1;
}

/* Leftovers of a supervisor that died: its sandboxes' processes died with their init
 * (the control socket closed), so their cgroups are empty and removable. */
static void sweep_stale(const char *base)
{
    cq_autoclosedir DIR *d = opendir(base);
    if (d == NULL)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_type != DT_DIR || e->d_name[0] == '.')
            continue;
        long pid = strtol(e->d_name, NULL, 10);
        if (pid <= 0 || pid == getpid())
            continue;
        char proc[64];
        snprintf(proc, sizeof(proc), "/proc/%ld", pid);
        if (access(proc, F_OK) == 0)
            continue;
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/%s", base, e->d_name);
        rmdir(path);
    }
}

/* v1: "<the hierarchy of controller c>/<our cgroup there>/codeq", made if missing
 * and swept of the leftovers of dead supervisors. */
static int make_v1_base(int c, struct cq_error *err)
{
    struct mount_entry m;
    char own[PATH_MAX], dir[PATH_MAX];
    if (find_cgroup_mount(controller_names[c], &m) < 0)
        return cq_error_set(err, ENOENT, "cgroup v1: no hierarchy with the %s controller",
                            controller_names[c]);
    if (own_cgroup_path(controller_names[c], own, sizeof(own)) < 0)
        snprintf(own, sizeof(own), "/");
    join_mount_path(&m, own, dir, sizeof(dir));
    if (snprintf(detected.base[c], PATH_MAX, "%s/codeq", dir) >= PATH_MAX)
        return cq_error_set(err, ENAMETOOLONG, "cgroup path too long: %s", dir);
    if (make_dir(detected.base[c], err) < 0)
        return -1;
    sweep_stale(detected.base[c]);
    return 0;
}

/* Where cpuacct.usage will be read. Mounted together with a controller that limits
 * (cpu,cpuacct on most hosts), it is in that controller's directory. Mounted apart,
 * sandboxes get a cgroup in its hierarchy too. Failing to make its base is not fatal,
 * unlike for the other controllers: cpuacct limits nothing, no isolation or resource
 * bound rests on it, so a host where it cannot be used still runs sandboxes, only
 * without their CPU time (0, "unknown", as cq_sandbox_stats documents). */
static void detect_v1_cpuacct(void)
{
    detected.cpuacct = -1;
    detected.base[CQ_CG_CPUACCT][0] = '\0';
    struct mount_entry m;
    if (find_cgroup_mount("cpuacct", &m) < 0)
        return;
    for (int c = 0; c < CQ_CG_NLIMITS; c++) {
        if (has_option(m.options, controller_names[c])) {
            detected.cpuacct = c;
            return;
        }
    }
    if (make_v1_base(CQ_CG_CPUACCT, NULL) < 0) {
        detected.base[CQ_CG_CPUACCT][0] = '\0';
        return;
    }
    detected.cpuacct = CQ_CG_CPUACCT;
}

static int detect_v1(struct cq_error *err)
{
    for (int c = 0; c < CQ_CG_NLIMITS; c++)
        if (make_v1_base(c, err) < 0)
            return -1;
    detect_v1_cpuacct();
    detected.version = 1;
    return 0;
}

static int enable_controllers(const char *dir, struct cq_error *err)
{
    char path[PATH_MAX + 32];
    snprintf(path, sizeof(path), "%s/cgroup.subtree_control", dir);
    return cq_write_file_at(AT_FDCWD, path, "+memory +pids +cpu", err);
}

#ifdef CQ_TESTING
/* Test builds only (tests/unit/test_cgroup_v2.c): exercise the v2 code path on a
 * host whose v2 hierarchy has no controllers, by skipping the controller checks and
 * limit writes. Never compiled into the library that ships. */
static bool v2_without_controllers(void)
{
    return getenv("CODEQ_TESTING_V2_WITHOUT_CONTROLLERS") != NULL;
}
#else
static bool v2_without_controllers(void)
{
    return false;
}
#endif

static int detect_v2(struct cq_error *err)
{
    struct mount_entry m;
    char own[PATH_MAX], dir[PATH_MAX], path[PATH_MAX + 64], buf[512];
    if (find_cgroup_mount(NULL, &m) < 0)
        return cq_error_set(err, ENOENT, "no cgroup2 mount found");
    if (own_cgroup_path("", own, sizeof(own)) < 0)
        return cq_error_set(err, ENOENT, "no unified cgroup in /proc/self/cgroup");
    join_mount_path(&m, own, dir, sizeof(dir));
    if (v2_without_controllers()) {
        snprintf(detected.base[0], PATH_MAX, "%s/codeq", strcmp(dir, "/") ? dir : "");
        detected.version = 2;
        return make_dir(detected.base[0], err);
    }
    snprintf(path, sizeof(path), "%s/cgroup.controllers", dir);
    if (cq_read_file_at(AT_FDCWD, path, buf, sizeof(buf), err) < 0)
        return -1;
    for (int c = 0; c < CQ_CG_NLIMITS; c++)
        if (!has_word(buf, controller_names[c], ' '))
            return cq_error_set(err, ENOTSUP,
                                "cgroup v2: the %s controller is not available in %s (it lists "
                                "'%.*s'); give codeq a delegated cgroup",
                                controller_names[c], dir, (int)strcspn(buf, "\n"), buf);
    /* No internal processes: a cgroup that enables controllers for its children may
     * not hold processes itself (except the root). Move this process to a leaf. */
    if (strcmp(own, "/") != 0 && enable_controllers(dir, err) < 0) {
        char leaf[PATH_MAX + 32], pid[32];
        snprintf(leaf, sizeof(leaf), "%s/codeq-supervisor", dir);
        if (make_dir(leaf, err) < 0)
            return -1;
        snprintf(path, sizeof(path), "%s/cgroup.procs", leaf);
        snprintf(pid, sizeof(pid), "%d", getpid());
        if (cq_write_file_at(AT_FDCWD, path, pid, err) < 0 || enable_controllers(dir, err) < 0)
            return cq_error_prefix(err, "cgroup v2: cannot enable controllers below %s", dir);
    } else if (strcmp(own, "/") == 0 && enable_controllers(dir, err) < 0) {
        return -1;
    }
    if (snprintf(detected.base[0], PATH_MAX, "%s/codeq", strcmp(dir, "/") ? dir : "") >= PATH_MAX)
        return cq_error_set(err, ENAMETOOLONG, "cgroup path too long: %s", dir);
    if (make_dir(detected.base[0], err) < 0 || enable_controllers(detected.base[0], err) < 0)
        return -1;
    sweep_stale(detected.base[0]);
    detected.version = 2;
    return 0;
}

static void detect(void)
{
    detected.cpuacct = -1;
    read_host_cgroups();
    const char *forced = getenv("CODEQ_CGROUP_VERSION");
    struct mount_entry m;
    bool v1_memory = find_cgroup_mount("memory", &m) == 0;
    if (forced != NULL && strcmp(forced, "2") == 0)
        v1_memory = false;
    if (forced != NULL && strcmp(forced, "1") == 0)
        v1_memory = true;
    int rc = v1_memory ? detect_v1(&detected.error) : detect_v2(&detected.error);
    if (rc < 0) {
        detected.version = 0;
        cq_error_prefix(&detected.error, "cgroups");
    }
}

int cq_cgroup_version(int *version, struct cq_error *err)
{
    pthread_once(&detect_once, detect);
    *version = detected.version;
    if (detected.version == 0) {
        /* Detection ran once; every caller gets its error, as it was then. */
        if (err != NULL)
            *err = detected.error;
        return -1;
    }
    return 0;
}

static int write_at(int dirfd, const char *file, const char *fmt, unsigned long long value,
                    struct cq_error *err)
{
    char text[64];
    snprintf(text, sizeof(text), fmt, value);
    return cq_write_file_at(dirfd, file, text, err);
}

static int write_limits_v1(struct cq_cgroup *cg, const struct cq_sandbox_limits *l,
                           struct cq_error *err)
{
    int mem = cg->dirfd[CQ_CG_MEMORY];
    if (write_at(mem, "memory.limit_in_bytes", "%llu", l->memory_bytes, err) < 0)
        return -1;
    /* memsw is RAM + swap; equal to the RAM limit it allows no swap at all. It is
     * absent when the kernel runs without swap accounting. */
    if (faccessat(mem, "memory.memsw.limit_in_bytes", F_OK, 0) == 0) {
        if (write_at(mem, "memory.memsw.limit_in_bytes", "%llu", l->memory_bytes, err) < 0)
            return -1;
    } else if (write_at(mem, "memory.swappiness", "%llu", 0, err) < 0) {
        return -1;
    }
    if (write_at(cg->dirfd[CQ_CG_PIDS], "pids.max", "%llu", l->pids, err) < 0)
        return -1;
    int cpu = cg->dirfd[CQ_CG_CPU];
    unsigned long long period = 100000, quota = (unsigned long long)(l->cpus * 100000.0);
    if (quota < 1000)
        quota = 1000; /* the kernel's minimum */
    if (write_at(cpu, "cpu.cfs_period_us", "%llu", period, err) < 0 ||
        write_at(cpu, "cpu.cfs_quota_us", "%llu", quota, err) < 0)
        return -1;
    return 0;
}

static int write_limits_v2(struct cq_cgroup *cg, const struct cq_sandbox_limits *l,
                           struct cq_error *err)
{
    if (v2_without_controllers())
        return 0;
    int dir = cg->dirfd[0];
    char cpu_max[64];
    unsigned long long quota = (unsigned long long)(l->cpus * 100000.0);
    snprintf(cpu_max, sizeof(cpu_max), "%llu 100000", quota < 1000 ? 1000 : quota);
    if (write_at(dir, "memory.max", "%llu", l->memory_bytes, err) < 0 ||
        write_at(dir, "memory.swap.max", "%llu", 0, err) < 0 ||
        write_at(dir, "pids.max", "%llu", l->pids, err) < 0 ||
        cq_write_file_at(dir, "cpu.max", cpu_max, err) < 0)
        return -1;
    return 0;
}

/* Makes directory c of the sandbox's cgroup. A path it did not make stays "", so
 * that removing the cgroup never touches a directory of someone else's. */
static int make_cgroup_dir(struct cq_cgroup *cg, int c, const char *name, struct cq_error *err)
{
    if (snprintf(cg->path[c], PATH_MAX, "%s/%s", detected.base[c], name) >= PATH_MAX) {
        cg->path[c][0] = '\0';
        return cq_error_set(err, ENAMETOOLONG, "cgroup path too long: %s", detected.base[c]);
    }
    if (mkdir(cg->path[c], 0755) < 0) {
        cq_error_sys(err, errno, "mkdir %s", cg->path[c]);
        cg->path[c][0] = '\0';
        return -1;
    }
    cg->dirfd[c] = open(cg->path[c], O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (cg->dirfd[c] < 0)
        return cq_error_sys(err, errno, "open %s", cg->path[c]);
    return 0;
}

static void remove_cgroup_dir(struct cq_cgroup *cg, int c)
{
    if (cg->dirfd[c] >= 0)
        close(cg->dirfd[c]);
    cg->dirfd[c] = -1;
    if (cg->path[c][0] == '\0')
        return;
    /* Tasks that were just reaped can keep a cgroup busy for a moment. */
    for (int attempt = 0; attempt < 200; attempt++) {
        if (rmdir(cg->path[c]) == 0 || errno == ENOENT)
            break;
        if (errno != EBUSY)
            break;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    cg->path[c][0] = '\0';
}

int cq_cgroup_create(struct cq_cgroup *cg, const char *name, const struct cq_sandbox_limits *limits,
                     struct cq_error *err)
{
    memset(cg, 0, sizeof(*cg));
    for (int c = 0; c < CQ_CG_NCONTROLLERS; c++)
        cg->dirfd[c] = -1;
    if (cq_cgroup_version(&cg->version, err) < 0)
        return -1;
    cg->ndirs = cg->version == 1 ? CQ_CG_NLIMITS : 1;
    for (int c = 0; c < cg->ndirs; c++)
        if (make_cgroup_dir(cg, c, name, err) < 0)
            goto fail;
    if ((cg->version == 1 ? write_limits_v1(cg, limits, err) : write_limits_v2(cg, limits, err)) <
        0)
        goto fail;
    /* Last, after the limits: without it the sandbox only lacks its CPU time
     * (detect_v1_cpuacct says why that is not fatal). */
    if (cg->version == 1 && detected.cpuacct == CQ_CG_CPUACCT) {
        if (make_cgroup_dir(cg, CQ_CG_CPUACCT, name, NULL) == 0)
            cg->ndirs = CQ_CG_NCONTROLLERS;
        else
            remove_cgroup_dir(cg, CQ_CG_CPUACCT);
    }
    return 0;
fail:
    cq_cgroup_destroy(cg);
    return -1;
}

int cq_cgroup_v1_open_tasks(struct cq_cgroup *cg, int fds[CQ_CG_NCONTROLLERS], struct cq_error *err)
{
    for (int c = 0; c < CQ_CG_NCONTROLLERS; c++)
        fds[c] = -1;
    for (int c = 0; c < cg->ndirs; c++) {
        fds[c] = openat(cg->dirfd[c], "tasks", O_WRONLY | O_CLOEXEC);
        if (fds[c] >= 0)
            continue;
        if (c == CQ_CG_CPUACCT) {
            /* Accounting only: the sandbox joins the others and runs without it. */
            remove_cgroup_dir(cg, CQ_CG_CPUACCT);
            cg->ndirs = CQ_CG_NLIMITS;
            break;
        }
        int saved = errno;
        for (int d = 0; d < c; d++)
            close(fds[d]);
        return cq_error_sys(err, saved, "open %s/tasks", cg->path[c]);
    }
    return 0;
}

void cq_cgroup_destroy(struct cq_cgroup *cg)
{
    /* v2 (5.14+): kill anything still in the cgroup in one step. The sandbox's pid
     * namespace already took its processes with init; this covers a process that
     * was moved in from outside. */
    if (cg->version == 2 && cg->dirfd[0] >= 0)
        cq_write_file_at(cg->dirfd[0], "cgroup.kill", "1", NULL);
    for (int c = 0; c < CQ_CG_NCONTROLLERS; c++)
        remove_cgroup_dir(cg, c);
    cg->ndirs = 0;
}

static uint64_t read_u64(int dirfd, const char *file)
{
    char buf[64];
    if (dirfd < 0 || cq_read_file_at(dirfd, file, buf, sizeof(buf), NULL) < 0)
        return 0;
    if (strncmp(buf, "max", 3) == 0)
        return UINT64_MAX;
    return strtoull(buf, NULL, 10);
}

static uint64_t read_keyed(int dirfd, const char *file, const char *key)
{
    char buf[1024];
    uint64_t value = 0;
    if (dirfd >= 0 && cq_read_file_at(dirfd, file, buf, sizeof(buf), NULL) >= 0)
        cq_keyed_u64(buf, key, &value);
    return value;
}

void cq_cgroup_counters(const struct cq_cgroup *cg, uint64_t *oom_kills, uint64_t *pids_max_hits)
{
    int mem = cg->dirfd[CQ_CG_MEMORY];
    int pids = cg->version == 1 ? cg->dirfd[CQ_CG_PIDS] : cg->dirfd[0];
    if (oom_kills != NULL)
        *oom_kills = cg->version == 1 ? read_keyed(mem, "memory.oom_control", "oom_kill")
                                      : read_keyed(mem, "memory.events", "oom_kill");
    if (pids_max_hits != NULL)
        *pids_max_hits = read_keyed(pids, "pids.events", "max");
}

int cq_cgroup_stats(const struct cq_cgroup *cg, struct cq_sandbox_stats *st, struct cq_error *err)
{
    memset(st, 0, sizeof(*st));
    if (cg->dirfd[0] < 0)
        return cq_error_set(err, ESRCH, "the sandbox's cgroup is gone");
    int mem = cg->dirfd[CQ_CG_MEMORY];
    int pids = cg->version == 1 ? cg->dirfd[CQ_CG_PIDS] : cg->dirfd[0];
    if (cg->version == 1) {
        st->memory_current_bytes = read_u64(mem, "memory.usage_in_bytes");
        st->memory_peak_bytes = read_u64(mem, "memory.max_usage_in_bytes");
        st->memory_limit_bytes = read_u64(mem, "memory.limit_in_bytes");
    } else {
        st->memory_current_bytes = read_u64(mem, "memory.current");
        st->memory_peak_bytes = read_u64(mem, "memory.peak");
        st->memory_limit_bytes = read_u64(mem, "memory.max");
    }
    st->pids_current = read_u64(pids, "pids.current");
    /* v1: cpuacct.usage (ns), in the directory detect_v1_cpuacct chose; -1 there
     * (no cpuacct) or here (its cgroup could not be made) reads as 0, unknown. */
    if (cg->version == 1) {
        int acct = detected.cpuacct >= 0 ? cg->dirfd[detected.cpuacct] : -1;
        st->cpu_usage_us = read_u64(acct, "cpuacct.usage") / 1000;
    } else {
        st->cpu_usage_us = read_keyed(cg->dirfd[0], "cpu.stat", "usage_usec");
    }
    cq_cgroup_counters(cg, &st->oom_kills, &st->pids_limit_hits);
    return 0;
}
