/* dispatcher/metrics.c - codeq-dispatcher's metrics (dispatcher/metrics.h). */
#define _GNU_SOURCE
#include "dispatcher/metrics.h"
#include "fleet/log.h"
#include "fleet/obs.h"
#include "fleet/store.h"
#include "http/http.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum outcome { NONE, FORWARDED, ANSWERED, REPLAYED, DEAD_LETTERED, REFUSED };
/* Ordered by precedence: a refused request is dead-lettered and answered too, a
 * replayed one is answered, an answered one may have had an early forward. */
static const char *const outcome_names[] = {"forwarded", "forwarded",     "answered",
                                            "replayed",  "dead_lettered", "refused"};

struct cq_dm {
    struct cq_obs *obs;
    struct cq_http_server *http;
    struct cq_metric *requests, *refused, *dead_letters;
    struct cq_metric_child *replays;
    struct cq_metric *workers;
    /* The request being handled (the dispatcher handles one at a time). */
    const char *operation;
    enum outcome outcome;
    const char *reason; /* its refusal's */
};

/* The request being handled's arrival, kept without metrics too (cq_dm_requested). */
static int64_t arrival_ms;

/* The workers' states from their records in Redis, on the poller's thread. */
static void tick(void *ctx, struct cq_store *store)
{
    struct cq_dm *m = ctx;
    struct cq_worker_status live[256];
    char dead[1][64];
    size_t n = 0, n_dead = 0;
    struct cq_error err;
    if (cq_store_workers(store, live, 256, &n, dead, 1, &n_dead, &err) < 0)
        return;
    size_t draining = 0;
    for (size_t i = 0; i < n; i++)
        draining += live[i].draining;
    cq_metric_set(m->workers, (const char *const[]){"ready"}, (double)(n - draining));
    cq_metric_set(m->workers, (const char *const[]){"draining"}, (double)draining);
}

int cq_dm_start(const struct cq_fleet_config *cfg, struct cq_store *store, rd_kafka_t *consumer,
                const atomic_bool *stopping, struct cq_dm **out, struct cq_error *err)
{
    *out = NULL;
    if (cfg->metrics_listen[0] == '\0')
        return 0;
    struct cq_dm *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return cq_error_sys(err, ENOMEM, "allocate the metrics");
    struct cq_obs_config oc = {
        .cfg = cfg, .component = "dispatcher", .stopping = stopping, .tick = tick, .ctx = m};
    if (cq_obs_create(&oc, &m->obs, err) < 0)
        goto fail;
    struct cq_metrics *r = cq_obs_metrics(m->obs);
    static const char *const reason[] = {"reason", NULL};
    static const char *const state[] = {"state", NULL};
    const struct cq_obs_counters *shared = cq_obs_counters(m->obs);
    m->requests = shared->requests;
    m->dead_letters = shared->dead_letters;
    m->replays = shared->replays;
    if ((m->refused = cq_metrics_counter(r, "codeq_requests_refused_total",
                                         "Requests refused, by reason", reason, err)) == NULL ||
        (m->workers = cq_metrics_gauge(r, "codeq_workers",
                                       "Live workers by state, from their records in Redis", state,
                                       err)) == NULL)
        goto fail;
    if (cq_store_set_metrics(store, r, err) < 0 ||
        cq_obs_watch(m->obs, consumer, cfg->request_topic, err) < 0)
        goto fail;
    struct cq_ops_config ops = {
        .listen = cfg->metrics_listen, .metrics = r, .ready = cq_obs_ready, .ready_ctx = m->obs};
    if (cq_ops_start(&ops, &m->http, err) < 0) {
        cq_error_prefix(err, "metrics_listen %s", cfg->metrics_listen);
        goto fail;
    }
    cq_log_event(CQ_LOG_INFO, "metrics_listening", CQ_FIELDS(CQ_LS("listen", cfg->metrics_listen)),
                 "metrics on %s (/metrics, /healthz, /readyz)", cfg->metrics_listen);
    *out = m;
    return 0;
fail:
    cq_dm_destroy(m, store);
    return -1;
}

void cq_dm_destroy(struct cq_dm *m, struct cq_store *store)
{
    if (m == NULL)
        return;
    cq_http_stop(m->http);
    cq_obs_stop(m->obs);
    if (store != NULL) {
        struct cq_error ignored;
        cq_store_set_metrics(store, NULL, &ignored);
    }
    cq_obs_destroy(m->obs);
    free(m);
}

void cq_dm_begin(struct cq_dm *m, const rd_kafka_message_t *msg)
{
    arrival_ms = cq_obs_timestamp_ms(msg);
    if (m == NULL)
        return;
    m->operation = "unknown";
    m->outcome = NONE;
    m->reason = NULL;
}

static void mark(struct cq_dm *m, enum outcome o)
{
    if (m != NULL && o > m->outcome)
        m->outcome = o;
}

void cq_dm_request(struct cq_dm *m, const struct Codeq__V1__Request *req)
{
    if (m != NULL)
        m->operation = cq_obs_operation(req);
}

void cq_dm_forwarded(struct cq_dm *m)
{
    mark(m, FORWARDED);
}

void cq_dm_answered(struct cq_dm *m)
{
    mark(m, ANSWERED);
}

void cq_dm_replayed(struct cq_dm *m)
{
    mark(m, REPLAYED);
}

void cq_dm_refused(struct cq_dm *m, const char *reason)
{
    if (m == NULL || m->reason != NULL)
        return;
    m->reason = reason;
    mark(m, REFUSED);
}

void cq_dm_dead_lettered(struct cq_dm *m)
{
    if (m == NULL)
        return;
    cq_metric_add(m->dead_letters, (const char *const[]){m->reason ? m->reason : "malformed"}, 1);
    mark(m, DEAD_LETTERED);
}

void cq_dm_end(struct cq_dm *m)
{
    arrival_ms = 0;
    if (m == NULL)
        return;
    cq_metric_add(m->requests,
                  (const char *const[]){"dispatcher", m->operation, outcome_names[m->outcome]}, 1);
    if (m->outcome == REFUSED)
        cq_metric_add(m->refused, (const char *const[]){m->reason}, 1);
    if (m->outcome == REPLAYED)
        cq_metric_child_add(m->replays, 1);
}

size_t cq_dm_requested(char buf[24], struct cq_header *out)
{
    if (arrival_ms <= 0)
        return 0;
    snprintf(buf, 24, "%lld", (long long)arrival_ms);
    *out = (struct cq_header){CQ_OBS_REQUESTED_HEADER, buf};
    return 1;
}
