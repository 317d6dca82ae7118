/* fleet/store_files.c - a session's files and its drained kernel state in Redis (the
 * part of fleet/store.c that keeps workspaces: docs/fleet.md, "Redis keys"). */
#define _GNU_SOURCE
#include "fleet/store_internal.h"
#include "common/clock.h"
#include "fleet/crypt.h"
#include "fleet/log.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- files -------------------------------------------------------------------------- */

/* files:<sid> holds `m:<path>` = "size mtime_ns chunks" and `bytes`; chunks:<sid> holds
 * the data, so that listing never moves file contents. A file whose permission bits are
 * not 0644 (an executable script) also has `x:<path>` = its bits in octal, and a symbolic
 * link `l:<path>` = 1 (its bytes are its target): fields of their own rather than words
 * in `m:`, whose format workers of an older release still parse during a rolling upgrade
 * (they ignore fields they do not know, and restore a link as a file of its target). */
static const char PUT_FILE[] = TENANT_RECOUNT_LUA
    "local s = ARGV[1] .. 'session:' .. ARGV[2]\n"
    "if redis.call('HGET', s, 'owner') ~= ARGV[3] or redis.call('HGET', s, 'fence') ~= ARGV[4]\n"
    "then return 0 end\n"
    "local f, c = ARGV[1] .. 'files:' .. ARGV[2], ARGV[1] .. 'chunks:' .. ARGV[2]\n"
    "local path = ARGV[5]\n"
    "local size = tonumber(ARGV[8])\n"
    "local old = redis.call('HGET', f, 'm:' .. path)\n"
    "local old_size, old_chunks = 0, 0\n"
    "if old then\n"
    "  local a, b = string.match(old, '^(%d+) [-%d]+ (%d+)$')\n"
    "  old_size, old_chunks = tonumber(a), tonumber(b)\n"
    "end\n"
    "local total = tonumber(redis.call('HGET', f, 'bytes') or '0') - old_size + size\n"
    "if total > tonumber(ARGV[7]) then return -2 end\n"
    /* The tenant's stored bytes, over all its sessions (stored:<tenant>), against the
     * quota its dispatcher recorded at the session's start (quota:<tenant>). */
    "local t = redis.call('HGET', s, 'tenant') or ''\n"
    "local tb = ARGV[1] .. 'stored:' .. t\n"
    "local q = tonumber(redis.call('HGET', ARGV[1] .. 'quota:' .. t, 'stored_bytes') or '0')\n"
    "local grown = size - old_size\n"
    "if q > 0 and grown > 0 and tonumber(redis.call('GET', tb) or '0') + grown > q then\n"
    "  local _, used = tenant_recount(ARGV[1], t)\n"
    "  if used + grown > q then return -3 end\n"
    "end\n"
    "redis.call('INCRBY', tb, grown)\n"
    "for i = 0, old_chunks - 1 do redis.call('HDEL', c, path .. ':' .. i) end\n"
    "for i = 10, #ARGV do redis.call('HSET', c, path .. ':' .. (i - 10), ARGV[i]) end\n"
    "redis.call('HSET', f, 'm:' .. path, size .. ' ' .. ARGV[6] .. ' ' .. (#ARGV - 9),\n"
    "           'bytes', total)\n"
    "if ARGV[9] == '644' then redis.call('HDEL', f, 'x:' .. path, 'l:' .. path)\n"
    "elseif ARGV[9] == 'link' then redis.call('HDEL', f, 'x:' .. path)\n"
    "  redis.call('HSET', f, 'l:' .. path, '1')\n"
    "else redis.call('HSET', f, 'x:' .. path, ARGV[9]); redis.call('HDEL', f, 'l:' .. path) end\n"
    "local ttl = redis.call('PTTL', s)\n"
    "if ttl > 0 then redis.call('PEXPIRE', f, ttl); redis.call('PEXPIRE', c, ttl) end\n"
    "return 1\n";

int cq_store_put_file(struct cq_store *st, const char *session_id, const char *worker,
                      uint64_t fence, const char *path, const uint8_t *data, size_t len,
                      int64_t mtime_ns, uint32_t mode, struct cq_error *err)
{
    size_t chunks = len == 0 ? 0 : (len + CHUNK_BYTES - 1) / CHUNK_BYTES;
    if (chunks > 500)
        return cq_error_set(err, CQ_ELIMIT, "%s is too large to keep in Redis", path);
    struct args *a = malloc(sizeof(*a));
    if (a == NULL)
        return cq_error_sys(err, ENOMEM, "allocate arguments");
    cq_st_script(st, a, PUT_FILE);
    cq_st_arg(a, session_id);
    cq_st_arg(a, worker);
    cq_st_arg_int(a, (int64_t)fence);
    cq_st_arg(a, path);
    cq_st_arg_int(a, mtime_ns);
    cq_st_arg_int(a, (int64_t)st->files_quota);
    cq_st_arg_int(a, (int64_t)len); /* plain-text bytes: the quota counts what users stored */
    char octal[8];
    snprintf(octal, sizeof(octal), "%o", (unsigned)(mode & 0777));
    cq_st_arg(a, mode == CQ_STORE_LINK ? "link" : octal);
    char key[160];
    snprintf(key, sizeof(key), "%schunks:%s", st->prefix, session_id);
    uint8_t *sealed[500] = {0};
    int rc = 0;
    for (size_t i = 0; i < chunks && rc == 0; i++) {
        size_t n = len - i * CHUNK_BYTES < CHUNK_BYTES ? len - i * CHUNK_BYTES : CHUNK_BYTES;
        char field[PATH_MAX + 32];
        size_t sealed_len;
        snprintf(field, sizeof(field), "%s:%zu", path, i);
        rc = cq_st_seal_session_value(st, session_id, key, field, data + i * CHUNK_BYTES, n,
                                      &sealed[i], &sealed_len, err);
        if (sealed[i] != NULL)
            cq_st_arg_bin(a, sealed[i], sealed_len);
        else
            cq_st_arg_bin(a, data + i * CHUNK_BYTES, n);
    }
    if (rc == 0)
        rc = cq_st_fenced(cq_st_run(st, a, err), session_id, err);
    for (size_t i = 0; i < chunks; i++)
        free(sealed[i]);
    free(a);
    return rc;
}

static const char TENANT_ROOM[] = TENANT_RECOUNT_LUA
    "local t = redis.call('HGET', ARGV[1] .. 'session:' .. ARGV[2], 'tenant') or ''\n"
    "local q = tonumber(redis.call('HGET', ARGV[1] .. 'quota:' .. t, 'stored_bytes') or '0')\n"
    "local used = tonumber(redis.call('GET', ARGV[1] .. 'stored:' .. t) or '0')\n"
    "if q > 0 and used + tonumber(ARGV[3]) > q then\n"
    "  local _\n"
    "  _, used = tenant_recount(ARGV[1], t)\n"
    "end\n"
    "return {t, q, used}\n";

int cq_store_tenant_room(struct cq_store *st, const char *session_id, uint64_t adding, bool *fits,
                         struct cq_error *why, struct cq_error *err)
{
    struct args a;
    cq_st_script(st, &a, TENANT_ROOM);
    cq_st_arg(&a, session_id);
    cq_st_arg_int(&a, (int64_t)adding);
    redisReply *r = cq_st_run(st, &a, err);
    if (r == NULL)
        return -1;
    *fits = true;
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 3) {
        int64_t quota = cq_st_int_of(r->element[1]), used = cq_st_int_of(r->element[2]);
        if (quota > 0 && (uint64_t)used + adding > (uint64_t)quota) {
            *fits = false;
            char tenant[CQ_TENANT_MAX + 1];
            cq_st_copy_str(r->element[0], tenant, sizeof(tenant));
            cq_error_set(why, CQ_ELIMIT,
                         "tenant '%s' stores %lld bytes of files, and %llu more would pass its "
                         "quota of %lld (stored_bytes): remove files, or stop sessions",
                         tenant, (long long)used, (unsigned long long)adding, (long long)quota);
        }
    }
    freeReplyObject(r);
    return 0;
}

static const char DELETE_FILE[] =
    "local s = ARGV[1] .. 'session:' .. ARGV[2]\n"
    "if redis.call('HGET', s, 'owner') ~= ARGV[3] or redis.call('HGET', s, 'fence') ~= ARGV[4]\n"
    "then return 0 end\n"
    "local f, c = ARGV[1] .. 'files:' .. ARGV[2], ARGV[1] .. 'chunks:' .. ARGV[2]\n"
    "local old = redis.call('HGET', f, 'm:' .. ARGV[5])\n"
    "if not old then return 1 end\n"
    "local a, b = string.match(old, '^(%d+) [-%d]+ (%d+)$')\n"
    "for i = 0, tonumber(b) - 1 do redis.call('HDEL', c, ARGV[5] .. ':' .. i) end\n"
    "redis.call('HDEL', f, 'm:' .. ARGV[5], 'x:' .. ARGV[5], 'l:' .. ARGV[5])\n"
    "redis.call('HINCRBY', f, 'bytes', -tonumber(a))\n"
    "redis.call('DECRBY', ARGV[1] .. 'stored:' .. (redis.call('HGET', s, 'tenant') or ''),\n"
    "           tonumber(a))\n"
    "return 1\n";

int cq_store_delete_file(struct cq_store *st, const char *session_id, const char *worker,
                         uint64_t fence, const char *path, struct cq_error *err)
{
    struct args a;
    cq_st_script(st, &a, DELETE_FILE);
    cq_st_arg(&a, session_id);
    cq_st_arg(&a, worker);
    cq_st_arg_int(&a, (int64_t)fence);
    cq_st_arg(&a, path);
    return cq_st_fenced(cq_st_run(st, &a, err), session_id, err);
}

static int by_path(const void *a, const void *b)
{
    return strcmp(((const struct cq_stored_file *)a)->path,
                  ((const struct cq_stored_file *)b)->path);
}

int cq_store_list_files(struct cq_store *st, const char *session_id, struct cq_stored_file **out,
                        size_t *n, struct cq_error *err)
{
    char key[160];
    snprintf(key, sizeof(key), "%sfiles:%s", st->prefix, session_id);
    const char *argv[] = {"HGETALL", key};
    redisReply *r = cq_st_command(st, 2, argv, NULL, err);
    if (r == NULL)
        return -1;
    *out = calloc(r->elements / 2 + 1, sizeof(**out));
    *n = 0;
    if (*out == NULL) {
        freeReplyObject(r);
        return cq_error_sys(err, ENOMEM, "allocate file list");
    }
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        const char *field = r->element[i]->str;
        if (strncmp(field, "m:", 2) != 0)
            continue;
        struct cq_stored_file *f = &(*out)[*n];
        unsigned long long size = 0;
        long long mtime = 0;
        if (sscanf(r->element[i + 1]->str, "%llu %lld", &size, &mtime) != 2)
            continue;
        f->path = strndup(field + 2, r->element[i]->len - 2);
        f->size = size;
        f->mtime_ns = mtime;
        f->mode = 0644;
        if (f->path != NULL)
            (*n)++;
    }
    /* Then the permission bits of the files that have other ones than 0644. */
    if (*n > 1)
        qsort(*out, *n, sizeof(**out), by_path);
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        const char *field = r->element[i]->str;
        if (strncmp(field, "x:", 2) != 0)
            continue;
        struct cq_stored_file wanted = {.path = (char *)field + 2};
        struct cq_stored_file *f =
            *n > 0 ? bsearch(&wanted, *out, *n, sizeof(wanted), by_path) : NULL;
        char *end;
        unsigned long mode = strtoul(r->element[i + 1]->str, &end, 8);
        if (f != NULL && *end == '\0' && mode <= 0777)
            f->mode = (uint32_t)mode;
    }
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        const char *field = r->element[i]->str;
        if (strncmp(field, "l:", 2) != 0)
            continue;
        struct cq_stored_file wanted = {.path = (char *)field + 2};
        struct cq_stored_file *f =
            *n > 0 ? bsearch(&wanted, *out, *n, sizeof(wanted), by_path) : NULL;
        if (f != NULL)
            f->mode = CQ_STORE_LINK;
    }
    freeReplyObject(r);
    return 0;
}

void cq_stored_files_free(struct cq_stored_file *files, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(files[i].path);
    free(files);
}

int cq_store_get_file(struct cq_store *st, const char *session_id, const char *path, uint8_t **data,
                      size_t *len, struct cq_error *err)
{
    char fkey[160], ckey[160], field[PATH_MAX + 8];
    snprintf(fkey, sizeof(fkey), "%sfiles:%s", st->prefix, session_id);
    snprintf(ckey, sizeof(ckey), "%schunks:%s", st->prefix, session_id);
    snprintf(field, sizeof(field), "m:%s", path);
    uint8_t *meta;
    size_t meta_len;
    if (cq_st_get_bytes(st, fkey, field, &meta, &meta_len, err) < 0)
        return -1;
    if (meta == NULL)
        return cq_error_set(err, CQ_ENOTFOUND, "%s is not stored", path);
    unsigned long long size = 0, chunks = 0;
    long long mtime;
    char text[96];
    snprintf(text, sizeof(text), "%.*s", (int)meta_len, (const char *)meta);
    free(meta);
    if (sscanf(text, "%llu %lld %llu", &size, &mtime, &chunks) != 3)
        return cq_error_set(err, CQ_EINTERNAL, "bad metadata for %s", path);
    *data = malloc(size ? size : 1);
    if (*data == NULL)
        return cq_error_sys(err, ENOMEM, "allocate %llu bytes", size);
    *len = 0;
    for (unsigned long long i = 0; i < chunks; i++) {
        char chunk_field[PATH_MAX + 32];
        snprintf(chunk_field, sizeof(chunk_field), "%s:%llu", path, i);
        uint8_t *part = NULL;
        size_t part_len = 0;
        int rc = cq_st_get_value(st, ckey, chunk_field, &part, &part_len, err);
        if (rc < 0 || part == NULL || *len + part_len > size) {
            free(part);
            free(*data);
            *data = NULL;
            return rc < 0 ? -1 : cq_error_set(err, CQ_EINTERNAL, "%s: chunk %llu missing", path, i);
        }
        memcpy(*data + *len, part, part_len);
        *len += part_len;
        free(part);
    }
    return 0;
}

/* ---- kernel state of a drained session ---------------------------------------------
 *
 * state:<sid> is a hash: `fence`, the session's token when its owner drained, and the
 * fields the worker names (a kernel's saved variables, or why they could not be
 * saved). The owner writes it when it drains (fenced), within the session's files
 * quota together with its files, so that a session's bytes in Redis stay bounded by
 * the one quota. The worker that adopts the session takes it (reads and deletes it, as
 * the new owner) and uses it only when it was written under the token just before its
 * own: a state is restored once, and never into a session that ran elsewhere since it
 * was saved. It expires with the session and is deleted when the session ends. */

static const char PUT_STATE[] =
    "local s = ARGV[1] .. 'session:' .. ARGV[2]\n"
    "if redis.call('HGET', s, 'owner') ~= ARGV[3] or redis.call('HGET', s, 'fence') ~= ARGV[4]\n"
    "then return 0 end\n"
    "local k = ARGV[1] .. 'state:' .. ARGV[2]\n"
    "local size = tonumber(ARGV[6])\n"
    "local files = tonumber(redis.call('HGET', ARGV[1] .. 'files:' .. ARGV[2], 'bytes') or '0')\n"
    "if files + size > tonumber(ARGV[5]) then return -2 end\n"
    "redis.call('DEL', k)\n"
    "redis.call('HSET', k, 'fence', ARGV[4])\n"
    "for i = 7, #ARGV - 1, 2 do redis.call('HSET', k, ARGV[i], ARGV[i + 1]) end\n"
    "local ttl = redis.call('PTTL', s)\n"
    "if ttl > 0 then redis.call('PEXPIRE', k, ttl) end\n"
    "return 1\n";

int cq_store_put_state(struct cq_store *st, const char *session_id, const char *worker,
                       uint64_t fence, const struct cq_store_field *fields, size_t n,
                       struct cq_error *err)
{
    if (n > CQ_STORE_MAX_STATE_FIELDS)
        return cq_error_set(err, CQ_EINVALID, "%zu state fields (at most %d)", n,
                            CQ_STORE_MAX_STATE_FIELDS);
    struct args *a = malloc(sizeof(*a));
    if (a == NULL)
        return cq_error_sys(err, ENOMEM, "allocate arguments");
    cq_st_script(st, a, PUT_STATE);
    cq_st_arg(a, session_id);
    cq_st_arg(a, worker);
    cq_st_arg_int(a, (int64_t)fence);
    cq_st_arg_int(a, (int64_t)st->files_quota);
    size_t plain = 0; /* the quota counts plain-text bytes, as for files */
    for (size_t i = 0; i < n; i++)
        plain += fields[i].len;
    cq_st_arg_int(a, (int64_t)plain);
    char key[160];
    snprintf(key, sizeof(key), "%sstate:%s", st->prefix, session_id);
    uint8_t *sealed[CQ_STORE_MAX_STATE_FIELDS] = {0};
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        size_t sealed_len;
        rc = cq_st_seal_session_value(st, session_id, key, fields[i].name, fields[i].data,
                                      fields[i].len, &sealed[i], &sealed_len, err);
        cq_st_arg(a, fields[i].name);
        if (sealed[i] != NULL)
            cq_st_arg_bin(a, sealed[i], sealed_len);
        else
            cq_st_arg_bin(a, fields[i].data, fields[i].len);
    }
    if (rc == 0)
        rc = cq_st_fenced(cq_st_run(st, a, err), session_id, err);
    for (size_t i = 0; i < n; i++)
        free(sealed[i]);
    free(a);
    return rc;
}

static const char TAKE_STATE[] =
    "local s = ARGV[1] .. 'session:' .. ARGV[2]\n"
    "if redis.call('HGET', s, 'owner') ~= ARGV[3] or redis.call('HGET', s, 'fence') ~= ARGV[4]\n"
    "then return 0 end\n"
    "local k = ARGV[1] .. 'state:' .. ARGV[2]\n"
    "local all = redis.call('HGETALL', k)\n"
    "redis.call('DEL', k)\n"
    "return all\n";

void cq_store_fields_free(struct cq_store_field *fields, size_t n)
{
    for (size_t i = 0; fields != NULL && i < n; i++) {
        free(fields[i].name);
        free(fields[i].data);
    }
    free(fields);
}

/* The fields of a TAKE_STATE reply but `fence`, copied. */
static int copy_fields(const redisReply *r, struct cq_store_field **fields, size_t *n,
                       struct cq_error *err)
{
    if ((*fields = calloc(r->elements / 2 + 1, sizeof(**fields))) == NULL)
        return cq_error_sys(err, ENOMEM, "allocate the session's state");
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        const redisReply *key = r->element[i], *value = r->element[i + 1];
        if (key->type != REDIS_REPLY_STRING || value->type != REDIS_REPLY_STRING ||
            strcmp(key->str, "fence") == 0)
            continue;
        struct cq_store_field *f = &(*fields)[*n];
        f->name = strndup(key->str, key->len);
        f->data = malloc(value->len ? value->len : 1);
        f->len = value->len;
        (*n)++; /* counted even when half allocated: freed below */
        if (f->name == NULL || f->data == NULL) {
            cq_store_fields_free(*fields, *n);
            *fields = NULL;
            *n = 0;
            return cq_error_sys(err, ENOMEM, "allocate the session's state");
        }
        memcpy(f->data, value->str, value->len);
    }
    return 0;
}

int cq_store_take_state(struct cq_store *st, const char *session_id, const char *worker,
                        uint64_t fence, struct cq_store_field **fields, size_t *n, bool *found,
                        struct cq_error *err)
{
    *fields = NULL;
    *n = 0;
    *found = false;
    struct args a;
    cq_st_script(st, &a, TAKE_STATE);
    cq_st_arg(&a, session_id);
    cq_st_arg(&a, worker);
    cq_st_arg_int(&a, (int64_t)fence);
    redisReply *r = cq_st_run(st, &a, err);
    if (r == NULL)
        return -1;
    if (r->type != REDIS_REPLY_ARRAY)
        return cq_st_fenced(r, session_id, err); /* 0: not the owner at that token */
    bool current = false;
    for (size_t i = 0; i + 1 < r->elements; i += 2)
        if (r->element[i]->type == REDIS_REPLY_STRING && strcmp(r->element[i]->str, "fence") == 0)
            current = fence > 0 && (uint64_t)cq_st_int_of(r->element[i + 1]) == fence - 1;
    /* None, or saved before a later move: not this session's state now (dropped). */
    int rc = current ? copy_fields(r, fields, n, err) : 0;
    freeReplyObject(r);
    char key[160];
    snprintf(key, sizeof(key), "%sstate:%s", st->prefix, session_id);
    for (size_t i = 0; rc == 0 && i < *n; i++)
        rc = cq_st_open_value(st, key, (*fields)[i].name, &(*fields)[i].data, &(*fields)[i].len,
                              err);
    if (rc < 0) {
        cq_store_fields_free(*fields, *n);
        *fields = NULL;
        *n = 0;
    }
    *found = current && rc == 0;
    return rc;
}
