/* fleet/crypt.c - AES-256-GCM envelopes and the local key service (fleet/crypt.h).
 *
 * The threat: someone who reads Redis (a dump, a backup, a replica, a stolen disk, a
 * Redis user with too wide an ACL) reads workspace files, environments with secrets,
 * code and outputs. Encryption at the store's boundary leaves them only ciphertext;
 * the master key stays with the daemons (or, later, a KMS).
 *
 * GCM with a random 96-bit nonce per value: a data key seals far fewer than the 2^32
 * values after which random nonces risk a repeat (a new data key version resets the
 * count). The additional data binds each value to its Redis key and field, so that
 * whoever can write to Redis cannot swap one session's file for another's, or replay
 * a state into another session: it cannot open there. */
#define _GNU_SOURCE
#include "fleet/crypt.h"
#include "common/hex.h"
#include "common/cleanup.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAGIC_LEN 4

static int gcm(bool seal, const uint8_t key[CQ_CRYPT_KEY_LEN], const uint8_t *nonce,
               const void *aad, size_t aad_len, const uint8_t *in, size_t len, uint8_t *out,
               uint8_t *tag, struct cq_error *err)
{
    if (len > INT32_MAX || aad_len > INT32_MAX)
        return cq_error_set(err, CQ_ELIMIT, "%zu bytes are too many for one envelope", len);
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (ctx == NULL)
        return cq_error_sys(err, ENOMEM, "allocate a cipher context");
    int n = 0, ok;
    ok = (seal ? EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, nonce)
               : EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, nonce)) == 1;
    if (ok && aad_len > 0)
        ok = (seal ? EVP_EncryptUpdate(ctx, NULL, &n, aad, (int)aad_len)
                   : EVP_DecryptUpdate(ctx, NULL, &n, aad, (int)aad_len)) == 1;
    if (ok && len > 0)
        ok = (seal ? EVP_EncryptUpdate(ctx, out, &n, in, (int)len)
                   : EVP_DecryptUpdate(ctx, out, &n, in, (int)len)) == 1;
    if (ok && !seal)
        ok = EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, CQ_CRYPT_TAG_LEN, tag) == 1;
    /* The tag is checked here: a value altered anywhere (nonce, ciphertext, tag, or
     * the additional data: its key, its field, its header) fails. */
    if (ok)
        ok = (seal ? EVP_EncryptFinal_ex(ctx, out + n, &n)
                   : EVP_DecryptFinal_ex(ctx, out + n, &n)) == 1;
    if (ok && seal)
        ok = EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, CQ_CRYPT_TAG_LEN, tag) == 1;
    EVP_CIPHER_CTX_free(ctx);
    if (!ok)
        return seal ? cq_error_set(err, CQ_EINTERNAL, "AES-256-GCM encryption failed")
                    : cq_error_set(err, CQ_EDENIED,
                                   "the value does not authenticate (altered, moved to another "
                                   "key, or sealed under another key)");
    return 0;
}

int cq_aead_seal(const uint8_t key[CQ_CRYPT_KEY_LEN], const void *aad, size_t aad_len,
                 const uint8_t *in, size_t len, uint8_t *out, struct cq_error *err)
{
    if (getrandom(out, CQ_CRYPT_NONCE_LEN, 0) != CQ_CRYPT_NONCE_LEN)
        return cq_error_sys(err, errno, "getrandom");
    return gcm(true, key, out, aad, aad_len, in, len, out + CQ_CRYPT_NONCE_LEN,
               out + CQ_CRYPT_NONCE_LEN + len, err);
}

int cq_aead_open(const uint8_t key[CQ_CRYPT_KEY_LEN], const void *aad, size_t aad_len,
                 const uint8_t *in, size_t len, uint8_t *out, struct cq_error *err)
{
    if (len < CQ_CRYPT_SEAL_OVERHEAD)
        return cq_error_set(err, CQ_EDENIED, "the sealed value is truncated (%zu bytes)", len);
    size_t n = len - CQ_CRYPT_SEAL_OVERHEAD;
    return gcm(false, key, in, aad, aad_len, in + CQ_CRYPT_NONCE_LEN, n, out,
               (uint8_t *)in + CQ_CRYPT_NONCE_LEN + n, err);
}

/* ---- the local key service --------------------------------------------------------- */

struct local_kms {
    struct cq_kms kms; /* first: the interface's pointer is this one's */
    uint8_t master[CQ_CRYPT_KEY_LEN];
};

static int local_wrap(struct cq_kms *kms, const uint8_t key[CQ_CRYPT_KEY_LEN], const char *aad,
                      uint8_t *out, size_t *out_len, struct cq_error *err)
{
    struct local_kms *l = (struct local_kms *)kms;
    *out_len = CQ_CRYPT_KEY_LEN + CQ_CRYPT_SEAL_OVERHEAD;
    return cq_aead_seal(l->master, aad, strlen(aad), key, CQ_CRYPT_KEY_LEN, out, err);
}

static int local_unwrap(struct cq_kms *kms, const uint8_t *wrapped, size_t len, const char *aad,
                        uint8_t key[CQ_CRYPT_KEY_LEN], struct cq_error *err)
{
    struct local_kms *l = (struct local_kms *)kms;
    if (len != CQ_CRYPT_KEY_LEN + CQ_CRYPT_SEAL_OVERHEAD)
        return cq_error_set(err, CQ_EDENIED, "a wrapped data key of %zu bytes", len);
    if (cq_aead_open(l->master, aad, strlen(aad), wrapped, len, key, err) < 0)
        return cq_error_set(err, CQ_EDENIED,
                            "data key %s does not unwrap under this master key (another master "
                            "key, or altered)",
                            aad);
    return 0;
}

static void local_free(struct cq_kms *kms)
{
    struct local_kms *l = (struct local_kms *)kms;
    explicit_bzero(l->master, sizeof(l->master));
    free(l);
}

int cq_kms_local_new(const uint8_t master[CQ_CRYPT_KEY_LEN], struct cq_kms **out,
                     struct cq_error *err)
{
    struct local_kms *l = calloc(1, sizeof(*l));
    if (l == NULL)
        return cq_error_sys(err, ENOMEM, "allocate the key service");
    l->kms.wrap = local_wrap;
    l->kms.unwrap = local_unwrap;
    l->kms.free = local_free;
    memcpy(l->master, master, CQ_CRYPT_KEY_LEN);
    *out = &l->kms;
    return 0;
}

int cq_kms_local_open(const char *path, struct cq_kms **out, struct cq_error *err)
{
    cq_autoclose int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return cq_error_sys(err, errno, "open master key file %s", path);
    struct stat st;
    if (fstat(fd, &st) < 0)
        return cq_error_sys(err, errno, "stat %s", path);
    /* Whoever reads the master key reads every tenant's data in Redis. */
    if (!S_ISREG(st.st_mode) || (st.st_mode & 077) != 0)
        return cq_error_set(err, CQ_EINVALID,
                            "master key file %s is not a file readable by its owner only "
                            "(mode %03o): chmod 600 it",
                            path, (unsigned)(st.st_mode & 0777));
    char buf[2 * CQ_CRYPT_KEY_LEN + 3];
    ssize_t n = read(fd, buf, sizeof(buf));
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--;
    uint8_t master[CQ_CRYPT_KEY_LEN];
    bool ok = n == 2 * CQ_CRYPT_KEY_LEN && cq_hex_decode(buf, CQ_CRYPT_KEY_LEN, master, false);
    explicit_bzero(buf, sizeof(buf));
    int rc = ok ? cq_kms_local_new(master, out, err)
                : cq_error_set(err, CQ_EINVALID,
                               "master key file %s: not %d hexadecimal digits (openssl rand "
                               "-hex 32)",
                               path, 2 * CQ_CRYPT_KEY_LEN);
    explicit_bzero(master, sizeof(master));
    return rc;
}

void cq_kms_free(struct cq_kms *kms)
{
    if (kms != NULL)
        kms->free(kms);
}

void cq_dek_aad(const char *tenant, uint32_t version, char *out, size_t len)
{
    snprintf(out, len, "codeq-dek:%s:%u", tenant, version);
}

/* ---- envelopes ---------------------------------------------------------------------- */

size_t cq_envelope_overhead(const char *tenant)
{
    return MAGIC_LEN + 1 + strlen(tenant) + 4 + CQ_CRYPT_SEAL_OVERHEAD;
}

/* header | key name | 0 | field, malloc'd. */
static uint8_t *additional_data(const uint8_t *head, size_t head_len, const char *key_name,
                                const char *field, size_t *len)
{
    size_t k = strlen(key_name), f = field != NULL ? strlen(field) : 0;
    *len = head_len + k + 1 + f;
    uint8_t *aad = malloc(*len);
    if (aad == NULL)
        return NULL;
    memcpy(aad, head, head_len);
    memcpy(aad + head_len, key_name, k);
    aad[head_len + k] = 0;
    if (f > 0)
        memcpy(aad + head_len + k + 1, field, f);
    return aad;
}

int cq_envelope_seal(const char *tenant, uint32_t version, const uint8_t key[CQ_CRYPT_KEY_LEN],
                     const char *key_name, const char *field, const uint8_t *in, size_t len,
                     uint8_t **out, size_t *out_len, struct cq_error *err)
{
    size_t t = strlen(tenant);
    if (t > CQ_CRYPT_TENANT_MAX)
        return cq_error_set(err, CQ_EINVALID, "tenant name of %zu bytes", t);
    size_t head_len = MAGIC_LEN + 1 + t + 4;
    uint8_t *buf = malloc(head_len + len + CQ_CRYPT_SEAL_OVERHEAD);
    if (buf == NULL)
        return cq_error_sys(err, ENOMEM, "allocate %zu bytes", len);
    memcpy(buf, CQ_CRYPT_MAGIC, MAGIC_LEN);
    buf[MAGIC_LEN] = (uint8_t)t;
    memcpy(buf + MAGIC_LEN + 1, tenant, t);
    uint8_t *v = buf + MAGIC_LEN + 1 + t;
    v[0] = (uint8_t)(version >> 24);
    v[1] = (uint8_t)(version >> 16);
    v[2] = (uint8_t)(version >> 8);
    v[3] = (uint8_t)version;
    size_t aad_len;
    cq_autofree uint8_t *aad = additional_data(buf, head_len, key_name, field, &aad_len);
    if (aad == NULL) {
        free(buf);
        return cq_error_sys(err, ENOMEM, "allocate additional data");
    }
    if (cq_aead_seal(key, aad, aad_len, in, len, buf + head_len, err) < 0) {
        free(buf);
        return -1;
    }
    *out = buf;
    *out_len = head_len + len + CQ_CRYPT_SEAL_OVERHEAD;
    return 0;
}

int cq_envelope_head(const uint8_t *in, size_t len, struct cq_envelope_head *head,
                     struct cq_error *err)
{
    if (len < MAGIC_LEN + 1 || memcmp(in, CQ_CRYPT_MAGIC, MAGIC_LEN) != 0)
        return cq_error_set(err, CQ_EDENIED,
                            "a value without its envelope where encryption is on (written "
                            "unencrypted, or tampered with): refused");
    size_t t = in[MAGIC_LEN];
    head->len = MAGIC_LEN + 1 + t + 4;
    if (t > CQ_CRYPT_TENANT_MAX || len < head->len + CQ_CRYPT_SEAL_OVERHEAD)
        return cq_error_set(err, CQ_EDENIED, "a truncated envelope (%zu bytes)", len);
    memcpy(head->tenant, in + MAGIC_LEN + 1, t);
    head->tenant[t] = '\0';
    if (strlen(head->tenant) != t)
        return cq_error_set(err, CQ_EDENIED, "an envelope's tenant holds a zero byte");
    const uint8_t *v = in + MAGIC_LEN + 1 + t;
    head->version = (uint32_t)v[0] << 24 | (uint32_t)v[1] << 16 | (uint32_t)v[2] << 8 | v[3];
    return 0;
}

int cq_envelope_open(const struct cq_envelope_head *head, const uint8_t key[CQ_CRYPT_KEY_LEN],
                     const char *key_name, const char *field, const uint8_t *in, size_t len,
                     uint8_t **out, size_t *out_len, struct cq_error *err)
{
    size_t aad_len, n = len - head->len - CQ_CRYPT_SEAL_OVERHEAD;
    cq_autofree uint8_t *aad = additional_data(in, head->len, key_name, field, &aad_len);
    uint8_t *buf = malloc(n ? n : 1);
    if (aad == NULL || buf == NULL) {
        free(buf);
        return cq_error_sys(err, ENOMEM, "allocate %zu bytes", n);
    }
    if (cq_aead_open(key, aad, aad_len, in + head->len, len - head->len, buf, err) < 0) {
        free(buf);
        return -1;
    }
    *out = buf;
    *out_len = n;
    return 0;
}
