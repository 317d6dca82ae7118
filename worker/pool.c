/* worker/pool.c - sandboxes and kernels for sessions, and the warm pools.
 *
 * The warm pools keep a few sandboxes whose Python kernel has already imported numpy,
 * pandas and matplotlib (the imports dominate a session's start: docs/performance.md)
 * so that a new session answers its first call in milliseconds: one pool per network
 * mode for codeq.default, and one per code interpreter that asks for one (its layer,
 * environment, limits and network mode; its kernels import its preload modules too).
 * One background thread refills them all, the emptiest first.
 *
 * A pool of forked kernels grows with demand: to the most starts it saw in one second
 * of the last minute (up to its max), and back, one sandbox at a time, once that
 * second has left the window. A burst then finds as many ready as the last one asked
 * for, and a steady rate a second's worth. A forked kernel makes this cheap (~5 MiB and
 * ~40 ms each); an exec'd one costs ~50 MiB and a second of CPU, so its pool stays at
 * its size unless the operator sets a max.
 */
#define _GNU_SOURCE
#include "worker/session.h"
#include "common/clock.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define KERNEL_START_TIMEOUT_MS 120000
/* A pool whose sandboxes fail to start (its egress namespace gone, its layer removed, a
 * preload module that hangs until the kernel's start times out) is tried again after
 * this, doubled at each failure in a row up to the maximum, and does not hold up the
 * other pools meanwhile: the one refill thread spends at most one start's timeout on
 * it per POOL_RETRY_MAX_MS. */
#define POOL_RETRY_MS 5000
/* A zygote that did not start is tried again after this. */
#define ZYGOTE_RETRY_MS   30000
#define POOL_RETRY_MAX_MS (300 * 1000)

int cq_worker_make_sandbox(struct cq_worker *w, const struct cq_interp *ip,
                           const struct cq_sandbox_limits *limits, enum cq_network_mode network,
                           const char *const *allow, size_t n_allow, struct cq_sandbox **out,
                           struct cq_error *err)
{
    const struct cq_sandbox_extras extras = {.enterable = w->cfg.fork_kernels};
    return cq_worker_sandbox_with(w, ip, limits, network, allow, n_allow, &extras, out, err);
}

int cq_worker_sandbox_with(struct cq_worker *w, const struct cq_interp *ip,
                           const struct cq_sandbox_limits *limits, enum cq_network_mode network,
                           const char *const *allow, size_t n_allow,
                           const struct cq_sandbox_extras *extras, struct cq_sandbox **out,
                           struct cq_error *err)
{
    /* pip and npm in a session: the runtime's packages are read-only (and Debian marks
     * them externally managed, PEP 668), so pip falls back to the user site below HOME,
     * the workspace, and npm installs into /workspace/node_modules (the cwd's); the
     * kernels import from both (runtimes/) and the fleet keeps them with the session's
     * files. npm's cache goes to /tmp, not to ~/.npm in the workspace. Where the
     * network refuses the index, both must fail at once with their network error:
     * without network pip retries once instead of five times with back-off and npm not
     * at all; with it, npm's two retries wait 1 s and 2 s, not 10 s and 60 s (an
     * ALLOWLIST that does not list the registry took 70 s). The interpreter's
     * environment comes next (PYTHONPATH into its layer: every process of the sandbox
     * sees it, kernels and commands), and a session's own env on top of both, per
     * process (PIP_INDEX_URL, npm_config_registry). */
    static const char *const install_env[] = {"PIP_BREAK_SYSTEM_PACKAGES=1",
                                              "PIP_DISABLE_PIP_VERSION_CHECK=1",
                                              "npm_config_cache=/tmp/.npm",
                                              "npm_config_update_notifier=false",
                                              "npm_config_audit=false",
                                              "npm_config_fund=false",
                                              NULL};
    static const char *const install_env_online[] = {"npm_config_fetch_retry_mintimeout=1000",
                                                     "npm_config_fetch_retry_factor=2", NULL};
    static const char *const install_env_offline[] = {"PIP_RETRIES=1", "npm_config_fetch_retries=0",
                                                      NULL};
    size_t n_env = 0;
    for (char **e = ip != NULL ? ip->env : NULL; e != NULL && *e != NULL; e++)
        n_env++;
    const char **env = calloc(n_env + 9, sizeof(*env));
    if (env == NULL)
        return cq_error_sys(err, ENOMEM, "sandbox environment");
    size_t n = 0;
    for (const char *const *e = install_env; *e != NULL; e++)
        env[n++] = *e;
    for (const char *const *e = network == CQ_NETWORK_NONE ? install_env_offline
                                                           : install_env_online;
         *e != NULL; e++)
        env[n++] = *e;
    for (size_t i = 0; i < n_env; i++)
        env[n++] = ip->env[i];
    env[n] = NULL;

    struct cq_sandbox_config cfg;
    cq_sandbox_config_init(&cfg);
    cfg.limits = *limits;
    cfg.network = network;
    cfg.env = env;
    if (network != CQ_NETWORK_NONE) {
        /* none named: codeq's own, through pasta (sandbox/uplink.c) */
        cfg.egress_netns = w->cfg.egress_netns[0] != '\0' ? w->cfg.egress_netns : NULL;
        cfg.dns = w->cfg.dns[0] != '\0' ? w->cfg.dns : NULL;
        cfg.allow = allow;
        cfg.n_allow = n_allow;
        cfg.netpolicy = &w->cfg.netpolicy;
    }
    struct cq_sandbox_bind binds[3];
    size_t n_binds = 0;
    cfg.enterable = extras->enterable;
    cfg.workspace_dir = extras->workspace_dir;
    if (extras->bind != NULL)
        binds[n_binds++] = *extras->bind;
    if (w->runtimes_seen != w->runtimes_dir)
        binds[n_binds++] = (struct cq_sandbox_bind){.host_path = w->runtimes_dir,
                                                    .sandbox_path = RUNTIMES_IN_SANDBOX};
    if (ip != NULL && ip->layer_host != NULL)
        binds[n_binds++] = (struct cq_sandbox_bind){.host_path = ip->layer_host,
                                                    .sandbox_path = ip->layer_sandbox};
    cfg.binds = binds;
    cfg.n_binds = n_binds;
    int rc = cq_sandbox_create(&cfg, out, err);
    free(env);
    return rc;
}

/* The zygote, started if there is none (and the last failure is old enough); NULL when
 * there is none to use. Held: w->zygote.lock. */
static struct cq_zygote *zygote_locked(struct cq_worker *w)
{
    if (w->zygote.z != NULL || cq_now_ms() < w->zygote.retry_at)
        return w->zygote.z;
    struct cq_error err = {0};
    if (cq_zygote_start(w, &w->zygote.z, &err) < 0) {
        w->zygote.retry_at = cq_now_ms() + ZYGOTE_RETRY_MS;
        fprintf(stderr, "codeq: kernels start unforked for now: %s\n", err.msg);
    }
    return w->zygote.z;
}

/* A zygote that failed a fork is stopped; the next kernel starts another. */
static void zygote_failed(struct cq_worker *w, struct cq_zygote *z, const struct cq_error *err)
{
    pthread_mutex_lock(&w->zygote.lock);
    if (w->zygote.z == z) {
        w->zygote.z = NULL;
        cq_zygote_stop(z);
    }
    pthread_mutex_unlock(&w->zygote.lock);
    fprintf(stderr, "codeq: a kernel could not be forked, started unforked: %s\n", err->msg);
}

int cq_worker_start_kernel(struct cq_worker *w, struct cq_sandbox *sb, bool javascript,
                           bool forkable, bool preload, const char *const *preload_modules,
                           const char *const *base_env, const char *const *env,
                           struct cq_kernel **out, struct cq_error *err)
{
    struct cq_zygote *z = NULL;
    if (forkable && !javascript && w->cfg.fork_kernels) {
        pthread_mutex_lock(&w->zygote.lock);
        z = zygote_locked(w);
        pthread_mutex_unlock(&w->zygote.lock);
    }
    struct cq_kernel_spawn spawn = {
        .sandbox = sb,
        .zygote = z,
        .javascript = javascript,
        .preload = preload,
        .preload_modules = preload_modules,
        .runtimes_dir = w->runtimes_seen,
        .env = env,
        .base_env = base_env,
    };
    int rc = cq_kernel_start(&spawn, out, err);
    if (rc < 0 && z != NULL) {
        /* Kernels keep starting, the usual way, while the zygote is replaced. */
        zygote_failed(w, z, err);
        spawn.zygote = NULL;
        cq_error_clear(err);
        rc = cq_kernel_start(&spawn, out, err);
        cq_wmetrics_kernel_fork(w, CQ_FORK_FAILED);
    } else if (forkable && !javascript && w->cfg.fork_kernels) {
        cq_wmetrics_kernel_fork(w, z != NULL ? CQ_FORK_FORKED : CQ_FORK_NO_ZYGOTE);
    }
    if (rc < 0)
        return -1;
    if (cq_kernel_wait_ready(*out, KERNEL_START_TIMEOUT_MS, err) < 0) {
        cq_kernel_stop(*out);
        *out = NULL;
        return -1;
    }
    return 0;
}

/* A ready sandbox of a pool this much larger than its floor holds ~5 MiB (forked); the
 * default max keeps a burst of this size warm, in ~640 MiB at most. */
#define POOL_GROWTH_DEFAULT 128

unsigned cq_pool_max_for(const struct cq_worker_config *cfg, unsigned size, bool forked)
{
    /* 0 at the floor means no pool at all, as the operator asked. */
    if (size == 0)
        return 0;
    unsigned max = cfg->warm_pool_max != 0 ? cfg->warm_pool_max
                   : forked                ? POOL_GROWTH_DEFAULT
                                           : size;
    if (cfg->max_sessions != 0 && max > cfg->max_sessions)
        max = cfg->max_sessions;
    if (max > CQ_WORKER_POOL_CAP)
        max = CQ_WORKER_POOL_CAP;
    return max > size ? max : size;
}

void cq_pool_note_start(struct cq_pool *p, uint64_t now_ms)
{
    uint64_t sec = now_ms / 1000;
    size_t i = sec % CQ_POOL_DEMAND_WINDOW_S;
    p->last_start_ms = now_ms;
    if (p->demand_sec[i] != sec) {
        p->demand_sec[i] = sec;
        p->demand_n[i] = 0;
    }
    if (p->demand_n[i] < UINT16_MAX)
        p->demand_n[i]++;
}

unsigned cq_pool_target(const struct cq_pool *p, uint64_t now_ms)
{
    if (p->max <= p->size)
        return p->size;
    uint64_t sec = now_ms / 1000;
    unsigned want = p->size;
    for (size_t i = 0; i < CQ_POOL_DEMAND_WINDOW_S; i++)
        if (p->demand_sec[i] + CQ_POOL_DEMAND_WINDOW_S > sec && p->demand_n[i] > want)
            want = p->demand_n[i];
    return want < p->max ? want : p->max;
}

/* Past its size, a pool refills only once starts have paused this long: during a
 * burst, making sandboxes for the next one would take the CPU from this one's. A
 * steady rate is kept up by the refill to its size. */
#define POOL_GROWTH_QUIET_MS 500

static unsigned lack_of(const struct cq_pool *p, uint64_t now, uint64_t *wake)
{
    unsigned target = cq_pool_target(p, now);
    if (target > p->size && now < p->last_start_ms + POOL_GROWTH_QUIET_MS) {
        target = p->size;
        uint64_t quiet = p->last_start_ms + POOL_GROWTH_QUIET_MS;
        *wake = *wake == 0 || quiet < *wake ? quiet : *wake;
    }
    unsigned lack = target > p->n ? target - (unsigned)p->n : 0;
    /* Above its floor, the target falls as seconds leave the window: looked at again
     * each second, to give back what is no longer wanted. */
    if (target > p->size || p->n > target) {
        uint64_t next = (now / 1000 + 1) * 1000;
        *wake = *wake == 0 || next < *wake ? next : *wake;
    }
    if (lack > 0 && p->retry_at > now) {
        *wake = *wake == 0 || p->retry_at < *wake ? p->retry_at : *wake;
        lack = 0;
    }
    return lack;
}

static void wait_until(struct cq_worker *w, uint64_t wake, uint64_t now)
{
    if (wake == 0) {
        pthread_cond_wait(&w->pool.cond, &w->pool.lock);
        return;
    }
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    uint64_t ns = (uint64_t)until.tv_nsec + (wake - now) * 1000000ULL;
    until.tv_sec += (time_t)(ns / 1000000000ULL);
    until.tv_nsec = (long)(ns % 1000000000ULL);
    pthread_cond_timedwait(&w->pool.cond, &w->pool.lock, &until);
}

/* One ready sandbox of a pool that holds more than its target now, destroyed (the
 * lock dropped meanwhile); false when no pool does. Lock held. */
static bool shrink_one(struct cq_worker *w, uint64_t now)
{
    struct cq_pool *over = NULL;
    for (int m = 0; m < CQ_WORKER_POOL_MODES && over == NULL; m++)
        if (w->pool.modes[m].n > cq_pool_target(&w->pool.modes[m], now))
            over = &w->pool.modes[m];
    for (struct cq_interp *i = w->pool.interps; i != NULL && over == NULL; i = i->next)
        if (i->pool.n > cq_pool_target(&i->pool, now))
            over = &i->pool;
    if (over == NULL)
        return false;
    /* The oldest: its kernel has waited longest (and takes are from the top). */
    struct cq_sandbox *sb = over->items[0].sandbox;
    struct cq_kernel *k = over->items[0].python;
    over->n--;
    memmove(&over->items[0], &over->items[1], over->n * sizeof(over->items[0]));
    pthread_mutex_unlock(&w->pool.lock);
    cq_kernel_stop(k);
    cq_sandbox_destroy(sb);
    pthread_mutex_lock(&w->pool.lock);
    return true;
}

static void *pool_main(void *arg)
{
    struct cq_worker *w = arg;
    pthread_mutex_lock(&w->pool.lock);
    while (!w->pool.stopping) {
        /* The emptiest pool first (by what it lacks; a tie to codeq.default's, then to
         * the interpreter defined last), so that a run on one pool does not leave the
         * others empty for long. */
        uint64_t now = cq_now_ms(), wake = 0;
        struct cq_pool *pool = NULL;
        struct cq_interp *ip = NULL;
        unsigned most = 0;
        for (int m = 0; m < CQ_WORKER_POOL_MODES; m++) {
            unsigned lack = lack_of(&w->pool.modes[m], now, &wake);
            if (lack > most) {
                most = lack;
                pool = &w->pool.modes[m];
            }
        }
        for (struct cq_interp *i = w->pool.interps; i != NULL; i = i->next) {
            unsigned lack = lack_of(&i->pool, now, &wake);
            if (lack > most) {
                most = lack;
                pool = &i->pool;
                ip = i;
            }
        }
        if (pool == NULL) {
            if (shrink_one(w, now))
                continue;
            wait_until(w, wake, now);
            continue;
        }
        /* Held while the lock is dropped: a replaced or deleted interpreter's entry
         * stays valid, and what was made for it is thrown away below. */
        if (ip != NULL)
            ip->refs++;
        enum cq_network_mode mode = pool->mode;
        pthread_mutex_unlock(&w->pool.lock);

        struct cq_sandbox_limits limits =
            cq_worker_limits(w, ip != NULL ? &ip->limits : &(struct cq_sandbox_limits){0});
        struct cq_sandbox *sb = NULL;
        struct cq_kernel *k = NULL;
        struct cq_error err;
        /* ALLOWLIST: no list yet, so the sandbox refuses every destination and its
         * resolver every name until a session gives its own (cq_pool_take). */
        int rc = cq_worker_make_sandbox(w, ip, &limits, mode, NULL, 0, &sb, &err);
        if (rc == 0)
            rc = cq_worker_start_kernel(w, sb, false, ip == NULL, true,
                                        ip != NULL ? (const char *const *)ip->preload : NULL,
                                        ip != NULL ? (const char *const *)ip->env : NULL, NULL, &k,
                                        &err);
        pthread_mutex_lock(&w->pool.lock);
        bool keep = rc == 0 && !w->pool.stopping && (ip == NULL || ip->defined) &&
                    pool->n < cq_pool_target(pool, cq_now_ms());
        if (rc < 0) {
            uint64_t delay = (uint64_t)POOL_RETRY_MS << (pool->failures < 6 ? pool->failures : 6);
            pool->retry_at = cq_now_ms() + (delay < POOL_RETRY_MAX_MS ? delay : POOL_RETRY_MAX_MS);
            pool->failures++;
        } else {
            pool->retry_at = 0;
            pool->failures = 0;
        }
        if (keep) {
            pool->items[pool->n].sandbox = sb;
            pool->items[pool->n].python = k;
            pool->n++;
            pthread_cond_broadcast(&w->pool.cond);
        }
        pthread_mutex_unlock(&w->pool.lock);
        if (!keep) {
            cq_kernel_stop(k);
            cq_sandbox_destroy(sb);
        }
        if (ip != NULL)
            cq_interp_put(w, ip);
        pthread_mutex_lock(&w->pool.lock);
    }
    pthread_mutex_unlock(&w->pool.lock);
    return NULL;
}

bool cq_pool_take(struct cq_worker *w, struct cq_pool *p, const char *const *allow, size_t n_allow,
                  struct cq_sandbox **sb, struct cq_kernel **k)
{
    bool taken = false;
    pthread_mutex_lock(&w->pool.lock);
    cq_pool_note_start(p, cq_now_ms());
    while (p->n > 0 && !taken) {
        size_t i = --p->n;
        *sb = p->items[i].sandbox;
        *k = p->items[i].python;
        /* A pooled sandbox whose init died (killed from outside) is of no use. */
        taken = cq_sandbox_alive(*sb);
        if (!taken) {
            cq_kernel_stop(*k);
            cq_sandbox_destroy(*sb);
            *k = NULL;
            *sb = NULL;
        }
    }
    pthread_cond_broadcast(&w->pool.cond); /* refill */
    pthread_mutex_unlock(&w->pool.lock);
    struct cq_error err;
    /* An ALLOWLIST one is given the session's list (already admitted against the
     * operator's policy) on the way out: the only code that ran in it so far is codeq's
     * kernel and the imports of its preload, and until now it could reach nothing, so
     * the session finds exactly its own list, as a cold one would. */
    if (taken && p->mode == CQ_NETWORK_ALLOWLIST &&
        cq_sandbox_network_allow(*sb, allow, n_allow, &err) < 0) {
        /* Its filter is in a state not worth reasoning about (refusing everything, or
         * part of the list): it goes, and the session starts cold, which reports the
         * problem if it lasts. */
        cq_kernel_stop(*k);
        cq_sandbox_destroy(*sb);
        *k = NULL;
        *sb = NULL;
        taken = false;
    }
    return taken;
}

void cq_pool_destroy_items(struct cq_pool *p)
{
    for (size_t i = 0; i < p->n; i++) {
        cq_kernel_stop(p->items[i].python);
        cq_sandbox_destroy(p->items[i].sandbox);
    }
    p->n = 0;
}

int cq_pool_start(struct cq_worker *w, struct cq_error *err)
{
    for (int m = 0; m < CQ_WORKER_POOL_MODES; m++)
        w->pool.modes[m].mode = (enum cq_network_mode)m;
    /* Always: an interpreter defined later may want a pool. */
    int rc = pthread_create(&w->pool.thread, NULL, pool_main, w);
    if (rc != 0)
        return cq_error_sys(err, rc, "the warm pool's thread");
    w->pool.running = true;
    return 0;
}

void cq_pool_stop(struct cq_worker *w)
{
    pthread_mutex_lock(&w->pool.lock);
    w->pool.stopping = true;
    pthread_cond_broadcast(&w->pool.cond);
    pthread_mutex_unlock(&w->pool.lock);
    if (w->pool.running)
        pthread_join(w->pool.thread, NULL);
    w->pool.running = false;
    for (int m = 0; m < CQ_WORKER_POOL_MODES; m++)
        cq_pool_destroy_items(&w->pool.modes[m]);
}

void cq_worker_warm_counts(struct cq_worker *w, unsigned *ready, unsigned *target)
{
    size_t n = 0, size = 0;
    uint64_t now = cq_now_ms();
    pthread_mutex_lock(&w->pool.lock);
    for (int m = 0; m < CQ_WORKER_POOL_MODES; m++) {
        n += w->pool.modes[m].n;
        size += cq_pool_target(&w->pool.modes[m], now);
    }
    for (struct cq_interp *ip = w->pool.interps; ip != NULL; ip = ip->next) {
        n += ip->pool.n;
        size += cq_pool_target(&ip->pool, now);
    }
    pthread_mutex_unlock(&w->pool.lock);
    *ready = (unsigned)n;
    *target = (unsigned)size;
}
