/* tests/fuzz/fuzz_dns.c - what a sandbox and an upstream send codeq's resolver
 * (sandbox/dns.c).
 *
 * Input: 2 bytes of query length N, N bytes of query (from the sandbox), the rest a
 * reply (from the upstream; its own id is taken as the one asked, so that replies get
 * past the id check). Checked for every input:
 *  - a query that parses has a name of letters, digits, '-', '_' and dots only, and
 *    a client size within [512, 1232]; error replies fit their bound;
 *  - a rebuilt reply carries the client's id and question, is no longer than what the
 *    client takes, and holds only A, AAAA and CNAME records in the answer section,
 *    with uncompressed names, each whole within the reply, nothing in the other
 *    sections; every A/AAAA record in it was kept by keep(); so is the reply rebuilt
 *    for a TCP client (udp_size CQ_DNS_TCP_MAX), which no UDP size bounds;
 *  - the whole input read as DNS over TCP (cq_dns_tcp_frame, message after message):
 *    a whole message lies within what was read, a header at least, and "more to
 *    read" is said only when the prefix announces more than is there. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include "sandbox/dns.h"

static void check(int ok)
{
    if (!ok)
        abort();
}

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

/* keep(): a deterministic half, remembered to compare with the reply. */
struct kept {
    size_t n;
    uint8_t addr[512][16];
};

static bool keep(void *ctx, int family, const uint8_t *addr)
{
    struct kept *k = ctx;
    check(family == AF_INET || family == AF_INET6);
    size_t len = family == AF_INET ? 4 : 16;
    if ((addr[len - 1] & 1) != 0)
        return false;
    if (k->n < 512) {
        memset(k->addr[k->n], 0, 16);
        memcpy(k->addr[k->n], addr, len);
    }
    k->n++;
    return true;
}

static bool was_kept(const struct kept *k, const uint8_t *addr, size_t len)
{
    for (size_t i = 0; i < k->n && i < 512; i++) {
        uint8_t a[16] = {0};
        memcpy(a, addr, len);
        if (memcmp(a, k->addr[i], 16) == 0)
            return true;
    }
    return k->n > 512;
}

/* An uncompressed name at *off within len; moves past it. */
static void plain_name(const uint8_t *m, size_t len, size_t *off)
{
    size_t total = 0;
    for (;;) {
        check(*off < len);
        uint8_t l = m[*off];
        check(l < 64);
        total += 1 + (size_t)l;
        check(total <= CQ_DNS_NAME_MAX);
        *off += 1 + (size_t)l;
        if (l == 0)
            return;
    }
}

static void check_reply(const uint8_t *r, size_t n, const struct cq_dns_query *q,
                        const struct kept *k)
{
    check(n >= CQ_DNS_HEADER && n <= q->udp_size);
    check(get16(r) == q->id && (r[2] & 0x80));
    check(get16(r + 4) == 1 && get16(r + 8) == 0 && get16(r + 10) == 0);
    check(memcmp(r + CQ_DNS_HEADER, q->wire, q->wire_len) == 0);
    size_t off = CQ_DNS_HEADER + q->wire_len + 4;
    check(off <= n);
    for (uint16_t i = 0, an = get16(r + 6); i < an; i++) {
        plain_name(r, n, &off);
        check(off + 10 <= n);
        uint16_t type = get16(r + off), rdlen = get16(r + off + 8);
        off += 10;
        check(off + rdlen <= n);
        if (type == CQ_DNS_TYPE_CNAME) {
            size_t t = off;
            plain_name(r, n, &t);
            check(t == off + rdlen);
        } else {
            check((type == CQ_DNS_TYPE_A && rdlen == 4) ||
                  (type == CQ_DNS_TYPE_AAAA && rdlen == 16));
            check(was_kept(k, r + off, rdlen));
        }
        off += rdlen;
    }
    check(off == n);
}

static void check_frames(const uint8_t *data, size_t size)
{
    uint8_t *copy = malloc(size ? size : 1);
    memcpy(copy, data, size);
    size_t off = 0;
    for (;;) {
        size_t n = 0;
        int f = cq_dns_tcp_frame(copy + off, size - off, &n);
        if (f <= 0) {
            check(f == -1 ? size - off >= 2 && get16(copy + off) < CQ_DNS_HEADER
                          : size - off < 2 || 2 + (size_t)get16(copy + off) > size - off);
            break;
        }
        check(f == 1 && n >= CQ_DNS_HEADER && n == get16(copy + off) && 2 + n <= size - off);
        struct cq_dns_query q;
        cq_dns_parse_query(copy + off + 2, n, &q);
        off += 2 + n;
    }
    free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_frames(data, size);
    if (size < 2)
        return 0;
    size_t qlen = get16(data);
    data += 2;
    size -= 2;
    if (qlen > size)
        qlen = size;
    /* Copies, so that ASan sees reads past the pieces. */
    uint8_t *query = malloc(qlen ? qlen : 1), *reply = malloc(size - qlen ? size - qlen : 1);
    memcpy(query, data, qlen);
    memcpy(reply, data + qlen, size - qlen);
    size_t rlen = size - qlen;

    struct cq_dns_query q;
    int rc = cq_dns_parse_query(query, qlen, &q);
    uint8_t out[CQ_DNS_UDP_MAX];
    if (rc > 0) {
        size_t n = cq_dns_error_reply(&q, rc, out, sizeof(out));
        check(n >= CQ_DNS_HEADER && n <= CQ_DNS_HEADER + 4 + CQ_DNS_NAME_MAX);
    } else if (rc == 0) {
        check(q.udp_size >= CQ_DNS_UDP_MIN && q.udp_size <= CQ_DNS_UDP_MAX);
        check(strspn(q.name, "abcdefghijklmnopqrstuvwxyz0123456789-_.") == strlen(q.name));
        check(cq_dns_write_query(&q, 7, out, sizeof(out)) > 0);
        static struct kept k;
        k.n = 0;
        uint16_t id = rlen >= 2 ? get16(reply) : 0;
        size_t n = cq_dns_filter_reply(reply, rlen, id, &q, keep, &k, out, sizeof(out));
        if (n > 0)
            check_reply(out, n, &q, &k);
        /* The same reply for a TCP client: the prefix's bound only. */
        static uint8_t big[CQ_DNS_TCP_MAX];
        q.udp_size = CQ_DNS_TCP_MAX;
        k.n = 0;
        n = cq_dns_filter_reply(reply, rlen, id, &q, keep, &k, big, sizeof(big));
        if (n > 0)
            check_reply(big, n, &q, &k);
    }
    free(query);
    free(reply);
    return 0;
}
