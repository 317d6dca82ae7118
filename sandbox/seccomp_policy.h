/* sandbox/seccomp_policy.h - the system-call policy of sandboxed processes.
 *
 * The policy is compiled by libseccomp at build time (sandbox/seccomp_gen.c) into
 * BPF programs that are linked into codeq-sandbox-init, so no process compiles it
 * at run time: the cost is paid once per build, not per worker or per spawn.
 */
#ifndef CQ_SANDBOX_SECCOMP_POLICY_H
#define CQ_SANDBOX_SECCOMP_POLICY_H

#include <seccomp.h>

/* Builds the two stacked filters (see seccomp_policy.c for why two):
 *   sandbox: the allowlist (default ENOSYS) with argument checks on clone, socket,
 *            socketpair and personality; attached once per sandbox by init;
 *   process: default ALLOW; denies what init and the shims still need (mount,
 *            mount_setattr, namespace flags of clone) and ioctl TIOCSTI/TIOCLINUX
 *            by the low 32 bits of the request; attached by every sandboxed process.
 * Returns 0 or a negative errno from libseccomp. */
int cq_seccomp_policy_build(scmp_filter_ctx *sandbox_out, scmp_filter_ctx *process_out);

#endif
