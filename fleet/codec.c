/* fleet/codec.c - codeq.v1 protobuf <-> the worker core's structures.
 *
 * Decoded messages come from the network: every field is checked before use
 * (cq_codec_invalid), and nothing here trusts a length or an enum it did not check. */
#define _GNU_SOURCE
#include "fleet/codec.h"
#include "fleet/claim.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool empty(const char *s)
{
    return s == NULL || s[0] == '\0';
}

bool cq_codec_topic_name_ok(const char *topic)
{
    size_t n = strlen(topic);
    if (n == 0 || n > 249 || strcmp(topic, ".") == 0 || strcmp(topic, "..") == 0)
        return false;
    return strspn(topic, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == n;
}

/* A file of writeFiles over the files limit, checked at the edge: the dispatcher refuses
 * it before it travels to a worker and into the session's snapshot. */
static const char *too_large(const Codeq__V1__Arguments *args)
{
    for (size_t i = 0; args != NULL && i < args->n_content; i++) {
        uint64_t len = cq_claim_file_len(args->content[i]);
        if (len > CQ_WORKER_MAX_FILE_BYTES)
            return "a file in content is larger than the 100 MB limit of a file";
    }
    return NULL;
}

bool cq_codec_interpreter_name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > 63 || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        return false;
    if (!((name[0] >= 'a' && name[0] <= 'z') || (name[0] >= '0' && name[0] <= '9')))
        return false;
    return strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789._-") == n;
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
    if (!cq_codec_topic_name_ok(req->reply_topic))
        return "reply_topic is not a Kafka topic name (1-249 of [A-Za-z0-9._-], not . or ..)";
    if (strlen(req->session_id) > CQ_SESSION_ID_MAX)
        return "session_id is too long";
    /* The worker core's rule for ids; checked here too, because the id becomes part of
     * Redis keys and Kafka headers before any worker sees it. */
    if (strspn(req->session_id,
               "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") !=
        strlen(req->session_id))
        return "session_id may hold only letters, digits, '_' and '-'";
    switch (req->operation_case) {
    case CODEQ__V1__REQUEST__OPERATION_START_SESSION:
        /* The name becomes a Redis key (interpreter:<name>) and a worker's lookup. */
        if (!empty(req->start_session->code_interpreter_identifier) &&
            !cq_codec_interpreter_name_ok(req->start_session->code_interpreter_identifier))
            return "code_interpreter_identifier is not an interpreter name "
                   "([a-z0-9][a-z0-9._-]{0,62}, not . or ..)";
        return NULL;
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
        if (req->invoke->arguments_claim != NULL) {
            /* Arguments by reference (fleet/claim.h): the claim's own figures are what
             * the edge can check without reading the bulk, and the worker holds what
             * it reads to them. */
            const Codeq__V1__Claim *claim = req->invoke->arguments_claim;
            if (req->invoke->arguments != NULL)
                return "invoke has both arguments and arguments_claim";
            const char *why = cq_claim_invalid(claim);
            if (why != NULL)
                return why;
            if (claim->largest_file > CQ_WORKER_MAX_FILE_BYTES)
                return "a file in content is larger than the 100 MB limit of a file";
            return NULL;
        }
        return too_large(req->invoke->arguments);
    case CODEQ__V1__REQUEST__OPERATION_CANCEL_CALL: {
        const char *target = req->cancel_call->request_id;
        if (empty(req->session_id))
            return "session_id is required";
        /* A request id, as the worker compares it with the ids it runs. */
        if (empty(target) || strlen(target) > 63)
            return "cancel_call.request_id is required (at most 63 characters)";
        if (strcmp(target, req->request_id) == 0)
            return "a cancel_call cannot cancel itself";
        return NULL;
    }
    default:
        return "the request has no operation";
    }
}

int cq_codec_invoke_args(const Codeq__V1__Invoke *inv, struct cq_invoke_args *a, void **owned,
                         struct cq_error *err)
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
            return cq_error_sys(err, ENOMEM, "decode the %zu file contents of invoke %s",
                                in->n_content, inv->tool);
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

/* what names the reply in errors ("the result"). */
static int pack(const Codeq__V1__Response *resp, const char *what, uint8_t **out, size_t *len,
                struct cq_error *err)
{
    *out = NULL;
    *len = 0;
    size_t n = codeq__v1__response__get_packed_size(resp);
    if (n > CQ_CODEC_MAX_RESPONSE)
        return cq_error_set(err, CQ_ELIMIT,
                            "%s of request %.64s is %zu bytes, more than a message may carry "
                            "(%u)",
                            what, resp->request_id, n, CQ_CODEC_MAX_RESPONSE);
    uint8_t *bytes = malloc(n ? n : 1);
    if (bytes == NULL)
        return cq_error_sys(err, ENOMEM, "encode %s of request %.64s (%zu bytes)", what,
                            resp->request_id, n);
    codeq__v1__response__pack(resp, bytes);
    *out = bytes;
    *len = n;
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
    case CQ_RESULT_ACCESS_DENIED:
        return CODEQ__V1__ERROR_CODE__ERROR_CODE_ACCESS_DENIED;
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
                             const struct cq_result *r, uint8_t **out, size_t *len,
                             struct cq_error *err)
{
    *out = NULL;
    *len = 0;
    Codeq__V1__Result result = CODEQ__V1__RESULT__INIT;
    struct block_parts *parts = calloc(r->n_blocks + 1, sizeof(*parts));
    Codeq__V1__ContentBlock **blocks = calloc(r->n_blocks + 1, sizeof(*blocks));
    if (parts == NULL || blocks == NULL) {
        free(parts);
        free(blocks);
        return cq_error_sys(err, ENOMEM, "encode the %zu content blocks of request %.64s",
                            r->n_blocks, str(request_id));
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
        sc.value = str(r->value_text);
        sc.network = r->has_network;
        sc.network_bytes_sent = r->network_bytes_sent;
        sc.network_bytes_received = r->network_bytes_received;
        sc.cpu_time_ms = r->cpu_ms;
        sc.peak_memory_bytes = r->peak_memory_bytes;
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
    int rc = pack(&resp, "the result", out, len, err);
    free(parts);
    free(blocks);
    return rc;
}

/* The allowlist of a session's facts as the message's repeated field: *owned holds a
 * copy of the text that the entries point into (free both). 0, or -1 out of memory. */
static int split_allow(const char *text, char **owned, char ***entries, size_t *n)
{
    *owned = NULL;
    *entries = NULL;
    *n = 0;
    if (text[0] == '\0')
        return 0;
    size_t max = 1;
    for (const char *p = text; *p; p++)
        max += *p == ',';
    *owned = strdup(text);
    *entries = calloc(max, sizeof(char *));
    if (*owned == NULL || *entries == NULL) {
        free(*owned);
        free(*entries);
        *owned = NULL;
        *entries = NULL;
        return -1;
    }
    char *save = NULL;
    for (char *d = strtok_r(*owned, ",", &save); d != NULL; d = strtok_r(NULL, ",", &save))
        (*entries)[(*n)++] = d;
    return 0;
}

/* The wire's mode of a session's facts (sandbox.h's numbering plus one). */
static Codeq__V1__NetworkMode wire_mode(int mode)
{
    return mode >= 0 && mode <= 2 ? (Codeq__V1__NetworkMode)(mode + 1)
                                  : CODEQ__V1__NETWORK_MODE__NETWORK_MODE_UNSPECIFIED;
}

/* s->network_allow and the text it points into (*owned) are malloc'd (free_session);
 * s->limits points to limits. */
static int fill_session(const struct cq_session_info *info, Codeq__V1__Session *s,
                        Codeq__V1__Limits *limits, char **owned)
{
    codeq__v1__session__init(s);
    codeq__v1__limits__init(limits);
    s->session_id = (char *)info->session_id;
    s->name = (char *)info->name;
    s->status = info->status == CQ_SESSION_READY
                    ? CODEQ__V1__SESSION_STATUS__SESSION_STATUS_READY
                    : CODEQ__V1__SESSION_STATUS__SESSION_STATUS_TERMINATED;
    s->created_at_unix_ms = info->created_at_ms;
    s->last_updated_at_unix_ms = info->last_updated_at_ms;
    s->session_timeout_seconds = info->session_timeout_s;
    s->network = wire_mode(info->network_mode);
    s->code_interpreter_identifier = (char *)info->interpreter;
    s->runtime = (char *)info->runtime;
    s->runtime_digest = (char *)info->runtime_digest;
    limits->memory_bytes = info->memory_bytes;
    limits->pids = info->pids;
    limits->cpu_millis = info->cpu_millis;
    limits->disk_bytes = info->disk_bytes;
    s->limits = limits;
    return split_allow(info->network_allow, owned, &s->network_allow, &s->n_network_allow);
}

static void free_session(Codeq__V1__Session *s, char *owned)
{
    free(owned);
    free(s->network_allow);
    s->network_allow = NULL;
    s->n_network_allow = 0;
}

int cq_codec_session_response(const char *request_id, const struct cq_session_info *info,
                              uint8_t **out, size_t *len, struct cq_error *err)
{
    Codeq__V1__Session s;
    Codeq__V1__Limits limits;
    char *owned = NULL;
    if (fill_session(info, &s, &limits, &owned) < 0)
        return cq_error_sys(err, ENOMEM, "encode the session");
    Codeq__V1__Response resp = CODEQ__V1__RESPONSE__INIT;
    resp.request_id = str(request_id);
    resp.session_id = (char *)info->session_id;
    resp.payload_case = CODEQ__V1__RESPONSE__PAYLOAD_SESSION;
    resp.session = &s;
    int rc = pack(&resp, "the session", out, len, err);
    free_session(&s, owned);
    return rc;
}

int cq_codec_sessions_response(const char *request_id, const struct cq_session_info *infos,
                               size_t n, const char *next_token, uint8_t **out, size_t *len,
                               struct cq_error *err)
{
    *out = NULL;
    *len = 0;
    Codeq__V1__Session *items = calloc(n + 1, sizeof(*items));
    Codeq__V1__Session **ptrs = calloc(n + 1, sizeof(*ptrs));
    Codeq__V1__Limits *limits = calloc(n + 1, sizeof(*limits));
    char **owned = calloc(n + 1, sizeof(*owned));
    if (items == NULL || ptrs == NULL || limits == NULL || owned == NULL) {
        free(limits);
        free(items);
        free(ptrs);
        free(owned);
        return cq_error_sys(err, ENOMEM, "encode a list of %zu sessions for request %.64s", n,
                            str(request_id));
    }
    size_t filled = 0;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (fill_session(&infos[i], &items[i], &limits[i], &owned[i]) < 0)
            rc = cq_error_sys(err, ENOMEM, "encode a list of %zu sessions", n);
        else
            filled++;
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
    if (rc == 0)
        rc = pack(&resp, "the session list", out, len, err);
    for (size_t i = 0; i < filled; i++)
        free_session(&items[i], owned[i]);
    free(owned);
    free(limits);
    free(items);
    free(ptrs);
    return rc;
}

int cq_codec_chunk_response(const char *request_id, const char *session_id, int stream,
                            const void *data, size_t data_len, uint64_t sequence, uint8_t **out,
                            size_t *len, struct cq_error *err)
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
    return pack(&resp, "an output chunk", out, len, err);
}

/* An error result as cq_result_fail() makes it (the message in error_message and in
 * one text block), in caller-provided storage: nothing to allocate. */
struct error_parts {
    Codeq__V1__Response resp;
    Codeq__V1__Result result;
    Codeq__V1__ContentBlock block;
    Codeq__V1__ContentBlock *blocks[1];
    Codeq__V1__TextBlock text;
};

static void fill_error(const char *request_id, const char *session_id, enum cq_result_error code,
                       const char *message, struct error_parts *p)
{
    codeq__v1__text_block__init(&p->text);
    p->text.text = str(message);
    codeq__v1__content_block__init(&p->block);
    p->block.block_case = CODEQ__V1__CONTENT_BLOCK__BLOCK_TEXT;
    p->block.text = &p->text;
    p->blocks[0] = &p->block;
    codeq__v1__result__init(&p->result);
    p->result.content = p->blocks;
    p->result.n_content = 1;
    p->result.is_error = true;
    p->result.error_code = error_code_of(code);
    p->result.error_message = str(message);
    codeq__v1__response__init(&p->resp);
    p->resp.request_id = str(request_id);
    p->resp.session_id = str(session_id);
    p->resp.payload_case = CODEQ__V1__RESPONSE__PAYLOAD_RESULT;
    p->resp.result = &p->result;
}

int cq_codec_error_response(const char *request_id, const char *session_id,
                            enum cq_result_error code, const char *message, uint8_t **out,
                            size_t *len, struct cq_error *err)
{
    struct error_parts p;
    fill_error(request_id, session_id, code, message, &p);
    return pack(&p.resp, "the error reply", out, len, err);
}

/* Copies at most max bytes of s into out (max + 1 bytes), cut at a UTF-8 boundary so
 * that the string stays valid UTF-8 if it was. */
static void copy_cut(char *out, const char *s, size_t max)
{
    size_t n = strnlen(str(s), max + 1);
    if (n > max) {
        n = max;
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
            n--; /* s[n] continues a character: cut before that character */
    }
    memmove(out, str(s), n); /* out may be s */
    out[n] = '\0';
}

size_t cq_codec_fallback_response(const char *request_id, const char *session_id,
                                  enum cq_result_error code, const char *message,
                                  uint8_t out[CQ_CODEC_FALLBACK_MAX])
{
    /* Bounds that fit: 2 x 160 for the message (it travels twice), ids as validated
     * (cq_codec_invalid), and under 60 bytes of tags and lengths. */
    char rid[64], sid[CQ_SESSION_ID_MAX + 1], text[161];
    copy_cut(rid, request_id, sizeof(rid) - 1);
    copy_cut(sid, session_id, sizeof(sid) - 1);
    copy_cut(text, message, sizeof(text) - 1);
    struct error_parts p;
    fill_error(rid, sid, code == CQ_RESULT_OK ? CQ_RESULT_INTERNAL : code, text, &p);
    size_t n = codeq__v1__response__get_packed_size(&p.resp);
    while (n > CQ_CODEC_FALLBACK_MAX && text[0] != '\0') { /* not with the bounds above */
        copy_cut(text, text, strlen(text) / 2);
        n = codeq__v1__response__get_packed_size(&p.resp);
    }
    return codeq__v1__response__pack(&p.resp, out);
}

/* ---- the client's side: worker structures -> Request, Response -> worker structures */

int cq_codec_fill_arguments(const struct cq_invoke_args *a, Codeq__V1__Arguments *out, void **owned,
                            struct cq_error *err)
{
    codeq__v1__arguments__init(out);
    *owned = NULL;
    out->code = str(a->code);
    out->language = str(a->language);
    out->clear_context = a->clear_context;
    out->runtime = str(a->runtime);
    out->command = str(a->command);
    out->directory_path = str(a->directory_path);
    out->task_id = str(a->task_id);
    out->timeout = a->timeout_s;
    out->paths = (char **)a->paths;
    out->n_paths = a->n_paths;
    if (a->n_content == 0)
        return 0;
    /* One allocation: the pointer array, then the messages it points to. */
    Codeq__V1__FileContent **items =
        calloc(a->n_content, sizeof(*items) + sizeof(Codeq__V1__FileContent));
    if (items == NULL)
        return cq_error_sys(err, ENOMEM, "encode the %zu file contents of the arguments",
                            a->n_content);
    Codeq__V1__FileContent *files = (Codeq__V1__FileContent *)(items + a->n_content);
    for (size_t i = 0; i < a->n_content; i++) {
        const struct cq_file_content *f = &a->content[i];
        codeq__v1__file_content__init(&files[i]);
        files[i].path = str(f->path);
        /* Text travels as a proto string, which must be UTF-8: anything else is a blob. */
        files[i].data_case = CODEQ__V1__FILE_CONTENT__DATA_BLOB;
        files[i].blob.data = (uint8_t *)f->data;
        files[i].blob.len = f->len;
        items[i] = &files[i];
    }
    out->content = items;
    out->n_content = a->n_content;
    *owned = items;
    return 0;
}

static char *dup_or_null(const char *s)
{
    return empty(s) ? NULL : strdup(s);
}

static uint8_t *dup_bytes(ProtobufCBinaryData b)
{
    uint8_t *copy = malloc(b.len ? b.len : 1);
    if (copy != NULL && b.len > 0)
        memcpy(copy, b.data, b.len);
    return copy;
}

static enum cq_result_error result_error_of(Codeq__V1__ErrorCode e)
{
    switch (e) {
    case CODEQ__V1__ERROR_CODE__ERROR_CODE_NONE:
        return CQ_RESULT_OK;
    case CODEQ__V1__ERROR_CODE__ERROR_CODE_NOT_FOUND:
        return CQ_RESULT_NOT_FOUND;
    case CODEQ__V1__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT:
        return CQ_RESULT_INVALID_ARGUMENT;
    case CODEQ__V1__ERROR_CODE__ERROR_CODE_LIMIT_EXCEEDED:
        return CQ_RESULT_LIMIT_EXCEEDED;
    case CODEQ__V1__ERROR_CODE__ERROR_CODE_TIMED_OUT:
        return CQ_RESULT_TIMED_OUT;
    case CODEQ__V1__ERROR_CODE__ERROR_CODE_ACCESS_DENIED:
        return CQ_RESULT_ACCESS_DENIED;
    default:
        return CQ_RESULT_INTERNAL;
    }
}

static int block_from(const Codeq__V1__ContentBlock *in, struct cq_block *b)
{
    memset(b, 0, sizeof(*b));
    switch (in->block_case) {
    case CODEQ__V1__CONTENT_BLOCK__BLOCK_TEXT:
        b->type = CQ_BLOCK_TEXT;
        b->text = strdup(in->text->text);
        return b->text != NULL ? 0 : -1;
    case CODEQ__V1__CONTENT_BLOCK__BLOCK_IMAGE:
        b->type = CQ_BLOCK_IMAGE;
        b->data = dup_bytes(in->image->data);
        b->data_len = in->image->data.len;
        b->mime_type = strdup(in->image->mime_type);
        return b->data != NULL && b->mime_type != NULL ? 0 : -1;
    case CODEQ__V1__CONTENT_BLOCK__BLOCK_RESOURCE: {
        const Codeq__V1__EmbeddedResource *res = in->resource;
        b->type = CQ_BLOCK_RESOURCE;
        b->uri = strdup(res->uri);
        b->mime_type = strdup(res->mime_type);
        if (res->contents_case == CODEQ__V1__EMBEDDED_RESOURCE__CONTENTS_BLOB) {
            b->is_blob = true;
            b->data = dup_bytes(res->blob);
            b->data_len = res->blob.len;
            return b->uri && b->mime_type && b->data ? 0 : -1;
        }
        b->text = strdup(
            res->contents_case == CODEQ__V1__EMBEDDED_RESOURCE__CONTENTS_TEXT ? res->text : "");
        return b->uri && b->mime_type && b->text ? 0 : -1;
    }
    case CODEQ__V1__CONTENT_BLOCK__BLOCK_RESOURCE_LINK: {
        const Codeq__V1__ResourceLink *link = in->resource_link;
        b->type = CQ_BLOCK_RESOURCE_LINK;
        b->uri = strdup(link->uri);
        b->name = strdup(link->name);
        b->mime_type = strdup(link->mime_type);
        b->size = link->size;
        b->description = strdup(link->description);
        return b->uri && b->name && b->mime_type && b->description ? 0 : -1;
    }
    default:
        /* A block kind from a newer fleet: shown as a note rather than dropped. */
        b->type = CQ_BLOCK_TEXT;
        b->text = strdup("[a content block this client does not know]");
        return b->text != NULL ? 0 : -1;
    }
}

int cq_codec_result_from(const Codeq__V1__Result *in, struct cq_result *r, struct cq_error *err)
{
    cq_result_init(r);
    r->blocks = calloc(in->n_content + 1, sizeof(*r->blocks));
    if (r->blocks == NULL)
        return cq_error_sys(err, ENOMEM, "decode a result of %zu content blocks", in->n_content);
    r->cap_blocks = in->n_content + 1;
    for (size_t i = 0; i < in->n_content; i++) {
        r->n_blocks = i + 1; /* a half-filled block is freed with the rest */
        if (block_from(in->content[i], &r->blocks[i]) < 0)
            return cq_error_sys(err, ENOMEM, "decode content block %zu of the result", i);
    }
    const Codeq__V1__StructuredContent *sc = in->structured_content;
    if (sc != NULL) {
        r->has_structured = true;
        r->stdout_text = strdup(sc->stdout);
        r->stderr_text = strdup(sc->stderr);
        r->value_text = dup_or_null(sc->value);
        r->exit_code = sc->exit_code;
        r->execution_time_ms = sc->execution_time;
        r->has_network = sc->network;
        r->network_bytes_sent = sc->network_bytes_sent;
        r->network_bytes_received = sc->network_bytes_received;
        r->cpu_ms = sc->cpu_time_ms;
        r->peak_memory_bytes = sc->peak_memory_bytes;
        r->task_id = dup_or_null(sc->task_id);
        r->task_status = sc->task_status <= CODEQ__V1__TASK_STATUS__TASK_STATUS_FAILED
                             ? (enum cq_task_status)sc->task_status
                             : CQ_TASK_NONE;
        if (r->stdout_text == NULL || r->stderr_text == NULL ||
            (r->value_text == NULL && !empty(sc->value)) ||
            (r->task_id == NULL && !empty(sc->task_id)))
            return cq_error_sys(err, ENOMEM, "decode the structured content of the result");
    }
    r->is_error = in->is_error;
    r->error_code = result_error_of(in->error_code);
    r->error_message = dup_or_null(in->error_message);
    if (r->error_message == NULL && !empty(in->error_message))
        return cq_error_sys(err, ENOMEM, "decode the error message of the result");
    return 0;
}

void cq_codec_session_from(const Codeq__V1__Session *s, struct cq_session_info *info)
{
    memset(info, 0, sizeof(*info));
    snprintf(info->session_id, sizeof(info->session_id), "%s", s->session_id);
    snprintf(info->name, sizeof(info->name), "%s", s->name);
    info->status = s->status == CODEQ__V1__SESSION_STATUS__SESSION_STATUS_READY
                       ? CQ_SESSION_READY
                       : CQ_SESSION_TERMINATED;
    info->created_at_ms = s->created_at_unix_ms;
    info->last_updated_at_ms = s->last_updated_at_unix_ms;
    info->session_timeout_s = s->session_timeout_seconds;
    snprintf(info->interpreter, sizeof(info->interpreter), "%s", s->code_interpreter_identifier);
    snprintf(info->runtime, sizeof(info->runtime), "%s", s->runtime);
    snprintf(info->runtime_digest, sizeof(info->runtime_digest), "%s", s->runtime_digest);
    if (s->limits != NULL) {
        info->memory_bytes = s->limits->memory_bytes;
        info->pids = s->limits->pids;
        info->cpu_millis = s->limits->cpu_millis;
        info->disk_bytes = s->limits->disk_bytes;
    }
    info->network_mode = s->network >= CODEQ__V1__NETWORK_MODE__NETWORK_MODE_NONE &&
                                 s->network <= CODEQ__V1__NETWORK_MODE__NETWORK_MODE_ALLOWLIST
                             ? (int)s->network - 1
                             : 0;
    /* Entries joined as the worker core keeps them; one that would not fit whole ends
     * the text (the worker refuses allowlists longer than that, so only a foreign
     * sender's could). */
    size_t used = 0;
    for (size_t i = 0; i < s->n_network_allow; i++) {
        size_t need = strlen(s->network_allow[i]) + (i > 0);
        if (used + need >= sizeof(info->network_allow))
            break;
        used += (size_t)snprintf(info->network_allow + used, sizeof(info->network_allow) - used,
                                 "%s%s", i > 0 ? "," : "", s->network_allow[i]);
    }
}
