/* sandbox/dns.c - the DNS wire format for codeq's resolver (see dns.h).
 *
 * Every read is bounds-checked against the message's length. Compression pointers
 * (RFC 1035 4.1.4) must point strictly before the pointer itself, so that a name can
 * never loop; a name is at most 255 bytes in wire form however it is spelt. Replies
 * are rebuilt rather than edited: nothing the upstream sent passes through except
 * what was parsed and checked (the rcode, and the names and addresses of the chain).
 */
#include "sandbox/dns.h"

#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#define FLAG_QR       0x8000
#define FLAG_AA       0x0400
#define FLAG_TC       0x0200
#define FLAG_RD       0x0100
#define FLAG_RA       0x0080
#define OPCODE(f)     (((f) >> 11) & 0xf)
#define RCODE(f)      ((f)&0xf)
#define MAX_CHAIN     16
#define TYPE_IXFR     251
#define TYPE_AXFR     252
#define UPSTREAM_EDNS CQ_DNS_UDP_MAX

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static uint8_t lower(uint8_t c)
{
    return c >= 'A' && c <= 'Z' ? (uint8_t)(c + 32) : c;
}

/* Reads the name at *off into wire (lower case, uncompressed), and moves *off past it
 * (past the first pointer when compressed). Returns 0, or -1 for a malformed name. */
static int read_name(const uint8_t *m, size_t len, size_t *off, uint8_t *wire, size_t *wire_len)
{
    size_t at = *off, w = 0;
    bool jumped = false;
    for (int labels = 0; labels < 128; labels++) {
        if (at >= len)
            return -1;
        uint8_t c = m[at];
        if ((c & 0xc0) == 0xc0) {
            if (at + 1 >= len)
                return -1;
            size_t target = (size_t)(c & 0x3f) << 8 | m[at + 1];
            /* Strictly backwards: the chain of pointers cannot loop. */
            if (target >= at)
                return -1;
            if (!jumped)
                *off = at + 2;
            jumped = true;
            at = target;
            continue;
        }
        if (c & 0xc0)
            return -1; /* 0x40 and 0x80: extended label types, obsolete */
        if (at + 1 + c > len || w + 1 + c > CQ_DNS_NAME_MAX)
            return -1;
        wire[w++] = c;
        for (size_t i = 0; i < c; i++)
            wire[w++] = lower(m[at + 1 + i]);
        at += 1 + (size_t)c;
        if (c == 0) {
            if (!jumped)
                *off = at;
            *wire_len = w;
            return 0;
        }
    }
    return -1;
}

/* The wire name as text with dots; -1 when a label holds anything but letters,
 * digits, '-' and '_'. */
static int name_text(const uint8_t *wire, char *text, size_t cap)
{
    size_t t = 0;
    for (size_t at = 0; wire[at] != 0; at += 1 + wire[at]) {
        if (t > 0)
            text[t++] = '.';
        for (size_t i = 1; i <= wire[at]; i++) {
            uint8_t c = wire[at + i];
            if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_'))
                return -1;
            if (t + 2 > cap)
                return -1;
            text[t++] = (char)c;
        }
    }
    text[t] = '\0';
    return 0;
}

int cq_dns_parse_query(const uint8_t *msg, size_t len, struct cq_dns_query *q)
{
    memset(q, 0, sizeof(*q));
    if (len < CQ_DNS_HEADER)
        return -1;
    uint16_t flags = get16(msg + 2);
    if (flags & FLAG_QR)
        return -1; /* never answer an answer: no reflection loops */
    q->id = get16(msg);
    q->rd = (flags & FLAG_RD) != 0;
    q->udp_size = CQ_DNS_UDP_MIN;
    if (OPCODE(flags) != 0)
        return CQ_DNS_NOTIMP;
    if (get16(msg + 4) != 1 || get16(msg + 6) != 0 || get16(msg + 8) != 0 || get16(msg + 10) > 1)
        return CQ_DNS_FORMERR;
    size_t off = CQ_DNS_HEADER;
    if (read_name(msg, len, &off, q->wire, &q->wire_len) < 0 || off + 4 > len)
        return CQ_DNS_FORMERR;
    q->qtype = get16(msg + off);
    q->qclass = get16(msg + off + 2);
    off += 4;
    q->end = off;
    if (get16(msg + 10) == 1) {
        /* The one additional record a query may carry: EDNS's OPT, on the root. */
        uint8_t wire[CQ_DNS_NAME_MAX];
        size_t wl;
        if (read_name(msg, len, &off, wire, &wl) < 0 || wl != 1 || off + 10 > len ||
            get16(msg + off) != CQ_DNS_TYPE_OPT)
            return CQ_DNS_FORMERR;
        uint16_t size = get16(msg + off + 2);
        q->udp_size = size < CQ_DNS_UDP_MIN   ? CQ_DNS_UDP_MIN
                      : size > CQ_DNS_UDP_MAX ? CQ_DNS_UDP_MAX
                                              : size;
    }
    if (q->qclass != CQ_DNS_CLASS_IN || q->qtype == TYPE_AXFR || q->qtype == TYPE_IXFR)
        return CQ_DNS_REFUSED;
    if (name_text(q->wire, q->name, sizeof(q->name)) < 0)
        return CQ_DNS_REFUSED;
    return CQ_DNS_NOERROR;
}

/* Header and question of a reply to q; returns the offset after them, or 0. */
static size_t reply_head(const struct cq_dns_query *q, uint16_t flags, uint8_t *out, size_t cap)
{
    size_t need = CQ_DNS_HEADER + (q->end ? q->wire_len + 4 : 0);
    if (cap < need)
        return 0;
    memset(out, 0, CQ_DNS_HEADER);
    put16(out, q->id);
    put16(out + 2, (uint16_t)(FLAG_QR | FLAG_RA | (q->rd ? FLAG_RD : 0) | flags));
    if (q->end == 0)
        return CQ_DNS_HEADER;
    put16(out + 4, 1);
    memcpy(out + CQ_DNS_HEADER, q->wire, q->wire_len);
    put16(out + CQ_DNS_HEADER + q->wire_len, q->qtype);
    put16(out + CQ_DNS_HEADER + q->wire_len + 2, q->qclass);
    return need;
}

size_t cq_dns_error_reply(const struct cq_dns_query *q, int rcode, uint8_t *out, size_t cap)
{
    return reply_head(q, (uint16_t)(rcode & 0xf), out, cap);
}

size_t cq_dns_write_query(const struct cq_dns_query *q, uint16_t id, uint8_t *out, size_t cap)
{
    size_t need = CQ_DNS_HEADER + q->wire_len + 4 + 11;
    if (cap < need || q->end == 0)
        return 0;
    memset(out, 0, need);
    put16(out, id);
    put16(out + 2, FLAG_RD);
    put16(out + 4, 1);
    put16(out + 10, 1);
    uint8_t *p = out + CQ_DNS_HEADER;
    memcpy(p, q->wire, q->wire_len);
    p += q->wire_len;
    put16(p, q->qtype);
    put16(p + 2, q->qclass);
    p += 4;
    /* OPT: root name, type, the size codeq takes, no flags (no DNSSEC: the reply is
     * rebuilt anyway, so signatures could not be checked by the sandbox). */
    p[0] = 0;
    put16(p + 1, CQ_DNS_TYPE_OPT);
    put16(p + 3, UPSTREAM_EDNS);
    return need;
}

int cq_dns_tcp_frame(const uint8_t *buf, size_t len, size_t *msg_len)
{
    if (len < 2)
        return 0;
    size_t n = get16(buf);
    if (n < CQ_DNS_HEADER)
        return -1;
    if (len - 2 < n)
        return 0;
    *msg_len = n;
    return 1;
}

static bool same_name(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    return alen == blen && memcmp(a, b, alen) == 0; /* both lower case */
}

struct chain {
    size_t n;
    uint8_t name[MAX_CHAIN + 1][CQ_DNS_NAME_MAX];
    size_t len[MAX_CHAIN + 1];
};

static bool in_chain(const struct chain *c, const uint8_t *w, size_t wl)
{
    for (size_t i = 0; i < c->n; i++)
        if (same_name(c->name[i], c->len[i], w, wl))
            return true;
    return false;
}

/* Appends a record (owner uncompressed, type, IN, ttl, rdata) to out at *at; false
 * when it does not fit. */
static bool put_record(uint8_t *out, size_t cap, size_t *at, const uint8_t *owner, size_t olen,
                       uint16_t type, uint32_t ttl, const uint8_t *rdata, size_t rdlen)
{
    if (*at + olen + 10 + rdlen > cap)
        return false;
    uint8_t *p = out + *at;
    memcpy(p, owner, olen);
    p += olen;
    put16(p, type);
    put16(p + 2, CQ_DNS_CLASS_IN);
    put16(p + 4, (uint16_t)(ttl >> 16));
    put16(p + 6, (uint16_t)ttl);
    put16(p + 8, (uint16_t)rdlen);
    memcpy(p + 10, rdata, rdlen);
    *at += olen + 10 + rdlen;
    return true;
}

static size_t truncated(const struct cq_dns_query *q, int rcode, uint8_t *out, size_t cap)
{
    return reply_head(q, (uint16_t)(FLAG_TC | (rcode & 0xf)), out, cap);
}

size_t cq_dns_filter_reply(const uint8_t *resp, size_t len, uint16_t upstream_id,
                           const struct cq_dns_query *q, cq_dns_keep_fn keep, void *ctx,
                           uint8_t *out, size_t cap)
{
    if (len < CQ_DNS_HEADER || q->end == 0 || get16(resp) != upstream_id)
        return 0;
    uint16_t flags = get16(resp + 2);
    if (!(flags & FLAG_QR) || OPCODE(flags) != 0 || get16(resp + 4) != 1)
        return 0;
    size_t off = CQ_DNS_HEADER;
    uint8_t wire[CQ_DNS_NAME_MAX];
    size_t wl;
    if (read_name(resp, len, &off, wire, &wl) < 0 || off + 4 > len ||
        !same_name(wire, wl, q->wire, q->wire_len) || get16(resp + off) != q->qtype ||
        get16(resp + off + 2) != q->qclass)
        return 0;
    off += 4;
    int rcode = RCODE(flags);
    size_t limit = cap < q->udp_size ? cap : q->udp_size;
    if (flags & FLAG_TC)
        return truncated(q, rcode, out, limit);
    size_t at = reply_head(q, (uint16_t)rcode, out, limit);
    if (at == 0)
        return 0;

    static __thread struct chain chain; /* 4 KiB: not on a small thread's stack */
    chain.n = 1;
    memcpy(chain.name[0], q->wire, q->wire_len);
    chain.len[0] = q->wire_len;
    uint16_t kept = 0;
    bool fits = true;
    for (uint16_t i = 0, n = get16(resp + 6); i < n; i++) {
        if (read_name(resp, len, &off, wire, &wl) < 0 || off + 10 > len)
            return 0;
        uint16_t type = get16(resp + off), klass = get16(resp + off + 2);
        uint32_t ttl = (uint32_t)get16(resp + off + 4) << 16 | get16(resp + off + 6);
        size_t rdlen = get16(resp + off + 8);
        size_t rd = off + 10;
        if (rd + rdlen > len)
            return 0;
        off = rd + rdlen;
        if (klass != CQ_DNS_CLASS_IN || !in_chain(&chain, wire, wl))
            continue; /* not about the question: never passed on */
        if (type == CQ_DNS_TYPE_CNAME) {
            uint8_t target[CQ_DNS_NAME_MAX];
            size_t tl, toff = rd;
            if (read_name(resp, len, &toff, target, &tl) < 0 || toff != rd + rdlen)
                return 0;
            if (in_chain(&chain, target, tl))
                continue;
            if (chain.n == MAX_CHAIN + 1)
                return 0; /* longer than any resolver follows */
            memcpy(chain.name[chain.n], target, tl);
            chain.len[chain.n++] = tl;
            fits = fits && put_record(out, limit, &at, wire, wl, type, ttl, target, tl);
            kept++;
        } else if ((type == CQ_DNS_TYPE_A && rdlen == 4) ||
                   (type == CQ_DNS_TYPE_AAAA && rdlen == 16)) {
            if (!keep(ctx, type == CQ_DNS_TYPE_A ? AF_INET : AF_INET6, resp + rd))
                continue;
            fits = fits && put_record(out, limit, &at, wire, wl, type, ttl, resp + rd, rdlen);
            kept++;
        }
    }
    if (!fits)
        return truncated(q, rcode, out, limit);
    put16(out + 6, kept);
    return at;
}
