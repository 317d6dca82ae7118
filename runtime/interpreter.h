/* runtime/interpreter.h - code interpreters: named configurations that sessions start
 * on (AgentCore's CreateCodeInterpreter / codeInterpreterIdentifier): a runtime, a
 * network mode, limits, a default time to live and a warm pool size
 * (docs/configuration.md, "Code interpreters").
 *
 * A definition is JSON, stored beside the runtimes (STORE/interpreters/<name>.json) on
 * one machine, or in the fleet's Redis (fleet/store.h). The worker core never reads
 * definitions: the front ends turn one into a struct cq_interpreter
 * (cq_interpreter_profile) and give it to the worker. */
#ifndef CQ_RUNTIME_INTERPRETER_H
#define CQ_RUNTIME_INTERPRETER_H

#include "common/error.h"
#include "runtime/runtime.h"
#include "worker/worker.h"

#include <stdbool.h>
#include <stdint.h>

#define CQ_INTERPRETER_NAME_MAX 63
/* Tenants one definition may name: a list for a few teams, not a directory. */
#define CQ_INTERPRETER_TENANTS_MAX 64

struct cq_interpreter_def {
    char name[CQ_INTERPRETER_NAME_MAX + 1]; /* as cq_runtime_name_check */
    char runtime[CQ_RUNTIME_NAME_MAX + 1];  /* "": none (Debian's packages only) */
    bool has_network;                       /* false: the worker's default */
    enum cq_network_mode network;
    char **allow; /* ALLOWLIST: n_allow DESTs (sandbox/netpolicy.h syntax) */
    size_t n_allow;
    uint64_t memory_bytes; /* 0: the worker's default, and the same below */
    double cpus;
    uint64_t disk_bytes; /* the workspace */
    uint32_t session_timeout_s;
    unsigned warm_pool;
    /* In a fleet with tenants, the tenants whose sessions may start on it (its runtime
     * may carry one tenant's packages and environment); none: every tenant. Names as
     * common/tenant.h, each once. The embedded front ends (one user) and
     * the worker core ignore it: the fleet's dispatcher and workers enforce it. */
    char **tenants;
    size_t n_tenants;
    int64_t created_ms; /* Unix time */
    /* What AgentCore's CreateCodeInterpreter was given (`codeq serve`), kept only to be
     * answered back by Get and List: none of it changes what a session gets. NULL:
     * not given. */
    struct {
        char *name;         /* its SandboxName; the definition's name is the id */
        char *description;  /* 1 to 4096 characters */
        char *role_arn;     /* executionRoleArn: codeq's sandboxes hold no cloud role */
        char *client_token; /* a repeated create with it answers this definition */
    } agentcore;
};

/* Parses and validates a definition (strict: unknown keys, a bad name, a bad mode or
 * DEST, a bad tenant name, limits out of range are refused, naming the field). Free with
 * cq_interpreter_def_free. */
int cq_interpreter_def_parse(const char *json, size_t len, struct cq_interpreter_def *def,
                             struct cq_error *err);
/* The definition as JSON (malloc'd), the shape cq_interpreter_def_parse reads. */
char *cq_interpreter_def_json(const struct cq_interpreter_def *def);
/* Its tenants comma-separated (malloc'd; "" for every tenant), the form the fleet's
 * record keeps (fleet/interpreters.h). NULL: out of memory. */
char *cq_interpreter_def_tenants(const struct cq_interpreter_def *def);
void cq_interpreter_def_free(struct cq_interpreter_def *def);

/* The local store of definitions: STORE/interpreters/<name>.json, STORE as
 * cq_runtime_store_path(), written atomically under STORE/lock. Saving refuses
 * CQ_INTERPRETER_DEFAULT and, unless replace, an existing name (EEXIST); it refuses a
 * runtime that the store does not have; it sets createdAt when def has none. Loading
 * and listing give CQ_INTERPRETER_DEFAULT too (listed first; its settings are the
 * worker's defaults); removing refuses it. */
int cq_interpreter_save(const char *store, const struct cq_interpreter_def *def, bool replace,
                        struct cq_error *err);
int cq_interpreter_load(const char *store, const char *name, struct cq_interpreter_def *def,
                        struct cq_error *err); /* CQ_ENOTFOUND when none */
int cq_interpreter_remove(const char *store, const char *name, struct cq_error *err);
int cq_interpreter_list(const char *store,
                        void (*fn)(void *ctx, const struct cq_interpreter_def *d), void *ctx,
                        struct cq_error *err);

/* What the worker needs to run the definition: its runtime's layer from the store
 * (the bind, PYTHONPATH / NODE_PATH and the runtime's environment, its preload list),
 * the limits, network, time to live and pool. The profile's pointers stay valid until
 * cq_interpreter_profile_free; worker.name and worker.allow point into def, which
 * must live as long. A runtime the store no longer has: CQ_ENOTFOUND. */
struct cq_interpreter_profile {
    struct cq_interpreter worker; /* what cq_worker_define_interpreter takes */
    struct cq_runtime_sandbox runtime;
    char digest[CQ_RUNTIME_DIGEST_LEN + 1];
    char **preload;
    enum cq_network_mode network;
};
int cq_interpreter_profile(const char *store, const struct cq_interpreter_def *def,
                           struct cq_interpreter_profile *out, struct cq_error *err);
void cq_interpreter_profile_free(struct cq_interpreter_profile *p);

#endif
