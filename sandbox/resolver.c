/* sandbox/resolver.c - codeq's resolver for networked sandboxes (see resolver.h).
 *
 * Threat: sandboxed code writes the queries, and whoever answers from the egress side
 * writes the replies. So queries are parsed before anything is asked (sandbox/dns.c),
 * the upstream is asked a query codeq wrote itself (never the sandbox's bytes), its
 * reply must carry the id codeq chose (random, per query) on the socket connected to
 * the upstream and the same question, and what goes back is rebuilt from the checked
 * parts only. Addresses the policy refuses are stripped (DNS rebinding: a public name
 * that answers 127.0.0.1 or 10.0.0.1 gives the sandbox nothing to follow; the filter
 * refuses those anyway, this keeps programs from trying).
 *
 * ALLOWLIST: only names an entry covers are asked upstream; others get NXDOMAIN, which
 * programs take as "no such name" at once (REFUSED makes glibc try again and report a
 * temporary failure). Each kept address is pinned into the sandbox's nftables sets,
 * with the port of each covering entry, in one transaction BEFORE the answer leaves:
 * the sandbox cannot connect to an address it has not been told, and an address it
 * was told stays open until it ends (TTLs are not followed: a name that changes its
 * addresses adds pins, never moves them; network_max_pinned bounds them, and past it
 * new addresses are stripped from answers). A private answer is kept only inside the
 * operator's network_private, on the ports it opens (an internal name: codeq's "VPC"
 * mode), and pinned into sets of its own (egress.c, chain vpc).
 *
 * One thread serves every sandbox of the process: an epoll set of two UDP sockets per
 * sandbox (the gateway's port 53, and one connected to the upstream) and a listening
 * TCP socket on the gateway's port 53 (with its connections: see "TCP" below), all
 * made in the egress namespace by a short-lived thread that entered it, as egress.c
 * does, so the caller's threads never change namespace. A slow upstream delays nobody: queries wait
 * in a per-sandbox table (bounded; past it queries are dropped and the stub retries),
 * and the thread reads whichever socket is ready. Pins (nftables transactions) are
 * made by a second thread, in order, each answer released by it once its pins hold.
 */
#define _GNU_SOURCE
#include "sandbox/resolver.h"
#include "sandbox/dns.h"
#include "sandbox/egress.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_PENDING 64   /* queries of one sandbox waiting for the upstream */
#define PENDING_MS  3000 /* then SERVFAIL (the stub has asked again by then anyway) */
#define BURST       16   /* datagrams read from one socket before the next socket */
#define MAX_BATCH   128  /* addresses pinned by one answer */
#define MAX_PORTS   8    /* ports one address is pinned with */
#define RECV_MAX    4096
#define TCP_CONNS   4     /* TCP connections of one sandbox at once */
#define TCP_IDLE_MS 10000 /* for a connection to complete its next query */
#define TCP_MSG_MAX CQ_DNS_TCP_MAX

/* What an epoll event is about: id << 4 | kind; a connection's index is added to
 * EV_CONN or EV_CONN_UP. */
enum { EV_UDP = 0, EV_UP = 1, EV_TCP = 2, EV_CONN = 4, EV_CONN_UP = 8 };

enum conn_state {
    C_READ,     /* reading the next query (several may come, one after the other) */
    C_ASK,      /* its upstream connection is open: writing our query, reading the reply */
    C_WAIT_PIN, /* the answer waits for the pinning thread */
    C_WRITE,    /* writing the reply */
};

/* A sandbox's TCP connection to the resolver. Queries are answered one at a time, in
 * order (RFC 7766 allows that); while one is in flight nothing more is read, so what
 * the sandbox sends meanwhile waits in its own socket's buffer. */
struct tcp_conn {
    int fd, up_fd; /* -1: none */
    uint32_t gen;  /* per accept: a pin job answers the connection it was made for */
    enum conn_state state;
    bool in_next;         /* conn_next is on the stack: answers written at once do not recurse */
    uint64_t deadline_ms; /* idle: from accept or the last reply written */
    uint64_t up_deadline_ms;
    uint16_t up_id;
    struct cq_dns_query q;
    uint8_t *in; /* 2 + TCP_MSG_MAX, while the connection lives */
    size_t in_len;
    uint8_t *out; /* the reply, prefixed, while it is written */
    size_t out_len, out_off;
    uint8_t *up; /* 2 + TCP_MSG_MAX while asking: our query, then the upstream's reply */
    size_t up_len, up_off;
};

struct pending {
    bool used;
    uint16_t up_id;
    uint64_t deadline_ms;
    struct sockaddr_in from;
    struct cq_dns_query q;
};

struct pin {
    struct cq_net_addr addr;
    uint16_t port;
};

struct cq_resolver {
    struct cq_resolver *next;
    uint64_t id;
    int netns_fd, slot;
    int listen_fd, up_fd; /* up_fd -1: no upstream reachable, SERVFAIL */
    int tcp_fd;           /* the gateway's TCP port 53 */
    struct sockaddr_storage up_addr;
    socklen_t up_len; /* 0: no upstream */
    uint32_t conn_gen;
    struct tcp_conn conns[TCP_CONNS];
    struct cq_net_addr client;
    struct cq_netpolicy policy;
    struct cq_net_grant grant;
    struct pin *pins; /* policy.max_pinned of them */
    size_t n_pins;
    size_t pins_in_flight; /* answers waiting for the pinning thread */
    struct pending pend[MAX_PENDING];
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int epfd = -1;
static struct cq_resolver *sandboxes;
static uint64_t next_id = 1;
static const struct cq_net_grant public_grant = {.mode = CQ_NETWORK_PUBLIC};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* --- decisions ----------------------------------------------------------------------- */

static bool allowed_at(const struct cq_netpolicy *p, const struct cq_net_addr *a, uint16_t port)
{
    /* The classes, the host, network_deny and network_private, for this port (any
     * port stands as 443 for the question "may it be reached at all"). */
    return cq_netpolicy_check_connect(p, &public_grant, a, port ? port : 443, IPPROTO_TCP, NULL, 0,
                                      NULL) == CQ_NET_ALLOW;
}

size_t cq_resolver_decide(const struct cq_netpolicy *p, const struct cq_net_grant *g,
                          const char *name, const struct cq_net_addr *addr, uint16_t *ports,
                          size_t max_ports)
{
    if (max_ports == 0)
        return 0;
    if (g->mode == CQ_NETWORK_PUBLIC) {
        ports[0] = 0;
        return allowed_at(p, addr, 0) ? 1 : 0;
    }
    if (g->mode != CQ_NETWORK_ALLOWLIST)
        return 0;
    /* A private answer (an internal name, codeq's "VPC" mode) is kept only where
     * network_private opens it, on the ports it opens it: an entry without a port
     * takes the port of each network_private rule that covers the address. Its pins
     * go into sets of their own (cq_egress_pin), which the filter consults only inside
     * network_private. Loopback, link-local, the host and network_deny: allowed_at
     * refuses them whatever the entry says. */
    bool priv = cq_net_classify(addr) == CQ_NET_CLASS_PRIVATE;
    size_t n = 0;
    for (size_t i = 0; i < g->allow.n; i++) {
        const struct cq_net_dest *d = &g->allow.d[i];
        if (d->kind == CQ_NET_DEST_CIDR || !cq_net_dest_covers_name(d, name))
            continue;
        for (size_t r = 0; r < (priv ? p->private_ok.n : 1); r++) {
            uint16_t port = d->port;
            if (priv) {
                const struct cq_net_dest *o = &p->private_ok.d[r];
                if (!cq_net_dest_covers_addr(o, addr) || (o->port && d->port && o->port != d->port))
                    continue;
                port = d->port ? d->port : o->port;
            }
            if (!allowed_at(p, addr, port))
                continue;
            if (port == 0) { /* any port covers every other */
                ports[0] = 0;
                return 1;
            }
            bool dup = false;
            for (size_t k = 0; k < n && !dup; k++)
                dup = ports[k] == port;
            if (!dup && n < max_ports)
                ports[n++] = port;
        }
    }
    return n;
}

int cq_resolver_host_upstream(const char *path, char *buf, size_t len)
{
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return -1;
    char line[256];
    int rc = -1;
    while (rc < 0 && fgets(line, sizeof(line), f) != NULL) {
        char addr[128];
        struct cq_net_addr a;
        if (sscanf(line, " nameserver %127s", addr) == 1 && cq_net_addr_parse(addr, &a) == 0) {
            snprintf(buf, len, "%s", addr);
            rc = 0;
        }
    }
    fclose(f);
    return rc;
}

/* --- answering ----------------------------------------------------------------------- */

static void send_to(struct cq_resolver *r, const struct sockaddr_in *to, const uint8_t *msg,
                    size_t len)
{
    /* Non-blocking: a sandbox that does not read its replies loses them. */
    sendto(r->listen_fd, msg, len, MSG_DONTWAIT, (const struct sockaddr *)to, sizeof(*to));
}

static void send_error(struct cq_resolver *r, const struct sockaddr_in *to,
                       const struct cq_dns_query *q, int rcode)
{
    uint8_t out[CQ_DNS_HEADER + 4 + CQ_DNS_NAME_MAX];
    size_t n = cq_dns_error_reply(q, rcode, out, sizeof(out));
    if (n > 0)
        send_to(r, to, out, n);
}

static bool pinned(const struct cq_resolver *r, const struct cq_net_addr *a, uint16_t port)
{
    for (size_t i = 0; i < r->n_pins; i++)
        if (r->pins[i].port == port && r->pins[i].addr.family == a->family &&
            memcmp(r->pins[i].addr.bytes, a->bytes, 16) == 0)
            return true;
    return false;
}

struct keep_ctx {
    struct cq_resolver *r;
    const char *name;
    size_t n;
    struct pin batch[MAX_BATCH];
};

static bool keep_address(void *arg, int family, const uint8_t *bytes)
{
    struct keep_ctx *k = arg;
    struct cq_resolver *r = k->r;
    struct cq_net_addr a = {.family = family};
    memcpy(a.bytes, bytes, family == AF_INET ? 4 : 16);
    uint16_t ports[MAX_PORTS];
    size_t n = cq_resolver_decide(&r->policy, &r->grant, k->name, &a, ports, MAX_PORTS);
    if (n == 0 || r->grant.mode != CQ_NETWORK_ALLOWLIST)
        return n > 0;
    bool usable = false;
    for (size_t i = 0; i < n; i++) {
        bool known = pinned(r, &a, ports[i]);
        for (size_t b = 0; b < k->n && !known; b++)
            known = k->batch[b].port == ports[i] && k->batch[b].addr.family == a.family &&
                    memcmp(k->batch[b].addr.bytes, a.bytes, 16) == 0;
        if (!known) {
            if (k->n == MAX_BATCH || r->n_pins + k->n >= r->policy.max_pinned)
                continue; /* past network_max_pinned: not given out */
            k->batch[k->n++] = (struct pin){.addr = a, .port = ports[i]};
        }
        usable = true;
    }
    return usable;
}

/* --- pinning -------------------------------------------------------------------------
 *
 * An nftables transaction takes milliseconds (tens when a table was deleted just before
 * in the same namespace: the netlink socket's release waits for an RCU grace period),
 * so answers that pin go to one thread of their own, in order. The pins are counted at
 * once (so that the next answer neither pins them again nor passes network_max_pinned)
 * and taken back if the transaction fails, when the sandbox gets SERVFAIL. */

#define MAX_PIN_JOBS   256 /* answers waiting for their pins, all sandboxes */
#define MAX_PIN_FLIGHT 16  /* of them, one sandbox's: past it, answers are dropped */

struct pin_job {
    struct pin_job *next;
    uint64_t id; /* the resolver's */
    int netns_fd, slot;
    int conn; /* -1: the answer goes to `to` over UDP; else to this TCP connection */
    uint32_t gen;
    struct sockaddr_in to;
    struct cq_dns_query q;
    size_t n, len;
    struct pin pins[MAX_BATCH];
    uint8_t reply[]; /* len bytes */
};

static pthread_mutex_t pin_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pin_cv = PTHREAD_COND_INITIALIZER;
static struct pin_job *pin_head, *pin_tail;
static size_t pin_queued;

static struct cq_resolver *find(uint64_t id);
static void conn_reply(struct cq_resolver *r, struct tcp_conn *c, const uint8_t *msg, size_t len);
static void conn_error(struct cq_resolver *r, struct tcp_conn *c, int rcode);

static void unpin(struct cq_resolver *r, const struct pin *pins, size_t n)
{
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; k < r->n_pins; k++)
            if (r->pins[k].port == pins[i].port && r->pins[k].addr.family == pins[i].addr.family &&
                memcmp(r->pins[k].addr.bytes, pins[i].addr.bytes, 16) == 0) {
                r->pins[k] = r->pins[--r->n_pins];
                break;
            }
}

static void *pinner(void *arg)
{
    (void)arg;
    for (;;) {
        pthread_mutex_lock(&pin_mu);
        while (pin_head == NULL)
            pthread_cond_wait(&pin_cv, &pin_mu);
        struct pin_job *j = pin_head;
        pin_head = j->next;
        if (pin_head == NULL)
            pin_tail = NULL;
        pin_queued--;
        pthread_mutex_unlock(&pin_mu);

        struct cq_net_addr addrs[MAX_BATCH];
        uint16_t ports[MAX_BATCH];
        for (size_t i = 0; i < j->n; i++) {
            addrs[i] = j->pins[i].addr;
            ports[i] = j->pins[i].port;
        }
        int rc = cq_egress_pin(j->netns_fd, j->slot, addrs, ports, j->n, NULL);
        pthread_mutex_lock(&mu);
        struct cq_resolver *r = find(j->id); /* NULL: stopped meanwhile */
        struct tcp_conn *c = r != NULL && j->conn >= 0 ? &r->conns[j->conn] : NULL;
        if (c != NULL) {
            /* Closed meanwhile (or the slot holds a newer connection): nobody to tell. */
            r->pins_in_flight--;
            if (rc != 0)
                unpin(r, j->pins, j->n);
            if (c->fd >= 0 && c->gen == j->gen && c->state == C_WAIT_PIN) {
                if (rc == 0)
                    conn_reply(r, c, j->reply, j->len);
                else
                    conn_error(r, c, CQ_DNS_SERVFAIL);
            }
        } else if (r != NULL) {
            r->pins_in_flight--;
            if (rc == 0) {
                send_to(r, &j->to, j->reply, j->len);
            } else {
                unpin(r, j->pins, j->n);
                send_error(r, &j->to, &j->q, CQ_DNS_SERVFAIL);
            }
        }
        pthread_mutex_unlock(&mu);
        close(j->netns_fd);
        free(j);
    }
    return NULL;
}

/* Under mu. For a UDP query (conn -1) to, else the connection's index and gen. False
 * when the answer was dropped (too many waiting): the stub asks again. */
static bool pin_later(struct cq_resolver *r, const struct sockaddr_in *to, int conn, uint32_t gen,
                      const struct cq_dns_query *q, const struct pin *pins, size_t n,
                      const uint8_t *reply, size_t len)
{
    if (r->pins_in_flight >= MAX_PIN_FLIGHT)
        return false;
    struct pin_job *j = malloc(sizeof(*j) + len);
    if (j == NULL)
        return false;
    *j = (struct pin_job){
        .id = r->id, .slot = r->slot, .conn = conn, .gen = gen, .q = *q, .n = n, .len = len};
    if (to != NULL)
        j->to = *to;
    memcpy(j->pins, pins, n * sizeof(*pins));
    memcpy(j->reply, reply, len);
    j->netns_fd = fcntl(r->netns_fd, F_DUPFD_CLOEXEC, 0);
    pthread_mutex_lock(&pin_mu);
    bool room = pin_queued < MAX_PIN_JOBS && j->netns_fd >= 0;
    if (room) {
        if (pin_tail != NULL)
            pin_tail->next = j;
        else
            pin_head = j;
        pin_tail = j;
        pin_queued++;
        pthread_cond_signal(&pin_cv);
    }
    pthread_mutex_unlock(&pin_mu);
    if (!room) {
        if (j->netns_fd >= 0)
            close(j->netns_fd);
        free(j);
        return false;
    }
    memcpy(r->pins + r->n_pins, pins, n * sizeof(*pins));
    r->n_pins += n;
    r->pins_in_flight++;
    return true;
}

static void on_reply(struct cq_resolver *r, const uint8_t *msg, size_t len)
{
    if (len < CQ_DNS_HEADER)
        return;
    uint16_t id = (uint16_t)(msg[0] << 8 | msg[1]);
    struct pending *p = NULL;
    for (size_t i = 0; i < MAX_PENDING && p == NULL; i++)
        if (r->pend[i].used && r->pend[i].up_id == id)
            p = &r->pend[i];
    if (p == NULL)
        return; /* late, or not ours */
    static __thread struct keep_ctx k;
    k.r = r;
    k.name = p->q.name;
    k.n = 0;
    uint8_t out[CQ_DNS_UDP_MAX];
    size_t n = cq_dns_filter_reply(msg, len, id, &p->q, keep_address, &k, out, sizeof(out));
    if (n == 0) {
        send_error(r, &p->from, &p->q, CQ_DNS_SERVFAIL);
    } else if (k.n > 0) {
        /* The answer is released only once the filter lets its addresses through: by
         * the pinning thread, so that this one goes on serving everyone else. */
        pin_later(r, &p->from, -1, 0, &p->q, k.batch, k.n, out, n);
    } else {
        send_to(r, &p->from, out, n);
    }
    p->used = false;
}

static void fail_pending(struct cq_resolver *r, bool all, uint64_t now)
{
    for (size_t i = 0; i < MAX_PENDING; i++)
        if (r->pend[i].used && (all || r->pend[i].deadline_ms <= now)) {
            send_error(r, &r->pend[i].from, &r->pend[i].q, CQ_DNS_SERVFAIL);
            r->pend[i].used = false;
        }
}

static void on_query(struct cq_resolver *r, const uint8_t *msg, size_t len,
                     const struct sockaddr_in *from)
{
    struct cq_dns_query q;
    int rc = cq_dns_parse_query(msg, len, &q);
    if (rc < 0)
        return;
    if (rc > 0) {
        send_error(r, from, &q, rc);
        return;
    }
    if (!cq_netpolicy_name_allowed(&r->grant, q.name)) {
        send_error(r, from, &q, CQ_DNS_NXDOMAIN);
        return;
    }
    if (r->up_fd < 0) {
        send_error(r, from, &q, CQ_DNS_SERVFAIL);
        return;
    }
    struct pending *p = NULL;
    for (size_t i = 0; i < MAX_PENDING && p == NULL; i++)
        if (!r->pend[i].used)
            p = &r->pend[i];
    if (p == NULL)
        return; /* a flood: bounded, dropped; an honest stub asks again */
    uint16_t id;
    bool unique;
    do {
        if (getrandom(&id, sizeof(id), 0) != sizeof(id))
            return;
        unique = true;
        for (size_t i = 0; i < MAX_PENDING && unique; i++)
            unique = !(r->pend[i].used && r->pend[i].up_id == id);
    } while (!unique);
    uint8_t out[CQ_DNS_HEADER + CQ_DNS_NAME_MAX + 4 + 11];
    size_t n = cq_dns_write_query(&q, id, out, sizeof(out));
    if (n == 0 || send(r->up_fd, out, n, MSG_DONTWAIT) < 0) {
        send_error(r, from, &q, CQ_DNS_SERVFAIL);
        return;
    }
    *p = (struct pending){
        .used = true, .up_id = id, .deadline_ms = now_ms() + PENDING_MS, .from = *from, .q = q};
}

static void serve(struct cq_resolver *r, bool upstream)
{
    static __thread uint8_t buf[RECV_MAX];
    for (int i = 0; i < BURST; i++) {
        struct sockaddr_in from;
        socklen_t flen = sizeof(from);
        ssize_t n = upstream ? recv(r->up_fd, buf, sizeof(buf), MSG_DONTWAIT)
                             : recvfrom(r->listen_fd, buf, sizeof(buf), MSG_DONTWAIT,
                                        (struct sockaddr *)&from, &flen);
        if (n < 0) {
            /* An ICMP error on the connected socket (nobody listens there, no
             * route): every query waiting on it fails now rather than in 3 s. */
            if (upstream && errno != EAGAIN && errno != EINTR)
                fail_pending(r, true, 0);
            return;
        }
        if (upstream) {
            on_reply(r, buf, (size_t)n);
            continue;
        }
        /* Only the sandbox's own address (the filter drops forged sources too). */
        if (flen != sizeof(from) || from.sin_family != AF_INET ||
            memcmp(&from.sin_addr, r->client.bytes, 4) != 0)
            continue;
        on_query(r, buf, (size_t)n, &from);
    }
}

/* --- TCP ------------------------------------------------------------------------------
 *
 * A reply larger than the client takes over UDP goes back truncated, and the stub asks
 * again over TCP (RFC 7766): messages prefixed with their 2-byte length, several per
 * connection. Each connection is bounded the way a slow or hostile sandbox needs: at
 * most TCP_CONNS per sandbox (past them a new one is closed at once), TCP_IDLE_MS to
 * complete each query (counted from accept or the last reply, never from the last
 * byte: one byte every few seconds does not keep a slot), non-blocking sockets read
 * and written as far as they go, into buffers of the connection's own.
 *
 * The upstream is asked over TCP as well, one connection per query, made in the egress
 * namespace: a client asks over TCP because a UDP answer did not fit, so asking the
 * upstream over UDP again would mostly bring a truncated answer and a second round
 * trip. The query is still codeq's (its own random id, the same question) and the
 * reply is checked and rebuilt as a UDP one, with no size limit but the prefix's. */

static void conn_events(struct cq_resolver *r, struct tcp_conn *c)
{
    struct epoll_event ev = {.data.u64 = r->id << 4 | (uint64_t)(EV_CONN + (c - r->conns))};
    ev.events = c->state == C_READ ? EPOLLIN : c->state == C_WRITE ? EPOLLOUT : 0;
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Closed with a reset: the side that closes first keeps TIME_WAIT for a minute, and a
 * sandbox asking (or connecting) as fast as it can would otherwise fill the egress
 * namespace's ports with them. */
static void close_reset(int fd)
{
    struct linger l = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
    close(fd);
}

static void up_close(struct tcp_conn *c)
{
    if (c->up_fd >= 0) {
        epoll_ctl(epfd, EPOLL_CTL_DEL, c->up_fd, NULL);
        close_reset(c->up_fd);
        c->up_fd = -1;
    }
    free(c->up);
    c->up = NULL;
}

static void conn_close(struct tcp_conn *c)
{
    up_close(c);
    if (c->fd >= 0) {
        epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
    }
    free(c->in);
    free(c->out);
    c->in = c->out = NULL;
}

static void conn_next(struct cq_resolver *r, struct tcp_conn *c);

static void conn_write(struct cq_resolver *r, struct tcp_conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n =
            send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return; /* EPOLLOUT brings us back */
        if (n <= 0) {
            conn_close(c);
            return;
        }
        c->out_off += (size_t)n;
    }
    free(c->out);
    c->out = NULL;
    c->state = C_READ;
    c->deadline_ms = now_ms() + TCP_IDLE_MS;
    conn_events(r, c);
    conn_next(r, c); /* a query sent meanwhile may be read already */
}

static void conn_reply(struct cq_resolver *r, struct tcp_conn *c, const uint8_t *msg, size_t len)
{
    up_close(c);
    c->out = malloc(len + 2);
    if (c->out == NULL) {
        conn_close(c);
        return;
    }
    c->out[0] = (uint8_t)(len >> 8);
    c->out[1] = (uint8_t)len;
    memcpy(c->out + 2, msg, len);
    c->out_len = len + 2;
    c->out_off = 0;
    c->state = C_WRITE;
    conn_events(r, c);
    conn_write(r, c);
}

static void conn_error(struct cq_resolver *r, struct tcp_conn *c, int rcode)
{
    uint8_t out[CQ_DNS_HEADER + 4 + CQ_DNS_NAME_MAX];
    size_t n = cq_dns_error_reply(&c->q, rcode, out, sizeof(out));
    if (n == 0)
        conn_close(c);
    else
        conn_reply(r, c, out, n);
}

struct stream_job {
    int netns_fd, family, fd, code;
};

static void *make_stream(void *arg)
{
    struct stream_job *j = arg;
    if (setns(j->netns_fd, CLONE_NEWNET) < 0) {
        j->code = errno;
        return NULL;
    }
    j->fd = socket(j->family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    return NULL;
}

/* Our query for c->q to the upstream over TCP; false when it cannot be asked. */
static bool conn_ask(struct cq_resolver *r, struct tcp_conn *c)
{
    if (r->up_len == 0)
        return false;
    /* A socket belongs to the namespace it was made in: made by a short-lived thread
     * that entered the egress namespace (tens of microseconds, once per TCP query). */
    struct stream_job j = {.netns_fd = r->netns_fd, .family = r->up_addr.ss_family, .fd = -1};
    pthread_t t;
    if (pthread_create(&t, NULL, make_stream, &j) != 0)
        return false;
    pthread_join(t, NULL);
    if (j.fd < 0)
        return false;
    c->up_fd = j.fd;
    c->up = malloc(2 + TCP_MSG_MAX);
    if (c->up == NULL || getrandom(&c->up_id, sizeof(c->up_id), 0) != sizeof(c->up_id))
        return false;
    size_t n = cq_dns_write_query(&c->q, c->up_id, c->up + 2, TCP_MSG_MAX);
    if (n == 0)
        return false;
    c->up[0] = (uint8_t)(n >> 8);
    c->up[1] = (uint8_t)n;
    c->up_len = n + 2;
    c->up_off = 0;
    if (connect(c->up_fd, (struct sockaddr *)&r->up_addr, r->up_len) < 0 && errno != EINPROGRESS)
        return false;
    struct epoll_event ev = {.events = EPOLLOUT,
                             .data.u64 = r->id << 4 | (uint64_t)(EV_CONN_UP + (c - r->conns))};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->up_fd, &ev) < 0)
        return false;
    c->up_deadline_ms = now_ms() + PENDING_MS;
    c->state = C_ASK;
    conn_events(r, c);
    return true;
}

/* The next query in c->in, if it is complete. */
static void conn_next(struct cq_resolver *r, struct tcp_conn *c)
{
    if (c->in_next)
        return;
    c->in_next = true;
    while (c->fd >= 0 && c->state == C_READ) {
        size_t len;
        int f = cq_dns_tcp_frame(c->in, c->in_len, &len);
        if (f < 0)
            conn_close(c); /* not a query: nothing to answer it with */
        if (f <= 0)
            break;
        int rc = cq_dns_parse_query(c->in + 2, len, &c->q);
        c->in_len -= 2 + len;
        memmove(c->in, c->in + 2 + len, c->in_len);
        if (rc < 0) {
            conn_close(c);
            break;
        }
        c->q.udp_size = CQ_DNS_TCP_MAX; /* over TCP, a reply is limited by the prefix only */
        if (rc > 0)
            conn_error(r, c, rc);
        else if (!cq_netpolicy_name_allowed(&r->grant, c->q.name))
            conn_error(r, c, CQ_DNS_NXDOMAIN);
        else if (!conn_ask(r, c))
            conn_error(r, c, CQ_DNS_SERVFAIL);
    }
    c->in_next = false;
}

static void conn_read(struct cq_resolver *r, struct tcp_conn *c)
{
    while (c->fd >= 0 && c->state == C_READ) {
        ssize_t n = recv(c->fd, c->in + c->in_len, 2 + TCP_MSG_MAX - c->in_len, MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        if (n <= 0) {
            conn_close(c);
            return;
        }
        c->in_len += (size_t)n;
        conn_next(r, c);
    }
}

static void conn_upstream(struct cq_resolver *r, struct tcp_conn *c)
{
    if (c->state != C_ASK)
        return;
    if (c->up_off < c->up_len) { /* connecting, or writing our query */
        ssize_t n =
            send(c->up_fd, c->up + c->up_off, c->up_len - c->up_off, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        if (n <= 0) { /* refused, unreachable: at once, not after PENDING_MS */
            conn_error(r, c, CQ_DNS_SERVFAIL);
            return;
        }
        c->up_off += (size_t)n;
        if (c->up_off == c->up_len) {
            c->up_len = 0; /* the buffer now takes the reply */
            struct epoll_event ev = {.events = EPOLLIN,
                                     .data.u64 =
                                         r->id << 4 | (uint64_t)(EV_CONN_UP + (c - r->conns))};
            epoll_ctl(epfd, EPOLL_CTL_MOD, c->up_fd, &ev);
        }
        return;
    }
    ssize_t n = recv(c->up_fd, c->up + c->up_len, 2 + TCP_MSG_MAX - c->up_len, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        conn_error(r, c, CQ_DNS_SERVFAIL);
        return;
    }
    c->up_len += (size_t)n;
    size_t len;
    int f = cq_dns_tcp_frame(c->up, c->up_len, &len);
    if (f < 0)
        conn_error(r, c, CQ_DNS_SERVFAIL);
    if (f <= 0)
        return;
    static __thread struct keep_ctx k;
    static __thread uint8_t out[TCP_MSG_MAX];
    k.r = r;
    k.name = c->q.name;
    k.n = 0;
    size_t m =
        cq_dns_filter_reply(c->up + 2, len, c->up_id, &c->q, keep_address, &k, out, sizeof(out));
    up_close(c);
    if (m == 0) {
        conn_error(r, c, CQ_DNS_SERVFAIL);
    } else if (k.n > 0) {
        c->state = C_WAIT_PIN;
        if (!pin_later(r, NULL, (int)(c - r->conns), c->gen, &c->q, k.batch, k.n, out, m))
            conn_error(r, c, CQ_DNS_SERVFAIL);
    } else {
        conn_reply(r, c, out, m);
    }
}

static void on_accept(struct cq_resolver *r)
{
    for (int i = 0; i < BURST; i++) {
        struct sockaddr_in from;
        socklen_t flen = sizeof(from);
        int fd = accept4(r->tcp_fd, (struct sockaddr *)&from, &flen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        struct tcp_conn *c = NULL;
        for (size_t k = 0; k < TCP_CONNS && c == NULL; k++)
            if (r->conns[k].fd < 0)
                c = &r->conns[k];
        /* Past TCP_CONNS the sandbox's new connection is closed: it waits for its own. */
        uint8_t *in = c != NULL ? malloc(2 + TCP_MSG_MAX) : NULL;
        if (in == NULL || flen != sizeof(from) || from.sin_family != AF_INET ||
            memcmp(&from.sin_addr, r->client.bytes, 4) != 0) {
            free(in);
            close_reset(fd);
            continue;
        }
        *c = (struct tcp_conn){.fd = fd,
                               .up_fd = -1,
                               .gen = ++r->conn_gen,
                               .state = C_READ,
                               .deadline_ms = now_ms() + TCP_IDLE_MS,
                               .in = in};
        struct epoll_event ev = {.events = EPOLLIN,
                                 .data.u64 = r->id << 4 | (uint64_t)(EV_CONN + (c - r->conns))};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
            conn_close(c);
    }
}

static void sweep_conns(struct cq_resolver *r, uint64_t now)
{
    for (size_t i = 0; i < TCP_CONNS; i++) {
        struct tcp_conn *c = &r->conns[i];
        if (c->fd < 0)
            continue;
        if (c->state == C_ASK && c->up_deadline_ms <= now)
            conn_error(r, c, CQ_DNS_SERVFAIL);
        else if ((c->state == C_READ || c->state == C_WRITE) && c->deadline_ms <= now)
            conn_close(c);
    }
}

static struct cq_resolver *find(uint64_t id)
{
    for (struct cq_resolver *r = sandboxes; r != NULL; r = r->next)
        if (r->id == id)
            return r;
    return NULL;
}

static void *run(void *arg)
{
    (void)arg;
    struct epoll_event ev[32];
    uint64_t last_sweep = now_ms();
    for (;;) {
        int n = epoll_wait(epfd, ev, 32, 500);
        pthread_mutex_lock(&mu);
        for (int i = 0; i < n; i++) {
            /* By id, not pointer: a sandbox stopped meanwhile is simply not found. */
            struct cq_resolver *r = find(ev[i].data.u64 >> 4);
            unsigned kind = ev[i].data.u64 & 15;
            if (r == NULL)
                continue;
            if (kind == EV_UDP || kind == EV_UP)
                serve(r, kind == EV_UP);
            else if (kind == EV_TCP)
                on_accept(r);
            else if (kind >= EV_CONN_UP && kind < EV_CONN_UP + TCP_CONNS)
                conn_upstream(r, &r->conns[kind - EV_CONN_UP]);
            else if (kind >= EV_CONN && kind < EV_CONN + TCP_CONNS &&
                     r->conns[kind - EV_CONN].fd >= 0) {
                struct tcp_conn *c = &r->conns[kind - EV_CONN];
                if (ev[i].events & (EPOLLERR | EPOLLHUP))
                    conn_close(c); /* reset: reported whatever it waits for */
                else if (c->state == C_READ)
                    conn_read(r, c);
                else if (c->state == C_WRITE)
                    conn_write(r, c);
            }
        }
        uint64_t now = now_ms();
        if (now - last_sweep >= 250) {
            for (struct cq_resolver *r = sandboxes; r != NULL; r = r->next) {
                fail_pending(r, false, now);
                sweep_conns(r, now);
            }
            last_sweep = now;
        }
        pthread_mutex_unlock(&mu);
    }
    return NULL;
}

/* --- starting and stopping ----------------------------------------------------------- */

struct sock_job {
    int netns_fd;
    struct sockaddr_in listen;
    struct sockaddr_storage up;
    socklen_t up_len;
    int listen_fd, up_fd, tcp_fd;
    int code;
    char msg[160];
};

static void *make_sockets(void *arg)
{
    struct sock_job *j = arg;
    if (setns(j->netns_fd, CLONE_NEWNET) < 0) {
        j->code = errno;
        snprintf(j->msg, sizeof(j->msg), "enter the egress namespace: %s", strerror(errno));
        return NULL;
    }
    j->listen_fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (j->listen_fd < 0 ||
        bind(j->listen_fd, (struct sockaddr *)&j->listen, sizeof(j->listen)) < 0) {
        j->code = errno;
        snprintf(j->msg, sizeof(j->msg), "resolver socket on the gateway: %s", strerror(errno));
        return NULL;
    }
    /* SO_REUSEADDR: a gateway address comes back with its slot, maybe while the last
     * sandbox's connections are still in TIME_WAIT. */
    int one = 1;
    j->tcp_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (j->tcp_fd < 0 || setsockopt(j->tcp_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        bind(j->tcp_fd, (struct sockaddr *)&j->listen, sizeof(j->listen)) < 0 ||
        listen(j->tcp_fd, 8) < 0) {
        j->code = errno;
        snprintf(j->msg, sizeof(j->msg), "resolver TCP socket on the gateway: %s", strerror(errno));
        return NULL;
    }
    if (j->up_len == 0)
        return NULL;
    /* Connected: the kernel takes replies from the upstream's address and port only,
     * and reports its ICMP errors. Failing to connect (no route from the egress
     * namespace) leaves no upstream: queries get SERVFAIL. */
    j->up_fd = socket(j->up.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (j->up_fd >= 0 && connect(j->up_fd, (struct sockaddr *)&j->up, j->up_len) < 0) {
        close(j->up_fd);
        j->up_fd = -1;
    }
    return NULL;
}

static int upstream_addr(const char *text, struct sockaddr_storage *ss, socklen_t *len)
{
    char host[128];
    *len = 0;
    if (text == NULL) {
        if (cq_resolver_host_upstream("/etc/resolv.conf", host, sizeof(host)) < 0)
            return 0; /* none: SERVFAIL */
        text = host;
    }
    struct cq_net_addr a;
    if (cq_net_addr_parse(text, &a) < 0)
        return -1;
    memset(ss, 0, sizeof(*ss));
    if (a.family == AF_INET) {
        struct sockaddr_in *s = (struct sockaddr_in *)ss;
        s->sin_family = AF_INET;
        s->sin_port = htons(53);
        memcpy(&s->sin_addr, a.bytes, 4);
        *len = sizeof(*s);
    } else {
        struct sockaddr_in6 *s = (struct sockaddr_in6 *)ss;
        s->sin6_family = AF_INET6;
        s->sin6_port = htons(53);
        memcpy(&s->sin6_addr, a.bytes, 16);
        *len = sizeof(*s);
    }
    return 0;
}

static int ensure_thread(struct cq_error *err)
{
    if (epfd >= 0)
        return 0;
    int fd = epoll_create1(EPOLL_CLOEXEC);
    if (fd < 0)
        return cq_error_sys(err, errno, "resolver epoll");
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    epfd = fd;
    /* Both live as long as the process: they hold nothing while no sandbox is
     * networked. */
    static bool pinner_started;
    int rc = pinner_started ? 0 : pthread_create(&t, &attr, pinner, NULL);
    pinner_started = pinner_started || rc == 0;
    if (rc == 0)
        rc = pthread_create(&t, &attr, run, NULL);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        close(fd);
        epfd = -1;
        return cq_error_sys(err, rc, "resolver thread");
    }
    return 0;
}

static void free_resolver(struct cq_resolver *r)
{
    for (size_t i = 0; i < TCP_CONNS; i++)
        conn_close(&r->conns[i]);
    if (r->tcp_fd >= 0)
        close(r->tcp_fd);
    if (r->listen_fd >= 0)
        close(r->listen_fd);
    if (r->up_fd >= 0)
        close(r->up_fd);
    if (r->netns_fd >= 0)
        close(r->netns_fd);
    free(r->pins);
    free(r);
}

int cq_resolver_start(const struct cq_resolver_config *c, struct cq_resolver **out,
                      struct cq_error *err)
{
    struct cq_resolver *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return cq_error_sys(err, ENOMEM, "resolver");
    r->listen_fd = r->up_fd = r->tcp_fd = -1;
    for (size_t i = 0; i < TCP_CONNS; i++)
        r->conns[i].fd = r->conns[i].up_fd = -1;
    r->netns_fd = fcntl(c->netns_fd, F_DUPFD_CLOEXEC, 0);
    r->slot = c->slot;
    r->client = c->client;
    if (c->policy != NULL)
        r->policy = *c->policy;
    else
        cq_netpolicy_init(&r->policy);
    r->grant = *c->grant;
    r->pins = calloc(r->policy.max_pinned > 0 ? r->policy.max_pinned : 1, sizeof(*r->pins));
    struct sock_job j = {.netns_fd = c->netns_fd, .listen_fd = -1, .up_fd = -1, .tcp_fd = -1};
    j.listen.sin_family = AF_INET;
    j.listen.sin_port = htons(53);
    memcpy(&j.listen.sin_addr, c->listen.bytes, 4);
    if (r->netns_fd < 0 || r->pins == NULL) {
        free_resolver(r);
        return cq_error_sys(err, errno ? errno : ENOMEM, "resolver");
    }
    if (upstream_addr(c->upstream, &j.up, &j.up_len) < 0) {
        free_resolver(r);
        return cq_error_set(err, CQ_EINVALID, "resolver '%s' is not an IP address", c->upstream);
    }
    pthread_t t;
    int rc = pthread_create(&t, NULL, make_sockets, &j);
    if (rc == 0)
        pthread_join(t, NULL);
    r->listen_fd = j.listen_fd;
    r->up_fd = j.up_fd;
    r->tcp_fd = j.tcp_fd;
    r->up_addr = j.up;
    r->up_len = j.up_len;
    if (rc != 0 || j.code != 0) {
        free_resolver(r);
        if (rc != 0)
            return cq_error_sys(err, rc, "thread for the resolver's sockets");
        return cq_error_set(err, j.code, "%s", j.msg);
    }
    pthread_mutex_lock(&mu);
    if (ensure_thread(err) < 0) {
        pthread_mutex_unlock(&mu);
        free_resolver(r);
        return -1;
    }
    r->id = next_id++;
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = r->id << 4 | EV_UDP};
    bool ok = epoll_ctl(epfd, EPOLL_CTL_ADD, r->listen_fd, &ev) == 0;
    ev.data.u64 = r->id << 4 | EV_UP;
    ok = ok && (r->up_fd < 0 || epoll_ctl(epfd, EPOLL_CTL_ADD, r->up_fd, &ev) == 0);
    ev.data.u64 = r->id << 4 | EV_TCP;
    ok = ok && epoll_ctl(epfd, EPOLL_CTL_ADD, r->tcp_fd, &ev) == 0;
    int saved = errno;
    if (ok) {
        r->next = sandboxes;
        sandboxes = r;
    }
    pthread_mutex_unlock(&mu);
    if (!ok) {
        free_resolver(r); /* closing its fds takes them out of the epoll set */
        return cq_error_sys(err, saved, "resolver epoll");
    }
    *out = r;
    return 0;
}

void cq_resolver_set_grant(struct cq_resolver *r, const struct cq_net_grant *g)
{
    pthread_mutex_lock(&mu);
    r->grant = *g;
    pthread_mutex_unlock(&mu);
}

void cq_resolver_stop(struct cq_resolver *r)
{
    if (r == NULL)
        return;
    pthread_mutex_lock(&mu);
    for (struct cq_resolver **at = &sandboxes; *at != NULL; at = &(*at)->next)
        if (*at == r) {
            *at = r->next;
            break;
        }
    /* Out of the set before the fds close, so a reused fd number cannot inherit it. */
    epoll_ctl(epfd, EPOLL_CTL_DEL, r->listen_fd, NULL);
    if (r->up_fd >= 0)
        epoll_ctl(epfd, EPOLL_CTL_DEL, r->up_fd, NULL);
    epoll_ctl(epfd, EPOLL_CTL_DEL, r->tcp_fd, NULL);
    for (size_t i = 0; i < TCP_CONNS; i++)
        conn_close(&r->conns[i]); /* under mu: the thread may be using them */
    pthread_mutex_unlock(&mu);
    free_resolver(r);
}
