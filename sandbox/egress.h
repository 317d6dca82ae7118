/* sandbox/egress.h - joining a sandbox to its egress namespace (private to sandbox/).
 *
 * Network mode PUBLIC: a veth pair from the sandbox's network namespace into the egress
 * namespace, and an nftables table there that lets the sandbox's traffic out to public
 * addresses only (docs/security.md, "Network modes (design)").
 */
#ifndef CQ_SANDBOX_EGRESS_H
#define CQ_SANDBOX_EGRESS_H

#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>
#include "common/error.h"
#include "sandbox/netpolicy.h"
#include "sandbox/sandbox.h"

/* The resolver named in every networked sandbox's /etc/resolv.conf: an address of no
 * slot, translated (DNAT) by the sandbox's table to its own gateway, where codeq's
 * resolver answers (sandbox/resolver.c). It is fixed because the root, with its
 * resolv.conf, is built before the sandbox has a slot. */
#define CQ_EGRESS_DNS "100.126.255.53"

struct cq_egress {
    int slot;                  /* -1: not attached */
    int slot_fd;               /* the slot's lock file, held while attached */
    int netns_fd;              /* the egress namespace */
    int nl;                    /* rtnetlink socket in it */
    int nfnl;                  /* nfnetlink socket in it: counters, and the table's deletion */
    bool table_made;           /* the nftables table exists */
    uint64_t max_rate;         /* bytes per second each way; 0: none */
    uint32_t max_conns;        /* connections at once; 0: none */
    pthread_mutex_t nfnl_lock; /* one request at a time on nfnl */
    struct egress_prep *prep;  /* cq_egress_begin's thread is running */
    pthread_t prep_thread;
};

void cq_egress_init(struct cq_egress *e);

/* Starts the work that needs no sandbox yet, in a thread, so that it overlaps with
 * init's setup: takes a slot and installs its table in cfg->egress_netns. */
int cq_egress_begin(struct cq_egress *e, const struct cq_sandbox_config *cfg, struct cq_error *err);

/* After cq_egress_begin: waits for it, then joins the network namespace of init_pid
 * (the sandbox's) to the egress namespace by the slot's link; the links come up only
 * once the table is in place. On failure, whatever was made stays recorded in e for
 * cq_egress_detach. */
int cq_egress_attach(struct cq_egress *e, const struct cq_sandbox_config *cfg, pid_t init_pid,
                     struct cq_error *err);

/* The egress side's (gateway) and the sandbox's IPv4 addresses of an attached e. */
void cq_egress_addrs(const struct cq_egress *e, struct cq_net_addr *gateway,
                     struct cq_net_addr *sandbox);

/* ALLOWLIST: adds the IP and CIDR entries of allow (DEST; names are skipped), admitted
 * against p, to the filter, in one nftables transaction; p's network_private decides
 * which of them go into the sets consulted before the private ranges are rejected (it
 * must be the policy the table was made with). */
int cq_egress_allow(struct cq_egress *e, const struct cq_netpolicy *p, const char *const *allow,
                    size_t n, struct cq_error *err);

/* ALLOWLIST: lets slot's sandbox reach addrs[i] on ports[i] (0: any) until its table
 * goes, in one transaction in the egress namespace netns_fd. For codeq's resolver,
 * before it releases the answer that named them; safe from any thread. */
int cq_egress_pin(int netns_fd, int slot, const struct cq_net_addr *addrs, const uint16_t *ports,
                  size_t n, struct cq_error *err);

/* Bytes of IP packets (IPv4 and IPv6, headers included) the filter let out of the
 * sandbox and in to it so far. Zeros when not attached. */
int cq_egress_stats(struct cq_egress *e, uint64_t *sent, uint64_t *received, struct cq_error *err);

/* Removes the table and gives the slot back; the link goes with the sandbox's network
 * namespace (call this after the sandbox's init has been reaped). Nothing of it waits
 * for the kernel's deferred cleanup (see egress.c). Safe on a partial attach, and
 * twice. */
void cq_egress_detach(struct cq_egress *e);

#endif
