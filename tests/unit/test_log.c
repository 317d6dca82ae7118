/* tests/unit/test_log.c - fleet/log.c: the JSON lines the daemons write on stderr.
 *
 * Each test captures stderr through a pipe (dup2), so it reads exactly what a log
 * shipper would, and parses every line with jansson. */
#define _GNU_SOURCE
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fleet/log.h"
#include "unit.h"

static int pipe_read = -1, saved_stderr = -1;

static void capture_begin(void)
{
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    saved_stderr = dup(STDERR_FILENO);
    ck_assert_int_ge(saved_stderr, 0);
    ck_assert_int_ge(dup2(p[1], STDERR_FILENO), 0);
    close(p[1]);
    pipe_read = p[0];
}

/* What was written since capture_begin() (malloc'd); stderr is back as it was. */
static char *capture_end(void)
{
    dup2(saved_stderr, STDERR_FILENO); /* closes the pipe's last write end */
    close(saved_stderr);
    size_t len = 0, cap = 4096;
    char *text = malloc(cap);
    ck_assert_ptr_nonnull(text);
    ssize_t n;
    while ((n = read(pipe_read, text + len, cap - len - 1)) > 0) {
        len += (size_t)n;
        if (cap - len < 2) {
            text = realloc(text, cap *= 2);
            ck_assert_ptr_nonnull(text);
        }
    }
    close(pipe_read);
    text[len] = '\0';
    return text;
}

/* The lines of text, each parsed: every line must be one JSON object. */
static size_t parse_lines(const char *text, json_t **out, size_t max)
{
    size_t n = 0;
    const char *p = text;
    while (*p != '\0') {
        const char *nl = strchr(p, '\n');
        ck_assert_msg(nl != NULL, "a line without its newline: %s", p);
        ck_assert_uint_lt(n, max);
        json_error_t e;
        out[n] = json_loadb(p, (size_t)(nl - p), 0, &e);
        ck_assert_msg(out[n] != NULL && json_is_object(out[n]), "not a JSON object (%s): %.*s",
                      e.text, (int)(nl - p), p);
        n++;
        p = nl + 1;
    }
    return n;
}

/* The one line that body writes. */
#define ONE_LINE(line, body)                                                                       \
    do {                                                                                           \
        capture_begin();                                                                           \
        body;                                                                                      \
        char *text_ = capture_end();                                                               \
        ck_assert_uint_eq(parse_lines(text_, &(line), 1), 1);                                      \
        free(text_);                                                                               \
    } while (0)

static const char *str(json_t *line, const char *key)
{
    return json_string_value(json_object_get(line, key));
}

START_TEST(test_fixed_keys_and_fields_of_each_kind)
{
    cq_log_setup("tester", "debug");
    json_t *line;
    ONE_LINE(line, cq_log_event(CQ_LOG_WARN, "session_moved",
                                CQ_FIELDS(CQ_LS("session_id", "s1"), CQ_LI("fence", 7),
                                          CQ_LI("big", INT64_MIN), CQ_LR("duration_ms", 8000.742),
                                          CQ_LR("nan", NAN), CQ_LB("yes", 1), CQ_LB("no", 0),
                                          CQ_LS("absent", NULL), CQ_LS("empty", "")),
                                "session %s moved \"quoted\"\nsecond line", "s1"));
    ck_assert_str_eq(str(line, "level"), "warn");
    ck_assert_str_eq(str(line, "component"), "tester");
    ck_assert_str_eq(str(line, "event"), "session_moved");
    ck_assert_str_eq(str(line, "msg"), "session s1 moved \"quoted\"\nsecond line");
    /* 2026-12-07T12:37:00.123Z */
    const char *ts = str(line, "ts");
    ck_assert_ptr_nonnull(ts);
    ck_assert_uint_eq(strlen(ts), 24);
    ck_assert(ts[4] == '-' && ts[10] == 'T' && ts[19] == '.' && ts[23] == 'Z');
    ck_assert_str_eq(str(line, "session_id"), "s1");
    ck_assert(json_is_integer(json_object_get(line, "fence")));
    ck_assert_int_eq(json_integer_value(json_object_get(line, "fence")), 7);
    ck_assert(json_integer_value(json_object_get(line, "big")) == INT64_MIN);
    ck_assert(json_is_real(json_object_get(line, "duration_ms")));
    ck_assert_double_eq(json_real_value(json_object_get(line, "duration_ms")), 8000.742);
    ck_assert(json_is_true(json_object_get(line, "yes")));
    ck_assert(json_is_false(json_object_get(line, "no")));
    /* What has no value is left out rather than written as null or "". */
    ck_assert_ptr_null(json_object_get(line, "nan"));
    ck_assert_ptr_null(json_object_get(line, "absent"));
    ck_assert_ptr_null(json_object_get(line, "empty"));
    /* No trace context on this thread. */
    ck_assert_ptr_null(json_object_get(line, "trace_id"));
    /* The order a person reads: the fixed keys first, the message last. */
    const char *order[] = {"ts", "level", "component", "event", "session_id"};
    void *it = json_object_iter(line);
    for (size_t i = 0; i < 5; i++, it = json_object_iter_next(line, it))
        ck_assert_str_eq(json_object_iter_key(it), order[i]);
    const char *last = NULL;
    for (it = json_object_iter(line); it != NULL; it = json_object_iter_next(line, it))
        last = json_object_iter_key(it);
    ck_assert_str_eq(last, "msg");
    json_decref(line);
}
END_TEST

START_TEST(test_reals_print_without_binary_noise)
{
    cq_log_setup("tester", "info");
    capture_begin();
    cq_log_event(CQ_LOG_INFO, "execution", CQ_FIELDS(CQ_LR("duration_ms", 8000.742)), "ran");
    char *text = capture_end();
    ck_assert_msg(strstr(text, "\"duration_ms\":8000.742,") != NULL, "%s", text);
    free(text);
}
END_TEST

START_TEST(test_invalid_utf8_is_replaced_not_dropped)
{
    cq_log_setup("tester", "info");
    json_t *line;
    ONE_LINE(line, cq_log_event(
                       CQ_LOG_INFO, "request_refused",
                       CQ_FIELDS(CQ_LS("tenant", "bad\xff\xfe-tenant"), CQ_LS("request_id", "r1")),
                       "tenant %s refused", "bad\xc3"));
    ck_assert_str_eq(str(line, "tenant"), "bad\xef\xbf\xbd\xef\xbf\xbd-tenant");
    ck_assert_str_eq(str(line, "request_id"), "r1");
    ck_assert_str_eq(str(line, "msg"), "tenant bad\xef\xbf\xbd refused");
    json_decref(line);
}
END_TEST

START_TEST(test_a_field_named_like_a_fixed_key_is_renamed)
{
    cq_log_setup("tester", "info");
    json_t *line;
    ONE_LINE(line, cq_log_event(CQ_LOG_INFO, "worker_started",
                                CQ_FIELDS(CQ_LS("event", "forged"), CQ_LS("msg", "forged msg"),
                                          CQ_LS("level", "error"), CQ_LS("trace_id", "t"),
                                          CQ_LI("ts", 1)),
                                "started"));
    ck_assert_str_eq(str(line, "event"), "worker_started");
    ck_assert_str_eq(str(line, "msg"), "started");
    ck_assert_str_eq(str(line, "level"), "info");
    ck_assert_str_eq(str(line, "field_event"), "forged");
    ck_assert_str_eq(str(line, "field_msg"), "forged msg");
    ck_assert_str_eq(str(line, "field_level"), "error");
    ck_assert_str_eq(str(line, "field_trace_id"), "t");
    ck_assert_int_eq(json_integer_value(json_object_get(line, "field_ts")), 1);
    ck_assert_ptr_null(json_object_get(line, "trace_id"));
    ck_assert(json_is_string(json_object_get(line, "ts")));
    json_decref(line);
}
END_TEST

#define TRACEPARENT "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

static void *other_thread(void *arg)
{
    (void)arg;
    cq_log_event(CQ_LOG_INFO, "other", CQ_NO_FIELDS, "from the other thread");
    return NULL;
}

START_TEST(test_trace_ids_on_this_threads_lines_only)
{
    cq_log_setup("tester", "info");
    struct cq_tracectx ctx;
    ck_assert_int_eq(cq_tracectx_parse(TRACEPARENT, NULL, &ctx), 0);
    capture_begin();
    cq_log_set_trace(&ctx);
    cq_log_event(CQ_LOG_INFO, "mine", CQ_FIELDS(CQ_LS("request_id", "r1")), "traced");
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, other_thread, NULL), 0);
    pthread_join(t, NULL);
    cq_log_set_trace(NULL);
    cq_log_event(CQ_LOG_INFO, "cleared", CQ_NO_FIELDS, "no longer traced");
    char *text = capture_end();
    json_t *lines[3];
    ck_assert_uint_eq(parse_lines(text, lines, 3), 3);
    free(text);
    ck_assert_str_eq(str(lines[0], "event"), "mine");
    ck_assert_str_eq(str(lines[0], "trace_id"), "4bf92f3577b34da6a3ce929d0e0e4736");
    ck_assert_str_eq(str(lines[0], "span_id"), "00f067aa0ba902b7");
    ck_assert_str_eq(str(lines[1], "event"), "other");
    ck_assert_ptr_null(json_object_get(lines[1], "trace_id"));
    ck_assert_ptr_null(json_object_get(lines[1], "span_id"));
    ck_assert_str_eq(str(lines[2], "event"), "cleared");
    ck_assert_ptr_null(json_object_get(lines[2], "trace_id"));
    for (size_t i = 0; i < 3; i++)
        json_decref(lines[i]);
}
END_TEST

START_TEST(test_level_threshold)
{
    static const struct {
        const char *setting;
        bool written[4]; /* debug, info, warn, error */
    } cases[] = {
        {"debug", {true, true, true, true}},   {"info", {false, true, true, true}},
        {"warn", {false, false, true, true}},  {"error", {false, false, false, true}},
        {"off", {false, false, false, false}}, {NULL, {false, true, true, true}},
    };
    static const char *const names[] = {"debug", "info", "warn", "error"};
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        cq_log_setup("tester", "debug"); /* NULL is info, whatever was set before */
        cq_log_setup("tester", cases[c].setting);
        capture_begin();
        for (int l = CQ_LOG_DEBUG; l <= CQ_LOG_ERROR; l++)
            cq_log_event((enum cq_log_level)l, "level_test", CQ_FIELDS(CQ_LI("n", l)), "%s",
                         names[l]);
        char *text = capture_end();
        json_t *lines[4];
        size_t n = parse_lines(text, lines, 4);
        free(text);
        size_t k = 0;
        for (int l = CQ_LOG_DEBUG; l <= CQ_LOG_ERROR; l++) {
            ck_assert_msg(cq_log_enabled((enum cq_log_level)l) == cases[c].written[l],
                          "%s: enabled(%s)", cases[c].setting ? cases[c].setting : "NULL",
                          names[l]);
            if (!cases[c].written[l])
                continue;
            ck_assert_uint_lt(k, n);
            ck_assert_str_eq(str(lines[k], "level"), names[l]);
            ck_assert_str_eq(str(lines[k], "msg"), names[l]);
            k++;
        }
        ck_assert_uint_eq(k, n);
        for (size_t i = 0; i < n; i++)
            json_decref(lines[i]);
    }
}
END_TEST

START_TEST(test_a_long_message_is_cut_and_the_line_stays_json)
{
    cq_log_setup("tester", "info");
    char *big = malloc(10000);
    memset(big, 'x', 9999);
    big[9999] = '\0';
    json_t *line;
    ONE_LINE(line, cq_log_event(CQ_LOG_INFO, "big", CQ_FIELDS(CQ_LS("value", big)), "%s", big));
    ck_assert_uint_eq(strlen(str(line, "value")), 9999); /* fields are not cut */
    ck_assert_uint_lt(strlen(str(line, "msg")), 9999);
    ck_assert_uint_gt(strlen(str(line, "msg")), 1000);
    json_decref(line);
    free(big);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("log");
    TCase *tc = tcase_create("lines");
    tcase_add_test(tc, test_fixed_keys_and_fields_of_each_kind);
    tcase_add_test(tc, test_reals_print_without_binary_noise);
    tcase_add_test(tc, test_invalid_utf8_is_replaced_not_dropped);
    tcase_add_test(tc, test_a_field_named_like_a_fixed_key_is_renamed);
    tcase_add_test(tc, test_trace_ids_on_this_threads_lines_only);
    tcase_add_test(tc, test_level_threshold);
    tcase_add_test(tc, test_a_long_message_is_cut_and_the_line_stays_json);
    suite_add_tcase(s, tc);
    return cq_unit_run(s, true);
}
