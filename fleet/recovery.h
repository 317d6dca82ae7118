/* fleet/recovery.h - the in-flight requests of a worker that is gone. */
#ifndef CQ_FLEET_RECOVERY_H
#define CQ_FLEET_RECOVERY_H

#include <librdkafka/rdkafka.h>
#include <stddef.h>
#include "codeq.pb-c.h"
#include "common/error.h"
#include "fleet/auth.h"
#include "fleet/store.h"

/* Called for a request that was forwarded to the lost worker and never started, as it
 * was recorded (op->req; a signed one in its envelope, to be passed on as it is). The
 * callee may take op->req (and op->outer) by setting them NULL; the rest is freed
 * after. */
typedef void (*cq_reroute_fn)(void *ctx, struct cq_opened *op);

/* Settles every request of inflight:<worker>: a finished one gets its stored reply
 * again, a running one the worker-lost error (never a second run), a forwarded one is
 * handed to reroute. */
int cq_fleet_recover(struct cq_store *st, rd_kafka_t *producer, const char *worker,
                     cq_reroute_fn reroute, void *ctx, size_t *settled, struct cq_error *err);

#endif
