/* worker/interpreter.c - the worker's table of code interpreters (worker/worker.h).
 *
 * Each entry is a deep copy of what the front end gave: the caller's definition (a
 * runtime profile, a fleet message) may go away at once. A session copies what it
 * needs from the entry when it starts, so replacing or deleting an interpreter never
 * changes a running session. The table shares the pool lock with the warm pools: the
 * refill thread walks both.
 */
#define _GNU_SOURCE
#include "worker/session.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void free_strv(char **v)
{
    for (char **p = v; p != NULL && *p != NULL; p++)
        free(*p);
    free(v);
}

static void interp_free(struct cq_interp *ip)
{
    if (ip == NULL)
        return;
    free(ip->layer_host);
    free(ip->layer_sandbox);
    free_strv(ip->env);
    free_strv(ip->preload);
    free_strv(ip->allow);
    free(ip);
}

/* A NULL-terminated copy of n entries (n SIZE_MAX: up to the NULL); NULL when out of
 * memory. v NULL is an empty list. */
static char **copy_strv(const char *const *v, size_t n)
{
    size_t count = 0;
    while (v != NULL && count < n && v[count] != NULL)
        count++;
    char **out = calloc(count + 1, sizeof(char *));
    for (size_t i = 0; out != NULL && i < count; i++)
        if ((out[i] = strdup(v[i])) == NULL) {
            free_strv(out);
            return NULL;
        }
    return out;
}

static bool name_ok(const char *name)
{
    size_t len = name != NULL ? strlen(name) : 0;
    if (len == 0 || len > 63)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        if (!alnum && (i == 0 || (c != '.' && c != '_' && c != '-')))
            return false;
    }
    return true;
}

/* A dotted Python module name; it reaches the kernel as one argument. */
static bool module_ok(const char *m)
{
    bool start = true;
    for (const char *p = m; *p != '\0'; p++) {
        char c = *p;
        bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
        bool digit = c >= '0' && c <= '9';
        if (c == '.' && !start)
            start = true;
        else if (letter || (digit && !start))
            start = false;
        else
            return false;
    }
    return m[0] != '\0' && !start;
}

static int validate(const struct cq_worker *w, const struct cq_interpreter *def,
                    struct cq_error *err)
{
    if (!name_ok(def->name))
        return cq_error_set(err, CQ_EINVALID,
                            "code interpreter name '%s' is not 1 to 63 of [a-z0-9._-] starting "
                            "with a letter or digit",
                            def->name != NULL ? def->name : "");
    if (strcmp(def->name, CQ_INTERPRETER_DEFAULT) == 0)
        return cq_error_set(err, CQ_EINVALID, "%s is built in: it cannot be defined",
                            CQ_INTERPRETER_DEFAULT);
    if (def->runtime != NULL && strlen(def->runtime) > 63)
        return cq_error_set(err, CQ_EINVALID, "code interpreter '%s': runtime name too long",
                            def->name);
    if (def->runtime_digest != NULL && strlen(def->runtime_digest) > 64)
        return cq_error_set(err, CQ_EINVALID, "code interpreter '%s': digest too long", def->name);
    size_t n_preload = 0;
    for (const char *const *m = def->preload; m != NULL && *m != NULL; m++, n_preload++)
        if (!module_ok(*m))
            return cq_error_set(err, CQ_EINVALID,
                                "code interpreter '%s': preload '%s' is not a module name",
                                def->name, *m);
    if (n_preload > CQ_KERNEL_MAX_PRELOAD)
        return cq_error_set(err, CQ_EINVALID, "code interpreter '%s': more than %d preload modules",
                            def->name, CQ_KERNEL_MAX_PRELOAD);
    if (def->network != NULL && ((int)*def->network < 0 || *def->network > CQ_NETWORK_ALLOWLIST))
        return cq_error_set(err, CQ_EINVALID, "code interpreter '%s': unknown network mode",
                            def->name);
    if (def->session_timeout_s > CQ_WORKER_MAX_SESSION_TTL_S)
        return cq_error_set(err, CQ_EINVALID,
                            "code interpreter '%s': session timeout %u s is above the maximum "
                            "of %u",
                            def->name, def->session_timeout_s, CQ_WORKER_MAX_SESSION_TTL_S);
    if (def->n_allow > 0 && def->allow == NULL)
        return cq_error_set(err, CQ_EINVALID, "code interpreter '%s': allowlist missing",
                            def->name);
    /* Limits, environment and layer as a sandbox would take them, so that a bad
     * definition fails here, naming the interpreter, and not at each session. */
    struct cq_sandbox_config check;
    cq_sandbox_config_init(&check);
    check.limits = cq_worker_limits(w, &def->limits);
    check.env = def->env;
    check.binds = &def->layer;
    check.n_binds = def->layer.host_path != NULL ? 1 : 0;
    if (cq_sandbox_config_validate(&check, err) < 0)
        return cq_error_prefix(err, "code interpreter '%s'", def->name);
    size_t rlen = strlen(RUNTIMES_IN_SANDBOX);
    if (def->layer.host_path != NULL &&
        strncmp(def->layer.sandbox_path, RUNTIMES_IN_SANDBOX, rlen) == 0 &&
        (def->layer.sandbox_path[rlen] == '\0' || def->layer.sandbox_path[rlen] == '/'))
        return cq_error_set(err, CQ_EINVALID,
                            "code interpreter '%s': its layer cannot be bound at %s, codeq's "
                            "kernels",
                            def->name, RUNTIMES_IN_SANDBOX);
    return 0;
}

static struct cq_interp *interp_copy(const struct cq_worker *w, const struct cq_interpreter *def)
{
    struct cq_interp *ip = calloc(1, sizeof(*ip));
    if (ip == NULL)
        return NULL;
    snprintf(ip->name, sizeof(ip->name), "%s", def->name);
    snprintf(ip->runtime, sizeof(ip->runtime), "%s", def->runtime != NULL ? def->runtime : "");
    snprintf(ip->digest, sizeof(ip->digest), "%s",
             def->runtime_digest != NULL ? def->runtime_digest : "");
    ip->env = copy_strv(def->env, SIZE_MAX);
    ip->preload = copy_strv(def->preload, SIZE_MAX);
    ip->allow = copy_strv(def->allow, def->n_allow);
    bool ok = ip->env != NULL && ip->preload != NULL && ip->allow != NULL;
    if (def->layer.host_path != NULL) {
        ip->layer_host = strdup(def->layer.host_path);
        ip->layer_sandbox = strdup(def->layer.sandbox_path);
        ok = ok && ip->layer_host != NULL && ip->layer_sandbox != NULL;
    }
    if (!ok) {
        interp_free(ip);
        return NULL;
    }
    for (char **a = ip->allow; *a != NULL; a++)
        ip->n_allow++;
    ip->limits = def->limits;
    ip->has_network = def->network != NULL;
    ip->network = def->network != NULL ? *def->network : CQ_NETWORK_NONE;
    ip->ttl_s = def->session_timeout_s;

    /* Its pool holds sandboxes of the mode its sessions get when they name none, and
     * only when the operator's policy admits that mode (and list): sessions on it are
     * refused otherwise, pooled sandboxes would wait for nobody. */
    const struct cq_netpolicy *np = &w->cfg.netpolicy;
    struct cq_net_grant grant;
    struct cq_error ignored;
    ip->pool.mode = ip->has_network ? ip->network : np->default_mode;
    unsigned size = def->warm_pool > CQ_WORKER_MAX_POOL ? CQ_WORKER_MAX_POOL : def->warm_pool;
    if (size > 0 &&
        cq_netpolicy_admit(np, ip->has_network ? &ip->network : NULL,
                           (const char *const *)ip->allow, ip->n_allow, &grant, &ignored) == 0)
        ip->pool.size = size;
    /* Its kernels are exec'd (only codeq.default's fork): it grows only when the
     * operator asked for that (warm_pool_max). */
    ip->pool.max = cq_pool_max_for(&w->cfg, ip->pool.size, false);
    ip->refs = 1; /* the table's */
    ip->defined = true;
    return ip;
}

/* Takes ip out of the table (pool lock held) and its warm sandboxes out of its pool,
 * into *drained, to be destroyed without the lock. */
static void unlink_locked(struct cq_worker *w, struct cq_interp *ip, struct cq_pool *drained)
{
    for (struct cq_interp **link = &w->pool.interps; *link != NULL; link = &(*link)->next)
        if (*link == ip) {
            *link = ip->next;
            break;
        }
    ip->next = NULL;
    ip->defined = false;
    *drained = ip->pool;
    ip->pool.n = 0;
    ip->pool.size = 0;
}

static struct cq_interp *find_locked(struct cq_worker *w, const char *name)
{
    for (struct cq_interp *ip = w->pool.interps; ip != NULL; ip = ip->next)
        if (strcmp(ip->name, name) == 0)
            return ip;
    return NULL;
}

int cq_worker_define_interpreter(struct cq_worker *w, const struct cq_interpreter *def,
                                 struct cq_error *err)
{
    if (validate(w, def, err) < 0)
        return -1;
    struct cq_interp *ip = interp_copy(w, def);
    if (ip == NULL)
        return cq_error_sys(err, ENOMEM, "code interpreter '%s'", def->name);
    struct cq_pool drained = {0};
    pthread_mutex_lock(&w->pool.lock);
    struct cq_interp *old = find_locked(w, ip->name);
    if (old != NULL)
        unlink_locked(w, old, &drained);
    ip->next = w->pool.interps;
    w->pool.interps = ip;
    pthread_cond_broadcast(&w->pool.cond); /* its pool wants filling */
    pthread_mutex_unlock(&w->pool.lock);
    /* The old definition's warm sandboxes go: a session on the new one must get the
     * new layer, environment and limits. */
    cq_pool_destroy_items(&drained);
    if (old != NULL)
        cq_interp_put(w, old);
    return 0;
}

int cq_worker_delete_interpreter(struct cq_worker *w, const char *name, struct cq_error *err)
{
    if (name != NULL && strcmp(name, CQ_INTERPRETER_DEFAULT) == 0)
        return cq_error_set(err, CQ_EINVALID, "%s is built in: it cannot be deleted",
                            CQ_INTERPRETER_DEFAULT);
    struct cq_pool drained = {0};
    pthread_mutex_lock(&w->pool.lock);
    struct cq_interp *ip = name != NULL ? find_locked(w, name) : NULL;
    if (ip != NULL)
        unlink_locked(w, ip, &drained);
    pthread_mutex_unlock(&w->pool.lock);
    if (ip == NULL)
        return cq_error_set(err, CQ_ENOTFOUND, "no code interpreter '%s'",
                            name != NULL ? name : "");
    cq_pool_destroy_items(&drained);
    cq_interp_put(w, ip);
    return 0;
}

bool cq_worker_has_interpreter(struct cq_worker *w, const char *name)
{
    if (name == NULL || name[0] == '\0' || strcmp(name, CQ_INTERPRETER_DEFAULT) == 0)
        return true;
    pthread_mutex_lock(&w->pool.lock);
    bool has = find_locked(w, name) != NULL;
    pthread_mutex_unlock(&w->pool.lock);
    return has;
}

struct cq_interp *cq_interp_get(struct cq_worker *w, const char *name)
{
    pthread_mutex_lock(&w->pool.lock);
    struct cq_interp *ip = find_locked(w, name);
    if (ip != NULL)
        ip->refs++;
    pthread_mutex_unlock(&w->pool.lock);
    return ip;
}

void cq_interp_put(struct cq_worker *w, struct cq_interp *ip)
{
    pthread_mutex_lock(&w->pool.lock);
    bool last = --ip->refs == 0;
    pthread_mutex_unlock(&w->pool.lock);
    if (last)
        interp_free(ip); /* out of the table, its pool empty: nobody else sees it */
}

void cq_interps_destroy(struct cq_worker *w)
{
    while (w->pool.interps != NULL) {
        struct cq_pool drained;
        struct cq_interp *ip = w->pool.interps;
        unlink_locked(w, ip, &drained);
        cq_pool_destroy_items(&drained);
        cq_interp_put(w, ip);
    }
}
