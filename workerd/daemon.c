/* workerd/daemon.c - codeq-worker's request loop (docs/fleet.md).
 *
 * Threads: the main thread consumes the worker's topic and queues each request on its
 * session; a session's queue is drained by one thread at a time, so a session's
 * requests run in order while sessions run in parallel; a heartbeat thread publishes
 * liveness and capacity. Exactly-once execution does not rest on Kafka offsets: a
 * request runs only after the atomic claim in Redis (forwarded to this worker ->
 * running), and its final reply is stored in Redis once published (finish()), so a
 * duplicate delivery gets the stored reply and never a second run. */
#define _GNU_SOURCE
#include "workerd/workerd.h"
#include "workerd/daemon_internal.h"
#include "workerd/metrics.h"
#include "common/clock.h"
#include "common/random.h"
#include "common/units.h"
#include "fleet/audit.h"
#include "fleet/auth.h"
#include "fleet/claim.h"
#include "fleet/keyring.h"
#include "fleet/keys.h"
#include "fleet/codec.h"
#include "fleet/kafka.h"
#include "fleet/log.h"
#include "fleet/store.h"
#include "fleet/trace.h"
#include "fleet/tracing.h"
#include "worker/worker.h"
#include "workerd/exec_log.h"
#include "workerd/interp.h"
#include "workerd/snapshot.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct queued {
    Codeq__V1__Request *req;
    char digest[CQ_STORE_DIGEST_LEN + 1]; /* of a signed request, else "" */
    char key_id[32];                      /* the key that signed it, else "" */
    uint64_t fence;                       /* from the codeq-fence header */
    bool early;           /* sent while Redis records it (fleet/kafka.h, CQ_FLEET_EARLY_HEADER) */
    int64_t requested_ms; /* its arrival on the request topic (Unix ms), or 0 */
    bool cancelled;       /* a cancel_call came for it while it waited: it does not run */
    struct cq_trace trace;
    struct queued *next;
};

/* The trace of the request this thread handles (fleet/trace.h), or NULL. */
static __thread struct cq_trace *tracing;
/* The key that signed the request this thread handles ("" unsigned), for its audit record. */
static __thread const char *signed_by;

/* With d->lock held. */
static struct held *held_find(struct cq_daemon *d, const char *id, bool create)
{
    for (struct held *h = d->held; h != NULL; h = h->next)
        if (strcmp(h->id, id) == 0)
            return h;
    if (!create)
        return NULL;
    struct held *h = calloc(1, sizeof(*h));
    if (h != NULL && (h->delivery = cq_delivery_new()) == NULL) {
        free(h);
        h = NULL;
    }
    if (h == NULL)
        return NULL;
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&h->wake, &attr);
    pthread_condattr_destroy(&attr);
    snprintf(h->id, sizeof(h->id), "%s", id);
    h->next = d->held;
    d->held = h;
    return h;
}

static void unstored_free(struct held *h)
{
    if (h->unstored != h->fallback)
        free(h->unstored);
    h->unstored = NULL;
}

/* With d->lock held; h must be idle. */
static void held_forget(struct cq_daemon *d, struct held *h)
{
    for (struct held **link = &d->held; *link != NULL; link = &(*link)->next) {
        if (*link == h) {
            *link = h->next;
            cq_manifest_free(&h->manifest);
            cq_delivery_release(h->delivery);
            free(h->start);
            unstored_free(h);
            pthread_cond_destroy(&h->wake);
            free(h);
            return;
        }
    }
}

/* ---- chores: what follows a reply off its path -------------------------------------- */

/* Removing a request from the in-flight set and writing the session's facts used to
 * follow each reply at once: two Redis commands that competed for the CPU with the
 * reply's own way to its client, on a host whose few CPUs the reply's hop needs too
 * (docs/performance.md has what that cost). Nothing waits for them: a request left in
 * the set is settled again by recovery (a stored reply republished, harmless), and
 * facts are what getSession reads. */
static void chore_answered(struct held *h, const char *request_id)
{
    if (h->n_answered == 0 && !h->facts_due)
        h->chores_since = (int64_t)cq_now_ms();
    if (h->n_answered < CHORES_MAX)
        snprintf(h->answered[h->n_answered++], sizeof(h->answered[0]), "%s", request_id);
}

static void chore_facts(struct held *h)
{
    if (h->n_answered == 0 && !h->facts_due)
        h->chores_since = (int64_t)cq_now_ms();
    h->facts_due = true;
}

static bool chores_pending(const struct held *h)
{
    return h->n_answered > 0 || h->facts_due;
}

static bool chores_overdue(const struct held *h)
{
    return h->n_answered >= CHORES_MAX ||
           (chores_pending(h) && (int64_t)cq_now_ms() - h->chores_since >= CHORES_AGE_MS);
}

static void facts(struct cq_daemon *d, struct held *h);
static void store_unstored(struct cq_daemon *d, struct held *h);

static void do_chores(struct cq_daemon *d, struct held *h)
{
    struct cq_error err;
    store_unstored(d, h); /* a request leaves the in-flight set only once stored */
    /* Replies that Kafka did not take in time stay in the in-flight set, all of them
     * (which one failed is not known here), and their requests' bodies with them
     * (cq_store_finish() keeps a body while its request is in the set): once this
     * worker is gone (stopped or lost), recovery publishes their stored replies again;
     * until then a client that sends the request again gets its reply. Replies the
     * broker refused (their topic gone, too large, not authorized) would only be
     * refused again: they leave it as delivered ones do. Both are stored, for a client
     * that sends the request again. */
    bool settled = true; /* every reply delivered or refused */
    if (h->delivery != NULL && cq_kafka_wait(d->producer, h->delivery, 30000, &err) < 0) {
        settled = __atomic_load_n(&h->delivery->pending, __ATOMIC_SEQ_CST) == 0 &&
                  cq_kafka_refused(h->delivery->last_error);
        cq_log_event(settled ? CQ_LOG_WARN : CQ_LOG_ERROR,
                     settled ? "replies_refused" : "replies_not_delivered",
                     CQ_FIELDS(CQ_LS("session_id", h->id), CQ_LS("error", err.msg)),
                     "session %s: replies %s: %s", h->id,
                     settled ? "refused by the broker, dropped" : "not delivered", err.msg);
        cq_delivery_release(h->delivery); /* its reports, if any come, keep it alive */
        h->delivery = cq_delivery_new();
    }
    if (settled && h->n_answered > 0 &&
        cq_store_inflight_done_many(d->store, d->cfg.worker_id, h->answered, h->n_answered, &err) <
            0)
        cq_log_event(CQ_LOG_WARN, "inflight_not_updated",
                     CQ_FIELDS(CQ_LS("session_id", h->id), CQ_LI("count", h->n_answered),
                               CQ_LS("error", err.msg)),
                     "session %s: in-flight set not updated: %s", h->id, err.msg);
    h->n_answered = 0;
    if (h->facts_due && h->local)
        facts(d, h);
    h->facts_due = false;
}

/* ---- replies ------------------------------------------------------------------------ */

/* Publishes a final reply; true when Kafka took it (acknowledged later, do_chores()). */
static bool publish_final(struct cq_daemon *d, struct held *h, const Codeq__V1__Request *req,
                          const uint8_t *bytes, size_t len)
{
    struct cq_error err;
    cq_trace_stamp(tracing, "w.reply");
    if (cq_fleet_publish(d->producer, req, "final", bytes, len, h->delivery, tracing, &err) < 0) {
        cq_wd_log_request(CQ_LOG_ERROR, "reply_not_delivered", req, err.msg,
                          "request %s: reply not delivered: %s", req->request_id, err.msg);
        return false;
    }
    cq_wm_replied(d->metrics);
    chore_answered(h, req->request_id);
    return true;
}

/* Stores the session's published, unstored reply in Redis (only if this worker still
 * holds the request). Redis unreachable past the store's own wait: the reply is kept
 * and tried again, since while this worker lives nothing else would store a request it
 * claimed. A worker that stops gives up; recovery answers the request once the worker
 * is gone. */
static void store_unstored(struct cq_daemon *d, struct held *h)
{
    if (h->unstored == NULL)
        return;
    struct cq_error err;
    bool stored = false;
    int rc;
    while ((rc = cq_store_finish(d->store, h->unstored_id, d->cfg.worker_id, h->unstored,
                                 h->unstored_len, &stored, &err)) < 0 &&
           !atomic_load(&d->stopping)) {
        cq_log_event(CQ_LOG_WARN, "result_store_retry",
                     CQ_FIELDS(CQ_LS("request_id", h->unstored_id), CQ_LS("session_id", h->id),
                               CQ_LS("error", err.msg)),
                     "request %s: cannot store its result yet: %s", h->unstored_id, err.msg);
        sleep(1);
    }
    if (rc < 0)
        cq_log_event(CQ_LOG_ERROR, "result_not_stored",
                     CQ_FIELDS(CQ_LS("request_id", h->unstored_id), CQ_LS("session_id", h->id),
                               CQ_LS("error", err.msg)),
                     "request %s: cannot store its result: %s", h->unstored_id, err.msg);
    else if (!stored)
        cq_log_event(CQ_LOG_WARN, "answered_elsewhere",
                     CQ_FIELDS(CQ_LS("request_id", h->unstored_id), CQ_LS("session_id", h->id),
                               CQ_LB("published", h->unstored_published)),
                     "request %s: answered elsewhere (this worker was presumed lost)%s",
                     h->unstored_id,
                     h->unstored_published ? "; its own reply was published too" : "");
    unstored_free(h);
}

/* Publishes the final reply, and stores it in Redis once the reply is on its way:
 * when the session has been idle STORE_DELAY_US, or before the session's next request
 * runs (store_unstored()). Storing first, or right after publishing, put Redis's work
 * in the reply's path or beside it on the CPU (docs/performance.md has the cost of
 * each). What that gives up is confined to the moment in between: a worker
 * that dies after publishing, before Redis stored the reply, leaves the request
 * "running", so recovery stores the worker-lost error, and a client that retries the
 * request id then gets that instead of the result it had; and a worker presumed lost
 * publishes its real result beside recovery's error (clients keep the first final they
 * see). A repeat of the request meanwhile is queued behind it here (the dispatcher
 * sends repeats of running requests to their worker) and answered from Redis after the
 * store. Never a second run, and never a request without a final reply. */
static void finish_fallback(struct cq_daemon *d, struct held *h, const Codeq__V1__Request *req,
                            const struct cq_error *why);

/* Whether the dispatchers may have taken this worker for lost while the request ran: a
 * heartbeat came later than the lease since its claim, or none has come for two beats
 * (a process stopped, or starved, beats late, and recovery may already have answered
 * the request with the worker-lost error). */
static bool lease_in_doubt(struct cq_daemon *d, const struct held *h)
{
    int64_t now = (int64_t)cq_now_ms();
    return now - atomic_load(&d->beat_ok_ms) > 2 * (int64_t)d->cfg.heartbeat_ms ||
           atomic_load(&d->lease_gap_ms) >= h->claimed_ms;
}

/* With the lease in doubt, the reply is stored first and published only if Redis took
 * it as this request's outcome: publishing first (finish()) would send a second, other
 * final reply after recovery's, and one that says success for work whose files were
 * fenced off. True when settled here (published or rightly dropped); false to go the
 * usual way (the lease is fine, or Redis cannot say). */
static bool settle_first(struct cq_daemon *d, struct held *h, const Codeq__V1__Request *req,
                         const uint8_t *bytes, size_t len)
{
    if (!lease_in_doubt(d, h))
        return false;
    struct cq_error err;
    bool stored = false;
    if (cq_store_finish(d->store, req->request_id, d->cfg.worker_id, bytes, len, &stored, &err) < 0)
        return false;
    if (!stored) {
        cq_log_event(CQ_LOG_WARN, "answered_elsewhere",
                     CQ_FIELDS(CQ_LS("request_id", req->request_id), CQ_LS("session_id", h->id),
                               CQ_LS("tenant", req->tenant), CQ_LB("published", false)),
                     "request %s: answered elsewhere (this worker was presumed lost); its own "
                     "reply is not published",
                     req->request_id);
        return true;
    }
    publish_final(d, h, req, bytes, len);
    return true;
}

static void finish(struct cq_daemon *d, struct held *h, const Codeq__V1__Request *req,
                   uint8_t *bytes, size_t len)
{
    /* A reply too large for Kafka goes to Redis, and a reference to it is what is
     * published and stored (fleet/claim.h): the stored copy stays small too. */
    struct cq_error err;
    if (cq_claim_reply(d->store, req->request_id, h->id, d->cfg.claim_threshold, d->cfg.claim_ttl,
                       &bytes, &len, &err) < 0) {
        free(bytes);
        finish_fallback(d, h, req, &err);
        return;
    }
    cq_trace_stamp(tracing, "w.encoded");
    store_unstored(d, h); /* one per session at a time; normally there is none */
    if (settle_first(d, h, req, bytes, len)) {
        free(bytes);
        return;
    }
    h->unstored_published = publish_final(d, h, req, bytes, len);
    snprintf(h->unstored_id, sizeof(h->unstored_id), "%s", req->request_id);
    h->unstored = bytes;
    h->unstored_len = len;
}

/* The final reply when the real one cannot be encoded (why: out of memory, too large).
 * Dropping it would leave the request running in Redis with no reply: instead the
 * codec's fallback error, built in the session's own buffer without allocating, is
 * published and stored in its place, as finish() would. */
static void finish_fallback(struct cq_daemon *d, struct held *h, const Codeq__V1__Request *req,
                            const struct cq_error *why)
{
    cq_wd_log_request(CQ_LOG_ERROR, "reply_not_encoded", req, why->msg,
                      "request %s: reply not encoded: %s", req->request_id, why->msg);
    cq_wm_result(true);
    char message[200];
    snprintf(message, sizeof(message), "codeq: the reply could not be encoded: %s", why->msg);
    cq_trace_stamp(tracing, "w.encoded");
    store_unstored(d, h); /* h->fallback is free again after it */
    size_t len = cq_codec_fallback_response(req->request_id, req->session_id,
                                            cq_result_error_of(why->code), message, h->fallback);
    if (settle_first(d, h, req, h->fallback, len))
        return;
    h->unstored_published = publish_final(d, h, req, h->fallback, len);
    snprintf(h->unstored_id, sizeof(h->unstored_id), "%s", req->request_id);
    h->unstored = h->fallback;
    h->unstored_len = len;
}

/* finish() with what a cq_codec_*_response() call returned (rc, and err when -1). */
static void finish_packed(struct cq_daemon *d, struct held *h, const Codeq__V1__Request *req,
                          int rc, uint8_t *bytes, size_t len, const struct cq_error *err)
{
    if (rc == 0)
        finish(d, h, req, bytes, len);
    else
        finish_fallback(d, h, req, err);
}

static void finish_error(struct cq_daemon *d, struct held *h, const Codeq__V1__Request *req,
                         enum cq_result_error code, const char *message)
{
    uint8_t *bytes;
    size_t len;
    struct cq_error err;
    cq_wm_result(true);
    int rc = cq_codec_error_response(req->request_id, req->session_id, code, message, &bytes, &len,
                                     &err);
    finish_packed(d, h, req, rc, bytes, len, &err);
}

struct stream_ctx {
    struct cq_daemon *d;
    const Codeq__V1__Request *req;
    uint64_t sequence;
    const struct cq_trace *trace; /* its W3C context goes on every chunk */
};

static void on_output(void *ctx, int stream, const char *data, size_t len)
{
    struct stream_ctx *s = ctx;
    uint8_t *bytes;
    size_t n;
    struct cq_error err;
    if (cq_codec_chunk_response(s->req->request_id, s->req->session_id, stream, data, len,
                                s->sequence++, &bytes, &n, &err) < 0) {
        cq_wd_log_request(CQ_LOG_WARN, "chunk_dropped", s->req, err.msg,
                          "request %s: chunk dropped: %s", s->req->request_id, err.msg);
        return;
    }
    /* Not waited for: chunks are a courtesy, the final reply is the contract. */
    if (cq_fleet_publish(s->d->producer, s->req, "chunk", bytes, n, NULL, s->trace, &err) < 0)
        cq_wd_log_request(CQ_LOG_WARN, "chunk_dropped", s->req, err.msg,
                          "request %s: chunk dropped: %s", s->req->request_id, err.msg);
    free(bytes);
}

/* ---- sessions ----------------------------------------------------------------------- */

void cq_wd_on_session_end(void *ctx, const char *session_id)
{
    struct cq_daemon *d = ctx;
    pthread_mutex_lock(&d->lock);
    struct held *h = held_find(d, session_id, false);
    uint64_t fence = h != NULL ? h->fence : 0;
    bool discarding = h != NULL && h->discarding;
    if (h != NULL) {
        h->local = false;
        pthread_cond_signal(&h->wake); /* its thread ends now rather than lingers */
    }
    pthread_mutex_unlock(&d->lock);
    if (discarding) {
        /* Ending it in Redis too would end the session where it lives now: with the
         * token of its newest routing (handle()), the script would not even refuse. */
        cq_log_event(CQ_LOG_INFO, "stale_session_stopped",
                     CQ_FIELDS(CQ_LS("session_id", session_id), CQ_LI("fence", fence)),
                     "session %s: the stale copy here was stopped", session_id);
        return;
    }
    struct cq_error err;
    if (fence != 0 && cq_store_end_session(d->store, session_id, d->cfg.worker_id, fence, &err) < 0)
        cq_log_event(CQ_LOG_WARN, "session_end_not_stored",
                     CQ_FIELDS(CQ_LS("session_id", session_id), CQ_LI("fence", fence),
                               CQ_LS("error", err.msg)),
                     "session %s ended; its Redis keys stay: %s", session_id, err.msg);
    else
        cq_log_event(CQ_LOG_INFO, "session_ended",
                     CQ_FIELDS(CQ_LS("session_id", session_id), CQ_LI("fence", fence)),
                     "session %s ended", session_id);
}

/* The session's true creation time and time to live, over the core's (struct held). */
static void lifetime(const struct held *h, struct cq_session_info *info)
{
    if (h->ttl_s == 0)
        return;
    info->created_at_ms = h->created_ms;
    info->session_timeout_s = h->ttl_s;
}

/* Writes the session's facts, with its start parameters while Redis lacks them: the
 * session reads READY in Redis only once they are there (cq_store_session_started()). */
static void write_facts(struct cq_daemon *d, struct held *h, struct cq_session_info *info)
{
    struct cq_error err;
    lifetime(h, info);
    int rc = h->start != NULL
                 ? cq_store_session_started(d->store, h->id, d->cfg.worker_id, h->fence, info,
                                            h->start, h->start_len, &err)
                 : cq_store_session_facts(d->store, h->id, d->cfg.worker_id, h->fence, info, &err);
    if (rc < 0) {
        cq_log_event(CQ_LOG_WARN, "session_facts_not_written",
                     CQ_FIELDS(CQ_LS("session_id", h->id), CQ_LI("fence", h->fence),
                               CQ_LS("error", err.msg)),
                     "session %s: %s", h->id, err.msg);
        return;
    }
    free(h->start);
    h->start = NULL;
}

static void facts(struct cq_daemon *d, struct held *h)
{
    struct cq_session_info info;
    struct cq_error err;
    if (cq_worker_get_session(d->core, h->id, &info, &err) == 0)
        write_facts(d, h, &info);
}

/* Stops the core's copy of a session that is not this worker's under the token it has:
 * the session goes on (elsewhere, or here after an adoption), so its end is not written
 * to Redis (on_session_end()). Found by the chaos test: a session moved away and back
 * had its stale copy stopped after its fence was raised, and that end, written with the
 * new token, ended the live session.
 *
 * idle_fence != 0: only while the session is idle and local with that token (the
 * heartbeat's check, reconcile_once(), may be overtaken by a request). True when the
 * copy was stopped. */
bool cq_wd_discard(struct cq_daemon *d, const char *session_id, uint64_t idle_fence)
{
    /* By id, with h looked up under the lock each time: the heartbeat thread discards
     * idle sessions, whose entry a session thread may forget meanwhile, except while
     * it is marked (session_thread()). */
    pthread_mutex_lock(&d->lock);
    struct held *h = held_find(d, session_id, false);
    if (h == NULL || (idle_fence != 0 && !idle_local(h, idle_fence))) {
        pthread_mutex_unlock(&d->lock);
        return false;
    }
    h->discarding = true;
    h->local = false; /* a request that comes now adopts it, or is refused */
    pthread_mutex_unlock(&d->lock);
    struct cq_session_info ignored;
    struct cq_error err;
    if (cq_worker_stop_session(d->core, session_id, &ignored, &err) < 0)
        cq_log_event(CQ_LOG_WARN, "stale_session_not_stopped",
                     CQ_FIELDS(CQ_LS("session_id", session_id), CQ_LS("error", err.msg)),
                     "session %s: %s", session_id, err.msg);
    pthread_mutex_lock(&d->lock);
    h = held_find(d, session_id, false);
    if (h != NULL) {
        h->discarding = false;
        if (!h->running && !h->local)
            held_forget(d, h);
    }
    pthread_mutex_unlock(&d->lock);
    return true;
}

/* ---- start parameters ----------------------------------------------------------------
 *
 * A session adopted after a failover or a drain must run as it was started: with its
 * limits, env, name and network mode, not the worker's defaults (an adopted session
 * that came back with the default memory limit and without its env was a widening of
 * what its client asked for). The owner therefore stores the StartSession itself in
 * Redis with the session's first facts (cq_store_session_started(), fenced), and
 * adopt() starts the session from those very bytes. Storing the message rather than
 * the core's parameters keeps one mapping (params_of()) for both paths: a field that
 * StartSession gains is carried over a failover as soon as params_of() maps it, with
 * nothing to add to the store, and a worker reads what an older or newer one wrote.
 * client_token is left out: it is the idempotency of the start request, not a
 * parameter of the session. The env may hold secrets; it sits in Redis as the
 * session's files do (docs/fleet.md). */

struct start_env {
    const char *env[257]; /* NULL-terminated, for struct cq_session_params */
    char *owned[256];
    size_t n;
    enum cq_network_mode network; /* params->network points here */
};

static void start_env_free(struct start_env *e)
{
    for (size_t i = 0; i < e->n; i++)
        free(e->owned[i]);
    e->n = 0;
}

/* The core's parameters for a StartSession. The network mode: UNSPECIFIED is the
 * policy's default in a client's request; in a stored one (stored: an adoption) it was
 * written before there were modes, when every session was NONE. A mode outside the enum
 * is passed on as such, for the core to refuse. */
static void params_of(const Codeq__V1__StartSession *in, const char *id, bool stored,
                      struct cq_session_params *params, struct start_env *env)
{
    env->n = 0;
    for (size_t i = 0; i < in->n_env && i < 256; i++) {
        if (asprintf(&env->owned[env->n], "%s=%s", in->env[i]->key, in->env[i]->value) < 0)
            break;
        env->env[env->n] = env->owned[env->n];
        env->n++;
    }
    env->env[env->n] = NULL;
    *params = (struct cq_session_params){
        .id = id,
        .name = in->name[0] ? in->name : NULL,
        .timeout_s = in->session_timeout_seconds,
        .env = env->env,
        .allow = (const char *const *)in->network_allow,
        .n_allow = in->n_network_allow,
        .interpreter = in->code_interpreter_identifier,
    };
    if (in->network != CODEQ__V1__NETWORK_MODE__NETWORK_MODE_UNSPECIFIED || stored) {
        env->network = in->network == CODEQ__V1__NETWORK_MODE__NETWORK_MODE_UNSPECIFIED
                           ? CQ_NETWORK_NONE
                           : (enum cq_network_mode)(in->network - 1);
        params->network = &env->network;
    }
    if (in->limits != NULL) {
        params->limits.memory_bytes = in->limits->memory_bytes;
        params->limits.pids = in->limits->pids;
        params->limits.cpus = in->limits->cpu_millis / 1000.0;
        params->limits.workspace_bytes = in->limits->disk_bytes;
    }
}

/* The StartSession as stored in Redis (malloc'd): the request's, without client_token,
 * with the network mode the session got (network: sandbox.h's numbering), not the
 * request's UNSPECIFIED: an adopting worker whose default differs keeps the mode. */
static int pack_start(const Codeq__V1__StartSession *in, int network, uint8_t **out, size_t *len,
                      struct cq_error *err)
{
    Codeq__V1__StartSession copy = *in;
    copy.client_token = (char *)"";
    copy.network = (Codeq__V1__NetworkMode)(network + 1);
    *len = codeq__v1__start_session__get_packed_size(&copy);
    if ((*out = malloc(*len ? *len : 1)) == NULL)
        return cq_error_sys(err, ENOMEM, "allocate %zu bytes", *len);
    codeq__v1__start_session__pack(&copy, *out);
    return 0;
}

/* A start that made no session (it failed, or its deadline passed before it ran): the
 * session Redis holds for it ends (it would stay STARTING, counted in its tenant's
 * sessions) and its client token is freed, so that the client's retry with the token
 * starts a session rather than get this one, which no worker runs. */
static void start_failed(struct cq_daemon *d, struct held *h, const Codeq__V1__Request *req,
                         uint64_t fence, enum cq_result_error code, const char *message)
{
    struct cq_error err;
    if (cq_store_end_start(d->store, h->id, d->cfg.worker_id, fence,
                           req->tenant != NULL ? req->tenant : "", req->start_session->client_token,
                           &err) < 0)
        cq_wd_log_request(CQ_LOG_WARN, "start_not_ended", req, err.msg,
                          "request %s: its session %s not ended in Redis: %s", req->request_id,
                          h->id, err.msg);
    finish_error(d, h, req, code, message);
}

static void start_session(struct cq_daemon *d, struct held *h, const Codeq__V1__Request *req)
{
    const Codeq__V1__StartSession *in = req->start_session;
    struct cq_session_params params;
    struct start_env env;
    params_of(in, h->id, false, &params, &env);
    struct cq_session_info info;
    struct cq_error err;
    uint8_t *start = NULL;
    size_t start_len = 0;
    /* A new session's interpreter as Redis has it now: deleted since this worker
     * defined it, or limited to other tenants, refused; replaced, defined again
     * (workerd/interp.c). */
    int rc = cq_wd_interp_check(d, in->code_interpreter_identifier,
                                req->tenant != NULL ? req->tenant : "", &err);
    if (rc == 0)
        rc = cq_worker_start_session(d->core, &params, &info, &err);
    start_env_free(&env);
    if (rc == 0 && (rc = pack_start(in, info.network_mode, &start, &start_len, &err)) < 0) {
        struct cq_session_info ignored;
        struct cq_error e2;
        cq_worker_stop_session(d->core, h->id, &ignored, &e2);
    }
    if (rc < 0) {
        free(start);
        start_failed(d, h, req, h->fence, cq_result_error_of(err.code), err.msg);
        return;
    }
    h->local = true;
    h->created_ms = 0;
    h->ttl_s = 0;
    free(h->start);
    h->start = start;
    h->start_len = start_len;
    /* Not written (Redis unreachable past its wait): the session is not adoptable until
     * the facts after its next request carry the parameters (write_facts()). */
    write_facts(d, h, &info);
    uint8_t *bytes;
    size_t len;
    rc = cq_codec_session_response(req->request_id, &info, &bytes, &len, &err);
    finish_packed(d, h, req, rc, bytes, len, &err);
    cq_log_event(CQ_LOG_INFO, "session_started",
                 CQ_FIELDS(CQ_LS("session_id", h->id), CQ_LS("request_id", req->request_id),
                           CQ_LS("tenant", req->tenant), CQ_LS("worker_id", d->cfg.worker_id),
                           CQ_LS("interpreter", info.interpreter), CQ_LI("fence", h->fence)),
                 "session %s started", h->id);
}

/* The session's StartSession from Redis (free with codeq__v1__start_session__free_unpacked),
 * or *out NULL when it has none: a session started by a worker that predates stored
 * start parameters, which is restarted as those workers did (name and time to live
 * only, logged). */
static int stored_start(struct cq_daemon *d, const char *id, Codeq__V1__StartSession **out,
                        struct cq_error *err)
{
    uint8_t *bytes;
    size_t len;
    *out = NULL;
    if (cq_store_session_start(d->store, id, &bytes, &len, err) < 0)
        return -1;
    if (bytes == NULL) {
        cq_log_event(CQ_LOG_WARN, "session_start_parameters_missing",
                     CQ_FIELDS(CQ_LS("session_id", id)),
                     "session %s has no start parameters in Redis (started by an older "
                     "worker): adopted with this worker's default limits and no env",
                     id);
        return 0;
    }
    *out = codeq__v1__start_session__unpack(NULL, len, bytes);
    free(bytes);
    if (*out == NULL)
        return cq_error_set(err, CQ_EINTERNAL,
                            "session '%s': its start parameters in Redis cannot be decoded", id);
    return 0;
}

/* Makes the session live here: a session routed to this worker that the core does not
 * have was moved from a lost or drained worker. It starts again with the parameters it
 * was first started with (stored_start()), for the time it has left; its files come
 * back from Redis. Parameters this worker refuses (a limit above what its host allows)
 * fail the adoption: the session is never run with other limits than its own. */
static int adopt(struct cq_daemon *d, struct held *h, struct cq_error *err)
{
    struct cq_session_info stored;
    bool found;
    if (cq_store_session_info(d->store, h->id, NULL, &stored, &found, err) < 0)
        return -1;
    if (!found || stored.status != CQ_SESSION_READY)
        return cq_error_set(err, CQ_ENOTFOUND,
                            "session '%s' not found or no longer running (sessions end after "
                            "their timeout, or when stopped)",
                            h->id);
    Codeq__V1__StartSession *in, legacy = CODEQ__V1__START_SESSION__INIT;
    if (stored_start(d, h->id, &in, err) < 0)
        return -1;
    legacy.name = stored.name;
    struct cq_session_params params;
    struct start_env env;
    params_of(in != NULL ? in : &legacy, h->id, true, &params, &env);
    int64_t left_ms =
        stored.created_at_ms + (int64_t)stored.session_timeout_s * 1000 - cq_unix_ms();
    params.timeout_s = left_ms > 1000 ? (uint32_t)(left_ms / 1000) : 1;
    struct cq_session_info info;
    cq_wd_interp_adopting(true);
    int rc = cq_worker_start_session(d->core, &params, &info, err);
    cq_wd_interp_adopting(false);
    start_env_free(&env);
    if (in != NULL)
        codeq__v1__start_session__free_unpacked(in, NULL);
    if (rc < 0)
        return cq_error_prefix(err, "session '%s' cannot be adopted", h->id);
    h->local = true;
    h->created_ms = stored.created_at_ms;
    h->ttl_s = stored.session_timeout_s;
    free(h->start); /* in Redis already */
    h->start = NULL;
    size_t restored = 0;
    if (cq_snapshot_restore(d->core, d->store, h->id, &h->manifest, &restored, err) < 0)
        cq_log_event(CQ_LOG_ERROR, "session_files_not_restored",
                     CQ_FIELDS(CQ_LS("session_id", h->id), CQ_LI("fence", h->fence),
                               CQ_LS("error", err->msg)),
                     "session %s: files not restored: %s", h->id, err->msg);
    /* After the files: restored objects may read them. Before the session's next call,
     * which runs in the kernels the variables went back into. */
    if (cq_state_restore(d->core, d->store, h->id, d->cfg.worker_id, h->fence, h->moved_note,
                         sizeof(h->moved_note), err) < 0)
        cq_log_event(CQ_LOG_ERROR, "session_state_not_restored",
                     CQ_FIELDS(CQ_LS("session_id", h->id), CQ_LI("fence", h->fence),
                               CQ_LS("error", err->msg)),
                     "session %s: kernel state not taken: %s", h->id, err->msg);
    h->moved = true;
    cq_wm_adopted(d->metrics);
    cq_log_event(CQ_LOG_INFO, "session_adopted",
                 CQ_FIELDS(CQ_LS("session_id", h->id), CQ_LS("worker_id", d->cfg.worker_id),
                           CQ_LS("interpreter", info.interpreter), CQ_LI("fence", h->fence),
                           CQ_LI("files_restored", restored)),
                 "session %s adopted (fence %llu, %zu files restored)", h->id,
                 (unsigned long long)h->fence, restored);
    return 0;
}

static bool changes_files(const char *tool)
{
    static const char *const readonly[] = {"readFiles", "listFiles", NULL};
    for (size_t i = 0; readonly[i] != NULL; i++)
        if (strcmp(tool, readonly[i]) == 0)
            return false;
    return true;
}

/* writeFiles past the tenant's stored_bytes quota is refused before anything is
 * written (files that code makes are checked when they are saved, after the call, and
 * the result then says they were not). Redis unreachable: not refused here. */
static bool over_stored_bytes(struct cq_daemon *d, struct held *h, const Codeq__V1__Invoke *inv,
                              struct cq_error *err)
{
    if (strcmp(inv->tool, "writeFiles") != 0 || inv->arguments == NULL)
        return false;
    uint64_t adding = 0;
    for (size_t i = 0; i < inv->arguments->n_content; i++)
        adding += cq_claim_file_len(inv->arguments->content[i]);
    bool fits = true;
    struct cq_error ignored;
    if (cq_store_tenant_room(d->store, h->id, adding, &fits, err, &ignored) < 0)
        return false;
    return !fits;
}

static void invoke(struct cq_daemon *d, struct held *h, const Codeq__V1__Request *req)
{
    uint64_t started_us = cq_now_us();
    struct cq_invoke_args args;
    void *owned;
    struct cq_error err;
    /* Arguments too large for Kafka come from Redis (fleet/claim.h). */
    Codeq__V1__Arguments *fetched;
    if (cq_claim_fetch_arguments(d->store, req->invoke, d->keys != NULL, &fetched, &err) < 0) {
        finish_error(d, h, req, cq_result_error_of(err.code), err.msg);
        return;
    }
    Codeq__V1__Invoke inv = *req->invoke;
    if (fetched != NULL)
        inv.arguments = fetched;
    if (over_stored_bytes(d, h, &inv, &err)) {
        if (fetched != NULL)
            codeq__v1__arguments__free_unpacked(fetched, NULL);
        finish_error(d, h, req, CQ_RESULT_LIMIT_EXCEEDED, err.msg);
        return;
    }
    if (cq_codec_invoke_args(&inv, &args, &owned, &err) < 0) {
        if (fetched != NULL)
            codeq__v1__arguments__free_unpacked(fetched, NULL);
        finish_error(d, h, req, CQ_RESULT_INTERNAL, err.msg);
        return;
    }
    struct stream_ctx sctx = {.d = d, .req = req, .trace = tracing};
    struct cq_result r;
    /* Cancellable by a cancel_call of the same tenant (cq_wd_cancel()). Without a
     * cancellation (out of fds) the call runs to its end, as it did before there were
     * any. */
    struct cq_cancel *cancel = NULL;
    if (cq_cancel_create(&cancel, &err) == 0) {
        pthread_mutex_lock(&d->lock);
        h->cancel = cancel;
        if (h->cancel_next)
            cq_cancel_fire(cancel); /* it runs as cancelled before it started */
        pthread_mutex_unlock(&d->lock);
    }
    cq_worker_invoke_cancellable(d->core, h->id, req->invoke->tool, &args, on_output, &sctx, cancel,
                                 &r);
    if (cancel != NULL) {
        pthread_mutex_lock(&d->lock);
        h->cancel = NULL;
        pthread_mutex_unlock(&d->lock);
        cq_cancel_free(cancel);
    }
    cq_tracing_kernel_run(tracing != NULL ? &tracing->w3c : NULL, &r, req->invoke->tool);
    cq_trace_stamp(tracing, "w.ran");
    /* The call as it ran: the arguments fetched from a claim, not the reference. */
    Codeq__V1__Request ran = *req;
    ran.invoke = &inv;
    struct cq_audit_record rec = {
        .event = "call",
        .outcome = r.is_error ? "error" : "ok",
        .error_code = r.error_code != CQ_RESULT_OK ? cq_result_error_name(r.error_code) : NULL,
        .reason = r.error_message,
        .req = &ran,
        .key_id = signed_by,
        .has_result = true,
        .exit_code = r.exit_code,
        .duration_ms = r.execution_time_ms,
        .cpu_ms = r.cpu_ms,
        .peak_memory_bytes = r.peak_memory_bytes,
        .stdout_text = r.stdout_text,
        .stderr_text = r.stderr_text,
        .worker = d->cfg.worker_id,
    };
    cq_audit_emit(d->audit, &rec);
    free(owned);
    if (h->moved) {
        /* First in content: clients read it in order and must not miss that their
         * variables are gone, or which of them are. */
        cq_result_add_text(&r, h->moved_note);
        if (r.n_blocks > 1) {
            struct cq_block note = r.blocks[r.n_blocks - 1];
            memmove(&r.blocks[1], &r.blocks[0], (r.n_blocks - 1) * sizeof(r.blocks[0]));
            r.blocks[0] = note;
        }
        h->moved = false;
    }
    if (changes_files(req->invoke->tool) &&
        cq_snapshot_save(d->core, d->store, h->id, d->cfg.worker_id, h->fence, &h->manifest, &err) <
            0) {
        cq_wd_log_request(CQ_LOG_WARN, "session_files_not_saved", req, err.msg,
                          "session %s: files not saved: %s", h->id, err.msg);
        if (err.code == CQ_ELIMIT) {
            char note[700];
            snprintf(note, sizeof(note),
                     "codeq: %s; new or changed files would not survive the loss of this worker",
                     err.msg);
            cq_result_add_text(&r, note);
        }
    }
    cq_trace_stamp(tracing, "w.saved");
    uint8_t *bytes;
    size_t len;
    cq_wm_result(r.is_error);
    int rc = cq_codec_result_response(req->request_id, h->id, &r, &bytes, &len, &err);
    finish_packed(d, h, req, rc, bytes, len, &err);
    cq_wd_log_execution(d, h->id, req, &inv, &r, started_us);
    if (fetched != NULL) /* after the log line, which reads the arguments' language */
        codeq__v1__arguments__free_unpacked(fetched, NULL);
    cq_result_free(&r);
}

/* One claim, waiting for Redis while it is unreachable: dropping the request would
 * leave it forwarded here for good, so the session's queue waits (as in finish()); a
 * stopping worker gives up and leaves the request to recovery: -1 then (logged). */
static int claim_once(struct cq_daemon *d, const Codeq__V1__Request *req, const char *digest,
                      enum cq_request_state *state, uint64_t *fence, bool *claimed)
{
    struct cq_error err;
    while (cq_store_claim(d->store, req->request_id, d->cfg.worker_id,
                          req->tenant != NULL ? req->tenant : "", digest, state, fence, claimed,
                          &err) < 0) {
        if (atomic_load(&d->stopping)) {
            cq_wd_log_request(CQ_LOG_ERROR, "claim_failed", req, err.msg,
                              "request %s: cannot claim: %s", req->request_id, err.msg);
            return -1;
        }
        cq_wd_log_request(CQ_LOG_WARN, "claim_retry", req, err.msg,
                          "request %s: cannot claim yet: %s", req->request_id, err.msg);
        sleep(1);
    }
    return 0;
}

/* An early forward (sent while Redis records it, fast_forward() in dispatcher.c) can
 * arrive before its record: a request with no state yet is claimed again, for as long
 * as the dispatcher guarantees that its record follows (it sends the forward again
 * when recording took longer). A record that never comes means the request was
 * answered otherwise, or its dispatcher died first and the request is consumed again. */
static int claim(struct cq_daemon *d, const Codeq__V1__Request *req, const char *digest, bool early,
                 enum cq_request_state *state, uint64_t *fence, bool *claimed)
{
    if (claim_once(d, req, digest, state, fence, claimed) < 0)
        return -1;
    for (long waited = 0, pause = 1; early && !*claimed && *state == CQ_REQ_NONE &&
                                     waited < CQ_FLEET_RECORD_WAIT_MS && !atomic_load(&d->stopping);
         waited += pause, pause = pause * 2 > 100 ? 100 : pause * 2) {
        struct timespec ts = {.tv_nsec = pause * 1000000L};
        nanosleep(&ts, NULL);
        if (claim_once(d, req, digest, state, fence, claimed) < 0)
            return -1;
    }
    return 0;
}

static void handle(struct cq_daemon *d, struct held *h, const Codeq__V1__Request *req,
                   const char *digest, uint64_t fence, bool early)
{
    struct cq_error err;
    enum cq_request_state state;
    uint64_t claimed_fence;
    bool claimed;
    if (claim(d, req, digest, early, &state, &claimed_fence, &claimed) < 0)
        return;
    cq_trace_stamp(tracing, "w.claimed");
    h->claimed_ms = (int64_t)cq_now_ms();
    if (!claimed) {
        /* An early forward that was not this worker's to run is answered by its
         * dispatcher, which found the request's state when it recorded the forward. */
        if (state == CQ_REQ_DONE && !early) {
            /* A duplicate: the same reply again, never a second run. */
            uint8_t *bytes = NULL;
            size_t len = 0;
            if (cq_store_result(d->store, req->request_id, &bytes, &len, &err) == 0 && bytes &&
                cq_fleet_publish(d->producer, req, "final", bytes, len, NULL, tracing, &err) < 0)
                cq_wd_log_request(CQ_LOG_WARN, "stored_reply_not_sent", req, err.msg,
                                  "request %s: reply not sent: %s", req->request_id, err.msg);
            else if (bytes != NULL)
                cq_wm_replayed(d->metrics);
            free(bytes);
        }
        return;
    }
    if (req->deadline_unix_ms != 0 && req->deadline_unix_ms < cq_unix_ms()) {
        if (req->operation_case == CODEQ__V1__REQUEST__OPERATION_START_SESSION)
            start_failed(d, h, req, claimed_fence != 0 ? claimed_fence : fence, CQ_RESULT_TIMED_OUT,
                         "the request's deadline passed before it ran");
        else
            finish_error(d, h, req, CQ_RESULT_TIMED_OUT,
                         "the request's deadline passed before it ran");
        return;
    }
    /* The session's token in Redis at the claim, rather than the forward's header: a
     * dispatcher may have sent the forward on a route it remembered (fast_forward()). */
    if (claimed_fence != 0)
        fence = claimed_fence;
    if (fence == 0) {
        /* Re-queued from Redis by cq_wd_recover_own(), without the routing header: the
         * session's current token is the one the dispatcher routed with. */
        char owner[64];
        if (cq_store_owner(d->store, h->id, owner, sizeof(owner), &fence, &err) < 0 ||
            strcmp(owner, d->cfg.worker_id) != 0)
            fence = 0;
    }
    if (fence > h->fence) {
        /* A newer routing: whatever this worker had of the session predates it (the
         * session was moved away and back: this copy missed what happened there). */
        if (h->local && req->operation_case != CODEQ__V1__REQUEST__OPERATION_START_SESSION)
            cq_wd_discard(d, h->id, 0);
        h->fence = fence;
    }
    switch (req->operation_case) {
    case CODEQ__V1__REQUEST__OPERATION_START_SESSION:
        start_session(d, h, req);
        return;
    default:
        break;
    }
    if (!h->local && adopt(d, h, &err) < 0) {
        finish_error(d, h, req, cq_result_error_of(err.code), err.msg);
        return;
    }
    struct cq_session_info info;
    uint8_t *bytes;
    size_t len;
    switch (req->operation_case) {
    case CODEQ__V1__REQUEST__OPERATION_GET_SESSION:
    case CODEQ__V1__REQUEST__OPERATION_STOP_SESSION: {
        bool stop = req->operation_case == CODEQ__V1__REQUEST__OPERATION_STOP_SESSION;
        int rc = stop ? cq_worker_stop_session(d->core, h->id, &info, &err)
                      : cq_worker_get_session(d->core, h->id, &info, &err);
        if (rc < 0) {
            finish_error(d, h, req, cq_result_error_of(err.code), err.msg);
            return;
        }
        lifetime(h, &info);
        rc = cq_codec_session_response(req->request_id, &info, &bytes, &len, &err);
        finish_packed(d, h, req, rc, bytes, len, &err);
        return;
    }
    case CODEQ__V1__REQUEST__OPERATION_INVOKE:
        invoke(d, h, req);
        chore_facts(h);
        return;
    default:
        finish_error(d, h, req, CQ_RESULT_INVALID_ARGUMENT, "this operation is not for workers");
    }
}

struct drain_args {
    struct cq_daemon *d;
    struct held *h;
};

/* How long a session's thread waits for the session's next request before it ends.
 * Handing a request to a thread that waits costs a wake-up; starting a thread costs
 * its creation and first scheduling in the request's path, several times a wake-up
 * and far more in the tail (docs/performance.md has the figures), and an agent's next
 * call usually comes within seconds. */
#define SESSION_THREAD_LINGER_MS 10000

static struct timespec monotonic_in_us(int64_t us)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    t.tv_sec += us / 1000000;
    t.tv_nsec += (us % 1000000) * 1000L;
    if (t.tv_nsec >= 1000000000L) {
        t.tv_sec++;
        t.tv_nsec -= 1000000000L;
    }
    return t;
}

/* Waits, with d->lock held, until the session has a request, the session ended here,
 * the worker stops, or the linger time passed; true when there is a request to run.
 * The session's chores are done once it has been idle CHORES_DELAY_MS, and always
 * before false is returned. */
static bool await_next(struct cq_daemon *d, struct held *h)
{
    struct timespec linger = monotonic_in_us(SESSION_THREAD_LINGER_MS * 1000L);
    struct timespec delay = monotonic_in_us(CHORES_DELAY_MS * 1000L);
    struct timespec store_at = monotonic_in_us(STORE_DELAY_US);
    bool delayed = false, store_due = false;
    h->waiting = true;
    while (h->head == NULL) {
        bool ending = !h->local || atomic_load(&d->stopping);
        if (h->unstored != NULL && (ending || store_due)) {
            pthread_mutex_unlock(&d->lock);
            store_unstored(d, h);
            pthread_mutex_lock(&d->lock);
            continue;
        }
        if (chores_pending(h) && (ending || delayed)) {
            /* Requests queued meanwhile are seen once the lock is back. */
            pthread_mutex_unlock(&d->lock);
            do_chores(d, h);
            pthread_mutex_lock(&d->lock);
            continue;
        }
        if (ending)
            break;
        const struct timespec *until = h->unstored != NULL ? &store_at
                                       : chores_pending(h) ? &delay
                                                           : &linger;
        bool timed_out = pthread_cond_timedwait(&h->wake, &d->lock, until) == ETIMEDOUT;
        if (timed_out && h->unstored != NULL)
            store_due = true;
        else if (timed_out && chores_pending(h))
            delayed = true;
        else if (timed_out)
            break;
    }
    h->waiting = false;
    return h->head != NULL;
}

static void *session_thread(void *arg)
{
    struct drain_args *a = arg;
    struct cq_daemon *d = a->d;
    struct held *h = a->h;
    free(a);
    pthread_mutex_lock(&d->lock);
    while (h->head != NULL || await_next(d, h)) {
        struct queued *q = h->head;
        h->head = q->next;
        if (h->head == NULL)
            h->tail = NULL;
        /* From here a cancel_call finds it as the running one, before its claim. */
        snprintf(h->running_id, sizeof(h->running_id), "%s", q->req->request_id);
        snprintf(h->running_tenant, sizeof(h->running_tenant), "%s",
                 q->req->tenant != NULL ? q->req->tenant : "");
        h->cancel_next = q->cancelled;
        pthread_mutex_unlock(&d->lock);
        tracing = &q->trace; /* its stamps are off without the header */
        cq_tracing_log(&q->trace.w3c);
        cq_trace_stamp(tracing, "w.thread");
        store_unstored(d, h); /* before anything of the session runs again */
        signed_by = q->key_id;
        cq_wm_begin(d->metrics, q->req, q->requested_ms);
        handle(d, h, q->req, q->digest, q->fence, q->early);
        cq_wm_end(d->metrics);
        cq_tracing_end(&q->trace.w3c, "codeq.request", CQ_SPAN_CONSUMER);
        cq_tracing_log(NULL);
        tracing = NULL;
        signed_by = NULL;
        codeq__v1__request__free_unpacked(q->req, NULL);
        free(q);
        if (chores_overdue(h))
            do_chores(d, h);
        pthread_mutex_lock(&d->lock);
        h->running_id[0] = '\0';
        h->cancel_next = false;
    }
    h->running = false;
    if (!h->local && !h->discarding) /* else cq_wd_discard() forgets it */
        held_forget(d, h);
    d->threads--;
    pthread_cond_broadcast(&d->idle);
    pthread_mutex_unlock(&d->lock);
    return NULL;
}

/* A message on this worker's topic that no dispatcher sent: kept on the dead-letter
 * topic with why (for the operator; the writer gets no reply, having bypassed the
 * dispatchers that answer). */
void cq_wd_dead_letter(struct cq_daemon *d, const rd_kafka_message_t *msg, const char *why)
{
    char offset[32];
    snprintf(offset, sizeof(offset), "%lld", (long long)msg->offset);
    struct cq_header headers[] = {
        {"codeq-dlq-reason", why},
        {"codeq-source-topic", rd_kafka_topic_name(msg->rkt)},
        {"codeq-source-offset", offset},
    };
    struct cq_error err;
    if (cq_kafka_send(d->producer, d->cfg.dlq_topic, NULL, msg->payload, msg->len, headers, 3, NULL,
                      &err) < 0)
        cq_log_event(CQ_LOG_ERROR, "dead_letter_failed",
                     CQ_FIELDS(CQ_LS("topic", d->topic), CQ_LI("partition", msg->partition),
                               CQ_LI("offset", msg->offset), CQ_LS("error", err.msg)),
                     "dead letter: %s", err.msg);
    cq_log_event(CQ_LOG_WARN, "dead_lettered",
                 CQ_FIELDS(CQ_LS("topic", d->topic), CQ_LI("partition", msg->partition),
                           CQ_LI("offset", msg->offset), CQ_LS("reason", why)),
                 "refused and dead-lettered the message at offset %lld: %s", (long long)msg->offset,
                 why);
    struct cq_audit_record rec = {.event = "request",
                                  .outcome = "refused",
                                  .reason = why,
                                  .bytes = msg->len,
                                  .worker = d->cfg.worker_id};
    cq_audit_emit(d->audit, &rec);
}

/* Only calls of the cancel's own tenant match (both requests were verified by the
 * consumer): a tenant cannot stop another's calls by guessing their ids. */
static bool same_tenant(const Codeq__V1__Request *a, const char *tenant)
{
    return strcmp(a->tenant != NULL ? a->tenant : "", tenant) == 0;
}

void cq_wd_cancel(struct cq_daemon *d, Codeq__V1__Request *req)
{
    const char *target = req->cancel_call->request_id;
    const char *tenant = req->tenant != NULL ? req->tenant : "";
    const char *said = "nothing to cancel: the call is not running or queued on its session's "
                       "worker (it ended, or never came)";
    pthread_mutex_lock(&d->lock);
    struct held *h = held_find(d, req->session_id, false);
    if (h != NULL && h->running_id[0] != '\0' && strcmp(h->running_id, target) == 0 &&
        strcmp(h->running_tenant, tenant) == 0) {
        if (h->cancel != NULL)
            cq_cancel_fire(h->cancel);
        else
            h->cancel_next = true; /* taken from the queue, not started yet */
        said = "cancelled: the call was running; its own reply says how it ended";
    } else if (h != NULL) {
        for (struct queued *q = h->head; q != NULL; q = q->next)
            if (strcmp(q->req->request_id, target) == 0 && same_tenant(q->req, tenant)) {
                q->cancelled = true;
                said = "cancelled: the call was queued and does not run; its own reply says so";
                break;
            }
    }
    pthread_mutex_unlock(&d->lock);
    cq_log_event(CQ_LOG_INFO, "call_cancel",
                 CQ_FIELDS(CQ_LS("session_id", req->session_id), CQ_LS("request_id", target),
                           CQ_LS("tenant", tenant), CQ_LS("outcome", said)),
                 "session %s: cancel of %s: %s", req->session_id, target, said);
    /* Answered, never stored: a cancel is not a call, and a repeat of it acts again. */
    struct cq_result r;
    cq_result_init(&r);
    cq_result_add_text(&r, said);
    uint8_t *bytes;
    size_t len;
    struct cq_error err;
    if (cq_codec_result_response(req->request_id, req->session_id, &r, &bytes, &len, &err) == 0) {
        if (cq_fleet_publish(d->producer, req, "final", bytes, len, NULL, NULL, &err) < 0)
            cq_wd_log_request(CQ_LOG_WARN, "cancel_reply_not_sent", req, err.msg,
                              "request %s: reply not sent: %s", req->request_id, err.msg);
        free(bytes);
    }
    cq_result_free(&r);
    codeq__v1__request__free_unpacked(req, NULL);
}

void cq_wd_enqueue(struct cq_daemon *d, Codeq__V1__Request *req, const char *digest,
                   const char *key_id, uint64_t fence, bool early, const struct cq_trace *trace)
{
    struct queued *q = calloc(1, sizeof(*q));
    const char *key = req->session_id;
    pthread_mutex_lock(&d->lock);
    struct held *h = q != NULL ? held_find(d, key, true) : NULL;
    if (h == NULL) {
        pthread_mutex_unlock(&d->lock);
        free(q);
        cq_wd_log_request(CQ_LOG_ERROR, "request_dropped", req, "out of memory",
                          "request %s dropped: out of memory", req->request_id);
        codeq__v1__request__free_unpacked(req, NULL);
        return;
    }
    q->req = req;
    snprintf(q->digest, sizeof(q->digest), "%s", digest);
    snprintf(q->key_id, sizeof(q->key_id), "%s", key_id);
    q->fence = fence;
    q->early = early;
    q->requested_ms = cq_wm_arrival();
    if (trace != NULL)
        q->trace = *trace;
    if (h->tail != NULL)
        h->tail->next = q;
    else
        h->head = q;
    h->tail = q;
    if (h->waiting)
        pthread_cond_signal(&h->wake);
    if (!h->running) {
        struct drain_args *a = malloc(sizeof(*a));
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (a != NULL) {
            *a = (struct drain_args){d, h};
            if (pthread_create(&t, &attr, session_thread, a) == 0) {
                h->running = true;
                d->threads++;
            } else {
                free(a);
            }
        }
        pthread_attr_destroy(&attr);
        if (!h->running)
            cq_log_event(CQ_LOG_ERROR, "session_thread_failed",
                         CQ_FIELDS(CQ_LS("session_id", h->id)),
                         "session %s: cannot start a thread; its queue waits", h->id);
    }
    pthread_mutex_unlock(&d->lock);
}

void cq_wd_forget_all(struct cq_daemon *d)
{
    while (d->held != NULL)
        held_forget(d, d->held);
}
