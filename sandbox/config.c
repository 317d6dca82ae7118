/* sandbox/config.c - defaults and validation of sandbox and spawn settings. */
#define _GNU_SOURCE
#include "sandbox/sandbox.h"
#include "sandbox/internal.h"
#include "sandbox/netpolicy.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void cq_sandbox_config_init(struct cq_sandbox_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->limits = (struct cq_sandbox_limits){
        .memory_bytes = CQ_SANDBOX_DEFAULT_MEMORY,
        .pids = CQ_SANDBOX_DEFAULT_PIDS,
        .cpus = CQ_SANDBOX_DEFAULT_CPUS,
        .workspace_bytes = CQ_SANDBOX_DEFAULT_DISK,
        .workspace_inodes = CQ_SANDBOX_DEFAULT_INODES,
        .tmp_bytes = CQ_SANDBOX_DEFAULT_TMP,
        .file_size_bytes = CQ_SANDBOX_DEFAULT_DISK,
        .open_files = CQ_SANDBOX_DEFAULT_OPEN_FILES,
    };
    cfg->network = CQ_NETWORK_NONE;
    cfg->hostname = "codeq";
}

void cq_spawn_init(struct cq_spawn *req, const char *const *argv)
{
    memset(req, 0, sizeof(*req));
    req->argv = argv;
    req->stdin_mode = req->stdout_mode = req->stderr_mode = CQ_STDIO_NULL;
    req->stdin_fd = req->stdout_fd = req->stderr_fd = -1;
}

int cq_env_entry_validate(const char *entry, struct cq_error *err)
{
    const char *eq = strchr(entry, '=');
    if (eq == NULL || eq == entry)
        return cq_error_set(err, CQ_EINVALID, "environment entry '%s' is not NAME=VALUE", entry);
    for (const char *p = entry; p < eq; p++) {
        bool ok =
            *p == '_' || isalpha((unsigned char)*p) || (p > entry && isdigit((unsigned char)*p));
        if (!ok)
            return cq_error_set(err, CQ_EINVALID, "environment name '%.*s' is not a valid name",
                                (int)(eq - entry), entry);
    }
    return 0;
}

/* Each entry parses and passes the operator's policy (the sandbox admits it again at
 * create; here, so that a command line gets the message before anything starts). */
static int admit_allowlist(const struct cq_sandbox_config *cfg, struct cq_error *err)
{
    struct cq_netpolicy *defaults = NULL;
    struct cq_net_grant *g = malloc(sizeof(*g));
    const struct cq_netpolicy *p = cfg->netpolicy;
    if (p == NULL && (defaults = malloc(sizeof(*defaults))) != NULL) {
        cq_netpolicy_init(defaults);
        p = defaults;
    }
    int rc = g == NULL || p == NULL
                 ? cq_error_sys(err, ENOMEM, "allowlist")
                 : cq_netpolicy_admit(p, &cfg->network, cfg->allow, cfg->n_allow, g, err);
    free(g);
    free(defaults);
    return rc;
}

static int validate_network(const struct cq_sandbox_config *cfg, struct cq_error *err)
{
    if (cfg->network != CQ_NETWORK_NONE && cfg->network != CQ_NETWORK_PUBLIC &&
        cfg->network != CQ_NETWORK_ALLOWLIST)
        return cq_error_set(err, CQ_EINVALID, "unknown network mode %d", (int)cfg->network);
    if (cfg->n_allow > 0 && cfg->network != CQ_NETWORK_ALLOWLIST)
        return cq_error_set(err, CQ_EINVALID, "an allowlist is for network mode ALLOWLIST, not %s",
                            cq_net_mode_name(cfg->network));
    if (cfg->network == CQ_NETWORK_NONE) {
        if (cfg->egress_netns != NULL || cfg->dns != NULL)
            return cq_error_set(err, CQ_EINVALID,
                                "an egress namespace and a resolver are for network modes "
                                "PUBLIC and ALLOWLIST, not NONE");
        return 0;
    }
    /* No egress namespace: codeq's own, joined to the host by pasta (sandbox/uplink.c). */
    if (cfg->egress_netns != NULL && cfg->egress_netns[0] != '/')
        return cq_error_set(err, CQ_EINVALID,
                            "the egress namespace must be an absolute path (e.g. "
                            "/run/netns/NAME), not '%s'",
                            cfg->egress_netns);
    if (cfg->n_allow > CQ_NET_MAX_RULES || (cfg->n_allow > 0 && cfg->allow == NULL))
        return cq_error_set(err, CQ_EINVALID, "at most %d allowlist entries", CQ_NET_MAX_RULES);
    for (size_t i = 0; i < cfg->n_allow; i++)
        if (cfg->allow[i] == NULL)
            return cq_error_set(err, CQ_EINVALID, "allowlist entry %zu is missing", i);
    if (cfg->n_allow > 0 && admit_allowlist(cfg, err) < 0)
        return -1;
    if (cfg->dns != NULL) {
        struct cq_net_addr a;
        if (cq_net_addr_parse(cfg->dns, &a) < 0)
            return cq_error_set(err, CQ_EINVALID, "resolver '%s' is not an IP address", cfg->dns);
        /* codeq's resolver asks it from the egress namespace, never the sandbox: any
         * unicast address the operator names will do, but not one that is no host. */
        enum cq_net_class c = cq_net_classify(&a);
        if (c == CQ_NET_CLASS_MULTICAST || c == CQ_NET_CLASS_UNSPECIFIED)
            return cq_error_set(err, CQ_EINVALID, "resolver %s is a %s address", cfg->dns,
                                cq_net_class_name(c));
    }
    return 0;
}

int cq_sandbox_config_validate(const struct cq_sandbox_config *cfg, struct cq_error *err)
{
    const struct cq_sandbox_limits *l = &cfg->limits;
    /* Lower bounds keep the sandbox able to start its own helpers at all. */
    if (l->memory_bytes < (8ULL << 20))
        return cq_error_set(err, CQ_EINVALID, "memory limit must be at least 8M");
    if (l->pids < 4 || l->pids > 1000000)
        return cq_error_set(
            err, CQ_EINVALID,
            "pids limit must be between 4 (init, a shim and a process) and 1000000");
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    if (!(l->cpus >= 0.01) || l->cpus > (double)(ncpu > 0 ? ncpu : 1) * 4)
        return cq_error_set(err, CQ_EINVALID, "cpus must be between 0.01 and %ld", ncpu * 4);
    if (l->workspace_bytes < 4096 || l->tmp_bytes < 4096)
        return cq_error_set(err, CQ_EINVALID, "disk and tmp sizes must be at least 4K");
    if (l->workspace_inodes < 16)
        return cq_error_set(err, CQ_EINVALID, "workspace inodes must be at least 16");
    if (l->file_size_bytes == 0)
        return cq_error_set(err, CQ_EINVALID, "file size limit must be above 0");
    if (l->open_files < 16 || l->open_files > 1048576)
        return cq_error_set(err, CQ_EINVALID, "open files limit must be between 16 and 1048576");
    if (cfg->workspace_dir != NULL && cfg->workspace_dir[0] != '/')
        return cq_error_set(err, CQ_EINVALID, "workspace directory '%s' is not an absolute path",
                            cfg->workspace_dir);
    if (cfg->n_binds > CQ_SANDBOX_MAX_BINDS || (cfg->n_binds > 0 && cfg->binds == NULL))
        return cq_error_set(err, CQ_EINVALID, "at most %d extra binds", CQ_SANDBOX_MAX_BINDS);
    for (size_t i = 0; i < cfg->n_binds; i++) {
        const struct cq_sandbox_bind *b = &cfg->binds[i];
        /* Extra binds live below /opt: everything else of the root has a fixed
         * meaning, and a bind over /proc, /dev or /workspace would undo isolation. */
        if (b->host_path == NULL || b->host_path[0] != '/' || b->sandbox_path == NULL ||
            strncmp(b->sandbox_path, "/opt/", 5) != 0 || b->sandbox_path[5] == '\0' ||
            strstr(b->sandbox_path, "..") != NULL || strstr(b->host_path, "..") != NULL)
            return cq_error_set(err, CQ_EINVALID,
                                "extra bind %s -> %s: need an absolute host path and a path "
                                "below /opt/ without '..'",
                                b->host_path != NULL ? b->host_path : "(null)",
                                b->sandbox_path != NULL ? b->sandbox_path : "(null)");
    }
    if (validate_network(cfg, err) < 0)
        return -1;
    const char *h = cfg->hostname != NULL ? cfg->hostname : "codeq";
    size_t hlen = strlen(h);
    if (hlen == 0 || hlen > 63 ||
        strspn(h, "abcdefghijklmnopqrstuvwxyz"
                  "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-") != hlen)
        return cq_error_set(err, CQ_EINVALID, "hostname '%s' is not a valid host name", h);
    for (const char *const *e = cfg->env; e != NULL && *e != NULL; e++)
        if (cq_env_entry_validate(*e, err) < 0)
            return -1;
    return 0;
}
