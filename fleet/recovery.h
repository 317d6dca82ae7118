/* fleet/recovery.h - the in-flight requests of a worker that is gone. */
#ifndef CQ_FLEET_RECOVERY_H
#define CQ_FLEET_RECOVERY_H

#include <librdkafka/rdkafka.h>
#include <stddef.h>
#include "codeq.pb-c.h"
#include "common/error.h"
#include "fleet/store.h"

/* Called for a request that was forwarded to the lost worker and never started. */
typedef void (*cq_reroute_fn)(void *ctx, Codeq__V1__Request *req);

/* Settles every request of inflight:<worker>: a finished one gets its stored reply
 * again, a running one the worker-lost error (never a second run), a forwarded one is
 * handed to reroute (which owns it). */
int cq_fleet_recover(struct cq_store *st, rd_kafka_t *producer, const char *worker,
                     cq_reroute_fn reroute, void *ctx, size_t *settled, struct cq_error *err);

#endif
