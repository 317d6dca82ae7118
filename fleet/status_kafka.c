/* fleet/status_kafka.c - the Kafka side of fleet/status.h: the request topic's backlog
 * (the dispatchers' committed offsets against the high watermarks) and the dead-letter
 * topic's messages and latest reasons.
 *
 * One consumer handle does both, configured never to commit: it carries the
 * dispatchers' group.id only to read that group's committed offsets, joins no group
 * (it assigns partitions, never subscribes) and is destroyed without a consumer close.
 * Every call gets what is left of one deadline, so an unreachable broker costs the
 * status timeout_ms, not librdkafka's own minutes of retries. */
#define _GNU_SOURCE
#include "fleet/status.h"
#include "common/clock.h"
#include "fleet/kafka.h"

#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct kctx {
    rd_kafka_t *rk;
    int64_t deadline; /* monotonic ms */
    char last_error[256];
};

static int left(const struct kctx *k)
{
    int64_t ms = k->deadline - (int64_t)cq_now_ms();
    return ms > 0 ? (int)ms : 0;
}

/* librdkafka logs every failed connection on stderr: the status says it once, with the
 * last reason, instead. */
static void quiet_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    (void)level;
    (void)fac;
    (void)buf;
}

static void on_error(rd_kafka_t *rk, int code, const char *reason, void *opaque)
{
    (void)rk;
    (void)code;
    struct kctx *k = opaque;
    snprintf(k->last_error, sizeof(k->last_error), "%s", reason);
}

static int set(rd_kafka_conf_t *conf, const char *name, const char *value, struct cq_error *err)
{
    char why[256];
    if (rd_kafka_conf_set(conf, name, value, why, sizeof(why)) != RD_KAFKA_CONF_OK)
        return cq_error_set(err, CQ_EINVALID, "kafka setting %s=%s: %s", name, value, why);
    return 0;
}

static int open_client(const struct cq_fleet_config *cfg, const char *group, struct kctx *k,
                       struct cq_error *err)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (set(conf, "bootstrap.servers", cfg->brokers, err) < 0 ||
        set(conf, "group.id", group, err) < 0 ||
        set(conf, "enable.auto.commit", "false", err) < 0 ||
        set(conf, "enable.auto.offset.store", "false", err) < 0 ||
        set(conf, "allow.auto.create.topics", "false", err) < 0 ||
        set(conf, "enable.partition.eof", "false", err) < 0 ||
        set(conf, "reconnect.backoff.max.ms", "500", err) < 0 ||
        cq_fleet_kafka_conf(cfg, conf, err) < 0) {
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    rd_kafka_conf_set_log_cb(conf, quiet_log);
    rd_kafka_conf_set_error_cb(conf, on_error);
    rd_kafka_conf_set_opaque(conf, k);
    char why[512];
    k->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, why, sizeof(why));
    if (k->rk == NULL) {
        rd_kafka_conf_destroy(conf);
        return cq_error_set(err, CQ_EINVALID, "create kafka client: %s", why);
    }
    rd_kafka_poll_set_consumer(k->rk);
    return 0;
}

static int unreachable(const struct cq_fleet_config *cfg, const struct kctx *k, int timeout_ms,
                       const char *what, rd_kafka_resp_err_t e, struct cq_error *err)
{
    return cq_error_set(err, CQ_ETIMEOUT, "cannot reach Kafka at %s within %d s (%s: %s)%s%s",
                        cfg->brokers, (timeout_ms + 999) / 1000, what, rd_kafka_err2str(e),
                        k->last_error[0] ? "; last error: " : "", k->last_error);
}

/* The partition count of topic; 0 when the broker does not have it. */
static int partitions_of(const struct cq_fleet_config *cfg, struct kctx *k, const char *topic,
                         int timeout_ms, int *n, struct cq_error *err)
{
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(k->rk, topic, NULL);
    if (rkt == NULL)
        return cq_error_set(err, CQ_EINTERNAL, "topic %s: %s", topic,
                            rd_kafka_err2str(rd_kafka_last_error()));
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t e = rd_kafka_metadata(k->rk, 0, rkt, &md, left(k));
    rd_kafka_topic_destroy(rkt);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
        return unreachable(cfg, k, timeout_ms, "metadata", e, err);
    *n = 0;
    if (md->topic_cnt == 1 && md->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR)
        *n = md->topics[0].partition_cnt;
    else if (md->topic_cnt == 1 && md->topics[0].err != RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) {
        e = md->topics[0].err;
        rd_kafka_metadata_destroy(md);
        return cq_error_set(err, CQ_EINTERNAL, "topic %s: %s", topic, rd_kafka_err2str(e));
    }
    rd_kafka_metadata_destroy(md);
    return 0;
}

static int watermarks(const struct cq_fleet_config *cfg, struct kctx *k, const char *topic,
                      int32_t p, int timeout_ms, int64_t *low, int64_t *high, struct cq_error *err)
{
    rd_kafka_resp_err_t e = rd_kafka_query_watermark_offsets(k->rk, topic, p, low, high, left(k));
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
        return unreachable(cfg, k, timeout_ms, "watermarks", e, err);
    return 0;
}

static int request_lag(const struct cq_fleet_config *cfg, struct kctx *k, int timeout_ms,
                       struct cq_fleet_status *s, struct cq_error *err)
{
    int n;
    if (partitions_of(cfg, k, cfg->request_topic, timeout_ms, &n, err) < 0)
        return -1;
    if (n == 0)
        return 0;
    s->partitions = calloc((size_t)n, sizeof(*s->partitions));
    if (s->partitions == NULL)
        return cq_error_sys(err, ENOMEM, "allocate the status");
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(n);
    for (int32_t p = 0; p < n; p++)
        rd_kafka_topic_partition_list_add(list, cfg->request_topic, p);
    /* The group's committed offsets (OffsetFetch), nothing joined. */
    rd_kafka_resp_err_t e = rd_kafka_committed(k->rk, list, left(k));
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
        rd_kafka_topic_partition_list_destroy(list);
        return unreachable(cfg, k, timeout_ms, "committed offsets", e, err);
    }
    int rc = 0;
    for (int32_t p = 0; p < n && rc == 0; p++) {
        struct cq_status_partition *sp = &s->partitions[s->n_partitions++];
        sp->partition = p;
        rc = watermarks(cfg, k, cfg->request_topic, p, timeout_ms, &sp->low, &sp->high, err);
        const rd_kafka_topic_partition_t *c = &list->elems[p];
        sp->committed = c->err == RD_KAFKA_RESP_ERR_NO_ERROR && c->offset >= 0 ? c->offset : -1;
        /* Without a commit the group starts from the earliest message still kept
         * (auto.offset.reset = earliest): all of them are its backlog. A commit below
         * the low watermark (retention deleted what nobody read) counts from there. */
        int64_t from = sp->committed >= sp->low ? sp->committed : sp->low;
        sp->lag = sp->high > from ? sp->high - from : 0;
        s->lag += sp->lag;
    }
    rd_kafka_topic_partition_list_destroy(list);
    return rc;
}

static int by_newest(const void *a, const void *b)
{
    const struct cq_status_dead_letter *x = a, *y = b;
    if (x->timestamp_ms != y->timestamp_ms)
        return x->timestamp_ms < y->timestamp_ms ? 1 : -1;
    return x->offset < y->offset ? 1 : x->offset > y->offset ? -1 : 0;
}

/* The reasons of the newest few dead letters, from their headers. Best effort: what
 * arrives before the deadline is shown. */
static void recent_dead(const struct cq_fleet_config *cfg, struct kctx *k, int n,
                        const int64_t *low, const int64_t *high, struct cq_fleet_status *s)
{
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(n);
    int64_t wanted = 0;
    for (int32_t p = 0; p < n; p++) {
        int64_t from = high[p] - CQ_STATUS_RECENT_DEAD;
        if (from < low[p])
            from = low[p];
        if (from >= high[p])
            continue;
        rd_kafka_topic_partition_list_add(list, cfg->dlq_topic, p)->offset = from;
        wanted += high[p] - from;
    }
    struct cq_status_dead_letter got[64];
    size_t n_got = 0;
    if (list->cnt > 0 && rd_kafka_assign(k->rk, list) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        while (wanted > 0 && left(k) > 0) {
            rd_kafka_message_t *m = rd_kafka_consumer_poll(k->rk, left(k) < 100 ? left(k) : 100);
            if (m == NULL)
                continue;
            if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR && m->offset < high[m->partition]) {
                wanted--;
                if (n_got < sizeof(got) / sizeof(got[0])) {
                    struct cq_status_dead_letter *d = &got[n_got++];
                    d->partition = m->partition;
                    d->offset = m->offset;
                    d->timestamp_ms = rd_kafka_message_timestamp(m, NULL);
                    if (cq_kafka_header(m, "codeq-dlq-reason", d->reason, sizeof(d->reason)) ==
                        NULL)
                        d->reason[0] = '\0';
                }
            }
            rd_kafka_message_destroy(m);
        }
        rd_kafka_assign(k->rk, NULL);
    }
    rd_kafka_topic_partition_list_destroy(list);
    qsort(got, n_got, sizeof(got[0]), by_newest);
    for (size_t i = 0; i < n_got && s->n_recent < CQ_STATUS_RECENT_DEAD; i++)
        s->recent[s->n_recent++] = got[i];
}

static int dead_letters(const struct cq_fleet_config *cfg, struct kctx *k, int timeout_ms,
                        struct cq_fleet_status *s, struct cq_error *err)
{
    int n;
    if (partitions_of(cfg, k, cfg->dlq_topic, timeout_ms, &n, err) < 0)
        return -1;
    if (n == 0)
        return 0;
    int64_t *low = calloc((size_t)n, sizeof(*low)), *high = calloc((size_t)n, sizeof(*high));
    int rc = 0;
    if (low == NULL || high == NULL)
        rc = cq_error_sys(err, ENOMEM, "allocate the status");
    for (int32_t p = 0; p < n && rc == 0; p++) {
        rc = watermarks(cfg, k, cfg->dlq_topic, p, timeout_ms, &low[p], &high[p], err);
        s->dead_letters += high[p] - low[p];
    }
    if (rc == 0 && s->dead_letters > 0)
        recent_dead(cfg, k, n, low, high, s);
    free(low);
    free(high);
    return rc;
}

int cq_fleet_status_kafka(const struct cq_fleet_config *cfg, int timeout_ms,
                          struct cq_fleet_status *s, struct cq_error *err)
{
    cq_fleet_dispatcher_group(cfg, s->group, sizeof(s->group));
    struct kctx k = {.deadline = (int64_t)cq_now_ms() + timeout_ms};
    if (open_client(cfg, s->group, &k, err) < 0)
        return -1;
    int rc = request_lag(cfg, &k, timeout_ms, s, err);
    if (rc == 0)
        rc = dead_letters(cfg, &k, timeout_ms, s, err);
    /* No consumer close: it would leave a group this handle never joined. */
    rd_kafka_destroy_flags(k.rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    return rc;
}
