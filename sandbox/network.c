/* sandbox/network.c - a sandbox's network beyond loopback: its egress link and filter
 * (egress.c), codeq's resolver (resolver.c), and the allowlist, also given late.
 *
 * Mode and list are admitted again here against the operator's policy
 * (cq_netpolicy_admit), whatever the caller checked: the sandbox library is the last
 * place that sees them before they become rules.
 */
#define _GNU_SOURCE
#include "sandbox/internal.h"
#include "sandbox/netpolicy.h"
#include "sandbox/resolver.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct cq_sandbox_net {
    pthread_mutex_t lock;
    enum cq_network_mode mode;
    bool allow_given; /* ALLOWLIST: a list was given, at create or late (only once) */
    struct cq_netpolicy policy;
    struct cq_resolver *resolver;
};

static int admit(const struct cq_netpolicy *p, enum cq_network_mode mode, const char *const *allow,
                 size_t n, struct cq_net_grant *g, struct cq_error *err)
{
    /* The filter lets network_private's ranges through before it rejects the other
     * classes: a rule reaching past one private range (fc00::/6 holds link-local and
     * multicast, 10.0.0.0/7 public addresses) would open those too. */
    for (size_t i = 0; i < p->private_ok.n; i++)
        if (p->private_ok.d[i].kind == CQ_NET_DEST_CIDR &&
            !cq_net_dest_private(&p->private_ok.d[i])) {
            char rule[CQ_NET_DEST_TEXT];
            cq_net_dest_format(&p->private_ok.d[i], rule, sizeof(rule));
            return cq_error_set(err, CQ_EINVALID,
                                "the operator's policy opens %s, which is not inside one private "
                                "range (network_private)",
                                rule);
        }
    if (mode == CQ_NETWORK_ALLOWLIST && n == 0) {
        /* A warm sandbox waiting for cq_sandbox_network_allow: nothing reachable. */
        memset(g, 0, sizeof(*g));
        g->mode = mode;
        return 0;
    }
    /* A private entry is admitted only inside network_private; the filter (egress.c)
     * lets it through before the private ranges are rejected, and only there. */
    return cq_netpolicy_admit(p, &mode, allow, n, g, err);
}

int cq_network_attach(struct cq_sandbox *sb, const struct cq_sandbox_config *cfg, pid_t init_pid,
                      struct cq_error *err)
{
    struct cq_sandbox_net *net = calloc(1, sizeof(*net));
    struct cq_net_grant *g = malloc(sizeof(*g));
    if (net == NULL || g == NULL) {
        free(net);
        free(g);
        return cq_error_sys(err, ENOMEM, "sandbox network");
    }
    pthread_mutex_init(&net->lock, NULL);
    sb->net = net;
    net->mode = cfg->network;
    net->allow_given = cfg->n_allow > 0;
    if (cfg->netpolicy != NULL)
        net->policy = *cfg->netpolicy;
    else
        cq_netpolicy_init(&net->policy);
    int rc = admit(&net->policy, cfg->network, cfg->allow, cfg->n_allow, g, err);
    if (rc == 0)
        rc = cq_egress_attach(&sb->egress, cfg, init_pid, err);
    if (rc == 0) {
        struct cq_resolver_config rc_cfg = {
            .netns_fd = sb->egress.netns_fd,
            .slot = sb->egress.slot,
            .upstream = cfg->dns,
            .policy = &net->policy,
            .grant = g,
        };
        cq_egress_addrs(&sb->egress, &rc_cfg.listen, &rc_cfg.client);
        rc = cq_resolver_start(&rc_cfg, &net->resolver, err);
        if (rc < 0)
            cq_error_prefix(err, "codeq's resolver");
    }
    free(g);
    return rc;
}

void cq_network_detach(struct cq_sandbox *sb)
{
    if (sb->net == NULL)
        return;
    /* Before the table goes: no pin can be attempted on a table being deleted. */
    cq_resolver_stop(sb->net->resolver);
    pthread_mutex_destroy(&sb->net->lock);
    free(sb->net);
    sb->net = NULL;
}

int cq_sandbox_network_allow(struct cq_sandbox *sb, const char *const *allow, size_t n,
                             struct cq_error *err)
{
    struct cq_sandbox_net *net = sb != NULL ? sb->net : NULL;
    if (net == NULL || net->mode != CQ_NETWORK_ALLOWLIST)
        return cq_error_set(err, CQ_EINVALID, "the sandbox is not in network mode ALLOWLIST");
    if (n == 0)
        return cq_error_set(err, CQ_EINVALID, "an allowlist needs at least one entry");
    struct cq_net_grant *g = malloc(sizeof(*g));
    if (g == NULL)
        return cq_error_sys(err, ENOMEM, "allowlist");
    pthread_mutex_lock(&net->lock);
    int rc = 0;
    if (net->allow_given)
        rc = cq_error_set(err, CQ_EINVALID, "the sandbox's allowlist was given already");
    /* The filter first: the resolver answers (and pins) for names only once the
     * IP entries are in place, and a failure leaves the sandbox refusing everything. */
    if (rc == 0)
        rc = admit(&net->policy, CQ_NETWORK_ALLOWLIST, allow, n, g, err);
    if (rc == 0)
        rc = cq_egress_allow(&sb->egress, &net->policy, allow, n, err);
    if (rc == 0) {
        cq_resolver_set_grant(net->resolver, g);
        net->allow_given = true;
    }
    pthread_mutex_unlock(&net->lock);
    free(g);
    return rc;
}
