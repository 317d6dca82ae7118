/* worker/session.c - the worker: its sessions and their lifetimes.
 *
 * A session is a sandbox plus what lives in it: up to two kernels (Python; Node for
 * JavaScript and TypeScript), background tasks, and its environment. Sessions expire
 * after their time to live, counted from creation as AgentCore does. Stopping a
 * session that is in use kills its processes first (cq_sandbox_kill), so calls in
 * progress on other threads return promptly, and frees it when the last one left.
 *
 * A session starts on a code interpreter (interpreter.c; codeq.default, the worker's
 * own configuration, when it names none), warm from its pool when it can (pool.c).
 */
#define _GNU_SOURCE
#include "worker/session.h"
#include "common/clock.h"
#include "common/cleanup.h"
#include "common/units.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifndef CQ_SOURCE_DIR
#define CQ_SOURCE_DIR ""
#endif
#ifndef CQ_DATADIR
#define CQ_DATADIR "/usr/local/share/codeq"
#endif

/* Terminated sessions stay listable (status TERMINATED) for a while. */
#define TERMINATED_KEPT_MS (3600 * 1000)

void cq_worker_config_init(struct cq_worker_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    struct cq_sandbox_config sandbox;
    cq_sandbox_config_init(&sandbox);
    cfg->limits = sandbox.limits;
    cfg->max_sessions = CQ_WORKER_DEFAULT_MAX_SESSIONS;
    cfg->default_session_ttl_s = CQ_WORKER_DEFAULT_SESSION_TTL_S;
    cfg->default_call_timeout_s = CQ_WORKER_DEFAULT_CALL_TIMEOUT;
    cfg->output_limit_bytes = CQ_WORKER_DEFAULT_OUTPUT_LIMIT;
    cq_netpolicy_init(&cfg->netpolicy);
    /* Sessions reach a network only where the operator said so (network_modes): the
     * library's default lets any mode be asked for, a service's does not. */
    cfg->netpolicy.modes = CQ_NET_MODE_BIT(CQ_NETWORK_NONE);
    cfg->warm_pool_public = -1;
    cfg->warm_pool_allowlist = -1;
}

static bool has_kernel_scripts(const char *dir)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/python/codeq_kernel.py", dir);
    return access(path, R_OK) == 0;
}

/* The host directory of runtimes/: configuration, environment, an installation next
 * to the program, or the source tree the program was built from. */
static int find_runtimes(const struct cq_worker_config *cfg, char out[PATH_MAX],
                         struct cq_error *err)
{
    const char *candidates[4] = {cfg->runtimes_dir, getenv("CODEQ_RUNTIMES_DIR"), NULL, NULL};
    char installed[PATH_MAX] = "";
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n > 0) {
        self[n] = '\0';
        char *slash = strrchr(self, '/');
        if (slash != NULL) {
            *slash = '\0';
            snprintf(installed, sizeof(installed), "%s/../share/codeq/runtimes", self);
            candidates[2] = installed;
        }
    }
    static char source[PATH_MAX];
    snprintf(source, sizeof(source), "%s/runtimes", CQ_SOURCE_DIR);
    candidates[3] = CQ_SOURCE_DIR[0] != '\0' ? source : CQ_DATADIR "/runtimes";
    for (size_t i = 0; i < 4; i++) {
        if (candidates[i] == NULL || candidates[i][0] == '\0')
            continue;
        if (realpath(candidates[i], out) != NULL && has_kernel_scripts(out))
            return 0;
        if (i < 2) /* given explicitly: wrong is an error, not a reason to look further */
            return cq_error_set(err, ENOENT, "runtimes directory %s has no codeq kernels",
                                candidates[i]);
    }
    return cq_error_set(err, ENOENT,
                        "codeq's runtimes (the language kernels) were not found; set "
                        "CODEQ_RUNTIMES_DIR");
}

/* Where sandboxes find the runtimes. An installed codeq keeps them under /usr
 * (<prefix>/share/codeq/runtimes), which every sandbox already sees read-only at the
 * same path: no bind then. A bind would also print its source path on the host in the
 * sandbox's /proc/self/mountinfo (the kernel shows a bind's root within its file
 * system), which for runtimes elsewhere (a source checkout) is the one host path a
 * sandbox can learn; docs/security.md, "Known limits". */
static void choose_runtimes_path(struct cq_worker *w)
{
    w->runtimes_seen =
        strncmp(w->runtimes_dir, "/usr/", 5) == 0 ? w->runtimes_dir : RUNTIMES_IN_SANDBOX;
}

/* ---- sessions ------------------------------------------------------------------------ */

/* Past its time to live a session is over for clients, even while the reaper waits for
 * the calls in progress to report their own timeouts (or has not run yet). */
static enum cq_session_status status_of(const struct cq_session *s)
{
    return s->status == CQ_SESSION_READY && s->expires_mono_ms <= cq_now_ms()
               ? CQ_SESSION_TERMINATED
               : s->status;
}

static void fill_info(const struct cq_session *s, struct cq_session_info *info)
{
    memset(info, 0, sizeof(*info));
    snprintf(info->session_id, sizeof(info->session_id), "%s", s->id);
    snprintf(info->name, sizeof(info->name), "%s", s->name);
    info->status = status_of(s);
    info->created_at_ms = s->created_ms;
    info->last_updated_at_ms = s->updated_ms;
    info->session_timeout_s = s->ttl_s;
    info->network_mode = (int)s->network;
    snprintf(info->network_allow, sizeof(info->network_allow), "%s", s->allow);
    snprintf(info->interpreter, sizeof(info->interpreter), "%s", s->interpreter);
    snprintf(info->runtime, sizeof(info->runtime), "%s", s->runtime);
    snprintf(info->runtime_digest, sizeof(info->runtime_digest), "%s", s->digest);
    info->memory_bytes = s->limits.memory_bytes;
    info->pids = s->limits.pids;
    info->cpu_millis = (uint32_t)(s->limits.cpus * 1000.0 + 0.5);
    info->disk_bytes = s->limits.workspace_bytes;
}

/* Sets in l the fields of req that are set (not zero). */
static void overlay_limits(struct cq_sandbox_limits *l, const struct cq_sandbox_limits *req)
{
    if (req->memory_bytes)
        l->memory_bytes = req->memory_bytes;
    if (req->pids)
        l->pids = req->pids;
    if (req->cpus > 0)
        l->cpus = req->cpus;
    if (req->workspace_bytes) {
        l->workspace_bytes = req->workspace_bytes;
        l->file_size_bytes = req->workspace_bytes;
    }
    if (req->workspace_inodes)
        l->workspace_inodes = req->workspace_inodes;
    if (req->tmp_bytes)
        l->tmp_bytes = req->tmp_bytes;
    if (req->file_size_bytes)
        l->file_size_bytes = req->file_size_bytes;
    if (req->open_files)
        l->open_files = req->open_files;
}

struct cq_sandbox_limits cq_worker_limits(const struct cq_worker *w,
                                          const struct cq_sandbox_limits *req)
{
    struct cq_sandbox_limits l = w->cfg.limits;
    overlay_limits(&l, req);
    return l;
}

static char **copy_env(const char *const *env, struct cq_error *err)
{
    size_t n = 0;
    for (const char *const *e = env; e != NULL && *e != NULL; e++) {
        if (strchr(*e, '=') == NULL || (*e)[0] == '=') {
            cq_error_set(err, CQ_EINVALID, "environment entry '%s' is not NAME=VALUE", *e);
            return NULL;
        }
        n++;
    }
    char **copy = calloc(n + 1, sizeof(char *));
    for (size_t i = 0; copy != NULL && i < n; i++) {
        if ((copy[i] = strdup(env[i])) == NULL) {
            for (size_t j = 0; j < i; j++)
                free(copy[j]);
            free(copy);
            copy = NULL;
        }
    }
    if (copy == NULL)
        cq_error_sys(err, ENOMEM, "environment");
    return copy;
}

static void free_session(struct cq_session *s)
{
    for (size_t i = 0; i < s->n_tasks; i++)
        cq_task_free(s->tasks[i]);
    free(s->tasks);
    cq_kernel_stop(s->kernels[0].kernel);
    cq_kernel_stop(s->kernels[1].kernel);
    cq_sandbox_destroy(s->sandbox);
    for (char **e = s->env; e != NULL && *e != NULL; e++)
        free(*e);
    free(s->env);
    for (char **e = s->base_env; e != NULL && *e != NULL; e++)
        free(*e);
    free(s->base_env);
    pthread_mutex_destroy(&s->kernels[0].run);
    pthread_mutex_destroy(&s->kernels[1].run);
    pthread_mutex_destroy(&s->tasks_lock);
    pthread_cond_destroy(&s->idle);
    free(s);
}

/* With w->lock held. */
static struct cq_session *find(struct cq_worker *w, const char *id)
{
    for (struct cq_session *s = w->sessions; s != NULL; s = s->next)
        if (id != NULL && strcmp(s->id, id) == 0)
            return s;
    return NULL;
}

/* Whether two allowlists hold the same entries (in any order). */
static bool same_list(const char *const *a, size_t na, const char *const *b, size_t nb)
{
    if (na != nb)
        return false;
    for (size_t i = 0; i < na; i++) {
        bool found = false;
        for (size_t j = 0; j < nb && !found; j++)
            found = strcmp(a[i], b[j]) == 0;
        if (!found)
            return false;
    }
    return true;
}

/* The network a session on ip gets: the interpreter decides when it names a mode, and
 * a session asking for another mode or list is refused rather than silently given
 * the interpreter's. */
static int interp_network(const struct cq_interp *ip, const struct cq_session_params *params,
                          const enum cq_network_mode **mode, const char *const **allow,
                          size_t *n_allow, struct cq_error *err)
{
    *mode = params->network;
    *allow = params->allow;
    *n_allow = params->n_allow;
    if (ip == NULL || !ip->has_network)
        return 0;
    if (params->network != NULL && *params->network != ip->network)
        return cq_error_set(err, CQ_EINVALID,
                            "code interpreter '%s' runs with network mode %s; a session on it "
                            "cannot ask for %s",
                            ip->name, cq_net_mode_name(ip->network),
                            cq_net_mode_name(*params->network));
    if (params->n_allow > 0 &&
        !same_list(params->allow, params->n_allow, (const char *const *)ip->allow, ip->n_allow))
        return cq_error_set(err, CQ_EINVALID,
                            "code interpreter '%s' has its own allowlist; a session on it cannot "
                            "name another",
                            ip->name);
    *mode = &ip->network;
    *allow = (const char *const *)ip->allow;
    *n_allow = ip->n_allow;
    return 0;
}

/* Starts a session on ip (NULL: codeq.default), which the caller holds. */
static int start_on(struct cq_worker *w, struct cq_interp *ip,
                    const struct cq_session_params *params, struct cq_session_info *info,
                    struct cq_error *err)
{
    uint32_t ttl = params->timeout_s              ? params->timeout_s
                   : ip != NULL && ip->ttl_s != 0 ? ip->ttl_s
                                                  : w->cfg.default_session_ttl_s;
    if (ttl > CQ_WORKER_MAX_SESSION_TTL_S)
        return cq_error_set(err, CQ_EINVALID, "sessionTimeoutSeconds %u is above the maximum of %u",
                            ttl, CQ_WORKER_MAX_SESSION_TTL_S);
    if (params->name != NULL && strlen(params->name) > 100)
        return cq_error_set(err, CQ_EINVALID, "the session name is longer than 100 characters");
    if (params->id != NULL) {
        size_t len = strlen(params->id);
        bool ok = len >= 1 && len <= CQ_SESSION_ID_MAX;
        for (size_t i = 0; ok && i < len; i++) {
            char c = params->id[i];
            ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '-' || c == '_';
        }
        if (!ok)
            return cq_error_set(err, CQ_EINVALID,
                                "a session id is 1 to %d letters, digits, '-' or '_'",
                                CQ_SESSION_ID_MAX);
    }
    /* The network before anything is made: a request beyond the operator's policy is
     * refused with the rule it breaks, and costs no sandbox. An interpreter's own mode
     * and list are admitted the same way: defining one grants nothing the policy does
     * not. */
    const enum cq_network_mode *mode;
    const char *const *allow;
    size_t n_allow;
    if (interp_network(ip, params, &mode, &allow, &n_allow, err) < 0)
        return -1;
    struct cq_net_grant grant;
    if (cq_netpolicy_admit(&w->cfg.netpolicy, mode, allow, n_allow, &grant, err) < 0)
        return ip != NULL ? cq_error_prefix(err, "code interpreter '%s'", ip->name) : -1;
    char allow_text[CQ_SESSION_ALLOW_TEXT] = "";
    for (size_t i = 0; i < n_allow; i++) {
        size_t used = strlen(allow_text);
        if (strlen(allow[i]) + 1 >= sizeof(allow_text) - used)
            return cq_error_set(err, CQ_EINVALID,
                                "the allowlist is longer than %d characters in all",
                                CQ_SESSION_ALLOW_TEXT - 1);
        snprintf(allow_text + used, sizeof(allow_text) - used, "%s%s", i > 0 ? "," : "", allow[i]);
    }
    /* The interpreter's limits are the session's defaults, the worker's fill the rest;
     * its pool has sandboxes of exactly those. */
    struct cq_sandbox_limits limits = w->cfg.limits;
    if (ip != NULL)
        overlay_limits(&limits, &ip->limits);
    struct cq_sandbox_limits pooled_limits = limits;
    overlay_limits(&limits, &params->limits);
    struct cq_sandbox_config check;
    cq_sandbox_config_init(&check);
    check.limits = limits;
    if (cq_sandbox_config_validate(&check, err) < 0)
        return -1;

    struct cq_session *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return cq_error_sys(err, ENOMEM, "allocate session");
    pthread_mutex_init(&s->kernels[0].run, NULL);
    pthread_mutex_init(&s->kernels[1].run, NULL);
    pthread_mutex_init(&s->tasks_lock, NULL);
    pthread_cond_init(&s->idle, NULL);
    s->env = copy_env(params->env, err);
    if (s->env == NULL ||
        (ip != NULL && (s->base_env = copy_env((const char *const *)ip->env, err)) == NULL)) {
        free_session(s);
        return -1;
    }
    if (params->id != NULL)
        snprintf(s->id, sizeof(s->id), "%s", params->id);
    else
        cq_random_id(s->id, 32);
    snprintf(s->name, sizeof(s->name), "%s", params->name != NULL ? params->name : "");
    s->ttl_s = ttl;
    s->status = CQ_SESSION_READY;
    s->network = grant.mode;
    snprintf(s->allow, sizeof(s->allow), "%s", allow_text);
    snprintf(s->interpreter, sizeof(s->interpreter), "%s",
             ip != NULL ? ip->name : CQ_INTERPRETER_DEFAULT);
    snprintf(s->runtime, sizeof(s->runtime), "%s", ip != NULL ? ip->runtime : "");
    snprintf(s->digest, sizeof(s->digest), "%s", ip != NULL ? ip->digest : "");
    s->limits = limits;

    pthread_mutex_lock(&w->lock);
    struct cq_session *same = params->id != NULL ? find(w, params->id) : NULL;
    if (same != NULL && same->status == CQ_SESSION_READY) {
        pthread_mutex_unlock(&w->lock);
        free_session(s);
        return cq_error_set(err, CQ_EINVALID, "session '%s' already exists", params->id);
    }
    bool full = w->n_live >= w->cfg.max_sessions;
    if (!full)
        w->n_live++; /* reserved while the sandbox is made */
    pthread_mutex_unlock(&w->lock);
    if (full) {
        free_session(s);
        return cq_error_set(err, CQ_ELIMIT, "this worker already runs %u sessions, its maximum",
                            w->cfg.max_sessions);
    }

    /* The interpreter's pool holds sandboxes of one mode: the one its sessions get
     * unless they ask (when it lets them) for another. */
    struct cq_pool *pool = ip != NULL ? &ip->pool : &w->pool.modes[grant.mode];
    bool warm = memcmp(&limits, &pooled_limits, sizeof(limits)) == 0 && pool->mode == grant.mode;
    int rc = 0;
    bool taken = warm && cq_pool_take(w, pool, allow, n_allow, &s->sandbox, &s->kernels[0].kernel);
    bool missed = warm && !taken && pool->size > 0; /* for metrics: the pool ran dry */
    if (!taken)
        rc = cq_worker_make_sandbox(w, ip, &limits, grant.mode, allow, n_allow, &s->sandbox, err);
    else if (s->env[0] != NULL)
        rc = cq_kernel_set_env(s->kernels[0].kernel, (const char *const *)s->env, err);
    if (rc < 0) {
        pthread_mutex_lock(&w->lock);
        w->n_live--;
        pthread_mutex_unlock(&w->lock);
        free_session(s);
        return cq_error_prefix(err, "start session");
    }
    s->files.workspace_fd = cq_sandbox_workspace_fd(s->sandbox);
    cq_sandbox_user_ids(s->sandbox, &s->files.uid, &s->files.gid);
    s->created_ms = s->updated_ms = cq_unix_ms();
    s->expires_mono_ms = cq_now_ms() + (uint64_t)ttl * 1000;

    pthread_mutex_lock(&w->lock);
    s->next = w->sessions;
    w->sessions = s;
    fill_info(s, info);
    pthread_cond_signal(&w->reaper_cond); /* its expiry may be the next one */
    pthread_mutex_unlock(&w->lock);
    cq_wmetrics_session_started(w, s->interpreter, missed);
    return 0;
}

int cq_worker_start_session(struct cq_worker *w, const struct cq_session_params *params,
                            struct cq_session_info *info, struct cq_error *err)
{
    const char *name = params->interpreter;
    if (name == NULL || name[0] == '\0' || strcmp(name, CQ_INTERPRETER_DEFAULT) == 0)
        return start_on(w, NULL, params, info, err);
    struct cq_interp *ip = cq_interp_get(w, name);
    if (ip == NULL && w->cfg.resolve_interpreter != NULL) {
        /* Without locks: it may fetch or build a layer for minutes. */
        if (w->cfg.resolve_interpreter(w->cfg.resolve_interpreter_ctx, w, name, err) < 0)
            return -1;
        ip = cq_interp_get(w, name);
    }
    if (ip == NULL)
        return cq_error_set(err, CQ_ENOTFOUND, "no code interpreter '%s'", name);
    int rc = start_on(w, ip, params, info, err);
    cq_interp_put(w, ip);
    return rc;
}

struct cq_session *cq_session_acquire(struct cq_worker *w, const char *id)
{
    pthread_mutex_lock(&w->lock);
    struct cq_session *s = find(w, id);
    if (s != NULL && s->status == CQ_SESSION_READY && s->expires_mono_ms > cq_now_ms()) {
        s->refs++;
        s->updated_ms = cq_unix_ms();
    } else {
        s = NULL;
    }
    pthread_mutex_unlock(&w->lock);
    return s;
}

void cq_session_release(struct cq_worker *w, struct cq_session *s)
{
    pthread_mutex_lock(&w->lock);
    if (--s->refs == 0) {
        pthread_cond_broadcast(&s->idle);
        if (s->status == CQ_SESSION_READY && s->expires_mono_ms <= cq_now_ms())
            pthread_cond_signal(&w->reaper_cond); /* its grace is over: reap it now */
    }
    pthread_mutex_unlock(&w->lock);
}

uint64_t cq_session_remaining_ms(const struct cq_session *s)
{
    uint64_t now = cq_now_ms();
    return s->expires_mono_ms > now ? s->expires_mono_ms - now : 0;
}

/* Ends a session that w->lock (held) still lists as ready: no new call can acquire
 * it; its processes are killed so that calls in progress return; it is freed once
 * the last has released it. Returns with w->lock held. */
static void terminate_locked(struct cq_worker *w, struct cq_session *s)
{
    s->status = CQ_SESSION_TERMINATED;
    s->updated_ms = cq_unix_ms();
    s->terminated_mono_ms = cq_now_ms();
    w->n_live--;
    cq_sandbox_kill(s->sandbox);
    while (s->refs > 0)
        pthread_cond_wait(&s->idle, &w->lock);
    /* Nobody uses it now, and nobody can acquire it: free its resources outside
     * the lock, keep the entry for listing. */
    struct cq_sandbox *sb = s->sandbox;
    s->sandbox = NULL;
    pthread_mutex_unlock(&w->lock);
    for (size_t i = 0; i < s->n_tasks; i++)
        cq_task_free(s->tasks[i]);
    s->n_tasks = 0;
    for (int i = 0; i < 2; i++) {
        cq_kernel_stop(s->kernels[i].kernel);
        s->kernels[i].kernel = NULL;
    }
    cq_wmetrics_sandbox_gone(w, s, sb);
    cq_sandbox_destroy(sb);
    pthread_mutex_lock(&w->lock);
}

int cq_worker_stop_session(struct cq_worker *w, const char *session_id,
                           struct cq_session_info *info, struct cq_error *err)
{
    pthread_mutex_lock(&w->lock);
    struct cq_session *s = find(w, session_id);
    if (s == NULL) {
        pthread_mutex_unlock(&w->lock);
        return cq_error_set(err, CQ_ENOTFOUND, "session '%s' not found", session_id);
    }
    bool ended = s->status == CQ_SESSION_READY;
    if (ended) {
        terminate_locked(w, s);
        cq_wmetrics_session_ended(w, false);
    }
    fill_info(s, info);
    pthread_mutex_unlock(&w->lock);
    if (ended && w->cfg.on_session_end != NULL)
        w->cfg.on_session_end(w->cfg.on_session_end_ctx, info->session_id);
    return 0;
}

int cq_worker_get_session(struct cq_worker *w, const char *session_id, struct cq_session_info *info,
                          struct cq_error *err)
{
    pthread_mutex_lock(&w->lock);
    struct cq_session *s = find(w, session_id);
    if (s != NULL)
        fill_info(s, info);
    pthread_mutex_unlock(&w->lock);
    if (s == NULL)
        return cq_error_set(err, CQ_ENOTFOUND, "session '%s' not found", session_id);
    return 0;
}

int cq_worker_list_sessions(struct cq_worker *w, int status_filter, size_t max,
                            const char *next_token, struct cq_session_info *out, size_t *n,
                            char next_token_out[CQ_SESSION_ID_MAX + 1], struct cq_error *err)
{
    (void)err;
    *n = 0;
    if (next_token_out != NULL)
        next_token_out[0] = '\0';
    if (max == 0)
        return 0;
    pthread_mutex_lock(&w->lock);
    /* The list is newest first; a token is the id of the last session returned. */
    struct cq_session *s = w->sessions;
    if (next_token != NULL && next_token[0] != '\0') {
        while (s != NULL && strcmp(s->id, next_token) != 0)
            s = s->next;
        if (s != NULL)
            s = s->next;
    }
    for (; s != NULL; s = s->next) {
        /* The status the entry will show: an expired session the reaper has not
         * reached yet is listed as TERMINATED, not left out of both lists. */
        if (status_filter != 0 && (int)status_of(s) != status_filter)
            continue;
        if (*n == max) {
            if (next_token_out != NULL)
                snprintf(next_token_out, CQ_SESSION_ID_MAX + 1, "%s", out[*n - 1].session_id);
            break;
        }
        fill_info(s, &out[(*n)++]);
    }
    pthread_mutex_unlock(&w->lock);
    return 0;
}

/* When the reaper ends a session. A call in progress has its timeout capped at the
 * session's end, so it ends itself then; killing the sandbox at the same instant would
 * race it and turn a clean "timed out" into "the sandbox ended". Such calls get a grace
 * that covers a kernel's interrupt grace; no new call starts meanwhile (acquire checks
 * the expiry). */
static uint64_t reap_at(const struct cq_session *s)
{
    return s->expires_mono_ms + (s->refs > 0 ? CQ_WORKER_INTERRUPT_GRACE_MS + 1000 : 0);
}

/* Expires sessions past their time to live, and forgets long-terminated ones. */
static void *reaper_main(void *arg)
{
    struct cq_worker *w = arg;
    pthread_mutex_lock(&w->lock);
    while (!w->stopping) {
    expire:
        for (struct cq_session *s = w->sessions; s != NULL; s = s->next) {
            if (s->status == CQ_SESSION_READY && reap_at(s) <= cq_now_ms()) {
                terminate_locked(w, s);
                cq_wmetrics_session_ended(w, true);
                if (w->cfg.on_session_end != NULL) {
                    char id[CQ_SESSION_ID_MAX + 1];
                    snprintf(id, sizeof(id), "%s", s->id);
                    pthread_mutex_unlock(&w->lock);
                    w->cfg.on_session_end(w->cfg.on_session_end_ctx, id);
                    pthread_mutex_lock(&w->lock);
                }
                goto expire; /* the list may have changed while the lock was dropped */
            }
        }
        uint64_t now = cq_now_ms(), next = now + 60000;
        for (struct cq_session *s = w->sessions; s != NULL; s = s->next)
            if (s->status == CQ_SESSION_READY && reap_at(s) < next)
                next = reap_at(s);
        struct cq_session **link = &w->sessions;
        while (*link != NULL) {
            struct cq_session *s = *link;
            if (s->status == CQ_SESSION_TERMINATED && s->refs == 0 &&
                now - s->terminated_mono_ms > TERMINATED_KEPT_MS) {
                *link = s->next;
                free_session(s);
            } else {
                link = &s->next;
            }
        }
        /* terminate_locked drops the lock: a stop requested meanwhile must not be
         * missed by the wait below. */
        if (w->stopping)
            break;
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        uint64_t wait_ms = next > now ? next - now : 0;
        until.tv_sec += (time_t)(wait_ms / 1000);
        until.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&w->reaper_cond, &w->lock, &until);
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

/* A network mode's pool: none where the policy does not let sessions ask for the mode;
 * else the setting, whose default (-1) is 1. */
static unsigned pool_size_of(const struct cq_netpolicy *np, enum cq_network_mode mode, int setting)
{
    if (!(np->modes & CQ_NET_MODE_BIT(mode)))
        return 0;
    int n = setting < 0 ? 1 : setting;
    return (unsigned)(n > CQ_WORKER_MAX_POOL ? CQ_WORKER_MAX_POOL : n);
}

int cq_worker_create(const struct cq_worker_config *cfg, struct cq_worker **out,
                     struct cq_error *err)
{
    struct cq_worker *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return cq_error_sys(err, ENOMEM, "allocate worker");
    w->cfg = *cfg;
    if (w->cfg.warm_pool_size > CQ_WORKER_MAX_POOL)
        w->cfg.warm_pool_size = CQ_WORKER_MAX_POOL;
    const struct cq_netpolicy *np = &w->cfg.netpolicy;
    if (!(np->modes & CQ_NET_MODE_BIT(np->default_mode))) {
        cq_error_set(err, CQ_EINVALID, "network_default %s is not among the allowed network_modes",
                     cq_net_mode_name(np->default_mode));
        free(w);
        return -1;
    }
    /* PUBLIC and ALLOWLIST sandboxes are pooled only where sessions can have them. */
    w->pool.modes[CQ_NETWORK_NONE].size = w->cfg.warm_pool_size;
    w->pool.modes[CQ_NETWORK_PUBLIC].size =
        pool_size_of(np, CQ_NETWORK_PUBLIC, w->cfg.warm_pool_public);
    w->pool.modes[CQ_NETWORK_ALLOWLIST].size =
        pool_size_of(np, CQ_NETWORK_ALLOWLIST, w->cfg.warm_pool_allowlist);
    for (int m = 0; m < CQ_WORKER_POOL_MODES; m++)
        w->pool.modes[m].max = cq_pool_max_for(&w->cfg, w->pool.modes[m].size, w->cfg.fork_kernels);
    if (w->cfg.output_limit_bytes == 0)
        w->cfg.output_limit_bytes = CQ_WORKER_DEFAULT_OUTPUT_LIMIT;
    if (w->cfg.default_call_timeout_s <= 0)
        w->cfg.default_call_timeout_s = CQ_WORKER_DEFAULT_CALL_TIMEOUT;
    if (w->cfg.default_session_ttl_s == 0)
        w->cfg.default_session_ttl_s = CQ_WORKER_DEFAULT_SESSION_TTL_S;
    struct cq_sandbox_config check;
    cq_sandbox_config_init(&check);
    check.limits = w->cfg.limits;
    if (find_runtimes(cfg, w->runtimes_dir, err) < 0 ||
        cq_sandbox_config_validate(&check, err) < 0) {
        free(w);
        return -1;
    }
    choose_runtimes_path(w);
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->reaper_cond, NULL);
    pthread_mutex_init(&w->pool.lock, NULL);
    pthread_mutex_init(&w->zygote.lock, NULL);
    pthread_cond_init(&w->pool.cond, NULL);
    if (cq_wmetrics_create(w, err) < 0) {
        cq_worker_destroy(w);
        return -1;
    }
    int rc = pthread_create(&w->reaper, NULL, reaper_main, w);
    if (rc != 0) {
        cq_error_sys(err, rc, "worker threads");
        cq_worker_destroy(w);
        return -1;
    }
    if (cq_pool_start(w, err) < 0) {
        cq_worker_destroy(w);
        return -1;
    }
    *out = w;
    return 0;
}

void cq_worker_destroy(struct cq_worker *w)
{
    if (w == NULL)
        return;
    cq_wmetrics_destroy(w);
    cq_pool_stop(w);
    cq_interps_destroy(w);
    pthread_mutex_lock(&w->lock);
    w->stopping = true;
    pthread_cond_broadcast(&w->reaper_cond);
    pthread_mutex_unlock(&w->lock);
    if (w->reaper)
        pthread_join(w->reaper, NULL);
    pthread_mutex_lock(&w->lock);
    for (struct cq_session *s = w->sessions; s != NULL; s = s->next)
        if (s->status == CQ_SESSION_READY)
            terminate_locked(w, s);
    while (w->sessions != NULL) {
        struct cq_session *s = w->sessions;
        w->sessions = s->next;
        free_session(s);
    }
    pthread_mutex_unlock(&w->lock);
    cq_zygote_stop(w->zygote.z);
    pthread_mutex_destroy(&w->zygote.lock);
    pthread_mutex_destroy(&w->lock);
    pthread_cond_destroy(&w->reaper_cond);
    pthread_mutex_destroy(&w->pool.lock);
    pthread_cond_destroy(&w->pool.cond);
    free(w);
}

int cq_session_kernel(struct cq_worker *w, struct cq_session *s, bool javascript,
                      struct cq_kernel **out, struct cq_error *err)
{
    struct kernel_slot *slot = &s->kernels[javascript];
    if (slot->kernel == NULL &&
        cq_worker_start_kernel(w, s->sandbox, javascript,
                               strcmp(s->interpreter, CQ_INTERPRETER_DEFAULT) == 0, false, NULL,
                               (const char *const *)s->base_env, (const char *const *)s->env,
                               &slot->kernel, err) < 0)
        return -1;
    *out = slot->kernel;
    return 0;
}

int cq_worker_scan_workspace(struct cq_worker *w, const char *session_id, cq_workspace_fn fn,
                             void *ctx, struct cq_error *err)
{
    struct cq_session *s = cq_session_acquire(w, session_id);
    if (s == NULL)
        return cq_error_set(err, CQ_ENOTFOUND, "session '%s' not found", session_id);
    int rc = cq_files_scan(&s->files, fn, ctx, err);
    cq_session_release(w, s);
    return rc < 0 ? cq_error_prefix(err, "scan the workspace of session '%s'", session_id) : 0;
}

int cq_worker_restore_link(struct cq_worker *w, const char *session_id, const char *path,
                           const char *target, struct cq_error *err)
{
    struct cq_session *s = cq_session_acquire(w, session_id);
    if (s == NULL)
        return cq_error_set(err, CQ_ENOTFOUND, "session '%s' not found", session_id);
    int rc = cq_files_link(&s->files, path, target);
    int e = errno;
    cq_session_release(w, s);
    return rc < 0 ? cq_error_sys(err, e, "link %s", path) : 0;
}

int cq_worker_read_workspace_file(struct cq_worker *w, const char *session_id, const char *path,
                                  uint8_t **data, size_t *len, struct cq_error *err)
{
    struct cq_session *s = cq_session_acquire(w, session_id);
    if (s == NULL)
        return cq_error_set(err, CQ_ENOTFOUND, "session '%s' not found", session_id);
    int rc = cq_files_read_raw(&s->files, path, data, len);
    int e = errno;
    cq_session_release(w, s);
    return rc < 0 ? cq_error_sys(err, e, "read %s", path) : 0;
}

/* Saving variables can run user code (an object's __reduce__), restoring them too, and
 * a restore may import modules: bounded, so that a drain or an adoption cannot hang on
 * one session. */
#define CHECKPOINT_TIMEOUT_MS 20000
#define RESTORE_TIMEOUT_MS    60000

int cq_worker_checkpoint_kernel(struct cq_worker *w, const char *session_id, bool javascript,
                                uint64_t max_bytes, uint8_t **data, size_t *len,
                                struct cq_error *err)
{
    *data = NULL;
    *len = 0;
    struct cq_session *s = cq_session_acquire(w, session_id);
    if (s == NULL)
        return cq_error_set(err, CQ_ENOTFOUND, "session '%s' not found", session_id);
    struct kernel_slot *slot = &s->kernels[javascript];
    pthread_mutex_lock(&slot->run); /* never beside a cell */
    int rc = slot->kernel == NULL ? 0
                                  : cq_kernel_checkpoint(slot->kernel, max_bytes,
                                                         CHECKPOINT_TIMEOUT_MS, data, len, err);
    if (rc < 0) {
        /* A late or forged answer may still be on its way: the next call gets a fresh
         * kernel rather than a channel whose state is unknown. */
        cq_kernel_stop(slot->kernel);
        slot->kernel = NULL;
    }
    pthread_mutex_unlock(&slot->run);
    cq_session_release(w, s);
    return rc;
}

int cq_worker_restore_kernel(struct cq_worker *w, const char *session_id, bool javascript,
                             const uint8_t *data, size_t len, char **summary, struct cq_error *err)
{
    *summary = NULL;
    struct cq_session *s = cq_session_acquire(w, session_id);
    if (s == NULL)
        return cq_error_set(err, CQ_ENOTFOUND, "session '%s' not found", session_id);
    struct kernel_slot *slot = &s->kernels[javascript];
    pthread_mutex_lock(&slot->run);
    struct cq_kernel *k = NULL;
    int rc = cq_session_kernel(w, s, javascript, &k, err);
    if (rc == 0 && (rc = cq_kernel_restore(k, data, len, RESTORE_TIMEOUT_MS, summary, err)) < 0) {
        /* Whatever it holds now is half a state, or it broke the protocol: the next
         * call gets a fresh kernel. */
        cq_kernel_stop(slot->kernel);
        slot->kernel = NULL;
    }
    pthread_mutex_unlock(&slot->run);
    cq_session_release(w, s);
    return rc;
}
