/* tests/unit/test_units.c - common/units.c: sizes, durations and numbers typed by
 * people, and sizes printed for them. */
#define _GNU_SOURCE
#include "common/clock.h"
#include "common/units.h"
#include "unit.h"

#include <stdint.h>
#include <string.h>
#include <time.h>

#define KIB (1024ULL)
#define MIB (1024ULL * KIB)
#define GIB (1024ULL * MIB)
#define TIB (1024ULL * GIB)

/* --- helpers: one line per case, the failing input named in the message ------------- */

static void size_ok(const char *text, uint64_t max, uint64_t expected)
{
    struct cq_error err = {0};
    uint64_t out = 0xdeadbeef;
    int rc = cq_parse_size(text, max, &out, &err);
    ck_assert_msg(rc == 0, "cq_parse_size('%s') failed: %s", text, err.msg);
    ck_assert_msg(out == expected, "cq_parse_size('%s') = %llu, expected %llu", text,
                  (unsigned long long)out, (unsigned long long)expected);
}

static void size_bad(const char *text, uint64_t max)
{
    struct cq_error err = {0};
    uint64_t out = 12345;
    int rc = cq_parse_size(text, max, &out, &err);
    ck_assert_msg(rc == -1, "cq_parse_size('%s') accepted it as %llu", text ? text : "(null)",
                  (unsigned long long)out);
    ck_assert_int_eq(err.code, CQ_EINVALID);
    ck_assert_msg(err.msg[0] != '\0', "no message for '%s'", text ? text : "(null)");
    /* A refused input must not change the output. */
    ck_assert_uint_eq(out, 12345);
}

static void duration_ok(const char *text, uint64_t max_ms, uint64_t expected)
{
    struct cq_error err = {0};
    uint64_t out = 0;
    int rc = cq_parse_duration_ms(text, max_ms, &out, &err);
    ck_assert_msg(rc == 0, "cq_parse_duration_ms('%s') failed: %s", text, err.msg);
    ck_assert_msg(out == expected, "cq_parse_duration_ms('%s') = %llu, expected %llu", text,
                  (unsigned long long)out, (unsigned long long)expected);
}

static void duration_bad(const char *text, uint64_t max_ms)
{
    struct cq_error err = {0};
    uint64_t out = 777;
    int rc = cq_parse_duration_ms(text, max_ms, &out, &err);
    ck_assert_msg(rc == -1, "cq_parse_duration_ms('%s') accepted it as %llu",
                  text ? text : "(null)", (unsigned long long)out);
    ck_assert_int_eq(err.code, CQ_EINVALID);
    ck_assert_uint_eq(out, 777);
}

static void uint_ok(const char *text, uint64_t min, uint64_t max, uint64_t expected)
{
    struct cq_error err = {0};
    uint64_t out = 0;
    ck_assert_msg(cq_parse_uint(text, min, max, &out, &err) == 0, "cq_parse_uint('%s'): %s", text,
                  err.msg);
    ck_assert_uint_eq(out, expected);
}

static void uint_bad(const char *text, uint64_t min, uint64_t max)
{
    struct cq_error err = {0};
    uint64_t out = 99;
    ck_assert_msg(cq_parse_uint(text, min, max, &out, &err) == -1,
                  "cq_parse_uint('%s') in [%llu, %llu] accepted it", text ? text : "(null)",
                  (unsigned long long)min, (unsigned long long)max);
    ck_assert_int_eq(err.code, CQ_EINVALID);
    ck_assert_uint_eq(out, 99);
}

static void format_is(uint64_t bytes, const char *expected)
{
    char buf[32];
    memset(buf, 'x', sizeof(buf));
    cq_format_size(bytes, buf, sizeof(buf));
    ck_assert_msg(strcmp(buf, expected) == 0, "cq_format_size(%llu) = '%s', expected '%s'",
                  (unsigned long long)bytes, buf, expected);
}

/* --- cq_parse_size ------------------------------------------------------------------ */

START_TEST(size_plain_numbers)
{
    size_ok("0", UINT64_MAX, 0);
    size_ok("1", UINT64_MAX, 1);
    size_ok("512", UINT64_MAX, 512);
    size_ok("007", UINT64_MAX, 7);
    size_ok("123456789", UINT64_MAX, 123456789);
}
END_TEST

START_TEST(size_suffixes_are_binary_multiples)
{
    size_ok("64K", UINT64_MAX, 64 * KIB);
    size_ok("64k", UINT64_MAX, 64 * KIB);
    size_ok("256M", UINT64_MAX, 256 * MIB);
    size_ok("256m", UINT64_MAX, 256 * MIB);
    size_ok("2G", UINT64_MAX, 2 * GIB);
    size_ok("2T", UINT64_MAX, 2 * TIB);
    size_ok("1t", UINT64_MAX, TIB);
}
END_TEST

START_TEST(size_fractions)
{
    size_ok("1.5G", UINT64_MAX, 3 * GIB / 2);
    size_ok("0.5K", UINT64_MAX, 512);
    size_ok("2.25M", UINT64_MAX, 9 * MIB / 4);
    /* Fractions of a byte are dropped, not rounded up. */
    size_ok("1.5", UINT64_MAX, 1);
    size_ok("5.", UINT64_MAX, 5);
}
END_TEST

START_TEST(size_byte_suffix_forms)
{
    size_ok("256MiB", UINT64_MAX, 256 * MIB);
    size_ok("256MB", UINT64_MAX, 256 * MIB);
    size_ok("256mb", UINT64_MAX, 256 * MIB);
    size_ok("4KiB", UINT64_MAX, 4 * KIB);
    size_ok("1GB", UINT64_MAX, GIB);
    size_ok("512B", UINT64_MAX, 512);
    size_ok("512b", UINT64_MAX, 512);
}
END_TEST

START_TEST(size_rejects_garbage)
{
    size_bad("", UINT64_MAX);
    size_bad(NULL, UINT64_MAX);
    size_bad("-1", UINT64_MAX);
    size_bad("-0", UINT64_MAX);
    size_bad("+5", UINT64_MAX);
    size_bad(" 5", UINT64_MAX);
    size_bad("5 ", UINT64_MAX);
    size_bad("5 M", UINT64_MAX);
    size_bad("5X", UINT64_MAX);
    size_bad("5E", UINT64_MAX);
    size_bad("5P", UINT64_MAX);
    size_bad("M", UINT64_MAX);
    size_bad(".5K", UINT64_MAX);
    size_bad("1.5.2", UINT64_MAX);
    size_bad("5MM", UINT64_MAX);
    size_bad("5MiBx", UINT64_MAX);
    size_bad("5iB", UINT64_MAX);
    size_bad("512BB", UINT64_MAX);
    size_bad("nan", UINT64_MAX);
    size_bad("inf", UINT64_MAX);
}
END_TEST

START_TEST(size_rejects_exponents_and_hex)
{
    /* strtold takes these; a limit typed by a person never means them. */
    size_bad("1e3", UINT64_MAX);
    size_bad("1E3", UINT64_MAX);
    size_bad("1e3K", UINT64_MAX);
    size_bad("0x10", UINT64_MAX);
    size_bad("0x10K", UINT64_MAX);
    size_bad("0X1p4", UINT64_MAX);
}
END_TEST

START_TEST(size_rejects_overflow)
{
    size_ok("18446744073709551615", UINT64_MAX, UINT64_MAX);
    size_bad("18446744073709551616", UINT64_MAX);
    size_bad("16777216T", UINT64_MAX); /* 2^64 */
    size_bad("99999999999999999999999999999T", UINT64_MAX);
    /* Beyond what a long double holds: strtold reports ERANGE. */
    char huge[6000];
    memset(huge, '9', sizeof(huge) - 1);
    huge[sizeof(huge) - 1] = '\0';
    size_bad(huge, UINT64_MAX);
}
END_TEST

START_TEST(size_respects_max)
{
    size_ok("512M", 512 * MIB, 512 * MIB);
    size_bad("513M", 512 * MIB);
    size_bad("1G", 512 * MIB);
    size_ok("1023", 1023, 1023);
    size_bad("1024", 1023);
    size_bad("1K", 1023);
    size_ok("0", 0, 0);
    size_bad("1", 0);

    struct cq_error err = {0};
    uint64_t out;
    ck_assert_int_eq(cq_parse_size("2G", GIB, &out, &err), -1);
    ck_assert_msg(strstr(err.msg, "2G") != NULL && strstr(err.msg, "maximum") != NULL,
                  "message should name the input and the maximum: %s", err.msg);
}
END_TEST

START_TEST(size_error_names_the_input)
{
    struct cq_error err = {0};
    uint64_t out;
    ck_assert_int_eq(cq_parse_size("12Q", UINT64_MAX, &out, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "'12Q'"));
    ck_assert_int_eq(cq_parse_size("lots", UINT64_MAX, &out, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "'lots'"));
    /* A NULL err is allowed: only the return value reports the failure. */
    ck_assert_int_eq(cq_parse_size("lots", UINT64_MAX, &out, NULL), -1);
}
END_TEST

/* --- cq_parse_duration_ms ----------------------------------------------------------- */

START_TEST(duration_units)
{
    const uint64_t max = 24ULL * 3600 * 1000;
    duration_ok("60", max, 60000);
    duration_ok("1", max, 1000);
    duration_ok("0.5", max, 500);
    duration_ok("1.5", max, 1500);
    duration_ok("1500ms", max, 1500);
    duration_ok("1ms", max, 1);
    duration_ok("2s", max, 2000);
    duration_ok("0.25s", max, 250);
    duration_ok("5m", max, 300000);
    duration_ok("1.5m", max, 90000);
    duration_ok("1h", max, 3600000);
    duration_ok("24h", max, max);
}
END_TEST

START_TEST(duration_rejects_bad_input)
{
    const uint64_t max = 24ULL * 3600 * 1000;
    duration_bad("0", max);
    duration_bad("0s", max);
    duration_bad("0ms", max);
    duration_bad("0.0001", max); /* 0.1 ms: below the 1 ms floor */
    duration_bad("0.5ms", max);
    duration_bad("-1", max);
    duration_bad("-1s", max);
    duration_bad("abc", max);
    duration_bad("", max);
    duration_bad(NULL, max);
    duration_bad("1d", max);
    duration_bad("1S", max);
    duration_bad("1 s", max);
    duration_bad(" 1", max);
    duration_bad("1sec", max);
    duration_bad("1e3", max);
    duration_bad("0x10", max);
    duration_bad("s", max);
}
END_TEST

START_TEST(duration_respects_max)
{
    const uint64_t max = 3600 * 1000; /* one hour */
    duration_ok("3600", max, max);
    duration_ok("60m", max, max);
    duration_ok("1h", max, max);
    duration_bad("3601", max);
    duration_bad("61m", max);
    duration_bad("1.01h", max);
    duration_bad("2h", max);
    duration_bad("3600001ms", max);

    struct cq_error err = {0};
    uint64_t out;
    ck_assert_int_eq(cq_parse_duration_ms("2h", max, &out, &err), -1);
    ck_assert_msg(strstr(err.msg, "3600") != NULL, "message should give the maximum: %s", err.msg);
}
END_TEST

/* --- cq_parse_uint ------------------------------------------------------------------ */

START_TEST(uint_ranges)
{
    uint_ok("0", 0, 10, 0);
    uint_ok("1", 1, 10, 1);
    uint_ok("10", 1, 10, 10);
    uint_ok("007", 0, 10, 7);
    uint_ok("18446744073709551615", 0, UINT64_MAX, UINT64_MAX);
    uint_bad("0", 1, 10);
    uint_bad("11", 1, 10);
    uint_bad("4294967296", 0, UINT32_MAX);
    uint_bad("18446744073709551616", 0, UINT64_MAX); /* ERANGE */
}
END_TEST

START_TEST(uint_rejects_garbage)
{
    uint_bad("", 0, 100);
    uint_bad(NULL, 0, 100);
    uint_bad("-1", 0, 100);
    uint_bad("+1", 0, 100);
    uint_bad(" 1", 0, 100);
    uint_bad("1 ", 0, 100);
    uint_bad("1.0", 0, 100);
    uint_bad("0x10", 0, 100);
    uint_bad("1K", 0, 100);
    uint_bad("ten", 0, 100);

    struct cq_error err = {0};
    uint64_t out;
    ck_assert_int_eq(cq_parse_uint("50", 1, 10, &out, &err), -1);
    ck_assert_msg(strstr(err.msg, "50") != NULL && strstr(err.msg, "[1, 10]") != NULL,
                  "message should name the value and the range: %s", err.msg);
}
END_TEST

/* --- cq_format_size ----------------------------------------------------------------- */

START_TEST(format_exact_units)
{
    format_is(512 * MIB, "512M");
    format_is(100 * KIB, "100K");
    format_is(KIB, "1K");
    format_is(2 * GIB, "2G");
    format_is(TIB, "1T");
    format_is(1024 * TIB, "1024T");
}
END_TEST

START_TEST(format_fractions_and_bytes)
{
    format_is(3 * GIB / 2, "1.5G");
    format_is(1536, "1.5K");
    format_is(17, "17B");
    format_is(0, "0B");
    format_is(1023, "1023B");
    format_is(MIB + 1, "1.0M");
}
END_TEST

START_TEST(format_just_below_a_unit)
{
    /* Just below a unit the fraction rounds up: the next unit then reads better and
     * is shorter ("shortest exact-ish form") than 1024 of the smaller one. */
    format_is(MIB - 1, "1.0M");
    format_is(GIB - MIB / 100, "1.0G");
}
END_TEST

START_TEST(format_truncates_to_buffer)
{
    char buf[4];
    memset(buf, 'x', sizeof(buf));
    cq_format_size(512 * MIB, buf, sizeof(buf));
    ck_assert_str_eq(buf, "512");
    char small[1] = {'x'};
    cq_format_size(17, small, sizeof(small));
    ck_assert_int_eq(small[0], '\0');
}
END_TEST

START_TEST(format_round_trips_through_parse)
{
    static const uint64_t values[] = {1, 17, 1023, KIB, 64 * KIB, 512 * MIB, 3 * GIB / 2, 2 * TIB};
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        char buf[32];
        cq_format_size(values[i], buf, sizeof(buf));
        /* "17B" and "1.5G" are both valid inputs again. */
        size_ok(buf, UINT64_MAX, values[i]);
    }
}
END_TEST

/* --- clocks ------------------------------------------------------------------------- */

START_TEST(clocks_are_monotonic)
{
    uint64_t us0 = cq_now_us(), ms0 = cq_now_ms();
    struct timespec ts = {0, 20 * 1000 * 1000};
    nanosleep(&ts, NULL);
    uint64_t us1 = cq_now_us(), ms1 = cq_now_ms();
    ck_assert_uint_ge(us1 - us0, 20000);
    ck_assert_uint_lt(us1 - us0, 5 * 1000 * 1000);
    ck_assert_uint_ge(ms1 - ms0, 19); /* ms0 may have been taken late in its millisecond */
    ck_assert_uint_le(ms1, us1 / 1000 + 1);
}
END_TEST

static Suite *units_suite(void)
{
    Suite *s = suite_create("units");
    TCase *tc = tcase_create("parse_size");
    tcase_add_test(tc, size_plain_numbers);
    tcase_add_test(tc, size_suffixes_are_binary_multiples);
    tcase_add_test(tc, size_fractions);
    tcase_add_test(tc, size_byte_suffix_forms);
    tcase_add_test(tc, size_rejects_garbage);
    tcase_add_test(tc, size_rejects_exponents_and_hex);
    tcase_add_test(tc, size_rejects_overflow);
    tcase_add_test(tc, size_respects_max);
    tcase_add_test(tc, size_error_names_the_input);
    suite_add_tcase(s, tc);

    tc = tcase_create("parse_duration");
    tcase_add_test(tc, duration_units);
    tcase_add_test(tc, duration_rejects_bad_input);
    tcase_add_test(tc, duration_respects_max);
    suite_add_tcase(s, tc);

    tc = tcase_create("parse_uint");
    tcase_add_test(tc, uint_ranges);
    tcase_add_test(tc, uint_rejects_garbage);
    suite_add_tcase(s, tc);

    tc = tcase_create("format_size");
    tcase_add_test(tc, format_exact_units);
    tcase_add_test(tc, format_fractions_and_bytes);
    tcase_add_test(tc, format_just_below_a_unit);
    tcase_add_test(tc, format_truncates_to_buffer);
    tcase_add_test(tc, format_round_trips_through_parse);
    suite_add_tcase(s, tc);

    tc = tcase_create("clock");
    tcase_add_test(tc, clocks_are_monotonic);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return cq_unit_run(units_suite(), false);
}
