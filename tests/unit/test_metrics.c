/* tests/unit/test_metrics.c - the metrics registry and its text exposition. */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/metrics.h"

static struct cq_metrics *reg;

static void setup(void)
{
    struct cq_error err;
    ck_assert_int_eq(cq_metrics_create(&reg, &err), 0);
}

static void teardown(void)
{
    cq_metrics_destroy(reg);
    reg = NULL;
}

static char *render(void)
{
    char *text = NULL;
    size_t len = 0;
    struct cq_error err;
    ck_assert_int_eq(cq_metrics_render(reg, &text, &len, &err), 0);
    ck_assert_uint_eq(strlen(text), len);
    return text;
}

START_TEST(test_counter_with_labels)
{
    struct cq_error err;
    static const char *const labels[] = {"tool", "outcome", NULL};
    struct cq_metric *f =
        cq_metrics_counter(reg, "codeq_executions_total", "Tool calls run.", labels, &err);
    ck_assert_ptr_nonnull(f);
    cq_metric_add(f, (const char *[]){"executeCode", "ok"}, 1);
    cq_metric_add(f, (const char *[]){"executeCode", "ok"}, 2);
    cq_metric_add(f, (const char *[]){"readFiles", "internal"}, 1);
    cq_metric_add(f, (const char *[]){"readFiles", "internal"}, -5); /* counters never fall */
    char *text = render();
    ck_assert_str_eq(text, "# HELP codeq_executions_total Tool calls run.\n"
                           "# TYPE codeq_executions_total counter\n"
                           "codeq_executions_total{tool=\"executeCode\",outcome=\"ok\"} 3\n"
                           "codeq_executions_total{tool=\"readFiles\",outcome=\"internal\"} 1\n");
    free(text);
}
END_TEST

START_TEST(test_gauge_without_labels_and_escapes)
{
    struct cq_error err;
    struct cq_metric *g =
        cq_metrics_gauge(reg, "codeq_pool_ready", "Warm sandboxes\\ready\nnow.", NULL, &err);
    ck_assert_ptr_nonnull(g);
    struct cq_metric *q = cq_metrics_gauge(reg, "codeq_q", "q", (const char *[]){"v", NULL}, &err);
    ck_assert_ptr_nonnull(q);
    cq_metric_set(g, NULL, 4);
    cq_metric_set(g, NULL, 2.5);
    cq_metric_set(q, (const char *[]){"a\"b\\c\nd"}, -1);
    char *text = render();
    ck_assert_str_eq(text, "# HELP codeq_pool_ready Warm sandboxes\\\\ready\\nnow.\n"
                           "# TYPE codeq_pool_ready gauge\n"
                           "codeq_pool_ready 2.5\n"
                           "# HELP codeq_q q\n"
                           "# TYPE codeq_q gauge\n"
                           "codeq_q{v=\"a\\\"b\\\\c\\nd\"} -1\n");
    free(text);
}
END_TEST

START_TEST(test_histogram_cumulative)
{
    struct cq_error err;
    static const double bounds[] = {0.005, 0.1, 1};
    struct cq_metric *h = cq_metrics_histogram(reg, "codeq_run_seconds", "Run time.",
                                               (const char *[]){"tool", NULL}, bounds, 3, &err);
    ck_assert_ptr_nonnull(h);
    struct cq_metric_child *c = cq_metric_child(h, (const char *[]){"executeCode"});
    cq_metric_child_observe(c, 0.001);
    cq_metric_child_observe(c, 0.005); /* on a bound: in that bucket (le is <=) */
    cq_metric_child_observe(c, 0.5);
    cq_metric_child_observe(c, 7);
    char *text = render();
    ck_assert_str_eq(text, "# HELP codeq_run_seconds Run time.\n"
                           "# TYPE codeq_run_seconds histogram\n"
                           "codeq_run_seconds_bucket{tool=\"executeCode\",le=\"0.005\"} 2\n"
                           "codeq_run_seconds_bucket{tool=\"executeCode\",le=\"0.1\"} 2\n"
                           "codeq_run_seconds_bucket{tool=\"executeCode\",le=\"1\"} 3\n"
                           "codeq_run_seconds_bucket{tool=\"executeCode\",le=\"+Inf\"} 4\n"
                           "codeq_run_seconds_sum{tool=\"executeCode\"} 7.506\n"
                           "codeq_run_seconds_count{tool=\"executeCode\"} 4\n");
    free(text);
}
END_TEST

START_TEST(test_registration_rules)
{
    struct cq_error err;
    static const double bad_bounds[] = {1, 0.5};
    static const double le_bounds[] = {1};
    ck_assert_ptr_null(cq_metrics_counter(reg, "9starts_with_digit", "", NULL, &err));
    ck_assert_int_eq(err.code, CQ_EINVALID);
    ck_assert_ptr_null(cq_metrics_counter(reg, "__reserved", "", NULL, &err));
    ck_assert_ptr_null(cq_metrics_counter(reg, "a-b", "", NULL, &err));
    ck_assert_ptr_null(cq_metrics_counter(reg, "ok", "", (const char *[]){"a:b", NULL}, &err));
    ck_assert_ptr_null(cq_metrics_histogram(reg, "h", "", NULL, bad_bounds, 2, &err));
    ck_assert_ptr_null(
        cq_metrics_histogram(reg, "h", "", (const char *[]){"le", NULL}, le_bounds, 1, &err));
    ck_assert_ptr_null(cq_metrics_counter(
        reg, "many", "", (const char *[]){"a", "b", "c", "d", "e", "f", "g", NULL}, &err));

    /* The same name twice: the same family when it agrees, refused when it does not. */
    struct cq_metric *a = cq_metrics_counter(reg, "x_total", "", (const char *[]){"k", NULL}, &err);
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_eq(cq_metrics_counter(reg, "x_total", "", (const char *[]){"k", NULL}, &err), a);
    ck_assert_ptr_null(cq_metrics_gauge(reg, "x_total", "", (const char *[]){"k", NULL}, &err));
    ck_assert_ptr_null(cq_metrics_counter(reg, "x_total", "", (const char *[]){"j", NULL}, &err));
    ck_assert_ptr_null(cq_metrics_counter(reg, "x_total", "", NULL, &err));
}
END_TEST

START_TEST(test_cardinality_bound)
{
    struct cq_error err;
    struct cq_metric *f =
        cq_metrics_counter(reg, "ids_total", "", (const char *[]){"id", NULL}, &err);
    ck_assert_ptr_nonnull(f);
    for (int i = 0; i < CQ_METRIC_MAX_CHILDREN + 50; i++) {
        char id[16];
        snprintf(id, sizeof(id), "s%d", i);
        cq_metric_add(f, (const char *[]){id}, 1);
    }
    char *text = render();
    /* The bound's worth of children, then one "other" line with the 50 past it. */
    ck_assert_ptr_nonnull(strstr(text, "ids_total{id=\"s0\"} 1\n"));
    char last[64];
    snprintf(last, sizeof(last), "ids_total{id=\"s%d\"} 1\n", CQ_METRIC_MAX_CHILDREN - 1);
    ck_assert_ptr_nonnull(strstr(text, last));
    snprintf(last, sizeof(last), "ids_total{id=\"s%d\"}", CQ_METRIC_MAX_CHILDREN);
    ck_assert_ptr_null(strstr(text, last));
    ck_assert_ptr_nonnull(strstr(text, "ids_total{id=\"other\"} 50\n"));
    free(text);
}
END_TEST

static void collect(void *ctx)
{
    struct cq_metric *g = ctx;
    static int calls;
    cq_metric_set(g, NULL, ++calls);
}

START_TEST(test_render_calls_collectors)
{
    struct cq_error err;
    struct cq_metric *g = cq_metrics_gauge(reg, "live", "Live.", NULL, &err);
    ck_assert_int_eq(cq_metrics_on_render(reg, collect, g, &err), 0);
    char *one = render();
    char *two = render();
    ck_assert_ptr_nonnull(strstr(one, "\nlive 1\n"));
    ck_assert_ptr_nonnull(strstr(two, "\nlive 2\n"));
    free(one);
    free(two);
    /* Forgotten: the next render leaves the gauge as it was (a worker that is gone). */
    cq_metrics_off_render(reg, collect, g);
    char *three = render();
    ck_assert_ptr_nonnull(strstr(three, "\nlive 2\n"));
    free(three);
}
END_TEST

/* Many threads counting into the same children: nothing is lost (the += of an atomic
 * double is a compare-and-swap loop, a bucket an atomic add). */
static struct cq_metric *shared_counter, *shared_histogram;

static void *count_many(void *arg)
{
    (void)arg;
    struct cq_metric_child *h = cq_metric_child(shared_histogram, NULL);
    for (int i = 0; i < 20000; i++) {
        cq_metric_add(shared_counter, (const char *[]){i % 2 ? "odd" : "even"}, 1);
        cq_metric_child_observe(h, 0.5);
    }
    return NULL;
}

START_TEST(test_concurrent_updates)
{
    struct cq_error err;
    static const double bounds[] = {1};
    shared_counter = cq_metrics_counter(reg, "n_total", "", (const char *[]){"k", NULL}, &err);
    shared_histogram = cq_metrics_histogram(reg, "h_seconds", "", NULL, bounds, 1, &err);
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, count_many, NULL);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    char *text = render();
    ck_assert_ptr_nonnull(strstr(text, "n_total{k=\"even\"} 40000\n"));
    ck_assert_ptr_nonnull(strstr(text, "n_total{k=\"odd\"} 40000\n"));
    ck_assert_ptr_nonnull(strstr(text, "h_seconds_bucket{le=\"1\"} 80000\n"));
    ck_assert_ptr_nonnull(strstr(text, "h_seconds_sum 40000\n"));
    ck_assert_ptr_nonnull(strstr(text, "h_seconds_count 80000\n"));
    free(text);
}
END_TEST

START_TEST(test_number_spellings)
{
    struct cq_error err;
    struct cq_metric *g = cq_metrics_gauge(reg, "v", "", (const char *[]){"k", NULL}, &err);
    cq_metric_set(g, (const char *[]){"big"}, 1e20);
    cq_metric_set(g, (const char *[]){"tenth"}, 0.1);
    cq_metric_set(g, (const char *[]){"inf"}, 1.0 / 0.0);
    cq_metric_set(g, (const char *[]){"ninf"}, -1.0 / 0.0);
    cq_metric_set(g, (const char *[]){"nan"}, 0.0 / 0.0);
    char *text = render();
    ck_assert_ptr_nonnull(strstr(text, "v{k=\"big\"} 1e+20\n"));
    ck_assert_ptr_nonnull(strstr(text, "v{k=\"tenth\"} 0.1\n"));
    ck_assert_ptr_nonnull(strstr(text, "v{k=\"inf\"} +Inf\n"));
    ck_assert_ptr_nonnull(strstr(text, "v{k=\"ninf\"} -Inf\n"));
    ck_assert_ptr_nonnull(strstr(text, "v{k=\"nan\"} NaN\n"));
    free(text);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("metrics");
    TCase *tc = tcase_create("registry");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_counter_with_labels);
    tcase_add_test(tc, test_gauge_without_labels_and_escapes);
    tcase_add_test(tc, test_histogram_cumulative);
    tcase_add_test(tc, test_registration_rules);
    tcase_add_test(tc, test_cardinality_bound);
    tcase_add_test(tc, test_render_calls_collectors);
    tcase_add_test(tc, test_concurrent_updates);
    tcase_add_test(tc, test_number_spellings);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
