/* tests/unit/test_otlp.c - the span exporter against a collector on loopback (codeq's
 * own HTTP listener, reading what arrives as JSON), and against none. */
#include <check.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "http/http.h"
#include "http/otlp.h"

/* What the collector received: every body, as JSON. */
static pthread_mutex_t got_lock = PTHREAD_MUTEX_INITIALIZER;
static json_t *got_bodies;
static int collector_status = 200;

static void collector(void *ctx, const struct cq_http_request *req, struct cq_http_response *resp)
{
    (void)ctx;
    const char *type = cq_http_header(req, "Content-Type");
    json_t *body = json_loadb((const char *)req->body, req->body_len, 0, NULL);
    pthread_mutex_lock(&got_lock);
    if (body != NULL && strcmp(req->method, "POST") == 0 && strcmp(req->path, "/v1/traces") == 0 &&
        type != NULL && strcmp(type, "application/json") == 0)
        json_array_append_new(got_bodies, body);
    else
        json_decref(body);
    pthread_mutex_unlock(&got_lock);
    cq_http_respond(resp, collector_status, "{}");
}

static struct cq_http_server *start_collector(char *endpoint, size_t n)
{
    struct cq_error err;
    struct cq_http_config cfg = {.listen = "127.0.0.1:0", .handler = collector};
    struct cq_http_server *s;
    ck_assert_msg(cq_http_start(&cfg, &s, &err) == 0, "%s", err.msg);
    snprintf(endpoint, n, "http://127.0.0.1:%u/v1/traces", cq_http_port(s));
    got_bodies = json_array();
    return s;
}

/* Every span the collector got, flattened. */
static json_t *all_spans(void)
{
    json_t *spans = json_array();
    size_t i;
    json_t *body;
    json_array_foreach(got_bodies, i, body)
    {
        json_t *rs = json_array_get(json_object_get(body, "resourceSpans"), 0);
        json_t *attr =
            json_array_get(json_object_get(json_object_get(rs, "resource"), "attributes"), 0);
        ck_assert_str_eq(json_string_value(json_object_get(attr, "key")), "service.name");
        ck_assert_str_eq(
            json_string_value(json_object_get(json_object_get(attr, "value"), "stringValue")),
            "codeq-test");
        json_t *ss = json_array_get(json_object_get(rs, "scopeSpans"), 0);
        json_array_extend(spans, json_object_get(ss, "spans"));
    }
    return spans;
}

static const char *field(json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

START_TEST(test_spans_reach_the_collector)
{
    char endpoint[128];
    struct cq_http_server *col = start_collector(endpoint, sizeof(endpoint));
    struct cq_error err;
    struct cq_metrics *m;
    ck_assert_int_eq(cq_metrics_create(&m, &err), 0);
    struct cq_tracer_config cfg = {
        .endpoint = endpoint, .service_name = "codeq-test", .interval_ms = 50, .metrics = m};
    struct cq_tracer *t;
    ck_assert_msg(cq_tracer_create(&cfg, &t, &err) == 0, "%s", err.msg);

    struct cq_tracectx root, child;
    ck_assert_int_eq(
        cq_tracectx_parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "k=v", &root),
        0);
    cq_tracectx_child(&root, &child);
    struct cq_span s = {
        .ctx = &child,
        .name = "worker.execute",
        .kind = CQ_SPAN_CONSUMER,
        .start_unix_ns = 1700000000000000001ULL,
        .end_unix_ns = 1700000000500000002ULL,
        .error = true,
        .error_message = "TIMED_OUT",
        .attrs = {{.key = "codeq.tool", .text = "executeCode"},
                  {.key = "codeq.bytes", .number = -42}},
        .n_attrs = 2,
    };
    cq_tracer_submit(t, &s);
    cq_tracer_destroy(t); /* flushes */

    json_t *spans = all_spans();
    ck_assert_uint_eq(json_array_size(spans), 1);
    json_t *o = json_array_get(spans, 0);
    ck_assert_str_eq(field(o, "traceId"), "4bf92f3577b34da6a3ce929d0e0e4736");
    ck_assert_str_eq(field(o, "parentSpanId"), "00f067aa0ba902b7");
    char span_hex[17];
    cq_tracectx_hex(child.span_id, 8, span_hex);
    ck_assert_str_eq(field(o, "spanId"), span_hex);
    ck_assert_str_eq(field(o, "name"), "worker.execute");
    ck_assert_int_eq(json_integer_value(json_object_get(o, "kind")), 5);
    ck_assert_str_eq(field(o, "startTimeUnixNano"), "1700000000000000001");
    ck_assert_str_eq(field(o, "endTimeUnixNano"), "1700000000500000002");
    ck_assert_str_eq(field(o, "traceState"), "k=v");
    json_t *status = json_object_get(o, "status");
    ck_assert_int_eq(json_integer_value(json_object_get(status, "code")), 2);
    ck_assert_str_eq(field(status, "message"), "TIMED_OUT");
    json_t *attrs = json_object_get(o, "attributes");
    ck_assert_str_eq(field(json_array_get(attrs, 0), "key"), "codeq.tool");
    ck_assert_str_eq(field(json_object_get(json_array_get(attrs, 0), "value"), "stringValue"),
                     "executeCode");
    ck_assert_str_eq(field(json_object_get(json_array_get(attrs, 1), "value"), "intValue"), "-42");

    char *text;
    size_t len;
    ck_assert_int_eq(cq_metrics_render(m, &text, &len, &err), 0);
    ck_assert_ptr_nonnull(strstr(text, "\ncodeq_trace_spans_exported_total 1\n"));
    free(text);
    json_decref(spans);
    json_decref(got_bodies);
    cq_metrics_destroy(m);
    cq_http_stop(col);
}
END_TEST

/* Texts are copied at submit, and long ones cut at a character boundary: the caller's
 * buffer may be gone by export time, and the JSON must stay valid UTF-8. */
START_TEST(test_texts_are_copied_and_cut_whole)
{
    char endpoint[128];
    struct cq_http_server *col = start_collector(endpoint, sizeof(endpoint));
    struct cq_error err;
    struct cq_tracer_config cfg = {
        .endpoint = endpoint, .service_name = "codeq-test", .interval_ms = 50};
    struct cq_tracer *t;
    ck_assert_msg(cq_tracer_create(&cfg, &t, &err) == 0, "%s", err.msg);
    struct cq_tracectx ctx;
    cq_tracectx_new(&ctx);
    char *name = strdup("codeq.request");
    char *value = malloc(1000);
    for (int i = 0; i < 333; i++)
        memcpy(value + 3 * i, "\xe2\x82\xac", 3); /* U+20AC, three bytes each */
    value[999] = '\0';
    struct cq_span s = {.ctx = &ctx,
                        .name = name,
                        .kind = CQ_SPAN_INTERNAL,
                        .start_unix_ns = 1,
                        .end_unix_ns = 2,
                        .attrs = {{.key = "codeq.long", .text = value}},
                        .n_attrs = 1};
    cq_tracer_submit(t, &s);
    memset(name, 'x', strlen(name)); /* the caller's buffers change after the call */
    memset(value, 0, 1000);
    free(name);
    free(value);
    cq_tracer_destroy(t);

    json_t *spans = all_spans();
    ck_assert_uint_eq(json_array_size(spans), 1);
    json_t *o = json_array_get(spans, 0);
    ck_assert_str_eq(field(o, "name"), "codeq.request");
    const char *got =
        field(json_object_get(json_array_get(json_object_get(o, "attributes"), 0), "value"),
              "stringValue");
    ck_assert_ptr_nonnull(got);
    size_t n = strlen(got);
    ck_assert_uint_gt(n, 100);
    ck_assert_uint_lt(n, 999);
    ck_assert_uint_eq(n % 3, 0); /* whole characters only */
    ck_assert_int_eq(memcmp(got, "\xe2\x82\xac", 3), 0);
    json_decref(spans);
    json_decref(got_bodies);
    cq_http_stop(col);
}
END_TEST

START_TEST(test_batches_and_root_spans)
{
    char endpoint[128];
    struct cq_http_server *col = start_collector(endpoint, sizeof(endpoint));
    struct cq_error err;
    struct cq_tracer_config cfg = {
        .endpoint = endpoint, .service_name = "codeq-test", .max_batch = 4, .interval_ms = 50};
    struct cq_tracer *t;
    ck_assert_int_eq(cq_tracer_create(&cfg, &t, &err), 0);
    for (int i = 0; i < 10; i++) {
        struct cq_tracectx c;
        cq_tracectx_new(&c);
        struct cq_span s = {.ctx = &c, .name = "root", .kind = CQ_SPAN_SERVER};
        cq_tracer_submit(t, &s);
    }
    cq_tracer_destroy(t);
    json_t *spans = all_spans();
    ck_assert_uint_eq(json_array_size(spans), 10);
    ck_assert_uint_ge(json_array_size(got_bodies), 3); /* at most 4 a request */
    size_t i;
    json_t *body;
    json_array_foreach(got_bodies, i, body)
    {
        json_t *ss = json_array_get(
            json_object_get(json_array_get(json_object_get(body, "resourceSpans"), 0),
                            "scopeSpans"),
            0);
        ck_assert_uint_le(json_array_size(json_object_get(ss, "spans")), 4);
    }
    /* A root span has no parent and no status (unset). */
    ck_assert_ptr_null(json_object_get(json_array_get(spans, 0), "parentSpanId"));
    ck_assert_ptr_null(json_object_get(json_array_get(spans, 0), "status"));
    json_decref(spans);
    json_decref(got_bodies);
    cq_http_stop(col);
}
END_TEST

START_TEST(test_dead_or_refusing_collector)
{
    struct cq_error err;
    /* Nothing listens: a port the listener had and gave back. */
    char endpoint[128];
    struct cq_http_server *col = start_collector(endpoint, sizeof(endpoint));
    cq_http_stop(col);
    json_decref(got_bodies);
    struct cq_tracer_config cfg = {
        .endpoint = endpoint, .service_name = "codeq-test", .interval_ms = 20, .timeout_ms = 500};
    struct cq_tracer *t;
    ck_assert_int_eq(cq_tracer_create(&cfg, &t, &err), 0);
    struct cq_tracectx c;
    cq_tracectx_new(&c);
    struct cq_span s = {.ctx = &c, .name = "x", .kind = CQ_SPAN_INTERNAL};
    for (int i = 0; i < 10; i++)
        cq_tracer_submit(t, &s);
    cq_tracer_destroy(t);

    /* A collector that answers 503: dropped as failed, never counted as exported. */
    col = start_collector(endpoint, sizeof(endpoint));
    collector_status = 503;
    ck_assert_int_eq(cq_tracer_create(&cfg, &t, &err), 0);
    for (int i = 0; i < 3; i++)
        cq_tracer_submit(t, &s);
    usleep(300 * 1000);
    struct cq_tracer_stats st;
    cq_tracer_stats(t, &st);
    ck_assert_uint_eq(st.exported, 0);
    ck_assert_uint_eq(st.dropped_error, 3);
    cq_tracer_destroy(t);
    collector_status = 200;
    json_decref(got_bodies);
    cq_http_stop(col);
}
END_TEST

START_TEST(test_full_queue_drops)
{
    struct cq_error err;
    /* A long interval and a large batch: nothing leaves before the queue is full. */
    struct cq_tracer_config cfg = {.endpoint = "http://127.0.0.1:9/v1/traces",
                                   .max_queue = 2,
                                   .max_batch = 100,
                                   .interval_ms = 60000,
                                   .timeout_ms = 200};
    struct cq_tracer *t;
    ck_assert_int_eq(cq_tracer_create(&cfg, &t, &err), 0);
    struct cq_tracectx c;
    cq_tracectx_new(&c);
    struct cq_span s = {.ctx = &c, .name = "x", .kind = CQ_SPAN_INTERNAL};
    for (int i = 0; i < 5; i++)
        cq_tracer_submit(t, &s);
    struct cq_tracer_stats st;
    cq_tracer_stats(t, &st);
    ck_assert_uint_eq(st.dropped_full, 3);
    cq_tracer_destroy(t);
}
END_TEST

START_TEST(test_bad_endpoint)
{
    struct cq_error err;
    struct cq_tracer *t;
    struct cq_tracer_config cfg = {.endpoint = "file:///etc/passwd"};
    ck_assert_int_eq(cq_tracer_create(&cfg, &t, &err), -1);
    ck_assert_int_eq(err.code, CQ_EINVALID);
    cfg.endpoint = NULL;
    ck_assert_int_eq(cq_tracer_create(&cfg, &t, &err), -1);
    cq_tracer_submit(NULL, NULL); /* a daemon without tracing submits to NULL */
    cq_tracer_destroy(NULL);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("otlp");
    TCase *tc = tcase_create("exporter");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_spans_reach_the_collector);
    tcase_add_test(tc, test_texts_are_copied_and_cut_whole);
    tcase_add_test(tc, test_batches_and_root_spans);
    tcase_add_test(tc, test_dead_or_refusing_collector);
    tcase_add_test(tc, test_full_queue_drops);
    tcase_add_test(tc, test_bad_endpoint);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
