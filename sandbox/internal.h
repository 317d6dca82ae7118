/* sandbox/internal.h - shared between the library's own files (not public). */
#ifndef CQ_SANDBOX_INTERNAL_H
#define CQ_SANDBOX_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <sys/types.h>
#include "sandbox/cgroup.h"
#include "sandbox/egress.h"
#include "sandbox/protocol.h"
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
    bool enterable;              /* its user namespace is the zygote's to enter */
};

/* A process of the sandbox, started by init (process.c) or adopted (adopt.c). */
struct cq_process {
    struct cq_sandbox *sb;
    int status_fd;
    int stdin_fd, stdout_fd, stderr_fd; /* our ends of CQ_STDIO_PIPE pipes, or -1 */
    uint64_t output_limit;
    uint64_t oom_before, pids_before;
    atomic_bool exited; /* read by cq_process_kill on other threads */
    struct cq_exit_status exit;
};

/* process.c: validates req and makes the process object with its status socket and
 * stdio; theirs gets the ends for the shim's side, [status, stdin?, stdout?, stderr?]
 * (*ntheirs of them, the caller closes them once handed on), and params the spawn's
 * parameters. */
int cq_process_open(struct cq_sandbox *sb, const struct cq_spawn *req, struct cq_process **out,
                    int theirs[4], size_t *ntheirs, struct cq_spawn_params *params,
                    struct cq_error *err);
/* process.c: puts the process's environment (the sandbox's, the request's, PWD) and
 * working directory into msg; -1 when it overflowed. */
int cq_process_environment(const struct cq_sandbox *sb, const struct cq_spawn *req,
                           struct cq_msg_writer *msg);
/* process.c: waits for the shim's STARTED (or its failure). */
int cq_process_started(struct cq_process *p, const char *program, struct cq_error *err);

/* sandbox/network.c: the egress link, filter and resolver of a networked sandbox, made
 * before any process runs; detach stops the resolver (then cq_egress_detach). */
int cq_network_attach(struct cq_sandbox *sb, const struct cq_sandbox_config *cfg, pid_t init_pid,
                      struct cq_error *err);
void cq_network_detach(struct cq_sandbox *sb);

int cq_env_entry_validate(const char *entry, struct cq_error *err);

#endif
