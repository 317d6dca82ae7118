/* dispatcher/dispatcher.c - the request path from the request topic to the workers.
 *
 * Everything a request produces (forwards, replies, dead letters) is acknowledged by
 * the broker before its offset is stored for commit. A crash in between re-delivers
 * the request; that is safe because a request id already recorded in Redis is never
 * run twice (the worker's claim) and a finished one is answered from its stored
 * reply. */
#define _GNU_SOURCE
#include "dispatcher/dispatcher.h"
#include "dispatcher/metrics.h"
#include "dispatcher/routes.h"
#include "common/clock.h"
#include "common/random.h"
#include "fleet/audit.h"
#include "fleet/auth.h"
#include "fleet/codec.h"
#include "fleet/interpreters.h"
#include "fleet/keyring.h"
#include "fleet/keys.h"
#include "fleet/kafka.h"
#include "fleet/log.h"
#include "fleet/recovery.h"
#include "fleet/status.h"
#include "fleet/store.h"
#include "fleet/trace.h"
#include "fleet/tracing.h"
#include "common/units.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BATCH_MAX       256
#define RECOVERY_PERIOD 1000 /* ms between scans for dead workers */

struct cq_dispatcher {
    struct cq_fleet_config cfg;
    struct cq_store *store;
    struct cq_routes *routes; /* learnt from Redis: a hint for fast_forward() */
    rd_kafka_t *producer, *consumer;
    struct cq_delivery batch; /* dead letters */
    struct sent *sent;        /* forwards and replies on their way (settle()) */
    atomic_bool stopping;
    struct cq_trace *trace;     /* of the request being handled, or NULL (fleet/trace.h) */
    struct cq_keystore *keys;   /* NULL: keyless */
    struct cq_keyring *keyring; /* the keys' Redis (keys_file = redis), or NULL */
    struct cq_audit *audit;     /* NULL: no audit log */
    /* Where d->audit's records go. */
    struct cq_audit_kafka audit_sink;
    const struct cq_opened *op; /* the request being handled, as it came (pack_wire()) */
    struct cq_quota quota;      /* its tenant's quotas, looked up once per request (quota_of()) */
    int64_t leases_waited;      /* the end of the Redis outage wait_for_leases() waited out */
    struct cq_dm *metrics;      /* NULL: no metrics_listen */
    char id[128];               /* dispatcher:<id>, its heartbeat (fleet/status.h) */
    int64_t started_ms;
};

/* While Redis was unreachable no worker could renew its heartbeat, and a restarted
 * Redis has let them expire: right after an outage every worker looks dead. Decisions
 * that rest on liveness (placing a session, moving one, recovering a worker's requests)
 * wait until one lease (3 heartbeats, plus the workers' own reconnection backoff) has
 * passed since the reconnection. Returns true when it waited: what was read before is
 * stale. */
static bool wait_for_leases(struct cq_dispatcher *d)
{
    int64_t back = cq_store_back_at(d->store);
    int64_t until = back + 3 * (int64_t)d->cfg.heartbeat_ms + 1000;
    if (back == 0 || back == d->leases_waited || (int64_t)cq_now_ms() >= until)
        return false;
    int64_t wait_ms = until - (int64_t)cq_now_ms();
    cq_log_event(CQ_LOG_INFO, "waiting_for_leases", CQ_FIELDS(CQ_LI("wait_ms", wait_ms)),
                 "waiting %lld ms for the workers to renew their heartbeats after the Redis "
                 "outage",
                 (long long)wait_ms);
    while (!atomic_load(&d->stopping) && (int64_t)cq_now_ms() < until) {
        struct timespec ts = {.tv_nsec = 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
    d->leases_waited = back;
    return true;
}

/* ---- output ------------------------------------------------------------------------- */

/* A forward or final reply on its way, with what it takes to answer for it when the
 * broker refuses it (settle()). */
struct sent {
    struct cq_delivery *delivery; /* shared with the message (cq_delivery_new()) */
    bool forward;                 /* to a worker; else a final reply */
    char request_id[64];
    char session_id[CQ_SESSION_ID_MAX + 1];
    char reply_topic[256];
    char worker[64];   /* a forward's */
    char refused[160]; /* why librdkafka refused it before it left, or "" */
    struct sent *next;
};

/* Sends a message of a request and tracks it: a forward to worker, or (worker NULL) a
 * final reply on the request's reply topic. Without memory to track it, it is sent
 * untracked: its offset is then stored without its acknowledgement, as if delivered. */
static void send_tracked(struct cq_dispatcher *d, const Codeq__V1__Request *req, const char *topic,
                         const char *worker, const char *key, const uint8_t *bytes, size_t len,
                         const struct cq_header *headers, size_t n_headers)
{
    struct sent *s = calloc(1, sizeof(*s));
    if (s != NULL && (s->delivery = cq_delivery_new()) == NULL) {
        free(s);
        s = NULL;
    }
    if (s != NULL) {
        s->forward = worker != NULL;
        snprintf(s->request_id, sizeof(s->request_id), "%s", req->request_id);
        snprintf(s->session_id, sizeof(s->session_id), "%s", req->session_id);
        snprintf(s->reply_topic, sizeof(s->reply_topic), "%s", req->reply_topic);
        snprintf(s->worker, sizeof(s->worker), "%s", worker != NULL ? worker : "");
    }
    struct cq_error err;
    if (cq_kafka_send(d->producer, topic, key, bytes, len, headers, n_headers,
                      s != NULL ? s->delivery : NULL, &err) < 0) {
        /* Refused before it left (librdkafka's own checks): as a refusal by the broker. */
        cq_log_event(CQ_LOG_ERROR, "send_refused",
                     CQ_FIELDS(CQ_LS("request_id", req->request_id),
                               CQ_LS("session_id", req->session_id), CQ_LS("topic", topic),
                               CQ_LS("worker_id", worker), CQ_LS("error", err.msg)),
                     "request %s: %s", req->request_id, err.msg);
        if (s != NULL) {
            s->delivery->failed = 1;
            s->delivery->last_error = err.code == CQ_ELIMIT ? RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE
                                                            : RD_KAFKA_RESP_ERR__INVALID_ARG;
            snprintf(s->refused, sizeof(s->refused), "%s", err.msg);
        }
    }
    if (s != NULL) {
        s->next = d->sent;
        d->sent = s;
    }
}

/* Sends a final reply (the bytes stay the caller's: librdkafka copies them). */
static void send_reply(struct cq_dispatcher *d, const Codeq__V1__Request *req, const uint8_t *bytes,
                       size_t len)
{
    struct cq_header headers[5] = {
        {"request_id", req->request_id},
        {"session_id", req->session_id},
        {"codeq-kind", "final"},
    };
    cq_dm_answered(d->metrics);
    size_t n = 3 + cq_trace_w3c_headers(d->trace, &headers[3]);
    send_tracked(d, req, req->reply_topic, NULL, req->request_id, bytes, len, headers, n);
}

/* Sends a final reply and frees it. */
static void reply(struct cq_dispatcher *d, const Codeq__V1__Request *req, uint8_t *bytes,
                  size_t len)
{
    send_reply(d, req, bytes, len);
    free(bytes);
}

/* Stores a final reply decided here, so that a repeated request id gets it again. */
static void store_reply(struct cq_dispatcher *d, const Codeq__V1__Request *req,
                        const uint8_t *bytes, size_t len)
{
    struct cq_error err;
    bool stored; /* false: another outcome was stored first, and a repeat gets that */
    if (cq_store_finish(d->store, req->request_id, NULL, bytes, len, &stored, &err) < 0)
        cq_log_event(CQ_LOG_WARN, "reply_not_stored",
                     CQ_FIELDS(CQ_LS("request_id", req->request_id),
                               CQ_LS("session_id", req->session_id), CQ_LS("error", err.msg)),
                     "request %s: reply not stored: %s", req->request_id, err.msg);
}

/* The final reply when the real one cannot be encoded (why: out of memory, too large):
 * the codec's fallback error, built without allocating, so that the request still gets
 * its one final reply. Stored when the real one would have been. */
static void reply_fallback(struct cq_dispatcher *d, const Codeq__V1__Request *req, bool store,
                           const struct cq_error *why)
{
    cq_log_event(CQ_LOG_ERROR, "reply_not_encoded",
                 CQ_FIELDS(CQ_LS("request_id", req->request_id),
                           CQ_LS("session_id", req->session_id), CQ_LS("error", why->msg)),
                 "request %s: reply not encoded: %s", req->request_id, why->msg);
    char message[200];
    snprintf(message, sizeof(message), "codeq: the reply could not be encoded: %s", why->msg);
    uint8_t bytes[CQ_CODEC_FALLBACK_MAX];
    size_t len = cq_codec_fallback_response(req->request_id, req->session_id,
                                            cq_result_error_of(why->code), message, bytes);
    if (store)
        store_reply(d, req, bytes, len);
    send_reply(d, req, bytes, len);
}

/* A final error decided here; stored, so that a repeated request id gets it again. */
static void reply_error(struct cq_dispatcher *d, const Codeq__V1__Request *req,
                        enum cq_result_error code, const char *message)
{
    uint8_t *bytes;
    size_t len;
    struct cq_error err;
    if (cq_codec_error_response(req->request_id, req->session_id, code, message, &bytes, &len,
                                &err) < 0) {
        reply_fallback(d, req, true, &err);
        return;
    }
    store_reply(d, req, bytes, len);
    reply(d, req, bytes, len);
}

static void dead_letter(struct cq_dispatcher *d, const rd_kafka_message_t *msg, const char *why)
{
    char partition[16], offset[32];
    snprintf(partition, sizeof(partition), "%d", msg->partition);
    snprintf(offset, sizeof(offset), "%lld", (long long)msg->offset);
    struct cq_header headers[] = {
        {"codeq-dlq-reason", why},
        {"codeq-source-topic", rd_kafka_topic_name(msg->rkt)},
        {"codeq-source-partition", partition},
        {"codeq-source-offset", offset},
    };
    char key[256] = "";
    if (msg->key != NULL)
        snprintf(key, sizeof(key), "%.*s", (int)(msg->key_len < 255 ? msg->key_len : 255),
                 (const char *)msg->key);
    struct cq_error err;
    if (cq_kafka_send(d->producer, d->cfg.dlq_topic, key[0] ? key : NULL, msg->payload, msg->len,
                      headers, 4, &d->batch, &err) < 0)
        cq_log_event(CQ_LOG_ERROR, "dead_letter_failed",
                     CQ_FIELDS(CQ_LS("topic", rd_kafka_topic_name(msg->rkt)),
                               CQ_LI("partition", msg->partition), CQ_LI("offset", msg->offset),
                               CQ_LS("error", err.msg)),
                     "dead letter: %s", err.msg);
    cq_dm_dead_lettered(d->metrics);
    cq_log_event(CQ_LOG_WARN, "dead_lettered",
                 CQ_FIELDS(CQ_LS("topic", rd_kafka_topic_name(msg->rkt)),
                           CQ_LI("partition", msg->partition), CQ_LI("offset", msg->offset),
                           CQ_LS("reason", why)),
                 "dead-lettered offset %lld of partition %d: %s", (long long)msg->offset,
                 msg->partition, why);
}

/* ---- routing ------------------------------------------------------------------------ */

/* The live, not draining worker with the most free capacity, or "" when none has room.
 * For a session of a code interpreter (interpreter not NULL), a worker that has it
 * ready (its runtime's layer in place, said in its heartbeat) is preferred, the most
 * free capacity among those; only when none has room does the session go to the one
 * with the most room, which fetches or builds the layer while the start waits. */
static int choose_worker(struct cq_dispatcher *d, const char *interpreter, char *out, size_t len,
                         struct cq_error *err)
{
    struct cq_worker_status live[256];
    bool ready[256];
    size_t n = 0;
    out[0] = '\0';
    const char *name = interpreter != NULL ? interpreter : CQ_INTERPRETER_DEFAULT_NAME;
    int rc = cq_store_workers_ready(d->store, name, live, ready, 256, &n, err);
    if (rc == 0 && wait_for_leases(d))
        rc = cq_store_workers_ready(d->store, name, live, ready, 256, &n, err);
    if (rc < 0) {
        cq_log_event(CQ_LOG_ERROR, "list_workers_failed",
                     CQ_FIELDS(CQ_LS("interpreter", name), CQ_LS("error", err->msg)),
                     "list workers: %s", err->msg);
        return -1;
    }
    int64_t best = 0;
    bool best_ready = false;
    for (size_t i = 0; i < n; i++) {
        if (live[i].draining || live[i].capacity <= 0)
            continue;
        bool r = interpreter != NULL && ready[i];
        if ((r && !best_ready) || (r == best_ready && live[i].capacity > best)) {
            best = live[i].capacity;
            best_ready = r;
            snprintf(out, len, "%s", live[i].id);
        }
    }
    return 0;
}

/* Produces a forward to the worker's topic: one already recorded in Redis, or, early,
 * one being recorded (fast_forward()). */
static void send_forward(struct cq_dispatcher *d, const Codeq__V1__Request *req, const char *worker,
                         uint64_t fence, bool early, const uint8_t *body, size_t len)
{
    char topic[256], fence_text[32], at[32], requested[24];
    cq_fleet_worker_topic(worker, topic, sizeof(topic));
    snprintf(fence_text, sizeof(fence_text), "%llu", (unsigned long long)fence);
    snprintf(at, sizeof(at), "%lld", (long long)cq_unix_ms());
    struct cq_header headers[8] = {{"codeq-fence", fence_text}, {"codeq-dispatched-ms", at}};
    size_t n = 2 + cq_dm_requested(requested, &headers[2]);
    if (early)
        headers[n++] = (struct cq_header){CQ_FLEET_EARLY_HEADER, "1"};
    cq_trace_stamp(d->trace, "d.sent");
    n += cq_trace_header(d->trace, &headers[n]);
    n += cq_trace_w3c_headers(d->trace, &headers[n]);
    cq_dm_forwarded(d->metrics);
    send_tracked(d, req, topic, worker, req->session_id, body, len, headers, n);
}

/* The request being handled as it travels on (fleet/auth.h, cq_opened_pack()): a
 * signed request's envelope unchanged, so that its worker verifies it again. */
static int pack_wire(struct cq_dispatcher *d, const Codeq__V1__Request *req, uint8_t **body,
                     size_t *len, struct cq_error *err)
{
    if (d->op != NULL && d->op->req == req)
        return cq_opened_pack(d->op, body, len, err);
    *len = codeq__v1__request__get_packed_size(req);
    *body = malloc(*len ? *len : 1);
    if (*body == NULL)
        return cq_error_sys(err, ENOMEM, "pack the request");
    codeq__v1__request__pack(req, *body);
    return 0;
}

static void digest_of(const struct cq_dispatcher *d, char out[CQ_STORE_DIGEST_LEN + 1])
{
    out[0] = '\0';
    if (d->op != NULL)
        cq_opened_digest_hex(d->op, out);
}

static const char *tenant_of(const Codeq__V1__Request *req)
{
    return req->tenant != NULL ? req->tenant : "";
}

/* The tenant's quotas: its own from the keys file, else the fleet's tenant_max_*. */
static void quota_of(struct cq_dispatcher *d, const char *tenant, struct cq_quota *q)
{
    memset(q, 0, sizeof(*q));
    if (d->keys != NULL)
        cq_keystore_quota(d->keys, tenant, q);
    if (q->sessions == 0)
        q->sessions = d->cfg.tenant_max_sessions;
    if (q->executions == 0)
        q->executions = d->cfg.tenant_max_executions;
    if (q->stored_bytes == 0)
        q->stored_bytes = d->cfg.tenant_max_stored_bytes;
    if (q->rps == 0)
        q->rps = d->cfg.tenant_max_rps;
}

/* Calls that run code or commands: what the executions quota counts. */
static bool is_execution(const Codeq__V1__Request *req)
{
    if (req->operation_case != CODEQ__V1__REQUEST__OPERATION_INVOKE || req->invoke == NULL ||
        req->invoke->tool == NULL)
        return false;
    const char *t = req->invoke->tool;
    return strcmp(t, "executeCode") == 0 || strcmp(t, "executeCommand") == 0 ||
           strcmp(t, "startCommandExecution") == 0;
}

static uint64_t max_executions(struct cq_dispatcher *d, const Codeq__V1__Request *req)
{
    return is_execution(req) ? d->quota.executions : 0;
}

static void over_quota(struct cq_dispatcher *d, const Codeq__V1__Request *req, const char *why);

static void forward(struct cq_dispatcher *d, const Codeq__V1__Request *req, const char *worker,
                    uint64_t fence)
{
    uint8_t *body;
    size_t len;
    struct cq_error err;
    if (pack_wire(d, req, &body, &len, &err) < 0) {
        reply_error(d, req, CQ_RESULT_INTERNAL, err.msg);
        return;
    }
    char digest[CQ_STORE_DIGEST_LEN + 1];
    digest_of(d, digest);
    enum cq_request_state state;
    uint64_t max = max_executions(d, req);
    if (cq_store_forward(d->store, req->request_id, worker, req->session_id, body, len, digest,
                         tenant_of(req), max, &state, &err) < 0) {
        /* Not forwarded: without a reply here the request would get none at all. */
        free(body);
        reply_error(d, req, CQ_RESULT_INTERNAL, err.msg);
        return;
    }
    if (state == CQ_REQ_OVER_QUOTA) {
        char text[200];
        snprintf(text, sizeof(text),
                 "tenant '%s' has %llu calls running, its quota (executions): try again when "
                 "one has ended",
                 tenant_of(req), (unsigned long long)max);
        over_quota(d, req, text);
    }
    if (state == CQ_REQ_FORWARDED)
        send_forward(d, req, worker, fence, false, body, len);
    /* Running: its worker will answer (or recovery will). Done: answered before. */
    free(body);
}

static void route(struct cq_dispatcher *d, Codeq__V1__Request *req)
{
    /* Asked first without a fallback: a live owner (the usual case) is all it returns,
     * and the worker list (a script over every worker) is read only for a session whose
     * owner is gone. Saves a Redis round trip per request. The second call decides
     * atomically again, even when there is no fallback: choose_worker() may have waited
     * for the leases to be renewed after a Redis outage, and an owner that is back by
     * then keeps its session. */
    struct cq_route r;
    struct cq_error err;
    int rc = cq_store_route(d->store, req->session_id, tenant_of(req), "", &r, &err);
    if (rc == 0 && r.exists && r.owner[0] == '\0') {
        char fallback[64];
        struct cq_error ignored; /* logged; the session then waits for a worker with room */
        /* A session of a code interpreter moves, where it can, to a worker that has the
         * interpreter ready (its layer in place): the move need not fetch it. */
        struct cq_session_info info;
        bool found = false;
        bool custom = cq_store_session_info(d->store, req->session_id, tenant_of(req), &info,
                                            &found, &ignored) == 0 &&
                      found && info.interpreter[0] != '\0' &&
                      strcmp(info.interpreter, CQ_INTERPRETER_DEFAULT_NAME) != 0;
        choose_worker(d, custom ? info.interpreter : NULL, fallback, sizeof(fallback), &ignored);
        rc = cq_store_route(d->store, req->session_id, tenant_of(req), fallback, &r, &err);
    }
    if (rc < 0) {
        reply_error(d, req, CQ_RESULT_INTERNAL, err.msg);
        return;
    }
    if (!r.exists) {
        char text[200];
        snprintf(text, sizeof(text),
                 "session '%s' not found or no longer running (sessions end after their "
                 "timeout, or when stopped)",
                 req->session_id);
        reply_error(d, req, CQ_RESULT_NOT_FOUND, text);
        return;
    }
    if (r.owner[0] == '\0') {
        reply_error(d, req, CQ_RESULT_LIMIT_EXCEEDED,
                    "the session's worker was lost and no live worker has room to take it over; "
                    "try again later");
        return;
    }
    if (r.moved)
        cq_log_event(CQ_LOG_INFO, "session_moved",
                     CQ_FIELDS(CQ_LS("session_id", req->session_id),
                               CQ_LS("request_id", req->request_id),
                               CQ_LS("tenant", tenant_of(req)), CQ_LS("worker_id", r.owner),
                               CQ_LI("fence", r.fence)),
                     "session %s moved to worker %s (fence %llu)", req->session_id, r.owner,
                     (unsigned long long)r.fence);
    cq_routes_put(d->routes, req->session_id, r.owner, r.fence);
    forward(d, req, r.owner, r.fence);
}

/* Whether the session's code interpreter exists for the request's tenant (the built-in
 * one always does); else the request is answered. *custom: it names one of the fleet's.
 *
 * An interpreter limited to other tenants is answered exactly as one that does not
 * exist, deleted or not: its runtime may carry a tenant's private packages and
 * environment, and even its name is that tenant's to know. */
static bool interpreter_exists(struct cq_dispatcher *d, Codeq__V1__Request *req, bool *custom)
{
    const char *name = req->start_session->code_interpreter_identifier;
    *custom = name != NULL && name[0] != '\0' && strcmp(name, CQ_INTERPRETER_DEFAULT_NAME) != 0;
    if (!*custom)
        return true;
    struct cq_fleet_interpreter it;
    bool found;
    struct cq_error err;
    if (cq_store_interpreter_get(d->store, name, &it, &found, &err) < 0) {
        reply_error(d, req, CQ_RESULT_INTERNAL, err.msg);
        return false;
    }
    /* Keyless, no request names a tenant (cq_auth_open refuses one that does): an
     * interpreter limited to tenants admits none there. */
    bool allowed = found && cq_fleet_interpreter_allows(&it, tenant_of(req));
    bool deleted = it.deleted;
    cq_fleet_interpreter_free(&it);
    if (allowed && !deleted)
        return true;
    char msg[256];
    if (found && !allowed && d->keys == NULL)
        /* Nobody to hide it from: the operator's mistake, said plainly. */
        snprintf(msg, sizeof(msg),
                 "code interpreter '%s' is limited to tenants, and this fleet is keyless: its "
                 "requests name no tenant",
                 name);
    else
        snprintf(msg, sizeof(msg),
                 allowed ? "code interpreter '%s' was deleted: it takes no new sessions"
                         : "no code interpreter '%s' in this fleet (codeq interpreter create "
                           "--fleet CONF defines one)",
                 name);
    cq_dm_refused(d->metrics, "interpreter");
    reply_error(d, req, CQ_RESULT_NOT_FOUND, msg);
    return false;
}

static void start_session(struct cq_dispatcher *d, Codeq__V1__Request *req)
{
    char worker[64];
    struct cq_error err;
    bool custom;
    if (!interpreter_exists(d, req, &custom))
        return;
    if (choose_worker(d, custom ? req->start_session->code_interpreter_identifier : NULL, worker,
                      sizeof(worker), &err) < 0) {
        reply_error(d, req, CQ_RESULT_INTERNAL, err.msg);
        return;
    }
    if (worker[0] == '\0') {
        reply_error(d, req, CQ_RESULT_LIMIT_EXCEEDED,
                    "no live worker has room for a new session; try again later");
        return;
    }
    char id[33], existing[CQ_SESSION_ID_MAX + 1];
    cq_random_id(id, 32);
    if (cq_store_create_session(d->store, id, tenant_of(req), &d->quota, worker,
                                req->start_session->client_token, existing, sizeof(existing),
                                &err) < 0) {
        if (err.code == CQ_ELIMIT)
            over_quota(d, req, err.msg);
        else
            reply_error(d, req, CQ_RESULT_INTERNAL, err.msg);
        return;
    }
    if (existing[0] != '\0') {
        /* The client token made a session before: answer with it, start nothing. */
        struct cq_session_info info;
        bool found;
        uint8_t *bytes;
        size_t len;
        if (cq_store_session_info(d->store, existing, tenant_of(req), &info, &found, &err) < 0 ||
            !found)
            reply_error(d, req, CQ_RESULT_NOT_FOUND,
                        "the session this client token started has ended");
        else if (cq_codec_session_response(req->request_id, &info, &bytes, &len, &err) < 0)
            reply_fallback(d, req, false, &err);
        else
            reply(d, req, bytes, len);
        return;
    }
    /* The id goes in the request the worker gets (and in the Kafka key from now on);
     * the unpacked message keeps ownership of its own string. */
    char *given = req->session_id;
    req->session_id = id;
    cq_routes_put(d->routes, id, worker, 1);
    forward(d, req, worker, 1);
    req->session_id = given;
}

/* A startSession already recorded here: its batch was consumed again (a dispatcher
 * restart, a consumer group rebalance). The session exists; placing the request again
 * would start a second one or, with no room left, store a LIMIT_EXCEEDED over the start
 * its worker is running. Running: its worker answers. Forwarded: the forward may not have
 * reached the worker, so the recorded one (with its session id) is routed again; the
 * worker's claim makes a second copy harmless. */
static void resume_start(struct cq_dispatcher *d, const Codeq__V1__Request *req,
                         enum cq_request_state state)
{
    if (state != CQ_REQ_FORWARDED)
        return;
    uint8_t *body = NULL;
    size_t len = 0;
    struct cq_error err;
    if (cq_store_request(d->store, req->request_id, &body, &len, &state, &err) < 0) {
        cq_log_event(CQ_LOG_ERROR, "request_lookup_failed",
                     CQ_FIELDS(CQ_LS("request_id", req->request_id),
                               CQ_LS("session_id", req->session_id),
                               CQ_LS("tenant", tenant_of(req)), CQ_LS("error", err.msg)),
                     "request %s: %s", req->request_id, err.msg);
        return;
    }
    if (body == NULL)
        return; /* finished meanwhile: its reply went out */
    struct cq_opened stored;
    int rc = cq_auth_unwrap(body, len, &stored, &err);
    free(body);
    if (rc == 0) {
        /* d->quota holds: signed, the stored request is this one (the same digest);
         * keyless, every tenant has the fleet's quotas. */
        const struct cq_opened *handled = d->op;
        d->op = &stored;
        route(d, stored.req);
        d->op = handled;
    }
    cq_opened_free(&stored);
}

/* A repeat of a request that is running (or ran, and its reply is not stored yet: the
 * worker stores it after publishing it) goes to the request's worker, to be queued
 * behind the first copy (one session's requests run in order), whose claim then finds
 * the stored reply and answers the repeat with it, on the repeat's own reply topic. A
 * worker that is gone meanwhile has the first copy answered by recovery. */
static void forward_repeat(struct cq_dispatcher *d, const Codeq__V1__Request *req,
                           const char *worker)
{
    uint8_t *body;
    size_t len;
    struct cq_error err;
    if (pack_wire(d, req, &body, &len, &err) < 0)
        return;
    send_forward(d, req, worker, 0, false, body, len);
    free(body);
}

static void answer_from_store(struct cq_dispatcher *d, const Codeq__V1__Request *req)
{
    struct cq_error err;
    uint8_t *bytes = NULL;
    size_t len;
    if (req->operation_case == CODEQ__V1__REQUEST__OPERATION_LIST_SESSIONS) {
        const Codeq__V1__ListSessions *in = req->list_sessions;
        size_t max = in->max_results == 0 ? 10 : in->max_results > 100 ? 100 : in->max_results;
        struct cq_session_info infos[100];
        size_t n = 0;
        char next[CQ_SESSION_ID_MAX + 1];
        if (cq_store_list_sessions(d->store, tenant_of(req), max, in->next_token, infos, &n, next,
                                   sizeof(next), &err) < 0) {
            reply_error(d, req, CQ_RESULT_INTERNAL, err.msg);
            return;
        }
        /* The status filter keeps the page size: filter before paging would need a scan
         * of every session, so filtered pages may be short. */
        size_t kept = 0;
        for (size_t i = 0; i < n; i++)
            if (in->status == CODEQ__V1__SESSION_STATUS__SESSION_STATUS_UNSPECIFIED ||
                (int)infos[i].status == (int)in->status)
                infos[kept++] = infos[i];
        if (cq_codec_sessions_response(req->request_id, infos, kept, next, &bytes, &len, &err) < 0)
            reply_fallback(d, req, false, &err);
        else
            reply(d, req, bytes, len);
        return;
    }
    struct cq_session_info info;
    bool found;
    if (cq_store_session_info(d->store, req->session_id, tenant_of(req), &info, &found, &err) < 0) {
        reply_error(d, req, CQ_RESULT_INTERNAL, err.msg);
    } else if (!found) {
        char text[160];
        snprintf(text, sizeof(text), "session '%s' not found", req->session_id);
        reply_error(d, req, CQ_RESULT_NOT_FOUND, text);
    } else if (cq_codec_session_response(req->request_id, &info, &bytes, &len, &err) < 0) {
        reply_fallback(d, req, false, &err);
    } else {
        reply(d, req, bytes, len);
    }
}

/* The usual request (a new request id for a session whose owner is alive) in one
 * Redis round trip: what handle() and route() would decide for it, and the same
 * record, in one script. False when it did nothing: the general path then reads the
 * state and decides (a duplicate, a dead or released owner, an unknown session, Redis
 * unreachable). A request past its deadline never comes here, so that it is answered
 * TIMED_OUT as before rather than forwarded.
 *
 * With a route remembered for the session, the forward is sent first and recorded
 * while it travels, which takes the Redis round trip (a script run, docs/performance.md
 * has its cost) off the request's path. That is safe because the worker runs nothing
 * Redis has not recorded for it: a forward that beat its record waits for it (up to
 * CQ_FLEET_RECORD_WAIT_MS), and one sent on a stale route, or for a request the
 * general path then answers itself, is refused by the claim. So the forward goes again
 * to the owner Redis names when that is not the remembered one, or when recording took
 * long enough that the worker may have stopped waiting. */
static bool fast_forward(struct cq_dispatcher *d, const Codeq__V1__Request *req)
{
    switch (req->operation_case) {
    case CODEQ__V1__REQUEST__OPERATION_START_SESSION:
    case CODEQ__V1__REQUEST__OPERATION_LIST_SESSIONS:
    case CODEQ__V1__REQUEST__OPERATION_GET_SESSION:
        return false;
    default:
        break;
    }
    if (req->deadline_unix_ms != 0 && req->deadline_unix_ms < cq_unix_ms())
        return false;
    uint8_t *body;
    size_t len;
    struct cq_error err; /* a failure is the general path's to meet and report */
    if (pack_wire(d, req, &body, &len, &err) < 0)
        return false;
    char digest[CQ_STORE_DIGEST_LEN + 1];
    digest_of(d, digest);
    char early[64];
    uint64_t early_fence;
    bool sent = cq_routes_get(d->routes, req->session_id, early, sizeof(early), &early_fence);
    uint64_t sent_at = cq_now_ms();
    if (sent)
        send_forward(d, req, early, early_fence, true, body, len);
    struct cq_route r;
    bool routed;
    int rc = cq_store_route_forward(d->store, req->request_id, req->session_id, tenant_of(req),
                                    body, len, digest, max_executions(d, req), &r, &routed, &err);
    routed = rc == 0 && routed;
    cq_trace_stamp(d->trace, "d.routed");
    if (routed) {
        if (!sent || strcmp(early, r.owner) != 0 ||
            cq_now_ms() - sent_at > CQ_FLEET_RECORD_WAIT_MS / 2)
            send_forward(d, req, r.owner, r.fence, false, body, len);
        cq_routes_put(d->routes, req->session_id, r.owner, r.fence);
    } else {
        cq_routes_forget(d->routes, req->session_id);
    }
    free(body);
    return routed;
}

/* One audit record for a request that reached this dispatcher (fleet/audit.h). */
static void audit(struct cq_dispatcher *d, const rd_kafka_message_t *msg,
                  const struct cq_opened *op, const char *outcome, enum cq_result_error code,
                  const char *reason)
{
    struct cq_audit_record r = {
        .event = "request",
        .outcome = outcome,
        .error_code = code != CQ_RESULT_OK ? cq_result_error_name(code) : NULL,
        .reason = reason,
        .req = op != NULL ? op->req : NULL,
        .key_id = op != NULL ? op->key_id : NULL,
        .bytes = msg->len,
    };
    cq_audit_emit(d->audit, &r);
}

/* An error reply that is not the request's stored outcome (refusals: refuse(),
 * over_quota()). */
static void reply_unstored(struct cq_dispatcher *d, const Codeq__V1__Request *req,
                           enum cq_result_error code, const char *text)
{
    uint8_t *bytes;
    size_t len;
    struct cq_error err;
    if (cq_codec_error_response(req->request_id, req->session_id, code, text, &bytes, &len, &err) <
        0)
        reply_fallback(d, req, false, &err);
    else
        reply(d, req, bytes, len);
}

/* A refusal of a request that never was admitted: answered (when it names a reply topic
 * its tenant may use) but never stored, because its request id is not its sender's to
 * claim: a forged message must not settle another client's request under that id. */
static void refuse(struct cq_dispatcher *d, const rd_kafka_message_t *msg,
                   const struct cq_opened *op, enum cq_result_error code, const char *why)
{
    const Codeq__V1__Request *req = op->req;
    char text[600];
    snprintf(text, sizeof(text), "%s: %s",
             code == CQ_RESULT_ACCESS_DENIED ? "access denied" : "invalid request", why);
    cq_dm_request(d->metrics, req);
    if (req != NULL) /* else not a request at all: dead-lettered as malformed */
        cq_dm_refused(d->metrics, code == CQ_RESULT_ACCESS_DENIED ? "auth" : "invalid");
    audit(d, msg, op, "refused", code, text);
    dead_letter(d, msg, text);
    /* A keyless fleet has no tenants' topics: whatever tenant a request names there. */
    if (req == NULL || req->request_id == NULL || req->request_id[0] == '\0' ||
        !cq_codec_topic_name_ok(req->reply_topic) ||
        cq_fleet_reply_topic_refused(&d->cfg, req->reply_topic,
                                     d->keys != NULL ? tenant_of(req) : "") != NULL)
        return;
    reply_unstored(d, req, code, text);
}

/* A quota's refusal: answered, audited, and not stored, so that the same request sent
 * again later (the client's retry after a back-off) runs then. */
static void over_quota(struct cq_dispatcher *d, const Codeq__V1__Request *req, const char *why)
{
    struct cq_audit_record r = {
        .event = "request",
        .outcome = "refused",
        .error_code = cq_result_error_name(CQ_RESULT_LIMIT_EXCEEDED),
        .reason = why,
        .req = req,
        .key_id = d->op != NULL ? d->op->key_id : NULL,
    };
    cq_audit_emit(d->audit, &r);
    cq_dm_refused(d->metrics, "quota"); /* unless over_rate() said "rate" */
    reply_unstored(d, req, CQ_RESULT_LIMIT_EXCEEDED, why);
}

/* The tenant's requests per second, counted in Redis over every dispatcher: true when
 * this one is past the quota (and answered). Redis unreachable: let it pass, as every
 * other decision that needs Redis then fails on its own. */
static bool over_rate(struct cq_dispatcher *d, const Codeq__V1__Request *req)
{
    uint64_t rps = d->quota.rps;
    if (rps == 0)
        return false;
    uint64_t count = 0;
    struct cq_error err;
    if (cq_store_count_request(d->store, tenant_of(req), &count, &err) < 0 || count <= rps)
        return false;
    char text[200];
    snprintf(text, sizeof(text),
             "tenant '%s' sent more than %llu requests this second, its quota (rps): slow down",
             tenant_of(req), (unsigned long long)rps);
    cq_dm_refused(d->metrics, "rate");
    over_quota(d, req, text);
    return true;
}

/* A cancel is not a call: nothing of it is recorded, deduplicated or counted against
 * the tenant's executions. It goes to the session's owner as it came (a signed one
 * still verifiable there), and the owner answers it, matching it only against the
 * tenant's own calls. A session that is not the tenant's is answered as one that does
 * not exist, and nothing is stored under the cancel's id. */
static void cancel_call(struct cq_dispatcher *d, const Codeq__V1__Request *req)
{
    struct cq_session_info info;
    bool found = false;
    char owner[64] = "";
    uint64_t fence = 0;
    struct cq_error err;
    if (cq_store_session_info(d->store, req->session_id, tenant_of(req), &info, &found, &err) < 0 ||
        (found &&
         cq_store_owner(d->store, req->session_id, owner, sizeof(owner), &fence, &err) < 0)) {
        reply_unstored(d, req, CQ_RESULT_INTERNAL, err.msg);
        return;
    }
    if (!found || owner[0] == '\0') {
        reply_unstored(d, req, CQ_RESULT_NOT_FOUND,
                       "no such session (it ended, or it is not this tenant's)");
        return;
    }
    uint8_t *body;
    size_t len;
    if (pack_wire(d, req, &body, &len, &err) < 0) {
        reply_unstored(d, req, CQ_RESULT_INTERNAL, err.msg);
        return;
    }
    send_forward(d, req, owner, fence, false, body, len);
    free(body);
}

static void handle_request(struct cq_dispatcher *d, const rd_kafka_message_t *msg)
{
    struct cq_opened op;
    struct cq_error err;
    int64_t window = (int64_t)d->cfg.auth_window * 1000;
    int opened = cq_auth_open(d->keys, msg->payload, msg->len, cq_unix_ms(), window, &op, &err);
    cq_tracing_request(&d->trace->w3c, opened == 0 ? op.req : NULL);
    cq_tracing_log(&d->trace->w3c);
    if (opened < 0) {
        refuse(d, msg, &op,
               err.code == CQ_EDENIED ? CQ_RESULT_ACCESS_DENIED : CQ_RESULT_INVALID_ARGUMENT,
               err.msg);
        cq_opened_free(&op);
        return;
    }
    Codeq__V1__Request *req = op.req;
    cq_dm_request(d->metrics, req);
    const char *why = cq_codec_invalid(req);
    if (why != NULL) {
        refuse(d, msg, &op, CQ_RESULT_INVALID_ARGUMENT, why);
        cq_opened_free(&op);
        return;
    }
    if ((why = cq_fleet_reply_topic_refused(&d->cfg, req->reply_topic, tenant_of(req))) != NULL) {
        /* No reply: the one place it could go is the topic refused. */
        char text[256];
        snprintf(text, sizeof(text), "invalid request: %s", why);
        audit(d, msg, &op, "refused", CQ_RESULT_INVALID_ARGUMENT, text);
        cq_dm_refused(d->metrics, "reply_topic");
        dead_letter(d, msg, text);
        cq_opened_free(&op);
        return;
    }
    d->op = &op;
    quota_of(d, tenant_of(req), &d->quota);
    if (over_rate(d, req)) {
        d->op = NULL;
        cq_opened_free(&op);
        return;
    }
    if (req->operation_case == CODEQ__V1__REQUEST__OPERATION_CANCEL_CALL) {
        audit(d, msg, &op, "admitted", CQ_RESULT_OK, NULL);
        cancel_call(d, req);
        d->op = NULL;
        cq_opened_free(&op);
        return;
    }
    if (fast_forward(d, req)) {
        audit(d, msg, &op, "admitted", CQ_RESULT_OK, NULL);
        d->op = NULL;
        cq_opened_free(&op);
        return;
    }
    enum cq_request_state state = CQ_REQ_NONE;
    char worker[64] = "", digest[CQ_STORE_DIGEST_LEN + 1] = "", mine[CQ_STORE_DIGEST_LEN + 1];
    if (cq_store_request_state(d->store, req->request_id, &state, worker, sizeof(worker), digest,
                               &err) < 0)
        cq_log_event(CQ_LOG_ERROR, "request_lookup_failed",
                     CQ_FIELDS(CQ_LS("request_id", req->request_id),
                               CQ_LS("session_id", req->session_id),
                               CQ_LS("tenant", tenant_of(req)), CQ_LS("error", err.msg)),
                     "request %s: %s", req->request_id, err.msg);
    digest_of(d, mine);
    if (state != CQ_REQ_NONE && op.is_signed && strcmp(digest, mine) != 0) {
        /* A request id is its first sender's: another request under it (a replay with
         * other content, another tenant's) neither runs nor gets the first one's reply. */
        refuse(d, msg, &op, CQ_RESULT_ACCESS_DENIED,
               "request id already used for a different request (a replay with other content?)");
        d->op = NULL;
        cq_opened_free(&op);
        return;
    }
    audit(d, msg, &op, "admitted", CQ_RESULT_OK, NULL);
    if (state == CQ_REQ_RUNNING && worker[0] != '\0' &&
        req->operation_case != CODEQ__V1__REQUEST__OPERATION_START_SESSION) {
        forward_repeat(d, req, worker);
    } else if (state == CQ_REQ_DONE) {
        uint8_t *bytes = NULL;
        size_t len = 0;
        if (cq_store_result(d->store, req->request_id, &bytes, &len, &err) == 0 && bytes != NULL) {
            cq_dm_replayed(d->metrics);
            reply(d, req, bytes, len);
        }
    } else if (req->deadline_unix_ms != 0 && req->deadline_unix_ms < cq_unix_ms() &&
               state == CQ_REQ_NONE) {
        reply_error(d, req, CQ_RESULT_TIMED_OUT, "the request's deadline passed before it ran");
    } else {
        switch (req->operation_case) {
        case CODEQ__V1__REQUEST__OPERATION_START_SESSION:
            if (state == CQ_REQ_NONE)
                start_session(d, req);
            else
                resume_start(d, req, state);
            break;
        case CODEQ__V1__REQUEST__OPERATION_LIST_SESSIONS:
        case CODEQ__V1__REQUEST__OPERATION_GET_SESSION:
            answer_from_store(d, req);
            break;
        default:
            route(d, req);
            break;
        }
    }
    d->op = NULL;
    cq_opened_free(&op);
}

static void handle(struct cq_dispatcher *d, rd_kafka_message_t *msg)
{
    struct cq_trace trace;
    cq_trace_read(&trace, msg);
    cq_trace_stamp(&trace, "d.poll");
    d->trace = &trace; /* its stamps are off without the header */
    cq_dm_begin(d->metrics, msg);
    handle_request(d, msg);
    cq_dm_end(d->metrics);
    cq_tracing_end(&trace.w3c, "codeq.dispatch", CQ_SPAN_CONSUMER);
    cq_tracing_log(NULL);
    d->trace = NULL;
}

/* ---- dead workers ------------------------------------------------------------------- */

static void reroute(void *ctx, struct cq_opened *op)
{
    struct cq_dispatcher *d = ctx;
    /* Even a startSession has its session recorded by now: route() moves it. */
    d->op = op;
    quota_of(d, tenant_of(op->req), &d->quota);
    route(d, op->req);
    d->op = NULL;
}

static void recover_dead_workers(struct cq_dispatcher *d)
{
    struct cq_worker_status live[1];
    char dead[64][64];
    size_t n_live, n_dead = 0;
    struct cq_error err;
    if (cq_store_workers(d->store, live, 0, &n_live, dead, 64, &n_dead, &err) < 0 ||
        (wait_for_leases(d) &&
         cq_store_workers(d->store, live, 0, &n_live, dead, 64, &n_dead, &err) < 0))
        return;
    for (size_t i = 0; i < n_dead; i++) {
        char lock[128];
        snprintf(lock, sizeof(lock), "recover:%s", dead[i]);
        bool taken = false;
        if (cq_store_lock(d->store, lock, 10000, &taken, &err) < 0 || !taken)
            continue;
        size_t settled = 0;
        if (cq_fleet_recover(d->store, d->producer, dead[i], reroute, d, &settled, &err) < 0) {
            cq_log_event(CQ_LOG_ERROR, "worker_recovery_failed",
                         CQ_FIELDS(CQ_LS("worker_id", dead[i]), CQ_LS("error", err.msg)),
                         "recover worker %s: %s", dead[i], err.msg);
            continue;
        }
        if (cq_kafka_wait(d->producer, &d->batch, 30000, &err) < 0)
            cq_log_event(CQ_LOG_ERROR, "worker_recovery_failed",
                         CQ_FIELDS(CQ_LS("worker_id", dead[i]), CQ_LS("error", err.msg)),
                         "recover worker %s: %s", dead[i], err.msg);
        if (settled > 0)
            cq_log_event(CQ_LOG_WARN, "worker_lost",
                         CQ_FIELDS(CQ_LS("worker_id", dead[i]), CQ_LI("settled", settled)),
                         "worker %s is gone: settled %zu of its requests", dead[i], settled);
        char ids[1][64];
        size_t left = 0;
        if (cq_store_inflight(d->store, dead[i], ids, 1, &left, &err) == 0 && left == 0)
            cq_store_forget_worker(d->store, dead[i], &err);
    }
}

/* ---- lifecycle ---------------------------------------------------------------------- */

int cq_dispatcher_create(const struct cq_fleet_config *cfg, struct cq_dispatcher **out,
                         struct cq_error *err)
{
    struct cq_dispatcher *d = calloc(1, sizeof(*d));
    if (d == NULL)
        return cq_error_sys(err, ENOMEM, "allocate dispatcher");
    d->cfg = *cfg;
    d->routes = cq_routes_new();
    if (d->routes == NULL) {
        cq_error_sys(err, ENOMEM, "allocate the routes");
        goto fail;
    }
    if (cq_keys_open(cfg, &d->keyring, &d->keys, err) < 0)
        goto fail;
    if (cfg->audit_topic[0] != '\0') {
        char host[64] = "";
        gethostname(host, sizeof(host) - 1);
        snprintf(d->audit_sink.producer, sizeof(d->audit_sink.producer), "dispatcher-%s-%d-%lld",
                 host, (int)getpid(), (long long)cq_unix_ms());
        d->audit_sink.kafka = &d->producer;
        d->audit_sink.topic = d->cfg.audit_topic;
        if (cq_audit_open(d->audit_sink.producer, cfg->audit_key_file,
                          strcmp(cfg->audit_content, "on") == 0, cq_audit_kafka_sink,
                          &d->audit_sink, &d->audit, err) < 0)
            goto fail;
    }
    if (cq_store_open(cfg, &d->store, err) < 0)
        goto fail;
    cq_store_set_cancel(d->store, &d->stopping);
    if (cq_kafka_producer(cfg, &d->producer, err) < 0 ||
        cq_kafka_ensure_topic(d->producer, cfg->request_topic, 8, err) < 0 ||
        cq_kafka_ensure_topic(d->producer, cfg->dlq_topic, 1, err) < 0 ||
        (cfg->audit_topic[0] != '\0' &&
         cq_kafka_ensure_topic(d->producer, cfg->audit_topic, 1, err) < 0))
        goto fail;
    char group[256];
    cq_fleet_dispatcher_group(cfg, group, sizeof(group));
    cq_fleet_dispatcher_id(d->id, sizeof(d->id));
    d->started_ms = cq_unix_ms();
    if (cq_kafka_consumer(cfg, group, cfg->request_topic, &d->consumer, err) < 0 ||
        cq_dm_start(cfg, d->store, d->consumer, &d->stopping, &d->metrics, err) < 0)
        goto fail;
    *out = d;
    return 0;
fail:
    cq_dispatcher_destroy(d);
    return -1;
}

void cq_dispatcher_stop(struct cq_dispatcher *d)
{
    atomic_store(&d->stopping, true);
}

/* ---- acknowledgements -------------------------------------------------------------- */

/* A forward the broker refused (too large for the worker's topic, the topic missing,
 * not authorized) never reaches its worker, and nothing else would answer its request:
 * it gets an error reply, stored as its outcome, if it still waits for that worker. A
 * copy sent early on a stale route, or a repeat of a running request, leaves the
 * answer to the copy that went where Redis says. */
static void forward_refused(struct cq_dispatcher *d, const struct sent *s, rd_kafka_resp_err_t e)
{
    char text[512];
    snprintf(text, sizeof(text), "the broker refused to take the request to worker %s: %s",
             s->worker, s->refused[0] ? s->refused : rd_kafka_err2str(e));
    enum cq_request_state state = CQ_REQ_NONE;
    char worker[64] = "";
    struct cq_error err;
    if (cq_store_request_state(d->store, s->request_id, &state, worker, sizeof(worker), NULL,
                               &err) < 0) {
        cq_log_event(CQ_LOG_ERROR, "forward_refused_unanswered",
                     CQ_FIELDS(CQ_LS("request_id", s->request_id),
                               CQ_LS("session_id", s->session_id), CQ_LS("worker_id", s->worker),
                               CQ_LS("reason", text), CQ_LS("error", err.msg)),
                     "request %s: %s; not answered: %s", s->request_id, text, err.msg);
        return;
    }
    if (state != CQ_REQ_FORWARDED || strcmp(worker, s->worker) != 0) {
        cq_log_event(CQ_LOG_WARN, "forward_refused_stale",
                     CQ_FIELDS(CQ_LS("request_id", s->request_id),
                               CQ_LS("session_id", s->session_id), CQ_LS("worker_id", s->worker),
                               CQ_LS("reason", text)),
                     "request %s: %s (another copy answers it)", s->request_id, text);
        return;
    }
    cq_log_event(CQ_LOG_ERROR, "forward_refused",
                 CQ_FIELDS(CQ_LS("request_id", s->request_id), CQ_LS("session_id", s->session_id),
                           CQ_LS("worker_id", s->worker), CQ_LS("reason", text)),
                 "request %s: %s; answered with an error", s->request_id, text);
    Codeq__V1__Request req = CODEQ__V1__REQUEST__INIT;
    req.request_id = (char *)s->request_id;
    req.session_id = (char *)s->session_id;
    req.reply_topic = (char *)s->reply_topic;
    bool too_large =
        e == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE || e == RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE;
    reply_error(d, &req, too_large ? CQ_RESULT_LIMIT_EXCEEDED : CQ_RESULT_INTERNAL, text);
}

/* Settles what the broker has answered for: a refused forward is answered
 * (forward_refused()), a refused reply or dead letter is logged and dropped (the
 * reply is stored or recomputed for a client that sends the request again; a reply
 * topic is its client's, which may have deleted it). Messages the broker did not
 * take in time are counted in *unanswered: their requests must be read again. Returns
 * the number still on their way. */
static size_t settle(struct cq_dispatcher *d, size_t *unanswered)
{
    rd_kafka_poll(d->producer, 0);
    /* Detached first: answering a refused forward sends (and tracks) a reply. */
    struct sent *done = NULL;
    size_t pending = 0;
    for (struct sent **link = &d->sent; *link != NULL;) {
        struct sent *s = *link;
        if (__atomic_load_n(&s->delivery->pending, __ATOMIC_SEQ_CST) > 0) {
            pending++;
            link = &s->next;
            continue;
        }
        *link = s->next;
        s->next = done;
        done = s;
    }
    while (done != NULL) {
        struct sent *s = done;
        done = s->next;
        rd_kafka_resp_err_t e = s->delivery->last_error;
        if (__atomic_load_n(&s->delivery->failed, __ATOMIC_SEQ_CST) == 0) {
            /* delivered */
        } else if (!cq_kafka_refused(e)) {
            cq_log_event(CQ_LOG_WARN, "delivery_unacknowledged",
                         CQ_FIELDS(CQ_LS("request_id", s->request_id),
                                   CQ_LS("session_id", s->session_id),
                                   CQ_LS("kind", s->forward ? "forward" : "reply"),
                                   CQ_LS("worker_id", s->forward ? s->worker : NULL),
                                   CQ_LS("topic", s->forward ? NULL : s->reply_topic),
                                   CQ_LS("error", rd_kafka_err2str(e))),
                         "request %s: %s to %s not acknowledged: %s", s->request_id,
                         s->forward ? "forward" : "reply", s->forward ? s->worker : s->reply_topic,
                         rd_kafka_err2str(e));
            (*unanswered)++;
        } else if (s->forward) {
            forward_refused(d, s, e);
        } else {
            const char *why = s->refused[0] ? s->refused : rd_kafka_err2str(e);
            cq_log_event(CQ_LOG_WARN, "reply_refused",
                         CQ_FIELDS(CQ_LS("request_id", s->request_id),
                                   CQ_LS("session_id", s->session_id),
                                   CQ_LS("topic", s->reply_topic), CQ_LS("error", why)),
                         "request %s: the broker refused its reply to %s: %s; dropped",
                         s->request_id, s->reply_topic, why);
        }
        cq_delivery_release(s->delivery);
        free(s);
    }
    pending += (size_t)__atomic_load_n(&d->batch.pending, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&d->batch.failed, __ATOMIC_SEQ_CST) > 0) {
        if (cq_kafka_refused(d->batch.last_error)) {
            cq_log_event(CQ_LOG_ERROR, "dead_letters_refused",
                         CQ_FIELDS(CQ_LI("count", d->batch.failed),
                                   CQ_LS("topic", d->cfg.dlq_topic),
                                   CQ_LS("error", rd_kafka_err2str(d->batch.last_error))),
                         "the broker refused %d dead letters to %s: %s; dropped", d->batch.failed,
                         d->cfg.dlq_topic, rd_kafka_err2str(d->batch.last_error));
        } else {
            cq_log_event(CQ_LOG_WARN, "dead_letters_unacknowledged",
                         CQ_FIELDS(CQ_LI("count", d->batch.failed),
                                   CQ_LS("topic", d->cfg.dlq_topic),
                                   CQ_LS("error", rd_kafka_err2str(d->batch.last_error))),
                         "%d dead letters not acknowledged: %s", d->batch.failed,
                         rd_kafka_err2str(d->batch.last_error));
            (*unanswered)++;
        }
        __atomic_store_n(&d->batch.failed, 0, __ATOMIC_SEQ_CST);
    }
    return pending;
}

/* Stores the offsets consumed so far for commit once the broker has answered for
 * everything their messages produced, which it does within message.timeout.ms (30 s)
 * or, for a topic that does not exist, CQ_KAFKA_TOPIC_PROPAGATION_MS. A message it
 * refused is settled (settle()) and its offset stored all the same: the request was
 * answered, and reading it again would only meet the same refusal. Messages it did not
 * take in time (the broker unreachable) rewind the consumer to the first offsets
 * (first) instead, so that their requests are read and handled again once it is back,
 * which the claims and stored replies make harmless. Returns true when the offsets
 * are done with (stored or rewound); without wait, it is false at once while answers
 * are still to come: waiting for them after each batch woke the dispatcher while its
 * forward travelled, competing with it for the CPU. */
static bool store_offsets(struct cq_dispatcher *d, rd_kafka_topic_partition_list_t *consumed,
                          rd_kafka_topic_partition_list_t *first, bool wait)
{
    size_t unanswered = 0;
    uint64_t until = cq_now_ms() + 60000;
    size_t pending = settle(d, &unanswered);
    while (wait && pending > 0 && cq_now_ms() < until) {
        rd_kafka_poll(d->producer, 5);
        pending = settle(d, &unanswered);
    }
    if (unanswered > 0) {
        rd_kafka_error_t *e = rd_kafka_seek_partitions(d->consumer, first, 10000);
        if (e != NULL) {
            cq_log_event(
                CQ_LOG_ERROR, "rewind_failed",
                CQ_FIELDS(CQ_LI("count", unanswered), CQ_LS("error", rd_kafka_error_string(e))),
                "rewind to read requests again: %s", rd_kafka_error_string(e));
            rd_kafka_error_destroy(e);
        } else {
            cq_log_event(CQ_LOG_WARN, "requests_read_again", CQ_FIELDS(CQ_LI("count", unanswered)),
                         "%zu messages not acknowledged: reading their requests again", unanswered);
        }
        return true;
    }
    if (pending > 0) {
        if (wait)
            cq_log_event(CQ_LOG_WARN, "acknowledgements_overdue",
                         CQ_FIELDS(CQ_LI("count", pending)),
                         "%zu messages still not acknowledged after 60 s", pending);
        return false;
    }
    /* Stored, then committed by librdkafka within 200 ms (cq_kafka_consumer): a crash
     * before that consumes these requests again, which the claims and stored replies
     * make harmless. A partition revoked meanwhile refuses the store; its next owner
     * reads the requests again, just as harmlessly. */
    if (consumed->cnt > 0) {
        rd_kafka_resp_err_t e = rd_kafka_offsets_store(d->consumer, consumed);
        if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
            cq_log_event(CQ_LOG_WARN, "offsets_not_stored",
                         CQ_FIELDS(CQ_LS("error", rd_kafka_err2str(e))), "store offsets: %s",
                         rd_kafka_err2str(e));
    }
    return true;
}

/* Records msg as consumed: the next offset to commit of its partition in consumed, the
 * first one not yet stored in first (where a rewind goes back to). */
static void consumed_add(rd_kafka_topic_partition_list_t *consumed,
                         rd_kafka_topic_partition_list_t *first, const rd_kafka_message_t *msg)
{
    const char *topic = rd_kafka_topic_name(msg->rkt);
    rd_kafka_topic_partition_t *p =
        rd_kafka_topic_partition_list_find(consumed, topic, msg->partition);
    if (p == NULL) {
        p = rd_kafka_topic_partition_list_add(consumed, topic, msg->partition);
        rd_kafka_topic_partition_list_add(first, topic, msg->partition)->offset = msg->offset;
    }
    p->offset = msg->offset + 1; /* the next to read, as Kafka counts */
}

int cq_dispatcher_run(struct cq_dispatcher *d, struct cq_error *err)
{
    cq_store_log_encryption(d->store);
    cq_log_event(CQ_LOG_INFO, "dispatcher_started", CQ_FIELDS(CQ_LS("topic", d->cfg.request_topic)),
                 "dispatching %s", d->cfg.request_topic);
    uint64_t next_recovery = 0; /* intervals: the monotonic clock, which never jumps */
    /* Offsets consumed and not yet stored: their messages' output is not all
     * acknowledged yet. Stored as soon as it is, or after waiting once they are a
     * second old (a steady stream may never leave nothing in flight). */
    rd_kafka_topic_partition_list_t *consumed = NULL, *first = NULL;
    uint64_t consumed_since = 0;
    int rc = 0;
    while (!atomic_load(&d->stopping)) {
        size_t handled = 0;
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(d->consumer, consumed ? 10 : 100);
        while (msg != NULL) {
            if (msg->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
                handle(d, msg);
                if (consumed == NULL) {
                    consumed = rd_kafka_topic_partition_list_new(8);
                    first = rd_kafka_topic_partition_list_new(8);
                    consumed_since = cq_now_ms();
                }
                consumed_add(consumed, first, msg);
            } else if (msg->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                cq_log_event(CQ_LOG_WARN, "consume_failed",
                             CQ_FIELDS(CQ_LS("error", rd_kafka_message_errstr(msg)),
                                       CQ_LS("code", rd_kafka_err2name(msg->err))),
                             "consume: %s", rd_kafka_message_errstr(msg));
            }
            rd_kafka_message_destroy(msg);
            handled++;
            msg = handled < BATCH_MAX ? rd_kafka_consumer_poll(d->consumer, 0) : NULL;
        }
        if (consumed != NULL) {
            if (store_offsets(d, consumed, first, cq_now_ms() - consumed_since > 1000)) {
                rd_kafka_topic_partition_list_destroy(consumed);
                rd_kafka_topic_partition_list_destroy(first);
                consumed = first = NULL;
            }
        } else {
            size_t unanswered = 0; /* recovery's: logged; recovery meets them again */
            settle(d, &unanswered);
        }
        if (cq_now_ms() >= next_recovery) {
            recover_dead_workers(d);
            struct cq_error ignored; /* Redis down: recovery has said so */
            unsigned beat =
                d->cfg.heartbeat_ms > RECOVERY_PERIOD ? d->cfg.heartbeat_ms : RECOVERY_PERIOD;
            cq_store_dispatcher_beat(d->store, d->id, d->started_ms, 3 * beat, &ignored);
            next_recovery = cq_now_ms() + RECOVERY_PERIOD;
        }
        /* The one failure that is this process's own: an idempotent producer that can
         * no longer order its messages. A new process starts with a new producer. */
        char why[256];
        if (rd_kafka_fatal_error(d->producer, why, sizeof(why)) != RD_KAFKA_RESP_ERR_NO_ERROR) {
            rc = cq_error_set(err, CQ_EINTERNAL, "kafka producer failed: %s", why);
            break;
        }
    }
    if (consumed != NULL) {
        /* Not stored: another dispatcher consumes these requests again. */
        if (rc == 0 && !store_offsets(d, consumed, first, true))
            cq_log_event(CQ_LOG_WARN, "stopping_unacknowledged", CQ_NO_FIELDS,
                         "stopping with requests not acknowledged");
        rd_kafka_topic_partition_list_destroy(consumed);
        rd_kafka_topic_partition_list_destroy(first);
    }
    if (rc < 0)
        return -1;
    cq_log_event(CQ_LOG_INFO, "dispatcher_stopping", CQ_NO_FIELDS, "stopping");
    struct cq_error ignored;
    cq_store_dispatcher_gone(d->store, d->id, &ignored);
    rd_kafka_consumer_close(d->consumer);
    rd_kafka_flush(d->producer, 10000);
    return 0;
}

void cq_dispatcher_destroy(struct cq_dispatcher *d)
{
    if (d == NULL)
        return;
    cq_dm_destroy(d->metrics, d->store);
    if (d->consumer != NULL)
        rd_kafka_destroy(d->consumer);
    if (d->producer != NULL)
        rd_kafka_destroy(d->producer); /* its pending reports release their references */
    while (d->sent != NULL) {
        struct sent *s = d->sent;
        d->sent = s->next;
        cq_delivery_release(s->delivery);
        free(s);
    }
    cq_store_close(d->store);
    cq_keystore_close(d->keys);
    cq_keyring_close(d->keyring);
    cq_audit_close(d->audit);
    cq_routes_free(d->routes);
    free(d);
}
