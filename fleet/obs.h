/* fleet/obs.h - what the daemons' /metrics and /readyz share (docs/operations.md): the
 * registry with the fleet's own families (build info, Kafka produce and lag, Redis,
 * readiness), and a poller thread that reads what is read rather than counted, on a
 * timer and off the request path: the consumer's lag per partition, whether a broker
 * answers, whether Redis answers a PING, and the daemon's own gauges (tick).
 *
 * The HTTP side (http/http.h, cq_ops_start) is the daemon's: fleet/ does not serve. */
#ifndef CQ_FLEET_OBS_H
#define CQ_FLEET_OBS_H

#include <librdkafka/rdkafka.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include "common/error.h"
#include "common/metrics.h"
#include "fleet/config.h"

struct cq_store;

/* Duration buckets of every histogram of the fleet (seconds). */
extern const double cq_obs_duration_buckets[];
extern const size_t cq_obs_n_duration_buckets;

struct cq_obs;

struct cq_obs_config {
    const struct cq_fleet_config *cfg;
    const char *component;       /* "dispatcher" or "worker": codeq_build_info's label */
    const atomic_bool *stopping; /* set: the daemon drains; not ready */
    /* Called by the poller after each round (its own Redis connection: store), for
     * gauges read from Redis; may be NULL. */
    void (*tick)(void *ctx, struct cq_store *store);
    /* More reasons not to be ready (the worker's warm pool); may be NULL. Returns 1
     * ready, 0 not with why filled. */
    int (*ready)(void *ctx, char *why, size_t why_size);
    void *ctx;
};

/* Makes the registry and the fleet's families, and points Kafka's produce metrics
 * (cq_kafka_set_metrics) at it. Nothing polls until cq_obs_watch. */
int cq_obs_create(const struct cq_obs_config *oc, struct cq_obs **out, struct cq_error *err);
struct cq_metrics *cq_obs_metrics(struct cq_obs *o);
/* The families both daemons count in, registered by cq_obs_create. */
struct cq_obs_counters {
    struct cq_metric *requests;      /* codeq_requests_total{component,operation,outcome} */
    struct cq_metric *dead_letters;  /* codeq_dead_letters_total{reason} */
    struct cq_metric_child *replays; /* codeq_replays_total */
};
const struct cq_obs_counters *cq_obs_counters(struct cq_obs *o);
/* Starts the poller on consumer (subscribed to topic): lag, reachability, tick. */
int cq_obs_watch(struct cq_obs *o, rd_kafka_t *consumer, const char *topic, struct cq_error *err);
/* /readyz: Kafka and Redis reachable (as the poller last found them), not stopping,
 * and the config's own ready(). Sets codeq_ready. For cq_ops_config.ready. */
int cq_obs_ready(void *obs, char *why, size_t why_size);
/* Stops the poller: before the consumer is destroyed. NULL is allowed. */
void cq_obs_stop(struct cq_obs *o);
/* Stops the poller and frees the registry: after everything that counts in it (the
 * worker core, the stores) is gone or told (cq_store_set_metrics(st, NULL)). */
void cq_obs_destroy(struct cq_obs *o);

/* A request's arrival on the request topic: the Kafka timestamp of msg in Unix ms, or
 * 0 when it has none. The dispatcher carries it to the worker in this header. */
#define CQ_OBS_REQUESTED_HEADER "codeq-requested-ms"
int64_t cq_obs_timestamp_ms(const rd_kafka_message_t *msg);

/* Operation label of a request (codeq_requests_total). */
struct Codeq__V1__Request;
const char *cq_obs_operation(const struct Codeq__V1__Request *req);

#endif
