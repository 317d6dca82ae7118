/* workerd/upkeep.c - what codeq-worker does beside its requests (daemon.c has those):
 * the heartbeat, which is the lease on this worker's sessions and requests; the
 * sessions Redis no longer gives this worker, stopped by the heartbeat thread; the
 * requests of this worker's previous run, settled at start; and the sessions' kernel
 * states, saved at drain for the workers that take the sessions over. */
#define _GNU_SOURCE
#include "workerd/daemon_internal.h"
#include "common/clock.h"
#include "fleet/auth.h"
#include "fleet/log.h"
#include "fleet/recovery.h"
#include "fleet/interpreters.h"
#include "fleet/status.h"
#include "fleet/store.h"
#include "workerd/interp.h"
#include "workerd/snapshot.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- heartbeat and recovery of this worker's own leftovers ------------------------- */

void cq_wd_heartbeat_once(struct cq_daemon *d)
{
    unsigned live = 0;
    pthread_mutex_lock(&d->lock);
    for (struct held *h = d->held; h != NULL; h = h->next)
        live += h->local;
    pthread_mutex_unlock(&d->lock);
    bool draining = atomic_load(&d->stopping);
    int64_t capacity = draining ? 0 : (int64_t)d->cfg.max_sessions - live;
    /* By memory too: sessions hold far less than their limits, so the count of what
     * fits is measured (worker/capacity.c); the dispatchers place by the lesser. */
    uint64_t room = cq_worker_room_by_memory(d->core);
    if (capacity > 0 && (uint64_t)capacity > room)
        capacity = (int64_t)room;
    struct cq_error err;
    if (cq_store_heartbeat(d->beat, d->cfg.worker_id, capacity, live, draining,
                           d->cfg.heartbeat_ms * 3, &err) < 0) {
        cq_log_event(CQ_LOG_WARN, "heartbeat_failed",
                     CQ_FIELDS(CQ_LS("worker_id", d->cfg.worker_id), CQ_LS("error", err.msg)),
                     "heartbeat: %s", err.msg);
        return;
    }
    /* The interpreters ready here, for the dispatchers' placement. */
    char ready[4096];
    cq_wd_interp_ready(d, ready, sizeof(ready));
    if (cq_store_worker_interpreters(d->beat, d->cfg.worker_id, ready, &err) < 0)
        cq_log_event(CQ_LOG_WARN, "heartbeat_interpreters_failed",
                     CQ_FIELDS(CQ_LS("worker_id", d->cfg.worker_id), CQ_LS("error", err.msg)),
                     "heartbeat: interpreters: %s", err.msg);
    /* For operators (codeq fleet status): the default session's memory limit times
     * max_sessions, what the worker may give sandboxes. */
    struct cq_worker_config wc;
    cq_worker_config_init(&wc);
    unsigned warm_ready, warm_target;
    cq_worker_warm_counts(d->core, &warm_ready, &warm_target);
    if (cq_store_worker_facts(d->beat, d->cfg.worker_id, d->cfg.max_sessions,
                              (int64_t)(wc.limits.memory_bytes * d->cfg.max_sessions), warm_ready,
                              &err) < 0)
        cq_log_event(CQ_LOG_WARN, "heartbeat_facts_failed",
                     CQ_FIELDS(CQ_LS("worker_id", d->cfg.worker_id), CQ_LS("error", err.msg)),
                     "heartbeat: facts: %s", err.msg);
    int64_t now = (int64_t)cq_now_ms(), last = atomic_load(&d->beat_ok_ms);
    if (last != 0 && now - last > 3 * (int64_t)d->cfg.heartbeat_ms)
        atomic_store(&d->lease_gap_ms, now);
    atomic_store(&d->beat_ok_ms, now);
}

/* ---- sessions Redis no longer has ------------------------------------------------------
 *
 * A session's sandbox here is only worth keeping while Redis names this worker its owner
 * with the token it was adopted with. A Redis crash can lose a session started in its
 * last second, and a worker cut off long enough has its sessions moved elsewhere: in
 * both cases the sandbox here would serve nobody until its time to live, holding memory,
 * processes and a slot. So every RECONCILE_BEATS heartbeats the sessions idle here are
 * checked, and the ones Redis gave up or gave to another worker are stopped. A busy
 * session is left to its next request's own fencing (handle() in daemon.c). */
#define RECONCILE_BEATS 5

struct local_session {
    char id[CQ_SESSION_ID_MAX + 1];
    uint64_t fence;
};

static void reconcile_once(struct cq_daemon *d)
{
    size_t n = 0, cap = 0;
    struct local_session *list = NULL;
    pthread_mutex_lock(&d->lock);
    for (struct held *h = d->held; h != NULL; h = h->next) {
        if (!idle_local(h, h->fence) || h->fence == 0)
            continue;
        if (n == cap) {
            size_t more = cap ? cap * 2 : 16;
            struct local_session *grown = realloc(list, more * sizeof(*list));
            if (grown == NULL)
                break; /* the rest waits for the next round */
            list = grown;
            cap = more;
        }
        snprintf(list[n].id, sizeof(list[n].id), "%s", h->id);
        list[n++].fence = h->fence;
    }
    pthread_mutex_unlock(&d->lock);
    for (size_t i = 0; i < n; i++) {
        char owner[64];
        uint64_t fence;
        struct cq_error err;
        /* On the heartbeat's own connection: a Redis that is away stops the round (the
         * next one tries again), and never delays the sessions' own commands. */
        if (cq_store_owner(d->beat, list[i].id, owner, sizeof(owner), &fence, &err) < 0)
            break;
        if (strcmp(owner, d->cfg.worker_id) == 0 && fence == list[i].fence)
            continue;
        if (cq_wd_discard(d, list[i].id, list[i].fence))
            cq_log_event(
                CQ_LOG_WARN, "session_disowned",
                CQ_FIELDS(CQ_LS("session_id", list[i].id), CQ_LS("worker_id", d->cfg.worker_id),
                          CQ_LI("fence", list[i].fence), CQ_LS("owner", fence != 0 ? owner : NULL),
                          CQ_LI("owner_fence", fence)),
                "session %s: %s; its sandbox here was stopped", list[i].id,
                fence == 0 ? "gone from Redis (a Redis crash can lose the last second)"
                           : "Redis names another owner");
    }
    free(list);
}

void *cq_wd_heartbeat_main(void *arg)
{
    struct cq_daemon *d = arg;
    unsigned beats = 0;
    /* Beats on while draining: the heartbeat is the lease on this worker's sessions
     * and requests, and a drain that outlasts it would have the dispatchers declare
     * this worker lost, answer its running requests with the worker-lost error and
     * move its sessions under the executions still finishing here. */
    while (!atomic_load(&d->drained)) {
        cq_wd_heartbeat_once(d);
        if (++beats % RECONCILE_BEATS == 0 && !atomic_load(&d->stopping))
            reconcile_once(d);
        rd_kafka_poll(d->producer, 0); /* delivery reports of chunks nobody waits for */
        struct timespec ts = {.tv_sec = d->cfg.heartbeat_ms / 1000,
                              .tv_nsec = (long)(d->cfg.heartbeat_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

static void reroute_own(void *ctx, struct cq_opened *op)
{
    char digest[CQ_STORE_DIGEST_LEN + 1];
    cq_opened_digest_hex(op, digest);
    cq_wd_enqueue(ctx, op->req, digest, op->key_id, 0, false, NULL);
    if (op->outer == op->req)
        op->outer = NULL;
    op->req = NULL;
}

/* Requests routed to this worker id before this process started (a restart faster
 * than the dispatchers noticed the death) are settled as recovery would: the ones
 * never started run here, in order. */
void cq_wd_recover_own(struct cq_daemon *d)
{
    size_t settled = 0;
    struct cq_error err;
    if (cq_fleet_recover(d->store, d->producer, d->cfg.worker_id, reroute_own, d, &settled, &err) <
        0)
        cq_log_event(CQ_LOG_ERROR, "worker_recovery_failed",
                     CQ_FIELDS(CQ_LS("worker_id", d->cfg.worker_id), CQ_LS("error", err.msg)),
                     "recovering this worker's earlier requests: %s", err.msg);
    else if (settled > 0)
        cq_log_event(CQ_LOG_INFO, "previous_run_recovered",
                     CQ_FIELDS(CQ_LS("worker_id", d->cfg.worker_id), CQ_LI("settled", settled)),
                     "settled %zu requests of this worker's previous run", settled);
}

/* ---- drain: the sessions' kernel state -------------------------------------------- */

/* Each state is held to the session's files quota (the state counts against it in
 * Redis, beside the files) and to this, which bounds what one kernel's line can make
 * the worker hold in memory while it saves. */
#define STATE_MAX_BYTES (64ULL << 20)

/* Saves the variables of every session held here (workerd/snapshot.c), with the
 * heartbeat still going: saving takes up to the kernels' checkpoint timeout per session,
 * and a lease that ran out meanwhile would have the sessions moved, their state
 * fenced off. Sessions are saved one at a time, so that the memory of states in flight
 * stays one state's. */
void cq_wd_save_states(struct cq_daemon *d)
{
    struct saved {
        char id[CQ_SESSION_ID_MAX + 1];
        uint64_t fence;
    } *list = NULL;
    size_t n = 0, cap = 0;
    pthread_mutex_lock(&d->lock);
    for (struct held *h = d->held; h != NULL; h = h->next) {
        if (!h->local)
            continue;
        if (n == cap) {
            struct saved *grown = realloc(list, (cap = cap ? cap * 2 : 16) * sizeof(*list));
            if (grown == NULL)
                break;
            list = grown;
        }
        snprintf(list[n].id, sizeof(list[n].id), "%s", h->id);
        list[n++].fence = h->fence;
    }
    pthread_mutex_unlock(&d->lock);
    uint64_t max = d->cfg.files_quota < STATE_MAX_BYTES ? d->cfg.files_quota : STATE_MAX_BYTES;
    for (size_t i = 0; i < n; i++) {
        struct cq_error err;
        if (cq_state_save(d->core, d->store, list[i].id, d->cfg.worker_id, list[i].fence, max,
                          &err) < 0)
            cq_log_event(CQ_LOG_WARN, "session_state_not_saved",
                         CQ_FIELDS(CQ_LS("session_id", list[i].id), CQ_LI("fence", list[i].fence),
                                   CQ_LS("error", err.msg)),
                         "session %s: variables not saved: %s", list[i].id, err.msg);
        else
            cq_log_event(CQ_LOG_INFO, "session_state_saved",
                         CQ_FIELDS(CQ_LS("session_id", list[i].id), CQ_LI("fence", list[i].fence)),
                         "session %s: variables saved for the next worker", list[i].id);
    }
    free(list);
}
