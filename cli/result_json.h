/* cli/result_json.h - worker results in AgentCore's JSON shape (an MCP CallToolResult:
 * content, structuredContent, isError), and session records. */
#ifndef CQ_CLI_RESULT_JSON_H
#define CQ_CLI_RESULT_JSON_H

#include <jansson.h>
#include "worker/worker.h"

/* json_dumps flags for whatever carries a result: 15 significant digits, enough for
 * every real codeq writes (executionTime counts microseconds, in milliseconds), so that
 * 8000.742 prints as 8000.742 and not as jansson's default 17 digits,
 * 8000.7420000000002. */
#define CQ_JSON_REALS JSON_REAL_PRECISION(15)

/* New reference, or NULL when out of memory. Blobs and images are base64. */
json_t *cq_result_to_json(const struct cq_result *r);
json_t *cq_session_to_json(const struct cq_session_info *info);
/* A time as AgentCore writes it: ISO 8601 in UTC with milliseconds. */
json_t *cq_json_iso_time(int64_t unix_ms);

#endif
