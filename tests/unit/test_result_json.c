/* tests/unit/test_result_json.c - cli/result_json.c: worker results in AgentCore's
 * JSON shape (an MCP CallToolResult) and session records. */
#define _GNU_SOURCE
#include "cli/result_json.h"
#include "common/base64.h"
#include "worker/internal.h"
#include "unit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* --- helpers ------------------------------------------------------------------------- */

/* The object's keys, sorted and comma-separated, to compare whole shapes at once. */
static void keys_of(json_t *o, char *out, size_t len)
{
    ck_assert_msg(json_is_object(o), "not an object");
    const char *names[32];
    size_t n = 0;
    const char *key;
    json_t *v;
    json_object_foreach(o, key, v)
    {
        if (n < 32)
            names[n++] = key;
    }
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
            const char *t = names[j];
            names[j] = names[j - 1];
            names[j - 1] = t;
        }
    out[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        strncat(out, names[i], len - strlen(out) - 1);
        if (i + 1 < n)
            strncat(out, ",", len - strlen(out) - 1);
    }
}

#define assert_keys(obj, expected)                                                                 \
    do {                                                                                           \
        char keys_[512];                                                                           \
        keys_of((obj), keys_, sizeof(keys_));                                                      \
        ck_assert_msg(strcmp(keys_, (expected)) == 0, "keys are {%s}, want {%s}", keys_,           \
                      (expected));                                                                 \
    } while (0)

static const char *str_at(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    ck_assert_msg(json_is_string(v), "'%s' is missing or not a string", key);
    return json_string_value(v);
}

static void assert_base64_of(json_t *o, const char *key, const uint8_t *data, size_t len)
{
    const char *b64 = str_at(o, key);
    uint8_t *decoded = NULL;
    size_t decoded_len = 0;
    ck_assert_msg(cq_base64_decode(b64, strlen(b64), &decoded, &decoded_len) == 0,
                  "'%s' is not base64: %s", key, b64);
    ck_assert_msg(decoded_len == len && memcmp(decoded, data, len) == 0,
                  "'%s' decodes to %zu bytes, want %zu", key, decoded_len, len);
    free(decoded);
}

static json_t *content_at(json_t *j, size_t i)
{
    json_t *content = json_object_get(j, "content");
    ck_assert_msg(json_is_array(content), "content is not an array");
    ck_assert_msg(i < json_array_size(content), "content has %zu blocks, want > %zu",
                  json_array_size(content), i);
    return json_array_get(content, i);
}

/* --- content blocks ------------------------------------------------------------------ */

START_TEST(text_block)
{
    struct cq_result r;
    cq_result_init(&r);
    cq_result_add_text(&r, "hello \xc3\xa9");
    json_t *j = cq_result_to_json(&r);
    ck_assert_ptr_nonnull(j);
    assert_keys(j, "content,isError");
    ck_assert_uint_eq(json_array_size(json_object_get(j, "content")), 1);
    json_t *b = content_at(j, 0);
    assert_keys(b, "text,type");
    ck_assert_str_eq(str_at(b, "type"), "text");
    ck_assert_str_eq(str_at(b, "text"), "hello \xc3\xa9");
    ck_assert(json_is_false(json_object_get(j, "isError")));
    json_decref(j);
    cq_result_free(&r);
}
END_TEST

START_TEST(image_block)
{
    const uint8_t png[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0xff, 0xfe};
    struct cq_result r;
    cq_result_init(&r);
    cq_result_add_image(&r, png, sizeof(png), "image/png");
    json_t *j = cq_result_to_json(&r);
    json_t *b = content_at(j, 0);
    assert_keys(b, "data,mimeType,type");
    ck_assert_str_eq(str_at(b, "type"), "image");
    ck_assert_str_eq(str_at(b, "mimeType"), "image/png");
    assert_base64_of(b, "data", png, sizeof(png));
    json_decref(j);
    cq_result_free(&r);
}
END_TEST

START_TEST(resource_blocks_text_and_blob)
{
    struct cq_result r;
    cq_result_init(&r);
    const char *csv = "a,b\n1,2\n";
    cq_result_add_resource(&r, "data/t.csv", "text/csv", (const uint8_t *)csv, strlen(csv), false);
    const uint8_t bin[] = {0, 1, 2, 0xff, 0x80};
    cq_result_add_resource(&r, "x.bin", "application/octet-stream", bin, sizeof(bin), true);
    json_t *j = cq_result_to_json(&r);

    json_t *b = content_at(j, 0);
    assert_keys(b, "resource,type");
    ck_assert_str_eq(str_at(b, "type"), "resource");
    json_t *res = json_object_get(b, "resource");
    assert_keys(res, "mimeType,text,uri");
    ck_assert_str_eq(str_at(res, "uri"), "file://data/t.csv");
    ck_assert_str_eq(str_at(res, "mimeType"), "text/csv");
    ck_assert_str_eq(str_at(res, "text"), csv);

    b = content_at(j, 1);
    ck_assert_str_eq(str_at(b, "type"), "resource");
    res = json_object_get(b, "resource");
    assert_keys(res, "blob,mimeType,uri");
    ck_assert_str_eq(str_at(res, "uri"), "file://x.bin");
    ck_assert_str_eq(str_at(res, "mimeType"), "application/octet-stream");
    assert_base64_of(res, "blob", bin, sizeof(bin));
    json_decref(j);
    cq_result_free(&r);
}
END_TEST

START_TEST(resource_link_block)
{
    struct cq_result r;
    cq_result_init(&r);
    uint64_t big = 5ULL << 30; /* above 32 bits: must stay exact */
    cq_result_add_link(&r, "out/plot.png", "plot.png", "image/png", big, "file");
    cq_result_add_link(&r, "out/sub", "sub", "inode/directory", 0, "directory");
    json_t *j = cq_result_to_json(&r);
    json_t *b = content_at(j, 0);
    assert_keys(b, "description,mimeType,name,size,type,uri");
    ck_assert_str_eq(str_at(b, "type"), "resource_link");
    ck_assert_str_eq(str_at(b, "uri"), "file://out/plot.png");
    ck_assert_str_eq(str_at(b, "name"), "plot.png");
    ck_assert_str_eq(str_at(b, "mimeType"), "image/png");
    ck_assert_str_eq(str_at(b, "description"), "file");
    json_t *size = json_object_get(b, "size");
    ck_assert_msg(json_is_integer(size), "size is not an integer");
    ck_assert_int_eq(json_integer_value(size), (json_int_t)big);
    b = content_at(j, 1);
    ck_assert_str_eq(str_at(b, "description"), "directory");
    ck_assert_int_eq(json_integer_value(json_object_get(b, "size")), 0);
    json_decref(j);
    cq_result_free(&r);
}
END_TEST

START_TEST(blocks_keep_their_order)
{
    struct cq_result r;
    cq_result_init(&r);
    cq_result_add_text(&r, "first");
    cq_result_add_image(&r, (const uint8_t *)"\x89PNG", 4, "image/png");
    cq_result_add_resource(&r, "a", "text/plain", (const uint8_t *)"x", 1, false);
    cq_result_add_link(&r, "b", "b", "text/plain", 1, "file");
    cq_result_add_text(&r, "last");
    json_t *j = cq_result_to_json(&r);
    static const char *const types[] = {"text", "image", "resource", "resource_link", "text"};
    ck_assert_uint_eq(json_array_size(json_object_get(j, "content")), 5);
    for (size_t i = 0; i < 5; i++)
        ck_assert_str_eq(str_at(content_at(j, i), "type"), types[i]);
    ck_assert_str_eq(str_at(content_at(j, 4), "text"), "last");
    json_decref(j);
    cq_result_free(&r);
}
END_TEST

START_TEST(empty_result)
{
    struct cq_result r;
    cq_result_init(&r);
    json_t *j = cq_result_to_json(&r);
    assert_keys(j, "content,isError");
    ck_assert(json_is_array(json_object_get(j, "content")));
    ck_assert_uint_eq(json_array_size(json_object_get(j, "content")), 0);
    json_decref(j);
}
END_TEST

/* Strings from sandboxed code (file names in listFiles) or from clients (paths in
 * error messages) need not be valid UTF-8. A block must still have its required
 * fields: jansson refuses such strings, and a content block without "text" or "uri"
 * is not a valid MCP block. */
START_TEST(strings_that_are_not_utf8_do_not_drop_fields)
{
    struct cq_result r;
    cq_result_init(&r);
    cq_result_add_text(&r, "writeFiles: bad\xff.txt: refused");
    cq_result_add_link(&r, "bad\xff.txt", "bad\xff.txt", "text/plain", 3, "file");
    json_t *j = cq_result_to_json(&r);
    json_t *b = content_at(j, 0);
    ck_assert_msg(json_is_string(json_object_get(b, "text")),
                  "a text block whose text is not UTF-8 lost its 'text' field");
    b = content_at(j, 1);
    ck_assert_msg(json_is_string(json_object_get(b, "uri")) &&
                      json_is_string(json_object_get(b, "name")),
                  "a resource_link whose name is not UTF-8 lost 'uri'/'name'");
    json_decref(j);
    cq_result_free(&r);
}
END_TEST

/* --- structuredContent ----------------------------------------------------------------- */

START_TEST(no_structured_content_unless_set)
{
    /* File tools have content only. */
    struct cq_result r;
    cq_result_init(&r);
    cq_result_add_text(&r, "wrote a.txt (3 bytes)");
    r.exit_code = 7; /* ignored without has_structured */
    json_t *j = cq_result_to_json(&r);
    ck_assert_ptr_null(json_object_get(j, "structuredContent"));
    json_decref(j);
    cq_result_free(&r);
}
END_TEST

START_TEST(code_result_structured_content)
{
    struct cq_result r;
    cq_result_init(&r);
    r.has_structured = true;
    r.stdout_text = strdup("hi\n");
    r.stderr_text = strdup("");
    r.exit_code = 0;
    r.execution_time_ms = 12.5;
    r.cpu_ms = 7;
    r.peak_memory_bytes = 123456789;
    cq_result_add_text(&r, "hi\n");
    json_t *j = cq_result_to_json(&r);
    json_t *sc = json_object_get(j, "structuredContent");
    assert_keys(sc, "cpuTime,executionTime,exitCode,peakMemory,stderr,stdout");
    /* The call's usage: CPU milliseconds and peak bytes, whole numbers. */
    ck_assert(json_is_integer(json_object_get(sc, "cpuTime")));
    ck_assert_int_eq(json_integer_value(json_object_get(sc, "cpuTime")), 7);
    ck_assert(json_is_integer(json_object_get(sc, "peakMemory")));
    ck_assert_int_eq(json_integer_value(json_object_get(sc, "peakMemory")), 123456789);
    ck_assert_str_eq(str_at(sc, "stdout"), "hi\n");
    ck_assert_str_eq(str_at(sc, "stderr"), "");
    ck_assert(json_is_integer(json_object_get(sc, "exitCode")));
    ck_assert_int_eq(json_integer_value(json_object_get(sc, "exitCode")), 0);
    ck_assert(json_is_number(json_object_get(sc, "executionTime")));
    ck_assert_double_eq_tol(json_number_value(json_object_get(sc, "executionTime")), 12.5, 1e-9);
    ck_assert(json_is_false(json_object_get(j, "isError")));
    ck_assert_ptr_null(json_object_get(j, "_codeq_error"));
    json_decref(j);
    /* A session with network: its traffic during the call, as whole numbers. */
    r.has_network = true;
    r.network_bytes_sent = 0;
    r.network_bytes_received = 5000000000ULL;
    j = cq_result_to_json(&r);
    sc = json_object_get(j, "structuredContent");
    assert_keys(sc, "cpuTime,executionTime,exitCode,networkBytesReceived,networkBytesSent,"
                    "peakMemory,stderr,stdout");
    ck_assert(json_is_integer(json_object_get(sc, "networkBytesSent")));
    ck_assert_int_eq(json_integer_value(json_object_get(sc, "networkBytesSent")), 0);
    ck_assert_int_eq(json_integer_value(json_object_get(sc, "networkBytesReceived")), 5000000000LL);
    json_decref(j);
    cq_result_free(&r);
}
END_TEST

START_TEST(failed_user_code_is_error_without_codeq_error)
{
    /* The code failed, the service did not: isError, but no _codeq_error. */
    struct cq_result r;
    cq_result_init(&r);
    r.has_structured = true;
    r.stdout_text = strdup("");
    r.stderr_text = strdup("ZeroDivisionError: division by zero\n");
    r.exit_code = 1;
    r.is_error = true;
    json_t *j = cq_result_to_json(&r);
    ck_assert(json_is_true(json_object_get(j, "isError")));
    ck_assert_ptr_null(json_object_get(j, "_codeq_error"));
    ck_assert_int_eq(
        json_integer_value(json_object_get(json_object_get(j, "structuredContent"), "exitCode")),
        1);
    json_decref(j);
    cq_result_free(&r);
}
END_TEST

START_TEST(service_failure_has_codeq_error)
{
    static const struct {
        enum cq_result_error code;
        const char *name;
    } cases[] = {
        {CQ_RESULT_NOT_FOUND, "NOT_FOUND"},
        {CQ_RESULT_INVALID_ARGUMENT, "INVALID_ARGUMENT"},
        {CQ_RESULT_LIMIT_EXCEEDED, "LIMIT_EXCEEDED"},
        {CQ_RESULT_TIMED_OUT, "TIMED_OUT"},
        {CQ_RESULT_INTERNAL, "INTERNAL"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct cq_result r;
        cq_result_init(&r);
        cq_result_fail(&r, cases[i].code, "session '%s' not found", "s1");
        json_t *j = cq_result_to_json(&r);
        ck_assert(json_is_true(json_object_get(j, "isError")));
        json_t *e = json_object_get(j, "_codeq_error");
        ck_assert_msg(json_is_object(e), "%s: no _codeq_error", cases[i].name);
        assert_keys(e, "code,message");
        ck_assert_str_eq(str_at(e, "code"), cases[i].name);
        ck_assert_str_eq(str_at(e, "message"), "session 's1' not found");
        /* The message is in content too, for clients that only show content. */
        ck_assert_str_eq(str_at(content_at(j, 0), "text"), "session 's1' not found");
        ck_assert_ptr_null(json_object_get(j, "structuredContent"));
        json_decref(j);
        cq_result_free(&r);
    }
}
END_TEST

START_TEST(timed_out_code_keeps_structured_content_and_error)
{
    struct cq_result r;
    cq_result_init(&r);
    r.has_structured = true;
    r.stdout_text = strdup("partial\n");
    r.stderr_text = strdup("codeq: timed out\n");
    r.exit_code = 1;
    r.is_error = true;
    r.error_code = CQ_RESULT_TIMED_OUT;
    json_t *j = cq_result_to_json(&r);
    json_t *e = json_object_get(j, "_codeq_error");
    ck_assert_str_eq(str_at(e, "code"), "TIMED_OUT");
    ck_assert_ptr_null(json_object_get(e, "message")); /* no message was set */
    ck_assert_str_eq(str_at(json_object_get(j, "structuredContent"), "stdout"), "partial\n");
    json_decref(j);
    cq_result_free(&r);
}
END_TEST

static json_t *task_json(enum cq_task_status status, int exit_code)
{
    struct cq_result r;
    cq_result_init(&r);
    r.has_structured = true;
    r.task_id = strdup("Tk3");
    r.task_status = status;
    r.stdout_text = strdup("so far");
    r.stderr_text = strdup("");
    r.exit_code = exit_code;
    r.is_error = status == CQ_TASK_FAILED;
    json_t *j = cq_result_to_json(&r);
    cq_result_free(&r);
    return j;
}

START_TEST(task_fields_only_for_tasks)
{
    static const struct {
        enum cq_task_status status;
        const char *name;
        bool has_exit;
    } cases[] = {
        {CQ_TASK_SUBMITTED, "submitted", false}, {CQ_TASK_WORKING, "working", false},
        {CQ_TASK_COMPLETED, "completed", true},  {CQ_TASK_CANCELED, "canceled", true},
        {CQ_TASK_FAILED, "failed", true},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *j = task_json(cases[i].status, cases[i].status == CQ_TASK_FAILED ? 3 : 0);
        json_t *sc = json_object_get(j, "structuredContent");
        ck_assert_str_eq(str_at(sc, "taskId"), "Tk3");
        ck_assert_str_eq(str_at(sc, "taskStatus"), cases[i].name);
        ck_assert_str_eq(str_at(sc, "stdout"), "so far");
        ck_assert_msg((json_object_get(sc, "exitCode") != NULL) == cases[i].has_exit,
                      "%s: exitCode %s", cases[i].name,
                      cases[i].has_exit ? "missing" : "present while the task runs");
        if (cases[i].status == CQ_TASK_FAILED)
            ck_assert_int_eq(json_integer_value(json_object_get(sc, "exitCode")), 3);
        json_decref(j);
    }
    /* Not a task: no taskId, no taskStatus. */
    struct cq_result r;
    cq_result_init(&r);
    r.has_structured = true;
    r.stdout_text = strdup("");
    json_t *j = cq_result_to_json(&r);
    json_t *sc = json_object_get(j, "structuredContent");
    ck_assert_ptr_null(json_object_get(sc, "taskId"));
    ck_assert_ptr_null(json_object_get(sc, "taskStatus"));
    ck_assert_ptr_nonnull(json_object_get(sc, "exitCode"));
    json_decref(j);
    cq_result_free(&r);
}
END_TEST

/* --- sessions ------------------------------------------------------------------------ */

static json_t *session_json(const char *id, const char *name, enum cq_session_status status,
                            int64_t created, int64_t updated, uint32_t ttl)
{
    struct cq_session_info info;
    memset(&info, 0, sizeof(info));
    snprintf(info.session_id, sizeof(info.session_id), "%s", id);
    snprintf(info.name, sizeof(info.name), "%s", name);
    info.status = status;
    info.created_at_ms = created;
    info.last_updated_at_ms = updated;
    info.session_timeout_s = ttl;
    return cq_session_to_json(&info);
}

START_TEST(session_record)
{
    json_t *j = session_json("abc123", "my session", CQ_SESSION_READY, 1700000000123LL,
                             1700000000007LL, 900);
    assert_keys(j, "codeInterpreterIdentifier,createdAt,lastUpdatedAt,limits,name,networkAllow,"
                   "networkMode,runtime,runtimeDigest,sessionId,sessionTimeoutSeconds,status");
    /* No interpreter named: the built-in one. */
    ck_assert_str_eq(str_at(j, "codeInterpreterIdentifier"), "codeq.default");
    ck_assert_str_eq(str_at(j, "runtime"), "");
    ck_assert_str_eq(str_at(j, "networkMode"), "NONE");
    ck_assert_uint_eq(json_array_size(json_object_get(j, "networkAllow")), 0);
    ck_assert_str_eq(str_at(j, "sessionId"), "abc123");
    ck_assert_str_eq(str_at(j, "name"), "my session");
    ck_assert_str_eq(str_at(j, "status"), "READY");
    ck_assert_str_eq(str_at(j, "createdAt"), "2023-11-14T22:13:20.123Z");
    ck_assert_str_eq(str_at(j, "lastUpdatedAt"), "2023-11-14T22:13:20.007Z");
    ck_assert_int_eq(json_integer_value(json_object_get(j, "sessionTimeoutSeconds")), 900);
    json_decref(j);

    j = session_json("x", "", CQ_SESSION_TERMINATED, 0, 951782400999LL, 28800);
    ck_assert_str_eq(str_at(j, "status"), "TERMINATED");
    ck_assert_str_eq(str_at(j, "createdAt"), "1970-01-01T00:00:00.000Z");
    ck_assert_str_eq(str_at(j, "lastUpdatedAt"), "2000-02-29T00:00:00.999Z");
    ck_assert_int_eq(json_integer_value(json_object_get(j, "sessionTimeoutSeconds")), 28800);
    json_decref(j);

    /* The network: AgentCore's casing, the allowlist as an array of its entries. */
    struct cq_session_info info;
    memset(&info, 0, sizeof(info));
    info.network_mode = 2;
    snprintf(info.network_allow, sizeof(info.network_allow), "files.example.test:443,*.a.test");
    j = cq_session_to_json(&info);
    ck_assert_str_eq(str_at(j, "networkMode"), "ALLOWLIST");
    json_t *allow = json_object_get(j, "networkAllow");
    ck_assert_uint_eq(json_array_size(allow), 2);
    ck_assert_str_eq(json_string_value(json_array_get(allow, 0)), "files.example.test:443");
    ck_assert_str_eq(json_string_value(json_array_get(allow, 1)), "*.a.test");
    json_decref(j);
    info.network_mode = 1;
    info.network_allow[0] = '\0';
    j = cq_session_to_json(&info);
    ck_assert_str_eq(str_at(j, "networkMode"), "PUBLIC");
    json_decref(j);

    /* Issue 14: the interpreter, its runtime's layer and the sandbox's limits. */
    snprintf(info.interpreter, sizeof(info.interpreter), "analytics");
    snprintf(info.runtime, sizeof(info.runtime), "rt");
    memset(info.runtime_digest, 'a', 64);
    info.runtime_digest[64] = '\0';
    info.memory_bytes = 1ULL << 30;
    info.cpu_millis = 1500;
    info.disk_bytes = 64ULL << 20;
    info.pids = 128;
    j = cq_session_to_json(&info);
    ck_assert_str_eq(str_at(j, "codeInterpreterIdentifier"), "analytics");
    ck_assert_str_eq(str_at(j, "runtime"), "rt");
    ck_assert_uint_eq(strlen(str_at(j, "runtimeDigest")), 64);
    json_t *limits = json_object_get(j, "limits");
    assert_keys(limits, "cpus,disk,memory,pids");
    ck_assert_int_eq(json_integer_value(json_object_get(limits, "memory")), 1LL << 30);
    ck_assert(json_real_value(json_object_get(limits, "cpus")) == 1.5);
    ck_assert_int_eq(json_integer_value(json_object_get(limits, "disk")), 64LL << 20);
    ck_assert_int_eq(json_integer_value(json_object_get(limits, "pids")), 128);
    json_decref(j);
}
END_TEST

START_TEST(session_times_are_utc_whatever_the_time_zone)
{
    setenv("TZ", "EST+5", 1); /* POSIX form: no tzdata needed */
    tzset();
    json_t *j = session_json("a", "n", CQ_SESSION_READY, 4102444799999LL, 1700000000123LL, 60);
    ck_assert_str_eq(str_at(j, "createdAt"), "2099-12-31T23:59:59.999Z");
    ck_assert_str_eq(str_at(j, "lastUpdatedAt"), "2023-11-14T22:13:20.123Z");
    json_decref(j);
    setenv("TZ", "IST-5:30", 1);
    tzset();
    j = session_json("a", "n", CQ_SESSION_READY, 1700000000123LL, 1700000000123LL, 60);
    ck_assert_str_eq(str_at(j, "createdAt"), "2023-11-14T22:13:20.123Z");
    json_decref(j);
}
END_TEST

START_TEST(session_time_format_shape)
{
    /* Whatever the instant: YYYY-MM-DDTHH:MM:SS.mmmZ, 24 characters. */
    int64_t now_ms = (int64_t)time(NULL) * 1000 + 456;
    json_t *j = session_json("a", "n", CQ_SESSION_READY, now_ms, now_ms, 60);
    const char *t = str_at(j, "createdAt");
    ck_assert_uint_eq(strlen(t), 24);
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    const char *rest = strptime(t, "%Y-%m-%dT%H:%M:%S", &tm);
    ck_assert_msg(rest != NULL && strcmp(rest, ".456Z") == 0, "bad time '%s'", t);
    ck_assert_int_eq((int64_t)timegm(&tm), now_ms / 1000);
    json_decref(j);
}
END_TEST

static Suite *result_json_suite(void)
{
    Suite *s = suite_create("result_json");
    TCase *tc = tcase_create("content");
    tcase_set_timeout(tc, 10);
    tcase_add_test(tc, text_block);
    tcase_add_test(tc, image_block);
    tcase_add_test(tc, resource_blocks_text_and_blob);
    tcase_add_test(tc, resource_link_block);
    tcase_add_test(tc, blocks_keep_their_order);
    tcase_add_test(tc, empty_result);
    tcase_add_test(tc, strings_that_are_not_utf8_do_not_drop_fields);
    suite_add_tcase(s, tc);

    tc = tcase_create("structured");
    tcase_set_timeout(tc, 10);
    tcase_add_test(tc, no_structured_content_unless_set);
    tcase_add_test(tc, code_result_structured_content);
    tcase_add_test(tc, failed_user_code_is_error_without_codeq_error);
    tcase_add_test(tc, service_failure_has_codeq_error);
    tcase_add_test(tc, timed_out_code_keeps_structured_content_and_error);
    tcase_add_test(tc, task_fields_only_for_tasks);
    suite_add_tcase(s, tc);

    tc = tcase_create("sessions");
    tcase_set_timeout(tc, 10);
    tcase_add_test(tc, session_record);
    tcase_add_test(tc, session_times_are_utc_whatever_the_time_zone);
    tcase_add_test(tc, session_time_format_shape);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return cq_unit_run(result_json_suite(), false);
}
