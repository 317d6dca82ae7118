/* tests/unit/test_worker_net.c - the worker's network settings (worker/netconfig.c) and
 * its admission of a session's network request (worker/session.c): a request beyond the
 * operator's policy is refused with the rule's name, before any sandbox is made. */
#define _GNU_SOURCE
#include "worker/worker.h"
#include "unit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void set_ok(struct cq_worker_config *cfg, const char *name, const char *value, bool add)
{
    struct cq_error err = {0};
    ck_assert_msg(cq_worker_net_setting(cfg, name, value, add, "--test", &err) == 0,
                  "%s = %s refused: %s", name, value, err.msg);
}

static void set_bad(const char *name, const char *value, const char *needle)
{
    struct cq_worker_config cfg;
    cq_worker_config_init(&cfg);
    struct cq_error err = {0};
    ck_assert_msg(cq_worker_net_setting(&cfg, name, value, false, "--test", &err) == -1,
                  "%s = %s accepted", name, value);
    ck_assert_int_eq(err.code, CQ_EINVALID);
    ck_assert_msg(strstr(err.msg, needle) != NULL && strstr(err.msg, "--test") != NULL,
                  "%s = %s: message '%s' lacks '%s' or the source", name, value, err.msg, needle);
}

START_TEST(settings_parse)
{
    struct cq_worker_config cfg;
    cq_worker_config_init(&cfg);
    ck_assert_uint_eq(cfg.netpolicy.modes, CQ_NET_MODE_BIT(CQ_NETWORK_NONE)); /* opt-in */
    ck_assert_int_eq(cfg.netpolicy.default_mode, CQ_NETWORK_NONE);
    set_ok(&cfg, "network_modes", "none, public", false);
    ck_assert_uint_eq(cfg.netpolicy.modes,
                      CQ_NET_MODE_BIT(CQ_NETWORK_NONE) | CQ_NET_MODE_BIT(CQ_NETWORK_PUBLIC));
    set_ok(&cfg, "network_default", "PUBLIC", false);
    ck_assert_int_eq(cfg.netpolicy.default_mode, CQ_NETWORK_PUBLIC);
    /* Lists: comma-separated; add appends, else a list replaces the previous one. */
    set_ok(&cfg, "network_private", "10.1.0.0/16,192.168.5.0/24:443", false);
    set_ok(&cfg, "network_private", "172.16.0.0/12", true);
    ck_assert_uint_eq(cfg.netpolicy.private_ok.n, 3);
    set_ok(&cfg, "network_private", "10.2.0.0/16", false);
    ck_assert_uint_eq(cfg.netpolicy.private_ok.n, 1);
    set_ok(&cfg, "network_deny", "198.51.100.7, 203.0.113.0/24:25", false);
    ck_assert_uint_eq(cfg.netpolicy.deny.n, 2);
    set_ok(&cfg, "network_allow_bounds", "*.example.test,files.example.test:443", false);
    ck_assert_uint_eq(cfg.netpolicy.bounds.n, 2);
    set_ok(&cfg, "network_max_allow", "8", false);
    ck_assert_uint_eq(cfg.netpolicy.max_allow, 8);
    set_ok(&cfg, "network_max_pinned", "32", false);
    ck_assert_uint_eq(cfg.netpolicy.max_pinned, 32);
    set_ok(&cfg, "network_max_rate", "10M", false);
    ck_assert_uint_eq(cfg.netpolicy.max_bytes_per_second, 10ULL << 20);
    set_ok(&cfg, "network_max_connections", "100", false);
    ck_assert_uint_eq(cfg.netpolicy.max_connections, 100);
    set_ok(&cfg, "dns", "198.51.100.53", false);
    ck_assert_str_eq(cfg.dns, "198.51.100.53");
    set_ok(&cfg, "egress_netns", "/run/netns/out", false);
    ck_assert_str_eq(cfg.egress_netns, "/run/netns/out");
    set_ok(&cfg, "warm_pool_public", "3", false);
    ck_assert_int_eq(cfg.warm_pool_public, 3);
    ck_assert_int_eq(cfg.warm_pool_allowlist, -1);
    set_ok(&cfg, "warm_pool_allowlist", "2", false);
    ck_assert_int_eq(cfg.warm_pool_allowlist, 2);
    ck_assert_int_eq(cfg.warm_pool_public, 3);
    for (size_t i = 0; cq_worker_net_settings[i] != NULL; i++)
        ck_assert_ptr_nonnull(cq_worker_net_help(cq_worker_net_settings[i]));

    set_bad("network_modes", "NONE,VPC", "VPC");
    set_bad("network_default", "SANDBOX", "SANDBOX");
    set_bad("network_private", "8.8.8.0/24", "not a private");
    set_bad("network_private", "example.test", "not a private");
    set_bad("network_private", "10.0.0.0/7", "within one private range");
    set_bad("network_private", "fc00::/6", "within one private range");
    set_bad("network_deny", "127.1", "127.1");
    set_bad("network_max_allow", "0", "");
    set_bad("network_max_allow", "65", "");
    set_bad("network_max_rate", "lots", "");
    set_bad("dns", "resolver.example", "not an IP address");
    set_bad("egress_netns", "run/netns/x", "absolute");
    set_bad("warm_pool_allowlist", "17", "");
    set_bad("network_rules", "x", "unknown network setting");
}
END_TEST

START_TEST(environment_and_deny_service)
{
    struct cq_worker_config cfg;
    cq_worker_config_init(&cfg);
    setenv("CODEQ_NETWORK_MODES", "NONE", 1);
    setenv("CODEQ_NETWORK_DENY", "203.0.113.9", 1);
    struct cq_error err = {0};
    ck_assert_int_eq(cq_worker_net_environment(&cfg, &err), 0);
    unsetenv("CODEQ_NETWORK_MODES");
    unsetenv("CODEQ_NETWORK_DENY");
    ck_assert_uint_eq(cfg.netpolicy.modes, CQ_NET_MODE_BIT(CQ_NETWORK_NONE));
    ck_assert_uint_eq(cfg.netpolicy.deny.n, 1);
    setenv("CODEQ_NETWORK_MAX_ALLOW", "x", 1);
    ck_assert_int_eq(cq_worker_net_environment(&cfg, &err), -1);
    unsetenv("CODEQ_NETWORK_MAX_ALLOW");
    ck_assert_msg(strstr(err.msg, "CODEQ_NETWORK_MAX_ALLOW") != NULL, "%s", err.msg);

    /* The fleet's services: public and private addresses are denied (all ports), once;
     * loopback is refused in every mode anyway and adds no rule. */
    ck_assert_int_eq(cq_worker_net_deny_service(&cfg, "198.51.100.20:9092", &err), 0);
    ck_assert_int_eq(cq_worker_net_deny_service(&cfg, "198.51.100.20:9093", &err), 0);
    ck_assert_int_eq(cq_worker_net_deny_service(&cfg, "10.0.0.5:6379", &err), 0);
    ck_assert_int_eq(cq_worker_net_deny_service(&cfg, "[2001:db8::7]:6379", &err), 0);
    ck_assert_int_eq(cq_worker_net_deny_service(&cfg, "127.0.0.1:19092", &err), 0);
    ck_assert_int_eq(cq_worker_net_deny_service(&cfg, "localhost:19092", &err), 0);
    ck_assert_uint_eq(cfg.netpolicy.deny.n, 4);
    char text[CQ_NET_DEST_TEXT];
    cq_net_dest_format(&cfg.netpolicy.deny.d[1], text, sizeof(text));
    ck_assert_str_eq(text, "198.51.100.20");
    cq_net_dest_format(&cfg.netpolicy.deny.d[3], text, sizeof(text));
    ck_assert_str_eq(text, "2001:db8::7");
    struct cq_net_grant g = {.mode = CQ_NETWORK_PUBLIC};
    struct cq_net_addr a;
    cq_net_addr_parse("198.51.100.20", &a);
    ck_assert_int_eq(cq_netpolicy_check_connect(&cfg.netpolicy, &g, &a, 9092, 6, NULL, 0, NULL),
                     CQ_NET_REFUSE_DENY);
    ck_assert_int_eq(cq_worker_net_deny_service(&cfg, "[2001:db8::7", &err), -1);
}
END_TEST

/* --- admission by a real worker ------------------------------------------------------- */

static struct cq_worker *w;

static void setup(void)
{
    if (getenv("CODEQ_SANDBOX_INIT") == NULL)
        setenv("CODEQ_SANDBOX_INIT", CQ_BUILD_DIR "/bin/codeq-sandbox-init", 0);
    setenv("CODEQ_RUNTIMES_DIR", CQ_SOURCE_DIR "/runtimes", 1);
    w = NULL;
}

static void teardown(void)
{
    cq_worker_destroy(w);
    w = NULL;
}

static void refused(const struct cq_session_params *p, const char *needle)
{
    struct cq_session_info info;
    struct cq_error err = {0};
    ck_assert_msg(cq_worker_start_session(w, p, &info, &err) == -1, "started, expected '%s'",
                  needle);
    ck_assert_int_eq(err.code, CQ_EINVALID);
    ck_assert_msg(strstr(err.msg, needle) != NULL, "message '%s' lacks '%s'", err.msg, needle);
}

START_TEST(admission_names_the_rule)
{
    struct cq_worker_config cfg;
    cq_worker_config_init(&cfg);
    cfg.max_sessions = 1;
    /* no PUBLIC or ALLOWLIST sandbox, and so no uplink, in a unit test */
    cfg.warm_pool_public = 0;
    cfg.warm_pool_allowlist = 0;
    struct cq_error err = {0};
    /* A default outside the allowed modes is a configuration error. */
    set_ok(&cfg, "network_modes", "PUBLIC", false);
    ck_assert_int_eq(cq_worker_create(&cfg, &w, &err), -1);
    ck_assert_msg(strstr(err.msg, "network_default") != NULL, "%s", err.msg);

    set_ok(&cfg, "network_modes", "NONE,PUBLIC", false);
    set_ok(&cfg, "network_private", "10.20.0.0/16", false);
    ck_assert_msg(cq_worker_create(&cfg, &w, &err) == 0, "worker: %s", err.msg);
    enum cq_network_mode allowlist = CQ_NETWORK_ALLOWLIST, pub = CQ_NETWORK_PUBLIC,
                         none = CQ_NETWORK_NONE;
    static const char *const one[] = {"files.example.test"};
    static const char *const priv[] = {"192.168.1.0/24"};
    struct cq_session_params p = {.network = &allowlist, .allow = one, .n_allow = 1};
    refused(&p, "network_modes = NONE,PUBLIC");
    p = (struct cq_session_params){.network = &pub, .allow = one, .n_allow = 1};
    refused(&p, "only for network mode ALLOWLIST");
    p = (struct cq_session_params){.network = &none, .allow = one, .n_allow = 1};
    refused(&p, "only for network mode ALLOWLIST");
    /* max_sessions is 1: refusals made no session (and no sandbox). */
    p = (struct cq_session_params){.network = NULL};
    struct cq_session_info info;
    ck_assert_msg(cq_worker_start_session(w, &p, &info, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(info.network_mode, CQ_NETWORK_NONE);
    ck_assert_str_eq(info.network_allow, "");
    cq_worker_destroy(w);
    w = NULL;

    /* ALLOWLIST admitted: the entries are checked against network_private. */
    set_ok(&cfg, "network_modes", "NONE,PUBLIC,ALLOWLIST", false);
    ck_assert_msg(cq_worker_create(&cfg, &w, &err) == 0, "worker: %s", err.msg);
    p = (struct cq_session_params){.network = &allowlist, .allow = priv, .n_allow = 1};
    refused(&p, "network_private");
    set_ok(&cfg, "network_max_allow", "1", false);
    cq_worker_destroy(w);
    ck_assert_msg(cq_worker_create(&cfg, &w, &err) == 0, "worker: %s", err.msg);
    static const char *const two[] = {"files.example.test", "api.example.test"};
    p = (struct cq_session_params){.network = &allowlist, .allow = two, .n_allow = 2};
    refused(&p, "network_max_allow");
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("worker_net");
    TCase *tc = tcase_create("settings");
    tcase_add_test(tc, settings_parse);
    tcase_add_test(tc, environment_and_deny_service);
    suite_add_tcase(s, tc);
    tc = tcase_create("admission");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, admission_names_the_rule);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return cq_unit_run(suite(), true);
}
