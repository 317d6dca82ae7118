/* sandbox/uplink.h - the default way out of network modes PUBLIC and ALLOWLIST
 * (private to sandbox/).
 *
 * Without an operator's egress namespace (cfg->egress_netns), sandboxes leave through
 * one of codeq's own: a network namespace per codeq process, in a user namespace of
 * its own, joined to the host's network by pasta (Debian
 * package passt): user-mode networking that turns the namespace's packets into
 * sockets of the host, so that codeq never changes the host's forwarding, routes or
 * firewall. Sandbox traffic reaches it only through the egress filter
 * (sandbox/egress.c), which holds in that namespace as in an operator's.
 */
#ifndef CQ_SANDBOX_UPLINK_H
#define CQ_SANDBOX_UPLINK_H

#include <stddef.h>
#include "common/error.h"

/* The program that joins the namespace to the host's network. */
#define CQ_UPLINK_PASTA "/usr/bin/pasta"

/* The path of the process's default egress namespace (/proc/PID/ns/net of the process
 * that holds it), made and connected at the first call, and checked at every call.
 * The namespace and pasta end with the calling process, however it ends. Thread-safe. */
int cq_uplink_netns(char *path, size_t len, struct cq_error *err);

#endif
