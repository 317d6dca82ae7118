/* http/otlp.h - spans exported to an OpenTelemetry collector over OTLP/HTTP (JSON).
 *
 * A span is copied into a bounded queue and the caller goes on: a background thread
 * sends batches, so that tracing never waits on the collector. A full queue, or a
 * collector that is down or slow, costs dropped spans (counted), never a request's
 * time: the rule is that a dead collector costs nothing on the path.
 */
#ifndef CQ_HTTP_OTLP_H
#define CQ_HTTP_OTLP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "common/error.h"
#include "common/metrics.h"
#include "common/tracectx.h"

/* OTLP's SpanKind numbers. */
enum cq_span_kind {
    CQ_SPAN_INTERNAL = 1,
    CQ_SPAN_SERVER = 2,
    CQ_SPAN_CLIENT = 3,
    CQ_SPAN_PRODUCER = 4,
    CQ_SPAN_CONSUMER = 5,
};

#define CQ_SPAN_MAX_ATTRS 8

struct cq_span_attr {
    const char *key;
    const char *text; /* NULL: the attribute is number */
    int64_t number;
};

struct cq_span {
    const struct cq_tracectx *ctx; /* its trace, its own span id and its parent */
    const char *name;
    enum cq_span_kind kind;
    uint64_t start_unix_ns, end_unix_ns;
    bool error;
    const char *error_message; /* may be NULL */
    struct cq_span_attr attrs[CQ_SPAN_MAX_ATTRS];
    size_t n_attrs;
};

struct cq_tracer_config {
    const char *endpoint;     /* http(s)://HOST:PORT/v1/traces */
    const char *service_name; /* the resource's service.name: "codeq-worker", ... */
    size_t max_queue;         /* spans waiting; 0: 4096 */
    unsigned max_batch;       /* spans per request; 0: 512 */
    unsigned interval_ms;     /* a batch at least this often; 0: 1000 */
    unsigned timeout_ms;      /* one export's limit; 0: 2000 */
    /* When set: codeq_trace_spans_exported_total and
     * codeq_trace_spans_dropped_total{reason="queue_full"|"export_failed"}. */
    struct cq_metrics *metrics;
};

struct cq_tracer;

int cq_tracer_create(const struct cq_tracer_config *cfg, struct cq_tracer **out,
                     struct cq_error *err);
/* Queues a copy of the span; never blocks on the collector. NULL tracer: nothing. */
void cq_tracer_submit(struct cq_tracer *t, const struct cq_span *span);
/* Sends what is queued (within timeout_ms) and frees. NULL is allowed. */
void cq_tracer_destroy(struct cq_tracer *t);

struct cq_tracer_stats {
    uint64_t exported;      /* accepted by the collector (HTTP 2xx) */
    uint64_t dropped_full;  /* the queue was full */
    uint64_t dropped_error; /* the export failed: unreachable, timed out, refused */
};
void cq_tracer_stats(struct cq_tracer *t, struct cq_tracer_stats *out);
/* Counts into metrics (as cq_tracer_config.metrics does) from now on, the counts so far
 * included: for a registry made after the tracer. Once per tracer. metrics NULL stops
 * counting (before the registry is freed: the tracer may outlive it). */
int cq_tracer_set_metrics(struct cq_tracer *t, struct cq_metrics *metrics, struct cq_error *err);
/* cq_tracer_destroy, and the counts once what was queued is sent (or dropped). */
void cq_tracer_finish(struct cq_tracer *t, struct cq_tracer_stats *out);

#endif
