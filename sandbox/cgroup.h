/* sandbox/cgroup.h - the cgroup of one sandbox (private to sandbox/).
 *
 * Detected once per process: cgroup v1 (one hierarchy per controller; used when the
 * memory controller is mounted as v1, as on hybrid hosts) or v2 (unified). Sandbox
 * cgroups are created under "<the supervisor's own cgroup>/codeq", so a supervisor
 * that is itself limited (a container, a systemd unit) keeps its sandboxes inside
 * its own limits.
 */
#ifndef CQ_SANDBOX_CGROUP_H
#define CQ_SANDBOX_CGROUP_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include "common/error.h"
#include "sandbox/sandbox.h"

enum cq_cgroup_controller { CQ_CG_MEMORY, CQ_CG_PIDS, CQ_CG_CPU, CQ_CG_NCONTROLLERS };

struct cq_cgroup {
    int version;                   /* 1 or 2 */
    int dirfd[CQ_CG_NCONTROLLERS]; /* v2: only [0], the unified directory */
    char path[CQ_CG_NCONTROLLERS][PATH_MAX];
    int ndirs; /* 3 on v1, 1 on v2 */
};

/* Which version this host uses, 1 or 2, in *version (detects on first call). -1 with
 * err (and *version 0) when cgroups with memory, pids and cpu controllers are not
 * usable. */
int cq_cgroup_version(int *version, struct cq_error *err);

/* Creates the sandbox's cgroup named `name` and writes its limits. */
int cq_cgroup_create(struct cq_cgroup *cg, const char *name, const struct cq_sandbox_limits *limits,
                     struct cq_error *err);

/* v1: opens the cgroup's `tasks` files for writing, one per controller. The
 * sandbox's init joins its cgroup by writing "0" to them: the kernel checks the
 * credentials of whoever opened the file (root, here), and moving oneself through
 * `tasks` skips the global threadgroup lock and its RCU grace period (~20 ms
 * measured here for a write of another pid to cgroup.procs). It also lets the
 * cgroup be created while init is already building the sandbox's root. */
int cq_cgroup_v1_open_tasks(const struct cq_cgroup *cg, int fds[CQ_CG_NCONTROLLERS],
                            struct cq_error *err);

/* Removes the cgroup directories (waiting briefly for exiting tasks). */
void cq_cgroup_destroy(struct cq_cgroup *cg);

/* Counters; fields a kernel does not provide stay 0. */
int cq_cgroup_stats(const struct cq_cgroup *cg, struct cq_sandbox_stats *stats,
                    struct cq_error *err);

/* The OOM-kill and pids-limit counters, cheap enough to read around every process. */
void cq_cgroup_counters(const struct cq_cgroup *cg, uint64_t *oom_kills, uint64_t *pids_max_hits);

#endif
