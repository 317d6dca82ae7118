/* cli/cmd_serve.c - `codeq serve`: AgentCore's data-plane REST API over HTTP(S), and MCP
 * over HTTP at /mcp, in front of the embedded worker or of the fleet (--brokers), for
 * the AgentCore SDKs and MCP clients unmodified (docs/agentcore.md, "codeq serve").
 *
 * The main thread only waits for SIGTERM or SIGINT: requests run on the listener's
 * connection threads. Both signals are blocked before any thread starts, so that every
 * thread inherits the mask and sigwait() here is the only place they are taken. On one,
 * the listener stops taking connections and waits for the requests in progress (a cell
 * runs to its end or its timeout), then the sessions this server started are stopped
 * (embedded; in front of a fleet only the /mcp default sessions, which are this
 * gateway's: the others are recorded in the fleet's Redis for every replica).
 */
#define _GNU_SOURCE
#include "cli/cli.h"
#include "cli/mcp_metrics.h"
#include "cli/mcp_trace.h"
#include "cli/serve.h"
#include "common/cleanup.h"
#include "common/fileutil.h"
#include "common/units.h"
#include "fleet/store.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define DEFAULT_LISTEN "127.0.0.1:8780"
/* writeFiles takes 100 MB per file, base64 in JSON: about 134 MB on the wire. */
#define DEFAULT_MAX_BODY        (160ULL << 20)
#define DEFAULT_MAX_CONNECTIONS 256
#define MAX_PEM_BYTES           (1u << 20)

static void usage(FILE *out)
{
    fprintf(out,
            "usage: codeq serve [--listen ADDR:PORT] (--keys FILE | --no-auth) [options]\n"
            "\n"
            "Serves AgentCore's code interpreter data plane over HTTP, so that the AgentCore\n"
            "SDKs (boto3's bedrock-agentcore client, bedrock-agentcore's CodeInterpreter and\n"
            "what is built on them) use codeq unmodified: point them at it with\n"
            "BEDROCK_AGENTCORE_DP_ENDPOINT=http://ADDR:PORT (boto3: endpoint_url).\n"
            "Its control plane (Create/Get/List/DeleteCodeInterpreter: the local store's\n"
            "code interpreters) answers at the same address: BEDROCK_AGENTCORE_CP_ENDPOINT.\n"
            "Requests are signed with SigV4: a key of the keys file is the client's access\n"
            "key id and its secret the secret access key (codeq tenant / codeq key make\n"
            "them); each key's tenant owns the sessions it starts. Logs go to standard error.\n"
            "\n"
            "MCP over HTTP (Streamable HTTP, protocol 2025-03-26 to 2025-11-25) at /mcp:\n"
            "the tools and results of codeq mcp, for clients in other processes. They send\n"
            "Authorization: Bearer KEY_ID:SECRET (a key of the keys file). Tools called\n"
            "without a sessionId share the tenant's default session across all its MCP\n"
            "sessions and processes; startSession gives a session of one's own.\n"
            "\n"
            "By default the sessions run in this process (the embedded worker). With\n"
            "--brokers (or CODEQ_BROKERS) the server is a gateway to a codeq fleet; who owns\n"
            "which session is kept in the fleet's Redis (CODEQ_REDIS, CODEQ_REDIS_*), so\n"
            "replicas of the gateway share their sessions.\n"
            "\n"
            "options:\n"
            "  --listen ADDR:PORT     where to listen (CODEQ_SERVE_LISTEN; default " DEFAULT_LISTEN
            ");\n"
            "                         PORT 0 picks a free one; the address is printed\n"
            "  --keys FILE            the keys file requests are verified against\n"
            "                         (CODEQ_KEYS_FILE; mode 600; read again when it changes);\n"
            "                         redis: the fleet's keyring in its Redis (CODEQ_REDIS,\n"
            "                         CODEQ_REDIS_PASSWORD_FILE, ...: codeq key --keys redis);\n"
            "                         --credentials FILE is the same option\n"
            "  --no-auth              take unsigned requests, all as one tenant: only with a\n"
            "                         loopback --listen address and no --keys\n"
            "  --tls-cert FILE, --tls-key FILE\n"
            "                         serve HTTPS with this certificate (chain) and key, PEM\n"
            "                         (the key file must be mode 600)\n"
            "  --max-body SIZE        largest request body (default 160M; past it: 413)\n"
            "  --max-connections N    connections at once (default %d); each runs one call\n"
            "  --idle-timeout S       close a connection idle this long, or whose request's\n"
            "                         headers take longer to arrive, or whose body then\n"
            "                         comes slower than 4 KiB/s (default 30)\n"
            "  --max-rate N           requests per second per tenant, in bursts of as many\n"
            "                         (default 0: no limit); past it: ThrottlingException\n"
            "  --mcp-max-sessions N   /mcp sessions per tenant at once (default %d)\n"
            "  --mcp-idle-timeout S   an /mcp session without requests or calls for S seconds\n"
            "                         ends, and so does a tenant's default session unused\n"
            "                         that long (default %d)\n"
            "  --allow-origin ORIGIN  a browser origin (https://app.example) /mcp takes\n"
            "                         besides loopback ones (repeatable); other origins: 403\n"
            "  --warm-pool N          sessions kept ready (default 1; embedded only)\n"
            "  --max-sessions N       sessions at once (default %d; embedded only)\n"
            "  --brokers LIST         Kafka bootstrap servers of the fleet (CODEQ_BROKERS)\n"
            "  --request-topic TOPIC  the fleet's request topic (CODEQ_REQUEST_TOPIC)\n"
            "  --tenant T, --key-id ID, --key-secret-file FILE\n"
            "                         the key this gateway signs fleet requests with\n"
            "                         (codeq mcp's; a fleet with keys needs one)\n"
            "  --metrics-listen ADDR  serve Prometheus metrics on HOST:PORT\n"
            "                         (CODEQ_METRICS_LISTEN): /metrics, /healthz, /readyz\n"
            "  --audit-log PATH       append an audit record per tool call (embedded only)\n"
            "  --otlp-endpoint URL    export trace spans over OTLP/HTTP (CODEQ_OTLP_ENDPOINT)\n"
            "  -h, --help             show this help\n"
            "\n"
            "codeq's per-call timeout rides in the signed header " CQ_SERVE_TIMEOUT_HEADER
            "\n(seconds): AgentCore's arguments have no field for it.\n",
            DEFAULT_MAX_CONNECTIONS, CQ_SERVE_MCP_MAX_SESSIONS, CQ_SERVE_MCP_IDLE_TIMEOUT_S,
            CQ_WORKER_DEFAULT_MAX_SESSIONS);
    cq_network_usage(out);
}

/* Whether listen's host is a loopback address (127/8, ::1, localhost): an empty host
 * means every address, and names other than localhost could resolve anywhere. */
static bool loopback(const char *listen)
{
    const char *colon = strrchr(listen, ':');
    if (colon == NULL)
        return false;
    char host[256];
    size_t n = (size_t)(colon - listen);
    if (n >= 2 && listen[0] == '[' && listen[n - 1] == ']') {
        listen++;
        n -= 2;
    }
    if (n == 0 || n >= sizeof(host))
        return false;
    memcpy(host, listen, n);
    host[n] = '\0';
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, host, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6);
    return strcasecmp(host, "localhost") == 0;
}

static char *read_pem(const char *path, bool secret, struct cq_error *err)
{
    cq_autoclose int fd =
        secret ? cq_open_private(path, "TLS key", err) : open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (!secret)
            cq_error_sys(err, errno, "open %s", path);
        return NULL;
    }
    uint8_t *data;
    size_t len;
    if (cq_read_fd_limit(fd, MAX_PEM_BYTES, &data, &len, err) < 0)
        return NULL;
    char *text = realloc(data, len + 1);
    if (text == NULL) {
        free(data);
        cq_error_sys(err, ENOMEM, "read %s", path);
        return NULL;
    }
    text[len] = '\0';
    return text;
}

/* The fleet's Redis, found as the fleet's clients find it (CODEQ_REDIS, the other
 * CODEQ_REDIS_* settings, or a CODEQ_CONFIG file): a gateway's replicas share their
 * sessions' owners there. */
static int open_owners(struct cq_store **out, struct cq_error *err)
{
    struct cq_fleet_config cfg;
    char *no_args[] = {(char *)"codeq", NULL};
    bool help = false;
    cq_fleet_config_init(&cfg);
    if (cq_fleet_config_load(&cfg, 1, no_args, &help, err) < 0)
        return -1;
    return cq_store_open(&cfg, out, err);
}

int cq_cmd_serve(int argc, char **argv)
{
    enum {
        OPT_LISTEN = 256,
        OPT_KEYS,
        OPT_NO_AUTH,
        OPT_TLS_CERT,
        OPT_TLS_KEY,
        OPT_MAX_BODY,
        OPT_MAX_CONN,
        OPT_MAX_RATE,
        OPT_IDLE_TIMEOUT,
        OPT_POOL,
        OPT_MAX,
        OPT_BROKERS,
        OPT_TOPIC,
        OPT_AUDIT_LOG,
        OPT_METRICS,
        OPT_OTLP,
        OPT_MCP_MAX,
        OPT_MCP_IDLE,
        OPT_ALLOW_ORIGIN,
    };
    static const struct option longopts[] = {
        {"listen", required_argument, NULL, OPT_LISTEN},
        {"keys", required_argument, NULL, OPT_KEYS},
        {"credentials", required_argument, NULL, OPT_KEYS},
        {"no-auth", no_argument, NULL, OPT_NO_AUTH},
        {"tls-cert", required_argument, NULL, OPT_TLS_CERT},
        {"tls-key", required_argument, NULL, OPT_TLS_KEY},
        {"max-body", required_argument, NULL, OPT_MAX_BODY},
        {"max-connections", required_argument, NULL, OPT_MAX_CONN},
        {"max-rate", required_argument, NULL, OPT_MAX_RATE},
        {"idle-timeout", required_argument, NULL, OPT_IDLE_TIMEOUT},
        {"warm-pool", required_argument, NULL, OPT_POOL},
        {"max-sessions", required_argument, NULL, OPT_MAX},
        {"brokers", required_argument, NULL, OPT_BROKERS},
        {"request-topic", required_argument, NULL, OPT_TOPIC},
        {"tenant", required_argument, NULL, CQ_OPT_TENANT},
        {"key-id", required_argument, NULL, CQ_OPT_KEY_ID},
        {"key-secret-file", required_argument, NULL, CQ_OPT_KEY_SECRET_FILE},
        CQ_NETWORK_LONGOPTS,
        {"audit-log", required_argument, NULL, OPT_AUDIT_LOG},
        {"metrics-listen", required_argument, NULL, OPT_METRICS},
        {"otlp-endpoint", required_argument, NULL, OPT_OTLP},
        {"mcp-max-sessions", required_argument, NULL, OPT_MCP_MAX},
        {"mcp-idle-timeout", required_argument, NULL, OPT_MCP_IDLE},
        {"allow-origin", required_argument, NULL, OPT_ALLOW_ORIGIN},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct cq_worker_config cfg;
    cq_worker_config_init(&cfg);
    cfg.warm_pool_size = 1;
    struct cq_error err;
    uint64_t value;
    const char *listen = getenv("CODEQ_SERVE_LISTEN");
    const char *keys = getenv("CODEQ_KEYS_FILE");
    const char *brokers = NULL, *request_topic = NULL, *audit_log = NULL;
    const char *tls_cert = NULL, *tls_key = NULL;
    const char *metrics_listen = getenv("CODEQ_METRICS_LISTEN");
    const char *otlp_endpoint = getenv("CODEQ_OTLP_ENDPOINT");
    bool no_auth = false;
    uint64_t max_body = DEFAULT_MAX_BODY;
    unsigned max_connections = DEFAULT_MAX_CONNECTIONS;
    unsigned max_rate = 0;
    unsigned idle_timeout = 30;
    unsigned mcp_max = 0, mcp_idle = 0;
    cq_autofree const char **origins = calloc((size_t)argc + 1, sizeof(*origins));
    size_t n_origins = 0;
    unsigned net_seen = 0;
    if (origins == NULL)
        return CQ_EXIT_INTERNAL;
    int net_rc = cq_network_environment("serve", &cfg);
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
        case OPT_LISTEN:
            listen = optarg;
            break;
        case OPT_KEYS:
            keys = optarg;
            break;
        case OPT_NO_AUTH:
            no_auth = true;
            break;
        case OPT_TLS_CERT:
            tls_cert = optarg;
            break;
        case OPT_TLS_KEY:
            tls_key = optarg;
            break;
        case OPT_MAX_BODY:
            if (cq_parse_size(optarg, 1ULL << 32, &max_body, &err) < 0 || max_body == 0)
                return cq_usage_error("serve", "--max-body: %s",
                                      max_body == 0 ? "must be more than 0" : err.msg);
            break;
        case OPT_MAX_CONN:
            if (cq_parse_uint(optarg, 1, 100000, &value, &err) < 0)
                return cq_usage_error("serve", "--max-connections: %s", err.msg);
            max_connections = (unsigned)value;
            break;
        case OPT_MAX_RATE:
            if (cq_parse_uint(optarg, 0, 1000000, &value, &err) < 0)
                return cq_usage_error("serve", "--max-rate: %s", err.msg);
            max_rate = (unsigned)value;
            break;
        case OPT_IDLE_TIMEOUT:
            if (cq_parse_uint(optarg, 1, 3600, &value, &err) < 0)
                return cq_usage_error("serve", "--idle-timeout: %s", err.msg);
            idle_timeout = (unsigned)value;
            break;
        case OPT_POOL:
            if (cq_parse_uint(optarg, 0, 16, &value, &err) < 0)
                return cq_usage_error("serve", "--warm-pool: %s", err.msg);
            cfg.warm_pool_size = (unsigned)value;
            break;
        case OPT_MAX:
            if (cq_parse_uint(optarg, 1, 10000, &value, &err) < 0)
                return cq_usage_error("serve", "--max-sessions: %s", err.msg);
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
        case OPT_MCP_MAX:
            if (cq_parse_uint(optarg, 1, 100000, &value, &err) < 0)
                return cq_usage_error("serve", "--mcp-max-sessions: %s", err.msg);
            mcp_max = (unsigned)value;
            break;
        case OPT_MCP_IDLE:
            if (cq_parse_uint(optarg, 1, 86400 * 7, &value, &err) < 0)
                return cq_usage_error("serve", "--mcp-idle-timeout: %s", err.msg);
            mcp_idle = (unsigned)value;
            break;
        case OPT_ALLOW_ORIGIN:
            /* An origin is a scheme and a host (and port), as browsers send it. */
            if ((strncmp(optarg, "http://", 7) != 0 && strncmp(optarg, "https://", 8) != 0) ||
                strchr(strchr(optarg, ':') + 3, '/') != NULL)
                return cq_usage_error("serve",
                                      "--allow-origin: '%s' is not an origin like "
                                      "https://app.example or http://host:8080",
                                      optarg);
            origins[n_origins++] = optarg;
            break;
        case CQ_OPT_TENANT:
        case CQ_OPT_KEY_ID:
        case CQ_OPT_KEY_SECRET_FILE:
            cq_signing_option(c, optarg);
            break;
        default:
            if (cq_network_is_option(c)) {
                if ((net_rc = cq_network_option("serve", &cfg, &net_seen, c, optarg)) != 0)
                    return net_rc;
                break;
            }
            return cq_usage_error("serve", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return cq_usage_error("serve", "unexpected argument '%s'", argv[optind]);
    if (listen == NULL || listen[0] == '\0')
        listen = DEFAULT_LISTEN;
    if (keys != NULL && keys[0] == '\0')
        keys = NULL;
    /* Unsigned requests can start sessions that run anything: only a client on this
     * machine may send them, and only when the operator says so explicitly. */
    if (keys == NULL && !no_auth)
        return cq_usage_error("serve", "requests must be authenticated: give --keys FILE "
                                       "(or --no-auth on a loopback address)");
    if (keys != NULL && no_auth)
        return cq_usage_error("serve", "--no-auth and --keys exclude each other");
    if (no_auth && !loopback(listen))
        return cq_usage_error("serve",
                              "--no-auth listens on loopback addresses only (127.0.0.1, "
                              "::1, localhost), not '%s'",
                              listen);
    if ((tls_cert == NULL) != (tls_key == NULL))
        return cq_usage_error("serve", "--tls-cert and --tls-key go together");

    cq_autofree char *cert_pem = NULL;
    cq_autofree char *key_pem = NULL;
    if (tls_cert != NULL && ((cert_pem = read_pem(tls_cert, false, &err)) == NULL ||
                             (key_pem = read_pem(tls_key, true, &err)) == NULL)) {
        fprintf(stderr, "codeq serve: %s\n", err.msg);
        return CQ_EXIT_USAGE;
    }
    struct cq_serve_auth *auth = NULL;
    if (keys != NULL && cq_serve_auth_open(keys, &auth, &err) < 0) {
        fprintf(stderr, "codeq serve: --keys: %s\n", err.msg);
        return CQ_EXIT_USAGE;
    }

    /* Before any thread: they all inherit the mask (see the top of this file). */
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
    signal(SIGPIPE, SIG_IGN);

    int rc = CQ_EXIT_INTERNAL;
    struct cq_mcp_metrics *metrics = NULL;
    struct cq_backend *backend = NULL;
    struct cq_store *store = NULL;
    struct cq_serve *serve = NULL;
    struct cq_http_server *http = NULL;
    if (cq_mcp_trace_start(otlp_endpoint, &err) < 0) {
        fprintf(stderr, "codeq serve: --otlp-endpoint: %s\n", err.msg);
        cq_serve_auth_close(auth);
        return CQ_EXIT_USAGE;
    }
    if (metrics_listen != NULL && metrics_listen[0] != '\0' &&
        cq_mcp_metrics_start("serve", metrics_listen, &cfg, &metrics, &err) < 0) {
        fprintf(stderr, "codeq serve: %s\n", err.msg);
        rc = CQ_EXIT_USAGE;
        goto out;
    }
    if (brokers == NULL && getenv("CODEQ_BROKERS") == NULL)
        cq_rootless_notes(true);
    if (cq_backend_open(&cfg, brokers, request_topic, &backend, &err) < 0 ||
        (audit_log != NULL && cq_backend_audit_log(backend, audit_log, &err) < 0)) {
        fprintf(stderr, "codeq serve: %s\n", err.msg);
        goto out;
    }
    cq_backend_warm_interpreters(backend);
    if (!cq_backend_embedded(backend) && open_owners(&store, &err) < 0) {
        fprintf(stderr,
                "codeq serve: --brokers: the fleet's Redis, where the gateway records "
                "whose sessions are whose: %s\n",
                err.msg);
        goto out;
    }
    struct cq_serve_config sc = {
        .backend = backend,
        .store = store,
        .auth = auth,
        .max_rate = max_rate,
        .local_store = cq_backend_embedded(backend),
        .default_network = cfg.netpolicy.default_mode,
        .mcp_max_sessions = mcp_max,
        .mcp_idle_timeout_s = mcp_idle,
        .allow_origins = origins,
    };
    if (cq_serve_create(&sc, &serve, &err) < 0) {
        fprintf(stderr, "codeq serve: %s\n", err.msg);
        goto out;
    }
    struct cq_http_config hc = {
        .listen = listen,
        .handler = cq_serve_handle,
        .ctx = serve,
        .max_body = (size_t)max_body,
        .max_connections = max_connections,
        /* A call holds its connection while its cell runs; idleness is counted
         * between reads and writes only, so a long cell is not cut off by it. */
        .idle_timeout_s = idle_timeout,
        .tls_cert_pem = cert_pem,
        .tls_key_pem = key_pem,
    };
    if (cq_http_start(&hc, &http, &err) < 0) {
        fprintf(stderr, "codeq serve: %s\n", err.msg);
        rc = CQ_EXIT_USAGE;
        goto out;
    }
    if (key_pem != NULL)
        explicit_bzero(key_pem, strlen(key_pem));
    /* The port as bound (PORT 0 picks one): what clients and tests read. */
    fprintf(stderr, "codeq serve: listening on %s://%.*s:%u (port %u)%s\n",
            cert_pem != NULL ? "https" : "http", (int)(strrchr(listen, ':') - listen), listen,
            (unsigned)cq_http_port(http), (unsigned)cq_http_port(http),
            auth == NULL ? ", without authentication" : "");
    int sig = 0;
    sigwait(&stop_signals, &sig);
    fprintf(stderr, "codeq serve: %s: finishing the calls in progress\n",
            sig == SIGINT ? "SIGINT" : "SIGTERM");
    cq_mcp_metrics_stopping(metrics);
    rc = 0;
out:
    cq_http_stop(http); /* waits for the requests in progress */
    cq_serve_free(serve);
    cq_store_close(store);
    if (backend != NULL)
        cq_backend_close(backend);
    cq_mcp_metrics_stop(metrics);
    cq_mcp_trace_stop();
    cq_serve_auth_close(auth);
    return rc;
}
