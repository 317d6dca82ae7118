/* fleet/obs.c - the daemons' shared metrics and readiness (fleet/obs.h). */
#define _GNU_SOURCE
#include "fleet/obs.h"
#include "fleet/kafka.h"
#include "fleet/log.h"
#include "fleet/store.h"
#include "fleet/tracing.h"
#include "codeq.pb-c.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef CQ_VERSION
#define CQ_VERSION "unknown"
#endif

/* A round every second: lag and reachability are read, not pushed, and a scrape every
 * 15 s or so sees them at most a second old. */
#define POLL_MS 1000
/* Each broker or Redis question of a round gives up after this: a round stays short
 * while something is down. */
#define ASK_MS 2000

const double cq_obs_duration_buckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                          1,     2.5,    5,     10,   30,    60,   120, 300};
const size_t cq_obs_n_duration_buckets =
    sizeof(cq_obs_duration_buckets) / sizeof(cq_obs_duration_buckets[0]);

struct cq_obs {
    struct cq_obs_config oc;
    struct cq_metrics *m;
    struct cq_metric *lag;
    struct cq_metric_child *ready;
    struct cq_obs_counters counters;
    struct cq_store *store; /* the poller's own connection: a PING never waits behind work */
    rd_kafka_t *consumer;
    char topic[256];
    pthread_t thread;
    bool started;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool quit;
    /* What the poller last found; read by /readyz on the scraping thread. */
    atomic_bool kafka_ok, redis_ok;
};

int64_t cq_obs_timestamp_ms(const rd_kafka_message_t *msg)
{
    rd_kafka_timestamp_type_t type;
    int64_t ts = rd_kafka_message_timestamp(msg, &type);
    return type == RD_KAFKA_TIMESTAMP_NOT_AVAILABLE || ts < 0 ? 0 : ts;
}

const char *cq_obs_operation(const Codeq__V1__Request *req)
{
    switch (req != NULL ? req->operation_case : CODEQ__V1__REQUEST__OPERATION__NOT_SET) {
    case CODEQ__V1__REQUEST__OPERATION_START_SESSION:
        return "start_session";
    case CODEQ__V1__REQUEST__OPERATION_GET_SESSION:
        return "get_session";
    case CODEQ__V1__REQUEST__OPERATION_LIST_SESSIONS:
        return "list_sessions";
    case CODEQ__V1__REQUEST__OPERATION_STOP_SESSION:
        return "stop_session";
    case CODEQ__V1__REQUEST__OPERATION_INVOKE:
        return "invoke";
    case CODEQ__V1__REQUEST__OPERATION_CANCEL_CALL:
        return "cancel_call";
    default:
        return "unknown";
    }
}

int cq_obs_create(const struct cq_obs_config *oc, struct cq_obs **out, struct cq_error *err)
{
    *out = NULL;
    struct cq_obs *o = calloc(1, sizeof(*o));
    if (o == NULL)
        return cq_error_sys(err, ENOMEM, "allocate the metrics");
    o->oc = *oc;
    pthread_mutex_init(&o->lock, NULL);
    pthread_cond_init(&o->cond, NULL);
    if (cq_metrics_create(&o->m, err) < 0)
        goto fail;
    static const char *const build_labels[] = {"version", "component", NULL};
    static const char *const lag_labels[] = {"topic", "partition", NULL};
    struct cq_metric *build = cq_metrics_gauge(
        o->m, "codeq_build_info", "Always 1: the version and component running", build_labels, err);
    struct cq_metric *ready =
        build == NULL ? NULL
                      : cq_metrics_gauge(o->m, "codeq_ready", "1 while /readyz answers 200, else 0",
                                         NULL, err);
    o->lag = ready == NULL ? NULL
                           : cq_metrics_gauge(o->m, "codeq_kafka_consumer_lag",
                                              "Messages on the partition this daemon's consumer "
                                              "group has not committed yet",
                                              lag_labels, err);
    if (o->lag == NULL)
        goto fail;
    cq_metric_set(build, (const char *const[]){CQ_VERSION, oc->component}, 1);
    o->ready = cq_metric_child(ready, NULL);
    static const char *const request_labels[] = {"component", "operation", "outcome", NULL};
    static const char *const reason[] = {"reason", NULL};
    struct cq_metric *replays;
    if ((o->counters.requests = cq_metrics_counter(o->m, "codeq_requests_total",
                                                   "Requests handled, by operation and outcome",
                                                   request_labels, err)) == NULL ||
        (o->counters.dead_letters = cq_metrics_counter(
             o->m, "codeq_dead_letters_total", "Messages put on the dead-letter topic, by reason",
             reason, err)) == NULL ||
        (replays = cq_metrics_counter(o->m, "codeq_replays_total",
                                      "Requests answered again from their stored reply", NULL,
                                      err)) == NULL)
        goto fail;
    o->counters.replays = cq_metric_child(replays, NULL);
    /* The span exporter started before the registry (fleet/daemon.c): its drops so far
     * count too. */
    if (cq_kafka_set_metrics(o->m, err) < 0 || cq_tracing_set_metrics(o->m, err) < 0 ||
        cq_store_open(oc->cfg, &o->store, err) < 0)
        goto fail;
    cq_store_set_cancel(o->store, oc->stopping);
    /* /readyz turns within a poll or two when Redis hangs (SIGSTOP, a full network
     * buffer), not after the daemons' 10 s command timeout. */
    cq_store_set_command_timeout(o->store, 2);
    atomic_store(&o->redis_ok, true); /* cq_store_open just reached it */
    atomic_store(&o->kafka_ok, true); /* the daemon reached it at start */
    cq_metric_child_set(o->ready, 1);
    *out = o;
    return 0;
fail:
    cq_obs_destroy(o);
    return -1;
}

struct cq_metrics *cq_obs_metrics(struct cq_obs *o)
{
    return o != NULL ? o->m : NULL;
}

const struct cq_obs_counters *cq_obs_counters(struct cq_obs *o)
{
    return &o->counters;
}

/* The group's lag on each partition of the topic: its end (high watermark) less the
 * offset the group committed (or the partition's start, before any commit). Read from
 * the group's commits, not from this consumer's assignment, so that a consumer that
 * lost its partitions while it was stopped (SIGSTOP, a long pause) still shows them.
 * Returns false when the broker could not be asked. */
static bool poll_lag(struct cq_obs *o)
{
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(o->consumer, o->topic, NULL);
    if (rkt == NULL)
        return false;
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t e = rd_kafka_metadata(o->consumer, 0, rkt, &md, ASK_MS);
    rd_kafka_topic_destroy(rkt);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
        return false;
    int n = md->topic_cnt == 1 && md->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR
                ? md->topics[0].partition_cnt
                : 0;
    bool up = md->broker_cnt > 0;
    rd_kafka_metadata_destroy(md);
    if (n <= 0)
        return up;
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(n);
    for (int p = 0; p < n; p++)
        rd_kafka_topic_partition_list_add(parts, o->topic, p);
    if (rd_kafka_committed(o->consumer, parts, ASK_MS) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        rd_kafka_topic_partition_list_destroy(parts);
        return up;
    }
    for (int i = 0; i < parts->cnt; i++) {
        int64_t low, high;
        const rd_kafka_topic_partition_t *tp = &parts->elems[i];
        if (rd_kafka_query_watermark_offsets(o->consumer, o->topic, tp->partition, &low, &high,
                                             ASK_MS) != RD_KAFKA_RESP_ERR_NO_ERROR)
            continue;
        int64_t at = tp->err == RD_KAFKA_RESP_ERR_NO_ERROR && tp->offset >= 0 ? tp->offset : low;
        char partition[16];
        snprintf(partition, sizeof(partition), "%d", tp->partition);
        cq_metric_set(o->lag, (const char *const[]){o->topic, partition},
                      (double)(high > at ? high - at : 0));
    }
    rd_kafka_topic_partition_list_destroy(parts);
    return true;
}

static void *poller(void *arg)
{
    struct cq_obs *o = arg;
    pthread_mutex_lock(&o->lock);
    while (!o->quit) {
        pthread_mutex_unlock(&o->lock);
        bool kafka = poll_lag(o);
        struct cq_error err;
        bool redis = cq_store_ping(o->store, &err) == 0;
        if (redis != atomic_load(&o->redis_ok) || kafka != atomic_load(&o->kafka_ok))
            cq_log_event(redis && kafka ? CQ_LOG_INFO : CQ_LOG_WARN, "readiness_changed",
                         CQ_FIELDS(CQ_LB("kafka_reachable", kafka), CQ_LB("redis_reachable", redis),
                                   CQ_LS("error", redis ? NULL : err.msg)),
                         "readiness: Kafka %s, Redis %s%s%s", kafka ? "reachable" : "unreachable",
                         redis ? "reachable" : "unreachable", redis ? "" : ": ",
                         redis ? "" : err.msg);
        atomic_store(&o->kafka_ok, kafka);
        atomic_store(&o->redis_ok, redis);
        if (redis && o->oc.tick != NULL)
            o->oc.tick(o->oc.ctx, o->store);
        char why[256];
        cq_obs_ready(o, why, sizeof(why)); /* codeq_ready follows without a probe */
        pthread_mutex_lock(&o->lock);
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += POLL_MS / 1000;
        while (!o->quit &&
               pthread_cond_clockwait(&o->cond, &o->lock, CLOCK_MONOTONIC, &until) != ETIMEDOUT)
            ;
    }
    pthread_mutex_unlock(&o->lock);
    return NULL;
}

int cq_obs_watch(struct cq_obs *o, rd_kafka_t *consumer, const char *topic, struct cq_error *err)
{
    if (o == NULL || o->started)
        return 0;
    o->consumer = consumer;
    snprintf(o->topic, sizeof(o->topic), "%s", topic);
    if (pthread_create(&o->thread, NULL, poller, o) != 0)
        return cq_error_set(err, CQ_EINTERNAL, "cannot start the metrics poller thread");
    o->started = true;
    return 0;
}

int cq_obs_ready(void *obs, char *why, size_t why_size)
{
    struct cq_obs *o = obs;
    int ready = 0;
    if (o->oc.stopping != NULL && atomic_load(o->oc.stopping))
        snprintf(why, why_size, "draining: the daemon is stopping");
    else if (!atomic_load(&o->kafka_ok))
        snprintf(why, why_size, "Kafka unreachable: no broker answers");
    else if (!atomic_load(&o->redis_ok))
        snprintf(why, why_size, "Redis unreachable: PING failed");
    else
        ready = o->oc.ready != NULL ? o->oc.ready(o->oc.ctx, why, why_size) : 1;
    cq_metric_child_set(o->ready, ready);
    return ready;
}

void cq_obs_stop(struct cq_obs *o)
{
    if (o == NULL || !o->started)
        return;
    pthread_mutex_lock(&o->lock);
    o->quit = true;
    pthread_cond_signal(&o->cond);
    pthread_mutex_unlock(&o->lock);
    pthread_join(o->thread, NULL);
    o->started = false;
}

void cq_obs_destroy(struct cq_obs *o)
{
    if (o == NULL)
        return;
    cq_obs_stop(o);
    /* Produce metrics point here: whatever the producer reports after this (its close)
     * goes nowhere. */
    cq_kafka_set_metrics(NULL, NULL);
    cq_tracing_set_metrics(NULL, NULL); /* the exporter outlives the registry */
    cq_store_close(o->store);
    cq_metrics_destroy(o->m);
    pthread_mutex_destroy(&o->lock);
    pthread_cond_destroy(&o->cond);
    free(o);
}
