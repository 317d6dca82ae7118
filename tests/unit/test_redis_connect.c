/* tests/unit/test_redis_connect.c - Redis authentication and TLS: their settings in
 * fleet/config.c (redis_user, redis_password, redis_password_file, redis_tls,
 * redis_tls_ca, redis_tls_cert, redis_tls_key, redis_tls_server_name), the
 * combinations refused at start, and fleet/redis_connect.c's checks that need no
 * server (files it cannot read, a port nobody listens on). Connections to a real
 * redis-server over TLS, with ACL users, are tests/fleet/test_redis_security.py.
 *
 * Tests change the environment: each runs in its own process, and the fixture first
 * removes every variable the loader reads for these settings. */
#define _GNU_SOURCE
#include "fleet/config.h"
#include "fleet/redis_connect.h"
#include "unit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *const variables[] = {
    "CODEQ_CONFIG",
    "CODEQ_REDIS",
    "CODEQ_REDIS_USER",
    "CODEQ_REDIS_PASSWORD",
    "CODEQ_REDIS_PASSWORD_FILE",
    "CODEQ_REDIS_TLS",
    "CODEQ_REDIS_TLS_CA",
    "CODEQ_REDIS_TLS_CERT",
    "CODEQ_REDIS_TLS_KEY",
    "CODEQ_REDIS_TLS_SERVER_NAME",
};

static struct cq_fleet_config cfg;
static struct cq_error err;
static bool help;
static char dir[64];

static void setup(void)
{
    for (size_t i = 0; i < sizeof(variables) / sizeof(variables[0]); i++)
        unsetenv(variables[i]);
    cq_fleet_config_init(&cfg);
    memset(&err, 0, sizeof(err));
    snprintf(dir, sizeof(dir), "/tmp/cq-redis-connect-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    ck_assert_int_eq(system(cmd), 0);
}

/* A file of the test's directory holding text; returns its path (static storage). */
static const char *file_with(const char *name, const char *text)
{
    static char paths[8][128];
    static int n;
    char *path = paths[n++ % 8];
    snprintf(path, sizeof(paths[0]), "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    return path;
}

#define LOAD(...) load((char *[]){"codeq-worker", __VA_ARGS__, NULL})
static int load(char **argv)
{
    int argc = 0;
    while (argv[argc] != NULL)
        argc++;
    return cq_fleet_config_load(&cfg, argc, argv, &help, &err);
}

static void expect_loaded(int rc)
{
    ck_assert_msg(rc == 0, "refused: %s", err.msg);
}

static void expect_refused(int rc, const char *message)
{
    ck_assert_msg(rc == -1, "accepted, expected '%s'", message);
    ck_assert_int_eq(err.code, CQ_EINVALID);
    ck_assert_str_eq(err.msg, message);
    memset(&err, 0, sizeof(err));
    cq_fleet_config_init(&cfg);
}

/* --- settings ---------------------------------------------------------------------------- */

START_TEST(defaults_are_plaintext_without_a_password)
{
    expect_loaded(load((char *[]){"codeq-worker", NULL}));
    ck_assert_str_eq(cfg.redis_user, "");
    ck_assert_str_eq(cfg.redis_password, "");
    ck_assert_str_eq(cfg.redis_password_file, "");
    ck_assert_str_eq(cfg.redis_tls, "off");
    ck_assert_str_eq(cfg.redis_tls_ca, "");
    ck_assert_str_eq(cfg.redis_tls_cert, "");
    ck_assert_str_eq(cfg.redis_tls_key, "");
    ck_assert_str_eq(cfg.redis_tls_server_name, "");
}
END_TEST

/* The same format as every other setting: file, then CODEQ_<NAME>, then --name. */
START_TEST(every_source_sets_them)
{
    const char *conf = file_with("fleet.conf", "redis_user = codeq\n"
                                               "redis_password_file = /run/secrets/redis\n"
                                               "redis_tls = on\n"
                                               "redis_tls_ca = /etc/codeq/ca.pem\n");
    setenv("CODEQ_CONFIG", conf, 1);
    setenv("CODEQ_REDIS_TLS_SERVER_NAME", "redis.internal", 1);
    setenv("CODEQ_REDIS_USER", "fleet", 1);
    expect_loaded(LOAD("--redis-tls-cert", "/etc/codeq/client.pem", "--redis-tls-key=/k.pem"));
    ck_assert_str_eq(cfg.redis_user, "fleet");
    ck_assert_str_eq(cfg.redis_password_file, "/run/secrets/redis");
    ck_assert_str_eq(cfg.redis_tls, "on");
    ck_assert_str_eq(cfg.redis_tls_ca, "/etc/codeq/ca.pem");
    ck_assert_str_eq(cfg.redis_tls_cert, "/etc/codeq/client.pem");
    ck_assert_str_eq(cfg.redis_tls_key, "/k.pem");
    ck_assert_str_eq(cfg.redis_tls_server_name, "redis.internal");
}
END_TEST

START_TEST(tls_is_on_or_off)
{
    static const char *const on[] = {"on", "ON", "yes", "true", "1"};
    static const char *const off[] = {"off", "no", "False", "0"};
    for (size_t i = 0; i < sizeof(on) / sizeof(on[0]); i++) {
        cq_fleet_config_init(&cfg);
        expect_loaded(LOAD("--redis-tls", (char *)on[i]));
        ck_assert_str_eq(cfg.redis_tls, "on");
    }
    for (size_t i = 0; i < sizeof(off) / sizeof(off[0]); i++) {
        cq_fleet_config_init(&cfg);
        expect_loaded(LOAD("--redis-tls", (char *)off[i]));
        ck_assert_str_eq(cfg.redis_tls, "off");
    }
    cq_fleet_config_init(&cfg);
    expect_refused(LOAD("--redis-tls", "maybe"), "redis_tls: 'maybe' is neither on nor off");
    setenv("CODEQ_REDIS_TLS", "tls1.3", 1);
    expect_refused(LOAD("--redis", "r:6379"), "redis_tls: 'tls1.3' is neither on nor off");
}
END_TEST

/* Each of these would be silently unused, or fail only at the first connection. */
START_TEST(combinations_that_cannot_be_meant_are_refused)
{
    expect_refused(LOAD("--redis-tls-ca", "/ca.pem"),
                   "redis_tls_* settings are given but redis_tls is off: set redis_tls = on");
    expect_refused(LOAD("--redis-tls-server-name", "r"),
                   "redis_tls_* settings are given but redis_tls is off: set redis_tls = on");
    expect_refused(LOAD("--redis-tls", "on", "--redis-tls-cert", "/c.pem"),
                   "redis_tls_cert and redis_tls_key go together: give both or neither");
    expect_refused(LOAD("--redis-tls", "on", "--redis-tls-key", "/k.pem"),
                   "redis_tls_cert and redis_tls_key go together: give both or neither");
    expect_refused(LOAD("--redis-password", "x", "--redis-password-file", "/p"),
                   "redis_password and redis_password_file are both set: give one");
    expect_refused(LOAD("--redis-user", "codeq"),
                   "redis_user 'codeq' needs redis_password_file or redis_password");
    /* A password alone is the user 'default''s. */
    expect_loaded(LOAD("--redis-password", "x"));
}
END_TEST

/* Refusals of a password's value name the setting, never the value. */
START_TEST(a_refused_password_is_not_repeated)
{
    char long_secret[300];
    memset(long_secret, 's', sizeof(long_secret) - 1);
    long_secret[sizeof(long_secret) - 1] = '\0';
    setenv("CODEQ_REDIS_PASSWORD", long_secret, 1);
    ck_assert_int_eq(LOAD("--redis", "r:1"), -1);
    ck_assert_str_eq(err.msg, "CODEQ_REDIS_PASSWORD: redis_password is longer than 255 characters");
}
END_TEST

START_TEST(usage_lists_them)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    cq_fleet_config_usage(f, false); /* the dispatcher's: they are shared settings */
    fclose(f);
    static const char *const flags[] = {
        "--redis-user ",    "--redis-password ",        "--redis-password-file ",
        "--redis-tls ",     "--redis-tls-ca ",          "--redis-tls-cert ",
        "--redis-tls-key ", "--redis-tls-server-name ",
    };
    for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++)
        ck_assert_msg(strstr(text, flags[i]) != NULL, "no %s in:\n%s", flags[i], text);
    ck_assert_ptr_nonnull(strstr(text, "on: connect to Redis over TLS (default: off)"));
    free(text);
}
END_TEST

/* --- the dialer's own checks ------------------------------------------------------------- */

static int dialer(struct cq_redis_dialer **d)
{
    return cq_redis_dialer_new(&cfg, "127.0.0.1", 1, d, &err);
}

START_TEST(unreadable_files_are_named)
{
    struct cq_redis_dialer *d = NULL;
    char want[256];
    snprintf(cfg.redis_password_file, sizeof(cfg.redis_password_file), "%s/none", dir);
    ck_assert_int_eq(dialer(&d), -1);
    snprintf(want, sizeof(want), "redis_password_file %s/none: No such file or directory", dir);
    ck_assert_str_eq(err.msg, want);

    cq_fleet_config_init(&cfg);
    snprintf(cfg.redis_tls, sizeof(cfg.redis_tls), "on");
    snprintf(cfg.redis_tls_ca, sizeof(cfg.redis_tls_ca), "%s/ca.pem", dir);
    ck_assert_int_eq(dialer(&d), -1);
    snprintf(want, sizeof(want), "redis_tls_ca %s/ca.pem: No such file or directory", dir);
    ck_assert_str_eq(err.msg, want);

    /* Present but not a certificate: OpenSSL's reason, after the file's name. */
    const char *ca = file_with("ca.pem", "not a certificate\n");
    ck_assert_int_eq(dialer(&d), -1);
    snprintf(want, sizeof(want), "redis_tls_ca %s: ", ca);
    ck_assert_msg(strncmp(err.msg, want, strlen(want)) == 0, "%s", err.msg);
    ck_assert_ptr_null(d);
}
END_TEST

START_TEST(the_system_cas_by_default_and_nothing_to_reach)
{
    struct cq_redis_dialer *d = NULL;
    snprintf(cfg.redis_tls, sizeof(cfg.redis_tls), "on");
    ck_assert_msg(dialer(&d) == 0, "%s", err.msg);
    /* Nobody listens on port 1: the connect's failure, before any TLS. */
    ck_assert_ptr_null(cq_redis_dial(d, 10, &err));
    ck_assert_str_eq(err.msg, "cannot reach Redis at 127.0.0.1:1: Connection refused");
    cq_redis_dialer_free(d);
}
END_TEST

static Suite *redis_connect_suite(void)
{
    Suite *s = suite_create("redis_connect");
    TCase *tc = tcase_create("settings");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, defaults_are_plaintext_without_a_password);
    tcase_add_test(tc, every_source_sets_them);
    tcase_add_test(tc, tls_is_on_or_off);
    tcase_add_test(tc, combinations_that_cannot_be_meant_are_refused);
    tcase_add_test(tc, a_refused_password_is_not_repeated);
    tcase_add_test(tc, usage_lists_them);
    suite_add_tcase(s, tc);
    tc = tcase_create("dialer");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, unreadable_files_are_named);
    tcase_add_test(tc, the_system_cas_by_default_and_nothing_to_reach);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return cq_unit_run(redis_connect_suite(), true);
}
