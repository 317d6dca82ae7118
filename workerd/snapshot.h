/* workerd/snapshot.h - a session's workspace files <-> Redis (private to workerd/).
 *
 * After every call the worker saves what changed in the workspace, so that a session
 * moved to another worker (its owner died or drained) finds its files there. */
#ifndef CQ_WORKERD_SNAPSHOT_H
#define CQ_WORKERD_SNAPSHOT_H

#include <stddef.h>
#include <stdint.h>
#include "common/error.h"
#include "fleet/store.h"
#include "worker/worker.h"

struct cq_manifest_entry {
    char *path;
    uint64_t size;
    int64_t mtime_ns;
    uint32_t mode; /* permission bits: a chmod changes no size or mtime, so it is compared */
    char *link;    /* a symbolic link's target; NULL: a regular file */
};

struct cq_manifest {
    struct cq_manifest_entry *entries;
    size_t n, cap;
};

void cq_manifest_free(struct cq_manifest *m);
/* Appends a copy of path with its size, modification time and permission bits, and of
 * link (a symbolic link's target; NULL for a regular file). */
int cq_manifest_add(struct cq_manifest *m, const char *path, uint64_t size, int64_t mtime_ns,
                    uint32_t mode, const char *link, struct cq_error *err);
/* Sorts by path (strcmp order), as cq_manifest_diff needs. */
void cq_manifest_sort(struct cq_manifest *m);

/* What a save must do to turn the stored state old into now. The pointers point into
 * the two manifests, which must outlive the diff. */
struct cq_manifest_diff {
    const struct cq_manifest_entry **changed; /* in now: new, or a new size, mtime, mode or
                                               * link target */
    size_t n_changed;
    const struct cq_manifest_entry **removed; /* in old: no longer in now */
    size_t n_removed;
};

/* Compares two manifests sorted by path (cq_manifest_sort); each list keeps the order
 * of its manifest. Pure: no I/O. Returns 0, or -1 with err when out of memory. */
int cq_manifest_diff(const struct cq_manifest *old, const struct cq_manifest *now,
                     struct cq_manifest_diff *diff, struct cq_error *err);
void cq_manifest_diff_free(struct cq_manifest_diff *diff);

/* Saves files that changed since *m (and deletes removed ones) under the session's
 * fence; *m becomes the new state. */
int cq_snapshot_save(struct cq_worker *core, struct cq_store *st, const char *session_id,
                     const char *worker_id, uint64_t fence, struct cq_manifest *m,
                     struct cq_error *err);
/* Writes the session's stored files into its (new) workspace; fills *m. */
int cq_snapshot_restore(struct cq_worker *core, struct cq_store *st, const char *session_id,
                        struct cq_manifest *m, size_t *restored, struct cq_error *err);

/* A drained session's kernel state (docs/fleet.md, "Stopping a worker"). Saves the
 * variables of the session's kernels, each state at most max_bytes, under the
 * session's fence; a kernel that could not save them is recorded with why. */
int cq_state_save(struct cq_worker *core, struct cq_store *st, const char *session_id,
                  const char *worker_id, uint64_t fence, uint64_t max_bytes, struct cq_error *err);
/* For a session just adopted under fence: takes the state its last owner saved when it
 * drained (if any) and restores it into the session's new kernels. note gets what the
 * client is told about the move: a drain, with what was restored and what was not, or
 * the loss of the worker (files only). -1 only when Redis failed (note is filled). */
int cq_state_restore(struct cq_worker *core, struct cq_store *st, const char *session_id,
                     const char *worker_id, uint64_t fence, char *note, size_t note_len,
                     struct cq_error *err);

#endif
