/* worker/metrics.c - what the worker core counts (docs/operations.md): executions,
 * sessions, warm pools, capacity and what sandboxes used, in the front end's registry
 * (cq_worker_config.metrics). Names and labels are a contract with the dashboards and
 * alerts: the "Worker core" section of the observability plan.
 *
 * Counters move on the calls' own threads through children found once here; values
 * that are read rather than counted (sessions live, warm pools, memory) are set when a
 * scrape renders, from the worker's tables. Label values are codeq's own words, never a
 * client's text: an unknown tool or language is counted as "unknown" / "none".
 */
#define _GNU_SOURCE
#include "worker/session.h"
#include "common/clock.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const double duration_buckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                          1,     2.5,    5,     10,   30,    60,   120, 300};
#define MIB (1024.0 * 1024.0)
static const double bytes_buckets[] = {1 * MIB,    4 * MIB,    16 * MIB,  64 * MIB,
                                       128 * MIB,  256 * MIB,  512 * MIB, 1024 * MIB,
                                       2048 * MIB, 4096 * MIB, 8192 * MIB};

/* The warm pool gauges set at the last render, so that a pool that is gone (an
 * interpreter deleted) reads 0 rather than what it last held. */
#define MAX_POOL_GAUGES 256

struct cq_wmetrics {
    struct cq_metrics *reg;
    struct cq_worker *w;
    struct cq_metric *executions, *run_seconds, *started, *misses;
    struct cq_metric *pool_ready, *pool_target;
    struct cq_metric_child *live, *ended[2], *capacity_sessions, *capacity_memory, *memory_limits,
        *cpu_seconds, *peak_memory, *oom_kills, *pids_hits, *dropped[2], *network[2],
        *forks[CQ_FORK_OUTCOMES];
    uint64_t capacity_memory_bytes;
    struct cq_metric_child *pool_set[MAX_POOL_GAUGES];
    size_t n_pool_set;
};

static const char *const no_labels[] = {NULL};

static struct cq_metric_child *only_child(struct cq_metric *f)
{
    return f != NULL ? cq_metric_child(f, NULL) : NULL;
}

static struct cq_metric_child *child_of(struct cq_metric *f, const char *value)
{
    return f != NULL ? cq_metric_child(f, (const char *[]){value, NULL}) : NULL;
}

bool cq_counter_advance(_Atomic uint64_t *seen, uint64_t now, uint64_t *delta)
{
    uint64_t old = atomic_load(seen);
    do {
        /* Two calls may read the sandbox's counter in either order: only the larger
         * reading moves it, so that no event is counted twice. */
        if (now <= old) {
            *delta = 0;
            return false;
        }
    } while (!atomic_compare_exchange_weak(seen, &old, now));
    *delta = now - old;
    return true;
}

/* Memory the host has, the bound of what sandboxes can get whatever their limits. */
static uint64_t host_memory(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    return pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page : 0;
}

static void set_pool(struct cq_wmetrics *wm, const char *interpreter, enum cq_network_mode mode,
                     const struct cq_pool *p)
{
    const char *labels[] = {interpreter, cq_net_mode_name(mode), NULL};
    struct cq_metric_child *ready = cq_metric_child(wm->pool_ready, labels);
    struct cq_metric_child *target = cq_metric_child(wm->pool_target, labels);
    cq_metric_child_set(ready, (double)p->n);
    cq_metric_child_set(target, (double)cq_pool_target(p, cq_now_ms()));
    if (wm->n_pool_set + 2 <= MAX_POOL_GAUGES) {
        wm->pool_set[wm->n_pool_set++] = ready;
        wm->pool_set[wm->n_pool_set++] = target;
    }
}

/* At each scrape (the scraping thread; renders do not overlap). */
static void on_render(void *ctx)
{
    struct cq_wmetrics *wm = ctx;
    struct cq_worker *w = wm->w;
    unsigned live = 0;
    uint64_t memory = 0;
    pthread_mutex_lock(&w->lock);
    for (struct cq_session *s = w->sessions; s != NULL; s = s->next) {
        if (s->status != CQ_SESSION_READY)
            continue;
        live++;
        memory += s->limits.memory_bytes;
    }
    pthread_mutex_unlock(&w->lock);
    cq_metric_child_set(wm->live, live);
    cq_metric_child_set(wm->memory_limits, (double)memory);
    cq_metric_child_set(wm->capacity_sessions, w->cfg.max_sessions);
    cq_metric_child_set(wm->capacity_memory, (double)wm->capacity_memory_bytes);

    for (size_t i = 0; i < wm->n_pool_set; i++)
        cq_metric_child_set(wm->pool_set[i], 0);
    wm->n_pool_set = 0;
    pthread_mutex_lock(&w->pool.lock);
    for (int m = 0; m < CQ_WORKER_POOL_MODES; m++)
        if (w->pool.modes[m].size > 0 || w->pool.modes[m].n > 0)
            set_pool(wm, CQ_INTERPRETER_DEFAULT, (enum cq_network_mode)m, &w->pool.modes[m]);
    for (struct cq_interp *ip = w->pool.interps; ip != NULL; ip = ip->next)
        if (ip->pool.size > 0 || ip->pool.n > 0)
            set_pool(wm, ip->name, ip->pool.mode, &ip->pool);
    pthread_mutex_unlock(&w->pool.lock);
}

int cq_wmetrics_create(struct cq_worker *w, struct cq_error *err)
{
    struct cq_metrics *reg = w->cfg.metrics;
    w->metrics = NULL;
    if (reg == NULL)
        return 0;
    struct cq_wmetrics *wm = calloc(1, sizeof(*wm));
    if (wm == NULL)
        return cq_error_sys(err, ENOMEM, "the worker's metrics");
    wm->reg = reg;
    wm->w = w;
    struct cq_error e = {0};
    wm->executions = cq_metrics_counter(
        reg, "codeq_executions_total", "Tool calls the worker core ran, by outcome",
        (const char *[]){"tool", "language", "interpreter", "outcome", "error_code", NULL}, &e);
    wm->run_seconds = cq_metrics_histogram(
        reg, "codeq_execution_run_seconds", "The worker core's time on a tool call",
        (const char *[]){"tool", NULL}, duration_buckets,
        sizeof(duration_buckets) / sizeof(duration_buckets[0]), &e);
    wm->live = only_child(
        cq_metrics_gauge(reg, "codeq_sessions_live", "Sessions running now", no_labels, &e));
    wm->started = cq_metrics_counter(reg, "codeq_sessions_started_total", "Sessions started",
                                     (const char *[]){"interpreter", NULL}, &e);
    struct cq_metric *ended =
        cq_metrics_counter(reg, "codeq_sessions_ended_total",
                           "Sessions ended: stopped by a client or expired at their time to live",
                           (const char *[]){"reason", NULL}, &e);
    wm->ended[0] = child_of(ended, "stopped");
    wm->ended[1] = child_of(ended, "expired");
    wm->pool_ready =
        cq_metrics_gauge(reg, "codeq_warm_pool_ready", "Warm sandboxes ready for new sessions",
                         (const char *[]){"interpreter", "network", NULL}, &e);
    wm->pool_target = cq_metrics_gauge(reg, "codeq_warm_pool_target",
                                       "Warm sandboxes the pool keeps ready when it can",
                                       (const char *[]){"interpreter", "network", NULL}, &e);
    wm->misses = cq_metrics_counter(
        reg, "codeq_warm_pool_misses_total",
        "Session starts that could have used a warm sandbox but found the pool empty",
        (const char *[]){"interpreter", NULL}, &e);
    wm->capacity_sessions = only_child(cq_metrics_gauge(
        reg, "codeq_capacity_sessions", "Sessions the worker runs at most", no_labels, &e));
    wm->capacity_memory = only_child(cq_metrics_gauge(
        reg, "codeq_capacity_memory_bytes",
        "Memory the worker may give sandboxes: its maximum sessions times the default "
        "limit, or the host's memory when that is less",
        no_labels, &e));
    wm->memory_limits = only_child(cq_metrics_gauge(reg, "codeq_sessions_memory_limit_bytes",
                                                    "The memory limits of the live sessions, "
                                                    "summed",
                                                    no_labels, &e));
    wm->cpu_seconds =
        only_child(cq_metrics_counter(reg, "codeq_sandbox_cpu_seconds_total",
                                      "CPU time of tool calls in sandboxes", no_labels, &e));
    wm->peak_memory = only_child(cq_metrics_histogram(
        reg, "codeq_sandbox_peak_memory_bytes",
        "The session sandbox's peak memory, at the end of each tool call", no_labels, bytes_buckets,
        sizeof(bytes_buckets) / sizeof(bytes_buckets[0]), &e));
    wm->oom_kills = only_child(cq_metrics_counter(
        reg, "codeq_sandbox_oom_kills_total",
        "Processes in sandboxes killed by the kernel's OOM killer (memory limit)", no_labels, &e));
    wm->pids_hits = only_child(cq_metrics_counter(reg, "codeq_sandbox_pids_limit_hits_total",
                                                  "Forks in sandboxes refused by the pids limit",
                                                  no_labels, &e));
    struct cq_metric *dropped =
        cq_metrics_counter(reg, "codeq_output_dropped_bytes_total",
                           "Output of tool calls past the output limit, counted and dropped",
                           (const char *[]){"stream", NULL}, &e);
    wm->dropped[0] = child_of(dropped, "stdout");
    wm->dropped[1] = child_of(dropped, "stderr");
    struct cq_metric *network =
        cq_metrics_counter(reg, "codeq_sandbox_network_bytes_total",
                           "IP traffic of sandboxes with network while tool calls ran",
                           (const char *[]){"direction", NULL}, &e);
    wm->network[0] = child_of(network, "sent");
    wm->network[1] = child_of(network, "received");
    /* A zygote that keeps failing shows here (and in start times), where the exec'd
     * kernels that replace its forks would hide it. All zero without forked kernels. */
    struct cq_metric *forks = cq_metrics_counter(
        reg, "codeq_kernel_forks_total",
        "Python kernels to be forked from the zygote: forked, or started unforked because the "
        "fork failed or no zygote was running",
        (const char *[]){"outcome", NULL}, &e);
    wm->forks[CQ_FORK_FORKED] = child_of(forks, "forked");
    wm->forks[CQ_FORK_FAILED] = child_of(forks, "failed");
    wm->forks[CQ_FORK_NO_ZYGOTE] = child_of(forks, "no_zygote");
    uint64_t host = host_memory();
    uint64_t wanted = (uint64_t)w->cfg.max_sessions * w->cfg.limits.memory_bytes;
    wm->capacity_memory_bytes = host != 0 && host < wanted ? host : wanted;

    /* A family refused (a name the front end registered otherwise) is a bug of
     * codeq's, found by its first run. */
    if (e.msg[0] != '\0' || wm->executions == NULL || wm->run_seconds == NULL ||
        wm->started == NULL || wm->pool_ready == NULL || wm->pool_target == NULL ||
        wm->misses == NULL || wm->live == NULL || wm->ended[0] == NULL ||
        wm->capacity_sessions == NULL || wm->capacity_memory == NULL || wm->memory_limits == NULL ||
        wm->cpu_seconds == NULL || wm->peak_memory == NULL || wm->oom_kills == NULL ||
        wm->pids_hits == NULL || wm->dropped[0] == NULL || wm->network[0] == NULL ||
        wm->forks[CQ_FORK_NO_ZYGOTE] == NULL) {
        free(wm);
        if (e.msg[0] == '\0')
            return cq_error_set(err, CQ_EINTERNAL, "the worker's metrics: not registered");
        *err = e;
        return cq_error_prefix(err, "the worker's metrics");
    }
    if (cq_metrics_on_render(reg, on_render, wm, err) < 0) {
        free(wm);
        return -1;
    }
    w->metrics = wm;
    return 0;
}

void cq_wmetrics_destroy(struct cq_worker *w)
{
    struct cq_wmetrics *wm = w->metrics;
    if (wm == NULL)
        return;
    /* After this no scrape reads the worker's tables: it can go. */
    cq_metrics_off_render(wm->reg, on_render, wm);
    w->metrics = NULL;
    free(wm);
}

static const char *language_label(const char *tool, const struct cq_invoke_args *a)
{
    if (tool == NULL || strcmp(tool, "executeCode") != 0)
        return "none";
    const char *lang = a != NULL && a->language != NULL && a->language[0] ? a->language : "python";
    static const char *const known[] = {"python", "javascript", "typescript"};
    for (size_t i = 0; i < 3; i++)
        if (strcmp(lang, known[i]) == 0)
            return known[i];
    return "none";
}

static const char *tool_label(const char *tool)
{
    for (size_t i = 0; tool != NULL && cq_tool_names[i] != NULL; i++)
        if (strcmp(tool, cq_tool_names[i]) == 0)
            return cq_tool_names[i];
    return "unknown";
}

void cq_wmetrics_call(struct cq_worker *w, const struct cq_session *s, const char *tool,
                      const struct cq_invoke_args *a, const struct cq_result *r,
                      uint64_t started_us)
{
    struct cq_wmetrics *wm = w->metrics;
    if (wm == NULL)
        return;
    const char *tool_name = tool_label(tool);
    const char *labels[] = {tool_name,
                            language_label(tool_name, a),
                            s != NULL ? s->interpreter : "none",
                            cq_result_outcome(r),
                            cq_result_error_name(r->error_code),
                            NULL};
    cq_metric_add(wm->executions, labels, 1);
    cq_metric_observe(wm->run_seconds, (const char *[]){tool_name, NULL},
                      (double)(cq_now_us() - started_us) / 1e6);
    if (r->cpu_ms > 0)
        cq_metric_child_add(wm->cpu_seconds, (double)r->cpu_ms / 1000.0);
    if (s != NULL && r->peak_memory_bytes > 0)
        cq_metric_child_observe(wm->peak_memory, (double)r->peak_memory_bytes);
}

void cq_wmetrics_network_begin(struct cq_worker *w, struct cq_session *s,
                               const struct cq_sandbox_net_stats *before)
{
    uint64_t skipped;
    if (w->metrics == NULL)
        return;
    /* The first call in flight skips what the sandbox did since the last one ended;
     * a call overlapping another leaves it to count from where that one is. */
    if (atomic_fetch_add(&s->net_calls, 1) == 0) {
        cq_counter_advance(&s->net_seen[0], before->bytes_sent, &skipped);
        cq_counter_advance(&s->net_seen[1], before->bytes_received, &skipped);
    }
}

void cq_wmetrics_network_end(struct cq_worker *w, struct cq_session *s,
                             const struct cq_sandbox_net_stats *after)
{
    struct cq_wmetrics *wm = w->metrics;
    uint64_t delta;
    if (wm == NULL)
        return;
    /* Each call reports all of the sandbox's traffic while it ran; the counter takes
     * only what no other call took: overlapping calls' traffic once. */
    if (after != NULL && cq_counter_advance(&s->net_seen[0], after->bytes_sent, &delta))
        cq_metric_child_add(wm->network[0], (double)delta);
    if (after != NULL && cq_counter_advance(&s->net_seen[1], after->bytes_received, &delta))
        cq_metric_child_add(wm->network[1], (double)delta);
    atomic_fetch_sub(&s->net_calls, 1);
}

void cq_wmetrics_events(struct cq_worker *w, struct cq_session *s,
                        const struct cq_sandbox_stats *st)
{
    struct cq_wmetrics *wm = w->metrics;
    uint64_t delta;
    if (wm == NULL)
        return;
    if (cq_counter_advance(&s->oom_seen, st->oom_kills, &delta))
        cq_metric_child_add(wm->oom_kills, (double)delta);
    if (cq_counter_advance(&s->pids_seen, st->pids_limit_hits, &delta))
        cq_metric_child_add(wm->pids_hits, (double)delta);
}

void cq_wmetrics_sandbox_gone(struct cq_worker *w, struct cq_session *s, struct cq_sandbox *sb)
{
    struct cq_sandbox_stats st;
    struct cq_error ignored;
    /* What happened since the last call (a background task killed, a fork bomb left
     * running), read before the cgroup goes. */
    if (w->metrics != NULL && sb != NULL && cq_sandbox_stats(sb, &st, &ignored) == 0)
        cq_wmetrics_events(w, s, &st);
}

void cq_wmetrics_session_started(struct cq_worker *w, const char *interpreter, bool pool_missed)
{
    struct cq_wmetrics *wm = w->metrics;
    if (wm == NULL)
        return;
    cq_metric_add(wm->started, (const char *[]){interpreter, NULL}, 1);
    if (pool_missed)
        cq_metric_add(wm->misses, (const char *[]){interpreter, NULL}, 1);
}

void cq_wmetrics_session_ended(struct cq_worker *w, bool expired)
{
    if (w->metrics != NULL)
        cq_metric_child_add(w->metrics->ended[expired], 1);
}

void cq_wmetrics_kernel_fork(struct cq_worker *w, enum cq_fork_outcome outcome)
{
    if (w->metrics != NULL)
        cq_metric_child_add(w->metrics->forks[outcome], 1);
}

struct cq_metric_child *const *cq_wmetrics_dropped(struct cq_worker *w)
{
    return w->metrics != NULL ? w->metrics->dropped : NULL;
}
