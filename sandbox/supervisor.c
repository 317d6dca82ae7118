/* sandbox/supervisor.c - creating and destroying sandboxes (the host side).
 *
 * Creating a sandbox:
 *  1. Start its init in new user, pid, mount, IPC and UTS namespaces (cgroup v2:
 *     with clone3(CLONE_INTO_CGROUP) into a cgroup created first, and a new cgroup
 *     namespace rooted there). The network namespace is created by init itself, on
 *     another CPU while it builds the root (see init/main.c): it is the slowest
 *     namespace to create (~600 us measured here).
 *  2. Write init's uid and gid maps: inside uid 0 (init and the shims) and uid 1000
 *     (sandboxed code) map to two unprivileged host ids; no other id exists in it.
 *     Host root is never mapped. As a normal user (rootless.c) they map to the user and
 *     a subordinate id of the user's, or, with one id only (the user's own, or a
 *     --workspace directory of the user's), uid 1000 alone maps to the user and init
 *     runs as 1000 as well, with its capabilities kept through the ambient set.
 *  3. Let init drop the host's supplementary groups, become uid 0 of its namespace
 *     and exec codeq-sandbox-init (a small static binary, opened once by fd, so the
 *     path to it need not be reachable by the unprivileged ids).
 *  4. Send CONFIG (the root file system plan). While init builds the root, create
 *     the cgroup (v1) and send its `tasks` fds: init joins the cgroup and enters a
 *     new cgroup namespace before it reports READY, so no sandboxed code ever runs
 *     outside the limits.
 * Between clone and exec the child is a copy of a possibly multi-threaded process,
 * so it uses raw system calls only.
 */
#define _GNU_SOURCE
#include "sandbox/internal.h"
#include "sandbox/protocol.h"
#include "sandbox/rootfs_plan.h"
#include "sandbox/rootless.h"
#include "sandbox/uplink.h"
#include "common/cleanup.h"
#include "common/fileutil.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/capability.h>
#include <linux/sched.h>
#include <linux/securebits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef CQ_LIBEXECDIR
#define CQ_LIBEXECDIR "/usr/local/libexec/codeq"
#endif

/* Host ids that sandbox ids map to: far above ordinary accounts and the usual
 * subordinate-id ranges, and never 0. */
#define HOST_ID_ROOT 1600000000u /* uid/gid 0 inside: init and shims */
#define HOST_ID_USER 1600001000u /* uid/gid 1000 inside: sandboxed code */

/* Not CLONE_NEWNET (init makes it in parallel) nor CLONE_NEWCGROUP (on v1 init
 * enters one once it is in its cgroup). */
#define NAMESPACE_FLAGS (CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS)

#define INIT_READY_TIMEOUT_MS 30000

static struct {
    int fd;
    struct cq_error error;
} init_binary = {.fd = -1};
static pthread_once_t init_binary_once = PTHREAD_ONCE_INIT;
static atomic_uint sandbox_counter;

/* An O_PATH fd of path when it is an executable regular file, or -1 with err. */
static int open_init_candidate(const char *path, struct cq_error *err)
{
    cq_autoclose int fd = open(path, O_PATH | O_CLOEXEC);
    if (fd < 0)
        return cq_error_sys(err, errno, "open %s", path);
    struct stat st;
    if (fstat(fd, &st) < 0)
        return cq_error_sys(err, errno, "stat %s", path);
    if (!S_ISREG(st.st_mode) || !(st.st_mode & S_IXOTH))
        return cq_error_set(err, EACCES, "%s is not an executable file", path);
    return cq_steal_fd(&fd);
}

static void find_init_binary(void)
{
    const char *explicit_path = getenv("CODEQ_SANDBOX_INIT");
    if (explicit_path != NULL) {
        init_binary.fd = open_init_candidate(explicit_path, &init_binary.error);
        if (init_binary.fd < 0)
            cq_error_prefix(&init_binary.error, "CODEQ_SANDBOX_INIT");
        return;
    }
    char self[PATH_MAX], path[PATH_MAX + 32];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n > 0) {
        self[n] = '\0';
        char *slash = strrchr(self, '/');
        if (slash != NULL)
            *slash = '\0';
        snprintf(path, sizeof(path), "%s/codeq-sandbox-init", self);
        /* Not found here is no error yet: the install location comes next. */
        if ((init_binary.fd = open_init_candidate(path, NULL)) >= 0)
            return;
    }
    snprintf(path, sizeof(path), "%s/codeq-sandbox-init", CQ_LIBEXECDIR);
    if ((init_binary.fd = open_init_candidate(path, NULL)) >= 0)
        return;
    cq_error_set(&init_binary.error, ENOENT,
                 "codeq-sandbox-init not found next to the program nor in %s (set "
                 "CODEQ_SANDBOX_INIT)",
                 CQ_LIBEXECDIR);
}

/* Who is who in a sandbox's user namespace (see the top of the file). */
struct id_layout {
    uint32_t user_uid, user_gid; /* the ids outside that sandboxed code runs as */
    /* Only uid and gid 1000 exist inside, mapped to user_uid and user_gid: init runs as
     * 1000 too. Otherwise 0 maps to root_uid and root_gid. */
    bool one_id;
    uint32_t root_uid, root_gid;
};

/* Everything the child needs, prepared before clone so the child only reads it. */
struct init_launch {
    int init_fd;      /* O_PATH fd of codeq-sandbox-init */
    int socket_fd;    /* init's end of the control socket */
    int sync_fd;      /* read end: one byte when the id maps are written */
    int sync_write;   /* its other end, which the child must not keep open */
    int devnull_fd;   /* becomes init's stdio: it must hold nothing of the host's */
    int cgroup_fd;    /* v2: the cgroup directory for CLONE_INTO_CGROUP; -1 on v1 */
    bool no_cgroup;   /* none at all (rootless.c): a cgroup namespace at clone still */
    uint32_t init_id; /* init's uid and gid inside: 0, or 1000 with one id */
    bool keep_groups; /* setgroups is refused in the namespace (rootless.c) */
    uint32_t owner;   /* the user namespace's owner when not root: CQ_SANDBOX_ZYGOTE_UID */
};

/* One id inside (struct id_layout): init is not uid 0 there, so its execve would drop
 * the capabilities it has over its new namespaces. The ambient set keeps them across
 * execve for a file without capabilities; it holds only what is both permitted and
 * inheritable, and the inheritable set may grow only within the bounding set. Raw
 * system calls: see the top of the file. */
static int keep_caps_across_exec(void)
{
    struct __user_cap_header_struct header = {.version = _LINUX_CAPABILITY_VERSION_3};
    struct __user_cap_data_struct data[2];
    if (syscall(SYS_capget, &header, data) < 0)
        return -1;
    for (int cap = 0; cap < 64; cap++) {
        int in_bset = (int)syscall(SYS_prctl, PR_CAPBSET_READ, cap, 0, 0, 0);
        if (in_bset < 0)
            break; /* past the last capability this kernel knows */
        uint32_t bit = 1u << (cap % 32);
        if (in_bset == 1 && (data[cap / 32].permitted & bit))
            data[cap / 32].inheritable |= bit;
    }
    if (syscall(SYS_capset, &header, data) < 0)
        return -1;
    for (int cap = 0; cap < 64; cap++)
        if (data[cap / 32].inheritable & (1u << (cap % 32)))
            if (syscall(SYS_prctl, PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0) < 0)
                return -1;
    return 0;
}

/* The child after clone: raw system calls only (see the top of the file). */
static void __attribute__((noreturn)) init_child(const struct init_launch *launch)
{
    /* The child holds copies of all the supervisor's fds until it execs. Its copy of
     * the sync pipe's write end would keep the read below from ever seeing EOF if the
     * supervisor died first: the child would hang on, holding other sandboxes'
     * control sockets open (and so their inits alive). */
    syscall(SYS_close, launch->sync_write);
    char byte;
    if (syscall(SYS_read, launch->sync_fd, &byte, 1) != 1)
        syscall(SYS_exit_group, 120);
    /* Drop the supplementary groups inherited from the supervisor: they are host
     * groups and would still grant access to group-readable host files. (Where the
     * namespace refuses setgroups, a normal user's own ids, they stay: docs/security.md,
     * "Running as a normal user".) */
    /* The creating thread lent us its securebits (start_init): not init's to keep. */
    if (launch->owner != 0 && syscall(SYS_prctl, PR_SET_SECUREBITS, 0, 0, 0, 0) < 0)
        syscall(SYS_exit_group, 128);
    uint32_t id = launch->init_id;
    if ((!launch->keep_groups && syscall(SYS_setgroups, 0, NULL) < 0) ||
        syscall(SYS_setresgid, id, id, id) < 0 || syscall(SYS_setresuid, id, id, id) < 0)
        syscall(SYS_exit_group, 121);
    if (id != 0 && keep_caps_across_exec() < 0)
        syscall(SYS_exit_group, 126);
    /* Lift every fd we need above the target numbers first, so that placing one
     * cannot overwrite another. */
    long sock = syscall(SYS_fcntl, launch->socket_fd, F_DUPFD, 10);
    long exe = syscall(SYS_fcntl, launch->init_fd, F_DUPFD_CLOEXEC, 10);
    long null = syscall(SYS_fcntl, launch->devnull_fd, F_DUPFD, 10);
    if (sock < 0 || exe < 0 || null < 0)
        syscall(SYS_exit_group, 122);
    for (int fd = 0; fd < 3; fd++)
        if (syscall(SYS_dup3, null, fd, 0) < 0)
            syscall(SYS_exit_group, 123);
    /* Nothing but stdio (/dev/null) and the control socket crosses into the sandbox.
     * The init binary's fd is close-on-exec: execveat closes it once it is loaded. */
    if (syscall(SYS_dup3, sock, 3, 0) < 0 || syscall(SYS_dup3, exe, 4, O_CLOEXEC) < 0)
        syscall(SYS_exit_group, 124);
    if (syscall(SYS_close_range, 5, ~0U, 0) < 0)
        syscall(SYS_exit_group, 125);
    int init_fd = 4;
    static const char *const argv[] = {"codeq-sandbox-init", NULL};
    static const char *const envp[] = {NULL};
    syscall(SYS_execveat, init_fd, "", argv, envp, AT_EMPTY_PATH);
    syscall(SYS_exit_group, 127);
    __builtin_unreachable();
}

/* A new user namespace is owned by the effective uid of the thread that creates it,
 * and that uid, from the parent namespace, holds every capability in it: the kernel
 * zygote, running as CQ_SANDBOX_ZYGOTE_UID with no capability at all, can then enter
 * an enterable sandbox and nothing else (docs/zygote.md). So the creating thread takes
 * that euid for the clone only. It keeps its capabilities and file-system uid 0 the
 * while (SECBIT_NO_SETUID_FIXUP, setfsuid): CLONE_INTO_CGROUP checks write access to
 * the cgroup as the caller. Raw system calls: credentials are per thread in the kernel,
 * and glibc's wrappers would change every thread of the process. */
struct lent_identity {
    long securebits;
    bool lent;
};

static int lend_identity(uint32_t owner, struct lent_identity *saved, struct cq_error *err)
{
    saved->lent = false;
    if (owner == 0)
        return 0;
    saved->securebits = syscall(SYS_prctl, PR_GET_SECUREBITS, 0, 0, 0, 0);
    if (saved->securebits < 0 || syscall(SYS_prctl, PR_SET_SECUREBITS,
                                         saved->securebits | SECBIT_NO_SETUID_FIXUP, 0, 0, 0) < 0)
        return cq_error_sys(err, errno, "securebits for an enterable sandbox");
    if (syscall(SYS_setresuid, -1, owner, -1) < 0) {
        int code = errno;
        syscall(SYS_prctl, PR_SET_SECUREBITS, saved->securebits, 0, 0, 0);
        return cq_error_sys(err, code, "take the zygote's uid for an enterable sandbox");
    }
    syscall(SYS_setfsuid, 0);
    saved->lent = true;
    return 0;
}

static void take_back_identity(const struct lent_identity *saved)
{
    if (!saved->lent)
        return;
    /* Cannot fail: the saved set-user-ID is still 0. A thread left with another euid
     * would create files and sandboxes as it, so a failure here is fatal. */
    if (syscall(SYS_setresuid, -1, 0, -1) < 0 ||
        syscall(SYS_prctl, PR_SET_SECUREBITS, saved->securebits, 0, 0, 0) < 0)
        abort();
}

static pid_t start_init(struct init_launch *launch, struct cq_error *err)
{
    long pid;
    struct lent_identity saved = {0};
    if (lend_identity(launch->owner, &saved, err) < 0)
        return -1;
    if (launch->cgroup_fd >= 0) {
        struct clone_args args = {
            .flags = NAMESPACE_FLAGS | CLONE_NEWCGROUP | CLONE_INTO_CGROUP,
            .exit_signal = SIGCHLD,
            .cgroup = (uint64_t)launch->cgroup_fd,
        };
        pid = syscall(SYS_clone3, &args, sizeof(args));
    } else {
        /* v1 init enters its cgroup namespace once it is in its cgroups; without any,
         * the namespace still hides the cgroup paths of the host. */
        unsigned long more = launch->no_cgroup ? CLONE_NEWCGROUP : 0;
        pid = syscall(SYS_clone, NAMESPACE_FLAGS | more | SIGCHLD, 0, 0, 0, 0);
    }
    if (pid == 0)
        init_child(launch);
    int code = errno;
    take_back_identity(&saved);
    if (pid < 0) {
        if (cq_sandbox_ids_mode() == CQ_SANDBOX_IDS_ROOT)
            return cq_error_sys(err, code, "clone sandbox init");
        /* A normal user's namespace can exist and still be refused more of them (a
         * limit reached, AppArmor's restriction): say which setting decides. */
        char hint[320];
        cq_rootless_userns_hint(code, hint, sizeof(hint));
        return cq_error_set(err, code, "clone sandbox init: %s: %s", strerror(code), hint);
    }
    return (pid_t)pid;
}

static int write_id_maps(pid_t pid, const struct id_layout *ids, struct cq_error *err)
{
    char path[64], map[128];
    snprintf(path, sizeof(path), "/proc/%d/uid_map", pid);
    if (ids->one_id)
        snprintf(map, sizeof(map), "%u %u 1\n", CQ_SANDBOX_USER_UID, ids->user_uid);
    else
        snprintf(map, sizeof(map), "0 %u 1\n%u %u 1\n", ids->root_uid, CQ_SANDBOX_USER_UID,
                 ids->user_uid);
    if (cq_write_file_at(AT_FDCWD, path, map, err) < 0)
        return -1;
    snprintf(path, sizeof(path), "/proc/%d/gid_map", pid);
    if (ids->one_id)
        snprintf(map, sizeof(map), "%u %u 1\n", CQ_SANDBOX_USER_UID, ids->user_gid);
    else
        snprintf(map, sizeof(map), "0 %u 1\n%u %u 1\n", ids->root_gid, CQ_SANDBOX_USER_UID,
                 ids->user_gid);
    return cq_write_file_at(AT_FDCWD, path, map, err);
}

/* A normal user's sandbox (rootless.c): the ids outside are this process's user
 * namespace's. Code runs as the subordinate id, or as the user where there is none or
 * where it works in a --workspace directory of the user's (which only the user's uid
 * may be able to use). */
static int choose_rootless_ids(const struct cq_sandbox_config *cfg, struct id_layout *ids,
                               struct cq_error *err)
{
    bool subordinate = cq_sandbox_ids_mode() == CQ_SANDBOX_IDS_SUBORDINATE;
    *ids = (struct id_layout){.user_uid = CQ_ROOTLESS_SUBID, .user_gid = CQ_ROOTLESS_SUBID};
    ids->root_uid = ids->root_gid = CQ_ROOTLESS_CALLER;
    if (cfg->workspace_dir != NULL) {
        struct stat st;
        if (stat(cfg->workspace_dir, &st) < 0)
            return cq_error_sys(err, errno, "workspace %s", cfg->workspace_dir);
        if (!S_ISDIR(st.st_mode))
            return cq_error_set(err, ENOTDIR, "workspace %s is not a directory",
                                cfg->workspace_dir);
        if (st.st_uid != CQ_ROOTLESS_CALLER && (!subordinate || st.st_uid != CQ_ROOTLESS_SUBID))
            return cq_error_set(err, EPERM,
                                "workspace %s is not yours: as a normal user, sandboxed code "
                                "can act only as you",
                                cfg->workspace_dir);
        if (st.st_uid == CQ_ROOTLESS_SUBID)
            return 0;
        subordinate = false;
    }
    if (!subordinate)
        *ids = (struct id_layout){
            .one_id = true, .user_uid = CQ_ROOTLESS_CALLER, .user_gid = CQ_ROOTLESS_CALLER};
    return 0;
}

/* Host ids for sandboxed code. With a host workspace directory the code acts as the
 * directory's owner (and group), so that it can use it; that owner must not be root. */
static int choose_user_ids(const struct cq_sandbox_config *cfg, struct id_layout *ids,
                           struct cq_error *err)
{
    if (cq_sandbox_ids_mode() != CQ_SANDBOX_IDS_ROOT)
        return choose_rootless_ids(cfg, ids, err);
    *ids = (struct id_layout){.user_uid = HOST_ID_USER, .user_gid = HOST_ID_USER};
    ids->root_uid = ids->root_gid = HOST_ID_ROOT;
    if (cfg->workspace_dir == NULL)
        return 0;
    struct stat st;
    if (stat(cfg->workspace_dir, &st) < 0)
        return cq_error_sys(err, errno, "workspace %s", cfg->workspace_dir);
    if (!S_ISDIR(st.st_mode))
        return cq_error_set(err, ENOTDIR, "workspace %s is not a directory", cfg->workspace_dir);
    if (st.st_uid == 0)
        return cq_error_set(err, EPERM,
                            "workspace %s is owned by root; sandboxed code never runs as host "
                            "root. Give it to an unprivileged owner (e.g. chown %u %s)",
                            cfg->workspace_dir, HOST_ID_USER, cfg->workspace_dir);
    if (st.st_uid == HOST_ID_ROOT)
        return cq_error_set(err, EPERM, "workspace %s is owned by codeq's reserved uid %u",
                            cfg->workspace_dir, HOST_ID_ROOT);
    ids->user_uid = st.st_uid;
    /* The directory's group too, unless it is root's: group root would grant access to
     * group-readable root files of the runtime. */
    if (st.st_gid != 0 && st.st_gid != HOST_ID_ROOT)
        ids->user_gid = st.st_gid;
    return 0;
}

static int build_base_env(struct cq_sandbox *sb, const struct cq_sandbox_config *cfg,
                          struct cq_error *err)
{
    static const char *const defaults[] = {
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME=" CQ_SANDBOX_WORKSPACE,
        "USER=sandbox",
        "LOGNAME=sandbox",
        "SHELL=/bin/sh",
        "LANG=C.UTF-8",
        "TMPDIR=/tmp",
        /* Caches and tool configuration (matplotlib, fontconfig, pip, ...) go to /tmp,
         * so that the workspace holds only what the code itself writes there. */
        "XDG_CACHE_HOME=/tmp/.cache",
        "XDG_CONFIG_HOME=/tmp/.config",
    };
    size_t n = sizeof(defaults) / sizeof(defaults[0]);
    for (const char *const *e = cfg->env; e != NULL && *e != NULL; e++)
        n++;
    sb->env = calloc(n + 1, sizeof(char *));
    if (sb->env == NULL)
        return cq_error_sys(err, ENOMEM, "environment");
    size_t i = 0;
    for (size_t d = 0; d < sizeof(defaults) / sizeof(defaults[0]); d++)
        if ((sb->env[i++] = strdup(defaults[d])) == NULL)
            return cq_error_sys(err, ENOMEM, "environment");
    for (const char *const *e = cfg->env; e != NULL && *e != NULL; e++)
        if ((sb->env[i++] = strdup(*e)) == NULL)
            return cq_error_sys(err, ENOMEM, "environment");
    sb->env_count = i;
    return 0;
}

static void free_sandbox(struct cq_sandbox *sb)
{
    if (sb->workspace_fd >= 0)
        close(sb->workspace_fd);
    if (sb->control_fd >= 0)
        close(sb->control_fd);
    if (sb->init_pid > 0) {
        if (sb->init_pidfd >= 0)
            syscall(SYS_pidfd_send_signal, sb->init_pidfd, SIGKILL, NULL, 0);
        else
            kill(sb->init_pid, SIGKILL);
        /* init is pid 1 of the sandbox: its death makes the kernel kill and reap
         * every other process of the sandbox before init itself can be reaped. */
        while (waitpid(sb->init_pid, NULL, __WALL) < 0 && errno == EINTR)
            ;
    }
    if (sb->init_pidfd >= 0)
        close(sb->init_pidfd);
    /* After init: its network namespace, and with it the sandbox's end of the link,
     * is gone or going; the egress side and the filter are removed here. */
    cq_network_detach(sb);
    cq_egress_detach(&sb->egress);
    cq_cgroup_destroy(&sb->cgroup);
    for (size_t i = 0; sb->env != NULL && i < sb->env_count; i++)
        free(sb->env[i]);
    free(sb->env);
    free(sb);
}

static int await_ready(struct cq_sandbox *sb, struct cq_error *err)
{
    uint8_t buf[1024];
    struct cq_msg_reader r;
    int got = cq_msg_await(sb->control_fd, INIT_READY_TIMEOUT_MS, buf, sizeof(buf), &r, err);
    if (got < 0)
        return cq_error_prefix(err, "sandbox init");
    if (got == 0) {
        int status = 0;
        if (waitpid(sb->init_pid, &status, __WALL | WNOHANG) == sb->init_pid)
            sb->init_pid = 0;
        return cq_error_set(err, ECHILD, "sandbox init exited before it was ready (status %d)",
                            WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    }
    if (r.type == CQ_MSG_READY)
        return 0;
    int code = CQ_EPROTO;
    const char *text = "unexpected message";
    cq_msg_error_fields(&r, &code, &text);
    return cq_error_set(err, code, "sandbox setup failed: %s", text);
}

static int send_cgroup(struct cq_sandbox *sb, const char *name,
                       const struct cq_sandbox_limits *limits, struct cq_error *err)
{
    int fds[CQ_CG_NCONTROLLERS];
    if (cq_cgroup_create(&sb->cgroup, name, limits, err) < 0 ||
        cq_cgroup_v1_open_tasks(&sb->cgroup, fds, err) < 0)
        return -1;
    int rc = cq_msg_send_type(sb->control_fd, CQ_MSG_CGROUP, fds, (size_t)sb->cgroup.ndirs, err);
    for (int c = 0; c < sb->cgroup.ndirs; c++)
        close(fds[c]);
    if (rc < 0)
        return cq_error_prefix(err, "send the cgroup to sandbox init");
    return 0;
}

/* cfg as the network sees it: with the egress namespace named, the operator's or, when
 * none is, codeq's own (pasta, sandbox/uplink.c), made for the first sandbox that needs
 * it; path holds that one's name. */
static int network_config(const struct cq_sandbox_config *cfg, struct cq_sandbox_config *net,
                          char *path, size_t len, struct cq_error *err)
{
    *net = *cfg;
    if (cfg->network == CQ_NETWORK_NONE || cfg->egress_netns != NULL)
        return 0;
    if (cq_uplink_netns(path, len, err) < 0)
        return -1;
    net->egress_netns = path;
    return 0;
}

int cq_sandbox_create(const struct cq_sandbox_config *cfg, struct cq_sandbox **out,
                      struct cq_error *err)
{
    if (cq_sandbox_config_validate(cfg, err) < 0)
        return -1;
    pthread_once(&init_binary_once, find_init_binary);
    if (init_binary.fd < 0) {
        if (err != NULL)
            *err = init_binary.error;
        return -1;
    }
    if (cq_rootless_check(err) < 0)
        return -1;
    /* As a normal user every sandbox's namespace is the user's already, and the zygote
     * would be the user too: nothing to lend. Not built for that case yet. */
    if (cfg->enterable && cq_sandbox_ids_mode() != CQ_SANDBOX_IDS_ROOT)
        return cq_error_set(err, CQ_EINVALID, "enterable sandboxes need codeq to run as root");
    struct id_layout ids;
    if (choose_user_ids(cfg, &ids, err) < 0)
        return -1;
    struct cq_sandbox_config net_cfg;
    char uplink[64];
    if (network_config(cfg, &net_cfg, uplink, sizeof(uplink), err) < 0)
        return -1;

    /* Declared before the first goto: cleanup handlers must never see garbage. */
    cq_autoclose int init_end = -1;
    cq_autoclose int sync_read = -1;
    cq_autoclose int sync_write = -1;
    cq_autoclose int devnull = -1;
    cq_autofree struct cq_msg_writer *config_msg = malloc(sizeof(*config_msg));
    struct cq_sandbox *sb = calloc(1, sizeof(*sb));
    if (sb == NULL || config_msg == NULL) {
        free(sb);
        return cq_error_sys(err, ENOMEM, "allocate sandbox");
    }
    sb->control_fd = -1;
    sb->init_pidfd = -1;
    sb->workspace_fd = -1;
    cq_egress_init(&sb->egress);
    sb->enterable = cfg->enterable;
    sb->user_uid = ids.user_uid;
    sb->user_gid = ids.user_gid;
    for (int c = 0; c < CQ_CG_NCONTROLLERS; c++)
        sb->cgroup.dirfd[c] = -1;
    sb->limits = cfg->limits;
    if (build_base_env(sb, cfg, err) < 0)
        goto fail;

    int version; /* 0: none (rootless.c) */
    if (cq_rootless_cgroup_version(&version, err) < 0)
        goto fail;
    /* The plan is computed before anything is started, so a bad configuration costs
     * no processes. */
    if (cq_rootfs_plan_write(cfg, ids.one_id ? CQ_SANDBOX_USER_UID : 0, config_msg, err) < 0)
        goto fail;
    struct cq_init_flags flags = {.join_cgroup = version == 1,
                                  .keep_groups = cq_rootless_setgroups_denied()};
    cq_msg_put(config_msg, CQ_F_INIT_FLAGS, &flags, sizeof(flags));

    char name[64];
    snprintf(name, sizeof(name), "%d-%u", getpid(), atomic_fetch_add(&sandbox_counter, 1));
    if (version == 2 && cq_cgroup_create(&sb->cgroup, name, &cfg->limits, err) < 0)
        goto fail;

    int sv[2], sync[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
        cq_error_sys(err, errno, "socketpair");
        goto fail;
    }
    sb->control_fd = sv[0];
    init_end = sv[1];
    if (pipe2(sync, O_CLOEXEC) < 0) {
        cq_error_sys(err, errno, "pipe");
        goto fail;
    }
    sync_read = sync[0];
    sync_write = sync[1];
    devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (devnull < 0) {
        cq_error_sys(err, errno, "open /dev/null");
        goto fail;
    }

    struct init_launch launch = {
        .init_fd = init_binary.fd,
        .socket_fd = init_end,
        .sync_fd = sync_read,
        .sync_write = sync_write,
        .devnull_fd = devnull,
        .cgroup_fd = version == 2 ? sb->cgroup.dirfd[0] : -1,
        .no_cgroup = version == 0,
        .init_id = ids.one_id ? CQ_SANDBOX_USER_UID : 0,
        .keep_groups = cq_rootless_setgroups_denied(),
        .owner = cfg->enterable ? CQ_SANDBOX_ZYGOTE_UID : 0,
    };
    pid_t pid = start_init(&launch, err);
    if (pid < 0)
        goto fail;
    sb->init_pid = pid;
    sb->init_pidfd = (int)syscall(SYS_pidfd_open, pid, 0); /* -1 on old kernels: kill(2) then */
    cq_close_reset(&init_end);
    cq_close_reset(&sync_read);

    if (write_id_maps(pid, &ids, err) < 0) {
        cq_error_prefix(err, "sandbox id maps");
        goto fail;
    }
    if (write(sync_write, "g", 1) != 1) {
        cq_error_sys(err, errno, "release sandbox init");
        goto fail;
    }
    if (cq_msg_send(sb->control_fd, config_msg, NULL, 0, err) < 0) {
        cq_error_prefix(err, "send configuration to sandbox init");
        goto fail;
    }
    /* v1: the cgroup is made while init builds the root, then handed over. */
    if (version == 1 && send_cgroup(sb, name, &cfg->limits, err) < 0)
        goto fail;
    /* The egress slot and its filter, in a thread, while init builds the root. */
    if (cfg->network != CQ_NETWORK_NONE && cq_egress_begin(&sb->egress, &net_cfg, err) < 0)
        goto fail;
    if (await_ready(sb, err) < 0)
        goto fail;
    /* Through init's root, before any sandboxed code has run: nothing can have been
     * planted on this path yet, and the root above /workspace is read-only. */
    char ws_path[64];
    snprintf(ws_path, sizeof(ws_path), "/proc/%d/root" CQ_SANDBOX_WORKSPACE, pid);
    sb->workspace_fd = open(ws_path, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (sb->workspace_fd < 0) {
        cq_error_sys(err, errno, "open the sandbox's workspace");
        goto fail;
    }
    /* Before any process is spawned: sandboxed code never sees the network half-made. */
    if (cfg->network != CQ_NETWORK_NONE && cq_network_attach(sb, &net_cfg, pid, err) < 0)
        goto fail;
    atomic_store(&sb->alive, true);
    *out = sb;
    return 0;
fail:
    free_sandbox(sb);
    return -1;
}

int cq_sandbox_zygote_files(int *init_fd, char *library, size_t len, struct cq_error *err)
{
    pthread_once(&init_binary_once, find_init_binary);
    if (init_binary.fd < 0) {
        if (err != NULL)
            *err = init_binary.error;
        return -1;
    }
    /* The library is built and installed beside the init binary (CMakeLists.txt). */
    char self[64], path[PATH_MAX];
    snprintf(self, sizeof(self), "/proc/self/fd/%d", init_binary.fd);
    ssize_t n = readlink(self, path, sizeof(path) - 1);
    if (n <= 0)
        return cq_error_sys(err, errno, "where codeq-sandbox-init is");
    path[n] = '\0';
    char *slash = strrchr(path, '/');
    if (slash != NULL)
        *slash = '\0';
    if ((size_t)snprintf(library, len, "%s/libcodeq-adopt.so", path) >= len)
        return cq_error_set(err, ENAMETOOLONG, "path of libcodeq-adopt.so");
    if (access(library, R_OK) < 0)
        return cq_error_sys(err, errno, "%s", library);
    *init_fd = fcntl(init_binary.fd, F_DUPFD_CLOEXEC, 3);
    if (*init_fd < 0)
        return cq_error_sys(err, errno, "codeq-sandbox-init");
    return 0;
}

const char *const *cq_sandbox_environ(const struct cq_sandbox *sb)
{
    return (const char *const *)sb->env;
}

void cq_sandbox_kill(struct cq_sandbox *sb)
{
    if (sb == NULL)
        return;
    atomic_store(&sb->alive, false);
    /* init is pid 1 of the sandbox: the kernel takes every other process with it. The
     * pidfd cannot hit a recycled pid; init stays a zombie until destroy reaps it. */
    if (sb->init_pidfd >= 0)
        syscall(SYS_pidfd_send_signal, sb->init_pidfd, SIGKILL, NULL, 0);
    else if (sb->init_pid > 0)
        kill(sb->init_pid, SIGKILL);
}

bool cq_sandbox_alive(struct cq_sandbox *sb)
{
    if (sb == NULL || !atomic_load(&sb->alive))
        return false;
    /* init exits when it loses its control socket or is killed; either way the
     * socket then reports a hang-up. */
    struct pollfd pfd = {.fd = sb->control_fd, .events = 0};
    if (poll(&pfd, 1, 0) > 0 && (pfd.revents & (POLLHUP | POLLERR))) {
        atomic_store(&sb->alive, false);
        return false;
    }
    return true;
}

void cq_sandbox_destroy(struct cq_sandbox *sb)
{
    if (sb == NULL)
        return;
    atomic_store(&sb->alive, false);
    free_sandbox(sb);
}

int cq_sandbox_stats(struct cq_sandbox *sb, struct cq_sandbox_stats *stats, struct cq_error *err)
{
    return cq_cgroup_stats(&sb->cgroup, stats, err);
}

int cq_sandbox_net_stats(struct cq_sandbox *sb, struct cq_sandbox_net_stats *st,
                         struct cq_error *err)
{
    return cq_egress_stats(&sb->egress, &st->bytes_sent, &st->bytes_received, err);
}

int cq_sandbox_workspace_fd(struct cq_sandbox *sb)
{
    return sb->workspace_fd;
}

void cq_sandbox_user_ids(struct cq_sandbox *sb, uint32_t *uid, uint32_t *gid)
{
    *uid = sb->user_uid;
    *gid = sb->user_gid;
}
