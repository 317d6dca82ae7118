/* fleet/store.c - the fleet's state in Redis (docs/fleet.md has the keys).
 *
 * Every decision that two processes could race on (who owns a session, who runs a
 * request, whether a worker may still write a session's files) is one Lua script, so
 * Redis applies it atomically; the C side only passes arguments. Scripts build their
 * keys from the prefix, which ties the store to one Redis (not Redis Cluster).
 *
 * One connection behind a mutex: commands take tens of microseconds on loopback, far
 * less than the executions they bracket. A broken connection is reopened, and a command
 * that finds Redis unreachable waits for it (REDIS_WAIT_MS, with backoff) before it
 * fails, so a Redis restart delays requests rather than failing them; the scripts a
 * retry may send twice (the reply of the first was lost) are written to tell their own
 * earlier success from another process's (CLAIM, FINISH, CREATE_SESSION). Each connection, the
 * first and every reconnection, is made by redis_connect.c: TLS and AUTH as configured. */
#define _GNU_SOURCE
#include "fleet/store_internal.h"
#include "common/metrics.h"
#include "fleet/obs.h"
#include "common/clock.h"
#include "common/random.h"
#include "common/units.h"
#include "fleet/config.h"
#include "fleet/crypt.h"
#include "fleet/log.h"
#include "fleet/redis_connect.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

static bool cancelled(const struct cq_store *st)
{
    return st->cancel != NULL && atomic_load(st->cancel);
}

/* Sleeps ms, in slices, unless the daemon stops first. */
static void backoff_sleep(const struct cq_store *st, int64_t ms)
{
    for (int64_t end = (int64_t)cq_now_ms() + ms; !cancelled(st) && (int64_t)cq_now_ms() < end;) {
        struct timespec ts = {.tv_nsec = 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

static int connect_locked(struct cq_store *st, struct cq_error *err)
{
    if (st->c != NULL && st->c->err == 0)
        return 0;
    if (st->c != NULL)
        redisFree(st->c);
    /* Commands then block at most 10 s (by default): a hung Redis becomes an error. */
    st->c = cq_redis_dial(st->dialer, st->command_timeout_s > 0 ? st->command_timeout_s : 10, err);
    if (st->c != NULL && st->dialed && st->m_reconnects != NULL)
        cq_metric_child_add(st->m_reconnects, 1);
    if (st->c != NULL)
        st->dialed = true;
    return st->c != NULL ? 0 : -1;
}

/* One attempt, with st->lock held: NULL and err when Redis cannot serve it (an I/O
 * error, which drops the connection for the next attempt to reopen, or a Redis still
 * loading its data). Tracks outages, and logs each once when it starts and once when
 * it ends. */
static redisReply *attempt_locked(struct cq_store *st, int argc, const char **argv,
                                  const size_t *lens, struct cq_error *err)
{
    redisReply *r = NULL;
    if (connect_locked(st, err) == 0) {
        uint64_t started = st->m_seconds != NULL ? cq_now_us() : 0;
        r = redisCommandArgv(st->c, argc, argv, lens);
        if (st->m_seconds != NULL)
            cq_metric_child_observe(st->m_seconds, (double)(cq_now_us() - started) / 1e6);
        if (r == NULL) {
            cq_error_set(err, CQ_EINTERNAL, "Redis at %s:%d: %s", st->host, st->port,
                         st->c->errstr[0] ? st->c->errstr : "connection lost");
            redisFree(st->c);
            st->c = NULL;
        } else if (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "LOADING", 7) == 0) {
            /* A restarted Redis answers this while it reads its data back: not up yet. */
            cq_error_set(err, CQ_EINTERNAL, "Redis at %s:%d: %s", st->host, st->port, r->str);
            freeReplyObject(r);
            r = NULL;
        }
    }
    if (r != NULL && st->down_since != 0) {
        int64_t down_ms = (int64_t)cq_now_ms() - st->down_since;
        cq_log_event(
            CQ_LOG_INFO, "redis_reconnected",
            CQ_FIELDS(CQ_LS("host", st->host), CQ_LI("port", st->port), CQ_LI("down_ms", down_ms)),
            "Redis at %s:%d is back after %lld ms", st->host, st->port, (long long)down_ms);
        st->down_since = 0;
        st->back_at = (int64_t)cq_now_ms();
    }
    if (st->m_errors != NULL && (r == NULL || r->type == REDIS_REPLY_ERROR))
        cq_metric_child_add(st->m_errors, 1);
    if (r != NULL)
        st->fail_fast = false;
    else if (st->down_since == 0 && !st->fail_fast) {
        st->down_since = (int64_t)cq_now_ms();
        cq_log_event(
            CQ_LOG_WARN, "redis_connection_lost",
            CQ_FIELDS(CQ_LS("host", st->host), CQ_LI("port", st->port), CQ_LS("error", err->msg)),
            "%s; reconnecting (commands wait up to %d s for it)", err->msg, REDIS_WAIT_MS / 1000);
    }
    return r;
}

/* Runs one command (binary-safe arguments); the reply is the caller's to free. An
 * unreachable Redis is retried with backoff for up to REDIS_WAIT_MS (the first retry
 * at once: after a Redis restart the old socket is found dead by the first command). */
redisReply *cq_st_command(struct cq_store *st, int argc, const char **argv, const size_t *lens,
                          struct cq_error *err)
{
    struct cq_error local;
    if (err == NULL)
        err = &local;
    int64_t started = (int64_t)cq_now_ms(), backoff = 0;
    redisReply *r;
    for (;;) {
        pthread_mutex_lock(&st->lock);
        r = attempt_locked(st, argc, argv, lens, err);
        bool give_up = r == NULL && (st->fail_fast || cancelled(st) ||
                                     (int64_t)cq_now_ms() - started >= REDIS_WAIT_MS);
        if (r == NULL && give_up && !st->fail_fast && !cancelled(st)) {
            /* Later commands of this outage fail at once: a daemon that waited this
             * long answers with errors rather than queueing behind Redis forever. */
            st->fail_fast = true;
            cq_log_event(CQ_LOG_ERROR, "redis_reconnect_failed",
                         CQ_FIELDS(CQ_LS("host", st->host), CQ_LI("port", st->port),
                                   CQ_LI("waited_ms", REDIS_WAIT_MS), CQ_LS("error", err->msg)),
                         "Redis at %s:%d unreachable for %d s: commands fail until it "
                         "answers again",
                         st->host, st->port, REDIS_WAIT_MS / 1000);
        }
        pthread_mutex_unlock(&st->lock);
        if (r != NULL || give_up)
            break;
        backoff_sleep(st, backoff);
        backoff = backoff == 0                         ? 50
                  : backoff * 2 > REDIS_BACKOFF_MAX_MS ? REDIS_BACKOFF_MAX_MS
                                                       : backoff * 2;
    }
    if (r != NULL && r->type == REDIS_REPLY_ERROR) {
        cq_error_set(err, CQ_EINTERNAL, "Redis: %s", r->str);
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

void cq_st_arg(struct args *a, const char *s)
{
    a->v[a->n] = s;
    a->len[a->n++] = strlen(s);
}

void cq_st_arg_bin(struct args *a, const void *data, size_t len)
{
    a->v[a->n] = len > 0 ? data : "";
    a->len[a->n++] = len;
}

void cq_st_arg_int(struct args *a, int64_t value)
{
    snprintf(a->num[a->nums], sizeof(a->num[0]), "%lld", (long long)value);
    cq_st_arg(a, a->num[a->nums++]);
}

void cq_st_script(struct cq_store *st, struct args *a, const char *lua)
{
    a->n = a->nums = 0;
    cq_st_arg(a, "EVAL");
    cq_st_arg(a, lua);
    cq_st_arg(a, "0");
    cq_st_arg(a, st->prefix);
}

redisReply *cq_st_run(struct cq_store *st, struct args *a, struct cq_error *err)
{
    return cq_st_command(st, a->n, a->v, a->len, err);
}

int64_t cq_st_int_of(const redisReply *r)
{
    if (r == NULL)
        return 0;
    if (r->type == REDIS_REPLY_INTEGER)
        return r->integer;
    if (r->type == REDIS_REPLY_STRING)
        return strtoll(r->str, NULL, 10);
    return 0;
}

/* For a command whose reply says nothing: 0, or -1 when it failed (err is filled). The
 * pointer is tested before it is freed, never after. */
int cq_st_done_with(redisReply *r)
{
    if (r == NULL)
        return -1;
    freeReplyObject(r);
    return 0;
}

void cq_st_copy_str(const redisReply *r, char *out, size_t len)
{
    snprintf(out, len, "%.*s", r != NULL && r->type == REDIS_REPLY_STRING ? (int)r->len : 0,
             r != NULL && r->type == REDIS_REPLY_STRING ? r->str : "");
}

int cq_store_open(const struct cq_fleet_config *cfg, struct cq_store **out, struct cq_error *err)
{
    struct cq_store *st = calloc(1, sizeof(*st));
    if (st == NULL)
        return cq_error_sys(err, ENOMEM, "allocate store");
    pthread_mutex_init(&st->lock, NULL);
    const char *colon = strrchr(cfg->redis, ':');
    snprintf(st->host, sizeof(st->host), "%.*s",
             colon != NULL ? (int)(colon - cfg->redis) : (int)strlen(cfg->redis), cfg->redis);
    st->port = colon != NULL ? atoi(colon + 1) : 6379;
    snprintf(st->prefix, sizeof(st->prefix), "%s", cfg->prefix);
    st->files_quota = cfg->files_quota;
    pthread_mutex_init(&st->crypt_lock, NULL);
    if (cfg->master_key_file[0] != '\0') {
        if (cq_kms_local_open(cfg->master_key_file, &st->kms, err) < 0) {
            cq_store_close(st);
            return -1;
        }
        if ((st->sids = calloc(SID_SLOTS, sizeof(*st->sids))) == NULL) {
            cq_store_close(st);
            return cq_error_sys(err, ENOMEM, "allocate the session cache");
        }
    }
    if (cq_redis_dialer_new(cfg, st->host, st->port, &st->dialer, err) < 0) {
        cq_store_close(st);
        return -1;
    }
    /* Connecting makes Redis answer once (AUTH, or PING without a password), so a
     * daemon that cannot reach Redis or is refused by it says so now, and exits. No
     * further command: a client's Redis user may be limited to claim keys and their
     * commands (docs/fleet.md). */
    pthread_mutex_lock(&st->lock);
    int rc = connect_locked(st, err);
    pthread_mutex_unlock(&st->lock);
    if (rc < 0) {
        cq_store_close(st);
        return -1;
    }
    *out = st;
    return 0;
}

void cq_store_set_command_timeout(struct cq_store *st, int seconds)
{
    pthread_mutex_lock(&st->lock);
    st->command_timeout_s = seconds;
    if (st->c != NULL)
        redisSetTimeout(st->c, (struct timeval){.tv_sec = seconds > 0 ? seconds : 10});
    pthread_mutex_unlock(&st->lock);
}

void cq_store_set_cancel(struct cq_store *st, const atomic_bool *cancel)
{
    st->cancel = cancel;
}

int64_t cq_store_back_at(struct cq_store *st)
{
    pthread_mutex_lock(&st->lock);
    int64_t at = st->back_at;
    pthread_mutex_unlock(&st->lock);
    return at;
}

int cq_store_set_metrics(struct cq_store *st, struct cq_metrics *m, struct cq_error *err)
{
    struct cq_metric *seconds = NULL, *errors = NULL, *reconnects = NULL;
    if (m != NULL) {
        seconds =
            cq_metrics_histogram(m, "codeq_redis_command_seconds",
                                 "Redis commands and scripts, from sending to the reply", NULL,
                                 cq_obs_duration_buckets, cq_obs_n_duration_buckets, err);
        errors = seconds == NULL ? NULL
                                 : cq_metrics_counter(m, "codeq_redis_errors_total",
                                                      "Redis commands that failed (unreachable, "
                                                      "timed out, or an error reply)",
                                                      NULL, err);
        reconnects = errors == NULL ? NULL
                                    : cq_metrics_counter(m, "codeq_redis_reconnects_total",
                                                         "Connections to Redis made again after "
                                                         "one broke",
                                                         NULL, err);
        if (reconnects == NULL)
            return -1;
    }
    pthread_mutex_lock(&st->lock);
    st->m_seconds = seconds != NULL ? cq_metric_child(seconds, NULL) : NULL;
    st->m_errors = errors != NULL ? cq_metric_child(errors, NULL) : NULL;
    st->m_reconnects = reconnects != NULL ? cq_metric_child(reconnects, NULL) : NULL;
    pthread_mutex_unlock(&st->lock);
    return 0;
}

int cq_store_ping(struct cq_store *st, struct cq_error *err)
{
    const char *argv[] = {"PING"};
    size_t lens[] = {4};
    pthread_mutex_lock(&st->lock);
    redisReply *r = attempt_locked(st, 1, argv, lens, err);
    pthread_mutex_unlock(&st->lock);
    if (r == NULL)
        return -1;
    int rc =
        r->type == REDIS_REPLY_ERROR ? cq_error_set(err, CQ_EINTERNAL, "Redis: %s", r->str) : 0;
    freeReplyObject(r);
    return rc;
}

void cq_store_close(struct cq_store *st)
{
    if (st == NULL)
        return;
    if (st->c != NULL)
        redisFree(st->c);
    cq_redis_dialer_free(st->dialer);
    pthread_mutex_destroy(&st->lock);
    cq_kms_free(st->kms);
    for (struct dek *d = st->deks, *next; d != NULL; d = next) {
        next = d->next;
        explicit_bzero(d, sizeof(*d));
        free(d);
    }
    free(st->sids);
    pthread_mutex_destroy(&st->crypt_lock);
    free(st);
}

bool cq_store_encrypted(const struct cq_store *st)
{
    return st->kms != NULL;
}

void cq_store_log_encryption(struct cq_store *st)
{
    bool on = cq_store_encrypted(st);
    cq_log_event(CQ_LOG_INFO, "encryption_at_rest", CQ_FIELDS(CQ_LB("enabled", on)),
                 "encryption at rest: %s",
                 on ? "on (values in Redis are sealed with the tenants' data keys)"
                    : "off (no master_key_file: values in Redis are plain text)");
}

/* ---- workers ------------------------------------------------------------------------ */

static const char HEARTBEAT[] =
    "local k = ARGV[1] .. 'worker:' .. ARGV[2]\n"
    "redis.call('HSET', k, 'capacity', ARGV[3], 'sessions', ARGV[4], 'draining', ARGV[5],\n"
    "           'heartbeat_ms', ARGV[7])\n"
    "redis.call('PEXPIRE', k, ARGV[6])\n"
    "redis.call('SADD', ARGV[1] .. 'workers', ARGV[2])\n"
    "return 1\n";

int cq_store_heartbeat(struct cq_store *st, const char *worker_id, int64_t capacity,
                       int64_t sessions, bool draining, unsigned ttl_ms, struct cq_error *err)
{
    struct args a;
    cq_st_script(st, &a, HEARTBEAT);
    cq_st_arg(&a, worker_id);
    cq_st_arg_int(&a, capacity);
    cq_st_arg_int(&a, sessions);
    cq_st_arg(&a, draining ? "1" : "0");
    cq_st_arg_int(&a, ttl_ms);
    cq_st_arg_int(&a, cq_unix_ms());
    redisReply *r = cq_st_run(st, &a, err);
    return cq_st_done_with(r);
}

int cq_store_worker_gone(struct cq_store *st, const char *worker_id, struct cq_error *err)
{
    char key[160];
    snprintf(key, sizeof(key), "%sworker:%s", st->prefix, worker_id);
    const char *argv[] = {"DEL", key};
    redisReply *r = cq_st_command(st, 2, argv, NULL, err);
    return cq_st_done_with(r);
}

static const char WORKERS[] =
    "local out = {}\n"
    "for _, id in ipairs(redis.call('SMEMBERS', ARGV[1] .. 'workers')) do\n"
    "  local h = redis.call('HMGET', ARGV[1] .. 'worker:' .. id, 'capacity', 'sessions',\n"
    "                       'draining')\n"
    "  if h[1] then table.insert(out, {id, h[1], h[2], h[3]}) else table.insert(out, {id}) end\n"
    "end\n"
    "return out\n";

int cq_store_workers(struct cq_store *st, struct cq_worker_status *live, size_t max, size_t *n,
                     char (*dead)[64], size_t max_dead, size_t *n_dead, struct cq_error *err)
{
    struct args a;
    cq_st_script(st, &a, WORKERS);
    redisReply *r = cq_st_run(st, &a, err);
    if (r == NULL)
        return -1;
    *n = 0;
    if (n_dead != NULL)
        *n_dead = 0;
    for (size_t i = 0; i < r->elements; i++) {
        redisReply *e = r->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 1)
            continue;
        if (e->elements == 1) {
            if (dead != NULL && *n_dead < max_dead)
                cq_st_copy_str(e->element[0], dead[(*n_dead)++], 64);
            continue;
        }
        if (*n == max)
            continue;
        struct cq_worker_status *w = &live[(*n)++];
        cq_st_copy_str(e->element[0], w->id, sizeof(w->id));
        w->capacity = cq_st_int_of(e->element[1]);
        w->sessions = cq_st_int_of(e->element[2]);
        w->draining = cq_st_int_of(e->element[3]) != 0;
    }
    freeReplyObject(r);
    return 0;
}

/* ---- sessions ----------------------------------------------------------------------- */

/* The owner's heartbeat is its lease on all its sessions; a dead or released owner's
 * session goes to the fallback, with a new fencing token. */
static const char ROUTE[] =
    "local s = ARGV[1] .. 'session:' .. ARGV[2]\n"
    "local owner = redis.call('HGET', s, 'owner')\n"
    "if not owner or redis.call('HGET', s, 'status') == 'TERMINATED' then return {0} end\n"
    "if (redis.call('HGET', s, 'tenant') or '') ~= ARGV[4] then return {0} end\n"
    "local fence = redis.call('HGET', s, 'fence')\n"
    "if owner ~= '' and redis.call('EXISTS', ARGV[1] .. 'worker:' .. owner) == 1 then\n"
    "  return {1, owner, fence, 0}\n"
    "end\n"
    "if ARGV[3] == '' then return {1, '', fence, 0} end\n"
    "fence = redis.call('HINCRBY', s, 'fence', 1)\n"
    "redis.call('HSET', s, 'owner', ARGV[3])\n"
    "local w = ARGV[1] .. 'worker:' .. ARGV[3]\n"
    "if redis.call('EXISTS', w) == 1 then redis.call('HINCRBY', w, 'capacity', -1) end\n"
    "return {1, ARGV[3], tostring(fence), 1}\n";

int cq_store_route(struct cq_store *st, const char *session_id, const char *tenant,
                   const char *fallback, struct cq_route *route, struct cq_error *err)
{
    struct args a;
    cq_st_script(st, &a, ROUTE);
    cq_st_arg(&a, session_id);
    cq_st_arg(&a, fallback != NULL ? fallback : "");
    cq_st_arg(&a, tenant);
    redisReply *r = cq_st_run(st, &a, err);
    if (r == NULL)
        return -1;
    memset(route, 0, sizeof(*route));
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 4 && cq_st_int_of(r->element[0]) == 1) {
        route->exists = true;
        cq_st_copy_str(r->element[1], route->owner, sizeof(route->owner));
        route->fence = (uint64_t)cq_st_int_of(r->element[2]);
        route->moved = cq_st_int_of(r->element[3]) == 1;
        cq_st_remember_tenant(st, session_id, tenant);
    }
    freeReplyObject(r);
    return 0;
}

/* A client token is the tenant's own: another tenant's same token is another start.
 *
 * The session id is new (128 random bits, from the caller): a session of that id can
 * only be this call's own, made by a first run whose reply was lost (cq_st_command()
 * sends the script again). That run is answered as new (''), and nothing is done twice:
 * the token it wrote names the id, the index holds it, the worker's slot is taken. */
static const char CREATE_SESSION[] = TENANT_RECOUNT_LUA START_TOKEN_LUA
    "if redis.call('EXISTS', ARGV[1] .. 'session:' .. ARGV[2]) == 1 then return '' end\n"
    "local token = start_token(ARGV[1], ARGV[6], ARGV[4])\n"
    "if ARGV[4] ~= '' then\n"
    "  local e = redis.call('GET', token)\n"
    "  if e then return e end\n"
    "end\n"
    /* The tenant's live sessions are its index (sessions:<tenant>): a new one enters it
     * here, so that two starts at once cannot both take the last place. */
    "local idx = ARGV[1] .. 'sessions'\n"
    "if ARGV[6] ~= '' then idx = idx .. ':' .. ARGV[6] end\n"
    "local live = redis.call('ZCARD', idx)\n"
    "if tonumber(ARGV[7]) > 0 and live >= tonumber(ARGV[7]) then\n"
    "  live = tenant_recount(ARGV[1], ARGV[6])\n"
    "  if live >= tonumber(ARGV[7]) then return '!quota ' .. live end\n"
    "end\n"
    "redis.call('HSET', ARGV[1] .. 'quota:' .. ARGV[6], 'stored_bytes', ARGV[8])\n"
    "local s = ARGV[1] .. 'session:' .. ARGV[2]\n"
    "redis.call('HSET', s, 'owner', ARGV[3], 'fence', 1, 'created_ms', ARGV[5],\n"
    "           'updated_ms', ARGV[5], 'status', 'STARTING', 'tenant', ARGV[6])\n"
    "redis.call('EXPIRE', s, 3600)\n"
    "redis.call('ZADD', idx, ARGV[5], ARGV[2])\n"
    "if ARGV[4] ~= '' then redis.call('SET', token, ARGV[2], 'EX', 86400) end\n"
    "local w = ARGV[1] .. 'worker:' .. ARGV[3]\n"
    "if redis.call('EXISTS', w) == 1 then redis.call('HINCRBY', w, 'capacity', -1) end\n"
    "return ''\n";

int cq_store_create_session(struct cq_store *st, const char *session_id, const char *tenant,
                            const struct cq_quota *quota, const char *worker,
                            const char *client_token, char *existing_id, size_t existing_len,
                            struct cq_error *err)
{
    struct args a;
    cq_st_script(st, &a, CREATE_SESSION);
    cq_st_arg(&a, session_id);
    cq_st_arg(&a, worker);
    cq_st_arg(&a, client_token != NULL ? client_token : "");
    cq_st_arg_int(&a, cq_unix_ms());
    cq_st_arg(&a, tenant);
    cq_st_arg_int(&a, (int64_t)quota->sessions);
    cq_st_arg_int(&a, (int64_t)quota->stored_bytes);
    redisReply *r = cq_st_run(st, &a, err);
    if (r == NULL)
        return -1;
    int rc = 0;
    if (r->type == REDIS_REPLY_STRING && strncmp(r->str, "!quota ", 7) == 0) {
        existing_id[0] = '\0';
        rc = cq_error_set(err, CQ_ELIMIT,
                          "tenant '%s' has %s live sessions, its quota (sessions): stop one, or "
                          "wait for one to end",
                          tenant, r->str + 7);
    } else {
        cq_st_copy_str(r, existing_id, existing_len);
    }
    freeReplyObject(r);
    if (rc == 0)
        cq_st_remember_tenant(st, existing_id[0] != '\0' ? existing_id : session_id, tenant);
    return rc;
}

static const char FACTS[] =
    "local s = ARGV[1] .. 'session:' .. ARGV[2]\n"
    "if redis.call('HGET', s, 'owner') ~= ARGV[3] or redis.call('HGET', s, 'fence') ~= ARGV[4]\n"
    "then return 0 end\n"
    "redis.call('HSET', s, 'name', ARGV[5], 'updated_ms', ARGV[7], 'ttl_s', ARGV[8],\n"
    "           'status', 'READY', 'net', ARGV[9], 'net_allow', ARGV[10],\n"
    "           'interpreter', ARGV[11], 'runtime', ARGV[12], 'runtime_digest', ARGV[13],\n"
    "           'limits', ARGV[14])\n"
    "redis.call('HSETNX', s, 'created_ms', ARGV[6])\n"
    "local created = tonumber(redis.call('HGET', s, 'created_ms'))\n"
    "local expire_at = created + tonumber(ARGV[8]) * 1000\n"
    "redis.call('HSET', s, 'expires_ms', expire_at)\n"
    "redis.call('PEXPIREAT', s, expire_at + 3600000)\n"
    "local t = redis.call('HGET', s, 'tenant')\n"
    "local idx = ARGV[1] .. 'sessions'\n"
    "if t and t ~= '' then idx = idx .. ':' .. t end\n"
    "redis.call('ZADD', idx, created, ARGV[2])\n"
    "if ARGV[15] then redis.call('HSET', s, 'start', ARGV[15]) end\n"
    "return 1\n";

int cq_st_fenced(redisReply *r, const char *session_id, struct cq_error *err)
{
    if (r == NULL)
        return -1;
    int64_t v = cq_st_int_of(r);
    freeReplyObject(r);
    if (v == 0)
        return cq_error_set(err, EPERM,
                            "session '%s' has moved to another worker: this worker's writes "
                            "are fenced off",
                            session_id);
    if (v == -2)
        return cq_error_set(err, CQ_ELIMIT, "the session's files are above its quota in Redis");
    if (v == -3)
        return cq_error_set(err, CQ_ELIMIT,
                            "the tenant's quota of stored bytes (stored_bytes) is reached: "
                            "remove files, or stop sessions");
    return 0;
}

static int facts(struct cq_store *st, const char *session_id, const char *worker, uint64_t fence,
                 const struct cq_session_info *info, const void *start, size_t start_len,
                 struct cq_error *err)
{
    struct args a;
    cq_st_script(st, &a, FACTS);
    cq_st_arg(&a, session_id);
    cq_st_arg(&a, worker);
    cq_st_arg_int(&a, (int64_t)fence);
    cq_st_arg(&a, info->name);
    cq_st_arg_int(&a, info->created_at_ms);
    cq_st_arg_int(&a, info->last_updated_at_ms);
    cq_st_arg_int(&a, info->session_timeout_s);
    cq_st_arg_int(&a, info->network_mode);
    cq_st_arg(&a, info->network_allow);
    cq_st_arg(&a, info->interpreter);
    cq_st_arg(&a, info->runtime);
    cq_st_arg(&a, info->runtime_digest);
    char limits[96];
    snprintf(limits, sizeof(limits), "%llu %llu %u %llu", (unsigned long long)info->memory_bytes,
             (unsigned long long)info->pids, info->cpu_millis,
             (unsigned long long)info->disk_bytes);
    cq_st_arg(&a, limits);
    char key[160];
    snprintf(key, sizeof(key), "%ssession:%s", st->prefix, session_id);
    uint8_t *sealed = NULL;
    size_t sealed_len = 0;
    if (start != NULL && cq_st_seal_session_value(st, session_id, key, "start", start, start_len,
                                                  &sealed, &sealed_len, err) < 0)
        return -1;
    if (sealed != NULL)
        cq_st_arg_bin(&a, sealed, sealed_len);
    else if (start != NULL)
        cq_st_arg_bin(&a, start, start_len);
    int rc = cq_st_fenced(cq_st_run(st, &a, err), session_id, err);
    free(sealed);
    return rc;
}

int cq_store_session_facts(struct cq_store *st, const char *session_id, const char *worker,
                           uint64_t fence, const struct cq_session_info *info, struct cq_error *err)
{
    return facts(st, session_id, worker, fence, info, NULL, 0, err);
}

/* The start parameters go with the first facts, in the same script: a session that
 * reads READY in Redis has them, so an adopter never finds a ready session without
 * them (except one started by a worker that predates them). */
int cq_store_session_started(struct cq_store *st, const char *session_id, const char *worker,
                             uint64_t fence, const struct cq_session_info *info, const void *start,
                             size_t start_len, struct cq_error *err)
{
    return facts(st, session_id, worker, fence, info, start != NULL ? start : "", start_len, err);
}

int cq_st_get_bytes(struct cq_store *st, const char *key, const char *field, uint8_t **data,
                    size_t *len, struct cq_error *err);

int cq_store_session_start(struct cq_store *st, const char *session_id, uint8_t **start,
                           size_t *len, struct cq_error *err)
{
    char key[160];
    snprintf(key, sizeof(key), "%ssession:%s", st->prefix, session_id);
    return cq_st_get_value(st, key, "start", start, len, err);
}

/* The fields of session:<sid> that getSession and listSessions read, by name rather
 * than HGETALL: `start` (which holds the session's env, possibly secrets) is read only
 * by a worker that adopts the session. */
static const char *const INFO_FIELDS[] = {
    "name",      "created_ms",  "updated_ms", "ttl_s",          "status", "expires_ms", "net",
    "net_allow", "interpreter", "runtime",    "runtime_digest", "limits", "tenant"};
#define N_INFO_FIELDS (sizeof(INFO_FIELDS) / sizeof(INFO_FIELDS[0]))

static void fill_info(redisReply *h, const char *session_id, struct cq_session_info *info)
{
    memset(info, 0, sizeof(*info));
    snprintf(info->session_id, sizeof(info->session_id), "%s", session_id);
    info->status = CQ_SESSION_READY;
    cq_st_copy_str(h->element[0], info->name, sizeof(info->name));
    info->created_at_ms = cq_st_int_of(h->element[1]);
    info->last_updated_at_ms = cq_st_int_of(h->element[2]);
    info->session_timeout_s = (uint32_t)cq_st_int_of(h->element[3]);
    redisReply *status = h->element[4], *expires = h->element[5];
    if (status->type == REDIS_REPLY_STRING && strcmp(status->str, "TERMINATED") == 0)
        info->status = CQ_SESSION_TERMINATED;
    if (expires->type != REDIS_REPLY_NIL && cq_st_int_of(expires) <= cq_unix_ms())
        info->status = CQ_SESSION_TERMINATED;
    /* Absent (a worker that predates network modes wrote the facts): NONE, 0. */
    int64_t net = cq_st_int_of(h->element[6]);
    info->network_mode = net >= 0 && net <= 2 ? (int)net : 0;
    cq_st_copy_str(h->element[7], info->network_allow, sizeof(info->network_allow));
    /* Absent (written before code interpreters): the built-in one. */
    cq_st_copy_str(h->element[8], info->interpreter, sizeof(info->interpreter));
    if (info->interpreter[0] == '\0')
        snprintf(info->interpreter, sizeof(info->interpreter), "codeq.default");
    cq_st_copy_str(h->element[9], info->runtime, sizeof(info->runtime));
    cq_st_copy_str(h->element[10], info->runtime_digest, sizeof(info->runtime_digest));
    char limits[96];
    cq_st_copy_str(h->element[11], limits, sizeof(limits));
    unsigned long long mem = 0, pids = 0, disk = 0;
    unsigned cpu = 0;
    if (sscanf(limits, "%llu %llu %u %llu", &mem, &pids, &cpu, &disk) == 4) {
        info->memory_bytes = mem;
        info->pids = pids;
        info->cpu_millis = cpu;
        info->disk_bytes = disk;
    }
}

int cq_store_session_info(struct cq_store *st, const char *session_id, const char *tenant,
                          struct cq_session_info *info, bool *found, struct cq_error *err)
{
    char key[160];
    snprintf(key, sizeof(key), "%ssession:%s", st->prefix, session_id);
    const char *argv[2 + N_INFO_FIELDS] = {"HMGET", key};
    for (size_t i = 0; i < N_INFO_FIELDS; i++)
        argv[2 + i] = INFO_FIELDS[i];
    redisReply *r = cq_st_command(st, 2 + N_INFO_FIELDS, argv, NULL, err);
    if (r == NULL)
        return -1;
    *found = false;
    if (r->type == REDIS_REPLY_ARRAY && r->elements == N_INFO_FIELDS)
        for (size_t i = 0; i < N_INFO_FIELDS; i++)
            *found = *found || r->element[i]->type != REDIS_REPLY_NIL;
    /* Another tenant's session is not found, exactly as a session that never was: no
     * answer tells one tenant that an id is another's. */
    if (*found && tenant != NULL) {
        const redisReply *t = r->element[N_INFO_FIELDS - 1];
        *found = strcmp(t->type == REDIS_REPLY_STRING ? t->str : "", tenant) == 0;
    }
    if (*found)
        fill_info(r, session_id, info);
    freeReplyObject(r);
    return 0;
}

int cq_store_list_sessions(struct cq_store *st, const char *tenant, size_t max, const char *after,
                           struct cq_session_info *out, size_t *n, char *next, size_t next_len,
                           struct cq_error *err)
{
    /* One index per tenant: a page never needs to skip another tenant's sessions. */
    char key[160];
    snprintf(key, sizeof(key), "%ssessions%s%s", st->prefix, tenant[0] ? ":" : "", tenant);
    const char *argv[] = {"ZREVRANGE", key, "0", "9999"};
    redisReply *r = cq_st_command(st, 4, argv, NULL, err);
    if (r == NULL)
        return -1;
    *n = 0;
    next[0] = '\0';
    bool started = after == NULL || after[0] == '\0';
    for (size_t i = 0; i < r->elements; i++) {
        const char *id = r->element[i]->str;
        if (!started) {
            started = strcmp(id, after) == 0;
            continue;
        }
        if (*n == max) {
            /* The token is the last id returned: with max 0 nothing was, and the next
             * page starts where this one would have (after). */
            snprintf(next, next_len, "%s",
                     max > 0 ? out[*n - 1].session_id : (after != NULL ? after : ""));
            break;
        }
        bool found = false;
        if (cq_store_session_info(st, id, tenant, &out[*n], &found, err) < 0) {
            freeReplyObject(r);
            return -1;
        }
        if (found)
            (*n)++;
    }
    freeReplyObject(r);
    return 0;
}

static const char END_SESSION[] = START_TOKEN_LUA
    "local s = ARGV[1] .. 'session:' .. ARGV[2]\n"
    "if ARGV[3] ~= '' and (redis.call('HGET', s, 'owner') ~= ARGV[3] or\n"
    "                      redis.call('HGET', s, 'fence') ~= ARGV[4]) then return 0 end\n"
    /* Only a start that never made its session (recovery, for a dead worker's start):
     * one that did is READY, and adoption keeps it. */
    "if ARGV[10] == 'starting' and redis.call('HGET', s, 'status') ~= 'STARTING' then\n"
    "  return 2\n"
    "end\n"
    /* A start that failed frees its client token (if it still names this session): a
     * retry with the token then starts a session instead of getting this dead one. */
    "if ARGV[9] ~= '' then\n"
    "  local k = start_token(ARGV[1], ARGV[8], ARGV[9])\n"
    "  if redis.call('GET', k) == ARGV[2] then redis.call('DEL', k) end\n"
    "end\n"
    "local held = tonumber(redis.call('HGET', ARGV[1] .. 'files:' .. ARGV[2], 'bytes') or '0')\n"
    "if held > 0 then\n"
    "  redis.call('DECRBY', ARGV[1] .. 'stored:' .. (redis.call('HGET', s, 'tenant') or ''), "
    "held)\n"
    "end\n"
    "redis.call('DEL', ARGV[1] .. 'files:' .. ARGV[2], ARGV[1] .. 'chunks:' .. ARGV[2],\n"
    "           ARGV[1] .. 'state:' .. ARGV[2])\n"
    /* Stored replies go with their session: they hold its outputs and file contents.
     * Not at once: a copy of a request redelivered after a dispatcher restart, or a
     * client's retry, must still get the reply it had, so they expire ARGV[7] seconds
     * from now (or sooner, as they would have). Only finished requests' (a running
     * one's worker still stores its reply). */
    "local function soon(k)\n"
    "  local t = redis.call('TTL', k)\n"
    "  if t == -1 or t > tonumber(ARGV[7]) then redis.call('EXPIRE', k, ARGV[7]) end\n"
    "end\n"
    "local rs, cs = ARGV[1] .. 'results:' .. ARGV[2], ARGV[1] .. 'claims:' .. ARGV[2]\n"
    "for _, rid in ipairs(redis.call('SMEMBERS', rs)) do\n"
    "  local k = ARGV[1] .. 'req:' .. rid\n"
    "  if redis.call('HGET', k, 'state') == 'done' then\n"
    "    soon(k)\n"
    "    soon(ARGV[1] .. 'result:' .. rid)\n"
    "  end\n"
    "end\n"
    "for _, id in ipairs(redis.call('SMEMBERS', cs)) do soon(ARGV[1] .. 'claim:' .. id) end\n"
    "redis.call('DEL', rs, cs)\n"
    "local t = redis.call('HGET', s, 'tenant')\n"
    "redis.call('ZREM', ARGV[1] .. 'sessions' .. ((t and t ~= '') and (':' .. t) or ''), ARGV[2])\n"
    "if redis.call('EXISTS', s) == 1 then\n"
    "  redis.call('HSET', s, 'status', 'TERMINATED', 'owner', '', 'updated_ms', ARGV[5])\n"
    "  redis.call('HDEL', s, 'start')\n"
    "  redis.call('EXPIRE', s, ARGV[6])\n"
    "end\n"
    "return 1\n";

static int end_session(struct cq_store *st, const char *session_id, const char *worker,
                       uint64_t fence, const char *tenant, const char *client_token,
                       bool only_starting, bool *ended, struct cq_error *err)
{
    struct args a;
    cq_st_script(st, &a, END_SESSION);
    cq_st_arg(&a, session_id);
    cq_st_arg(&a, worker != NULL ? worker : "");
    cq_st_arg_int(&a, (int64_t)fence);
    cq_st_arg_int(&a, cq_unix_ms());
    cq_st_arg_int(&a, ENDED_KEPT_S);
    cq_st_arg_int(&a, RESULT_AFTER_END_S);
    cq_st_arg(&a, tenant != NULL ? tenant : "");
    cq_st_arg(&a, client_token != NULL ? client_token : "");
    cq_st_arg(&a, only_starting ? "starting" : "");
    redisReply *r = cq_st_run(st, &a, err);
    if (r != NULL && r->type == REDIS_REPLY_INTEGER && r->integer == 2) {
        freeReplyObject(r);
        *ended = false;
        return 0;
    }
    *ended = true;
    return cq_st_fenced(r, session_id, err);
}

int cq_store_end_session(struct cq_store *st, const char *session_id, const char *worker,
                         uint64_t fence, struct cq_error *err)
{
    bool ended;
    return end_session(st, session_id, worker, fence, NULL, NULL, false, &ended, err);
}

int cq_store_end_start(struct cq_store *st, const char *session_id, const char *worker,
                       uint64_t fence, const char *tenant, const char *client_token,
                       struct cq_error *err)
{
    bool ended;
    return end_session(st, session_id, worker, fence, tenant, client_token, false, &ended, err);
}

int cq_store_end_lost_start(struct cq_store *st, const char *session_id, const char *worker,
                            const char *tenant, const char *client_token, bool *ended,
                            struct cq_error *err)
{
    /* A session is made with fence 1 and keeps it until a worker adopts it, which only
     * a READY one is. */
    return end_session(st, session_id, worker, 1, tenant, client_token, true, ended, err);
}

static const char RELEASE[] =
    "local s = ARGV[1] .. 'session:' .. ARGV[2]\n"
    "if redis.call('HGET', s, 'owner') ~= ARGV[3] or redis.call('HGET', s, 'fence') ~= ARGV[4]\n"
    "then return 0 end\n"
    "redis.call('HSET', s, 'owner', '')\n"
    "return 1\n";

int cq_store_release_session(struct cq_store *st, const char *session_id, const char *worker,
                             uint64_t fence, struct cq_error *err)
{
    struct args a;
    cq_st_script(st, &a, RELEASE);
    cq_st_arg(&a, session_id);
    cq_st_arg(&a, worker);
    cq_st_arg_int(&a, (int64_t)fence);
    return cq_st_fenced(cq_st_run(st, &a, err), session_id, err);
}

int cq_store_owner(struct cq_store *st, const char *session_id, char *owner, size_t len,
                   uint64_t *fence, struct cq_error *err)
{
    char key[160];
    snprintf(key, sizeof(key), "%ssession:%s", st->prefix, session_id);
    const char *argv[] = {"HMGET", key, "owner", "fence"};
    redisReply *r = cq_st_command(st, 4, argv, NULL, err);
    if (r == NULL)
        return -1;
    cq_st_copy_str(r->elements > 0 ? r->element[0] : NULL, owner, len);
    *fence = r->elements > 1 ? (uint64_t)cq_st_int_of(r->element[1]) : 0;
    freeReplyObject(r);
    return 0;
}

/* ---- requests ----------------------------------------------------------------------- */

/* One counter per tenant and second (rate:<tenant>:<unix s>), gone two seconds later. */
static const char COUNT_REQUEST[] = "local k = ARGV[1] .. 'rate:' .. ARGV[2] .. ':' .. ARGV[3]\n"
                                    "local n = redis.call('INCR', k)\n"
                                    "if n == 1 then redis.call('PEXPIRE', k, 2000) end\n"
                                    "return n\n";

int cq_store_count_request(struct cq_store *st, const char *tenant, uint64_t *count,
                           struct cq_error *err)
{
    struct args a;
    cq_st_script(st, &a, COUNT_REQUEST);
    cq_st_arg(&a, tenant);
    cq_st_arg_int(&a, cq_unix_ms() / 1000);
    redisReply *r = cq_st_run(st, &a, err);
    if (r == NULL)
        return -1;
    *count = (uint64_t)cq_st_int_of(r);
    freeReplyObject(r);
    return 0;
}

static enum cq_request_state state_of(const redisReply *r)
{
    if (r == NULL || r->type != REDIS_REPLY_STRING)
        return CQ_REQ_NONE;
    if (strcmp(r->str, "forwarded") == 0)
        return CQ_REQ_FORWARDED;
    if (strcmp(r->str, "running") == 0)
        return CQ_REQ_RUNNING;
    if (strcmp(r->str, "done") == 0)
        return CQ_REQ_DONE;
    return CQ_REQ_NONE;
}

int cq_store_request_state(struct cq_store *st, const char *request_id,
                           enum cq_request_state *state, char *worker, size_t worker_len,
                           char digest[CQ_STORE_DIGEST_LEN + 1], struct cq_error *err)
{
    char key[200];
    snprintf(key, sizeof(key), "%sreq:%s", st->prefix, request_id);
    const char *argv[] = {"HMGET", key, "state", "worker", "digest"};
    redisReply *r = cq_st_command(st, 5, argv, NULL, err);
    if (r == NULL)
        return -1;
    bool three = r->type == REDIS_REPLY_ARRAY && r->elements == 3;
    *state = state_of(three ? r->element[0] : NULL);
    if (worker != NULL)
        cq_st_copy_str(three ? r->element[1] : NULL, worker, worker_len);
    if (digest != NULL)
        cq_st_copy_str(three ? r->element[2] : NULL, digest, CQ_STORE_DIGEST_LEN + 1);
    freeReplyObject(r);
    return 0;
}

/* A tenant's executions at once (executing:<tenant>, request ids by the time they were
 * admitted): admit(set, max, rid, now) adds rid unless max are there already. A request
 * the fleet never finished (an expired record) leaves after an hour, the longest a call
 * runs, so that the count mends itself. FINISH takes a finished one out. */
#define ADMIT_LUA                                                                                  \
    "local function admit(set, max, rid, now)\n"                                                   \
    "  local key = ARGV[1] .. 'executing:' .. set\n"                                               \
    "  redis.call('ZREMRANGEBYSCORE', key, '-inf', tonumber(now) - 3600000)\n"                     \
    "  if not redis.call('ZSCORE', key, rid) and redis.call('ZCARD', key) >= tonumber(max) then\n" \
    "    return false\n"                                                                           \
    "  end\n"                                                                                      \
    "  redis.call('ZADD', key, now, rid)\n"                                                        \
    "  redis.call('HSET', ARGV[1] .. 'req:' .. rid, 'executing', key)\n"                           \
    "  return true\n"                                                                              \
    "end\n"

static const char FORWARD[] = ADMIT_LUA
    "local k = ARGV[1] .. 'req:' .. ARGV[2]\n"
    "local state = redis.call('HGET', k, 'state')\n"
    "if state == 'running' or state == 'done' then return state end\n"
    "local old = redis.call('HGET', k, 'worker')\n"
    "if old and old ~= ARGV[3] then redis.call('ZREM', ARGV[1] .. 'inflight:' .. old, ARGV[2]) "
    "end\n"
    "if ARGV[8] ~= '' and not admit(ARGV[8], ARGV[9], ARGV[2], ARGV[6]) then\n"
    "  return 'quota'\n"
    "end\n"
    "redis.call('HSET', k, 'state', 'forwarded', 'worker', ARGV[3], 'session', ARGV[4],\n"
    "           'body', ARGV[5])\n"
    "if ARGV[7] ~= '' then redis.call('HSETNX', k, 'digest', ARGV[7]) end\n"
    "redis.call('EXPIRE', k, 86400)\n"
    "redis.call('ZADD', ARGV[1] .. 'inflight:' .. ARGV[3], ARGV[6], ARGV[2])\n"
    "return 'forwarded'\n";

int cq_store_forward(struct cq_store *st, const char *request_id, const char *worker,
                     const char *session_id, const void *body, size_t len, const char *digest,
                     const char *tenant, uint64_t max_executions, enum cq_request_state *state,
                     struct cq_error *err)
{
    char key[200];
    snprintf(key, sizeof(key), "%sreq:%s", st->prefix, request_id);
    uint8_t *sealed;
    size_t sealed_len;
    if (cq_st_seal_session_value(st, session_id, key, "body", body, len, &sealed, &sealed_len,
                                 err) < 0)
        return -1;
    struct args a;
    cq_st_script(st, &a, FORWARD);
    cq_st_arg(&a, request_id);
    cq_st_arg(&a, worker);
    cq_st_arg(&a, session_id);
    cq_st_arg_bin(&a, sealed != NULL ? sealed : body, sealed != NULL ? sealed_len : len);
    cq_st_arg_int(&a, cq_unix_ms());
    cq_st_arg(&a, digest);
    cq_st_arg(&a, max_executions > 0 ? tenant : "");
    cq_st_arg_int(&a, (int64_t)max_executions);
    redisReply *r = cq_st_run(st, &a, err);
    free(sealed);
    if (r == NULL)
        return -1;
    *state = r->type == REDIS_REPLY_STRING && strcmp(r->str, "quota") == 0 ? CQ_REQ_OVER_QUOTA
                                                                           : state_of(r);
    freeReplyObject(r);
    return 0;
}

/* ROUTE's live-owner branch followed by FORWARD, for a request id with no state yet;
 * {0} (nothing written) wherever either script would do something else. */
static const char ROUTE_FORWARD[] = ADMIT_LUA
    "local k = ARGV[1] .. 'req:' .. ARGV[2]\n"
    "if redis.call('HGET', k, 'state') then return {0} end\n"
    "local h = redis.call('HMGET', ARGV[1] .. 'session:' .. ARGV[3], 'owner', 'fence', 'status',\n"
    "                     'tenant')\n"
    "local owner = h[1]\n"
    "if not owner or owner == '' or h[3] == 'TERMINATED' or (h[4] or '') ~= ARGV[6] or\n"
    "   redis.call('EXISTS', ARGV[1] .. 'worker:' .. owner) == 0 then return {0} end\n"
    "if ARGV[8] ~= '' and not admit(ARGV[8], ARGV[9], ARGV[2], ARGV[5]) then return {0} end\n"
    "redis.call('HSET', k, 'state', 'forwarded', 'worker', owner, 'session', ARGV[3],\n"
    "           'body', ARGV[4])\n"
    "if ARGV[7] ~= '' then redis.call('HSET', k, 'digest', ARGV[7]) end\n"
    "redis.call('EXPIRE', k, 86400)\n"
    "redis.call('ZADD', ARGV[1] .. 'inflight:' .. owner, ARGV[5], ARGV[2])\n"
    "return {1, owner, h[2]}\n";

int cq_store_route_forward(struct cq_store *st, const char *request_id, const char *session_id,
                           const char *tenant, const void *body, size_t len, const char *digest,
                           uint64_t max_executions, struct cq_route *route, bool *routed,
                           struct cq_error *err)
{
    *routed = false;
    /* Sealed under the tenant the request claims: the script writes nothing unless the
     * session is that tenant's. */
    char key[200];
    snprintf(key, sizeof(key), "%sreq:%s", st->prefix, request_id);
    uint8_t *sealed;
    size_t sealed_len;
    if (cq_st_seal_value(st, tenant, key, "body", body, len, &sealed, &sealed_len, err) < 0)
        return -1;
    struct args a;
    cq_st_script(st, &a, ROUTE_FORWARD);
    cq_st_arg(&a, request_id);
    cq_st_arg(&a, session_id);
    cq_st_arg_bin(&a, sealed != NULL ? sealed : body, sealed != NULL ? sealed_len : len);
    cq_st_arg_int(&a, cq_unix_ms());
    cq_st_arg(&a, tenant);
    cq_st_arg(&a, digest);
    cq_st_arg(&a, max_executions > 0 ? tenant : "");
    cq_st_arg_int(&a, (int64_t)max_executions);
    redisReply *r = cq_st_run(st, &a, err);
    free(sealed);
    if (r == NULL)
        return -1;
    memset(route, 0, sizeof(*route));
    *routed = r->type == REDIS_REPLY_ARRAY && r->elements == 3 && cq_st_int_of(r->element[0]) == 1;
    if (*routed) {
        route->exists = true;
        cq_st_copy_str(r->element[1], route->owner, sizeof(route->owner));
        route->fence = (uint64_t)cq_st_int_of(r->element[2]);
        cq_st_remember_tenant(st, session_id, tenant);
    }
    freeReplyObject(r);
    return 0;
}

/* ARGV[4] names this claim: when a retry after a lost reply finds the request running
 * under the same name, the claim was this caller's, and it must run the request. */
/* ARGV[5] and ARGV[6], a signed request's digest and tenant: the message must be the one
 * the dispatcher admitted under this id, for a session of its tenant ("conflict": not
 * claimed, and no stored reply goes out for it either). */
static const char CLAIM[] =
    "local k = ARGV[1] .. 'req:' .. ARGV[2]\n"
    "local h = redis.call('HMGET', k, 'state', 'worker', 'claim', 'session', 'digest')\n"
    "if (h[5] or '') ~= ARGV[5] then return {'conflict'} end\n"
    "if h[4] then\n"
    "  local t = redis.call('HGET', ARGV[1] .. 'session:' .. h[4], 'tenant')\n"
    "  if t and t ~= ARGV[6] then return {'conflict'} end\n"
    "end\n"
    "local mine = h[1] == 'running' and h[3] == ARGV[4]\n"
    "if h[1] == 'forwarded' and h[2] == ARGV[3] then\n"
    "  redis.call('HSET', k, 'state', 'running', 'claim', ARGV[4])\n"
    "  mine = true\n"
    "end\n"
    "if not mine then return {h[1] or 'none'} end\n"
    "local s = redis.call('HMGET', ARGV[1] .. 'session:' .. (h[4] or ''), 'owner', 'fence')\n"
    "if s[1] == ARGV[3] then return {'claimed', s[2]} end\n"
    "return {'claimed', '0'}\n";

int cq_store_claim(struct cq_store *st, const char *request_id, const char *worker,
                   const char *tenant, const char *digest, enum cq_request_state *state,
                   uint64_t *fence, bool *claimed, struct cq_error *err)
{
    *claimed = false;
    char claim[33];
    cq_random_id(claim, 32);
    struct args a;
    cq_st_script(st, &a, CLAIM);
    cq_st_arg(&a, request_id);
    cq_st_arg(&a, worker);
    cq_st_arg(&a, claim);
    cq_st_arg(&a, digest);
    cq_st_arg(&a, tenant);
    redisReply *r = cq_st_run(st, &a, err);
    if (r == NULL)
        return -1;
    const redisReply *what = r->type == REDIS_REPLY_ARRAY && r->elements > 0 ? r->element[0] : NULL;
    *claimed =
        what != NULL && what->type == REDIS_REPLY_STRING && strcmp(what->str, "claimed") == 0;
    *state = *claimed ? CQ_REQ_RUNNING : state_of(what);
    *fence = *claimed && r->elements > 1 ? (uint64_t)cq_st_int_of(r->element[1]) : 0;
    freeReplyObject(r);
    return 0;
}

/* Done with this very reply: a retry after a lost reply, or recovery settling the same
 * lost request twice; either way it is stored, so 1 (0: another outcome was). */
static const char FINISH[] =
    "local k = ARGV[1] .. 'req:' .. ARGV[2]\n"
    "local h = redis.call('HMGET', k, 'state', 'worker')\n"
    "if h[1] == 'done' then\n"
    "  if redis.call('GET', ARGV[1] .. 'result:' .. ARGV[2]) == ARGV[4] then return 1 end\n"
    "  return 2\n"
    "end\n"
    "if ARGV[3] ~= '' and (h[1] ~= 'running' or h[2] ~= ARGV[3]) then return 0 end\n"
    "redis.call('SET', ARGV[1] .. 'result:' .. ARGV[2], ARGV[4], 'EX', ARGV[5])\n"
    "local session = redis.call('HGET', k, 'session')\n"
    "if session and session ~= '' then\n"
    "  local rs = ARGV[1] .. 'results:' .. session\n"
    "  redis.call('SADD', rs, ARGV[2])\n"
    "  redis.call('EXPIRE', rs, ARGV[5])\n"
    "end\n"
    "redis.call('HSET', k, 'state', 'done')\n"
    "local executing = redis.call('HGET', k, 'executing')\n"
    "if executing then redis.call('ZREM', executing, ARGV[2]) end\n"
    /* The body stays while the request is in its worker's in-flight set: its reply may
     * not have gone out (the worker stores before it publishes when its lease is in
     * doubt, and Kafka may not take a reply in time), and recovery needs the request
     * (its reply topic, ids) to publish the stored reply again. INFLIGHT_DONE drops it. */
    "if not (h[2] and h[2] ~= '' and\n"
    "        redis.call('ZSCORE', ARGV[1] .. 'inflight:' .. h[2], ARGV[2])) then\n"
    "  redis.call('HDEL', k, 'body')\n"
    "end\n"
    "redis.call('EXPIRE', k, ARGV[5])\n"
    "return 1\n";

/* The tenant of a request: its session's ("" for none, or a request not recorded). */
static const char REQUEST_TENANT[] =
    "local s = redis.call('HGET', ARGV[1] .. 'req:' .. ARGV[2], 'session')\n"
    "if not s or s == '' then return {'', ''} end\n"
    "return {s, redis.call('HGET', ARGV[1] .. 'session:' .. s, 'tenant') or ''}\n";

static int seal_result(struct cq_store *st, const char *request_id, const char *key,
                       const void *response, size_t len, uint8_t **sealed, size_t *sealed_len,
                       struct cq_error *err)
{
    *sealed = NULL;
    if (st->kms == NULL)
        return 0;
    struct args a;
    cq_st_script(st, &a, REQUEST_TENANT);
    cq_st_arg(&a, request_id);
    redisReply *r = cq_st_run(st, &a, err);
    if (r == NULL)
        return -1;
    char sid[64] = "", tenant[CQ_CRYPT_TENANT_MAX + 1] = "";
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 2) {
        cq_st_copy_str(r->element[0], sid, sizeof(sid));
        cq_st_copy_str(r->element[1], tenant, sizeof(tenant));
    }
    freeReplyObject(r);
    cq_st_remember_tenant(st, sid, tenant);
    return cq_st_seal_value(st, tenant, key, NULL, response, len, sealed, sealed_len, err);
}

/* FINISH found the request done with other bytes: under encryption, the same reply
 * sealed again (another nonce) is still this very reply. */
static bool same_result(struct cq_store *st, const char *key, const void *response, size_t len)
{
    struct cq_error ignored;
    uint8_t *stored = NULL;
    size_t stored_len = 0;
    bool same = st->kms != NULL &&
                cq_st_get_value(st, key, NULL, &stored, &stored_len, &ignored) == 0 &&
                stored != NULL && stored_len == len && memcmp(stored, response, len) == 0;
    free(stored);
    return same;
}

int cq_store_finish(struct cq_store *st, const char *request_id, const char *worker,
                    const void *response, size_t len, bool *stored, struct cq_error *err)
{
    *stored = false;
    char key[200];
    snprintf(key, sizeof(key), "%sresult:%s", st->prefix, request_id);
    uint8_t *sealed;
    size_t sealed_len;
    if (seal_result(st, request_id, key, response, len, &sealed, &sealed_len, err) < 0)
        return -1;
    struct args a;
    cq_st_script(st, &a, FINISH);
    cq_st_arg(&a, request_id);
    cq_st_arg(&a, worker != NULL ? worker : "");
    cq_st_arg_bin(&a, sealed != NULL ? sealed : response, sealed != NULL ? sealed_len : len);
    cq_st_arg_int(&a, RESULT_TTL_S);
    redisReply *r = cq_st_run(st, &a, err);
    free(sealed);
    if (r == NULL)
        return -1;
    int64_t v = cq_st_int_of(r);
    freeReplyObject(r);
    *stored = v == 1 || (v == 2 && same_result(st, key, response, len));
    return 0;
}

/* A finished request leaves the in-flight set with its body (FINISH kept it for recovery
 * while its reply might not have gone out). */
static const char INFLIGHT_DONE[] =
    "for i = 3, #ARGV do\n"
    "  redis.call('ZREM', ARGV[1] .. 'inflight:' .. ARGV[2], ARGV[i])\n"
    "  local k = ARGV[1] .. 'req:' .. ARGV[i]\n"
    "  if redis.call('HGET', k, 'state') == 'done' then redis.call('HDEL', k, 'body') end\n"
    "end\n"
    "return 1\n";

int cq_store_inflight_done_many(struct cq_store *st, const char *worker, char (*ids)[64], size_t n,
                                struct cq_error *err)
{
    if (n > 256)
        return cq_error_set(err, CQ_EINVALID, "at most 256 ids at once, not %zu", n);
    if (n == 0)
        return 0;
    struct args a;
    cq_st_script(st, &a, INFLIGHT_DONE);
    cq_st_arg(&a, worker);
    for (size_t i = 0; i < n; i++)
        cq_st_arg(&a, ids[i]);
    return cq_st_done_with(cq_st_run(st, &a, err));
}

int cq_store_inflight_done(struct cq_store *st, const char *worker, const char *request_id,
                           struct cq_error *err)
{
    char id[1][64];
    snprintf(id[0], sizeof(id[0]), "%s", request_id);
    return cq_store_inflight_done_many(st, worker, id, 1, err);
}

int cq_st_get_bytes(struct cq_store *st, const char *key, const char *field, uint8_t **data,
                    size_t *len, struct cq_error *err)
{
    const char *argv[] = {field != NULL ? "HGET" : "GET", key, field};
    redisReply *r = cq_st_command(st, field != NULL ? 3 : 2, argv, NULL, err);
    if (r == NULL)
        return -1;
    *data = NULL;
    *len = 0;
    if (r->type == REDIS_REPLY_STRING) {
        *data = malloc(r->len ? r->len : 1);
        if (*data == NULL) {
            freeReplyObject(r);
            return cq_error_sys(err, ENOMEM, "allocate %zu bytes", r->len);
        }
        memcpy(*data, r->str, r->len);
        *len = r->len;
    }
    freeReplyObject(r);
    return 0;
}

int cq_store_result(struct cq_store *st, const char *request_id, uint8_t **data, size_t *len,
                    struct cq_error *err)
{
    char key[200];
    snprintf(key, sizeof(key), "%sresult:%s", st->prefix, request_id);
    return cq_st_get_value(st, key, NULL, data, len, err);
}

int cq_store_inflight(struct cq_store *st, const char *worker, char (*ids)[64], size_t max,
                      size_t *n, struct cq_error *err)
{
    char key[160], stop[32];
    snprintf(key, sizeof(key), "%sinflight:%s", st->prefix, worker);
    snprintf(stop, sizeof(stop), "%zu", max > 0 ? max - 1 : 0);
    const char *argv[] = {"ZRANGE", key, "0", stop};
    redisReply *r = cq_st_command(st, 4, argv, NULL, err);
    if (r == NULL)
        return -1;
    *n = 0;
    for (size_t i = 0; i < r->elements && *n < max; i++)
        cq_st_copy_str(r->element[i], ids[(*n)++], 64);
    freeReplyObject(r);
    return 0;
}

int cq_store_request(struct cq_store *st, const char *request_id, uint8_t **body, size_t *len,
                     enum cq_request_state *state, struct cq_error *err)
{
    if (cq_store_request_state(st, request_id, state, NULL, 0, NULL, err) < 0)
        return -1;
    char key[200];
    snprintf(key, sizeof(key), "%sreq:%s", st->prefix, request_id);
    return cq_st_get_value(st, key, "body", body, len, err);
}

int cq_store_lock(struct cq_store *st, const char *name, unsigned ttl_ms, bool *taken,
                  struct cq_error *err)
{
    char key[200], ttl[32];
    snprintf(key, sizeof(key), "%slock:%s", st->prefix, name);
    snprintf(ttl, sizeof(ttl), "%u", ttl_ms);
    const char *argv[] = {"SET", key, "1", "NX", "PX", ttl};
    redisReply *r = cq_st_command(st, 6, argv, NULL, err);
    if (r == NULL)
        return -1;
    *taken = r->type == REDIS_REPLY_STATUS;
    freeReplyObject(r);
    return 0;
}

int cq_store_forget_worker(struct cq_store *st, const char *worker, struct cq_error *err)
{
    char key[160];
    snprintf(key, sizeof(key), "%sworkers", st->prefix);
    const char *argv[] = {"SREM", key, worker};
    redisReply *r = cq_st_command(st, 3, argv, NULL, err);
    return cq_st_done_with(r);
}

/* ---- claims ------------------------------------------------------------------------- */

/* A claim is one Redis string written and read in CLAIM_PIECE slices: a 150 MB value in
 * one command would make Redis (single-threaded) copy it while every other client
 * waits, and hiredis would need it in one buffer twice over. SETRANGE at an offset
 * (not APPEND) because cq_st_command() sends a command again when its reply was lost, and
 * writing the same slice at the same place twice changes nothing; GETRANGE reads a
 * slice without copying the rest. */
#define CLAIM_PIECE (1024 * 1024)

static void claim_key(const struct cq_store *st, const char *id, char *out, size_t len)
{
    snprintf(out, len, "%sclaim:%s", st->prefix, id);
}

int cq_store_claim_put(struct cq_store *st, const char *id, const void *data, size_t len,
                       unsigned ttl_s, const char *session_id, struct cq_error *err)
{
    char key[160], ttl[16];
    claim_key(st, id, key, sizeof(key));
    snprintf(ttl, sizeof(ttl), "%u", ttl_s ? ttl_s : 1);
    const uint8_t *bytes = data;
    for (size_t off = 0; off == 0 || off < len; off += CLAIM_PIECE) {
        size_t n = len - off < CLAIM_PIECE ? len - off : CLAIM_PIECE;
        /* The first slice sets the key (and its time to live), replacing anything there:
         * ids are random, so only an earlier attempt of this same write could be. */
        char at[24];
        snprintf(at, sizeof(at), "%zu", off);
        const char *set[] = {"SET", key, (const char *)bytes, "EX", ttl};
        const size_t set_lens[] = {3, strlen(key), n, 2, strlen(ttl)};
        const char *setrange[] = {"SETRANGE", key, at, (const char *)bytes + off};
        const size_t setrange_lens[] = {8, strlen(key), strlen(at), n};
        redisReply *r = off == 0 ? cq_st_command(st, 5, set, set_lens, err)
                                 : cq_st_command(st, 4, setrange, setrange_lens, err);
        if (cq_st_done_with(r) < 0) {
            struct cq_error ignored;
            cq_store_claim_delete(st, id, &ignored); /* no half-written claim left */
            return cq_error_prefix(err, "store a claim of %zu bytes", len);
        }
        if (len == 0)
            break;
    }
    if (session_id == NULL || session_id[0] == '\0')
        return 0;
    /* Listed with its session, so that ending the session deletes it (END_SESSION). */
    char set[200];
    snprintf(set, sizeof(set), "%sclaims:%s", st->prefix, session_id);
    const char *sadd[] = {"SADD", set, id};
    if (cq_st_done_with(cq_st_command(st, 3, sadd, NULL, err)) < 0)
        return -1;
    const char *expire[] = {"EXPIRE", set, ttl};
    return cq_st_done_with(cq_st_command(st, 3, expire, NULL, err));
}

int cq_store_claim_get(struct cq_store *st, const char *id, uint64_t size, uint8_t **data,
                       struct cq_error *err)
{
    *data = NULL;
    char key[160];
    claim_key(st, id, key, sizeof(key));
    const char *strlen_argv[] = {"STRLEN", key};
    redisReply *r = cq_st_command(st, 2, strlen_argv, NULL, err);
    if (r == NULL)
        return -1;
    long long stored = r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
    freeReplyObject(r);
    if (stored <= 0 && size > 0)
        return cq_error_set(err, CQ_ENOTFOUND,
                            "the payload stored in Redis for this message is gone (its time to "
                            "live ran out, or its session ended)");
    if ((uint64_t)stored != size)
        return cq_error_set(err, CQ_EINVALID,
                            "the payload stored in Redis has %lld bytes, the message says %llu",
                            stored, (unsigned long long)size);
    uint8_t *buf = malloc(size ? size : 1);
    if (buf == NULL)
        return cq_error_sys(err, ENOMEM, "allocate %llu bytes", (unsigned long long)size);
    for (uint64_t off = 0; off < size; off += CLAIM_PIECE) {
        uint64_t n = size - off < CLAIM_PIECE ? size - off : CLAIM_PIECE;
        char from[24], to[24];
        snprintf(from, sizeof(from), "%llu", (unsigned long long)off);
        snprintf(to, sizeof(to), "%llu", (unsigned long long)(off + n - 1));
        const char *argv[] = {"GETRANGE", key, from, to};
        r = cq_st_command(st, 4, argv, NULL, err);
        if (r == NULL) {
            free(buf);
            return -1;
        }
        /* Shorter: the key was replaced or deleted between two slices. */
        bool whole = r->type == REDIS_REPLY_STRING && r->len == n;
        if (whole)
            memcpy(buf + off, r->str, n);
        freeReplyObject(r);
        if (!whole) {
            free(buf);
            return cq_error_set(err, CQ_ENOTFOUND,
                                "the payload stored in Redis for this message changed while it "
                                "was read");
        }
    }
    *data = buf;
    return 0;
}

int cq_store_claim_delete(struct cq_store *st, const char *id, struct cq_error *err)
{
    char key[160];
    claim_key(st, id, key, sizeof(key));
    /* UNLINK: a large value is freed by Redis's background thread. */
    const char *argv[] = {"UNLINK", key};
    return cq_st_done_with(cq_st_command(st, 2, argv, NULL, err));
}
