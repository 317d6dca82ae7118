/* cli/cmd_mcp.c - `codeq mcp`: an MCP server on stdio (JSON-RPC 2.0, one message per
 * line; protocol 2024-11-05 to 2025-11-25, the client's when codeq speaks it) in front of
 * the embedded worker or of the fleet.
 *
 * The protocol is cli/mcp_server.c's; this is its stdio transport: it reads lines
 * while calls run on their threads (so a notifications/cancelled reaches the call it
 * names) and writes each message whole, one line each. At end of input the server
 * waits for calls in progress, stops the connection's default session and closes the
 * backend: the embedded worker's sessions end with it, while a fleet's sessions
 * started with startSession live until their time to live.
 */
#define _GNU_SOURCE
#include "cli/cli.h"
#include "cli/line_reader.h"
#include "cli/mcp_metrics.h"
#include "cli/mcp_server.h"
#include "cli/mcp_trace.h"
#include "common/units.h"

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A writeFiles of 100 MB arrives base64-encoded inside one line. */
#define MAX_LINE_BYTES (160ULL << 20)

/* The server's messages, one line each; the server never sends two at once. */
static void send_line(void *ctx, void *channel, const char *text, size_t len, bool last)
{
    (void)ctx, (void)channel, (void)last;
    if (text == NULL)
        return;
    fwrite(text, 1, len, stdout);
    fputc('\n', stdout);
    fflush(stdout);
}

/* Standard input for the line reader. */
static ssize_t read_stdin(void *ctx, void *buf, size_t len)
{
    (void)ctx;
    return read(STDIN_FILENO, buf, len);
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: codeq mcp [--warm-pool N] [--max-sessions N] [--fork-kernels]\n"
            "                 [--warm-pool-max N]\n"
            "       codeq mcp --brokers HOST:PORT[,...] [--request-topic TOPIC]\n"
            "\n"
            "Serves codeq's tools over MCP on standard input and output (JSON-RPC 2.0,\n"
            "one message per line; protocol 2024-11-05, 2025-03-26, 2025-06-18 or\n"
            "2025-11-25, as the client asks, else " CQ_MCP_PROTOCOL_LATEST
            "): AgentCore's executeCode,\n"
            "executeCommand, readFiles, writeFiles, listFiles, removeFiles,\n"
            "startCommandExecution, getTask, stopTask, and startSession, stopSession,\n"
            "getSession, listSessions. Logs go to standard error.\n"
            "\n"
            "By default the sessions run in this process (the embedded worker). With\n"
            "--brokers (or CODEQ_BROKERS) the server is a gateway to a codeq fleet: every\n"
            "call goes over Kafka to codeq-dispatcher and the workers (docs/fleet.md).\n"
            "\n"
            "options:\n"
            "  --warm-pool N          sessions kept ready with Python, numpy, pandas and\n"
            "                         matplotlib loaded (default 1; embedded only)\n"
            "  --max-sessions N       sessions at once (default %d; embedded only)\n"
            "  --fork-kernels         fork Python kernels from a zygote that imported\n"
            "                         their modules once (docs/zygote.md; root, embedded)\n"
            "  --warm-pool-max N      the most the warm pool grows to when starts come\n"
            "                         faster (default 128 with --fork-kernels, else\n"
            "                         --warm-pool: no growth; embedded only)\n"
            "  --brokers LIST         Kafka bootstrap servers of the fleet (CODEQ_BROKERS)\n"
            "  --request-topic TOPIC  the fleet's request topic (CODEQ_REQUEST_TOPIC;\n"
            "                         default codeq.requests)\n"
            "                         Payloads over 512 KiB go through the fleet's Redis:\n"
            "                         CODEQ_REDIS, CODEQ_REDIS_PREFIX (docs/fleet.md)\n"
            "  --metrics-listen ADDR  serve Prometheus metrics on HOST:PORT (PORT 0: any;\n"
            "                         CODEQ_METRICS_LISTEN): /metrics, /healthz, /readyz\n"
            "  --audit-log PATH       append an audit record per tool call to PATH (JSON\n"
            "                         lines, hash-chained; signed with CODEQ_AUDIT_KEY_FILE;\n"
            "                         codeq audit verify checks it; embedded only)\n"
            "  --credentials FILE     sign requests with the tenant key in FILE (tenant,\n"
            "                         key_id, secret; CODEQ_CREDENTIALS); a fleet with\n"
            "                         keys takes only signed requests (docs/security.md)\n"
            "  --tenant T, --key-id ID, --key-secret-file FILE\n"
            "                         the same one by one, over the file's (CODEQ_TENANT,\n"
            "                         CODEQ_KEY_ID, CODEQ_KEY_SECRET or\n"
            "                         CODEQ_KEY_SECRET_FILE); a secret is never an\n"
            "                         argument: ps shows arguments\n"
            "  --otlp-endpoint URL    export trace spans (codeq.mcp.call, codeq.kernel.run)\n"
            "                         to an OpenTelemetry collector over OTLP/HTTP, e.g.\n"
            "                         http://127.0.0.1:4318/v1/traces (CODEQ_OTLP_ENDPOINT);\n"
            "                         a tools/call's _meta.traceparent is continued and its\n"
            "                         result's _meta.traceparent names the call's span\n"
            "  -h, --help             show this help\n",
            CQ_WORKER_DEFAULT_MAX_SESSIONS);
    fprintf(out, "\nstartSession takes codeInterpreterIdentifier: a code interpreter (codeq\n"
                 "interpreter create) of the store $CODEQ_RUNTIME_STORE (embedded; a fleet's\n"
                 "of its Redis); those with a warm pool get it at start.\n");
    fprintf(out, "\nstartSession takes networkMode (NONE, PUBLIC, ALLOWLIST) and networkAllow;\n"
                 "these settings bound them (embedded only; a fleet's workers have their own).\n");
    cq_network_usage(out);
}

int cq_cmd_mcp(int argc, char **argv)
{
    enum {
        OPT_POOL = 256,
        OPT_MAX,
        OPT_BROKERS,
        OPT_TOPIC,
        OPT_AUDIT_LOG,
        OPT_METRICS,
        OPT_OTLP,
        OPT_FORK,
        OPT_POOL_MAX
    };
    static const struct option longopts[] = {
        {"warm-pool", required_argument, NULL, OPT_POOL},
        {"fork-kernels", no_argument, NULL, OPT_FORK},
        {"warm-pool-max", required_argument, NULL, OPT_POOL_MAX},
        {"max-sessions", required_argument, NULL, OPT_MAX},
        {"brokers", required_argument, NULL, OPT_BROKERS},
        {"request-topic", required_argument, NULL, OPT_TOPIC},
        CQ_SIGNING_LONGOPTS,
        CQ_NETWORK_LONGOPTS,
        {"audit-log", required_argument, NULL, OPT_AUDIT_LOG},
        {"metrics-listen", required_argument, NULL, OPT_METRICS},
        {"otlp-endpoint", required_argument, NULL, OPT_OTLP},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct cq_worker_config cfg;
    cq_worker_config_init(&cfg);
    cfg.warm_pool_size = 1;
    struct cq_error err;
    uint64_t value;
    const char *brokers = NULL, *request_topic = NULL, *audit_log = NULL;
    const char *metrics_listen = getenv("CODEQ_METRICS_LISTEN");
    const char *otlp_endpoint = getenv("CODEQ_OTLP_ENDPOINT");
    unsigned net_seen = 0;
    int net_rc = cq_network_environment("mcp", &cfg);
    if (net_rc != 0)
        return net_rc;
    opterr = 0;
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'h':
            usage(stdout);
            return 0;
        case OPT_POOL:
            if (cq_parse_uint(optarg, 0, 16, &value, &err) < 0) {
                fprintf(stderr, "codeq mcp: --warm-pool: %s\n", err.msg);
                return CQ_EXIT_USAGE;
            }
            cfg.warm_pool_size = (unsigned)value;
            break;
        case OPT_FORK:
            cfg.fork_kernels = true;
            break;
        case OPT_POOL_MAX:
            if (cq_parse_uint(optarg, 1, 256, &value, &err) < 0) {
                fprintf(stderr, "codeq mcp: --warm-pool-max: %s\n", err.msg);
                return CQ_EXIT_USAGE;
            }
            cfg.warm_pool_max = (unsigned)value;
            break;
        case OPT_MAX:
            if (cq_parse_uint(optarg, 1, 10000, &value, &err) < 0) {
                fprintf(stderr, "codeq mcp: --max-sessions: %s\n", err.msg);
                return CQ_EXIT_USAGE;
            }
            cfg.max_sessions = (unsigned)value;
            break;
        case OPT_BROKERS:
            brokers = optarg;
            break;
        case OPT_TOPIC:
            request_topic = optarg;
            break;
        case OPT_AUDIT_LOG:
            audit_log = optarg;
            break;
        case OPT_METRICS:
            metrics_listen = optarg;
            break;
        case OPT_OTLP:
            otlp_endpoint = optarg;
            break;
        case CQ_OPT_CREDENTIALS:
        case CQ_OPT_TENANT:
        case CQ_OPT_KEY_ID:
        case CQ_OPT_KEY_SECRET_FILE:
            cq_signing_option(c, optarg);
            break;
        default:
            if (cq_network_is_option(c)) {
                if ((net_rc = cq_network_option("mcp", &cfg, &net_seen, c, optarg)) != 0)
                    return net_rc;
                break;
            }
            fprintf(stderr, "codeq mcp: unknown option '%s'\n", argv[optind - 1]);
            usage(stderr);
            return CQ_EXIT_USAGE;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    if (cq_mcp_trace_start(otlp_endpoint, &err) < 0) {
        fprintf(stderr, "codeq mcp: --otlp-endpoint: %s\n", err.msg);
        return CQ_EXIT_USAGE;
    }
    struct cq_backend *backend = NULL;
    struct cq_mcp_metrics *metrics = NULL;
    if (metrics_listen != NULL && metrics_listen[0] != '\0' &&
        cq_mcp_metrics_start("mcp", metrics_listen, &cfg, &metrics, &err) < 0) {
        fprintf(stderr, "codeq mcp: %s\n", err.msg);
        return CQ_EXIT_USAGE;
    }
    if (brokers == NULL && getenv("CODEQ_BROKERS") == NULL)
        cq_rootless_notes(true);
    int rc = cq_backend_open(&cfg, brokers, request_topic, &backend, &err);
    if (rc == 0 && audit_log != NULL && (rc = cq_backend_audit_log(backend, audit_log, &err)) < 0)
        cq_backend_close(backend);
    if (rc < 0) {
        fprintf(stderr, "codeq mcp: %s\n", err.msg);
        cq_mcp_metrics_stop(metrics);
        cq_mcp_trace_stop();
        return CQ_EXIT_INTERNAL;
    }
    /* Interpreters with a warm pool get it now, not at their first session. */
    cq_backend_warm_interpreters(backend);
    struct cq_mcp_server *server = cq_mcp_server_new(backend, send_line, NULL);
    if (server == NULL) {
        fprintf(stderr, "codeq mcp: out of memory\n");
        cq_backend_close(backend);
        cq_mcp_metrics_stop(metrics);
        cq_mcp_trace_stop();
        return CQ_EXIT_INTERNAL;
    }
    struct cq_line_reader reader;
    cq_line_reader_init(&reader, MAX_LINE_BYTES, read_stdin, NULL);
    const char *line;
    size_t n;
    while ((rc = cq_line_reader_next(&reader, &line, &n)) != 0) {
        if (rc < 0) {
            cq_mcp_server_refuse(server, NULL, -32600,
                                 "request larger than the 160 MB limit; ignored");
            continue;
        }
        while (n > 0 && line[n - 1] == '\r')
            n--;
        if (n > 0)
            cq_mcp_server_handle(server, line, n, NULL);
    }
    cq_line_reader_free(&reader);
    cq_mcp_metrics_stopping(metrics);
    cq_mcp_server_free(server); /* answers the calls in progress first */
    cq_backend_close(backend);
    cq_mcp_metrics_stop(metrics); /* after the worker that counted in it */
    cq_mcp_trace_stop();          /* after the last call: its spans go too */
    return 0;
}
