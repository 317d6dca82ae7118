/* fleet/claim.c - checking and decoding claim-check references (fleet/claim.h).
 *
 * No I/O here (fleet/claim_store.c does it), so that the fuzzer drives these with any
 * bytes: a claim's reference comes from a Kafka message anyone on the brokers can
 * write, and what Redis holds under it was written by a client. */
#define _GNU_SOURCE
#include "fleet/claim.h"

#include <errno.h>
#include <string.h>
#include "api/api.h"

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
    if (claim->size == 0)
        return "a claim's size is required";
    if (claim->size > CQ_CLAIM_MAX_BYTES)
        return "the request is larger than the 200 MiB limit of a request";
    return NULL;
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
    if (len != claim->size)
        return cq_error_set(err, CQ_EINVALID, "the claimed arguments have %zu bytes, not %llu", len,
                            (unsigned long long)claim->size);
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
    if (len != claim->size)
        return cq_error_set(err, CQ_EINVALID, "the claimed reply has %zu bytes, not %llu", len,
                            (unsigned long long)claim->size);
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
