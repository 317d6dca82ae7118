/* fleet/tracing.c - see fleet/tracing.h. */
#define _GNU_SOURCE
#include "fleet/tracing.h"
#include "fleet/log.h"
#include "codeq.pb-c.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

/* Set once at start-up, before any request is handled, and cleared after the last. */
static struct cq_tracer *tracer;

int cq_tracing_start(const struct cq_fleet_config *cfg, const char *service,
                     struct cq_metrics *metrics, struct cq_error *err)
{
    if (cfg->otlp_endpoint[0] == '\0' || tracer != NULL)
        return 0;
    struct cq_tracer_config tc = {
        .endpoint = cfg->otlp_endpoint, .service_name = service, .metrics = metrics};
    if (cq_tracer_create(&tc, &tracer, err) < 0)
        return cq_error_prefix(err, "otlp_endpoint");
    cq_log_event(CQ_LOG_INFO, "tracing_started", CQ_FIELDS(CQ_LS("endpoint", cfg->otlp_endpoint)),
                 "spans go to %s", cfg->otlp_endpoint);
    return 0;
}

int cq_tracing_set_metrics(struct cq_metrics *metrics, struct cq_error *err)
{
    return tracer != NULL ? cq_tracer_set_metrics(tracer, metrics, err) : 0;
}

void cq_tracing_stop(void)
{
    if (tracer == NULL)
        return;
    struct cq_tracer_stats st;
    cq_tracer_finish(tracer, &st);
    tracer = NULL;
    /* The counts for whoever reads the logs rather than /metrics: spans a dead
     * collector cost are not silent. */
    cq_log_event(CQ_LOG_INFO, "tracing_stopped",
                 CQ_FIELDS(CQ_LI("spans_exported", st.exported),
                           CQ_LI("spans_dropped_queue_full", st.dropped_full),
                           CQ_LI("spans_dropped_export_failed", st.dropped_error)),
                 "spans: %llu exported, %llu dropped", (unsigned long long)st.exported,
                 (unsigned long long)(st.dropped_full + st.dropped_error));
}

struct cq_tracer *cq_tracing_tracer(void)
{
    return tracer;
}

uint64_t cq_tracing_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

void cq_tracing_read(struct cq_w3c *w, rd_kafka_message_t *msg)
{
    w->found = w->on = w->record = false;
    w->error = NULL;
    char parent[CQ_TRACEPARENT_LEN + 8], state[CQ_TRACESTATE_MAX + 2];
    if (cq_kafka_header(msg, CQ_TRACEPARENT_HEADER, parent, sizeof(parent)) == NULL)
        return;
    const char *st = cq_kafka_header(msg, CQ_TRACESTATE_HEADER, state, sizeof(state));
    w->found = cq_tracectx_parse(parent, st, &w->ctx) == 0;
}

void cq_tracing_begin(struct cq_w3c *w, const char *fallback)
{
    if (!w->found && fallback != NULL && fallback[0] != '\0')
        w->found = cq_tracectx_parse(fallback, NULL, &w->ctx) == 0;
    w->record = tracer != NULL;
    if (!w->record) {
        /* Nothing recorded here: the caller's context goes on as it came, so that the
         * next step that records is the caller's child rather than an unknown span's. */
        w->on = w->found;
    } else {
        struct cq_tracectx parent = w->ctx;
        cq_tracectx_child(w->found ? &parent : NULL, &w->ctx);
        w->on = true;
        w->start_unix_ns = cq_tracing_now_ns();
    }
    if (w->on)
        cq_tracectx_format(&w->ctx, w->traceparent);
}

size_t cq_tracing_headers(const struct cq_w3c *w, struct cq_header *h)
{
    if (w == NULL || !w->on)
        return 0;
    h[0] = (struct cq_header){CQ_TRACEPARENT_HEADER, w->traceparent};
    if (w->ctx.tracestate[0] == '\0')
        return 1;
    h[1] = (struct cq_header){CQ_TRACESTATE_HEADER, w->ctx.tracestate};
    return 2;
}

static size_t add_attrs(struct cq_span *s, const char *tool, const char *session_id)
{
    if (tool != NULL && tool[0] != '\0')
        s->attrs[s->n_attrs++] = (struct cq_span_attr){.key = "codeq.tool", .text = tool};
    if (session_id != NULL && session_id[0] != '\0')
        s->attrs[s->n_attrs++] =
            (struct cq_span_attr){.key = "codeq.session_id", .text = session_id};
    return s->n_attrs;
}

void cq_tracing_request(struct cq_w3c *w, const struct Codeq__V1__Request *req)
{
    w->tool[0] = w->session_id[0] = '\0';
    if (req != NULL) {
        if (req->operation_case == CODEQ__V1__REQUEST__OPERATION_INVOKE && req->invoke != NULL &&
            req->invoke->tool != NULL)
            snprintf(w->tool, sizeof(w->tool), "%s", req->invoke->tool);
        if (req->session_id != NULL)
            snprintf(w->session_id, sizeof(w->session_id), "%s", req->session_id);
    }
    cq_tracing_begin(w, req != NULL ? req->traceparent : NULL);
}

void cq_tracing_log(const struct cq_w3c *w)
{
    cq_log_set_trace(w != NULL && w->on ? &w->ctx : NULL);
}

void cq_tracing_end(const struct cq_w3c *w, const char *name, enum cq_span_kind kind)
{
    if (w == NULL || !w->record || tracer == NULL)
        return;
    struct cq_span s = {
        .ctx = &w->ctx,
        .name = name,
        .kind = kind,
        .start_unix_ns = w->start_unix_ns,
        .end_unix_ns = cq_tracing_now_ns(),
        .error = w->error != NULL,
        .error_message = w->error,
    };
    add_attrs(&s, w->tool, w->session_id);
    cq_tracer_submit(tracer, &s);
}

void cq_tracing_kernel_run(const struct cq_w3c *w, const struct cq_result *r, const char *tool)
{
    if (w != NULL && w->record)
        cq_tracing_kernel_span(tracer, &w->ctx, r, tool, cq_tracing_now_ns());
}

void cq_tracing_kernel_span(struct cq_tracer *t, const struct cq_tracectx *parent,
                            const struct cq_result *r, const char *tool, uint64_t call_end_unix_ns)
{
    if (t == NULL || parent == NULL)
        return;
    uint64_t start = r->run_start_unix_ns, end = r->run_end_unix_ns;
    if (start == 0 || end < start) {
        /* A core that does not stamp its runs: the call's own duration, ending now. */
        double ms = r->execution_time_ms > 0 ? r->execution_time_ms : 0;
        uint64_t ns = (uint64_t)(ms * 1e6);
        end = call_end_unix_ns;
        start = ns < end ? end - ns : end;
    }
    struct cq_tracectx ctx;
    cq_tracectx_child(parent, &ctx);
    const char *error = r->error_code != CQ_RESULT_OK ? cq_result_error_name(r->error_code)
                        : r->is_error                 ? "the code failed"
                                                      : NULL;
    struct cq_span s = {
        .ctx = &ctx,
        .name = "codeq.kernel.run",
        .kind = CQ_SPAN_INTERNAL,
        .start_unix_ns = start,
        .end_unix_ns = end,
        .error = error != NULL,
        .error_message = error,
    };
    add_attrs(&s, tool, NULL);
    cq_tracer_submit(t, &s);
}
