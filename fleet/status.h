/* fleet/status.h - the fleet's state as an operator sees it (`codeq fleet status`):
 * workers and dispatchers from their heartbeats in Redis, the request topic's backlog
 * and the dead letters from Kafka. Also the dispatchers' own heartbeat, without which
 * nothing would list them (docs/fleet.md, "codeq fleet status"). */
#ifndef CQ_FLEET_STATUS_H
#define CQ_FLEET_STATUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "common/error.h"
#include "fleet/config.h"

struct cq_store;

/* The consumer group of the dispatchers of cfg's request topic. */
void cq_fleet_dispatcher_group(const struct cq_fleet_config *cfg, char *out, size_t len);

/* ---- the dispatchers' heartbeat: dispatcher:<id> and the dispatchers index ---------- */

/* host-pid: unique among running dispatchers, and says where to look. */
void cq_fleet_dispatcher_id(char *out, size_t len);
/* Renews dispatcher:<id> for ttl_ms and its entry in the index. */
int cq_store_dispatcher_beat(struct cq_store *st, const char *id, int64_t started_ms,
                             unsigned ttl_ms, struct cq_error *err);
/* Removes them: a dispatcher that stops says so rather than waiting to expire. */
int cq_store_dispatcher_gone(struct cq_store *st, const char *id, struct cq_error *err);

/* What a worker's heartbeat adds for operators (worker:<id>'s max_sessions,
 * memory_bytes and warm_ready; memory_bytes < 0: not written), only while worker:<id>
 * exists. */
int cq_store_worker_facts(struct cq_store *st, const char *worker_id, int64_t max_sessions,
                          int64_t memory_bytes, int64_t warm_ready, struct cq_error *err);

/* ---- the state ---------------------------------------------------------------------- */

/* Each number is -1 when unknown (not recorded, or the heartbeat expired). */
struct cq_status_worker {
    char id[64];
    bool live;            /* worker:<id> exists: its lease holds */
    bool draining;        /* live and stopping: takes no new sessions */
    int64_t capacity;     /* sessions it can still take (0 while draining) */
    int64_t sessions;     /* live sessions it holds */
    int64_t max_sessions; /* its max_sessions */
    int64_t memory_bytes; /* memory it may give sandboxes */
    int64_t warm_ready;   /* warm sandboxes ready */
    int64_t heartbeat_ms; /* Unix ms of its last heartbeat */
    char interpreters[1024];
};

struct cq_status_dispatcher {
    char id[128];
    bool live; /* dispatcher:<id> exists */
    int64_t heartbeat_ms, started_ms;
};

struct cq_status_partition {
    int32_t partition;
    int64_t committed; /* the group's committed offset, -1 none */
    int64_t low, high; /* watermarks */
    int64_t lag;       /* high - committed (high - low without a commit) */
};

#define CQ_STATUS_RECENT_DEAD 5
struct cq_status_dead_letter {
    int32_t partition;
    int64_t offset, timestamp_ms;
    char reason[256];
};

#define CQ_STATUS_MAX_WORKERS     1024
#define CQ_STATUS_MAX_DISPATCHERS 256

struct cq_fleet_status {
    int64_t now_ms; /* Redis' clock: ages are measured against it */
    struct cq_status_worker *workers;
    size_t n_workers;
    struct cq_status_dispatcher *dispatchers;
    size_t n_dispatchers;
    int64_t sessions;    /* sessions in the fleet's indexes (listSessions') */
    bool sessions_exact; /* false: at least that many (the tenants' indexes were not all
                          * found within the bounded scan) */
    char group[256];
    struct cq_status_partition *partitions;
    size_t n_partitions;
    int64_t lag;
    int64_t dead_letters; /* messages in the dead-letter topic */
    struct cq_status_dead_letter recent[CQ_STATUS_RECENT_DEAD]; /* newest first */
    size_t n_recent;
};

/* Fills the Redis part (now_ms, workers, dispatchers, sessions). Fails at once, without
 * the daemons' wait for Redis to come back, when Redis cannot be reached. */
int cq_fleet_status_redis(const struct cq_fleet_config *cfg, struct cq_fleet_status *s,
                          struct cq_error *err);
/* Fills the Kafka part (group, partitions, lag, dead letters), giving up after
 * timeout_ms when Kafka does not answer. */
int cq_fleet_status_kafka(const struct cq_fleet_config *cfg, int timeout_ms,
                          struct cq_fleet_status *s, struct cq_error *err);
void cq_fleet_status_free(struct cq_fleet_status *s);

#endif
