/* sandbox/rootfs_plan.h - turns a sandbox configuration into the CONFIG message that
 * tells codeq-sandbox-init how to build the root (private to sandbox/). */
#ifndef CQ_SANDBOX_ROOTFS_PLAN_H
#define CQ_SANDBOX_ROOTFS_PLAN_H

#include "common/error.h"
#include "sandbox/protocol.h"
#include "sandbox/sandbox.h"

/* Regular files up to this size are copied into the sandbox's root instead of bound. */
#define CQ_ROOTFS_COPY_MAX (256 * 1024)

/* root_owner: the id inside that owns what root would (/dev, /tmp, /dev/shm): 0, or
 * CQ_SANDBOX_USER_UID in a sandbox with no other id (a normal user's, supervisor.c);
 * then /dev, which sandboxed code would own, is made read-only once it is filled. */
int cq_rootfs_plan_write(const struct cq_sandbox_config *cfg, uint32_t root_owner,
                         struct cq_msg_writer *w, struct cq_error *err);

#endif
