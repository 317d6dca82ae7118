/* sandbox/rootfs_plan.h - turns a sandbox configuration into the CONFIG message that
 * tells codeq-sandbox-init how to build the root (private to sandbox/). */
#ifndef CQ_SANDBOX_ROOTFS_PLAN_H
#define CQ_SANDBOX_ROOTFS_PLAN_H

#include "common/error.h"
#include "sandbox/protocol.h"
#include "sandbox/sandbox.h"

/* Regular files up to this size are copied into the sandbox's root instead of bound. */
#define CQ_ROOTFS_COPY_MAX (256 * 1024)

int cq_rootfs_plan_write(const struct cq_sandbox_config *cfg, struct cq_msg_writer *w,
                         struct cq_error *err);

#endif
