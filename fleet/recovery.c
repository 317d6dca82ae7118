/* fleet/recovery.c - what happens to the requests of a worker that died.
 *
 * The promise is that every accepted request gets one final reply and none runs twice.
 * Redis knows how far each request got (docs/fleet.md): a request the worker had
 * claimed may have partly run, so it is answered with an error and never re-run; one
 * it had not claimed is routed again; one it finished gets its stored reply again,
 * since the worker may have died before publishing it. */
#define _GNU_SOURCE
#include "fleet/recovery.h"
#include "fleet/log.h"
#include "fleet/kafka.h"
#include "fleet/store.h"
#include "fleet/codec.h"

#include <errno.h>
#include <stdlib.h>

#define LOST_MESSAGE                                                                               \
    "the worker running this request was lost; the code may have partly run and was not "          \
    "run again"

static void not_sent_again(const Codeq__V1__Request *req, const char *why)
{
    cq_log_event(CQ_LOG_WARN, "stored_reply_not_sent",
                 CQ_FIELDS(CQ_LS("request_id", req->request_id),
                           CQ_LS("session_id", req->session_id), CQ_LS("tenant", req->tenant),
                           CQ_LS("error", why)),
                 "request %s: stored reply not sent again: %s", req->request_id, why);
}

/* Publishes the stored reply again. Best effort: the reply is stored, and a client
 * that missed it gets it by sending the request again. */
static void answer_stored(struct cq_store *st, rd_kafka_t *producer, const Codeq__V1__Request *req)
{
    uint8_t *bytes = NULL;
    size_t len = 0;
    struct cq_error err;
    struct cq_delivery *delivery = cq_delivery_new();
    if (delivery == NULL)
        not_sent_again(req, "out of memory");
    else if (cq_store_result(st, req->request_id, &bytes, &len, &err) < 0 ||
             (bytes != NULL &&
              (cq_fleet_publish(producer, req, "final", bytes, len, delivery, NULL, &err) < 0 ||
               cq_kafka_wait(producer, delivery, 30000, &err) < 0)))
        not_sent_again(req, err.msg);
    cq_delivery_release(delivery);
    free(bytes);
}

/* Stores the worker-lost error as the final reply of a request that was running. When
 * that error cannot be encoded, the codec's fallback (which needs no memory) is stored
 * instead: either way the request gets a final reply and is never left running. */
static int store_lost(struct cq_store *st, const Codeq__V1__Request *req, const char *worker,
                      struct cq_error *err)
{
    uint8_t *bytes, fallback[CQ_CODEC_FALLBACK_MAX];
    size_t len;
    if (cq_codec_error_response(req->request_id, req->session_id, CQ_RESULT_INTERNAL, LOST_MESSAGE,
                                &bytes, &len, err) < 0) {
        cq_log_event(CQ_LOG_ERROR, "reply_not_encoded",
                     CQ_FIELDS(CQ_LS("request_id", req->request_id),
                               CQ_LS("session_id", req->session_id), CQ_LS("tenant", req->tenant),
                               CQ_LS("worker_id", worker), CQ_LS("error", err->msg)),
                     "request %s: reply not encoded: %s", req->request_id, err->msg);
        len = cq_codec_fallback_response(req->request_id, req->session_id, CQ_RESULT_INTERNAL,
                                         LOST_MESSAGE, fallback);
        bytes = NULL;
    }
    bool stored = false;
    int rc = cq_store_finish(st, req->request_id, NULL, bytes != NULL ? bytes : fallback, len,
                             &stored, err);
    free(bytes);
    if (rc < 0)
        return cq_error_prefix(err, "store the worker-lost reply of request %s", req->request_id);
    if (stored)
        cq_log_event(CQ_LOG_ERROR, "request_lost",
                     CQ_FIELDS(CQ_LS("request_id", req->request_id),
                               CQ_LS("session_id", req->session_id), CQ_LS("tenant", req->tenant),
                               CQ_LS("worker_id", worker)),
                     "request %s: its worker %s was lost while it ran", req->request_id, worker);
    return 0;
}

/* A request of a lost worker left for recovery's next pass. */
static void not_settled(const char *request_id, const char *worker, const struct cq_error *e)
{
    cq_log_event(CQ_LOG_WARN, "request_not_recovered",
                 CQ_FIELDS(CQ_LS("request_id", request_id), CQ_LS("worker_id", worker),
                           CQ_LS("error", e->msg)),
                 "request %s of worker %s: %s", request_id, worker, e->msg);
}

int cq_fleet_recover(struct cq_store *st, rd_kafka_t *producer, const char *worker,
                     cq_reroute_fn reroute, void *ctx, size_t *settled, struct cq_error *err)
{
    *settled = 0;
    char(*ids)[64] = calloc(1000, 64);
    if (ids == NULL)
        return cq_error_sys(err, ENOMEM, "allocate 1000 request ids");
    size_t n = 0;
    if (cq_store_inflight(st, worker, ids, 1000, &n, err) < 0) {
        free(ids);
        return -1;
    }
    /* A request that cannot be settled now stays in the in-flight set, for the next
     * pass (the worker is forgotten only once the set is empty). */
    for (size_t i = 0; i < n; i++) {
        uint8_t *body = NULL;
        size_t len = 0;
        enum cq_request_state state;
        struct cq_error e;
        if (cq_store_request(st, ids[i], &body, &len, &state, &e) < 0) {
            not_settled(ids[i], worker, &e);
            continue;
        }
        struct cq_opened op = {0};
        if (body != NULL && cq_auth_unwrap(body, len, &op, &e) < 0)
            cq_opened_free(&op);
        free(body);
        Codeq__V1__Request *req = op.req;
        if (req == NULL) {
            /* Nothing to answer with (expired, or never fully recorded). */
            if (cq_store_inflight_done(st, worker, ids[i], &e) < 0)
                not_settled(ids[i], worker, &e);
            continue;
        }
        if (state == CQ_REQ_FORWARDED) {
            reroute(ctx, &op); /* moves it to another in-flight set */
            cq_opened_free(&op);
            (*settled)++;
            continue;
        }
        if (state == CQ_REQ_RUNNING && store_lost(st, req, worker, &e) < 0) {
            cq_log_event(CQ_LOG_ERROR, "lost_reply_not_stored",
                         CQ_FIELDS(CQ_LS("request_id", ids[i]),
                                   CQ_LS("session_id", req->session_id),
                                   CQ_LS("tenant", req->tenant), CQ_LS("worker_id", worker),
                                   CQ_LS("error", e.msg)),
                         "worker %s: %s", worker, e.msg);
            cq_opened_free(&op);
            continue;
        }
        /* A start that was running made no session, or one no worker runs: it ends, and
         * its client token is freed for the client's retry (else the session would stay
         * STARTING and the token name it: a session whose every call fails). The
         * operation is a oneof: its members share one pointer, so the case decides. */
        if (state == CQ_REQ_RUNNING &&
            req->operation_case == CODEQ__V1__REQUEST__OPERATION_START_SESSION) {
            bool ended = false;
            if (cq_store_end_lost_start(st, req->session_id, worker,
                                        req->tenant != NULL ? req->tenant : "",
                                        req->start_session->client_token, &ended, &e) < 0)
                not_settled(ids[i], worker, &e);
        }
        /* Done (now or before): the stored reply, which may never have been sent. */
        answer_stored(st, producer, req);
        if (cq_store_inflight_done(st, worker, ids[i], &e) < 0)
            not_settled(ids[i], worker, &e);
        (*settled)++;
        cq_opened_free(&op);
    }
    free(ids);
    return 0;
}
