/* sandbox/netlink.h - the few rtnetlink requests the network modes need (private).
 *
 * A sandbox in PUBLIC or ALLOWLIST mode is joined to the egress namespace by a veth
 * pair (docs/security.md, "Network modes (design)"). These calls make and configure
 * such links in any network namespace, named by an fd (/run/netns/NAME, or
 * /proc/PID/ns/net), without entering it: each socket is opened in its namespace once,
 * by a short-lived thread that enters it, and requests then go through that socket.
 */
#ifndef CQ_SANDBOX_NETLINK_H
#define CQ_SANDBOX_NETLINK_H

#include <stdint.h>
#include "common/error.h"
#include "sandbox/netpolicy.h"

/* A NETLINK_ROUTE socket in the namespace of netns_fd (-1: the caller's own). Returns
 * the socket (close it with close()), or -1 with err. */
int cq_nl_open(int netns_fd, struct cq_error *err);

/* A NETLINK_NETFILTER socket in the namespace of netns_fd, for the nf_tables calls
 * below. */
int cq_nfnl_open(int netns_fd, struct cq_error *err);

/* Deletes table `inet <table>` in one committed batch. The commit is quick; what the
 * kernel frees afterwards waits for an RCU grace period, and the next release of any
 * nfnetlink socket of that namespace (this one's close included) waits for that. */
int cq_nft_table_delete(int nfnl, const char *table, struct cq_error *err);

/* The byte count of the named counter object `name` in table `inet <table>`. */
int cq_nft_counter_bytes(int nfnl, const char *table, const char *name, uint64_t *bytes,
                         struct cq_error *err);

/* Creates a veth pair: `name` in the socket's namespace, `peer` in peer_netns_fd's.
 * Both down, without addresses. */
int cq_nl_veth_add(int nl, const char *name, const char *peer, int peer_netns_fd,
                   struct cq_error *err);

/* The link's index in the socket's namespace, or -1 with err (ENODEV). */
int cq_nl_link_index(int nl, const char *name, struct cq_error *err);

int cq_nl_link_up(int nl, int ifindex, struct cq_error *err);

/* Deletes a link (and a veth's peer with it, wherever it is). */
int cq_nl_link_del(int nl, const char *name, struct cq_error *err);

/* Adds addr/prefix_len on the link; IPv6 without duplicate address detection, so that
 * it is usable at once. */
int cq_nl_addr_add(int nl, int ifindex, const struct cq_net_addr *addr, unsigned prefix_len,
                   struct cq_error *err);

/* The default route of addr's family via gateway, through the link. */
int cq_nl_route_default(int nl, int ifindex, const struct cq_net_addr *gateway,
                        struct cq_error *err);

#endif
