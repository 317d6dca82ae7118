/* sandbox/egress.c - network mode PUBLIC: the sandbox's way out, and its filter.
 *
 * The sandbox's network namespace (made by its init, with only `lo`) gets `eth0`, one
 * end of a veth pair whose other end, `cqe<slot>`, is in the egress namespace. Each
 * sandbox holds a slot (a number, locked with flock on /run/codeq/egress/slot-<n> for
 * as long as it lives, so a killed supervisor's slot frees itself; a normal user's codeq,
 * whose egress namespace is its own (rootless.c), keeps them in memory), which gives it its
 * link names, its nftables table `inet cq_s<slot>`, a /30 of 100.127.0.0/16 and a /64
 * of fd63:6f64:6571::/48 (codeq's unique local prefix): .1 and ::1 on the egress side,
 * .2 and ::2 in the sandbox, with default routes via the former.
 *
 * The table, in the egress namespace, is installed before any link is up and before
 * sandboxed code runs. For traffic from the sandbox's link it:
 *  - drops any source but the sandbox's addresses (raw sockets are denied by seccomp
 *    anyway; this does not depend on it);
 *  - rejects the operator's network_deny and the host's addresses, then lets through
 *    what network_private opens: in PUBLIC all of it, in ALLOWLIST only what the list
 *    or the resolver gave this sandbox inside it (chain vpc, see policy_head);
 *  - rejects every non-public IPv4 range (sandbox/netpolicy.c's classes: loopback,
 *    link-local with 169.254.169.254, private, CGNAT and with it every other sandbox's
 *    link, multicast, reserved), every IPv6 address outside global unicast (so also
 *    ULAs and every other sandbox's, link-local, multicast, IPv4-mapped and NAT64),
 *    Teredo and 6to4, and the host's own addresses, with a TCP reset or an ICMP error
 *    so that code fails at once instead of hanging;
 *  - rejects TCP and UDP to the egress namespace itself, and anything but TCP and UDP;
 *  - forwards the rest, masqueraded to the egress namespace's own address;
 * and for traffic towards the sandbox's link it lets through only replies of
 * connections the sandbox opened: nothing can connect in.
 * The egress namespace gets IPv4 and IPv6 forwarding on (in that namespace only).
 *
 * A second block in the same table (write_meter) counts the bytes the filter passed,
 * each way, and holds the operator's rate and connection limits.
 *
 * Every netlink socket and the nftables context are made by a thread that entered the
 * egress (or sandbox) namespace, so the caller's threads never change namespace. The
 * table is made by a thread started while the sandbox's init builds its root
 * (cq_egress_begin); teardown waits for nothing the kernel defers (cq_egress_detach).
 */
#define _GNU_SOURCE
#include "sandbox/egress.h"
#include "sandbox/netlink.h"
#include "sandbox/netpolicy.h"
#include "sandbox/rootless.h"
#include "common/cleanup.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <linux/nsfs.h>
#include <netinet/in.h>
#include <nftables/libnftables.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define SLOT_DIR    "/run/codeq/egress"
#define MAX_SLOTS   16384 /* /30s in 100.127.0.0/16 */
#define RULESET_MAX 65536
#define HOST_ADDRS  64

void cq_egress_init(struct cq_egress *e)
{
    e->slot = -1;
    e->slot_fd = -1;
    e->netns_fd = -1;
    e->nl = -1;
    e->nfnl = -1;
    e->table_made = false;
    e->max_rate = 0;
    e->max_conns = 0;
    e->prep = NULL;
    pthread_mutex_init(&e->nfnl_lock, NULL);
}

/* IPv6: fd63:6f64:6571:<slot>::<host>/64, a unique local prefix of codeq's, masqueraded
 * like the IPv4 link. */
static struct cq_net_addr slot_addr6(int slot, int host)
{
    struct cq_net_addr a = {.family = AF_INET6};
    static const uint8_t prefix[6] = {0xfd, 0x63, 0x6f, 0x64, 0x65, 0x71};
    memcpy(a.bytes, prefix, sizeof(prefix));
    a.bytes[6] = (uint8_t)(slot >> 8);
    a.bytes[7] = (uint8_t)slot;
    a.bytes[15] = (uint8_t)host;
    return a;
}

/* 100.127.0.0 + 4 * slot + host (1: egress side, 2: sandbox). */
static struct cq_net_addr slot_addr(int slot, int host)
{
    uint32_t v = (100u << 24 | 127u << 16) + 4u * (uint32_t)slot + (uint32_t)host;
    struct cq_net_addr a = {.family = AF_INET};
    v = htonl(v);
    memcpy(a.bytes, &v, 4);
    return a;
}

static void addr_text(const struct cq_net_addr *a, char *buf, size_t len)
{
    if (inet_ntop(a->family, a->bytes, buf, (socklen_t)len) == NULL)
        snprintf(buf, len, "?");
}

/* --- slots ------------------------------------------------------------------------- */

static int mkdir_private(const char *path, struct cq_error *err)
{
    if (mkdir(path, 0700) < 0 && errno != EEXIST)
        return cq_error_sys(err, errno, "mkdir %s", path);
    return 0;
}

/* A normal user's slots: /run is not theirs, and no other process shares the egress
 * namespace (codeq's own uplink; an operator's namespace cannot be entered without
 * root), so the slots are this process's alone. */
static pthread_mutex_t local_slots_lock = PTHREAD_MUTEX_INITIALIZER;
static bool local_slots[MAX_SLOTS];

static int take_local_slot(struct cq_egress *e, int from, struct cq_error *err)
{
    pthread_mutex_lock(&local_slots_lock);
    for (int s = from; s < MAX_SLOTS; s++) {
        if (!local_slots[s]) {
            local_slots[s] = true;
            e->slot = s;
            pthread_mutex_unlock(&local_slots_lock);
            return 0;
        }
    }
    pthread_mutex_unlock(&local_slots_lock);
    return cq_error_set(err, CQ_ELIMIT, "all %d egress slots are in use", MAX_SLOTS);
}

/* Takes the lowest slot >= from that nobody holds. */
static int take_slot(struct cq_egress *e, int from, struct cq_error *err)
{
    if (cq_sandbox_ids_mode() != CQ_SANDBOX_IDS_ROOT)
        return take_local_slot(e, from, err);
    if (mkdir_private("/run/codeq", err) < 0 || mkdir_private(SLOT_DIR, err) < 0)
        return -1;
    for (int s = from; s < MAX_SLOTS; s++) {
        char path[64];
        snprintf(path, sizeof(path), SLOT_DIR "/slot-%d", s);
        int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0)
            return cq_error_sys(err, errno, "open %s", path);
        if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
            e->slot = s;
            e->slot_fd = fd;
            return 0;
        }
        close(fd);
    }
    return cq_error_set(err, CQ_ELIMIT, "all %d egress slots are in use", MAX_SLOTS);
}

static void give_slot_back(struct cq_egress *e)
{
    if (e->slot_fd >= 0) {
        close(e->slot_fd); /* releases the lock */
    } else if (e->slot >= 0 && cq_sandbox_ids_mode() != CQ_SANDBOX_IDS_ROOT) {
        pthread_mutex_lock(&local_slots_lock);
        local_slots[e->slot] = false;
        pthread_mutex_unlock(&local_slots_lock);
    }
    e->slot_fd = -1;
    e->slot = -1;
}

/* --- nftables ----------------------------------------------------------------------- */

/* Deleting a table (or anything else) in a transaction is cheap, but the next release of
 * any nftables netlink socket in that namespace waits for the deleted objects to be
 * freed after an RCU grace period (~10 ms here). So the start path deletes nothing but
 * stale tables, and the table of a slot is made fresh. */

/* What a sandbox's mode and its operator's policy add to its table (see "ALLOWLIST
 * and the operator's policy" below). */
struct mode_rules {
    bool allowlist;       /* ALLOWLIST: its sets, and reject what they do not hold */
    bool deny;            /* network_deny has IP or CIDR rules: rejected first */
    bool open;            /* PUBLIC: network_private has IP or CIDR rules: let through */
    bool vpc;             /* ALLOWLIST: network_private has IP or CIDR rules: what the
                           * allowlist lists or the resolver pins inside them passes */
    const char *elements; /* "add element" commands for these sets, after the table */
};

struct nft_job {
    int netns_fd;
    struct cq_egress *attach; /* attach: list, sweep, install this slot's table */
    const char *hosts4;       /* attach: the host's addresses, read in the host's namespace */
    const char *hosts6;
    const struct mode_rules *mode; /* attach: the mode's and the policy's sets and rules */
    const char *meter;             /* attach: counters and limits (write_meter) */
    const char *commands;          /* otherwise: these commands as they are */
    int code;
    char error[400];
};

/* libnftables keeps global state behind its contexts: one at a time. */
static pthread_mutex_t nft_lock = PTHREAD_MUTEX_INITIALIZER;

static int write_ruleset(const struct cq_egress *e, const char *hosts4, const char *hosts6,
                         const struct mode_rules *mode, char *buf, size_t len,
                         struct cq_error *err);

static int nft_run(struct nft_ctx *ctx, const char *commands, struct nft_job *job)
{
    if (nft_run_cmd_from_buffer(ctx, commands) == 0)
        return 0;
    job->code = EINVAL;
    const char *msg = nft_ctx_get_error_buffer(ctx);
    snprintf(job->error, sizeof(job->error), "nftables: %s", msg != NULL ? msg : "failed");
    /* nft's messages end with a newline and quote the input: keep the first line. */
    char *nl = strchr(job->error, '\n');
    if (nl != NULL)
        *nl = '\0';
    return -1;
}

/* Deletions of tables left by supervisors killed with SIGKILL (their links went with
 * their sandboxes), appended to cmds: this slot's own old table, and those of slots
 * nobody holds (a slot whose lock can be taken has no live owner). The locks of the
 * latter are taken into held[] and kept until the deletions are committed, so that no
 * new owner can make its table in between and lose it. */
static size_t compose_sweep(const struct cq_egress *e, char *listing, char *cmds, size_t len,
                            int *held, size_t max_held)
{
    size_t n_held = 0;
    char *save = NULL;
    for (char *line = strtok_r(listing, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        int slot;
        char tail;
        if (sscanf(line, "table inet cq_s%d%c", &slot, &tail) != 1 || slot < 0 || slot >= MAX_SLOTS)
            continue;
        if (slot != e->slot) {
            if (n_held == max_held)
                continue;
            char path[64];
            snprintf(path, sizeof(path), SLOT_DIR "/slot-%d", slot);
            int fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
            if (fd < 0)
                continue;
            if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
                close(fd); /* a live owner */
                continue;
            }
            held[n_held++] = fd;
        }
        size_t at = strlen(cmds);
        snprintf(cmds + at, len - at, "delete table inet cq_s%d\n", slot);
    }
    return n_held;
}

static void attach_filter(struct nft_ctx *ctx, struct nft_job *job)
{
    struct cq_egress *e = job->attach;
    /* /proc/sys/net shows the namespace of the thread that opens it: this one. */
    static const char *const forwarding[] = {"/proc/sys/net/ipv4/ip_forward",
                                             "/proc/sys/net/ipv6/conf/all/forwarding"};
    for (size_t i = 0; i < sizeof(forwarding) / sizeof(forwarding[0]); i++) {
        int fd = open(forwarding[i], O_WRONLY | O_CLOEXEC);
        if (fd < 0 || write(fd, "1", 1) != 1) {
            job->code = errno;
            snprintf(job->error, sizeof(job->error),
                     "turn on forwarding in the egress namespace "
                     "(%s): %s",
                     forwarding[i], strerror(errno));
            if (fd >= 0)
                close(fd);
            return;
        }
        close(fd);
    }
    if (nft_run(ctx, "list tables inet\n", job) < 0)
        return;
    const char *out = nft_ctx_get_output_buffer(ctx);
    char *listing = strdup(out != NULL ? out : "");
    char *cmds = calloc(1, RULESET_MAX);
    int held[64];
    size_t n_held = 0;
    struct cq_error err = {0};
    if (listing == NULL || cmds == NULL) {
        job->code = ENOMEM;
        snprintf(job->error, sizeof(job->error), "egress ruleset");
    } else {
        n_held = compose_sweep(e, listing, cmds, RULESET_MAX / 2, held, 64);
        size_t at = strlen(cmds);
        if (write_ruleset(e, job->hosts4, job->hosts6, job->mode, cmds + at, RULESET_MAX - at,
                          &err) < 0) {
            job->code = err.code;
            snprintf(job->error, sizeof(job->error), "%s", err.msg);
        } else if (strlen(cmds) + strlen(job->meter) >= RULESET_MAX) {
            job->code = CQ_EINTERNAL;
            snprintf(job->error, sizeof(job->error), "egress ruleset too long");
        } else {
            strcat(cmds, job->meter); /* the same transaction: no moment without limits */
            nft_run(ctx, cmds, job);
        }
    }
    for (size_t i = 0; i < n_held; i++)
        close(held[i]);
    free(listing);
    free(cmds);
}

static void *nft_in_netns(void *arg)
{
    struct nft_job *job = arg;
    if (setns(job->netns_fd, CLONE_NEWNET) < 0) {
        job->code = errno;
        snprintf(job->error, sizeof(job->error), "enter the egress namespace: %s", strerror(errno));
        return NULL;
    }
    struct nft_ctx *ctx = nft_ctx_new(NFT_CTX_DEFAULT);
    if (ctx == NULL) {
        job->code = ENOMEM;
        snprintf(job->error, sizeof(job->error), "nftables context");
        return NULL;
    }
    nft_ctx_buffer_output(ctx);
    nft_ctx_buffer_error(ctx);
    if (job->attach != NULL)
        attach_filter(ctx, job);
    else
        nft_run(ctx, job->commands, job);
    nft_ctx_free(ctx);
    return NULL;
}

/* Runs a job (commands) in the egress namespace, from a thread that enters it. */
static int run_job(struct nft_job *job, struct cq_error *err)
{
    pthread_t t;
    pthread_mutex_lock(&nft_lock);
    int rc = pthread_create(&t, NULL, nft_in_netns, job);
    if (rc == 0)
        pthread_join(t, NULL);
    pthread_mutex_unlock(&nft_lock);
    if (rc != 0)
        return cq_error_sys(err, rc, "thread for nftables");
    if (job->code != 0)
        return cq_error_set(err, job->code, "%s", job->error);
    return 0;
}

/* The host's own addresses of a family, as nft set elements ("a, b, c"), deduplicated;
 * for IPv6 only public ones (the filter refuses all others anyway). Those of the calling
 * thread's network namespace: call it from the host's. */
static void host_elements(int family, char *buf, size_t len)
{
    buf[0] = '\0';
    struct ifaddrs *list = NULL;
    if (getifaddrs(&list) < 0)
        return;
    char seen[HOST_ADDRS][INET6_ADDRSTRLEN];
    size_t n = 0;
    for (struct ifaddrs *i = list; i != NULL && n < HOST_ADDRS; i = i->ifa_next) {
        if (i->ifa_addr == NULL || i->ifa_addr->sa_family != family)
            continue;
        struct cq_net_addr a = {.family = family};
        if (family == AF_INET)
            memcpy(a.bytes, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, 4);
        else
            memcpy(a.bytes, &((struct sockaddr_in6 *)i->ifa_addr)->sin6_addr, 16);
        if (family == AF_INET6 && cq_net_classify(&a) != CQ_NET_CLASS_PUBLIC)
            continue;
        char text[INET6_ADDRSTRLEN];
        addr_text(&a, text, sizeof(text));
        bool dup = false;
        for (size_t k = 0; k < n && !dup; k++)
            dup = strcmp(seen[k], text) == 0;
        if (dup)
            continue;
        snprintf(seen[n++], INET6_ADDRSTRLEN, "%s", text);
        size_t at = strlen(buf);
        snprintf(buf + at, len - at, "%s%s", at ? ", " : "", text);
    }
    freeifaddrs(list);
}

/* "elements = { ... }" for a set, or nothing for an empty one. */
static void set_elements(const char *list, char *buf, size_t len)
{
    if (list[0] == '\0')
        buf[0] = '\0';
    else
        snprintf(buf, len, "elements = { %s }", list);
}

/* --- ALLOWLIST (issue 13) ------------------------------------------------------------
 *
 * Four sets hold the allowlist's IP and CIDR entries (any port, and address . port),
 * filled at attach or once by cq_egress_allow; four more hold what codeq's resolver
 * pinned for listed names (sandbox/resolver.c), exact addresses added before each
 * answer is released and kept until the table goes with the sandbox. Pins are kept
 * apart from the CIDRs because an interval set refuses an element inside another. */

#define ALLOW_SETS                                                                                 \
    "  set allow4 { type ipv4_addr; flags interval; auto-merge; }\n"                               \
    "  set allow6 { type ipv6_addr; flags interval; auto-merge; }\n"                               \
    "  set allow4p { type ipv4_addr . inet_service; flags interval; }\n"                           \
    "  set allow6p { type ipv6_addr . inet_service; flags interval; }\n"                           \
    "  set pin4 { type ipv4_addr; }\n"                                                             \
    "  set pin6 { type ipv6_addr; }\n"                                                             \
    "  set pin4p { type ipv4_addr . inet_service; }\n"                                             \
    "  set pin6p { type ipv6_addr . inet_service; }\n"

static int s_of(const struct cq_egress *e)
{
    return e->slot;
}

/* The forward chain's last rules: PUBLIC accepts what the rules above let through;
 * ALLOWLIST accepts only what its sets hold and rejects the rest at once. Every
 * refused class and the host were rejected above either way. */
static void allow_tail(int s, bool allowlist, char *buf, size_t len)
{
    if (!allowlist) {
        snprintf(buf, len, "    iifname \"cqe%d\" accept\n", s);
        return;
    }
    snprintf(buf, len,
             "    iifname \"cqe%d\" ip daddr @allow4 accept\n"
             "    iifname \"cqe%d\" ip daddr . th dport @allow4p accept\n"
             "    iifname \"cqe%d\" ip daddr @pin4 accept\n"
             "    iifname \"cqe%d\" ip daddr . th dport @pin4p accept\n"
             "    iifname \"cqe%d\" ip6 daddr @allow6 accept\n"
             "    iifname \"cqe%d\" ip6 daddr . th dport @allow6p accept\n"
             "    iifname \"cqe%d\" ip6 daddr @pin6 accept\n"
             "    iifname \"cqe%d\" ip6 daddr . th dport @pin6p accept\n"
             "    iifname \"cqe%d\" meta l4proto tcp reject with tcp reset\n"
             "    iifname \"cqe%d\" reject with icmpx admin-prohibited\n",
             s, s, s, s, s, s, s, s, s, s);
}

/* Does in's range lie within out's (ports aside)? */
static bool prefix_within(const struct cq_net_dest *in, const struct cq_net_dest *out)
{
    if (in->addr.family != out->addr.family || in->prefix_len < out->prefix_len)
        return false;
    for (unsigned bit = 0; bit < out->prefix_len; bit++) {
        uint8_t m = (uint8_t)(0x80 >> (bit % 8));
        if ((in->addr.bytes[bit / 8] & m) != (out->addr.bytes[bit / 8] & m))
            return false;
    }
    return true;
}

static bool cidr_inside(const struct cq_net_dest *in, const struct cq_net_dest *out)
{
    return prefix_within(in, out) && (out->port == 0 || in->port == out->port);
}

/* One "add element" command per set for the IP and CIDR entries among allow (names are
 * the resolver's); nothing when there are none. Entries inside another that already
 * covers their port are left out: a set of intervals refuses overlaps. */
static int set_commands(int s, const char *prefix, const struct cq_net_dest *d, size_t n, char *buf,
                        size_t len, struct cq_error *err)
{
    static const char *const sets[4] = {"4", "6", "4p", "6p"};
    for (int set = 0; set < 4; set++) {
        int family = set % 2 == 0 ? AF_INET : AF_INET6;
        bool ported = set >= 2, first = true;
        for (size_t i = 0; i < n; i++) {
            if (d[i].kind != CQ_NET_DEST_CIDR || d[i].addr.family != family ||
                (d[i].port != 0) != ported)
                continue;
            bool covered = false;
            for (size_t k = 0; k < n && !covered; k++)
                covered = k != i && d[k].kind == CQ_NET_DEST_CIDR && cidr_inside(&d[i], &d[k]) &&
                          (!cidr_inside(&d[k], &d[i]) || k < i);
            if (covered)
                continue;
            char a[INET6_ADDRSTRLEN];
            addr_text(&d[i].addr, a, sizeof(a));
            size_t at = strlen(buf);
            int w = first ? snprintf(buf + at, len - at, "add element inet cq_s%d %s%s { ", s,
                                     prefix, sets[set])
                          : snprintf(buf + at, len - at, ", ");
            at += w > 0 ? (size_t)w : 0;
            if (at < len)
                w = ported
                        ? snprintf(buf + at, len - at, "%s/%u . %u", a, d[i].prefix_len, d[i].port)
                        : snprintf(buf + at, len - at, "%s/%u", a, d[i].prefix_len);
            if (at >= len || w < 0 || at + (size_t)w >= len)
                return cq_error_set(err, CQ_EINTERNAL, "allowlist longer than %zu bytes", len);
            first = false;
        }
        if (!first) {
            size_t at = strlen(buf);
            if (snprintf(buf + at, len - at, " }\n") >= (int)(len - at))
                return cq_error_set(err, CQ_EINTERNAL, "allowlist longer than %zu bytes", len);
        }
    }
    return 0;
}

/* The allowlist's IP and CIDR entries into its sets. Without vpc (network_private has
 * no IP or CIDR rule) every entry is public (cq_netpolicy_admit refuses the rest) and
 * goes into the allow sets. With it, an entry that reaches into a network_private
 * range goes into the vpc sets too, which the filter consults only for addresses
 * inside those ranges (the `open` sets), before it rejects the private ranges; an
 * entry wholly inside one goes there only. The allow sets are consulted after every
 * non-public range was rejected, so the private part of an entry can never pass
 * through them. */
static int allow_commands(int s, const struct cq_netpolicy *p, bool vpc,
                          const struct cq_net_dest *d, size_t n, char *buf, size_t len,
                          struct cq_error *err)
{
    buf[0] = '\0';
    struct cq_net_dest *pub = calloc(n > 0 ? n : 1, sizeof(*pub));
    struct cq_net_dest *priv = calloc(n > 0 ? n : 1, sizeof(*priv));
    size_t n_pub = 0, n_priv = 0;
    int rc = 0;
    if (pub == NULL || priv == NULL)
        rc = cq_error_sys(err, ENOMEM, "allowlist");
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (d[i].kind != CQ_NET_DEST_CIDR)
            continue;
        bool touches = false, inside = false;
        for (size_t r = 0; vpc && r < p->private_ok.n; r++) {
            const struct cq_net_dest *o = &p->private_ok.d[r];
            if (o->kind != CQ_NET_DEST_CIDR)
                continue;
            if (prefix_within(&d[i], o))
                inside = touches = true;
            else if (prefix_within(o, &d[i]))
                touches = true;
        }
        if (!inside)
            pub[n_pub++] = d[i];
        if (touches)
            priv[n_priv++] = d[i];
    }
    if (rc == 0)
        rc = set_commands(s, "allow", pub, n_pub, buf, len, err);
    if (rc == 0)
        rc = set_commands(s, "vpc", priv, n_priv, buf, len, err);
    free(pub);
    free(priv);
    return rc;
}

/* The operator's policy in the filter: network_deny's IP and CIDR rules are rejected
 * before anything else (the fleet's Kafka and Redis on public addresses), then the
 * host's own addresses; in PUBLIC network_private's are let through before the
 * private ranges are rejected (codeq's "VPC" mode). Names in either are the
 * resolver's business (answers are checked against the whole policy).
 *
 * ALLOWLIST with network_private (vpc): an address inside network_private's ranges
 * (the same `open` sets, used here only as a gate, never to accept) goes to chain
 * `vpc`, which accepts it only if the allowlist lists it (sets vpc4 ...) or the
 * resolver pinned it for a listed name (vpin4 ...), and otherwise returns to the
 * forward chain, where the private ranges are rejected. So a private address passes
 * only when the operator opened it AND this sandbox was given it, each checked by the
 * filter itself and not only by cq_netpolicy_admit and the resolver that fill the
 * sets. Private pins have sets of their own: a public pin can never open a private
 * address, whatever the resolver did. */
#define POLICY_SETS(p)                                                                             \
    "  set " p "4 { type ipv4_addr; flags interval; auto-merge; }\n"                               \
    "  set " p "6 { type ipv6_addr; flags interval; auto-merge; }\n"                               \
    "  set " p "4p { type ipv4_addr . inet_service; flags interval; }\n"                           \
    "  set " p "6p { type ipv6_addr . inet_service; flags interval; }\n"

#define VPC_SETS                                                                                   \
    POLICY_SETS("vpc")                                                                             \
    "  set vpin4 { type ipv4_addr; }\n"                                                            \
    "  set vpin6 { type ipv6_addr; }\n"                                                            \
    "  set vpin4p { type ipv4_addr . inet_service; }\n"                                            \
    "  set vpin6p { type ipv6_addr . inet_service; }\n"                                            \
    "  chain vpc {\n"                                                                              \
    "    ip daddr @vpc4 accept\n"                                                                  \
    "    ip daddr . th dport @vpc4p accept\n"                                                      \
    "    ip daddr @vpin4 accept\n"                                                                 \
    "    ip daddr . th dport @vpin4p accept\n"                                                     \
    "    ip6 daddr @vpc6 accept\n"                                                                 \
    "    ip6 daddr . th dport @vpc6p accept\n"                                                     \
    "    ip6 daddr @vpin6 accept\n"                                                                \
    "    ip6 daddr . th dport @vpin6p accept\n"                                                    \
    "  }\n"

static void policy_head(int s, const struct mode_rules *mode, char *head, size_t hlen, char *sets,
                        size_t slen)
{
    head[0] = sets[0] = '\0';
    snprintf(sets, slen, "%s%s%s%s", mode->allowlist ? ALLOW_SETS : "",
             mode->deny ? POLICY_SETS("deny") : "",
             mode->open || mode->vpc ? POLICY_SETS("open") : "", mode->vpc ? VPC_SETS : "");
    size_t at = 0;
    if (mode->deny)
        for (int i = 0; i < 4; i++) {
            static const char *const match[4] = {"ip daddr @deny4", "ip daddr . th dport @deny4p",
                                                 "ip6 daddr @deny6",
                                                 "ip6 daddr . th dport @deny6p"};
            int w = snprintf(head + at, hlen - at,
                             "    iifname \"cqe%d\" %s meta l4proto tcp reject with tcp reset\n"
                             "    iifname \"cqe%d\" %s reject with icmpx admin-prohibited\n",
                             s, match[i], s, match[i]);
            at += w > 0 && (size_t)w < hlen - at ? (size_t)w : 0;
        }
    if (mode->open || mode->vpc) {
        /* The host's own addresses stay refused even inside an opened range. */
        const char *verdict = mode->vpc ? "jump vpc" : "accept";
        int w =
            snprintf(head + at, hlen - at,
                     "    iifname \"cqe%d\" ip daddr @host reject with icmpx admin-prohibited\n"
                     "    iifname \"cqe%d\" ip6 daddr @host6 reject with icmpx admin-prohibited\n"
                     "    iifname \"cqe%d\" ip daddr @open4 %s\n"
                     "    iifname \"cqe%d\" ip daddr . th dport @open4p %s\n"
                     "    iifname \"cqe%d\" ip6 daddr @open6 %s\n"
                     "    iifname \"cqe%d\" ip6 daddr . th dport @open6p %s\n",
                     s, s, s, verdict, s, verdict, s, verdict, s, verdict);
        (void)w;
    }
}

static bool has_cidr(const struct cq_net_rules *r)
{
    for (size_t i = 0; i < r->n; i++)
        if (r->d[i].kind == CQ_NET_DEST_CIDR)
            return true;
    return false;
}

static int parse_allow(const char *const *allow, size_t n, struct cq_net_dest *d,
                       struct cq_error *err)
{
    if (n > CQ_NET_MAX_RULES)
        return cq_error_set(err, CQ_EINVALID, "at most %d allowlist entries", CQ_NET_MAX_RULES);
    for (size_t i = 0; i < n; i++)
        if (cq_net_dest_parse(allow[i], &d[i], err) < 0)
            return -1;
    return 0;
}

/* The sets, rules and elements cfg's mode and policy add; *elements is the caller's. */
static int mode_rules_of(int slot, const struct cq_sandbox_config *cfg, struct mode_rules *mode,
                         char **elements, struct cq_error *err)
{
    struct cq_netpolicy *defaults = NULL;
    const struct cq_netpolicy *p = cfg->netpolicy;
    size_t n = cfg->network == CQ_NETWORK_ALLOWLIST ? cfg->n_allow : 0;
    struct cq_net_dest *d = calloc(n > 0 ? n : 1, sizeof(*d));
    *elements = calloc(1, RULESET_MAX / 2);
    if (p == NULL && (defaults = malloc(sizeof(*defaults))) != NULL) {
        cq_netpolicy_init(defaults);
        p = defaults;
    }
    int rc = 0;
    if (d == NULL || *elements == NULL || p == NULL)
        rc = cq_error_sys(err, ENOMEM, "egress rules");
    mode->allowlist = cfg->network == CQ_NETWORK_ALLOWLIST;
    if (rc == 0) {
        mode->open = cfg->network == CQ_NETWORK_PUBLIC && has_cidr(&p->private_ok);
        mode->vpc = mode->allowlist && has_cidr(&p->private_ok);
    }
    if (rc == 0 && mode->allowlist)
        rc = parse_allow(cfg->allow, n, d, err);
    if (rc == 0 && mode->allowlist)
        rc = allow_commands(slot, p, mode->vpc, d, n, *elements, RULESET_MAX / 2, err);
    if (rc == 0 && (mode->deny = has_cidr(&p->deny)))
        rc = set_commands(slot, "deny", p->deny.d, p->deny.n, *elements, RULESET_MAX / 2, err);
    if (rc == 0 && (mode->open || mode->vpc))
        rc = set_commands(slot, "open", p->private_ok.d, p->private_ok.n, *elements,
                          RULESET_MAX / 2, err);
    if (*elements != NULL)
        mode->elements = *elements;
    free(d);
    free(defaults);
    return rc;
}

int cq_egress_allow(struct cq_egress *e, const struct cq_netpolicy *p, const char *const *allow,
                    size_t n, struct cq_error *err)
{
    if (e->slot < 0 || !e->table_made)
        return cq_error_set(err, CQ_EINVALID, "the sandbox has no egress filter");
    struct cq_net_dest *d = calloc(n > 0 ? n : 1, sizeof(*d));
    cq_autofree char *cmds = malloc(RULESET_MAX);
    if (d == NULL || cmds == NULL) {
        free(d);
        return cq_error_sys(err, ENOMEM, "allowlist");
    }
    int rc = parse_allow(allow, n, d, err);
    if (rc == 0)
        rc = allow_commands(e->slot, p, has_cidr(&p->private_ok), d, n, cmds, RULESET_MAX, err);
    free(d);
    if (rc < 0 || cmds[0] == '\0')
        return rc;
    struct nft_job job = {.netns_fd = e->netns_fd, .commands = cmds};
    return run_job(&job, err);
}

int cq_egress_pin(int netns_fd, int slot, const struct cq_net_addr *addrs, const uint16_t *ports,
                  size_t n, struct cq_error *err)
{
    /* One transaction: either every address of the answer is pinned, or none. */
    size_t len = 128 + n * (INET6_ADDRSTRLEN + 64);
    cq_autofree char *cmds = malloc(len);
    if (cmds == NULL)
        return cq_error_sys(err, ENOMEM, "pin");
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        char a[INET6_ADDRSTRLEN];
        addr_text(&addrs[i], a, sizeof(a));
        /* A private address (inside network_private, or the resolver would not pin it)
         * goes into the vpc chain's sets, the only ones consulted before the private
         * ranges are rejected; a table without them (no network_private) makes the
         * transaction fail, and the answer is not given. */
        const char *v = cq_net_classify(&addrs[i]) == CQ_NET_CLASS_PRIVATE ? "v" : "";
        const char *set = addrs[i].family == AF_INET ? (ports[i] ? "pin4p" : "pin4")
                                                     : (ports[i] ? "pin6p" : "pin6");
        int w = ports[i]
                    ? snprintf(cmds + at, len - at, "add element inet cq_s%d %s%s { %s . %u }\n",
                               slot, v, set, a, ports[i])
                    : snprintf(cmds + at, len - at, "add element inet cq_s%d %s%s { %s }\n", slot,
                               v, set, a);
        if (w < 0 || (size_t)w >= len - at)
            return cq_error_set(err, CQ_EINTERNAL, "pin commands");
        at += (size_t)w;
    }
    if (at == 0)
        return 0;
    struct nft_job job = {.netns_fd = netns_fd, .commands = cmds};
    return run_job(&job, err);
}

static int write_ruleset(const struct cq_egress *e, const char *hosts4, const char *hosts6,
                         const struct mode_rules *mode, char *buf, size_t len, struct cq_error *err)
{
    char refused[512] = "", range[CQ_NET_DEST_TEXT];
    for (size_t i = 0; cq_net_nonpublic_v4(i, range, sizeof(range)); i++) {
        size_t at = strlen(refused);
        snprintf(refused + at, sizeof(refused) - at, "%s%s", i ? ", " : "", range);
    }
    struct cq_net_addr sb = slot_addr(e->slot, 2), sb6 = slot_addr6(e->slot, 2);
    char sbt[INET_ADDRSTRLEN], sbt6[INET6_ADDRSTRLEN];
    char set4[HOST_ADDRS * INET6_ADDRSTRLEN + 32], set6[HOST_ADDRS * INET6_ADDRSTRLEN + 32];
    addr_text(&sb, sbt, sizeof(sbt));
    addr_text(&sb6, sbt6, sizeof(sbt6));
    struct cq_net_addr gw = slot_addr(e->slot, 1);
    char gwt[INET_ADDRSTRLEN];
    addr_text(&gw, gwt, sizeof(gwt));
    /* PUBLIC lets the rest out; ALLOWLIST only what its sets hold. */
    char tail[1024];
    allow_tail(s_of(e), mode->allowlist, tail, sizeof(tail));
    char head[2048], sets[4096];
    policy_head(s_of(e), mode, head, sizeof(head), sets, sizeof(sets));
    set_elements(hosts4, set4, sizeof(set4));
    set_elements(hosts6, set6, sizeof(set6));
    int s = e->slot;
    /* IPv6: only global unicast (2000::/3) is public, less 2001::/23 (Teredo and other
     * IETF assignments) and 2002::/16 (6to4, which carries an IPv4 address: refused
     * whole rather than decoded). Neighbour discovery with the egress side is let in,
     * or IPv6 could not work on the link at all. */
    int n = snprintf(
        buf, len,
        "table inet cq_s%d {\n"
        "  set refused { type ipv4_addr; flags interval; elements = { %s } }\n"
        "  set host { type ipv4_addr; %s }\n"
        "  set refused6 { type ipv6_addr; flags interval; elements = { 2001::/23, 2002::/16 } }\n"
        "  set host6 { type ipv6_addr; %s }\n"
        "%s"
        "  chain forward {\n"
        "    type filter hook forward priority filter - 1; policy accept;\n"
        "    iifname \"cqe%d\" meta nfproto ipv4 ip saddr != %s drop\n"
        "    iifname \"cqe%d\" meta nfproto ipv6 ip6 saddr != %s drop\n"
        "    iifname \"cqe%d\" meta l4proto != { tcp, udp } reject with icmpx admin-prohibited\n"
        "%s"
        "    iifname \"cqe%d\" ip daddr @refused meta l4proto tcp reject with tcp reset\n"
        "    iifname \"cqe%d\" ip daddr @refused reject with icmpx admin-prohibited\n"
        "    iifname \"cqe%d\" ip daddr @host meta l4proto tcp reject with tcp reset\n"
        "    iifname \"cqe%d\" ip daddr @host reject with icmpx admin-prohibited\n"
        "    iifname \"cqe%d\" ip6 daddr != 2000::/3 meta l4proto tcp reject with tcp reset\n"
        "    iifname \"cqe%d\" ip6 daddr != 2000::/3 reject with icmpx admin-prohibited\n"
        "    iifname \"cqe%d\" ip6 daddr @refused6 meta l4proto tcp reject with tcp reset\n"
        "    iifname \"cqe%d\" ip6 daddr @refused6 reject with icmpx admin-prohibited\n"
        "    iifname \"cqe%d\" ip6 daddr @host6 meta l4proto tcp reject with tcp reset\n"
        "    iifname \"cqe%d\" ip6 daddr @host6 reject with icmpx admin-prohibited\n"
        "%s"
        "    oifname \"cqe%d\" ct state established,related accept\n"
        "    oifname \"cqe%d\" drop\n"
        "  }\n"
        "  chain input {\n"
        "    type filter hook input priority filter - 1; policy accept;\n"
        "    iifname \"cqe%d\" icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept\n"
        "    iifname \"cqe%d\" ip saddr %s ip daddr %s meta l4proto { tcp, udp } th dport 53 "
        "accept\n"
        "    iifname \"cqe%d\" meta l4proto tcp reject with tcp reset\n"
        "    iifname \"cqe%d\" reject with icmpx admin-prohibited\n"
        "  }\n"
        "  chain postrouting {\n"
        "    type nat hook postrouting priority srcnat; policy accept;\n"
        "    ip saddr %s masquerade\n"
        "    ip6 saddr %s masquerade\n"
        "  }\n"
        "  chain dns {\n"
        "    type nat hook prerouting priority dstnat; policy accept;\n"
        "    iifname \"cqe%d\" ip daddr " CQ_EGRESS_DNS
        " meta l4proto { tcp, udp } th dport 53 dnat ip to %s\n"
        "  }\n"
        "}\n%s",
        s, refused, set4, set6, sets, s, sbt, s, sbt6, s, head, s, s, s, s, s, s, s, s, s, s, tail,
        s, s, s, s, sbt, gwt, s, s, sbt, sbt6, s, gwt, mode->elements);
    if (n < 0 || (size_t)n >= len)
        return cq_error_set(err, CQ_EINTERNAL, "egress ruleset longer than %zu bytes", len);
    return 0;
}

/* --- counters and limits ---------------------------------------------------------- */

/* A block of its own, added to the slot's table in the same transaction as the filter
 * (a second `table` statement extends the first). Its base chain hooks forward after
 * the filter's (priority filter, the filter's is filter - 1), so it sees only what the
 * filter let through: refused packets are neither counted nor charged to the limits.
 *  - Limits (the operator's network_max_rate and network_max_connections): bytes over
 *    the rate are dropped, each direction with its own token bucket (a burst of a
 *    quarter second's worth, at least 64 KiB, so that TCP is slowed rather than
 *    stalled; the kernel's bucket starts full and holds a second's worth of the rate
 *    on top of the burst, measured by tests/net/test_egress_limits.py); a new connection (TCP or
 * UDP flow, as conntrack sees it) past the count of the sandbox's live ones is refused at once,
 * like the filter's refusals.
 *  - Counters `sent` and `received`: bytes of the IP packets that passed both (IPv4
 *    and IPv6, IP headers included, link headers not), read by cq_egress_stats. */
static int write_meter(const struct cq_egress *e, char *buf, size_t len, struct cq_error *err)
{
    int s = e->slot;
    char limits[768] = "";
    if (e->max_rate > 0) {
        uint64_t burst = e->max_rate / 4 < 65536 ? 65536 : e->max_rate / 4;
        if (burst > UINT32_MAX)
            burst = UINT32_MAX; /* the kernel's burst is 32 bits */
        snprintf(limits, sizeof(limits),
                 "    iifname \"cqe%d\" limit rate over %llu bytes/second burst %llu bytes drop\n"
                 "    oifname \"cqe%d\" limit rate over %llu bytes/second burst %llu bytes drop\n",
                 s, (unsigned long long)e->max_rate, (unsigned long long)burst, s,
                 (unsigned long long)e->max_rate, (unsigned long long)burst);
    }
    if (e->max_conns > 0) {
        size_t at = strlen(limits);
        snprintf(limits + at, sizeof(limits) - at,
                 "    iifname \"cqe%d\" ct state new ct count over %u jump cq_refuse\n", s,
                 (unsigned)e->max_conns);
    }
    int n = snprintf(buf, len,
                     "table inet cq_s%d {\n"
                     "  counter sent { }\n"
                     "  counter received { }\n"
                     "  chain cq_refuse {\n"
                     "    meta l4proto tcp reject with tcp reset\n"
                     "    reject with icmpx admin-prohibited\n"
                     "  }\n"
                     "  chain cq_meter {\n"
                     "    type filter hook forward priority filter; policy accept;\n"
                     "%s"
                     "    iifname \"cqe%d\" counter name \"sent\"\n"
                     "    oifname \"cqe%d\" counter name \"received\"\n"
                     "  }\n"
                     "}\n",
                     s, limits, s, s);
    if (n < 0 || (size_t)n >= len)
        return cq_error_set(err, CQ_EINTERNAL, "egress meter longer than %zu bytes", len);
    return 0;
}

int cq_egress_stats(struct cq_egress *e, uint64_t *sent, uint64_t *received, struct cq_error *err)
{
    *sent = *received = 0;
    if (e->slot < 0 || !e->table_made || e->nfnl < 0)
        return 0;
    char table[32];
    snprintf(table, sizeof(table), "cq_s%d", e->slot);
    pthread_mutex_lock(&e->nfnl_lock);
    int rc = cq_nft_counter_bytes(e->nfnl, table, "sent", sent, err);
    if (rc == 0)
        rc = cq_nft_counter_bytes(e->nfnl, table, "received", received, err);
    pthread_mutex_unlock(&e->nfnl_lock);
    return rc;
}

/* --- links --------------------------------------------------------------------------- */

static int open_netns(const char *path, struct cq_error *err)
{
    cq_autoclose int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return cq_error_sys(err, errno, "egress namespace %s", path);
    int type = ioctl(fd, NS_GET_NSTYPE);
    if (type != CLONE_NEWNET)
        return cq_error_set(err, CQ_EINVALID, "%s is not a network namespace", path);
    /* codeq turns on forwarding and adds rules in the egress namespace: never in the
     * namespace it runs in itself (the host's), whose configuration is not codeq's. */
    struct stat given, own;
    if (fstat(fd, &given) < 0 || stat("/proc/self/ns/net", &own) < 0)
        return cq_error_sys(err, errno, "compare %s with codeq's own network namespace", path);
    if (given.st_dev == own.st_dev && given.st_ino == own.st_ino)
        return cq_error_set(err, CQ_EINVALID,
                            "%s is codeq's own network namespace; the egress namespace must be "
                            "another one",
                            path);
    return cq_steal_fd(&fd);
}

/* The egress side: address, up. The sandbox side: eth0's address, up, default route. */
static int configure_links(struct cq_egress *e, int sandbox_fd, const char *link,
                           struct cq_error *err)
{
    struct cq_net_addr gw = slot_addr(e->slot, 1), sb = slot_addr(e->slot, 2);
    struct cq_net_addr gw6 = slot_addr6(e->slot, 1), sb6 = slot_addr6(e->slot, 2);
    int idx = cq_nl_link_index(e->nl, link, err);
    if (idx < 0 || cq_nl_addr_add(e->nl, idx, &gw, 30, err) < 0 ||
        cq_nl_addr_add(e->nl, idx, &gw6, 64, err) < 0 || cq_nl_link_up(e->nl, idx, err) < 0)
        return -1;
    cq_autoclose int nl_sb = cq_nl_open(sandbox_fd, err);
    if (nl_sb < 0)
        return -1;
    int sidx = cq_nl_link_index(nl_sb, "eth0", err);
    if (sidx < 0 || cq_nl_addr_add(nl_sb, sidx, &sb, 30, err) < 0 ||
        cq_nl_addr_add(nl_sb, sidx, &sb6, 64, err) < 0 || cq_nl_link_up(nl_sb, sidx, err) < 0 ||
        cq_nl_route_default(nl_sb, sidx, &gw, err) < 0 ||
        cq_nl_route_default(nl_sb, sidx, &gw6, err) < 0)
        return -1;
    return 0;
}

/* Takes the lowest free slot whose link is gone: a slot's link outlives its sandbox
 * for a moment (it goes with the sandbox's network namespace, which the kernel tears
 * down asynchronously, see cq_egress_detach), and such a slot is passed over. */
static int choose_slot(struct cq_egress *e, struct cq_error *err)
{
    for (int from = 0, tries = 0;; from = e->slot + 1, tries++) {
        give_slot_back(e);
        if (take_slot(e, from, err) < 0)
            return -1;
        char link[16];
        struct cq_error probe = {0};
        snprintf(link, sizeof(link), "cqe%d", e->slot);
        if (cq_nl_link_index(e->nl, link, &probe) < 0 && probe.code == ENODEV)
            return 0;
        if (probe.code != 0 && probe.code != ENODEV)
            return cq_error_set(err, probe.code, "%s", probe.msg);
        if (tries == 256)
            return cq_error_set(err, EEXIST, "egress links of 256 slots are still being removed");
    }
}

/* What the preparing thread needs and leaves. */
struct egress_prep {
    struct nft_job job;
    const struct cq_sandbox_config *cfg; /* the creator's, valid until finish_prep */
    struct mode_rules mode;
    char *elements; /* mode's set elements (mode_rules_of) */
    char hosts4[HOST_ADDRS * INET6_ADDRSTRLEN];
    char hosts6[HOST_ADDRS * INET6_ADDRSTRLEN];
    char meter[2048];
};

static void *prepare(void *arg)
{
    struct egress_prep *p = arg;
    struct cq_egress *e = p->job.attach;
    /* Before setns: getifaddrs asks the namespace of the calling thread, and these are
     * the host's addresses. */
    host_elements(AF_INET, p->hosts4, sizeof(p->hosts4));
    host_elements(AF_INET6, p->hosts6, sizeof(p->hosts6));
    struct cq_error err = {0};
    if (setns(e->netns_fd, CLONE_NEWNET) < 0)
        cq_error_sys(&err, errno, "enter the egress namespace");
    else if ((e->nl = cq_nl_open(-1, &err)) >= 0 && (e->nfnl = cq_nfnl_open(-1, &err)) >= 0 &&
             choose_slot(e, &err) == 0 && write_meter(e, p->meter, sizeof(p->meter), &err) == 0 &&
             mode_rules_of(e->slot, p->cfg, &p->mode, &p->elements, &err) == 0) {
        p->job.mode = &p->mode;
        pthread_mutex_lock(&nft_lock);
        nft_in_netns(&p->job);
        pthread_mutex_unlock(&nft_lock);
        e->table_made = p->job.code == 0;
        return NULL;
    }
    p->job.code = err.code != 0 ? err.code : CQ_EINTERNAL;
    snprintf(p->job.error, sizeof(p->job.error), "%s", err.msg);
    return NULL;
}

int cq_egress_begin(struct cq_egress *e, const struct cq_sandbox_config *cfg, struct cq_error *err)
{
    if ((e->netns_fd = open_netns(cfg->egress_netns, err)) < 0)
        return -1;
    if (cfg->netpolicy != NULL) {
        e->max_rate = cfg->netpolicy->max_bytes_per_second;
        e->max_conns = cfg->netpolicy->max_connections;
    }
    struct egress_prep *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return cq_error_sys(err, ENOMEM, "egress");
    p->cfg = cfg;
    p->mode = (struct mode_rules){.elements = ""};
    p->job = (struct nft_job){.netns_fd = e->netns_fd,
                              .attach = e,
                              .hosts4 = p->hosts4,
                              .hosts6 = p->hosts6,
                              .meter = p->meter};
    int rc = pthread_create(&e->prep_thread, NULL, prepare, p);
    if (rc != 0) {
        free(p);
        return cq_error_sys(err, rc, "thread for the egress namespace");
    }
    e->prep = p;
    return 0;
}

/* Waits for the preparing thread; its error, if it had one. */
static int finish_prep(struct cq_egress *e, struct cq_error *err)
{
    struct egress_prep *p = e->prep;
    if (p == NULL)
        return 0;
    pthread_join(e->prep_thread, NULL);
    e->prep = NULL;
    int rc = p->job.code == 0 ? 0 : cq_error_set(err, p->job.code, "%s", p->job.error);
    free(p->elements);
    free(p);
    return rc;
}

int cq_egress_attach(struct cq_egress *e, const struct cq_sandbox_config *cfg, pid_t init_pid,
                     struct cq_error *err)
{
    if (finish_prep(e, err) < 0)
        return cq_error_prefix(err, "egress filter in %s", cfg->egress_netns);
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/ns/net", init_pid);
    cq_autoclose int sandbox_fd = open(path, O_RDONLY | O_CLOEXEC);
    if (sandbox_fd < 0)
        return cq_error_sys(err, errno, "the sandbox's network namespace");
    char link[16];
    snprintf(link, sizeof(link), "cqe%d", e->slot);
    if (cq_nl_veth_add(e->nl, link, "eth0", sandbox_fd, err) < 0 ||
        configure_links(e, sandbox_fd, link, err) < 0)
        return cq_error_prefix(err, "egress link");
    return 0;
}

void cq_egress_addrs(const struct cq_egress *e, struct cq_net_addr *gateway,
                     struct cq_net_addr *sandbox)
{
    *gateway = slot_addr(e->slot, 1);
    *sandbox = slot_addr(e->slot, 2);
}

/* --- teardown ----------------------------------------------------------------------- */

/* Deleting the table is one quick commit, but nf_tables frees what was deleted after an
 * RCU grace period, from a work item, and every release of an nfnetlink socket of that
 * namespace first waits for that work (~10 ms here, measured in docs/performance.md):
 * the close of the socket that deleted it, or a one-shot codeq's exit, which closes it.
 * So the socket's last reference goes to a process that releases it once the caller
 * has dropped its own: the caller pays a vfork and a fork, and the wait happens in
 * that process, after the caller has gone on (or exited). It is a grandchild (the
 * vforked child forks it and exits at once, and is reaped here), so the caller is
 * left with no child of codeq's, not even a zombie, and a one-shot caller's exit does
 * not wait for it. The vforked child and the grandchild make only raw system calls
 * (the caller may have threads; the vforked child shares the caller's memory), and
 * the grandchild holds nothing else (not the caller's stdout, so a reader waiting for
 * its end is not kept waiting). If anything fails, the socket is closed here. */
static void release_off_path(int fd)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) {
        close(fd);
        return;
    }
    pid_t mid = vfork();
    if (mid == 0) {
        long g = syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);
        if (g == 0) {
            sigset_t all;
            sigfillset(&all);
            syscall(SYS_rt_sigprocmask, SIG_SETMASK, &all, NULL, _NSIG / 8);
            int lo = fd < p[0] ? fd : p[0], hi = fd < p[0] ? p[0] : fd;
            if (lo > 0)
                syscall(SYS_close_range, 0, lo - 1, 0);
            if (hi > lo + 1)
                syscall(SYS_close_range, lo + 1, hi - 1, 0);
            syscall(SYS_close_range, hi + 1, ~0U, 0);
            char c;
            while (syscall(SYS_read, p[0], &c, 1) < 0 && errno == EINTR)
                ;                       /* until the caller's end of the pipe closes */
            syscall(SYS_exit_group, 0); /* releases the socket: the wait is here */
        }
        syscall(SYS_exit_group, g < 0);
    }
    close(p[0]);
    int status = 1;
    if (mid > 0)
        while (waitpid(mid, &status, 0) < 0 && errno == EINTR)
            ;
    close(fd);   /* with a grandchild holding a copy: not the last reference, no wait */
    close(p[1]); /* the grandchild's read ends, and its exit releases the socket */
}

/* The veth pair is not deleted: the sandbox's network namespace dies with its last
 * process (init, reaped by now), and the kernel's cleanup of a dead namespace removes
 * its links, the pair's egress end with them. That cleanup runs later in a kernel work
 * queue (cleanup_net, batched), which is why the egress end can still be listed for a
 * moment after this returns. Deleting the link here instead cost ~36 ms (RTM_DELLINK
 * waits for the RTNL lock, held by that same cleanup of earlier namespaces, and for
 * RCU grace periods). Nothing can use the link meanwhile: the processes that could
 * send on it are gone, the table that forwarded for it is gone, and its slot's next
 * owner passes over a slot whose link still exists. */
void cq_egress_detach(struct cq_egress *e)
{
    finish_prep(e, NULL);
    bool deleted = false;
    if (e->slot >= 0 && e->table_made && e->nfnl >= 0) {
        char table[32];
        snprintf(table, sizeof(table), "cq_s%d", e->slot);
        pthread_mutex_lock(&e->nfnl_lock);
        deleted = cq_nft_table_delete(e->nfnl, table, NULL) == 0;
        pthread_mutex_unlock(&e->nfnl_lock);
    }
    e->table_made = false;
    give_slot_back(e);
    if (e->nfnl >= 0 && deleted)
        release_off_path(e->nfnl);
    else if (e->nfnl >= 0)
        close(e->nfnl);
    if (e->nl >= 0)
        close(e->nl);
    if (e->netns_fd >= 0)
        close(e->netns_fd);
    e->nfnl = -1;
    e->nl = -1;
    e->netns_fd = -1;
}
