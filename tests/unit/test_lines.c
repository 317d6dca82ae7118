/* tests/unit/test_lines.c - worker/lines.c: the reader of a kernel's control channel,
 * which the sandboxed code can write on. Lines come out whole whatever the read sizes;
 * a line over the cap is refused as soon as it is known; memory stays near the cap; and
 * the buffer stays bounded under a flood of short lines (checked through its size,
 * never by timing). The last test feeds random bytes in random pieces and checks every line against
 * a plain reference split (a bounded fuzz run; by hand, CQ_LINES_FUZZ_ROUNDS=100000
 * CK_DEFAULT_TIMEOUT=0 makes it longer). */
#define _GNU_SOURCE
#include "worker/internal.h"
#include "unit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct cq_lines lines;
static struct cq_error err;

static void setup(void)
{
    cq_lines_init(&lines, 16);
    memset(&err, 0, sizeof(err));
}

static void teardown(void)
{
    cq_lines_free(&lines);
}

static int feed(const char *text)
{
    return cq_lines_feed(&lines, text, strlen(text), &err);
}

/* The next line as a NUL-terminated string (static), or NULL when none is complete. */
static const char *next(void)
{
    static char out[256];
    const char *line;
    size_t len;
    int rc = cq_lines_next(&lines, &line, &len, &err);
    ck_assert_msg(rc >= 0, "refused: %s", err.msg);
    if (rc == 0)
        return NULL;
    ck_assert_uint_lt(len, sizeof(out));
    memcpy(out, line, len);
    out[len] = '\0';
    return out;
}

START_TEST(lines_come_out_whole_across_reads)
{
    ck_assert_int_eq(feed("{\"id\":"), 0);
    ck_assert_ptr_null(next());
    ck_assert(cq_lines_pending(&lines));
    ck_assert_int_eq(feed("1}\n{\"id\""), 0);
    ck_assert_str_eq(next(), "{\"id\":1}");
    ck_assert_ptr_null(next());
    ck_assert_int_eq(feed(":2}\n\nlast\n"), 0);
    ck_assert_str_eq(next(), "{\"id\":2}");
    ck_assert_str_eq(next(), ""); /* an empty line is a line: the caller refuses it */
    ck_assert_str_eq(next(), "last");
    ck_assert_ptr_null(next());
    ck_assert(!cq_lines_pending(&lines));
}
END_TEST

START_TEST(a_line_at_the_cap_passes_one_over_is_refused)
{
    ck_assert_int_eq(feed("0123456789abcdef\n"), 0); /* 16 bytes: the cap */
    ck_assert_str_eq(next(), "0123456789abcdef");
    ck_assert_int_eq(feed("0123456789abcdef"), 0); /* still possible: '\n' may come */
    ck_assert_int_eq(feed("g"), -1);               /* 17 bytes and no end: never valid */
    ck_assert_int_eq(err.code, CQ_EPROTO);
    ck_assert_str_eq(err.msg, "a reply line longer than 16 bytes");
}
END_TEST

START_TEST(an_overlong_line_is_refused_when_taken_too)
{
    /* Over the cap but complete within one read: refused when taken. */
    ck_assert_int_eq(feed("ok\n0123456789abcdefXY\nafter\n"), 0);
    ck_assert_str_eq(next(), "ok");
    const char *line;
    size_t len;
    ck_assert_int_eq(cq_lines_next(&lines, &line, &len, &err), -1);
    ck_assert_int_eq(err.code, CQ_EPROTO);
}
END_TEST

START_TEST(memory_stays_near_the_cap)
{
    /* A long stream of short lines, each taken as it comes: the buffer never holds
     * much more than one read and one line. */
    cq_lines_free(&lines);
    cq_lines_init(&lines, 1024);
    char chunk[4096];
    for (size_t i = 0; i < sizeof(chunk); i++)
        chunk[i] = i % 8 == 7 ? '\n' : 'a';
    size_t taken = 0;
    for (int round = 0; round < 1024; round++) { /* 4 MiB in all */
        ck_assert_int_eq(cq_lines_feed(&lines, chunk, sizeof(chunk), &err), 0);
        const char *line;
        size_t len;
        while (cq_lines_next(&lines, &line, &len, &err) == 1) {
            ck_assert_uint_eq(len, 7);
            taken++;
        }
    }
    ck_assert_uint_eq(taken, 1024 * sizeof(chunk) / 8);
    ck_assert_uint_le(lines.alloc, 2 * (sizeof(chunk) + 1024));
}
END_TEST

START_TEST(a_newline_flood_is_taken_line_by_line)
{
    char flood[65536];
    memset(flood, '\n', sizeof(flood));
    ck_assert_int_eq(cq_lines_feed(&lines, flood, sizeof(flood), &err), 0);
    const char *line;
    size_t len;
    size_t n = 0;
    while (cq_lines_next(&lines, &line, &len, &err) == 1) {
        ck_assert_uint_eq(len, 0);
        n++;
    }
    ck_assert_uint_eq(n, sizeof(flood));
    ck_assert(!cq_lines_pending(&lines));
}
END_TEST

/* Random bytes (with many newlines) in random pieces: the reader's lines are exactly
 * the reference split's, and an over-long line is refused at the first byte past the
 * cap, never later. */
START_TEST(random_input_matches_a_plain_split)
{
    const char *env = getenv("CQ_LINES_FUZZ_ROUNDS");
    int rounds = env != NULL ? atoi(env) : 300;
    unsigned seed = 12345;
    for (int round = 0; round < rounds; round++) {
        size_t cap = 1 + (size_t)(rand_r(&seed) % 64);
        size_t total = (size_t)(rand_r(&seed) % 4096);
        char *data = malloc(total + 1);
        for (size_t i = 0; i < total; i++)
            data[i] = rand_r(&seed) % 5 == 0 ? '\n' : (char)('a' + rand_r(&seed) % 26);
        struct cq_lines l;
        cq_lines_init(&l, cap);
        size_t fed = 0, ref = 0; /* ref: the start of the next reference line */
        bool refused = false;
        while (fed < total && !refused) {
            size_t piece = 1 + (size_t)(rand_r(&seed) % 200);
            if (piece > total - fed)
                piece = total - fed;
            int rc = cq_lines_feed(&l, data + fed, piece, &err);
            fed += piece;
            const char *line;
            size_t len;
            while (rc >= 0 && (rc = cq_lines_next(&l, &line, &len, &err)) == 1) {
                const char *nl = memchr(data + ref, '\n', total - ref);
                ck_assert_ptr_nonnull(nl);
                size_t want = (size_t)(nl - (data + ref));
                ck_assert_uint_le(want, cap);
                ck_assert_uint_eq(len, want);
                ck_assert(memcmp(line, data + ref, len) == 0);
                ref += want + 1;
            }
            if (rc < 0) {
                /* Refused: the reference agrees that a line is over the cap, and the
                 * refusal came within one piece of knowing it. */
                const char *nl = memchr(data + ref, '\n', total - ref);
                size_t line_len = nl != NULL ? (size_t)(nl - (data + ref)) : total - ref;
                ck_assert_uint_gt(line_len, cap);
                ck_assert_uint_le(ref + cap, fed);
                refused = true;
            }
            if (!refused) /* every complete line taken: what is held is one line */
                ck_assert_uint_le(l.len - l.start, cap);
        }
        if (!refused) {
            /* Whatever is left is the last line in progress, within the cap. */
            ck_assert_uint_eq(l.len - l.start, total - ref);
            ck_assert_uint_le(total - ref, cap);
        }
        cq_lines_free(&l);
        free(data);
    }
}
END_TEST

static Suite *lines_suite(void)
{
    Suite *s = suite_create("lines");
    TCase *tc = tcase_create("lines");
    tcase_add_checked_fixture(tc, setup, teardown);
    /* Generous: the sanitizer build on a busy host is many times slower (a hang guard,
     * not a measure). */
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, lines_come_out_whole_across_reads);
    tcase_add_test(tc, a_line_at_the_cap_passes_one_over_is_refused);
    tcase_add_test(tc, an_overlong_line_is_refused_when_taken_too);
    tcase_add_test(tc, memory_stays_near_the_cap);
    tcase_add_test(tc, a_newline_flood_is_taken_line_by_line);
    tcase_add_test(tc, random_input_matches_a_plain_split);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return cq_unit_run(lines_suite(), false);
}
