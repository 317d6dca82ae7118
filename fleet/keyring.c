/* fleet/keyring.c - the keys in Redis (fleet/keyring.h). */
#define _GNU_SOURCE
#include "fleet/keyring.h"

#include <stdlib.h>
#include <string.h>
#include "fleet/store.h"

struct cq_keyring {
    struct cq_store *store;
    struct cq_keys_source source;
};

bool cq_keyring_named(const char *keys_file)
{
    return strcmp(keys_file, CQ_KEYS_IN_REDIS) == 0;
}

int cq_keyring_read(struct cq_keyring *kr, struct cq_keyfile *kf, struct cq_error *err)
{
    char *text = NULL;
    int64_t version;
    if (cq_store_keyring_get(kr->store, &text, &version, err) < 0)
        return -1;
    size_t len = strlen(text);
    int rc = cq_keyfile_parse(text, "in Redis", kf, err);
    explicit_bzero(text, len);
    free(text);
    if (rc == 0)
        kf->version = version;
    return rc;
}

int cq_keyring_write(struct cq_keyring *kr, const struct cq_keyfile *kf, struct cq_error *err)
{
    char *text = NULL;
    size_t len = 0;
    if (cq_keyfile_format(kf, &text, &len, err) < 0)
        return -1;
    int rc = cq_store_keyring_put(kr->store, text, kf->version, err);
    explicit_bzero(text, len);
    free(text);
    return rc;
}

static int source_version(void *ctx, int64_t *version, struct cq_error *err)
{
    struct cq_keyring *kr = ctx;
    return cq_store_keyring_version(kr->store, version, err);
}

static int source_read(void *ctx, struct cq_keyfile *kf, struct cq_error *err)
{
    return cq_keyring_read(ctx, kf, err);
}

int cq_keyring_open(const struct cq_fleet_config *cfg, struct cq_keyring **out,
                    struct cq_error *err)
{
    struct cq_keyring *kr = calloc(1, sizeof(*kr));
    if (kr == NULL)
        return cq_error_sys(err, ENOMEM, "open the keyring");
    if (cq_store_open(cfg, &kr->store, err) < 0) {
        free(kr);
        return cq_error_prefix(err, "the keyring in Redis");
    }
    kr->source = (struct cq_keys_source){kr, source_version, source_read};
    *out = kr;
    return 0;
}

void cq_keyring_close(struct cq_keyring *kr)
{
    if (kr == NULL)
        return;
    cq_store_close(kr->store);
    free(kr);
}

const struct cq_keys_source *cq_keyring_source(struct cq_keyring *kr)
{
    return &kr->source;
}

int cq_keys_open(const struct cq_fleet_config *cfg, struct cq_keyring **keyring,
                 struct cq_keystore **keys, struct cq_error *err)
{
    *keyring = NULL;
    *keys = NULL;
    if (cfg->keys_file[0] == '\0')
        return 0;
    if (!cq_keyring_named(cfg->keys_file))
        return cq_keystore_open(cfg->keys_file, NULL, keys, err);
    if (cq_keyring_open(cfg, keyring, err) < 0)
        return -1;
    if (cq_keystore_open("keyring", cq_keyring_source(*keyring), keys, err) < 0) {
        cq_keyring_close(*keyring);
        *keyring = NULL;
        return -1;
    }
    return 0;
}
