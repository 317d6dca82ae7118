/* fleet/keys.h - tenants and their signing keys (docs/security.md).
 *
 * A tenant is a name; a key is an id (public: it travels with every request), the
 * tenant it belongs to and a 256-bit secret shared by the client and the fleet (an HMAC
 * key, so the fleet must be able to read it back). A tenant has as many keys as it
 * likes, so that a new one can be handed out before the old one is revoked (rotation).
 *
 * The keys file is the operator's: `codeq tenant` and `codeq key` edit it, the daemons
 * read it and read it again when it changes (a revoked key is refused within a second,
 * without a restart). It must be readable by its owner alone, as ssh demands of a
 * private key: anyone who can read it can act as every tenant.
 *
 * For daemons that share no file system, the same records can live in the fleet's Redis
 * instead (keys_file = redis: the keyring, fleet/keyring.h), which the daemons already
 * trust with every session. */
#ifndef CQ_FLEET_KEYS_H
#define CQ_FLEET_KEYS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "common/error.h"
#include "common/tenant.h" /* cq_tenant_name_ok, CQ_TENANT_MAX */

#define CQ_KEY_ID_LEN     24 /* "cqk_" and 20 hexadecimal digits */
#define CQ_KEY_SECRET_LEN 64 /* 32 random bytes in hexadecimal */
#define CQ_KEYS_IN_REDIS  "redis"

bool cq_key_id_ok(const char *id);

struct cq_key {
    char id[CQ_KEY_ID_LEN + 1];
    char tenant[CQ_TENANT_MAX + 1];
    char secret[CQ_KEY_SECRET_LEN + 1];
    bool revoked;
    int64_t created_unix;
    int64_t revoked_unix; /* 0 while active */
};

/* A tenant's quotas; 0: no limit of its own (the fleet's tenant_max_* settings). */
struct cq_quota {
    uint64_t sessions;     /* live sessions */
    uint64_t executions;   /* calls that run code or commands, at once */
    uint64_t stored_bytes; /* workspace files kept in Redis, over all its sessions */
    uint64_t rps;          /* requests per second, over all dispatchers */
};
/* The names, as the keys file and `codeq tenant` spell them. */
#define CQ_QUOTA_NAMES "sessions, executions, stored_bytes, rps"

struct cq_keystore;

struct cq_keyfile;

/* Where the records come from instead of a file (the keyring, fleet/keyring.h): the
 * version read() last gave is compared with version() to read again only on change. */
struct cq_keys_source {
    void *ctx;
    int (*version)(void *ctx, int64_t *version, struct cq_error *err);
    int (*read)(void *ctx, struct cq_keyfile *kf, struct cq_error *err);
};

/* Opens the keys file at path, which must exist (`codeq tenant create` makes it) and be
 * private to its owner; or, with source, the records source gives (path names them in
 * errors). source must outlive the keystore. */
int cq_keystore_open(const char *path, const struct cq_keys_source *source,
                     struct cq_keystore **out, struct cq_error *err);
void cq_keystore_close(struct cq_keystore *ks);
/* Copies the key with this id to *key: CQ_ENOTFOUND when there is none. Reads the file
 * again first when it changed (checked at most once a second); a file that became
 * unreadable or invalid keeps the keys last read, and says so in the log once. */
int cq_keystore_lookup(struct cq_keystore *ks, const char *key_id, struct cq_key *key,
                       struct cq_error *err);
/* The tenant's own quotas (all 0 when it has none, or is unknown). */
void cq_keystore_quota(struct cq_keystore *ks, const char *tenant, struct cq_quota *quota);
/* Sets one quota by name (CQ_QUOTA_NAMES) from its text ("10", "1G"). */
int cq_quota_set(struct cq_quota *q, const char *name, const char *value, struct cq_error *err);

/* ---- a client's side --------------------------------------------------------------- */

/* What a client signs with: its tenant, a key id and that key's secret. */
struct cq_credentials {
    char tenant[CQ_TENANT_MAX + 1];
    char key_id[CQ_KEY_ID_LEN + 1];
    char secret[CQ_KEY_SECRET_LEN + 1];
};

/* A client's credentials: the credentials file (path, or $CODEQ_CREDENTIALS when path is
 * NULL; `key = value` lines: tenant, key_id, secret; private to its owner like the keys
 * file), then $CODEQ_TENANT, $CODEQ_KEY_ID and $CODEQ_KEY_SECRET (or the secret alone in
 * the file $CODEQ_KEY_SECRET_FILE, private too) over it. *found false
 * (and nothing set) when none of them names anything: the client does not sign. Partial
 * or malformed credentials are an error, not an unsigned request. */
int cq_credentials_load(const char *path, struct cq_credentials *cr, bool *found,
                        struct cq_error *err);

/* ---- editing the file (codeq tenant, codeq key) ----------------------------------- */

/* The file as a whole: tenants with their creation times, and keys. */
struct cq_keyfile {
    struct cq_keyfile_tenant {
        char name[CQ_TENANT_MAX + 1];
        int64_t created_unix;
        struct cq_quota quota;
    } * tenants;
    size_t n_tenants;
    struct cq_key *keys;
    size_t n_keys;
    int64_t version; /* the keyring's, as read (CQ_KEYS_IN_REDIS) */
};

/* Reads path (a missing file is an empty one when missing_ok). */
int cq_keyfile_read(const char *path, bool missing_ok, struct cq_keyfile *kf, struct cq_error *err);
/* Replaces path atomically (a new file, mode 0600, renamed over it). */
int cq_keyfile_write(const char *path, const struct cq_keyfile *kf, struct cq_error *err);
void cq_keyfile_free(struct cq_keyfile *kf);
/* The records as text (the file's format), and back; text is changed in place. */
int cq_keyfile_format(const struct cq_keyfile *kf, char **text, size_t *len, struct cq_error *err);
int cq_keyfile_parse(char *text, const char *source, struct cq_keyfile *kf, struct cq_error *err);

int cq_keyfile_add_tenant(struct cq_keyfile *kf, const char *name, struct cq_error *err);
/* Removes the tenant and every key of it. */
int cq_keyfile_remove_tenant(struct cq_keyfile *kf, const char *name, struct cq_error *err);
/* A new active key of tenant, with a random id and secret, copied to *key. */
int cq_keyfile_add_key(struct cq_keyfile *kf, const char *tenant, struct cq_key *key,
                       struct cq_error *err);
int cq_keyfile_revoke_key(struct cq_keyfile *kf, const char *key_id, struct cq_error *err);

#endif
