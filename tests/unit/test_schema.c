/* tests/unit/test_schema.c - the codeq.v1 wire contract (schemas/codeq.proto, compiled
 * by protoc-c into codeq_schema): every operation and result shape survives a
 * pack/unpack round trip, garbage is refused, and field numbers stay what deployed
 * peers were built with (hand-encoded bytes decode to the expected fields). */
#define _GNU_SOURCE
#include "codeq.pb-c.h"
#include "worker/worker.h" /* its enums mirror the schema's: checked below */
#include "unit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --- helpers ------------------------------------------------------------------------- */

static uint8_t *pack_request(const Codeq__V1__Request *req, size_t *len)
{
    *len = codeq__v1__request__get_packed_size(req);
    uint8_t *buf = malloc(*len ? *len : 1);
    ck_assert_ptr_nonnull(buf);
    ck_assert_uint_eq(codeq__v1__request__pack(req, buf), *len);
    return buf;
}

static Codeq__V1__Request *round_trip_request(const Codeq__V1__Request *req)
{
    size_t len;
    uint8_t *buf = pack_request(req, &len);
    Codeq__V1__Request *back = codeq__v1__request__unpack(NULL, len, buf);
    free(buf);
    ck_assert_msg(back != NULL, "a packed Request did not unpack");
    return back;
}

static Codeq__V1__Response *round_trip_response(const Codeq__V1__Response *resp)
{
    size_t len = codeq__v1__response__get_packed_size(resp);
    uint8_t *buf = malloc(len ? len : 1);
    ck_assert_ptr_nonnull(buf);
    ck_assert_uint_eq(codeq__v1__response__pack(resp, buf), len);
    Codeq__V1__Response *back = codeq__v1__response__unpack(NULL, len, buf);
    free(buf);
    ck_assert_msg(back != NULL, "a packed Response did not unpack");
    return back;
}

static void set_common(Codeq__V1__Request *req, const char *op)
{
    req->request_id = (char *)op;
    req->session_id = "sess-0123456789";
    req->tenant = "acme";
    req->reply_topic = "codeq.replies.w1";
    req->deadline_unix_ms = 1700000000123LL;
    req->traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
}

static void assert_common(const Codeq__V1__Request *r, const char *op)
{
    ck_assert_str_eq(r->request_id, op);
    ck_assert_str_eq(r->session_id, "sess-0123456789");
    ck_assert_str_eq(r->tenant, "acme");
    ck_assert_str_eq(r->reply_topic, "codeq.replies.w1");
    ck_assert_int_eq(r->deadline_unix_ms, 1700000000123LL);
    ck_assert_str_eq(r->traceparent, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
}

/* --- requests ------------------------------------------------------------------------ */

START_TEST(start_session_round_trip)
{
    Codeq__V1__Limits limits = CODEQ__V1__LIMITS__INIT;
    limits.memory_bytes = 3ULL << 30;
    limits.pids = 512;
    limits.cpu_millis = 1500;
    limits.disk_bytes = 1ULL << 40;
    Codeq__V1__StartSession__EnvEntry e1 = CODEQ__V1__START_SESSION__ENV_ENTRY__INIT;
    Codeq__V1__StartSession__EnvEntry e2 = CODEQ__V1__START_SESSION__ENV_ENTRY__INIT;
    e1.key = "API_URL";
    e1.value = "http://localhost:8080/v1?a=b";
    e2.key = "EMPTY";
    e2.value = "";
    Codeq__V1__StartSession__EnvEntry *env[] = {&e1, &e2};
    Codeq__V1__StartSession start = CODEQ__V1__START_SESSION__INIT;
    start.name = "analysis \xc3\xa9";
    start.session_timeout_seconds = 28800;
    start.limits = &limits;
    start.network = CODEQ__V1__NETWORK_MODE__NETWORK_MODE_ALLOWLIST;
    char *allow[] = {"files.example.test:443", "*.example.test", "198.51.100.0/24"};
    start.network_allow = allow;
    start.n_network_allow = 3;
    start.n_env = 2;
    start.env = env;
    start.client_token = "tok-1";
    Codeq__V1__Request req = CODEQ__V1__REQUEST__INIT;
    set_common(&req, "start");
    req.operation_case = CODEQ__V1__REQUEST__OPERATION_START_SESSION;
    req.start_session = &start;

    Codeq__V1__Request *r = round_trip_request(&req);
    assert_common(r, "start");
    ck_assert_int_eq(r->operation_case, CODEQ__V1__REQUEST__OPERATION_START_SESSION);
    const Codeq__V1__StartSession *s = r->start_session;
    ck_assert_ptr_nonnull(s);
    ck_assert_str_eq(s->name, "analysis \xc3\xa9");
    ck_assert_uint_eq(s->session_timeout_seconds, 28800);
    ck_assert_ptr_nonnull(s->limits);
    ck_assert_uint_eq(s->limits->memory_bytes, 3ULL << 30);
    ck_assert_uint_eq(s->limits->pids, 512);
    ck_assert_uint_eq(s->limits->cpu_millis, 1500);
    ck_assert_uint_eq(s->limits->disk_bytes, 1ULL << 40);
    ck_assert_str_eq(s->client_token, "tok-1");
    ck_assert_int_eq(s->network, CODEQ__V1__NETWORK_MODE__NETWORK_MODE_ALLOWLIST);
    ck_assert_uint_eq(s->n_network_allow, 3);
    ck_assert_str_eq(s->network_allow[1], "*.example.test");
    ck_assert_uint_eq(s->n_env, 2);
    /* A map's entries: order is not part of the contract. */
    bool seen_url = false, seen_empty = false;
    for (size_t i = 0; i < s->n_env; i++) {
        if (strcmp(s->env[i]->key, "API_URL") == 0) {
            ck_assert_str_eq(s->env[i]->value, "http://localhost:8080/v1?a=b");
            seen_url = true;
        } else if (strcmp(s->env[i]->key, "EMPTY") == 0) {
            ck_assert_str_eq(s->env[i]->value, "");
            seen_empty = true;
        }
    }
    ck_assert_msg(seen_url && seen_empty, "env entries lost");
    codeq__v1__request__free_unpacked(r, NULL);
}
END_TEST

START_TEST(session_operations_round_trip)
{
    Codeq__V1__GetSession get = CODEQ__V1__GET_SESSION__INIT;
    Codeq__V1__Request req = CODEQ__V1__REQUEST__INIT;
    set_common(&req, "get");
    req.operation_case = CODEQ__V1__REQUEST__OPERATION_GET_SESSION;
    req.get_session = &get;
    Codeq__V1__Request *r = round_trip_request(&req);
    assert_common(r, "get");
    ck_assert_int_eq(r->operation_case, CODEQ__V1__REQUEST__OPERATION_GET_SESSION);
    ck_assert_ptr_nonnull(r->get_session); /* an empty message is still present */
    codeq__v1__request__free_unpacked(r, NULL);

    Codeq__V1__ListSessions list = CODEQ__V1__LIST_SESSIONS__INIT;
    list.status = CODEQ__V1__SESSION_STATUS__SESSION_STATUS_TERMINATED;
    list.max_results = 100;
    list.next_token = "abcdef";
    req.request_id = "list";
    req.operation_case = CODEQ__V1__REQUEST__OPERATION_LIST_SESSIONS;
    req.list_sessions = &list;
    r = round_trip_request(&req);
    ck_assert_int_eq(r->operation_case, CODEQ__V1__REQUEST__OPERATION_LIST_SESSIONS);
    ck_assert_int_eq(r->list_sessions->status,
                     CODEQ__V1__SESSION_STATUS__SESSION_STATUS_TERMINATED);
    ck_assert_uint_eq(r->list_sessions->max_results, 100);
    ck_assert_str_eq(r->list_sessions->next_token, "abcdef");
    codeq__v1__request__free_unpacked(r, NULL);

    Codeq__V1__StopSession stop = CODEQ__V1__STOP_SESSION__INIT;
    stop.client_token = "stop-token";
    req.request_id = "stop";
    req.operation_case = CODEQ__V1__REQUEST__OPERATION_STOP_SESSION;
    req.stop_session = &stop;
    r = round_trip_request(&req);
    ck_assert_int_eq(r->operation_case, CODEQ__V1__REQUEST__OPERATION_STOP_SESSION);
    ck_assert_str_eq(r->stop_session->client_token, "stop-token");
    codeq__v1__request__free_unpacked(r, NULL);
}
END_TEST

START_TEST(invoke_round_trip_with_every_argument)
{
    static const uint8_t blob[] = {0, 1, 0xff, 0, 0x80, 'z'};
    Codeq__V1__FileContent text_file = CODEQ__V1__FILE_CONTENT__INIT;
    text_file.path = "dir/notes.md";
    text_file.data_case = CODEQ__V1__FILE_CONTENT__DATA_TEXT;
    text_file.text = "# title\n\xe2\x82\xac 5\n";
    Codeq__V1__FileContent blob_file = CODEQ__V1__FILE_CONTENT__INIT;
    blob_file.path = "data.bin";
    blob_file.data_case = CODEQ__V1__FILE_CONTENT__DATA_BLOB;
    blob_file.blob.data = (uint8_t *)blob;
    blob_file.blob.len = sizeof(blob);
    Codeq__V1__FileContent empty_text = CODEQ__V1__FILE_CONTENT__INIT;
    empty_text.path = "empty.txt";
    empty_text.data_case = CODEQ__V1__FILE_CONTENT__DATA_TEXT;
    empty_text.text = "";
    Codeq__V1__FileContent *content[] = {&text_file, &blob_file, &empty_text};
    char *paths[] = {"a.txt", "sub/b.csv"};

    Codeq__V1__Arguments args = CODEQ__V1__ARGUMENTS__INIT;
    args.code = "print(1)\n";
    args.language = "typescript";
    args.clear_context = 1;
    args.runtime = "nodejs";
    args.command = "ls -la | wc -l";
    args.n_paths = 2;
    args.paths = paths;
    args.n_content = 3;
    args.content = content;
    args.directory_path = "sub";
    args.task_id = "task-9";
    args.timeout = 2.5;
    Codeq__V1__Invoke invoke = CODEQ__V1__INVOKE__INIT;
    invoke.tool = "writeFiles";
    invoke.arguments = &args;
    Codeq__V1__Request req = CODEQ__V1__REQUEST__INIT;
    set_common(&req, "invoke");
    req.operation_case = CODEQ__V1__REQUEST__OPERATION_INVOKE;
    req.invoke = &invoke;

    Codeq__V1__Request *r = round_trip_request(&req);
    assert_common(r, "invoke");
    ck_assert_int_eq(r->operation_case, CODEQ__V1__REQUEST__OPERATION_INVOKE);
    ck_assert_str_eq(r->invoke->tool, "writeFiles");
    const Codeq__V1__Arguments *a = r->invoke->arguments;
    ck_assert_ptr_nonnull(a);
    ck_assert_str_eq(a->code, "print(1)\n");
    ck_assert_str_eq(a->language, "typescript");
    ck_assert(a->clear_context);
    ck_assert_str_eq(a->runtime, "nodejs");
    ck_assert_str_eq(a->command, "ls -la | wc -l");
    ck_assert_uint_eq(a->n_paths, 2);
    ck_assert_str_eq(a->paths[0], "a.txt");
    ck_assert_str_eq(a->paths[1], "sub/b.csv");
    ck_assert_str_eq(a->directory_path, "sub");
    ck_assert_str_eq(a->task_id, "task-9");
    ck_assert_double_eq(a->timeout, 2.5);
    ck_assert_uint_eq(a->n_content, 3);
    ck_assert_str_eq(a->content[0]->path, "dir/notes.md");
    ck_assert_int_eq(a->content[0]->data_case, CODEQ__V1__FILE_CONTENT__DATA_TEXT);
    ck_assert_str_eq(a->content[0]->text, "# title\n\xe2\x82\xac 5\n");
    ck_assert_str_eq(a->content[1]->path, "data.bin");
    ck_assert_int_eq(a->content[1]->data_case, CODEQ__V1__FILE_CONTENT__DATA_BLOB);
    ck_assert_uint_eq(a->content[1]->blob.len, sizeof(blob));
    ck_assert_mem_eq(a->content[1]->blob.data, blob, sizeof(blob));
    /* An empty text is still "text": the oneof keeps which member was set. */
    ck_assert_int_eq(a->content[2]->data_case, CODEQ__V1__FILE_CONTENT__DATA_TEXT);
    ck_assert_str_eq(a->content[2]->text, "");
    codeq__v1__request__free_unpacked(r, NULL);
}
END_TEST

START_TEST(empty_request_is_valid_and_unset)
{
    Codeq__V1__Request req = CODEQ__V1__REQUEST__INIT;
    size_t len;
    uint8_t *buf = pack_request(&req, &len);
    ck_assert_uint_eq(len, 0); /* proto3: defaults are not sent */
    Codeq__V1__Request *r = codeq__v1__request__unpack(NULL, 0, buf);
    free(buf);
    ck_assert_ptr_nonnull(r);
    ck_assert_int_eq(r->operation_case, CODEQ__V1__REQUEST__OPERATION__NOT_SET);
    ck_assert_str_eq(r->request_id, "");
    ck_assert_int_eq(r->deadline_unix_ms, 0);
    codeq__v1__request__free_unpacked(r, NULL);
}
END_TEST

/* --- responses ----------------------------------------------------------------------- */

START_TEST(result_with_every_block_round_trip)
{
    static const uint8_t png[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0};
    static const uint8_t bin[] = {0xde, 0xad, 0, 0xbe, 0xef};
    Codeq__V1__TextBlock text = CODEQ__V1__TEXT_BLOCK__INIT;
    text.text = "42\n";
    Codeq__V1__ImageBlock image = CODEQ__V1__IMAGE_BLOCK__INIT;
    image.data.data = (uint8_t *)png;
    image.data.len = sizeof(png);
    image.mime_type = "image/png";
    Codeq__V1__EmbeddedResource res_text = CODEQ__V1__EMBEDDED_RESOURCE__INIT;
    res_text.uri = "file://out/t.csv";
    res_text.mime_type = "text/csv";
    res_text.contents_case = CODEQ__V1__EMBEDDED_RESOURCE__CONTENTS_TEXT;
    res_text.text = "a,b\n";
    Codeq__V1__EmbeddedResource res_blob = CODEQ__V1__EMBEDDED_RESOURCE__INIT;
    res_blob.uri = "file://x.bin";
    res_blob.mime_type = "application/octet-stream";
    res_blob.contents_case = CODEQ__V1__EMBEDDED_RESOURCE__CONTENTS_BLOB;
    res_blob.blob.data = (uint8_t *)bin;
    res_blob.blob.len = sizeof(bin);
    Codeq__V1__ResourceLink link = CODEQ__V1__RESOURCE_LINK__INIT;
    link.uri = "file://out/plot.png";
    link.name = "plot.png";
    link.mime_type = "image/png";
    link.size = 5ULL << 32;
    link.description = "file";

    Codeq__V1__ContentBlock blocks[5];
    Codeq__V1__ContentBlock *content[5];
    for (int i = 0; i < 5; i++) {
        Codeq__V1__ContentBlock init = CODEQ__V1__CONTENT_BLOCK__INIT;
        blocks[i] = init;
        content[i] = &blocks[i];
    }
    blocks[0].block_case = CODEQ__V1__CONTENT_BLOCK__BLOCK_TEXT;
    blocks[0].text = &text;
    blocks[1].block_case = CODEQ__V1__CONTENT_BLOCK__BLOCK_IMAGE;
    blocks[1].image = &image;
    blocks[2].block_case = CODEQ__V1__CONTENT_BLOCK__BLOCK_RESOURCE;
    blocks[2].resource = &res_text;
    blocks[3].block_case = CODEQ__V1__CONTENT_BLOCK__BLOCK_RESOURCE;
    blocks[3].resource = &res_blob;
    blocks[4].block_case = CODEQ__V1__CONTENT_BLOCK__BLOCK_RESOURCE_LINK;
    blocks[4].resource_link = &link;

    Codeq__V1__StructuredContent sc = CODEQ__V1__STRUCTURED_CONTENT__INIT;
    sc.stdout = "out\n";
    sc.stderr = "err\n";
    sc.exit_code = -1;
    sc.execution_time = 123.25;
    sc.task_id = "T1";
    sc.task_status = CODEQ__V1__TASK_STATUS__TASK_STATUS_CANCELED;
    Codeq__V1__Result result = CODEQ__V1__RESULT__INIT;
    result.n_content = 5;
    result.content = content;
    result.structured_content = &sc;
    result.is_error = 1;
    result.error_code = CODEQ__V1__ERROR_CODE__ERROR_CODE_TIMED_OUT;
    result.error_message = "timed out";
    Codeq__V1__Response resp = CODEQ__V1__RESPONSE__INIT;
    resp.request_id = "req-1";
    resp.session_id = "sess-1";
    resp.payload_case = CODEQ__V1__RESPONSE__PAYLOAD_RESULT;
    resp.result = &result;

    Codeq__V1__Response *r = round_trip_response(&resp);
    ck_assert_str_eq(r->request_id, "req-1");
    ck_assert_str_eq(r->session_id, "sess-1");
    ck_assert_int_eq(r->payload_case, CODEQ__V1__RESPONSE__PAYLOAD_RESULT);
    const Codeq__V1__Result *res = r->result;
    ck_assert_uint_eq(res->n_content, 5);
    ck_assert_int_eq(res->content[0]->block_case, CODEQ__V1__CONTENT_BLOCK__BLOCK_TEXT);
    ck_assert_str_eq(res->content[0]->text->text, "42\n");
    ck_assert_int_eq(res->content[1]->block_case, CODEQ__V1__CONTENT_BLOCK__BLOCK_IMAGE);
    ck_assert_uint_eq(res->content[1]->image->data.len, sizeof(png));
    ck_assert_mem_eq(res->content[1]->image->data.data, png, sizeof(png));
    ck_assert_str_eq(res->content[1]->image->mime_type, "image/png");
    ck_assert_int_eq(res->content[2]->block_case, CODEQ__V1__CONTENT_BLOCK__BLOCK_RESOURCE);
    ck_assert_str_eq(res->content[2]->resource->uri, "file://out/t.csv");
    ck_assert_str_eq(res->content[2]->resource->mime_type, "text/csv");
    ck_assert_int_eq(res->content[2]->resource->contents_case,
                     CODEQ__V1__EMBEDDED_RESOURCE__CONTENTS_TEXT);
    ck_assert_str_eq(res->content[2]->resource->text, "a,b\n");
    ck_assert_int_eq(res->content[3]->resource->contents_case,
                     CODEQ__V1__EMBEDDED_RESOURCE__CONTENTS_BLOB);
    ck_assert_uint_eq(res->content[3]->resource->blob.len, sizeof(bin));
    ck_assert_mem_eq(res->content[3]->resource->blob.data, bin, sizeof(bin));
    ck_assert_int_eq(res->content[4]->block_case, CODEQ__V1__CONTENT_BLOCK__BLOCK_RESOURCE_LINK);
    const Codeq__V1__ResourceLink *l = res->content[4]->resource_link;
    ck_assert_str_eq(l->uri, "file://out/plot.png");
    ck_assert_str_eq(l->name, "plot.png");
    ck_assert_str_eq(l->mime_type, "image/png");
    ck_assert_uint_eq(l->size, 5ULL << 32);
    ck_assert_str_eq(l->description, "file");
    ck_assert_ptr_nonnull(res->structured_content);
    ck_assert_str_eq(res->structured_content->stdout, "out\n");
    ck_assert_str_eq(res->structured_content->stderr, "err\n");
    ck_assert_int_eq(res->structured_content->exit_code, -1);
    ck_assert_double_eq(res->structured_content->execution_time, 123.25);
    ck_assert_str_eq(res->structured_content->task_id, "T1");
    ck_assert_int_eq(res->structured_content->task_status,
                     CODEQ__V1__TASK_STATUS__TASK_STATUS_CANCELED);
    ck_assert(res->is_error);
    ck_assert_int_eq(res->error_code, CODEQ__V1__ERROR_CODE__ERROR_CODE_TIMED_OUT);
    ck_assert_str_eq(res->error_message, "timed out");
    codeq__v1__response__free_unpacked(r, NULL);
}
END_TEST

START_TEST(session_payloads_round_trip)
{
    Codeq__V1__Session a = CODEQ__V1__SESSION__INIT, b = CODEQ__V1__SESSION__INIT;
    a.session_id = "s-a";
    a.name = "first";
    a.status = CODEQ__V1__SESSION_STATUS__SESSION_STATUS_READY;
    a.created_at_unix_ms = 1700000000000LL;
    a.last_updated_at_unix_ms = 1700000000999LL;
    a.session_timeout_seconds = 900;
    b.session_id = "s-b";
    b.status = CODEQ__V1__SESSION_STATUS__SESSION_STATUS_TERMINATED;
    Codeq__V1__Session *items[] = {&a, &b};
    Codeq__V1__SessionList list = CODEQ__V1__SESSION_LIST__INIT;
    list.n_sessions = 2;
    list.sessions = items;
    list.next_token = "s-b";
    Codeq__V1__Response resp = CODEQ__V1__RESPONSE__INIT;
    resp.payload_case = CODEQ__V1__RESPONSE__PAYLOAD_SESSIONS;
    resp.sessions = &list;
    Codeq__V1__Response *r = round_trip_response(&resp);
    ck_assert_int_eq(r->payload_case, CODEQ__V1__RESPONSE__PAYLOAD_SESSIONS);
    ck_assert_uint_eq(r->sessions->n_sessions, 2);
    ck_assert_str_eq(r->sessions->next_token, "s-b");
    const Codeq__V1__Session *s = r->sessions->sessions[0];
    ck_assert_str_eq(s->session_id, "s-a");
    ck_assert_str_eq(s->name, "first");
    ck_assert_int_eq(s->status, CODEQ__V1__SESSION_STATUS__SESSION_STATUS_READY);
    ck_assert_int_eq(s->created_at_unix_ms, 1700000000000LL);
    ck_assert_int_eq(s->last_updated_at_unix_ms, 1700000000999LL);
    ck_assert_uint_eq(s->session_timeout_seconds, 900);
    ck_assert_int_eq(r->sessions->sessions[1]->status,
                     CODEQ__V1__SESSION_STATUS__SESSION_STATUS_TERMINATED);
    codeq__v1__response__free_unpacked(r, NULL);

    resp.payload_case = CODEQ__V1__RESPONSE__PAYLOAD_SESSION;
    resp.session = &a;
    r = round_trip_response(&resp);
    ck_assert_int_eq(r->payload_case, CODEQ__V1__RESPONSE__PAYLOAD_SESSION);
    ck_assert_str_eq(r->session->session_id, "s-a");
    codeq__v1__response__free_unpacked(r, NULL);
}
END_TEST

START_TEST(output_chunk_round_trip)
{
    static const uint8_t data[] = {'o', 'u', 't', 0, 0xff, '\n'};
    Codeq__V1__OutputChunk chunk = CODEQ__V1__OUTPUT_CHUNK__INIT;
    chunk.stream = CODEQ__V1__STREAM__STREAM_STDERR;
    chunk.data.data = (uint8_t *)data;
    chunk.data.len = sizeof(data);
    chunk.sequence = 1ULL << 40;
    chunk.final = 1;
    Codeq__V1__Response resp = CODEQ__V1__RESPONSE__INIT;
    resp.request_id = "r";
    resp.payload_case = CODEQ__V1__RESPONSE__PAYLOAD_CHUNK;
    resp.chunk = &chunk;
    Codeq__V1__Response *r = round_trip_response(&resp);
    ck_assert_int_eq(r->payload_case, CODEQ__V1__RESPONSE__PAYLOAD_CHUNK);
    ck_assert_int_eq(r->chunk->stream, CODEQ__V1__STREAM__STREAM_STDERR);
    ck_assert_uint_eq(r->chunk->data.len, sizeof(data));
    ck_assert_mem_eq(r->chunk->data.data, data, sizeof(data));
    ck_assert_uint_eq(r->chunk->sequence, 1ULL << 40);
    ck_assert(r->chunk->final);
    codeq__v1__response__free_unpacked(r, NULL);

    /* Standalone as well (the fleet may send chunks on their own). */
    size_t len = codeq__v1__output_chunk__get_packed_size(&chunk);
    uint8_t buf[64];
    ck_assert_uint_le(len, sizeof(buf));
    codeq__v1__output_chunk__pack(&chunk, buf);
    Codeq__V1__OutputChunk *c = codeq__v1__output_chunk__unpack(NULL, len, buf);
    ck_assert_ptr_nonnull(c);
    ck_assert_uint_eq(c->sequence, 1ULL << 40);
    codeq__v1__output_chunk__free_unpacked(c, NULL);
}
END_TEST

/* --- malformed input ------------------------------------------------------------------ */

START_TEST(garbage_is_refused)
{
    static const struct {
        const char *what;
        size_t len;
        uint8_t bytes[16];
    } cases[] = {
        {"unterminated varint tag", 4, {0xff, 0xff, 0xff, 0xff}},
        {"length beyond the end", 3, {0x0a, 0x05, 'a'}},
        {"string field sent as varint", 2, {0x08, 0x01}},
        {"field number 0", 2, {0x00, 0x01}},
        {"wire type 7", 2, {0x0f, 0x01}},
        {"invoke sent as varint", 2, {0x70, 0x01}},
        {"truncated fixed64", 5, {0x51, 0x00, 0x00, 0x00, 0x00}},
        {"nested garbage", 4, {0x72, 0x02, 0x0a, 0x09}},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        Codeq__V1__Request *r = codeq__v1__request__unpack(NULL, cases[i].len, cases[i].bytes);
        ck_assert_msg(r == NULL, "%s: unpacked", cases[i].what);
        /* Through the generic entry point too. */
        ProtobufCMessage *m = protobuf_c_message_unpack(&codeq__v1__request__descriptor, NULL,
                                                        cases[i].len, cases[i].bytes);
        ck_assert_msg(m == NULL, "%s: unpacked (generic)", cases[i].what);
    }
    /* Random bytes: never a crash (ASan), whatever the verdict. */
    srandom(7);
    uint8_t buf[128];
    for (int round = 0; round < 5000; round++) {
        size_t len = (size_t)(random() % (long)sizeof(buf));
        for (size_t i = 0; i < len; i++)
            buf[i] = (uint8_t)random();
        Codeq__V1__Request *r = codeq__v1__request__unpack(NULL, len, buf);
        if (r != NULL)
            codeq__v1__request__free_unpacked(r, NULL);
        Codeq__V1__Response *p = codeq__v1__response__unpack(NULL, len, buf);
        if (p != NULL)
            codeq__v1__response__free_unpacked(p, NULL);
    }
}
END_TEST

START_TEST(unknown_fields_are_tolerated)
{
    /* A newer peer's field 99 (varint) and field 100 (bytes) next to request_id. */
    static const uint8_t bytes[] = {0x0a, 0x02, 'r',  '1',  0x98, 0x06,
                                    0x01, 0xa2, 0x06, 0x02, 'x',  'y'};
    Codeq__V1__Request *r = codeq__v1__request__unpack(NULL, sizeof(bytes), bytes);
    ck_assert_msg(r != NULL, "a request with unknown fields was refused");
    ck_assert_str_eq(r->request_id, "r1");
    ck_assert_int_eq(r->operation_case, CODEQ__V1__REQUEST__OPERATION__NOT_SET);
    codeq__v1__request__free_unpacked(r, NULL);
}
END_TEST

/* --- field numbers ------------------------------------------------------------------- */

/* request_id=1 "r1", session_id=2 "s", deadline_unix_ms=5 1000,
 * invoke=14 { tool=1 "getTask", arguments=2 { task_id=9 "t", timeout=10 1.5 } } */
static const uint8_t invoke_bytes[] = {
    0x0a, 0x02, 'r',  '1',                                /* 1: "r1" */
    0x12, 0x01, 's',                                      /* 2: "s" */
    0x28, 0xe8, 0x07,                                     /* 5: 1000 */
    0x72, 0x17,                                           /* 14: 23 bytes */
    0x0a, 0x07, 'g',  'e',  't',  'T',  'a',  's',  'k',  /* 1: "getTask" */
    0x12, 0x0c,                                           /* 2: 12 bytes */
    0x4a, 0x01, 't',                                      /* 9: "t" */
    0x51, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xf8, 0x3f, /* 10: 1.5 */
};

/* tenant=3 "t", reply_topic=4 "q", traceparent=6 "p",
 * start_session=10 { name=1 "n", session_timeout_seconds=2 60,
 *   limits=3 { memory_bytes=1 1<<30, cpu_millis=3 1500 }, env=5 { "A": "B" } } */
static const uint8_t start_bytes[] = {
    0x1a, 0x01, 't',                               /* 3: "t" */
    0x22, 0x01, 'q',                               /* 4: "q" */
    0x32, 0x01, 'p',                               /* 6: "p" */
    0x52, 0x18,                                    /* 10: 24 bytes */
    0x0a, 0x01, 'n',                               /* 1: "n" */
    0x10, 0x3c,                                    /* 2: 60 */
    0x1a, 0x09,                                    /* 3: 9 bytes */
    0x08, 0x80, 0x80, 0x80, 0x80, 0x04,            /* 1: 1 << 30 */
    0x18, 0xdc, 0x0b,                              /* 3: 1500 */
    0x2a, 0x06, 0x0a, 0x01, 'A',  0x12, 0x01, 'B', /* 5: {A: B} */
};

START_TEST(hand_encoded_requests_decode)
{
    Codeq__V1__Request *r = codeq__v1__request__unpack(NULL, sizeof(invoke_bytes), invoke_bytes);
    ck_assert_msg(r != NULL, "the hand-encoded invoke request did not decode");
    ck_assert_str_eq(r->request_id, "r1");
    ck_assert_str_eq(r->session_id, "s");
    ck_assert_int_eq(r->deadline_unix_ms, 1000);
    ck_assert_int_eq(r->operation_case, CODEQ__V1__REQUEST__OPERATION_INVOKE);
    ck_assert_str_eq(r->invoke->tool, "getTask");
    ck_assert_ptr_nonnull(r->invoke->arguments);
    ck_assert_str_eq(r->invoke->arguments->task_id, "t");
    ck_assert_double_eq(r->invoke->arguments->timeout, 1.5);
    ck_assert_str_eq(r->invoke->arguments->code, "");
    codeq__v1__request__free_unpacked(r, NULL);

    r = codeq__v1__request__unpack(NULL, sizeof(start_bytes), start_bytes);
    ck_assert_msg(r != NULL, "the hand-encoded start request did not decode");
    ck_assert_str_eq(r->tenant, "t");
    ck_assert_str_eq(r->reply_topic, "q");
    ck_assert_str_eq(r->traceparent, "p");
    ck_assert_int_eq(r->operation_case, CODEQ__V1__REQUEST__OPERATION_START_SESSION);
    const Codeq__V1__StartSession *s = r->start_session;
    ck_assert_str_eq(s->name, "n");
    ck_assert_uint_eq(s->session_timeout_seconds, 60);
    ck_assert_ptr_nonnull(s->limits);
    ck_assert_uint_eq(s->limits->memory_bytes, 1ULL << 30);
    ck_assert_uint_eq(s->limits->pids, 0);
    ck_assert_uint_eq(s->limits->cpu_millis, 1500);
    ck_assert_uint_eq(s->n_env, 1);
    ck_assert_str_eq(s->env[0]->key, "A");
    ck_assert_str_eq(s->env[0]->value, "B");
    codeq__v1__request__free_unpacked(r, NULL);
}
END_TEST

START_TEST(packing_produces_the_hand_encoded_bytes)
{
    /* The other direction: our encoder writes exactly those bytes. */
    Codeq__V1__Arguments args = CODEQ__V1__ARGUMENTS__INIT;
    args.task_id = "t";
    args.timeout = 1.5;
    Codeq__V1__Invoke invoke = CODEQ__V1__INVOKE__INIT;
    invoke.tool = "getTask";
    invoke.arguments = &args;
    Codeq__V1__Request req = CODEQ__V1__REQUEST__INIT;
    req.request_id = "r1";
    req.session_id = "s";
    req.deadline_unix_ms = 1000;
    req.operation_case = CODEQ__V1__REQUEST__OPERATION_INVOKE;
    req.invoke = &invoke;
    size_t len;
    uint8_t *buf = pack_request(&req, &len);
    ck_assert_uint_eq(len, sizeof(invoke_bytes));
    ck_assert_mem_eq(buf, invoke_bytes, sizeof(invoke_bytes));
    free(buf);
}
END_TEST

START_TEST(hand_encoded_response_decodes)
{
    /* request_id=1 "q", result=10 { content=1 [ { text=1 { text=1 "hi" } } ],
     * is_error=3 true, error_code=4 INVALID_ARGUMENT(2) }, then separately
     * chunk=13 { stream=1 STDERR(2), data=2 "ab", sequence=3 7, final=4 true } */
    static const uint8_t result_bytes[] = {0x0a, 0x01, 'q', 0x52, 0x0c, 0x0a, 0x06, 0x0a, 0x04,
                                           0x0a, 0x02, 'h', 'i',  0x18, 0x01, 0x20, 0x02};
    Codeq__V1__Response *r = codeq__v1__response__unpack(NULL, sizeof(result_bytes), result_bytes);
    ck_assert_msg(r != NULL, "the hand-encoded result did not decode");
    ck_assert_str_eq(r->request_id, "q");
    ck_assert_int_eq(r->payload_case, CODEQ__V1__RESPONSE__PAYLOAD_RESULT);
    ck_assert_uint_eq(r->result->n_content, 1);
    ck_assert_int_eq(r->result->content[0]->block_case, CODEQ__V1__CONTENT_BLOCK__BLOCK_TEXT);
    ck_assert_str_eq(r->result->content[0]->text->text, "hi");
    ck_assert(r->result->is_error);
    ck_assert_int_eq(r->result->error_code, CODEQ__V1__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT);
    ck_assert_ptr_null(r->result->structured_content);
    codeq__v1__response__free_unpacked(r, NULL);

    static const uint8_t chunk_bytes[] = {0x6a, 0x0a, 0x08, 0x02, 0x12, 0x02,
                                          'a',  'b',  0x18, 0x07, 0x20, 0x01};
    r = codeq__v1__response__unpack(NULL, sizeof(chunk_bytes), chunk_bytes);
    ck_assert_msg(r != NULL, "the hand-encoded chunk did not decode");
    ck_assert_int_eq(r->payload_case, CODEQ__V1__RESPONSE__PAYLOAD_CHUNK);
    ck_assert_int_eq(r->chunk->stream, CODEQ__V1__STREAM__STREAM_STDERR);
    ck_assert_uint_eq(r->chunk->data.len, 2);
    ck_assert_mem_eq(r->chunk->data.data, "ab", 2);
    ck_assert_uint_eq(r->chunk->sequence, 7);
    ck_assert(r->chunk->final);
    codeq__v1__response__free_unpacked(r, NULL);
}
END_TEST

/* The worker's enums and the schema's have the same values, so that results and
 * sessions can be converted by value. */
START_TEST(enum_values_match_the_worker)
{
    ck_assert_int_eq(CODEQ__V1__TASK_STATUS__TASK_STATUS_UNSPECIFIED, CQ_TASK_NONE);
    ck_assert_int_eq(CODEQ__V1__TASK_STATUS__TASK_STATUS_SUBMITTED, CQ_TASK_SUBMITTED);
    ck_assert_int_eq(CODEQ__V1__TASK_STATUS__TASK_STATUS_WORKING, CQ_TASK_WORKING);
    ck_assert_int_eq(CODEQ__V1__TASK_STATUS__TASK_STATUS_COMPLETED, CQ_TASK_COMPLETED);
    ck_assert_int_eq(CODEQ__V1__TASK_STATUS__TASK_STATUS_CANCELED, CQ_TASK_CANCELED);
    ck_assert_int_eq(CODEQ__V1__TASK_STATUS__TASK_STATUS_FAILED, CQ_TASK_FAILED);
    ck_assert_int_eq(CODEQ__V1__ERROR_CODE__ERROR_CODE_NONE, CQ_RESULT_OK);
    ck_assert_int_eq(CODEQ__V1__ERROR_CODE__ERROR_CODE_NOT_FOUND, CQ_RESULT_NOT_FOUND);
    ck_assert_int_eq(CODEQ__V1__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT,
                     CQ_RESULT_INVALID_ARGUMENT);
    ck_assert_int_eq(CODEQ__V1__ERROR_CODE__ERROR_CODE_LIMIT_EXCEEDED, CQ_RESULT_LIMIT_EXCEEDED);
    ck_assert_int_eq(CODEQ__V1__ERROR_CODE__ERROR_CODE_TIMED_OUT, CQ_RESULT_TIMED_OUT);
    ck_assert_int_eq(CODEQ__V1__ERROR_CODE__ERROR_CODE_INTERNAL, CQ_RESULT_INTERNAL);
    ck_assert_int_eq(CODEQ__V1__SESSION_STATUS__SESSION_STATUS_READY, CQ_SESSION_READY);
    ck_assert_int_eq(CODEQ__V1__SESSION_STATUS__SESSION_STATUS_TERMINATED, CQ_SESSION_TERMINATED);
    ck_assert_int_eq(CODEQ__V1__STREAM__STREAM_STDOUT, 1); /* cq_stream_fn's stream */
    ck_assert_int_eq(CODEQ__V1__STREAM__STREAM_STDERR, 2);
}
END_TEST

static Suite *schema_suite(void)
{
    Suite *s = suite_create("schema");
    TCase *tc = tcase_create("requests");
    tcase_set_timeout(tc, 10);
    tcase_add_test(tc, start_session_round_trip);
    tcase_add_test(tc, session_operations_round_trip);
    tcase_add_test(tc, invoke_round_trip_with_every_argument);
    tcase_add_test(tc, empty_request_is_valid_and_unset);
    suite_add_tcase(s, tc);

    tc = tcase_create("responses");
    tcase_set_timeout(tc, 10);
    tcase_add_test(tc, result_with_every_block_round_trip);
    tcase_add_test(tc, session_payloads_round_trip);
    tcase_add_test(tc, output_chunk_round_trip);
    suite_add_tcase(s, tc);

    tc = tcase_create("wire");
    tcase_set_timeout(tc, 20);
    tcase_add_test(tc, garbage_is_refused);
    tcase_add_test(tc, unknown_fields_are_tolerated);
    tcase_add_test(tc, hand_encoded_requests_decode);
    tcase_add_test(tc, packing_produces_the_hand_encoded_bytes);
    tcase_add_test(tc, hand_encoded_response_decodes);
    tcase_add_test(tc, enum_values_match_the_worker);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return cq_unit_run(schema_suite(), false);
}
