/* cli/backend.c - see backend.h. The fleet side turns each call into one codeq.v1
 * Request and its Response back into the worker core's structures (fleet/codec.c), so
 * results printed by `codeq exec` and `codeq mcp` are the same whichever side ran them. */
#define _GNU_SOURCE
#include "cli/backend.h"
#include "cli/cli.h"
#include "cli/mcp_trace.h"
#include "common/clock.h"
#include "common/random.h"
#include "fleet/audit.h"
#include "fleet/client.h"
#include "fleet/log.h"
#include "fleet/codec.h"
#include "runtime/interpreter.h"

#include <pthread.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Time the fleet may add to a call's own timeout (queueing, a worker taking over a
 * session and restoring its files) before this client stops waiting. */
#define FLEET_MARGIN_MS  60000
#define FLEET_SESSION_MS 60000
/* A start on a code interpreter may wait for a worker to fetch or build its runtime's
 * layer (docs/fleet.md, "Code interpreters in the fleet"): a build takes seconds to
 * minutes. */
#define FLEET_START_MS (10 * 60000)

/* An interpreter the embedded worker has defined, and the definition it came from. */
struct defined {
    char name[CQ_INTERPRETER_NAME_MAX + 1];
    char *json; /* the definition's JSON and its runtime's digest then */
};

struct cq_backend {
    struct cq_worker *worker;      /* embedded */
    struct cq_fleet_client *fleet; /* or the fleet */
    struct cq_audit *audit;        /* embedded: --audit-log, or NULL */
    /* Embedded: the interpreters defined from the local store, to notice a definition
     * replaced or deleted there since (the worker does not ask again for one it has). */
    pthread_mutex_t defined_lock;
    struct defined *defined;
    size_t n_defined;
    bool pools; /* keep the interpreters' warm pools (cq_backend_warm_interpreters) */
};

bool cq_backend_embedded(const struct cq_backend *b)
{
    return b->worker != NULL;
}

static struct defined *find_defined(struct cq_backend *b, const char *name)
{
    for (size_t i = 0; i < b->n_defined; i++)
        if (strcmp(b->defined[i].name, name) == 0)
            return &b->defined[i];
    return NULL;
}

/* Brings the worker's definition of name in line with the store's, under defined_lock:
 * (re)defines it when the store's differs from what was defined (or force), forgets it
 * when the store has none (CQ_ENOTFOUND then). */
static int sync_interpreter(struct cq_backend *b, const char *name, bool force,
                            struct cq_error *err)
{
    struct cq_error local;
    if (err == NULL)
        err = &local;
    struct cq_interpreter_def def;
    struct defined *d = find_defined(b, name);
    if (cq_interpreter_load(NULL, name, &def, err) < 0) {
        if (err->code == CQ_ENOTFOUND && d != NULL) {
            struct cq_error ignored;
            cq_worker_delete_interpreter(b->worker, name, &ignored);
            free(d->json);
            *d = b->defined[--b->n_defined];
        }
        return -1;
    }
    /* The definition and the digest its runtime's name points to now: a runtime built
     * again under the same name is a new layer (the old one may be gone with it). */
    char digest[CQ_RUNTIME_DIGEST_LEN + 1] = "";
    struct cq_error ignored;
    if (def.runtime[0] != '\0')
        cq_runtime_lookup(NULL, def.runtime, digest, &ignored); /* none: profile says so */
    char *text = cq_interpreter_def_json(&def);
    char *json = NULL;
    if (text != NULL && asprintf(&json, "%s\n%s", text, digest) < 0)
        json = NULL;
    free(text);
    int rc = 0;
    if (json == NULL) {
        rc = cq_error_set(err, ENOMEM, "out of memory");
    } else if (force || d == NULL || strcmp(d->json, json) != 0) {
        struct cq_interpreter_profile p;
        rc = cq_interpreter_profile(NULL, &def, &p, err);
        if (rc == 0) {
            /* codeq exec runs one session: a pool would only cost sandboxes. */
            if (!b->pools)
                p.worker.warm_pool = 0;
            rc = cq_worker_define_interpreter(b->worker, &p.worker, err);
            cq_interpreter_profile_free(&p);
        }
        if (rc == 0 && d == NULL) {
            struct defined *grown = realloc(b->defined, (b->n_defined + 1) * sizeof(*grown));
            if (grown != NULL) {
                b->defined = grown;
                d = &b->defined[b->n_defined++];
                snprintf(d->name, sizeof(d->name), "%s", name);
                d->json = NULL;
            }
        }
        if (rc == 0 && d != NULL) {
            free(d->json);
            d->json = json;
            json = NULL;
        } else if (rc < 0 && d != NULL) {
            /* What the worker has is no longer what the store says (its runtime may be
             * gone): forgotten, so neither its sessions nor its pool use it. */
            struct cq_error gone;
            cq_worker_delete_interpreter(b->worker, name, &gone);
            free(d->json);
            *d = b->defined[--b->n_defined];
        }
    }
    free(json);
    cq_interpreter_def_free(&def);
    return rc;
}

/* The worker's resolve_interpreter: an interpreter it has not defined comes from the
 * local store ($CODEQ_RUNTIME_STORE), its runtime's layer with it. */
static int resolve_interpreter(void *ctx, struct cq_worker *w, const char *name,
                               struct cq_error *err)
{
    (void)w;
    struct cq_backend *b = ctx;
    pthread_mutex_lock(&b->defined_lock);
    int rc = sync_interpreter(b, name, true, err);
    pthread_mutex_unlock(&b->defined_lock);
    return rc;
}

static int open_embedded(const struct cq_worker_config *cfg, struct cq_backend **out,
                         struct cq_error *err)
{
    struct cq_backend *b = calloc(1, sizeof(*b));
    if (b == NULL)
        return cq_error_set(err, ENOMEM, "out of memory");
    pthread_mutex_init(&b->defined_lock, NULL);
    struct cq_worker_config with_store = *cfg;
    if (with_store.resolve_interpreter == NULL) {
        with_store.resolve_interpreter = resolve_interpreter;
        with_store.resolve_interpreter_ctx = b;
    }
    if (cq_worker_create(&with_store, &b->worker, err) < 0) {
        pthread_mutex_destroy(&b->defined_lock);
        free(b);
        return -1;
    }
    cq_rootless_notes(false);
    *out = b;
    return 0;
}

struct warm_ctx {
    struct cq_backend *b;
};

static void warm_one(void *ctx, const struct cq_interpreter_def *d)
{
    struct warm_ctx *wc = ctx;
    if (d->warm_pool == 0 || strcmp(d->name, CQ_INTERPRETER_DEFAULT) == 0)
        return;
    struct cq_error err;
    if (sync_interpreter(wc->b, d->name, true, &err) < 0)
        fprintf(stderr, "codeq: interpreter '%s' (its warm pool) skipped: %s\n", d->name, err.msg);
}

void cq_backend_warm_interpreters(struct cq_backend *b)
{
    if (b->worker == NULL)
        return;
    pthread_mutex_lock(&b->defined_lock);
    b->pools = true;
    struct warm_ctx wc = {b};
    struct cq_error err;
    if (cq_interpreter_list(NULL, warm_one, &wc, &err) < 0)
        fprintf(stderr, "codeq: the interpreters of the store: %s\n", err.msg);
    pthread_mutex_unlock(&b->defined_lock);
}

static int open_fleet(const char *brokers, const char *request_topic, struct cq_backend **out,
                      struct cq_error *err)
{
    /* librdkafka's own complaints (a broker down, a retry) would bury the one line
     * this command prints when it gives up; CODEQ_LOG_LEVEL shows them. */
    const char *level = getenv("CODEQ_LOG_LEVEL");
    cq_log_setup("codeq", level != NULL ? level : "off");
    struct cq_backend *b = calloc(1, sizeof(*b));
    if (b == NULL)
        return cq_error_set(err, ENOMEM, "out of memory");
    if (cq_fleet_client_open(brokers, request_topic, &b->fleet, err) < 0) {
        free(b);
        return -1;
    }
    *out = b;
    return 0;
}

int cq_backend_open(const struct cq_worker_config *cfg, const char *brokers,
                    const char *request_topic, struct cq_backend **out, struct cq_error *err)
{
    if (brokers == NULL)
        brokers = getenv("CODEQ_BROKERS");
    return brokers != NULL && brokers[0] != '\0' ? open_fleet(brokers, request_topic, out, err)
                                                 : open_embedded(cfg, out, err);
}

void cq_backend_close(struct cq_backend *b)
{
    if (b == NULL)
        return;
    cq_worker_destroy(b->worker);
    cq_fleet_client_close(b->fleet);
    cq_audit_close(b->audit);
    for (size_t i = 0; i < b->n_defined; i++)
        free(b->defined[i].json);
    free(b->defined);
    if (b->fleet == NULL)
        pthread_mutex_destroy(&b->defined_lock);
    free(b);
}

/* ---- the fleet ---------------------------------------------------------------------- */

/* The struct cq_error code of a service failure, the inverse of cq_result_error_of. */
static int error_code_of(Codeq__V1__ErrorCode e)
{
    switch (e) {
    case CODEQ__V1__ERROR_CODE__ERROR_CODE_NOT_FOUND:
        return CQ_ENOTFOUND;
    case CODEQ__V1__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT:
        return CQ_EINVALID;
    case CODEQ__V1__ERROR_CODE__ERROR_CODE_LIMIT_EXCEEDED:
        return CQ_ELIMIT;
    case CODEQ__V1__ERROR_CODE__ERROR_CODE_TIMED_OUT:
        return CQ_ETIMEOUT;
    case CODEQ__V1__ERROR_CODE__ERROR_CODE_ACCESS_DENIED:
        return CQ_EDENIED;
    default:
        return CQ_EINTERNAL;
    }
}

/* Sends req and expects a Response with a session (want_list false) or a list. */
static int fleet_session_call(struct cq_backend *b, Codeq__V1__Request *req, bool want_list,
                              Codeq__V1__Response **out, struct cq_error *err)
{
    int ms = req->operation_case == CODEQ__V1__REQUEST__OPERATION_START_SESSION ? FLEET_START_MS
                                                                                : FLEET_SESSION_MS;
    if (cq_fleet_client_call(b->fleet, req, NULL, NULL, ms, out, err) < 0)
        return -1;
    Codeq__V1__Response *resp = *out;
    Codeq__V1__Response__PayloadCase want =
        want_list ? CODEQ__V1__RESPONSE__PAYLOAD_SESSIONS : CODEQ__V1__RESPONSE__PAYLOAD_SESSION;
    if (resp->payload_case == want)
        return 0;
    if (resp->payload_case == CODEQ__V1__RESPONSE__PAYLOAD_RESULT)
        cq_error_set(err, error_code_of(resp->result->error_code), "%s",
                     resp->result->error_message[0] != '\0' ? resp->result->error_message
                                                            : "the fleet refused the request");
    else
        cq_error_set(err, CQ_EPROTO, "the fleet answered with an unexpected reply");
    codeq__v1__response__free_unpacked(resp, NULL);
    *out = NULL;
    return -1;
}

static int fleet_session_op(struct cq_backend *b, const char *session_id, bool stop,
                            struct cq_session_info *info, struct cq_error *err)
{
    Codeq__V1__Request req = CODEQ__V1__REQUEST__INIT;
    Codeq__V1__GetSession get = CODEQ__V1__GET_SESSION__INIT;
    Codeq__V1__StopSession stop_op = CODEQ__V1__STOP_SESSION__INIT;
    req.session_id = (char *)session_id;
    if (stop) {
        req.operation_case = CODEQ__V1__REQUEST__OPERATION_STOP_SESSION;
        req.stop_session = &stop_op;
    } else {
        req.operation_case = CODEQ__V1__REQUEST__OPERATION_GET_SESSION;
        req.get_session = &get;
    }
    Codeq__V1__Response *resp;
    if (fleet_session_call(b, &req, false, &resp, err) < 0)
        return -1;
    cq_codec_session_from(resp->session, info);
    codeq__v1__response__free_unpacked(resp, NULL);
    return 0;
}

static int fleet_start_session(struct cq_backend *b, const struct cq_session_params *params,
                               struct cq_session_info *info, struct cq_error *err)
{
    Codeq__V1__StartSession start = CODEQ__V1__START_SESSION__INIT;
    Codeq__V1__Limits limits = CODEQ__V1__LIMITS__INIT;
    start.name = (char *)(params->name != NULL ? params->name : "");
    start.session_timeout_seconds = params->timeout_s;
    limits.memory_bytes = params->limits.memory_bytes;
    limits.pids = params->limits.pids;
    limits.cpu_millis = (uint32_t)(params->limits.cpus * 1000.0 + 0.5);
    limits.disk_bytes = params->limits.workspace_bytes;
    start.limits = &limits;
    /* No mode: UNSPECIFIED, which the worker resolves to its policy's default. */
    if (params->network != NULL)
        start.network = (Codeq__V1__NetworkMode)(*params->network + 1);
    start.network_allow = (char **)params->allow;
    start.n_network_allow = params->n_allow;
    start.code_interpreter_identifier =
        (char *)(params->interpreter != NULL ? params->interpreter : "");
    start.client_token = (char *)(params->client_token != NULL ? params->client_token : "");
    size_t n_env = 0;
    while (params->env != NULL && params->env[n_env] != NULL)
        n_env++;
    Codeq__V1__StartSession__EnvEntry *entries = calloc(n_env + 1, sizeof(*entries));
    Codeq__V1__StartSession__EnvEntry **ptrs = calloc(n_env + 1, sizeof(*ptrs));
    char **copies = calloc(n_env + 1, sizeof(*copies));
    int rc = -1;
    if (entries == NULL || ptrs == NULL || copies == NULL) {
        cq_error_set(err, ENOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n_env; i++) {
        /* NAME=VALUE split in a copy: the map wants the two apart. */
        copies[i] = strdup(params->env[i]);
        char *eq = copies[i] != NULL ? strchr(copies[i], '=') : NULL;
        if (eq == NULL) {
            cq_error_set(err, CQ_EINVALID, "environment entry '%s' has no '='", params->env[i]);
            goto out;
        }
        *eq = '\0';
        codeq__v1__start_session__env_entry__init(&entries[i]);
        entries[i].key = copies[i];
        entries[i].value = eq + 1;
        ptrs[i] = &entries[i];
    }
    start.env = ptrs;
    start.n_env = n_env;
    Codeq__V1__Request req = CODEQ__V1__REQUEST__INIT;
    req.session_id = (char *)(params->id != NULL ? params->id : "");
    req.operation_case = CODEQ__V1__REQUEST__OPERATION_START_SESSION;
    req.start_session = &start;
    Codeq__V1__Response *resp;
    rc = fleet_session_call(b, &req, false, &resp, err);
    if (rc == 0) {
        cq_codec_session_from(resp->session, info);
        codeq__v1__response__free_unpacked(resp, NULL);
    }
out:
    for (size_t i = 0; copies != NULL && i < n_env; i++)
        free(copies[i]);
    free(copies);
    free(ptrs);
    free(entries);
    return rc;
}

static int fleet_list_sessions(struct cq_backend *b, int status_filter, size_t max,
                               const char *next_token, struct cq_session_info *out, size_t *n,
                               char next_token_out[CQ_SESSION_ID_MAX + 1], struct cq_error *err)
{
    Codeq__V1__ListSessions list = CODEQ__V1__LIST_SESSIONS__INIT;
    list.status = (Codeq__V1__SessionStatus)status_filter;
    list.max_results = (uint32_t)max;
    list.next_token = (char *)(next_token != NULL ? next_token : "");
    Codeq__V1__Request req = CODEQ__V1__REQUEST__INIT;
    req.operation_case = CODEQ__V1__REQUEST__OPERATION_LIST_SESSIONS;
    req.list_sessions = &list;
    Codeq__V1__Response *resp;
    *n = 0;
    if (next_token_out != NULL)
        next_token_out[0] = '\0';
    if (fleet_session_call(b, &req, true, &resp, err) < 0)
        return -1;
    for (size_t i = 0; i < resp->sessions->n_sessions && i < max; i++)
        cq_codec_session_from(resp->sessions->sessions[i], &out[(*n)++]);
    if (next_token_out != NULL)
        snprintf(next_token_out, CQ_SESSION_ID_MAX + 1, "%s", resp->sessions->next_token);
    codeq__v1__response__free_unpacked(resp, NULL);
    return 0;
}

struct chunk_relay {
    cq_stream_fn on_output;
    void *ctx;
};

static void relay_chunk(void *ctx, const Codeq__V1__OutputChunk *chunk)
{
    struct chunk_relay *relay = ctx;
    relay->on_output(relay->ctx, chunk->stream == CODEQ__V1__STREAM__STREAM_STDERR ? 2 : 1,
                     (const char *)chunk->data.data, chunk->data.len);
}

/* A call as a codeq.v1 Request: what the fleet runs, and what an audit record of the
 * embedded mode describes, so that both read the same. The request points into the
 * struct (fill it in place, never copy it); owned is to be freed after use. */
struct invoke_request {
    Codeq__V1__Request req;
    Codeq__V1__Invoke invoke;
    Codeq__V1__Arguments arguments;
    void *owned;
};

static int invoke_request(struct invoke_request *ir, const char *session_id, const char *tool,
                          const struct cq_invoke_args *args, struct cq_error *err)
{
    if (cq_codec_fill_arguments(args, &ir->arguments, &ir->owned, err) < 0)
        return -1;
    codeq__v1__invoke__init(&ir->invoke);
    ir->invoke.tool = (char *)tool;
    ir->invoke.arguments = &ir->arguments;
    codeq__v1__request__init(&ir->req);
    ir->req.session_id = (char *)session_id;
    ir->req.operation_case = CODEQ__V1__REQUEST__OPERATION_INVOKE;
    ir->req.invoke = &ir->invoke;
    return 0;
}

/* A fleet call's cancellation: a cancel_call naming the call's request id, sent from
 * the thread that fires it (MCP's notifications/cancelled). The call goes on waiting
 * for its own reply, which says how it ended. */
struct fleet_cancel {
    struct cq_fleet_client *fleet;
    const char *session_id;
    char request_id[25];
};

static void send_cancel(void *arg)
{
    struct fleet_cancel *fc = arg;
    Codeq__V1__CancelCall cc = CODEQ__V1__CANCEL_CALL__INIT;
    cc.request_id = fc->request_id;
    Codeq__V1__Request req = CODEQ__V1__REQUEST__INIT;
    req.session_id = (char *)fc->session_id;
    req.operation_case = CODEQ__V1__REQUEST__OPERATION_CANCEL_CALL;
    req.cancel_call = &cc;
    struct cq_error err;
    if (cq_fleet_client_send(fc->fleet, &req, &err) < 0)
        fprintf(stderr, "codeq: the cancellation of call %s was not sent: %s\n", fc->request_id,
                err.msg);
}

static void fleet_invoke(struct cq_backend *b, const char *session_id, const char *tool,
                         const struct cq_invoke_args *args, cq_stream_fn on_output, void *ctx,
                         struct cq_cancel *cancel, struct cq_result *result)
{
    cq_result_init(result);
    struct invoke_request ir;
    struct cq_error err;
    if (invoke_request(&ir, session_id, tool, args, &err) < 0) {
        cq_result_fail(result, CQ_RESULT_INTERNAL, "%s", err.msg);
        return;
    }
    /* The id is made here, so that a cancellation can name the call. */
    struct fleet_cancel fc = {.fleet = b->fleet, .session_id = session_id};
    cq_random_id(fc.request_id, 24);
    ir.req.request_id = fc.request_id;
    if (cancel != NULL)
        cq_cancel_hook(cancel, send_cancel, &fc);
    /* An MCP call's trace goes on in the fleet (Request.traceparent). */
    const char *traceparent = cq_mcp_trace_current();
    if (traceparent != NULL)
        ir.req.traceparent = (char *)traceparent;
    double call_s = args->timeout_s > 0 ? args->timeout_s : CQ_WORKER_DEFAULT_CALL_TIMEOUT;
    int timeout_ms = (int)(call_s * 1000.0) + FLEET_MARGIN_MS;
    struct chunk_relay relay = {on_output, ctx};
    Codeq__V1__Response *resp = NULL;
    int rc = cq_fleet_client_call(b->fleet, &ir.req, on_output != NULL ? relay_chunk : NULL, &relay,
                                  timeout_ms, &resp, &err);
    if (cancel != NULL)
        cq_cancel_hook(cancel, NULL, NULL); /* fc is gone after the return */
    free(ir.owned);
    if (rc < 0) {
        cq_result_fail(result, cq_result_error_of(err.code), "%s", err.msg);
        return;
    }
    if (resp->payload_case != CODEQ__V1__RESPONSE__PAYLOAD_RESULT)
        cq_result_fail(result, CQ_RESULT_INTERNAL, "the fleet answered with an unexpected reply");
    else if (cq_codec_result_from(resp->result, result, &err) < 0) {
        cq_result_free(result);
        cq_result_fail(result, CQ_RESULT_INTERNAL, "read the fleet's reply: %s", err.msg);
    }
    codeq__v1__response__free_unpacked(resp, NULL);
}

/* ---- one entry point per call --------------------------------------------------------- */

int cq_backend_start_session(struct cq_backend *b, const struct cq_session_params *params,
                             struct cq_session_info *info, struct cq_error *err)
{
    if (b->worker == NULL)
        return fleet_start_session(b, params, info, err);
    /* The store is the truth for the embedded worker: a definition replaced since it
     * was defined is defined again, a deleted one refuses the session (NOT_FOUND). */
    const char *name = params->interpreter;
    if (name != NULL && name[0] != '\0' && strcmp(name, CQ_INTERPRETER_DEFAULT) != 0) {
        pthread_mutex_lock(&b->defined_lock);
        int rc = sync_interpreter(b, name, false, err);
        pthread_mutex_unlock(&b->defined_lock);
        if (rc < 0)
            return -1;
    }
    return cq_worker_start_session(b->worker, params, info, err);
}

int cq_backend_get_session(struct cq_backend *b, const char *session_id,
                           struct cq_session_info *info, struct cq_error *err)
{
    return b->worker != NULL ? cq_worker_get_session(b->worker, session_id, info, err)
                             : fleet_session_op(b, session_id, false, info, err);
}

int cq_backend_list_sessions(struct cq_backend *b, int status_filter, size_t max,
                             const char *next_token, struct cq_session_info *out, size_t *n,
                             char next_token_out[CQ_SESSION_ID_MAX + 1], struct cq_error *err)
{
    return b->worker != NULL ? cq_worker_list_sessions(b->worker, status_filter, max, next_token,
                                                       out, n, next_token_out, err)
                             : fleet_list_sessions(b, status_filter, max, next_token, out, n,
                                                   next_token_out, err);
}

int cq_backend_stop_session(struct cq_backend *b, const char *session_id,
                            struct cq_session_info *info, struct cq_error *err)
{
    return b->worker != NULL ? cq_worker_stop_session(b->worker, session_id, info, err)
                             : fleet_session_op(b, session_id, true, info, err);
}

/* The embedded mode's record of a call, as a worker of the fleet writes it. */
static void audit_call(struct cq_backend *b, const char *session_id, const char *tool,
                       const struct cq_invoke_args *args, const struct cq_result *r)
{
    struct invoke_request ir;
    struct cq_error err;
    if (invoke_request(&ir, session_id, tool, args, &err) < 0)
        return; /* out of memory: the chain shows no gap, but nothing ran unrecorded */
    struct cq_audit_record rec = {
        .event = "call",
        .outcome = r->is_error ? "error" : "ok",
        .error_code = r->error_code != CQ_RESULT_OK ? cq_result_error_name(r->error_code) : NULL,
        .reason = r->error_message,
        .req = &ir.req,
        .has_result = true,
        .exit_code = r->exit_code,
        .duration_ms = r->execution_time_ms,
        .cpu_ms = r->cpu_ms,
        .peak_memory_bytes = r->peak_memory_bytes,
        .stdout_text = r->stdout_text,
        .stderr_text = r->stderr_text,
    };
    cq_audit_emit(b->audit, &rec);
    free(ir.owned);
}

void cq_backend_invoke(struct cq_backend *b, const char *session_id, const char *tool,
                       const struct cq_invoke_args *args, cq_stream_fn on_output, void *ctx,
                       struct cq_result *result)
{
    cq_backend_invoke_cancellable(b, session_id, tool, args, on_output, ctx, NULL, result);
}

void cq_backend_invoke_cancellable(struct cq_backend *b, const char *session_id, const char *tool,
                                   const struct cq_invoke_args *args, cq_stream_fn on_output,
                                   void *ctx, struct cq_cancel *cancel, struct cq_result *result)
{
    if (b->worker != NULL) {
        cq_worker_invoke_cancellable(b->worker, session_id, tool, args, on_output, ctx, cancel,
                                     result);
        cq_mcp_trace_kernel_run(result, tool);
        if (b->audit != NULL)
            audit_call(b, session_id, tool, args, result);
    } else {
        fleet_invoke(b, session_id, tool, args, on_output, ctx, cancel, result);
    }
}

int cq_backend_audit_log(struct cq_backend *b, const char *path, struct cq_error *err)
{
    if (b->worker == NULL)
        return cq_error_set(err, CQ_EINVALID,
                            "--audit-log is the embedded mode's: the fleet's daemons write its "
                            "audit log (audit_topic)");
    char producer[96];
    snprintf(producer, sizeof(producer), "codeq-%d-%lld", (int)getpid(), (long long)cq_unix_ms());
    /* The key and content settings are the fleet's (CODEQ_AUDIT_KEY_FILE,
     * CODEQ_AUDIT_CONTENT): one way to configure an audit log. */
    const char *key = getenv("CODEQ_AUDIT_KEY_FILE");
    const char *content = getenv("CODEQ_AUDIT_CONTENT");
    return cq_audit_open(producer, key, content != NULL && strcmp(content, "on") == 0,
                         cq_audit_file_sink, (void *)path, &b->audit, err);
}
