/* fleet/store_interp.c - interpreters, runtimes, the layer cache and the build lock in
 * Redis (fleet/interpreters.h; docs/fleet.md has the keys). Part of fleet/store.c.
 *
 * Definitions are small and written by operators; layers are large (megabytes to
 * hundreds of them) and written once per runtime version. A layer goes in 1 MiB slices
 * (SETRANGE, as claims do: one command per slice keeps Redis responsive to the rest of
 * the fleet) under a temporary key, and one script renames it into place together
 * with the runtime's record, so the record never names a layer that is not whole. */
#define _GNU_SOURCE
#include "fleet/interpreters.h"
#include "common/clock.h"
#include "common/random.h"
#include "fleet/auth.h"
#include "fleet/codec.h"
#include "fleet/keys.h"
#include "fleet/store_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LAYER_PIECE (1024 * 1024)
/* A temporary layer key is dropped after this long, should its writer die mid-way. */
#define LAYER_TMP_TTL_S 3600

void cq_fleet_sha256_hex(const void *data, size_t len, char out[65])
{
    uint8_t h[32];
    cq_sha256(data, len, h);
    for (int i = 0; i < 32; i++)
        sprintf(out + 2 * i, "%02x", h[i]);
}

static int check_name(const char *what, const char *name, struct cq_error *err)
{
    if (!cq_codec_interpreter_name_ok(name))
        return cq_error_set(err, CQ_EINVALID,
                            "%s name '%s' is not [a-z0-9][a-z0-9._-]{0,62}, nor . or ..", what,
                            name);
    return 0;
}

void cq_fleet_names_free(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The members of a set key (sorted). */
static int set_members(struct cq_store *st, const char *set, char ***names, size_t *n,
                       struct cq_error *err)
{
    char key[160];
    snprintf(key, sizeof(key), "%s%s", st->prefix, set);
    const char *argv[] = {"SMEMBERS", key};
    redisReply *r = cq_st_command(st, 2, argv, NULL, err);
    *names = NULL;
    *n = 0;
    if (r == NULL)
        return -1;
    *names = calloc(r->elements + 1, sizeof(char *));
    if (*names == NULL) {
        freeReplyObject(r);
        return cq_error_sys(err, ENOMEM, "list %s", set);
    }
    for (size_t i = 0; i < r->elements; i++)
        if (r->element[i]->type == REDIS_REPLY_STRING &&
            ((*names)[*n] = strndup(r->element[i]->str, r->element[i]->len)) != NULL)
            (*n)++;
    freeReplyObject(r);
    if (*n > 0)
        qsort(*names, *n, sizeof(char *), cmp_str);
    return 0;
}

/* ---- interpreters ----------------------------------------------------------------------- */

static const char INTERP_PUT[] =
    "local k = ARGV[1] .. 'interpreter:' .. ARGV[2]\n"
    "if ARGV[5] ~= '1' and redis.call('HEXISTS', k, 'def') == 1 and\n"
    "   redis.call('HEXISTS', k, 'deleted_ms') == 0 then return 0 end\n"
    "redis.call('DEL', k)\n"
    "redis.call('HSET', k, 'def', ARGV[3], 'runtime', ARGV[4], 'created_ms', ARGV[6],\n"
    "           'tenants', ARGV[7])\n"
    "redis.call('SADD', ARGV[1] .. 'interpreters', ARGV[2])\n"
    "return 1\n";

/* A comma-separated list of tenant names: what cq_fleet_interpreter_allows() splits. */
static int check_tenants(const char *tenants, struct cq_error *err)
{
    for (const char *p = tenants; *p != '\0';) {
        size_t n = strcspn(p, ",");
        char name[CQ_TENANT_MAX + 1] = "";
        if (n <= CQ_TENANT_MAX) {
            memcpy(name, p, n);
            name[n] = '\0';
        }
        if (!cq_tenant_name_ok(name) || (p[n] == ',' && p[n + 1] == '\0'))
            return cq_error_set(err, CQ_EINVALID, "tenants '%.80s': not a list of tenant names",
                                tenants);
        p += n + (p[n] == ',');
    }
    return 0;
}

int cq_store_interpreter_put(struct cq_store *st, const char *name, const char *runtime,
                             const char *tenants, const char *def, bool replace,
                             struct cq_error *err)
{
    if (check_name("interpreter", name, err) < 0 ||
        (runtime[0] != '\0' && check_name("runtime", runtime, err) < 0) ||
        check_tenants(tenants, err) < 0)
        return -1;
    struct args a;
    cq_st_script(st, &a, INTERP_PUT);
    cq_st_arg(&a, name);
    cq_st_arg(&a, def);
    cq_st_arg(&a, runtime);
    cq_st_arg(&a, replace ? "1" : "0");
    cq_st_arg_int(&a, cq_unix_ms());
    cq_st_arg(&a, tenants);
    redisReply *r = cq_st_run(st, &a, err);
    if (r == NULL)
        return -1;
    int64_t v = cq_st_int_of(r);
    freeReplyObject(r);
    if (v == 0)
        return cq_error_set(err, EEXIST, "the fleet has an interpreter '%s' already", name);
    return 0;
}

int cq_store_interpreter_get(struct cq_store *st, const char *name,
                             struct cq_fleet_interpreter *out, bool *found, struct cq_error *err)
{
    memset(out, 0, sizeof(*out));
    *found = false;
    if (check_name("interpreter", name, err) < 0)
        return -1;
    char key[160];
    snprintf(key, sizeof(key), "%sinterpreter:%s", st->prefix, name);
    const char *argv[] = {"HMGET", key, "def", "runtime", "created_ms", "deleted_ms", "tenants"};
    redisReply *r = cq_st_command(st, 7, argv, NULL, err);
    if (r == NULL)
        return -1;
    int rc = 0;
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 5 &&
        r->element[0]->type == REDIS_REPLY_STRING) {
        *found = true;
        out->def = strndup(r->element[0]->str, r->element[0]->len);
        /* A record written before tenants were kept has none: every tenant, as then. */
        redisReply *t = r->element[4];
        out->tenants = t->type == REDIS_REPLY_STRING ? strndup(t->str, t->len) : strdup("");
        if (out->def == NULL || out->tenants == NULL)
            rc = cq_error_sys(err, ENOMEM, "read interpreter '%s'", name);
        cq_st_copy_str(r->element[1], out->runtime, sizeof(out->runtime));
        out->created_ms = cq_st_int_of(r->element[2]);
        out->deleted = r->element[3]->type == REDIS_REPLY_STRING;
        out->deleted_ms = cq_st_int_of(r->element[3]);
    }
    freeReplyObject(r);
    return rc;
}

void cq_fleet_interpreter_free(struct cq_fleet_interpreter *it)
{
    free(it->def);
    it->def = NULL;
    free(it->tenants);
    it->tenants = NULL;
}

bool cq_fleet_interpreter_allows(const struct cq_fleet_interpreter *it, const char *tenant)
{
    if (it->tenants == NULL || it->tenants[0] == '\0')
        return true;
    if (tenant == NULL || tenant[0] == '\0')
        return false;
    size_t len = strlen(tenant);
    for (const char *p = it->tenants; *p != '\0';) {
        size_t n = strcspn(p, ",");
        if (n == len && strncmp(p, tenant, n) == 0)
            return true;
        p += n + (p[n] == ',');
    }
    return false;
}

static const char INTERP_DELETE[] =
    "local k = ARGV[1] .. 'interpreter:' .. ARGV[2]\n"
    "if redis.call('HEXISTS', k, 'def') == 0 or redis.call('HEXISTS', k, 'deleted_ms') == 1\n"
    "then return 0 end\n"
    "redis.call('HSET', k, 'deleted_ms', ARGV[3])\n"
    "redis.call('EXPIRE', k, ARGV[4])\n"
    "redis.call('SREM', ARGV[1] .. 'interpreters', ARGV[2])\n"
    "return 1\n";

int cq_store_interpreter_delete(struct cq_store *st, const char *name, struct cq_error *err)
{
    if (check_name("interpreter", name, err) < 0)
        return -1;
    struct args a;
    cq_st_script(st, &a, INTERP_DELETE);
    cq_st_arg(&a, name);
    cq_st_arg_int(&a, cq_unix_ms());
    cq_st_arg_int(&a, CQ_FLEET_DELETED_KEPT_S);
    redisReply *r = cq_st_run(st, &a, err);
    if (r == NULL)
        return -1;
    int64_t v = cq_st_int_of(r);
    freeReplyObject(r);
    if (v == 0)
        return cq_error_set(err, CQ_ENOTFOUND, "the fleet has no interpreter '%s'", name);
    return 0;
}

int cq_store_interpreter_names(struct cq_store *st, char ***names, size_t *n, struct cq_error *err)
{
    return set_members(st, "interpreters", names, n, err);
}

/* ---- runtimes ------------------------------------------------------------------------------ */

static const char RUNTIME_PUT[] =
    "local k = ARGV[1] .. 'runtime:' .. ARGV[2]\n"
    "local old = redis.call('HGET', k, 'digest')\n"
    "if old and old ~= '' then redis.call('UNLINK', ARGV[1] .. 'layer:' .. old) end\n"
    "redis.call('DEL', k)\n"
    "redis.call('HSET', k, 'spec', ARGV[3], 'spec_sha256', ARGV[4], 'wheelhouse', ARGV[5],\n"
    "           'index_url', ARGV[6], 'updated_ms', ARGV[7])\n"
    "redis.call('SADD', ARGV[1] .. 'runtimes', ARGV[2])\n"
    "return 1\n";

int cq_store_runtime_put(struct cq_store *st, const char *name, const char *spec,
                         const char *wheelhouse, const char *index_url, struct cq_error *err)
{
    if (check_name("runtime", name, err) < 0)
        return -1;
    char sha[65];
    cq_fleet_sha256_hex(spec, strlen(spec), sha);
    struct args a;
    cq_st_script(st, &a, RUNTIME_PUT);
    cq_st_arg(&a, name);
    cq_st_arg(&a, spec);
    cq_st_arg(&a, sha);
    cq_st_arg(&a, wheelhouse != NULL ? wheelhouse : "");
    cq_st_arg(&a, index_url != NULL ? index_url : "");
    cq_st_arg_int(&a, cq_unix_ms());
    return cq_st_done_with(cq_st_run(st, &a, err));
}

int cq_store_runtime_get(struct cq_store *st, const char *name, struct cq_fleet_runtime *out,
                         bool *found, struct cq_error *err)
{
    memset(out, 0, sizeof(*out));
    *found = false;
    if (check_name("runtime", name, err) < 0)
        return -1;
    char key[160];
    snprintf(key, sizeof(key), "%sruntime:%s", st->prefix, name);
    const char *argv[] = {"HMGET",     key,         "spec",         "wheelhouse",
                          "index_url", "digest",    "layer_sha256", "layer_size",
                          "built_by",  "updated_ms"};
    redisReply *r = cq_st_command(st, 10, argv, NULL, err);
    if (r == NULL)
        return -1;
    int rc = 0;
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 8 &&
        r->element[0]->type == REDIS_REPLY_STRING) {
        *found = true;
        out->spec = strndup(r->element[0]->str, r->element[0]->len);
        if (out->spec == NULL)
            rc = cq_error_sys(err, ENOMEM, "read runtime '%s'", name);
        cq_st_copy_str(r->element[1], out->wheelhouse, sizeof(out->wheelhouse));
        cq_st_copy_str(r->element[2], out->index_url, sizeof(out->index_url));
        cq_st_copy_str(r->element[3], out->digest, sizeof(out->digest));
        cq_st_copy_str(r->element[4], out->layer_sha256, sizeof(out->layer_sha256));
        out->layer_size = (uint64_t)cq_st_int_of(r->element[5]);
        cq_st_copy_str(r->element[6], out->built_by, sizeof(out->built_by));
        out->updated_ms = cq_st_int_of(r->element[7]);
    }
    freeReplyObject(r);
    return rc;
}

void cq_fleet_runtime_free(struct cq_fleet_runtime *rt)
{
    free(rt->spec);
    rt->spec = NULL;
}

static const char RUNTIME_DELETE[] =
    "local k = ARGV[1] .. 'runtime:' .. ARGV[2]\n"
    "if redis.call('EXISTS', k) == 0 then return 0 end\n"
    "local old = redis.call('HGET', k, 'digest')\n"
    "if old and old ~= '' then redis.call('UNLINK', ARGV[1] .. 'layer:' .. old) end\n"
    "redis.call('DEL', k)\n"
    "redis.call('SREM', ARGV[1] .. 'runtimes', ARGV[2])\n"
    "return 1\n";

int cq_store_runtime_delete(struct cq_store *st, const char *name, struct cq_error *err)
{
    if (check_name("runtime", name, err) < 0)
        return -1;
    struct args a;
    cq_st_script(st, &a, RUNTIME_DELETE);
    cq_st_arg(&a, name);
    redisReply *r = cq_st_run(st, &a, err);
    if (r == NULL)
        return -1;
    int64_t v = cq_st_int_of(r);
    freeReplyObject(r);
    return v == 0 ? cq_error_set(err, CQ_ENOTFOUND, "the fleet has no runtime '%s'", name) : 0;
}

int cq_store_runtime_names(struct cq_store *st, char ***names, size_t *n, struct cq_error *err)
{
    return set_members(st, "runtimes", names, n, err);
}

/* ---- the layer cache ------------------------------------------------------------------------ */

/* ARGV: prefix, name, spec_sha256, digest, tmp key ("" none), sha, size, built_by, token
 * ("" none), now. 1 done; -1 the lock is not the token's; -2 the spec changed. */
static const char LAYER_COMMIT[] =
    "local k = ARGV[1] .. 'runtime:' .. ARGV[2]\n"
    "local function drop() if ARGV[5] ~= '' then redis.call('UNLINK', ARGV[5]) end end\n"
    "if ARGV[9] ~= '' and redis.call('GET', ARGV[1] .. 'lock:build:' .. ARGV[2]) ~= ARGV[9]\n"
    "then drop() return -1 end\n"
    "if redis.call('HGET', k, 'spec_sha256') ~= ARGV[3] then drop() return -2 end\n"
    "local old = redis.call('HGET', k, 'digest')\n"
    "if old and old ~= '' and old ~= ARGV[4] then\n"
    "  redis.call('UNLINK', ARGV[1] .. 'layer:' .. old)\n"
    "end\n"
    "if ARGV[5] ~= '' then\n"
    "  redis.call('RENAME', ARGV[5], ARGV[1] .. 'layer:' .. ARGV[4])\n"
    "  redis.call('PERSIST', ARGV[1] .. 'layer:' .. ARGV[4])\n"
    "end\n"
    "redis.call('HSET', k, 'digest', ARGV[4], 'layer_sha256', ARGV[6], 'layer_size', ARGV[7],\n"
    "           'built_by', ARGV[8], 'updated_ms', ARGV[10])\n"
    "return 1\n";

int cq_store_layer_put(struct cq_store *st, const char *name, const char *spec_sha256,
                       const char *digest, const void *data, size_t len, const char *built_by,
                       const char *token, struct cq_error *err)
{
    if (check_name("runtime", name, err) < 0)
        return -1;
    char tmp[200] = "", sha[65] = "";
    if (data != NULL) {
        char id[33];
        cq_random_id(id, 32);
        snprintf(tmp, sizeof(tmp), "%slayertmp:%s", st->prefix, id);
        cq_fleet_sha256_hex(data, len, sha);
        char ttl[16];
        snprintf(ttl, sizeof(ttl), "%d", LAYER_TMP_TTL_S);
        const uint8_t *bytes = data;
        for (size_t off = 0; off == 0 || off < len; off += LAYER_PIECE) {
            size_t n = len - off < LAYER_PIECE ? len - off : LAYER_PIECE;
            char at[24];
            snprintf(at, sizeof(at), "%zu", off);
            /* SETRANGE at an offset: a slice sent twice (a lost reply) lands in the
             * same place. */
            const char *set[] = {"SET", tmp, (const char *)bytes, "EX", ttl};
            const size_t set_lens[] = {3, strlen(tmp), n, 2, strlen(ttl)};
            const char *setrange[] = {"SETRANGE", tmp, at, (const char *)bytes + off};
            const size_t setrange_lens[] = {8, strlen(tmp), strlen(at), n};
            redisReply *r = off == 0 ? cq_st_command(st, 5, set, set_lens, err)
                                     : cq_st_command(st, 4, setrange, setrange_lens, err);
            if (cq_st_done_with(r) < 0) {
                const char *del[] = {"UNLINK", tmp};
                cq_st_done_with(cq_st_command(st, 2, del, NULL, NULL));
                return cq_error_prefix(err, "cache the layer of runtime '%s' (%zu bytes)", name,
                                       len);
            }
            if (len == 0)
                break;
        }
    }
    struct args a;
    cq_st_script(st, &a, LAYER_COMMIT);
    cq_st_arg(&a, name);
    cq_st_arg(&a, spec_sha256);
    cq_st_arg(&a, digest);
    cq_st_arg(&a, tmp);
    cq_st_arg(&a, sha);
    cq_st_arg_int(&a, data != NULL ? (int64_t)len : 0);
    cq_st_arg(&a, built_by);
    cq_st_arg(&a, token != NULL ? token : "");
    cq_st_arg_int(&a, cq_unix_ms());
    redisReply *r = cq_st_run(st, &a, err);
    if (r == NULL)
        return -1;
    int64_t v = cq_st_int_of(r);
    freeReplyObject(r);
    if (v == -1)
        return cq_error_set(err, EBUSY,
                            "runtime '%s': the build lock expired before the layer was stored "
                            "(another builder took over)",
                            name);
    if (v == -2)
        return cq_error_set(err, CQ_EINVALID,
                            "runtime '%s' was pushed again while it was built: this build is "
                            "dropped",
                            name);
    return 0;
}

int cq_store_layer_get(struct cq_store *st, const struct cq_fleet_runtime *rt, uint8_t **data,
                       size_t *len, struct cq_error *err)
{
    *data = NULL;
    *len = 0;
    if (rt->digest[0] == '\0' || rt->layer_sha256[0] == '\0')
        return cq_error_set(err, CQ_ENOTFOUND, "no layer in the fleet's cache");
    char key[200];
    snprintf(key, sizeof(key), "%slayer:%s", st->prefix, rt->digest);
    const char *strlen_argv[] = {"STRLEN", key};
    redisReply *r = cq_st_command(st, 2, strlen_argv, NULL, err);
    if (r == NULL)
        return -1;
    long long stored = r->type == REDIS_REPLY_INTEGER ? r->integer : 0;
    freeReplyObject(r);
    if (stored == 0)
        return cq_error_set(err, CQ_ENOTFOUND, "the layer %s is not in the fleet's cache",
                            rt->digest);
    if ((uint64_t)stored != rt->layer_size)
        return cq_error_set(err, CQ_EINVALID,
                            "the cached layer %s has %lld bytes, its runtime's record says %llu",
                            rt->digest, stored, (unsigned long long)rt->layer_size);
    uint8_t *buf = malloc((size_t)stored);
    if (buf == NULL)
        return cq_error_sys(err, ENOMEM, "allocate %lld bytes for a layer", stored);
    for (uint64_t off = 0; off < (uint64_t)stored; off += LAYER_PIECE) {
        uint64_t n = (uint64_t)stored - off < LAYER_PIECE ? (uint64_t)stored - off : LAYER_PIECE;
        char from[24], to[24];
        snprintf(from, sizeof(from), "%llu", (unsigned long long)off);
        snprintf(to, sizeof(to), "%llu", (unsigned long long)(off + n - 1));
        const char *argv[] = {"GETRANGE", key, from, to};
        r = cq_st_command(st, 4, argv, NULL, err);
        bool whole = r != NULL && r->type == REDIS_REPLY_STRING && r->len == n;
        if (whole)
            memcpy(buf + off, r->str, n);
        if (r != NULL)
            freeReplyObject(r);
        if (!whole) {
            free(buf);
            return r == NULL
                       ? -1
                       : cq_error_set(err, CQ_ENOTFOUND,
                                      "the cached layer %s changed while it was read", rt->digest);
        }
    }
    char sha[65];
    cq_fleet_sha256_hex(buf, (size_t)stored, sha);
    if (strcmp(sha, rt->layer_sha256) != 0) {
        free(buf);
        return cq_error_set(err, CQ_EINVALID,
                            "the cached layer %s does not match its record (SHA-256 %s, "
                            "recorded %s): refused",
                            rt->digest, sha, rt->layer_sha256);
    }
    *data = buf;
    *len = (size_t)stored;
    return 0;
}

/* ---- the build lock ---------------------------------------------------------------------------
 */

int cq_store_build_lock(struct cq_store *st, const char *name, const char *token, unsigned ttl_ms,
                        bool *taken, struct cq_error *err)
{
    char key[200], ttl[32];
    snprintf(key, sizeof(key), "%slock:build:%s", st->prefix, name);
    snprintf(ttl, sizeof(ttl), "%u", ttl_ms);
    const char *argv[] = {"SET", key, token, "NX", "PX", ttl};
    redisReply *r = cq_st_command(st, 6, argv, NULL, err);
    if (r == NULL)
        return -1;
    *taken = r->type == REDIS_REPLY_STATUS;
    freeReplyObject(r);
    return 0;
}

static const char BUILD_RENEW[] = "local k = ARGV[1] .. 'lock:build:' .. ARGV[2]\n"
                                  "if redis.call('GET', k) ~= ARGV[3] then return 0 end\n"
                                  "redis.call('PEXPIRE', k, ARGV[4])\n"
                                  "return 1\n";

int cq_store_build_renew(struct cq_store *st, const char *name, const char *token, unsigned ttl_ms,
                         bool *held, struct cq_error *err)
{
    struct args a;
    cq_st_script(st, &a, BUILD_RENEW);
    cq_st_arg(&a, name);
    cq_st_arg(&a, token);
    cq_st_arg_int(&a, ttl_ms);
    redisReply *r = cq_st_run(st, &a, err);
    if (r == NULL)
        return -1;
    *held = cq_st_int_of(r) == 1;
    freeReplyObject(r);
    return 0;
}

static const char BUILD_UNLOCK[] = "local k = ARGV[1] .. 'lock:build:' .. ARGV[2]\n"
                                   "if redis.call('GET', k) == ARGV[3] then\n"
                                   "  redis.call('DEL', k)\n"
                                   "end\n"
                                   "return 1\n";

int cq_store_build_unlock(struct cq_store *st, const char *name, const char *token,
                          struct cq_error *err)
{
    struct args a;
    cq_st_script(st, &a, BUILD_UNLOCK);
    cq_st_arg(&a, name);
    cq_st_arg(&a, token);
    return cq_st_done_with(cq_st_run(st, &a, err));
}

/* ---- placement ------------------------------------------------------------------------------ */

static const char WORKERS_READY[] =
    "local out = {}\n"
    "local want = ',' .. ARGV[2] .. ','\n"
    "for _, id in ipairs(redis.call('SMEMBERS', ARGV[1] .. 'workers')) do\n"
    "  local h = redis.call('HMGET', ARGV[1] .. 'worker:' .. id, 'capacity', 'sessions',\n"
    "                       'draining', 'interpreters')\n"
    "  if h[1] then\n"
    "    local ready = 0\n"
    "    if h[4] and string.find(',' .. h[4] .. ',', want, 1, true) then ready = 1 end\n"
    "    table.insert(out, {id, h[1], h[2], h[3], ready})\n"
    "  end\n"
    "end\n"
    "return out\n";

int cq_store_workers_ready(struct cq_store *st, const char *interpreter,
                           struct cq_worker_status *live, bool *ready, size_t max, size_t *n,
                           struct cq_error *err)
{
    struct args a;
    cq_st_script(st, &a, WORKERS_READY);
    cq_st_arg(&a, interpreter);
    redisReply *r = cq_st_run(st, &a, err);
    if (r == NULL)
        return -1;
    *n = 0;
    for (size_t i = 0; i < r->elements && *n < max; i++) {
        redisReply *e = r->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements != 5)
            continue;
        struct cq_worker_status *w = &live[*n];
        cq_st_copy_str(e->element[0], w->id, sizeof(w->id));
        w->capacity = cq_st_int_of(e->element[1]);
        w->sessions = cq_st_int_of(e->element[2]);
        w->draining = cq_st_int_of(e->element[3]) != 0;
        ready[(*n)++] = cq_st_int_of(e->element[4]) == 1;
    }
    freeReplyObject(r);
    return 0;
}

/* Only onto a live worker's hash: a beat after the key expired would otherwise leave a
 * hash without a time to live (the heartbeat makes it again, with one). */
static const char WORKER_INTERPRETERS[] = "local k = ARGV[1] .. 'worker:' .. ARGV[2]\n"
                                          "if redis.call('EXISTS', k) == 0 then return 0 end\n"
                                          "redis.call('HSET', k, 'interpreters', ARGV[3])\n"
                                          "return 1\n";

int cq_store_worker_interpreters(struct cq_store *st, const char *worker_id, const char *names,
                                 struct cq_error *err)
{
    struct args a;
    cq_st_script(st, &a, WORKER_INTERPRETERS);
    cq_st_arg(&a, worker_id);
    cq_st_arg(&a, names);
    return cq_st_done_with(cq_st_run(st, &a, err));
}
