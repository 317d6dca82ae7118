/* tests/unit/test_runtime_spec.c - runtime/spec.c: the strict spec parser (every refusal
 * names its field) and the layer digest (canonical, order-independent for artifacts). */
#define _GNU_SOURCE
#include "runtime/runtime.h"
#include "unit.h"

#include <stdio.h>
#include <string.h>

static void spec_ok(const char *json, struct cq_runtime_spec *s)
{
    struct cq_error err = {0};
    int rc = cq_runtime_spec_parse(json, strlen(json), s, &err);
    ck_assert_msg(rc == 0, "refused %s: %s", json, err.msg);
}

/* Refused, with a message that contains want (the field, or the reason). */
static void spec_bad(const char *json, const char *want)
{
    struct cq_error err = {0};
    struct cq_runtime_spec s;
    int rc = cq_runtime_spec_parse(json, strlen(json), &s, &err);
    if (rc == 0)
        cq_runtime_spec_free(&s);
    ck_assert_msg(rc == -1, "accepted %s", json);
    ck_assert_int_eq(err.code, CQ_EINVALID);
    ck_assert_msg(strstr(err.msg, want) != NULL, "for %s: message '%s' lacks '%s'", json, err.msg,
                  want);
}

#define BASE "\"name\":\"a\",\"language\":\"python3.11\""

START_TEST(full_spec)
{
    struct cq_runtime_spec s;
    spec_ok("{\"name\": \"analytics\", \"language\": \"python3.11\", \"packages\": {\"pip\": "
            "[\"polars==1.*\", \"a[b,c]>=1,<2\"], \"npm\": [\"lodash@4\", \"@types/node@^20\"]}, "
            "\"environment\": {\"MPLBACKEND\": \"Agg\"}, \"preload\": [\"polars\", \"a.b\"]}",
            &s);
    ck_assert_str_eq(s.name, "analytics");
    ck_assert_str_eq(s.language, "python3.11");
    ck_assert_uint_eq(s.n_pip, 2);
    ck_assert_str_eq(s.pip[1], "a[b,c]>=1,<2");
    ck_assert_uint_eq(s.n_npm, 2);
    ck_assert_uint_eq(s.n_env, 1);
    ck_assert_str_eq(s.env[0], "MPLBACKEND=Agg");
    ck_assert_ptr_null(s.env[1]);
    ck_assert_uint_eq(s.n_preload, 2);
    cq_runtime_spec_free(&s);
    spec_ok("{\"name\":\"n0.d_e-f\",\"language\":\"node\",\"packages\":{\"npm\":[\"x\"]}}", &s);
    cq_runtime_spec_free(&s);
    spec_ok("{" BASE "}", &s); /* no packages: a layer of environment only */
    ck_assert_uint_eq(s.n_pip + s.n_npm + s.n_env, 0);
    cq_runtime_spec_free(&s);
}
END_TEST

START_TEST(bad_json_and_keys)
{
    spec_bad("{\"name\": \"a\",", "malformed JSON");
    spec_bad("[]", "JSON object");
    spec_bad("{" BASE ",\"name\":\"b\"}", "malformed JSON"); /* a duplicate key */
    spec_bad("{" BASE ",\"image\":\"x\"}", "unknown key 'image'");
    spec_bad("{" BASE ",\"packages\":{\"apt\":[\"x\"]}}", "packages: unknown key 'apt'");
    spec_bad("{\"language\":\"python3.11\"}", "name: required");
    spec_bad("{\"name\":\"a\"}", "language: required");
}
END_TEST

START_TEST(names)
{
    spec_bad("{\"name\":\"a/b\",\"language\":\"node\"}", "name 'a/b'");
    spec_bad("{\"name\":\"a..b\",\"language\":\"node\"}", "'..'");
    spec_bad("{\"name\":\"..\",\"language\":\"node\"}", "name '..'");
    spec_bad("{\"name\":\".a\",\"language\":\"node\"}", "must start");
    spec_bad("{\"name\":\"Ab\",\"language\":\"node\"}", "must start");
    spec_bad("{\"name\":\"aB\",\"language\":\"node\"}", "only a-z");
    spec_bad("{\"name\":\"\",\"language\":\"node\"}", "1 to 63");
    char long_name[128];
    snprintf(long_name, sizeof(long_name), "{\"name\":\"%064d\",\"language\":\"node\"}", 0);
    spec_bad(long_name, "1 to 63");
    ck_assert_int_eq(cq_runtime_name_check("a"
                                           "123456789012345678901234567890123456789012345678901"
                                           "23456789012",
                                           NULL),
                     0); /* 63 characters */
}
END_TEST

START_TEST(languages)
{
    spec_bad("{\"name\":\"a\",\"language\":\"ruby\"}", "language 'ruby'");
    spec_bad("{\"name\":\"a\",\"language\":\"python3\"}", "language 'python3'");
    spec_bad("{\"name\":\"a\",\"language\":\"python3.11 \"}", "language");
    spec_bad("{\"name\":\"a\",\"language\":\"python3.x\"}", "language");
    spec_bad("{\"name\":\"a\",\"language\":\"node\",\"packages\":{\"pip\":[\"x\"]}}",
             "packages.pip: a node runtime");
}
END_TEST

START_TEST(requirements)
{
    /* options, URLs, paths, markers, whitespace, direct references */
    spec_bad("{" BASE ",\"packages\":{\"pip\":[\"--index-url=http://evil/\"]}}", "packages.pip[0]");
    spec_bad("{" BASE ",\"packages\":{\"pip\":[\"ok\",\"-e.\"]}}", "packages.pip[1]");
    spec_bad("{" BASE ",\"packages\":{\"pip\":[\"x @ https://evil/x.whl\"]}}", "packages.pip[0]");
    spec_bad("{" BASE ",\"packages\":{\"pip\":[\"x@https://evil/x.whl\"]}}", "no URLs");
    spec_bad("{" BASE ",\"packages\":{\"pip\":[\"./x\"]}}", "packages.pip[0]");
    spec_bad("{" BASE ",\"packages\":{\"pip\":[\"x/y\"]}}", "packages.pip[0]");
    spec_bad("{" BASE ",\"packages\":{\"pip\":[\"x;python_version>'3'\"]}}", "packages.pip[0]");
    spec_bad("{" BASE ",\"packages\":{\"pip\":[\"x\\ny\"]}}", "packages.pip[0]");
    spec_bad("{" BASE ",\"packages\":{\"pip\":[\"x\",\"x\"]}}", "listed twice");
    spec_bad("{" BASE ",\"packages\":{\"pip\":[\"\"]}}", "non-empty");
    spec_bad("{" BASE ",\"packages\":{\"pip\":[1]}}", "packages.pip[0]");
    spec_bad("{" BASE ",\"packages\":{\"pip\":\"x\"}}", "array of strings");
    spec_bad("{" BASE ",\"packages\":{\"npm\":[\"--registry=http://evil\"]}}", "packages.npm[0]");
    spec_bad("{" BASE ",\"packages\":{\"npm\":[\"x@file:../y.tgz\"]}}", "packages.npm[0]");
    spec_bad("{" BASE ",\"packages\":{\"npm\":[\"git+https://evil/x\"]}}", "packages.npm[0]");
    spec_bad("{" BASE ",\"packages\":{\"npm\":[\"x@github:a/b\"]}}", "packages.npm[0]");
    spec_bad("{" BASE ",\"packages\":{\"npm\":[\"/abs/path\"]}}", "packages.npm[0]");
    spec_bad("{" BASE ",\"packages\":{\"npm\":[\"@scope\"]}}", "@SCOPE/NAME");
    spec_bad("{" BASE ",\"packages\":{\"npm\":[\"@a/b/c\"]}}", "packages.npm[0]");
    spec_bad("{" BASE ",\"packages\":{\"npm\":[\"x@\"]}}", "packages.npm[0]");
    spec_bad("{" BASE ",\"packages\":{\"npm\":[\"x@>=1 <2\"]}}", "packages.npm[0]");
    /* The scope is a name too (found by fuzz_runtime_spec: it was not checked). */
    spec_bad("{" BASE ",\"packages\":{\"npm\":[\"@:types/node@^20\"]}}", "packages.npm[0]");
    spec_bad("{" BASE ",\"packages\":{\"npm\":[\"@git+ssh:x/y\"]}}", "packages.npm[0]");
    spec_bad("{" BASE ",\"packages\":{\"npm\":[\"@a b/c\"]}}", "packages.npm[0]");
    spec_bad("{" BASE ",\"packages\":{\"npm\":[\"@../c\"]}}", "packages.npm[0]");
}
END_TEST

START_TEST(environment)
{
    spec_bad("{" BASE ",\"environment\":{\"PATH\":\"/x\"}}", "environment 'PATH'");
    spec_bad("{" BASE ",\"environment\":{\"PYTHONPATH\":\"/x\"}}", "environment 'PYTHONPATH'");
    spec_bad("{" BASE ",\"environment\":{\"NODE_PATH\":\"/x\"}}", "codeq sets");
    spec_bad("{" BASE ",\"environment\":{\"HOME\":\"/x\"}}", "codeq sets");
    spec_bad("{" BASE ",\"environment\":{\"LD_PRELOAD\":\"/x\"}}", "codeq sets");
    spec_bad("{" BASE ",\"environment\":{\"PIP_INDEX_URL\":\"/x\"}}", "codeq sets");
    spec_bad("{" BASE ",\"environment\":{\"pip_index_url\":\"/x\"}}", "codeq sets");
    spec_bad("{" BASE ",\"environment\":{\"CODEQ_X\":\"1\"}}", "codeq sets");
    spec_bad("{" BASE ",\"environment\":{\"1A\":\"1\"}}", "environment '1A'");
    spec_bad("{" BASE ",\"environment\":{\"A-B\":\"1\"}}", "environment 'A-B'");
    spec_bad("{" BASE ",\"environment\":{\"A=B\":\"1\"}}", "environment 'A=B'");
    spec_bad("{" BASE ",\"environment\":{\"A\":1}}", "environment 'A'");
    spec_bad("{" BASE ",\"environment\":{\"A\":\"x\\ny\"}}", "control character");
    spec_bad("{" BASE ",\"environment\":{\"A\":\"x\\u0000y\"}}", "NUL");
    spec_bad("{" BASE ",\"environment\":[]}", "environment: must be an object");
    spec_bad("{" BASE ",\"preload\":[\"os;x\"]}", "preload[0]");
    spec_bad("{" BASE ",\"preload\":[\"a..b\"]}", "preload[0]");
}
END_TEST

START_TEST(canonical_and_digest)
{
    struct cq_runtime_spec a, b, c;
    spec_ok(
        "{\"name\":\"a\",\"language\":\"python3.11\",\"environment\":{\"X\":\"1\",\"Y\":\"2\"}}",
        &a);
    spec_ok("{ \"environment\": {\"Y\": \"2\", \"X\": \"1\"},\n \"language\": \"python3.11\", "
            "\"name\": \"a\" }",
            &b);
    spec_ok(
        "{\"name\":\"a\",\"language\":\"python3.11\",\"environment\":{\"X\":\"1\",\"Y\":\"3\"}}",
        &c);
    /* Formatting and key order do not change the canonical form; a value does. */
    ck_assert_str_eq(a.canonical, b.canonical);
    ck_assert_str_ne(a.canonical, c.canonical);

    const char *arts1[] = {"pip x 1.0 sha256:aa", "npm y 2.0 sha512-bb"};
    const char *arts2[] = {"npm y 2.0 sha512-bb", "pip x 1.0 sha256:aa"};
    const char *arts3[] = {"pip x 1.0 sha256:ab", "npm y 2.0 sha512-bb"};
    char d1[65], d2[65], d3[65], d4[65], d5[65];
    ck_assert_int_eq(cq_runtime_digest(a.canonical, arts1, 2, d1, NULL), 0);
    ck_assert_int_eq(cq_runtime_digest(b.canonical, arts2, 2, d2, NULL), 0);
    ck_assert_int_eq(cq_runtime_digest(a.canonical, arts3, 2, d3, NULL), 0);
    ck_assert_int_eq(cq_runtime_digest(c.canonical, arts1, 2, d4, NULL), 0);
    ck_assert_int_eq(cq_runtime_digest(a.canonical, arts1, 1, d5, NULL), 0);
    ck_assert_uint_eq(strlen(d1), 64);
    ck_assert_str_eq(d1, d2); /* the installers' order does not matter */
    ck_assert_str_ne(d1, d3); /* an artifact's hash does */
    ck_assert_str_ne(d1, d4); /* the spec does */
    ck_assert_str_ne(d1, d5); /* and the set of artifacts */
    /* Known answer: sha256("codeq-layer-v1\0" "{}\0"), so that the digest of a layer
     * does not change between codeq versions unnoticed. */
    ck_assert_int_eq(cq_runtime_digest("{}", NULL, 0, d1, NULL), 0);
    ck_assert_str_eq(d1, "5afa95644ebcd424ea2c92500c9c8793e3dadc10ba4f4a80aaa3928320151785");
    cq_runtime_spec_free(&a);
    cq_runtime_spec_free(&b);
    cq_runtime_spec_free(&c);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("runtime_spec");
    TCase *tc = tcase_create("spec");
    tcase_add_test(tc, full_spec);
    tcase_add_test(tc, bad_json_and_keys);
    tcase_add_test(tc, names);
    tcase_add_test(tc, languages);
    tcase_add_test(tc, requirements);
    tcase_add_test(tc, environment);
    tcase_add_test(tc, canonical_and_digest);
    suite_add_tcase(s, tc);
    return cq_unit_run(s, false);
}
