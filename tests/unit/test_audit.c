/* tests/unit/test_audit.c - fleet/audit.c: audit records chained and signed, and
 * verification that finds where a chain breaks (edited, deleted, reordered, forged). */
#define _GNU_SOURCE
#include "fleet/audit.h"
#include "unit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define KEY "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

struct lines {
    char *line[16];
    size_t n;
};

static int collect(void *ctx, const char *line, size_t len, struct cq_error *err)
{
    (void)err;
    struct lines *l = ctx;
    l->line[l->n++] = strndup(line, len);
    return 0;
}

static char key_path[] = "/tmp/codeq-test-audit-key-XXXXXX";

/* n records of producer p, signed (or not) with KEY. */
static void records(struct lines *l, const char *producer, bool sign, size_t n)
{
    if (sign) {
        int fd = mkstemp(key_path);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(write(fd, KEY "\n", 65), 65);
        close(fd);
    }
    struct cq_audit *a;
    struct cq_error err;
    ck_assert_int_eq(cq_audit_open(producer, sign ? key_path : NULL, false, collect, l, &a, &err),
                     0);
    if (sign) { /* the chain holds the key it read */
        unlink(key_path);
        strcpy(key_path, "/tmp/codeq-test-audit-key-XXXXXX");
    }
    Codeq__V1__Arguments args = CODEQ__V1__ARGUMENTS__INIT;
    args.code = "print('secret-value')";
    Codeq__V1__Invoke inv = CODEQ__V1__INVOKE__INIT;
    inv.tool = "executeCode";
    inv.arguments = &args;
    Codeq__V1__Request req = CODEQ__V1__REQUEST__INIT;
    req.request_id = "r1";
    req.session_id = "s1";
    req.tenant = "acme";
    req.operation_case = CODEQ__V1__REQUEST__OPERATION_INVOKE;
    req.invoke = &inv;
    for (size_t i = 0; i < n; i++) {
        struct cq_audit_record r = {.event = "call",
                                    .outcome = "ok",
                                    .req = &req,
                                    .has_result = true,
                                    .exit_code = (int)i,
                                    .cpu_ms = 5};
        cq_audit_emit(a, &r);
    }
    cq_audit_close(a);
}

/* Verifies the lines in the order given by idx (-1 ends it). */
static long verify(struct lines *l, const int *idx, const char *key, struct cq_error *err)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    for (size_t i = 0; idx[i] >= 0; i++)
        fprintf(f, "%s\n", l->line[idx[i]]);
    fclose(f);
    f = fmemopen(buf, len, "r");
    long n = cq_audit_verify(f, key, err);
    fclose(f);
    free(buf);
    return n;
}

static void lines_free(struct lines *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->line[i]);
}

START_TEST(a_whole_chain_verifies_and_holds_digests_not_code)
{
    struct lines l = {0};
    records(&l, "p1", true, 4);
    struct cq_error err;
    static const int all[] = {0, 1, 2, 3, -1};
    ck_assert_int_eq(verify(&l, all, KEY, &err), 4);
    ck_assert_int_eq(verify(&l, all, NULL, &err), 4);
    ck_assert_ptr_null(strstr(l.line[0], "secret-value"));
    ck_assert_ptr_nonnull(strstr(l.line[0], "\"code_sha256\":\""));
    ck_assert_ptr_nonnull(strstr(l.line[0], "\"tenant\":\"acme\""));
    ck_assert_ptr_nonnull(strstr(l.line[0], "\"cpu_ms\":5"));
    lines_free(&l);
}
END_TEST

START_TEST(an_edited_record_is_found)
{
    struct lines l = {0};
    records(&l, "p1", true, 4);
    char *p = strstr(l.line[2], "\"exit_code\":2");
    ck_assert_ptr_nonnull(p);
    p[12] = '0'; /* exit code 2 becomes 0 */
    struct cq_error err;
    static const int all[] = {0, 1, 2, 3, -1};
    ck_assert_int_eq(verify(&l, all, KEY, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "line 3: producer p1, record 2: bad signature"));
    /* Without the key, the next record's link shows it. */
    ck_assert_int_eq(verify(&l, all, NULL, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "line 4: producer p1, record 3: it does not link"));
    lines_free(&l);
}
END_TEST

START_TEST(deleted_and_reordered_records_are_found)
{
    struct lines l = {0};
    records(&l, "p1", true, 4);
    struct cq_error err;
    static const int deleted[] = {0, 2, 3, -1};
    ck_assert_int_eq(verify(&l, deleted, KEY, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "line 2: producer p1, record 2: expected record 1"));
    static const int swapped[] = {0, 2, 1, 3, -1};
    ck_assert_int_eq(verify(&l, swapped, KEY, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "line 2:"));
    static const int first_gone[] = {1, 2, 3, -1};
    ck_assert_int_eq(verify(&l, first_gone, KEY, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "line 1:"));
    lines_free(&l);
}
END_TEST

START_TEST(forged_records_and_interleaved_producers)
{
    struct lines l = {0};
    records(&l, "p1", true, 2);
    records(&l, "p2", true, 2);
    records(&l, "p3", false, 1); /* unsigned: a key would refuse it */
    struct cq_error err;
    static const int interleaved[] = {0, 2, 1, 3, -1};
    ck_assert_int_eq(verify(&l, interleaved, KEY, &err), 4);
    static const int with_unsigned[] = {0, 1, 4, -1};
    ck_assert_int_eq(verify(&l, with_unsigned, NULL, &err), 3);
    ck_assert_int_eq(verify(&l, with_unsigned, KEY, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "line 3: producer p3, record 0: bad signature"));
    /* A line that is not a record at all. */
    free(l.line[4]);
    l.line[4] = strdup("{\"hello\":1}");
    ck_assert_int_eq(verify(&l, with_unsigned, NULL, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "line 3: not an audit record"));
    lines_free(&l);
}
END_TEST

static Suite *audit_suite(void)
{
    Suite *s = suite_create("audit");
    TCase *tc = tcase_create("audit");
    tcase_add_test(tc, a_whole_chain_verifies_and_holds_digests_not_code);
    tcase_add_test(tc, an_edited_record_is_found);
    tcase_add_test(tc, deleted_and_reordered_records_are_found);
    tcase_add_test(tc, forged_records_and_interleaved_producers);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return cq_unit_run(audit_suite(), false);
}
