/* tests/unit/test_interpreter_def.c - runtime/interpreter.c: the strict definition parser
 * (every refusal names its field), the tenants a definition may name, the JSON round trip, the
 * local store in a temporary directory (save, load, list, remove, the built-in codeq.default) and
 * the profile of an interpreter without a runtime. */
#define _GNU_SOURCE
#include "runtime/interpreter.h"
#include "common/cleanup.h"
#include "unit.h"

#include <dirent.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void def_ok(const char *json, struct cq_interpreter_def *d)
{
    struct cq_error err = {0};
    int rc = cq_interpreter_def_parse(json, strlen(json), d, &err);
    ck_assert_msg(rc == 0, "refused %s: %s", json, err.msg);
}

static void def_bad(const char *json, const char *want)
{
    struct cq_error err = {0};
    struct cq_interpreter_def d;
    int rc = cq_interpreter_def_parse(json, strlen(json), &d, &err);
    if (rc == 0)
        cq_interpreter_def_free(&d);
    ck_assert_msg(rc == -1, "accepted %s", json);
    ck_assert_int_eq(err.code, CQ_EINVALID);
    ck_assert_msg(strstr(err.msg, want) != NULL, "for %s: message '%s' lacks '%s'", json, err.msg,
                  want);
}

START_TEST(full_definition)
{
    struct cq_interpreter_def d;
    def_ok("{\"name\": \"analytics\", \"runtime\": \"rt-1\", \"network\": \"ALLOWLIST\", "
           "\"allow\": [\"pypi.org:443\", \"*.example.com\", \"192.0.2.0/24\"], \"memory\": "
           "1073741824, \"cpus\": 1.5, \"disk\": 536870912, \"sessionTimeoutSeconds\": 3600, "
           "\"warmPool\": 2, \"createdAt\": \"2026-12-07T09:21:29.123Z\"}",
           &d);
    ck_assert_str_eq(d.name, "analytics");
    ck_assert_str_eq(d.runtime, "rt-1");
    ck_assert(d.has_network);
    ck_assert_int_eq(d.network, CQ_NETWORK_ALLOWLIST);
    ck_assert_uint_eq(d.n_allow, 3);
    ck_assert_str_eq(d.allow[1], "*.example.com");
    ck_assert_ptr_null(d.allow[3]);
    ck_assert_uint_eq(d.memory_bytes, 1ULL << 30);
    ck_assert(d.cpus == 1.5);
    ck_assert_uint_eq(d.disk_bytes, 512ULL << 20);
    ck_assert_uint_eq(d.session_timeout_s, 3600);
    ck_assert_uint_eq(d.warm_pool, 2);
    ck_assert_int_eq(d.created_ms, 1796635289123LL);
    cq_interpreter_def_free(&d);

    def_ok("{\"name\": \"minimal\"}", &d);
    ck_assert_str_eq(d.runtime, "");
    ck_assert(!d.has_network);
    ck_assert_uint_eq(d.memory_bytes + d.disk_bytes + d.session_timeout_s + d.warm_pool, 0);
    ck_assert_ptr_null(d.allow);
    cq_interpreter_def_free(&d);
}
END_TEST

START_TEST(bad_definitions)
{
    def_bad("{\"name\": \"a\",", "malformed JSON");
    def_bad("[]", "must be a JSON object");
    def_bad("{\"name\": \"a\", \"image\": \"debian\"}", "unknown key 'image'");
    def_bad("{\"name\": \"a\", \"name\": \"b\"}", "malformed JSON"); /* duplicate keys */
    def_bad("{}", "name: required");
    def_bad("{\"name\": \"a/b\"}", "name 'a/b'");
    def_bad("{\"name\": \"..\"}", "name '..'");
    def_bad("{\"name\": \"a..b\"}", "must not contain '..'");
    def_bad("{\"name\": \"Upper\"}", "name 'Upper'");
    def_bad("{\"name\": \"\"}", "must be 1 to 63");
    def_bad("{\"name\": \"a\", \"runtime\": \"../x\"}", "runtime: name '../x'");
    def_bad("{\"name\": \"a\", \"runtime\": 3}", "runtime:");
    def_bad("{\"name\": \"a\", \"network\": \"OPEN\"}", "network: must be NONE");
    def_bad("{\"name\": \"a\", \"network\": \"public\"}", "network: must be NONE");
    def_bad("{\"name\": \"a\", \"network\": \"ALLOWLIST\"}", "allow: network ALLOWLIST needs");
    def_bad("{\"name\": \"a\", \"network\": \"PUBLIC\", \"allow\": [\"x.org\"]}",
            "allow: destinations go with network ALLOWLIST only");
    def_bad("{\"name\": \"a\", \"allow\": [\"x.org\"]}", "allow: destinations go with");
    def_bad("{\"name\": \"a\", \"network\": \"ALLOWLIST\", \"allow\": []}", "allow: must be");
    def_bad("{\"name\": \"a\", \"network\": \"ALLOWLIST\", \"allow\": [\"x.org\", \"http://y\"]}",
            "allow[1] 'http://y'");
    def_bad("{\"name\": \"a\", \"network\": \"ALLOWLIST\", \"allow\": [7]}", "allow[0]");
    def_bad("{\"name\": \"a\", \"memory\": \"512M\"}", "memory: must be an integer");
    def_bad("{\"name\": \"a\", \"memory\": 1024}", "memory: must be an integer from 33554432");
    def_bad("{\"name\": \"a\", \"memory\": 0}", "memory:");
    def_bad("{\"name\": \"a\", \"memory\": -1}", "memory:");
    def_bad("{\"name\": \"a\", \"disk\": 2199023255553}", "disk:");
    def_bad("{\"name\": \"a\", \"cpus\": 0}", "cpus: must be a number");
    def_bad("{\"name\": \"a\", \"cpus\": 1000}", "cpus:");
    def_bad("{\"name\": \"a\", \"cpus\": \"2\"}", "cpus:");
    def_bad("{\"name\": \"a\", \"sessionTimeoutSeconds\": 0}", "sessionTimeoutSeconds:");
    def_bad("{\"name\": \"a\", \"sessionTimeoutSeconds\": 28801}", "sessionTimeoutSeconds:");
    def_bad("{\"name\": \"a\", \"warmPool\": 17}", "warmPool:");
    def_bad("{\"name\": \"a\", \"warmPool\": 1.5}", "warmPool:");
    def_bad("{\"name\": \"a\", \"createdAt\": \"yesterday\"}", "createdAt:");
    def_bad("{\"name\": \"a\", \"createdAt\": 17}", "createdAt:");
    def_bad("{\"name\": \"a\", \"createdAt\": \"2026-13-07T09:21:29.123Z\"}", "createdAt:");
    /* Times that would not round trip (found with fuzz_interpreter_def): a negative field (at the
     * epoch it gave a createdAt below 0, which is then not written), and a
     * leap second into the year 10000 (written with five digits, which do not parse). */
    def_bad("{\"name\": \"a\", \"createdAt\": \"1970-01-01T00:00:00.-12Z\"}", "createdAt:");
    def_bad("{\"name\": \"a\", \"createdAt\": \"2026-01-01T00:00:00.-12Z\"}", "createdAt:");
    def_bad("{\"name\": \"a\", \"createdAt\": \"1970-01-01T-1:00:00.000Z\"}", "createdAt:");
    def_bad("{\"name\": \"a\", \"createdAt\": \"1970-01-01T00:-1:00.000Z\"}", "createdAt:");
    def_bad("{\"name\": \"a\", \"createdAt\": \"1970-01-01T00:00:-1.000Z\"}", "createdAt:");
    def_bad("{\"name\": \"a\", \"createdAt\": \"9999-12-31T23:59:60.999Z\"}", "createdAt:");
}
END_TEST

START_TEST(tenants)
{
    struct cq_interpreter_def d;
    def_ok("{\"name\": \"private\", \"tenants\": [\"alice\", \"bob-2\", \"0ps\"]}", &d);
    ck_assert_uint_eq(d.n_tenants, 3);
    ck_assert_str_eq(d.tenants[0], "alice");
    ck_assert_str_eq(d.tenants[2], "0ps");
    ck_assert_ptr_null(d.tenants[3]);
    char *list = cq_interpreter_def_tenants(&d);
    ck_assert_str_eq(list, "alice,bob-2,0ps");
    free(list);
    char *text = cq_interpreter_def_json(&d);
    ck_assert_ptr_nonnull(strstr(text, "\"tenants\": [\n    \"alice\",\n    \"bob-2\""));
    free(text);
    cq_interpreter_def_free(&d);
    ck_assert_ptr_null(d.tenants);

    /* A name as long as the keys allow (40). */
    def_ok("{\"name\": \"a\", \"tenants\": [\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"]}", &d);
    ck_assert_uint_eq(d.n_tenants, 1);
    cq_interpreter_def_free(&d);

    /* Absent or empty: every tenant, and nothing written back. */
    static const char *const every[] = {"{\"name\": \"a\"}", "{\"name\": \"a\", \"tenants\": []}"};
    for (size_t i = 0; i < CQ_ARRAY_LEN(every); i++) {
        def_ok(every[i], &d);
        ck_assert_uint_eq(d.n_tenants, 0);
        ck_assert_ptr_null(d.tenants);
        list = cq_interpreter_def_tenants(&d);
        ck_assert_str_eq(list, "");
        free(list);
        text = cq_interpreter_def_json(&d);
        ck_assert_ptr_null(strstr(text, "tenants"));
        free(text);
        cq_interpreter_def_free(&d);
    }

    /* The keys' rule (common/tenant.h): what a keys file could not hold is a typo. */
    def_bad("{\"name\": \"a\", \"tenants\": \"alice\"}", "tenants: must be an array");
    def_bad("{\"name\": \"a\", \"tenants\": {}}", "tenants: must be an array");
    def_bad("{\"name\": \"a\", \"tenants\": [\"Alice\"]}", "tenants[0] 'Alice': not a tenant");
    def_bad("{\"name\": \"a\", \"tenants\": [\"alice\", \"-bob\"]}", "tenants[1] '-bob'");
    def_bad("{\"name\": \"a\", \"tenants\": [\"a.b\"]}", "tenants[0] 'a.b'");
    def_bad("{\"name\": \"a\", \"tenants\": [\"a,b\"]}", "tenants[0] 'a,b'");
    def_bad("{\"name\": \"a\", \"tenants\": [\"\"]}", "tenants[0] '': not a tenant");
    def_bad("{\"name\": \"a\", \"tenants\": [7]}", "tenants[0]: not a tenant");
    def_bad("{\"name\": \"a\", \"tenants\": [\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"]}",
            "tenants[0]");
    def_bad("{\"name\": \"a\", \"tenants\": [\"alice\", \"bob\", \"alice\"]}",
            "tenants[2] 'alice': named twice");
    char many[2048] = "{\"name\": \"a\", \"tenants\": [\"t0\"";
    for (int i = 1; i <= CQ_INTERPRETER_TENANTS_MAX; i++)
        snprintf(many + strlen(many), sizeof(many) - strlen(many), ", \"t%d\"", i);
    strcat(many, "]}");
    def_bad(many, "tenants: must be an array of at most 64");
}
END_TEST

START_TEST(json_round_trip)
{
    static const char *const inputs[] = {
        "{\"name\": \"analytics\", \"runtime\": \"rt\", \"network\": \"ALLOWLIST\", \"allow\": "
        "[\"pypi.org:443\", \"2001:db8::/32\"], \"memory\": 1073741824, \"cpus\": 0.5, \"disk\": "
        "1048576, \"sessionTimeoutSeconds\": 60, \"warmPool\": 3, \"createdAt\": "
        "\"2026-01-31T23:59:59.007Z\"}",
        "{\"name\": \"plain\"}",
        "{\"name\": \"pub\", \"network\": \"PUBLIC\", \"cpus\": 2}",
        "{\"name\": \"mine\", \"runtime\": \"rt\", \"tenants\": [\"bob\", \"alice\"]}",
    };
    for (size_t i = 0; i < CQ_ARRAY_LEN(inputs); i++) {
        struct cq_interpreter_def a, b;
        def_ok(inputs[i], &a);
        char *text = cq_interpreter_def_json(&a);
        ck_assert_ptr_nonnull(text);
        def_ok(text, &b);
        char *again = cq_interpreter_def_json(&b);
        ck_assert_str_eq(text, again);
        ck_assert_str_eq(a.name, b.name);
        ck_assert_str_eq(a.runtime, b.runtime);
        ck_assert_int_eq(a.has_network, b.has_network);
        ck_assert_int_eq(a.network, b.network);
        ck_assert_uint_eq(a.n_allow, b.n_allow);
        for (size_t k = 0; k < a.n_allow; k++)
            ck_assert_str_eq(a.allow[k], b.allow[k]);
        ck_assert_uint_eq(a.memory_bytes, b.memory_bytes);
        ck_assert(a.cpus == b.cpus);
        ck_assert_uint_eq(a.disk_bytes, b.disk_bytes);
        ck_assert_uint_eq(a.session_timeout_s, b.session_timeout_s);
        ck_assert_uint_eq(a.warm_pool, b.warm_pool);
        ck_assert_uint_eq(a.n_tenants, b.n_tenants);
        for (size_t k = 0; k < a.n_tenants; k++)
            ck_assert_str_eq(a.tenants[k], b.tenants[k]);
        ck_assert_int_eq(a.created_ms, b.created_ms);
        free(text);
        free(again);
        cq_interpreter_def_free(&a);
        cq_interpreter_def_free(&b);
    }
}
END_TEST

/* --- the store --------------------------------------------------------------------- */

static char store[64];

static int rm_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st;
    (void)type;
    (void)ftw;
    return remove(path);
}

static void store_setup(void)
{
    snprintf(store, sizeof(store), "/tmp/codeq-test-interp-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(store));
}

static void store_teardown(void)
{
    nftw(store, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* A runtime name in the store without building one: names/<name> holds a digest. */
static void fake_runtime(const char *name)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/names", store);
    mkdir(path, 0755);
    snprintf(path, sizeof(path), "%s/names/%s", store, name);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "%064d\n", 0);
    fclose(f);
}

struct seen {
    char names[8][64];
    size_t n;
};

static void collect(void *ctx, const struct cq_interpreter_def *d)
{
    struct seen *s = ctx;
    if (s->n < 8)
        snprintf(s->names[s->n++], 64, "%s", d->name);
}

static size_t entries(const char *sub)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/%s", store, sub);
    DIR *d = opendir(path);
    size_t n = 0;
    struct dirent *e;
    while (d != NULL && (e = readdir(d)) != NULL)
        n += e->d_name[0] != '.' || (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0);
    if (d != NULL)
        closedir(d);
    return n;
}

/* What CreateCodeInterpreter was given (codeq serve): kept through the JSON round
 * trip, strict like the rest. */
START_TEST(agentcore_metadata)
{
    struct cq_interpreter_def d;
    def_ok("{\"name\": \"analytics-a1b2c3d4e5\", \"agentcore\": {\"name\": \"Analytics\", "
           "\"description\": \"team A\", \"executionRoleArn\": "
           "\"arn:aws:iam::123456789012:role/R\", \"clientToken\": "
           "\"0123456789abcdef0123456789abcdef0\"}}",
           &d);
    ck_assert_str_eq(d.agentcore.name, "Analytics");
    ck_assert_str_eq(d.agentcore.description, "team A");
    ck_assert_str_eq(d.agentcore.role_arn, "arn:aws:iam::123456789012:role/R");
    ck_assert_str_eq(d.agentcore.client_token, "0123456789abcdef0123456789abcdef0");
    cq_autofree char *json = cq_interpreter_def_json(&d);
    struct cq_interpreter_def again;
    def_ok(json, &again);
    ck_assert_str_eq(again.agentcore.name, "Analytics");
    ck_assert_str_eq(again.agentcore.client_token, d.agentcore.client_token);
    cq_interpreter_def_free(&again);
    cq_interpreter_def_free(&d);

    def_ok("{\"name\": \"plain\"}", &d);
    ck_assert_ptr_null(d.agentcore.name);
    cq_autofree char *plain = cq_interpreter_def_json(&d);
    ck_assert_ptr_null(strstr(plain, "agentcore"));
    cq_interpreter_def_free(&d);

    def_bad("{\"name\": \"x\", \"agentcore\": {\"tags\": \"a\"}}", "agentcore: unknown key 'tags'");
    def_bad("{\"name\": \"x\", \"agentcore\": {\"name\": \"\"}}", "agentcore.name");
    def_bad("{\"name\": \"x\", \"agentcore\": {\"description\": 3}}", "agentcore.description");
    def_bad("{\"name\": \"x\", \"agentcore\": []}", "agentcore: must be an object");
}
END_TEST

START_TEST(store_save_load_list_remove)
{
    struct cq_error err = {0};
    struct cq_interpreter_def d, got;
    def_ok("{\"name\": \"beta\", \"memory\": 268435456, \"network\": \"NONE\"}", &d);
    ck_assert_int_eq(cq_interpreter_save(store, &d, false, &err), 0);
    /* Saving again without replace: refused, the first one kept. */
    ck_assert_int_eq(cq_interpreter_save(store, &d, false, &err), -1);
    ck_assert_int_eq(err.code, EEXIST);
    ck_assert_ptr_nonnull(strstr(err.msg, "interpreter 'beta' exists already"));
    d.memory_bytes = 64ULL << 20;
    ck_assert_int_eq(cq_interpreter_save(store, &d, true, &err), 0);
    ck_assert_int_eq(cq_interpreter_load(store, "beta", &got, &err), 0);
    ck_assert_uint_eq(got.memory_bytes, 64ULL << 20);
    ck_assert(got.has_network && got.network == CQ_NETWORK_NONE);
    ck_assert_int_gt(got.created_ms, 1700000000000LL); /* stamped at save */
    cq_interpreter_def_free(&got);
    cq_interpreter_def_free(&d);

    /* A runtime the store does not have: refused, nothing written. */
    def_ok("{\"name\": \"alpha\", \"runtime\": \"rt\"}", &d);
    ck_assert_int_eq(cq_interpreter_save(store, &d, false, &err), -1);
    ck_assert_int_eq(err.code, CQ_ENOTFOUND);
    ck_assert_ptr_nonnull(strstr(err.msg, "no runtime 'rt'"));
    ck_assert_uint_eq(entries("interpreters"), 1);
    fake_runtime("rt");
    ck_assert_int_eq(cq_interpreter_save(store, &d, false, &err), 0);
    cq_interpreter_def_free(&d);

    /* The built-in one can be read, never written or removed. */
    def_ok("{\"name\": \"codeq.default\"}", &d);
    ck_assert_int_eq(cq_interpreter_save(store, &d, true, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "built in"));
    cq_interpreter_def_free(&d);
    ck_assert_int_eq(cq_interpreter_remove(store, CQ_INTERPRETER_DEFAULT, &err), -1);
    ck_assert_int_eq(cq_interpreter_load(store, CQ_INTERPRETER_DEFAULT, &got, &err), 0);
    ck_assert_uint_eq(got.memory_bytes, CQ_SANDBOX_DEFAULT_MEMORY);
    ck_assert_uint_eq(got.session_timeout_s, CQ_WORKER_DEFAULT_SESSION_TTL_S);
    cq_interpreter_def_free(&got);

    struct seen seen = {0};
    ck_assert_int_eq(cq_interpreter_list(store, collect, &seen, &err), 0);
    ck_assert_uint_eq(seen.n, 3);
    ck_assert_str_eq(seen.names[0], "codeq.default");
    ck_assert_str_eq(seen.names[1], "alpha");
    ck_assert_str_eq(seen.names[2], "beta");

    /* Names that would leave the directory are refused before any path is made. */
    ck_assert_int_eq(cq_interpreter_load(store, "../names/rt", &got, &err), -1);
    ck_assert_int_eq(err.code, CQ_EINVALID);
    ck_assert_int_eq(cq_interpreter_remove(store, "..", &err), -1);
    ck_assert_int_eq(err.code, CQ_EINVALID);

    ck_assert_int_eq(cq_interpreter_remove(store, "alpha", &err), 0);
    ck_assert_int_eq(cq_interpreter_load(store, "alpha", &got, &err), -1);
    ck_assert_int_eq(err.code, CQ_ENOTFOUND);
    ck_assert_int_eq(cq_interpreter_remove(store, "alpha", &err), -1);
    ck_assert_int_eq(err.code, CQ_ENOTFOUND);
    ck_assert_uint_eq(entries("interpreters"), 1); /* no temporary left behind */

    /* A store that does not exist yet is made, with its parents. */
    char deep[128];
    snprintf(deep, sizeof(deep), "%s/deep/er", store);
    def_ok("{\"name\": \"gamma\"}", &d);
    ck_assert_int_eq(cq_interpreter_save(deep, &d, false, &err), 0);
    ck_assert_int_eq(cq_interpreter_load(deep, "gamma", &got, &err), 0);
    cq_interpreter_def_free(&got);
    cq_interpreter_def_free(&d);
}
END_TEST

START_TEST(store_refuses_tampered_files)
{
    struct cq_error err = {0};
    struct cq_interpreter_def d;
    def_ok("{\"name\": \"good\"}", &d);
    ck_assert_int_eq(cq_interpreter_save(store, &d, false, &err), 0);
    cq_interpreter_def_free(&d);
    char path[256];
    /* A file under another name than the one it holds, and one that is not JSON. */
    snprintf(path, sizeof(path), "%s/interpreters/other.json", store);
    FILE *f = fopen(path, "w");
    fputs("{\"name\": \"good\"}", f);
    fclose(f);
    ck_assert_int_eq(cq_interpreter_load(store, "other", &d, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "names interpreter 'good'"));
    snprintf(path, sizeof(path), "%s/interpreters/broken.json", store);
    f = fopen(path, "w");
    fputs("{\"name\": ", f);
    fclose(f);
    ck_assert_int_eq(cq_interpreter_load(store, "broken", &d, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "malformed JSON"));
    /* list skips both, and shows the rest. */
    struct seen seen = {0};
    ck_assert_int_eq(cq_interpreter_list(store, collect, &seen, &err), 0);
    ck_assert_uint_eq(seen.n, 2);
    ck_assert_str_eq(seen.names[1], "good");
}
END_TEST

START_TEST(profile_without_runtime)
{
    struct cq_error err = {0};
    struct cq_interpreter_def d;
    def_ok("{\"name\": \"lim\", \"network\": \"ALLOWLIST\", \"allow\": [\"x.org\"], \"memory\": "
           "67108864, \"cpus\": 0.5, \"disk\": 2097152, \"sessionTimeoutSeconds\": 30, "
           "\"warmPool\": 1}",
           &d);
    struct cq_interpreter_profile p;
    ck_assert_int_eq(cq_interpreter_profile(store, &d, &p, &err), 0);
    ck_assert_str_eq(p.worker.name, "lim");
    ck_assert_ptr_null(p.worker.layer.host_path);
    ck_assert_ptr_null(p.worker.runtime);
    ck_assert_uint_eq(p.worker.limits.memory_bytes, 64ULL << 20);
    ck_assert(p.worker.limits.cpus == 0.5);
    ck_assert_uint_eq(p.worker.limits.workspace_bytes, 2ULL << 20);
    ck_assert_uint_eq(p.worker.limits.pids, 0);
    ck_assert_ptr_nonnull(p.worker.network);
    ck_assert_int_eq(*p.worker.network, CQ_NETWORK_ALLOWLIST);
    ck_assert_uint_eq(p.worker.n_allow, 1);
    ck_assert_str_eq(p.worker.allow[0], "x.org");
    ck_assert_uint_eq(p.worker.session_timeout_s, 30);
    ck_assert_uint_eq(p.worker.warm_pool, 1);
    cq_interpreter_profile_free(&p);
    cq_interpreter_def_free(&d);

    /* A runtime that is gone: NOT_FOUND, naming the interpreter. */
    def_ok("{\"name\": \"gone\", \"runtime\": \"nope\"}", &d);
    ck_assert_int_eq(cq_interpreter_profile(store, &d, &p, &err), -1);
    ck_assert_int_eq(err.code, CQ_ENOTFOUND);
    ck_assert_ptr_nonnull(strstr(err.msg, "interpreter 'gone'"));
    cq_interpreter_def_free(&d);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("interpreter_def");
    TCase *tc = tcase_create("parse");
    tcase_add_test(tc, full_definition);
    tcase_add_test(tc, bad_definitions);
    tcase_add_test(tc, tenants);
    tcase_add_test(tc, json_round_trip);
    tcase_add_test(tc, agentcore_metadata);
    suite_add_tcase(s, tc);
    tc = tcase_create("store");
    tcase_add_checked_fixture(tc, store_setup, store_teardown);
    tcase_add_test(tc, store_save_load_list_remove);
    tcase_add_test(tc, store_refuses_tampered_files);
    tcase_add_test(tc, profile_without_runtime);
    suite_add_tcase(s, tc);
    return cq_unit_run(s, false);
}
