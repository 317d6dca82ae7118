/* tests/unit/test_error.c - common/error.c: the one error idiom (code + message,
 * context prefixed on the way up). */
#define _GNU_SOURCE
#include "common/error.h"
#include "unit.h"

#include <stdio.h>
#include <string.h>

/* An error followed by a canary: any write past msg[] lands in it. */
struct guarded_error {
    struct cq_error err;
    char canary[64];
};

static void guard_init(struct guarded_error *g)
{
    memset(g, 0, sizeof(*g));
    memset(g->canary, 0x5a, sizeof(g->canary));
}

static void guard_check(const struct guarded_error *g)
{
    for (size_t i = 0; i < sizeof(g->canary); i++)
        ck_assert_msg((unsigned char)g->canary[i] == 0x5a, "write past the message at +%zu", i);
    ck_assert_msg(memchr(g->err.msg, '\0', sizeof(g->err.msg)) != NULL,
                  "message is not NUL-terminated");
}

static void fill(char *buf, size_t n, char c)
{
    memset(buf, c, n - 1);
    buf[n - 1] = '\0';
}

START_TEST(set_formats_and_returns_minus_one)
{
    struct cq_error err = {0};
    ck_assert_int_eq(cq_error_set(&err, CQ_ELIMIT, "limit %s is %d", "pids", 42), -1);
    ck_assert_int_eq(err.code, CQ_ELIMIT);
    ck_assert_str_eq(err.msg, "limit pids is 42");
    /* A second set replaces, it does not append. */
    cq_error_set(&err, EINVAL, "other");
    ck_assert_int_eq(err.code, EINVAL);
    ck_assert_str_eq(err.msg, "other");
}
END_TEST

START_TEST(sys_appends_strerror)
{
    struct cq_error err = {0};
    ck_assert_int_eq(cq_error_sys(&err, ENOENT, "open %s", "/nowhere"), -1);
    ck_assert_int_eq(err.code, ENOENT);
    char expected[256];
    snprintf(expected, sizeof(expected), "open /nowhere: %s", strerror(ENOENT));
    ck_assert_str_eq(err.msg, expected);

    cq_error_sys(&err, EACCES, "mkdir %s", "/x");
    ck_assert_int_eq(err.code, EACCES);
    ck_assert_ptr_nonnull(strstr(err.msg, strerror(EACCES)));
    ck_assert_ptr_nonnull(strstr(err.msg, "mkdir /x"));
}
END_TEST

START_TEST(sys_with_overlong_message_stays_in_bounds)
{
    struct guarded_error g;
    guard_init(&g);
    char big[2000];
    fill(big, sizeof(big), 'a');
    cq_error_sys(&g.err, EPERM, "%s", big);
    guard_check(&g);
    ck_assert_int_eq(g.err.code, EPERM);
    ck_assert_uint_eq(strlen(g.err.msg), sizeof(g.err.msg) - 1);

    /* Just short of full: the errno text is cut, never written past the end. */
    guard_init(&g);
    char near[sizeof(g.err.msg) - 3];
    fill(near, sizeof(near), 'b');
    cq_error_sys(&g.err, EPERM, "%s", near);
    guard_check(&g);
    ck_assert_uint_eq(strlen(g.err.msg), sizeof(g.err.msg) - 1);
    ck_assert_int_eq(strncmp(g.err.msg + strlen(near), ": ", 2), 0);
}
END_TEST

START_TEST(set_with_overlong_message_stays_in_bounds)
{
    struct guarded_error g;
    guard_init(&g);
    char big[4000];
    fill(big, sizeof(big), 'c');
    cq_error_set(&g.err, CQ_EINVALID, "%s%s", big, big);
    guard_check(&g);
    ck_assert_uint_eq(strlen(g.err.msg), sizeof(g.err.msg) - 1);
}
END_TEST

START_TEST(prefix_adds_context)
{
    struct cq_error err = {0};
    cq_error_sys(&err, ENOENT, "open %s", "/x");
    char inner[sizeof(err.msg)];
    strcpy(inner, err.msg);
    ck_assert_int_eq(cq_error_prefix(&err, "create sandbox %d", 3), -1);
    ck_assert_int_eq(err.code, ENOENT); /* the code is kept */
    char expected[sizeof(err.msg) + 32];
    snprintf(expected, sizeof(expected), "create sandbox 3: %s", inner);
    ck_assert_str_eq(err.msg, expected);
}
END_TEST

START_TEST(prefix_chains_outermost_first)
{
    struct cq_error err = {0};
    cq_error_set(&err, CQ_EPROTO, "bad field");
    cq_error_prefix(&err, "read config");
    cq_error_prefix(&err, "start init");
    cq_error_prefix(&err, "create sandbox");
    ck_assert_str_eq(err.msg, "create sandbox: start init: read config: bad field");
    ck_assert_int_eq(err.code, CQ_EPROTO);
}
END_TEST

START_TEST(prefix_of_empty_message)
{
    struct cq_error err = {0};
    cq_error_prefix(&err, "ctx");
    ck_assert_str_eq(err.msg, "ctx: ");
}
END_TEST

START_TEST(prefix_truncates_the_tail_and_keeps_the_prefix)
{
    struct guarded_error g;
    guard_init(&g);
    char full[sizeof(g.err.msg)];
    fill(full, sizeof(full), 'm'); /* 511 characters: the message is full */
    cq_error_set(&g.err, EIO, "%s", full);
    cq_error_prefix(&g.err, "outer");
    guard_check(&g);
    ck_assert_uint_eq(strlen(g.err.msg), sizeof(g.err.msg) - 1);
    ck_assert_int_eq(strncmp(g.err.msg, "outer: mmm", 10), 0);
    ck_assert_int_eq(g.err.msg[sizeof(g.err.msg) - 2], 'm');

    /* Repeated prefixes on a full message keep every prefix, outermost first. */
    for (int i = 0; i < 20; i++) {
        cq_error_prefix(&g.err, "level%02d", i);
        guard_check(&g);
    }
    ck_assert_int_eq(strncmp(g.err.msg, "level19: level18: ", 18), 0);
    ck_assert_uint_eq(strlen(g.err.msg), sizeof(g.err.msg) - 1);
}
END_TEST

START_TEST(prefix_at_the_exact_boundary)
{
    /* "ab: " + 507 characters is exactly full (511); one more must be cut. */
    struct guarded_error g;
    guard_init(&g);
    char body[508];
    fill(body, sizeof(body), 'q'); /* 507 characters */
    cq_error_set(&g.err, EIO, "%s", body);
    cq_error_prefix(&g.err, "ab");
    guard_check(&g);
    ck_assert_uint_eq(strlen(g.err.msg), sizeof(g.err.msg) - 1);
    ck_assert_int_eq(strncmp(g.err.msg, "ab: qq", 6), 0);

    guard_init(&g);
    char longer[509];
    fill(longer, sizeof(longer), 'r'); /* 508 characters: one too many */
    cq_error_set(&g.err, EIO, "%s", longer);
    cq_error_prefix(&g.err, "ab");
    guard_check(&g);
    ck_assert_uint_eq(strlen(g.err.msg), sizeof(g.err.msg) - 1);
    ck_assert_int_eq(g.err.msg[sizeof(g.err.msg) - 2], 'r');
}
END_TEST

START_TEST(prefix_longer_than_its_buffer)
{
    struct guarded_error g;
    guard_init(&g);
    cq_error_set(&g.err, EIO, "inner");
    char longp[1000];
    fill(longp, sizeof(longp), 'p');
    cq_error_prefix(&g.err, "%s", longp);
    guard_check(&g);
    /* The prefix is cut (to its own buffer), the separator and message follow it. */
    size_t plen = strspn(g.err.msg, "p");
    ck_assert_uint_gt(plen, 100);
    ck_assert_str_eq(g.err.msg + plen, ": inner");
}
END_TEST

START_TEST(prefix_of_unterminated_message)
{
    /* A message buffer without any NUL (a struct filled by memset): the prefix
     * must still leave a terminated message within bounds. */
    struct guarded_error g;
    guard_init(&g);
    memset(g.err.msg, 'z', sizeof(g.err.msg));
    cq_error_prefix(&g.err, "ctx");
    guard_check(&g);
    ck_assert_int_eq(strncmp(g.err.msg, "ctx: zzz", 8), 0);
}
END_TEST

START_TEST(null_error_is_tolerated)
{
    ck_assert_int_eq(cq_error_set(NULL, EINVAL, "x %d", 1), -1);
    ck_assert_int_eq(cq_error_sys(NULL, EINVAL, "x %d", 1), -1);
    ck_assert_int_eq(cq_error_prefix(NULL, "ctx %s", "y"), -1);
    cq_error_clear(NULL);
}
END_TEST

START_TEST(clear_resets)
{
    struct cq_error err;
    cq_error_set(&err, EINVAL, "something");
    cq_error_clear(&err);
    ck_assert_int_eq(err.code, 0);
    ck_assert_str_eq(err.msg, "");
}
END_TEST

START_TEST(code_names)
{
    ck_assert_str_eq(cq_error_code_name(0), "OK");
    ck_assert_str_eq(cq_error_code_name(EPERM), "EPERM");
    ck_assert_str_eq(cq_error_code_name(ENOENT), "ENOENT");
    ck_assert_str_eq(cq_error_code_name(EAGAIN), "EAGAIN");
    ck_assert_str_eq(cq_error_code_name(ESRCH), "ESRCH");
    ck_assert_str_eq(cq_error_code_name(CQ_EINVALID), "CQ_EINVALID");
    ck_assert_str_eq(cq_error_code_name(CQ_ELIMIT), "CQ_ELIMIT");
    ck_assert_str_eq(cq_error_code_name(CQ_ETIMEOUT), "CQ_ETIMEOUT");
    ck_assert_str_eq(cq_error_code_name(CQ_EPROTO), "CQ_EPROTO");
    ck_assert_str_eq(cq_error_code_name(CQ_ENOTFOUND), "CQ_ENOTFOUND");
    ck_assert_str_eq(cq_error_code_name(CQ_EINTERNAL), "CQ_EINTERNAL");
    ck_assert_str_eq(cq_error_code_name(CQ_EDENIED), "CQ_EDENIED");
}
END_TEST

START_TEST(code_names_of_unknown_codes)
{
    /* Never NULL, whatever the code. */
    static const int codes[] = {-1, -EPERM, 999, CQ_EDENIED + 1, 100000, 0x7fffffff};
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        const char *name = cq_error_code_name(codes[i]);
        ck_assert_ptr_nonnull(name);
        ck_assert_str_eq(name, "EUNKNOWN");
    }
}
END_TEST

START_TEST(cq_codes_are_beyond_errno)
{
    /* The CQ_E* codes must never collide with a real errno name. */
    ck_assert_int_gt(CQ_EINVALID, 133);
    ck_assert_int_eq(CQ_ELIMIT, CQ_EINVALID + 1);
    ck_assert_int_eq(CQ_EINTERNAL, CQ_EINVALID + 5);
}
END_TEST

static Suite *error_suite(void)
{
    Suite *s = suite_create("error");
    TCase *tc = tcase_create("set");
    tcase_add_test(tc, set_formats_and_returns_minus_one);
    tcase_add_test(tc, sys_appends_strerror);
    tcase_add_test(tc, sys_with_overlong_message_stays_in_bounds);
    tcase_add_test(tc, set_with_overlong_message_stays_in_bounds);
    tcase_add_test(tc, null_error_is_tolerated);
    tcase_add_test(tc, clear_resets);
    suite_add_tcase(s, tc);

    tc = tcase_create("prefix");
    tcase_add_test(tc, prefix_adds_context);
    tcase_add_test(tc, prefix_chains_outermost_first);
    tcase_add_test(tc, prefix_of_empty_message);
    tcase_add_test(tc, prefix_truncates_the_tail_and_keeps_the_prefix);
    tcase_add_test(tc, prefix_at_the_exact_boundary);
    tcase_add_test(tc, prefix_longer_than_its_buffer);
    tcase_add_test(tc, prefix_of_unterminated_message);
    suite_add_tcase(s, tc);

    tc = tcase_create("code_name");
    tcase_add_test(tc, code_names);
    tcase_add_test(tc, code_names_of_unknown_codes);
    tcase_add_test(tc, cq_codes_are_beyond_errno);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return cq_unit_run(error_suite(), false);
}
