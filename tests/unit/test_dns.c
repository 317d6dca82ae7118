/* tests/unit/test_dns.c - sandbox/dns.c (the DNS wire format of codeq's resolver) and
 * the resolver's decision on each answered address (cq_resolver_decide), with what a
 * hostile sandbox or upstream would send: compression loops, pointers forward, names
 * past 255 bytes, records past the end, answers about other names, rebinding. */
#define _GNU_SOURCE
#include "sandbox/dns.h"
#include "sandbox/netpolicy.h"
#include "sandbox/resolver.h"
#include "unit.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* --- building messages ------------------------------------------------------------------ */

struct msg {
    uint8_t b[2048];
    size_t n;
};

static void put(struct msg *m, const void *data, size_t len)
{
    ck_assert(m->n + len <= sizeof(m->b));
    memcpy(m->b + m->n, data, len);
    m->n += len;
}

static void put16(struct msg *m, uint16_t v)
{
    uint8_t b[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    put(m, b, 2);
}

static void put_name(struct msg *m, const char *name)
{
    while (*name) {
        const char *dot = strchr(name, '.');
        size_t len = dot ? (size_t)(dot - name) : strlen(name);
        uint8_t l = (uint8_t)len;
        put(m, &l, 1);
        put(m, name, len);
        name += len + (dot ? 1 : 0);
    }
    put(m, "", 1);
}

static void header(struct msg *m, uint16_t id, uint16_t flags, uint16_t qd, uint16_t an,
                   uint16_t ns, uint16_t ar)
{
    m->n = 0;
    put16(m, id);
    put16(m, flags);
    put16(m, qd);
    put16(m, an);
    put16(m, ns);
    put16(m, ar);
}

static struct msg query(const char *name, uint16_t type)
{
    struct msg m;
    header(&m, 0x1234, 0x0100, 1, 0, 0, 0);
    put_name(&m, name);
    put16(&m, type);
    put16(&m, 1);
    return m;
}

/* A record: owner as a pointer to offset 12 (the question's name) or spelt out. */
static void record(struct msg *m, const char *owner, uint16_t type, const void *rdata,
                   uint16_t rdlen)
{
    if (owner == NULL)
        put16(m, 0xc00c);
    else
        put_name(m, owner);
    put16(m, type);
    put16(m, 1);
    put16(m, 0);
    put16(m, 300);
    put16(m, rdlen);
    put(m, rdata, rdlen);
}

static struct cq_dns_query parsed(const char *name, uint16_t type)
{
    struct msg m = query(name, type);
    struct cq_dns_query q;
    ck_assert_int_eq(cq_dns_parse_query(m.b, m.n, &q), CQ_DNS_NOERROR);
    return q;
}

/* keep(): refuses 127/8 and records what it was asked. */
struct seen {
    int n;
    char addr[16][INET6_ADDRSTRLEN];
};

static bool keep_public(void *ctx, int family, const uint8_t *addr)
{
    struct seen *s = ctx;
    if (s->n < 16)
        inet_ntop(family, addr, s->addr[s->n++], INET6_ADDRSTRLEN);
    return !(family == AF_INET && addr[0] == 127);
}

/* Answers in a reply, as "type name addr-or-target" lines. */
static void answers(const uint8_t *r, size_t len, char *out, size_t cap)
{
    out[0] = '\0';
    size_t off = 12;
    ck_assert_uint_eq(r[4] << 8 | r[5], 1);
    while (r[off] != 0)
        off += 1 + r[off];
    off += 5;
    unsigned an = (unsigned)(r[6] << 8 | r[7]);
    ck_assert_uint_eq(r[8] << 8 | r[9], 0);   /* no authority */
    ck_assert_uint_eq(r[10] << 8 | r[11], 0); /* no additional */
    for (unsigned i = 0; i < an; i++) {
        char name[256] = "";
        while (r[off] != 0) {
            ck_assert_msg(r[off] < 64, "compressed name in a rebuilt reply");
            strncat(name, (const char *)r + off + 1, r[off]);
            strcat(name, ".");
            off += 1 + r[off];
        }
        off++;
        unsigned type = (unsigned)(r[off] << 8 | r[off + 1]);
        unsigned rdlen = (unsigned)(r[off + 8] << 8 | r[off + 9]);
        off += 10;
        char data[256] = "";
        if (type == CQ_DNS_TYPE_A || type == CQ_DNS_TYPE_AAAA)
            inet_ntop(type == CQ_DNS_TYPE_A ? AF_INET : AF_INET6, r + off, data, sizeof(data));
        else
            for (size_t at = off; r[at] != 0; at += 1 + r[at]) {
                strncat(data, (const char *)r + at + 1, r[at]);
                strcat(data, ".");
            }
        off += rdlen;
        size_t used = strlen(out);
        snprintf(out + used, cap - used, "%u %s %s\n", type, name, data);
    }
    ck_assert_uint_eq(off, len);
}

/* --- queries ---------------------------------------------------------------------------- */

START_TEST(queries_are_read)
{
    struct msg m = query("Files.Example.TEST", CQ_DNS_TYPE_AAAA);
    struct cq_dns_query q;
    ck_assert_int_eq(cq_dns_parse_query(m.b, m.n, &q), CQ_DNS_NOERROR);
    ck_assert_str_eq(q.name, "files.example.test");
    ck_assert_uint_eq(q.id, 0x1234);
    ck_assert_uint_eq(q.qtype, CQ_DNS_TYPE_AAAA);
    ck_assert_uint_eq(q.udp_size, 512);
    ck_assert_uint_eq(q.end, m.n);
    /* EDNS raises the size the client takes, within codeq's bounds. */
    header(&m, 7, 0x0100, 1, 0, 0, 1);
    put_name(&m, "a.test");
    put16(&m, 1);
    put16(&m, 1);
    put(&m, "", 1);
    put16(&m, CQ_DNS_TYPE_OPT);
    put16(&m, 4096);
    put(&m, "\0\0\0\0\0\0", 6);
    ck_assert_int_eq(cq_dns_parse_query(m.b, m.n, &q), CQ_DNS_NOERROR);
    ck_assert_uint_eq(q.udp_size, CQ_DNS_UDP_MAX);
}
END_TEST

START_TEST(bad_queries_are_refused_or_dropped)
{
    struct cq_dns_query q;
    struct msg m = query("a.test", 1);
    ck_assert_int_eq(cq_dns_parse_query(m.b, 11, &q), -1); /* shorter than a header */
    m.b[2] |= 0x80;
    ck_assert_int_eq(cq_dns_parse_query(m.b, m.n, &q), -1); /* a response: never answered */
    m = query("a.test", 1);
    m.b[2] |= 0x10; /* opcode 2, STATUS */
    ck_assert_int_eq(cq_dns_parse_query(m.b, m.n, &q), CQ_DNS_NOTIMP);
    m = query("a.test", 1);
    m.b[5] = 2; /* two questions */
    ck_assert_int_eq(cq_dns_parse_query(m.b, m.n, &q), CQ_DNS_FORMERR);
    ck_assert_uint_eq(q.end, 0);
    m = query("a.test", 1);
    m.b[7] = 1; /* an answer in a query */
    ck_assert_int_eq(cq_dns_parse_query(m.b, m.n, &q), CQ_DNS_FORMERR);
    m = query("a.test", 1);
    ck_assert_int_eq(cq_dns_parse_query(m.b, m.n - 1, &q), CQ_DNS_FORMERR); /* cut */
    m = query("a.test", 252);                                               /* AXFR */
    ck_assert_int_eq(cq_dns_parse_query(m.b, m.n, &q), CQ_DNS_REFUSED);
    m = query("a.test", 1);
    m.b[m.n - 1] = 3; /* class CH */
    ck_assert_int_eq(cq_dns_parse_query(m.b, m.n, &q), CQ_DNS_REFUSED);
    /* A label with a dot in it would read as two labels: "evil.files.example.test" as
     * one label must never match an allowlist entry. Refused, as any odd byte. */
    header(&m, 1, 0x100, 1, 0, 0, 0);
    put(&m,
        "\x0a"
        "files.exam"
        "\x04"
        "test"
        "\0",
        17);
    put16(&m, 1);
    put16(&m, 1);
    ck_assert_int_eq(cq_dns_parse_query(m.b, m.n, &q), CQ_DNS_REFUSED);
    /* A compression pointer to itself, and one pointing forward. */
    header(&m, 1, 0x100, 1, 0, 0, 0);
    put16(&m, 0xc00c);
    put16(&m, 1);
    put16(&m, 1);
    ck_assert_int_eq(cq_dns_parse_query(m.b, m.n, &q), CQ_DNS_FORMERR);
    header(&m, 1, 0x100, 1, 0, 0, 0);
    put16(&m, 0xc010);
    put16(&m, 1);
    put16(&m, 1);
    ck_assert_int_eq(cq_dns_parse_query(m.b, m.n, &q), CQ_DNS_FORMERR);
    /* 128 labels of 1 byte: 256 bytes in wire form, one too many. */
    header(&m, 1, 0x100, 1, 0, 0, 0);
    for (int i = 0; i < 128; i++)
        put(&m, "\x01x", 2);
    put(&m, "", 1);
    put16(&m, 1);
    put16(&m, 1);
    ck_assert_int_eq(cq_dns_parse_query(m.b, m.n, &q), CQ_DNS_FORMERR);
}
END_TEST

START_TEST(error_replies_echo_the_question)
{
    struct cq_dns_query q = parsed("x.example.test", 1);
    uint8_t out[600];
    size_t n = cq_dns_error_reply(&q, CQ_DNS_NXDOMAIN, out, sizeof(out));
    struct msg m = query("x.example.test", 1);
    ck_assert_uint_eq(n, m.n);
    ck_assert_uint_eq(out[0] << 8 | out[1], 0x1234);
    ck_assert_uint_eq(out[2] & 0x80, 0x80);
    ck_assert_uint_eq(out[3] & 0xf, CQ_DNS_NXDOMAIN);
    ck_assert_mem_eq(out + 12, m.b + 12, m.n - 12);
    ck_assert_uint_eq(cq_dns_error_reply(&q, CQ_DNS_NXDOMAIN, out, 20), 0);
    /* The upstream is asked codeq's own query: RD, the name, EDNS. */
    n = cq_dns_write_query(&q, 0xbeef, out, sizeof(out));
    ck_assert_uint_eq(n, m.n + 11);
    ck_assert_uint_eq(out[0] << 8 | out[1], 0xbeef);
    ck_assert_mem_eq(out + 12, m.b + 12, m.n - 12);
}
END_TEST

/* --- replies ----------------------------------------------------------------------------- */

static struct msg reply_head(const char *name, uint16_t id, uint16_t flags, uint16_t an)
{
    struct msg m;
    header(&m, id, flags, 1, an, 0, 0);
    put_name(&m, name);
    put16(&m, 1);
    put16(&m, 1);
    return m;
}

START_TEST(replies_are_rebuilt_with_the_chain_only)
{
    struct cq_dns_query q = parsed("www.example.test", 1);
    struct msg m = reply_head("WWW.example.test", 0x4321, 0x8180, 5);
    struct msg cname;
    cname.n = 0;
    put_name(&cname, "cdn.example.net");
    record(&m, NULL, CQ_DNS_TYPE_CNAME, cname.b, (uint16_t)cname.n);
    record(&m, "other.test", CQ_DNS_TYPE_A, "\xc6\x33\x64\x01", 4); /* not the question's */
    record(&m, "cdn.example.net", CQ_DNS_TYPE_A, "\xc6\x33\x64\x50", 4);
    record(&m, "cdn.example.net", CQ_DNS_TYPE_A, "\x7f\x00\x00\x01", 4); /* rebinding */
    record(&m, NULL, 16, "\x03txt", 4);                                  /* TXT */
    /* authority and additional records the upstream adds are never passed on */
    m.b[9] = 1;
    record(&m, "cdn.example.net", CQ_DNS_TYPE_A, "\x0a\x00\x00\x01", 4);
    uint8_t out[CQ_DNS_UDP_MAX];
    struct seen s = {0};
    size_t n = cq_dns_filter_reply(m.b, m.n, 0x4321, &q, keep_public, &s, out, sizeof(out));
    ck_assert_uint_gt(n, 0);
    ck_assert_uint_eq(out[0] << 8 | out[1], 0x1234); /* the client's id */
    char text[1024];
    answers(out, n, text, sizeof(text));
    ck_assert_str_eq(text, "5 www.example.test. cdn.example.net.\n"
                           "1 cdn.example.net. 198.51.100.80\n");
    ck_assert_int_eq(s.n, 2); /* asked about the chain's addresses only */
}
END_TEST

START_TEST(bad_replies_are_refused)
{
    struct cq_dns_query q = parsed("www.example.test", 1);
    uint8_t out[CQ_DNS_UDP_MAX];
    struct seen s = {0};
    struct msg m = reply_head("www.example.test", 0x4321, 0x8180, 1);
    record(&m, NULL, CQ_DNS_TYPE_A, "\xc6\x33\x64\x50", 4);
    ck_assert_uint_gt(cq_dns_filter_reply(m.b, m.n, 0x4321, &q, keep_public, &s, out, 1232), 0);
    ck_assert_uint_eq(cq_dns_filter_reply(m.b, m.n, 0x4322, &q, keep_public, &s, out, 1232), 0);
    ck_assert_uint_eq(cq_dns_filter_reply(m.b, m.n - 1, 0x4321, &q, keep_public, &s, out, 1232),
                      0); /* a record past the end */
    struct msg other = reply_head("www.example.tesu", 0x4321, 0x8180, 0);
    ck_assert_uint_eq(cq_dns_filter_reply(other.b, other.n, 0x4321, &q, keep_public, &s, out, 1232),
                      0);
    struct msg query_back = reply_head("www.example.test", 0x4321, 0x0100, 0); /* QR clear */
    ck_assert_uint_eq(
        cq_dns_filter_reply(query_back.b, query_back.n, 0x4321, &q, keep_public, &s, out, 1232), 0);
    /* A CNAME loop ends; a chain longer than 16 is refused. */
    struct msg loop = reply_head("www.example.test", 0x4321, 0x8180, 2);
    struct msg t;
    t.n = 0;
    put_name(&t, "b.test");
    record(&loop, NULL, CQ_DNS_TYPE_CNAME, t.b, (uint16_t)t.n);
    t.n = 0;
    put_name(&t, "www.example.test");
    record(&loop, "b.test", CQ_DNS_TYPE_CNAME, t.b, (uint16_t)t.n);
    ck_assert_uint_gt(cq_dns_filter_reply(loop.b, loop.n, 0x4321, &q, keep_public, &s, out, 1232),
                      0);
    struct msg longer = reply_head("www.example.test", 0x4321, 0x8180, 17);
    for (int i = 0; i < 17; i++) {
        char owner[16], target[16];
        snprintf(owner, sizeof(owner), "c%d.test", i);
        snprintf(target, sizeof(target), "c%d.test", i + 1);
        t.n = 0;
        put_name(&t, target);
        record(&longer, i == 0 ? NULL : owner, CQ_DNS_TYPE_CNAME, t.b, (uint16_t)t.n);
    }
    ck_assert_uint_eq(
        cq_dns_filter_reply(longer.b, longer.n, 0x4321, &q, keep_public, &s, out, 1232), 0);
}
END_TEST

START_TEST(truncation)
{
    /* 40 AAAA records do not fit 512 bytes: TC, no records, and the stub asks again
     * over TCP (tcp_replies_take_what_fits_the_prefix). Same for an upstream's
     * truncated reply. */
    struct cq_dns_query q = parsed("big.example.test", CQ_DNS_TYPE_AAAA);
    struct msg m;
    header(&m, 9, 0x8180, 1, 40, 0, 0);
    put_name(&m, "big.example.test");
    put16(&m, CQ_DNS_TYPE_AAAA);
    put16(&m, 1);
    for (int i = 0; i < 40; i++) {
        uint8_t a[16] = {0x20, 0x01, 0x0d, 0xb8};
        a[15] = (uint8_t)i;
        record(&m, NULL, CQ_DNS_TYPE_AAAA, a, 16);
    }
    uint8_t out[CQ_DNS_UDP_MAX];
    struct seen s = {0};
    size_t n = cq_dns_filter_reply(m.b, m.n, 9, &q, keep_public, &s, out, sizeof(out));
    ck_assert_uint_eq(n, 12 + q.wire_len + 4);
    ck_assert_uint_eq(out[2] & 0x02, 0x02);
    m.b[2] |= 0x02;
    q.udp_size = CQ_DNS_UDP_MAX; /* would fit, but the upstream truncated it */
    n = cq_dns_filter_reply(m.b, m.n, 9, &q, keep_public, &s, out, sizeof(out));
    ck_assert_uint_eq(n, 12 + q.wire_len + 4);
    ck_assert_uint_eq(out[2] & 0x02, 0x02);
}
END_TEST

/* --- DNS over TCP ----------------------------------------------------------------------- */

START_TEST(tcp_framing)
{
    /* Two queries one after the other, as a pipelining stub sends them, then read a
     * byte at a time: nothing is taken before the whole message is there. */
    struct msg a = query("files.example.test", CQ_DNS_TYPE_A);
    struct msg b = query("many.example.test", CQ_DNS_TYPE_AAAA);
    uint8_t wire[512];
    size_t n = 0;
    wire[n++] = (uint8_t)(a.n >> 8);
    wire[n++] = (uint8_t)a.n;
    memcpy(wire + n, a.b, a.n);
    n += a.n;
    wire[n++] = (uint8_t)(b.n >> 8);
    wire[n++] = (uint8_t)b.n;
    memcpy(wire + n, b.b, b.n);
    n += b.n;
    size_t len = 0;
    for (size_t got = 0; got < 2 + a.n; got++)
        ck_assert_int_eq(cq_dns_tcp_frame(wire, got, &len), 0);
    ck_assert_int_eq(cq_dns_tcp_frame(wire, 2 + a.n, &len), 1);
    ck_assert_uint_eq(len, a.n);
    ck_assert_int_eq(cq_dns_tcp_frame(wire, n, &len), 1); /* the first, the second waits */
    ck_assert_uint_eq(len, a.n);
    const uint8_t *next = wire + 2 + a.n;
    ck_assert_int_eq(cq_dns_tcp_frame(next, 2 + b.n - 1, &len), 0);
    ck_assert_int_eq(cq_dns_tcp_frame(next, 2 + b.n, &len), 1);
    ck_assert_uint_eq(len, b.n);
    struct cq_dns_query q;
    ck_assert_int_eq(cq_dns_parse_query(next + 2, len, &q), CQ_DNS_NOERROR);
    ck_assert_str_eq(q.name, "many.example.test");

    /* A prefix shorter than a header: nothing could answer it. One announcing the
     * most a prefix can say waits for all of it. */
    for (unsigned v = 0; v < CQ_DNS_HEADER; v++) {
        uint8_t p[14] = {0, (uint8_t)v};
        ck_assert_int_eq(cq_dns_tcp_frame(p, sizeof(p), &len), -1);
    }
    uint8_t big[4096] = {0xff, 0xff};
    ck_assert_int_eq(cq_dns_tcp_frame(big, sizeof(big), &len), 0);
}
END_TEST

START_TEST(tcp_replies_take_what_fits_the_prefix)
{
    /* 100 A records (1.6 KB), more than any UDP size codeq takes: over UDP TC and no
     * records; for a TCP client (udp_size CQ_DNS_TCP_MAX) all of them. */
    struct cq_dns_query q = parsed("many.example.test", CQ_DNS_TYPE_A);
    struct msg m;
    header(&m, 11, 0x8180, 1, 100, 0, 0);
    put_name(&m, "many.example.test");
    put16(&m, CQ_DNS_TYPE_A);
    put16(&m, 1);
    for (int i = 0; i < 100; i++) {
        uint8_t a[4] = {198, 51, 100, (uint8_t)(100 + i)};
        record(&m, NULL, CQ_DNS_TYPE_A, a, 4);
    }
    static uint8_t out[CQ_DNS_TCP_MAX];
    struct seen s = {0};
    q.udp_size = CQ_DNS_UDP_MAX;
    size_t n = cq_dns_filter_reply(m.b, m.n, 11, &q, keep_public, &s, out, sizeof(out));
    ck_assert_uint_eq(n, 12 + q.wire_len + 4);
    ck_assert_uint_eq(out[2] & 0x02, 0x02);
    q.udp_size = CQ_DNS_TCP_MAX;
    n = cq_dns_filter_reply(m.b, m.n, 11, &q, keep_public, &s, out, sizeof(out));
    ck_assert_uint_gt(n, CQ_DNS_UDP_MAX);
    ck_assert_uint_eq(out[2] & 0x02, 0);
    ck_assert_uint_eq(out[6] << 8 | out[7], 100);
    char text[8192];
    answers(out, n, text, sizeof(text));
    ck_assert_ptr_nonnull(strstr(text, "1 many.example.test. 198.51.100.100\n"));
    ck_assert_ptr_nonnull(strstr(text, "1 many.example.test. 198.51.100.199\n"));
    /* A cap below the reply (the caller's buffer) still truncates. */
    n = cq_dns_filter_reply(m.b, m.n, 11, &q, keep_public, &s, out, 1024);
    ck_assert_uint_eq(out[2] & 0x02, 0x02);
    ck_assert_uint_eq(n, 12 + q.wire_len + 4);
}
END_TEST

/* --- the resolver's decisions ------------------------------------------------------------ */

static struct cq_net_addr addr(const char *text)
{
    struct cq_net_addr a;
    ck_assert_msg(cq_net_addr_parse(text, &a) == 0, "%s", text);
    return a;
}

START_TEST(decisions)
{
    struct cq_netpolicy p;
    cq_netpolicy_init(&p);
    static struct cq_net_grant g;
    memset(&g, 0, sizeof(g));
    g.mode = CQ_NETWORK_PUBLIC;
    uint16_t ports[8];
    struct cq_net_addr pub = addr("198.51.100.80"), lo = addr("127.0.0.1");
    struct cq_net_addr priv = addr("10.0.0.1"), md = addr("169.254.169.254");
    struct cq_net_addr ula = addr("fd00::1"), mapped = addr("::ffff:127.0.0.1");
    ck_assert_uint_eq(cq_resolver_decide(&p, &g, "a.test", &pub, ports, 8), 1);
    ck_assert_uint_eq(ports[0], 0);
    const struct cq_net_addr *never[] = {&lo, &priv, &md, &ula, &mapped};
    for (size_t i = 0; i < 5; i++)
        ck_assert_uint_eq(cq_resolver_decide(&p, &g, "a.test", never[i], ports, 8), 0);
    /* network_private opens a range: then a name may answer it. */
    struct cq_error err;
    ck_assert_int_eq(cq_net_rules_add(&p.private_ok, "10.0.0.0/8", &err), 0);
    ck_assert_uint_eq(cq_resolver_decide(&p, &g, "a.test", &priv, ports, 8), 1);
    ck_assert_int_eq(cq_net_rules_add(&p.deny, "198.51.100.80", &err), 0);
    ck_assert_uint_eq(cq_resolver_decide(&p, &g, "a.test", &pub, ports, 8), 0);

    cq_netpolicy_init(&p);
    g.mode = CQ_NETWORK_ALLOWLIST;
    const char *list[] = {"files.example.test:80", "*.example.test:443", "files.example.test:8080",
                          "api.example.test", "198.51.100.0/24"};
    for (size_t i = 0; i < 5; i++)
        ck_assert_int_eq(cq_net_rules_add(&g.allow, list[i], &err), 0);
    size_t n = cq_resolver_decide(&p, &g, "FILES.example.test", &pub, ports, 8);
    ck_assert_uint_eq(n, 3); /* each covering entry's port */
    ck_assert_uint_eq(ports[0], 80);
    ck_assert_uint_eq(ports[1], 443);
    ck_assert_uint_eq(ports[2], 8080);
    n = cq_resolver_decide(&p, &g, "api.example.test", &pub, ports, 8);
    ck_assert_uint_eq(n, 1); /* any port covers the suffix's 443 */
    ck_assert_uint_eq(ports[0], 0);
    /* A CIDR entry is not a name: a name it does not list answers nothing. */
    ck_assert_uint_eq(cq_resolver_decide(&p, &g, "echo.test", &pub, ports, 8), 0);
    ck_assert_uint_eq(cq_resolver_decide(&p, &g, "example.test", &pub, ports, 8), 0);
    /* Rebinding: a listed name answering loopback or a private address gets nothing. */
    ck_assert_uint_eq(cq_resolver_decide(&p, &g, "api.example.test", &lo, ports, 8), 0);
    ck_assert_uint_eq(cq_resolver_decide(&p, &g, "api.example.test", &priv, ports, 8), 0);
    ck_assert_uint_eq(cq_resolver_decide(&p, &g, "api.example.test", &md, ports, 8), 0);
    /* network_private opens a listed name's private answers (an internal name), with
     * the entries' ports; other private ranges and the always-refused classes stay
     * stripped. */
    ck_assert_int_eq(cq_net_rules_add(&p.private_ok, "10.0.0.0/8", &err), 0);
    n = cq_resolver_decide(&p, &g, "api.example.test", &priv, ports, 8);
    ck_assert_uint_eq(n, 1);
    ck_assert_uint_eq(ports[0], 0);
    n = cq_resolver_decide(&p, &g, "files.example.test", &priv, ports, 8);
    ck_assert_uint_eq(n, 3);
    ck_assert_uint_eq(ports[0], 80);
    struct cq_net_addr other = addr("192.168.1.1"), ula_in = addr("fd00::1");
    ck_assert_uint_eq(cq_resolver_decide(&p, &g, "api.example.test", &other, ports, 8), 0);
    ck_assert_uint_eq(cq_resolver_decide(&p, &g, "api.example.test", &ula_in, ports, 8), 0);
    ck_assert_uint_eq(cq_resolver_decide(&p, &g, "api.example.test", &lo, ports, 8), 0);
    ck_assert_uint_eq(cq_resolver_decide(&p, &g, "api.example.test", &md, ports, 8), 0);
    ck_assert_uint_eq(cq_resolver_decide(&p, &g, "echo.test", &priv, ports, 8), 0);
    /* A portless entry takes network_private's port; an entry on another port none. */
    cq_netpolicy_init(&p);
    ck_assert_int_eq(cq_net_rules_add(&p.private_ok, "10.0.0.0/24:5432", &err), 0);
    n = cq_resolver_decide(&p, &g, "api.example.test", &priv, ports, 8);
    ck_assert_uint_eq(n, 1);
    ck_assert_uint_eq(ports[0], 5432);
    ck_assert_uint_eq(cq_resolver_decide(&p, &g, "files.example.test", &priv, ports, 8), 0);
    /* The host's own address and network_deny stay refused inside network_private. */
    p.host[0] = priv;
    p.n_host = 1;
    ck_assert_uint_eq(cq_resolver_decide(&p, &g, "api.example.test", &priv, ports, 8), 0);
    p.n_host = 0;
    ck_assert_int_eq(cq_net_rules_add(&p.deny, "10.0.0.0/30", &err), 0);
    ck_assert_uint_eq(cq_resolver_decide(&p, &g, "api.example.test", &priv, ports, 8), 0);
    cq_netpolicy_init(&p);
    /* network_deny: never answered, on the ports it names. */
    ck_assert_int_eq(cq_net_rules_add(&p.deny, "198.51.100.80:443", &err), 0);
    n = cq_resolver_decide(&p, &g, "files.example.test", &pub, ports, 8);
    ck_assert_uint_eq(n, 2);
    ck_assert_uint_eq(ports[0], 80);
    ck_assert_uint_eq(ports[1], 8080);
    g.mode = CQ_NETWORK_NONE;
    ck_assert_uint_eq(cq_resolver_decide(&p, &g, "api.example.test", &pub, ports, 8), 0);
}
END_TEST

START_TEST(host_upstream)
{
    char path[] = "/tmp/cq-resolv-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    const char *text = "# comment\nsearch example.test\nnameserver not-an-ip\n"
                       "nameserver 203.0.113.53\nnameserver 198.51.100.53\n";
    ck_assert_int_eq(write(fd, text, strlen(text)), (int)strlen(text));
    close(fd);
    char buf[64];
    ck_assert_int_eq(cq_resolver_host_upstream(path, buf, sizeof(buf)), 0);
    ck_assert_str_eq(buf, "203.0.113.53");
    unlink(path);
    ck_assert_int_eq(cq_resolver_host_upstream(path, buf, sizeof(buf)), -1);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("dns");
    TCase *tc = tcase_create("wire");
    tcase_add_test(tc, queries_are_read);
    tcase_add_test(tc, bad_queries_are_refused_or_dropped);
    tcase_add_test(tc, error_replies_echo_the_question);
    tcase_add_test(tc, replies_are_rebuilt_with_the_chain_only);
    tcase_add_test(tc, bad_replies_are_refused);
    tcase_add_test(tc, truncation);
    tcase_add_test(tc, tcp_framing);
    tcase_add_test(tc, tcp_replies_take_what_fits_the_prefix);
    suite_add_tcase(s, tc);
    tc = tcase_create("resolver");
    tcase_add_test(tc, decisions);
    tcase_add_test(tc, host_upstream);
    suite_add_tcase(s, tc);
    return cq_unit_run(s, false);
}
