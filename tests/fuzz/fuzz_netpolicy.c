/* tests/fuzz/fuzz_netpolicy.c - a client's network request (sandbox/netpolicy.c).
 *
 * Input: a mode byte, 17 bytes of address (the first one's low bit picks IPv4 or IPv6),
 * 2 bytes of port, a protocol byte, then allowlist entries separated by '\n' (each one
 * also taken as a name the resolver answered with that address). Checked for every
 * input:
 *  - a DEST that parses prints as text that parses back to the same destination;
 *  - nothing outside the public and private classes is ever allowed, a private address
 *    only where network_private opens it, the host's address and network_deny never;
 *  - in ALLOWLIST, an allowed address is covered by a CIDR entry or was answered for a
 *    name whose entry covers it (checked by asking again without the answers). */
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "sandbox/netpolicy.h"

#define MAX_ENTRIES 16

static void check(int ok)
{
    if (!ok)
        abort();
}

static void round_trip(const char *text)
{
    struct cq_net_dest d, again;
    struct cq_error err;
    if (cq_net_dest_parse(text, &d, &err) < 0)
        return;
    char buf[CQ_NET_DEST_TEXT];
    cq_net_dest_format(&d, buf, sizeof(buf));
    check(cq_net_dest_parse(buf, &again, &err) == 0);
    check(memcmp(&d, &again, sizeof(d)) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 21)
        return 0;
    struct cq_netpolicy p;
    cq_netpolicy_init(&p);
    struct cq_error err;
    cq_net_rules_add(&p.private_ok, "10.20.0.0/16:5432", &err);
    cq_net_rules_add(&p.deny, "198.51.100.50", &err);
    cq_net_addr_parse("203.0.113.200", &p.host[p.n_host++]);
    if (data[0] & 0x80)
        cq_net_rules_add(&p.bounds, "*.example.test", &err);

    enum cq_network_mode mode = (enum cq_network_mode)(data[0] % 4);
    struct cq_net_addr a = {.family = data[1] & 1 ? AF_INET6 : AF_INET};
    memcpy(a.bytes, data + 2, 16);
    if (a.family == AF_INET)
        memset(a.bytes + 4, 0, 12);
    uint16_t port = (uint16_t)(data[17] << 8 | data[18]);
    int proto = data[19] & 1 ? IPPROTO_UDP : IPPROTO_TCP;

    /* The rest: entries, NUL-terminated copies. */
    char *text = malloc(size - 20 + 1);
    memcpy(text, data + 20, size - 20);
    text[size - 20] = '\0';
    const char *entries[MAX_ENTRIES];
    struct cq_net_resolved resolved[MAX_ENTRIES];
    size_t n = 0;
    for (char *line = text, *next; line != NULL && n < MAX_ENTRIES; line = next) {
        next = strchr(line, '\n');
        if (next != NULL)
            *next++ = '\0';
        round_trip(line);
        entries[n] = line;
        resolved[n].name = line;
        resolved[n].addr = a;
        n++;
    }

    struct cq_net_grant g;
    if (cq_netpolicy_admit(&p, &mode, entries, n, &g, &err) == 0) {
        enum cq_net_verdict v =
            cq_netpolicy_check_connect(&p, &g, &a, port, proto, resolved, n, &err);
        if (v == CQ_NET_ALLOW) {
            enum cq_net_class c = cq_net_classify(&a);
            check(c == CQ_NET_CLASS_PUBLIC || c == CQ_NET_CLASS_PRIVATE);
            check(g.mode == CQ_NETWORK_PUBLIC || g.mode == CQ_NETWORK_ALLOWLIST);
            check(port != 0);
            struct cq_net_dest opened;
            cq_net_dest_parse("10.20.0.0/16", &opened, &err);
            if (c == CQ_NET_CLASS_PRIVATE) {
                struct cq_net_addr net = opened.addr;
                check(a.family == AF_INET && memcmp(a.bytes, net.bytes, 2) == 0 && port == 5432);
            }
            check(memcmp(a.bytes, p.host[0].bytes, 16) != 0 || a.family != AF_INET);
            if (g.mode == CQ_NETWORK_ALLOWLIST &&
                cq_netpolicy_check_connect(&p, &g, &a, port, proto, NULL, 0, NULL) !=
                    CQ_NET_ALLOW) {
                /* Allowed only through an answer: some name entry must allow it. */
                int named = 0;
                for (size_t i = 0; i < n && !named; i++)
                    named = cq_netpolicy_name_allowed(&g, resolved[i].name);
                check(named);
            }
        } else {
            check(err.msg[0] != '\0');
        }
    }
    free(text);
    return 0;
}
