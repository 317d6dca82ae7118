/* worker/netconfig.c - the network settings of a worker (worker.h), read by every front
 * end that runs one: `codeq mcp` and `codeq exec` (flags, environment) and codeq-worker
 * (its configuration file, environment and flags, fleet/config.c keeping the text).
 * One parser, so that a setting means the same wherever it is given. */
#define _GNU_SOURCE
#include "worker/worker.h"
#include "common/units.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

const char *const cq_worker_net_settings[] = {
    "network_modes",
    "network_default",
    "network_private",
    "network_allow_bounds",
    "network_deny",
    "network_max_allow",
    "network_max_pinned",
    "network_max_rate",
    "network_max_connections",
    "dns",
    "egress_netns",
    "warm_pool_public",
    "warm_pool_allowlist",
    NULL,
};

static const char *const helps[] = {
    "network modes sessions may ask for, of NONE, PUBLIC, ALLOWLIST (default: NONE)",
    "the mode of a session that names none (default: NONE)",
    "private destinations (CIDR[:PORT]) sessions may reach: codeq's VPC mode (default: none)",
    "what an allowlist may name (DESTs); unset: any public destination",
    "destinations refused in every mode (DESTs; the fleet adds its Kafka and Redis)",
    "entries of one allowlist (default: 64)",
    "addresses resolution may pin for one ALLOWLIST sandbox (default: 256)",
    "bytes a second one sandbox may send or receive, e.g. 10M (default: 0, no limit)",
    "connections one sandbox may have open at once (default: 0, no limit)",
    "the upstream codeq's resolver asks for the sandboxes (an IP address; default: the "
    "host's first nameserver)",
    "network namespace file PUBLIC and ALLOWLIST traffic leaves through (default: codeq's "
    "own, joined to the host's network by pasta)",
    "PUBLIC sandboxes kept ready (default: 1 when PUBLIC is allowed)",
    "ALLOWLIST sandboxes kept ready, given a session's list when it starts (default: 1 "
    "when ALLOWLIST is allowed)",
};

const char *cq_worker_net_help(const char *name)
{
    for (size_t i = 0; cq_worker_net_settings[i] != NULL; i++)
        if (strcmp(cq_worker_net_settings[i], name) == 0)
            return helps[i];
    return NULL;
}

/* Calls fn on each comma-separated entry of value (spaces around entries ignored). */
static int each_entry(const char *value, const char *source,
                      int (*fn)(void *ctx, const char *entry, struct cq_error *err), void *ctx,
                      struct cq_error *err)
{
    char *copy = strdup(value);
    if (copy == NULL)
        return cq_error_sys(err, ENOMEM, "%s", source);
    int rc = 0;
    char *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok != NULL && rc == 0;
         tok = strtok_r(NULL, ",", &save)) {
        while (isspace((unsigned char)*tok))
            tok++;
        size_t n = strlen(tok);
        while (n > 0 && isspace((unsigned char)tok[n - 1]))
            tok[--n] = '\0';
        if (n > 0)
            rc = fn(ctx, tok, err);
    }
    free(copy);
    return rc;
}

static int add_mode(void *ctx, const char *entry, struct cq_error *err)
{
    enum cq_network_mode m;
    if (cq_net_mode_parse(entry, &m, err) < 0)
        return -1;
    *(unsigned *)ctx |= CQ_NET_MODE_BIT(m);
    return 0;
}

static int add_rule(void *ctx, const char *entry, struct cq_error *err)
{
    return cq_net_rules_add(ctx, entry, err);
}

/* network_private opens private ranges only: a public destination there would be a
 * second way of saying what PUBLIC already means, and a typo that opened nothing. */
static int add_private(void *ctx, const char *entry, struct cq_error *err)
{
    struct cq_net_rules *r = ctx;
    if (cq_net_rules_add(r, entry, err) < 0)
        return -1;
    const struct cq_net_dest *d = &r->d[r->n - 1];
    /* Whole within one private range: the filter lets network_private through before
     * it refuses the other classes, so 10.0.0.0/7 would open public addresses too. */
    if (!cq_net_dest_private(d)) {
        r->n--;
        return cq_error_set(err, CQ_EINVALID,
                            "'%s' is not a private address or a range within one private range",
                            entry);
    }
    return 0;
}

static int copy_text(char *dst, size_t size, const char *value, const char *name,
                     struct cq_error *err)
{
    if (strlen(value) >= size)
        return cq_error_set(err, CQ_EINVALID, "%s is longer than %zu characters", name, size - 1);
    snprintf(dst, size, "%s", value);
    return 0;
}

static int apply(struct cq_worker_config *cfg, const char *name, const char *value, bool add,
                 const char *source, struct cq_error *err)
{
    struct cq_netpolicy *p = &cfg->netpolicy;
    uint64_t n;
    if (strcmp(name, "network_modes") == 0) {
        unsigned modes = add ? p->modes : 0;
        if (each_entry(value, source, add_mode, &modes, err) < 0)
            return -1;
        p->modes = modes;
        return 0;
    }
    if (strcmp(name, "network_default") == 0)
        return cq_net_mode_parse(value, &p->default_mode, err);
    struct cq_net_rules *list = strcmp(name, "network_private") == 0        ? &p->private_ok
                                : strcmp(name, "network_allow_bounds") == 0 ? &p->bounds
                                : strcmp(name, "network_deny") == 0         ? &p->deny
                                                                            : NULL;
    if (list != NULL) {
        struct cq_net_rules r = add ? *list : (struct cq_net_rules){0};
        if (each_entry(value, source, list == &p->private_ok ? add_private : add_rule, &r, err) < 0)
            return -1;
        *list = r;
        return 0;
    }
    if (strcmp(name, "network_max_allow") == 0) {
        if (cq_parse_uint(value, 1, CQ_NET_MAX_RULES, &n, err) < 0)
            return -1;
        p->max_allow = (size_t)n;
        return 0;
    }
    if (strcmp(name, "network_max_pinned") == 0) {
        if (cq_parse_uint(value, 1, 65536, &n, err) < 0)
            return -1;
        p->max_pinned = (size_t)n;
        return 0;
    }
    if (strcmp(name, "network_max_rate") == 0)
        return cq_parse_size(value, 1ULL << 40, &p->max_bytes_per_second, err);
    if (strcmp(name, "network_max_connections") == 0) {
        if (cq_parse_uint(value, 0, 1000000, &n, err) < 0)
            return -1;
        p->max_connections = (uint32_t)n;
        return 0;
    }
    if (strcmp(name, "dns") == 0) {
        struct cq_net_addr a;
        if (value[0] != '\0' && cq_net_addr_parse(value, &a) < 0)
            return cq_error_set(err, CQ_EINVALID, "'%s' is not an IP address", value);
        return copy_text(cfg->dns, sizeof(cfg->dns), value, name, err);
    }
    if (strcmp(name, "egress_netns") == 0) {
        if (value[0] != '\0' && value[0] != '/')
            return cq_error_set(err, CQ_EINVALID, "'%s' is not an absolute path", value);
        return copy_text(cfg->egress_netns, sizeof(cfg->egress_netns), value, name, err);
    }
    int *pool = strcmp(name, "warm_pool_public") == 0      ? &cfg->warm_pool_public
                : strcmp(name, "warm_pool_allowlist") == 0 ? &cfg->warm_pool_allowlist
                                                           : NULL;
    if (pool != NULL) {
        if (cq_parse_uint(value, 0, 16, &n, err) < 0)
            return -1;
        *pool = (int)n;
        return 0;
    }
    return cq_error_set(err, CQ_EINVALID, "unknown network setting '%s'", name);
}

int cq_worker_net_setting(struct cq_worker_config *cfg, const char *name, const char *value,
                          bool add, const char *source, struct cq_error *err)
{
    if (apply(cfg, name, value, add, source, err) < 0)
        return cq_error_prefix(err, "%s", source);
    return 0;
}

int cq_worker_net_environment(struct cq_worker_config *cfg, struct cq_error *err)
{
    for (size_t i = 0; cq_worker_net_settings[i] != NULL; i++) {
        char var[64] = "CODEQ_";
        for (size_t j = 0; cq_worker_net_settings[i][j] != '\0' && j + 7 < sizeof(var); j++)
            var[6 + j] = (char)toupper((unsigned char)cq_worker_net_settings[i][j]);
        const char *value = getenv(var);
        if (value != NULL &&
            cq_worker_net_setting(cfg, cq_worker_net_settings[i], value, false, var, err) < 0)
            return -1;
    }
    return 0;
}

/* Adds a deny rule for one address, unless the policy already refuses it in every mode
 * (loopback, link-local, ...: the egress filter drops those whatever the rules say). */
static int deny_addr(struct cq_netpolicy *p, const struct cq_net_addr *a, struct cq_error *err)
{
    enum cq_net_class c = cq_net_classify(a);
    if (c != CQ_NET_CLASS_PUBLIC && c != CQ_NET_CLASS_PRIVATE)
        return 0;
    char text[INET6_ADDRSTRLEN];
    inet_ntop(a->family, a->bytes, text, sizeof(text));
    for (size_t i = 0; i < p->deny.n; i++) {
        const struct cq_net_dest *d = &p->deny.d[i];
        if (d->kind == CQ_NET_DEST_CIDR && d->port == 0 && d->addr.family == a->family &&
            memcmp(d->addr.bytes, a->bytes, a->family == AF_INET ? 4 : 16) == 0 &&
            d->prefix_len == (a->family == AF_INET ? 32 : 128))
            return 0;
    }
    return cq_net_rules_add(&p->deny, text, err);
}

int cq_worker_net_deny_service(struct cq_worker_config *cfg, const char *hostport,
                               struct cq_error *err)
{
    char host[256];
    const char *start = hostport, *end;
    if (hostport[0] == '[') {
        start = hostport + 1;
        end = strchr(start, ']');
        if (end == NULL)
            return cq_error_set(err, CQ_EINVALID, "'%s': no closing ']'", hostport);
    } else {
        /* HOST:PORT; a bare IPv6 address has more than one colon and no port. */
        end = strrchr(hostport, ':');
        if (end == NULL || strchr(hostport, ':') != end)
            end = hostport + strlen(hostport);
    }
    if ((size_t)(end - start) >= sizeof(host) || end == start)
        return cq_error_set(err, CQ_EINVALID, "'%s' is not HOST:PORT", hostport);
    snprintf(host, sizeof(host), "%.*s", (int)(end - start), start);
    struct cq_net_addr a;
    if (cq_net_addr_parse(host, &a) == 0)
        return deny_addr(&cfg->netpolicy, &a, err);
    /* A name: the addresses it has now. One that moves later is not followed; an
     * operator whose brokers move lists them in network_deny (docs/fleet.md). */
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    int rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc != 0)
        return cq_error_set(err, CQ_EINVALID, "resolve %s: %s", host, gai_strerror(rc));
    int out = 0;
    for (struct addrinfo *ai = res; ai != NULL && out == 0; ai = ai->ai_next) {
        char text[INET6_ADDRSTRLEN] = "";
        if (ai->ai_family == AF_INET)
            inet_ntop(AF_INET, &((struct sockaddr_in *)(void *)ai->ai_addr)->sin_addr, text,
                      sizeof(text));
        else if (ai->ai_family == AF_INET6)
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)(void *)ai->ai_addr)->sin6_addr, text,
                      sizeof(text));
        if (text[0] != '\0' && cq_net_addr_parse(text, &a) == 0)
            out = deny_addr(&cfg->netpolicy, &a, err);
    }
    freeaddrinfo(res);
    return out;
}
