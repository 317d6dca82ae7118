/* sandbox/rootless.h - a normal user's sandboxes (private to sandbox/; the public part,
 * cq_sandbox_setup_process, is in sandbox.h). See rootless.c. */
#ifndef CQ_SANDBOX_ROOTLESS_H
#define CQ_SANDBOX_ROOTLESS_H

#include <stdbool.h>
#include <stddef.h>
#include "common/error.h"
#include "sandbox/sandbox.h"

/* Outer ids (rootless.c) of a normal user's sandboxes: the caller, and with subordinate
 * ids the one sandboxed code runs as. */
#define CQ_ROOTLESS_CALLER 0u
#define CQ_ROOTLESS_SUBID  1u

/* 0 when this process can make sandboxes; -1 with the reason (no user namespace, or a
 * normal user's process that did not call cq_sandbox_setup_process) otherwise. */
int cq_rootless_check(struct cq_error *err);

/* Own ids: setgroups(2) is refused in every namespace below this process's. */
bool cq_rootless_setgroups_denied(void);

/* A normal user asked to run without the limits that need a cgroup
 * (CODEQ_ALLOW_UNLIMITED=1). Always false as root. */
bool cq_rootless_allow_unlimited(void);

/* cq_cgroup_version, or 0 in *version (no cgroup) where a normal user allowed that;
 * as a normal user without either, an error that names both ways out. */
int cq_rootless_cgroup_version(int *version, struct cq_error *err);

/* Why a user namespace could not be made or mapped (error code `code`), naming the
 * sysctl that forbids it where one does. */
void cq_rootless_userns_hint(int code, char *buf, size_t len);

#endif
