/* sandbox/dns.h - the DNS wire format, as much as codeq's resolver needs (RFC 1035).
 *
 * A pure parser and writer, no system calls: both sides of the resolver send hostile
 * bytes (sandboxed code writes the queries, and the upstream's answers are whatever
 * reached the egress namespace). Queries are checked and their name read; upstream
 * replies are checked against the query they answer and rebuilt from scratch, keeping
 * only the CNAME chain of the question's name and the A/AAAA records of that chain
 * that the caller keeps, with names written uncompressed. Nothing else of a reply
 * (authority, additional, other types) reaches the sandbox.
 */
#ifndef CQ_SANDBOX_DNS_H
#define CQ_SANDBOX_DNS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CQ_DNS_HEADER   12
#define CQ_DNS_UDP_MIN  512   /* what a client without EDNS accepts */
#define CQ_DNS_UDP_MAX  1232  /* the most codeq sends back or accepts (DNS flag day 2020) */
#define CQ_DNS_NAME_MAX 255   /* a name in wire form */
#define CQ_DNS_TCP_MAX  65535 /* a message over TCP: what its 2-byte length prefix says */

enum {
    CQ_DNS_NOERROR = 0,
    CQ_DNS_FORMERR = 1,
    CQ_DNS_SERVFAIL = 2,
    CQ_DNS_NXDOMAIN = 3,
    CQ_DNS_NOTIMP = 4,
    CQ_DNS_REFUSED = 5,
};

enum {
    CQ_DNS_TYPE_A = 1,
    CQ_DNS_TYPE_CNAME = 5,
    CQ_DNS_TYPE_AAAA = 28,
    CQ_DNS_TYPE_OPT = 41,
    CQ_DNS_CLASS_IN = 1,
};

/* A client's query, as read by cq_dns_parse_query. */
struct cq_dns_query {
    uint16_t id;
    bool rd;                       /* recursion desired, echoed */
    size_t end;                    /* offset after the question; 0: none was read */
    char name[CQ_DNS_NAME_MAX];    /* lower case, dots, no trailing dot; "" = root */
    uint8_t wire[CQ_DNS_NAME_MAX]; /* the name in wire form, lower case */
    size_t wire_len;
    uint16_t qtype, qclass;
    uint16_t udp_size; /* the largest reply the client takes: 512, or its EDNS size
                        * within [512, CQ_DNS_UDP_MAX] */
};

/* Reads a query. Returns CQ_DNS_NOERROR with q filled; an rcode to answer with
 * (cq_dns_error_reply; q->id set, q->end 0 when no question could be read); or -1:
 * not a query at all (shorter than a header, or a response), to be dropped. Refused
 * with REFUSED: a class other than IN, zone transfers, names with bytes other than
 * letters, digits, '-' and '_' (so that a label can never hold a dot). */
int cq_dns_parse_query(const uint8_t *msg, size_t len, struct cq_dns_query *q);

/* A reply to q with rcode and no records: its id, and its question when one was read.
 * Returns the length written (at most CQ_DNS_HEADER + 4 + CQ_DNS_NAME_MAX), or 0 when
 * cap is too small. */
size_t cq_dns_error_reply(const struct cq_dns_query *q, int rcode, uint8_t *out, size_t cap);

/* Asked of each A (family AF_INET, 4 bytes) and AAAA (AF_INET6, 16 bytes) record of
 * the question's chain: true keeps it in the reply. */
typedef bool (*cq_dns_keep_fn)(void *ctx, int family, const uint8_t *addr);

/* Checks an upstream reply to q, sent with id upstream_id: a response to a standard
 * query, one question equal to q's (letter case aside), every record of the answer
 * section within the message. Writes into out the reply for the client: q's id, its
 * question, the upstream's rcode, and in the answer section the CNAME records that
 * lead from q's name (at most 16) and the A/AAAA records of those names that keep()
 * keeps, in their order. A reply that does not fit q->udp_size is sent with TC set
 * and no records; so is one the upstream truncated. Returns the length, or 0 when the
 * reply is not valid (the caller drops it and waits, or answers SERVFAIL). */
size_t cq_dns_filter_reply(const uint8_t *resp, size_t len, uint16_t upstream_id,
                           const struct cq_dns_query *q, cq_dns_keep_fn keep, void *ctx,
                           uint8_t *out, size_t cap);

/* DNS over TCP (RFC 1035 4.2.2, RFC 7766): each message is preceded by its length in
 * 2 bytes, and several follow one another on a connection. Looks at the len bytes read
 * so far from one: returns 1 with *msg_len set when a whole message is there (at buf +
 * 2, the next one at buf + 2 + *msg_len), 0 when more must be read, -1 when the prefix
 * announces a message shorter than a header (nothing could answer it: the caller
 * closes the connection). Over TCP a reply's only bound is the prefix: a query given
 * udp_size CQ_DNS_TCP_MAX gets cq_dns_filter_reply's reply whole, if cap allows. */
int cq_dns_tcp_frame(const uint8_t *buf, size_t len, size_t *msg_len);

/* A query for the upstream: q's question with id and recursion desired, no EDNS.
 * Returns the length, or 0 when cap is too small. */
size_t cq_dns_write_query(const struct cq_dns_query *q, uint16_t id, uint8_t *out, size_t cap);

#endif
