/* fleet/store_status.c - the Redis side of fleet/status.h: the dispatchers' heartbeat,
 * the facts a worker's heartbeat adds for operators, and the one read-only script that
 * `codeq fleet status` takes the workers, dispatchers and sessions from. */
#define _GNU_SOURCE
#include "fleet/status.h"
#include "common/clock.h"
#include "fleet/store_internal.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A dispatcher that stopped is listed (lost) for an hour after its last beat. */
#define DISPATCHER_KEPT_MS 3600000
/* The bounded SCAN for the tenants' session indexes: at most this many calls of
 * SCAN_COUNT keys each, so that a huge keyspace costs the status a bounded time. */
#define SCAN_CALLS         64
#define SCAN_COUNT         1000
#define MAX_TENANT_INDEXES 4096

void cq_fleet_dispatcher_group(const struct cq_fleet_config *cfg, char *out, size_t len)
{
    /* One group per request topic: fleets that share a broker (staging next to
     * production, test runs) would otherwise rebalance each other's dispatchers every
     * time one of theirs starts or stops. */
    snprintf(out, len, "codeq-dispatchers.%s", cfg->request_topic);
}

void cq_fleet_dispatcher_id(char *out, size_t len)
{
    char host[64] = "";
    if (gethostname(host, sizeof(host) - 1) < 0 || host[0] == '\0')
        snprintf(host, sizeof(host), "dispatcher");
    snprintf(out, len, "%s-%d", host, (int)getpid());
}

static const char DISPATCHER_BEAT[] =
    "local k = ARGV[1] .. 'dispatcher:' .. ARGV[2]\n"
    "redis.call('HSET', k, 'heartbeat_ms', ARGV[3], 'started_ms', ARGV[4])\n"
    "redis.call('PEXPIRE', k, ARGV[5])\n"
    "local idx = ARGV[1] .. 'dispatchers'\n"
    "redis.call('ZADD', idx, ARGV[3], ARGV[2])\n"
    "redis.call('ZREMRANGEBYSCORE', idx, '-inf', tonumber(ARGV[3]) - tonumber(ARGV[6]))\n"
    "return 1\n";

int cq_store_dispatcher_beat(struct cq_store *st, const char *id, int64_t started_ms,
                             unsigned ttl_ms, struct cq_error *err)
{
    struct args a;
    cq_st_script(st, &a, DISPATCHER_BEAT);
    cq_st_arg(&a, id);
    cq_st_arg_int(&a, (int64_t)cq_unix_ms());
    cq_st_arg_int(&a, started_ms);
    cq_st_arg_int(&a, ttl_ms);
    cq_st_arg_int(&a, DISPATCHER_KEPT_MS);
    return cq_st_done_with(cq_st_run(st, &a, err));
}

static const char DISPATCHER_GONE[] = "redis.call('DEL', ARGV[1] .. 'dispatcher:' .. ARGV[2])\n"
                                      "redis.call('ZREM', ARGV[1] .. 'dispatchers', ARGV[2])\n"
                                      "return 1\n";

int cq_store_dispatcher_gone(struct cq_store *st, const char *id, struct cq_error *err)
{
    struct args a;
    cq_st_script(st, &a, DISPATCHER_GONE);
    cq_st_arg(&a, id);
    return cq_st_done_with(cq_st_run(st, &a, err));
}

/* Only while worker:<id> exists: a field written to a key that has just expired would
 * make it anew without an expiry, a worker that looks alive forever. */
static const char WORKER_FACTS[] = "local k = ARGV[1] .. 'worker:' .. ARGV[2]\n"
                                   "if redis.call('EXISTS', k) == 0 then return 0 end\n"
                                   "redis.call('HSET', k, 'max_sessions', ARGV[3])\n"
                                   "if ARGV[4] ~= '' then\n"
                                   "  redis.call('HSET', k, 'memory_bytes', ARGV[4])\n"
                                   "end\n"
                                   "redis.call('HSET', k, 'warm_ready', ARGV[5])\n"
                                   "return 1\n";

int cq_store_worker_facts(struct cq_store *st, const char *worker_id, int64_t max_sessions,
                          int64_t memory_bytes, int64_t warm_ready, struct cq_error *err)
{
    struct args a;
    cq_st_script(st, &a, WORKER_FACTS);
    cq_st_arg(&a, worker_id);
    cq_st_arg_int(&a, max_sessions);
    if (memory_bytes >= 0)
        cq_st_arg_int(&a, memory_bytes);
    else
        cq_st_arg(&a, "");
    cq_st_arg_int(&a, warm_ready);
    return cq_st_done_with(cq_st_run(st, &a, err));
}

/* Read only. Redis' clock is the one ages are measured against: the status may run on
 * a laptop whose clock is off, the daemons' are kept close by the operator. */
static const char STATUS[] =
    "local p = ARGV[1]\n"
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local ids = redis.call('SMEMBERS', p .. 'workers')\n"
    "table.sort(ids)\n"
    "local ws = {}\n"
    "for i, id in ipairs(ids) do\n"
    "  if i > tonumber(ARGV[2]) then break end\n"
    "  local h = redis.call('HMGET', p .. 'worker:' .. id, 'capacity', 'sessions', 'draining',\n"
    "                       'heartbeat_ms', 'interpreters', 'max_sessions', 'memory_bytes',\n"
    "                       'warm_ready')\n"
    "  local w = {id, h[1] and '1' or '0'}\n"
    "  for j = 1, 8 do w[j + 2] = h[j] or '' end\n"
    "  table.insert(ws, w)\n"
    "end\n"
    "local ds = {}\n"
    "local idx = redis.call('ZREVRANGE', p .. 'dispatchers', 0, tonumber(ARGV[3]) - 1,\n"
    "                       'WITHSCORES')\n"
    "for i = 1, #idx, 2 do\n"
    "  local h = redis.call('HMGET', p .. 'dispatcher:' .. idx[i], 'heartbeat_ms', 'started_ms')\n"
    "  table.insert(ds, {idx[i], h[1] and '1' or '0', h[1] or idx[i + 1], h[2] or ''})\n"
    "end\n"
    "return {tostring(now), ws, ds, redis.call('ZCARD', p .. 'sessions')}\n";

static int64_t num_or_unknown(const redisReply *r)
{
    if (r == NULL || r->type != REDIS_REPLY_STRING || r->len == 0)
        return -1;
    return strtoll(r->str, NULL, 10);
}

static void fill_workers(const redisReply *ws, struct cq_fleet_status *s)
{
    for (size_t i = 0; i < ws->elements; i++) {
        const redisReply *e = ws->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 10)
            continue;
        struct cq_status_worker *w = &s->workers[s->n_workers++];
        cq_st_copy_str(e->element[0], w->id, sizeof(w->id));
        w->live = cq_st_int_of(e->element[1]) == 1;
        w->capacity = num_or_unknown(e->element[2]);
        w->sessions = num_or_unknown(e->element[3]);
        w->draining = w->live && num_or_unknown(e->element[4]) == 1;
        w->heartbeat_ms = num_or_unknown(e->element[5]);
        cq_st_copy_str(e->element[6], w->interpreters, sizeof(w->interpreters));
        w->max_sessions = num_or_unknown(e->element[7]);
        w->memory_bytes = num_or_unknown(e->element[8]);
        w->warm_ready = num_or_unknown(e->element[9]);
    }
}

static void fill_dispatchers(const redisReply *ds, struct cq_fleet_status *s)
{
    for (size_t i = 0; i < ds->elements; i++) {
        const redisReply *e = ds->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 4)
            continue;
        struct cq_status_dispatcher *d = &s->dispatchers[s->n_dispatchers++];
        cq_st_copy_str(e->element[0], d->id, sizeof(d->id));
        d->live = cq_st_int_of(e->element[1]) == 1;
        d->heartbeat_ms = num_or_unknown(e->element[2]);
        d->started_ms = num_or_unknown(e->element[3]);
    }
}

/* A MATCH pattern for keys that start with prefix and then rest: the prefix's glob
 * characters escaped. */
static void match_pattern(const char *prefix, const char *rest, char *out, size_t len)
{
    size_t n = 0;
    for (const char *p = prefix; *p != '\0' && n + 3 < len; p++) {
        if (strchr("*?[]\\", *p) != NULL)
            out[n++] = '\\';
        out[n++] = *p;
    }
    snprintf(out + n, len - n, "%s", rest);
}

/* The tenants' indexes (sessions:<tenant>), found by a SCAN that stops after
 * SCAN_CALLS calls: then *exact is false. */
static int tenant_sessions(struct cq_store *st, int64_t *total, bool *exact, struct cq_error *err)
{
    char pattern[256];
    match_pattern(st->prefix, "sessions:*", pattern, sizeof(pattern));
    char cursor[32] = "0";
    char(*seen)[192] = calloc(MAX_TENANT_INDEXES, sizeof(*seen));
    if (seen == NULL)
        return cq_error_sys(err, ENOMEM, "allocate the status");
    size_t n_seen = 0;
    int calls = 0, rc = 0;
    *exact = false;
    for (; calls < SCAN_CALLS; calls++) {
        const char *argv[] = {"SCAN", cursor, "MATCH", pattern, "COUNT", "1000"};
        redisReply *r = cq_st_command(st, 6, argv, NULL, err);
        if (r == NULL) {
            rc = -1;
            break;
        }
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
            freeReplyObject(r);
            rc = cq_error_set(err, CQ_EINTERNAL, "Redis: unexpected SCAN reply");
            break;
        }
        cq_st_copy_str(r->element[0], cursor, sizeof(cursor));
        const redisReply *keys = r->element[1];
        for (size_t i = 0; keys->type == REDIS_REPLY_ARRAY && i < keys->elements; i++) {
            char key[192];
            cq_st_copy_str(keys->element[i], key, sizeof(key));
            bool dup = false; /* SCAN may return a key twice */
            for (size_t j = 0; j < n_seen && !dup; j++)
                dup = strcmp(seen[j], key) == 0;
            if (dup || n_seen == MAX_TENANT_INDEXES)
                continue;
            memcpy(seen[n_seen++], key, sizeof(key));
            const char *zc[] = {"ZCARD", key};
            redisReply *c = cq_st_command(st, 2, zc, NULL, err);
            if (c == NULL) {
                rc = -1;
                break;
            }
            *total += cq_st_int_of(c);
            freeReplyObject(c);
        }
        freeReplyObject(r);
        if (rc < 0 || strcmp(cursor, "0") == 0)
            break;
    }
    if (rc == 0 && strcmp(cursor, "0") == 0 && n_seen < MAX_TENANT_INDEXES)
        *exact = true;
    free(seen);
    return rc;
}

int cq_fleet_status_redis(const struct cq_fleet_config *cfg, struct cq_fleet_status *s,
                          struct cq_error *err)
{
    struct cq_store *st = NULL;
    if (cq_store_open(cfg, &st, err) < 0)
        return -1;
    /* Already set: a command that finds Redis gone fails at once instead of waiting for
     * it as the daemons do. */
    static const atomic_bool give_up = true;
    cq_store_set_cancel(st, &give_up);
    int rc = -1;
    s->workers = calloc(CQ_STATUS_MAX_WORKERS, sizeof(*s->workers));
    s->dispatchers = calloc(CQ_STATUS_MAX_DISPATCHERS, sizeof(*s->dispatchers));
    if (s->workers == NULL || s->dispatchers == NULL) {
        cq_error_sys(err, ENOMEM, "allocate the status");
        goto out;
    }
    struct args a;
    cq_st_script(st, &a, STATUS);
    cq_st_arg_int(&a, CQ_STATUS_MAX_WORKERS);
    cq_st_arg_int(&a, CQ_STATUS_MAX_DISPATCHERS);
    redisReply *r = cq_st_run(st, &a, err);
    if (r == NULL)
        goto out;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 4 ||
        r->element[1]->type != REDIS_REPLY_ARRAY || r->element[2]->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(r);
        cq_error_set(err, CQ_EINTERNAL, "Redis: unexpected status reply");
        goto out;
    }
    s->now_ms = cq_st_int_of(r->element[0]);
    fill_workers(r->element[1], s);
    fill_dispatchers(r->element[2], s);
    s->sessions = cq_st_int_of(r->element[3]);
    freeReplyObject(r);
    rc = tenant_sessions(st, &s->sessions, &s->sessions_exact, err);
out:
    cq_store_close(st);
    return rc;
}

void cq_fleet_status_free(struct cq_fleet_status *s)
{
    free(s->workers);
    free(s->dispatchers);
    free(s->partitions);
    memset(s, 0, sizeof(*s));
}
