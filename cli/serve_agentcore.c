/* cli/serve_agentcore.c - the AgentCore data-plane routes of `codeq serve`, with the
 * shapes of botocore's service model (bedrock-agentcore 2024-02-28), so that boto3's
 * `bedrock-agentcore` client and the SDKs on it talk to codeq unmodified.
 *
 *   PUT  /code-interpreters/{id}/sessions/start   StartCodeInterpreterSession
 *   POST /code-interpreters/{id}/tools/invoke     InvokeCodeInterpreter (event stream)
 *   PUT  /code-interpreters/{id}/sessions/stop    StopCodeInterpreterSession (?sessionId=)
 *   GET  /code-interpreters/{id}/sessions/get     GetCodeInterpreterSession (?sessionId=)
 *   POST /code-interpreters/{id}/sessions/list    ListCodeInterpreterSessions
 *
 * Routing works on the path as sent, each segment decoded once: a segment that is empty,
 * "." or "..", or decodes to a '/' or a control character is refused, so that no
 * spelling of a path reaches another route or another interpreter than it names.
 *
 * Sessions belong to the tenant that started them. The server keeps who owns which
 * session (the backend's sessions are everyone's); another tenant's session id is
 * answered as one that does not exist, so ids cannot be probed across tenants. /mcp
 * (serve_mcp.c) records the sessions it starts here too: one namespace per tenant.
 * Embedded, the record is a table in memory (the sessions end with the process). In
 * front of a fleet it is in the fleet's Redis (fleet/store.h, "codeq serve's
 * sessions"), so that every replica of the gateway behind a load balancer answers for
 * every session alike, and a gateway restarted finds its sessions again.
 */
#define _GNU_SOURCE
#include "cli/mcp_tools.h"
#include "cli/mcp_trace.h"
#include "cli/result_json.h"
#include "cli/serve.h"
#include "common/cleanup.h"
#include "common/hex.h"
#include "fleet/auth.h"
#include "fleet/store.h"
#include "http/eventstream.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define INTERPRETER_ID_MAX 100
#define CLIENT_TOKEN_MAX   256
/* AgentCore's name for its built-in interpreter: codeq's default. */
#define AWS_DEFAULT_INTERPRETER "aws.codeinterpreter.v1"
#define LIST_PAGE               100

struct owned {
    char session_id[CQ_SESSION_ID_MAX + 1];
    char tenant[CQ_TENANT_MAX + 1];
    char interpreter[INTERPRETER_ID_MAX + 1]; /* as the client named it */
    char client_token[CLIENT_TOKEN_MAX + 1];  /* "" when none */
    int64_t created_at_ms;
};

/* A tenant's token bucket (--max-rate). */
struct bucket {
    char tenant[CQ_TENANT_MAX + 1];
    double tokens;
    int64_t refilled_ms;
};
#define MAX_BUCKETS 1024

struct cq_serve {
    struct cq_backend *backend;
    struct cq_store *store; /* in front of a fleet: who owns which session; else NULL */
    struct cq_serve_auth *auth;
    struct cq_serve_mcp *mcp;
    unsigned max_rate;
    struct bucket *buckets; /* under lock */
    size_t n_buckets;
    pthread_mutex_t lock; /* owned */
    struct owned *owned;
    size_t n_owned, cap_owned;
    /* Starts with a clientToken are serialised, so that two retries of one start
     * cannot both start a session. */
    pthread_mutex_t start_lock;
    struct cq_serve_control control;
    struct cq_serve_streams streams;
};

/* ---- errors ---------------------------------------------------------------------- */

struct error_kind {
    const char *type;
    int status;
};
static const struct error_kind VALIDATION = {"ValidationException", 400};
static const struct error_kind NOT_FOUND = {"ResourceNotFoundException", 404};
static const struct error_kind QUOTA = {"ServiceQuotaExceededException", 402};
static const struct error_kind DENIED = {"AccessDeniedException", 403};
static const struct error_kind CONFLICT = {"ConflictException", 409};
static const struct error_kind THROTTLED = {"ThrottlingException", 429};
static const struct error_kind INTERNAL = {"InternalServerException", 500};

static void set_json(struct cq_http_response *resp, int status, json_t *body)
{
    free(resp->body);
    resp->body = NULL;
    resp->body_len = 0;
    char *text = body != NULL ? json_dumps(body, JSON_COMPACT | CQ_JSON_REALS) : NULL;
    json_decref(body);
    if (text == NULL) {
        resp->status = 500;
        return;
    }
    resp->status = status;
    resp->content_type = "application/json";
    resp->body = text;
    resp->body_len = strlen(text);
}

/* reason: ValidationException's (CannotParse, FieldValidationFailed, ...), else NULL. */
static void fail(struct cq_http_response *resp, struct error_kind kind, const char *reason,
                 const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void fail(struct cq_http_response *resp, struct error_kind kind, const char *reason,
                 const char *fmt, ...)
{
    char message[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);
    json_t *body = json_object();
    /* The message may quote what the client sent: json_string refuses invalid UTF-8. */
    json_t *m = json_string(message);
    json_object_set_new(body, "message", m != NULL ? m : json_string("invalid request"));
    if (reason != NULL)
        json_object_set_new(body, "reason", json_string(reason));
    set_json(resp, kind.status, body);
    resp->n_headers = 0;
    cq_http_add_header(resp, "x-amzn-ErrorType", kind.type);
}

static struct error_kind kind_of(int code)
{
    switch (code) {
    case CQ_EINVALID:
        return VALIDATION;
    case CQ_ENOTFOUND:
        return NOT_FOUND;
    case CQ_ELIMIT:
        return QUOTA;
    case CQ_EDENIED:
        return DENIED;
    case EEXIST:
        return CONFLICT;
    case EAGAIN:
    case EBUSY:
        return THROTTLED;
    default:
        return INTERNAL;
    }
}

static void fail_err(struct cq_http_response *resp, const struct cq_error *err)
{
    struct error_kind k = kind_of(err->code);
    fail(resp, k, k.status == 400 ? "FieldValidationFailed" : NULL, "%s", err->msg);
}

void cq_serve_fail(struct cq_http_response *resp, const char *type, const char *reason,
                   const char *fmt, ...)
{
    static const struct error_kind *const kinds[] = {&VALIDATION, &NOT_FOUND, &QUOTA,   &DENIED,
                                                     &CONFLICT,   &THROTTLED, &INTERNAL};
    struct error_kind kind = INTERNAL;
    for (size_t i = 0; i < CQ_ARRAY_LEN(kinds); i++)
        if (strcmp(kinds[i]->type, type) == 0)
            kind = *kinds[i];
    char message[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);
    fail(resp, kind, reason, "%s", message);
}

void cq_serve_fail_err(struct cq_http_response *resp, const struct cq_error *err)
{
    fail_err(resp, err);
}

void cq_serve_set_json(struct cq_http_response *resp, int status, json_t *body)
{
    set_json(resp, status, body);
}

/* ---- owned sessions ---------------------------------------------------------------- */

static struct owned *find_owned(struct cq_serve *s, const char *session_id)
{
    for (size_t i = 0; i < s->n_owned; i++)
        if (strcmp(s->owned[i].session_id, session_id) == 0)
            return &s->owned[i];
    return NULL;
}

/* A session id as the backends make them: anything else is no session (and never
 * becomes part of a Redis key). */
static bool session_id_ok(const char *id)
{
    size_t n = strlen(id);
    return n > 0 && n <= CQ_SESSION_ID_MAX &&
           strspn(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") == n;
}

/* 1 when tenant owns session_id on interpreter (as the path names it; NULL: any), 0
 * when not; -1 with err when the fleet's records could not be read. */
static int owns(struct cq_serve *s, const char *tenant, const char *interpreter,
                const char *session_id, struct cq_error *err)
{
    if (!session_id_ok(session_id))
        return 0;
    if (s->store != NULL) {
        struct cq_gateway_session g;
        bool found;
        if (cq_store_gateway_get(s->store, session_id, &g, &found, err) < 0)
            return -1;
        return found && strcmp(g.tenant, tenant) == 0 &&
               (interpreter == NULL || strcmp(g.interpreter, interpreter) == 0);
    }
    pthread_mutex_lock(&s->lock);
    struct owned *o = find_owned(s, session_id);
    bool yes = o != NULL && strcmp(o->tenant, tenant) == 0 &&
               (interpreter == NULL || strcmp(o->interpreter, interpreter) == 0);
    pthread_mutex_unlock(&s->lock);
    return yes;
}

bool cq_serve_owns(struct cq_serve *s, const char *tenant, const char *interpreter,
                   const char *session_id)
{
    struct cq_error err;
    int rc = owns(s, tenant, interpreter, session_id, &err);
    if (rc < 0)
        fprintf(stderr, "codeq serve: who owns session %s: %s\n", session_id, err.msg);
    return rc > 0;
}

/* Records in the fleet's Redis that tenant started info's session on interpreter;
 * *mismatch when it was recorded before with another tenant or interpreter (a client
 * token used again elsewhere). */
static int record_fleet(struct cq_serve *s, const char *tenant, const char *interpreter,
                        const struct cq_session_info *info, bool *mismatch, struct cq_error *err)
{
    struct cq_gateway_session was;
    bool existed = false;
    int64_t expires = info->created_at_ms + (int64_t)info->session_timeout_s * 1000;
    if (cq_store_gateway_put(s->store, info->session_id, tenant, interpreter, info->created_at_ms,
                             expires, &was, &existed, err) < 0)
        return -1;
    *mismatch =
        existed && (strcmp(was.tenant, tenant) != 0 || strcmp(was.interpreter, interpreter) != 0);
    return 0;
}

static int add_owned(struct cq_serve *s, const struct owned *o)
{
    pthread_mutex_lock(&s->lock);
    if (s->n_owned == s->cap_owned) {
        size_t cap = s->cap_owned ? s->cap_owned * 2 : 64;
        struct owned *n = realloc(s->owned, cap * sizeof(*n));
        if (n == NULL) {
            pthread_mutex_unlock(&s->lock);
            return -1;
        }
        s->owned = n;
        s->cap_owned = cap;
    }
    s->owned[s->n_owned++] = *o;
    pthread_mutex_unlock(&s->lock);
    return 0;
}

int cq_serve_adopt(struct cq_serve *s, const char *tenant, const char *interpreter,
                   const struct cq_session_info *info)
{
    if (s->store != NULL) {
        bool mismatch;
        struct cq_error err;
        if (record_fleet(s, tenant, interpreter, info, &mismatch, &err) < 0) {
            fprintf(stderr, "codeq serve: record session %s: %s\n", info->session_id, err.msg);
            return -1;
        }
        return mismatch ? -1 : 0;
    }
    struct owned o = {.created_at_ms = info->created_at_ms};
    snprintf(o.session_id, sizeof(o.session_id), "%s", info->session_id);
    snprintf(o.tenant, sizeof(o.tenant), "%s", tenant);
    snprintf(o.interpreter, sizeof(o.interpreter), "%s", interpreter);
    return add_owned(s, &o);
}

/* The backend forgot the session (ended long ago): so does the record. */
static void forget_owned(struct cq_serve *s, const char *session_id)
{
    if (s->store != NULL) {
        struct cq_error err;
        if (cq_store_gateway_forget(s->store, session_id, &err) < 0)
            fprintf(stderr, "codeq serve: forget session %s: %s\n", session_id, err.msg);
        return;
    }
    pthread_mutex_lock(&s->lock);
    struct owned *o = find_owned(s, session_id);
    if (o != NULL)
        *o = s->owned[--s->n_owned];
    pthread_mutex_unlock(&s->lock);
}

/* Whether tenant may make one more request now (--max-rate). Tenants are the keys
 * file's, so the table stays small; past MAX_BUCKETS the least recently used slot is
 * reused. */
bool cq_serve_admit(struct cq_serve *s, const char *tenant)
{
    if (s->max_rate == 0)
        return true;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    pthread_mutex_lock(&s->lock);
    struct bucket *b = NULL, *oldest = NULL;
    for (size_t i = 0; i < s->n_buckets && b == NULL; i++) {
        if (strcmp(s->buckets[i].tenant, tenant) == 0)
            b = &s->buckets[i];
        else if (oldest == NULL || s->buckets[i].refilled_ms < oldest->refilled_ms)
            oldest = &s->buckets[i];
    }
    if (b == NULL) {
        b = s->n_buckets < MAX_BUCKETS ? &s->buckets[s->n_buckets++] : oldest;
        snprintf(b->tenant, sizeof(b->tenant), "%s", tenant);
        b->tokens = s->max_rate;
        b->refilled_ms = now;
    }
    b->tokens += (double)(now - b->refilled_ms) * s->max_rate / 1000.0;
    if (b->tokens > s->max_rate)
        b->tokens = s->max_rate;
    b->refilled_ms = now;
    bool ok = b->tokens >= 1.0;
    if (ok)
        b->tokens -= 1.0;
    pthread_mutex_unlock(&s->lock);
    return ok;
}

/* ---- requests ---------------------------------------------------------------------- */

/* A path segment decoded: %XX once; refused when it decodes to '/', '\0' or another
 * control character. */
static int decode_segment(const char *in, size_t len, char *out, size_t out_size)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned c = (unsigned char)in[i];
        if (c == '%') {
            if (i + 2 >= len || !isxdigit((unsigned char)in[i + 1]) ||
                !isxdigit((unsigned char)in[i + 2]))
                return -1;
            char hex[3] = {in[i + 1], in[i + 2], 0};
            c = (unsigned)strtoul(hex, NULL, 16);
            i += 2;
        }
        if (c < 0x20 || c == 0x7f || c == '/' || c == '\\' || o + 1 >= out_size)
            return -1;
        out[o++] = (char)c;
    }
    out[o] = '\0';
    return 0;
}

/* An interpreter id as AgentCore's names go: letters, digits, '.', '_', '-'. */
static bool interpreter_id_ok(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > INTERPRETER_ID_MAX || strcmp(id, ".") == 0 || strcmp(id, "..") == 0)
        return false;
    return strspn(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == n;
}

enum route { R_NONE, R_START, R_STOP, R_GET, R_LIST, R_INVOKE, R_INTERPRETERS, R_INTERPRETER };

/* Splits the target's path into /code-interpreters/{id}/(sessions/VERB|tools/invoke),
 * or the control plane's /code-interpreters[/{id}]. R_NONE with a message when it is
 * not one of them. */
static enum route route_of(const char *target, char id[INTERPRETER_ID_MAX + 1], char *why,
                           size_t why_size)
{
    char seg[4][INTERPRETER_ID_MAX + 1];
    size_t n = 0;
    size_t path_len = strcspn(target, "?#");
    if (path_len == 0 || target[0] != '/') {
        snprintf(why, why_size, "the request target is not an absolute path");
        return R_NONE;
    }
    const char *p = target + 1, *end = target + path_len;
    for (;;) {
        const char *slash = memchr(p, '/', (size_t)(end - p));
        size_t len = slash != NULL ? (size_t)(slash - p) : (size_t)(end - p);
        if (n == 4 || len == 0 || decode_segment(p, len, seg[n], sizeof(seg[n])) < 0 ||
            strcmp(seg[n], ".") == 0 || strcmp(seg[n], "..") == 0) {
            snprintf(why, why_size,
                     "no such route (empty, dot or undecodable segments are "
                     "refused)");
            return R_NONE;
        }
        n++;
        if (slash == NULL)
            break;
        p = slash + 1;
    }
    if ((n != 4 && n != 2 && n != 1) || strcmp(seg[0], "code-interpreters") != 0) {
        snprintf(why, why_size, "no such route");
        return R_NONE;
    }
    if (n == 1)
        return R_INTERPRETERS;
    if (!interpreter_id_ok(seg[1])) {
        snprintf(why, why_size, "invalid code interpreter identifier");
        return R_NONE;
    }
    snprintf(id, INTERPRETER_ID_MAX + 1, "%s", seg[1]);
    if (n == 2)
        return R_INTERPRETER;
    if (strcmp(seg[2], "tools") == 0 && strcmp(seg[3], "invoke") == 0)
        return R_INVOKE;
    if (strcmp(seg[2], "sessions") == 0) {
        static const char *const verbs[] = {"start", "stop", "get", "list"};
        for (int i = 0; i < 4; i++)
            if (strcmp(seg[3], verbs[i]) == 0)
                return (enum route)(R_START + i);
    }
    snprintf(why, why_size, "no such route");
    return R_NONE;
}

static const char *method_of(enum route r)
{
    switch (r) {
    case R_START:
    case R_STOP:
        return "PUT";
    case R_GET:
        return "GET";
    default:
        return "POST";
    }
}

/* The body as a JSON object; an empty body is {}. NULL with a ValidationException. */
json_t *cq_serve_body_object(const struct cq_http_request *req, struct cq_http_response *resp)
{
    if (req->body_len == 0)
        return json_object();
    json_error_t jerr;
    /* jansson refuses invalid UTF-8 and NUL in strings (JSON_ALLOW_NUL not given). */
    json_t *v = json_loadb((const char *)req->body, req->body_len, JSON_REJECT_DUPLICATES, &jerr);
    if (v == NULL) {
        fail(resp, VALIDATION, "CannotParse", "the body is not valid JSON: %s", jerr.text);
        return NULL;
    }
    if (!json_is_object(v)) {
        json_decref(v);
        fail(resp, VALIDATION, "CannotParse", "the body must be a JSON object");
        return NULL;
    }
    return v;
}

/* The interpreter the backend knows by id: AgentCore's built-in one is codeq's default. */
static const char *backend_interpreter(const char *id)
{
    return strcmp(id, AWS_DEFAULT_INTERPRETER) == 0 ? CQ_INTERPRETER_DEFAULT : id;
}

static const char *session_id_param(const struct cq_http_request *req,
                                    struct cq_http_response *resp)
{
    const char *id = cq_http_query(req, "sessionId");
    if (id == NULL || id[0] == '\0') {
        fail(resp, VALIDATION, "FieldValidationFailed", "sessionId is required");
        return NULL;
    }
    return id;
}

/* ---- operations -------------------------------------------------------------------- */

static void start(struct cq_serve *s, const char *tenant, const char *interp,
                  const struct cq_http_request *req, struct cq_http_response *resp)
{
    if (!cq_serve_interpreter_usable(&s->control, tenant, interp)) {
        fail(resp, NOT_FOUND, NULL, "no code interpreter '%s'", interp);
        return;
    }
    json_t *body = cq_serve_body_object(req, resp);
    if (body == NULL)
        return;
    struct cq_session_params params = {.interpreter = backend_interpreter(interp)};
    json_t *v;
    const char *token = "";
    if ((v = json_object_get(body, "name")) != NULL) {
        size_t n = json_string_length(v);
        if (!json_is_string(v) || n < 1 || n > 100) {
            fail(resp, VALIDATION, "FieldValidationFailed", "name must be 1-100 characters");
            goto out;
        }
        params.name = json_string_value(v);
    }
    if ((v = json_object_get(body, "sessionTimeoutSeconds")) != NULL) {
        if (!json_is_integer(v) || json_integer_value(v) < 1 ||
            json_integer_value(v) > CQ_WORKER_MAX_SESSION_TTL_S) {
            fail(resp, VALIDATION, "FieldValidationFailed",
                 "sessionTimeoutSeconds must be an integer from 1 to %d",
                 CQ_WORKER_MAX_SESSION_TTL_S);
            goto out;
        }
        params.timeout_s = (uint32_t)json_integer_value(v);
    }
    if ((v = json_object_get(body, "clientToken")) != NULL) {
        size_t n = json_string_length(v);
        if (!json_is_string(v) || n < 33 || n > CLIENT_TOKEN_MAX) {
            fail(resp, VALIDATION, "FieldValidationFailed",
                 "clientToken must be 33-256 characters");
            goto out;
        }
        token = json_string_value(v);
    }
    /* What codeq cannot honour is refused rather than silently left out. */
    static const char *const unsupported[] = {"certificates", "filesystemConfigurations"};
    for (size_t i = 0; i < 2; i++)
        if (json_object_get(body, unsupported[i]) != NULL) {
            fail(resp, VALIDATION, "FieldValidationFailed", "%s is not supported by codeq",
                 unsupported[i]);
            goto out;
        }
    /* In front of a fleet, the fleet's own idempotency (start:<tenant>:<token>) keeps
     * the token: one session for it whichever replica of the gateway a retry reaches.
     * The fleet knows the gateway's key, not the gateway's clients, so the token it
     * gets is the client's bound to the client's tenant. */
    char scoped[2 * 32 + 1];
    if (s->store != NULL && token[0] != '\0') {
        char bound[CQ_TENANT_MAX + 1 + CLIENT_TOKEN_MAX + 1];
        int n = snprintf(bound, sizeof(bound), "%s\n%s", tenant, token);
        uint8_t digest[32];
        cq_sha256(bound, n > 0 && (size_t)n < sizeof(bound) ? (size_t)n : strlen(bound), digest);
        cq_hex_encode(digest, sizeof(digest), scoped);
        params.client_token = scoped;
    }
    bool serialised = token[0] != '\0' && s->store == NULL;
    if (serialised) {
        pthread_mutex_lock(&s->start_lock);
        /* The same token from the same tenant: the session that token started. */
        struct owned found = {0};
        pthread_mutex_lock(&s->lock);
        for (size_t i = 0; i < s->n_owned; i++)
            if (strcmp(s->owned[i].tenant, tenant) == 0 &&
                strcmp(s->owned[i].client_token, token) == 0)
                found = s->owned[i];
        pthread_mutex_unlock(&s->lock);
        if (found.session_id[0] != '\0') {
            pthread_mutex_unlock(&s->start_lock);
            if (strcmp(found.interpreter, interp) != 0) {
                fail(resp, VALIDATION, "IdempotentParameterMismatchException",
                     "clientToken was used with another code interpreter");
                goto out;
            }
            set_json(resp, 200,
                     json_pack("{s:s, s:s, s:o}", "codeInterpreterIdentifier", interp, "sessionId",
                               found.session_id, "createdAt",
                               cq_json_iso_time(found.created_at_ms)));
            goto out;
        }
    }
    struct cq_session_info info;
    struct cq_error err;
    int rc = cq_backend_start_session(s->backend, &params, &info, &err);
    bool mismatch = false;
    if (rc == 0 && s->store != NULL) {
        rc = record_fleet(s, tenant, interp, &info, &mismatch, &err);
        if (rc < 0 && token[0] == '\0') {
            /* Nobody could reach it: gone rather than left to its time to live. (With a
             * token a retry finds it, and records it then.) */
            struct cq_session_info ignored;
            struct cq_error stop_err;
            cq_backend_stop_session(s->backend, info.session_id, &ignored, &stop_err);
        }
    } else if (rc == 0) {
        struct owned o = {.created_at_ms = info.created_at_ms};
        snprintf(o.session_id, sizeof(o.session_id), "%s", info.session_id);
        snprintf(o.tenant, sizeof(o.tenant), "%s", tenant);
        snprintf(o.interpreter, sizeof(o.interpreter), "%s", interp);
        snprintf(o.client_token, sizeof(o.client_token), "%s", token);
        if (add_owned(s, &o) < 0) {
            cq_backend_stop_session(s->backend, info.session_id, &info, &err);
            cq_error_set(&err, CQ_EINTERNAL, "out of memory");
            rc = -1;
        }
    }
    if (serialised)
        pthread_mutex_unlock(&s->start_lock);
    if (mismatch) {
        fail(resp, VALIDATION, "IdempotentParameterMismatchException",
             "clientToken was used with another code interpreter");
        goto out;
    }
    if (rc < 0) {
        if (err.code == CQ_ENOTFOUND)
            fail(resp, NOT_FOUND, NULL, "no code interpreter '%s'", interp);
        else
            fail_err(resp, &err);
        goto out;
    }
    set_json(resp, 200,
             json_pack("{s:s, s:s, s:o}", "codeInterpreterIdentifier", interp, "sessionId",
                       info.session_id, "createdAt", cq_json_iso_time(info.created_at_ms)));
out:
    json_decref(body);
}

static void get_or_stop(struct cq_serve *s, bool stop, const char *tenant, const char *interp,
                        const struct cq_http_request *req, struct cq_http_response *resp)
{
    const char *id = session_id_param(req, resp);
    if (id == NULL)
        return;
    if (stop) {
        /* Stop's body holds only its clientToken: still, it must be JSON. */
        json_t *body = cq_serve_body_object(req, resp);
        if (body == NULL)
            return;
        json_decref(body);
    }
    struct cq_error err;
    int mine = owns(s, tenant, interp, id, &err);
    if (mine <= 0) {
        if (mine < 0)
            fail(resp, INTERNAL, NULL, "who owns the session: %s", err.msg);
        else
            fail(resp, NOT_FOUND, NULL, "no session '%s'", id);
        return;
    }
    struct cq_session_info info;
    int rc = stop ? cq_backend_stop_session(s->backend, id, &info, &err)
                  : cq_backend_get_session(s->backend, id, &info, &err);
    if (rc < 0 && stop && err.code == CQ_ENOTFOUND)
        /* Stop is idempotent: a session already gone stays stopped. */
        rc = cq_backend_get_session(s->backend, id, &info, &err);
    if (rc < 0) {
        if (err.code == CQ_ENOTFOUND)
            forget_owned(s, id);
        fail_err(resp, &err);
        return;
    }
    struct cq_error ended_err;
    if (stop && s->store != NULL && cq_store_gateway_ended(s->store, id, &ended_err) < 0)
        fprintf(stderr, "codeq serve: session %s stopped, its record kept: %s\n", id,
                ended_err.msg);
    json_t *o;
    if (stop) {
        o = json_pack("{s:s, s:s, s:o}", "codeInterpreterIdentifier", interp, "sessionId",
                      info.session_id, "lastUpdatedAt", cq_json_iso_time(info.last_updated_at_ms));
    } else {
        o = cq_session_to_json(&info);
        json_object_set_new(o, "codeInterpreterIdentifier", json_string(interp));
    }
    set_json(resp, 200, o);
}

/* A session as ListCodeInterpreterSessions lists it. */
static json_t *list_item(const char *interp, const struct cq_session_info *info)
{
    json_t *o = json_pack("{s:s, s:s, s:s, s:o, s:o}", "codeInterpreterIdentifier", interp,
                          "sessionId", info->session_id, "status",
                          info->status == CQ_SESSION_READY ? "READY" : "TERMINATED", "createdAt",
                          cq_json_iso_time(info->created_at_ms), "lastUpdatedAt",
                          cq_json_iso_time(info->last_updated_at_ms));
    if (o != NULL && info->name[0] != '\0')
        json_object_set_new(o, "name", json_string(info->name));
    return o;
}

/* In front of a fleet: the tenant's own index (gateway:sessions:<tenant>), newest first,
 * each session's state asked of the fleet; the token is the index entry last handed out,
 * so a page goes on after it whether or not that session is still there. */
static void list_fleet(struct cq_serve *s, const char *tenant, const char *interp, int status,
                       size_t max, const char *token, struct cq_http_response *resp)
{
    cq_autofree struct cq_gateway_entry *page = calloc(LIST_PAGE, sizeof(*page));
    json_t *items = json_array();
    if (page == NULL || items == NULL) {
        json_decref(items);
        fail(resp, INTERNAL, NULL, "out of memory");
        return;
    }
    char cursor[CQ_STORE_GATEWAY_TOKEN_MAX + 1] = "", last[CQ_STORE_GATEWAY_TOKEN_MAX + 1] = "";
    snprintf(cursor, sizeof(cursor), "%s", token != NULL ? token : "");
    bool more = false;
    for (;;) {
        size_t n = 0;
        struct cq_error err;
        if (cq_store_gateway_list(s->store, tenant, cursor, LIST_PAGE, page, &n, &err) < 0) {
            json_decref(items);
            fail(resp, INTERNAL, NULL, "the sessions' records: %s", err.msg);
            return;
        }
        size_t i = 0;
        for (; i < n && json_array_size(items) < max; i++) {
            snprintf(cursor, sizeof(cursor), "%s", page[i].token);
            if (strcmp(page[i].interpreter, interp) != 0)
                continue;
            struct cq_session_info info;
            if (cq_backend_get_session(s->backend, page[i].session_id, &info, &err) < 0) {
                if (err.code == CQ_ENOTFOUND) {
                    forget_owned(s, page[i].session_id);
                    continue;
                }
                json_decref(items);
                fail_err(resp, &err);
                return;
            }
            if (status != 0 && (int)info.status != status)
                continue;
            json_array_append_new(items, list_item(interp, &info));
            snprintf(last, sizeof(last), "%s", page[i].token);
        }
        if (json_array_size(items) >= max) {
            more = i < n || n == LIST_PAGE;
            break;
        }
        if (n < LIST_PAGE)
            break;
    }
    json_t *o = json_pack("{s:o}", "items", items);
    if (more && o != NULL)
        json_object_set_new(o, "nextToken", json_string(last));
    set_json(resp, 200, o);
}

static void list(struct cq_serve *s, const char *tenant, const char *interp,
                 const struct cq_http_request *req, struct cq_http_response *resp)
{
    json_t *body = cq_serve_body_object(req, resp);
    if (body == NULL)
        return;
    size_t max = 10;
    int status = 0;
    const char *token = NULL;
    json_t *v;
    struct cq_session_info *page = NULL;
    json_t *items = NULL;
    if ((v = json_object_get(body, "maxResults")) != NULL) {
        if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 100) {
            fail(resp, VALIDATION, "FieldValidationFailed", "maxResults must be 1 to 100");
            goto out;
        }
        max = (size_t)json_integer_value(v);
    }
    if ((v = json_object_get(body, "nextToken")) != NULL) {
        if (!json_is_string(v) || json_string_length(v) == 0 ||
            json_string_length(v) >
                (s->store != NULL ? CQ_STORE_GATEWAY_TOKEN_MAX : CQ_SESSION_ID_MAX)) {
            fail(resp, VALIDATION, "FieldValidationFailed", "invalid nextToken");
            goto out;
        }
        token = json_string_value(v);
    }
    if ((v = json_object_get(body, "status")) != NULL) {
        const char *t = json_string_value(v);
        if (t != NULL && strcmp(t, "READY") == 0)
            status = CQ_SESSION_READY;
        else if (t != NULL && strcmp(t, "TERMINATED") == 0)
            status = CQ_SESSION_TERMINATED;
        else {
            fail(resp, VALIDATION, "FieldValidationFailed", "status must be READY or TERMINATED");
            goto out;
        }
    }
    if (s->store != NULL) {
        /* A token of list_fleet's: 15 digits, ':' and a session id. */
        if (token != NULL && (strlen(token) < 17 || strspn(token, "0123456789") != 15 ||
                              token[15] != ':' || !session_id_ok(token + 16))) {
            fail(resp, VALIDATION, "FieldValidationFailed", "invalid nextToken");
            goto out;
        }
        list_fleet(s, tenant, interp, status, max, token, resp);
        goto out;
    }
    /* The backend pages over every tenant's sessions; the token is the last session id
     * handed out, and the walk goes on from there until max of this tenant's are found. */
    page = calloc(LIST_PAGE, sizeof(*page));
    items = json_array();
    if (page == NULL || items == NULL) {
        fail(resp, INTERNAL, NULL, "out of memory");
        goto out;
    }
    char cursor[CQ_SESSION_ID_MAX + 1] = "", last[CQ_SESSION_ID_MAX + 1] = "";
    if (token != NULL)
        snprintf(cursor, sizeof(cursor), "%s", token);
    bool more = false;
    for (;;) {
        size_t n = 0;
        char next[CQ_SESSION_ID_MAX + 1] = "";
        struct cq_error err;
        if (cq_backend_list_sessions(s->backend, status, LIST_PAGE, cursor[0] ? cursor : NULL, page,
                                     &n, next, &err) < 0) {
            fail_err(resp, &err);
            goto out;
        }
        size_t i = 0;
        for (; i < n && json_array_size(items) < max; i++) {
            if (owns(s, tenant, interp, page[i].session_id, &err) <= 0)
                continue;
            json_array_append_new(items, list_item(interp, &page[i]));
            snprintf(last, sizeof(last), "%s", page[i].session_id);
        }
        if (json_array_size(items) >= max) {
            more = i < n || next[0] != '\0';
            break;
        }
        if (next[0] == '\0')
            break;
        snprintf(cursor, sizeof(cursor), "%s", next);
    }
    json_t *o = json_pack("{s:O}", "items", items);
    if (more)
        json_object_set_new(o, "nextToken", json_string(last));
    set_json(resp, 200, o);
out:
    json_decref(items);
    free(page);
    json_decref(body);
}

/* The arguments InvokeCodeInterpreter's ToolArguments has; anything else is refused as
 * the SDK itself would (codeq's own, like a timeout, ride in headers). */
static const char *const tool_arguments[] = {
    "code",  "language", "clearContext",  "command", "path",
    "paths", "content",  "directoryPath", "taskId",  "runtime",
};

static void invoke(struct cq_serve *s, const char *tenant, const char *interp,
                   const struct cq_http_request *req, struct cq_http_response *resp)
{
    const char *session = cq_http_header(req, CQ_SERVE_SESSION_HEADER);
    if (session == NULL || session[0] == '\0') {
        fail(resp, VALIDATION, "FieldValidationFailed", "the header %s is required",
             CQ_SERVE_SESSION_HEADER);
        return;
    }
    json_t *body = cq_serve_body_object(req, resp);
    if (body == NULL)
        return;
    struct cq_mcp_call_args c = {0};
    bool parsed = false;
    json_t *name = json_object_get(body, "name");
    json_t *args = json_object_get(body, "arguments");
    if (!json_is_string(name)) {
        fail(resp, VALIDATION, "FieldValidationFailed", "name (the tool) is required");
        goto out;
    }
    if (args != NULL && !json_is_object(args)) {
        fail(resp, VALIDATION, "FieldValidationFailed", "arguments must be an object");
        goto out;
    }
    const char *key;
    json_t *value;
    json_object_foreach(args, key, value)
    {
        bool known = false;
        for (size_t i = 0; i < sizeof(tool_arguments) / sizeof(*tool_arguments); i++)
            known = known || strcmp(key, tool_arguments[i]) == 0;
        if (!known) {
            fail(resp, VALIDATION, "FieldValidationFailed", "unknown argument '%s'", key);
            goto out;
        }
    }
    const char *tool = NULL; /* the static name: a streamed call outlives the body */
    for (size_t i = 0; cq_tool_names[i] != NULL && tool == NULL; i++)
        if (strcmp(json_string_value(name), cq_tool_names[i]) == 0)
            tool = cq_tool_names[i];
    if (tool == NULL) {
        fail(resp, VALIDATION, "FieldValidationFailed", "unknown tool '%s'",
             json_string_value(name));
        goto out;
    }
    int code = 0;
    char message[256] = "";
    struct cq_error err = {0};
    int rc = cq_mcp_parse_call(tool, args, &c, &code, message, sizeof(message), &err);
    parsed = true;
    if (rc != 0) {
        fail(resp, VALIDATION, "FieldValidationFailed", "%s", rc < 0 ? message : err.msg);
        goto out;
    }
    const char *timeout = cq_http_header(req, CQ_SERVE_TIMEOUT_HEADER);
    if (timeout != NULL) {
        char *end = NULL;
        errno = 0;
        double t = strtod(timeout, &end);
        if (end == timeout || *end != '\0' || errno != 0 || !(t > 0 && t <= 86400)) {
            fail(resp, VALIDATION, "FieldValidationFailed",
                 "%s must be a number of seconds, more than 0 and at most 86400",
                 CQ_SERVE_TIMEOUT_HEADER);
            goto out;
        }
        c.invoke.timeout_s = t;
    }
    const char *stream = cq_http_header(req, CQ_SERVE_STREAM_HEADER);
    bool streamed = stream != NULL;
    if (streamed && strcmp(stream, "output") != 0) {
        fail(resp, VALIDATION, "FieldValidationFailed", "%s must be 'output'",
             CQ_SERVE_STREAM_HEADER);
        goto out;
    }
    /* A session that is not this tenant's, or ended, is answered before the stream
     * starts: botocore raises it as the call's ClientError. */
    struct cq_session_info info;
    int mine = owns(s, tenant, interp, session, &err);
    if (mine < 0) {
        fail(resp, INTERNAL, NULL, "who owns the session: %s", err.msg);
        goto out;
    }
    if (mine == 0 || cq_backend_get_session(s->backend, session, &info, &err) < 0 ||
        info.status != CQ_SESSION_READY) {
        fail(resp, NOT_FOUND, NULL, "no running session '%s'", session);
        goto out;
    }
    /* The SDKs send W3C trace context as headers (traceparent, in the service model):
     * the call's span continues it, as codeq mcp's does a tools/call's _meta. */
    json_t *trace_params = json_pack("{s:{}}", "_meta");
    json_t *meta = json_object_get(trace_params, "_meta");
    static const char *const trace_headers[] = {"traceparent", "tracestate"};
    for (size_t i = 0; i < 2 && meta != NULL; i++) {
        const char *h = cq_http_header(req, trace_headers[i]);
        if (h != NULL)
            json_object_set_new(meta, trace_headers[i], json_string(h));
    }
    if (streamed) {
        cq_serve_invoke_streamed(&s->streams, s->backend, session, tool, &c, trace_params, resp);
        parsed = false; /* the call's now */
        goto out;
    }
    uint8_t *frame = NULL;
    size_t frame_len = 0;
    int rc_run = cq_serve_run_invoke(s->backend, session, tool, &c.invoke, trace_params, NULL, NULL,
                                     &frame, &frame_len, &err);
    json_decref(trace_params);
    if (rc_run < 0) {
        fail(resp, INTERNAL, NULL, "%s", err.msg);
        goto out;
    }
    free(resp->body);
    resp->status = 200;
    resp->content_type = "application/vnd.amazon.eventstream";
    resp->body = (char *)frame;
    resp->body_len = frame_len;
    cq_http_add_header(resp, CQ_SERVE_SESSION_HEADER, session);
out:
    if (parsed)
        cq_mcp_call_args_free(&c);
    json_decref(body);
}

/* ---- the handler ------------------------------------------------------------------- */

void cq_serve_handle(void *ctx, const struct cq_http_request *req, struct cq_http_response *resp)
{
    struct cq_serve *s = ctx;
    size_t path_len = req->target != NULL ? strcspn(req->target, "?#") : 0;
    if (path_len == strlen(CQ_SERVE_MCP_PATH) &&
        strncmp(req->target, CQ_SERVE_MCP_PATH, path_len) == 0) {
        cq_serve_mcp_handle(s->mcp, req, resp);
        return;
    }
    char interp[INTERPRETER_ID_MAX + 1], why[160];
    enum route r =
        route_of(req->target != NULL ? req->target : req->path, interp, why, sizeof(why));
    if (r == R_NONE) {
        fail(resp, NOT_FOUND, NULL, "%s", why);
        return;
    }
    bool control = r == R_INTERPRETERS || r == R_INTERPRETER;
    if (!control && strcmp(req->method, method_of(r)) != 0) {
        fail(resp, VALIDATION, "CannotParse", "this route takes %s", method_of(r));
        resp->status = 405;
        resp->allow = method_of(r);
        return;
    }
    char tenant[CQ_TENANT_MAX + 1] = CQ_SERVE_ANONYMOUS;
    if (s->auth != NULL) {
        static const char *const must_sign[] = {CQ_SERVE_SESSION_HEADER, CQ_SERVE_TIMEOUT_HEADER,
                                                CQ_SERVE_STREAM_HEADER, NULL};
        struct cq_error err;
        if (cq_serve_authenticate(s->auth, req, must_sign, tenant, &err) < 0) {
            if (err.code == CQ_EDENIED)
                fail(resp, DENIED, NULL, "%s", err.msg);
            else
                fail(resp, INTERNAL, NULL, "cannot check the signature: %s", err.msg);
            return;
        }
    }
    if (!cq_serve_admit(s, tenant)) {
        fail(resp, THROTTLED, NULL, "more than %u requests per second", s->max_rate);
        return;
    }
    switch (r) {
    case R_INTERPRETERS:
    case R_INTERPRETER:
        cq_serve_control(&s->control, tenant, r == R_INTERPRETER ? interp : NULL, req, resp);
        break;
    case R_START:
        start(s, tenant, interp, req, resp);
        break;
    case R_STOP:
    case R_GET:
        get_or_stop(s, r == R_STOP, tenant, interp, req, resp);
        break;
    case R_LIST:
        list(s, tenant, interp, req, resp);
        break;
    case R_INVOKE:
        invoke(s, tenant, interp, req, resp);
        break;
    case R_NONE:
        break;
    }
}

int cq_serve_create(const struct cq_serve_config *cfg, struct cq_serve **out, struct cq_error *err)
{
    struct cq_serve *s = calloc(1, sizeof(*s));
    if (s == NULL ||
        (cfg->max_rate > 0 && (s->buckets = calloc(MAX_BUCKETS, sizeof(*s->buckets))) == NULL)) {
        free(s);
        return cq_error_sys(err, ENOMEM, "serve");
    }
    s->backend = cfg->backend;
    s->store = cfg->store;
    s->auth = cfg->auth;
    s->max_rate = cfg->max_rate;
    cq_serve_control_init(&s->control, cfg->local_store, cfg->auth != NULL, cfg->default_network);
    cq_serve_streams_init(&s->streams);
    pthread_mutex_init(&s->lock, NULL);
    pthread_mutex_init(&s->start_lock, NULL);
    if (cq_serve_mcp_create(s, cfg, &s->mcp, err) < 0) {
        cq_serve_free(s);
        return -1;
    }
    *out = s;
    return 0;
}

void cq_serve_free(struct cq_serve *s)
{
    if (s == NULL)
        return;
    /* First: their calls may still record sessions in the table, or use the backend. */
    cq_serve_mcp_free(s->mcp);
    cq_serve_streams_destroy(&s->streams);
    /* The embedded worker's sessions would end with the backend anyway. In front of a
     * fleet the table is empty: the sessions are in the fleet's Redis, the gateway's
     * replicas' as much as this one's, and outlive it (a restart finds them again). */
    for (size_t i = 0; i < s->n_owned; i++) {
        struct cq_session_info info;
        struct cq_error err;
        cq_backend_stop_session(s->backend, s->owned[i].session_id, &info, &err);
    }
    free(s->owned);
    free(s->buckets);
    pthread_mutex_destroy(&s->lock);
    pthread_mutex_destroy(&s->start_lock);
    cq_serve_control_destroy(&s->control);
    free(s);
}
