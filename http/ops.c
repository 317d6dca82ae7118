/* http/ops.c - the operations endpoints: /metrics, /healthz, /readyz.
 *
 * /healthz says the process answers (a liveness probe restarts it when it does not);
 * /readyz says whether it can do its work now (Kafka and Redis reachable, a warm pool,
 * not draining: the daemon decides), so that a load balancer or an orchestrator stops
 * sending it work without killing it. Neither reveals more than a short reason: the
 * listener may be reachable by more people than the fleet's operators.
 */
#include "http/http.h"

#include <stdlib.h>
#include <string.h>

static void ops_handler(void *ctx, const struct cq_http_request *req, struct cq_http_response *resp)
{
    const struct cq_ops_config *cfg = ctx;
    if (strcmp(req->method, "GET") != 0 && strcmp(req->method, "HEAD") != 0) {
        resp->allow = "GET, HEAD";
        cq_http_respond(resp, 405, "only GET and HEAD\n");
        return;
    }
    if (strcmp(req->path, "/healthz") == 0) {
        cq_http_respond(resp, 200, "ok\n");
    } else if (strcmp(req->path, "/readyz") == 0) {
        char why[256] = "";
        if (cfg->ready == NULL || cfg->ready(cfg->ready_ctx, why, sizeof(why)) == 1)
            cq_http_respond(resp, 200, "ready\n");
        else
            cq_http_respond(resp, 503, "not ready: %s\n", why[0] != '\0' ? why : "unknown");
    } else if (strcmp(req->path, "/metrics") == 0 && cfg->metrics != NULL) {
        char *text = NULL;
        size_t len = 0;
        struct cq_error err;
        if (cq_metrics_render(cfg->metrics, &text, &len, &err) < 0) {
            cq_http_respond(resp, 500, "%s\n", err.msg);
            return;
        }
        resp->status = 200;
        resp->content_type = CQ_METRICS_CONTENT_TYPE;
        resp->body = text;
        resp->body_len = len;
    } else {
        cq_http_respond(resp, 404, "no such endpoint: /metrics, /healthz, /readyz\n");
    }
}

int cq_ops_start(const struct cq_ops_config *cfg, struct cq_http_server **out, struct cq_error *err)
{
    /* The handler reads cfg for the server's whole life: keep a copy of our own. */
    struct cq_ops_config *copy = malloc(sizeof(*copy));
    if (copy == NULL)
        return cq_error_sys(err, ENOMEM, "operations endpoints");
    *copy = *cfg;
    struct cq_http_config http = {
        .listen = cfg->listen,
        .handler = ops_handler,
        .ctx = copy,
        .free_ctx = free,
        .max_body = 4096,
        .max_connections = 16,
    };
    if (cq_http_start(&http, out, err) < 0) {
        free(copy);
        return cq_error_prefix(err, "operations endpoints");
    }
    return 0;
}
