/* dispatcher/metrics.h - codeq-dispatcher's metrics and operations endpoints
 * (metrics_listen: /metrics, /healthz, /readyz; docs/operations.md). Private to
 * dispatcher/.
 *
 * dispatcher.c marks what becomes of the request it handles (cq_dm_begin, then
 * forwarded, answered, refused...), and cq_dm_end counts it once under its outcome.
 * Every function takes a NULL m (no metrics_listen) and does nothing with it but carry
 * the request's arrival time to the worker (cq_dm_requested). */
#ifndef CQ_DISPATCHER_METRICS_H
#define CQ_DISPATCHER_METRICS_H

#include <librdkafka/rdkafka.h>
#include <stdatomic.h>
#include "fleet/config.h"
#include "fleet/kafka.h"

struct cq_dm;
struct cq_store;
struct Codeq__V1__Request;

/* *out stays NULL without metrics_listen. store: counted from now on. */
int cq_dm_start(const struct cq_fleet_config *cfg, struct cq_store *store, rd_kafka_t *consumer,
                const atomic_bool *stopping, struct cq_dm **out, struct cq_error *err);
/* Stops the endpoints and the poller and frees (after that store counts nothing). */
void cq_dm_destroy(struct cq_dm *m, struct cq_store *store);

void cq_dm_begin(struct cq_dm *m, const rd_kafka_message_t *msg);
void cq_dm_end(struct cq_dm *m);
/* The request as decoded (for its operation label). */
void cq_dm_request(struct cq_dm *m, const struct Codeq__V1__Request *req);
void cq_dm_forwarded(struct cq_dm *m);
void cq_dm_answered(struct cq_dm *m);
void cq_dm_replayed(struct cq_dm *m);
/* A refusal (the first reason of a request counts: auth, quota, rate, reply_topic,
 * interpreter, invalid). */
void cq_dm_refused(struct cq_dm *m, const char *reason);
/* A dead letter: its reason is the request's refusal, else "malformed". */
void cq_dm_dead_lettered(struct cq_dm *m);
/* The header that carries the arrival on the request topic of the request between
 * cq_dm_begin and cq_dm_end to its worker (CQ_OBS_REQUESTED_HEADER): 1 when *out is
 * filled (its value in buf), 0 outside a request (recovery). With m NULL too: a worker
 * may count what its dispatcher does not. */
size_t cq_dm_requested(char buf[24], struct cq_header *out);

#endif
