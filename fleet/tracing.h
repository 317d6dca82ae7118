/* fleet/tracing.h - W3C trace context through the fleet, and its spans (issue 15).
 *
 * A request's context comes in its Kafka headers "traceparent" and "tracestate" (or,
 * without the header, the Request's traceparent field). Each daemon step continues it:
 * its span is a child of the context it got, it passes its own span's context on in
 * the headers of what it sends (the dispatcher's forward, every reply), and log lines
 * written meanwhile carry its ids. Spans go to the otlp_endpoint setting through
 * cq_tracer (http/otlp.h): queued, never waited for.
 *
 * Tracing off (no otlp_endpoint): a context that came is passed on unchanged and no
 * span is made; a request without one costs a header lookup, nothing else.
 * Tracing on: a request without a context starts a new trace.
 */
#ifndef CQ_FLEET_TRACING_H
#define CQ_FLEET_TRACING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "common/error.h"
#include "common/metrics.h"
#include "api/api.h"
#include "common/tracectx.h"
#include "fleet/config.h"
#include "fleet/kafka.h"
#include "http/otlp.h"

#define CQ_TRACEPARENT_HEADER "traceparent"
#define CQ_TRACESTATE_HEADER  "tracestate"

/* One step's context, as a request is handled. */
struct cq_w3c {
    bool found;  /* the message's headers had a valid traceparent (ctx: the sender's) */
    bool on;     /* ctx is this step's context: headers of what it sends carry it */
    bool record; /* and its span is exported (tracing on) */
    struct cq_tracectx ctx;
    uint64_t start_unix_ns;
    const char *error; /* set while handling: the span ends with an error status */
    char traceparent[CQ_TRACEPARENT_LEN + 1];
    char tool[32], session_id[64]; /* the span's attributes (cq_tracing_request) */
};

/* Starts exporting spans to cfg->otlp_endpoint as service ("codeq-dispatcher",
 * "codeq-worker"); "" leaves tracing off. metrics (may be NULL) gets the exporter's
 * counters. One tracer per process. */
int cq_tracing_start(const struct cq_fleet_config *cfg, const char *service,
                     struct cq_metrics *metrics, struct cq_error *err);
/* The exporter's counters (codeq_trace_spans_*) into metrics, for a registry made after
 * cq_tracing_start (the daemon's, when it is created); nothing when tracing is off.
 * NULL detaches the registry before it is freed. */
int cq_tracing_set_metrics(struct cq_metrics *metrics, struct cq_error *err);
/* Sends what is queued (bounded by the exporter's timeout) and logs the span counts. */
void cq_tracing_stop(void);
/* The process's tracer, or NULL when tracing is off. */
struct cq_tracer *cq_tracing_tracer(void);

/* Clears w, then looks msg's traceparent (and tracestate) headers up. */
void cq_tracing_read(struct cq_w3c *w, rd_kafka_message_t *msg);
/* This step's context: a child of the header's context, else of fallback (the
 * Request's traceparent field; NULL or "" for none), else a new trace when tracing is
 * on; off and nothing came: w stays off. The span starts now. */
void cq_tracing_begin(struct cq_w3c *w, const char *fallback);
struct Codeq__V1__Request;
/* cq_tracing_begin with req's traceparent field as the fallback (req NULL: a message
 * that did not decode), keeping req's tool and session id for the span. */
void cq_tracing_request(struct cq_w3c *w, const struct Codeq__V1__Request *req);
/* Log lines of this thread carry w's ids from now on (fleet/log.h); NULL or off: none. */
void cq_tracing_log(const struct cq_w3c *w);
/* Fills h with w's headers: 0 (w NULL or off), 1 or 2 (with a tracestate). */
size_t cq_tracing_headers(const struct cq_w3c *w, struct cq_header *h);
/* Ends w's span now (when it records): name, kind, and codeq.tool / codeq.session_id
 * attributes when cq_tracing_request found them. */
void cq_tracing_end(const struct cq_w3c *w, const char *name, enum cq_span_kind kind);

/* "codeq.kernel.run", a child span of parent (NULL: none made) for the call r, with
 * r's run times; a result without them (0) is taken to have run for its
 * execution_time_ms up to call_end_unix_ns. For codeq mcp, which has its own tracer. */
void cq_tracing_kernel_span(struct cq_tracer *tracer, const struct cq_tracectx *parent,
                            const struct cq_result *r, const char *tool, uint64_t call_end_unix_ns);
/* The same in a daemon: a child of w's span, if it records, ending now. */
void cq_tracing_kernel_run(const struct cq_w3c *w, const struct cq_result *r, const char *tool);

/* Now, in Unix nanoseconds (CLOCK_REALTIME: spans of several hosts line up). */
uint64_t cq_tracing_now_ns(void);

#endif
