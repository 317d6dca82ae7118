/* tests/unit/test_sigv4.c - SigV4 verification (http/sigv4.c).
 *
 * The accepted requests are botocore's: signed by its SigV4Auth (the signer of boto3 and
 * the AgentCore SDK) at 2025-07-16T12:34:56Z with tests/http/aws.py's sign(), e.g.
 *   sign("POST", "https://codeq.example:8443/code-interpreters/aws.codeinterpreter.v1/"
 *        "tools/invoke", body, [("Content-Type", "application/json"),
 *        ("x-amzn-code-interpreter-session-id", "s1")])
 * so the expected signatures are computed independently of the code under test.
 * tests/http/test_sigv4.py checks many more requests the same way.
 */
#define _GNU_SOURCE
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/sigv4.h"
#include "tests/unit/unit.h"

#define T0     1752669296 /* 2025-07-16T12:34:56Z */
#define AKID   "AKIDEXAMPLE"
#define SECRET "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
#define SCOPE  "Credential=AKIDEXAMPLE/20250716/us-east-1/bedrock-agentcore/aws4_request"

struct req {
    struct cq_sigv4_header h[16];
    struct cq_sigv4_request r;
    char auth[512];
};

/* botocore's POST .../tools/invoke */
static void invoke(struct req *q)
{
    static const char body[] = "{\"name\":\"executeCode\",\"arguments\":{\"code\":\"print(1+1)\"}}";
    memset(q, 0, sizeof(*q));
    snprintf(q->auth, sizeof(q->auth),
             "AWS4-HMAC-SHA256 " SCOPE ", SignedHeaders=content-type;host;x-amz-date;"
             "x-amzn-code-interpreter-session-id, "
             "Signature=85b046343ce7ff930b2c4255d3abe0ead8dd76561577c4d947f47367d41bcd27");
    q->h[0] = (struct cq_sigv4_header){"Host", "codeq.example:8443"};
    q->h[1] = (struct cq_sigv4_header){"Content-Type", "application/json"};
    q->h[2] = (struct cq_sigv4_header){"x-amzn-code-interpreter-session-id", "s1"};
    q->h[3] = (struct cq_sigv4_header){"X-Amz-Date", "20250716T123456Z"};
    q->h[4] = (struct cq_sigv4_header){"Authorization", q->auth};
    q->h[5] = (struct cq_sigv4_header){"Content-Length", "56"};
    q->r =
        (struct cq_sigv4_request){.method = "POST",
                                  .path = "/code-interpreters/aws.codeinterpreter.v1/tools/invoke",
                                  .headers = q->h,
                                  .n_headers = 6,
                                  .body = (const uint8_t *)body,
                                  .body_len = strlen(body)};
}

/* botocore's GET with an encoded path and query */
static void get(struct req *q)
{
    memset(q, 0, sizeof(*q));
    snprintf(q->auth, sizeof(q->auth),
             "AWS4-HMAC-SHA256 " SCOPE ", SignedHeaders=host;x-amz-date, "
             "Signature=4d40d29e5be77eb22a54e1ee546edd7e8cb133fae91c56b3d53715247ab9160d");
    q->h[0] = (struct cq_sigv4_header){"Host", "codeq.example:8443"};
    q->h[1] = (struct cq_sigv4_header){"X-Amz-Date", "20250716T123456Z"};
    q->h[2] = (struct cq_sigv4_header){"Authorization", q->auth};
    q->r = (struct cq_sigv4_request){.method = "GET",
                                     .path = "/code-interpreters/a%20b/sessions/get",
                                     .query = "sessionId=a%20b%2Bc%2F~&A=1",
                                     .headers = q->h,
                                     .n_headers = 3};
}

/* botocore's GET with a dot segment and a session token */
static void token(struct req *q)
{
    memset(q, 0, sizeof(*q));
    snprintf(q->auth, sizeof(q->auth),
             "AWS4-HMAC-SHA256 " SCOPE ", SignedHeaders=host;x-amz-date;x-amz-security-token, "
             "Signature=9f118dc8ed3dfa365b2668fd58988b05a30222de378eff2f1421a8063a2de78b");
    q->h[0] = (struct cq_sigv4_header){"Host", "codeq.example:8443"};
    q->h[1] = (struct cq_sigv4_header){"X-Amz-Date", "20250716T123456Z"};
    q->h[2] = (struct cq_sigv4_header){"X-Amz-Security-Token", "TOKEN/+="};
    q->h[3] = (struct cq_sigv4_header){"Authorization", q->auth};
    q->r = (struct cq_sigv4_request){
        .method = "GET", .path = "/a/../code-interpreters/x", .headers = q->h, .n_headers = 4};
}

static int lookups;

static int lookup(void *ctx, const char *key_id, const char *tok, struct cq_sigv4_key *key,
                  struct cq_error *err)
{
    (void)ctx;
    lookups++;
    if (strcmp(key_id, "AKIDBROKEN") == 0)
        return cq_error_set(err, ECONNREFUSED, "key store unreachable");
    if (strcmp(key_id, AKID) != 0 || (tok != NULL && strcmp(tok, "TOKEN/+=") != 0))
        return 1;
    snprintf(key->secret, sizeof(key->secret), "%s", SECRET);
    snprintf(key->tenant, sizeof(key->tenant), "%s", "tenant-a");
    return 0;
}

static struct cq_sigv4_config cfg(void)
{
    return (struct cq_sigv4_config){.now_unix = T0, .lookup = lookup};
}

static int verify(const struct req *q, struct cq_error *err)
{
    struct cq_sigv4_config c = cfg();
    struct cq_sigv4_identity id;
    memset(err, 0, sizeof(*err));
    int rc = cq_sigv4_verify(&c, &q->r, &id, err);
    if (rc == 0)
        ck_assert_str_eq(id.tenant, "tenant-a");
    else
        ck_assert_str_eq(id.tenant, "");
    /* no refusal ever carries the secret */
    ck_assert_ptr_null(strstr(err->msg, SECRET));
    return rc;
}

static void expect_denied(const struct req *q, const char *why)
{
    struct cq_error err;
    ck_assert_int_eq(verify(q, &err), -1);
    ck_assert_int_eq(err.code, CQ_EDENIED);
    ck_assert_msg(strstr(err.msg, why) != NULL, "'%s' does not say '%s'", err.msg, why);
}

START_TEST(test_botocore_requests_accepted)
{
    struct req q;
    struct cq_error err;
    struct cq_sigv4_identity id;
    struct cq_sigv4_config c = cfg();
    invoke(&q);
    ck_assert_int_eq(cq_sigv4_verify(&c, &q.r, &id, &err), 0);
    ck_assert_str_eq(id.key_id, AKID);
    ck_assert_str_eq(id.tenant, "tenant-a");
    ck_assert(id.payload_signed && !id.session_token);
    get(&q);
    ck_assert_int_eq(verify(&q, &err), 0);
    token(&q);
    ck_assert_int_eq(cq_sigv4_verify(&c, &q.r, &id, &err), 0);
    ck_assert(id.session_token);
}
END_TEST

/* Equivalent spellings of the same request canonicalize alike (and so still verify). */
START_TEST(test_equivalent_spellings)
{
    struct req q;
    struct cq_error err;
    get(&q);
    q.r.query = "A=1&sessionId=a%20b%2bc%2f%7E"; /* other order, lowercase escapes, %7E */
    ck_assert_int_eq(verify(&q, &err), 0);
    q.r.query = "A=1&&sessionId=a%20b%2Bc%2F~&"; /* empty pieces */
    ck_assert_int_eq(verify(&q, &err), 0);
    invoke(&q);
    q.h[1].name = "CONTENT-TYPE";
    q.h[1].value = "application/json";
    ck_assert_int_eq(verify(&q, &err), 0);
    token(&q);
    q.r.path = "/code-interpreters/./x"; /* normalizes to the same path */
    ck_assert_int_eq(verify(&q, &err), 0);
}
END_TEST

START_TEST(test_tampering_refused)
{
    struct req q;
    const char *mismatch = "signature mismatch";
    invoke(&q);
    q.r.method = "PUT";
    expect_denied(&q, mismatch);
    invoke(&q);
    q.r.path = "/code-interpreters/aws.codeinterpreter.v2/tools/invoke";
    expect_denied(&q, mismatch);
    invoke(&q);
    q.r.query = "x=1";
    expect_denied(&q, mismatch);
    get(&q);
    q.r.query = "sessionId=a%20b%2Bc%2F~&A=2";
    expect_denied(&q, mismatch);
    invoke(&q);
    q.h[2].value = "s2";
    expect_denied(&q, mismatch);
    invoke(&q);
    q.h[0].value = "evil.example";
    expect_denied(&q, mismatch);
    invoke(&q);
    q.r.body_len--;
    expect_denied(&q, mismatch);
    invoke(&q);
    q.h[3].value = "20250716T123457Z";
    expect_denied(&q, mismatch);
    invoke(&q);
    q.auth[strlen(q.auth) - 1] = '8';
    expect_denied(&q, mismatch);
    token(&q);
    q.h[2].value = "TOKEN/+=x"; /* the lookup does not take that token */
    expect_denied(&q, "unknown access key 'AKIDEXAMPLE' (or its session token");
}
END_TEST

START_TEST(test_required_parts)
{
    struct req q;
    invoke(&q);
    q.r.n_headers = 4; /* no Authorization */
    expect_denied(&q, "missing Authorization header");
    invoke(&q);
    q.h[3].name = "Date";
    expect_denied(&q, "missing x-amz-date header");
    invoke(&q);
    q.h[2].name = "x-other"; /* a signed header not sent */
    expect_denied(&q, "signed header 'x-amzn-code-interpreter-session-id' is not in the request");
    get(&q);
    /* a valid-looking list without host */
    char *s = strstr(q.auth, "host;");
    memmove(s, s + 5, strlen(s + 5) + 1);
    expect_denied(&q, "host header must be signed");
    get(&q);
    q.h[3] = (struct cq_sigv4_header){"X-Amz-Security-Token", "TOKEN/+="};
    q.r.n_headers = 4; /* a token the signature does not cover */
    expect_denied(&q, "x-amz-security-token must be sent once and signed");
    invoke(&q);
    q.h[6] = q.h[4];
    q.r.n_headers = 7;
    expect_denied(&q, "more than one Authorization header");
}
END_TEST

START_TEST(test_clock_skew)
{
    struct req q;
    struct cq_error err;
    struct cq_sigv4_identity id;
    struct cq_sigv4_config c = cfg();
    invoke(&q);
    for (int d = -300; d <= 300; d += 150) {
        c.now_unix = T0 + d;
        ck_assert_int_eq(cq_sigv4_verify(&c, &q.r, &id, &err), 0);
    }
    c.now_unix = T0 + 301;
    ck_assert_int_eq(cq_sigv4_verify(&c, &q.r, &id, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "expired or not yet valid"));
    c.now_unix = T0 - 301;
    ck_assert_int_eq(cq_sigv4_verify(&c, &q.r, &id, &err), -1);
    c.max_skew_s = 400;
    ck_assert_int_eq(cq_sigv4_verify(&c, &q.r, &id, &err), 0);
    /* a date the credential scope does not name, and one that does not exist */
    invoke(&q);
    q.h[3].value = "20250717T123456Z";
    expect_denied(&q, "is not the day of x-amz-date");
    invoke(&q);
    q.h[3].value = "20250230T123456Z";
    expect_denied(&q, "malformed x-amz-date");
}
END_TEST

START_TEST(test_keys_and_scope)
{
    struct req q;
    struct cq_error err;
    invoke(&q);
    char *k = strstr(q.auth, AKID);
    memcpy(k, "AKIDNOBODY1", 11);
    lookups = 0;
    expect_denied(&q, "unknown access key 'AKIDNOBODY1'");
    ck_assert_int_eq(lookups, 1);
    /* a lookup that fails is not the client's fault */
    invoke(&q);
    k = strstr(q.auth, AKID);
    memmove(k + 10, k + 11, strlen(k + 11) + 1);
    memcpy(k, "AKIDBROKEN", 10);
    ck_assert_int_eq(verify(&q, &err), -1);
    ck_assert_int_eq(err.code, ECONNREFUSED);
    ck_assert_str_eq(err.msg, "access key lookup: key store unreachable");
    /* another service's or region's signature */
    struct cq_sigv4_config c = cfg();
    struct cq_sigv4_identity id;
    invoke(&q);
    c.service = "bedrock-agentcore-control";
    ck_assert_int_eq(cq_sigv4_verify(&c, &q.r, &id, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "names service 'bedrock-agentcore'"));
    c.service = NULL;
    c.region = "eu-west-3";
    ck_assert_int_eq(cq_sigv4_verify(&c, &q.r, &id, &err), -1);
    c.region = "us-east-1";
    ck_assert_int_eq(cq_sigv4_verify(&c, &q.r, &id, &err), 0);
    /* malformed requests never reach the key store */
    lookups = 0;
    get(&q);
    q.r.query = "a=%zz";
    expect_denied(&q, "bad percent escape");
    ck_assert_int_eq(lookups, 0);
}
END_TEST

START_TEST(test_malformed_authorization)
{
    static const char *bad[] = {
        "AWS4-HMAC-SHA1 " SCOPE ", SignedHeaders=host, Signature=00",
        "Bearer abc",
        "AWS4-HMAC-SHA256",
        "AWS4-HMAC-SHA256 " SCOPE,
        "AWS4-HMAC-SHA256 " SCOPE ", " SCOPE ", SignedHeaders=host;x-amz-date, Signature="
        "0000000000000000000000000000000000000000000000000000000000000000",
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20250716/us-east-1/bedrock-agentcore, "
        "SignedHeaders=host;x-amz-date, Signature="
        "0000000000000000000000000000000000000000000000000000000000000000",
        "AWS4-HMAC-SHA256 Credential=AKID/EXAMPLE/20250716/us-east-1/bedrock-agentcore/"
        "aws4_request, SignedHeaders=host;x-amz-date, Signature="
        "0000000000000000000000000000000000000000000000000000000000000000",
        "AWS4-HMAC-SHA256 " SCOPE ", SignedHeaders=x-amz-date;host, Signature="
        "0000000000000000000000000000000000000000000000000000000000000000",
        "AWS4-HMAC-SHA256 " SCOPE ", SignedHeaders=Host;x-amz-date, Signature="
        "0000000000000000000000000000000000000000000000000000000000000000",
        "AWS4-HMAC-SHA256 " SCOPE ", SignedHeaders=host;;x-amz-date, Signature="
        "0000000000000000000000000000000000000000000000000000000000000000",
        "AWS4-HMAC-SHA256 " SCOPE ", SignedHeaders=host;x-amz-date, Signature=abc",
        "AWS4-HMAC-SHA256 " SCOPE ", SignedHeaders=host;x-amz-date, Signature="
        "000000000000000000000000000000000000000000000000000000000000000g",
        "AWS4-HMAC-SHA256 " SCOPE ", SignedHeaders=host;x-amz-date, Signature="
        "0000000000000000000000000000000000000000000000000000000000000000, Extra=1",
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/2025071/us-east-1/bedrock-agentcore/"
        "aws4_request, SignedHeaders=host;x-amz-date, Signature="
        "0000000000000000000000000000000000000000000000000000000000000000",
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20250716/US_EAST/bedrock-agentcore/"
        "aws4_request, SignedHeaders=host;x-amz-date, Signature="
        "0000000000000000000000000000000000000000000000000000000000000000",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct req q;
        struct cq_error err;
        get(&q);
        snprintf(q.auth, sizeof(q.auth), "%s", bad[i]);
        lookups = 0;
        ck_assert_int_eq(verify(&q, &err), -1);
        ck_assert_msg(err.code == CQ_EDENIED, "%zu: %s", i, err.msg);
        ck_assert_msg(lookups == 0, "%zu reached the key store", i);
    }
    /* components in another order and without spaces are the same header */
    struct req q;
    struct cq_error err;
    get(&q);
    snprintf(q.auth, sizeof(q.auth),
             "AWS4-HMAC-SHA256 Signature=4d40d29e5be77eb22a54e1ee546edd7e8cb133fae91c56b3d53715"
             "247ab9160d,SignedHeaders=host;x-amz-date," SCOPE);
    ck_assert_int_eq(verify(&q, &err), 0);
}
END_TEST

START_TEST(test_content_sha256)
{
    struct req q;
    struct cq_error err;
    struct cq_sigv4_identity id;
    struct cq_sigv4_config c = cfg();
    /* signed by cq_sigv4_sign (checked against botocore's in test_signer_matches_botocore) */
    invoke(&q);
    q.h[5] = (struct cq_sigv4_header){"x-amz-content-sha256", "UNSIGNED-PAYLOAD"};
    const char *list = "content-type;host;x-amz-content-sha256;x-amz-date";
    ck_assert_int_eq(cq_sigv4_sign(&q.r, AKID, SECRET, "us-east-1", "bedrock-agentcore",
                                   "20250716T123456Z", list, q.auth, sizeof(q.auth), &err),
                     0);
    ck_assert_int_eq(cq_sigv4_verify(&c, &q.r, &id, &err), 0);
    ck_assert(!id.payload_signed);
    q.r.body_len = 3; /* unsigned: the body is not covered */
    ck_assert_int_eq(cq_sigv4_verify(&c, &q.r, &id, &err), 0);
    q.h[5].value = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD";
    ck_assert_int_eq(cq_sigv4_sign(&q.r, AKID, SECRET, "us-east-1", "bedrock-agentcore",
                                   "20250716T123456Z", list, q.auth, sizeof(q.auth), &err),
                     0);
    expect_denied(&q, "unsupported x-amz-content-sha256");
    /* a signed claim that is not the body's hash */
    q.h[5].value = "0000000000000000000000000000000000000000000000000000000000000000";
    ck_assert_int_eq(cq_sigv4_sign(&q.r, AKID, SECRET, "us-east-1", "bedrock-agentcore",
                                   "20250716T123456Z", list, q.auth, sizeof(q.auth), &err),
                     0);
    expect_denied(&q, "is not the SHA-256 of the body");
    /* sent but not signed */
    invoke(&q);
    q.h[5] = (struct cq_sigv4_header){"x-amz-content-sha256", "UNSIGNED-PAYLOAD"};
    expect_denied(&q, "x-amz-content-sha256 must be sent once and signed");
}
END_TEST

START_TEST(test_signer_matches_botocore)
{
    struct req q;
    struct cq_error err;
    char want[512], got[512];
    void (*vectors[])(struct req *) = {invoke, get, token};
    const char *lists[] = {"content-type;host;x-amz-date;x-amzn-code-interpreter-session-id",
                           "host;x-amz-date", "host;x-amz-date;x-amz-security-token"};
    for (size_t i = 0; i < 3; i++) {
        vectors[i](&q);
        snprintf(want, sizeof(want), "%s", q.auth);
        ck_assert_int_eq(cq_sigv4_sign(&q.r, AKID, SECRET, "us-east-1", "bedrock-agentcore",
                                       "20250716T123456Z", lists[i], got, sizeof(got), &err),
                         0);
        ck_assert_str_eq(got, want);
    }
}
END_TEST

/* Repeated headers are one canonical line, values joined with ',' in arrival order, and
 * inner runs of spaces count as one: as botocore does. */
START_TEST(test_repeated_headers_and_spaces)
{
    struct req q;
    struct cq_error err;
    get(&q);
    q.h[3] = (struct cq_sigv4_header){"X-Thing", "one"};
    q.h[4] = (struct cq_sigv4_header){"x-thing", "  two   words "};
    q.r.n_headers = 5;
    const char *list = "host;x-amz-date;x-thing";
    ck_assert_int_eq(cq_sigv4_sign(&q.r, AKID, SECRET, "us-east-1", "bedrock-agentcore",
                                   "20250716T123456Z", list, q.auth, sizeof(q.auth), &err),
                     0);
    ck_assert_int_eq(verify(&q, &err), 0);
    q.h[4].value = "two words";
    ck_assert_int_eq(verify(&q, &err), 0);
    q.h[3].value = "two words";
    q.h[4].value = "one"; /* order matters */
    expect_denied(&q, "signature mismatch");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("sigv4");
    TCase *tc = tcase_create("verify");
    tcase_add_test(tc, test_botocore_requests_accepted);
    tcase_add_test(tc, test_equivalent_spellings);
    tcase_add_test(tc, test_tampering_refused);
    tcase_add_test(tc, test_required_parts);
    tcase_add_test(tc, test_clock_skew);
    tcase_add_test(tc, test_keys_and_scope);
    tcase_add_test(tc, test_malformed_authorization);
    tcase_add_test(tc, test_content_sha256);
    tcase_add_test(tc, test_signer_matches_botocore);
    tcase_add_test(tc, test_repeated_headers_and_spaces);
    suite_add_tcase(s, tc);
    return cq_unit_run(s, false);
}
