/* fleet/client.c - see client.h.
 *
 * Replies come back on a topic of this client's own (one partition, deleted at
 * close), read outside any consumer group, so the first call does not wait for a
 * group rebalance. The calls waiting for replies read the topic themselves, one at a
 * time: the reader hands each reply to the call waiting for its request id, and when
 * its own final reply came, passes the reading on to another waiting call. A reply
 * that reaches its own caller therefore wakes no other thread: a dedicated reader
 * thread, as this client once had, put a thread wake-up in every reply's path
 * (docs/performance.md, "Where the figures of code comments went", has its cost).
 * Replies nobody waits for (a duplicate, or a call that gave up) are dropped.
 *
 * Requests and replies too large for one Kafka message go through Redis (fleet/claim.h):
 * the client connects to Redis (CODEQ_REDIS, CODEQ_REDIS_PREFIX, CODEQ_CLAIM_THRESHOLD,
 * or a CODEQ_CONFIG file: the daemons' settings) the first time it needs to, so a
 * client that never sends or gets a large payload needs no Redis at all. */
#define _GNU_SOURCE
#include "fleet/client.h"
#include "fleet/auth.h"
#include "fleet/claim.h"
#include "fleet/keys.h"
#include "fleet/config.h"
#include "fleet/store.h"
#include "fleet/kafka.h"
#include "fleet/trace.h"
#include "common/clock.h"
#include "common/random.h"
#include "common/units.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A call waiting for its replies. Lives on the caller's stack, in the client's list
 * while it waits; the call reading the reply topic (deliver()) touches it only with
 * the client's lock held. */
struct waiter {
    struct waiter *next;
    const char *request_id;
    cq_fleet_chunk_fn on_chunk;
    void *ctx;
    uint64_t next_sequence; /* chunks before it were seen already */
    Codeq__V1__Response *final;
    struct cq_trace *trace; /* the caller's, filled from the final reply; or NULL */
};

struct cq_fleet_client {
    rd_kafka_t *producer;
    rd_kafka_t *reader;
    char request_topic[200];
    char reply_topic[128];
    struct cq_credentials cred; /* signs every request when cred.key_id is set */
    pthread_mutex_t lock;
    pthread_cond_t replied; /* a final reply came, or the reading is free */
    bool reading;           /* a call reads the reply topic */
    struct waiter *waiters;
    struct cq_fleet_config cfg; /* redis, redis_prefix, claim_threshold */
    pthread_mutex_t store_lock;
    struct cq_store *store; /* opened at the first large payload */
};

/* The store for claims, connected on first use. */
static struct cq_store *claim_store(struct cq_fleet_client *c, struct cq_error *err)
{
    pthread_mutex_lock(&c->store_lock);
    if (c->store == NULL && cq_store_open(&c->cfg, &c->store, err) < 0)
        cq_error_prefix(err, "a payload too large for Kafka goes through Redis (set CODEQ_REDIS)");
    struct cq_store *st = c->store;
    pthread_mutex_unlock(&c->store_lock);
    return st;
}

static struct waiter *find_waiter(struct cq_fleet_client *c, const char *request_id)
{
    for (struct waiter *w = c->waiters; w != NULL; w = w->next)
        if (strcmp(w->request_id, request_id) == 0)
            return w;
    return NULL;
}

static void remove_waiter(struct cq_fleet_client *c, struct waiter *target)
{
    for (struct waiter **p = &c->waiters; *p != NULL; p = &(*p)->next)
        if (*p == target) {
            *p = target->next;
            return;
        }
}

/* Takes resp. The chunk callback runs with the lock held, so that the call it belongs
 * to cannot give up and leave while its callback runs. */
static void deliver(struct cq_fleet_client *c, Codeq__V1__Response *resp,
                    const struct cq_trace *trace)
{
    pthread_mutex_lock(&c->lock);
    struct waiter *w = find_waiter(c, resp->request_id);
    if (w != NULL && resp->payload_case == CODEQ__V1__RESPONSE__PAYLOAD_CHUNK) {
        const Codeq__V1__OutputChunk *chunk = resp->chunk;
        /* A chunk seen again (the fleet repeats output after a restart) is skipped. */
        if (chunk->sequence >= w->next_sequence) {
            w->next_sequence = chunk->sequence + 1;
            if (w->on_chunk != NULL)
                w->on_chunk(w->ctx, chunk);
        }
    } else if (w != NULL && w->final == NULL) {
        __atomic_store_n(&w->final, resp, __ATOMIC_RELEASE); /* read_replies() looks */
        resp = NULL;
        if (w->trace != NULL && trace->on)
            *w->trace = *trace;
        pthread_cond_broadcast(&c->replied);
    }
    pthread_mutex_unlock(&c->lock);
    if (resp != NULL)
        codeq__v1__response__free_unpacked(resp, NULL);
}

/* Reads the reply topic for up to timeout_ms, without the lock, and delivers what
 * came, until the reading call's own final reply is in. */
static void read_replies(struct cq_fleet_client *c, const struct waiter *self, int timeout_ms)
{
    rd_kafka_message_t *msg = rd_kafka_consumer_poll(c->reader, timeout_ms);
    while (msg != NULL) {
        /* Errors here are transient (librdkafka reconnects by itself); a call whose
         * reply never comes ends with its own timeout. Bytes that are not a Response
         * are someone else's mistake on our topic, not a reason to stop. */
        if (msg->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            struct cq_trace trace;
            cq_trace_read(&trace, msg);
            cq_trace_stamp(&trace, "c.recv");
            Codeq__V1__Response *resp = codeq__v1__response__unpack(NULL, msg->len, msg->payload);
            if (resp != NULL)
                deliver(c, resp, &trace);
        }
        rd_kafka_message_destroy(msg);
        if (__atomic_load_n(&self->final, __ATOMIC_ACQUIRE) != NULL)
            break;                                  /* the rest is for the next reader */
        msg = rd_kafka_consumer_poll(c->reader, 0); /* the rest of what came at once */
    }
}

int cq_fleet_client_open(const char *brokers, const char *request_topic,
                         struct cq_fleet_client **out, struct cq_error *err)
{
    *out = NULL;
    if (brokers == NULL)
        brokers = getenv("CODEQ_BROKERS");
    if (brokers == NULL || brokers[0] == '\0')
        return cq_error_set(err, CQ_EINVALID,
                            "no Kafka brokers given (--brokers or CODEQ_BROKERS)");
    if (request_topic == NULL)
        request_topic = getenv("CODEQ_REQUEST_TOPIC");
    struct cq_fleet_config cfg;
    cq_fleet_config_init(&cfg);
    /* The daemons' file and environment settings (CODEQ_CONFIG, CODEQ_REDIS, ...). */
    char *no_args[] = {"codeq-client", NULL};
    bool help;
    if (cq_fleet_config_load(&cfg, 1, no_args, &help, err) < 0)
        return -1;
    if (snprintf(cfg.brokers, sizeof(cfg.brokers), "%s", brokers) >= (int)sizeof(cfg.brokers))
        return cq_error_set(err, CQ_EINVALID, "the brokers list is too long");
    struct cq_fleet_client *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return cq_error_set(err, ENOMEM, "out of memory");
    pthread_mutex_init(&c->lock, NULL);
    pthread_mutex_init(&c->store_lock, NULL);
    pthread_cond_init(&c->replied, NULL);
    c->cfg = cfg;
    bool signing;
    if (cq_credentials_load(NULL, &c->cred, &signing, err) < 0) {
        cq_fleet_client_close(c);
        return -1;
    }
    snprintf(c->request_topic, sizeof(c->request_topic), "%s",
             request_topic != NULL && request_topic[0] != '\0' ? request_topic : cfg.request_topic);
    char id[17];
    cq_random_id(id, 16);
    /* A tenant's replies come on its own topics (cq_fleet_reply_topic_refused()). */
    snprintf(c->reply_topic, sizeof(c->reply_topic), "codeq.replies.%s%s%s", c->cred.tenant,
             c->cred.tenant[0] ? "." : "", id);
    if (cq_kafka_producer(&cfg, &c->producer, err) < 0 ||
        cq_kafka_ensure_topic(c->producer, c->reply_topic, 1, err) < 0 ||
        cq_kafka_reader(&cfg, c->reply_topic, &c->reader, err) < 0)
        goto fail;
    *out = c;
    return 0;
fail:
    cq_error_prefix(err, "connect to Kafka at %s", brokers);
    cq_fleet_client_close(c);
    return -1;
}

void cq_fleet_client_close(struct cq_fleet_client *c)
{
    if (c == NULL)
        return;
    if (c->reader != NULL) {
        rd_kafka_consumer_close(c->reader);
        rd_kafka_destroy(c->reader);
    }
    if (c->producer != NULL) {
        struct cq_error ignored;
        /* Best effort: a topic left behind by a crash is harmless, only untidy. */
        if (c->reader != NULL)
            cq_kafka_delete_topic(c->producer, c->reply_topic, &ignored);
        rd_kafka_flush(c->producer, 5000);
        rd_kafka_destroy(c->producer);
    }
    cq_store_close(c->store);
    explicit_bzero(&c->cred, sizeof(c->cred));
    pthread_cond_destroy(&c->replied);
    pthread_mutex_destroy(&c->lock);
    pthread_mutex_destroy(&c->store_lock);
    free(c);
}

int cq_fleet_client_call(struct cq_fleet_client *c, Codeq__V1__Request *req,
                         cq_fleet_chunk_fn on_chunk, void *ctx, int timeout_ms,
                         Codeq__V1__Response **out, struct cq_error *err)
{
    return cq_fleet_client_call_traced(c, req, on_chunk, ctx, timeout_ms, out, NULL, err);
}

/* req as it goes on the wire: signed with the client's key when it has one. */
static int encode(const struct cq_fleet_client *c, const Codeq__V1__Request *req, uint8_t **bytes,
                  size_t *len, struct cq_error *err)
{
    if (c->cred.key_id[0] != '\0')
        return cq_auth_sign(req, c->cred.key_id, c->cred.secret, cq_unix_ms(), bytes, len, err);
    *len = codeq__v1__request__get_packed_size(req);
    *bytes = malloc(*len ? *len : 1);
    if (*bytes == NULL)
        return cq_error_sys(err, ENOMEM, "encode request %s (%zu bytes)", req->request_id, *len);
    codeq__v1__request__pack(req, *bytes);
    return 0;
}

/* Kafka's key of a request: its session, so that one session's requests stay in one
 * partition and so in order, as the dispatchers expect. */
static const char *request_key(const Codeq__V1__Request *req)
{
    return req->session_id != NULL && req->session_id[0] != '\0' ? req->session_id
                                                                 : req->request_id;
}

/* What a call or a send fills in (an id when none, the client's reply topic and tenant),
 * and gives back as it was afterwards: the caller may free the message with its own
 * strings, and made_id lives on the caller's stack. */
struct filled {
    char made_id[25];
    char *id, *topic, *tenant;
};

static void fill(const struct cq_fleet_client *c, Codeq__V1__Request *req, struct filled *f)
{
    f->id = req->request_id;
    f->topic = req->reply_topic;
    f->tenant = req->tenant;
    if (req->request_id == NULL || req->request_id[0] == '\0') {
        cq_random_id(f->made_id, 24);
        req->request_id = f->made_id;
    }
    req->reply_topic = (char *)c->reply_topic;
    req->tenant = (char *)c->cred.tenant;
}

static void unfill(Codeq__V1__Request *req, const struct filled *f)
{
    req->request_id = f->id;
    req->reply_topic = f->topic;
    req->tenant = f->tenant;
}

/* The call, with req's request_id and reply_topic set (cq_fleet_client_call_traced()
 * gives them back to the caller whatever happens here). */
static int call(struct cq_fleet_client *c, const Codeq__V1__Request *req,
                cq_fleet_chunk_fn on_chunk, void *ctx, int timeout_ms, Codeq__V1__Response **out,
                struct cq_trace *trace, struct cq_error *err)
{
    uint8_t *bytes;
    size_t len;
    if (encode(c, req, &bytes, &len, err) < 0)
        return -1;

    struct waiter w = {
        .request_id = req->request_id, .on_chunk = on_chunk, .ctx = ctx, .trace = trace};
    pthread_mutex_lock(&c->lock);
    w.next = c->waiters;
    c->waiters = &w;
    pthread_mutex_unlock(&c->lock);

    const char *key = request_key(req);
    int64_t deadline = (int64_t)cq_now_ms() + timeout_ms;
    /* The request's acknowledgement is not waited for before the reply: that wake-up
     * would come while the request travels, competing with it for the CPU. It is
     * looked at between slices of waiting instead (a refused request ends the call),
     * and the tracker outlives the call if the acknowledgement comes later. */
    struct cq_delivery *delivery = cq_delivery_new();
    if (delivery == NULL) {
        pthread_mutex_lock(&c->lock);
        remove_waiter(c, &w);
        pthread_mutex_unlock(&c->lock);
        free(bytes);
        return cq_error_sys(err, ENOMEM, "track the delivery of request %s", req->request_id);
    }
    struct cq_header trace_header;
    if (trace != NULL) {
        cq_trace_begin(trace);
        cq_trace_stamp(trace, "c.sent");
    }
    size_t n_headers = cq_trace_header(trace, &trace_header);
    int rc = cq_kafka_send(c->producer, c->request_topic, key, bytes, len, &trace_header, n_headers,
                           delivery, err);
    free(bytes);

    pthread_mutex_lock(&c->lock);
    while (rc == 0 && w.final == NULL) {
        if (__atomic_load_n(&delivery->failed, __ATOMIC_SEQ_CST) > 0) {
            rc = cq_error_set(err, CQ_EINTERNAL, "Kafka refused it: %s",
                              rd_kafka_err2str(delivery->last_error));
            break;
        }
        int64_t left = deadline - (int64_t)cq_now_ms();
        if (left <= 0)
            break;
        /* Slices of 100 ms: a call that gave up or got its reply from another's
         * reading hands the reading on soon, and acknowledgements are looked at. */
        int64_t slice = left < 100 ? left : 100;
        if (!c->reading) {
            c->reading = true;
            pthread_mutex_unlock(&c->lock);
            read_replies(c, &w, (int)slice);
            rd_kafka_poll(c->producer, 0); /* acknowledgements of every call */
            pthread_mutex_lock(&c->lock);
            c->reading = false;
            pthread_cond_broadcast(&c->replied); /* whoever waits may read now */
            continue;
        }
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += slice / 1000;
        until.tv_nsec += (slice % 1000) * 1000000;
        if (until.tv_nsec >= 1000000000) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&c->replied, &c->lock, &until);
    }
    remove_waiter(c, &w);
    pthread_mutex_unlock(&c->lock);
    cq_trace_stamp(trace, "c.woken");
    cq_delivery_release(delivery);
    if (rc < 0)
        cq_error_prefix(err, "send request %s to %s", req->request_id, c->request_topic);

    if (rc == 0 && w.final == NULL)
        rc = cq_error_set(err, CQ_ETIMEOUT,
                          "no reply to request %s within %d ms (is a codeq-dispatcher serving "
                          "topic %s?); it may still run, and sending it again with the same "
                          "request id returns its result without a second run",
                          req->request_id, timeout_ms, c->request_topic);
    if (rc < 0) {
        if (w.final != NULL)
            codeq__v1__response__free_unpacked(w.final, NULL);
        return -1;
    }
    *out = w.final;
    return 0;
}

int cq_fleet_client_call_traced(struct cq_fleet_client *c, Codeq__V1__Request *req,
                                cq_fleet_chunk_fn on_chunk, void *ctx, int timeout_ms,
                                Codeq__V1__Response **out, struct cq_trace *trace,
                                struct cq_error *err)
{
    *out = NULL;
    struct filled given;
    fill(c, req, &given);
    /* Too large for Kafka: the arguments go through Redis (checked at this edge:
     * files over the limit and requests over 200 MiB are refused here). */
    struct cq_claimed_request claimed = {.moved = false};
    struct cq_store *st = NULL;
    int rc = 0;
    if (codeq__v1__request__get_packed_size(req) > c->cfg.claim_threshold &&
        req->operation_case == CODEQ__V1__REQUEST__OPERATION_INVOKE &&
        (st = claim_store(c, err)) == NULL)
        rc = -1;
    if (rc == 0 && cq_claim_request(st, req, c->cfg.claim_threshold, CQ_CLAIM_REQUEST_TTL_S,
                                    &claimed, err) < 0)
        rc = -1;
    if (rc == 0)
        rc = call(c, req, on_chunk, ctx, timeout_ms, out, trace, err);
    cq_claim_request_undo(req, &claimed);
    if (rc == 0 && (*out)->payload_case == CODEQ__V1__RESPONSE__PAYLOAD_CLAIM) {
        st = claim_store(c, err);
        if (st == NULL || cq_claim_resolve_reply(st, out, err) < 0) {
            codeq__v1__response__free_unpacked(*out, NULL);
            *out = NULL;
            rc = -1;
        }
    }
    unfill(req, &given); /* one exit: the request goes back as it came */
    return rc;
}

int cq_fleet_client_send(struct cq_fleet_client *c, Codeq__V1__Request *req, struct cq_error *err)
{
    struct filled given;
    fill(c, req, &given);
    uint8_t *bytes = NULL;
    size_t len = 0;
    int rc = encode(c, req, &bytes, &len, err);
    if (rc == 0)
        rc = cq_kafka_send(c->producer, c->request_topic, request_key(req), bytes, len, NULL, 0,
                           NULL, err);
    free(bytes);
    unfill(req, &given);
    return rc;
}
