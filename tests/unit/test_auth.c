/* tests/unit/test_auth.c - fleet/keys.c and fleet/auth.c: the keys file, a client's
 * credentials, and every way a signed request can be refused (the fleet tests,
 * tests/fleet/test_tenants.py, attack the daemons end to end). */
#define _GNU_SOURCE
#include "fleet/auth.h"
#include "fleet/interpreters.h"
#include "fleet/keys.h"
#include "unit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define NOW    1800000000000LL
#define WINDOW (5 * 60 * 1000)

static char dir[] = "/tmp/codeq-test-auth-XXXXXX";
static char path[256];
static struct cq_key acme, acme2, globex;

/* A keys file with tenants acme (two keys) and globex (one), as `codeq` makes it. */
static void setup(void)
{
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/keys", dir);
    struct cq_keyfile kf;
    struct cq_error err;
    ck_assert_int_eq(cq_keyfile_read(path, true, &kf, &err), 0);
    ck_assert_int_eq(cq_keyfile_add_tenant(&kf, "acme", &err), 0);
    ck_assert_int_eq(cq_keyfile_add_tenant(&kf, "globex", &err), 0);
    ck_assert_int_eq(cq_keyfile_add_key(&kf, "acme", &acme, &err), 0);
    ck_assert_int_eq(cq_keyfile_add_key(&kf, "acme", &acme2, &err), 0);
    ck_assert_int_eq(cq_keyfile_add_key(&kf, "globex", &globex, &err), 0);
    ck_assert_int_eq(cq_keyfile_write(path, &kf, &err), 0);
    cq_keyfile_free(&kf);
}

static void teardown(void)
{
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    ck_assert_int_eq(system(cmd), 0);
    strcpy(dir, "/tmp/codeq-test-auth-XXXXXX");
}

static Codeq__V1__Request *new_request(const char *tenant)
{
    static Codeq__V1__Invoke inv;
    static Codeq__V1__Arguments args;
    static Codeq__V1__Request req;
    codeq__v1__arguments__init(&args);
    args.code = "print(1)";
    codeq__v1__invoke__init(&inv);
    inv.tool = "executeCode";
    inv.arguments = &args;
    codeq__v1__request__init(&req);
    req.request_id = "r1";
    req.session_id = "s1";
    req.tenant = (char *)tenant;
    req.reply_topic = "codeq.replies.acme.x";
    req.operation_case = CODEQ__V1__REQUEST__OPERATION_INVOKE;
    req.invoke = &inv;
    return &req;
}

/* Signs req with key at ts and opens it at NOW; returns cq_auth_open()'s result. */
static int round_trip(struct cq_keystore *ks, const Codeq__V1__Request *req,
                      const struct cq_key *key, int64_t ts, struct cq_opened *op,
                      struct cq_error *err)
{
    uint8_t *bytes;
    size_t len;
    ck_assert_int_eq(cq_auth_sign(req, key->id, key->secret, ts, &bytes, &len, err), 0);
    int rc = cq_auth_open(ks, bytes, len, NOW, WINDOW, op, err);
    free(bytes);
    return rc;
}

START_TEST(names_of_tenants_and_keys)
{
    ck_assert(cq_tenant_name_ok("acme"));
    ck_assert(cq_tenant_name_ok("a-1"));
    ck_assert(!cq_tenant_name_ok(""));
    ck_assert(!cq_tenant_name_ok("-a"));
    ck_assert(!cq_tenant_name_ok("Acme"));
    ck_assert(!cq_tenant_name_ok("a.b"));
    ck_assert(!cq_tenant_name_ok("a:b"));
    ck_assert(!cq_tenant_name_ok("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")); /* 41 */
    ck_assert(cq_key_id_ok(acme.id));
    ck_assert(!cq_key_id_ok("cqk_0123"));
    ck_assert(!cq_key_id_ok("xyz_0123456789abcdef0123"));
    ck_assert_str_ne(acme.id, acme2.id);
    ck_assert_str_ne(acme.secret, acme2.secret);
}
END_TEST

/* Who may start a session on a fleet interpreter (the dispatcher's and the workers'
 * check): the tenants it lists, or any when it lists none; no proven tenant (keyless)
 * only the latter. */
START_TEST(tenants_of_an_interpreter)
{
    struct cq_fleet_interpreter it = {0};
    ck_assert(cq_fleet_interpreter_allows(&it, "acme")); /* a record from before tenants */
    ck_assert(cq_fleet_interpreter_allows(&it, NULL));
    it.tenants = (char *)"";
    ck_assert(cq_fleet_interpreter_allows(&it, "acme"));
    ck_assert(cq_fleet_interpreter_allows(&it, ""));
    ck_assert(cq_fleet_interpreter_allows(&it, NULL));
    it.tenants = (char *)"acme,globex,a";
    ck_assert(cq_fleet_interpreter_allows(&it, "acme"));
    ck_assert(cq_fleet_interpreter_allows(&it, "globex"));
    ck_assert(cq_fleet_interpreter_allows(&it, "a"));
    ck_assert(!cq_fleet_interpreter_allows(&it, "acm"));
    ck_assert(!cq_fleet_interpreter_allows(&it, "acme2"));
    ck_assert(!cq_fleet_interpreter_allows(&it, "acme,globex"));
    ck_assert(!cq_fleet_interpreter_allows(&it, "lobex"));
    ck_assert(!cq_fleet_interpreter_allows(&it, ""));
    ck_assert(!cq_fleet_interpreter_allows(&it, NULL));
}
END_TEST

START_TEST(a_signed_request_opens_as_it_was_signed)
{
    struct cq_keystore *ks;
    struct cq_error err;
    ck_assert_int_eq(cq_keystore_open(path, NULL, &ks, &err), 0);
    struct cq_opened op;
    ck_assert_int_eq(round_trip(ks, new_request("acme"), &acme, NOW - 1000, &op, &err), 0);
    ck_assert(op.is_signed);
    ck_assert_str_eq(op.key_id, acme.id);
    ck_assert_str_eq(op.req->request_id, "r1");
    ck_assert_str_eq(op.req->tenant, "acme");
    ck_assert_str_eq(op.req->invoke->arguments->code, "print(1)");
    /* Passed on unchanged, it opens again with the same digest. */
    uint8_t *wire, digest[32];
    size_t len;
    memcpy(digest, op.digest, 32);
    ck_assert_int_eq(cq_opened_pack(&op, &wire, &len, &err), 0);
    cq_opened_free(&op);
    ck_assert_int_eq(cq_auth_open(ks, wire, len, NOW, 0, &op, &err), 0);
    ck_assert_mem_eq(op.digest, digest, 32);
    char hex[65];
    cq_opened_digest_hex(&op, hex);
    ck_assert_uint_eq(strlen(hex), 64);
    cq_opened_free(&op);
    free(wire);
    /* The tenant's second key works as well (rotation). */
    ck_assert_int_eq(round_trip(ks, new_request("acme"), &acme2, NOW, &op, &err), 0);
    cq_opened_free(&op);
    cq_keystore_close(ks);
}
END_TEST

START_TEST(every_refusal_says_why)
{
    struct cq_keystore *ks;
    struct cq_error err;
    ck_assert_int_eq(cq_keystore_open(path, NULL, &ks, &err), 0);
    struct cq_opened op;
    /* Another tenant's key. */
    ck_assert_int_eq(round_trip(ks, new_request("acme"), &globex, NOW, &op, &err), -1);
    ck_assert_int_eq(err.code, CQ_EDENIED);
    ck_assert_ptr_nonnull(strstr(err.msg, "is not a key of tenant 'acme'"));
    ck_assert_ptr_nonnull(op.req); /* decoded, so that the refusal can be answered */
    cq_opened_free(&op);
    /* Too old, and too far ahead. */
    ck_assert_int_eq(round_trip(ks, new_request("acme"), &acme, NOW - WINDOW - 1000, &op, &err),
                     -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "expired"));
    cq_opened_free(&op);
    ck_assert_int_eq(round_trip(ks, new_request("acme"), &acme, NOW + WINDOW + 1000, &op, &err),
                     -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "ahead of"));
    cq_opened_free(&op);
    /* A secret that is not the key's. */
    struct cq_key forged = acme;
    forged.secret[0] = forged.secret[0] == '0' ? '1' : '0';
    ck_assert_int_eq(round_trip(ks, new_request("acme"), &forged, NOW, &op, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "bad signature"));
    cq_opened_free(&op);
    /* A key nobody made. */
    struct cq_key unknown = acme;
    memcpy(unknown.id + 4, "00000000000000000000", 20);
    ck_assert_int_eq(round_trip(ks, new_request("acme"), &unknown, NOW, &op, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "unknown key id"));
    cq_opened_free(&op);
    /* Unsigned, with keys. */
    uint8_t buf[512];
    size_t len = codeq__v1__request__pack(new_request("acme"), buf);
    ck_assert_int_eq(cq_auth_open(ks, buf, len, NOW, WINDOW, &op, &err), -1);
    ck_assert_int_eq(err.code, CQ_EDENIED);
    ck_assert_ptr_nonnull(strstr(err.msg, "unsigned request"));
    cq_opened_free(&op);
    /* Not a request at all. */
    ck_assert_int_eq(cq_auth_open(ks, (const uint8_t *)"\xff\xff\xff", 3, NOW, WINDOW, &op, &err),
                     -1);
    ck_assert_int_eq(err.code, CQ_EPROTO);
    ck_assert_ptr_null(op.req);
    cq_opened_free(&op);
    cq_keystore_close(ks);
}
END_TEST

/* Every byte of the signed request is covered: flip any one and it is refused. */
START_TEST(tampering_anywhere_is_refused)
{
    struct cq_keystore *ks;
    struct cq_error err;
    ck_assert_int_eq(cq_keystore_open(path, NULL, &ks, &err), 0);
    uint8_t *bytes;
    size_t len;
    ck_assert_int_eq(
        cq_auth_sign(new_request("acme"), acme.id, acme.secret, NOW, &bytes, &len, &err), 0);
    size_t refused = 0;
    for (size_t i = 0; i < len; i++) {
        bytes[i] ^= 0x01;
        struct cq_opened op;
        if (cq_auth_open(ks, bytes, len, NOW, WINDOW, &op, &err) < 0)
            refused++;
        cq_opened_free(&op);
        bytes[i] ^= 0x01;
    }
    ck_assert_uint_eq(refused, len);
    free(bytes);
    cq_keystore_close(ks);
}
END_TEST

/* The session id the fleet gives a startSession travels beside the signature; on
 * anything else, or replacing the client's own, it is refused. */
START_TEST(only_a_start_takes_the_fleets_session_id)
{
    struct cq_keystore *ks;
    struct cq_error err;
    ck_assert_int_eq(cq_keystore_open(path, NULL, &ks, &err), 0);
    Codeq__V1__StartSession start = CODEQ__V1__START_SESSION__INIT;
    Codeq__V1__Request req = CODEQ__V1__REQUEST__INIT;
    req.request_id = "r2";
    req.tenant = "acme";
    req.reply_topic = "codeq.replies.acme.x";
    req.operation_case = CODEQ__V1__REQUEST__OPERATION_START_SESSION;
    req.start_session = &start;
    uint8_t *bytes;
    size_t len;
    ck_assert_int_eq(cq_auth_sign(&req, acme.id, acme.secret, NOW, &bytes, &len, &err), 0);
    struct cq_opened op;
    ck_assert_int_eq(cq_auth_open(ks, bytes, len, NOW, WINDOW, &op, &err), 0);
    free(bytes);
    free(op.req->session_id == (char *)protobuf_c_empty_string ? NULL : op.req->session_id);
    op.req->session_id = strdup("abcdef0123456789abcdef0123456789");
    ck_assert_int_eq(cq_opened_pack(&op, &bytes, &len, &err), 0);
    cq_opened_free(&op);
    ck_assert_int_eq(cq_auth_open(ks, bytes, len, NOW, 0, &op, &err), 0);
    ck_assert_str_eq(op.req->session_id, "abcdef0123456789abcdef0123456789");
    cq_opened_free(&op);
    free(bytes);
    /* An invoke with a session id set outside its signature is refused. */
    ck_assert_int_eq(
        cq_auth_sign(new_request("acme"), acme.id, acme.secret, NOW, &bytes, &len, &err), 0);
    Codeq__V1__Request *outer = codeq__v1__request__unpack(NULL, len, bytes);
    outer->session_id = "someone-elses";
    uint8_t other[1024];
    size_t other_len = codeq__v1__request__pack(outer, other);
    outer->session_id = NULL;
    codeq__v1__request__free_unpacked(outer, NULL);
    ck_assert_int_eq(cq_auth_open(ks, other, other_len, NOW, WINDOW, &op, &err), -1);
    ck_assert_int_eq(err.code, CQ_EINVALID);
    cq_opened_free(&op);
    free(bytes);
    cq_keystore_close(ks);
}
END_TEST

START_TEST(a_keyless_fleet_refuses_signatures_and_tenants)
{
    struct cq_error err;
    struct cq_opened op;
    ck_assert_int_eq(round_trip(NULL, new_request("acme"), &acme, NOW, &op, &err), -1);
    ck_assert_int_eq(err.code, CQ_EDENIED);
    ck_assert_ptr_nonnull(strstr(err.msg, "no keys"));
    cq_opened_free(&op);
    uint8_t buf[512];
    size_t len = codeq__v1__request__pack(new_request("acme"), buf);
    ck_assert_int_eq(cq_auth_open(NULL, buf, len, NOW, WINDOW, &op, &err), -1);
    ck_assert_int_eq(err.code, CQ_EINVALID);
    cq_opened_free(&op);
    len = codeq__v1__request__pack(new_request(""), buf);
    ck_assert_int_eq(cq_auth_open(NULL, buf, len, NOW, WINDOW, &op, &err), 0);
    ck_assert(!op.is_signed);
    cq_opened_free(&op);
}
END_TEST

/* A revoked key is refused once the daemons have read the file again (within a
 * second), without a restart. */
START_TEST(revocation_takes_effect_without_a_restart)
{
    struct cq_keystore *ks;
    struct cq_error err;
    ck_assert_int_eq(cq_keystore_open(path, NULL, &ks, &err), 0);
    struct cq_opened op;
    ck_assert_int_eq(round_trip(ks, new_request("acme"), &acme, NOW, &op, &err), 0);
    cq_opened_free(&op);
    struct cq_keyfile kf;
    ck_assert_int_eq(cq_keyfile_read(path, false, &kf, &err), 0);
    ck_assert_int_eq(cq_keyfile_revoke_key(&kf, acme.id, &err), 0);
    ck_assert_int_eq(cq_keyfile_write(path, &kf, &err), 0);
    cq_keyfile_free(&kf);
    usleep(1100 * 1000);
    ck_assert_int_eq(round_trip(ks, new_request("acme"), &acme, NOW, &op, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "was revoked"));
    cq_opened_free(&op);
    ck_assert_int_eq(round_trip(ks, new_request("acme"), &acme2, NOW, &op, &err), 0);
    cq_opened_free(&op);
    /* A file spoilt meanwhile keeps the keys read before (and says so in the log). */
    FILE *f = fopen(path, "a");
    fputs("garbage line\n", f);
    fclose(f);
    usleep(1100 * 1000);
    ck_assert_int_eq(round_trip(ks, new_request("acme"), &acme2, NOW, &op, &err), 0);
    cq_opened_free(&op);
    cq_keystore_close(ks);
}
END_TEST

START_TEST(secrets_files_must_be_private)
{
    struct cq_keystore *ks;
    struct cq_error err;
    ck_assert_int_eq(chmod(path, 0644), 0);
    ck_assert_int_eq(cq_keystore_open(path, NULL, &ks, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "readable by others"));
    char cred[300];
    snprintf(cred, sizeof(cred), "%s/cred", dir);
    FILE *f = fopen(cred, "w");
    fprintf(f, "# mine\ntenant = acme\nkey_id = %s\nsecret = %s\n", acme.id, acme.secret);
    fclose(f);
    struct cq_credentials cr;
    bool found;
    ck_assert_int_eq(chmod(cred, 0640), 0);
    ck_assert_int_eq(cq_credentials_load(cred, &cr, &found, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "readable by others"));
    ck_assert_int_eq(chmod(cred, 0600), 0);
    unsetenv("CODEQ_TENANT");
    unsetenv("CODEQ_KEY_ID");
    unsetenv("CODEQ_KEY_SECRET");
    ck_assert_int_eq(cq_credentials_load(cred, &cr, &found, &err), 0);
    ck_assert(found);
    ck_assert_str_eq(cr.tenant, "acme");
    ck_assert_str_eq(cr.key_id, acme.id);
    ck_assert_str_eq(cr.secret, acme.secret);
    /* The environment over the file; incomplete credentials are an error. */
    setenv("CODEQ_KEY_ID", acme2.id, 1);
    ck_assert_int_eq(cq_credentials_load(cred, &cr, &found, &err), 0);
    ck_assert_str_eq(cr.key_id, acme2.id);
    unsetenv("CODEQ_KEY_ID");
    setenv("CODEQ_TENANT", "acme", 1);
    ck_assert_int_eq(cq_credentials_load("", &cr, &found, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "incomplete"));
    unsetenv("CODEQ_TENANT");
    ck_assert_int_eq(cq_credentials_load("", &cr, &found, &err), 0);
    ck_assert(!found);
}
END_TEST

static Suite *auth_suite(void)
{
    Suite *s = suite_create("auth");
    TCase *tc = tcase_create("auth");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, names_of_tenants_and_keys);
    tcase_add_test(tc, tenants_of_an_interpreter);
    tcase_add_test(tc, a_signed_request_opens_as_it_was_signed);
    tcase_add_test(tc, every_refusal_says_why);
    tcase_add_test(tc, tampering_anywhere_is_refused);
    tcase_add_test(tc, only_a_start_takes_the_fleets_session_id);
    tcase_add_test(tc, a_keyless_fleet_refuses_signatures_and_tenants);
    tcase_add_test(tc, revocation_takes_effect_without_a_restart);
    tcase_add_test(tc, secrets_files_must_be_private);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    /* The credentials loader reads these: the test sets what it means. */
    unsetenv("CODEQ_CREDENTIALS");
    return cq_unit_run(auth_suite(), true);
}
