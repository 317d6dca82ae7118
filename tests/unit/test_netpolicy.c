/* tests/unit/test_netpolicy.c - sandbox/netpolicy.c: destinations, address classes, the
 * operator's policy and connect decisions, with the inputs a hostile client would try. */
#define _GNU_SOURCE
#include "sandbox/netpolicy.h"
#include "unit.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

/* --- helpers: one line per case, the failing input named in the message ------------- */

static struct cq_net_dest dest_ok(const char *text, const char *formatted)
{
    struct cq_error err = {0};
    struct cq_net_dest d;
    ck_assert_msg(cq_net_dest_parse(text, &d, &err) == 0, "'%s' refused: %s", text, err.msg);
    char buf[CQ_NET_DEST_TEXT];
    cq_net_dest_format(&d, buf, sizeof(buf));
    ck_assert_msg(strcmp(buf, formatted) == 0, "'%s' formatted as '%s', expected '%s'", text, buf,
                  formatted);
    /* What is printed parses back to the same destination. */
    struct cq_net_dest again;
    ck_assert_msg(cq_net_dest_parse(buf, &again, &err) == 0, "'%s' does not parse back", buf);
    ck_assert_msg(memcmp(&again, &d, sizeof(d)) == 0, "'%s' changed on a round trip", buf);
    return d;
}

static void dest_bad(const char *text, const char *needle)
{
    struct cq_error err = {0};
    struct cq_net_dest d;
    memset(&d, 0x5a, sizeof(d));
    struct cq_net_dest before = d;
    ck_assert_msg(cq_net_dest_parse(text, &d, &err) == -1, "'%s' accepted", text ? text : "(null)");
    ck_assert_int_eq(err.code, CQ_EINVALID);
    ck_assert_msg(strstr(err.msg, needle) != NULL, "'%s': message '%s' lacks '%s'",
                  text ? text : "(null)", err.msg, needle);
    ck_assert_msg(memcmp(&d, &before, sizeof(d)) == 0, "'%s' changed the output", text);
}

static struct cq_net_addr addr(const char *text)
{
    struct cq_net_addr a;
    ck_assert_msg(cq_net_addr_parse(text, &a) == 0, "'%s' is no address", text);
    return a;
}

static void class_is(const char *text, enum cq_net_class expected)
{
    struct cq_net_addr a = addr(text);
    enum cq_net_class c = cq_net_classify(&a);
    ck_assert_msg(c == expected, "%s is %s, expected %s", text, cq_net_class_name(c),
                  cq_net_class_name(expected));
}

static struct cq_netpolicy policy;

static void setup(void)
{
    cq_netpolicy_init(&policy);
}

static struct cq_net_grant admit_ok(enum cq_network_mode mode, const char *const *allow, size_t n)
{
    struct cq_error err = {0};
    struct cq_net_grant g;
    ck_assert_msg(cq_netpolicy_admit(&policy, &mode, allow, n, &g, &err) == 0,
                  "mode %s refused: %s", cq_net_mode_name(mode), err.msg);
    ck_assert_int_eq(g.mode, mode);
    ck_assert_uint_eq(g.allow.n, n);
    return g;
}

static void admit_bad(enum cq_network_mode mode, const char *const *allow, size_t n,
                      const char *needle)
{
    struct cq_error err = {0};
    struct cq_net_grant g;
    ck_assert_msg(cq_netpolicy_admit(&policy, &mode, allow, n, &g, &err) == -1,
                  "mode %s with %zu entries (first '%s') admitted", cq_net_mode_name(mode), n,
                  n ? allow[0] : "");
    ck_assert_int_eq(err.code, CQ_EINVALID);
    ck_assert_msg(strstr(err.msg, needle) != NULL, "message '%s' lacks '%s'", err.msg, needle);
}

static struct cq_net_grant allowlist1(const char *entry)
{
    const char *allow[] = {entry};
    return admit_ok(CQ_NETWORK_ALLOWLIST, allow, 1);
}

static void verdict(const struct cq_net_grant *g, const char *address, uint16_t port, int proto,
                    const struct cq_net_resolved *res, size_t n_res, enum cq_net_verdict expected,
                    const char *needle)
{
    struct cq_error why = {0};
    struct cq_net_addr a = addr(address);
    enum cq_net_verdict v =
        cq_netpolicy_check_connect(&policy, g, &a, port, proto, res, n_res, &why);
    ck_assert_msg(v == expected, "connect %s:%u (mode %s) gave %d, expected %d: %s", address, port,
                  cq_net_mode_name(g->mode), v, expected, why.msg);
    if (needle != NULL)
        ck_assert_msg(strstr(why.msg, needle) != NULL, "connect %s:%u: '%s' lacks '%s'", address,
                      port, why.msg, needle);
}

/* --- DEST ---------------------------------------------------------------------------- */

START_TEST(dest_forms)
{
    struct cq_net_dest d = dest_ok("files.example.test", "files.example.test");
    ck_assert_int_eq(d.kind, CQ_NET_DEST_NAME);
    ck_assert_uint_eq(d.port, 0);
    d = dest_ok("API.Example.TEST.:443", "api.example.test:443");
    ck_assert_uint_eq(d.port, 443);
    d = dest_ok("*.example.test", "*.example.test");
    ck_assert_int_eq(d.kind, CQ_NET_DEST_SUFFIX);
    ck_assert_str_eq(d.name, "example.test");
    dest_ok("*.example.test:8443", "*.example.test:8443");
    d = dest_ok("198.51.100.7", "198.51.100.7");
    ck_assert_int_eq(d.kind, CQ_NET_DEST_CIDR);
    ck_assert_uint_eq(d.prefix_len, 32);
    dest_ok("198.51.100.7:80", "198.51.100.7:80");
    d = dest_ok("203.0.113.0/24", "203.0.113.0/24");
    ck_assert_uint_eq(d.prefix_len, 24);
    dest_ok("203.0.113.0/24:53", "203.0.113.0/24:53");
    d = dest_ok("2001:db8::1", "2001:db8::1");
    ck_assert_int_eq(d.addr.family, AF_INET6);
    ck_assert_uint_eq(d.prefix_len, 128);
    dest_ok("[2001:db8::1]:443", "[2001:db8::1]:443");
    dest_ok("2001:db8::/32", "2001:db8::/32");
    dest_ok("[2001:db8::/48]:80", "[2001:db8::/48]:80");
    dest_ok("[2001:DB8:0:0::1]", "2001:db8::1");
    dest_ok("0.0.0.0/0", "0.0.0.0/0"); /* parses; admission refuses it */
    dest_ok("a", "a");
    dest_ok("_dmarc.example.test", "_dmarc.example.test");
    dest_ok("x1.example.test:65535", "x1.example.test:65535");
    /* IPv4-mapped IPv6 is IPv4. */
    d = dest_ok("::ffff:198.51.100.7", "198.51.100.7");
    ck_assert_int_eq(d.addr.family, AF_INET);
    dest_ok("[::ffff:198.51.100.7]:80", "198.51.100.7:80");
}
END_TEST

START_TEST(dest_refused)
{
    dest_bad(NULL, "empty");
    dest_bad("", "empty");
    dest_bad(":80", "no host");
    dest_bad("example.test:", "port");
    dest_bad("example.test:0", "port");
    dest_bad("example.test:65536", "port");
    dest_bad("example.test:123456", "port");
    dest_bad("example.test:-1", "port");
    dest_bad("example.test:+80", "port");
    dest_bad("example.test: 80", "port");
    dest_bad("example.test:80:81", "IP address");
    /* inet_aton's forms: addresses in disguise. */
    dest_bad("127.1", "neither an IP address nor a valid name");
    dest_bad("2130706433", "all-digit");
    dest_bad("0x7f.0.0.1", "all-digit");
    dest_bad("0177.0.0.1", "all-digit");
    dest_bad("127.0.0.1.", "all-digit");
    dest_bad("1.2.3.4.5", "all-digit");
    /* zones, brackets, junk */
    dest_bad("fe80::1%eth0", "not an IP address");
    dest_bad("[fe80::1%25eth0]:80", "not an IP address");
    dest_bad("[198.51.100.7]:80", "brackets are for IPv6");
    dest_bad("[2001:db8::1", "without ']'");
    dest_bad("[2001:db8::1]80", "only ':PORT'");
    dest_bad("[2001:db8::1]:", "port");
    dest_bad("2001:db8::1:80:", "not an IP address");
    dest_bad("[]:80", "brackets");
    dest_bad("[:]:80", "not an IP address");
    /* CIDRs */
    dest_bad("10.0.0.1/8", "host bits are set; the network is 10.0.0.0/8");
    dest_bad("2001:db8::1/32", "the network is 2001:db8::/32");
    dest_bad("10.0.0.0/33", "more than 32");
    dest_bad("2001:db8::/129", "more than 128");
    dest_bad("10.0.0.0/", "not a number");
    dest_bad("10.0.0.0/08", "not a number");
    dest_bad("10.0.0.0/-1", "not a number");
    dest_bad("10.0.0.0/8/8", "not a number");
    dest_bad("example.test/24", "not an IP address");
    dest_bad("::ffff:10.0.0.0/104", "IPv4-mapped");
    /* names */
    dest_bad("*", "'*' only");
    dest_bad("*.", "empty name");
    dest_bad("*.test", "top-level domain");
    dest_bad("a.*.example.test", "'*' only");
    dest_bad("*example.test", "'*' only");
    dest_bad("**.example.test", "'*' only");
    dest_bad("exa mple.test", "character");
    dest_bad("example..test", "empty label");
    dest_bad(".example.test", "empty label");
    dest_bad("-a.example.test", "starts with '-'");
    dest_bad("a-.example.test", "ends with '-'");
    dest_bad("ex\xc3\xa4mple.test", "character");
    dest_bad("example.test\n", "character");
    dest_bad("user@example.test", "character");
    dest_bad("http://example.test", "port");
    char label[80];
    memset(label, 'a', 64);
    strcpy(label + 64, ".test");
    dest_bad(label, "longer than 63");
    char longname[400];
    memset(longname, 0, sizeof(longname));
    for (int i = 0; i < 64; i++)
        memcpy(longname + i * 4, "abc.", 4);
    strcpy(longname + 256, "test");
    dest_bad(longname, "longer than 253");
    memset(longname, 'a', 350);
    longname[350] = '\0';
    dest_bad(longname, "longer than 300");
}
END_TEST

/* --- classes --------------------------------------------------------------------------- */

START_TEST(classes)
{
    class_is("198.51.100.7", CQ_NET_CLASS_PUBLIC);
    class_is("203.0.113.1", CQ_NET_CLASS_PUBLIC);
    class_is("192.0.2.1", CQ_NET_CLASS_PUBLIC);
    class_is("8.8.8.8", CQ_NET_CLASS_PUBLIC);
    class_is("2001:db8::1", CQ_NET_CLASS_PUBLIC);
    class_is("2606:4700::1111", CQ_NET_CLASS_PUBLIC);
    class_is("127.0.0.1", CQ_NET_CLASS_LOOPBACK);
    class_is("127.255.255.254", CQ_NET_CLASS_LOOPBACK);
    class_is("::1", CQ_NET_CLASS_LOOPBACK);
    class_is("::ffff:127.0.0.1", CQ_NET_CLASS_LOOPBACK);
    class_is("169.254.169.254", CQ_NET_CLASS_LINK_LOCAL);
    class_is("::ffff:169.254.169.254", CQ_NET_CLASS_LINK_LOCAL);
    class_is("fe80::1", CQ_NET_CLASS_LINK_LOCAL);
    class_is("febf::1", CQ_NET_CLASS_LINK_LOCAL);
    class_is("224.0.0.1", CQ_NET_CLASS_MULTICAST);
    class_is("239.255.255.250", CQ_NET_CLASS_MULTICAST);
    class_is("ff02::1", CQ_NET_CLASS_MULTICAST);
    class_is("0.0.0.0", CQ_NET_CLASS_UNSPECIFIED);
    class_is("0.1.2.3", CQ_NET_CLASS_UNSPECIFIED);
    class_is("255.255.255.255", CQ_NET_CLASS_UNSPECIFIED);
    class_is("::", CQ_NET_CLASS_UNSPECIFIED);
    class_is("10.1.2.3", CQ_NET_CLASS_PRIVATE);
    class_is("172.16.0.1", CQ_NET_CLASS_PRIVATE);
    class_is("172.31.255.255", CQ_NET_CLASS_PRIVATE);
    class_is("172.32.0.1", CQ_NET_CLASS_PUBLIC);
    class_is("172.15.255.255", CQ_NET_CLASS_PUBLIC);
    class_is("192.168.1.1", CQ_NET_CLASS_PRIVATE);
    class_is("100.64.0.1", CQ_NET_CLASS_PRIVATE);
    class_is("100.127.255.255", CQ_NET_CLASS_PRIVATE);
    class_is("100.128.0.1", CQ_NET_CLASS_PUBLIC);
    class_is("fd00::1", CQ_NET_CLASS_PRIVATE);
    class_is("fc00::1", CQ_NET_CLASS_PRIVATE);
    class_is("::ffff:10.0.0.1", CQ_NET_CLASS_PRIVATE);
    class_is("240.0.0.1", CQ_NET_CLASS_RESERVED);
    class_is("192.0.0.170", CQ_NET_CLASS_RESERVED);
    class_is("198.18.0.1", CQ_NET_CLASS_RESERVED);
    class_is("::127.0.0.1", CQ_NET_CLASS_RESERVED); /* IPv4-compatible: never global */
    class_is("2001::1", CQ_NET_CLASS_RESERVED);     /* Teredo */
    class_is("fec0::1", CQ_NET_CLASS_RESERVED);     /* old site-local */
    class_is("100::1", CQ_NET_CLASS_RESERVED);      /* discard-only */
    class_is("4000::1", CQ_NET_CLASS_RESERVED);     /* not global unicast */
    /* IPv4 carried in IPv6 takes its IPv4 address's class. */
    class_is("2002:7f00:1::", CQ_NET_CLASS_LOOPBACK); /* 6to4 of 127.0.0.1 */
    class_is("2002:a9fe:a9fe::1", CQ_NET_CLASS_LINK_LOCAL);
    class_is("2002:c633:6407::", CQ_NET_CLASS_PUBLIC); /* 6to4 of 198.51.100.7 */
    class_is("64:ff9b::7f00:1", CQ_NET_CLASS_LOOPBACK);
    class_is("64:ff9b::a00:1", CQ_NET_CLASS_PRIVATE);
    class_is("64:ff9b::c633:6407", CQ_NET_CLASS_PUBLIC);
    struct cq_net_addr a;
    ck_assert_int_eq(cq_net_addr_parse("127.1", &a), -1);
    ck_assert_int_eq(cq_net_addr_parse("fe80::1%lo", &a), -1);
    ck_assert_int_eq(cq_net_addr_parse(NULL, &a), -1);
}
END_TEST

START_TEST(nonpublic_v4_ranges)
{
    char all[512] = "", buf[CQ_NET_DEST_TEXT];
    for (size_t i = 0; cq_net_nonpublic_v4(i, buf, sizeof(buf)); i++) {
        strcat(all, buf);
        strcat(all, " ");
        /* each is a refused range, by the classifier's own reckoning */
        struct cq_net_dest d;
        struct cq_error err = {0};
        ck_assert_int_eq(cq_net_dest_parse(buf, &d, &err), 0);
        ck_assert_int_ne(cq_net_classify(&d.addr), CQ_NET_CLASS_PUBLIC);
    }
    ck_assert_str_eq(all, "0.0.0.0/8 10.0.0.0/8 100.64.0.0/10 127.0.0.0/8 169.254.0.0/16 "
                          "172.16.0.0/12 192.0.0.0/24 192.168.0.0/16 198.18.0.0/15 224.0.0.0/4 "
                          "240.0.0.0/4 ");
}
END_TEST

START_TEST(private_ranges_whole)
{
    /* What network_private may name: inside one private range, ports aside. */
    static const char *const inside[] = {"10.0.0.0/8",    "10.99.0.10",    "10.0.3.0/24:5432",
                                         "100.64.0.0/10", "172.16.0.0/12", "192.168.1.0/24",
                                         "fc00::/7",      "fd00::/8",      "[fd00::1]:80"};
    static const char *const outside[] = {"10.0.0.0/7", "fc00::/6",    "172.0.0.0/8",
                                          "8.8.8.8",    "100.0.0.0/8", "127.0.0.1",
                                          "fe80::/10",  "db.internal", "0.0.0.0/0"};
    struct cq_net_dest d;
    struct cq_error err = {0};
    for (size_t i = 0; i < sizeof(inside) / sizeof(inside[0]); i++) {
        ck_assert_int_eq(cq_net_dest_parse(inside[i], &d, &err), 0);
        ck_assert_msg(cq_net_dest_private(&d), "%s", inside[i]);
    }
    for (size_t i = 0; i < sizeof(outside) / sizeof(outside[0]); i++) {
        ck_assert_int_eq(cq_net_dest_parse(outside[i], &d, &err), 0);
        ck_assert_msg(!cq_net_dest_private(&d), "%s", outside[i]);
    }
    struct cq_net_addr a;
    ck_assert_int_eq(cq_net_dest_parse("10.99.0.0/24:7", &d, &err), 0);
    ck_assert_int_eq(cq_net_addr_parse("10.99.0.200", &a), 0);
    ck_assert(cq_net_dest_covers_addr(&d, &a));
    ck_assert_int_eq(cq_net_addr_parse("::ffff:10.99.0.200", &a), 0);
    ck_assert(cq_net_dest_covers_addr(&d, &a));
    ck_assert_int_eq(cq_net_addr_parse("10.99.1.1", &a), 0);
    ck_assert(!cq_net_dest_covers_addr(&d, &a));
}
END_TEST

START_TEST(modes)
{
    enum cq_network_mode m;
    struct cq_error err = {0};
    ck_assert_int_eq(cq_net_mode_parse("PUBLIC", &m, &err), 0);
    ck_assert_int_eq(m, CQ_NETWORK_PUBLIC);
    ck_assert_int_eq(cq_net_mode_parse("allowlist", &m, &err), 0);
    ck_assert_int_eq(m, CQ_NETWORK_ALLOWLIST);
    ck_assert_int_eq(cq_net_mode_parse("none", &m, &err), 0);
    ck_assert_int_eq(m, CQ_NETWORK_NONE);
    ck_assert_int_eq(cq_net_mode_parse("VPC", &m, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "'VPC'"));
    ck_assert_int_eq(cq_net_mode_parse(NULL, &m, &err), -1);
    ck_assert_str_eq(cq_net_mode_name(CQ_NETWORK_ALLOWLIST), "ALLOWLIST");
    ck_assert_str_eq(cq_net_mode_name((enum cq_network_mode)7), "UNKNOWN");
}
END_TEST

/* --- admission ------------------------------------------------------------------------- */

START_TEST(admit_modes)
{
    struct cq_error err = {0};
    struct cq_net_grant g;
    ck_assert_int_eq(cq_netpolicy_admit(&policy, NULL, NULL, 0, &g, &err), 0);
    ck_assert_int_eq(g.mode, CQ_NETWORK_NONE);
    admit_ok(CQ_NETWORK_PUBLIC, NULL, 0);
    policy.modes = CQ_NET_MODE_BIT(CQ_NETWORK_NONE) | CQ_NET_MODE_BIT(CQ_NETWORK_ALLOWLIST);
    admit_bad(CQ_NETWORK_PUBLIC, NULL, 0,
              "network mode PUBLIC is not allowed by the operator's policy (network_modes = "
              "NONE,ALLOWLIST)");
    policy.default_mode = CQ_NETWORK_ALLOWLIST;
    ck_assert_int_eq(cq_netpolicy_admit(&policy, NULL, NULL, 0, &g, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "at least one"));
    admit_bad((enum cq_network_mode)3, NULL, 0, "unknown network mode 3");
    admit_bad((enum cq_network_mode) - 1, NULL, 0, "unknown network mode");
    const char *allow[] = {"files.example.test"};
    admit_bad(CQ_NETWORK_NONE, allow, 1, "only for network mode ALLOWLIST");
    policy.modes |= CQ_NET_MODE_BIT(CQ_NETWORK_PUBLIC);
    admit_bad(CQ_NETWORK_PUBLIC, allow, 1, "only for network mode ALLOWLIST");
    policy.modes = 0;
    admit_bad(CQ_NETWORK_NONE, NULL, 0, "network_modes = none");
}
END_TEST

START_TEST(admit_entries)
{
    const char *good[] = {"files.example.test", "*.example.test:443", "198.51.100.0/24",
                          "[2001:db8::5]:53", "203.0.113.9:7"};
    struct cq_net_grant g = admit_ok(CQ_NETWORK_ALLOWLIST, good, 5);
    ck_assert_str_eq(g.allow.d[1].name, "example.test");
    const char *bad_parse[] = {"files.example.test", "127.1"};
    admit_bad(CQ_NETWORK_ALLOWLIST, bad_parse, 2, "allow entry 2: '127.1'");
    const char *always[][2] = {
        {"127.0.0.1", "loopback"},
        {"169.254.169.254", "link-local"},
        {"[fe80::1]:80", "link-local"},
        {"224.0.0.0/4", "multicast"},
        {"0.0.0.0/0", "refused in every mode"},
        {"::/0", "refused in every mode"},
        {"::1", "loopback"},
        {"240.0.0.0/8", "reserved"},
        {"4000::/3", "reserved"},
        {"::ffff:127.0.0.1", "loopback"},
        {"192.0.0.0/16", "reserved"},
        {"255.255.255.255", "unspecified"},
        {"2002::/16", "IPv4 carried in IPv6"},
        {"2002:7f00:1::", "IPv4 carried in IPv6"},
        {"64:ff9b::/96", "IPv4 carried in IPv6"},
        {"4000::/2", "refused in every mode"},
        {"126.0.0.0/7", "loopback"},
    };
    for (size_t i = 0; i < sizeof(always) / sizeof(always[0]); i++)
        admit_bad(CQ_NETWORK_ALLOWLIST, always[i], 1, always[i][1]);
    /* A single 6to4 address of a public IPv4 address is fine. */
    allowlist1("2002:c633:6407::");
    /* Private ranges need network_private. */
    const char *priv[][2] = {
        {"10.0.0.5", "private range 10.0.0.0/8"},
        {"10.0.0.0/7", "private range 10.0.0.0/8"}, /* covers it partly */
        {"172.20.0.0/16:5432", "private range 172.16.0.0/12"},
        {"192.168.0.0/16", "network_private"},
        {"100.64.0.0/10", "network_private"},
        {"[fd00::1]:80", "network_private"},
        {"::ffff:10.1.1.1", "network_private"},
    };
    for (size_t i = 0; i < sizeof(priv) / sizeof(priv[0]); i++)
        admit_bad(CQ_NETWORK_ALLOWLIST, priv[i], 1, priv[i][1]);
    struct cq_error err = {0};
    ck_assert_int_eq(cq_net_rules_add(&policy.private_ok, "10.20.0.0/16", &err), 0);
    ck_assert_int_eq(cq_net_rules_add(&policy.private_ok, "[fd00::/8]:443", &err), 0);
    allowlist1("10.20.30.0/24");
    allowlist1("10.20.30.40:5432");
    const char *outside[] = {"10.21.0.1"};
    admit_bad(CQ_NETWORK_ALLOWLIST, outside, 1, "network_private");
    allowlist1("[fd00::1]:443");
    const char *wrong_port[] = {"[fd00::1]:80"};
    admit_bad(CQ_NETWORK_ALLOWLIST, wrong_port, 1, "network_private");
    const char *any_port[] = {"fd00::1"};
    admit_bad(CQ_NETWORK_ALLOWLIST, any_port, 1, "network_private");
}
END_TEST

START_TEST(admit_bounds_and_limits)
{
    struct cq_error err = {0};
    ck_assert_int_eq(cq_net_rules_add(&policy.bounds, "*.example.test", &err), 0);
    ck_assert_int_eq(cq_net_rules_add(&policy.bounds, "pypi.test:443", &err), 0);
    ck_assert_int_eq(cq_net_rules_add(&policy.bounds, "198.51.100.0/24", &err), 0);
    allowlist1("files.example.test");
    allowlist1("*.example.test");
    allowlist1("*.deep.example.test:80");
    allowlist1("pypi.test:443");
    allowlist1("198.51.100.128/25");
    allowlist1("198.51.100.7:80");
    const char *out[] = {"example.test",  "evil.test",    "example.test.evil.test",
                         "pypi.test",     "pypi.test:80", "*.pypi.test:443",
                         "198.51.0.0/16", "203.0.113.1",  "xexample.test",
                         "2001:db8::1"};
    for (size_t i = 0; i < sizeof(out) / sizeof(out[0]); i++)
        admit_bad(CQ_NETWORK_ALLOWLIST, &out[i], 1, "network_allow_bounds");
    /* the number of entries */
    policy.bounds.n = 0;
    policy.max_allow = 2;
    const char *three[] = {"a.example.test", "b.example.test", "c.example.test"};
    admit_bad(CQ_NETWORK_ALLOWLIST, three, 3, "at most 2 (network_max_allow)");
    admit_ok(CQ_NETWORK_ALLOWLIST, three, 2);
    /* a rule list is bounded */
    struct cq_net_rules r = {0};
    for (int i = 0; i < CQ_NET_MAX_RULES; i++)
        ck_assert_int_eq(cq_net_rules_add(&r, "198.51.100.1", &err), 0);
    ck_assert_int_eq(cq_net_rules_add(&r, "198.51.100.1", &err), -1);
    ck_assert_int_eq(err.code, CQ_ELIMIT);
    ck_assert_int_eq(cq_net_rules_add(&r, "x", &err), -1);
    ck_assert_uint_eq(r.n, CQ_NET_MAX_RULES);
}
END_TEST

/* --- connect decisions ------------------------------------------------------------------ */

START_TEST(connect_none_and_public)
{
    struct cq_net_grant none = admit_ok(CQ_NETWORK_NONE, NULL, 0);
    verdict(&none, "198.51.100.7", 80, IPPROTO_TCP, NULL, 0, CQ_NET_REFUSE_MODE, "mode NONE");
    struct cq_net_grant pub = admit_ok(CQ_NETWORK_PUBLIC, NULL, 0);
    verdict(&pub, "198.51.100.7", 80, IPPROTO_TCP, NULL, 0, CQ_NET_ALLOW, NULL);
    verdict(&pub, "203.0.113.5", 7, IPPROTO_UDP, NULL, 0, CQ_NET_ALLOW, NULL);
    verdict(&pub, "2001:db8::5", 443, IPPROTO_UDP, NULL, 0, CQ_NET_ALLOW, NULL); /* QUIC */
    verdict(&pub, "198.51.100.7", 0, IPPROTO_TCP, NULL, 0, CQ_NET_REFUSE_PROTO, NULL);
    verdict(&pub, "198.51.100.7", 80, IPPROTO_ICMP, NULL, 0, CQ_NET_REFUSE_PROTO, "only TCP");
    verdict(&pub, "198.51.100.7", 80, IPPROTO_SCTP, NULL, 0, CQ_NET_REFUSE_PROTO, NULL);
    const char *always[] = {"127.0.0.1",       "::1",           "::ffff:127.0.0.1",
                            "169.254.169.254", "fe80::1",       "224.0.0.251",
                            "ff02::fb",        "0.0.0.0",       "::",
                            "255.255.255.255", "2002:7f00:1::", "64:ff9b::a9fe:a9fe",
                            "::127.0.0.1",     "240.1.2.3"};
    for (size_t i = 0; i < sizeof(always) / sizeof(always[0]); i++)
        verdict(&pub, always[i], 80, IPPROTO_TCP, NULL, 0, CQ_NET_REFUSE_CLASS,
                "refused in every mode");
    verdict(&pub, "10.0.0.1", 9092, IPPROTO_TCP, NULL, 0, CQ_NET_REFUSE_PRIVATE, "network_private");
    verdict(&pub, "172.17.0.2", 6379, IPPROTO_TCP, NULL, 0, CQ_NET_REFUSE_PRIVATE, NULL);
    verdict(&pub, "100.100.100.200", 80, IPPROTO_TCP, NULL, 0, CQ_NET_REFUSE_PRIVATE, NULL);
    verdict(&pub, "fd12::1", 80, IPPROTO_TCP, NULL, 0, CQ_NET_REFUSE_PRIVATE, NULL);
    /* The host's own (public) address, and the fleet's Kafka on a public address. */
    policy.host[policy.n_host++] = addr("203.0.113.200");
    policy.host[policy.n_host++] = addr("2001:db8:ffff::1");
    verdict(&pub, "203.0.113.200", 22, IPPROTO_TCP, NULL, 0, CQ_NET_REFUSE_HOST, "host's own");
    verdict(&pub, "::ffff:203.0.113.200", 22, IPPROTO_TCP, NULL, 0, CQ_NET_REFUSE_HOST, NULL);
    verdict(&pub, "2001:db8:ffff::1", 22, IPPROTO_UDP, NULL, 0, CQ_NET_REFUSE_HOST, NULL);
    struct cq_error err = {0};
    ck_assert_int_eq(cq_net_rules_add(&policy.deny, "198.51.100.50:9092", &err), 0);
    verdict(&pub, "198.51.100.50", 9092, IPPROTO_TCP, NULL, 0, CQ_NET_REFUSE_DENY,
            "network_deny 198.51.100.50:9092");
    verdict(&pub, "198.51.100.50", 80, IPPROTO_TCP, NULL, 0, CQ_NET_ALLOW, NULL);
    /* Opened private ranges, with their port. */
    ck_assert_int_eq(cq_net_rules_add(&policy.private_ok, "10.20.0.0/16:5432", &err), 0);
    verdict(&pub, "10.20.1.1", 5432, IPPROTO_TCP, NULL, 0, CQ_NET_ALLOW, NULL);
    verdict(&pub, "10.20.1.1", 22, IPPROTO_TCP, NULL, 0, CQ_NET_REFUSE_PRIVATE, NULL);
    verdict(&pub, "10.21.1.1", 5432, IPPROTO_TCP, NULL, 0, CQ_NET_REFUSE_PRIVATE, NULL);
    /* No rule opens an always-refused class. */
    ck_assert_int_eq(cq_net_rules_add(&policy.private_ok, "127.0.0.0/8", &err), 0);
    verdict(&pub, "127.0.0.1", 80, IPPROTO_TCP, NULL, 0, CQ_NET_REFUSE_CLASS, NULL);
}
END_TEST

START_TEST(connect_allowlist)
{
    const char *allow[] = {"files.example.test:80", "*.api.example.test", "198.51.100.0/28:7",
                           "[2001:db8::7]:443"};
    struct cq_net_grant g = admit_ok(CQ_NETWORK_ALLOWLIST, allow, 4);
    struct cq_net_resolved res[] = {
        {"files.example.test", addr("203.0.113.10")},
        {"v1.api.example.test.", addr("203.0.113.20")},
        {"FILES.example.test", addr("2001:db8::10")},
        {"other.example.test", addr("203.0.113.30")},
        {"rebind.example.test", addr("127.0.0.1")},
        {"files.example.test", addr("127.0.0.1")},
        {"files.example.test", addr("10.0.0.1")},
    };
    size_t n = sizeof(res) / sizeof(res[0]);
    verdict(&g, "203.0.113.10", 80, IPPROTO_TCP, res, n, CQ_NET_ALLOW, NULL);
    verdict(&g, "2001:db8::10", 80, IPPROTO_TCP, res, n, CQ_NET_ALLOW, NULL);
    verdict(&g, "203.0.113.10", 443, IPPROTO_TCP, res, n, CQ_NET_REFUSE_NOT_LISTED,
            "not in the allowlist");
    verdict(&g, "203.0.113.20", 443, IPPROTO_UDP, res, n, CQ_NET_ALLOW, NULL);
    verdict(&g, "203.0.113.20", 1, IPPROTO_TCP, res, n, CQ_NET_ALLOW, NULL);
    /* Resolved for a name the allowlist does not name. */
    verdict(&g, "203.0.113.30", 80, IPPROTO_TCP, res, n, CQ_NET_REFUSE_NOT_LISTED, NULL);
    /* An IP literal an allowed name does not resolve to. */
    verdict(&g, "203.0.113.11", 80, IPPROTO_TCP, res, n, CQ_NET_REFUSE_NOT_LISTED, NULL);
    verdict(&g, "203.0.113.10", 80, IPPROTO_TCP, NULL, 0, CQ_NET_REFUSE_NOT_LISTED, NULL);
    /* Rebinding: an allowed name answering loopback or a private address. */
    verdict(&g, "127.0.0.1", 80, IPPROTO_TCP, res, n, CQ_NET_REFUSE_CLASS, NULL);
    verdict(&g, "10.0.0.1", 80, IPPROTO_TCP, res, n, CQ_NET_REFUSE_PRIVATE, NULL);
    /* CIDR entries, with their ports. */
    verdict(&g, "198.51.100.15", 7, IPPROTO_UDP, NULL, 0, CQ_NET_ALLOW, NULL);
    verdict(&g, "198.51.100.16", 7, IPPROTO_UDP, NULL, 0, CQ_NET_REFUSE_NOT_LISTED, NULL);
    verdict(&g, "198.51.100.15", 8, IPPROTO_UDP, NULL, 0, CQ_NET_REFUSE_NOT_LISTED, NULL);
    verdict(&g, "::ffff:198.51.100.15", 7, IPPROTO_TCP, NULL, 0, CQ_NET_ALLOW, NULL);
    verdict(&g, "2001:db8::7", 443, IPPROTO_TCP, NULL, 0, CQ_NET_ALLOW, NULL);
    verdict(&g, "2001:db8::7", 80, IPPROTO_TCP, NULL, 0, CQ_NET_REFUSE_NOT_LISTED, NULL);
    /* A resolved entry with a hostile name matches nothing. */
    struct cq_net_resolved junk[] = {{NULL, addr("203.0.113.40")},
                                     {"", addr("203.0.113.40")},
                                     {"x.api.example.test\n", addr("203.0.113.40")},
                                     {"api.example.test", addr("203.0.113.40")}};
    verdict(&g, "203.0.113.40", 80, IPPROTO_TCP, junk, 4, CQ_NET_REFUSE_NOT_LISTED, NULL);
    /* Names the resolver may answer. */
    ck_assert(cq_netpolicy_name_allowed(&g, "files.example.test"));
    ck_assert(cq_netpolicy_name_allowed(&g, "Files.Example.Test."));
    ck_assert(cq_netpolicy_name_allowed(&g, "a.b.api.example.test"));
    ck_assert(!cq_netpolicy_name_allowed(&g, "api.example.test"));
    ck_assert(!cq_netpolicy_name_allowed(&g, "x.files.example.test"));
    ck_assert(!cq_netpolicy_name_allowed(&g, "files.example.test.evil.test"));
    ck_assert(!cq_netpolicy_name_allowed(&g, "evilapi.example.test"));
    ck_assert(!cq_netpolicy_name_allowed(&g, NULL));
    ck_assert(!cq_netpolicy_name_allowed(&g, "files.example.test:80"));
    struct cq_net_grant pub = admit_ok(CQ_NETWORK_PUBLIC, NULL, 0);
    ck_assert(cq_netpolicy_name_allowed(&pub, "anything.test"));
    struct cq_net_grant none = admit_ok(CQ_NETWORK_NONE, NULL, 0);
    ck_assert(!cq_netpolicy_name_allowed(&none, "files.example.test"));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("netpolicy");
    TCase *tc = tcase_create("netpolicy");
    tcase_add_checked_fixture(tc, setup, NULL);
    tcase_add_test(tc, dest_forms);
    tcase_add_test(tc, dest_refused);
    tcase_add_test(tc, classes);
    tcase_add_test(tc, modes);
    tcase_add_test(tc, nonpublic_v4_ranges);
    tcase_add_test(tc, private_ranges_whole);
    tcase_add_test(tc, admit_modes);
    tcase_add_test(tc, admit_entries);
    tcase_add_test(tc, admit_bounds_and_limits);
    tcase_add_test(tc, connect_none_and_public);
    tcase_add_test(tc, connect_allowlist);
    suite_add_tcase(s, tc);
    return cq_unit_run(s, false);
}
