/* tests/unit/test_tracectx.c - W3C traceparent parsing, formatting and child spans. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "common/tracectx.h"

#define GOOD "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

START_TEST(test_parse_and_format_round_trip)
{
    struct cq_tracectx c;
    ck_assert_int_eq(cq_tracectx_parse(GOOD, "congo=t61rcWkgMzE", &c), 0);
    char hex[33];
    cq_tracectx_hex(c.trace_id, 16, hex);
    ck_assert_str_eq(hex, "4bf92f3577b34da6a3ce929d0e0e4736");
    cq_tracectx_hex(c.span_id, 8, hex);
    ck_assert_str_eq(hex, "00f067aa0ba902b7");
    ck_assert_uint_eq(c.flags, 1);
    ck_assert_str_eq(c.tracestate, "congo=t61rcWkgMzE");
    char out[CQ_TRACEPARENT_LEN + 1];
    cq_tracectx_format(&c, out);
    ck_assert_str_eq(out, GOOD);
}
END_TEST

START_TEST(test_invalid_headers)
{
    static const char *const bad[] = {
        NULL,
        "",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",   /* short */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x", /* 00 is exact */
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  /* upper case */
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  /* zero trace */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  /* zero span */
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  /* version ff */
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  /* separator */
        "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",  /* not hex */
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x", /* later version, no '-' */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct cq_tracectx c;
        ck_assert_msg(cq_tracectx_parse(bad[i], NULL, &c) == -1, "accepted '%s'",
                      bad[i] ? bad[i] : "(null)");
    }
    /* A later version with more fields: its first four are read. */
    struct cq_tracectx c;
    ck_assert_int_eq(
        cq_tracectx_parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-next", NULL,
                          &c),
        0);
}
END_TEST

START_TEST(test_tracestate_kept_or_dropped)
{
    struct cq_tracectx c;
    char *long_state = malloc(CQ_TRACESTATE_MAX + 2);
    memset(long_state, 'a', CQ_TRACESTATE_MAX + 1);
    long_state[CQ_TRACESTATE_MAX + 1] = '\0';
    ck_assert_int_eq(cq_tracectx_parse(GOOD, long_state, &c), 0);
    ck_assert_str_eq(c.tracestate, "");
    long_state[CQ_TRACESTATE_MAX] = '\0';
    ck_assert_int_eq(cq_tracectx_parse(GOOD, long_state, &c), 0);
    ck_assert_uint_eq(strlen(c.tracestate), CQ_TRACESTATE_MAX);
    free(long_state);
    ck_assert_int_eq(cq_tracectx_parse(GOOD, "a=b\r\nX-Injected: 1", &c), 0);
    ck_assert_str_eq(c.tracestate, "");
}
END_TEST

START_TEST(test_child_continues_the_trace)
{
    struct cq_tracectx parent, child, grandchild;
    ck_assert_int_eq(cq_tracectx_parse(GOOD, "k=v", &parent), 0);
    cq_tracectx_child(&parent, &child);
    ck_assert_mem_eq(child.trace_id, parent.trace_id, 16);
    ck_assert(child.has_parent);
    ck_assert_mem_eq(child.parent_id, parent.span_id, 8);
    ck_assert(memcmp(child.span_id, parent.span_id, 8) != 0);
    ck_assert_str_eq(child.tracestate, "k=v");
    ck_assert_uint_eq(child.flags, 1);
    cq_tracectx_child(&child, &grandchild);
    ck_assert_mem_eq(grandchild.parent_id, child.span_id, 8);

    /* No valid parent: a new trace, never an all-zero id. */
    struct cq_tracectx fresh, none;
    memset(&none, 0, sizeof(none));
    cq_tracectx_child(&none, &fresh);
    ck_assert(!fresh.has_parent);
    char out[CQ_TRACEPARENT_LEN + 1];
    cq_tracectx_format(&fresh, out);
    struct cq_tracectx back;
    ck_assert_int_eq(cq_tracectx_parse(out, NULL, &back), 0);
    ck_assert_mem_eq(back.trace_id, fresh.trace_id, 16);
    cq_tracectx_child(NULL, &fresh);
    ck_assert(!fresh.has_parent);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("tracectx");
    TCase *tc = tcase_create("w3c");
    tcase_add_test(tc, test_parse_and_format_round_trip);
    tcase_add_test(tc, test_invalid_headers);
    tcase_add_test(tc, test_tracestate_kept_or_dropped);
    tcase_add_test(tc, test_child_continues_the_trace);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
