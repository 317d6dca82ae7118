/* worker/daemon/daemon.h - codeq-worker: the worker core behind Kafka and Redis.
 *
 * It consumes the requests the dispatchers routed to it (topic codeq.worker.<id>), runs
 * each in its session's sandbox (one at a time per session, sessions in parallel),
 * streams output and publishes one final reply per request, keeps the session's files
 * in Redis, heartbeats its capacity, and drains on SIGTERM. docs/fleet.md has the
 * protocol. */
#ifndef CQ_WORKER_DAEMON_H
#define CQ_WORKER_DAEMON_H

#include "fleet/fleet.h"

struct cq_daemon;

int cq_daemon_create(const struct cq_fleet_config *cfg, struct cq_daemon **out,
                     struct cq_error *err);
/* Serves until cq_daemon_stop; then drains and returns. */
int cq_daemon_run(struct cq_daemon *d, struct cq_error *err);
/* Async-signal-safe. */
void cq_daemon_stop(struct cq_daemon *d);
void cq_daemon_destroy(struct cq_daemon *d);

/* ---- snapshot.c: a session's workspace files <-> Redis ---------------------------- */

struct cq_manifest_entry {
    char *path;
    uint64_t size;
    int64_t mtime_ns;
};

struct cq_manifest {
    struct cq_manifest_entry *entries;
    size_t n, cap;
};

void cq_manifest_free(struct cq_manifest *m);
/* Saves files that changed since *m (and deletes removed ones) under the session's
 * fence; *m becomes the new state. */
int cq_snapshot_save(struct cq_worker *core, struct cq_store *st, const char *session_id,
                     const char *worker_id, uint64_t fence, struct cq_manifest *m,
                     struct cq_error *err);
/* Writes the session's stored files into its (new) workspace; fills *m. */
int cq_snapshot_restore(struct cq_worker *core, struct cq_store *st, const char *session_id,
                        struct cq_manifest *m, size_t *restored, struct cq_error *err);

#endif
