/* fleet/claim_store.c - the claim check's reads and writes (fleet/claim.h). */
#define _GNU_SOURCE
#include "fleet/claim.h"
#include "api/api.h"
#include "common/cleanup.h"
#include "fleet/auth.h"
#include "fleet/crypt.h"
#include "fleet/log.h"
#include "fleet/store.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

/* 128 random bits as hex: a claim's id is all that stands between a client and
 * another's payload in Redis, so it must not be guessable. */
static int new_id(char out[CQ_CLAIM_ID_LEN + 1], struct cq_error *err)
{
    uint8_t raw[CQ_CLAIM_ID_LEN / 2];
    if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw))
        return cq_error_sys(err, errno, "getrandom");
    for (size_t i = 0; i < sizeof(raw); i++)
        snprintf(out + 2 * i, 3, "%02x", raw[i]);
    return 0;
}

/* A claim's own key (fleet/claim.h): random, used once. */
static int new_key(uint8_t out[CQ_CRYPT_KEY_LEN], struct cq_error *err)
{
    if (getrandom(out, CQ_CRYPT_KEY_LEN, 0) != CQ_CRYPT_KEY_LEN)
        return cq_error_sys(err, errno, "getrandom");
    return 0;
}

int cq_claim_request(struct cq_store *st, Codeq__V1__Request *req, uint64_t threshold,
                     unsigned ttl_s, struct cq_claimed_request *c, struct cq_error *err)
{
    memset(c, 0, sizeof(*c));
    Codeq__V1__Arguments *args =
        req->operation_case == CODEQ__V1__REQUEST__OPERATION_INVOKE ? req->invoke->arguments : NULL;
    uint64_t largest = 0;
    for (size_t i = 0; args != NULL && i < args->n_content; i++) {
        const Codeq__V1__FileContent *f = args->content[i];
        uint64_t n = cq_claim_file_len(f);
        if (n > CQ_WORKER_MAX_FILE_BYTES)
            return cq_error_set(err, CQ_EINVALID,
                                "%s has %llu bytes, more than the 100 MB limit of a file", f->path,
                                (unsigned long long)n);
        largest = n > largest ? n : largest;
    }
    size_t total = codeq__v1__request__get_packed_size(req);
    if (total <= threshold)
        return 0;
    if (args == NULL || st == NULL)
        return cq_error_set(err, CQ_ELIMIT,
                            "the request packs to %zu bytes, more than a Kafka message takes "
                            "(claim_threshold %llu): %s",
                            total, (unsigned long long)threshold,
                            args == NULL ? "only an invoke's arguments can go through Redis"
                                         : "large requests go through Redis, and this client "
                                           "has none (set CODEQ_REDIS)");
    size_t size = codeq__v1__arguments__get_packed_size(args);
    if (size > CQ_CLAIM_MAX_BYTES)
        return cq_error_set(err, CQ_ELIMIT,
                            "the request's arguments have %zu bytes, more than the 200 MiB limit "
                            "of a request",
                            size);
    /* Packed between the seal's nonce and tag, and sealed in place. */
    cq_autofree uint8_t *sealed = malloc(size + CQ_CRYPT_SEAL_OVERHEAD);
    if (sealed == NULL)
        return cq_error_sys(err, ENOMEM, "allocate %zu bytes", size);
    uint8_t *packed = sealed + CQ_CRYPT_NONCE_LEN;
    codeq__v1__arguments__pack(args, packed);
    cq_sha256(packed, size, c->sha256);
    if (new_id(c->id, err) < 0 || new_key(c->key, err) < 0 ||
        cq_claim_seal(c->id, c->key, sealed, size, err) < 0 ||
        cq_store_claim_put(st, c->id, sealed, size + CQ_CRYPT_SEAL_OVERHEAD, ttl_s, NULL, err) < 0)
        return -1;
    codeq__v1__claim__init(&c->claim);
    c->claim.id = c->id;
    c->claim.size = size + CQ_CRYPT_SEAL_OVERHEAD;
    c->claim.largest_file = largest;
    c->claim.sha256.data = c->sha256;
    c->claim.sha256.len = sizeof(c->sha256);
    c->claim.key.data = c->key;
    c->claim.key.len = sizeof(c->key);
    c->arguments = args;
    c->moved = true;
    req->invoke->arguments = NULL;
    req->invoke->arguments_claim = &c->claim;
    return 0;
}

void cq_claim_request_undo(Codeq__V1__Request *req, struct cq_claimed_request *c)
{
    if (!c->moved)
        return;
    req->invoke->arguments = c->arguments;
    req->invoke->arguments_claim = NULL;
    c->moved = false;
}

/* The Arguments of a fetched request claim: opened, checked against the signed digest,
 * decoded. */
static int open_arguments(struct cq_store *st, const Codeq__V1__Claim *claim, uint8_t *data,
                          Codeq__V1__Arguments **out, struct cq_error *err)
{
    /* An operator who encrypts at rest was promised no payload in Redis in plain text:
     * a client that stores one (older than sealed claims) is told to upgrade; its
     * bytes are deleted as any claim's. */
    if (claim->key.len == 0 && cq_store_encrypted(st))
        return cq_error_set(err, CQ_EINVALID,
                            "this fleet encrypts what it keeps in Redis, and the request's claim "
                            "is in plain text: use a client that seals its claims (Claim.key)");
    uint8_t *payload;
    size_t payload_len;
    if (cq_claim_open(claim, data, claim->size, &payload, &payload_len, err) < 0)
        return -1;
    uint8_t digest[32];
    cq_sha256(payload, payload_len, digest);
    if (claim->sha256.len == 32 && CRYPTO_memcmp(digest, claim->sha256.data, 32) != 0)
        return cq_error_set(err, CQ_EDENIED,
                            "the claimed arguments are not the ones the request was signed with "
                            "(their SHA-256 differs)");
    return cq_claim_decode_arguments(claim, payload, payload_len, out, err);
}

int cq_claim_fetch_arguments(struct cq_store *st, const Codeq__V1__Invoke *inv, bool need_sha256,
                             Codeq__V1__Arguments **out, struct cq_error *err)
{
    *out = NULL;
    const Codeq__V1__Claim *claim = inv->arguments_claim;
    if (claim == NULL)
        return 0;
    const char *why = cq_claim_invalid(claim);
    if (why != NULL)
        return cq_error_set(err, CQ_EINVALID, "%s", why);
    /* A signature covers the claimed bytes through this digest: without it, anyone who
     * can write to Redis could swap the arguments of a signed request. */
    if (claim->sha256.len != 0 && claim->sha256.len != 32)
        return cq_error_set(err, CQ_EINVALID, "the claim's sha256 is not 32 bytes");
    if (need_sha256 && claim->sha256.len == 0)
        return cq_error_set(err, CQ_EDENIED, "a signed request's claim must carry its sha256");
    cq_autofree uint8_t *data = NULL;
    if (cq_store_claim_get(st, claim->id, claim->size, &data, err) < 0)
        return cq_error_prefix(err, "the request's arguments");
    int rc = open_arguments(st, claim, data, out, err);
    /* Read once: the request is claimed and never runs again, so nothing else needs
     * it, and 100 MB need not wait for their time to live. */
    struct cq_error ignored;
    if (cq_store_claim_delete(st, claim->id, &ignored) < 0)
        cq_log_event(CQ_LOG_WARN, "claim_not_deleted",
                     CQ_FIELDS(CQ_LS("claim_id", claim->id), CQ_LS("error", ignored.msg)),
                     "claim %s not deleted (it expires): %s", claim->id, ignored.msg);
    return rc;
}

int cq_claim_reply(struct cq_store *st, const char *request_id, const char *session_id,
                   uint64_t threshold, unsigned ttl_s, uint8_t **bytes, size_t *len,
                   struct cq_error *err)
{
    if (*len <= threshold)
        return 0;
    if (*len > CQ_CLAIM_MAX_BYTES)
        return cq_error_set(err, CQ_ELIMIT,
                            "the reply has %zu bytes, more than the %llu a "
                            "reply may have",
                            *len, (unsigned long long)CQ_CLAIM_MAX_BYTES);
    char id[CQ_CLAIM_ID_LEN + 1];
    uint8_t key[CQ_CRYPT_KEY_LEN];
    size_t stored = *len + CQ_CRYPT_SEAL_OVERHEAD;
    cq_autofree uint8_t *sealed = malloc(stored);
    if (sealed == NULL)
        return cq_error_sys(err, ENOMEM, "allocate %zu bytes", stored);
    memcpy(sealed + CQ_CRYPT_NONCE_LEN, *bytes, *len);
    if (new_id(id, err) < 0 || new_key(key, err) < 0 ||
        cq_claim_seal(id, key, sealed, *len, err) < 0 ||
        cq_store_claim_put(st, id, sealed, stored, ttl_s, session_id, err) < 0)
        return -1;
    Codeq__V1__Claim claim = CODEQ__V1__CLAIM__INIT;
    claim.id = id;
    claim.size = stored;
    claim.key.data = key;
    claim.key.len = sizeof(key);
    Codeq__V1__Response small = CODEQ__V1__RESPONSE__INIT;
    small.request_id = (char *)request_id;
    small.session_id = (char *)(session_id != NULL ? session_id : "");
    small.payload_case = CODEQ__V1__RESPONSE__PAYLOAD_CLAIM;
    small.claim = &claim;
    size_t n = codeq__v1__response__get_packed_size(&small);
    uint8_t *packed = malloc(n ? n : 1);
    if (packed == NULL) {
        struct cq_error ignored;
        cq_store_claim_delete(st, id, &ignored);
        return cq_error_sys(err, ENOMEM, "allocate %zu bytes", n);
    }
    codeq__v1__response__pack(&small, packed);
    free(*bytes);
    *bytes = packed;
    *len = n;
    return 0;
}

int cq_claim_resolve_reply(struct cq_store *st, Codeq__V1__Response **resp, struct cq_error *err)
{
    const Codeq__V1__Response *outer = *resp;
    if (outer->payload_case != CODEQ__V1__RESPONSE__PAYLOAD_CLAIM)
        return 0;
    if (st == NULL)
        return cq_error_set(err, CQ_EINVALID,
                            "the reply is in Redis (it was too large for Kafka) and this client "
                            "has no Redis (set CODEQ_REDIS)");
    const char *why = outer->claim != NULL ? cq_claim_invalid(outer->claim) : "no claim";
    if (why != NULL)
        return cq_error_set(err, CQ_EINVALID, "the reply's claim: %s", why);
    cq_autofree uint8_t *data = NULL;
    if (cq_store_claim_get(st, outer->claim->id, outer->claim->size, &data, err) < 0)
        return cq_error_prefix(err, "the reply");
    uint8_t *payload;
    size_t payload_len;
    Codeq__V1__Response *inner;
    if (cq_claim_open(outer->claim, data, outer->claim->size, &payload, &payload_len, err) < 0 ||
        cq_claim_decode_response(outer, payload, payload_len, &inner, err) < 0)
        return cq_error_prefix(err, "the reply");
    codeq__v1__response__free_unpacked(*resp, NULL);
    *resp = inner;
    return 0;
}
