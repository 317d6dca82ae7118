/* cli/mcp_tools.h - the MCP tool catalogue of `codeq mcp` and its mapping onto the
 * backend: AgentCore's nine tools and the four session tools. */
#ifndef CQ_CLI_MCP_TOOLS_H
#define CQ_CLI_MCP_TOOLS_H

#include <jansson.h>
#include <pthread.h>
#include "cli/backend.h"

struct cq_mcp_context {
    struct cq_backend *backend;   /* the embedded worker or the fleet */
    pthread_mutex_t default_lock; /* the connection's default session, made on first use */
    char default_session[CQ_SESSION_ID_MAX + 1];
};

/* The `tools` array of a tools/list answer. New reference. */
json_t *cq_mcp_tool_list(void);

/* Runs tools/call; returns the CallToolResult (new reference), or NULL with
 * *rpc_code and rpc_message set for a protocol error (unknown tool, arguments of the
 * wrong shape: JSON-RPC -32602). */
json_t *cq_mcp_call(struct cq_mcp_context *ctx, const char *name, json_t *arguments, int *rpc_code,
                    char *rpc_message, size_t message_len);

#endif
