/* fleet/config.c - one configuration format for codeq-dispatcher and codeq-worker.
 *
 * Every setting has one name, used as `name = value` in a file, CODEQ_NAME in the
 * environment and --name (with '-' for '_') on the command line, so that docs, compose
 * files and scripts never need a translation table. */
#define _GNU_SOURCE
#include "fleet/config.h"

#include <ctype.h>
#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "api/api.h"
#include "common/cleanup.h"
#include "common/units.h"

/* UINT0 takes 0 too (no limit), UINT does not; SIZE0 is a SIZE whose 0 means none. */
enum kind { STRING, UINT, SIZE, UINT0, SIZE0, LIST };

struct setting {
    const char *name;
    enum kind kind;
    size_t offset, size;
    const char *help;
};

#define STR(field, help)                                                                           \
    {                                                                                              \
#field, STRING, offsetof(struct cq_fleet_config, field),                                   \
            sizeof(((struct cq_fleet_config *)0)->field), help                                     \
    }
#define NUM(field, help)                                                                           \
    {                                                                                              \
#field, UINT, offsetof(struct cq_fleet_config, field), 0, help                             \
    }
#define SZ(field, help)                                                                            \
    {                                                                                              \
#field, SIZE, offsetof(struct cq_fleet_config, field), 0, help                             \
    }

/* The network settings: text, parsed by the worker core (worker/netconfig.c). */
#define NET(kind, field, help)                                                                     \
    {                                                                                              \
#field, kind, offsetof(struct cq_fleet_config, field),                                     \
            sizeof(((struct cq_fleet_config *)0)->field), help                                     \
    }

static const struct setting settings[] = {
    STR(brokers, "Kafka bootstrap servers"),
    STR(redis, "Redis host:port"),
    {"redis_prefix", STRING, offsetof(struct cq_fleet_config, prefix),
     sizeof(((struct cq_fleet_config *)0)->prefix), "prefix of every Redis key"},
    STR(request_topic, "topic clients send requests to"),
    STR(dlq_topic, "topic refused requests are dead-lettered to"),
    {"reply_topic_prefix", STRING, offsetof(struct cq_fleet_config, reply_prefix),
     sizeof(((struct cq_fleet_config *)0)->reply_prefix),
     "reply topics must start with it; the fleet writes to no other"},
    STR(worker_id, "this worker's id (its topic is codeq.worker.<id>)"),
    NUM(heartbeat_ms, "workers' heartbeat period (the same for all daemons); dead after 3 missed"),
    NUM(max_sessions, "sessions one worker runs at once"),
    NUM(warm_pool, "sandboxes a worker keeps ready"),
    {"warm_pool_max", UINT0, offsetof(struct cq_fleet_config, warm_pool_max), 0,
     "the most the warm pool grows to when starts come faster (0: 128 with fork_kernels, "
     "else warm_pool)"},
    STR(fork_kernels, "on: Python kernels are forked from a zygote that imported their "
                      "modules once (docs/zygote.md)"),
    {"memory_reserve", SIZE0, offsetof(struct cq_fleet_config, memory_reserve), 0,
     "host memory kept beyond sessions: the worker takes new sessions while MemAvailable "
     "less this holds one more (0: 256M, or 5% of a larger host)"},
    SZ(files_quota, "bytes of one session's files kept in Redis"),
    SZ(claim_threshold, "messages larger than this travel through Redis (claim check)"),
    NUM(claim_ttl, "seconds a large reply stays in Redis for its client"),
    STR(runtime_store, "this worker's store of runtime layers (unset: $CODEQ_RUNTIME_STORE, "
                       "else /var/lib/codeq/runtimes)"),
    SZ(layer_cache_max, "runtime layers larger than this are not kept in Redis (each worker "
                        "then builds its own)"),
    STR(log_level, "debug, info, warn or error"),
    STR(log_executions, "on: one info line per execution (outcome, duration); off: none"),
    STR(metrics_listen, "HOST:PORT (or :PORT) serving /metrics, /healthz and /readyz; "
                        "unset: none"),
    {"metrics_linger", UINT0, offsetof(struct cq_fleet_config, metrics_linger), 0,
     "seconds /metrics stays up after the daemon drained, so that a last scrape sees its "
     "final counts (sessions drained); a second SIGTERM ends it early (0: exit at once)"},
    STR(otlp_endpoint, "OTLP/HTTP collector spans are sent to "
                       "(http://HOST:4318/v1/traces); unset: no spans"),
    STR(keys_file, "tenants' keys (codeq tenant, codeq key), or redis (the keyring in Redis): only "
                   "signed requests are taken; "
                   "unset: keyless, one tenant, no signatures"),
    NUM(auth_window, "seconds a signed request stays acceptable (both ways: client clocks)"),
    {"tenant_max_sessions", UINT0, offsetof(struct cq_fleet_config, tenant_max_sessions), 0,
     "a tenant's live sessions, unless the keys file says (0: no limit)"},
    {"tenant_max_executions", UINT0, offsetof(struct cq_fleet_config, tenant_max_executions), 0,
     "a tenant's calls running code or commands at once (0: no limit)"},
    {"tenant_max_stored_bytes", SIZE0, offsetof(struct cq_fleet_config, tenant_max_stored_bytes), 0,
     "a tenant's workspace files kept in Redis (0: no limit)"},
    {"tenant_max_rps", UINT0, offsetof(struct cq_fleet_config, tenant_max_rps), 0,
     "a tenant's requests a second, over all dispatchers (0: no limit)"},
    STR(audit_topic, "topic of the audit log (a record per request and per call); "
                     "empty: no audit log"),
    STR(audit_key_file, "key that signs audit records (64 hex digits, mode 600); unset: "
                        "chained but unsigned"),
    STR(audit_content, "on: audit records hold code, commands and outputs (secrets!), not "
                       "only their SHA-256"),
    STR(master_key_file, "master key (64 hex digits, mode 600): encrypts what the fleet keeps "
                         "in Redis (files, states, env, code, replies); unset: plain text"),
    /* Redis authentication and TLS (check_redis() below). */
    STR(redis_user, "Redis ACL user to AUTH as; unset: Redis's user 'default'"),
    STR(redis_password,
        "Redis password; shows in the environment or process list: prefer the file"),
    STR(redis_password_file, "file holding the Redis password (read at each connection)"),
    STR(redis_tls, "on: connect to Redis over TLS"),
    STR(redis_tls_ca, "CA file Redis's certificate must chain to; unset: the system's CAs"),
    STR(redis_tls_cert, "client certificate for Redis (with redis_tls_key)"),
    STR(redis_tls_key, "private key of redis_tls_cert"),
    STR(redis_tls_server_name,
        "name Redis's certificate must carry (and SNI); unset: redis's host"),
    /* The network of the worker's sessions: text here, parsed by the worker core
     * (worker/netconfig.c), which names the setting in its refusals. */
    NET(LIST, network_modes, "network modes sessions may ask for: NONE, PUBLIC, ALLOWLIST"),
    NET(STRING, network_default, "mode of a session that names none"),
    NET(LIST, network_private, "private CIDRs sessions may reach (codeq's VPC mode)"),
    NET(LIST, network_allow_bounds, "what an allowlist may name"),
    NET(LIST, network_deny,
        "destinations refused in every mode, besides the fleet's Kafka and "
        "Redis"),
    NET(STRING, network_max_allow, "entries of one allowlist"),
    NET(STRING, network_max_pinned, "addresses resolution may pin per ALLOWLIST sandbox"),
    NET(STRING, network_max_rate, "bytes a second per sandbox, e.g. 10M"),
    NET(STRING, network_max_connections, "connections open at once per sandbox"),
    NET(STRING, dns, "resolver of the sandboxes (an IP address)"),
    NET(STRING, egress_netns, "network namespace PUBLIC and ALLOWLIST traffic leaves through"),
    NET(STRING, warm_pool_public, "PUBLIC sandboxes a worker keeps ready"),
    NET(STRING, warm_pool_allowlist, "ALLOWLIST sandboxes a worker keeps ready"),
};

/* Which source is being applied (list settings add within one, a later one replaces). */
static unsigned char current_source;

void cq_fleet_config_init(struct cq_fleet_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    snprintf(cfg->brokers, sizeof(cfg->brokers), "127.0.0.1:19092");
    snprintf(cfg->redis, sizeof(cfg->redis), "127.0.0.1:16379");
    snprintf(cfg->prefix, sizeof(cfg->prefix), "codeq:");
    snprintf(cfg->request_topic, sizeof(cfg->request_topic), "codeq.requests");
    snprintf(cfg->dlq_topic, sizeof(cfg->dlq_topic), "codeq.requests.dlq");
    snprintf(cfg->reply_prefix, sizeof(cfg->reply_prefix), "codeq.replies.");
    cfg->heartbeat_ms = 1000;
    cfg->max_sessions = CQ_WORKER_DEFAULT_MAX_SESSIONS;
    cfg->warm_pool = 2;
    cfg->files_quota = 256ULL << 20;
    /* Half of Kafka's default message.max.bytes (1 MB): the rest of a message and a
     * broker's own overhead fit beside it on any stock cluster. */
    cfg->claim_threshold = 512ULL << 10;
    cfg->claim_ttl = 900;
    cfg->layer_cache_max = 256ULL << 20;
    snprintf(cfg->log_level, sizeof(cfg->log_level), "info");
    snprintf(cfg->log_executions, sizeof(cfg->log_executions), "on");
    snprintf(cfg->fork_kernels, sizeof(cfg->fork_kernels), "off");
    cfg->auth_window = 300;
    snprintf(cfg->audit_topic, sizeof(cfg->audit_topic), "codeq.audit");
    snprintf(cfg->audit_content, sizeof(cfg->audit_content), "off");
    snprintf(cfg->redis_tls, sizeof(cfg->redis_tls), "off");
}

static const struct setting *find_setting(const char *name, size_t len)
{
    for (size_t i = 0; i < CQ_ARRAY_LEN(settings); i++)
        if (strlen(settings[i].name) == len && strncmp(settings[i].name, name, len) == 0)
            return &settings[i];
    return NULL;
}

static int apply(struct cq_fleet_config *cfg, const struct setting *s, const char *value,
                 const char *source, struct cq_error *err)
{
    char *field = (char *)cfg + s->offset;
    uint64_t n;
    switch (s->kind) {
    case STRING:
        if (strlen(value) >= s->size)
            return cq_error_set(err, CQ_EINVALID, "%s: %s is longer than %zu characters", source,
                                s->name, s->size - 1);
        /* A misspelt level would otherwise log at the default without a word. */
        if (strcmp(s->name, "log_level") == 0 && strcmp(value, "debug") != 0 &&
            strcmp(value, "info") != 0 && strcmp(value, "warn") != 0 && strcmp(value, "error") != 0)
            return cq_error_set(err, CQ_EINVALID, "%s: '%s' is not one of debug, info, warn, error",
                                source, value);
        snprintf(field, s->size, "%s", value);
        return 0;
    case UINT:
    case UINT0:
        if (cq_parse_uint(value, s->kind == UINT0 ? 0 : 1, 1000000, &n, err) < 0)
            return cq_error_prefix(err, "%s: %s", source, s->name);
        *(unsigned *)(void *)field = (unsigned)n;
        return 0;
    case SIZE:
    case SIZE0:
        if (cq_parse_size(value, 1ULL << 40, &n, err) < 0)
            return cq_error_prefix(err, "%s: %s", source, s->name);
        *(uint64_t *)(void *)field = n;
        return 0;
    case LIST: {
        size_t index = (size_t)(s - settings);
        bool add = cfg->list_source[index] == current_source && field[0] != '\0';
        size_t used = add ? strlen(field) : 0;
        if (used + (add ? 1 : 0) + strlen(value) >= s->size)
            return cq_error_set(err, CQ_EINVALID, "%s: %s is longer than %zu characters", source,
                                s->name, s->size - 1);
        snprintf(field + used, s->size - used, "%s%s", add ? "," : "", value);
        cfg->list_source[index] = current_source;
        return 0;
    }
    }
    return 0;
}

/* ---- Kafka security: kafka.<property> (config.h) -------------------------------------
 * Passed through to librdkafka by name, so that any of its security properties works
 * without a table here; only these prefixes pass: every other property is one the
 * fleet tunes itself (fleet/kafka.c), and `debug` would write secrets to the logs. */
static const char *const kafka_allowed[] = {"security.", "sasl.", "ssl.",
                                            "enable.ssl.certificate.verification"};

static bool kafka_allowed_name(const char *name)
{
    for (size_t i = 0; i < CQ_ARRAY_LEN(kafka_allowed); i++)
        if (strncmp(name, kafka_allowed[i], strlen(kafka_allowed[i])) == 0)
            return true;
    return false;
}

bool cq_fleet_kafka_secret(const char *name)
{
    return strstr(name, "password") != NULL || strstr(name, "secret") != NULL ||
           strcmp(name, "ssl.key.pem") == 0 || strcmp(name, "sasl.oauthbearer.config") == 0;
}

/* Sets one property on conf. librdkafka's refusal of a value quotes the value, so a
 * secret's is replaced by a sentence; an unknown name quotes only the name. */
static int kafka_conf_set(rd_kafka_conf_t *conf, const char *name, const char *value,
                          const char *source, struct cq_error *err)
{
    char why[256];
    rd_kafka_conf_res_t res = rd_kafka_conf_set(conf, name, value, why, sizeof(why));
    if (res == RD_KAFKA_CONF_OK)
        return 0;
    if (res == RD_KAFKA_CONF_INVALID && cq_fleet_kafka_secret(name))
        snprintf(why, sizeof(why), "kafka.%s: librdkafka refused the value (not shown: a secret)",
                 name);
    return cq_error_set(err, CQ_EINVALID, "%s: %s", source, why);
}

int cq_fleet_kafka_conf(const struct cq_fleet_config *cfg, struct rd_kafka_conf_s *conf,
                        struct cq_error *err)
{
    for (unsigned i = 0; i < cfg->n_kafka; i++)
        if (kafka_conf_set(conf, cfg->kafka[i].name, cfg->kafka[i].value, "kafka settings", err) <
            0)
            return -1;
    return 0;
}

/* A secret's file: its contents without the line end `echo` or an editor leaves. */
static int kafka_read_file(const char *path, char *out, size_t size, const char *source,
                           struct cq_error *err)
{
    cq_autofclose FILE *f = fopen(path, "re");
    if (f == NULL)
        return cq_error_sys(err, errno, "%s: open %s", source, path);
    size_t n = fread(out, 1, size, f);
    if (ferror(f))
        return cq_error_sys(err, EIO, "%s: read %s", source, path);
    if (n == size)
        return cq_error_set(err, CQ_EINVALID, "%s: %s is longer than %zu bytes", source, path,
                            size - 1);
    out[n] = '\0';
    while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == '\r'))
        out[--n] = '\0';
    /* An empty secret is a mistake (a file not yet written), not a password. */
    if (n == 0 || strlen(out) != n)
        return cq_error_set(err, CQ_EINVALID, "%s: %s is empty or holds a NUL byte", source, path);
    return 0;
}

/* kafka.<key> = value, key without "kafka."; "<property>_file" names a file holding the
 * value. The property is checked by librdkafka here, so that the error names where it
 * was set. */
static int kafka_setting(struct cq_fleet_config *cfg, const char *key, const char *value,
                         const char *source, struct cq_error *err)
{
    char name[sizeof(cfg->kafka[0].name)], v[sizeof(cfg->kafka[0].value)];
    size_t len = strlen(key);
    bool from_file = len > 5 && strcmp(key + len - 5, "_file") == 0;
    if (from_file)
        len -= 5;
    if (len >= sizeof(name))
        return cq_error_set(err, CQ_EINVALID, "%s: unknown Kafka property '%s'", source, key);
    memcpy(name, key, len);
    name[len] = '\0';
    if (!kafka_allowed_name(name))
        return cq_error_set(err, CQ_EINVALID,
                            "%s: '%s' is not a Kafka security property (only "
                            "security.protocol, sasl.*, ssl.* and "
                            "enable.ssl.certificate.verification pass through)",
                            source, name);
    if (from_file) {
        if (kafka_read_file(value, v, sizeof(v), source, err) < 0)
            return -1;
    } else if (snprintf(v, sizeof(v), "%s", value) >= (int)sizeof(v)) {
        return cq_error_set(err, CQ_EINVALID, "%s: kafka.%s is longer than %zu characters", source,
                            name, sizeof(v) - 1);
    }
    rd_kafka_conf_t *check = rd_kafka_conf_new();
    int rc = kafka_conf_set(check, name, v, source, err);
    rd_kafka_conf_destroy(check);
    if (rc < 0)
        return -1;
    unsigned i = 0;
    while (i < cfg->n_kafka && strcmp(cfg->kafka[i].name, name) != 0)
        i++;
    if (i == CQ_KAFKA_PROPS_MAX)
        return cq_error_set(err, CQ_EINVALID, "%s: more than %d kafka.* settings", source,
                            CQ_KAFKA_PROPS_MAX);
    if (i == cfg->n_kafka)
        cfg->n_kafka++;
    snprintf(cfg->kafka[i].name, sizeof(cfg->kafka[i].name), "%s", name);
    memcpy(cfg->kafka[i].value, v, sizeof(v));
    return 0;
}

/* CODEQ_KAFKA_<PROPERTY>[_FILE]. scripts/services' CODEQ_KAFKA_PORT, _VERSION, ... share
 * the prefix and are no properties: only names that map into an accepted prefix are
 * read (a misspelt property there is still refused, by librdkafka's check). */
static int kafka_environment(struct cq_fleet_config *cfg, struct cq_error *err)
{
    static const char prefix[] = "CODEQ_KAFKA_";
    for (char **e = environ; *e != NULL; e++) {
        const char *eq = strchr(*e, '=');
        size_t len = eq != NULL ? (size_t)(eq - *e) : 0;
        char var[96], key[96];
        if (strncmp(*e, prefix, sizeof(prefix) - 1) != 0 || len >= sizeof(var))
            continue;
        snprintf(var, sizeof(var), "%.*s", (int)len, *e);
        const char *rest = var + sizeof(prefix) - 1;
        size_t n = strlen(rest);
        bool from_file = n > 5 && strcmp(rest + n - 5, "_FILE") == 0;
        if (from_file)
            n -= 5;
        for (size_t i = 0; i < n; i++)
            key[i] = rest[i] == '_' ? '.' : (char)tolower((unsigned char)rest[i]);
        key[n] = '\0';
        if (!kafka_allowed_name(key))
            continue;
        if (from_file) {
            char direct[96];
            snprintf(direct, sizeof(direct), "%.*s", (int)(len - 5), var);
            if (getenv(direct) != NULL)
                return cq_error_set(err, CQ_EINVALID, "%s and %s are both set", direct, var);
            strcat(key, "_file");
        }
        if (kafka_setting(cfg, key, eq + 1, var, err) < 0)
            return -1;
    }
    return 0;
}
/* ---- end of Kafka security ---------------------------------------------------------- */

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    return s;
}

static int load_file(struct cq_fleet_config *cfg, const char *path, struct cq_error *err)
{
    cq_autofclose FILE *f = fopen(path, "re");
    if (f == NULL)
        return cq_error_sys(err, errno, "open config file %s", path);
    char line[1024];
    unsigned lineno = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        lineno++;
        /* A longer line would be read as two, the second with a wrong number. */
        if (strchr(line, '\n') == NULL && !feof(f))
            return cq_error_set(err, CQ_EINVALID, "%s:%u: line longer than %zu characters", path,
                                lineno, sizeof(line) - 2);
        char *hash = strchr(line, '#');
        if (hash != NULL)
            *hash = '\0';
        char *text = trim(line);
        if (*text == '\0')
            continue;
        char *eq = strchr(text, '=');
        char where[PATH_MAX + 32];
        snprintf(where, sizeof(where), "%s:%u", path, lineno);
        if (eq == NULL)
            return cq_error_set(err, CQ_EINVALID, "%s: expected 'name = value'", where);
        *eq = '\0';
        char *name = trim(text), *value = trim(eq + 1);
        if (strncmp(name, "kafka.", 6) == 0) {
            if (kafka_setting(cfg, name + 6, value, where, err) < 0)
                return -1;
            continue;
        }
        const struct setting *s = find_setting(name, strlen(name));
        if (s == NULL)
            return cq_error_set(err, CQ_EINVALID, "%s: unknown setting '%s'", where, name);
        if (apply(cfg, s, value, where, err) < 0)
            return -1;
    }
    return 0;
}

static int check_audit(struct cq_fleet_config *cfg, struct cq_error *err)
{
    if (strcmp(cfg->audit_content, "on") != 0 && strcmp(cfg->audit_content, "off") != 0)
        return cq_error_set(err, CQ_EINVALID, "audit_content: '%s' is neither on nor off",
                            cfg->audit_content);
    if (strcmp(cfg->log_executions, "on") != 0 && strcmp(cfg->log_executions, "off") != 0)
        return cq_error_set(err, CQ_EINVALID, "log_executions: '%s' is neither on nor off",
                            cfg->log_executions);
    if (strcmp(cfg->fork_kernels, "on") != 0 && strcmp(cfg->fork_kernels, "off") != 0)
        return cq_error_set(err, CQ_EINVALID, "fork_kernels: '%s' is neither on nor off",
                            cfg->fork_kernels);
    return 0;
}

/* The Redis settings as a whole, once every source was applied: a combination that
 * cannot be what was meant is refused at start rather than found at the first
 * connection (or never: TLS files given while TLS is off would be silently unused). */
static int check_redis(struct cq_fleet_config *cfg, struct cq_error *err)
{
    static const char *const on[] = {"on", "yes", "true", "1"};
    static const char *const off[] = {"off", "no", "false", "0"};
    const char *tls = NULL;
    for (size_t i = 0; i < CQ_ARRAY_LEN(on); i++) {
        if (strcasecmp(cfg->redis_tls, on[i]) == 0)
            tls = "on";
        else if (strcasecmp(cfg->redis_tls, off[i]) == 0)
            tls = "off";
    }
    if (tls == NULL)
        return cq_error_set(err, CQ_EINVALID, "redis_tls: '%s' is neither on nor off",
                            cfg->redis_tls);
    snprintf(cfg->redis_tls, sizeof(cfg->redis_tls), "%s", tls);
    if (strcmp(tls, "off") == 0 && (cfg->redis_tls_ca[0] || cfg->redis_tls_cert[0] ||
                                    cfg->redis_tls_key[0] || cfg->redis_tls_server_name[0]))
        return cq_error_set(
            err, CQ_EINVALID,
            "redis_tls_* settings are given but redis_tls is off: set redis_tls = on");
    if (!cfg->redis_tls_cert[0] != !cfg->redis_tls_key[0])
        return cq_error_set(err, CQ_EINVALID,
                            "redis_tls_cert and redis_tls_key go together: give both or neither");
    if (cfg->redis_password[0] && cfg->redis_password_file[0])
        return cq_error_set(err, CQ_EINVALID,
                            "redis_password and redis_password_file are both set: give one");
    if (cfg->redis_user[0] && !cfg->redis_password[0] && !cfg->redis_password_file[0])
        return cq_error_set(err, CQ_EINVALID,
                            "redis_user '%s' needs redis_password_file or redis_password",
                            cfg->redis_user);
    return 0;
}

int cq_fleet_config_load(struct cq_fleet_config *cfg, int argc, char **argv, bool *help,
                         struct cq_error *err)
{
    *help = false;
    /* The file first, wherever --config appears, so that flags override it. */
    const char *file = getenv("CODEQ_CONFIG");
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
            *help = true;
            return 0;
        }
        if (strncmp(arg, "--config=", 9) == 0)
            file = arg + 9;
        else if (strcmp(arg, "--config") == 0 && i + 1 < argc)
            file = argv[i + 1];
        /* A flag's value is never an option of its own: `--worker-id -h` names a
         * worker "-h" (or is refused later), it does not ask for help. */
        if (strncmp(arg, "--", 2) == 0 && strchr(arg, '=') == NULL)
            i++;
    }
    current_source = 1;
    if (file != NULL && file[0] != '\0' && load_file(cfg, file, err) < 0)
        return -1;
    current_source = 2;
    for (size_t i = 0; i < CQ_ARRAY_LEN(settings); i++) {
        char env[64] = "CODEQ_";
        for (size_t j = 0; settings[i].name[j] != '\0' && j + 7 < sizeof(env); j++)
            env[6 + j] = (char)toupper((unsigned char)settings[i].name[j]);
        const char *value = getenv(env);
        if (value != NULL && apply(cfg, &settings[i], value, env, err) < 0)
            return -1;
    }
    if (kafka_environment(cfg, err) < 0)
        return -1;
    current_source = 3;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strncmp(arg, "--", 2) != 0)
            return cq_error_set(err, CQ_EINVALID, "unexpected argument '%s'", arg);
        arg += 2;
        const char *eq = strchr(arg, '=');
        size_t len = eq != NULL ? (size_t)(eq - arg) : strlen(arg);
        bool is_config = len == 6 && strncmp(arg, "config", 6) == 0;
        char name[64];
        if (len >= sizeof(name))
            return cq_error_set(err, CQ_EINVALID, "unknown option '--%.*s'", (int)len, arg);
        for (size_t j = 0; j < len; j++)
            name[j] = arg[j] == '-' ? '_' : arg[j];
        name[len] = '\0';
        bool is_kafka = strncmp(name, "kafka.", 6) == 0;
        const struct setting *s = is_config || is_kafka ? NULL : find_setting(name, len);
        if (s == NULL && !is_config && !is_kafka)
            return cq_error_set(err, CQ_EINVALID, "unknown option '--%.*s'", (int)len, arg);
        const char *value = eq != NULL ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
        if (value == NULL)
            return cq_error_set(err, CQ_EINVALID, "--%.*s needs a value", (int)len, arg);
        if (is_config)
            continue;
        char source[80];
        snprintf(source, sizeof(source), "--%.*s", (int)len, arg);
        if (is_kafka) {
            if (kafka_setting(cfg, name + 6, value, source, err) < 0)
                return -1;
            continue;
        }
        if (apply(cfg, s, value, source, err) < 0)
            return -1;
    }
    return check_audit(cfg, err) < 0 ? -1 : check_redis(cfg, err);
}

/* Settings only codeq-worker reads; the dispatcher accepts them (one file can serve
 * both daemons) and ignores them. */
static bool worker_only(const struct setting *s)
{
    static const char *const names[] = {
        "worker_id",       "max_sessions",     "warm_pool",           "warm_pool_max",
        "fork_kernels",    "files_quota",      "claim_ttl",           "dns",
        "egress_netns",    "warm_pool_public", "warm_pool_allowlist", "runtime_store",
        "layer_cache_max", "memory_reserve"};
    for (size_t i = 0; i < CQ_ARRAY_LEN(names); i++)
        if (strcmp(s->name, names[i]) == 0)
            return true;
    return strncmp(s->name, "network_", 8) == 0;
}

/* What --help says of an unset network setting: the worker core's default. */
static const char *shown_default(const char *name)
{
    static const char *const defaults[][2] = {
        {"network_modes", "NONE"},
        {"network_default", "NONE"},
        {"network_private", "none"},
        {"network_allow_bounds", "any public destination"},
        {"network_deny", "none"},
        {"network_max_allow", "64"},
        {"network_max_pinned", "256"},
        {"network_max_rate", "0, no limit"},
        {"network_max_connections", "0, no limit"},
        {"dns", "the host's first nameserver"},
        {"egress_netns", "codeq's own, through pasta"},
        {"warm_pool_public", "1 when PUBLIC is allowed"},
        {"warm_pool_allowlist", "1 when ALLOWLIST is allowed"},
    };
    for (size_t i = 0; i < CQ_ARRAY_LEN(defaults); i++)
        if (strcmp(defaults[i][0], name) == 0)
            return defaults[i][1];
    return strcmp(name, "worker_id") == 0 ? "the host name" : "none";
}

static void usage_line(FILE *out, const struct cq_fleet_config *d, const struct setting *s)
{
    const char *field = (const char *)d + s->offset;
    char value[64];
    if (s->kind == STRING || s->kind == LIST)
        snprintf(value, sizeof(value), "%.63s", field);
    else if (s->kind == UINT || s->kind == UINT0)
        snprintf(value, sizeof(value), "%u", *(const unsigned *)(const void *)field);
    else if (*(const uint64_t *)(const void *)field == 0)
        snprintf(value, sizeof(value), "0");
    else if (*(const uint64_t *)(const void *)field % (1ULL << 20) == 0)
        snprintf(value, sizeof(value), "%lluM",
                 (unsigned long long)(*(const uint64_t *)(const void *)field >> 20));
    else
        snprintf(value, sizeof(value), "%lluK",
                 (unsigned long long)(*(const uint64_t *)(const void *)field >> 10));
    char flag[64];
    snprintf(flag, sizeof(flag), "%s", s->name);
    for (char *p = flag; *p; p++)
        if (*p == '_')
            *p = '-';
    fprintf(out, "  --%-15s %s (default: %s)\n", flag, s->help,
            value[0] ? value : shown_default(s->name));
}

void cq_fleet_config_usage(FILE *out, bool worker)
{
    struct cq_fleet_config d;
    cq_fleet_config_init(&d);
    fprintf(out, "settings (file: --config FILE or CODEQ_CONFIG; environment: CODEQ_<NAME>;\n"
                 "flags: --name VALUE; later sources win):\n");
    for (size_t i = 0; i < CQ_ARRAY_LEN(settings); i++)
        if (!worker_only(&settings[i]))
            usage_line(out, &d, &settings[i]);
    /* Kafka security (config.h): both daemons, every Kafka client. */
    fprintf(out, "Kafka security, on every Kafka client (librdkafka's properties; docs/fleet.md,\n"
                 "\"Kafka security\"; environment: CODEQ_KAFKA_<PROPERTY>, dots as underscores):\n"
                 "  --kafka.security.protocol P    plaintext, ssl, sasl_plaintext or sasl_ssl "
                 "(default: plaintext)\n"
                 "  --kafka.sasl.mechanism M       PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, ...\n"
                 "  --kafka.sasl.username U\n"
                 "  --kafka.sasl.password_file F   the password, read from F (or "
                 "--kafka.sasl.password)\n"
                 "  --kafka.ssl.ca.location F      CA certificates (PEM) to trust the brokers by\n"
                 "  --kafka.ssl.certificate.location F, --kafka.ssl.key.location F,\n"
                 "  --kafka.ssl.key.password_file F   a client certificate (mutual TLS)\n"
                 "  --kafka.<property> VALUE       any security.*, sasl.*, ssl.* property; "
                 "<property>_file\n"
                 "                                 reads it from a file; no other property "
                 "passes\n");
    if (!worker) {
        /* One file may configure both daemons: the workers' settings are accepted. */
        fprintf(out, "The workers' own settings (codeq-worker --help) are accepted and "
                     "ignored.\n");
        return;
    }
    fprintf(out, "codeq-worker only (codeq-dispatcher accepts and ignores them):\n");
    for (size_t i = 0; i < CQ_ARRAY_LEN(settings); i++)
        if (worker_only(&settings[i]))
            usage_line(out, &d, &settings[i]);
}

const char *cq_fleet_reply_topic_refused(const struct cq_fleet_config *cfg, const char *topic,
                                         const char *tenant)
{
    static const char worker_prefix[] = "codeq.worker.";
    size_t n = strlen(cfg->reply_prefix);
    if (n == 0 || strncmp(topic, cfg->reply_prefix, n) != 0)
        return "reply_topic must start with the fleet's reply topic prefix "
               "(reply_topic_prefix, codeq.replies. by default)";
    /* A tenant's replies go to its own topics only, which Kafka ACLs can then give it
     * alone (docs/fleet.md): never into a topic another tenant reads. */
    size_t t = tenant != NULL ? strlen(tenant) : 0;
    if (t > 0 &&
        (strncmp(topic + n, tenant, t) != 0 || topic[n + t] != '.' || topic[n + t + 1] == '\0'))
        return "reply_topic must start with the tenant's reply topic prefix "
               "(<reply_topic_prefix><tenant>., codeq.replies.<tenant>. by default)";
    if (strcmp(topic, cfg->request_topic) == 0 || strcmp(topic, cfg->dlq_topic) == 0 ||
        strncmp(topic, worker_prefix, sizeof(worker_prefix) - 1) == 0)
        return "reply_topic is one of the fleet's own topics";
    return NULL;
}

const char *cq_fleet_config_text(const struct cq_fleet_config *cfg, const char *name)
{
    const struct setting *s = find_setting(name, strlen(name));
    if (s == NULL || (s->kind != STRING && s->kind != LIST))
        return NULL;
    return (const char *)cfg + s->offset;
}

void cq_fleet_worker_topic(const char *worker_id, char *out, size_t len)
{
    snprintf(out, len, "codeq.worker.%s", worker_id);
}
