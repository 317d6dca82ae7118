/* cli/result_json.h - worker results in AgentCore's JSON shape (an MCP CallToolResult:
 * content, structuredContent, isError), and session records. */
#ifndef CQ_CLI_RESULT_JSON_H
#define CQ_CLI_RESULT_JSON_H

#include <jansson.h>
#include "worker/worker.h"

/* New reference, or NULL when out of memory. Blobs and images are base64. */
json_t *cq_result_to_json(const struct cq_result *r);
json_t *cq_session_to_json(const struct cq_session_info *info);

#endif
