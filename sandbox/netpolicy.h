/* sandbox/netpolicy.h - what a sandbox's network mode lets it reach (issue 13).
 *
 * Pure decisions, no system calls: parsing destinations (`--allow DEST`), classifying
 * addresses, the operator's policy that bounds what clients may ask for, and the one
 * question the egress filter and codeq's resolver ask: may this sandbox connect to
 * ADDR:PORT over TCP or UDP? docs/security.md, "Network modes (design)", has the
 * mechanism around it.
 *
 * DEST is NAME, *.NAME, IP or CIDR (IPv4 or IPv6), each with an optional :PORT; an IPv6
 * address with a port is written [ADDR]:PORT or [ADDR/LEN]:PORT. `*.NAME` matches names
 * below NAME, not NAME itself. A port applies to TCP and UDP alike; no port: any.
 *
 * Errors: parse and admit return 0, or -1 with err->code CQ_EINVALID and a message
 * naming the input and, for refusals, the operator's rule (its setting's name).
 */
#ifndef CQ_SANDBOX_NETPOLICY_H
#define CQ_SANDBOX_NETPOLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "common/error.h"
#include "sandbox/sandbox.h"

#define CQ_NET_NAME_MAX  253 /* a DNS name without its trailing dot */
#define CQ_NET_MAX_RULES 64  /* entries of one list (an allowlist, a policy's rule list) */
#define CQ_NET_MAX_HOST  32  /* the host's own addresses a policy knows */
#define CQ_NET_DEST_TEXT 320 /* room for any DEST as text, with its NUL */

/* An address; IPv4-mapped IPv6 (::ffff:a.b.c.d) is always stored as IPv4. */
struct cq_net_addr {
    int family;        /* AF_INET or AF_INET6 */
    uint8_t bytes[16]; /* network order; IPv4 in the first 4 */
};

enum cq_net_dest_kind {
    CQ_NET_DEST_NAME,   /* exactly this name */
    CQ_NET_DEST_SUFFIX, /* names below `name` (written *.name) */
    CQ_NET_DEST_CIDR,   /* addr/prefix_len; a single address is /32 or /128 */
};

struct cq_net_dest {
    enum cq_net_dest_kind kind;
    char name[CQ_NET_NAME_MAX + 1]; /* NAME, SUFFIX: lower case, no trailing dot */
    struct cq_net_addr addr;        /* CIDR: host bits are zero */
    uint8_t prefix_len;
    uint16_t port; /* 0: any port */
};

struct cq_net_rules {
    size_t n;
    struct cq_net_dest d[CQ_NET_MAX_RULES];
};

/* Parses one DEST. Refuses what is neither an address nor a valid DNS name
 * ("127.1", "0x7f.0.0.1", "fe80::1%eth0"), CIDRs with host bits set, port 0. */
int cq_net_dest_parse(const char *text, struct cq_net_dest *out, struct cq_error *err);

/* DEST as text (the form it parses from), for messages; always NUL-terminated. */
void cq_net_dest_format(const struct cq_net_dest *d, char *buf, size_t len);

/* A numeric address (no port, no brackets, no zone). Returns 0 or -1. */
int cq_net_addr_parse(const char *text, struct cq_net_addr *out);

/* Adds DEST to a list; CQ_ELIMIT when it holds CQ_NET_MAX_RULES already. */
int cq_net_rules_add(struct cq_net_rules *r, const char *dest, struct cq_error *err);

enum cq_net_class {
    CQ_NET_CLASS_PUBLIC = 0,
    CQ_NET_CLASS_PRIVATE,     /* 10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7 */
    CQ_NET_CLASS_LOOPBACK,    /* 127/8, ::1 */
    CQ_NET_CLASS_LINK_LOCAL,  /* 169.254/16, fe80::/10 */
    CQ_NET_CLASS_MULTICAST,   /* 224/4, ff00::/8 */
    CQ_NET_CLASS_UNSPECIFIED, /* 0/8, ::, 255.255.255.255 */
    CQ_NET_CLASS_RESERVED,    /* the rest that is not global unicast (240/4, 2001::/32, ...) */
};

/* The class of an address by its range alone. 6to4 and NAT64 addresses take the class of
 * the IPv4 address they carry. */
enum cq_net_class cq_net_classify(const struct cq_net_addr *a);
const char *cq_net_class_name(enum cq_net_class c);

/* The i-th IPv4 range that is not public (no two overlap), as "a.b.c.d/len" in buf, for
 * a packet filter's set; false after the last. */
bool cq_net_nonpublic_v4(size_t i, char *buf, size_t len);

/* Modes by name: NONE, PUBLIC, ALLOWLIST (any case). */
int cq_net_mode_parse(const char *text, enum cq_network_mode *out, struct cq_error *err);
const char *cq_net_mode_name(enum cq_network_mode m);
#define CQ_NET_MODE_BIT(m) (1u << (unsigned)(m))

/* The operator's policy. The setting each field comes from is named in refusals. */
struct cq_netpolicy {
    unsigned modes;                    /* network_modes: CQ_NET_MODE_BITs clients may ask for */
    enum cq_network_mode default_mode; /* network_default: when a client names none */
    struct cq_net_rules private_ok;    /* network_private: private destinations opened */
    struct cq_net_rules bounds;        /* network_allow_bounds: what an allowlist may name;
                                        * empty: any public destination */
    struct cq_net_rules deny;          /* network_deny: refused in every mode (the fleet's
                                        * Kafka and Redis on public addresses) */
    struct cq_net_addr host[CQ_NET_MAX_HOST]; /* the host's own addresses: always refused */
    size_t n_host;
    size_t max_allow;              /* network_max_allow: entries in one allowlist */
    size_t max_pinned;             /* network_max_pinned: addresses resolution may pin */
    uint64_t max_bytes_per_second; /* network_max_rate, per sandbox; 0: none */
    uint32_t max_connections;      /* network_max_connections, per sandbox; 0: none */
};

/* Defaults: every mode may be asked for, NONE when none is; no private range opened,
 * no bounds, no deny rules; 64 allow entries, 256 pinned addresses, no rate or
 * connection limit. */
void cq_netpolicy_init(struct cq_netpolicy *p);

/* What a sandbox was granted: its mode and its parsed allowlist. */
struct cq_net_grant {
    enum cq_network_mode mode;
    struct cq_net_rules allow;
};

/* Checks a client's request against the policy and fills out. mode NULL: the policy's
 * default. Refused (CQ_EINVALID, the message names the entry and the rule): a mode the
 * policy does not allow; an allowlist outside ALLOWLIST, an empty one, or one longer
 * than network_max_allow; an entry that does not parse, that covers addresses always
 * refused, a private range network_private does not open, or that falls outside
 * network_allow_bounds. */
int cq_netpolicy_admit(const struct cq_netpolicy *p, const enum cq_network_mode *mode,
                       const char *const *allow, size_t n_allow, struct cq_net_grant *out,
                       struct cq_error *err);

/* A name the sandbox's resolver answered, with one of its addresses. */
struct cq_net_resolved {
    const char *name;
    struct cq_net_addr addr;
};

enum cq_net_verdict {
    CQ_NET_ALLOW = 0,
    CQ_NET_REFUSE_MODE,       /* mode NONE */
    CQ_NET_REFUSE_PROTO,      /* not TCP or UDP, or port 0 */
    CQ_NET_REFUSE_CLASS,      /* loopback, link-local, multicast, unspecified, reserved */
    CQ_NET_REFUSE_HOST,       /* one of the host's own addresses */
    CQ_NET_REFUSE_PRIVATE,    /* a private range network_private does not open */
    CQ_NET_REFUSE_DENY,       /* a network_deny rule */
    CQ_NET_REFUSE_NOT_LISTED, /* ALLOWLIST: neither listed nor answered for a listed name */
};

/* May a sandbox with grant g connect to addr:port over proto (IPPROTO_TCP or
 * IPPROTO_UDP)? In ALLOWLIST, addresses count for a name only when they are among
 * `resolved` (the answers codeq's resolver gave this sandbox): an IP literal that an
 * allowed name does not resolve to is refused. why (may be NULL) gets a message for
 * any refusal, naming the rule. */
enum cq_net_verdict cq_netpolicy_check_connect(const struct cq_netpolicy *p,
                                               const struct cq_net_grant *g,
                                               const struct cq_net_addr *addr, uint16_t port,
                                               int proto, const struct cq_net_resolved *resolved,
                                               size_t n_resolved, struct cq_error *why);

/* ALLOWLIST: does a NAME or *.NAME entry cover name (any port)? Other modes: true
 * unless NONE. For the resolver, which answers nothing else. */
bool cq_netpolicy_name_allowed(const struct cq_net_grant *g, const char *name);

/* Does this one NAME or *.NAME entry cover name? (The resolver pins an answer with the
 * port of each entry that covers the question.) */
bool cq_net_dest_covers_name(const struct cq_net_dest *d, const char *name);

/* Does d (a CIDR) lie wholly inside one private range? What network_private may name:
 * a range reaching past one (10.0.0.0/7, fc00::/6) would open public, multicast or
 * link-local addresses too. */
bool cq_net_dest_private(const struct cq_net_dest *d);

/* Is d a CIDR (IP) entry whose range holds a (its port aside)? */
bool cq_net_dest_covers_addr(const struct cq_net_dest *d, const struct cq_net_addr *a);

#endif
