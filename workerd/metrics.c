/* workerd/metrics.c - codeq-worker's metrics (workerd/metrics.h). */
#define _GNU_SOURCE
#include "workerd/metrics.h"
#include "workerd/daemon_internal.h"
#include "api/api.h"
#include "common/clock.h"
#include "fleet/log.h"
#include "fleet/obs.h"
#include "http/http.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct cq_wm {
    struct cq_obs *obs;
    /* Its warm pools (warm_pool_ready()); set by cq_wm_serve, NULL before. */
    _Atomic(struct cq_worker *) core;
    struct cq_http_server *http;
    struct cq_metric *requests, *wait, *duration, *dead_letters;
    struct cq_metric_child *replays, *adopted, *drained;
    /* The warm pool was seen ready once (warm_pool_ready()). */
    atomic_bool warm_once;
};

/* The request this session thread runs. */
static __thread struct {
    bool on;
    const char *operation, *tool;
    int64_t requested_ms;
    double waited; /* seconds from requested_ms to cq_wm_begin */
    bool replied, error;
} cur;

static __thread int64_t arriving_ms;

static int warm_pool_ready(void *ctx, char *why, size_t why_size);

int cq_wm_create(struct cq_daemon *d, struct cq_error *err)
{
    d->metrics = NULL;
    if (d->cfg.metrics_listen[0] == '\0')
        return 0;
    struct cq_wm *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return cq_error_sys(err, ENOMEM, "allocate the metrics");
    struct cq_obs_config oc = {.cfg = &d->cfg,
                               .component = "worker",
                               .stopping = &d->stopping,
                               .ready = warm_pool_ready,
                               .ctx = m};
    if (cq_obs_create(&oc, &m->obs, err) < 0) {
        free(m);
        return -1;
    }
    struct cq_metrics *r = cq_obs_metrics(m->obs);
    static const char *const tool[] = {"tool", NULL};
    const struct cq_obs_counters *shared = cq_obs_counters(m->obs);
    m->requests = shared->requests;
    m->dead_letters = shared->dead_letters;
    m->replays = shared->replays;
    struct cq_metric *adopted, *drained;
    if ((m->wait = cq_metrics_histogram(
             r, "codeq_request_queue_wait_seconds",
             "From the request's arrival on the request topic to this worker starting it", tool,
             cq_obs_duration_buckets, cq_obs_n_duration_buckets, err)) == NULL ||
        (m->duration = cq_metrics_histogram(
             r, "codeq_request_duration_seconds",
             "From the request's arrival on the request topic to its final reply handed to Kafka",
             tool, cq_obs_duration_buckets, cq_obs_n_duration_buckets, err)) == NULL ||
        (adopted = cq_metrics_counter(r, "codeq_sessions_adopted_total",
                                      "Sessions taken over from a lost or drained worker", NULL,
                                      err)) == NULL ||
        (drained = cq_metrics_counter(r, "codeq_sessions_drained_total",
                                      "Sessions handed off when this worker drained", NULL, err)) ==
            NULL) {
        cq_obs_destroy(m->obs);
        free(m);
        return -1;
    }
    m->adopted = cq_metric_child(adopted, NULL);
    m->drained = cq_metric_child(drained, NULL);
    d->metrics = m;
    return 0;
}

struct cq_metrics *cq_wm_registry(struct cq_wm *m)
{
    return m != NULL ? cq_obs_metrics(m->obs) : NULL;
}

int cq_wm_serve(struct cq_daemon *d, struct cq_error *err)
{
    struct cq_wm *m = d->metrics;
    if (m == NULL)
        return 0;
    atomic_store(&m->core, d->core);
    struct cq_metrics *r = cq_obs_metrics(m->obs);
    if (cq_store_set_metrics(d->store, r, err) < 0 || cq_store_set_metrics(d->beat, r, err) < 0 ||
        cq_obs_watch(m->obs, d->consumer, d->topic, err) < 0)
        return -1;
    struct cq_ops_config ops = {
        .listen = d->cfg.metrics_listen, .metrics = r, .ready = cq_obs_ready, .ready_ctx = m->obs};
    if (cq_ops_start(&ops, &m->http, err) < 0)
        return cq_error_prefix(err, "metrics_listen %s", d->cfg.metrics_listen);
    cq_log_event(
        CQ_LOG_INFO, "metrics_listening",
        CQ_FIELDS(CQ_LS("listen", d->cfg.metrics_listen), CQ_LS("worker_id", d->cfg.worker_id)),
        "metrics on %s (/metrics, /healthz, /readyz)", d->cfg.metrics_listen);
    return 0;
}

void cq_wm_stop(struct cq_wm *m)
{
    if (m == NULL)
        return;
    cq_http_stop(m->http);
    m->http = NULL;
    cq_obs_stop(m->obs);
}

void cq_wm_free(struct cq_wm *m)
{
    if (m == NULL)
        return;
    cq_wm_stop(m);
    cq_obs_destroy(m->obs);
    free(m);
}

/* The warm pool is ready once a sandbox of it was: a worker whose pool never filled
 * (a runtime that cannot start) would take sessions only to start each one cold, or
 * fail them. A core that keeps none (no pool) is ready. */
static int warm_pool_ready(void *ctx, char *why, size_t why_size)
{
    struct cq_wm *m = ctx;
    if (atomic_load(&m->warm_once))
        return 1;
    struct cq_worker *core = atomic_load(&m->core);
    if (core == NULL) {
        snprintf(why, why_size, "starting");
        return 0;
    }
    unsigned ready, target;
    cq_worker_warm_counts(core, &ready, &target);
    if (target == 0 || ready > 0) {
        atomic_store(&m->warm_once, true);
        return 1;
    }
    snprintf(why, why_size, "warm pool not ready: none of its %u sandboxes has been ready yet",
             target);
    return 0;
}

void cq_wm_arriving(const rd_kafka_message_t *msg)
{
    char text[24];
    const char *v =
        cq_kafka_header((rd_kafka_message_t *)msg, CQ_OBS_REQUESTED_HEADER, text, sizeof(text));
    arriving_ms = v != NULL ? strtoll(v, NULL, 10) : 0;
}

int64_t cq_wm_arrival(void)
{
    int64_t ms = arriving_ms;
    arriving_ms = 0;
    return ms;
}

/* The tool label: one of the tools, never a client's own word. */
static const char *tool_of(const Codeq__V1__Request *req)
{
    if (req->operation_case != CODEQ__V1__REQUEST__OPERATION_INVOKE)
        return cq_obs_operation(req);
    for (size_t i = 0; req->invoke != NULL && req->invoke->tool && cq_tool_names[i]; i++)
        if (strcmp(req->invoke->tool, cq_tool_names[i]) == 0)
            return cq_tool_names[i];
    return "unknown";
}

static double since(int64_t unix_ms)
{
    int64_t ms = cq_unix_ms() - unix_ms;
    return ms > 0 ? (double)ms / 1000 : 0;
}

void cq_wm_begin(struct cq_wm *m, const Codeq__V1__Request *req, int64_t requested_ms)
{
    cur.on = m != NULL;
    if (m == NULL)
        return;
    cur.operation = cq_obs_operation(req);
    cur.tool = tool_of(req);
    cur.requested_ms = requested_ms;
    cur.replied = cur.error = false;
    cur.waited = requested_ms > 0 ? since(requested_ms) : 0;
}

void cq_wm_replied(struct cq_wm *m)
{
    if (m == NULL || !cur.on || cur.replied)
        return;
    cur.replied = true;
    if (cur.requested_ms > 0)
        cq_metric_observe(m->duration, (const char *const[]){cur.tool}, since(cur.requested_ms));
}

void cq_wm_result(bool is_error)
{
    if (cur.on)
        cur.error = cur.error || is_error;
}

void cq_wm_end(struct cq_wm *m)
{
    /* Counted when this worker answered it: a copy that was not its to run (another
     * claimed it, an early forward its dispatcher answered, a repeat answered from
     * Redis) is not a request it handled, nor did it wait for this worker. */
    if (m != NULL && cur.on && cur.replied) {
        cq_metric_add(m->requests,
                      (const char *const[]){"worker", cur.operation, cur.error ? "error" : "ok"},
                      1);
        if (cur.requested_ms > 0)
            cq_metric_observe(m->wait, (const char *const[]){cur.tool}, cur.waited);
    }
    cur.on = false;
}

void cq_wm_replayed(struct cq_wm *m)
{
    if (m != NULL)
        cq_metric_child_add(m->replays, 1);
}

void cq_wm_adopted(struct cq_wm *m)
{
    if (m != NULL)
        cq_metric_child_add(m->adopted, 1);
}

void cq_wm_drained(struct cq_wm *m)
{
    if (m != NULL)
        cq_metric_child_add(m->drained, 1);
}

void cq_wm_dead_letter(struct cq_wm *m, const char *reason)
{
    if (m != NULL)
        cq_metric_add(m->dead_letters, (const char *const[]){reason}, 1);
}
