/* cli/mcp_server.h - one MCP session's protocol handling, apart from its transport:
 * `codeq mcp` feeds it lines from stdin, an HTTP transport would feed it POST bodies.
 *
 * The server takes one JSON-RPC message at a time and answers through the transport's
 * send function, from the handling thread or from a call's own thread: tools/call runs
 * on a thread of its own so that a long executeCode does not hold up a getTask or a
 * cancellation. It negotiates the protocol version, cancels calls on
 * notifications/cancelled (no response is sent for them), and sends
 * notifications/progress with the output of a call whose request has
 * _meta.progressToken.
 */
#ifndef CQ_CLI_MCP_SERVER_H
#define CQ_CLI_MCP_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include "cli/backend.h"

/* The protocol versions codeq speaks, oldest first; the last is answered to a client
 * that asks for another. */
extern const char *const cq_mcp_protocol_versions[];
#define CQ_MCP_PROTOCOL_LATEST "2025-11-25"

/* A message for the client: text is one JSON-RPC message (len bytes, no newline), or
 * NULL when the message handled gets no answer (a notification, a client's response, a
 * cancelled request). channel is the one given to cq_mcp_server_handle with the
 * message this answers or reports on. last: nothing more goes to that channel (its
 * response, or NULL, was the last); an HTTP transport ends that POST's stream then.
 * Calls never overlap. */
typedef void (*cq_mcp_send_fn)(void *ctx, void *channel, const char *text, size_t len, bool last);

struct cq_mcp_server;

/* NULL when out of memory. b must outlive the server. */
struct cq_mcp_server *cq_mcp_server_new(struct cq_backend *b, cq_mcp_send_fn send, void *ctx);
/* One message as received (JSON text of len bytes). */
void cq_mcp_server_handle(struct cq_mcp_server *s, const char *text, size_t len, void *channel);
/* A JSON-RPC error without an id (e.g. a message too large to read), to channel. */
void cq_mcp_server_refuse(struct cq_mcp_server *s, void *channel, int code, const char *message);
/* Cancels every call in progress (their responses are not sent). */
void cq_mcp_server_cancel_all(struct cq_mcp_server *s);
/* Waits for the calls in progress (they are answered), stops the session's default
 * session and frees the server. */
void cq_mcp_server_free(struct cq_mcp_server *s);

#endif
