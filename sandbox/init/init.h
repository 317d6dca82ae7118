/* sandbox/init/init.h - internals of codeq-sandbox-init, the program that runs as
 * pid 1 of every sandbox. It is statically linked, small, and trusted: sandboxed
 * code never holds a channel to it and runs under a different uid, so it can
 * neither signal it (pid 1 ignores signals from its namespace) nor read its memory.
 */
#ifndef CQ_SANDBOX_INIT_H
#define CQ_SANDBOX_INIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "common/error.h"
#include "sandbox/protocol.h"

#define INIT_CONTROL_FD 3

struct init_mount {
    struct cq_mount_op op;
    const char *src;
    const char *dst;
};

struct init_config {
    const char *hostname;
    struct cq_ids ids;
    struct cq_init_flags flags;
    struct init_mount *mounts;
    size_t n_mounts;
};

/* rootfs.c: build the new root from the plan and pivot into it. */
int init_build_root(const struct init_config *cfg, struct cq_error *err);
/* rootfs.c: in a process's own mount namespace, mount /proc of its own pid
 * namespace with the sensitive entries masked. */
int init_mount_process_proc(struct cq_error *err);

#define MAX_ARGS 4096

#define EXEC_ERROR_FD 3

struct spawn_request {
    const char *argv[MAX_ARGS + 1];
    const char *envp[MAX_ARGS + 1];
    const char *cwd;
    struct cq_spawn_params params;
};

/* become.c: parses a SPAWN message into req (pointing into the message). Errors are
 * EPROTO, not CQ_EPROTO: the supervisor appends strerror(code) to what a shim reports. */
int init_parse_spawn(const struct cq_msg_reader *msg, struct spawn_request *req,
                     struct cq_error *err);

/* become.c: from a privileged process with its stdio in place, becomes sandboxed code:
 * signals reset, req's resource limits, umask, the sandbox user (ids) with no
 * capability and no_new_privs, req's working directory, the process seccomp filter.
 * -1 with errno, and *step naming what failed. */
int init_become_user(const struct cq_ids *ids, bool keep_groups, const struct spawn_request *req,
                     const char **step);

/* become.c: attaches a seccomp BPF program to the calling thread. -1 with errno, not a
 * cq_error: it also runs in the pre-exec child (see the exceptions in common/error.h). */
int init_install_filter(const unsigned char *bpf, unsigned long len);

/* shim.c: runs in a fresh child of init (pid 1 of a new pid namespace and in a new
 * mount namespace); never returns. fds[0] is the status socket, then the stdio fds
 * that params marks as present. */
void init_run_shim(const struct init_config *cfg, const struct cq_msg_reader *spawn_msg, int *fds,
                   size_t nfds, int control_fd, int signal_fd) __attribute__((noreturn));

/* shim.c: the shim of a process forked into the sandbox by a kernel zygote
 * (docs/zygote.md); status socket and the channel to the process given. Never returns. */
void init_run_adopted_shim(int status_fd, int channel_fd) __attribute__((noreturn));

#endif
