/* tests/unit/test_fleet_config.c - fleet/config.c: the daemons' settings, from
 * defaults, a file (--config FILE or CODEQ_CONFIG), CODEQ_<NAME> variables and
 * --name flags, later sources winning; and the clear refusal of unknown names and
 * bad values, naming the setting and where it came from.
 *
 * Tests change the environment: each runs in its own process (need_fork), and the
 * fixture first removes every CODEQ_ variable the loader reads. */
#define _GNU_SOURCE
#include "fleet/config.h"
#include "api/api.h"
#include "unit.h"

#include <librdkafka/rdkafka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *const variables[] = {
    "CODEQ_CONFIG",
    "CODEQ_BROKERS",
    "CODEQ_REDIS",
    "CODEQ_REDIS_PREFIX",
    "CODEQ_REQUEST_TOPIC",
    "CODEQ_DLQ_TOPIC",
    "CODEQ_WORKER_ID",
    "CODEQ_HEARTBEAT_MS",
    "CODEQ_MAX_SESSIONS",
    "CODEQ_WARM_POOL",
    "CODEQ_FILES_QUOTA",
    "CODEQ_LOG_LEVEL",
    "CODEQ_REPLY_TOPIC_PREFIX",
};

static struct cq_fleet_config cfg;
static struct cq_error err;
static bool help;
static char dir[64];
static int n_files;

static void setup(void)
{
    for (size_t i = 0; i < sizeof(variables) / sizeof(variables[0]); i++)
        unsetenv(variables[i]);
    /* Every CODEQ_KAFKA_ variable (scripts/services' ports too), collected first:
     * unsetenv changes environ. */
    char names[64][96];
    int n = 0;
    for (char **e = environ; *e != NULL && n < 64; e++)
        if (strncmp(*e, "CODEQ_KAFKA_", 12) == 0 && strchr(*e, '=') - *e < 96)
            snprintf(names[n++], sizeof(names[0]), "%.*s", (int)(strchr(*e, '=') - *e), *e);
    for (int i = 0; i < n; i++)
        unsetenv(names[i]);
    cq_fleet_config_init(&cfg);
    memset(&err, 0, sizeof(err));
    help = false;
    snprintf(dir, sizeof(dir), "/tmp/cq-fleet-config-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    n_files = 0;
}

static void teardown(void)
{
    char path[128];
    for (int i = 0; i < n_files; i++) {
        snprintf(path, sizeof(path), "%s/%d.conf", dir, i);
        unlink(path);
    }
    rmdir(dir);
}

/* Writes a config file with text; returns its path (static storage, one per call). */
static const char *config_file(const char *text)
{
    static char paths[8][128];
    ck_assert_int_lt(n_files, 8);
    char *path = paths[n_files];
    snprintf(path, sizeof(paths[0]), "%s/%d.conf", dir, n_files++);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    return path;
}

/* Loads with argv = {"codeq-worker", args..., NULL}. */
#define LOAD(...) load((char *[]){"codeq-worker", __VA_ARGS__, NULL})
static int load(char **argv)
{
    int argc = 0;
    while (argv[argc] != NULL)
        argc++;
    return cq_fleet_config_load(&cfg, argc, argv, &help, &err);
}

static void expect_loaded(int rc)
{
    ck_assert_msg(rc == 0, "refused: %s", err.msg);
    ck_assert(!help);
}

/* Refused with CQ_EINVALID and exactly that message. */
static void expect_refused(int rc, const char *message)
{
    ck_assert_msg(rc == -1, "accepted, expected '%s'", message);
    ck_assert_int_eq(err.code, CQ_EINVALID);
    ck_assert_str_eq(err.msg, message);
    memset(&err, 0, sizeof(err));
}

static void expect_defaults(const struct cq_fleet_config *c)
{
    ck_assert_str_eq(c->brokers, "127.0.0.1:19092");
    ck_assert_str_eq(c->redis, "127.0.0.1:16379");
    ck_assert_str_eq(c->prefix, "codeq:");
    ck_assert_str_eq(c->request_topic, "codeq.requests");
    ck_assert_str_eq(c->dlq_topic, "codeq.requests.dlq");
    ck_assert_str_eq(c->reply_prefix, "codeq.replies.");
    ck_assert_str_eq(c->worker_id, "");
    ck_assert_uint_eq(c->heartbeat_ms, 1000);
    ck_assert_uint_eq(c->max_sessions, CQ_WORKER_DEFAULT_MAX_SESSIONS);
    ck_assert_uint_eq(c->warm_pool, 2);
    ck_assert_uint_eq(c->warm_pool_max, 0);
    ck_assert_str_eq(c->fork_kernels, "off");
    ck_assert_uint_eq(c->files_quota, 256ULL << 20);
    ck_assert_str_eq(c->log_level, "info");
}

/* --- precedence ------------------------------------------------------------------------ */

START_TEST(defaults)
{
    struct cq_fleet_config c;
    memset(&c, 0x5a, sizeof(c)); /* every field is set, not left as it was */
    cq_fleet_config_init(&c);
    expect_defaults(&c);
    ck_assert_uint_eq(CQ_WORKER_DEFAULT_MAX_SESSIONS, 64);
    /* Loading with nothing to load changes nothing. */
    help = true;
    expect_loaded(load((char *[]){"codeq-worker", NULL}));
    expect_defaults(&cfg);
}
END_TEST

START_TEST(file_overrides_defaults)
{
    const char *path = config_file("# the fleet of tests\n"
                                   "\n"
                                   "brokers = kafka-1:9092,kafka-2:9092\n"
                                   "  redis=redis:6379  \n"
                                   "redis_prefix = t:   # a comment after a value\n"
                                   "\tworker_id\t=\tw-7\n"
                                   "heartbeat_ms = 250\n"
                                   "max_sessions = 8\n"
                                   "warm_pool = 1\n"
                                   "files_quota = 1.5G\n"
                                   "log_level = debug\n"
                                   "request_topic = in\n"
                                   "dlq_topic = dead\n"
                                   "   # indented comment\n");
    expect_loaded(LOAD("--config", (char *)path));
    ck_assert_str_eq(cfg.brokers, "kafka-1:9092,kafka-2:9092");
    ck_assert_str_eq(cfg.redis, "redis:6379");
    ck_assert_str_eq(cfg.prefix, "t:");
    ck_assert_str_eq(cfg.worker_id, "w-7");
    ck_assert_uint_eq(cfg.heartbeat_ms, 250);
    ck_assert_uint_eq(cfg.max_sessions, 8);
    ck_assert_uint_eq(cfg.warm_pool, 1);
    ck_assert_uint_eq(cfg.files_quota, 1610612736ULL);
    ck_assert_str_eq(cfg.log_level, "debug");
    ck_assert_str_eq(cfg.request_topic, "in");
    ck_assert_str_eq(cfg.dlq_topic, "dead");
}
END_TEST

START_TEST(file_values_keep_equals_and_lose_comments)
{
    /* The first '=' separates; '#' starts a comment anywhere, even in a value. */
    const char *path = config_file("brokers = a=b\nredis = host#6379\n");
    expect_loaded(LOAD("--config", (char *)path));
    ck_assert_str_eq(cfg.brokers, "a=b");
    ck_assert_str_eq(cfg.redis, "host");
    /* Settings the file does not name keep their defaults. */
    ck_assert_str_eq(cfg.prefix, "codeq:");
    ck_assert_uint_eq(cfg.heartbeat_ms, 1000);
}
END_TEST

START_TEST(file_named_by_the_environment)
{
    const char *path = config_file("worker_id = from-env-file\n");
    setenv("CODEQ_CONFIG", path, 1);
    expect_loaded(LOAD(NULL));
    ck_assert_str_eq(cfg.worker_id, "from-env-file");
    /* An empty CODEQ_CONFIG names no file. */
    cq_fleet_config_init(&cfg);
    setenv("CODEQ_CONFIG", "", 1);
    expect_loaded(LOAD(NULL));
    expect_defaults(&cfg);
}
END_TEST

START_TEST(config_flag_beats_config_variable)
{
    const char *by_env = config_file("redis = env-file:1\n");
    const char *by_flag = config_file("brokers = flag-file:2\n");
    setenv("CODEQ_CONFIG", by_env, 1);
    expect_loaded(LOAD("--config", (char *)by_flag));
    ck_assert_str_eq(cfg.brokers, "flag-file:2");
    ck_assert_str_eq(cfg.redis, "127.0.0.1:16379"); /* the other file was not read */
    /* The last --config wins. */
    cq_fleet_config_init(&cfg);
    expect_loaded(LOAD("--config", (char *)by_env, "--config", (char *)by_flag));
    ck_assert_str_eq(cfg.brokers, "flag-file:2");
    ck_assert_str_eq(cfg.redis, "127.0.0.1:16379");
    /* --config=FILE is the same flag. */
    cq_fleet_config_init(&cfg);
    char flag[160];
    snprintf(flag, sizeof(flag), "--config=%s", by_env);
    expect_loaded(LOAD(flag));
    ck_assert_str_eq(cfg.redis, "env-file:1");
}
END_TEST

START_TEST(environment_overrides_file)
{
    const char *path = config_file("brokers = file:1\nheartbeat_ms = 250\nredis_prefix = f:\n"
                                   "files_quota = 1M\nlog_level = warn\n");
    setenv("CODEQ_BROKERS", "env:2", 1);
    setenv("CODEQ_HEARTBEAT_MS", "500", 1);
    setenv("CODEQ_REDIS_PREFIX", "e:", 1); /* the name, not the field */
    setenv("CODEQ_FILES_QUOTA", "64K", 1);
    expect_loaded(LOAD("--config", (char *)path));
    ck_assert_str_eq(cfg.brokers, "env:2");
    ck_assert_uint_eq(cfg.heartbeat_ms, 500);
    ck_assert_str_eq(cfg.prefix, "e:");
    ck_assert_uint_eq(cfg.files_quota, 65536);
    ck_assert_str_eq(cfg.log_level, "warn"); /* the file's, no variable */
    /* A variable set to "" is a value, not an absence. */
    setenv("CODEQ_WORKER_ID", "", 1);
    snprintf(cfg.worker_id, sizeof(cfg.worker_id), "before");
    expect_loaded(LOAD(NULL));
    ck_assert_str_eq(cfg.worker_id, "");
}
END_TEST

START_TEST(flags_override_everything)
{
    const char *path = config_file("brokers = file\nmax_sessions = 3\nwarm_pool = 3\n"
                                   "log_level = warn\n");
    setenv("CODEQ_BROKERS", "env", 1);
    setenv("CODEQ_MAX_SESSIONS", "4", 1);
    setenv("CODEQ_LOG_LEVEL", "error", 1);
    /* --config after the flags: the file is still read first. */
    expect_loaded(LOAD("--brokers", "flag", "--max-sessions=5", "--redis-prefix",
                       "p:", "--files-quota", "2G", "--config", (char *)path));
    ck_assert_str_eq(cfg.brokers, "flag");
    ck_assert_uint_eq(cfg.max_sessions, 5);
    ck_assert_str_eq(cfg.prefix, "p:");
    ck_assert_uint_eq(cfg.files_quota, 2ULL << 30);
    ck_assert_str_eq(cfg.log_level, "error");  /* variable over file */
    ck_assert_uint_eq(cfg.warm_pool, 3);       /* file over default */
    ck_assert_uint_eq(cfg.heartbeat_ms, 1000); /* default */
    /* The last of two flags wins; --name=value may be empty. */
    expect_loaded(LOAD("--worker-id", "a", "--worker-id=b", "--dlq-topic="));
    ck_assert_str_eq(cfg.worker_id, "b");
    ck_assert_str_eq(cfg.dlq_topic, "");
}
END_TEST

/* The network settings are text here (the worker core parses them): a list repeated in
 * one source adds to it, a later source replaces it. */
START_TEST(network_lists_add_within_a_source)
{
    const char *path = config_file("network_deny = 198.51.100.1\nnetwork_deny = 198.51.100.2\n"
                                   "network_private = 10.0.0.0/8\negress_netns = /run/netns/x\n");
    setenv("CODEQ_NETWORK_PRIVATE", "172.16.0.0/12", 1);
    expect_loaded(LOAD("--config", (char *)path, "--network-modes", "NONE", "--network-modes",
                       "PUBLIC", "--dns=203.0.113.53"));
    unsetenv("CODEQ_NETWORK_PRIVATE");
    ck_assert_str_eq(cfg.network_deny, "198.51.100.1,198.51.100.2");
    ck_assert_str_eq(cfg.network_private, "172.16.0.0/12"); /* the variable replaced the file */
    ck_assert_str_eq(cfg.network_modes, "NONE,PUBLIC");
    ck_assert_str_eq(cq_fleet_config_text(&cfg, "egress_netns"), "/run/netns/x");
    ck_assert_str_eq(cq_fleet_config_text(&cfg, "dns"), "203.0.113.53");
    ck_assert_str_eq(cq_fleet_config_text(&cfg, "network_max_rate"), "");
    ck_assert_ptr_null(cq_fleet_config_text(&cfg, "max_sessions"));
    ck_assert_ptr_null(cq_fleet_config_text(&cfg, "no_such_setting"));
}
END_TEST

/* --- help ---------------------------------------------------------------------------------- */

START_TEST(help_stops_before_anything_is_read)
{
    expect_loaded(LOAD("--brokers", "x"));
    ck_assert(!help);
    cq_fleet_config_init(&cfg);
    ck_assert_int_eq(LOAD("--help"), 0);
    ck_assert(help);
    help = false;
    ck_assert_int_eq(LOAD("-h"), 0);
    ck_assert(help);
    /* Before anything is applied or checked: a bad flag, a missing file, a bad variable. */
    setenv("CODEQ_HEARTBEAT_MS", "soon", 1);
    help = false;
    ck_assert_int_eq(LOAD("--brokers", "x", "--bogus", "--config", "/nonexistent/x.conf", "-h"), 0);
    ck_assert(help);
    expect_defaults(&cfg);
    /* A flag's value is not an option: "-h" as a worker id does not ask for help. */
    unsetenv("CODEQ_HEARTBEAT_MS");
    help = false;
    expect_loaded(LOAD("--worker-id", "-h"));
    ck_assert_str_eq(cfg.worker_id, "-h");
}
END_TEST

/* A request names the topic the fleet writes its replies to: only clients' topics. */
START_TEST(reply_topics_are_refused_outside_the_prefix_and_the_fleets_own)
{
    expect_loaded(LOAD(NULL));
    ck_assert_ptr_null(cq_fleet_reply_topic_refused(&cfg, "codeq.replies.abc123", ""));
    ck_assert_str_eq(cq_fleet_reply_topic_refused(&cfg, "orders", ""),
                     "reply_topic must start with the fleet's reply topic prefix "
                     "(reply_topic_prefix, codeq.replies. by default)");
    ck_assert_ptr_nonnull(cq_fleet_reply_topic_refused(&cfg, "codeq.replie", ""));
    ck_assert_ptr_nonnull(cq_fleet_reply_topic_refused(&cfg, "", ""));
    /* The fleet's own topics, even when the prefix would let them through. */
    setenv("CODEQ_REPLY_TOPIC_PREFIX", "codeq.", 1);
    expect_loaded(LOAD(NULL));
    ck_assert_str_eq(cfg.reply_prefix, "codeq.");
    ck_assert_ptr_null(cq_fleet_reply_topic_refused(&cfg, "codeq.replies.x", ""));
    ck_assert_str_eq(cq_fleet_reply_topic_refused(&cfg, "codeq.requests", ""),
                     "reply_topic is one of the fleet's own topics");
    ck_assert_ptr_nonnull(cq_fleet_reply_topic_refused(&cfg, "codeq.requests.dlq", ""));
    ck_assert_ptr_nonnull(cq_fleet_reply_topic_refused(&cfg, "codeq.worker.w1", ""));
    /* An empty prefix refuses everything rather than allowing everything. */
    expect_loaded(LOAD("--reply-topic-prefix="));
    ck_assert_ptr_nonnull(cq_fleet_reply_topic_refused(&cfg, "codeq.replies.x", ""));
}
END_TEST

/* A tenant's replies go to its own topics only: codeq.replies.<tenant>.<anything>. */
START_TEST(a_tenants_reply_topics_are_under_its_own_prefix)
{
    expect_loaded(LOAD(NULL));
    ck_assert_ptr_null(cq_fleet_reply_topic_refused(&cfg, "codeq.replies.acme.x1", "acme"));
    ck_assert_ptr_null(cq_fleet_reply_topic_refused(&cfg, "codeq.replies.acme.x1", NULL));
    const char *want = "reply_topic must start with the tenant's reply topic prefix "
                       "(<reply_topic_prefix><tenant>., codeq.replies.<tenant>. by default)";
    ck_assert_str_eq(cq_fleet_reply_topic_refused(&cfg, "codeq.replies.x1", "acme"), want);
    /* Another tenant's, one whose name starts with this one's, and the bare prefix. */
    ck_assert_str_eq(cq_fleet_reply_topic_refused(&cfg, "codeq.replies.globex.x1", "acme"), want);
    ck_assert_str_eq(cq_fleet_reply_topic_refused(&cfg, "codeq.replies.acme2.x1", "acme"), want);
    ck_assert_str_eq(cq_fleet_reply_topic_refused(&cfg, "codeq.replies.acme.", "acme"), want);
    ck_assert_str_eq(cq_fleet_reply_topic_refused(&cfg, "codeq.replies.acme", "acme"), want);
}
END_TEST

START_TEST(overlong_file_lines_are_refused)
{
    char text[1200];
    memset(text, 'x', sizeof(text));
    memcpy(text, "brokers = ", 10);
    text[sizeof(text) - 2] = '\n';
    text[sizeof(text) - 1] = '\0';
    const char *path = config_file(text);
    char expected[256];
    snprintf(expected, sizeof(expected), "%s:1: line longer than 1022 characters", path);
    expect_refused(LOAD("--config", (char *)path), expected);
}
END_TEST

/* The usage text of one daemon (worker: codeq-worker's), malloc'd. */
static char *usage_of(bool worker)
{
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    ck_assert_ptr_nonnull(out);
    cq_fleet_config_usage(out, worker);
    fclose(out);
    return text;
}

/* Expects each of lines in text, in this order. */
static void expect_in_order(const char *text, const char *const *lines, size_t n)
{
    const char *at = text;
    for (size_t i = 0; i < n; i++) {
        const char *found = strstr(at, lines[i]);
        ck_assert_msg(found != NULL, "usage lacks '%s' (after the previous line):\n%s", lines[i],
                      text);
        at = found + strlen(lines[i]);
    }
}

static const char *const shared_lines[] = {
    "file: --config FILE or CODEQ_CONFIG; environment: CODEQ_<NAME>;",
    "  --brokers         Kafka bootstrap servers (default: 127.0.0.1:19092)\n",
    "  --redis           Redis host:port (default: 127.0.0.1:16379)\n",
    "  --redis-prefix    prefix of every Redis key (default: codeq:)\n",
    "  --request-topic   topic clients send requests to (default: codeq.requests)\n",
    "  --dlq-topic       topic refused requests are dead-lettered to (default: "
    "codeq.requests.dlq)\n",
    "  --heartbeat-ms    workers' heartbeat period (the same for all daemons); dead after 3 "
    "missed (default: 1000)\n",
    "  --claim-threshold messages larger than this travel through Redis (claim check) "
    "(default: 512K)\n",
    "  --log-level       debug, info, warn or error (default: info)\n",
};

/* The worker's: every setting with its default, its own last under their heading. */
START_TEST(usage_lists_every_setting_with_its_default)
{
    char *text = usage_of(true);
    expect_in_order(text, shared_lines, sizeof(shared_lines) / sizeof(shared_lines[0]));
    static const char *const own[] = {
        "codeq-worker only (codeq-dispatcher accepts and ignores them):\n",
        "  --worker-id       this worker's id (its topic is codeq.worker.<id>) (default: the "
        "host name)\n",
        "  --max-sessions    sessions one worker runs at once (default: 64)\n",
        "  --warm-pool       sandboxes a worker keeps ready (default: 2)\n",
        "  --files-quota     bytes of one session's files kept in Redis (default: 256M)\n",
        "  --claim-ttl       seconds a large reply stays in Redis for its client (default: 900)\n",
    };
    const char *heading = strstr(text, own[0]);
    ck_assert_ptr_nonnull(heading);
    expect_in_order(heading, own, sizeof(own) / sizeof(own[0]));
    free(text);
}
END_TEST

/* The dispatcher's: the shared settings only, and a word on the workers' own. */
START_TEST(dispatcher_usage_lists_only_what_it_reads)
{
    char *text = usage_of(false);
    expect_in_order(text, shared_lines, sizeof(shared_lines) / sizeof(shared_lines[0]));
    ck_assert_ptr_nonnull(strstr(text, "settings (codeq-worker --help) are accepted and ignored"));
    static const char *const absent[] = {"--worker-id",   "--max-sessions", "--warm-pool",
                                         "--files-quota", "--claim-ttl",    "codeq-worker only"};
    for (size_t i = 0; i < sizeof(absent) / sizeof(absent[0]); i++)
        ck_assert_msg(strstr(text, absent[i]) == NULL, "dispatcher usage lists %s:\n%s", absent[i],
                      text);
    free(text);
}
END_TEST

/* --- refusals -------------------------------------------------------------------------- */

START_TEST(fork_kernels_is_on_or_off)
{
    expect_loaded(LOAD("--fork-kernels", "on", "--warm-pool-max", "40"));
    ck_assert_str_eq(cfg.fork_kernels, "on");
    ck_assert_uint_eq(cfg.warm_pool_max, 40);
    expect_refused(LOAD("--fork-kernels", "maybe"), "fork_kernels: 'maybe' is neither on nor off");
}
END_TEST

START_TEST(unknown_names_are_refused_with_their_source)
{
    const char *path = config_file("brokers = k\n# fine\ncolour = blue\n");
    char want[256];
    snprintf(want, sizeof(want), "%s:3: unknown setting 'colour'", path);
    expect_refused(LOAD("--config", (char *)path), want);

    path = config_file("\nbrokers k\n");
    snprintf(want, sizeof(want), "%s:2: expected 'name = value'", path);
    expect_refused(LOAD("--config", (char *)path), want);

    /* The field name is not the setting's name. */
    path = config_file("prefix = x\n");
    snprintf(want, sizeof(want), "%s:1: unknown setting 'prefix'", path);
    expect_refused(LOAD("--config", (char *)path), want);

    expect_refused(LOAD("--colour", "blue"), "unknown option '--colour'");
    expect_refused(LOAD("--colour=blue"), "unknown option '--colour'");
    expect_refused(LOAD("--prefix", "x"), "unknown option '--prefix'");
    expect_refused(LOAD("brokers"), "unexpected argument 'brokers'");
    expect_refused(LOAD("-b", "x"), "unexpected argument '-b'");
    expect_refused(LOAD("--brokers"), "--brokers needs a value");
    expect_refused(LOAD("--config"), "--config needs a value");
    /* A name of 64 characters or more is unknown without a lookup. */
    char longest[80] = "--", want_long[120];
    memset(longest + 2, 'x', 64);
    snprintf(want_long, sizeof(want_long), "unknown option '%s'", longest);
    expect_refused(LOAD(longest, "v"), want_long);
    /* Unknown CODEQ_ variables are not settings and are ignored. */
    setenv("CODEQ_COLOUR", "blue", 1);
    expect_loaded(LOAD(NULL));
}
END_TEST

START_TEST(missing_file_is_an_error)
{
    int rc = LOAD("--config", "/nonexistent/fleet.conf");
    ck_assert_int_eq(rc, -1);
    ck_assert_int_eq(err.code, ENOENT);
    ck_assert_str_eq(err.msg,
                     "open config file /nonexistent/fleet.conf: No such file or directory");
    setenv("CODEQ_CONFIG", "/nonexistent/env.conf", 1);
    ck_assert_int_eq(LOAD(NULL), -1);
    ck_assert_str_eq(err.msg, "open config file /nonexistent/env.conf: No such file or directory");
}
END_TEST

START_TEST(numbers_and_their_limits)
{
    expect_loaded(LOAD("--heartbeat-ms", "1", "--max-sessions", "1000000", "--warm-pool", "1"));
    ck_assert_uint_eq(cfg.heartbeat_ms, 1);
    ck_assert_uint_eq(cfg.max_sessions, 1000000);
    ck_assert_uint_eq(cfg.warm_pool, 1);
    expect_refused(LOAD("--heartbeat-ms", "0"),
                   "--heartbeat-ms: heartbeat_ms: 0 is out of range [1, 1000000]");
    expect_refused(LOAD("--max-sessions=1000001"),
                   "--max-sessions: max_sessions: 1000001 is out of range [1, 1000000]");
    /* warm_pool has the same floor: a worker cannot be told to keep no sandbox ready. */
    expect_refused(LOAD("--warm-pool", "0"),
                   "--warm-pool: warm_pool: 0 is out of range [1, 1000000]");
    expect_refused(LOAD("--heartbeat-ms", "-1"),
                   "--heartbeat-ms: heartbeat_ms: invalid number '-1'");
    expect_refused(LOAD("--heartbeat-ms", "1s"),
                   "--heartbeat-ms: heartbeat_ms: invalid number '1s'");
    expect_refused(LOAD("--heartbeat-ms", ""), "--heartbeat-ms: heartbeat_ms: invalid number ''");
    expect_refused(LOAD("--heartbeat-ms", "99999999999999999999999"),
                   "--heartbeat-ms: heartbeat_ms: invalid number '99999999999999999999999'");

    setenv("CODEQ_WARM_POOL", "many", 1);
    expect_refused(LOAD(NULL), "CODEQ_WARM_POOL: warm_pool: invalid number 'many'");
    unsetenv("CODEQ_WARM_POOL");

    const char *path = config_file("heartbeat_ms = 100\nmax_sessions = 0\n");
    char want[256];
    snprintf(want, sizeof(want), "%s:2: max_sessions: 0 is out of range [1, 1000000]", path);
    expect_refused(LOAD("--config", (char *)path), want);
}
END_TEST

START_TEST(sizes_and_their_limits)
{
    static const struct {
        const char *text;
        uint64_t bytes;
    } ok[] = {
        {"1", 1},           {"512", 512},         {"64K", 65536},     {"64KiB", 65536},
        {"1m", 1ULL << 20}, {"1.5G", 3ULL << 29}, {"1T", 1ULL << 40}, {"1024G", 1ULL << 40},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        expect_loaded(LOAD("--files-quota", (char *)ok[i].text));
        ck_assert_msg(cfg.files_quota == ok[i].bytes, "%s: %llu", ok[i].text,
                      (unsigned long long)cfg.files_quota);
    }
    expect_refused(LOAD("--files-quota", "1025G"),
                   "--files-quota: files_quota: size '1025G' is above the maximum of "
                   "1099511627776 bytes");
    expect_refused(LOAD("--files-quota", "10X"),
                   "--files-quota: files_quota: invalid size suffix in '10X' (use K, M, G or T)");
    setenv("CODEQ_FILES_QUOTA", "-1M", 1);
    expect_refused(LOAD(NULL), "CODEQ_FILES_QUOTA: files_quota: invalid size '-1M' (expected a "
                               "number with an optional K, M, G or T)");
}
END_TEST

START_TEST(strings_and_their_limits)
{
    char id63[64], id64[65], arg[80];
    memset(id63, 'w', 63);
    id63[63] = '\0';
    memset(id64, 'w', 64);
    id64[64] = '\0';
    expect_loaded(LOAD("--worker-id", id63));
    ck_assert_str_eq(cfg.worker_id, id63);
    expect_refused(LOAD("--worker-id", id64),
                   "--worker-id: worker_id is longer than 63 characters");
    snprintf(arg, sizeof(arg), "--worker-id=%s", id64);
    expect_refused(LOAD(arg), "--worker-id: worker_id is longer than 63 characters");
    ck_assert_str_eq(cfg.worker_id, id63); /* unchanged by the refusal */
    setenv("CODEQ_REDIS_PREFIX", id64, 1);
    expect_refused(LOAD(NULL), "CODEQ_REDIS_PREFIX: redis_prefix is longer than 63 characters");
    unsetenv("CODEQ_REDIS_PREFIX");
    char text[128];
    snprintf(text, sizeof(text), "log_level = %s\n", "verbose-and-chatty");
    const char *path = config_file(text);
    char want[256];
    snprintf(want, sizeof(want), "%s:1: log_level is longer than 15 characters", path);
    expect_refused(LOAD("--config", (char *)path), want);
}
END_TEST

/* A misspelt level is refused where it was set, rather than logging at the default. */
START_TEST(log_levels_are_checked)
{
    expect_refused(LOAD("--log-level", "loud"),
                   "--log-level: 'loud' is not one of debug, info, warn, error");
    const char *path = config_file("log_level = warning\n");
    char want[256];
    snprintf(want, sizeof(want), "%s:1: 'warning' is not one of debug, info, warn, error", path);
    expect_refused(LOAD("--config", (char *)path), want);
    static const char *const levels[] = {"debug", "info", "warn", "error"};
    for (size_t i = 0; i < 4; i++) {
        cq_fleet_config_init(&cfg);
        expect_loaded(LOAD("--log-level", (char *)levels[i]));
        ck_assert_str_eq(cfg.log_level, levels[i]);
    }
}
END_TEST

START_TEST(worker_topic)
{
    char topic[64];
    cq_fleet_worker_topic("w-1", topic, sizeof(topic));
    ck_assert_str_eq(topic, "codeq.worker.w-1");
    cq_fleet_worker_topic("w-1", topic, 10);
    ck_assert_str_eq(topic, "codeq.wor");
}
END_TEST

/* ---- Kafka security: kafka.<property> ---------------------------------------------- */

/* The value of kafka property name in cfg, or NULL. */
static const char *kafka_value(const char *name)
{
    for (unsigned i = 0; i < cfg.n_kafka; i++)
        if (strcmp(cfg.kafka[i].name, name) == 0)
            return cfg.kafka[i].value;
    return NULL;
}

START_TEST(kafka_settings_from_every_source_later_winning)
{
    const char *path = config_file("kafka.security.protocol = SASL_SSL\n"
                                   "kafka.sasl.mechanism = SCRAM-SHA-512\n"
                                   "kafka.sasl.username = from-file\n");
    setenv("CODEQ_KAFKA_SASL_USERNAME", "from-env", 1);
    setenv("CODEQ_KAFKA_SSL_CA_LOCATION", "/etc/codeq/ca.pem", 1);
    expect_loaded(LOAD("--config", (char *)path, "--kafka.sasl.username", "from-flag"));
    ck_assert_uint_eq(cfg.n_kafka, 4);
    ck_assert_str_eq(kafka_value("security.protocol"), "SASL_SSL");
    ck_assert_str_eq(kafka_value("sasl.mechanism"), "SCRAM-SHA-512");
    ck_assert_str_eq(kafka_value("sasl.username"), "from-flag");
    ck_assert_str_eq(kafka_value("ssl.ca.location"), "/etc/codeq/ca.pem");
    /* Without the flag, the environment beats the file. */
    cq_fleet_config_init(&cfg);
    expect_loaded(LOAD("--config", (char *)path));
    ck_assert_str_eq(kafka_value("sasl.username"), "from-env");
    /* --kafka.x=value, and '-' for '_' as in every flag. */
    expect_loaded(LOAD("--kafka.sasl.username=eq", "--kafka.ssl.key.password-file",
                       (char *)config_file("pw\n")));
    ck_assert_str_eq(kafka_value("sasl.username"), "eq");
    ck_assert_str_eq(kafka_value("ssl.key.password"), "pw");
}
END_TEST

START_TEST(kafka_environment_names_map_to_properties)
{
    setenv("CODEQ_KAFKA_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM", "none", 1);
    setenv("CODEQ_KAFKA_ENABLE_SSL_CERTIFICATE_VERIFICATION", "false", 1);
    setenv("CODEQ_KAFKA_SASL_PASSWORD_FILE", config_file("s3cret\r\n"), 1);
    /* scripts/services' own variables share the prefix and are no properties. */
    setenv("CODEQ_KAFKA_PORT", "19092", 1);
    setenv("CODEQ_KAFKA_VERSION", "4.4.0", 1);
    setenv("CODEQ_KAFKA_DEBUG", "all", 1);
    expect_loaded(LOAD(NULL));
    ck_assert_uint_eq(cfg.n_kafka, 3);
    ck_assert_str_eq(kafka_value("ssl.endpoint.identification.algorithm"), "none");
    ck_assert_str_eq(kafka_value("enable.ssl.certificate.verification"), "false");
    ck_assert_str_eq(kafka_value("sasl.password"), "s3cret");
    ck_assert_ptr_null(kafka_value("debug"));
    /* One value each: a password and its file at once is a mistake. */
    setenv("CODEQ_KAFKA_SASL_PASSWORD", "plain", 1);
    expect_refused(LOAD(NULL),
                   "CODEQ_KAFKA_SASL_PASSWORD and CODEQ_KAFKA_SASL_PASSWORD_FILE are both set");
    /* A misspelt property under an accepted prefix is not ignored. */
    unsetenv("CODEQ_KAFKA_SASL_PASSWORD");
    setenv("CODEQ_KAFKA_SASL_PASWORD", "x", 1);
    expect_refused(LOAD(NULL),
                   "CODEQ_KAFKA_SASL_PASWORD: No such configuration property: \"sasl.pasword\"");
}
END_TEST

START_TEST(kafka_properties_outside_the_allow_list_are_refused)
{
    static const char tail[] = " is not a Kafka security property (only security.protocol, "
                               "sasl.*, ssl.* and enable.ssl.certificate.verification pass "
                               "through)";
    char want[512];
    snprintf(want, sizeof(want), "--kafka.enable.idempotence: 'enable.idempotence'%s", tail);
    expect_refused(LOAD("--kafka.enable.idempotence", "false"), want);
    snprintf(want, sizeof(want), "--kafka.debug: 'debug'%s", tail);
    expect_refused(LOAD("--kafka.debug", "all"), want);
    const char *path = config_file("kafka.linger.ms = 5\n");
    snprintf(want, sizeof(want), "%s:1: 'linger.ms'%s", path, tail);
    expect_refused(LOAD("--config", (char *)path), want);
    /* A file form does not widen the list. */
    snprintf(want, sizeof(want), "--kafka.bootstrap.servers_file: 'bootstrap.servers'%s", tail);
    expect_refused(LOAD("--kafka.bootstrap.servers_file", "/dev/null"), want);
    ck_assert_uint_eq(cfg.n_kafka, 0);
}
END_TEST

START_TEST(kafka_properties_are_checked_by_librdkafka)
{
    expect_refused(LOAD("--kafka.sasl.nope", "x"),
                   "--kafka.sasl.nope: No such configuration property: \"sasl.nope\"");
    expect_refused(LOAD("--kafka.security.protocol", "SASL_SSLX"),
                   "--kafka.security.protocol: Invalid value \"SASL_SSLX\" for configuration "
                   "property \"security.protocol\"");
    char big[1100];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    expect_refused(LOAD("--kafka.sasl.username", big),
                   "--kafka.sasl.username: kafka.sasl.username is longer than 1023 characters");
    /* At most CQ_KAFKA_PROPS_MAX properties; setting one again takes no new place. */
    static const char *const names[] = {"ssl.cipher.suites",
                                        "ssl.curves.list",
                                        "ssl.sigalgs.list",
                                        "ssl.key.location",
                                        "ssl.key.password",
                                        "ssl.key.pem",
                                        "ssl.certificate.location",
                                        "ssl.certificate.pem",
                                        "ssl.ca.location",
                                        "ssl.crl.location",
                                        "ssl.keystore.location",
                                        "ssl.keystore.password",
                                        "sasl.username",
                                        "sasl.password",
                                        "sasl.mechanism",
                                        "security.protocol",
                                        "ssl.endpoint.identification.algorithm"};
    static const char *const values[] = {"x", "x", "x", "x", "x", "x",     "x",        "x",    "x",
                                         "x", "x", "x", "x", "x", "PLAIN", "SASL_SSL", "https"};
    ck_assert_uint_eq(sizeof(names) / sizeof(names[0]), CQ_KAFKA_PROPS_MAX + 1);
    char flag[96];
    for (int i = 0; i < CQ_KAFKA_PROPS_MAX; i++) {
        snprintf(flag, sizeof(flag), "--kafka.%s", names[i]);
        expect_loaded(LOAD(flag, (char *)values[i]));
    }
    expect_loaded(LOAD("--kafka.sasl.username", "again"));
    ck_assert_uint_eq(cfg.n_kafka, CQ_KAFKA_PROPS_MAX);
    expect_refused(LOAD("--kafka.ssl.endpoint.identification.algorithm", "https"),
                   "--kafka.ssl.endpoint.identification.algorithm: more than 16 kafka.* "
                   "settings");
}
END_TEST

START_TEST(kafka_secrets_from_files)
{
    expect_loaded(LOAD("--kafka.sasl.password_file", (char *)config_file("pass word#1\n")));
    ck_assert_str_eq(kafka_value("sasl.password"), "pass word#1"); /* '#' is no comment */
    /* In a file too; the later form wins over the value given directly. */
    const char *conf = config_file("kafka.sasl.password = direct\n");
    char text[256];
    snprintf(text, sizeof(text), "kafka.sasl.password_file = %s\n", config_file("from-file"));
    const char *conf2 = config_file(text);
    expect_loaded(LOAD("--config", (char *)conf));
    ck_assert_str_eq(kafka_value("sasl.password"), "direct");
    expect_loaded(LOAD("--config", (char *)conf2));
    ck_assert_str_eq(kafka_value("sasl.password"), "from-file");

    ck_assert_int_eq(LOAD("--kafka.sasl.password_file", "/nonexistent/pw"), -1);
    ck_assert_int_eq(err.code, ENOENT);
    ck_assert_str_eq(err.msg, "--kafka.sasl.password_file: open /nonexistent/pw: No such file "
                              "or directory");
    const char *empty = config_file("\n");
    char want[256];
    snprintf(want, sizeof(want), "--kafka.sasl.password_file: %s is empty or holds a NUL byte",
             empty);
    expect_refused(LOAD("--kafka.sasl.password_file", (char *)empty), want);

    ck_assert(cq_fleet_kafka_secret("sasl.password"));
    ck_assert(cq_fleet_kafka_secret("ssl.key.password"));
    ck_assert(cq_fleet_kafka_secret("ssl.keystore.password"));
    ck_assert(cq_fleet_kafka_secret("sasl.oauthbearer.client.secret"));
    ck_assert(cq_fleet_kafka_secret("ssl.key.pem"));
    ck_assert(!cq_fleet_kafka_secret("sasl.username"));
    ck_assert(!cq_fleet_kafka_secret("ssl.ca.location"));
}
END_TEST

START_TEST(kafka_settings_reach_librdkafka)
{
    expect_loaded(LOAD("--kafka.security.protocol", "sasl_ssl", "--kafka.sasl.mechanisms", "PLAIN",
                       "--kafka.sasl.username", "u", "--kafka.sasl.password", "p"));
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    ck_assert_int_eq(cq_fleet_kafka_conf(&cfg, conf, &err), 0);
    char value[64];
    size_t len = sizeof(value);
    ck_assert_int_eq(rd_kafka_conf_get(conf, "security.protocol", value, &len), RD_KAFKA_CONF_OK);
    ck_assert_str_eq(value, "sasl_ssl");
    len = sizeof(value);
    ck_assert_int_eq(rd_kafka_conf_get(conf, "sasl.username", value, &len), RD_KAFKA_CONF_OK);
    ck_assert_str_eq(value, "u");
    rd_kafka_conf_destroy(conf);
}
END_TEST

START_TEST(kafka_usage_lists_the_security_settings)
{
    static const char *const lines[] = {
        "Kafka security, on every Kafka client",
        "CODEQ_KAFKA_<PROPERTY>",
        "--kafka.security.protocol P",
        "--kafka.sasl.mechanism M",
        "--kafka.sasl.username U",
        "--kafka.sasl.password_file F",
        "--kafka.ssl.ca.location F",
        "--kafka.<property> VALUE",
    };
    for (int worker = 0; worker < 2; worker++) {
        char *text = usage_of(worker);
        expect_in_order(text, lines, sizeof(lines) / sizeof(lines[0]));
        free(text);
    }
}
END_TEST

static Suite *fleet_config_suite(void)
{
    Suite *s = suite_create("fleet_config");
    TCase *tc = tcase_create("precedence");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, defaults);
    tcase_add_test(tc, file_overrides_defaults);
    tcase_add_test(tc, file_values_keep_equals_and_lose_comments);
    tcase_add_test(tc, file_named_by_the_environment);
    tcase_add_test(tc, config_flag_beats_config_variable);
    tcase_add_test(tc, environment_overrides_file);
    tcase_add_test(tc, flags_override_everything);
    tcase_add_test(tc, network_lists_add_within_a_source);
    tcase_add_test(tc, help_stops_before_anything_is_read);
    tcase_add_test(tc, usage_lists_every_setting_with_its_default);
    tcase_add_test(tc, dispatcher_usage_lists_only_what_it_reads);
    tcase_add_test(tc, log_levels_are_checked);
    suite_add_tcase(s, tc);

    tc = tcase_create("refusals");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, unknown_names_are_refused_with_their_source);
    tcase_add_test(tc, fork_kernels_is_on_or_off);
    tcase_add_test(tc, missing_file_is_an_error);
    tcase_add_test(tc, overlong_file_lines_are_refused);
    tcase_add_test(tc, reply_topics_are_refused_outside_the_prefix_and_the_fleets_own);
    tcase_add_test(tc, a_tenants_reply_topics_are_under_its_own_prefix);
    tcase_add_test(tc, numbers_and_their_limits);
    tcase_add_test(tc, sizes_and_their_limits);
    tcase_add_test(tc, strings_and_their_limits);
    tcase_add_test(tc, worker_topic);
    suite_add_tcase(s, tc);

    tc = tcase_create("kafka_security");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, kafka_settings_from_every_source_later_winning);
    tcase_add_test(tc, kafka_environment_names_map_to_properties);
    tcase_add_test(tc, kafka_properties_outside_the_allow_list_are_refused);
    tcase_add_test(tc, kafka_properties_are_checked_by_librdkafka);
    tcase_add_test(tc, kafka_secrets_from_files);
    tcase_add_test(tc, kafka_settings_reach_librdkafka);
    tcase_add_test(tc, kafka_usage_lists_the_security_settings);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return cq_unit_run(fleet_config_suite(), true);
}
