/* cli/mcp_metrics.h - `codeq mcp --metrics-listen`: the embedded worker's metrics and
 * the operations endpoints (/metrics, /healthz, /readyz; http/http.h). */
#ifndef CQ_CLI_MCP_METRICS_H
#define CQ_CLI_MCP_METRICS_H

#include "worker/worker.h"

struct cq_mcp_metrics;

/* Makes the registry (cfg->metrics, for the worker core to count in), with
 * codeq_build_info{component} ("mcp", "serve"), and starts serving it on listen
 * (HOST:PORT; PORT 0 picks one). The port it listens on is written to standard error. */
int cq_mcp_metrics_start(const char *component, const char *listen, struct cq_worker_config *cfg,
                         struct cq_mcp_metrics **out, struct cq_error *err);
/* The server is shutting down: /readyz answers 503 from now on. */
void cq_mcp_metrics_stopping(struct cq_mcp_metrics *mm);
/* Stops serving and frees the registry: after the worker that counted in it is gone.
 * NULL is allowed. */
void cq_mcp_metrics_stop(struct cq_mcp_metrics *mm);

#endif
