/* workerd/metrics.h - codeq-worker's metrics and operations endpoints (metrics_listen:
 * /metrics, /healthz, /readyz; docs/operations.md). The worker core counts its own
 * (cq_worker_config.metrics) in the same registry. Private to workerd/.
 *
 * A session's thread marks the request it runs (cq_wm_begin ... cq_wm_end: one at a
 * time per thread); every function takes a NULL m (no metrics_listen). */
#ifndef CQ_WORKERD_METRICS_H
#define CQ_WORKERD_METRICS_H

#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stdint.h>
#include "common/error.h"

struct cq_daemon;
struct cq_wm;
struct Codeq__V1__Request;

/* d->metrics stays NULL without metrics_listen. Before the core is made: its registry
 * goes in cq_worker_config.metrics (cq_wm_registry). */
int cq_wm_create(struct cq_daemon *d, struct cq_error *err);
struct cq_metrics *cq_wm_registry(struct cq_wm *m);
/* Once the stores and the consumer exist: counts the stores, polls, serves. */
int cq_wm_serve(struct cq_daemon *d, struct cq_error *err);
/* Stops serving and polling (before the consumer goes); cq_wm_free last of all. */
void cq_wm_stop(struct cq_wm *m);
void cq_wm_free(struct cq_wm *m);

/* The request topic's arrival of the message being queued (its CQ_OBS_REQUESTED_HEADER),
 * kept for this thread's next cq_wm_arrival(), which returns it (0: unknown) once. */
void cq_wm_arriving(const rd_kafka_message_t *msg);
int64_t cq_wm_arrival(void);

void cq_wm_begin(struct cq_wm *m, const struct Codeq__V1__Request *req, int64_t requested_ms);
/* The request's final reply was handed to Kafka. */
void cq_wm_replied(struct cq_wm *m);
/* What the final reply says: an error or not. */
void cq_wm_result(bool is_error);
void cq_wm_end(struct cq_wm *m);

void cq_wm_replayed(struct cq_wm *m);
void cq_wm_adopted(struct cq_wm *m);
void cq_wm_drained(struct cq_wm *m);
void cq_wm_dead_letter(struct cq_wm *m, const char *reason);

#endif
