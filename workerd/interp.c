/* workerd/interp.c - code interpreters on a fleet worker (docs/fleet.md, "Code
 * interpreters in the fleet").
 *
 * The worker core asks resolve() for an interpreter it has not defined, from the
 * thread that starts the session. resolve() reads the definition from Redis, makes sure
 * the runtime's layer is in this worker's store (already there; else fetched from the
 * fleet's cache and checked; else built here from the spec, under the fleet-wide build
 * lock of the runtime, and uploaded for the other workers), and defines the
 * interpreter in the core. The session waits meanwhile; nothing else does (other
 * sessions run on their own threads, the heartbeat on its own). One fetch or build at a
 * time on a worker (fetch_lock): two sessions of one runtime arriving together make one
 * fetch, the second finds the layer in place. */
#define _GNU_SOURCE
#include "workerd/interp.h"
#include "common/clock.h"
#include "common/random.h"
#include "fleet/interpreters.h"
#include "fleet/log.h"
#include "runtime/interpreter.h"
#include "runtime/layer.h"
#include "runtime/runtime.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The build lock lives this long unless renewed, and is renewed at a third of it: a
 * builder that dies leaves the runtime to the next worker within BUILD_LOCK_MS. */
#define BUILD_LOCK_MS 30000
/* How long a session waits for another worker's build (or fetch, or a build lock that
 * changes hands) before its start fails. A build of a runtime of wheels takes seconds
 * (docs/performance.md); this bounds a stuck one. */
#define BUILD_WAIT_MS (15 * 60 * 1000)
#define POLL_MS       250

static _Thread_local bool adopting;

void cq_wd_interp_adopting(bool on)
{
    adopting = on;
}

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

const char *cq_wd_runtime_store(const struct cq_daemon *d)
{
    return cq_runtime_store_path(d->cfg.runtime_store[0] ? d->cfg.runtime_store : NULL);
}

/* ---- what this worker has defined ------------------------------------------------------ */

/* The definition text and layer digest an interpreter was defined with here. */
static struct cq_wd_defined *defined_find(struct cq_daemon *d, const char *name)
{
    for (struct cq_wd_defined *x = d->defined; x != NULL; x = x->next)
        if (strcmp(x->name, name) == 0)
            return x;
    return NULL;
}

static void defined_put(struct cq_daemon *d, const char *name, const char *def, const char *digest)
{
    pthread_mutex_lock(&d->defined_lock);
    struct cq_wd_defined *x = defined_find(d, name);
    if (x == NULL && (x = calloc(1, sizeof(*x))) != NULL) {
        snprintf(x->name, sizeof(x->name), "%s", name);
        x->next = d->defined;
        d->defined = x;
    }
    if (x != NULL) {
        free(x->def);
        x->def = strdup(def);
        snprintf(x->digest, sizeof(x->digest), "%s", digest);
    }
    pthread_mutex_unlock(&d->defined_lock);
}

void cq_wd_interp_free(struct cq_daemon *d)
{
    for (struct cq_wd_defined *x = d->defined, *next; x != NULL; x = next) {
        next = x->next;
        free(x->def);
        free(x);
    }
    d->defined = NULL;
}

void cq_wd_interp_ready(struct cq_daemon *d, char *out, size_t len)
{
    size_t used = 0;
    out[0] = '\0';
    pthread_mutex_lock(&d->defined_lock);
    for (struct cq_wd_defined *x = d->defined; x != NULL; x = x->next) {
        if (!cq_worker_has_interpreter(d->core, x->name))
            continue;
        size_t need = strlen(x->name) + (used > 0);
        if (used + need + 1 > len)
            break;
        used += (size_t)snprintf(out + used, len - used, "%s%s", used > 0 ? "," : "", x->name);
    }
    pthread_mutex_unlock(&d->defined_lock);
}

/* ---- the runtime's layer ------------------------------------------------------------------ */

struct renewer {
    struct cq_daemon *d;
    const char *name, *token;
    atomic_bool stop;
    atomic_bool lost;
    pthread_t thread;
};

static void *renew_main(void *arg)
{
    struct renewer *r = arg;
    int64_t next = (int64_t)cq_now_ms() + BUILD_LOCK_MS / 3;
    while (!atomic_load(&r->stop)) {
        sleep_ms(100);
        if ((int64_t)cq_now_ms() < next)
            continue;
        next = (int64_t)cq_now_ms() + BUILD_LOCK_MS / 3;
        bool held = false;
        struct cq_error err;
        if (cq_store_build_renew(r->d->store, r->name, r->token, BUILD_LOCK_MS, &held, &err) < 0)
            cq_log_event(CQ_LOG_WARN, "build_lock_not_renewed",
                         CQ_FIELDS(CQ_LS("runtime", r->name), CQ_LS("error", err.msg)),
                         "runtime %s: renew the build lock: %s", r->name, err.msg);
        else if (!held && !atomic_exchange(&r->lost, true))
            cq_log_event(CQ_LOG_WARN, "build_lock_lost", CQ_FIELDS(CQ_LS("runtime", r->name)),
                         "runtime %s: the build lock expired under this build", r->name);
    }
    return NULL;
}

/* Builds the runtime here from its spec, with the lock token holds, and stores the
 * result in the fleet: the digest, and the packed layer unless it is over the cap. */
static int build_here(struct cq_daemon *d, const char *name, const struct cq_fleet_runtime *rt,
                      const char *token, struct cq_error *err)
{
    const char *store = cq_wd_runtime_store(d);
    struct cq_runtime_spec spec;
    if (cq_runtime_spec_parse(rt->spec, strlen(rt->spec), &spec, err) < 0)
        return cq_error_prefix(err, "runtime '%s' in Redis", name);
    if (strcmp(spec.name, name) != 0) {
        cq_runtime_spec_free(&spec);
        return cq_error_set(err, CQ_EINVALID, "runtime '%s' in Redis has a spec named '%s'", name,
                            spec.name);
    }
    struct cq_runtime_build_opts o = {
        .store = store,
        .wheelhouse = rt->wheelhouse[0] ? rt->wheelhouse : NULL,
        .index_url = rt->index_url[0] ? rt->index_url : NULL,
    };
    struct renewer r = {.d = d, .name = name, .token = token};
    bool renewing = pthread_create(&r.thread, NULL, renew_main, &r) == 0;
    cq_log_event(CQ_LOG_INFO, "runtime_building", CQ_FIELDS(CQ_LS("runtime", name)),
                 "runtime %s: building it here (no layer in the fleet's cache)", name);
    int64_t start = (int64_t)cq_now_ms();
    char digest[CQ_RUNTIME_DIGEST_LEN + 1];
    int rc = cq_runtime_build(&spec, &o, digest, err);
    cq_runtime_spec_free(&spec);
    if (rc < 0)
        cq_error_prefix(err, "runtime '%s'", name);
    uint8_t *data = NULL;
    size_t len = 0;
    if (rc == 0) {
        char packed_digest[CQ_RUNTIME_DIGEST_LEN + 1];
        struct cq_error perr;
        if (cq_layer_pack(store, name, d->cfg.layer_cache_max, packed_digest, &data, &len, &perr) <
            0) {
            cq_log_event(CQ_LOG_WARN, "layer_not_cached",
                         CQ_FIELDS(CQ_LS("runtime", name), CQ_LS("error", perr.msg)),
                         "runtime %s: layer not cached in Redis: %s", name, perr.msg);
            data = NULL;
        }
        char spec_sha[65];
        cq_fleet_sha256_hex(rt->spec, strlen(rt->spec), spec_sha);
        rc = cq_store_layer_put(d->store, name, spec_sha, digest, data, len, d->cfg.worker_id,
                                token, err);
    }
    if (renewing) {
        atomic_store(&r.stop, true);
        pthread_join(r.thread, NULL);
    }
    free(data);
    if (rc < 0)
        return -1;
    int64_t took_ms = (int64_t)cq_now_ms() - start;
    cq_log_event(CQ_LOG_INFO, "runtime_built",
                 CQ_FIELDS(CQ_LS("runtime", name), CQ_LS("layer", digest), CQ_LI("bytes", len),
                           CQ_LI("duration_ms", took_ms)),
                 "runtime %s: built here in %.1f s, layer %s (%zu bytes in the fleet's cache)",
                 name, (double)took_ms / 1000.0, digest, len);
    return 0;
}

/* Whether this host runs the language of rt's spec (its python3.N, node): 0, or -1. */
static int language_ok(const char *name, const struct cq_fleet_runtime *rt, struct cq_error *err)
{
    struct cq_runtime_spec spec;
    if (cq_runtime_spec_parse(rt->spec, strlen(rt->spec), &spec, err) < 0)
        return cq_error_prefix(err, "runtime '%s' in Redis", name);
    int rc = cq_runtime_language_check(&spec, err);
    cq_runtime_spec_free(&spec);
    return rc < 0 ? cq_error_prefix(err, "runtime '%s'", name) : 1;
}

/* Makes the runtime's layer, as the fleet has it now, this worker's: *digest gets it. */
static int ensure_layer(struct cq_daemon *d, const char *name, char *digest, struct cq_error *err)
{
    const char *store = cq_wd_runtime_store(d);
    int64_t give_up = (int64_t)cq_now_ms() + BUILD_WAIT_MS;
    bool said_waiting = false;
    for (;;) {
        struct cq_fleet_runtime rt;
        bool found;
        if (cq_store_runtime_get(d->store, name, &rt, &found, err) < 0)
            return -1;
        if (!found)
            return cq_error_set(err, CQ_ENOTFOUND,
                                "runtime '%s' is not in the fleet (codeq runtime push --fleet)",
                                name);
        int rc = 1; /* 1: not settled yet */
        char local[CQ_RUNTIME_DIGEST_LEN + 1];
        if (rt.digest[0] != '\0' && cq_runtime_lookup(store, name, local, NULL) == 0 &&
            strcmp(local, rt.digest) == 0) {
            rc = 0;
        } else if (rt.digest[0] != '\0' && rt.layer_sha256[0] != '\0' &&
                   (rc = language_ok(name, &rt, err)) < 0) {
            /* A layer of another Python than this host's would not import. */
        } else if (rt.digest[0] != '\0' && rt.layer_sha256[0] != '\0') {
            uint8_t *data;
            size_t len;
            int64_t start = (int64_t)cq_now_ms();
            rc = cq_store_layer_get(d->store, &rt, &data, &len, err);
            if (rc == 0) {
                rc = cq_layer_install(store, name, rt.digest, data, len, err);
                free(data);
                int64_t took_ms = (int64_t)cq_now_ms() - start;
                if (rc == 0)
                    cq_log_event(CQ_LOG_INFO, "layer_fetched",
                                 CQ_FIELDS(CQ_LS("runtime", name), CQ_LS("layer", rt.digest),
                                           CQ_LI("bytes", len), CQ_LI("duration_ms", took_ms)),
                                 "runtime %s: layer %s fetched from the fleet's cache (%zu "
                                 "bytes, %lld ms)",
                                 name, rt.digest, len, (long long)took_ms);
            } else if (err->code == CQ_ENOTFOUND) {
                rc = 1; /* replaced meanwhile: read the record again */
            }
        }
        if (rc == 1 && (rt.digest[0] == '\0' || rt.layer_sha256[0] == '\0')) {
            /* Nothing to fetch: whoever takes the lock builds it; the others wait for
             * the record to change, or the lock to go. */
            char token[33];
            cq_random_id(token, 32);
            bool taken = false;
            if (cq_store_build_lock(d->store, name, token, BUILD_LOCK_MS, &taken, err) < 0) {
                rc = -1;
            } else if (taken) {
                /* Read again under the lock: a build may have ended just before. */
                struct cq_fleet_runtime now;
                rc = cq_store_runtime_get(d->store, name, &now, &found, err);
                if (rc == 0 && found && strcmp(now.digest, rt.digest) == 0 &&
                    strcmp(now.layer_sha256, rt.layer_sha256) == 0 && now.spec != NULL &&
                    strcmp(now.spec, rt.spec) == 0)
                    rc = build_here(d, name, &now, token, err);
                else
                    rc = rc < 0 ? -1 : 1;
                cq_fleet_runtime_free(&now);
                struct cq_error ignored;
                cq_store_build_unlock(d->store, name, token, &ignored);
                if (rc == 0 && cq_runtime_lookup(store, name, digest, err) < 0)
                    rc = -1;
                if (rc == 0) {
                    cq_fleet_runtime_free(&rt);
                    return 0;
                }
            } else if (!said_waiting) {
                cq_log_event(CQ_LOG_INFO, "runtime_build_waiting",
                             CQ_FIELDS(CQ_LS("runtime", name)),
                             "runtime %s: another worker is building it; waiting", name);
                said_waiting = true;
            }
        }
        if (rc == 0)
            snprintf(digest, CQ_RUNTIME_DIGEST_LEN + 1, "%s", rt.digest);
        cq_fleet_runtime_free(&rt);
        if (rc <= 0)
            return rc;
        if ((int64_t)cq_now_ms() > give_up)
            return cq_error_set(err, CQ_ETIMEOUT,
                                "runtime '%s': no layer after %d s of waiting for its build", name,
                                BUILD_WAIT_MS / 1000);
        sleep_ms(POLL_MS);
    }
}

/* ---- resolving --------------------------------------------------------------------------------
 */

int cq_wd_resolve_interpreter(void *ctx, struct cq_worker *w, const char *name,
                              struct cq_error *err)
{
    struct cq_daemon *d = ctx;
    struct cq_fleet_interpreter it;
    bool found;
    if (cq_store_interpreter_get(d->store, name, &it, &found, err) < 0)
        return -1;
    if (!found || (it.deleted && !adopting)) {
        bool deleted = found && it.deleted;
        cq_fleet_interpreter_free(&it);
        return cq_error_set(err, CQ_ENOTFOUND,
                            deleted ? "code interpreter '%s' was deleted: it takes no new sessions"
                                    : "no code interpreter '%s' in this fleet",
                            name);
    }
    struct cq_interpreter_def def;
    int rc = cq_interpreter_def_parse(it.def, strlen(it.def), &def, err);
    if (rc < 0) {
        cq_fleet_interpreter_free(&it);
        return cq_error_prefix(err, "code interpreter '%s' in Redis", name);
    }
    char digest[CQ_RUNTIME_DIGEST_LEN + 1] = "";
    if (def.runtime[0] != '\0') {
        pthread_mutex_lock(&d->fetch_lock);
        rc = ensure_layer(d, def.runtime, digest, err);
        pthread_mutex_unlock(&d->fetch_lock);
        if (rc < 0)
            cq_error_prefix(err, "code interpreter '%s'", name);
    }
    struct cq_interpreter_profile p;
    if (rc == 0 && (rc = cq_interpreter_profile(cq_wd_runtime_store(d), &def, &p, err)) == 0) {
        rc = cq_worker_define_interpreter(w, &p.worker, err);
        cq_interpreter_profile_free(&p);
    }
    if (rc == 0) {
        defined_put(d, name, it.def, digest);
        cq_log_event(CQ_LOG_INFO, "interpreter_ready",
                     CQ_FIELDS(CQ_LS("interpreter", name), CQ_LS("runtime", def.runtime),
                               CQ_LS("layer", digest)),
                     "code interpreter %s ready here (runtime %s%s%s)", name,
                     def.runtime[0] ? def.runtime : "none", digest[0] ? ", layer " : "", digest);
    }
    cq_interpreter_def_free(&def);
    cq_fleet_interpreter_free(&it);
    return rc;
}

int cq_wd_interp_check(struct cq_daemon *d, const char *name, const char *tenant,
                       struct cq_error *err)
{
    if (name == NULL || name[0] == '\0' || strcmp(name, CQ_INTERPRETER_DEFAULT) == 0)
        return 0;
    struct cq_fleet_interpreter it;
    bool found;
    if (cq_store_interpreter_get(d->store, name, &it, &found, err) < 0)
        return -1;
    /* The dispatcher checked the tenant too; this catches a definition replaced with
     * another list since. Hidden as the dispatcher hides it: as a name never defined. */
    if (found && !cq_fleet_interpreter_allows(&it, tenant)) {
        cq_fleet_interpreter_free(&it);
        return cq_error_set(err, CQ_ENOTFOUND, "no code interpreter '%s' in this fleet", name);
    }
    bool gone = !found || it.deleted;
    bool stale = false;
    if (!gone) {
        char now_digest[65] = "";
        if (it.runtime[0] != '\0') {
            struct cq_fleet_runtime rt;
            bool rt_found;
            if (cq_store_runtime_get(d->store, it.runtime, &rt, &rt_found, err) < 0) {
                cq_fleet_interpreter_free(&it);
                return -1;
            }
            snprintf(now_digest, sizeof(now_digest), "%s", rt.digest);
            cq_fleet_runtime_free(&rt);
        }
        pthread_mutex_lock(&d->defined_lock);
        struct cq_wd_defined *x = defined_find(d, name);
        /* A definition replaced, or its runtime pushed again (an empty digest: being
         * rebuilt now): defined again at this start, with what the fleet has now. */
        stale = x != NULL && (x->def == NULL || strcmp(x->def, it.def) != 0 ||
                              strcmp(x->digest, now_digest) != 0);
        pthread_mutex_unlock(&d->defined_lock);
    }
    cq_fleet_interpreter_free(&it);
    if (gone || stale) {
        struct cq_error ignored;
        if (cq_worker_has_interpreter(d->core, name))
            cq_worker_delete_interpreter(d->core, name, &ignored);
    }
    if (gone)
        return cq_error_set(err, CQ_ENOTFOUND,
                            found ? "code interpreter '%s' was deleted: it takes no new sessions"
                                  : "no code interpreter '%s' in this fleet",
                            name);
    return 0;
}
