/* sandbox/init/rootfs.c - the sandbox's file system, built by init inside its new
 * user and mount namespaces before any sandboxed code runs.
 *
 * The steps, and why each is there:
 *  1. Make every mount private, so nothing we do propagates to the host and no
 *     host mount event propagates in.
 *  2. Mount a small staging tmpfs on /tmp and pivot_root into it, with the old
 *     root at /oldroot. Host paths stay reachable as /oldroot/<path> (including
 *     anything under the host's /tmp, which the staging mount only covered in the
 *     old tree), while nothing yet depends on the host root being "/".
 *  3. Mount the new root, a tmpfs, at /newroot and apply the plan sent by the
 *     supervisor: read-only, nosuid, nodev binds of the runtime; generated files;
 *     size- and inode-limited tmpfs for /tmp, /dev/shm and /workspace; /dev with
 *     only null, zero, full, random, urandom; /proc, with a small tmpfs of
 *     stand-ins for host-revealing /proc entries stacked on it.
 *  4. Make the new root read-only and pivot into /newroot with the
 *     pivot_root(".", ".") idiom, then detach the staging root that ends up stacked
 *     on top, and with it the host tree below /oldroot: from here on no host path
 *     outside the binds exists in this namespace.
 * Sandboxed code never runs in this mount namespace: each process gets a copy of it
 * with its own /proc (see init_mount_process_proc).
 */
#define _GNU_SOURCE
#include "sandbox/init/init.h"
#include "common/cleanup.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

/* From linux/mount.h; declared here because it clashes with sys/mount.h. */
struct init_mount_attr {
    uint64_t attr_set;
    uint64_t attr_clr;
    uint64_t propagation;
    uint64_t userns_fd;
};
#define INIT_MOUNT_ATTR_RDONLY 0x00000001
#define INIT_MOUNT_ATTR_NOSUID 0x00000002
#define INIT_MOUNT_ATTR_NODEV  0x00000004
#define INIT_MOUNT_ATTR_NOEXEC 0x00000008
#ifndef AT_RECURSIVE
#define AT_RECURSIVE 0x8000
#endif

#define STAGE   "/tmp"
#define NEWROOT "/newroot"
#define OLDROOT "/oldroot"

/* /proc entries hidden from sandboxed code (an empty file or directory is bound over
 * them): they leak host-wide state (other users' keys, kernel symbols, timers and
 * names of host processes, kernel memory layout), are triggers, or are a side
 * channel on the other sessions of the host (pressure stall times and per-disk I/O
 * counters show when and how hard they compute, allocate and write). The list
 * follows Docker's masked paths, plus pressure and diskstats. Entries without
 * permission bits for "others" are skipped: they belong to the host's root, which is
 * not mapped in the sandbox, so the sandbox user cannot open them anyway, and every
 * mount saved here is saved on every process start. */
static const char *const proc_masked[] = {
    "/proc/kcore",       "/proc/keys",          "/proc/key-users",   "/proc/timer_list",
    "/proc/sched_debug", "/proc/latency_stats", "/proc/kallsyms",    "/proc/kpagecount",
    "/proc/kpageflags",  "/proc/kpagecgroup",   "/proc/vmallocinfo", "/proc/sysrq-trigger",
    "/proc/acpi",        "/proc/scsi",          "/proc/asound",      "/proc/driver",
    "/proc/pressure",    "/proc/diskstats",
};

/* /proc entries replaced by a neutral stand-in of the same name (see
 * mount_proc_standins): boot_id and the kernel command line identify the host (the
 * same values in every sandbox of a host, and unique to it), and the load average
 * follows the other sessions' CPU use. Tools read them, so they stay readable. */
static const struct {
    const char *path;
    const char *standin;
} proc_replaced[] = {
    {"/proc/sys/kernel/random/boot_id", "boot_id"},
    {"/proc/cmdline", "cmdline"},
    {"/proc/loadavg", "loadavg"},
};

/* The stand-ins live in a small read-only tmpfs that init stacks on top of the
 * sandbox-level /proc. Each shim opens it before mounting its process's /proc over
 * it, binds from it through that fd, and closes the fd: the stand-ins are out of
 * reach by path for sandboxed code, and a bind of a file from an existing mount is
 * the cheapest mount there is (no new superblock; the bind inherits read-only,
 * nosuid, nodev and noexec from its source, so no mount_setattr either). */
#define STANDIN_EMPTY_FILE "empty"
#define STANDIN_EMPTY_DIR  "emptydir"

static int set_mount_attr(const char *path, uint64_t set, unsigned flags, struct cq_error *err)
{
    struct init_mount_attr attr = {.attr_set = set};
    if (syscall(SYS_mount_setattr, AT_FDCWD, path, flags, &attr, sizeof(attr)) < 0)
        return cq_error_sys(err, errno, "mount_setattr %s", path);
    return 0;
}

/* mkdir -p for the parents of path (which is under /newroot). */
static int make_parents(const char *path, struct cq_error *err)
{
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
        return cq_error_set(err, ENAMETOOLONG, "path too long: %s", path);
    for (char *p = buf + 1; *p != '\0'; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0755) < 0 && errno != EEXIST)
            return cq_error_sys(err, errno, "mkdir %s", buf);
        *p = '/';
    }
    return 0;
}

/* Creates an empty directory or file at path to mount the source on; parents are
 * made only when missing (the plan mostly lists them first). */
static int make_mountpoint(const char *path, bool directory, struct cq_error *err)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        int rc;
        if (directory) {
            rc = mkdir(path, 0755);
            if (rc < 0 && errno == EEXIST)
                rc = 0;
        } else {
            rc = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0444);
            if (rc >= 0)
                rc = close(rc);
        }
        if (rc == 0)
            return 0;
        if (errno != ENOENT || attempt == 1)
            return cq_error_sys(err, errno, "create mountpoint %s", path);
        if (make_parents(path, err) < 0)
            return -1;
    }
    return 0;
}

static int bind_mount(const char *src, const char *dst, uint64_t attrs, bool optional,
                      struct cq_error *err)
{
    struct stat st;
    if (stat(src, &st) < 0) {
        if (optional && errno == ENOENT)
            return 0;
        return cq_error_sys(err, errno, "bind source %s", src);
    }
    if (make_mountpoint(dst, S_ISDIR(st.st_mode), err) < 0)
        return -1;
    /* MS_REC: binding without it fails (EINVAL) when the source has mounts below it
     * that this user namespace may not reveal; mount_setattr(AT_RECURSIVE) then
     * applies the restrictions to every mount of the subtree. */
    if (mount(src, dst, NULL, MS_BIND | MS_REC, NULL) < 0)
        return cq_error_sys(err, errno, "bind %s on %s", src, dst);
    return set_mount_attr(dst, attrs, AT_RECURSIVE, err);
}

static int mount_tmpfs(const char *dst, const struct cq_mount_op *op, unsigned long flags,
                       struct cq_error *err)
{
    if (make_mountpoint(dst, true, err) < 0)
        return -1;
    char options[256];
    snprintf(options, sizeof(options), "size=%llu,nr_inodes=%llu,mode=%o,uid=%u,gid=%u",
             (unsigned long long)op->size_bytes, (unsigned long long)op->inodes, op->mode,
             op->owner, op->owner);
    if (mount("tmpfs", dst, "tmpfs", flags, options) < 0)
        return cq_error_sys(err, errno, "mount tmpfs on %s (%s)", dst, options);
    return 0;
}

static int write_file(const char *dst, const char *content, mode_t mode, struct cq_error *err)
{
    cq_autoclose int fd = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0 && errno == ENOENT && make_parents(dst, err) == 0)
        fd = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0)
        return cq_error_sys(err, errno, "create %s", dst);
    size_t len = strlen(content);
    if (write(fd, content, len) != (ssize_t)len)
        return cq_error_sys(err, errno, "write %s", dst);
    if (fchmod(fd, mode) < 0) /* umask must not decide the mode */
        return cq_error_sys(err, errno, "chmod %s", dst);
    return 0;
}

/* Copies a host file into the new root. The source is opened without following a
 * final symlink and must be a regular file of bounded size, as the plan promised. */
static int copy_file(const char *src, const char *dst, bool optional, struct cq_error *err)
{
    cq_autoclose int in = open(src, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (in < 0) {
        if (optional && errno == ENOENT)
            return 0;
        return cq_error_sys(err, errno, "open %s", src);
    }
    struct stat st;
    if (fstat(in, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > 4 * 1024 * 1024)
        return cq_error_set(err, EINVAL, "copy %s: not a small regular file", src);
    cq_autoclose int out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (out < 0 && errno == ENOENT && make_parents(dst, err) == 0)
        out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (out < 0)
        return cq_error_sys(err, errno, "create %s", dst);
    char buf[65536];
    ssize_t n;
    while ((n = read(in, buf, sizeof(buf))) > 0)
        if (write(out, buf, (size_t)n) != n)
            return cq_error_sys(err, errno ? errno : EIO, "write %s", dst);
    if (n < 0)
        return cq_error_sys(err, errno, "read %s", src);
    if (fchmod(out, st.st_mode & 0755) < 0)
        return cq_error_sys(err, errno, "chmod %s", dst);
    return 0;
}

static int mask_path(const char *dst, bool optional, struct cq_error *err)
{
    struct stat st;
    if (lstat(dst, &st) < 0) {
        if (optional && errno == ENOENT)
            return 0;
        return cq_error_sys(err, errno, "mask %s", dst);
    }
    if (S_ISDIR(st.st_mode)) {
        if (mount("tmpfs", dst, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                  "size=0,nr_inodes=1,mode=0555") < 0)
            return cq_error_sys(err, errno, "mask directory %s", dst);
        return 0;
    }
    if (mount("/dev/null", dst, NULL, MS_BIND, NULL) < 0)
        return cq_error_sys(err, errno, "mask file %s", dst);
    return set_mount_attr(
        dst, INIT_MOUNT_ATTR_RDONLY | INIT_MOUNT_ATTR_NOSUID | INIT_MOUNT_ATTR_NOEXEC, 0, err);
}

/* A random version 4 UUID, formatted as /proc/sys/kernel/random/boot_id is. */
static int make_boot_id(char out[38], struct cq_error *err)
{
    uint8_t b[16];
    if (syscall(SYS_getrandom, b, sizeof(b), 0) != (long)sizeof(b))
        return cq_error_sys(err, errno ? errno : EIO, "getrandom for boot_id");
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
    snprintf(out, 38, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x\n",
             b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
             b[14], b[15]);
    return 0;
}

/* Stacks the stand-ins for /proc entries on the sandbox-level /proc at dst (see
 * proc_replaced). boot_id is random per sandbox: processes of one sandbox agree on
 * it, as programs expect of one boot, while it tells nothing about the host and
 * links no two sandboxes. The command line is a neutral constant, and so is the
 * load average: a virtual one would need a process serving it, and the same host
 * figures stay readable through sysinfo(2) anyway (see docs/security.md). */
static int mount_proc_standins(const char *dst, struct cq_error *err)
{
    if (mount("tmpfs", dst, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
              "size=16k,nr_inodes=16,mode=0555") < 0)
        return cq_error_sys(err, errno, "mount the /proc stand-ins on %s", dst);
    char boot_id[38];
    if (make_boot_id(boot_id, err) < 0)
        return -1;
    const struct {
        const char *name;
        const char *content;
    } files[] = {
        {STANDIN_EMPTY_FILE, ""},
        {"boot_id", boot_id},
        {"cmdline", "quiet\n"},
        {"loadavg", "0.00 0.00 0.00 1/1 1\n"},
    };
    char path[PATH_MAX];
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", dst, files[i].name);
        if (write_file(path, files[i].content, 0444, err) < 0)
            return -1;
    }
    snprintf(path, sizeof(path), "%s/" STANDIN_EMPTY_DIR, dst);
    if (mkdir(path, 0555) < 0)
        return cq_error_sys(err, errno, "mkdir %s", path);
    return set_mount_attr(dst,
                          INIT_MOUNT_ATTR_RDONLY | INIT_MOUNT_ATTR_NOSUID | INIT_MOUNT_ATTR_NODEV |
                              INIT_MOUNT_ATTR_NOEXEC,
                          0, err);
}

/* Binds the stand-in `name` of the directory `standins` over dst (in a process's
 * /proc). An entry the kernel does not have is skipped. */
static int cover_proc_entry(const char *standins, const char *name, const char *dst,
                            struct cq_error *err)
{
    char src[PATH_MAX];
    snprintf(src, sizeof(src), "%s/%s", standins, name);
    if (mount(src, dst, NULL, MS_BIND, NULL) < 0) {
        if (errno == ENOENT && access(dst, F_OK) < 0)
            return 0;
        return cq_error_sys(err, errno, "bind %s over %s", name, dst);
    }
    return 0;
}

static int make_readonly(const char *dst, bool optional, struct cq_error *err)
{
    struct stat st;
    if (lstat(dst, &st) < 0) {
        if (optional && errno == ENOENT)
            return 0;
        return cq_error_sys(err, errno, "read-only %s", dst);
    }
    /* Bind the path on itself to make it a mount point whose flags we own. */
    if (mount(dst, dst, NULL, MS_BIND | MS_REC, NULL) < 0)
        return cq_error_sys(err, errno, "bind %s on itself", dst);
    return set_mount_attr(dst,
                          INIT_MOUNT_ATTR_RDONLY | INIT_MOUNT_ATTR_NOSUID | INIT_MOUNT_ATTR_NODEV |
                              INIT_MOUNT_ATTR_NOEXEC,
                          AT_RECURSIVE, err);
}

static int apply_op(const struct init_mount *m, struct cq_error *err)
{
    char dst[PATH_MAX], src[PATH_MAX];
    if (m->dst[0] != '/' || strstr(m->dst, "..") != NULL)
        return cq_error_set(err, EINVAL, "mount plan: bad destination '%s'", m->dst);
    /* Sources of binds are host paths, reachable under the old root. A truncated
     * path would name something else, so truncation is an error. */
    if (snprintf(dst, sizeof(dst), NEWROOT "%s", m->dst) >= (int)sizeof(dst) ||
        snprintf(src, sizeof(src), OLDROOT "%s", m->src) >= (int)sizeof(src))
        return cq_error_set(err, ENAMETOOLONG, "mount plan: path too long: %s", m->dst);
    bool optional = (m->op.flags & CQ_MOUNT_OPTIONAL) != 0;
    const uint64_t ro = INIT_MOUNT_ATTR_RDONLY | INIT_MOUNT_ATTR_NOSUID | INIT_MOUNT_ATTR_NODEV;

    switch (m->op.kind) {
    case CQ_MOUNT_DIR:
        if (make_mountpoint(dst, true, err) < 0)
            return -1;
        if (chmod(dst, m->op.mode) < 0)
            return cq_error_sys(err, errno, "chmod %s", dst);
        return 0;
    case CQ_MOUNT_BIND_RO:
        return bind_mount(src, dst, ro, optional, err);
    case CQ_MOUNT_BIND_RW:
        return bind_mount(src, dst, INIT_MOUNT_ATTR_NOSUID | INIT_MOUNT_ATTR_NODEV, optional, err);
    case CQ_MOUNT_DEV: {
        /* A device node is bound from the host's /dev: a user namespace cannot
         * mknod. The bind must not be nodev, and is noexec and nosuid. */
        struct stat st;
        if (stat(src, &st) < 0 || !(S_ISCHR(st.st_mode)))
            return optional ? 0 : cq_error_sys(err, errno ? errno : ENODEV, "device %s", src);
        if (make_mountpoint(dst, false, err) < 0)
            return -1;
        if (mount(src, dst, NULL, MS_BIND, NULL) < 0)
            return cq_error_sys(err, errno, "bind device %s", src);
        return set_mount_attr(dst, INIT_MOUNT_ATTR_NOSUID | INIT_MOUNT_ATTR_NOEXEC, 0, err);
    }
    case CQ_MOUNT_SYMLINK:
        if (symlink(m->src, dst) < 0 &&
            (errno != ENOENT || make_parents(dst, err) < 0 || symlink(m->src, dst) < 0))
            return cq_error_sys(err, errno, "symlink %s -> %s", dst, m->src);
        return 0;
    case CQ_MOUNT_FILE:
        return write_file(dst, m->src, m->op.mode, err);
    case CQ_MOUNT_COPY:
        return copy_file(src, dst, optional, err);
    case CQ_MOUNT_TMPFS:
        return mount_tmpfs(dst, &m->op,
                           MS_NOSUID | MS_NODEV | ((m->op.flags & CQ_MOUNT_NOEXEC) ? MS_NOEXEC : 0),
                           err);
    case CQ_MOUNT_PROC:
        /* The sandbox-level /proc: only init and shims see it, and the kernel
         * allows a process's own /proc mount later only while a fully visible one
         * exists in the namespace (overmounting it by the stand-ins does not count
         * against it: only locked mounts, inherited from the host, do). */
        if (make_mountpoint(dst, true, err) < 0)
            return -1;
        if (mount("proc", dst, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
            return cq_error_sys(err, errno, "mount proc on %s", dst);
        return mount_proc_standins(dst, err);
    case CQ_MOUNT_MASK:
        return mask_path(dst, optional, err);
    case CQ_MOUNT_RDONLY:
        return make_readonly(dst, optional, err);
    case CQ_MOUNT_ROOT_RDONLY:
        return set_mount_attr(
            dst, INIT_MOUNT_ATTR_RDONLY | INIT_MOUNT_ATTR_NOSUID | INIT_MOUNT_ATTR_NODEV, 0, err);
    default:
        return cq_error_set(err, EINVAL, "mount plan: unknown operation %u", m->op.kind);
    }
}

int init_build_root(const struct init_config *cfg, struct cq_error *err)
{
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
        return cq_error_sys(err, errno, "make / private");
    if (mount("tmpfs", STAGE, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
              "size=64k,nr_inodes=16,mode=0700") < 0)
        return cq_error_sys(err, errno, "mount staging tmpfs on " STAGE);
    if (mkdir(STAGE NEWROOT, 0755) < 0 || mkdir(STAGE OLDROOT, 0700) < 0)
        return cq_error_sys(err, errno, "mkdir in staging tmpfs");
    if (syscall(SYS_pivot_root, STAGE, STAGE OLDROOT) < 0)
        return cq_error_sys(err, errno, "pivot_root into staging");
    if (chdir("/") < 0)
        return cq_error_sys(err, errno, "chdir /");
    if (mount("tmpfs", NEWROOT, "tmpfs", MS_NOSUID | MS_NODEV, "size=4m,nr_inodes=4096,mode=0755") <
        0)
        return cq_error_sys(err, errno, "mount root tmpfs");

    for (size_t i = 0; i < cfg->n_mounts; i++)
        if (apply_op(&cfg->mounts[i], err) < 0)
            return -1;

    /* pivot_root(".", ".") stacks the staging root on top of the new one; detaching
     * it takes the host tree at /oldroot with it, in one unmount (each unmount
     * waits for an RCU grace period). From here on no host path is reachable from
     * this namespace. */
    if (chdir(NEWROOT) < 0)
        return cq_error_sys(err, errno, "chdir " NEWROOT);
    if (syscall(SYS_pivot_root, ".", ".") < 0)
        return cq_error_sys(err, errno, "pivot_root into the new root");
    if (umount2(".", MNT_DETACH) < 0)
        return cq_error_sys(err, errno, "detach the staging root and the host tree");
    if (chdir("/") < 0)
        return cq_error_sys(err, errno, "chdir / in the new root");
    return 0;
}

int init_mount_process_proc(struct cq_error *err)
{
    /* "/proc" is still the stand-ins' tmpfs on top of the sandbox-level /proc; the
     * fd keeps it reachable once the process's /proc covers it. */
    cq_autoclose int fd = open("/proc", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return cq_error_sys(err, errno, "open the /proc stand-ins");
    char standins[32];
    snprintf(standins, sizeof(standins), "/proc/self/fd/%d", fd);
    if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
        return cq_error_sys(err, errno, "mount the process's /proc");
    for (size_t i = 0; i < sizeof(proc_masked) / sizeof(proc_masked[0]); i++) {
        struct stat st;
        if (lstat(proc_masked[i], &st) < 0) {
            if (errno == ENOENT)
                continue; /* this kernel does not have it */
            return cq_error_sys(err, errno, "mask %s", proc_masked[i]);
        }
        if ((st.st_mode & (S_IROTH | S_IWOTH)) == 0)
            continue; /* closed to the sandbox user anyway (see above) */
        const char *name = S_ISDIR(st.st_mode) ? STANDIN_EMPTY_DIR : STANDIN_EMPTY_FILE;
        if (cover_proc_entry(standins, name, proc_masked[i], err) < 0)
            return -1;
    }
    /* Sysctls of the sandbox's own network namespace belong to its root; nothing in
     * the sandbox should change them, even a process that became that root. */
    if (make_readonly("/proc/sys", true, err) < 0)
        return -1;
    for (size_t i = 0; i < sizeof(proc_replaced) / sizeof(proc_replaced[0]); i++)
        if (cover_proc_entry(standins, proc_replaced[i].standin, proc_replaced[i].path, err) < 0)
            return -1;
    return 0;
}
