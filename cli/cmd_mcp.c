/* cli/cmd_mcp.c - `codeq mcp`: an MCP server on stdio (JSON-RPC 2.0, one message per
 * line, protocol 2025-06-18) in front of the embedded worker or of the fleet.
 *
 * Each tools/call runs on a thread of its own, so that a long executeCode does not
 * hold up a getTask or stopTask; responses are written whole, one line each, under a
 * lock. Anything malformed gets a JSON-RPC error and the server carries on. At end of
 * input the server waits for calls in progress, stops the connection's default session
 * and closes the backend: the embedded worker's sessions end with it, while a fleet's
 * sessions started with startSession live until their time to live.
 */
#define _GNU_SOURCE
#include "cli/cli.h"
#include "cli/line_reader.h"
#include "cli/mcp_metrics.h"
#include "cli/mcp_tools.h"
#include "cli/mcp_trace.h"
#include "cli/result_json.h"
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

#define PROTOCOL_VERSION "2025-06-18"
/* A writeFiles of 100 MB arrives base64-encoded inside one line. */
#define MAX_LINE_BYTES (160ULL << 20)
/* Calls run on threads of their own; beyond this many at once, a call is refused
 * rather than letting a flood exhaust threads and memory. */
#define MAX_CALLS_RUNNING 64

#ifndef CQ_VERSION
#define CQ_VERSION "0.0.0"
#endif

static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t calls_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t calls_done = PTHREAD_COND_INITIALIZER;
static unsigned calls_running;

static void send_message(json_t *msg)
{
    char *text = json_dumps(msg, JSON_COMPACT | CQ_JSON_REALS);
    if (text == NULL)
        return;
    pthread_mutex_lock(&out_lock);
    fputs(text, stdout);
    fputc('\n', stdout);
    fflush(stdout);
    pthread_mutex_unlock(&out_lock);
    free(text);
}

/* id: the request's id (borrowed), or NULL for null. */
static void send_error(json_t *id, int code, const char *message)
{
    json_t *msg =
        json_pack("{s:s, s:O, s:{s:i, s:s}}", "jsonrpc", "2.0", "id", id != NULL ? id : json_null(),
                  "error", "code", code, "message", message);
    send_message(msg);
    json_decref(msg);
}

static void send_result(json_t *id, json_t *result)
{
    json_t *msg = json_pack("{s:s, s:O, s:o}", "jsonrpc", "2.0", "id", id, "result", result);
    send_message(msg);
    json_decref(msg);
}

struct call {
    struct cq_mcp_context *ctx;
    json_t *id;
    char *name;
    json_t *arguments;
    json_t *params; /* for _meta (its trace context) */
};

static void *call_main(void *arg)
{
    struct call *c = arg;
    int code = 0;
    char message[512] = "";
    struct cq_mcp_trace trace;
    cq_mcp_trace_begin(&trace, c->params);
    json_t *result = cq_mcp_call(c->ctx, c->name, c->arguments, &code, message, sizeof(message));
    cq_mcp_trace_end(&trace, c->name, result);
    if (result != NULL)
        send_result(c->id, result);
    else
        send_error(c->id, code != 0 ? code : -32603, message[0] ? message : "internal error");
    json_decref(c->id);
    json_decref(c->arguments);
    json_decref(c->params);
    free(c->name);
    free(c);
    pthread_mutex_lock(&calls_lock);
    if (--calls_running == 0)
        pthread_cond_broadcast(&calls_done);
    pthread_mutex_unlock(&calls_lock);
    return NULL;
}

static void start_call(struct cq_mcp_context *ctx, json_t *id, json_t *params)
{
    json_t *name = json_object_get(params, "name");
    if (!json_is_object(params) || !json_is_string(name)) {
        send_error(id, -32602, "tools/call needs params {name, arguments}");
        return;
    }
    struct call *c = calloc(1, sizeof(*c));
    if (c == NULL || (c->name = strdup(json_string_value(name))) == NULL) {
        free(c);
        send_error(id, -32603, "out of memory");
        return;
    }
    c->ctx = ctx;
    c->id = json_incref(id);
    c->arguments = json_incref(json_object_get(params, "arguments"));
    c->params = json_incref(params);
    pthread_mutex_lock(&calls_lock);
    bool busy = calls_running >= MAX_CALLS_RUNNING;
    if (!busy)
        calls_running++;
    pthread_mutex_unlock(&calls_lock);
    if (busy) {
        send_error(id, -32000, "server busy: too many calls in progress; retry later");
        json_decref(c->id);
        json_decref(c->arguments);
        json_decref(c->params);
        free(c->name);
        free(c);
        return;
    }
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_t thread;
    int rc = pthread_create(&thread, &attr, call_main, c);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        pthread_mutex_lock(&calls_lock);
        calls_running--;
        pthread_mutex_unlock(&calls_lock);
        send_error(id, -32603, "cannot start a thread for the call");
        json_decref(c->id);
        json_decref(c->arguments);
        json_decref(c->params);
        free(c->name);
        free(c);
    }
}

static void handle(struct cq_mcp_context *ctx, const char *line, size_t len)
{
    struct cq_mcp_message msg;
    int code = 0;
    char refusal[256];
    int rc = cq_mcp_parse_message(line, len, &msg, &code, refusal, sizeof(refusal));
    if (rc < 0)
        send_error(msg.id, code, refusal);
    if (rc <= 0) {
        cq_mcp_message_free(&msg);
        return;
    }
    json_t *id = msg.id;
    json_t *params = msg.params;
    const char *m = msg.method;
    if (id == NULL) { /* notifications: nothing to answer */
        cq_mcp_message_free(&msg);
        return;
    }
    if (strcmp(m, "initialize") == 0) {
        json_t *result = json_pack(
            "{s:s, s:{s:{s:b}}, s:{s:s, s:s}, s:s}", "protocolVersion", PROTOCOL_VERSION,
            "capabilities", "tools", "listChanged", 0, "serverInfo", "name", "codeq", "version",
            CQ_VERSION, "instructions",
            "codeq runs code in isolated, stateful sandboxes. Tools without a sessionId share "
            "this connection's default session.");
        send_result(id, result);
    } else if (strcmp(m, "ping") == 0) {
        send_result(id, json_object());
    } else if (strcmp(m, "tools/list") == 0) {
        send_result(id, json_pack("{s:o}", "tools", cq_mcp_tool_list()));
    } else if (strcmp(m, "tools/call") == 0) {
        start_call(ctx, id, params);
    } else {
        char text[256];
        snprintf(text, sizeof(text), "method not found: %s", m);
        send_error(id, -32601, text);
    }
    cq_mcp_message_free(&msg);
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
            "usage: codeq mcp [--warm-pool N] [--max-sessions N]\n"
            "       codeq mcp --brokers HOST:PORT[,...] [--request-topic TOPIC]\n"
            "\n"
            "Serves codeq's tools over MCP on standard input and output (JSON-RPC 2.0,\n"
            "one message per line, protocol " PROTOCOL_VERSION "): AgentCore's executeCode,\n"
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
    enum { OPT_POOL = 256, OPT_MAX, OPT_BROKERS, OPT_TOPIC, OPT_AUDIT_LOG, OPT_METRICS, OPT_OTLP };
    static const struct option longopts[] = {
        {"warm-pool", required_argument, NULL, OPT_POOL},
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
    struct cq_mcp_context ctx = {0};
    pthread_mutex_init(&ctx.default_lock, NULL);
    struct cq_mcp_metrics *metrics = NULL;
    if (metrics_listen != NULL && metrics_listen[0] != '\0' &&
        cq_mcp_metrics_start("mcp", metrics_listen, &cfg, &metrics, &err) < 0) {
        fprintf(stderr, "codeq mcp: %s\n", err.msg);
        return CQ_EXIT_USAGE;
    }
    int rc = cq_backend_open(&cfg, brokers, request_topic, &ctx.backend, &err);
    if (rc == 0 && audit_log != NULL &&
        (rc = cq_backend_audit_log(ctx.backend, audit_log, &err)) < 0)
        cq_backend_close(ctx.backend);
    if (rc < 0) {
        fprintf(stderr, "codeq mcp: %s\n", err.msg);
        cq_mcp_metrics_stop(metrics);
        cq_mcp_trace_stop();
        return CQ_EXIT_INTERNAL;
    }
    /* Interpreters with a warm pool get it now, not at their first session. */
    cq_backend_warm_interpreters(ctx.backend);
    struct cq_line_reader reader;
    cq_line_reader_init(&reader, MAX_LINE_BYTES, read_stdin, NULL);
    const char *line;
    size_t n;
    while ((rc = cq_line_reader_next(&reader, &line, &n)) != 0) {
        if (rc < 0) {
            send_error(NULL, -32600, "request larger than the 160 MB limit; ignored");
            continue;
        }
        while (n > 0 && line[n - 1] == '\r')
            n--;
        if (n > 0)
            handle(&ctx, line, n);
    }
    cq_line_reader_free(&reader);
    cq_mcp_metrics_stopping(metrics);
    pthread_mutex_lock(&calls_lock);
    while (calls_running > 0)
        pthread_cond_wait(&calls_done, &calls_lock);
    pthread_mutex_unlock(&calls_lock);
    /* The connection's default session is this server's own: in the fleet it would
     * otherwise outlive the gateway until its time to live ran out. */
    if (ctx.default_session[0] != '\0') {
        struct cq_session_info info;
        cq_backend_stop_session(ctx.backend, ctx.default_session, &info, &err);
    }
    cq_backend_close(ctx.backend);
    cq_mcp_metrics_stop(metrics); /* after the worker that counted in it */
    pthread_mutex_destroy(&ctx.default_lock);
    cq_mcp_trace_stop(); /* after the last call: its spans go too */
    return 0;
}
