/* tests/unit/test_claim.c - fleet/claim.c: the checks a claim-check reference and the
 * bytes fetched for it must pass before anything trusts them (no Redis here: the
 * fleet tests, tests/fleet/test_claims.py, cover the round trip). */
#define _GNU_SOURCE
#include "fleet/claim.h"
#include "api/api.h"
#include "fleet/crypt.h"
#include "unit.h"

#include <stdlib.h>
#include <string.h>

#define GOOD_ID "0123456789abcdef0123456789abcdef"

START_TEST(ids_are_32_lowercase_hex_digits)
{
    ck_assert(cq_claim_id_ok(GOOD_ID));
    ck_assert(!cq_claim_id_ok(NULL));
    ck_assert(!cq_claim_id_ok(""));
    ck_assert(!cq_claim_id_ok("0123456789abcdef0123456789abcde"));   /* 31 */
    ck_assert(!cq_claim_id_ok("0123456789abcdef0123456789abcdef0")); /* 33 */
    ck_assert(!cq_claim_id_ok("0123456789ABCDEF0123456789abcdef"));
    ck_assert(!cq_claim_id_ok("0123456789abcdef0123456789abcd*f"));
    ck_assert(!cq_claim_id_ok("../../session:0123456789abcdef012"));
}
END_TEST

START_TEST(references_are_bounded)
{
    Codeq__V1__Claim c = CODEQ__V1__CLAIM__INIT;
    c.id = GOOD_ID;
    c.size = 1;
    ck_assert_ptr_null(cq_claim_invalid(&c));
    c.size = CQ_CLAIM_MAX_BYTES;
    ck_assert_ptr_null(cq_claim_invalid(&c));
    c.size = CQ_CLAIM_MAX_BYTES + 1;
    ck_assert_ptr_nonnull(strstr(cq_claim_invalid(&c), "200 MiB"));
    c.size = 0;
    ck_assert_ptr_nonnull(cq_claim_invalid(&c));
    c.size = 5;
    c.id = "nope";
    ck_assert_ptr_nonnull(strstr(cq_claim_invalid(&c), "hexadecimal"));

    /* Sealed: the nonce and tag come on top of the payload's bounds. */
    uint8_t key[32] = {0};
    c.id = GOOD_ID;
    c.key.data = key;
    c.key.len = 32;
    c.size = CQ_CLAIM_MAX_BYTES + CQ_CRYPT_SEAL_OVERHEAD;
    ck_assert_ptr_null(cq_claim_invalid(&c));
    ck_assert_uint_eq(cq_claim_payload_size(&c), CQ_CLAIM_MAX_BYTES);
    c.size++;
    ck_assert_ptr_nonnull(strstr(cq_claim_invalid(&c), "200 MiB"));
    c.size = CQ_CRYPT_SEAL_OVERHEAD; /* a seal of nothing */
    ck_assert_ptr_nonnull(cq_claim_invalid(&c));
    c.size = 100;
    c.key.len = 16;
    ck_assert_ptr_nonnull(strstr(cq_claim_invalid(&c), "32 bytes"));
}
END_TEST

/* A sealed claim of payload: the buffer as stored in Redis (*stored_len bytes). */
static uint8_t *sealed(const char *id, const uint8_t key[32], const void *payload, size_t len,
                       size_t *stored_len)
{
    uint8_t *buf = malloc(len + CQ_CRYPT_SEAL_OVERHEAD);
    memcpy(buf + CQ_CRYPT_NONCE_LEN, payload, len);
    struct cq_error err;
    ck_assert_int_eq(cq_claim_seal(id, key, buf, len, &err), 0);
    *stored_len = len + CQ_CRYPT_SEAL_OVERHEAD;
    return buf;
}

START_TEST(sealed_claims_open_only_as_they_were_sealed)
{
    uint8_t key[32], other[32];
    memset(key, 7, sizeof(key));
    memset(other, 8, sizeof(other));
    static const char secret[] = "AWS_SECRET=abc123-plaintext";
    Codeq__V1__Claim c = CODEQ__V1__CLAIM__INIT;
    c.id = GOOD_ID;
    c.key.data = key;
    c.key.len = 32;
    size_t n;
    uint8_t *buf = sealed(GOOD_ID, key, secret, sizeof(secret), &n);
    c.size = n;
    ck_assert_ptr_null(memmem(buf, n, "AWS_SECRET", 10)); /* no plain text is stored */

    struct cq_error err;
    uint8_t *payload;
    size_t payload_len;
    ck_assert_int_eq(cq_claim_open(&c, buf, n, &payload, &payload_len, &err), 0);
    ck_assert_uint_eq(payload_len, sizeof(secret));
    ck_assert_mem_eq(payload, secret, sizeof(secret));
    free(buf);

    /* One bit changed anywhere: nonce, ciphertext or tag. */
    for (size_t at = 0; at < n; at += 9) {
        buf = sealed(GOOD_ID, key, secret, sizeof(secret), &n);
        buf[at] ^= 0x10;
        ck_assert_int_eq(cq_claim_open(&c, buf, n, &payload, &payload_len, &err), -1);
        ck_assert_int_eq(err.code, CQ_EDENIED);
        free(buf);
    }
    /* Another key; another claim's bytes (same key, other id); plain text. */
    buf = sealed(GOOD_ID, other, secret, sizeof(secret), &n);
    ck_assert_int_eq(cq_claim_open(&c, buf, n, &payload, &payload_len, &err), -1);
    free(buf);
    buf = sealed("fedcba9876543210fedcba9876543210", key, secret, sizeof(secret), &n);
    ck_assert_int_eq(cq_claim_open(&c, buf, n, &payload, &payload_len, &err), -1);
    ck_assert_int_eq(err.code, CQ_EDENIED);
    free(buf);
    uint8_t plain[sizeof(secret) + CQ_CRYPT_SEAL_OVERHEAD];
    memset(plain, 'x', sizeof(plain));
    ck_assert_int_eq(cq_claim_open(&c, plain, sizeof(plain), &payload, &payload_len, &err), -1);
    ck_assert_int_eq(err.code, CQ_EDENIED);
    /* Fewer bytes than the reference says. */
    ck_assert_int_eq(cq_claim_open(&c, plain, sizeof(plain) - 1, &payload, &payload_len, &err), -1);
    ck_assert_int_eq(err.code, CQ_EINVALID);

    /* Unsealed (no key): the bytes are the payload. */
    c.key.len = 0;
    c.size = sizeof(secret);
    char copy[sizeof(secret)];
    memcpy(copy, secret, sizeof(secret));
    ck_assert_int_eq(cq_claim_open(&c, (uint8_t *)copy, sizeof(copy), &payload, &payload_len, &err),
                     0);
    ck_assert_ptr_eq(payload, (uint8_t *)copy);
    ck_assert_uint_eq(payload_len, sizeof(secret));
}
END_TEST

/* Packed Arguments with one blob file of n bytes; *len gets the size. */
static uint8_t *packed_arguments(size_t n, size_t *len)
{
    uint8_t *blob = calloc(1, n ? n : 1);
    Codeq__V1__FileContent f = CODEQ__V1__FILE_CONTENT__INIT;
    f.path = "f.bin";
    f.data_case = CODEQ__V1__FILE_CONTENT__DATA_BLOB;
    f.blob.data = blob;
    f.blob.len = n;
    Codeq__V1__FileContent *files[] = {&f};
    Codeq__V1__Arguments a = CODEQ__V1__ARGUMENTS__INIT;
    a.n_content = 1;
    a.content = files;
    *len = codeq__v1__arguments__get_packed_size(&a);
    uint8_t *out = malloc(*len);
    codeq__v1__arguments__pack(&a, out);
    free(blob);
    return out;
}

START_TEST(arguments_must_match_their_reference)
{
    size_t len;
    uint8_t *data = packed_arguments(1000, &len);
    Codeq__V1__Claim c = CODEQ__V1__CLAIM__INIT;
    c.id = GOOD_ID;
    c.size = len;
    c.largest_file = 1000;
    Codeq__V1__Arguments *args;
    struct cq_error err;
    ck_assert_int_eq(cq_claim_decode_arguments(&c, data, len, &args, &err), 0);
    ck_assert_uint_eq(args->n_content, 1);
    ck_assert_uint_eq(args->content[0]->blob.len, 1000);
    codeq__v1__arguments__free_unpacked(args, NULL);

    /* Fewer or more bytes than the reference says. */
    ck_assert_int_eq(cq_claim_decode_arguments(&c, data, len - 1, &args, &err), -1);
    ck_assert_int_eq(err.code, CQ_EINVALID);
    ck_assert_ptr_null(args);
    /* A file larger than the edge was told. */
    c.largest_file = 999;
    ck_assert_int_eq(cq_claim_decode_arguments(&c, data, len, &args, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "more than the claim declared"));
    free(data);

    /* Bytes that are no Arguments. */
    uint8_t garbage[64];
    memset(garbage, 0xff, sizeof(garbage));
    c.size = sizeof(garbage);
    ck_assert_int_eq(cq_claim_decode_arguments(&c, garbage, sizeof(garbage), &args, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "do not decode"));
}
END_TEST

static uint8_t *packed_response(const char *request_id, const char *session_id, int kind,
                                size_t *len)
{
    Codeq__V1__Response r = CODEQ__V1__RESPONSE__INIT;
    Codeq__V1__Result result = CODEQ__V1__RESULT__INIT;
    Codeq__V1__OutputChunk chunk = CODEQ__V1__OUTPUT_CHUNK__INIT;
    Codeq__V1__Claim claim = CODEQ__V1__CLAIM__INIT;
    r.request_id = (char *)request_id;
    r.session_id = (char *)session_id;
    if (kind == 0) {
        r.payload_case = CODEQ__V1__RESPONSE__PAYLOAD_RESULT;
        r.result = &result;
    } else if (kind == 1) {
        r.payload_case = CODEQ__V1__RESPONSE__PAYLOAD_CHUNK;
        r.chunk = &chunk;
    } else {
        claim.id = GOOD_ID;
        claim.size = 10;
        r.payload_case = CODEQ__V1__RESPONSE__PAYLOAD_CLAIM;
        r.claim = &claim;
    }
    *len = codeq__v1__response__get_packed_size(&r);
    uint8_t *out = malloc(*len);
    codeq__v1__response__pack(&r, out);
    return out;
}

START_TEST(replies_must_be_the_final_reply_of_the_same_request)
{
    Codeq__V1__Claim claim = CODEQ__V1__CLAIM__INIT;
    claim.id = GOOD_ID;
    Codeq__V1__Response outer = CODEQ__V1__RESPONSE__INIT;
    outer.request_id = "r1";
    outer.session_id = "s1";
    outer.payload_case = CODEQ__V1__RESPONSE__PAYLOAD_CLAIM;
    outer.claim = &claim;
    Codeq__V1__Response *inner;
    struct cq_error err;
    size_t len;

    uint8_t *data = packed_response("r1", "s1", 0, &len);
    claim.size = len;
    ck_assert_int_eq(cq_claim_decode_response(&outer, data, len, &inner, &err), 0);
    ck_assert_int_eq(inner->payload_case, CODEQ__V1__RESPONSE__PAYLOAD_RESULT);
    codeq__v1__response__free_unpacked(inner, NULL);
    ck_assert_int_eq(cq_claim_decode_response(&outer, data, len - 1, &inner, &err), -1);
    free(data);

    /* A session's start: its reply may not name the session yet. */
    data = packed_response("r1", "", 0, &len);
    claim.size = len;
    ck_assert_int_eq(cq_claim_decode_response(&outer, data, len, &inner, &err), 0);
    codeq__v1__response__free_unpacked(inner, NULL);
    free(data);

    const struct {
        const char *rid, *sid;
        int kind;
        const char *why;
    } refused[] = {
        {"r2", "s1", 0, "another request"},
        {"r1", "s2", 0, "another request"},
        {"r1", "s1", 1, "not a final reply"}, /* a chunk */
        {"r1", "s1", 2, "not a final reply"}, /* a claim within a claim */
    };
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        data = packed_response(refused[i].rid, refused[i].sid, refused[i].kind, &len);
        claim.size = len;
        ck_assert_int_eq(cq_claim_decode_response(&outer, data, len, &inner, &err), -1);
        ck_assert_ptr_nonnull(strstr(err.msg, refused[i].why));
        ck_assert_ptr_null(inner);
        free(data);
    }
    /* A reply that refers to no claim is not resolved. */
    outer.payload_case = CODEQ__V1__RESPONSE__PAYLOAD_RESULT;
    ck_assert_int_eq(cq_claim_decode_response(&outer, (const uint8_t *)"", 0, &inner, &err), -1);
}
END_TEST

static Suite *claim_suite(void)
{
    Suite *s = suite_create("claim");
    TCase *tc = tcase_create("claim");
    tcase_add_test(tc, ids_are_32_lowercase_hex_digits);
    tcase_add_test(tc, references_are_bounded);
    tcase_add_test(tc, sealed_claims_open_only_as_they_were_sealed);
    tcase_add_test(tc, arguments_must_match_their_reference);
    tcase_add_test(tc, replies_must_be_the_final_reply_of_the_same_request);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return cq_unit_run(claim_suite(), false);
}
