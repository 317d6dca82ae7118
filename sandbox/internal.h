/* sandbox/internal.h - shared between the library's own files (not public). */
#ifndef CQ_SANDBOX_INTERNAL_H
#define CQ_SANDBOX_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <sys/types.h>
#include "sandbox/cgroup.h"
#include "sandbox/egress.h"
#include "sandbox/sandbox.h"

struct cq_sandbox {
    int control_fd; /* SOCK_SEQPACKET to init */
    pid_t init_pid; /* our child (CLONE_PARENT), pid 1 of the sandbox */
    int init_pidfd; /* for a kill that cannot hit a recycled pid */
    atomic_bool alive;
    struct cq_cgroup cgroup;
    struct cq_sandbox_limits limits;
    char **env; /* defaults + configuration, NAME=VALUE, NULL-terminated */
    size_t env_count;
    int workspace_fd;            /* O_PATH of /workspace, opened before any code ran */
    uint32_t user_uid, user_gid; /* host ids of sandboxed code */
    struct cq_egress egress;     /* network mode PUBLIC: its link and filter */
    struct cq_sandbox_net *net;  /* PUBLIC, ALLOWLIST: resolver and grant (network.c) */
};

/* sandbox/network.c: the egress link, filter and resolver of a networked sandbox, made
 * before any process runs; detach stops the resolver (then cq_egress_detach). */
int cq_network_attach(struct cq_sandbox *sb, const struct cq_sandbox_config *cfg, pid_t init_pid,
                      struct cq_error *err);
void cq_network_detach(struct cq_sandbox *sb);

int cq_env_entry_validate(const char *entry, struct cq_error *err);

#endif
