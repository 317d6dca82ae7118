/* cli/result_json.c - see result_json.h. */
#define _GNU_SOURCE
#include "cli/result_json.h"
#include "common/base64.h"
#include "common/utf8.h"
#include "worker/worker.h"
#include <string.h>

#include <stdlib.h>
#include <time.h>

/* A JSON string of text that may not be valid UTF-8 (jansson refuses such text):
 * invalid bytes become U+FFFD instead of the field disappearing. */
static json_t *text_string(const char *text)
{
    json_t *s = json_string(text);
    if (s != NULL || text == NULL)
        return s;
    char *clean = cq_utf8_sanitize(text, strlen(text));
    s = clean != NULL ? json_string(clean) : NULL;
    free(clean);
    return s;
}

/* Steals value; a NULL value (allocation failure) is skipped rather than crashing. */
static void put(json_t *obj, const char *key, json_t *value)
{
    if (value != NULL)
        json_object_set_new(obj, key, value);
}

static json_t *base64_string(const uint8_t *data, size_t len)
{
    char *encoded = cq_base64_encode(data, len);
    json_t *s = encoded != NULL ? json_string(encoded) : NULL;
    free(encoded);
    return s;
}

static json_t *block_to_json(const struct cq_block *b)
{
    json_t *o = json_object();
    switch (b->type) {
    case CQ_BLOCK_TEXT:
        put(o, "type", json_string("text"));
        put(o, "text", text_string(b->text));
        break;
    case CQ_BLOCK_IMAGE:
        put(o, "type", json_string("image"));
        put(o, "data", base64_string(b->data, b->data_len));
        put(o, "mimeType", text_string(b->mime_type));
        break;
    case CQ_BLOCK_RESOURCE: {
        json_t *res = json_object();
        put(res, "uri", text_string(b->uri));
        put(res, "mimeType", text_string(b->mime_type));
        if (b->is_blob)
            put(res, "blob", base64_string(b->data, b->data_len));
        else
            put(res, "text", text_string(b->text));
        put(o, "type", json_string("resource"));
        put(o, "resource", res);
        break;
    }
    case CQ_BLOCK_RESOURCE_LINK:
        put(o, "type", json_string("resource_link"));
        put(o, "uri", text_string(b->uri));
        put(o, "name", text_string(b->name));
        put(o, "mimeType", text_string(b->mime_type));
        put(o, "size", json_integer((json_int_t)b->size));
        put(o, "description", text_string(b->description));
        break;
    }
    return o;
}

json_t *cq_result_to_json(const struct cq_result *r)
{
    json_t *o = json_object();
    json_t *content = json_array();
    for (size_t i = 0; i < r->n_blocks; i++)
        json_array_append_new(content, block_to_json(&r->blocks[i]));
    put(o, "content", content);
    if (r->has_structured) {
        json_t *sc = json_object();
        if (r->task_id != NULL) {
            put(sc, "taskId", text_string(r->task_id));
            put(sc, "taskStatus", json_string(cq_task_status_name(r->task_status)));
        }
        if (r->stdout_text != NULL)
            put(sc, "stdout", text_string(r->stdout_text));
        if (r->stderr_text != NULL)
            put(sc, "stderr", text_string(r->stderr_text));
        /* A task still running has no exit code yet. */
        if (r->task_status != CQ_TASK_WORKING && r->task_status != CQ_TASK_SUBMITTED)
            put(sc, "exitCode", json_integer(r->exit_code));
        put(sc, "executionTime", json_real(r->execution_time_ms));
        /* codeq's addition: what the call cost, in executionTime's style (CPU time in
         * milliseconds; the session sandbox's peak memory in bytes, as limits.memory);
         * 0 when unknown. */
        put(sc, "cpuTime", json_integer((json_int_t)r->cpu_ms));
        put(sc, "peakMemory", json_integer((json_int_t)r->peak_memory_bytes));
        /* codeq's addition, in sessions with network only. */
        if (r->has_network) {
            put(sc, "networkBytesSent", json_integer((json_int_t)r->network_bytes_sent));
            put(sc, "networkBytesReceived", json_integer((json_int_t)r->network_bytes_received));
        }
        /* codeq's addition: a normal user's sandbox without a delegated cgroup
         * (docs/security.md, "Running as a normal user") does without these. */
        if (r->limits_unenforced != 0) {
            static const struct {
                unsigned bit;
                const char *name;
            } limits[] = {{CQ_UNENFORCED_MEMORY, "memory"}, {CQ_UNENFORCED_CPU, "cpu"}};
            json_t *list = json_array();
            for (size_t i = 0; i < sizeof(limits) / sizeof(limits[0]); i++)
                if (r->limits_unenforced & limits[i].bit)
                    json_array_append_new(list, json_string(limits[i].name));
            put(sc, "limitsNotEnforced", list);
        }
        put(o, "structuredContent", sc);
    }
    put(o, "isError", json_boolean(r->is_error));
    if (r->error_code != CQ_RESULT_OK) {
        /* codeq's addition: why the service, not the code, failed. */
        json_t *err = json_object();
        put(err, "code", json_string(cq_result_error_name(r->error_code)));
        if (r->error_message != NULL)
            put(err, "message", text_string(r->error_message));
        put(o, "_codeq_error", err);
    }
    return o;
}

json_t *cq_json_iso_time(int64_t unix_ms)
{
    time_t seconds = (time_t)(unix_ms / 1000);
    struct tm tm;
    gmtime_r(&seconds, &tm);
    char buf[40];
    snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(unix_ms % 1000));
    return json_string(buf);
}

json_t *cq_session_to_json(const struct cq_session_info *info)
{
    json_t *o = json_object();
    put(o, "sessionId", text_string(info->session_id));
    put(o, "name", text_string(info->name));
    put(o, "status", json_string(info->status == CQ_SESSION_READY ? "READY" : "TERMINATED"));
    put(o, "createdAt", cq_json_iso_time(info->created_at_ms));
    put(o, "lastUpdatedAt", cq_json_iso_time(info->last_updated_at_ms));
    put(o, "sessionTimeoutSeconds", json_integer(info->session_timeout_s));
    /* codeq's additions (issue 13): AgentCore's casing, the numbers of sandbox.h. */
    static const char *const modes[] = {"NONE", "PUBLIC", "ALLOWLIST"};
    put(o, "networkMode",
        json_string(info->network_mode >= 0 && info->network_mode < 3 ? modes[info->network_mode]
                                                                      : "UNKNOWN"));
    json_t *allow = json_array();
    char copy[CQ_SESSION_ALLOW_TEXT];
    snprintf(copy, sizeof(copy), "%s", info->network_allow);
    char *save = NULL;
    for (char *d = strtok_r(copy, ",", &save); d != NULL; d = strtok_r(NULL, ",", &save))
        json_array_append_new(allow, text_string(d));
    put(o, "networkAllow", allow);
    /* Issue 14: its code interpreter (AgentCore's codeInterpreterIdentifier; "" from a
     * worker that predates them is the built-in one), the runtime's layer, and the
     * limits its sandbox got: memory and disk in bytes, cpus in cores. */
    put(o, "codeInterpreterIdentifier",
        text_string(info->interpreter[0] != '\0' ? info->interpreter : CQ_INTERPRETER_DEFAULT));
    put(o, "runtime", text_string(info->runtime));
    put(o, "runtimeDigest", text_string(info->runtime_digest));
    json_t *limits = json_object();
    put(limits, "memory", json_integer((json_int_t)info->memory_bytes));
    put(limits, "cpus", json_real((double)info->cpu_millis / 1000.0));
    put(limits, "disk", json_integer((json_int_t)info->disk_bytes));
    put(limits, "pids", json_integer((json_int_t)info->pids));
    put(o, "limits", limits);
    return o;
}
