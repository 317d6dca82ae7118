/* tests/fuzz/fuzz_claim.c - resolving claim-check references (fleet/claim.h).
 *
 * A reference arrives in a Kafka message anyone on the brokers can write, and what Redis
 * holds under it was written by a client: both are hostile. The input is split in two
 * by its first byte (mod the input's length): a message, then the bytes "fetched" for
 * its claim, exactly what cq_claim_fetch_arguments() and cq_claim_resolve_reply() hand
 * cq_claim_open (which opens a sealed claim in place) and then the decoders.
 * - As a Request: cq_codec_invalid (which checks an arguments_claim), then
 *   cq_claim_invalid, cq_claim_open and cq_claim_decode_arguments on the fetched part
 *   (a copy: opening writes), and every file
 *   of the result read (ASan sees a wrong pointer), with the promises checked: no file
 *   above the claim's largest_file or the 100 MB limit.
 * - As a Response: cq_claim_open and cq_claim_decode_response on the fetched part, with
 *   its promises: the
 *   same request id, a final payload, never another claim.
 * Everything is freed: LeakSanitizer fails a run that leaks. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "api/api.h"
#include "fleet/claim.h"
#include "fleet/codec.h"

static volatile size_t sink;

static void check(bool ok)
{
    if (!ok)
        abort();
}

/* What cq_claim_open makes of a copy of data (*copy freed by the caller); NULL when it
 * refuses. */
static uint8_t *opened(const Codeq__V1__Claim *claim, const uint8_t *data, size_t len,
                       uint8_t **copy, size_t *payload_len)
{
    *copy = malloc(len ? len : 1);
    if (*copy == NULL)
        abort();
    memcpy(*copy, data, len);
    uint8_t *payload;
    struct cq_error err;
    if (cq_claim_open(claim, *copy, len, &payload, payload_len, &err) < 0) {
        check(err.msg[0] != '\0');
        return NULL;
    }
    check(*payload_len == cq_claim_payload_size(claim));
    check(payload >= *copy && payload + *payload_len <= *copy + len);
    return payload;
}

static void arguments(const Codeq__V1__Claim *claim, const uint8_t *fetched, size_t fetched_len)
{
    uint8_t *copy;
    size_t len;
    const uint8_t *data = opened(claim, fetched, fetched_len, &copy, &len);
    Codeq__V1__Arguments *args;
    struct cq_error err;
    if (data == NULL || cq_claim_decode_arguments(claim, data, len, &args, &err) < 0) {
        check(data == NULL || err.msg[0] != '\0');
        free(copy);
        return;
    }
    free(copy);
    check(len == cq_claim_payload_size(claim));
    for (size_t i = 0; i < args->n_content; i++) {
        const Codeq__V1__FileContent *f = args->content[i];
        size_t n = f->data_case == CODEQ__V1__FILE_CONTENT__DATA_BLOB   ? f->blob.len
                   : f->data_case == CODEQ__V1__FILE_CONTENT__DATA_TEXT ? strlen(f->text)
                                                                        : 0;
        check(n <= claim->largest_file && n <= CQ_WORKER_MAX_FILE_BYTES);
        sink += strlen(f->path);
        for (size_t j = 0; f->data_case == CODEQ__V1__FILE_CONTENT__DATA_BLOB && j < n; j++)
            sink += f->blob.data[j];
    }
    if (args->code != NULL)
        sink += strlen(args->code);
    codeq__v1__arguments__free_unpacked(args, NULL);
}

static void request(const uint8_t *msg, size_t msg_len, const uint8_t *data, size_t len)
{
    Codeq__V1__Request *req = codeq__v1__request__unpack(NULL, msg_len, msg);
    if (req == NULL)
        return;
    const char *why = cq_codec_invalid(req);
    if (req->operation_case == CODEQ__V1__REQUEST__OPERATION_INVOKE &&
        req->invoke->arguments_claim != NULL) {
        const Codeq__V1__Claim *claim = req->invoke->arguments_claim;
        const char *claim_why = cq_claim_invalid(claim);
        if (why == NULL) {
            /* Past the edge: the id names nothing but a claim, the size is bounded. */
            check(claim_why == NULL && cq_claim_id_ok(claim->id));
            check(cq_claim_payload_size(claim) > 0 &&
                  cq_claim_payload_size(claim) <= CQ_CLAIM_MAX_BYTES);
            check(claim->largest_file <= CQ_WORKER_MAX_FILE_BYTES);
        }
        if (claim_why == NULL)
            arguments(claim, data, len);
    }
    codeq__v1__request__free_unpacked(req, NULL);
}

static void response(const uint8_t *msg, size_t msg_len, const uint8_t *data, size_t len)
{
    Codeq__V1__Response *outer = codeq__v1__response__unpack(NULL, msg_len, msg);
    if (outer == NULL)
        return;
    Codeq__V1__Response *inner;
    struct cq_error err;
    uint8_t *copy = NULL, *payload = NULL;
    size_t payload_len = 0;
    if (outer->payload_case == CODEQ__V1__RESPONSE__PAYLOAD_CLAIM && outer->claim != NULL &&
        cq_claim_invalid(outer->claim) == NULL)
        payload = opened(outer->claim, data, len, &copy, &payload_len);
    if (payload != NULL &&
        cq_claim_decode_response(outer, payload, payload_len, &inner, &err) == 0) {
        check(outer->payload_case == CODEQ__V1__RESPONSE__PAYLOAD_CLAIM);
        check(strcmp(inner->request_id, outer->request_id) == 0);
        check(inner->payload_case == CODEQ__V1__RESPONSE__PAYLOAD_RESULT ||
              inner->payload_case == CODEQ__V1__RESPONSE__PAYLOAD_SESSION ||
              inner->payload_case == CODEQ__V1__RESPONSE__PAYLOAD_SESSIONS);
        if (inner->payload_case == CODEQ__V1__RESPONSE__PAYLOAD_RESULT) {
            struct cq_result r;
            if (cq_codec_result_from(inner->result, &r, &err) == 0)
                sink += r.n_blocks;
            cq_result_free(&r);
        }
        codeq__v1__response__free_unpacked(inner, NULL);
    }
    free(copy);
    codeq__v1__response__free_unpacked(outer, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t split = 1 + data[0] % (size - 1);
    const uint8_t *msg = data + 1, *fetched = data + split;
    size_t msg_len = split - 1, fetched_len = size - split;
    request(msg, msg_len, fetched, fetched_len);
    response(msg, msg_len, fetched, fetched_len);
    return 0;
}
