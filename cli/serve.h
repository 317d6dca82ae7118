/* cli/serve.h - `codeq serve` (cmd_serve.c): AgentCore's data-plane REST API over HTTP
 * (serve_agentcore.c), its requests authenticated with SigV4 against the operator's
 * keys file (serve_auth.c). Internal to the command. */
#ifndef CQ_CLI_SERVE_H
#define CQ_CLI_SERVE_H

#include "cli/backend.h"
#include "common/tenant.h"
#include "http/http.h"

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

/* ---- the AgentCore routes (serve_agentcore.c) -------------------------------------- */

/* The header codeq's per-call timeout rides in (seconds, a number > 0): the SDK's
 * arguments structure refuses keys it does not know. */
#define CQ_SERVE_TIMEOUT_HEADER "x-codeq-timeout-seconds"
#define CQ_SERVE_SESSION_HEADER "x-amzn-code-interpreter-session-id"
/* The tenant of every session when requests are not authenticated (--no-auth). */
#define CQ_SERVE_ANONYMOUS "anonymous"

struct cq_serve;

/* auth NULL: requests are not authenticated (the command allows that on loopback only).
 * Both must outlive the server. max_rate: requests per second per tenant (a burst of as
 * many), beyond which ThrottlingException; 0: no limit. */
int cq_serve_create(struct cq_backend *backend, struct cq_serve_auth *auth, unsigned max_rate,
                    struct cq_serve **out, struct cq_error *err);
/* Stops the sessions still running that this server started, and frees it. */
void cq_serve_free(struct cq_serve *s);
/* The HTTP handler (cq_http_handler) with s as its context. */
void cq_serve_handle(void *s, const struct cq_http_request *req, struct cq_http_response *resp);

#endif
