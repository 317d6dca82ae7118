/* cli/mcp_trace.c - see cli/mcp_trace.h. */
#define _GNU_SOURCE
#include "cli/mcp_trace.h"
#include "fleet/tracing.h"
#include "http/otlp.h"

#include <string.h>

/* Set before the first call is read, cleared after the last has ended. */
static struct cq_tracer *tracer;
/* The call this thread runs (each tools/call has a thread of its own). */
static __thread const struct cq_mcp_trace *current;

int cq_mcp_trace_start(const char *endpoint, struct cq_error *err)
{
    if (endpoint == NULL || endpoint[0] == '\0')
        return 0;
    struct cq_tracer_config cfg = {.endpoint = endpoint, .service_name = "codeq-mcp"};
    return cq_tracer_create(&cfg, &tracer, err);
}

int cq_mcp_trace_set_metrics(struct cq_metrics *metrics, struct cq_error *err)
{
    return tracer != NULL ? cq_tracer_set_metrics(tracer, metrics, err) : 0;
}

void cq_mcp_trace_stop(void)
{
    cq_tracer_destroy(tracer);
    tracer = NULL;
}

void cq_mcp_trace_begin(struct cq_mcp_trace *t, json_t *params)
{
    memset(t, 0, sizeof(*t));
    json_t *meta = json_object_get(params, "_meta");
    const char *parent = json_string_value(json_object_get(meta, "traceparent"));
    const char *state = json_string_value(json_object_get(meta, "tracestate"));
    struct cq_tracectx caller;
    bool found = parent != NULL && cq_tracectx_parse(parent, state, &caller) == 0;
    t->record = tracer != NULL;
    if (t->record) {
        cq_tracectx_child(found ? &caller : NULL, &t->ctx);
        t->start_unix_ns = cq_tracing_now_ns();
    } else if (found) {
        t->ctx = caller; /* nothing recorded here: the caller's context goes back */
    }
    t->on = t->record || found;
    if (t->on)
        cq_tracectx_format(&t->ctx, t->traceparent);
    current = t;
}

void cq_mcp_trace_end(struct cq_mcp_trace *t, const char *tool, json_t *result)
{
    current = NULL;
    if (t->record) {
        bool failed = result == NULL || json_is_true(json_object_get(result, "isError"));
        struct cq_span s = {
            .ctx = &t->ctx,
            .name = "codeq.mcp.call",
            .kind = CQ_SPAN_SERVER,
            .start_unix_ns = t->start_unix_ns,
            .end_unix_ns = cq_tracing_now_ns(),
            .error = failed,
            .error_message =
                failed ? (result == NULL ? "protocol error" : "the call failed") : NULL,
            .attrs = {{.key = "codeq.tool", .text = tool != NULL ? tool : ""}},
            .n_attrs = 1,
        };
        cq_tracer_submit(tracer, &s);
    }
    if (!t->on || !json_is_object(result))
        return;
    json_t *meta = json_object_get(result, "_meta");
    if (!json_is_object(meta)) {
        meta = json_object();
        json_object_set_new(result, "_meta", meta);
    }
    json_object_set_new(meta, "traceparent", json_string(t->traceparent));
    if (t->ctx.tracestate[0] != '\0')
        json_object_set_new(meta, "tracestate", json_string(t->ctx.tracestate));
}

void cq_mcp_trace_kernel_run(const struct cq_result *r, const char *tool)
{
    if (current != NULL && current->record)
        cq_tracing_kernel_span(tracer, &current->ctx, r, tool, cq_tracing_now_ns());
}

const char *cq_mcp_trace_current(void)
{
    return current != NULL && current->on ? current->traceparent : NULL;
}
