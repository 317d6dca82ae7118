/* fleet/store_gateway.c - which tenant of `codeq serve` owns which session (fleet/store.h,
 * "codeq serve's sessions"). Part of fleet/store.c.
 *
 * A gateway signs the fleet's requests with one key of its own, so the fleet's records
 * (session:<sid>'s tenant, sessions:<tenant>) name the gateway, not the gateway's
 * clients: these records say which of them started a session, so that every replica
 * of the gateway answers for it alike. Plain text, as session:<sid>'s tenant is: names
 * and times, no user data. */
#define _GNU_SOURCE
#include "fleet/store_internal.h"
#include "common/clock.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A record outlives its session as the fleet's session:<sid> does, so that a stopped
 * session is answered TERMINATED (not "not found") for as long as the fleet knows it. */
#define GW_KEPT_MS ((int64_t)ENDED_KEPT_S * 1000)

/* The index member: the creation time, zero-padded, and the id, so that the index sorts
 * by creation under one score and a page starts after a member whether or not that
 * member is still there. */
static void member_of(int64_t created_ms, const char *sid, char *out, size_t len)
{
    snprintf(out, len, "%015lld:%s", (long long)created_ms, sid);
}

/* ARGV: prefix, sid, tenant, interpreter, created_ms, member, ttl_ms. An existing record
 * is kept (a start answered again for its client token): its tenant and interpreter are
 * returned, for the caller to compare. */
static const char GW_PUT[] =
    "local k = ARGV[1] .. 'gateway:session:' .. ARGV[2]\n"
    "local cur = redis.call('HMGET', k, 'tenant', 'interpreter')\n"
    "if cur[1] then return {cur[1], cur[2] or ''} end\n"
    "redis.call('HSET', k, 'tenant', ARGV[3], 'interpreter', ARGV[4], 'created_ms', ARGV[5])\n"
    "redis.call('PEXPIRE', k, ARGV[7])\n"
    "local idx = ARGV[1] .. 'gateway:sessions:' .. ARGV[3]\n"
    "redis.call('ZADD', idx, 0, ARGV[6])\n"
    "if redis.call('PTTL', idx) < tonumber(ARGV[7]) then redis.call('PEXPIRE', idx, ARGV[7]) end\n"
    "return {}\n";

int cq_store_gateway_put(struct cq_store *st, const char *sid, const char *tenant,
                         const char *interpreter, int64_t created_ms, int64_t expires_ms,
                         struct cq_gateway_session *existing, bool *existed, struct cq_error *err)
{
    char member[CQ_STORE_GATEWAY_TOKEN_MAX + 1];
    member_of(created_ms, sid, member, sizeof(member));
    int64_t ttl = expires_ms - cq_unix_ms() + GW_KEPT_MS;
    struct args a;
    cq_st_script(st, &a, GW_PUT);
    cq_st_arg(&a, sid);
    cq_st_arg(&a, tenant);
    cq_st_arg(&a, interpreter);
    cq_st_arg_int(&a, created_ms);
    cq_st_arg(&a, member);
    cq_st_arg_int(&a, ttl > GW_KEPT_MS ? ttl : GW_KEPT_MS);
    redisReply *r = cq_st_run(st, &a, err);
    if (r == NULL)
        return -1;
    *existed = r->type == REDIS_REPLY_ARRAY && r->elements == 2;
    if (*existed) {
        cq_st_copy_str(r->element[0], existing->tenant, sizeof(existing->tenant));
        cq_st_copy_str(r->element[1], existing->interpreter, sizeof(existing->interpreter));
    }
    freeReplyObject(r);
    return 0;
}

int cq_store_gateway_get(struct cq_store *st, const char *sid, struct cq_gateway_session *out,
                         bool *found, struct cq_error *err)
{
    char key[200];
    snprintf(key, sizeof(key), "%sgateway:session:%s", st->prefix, sid);
    const char *argv[] = {"HMGET", key, "tenant", "interpreter", "created_ms"};
    redisReply *r = cq_st_command(st, 5, argv, NULL, err);
    if (r == NULL)
        return -1;
    *found = r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
             r->element[0]->type == REDIS_REPLY_STRING;
    if (*found) {
        cq_st_copy_str(r->element[0], out->tenant, sizeof(out->tenant));
        cq_st_copy_str(r->element[1], out->interpreter, sizeof(out->interpreter));
        out->created_ms = cq_st_int_of(r->element[2]);
    }
    freeReplyObject(r);
    return 0;
}

/* ARGV: prefix, sid, kept_ms. Only ever shortened: a record past its session's end is
 * kept as long as the fleet keeps the session. */
static const char GW_ENDED[] =
    "local k = ARGV[1] .. 'gateway:session:' .. ARGV[2]\n"
    "local ttl = redis.call('PTTL', k)\n"
    "if ttl > tonumber(ARGV[3]) then redis.call('PEXPIRE', k, ARGV[3]) end\n"
    "return 0\n";

int cq_store_gateway_ended(struct cq_store *st, const char *sid, struct cq_error *err)
{
    struct args a;
    cq_st_script(st, &a, GW_ENDED);
    cq_st_arg(&a, sid);
    cq_st_arg_int(&a, GW_KEPT_MS);
    return cq_st_done_with(cq_st_run(st, &a, err));
}

/* ARGV: prefix, sid. */
static const char GW_FORGET[] =
    "local k = ARGV[1] .. 'gateway:session:' .. ARGV[2]\n"
    "local cur = redis.call('HMGET', k, 'tenant', 'created_ms')\n"
    "if not cur[1] then return 0 end\n"
    "redis.call('DEL', k)\n"
    "redis.call('ZREM', ARGV[1] .. 'gateway:sessions:' .. cur[1],\n"
    "           string.rep('0', 15 - #(cur[2] or '0')) .. (cur[2] or '0') .. ':' .. ARGV[2])\n"
    "return 1\n";

int cq_store_gateway_forget(struct cq_store *st, const char *sid, struct cq_error *err)
{
    struct args a;
    cq_st_script(st, &a, GW_FORGET);
    cq_st_arg(&a, sid);
    return cq_st_done_with(cq_st_run(st, &a, err));
}

/* ARGV: prefix, tenant, after ("" from the newest), max. Newest first; members whose
 * record expired (or is another tenant's: never written so) leave the index here. */
static const char GW_LIST[] =
    "local idx = ARGV[1] .. 'gateway:sessions:' .. ARGV[2]\n"
    "local from = ARGV[3] == '' and '+' or ('(' .. ARGV[3])\n"
    "local want = tonumber(ARGV[4])\n"
    "local out = {}\n"
    "while #out < 2 * want do\n"
    "  local page = redis.call('ZREVRANGEBYLEX', idx, from, '-', 'LIMIT', 0, want)\n"
    "  if #page == 0 then break end\n"
    "  for _, m in ipairs(page) do\n"
    "    from = '(' .. m\n"
    "    local sid = string.sub(m, 17)\n"
    "    local rec = redis.call('HMGET', ARGV[1] .. 'gateway:session:' .. sid, 'tenant',\n"
    "                           'interpreter')\n"
    "    if rec[1] == ARGV[2] then\n"
    "      if #out < 2 * want then out[#out + 1] = m; out[#out + 1] = rec[2] or '' end\n"
    "    else\n"
    "      redis.call('ZREM', idx, m)\n"
    "    end\n"
    "  end\n"
    "end\n"
    "return out\n";

int cq_store_gateway_list(struct cq_store *st, const char *tenant, const char *after, size_t max,
                          struct cq_gateway_entry *out, size_t *n, struct cq_error *err)
{
    *n = 0;
    struct args a;
    cq_st_script(st, &a, GW_LIST);
    cq_st_arg(&a, tenant);
    cq_st_arg(&a, after != NULL ? after : "");
    cq_st_arg_int(&a, (int64_t)max);
    redisReply *r = cq_st_run(st, &a, err);
    if (r == NULL)
        return -1;
    for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i + 1 < r->elements && *n < max; i += 2) {
        struct cq_gateway_entry *e = &out[*n];
        cq_st_copy_str(r->element[i], e->token, sizeof(e->token));
        const char *colon = strchr(e->token, ':');
        if (colon == NULL || strlen(colon + 1) > CQ_SESSION_ID_MAX)
            continue; /* not one of ours */
        snprintf(e->session_id, sizeof(e->session_id), "%s", colon + 1);
        cq_st_copy_str(r->element[i + 1], e->interpreter, sizeof(e->interpreter));
        (*n)++;
    }
    freeReplyObject(r);
    return 0;
}
