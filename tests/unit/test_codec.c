/* tests/unit/test_codec.c - fleet/codec.c without Kafka or Redis: the checks of
 * decoded requests (valid ones pass, each refusal says why), invoke arguments, the
 * Responses the fleet packs and what the client makes of them again (round trips that
 * must give back exactly what went in), the fallback reply that needs no memory, and
 * hostile bytes (random, truncated, oversized, non-UTF-8, absurd numbers), which must
 * neither crash nor be accepted. */
#define _GNU_SOURCE
#include "fleet/codec.h"
#include "fleet/claim.h" /* CQ_CLAIM_MAX_BYTES */
#include "unit.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --- helpers ------------------------------------------------------------------------- */

/* A valid invoke: every test changes one thing of it. */
struct invoke_req {
    Codeq__V1__Request req;
    Codeq__V1__Invoke invoke;
    Codeq__V1__Arguments args;
};

static void invoke_req_init(struct invoke_req *r)
{
    codeq__v1__request__init(&r->req);
    codeq__v1__invoke__init(&r->invoke);
    codeq__v1__arguments__init(&r->args);
    r->req.request_id = "req-1";
    r->req.session_id = "0123456789abcdef0123456789abcdef";
    r->req.reply_topic = "codeq.replies.abc";
    r->req.operation_case = CODEQ__V1__REQUEST__OPERATION_INVOKE;
    r->req.invoke = &r->invoke;
    r->invoke.tool = "executeCode";
    r->invoke.arguments = &r->args;
    r->args.code = "print(1)";
}

static uint8_t *pack_request(const Codeq__V1__Request *req, size_t *len)
{
    *len = codeq__v1__request__get_packed_size(req);
    uint8_t *buf = malloc(*len ? *len : 1);
    ck_assert_ptr_nonnull(buf);
    ck_assert_uint_eq(codeq__v1__request__pack(req, buf), *len);
    return buf;
}

/* What the fleet's daemons do with bytes from Kafka: unpack, then check. */
static const char *invalid_after_wire(const Codeq__V1__Request *req)
{
    size_t len;
    uint8_t *buf = pack_request(req, &len);
    Codeq__V1__Request *back = codeq__v1__request__unpack(NULL, len, buf);
    free(buf);
    ck_assert_msg(back != NULL, "a packed Request did not unpack");
    static char why[300];
    const char *w = cq_codec_invalid(back);
    snprintf(why, sizeof(why), "%s", w != NULL ? w : "");
    codeq__v1__request__free_unpacked(back, NULL);
    return w != NULL ? why : NULL;
}

static char *repeat(char c, size_t n)
{
    char *s = malloc(n + 1);
    ck_assert_ptr_nonnull(s);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

static Codeq__V1__Response *unpack_response(const uint8_t *bytes, size_t len)
{
    Codeq__V1__Response *resp = codeq__v1__response__unpack(NULL, len, bytes);
    ck_assert_msg(resp != NULL, "a packed Response did not unpack");
    return resp;
}

static bool utf8_valid(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        int n = *p < 0x80             ? 0
                : (*p & 0xE0) == 0xC0 ? 1
                : (*p & 0xF0) == 0xE0 ? 2
                : (*p & 0xF8) == 0xF0 ? 3
                                      : -1;
        if (n < 0)
            return false;
        p++;
        for (int i = 0; i < n; i++, p++)
            if ((*p & 0xC0) != 0x80)
                return false;
    }
    return true;
}

/* A deterministic generator, so that a failure can be replayed. */
static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;
static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* --- cq_codec_invalid ---------------------------------------------------------------- */

START_TEST(test_invalid_accepts_each_operation)
{
    struct invoke_req r;
    invoke_req_init(&r);
    ck_assert_ptr_null(cq_codec_invalid(&r.req));
    ck_assert_ptr_null(invalid_after_wire(&r.req));

    Codeq__V1__StartSession start = CODEQ__V1__START_SESSION__INIT;
    Codeq__V1__Request req = CODEQ__V1__REQUEST__INIT;
    req.request_id = "start-1";
    req.reply_topic = "codeq.replies.abc";
    req.operation_case = CODEQ__V1__REQUEST__OPERATION_START_SESSION;
    req.start_session = &start;
    ck_assert_ptr_null(invalid_after_wire(&req)); /* no session id: the fleet makes one */
    start.code_interpreter_identifier = "analytics-2.1_x";
    ck_assert_ptr_null(invalid_after_wire(&req));
    static const char *const bad_names[] = {"..",
                                            "Upper",
                                            "a/b",
                                            "-a",
                                            "a b",
                                            "a:b",
                                            "0123456789012345678901234567890123456789"
                                            "012345678901234567890123"};
    for (size_t i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]); i++) {
        start.code_interpreter_identifier = (char *)bad_names[i];
        const char *why = invalid_after_wire(&req);
        ck_assert_ptr_nonnull(why);
        ck_assert_ptr_nonnull(strstr(why, "code_interpreter_identifier"));
    }
    start.code_interpreter_identifier = "";

    Codeq__V1__ListSessions list = CODEQ__V1__LIST_SESSIONS__INIT;
    req.operation_case = CODEQ__V1__REQUEST__OPERATION_LIST_SESSIONS;
    req.list_sessions = &list;
    ck_assert_ptr_null(invalid_after_wire(&req));

    Codeq__V1__GetSession get = CODEQ__V1__GET_SESSION__INIT;
    req.operation_case = CODEQ__V1__REQUEST__OPERATION_GET_SESSION;
    req.get_session = &get;
    req.session_id = "s1";
    ck_assert_ptr_null(invalid_after_wire(&req));

    Codeq__V1__StopSession stop = CODEQ__V1__STOP_SESSION__INIT;
    req.operation_case = CODEQ__V1__REQUEST__OPERATION_STOP_SESSION;
    req.stop_session = &stop;
    ck_assert_ptr_null(invalid_after_wire(&req));
}
END_TEST

START_TEST(test_invalid_ids)
{
    struct invoke_req r;
    invoke_req_init(&r);
    r.req.request_id = "";
    ck_assert_str_eq(invalid_after_wire(&r.req), "request_id is required");
    r.req.request_id = NULL; /* a message built by hand rather than unpacked */
    ck_assert_str_eq(cq_codec_invalid(&r.req), "request_id is required");

    char *id63 = repeat('a', 63), *id64 = repeat('a', 64);
    r.req.request_id = id63;
    ck_assert_ptr_null(invalid_after_wire(&r.req));
    r.req.request_id = id64;
    ck_assert_str_eq(invalid_after_wire(&r.req), "request_id is longer than 63 characters");
    free(id63);
    free(id64);

    static const char *const unprintable[] = {"a b",   "a\tb",        "a\x01",
                                              "a\x7f", "caf\xc3\xa9", "\xff\xfe"};
    for (size_t i = 0; i < sizeof(unprintable) / sizeof(unprintable[0]); i++) {
        r.req.request_id = (char *)unprintable[i];
        ck_assert_str_eq(cq_codec_invalid(&r.req),
                         "request_id must be printable ASCII without spaces");
    }
    r.req.request_id = "!~all-printable_ASCII.0123";
    ck_assert_ptr_null(cq_codec_invalid(&r.req));

    r.req.request_id = "req-1";
    char *sid40 = repeat('s', CQ_SESSION_ID_MAX), *sid41 = repeat('s', CQ_SESSION_ID_MAX + 1);
    r.req.session_id = sid40;
    ck_assert_ptr_null(invalid_after_wire(&r.req));
    r.req.session_id = sid41;
    ck_assert_str_eq(invalid_after_wire(&r.req), "session_id is too long");
    free(sid40);
    free(sid41);
    /* Ids become Redis keys and Kafka headers: the worker core's alphabet only. */
    static const char *const refused[] = {"a b", "a/b", "a:b", "\xc3\xa9", "a\nb", "a*"};
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        r.req.session_id = (char *)refused[i];
        ck_assert_str_eq(invalid_after_wire(&r.req),
                         "session_id may hold only letters, digits, '_' and '-'");
    }
    r.req.session_id = "Az09_-";
    ck_assert_ptr_null(invalid_after_wire(&r.req));
}
END_TEST

/* writeFiles content past the 100 MB file limit is refused at the edge (checked on the
 * struct: its length is what counts, whatever the bytes). */
START_TEST(test_files_over_the_limit_are_refused_at_the_edge)
{
    struct invoke_req r;
    invoke_req_init(&r);
    r.invoke.tool = "writeFiles";
    static uint8_t byte;
    Codeq__V1__FileContent small = CODEQ__V1__FILE_CONTENT__INIT, big = small;
    small.path = "a";
    small.data_case = CODEQ__V1__FILE_CONTENT__DATA_BLOB;
    small.blob = (ProtobufCBinaryData){.len = CQ_WORKER_MAX_FILE_BYTES, .data = &byte};
    big.path = "b";
    big.data_case = CODEQ__V1__FILE_CONTENT__DATA_BLOB;
    big.blob = (ProtobufCBinaryData){.len = CQ_WORKER_MAX_FILE_BYTES + 1, .data = &byte};
    Codeq__V1__FileContent *content[] = {&small, &big};
    r.args.content = content;
    r.args.n_content = 1;
    ck_assert_ptr_null(cq_codec_invalid(&r.req)); /* exactly the limit */
    r.args.n_content = 2;
    ck_assert_str_eq(cq_codec_invalid(&r.req),
                     "a file in content is larger than the 100 MB limit of a file");
}
END_TEST

START_TEST(test_invalid_reply_topics)
{
    struct invoke_req r;
    invoke_req_init(&r);
    r.req.reply_topic = "";
    ck_assert_str_eq(invalid_after_wire(&r.req), "reply_topic is required");
    const char *not_a_name =
        "reply_topic is not a Kafka topic name (1-249 of [A-Za-z0-9._-], not . or ..)";
    char *long250 = repeat('t', 250);
    const char *const bad[] = {".", "..", "a b", "a/b", "a:b", "t\xc3\xb3pico", "a\n", long250};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        r.req.reply_topic = (char *)bad[i];
        ck_assert_str_eq(invalid_after_wire(&r.req), not_a_name);
    }
    free(long250);
}
END_TEST

START_TEST(test_invalid_operations)
{
    struct invoke_req r;
    invoke_req_init(&r);
    r.req.session_id = "";
    ck_assert_str_eq(invalid_after_wire(&r.req), "session_id is required");
    r.req.session_id = "s1";
    r.invoke.tool = "";
    ck_assert_str_eq(invalid_after_wire(&r.req), "invoke.tool is required");

    Codeq__V1__Request req = CODEQ__V1__REQUEST__INIT;
    req.request_id = "r";
    req.reply_topic = "t";
    ck_assert_str_eq(invalid_after_wire(&req), "the request has no operation");
    Codeq__V1__GetSession get = CODEQ__V1__GET_SESSION__INIT;
    req.operation_case = CODEQ__V1__REQUEST__OPERATION_GET_SESSION;
    req.get_session = &get;
    ck_assert_str_eq(invalid_after_wire(&req), "session_id is required");
    Codeq__V1__StopSession stop = CODEQ__V1__STOP_SESSION__INIT;
    req.operation_case = CODEQ__V1__REQUEST__OPERATION_STOP_SESSION;
    req.stop_session = &stop;
    ck_assert_str_eq(invalid_after_wire(&req), "session_id is required");

    /* A cancel names a call of its session, and not itself. */
    Codeq__V1__CancelCall cancel = CODEQ__V1__CANCEL_CALL__INIT;
    req.operation_case = CODEQ__V1__REQUEST__OPERATION_CANCEL_CALL;
    req.cancel_call = &cancel;
    cancel.request_id = "call-1";
    ck_assert_str_eq(invalid_after_wire(&req), "session_id is required");
    req.session_id = "s1";
    ck_assert_ptr_null(invalid_after_wire(&req));
    cancel.request_id = "";
    ck_assert_str_eq(invalid_after_wire(&req),
                     "cancel_call.request_id is required (at most 63 characters)");
    cancel.request_id = "0123456789012345678901234567890123456789012345678901234567890123";
    ck_assert_str_eq(invalid_after_wire(&req),
                     "cancel_call.request_id is required (at most 63 characters)");
    cancel.request_id = "r";
    ck_assert_str_eq(invalid_after_wire(&req), "a cancel_call cannot cancel itself");
}
END_TEST

/* Tool names and argument kinds are the worker core's to judge (it answers
 * INVALID_ARGUMENT with the list of tools): the codec lets them through. Pinned here so
 * that moving that check is a decision, not an accident. */
START_TEST(test_invalid_leaves_tools_to_the_worker)
{
    struct invoke_req r;
    invoke_req_init(&r);
    r.invoke.tool = "noSuchTool";
    ck_assert_ptr_null(invalid_after_wire(&r.req));
    r.invoke.tool = "readFiles"; /* with code, not paths */
    ck_assert_ptr_null(invalid_after_wire(&r.req));
    r.invoke.arguments = NULL;
    ck_assert_ptr_null(invalid_after_wire(&r.req));
}
END_TEST

/* --- cq_codec_topic_name_ok ---------------------------------------------------------- */

START_TEST(test_topic_names)
{
    char *t249 = repeat('x', 249), *t250 = repeat('x', 250);
    ck_assert(cq_codec_topic_name_ok(t249));
    ck_assert(!cq_codec_topic_name_ok(t250));
    free(t249);
    free(t250);
    ck_assert(!cq_codec_topic_name_ok(""));
    ck_assert(!cq_codec_topic_name_ok("."));
    ck_assert(!cq_codec_topic_name_ok(".."));
    ck_assert(cq_codec_topic_name_ok("..."));
    ck_assert(cq_codec_topic_name_ok("a"));
    ck_assert(cq_codec_topic_name_ok("codeq.replies.Abc-9_z"));
    ck_assert(cq_codec_topic_name_ok("-_."));
    static const char *const bad[] = {" ",  "a b", "a/b",      "a\\b", "a:b",
                                      "a*", "a\n", "\xc3\xa9", "a\x7f"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_msg(!cq_codec_topic_name_ok(bad[i]), "accepted topic %zu", i);
}
END_TEST

/* --- cq_codec_invoke_args ------------------------------------------------------------ */

START_TEST(test_invoke_args_none)
{
    Codeq__V1__Invoke inv = CODEQ__V1__INVOKE__INIT;
    inv.tool = "listFiles";
    struct cq_invoke_args a;
    void *owned = (void *)1;
    struct cq_error err;
    ck_assert_int_eq(cq_codec_invoke_args(&inv, &a, &owned, &err), 0);
    ck_assert_ptr_null(owned);
    ck_assert_ptr_null(a.code);
    ck_assert_ptr_null(a.content);
    ck_assert_uint_eq(a.n_paths, 0);
    ck_assert(a.timeout_s == 0.0);
}
END_TEST

START_TEST(test_invoke_args_all)
{
    struct invoke_req r;
    invoke_req_init(&r);
    Codeq__V1__Arguments *in = &r.args;
    in->language = "python";
    in->clear_context = true;
    in->runtime = "";
    in->command = "ls -l";
    in->directory_path = "sub/dir";
    in->task_id = "task-7";
    in->timeout = 12.5;
    char *paths[] = {"a.txt", "b/c.bin"};
    in->paths = paths;
    in->n_paths = 2;
    Codeq__V1__FileContent f[3];
    Codeq__V1__FileContent *fp[3] = {&f[0], &f[1], &f[2]};
    for (int i = 0; i < 3; i++)
        codeq__v1__file_content__init(&f[i]);
    f[0].path = "t.txt";
    f[0].data_case = CODEQ__V1__FILE_CONTENT__DATA_TEXT;
    f[0].text = "hello";
    static const uint8_t blob[] = {0, 1, 0xff, 0};
    f[1].path = "b.bin";
    f[1].data_case = CODEQ__V1__FILE_CONTENT__DATA_BLOB;
    f[1].blob.data = (uint8_t *)blob;
    f[1].blob.len = sizeof(blob);
    f[2].path = "empty"; /* neither text nor blob */
    in->content = fp;
    in->n_content = 3;

    /* Through the wire, as the worker gets it. */
    size_t len;
    uint8_t *buf = pack_request(&r.req, &len);
    Codeq__V1__Request *req = codeq__v1__request__unpack(NULL, len, buf);
    free(buf);
    ck_assert_ptr_nonnull(req);
    struct cq_invoke_args a;
    void *owned;
    struct cq_error err;
    ck_assert_int_eq(cq_codec_invoke_args(req->invoke, &a, &owned, &err), 0);
    ck_assert_str_eq(a.code, "print(1)");
    ck_assert_str_eq(a.language, "python");
    ck_assert(a.clear_context);
    ck_assert_ptr_null(a.runtime); /* "" is absent */
    ck_assert_str_eq(a.command, "ls -l");
    ck_assert_str_eq(a.directory_path, "sub/dir");
    ck_assert_str_eq(a.task_id, "task-7");
    ck_assert(a.timeout_s == 12.5);
    ck_assert_uint_eq(a.n_paths, 2);
    ck_assert_str_eq(a.paths[0], "a.txt");
    ck_assert_str_eq(a.paths[1], "b/c.bin");
    ck_assert_uint_eq(a.n_content, 3);
    ck_assert_ptr_eq(owned, a.content);
    ck_assert_str_eq(a.content[0].path, "t.txt");
    ck_assert(!a.content[0].is_blob);
    ck_assert_uint_eq(a.content[0].len, 5);
    ck_assert_mem_eq(a.content[0].data, "hello", 5);
    ck_assert(a.content[1].is_blob);
    ck_assert_uint_eq(a.content[1].len, sizeof(blob));
    ck_assert_mem_eq(a.content[1].data, blob, sizeof(blob));
    ck_assert(!a.content[2].is_blob);
    ck_assert_uint_eq(a.content[2].len, 0);
    ck_assert_str_eq((const char *)a.content[2].data, "");

    /* The client's side turns them back into the same Arguments (content as blobs). */
    Codeq__V1__Arguments out;
    void *owned2;
    ck_assert_int_eq(cq_codec_fill_arguments(&a, &out, &owned2, &err), 0);
    ck_assert_str_eq(out.code, "print(1)");
    ck_assert_str_eq(out.runtime, "");
    ck_assert(out.timeout == 12.5);
    ck_assert_uint_eq(out.n_content, 3);
    ck_assert_int_eq(out.content[0]->data_case, CODEQ__V1__FILE_CONTENT__DATA_BLOB);
    ck_assert_uint_eq(out.content[0]->blob.len, 5);
    ck_assert_mem_eq(out.content[1]->blob.data, blob, sizeof(blob));
    free(owned2);
    free(owned);
    codeq__v1__request__free_unpacked(req, NULL);
}
END_TEST

/* --- results: cq_result -> Response bytes -> cq_result ------------------------------- */

static void fill_result(struct cq_result *r)
{
    cq_result_init(r);
    static const uint8_t png[] = {0x89, 'P', 'N', 'G', 0, 0xff};
    static const uint8_t bin[] = {0, 0, 1, 2, 0xfe};
    ck_assert_int_eq(cq_result_add_text(r, "out: 1\n"), 0);
    ck_assert_int_eq(cq_result_add_image(r, png, sizeof(png), "image/png"), 0);
    ck_assert_int_eq(
        cq_result_add_resource(r, "notes.md", "text/markdown", (const uint8_t *)"# hi", 4, false),
        0);
    ck_assert_int_eq(
        cq_result_add_resource(r, "data.bin", "application/octet-stream", bin, sizeof(bin), true),
        0);
    ck_assert_int_eq(
        cq_result_add_link(r, "big.csv", "big.csv", "text/csv", 123456789012ULL, "a large file"),
        0);
    r->has_structured = true;
    r->stdout_text = strdup("1\n");
    r->stderr_text = strdup("warn\n");
    r->value_text = strdup("42");
    r->exit_code = -9;
    r->execution_time_ms = 12.75;
    r->task_id = strdup("task-1");
    r->task_status = CQ_TASK_WORKING;
    r->has_network = true;
    r->network_bytes_sent = 1234567890123ULL;
    r->network_bytes_received = 42;
    r->cpu_ms = 31;
    r->peak_memory_bytes = 9876543210ULL;
}

static void assert_blocks_eq(const struct cq_block *a, const struct cq_block *b)
{
    ck_assert_int_eq(a->type, b->type);
    ck_assert_int_eq(a->is_blob, b->is_blob);
    ck_assert_uint_eq(a->data_len, b->data_len);
    if (a->data_len > 0)
        ck_assert_mem_eq(a->data, b->data, a->data_len);
#define SAME_STR(f)                                                                                \
    do {                                                                                           \
        if (a->f == NULL)                                                                          \
            ck_assert_msg(b->f == NULL || b->f[0] == '\0', #f " appeared");                        \
        else                                                                                       \
            ck_assert_str_eq(a->f, b->f);                                                          \
    } while (0)
    SAME_STR(text);
    SAME_STR(mime_type);
    SAME_STR(uri);
    SAME_STR(name);
    SAME_STR(description);
#undef SAME_STR
    ck_assert_uint_eq(a->size, b->size);
}

static void assert_results_eq(const struct cq_result *a, const struct cq_result *b)
{
    ck_assert_uint_eq(a->n_blocks, b->n_blocks);
    for (size_t i = 0; i < a->n_blocks; i++)
        assert_blocks_eq(&a->blocks[i], &b->blocks[i]);
    ck_assert_int_eq(a->has_structured, b->has_structured);
    if (a->has_structured) {
        ck_assert_str_eq(a->stdout_text, b->stdout_text);
        ck_assert_str_eq(a->stderr_text, b->stderr_text);
        if (a->value_text != NULL)
            ck_assert_str_eq(a->value_text, b->value_text);
        else
            ck_assert_ptr_null(b->value_text);
        if (a->task_id != NULL)
            ck_assert_str_eq(a->task_id, b->task_id);
        else
            ck_assert_ptr_null(b->task_id);
        ck_assert_int_eq(a->exit_code, b->exit_code);
        ck_assert(a->execution_time_ms == b->execution_time_ms);
        ck_assert_int_eq(a->task_status, b->task_status);
        ck_assert_int_eq(a->has_network, b->has_network);
        ck_assert_uint_eq(a->network_bytes_sent, b->network_bytes_sent);
        ck_assert_uint_eq(a->network_bytes_received, b->network_bytes_received);
        ck_assert_uint_eq(a->cpu_ms, b->cpu_ms);
        ck_assert_uint_eq(a->peak_memory_bytes, b->peak_memory_bytes);
    }
    ck_assert_int_eq(a->is_error, b->is_error);
    ck_assert_int_eq(a->error_code, b->error_code);
    if (a->error_message != NULL)
        ck_assert_str_eq(a->error_message, b->error_message);
    else
        ck_assert_ptr_null(b->error_message);
}

/* Packs r as the worker does, unpacks it as the client does, and checks the result. */
static void round_trip_result(const struct cq_result *r)
{
    uint8_t *bytes;
    size_t len;
    struct cq_error err;
    ck_assert_int_eq(cq_codec_result_response("req-1", "sess-1", r, &bytes, &len, &err), 0);
    Codeq__V1__Response *resp = unpack_response(bytes, len);
    free(bytes);
    ck_assert_str_eq(resp->request_id, "req-1");
    ck_assert_str_eq(resp->session_id, "sess-1");
    ck_assert_int_eq(resp->payload_case, CODEQ__V1__RESPONSE__PAYLOAD_RESULT);
    struct cq_result back;
    ck_assert_int_eq(cq_codec_result_from(resp->result, &back, &err), 0);
    assert_results_eq(r, &back);
    cq_result_free(&back);
    codeq__v1__response__free_unpacked(resp, NULL);
}

START_TEST(test_result_round_trip_every_block)
{
    struct cq_result r;
    fill_result(&r);
    round_trip_result(&r);
    cq_result_free(&r);
}
END_TEST

START_TEST(test_result_round_trip_each_task_status)
{
    for (int s = CQ_TASK_NONE; s <= CQ_TASK_FAILED; s++) {
        struct cq_result r;
        fill_result(&r);
        r.task_status = (enum cq_task_status)s;
        round_trip_result(&r);
        cq_result_free(&r);
    }
}
END_TEST

START_TEST(test_result_round_trip_minimal)
{
    struct cq_result r;
    cq_result_init(&r); /* no blocks, no structured content, no error */
    round_trip_result(&r);
    r.has_structured = true; /* structured with empty streams, no value, no task */
    r.stdout_text = strdup("");
    r.stderr_text = strdup("");
    round_trip_result(&r);
    cq_result_free(&r);
}
END_TEST

START_TEST(test_result_round_trip_each_error)
{
    for (int e = CQ_RESULT_OK; e <= CQ_RESULT_ACCESS_DENIED; e++) {
        struct cq_result r;
        fill_result(&r);
        if (e != CQ_RESULT_OK)
            cq_result_fail(&r, (enum cq_result_error)e, "failure %d", e);
        round_trip_result(&r);
        cq_result_free(&r);
    }
}
END_TEST

START_TEST(test_error_response)
{
    uint8_t *bytes;
    size_t len;
    struct cq_error err;
    ck_assert_int_eq(cq_codec_error_response("req-9", "sess-9", CQ_RESULT_NOT_FOUND,
                                             "session 'x' not found", &bytes, &len, &err),
                     0);
    Codeq__V1__Response *resp = unpack_response(bytes, len);
    ck_assert_str_eq(resp->request_id, "req-9");
    ck_assert_str_eq(resp->session_id, "sess-9");
    ck_assert_int_eq(resp->payload_case, CODEQ__V1__RESPONSE__PAYLOAD_RESULT);
    const Codeq__V1__Result *res = resp->result;
    ck_assert(res->is_error);
    ck_assert_int_eq(res->error_code, CODEQ__V1__ERROR_CODE__ERROR_CODE_NOT_FOUND);
    ck_assert_str_eq(res->error_message, "session 'x' not found");
    ck_assert_ptr_null(res->structured_content);
    ck_assert_uint_eq(res->n_content, 1);
    ck_assert_int_eq(res->content[0]->block_case, CODEQ__V1__CONTENT_BLOCK__BLOCK_TEXT);
    ck_assert_str_eq(res->content[0]->text->text, "session 'x' not found");
    codeq__v1__response__free_unpacked(resp, NULL);

    /* The same bytes as a result failed by the worker core (cq_result_fail). */
    struct cq_result r;
    cq_result_init(&r);
    cq_result_fail(&r, CQ_RESULT_NOT_FOUND, "session 'x' not found");
    uint8_t *same;
    size_t same_len;
    ck_assert_int_eq(cq_codec_result_response("req-9", "sess-9", &r, &same, &same_len, &err), 0);
    ck_assert_uint_eq(same_len, len);
    ck_assert_mem_eq(same, bytes, len);
    cq_result_free(&r);
    free(same);
    free(bytes);

    /* NULL ids and message are empty strings, not a crash. */
    ck_assert_int_eq(
        cq_codec_error_response(NULL, NULL, CQ_RESULT_INTERNAL, NULL, &bytes, &len, &err), 0);
    resp = unpack_response(bytes, len);
    ck_assert_str_eq(resp->request_id, "");
    ck_assert_str_eq(resp->result->error_message, "");
    codeq__v1__response__free_unpacked(resp, NULL);
    free(bytes);
}
END_TEST

/* --- sessions and chunks ------------------------------------------------------------- */

static void session_info(struct cq_session_info *info, int i)
{
    memset(info, 0, sizeof(*info));
    snprintf(info->session_id, sizeof(info->session_id), "session-%d", i);
    snprintf(info->name, sizeof(info->name), "name \xc3\xa9 %d", i);
    info->status = i % 2 ? CQ_SESSION_TERMINATED : CQ_SESSION_READY;
    info->created_at_ms = 1700000000000LL + i;
    info->last_updated_at_ms = 1700000000500LL + i;
    info->session_timeout_s = 900 + (uint32_t)i;
    info->network_mode = i % 3;
    if (info->network_mode == 2)
        snprintf(info->network_allow, sizeof(info->network_allow),
                 "files.example.test:443,*.example.test,198.51.100.0/24");
    snprintf(info->interpreter, sizeof(info->interpreter), i ? "analytics-%d" : "codeq.default", i);
    if (i > 0) {
        snprintf(info->runtime, sizeof(info->runtime), "rt-%d", i);
        memset(info->runtime_digest, 'a' + i, 64);
    }
    info->memory_bytes = (uint64_t)(i + 1) << 30;
    info->pids = 64 + (uint64_t)i;
    info->cpu_millis = 1500 + (uint32_t)i;
    info->disk_bytes = (uint64_t)(i + 2) << 30;
}

static void assert_infos_eq(const struct cq_session_info *a, const struct cq_session_info *b)
{
    ck_assert_str_eq(a->session_id, b->session_id);
    ck_assert_str_eq(a->name, b->name);
    ck_assert_int_eq(a->status, b->status);
    ck_assert_int_eq(a->created_at_ms, b->created_at_ms);
    ck_assert_int_eq(a->last_updated_at_ms, b->last_updated_at_ms);
    ck_assert_uint_eq(a->session_timeout_s, b->session_timeout_s);
    ck_assert_int_eq(a->network_mode, b->network_mode);
    ck_assert_str_eq(a->network_allow, b->network_allow);
    ck_assert_str_eq(a->interpreter, b->interpreter);
    ck_assert_str_eq(a->runtime, b->runtime);
    ck_assert_str_eq(a->runtime_digest, b->runtime_digest);
    ck_assert_uint_eq(a->memory_bytes, b->memory_bytes);
    ck_assert_uint_eq(a->pids, b->pids);
    ck_assert_uint_eq(a->cpu_millis, b->cpu_millis);
    ck_assert_uint_eq(a->disk_bytes, b->disk_bytes);
}

START_TEST(test_session_response)
{
    for (int i = 0; i < 3; i++) {
        struct cq_session_info info, back;
        session_info(&info, i);
        uint8_t *bytes;
        size_t len;
        struct cq_error err;
        ck_assert_int_eq(cq_codec_session_response("req-s", &info, &bytes, &len, &err), 0);
        Codeq__V1__Response *resp = unpack_response(bytes, len);
        free(bytes);
        ck_assert_str_eq(resp->request_id, "req-s");
        ck_assert_str_eq(resp->session_id, info.session_id);
        ck_assert_int_eq(resp->payload_case, CODEQ__V1__RESPONSE__PAYLOAD_SESSION);
        ck_assert_int_eq(resp->session->status,
                         i % 2 ? CODEQ__V1__SESSION_STATUS__SESSION_STATUS_TERMINATED
                               : CODEQ__V1__SESSION_STATUS__SESSION_STATUS_READY);
        /* On the wire: NONE 1, PUBLIC 2, ALLOWLIST 3 (0 is UNSPECIFIED). */
        ck_assert_int_eq(resp->session->network, info.network_mode + 1);
        cq_codec_session_from(resp->session, &back);
        assert_infos_eq(&info, &back);
        codeq__v1__response__free_unpacked(resp, NULL);
    }
}
END_TEST

START_TEST(test_sessions_response)
{
    struct cq_session_info infos[5];
    for (int i = 0; i < 5; i++)
        session_info(&infos[i], i);
    for (size_t n = 0; n <= 5; n += 5) {
        uint8_t *bytes;
        size_t len;
        struct cq_error err;
        ck_assert_int_eq(cq_codec_sessions_response("req-l", infos, n, n ? "session-4" : NULL,
                                                    &bytes, &len, &err),
                         0);
        Codeq__V1__Response *resp = unpack_response(bytes, len);
        free(bytes);
        ck_assert_str_eq(resp->request_id, "req-l");
        ck_assert_str_eq(resp->session_id, "");
        ck_assert_int_eq(resp->payload_case, CODEQ__V1__RESPONSE__PAYLOAD_SESSIONS);
        ck_assert_uint_eq(resp->sessions->n_sessions, n);
        ck_assert_str_eq(resp->sessions->next_token, n ? "session-4" : "");
        for (size_t i = 0; i < n; i++) {
            struct cq_session_info back;
            cq_codec_session_from(resp->sessions->sessions[i], &back);
            assert_infos_eq(&infos[i], &back);
        }
        codeq__v1__response__free_unpacked(resp, NULL);
    }
}
END_TEST

START_TEST(test_chunk_response)
{
    static const uint8_t data[] = {'o', 'k', 0, 0xff, '\n'};
    const struct {
        int stream;
        Codeq__V1__Stream expect;
        uint64_t sequence;
    } cases[] = {
        {1, CODEQ__V1__STREAM__STREAM_STDOUT, 0},
        {2, CODEQ__V1__STREAM__STREAM_STDERR, 1},
        {0, CODEQ__V1__STREAM__STREAM_STDOUT, UINT64_MAX}, /* anything else is stdout */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint8_t *bytes;
        size_t len;
        struct cq_error err;
        ck_assert_int_eq(cq_codec_chunk_response("req-c", "sess-c", cases[i].stream, data,
                                                 sizeof(data), cases[i].sequence, &bytes, &len,
                                                 &err),
                         0);
        Codeq__V1__Response *resp = unpack_response(bytes, len);
        free(bytes);
        ck_assert_str_eq(resp->request_id, "req-c");
        ck_assert_str_eq(resp->session_id, "sess-c");
        ck_assert_int_eq(resp->payload_case, CODEQ__V1__RESPONSE__PAYLOAD_CHUNK);
        ck_assert_int_eq(resp->chunk->stream, cases[i].expect);
        ck_assert_uint_eq(resp->chunk->sequence, cases[i].sequence);
        ck_assert_uint_eq(resp->chunk->data.len, sizeof(data));
        ck_assert_mem_eq(resp->chunk->data.data, data, sizeof(data));
        ck_assert(!resp->chunk->final);
        codeq__v1__response__free_unpacked(resp, NULL);
    }
}
END_TEST

/* A reply larger than a claim may carry could never be sent: refused, CQ_ELIMIT. */
START_TEST(test_too_large)
{
    ck_assert_uint_eq(CQ_CODEC_MAX_RESPONSE, CQ_CLAIM_MAX_BYTES);
    static const uint8_t byte = 'x';
    uint8_t *bytes = (uint8_t *)1;
    size_t len = 7;
    struct cq_error err;
    /* Only the size is looked at before the refusal: the data is never read. */
    ck_assert_int_eq(cq_codec_chunk_response("req-big", "s", 1, &byte, CQ_CODEC_MAX_RESPONSE, 0,
                                             &bytes, &len, &err),
                     -1);
    ck_assert_int_eq(err.code, CQ_ELIMIT);
    ck_assert_ptr_null(bytes);
    ck_assert_uint_eq(len, 0);
    ck_assert_msg(strstr(err.msg, "an output chunk of request req-big is ") == err.msg, "%s",
                  err.msg);
    ck_assert_msg(strstr(err.msg, "more than a message may carry (209715200)") != NULL, "%s",
                  err.msg);

    struct cq_result r;
    cq_result_init(&r);
    ck_assert_int_eq(cq_result_add_text(&r, "x"), 0);
    r.blocks[0].type = CQ_BLOCK_IMAGE; /* an image whose length is past the limit */
    r.blocks[0].data = (uint8_t *)&byte;
    r.blocks[0].data_len = CQ_CODEC_MAX_RESPONSE;
    ck_assert_int_eq(cq_codec_result_response("req-big", "s", &r, &bytes, &len, &err), -1);
    ck_assert_int_eq(err.code, CQ_ELIMIT);
    ck_assert_msg(strstr(err.msg, "the result of request req-big is ") == err.msg, "%s", err.msg);
    r.blocks[0].type = CQ_BLOCK_TEXT;
    r.blocks[0].data = NULL;
    r.blocks[0].data_len = 0;
    cq_result_free(&r);
}
END_TEST

/* --- the fallback reply -------------------------------------------------------------- */

START_TEST(test_fallback_short)
{
    uint8_t buf[CQ_CODEC_FALLBACK_MAX];
    size_t len = cq_codec_fallback_response("req-f", "sess-f", CQ_RESULT_INTERNAL,
                                            "codeq: the reply could not be "
                                            "encoded: out of memory",
                                            buf);
    ck_assert_uint_gt(len, 0);
    ck_assert_uint_le(len, CQ_CODEC_FALLBACK_MAX);
    /* Exactly the bytes of the ordinary INTERNAL error reply. */
    uint8_t *bytes;
    size_t n;
    struct cq_error err;
    ck_assert_int_eq(cq_codec_error_response("req-f", "sess-f", CQ_RESULT_INTERNAL,
                                             "codeq: the reply could not be encoded: out of "
                                             "memory",
                                             &bytes, &n, &err),
                     0);
    ck_assert_uint_eq(n, len);
    ck_assert_mem_eq(bytes, buf, len);
    free(bytes);

    Codeq__V1__Response *resp = unpack_response(buf, len);
    struct cq_result r;
    ck_assert_int_eq(cq_codec_result_from(resp->result, &r, &err), 0);
    ck_assert(r.is_error);
    ck_assert_int_eq(r.error_code, CQ_RESULT_INTERNAL);
    ck_assert_str_eq(r.error_message, "codeq: the reply could not be encoded: out of memory");
    ck_assert_uint_eq(r.n_blocks, 1);
    ck_assert_str_eq(r.blocks[0].text, r.error_message);
    ck_assert(!r.has_structured);
    cq_result_free(&r);
    codeq__v1__response__free_unpacked(resp, NULL);

    /* OK is not an error code: it counts as INTERNAL. */
    len = cq_codec_fallback_response(NULL, NULL, CQ_RESULT_OK, NULL, buf);
    resp = unpack_response(buf, len);
    ck_assert_str_eq(resp->request_id, "");
    ck_assert_str_eq(resp->session_id, "");
    ck_assert(resp->result->is_error);
    ck_assert_int_eq(resp->result->error_code, CODEQ__V1__ERROR_CODE__ERROR_CODE_INTERNAL);
    ck_assert_str_eq(resp->result->error_message, "");
    codeq__v1__response__free_unpacked(resp, NULL);

    /* A reply too large to send says so: the client can ask for less. */
    len = cq_codec_fallback_response("r", "s", CQ_RESULT_LIMIT_EXCEEDED, "too large", buf);
    resp = unpack_response(buf, len);
    ck_assert(resp->result->is_error);
    ck_assert_int_eq(resp->result->error_code, CODEQ__V1__ERROR_CODE__ERROR_CODE_LIMIT_EXCEEDED);
    ck_assert_str_eq(resp->result->error_message, "too large");
    codeq__v1__response__free_unpacked(resp, NULL);
}
END_TEST

/* Whatever goes in, the reply fits, decodes, and its strings are prefixes of the input
 * cut at a character boundary. */
START_TEST(test_fallback_cut_to_fit)
{
    static const char *const chars[] = {"a", "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80"};
    for (size_t c = 0; c < 4; c++) {
        for (size_t shift = 0; shift < 4; shift++) {
            /* shift ASCII bytes first, so that every cut position is met */
            size_t w = strlen(chars[c]);
            char *msg = malloc(shift + 2000 * w + 1), *rid = repeat('r', 300 + shift);
            char *sid = malloc(shift + 200 * w + 1);
            ck_assert(msg != NULL && sid != NULL);
            memset(msg, 'm', shift);
            memset(sid, 's', shift);
            for (size_t i = 0; i < 2000; i++)
                memcpy(msg + shift + i * w, chars[c], w);
            for (size_t i = 0; i < 200; i++)
                memcpy(sid + shift + i * w, chars[c], w);
            msg[shift + 2000 * w] = '\0';
            sid[shift + 200 * w] = '\0';

            uint8_t buf[CQ_CODEC_FALLBACK_MAX + 64];
            memset(buf, 0xAA, sizeof(buf));
            size_t len = cq_codec_fallback_response(rid, sid, CQ_RESULT_INTERNAL, msg, buf);
            ck_assert_uint_le(len, CQ_CODEC_FALLBACK_MAX);
            for (size_t i = CQ_CODEC_FALLBACK_MAX; i < sizeof(buf); i++)
                ck_assert_uint_eq(buf[i], 0xAA); /* nothing written past the limit */
            Codeq__V1__Response *resp = unpack_response(buf, len);
            ck_assert_uint_eq(strlen(resp->request_id), 63);
            ck_assert(strncmp(resp->request_id, rid, 63) == 0);
            ck_assert_uint_le(strlen(resp->session_id), CQ_SESSION_ID_MAX);
            ck_assert_uint_gt(strlen(resp->session_id), CQ_SESSION_ID_MAX - 4);
            ck_assert(strncmp(resp->session_id, sid, strlen(resp->session_id)) == 0);
            ck_assert(utf8_valid(resp->session_id));
            const char *m = resp->result->error_message;
            ck_assert_uint_le(strlen(m), 160);
            ck_assert_uint_gt(strlen(m), 156);
            ck_assert(strncmp(m, msg, strlen(m)) == 0);
            ck_assert(utf8_valid(m));
            ck_assert_str_eq(resp->result->content[0]->text->text, m);
            codeq__v1__response__free_unpacked(resp, NULL);
            free(msg);
            free(rid);
            free(sid);
        }
    }
}
END_TEST

/* --- hostile input ------------------------------------------------------------------- */

START_TEST(test_hostile_random_bytes)
{
    uint8_t buf[512];
    size_t decoded = 0, accepted = 0;
    for (int i = 0; i < 50000; i++) {
        size_t len = rng() % sizeof(buf);
        for (size_t j = 0; j < len; j++)
            buf[j] = (uint8_t)rng();
        Codeq__V1__Request *req = codeq__v1__request__unpack(NULL, len, buf);
        if (req == NULL)
            continue;
        decoded++;
        if (cq_codec_invalid(req) == NULL)
            accepted++;
        codeq__v1__request__free_unpacked(req, NULL);
    }
    ck_assert_uint_gt(decoded, 0); /* the checks did run on some */
    ck_assert_uint_eq(accepted, 0);
}
END_TEST

/* Fields are packed in number order, the operation last: every proper prefix of a valid
 * request either does not decode or has lost its operation (or more). */
START_TEST(test_hostile_truncated)
{
    struct invoke_req r;
    invoke_req_init(&r);
    char *paths[] = {"a", "b"};
    r.args.paths = paths;
    r.args.n_paths = 2;
    r.req.deadline_unix_ms = 1700000000000LL;
    r.req.tenant = "acme";
    size_t len;
    uint8_t *full = pack_request(&r.req, &len);
    for (size_t n = 0; n < len; n++) {
        uint8_t *copy = malloc(n ? n : 1); /* exactly n bytes: ASan sees any over-read */
        ck_assert_ptr_nonnull(copy);
        memcpy(copy, full, n);
        Codeq__V1__Request *req = codeq__v1__request__unpack(NULL, n, copy);
        if (req != NULL) {
            ck_assert_msg(cq_codec_invalid(req) != NULL, "a %zu-byte prefix was accepted", n);
            codeq__v1__request__free_unpacked(req, NULL);
        }
        free(copy);
    }
    Codeq__V1__Request *req = codeq__v1__request__unpack(NULL, len, full);
    ck_assert_ptr_nonnull(req);
    ck_assert_ptr_null(cq_codec_invalid(req));
    codeq__v1__request__free_unpacked(req, NULL);

    /* Every byte changed in turn: no crash, whatever the verdict. */
    for (size_t i = 0; i < len; i++) {
        for (int v = 0; v < 256; v += 17) {
            uint8_t saved = full[i];
            full[i] = (uint8_t)v;
            req = codeq__v1__request__unpack(NULL, len, full);
            if (req != NULL) {
                (void)cq_codec_invalid(req);
                codeq__v1__request__free_unpacked(req, NULL);
            }
            full[i] = saved;
        }
    }
    free(full);
}
END_TEST

/* Lengths that claim more than there is, or more than memory. */
START_TEST(test_hostile_lengths)
{
    /* field 1 (request_id), length 2^63 - 1 */
    static const uint8_t huge_string[] = {0x0a, 0xff, 0xff, 0xff, 0xff, 0xff,
                                          0xff, 0xff, 0xff, 0x7f, 'a'};
    ck_assert_ptr_null(codeq__v1__request__unpack(NULL, sizeof(huge_string), huge_string));
    /* field 14 (invoke), length 100 with 2 bytes behind it */
    static const uint8_t short_message[] = {0x72, 0x64, 0x0a, 0x00};
    ck_assert_ptr_null(codeq__v1__request__unpack(NULL, sizeof(short_message), short_message));
    /* a varint that never ends */
    static const uint8_t endless[] = {0x28, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                      0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    ck_assert_ptr_null(codeq__v1__request__unpack(NULL, sizeof(endless), endless));
}
END_TEST

START_TEST(test_hostile_huge_repeated_fields)
{
    enum { PATHS = 100000, FILES = 20000 };
    struct invoke_req r;
    invoke_req_init(&r);
    char **paths = calloc(PATHS, sizeof(*paths));
    Codeq__V1__FileContent *files = calloc(FILES, sizeof(*files));
    Codeq__V1__FileContent **fp = calloc(FILES, sizeof(*fp));
    ck_assert(paths != NULL && files != NULL && fp != NULL);
    for (size_t i = 0; i < PATHS; i++)
        paths[i] = "p";
    for (size_t i = 0; i < FILES; i++) {
        codeq__v1__file_content__init(&files[i]);
        files[i].path = "f";
        files[i].data_case = CODEQ__V1__FILE_CONTENT__DATA_TEXT;
        files[i].text = "t";
        fp[i] = &files[i];
    }
    r.args.paths = paths;
    r.args.n_paths = PATHS;
    r.args.content = fp;
    r.args.n_content = FILES;
    size_t len;
    uint8_t *buf = pack_request(&r.req, &len);
    Codeq__V1__Request *req = codeq__v1__request__unpack(NULL, len, buf);
    free(buf);
    ck_assert_ptr_nonnull(req);
    ck_assert_ptr_null(cq_codec_invalid(req)); /* sizes are the worker's limits to judge */
    struct cq_invoke_args a;
    void *owned;
    struct cq_error err;
    ck_assert_int_eq(cq_codec_invoke_args(req->invoke, &a, &owned, &err), 0);
    ck_assert_uint_eq(a.n_paths, PATHS);
    ck_assert_uint_eq(a.n_content, FILES);
    ck_assert_str_eq(a.content[FILES - 1].path, "f");
    ck_assert_uint_eq(a.content[FILES - 1].len, 1);
    free(owned);
    codeq__v1__request__free_unpacked(req, NULL);
    free(paths);
    free(files);
    free(fp);

    /* A reply of 100000 blocks survives the client's side. */
    enum { BLOCKS = 100000 };
    struct cq_result res;
    cq_result_init(&res);
    for (size_t i = 0; i < BLOCKS; i++)
        ck_assert_int_eq(cq_result_add_text(&res, "x"), 0);
    uint8_t *bytes;
    ck_assert_int_eq(cq_codec_result_response("r", "s", &res, &bytes, &len, &err), 0);
    Codeq__V1__Response *resp = unpack_response(bytes, len);
    free(bytes);
    struct cq_result back;
    ck_assert_int_eq(cq_codec_result_from(resp->result, &back, &err), 0);
    ck_assert_uint_eq(back.n_blocks, BLOCKS);
    ck_assert_str_eq(back.blocks[BLOCKS - 1].text, "x");
    cq_result_free(&back);
    cq_result_free(&res);
    codeq__v1__response__free_unpacked(resp, NULL);
}
END_TEST

START_TEST(test_hostile_non_utf8)
{
    struct invoke_req r;
    invoke_req_init(&r);
    /* Bytes that are not UTF-8 in the ids never pass: the request id must be printable
     * ASCII, the reply topic a Kafka name (whether protobuf-c refuses them first or
     * not). */
    r.req.request_id = "id-\xff\xfe";
    size_t len;
    uint8_t *buf = pack_request(&r.req, &len);
    Codeq__V1__Request *req = codeq__v1__request__unpack(NULL, len, buf);
    free(buf);
    if (req != NULL) {
        ck_assert_str_eq(cq_codec_invalid(req),
                         "request_id must be printable ASCII without spaces");
        codeq__v1__request__free_unpacked(req, NULL);
    }
    r.req.request_id = "req-1";
    r.req.reply_topic = "t\xc0\xaf";
    buf = pack_request(&r.req, &len);
    req = codeq__v1__request__unpack(NULL, len, buf);
    free(buf);
    if (req != NULL) {
        ck_assert_str_eq(cq_codec_invalid(req), "reply_topic is not a Kafka topic name (1-249 of "
                                                "[A-Za-z0-9._-], not . or ..)");
        codeq__v1__request__free_unpacked(req, NULL);
    }
    /* Elsewhere, a string the codec copies stays byte for byte what came. */
    struct cq_result res;
    cq_result_init(&res);
    ck_assert_int_eq(cq_result_add_text(&res, "bad \xff\xfe bytes"), 0);
    uint8_t *bytes;
    struct cq_error err;
    ck_assert_int_eq(cq_codec_result_response("r", "s", &res, &bytes, &len, &err), 0);
    cq_result_free(&res);
    Codeq__V1__Response *resp = codeq__v1__response__unpack(NULL, len, bytes);
    free(bytes);
    if (resp != NULL) {
        ck_assert_str_eq(resp->result->content[0]->text->text, "bad \xff\xfe bytes");
        codeq__v1__response__free_unpacked(resp, NULL);
    }
}
END_TEST

START_TEST(test_hostile_absurd_numbers)
{
    struct invoke_req r;
    invoke_req_init(&r);
    const double timeouts[] = {-1.0, NAN, INFINITY, -INFINITY, DBL_MAX, 1e-300};
    for (size_t i = 0; i < sizeof(timeouts) / sizeof(timeouts[0]); i++) {
        r.args.timeout = timeouts[i];
        r.req.deadline_unix_ms = i % 2 ? INT64_MIN : INT64_MAX;
        size_t len;
        uint8_t *buf = pack_request(&r.req, &len);
        Codeq__V1__Request *req = codeq__v1__request__unpack(NULL, len, buf);
        free(buf);
        ck_assert_ptr_nonnull(req);
        ck_assert_ptr_null(cq_codec_invalid(req)); /* the worker core judges the value */
        ck_assert_int_eq(req->deadline_unix_ms, i % 2 ? INT64_MIN : INT64_MAX);
        struct cq_invoke_args a;
        void *owned;
        struct cq_error err;
        ck_assert_int_eq(cq_codec_invoke_args(req->invoke, &a, &owned, &err), 0);
        if (isnan(timeouts[i]))
            ck_assert(isnan(a.timeout_s));
        else
            ck_assert(a.timeout_s == timeouts[i]); /* passed on as it came */
        codeq__v1__request__free_unpacked(req, NULL);
    }

    /* Enums out of range from a newer or hostile peer map to safe values. */
    Codeq__V1__StructuredContent sc = CODEQ__V1__STRUCTURED_CONTENT__INIT;
    sc.task_status = (Codeq__V1__TaskStatus)999;
    sc.exit_code = INT32_MIN;
    sc.execution_time = -INFINITY;
    Codeq__V1__Result in = CODEQ__V1__RESULT__INIT;
    in.structured_content = &sc;
    in.error_code = (Codeq__V1__ErrorCode)-7;
    in.is_error = true;
    struct cq_result res;
    struct cq_error err;
    ck_assert_int_eq(cq_codec_result_from(&in, &res, &err), 0);
    ck_assert_int_eq(res.task_status, CQ_TASK_NONE);
    ck_assert_int_eq(res.error_code, CQ_RESULT_INTERNAL);
    ck_assert_int_eq(res.exit_code, INT32_MIN);
    ck_assert(isinf(res.execution_time_ms) && res.execution_time_ms < 0);
    ck_assert_ptr_null(res.value_text);
    ck_assert_ptr_null(res.task_id);
    cq_result_free(&res);

    Codeq__V1__TextBlock text = CODEQ__V1__TEXT_BLOCK__INIT;
    text.text = "t";
    Codeq__V1__ContentBlock unknown = CODEQ__V1__CONTENT_BLOCK__INIT;
    unknown.block_case = (Codeq__V1__ContentBlock__BlockCase)77;
    unknown.text = &text;
    Codeq__V1__ContentBlock *blocks[] = {&unknown};
    Codeq__V1__Result in2 = CODEQ__V1__RESULT__INIT;
    in2.content = blocks;
    in2.n_content = 1;
    ck_assert_int_eq(cq_codec_result_from(&in2, &res, &err), 0);
    ck_assert_uint_eq(res.n_blocks, 1);
    ck_assert_int_eq(res.blocks[0].type, CQ_BLOCK_TEXT);
    ck_assert_str_eq(res.blocks[0].text, "[a content block this client does not know]");
    cq_result_free(&res);

    Codeq__V1__Session s = CODEQ__V1__SESSION__INIT;
    char *long_id = repeat('i', 500), *long_name = repeat('n', 500);
    s.session_id = long_id;
    s.name = long_name;
    s.status = (Codeq__V1__SessionStatus)7;
    s.created_at_unix_ms = INT64_MIN;
    s.session_timeout_seconds = UINT32_MAX;
    struct cq_session_info info;
    cq_codec_session_from(&s, &info);
    ck_assert_uint_eq(strlen(info.session_id), CQ_SESSION_ID_MAX); /* cut, not overrun */
    ck_assert_uint_eq(strlen(info.name), sizeof(info.name) - 1);
    ck_assert_int_eq(info.status, CQ_SESSION_TERMINATED);
    ck_assert_int_eq(info.created_at_ms, INT64_MIN);
    ck_assert_uint_eq(info.session_timeout_s, UINT32_MAX);
    free(long_id);
    free(long_name);
}
END_TEST

static Suite *codec_suite(void)
{
    Suite *s = suite_create("codec");
    TCase *check = tcase_create("check");
    tcase_add_test(check, test_invalid_accepts_each_operation);
    tcase_add_test(check, test_invalid_ids);
    tcase_add_test(check, test_invalid_reply_topics);
    tcase_add_test(check, test_files_over_the_limit_are_refused_at_the_edge);
    tcase_add_test(check, test_invalid_operations);
    tcase_add_test(check, test_invalid_leaves_tools_to_the_worker);
    tcase_add_test(check, test_topic_names);
    tcase_add_test(check, test_invoke_args_none);
    tcase_add_test(check, test_invoke_args_all);
    suite_add_tcase(s, check);
    TCase *replies = tcase_create("replies");
    tcase_add_test(replies, test_result_round_trip_every_block);
    tcase_add_test(replies, test_result_round_trip_each_task_status);
    tcase_add_test(replies, test_result_round_trip_minimal);
    tcase_add_test(replies, test_result_round_trip_each_error);
    tcase_add_test(replies, test_error_response);
    tcase_add_test(replies, test_session_response);
    tcase_add_test(replies, test_sessions_response);
    tcase_add_test(replies, test_chunk_response);
    tcase_add_test(replies, test_too_large);
    tcase_add_test(replies, test_fallback_short);
    tcase_add_test(replies, test_fallback_cut_to_fit);
    suite_add_tcase(s, replies);
    TCase *hostile = tcase_create("hostile");
    tcase_set_timeout(hostile, 120);
    tcase_add_test(hostile, test_hostile_random_bytes);
    tcase_add_test(hostile, test_hostile_truncated);
    tcase_add_test(hostile, test_hostile_lengths);
    tcase_add_test(hostile, test_hostile_huge_repeated_fields);
    tcase_add_test(hostile, test_hostile_non_utf8);
    tcase_add_test(hostile, test_hostile_absurd_numbers);
    suite_add_tcase(s, hostile);
    return s;
}

int main(void)
{
    return cq_unit_run(codec_suite(), false);
}
