/* tests/unit/test_cancel.c - worker/cancel.c: a cancellation fired from another thread
 * reaches the call's fd and hook, whether it comes before or while the call waits, and
 * never after the hook was cleared. */
#define _GNU_SOURCE
#include "worker/internal.h"
#include "unit.h"

#include <poll.h>
#include <pthread.h>
#include <time.h>

static int hook_calls;

static void count_hook(void *arg)
{
    (*(int *)arg)++;
}

static bool readable(int fd, int wait_ms)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    return poll(&pfd, 1, wait_ms) == 1 && (pfd.revents & POLLIN);
}

START_TEST(fire_makes_the_fd_readable_and_stays)
{
    struct cq_cancel *c;
    struct cq_error err;
    ck_assert_int_eq(cq_cancel_create(&c, &err), 0);
    ck_assert(!cq_cancel_fired(c));
    ck_assert(!readable(cq_cancel_fd(c), 0));
    cq_cancel_fire(c);
    cq_cancel_fire(c);
    ck_assert(cq_cancel_fired(c));
    ck_assert(readable(cq_cancel_fd(c), 0));
    ck_assert(readable(cq_cancel_fd(c), 0)); /* polled again by a later loop */
    cq_cancel_free(c);
}
END_TEST

START_TEST(hook_runs_once_whether_set_before_or_after_firing)
{
    struct cq_cancel *c;
    struct cq_error err;
    ck_assert_int_eq(cq_cancel_create(&c, &err), 0);
    hook_calls = 0;
    cq_cancel_hook(c, count_hook, &hook_calls);
    ck_assert_int_eq(hook_calls, 0);
    cq_cancel_fire(c);
    cq_cancel_fire(c);
    ck_assert_int_eq(hook_calls, 1);
    cq_cancel_hook(c, NULL, NULL);
    cq_cancel_free(c);

    ck_assert_int_eq(cq_cancel_create(&c, &err), 0);
    hook_calls = 0;
    cq_cancel_fire(c);
    cq_cancel_hook(c, count_hook, &hook_calls); /* fired before: runs at once */
    ck_assert_int_eq(hook_calls, 1);
    cq_cancel_free(c);
}
END_TEST

START_TEST(cleared_hook_is_not_called)
{
    struct cq_cancel *c;
    struct cq_error err;
    ck_assert_int_eq(cq_cancel_create(&c, &err), 0);
    hook_calls = 0;
    cq_cancel_hook(c, count_hook, &hook_calls);
    cq_cancel_hook(c, NULL, NULL);
    cq_cancel_fire(c);
    ck_assert_int_eq(hook_calls, 0);
    cq_cancel_free(c);
}
END_TEST

static void *fire_later(void *arg)
{
    struct timespec ts = {0, 100 * 1000 * 1000};
    nanosleep(&ts, NULL);
    cq_cancel_fire(arg);
    return NULL;
}

START_TEST(fire_from_another_thread_wakes_a_poller)
{
    struct cq_cancel *c;
    struct cq_error err;
    ck_assert_int_eq(cq_cancel_create(&c, &err), 0);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, fire_later, c), 0);
    ck_assert(readable(cq_cancel_fd(c), 10000));
    pthread_join(t, NULL);
    cq_cancel_free(c);
}
END_TEST

START_TEST(null_is_no_cancellation)
{
    ck_assert_int_eq(cq_cancel_fd(NULL), -1);
    ck_assert(!cq_cancel_fired(NULL));
    cq_cancel_fire(NULL);
    cq_cancel_hook(NULL, count_hook, &hook_calls);
    cq_cancel_free(NULL);
}
END_TEST

static Suite *cancel_suite(void)
{
    Suite *s = suite_create("cancel");
    TCase *tc = tcase_create("cancel");
    tcase_add_test(tc, fire_makes_the_fd_readable_and_stays);
    tcase_add_test(tc, hook_runs_once_whether_set_before_or_after_firing);
    tcase_add_test(tc, cleared_hook_is_not_called);
    tcase_add_test(tc, fire_from_another_thread_wakes_a_poller);
    tcase_add_test(tc, null_is_no_cancellation);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return cq_unit_run(cancel_suite(), false);
}
