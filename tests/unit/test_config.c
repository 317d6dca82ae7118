/* tests/unit/test_config.c - sandbox/config.c: defaults and validation of sandbox
 * settings (what a client may ask for, and the clear refusal of the rest). */
#define _GNU_SOURCE
#include "sandbox/sandbox.h"
#include "sandbox/internal.h"
#include "sandbox/netpolicy.h"
#include "unit.h"

#include <math.h>
#include <string.h>
#include <unistd.h>

static struct cq_sandbox_config cfg;

static void init_cfg(void)
{
    cq_sandbox_config_init(&cfg);
}

static void expect_valid(const char *what)
{
    struct cq_error err = {0};
    ck_assert_msg(cq_sandbox_config_validate(&cfg, &err) == 0, "%s refused: %s", what, err.msg);
}

/* Refused with CQ_EINVALID and a message containing needle. */
static void expect_invalid(const char *what, const char *needle)
{
    struct cq_error err = {0};
    ck_assert_msg(cq_sandbox_config_validate(&cfg, &err) == -1, "%s accepted", what);
    ck_assert_int_eq(err.code, CQ_EINVALID);
    ck_assert_msg(strstr(err.msg, needle) != NULL, "%s: message '%s' lacks '%s'", what, err.msg,
                  needle);
}

START_TEST(defaults_equal_the_macros)
{
    struct cq_sandbox_config c;
    memset(&c, 0x5a, sizeof(c)); /* every field must be set, not left as is */
    cq_sandbox_config_init(&c);
    ck_assert_uint_eq(c.limits.memory_bytes, CQ_SANDBOX_DEFAULT_MEMORY);
    ck_assert_uint_eq(c.limits.pids, CQ_SANDBOX_DEFAULT_PIDS);
    ck_assert_double_eq(c.limits.cpus, CQ_SANDBOX_DEFAULT_CPUS);
    ck_assert_uint_eq(c.limits.workspace_bytes, CQ_SANDBOX_DEFAULT_DISK);
    ck_assert_uint_eq(c.limits.workspace_inodes, CQ_SANDBOX_DEFAULT_INODES);
    ck_assert_uint_eq(c.limits.tmp_bytes, CQ_SANDBOX_DEFAULT_TMP);
    ck_assert_uint_eq(c.limits.file_size_bytes, CQ_SANDBOX_DEFAULT_DISK);
    ck_assert_uint_eq(c.limits.open_files, CQ_SANDBOX_DEFAULT_OPEN_FILES);
    ck_assert_int_eq(c.network, CQ_NETWORK_NONE);
    ck_assert_ptr_null(c.workspace_dir);
    ck_assert_ptr_null(c.env);
    ck_assert_str_eq(c.hostname, "codeq");
    /* And the documented values themselves. */
    ck_assert_uint_eq(CQ_SANDBOX_DEFAULT_MEMORY, 512ULL << 20);
    ck_assert_uint_eq(CQ_SANDBOX_DEFAULT_PIDS, 256);
    ck_assert_uint_eq(CQ_SANDBOX_DEFAULT_DISK, 256ULL << 20);
}
END_TEST

START_TEST(defaults_are_valid)
{
    expect_valid("the defaults");
    cfg.hostname = NULL; /* "codeq" */
    expect_valid("a NULL hostname");
    static const char *const env[] = {"A=1", "_X=", "LONG_NAME_2=with=equals", NULL};
    cfg.env = env;
    expect_valid("valid env");
    /* A NULL err is allowed. */
    ck_assert_int_eq(cq_sandbox_config_validate(&cfg, NULL), 0);
}
END_TEST

START_TEST(memory_lower_bound)
{
    cfg.limits.memory_bytes = 8ULL << 20;
    expect_valid("memory 8M");
    cfg.limits.memory_bytes = (8ULL << 20) - 1;
    expect_invalid("memory 8M-1", "memory");
    cfg.limits.memory_bytes = 0;
    expect_invalid("memory 0", "memory");
    ck_assert_int_eq(cq_sandbox_config_validate(&cfg, NULL), -1);
}
END_TEST

START_TEST(pids_bounds)
{
    cfg.limits.pids = 4;
    expect_valid("pids 4");
    cfg.limits.pids = 3;
    expect_invalid("pids 3", "pids");
    cfg.limits.pids = 0;
    expect_invalid("pids 0", "pids");
    cfg.limits.pids = 1000000;
    expect_valid("pids 1000000");
    cfg.limits.pids = 1000001;
    expect_invalid("pids 1000001", "pids");
}
END_TEST

START_TEST(cpus_bounds)
{
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    ck_assert_int_gt(ncpu, 0);
    cfg.limits.cpus = 0.01;
    expect_valid("cpus 0.01");
    cfg.limits.cpus = (double)ncpu * 4;
    expect_valid("cpus ncpu*4");
    cfg.limits.cpus = (double)ncpu * 4 + 0.5;
    expect_invalid("cpus above ncpu*4", "cpus");
    cfg.limits.cpus = 0;
    expect_invalid("cpus 0", "cpus");
    cfg.limits.cpus = -1;
    expect_invalid("cpus -1", "cpus");
    cfg.limits.cpus = 0.009;
    expect_invalid("cpus 0.009", "cpus");
    cfg.limits.cpus = NAN;
    expect_invalid("cpus NaN", "cpus");
    cfg.limits.cpus = -NAN;
    expect_invalid("cpus -NaN", "cpus");
    cfg.limits.cpus = INFINITY;
    expect_invalid("cpus inf", "cpus");
}
END_TEST

START_TEST(disk_tmp_inodes_files)
{
    cfg.limits.workspace_bytes = 4095;
    expect_invalid("workspace 4095", "disk");
    init_cfg();
    cfg.limits.tmp_bytes = 0;
    expect_invalid("tmp 0", "tmp");
    init_cfg();
    cfg.limits.workspace_bytes = cfg.limits.tmp_bytes = 4096;
    expect_valid("4K disk and tmp");
    cfg.limits.workspace_inodes = 15;
    expect_invalid("inodes 15", "inodes");
    cfg.limits.workspace_inodes = 16;
    expect_valid("inodes 16");
    cfg.limits.file_size_bytes = 0;
    expect_invalid("file size 0", "file size");
    cfg.limits.file_size_bytes = 1;
    expect_valid("file size 1");
    cfg.limits.open_files = 15;
    expect_invalid("open files 15", "open files");
    cfg.limits.open_files = 1048577;
    expect_invalid("open files 1048577", "open files");
    cfg.limits.open_files = 1048576;
    expect_valid("open files 1048576");
}
END_TEST

START_TEST(network_mode)
{
    cfg.network = (enum cq_network_mode)3;
    expect_invalid("network mode 3", "unknown network mode 3");
    cfg.network = (enum cq_network_mode) - 1;
    expect_invalid("network mode -1", "network");
    cfg.network = CQ_NETWORK_ALLOWLIST;
    expect_valid("ALLOWLIST without an egress namespace (codeq's own)");
    cfg.network = CQ_NETWORK_PUBLIC;
    expect_valid("PUBLIC without an egress namespace (codeq's own, sandbox/uplink.c)");
    cfg.egress_netns = "run/netns/x";
    expect_invalid("a relative egress namespace", "absolute path");
    cfg.egress_netns = "/run/netns/x";
    expect_valid("PUBLIC with an egress namespace");
    cfg.dns = "203.0.113.53";
    expect_valid("PUBLIC with a public resolver");
    /* The upstream is asked from the egress namespace, never by the sandbox: a VPC's
     * resolver (10.0.0.2, 169.254.169.253) or one on the egress namespace's loopback
     * are the operator's to name. */
    const char *good_dns[] = {"10.0.0.2", "127.0.0.53", "169.254.169.253", "2001:db8::53"};
    for (size_t i = 0; i < sizeof(good_dns) / sizeof(good_dns[0]); i++) {
        cfg.dns = good_dns[i];
        expect_valid(good_dns[i]);
    }
    const char *bad_dns[][2] = {{"224.0.0.251", "multicast"},
                                {"0.0.0.0", "unspecified"},
                                {"dns.example.test", "not an IP"},
                                {"", "not an IP"}};
    for (size_t i = 0; i < sizeof(bad_dns) / sizeof(bad_dns[0]); i++) {
        cfg.dns = bad_dns[i][0];
        expect_invalid(bad_dns[i][0], bad_dns[i][1]);
    }
    cfg.network = CQ_NETWORK_NONE;
    cfg.dns = NULL;
    expect_invalid("NONE with an egress namespace", "not NONE");
    cfg.egress_netns = NULL;
    cfg.dns = "203.0.113.53";
    expect_invalid("NONE with a resolver", "not NONE");
}
END_TEST

START_TEST(allowlist)
{
    static const char *const list[] = {"files.example.test", "*.example.test:443",
                                       "198.51.100.0/24", "[2001:db8::7]:7"};
    cfg.allow = list;
    cfg.n_allow = 4;
    expect_invalid("an allowlist in NONE", "for network mode ALLOWLIST, not NONE");
    cfg.network = CQ_NETWORK_PUBLIC;
    cfg.egress_netns = "/run/netns/x";
    expect_invalid("an allowlist in PUBLIC", "for network mode ALLOWLIST, not PUBLIC");
    cfg.network = CQ_NETWORK_ALLOWLIST;
    expect_valid("ALLOWLIST with four entries");
    cfg.n_allow = 0;
    expect_valid("ALLOWLIST with none yet (a warm sandbox)");
    const char *bad[][2] = {{"127.0.0.1", "127.0.0.1"},
                            {"169.254.169.254:80", "169.254.169.254"},
                            {"10.0.0.0/8", "network_private"},
                            {"0x7f.0.0.1", "0x7f.0.0.1"},
                            {"198.51.100.1/24", "198.51.100.1/24"},
                            {"fe80::1", "fe80::1"},
                            {"files.example.test:0", "files.example.test:0"}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *one[] = {"files.example.test", bad[i][0]};
        cfg.allow = one;
        cfg.n_allow = 2;
        expect_invalid(bad[i][0], bad[i][1]);
    }
    static const char *const with_null[] = {"files.example.test", NULL};
    cfg.allow = with_null;
    expect_invalid("a NULL entry", "missing");
    cfg.allow = list;
    cfg.n_allow = CQ_NET_MAX_RULES + 1;
    expect_invalid("65 entries", "at most 64");
}
END_TEST

START_TEST(hostnames)
{
    static const char *const good[] = {"a", "codeq", "Box-7", "0", "a-b-c"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        cfg.hostname = good[i];
        expect_valid(good[i]);
    }
    char max[64];
    memset(max, 'h', 63);
    max[63] = '\0';
    cfg.hostname = max;
    expect_valid("63 characters");

    char toolong[65];
    memset(toolong, 'h', 64);
    toolong[64] = '\0';
    const char *bad[] = {"",          "has space", "under_score", "dot.ted", "slash/",
                         "new\nline", "é",         "semi;colon",  toolong};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cfg.hostname = bad[i];
        expect_invalid(bad[i], "hostname");
    }
}
END_TEST

START_TEST(env_entries)
{
    static const char *const bad[] = {"NOEQUALS", "=value", "1ABC=x", "A-B=x", "A B=x",
                                      "A.B=x",    "",       "é=x",    " A=x"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *env[] = {"GOOD=1", bad[i], NULL};
        cfg.env = env;
        expect_invalid(bad[i], "environment");
    }
    const char *env[] = {"A1=x", "_=y", "a_b_C9=", NULL};
    cfg.env = env;
    expect_valid("A1, _ and a_b_C9");
}
END_TEST

START_TEST(env_entry_validate_directly)
{
    struct cq_error err = {0};
    ck_assert_int_eq(cq_env_entry_validate("PATH=/usr/bin", &err), 0);
    ck_assert_int_eq(cq_env_entry_validate("X=", &err), 0);
    ck_assert_int_eq(cq_env_entry_validate("X", &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "'X'"));
    ck_assert_int_eq(cq_env_entry_validate("9X=1", &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "'9X'"));
}
END_TEST

START_TEST(spawn_init_defaults)
{
    static const char *const argv[] = {"true", NULL};
    struct cq_spawn req;
    memset(&req, 0x5a, sizeof(req));
    cq_spawn_init(&req, argv);
    ck_assert_ptr_eq(req.argv, argv);
    ck_assert_ptr_null(req.env);
    ck_assert_ptr_null(req.cwd);
    ck_assert_uint_eq(req.timeout_ms, 0);
    ck_assert_int_eq(req.stdin_mode, CQ_STDIO_NULL);
    ck_assert_int_eq(req.stdout_mode, CQ_STDIO_NULL);
    ck_assert_int_eq(req.stderr_mode, CQ_STDIO_NULL);
    ck_assert_int_eq(req.stdin_fd, -1);
    ck_assert_int_eq(req.stdout_fd, -1);
    ck_assert_int_eq(req.stderr_fd, -1);
    ck_assert_uint_eq(req.output_limit_bytes, 0);
}
END_TEST

static Suite *config_suite(void)
{
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("defaults");
    tcase_add_checked_fixture(tc, init_cfg, NULL);
    tcase_add_test(tc, defaults_equal_the_macros);
    tcase_add_test(tc, defaults_are_valid);
    tcase_add_test(tc, spawn_init_defaults);
    suite_add_tcase(s, tc);

    tc = tcase_create("validate");
    tcase_add_checked_fixture(tc, init_cfg, NULL);
    tcase_add_test(tc, memory_lower_bound);
    tcase_add_test(tc, pids_bounds);
    tcase_add_test(tc, cpus_bounds);
    tcase_add_test(tc, disk_tmp_inodes_files);
    tcase_add_test(tc, network_mode);
    tcase_add_test(tc, allowlist);
    tcase_add_test(tc, hostnames);
    tcase_add_test(tc, env_entries);
    tcase_add_test(tc, env_entry_validate_directly);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return cq_unit_run(config_suite(), false);
}
