/* cli/mcp_tools.h - the MCP tool catalogue of `codeq mcp` and its mapping onto the
 * backend: AgentCore's nine tools and the four session tools; and the checks of what a
 * client sends (messages, tool arguments), apart from the backend so that they can be
 * fuzzed alone. */
#ifndef CQ_CLI_MCP_TOOLS_H
#define CQ_CLI_MCP_TOOLS_H

#include <jansson.h>
#include <pthread.h>
#include "cli/backend.h"

/* The session that calls without a sessionId run in, made on first use (and again
 * when it ended): one connection's own (codeq mcp), or one that every MCP session of a
 * tenant shares (codeq serve's /mcp, where clients open a session per call). */
struct cq_mcp_default {
    pthread_mutex_t lock; /* the fields; held while the session is made */
    char session_id[CQ_SESSION_ID_MAX + 1];
    unsigned running;      /* calls in it now */
    uint64_t last_used_ms; /* cq_now_ms() when a call in it last ended */
};

void cq_mcp_default_init(struct cq_mcp_default *d);
void cq_mcp_default_destroy(struct cq_mcp_default *d);
/* Stops d's session if it has been unused for idle_ms and no call runs in it (0 as
 * idle_ms: whenever no call runs); whether one was stopped. */
bool cq_mcp_default_reap(struct cq_mcp_default *d, struct cq_backend *b, uint64_t idle_ms);

/* Which sessions a client may name, for a transport whose clients are tenants (codeq
 * serve). Sessions that are not the client's are answered as not found. */
struct cq_mcp_owner {
    bool (*owns)(void *ctx, const char *session_id);
    /* A session the client started (startSession, or its default session) becomes its
     * own; -1: it could not be recorded (the session is then stopped, the call fails). */
    int (*adopt)(void *ctx, const struct cq_session_info *info, const char *interpreter);
    void *ctx;
};

struct cq_mcp_context {
    struct cq_backend *backend; /* the embedded worker or the fleet */
    struct cq_mcp_default *dflt;
    struct cq_mcp_owner owner; /* owns NULL: every session is the client's */
};

/* The `tools` array of a tools/list answer. New reference. output_schema: with each
 * tool's outputSchema (protocol 2025-06-18 and later), which its structuredContent
 * follows whenever isError is false. */
json_t *cq_mcp_tool_list(bool output_schema);

/* ---- parsing, without a backend (what the fuzz target tests/fuzz/fuzz_mcp.c feeds) --- */

/* A JSON-RPC message from the client, checked before dispatch. */
struct cq_mcp_message {
    json_t *msg;        /* the parsed message (owned), or NULL */
    json_t *id;         /* borrowed from msg; NULL: a notification (or, refused, null) */
    const char *method; /* a request or notification to dispatch */
    json_t *params;     /* borrowed from msg; may be NULL */
};

/* Parses one line. 1: a request or notification to dispatch (method set); 0: a message
 * to ignore (a client's response); -1: a message to refuse with *rpc_code and
 * rpc_message, answered to m->id. Free m with cq_mcp_message_free in every case. */
int cq_mcp_parse_message(const char *line, size_t len, struct cq_mcp_message *m, int *rpc_code,
                         char *rpc_message, size_t message_len);
void cq_mcp_message_free(struct cq_mcp_message *m);

enum cq_mcp_tool_kind {
    CQ_MCP_INVOKE, /* one of the worker's nine tools */
    CQ_MCP_START_SESSION,
    CQ_MCP_STOP_SESSION,
    CQ_MCP_GET_SESSION,
    CQ_MCP_LIST_SESSIONS,
};

/* The arguments of a tools/call, checked and converted; pointers into args. */
struct cq_mcp_call_args {
    enum cq_mcp_tool_kind kind;
    json_t *args;           /* the arguments object (a reference of its own) */
    const char *session_id; /* sessionId, or NULL (invoke: the default session) */
    /* CQ_MCP_INVOKE */
    struct cq_invoke_args invoke;
    const char **paths;
    struct cq_file_content *content;
    /* CQ_MCP_START_SESSION */
    struct cq_session_params params;
    const char *env[257];
    char *env_owned[256];
    size_t n_env;
    enum cq_network_mode network; /* networkMode, when params.network points here */
    const char **allow;           /* networkAllow (malloc'd array of borrowed strings) */
    /* CQ_MCP_LIST_SESSIONS */
    int status_filter;
    size_t max_results;
    const char *next_token;
};

/* Checks a tools/call's name and arguments (NULL or null: none). 0; -1 for an unknown
 * tool, a protocol error (*rpc_code -32602 and rpc_message); 1 for arguments the tool
 * refuses as a result (err, CQ_EINVALID: a wrong type, a value out of range, a memory
 * size that does not parse), which the model can correct. Free c with
 * cq_mcp_call_args_free in every case. */
int cq_mcp_parse_call(const char *name, json_t *arguments, struct cq_mcp_call_args *c,
                      int *rpc_code, char *rpc_message, size_t message_len, struct cq_error *err);
void cq_mcp_call_args_free(struct cq_mcp_call_args *c);

/* Runs tools/call; returns the CallToolResult (new reference), or NULL with
 * *rpc_code and rpc_message set for a protocol error (an unknown tool: JSON-RPC
 * -32602). on_output (may be NULL) gets executeCode's and executeCommand's output as
 * it comes; cancel (NULL: none) cuts the call short (worker.h). */
json_t *cq_mcp_call(struct cq_mcp_context *ctx, const char *name, json_t *arguments,
                    cq_stream_fn on_output, void *out_ctx, struct cq_cancel *cancel, int *rpc_code,
                    char *rpc_message, size_t message_len);

#endif
