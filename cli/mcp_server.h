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
#include "cli/mcp_tools.h"

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
/* A message the transport parsed already (cq_mcp_parse_message returned 1 for it; the
 * caller still frees it). */
void cq_mcp_server_dispatch(struct cq_mcp_server *s, const struct cq_mcp_message *msg,
                            void *channel);
/* For a transport whose MCP sessions share state (codeq serve's /mcp): calls without a
 * sessionId run in dflt (the caller's, which outlives the server) instead of a default
 * session of the server's own, and owner (copied) decides which sessions the client
 * may name. Before the first message. */
void cq_mcp_server_share(struct cq_mcp_server *s, struct cq_mcp_default *dflt,
                         const struct cq_mcp_owner *owner);
/* Versions older than version (one of cq_mcp_protocol_versions) are not negotiated:
 * a client asking for one is answered the latest. Before the first message. */
void cq_mcp_server_oldest_version(struct cq_mcp_server *s, const char *version);
/* A JSON-RPC error without an id (e.g. a message too large to read), to channel. */
void cq_mcp_server_refuse(struct cq_mcp_server *s, void *channel, int code, const char *message);
/* Cancels every call in progress (their responses are not sent). */
void cq_mcp_server_cancel_all(struct cq_mcp_server *s);
/* Waits for the calls in progress (they are answered), stops the session's default
 * session and frees the server. */
void cq_mcp_server_free(struct cq_mcp_server *s);

#endif
