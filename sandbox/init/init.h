/* sandbox/init/init.h - internals of codeq-sandbox-init, the program that runs as
 * pid 1 of every sandbox. It is statically linked, small, and trusted: sandboxed
 * code never holds a channel to it and runs under a different uid, so it can
 * neither signal it (pid 1 ignores signals from its namespace) nor read its memory.
 */
#ifndef CQ_SANDBOX_INIT_H
#define CQ_SANDBOX_INIT_H

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

/* shim.c: attaches a seccomp BPF program to the calling thread. -1 with errno, not a
 * cq_error: it also runs in the pre-exec child (see the exceptions in common/error.h). */
int init_install_filter(const unsigned char *bpf, unsigned long len);

/* shim.c: runs in a fresh child of init (pid 1 of a new pid namespace and in a new
 * mount namespace); never returns. fds[0] is the status socket, then the stdio fds
 * that params marks as present. */
void init_run_shim(const struct init_config *cfg, const struct cq_msg_reader *spawn_msg, int *fds,
                   size_t nfds, int control_fd, int signal_fd) __attribute__((noreturn));

#endif
