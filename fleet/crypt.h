/* fleet/crypt.h - encryption at rest: the envelope of a value in Redis, and the key
 * service that wraps data keys (docs/security.md, "Encryption at rest").
 *
 * Two levels of keys. A master key, given by the operator, never reaches Redis: it only
 * wraps (encrypts) data keys. Data keys are random, one set per tenant, stored wrapped
 * in Redis and versioned; they encrypt the values. Rotating the master key re-wraps the
 * data keys and touches no value; a new data key version serves new writes while the
 * old versions keep reading what they wrote.
 *
 * The key service is an interface (struct cq_kms) so that a KMS or an HSM can hold the
 * master key later; the local one holds it in memory, read from master_key_file. */
#ifndef CQ_FLEET_CRYPT_H
#define CQ_FLEET_CRYPT_H

#include <stddef.h>
#include <stdint.h>
#include "common/error.h"

#define CQ_CRYPT_KEY_LEN    32 /* AES-256 */
#define CQ_CRYPT_NONCE_LEN  12
#define CQ_CRYPT_TAG_LEN    16
#define CQ_CRYPT_MAGIC      "CQE1"
#define CQ_CRYPT_TENANT_MAX 63
/* What an AEAD seal adds to its plaintext: nonce and tag. */
#define CQ_CRYPT_SEAL_OVERHEAD (CQ_CRYPT_NONCE_LEN + CQ_CRYPT_TAG_LEN)

/* The key service: wraps and unwraps data keys. aad binds a wrapped key to its place
 * (tenant and version): a wrapped key copied to another tenant or version does not
 * unwrap. Wrapped keys are at most CQ_KMS_WRAPPED_MAX bytes. */
#define CQ_KMS_WRAPPED_MAX 256
struct cq_kms {
    int (*wrap)(struct cq_kms *kms, const uint8_t key[CQ_CRYPT_KEY_LEN], const char *aad,
                uint8_t *out, size_t *out_len, struct cq_error *err);
    int (*unwrap)(struct cq_kms *kms, const uint8_t *wrapped, size_t len, const char *aad,
                  uint8_t key[CQ_CRYPT_KEY_LEN], struct cq_error *err);
    void (*free)(struct cq_kms *kms);
};

/* The local key service, with the master key of a file: 64 hexadecimal digits (openssl
 * rand -hex 32), readable by its owner only (mode 600, else refused). */
int cq_kms_local_open(const char *master_key_file, struct cq_kms **out, struct cq_error *err);
int cq_kms_local_new(const uint8_t master[CQ_CRYPT_KEY_LEN], struct cq_kms **out,
                     struct cq_error *err);
void cq_kms_free(struct cq_kms *kms);

/* AES-256-GCM with a random nonce: out gets nonce | ciphertext | tag (len +
 * CQ_CRYPT_SEAL_OVERHEAD bytes). Open refuses (CQ_EDENIED) anything altered. */
int cq_aead_seal(const uint8_t key[CQ_CRYPT_KEY_LEN], const void *aad, size_t aad_len,
                 const uint8_t *in, size_t len, uint8_t *out, struct cq_error *err);
int cq_aead_open(const uint8_t key[CQ_CRYPT_KEY_LEN], const void *aad, size_t aad_len,
                 const uint8_t *in, size_t len, uint8_t *out, struct cq_error *err);

/* The envelope of a value:
 *
 *   "CQE1" | tenant length (1 byte) | tenant | data key version (4 bytes, big endian)
 *   | nonce (12) | ciphertext | tag (16)
 *
 * The additional data is the header, the Redis key's name, a zero byte and the hash
 * field ("" for a string key): a value moved to another key, field or session, or given
 * another tenant or version, does not open. The tenant rides in the header so that a
 * reader needs no lookup to find the data key. */
struct cq_envelope_head {
    char tenant[CQ_CRYPT_TENANT_MAX + 1];
    uint32_t version;
    size_t len; /* of the header */
};
size_t cq_envelope_overhead(const char *tenant);
/* out (malloc'd) gets the envelope of in. */
int cq_envelope_seal(const char *tenant, uint32_t version, const uint8_t key[CQ_CRYPT_KEY_LEN],
                     const char *key_name, const char *field, const uint8_t *in, size_t len,
                     uint8_t **out, size_t *out_len, struct cq_error *err);
/* The header of an envelope; CQ_EDENIED for a value that is none (plaintext where an
 * envelope must be: written without encryption, or tampered with). */
int cq_envelope_head(const uint8_t *in, size_t len, struct cq_envelope_head *head,
                     struct cq_error *err);
/* out (malloc'd) gets the plaintext; key is the data key head names. */
int cq_envelope_open(const struct cq_envelope_head *head, const uint8_t key[CQ_CRYPT_KEY_LEN],
                     const char *key_name, const char *field, const uint8_t *in, size_t len,
                     uint8_t **out, size_t *out_len, struct cq_error *err);

/* The additional data of a wrapped data key: "codeq-dek:<tenant>:<version>". */
void cq_dek_aad(const char *tenant, uint32_t version, char *out, size_t len);

#endif
