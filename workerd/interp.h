/* workerd/interp.h - code interpreters on a fleet worker: resolved from Redis, their
 * runtime's layer fetched from the fleet's cache or built under the fleet's build lock
 * (workerd/interp.c). Private to workerd. */
#ifndef CQ_WORKERD_INTERP_H
#define CQ_WORKERD_INTERP_H

#include <stdbool.h>
#include <stddef.h>
#include "common/error.h"
#include "workerd/daemon_internal.h"

/* The worker core's resolve_interpreter (ctx: the daemon). */
int cq_wd_resolve_interpreter(void *ctx, struct cq_worker *w, const char *name,
                              struct cq_error *err);
/* Set around an adoption on the adopting thread: a deleted interpreter's sessions may
 * still be adopted (they end at their time to live), new ones may not. */
void cq_wd_interp_adopting(bool on);
/* Before a new session on name: CQ_ENOTFOUND when the fleet no longer has it, or has
 * it only for other tenants (tenant "": keyless, none), with the message
 * of a name it never had; an interpreter whose definition or runtime changed in Redis
 * is forgotten by the core, so that this start defines it again. The built-in one
 * passes. */
int cq_wd_interp_check(struct cq_daemon *d, const char *name, const char *tenant,
                       struct cq_error *err);
/* The interpreters ready here, comma-separated, for the heartbeat. */
void cq_wd_interp_ready(struct cq_daemon *d, char *out, size_t len);
/* This worker's store of runtimes (runtime_store, else CODEQ_RUNTIME_STORE, else the
 * default). */
const char *cq_wd_runtime_store(const struct cq_daemon *d);
void cq_wd_interp_free(struct cq_daemon *d);

#endif
