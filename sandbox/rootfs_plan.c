/* sandbox/rootfs_plan.c - what the sandbox's root contains.
 *
 * The runtime is the host's /usr (read-only), the top-level links or directories
 * that point into it (/bin, /lib, ...), and an allowlist of /etc entries that the
 * dynamic loader, Python, Node, matplotlib and TLS need. Everything else of the host
 * (/root, /home, /var, /opt, /srv, /run, /sys, /mnt, the host's /tmp, /etc/shadow,
 * ...) is absent: not hidden, simply never mounted. /etc/passwd, /etc/group and
 * /etc/hosts are generated, so no host account names leak in.
 */
#define _GNU_SOURCE
#include "sandbox/rootfs_plan.h"
#include "sandbox/egress.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Top-level entries of the runtime. On merged-/usr systems these are symlinks and are
 * recreated as such; elsewhere they are directories and are bound read-only. */
static const char *const runtime_top[] = {"/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"};

/* /etc entries the runtime needs; missing ones are skipped. Not included on purpose:
 * shadow, gshadow, sudoers, ssh, machine-id (identifies the host), hostname,
 * resolv.conf (the host's resolver is no business of a sandbox's; written below in
 * network modes PUBLIC and ALLOWLIST), passwd and group (generated below). */
static const char *const etc_allowlist[] = {
    "alternatives", "ld.so.cache",   "ld.so.conf", "ld.so.conf.d",    "localtime",
    "timezone",     "nsswitch.conf", "host.conf",  "gai.conf",        "protocols",
    "services",     "mime.types",    "ssl",        "ca-certificates", "fonts",
    "matplotlibrc", "python3",       "python3.11", "debian_version",  "os-release",
    "bash.bashrc",  "inputrc",       "magic",      "magic.mime",      "ImageMagick-6",
};

static const char *const dev_nodes[] = {"null", "zero", "full", "random", "urandom"};

static void put(struct cq_msg_writer *w, uint32_t kind, uint32_t flags, const char *src,
                const char *dst)
{
    struct cq_mount_op op = {.kind = kind, .flags = flags};
    cq_msg_put_mount(w, &op, src, dst);
}

static void put_dir(struct cq_msg_writer *w, const char *dst, uint32_t mode)
{
    struct cq_mount_op op = {.kind = CQ_MOUNT_DIR, .mode = mode};
    cq_msg_put_mount(w, &op, NULL, dst);
}

static void put_file(struct cq_msg_writer *w, const char *dst, const char *content)
{
    struct cq_mount_op op = {.kind = CQ_MOUNT_FILE, .mode = 0644};
    cq_msg_put_mount(w, &op, content, dst);
}

static void put_tmpfs(struct cq_msg_writer *w, const char *dst, uint64_t size, uint64_t inodes,
                      uint32_t mode, uint32_t owner, uint32_t flags)
{
    struct cq_mount_op op = {.kind = CQ_MOUNT_TMPFS,
                             .flags = flags,
                             .size_bytes = size,
                             .inodes = inodes,
                             .mode = mode,
                             .owner = owner};
    cq_msg_put_mount(w, &op, NULL, dst);
}

/* A host path as it should appear: a symlink is recreated (its target resolves inside
 * the sandbox), a directory is bound read-only, and a small regular file is copied
 * into the (later read-only) root: every mount is paid again when each process gets
 * its own mount namespace and when it ends, a copy only once. */
static void put_host_entry(struct cq_msg_writer *w, const char *path)
{
    struct stat st;
    if (lstat(path, &st) < 0)
        return;
    if (S_ISLNK(st.st_mode)) {
        char target[PATH_MAX];
        ssize_t n = readlink(path, target, sizeof(target) - 1);
        if (n <= 0)
            return;
        target[n] = '\0';
        put(w, CQ_MOUNT_SYMLINK, 0, target, path);
        return;
    }
    if (S_ISREG(st.st_mode) && st.st_size <= CQ_ROOTFS_COPY_MAX)
        put(w, CQ_MOUNT_COPY, CQ_MOUNT_OPTIONAL, path, path);
    else
        put(w, CQ_MOUNT_BIND_RO, CQ_MOUNT_OPTIONAL, path, path);
}

int cq_rootfs_plan_write(const struct cq_sandbox_config *cfg, uint32_t root_owner,
                         struct cq_msg_writer *w, struct cq_error *err)
{
    const struct cq_sandbox_limits *l = &cfg->limits;
    const char *hostname = cfg->hostname != NULL ? cfg->hostname : "codeq";
    struct cq_ids ids = {.user_uid = CQ_SANDBOX_USER_UID, .user_gid = CQ_SANDBOX_USER_UID};

    cq_msg_begin(w, CQ_MSG_CONFIG);
    cq_msg_put_str(w, CQ_F_HOSTNAME, hostname);
    cq_msg_put(w, CQ_F_IDS, &ids, sizeof(ids));

    put(w, CQ_MOUNT_BIND_RO, 0, "/usr", "/usr");
    for (size_t i = 0; i < sizeof(runtime_top) / sizeof(runtime_top[0]); i++)
        put_host_entry(w, runtime_top[i]);

    put_dir(w, "/etc", 0755);
    for (size_t i = 0; i < sizeof(etc_allowlist) / sizeof(etc_allowlist[0]); i++) {
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "/etc/%s", etc_allowlist[i]);
        put_host_entry(w, path);
    }
    char text[512];
    snprintf(text, sizeof(text),
             "root:x:0:0:root:/root:/usr/sbin/nologin\n"
             "sandbox:x:%d:%d:codeq sandbox:" CQ_SANDBOX_WORKSPACE ":/bin/sh\n"
             "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
             CQ_SANDBOX_USER_UID, CQ_SANDBOX_USER_UID);
    put_file(w, "/etc/passwd", text);
    snprintf(text, sizeof(text), "root:x:0:\nsandbox:x:%d:\nnogroup:x:65534:\n",
             CQ_SANDBOX_USER_UID);
    put_file(w, "/etc/group", text);
    snprintf(text, sizeof(text),
             "127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\tlocalhost ip6-localhost ip6-loopback\n",
             hostname);
    put_file(w, "/etc/hosts", text);
    snprintf(text, sizeof(text), "%s\n", hostname);
    put_file(w, "/etc/hostname", text);
    if (cfg->network != CQ_NETWORK_NONE) {
        /* codeq's resolver (sandbox/resolver.c), never the upstream itself. */
        snprintf(text, sizeof(text),
                 "nameserver " CQ_EGRESS_DNS "\noptions timeout:2 attempts:2\n");
        put_file(w, "/etc/resolv.conf", text);
    }

    for (size_t i = 0; i < cfg->n_binds; i++)
        put(w, CQ_MOUNT_BIND_RO, 0, cfg->binds[i].host_path, cfg->binds[i].sandbox_path);

    put(w, CQ_MOUNT_PROC, 0, NULL, "/proc");

    /* /dev: a fresh tmpfs with five harmless devices; no disks, no ttys, no kmsg. */
    put_tmpfs(w, "/dev", 64 * 1024, 64, 0755, root_owner, CQ_MOUNT_NOEXEC);
    for (size_t i = 0; i < sizeof(dev_nodes) / sizeof(dev_nodes[0]); i++) {
        char path[64];
        snprintf(path, sizeof(path), "/dev/%s", dev_nodes[i]);
        put(w, CQ_MOUNT_DEV, 0, path, path);
    }
    put(w, CQ_MOUNT_SYMLINK, 0, "/proc/self/fd", "/dev/fd");
    put(w, CQ_MOUNT_SYMLINK, 0, "/proc/self/fd/0", "/dev/stdin");
    put(w, CQ_MOUNT_SYMLINK, 0, "/proc/self/fd/1", "/dev/stdout");
    put(w, CQ_MOUNT_SYMLINK, 0, "/proc/self/fd/2", "/dev/stderr");
    put_tmpfs(w, "/dev/shm", l->tmp_bytes, l->workspace_inodes, 01777, root_owner, CQ_MOUNT_NOEXEC);
    if (root_owner != 0)
        put(w, CQ_MOUNT_ROOT_RDONLY, 0, NULL, "/dev");

    put_tmpfs(w, "/tmp", l->tmp_bytes, l->workspace_inodes, 01777, root_owner, 0);
    if (cfg->workspace_dir != NULL)
        put(w, CQ_MOUNT_BIND_RW, 0, cfg->workspace_dir, CQ_SANDBOX_WORKSPACE);
    else
        put_tmpfs(w, CQ_SANDBOX_WORKSPACE, l->workspace_bytes, l->workspace_inodes, 0755,
                  CQ_SANDBOX_USER_UID, 0);

    put(w, CQ_MOUNT_ROOT_RDONLY, 0, NULL, "/");
    if (w->overflow)
        return cq_error_set(err, E2BIG, "sandbox configuration does not fit in one message");
    return 0;
}
