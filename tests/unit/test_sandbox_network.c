/* tests/unit/test_sandbox_network.c - cq_sandbox_network_allow: a warm ALLOWLIST sandbox
 * (created with no list) reaches nothing and resolves nothing until it is given its
 * list, once.
 *
 * The test builds its own two namespaces (root needed, as for every sandbox test): an
 * egress namespace and a "target" behind it holding 198.51.100.7 (documentation space),
 * where a TCP echo listens; nothing leaves the machine. The upstream resolver named is
 * 198.51.100.53, where nothing listens: a name the resolver may ask gets SERVFAIL
 * (EAI_AGAIN in the sandbox), one it may not gets NXDOMAIN (EAI_NONAME). The target
 * also holds 10.99.0.7 and 10.99.0.8, private addresses of a namespace the test made,
 * for the operator's policy: network_private opens them in PUBLIC, and in ALLOWLIST
 * where the list names them (codeq's "VPC" mode), network_deny closes a public one.
 * The echo listens on ports 7 and 17, so that a port the filter refuses can be told
 * from one where nothing listens.
 */
#define _GNU_SOURCE
#include "sandbox/netpolicy.h"
#include "sandbox/sandbox.h"
#include "unit.h"

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char egress_ns[64], target_ns[64], egress_path[96];
static pid_t echo_pid = -1, dns_pid = -1;

/* A DNS server in the target: many.test has two addresses (both the target's, where the
 * echo listens), db.test the private 10.99.0.7 (an internal name), every other name
 * NXDOMAIN. */
static const char dns_server[] =
    "import socket, struct\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('198.51.100.54', 53))\n"
    "names = {b'\\x04many\\x04test\\x00': [b'\\xc6\\x33\\x64\\x07', b'\\xc6\\x33\\x64\\x08'],\n"
    "         b'\\x02db\\x04test\\x00': [b'\\x0a\\x63\\x00\\x07']}\n"
    "while True:\n"
    "    q, peer = s.recvfrom(512)\n"
    "    end = q.index(b'\\0', 12) + 5\n"
    "    name, qtype = q[12:end - 4], struct.unpack('>H', q[end - 4:end - 2])[0]\n"
    "    known = name in names\n"
    "    addrs = names[name] if known and qtype == 1 else []\n"
    "    head = struct.pack('>HHHHHH', struct.unpack('>H', q[:2])[0], 0x8180 if known else 0x8183,"
    " 1, len(addrs), 0, 0)\n"
    "    rrs = b''.join(b'\\xc0\\x0c' + struct.pack('>HHIH', 1, 1, 60, 4) + a for a in addrs)\n"
    "    s.sendto(head + q[12:end] + rrs, peer)\n";

static void sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void sh(const char *fmt, ...)
{
    char cmd[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    int rc = system(cmd);
    ck_assert_msg(rc == 0, "'%s' failed (%d)", cmd, rc);
}

static void setup(void)
{
    snprintf(egress_ns, sizeof(egress_ns), "cqunit-%d-e", (int)getpid());
    snprintf(target_ns, sizeof(target_ns), "cqunit-%d-t", (int)getpid());
    snprintf(egress_path, sizeof(egress_path), "/run/netns/%s", egress_ns);
    sh("ip netns add %s && ip netns add %s", egress_ns, target_ns);
    sh("ip -n %s link add v0 type veth peer name v1 netns %s", egress_ns, target_ns);
    sh("ip -n %s addr add 203.0.113.1/30 dev v0 && ip -n %s link set v0 up && "
       "ip -n %s link set lo up",
       egress_ns, egress_ns, egress_ns);
    sh("ip -n %s addr add 203.0.113.2/30 dev v1 && ip -n %s link set v1 up && "
       "ip -n %s link set lo up && ip -n %s addr add 198.51.100.7/32 dev lo && "
       "ip -n %s addr add 10.99.0.7/32 dev lo && ip -n %s addr add 198.51.100.8/32 dev lo && "
       "ip -n %s addr add 10.99.0.8/32 dev lo && "
       "ip -n %s addr add 198.51.100.54/32 dev lo && ip -n %s route add default via 203.0.113.1",
       target_ns, target_ns, target_ns, target_ns, target_ns, target_ns, target_ns, target_ns,
       target_ns);
    sh("ip -n %s route add default via 203.0.113.2", egress_ns);
    echo_pid = fork();
    ck_assert_int_ge(echo_pid, 0);
    if (echo_pid == 0) {
        execlp("ip", "ip", "netns", "exec", target_ns, "python3", "-c",
               "import select, socket\n"
               "ls = []\n"
               "for port in (7, 17):\n"
               "    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
               "    s.bind(('0.0.0.0', port)); s.listen(8); ls.append(s)\n"
               "while True:\n"
               "    for s in select.select(ls, [], [])[0]:\n"
               "        c, _ = s.accept(); c.sendall(c.recv(16)); c.close()\n",
               (char *)NULL);
        _exit(127);
    }
    dns_pid = fork();
    ck_assert_int_ge(dns_pid, 0);
    if (dns_pid == 0) {
        execlp("ip", "ip", "netns", "exec", target_ns, "python3", "-c", dns_server, (char *)NULL);
        _exit(127);
    }
    /* Until the echo listens. */
    for (int i = 0; i < 100; i++) {
        char cmd[256];
        snprintf(cmd, sizeof(cmd),
                 "ip netns exec %s python3 -c \"import socket; "
                 "socket.create_connection(('198.51.100.7', 7), 1)\" 2>/dev/null",
                 egress_ns);
        if (system(cmd) == 0)
            return;
        usleep(50000);
    }
    ck_abort_msg("the echo did not start");
}

static void teardown(void)
{
    if (echo_pid > 0) {
        kill(echo_pid, SIGKILL);
        waitpid(echo_pid, NULL, 0);
    }
    if (dns_pid > 0) {
        kill(dns_pid, SIGKILL);
        waitpid(dns_pid, NULL, 0);
    }
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "ip netns del %s; ip netns del %s", egress_ns, target_ns);
    if (system(cmd) != 0)
        fprintf(stderr, "cleanup: %s failed\n", cmd);
}

/* Runs python3 CODE in sb; returns its exit code, its stdout in out. */
static void collect(void *ctx, int stream, const char *data, size_t len)
{
    if (stream != 1)
        return;
    char *out = ctx;
    size_t used = strlen(out);
    if (used + len < 255) {
        memcpy(out + used, data, len);
        out[used + len] = '\0';
    }
}

static int run_python(struct cq_sandbox *sb, const char *code, char *out)
{
    const char *argv[] = {"python3", "-c", code, NULL};
    struct cq_spawn req;
    cq_spawn_init(&req, argv);
    req.stdout_mode = CQ_STDIO_PIPE;
    req.timeout_ms = 20000;
    struct cq_process *p = NULL;
    struct cq_error err = {0};
    ck_assert_msg(cq_sandbox_spawn(sb, &req, &p, &err) == 0, "spawn: %s", err.msg);
    struct cq_wait_io io = {.on_output = collect, .ctx = out, .input_fd = -1};
    struct cq_process_report rep;
    out[0] = '\0';
    ck_assert_msg(cq_process_wait(p, &io, &rep, &err) == 0, "wait: %s", err.msg);
    cq_process_free(p);
    return rep.exit_code;
}

static const char probe[] =
    "import socket, sys\n"
    "try:\n"
    "    socket.getaddrinfo('files.example.test', 80, socket.AF_INET)\n"
    "    print('resolved', end=' ')\n"
    "except socket.gaierror as e:\n"
    "    print('gai%d' % e.errno, end=' ')\n"
    "try:\n"
    "    c = socket.create_connection(('198.51.100.7', 7), 5); c.sendall(b'hi')\n"
    "    print('echo-' + c.recv(16).decode())\n"
    "except OSError as e:\n"
    "    print('refused' if e.errno in (111, 113) else 'other%d' % e.errno)\n";

START_TEST(late_allowlist)
{
    struct cq_sandbox_config cfg;
    cq_sandbox_config_init(&cfg);
    cfg.network = CQ_NETWORK_ALLOWLIST;
    cfg.egress_netns = egress_path;
    cfg.dns = "198.51.100.53";
    struct cq_sandbox *sb = NULL;
    struct cq_error err = {0};
    ck_assert_msg(cq_sandbox_create(&cfg, &sb, &err) == 0, "create: %s", err.msg);
    char out[256];
    /* Warm: nothing resolves (NXDOMAIN: EAI_NONAME), nothing is reached. */
    ck_assert_int_eq(run_python(sb, probe, out), 0);
    ck_assert_str_eq(out, "gai-2 refused\n");
    const char *bad[] = {"127.0.0.1"};
    ck_assert_int_eq(cq_sandbox_network_allow(sb, bad, 1, &err), -1);
    ck_assert_int_eq(err.code, CQ_EINVALID);
    ck_assert_int_eq(cq_sandbox_network_allow(sb, bad, 0, &err), -1);
    /* A refused list leaves it refusing, and still open for the right one. */
    ck_assert_int_eq(run_python(sb, probe, out), 0);
    ck_assert_str_eq(out, "gai-2 refused\n");
    const char *list[] = {"files.example.test", "198.51.100.7:7"};
    ck_assert_msg(cq_sandbox_network_allow(sb, list, 2, &err) == 0, "allow: %s", err.msg);
    /* The name is now asked upstream (nobody answers there: EAI_AGAIN), the address
     * reached. */
    ck_assert_int_eq(run_python(sb, probe, out), 0);
    ck_assert_str_eq(out, "gai-3 echo-hi\n");
    /* Once only. */
    const char *more[] = {"203.0.113.0/24"};
    ck_assert_int_eq(cq_sandbox_network_allow(sb, more, 1, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "given already"));
    cq_sandbox_destroy(sb);

    /* Given at create: refused later too. And never in another mode. */
    cfg.allow = list;
    cfg.n_allow = 2;
    ck_assert_msg(cq_sandbox_create(&cfg, &sb, &err) == 0, "create: %s", err.msg);
    ck_assert_int_eq(run_python(sb, probe, out), 0);
    ck_assert_str_eq(out, "gai-3 echo-hi\n");
    ck_assert_int_eq(cq_sandbox_network_allow(sb, more, 1, &err), -1);
    cq_sandbox_destroy(sb);
    cfg.allow = NULL;
    cfg.n_allow = 0;
    cfg.network = CQ_NETWORK_PUBLIC;
    ck_assert_msg(cq_sandbox_create(&cfg, &sb, &err) == 0, "create: %s", err.msg);
    ck_assert_int_eq(cq_sandbox_network_allow(sb, list, 2, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "not in network mode ALLOWLIST"));
    cq_sandbox_destroy(sb);
    cq_sandbox_config_init(&cfg);
    ck_assert_msg(cq_sandbox_create(&cfg, &sb, &err) == 0, "create: %s", err.msg);
    ck_assert_int_eq(cq_sandbox_network_allow(sb, list, 2, &err), -1);
    cq_sandbox_destroy(sb);
    ck_assert_int_eq(cq_sandbox_network_allow(NULL, list, 2, &err), -1);
}
END_TEST

/* Each argument HOST[:PORT] (port 7 by default), a name or an address: the echo's
 * answer, or why not. */
static const char reach[] =
    "import socket, sys\n"
    "for a in sys.argv[1:]:\n"
    "    host, _, port = a.partition(':')\n"
    "    try:\n"
    "        c = socket.create_connection((host, int(port or 7)), 5); c.sendall(b'hi')\n"
    "        print(c.recv(16).decode(), end=' ')\n"
    "    except socket.gaierror as e:\n"
    "        print('gai%d' % e.errno, end=' ')\n"
    "    except OSError as e:\n"
    "        print('refused' if e.errno in (111, 113) else 'other%d' % e.errno, end=' ')\n";

static int run_reach_to(struct cq_sandbox *sb, const char *const *targets, char *out)
{
    const char *argv[16] = {"python3", "-c", reach};
    size_t n = 3;
    for (size_t i = 0; targets[i] != NULL && n < 15; i++)
        argv[n++] = targets[i];
    argv[n] = NULL;
    struct cq_spawn req;
    cq_spawn_init(&req, argv);
    req.stdout_mode = CQ_STDIO_PIPE;
    req.timeout_ms = 20000;
    struct cq_process *p = NULL;
    struct cq_error err = {0};
    ck_assert_msg(cq_sandbox_spawn(sb, &req, &p, &err) == 0, "spawn: %s", err.msg);
    struct cq_wait_io io = {.on_output = collect, .ctx = out, .input_fd = -1};
    struct cq_process_report rep;
    out[0] = '\0';
    ck_assert_msg(cq_process_wait(p, &io, &rep, &err) == 0, "wait: %s", err.msg);
    cq_process_free(p);
    return rep.exit_code;
}

static int run_reach(struct cq_sandbox *sb, char *out)
{
    static const char *const targets[] = {"198.51.100.7", "10.99.0.7", NULL};
    return run_reach_to(sb, targets, out);
}

START_TEST(operator_policy_in_the_filter)
{
    struct cq_netpolicy *p = malloc(sizeof(*p));
    ck_assert_ptr_nonnull(p);
    cq_netpolicy_init(p);
    struct cq_sandbox_config cfg;
    cq_sandbox_config_init(&cfg);
    cfg.network = CQ_NETWORK_PUBLIC;
    cfg.egress_netns = egress_path;
    cfg.netpolicy = p;
    struct cq_sandbox *sb = NULL;
    struct cq_error err = {0};
    char out[256];
    /* Defaults: the public address is reached, the private one refused. */
    ck_assert_msg(cq_sandbox_create(&cfg, &sb, &err) == 0, "create: %s", err.msg);
    ck_assert_int_eq(run_reach(sb, out), 0);
    ck_assert_str_eq(out, "hi refused ");
    cq_sandbox_destroy(sb);
    /* network_private opens 10.99.0.0/16 port 7; network_deny closes the public host. */
    ck_assert_int_eq(cq_net_rules_add(&p->private_ok, "10.99.0.0/16:7", &err), 0);
    ck_assert_int_eq(cq_net_rules_add(&p->deny, "198.51.100.0/24", &err), 0);
    ck_assert_msg(cq_sandbox_create(&cfg, &sb, &err) == 0, "create: %s", err.msg);
    ck_assert_int_eq(run_reach(sb, out), 0);
    ck_assert_str_eq(out, "refused hi ");
    cq_sandbox_destroy(sb);
    /* A network_private rule reaching past one private range would open more than
     * private addresses: refused at create, in either mode. */
    struct cq_net_rules saved = p->private_ok;
    ck_assert_int_eq(cq_net_rules_add(&p->private_ok, "fc00::/6", &err), 0);
    ck_assert_int_eq(cq_sandbox_create(&cfg, &sb, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "fc00::/6, which is not inside one private range"));
    p->private_ok = saved;
    /* Deny holds in ALLOWLIST over a listed address. */
    const char *list[] = {"198.51.100.7:7"};
    cfg.network = CQ_NETWORK_ALLOWLIST;
    cfg.allow = list;
    cfg.n_allow = 1;
    ck_assert_msg(cq_sandbox_create(&cfg, &sb, &err) == 0, "create: %s", err.msg);
    ck_assert_int_eq(run_reach(sb, out), 0);
    ck_assert_str_eq(out, "refused refused ");
    cq_sandbox_destroy(sb);
    free(p);
}
END_TEST

/* codeq's "VPC" mode: ALLOWLIST with network_private. A private entry or an internal
 * name reaches what it names inside network_private, on its port, and nothing else of
 * the private range; without network_private the entry is refused at create. */
START_TEST(allowlist_inside_network_private)
{
    struct cq_netpolicy *p = malloc(sizeof(*p));
    ck_assert_ptr_nonnull(p);
    cq_netpolicy_init(p);
    struct cq_sandbox_config cfg;
    cq_sandbox_config_init(&cfg);
    cfg.network = CQ_NETWORK_ALLOWLIST;
    cfg.egress_netns = egress_path;
    cfg.dns = "198.51.100.54";
    cfg.netpolicy = p;
    struct cq_sandbox *sb = NULL;
    struct cq_error err = {0};
    char out[256];
    static const char *const targets[] = {"10.99.0.7:7", "10.99.0.7:17", "10.99.0.8:7",
                                          "198.51.100.7:7", NULL};
    const char *private_list[] = {"10.99.0.7:7"};
    cfg.allow = private_list;
    cfg.n_allow = 1;
    /* Without network_private: refused at create, naming the rule. */
    ck_assert_int_eq(cq_sandbox_create(&cfg, &sb, &err), -1);
    ck_assert_int_eq(err.code, CQ_EINVALID);
    ck_assert_ptr_nonnull(strstr(err.msg, "network_private"));
    /* Opened: exactly the listed address and port. */
    ck_assert_int_eq(cq_net_rules_add(&p->private_ok, "10.99.0.0/16", &err), 0);
    ck_assert_msg(cq_sandbox_create(&cfg, &sb, &err) == 0, "create: %s", err.msg);
    ck_assert_int_eq(run_reach_to(sb, targets, out), 0);
    ck_assert_str_eq(out, "hi refused refused refused ");
    cq_sandbox_destroy(sb);
    /* Given late to a warm sandbox: the same. */
    cfg.allow = NULL;
    cfg.n_allow = 0;
    ck_assert_msg(cq_sandbox_create(&cfg, &sb, &err) == 0, "create: %s", err.msg);
    ck_assert_int_eq(run_reach_to(sb, targets, out), 0);
    ck_assert_str_eq(out, "refused refused refused refused ");
    ck_assert_msg(cq_sandbox_network_allow(sb, private_list, 1, &err) == 0, "allow: %s", err.msg);
    ck_assert_int_eq(run_reach_to(sb, targets, out), 0);
    ck_assert_str_eq(out, "hi refused refused refused ");
    cq_sandbox_destroy(sb);
    /* An internal name: its private answer is given and pinned (any port, as listed),
     * and nothing else of the range is reached. */
    static const char *const by_name[] = {"db.test:7", "db.test:17", "10.99.0.7:7", "10.99.0.8:7",
                                          NULL};
    const char *name_list[] = {"db.test"};
    cfg.allow = name_list;
    cfg.n_allow = 1;
    ck_assert_msg(cq_sandbox_create(&cfg, &sb, &err) == 0, "create: %s", err.msg);
    ck_assert_int_eq(run_reach_to(sb, by_name, out), 0);
    ck_assert_str_eq(out, "hi hi hi refused ");
    cq_sandbox_destroy(sb);
    /* network_private with a port: a portless name entry gets that port only. */
    cq_netpolicy_init(p);
    ck_assert_int_eq(cq_net_rules_add(&p->private_ok, "10.99.0.0/16:7", &err), 0);
    ck_assert_msg(cq_sandbox_create(&cfg, &sb, &err) == 0, "create: %s", err.msg);
    ck_assert_int_eq(run_reach_to(sb, by_name, out), 0);
    ck_assert_str_eq(out, "hi refused hi refused ");
    cq_sandbox_destroy(sb);
    /* Private answers outside network_private are stripped (no address: EAI_NONAME or
     * EAI_NODATA), and the address stays refused. */
    cq_netpolicy_init(p);
    ck_assert_int_eq(cq_net_rules_add(&p->private_ok, "10.98.0.0/16", &err), 0);
    ck_assert_msg(cq_sandbox_create(&cfg, &sb, &err) == 0, "create: %s", err.msg);
    ck_assert_int_eq(run_reach_to(sb, by_name, out), 0);
    ck_assert_msg(strcmp(out, "gai-2 gai-2 refused refused ") == 0 ||
                      strcmp(out, "gai-5 gai-5 refused refused ") == 0,
                  "%s", out);
    cq_sandbox_destroy(sb);
    /* network_deny holds inside network_private, for entries and names alike. */
    cq_netpolicy_init(p);
    ck_assert_int_eq(cq_net_rules_add(&p->private_ok, "10.99.0.0/16", &err), 0);
    ck_assert_int_eq(cq_net_rules_add(&p->deny, "10.99.0.7", &err), 0);
    const char *both[] = {"db.test", "10.99.0.0/24"};
    cfg.allow = both;
    cfg.n_allow = 2;
    ck_assert_msg(cq_sandbox_create(&cfg, &sb, &err) == 0, "create: %s", err.msg);
    ck_assert_int_eq(run_reach_to(sb, by_name, out), 0);
    ck_assert_msg(strcmp(out, "gai-2 gai-2 refused hi ") == 0 ||
                      strcmp(out, "gai-5 gai-5 refused hi ") == 0,
                  "%s", out);
    cq_sandbox_destroy(sb);
    free(p);
}
END_TEST

START_TEST(pins_are_bounded)
{
    /* network_max_pinned 1: of many.test's two addresses, the sandbox is told (and may
     * reach) the first only; asking again changes nothing. */
    struct cq_netpolicy *p = malloc(sizeof(*p));
    ck_assert_ptr_nonnull(p);
    cq_netpolicy_init(p);
    p->max_pinned = 1;
    const char *list[] = {"many.test:7"};
    struct cq_sandbox_config cfg;
    cq_sandbox_config_init(&cfg);
    cfg.network = CQ_NETWORK_ALLOWLIST;
    cfg.egress_netns = egress_path;
    cfg.dns = "198.51.100.54";
    cfg.netpolicy = p;
    cfg.allow = list;
    cfg.n_allow = 1;
    struct cq_sandbox *sb = NULL;
    struct cq_error err = {0};
    ck_assert_msg(cq_sandbox_create(&cfg, &sb, &err) == 0, "create: %s", err.msg);
    static const char code[] =
        "import socket\n"
        "def res():\n"
        "    return sorted({a[4][0] for a in socket.getaddrinfo('many.test', 7, socket.AF_INET)})\n"
        "def tcp(a):\n"
        "    try:\n"
        "        c = socket.create_connection((a, 7), 5); c.sendall(b'hi'); return "
        "c.recv(8).decode()\n"
        "    except OSError as e:\n"
        "        return 'refused' if e.errno in (111, 113) else 'other%d' % e.errno\n"
        "print(res(), res(), tcp('198.51.100.7'), tcp('198.51.100.8'))\n";
    char out[256];
    ck_assert_int_eq(run_python(sb, code, out), 0);
    ck_assert_str_eq(out, "['198.51.100.7'] ['198.51.100.7'] hi refused\n");
    cq_sandbox_destroy(sb);
    /* The default bound: both. */
    cq_netpolicy_init(p);
    ck_assert_msg(cq_sandbox_create(&cfg, &sb, &err) == 0, "create: %s", err.msg);
    ck_assert_int_eq(run_python(sb, code, out), 0);
    ck_assert_str_eq(out,
                     "['198.51.100.7', '198.51.100.8'] ['198.51.100.7', '198.51.100.8'] hi hi\n");
    cq_sandbox_destroy(sb);
    free(p);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("sandbox_network");
    TCase *tc = tcase_create("allowlist");
    /* In the parent: the namespaces go also when the test fails. */
    tcase_add_unchecked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, late_allowlist);
    tcase_add_test(tc, operator_policy_in_the_filter);
    tcase_add_test(tc, allowlist_inside_network_private);
    tcase_add_test(tc, pins_are_bounded);
    suite_add_tcase(s, tc);
    return cq_unit_run(s, true);
}
