/* cli/backend.h - what `codeq exec` and `codeq mcp` run on: the embedded worker core
 * in this process (the default), or the fleet over Kafka (--brokers). Both give the
 * worker core's session and tool calls the same meaning (worker/worker.h), so the
 * front ends do not know which one serves them. */
#ifndef CQ_CLI_BACKEND_H
#define CQ_CLI_BACKEND_H

#include "worker/worker.h"

struct cq_backend;

/* The fleet when brokers names one (--brokers, else $CODEQ_BROKERS), with
 * request_topic (NULL: $CODEQ_REQUEST_TOPIC or the default); else the embedded worker
 * made with cfg. */
int cq_backend_open(const struct cq_worker_config *cfg, const char *brokers,
                    const char *request_topic, struct cq_backend **out, struct cq_error *err);
void cq_backend_close(struct cq_backend *b);
/* Whether it is the embedded worker (its interpreters are the local store's). */
bool cq_backend_embedded(const struct cq_backend *b);

/* Code interpreters (runtime/interpreter.h): the embedded worker defines one from the
 * local store ($CODEQ_RUNTIME_STORE) when a session names it, and again when the
 * store's definition changed; a deleted one refuses new sessions. A fleet's workers
 * read the fleet's definitions themselves. */
/* Embedded: defines now the store's interpreters that have a warm pool (warmPool > 0),
 * so their pools fill before their first session (codeq mcp); failures are printed and
 * skipped. Without this call (codeq exec) interpreters keep no pool. */
void cq_backend_warm_interpreters(struct cq_backend *b);

int cq_backend_start_session(struct cq_backend *b, const struct cq_session_params *params,
                             struct cq_session_info *info, struct cq_error *err);
int cq_backend_get_session(struct cq_backend *b, const char *session_id,
                           struct cq_session_info *info, struct cq_error *err);
int cq_backend_list_sessions(struct cq_backend *b, int status_filter, size_t max,
                             const char *next_token, struct cq_session_info *out, size_t *n,
                             char next_token_out[CQ_SESSION_ID_MAX + 1], struct cq_error *err);
int cq_backend_stop_session(struct cq_backend *b, const char *session_id,
                            struct cq_session_info *info, struct cq_error *err);
void cq_backend_invoke(struct cq_backend *b, const char *session_id, const char *tool,
                       const struct cq_invoke_args *args, cq_stream_fn on_output, void *ctx,
                       struct cq_result *result);
/* cq_backend_invoke that cancel (worker.h; NULL: none) can cut short. In the fleet the
 * cancellation travels as a cancel_call to the call's worker, which interrupts it as
 * the embedded worker would (schemas/codeq.proto, CancelCall). */
void cq_backend_invoke_cancellable(struct cq_backend *b, const char *session_id, const char *tool,
                                   const struct cq_invoke_args *args, cq_stream_fn on_output,
                                   void *ctx, struct cq_cancel *cancel, struct cq_result *result);
/* The embedded worker's audit log: a record per tool call, appended to path as JSON
 * lines (fleet/audit.h; signed with $CODEQ_AUDIT_KEY_FILE when set). */
int cq_backend_audit_log(struct cq_backend *b, const char *path, struct cq_error *err);

#endif
