/* tests/unit/test_worker_metrics.c - what the worker core counts (worker/metrics.c):
 * the counting logic on its own (a counter read in any order by several threads,
 * output dropped past a capture's limit), then a real worker with a registry: every
 * call counted once by tool, language, interpreter, outcome and error code; sessions
 * started and stopped; output dropped per stream; pids-limit hits; network bytes only
 * while calls run, those of overlapping calls once; gauges set at render; and a worker
 * destroyed before its registry leaves nothing a scrape reads.
 *
 * Needs what test_worker needs (root, python3, the source tree's runtimes). */
#define _GNU_SOURCE
#include "worker/session.h"
#include "host_cgroups.h"
#include "unit.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef CQ_SOURCE_DIR
#error "CQ_SOURCE_DIR must name the source tree (for its runtimes/)"
#endif

/* The value of the sample whose line starts with series (name and labels exactly as
 * rendered), or -1 when the scrape has no such line. */
static double sample(struct cq_metrics *reg, const char *series)
{
    char *text = NULL;
    size_t len = 0;
    struct cq_error err = {0};
    ck_assert_msg(cq_metrics_render(reg, &text, &len, &err) == 0, "render: %s", err.msg);
    double v = -1;
    size_t n = strlen(series);
    for (char *line = text; line != NULL && *line != '\0';) {
        char *end = strchr(line, '\n');
        if (strncmp(line, series, n) == 0 && line[n] == ' ')
            v = strtod(line + n + 1, NULL);
        line = end != NULL ? end + 1 : NULL;
    }
    free(text);
    return v;
}

/* --- the counting logic -------------------------------------------------------------- */

START_TEST(counter_readings_in_any_order_count_each_event_once)
{
    _Atomic uint64_t seen = 0;
    uint64_t delta = 99;
    ck_assert(!cq_counter_advance(&seen, 0, &delta));
    ck_assert_uint_eq(delta, 0);
    ck_assert(cq_counter_advance(&seen, 3, &delta));
    ck_assert_uint_eq(delta, 3);
    /* A thread that read 2 before another read 3 reports late: nothing new. */
    ck_assert(!cq_counter_advance(&seen, 2, &delta));
    ck_assert(!cq_counter_advance(&seen, 3, &delta));
    ck_assert(cq_counter_advance(&seen, 10, &delta));
    ck_assert_uint_eq(delta, 7);
    ck_assert_uint_eq(atomic_load(&seen), 10);
}
END_TEST

struct racer {
    _Atomic uint64_t *seen;
    uint64_t counted;
};

static void *race(void *arg)
{
    struct racer *r = arg;
    uint64_t delta;
    for (uint64_t now = 1; now <= 100000; now++)
        if (cq_counter_advance(r->seen, now, &delta))
            r->counted += delta;
    return NULL;
}

START_TEST(concurrent_readings_add_up_to_the_counter)
{
    _Atomic uint64_t seen = 0;
    struct racer r[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        r[i] = (struct racer){.seen = &seen};
        pthread_create(&t[i], NULL, race, &r[i]);
    }
    uint64_t total = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        total += r[i].counted;
    }
    ck_assert_uint_eq(total, 100000);
}
END_TEST

START_TEST(capture_counts_what_it_drops)
{
    struct cq_metrics *reg;
    struct cq_error err = {0};
    ck_assert(cq_metrics_create(&reg, &err) == 0);
    struct cq_metric *f = cq_metrics_counter(reg, "dropped_total", "", NULL, &err);
    struct cq_capture c;
    cq_capture_init(&c, 10);
    c.dropped = cq_metric_child(f, NULL);
    cq_capture_append(&c, "123456", 6);
    ck_assert(sample(reg, "dropped_total") == 0);
    /* Head 5 bytes, ring 5: the ring keeps "defgh", "1234 56abc" lose "6abc". */
    cq_capture_append(&c, "abcdefgh", 8); /* 4 kept, 4 dropped */
    cq_capture_append(&c, "xyz", 3);
    ck_assert(sample(reg, "dropped_total") == 7);
    ck_assert_uint_eq(c.len + c.tail_len, 10);
    ck_assert_uint_eq(c.total, 17);
    cq_capture_free(&c);

    /* 5 MB through a limit of 1000 in uneven chunks: the head and the ring keep 1000,
     * every other byte is counted once, whether it never entered or was pushed out. */
    struct cq_metric *g = cq_metrics_counter(reg, "dropped_big_total", "", NULL, &err);
    cq_capture_init(&c, 1000);
    c.dropped = cq_metric_child(g, NULL);
    static char chunk[70000];
    memset(chunk, 'z', sizeof(chunk));
    uint64_t sent = 0;
    for (size_t n = 1; sent < 5000000; n = n * 7 % sizeof(chunk) + 1) {
        cq_capture_append(&c, chunk, n);
        sent += n;
    }
    ck_assert_uint_eq(c.len + c.tail_len, 1000);
    ck_assert(sample(reg, "dropped_big_total") == (double)(sent - 1000));
    cq_capture_free(&c);
    cq_metrics_destroy(reg);
}
END_TEST

/* --- a worker with a registry ------------------------------------------------------------ */

static struct cq_worker *w;
static struct cq_metrics *reg;

static void setup(void)
{
    if (getenv("CODEQ_SANDBOX_INIT") == NULL)
        setenv("CODEQ_SANDBOX_INIT", CQ_BUILD_DIR "/bin/codeq-sandbox-init", 0);
    setenv("CODEQ_RUNTIMES_DIR", CQ_SOURCE_DIR "/runtimes", 1);
    struct cq_error err = {0};
    ck_assert(cq_metrics_create(&reg, &err) == 0);
    w = NULL;
}

static void teardown(void)
{
    cq_worker_destroy(w);
    w = NULL;
    cq_metrics_destroy(reg);
    reg = NULL;
    ck_assert_msg(count_own_cgroups() == 0, "sandbox cgroups left after cq_worker_destroy");
}

static void make_worker(uint64_t output_limit)
{
    struct cq_worker_config cfg;
    cq_worker_config_init(&cfg);
    cfg.warm_pool_size = 0;
    cfg.max_sessions = 7;
    cfg.output_limit_bytes = output_limit;
    cfg.metrics = reg;
    struct cq_error err = {0};
    ck_assert_msg(cq_worker_create(&cfg, &w, &err) == 0, "worker: %s", err.msg);
}

static struct cq_session_info start(uint64_t pids)
{
    struct cq_session_params p = {.limits = {.pids = pids}};
    struct cq_session_info info;
    struct cq_error err = {0};
    ck_assert_msg(cq_worker_start_session(w, &p, &info, &err) == 0, "start: %s", err.msg);
    return info;
}

static void invoke(const char *id, const char *tool, const struct cq_invoke_args *a,
                   enum cq_result_error want)
{
    struct cq_result r;
    cq_worker_invoke(w, id, tool, a, NULL, NULL, &r);
    ck_assert_msg(r.error_code == want, "%s: %s, want %s", tool, cq_result_error_name(r.error_code),
                  cq_result_error_name(want));
    cq_result_free(&r);
}

#define EXEC(tool, language, outcome, code)                                                        \
    "codeq_executions_total{tool=\"" tool "\",language=\"" language                                \
    "\",interpreter=\"codeq.default\",outcome=\"" outcome "\",error_code=\"" code "\"}"

START_TEST(calls_and_sessions_are_counted)
{
    make_worker(1000);
    /* Every family is described from the start, before anything happened. */
    ck_assert(sample(reg, "codeq_sessions_live") == 0);
    ck_assert(sample(reg, "codeq_capacity_sessions") == 7);
    ck_assert(sample(reg, "codeq_capacity_memory_bytes") > 0);
    struct cq_session_info a = start(0);
    struct cq_session_info b = start(0);
    ck_assert(sample(reg, "codeq_sessions_started_total{interpreter=\"codeq.default\"}") == 2);
    ck_assert(sample(reg, "codeq_sessions_live") == 2);
    ck_assert(sample(reg, "codeq_sessions_memory_limit_bytes") == (double)(2 * a.memory_bytes));

    invoke(a.session_id, "executeCode", &(struct cq_invoke_args){.code = "x = 1"}, CQ_RESULT_OK);
    invoke(a.session_id, "executeCode", &(struct cq_invoke_args){.code = "x"}, CQ_RESULT_OK);
    invoke(a.session_id, "executeCode", &(struct cq_invoke_args){.code = "raise ValueError()"},
           CQ_RESULT_OK);
    invoke(a.session_id, "executeCode",
           &(struct cq_invoke_args){.code = "import time; time.sleep(30)", .timeout_s = 0.5},
           CQ_RESULT_TIMED_OUT);
    invoke(a.session_id, "executeCode", &(struct cq_invoke_args){.code = "1", .language = "cobol"},
           CQ_RESULT_INVALID_ARGUMENT);
    invoke("nobody", "executeCommand", &(struct cq_invoke_args){.command = "true"},
           CQ_RESULT_NOT_FOUND);
    invoke(b.session_id, "noSuchTool", &(struct cq_invoke_args){0}, CQ_RESULT_INVALID_ARGUMENT);
    /* 1500 bytes on stdout and 1200 on stderr past a limit of 1000 a stream. */
    invoke(
        b.session_id, "executeCommand",
        &(struct cq_invoke_args){.command = "head -c 1500 /dev/zero; head -c 1200 /dev/zero >&2"},
        CQ_RESULT_OK);

    ck_assert(sample(reg, EXEC("executeCode", "python", "ok", "NONE")) == 2);
    ck_assert(sample(reg, EXEC("executeCode", "python", "user_error", "NONE")) == 1);
    ck_assert(sample(reg, EXEC("executeCode", "python", "timeout", "TIMED_OUT")) == 1);
    /* A language nobody knows is not a label value: the client wrote it. */
    ck_assert(sample(reg, EXEC("executeCode", "none", "user_error", "INVALID_ARGUMENT")) == 1);
    ck_assert(sample(reg, EXEC("executeCommand", "none", "ok", "NONE")) == 1);
    ck_assert(sample(reg,
                     "codeq_executions_total{tool=\"executeCommand\",language=\"none\","
                     "interpreter=\"none\",outcome=\"user_error\",error_code=\"NOT_FOUND\"}") == 1);
    ck_assert(sample(reg, "codeq_executions_total{tool=\"unknown\",language=\"none\","
                          "interpreter=\"none\",outcome=\"user_error\","
                          "error_code=\"INVALID_ARGUMENT\"}") == 1);
    ck_assert(sample(reg, "codeq_execution_run_seconds_count{tool=\"executeCode\"}") == 5);
    ck_assert(sample(reg, "codeq_execution_run_seconds_count{tool=\"executeCommand\"}") == 2);
    ck_assert(sample(reg, "codeq_output_dropped_bytes_total{stream=\"stdout\"}") == 500);
    ck_assert(sample(reg, "codeq_output_dropped_bytes_total{stream=\"stderr\"}") == 200);
    /* Calls in a session measure its sandbox (the cgroup's peak is always known). */
    ck_assert(sample(reg, "codeq_sandbox_peak_memory_bytes_count") == 6);

    struct cq_error err = {0};
    ck_assert(cq_worker_stop_session(w, a.session_id, &a, &err) == 0);
    ck_assert(sample(reg, "codeq_sessions_ended_total{reason=\"stopped\"}") == 1);
    ck_assert(sample(reg, "codeq_sessions_ended_total{reason=\"expired\"}") == 0);
    ck_assert(sample(reg, "codeq_sessions_live") == 1);
}
END_TEST

START_TEST(pids_limit_hits_are_counted)
{
    make_worker(0);
    struct cq_session_info s = start(16);
    ck_assert(sample(reg, "codeq_sandbox_pids_limit_hits_total") == 0);
    struct cq_result r;
    struct cq_invoke_args a = {.command =
                                   "i=0; while [ $i -lt 40 ]; do sleep 2 & i=$((i+1)); done; wait",
                               .timeout_s = 20};
    cq_worker_invoke(w, s.session_id, "executeCommand", &a, NULL, NULL, &r);
    cq_result_free(&r);
    ck_assert_msg(sample(reg, "codeq_sandbox_pids_limit_hits_total") >= 1, "no hit counted");
}
END_TEST

#define NET(sent, received) (&(struct cq_sandbox_net_stats){sent, received})

/* The egress counters of a session's sandbox as calls read them around themselves:
 * only traffic while calls ran, that of overlapping calls once. */
START_TEST(network_traffic_is_counted_once_and_only_during_calls)
{
    make_worker(0);
    struct cq_session s = {0};
    /* Before its first call the sandbox had traffic already (a pooled one): not counted. */
    cq_wmetrics_network_begin(w, &s, NET(100, 1000));
    cq_wmetrics_network_end(w, &s, NET(150, 1500));
    ck_assert(sample(reg, "codeq_sandbox_network_bytes_total{direction=\"sent\"}") == 50);
    ck_assert(sample(reg, "codeq_sandbox_network_bytes_total{direction=\"received\"}") == 500);
    /* Idle until 200/2000, then two calls that overlap: 200..300 once, not 60 + 80. */
    cq_wmetrics_network_begin(w, &s, NET(200, 2000));
    cq_wmetrics_network_begin(w, &s, NET(220, 2200));
    cq_wmetrics_network_end(w, &s, NET(260, 2600));
    cq_wmetrics_network_end(w, &s, NET(300, 3000));
    ck_assert(sample(reg, "codeq_sandbox_network_bytes_total{direction=\"sent\"}") == 150);
    ck_assert(sample(reg, "codeq_sandbox_network_bytes_total{direction=\"received\"}") == 1500);
    /* A call whose reading is older than one already counted adds nothing. */
    cq_wmetrics_network_begin(w, &s, NET(300, 3000));
    cq_wmetrics_network_begin(w, &s, NET(310, 3100));
    cq_wmetrics_network_end(w, &s, NET(320, 3200));
    cq_wmetrics_network_end(w, &s, NET(315, 3150));
    ck_assert(sample(reg, "codeq_sandbox_network_bytes_total{direction=\"sent\"}") == 170);
    /* A call whose counters could not be read counts nothing, and still ends: the
     * next one skips the idle traffic again. */
    cq_wmetrics_network_begin(w, &s, NET(400, 4000));
    cq_wmetrics_network_end(w, &s, NULL);
    cq_wmetrics_network_begin(w, &s, NET(500, 5000));
    cq_wmetrics_network_end(w, &s, NET(510, 5100));
    ck_assert(sample(reg, "codeq_sandbox_network_bytes_total{direction=\"sent\"}") == 180);
    ck_assert(sample(reg, "codeq_sandbox_network_bytes_total{direction=\"received\"}") == 1800);
}
END_TEST

START_TEST(a_destroyed_worker_is_no_longer_read)
{
    make_worker(0);
    start(0);
    ck_assert(sample(reg, "codeq_sessions_live") == 1);
    cq_worker_destroy(w);
    w = NULL;
    /* The registry outlives the worker: a scrape now must not read its tables (ASan
     * would report it), and shows what was counted. */
    ck_assert(sample(reg, "codeq_sessions_started_total{interpreter=\"codeq.default\"}") == 1);
}
END_TEST

START_TEST(a_name_taken_otherwise_is_refused)
{
    struct cq_error err = {0};
    ck_assert(cq_metrics_counter(reg, "codeq_sessions_live", "", NULL, &err) != NULL);
    struct cq_worker_config cfg;
    cq_worker_config_init(&cfg);
    cfg.warm_pool_size = 0;
    cfg.metrics = reg;
    ck_assert_int_eq(cq_worker_create(&cfg, &w, &err), -1);
    ck_assert_msg(strstr(err.msg, "codeq_sessions_live") != NULL, "%s", err.msg);
    w = NULL;
}
END_TEST

static Suite *worker_metrics_suite(void)
{
    Suite *s = suite_create("worker_metrics");
    TCase *tc = tcase_create("logic");
    tcase_add_test(tc, counter_readings_in_any_order_count_each_event_once);
    tcase_add_test(tc, concurrent_readings_add_up_to_the_counter);
    tcase_add_test(tc, capture_counts_what_it_drops);
    suite_add_tcase(s, tc);

    tc = tcase_create("worker");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, calls_and_sessions_are_counted);
    tcase_add_test(tc, pids_limit_hits_are_counted);
    tcase_add_test(tc, network_traffic_is_counted_once_and_only_during_calls);
    tcase_add_test(tc, a_destroyed_worker_is_no_longer_read);
    tcase_add_test(tc, a_name_taken_otherwise_is_refused);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return cq_unit_run(worker_metrics_suite(), true);
}
