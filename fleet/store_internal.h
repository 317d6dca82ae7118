/* fleet/store_internal.h - what the parts of the store share (fleet/store.c: the
 * connection, workers, sessions, requests and claims; store_values.c: encryption at
 * rest of the values; store_files.c: files and kernel state; store_keys.c: data key
 * rotation and the keyring). Private to them: everyone else uses fleet/store.h. */
#ifndef CQ_FLEET_STORE_INTERNAL_H
#define CQ_FLEET_STORE_INTERNAL_H

#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include "common/error.h"
#include "fleet/crypt.h"
#include "fleet/store.h"

#define CHUNK_BYTES  (512 * 1024)
#define RESULT_TTL_S 86400
#define ENDED_KEPT_S 3600
/* How long a session's stored replies outlive it (END_SESSION). */
#define RESULT_AFTER_END_S 600
/* How long one command waits for an unreachable Redis (a restart, a failover) before it
 * fails; the backoff between attempts doubles up to REDIS_BACKOFF_MAX_MS. */
#define REDIS_WAIT_MS        30000
#define REDIS_BACKOFF_MAX_MS 1000

struct cq_store {
    pthread_mutex_t lock;
    redisContext *c;
    struct cq_redis_dialer *dialer; /* TCP, TLS and AUTH of each (re)connection */
    char host[200];
    int port;
    char prefix[64];
    uint64_t files_quota;
    const atomic_bool *cancel; /* set: the daemon stops, waiting for Redis ends */
    int64_t down_since;        /* monotonic ms of the first failure of an outage, or 0 */
    int64_t back_at;           /* monotonic ms the last outage ended, or 0 */
    /* Fail at once rather than wait: once a wait ran out in an outage, until Redis
     * answers again. (At start, cq_store_open() connects once, without waiting: a
     * daemon that cannot reach Redis says so and exits.) */
    bool fail_fast;
    /* How long one command may block (cq_store_set_command_timeout); 0: 10 s. */
    int command_timeout_s;
    /* Metrics (cq_store_set_metrics), or NULL; dialed: a connection was made before,
     * so the next one is a reconnection. */
    struct cq_metric_child *m_seconds, *m_errors, *m_reconnects;
    bool dialed;
    /* Encryption at rest (fleet/crypt.h, "values" below): NULL keeps values in plain
     * text. The caches are behind their own lock, never held across a command. */
    struct cq_kms *kms;
    pthread_mutex_t crypt_lock;
    struct dek *deks;
    struct sid_tenant *sids; /* SID_SLOTS */
};

/* The key of a client token (start:<tenant>:<token>, start:<token> keyless). */
#define START_TOKEN_LUA                                                                            \
    "local function start_token(p, tenant, token)\n"                                               \
    "  if tenant ~= '' then return p .. 'start:' .. tenant .. ':' .. token end\n"                  \
    "  return p .. 'start:' .. token\n"                                                            \
    "end\n"

/* A Lua function the quota scripts share: tenant_recount(prefix, tenant) prunes the
 * tenant's session index (sessions:<tenant>) of sessions that are gone or ended, and
 * returns how many are left and the bytes of their files, setting stored:<tenant> to the
 * latter. Quotas are checked against counters that are cheap to read (ZCARD of the
 * index, stored:<tenant>); but a session whose worker was lost and that expired before
 * anyone adopted it leaves an entry no one removes and bytes no one subtracts, and its
 * tenant would be refused for sessions and files it no longer has. So a check that a
 * counter fails is made again on the recount: a counter that drifted heals the first
 * time it matters, and the O(sessions) walk is paid only by a tenant at its limit.
 * (A session past its end but still there is counted: its worker ends it, and its
 * end subtracts its bytes; an orphan's keys expire an hour after its end.) */
#define TENANT_RECOUNT_LUA                                                                         \
    "local function tenant_recount(prefix, t)\n"                                                   \
    "  local idx = prefix .. 'sessions' .. ((t and t ~= '') and (':' .. t) or '')\n"               \
    "  local live, bytes = 0, 0\n"                                                                 \
    "  for _, sid in ipairs(redis.call('ZRANGE', idx, 0, -1)) do\n"                                \
    "    local status = redis.call('HGET', prefix .. 'session:' .. sid, 'status')\n"               \
    "    if not status or status == 'TERMINATED' then\n"                                           \
    "      redis.call('ZREM', idx, sid)\n"                                                         \
    "    else\n"                                                                                   \
    "      live = live + 1\n"                                                                      \
    "      local f = redis.call('HGET', prefix .. 'files:' .. sid, 'bytes')\n"                     \
    "      bytes = bytes + tonumber(f or '0')\n"                                                   \
    "    end\n"                                                                                    \
    "  end\n"                                                                                      \
    "  redis.call('SET', prefix .. 'stored:' .. (t or ''), bytes)\n"                               \
    "  return live, bytes\n"                                                                       \
    "end\n"

/* EVAL of a script with ARGV only: the prefix is always ARGV[1]. */
struct args {
    const char *v[600];
    size_t len[600];
    char num[8][32];
    int n, nums;
};

/* Encryption at rest's caches (store_values.c). */
#define SID_SLOTS      4096
#define DEK_RECHECK_MS 30000

struct dek {
    struct dek *next;
    char tenant[CQ_CRYPT_TENANT_MAX + 1];
    uint32_t version;
    bool current;       /* the version new values use */
    int64_t checked_ms; /* when current was last read from Redis */
    uint8_t key[CQ_CRYPT_KEY_LEN];
};

struct sid_tenant {
    char sid[64];
    char tenant[CQ_CRYPT_TENANT_MAX + 1];
};

/* ---- commands (store.c) -------------------------------------------------------------- */

/* A command, reconnecting and waiting out an outage (store.c explains how long). */
redisReply *cq_st_command(struct cq_store *st, int argc, const char **argv, const size_t *lens,
                          struct cq_error *err);
void cq_st_arg(struct args *a, const char *s);
void cq_st_arg_bin(struct args *a, const void *data, size_t len);
void cq_st_arg_int(struct args *a, int64_t value);
/* Starts an EVAL of lua: the prefix is ARGV[1], cq_st_arg*() add the rest. */
void cq_st_script(struct cq_store *st, struct args *a, const char *lua);
redisReply *cq_st_run(struct cq_store *st, struct args *a, struct cq_error *err);
int64_t cq_st_int_of(const redisReply *r);
/* For a command whose reply says nothing: 0, or -1 when it failed. Frees r. */
int cq_st_done_with(redisReply *r);
void cq_st_copy_str(const redisReply *r, char *out, size_t len);
/* A fenced script's reply as an error: 0 ran; EPERM fenced off; CQ_ELIMIT quotas. */
int cq_st_fenced(redisReply *r, const char *session_id, struct cq_error *err);
/* A raw hash field (malloc'd), or *data NULL when there is none. */
int cq_st_get_bytes(struct cq_store *st, const char *key, const char *field, uint8_t **data,
                    size_t *len, struct cq_error *err);

/* ---- values (store_values.c) ------------------------------------------------------- */

/* With a master key, a value on its way to Redis is sealed (bound to key_name and
 * field) and opened on its way back; without one both copy. *out is malloc'd. */
int cq_st_seal_value(struct cq_store *st, const char *tenant, const char *key_name,
                     const char *field, const void *data, size_t len, uint8_t **out,
                     size_t *out_len, struct cq_error *err);
int cq_st_seal_session_value(struct cq_store *st, const char *sid, const char *key_name,
                             const char *field, const void *data, size_t len, uint8_t **out,
                             size_t *out_len, struct cq_error *err);
int cq_st_open_value(struct cq_store *st, const char *key_name, const char *field, uint8_t **data,
                     size_t *len, struct cq_error *err);
int cq_st_get_value(struct cq_store *st, const char *key, const char *field, uint8_t **data,
                    size_t *len, struct cq_error *err);
int cq_st_session_tenant(struct cq_store *st, const char *sid, char tenant[CQ_CRYPT_TENANT_MAX + 1],
                         struct cq_error *err);
void cq_st_remember_tenant(struct cq_store *st, const char *sid, const char *tenant);
/* Runs a, a script started by cq_st_script() with every argument but its last, with a
 * fresh data key for tenant's version, wrapped by the master key, as that last one:
 * what a tenant's first data key (DEK_CREATE) and a rotation (DEK_ADD) share. The
 * script's reply, or NULL with err set. */
redisReply *cq_st_run_new_dek(struct cq_store *st, struct args *a, const char *tenant,
                              uint32_t version, struct cq_error *err);

#endif
