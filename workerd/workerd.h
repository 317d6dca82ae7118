/* workerd/workerd.h - codeq-worker: the worker core behind Kafka and Redis.
 *
 * It consumes the requests the dispatchers routed to it (topic codeq.worker.<id>), runs
 * each in its session's sandbox (one at a time per session, sessions in parallel),
 * streams output and publishes one final reply per request, keeps the session's files
 * in Redis, heartbeats its capacity, and drains on SIGTERM. docs/fleet.md has the
 * protocol. */
#ifndef CQ_WORKERD_H
#define CQ_WORKERD_H

#include "common/error.h"
#include "fleet/config.h"

struct cq_daemon;

int cq_daemon_create(const struct cq_fleet_config *cfg, struct cq_daemon **out,
                     struct cq_error *err);
/* Serves until cq_daemon_stop; then drains and returns. */
int cq_daemon_run(struct cq_daemon *d, struct cq_error *err);
/* Async-signal-safe. */
void cq_daemon_stop(struct cq_daemon *d);
void cq_daemon_destroy(struct cq_daemon *d);

#endif
