/* fleet/store_values.c - encryption at rest of the values the store keeps (the part of
 * fleet/store.c that seals and opens them; fleet/crypt.h has the envelope). */
#define _GNU_SOURCE
#include "fleet/store_internal.h"
#include "common/clock.h"
#include "fleet/crypt.h"
#include "fleet/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

/* ---- values: encryption at rest ----------------------------------------------------
 *
 * With a master key, every value that holds what users gave or got (files, kernel
 * states, start parameters, request bodies, final replies) is sealed here, on its way
 * to Redis, in an envelope (fleet/crypt.h) bound to its key and field, and opened on
 * its way back; a value without its envelope is refused, never taken as plain text.
 * Everything else (owners, fences, states, sizes, indexes) stays readable, as the
 * scripts decide on it. The Lua scripts see only ciphertext, so sizes that count
 * against a quota are passed to them in plain-text bytes.
 *
 * Data keys: one set per tenant under dek:<tenant> (`current` = the version new values
 * use, `<version>` = the key wrapped by the master key), created by the first daemon
 * that needs one (DEK_CREATE: one script, so two daemons never make two), unwrapped
 * once per process and kept. The version in use is checked again every
 * DEK_RECHECK_MS, so that `codeq at-rest rotate-data` reaches running daemons; any
 * version a value names is loaded when first met.
 *
 * A value's tenant is its session's (the `tenant` field of session:<sid>, which never
 * changes): a direct-mapped cache of SID_SLOTS sessions saves the lookup. */

int cq_st_get_bytes(struct cq_store *st, const char *key, const char *field, uint8_t **data,
                    size_t *len, struct cq_error *err);

static size_t sid_slot(const char *sid)
{
    uint32_t h = 2166136261u;
    for (const char *p = sid; *p != '\0'; p++)
        h = (h ^ (uint8_t)*p) * 16777619u;
    return h % SID_SLOTS;
}

void cq_st_remember_tenant(struct cq_store *st, const char *sid, const char *tenant)
{
    if (st->kms == NULL || sid == NULL || sid[0] == '\0' || strlen(sid) >= 64 ||
        strlen(tenant) > CQ_CRYPT_TENANT_MAX)
        return;
    pthread_mutex_lock(&st->crypt_lock);
    struct sid_tenant *e = &st->sids[sid_slot(sid)];
    snprintf(e->sid, sizeof(e->sid), "%s", sid);
    snprintf(e->tenant, sizeof(e->tenant), "%s", tenant);
    pthread_mutex_unlock(&st->crypt_lock);
}

/* The tenant of a session: "" for one that does not exist (yet), not remembered. */
int cq_st_session_tenant(struct cq_store *st, const char *sid, char tenant[CQ_CRYPT_TENANT_MAX + 1],
                         struct cq_error *err)
{
    tenant[0] = '\0';
    if (sid == NULL || sid[0] == '\0')
        return 0;
    pthread_mutex_lock(&st->crypt_lock);
    const struct sid_tenant *e = &st->sids[sid_slot(sid)];
    bool hit = strcmp(e->sid, sid) == 0;
    if (hit)
        memcpy(tenant, e->tenant, sizeof(e->tenant));
    pthread_mutex_unlock(&st->crypt_lock);
    if (hit)
        return 0;
    char key[160];
    snprintf(key, sizeof(key), "%ssession:%s", st->prefix, sid);
    const char *argv[] = {"HGET", key, "tenant"};
    redisReply *r = cq_st_command(st, 3, argv, NULL, err);
    if (r == NULL)
        return -1;
    bool found = r->type == REDIS_REPLY_STRING && r->len <= CQ_CRYPT_TENANT_MAX;
    if (found)
        snprintf(tenant, CQ_CRYPT_TENANT_MAX + 1, "%.*s", (int)r->len, r->str);
    freeReplyObject(r);
    if (found)
        cq_st_remember_tenant(st, sid, tenant);
    return 0;
}

/* A cached data key: version 0 asks for the current one (if checked recently). */
static bool dek_cached(struct cq_store *st, const char *tenant, uint32_t version,
                       uint32_t *found_version, uint8_t key[CQ_CRYPT_KEY_LEN])
{
    bool hit = false;
    int64_t now = (int64_t)cq_now_ms();
    pthread_mutex_lock(&st->crypt_lock);
    for (const struct dek *d = st->deks; d != NULL && !hit; d = d->next) {
        if (strcmp(d->tenant, tenant) != 0)
            continue;
        hit = version != 0 ? d->version == version
                           : d->current && now - d->checked_ms < DEK_RECHECK_MS;
        if (hit) {
            *found_version = d->version;
            memcpy(key, d->key, CQ_CRYPT_KEY_LEN);
        }
    }
    pthread_mutex_unlock(&st->crypt_lock);
    return hit;
}

static int dek_keep(struct cq_store *st, const char *tenant, uint32_t version, bool current,
                    const uint8_t key[CQ_CRYPT_KEY_LEN], struct cq_error *err)
{
    int64_t now = (int64_t)cq_now_ms();
    pthread_mutex_lock(&st->crypt_lock);
    struct dek *found = NULL;
    for (struct dek *d = st->deks; d != NULL; d = d->next) {
        if (strcmp(d->tenant, tenant) != 0)
            continue;
        if (current)
            d->current = false;
        if (d->version == version)
            found = d;
    }
    if (found == NULL && (found = calloc(1, sizeof(*found))) != NULL) {
        snprintf(found->tenant, sizeof(found->tenant), "%s", tenant);
        found->version = version;
        memcpy(found->key, key, CQ_CRYPT_KEY_LEN);
        found->next = st->deks;
        st->deks = found;
    }
    if (found != NULL && current) {
        found->current = true;
        found->checked_ms = now;
    }
    pthread_mutex_unlock(&st->crypt_lock);
    return found != NULL ? 0 : cq_error_sys(err, ENOMEM, "allocate a data key");
}

static int dek_unwrap(struct cq_store *st, const char *tenant, uint32_t version,
                      const redisReply *wrapped, uint8_t key[CQ_CRYPT_KEY_LEN],
                      struct cq_error *err)
{
    if (wrapped == NULL || wrapped->type != REDIS_REPLY_STRING)
        return cq_error_set(err, CQ_EDENIED,
                            "tenant '%s' has no data key version %u in Redis (deleted?): its "
                            "values cannot be read",
                            tenant, version);
    char aad[128];
    cq_dek_aad(tenant, version, aad, sizeof(aad));
    return st->kms->unwrap(st->kms, (const uint8_t *)wrapped->str, wrapped->len, aad, key, err);
}

/* The one place a data key is made: the plain key never leaves this function, and the
 * script stores only what the master key wrapped (bound to tenant and version). */
redisReply *cq_st_run_new_dek(struct cq_store *st, struct args *a, const char *tenant,
                              uint32_t version, struct cq_error *err)
{
    uint8_t fresh[CQ_CRYPT_KEY_LEN], wrapped[CQ_KMS_WRAPPED_MAX];
    size_t wrapped_len;
    char aad[128];
    cq_dek_aad(tenant, version, aad, sizeof(aad));
    if (getrandom(fresh, sizeof(fresh), 0) != (ssize_t)sizeof(fresh)) {
        cq_error_sys(err, errno, "getrandom");
        return NULL;
    }
    int rc = st->kms->wrap(st->kms, fresh, aad, wrapped, &wrapped_len, err);
    explicit_bzero(fresh, sizeof(fresh));
    if (rc < 0)
        return NULL;
    cq_st_arg_bin(a, wrapped, wrapped_len);
    return cq_st_run(st, a, err);
}

/* Makes version 1 unless the tenant has a current data key already; either way the
 * current one. ARGV[3]: a fresh key, wrapped for version 1. */
static const char DEK_CREATE[] = "local k = ARGV[1] .. 'dek:' .. ARGV[2]\n"
                                 "local cur = redis.call('HGET', k, 'current')\n"
                                 "if not cur then\n"
                                 "  redis.call('HSET', k, '1', ARGV[3], 'current', '1')\n"
                                 "  cur = '1'\n"
                                 "end\n"
                                 "return {cur, redis.call('HGET', k, cur)}\n";

static int dek_current(struct cq_store *st, const char *tenant, uint32_t *version,
                       uint8_t key[CQ_CRYPT_KEY_LEN], struct cq_error *err)
{
    if (dek_cached(st, tenant, 0, version, key))
        return 0;
    struct args a;
    cq_st_script(st, &a, DEK_CREATE);
    cq_st_arg(&a, tenant);
    redisReply *r = cq_st_run_new_dek(st, &a, tenant, 1, err);
    if (r == NULL)
        return -1;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 || cq_st_int_of(r->element[0]) <= 0) {
        freeReplyObject(r);
        return cq_error_set(err, CQ_EINTERNAL, "dek:%s: no current data key", tenant);
    }
    *version = (uint32_t)cq_st_int_of(r->element[0]);
    int rc = dek_unwrap(st, tenant, *version, r->element[1], key, err);
    freeReplyObject(r);
    return rc < 0 ? -1 : dek_keep(st, tenant, *version, true, key, err);
}

static int dek_version(struct cq_store *st, const char *tenant, uint32_t version,
                       uint8_t key[CQ_CRYPT_KEY_LEN], struct cq_error *err)
{
    uint32_t found;
    if (dek_cached(st, tenant, version, &found, key))
        return 0;
    char name[160], field[16];
    snprintf(name, sizeof(name), "%sdek:%s", st->prefix, tenant);
    snprintf(field, sizeof(field), "%u", version);
    const char *argv[] = {"HGET", name, field};
    redisReply *r = cq_st_command(st, 3, argv, NULL, err);
    if (r == NULL)
        return -1;
    int rc = dek_unwrap(st, tenant, version, r, key, err);
    freeReplyObject(r);
    return rc < 0 ? -1 : dek_keep(st, tenant, version, false, key, err);
}

/* *out (malloc'd) gets data sealed for key_name and field under tenant's current data
 * key, or NULL without encryption (then data goes as it is). */
int cq_st_seal_value(struct cq_store *st, const char *tenant, const char *key_name,
                     const char *field, const void *data, size_t len, uint8_t **out,
                     size_t *out_len, struct cq_error *err)
{
    *out = NULL;
    *out_len = 0;
    if (st->kms == NULL)
        return 0;
    uint8_t key[CQ_CRYPT_KEY_LEN];
    uint32_t version;
    if (dek_current(st, tenant, &version, key, err) < 0)
        return cq_error_prefix(err, "encrypt %s", key_name);
    int rc = cq_envelope_seal(tenant, version, key, key_name, field, data, len, out, out_len, err);
    explicit_bzero(key, sizeof(key));
    return rc;
}

/* cq_st_seal_value() for a value of the session sid. */
int cq_st_seal_session_value(struct cq_store *st, const char *sid, const char *key_name,
                             const char *field, const void *data, size_t len, uint8_t **out,
                             size_t *out_len, struct cq_error *err)
{
    *out = NULL;
    *out_len = 0;
    if (st->kms == NULL)
        return 0;
    char tenant[CQ_CRYPT_TENANT_MAX + 1];
    if (cq_st_session_tenant(st, sid, tenant, err) < 0)
        return -1;
    return cq_st_seal_value(st, tenant, key_name, field, data, len, out, out_len, err);
}

/* Replaces *data (malloc'd, as read from key_name and field) with its plain text;
 * nothing without encryption or without a value. */
int cq_st_open_value(struct cq_store *st, const char *key_name, const char *field, uint8_t **data,
                     size_t *len, struct cq_error *err)
{
    if (st->kms == NULL || *data == NULL)
        return 0;
    struct cq_envelope_head head;
    uint8_t key[CQ_CRYPT_KEY_LEN], *plain;
    size_t plain_len;
    int rc = cq_envelope_head(*data, *len, &head, err);
    if (rc == 0)
        rc = dek_version(st, head.tenant, head.version, key, err);
    if (rc == 0)
        rc = cq_envelope_open(&head, key, key_name, field, *data, *len, &plain, &plain_len, err);
    explicit_bzero(key, sizeof(key));
    if (rc < 0)
        return cq_error_prefix(err, "read %s%s%s", key_name, field != NULL ? " " : "",
                               field != NULL ? field : "");
    free(*data);
    *data = plain;
    *len = plain_len;
    return 0;
}

/* cq_st_get_bytes() and cq_st_open_value(). */
int cq_st_get_value(struct cq_store *st, const char *key, const char *field, uint8_t **data,
                    size_t *len, struct cq_error *err)
{
    if (cq_st_get_bytes(st, key, field, data, len, err) < 0)
        return -1;
    if (cq_st_open_value(st, key, field, data, len, err) < 0) {
        free(*data);
        *data = NULL;
        return -1;
    }
    return 0;
}
