/* workerd/lifecycle.c - codeq-worker from start to exit: the daemon made from its
 * settings, the consumer loop that verifies each message of the worker's topic and hands
 * it to its session (daemon.c), and the drain on SIGTERM (docs/fleet.md, "Stopping a
 * worker"). */
#define _GNU_SOURCE
#include "workerd/workerd.h"
#include "workerd/daemon_internal.h"
#include "workerd/metrics.h"
#include "common/clock.h"
#include "fleet/audit.h"
#include "fleet/auth.h"
#include "fleet/codec.h"
#include "fleet/kafka.h"
#include "fleet/keyring.h"
#include "fleet/keys.h"
#include "fleet/log.h"
#include "fleet/store.h"
#include "fleet/trace.h"
#include "fleet/tracing.h"
#include "worker/worker.h"
#include "workerd/interp.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The worker core's network settings (worker/netconfig.c parses them; the fleet's
 * configuration keeps their text), and the fleet's own services denied to sandboxes:
 * the Kafka brokers and Redis, resolved now, whatever their addresses' class (a
 * private one is refused already unless network_private opens it: then the deny rule
 * still keeps it out). Only where sessions can have a network at all (network_modes
 * beyond NONE); an address that does not resolve fails the start rather than leaving
 * it open. */
static int network_of(const struct cq_fleet_config *cfg, struct cq_worker_config *wc,
                      struct cq_error *err)
{
    for (size_t i = 0; cq_worker_net_settings[i] != NULL; i++) {
        const char *name = cq_worker_net_settings[i];
        const char *text = cq_fleet_config_text(cfg, name);
        if (text != NULL && text[0] != '\0' &&
            cq_worker_net_setting(wc, name, text, false, name, err) < 0)
            return -1;
    }
    if (wc->netpolicy.modes == CQ_NET_MODE_BIT(CQ_NETWORK_NONE))
        return 0;
    char brokers[sizeof(cfg->brokers)];
    snprintf(brokers, sizeof(brokers), "%s", cfg->brokers);
    char *save = NULL;
    for (char *b = strtok_r(brokers, ",", &save); b != NULL; b = strtok_r(NULL, ",", &save)) {
        while (*b == ' ')
            b++;
        if (*b != '\0' && cq_worker_net_deny_service(wc, b, err) < 0)
            return cq_error_prefix(err, "deny the fleet's broker %s to sandboxes", b);
    }
    if (cq_worker_net_deny_service(wc, cfg->redis, err) < 0)
        return cq_error_prefix(err, "deny the fleet's Redis %s to sandboxes", cfg->redis);
    const char *egress =
        wc->egress_netns[0] != '\0' ? wc->egress_netns : "codeq's own namespace (pasta)";
    cq_log_event(CQ_LOG_INFO, "network_ready",
                 CQ_FIELDS(CQ_LS("egress_netns", wc->egress_netns),
                           CQ_LI("deny_rules", wc->netpolicy.deny.n)),
                 "network: egress through %s; %zu deny rules (the fleet's Kafka and Redis "
                 "included)",
                 egress, wc->netpolicy.deny.n);
    return 0;
}

int cq_daemon_create(const struct cq_fleet_config *cfg, struct cq_daemon **out,
                     struct cq_error *err)
{
    struct cq_daemon *d = calloc(1, sizeof(*d));
    if (d == NULL)
        return cq_error_sys(err, ENOMEM, "allocate daemon");
    d->cfg = *cfg;
    if (d->cfg.worker_id[0] == '\0')
        gethostname(d->cfg.worker_id, sizeof(d->cfg.worker_id) - 1);
    pthread_mutex_init(&d->lock, NULL);
    pthread_cond_init(&d->idle, NULL);
    pthread_mutex_init(&d->defined_lock, NULL);
    pthread_mutex_init(&d->fetch_lock, NULL);
    cq_fleet_worker_topic(d->cfg.worker_id, d->topic, sizeof(d->topic));
    if (cq_store_open(cfg, &d->store, err) < 0)
        goto fail;
    cq_store_set_cancel(d->store, &d->stopping);
    if (cq_store_open(cfg, &d->beat, err) < 0)
        goto fail;
    if (cq_keys_open(cfg, &d->keyring, &d->keys, err) < 0)
        goto fail;
    if (cfg->audit_topic[0] != '\0') {
        snprintf(d->audit_sink.producer, sizeof(d->audit_sink.producer), "worker-%s-%lld",
                 cfg->worker_id, (long long)cq_unix_ms());
        d->audit_sink.kafka = &d->producer;
        d->audit_sink.topic = d->cfg.audit_topic;
        if (cq_audit_open(d->audit_sink.producer, cfg->audit_key_file,
                          strcmp(cfg->audit_content, "on") == 0, cq_audit_kafka_sink,
                          &d->audit_sink, &d->audit, err) < 0)
            goto fail;
    }
    cq_store_set_cancel(d->beat, &d->stopping);
    struct cq_worker_config wc;
    cq_worker_config_init(&wc);
    wc.max_sessions = cfg->max_sessions;
    wc.warm_pool_size = cfg->warm_pool;
    wc.warm_pool_max = cfg->warm_pool_max;
    wc.fork_kernels = strcmp(cfg->fork_kernels, "on") == 0;
    wc.memory_reserve_bytes = cfg->memory_reserve;
    if (network_of(cfg, &wc, err) < 0)
        goto fail;
    wc.on_session_end = cq_wd_on_session_end;
    wc.on_session_end_ctx = d;
    wc.resolve_interpreter = cq_wd_resolve_interpreter;
    wc.resolve_interpreter_ctx = d;
    if (cq_wm_create(d, err) < 0)
        goto fail;
    wc.metrics = cq_wm_registry(d->metrics);
    if (cq_worker_create(&wc, &d->core, err) < 0)
        goto fail;
    if (cq_kafka_producer(cfg, &d->producer, err) < 0 ||
        cq_kafka_ensure_topic(d->producer, d->topic, 1, err) < 0 ||
        (cfg->audit_topic[0] != '\0' &&
         cq_kafka_ensure_topic(d->producer, cfg->audit_topic, 1, err) < 0))
        goto fail;
    char group[128];
    snprintf(group, sizeof(group), "codeq-worker-%s", d->cfg.worker_id);
    if (cq_kafka_consumer(cfg, group, d->topic, &d->consumer, err) < 0 || cq_wm_serve(d, err) < 0)
        goto fail;
    *out = d;
    return 0;
fail:
    cq_daemon_destroy(d);
    return -1;
}

void cq_daemon_stop(struct cq_daemon *d)
{
    atomic_store(&d->stopping, true);
}

int cq_daemon_run(struct cq_daemon *d, struct cq_error *err)
{
    cq_wd_heartbeat_once(d);
    if (pthread_create(&d->heartbeat, NULL, cq_wd_heartbeat_main, d) != 0)
        return cq_error_set(err, CQ_EINTERNAL, "cannot start the heartbeat thread");
    cq_wd_recover_own(d);
    cq_store_log_encryption(d->store);
    cq_log_event(CQ_LOG_INFO, "worker_started",
                 CQ_FIELDS(CQ_LS("worker_id", d->cfg.worker_id), CQ_LS("topic", d->topic),
                           CQ_LI("max_sessions", d->cfg.max_sessions)),
                 "worker %s serving %s (max %u sessions)", d->cfg.worker_id, d->topic,
                 d->cfg.max_sessions);
    while (!atomic_load(&d->stopping)) {
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(d->consumer, 100);
        if (msg == NULL)
            continue;
        struct cq_trace trace;
        cq_trace_read(&trace, msg);
        cq_trace_stamp(&trace, "w.poll");
        if (msg->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            if (msg->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                cq_log_event(CQ_LOG_WARN, "consume_failed",
                             CQ_FIELDS(CQ_LS("error", rd_kafka_message_errstr(msg)),
                                       CQ_LS("code", rd_kafka_err2name(msg->err))),
                             "consume: %s", rd_kafka_message_errstr(msg));
            rd_kafka_message_destroy(msg);
            continue;
        }
        char fence_text[32];
        const char *fence = cq_kafka_header(msg, "codeq-fence", fence_text, sizeof(fence_text));
        struct cq_opened op;
        struct cq_error why;
        /* Verified again, whoever wrote it: the dispatchers admit only signed requests,
         * but anyone who can write to this topic could skip them. No time window here:
         * a request admitted minutes ago may have waited in its session's queue, or for
         * a new owner after its worker died. What runs must also be the very request
         * admitted under its id, for a session of its tenant (the claim checks both). */
        int rc = cq_auth_open(d->keys, msg->payload, msg->len, cq_unix_ms(), 0, &op, &why);
        const char *invalid = rc < 0 ? why.msg : cq_codec_invalid(op.req);
        if (invalid == NULL && op.req->session_id[0] == '\0')
            invalid = "no session id";
        if (invalid == NULL)
            invalid = cq_fleet_reply_topic_refused(&d->cfg, op.req->reply_topic,
                                                   op.req->tenant != NULL ? op.req->tenant : "");
        if (invalid != NULL) {
            /* Dispatchers validate; this is someone writing to a worker topic directly. */
            cq_wm_dead_letter(d->metrics, rc < 0 && why.code == CQ_EDENIED ? "auth"
                                          : rc < 0 && op.req == NULL       ? "malformed"
                                                                           : "invalid");
            cq_wd_dead_letter(d, msg, invalid);
        } else {
            char early[4], digest[CQ_STORE_DIGEST_LEN + 1];
            cq_opened_digest_hex(&op, digest);
            Codeq__V1__Request *req = op.req;
            cq_tracing_request(&trace.w3c, req);
            if (op.outer == op.req)
                op.outer = NULL;
            op.req = NULL; /* the queue's now */
            cq_wm_arriving(msg);
            if (req->operation_case == CODEQ__V1__REQUEST__OPERATION_CANCEL_CALL)
                cq_wd_cancel(d, req); /* never queued: it must not wait behind the call */
            else
                cq_wd_enqueue(
                    d, req, digest, op.key_id, fence != NULL ? strtoull(fence, NULL, 10) : 0,
                    cq_kafka_header(msg, CQ_FLEET_EARLY_HEADER, early, sizeof(early)) != NULL,
                    &trace);
        }
        cq_opened_free(&op);
        /* Exactly-once rests on the claim in Redis, not on offsets: committing as soon as
         * a request is queued is safe, and cq_wd_recover_own() covers a crash before it ran. */
        rd_kafka_offset_store(msg->rkt, msg->partition, msg->offset);
        rd_kafka_message_destroy(msg);
    }

    /* Drain: no new sessions (the heartbeat says draining), finish what was queued. */
    cq_log_event(CQ_LOG_INFO, "worker_draining", CQ_FIELDS(CQ_LS("worker_id", d->cfg.worker_id)),
                 "draining");
    cq_wd_heartbeat_once(d);
    rd_kafka_consumer_close(d->consumer);
    pthread_mutex_lock(&d->lock);
    for (struct held *h = d->held; h != NULL; h = h->next)
        pthread_cond_signal(&h->wake); /* a lingering thread sees the stop and ends */
    while (d->threads > 0)
        pthread_cond_wait(&d->idle, &d->lock);
    pthread_mutex_unlock(&d->lock);
    cq_wd_save_states(d);
    atomic_store(&d->drained, true);
    pthread_join(d->heartbeat, NULL);
    /* Give the sessions up: their files are in Redis; the next request of each moves it
     * to a live worker at once rather than after a heartbeat timeout. */
    pthread_mutex_lock(&d->lock);
    for (struct held *h = d->held; h != NULL; h = h->next)
        if (h->local &&
            cq_store_release_session(d->store, h->id, d->cfg.worker_id, h->fence, err) < 0)
            cq_log_event(CQ_LOG_WARN, "session_not_released",
                         CQ_FIELDS(CQ_LS("session_id", h->id), CQ_LI("fence", h->fence),
                                   CQ_LS("error", err->msg)),
                         "session %s: %s", h->id, err->msg);
        else if (h->local)
            cq_wm_drained(d->metrics);
    pthread_mutex_unlock(&d->lock);
    cq_store_worker_gone(d->store, d->cfg.worker_id, err);
    rd_kafka_flush(d->producer, 10000);
    cq_log_event(CQ_LOG_INFO, "worker_drained", CQ_FIELDS(CQ_LS("worker_id", d->cfg.worker_id)),
                 "drained; exiting");
    return 0;
}

void cq_daemon_destroy(struct cq_daemon *d)
{
    if (d == NULL)
        return;
    cq_wm_stop(d->metrics);
    if (d->consumer != NULL)
        rd_kafka_destroy(d->consumer);
    /* cq_worker_destroy ends sessions without on_session_end: released sessions keep
     * their Redis state for the worker that takes them over. */
    cq_worker_destroy(d->core);
    if (d->producer != NULL)
        rd_kafka_destroy(d->producer);
    cq_store_close(d->store);
    cq_store_close(d->beat);
    cq_keystore_close(d->keys);
    cq_keyring_close(d->keyring);
    cq_audit_close(d->audit);
    cq_wd_forget_all(d);
    cq_wd_interp_free(d);
    pthread_mutex_destroy(&d->defined_lock);
    pthread_mutex_destroy(&d->fetch_lock);
    pthread_mutex_destroy(&d->lock);
    pthread_cond_destroy(&d->idle);
    cq_wm_free(d->metrics);
    free(d);
}
