/* sandbox/resolver.h - codeq's resolver for networked sandboxes (private to sandbox/).
 *
 * Every sandbox in mode PUBLIC or ALLOWLIST resolves names through codeq: its
 * resolv.conf names CQ_EGRESS_DNS, which its table translates to its gateway, where a
 * UDP socket of this module listens (made in the egress namespace). One thread per
 * process serves every sandbox's sockets. A query is read and checked
 * (sandbox/dns.c); in ALLOWLIST a name no entry covers is answered NXDOMAIN at once;
 * the rest is asked of the upstream resolver from the egress namespace, and its reply
 * is checked against the question and rebuilt with only the question's CNAME chain and
 * those A/AAAA records whose addresses the policy lets the sandbox reach (a name that
 * rebinds to 127.0.0.1 answers nothing). In ALLOWLIST the kept addresses are pinned
 * into the sandbox's filter (cq_egress_pin) before the answer is released.
 */
#ifndef CQ_SANDBOX_RESOLVER_H
#define CQ_SANDBOX_RESOLVER_H

#include "common/error.h"
#include "sandbox/netpolicy.h"

struct cq_resolver;

struct cq_resolver_config {
    int netns_fd;                      /* the egress namespace (duplicated) */
    int slot;                          /* the sandbox's egress slot: its table cq_s<slot> */
    struct cq_net_addr listen;         /* the gateway: where the resolver answers */
    struct cq_net_addr client;         /* the sandbox's address: the only one answered */
    const char *upstream;              /* an IP address; NULL: the host's first nameserver */
    const struct cq_netpolicy *policy; /* copied; NULL: defaults */
    const struct cq_net_grant *grant;  /* copied */
};

/* Starts answering for one sandbox. */
int cq_resolver_start(const struct cq_resolver_config *c, struct cq_resolver **out,
                      struct cq_error *err);

/* Replaces the grant (the late allowlist of a warm sandbox). */
void cq_resolver_set_grant(struct cq_resolver *r, const struct cq_net_grant *g);

/* Stops answering and frees r; queries in flight are dropped. NULL is a no-op. */
void cq_resolver_stop(struct cq_resolver *r);

/* The upstream to use when none is given: the first nameserver of path (a
 * resolv.conf), into buf. Returns 0, or -1 when it names none. */
int cq_resolver_host_upstream(const char *path, char *buf, size_t len);

/* The decision on one answered address, without the network (for unit tests and the
 * resolver alike): may the sandbox with grant g be given addr as an answer for name,
 * and with which ports? ALLOWLIST fills ports[] (0: any port) with those of the
 * entries covering name that policy lets reach addr (a private addr: those
 * network_private opens it on, an entry without a port taking each covering rule's
 * port), and returns how many; PUBLIC
 * returns 1 with ports[0] = 0 when the policy lets it reach addr at all; 0: strip it. */
size_t cq_resolver_decide(const struct cq_netpolicy *p, const struct cq_net_grant *g,
                          const char *name, const struct cq_net_addr *addr, uint16_t *ports,
                          size_t max_ports);

#endif
