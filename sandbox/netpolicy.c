/* sandbox/netpolicy.c - network policy decisions (sandbox/netpolicy.h).
 *
 * Everything a client sends here is hostile: DEST strings come from startSession's
 * networkAllow and from flags, and names from a sandbox's DNS queries. So parsing is
 * strict where a lenient reading would widen access:
 *  - an address is what inet_pton takes, nothing more: inet_aton's forms ("127.1",
 *    "0x7f.1", "2130706433") are refused outright, since resolvers and libcs disagree on
 *    them, and a name whose last label is all digits is no name either;
 *  - IPv4-mapped IPv6 is stored as IPv4, so ::ffff:127.0.0.1 is loopback everywhere;
 *    6to4 and NAT64 addresses are classified by the IPv4 address they carry, since a
 *    relay would deliver them there;
 *  - only global unicast (2000::/3) counts as public IPv6; anything unusual is
 *    RESERVED and always refused;
 *  - a CIDR must have its host bits clear (10.0.0.1/8 is a typo or a trick).
 * The always-refused classes hold in every mode and no policy can open them; private
 * ranges only through network_private.
 */
#define _GNU_SOURCE
#include "sandbox/netpolicy.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define DEST_TEXT_MAX 300 /* longer input is refused before any parsing */

/* --- addresses ------------------------------------------------------------------ */

static const uint8_t v4_mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

static void addr_normalize(struct cq_net_addr *a)
{
    if (a->family == AF_INET6 && memcmp(a->bytes, v4_mapped_prefix, 12) == 0) {
        memmove(a->bytes, a->bytes + 12, 4);
        memset(a->bytes + 4, 0, 12);
        a->family = AF_INET;
    }
}

int cq_net_addr_parse(const char *text, struct cq_net_addr *out)
{
    struct cq_net_addr a;
    memset(&a, 0, sizeof(a));
    if (text == NULL)
        return -1;
    if (inet_pton(AF_INET, text, a.bytes) == 1)
        a.family = AF_INET;
    else if (inet_pton(AF_INET6, text, a.bytes) == 1)
        a.family = AF_INET6;
    else
        return -1;
    addr_normalize(&a);
    *out = a;
    return 0;
}

static unsigned addr_bits(int family)
{
    return family == AF_INET ? 32 : 128;
}

/* Does the prefix net/len contain a? */
static bool prefix_contains(const struct cq_net_addr *net, unsigned len,
                            const struct cq_net_addr *a)
{
    if (net->family != a->family)
        return false;
    unsigned whole = len / 8, rest = len % 8;
    if (memcmp(net->bytes, a->bytes, whole) != 0)
        return false;
    if (rest == 0)
        return true;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (net->bytes[whole] & mask) == (a->bytes[whole] & mask);
}

static bool host_bits_clear(const struct cq_net_addr *a, unsigned len)
{
    for (unsigned bit = len; bit < addr_bits(a->family); bit++)
        if (a->bytes[bit / 8] & (0x80 >> (bit % 8)))
            return false;
    return true;
}

/* --- classes --------------------------------------------------------------------- */

enum { EMBEDDED_6TO4 = 100, EMBEDDED_NAT64 }; /* table-only classes: look inside */

struct range {
    int family;
    const char *net;
    unsigned len;
    int cls; /* enum cq_net_class, or EMBEDDED_* */
};

/* First match wins, so specific ranges come before the ones that contain them. */
static const struct range ranges[] = {
    {AF_INET, "0.0.0.0", 8, CQ_NET_CLASS_UNSPECIFIED},
    {AF_INET, "10.0.0.0", 8, CQ_NET_CLASS_PRIVATE},
    {AF_INET, "100.64.0.0", 10, CQ_NET_CLASS_PRIVATE},
    {AF_INET, "127.0.0.0", 8, CQ_NET_CLASS_LOOPBACK},
    {AF_INET, "169.254.0.0", 16, CQ_NET_CLASS_LINK_LOCAL},
    {AF_INET, "172.16.0.0", 12, CQ_NET_CLASS_PRIVATE},
    {AF_INET, "192.0.0.0", 24, CQ_NET_CLASS_RESERVED}, /* IETF protocol assignments */
    {AF_INET, "192.168.0.0", 16, CQ_NET_CLASS_PRIVATE},
    {AF_INET, "198.18.0.0", 15, CQ_NET_CLASS_RESERVED}, /* benchmarking */
    {AF_INET, "224.0.0.0", 4, CQ_NET_CLASS_MULTICAST},
    {AF_INET, "255.255.255.255", 32, CQ_NET_CLASS_UNSPECIFIED},
    {AF_INET, "240.0.0.0", 4, CQ_NET_CLASS_RESERVED},
    {AF_INET6, "::", 128, CQ_NET_CLASS_UNSPECIFIED},
    {AF_INET6, "::1", 128, CQ_NET_CLASS_LOOPBACK},
    {AF_INET6, "64:ff9b::", 96, EMBEDDED_NAT64},
    {AF_INET6, "2001:db8::", 32, CQ_NET_CLASS_PUBLIC}, /* documentation: the test internet */
    {AF_INET6, "2001::", 23, CQ_NET_CLASS_RESERVED},   /* Teredo, ORCHID, IETF assignments */
    {AF_INET6, "2002::", 16, EMBEDDED_6TO4},
    {AF_INET6, "2000::", 3, CQ_NET_CLASS_PUBLIC},
    {AF_INET6, "fc00::", 7, CQ_NET_CLASS_PRIVATE},
    {AF_INET6, "fe80::", 10, CQ_NET_CLASS_LINK_LOCAL},
    {AF_INET6, "ff00::", 8, CQ_NET_CLASS_MULTICAST},
    {AF_INET6, "::", 0, CQ_NET_CLASS_RESERVED}, /* not global unicast */
};
#define N_RANGES (sizeof(ranges) / sizeof(ranges[0]))

static struct cq_net_addr range_net(const struct range *r)
{
    struct cq_net_addr a;
    memset(&a, 0, sizeof(a));
    a.family = r->family;
    inet_pton(r->family, r->net, a.bytes); /* the table's own literals: cannot fail */
    return a;
}

enum cq_net_class cq_net_classify(const struct cq_net_addr *in)
{
    struct cq_net_addr a = *in;
    addr_normalize(&a);
    for (size_t i = 0; i < N_RANGES; i++) {
        struct cq_net_addr net = range_net(&ranges[i]);
        if (!prefix_contains(&net, ranges[i].len, &a))
            continue;
        if (ranges[i].cls < EMBEDDED_6TO4)
            return (enum cq_net_class)ranges[i].cls;
        struct cq_net_addr v4;
        memset(&v4, 0, sizeof(v4));
        v4.family = AF_INET;
        memcpy(v4.bytes, ranges[i].cls == EMBEDDED_6TO4 ? a.bytes + 2 : a.bytes + 12, 4);
        return cq_net_classify(&v4);
    }
    return CQ_NET_CLASS_PUBLIC; /* IPv4 outside every range */
}

bool cq_net_nonpublic_v4(size_t i, char *buf, size_t len)
{
    size_t seen = 0;
    for (size_t r = 0; r < N_RANGES; r++) {
        if (ranges[r].family != AF_INET || ranges[r].cls == CQ_NET_CLASS_PUBLIC)
            continue;
        /* Skip a row inside an earlier-or-later wider one (255.255.255.255 in 240/4). */
        struct cq_net_addr net = range_net(&ranges[r]);
        bool inside = false;
        for (size_t o = 0; o < N_RANGES && !inside; o++)
            if (o != r && ranges[o].family == AF_INET && ranges[o].len < ranges[r].len) {
                struct cq_net_addr other = range_net(&ranges[o]);
                inside = prefix_contains(&other, ranges[o].len, &net);
            }
        if (inside)
            continue;
        if (seen++ == i) {
            snprintf(buf, len, "%s/%u", ranges[r].net, ranges[r].len);
            return true;
        }
    }
    return false;
}

const char *cq_net_class_name(enum cq_net_class c)
{
    switch (c) {
    case CQ_NET_CLASS_PUBLIC:
        return "public";
    case CQ_NET_CLASS_PRIVATE:
        return "private";
    case CQ_NET_CLASS_LOOPBACK:
        return "loopback";
    case CQ_NET_CLASS_LINK_LOCAL:
        return "link-local";
    case CQ_NET_CLASS_MULTICAST:
        return "multicast";
    case CQ_NET_CLASS_UNSPECIFIED:
        return "unspecified or broadcast";
    case CQ_NET_CLASS_RESERVED:
        return "reserved";
    }
    return "unknown";
}

/* --- names ----------------------------------------------------------------------- */

/* Lower-cases a DNS name into out (CQ_NET_NAME_MAX + 1 bytes), dropping one trailing dot.
 * Labels: 1-63 of letters, digits, '-' and '_', not starting or ending with '-'; the
 * last label not all digits (that is an address in disguise). NULL when valid, else why. */
static const char *name_normalize(const char *in, size_t len, char *out)
{
    if (len > 0 && in[len - 1] == '.')
        len--;
    if (len == 0)
        return "empty name";
    if (len > CQ_NET_NAME_MAX)
        return "name longer than 253 characters";
    size_t label = 0;
    bool digits_only = true;
    for (size_t i = 0; i <= len; i++) {
        char c = i < len ? in[i] : '.';
        if (c == '.') {
            if (label == 0)
                return "empty label";
            if (out[i - 1] == '-')
                return "label ends with '-'";
            if (i < len) {
                label = 0;
                digits_only = true;
            }
            if (i < len)
                out[i] = '.';
            continue;
        }
        if (!(isalnum((unsigned char)c) || c == '-' || c == '_') || (c & 0x80))
            return "character not allowed in a name";
        if (label == 0 && c == '-')
            return "label starts with '-'";
        if (++label > 63)
            return "label longer than 63 characters";
        if (!isdigit((unsigned char)c))
            digits_only = false;
        out[i] = (char)tolower((unsigned char)c);
    }
    if (digits_only)
        return "all-digit last label (not an address in a form codeq accepts)";
    out[len] = '\0';
    return NULL;
}

/* Is name (normalized) covered by a NAME or SUFFIX rule's name? */
static bool name_matches(const struct cq_net_dest *d, const char *name)
{
    if (d->kind == CQ_NET_DEST_NAME)
        return strcmp(d->name, name) == 0;
    if (d->kind != CQ_NET_DEST_SUFFIX)
        return false;
    size_t n = strlen(name), s = strlen(d->name);
    return n > s + 1 && name[n - s - 1] == '.' && strcmp(name + n - s, d->name) == 0;
}

/* --- DEST -------------------------------------------------------------------------- */

static int parse_port(const char *text, size_t len, uint16_t *out)
{
    if (len == 0 || len > 5)
        return -1;
    unsigned v = 0;
    for (size_t i = 0; i < len; i++) {
        if (!isdigit((unsigned char)text[i]))
            return -1;
        v = v * 10 + (unsigned)(text[i] - '0');
    }
    if (v == 0 || v > 65535)
        return -1;
    *out = (uint16_t)v;
    return 0;
}

/* ADDR or ADDR/LEN (no port) into d as a CIDR. */
static int parse_cidr(const char *text, struct cq_net_dest *d, const char *orig,
                      struct cq_error *err)
{
    char buf[DEST_TEXT_MAX + 1];
    snprintf(buf, sizeof(buf), "%s", text);
    char *slash = strchr(buf, '/');
    if (slash != NULL)
        *slash = '\0';
    if (cq_net_addr_parse(buf, &d->addr) < 0)
        return cq_error_set(err, CQ_EINVALID, "'%s': '%s' is not an IP address", orig, buf);
    /* A prefix on a mapped address counts in IPv6 bits; keep it simple: refuse. */
    bool mapped = strchr(buf, ':') != NULL && d->addr.family == AF_INET;
    unsigned bits = addr_bits(d->addr.family);
    unsigned len = bits;
    if (slash != NULL) {
        const char *p = slash + 1;
        size_t n = strlen(p);
        if (mapped)
            return cq_error_set(err, CQ_EINVALID,
                                "'%s': write an IPv4 range as IPv4, not IPv4-mapped IPv6", orig);
        if (n == 0 || n > 3 || strspn(p, "0123456789") != n || (n > 1 && p[0] == '0'))
            return cq_error_set(err, CQ_EINVALID, "'%s': prefix length '%s' is not a number", orig,
                                p);
        len = (unsigned)atoi(p);
        if (len > bits)
            return cq_error_set(err, CQ_EINVALID, "'%s': prefix length %u is more than %u", orig,
                                len, bits);
    }
    if (!host_bits_clear(&d->addr, len)) {
        struct cq_net_addr net = d->addr;
        for (unsigned bit = len; bit < bits; bit++)
            net.bytes[bit / 8] &= (uint8_t) ~(0x80 >> (bit % 8));
        char nbuf[INET6_ADDRSTRLEN];
        inet_ntop(net.family, net.bytes, nbuf, sizeof(nbuf));
        return cq_error_set(err, CQ_EINVALID, "'%s': host bits are set; the network is %s/%u", orig,
                            nbuf, len);
    }
    d->kind = CQ_NET_DEST_CIDR;
    d->prefix_len = (uint8_t)len;
    return 0;
}

int cq_net_dest_parse(const char *text, struct cq_net_dest *out, struct cq_error *err)
{
    if (text == NULL || text[0] == '\0')
        return cq_error_set(err, CQ_EINVALID, "empty destination");
    size_t total = strlen(text);
    if (total > DEST_TEXT_MAX)
        return cq_error_set(err, CQ_EINVALID, "destination longer than %d characters",
                            DEST_TEXT_MAX);
    struct cq_net_dest d;
    memset(&d, 0, sizeof(d));
    char host[DEST_TEXT_MAX + 1];
    const char *port_text = NULL;
    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (close == NULL)
            return cq_error_set(err, CQ_EINVALID, "'%s': '[' without ']'", text);
        snprintf(host, sizeof(host), "%.*s", (int)(close - text - 1), text + 1);
        if (close[1] == ':')
            port_text = close + 2;
        else if (close[1] != '\0')
            return cq_error_set(err, CQ_EINVALID, "'%s': only ':PORT' may follow ']'", text);
        if (strchr(host, ':') == NULL)
            return cq_error_set(err, CQ_EINVALID, "'%s': brackets are for IPv6 addresses", text);
    } else {
        const char *colon = strchr(text, ':');
        if (colon != NULL && strchr(colon + 1, ':') != NULL) {
            snprintf(host, sizeof(host), "%s", text); /* IPv6 without a port */
        } else if (colon != NULL) {
            snprintf(host, sizeof(host), "%.*s", (int)(colon - text), text);
            port_text = colon + 1;
        } else {
            snprintf(host, sizeof(host), "%s", text);
        }
    }
    if (port_text != NULL && parse_port(port_text, strlen(port_text), &d.port) < 0)
        return cq_error_set(err, CQ_EINVALID, "'%s': port '%s' is not a number from 1 to 65535",
                            text, port_text);
    if (host[0] == '\0')
        return cq_error_set(err, CQ_EINVALID, "'%s': no host before the port", text);

    struct cq_net_addr probe;
    char addr_part[DEST_TEXT_MAX + 1];
    snprintf(addr_part, sizeof(addr_part), "%s", host);
    char *slash = strchr(addr_part, '/');
    if (slash != NULL)
        *slash = '\0';
    if (strchr(host, ':') != NULL || slash != NULL || cq_net_addr_parse(addr_part, &probe) == 0) {
        if (parse_cidr(host, &d, text, err) < 0)
            return -1;
    } else {
        const char *name = host;
        d.kind = CQ_NET_DEST_NAME;
        if (strncmp(host, "*.", 2) == 0) {
            d.kind = CQ_NET_DEST_SUFFIX;
            name = host + 2;
        } else if (strchr(host, '*') != NULL) {
            return cq_error_set(err, CQ_EINVALID, "'%s': '*' only as a whole first label (*.NAME)",
                                text);
        }
        const char *why = name_normalize(name, strlen(name), d.name);
        if (why != NULL)
            return cq_error_set(err, CQ_EINVALID,
                                "'%s' is neither an IP address nor a valid name: %s", text, why);
        if (d.kind == CQ_NET_DEST_SUFFIX && strchr(d.name, '.') == NULL)
            return cq_error_set(err, CQ_EINVALID,
                                "'%s': a wildcard over a whole top-level domain is refused", text);
    }
    *out = d;
    return 0;
}

void cq_net_dest_format(const struct cq_net_dest *d, char *buf, size_t len)
{
    if (len == 0)
        return;
    char host[CQ_NET_DEST_TEXT];
    if (d->kind == CQ_NET_DEST_CIDR) {
        char a[INET6_ADDRSTRLEN];
        if (inet_ntop(d->addr.family, d->addr.bytes, a, sizeof(a)) == NULL)
            snprintf(a, sizeof(a), "?");
        if (d->prefix_len == addr_bits(d->addr.family))
            snprintf(host, sizeof(host), "%s", a);
        else
            snprintf(host, sizeof(host), "%s/%u", a, d->prefix_len);
    } else {
        snprintf(host, sizeof(host), "%s%s", d->kind == CQ_NET_DEST_SUFFIX ? "*." : "", d->name);
    }
    bool v6 = d->kind == CQ_NET_DEST_CIDR && d->addr.family == AF_INET6;
    if (d->port == 0)
        snprintf(buf, len, "%s", host);
    else if (v6)
        snprintf(buf, len, "[%s]:%u", host, d->port);
    else
        snprintf(buf, len, "%s:%u", host, d->port);
}

int cq_net_rules_add(struct cq_net_rules *r, const char *dest, struct cq_error *err)
{
    if (r->n >= CQ_NET_MAX_RULES)
        return cq_error_set(err, CQ_ELIMIT, "more than %d entries", CQ_NET_MAX_RULES);
    if (cq_net_dest_parse(dest, &r->d[r->n], err) < 0)
        return -1;
    r->n++;
    return 0;
}

/* --- modes ------------------------------------------------------------------------- */

static const char *const mode_names[] = {
    [CQ_NETWORK_NONE] = "NONE",
    [CQ_NETWORK_PUBLIC] = "PUBLIC",
    [CQ_NETWORK_ALLOWLIST] = "ALLOWLIST",
};
#define N_MODES (sizeof(mode_names) / sizeof(mode_names[0]))

int cq_net_mode_parse(const char *text, enum cq_network_mode *out, struct cq_error *err)
{
    for (size_t m = 0; text != NULL && m < N_MODES; m++)
        if (strcasecmp(text, mode_names[m]) == 0) {
            *out = (enum cq_network_mode)m;
            return 0;
        }
    return cq_error_set(err, CQ_EINVALID, "network mode '%s' is not NONE, PUBLIC or ALLOWLIST",
                        text != NULL ? text : "(null)");
}

const char *cq_net_mode_name(enum cq_network_mode m)
{
    return (unsigned)m < N_MODES ? mode_names[m] : "UNKNOWN";
}

/* --- the operator's policy ---------------------------------------------------------- */

void cq_netpolicy_init(struct cq_netpolicy *p)
{
    memset(p, 0, sizeof(*p));
    p->modes = CQ_NET_MODE_BIT(CQ_NETWORK_NONE) | CQ_NET_MODE_BIT(CQ_NETWORK_PUBLIC) |
               CQ_NET_MODE_BIT(CQ_NETWORK_ALLOWLIST);
    p->default_mode = CQ_NETWORK_NONE;
    p->max_allow = CQ_NET_MAX_RULES;
    p->max_pinned = 256;
}

static bool port_covers(uint16_t rule_port, uint16_t port)
{
    return rule_port == 0 || rule_port == port;
}

/* Does rule (a CIDR) cover address a on port (0: any port, which only a portless rule
 * covers)? */
static bool cidr_covers(const struct cq_net_dest *rule, const struct cq_net_addr *a, uint16_t port)
{
    return rule->kind == CQ_NET_DEST_CIDR && prefix_contains(&rule->addr, rule->prefix_len, a) &&
           (rule->port == 0 || rule->port == port);
}

/* Does bound contain the whole of entry (addresses or names, and ports)? */
static bool rule_contains(const struct cq_net_dest *bound, const struct cq_net_dest *e)
{
    if (bound->port != 0 && bound->port != e->port)
        return false;
    if (e->kind == CQ_NET_DEST_CIDR)
        return bound->kind == CQ_NET_DEST_CIDR && bound->prefix_len <= e->prefix_len &&
               prefix_contains(&bound->addr, bound->prefix_len, &e->addr);
    if (bound->kind == CQ_NET_DEST_NAME)
        return e->kind == CQ_NET_DEST_NAME && strcmp(bound->name, e->name) == 0;
    if (bound->kind != CQ_NET_DEST_SUFFIX)
        return false;
    /* *.a.b contains x.a.b and *.x.a.b; *.a.b contains *.a.b itself. */
    return name_matches(bound, e->name) ||
           (e->kind == CQ_NET_DEST_SUFFIX && strcmp(bound->name, e->name) == 0);
}

static bool rules_contain(const struct cq_net_rules *r, const struct cq_net_dest *e)
{
    for (size_t i = 0; i < r->n; i++)
        if (rule_contains(&r->d[i], e))
            return true;
    return false;
}

/* An allowlist CIDR entry: every non-public range it touches must be private and opened
 * by network_private. The part they share is the longer of the two prefixes. */
static int check_entry_ranges(const struct cq_netpolicy *p, const struct cq_net_dest *e,
                              const char *text, struct cq_error *err)
{
    for (size_t i = 0; i < N_RANGES; i++) {
        const struct range *r = &ranges[i];
        if (r->cls == CQ_NET_CLASS_PUBLIC || r->family != e->addr.family)
            continue;
        struct cq_net_addr net = range_net(r);
        unsigned shorter = r->len < e->prefix_len ? r->len : e->prefix_len;
        if (!prefix_contains(e->prefix_len <= r->len ? &e->addr : &net, shorter,
                             e->prefix_len <= r->len ? &net : &e->addr))
            continue;
        /* The catch-all RESERVED row overlaps every IPv6 entry: an entry must lie within
         * global unicast (2000::/3) or the private fc00::/7, whose rows decide the rest. */
        if (r->len == 0) {
            struct cq_net_addr global, ula;
            cq_net_addr_parse("2000::", &global);
            cq_net_addr_parse("fc00::", &ula);
            if ((e->prefix_len >= 3 && prefix_contains(&global, 3, &e->addr)) ||
                (e->prefix_len >= 7 && prefix_contains(&ula, 7, &e->addr)))
                continue;
            goto refused;
        }
        if (r->cls >= EMBEDDED_6TO4) {
            if (e->prefix_len == 128 && cq_net_classify(&e->addr) == CQ_NET_CLASS_PUBLIC)
                continue;
            return cq_error_set(err, CQ_EINVALID,
                                "allow entry '%s' reaches into %s/%u (IPv4 carried in IPv6): "
                                "list the IPv4 addresses instead",
                                text, r->net, r->len);
        }
        if (r->cls == CQ_NET_CLASS_PRIVATE) {
            struct cq_net_dest shared = *e;
            if (r->len > e->prefix_len) {
                shared.addr = net;
                shared.prefix_len = (uint8_t)r->len;
            }
            if (rules_contain(&p->private_ok, &shared))
                continue;
            return cq_error_set(err, CQ_EINVALID,
                                "allow entry '%s' is in the private range %s/%u, which the "
                                "operator's policy does not open (network_private)",
                                text, r->net, r->len);
        }
    refused:
        return cq_error_set(err, CQ_EINVALID,
                            "allow entry '%s' reaches %s addresses (%s/%u), which are refused "
                            "in every mode",
                            text, cq_net_class_name((enum cq_net_class)r->cls), r->net, r->len);
    }
    return 0;
}

int cq_netpolicy_admit(const struct cq_netpolicy *p, const enum cq_network_mode *mode,
                       const char *const *allow, size_t n_allow, struct cq_net_grant *out,
                       struct cq_error *err)
{
    enum cq_network_mode m = mode != NULL ? *mode : p->default_mode;
    if ((unsigned)m >= N_MODES)
        return cq_error_set(err, CQ_EINVALID, "unknown network mode %d", (int)m);
    if (!(p->modes & CQ_NET_MODE_BIT(m))) {
        char list[64] = "";
        for (size_t i = 0; i < N_MODES; i++)
            if (p->modes & CQ_NET_MODE_BIT(i))
                snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s",
                         list[0] ? "," : "", mode_names[i]);
        return cq_error_set(err, CQ_EINVALID,
                            "network mode %s is not allowed by the operator's policy "
                            "(network_modes = %s)",
                            mode_names[m], list[0] ? list : "none");
    }
    if (m != CQ_NETWORK_ALLOWLIST && n_allow > 0)
        return cq_error_set(err, CQ_EINVALID,
                            "an allowlist is only for network mode ALLOWLIST (mode is %s)",
                            mode_names[m]);
    if (m == CQ_NETWORK_ALLOWLIST && n_allow == 0)
        return cq_error_set(err, CQ_EINVALID,
                            "network mode ALLOWLIST needs at least one allowed destination");
    size_t max = p->max_allow < CQ_NET_MAX_RULES ? p->max_allow : CQ_NET_MAX_RULES;
    if (n_allow > max)
        return cq_error_set(err, CQ_EINVALID,
                            "%zu allowed destinations; the operator's policy allows at most %zu "
                            "(network_max_allow)",
                            n_allow, max);
    struct cq_net_grant g;
    memset(&g, 0, sizeof(g));
    g.mode = m;
    for (size_t i = 0; i < n_allow; i++) {
        struct cq_net_dest *e = &g.allow.d[g.allow.n];
        if (cq_net_dest_parse(allow[i], e, err) < 0)
            return cq_error_prefix(err, "allow entry %zu", i + 1);
        if (e->kind == CQ_NET_DEST_CIDR && check_entry_ranges(p, e, allow[i], err) < 0)
            return -1;
        if (p->bounds.n > 0 && !rules_contain(&p->bounds, e))
            return cq_error_set(err, CQ_EINVALID,
                                "allow entry '%s' is outside what the operator's policy lets an "
                                "allowlist name (network_allow_bounds)",
                                allow[i]);
        g.allow.n++;
    }
    *out = g;
    return 0;
}

/* --- connect decisions ---------------------------------------------------------------- */

static enum cq_net_verdict refuse(enum cq_net_verdict v, struct cq_error *why, const char *target,
                                  const char *fmt, const char *detail)
{
    char msg[256];
    snprintf(msg, sizeof(msg), fmt, detail);
    cq_error_set(why, CQ_EDENIED, "connect %s: %s", target, msg);
    return v;
}

static bool grant_names_cover(const struct cq_net_grant *g, const char *name, uint16_t port)
{
    char norm[CQ_NET_NAME_MAX + 1];
    if (name == NULL || name_normalize(name, strlen(name), norm) != NULL)
        return false;
    for (size_t i = 0; i < g->allow.n; i++)
        if (name_matches(&g->allow.d[i], norm) && port_covers(g->allow.d[i].port, port))
            return true;
    return false;
}

enum cq_net_verdict cq_netpolicy_check_connect(const struct cq_netpolicy *p,
                                               const struct cq_net_grant *g,
                                               const struct cq_net_addr *addr_in, uint16_t port,
                                               int proto, const struct cq_net_resolved *resolved,
                                               size_t n_resolved, struct cq_error *why)
{
    struct cq_net_addr a = *addr_in;
    addr_normalize(&a);
    char abuf[INET6_ADDRSTRLEN] = "?", target[INET6_ADDRSTRLEN + 16];
    inet_ntop(a.family, a.bytes, abuf, sizeof(abuf));
    const char *pname = proto == IPPROTO_TCP ? "tcp" : proto == IPPROTO_UDP ? "udp" : "other";
    snprintf(target, sizeof(target), a.family == AF_INET6 ? "[%s]:%u/%s" : "%s:%u/%s", abuf, port,
             pname);

    if (g->mode == CQ_NETWORK_NONE || (unsigned)g->mode >= N_MODES)
        return refuse(CQ_NET_REFUSE_MODE, why, target, "%s", "network mode NONE");
    if ((proto != IPPROTO_TCP && proto != IPPROTO_UDP) || port == 0)
        return refuse(CQ_NET_REFUSE_PROTO, why, target, "%s", "only TCP and UDP to a port");
    enum cq_net_class cls = cq_net_classify(&a);
    if (cls != CQ_NET_CLASS_PUBLIC && cls != CQ_NET_CLASS_PRIVATE)
        return refuse(CQ_NET_REFUSE_CLASS, why, target, "%s addresses are refused in every mode",
                      cq_net_class_name(cls));
    for (size_t i = 0; i < p->n_host && i < CQ_NET_MAX_HOST; i++) {
        struct cq_net_addr h = p->host[i];
        addr_normalize(&h);
        if (h.family == a.family && memcmp(h.bytes, a.bytes, 16) == 0)
            return refuse(CQ_NET_REFUSE_HOST, why, target, "%s",
                          "the host's own addresses are refused in every mode");
    }
    for (size_t i = 0; i < p->deny.n; i++)
        if (cidr_covers(&p->deny.d[i], &a, port)) {
            char rule[CQ_NET_DEST_TEXT];
            cq_net_dest_format(&p->deny.d[i], rule, sizeof(rule));
            return refuse(CQ_NET_REFUSE_DENY, why, target,
                          "refused by the operator's policy (network_deny %s)", rule);
        }
    if (cls == CQ_NET_CLASS_PRIVATE) {
        bool opened = false;
        for (size_t i = 0; i < p->private_ok.n && !opened; i++)
            opened = cidr_covers(&p->private_ok.d[i], &a, port);
        if (!opened)
            return refuse(CQ_NET_REFUSE_PRIVATE, why, target, "%s",
                          "private address not opened by the operator's policy "
                          "(network_private)");
    }
    if (g->mode == CQ_NETWORK_PUBLIC)
        return CQ_NET_ALLOW;
    for (size_t i = 0; i < g->allow.n; i++)
        if (cidr_covers(&g->allow.d[i], &a, port))
            return CQ_NET_ALLOW;
    for (size_t i = 0; i < n_resolved; i++) {
        struct cq_net_addr r = resolved[i].addr;
        addr_normalize(&r);
        if (r.family == a.family && memcmp(r.bytes, a.bytes, 16) == 0 &&
            grant_names_cover(g, resolved[i].name, port))
            return CQ_NET_ALLOW;
    }
    return refuse(CQ_NET_REFUSE_NOT_LISTED, why, target, "%s",
                  "not in the allowlist, nor an address resolved for a name it lists");
}

bool cq_netpolicy_name_allowed(const struct cq_net_grant *g, const char *name)
{
    if (g->mode == CQ_NETWORK_PUBLIC)
        return true;
    if (g->mode != CQ_NETWORK_ALLOWLIST)
        return false;
    char norm[CQ_NET_NAME_MAX + 1];
    if (name == NULL || name_normalize(name, strlen(name), norm) != NULL)
        return false;
    for (size_t i = 0; i < g->allow.n; i++)
        if (name_matches(&g->allow.d[i], norm))
            return true;
    return false;
}

bool cq_net_dest_covers_name(const struct cq_net_dest *d, const char *name)
{
    char norm[CQ_NET_NAME_MAX + 1];
    if (name == NULL || name_normalize(name, strlen(name), norm) != NULL)
        return false;
    return name_matches(d, norm);
}

bool cq_net_dest_covers_addr(const struct cq_net_dest *d, const struct cq_net_addr *addr_in)
{
    struct cq_net_addr a = *addr_in;
    addr_normalize(&a);
    return d->kind == CQ_NET_DEST_CIDR && prefix_contains(&d->addr, d->prefix_len, &a);
}

bool cq_net_dest_private(const struct cq_net_dest *d)
{
    if (d->kind != CQ_NET_DEST_CIDR || cq_net_classify(&d->addr) != CQ_NET_CLASS_PRIVATE)
        return false;
    /* The private ranges are apart from each other, with other classes between them:
     * a range whose first and last addresses are private lies inside one. */
    struct cq_net_addr last = d->addr;
    for (unsigned bit = d->prefix_len; bit < addr_bits(d->addr.family); bit++)
        last.bytes[bit / 8] |= (uint8_t)(0x80 >> (bit % 8));
    return cq_net_classify(&last) == CQ_NET_CLASS_PRIVATE;
}
