/* tests/unit/test_tracing.c - the fleet's trace context (fleet/tracing.h): what a step
 * passes on with tracing off and on, its spans' parents and times as a collector on
 * loopback receives them, and drops counted when the collector is dead. */
#include <check.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "codeq.pb-c.h"
#include "fleet/log.h"
#include "fleet/tracing.h"
#include "http/http.h"

#define CALLER      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
#define CALLER_SPAN "00f067aa0ba902b7"
#define CALLER_ID   "4bf92f3577b34da6a3ce929d0e0e4736"

static pthread_mutex_t got_lock = PTHREAD_MUTEX_INITIALIZER;
static json_t *got_spans; /* every span received, flattened */

static void collector(void *ctx, const struct cq_http_request *req, struct cq_http_response *resp)
{
    (void)ctx;
    json_t *body = json_loadb((const char *)req->body, req->body_len, 0, NULL);
    json_t *rs = json_array_get(json_object_get(body, "resourceSpans"), 0);
    json_t *ss = json_array_get(json_object_get(rs, "scopeSpans"), 0);
    pthread_mutex_lock(&got_lock);
    json_array_extend(got_spans, json_object_get(ss, "spans"));
    pthread_mutex_unlock(&got_lock);
    json_decref(body);
    cq_http_respond(resp, 200, "{}");
}

static struct cq_http_server *start_collector(struct cq_fleet_config *cfg)
{
    struct cq_error err;
    struct cq_http_config hc = {.listen = "127.0.0.1:0", .handler = collector};
    struct cq_http_server *s;
    ck_assert_msg(cq_http_start(&hc, &s, &err) == 0, "%s", err.msg);
    snprintf(cfg->otlp_endpoint, sizeof(cfg->otlp_endpoint), "http://127.0.0.1:%u/v1/traces",
             cq_http_port(s));
    got_spans = json_array();
    return s;
}

static const char *field(json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

/* The span named name among those received (fails unless exactly one). */
static json_t *span_named(const char *name)
{
    json_t *found = NULL, *s;
    size_t i;
    json_array_foreach(got_spans, i, s)
    {
        if (strcmp(field(s, "name"), name) == 0) {
            ck_assert_msg(found == NULL, "two spans named %s", name);
            found = s;
        }
    }
    ck_assert_msg(found != NULL, "no span named %s", name);
    return found;
}

static void hex(const uint8_t *b, size_t n, char *out)
{
    cq_tracectx_hex(b, n, out);
}

START_TEST(test_off_passes_a_context_on_unchanged)
{
    struct cq_w3c w = {0};
    cq_tracing_begin(&w, CALLER);
    ck_assert(w.found && w.on && !w.record);
    ck_assert_str_eq(w.traceparent, CALLER); /* no span of its own: the caller's goes on */
    struct cq_header h[2];
    ck_assert_uint_eq(cq_tracing_headers(&w, h), 1);
    ck_assert_str_eq(h[0].name, "traceparent");
    ck_assert_str_eq(h[0].value, CALLER);
    cq_tracing_end(&w, "codeq.request", CQ_SPAN_CONSUMER); /* nothing to send it to */

    /* Nothing came (or only something invalid): off, no headers. */
    struct cq_w3c none = {0};
    cq_tracing_begin(&none, NULL);
    ck_assert(!none.on);
    ck_assert_uint_eq(cq_tracing_headers(&none, h), 0);
    cq_tracing_begin(&none, "00-00000000000000000000000000000000-00f067aa0ba902b7-01");
    ck_assert(!none.on);
    ck_assert_uint_eq(cq_tracing_headers(NULL, h), 0);
    ck_assert_ptr_null(cq_tracing_tracer());
}
END_TEST

START_TEST(test_request_fields_and_state)
{
    Codeq__V1__Invoke inv = CODEQ__V1__INVOKE__INIT;
    inv.tool = "executeCode";
    Codeq__V1__Request req = CODEQ__V1__REQUEST__INIT;
    req.session_id = "sess-1";
    req.traceparent = CALLER;
    req.operation_case = CODEQ__V1__REQUEST__OPERATION_INVOKE;
    req.invoke = &inv;
    struct cq_w3c w = {0};
    cq_tracing_request(&w, &req);
    ck_assert_str_eq(w.tool, "executeCode");
    ck_assert_str_eq(w.session_id, "sess-1");
    ck_assert(w.on);
    ck_assert_str_eq(w.traceparent, CALLER);

    /* A header's context (found) wins over the field; its tracestate goes on too. */
    struct cq_w3c hw = {0};
    ck_assert_int_eq(cq_tracectx_parse("00-11111111111111111111111111111111-2222222222222222-01",
                                       "k=v", &hw.ctx),
                     0);
    hw.found = true;
    cq_tracing_request(&hw, &req);
    ck_assert_str_eq(hw.traceparent, "00-11111111111111111111111111111111-2222222222222222-01");
    struct cq_header h[2];
    ck_assert_uint_eq(cq_tracing_headers(&hw, h), 2);
    ck_assert_str_eq(h[1].name, "tracestate");
    ck_assert_str_eq(h[1].value, "k=v");

    /* A message that did not decode: no fields, and off without a header. */
    struct cq_w3c bad = {0};
    cq_tracing_request(&bad, NULL);
    ck_assert(!bad.on);
    ck_assert_str_eq(bad.tool, "");
}
END_TEST

START_TEST(test_on_makes_children_and_spans)
{
    cq_log_setup("test", "error");
    struct cq_fleet_config cfg;
    cq_fleet_config_init(&cfg);
    struct cq_http_server *col = start_collector(&cfg);
    struct cq_error err;
    ck_assert_msg(cq_tracing_start(&cfg, "codeq-test", NULL, &err) == 0, "%s", err.msg);
    ck_assert_ptr_nonnull(cq_tracing_tracer());

    /* Continued: the same trace, a span of its own whose parent is the caller's. */
    struct cq_w3c w = {0};
    cq_tracing_begin(&w, CALLER);
    ck_assert(w.on && w.record);
    char trace[33], span[17];
    hex(w.ctx.trace_id, 16, trace);
    hex(w.ctx.span_id, 8, span);
    ck_assert_str_eq(trace, CALLER_ID);
    ck_assert_str_ne(span, CALLER_SPAN);
    ck_assert_int_eq(strncmp(w.traceparent, "00-" CALLER_ID "-", 36), 0);
    ck_assert_int_eq(strncmp(w.traceparent + 36, span, 16), 0);
    snprintf(w.tool, sizeof(w.tool), "executeCode");

    /* The kernel's run with the core's times, then one without (its duration, ending
     * at the call's end). */
    struct cq_result r;
    cq_result_init(&r);
    r.run_start_unix_ns = 1700000000000000000ULL;
    r.run_end_unix_ns = 1700000000250000000ULL;
    cq_tracing_kernel_run(&w, &r, "executeCode");
    struct cq_result old;
    cq_result_init(&old);
    old.execution_time_ms = 250;
    old.error_code = CQ_RESULT_TIMED_OUT;
    old.is_error = true;
    cq_tracing_kernel_span(cq_tracing_tracer(), &w.ctx, &old, "executeCommand",
                           1800000000000000000ULL);
    w.error = "INTERNAL";
    cq_tracing_end(&w, "codeq.request", CQ_SPAN_CONSUMER);

    /* No context while tracing: a new trace, a root span. */
    struct cq_w3c root = {0};
    cq_tracing_begin(&root, NULL);
    ck_assert(root.on && root.record && !root.ctx.has_parent);
    cq_tracing_end(&root, "codeq.dispatch", CQ_SPAN_CONSUMER);
    cq_tracing_stop();
    ck_assert_ptr_null(cq_tracing_tracer());

    ck_assert_uint_eq(json_array_size(got_spans), 4);
    json_t *req = span_named("codeq.request");
    ck_assert_str_eq(field(req, "traceId"), CALLER_ID);
    ck_assert_str_eq(field(req, "spanId"), span);
    ck_assert_str_eq(field(req, "parentSpanId"), CALLER_SPAN);
    ck_assert_int_eq(json_integer_value(json_object_get(req, "kind")), CQ_SPAN_CONSUMER);
    ck_assert_str_eq(field(json_object_get(req, "status"), "message"), "INTERNAL");
    ck_assert_str_eq(
        field(json_object_get(json_array_get(json_object_get(req, "attributes"), 0), "value"),
              "stringValue"),
        "executeCode");
    size_t i;
    json_t *s;
    int runs = 0;
    json_array_foreach(got_spans, i, s)
    {
        if (strcmp(field(s, "name"), "codeq.kernel.run") != 0)
            continue;
        runs++;
        ck_assert_str_eq(field(s, "traceId"), CALLER_ID);
        ck_assert_str_eq(field(s, "parentSpanId"), span);
        ck_assert_int_eq(json_integer_value(json_object_get(s, "kind")), CQ_SPAN_INTERNAL);
        const char *tool =
            field(json_object_get(json_array_get(json_object_get(s, "attributes"), 0), "value"),
                  "stringValue");
        if (strcmp(tool, "executeCode") == 0) {
            ck_assert_str_eq(field(s, "startTimeUnixNano"), "1700000000000000000");
            ck_assert_str_eq(field(s, "endTimeUnixNano"), "1700000000250000000");
            ck_assert_ptr_null(json_object_get(s, "status"));
        } else {
            ck_assert_str_eq(field(s, "startTimeUnixNano"), "1799999999750000000");
            ck_assert_str_eq(field(s, "endTimeUnixNano"), "1800000000000000000");
            ck_assert_str_eq(field(json_object_get(s, "status"), "message"), "TIMED_OUT");
        }
    }
    ck_assert_int_eq(runs, 2);
    json_t *d = span_named("codeq.dispatch");
    ck_assert_str_ne(field(d, "traceId"), CALLER_ID);
    ck_assert_ptr_null(json_object_get(d, "parentSpanId"));
    json_decref(got_spans);
    cq_http_stop(col);
}
END_TEST

START_TEST(test_dead_collector_counts_drops)
{
    cq_log_setup("test", "error");
    struct cq_fleet_config cfg;
    cq_fleet_config_init(&cfg);
    struct cq_http_server *col = start_collector(&cfg);
    cq_http_stop(col); /* nothing listens there now */
    json_decref(got_spans);
    struct cq_error err;
    struct cq_metrics *m;
    ck_assert_int_eq(cq_metrics_create(&m, &err), 0);
    ck_assert_int_eq(cq_tracing_start(&cfg, "codeq-test", NULL, &err), 0);
    for (int i = 0; i < 3; i++) {
        struct cq_w3c w = {0};
        cq_tracing_begin(&w, CALLER);
        cq_tracing_end(&w, "codeq.dispatch", CQ_SPAN_CONSUMER);
        if (i == 0) {
            /* The daemon's registry comes after the tracer; whatever was counted before
             * it (the first export may have failed already) is in it too. */
            usleep(1200 * 1000);
            ck_assert_int_eq(cq_tracing_set_metrics(m, &err), 0);
        }
    }
    cq_tracing_stop();
    char *text;
    size_t len;
    ck_assert_int_eq(cq_metrics_render(m, &text, &len, &err), 0);
    ck_assert_msg(strstr(text, "codeq_trace_spans_dropped_total{reason=\"export_failed\"} 3\n"),
                  "%s", text);
    ck_assert_ptr_nonnull(strstr(text, "\ncodeq_trace_spans_exported_total 0\n"));
    free(text);
    cq_metrics_destroy(m);

    /* A bad endpoint is refused at start, naming the setting. */
    snprintf(cfg.otlp_endpoint, sizeof(cfg.otlp_endpoint), "ftp://127.0.0.1/");
    ck_assert_int_eq(cq_tracing_start(&cfg, "codeq-test", NULL, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "otlp_endpoint"));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("tracing");
    TCase *tc = tcase_create("fleet");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_off_passes_a_context_on_unchanged);
    tcase_add_test(tc, test_request_fields_and_state);
    tcase_add_test(tc, test_on_makes_children_and_spans);
    tcase_add_test(tc, test_dead_collector_counts_drops);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
