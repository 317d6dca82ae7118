/* cli/mcp_trace.h - trace context of `codeq mcp` (issue 15): a tools/call's
 * _meta.traceparent (and tracestate) is continued by a "codeq.mcp.call" span (kind
 * SERVER) and, in the embedded mode, a "codeq.kernel.run" child of it; the call's
 * result carries _meta.traceparent of its span, in the same trace. In front of a
 * fleet, the call's context goes on in the Request's traceparent field, so that the
 * fleet's spans join the trace. Spans go to --otlp-endpoint through cq_tracer, never
 * waited for. Without an endpoint a client's context is passed back unchanged and
 * nothing else happens.
 */
#ifndef CQ_CLI_MCP_TRACE_H
#define CQ_CLI_MCP_TRACE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include "api/api.h"
#include "common/error.h"
#include "common/metrics.h"
#include "common/tracectx.h"

struct cq_mcp_trace {
    bool on;     /* ctx is the call's context (the result carries it) */
    bool record; /* and its span is exported */
    struct cq_tracectx ctx;
    uint64_t start_unix_ns;
    char traceparent[CQ_TRACEPARENT_LEN + 1];
};

/* Starts exporting spans to endpoint (NULL or "": tracing stays off). */
int cq_mcp_trace_start(const char *endpoint, struct cq_error *err);
/* The exporter's counters (codeq_trace_spans_*) into metrics (--metrics-listen's
 * registry); nothing when tracing is off. */
int cq_mcp_trace_set_metrics(struct cq_metrics *metrics, struct cq_error *err);
/* Sends what is queued (bounded by the exporter's timeout). */
void cq_mcp_trace_stop(void);

/* The call's context, from params._meta (params may be NULL); this thread's current
 * call until cq_mcp_trace_end. */
void cq_mcp_trace_begin(struct cq_mcp_trace *t, json_t *params);
/* Ends the call's span (tool: its name) and sets result's _meta.traceparent and
 * tracestate when the call has a context. result may be NULL (a protocol error). */
void cq_mcp_trace_end(struct cq_mcp_trace *t, const char *tool, json_t *result);

/* The embedded worker ran r for this thread's call: its "codeq.kernel.run" span. */
void cq_mcp_trace_kernel_run(const struct cq_result *r, const char *tool);
/* This thread's call's traceparent for a fleet request, or NULL. */
const char *cq_mcp_trace_current(void);

#endif
