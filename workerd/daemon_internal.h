/* workerd/daemon_internal.h - what the parts of codeq-worker's daemon share (daemon.c:
 * the request loop, the sessions' queues and threads, their replies; upkeep.c: the
 * heartbeat, the sessions Redis no longer has, this worker's own leftovers at start
 * and the kernel states at drain). Private to them: main.c uses workerd/workerd.h. */
#ifndef CQ_WORKERD_DAEMON_INTERNAL_H
#define CQ_WORKERD_DAEMON_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "fleet/audit.h"
#include "fleet/codec.h"
#include "fleet/config.h"
#include "fleet/kafka.h"
#include "fleet/store.h"
#include "fleet/trace.h"
#include "common/tenant.h"
#include "worker/worker.h"
#include "workerd/snapshot.h"

/* Chores are done once a session's thread has been idle this long, or when this many
 * replies or this much time piled up under steady load. */
#define CHORES_DELAY_MS 5
/* A published reply is stored in Redis once its session has been idle this long (its
 * way to the client takes about as long), or before the session's next request. */
#define STORE_DELAY_US 300
#define CHORES_MAX     64
#define CHORES_AGE_MS  100

/* A request in its session's queue (daemon.c). */
struct queued;

/* A session this worker serves: its queue and what it last saved to Redis. */
struct held {
    char id[CQ_SESSION_ID_MAX + 1];
    uint64_t fence;
    bool local;   /* the core has it (started or adopted here) */
    bool moved;   /* adopted from a lost or drained worker: say so in the next result */
    bool running; /* a thread drains the queue */
    /* The core's copy is being stopped as stale (cq_wd_discard()): its end is not the
     * session's, which goes on elsewhere or under a newer token. */
    bool discarding;
    bool waiting; /* ... and waits on wake for the next request */
    /* What the next result says about the move (cq_state_restore()). */
    char moved_note[4096];
    /* An adopted session's creation time and time to live in Redis: the core's copy
     * was started at adoption with the time left, and facts must not shorten the
     * session by writing that (lifetime()). 0: started here, the core's are right. */
    int64_t created_ms;
    uint32_t ttl_s;
    /* The session's packed StartSession until Redis has it (write_facts()). */
    uint8_t *start;
    size_t start_len;
    pthread_cond_t wake;
    struct queued *head, *tail;
    struct cq_manifest manifest;
    /* Bookkeeping that can wait until the session is idle (do_chores()); touched only
     * by the session's thread. */
    char answered[CHORES_MAX][64]; /* replied to, still in this worker's in-flight set */
    size_t n_answered;
    struct cq_delivery *delivery; /* of the answered replies */
    bool facts_due;               /* the session's facts in Redis are out of date */
    int64_t chores_since;         /* cq_now_ms() of the oldest chore */
    int64_t claimed_ms;           /* cq_now_ms() of the running request's claim */
    /* The call running now (invoke()), which a cancel_call can interrupt: its request
     * id, its tenant and its cancellation (NULL: none runs). Under the daemon's lock. */
    char running_id[64];
    char running_tenant[CQ_TENANT_MAX + 1];
    struct cq_cancel *cancel;
    bool cancel_next; /* the request being handled was cancelled while it was queued */
    /* The final reply published last and not yet stored in Redis (finish()). */
    char unstored_id[64];
    uint8_t *unstored; /* NULL: none; malloc'd unless it is fallback */
    size_t unstored_len;
    bool unstored_published;
    uint8_t fallback[CQ_CODEC_FALLBACK_MAX]; /* finish_fallback()'s reply */
    struct held *next;
};

/* A code interpreter this worker defined from Redis, with the definition and layer
 * digest it was defined with (workerd/interp.c). */
struct cq_wd_defined {
    char name[64];
    char *def;
    char digest[65];
    struct cq_wd_defined *next;
};

struct cq_daemon {
    struct cq_fleet_config cfg;
    struct cq_worker *core;
    struct cq_keystore *keys;   /* NULL: keyless */
    struct cq_keyring *keyring; /* the keys' Redis (keys_file = redis), or NULL */
    struct cq_audit *audit;     /* NULL: no audit log */
    /* Where d->audit's records go. */
    struct cq_audit_kafka audit_sink;
    struct cq_store *store;
    /* The heartbeat's own connection: the store serializes its commands on one
     * connection, and with a hundred sessions busy a beat queued behind their claims,
     * results and files came later than the lease (3 beats) allows, and the
     * dispatchers took a live worker for lost. */
    struct cq_store *beat;
    rd_kafka_t *producer, *consumer;
    char topic[256];
    pthread_mutex_t lock;
    pthread_cond_t idle;
    struct held *held;
    unsigned threads;
    atomic_bool stopping;
    atomic_bool drained; /* ends the heartbeat, which must outlive the drain */
    /* cq_now_ms() of the last heartbeat Redis took, and of the last one that came
     * later than the lease after the one before it (lease_in_doubt()). */
    _Atomic int64_t beat_ok_ms, lease_gap_ms;
    pthread_t heartbeat;
    /* Code interpreters (workerd/interp.c): those defined here, and one fetch or build
     * of a runtime's layer at a time. */
    pthread_mutex_t defined_lock, fetch_lock;
    struct cq_wd_defined *defined;
    struct cq_wm *metrics; /* NULL: no metrics_listen (workerd/metrics.h) */
};

/* Whether h is idle and local with token fence, so that stopping it races no request.
 * With d->lock held. */
static inline bool idle_local(const struct held *h, uint64_t fence)
{
    return h->local && !h->running && h->head == NULL && h->fence == fence;
}

/* ---- daemon.c ----------------------------------------------------------------------- */

/* Stops the core's copy of a session that is not this worker's under the token it has;
 * with idle_fence != 0 only while it is idle and local with that token. True when the
 * copy was stopped. */
bool cq_wd_discard(struct cq_daemon *d, const char *session_id, uint64_t idle_fence);
/* The core's on_session_end: a session that ended here (its time to live, a stop) is
 * forgotten and its Redis state removed. */
void cq_wd_on_session_end(void *ctx, const char *session_id);
/* A message on this worker's topic that no dispatcher sent: to the dead-letter topic. */
void cq_wd_dead_letter(struct cq_daemon *d, const rd_kafka_message_t *msg, const char *why);
/* Forgets every session held (at destroy, after the core stopped them). */
void cq_wd_forget_all(struct cq_daemon *d);
/* A cancel_call (which it takes) from the consumer: the tenant's call it names is
 * interrupted if it runs, or marked not to run if it is queued; the cancel is answered
 * at once, unstored, on its reply topic (schemas/codeq.proto, CancelCall). */
void cq_wd_cancel(struct cq_daemon *d, Codeq__V1__Request *req);
/* Queues req (which it takes) on its session, and starts the session's thread if none
 * drains the queue. */
void cq_wd_enqueue(struct cq_daemon *d, Codeq__V1__Request *req, const char *digest,
                   const char *key_id, uint64_t fence, bool early, const struct cq_trace *trace);

/* ---- upkeep.c ----------------------------------------------------------------------- */

void cq_wd_heartbeat_once(struct cq_daemon *d);
/* The heartbeat thread (arg: the daemon): beats until d->drained. */
void *cq_wd_heartbeat_main(void *arg);
/* Settles the requests routed to this worker id before this process started. */
void cq_wd_recover_own(struct cq_daemon *d);
/* Saves the variables of every session held here, at drain. */
void cq_wd_save_states(struct cq_daemon *d);

#endif
