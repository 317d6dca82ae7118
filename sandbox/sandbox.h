/* sandbox/sandbox.h - the public API of codeq's sandbox: one session's isolated world.
 *
 * A sandbox is long-lived: create it once, start processes in it over time (a
 * Python kernel, a Node kernel, shell commands, background tasks), all sharing its
 * file system, limits and network; destroy it at the end. Every process runs as an
 * unprivileged user, without capabilities, under seccomp, in:
 *   - new user, pid, mount, network, IPC, UTS and cgroup namespaces (per sandbox);
 *   - a root made of read-only binds of the runtime, with a private /tmp, /dev/shm
 *     and a size- and inode-limited /workspace, no host path besides the runtime;
 *   - a cgroup with memory (swap included), pids and CPU limits;
 *   - its own pid namespace inside the sandbox (per process), so its tree can be
 *     timed out or stopped as a whole.
 *
 * Runs as root, or as a normal user after cq_sandbox_setup_process (below, and
 * docs/security.md, "Running as a normal user"). Thread safety:
 * cq_sandbox_spawn and cq_process_kill may be called from any thread; a given
 * cq_process is waited on by one thread at a time.
 *
 * Errors: every fallible call returns 0, or -1 with err filled (common/error.h).
 */
#ifndef CQ_SANDBOX_SANDBOX_H
#define CQ_SANDBOX_SANDBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include "common/error.h"

/* Defaults (also printed by `codeq sandbox --help` and in docs/configuration.md). */
#define CQ_SANDBOX_DEFAULT_MEMORY     (512ULL << 20)
#define CQ_SANDBOX_DEFAULT_PIDS       256
#define CQ_SANDBOX_DEFAULT_CPUS       1.0
#define CQ_SANDBOX_DEFAULT_DISK       (256ULL << 20)
#define CQ_SANDBOX_DEFAULT_INODES     65536
#define CQ_SANDBOX_DEFAULT_TMP        (64ULL << 20)
#define CQ_SANDBOX_DEFAULT_OPEN_FILES 1024
#define CQ_SANDBOX_DEFAULT_TIMEOUT_MS (60ULL * 1000)
#define CQ_SANDBOX_DEFAULT_OUTPUT     (16ULL << 20)

/* In-sandbox identity of sandboxed code, and where it lives. */
#define CQ_SANDBOX_USER_UID  1000
#define CQ_SANDBOX_WORKSPACE "/workspace"

struct cq_sandbox_limits {
    uint64_t memory_bytes;     /* RAM + swap of all its processes and tmpfs pages */
    uint64_t pids;             /* processes and threads, codeq's init and shims included */
    double cpus;               /* CPU bandwidth in cores (cgroup quota) */
    uint64_t workspace_bytes;  /* size of the private /workspace tmpfs */
    uint64_t workspace_inodes; /* files and directories in /workspace */
    uint64_t tmp_bytes;        /* size of /tmp and of /dev/shm, each */
    uint64_t file_size_bytes;  /* largest file a process may write (RLIMIT_FSIZE) */
    uint64_t open_files;       /* open fds per process (RLIMIT_NOFILE) */
};

enum cq_network_mode {
    CQ_NETWORK_NONE = 0,  /* a network namespace with only loopback */
    CQ_NETWORK_PUBLIC,    /* public addresses, through egress_netns (docs/security.md) */
    CQ_NETWORK_ALLOWLIST, /* listed destinations only, names through codeq's resolver */
};

struct cq_netpolicy; /* sandbox/netpolicy.h */

/* A host directory made visible read-only (and nosuid, nodev) inside the sandbox,
 * e.g. the code of codeq's language kernels. */
struct cq_sandbox_bind {
    const char *host_path;    /* absolute */
    const char *sandbox_path; /* absolute, below /opt/ */
};

#define CQ_SANDBOX_MAX_BINDS 8

struct cq_sandbox_config {
    struct cq_sandbox_limits limits;
    enum cq_network_mode network;
    /* A host directory bound read-write at /workspace instead of a private tmpfs.
     * Sandboxed code acts as the directory's owner, who must not be root. The
     * workspace size and inode limits do not apply to it. NULL: private tmpfs. */
    const char *workspace_dir;
    /* NAME=VALUE entries added to every process's environment, NULL-terminated.
     * Nothing of the host's environment is passed in. May be NULL. */
    const char *const *env;
    const char *hostname; /* default "codeq" */
    /* PUBLIC, ALLOWLIST: the network namespace (a file: /run/netns/NAME, /proc/PID/ns/net) the
     * sandbox's traffic leaves through; required for now. codeq adds a link, an
     * nftables table and IPv4 forwarding there, and removes the first two at destroy. */
    const char *egress_netns;
    /* PUBLIC, ALLOWLIST: the upstream resolver (an IP address) that codeq's resolver
     * asks from the egress namespace; the sandbox's /etc/resolv.conf names codeq's.
     * NULL: the host's first nameserver in /etc/resolv.conf, asked from the egress
     * namespace too (a loopback one is that namespace's loopback: SERVFAIL unless a
     * resolver listens there). */
    const char *dns;
    /* ALLOWLIST: the destinations (DEST, sandbox/netpolicy.h) the sandbox may reach,
     * n_allow of them (at most CQ_NET_MAX_RULES). The caller has admitted them against
     * its operator's policy (cq_netpolicy_admit); the sandbox admits them again against
     * netpolicy and refuses what does not pass. n_allow 0: the sandbox reaches nothing
     * and its resolver answers every name NXDOMAIN until cq_sandbox_network_allow. */
    const char *const *allow;
    size_t n_allow;
    /* PUBLIC, ALLOWLIST: the operator's policy (private ranges opened, deny rules, rate
     * and connection limits); NULL: cq_netpolicy_init()'s defaults. Read at create only. */
    const struct cq_netpolicy *netpolicy;
    const struct cq_sandbox_bind *binds; /* n_binds entries, at most CQ_SANDBOX_MAX_BINDS */
    size_t n_binds;
    /* Root only: the sandbox's user namespace is owned by CQ_SANDBOX_ZYGOTE_UID, so that
     * a process of that host uid, which holds no capability of its own, may enter it
     * (setns) to fork a preloaded kernel into it (docs/zygote.md). */
    bool enterable;
};

/* The host uid of codeq's kernel zygotes: no account uses it, and it owns nothing on
 * the host but the user namespaces of sandboxes created enterable. */
#define CQ_SANDBOX_ZYGOTE_UID 1600002000u

/* --- running as a normal user ----------------------------------------------------- */

/* How sandboxes map ids, decided by cq_sandbox_setup_process. */
enum cq_sandbox_ids {
    CQ_SANDBOX_IDS_ROOT = 0,    /* root: two host ids no account uses */
    CQ_SANDBOX_IDS_SUBORDINATE, /* a normal user with /etc/subuid and /etc/subgid: code runs
                                 * as the user's first subordinate id */
    CQ_SANDBOX_IDS_OWN,         /* a normal user without: code runs as the user */
    CQ_SANDBOX_IDS_NONE,        /* a normal user who cannot make user namespaces */
};

/* Call first thing in main, while the process has one thread. It raises the soft limit
 * on open files (cq_raise_open_files_limit: a sandbox holds ~11 descriptors in the
 * process that made it); sandboxed processes get their own limit
 * (cq_sandbox_limits.open_files). As root it does nothing more. As a normal user it moves the
 * process into a user namespace of its own, where it is root over its own ids (and its subordinate
 * ids, through newuidmap/newgidmap, when /etc/subuid and /etc/subgid give it some): files it writes
 * stay the user's. It never fails the program: when no namespace can be made, cq_sandbox_create
 * says why. */
void cq_sandbox_setup_process(void);

enum cq_sandbox_ids cq_sandbox_ids_mode(void);

/* Why subordinate ids the user has were not used (e.g. newuidmap missing), or NULL. */
const char *cq_sandbox_ids_note(void);

/* As a normal user: 0 when this process can make sandboxes, or -1 with the reason
 * cq_sandbox_create would give (no user namespace; no delegated cgroup and no
 * CODEQ_ALLOW_UNLIMITED=1), for a server to say at start. Root: 0 without looking. */
int cq_sandbox_rootless_ready(struct cq_error *err);

/* Limits a sandbox may run without (bits of cq_sandbox_unenforced). */
enum {
    CQ_UNENFORCED_MEMORY = 1u << 0, /* memory and swap (cgroup) */
    CQ_UNENFORCED_CPU = 1u << 1,    /* CPU bandwidth (cgroup) */
};

/* Which limits this process's sandboxes do not enforce: 0, except for a normal user
 * without a delegated cgroup who allowed it with CODEQ_ALLOW_UNLIMITED=1 (then memory
 * and cpu; the pids limit then holds through RLIMIT_NPROC, which the kernel counts per
 * sandbox, though no pids_limit_hit is reported). Decides on first call (it looks at
 * the cgroups then). With no cgroup and no such permission it returns 0, and
 * cq_sandbox_create fails saying both ways out. */
unsigned cq_sandbox_unenforced(void);

/* "memory, cpu" for the bits of mask, into buf. */
void cq_sandbox_unenforced_text(unsigned mask, char *buf, size_t len);

/* Fills cfg with the defaults above. */
void cq_sandbox_config_init(struct cq_sandbox_config *cfg);

/* Checks limits and names; a clear message for the first problem found. */
int cq_sandbox_config_validate(const struct cq_sandbox_config *cfg, struct cq_error *err);

struct cq_sandbox;

/* Creates a sandbox ready to run processes. */
int cq_sandbox_create(const struct cq_sandbox_config *cfg, struct cq_sandbox **out,
                      struct cq_error *err);

/* Kills every process of the sandbox and removes its cgroups; nothing of it is left
 * on the host afterwards (a --workspace directory keeps its files). NULL is a no-op. */
void cq_sandbox_destroy(struct cq_sandbox *sb);

/* ALLOWLIST: gives a sandbox created with n_allow 0 (a warm one, from a pool) its
 * allowlist, admitted against its netpolicy, in one nftables transaction; its resolver
 * answers the listed names from then on. Once only: refused (CQ_EINVALID) on a second
 * call, with n 0, and in any other mode. */
int cq_sandbox_network_allow(struct cq_sandbox *sb, const char *const *allow, size_t n,
                             struct cq_error *err);

/* Kills every process of the sandbox now, without freeing it: calls in progress on
 * other threads return (their processes are gone) and later spawns fail. Safe from
 * any thread; cq_sandbox_destroy must still follow. */
void cq_sandbox_kill(struct cq_sandbox *sb);

/* False once the sandbox's init has gone (destroyed, or killed from outside). */
bool cq_sandbox_alive(struct cq_sandbox *sb);

/* An O_PATH fd of the sandbox's /workspace, opened when the sandbox was created,
 * for the host side to work on files there. Sandboxed code controls everything below
 * it: resolve paths with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | ...), never
 * by name. Owned by the sandbox; valid until cq_sandbox_destroy. */
int cq_sandbox_workspace_fd(struct cq_sandbox *sb);

/* The host uid and gid that sandboxed code runs as: files the host creates in the
 * workspace are given to them, so that the code can use them. */
void cq_sandbox_user_ids(struct cq_sandbox *sb, uint32_t *uid, uint32_t *gid);

struct cq_sandbox_stats {
    uint64_t memory_current_bytes;
    uint64_t memory_peak_bytes;
    uint64_t memory_limit_bytes;
    uint64_t oom_kills; /* processes killed by the kernel's OOM killer so far */
    uint64_t pids_current;
    uint64_t pids_limit_hits; /* forks refused because of the pids limit */
    uint64_t cpu_usage_us;    /* CPU time of all its processes so far (0: unknown) */
};

int cq_sandbox_stats(struct cq_sandbox *sb, struct cq_sandbox_stats *stats, struct cq_error *err);

/* Network traffic of the sandbox so far: bytes of the IP packets (IPv4 and IPv6, IP
 * headers included, link headers not) that its egress filter let out and in. Refused
 * packets and those dropped by the rate limit are not counted; DNS to a resolver in the
 * egress namespace is not either (it is not forwarded). Zeros in mode NONE. Cheap (two
 * netlink round trips): read it before and after a call for the call's share. */
struct cq_sandbox_net_stats {
    uint64_t bytes_sent;
    uint64_t bytes_received;
};

int cq_sandbox_net_stats(struct cq_sandbox *sb, struct cq_sandbox_net_stats *st,
                         struct cq_error *err);

enum cq_stdio_mode {
    CQ_STDIO_NULL = 0, /* /dev/null */
    CQ_STDIO_PIPE,     /* a pipe to the caller: drained by cq_process_wait */
    CQ_STDIO_FD,       /* the caller's fd, passed in as is (the caller keeps its copy) */
};

struct cq_spawn {
    const char *const *argv; /* argv[0] is looked up in the sandbox's PATH */
    const char *const *env;  /* NAME=VALUE on top of the sandbox's environment; may be NULL */
    const char *cwd;         /* inside the sandbox; default /workspace */
    uint64_t timeout_ms;     /* wall clock; on expiry the whole tree is killed. 0: none */
    enum cq_stdio_mode stdin_mode, stdout_mode, stderr_mode;
    int stdin_fd, stdout_fd, stderr_fd; /* for CQ_STDIO_FD */
    /* Bytes of stdout+stderr passed to the caller by cq_process_wait; the rest is
     * read and counted but discarded. 0: the default (16M). */
    uint64_t output_limit_bytes;
};

/* Fills req with defaults: NULL stdio, no timeout, default output limit. */
void cq_spawn_init(struct cq_spawn *req, const char *const *argv);

struct cq_process_report {
    int exit_code;   /* -1 when killed by a signal */
    int signal;      /* the terminating signal, or 0 */
    bool timed_out;  /* killed by the spawn's timeout */
    bool oom_killed; /* the kernel's OOM killer killed the process or one of its tree */
    bool killed;     /* stopped by cq_process_kill */
    bool output_truncated;
    bool pids_limit_hit; /* a fork in the sandbox was refused while it ran */
    uint64_t wall_ms;
    uint64_t cpu_ms;            /* user + system of the whole tree */
    uint64_t peak_memory_bytes; /* largest resident set of any process in the tree */
    uint64_t output_bytes;      /* stdout + stderr produced, including discarded bytes */
};

struct cq_process;

/* Starts a process and returns once it has been exec'd. A program that cannot be
 * executed is an error (err->code ENOENT, EACCES, ...), as is a sandbox that
 * cannot fork (EAGAIN: its pids limit). */
int cq_sandbox_spawn(struct cq_sandbox *sb, const struct cq_spawn *req, struct cq_process **out,
                     struct cq_error *err);

/* The write end of a CQ_STDIO_PIPE stdin, or -1. Owned by the process object;
 * close it with cq_process_close_stdin to signal end of input. */
int cq_process_stdin_fd(struct cq_process *p);
void cq_process_close_stdin(struct cq_process *p);

/* Receives output as it arrives; stream is 1 (stdout) or 2 (stderr). */
typedef void (*cq_output_fn)(void *ctx, int stream, const char *data, size_t len);

struct cq_wait_io {
    cq_output_fn on_output; /* may be NULL: output is counted and dropped */
    void *ctx;
    /* Copied into a CQ_STDIO_PIPE stdin as it becomes readable, then stdin is
     * closed; -1 for none. Lets a caller forward its own stdin without handing a
     * host terminal to sandboxed code. */
    int input_fd;
};

/* Drains output, waits until the whole process tree is gone, and reports. */
int cq_process_wait(struct cq_process *p, const struct cq_wait_io *io,
                    struct cq_process_report *report, struct cq_error *err);

/* Sends signal sig to the process itself (not its tree), e.g. SIGINT to interrupt a
 * language kernel. Safe from another thread. Returns 0, or -1 if it had ended. */
int cq_process_signal(struct cq_process *p, int sig);

/* An fd that becomes readable (POLLIN or POLLHUP) once the process's tree has ended
 * and cq_process_wait will not block on it (with CQ_STDIO_FD or NULL output). */
int cq_process_status_fd(struct cq_process *p);

/* Kills the process and its whole tree; cq_process_wait then reports killed.
 * Safe from another thread. Returns 0, or -1 if it had already ended. */
int cq_process_kill(struct cq_process *p);

/* Frees the object; kills the tree first if it is still running. */
void cq_process_free(struct cq_process *p);

/* --- kernels forked into a sandbox by a zygote (docs/zygote.md) --------------------- */

/* A pidfd of the sandbox's init, the caller's to close, that the zygote enters the
 * sandbox's namespaces through (setns). Only for a sandbox created enterable. */
int cq_sandbox_entry_fd(struct cq_sandbox *sb, struct cq_error *err);

/* Moves the host process pid into the sandbox's cgroup: the zygote's child, before it
 * forks the kernel, so that every page the kernel writes is the sandbox's. */
int cq_sandbox_attach(struct cq_sandbox *sb, pid_t pid, struct cq_error *err);

/* The process object of a kernel the caller has a zygote fork into the sandbox, as
 * cq_sandbox_spawn makes for one init forks (req->argv is not used; env, cwd,
 * timeout, stdio and the output limit are). theirs gets the fds for the zygote, the
 * caller's to close once handed on: [0] the status socket of the adopted shim, then
 * the process's stdin, stdout and stderr (-1 for a stream that is CQ_STDIO_NULL).
 * Then cq_process_await_adopted; cq_process_wait and the rest work as for a spawn. */
int cq_sandbox_adopt(struct cq_sandbox *sb, const struct cq_spawn *req, int theirs[4],
                     struct cq_process **out, struct cq_error *err);

/* The host files a zygote needs: an O_PATH fd of codeq-sandbox-init (the caller's to
 * close; the zygote's child execs it as the adopted shim) and the path of
 * libcodeq-adopt.so beside it. */
int cq_sandbox_zygote_files(int *init_fd, char *library, size_t len, struct cq_error *err);

/* The environment every process of the sandbox starts with (defaults and its
 * configuration's), NAME=VALUE, NULL-terminated; valid while the sandbox is. */
const char *const *cq_sandbox_environ(const struct cq_sandbox *sb);

/* Waits until the adopted shim supervises the process (its STARTED), or its failure. */
int cq_process_await_adopted(struct cq_process *p, struct cq_error *err);

#endif
