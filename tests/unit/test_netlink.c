/* tests/unit/test_netlink.c - sandbox/netlink.c: veth pairs between two network
 * namespaces, their addresses and routes, made from outside both, and real packets
 * across them. Needs root; the namespaces are this test's own (cqtest-net-<pid>-*) and
 * are removed after each test. */
#define _GNU_SOURCE
#include "sandbox/netlink.h"
#include "common/clock.h"
#include "unit.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static char ns_a[64], ns_b[64];
static int fd_a = -1, fd_b = -1;

static void run(const char *fmt, const char *arg)
{
    char cmd[256];
    snprintf(cmd, sizeof(cmd), fmt, arg);
    ck_assert_msg(system(cmd) == 0, "%s failed", cmd);
}

static void setup(void)
{
    ck_assert_msg(geteuid() == 0, "needs root (network namespaces)");
    snprintf(ns_a, sizeof(ns_a), "cqtest-net-%d-nla", getpid());
    snprintf(ns_b, sizeof(ns_b), "cqtest-net-%d-nlb", getpid());
    run("ip netns add %s", ns_a);
    run("ip netns add %s", ns_b);
    char path[128];
    snprintf(path, sizeof(path), "/run/netns/%s", ns_a);
    fd_a = open(path, O_RDONLY | O_CLOEXEC);
    snprintf(path, sizeof(path), "/run/netns/%s", ns_b);
    fd_b = open(path, O_RDONLY | O_CLOEXEC);
    ck_assert(fd_a >= 0 && fd_b >= 0);
}

static void teardown(void)
{
    close(fd_a);
    close(fd_b);
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "ip netns del %s; ip netns del %s", ns_a, ns_b);
    ck_assert_int_eq(system(cmd), 0);
}

static struct cq_net_addr addr(const char *text)
{
    struct cq_net_addr a;
    ck_assert_msg(cq_net_addr_parse(text, &a) == 0, "%s", text);
    return a;
}

static int nl_in(int netns_fd)
{
    struct cq_error err = {0};
    int nl = cq_nl_open(netns_fd, &err);
    ck_assert_msg(nl >= 0, "%s", err.msg);
    return nl;
}

/* A socket made in another namespace (by a thread that enters it). */
struct sock_job {
    int netns_fd, family, type, fd;
};

static void *make_socket(void *arg)
{
    struct sock_job *j = arg;
    if (setns(j->netns_fd, CLONE_NEWNET) == 0)
        j->fd = socket(j->family, j->type | SOCK_CLOEXEC, 0);
    return NULL;
}

static int socket_in(int netns_fd, int family, int type)
{
    struct sock_job j = {netns_fd, family, type, -1};
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, make_socket, &j), 0);
    pthread_join(t, NULL);
    ck_assert_msg(j.fd >= 0, "socket in namespace");
    return j.fd;
}

/* a <-> b: veth "cqa0" in a, "cqb0" in b; a has .1, b has .2 and a default route via a. */
static void wire(int nl_a, int nl_b)
{
    struct cq_error err = {0};
    ck_assert_msg(cq_nl_veth_add(nl_a, "cqa0", "cqb0", fd_b, &err) == 0, "%s", err.msg);
    int ia = cq_nl_link_index(nl_a, "cqa0", &err), ib = cq_nl_link_index(nl_b, "cqb0", &err);
    ck_assert_msg(ia > 0 && ib > 0, "%s", err.msg);
    struct cq_net_addr a4 = addr("203.0.113.129"), b4 = addr("203.0.113.130");
    struct cq_net_addr a6 = addr("2001:db8:ff::1"), b6 = addr("2001:db8:ff::2");
    ck_assert_msg(cq_nl_addr_add(nl_a, ia, &a4, 30, &err) == 0, "%s", err.msg);
    ck_assert_msg(cq_nl_addr_add(nl_a, ia, &a6, 64, &err) == 0, "%s", err.msg);
    ck_assert_msg(cq_nl_addr_add(nl_b, ib, &b4, 30, &err) == 0, "%s", err.msg);
    ck_assert_msg(cq_nl_addr_add(nl_b, ib, &b6, 64, &err) == 0, "%s", err.msg);
    ck_assert_msg(cq_nl_link_up(nl_a, ia, &err) == 0, "%s", err.msg);
    ck_assert_msg(cq_nl_link_up(nl_b, ib, &err) == 0, "%s", err.msg);
    ck_assert_msg(cq_nl_route_default(nl_b, ib, &a4, &err) == 0, "%s", err.msg);
    ck_assert_msg(cq_nl_route_default(nl_b, ib, &a6, &err) == 0, "%s", err.msg);
}

static void udp_across(int family, const char *to_text)
{
    int rx = socket_in(fd_a, family, SOCK_DGRAM), tx = socket_in(fd_b, family, SOCK_DGRAM);
    struct cq_net_addr to = addr(to_text);
    struct sockaddr_storage ss = {0};
    socklen_t len;
    if (family == AF_INET) {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        s4->sin_family = AF_INET;
        s4->sin_port = htons(9999);
        memcpy(&s4->sin_addr, to.bytes, 4);
        len = sizeof(*s4);
    } else {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(9999);
        memcpy(&s6->sin6_addr, to.bytes, 16);
        len = sizeof(*s6);
    }
    ck_assert_msg(bind(rx, (struct sockaddr *)&ss, len) == 0, "bind %s: %m", to_text);
    ck_assert_msg(sendto(tx, "hello", 5, 0, (struct sockaddr *)&ss, len) == 5, "send %s: %m",
                  to_text);
    struct timeval tv = {.tv_sec = 3};
    setsockopt(rx, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    char buf[16] = {0};
    ck_assert_msg(recv(rx, buf, sizeof(buf), 0) == 5, "nothing arrived at %s", to_text);
    ck_assert_str_eq(buf, "hello");
    close(rx);
    close(tx);
}

START_TEST(veth_between_namespaces_carries_packets)
{
    int nl_a = nl_in(fd_a), nl_b = nl_in(fd_b);
    uint64_t t0 = cq_now_us();
    wire(nl_a, nl_b);
    fprintf(stderr, "veth pair wired (2 addresses each, up, 2 routes) in %llu us\n",
            (unsigned long long)(cq_now_us() - t0));
    udp_across(AF_INET, "203.0.113.129");
    udp_across(AF_INET6, "2001:db8:ff::1");
    /* Deleting one end removes the other, in the other namespace. */
    struct cq_error err = {0};
    ck_assert_msg(cq_nl_link_del(nl_a, "cqa0", &err) == 0, "%s", err.msg);
    ck_assert_int_eq(cq_nl_link_index(nl_b, "cqb0", &err), -1);
    ck_assert_int_eq(err.code, ENODEV);
    close(nl_a);
    close(nl_b);
}
END_TEST

START_TEST(errors_name_the_request)
{
    int nl_a = nl_in(fd_a), nl_b = nl_in(fd_b);
    wire(nl_a, nl_b);
    struct cq_error err = {0};
    ck_assert_int_eq(cq_nl_veth_add(nl_a, "cqa0", "cqb9", fd_b, &err), -1);
    ck_assert_int_eq(err.code, EEXIST);
    ck_assert_msg(strstr(err.msg, "create veth cqa0/cqb9") != NULL, "%s", err.msg);
    ck_assert_int_eq(cq_nl_link_index(nl_a, "nosuchlink", &err), -1);
    ck_assert_int_eq(err.code, ENODEV);
    ck_assert_msg(strstr(err.msg, "find link nosuchlink") != NULL, "%s", err.msg);
    ck_assert_int_eq(cq_nl_veth_add(nl_a, "a-name-that-is-too-long", "x", fd_b, &err), -1);
    ck_assert_int_eq(err.code, CQ_EINVALID);
    ck_assert_int_eq(cq_nl_veth_add(nl_a, "", "x", fd_b, &err), -1);
    struct cq_net_addr a4 = addr("203.0.113.129");
    ck_assert_int_eq(cq_nl_addr_add(nl_a, 99999, &a4, 30, &err), -1);
    ck_assert_msg(strstr(err.msg, "add address 203.0.113.129/30 to link 99999") != NULL, "%s",
                  err.msg);
    ck_assert_int_eq(cq_nl_addr_add(nl_a, 1, &a4, 33, &err), -1);
    ck_assert_int_eq(err.code, CQ_EINVALID);
    ck_assert_int_eq(cq_nl_route_default(nl_b, cq_nl_link_index(nl_b, "cqb0", &err), &a4, &err),
                     -1);
    ck_assert_int_eq(err.code, EEXIST);
    int own = cq_nl_open(-1, &err); /* the caller's own namespace */
    ck_assert_int_ge(own, 0);
    close(own);
    ck_assert_int_eq(cq_nl_open(100 /* not open */, &err), -1);
    ck_assert_int_eq(err.code, EBADF);
    close(nl_a);
    close(nl_b);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("netlink");
    TCase *tc = tcase_create("netlink");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, veth_between_namespaces_carries_packets);
    tcase_add_test(tc, errors_name_the_request);
    suite_add_tcase(s, tc);
    return cq_unit_run(s, true);
}
