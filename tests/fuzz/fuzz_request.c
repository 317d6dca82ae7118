/* tests/fuzz/fuzz_request.c - the fleet's untrusted Kafka input.
 *
 * Anyone who reaches the brokers can write a Request; the dispatcher and the workers
 * decode it and check it with fleet/codec.c before trusting any field. The client's
 * side reads Responses from its reply topic just as blindly. Each input is decoded
 * both ways:
 * - as a Request: codeq__v1__request__unpack, cq_codec_invalid, the reply topic's name
 *   check, and for an Invoke the worker's arguments (cq_codec_invoke_args), every
 *   field of which is then read so that ASan sees any pointer that is wrong;
 * - as a Response: codeq__v1__response__unpack, then cq_codec_result_from for a result
 *   and cq_codec_session_from for sessions.
 * Everything is freed: LeakSanitizer fails a run that leaks.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "fleet/codec.h"

static volatile size_t sink;

static void check(bool ok)
{
    if (!ok)
        abort();
}

static void read_bytes(const void *p, size_t n)
{
    const uint8_t *b = p;
    size_t sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += b[i];
    sink += sum;
}

static void request(const uint8_t *data, size_t size)
{
    Codeq__V1__Request *req = codeq__v1__request__unpack(NULL, size, data);
    if (req == NULL)
        return;
    const char *why = cq_codec_invalid(req);
    if (req->reply_topic != NULL)
        sink += cq_codec_topic_name_ok(req->reply_topic);
    if (why == NULL) {
        /* What the fleet relies on once a request passed. */
        check(req->request_id[0] != '\0' && strlen(req->request_id) <= 63);
        check(cq_codec_topic_name_ok(req->reply_topic));
        check(strlen(req->session_id) <= CQ_SESSION_ID_MAX);
    }
    if (req->operation_case == CODEQ__V1__REQUEST__OPERATION_INVOKE) {
        struct cq_invoke_args a;
        void *owned;
        struct cq_error err;
        if (cq_codec_invoke_args(req->invoke, &a, &owned, &err) == 0) {
            const char *strings[] = {a.code,    a.language,       a.runtime,
                                     a.command, a.directory_path, a.task_id};
            for (size_t i = 0; i < sizeof(strings) / sizeof(strings[0]); i++)
                if (strings[i] != NULL)
                    sink += strlen(strings[i]);
            for (size_t i = 0; i < a.n_paths; i++)
                sink += strlen(a.paths[i]);
            for (size_t i = 0; i < a.n_content; i++) {
                sink += strlen(a.content[i].path);
                read_bytes(a.content[i].data, a.content[i].len);
            }
        }
        free(owned);
    }
    codeq__v1__request__free_unpacked(req, NULL);
}

static void response(const uint8_t *data, size_t size)
{
    Codeq__V1__Response *resp = codeq__v1__response__unpack(NULL, size, data);
    if (resp == NULL)
        return;
    struct cq_session_info info;
    switch (resp->payload_case) {
    case CODEQ__V1__RESPONSE__PAYLOAD_RESULT: {
        struct cq_result r;
        struct cq_error err;
        if (cq_codec_result_from(resp->result, &r, &err) == 0) {
            for (size_t i = 0; i < r.n_blocks; i++) {
                const struct cq_block *b = &r.blocks[i];
                const char *strings[] = {b->text, b->mime_type, b->uri, b->name, b->description};
                for (size_t j = 0; j < sizeof(strings) / sizeof(strings[0]); j++)
                    if (strings[j] != NULL)
                        sink += strlen(strings[j]);
                if (b->data != NULL)
                    read_bytes(b->data, b->data_len);
            }
            if (r.has_structured)
                sink += strlen(r.stdout_text) + strlen(r.stderr_text);
        }
        cq_result_free(&r);
        break;
    }
    case CODEQ__V1__RESPONSE__PAYLOAD_SESSION:
        cq_codec_session_from(resp->session, &info);
        check(strlen(info.session_id) <= CQ_SESSION_ID_MAX);
        break;
    case CODEQ__V1__RESPONSE__PAYLOAD_SESSIONS:
        for (size_t i = 0; i < resp->sessions->n_sessions; i++) {
            cq_codec_session_from(resp->sessions->sessions[i], &info);
            check(strlen(info.session_id) <= CQ_SESSION_ID_MAX);
        }
        break;
    default:
        break;
    }
    codeq__v1__response__free_unpacked(resp, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    request(data, size);
    response(data, size);
    return 0;
}
