/* cli/serve.h - `codeq serve` (cmd_serve.c): AgentCore's data-plane REST API over HTTP
 * (serve_agentcore.c), its requests authenticated with SigV4 against the operator's
 * keys file (serve_auth.c), and MCP's Streamable HTTP transport at /mcp (serve_mcp.c),
 * authenticated with bearer tokens made of the same keys. Internal to the command. */
#ifndef CQ_CLI_SERVE_H
#define CQ_CLI_SERVE_H

#include "cli/backend.h"
#include "cli/mcp_tools.h"
#include "common/tenant.h"
#include "http/http.h"
#include "sandbox/netpolicy.h"

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>

/* ---- authentication (serve_auth.c) -------------------------------------------------- */

struct cq_serve_auth;

/* The keys file of `codeq tenant` / `codeq key` (fleet/keys.h): private to its owner,
 * read again when it changes, revoked keys refused. */
int cq_serve_auth_open(const char *keys_file, struct cq_serve_auth **out, struct cq_error *err);
void cq_serve_auth_close(struct cq_serve_auth *a);

/* Verifies req's SigV4 signature and that every header in must_sign that req carries is
 * among the signed ones. 0 with the key's tenant; -1 with err: CQ_EDENIED for the client
 * (answer 403), anything else is the server's failure. */
int cq_serve_authenticate(struct cq_serve_auth *a, const struct cq_http_request *req,
                          const char *const *must_sign, char tenant[CQ_TENANT_MAX + 1],
                          struct cq_error *err);

/* Verifies req's bearer token, "Authorization: Bearer KEY_ID:SECRET" with a key of the
 * keys file (revoked keys refused; the secret compared in constant time, never logged).
 * 0 with the key's tenant; -1 with err: CQ_EDENIED for the client (answer 401),
 * anything else is the server's failure. */
int cq_serve_authenticate_bearer(struct cq_serve_auth *a, const struct cq_http_request *req,
                                 char tenant[CQ_TENANT_MAX + 1], struct cq_error *err);

/* ---- the AgentCore routes (serve_agentcore.c) -------------------------------------- */

/* The header codeq's per-call timeout rides in (seconds, a number > 0): the SDK's
 * arguments structure refuses keys it does not know. */
#define CQ_SERVE_TIMEOUT_HEADER "x-codeq-timeout-seconds"
#define CQ_SERVE_SESSION_HEADER "x-amzn-code-interpreter-session-id"
/* "output": InvokeCodeInterpreter streams the call's output as further `result`
 * events before the final one (serve_stream.c); absent: the result alone. */
#define CQ_SERVE_STREAM_HEADER "x-codeq-stream"
/* The tenant of every session when requests are not authenticated (--no-auth). */
#define CQ_SERVE_ANONYMOUS "anonymous"

struct cq_serve;
struct cq_store;

struct cq_serve_config {
    struct cq_backend *backend;
    /* In front of a fleet: its Redis, where the gateway records which tenant owns which
     * session (shared by every replica of the gateway); NULL: a table in memory. */
    struct cq_store *store;
    /* NULL: requests are not authenticated (the command allows that on loopback only). */
    struct cq_serve_auth *auth;
    /* Requests per second per tenant (a burst of as many), beyond which they are refused
     * (ThrottlingException, HTTP 429 on /mcp); 0: no limit. */
    unsigned max_rate;
    unsigned mcp_max_sessions;   /* MCP sessions per tenant at once; 0: the default */
    unsigned mcp_idle_timeout_s; /* an MCP session unused this long ends; 0: the default */
    /* Origins besides loopback ones that browsers may send /mcp requests from
     * ("https://app.example"); NULL-terminated, may be NULL. */
    const char *const *allow_origins;
    /* The backend is the embedded worker, whose interpreters are the local store's (the
     * control plane serves them); false in front of a fleet. */
    bool local_store;
    enum cq_network_mode default_network; /* of an interpreter that names none */
};

/* backend, store, auth and allow_origins must outlive the server. */
int cq_serve_create(const struct cq_serve_config *cfg, struct cq_serve **out, struct cq_error *err);
/* Ends the MCP sessions (their calls cancelled), stops the sessions still running that
 * this server started when they are in its memory (not those recorded in a fleet's
 * Redis: other replicas serve them), and frees it. */
void cq_serve_free(struct cq_serve *s);
/* The HTTP handler (cq_http_handler) with s as its context. */
void cq_serve_handle(void *s, const struct cq_http_request *req, struct cq_http_response *resp);

/* AgentCore's answers, for the routes' modules: an error (type "ValidationException",
 * ...: its HTTP status and x-amzn-ErrorType; reason: ValidationException's, or NULL),
 * an error for err (by its code), a JSON body (taken; NULL: 500), the request's body as
 * a JSON object ({} when empty; NULL after answering ValidationException). */
void cq_serve_fail(struct cq_http_response *resp, const char *type, const char *reason,
                   const char *fmt, ...) __attribute__((format(printf, 4, 5)));
void cq_serve_fail_err(struct cq_http_response *resp, const struct cq_error *err);
void cq_serve_set_json(struct cq_http_response *resp, int status, json_t *body);
json_t *cq_serve_body_object(const struct cq_http_request *req, struct cq_http_response *resp);

/* ---- InvokeCodeInterpreter's event stream (serve_stream.c) ------------------------ */

/* Runs a tool call (its span continuing trace_params' _meta; on_output may be NULL)
 * and makes its result one `result` event, or, past the event stream's limits, the
 * stream's exception event. 0 with *frame (caller frees); -1 when not even that could
 * be made. */
int cq_serve_run_invoke(struct cq_backend *b, const char *session, const char *tool,
                        const struct cq_invoke_args *args, json_t *trace_params,
                        cq_stream_fn on_output, void *ctx, uint8_t **frame, size_t *frame_len,
                        struct cq_error *err);

/* The streamed calls in progress, which the server waits for before it ends. */
struct cq_serve_streams {
    pthread_mutex_t lock;
    pthread_cond_t idle;
    unsigned running;
};
void cq_serve_streams_init(struct cq_serve_streams *g);
/* Waits for the streamed calls in progress. */
void cq_serve_streams_destroy(struct cq_serve_streams *g);
/* Answers resp with an event stream: the call's output as chunk events while it runs
 * on threads of its own, then its result. tool is static text; args (moved: the caller
 * must not free them) and trace_params (a reference) are taken. */
void cq_serve_invoke_streamed(struct cq_serve_streams *g, struct cq_backend *b, const char *session,
                              const char *tool, struct cq_mcp_call_args *args, json_t *trace_params,
                              struct cq_http_response *resp);

/* ---- the control plane of code interpreters (serve_control.c) ---------------------- */

struct cq_serve_control {
    bool local_store, authenticated;
    enum cq_network_mode default_network;
    pthread_mutex_t create_lock; /* a name or client token is checked and saved as one */
};

void cq_serve_control_init(struct cq_serve_control *c, bool local_store, bool authenticated,
                           enum cq_network_mode default_network);
void cq_serve_control_destroy(struct cq_serve_control *c);
/* /code-interpreters (id NULL) or /code-interpreters/{id}, as tenant. */
void cq_serve_control(struct cq_serve_control *c, const char *tenant, const char *id,
                      const struct cq_http_request *req, struct cq_http_response *resp);
/* 0 when tenant may not start sessions on interpreter id (answer it as not found). */
int cq_serve_interpreter_usable(const struct cq_serve_control *c, const char *tenant,
                                const char *id);

/* What the routes share: a tenant's request budget (--max-rate), and which sessions are
 * whose. One namespace for AgentCore's routes and /mcp: a session started by either is
 * its tenant's, and found by the other. */
bool cq_serve_admit(struct cq_serve *s, const char *tenant);
/* Whether tenant owns session_id; interpreter (as a client names it, NULL: any) must
 * then be the one it runs on. */
bool cq_serve_owns(struct cq_serve *s, const char *tenant, const char *interpreter,
                   const char *session_id);
/* Records a session tenant started on interpreter (as the client named it). */
int cq_serve_adopt(struct cq_serve *s, const char *tenant, const char *interpreter,
                   const struct cq_session_info *info);

/* ---- MCP over HTTP (serve_mcp.c) --------------------------------------------------- */

#define CQ_SERVE_MCP_PATH           "/mcp"
#define CQ_SERVE_MCP_MAX_SESSIONS   64
#define CQ_SERVE_MCP_IDLE_TIMEOUT_S 600

struct cq_serve_mcp;

int cq_serve_mcp_create(struct cq_serve *s, const struct cq_serve_config *cfg,
                        struct cq_serve_mcp **out, struct cq_error *err);
/* Ends every MCP session: their calls are cancelled, and waited for. */
void cq_serve_mcp_free(struct cq_serve_mcp *m);
/* A request to CQ_SERVE_MCP_PATH. */
void cq_serve_mcp_handle(struct cq_serve_mcp *m, const struct cq_http_request *req,
                         struct cq_http_response *resp);

#endif
