/* fleet/store_keys.c - the keys the store keeps: data key rotation (codeq at-rest) and
 * the tenants' keyring (keys_file = redis). Part of fleet/store.c. */
#define _GNU_SOURCE
#include "fleet/store_internal.h"
#include "common/clock.h"
#include "fleet/crypt.h"
#include "fleet/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- data key rotation (codeq at-rest) ---------------------------------------------
 *
 * Both run from the command line, against a live fleet. A new data key version is
 * added only if `current` is still the one it was computed from (DEK_ADD), so that
 * two rotations, or a rotation and a daemon's first use, never lose a version. */

static const char DEK_ADD[] =
    "local k = ARGV[1] .. 'dek:' .. ARGV[2]\n"
    "if (redis.call('HGET', k, 'current') or '') ~= ARGV[3] then return 0 end\n"
    "redis.call('HSET', k, ARGV[4], ARGV[5], 'current', ARGV[4])\n"
    "return 1\n";

int cq_store_rotate_data_key(struct cq_store *st, const char *tenant, uint32_t *version,
                             struct cq_error *err)
{
    if (st->kms == NULL)
        return cq_error_set(err, CQ_EINVALID, "no master key (master_key_file)");
    char name[160];
    snprintf(name, sizeof(name), "%sdek:%s", st->prefix, tenant);
    for (int attempt = 0; attempt < 5; attempt++) {
        const char *argv[] = {"HGET", name, "current"};
        redisReply *r = cq_st_command(st, 3, argv, NULL, err);
        if (r == NULL)
            return -1;
        char current[16];
        cq_st_copy_str(r, current, sizeof(current));
        freeReplyObject(r);
        *version = (uint32_t)strtoul(current, NULL, 10) + 1;
        struct args a;
        cq_st_script(st, &a, DEK_ADD);
        cq_st_arg(&a, tenant);
        cq_st_arg(&a, current);
        cq_st_arg_int(&a, *version);
        if ((r = cq_st_run_new_dek(st, &a, tenant, *version, err)) == NULL)
            return -1;
        bool added = cq_st_int_of(r) == 1;
        freeReplyObject(r);
        if (added)
            return 0;
    }
    return cq_error_set(err, EBUSY, "dek:%s changed under every attempt", tenant);
}

/* One tenant's hash: every version unwrapped with from and wrapped with to, written in
 * one HSET. A version that already unwraps with to is left (a rotation run again after
 * it stopped half way). */
static int rewrap_one(struct cq_store *st, const char *name, struct cq_kms *from, struct cq_kms *to,
                      size_t *keys, struct cq_error *err)
{
    const char *tenant = name + strlen(st->prefix) + strlen("dek:");
    const char *argv[] = {"HGETALL", name};
    redisReply *r = cq_st_command(st, 2, argv, NULL, err);
    if (r == NULL)
        return -1;
    size_t pairs = r->elements / 2;
    const char **v = calloc(2 + 2 * pairs, sizeof(*v));
    size_t *lens = calloc(2 + 2 * pairs, sizeof(*lens));
    uint8_t(*wrapped)[CQ_KMS_WRAPPED_MAX] = calloc(pairs + 1, sizeof(*wrapped));
    int rc = v != NULL && lens != NULL && wrapped != NULL
                 ? 0
                 : cq_error_sys(err, ENOMEM, "allocate %zu data keys", pairs);
    int argc = 2;
    if (rc == 0) {
        v[0] = "HSET";
        v[1] = name;
        lens[0] = 4;
        lens[1] = strlen(name);
    }
    for (size_t i = 0; rc == 0 && i < pairs; i++) {
        const redisReply *f = r->element[2 * i], *w = r->element[2 * i + 1];
        if (f->type != REDIS_REPLY_STRING || strcmp(f->str, "current") == 0)
            continue;
        uint32_t version = (uint32_t)strtoul(f->str, NULL, 10);
        char aad[128];
        cq_dek_aad(tenant, version, aad, sizeof(aad));
        uint8_t key[CQ_CRYPT_KEY_LEN];
        struct cq_error ignored;
        if (to->unwrap(to, (const uint8_t *)w->str, w->len, aad, key, &ignored) == 0)
            continue;
        size_t n;
        rc = from->unwrap(from, (const uint8_t *)w->str, w->len, aad, key, err);
        if (rc == 0)
            rc = to->wrap(to, key, aad, wrapped[i], &n, err);
        explicit_bzero(key, sizeof(key));
        if (rc < 0)
            break;
        v[argc] = f->str;
        lens[argc++] = f->len;
        v[argc] = (const char *)wrapped[i];
        lens[argc++] = n;
        (*keys)++;
    }
    if (rc == 0 && argc > 2) {
        redisReply *w = cq_st_command(st, argc, v, lens, err);
        rc = cq_st_done_with(w);
    }
    if (wrapped != NULL)
        explicit_bzero(wrapped, (pairs + 1) * sizeof(*wrapped));
    free(wrapped);
    free(lens);
    free(v);
    freeReplyObject(r);
    return rc;
}

/* ---- the keyring (fleet/keys.h, keys_file = redis) ------------------------------------- */

static const char KEYRING_GET[] =
    "return {redis.call('GET', ARGV[1] .. 'keyring:version') or '0',\n"
    "        redis.call('GET', ARGV[1] .. 'keyring') or ''}\n";

int cq_store_keyring_get(struct cq_store *st, char **text, int64_t *version, struct cq_error *err)
{
    struct args a;
    cq_st_script(st, &a, KEYRING_GET);
    redisReply *r = cq_st_run(st, &a, err);
    if (r == NULL)
        return -1;
    int rc = 0;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[1]->type != REDIS_REPLY_STRING) {
        rc = cq_error_set(err, CQ_EPROTO, "unexpected reply to the keyring's read");
    } else {
        *version = cq_st_int_of(r->element[0]);
        *text = strndup(r->element[1]->str, r->element[1]->len);
        if (*text == NULL)
            rc = cq_error_sys(err, ENOMEM, "read the keyring");
        explicit_bzero(r->element[1]->str, r->element[1]->len);
    }
    freeReplyObject(r);
    return rc;
}

int cq_store_keyring_version(struct cq_store *st, int64_t *version, struct cq_error *err)
{
    char key[160];
    snprintf(key, sizeof(key), "%skeyring:version", st->prefix);
    const char *argv[] = {"GET", key};
    redisReply *r = cq_st_command(st, 2, argv, NULL, err);
    if (r == NULL)
        return -1;
    *version = cq_st_int_of(r);
    freeReplyObject(r);
    return 0;
}

/* Replaced only if nobody replaced it since it was read: two operators editing at once
 * must not lose each other's change. */
static const char KEYRING_PUT[] =
    "if tonumber(redis.call('GET', ARGV[1] .. 'keyring:version') or '0') ~= tonumber(ARGV[2])\n"
    "then return -1 end\n"
    "redis.call('SET', ARGV[1] .. 'keyring', ARGV[3])\n"
    "return redis.call('INCR', ARGV[1] .. 'keyring:version')\n";

int cq_store_keyring_put(struct cq_store *st, const char *text, int64_t version,
                         struct cq_error *err)
{
    struct args a;
    cq_st_script(st, &a, KEYRING_PUT);
    cq_st_arg_int(&a, version);
    cq_st_arg(&a, text);
    redisReply *r = cq_st_run(st, &a, err);
    if (r == NULL)
        return -1;
    int64_t v = cq_st_int_of(r);
    freeReplyObject(r);
    if (v < 0)
        return cq_error_set(err, CQ_EINVALID,
                            "the keyring in Redis changed while this edit was made: run it again");
    return 0;
}

int cq_store_rewrap_data_keys(struct cq_store *st, struct cq_kms *from, struct cq_kms *to,
                              size_t *tenants, size_t *keys, struct cq_error *err)
{
    *tenants = *keys = 0;
    char pattern[160], cursor[32] = "0";
    snprintf(pattern, sizeof(pattern), "%sdek:*", st->prefix);
    do {
        const char *argv[] = {"SCAN", cursor, "MATCH", pattern, "COUNT", "100"};
        redisReply *r = cq_st_command(st, 6, argv, NULL, err);
        if (r == NULL)
            return -1;
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
            r->element[1]->type != REDIS_REPLY_ARRAY) {
            freeReplyObject(r);
            return cq_error_set(err, CQ_EINTERNAL, "SCAN: unexpected reply");
        }
        cq_st_copy_str(r->element[0], cursor, sizeof(cursor));
        for (size_t i = 0; i < r->element[1]->elements; i++) {
            const redisReply *k = r->element[1]->element[i];
            if (k->type != REDIS_REPLY_STRING)
                continue;
            if (rewrap_one(st, k->str, from, to, keys, err) < 0) {
                freeReplyObject(r);
                return cq_error_prefix(err, "%s", k->str);
            }
            (*tenants)++;
        }
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0);
    return 0;
}
