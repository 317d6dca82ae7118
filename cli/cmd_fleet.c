/* cli/cmd_fleet.c - `codeq fleet status`: the fleet's workers, dispatchers, backlog and
 * dead letters (fleet/status.h), as a table or as JSON, with an exit status a script
 * or a probe can test (docs/fleet.md, "codeq fleet status"). */
#define _GNU_SOURCE
#include "cli/cli.h"
#include "common/units.h"
#include "fleet/config.h"
#include "fleet/status.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DEFAULT_TIMEOUT_S 5

static void usage(FILE *out)
{
    fprintf(out,
            "usage: codeq fleet status [--json] [--timeout S] [--config FILE] [--NAME VALUE]...\n"
            "\n"
            "Shows a fleet's state from its Redis and its Kafka:\n"
            "  workers      state (ready, draining, or lost: its heartbeat, the lease on its\n"
            "               sessions, expired), sessions held, free slots and max_sessions,\n"
            "               memory it may give sandboxes, warm sandboxes ready (when the\n"
            "               worker reports them), interpreters ready, heartbeat age\n"
            "  dispatchers  live, or lost (stopped heartbeating within the last hour)\n"
            "  sessions     the sessions in the fleet's indexes (\"at least\" when a very\n"
            "               large Redis was not scanned to its end)\n"
            "  requests     per partition of the request topic: the dispatchers' committed\n"
            "               offset, the high watermark and the lag; the total lag\n"
            "  dead letters messages in the dead-letter topic, and the newest reasons\n"
            "\n"
            "options:\n"
            "  --json            print one JSON document (docs/fleet.md, \"codeq fleet status\")\n"
            "  --timeout S       give up on Kafka after S seconds (default %d)\n"
            "  --config FILE     the daemons' configuration file (or CODEQ_CONFIG)\n"
            "  --NAME VALUE      any setting of the daemons (codeq-dispatcher --help), over\n"
            "                    the file and the CODEQ_<NAME> environment; the ones read:\n"
            "                    --brokers, --redis, --redis-prefix, --request-topic,\n"
            "                    --dlq-topic, --redis-user, --redis-password-file,\n"
            "                    --redis-tls*, --kafka.<property>\n"
            "  -h, --help        show this help\n"
            "\n"
            "exit status: 0 when at least one worker is ready and one dispatcher live; 1\n"
            "otherwise (the fleet cannot serve); 2 for bad options, or when Redis or Kafka\n"
            "cannot be reached (the message says which).\n",
            DEFAULT_TIMEOUT_S);
}

static void fleet_usage(FILE *out)
{
    fprintf(out, "usage: codeq fleet status [options]\n"
                 "\n"
                 "commands:\n"
                 "  status     workers, dispatchers, request backlog and dead letters of a\n"
                 "             fleet (codeq fleet status --help)\n");
}

static const char *worker_state(const struct cq_status_worker *w)
{
    return !w->live ? "lost" : w->draining ? "draining" : "ready";
}

static int64_t age_of(const struct cq_fleet_status *s, int64_t at_ms)
{
    if (at_ms < 0)
        return -1;
    return s->now_ms > at_ms ? s->now_ms - at_ms : 0; /* clocks a little ahead: now */
}

/* ---- JSON --------------------------------------------------------------------------- */

static json_t *num_or_null(int64_t v)
{
    return v >= 0 ? json_integer((json_int_t)v) : json_null();
}

static json_t *names_of(const char *list)
{
    json_t *a = json_array();
    for (const char *p = list; *p != '\0';) {
        size_t n = strcspn(p, ",");
        if (n > 0)
            json_array_append_new(a, json_stringn(p, n));
        p += n + (p[n] == ',');
    }
    return a;
}

static json_t *to_json(const struct cq_fleet_config *cfg, const struct cq_fleet_status *s, bool ok)
{
    json_t *o = json_object();
    json_object_set_new(o, "ok", json_boolean(ok));
    json_object_set_new(o, "timeMs", json_integer((json_int_t)s->now_ms));
    json_t *ws = json_array();
    for (size_t i = 0; i < s->n_workers; i++) {
        const struct cq_status_worker *w = &s->workers[i];
        json_t *j = json_object();
        json_object_set_new(j, "id", json_string(w->id));
        json_object_set_new(j, "state", json_string(worker_state(w)));
        json_object_set_new(j, "sessions", num_or_null(w->live ? w->sessions : -1));
        json_object_set_new(j, "free", num_or_null(w->live ? w->capacity : -1));
        json_object_set_new(j, "maxSessions", num_or_null(w->live ? w->max_sessions : -1));
        json_object_set_new(j, "memoryBytes", num_or_null(w->live ? w->memory_bytes : -1));
        json_object_set_new(j, "warmReady", num_or_null(w->live ? w->warm_ready : -1));
        json_object_set_new(j, "interpreters", names_of(w->live ? w->interpreters : ""));
        json_object_set_new(j, "heartbeatMs", num_or_null(w->live ? w->heartbeat_ms : -1));
        json_object_set_new(j, "heartbeatAgeMs",
                            num_or_null(w->live ? age_of(s, w->heartbeat_ms) : -1));
        json_array_append_new(ws, j);
    }
    json_object_set_new(o, "workers", ws);
    json_t *ds = json_array();
    for (size_t i = 0; i < s->n_dispatchers; i++) {
        const struct cq_status_dispatcher *d = &s->dispatchers[i];
        json_t *j = json_object();
        json_object_set_new(j, "id", json_string(d->id));
        json_object_set_new(j, "state", json_string(d->live ? "live" : "lost"));
        json_object_set_new(j, "startedMs", num_or_null(d->started_ms));
        json_object_set_new(j, "heartbeatMs", num_or_null(d->heartbeat_ms));
        json_object_set_new(j, "heartbeatAgeMs", num_or_null(age_of(s, d->heartbeat_ms)));
        json_array_append_new(ds, j);
    }
    json_object_set_new(o, "dispatchers", ds);
    json_object_set_new(
        o, "sessions",
        json_pack("{s:I, s:b}", "count", (json_int_t)s->sessions, "exact", s->sessions_exact));
    json_t *ps = json_array();
    for (size_t i = 0; i < s->n_partitions; i++) {
        const struct cq_status_partition *p = &s->partitions[i];
        json_t *j = json_pack("{s:i, s:o, s:I, s:I, s:I}", "partition", (int)p->partition,
                              "committed", num_or_null(p->committed), "low", (json_int_t)p->low,
                              "high", (json_int_t)p->high, "lag", (json_int_t)p->lag);
        json_array_append_new(ps, j);
    }
    json_object_set_new(o, "requests",
                        json_pack("{s:s, s:s, s:I, s:o}", "topic", cfg->request_topic, "group",
                                  s->group, "lag", (json_int_t)s->lag, "partitions", ps));
    json_t *rs = json_array();
    for (size_t i = 0; i < s->n_recent; i++) {
        const struct cq_status_dead_letter *d = &s->recent[i];
        json_array_append_new(rs, json_pack("{s:i, s:I, s:o, s:s}", "partition", (int)d->partition,
                                            "offset", (json_int_t)d->offset, "timestampMs",
                                            num_or_null(d->timestamp_ms), "reason", d->reason));
    }
    json_object_set_new(o, "deadLetters",
                        json_pack("{s:s, s:I, s:o}", "topic", cfg->dlq_topic, "count",
                                  (json_int_t)s->dead_letters, "recent", rs));
    return o;
}

/* ---- the table ---------------------------------------------------------------------- */

static const char *age_text(int64_t ms, char *buf, size_t len)
{
    if (ms < 0)
        snprintf(buf, len, "-");
    else if (ms < 10000)
        snprintf(buf, len, "%.1fs", (double)ms / 1000.0);
    else if (ms < 120000)
        snprintf(buf, len, "%llds", (long long)(ms / 1000));
    else if (ms < 2 * 3600000LL)
        snprintf(buf, len, "%lldm", (long long)(ms / 60000));
    else if (ms < 2 * 86400000LL)
        snprintf(buf, len, "%lldh", (long long)(ms / 3600000));
    else
        snprintf(buf, len, "%lldd", (long long)(ms / 86400000));
    return buf;
}

static const char *num_text(int64_t v, char *buf, size_t len)
{
    if (v < 0)
        snprintf(buf, len, "-");
    else
        snprintf(buf, len, "%lld", (long long)v);
    return buf;
}

static void print_table(const struct cq_fleet_config *cfg, const struct cq_fleet_status *s)
{
    size_t ready = 0, draining = 0, lost = 0, live_d = 0;
    for (size_t i = 0; i < s->n_workers; i++) {
        const struct cq_status_worker *w = &s->workers[i];
        ready += w->live && !w->draining;
        draining += w->draining;
        lost += !w->live;
    }
    for (size_t i = 0; i < s->n_dispatchers; i++)
        live_d += s->dispatchers[i].live;
    printf("workers: %zu ready, %zu draining, %zu lost; dispatchers: %zu live; sessions: %s%lld; "
           "lag: %lld; dead letters: %lld\n",
           ready, draining, lost, live_d, s->sessions_exact ? "" : "at least ",
           (long long)s->sessions, (long long)s->lag, (long long)s->dead_letters);

    char a[32], b[32], c[32], m[32], age[32];
    printf("\n%-24s %-9s %-9s %-5s %-8s %-5s %-10s %s\n", "WORKER", "STATE", "SESSIONS", "FREE",
           "MEMORY", "WARM", "HEARTBEAT", "INTERPRETERS");
    for (size_t i = 0; i < s->n_workers; i++) {
        const struct cq_status_worker *w = &s->workers[i];
        char held[48];
        snprintf(held, sizeof(held), "%s/%s", num_text(w->live ? w->sessions : -1, a, sizeof(a)),
                 num_text(w->live ? w->max_sessions : -1, b, sizeof(b)));
        if (w->live && w->memory_bytes >= 0)
            cq_format_size((uint64_t)w->memory_bytes, m, sizeof(m));
        else
            snprintf(m, sizeof(m), "-");
        printf("%-24s %-9s %-9s %-5s %-8s %-5s %-10s %s\n", w->id, worker_state(w), held,
               num_text(w->live ? w->capacity : -1, c, sizeof(c)), m,
               num_text(w->live ? w->warm_ready : -1, b, sizeof(b)),
               age_text(w->live ? age_of(s, w->heartbeat_ms) : -1, age, sizeof(age)),
               w->live && w->interpreters[0] ? w->interpreters : "-");
    }
    if (s->n_workers == 0)
        printf("(none)\n");

    printf("\n%-40s %-6s %-10s %s\n", "DISPATCHER", "STATE", "HEARTBEAT", "UP");
    for (size_t i = 0; i < s->n_dispatchers; i++) {
        const struct cq_status_dispatcher *d = &s->dispatchers[i];
        int64_t up = d->started_ms >= 0 && d->heartbeat_ms >= d->started_ms
                         ? (d->live ? age_of(s, d->started_ms) : d->heartbeat_ms - d->started_ms)
                         : -1;
        printf("%-40s %-6s %-10s %s\n", d->id, d->live ? "live" : "lost",
               age_text(age_of(s, d->heartbeat_ms), age, sizeof(age)), age_text(up, a, sizeof(a)));
    }
    if (s->n_dispatchers == 0)
        printf("(none)\n");

    printf("\nrequests: %s, group %s, lag %lld\n", cfg->request_topic, s->group, (long long)s->lag);
    printf("%-10s %-12s %-12s %s\n", "PARTITION", "COMMITTED", "HIGH", "LAG");
    for (size_t i = 0; i < s->n_partitions; i++) {
        const struct cq_status_partition *p = &s->partitions[i];
        printf("%-10d %-12s %-12lld %lld\n", (int)p->partition,
               num_text(p->committed, a, sizeof(a)), (long long)p->high, (long long)p->lag);
    }
    if (s->n_partitions == 0)
        printf("(the topic does not exist)\n");

    printf("\ndead letters: %s, %lld\n", cfg->dlq_topic, (long long)s->dead_letters);
    for (size_t i = 0; i < s->n_recent; i++) {
        const struct cq_status_dead_letter *d = &s->recent[i];
        printf("  %s ago  partition %d offset %lld: %s\n",
               age_text(age_of(s, d->timestamp_ms), age, sizeof(age)), (int)d->partition,
               (long long)d->offset, d->reason[0] ? d->reason : "(no reason recorded)");
    }
}

/* ---- the command -------------------------------------------------------------------- */

static int status(int argc, char **argv)
{
    /* --json and --timeout are this command's; everything else goes to the daemons'
     * loader as --NAME VALUE pairs, so the flags mean what they mean to the daemons.
     * The walk skips values as the loader does: `--redis-prefix --json` names a
     * prefix. */
    char **rest = calloc((size_t)argc + 1, sizeof(*rest));
    if (rest == NULL)
        return CQ_EXIT_INTERNAL;
    int n = 0;
    rest[n++] = argv[0];
    bool json = false;
    long timeout_s = DEFAULT_TIMEOUT_S;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            json = true;
            continue;
        }
        if (strcmp(argv[i], "--timeout") == 0 || strncmp(argv[i], "--timeout=", 10) == 0) {
            const char *v = argv[i][9] == '=' ? argv[i] + 10 : i + 1 < argc ? argv[++i] : NULL;
            char *end = NULL;
            timeout_s = v != NULL ? strtol(v, &end, 10) : 0;
            if (v == NULL || *end != '\0' || timeout_s < 1 || timeout_s > 600) {
                free(rest);
                return cq_usage_error("fleet status", "--timeout: seconds, 1 to 600");
            }
            continue;
        }
        rest[n++] = argv[i];
        if (strncmp(argv[i], "--", 2) == 0 && strchr(argv[i], '=') == NULL &&
            strcmp(argv[i], "--help") != 0 && i + 1 < argc)
            rest[n++] = argv[++i];
    }
    struct cq_fleet_config cfg;
    cq_fleet_config_init(&cfg);
    bool help = false;
    struct cq_error err;
    int rc = cq_fleet_config_load(&cfg, n, rest, &help, &err);
    free(rest);
    if (help) {
        usage(stdout);
        return 0;
    }
    if (rc < 0)
        return cq_usage_error("fleet status", "%s", err.msg);

    struct cq_fleet_status s = {0};
    if (cq_fleet_status_redis(&cfg, &s, &err) < 0) {
        fprintf(stderr, "codeq fleet status: Redis (%s): %s\n", cfg.redis, err.msg);
        cq_fleet_status_free(&s);
        return CQ_EXIT_USAGE;
    }
    if (cq_fleet_status_kafka(&cfg, (int)timeout_s * 1000, &s, &err) < 0) {
        fprintf(stderr, "codeq fleet status: Kafka: %s\n", err.msg);
        cq_fleet_status_free(&s);
        return CQ_EXIT_USAGE;
    }
    bool ready = false, dispatching = false;
    for (size_t i = 0; i < s.n_workers; i++)
        ready |= s.workers[i].live && !s.workers[i].draining;
    for (size_t i = 0; i < s.n_dispatchers; i++)
        dispatching |= s.dispatchers[i].live;
    bool ok = ready && dispatching;
    if (json) {
        json_t *o = to_json(&cfg, &s, ok);
        char *text = o != NULL ? json_dumps(o, JSON_INDENT(2)) : NULL;
        if (text != NULL)
            printf("%s\n", text);
        free(text);
        json_decref(o);
        if (text == NULL) {
            cq_fleet_status_free(&s);
            return CQ_EXIT_INTERNAL;
        }
    } else {
        print_table(&cfg, &s);
        if (!ok)
            printf("\nnot ready:%s%s\n", ready ? "" : " no worker is ready;",
                   dispatching ? "" : " no dispatcher is live");
    }
    cq_fleet_status_free(&s);
    return ok ? 0 : 1;
}

int cq_cmd_fleet(int argc, char **argv)
{
    if (argc < 2) {
        fleet_usage(stderr);
        return CQ_EXIT_USAGE;
    }
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        fleet_usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "status") == 0)
        return status(argc - 1, argv + 1);
    return cq_usage_error("fleet", "unknown command '%s'", argv[1]);
}
