/* fleet/keyring.h - tenants and keys kept in the fleet's Redis (keys_file = redis).
 *
 * The keys file's records, as one text in Redis (<prefix>keyring) with a version every
 * change raises, for daemons that share no file system: they read it again when the
 * version moves, as they read a changed keys file. Redis is already trusted with every
 * session's files; whoever can read it can read the secrets too (docs/security.md). */
#ifndef CQ_FLEET_KEYRING_H
#define CQ_FLEET_KEYRING_H

#include <stdbool.h>
#include "common/error.h"
#include "fleet/config.h"
#include "fleet/keys.h"

struct cq_keyring;

/* Whether a keys_file setting names the keyring (CQ_KEYS_IN_REDIS). */
bool cq_keyring_named(const char *keys_file);
/* The keyring of cfg's Redis, as a source of a keystore (fleet/keys.h). */
int cq_keyring_open(const struct cq_fleet_config *cfg, struct cq_keyring **out,
                    struct cq_error *err);
void cq_keyring_close(struct cq_keyring *kr);
/* The daemons' keys: none (keyless, *keys NULL), the keys file, or the keyring
 * (*keyring then set, to close after the keystore). */
int cq_keys_open(const struct cq_fleet_config *cfg, struct cq_keyring **keyring,
                 struct cq_keystore **keys, struct cq_error *err);
const struct cq_keys_source *cq_keyring_source(struct cq_keyring *kr);
/* Reads the records (kf->version set); writes them back only if the version did not
 * move since (CQ_EINVALID otherwise: someone else changed them meanwhile). */
int cq_keyring_read(struct cq_keyring *kr, struct cq_keyfile *kf, struct cq_error *err);
int cq_keyring_write(struct cq_keyring *kr, const struct cq_keyfile *kf, struct cq_error *err);

#endif
