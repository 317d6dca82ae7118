/* fleet/codec.c - codeq.v1 protobuf <-> the worker core's structures.
 *
 * Decoded messages come from the network: every field is checked before use
 * (cq_codec_invalid), and nothing here trusts a length or an enum it did not check. */
#define _GNU_SOURCE
#include "fleet/fleet.h"

#include <stdlib.h>
#include <string.h>

static bool empty(const char *s)
{
    return s == NULL || s[0] == '\0';
}

const char *cq_codec_invalid(const Codeq__V1__Request *req)
{
    if (empty(req->request_id))
        return "request_id is required";
    if (strlen(req->request_id) > 63)
        return "request_id is longer than 63 characters";
    for (const char *p = req->request_id; *p; p++)
        if ((unsigned char)*p < 0x21 || (unsigned char)*p > 0x7e)
            return "request_id must be printable ASCII without spaces";
    if (empty(req->reply_topic))
        return "reply_topic is required";
    if (strlen(req->reply_topic) > 249)
        return "reply_topic is longer than 249 characters (Kafka's limit)";
    if (strlen(req->session_id) > CQ_SESSION_ID_MAX)
        return "session_id is too long";
    switch (req->operation_case) {
    case CODEQ__V1__REQUEST__OPERATION_START_SESSION:
    case CODEQ__V1__REQUEST__OPERATION_LIST_SESSIONS:
        return NULL;
    case CODEQ__V1__REQUEST__OPERATION_GET_SESSION:
    case CODEQ__V1__REQUEST__OPERATION_STOP_SESSION:
        return empty(req->session_id) ? "session_id is required" : NULL;
    case CODEQ__V1__REQUEST__OPERATION_INVOKE:
        if (empty(req->session_id))
            return "session_id is required";
        if (empty(req->invoke->tool))
            return "invoke.tool is required";
        return NULL;
    default:
        return "the request has no operation";
    }
}

int cq_codec_invoke_args(const Codeq__V1__Invoke *inv, struct cq_invoke_args *a, void **owned)
{
    memset(a, 0, sizeof(*a));
    *owned = NULL;
    const Codeq__V1__Arguments *in = inv->arguments;
    if (in == NULL)
        return 0;
    a->code = empty(in->code) ? NULL : in->code;
    a->language = empty(in->language) ? NULL : in->language;
    a->clear_context = in->clear_context;
    a->runtime = empty(in->runtime) ? NULL : in->runtime;
    a->command = empty(in->command) ? NULL : in->command;
    a->directory_path = empty(in->directory_path) ? NULL : in->directory_path;
    a->task_id = empty(in->task_id) ? NULL : in->task_id;
    a->timeout_s = in->timeout;
    a->paths = (const char *const *)in->paths;
    a->n_paths = in->n_paths;
    if (in->n_content > 0) {
        struct cq_file_content *content = calloc(in->n_content, sizeof(*content));
        if (content == NULL)
            return -1;
        for (size_t i = 0; i < in->n_content; i++) {
            const Codeq__V1__FileContent *f = in->content[i];
            content[i].path = f->path;
            if (f->data_case == CODEQ__V1__FILE_CONTENT__DATA_BLOB) {
                content[i].is_blob = true;
                content[i].data = f->blob.data;
                content[i].len = f->blob.len;
            } else {
                const char *text =
                    f->data_case == CODEQ__V1__FILE_CONTENT__DATA_TEXT ? f->text : "";
                content[i].data = (const uint8_t *)text;
                content[i].len = strlen(text);
            }
        }
        a->content = content;
        a->n_content = in->n_content;
        *owned = content;
    }
    return 0;
}

static int pack(const Codeq__V1__Response *resp, uint8_t **out, size_t *len)
{
    *len = codeq__v1__response__get_packed_size(resp);
    *out = malloc(*len ? *len : 1);
    if (*out == NULL)
        return -1;
    codeq__v1__response__pack(resp, *out);
    return 0;
}

static char *str(const char *s)
{
    return (char *)(s != NULL ? s : "");
}

static Codeq__V1__ErrorCode error_code_of(enum cq_result_error e)
{
    switch (e) {
    case CQ_RESULT_OK:
        return CODEQ__V1__ERROR_CODE__ERROR_CODE_NONE;
    case CQ_RESULT_NOT_FOUND:
        return CODEQ__V1__ERROR_CODE__ERROR_CODE_NOT_FOUND;
    case CQ_RESULT_INVALID_ARGUMENT:
        return CODEQ__V1__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT;
    case CQ_RESULT_LIMIT_EXCEEDED:
        return CODEQ__V1__ERROR_CODE__ERROR_CODE_LIMIT_EXCEEDED;
    case CQ_RESULT_TIMED_OUT:
        return CODEQ__V1__ERROR_CODE__ERROR_CODE_TIMED_OUT;
    default:
        return CODEQ__V1__ERROR_CODE__ERROR_CODE_INTERNAL;
    }
}

/* One content block; the parts live in *parts (caller-provided storage). */
struct block_parts {
    Codeq__V1__ContentBlock block;
    Codeq__V1__TextBlock text;
    Codeq__V1__ImageBlock image;
    Codeq__V1__EmbeddedResource resource;
    Codeq__V1__ResourceLink link;
};

static void fill_block(const struct cq_block *b, struct block_parts *p)
{
    codeq__v1__content_block__init(&p->block);
    switch (b->type) {
    case CQ_BLOCK_TEXT:
        codeq__v1__text_block__init(&p->text);
        p->text.text = str(b->text);
        p->block.block_case = CODEQ__V1__CONTENT_BLOCK__BLOCK_TEXT;
        p->block.text = &p->text;
        break;
    case CQ_BLOCK_IMAGE:
        codeq__v1__image_block__init(&p->image);
        p->image.data.data = b->data;
        p->image.data.len = b->data_len;
        p->image.mime_type = str(b->mime_type);
        p->block.block_case = CODEQ__V1__CONTENT_BLOCK__BLOCK_IMAGE;
        p->block.image = &p->image;
        break;
    case CQ_BLOCK_RESOURCE:
        codeq__v1__embedded_resource__init(&p->resource);
        p->resource.uri = str(b->uri);
        p->resource.mime_type = str(b->mime_type);
        if (b->is_blob) {
            p->resource.contents_case = CODEQ__V1__EMBEDDED_RESOURCE__CONTENTS_BLOB;
            p->resource.blob.data = b->data;
            p->resource.blob.len = b->data_len;
        } else {
            p->resource.contents_case = CODEQ__V1__EMBEDDED_RESOURCE__CONTENTS_TEXT;
            p->resource.text = str(b->text);
        }
        p->block.block_case = CODEQ__V1__CONTENT_BLOCK__BLOCK_RESOURCE;
        p->block.resource = &p->resource;
        break;
    case CQ_BLOCK_RESOURCE_LINK:
        codeq__v1__resource_link__init(&p->link);
        p->link.uri = str(b->uri);
        p->link.name = str(b->name);
        p->link.mime_type = str(b->mime_type);
        p->link.size = b->size;
        p->link.description = str(b->description);
        p->block.block_case = CODEQ__V1__CONTENT_BLOCK__BLOCK_RESOURCE_LINK;
        p->block.resource_link = &p->link;
        break;
    }
}

int cq_codec_result_response(const char *request_id, const char *session_id,
                             const struct cq_result *r, uint8_t **out, size_t *len)
{
    Codeq__V1__Result result = CODEQ__V1__RESULT__INIT;
    struct block_parts *parts = calloc(r->n_blocks + 1, sizeof(*parts));
    Codeq__V1__ContentBlock **blocks = calloc(r->n_blocks + 1, sizeof(*blocks));
    if (parts == NULL || blocks == NULL) {
        free(parts);
        free(blocks);
        return -1;
    }
    for (size_t i = 0; i < r->n_blocks; i++) {
        fill_block(&r->blocks[i], &parts[i]);
        blocks[i] = &parts[i].block;
    }
    result.content = blocks;
    result.n_content = r->n_blocks;
    Codeq__V1__StructuredContent sc = CODEQ__V1__STRUCTURED_CONTENT__INIT;
    if (r->has_structured) {
        sc.stdout = str(r->stdout_text);
        sc.stderr = str(r->stderr_text);
        sc.exit_code = r->exit_code;
        sc.execution_time = r->execution_time_ms;
        sc.task_id = str(r->task_id);
        sc.task_status = (Codeq__V1__TaskStatus)r->task_status;
        result.structured_content = &sc;
    }
    result.is_error = r->is_error;
    result.error_code = error_code_of(r->error_code);
    result.error_message = str(r->error_message);
    Codeq__V1__Response resp = CODEQ__V1__RESPONSE__INIT;
    resp.request_id = str(request_id);
    resp.session_id = str(session_id);
    resp.payload_case = CODEQ__V1__RESPONSE__PAYLOAD_RESULT;
    resp.result = &result;
    int rc = pack(&resp, out, len);
    free(parts);
    free(blocks);
    return rc;
}

static void fill_session(const struct cq_session_info *info, Codeq__V1__Session *s)
{
    codeq__v1__session__init(s);
    s->session_id = (char *)info->session_id;
    s->name = (char *)info->name;
    s->status = info->status == CQ_SESSION_READY
                    ? CODEQ__V1__SESSION_STATUS__SESSION_STATUS_READY
                    : CODEQ__V1__SESSION_STATUS__SESSION_STATUS_TERMINATED;
    s->created_at_unix_ms = info->created_at_ms;
    s->last_updated_at_unix_ms = info->last_updated_at_ms;
    s->session_timeout_seconds = info->session_timeout_s;
}

int cq_codec_session_response(const char *request_id, const struct cq_session_info *info,
                              uint8_t **out, size_t *len)
{
    Codeq__V1__Session s;
    fill_session(info, &s);
    Codeq__V1__Response resp = CODEQ__V1__RESPONSE__INIT;
    resp.request_id = str(request_id);
    resp.session_id = (char *)info->session_id;
    resp.payload_case = CODEQ__V1__RESPONSE__PAYLOAD_SESSION;
    resp.session = &s;
    return pack(&resp, out, len);
}

int cq_codec_sessions_response(const char *request_id, const struct cq_session_info *infos,
                               size_t n, const char *next_token, uint8_t **out, size_t *len)
{
    Codeq__V1__Session *items = calloc(n + 1, sizeof(*items));
    Codeq__V1__Session **ptrs = calloc(n + 1, sizeof(*ptrs));
    if (items == NULL || ptrs == NULL) {
        free(items);
        free(ptrs);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        fill_session(&infos[i], &items[i]);
        ptrs[i] = &items[i];
    }
    Codeq__V1__SessionList list = CODEQ__V1__SESSION_LIST__INIT;
    list.sessions = ptrs;
    list.n_sessions = n;
    list.next_token = str(next_token);
    Codeq__V1__Response resp = CODEQ__V1__RESPONSE__INIT;
    resp.request_id = str(request_id);
    resp.payload_case = CODEQ__V1__RESPONSE__PAYLOAD_SESSIONS;
    resp.sessions = &list;
    int rc = pack(&resp, out, len);
    free(items);
    free(ptrs);
    return rc;
}

int cq_codec_chunk_response(const char *request_id, const char *session_id, int stream,
                            const void *data, size_t data_len, uint64_t sequence, uint8_t **out,
                            size_t *len)
{
    Codeq__V1__OutputChunk chunk = CODEQ__V1__OUTPUT_CHUNK__INIT;
    chunk.stream =
        stream == 2 ? CODEQ__V1__STREAM__STREAM_STDERR : CODEQ__V1__STREAM__STREAM_STDOUT;
    chunk.data.data = (uint8_t *)data;
    chunk.data.len = data_len;
    chunk.sequence = sequence;
    Codeq__V1__Response resp = CODEQ__V1__RESPONSE__INIT;
    resp.request_id = str(request_id);
    resp.session_id = str(session_id);
    resp.payload_case = CODEQ__V1__RESPONSE__PAYLOAD_CHUNK;
    resp.chunk = &chunk;
    return pack(&resp, out, len);
}

int cq_codec_error_response(const char *request_id, const char *session_id,
                            enum cq_result_error code, const char *message, uint8_t **out,
                            size_t *len)
{
    struct cq_result r;
    cq_result_init(&r);
    cq_result_fail(&r, code, "%s", message);
    int rc = cq_codec_result_response(request_id, session_id, &r, out, len);
    cq_result_free(&r);
    return rc;
}
