/* runtime/internal.h - shared by runtime/'s own files (not public). */
#ifndef CQ_RUNTIME_INTERNAL_H
#define CQ_RUNTIME_INTERNAL_H

#include <stdbool.h>
#include "common/error.h"

/* Takes STORE/lock, under which every change to layers/, names/ and interpreters/
 * happens (builds, removals, fetched layers, definitions). With create, the store and
 * its parents are made first, 0755: the builds' installers, run as nobody, must reach
 * it. Returns the lock's fd (closing it releases the lock), or -1 with err (err may be
 * NULL). */
int cq_runtime_store_lock(const char *store, bool create, struct cq_error *err);

/* Points STORE/names/<name> at digest, replacing what it pointed to in one rename (a
 * reader sees the old digest or the new one, never a half-written file). Under the
 * store's lock. */
int cq_runtime_set_name(const char *store, const char *name, const char *digest,
                        struct cq_error *err);

#endif
