/* fleet/kafka.c - librdkafka clients set up for a request path measured in
 * milliseconds. librdkafka 2.0.2's defaults favour batching: linger.ms=5 and Nagle on
 * would add their delay to every round trip. fetch.wait.max.ms does not (the broker
 * answers a waiting fetch as soon as a message arrives) but bounds how long a newly
 * assigned partition waits for the fetch in flight: 100 ms, not 500. */
#define _GNU_SOURCE
#include "fleet/kafka.h"
#include "fleet/config.h"
#include "fleet/log.h"
#include "fleet/obs.h"
#include "fleet/trace.h"
#include "codeq.pb-c.h"

#include <ctype.h>

#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static int set(rd_kafka_conf_t *conf, const char *name, const char *value, struct cq_error *err)
{
    char why[256];
    if (rd_kafka_conf_set(conf, name, value, why, sizeof(why)) != RD_KAFKA_CONF_OK)
        return cq_error_set(err, CQ_EINVALID, "kafka setting %s=%s: %s", name, value, why);
    return 0;
}

/* The process's produce metrics (cq_kafka_set_metrics); delivery reports run on
 * whichever thread polls a producer. */
static struct cq_metric *produce_errors;
static struct cq_metric_child *delivery_seconds;

int cq_kafka_set_metrics(struct cq_metrics *m, struct cq_error *err)
{
    static const char *const labels[] = {"reason", NULL};
    struct cq_metric *errors = NULL, *seconds = NULL;
    if (m != NULL) {
        errors = cq_metrics_counter(m, "codeq_kafka_produce_errors_total",
                                    "Messages Kafka did not take, by librdkafka's error name",
                                    labels, err);
        seconds = errors == NULL ? NULL
                                 : cq_metrics_histogram(m, "codeq_kafka_delivery_seconds",
                                                        "From produce to the broker's delivery "
                                                        "report",
                                                        NULL, cq_obs_duration_buckets,
                                                        cq_obs_n_duration_buckets, err);
        if (seconds == NULL)
            return -1;
    }
    __atomic_store_n(&delivery_seconds, seconds != NULL ? cq_metric_child(seconds, NULL) : NULL,
                     __ATOMIC_RELEASE);
    __atomic_store_n(&produce_errors, errors, __ATOMIC_RELEASE);
    return 0;
}

static void count_error(rd_kafka_resp_err_t e)
{
    struct cq_metric *f = __atomic_load_n(&produce_errors, __ATOMIC_ACQUIRE);
    if (f == NULL)
        return;
    char reason[64];
    snprintf(reason, sizeof(reason), "%s", rd_kafka_err2name(e));
    for (char *p = reason; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    cq_metric_add(f, (const char *const[]){reason}, 1);
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque)
{
    (void)rk;
    (void)opaque;
    if (msg->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        count_error(msg->err);
    } else {
        struct cq_metric_child *c = __atomic_load_n(&delivery_seconds, __ATOMIC_ACQUIRE);
        int64_t us = rd_kafka_message_latency(msg);
        if (c != NULL && us >= 0)
            cq_metric_child_observe(c, (double)us / 1e6);
    }
    struct cq_delivery *d = msg->_private;
    if (d == NULL)
        return;
    /* Read first: an embedded tracker may be gone as soon as pending reaches 0. */
    bool shared = __atomic_load_n(&d->refs, __ATOMIC_SEQ_CST) > 0;
    /* Any thread that polls the producer may run this, while the owner of d waits. */
    if (msg->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        d->last_error = msg->err;
        __atomic_add_fetch(&d->failed, 1, __ATOMIC_SEQ_CST);
    }
    __atomic_sub_fetch(&d->pending, 1, __ATOMIC_SEQ_CST);
    if (shared)
        cq_delivery_release(d); /* this message's reference */
}

struct cq_delivery *cq_delivery_new(void)
{
    struct cq_delivery *d = calloc(1, sizeof(*d));
    if (d != NULL)
        d->refs = 1;
    return d;
}

void cq_delivery_release(struct cq_delivery *d)
{
    if (d != NULL && __atomic_sub_fetch(&d->refs, 1, __ATOMIC_SEQ_CST) == 0)
        free(d);
}

static void on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    cq_log_event(level <= 3   ? CQ_LOG_ERROR
                 : level <= 4 ? CQ_LOG_WARN
                              : CQ_LOG_DEBUG,
                 "kafka_log", CQ_FIELDS(CQ_LS("facility", fac), CQ_LI("syslog_level", level)),
                 "kafka %s: %s", fac, buf);
}

/* The last error librdkafka handed to this thread's rd_kafka_poll(). Start-up
 * (cq_kafka_ensure_topic) polls on its own thread and stops at an error that no retry
 * mends: credentials the broker refused, a certificate that is not trusted. Afterwards
 * it only mirrors what librdkafka logs without an error callback. */
static __thread struct {
    rd_kafka_resp_err_t code;
    char reason[384];
} last_error;

static void on_error(rd_kafka_t *rk, int code, const char *reason, void *opaque)
{
    (void)rk;
    (void)opaque;
    last_error.code = code;
    snprintf(last_error.reason, sizeof(last_error.reason), "%s", reason);
    /* The broker going away and coming back (a restart, a network blip) is reported
     * here too, and librdkafka reconnects on its own: worth a warning, not an error. */
    bool transient = code == RD_KAFKA_RESP_ERR__TRANSPORT ||
                     code == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN ||
                     code == RD_KAFKA_RESP_ERR__RESOLVE || code == RD_KAFKA_RESP_ERR__TIMED_OUT;
    cq_log_event(transient ? CQ_LOG_WARN : CQ_LOG_ERROR, "kafka_error",
                 CQ_FIELDS(CQ_LS("code", rd_kafka_err2name(code)), CQ_LS("error", reason)),
                 "kafka: %s", reason);
}

static rd_kafka_conf_t *common_conf(const struct cq_fleet_config *cfg, struct cq_error *err)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    /* A reply or request may carry a 100 MB file (AgentCore's payload limit): a fetch
     * response must be allowed to hold one. */
    if (set(conf, "bootstrap.servers", cfg->brokers, err) < 0 ||
        set(conf, "socket.nagle.disable", "true", err) < 0 ||
        set(conf, "receive.message.max.bytes", "262144000", err) < 0 ||
        set(conf, "reconnect.backoff.max.ms", "1000", err) < 0 ||
        cq_fleet_kafka_conf(cfg, conf, err) < 0) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_conf_set_log_cb(conf, on_log);
    rd_kafka_conf_set_error_cb(conf, on_error);
    return conf;
}

int cq_kafka_producer(const struct cq_fleet_config *cfg, rd_kafka_t **out, struct cq_error *err)
{
    *out = NULL;
    rd_kafka_conf_t *conf = common_conf(cfg, err);
    if (conf == NULL)
        return -1;
    /* murmur2_random: the partition of a key as Java clients compute it, so that a
     * session's requests share a partition whoever produced them. */
    char max_message[24];
    uint64_t max = cfg->claim_threshold + CQ_KAFKA_ENVELOPE_BYTES;
    snprintf(max_message, sizeof(max_message), "%llu",
             (unsigned long long)(max > CQ_KAFKA_MIN_MESSAGE ? max : CQ_KAFKA_MIN_MESSAGE));
    /* One produce request in flight per broker: librdkafka 2.0.2's idempotent producer
     * reports a message delivered that was never written when, on a partition it has
     * not written before (a topic just made, a partition that just moved), its first
     * batch is refused with NOT_LEADER_OR_FOLLOWER while a later batch already in
     * flight is taken (a broker takes a producer's first batch at any sequence): the
     * later batch's acknowledgement settles the earlier one too. Found as a lost
     * startSession (tests/fleet/test_fresh_topic.py; docs/fleet.md, "Delivery"). */
    if (set(conf, "linger.ms", "0", err) < 0 || set(conf, "enable.idempotence", "true", err) < 0 ||
        set(conf, "max.in.flight.requests.per.connection", "1", err) < 0 ||
        set(conf, "partitioner", "murmur2_random", err) < 0 ||
        set(conf, "message.timeout.ms", "30000", err) < 0 ||
        set(conf, "message.max.bytes", max_message, err) < 0 ||
        set(conf, "topic.metadata.propagation.max.ms", CQ_KAFKA_TOPIC_PROPAGATION_MS, err) < 0) {
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    char why[512];
    *out = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof(why));
    if (*out == NULL) {
        rd_kafka_conf_destroy(conf); /* rd_kafka_new takes it only when it succeeds */
        return cq_error_set(err, CQ_EINVALID, "create kafka producer: %s", why);
    }
    return 0;
}

/* A consumer that fetches as soon as anything arrives. Takes conf. */
static int new_consumer(rd_kafka_conf_t *conf, const char *group, rd_kafka_t **out,
                        struct cq_error *err)
{
    *out = NULL;
    if (set(conf, "group.id", group, err) < 0 || set(conf, "fetch.wait.max.ms", "100", err) < 0 ||
        set(conf, "fetch.error.backoff.ms", "50", err) < 0) {
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    char why[512];
    *out = rd_kafka_new(RD_KAFKA_CONSUMER, conf, why, sizeof(why));
    if (*out == NULL) {
        rd_kafka_conf_destroy(conf); /* rd_kafka_new takes it only when it succeeds */
        return cq_error_set(err, CQ_EINVALID, "create kafka consumer: %s", why);
    }
    rd_kafka_poll_set_consumer(*out);
    return 0;
}

int cq_kafka_consumer(const struct cq_fleet_config *cfg, const char *group, const char *topic,
                      rd_kafka_t **out, struct cq_error *err)
{
    *out = NULL;
    rd_kafka_conf_t *conf = common_conf(cfg, err);
    if (conf == NULL)
        return -1;
    /* The range assignor: 2.0.2's cooperative-sticky has a known infinite loop.
     * Offsets are stored by the caller once the work a message started is safe
     * (forwarded, or queued behind a claim in Redis) and committed from librdkafka's
     * background every 200 ms, and when partitions are revoked or the consumer closes:
     * a synchronous commit per message was one more broker request in each request's
     * path, competing with it for the broker on a small host. */
    if (set(conf, "auto.offset.reset", "earliest", err) < 0 ||
        set(conf, "enable.auto.commit", "true", err) < 0 ||
        set(conf, "enable.auto.offset.store", "false", err) < 0 ||
        set(conf, "auto.commit.interval.ms", "200", err) < 0 ||
        set(conf, "partition.assignment.strategy", "range", err) < 0 ||
        set(conf, "session.timeout.ms", "6000", err) < 0 ||
        set(conf, "heartbeat.interval.ms", "500", err) < 0 ||
        set(conf, "topic.metadata.refresh.interval.ms", "5000", err) < 0 ||
        set(conf, "allow.auto.create.topics", "false", err) < 0) {
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    rd_kafka_t *rk;
    if (new_consumer(conf, group, &rk, err) < 0)
        return -1;
    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t e = rd_kafka_subscribe(rk, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
        rd_kafka_destroy(rk);
        return cq_error_set(err, CQ_EINVALID, "subscribe to %s: %s", topic, rd_kafka_err2str(e));
    }
    *out = rk;
    return 0;
}

/* librdkafka 2.0.2 learns a topic's partitions lazily: the first message to a topic
 * this client has not used yet waits for its next metadata refresh, about a second,
 * and every new client's reply topic is such a topic. Asking for the topic's metadata
 * directly costs one round trip of a millisecond or two. Topics already asked about
 * are remembered by hash in a small table; a collision only costs another request. */
static void learn_topic(rd_kafka_t *rk, const char *topic)
{
    static uint64_t known[4096];
    uint64_t h = 1469598103934665603ULL ^ (uint64_t)(uintptr_t)rk;
    for (const char *p = topic; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    uint64_t *slot = &known[h % 4096];
    if (__atomic_load_n(slot, __ATOMIC_RELAXED) == h)
        return;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    if (rkt == NULL)
        return;
    const struct rd_kafka_metadata *md = NULL;
    if (rd_kafka_metadata(rk, 0, rkt, &md, 2000) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        bool ready = md->topic_cnt == 1 && md->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR;
        rd_kafka_metadata_destroy(md);
        if (ready)
            __atomic_store_n(slot, h, __ATOMIC_RELAXED);
    }
    rd_kafka_topic_destroy(rkt);
}

int cq_kafka_reader(const struct cq_fleet_config *cfg, const char *topic, rd_kafka_t **out,
                    struct cq_error *err)
{
    *out = NULL;
    rd_kafka_conf_t *conf = common_conf(cfg, err);
    if (conf == NULL)
        return -1;
    /* No group is joined (partitions are assigned, not subscribed): a reply topic has
     * one reader, and a rebalance would only delay the first reply by seconds. group.id
     * is still required by librdkafka's consumer, but nothing is committed to it: the
     * topic is read from its start and deleted at close, so offsets would serve no one,
     * and committing them needs an ACL on the group, whose absence made every close
     * wait 45 s for a coordinator (docs/fleet.md, "Kafka security"). */
    if (set(conf, "enable.auto.commit", "false", err) < 0) {
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    rd_kafka_t *rk;
    if (new_consumer(conf, topic, &rk, err) < 0)
        return -1;
    learn_topic(rk, topic); /* or the first fetch waits for a refresh too */
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(parts, topic, 0)->offset = RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_resp_err_t e = rd_kafka_assign(rk, parts);
    rd_kafka_topic_partition_list_destroy(parts);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
        rd_kafka_destroy(rk);
        return cq_error_set(err, CQ_EINVALID, "read %s: %s", topic, rd_kafka_err2str(e));
    }
    *out = rk;
    return 0;
}

int cq_kafka_delete_topic(rd_kafka_t *rk, const char *topic, struct cq_error *err)
{
    rd_kafka_DeleteTopic_t *t = rd_kafka_DeleteTopic_new(topic);
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_DeleteTopics(rk, &t, 1, NULL, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 10000);
    int rc = 0;
    if (ev == NULL)
        rc = cq_error_set(err, CQ_ETIMEOUT, "delete topic %s: no answer in 10 s", topic);
    else if (rd_kafka_event_error(ev) != RD_KAFKA_RESP_ERR_NO_ERROR)
        rc = cq_error_set(err, CQ_EINTERNAL, "delete topic %s: %s", topic,
                          rd_kafka_event_error_string(ev));
    if (ev != NULL)
        rd_kafka_event_destroy(ev);
    rd_kafka_queue_destroy(q);
    rd_kafka_DeleteTopic_destroy(t);
    return rc;
}

int cq_kafka_send(rd_kafka_t *producer, const char *topic, const char *key, const void *value,
                  size_t len, const struct cq_header *headers, size_t n_headers,
                  struct cq_delivery *delivery, struct cq_error *err)
{
    rd_kafka_headers_t *hdrs = rd_kafka_headers_new(n_headers);
    for (size_t i = 0; i < n_headers; i++)
        rd_kafka_header_add(hdrs, headers[i].name, -1, headers[i].value, -1);
    learn_topic(producer, topic);
    bool counted = delivery != NULL && __atomic_load_n(&delivery->refs, __ATOMIC_SEQ_CST) > 0;
    if (counted)
        __atomic_add_fetch(&delivery->refs, 1, __ATOMIC_SEQ_CST);
    if (delivery != NULL)
        __atomic_add_fetch(&delivery->pending, 1, __ATOMIC_SEQ_CST);
    rd_kafka_resp_err_t e;
    size_t key_len = key != NULL ? strlen(key) : 0;
    for (;;) {
        e = rd_kafka_producev(producer, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, key_len),
                              RD_KAFKA_V_VALUE((void *)value, len),
                              RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(hdrs),
                              RD_KAFKA_V_OPAQUE(delivery), RD_KAFKA_V_END);
        if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL)
            break;
        rd_kafka_poll(producer, 10); /* wait for room: back-pressure, not an error */
    }
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
        count_error(e);
        rd_kafka_headers_destroy(hdrs); /* not owned by librdkafka after a failure */
        if (delivery != NULL)
            __atomic_sub_fetch(&delivery->pending, 1, __ATOMIC_SEQ_CST);
        if (counted)
            cq_delivery_release(delivery);
        /* CQ_ELIMIT: a limit the message is over (the caller may tell its sender). */
        return cq_error_set(err,
                            e == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE ? CQ_ELIMIT : CQ_EINTERNAL,
                            "produce to %s: %s", topic, rd_kafka_err2str(e));
    }
    return 0;
}

int cq_kafka_wait(rd_kafka_t *producer, struct cq_delivery *d, int timeout_ms, struct cq_error *err)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    int64_t until = (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000 + timeout_ms;
    while (__atomic_load_n(&d->pending, __ATOMIC_SEQ_CST) > 0) {
        clock_gettime(CLOCK_MONOTONIC, &t);
        if ((int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000 >= until)
            break;
        rd_kafka_poll(producer, 5);
    }
    int pending = __atomic_load_n(&d->pending, __ATOMIC_SEQ_CST);
    if (pending > 0)
        return cq_error_set(err, CQ_ETIMEOUT, "%d messages not acknowledged within %d ms", pending,
                            timeout_ms);
    if (__atomic_load_n(&d->failed, __ATOMIC_SEQ_CST) > 0)
        return cq_error_set(err, CQ_EINTERNAL, "%d messages failed: %s", d->failed,
                            rd_kafka_err2str(d->last_error));
    return 0;
}

bool cq_kafka_refused(rd_kafka_resp_err_t e)
{
    switch (e) {
    case RD_KAFKA_RESP_ERR_NO_ERROR:
    /* The broker did not answer (down, unreachable, too slow): the message itself may
     * be fine. */
    case RD_KAFKA_RESP_ERR__MSG_TIMED_OUT:
    case RD_KAFKA_RESP_ERR__TIMED_OUT:
    case RD_KAFKA_RESP_ERR__TIMED_OUT_QUEUE:
    case RD_KAFKA_RESP_ERR__TRANSPORT:
    case RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN:
    case RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT:
    case RD_KAFKA_RESP_ERR_NETWORK_EXCEPTION:
    case RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS:
    case RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND:
    /* The producer gave up on it (purged, or unusable): this process's fault. */
    case RD_KAFKA_RESP_ERR__PURGE_QUEUE:
    case RD_KAFKA_RESP_ERR__PURGE_INFLIGHT:
    case RD_KAFKA_RESP_ERR__FATAL:
    case RD_KAFKA_RESP_ERR__DESTROY:
        return false;
    default:
        /* Too large, topic missing, not authorized, an invalid record: sent again,
         * the same message meets the same answer. */
        return true;
    }
}

const char *cq_kafka_header(rd_kafka_message_t *msg, const char *name, char *buf, size_t len)
{
    rd_kafka_headers_t *hdrs = NULL;
    if (rd_kafka_message_headers(msg, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return NULL;
    const void *value;
    size_t size;
    if (rd_kafka_header_get_last(hdrs, name, &value, &size) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        value == NULL || size >= len)
        return NULL;
    memcpy(buf, value, size);
    buf[size] = '\0';
    return buf;
}

int cq_fleet_publish(rd_kafka_t *producer, const Codeq__V1__Request *req, const char *kind,
                     const uint8_t *bytes, size_t len, struct cq_delivery *delivery,
                     const struct cq_trace *trace, struct cq_error *err)
{
    struct cq_header headers[6] = {
        {"request_id", req->request_id},
        {"session_id", req->session_id},
        {"codeq-kind", kind},
    };
    size_t n = 3;
    if (trace != NULL) {
        /* The stamps come back once, on the final reply; the trace context on every one. */
        if (strcmp(kind, "final") == 0)
            n += cq_trace_header(trace, &headers[n]);
        n += cq_trace_w3c_headers(trace, &headers[n]);
    }
    return cq_kafka_send(producer, req->reply_topic, req->request_id, bytes, len, headers, n,
                         delivery, err);
}

/* True when the broker describes topic to this client (it exists, and Describe, which
 * Read or Write imply, is allowed). */
static bool topic_exists(rd_kafka_t *rk, const char *topic)
{
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    if (rkt == NULL)
        return false;
    const struct rd_kafka_metadata *md = NULL;
    bool exists = false;
    if (rd_kafka_metadata(rk, 0, rkt, &md, 5000) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        exists = md->topic_cnt == 1 && md->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR &&
                 md->topics[0].partition_cnt > 0;
        rd_kafka_metadata_destroy(md);
    }
    rd_kafka_topic_destroy(rkt);
    return exists;
}

int cq_kafka_ensure_topic(rd_kafka_t *rk, const char *topic, int partitions, struct cq_error *err)
{
    /* Without this, a consumer subscribed to a topic nobody has produced to yet waits
     * for a metadata refresh after the first message: seconds on a first request. */
    char why[256];
    rd_kafka_NewTopic_t *t = rd_kafka_NewTopic_new(topic, partitions, 1, why, sizeof(why));
    if (t == NULL)
        return cq_error_set(err, CQ_EINVALID, "topic %s: %s", topic, why);
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_CreateTopics(rk, &t, 1, NULL, q);
    /* The first request of every daemon and client: where a broker that cannot be
     * reached, or that refuses these credentials, must end start-up with a reason. The
     * errors come through rd_kafka_poll() (on_error), between slices of the wait. */
    last_error.code = RD_KAFKA_RESP_ERR_NO_ERROR;
    rd_kafka_event_t *ev = NULL;
    bool refused = false;
    for (int waited = 0; ev == NULL && !refused && waited < 15000; waited += 100) {
        ev = rd_kafka_queue_poll(q, 100);
        rd_kafka_poll(rk, 0);
        refused = last_error.code == RD_KAFKA_RESP_ERR__AUTHENTICATION ||
                  last_error.code == RD_KAFKA_RESP_ERR__SSL ||
                  last_error.code == RD_KAFKA_RESP_ERR_SASL_AUTHENTICATION_FAILED;
    }
    int rc = 0;
    if (refused) {
        /* librdkafka before 2.6.1 repeats the client nonce in its SCRAM proof, which
         * Kafka 4.x refuses (librdkafka#4895) as "invalid credentials": without this,
         * users would look for a wrong password. */
        bool old_scram = rd_kafka_version() < 0x020601ff && strstr(last_error.reason, "SCRAM");
        rc = cq_error_set(err, CQ_EINVALID,
                          "Kafka refused the connection (check the Kafka security settings, "
                          "kafka.* or CODEQ_KAFKA_*): %s%s%s%s",
                          last_error.reason, old_scram ? " (librdkafka " : "",
                          old_scram ? rd_kafka_version_str() : "",
                          old_scram ? " cannot log in to Kafka 4.x with SCRAM, fixed in 2.6.1: "
                                      "use kafka.sasl.mechanism=PLAIN over SASL_SSL there)"
                                    : "");
    } else if (ev == NULL) {
        rc = cq_error_set(err, CQ_ETIMEOUT,
                          "cannot reach Kafka (no answer in 15 s to creating topic %s); check "
                          "the brokers setting%s%s",
                          topic, last_error.code ? "; last error: " : "",
                          last_error.code ? last_error.reason : "");
    } else {
        const rd_kafka_CreateTopics_result_t *res = rd_kafka_event_CreateTopics_result(ev);
        size_t n = 0;
        const rd_kafka_topic_result_t **results =
            res != NULL ? rd_kafka_CreateTopics_result_topics(res, &n) : NULL;
        rd_kafka_resp_err_t e = rd_kafka_event_error(ev);
        if (e == RD_KAFKA_RESP_ERR_NO_ERROR && n == 1)
            e = rd_kafka_topic_result_error(results[0]);
        /* A principal without Create on a topic is refused even when the topic exists
         * (Kafka checks the ACL first): an operator who made the fleet's topics need
         * not grant Create, so one this client can see is as good as made. */
        if (e == RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED && topic_exists(rk, topic)) {
            cq_log_event(CQ_LOG_INFO, "topic_exists", CQ_FIELDS(CQ_LS("topic", topic)),
                         "topic %s exists (this principal may not create it)", topic);
            e = RD_KAFKA_RESP_ERR_NO_ERROR;
        }
        if (e != RD_KAFKA_RESP_ERR_NO_ERROR && e != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS)
            rc = cq_error_set(err, CQ_EINTERNAL, "create topic %s: %s", topic, rd_kafka_err2str(e));
        rd_kafka_event_destroy(ev);
    }
    rd_kafka_queue_destroy(q);
    rd_kafka_NewTopic_destroy(t);
    return rc;
}
