/* cli/mcp_metrics.c - see mcp_metrics.h. */
#define _GNU_SOURCE
#include "cli/mcp_metrics.h"
#include "cli/mcp_trace.h"
#include "http/http.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#ifndef CQ_VERSION
#define CQ_VERSION "0.0.0"
#endif

struct cq_mcp_metrics {
    struct cq_metrics *reg;
    struct cq_http_server *server;
    atomic_bool stopping;
};

static int ready(void *ctx, char *why, size_t why_size)
{
    struct cq_mcp_metrics *mm = ctx;
    if (atomic_load(&mm->stopping)) {
        snprintf(why, why_size, "shutting down");
        return 0;
    }
    return 1;
}

int cq_mcp_metrics_start(const char *component, const char *listen, struct cq_worker_config *cfg,
                         struct cq_mcp_metrics **out, struct cq_error *err)
{
    struct cq_mcp_metrics *mm = calloc(1, sizeof(*mm));
    if (mm == NULL)
        return cq_error_sys(err, ENOMEM, "metrics");
    if (cq_metrics_create(&mm->reg, err) < 0) {
        free(mm);
        return -1;
    }
    struct cq_metric *info =
        cq_metrics_gauge(mm->reg, "codeq_build_info", "codeq's version, as a label; always 1",
                         (const char *[]){"version", "component", NULL}, err);
    if (info == NULL) {
        cq_mcp_metrics_stop(mm);
        return -1;
    }
    cq_metric_set(info, (const char *[]){CQ_VERSION, component, NULL}, 1);
    struct cq_ops_config ops = {
        .listen = listen,
        .metrics = mm->reg,
        .ready = ready,
        .ready_ctx = mm,
    };
    /* The span exporter (--otlp-endpoint) started first: its drops count here too. */
    if (cq_mcp_trace_set_metrics(mm->reg, err) < 0 || cq_ops_start(&ops, &mm->server, err) < 0) {
        cq_mcp_metrics_stop(mm);
        return cq_error_prefix(err, "--metrics-listen %s", listen);
    }
    /* PORT 0 picked one: whoever scrapes must learn which. */
    fprintf(stderr, "codeq %s: metrics on port %u (/metrics, /healthz, /readyz)\n", component,
            (unsigned)cq_http_port(mm->server));
    cfg->metrics = mm->reg;
    *out = mm;
    return 0;
}

void cq_mcp_metrics_stopping(struct cq_mcp_metrics *mm)
{
    if (mm != NULL)
        atomic_store(&mm->stopping, true);
}

void cq_mcp_metrics_stop(struct cq_mcp_metrics *mm)
{
    if (mm == NULL)
        return;
    cq_http_stop(mm->server);
    cq_mcp_trace_set_metrics(NULL, NULL); /* the exporter outlives the registry */
    cq_metrics_destroy(mm->reg);
    free(mm);
}
