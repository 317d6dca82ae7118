/* tests/unit/test_eventstream.c - AWS event stream framing (http/eventstream.c).
 * botocore's decoder reads what the encoder writes in tests/http/test_eventstream.py. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "http/eventstream.h"
#include "tests/unit/unit.h"

START_TEST(test_crc32_check_value)
{
    /* The CRC-32/ISO-HDLC check value of the catalogue of CRC algorithms. */
    ck_assert_uint_eq(cq_es_crc32(0, (const uint8_t *)"123456789", 9), 0xCBF43926u);
    /* continued over pieces */
    uint32_t c = cq_es_crc32(0, (const uint8_t *)"1234", 4);
    ck_assert_uint_eq(cq_es_crc32(c, (const uint8_t *)"56789", 5), 0xCBF43926u);
}
END_TEST

START_TEST(test_round_trip_every_type)
{
    static const uint8_t uuid[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    struct cq_es_header h[] = {
        {.name = "t", .type = CQ_ES_TRUE},
        {.name = "f", .type = CQ_ES_FALSE},
        {.name = "b", .type = CQ_ES_BYTE, .integer = -128},
        {.name = "s", .type = CQ_ES_SHORT, .integer = -2},
        {.name = "i", .type = CQ_ES_INT, .integer = 2147483647},
        {.name = "l", .type = CQ_ES_LONG, .integer = -5000000000},
        {.name = "ts", .type = CQ_ES_TIMESTAMP, .integer = 1752669296000},
        {.name = "raw", .type = CQ_ES_BYTES, .bytes = (const uint8_t *)"\0\1\2", .len = 3},
        {.name = "str", .type = CQ_ES_STRING, .bytes = (const uint8_t *)"", .len = 0},
        {.name = "uuid", .type = CQ_ES_UUID, .bytes = uuid},
    };
    uint8_t *m;
    size_t n;
    struct cq_error err;
    ck_assert_int_eq(cq_es_encode(h, 10, (const uint8_t *)"body", 4, &m, &n, &err), 0);
    struct cq_es_message msg;
    ck_assert_int_eq(cq_es_decode(m, n, 0, &msg, &err), (long)n);
    ck_assert_uint_eq(msg.n_headers, 10);
    for (size_t i = 0; i < 10; i++) {
        ck_assert_uint_eq(msg.headers[i].name_len, strlen(h[i].name));
        ck_assert(memcmp(msg.headers[i].name, h[i].name, strlen(h[i].name)) == 0);
        ck_assert_int_eq(msg.headers[i].type, h[i].type);
    }
    ck_assert_int_eq(msg.headers[0].integer, 1);
    ck_assert_int_eq(msg.headers[1].integer, 0);
    for (size_t i = 2; i < 7; i++)
        ck_assert_int_eq(msg.headers[i].integer, h[i].integer);
    ck_assert_uint_eq(msg.headers[7].len, 3);
    ck_assert(memcmp(msg.headers[7].bytes, "\0\1\2", 3) == 0);
    ck_assert_uint_eq(msg.headers[8].len, 0);
    ck_assert(memcmp(msg.headers[9].bytes, uuid, 16) == 0);
    ck_assert_uint_eq(msg.payload_len, 4);
    ck_assert(memcmp(msg.payload, "body", 4) == 0);
    free(m);
}
END_TEST

START_TEST(test_result_event)
{
    const char *json = "{\"content\":[{\"type\":\"text\",\"text\":\"2\"}],\"isError\":false}";
    uint8_t *m;
    size_t n, len;
    struct cq_error err;
    ck_assert_int_eq(cq_es_encode_event("result", json, strlen(json), &m, &n, &err), 0);
    struct cq_es_message msg;
    ck_assert_int_eq(cq_es_decode(m, n, 0, &msg, &err), (long)n);
    const uint8_t *v = cq_es_header_value(&msg, ":event-type", &len);
    ck_assert(v && len == 6 && memcmp(v, "result", 6) == 0);
    v = cq_es_header_value(&msg, ":message-type", &len);
    ck_assert(v && len == 5 && memcmp(v, "event", 5) == 0);
    v = cq_es_header_value(&msg, ":content-type", &len);
    ck_assert(v && len == 16 && memcmp(v, "application/json", 16) == 0);
    ck_assert_ptr_null(cq_es_header_value(&msg, ":exception-type", &len));
    ck_assert_uint_eq(msg.payload_len, strlen(json));
    free(m);
    ck_assert_int_eq(cq_es_encode_exception("throttlingException", "{}", 2, &m, &n, &err), 0);
    ck_assert_int_eq(cq_es_decode(m, n, 0, &msg, &err), (long)n);
    v = cq_es_header_value(&msg, ":exception-type", &len);
    ck_assert(v && len == 19 && memcmp(v, "throttlingException", 19) == 0);
    v = cq_es_header_value(&msg, ":message-type", &len);
    ck_assert(v && len == 9 && memcmp(v, "exception", 9) == 0);
    free(m);
}
END_TEST

START_TEST(test_corruption_refused)
{
    uint8_t *m;
    size_t n;
    struct cq_error err;
    ck_assert_int_eq(cq_es_encode_event("result", "{\"x\":1}", 7, &m, &n, &err), 0);
    for (size_t i = 0; i < n; i++) {
        for (int bit = 0; bit < 8; bit++) {
            m[i] ^= (uint8_t)(1 << bit);
            struct cq_es_message msg;
            long r = cq_es_decode(m, n, 0, &msg, &err);
            /* never decoded; a changed length may only ask for more than there is */
            ck_assert_msg(r == -1 || (r == 0 && i < 4), "byte %zu bit %d: %ld", i, bit, r);
            if (r == -1)
                ck_assert_int_eq(err.code, CQ_EPROTO);
            m[i] ^= (uint8_t)(1 << bit);
        }
    }
    free(m);
}
END_TEST

START_TEST(test_truncated_and_streamed)
{
    uint8_t *a, *b;
    size_t na, nb;
    struct cq_error err;
    struct cq_es_message msg;
    ck_assert_int_eq(cq_es_encode_event("result", "{\"a\":1}", 7, &a, &na, &err), 0);
    ck_assert_int_eq(cq_es_encode_event("result", "{\"b\":22}", 8, &b, &nb, &err), 0);
    for (size_t i = 0; i < na; i++)
        ck_assert_int_eq(cq_es_decode(a, i, 0, &msg, &err), 0);
    uint8_t *both = malloc(na + nb);
    memcpy(both, a, na);
    memcpy(both + na, b, nb);
    ck_assert_int_eq(cq_es_decode(both, na + nb, 0, &msg, &err), (long)na);
    ck_assert_int_eq(cq_es_decode(both + na, nb, 0, &msg, &err), (long)nb);
    ck_assert(msg.payload_len == 8 && memcmp(msg.payload, "{\"b\":22}", 8) == 0);
    ck_assert_int_eq(cq_es_decode(both + na, nb - 1, 0, &msg, &err), 0);
    free(both);
    free(a);
    free(b);
}
END_TEST

START_TEST(test_limits)
{
    struct cq_error err;
    uint8_t *m;
    size_t n;
    struct cq_es_message msg;
    /* the caller's maximum */
    ck_assert_int_eq(cq_es_encode_event("result", "0123456789", 10, &m, &n, &err), 0);
    ck_assert_int_eq(cq_es_decode(m, n, n, &msg, &err), (long)n);
    ck_assert_int_eq(cq_es_decode(m, n, n - 1, &msg, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "lengths out of bounds"));
    free(m);
    /* too many headers for the decoder */
    struct cq_es_header h[CQ_ES_MAX_HEADERS + 1];
    for (size_t i = 0; i <= CQ_ES_MAX_HEADERS; i++)
        h[i] = (struct cq_es_header){.name = "h", .type = CQ_ES_TRUE};
    ck_assert_int_eq(cq_es_encode(h, CQ_ES_MAX_HEADERS, NULL, 0, &m, &n, &err), 0);
    ck_assert_int_gt(cq_es_decode(m, n, 0, &msg, &err), 0);
    free(m);
    ck_assert_int_eq(cq_es_encode(h, CQ_ES_MAX_HEADERS + 1, NULL, 0, &m, &n, &err), 0);
    ck_assert_int_eq(cq_es_decode(m, n, 0, &msg, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "more than"));
    free(m);
    /* what the encoder refuses */
    char name[257];
    memset(name, 'n', 256);
    name[256] = '\0';
    h[0] = (struct cq_es_header){.name = name, .type = CQ_ES_TRUE};
    ck_assert_int_eq(cq_es_encode(h, 1, NULL, 0, &m, &n, &err), -1);
    ck_assert_int_eq(err.code, CQ_ELIMIT);
    h[0] = (struct cq_es_header){.name = "", .type = CQ_ES_TRUE};
    ck_assert_int_eq(cq_es_encode(h, 1, NULL, 0, &m, &n, &err), -1);
    h[0] = (struct cq_es_header){.name = "x", .type = 10};
    ck_assert_int_eq(cq_es_encode(h, 1, NULL, 0, &m, &n, &err), -1);
    ck_assert_int_eq(
        cq_es_encode(NULL, 0, (const uint8_t *)"", CQ_ES_MAX_PAYLOAD + 1, &m, &n, &err), -1);
    ck_assert_int_eq(err.code, CQ_ELIMIT);
    /* a message of only the overhead is the smallest valid one */
    ck_assert_int_eq(cq_es_encode(NULL, 0, NULL, 0, &m, &n, &err), 0);
    ck_assert_uint_eq(n, CQ_ES_OVERHEAD);
    ck_assert_int_eq(cq_es_decode(m, n, 0, &msg, &err), CQ_ES_OVERHEAD);
    ck_assert_uint_eq(msg.n_headers, 0);
    free(m);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("eventstream");
    TCase *tc = tcase_create("framing");
    tcase_add_test(tc, test_crc32_check_value);
    tcase_add_test(tc, test_round_trip_every_type);
    tcase_add_test(tc, test_result_event);
    tcase_add_test(tc, test_corruption_refused);
    tcase_add_test(tc, test_truncated_and_streamed);
    tcase_add_test(tc, test_limits);
    suite_add_tcase(s, tc);
    return cq_unit_run(s, false);
}
