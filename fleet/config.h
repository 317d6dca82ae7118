/* fleet/config.h - one configuration format for the fleet's daemons.
 *
 * Defaults, then a file (`key = value` lines, '#' comments), then CODEQ_<KEY>
 * environment variables, then --key flags: later sources win. */
#ifndef CQ_FLEET_CONFIG_H
#define CQ_FLEET_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "common/error.h"

/* ---- Kafka security: kafka.<property> ------------------------------------------------
 * librdkafka's security properties, set on every Kafka client the fleet makes (the
 * daemons' producers, consumers and admin requests, and the C client's):
 * `kafka.<property> = value` in a file, CODEQ_KAFKA_<PROPERTY> in the environment
 * (dots as underscores, upper case) and --kafka.<property> VALUE flags, later sources
 * winning as for every setting. kafka.<property>_file (CODEQ_KAFKA_<PROPERTY>_FILE)
 * reads the value from a file, for secrets. Only security.protocol, sasl.*, ssl.* and
 * enable.ssl.certificate.verification are accepted: the fleet tunes the rest of
 * librdkafka's settings itself, and a pass-through of those (idempotence, partitioner,
 * debug, which would log secrets) could break it without a word. docs/fleet.md,
 * "Kafka security". */
#define CQ_KAFKA_PROPS_MAX 16
struct cq_kafka_prop {
    char name[64];    /* librdkafka's name: "sasl.password" */
    char value[1024]; /* never logged or shown when cq_fleet_kafka_secret(name) */
};
struct cq_fleet_config;
struct rd_kafka_conf_s;
/* True for a property whose value is a secret (passwords, secrets, private keys). */
bool cq_fleet_kafka_secret(const char *name);
/* Sets cfg's kafka.* properties on conf; an error names the property, never a secret. */
int cq_fleet_kafka_conf(const struct cq_fleet_config *cfg, struct rd_kafka_conf_s *conf,
                        struct cq_error *err);
/* ---- end of Kafka security ---------------------------------------------------------- */

struct cq_fleet_config {
    char brokers[512];        /* brokers: Kafka bootstrap servers */
    char redis[256];          /* redis: host:port */
    char prefix[64];          /* redis_prefix: of every Redis key */
    char request_topic[200];  /* request_topic */
    char dlq_topic[200];      /* dlq_topic */
    char reply_prefix[64];    /* reply_topic_prefix: every reply topic starts with it */
    char worker_id[64];       /* worker_id (worker only): names its topic */
    unsigned heartbeat_ms;    /* heartbeat_ms: workers' heartbeat period */
    unsigned max_sessions;    /* max_sessions (worker) */
    unsigned warm_pool;       /* warm_pool (worker) */
    unsigned warm_pool_max;   /* warm_pool_max (worker): 0, the core's default */
    char fork_kernels[8];     /* fork_kernels (worker): on: from a zygote (docs/zygote.md) */
    uint64_t memory_reserve;  /* memory_reserve (worker): kept beyond sessions; 0 default */
    uint64_t files_quota;     /* files_quota: bytes of one session's files in Redis */
    uint64_t claim_threshold; /* claim_threshold: larger messages go by reference (Redis) */
    unsigned claim_ttl;       /* claim_ttl: seconds a reply's claim is kept */
    /* Code interpreters (docs/fleet.md, "Code interpreters in the fleet"). */
    char runtime_store[512];  /* runtime_store (worker): its local store of layers */
    uint64_t layer_cache_max; /* layer_cache_max: larger layers are not cached in Redis */
    char log_level[16];       /* log_level: debug, info, warn, error */
    /* Observability (docs/operations.md). */
    char log_executions[8];   /* log_executions: on: one info line per execution */
    char metrics_listen[256]; /* metrics_listen: HOST:PORT of /metrics, /healthz,
                               * /readyz; "" none */
    char otlp_endpoint[512];  /* otlp_endpoint: http(s)://HOST:PORT/v1/traces; "" no spans */
    unsigned metrics_linger;  /* metrics_linger: seconds /metrics stays up after a drain */
    /* Tenants and signed requests (docs/security.md). */
    char keys_file[256];  /* keys_file: the tenants' keys; "" keeps the fleet keyless */
    unsigned auth_window; /* auth_window: seconds a signature stays acceptable */
    /* Every tenant's quotas unless the keys file gives its own; 0: no limit. */
    unsigned tenant_max_sessions;     /* tenant_max_sessions: live sessions */
    unsigned tenant_max_executions;   /* tenant_max_executions: calls running at once */
    uint64_t tenant_max_stored_bytes; /* tenant_max_stored_bytes: files in Redis */
    unsigned tenant_max_rps;          /* tenant_max_rps: requests a second */
    /* The audit log (fleet/audit.h). */
    char audit_topic[200];    /* audit_topic: where records go; "" none */
    char audit_key_file[256]; /* audit_key_file: signs them; "" chained, unsigned */
    char audit_content[8];    /* audit_content: on: code, commands, outputs too */
    /* Encryption at rest (fleet/crypt.h): "" keeps what the fleet writes to Redis in
     * plain text, as it always was. */
    char master_key_file[512]; /* master_key_file: wraps the tenants' data keys */
    /* Redis authentication and TLS, for every Redis connection (daemons and clients).
     * The password is never logged; redis_password_file keeps it out of the
     * environment and the process list. */
    char redis_user[128];            /* redis_user: ACL user ("" = the default user) */
    char redis_password[256];        /* redis_password */
    char redis_password_file[512];   /* redis_password_file: read at each connection */
    char redis_tls[8];               /* redis_tls: "on" or "off" (normalized) */
    char redis_tls_ca[512];          /* redis_tls_ca: CA file ("" = the system's) */
    char redis_tls_cert[512];        /* redis_tls_cert: client certificate (optional) */
    char redis_tls_key[512];         /* redis_tls_key: its private key */
    char redis_tls_server_name[256]; /* redis_tls_server_name: SNI and name checked */
    struct cq_kafka_prop kafka[CQ_KAFKA_PROPS_MAX]; /* kafka.<property> (above) */
    unsigned n_kafka;
    /* The network of the worker's sessions (codeq-worker only), as text: the worker core
     * parses it (worker/netconfig.c; docs/configuration.md, "Network"). Lists are
     * comma-separated; a list setting repeated within one source adds to it, a later
     * source replaces it. Read with cq_fleet_config_text(). */
    char network_modes[64];
    char network_default[16];
    char network_private[4096];
    char network_allow_bounds[4096];
    char network_deny[4096];
    char network_max_allow[16];
    char network_max_pinned[16];
    char network_max_rate[32];
    char network_max_connections[16];
    char dns[64];
    char egress_netns[256];
    char warm_pool_public[8];
    char warm_pool_allowlist[8];
    unsigned char list_source[64]; /* (internal) which source last set each list */
};

void cq_fleet_config_init(struct cq_fleet_config *cfg);
/* Applies file, environment and flags; argv[optind...] must be --key value pairs.
 * Prints nothing; *help is set for -h/--help. */
int cq_fleet_config_load(struct cq_fleet_config *cfg, int argc, char **argv, bool *help,
                         struct cq_error *err);
/* The keys, their defaults and meaning, for --help: the worker's (worker: true) or the
 * dispatcher's, which names the workers' own settings only as accepted and ignored. */
void cq_fleet_config_usage(FILE *out, bool worker);
/* Why the fleet refuses to publish replies to topic, or NULL. A request names its own
 * reply topic, and the fleet writes there: only topics under the configured prefix are
 * clients' (codeq.replies. by default; a tenant's, codeq.replies.<tenant>.), and never
 * one of the fleet's own (the request topic, the dead-letter topic, a worker's topic),
 * so that a request cannot make the fleet write into its own plumbing, into any other
 * application's topics, or into another tenant's. tenant: "" or NULL in a keyless
 * fleet. */
const char *cq_fleet_reply_topic_refused(const struct cq_fleet_config *cfg, const char *topic,
                                         const char *tenant);
/* A text setting's value by name ("" unset), or NULL for no such text setting. */
const char *cq_fleet_config_text(const struct cq_fleet_config *cfg, const char *name);
/* The worker topic of a worker id: "codeq.worker.<id>". */
void cq_fleet_worker_topic(const char *worker_id, char *out, size_t len);

#endif
