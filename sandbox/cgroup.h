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

/* v1 hierarchies a sandbox has a cgroup in. The first CQ_CG_NLIMITS enforce its
 * limits and are required. cpuacct only counts CPU time: it is used where the host
 * mounts it apart from cpu (where it is mounted with cpu, cpuacct.usage is in the cpu
 * directory), and a sandbox runs without it when its cgroup there cannot be made. */
enum cq_cgroup_controller {
    CQ_CG_MEMORY,
    CQ_CG_PIDS,
    CQ_CG_CPU,
    CQ_CG_CPUACCT,
    CQ_CG_NCONTROLLERS
};
#define CQ_CG_NLIMITS CQ_CG_CPUACCT

struct cq_cgroup {
    int version;                   /* 1 or 2 */
    int dirfd[CQ_CG_NCONTROLLERS]; /* v2: only [0], the unified directory */
    char path[CQ_CG_NCONTROLLERS][PATH_MAX];
    /* Directories [0, ndirs) exist and the sandbox joins each: v1 3 (memory, pids,
     * cpu) or 4 (and cpuacct apart); v2 1. */
    int ndirs;
};

/* Which version this host uses, 1 or 2, in *version (detects on first call). -1 with
 * err (and *version 0) when cgroups with memory, pids and cpu controllers are not
 * usable. */
int cq_cgroup_version(int *version, struct cq_error *err);

/* Creates the sandbox's cgroup named `name` and writes its limits. */
int cq_cgroup_create(struct cq_cgroup *cg, const char *name, const struct cq_sandbox_limits *limits,
                     struct cq_error *err);

/* v1: opens the cgroup's `tasks` files for writing, one per directory (ndirs). The
 * sandbox's init joins its cgroup by writing "0" to them: the kernel checks the
 * credentials of whoever opened the file (root, here), and moving oneself through
 * `tasks` skips the global threadgroup lock and its RCU grace period (~20 ms
 * measured here for a write of another pid to cgroup.procs). It also lets the
 * cgroup be created while init is already building the sandbox's root.
 * A cpuacct directory whose `tasks` cannot be opened is removed (ndirs drops to 3):
 * the sandbox then runs without its CPU time rather than not at all. */
int cq_cgroup_v1_open_tasks(struct cq_cgroup *cg, int fds[CQ_CG_NCONTROLLERS],
                            struct cq_error *err);

/* Removes the cgroup directories (waiting briefly for exiting tasks). */
void cq_cgroup_destroy(struct cq_cgroup *cg);

/* Counters; fields a kernel does not provide stay 0. */
int cq_cgroup_stats(const struct cq_cgroup *cg, struct cq_sandbox_stats *stats,
                    struct cq_error *err);

/* The OOM-kill and pids-limit counters, cheap enough to read around every process. */
void cq_cgroup_counters(const struct cq_cgroup *cg, uint64_t *oom_kills, uint64_t *pids_max_hits);

#endif
