/* fleet/claim.c - checking and decoding claim-check references (fleet/claim.h).
 *
 * No I/O here (fleet/claim_store.c does it), so that the fuzzer drives these with any
 * bytes: a claim's reference comes from a Kafka message anyone on the brokers can
 * write, and what Redis holds under it was written by a client. */
#define _GNU_SOURCE
#include "fleet/claim.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include "api/api.h"
#include "fleet/crypt.h"

bool cq_claim_id_ok(const char *id)
{
    if (id == NULL || strlen(id) != CQ_CLAIM_ID_LEN)
        return false;
    return strspn(id, "0123456789abcdef") == CQ_CLAIM_ID_LEN;
}

const char *cq_claim_invalid(const Codeq__V1__Claim *claim)
{
    /* The id becomes part of a Redis key: anything but hex digits could name another
     * key (a session's files, another client's claim by pattern). */
    if (!cq_claim_id_ok(claim->id))
        return "a claim's id must be 32 lowercase hexadecimal digits";
    if (claim->key.len != 0 && claim->key.len != CQ_CRYPT_KEY_LEN)
        return "a claim's key must be 32 bytes (or none)";
    uint64_t overhead = claim->key.len != 0 ? CQ_CRYPT_SEAL_OVERHEAD : 0;
    if (claim->size <= overhead)
        return "a claim's size is required (a sealed claim's includes its nonce and tag)";
    if (claim->size - overhead > CQ_CLAIM_MAX_BYTES)
        return "the request is larger than the 200 MiB limit of a request";
    return NULL;
}

uint64_t cq_claim_payload_size(const Codeq__V1__Claim *claim)
{
    uint64_t overhead = claim->key.len != 0 ? CQ_CRYPT_SEAL_OVERHEAD : 0;
    return claim->size > overhead ? claim->size - overhead : 0;
}

/* Binds the sealed bytes to their claim: bytes moved from one claim's key to another's
 * do not open, even were both sealed under one key. */
static void claim_aad(const char *id, char *out, size_t len)
{
    snprintf(out, len, "codeq-claim-v1:%s", id);
}

int cq_claim_open(const Codeq__V1__Claim *claim, uint8_t *data, size_t len, uint8_t **payload,
                  size_t *payload_len, struct cq_error *err)
{
    *payload = data;
    *payload_len = len;
    if (len != claim->size)
        return cq_error_set(err, CQ_EINVALID, "the claim holds %zu bytes, not %llu", len,
                            (unsigned long long)claim->size);
    if (claim->key.len == 0)
        return 0;
    if (claim->key.len != CQ_CRYPT_KEY_LEN || len <= CQ_CRYPT_SEAL_OVERHEAD)
        return cq_error_set(err, CQ_EINVALID, "a sealed claim needs a 32-byte key and a payload");
    char aad[64];
    claim_aad(claim->id, aad, sizeof(aad));
    /* In place: the ciphertext follows the nonce, and the plaintext overwrites it
     * exactly (200 MiB are not copied). */
    if (cq_aead_open(claim->key.data, aad, strlen(aad), data, len, data + CQ_CRYPT_NONCE_LEN, err) <
        0)
        return cq_error_set(err, CQ_EDENIED,
                            "the claimed bytes do not open with the claim's key (altered, "
                            "another claim's, or stored in plain text)");
    *payload = data + CQ_CRYPT_NONCE_LEN;
    *payload_len = len - CQ_CRYPT_SEAL_OVERHEAD;
    return 0;
}

int cq_claim_seal(const char *id, const uint8_t key[32], uint8_t *buf, size_t payload_len,
                  struct cq_error *err)
{
    char aad[64];
    claim_aad(id, aad, sizeof(aad));
    return cq_aead_seal(key, aad, strlen(aad), buf + CQ_CRYPT_NONCE_LEN, payload_len, buf, err);
}

uint64_t cq_claim_file_len(const Codeq__V1__FileContent *f)
{
    if (f->data_case == CODEQ__V1__FILE_CONTENT__DATA_BLOB)
        return f->blob.len;
    if (f->data_case == CODEQ__V1__FILE_CONTENT__DATA_TEXT && f->text != NULL)
        return strlen(f->text);
    return 0;
}

int cq_claim_decode_arguments(const Codeq__V1__Claim *claim, const uint8_t *data, size_t len,
                              Codeq__V1__Arguments **out, struct cq_error *err)
{
    *out = NULL;
    if (len != cq_claim_payload_size(claim))
        return cq_error_set(err, CQ_EINVALID, "the claimed arguments have %zu bytes, not %llu", len,
                            (unsigned long long)cq_claim_payload_size(claim));
    Codeq__V1__Arguments *args = codeq__v1__arguments__unpack(NULL, len, data);
    if (args == NULL)
        return cq_error_set(err, CQ_EINVALID, "the claimed arguments do not decode");
    /* The dispatcher let the request through on the claim's largest_file: a file that
     * turns out larger would get past the edge's limit. */
    for (size_t i = 0; i < args->n_content; i++) {
        uint64_t n = cq_claim_file_len(args->content[i]);
        if (n > claim->largest_file || n > CQ_WORKER_MAX_FILE_BYTES) {
            codeq__v1__arguments__free_unpacked(args, NULL);
            return cq_error_set(err, CQ_EINVALID,
                                "a claimed file has %llu bytes, more than the claim declared "
                                "(%llu) or the 100 MB limit of a file",
                                (unsigned long long)n, (unsigned long long)claim->largest_file);
        }
    }
    *out = args;
    return 0;
}

static bool same(const char *a, const char *b)
{
    return strcmp(a != NULL ? a : "", b != NULL ? b : "") == 0;
}

int cq_claim_decode_response(const Codeq__V1__Response *outer, const uint8_t *data, size_t len,
                             Codeq__V1__Response **out, struct cq_error *err)
{
    *out = NULL;
    const Codeq__V1__Claim *claim = outer->claim;
    if (outer->payload_case != CODEQ__V1__RESPONSE__PAYLOAD_CLAIM || claim == NULL)
        return cq_error_set(err, CQ_EINVALID, "the reply refers to no claim");
    if (len != cq_claim_payload_size(claim))
        return cq_error_set(err, CQ_EINVALID, "the claimed reply has %zu bytes, not %llu", len,
                            (unsigned long long)cq_claim_payload_size(claim));
    Codeq__V1__Response *resp = codeq__v1__response__unpack(NULL, len, data);
    if (resp == NULL)
        return cq_error_set(err, CQ_EINVALID, "the claimed reply does not decode");
    const char *why = NULL;
    /* A session's start is answered before its id is in the reply's: ids differ only
     * when both are there. */
    bool both = !same(resp->session_id, "") && !same(outer->session_id, "");
    if (!same(resp->request_id, outer->request_id) ||
        (both && !same(resp->session_id, outer->session_id)))
        why = "the claimed reply is of another request";
    else if (resp->payload_case != CODEQ__V1__RESPONSE__PAYLOAD_RESULT &&
             resp->payload_case != CODEQ__V1__RESPONSE__PAYLOAD_SESSION &&
             resp->payload_case != CODEQ__V1__RESPONSE__PAYLOAD_SESSIONS)
        why = "the claimed reply is not a final reply";
    if (why != NULL) {
        codeq__v1__response__free_unpacked(resp, NULL);
        return cq_error_set(err, CQ_EINVALID, "%s", why);
    }
    *out = resp;
    return 0;
}
