/* sandbox/netlink.c - rtnetlink requests for the network modes (sandbox/netlink.h).
 *
 * Hand-written rather than through libmnl: five request kinds, each one message with a
 * few attributes, and an acknowledgement read back. Every request asks for an ack
 * (NLM_F_ACK), so an error of the kernel is reported for the request that caused it;
 * replies are matched by sequence number and anything else on the socket is skipped.
 *
 * Sockets belong to the namespace they were created in, whatever the creating thread
 * does afterwards; so cq_nl_open makes the socket in a thread of its own that entered
 * the target namespace (setns of a network namespace is per thread), and the caller's
 * threads never change namespace.
 */
#define _GNU_SOURCE
#include "sandbox/netlink.h"
#include "common/cleanup.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/if.h>
#include <linux/if_addr.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <endian.h>
#include <sys/uio.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define NL_BUF       1024
#define NL_TIMEOUT_S 5

/* --- opening a socket in a namespace --------------------------------------------- */

struct open_job {
    int netns_fd;
    int protocol;
    int fd;
    int error;
};

static void *open_in_netns(void *arg)
{
    struct open_job *job = arg;
    if (job->netns_fd >= 0 && setns(job->netns_fd, CLONE_NEWNET) < 0) {
        job->error = errno;
        return NULL;
    }
    job->fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, job->protocol);
    if (job->fd < 0)
        job->error = errno;
    return NULL;
}

static int open_socket(int netns_fd, int protocol, struct cq_error *err)
{
    struct open_job job = {.netns_fd = netns_fd, .protocol = protocol, .fd = -1};
    if (netns_fd < 0) {
        open_in_netns(&job);
    } else {
        /* The thread ends in the other namespace and takes it with it. */
        pthread_t t;
        int rc = pthread_create(&t, NULL, open_in_netns, &job);
        if (rc != 0)
            return cq_error_sys(err, rc, "thread for a netlink socket");
        pthread_join(t, NULL);
    }
    if (job.fd < 0)
        return cq_error_sys(err, job.error, "netlink socket in network namespace (fd %d)",
                            netns_fd);
    cq_autoclose int fd = job.fd;
    struct timeval tv = {.tv_sec = NL_TIMEOUT_S};
    struct sockaddr_nl local = {.nl_family = AF_NETLINK};
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
        setsockopt(fd, SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof(one)) < 0 ||
        bind(fd, (struct sockaddr *)&local, sizeof(local)) < 0)
        return cq_error_sys(err, errno, "set up a netlink socket");
    return cq_steal_fd(&fd);
}

int cq_nl_open(int netns_fd, struct cq_error *err)
{
    return open_socket(netns_fd, NETLINK_ROUTE, err);
}

int cq_nfnl_open(int netns_fd, struct cq_error *err)
{
    return open_socket(netns_fd, NETLINK_NETFILTER, err);
}

/* --- building messages -------------------------------------------------------------- */

struct nl_msg {
    union {
        struct nlmsghdr hdr;
        uint8_t bytes[NL_BUF];
    };
    bool overflow;
};

static void *msg_tail(struct nl_msg *m)
{
    return m->bytes + NLMSG_ALIGN(m->hdr.nlmsg_len);
}

static void msg_init(struct nl_msg *m, uint16_t type, uint16_t flags, const void *head,
                     size_t head_len)
{
    memset(m, 0, sizeof(*m));
    m->hdr.nlmsg_type = type;
    m->hdr.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    m->hdr.nlmsg_len = NLMSG_LENGTH(head_len);
    memcpy(NLMSG_DATA(&m->hdr), head, head_len);
}

/* Appends raw bytes (a nested header such as veth's peer ifinfomsg). */
static void msg_put_raw(struct nl_msg *m, const void *data, size_t len)
{
    size_t at = NLMSG_ALIGN(m->hdr.nlmsg_len);
    if (at + NLMSG_ALIGN(len) > sizeof(m->bytes)) {
        m->overflow = true;
        return;
    }
    memcpy(m->bytes + at, data, len);
    m->hdr.nlmsg_len = (uint32_t)(at + NLMSG_ALIGN(len));
}

static void msg_put(struct nl_msg *m, uint16_t type, const void *data, size_t len)
{
    size_t at = NLMSG_ALIGN(m->hdr.nlmsg_len);
    if (at + RTA_SPACE(len) > sizeof(m->bytes)) {
        m->overflow = true;
        return;
    }
    struct rtattr *rta = msg_tail(m);
    rta->rta_type = type;
    rta->rta_len = (unsigned short)RTA_LENGTH(len);
    if (len > 0) /* a nest's header has no data (and data is NULL) */
        memcpy(RTA_DATA(rta), data, len);
    m->hdr.nlmsg_len = (uint32_t)(at + RTA_SPACE(len));
}

static void msg_put_str(struct nl_msg *m, uint16_t type, const char *s)
{
    msg_put(m, type, s, strlen(s) + 1);
}

static struct rtattr *msg_nest_begin(struct nl_msg *m, uint16_t type)
{
    struct rtattr *nest = msg_tail(m);
    msg_put(m, type, NULL, 0);
    return m->overflow ? NULL : nest;
}

static void msg_nest_end(struct nl_msg *m, struct rtattr *nest)
{
    if (nest != NULL)
        nest->rta_len = (unsigned short)((uint8_t *)msg_tail(m) - (uint8_t *)nest);
}

/* --- talking ------------------------------------------------------------------------ */

static atomic_uint nl_seq = 1;

/* Sends m and reads until its ack. With reply != NULL, a data message answering it is
 * copied there first (reply_len bytes at most). Returns 0, or -1 with err: the kernel's
 * errno, with its extended ack message when it sent one. */
static int nl_await(int nl, uint32_t seq, const char *what, void *reply, size_t reply_len,
                    struct cq_error *err);

static int nl_talk(int nl, struct nl_msg *m, const char *what, void *reply, size_t reply_len,
                   struct cq_error *err)
{
    if (m->overflow)
        return cq_error_set(err, CQ_EINTERNAL, "%s: netlink message too long", what);
    m->hdr.nlmsg_seq = atomic_fetch_add(&nl_seq, 1);
    if (send(nl, &m->hdr, m->hdr.nlmsg_len, 0) < 0)
        return cq_error_sys(err, errno, "%s: netlink send", what);
    return nl_await(nl, m->hdr.nlmsg_seq, what, reply, reply_len, err);
}

static int nl_await(int nl, uint32_t seq, const char *what, void *reply, size_t reply_len,
                    struct cq_error *err)
{
    uint8_t buf[8192] __attribute__((aligned(NLMSG_ALIGNTO)));
    for (;;) {
        ssize_t n = recv(nl, buf, sizeof(buf), 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return cq_error_sys(err, errno, "%s: netlink receive", what);
        for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (size_t)n);
             h = NLMSG_NEXT(h, n)) {
            if (h->nlmsg_seq != seq)
                continue;
            if (h->nlmsg_type != NLMSG_ERROR) {
                if (reply != NULL)
                    memcpy(reply, h, h->nlmsg_len < reply_len ? h->nlmsg_len : reply_len);
                continue;
            }
            const struct nlmsgerr *e = NLMSG_DATA(h);
            if (e->error == 0)
                return 0;
            /* An extended ack's message follows the echoed request's header. */
            const char *ext = NULL;
            if (h->nlmsg_flags & NLM_F_ACK_TLVS) {
                size_t off = NLMSG_LENGTH(sizeof(*e));
                if (!(h->nlmsg_flags & NLM_F_CAPPED))
                    off += NLMSG_ALIGN(e->msg.nlmsg_len) - NLMSG_HDRLEN;
                for (struct rtattr *a = (struct rtattr *)((uint8_t *)h + off);
                     (uint8_t *)a + sizeof(*a) <= (uint8_t *)h + h->nlmsg_len &&
                     a->rta_len >= sizeof(*a);
                     a = (struct rtattr *)((uint8_t *)a + RTA_ALIGN(a->rta_len)))
                    if (a->rta_type == NLMSGERR_ATTR_MSG && a->rta_len > sizeof(*a))
                        ext = RTA_DATA(a);
            }
            if (ext != NULL)
                return cq_error_set(err, -e->error, "%s: %s (%s)", what, strerror(-e->error), ext);
            return cq_error_sys(err, -e->error, "%s", what);
        }
    }
}

/* --- requests ------------------------------------------------------------------------ */

static int check_name(const char *name, struct cq_error *err)
{
    size_t len = name != NULL ? strlen(name) : 0;
    if (len == 0 || len >= IFNAMSIZ || strchr(name, '/') != NULL)
        return cq_error_set(err, CQ_EINVALID, "link name '%s' is not 1 to %d characters",
                            name != NULL ? name : "(null)", IFNAMSIZ - 1);
    return 0;
}

int cq_nl_veth_add(int nl, const char *name, const char *peer, int peer_netns_fd,
                   struct cq_error *err)
{
    if (check_name(name, err) < 0 || check_name(peer, err) < 0)
        return -1;
    struct nl_msg m;
    struct ifinfomsg ifi = {.ifi_family = AF_UNSPEC};
    msg_init(&m, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, &ifi, sizeof(ifi));
    msg_put_str(&m, IFLA_IFNAME, name);
    struct rtattr *info = msg_nest_begin(&m, IFLA_LINKINFO);
    msg_put_str(&m, IFLA_INFO_KIND, "veth");
    struct rtattr *data = msg_nest_begin(&m, IFLA_INFO_DATA);
    struct rtattr *peer_nest = msg_nest_begin(&m, VETH_INFO_PEER);
    msg_put_raw(&m, &ifi, sizeof(ifi));
    msg_put_str(&m, IFLA_IFNAME, peer);
    uint32_t fd = (uint32_t)peer_netns_fd;
    if (peer_netns_fd >= 0)
        msg_put(&m, IFLA_NET_NS_FD, &fd, sizeof(fd));
    msg_nest_end(&m, peer_nest);
    msg_nest_end(&m, data);
    msg_nest_end(&m, info);
    char what[64];
    snprintf(what, sizeof(what), "create veth %s/%s", name, peer);
    return nl_talk(nl, &m, what, NULL, 0, err);
}

int cq_nl_link_index(int nl, const char *name, struct cq_error *err)
{
    if (check_name(name, err) < 0)
        return -1;
    struct nl_msg m;
    struct ifinfomsg ifi = {.ifi_family = AF_UNSPEC};
    msg_init(&m, RTM_GETLINK, 0, &ifi, sizeof(ifi));
    msg_put_str(&m, IFLA_IFNAME, name);
    uint8_t reply[NLMSG_SPACE(sizeof(struct ifinfomsg))] __attribute__((aligned(4))) = {0};
    char what[64];
    snprintf(what, sizeof(what), "find link %s", name);
    if (nl_talk(nl, &m, what, reply, sizeof(reply), err) < 0)
        return -1;
    const struct nlmsghdr *h = (const struct nlmsghdr *)reply;
    if (h->nlmsg_type != RTM_NEWLINK)
        return cq_error_set(err, ENODEV, "%s: no answer", what);
    const struct ifinfomsg *got = NLMSG_DATA(h);
    return got->ifi_index;
}

int cq_nl_link_up(int nl, int ifindex, struct cq_error *err)
{
    struct nl_msg m;
    struct ifinfomsg ifi = {
        .ifi_family = AF_UNSPEC, .ifi_index = ifindex, .ifi_flags = IFF_UP, .ifi_change = IFF_UP};
    msg_init(&m, RTM_NEWLINK, 0, &ifi, sizeof(ifi));
    char what[64];
    snprintf(what, sizeof(what), "bring up link %d", ifindex);
    return nl_talk(nl, &m, what, NULL, 0, err);
}

int cq_nl_link_del(int nl, const char *name, struct cq_error *err)
{
    if (check_name(name, err) < 0)
        return -1;
    struct nl_msg m;
    struct ifinfomsg ifi = {.ifi_family = AF_UNSPEC};
    msg_init(&m, RTM_DELLINK, 0, &ifi, sizeof(ifi));
    msg_put_str(&m, IFLA_IFNAME, name);
    char what[64];
    snprintf(what, sizeof(what), "delete link %s", name);
    return nl_talk(nl, &m, what, NULL, 0, err);
}

static size_t addr_len(const struct cq_net_addr *a)
{
    return a->family == AF_INET ? 4 : 16;
}

int cq_nl_addr_add(int nl, int ifindex, const struct cq_net_addr *addr, unsigned prefix_len,
                   struct cq_error *err)
{
    if (prefix_len > addr_len(addr) * 8)
        return cq_error_set(err, CQ_EINVALID, "prefix length %u too long", prefix_len);
    struct nl_msg m;
    struct ifaddrmsg ifa = {
        .ifa_family = (uint8_t)addr->family,
        .ifa_prefixlen = (uint8_t)prefix_len,
        .ifa_flags = addr->family == AF_INET6 ? IFA_F_NODAD : 0,
        .ifa_index = (uint32_t)ifindex,
    };
    msg_init(&m, RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, &ifa, sizeof(ifa));
    msg_put(&m, IFA_LOCAL, addr->bytes, addr_len(addr));
    msg_put(&m, IFA_ADDRESS, addr->bytes, addr_len(addr));
    char text[INET6_ADDRSTRLEN] = "?", what[96];
    inet_ntop(addr->family, addr->bytes, text, sizeof(text));
    snprintf(what, sizeof(what), "add address %s/%u to link %d", text, prefix_len, ifindex);
    return nl_talk(nl, &m, what, NULL, 0, err);
}

int cq_nl_route_default(int nl, int ifindex, const struct cq_net_addr *gateway,
                        struct cq_error *err)
{
    struct nl_msg m;
    struct rtmsg rt = {
        .rtm_family = (uint8_t)gateway->family,
        .rtm_table = RT_TABLE_MAIN,
        .rtm_protocol = RTPROT_STATIC,
        .rtm_scope = RT_SCOPE_UNIVERSE,
        .rtm_type = RTN_UNICAST,
    };
    msg_init(&m, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, &rt, sizeof(rt));
    msg_put(&m, RTA_GATEWAY, gateway->bytes, addr_len(gateway));
    uint32_t oif = (uint32_t)ifindex;
    msg_put(&m, RTA_OIF, &oif, sizeof(oif));
    char text[INET6_ADDRSTRLEN] = "?", what[96];
    inet_ntop(gateway->family, gateway->bytes, text, sizeof(text));
    snprintf(what, sizeof(what), "add default route via %s", text);
    return nl_talk(nl, &m, what, NULL, 0, err);
}

/* --- nftables (nfnetlink) ------------------------------------------------------------ */

/* An nf_tables message: the nfgenmsg header, then attributes (laid out as rtattrs). */
static void nft_msg_init(struct nl_msg *m, uint16_t type, uint16_t flags, uint8_t family,
                         uint16_t res_id)
{
    struct nfgenmsg g = {.nfgen_family = family, .version = NFNETLINK_V0, .res_id = htons(res_id)};
    msg_init(m, type, flags, &g, sizeof(g));
}

int cq_nft_table_delete(int nfnl, const char *table, struct cq_error *err)
{
    /* Changes to nf_tables go in a batch: begin, the change, end; only the change asks
     * for an ack, which comes once the batch is committed. */
    struct nl_msg begin, del, end;
    nft_msg_init(&begin, NFNL_MSG_BATCH_BEGIN, 0, AF_UNSPEC, NFNL_SUBSYS_NFTABLES);
    nft_msg_init(&del, (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_DELTABLE, 0, NFPROTO_INET, 0);
    msg_put_str(&del, NFTA_TABLE_NAME, table);
    nft_msg_init(&end, NFNL_MSG_BATCH_END, 0, AF_UNSPEC, NFNL_SUBSYS_NFTABLES);
    if (del.overflow)
        return cq_error_set(err, CQ_EINVALID, "nftables table name too long");
    uint32_t seq = atomic_fetch_add(&nl_seq, 3);
    begin.hdr.nlmsg_flags = NLM_F_REQUEST;
    begin.hdr.nlmsg_seq = seq;
    del.hdr.nlmsg_seq = seq + 1;
    end.hdr.nlmsg_flags = NLM_F_REQUEST;
    end.hdr.nlmsg_seq = seq + 2;
    struct iovec iov[3] = {{&begin.hdr, begin.hdr.nlmsg_len},
                           {&del.hdr, del.hdr.nlmsg_len},
                           {&end.hdr, end.hdr.nlmsg_len}};
    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
    struct msghdr mh = {
        .msg_name = &kernel, .msg_namelen = sizeof(kernel), .msg_iov = iov, .msg_iovlen = 3};
    char what[96];
    snprintf(what, sizeof(what), "delete nftables table inet %s", table);
    if (sendmsg(nfnl, &mh, 0) < 0)
        return cq_error_sys(err, errno, "%s: netlink send", what);
    return nl_await(nfnl, seq + 1, what, NULL, 0, err);
}

/* The attribute of a type among those in [at, end), or NULL. */
static const struct rtattr *find_attr(const uint8_t *at, const uint8_t *end, uint16_t type)
{
    for (const struct rtattr *a = (const struct rtattr *)at;
         (const uint8_t *)a + sizeof(*a) <= end && a->rta_len >= sizeof(*a) &&
         (const uint8_t *)a + a->rta_len <= end;
         a = (const struct rtattr *)((const uint8_t *)a + RTA_ALIGN(a->rta_len)))
        if ((a->rta_type & NLA_TYPE_MASK) == type)
            return a;
    return NULL;
}

int cq_nft_counter_bytes(int nfnl, const char *table, const char *name, uint64_t *bytes,
                         struct cq_error *err)
{
    struct nl_msg m;
    nft_msg_init(&m, (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETOBJ, 0, NFPROTO_INET, 0);
    msg_put_str(&m, NFTA_OBJ_TABLE, table);
    msg_put_str(&m, NFTA_OBJ_NAME, name);
    uint32_t type = htonl(NFT_OBJECT_COUNTER);
    msg_put(&m, NFTA_OBJ_TYPE, &type, sizeof(type));
    uint8_t reply[NL_BUF] __attribute__((aligned(NLMSG_ALIGNTO))) = {0};
    char what[96];
    snprintf(what, sizeof(what), "read nftables counter %s of %s", name, table);
    if (nl_talk(nfnl, &m, what, reply, sizeof(reply), err) < 0)
        return -1;
    const struct nlmsghdr *h = (const struct nlmsghdr *)reply;
    if (h->nlmsg_type != ((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWOBJ) ||
        h->nlmsg_len > sizeof(reply) || h->nlmsg_len < NLMSG_LENGTH(sizeof(struct nfgenmsg)))
        return cq_error_set(err, CQ_EPROTO, "%s: no answer", what);
    const uint8_t *end = reply + h->nlmsg_len;
    const struct rtattr *data =
        find_attr(reply + NLMSG_LENGTH(sizeof(struct nfgenmsg)), end, NFTA_OBJ_DATA);
    const struct rtattr *b =
        data != NULL
            ? find_attr(RTA_DATA(data), (const uint8_t *)data + data->rta_len, NFTA_COUNTER_BYTES)
            : NULL;
    if (b == NULL || RTA_PAYLOAD(b) != sizeof(uint64_t))
        return cq_error_set(err, CQ_EPROTO, "%s: no byte count in the answer", what);
    uint64_t be;
    memcpy(&be, RTA_DATA(b), sizeof(be));
    *bytes = be64toh(be);
    return 0;
}
