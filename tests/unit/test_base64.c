/* tests/unit/test_base64.c - common/base64.c: standard base64 (RFC 4648) for blobs
 * and images in JSON results and writeFiles arguments. */
#define _GNU_SOURCE
#include "common/base64.h"
#include "unit.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Decodes text (all of it) and fails the test when it is refused. */
static uint8_t *decode_ok(const char *text, size_t *len)
{
    uint8_t *out = NULL;
    *len = (size_t)-1;
    ck_assert_msg(cq_base64_decode(text, strlen(text), &out, len) == 0, "'%s' was refused", text);
    ck_assert_ptr_nonnull(out);
    ck_assert_msg(*len != (size_t)-1, "'%s': no length", text);
    return out;
}

static void assert_refused(const char *text, size_t len, const char *why)
{
    uint8_t *out = (uint8_t *)"untouched";
    size_t out_len = 12345;
    ck_assert_msg(cq_base64_decode(text, len, &out, &out_len) == -1, "'%.*s' (%s) was accepted",
                  (int)len, text, why);
}

/* RFC 4648 section 10. */
static const struct {
    const char *plain, *encoded;
} rfc_vectors[] = {
    {"", ""},
    {"f", "Zg=="},
    {"fo", "Zm8="},
    {"foo", "Zm9v"},
    {"foob", "Zm9vYg=="},
    {"fooba", "Zm9vYmE="},
    {"foobar", "Zm9vYmFy"},
};

START_TEST(rfc4648_vectors_encode)
{
    for (size_t i = 0; i < sizeof(rfc_vectors) / sizeof(rfc_vectors[0]); i++) {
        char *e =
            cq_base64_encode((const uint8_t *)rfc_vectors[i].plain, strlen(rfc_vectors[i].plain));
        ck_assert_ptr_nonnull(e);
        ck_assert_msg(strcmp(e, rfc_vectors[i].encoded) == 0, "encode('%s') = '%s', want '%s'",
                      rfc_vectors[i].plain, e, rfc_vectors[i].encoded);
        free(e);
    }
}
END_TEST

START_TEST(rfc4648_vectors_decode)
{
    for (size_t i = 0; i < sizeof(rfc_vectors) / sizeof(rfc_vectors[0]); i++) {
        size_t len;
        uint8_t *d = decode_ok(rfc_vectors[i].encoded, &len);
        ck_assert_msg(len == strlen(rfc_vectors[i].plain) &&
                          memcmp(d, rfc_vectors[i].plain, len) == 0,
                      "decode('%s') gave %zu bytes, want '%s'", rfc_vectors[i].encoded, len,
                      rfc_vectors[i].plain);
        free(d);
    }
}
END_TEST

/* The two characters that differ between alphabets: standard base64 uses + and /. */
START_TEST(standard_alphabet_not_url_safe)
{
    const uint8_t bytes[] = {0xfb, 0xff, 0xbf};
    char *e = cq_base64_encode(bytes, sizeof(bytes));
    ck_assert_str_eq(e, "+/+/");
    free(e);
    size_t len;
    uint8_t *d = decode_ok("+/+/", &len);
    ck_assert_uint_eq(len, 3);
    ck_assert_mem_eq(d, bytes, 3);
    free(d);
    assert_refused("-_-_", 4, "URL-safe alphabet");
}
END_TEST

START_TEST(round_trip_every_length)
{
    uint8_t data[64];
    srandom(4648);
    for (size_t len = 0; len <= 64; len++) {
        for (size_t i = 0; i < len; i++)
            data[i] = (uint8_t)random();
        char *e = cq_base64_encode(data, len);
        ck_assert_ptr_nonnull(e);
        size_t elen = strlen(e);
        ck_assert_msg(elen == (len + 2) / 3 * 4, "length %zu encodes to %zu characters", len, elen);
        size_t out_len;
        uint8_t *d = decode_ok(e, &out_len);
        ck_assert_msg(out_len == len && memcmp(d, data, len) == 0,
                      "length %zu: round trip gave %zu bytes", len, out_len);
        free(d);
        /* Without its padding it decodes to the same bytes. */
        while (elen > 0 && e[elen - 1] == '=')
            elen--;
        uint8_t *d2 = NULL;
        size_t len2 = 0;
        ck_assert_msg(cq_base64_decode(e, elen, &d2, &len2) == 0, "length %zu unpadded refused",
                      len);
        ck_assert_msg(len2 == len && memcmp(d2, data, len) == 0, "length %zu unpadded: %zu bytes",
                      len, len2);
        free(d2);
        free(e);
    }
}
END_TEST

START_TEST(round_trip_random_and_all_bytes)
{
    /* Every byte value, then a large random buffer. */
    uint8_t all[256];
    for (int i = 0; i < 256; i++)
        all[i] = (uint8_t)i;
    char *e = cq_base64_encode(all, sizeof(all));
    size_t len;
    uint8_t *d = decode_ok(e, &len);
    ck_assert_uint_eq(len, 256);
    ck_assert_mem_eq(d, all, 256);
    free(d);
    free(e);

    size_t big = 100003;
    uint8_t *data = malloc(big);
    ck_assert_ptr_nonnull(data);
    srandom(1);
    for (size_t i = 0; i < big; i++)
        data[i] = (uint8_t)random();
    e = cq_base64_encode(data, big);
    ck_assert_ptr_nonnull(e);
    for (size_t i = 0; e[i] != '\0'; i++)
        ck_assert_msg(strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=",
                             e[i]) != NULL,
                      "encoding has '%c' at %zu", e[i], i);
    d = decode_ok(e, &len);
    ck_assert_uint_eq(len, big);
    ck_assert_msg(memcmp(d, data, big) == 0, "random round trip differs");
    free(d);
    free(e);
    free(data);
}
END_TEST

START_TEST(decode_refuses_invalid_characters)
{
    static const char *const bad[] = {
        "Zm9v!mFy",   /* punctuation */
        "Zm9v YmFy",  /* whitespace is not skipped */
        "Zm9v\nYmFy", /* nor is a newline */
        "Zm9=YmFy",   /* padding in the middle */
        "Zg==Zg==",   /* two padded groups */
        "Zm9\x80",    /* not ASCII */
        "Zm9vYm-_",   /* URL-safe alphabet */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_refused(bad[i], strlen(bad[i]), "invalid character");
    /* A NUL byte inside the given length is a character like any other. */
    assert_refused("Zm\0v", 4, "NUL inside");
}
END_TEST

START_TEST(decode_refuses_impossible_length)
{
    /* 4n+1 characters cannot come from any byte string. */
    assert_refused("Z", 1, "1 character");
    assert_refused("Zm9vY", 5, "5 characters");
    assert_refused("Zm9vYmFyZ", 9, "9 characters");
    assert_refused("Z===", 4, "1 character and padding");
}
END_TEST

START_TEST(decode_accepts_missing_padding)
{
    size_t len;
    uint8_t *d = decode_ok("Zg", &len);
    ck_assert_uint_eq(len, 1);
    ck_assert_int_eq(d[0], 'f');
    free(d);
    d = decode_ok("Zm8", &len);
    ck_assert_uint_eq(len, 2);
    ck_assert_mem_eq(d, "fo", 2);
    free(d);
    d = decode_ok("Zm9vYmE", &len);
    ck_assert_uint_eq(len, 5);
    ck_assert_mem_eq(d, "fooba", 5);
    free(d);
}
END_TEST

START_TEST(decode_uses_only_the_given_length)
{
    /* The length, not a NUL, ends the text: "Zm9vYmFy" cut after 4 is "foo". */
    uint8_t *d = NULL;
    size_t len = 0;
    ck_assert_int_eq(cq_base64_decode("Zm9vYmFy", 4, &d, &len), 0);
    ck_assert_uint_eq(len, 3);
    ck_assert_mem_eq(d, "foo", 3);
    free(d);
    ck_assert_int_eq(cq_base64_decode("", 0, &d, &len), 0);
    ck_assert_uint_eq(len, 0);
    free(d);
}
END_TEST

static Suite *base64_suite(void)
{
    Suite *s = suite_create("base64");
    TCase *tc = tcase_create("vectors");
    tcase_set_timeout(tc, 10);
    tcase_add_test(tc, rfc4648_vectors_encode);
    tcase_add_test(tc, rfc4648_vectors_decode);
    tcase_add_test(tc, standard_alphabet_not_url_safe);
    suite_add_tcase(s, tc);

    tc = tcase_create("round_trips");
    tcase_set_timeout(tc, 10);
    tcase_add_test(tc, round_trip_every_length);
    tcase_add_test(tc, round_trip_random_and_all_bytes);
    suite_add_tcase(s, tc);

    tc = tcase_create("decode_errors");
    tcase_set_timeout(tc, 10);
    tcase_add_test(tc, decode_refuses_invalid_characters);
    tcase_add_test(tc, decode_refuses_impossible_length);
    tcase_add_test(tc, decode_accepts_missing_padding);
    tcase_add_test(tc, decode_uses_only_the_given_length);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return cq_unit_run(base64_suite(), false);
}
