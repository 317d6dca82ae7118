/* fleet/interpreters.h - code interpreters and runtimes defined once for the whole
 * fleet, in its Redis, and the cache of runtime layers (docs/fleet.md, "Code
 * interpreters in the fleet").
 *
 * The fleet stores definitions and specs as opaque JSON text: runtime/interpreter.h
 * and runtime/runtime.h parse them, in the CLI that writes them and in the workers
 * that use them. The dispatcher needs only whether a name exists and for which
 * tenants: the CLI records both beside the definition (runtime, tenants). */
#ifndef CQ_FLEET_INTERPRETERS_H
#define CQ_FLEET_INTERPRETERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "common/error.h"
#include "fleet/store.h"

/* The built-in interpreter (worker/worker.h's CQ_INTERPRETER_DEFAULT): never in Redis. */
#define CQ_INTERPRETER_DEFAULT_NAME "codeq.default"

/* A deleted interpreter's marker is kept this long: the longest a session started on
 * it can live (and be adopted), plus the hour its keys outlive it. */
#define CQ_FLEET_DELETED_KEPT_S (CQ_WORKER_MAX_SESSION_TTL_S + 3600)

/* ---- interpreters: interpreter:<name>, the index interpreters ----------------------- */

struct cq_fleet_interpreter {
    char *def;        /* its definition, JSON (malloc'd) */
    char runtime[64]; /* the runtime it names ("" none), for the workers' lookups */
    /* The tenants allowed to start sessions on it, comma-separated (malloc'd; "":
     * every tenant), so that the dispatcher decides without parsing the definition. */
    char *tenants;
    bool deleted; /* refuses new sessions; sessions on it may still be adopted */
    int64_t created_ms, deleted_ms;
};

/* Defines name (runtime: the runtime its definition names, "" none; tenants: the
 * tenants it names, comma-separated, "" every tenant). EEXIST when a live one has the
 * name, unless replace; a deleted one's marker is replaced. */
int cq_store_interpreter_put(struct cq_store *st, const char *name, const char *runtime,
                             const char *tenants, const char *def, bool replace,
                             struct cq_error *err);
/* *found false when there is neither a definition nor a deleted marker. Free with
 * cq_fleet_interpreter_free(). */
int cq_store_interpreter_get(struct cq_store *st, const char *name,
                             struct cq_fleet_interpreter *out, bool *found, struct cq_error *err);
void cq_fleet_interpreter_free(struct cq_fleet_interpreter *it);
/* Whether tenant may start a session on it: one it lists, or any when it lists none.
 * tenant "" or NULL: none (a keyless fleet's requests name none), which only an
 * interpreter for every tenant admits. */
bool cq_fleet_interpreter_allows(const struct cq_fleet_interpreter *it, const char *tenant);
/* Marks it deleted (CQ_ENOTFOUND when there is no live one): out of the index, the
 * marker kept CQ_FLEET_DELETED_KEPT_S. */
int cq_store_interpreter_delete(struct cq_store *st, const char *name, struct cq_error *err);
/* The live interpreters' names, sorted (malloc'd array of malloc'd strings). */
int cq_store_interpreter_names(struct cq_store *st, char ***names, size_t *n, struct cq_error *err);
void cq_fleet_names_free(char **names, size_t n);

/* ---- runtimes: runtime:<name>, the index runtimes ------------------------------------ */

struct cq_fleet_runtime {
    char *spec;           /* the spec, JSON (malloc'd) */
    char wheelhouse[512]; /* build options for a worker that builds it ("" none) */
    char index_url[512];
    char digest[65];       /* its layer's, once built ("" not yet) */
    char layer_sha256[65]; /* of the cached stream ("" none cached: over the cap) */
    uint64_t layer_size;
    char built_by[64]; /* a worker id, or "cli" */
    int64_t updated_ms;
};

/* Records a runtime's spec and build options, replacing what was there: its digest
 * and cached layer go (the next worker that needs it fetches what the builder
 * uploads, or builds it). */
int cq_store_runtime_put(struct cq_store *st, const char *name, const char *spec,
                         const char *wheelhouse, const char *index_url, struct cq_error *err);
int cq_store_runtime_get(struct cq_store *st, const char *name, struct cq_fleet_runtime *out,
                         bool *found, struct cq_error *err);
void cq_fleet_runtime_free(struct cq_fleet_runtime *rt);
/* Removes the runtime and its cached layer (CQ_ENOTFOUND when none). */
int cq_store_runtime_delete(struct cq_store *st, const char *name, struct cq_error *err);
int cq_store_runtime_names(struct cq_store *st, char ***names, size_t *n, struct cq_error *err);

/* ---- the layer cache: layer:<digest> ------------------------------------------------ */

/* Records that name was built as digest, by built_by, and caches its packed layer
 * (data, len bytes; NULL: too large for the cache, recorded without it). With token,
 * only while the build lock of name is token's (EBUSY otherwise: the lock expired
 * and another builder took over); and only if the runtime's spec is still spec_sha256
 * (hex SHA-256 of the spec the build used; CQ_EINVALID: the runtime was pushed again
 * meanwhile). The stream is written under a temporary key in slices, then renamed
 * into place with the record in one script, so a reader never sees half a layer. */
int cq_store_layer_put(struct cq_store *st, const char *name, const char *spec_sha256,
                       const char *digest, const void *data, size_t len, const char *built_by,
                       const char *token, struct cq_error *err);
/* The cached layer of rt (read in slices), checked against rt's layer_size and
 * layer_sha256: CQ_ENOTFOUND when it is not cached, CQ_EINVALID when the bytes differ. */
int cq_store_layer_get(struct cq_store *st, const struct cq_fleet_runtime *rt, uint8_t **data,
                       size_t *len, struct cq_error *err);
/* Hex SHA-256 (65 bytes with the NUL) of data. */
void cq_fleet_sha256_hex(const void *data, size_t len, char out[65]);

/* ---- the build lock: lock:build:<name> ---------------------------------------------- */

/* Takes the lock for ttl_ms (*taken false: someone else holds it). A builder renews it
 * while it builds, so a crashed builder's lock expires within ttl_ms and another
 * worker takes over. */
int cq_store_build_lock(struct cq_store *st, const char *name, const char *token, unsigned ttl_ms,
                        bool *taken, struct cq_error *err);
/* Extends it if token still holds it (*held). */
int cq_store_build_renew(struct cq_store *st, const char *name, const char *token, unsigned ttl_ms,
                         bool *held, struct cq_error *err);
int cq_store_build_unlock(struct cq_store *st, const char *name, const char *token,
                          struct cq_error *err);

/* ---- placement ------------------------------------------------------------------------- */

/* The live workers as cq_store_workers() lists them, each with ready[i] true when it
 * has interpreter ready (its heartbeat's `interpreters`). */
int cq_store_workers_ready(struct cq_store *st, const char *interpreter,
                           struct cq_worker_status *live, bool *ready, size_t max, size_t *n,
                           struct cq_error *err);
/* The interpreters a worker has ready, for its heartbeat's `interpreters` field
 * (comma-separated names). */
int cq_store_worker_interpreters(struct cq_store *st, const char *worker_id, const char *names,
                                 struct cq_error *err);

#endif
