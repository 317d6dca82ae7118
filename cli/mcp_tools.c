/* cli/mcp_tools.c - see mcp_tools.h. Argument names are AgentCore's (code, language,
 * clearContext, runtime, command, paths, content, directoryPath, taskId,
 * codeInterpreterIdentifier) plus codeq's
 * sessionId and timeout; results are AgentCore's CallToolResult (result_json.c). */
#define _GNU_SOURCE
#include "cli/mcp_tools.h"
#include "cli/result_json.h"
#include "common/base64.h"
#include "common/clock.h"
#include "common/units.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What a client sent instead, for messages a model can act on. */
static const char *type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "something else";
}

/* fmt's %s is the argument's name; the message ends with what was given instead. */
static int wrong_type(int *code, char *msg, size_t len, const char *fmt, const char *arg,
                      const json_t *given)
{
    *code = -32602;
    int n = snprintf(msg, len, fmt, arg);
    if (n >= 0 && (size_t)n < len)
        snprintf(msg + n, len - (size_t)n, ", not %s", type_name(given));
    return -1;
}

static int invalid(int *code, char *msg, size_t len, const char *fmt, const char *arg)
{
    *code = -32602;
    snprintf(msg, len, fmt, arg);
    return -1;
}

/* An argument that is an array of strings: *out (malloc'd, NULL-terminated, the caller's
 * to free even on failure) borrows the strings of v; *n gets their count. */
static int string_array(json_t *v, const char *name, const char ***out, size_t *n, int *code,
                        char *msg, size_t len)
{
    if (!json_is_array(v))
        return wrong_type(code, msg, len, "argument '%s' must be an array of strings", name, v);
    *out = calloc(json_array_size(v) + 1, sizeof(char *));
    if (*out == NULL)
        return invalid(code, msg, len, "%s", "out of memory");
    size_t i;
    json_t *item;
    json_array_foreach(v, i, item)
    {
        if (!json_is_string(item)) {
            *code = -32602;
            snprintf(msg, len, "argument '%s' must be an array of strings; item %zu is %s", name, i,
                     type_name(item));
            return -1;
        }
        (*out)[i] = json_string_value(item);
    }
    *n = json_array_size(v);
    return 0;
}

int cq_mcp_parse_message(const char *line, size_t len, struct cq_mcp_message *m, int *code,
                         char *msg, size_t msg_len)
{
    memset(m, 0, sizeof(*m));
    json_error_t error;
    m->msg = json_loadb(line, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &error);
    if (m->msg == NULL) {
        *code = -32700;
        snprintf(msg, msg_len, "parse error: %s", error.text);
        return -1;
    }
    json_t *id = json_object_get(m->msg, "id");
    json_t *method = json_object_get(m->msg, "method");
    json_t *jsonrpc = json_object_get(m->msg, "jsonrpc");
    bool valid_id = id == NULL || json_is_string(id) || json_is_integer(id);
    if (!json_is_object(m->msg) || !json_is_string(jsonrpc) ||
        strcmp(json_string_value(jsonrpc), "2.0") != 0 || !json_is_string(method) || !valid_id) {
        /* Responses from the client (to requests we never make) are ignored. */
        if (json_is_object(m->msg) && method == NULL &&
            (json_object_get(m->msg, "result") != NULL || json_object_get(m->msg, "error") != NULL))
            return 0;
        m->id = valid_id ? id : NULL;
        *code = -32600;
        snprintf(msg, msg_len, "%s", "invalid request: expected a JSON-RPC 2.0 request object");
        return -1;
    }
    m->id = id;
    m->method = json_string_value(method);
    m->params = json_object_get(m->msg, "params");
    return 1;
}

void cq_mcp_message_free(struct cq_mcp_message *m)
{
    json_decref(m->msg);
    memset(m, 0, sizeof(*m));
}

/* A string argument, optional: *out NULL when absent. */
static int get_string(json_t *args, const char *key, const char **out, int *code, char *msg,
                      size_t len)
{
    json_t *v = json_object_get(args, key);
    *out = NULL;
    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_string(v))
        return wrong_type(code, msg, len, "argument '%s' must be a string", key, v);
    *out = json_string_value(v);
    return 0;
}

void cq_mcp_default_init(struct cq_mcp_default *d)
{
    memset(d, 0, sizeof(*d));
    pthread_mutex_init(&d->lock, NULL);
}

void cq_mcp_default_destroy(struct cq_mcp_default *d)
{
    pthread_mutex_destroy(&d->lock);
}

bool cq_mcp_default_reap(struct cq_mcp_default *d, struct cq_backend *b, uint64_t idle_ms)
{
    char id[CQ_SESSION_ID_MAX + 1] = "";
    pthread_mutex_lock(&d->lock);
    if (d->session_id[0] != '\0' && d->running == 0 && cq_now_ms() - d->last_used_ms >= idle_ms) {
        snprintf(id, sizeof(id), "%s", d->session_id);
        d->session_id[0] = '\0';
    }
    pthread_mutex_unlock(&d->lock);
    if (id[0] == '\0')
        return false;
    struct cq_session_info info;
    struct cq_error err;
    cq_backend_stop_session(b, id, &info, &err);
    return true;
}

static bool owned(struct cq_mcp_context *ctx, const char *session_id)
{
    return ctx->owner.owns == NULL || ctx->owner.owns(ctx->owner.ctx, session_id);
}

/* A session the client just started becomes its own; -1 (the session stopped, err
 * set) when that could not be recorded. */
static int adopt(struct cq_mcp_context *ctx, const struct cq_session_info *info,
                 const char *interpreter, struct cq_error *err)
{
    if (ctx->owner.adopt == NULL ||
        ctx->owner.adopt(ctx->owner.ctx, info,
                         interpreter != NULL ? interpreter : CQ_INTERPRETER_DEFAULT) == 0)
        return 0;
    struct cq_session_info ignored;
    struct cq_error stop_err;
    cq_backend_stop_session(ctx->backend, info->session_id, &ignored, &stop_err);
    return cq_error_set(err, CQ_EINTERNAL, "out of memory recording session '%s'",
                        info->session_id);
}

/* The session a call runs in: id (its sessionId), or the default session, whose
 * running count then includes the call (session_done). 0; 1 when the session cannot be
 * used (failure says why). */
static int session_of(struct cq_mcp_context *ctx, const char *id, char out[CQ_SESSION_ID_MAX + 1],
                      struct cq_result *failure)
{
    if (id != NULL) {
        if (!owned(ctx, id)) {
            cq_result_fail(failure, cq_result_error_of(CQ_ENOTFOUND), "session '%s' not found", id);
            return 1;
        }
        snprintf(out, CQ_SESSION_ID_MAX + 1, "%s", id);
        return 0;
    }
    struct cq_mcp_default *d = ctx->dflt;
    pthread_mutex_lock(&d->lock);
    struct cq_session_info info;
    struct cq_error err;
    int rc = 0;
    bool usable = d->session_id[0] != '\0' &&
                  cq_backend_get_session(ctx->backend, d->session_id, &info, &err) == 0 &&
                  info.status == CQ_SESSION_READY;
    if (!usable) {
        /* First use, or the previous default session expired: a new one. */
        struct cq_session_params params = {0};
        d->session_id[0] = '\0';
        rc = cq_backend_start_session(ctx->backend, &params, &info, &err);
        if (rc == 0)
            rc = adopt(ctx, &info, NULL, &err);
        if (rc == 0)
            snprintf(d->session_id, sizeof(d->session_id), "%s", info.session_id);
        else
            cq_result_fail(failure, cq_result_error_of(err.code),
                           "could not start the default session: %s", err.msg);
    }
    if (rc == 0)
        d->running++;
    snprintf(out, CQ_SESSION_ID_MAX + 1, "%s", d->session_id);
    pthread_mutex_unlock(&d->lock);
    return rc < 0 ? 1 : 0;
}

/* A call in the default session (id NULL) ended. */
static void session_done(struct cq_mcp_context *ctx, const char *id)
{
    if (id != NULL)
        return;
    pthread_mutex_lock(&ctx->dflt->lock);
    ctx->dflt->running--;
    ctx->dflt->last_used_ms = cq_now_ms();
    pthread_mutex_unlock(&ctx->dflt->lock);
}

void cq_mcp_call_args_free(struct cq_mcp_call_args *c)
{
    free(c->paths);
    for (size_t i = 0; c->content != NULL && i < c->invoke.n_content; i++)
        if (c->content[i].is_blob)
            free((void *)c->content[i].data);
    free(c->content);
    for (size_t i = 0; i < c->n_env; i++)
        free(c->env_owned[i]);
    free(c->allow);
    json_decref(c->args);
    memset(c, 0, sizeof(*c));
}

/* The arguments of the nine tools; p is zeroed. */
static int parse_invoke(json_t *args, struct cq_mcp_call_args *p, int *code, char *msg, size_t len)
{
    struct cq_invoke_args *a = &p->invoke;
    if (get_string(args, "code", &a->code, code, msg, len) < 0 ||
        get_string(args, "language", &a->language, code, msg, len) < 0 ||
        get_string(args, "runtime", &a->runtime, code, msg, len) < 0 ||
        get_string(args, "command", &a->command, code, msg, len) < 0 ||
        get_string(args, "directoryPath", &a->directory_path, code, msg, len) < 0 ||
        get_string(args, "taskId", &a->task_id, code, msg, len) < 0)
        return -1;
    /* Some AgentCore clients send `path` for listFiles. */
    if (a->directory_path == NULL &&
        get_string(args, "path", &a->directory_path, code, msg, len) < 0)
        return -1;
    json_t *v = json_object_get(args, "clearContext");
    if (v != NULL && !json_is_null(v)) {
        if (!json_is_boolean(v))
            return wrong_type(code, msg, len, "argument '%s' must be a boolean", "clearContext", v);
        a->clear_context = json_is_true(v);
    }
    v = json_object_get(args, "timeout");
    if (v != NULL && !json_is_null(v)) {
        if (!json_is_number(v) || json_number_value(v) < 0)
            return invalid(code, msg, len, "argument '%s' must be a number of seconds >= 0",
                           "timeout");
        a->timeout_s = json_number_value(v);
    }
    v = json_object_get(args, "paths");
    if (v != NULL && !json_is_null(v)) {
        if (string_array(v, "paths", &p->paths, &a->n_paths, code, msg, len) < 0)
            return -1;
        a->paths = p->paths;
    }
    v = json_object_get(args, "content");
    if (v != NULL && !json_is_null(v)) {
        if (!json_is_array(v))
            return wrong_type(code, msg, len, "argument '%s' must be an array of {path, text|blob}",
                              "content", v);
        p->content = calloc(json_array_size(v) + 1, sizeof(*p->content));
        if (p->content == NULL)
            return invalid(code, msg, len, "%s", "out of memory");
        size_t i;
        json_t *item;
        json_array_foreach(v, i, item)
        {
            struct cq_file_content *f = &p->content[i];
            json_t *path = json_object_get(item, "path");
            json_t *text = json_object_get(item, "text");
            json_t *blob = json_object_get(item, "blob");
            if (!json_is_object(item) || !json_is_string(path) ||
                (text != NULL) == (blob != NULL) || (text != NULL && !json_is_string(text)) ||
                (blob != NULL && !json_is_string(blob)))
                return invalid(code, msg, len,
                               "each item of '%s' needs a string path and exactly one of text "
                               "or blob (base64)",
                               "content");
            f->path = json_string_value(path);
            if (text != NULL) {
                f->data = (const uint8_t *)json_string_value(text);
                f->len = json_string_length(text);
            } else {
                uint8_t *bytes;
                if (cq_base64_decode(json_string_value(blob), json_string_length(blob), &bytes,
                                     &f->len) < 0)
                    return invalid(code, msg, len, "the blob of '%s' is not valid base64", f->path);
                f->data = bytes;
                f->is_blob = true;
            }
            a->n_content = i + 1;
        }
        a->content = p->content;
    }
    return 0;
}

static json_t *session_result(const struct cq_session_info *info, const char *verb)
{
    json_t *session = cq_session_to_json(info);
    char text[160];
    snprintf(text, sizeof(text), "session %s %s", info->session_id, verb);
    return json_pack("{s:[{s:s, s:s}], s:o, s:b}", "content", "type", "text", "text", text,
                     "structuredContent", session, "isError", 0);
}

/* A failure of a session tool, in the shape (and with the _codeq_error code) of every
 * other tool's failures. */
static json_t *error_result(const struct cq_error *err)
{
    struct cq_result r;
    cq_result_init(&r);
    cq_result_fail(&r, cq_result_error_of(err->code), "%s", err->msg);
    json_t *out = cq_result_to_json(&r);
    cq_result_free(&r);
    return out;
}

/* startSession's arguments: 0, -1 (protocol error), 1 (err: a size that does not parse,
 * answered as the tool's failure). */
static int parse_start_session(json_t *args, struct cq_mcp_call_args *c, int *code, char *msg,
                               size_t len, struct cq_error *err)
{
    struct cq_session_params *params = &c->params;
    const char *memory, *disk;
    if (get_string(args, "name", &params->name, code, msg, len) < 0 ||
        get_string(args, "codeInterpreterIdentifier", &params->interpreter, code, msg, len) < 0 ||
        get_string(args, "memory", &memory, code, msg, len) < 0 ||
        get_string(args, "disk", &disk, code, msg, len) < 0)
        return -1;
    if (memory != NULL && cq_parse_size(memory, 1ULL << 40, &params->limits.memory_bytes, err) < 0)
        return 1;
    if (disk != NULL && cq_parse_size(disk, 1ULL << 40, &params->limits.workspace_bytes, err) < 0)
        return 1;
    json_t *v = json_object_get(args, "sessionTimeoutSeconds");
    if (v != NULL && (!json_is_integer(v) || json_integer_value(v) < 1 ||
                      json_integer_value(v) > CQ_WORKER_MAX_SESSION_TTL_S))
        return invalid(code, msg, len, "argument '%s' must be an integer from 1 to 28800",
                       "sessionTimeoutSeconds");
    if (v != NULL)
        params->timeout_s = (uint32_t)json_integer_value(v);
    if ((v = json_object_get(args, "cpus")) != NULL) {
        if (!json_is_number(v) || json_number_value(v) <= 0)
            return invalid(code, msg, len, "argument '%s' must be a positive number", "cpus");
        params->limits.cpus = json_number_value(v);
    }
    if ((v = json_object_get(args, "pids")) != NULL) {
        if (!json_is_integer(v) || json_integer_value(v) < 1)
            return invalid(code, msg, len, "argument '%s' must be a positive integer", "pids");
        params->limits.pids = (uint64_t)json_integer_value(v);
    }
    if ((v = json_object_get(args, "env")) != NULL) {
        const char *key;
        json_t *value;
        if (!json_is_object(v) || json_object_size(v) > 256)
            return invalid(code, msg, len, "argument '%s' must be an object of at most 256 strings",
                           "env");
        json_object_foreach(v, key, value)
        {
            if (!json_is_string(value) ||
                asprintf(&c->env_owned[c->n_env], "%s=%s", key, json_string_value(value)) < 0)
                return invalid(code, msg, len,
                               "the value of environment variable '%s' must be a string", key);
            c->env[c->n_env] = c->env_owned[c->n_env];
            c->n_env++;
        }
    }
    c->env[c->n_env] = NULL;
    params->env = c->env;
    const char *mode;
    if (get_string(args, "networkMode", &mode, code, msg, len) < 0)
        return -1;
    /* AgentCore's casing; a value outside the three is the request's fault, answered as
     * the tool's INVALID_ARGUMENT like a size that does not parse. */
    if (mode != NULL) {
        if (strcmp(mode, "NONE") == 0)
            c->network = CQ_NETWORK_NONE;
        else if (strcmp(mode, "PUBLIC") == 0)
            c->network = CQ_NETWORK_PUBLIC;
        else if (strcmp(mode, "ALLOWLIST") == 0)
            c->network = CQ_NETWORK_ALLOWLIST;
        else {
            cq_error_set(err, CQ_EINVALID, "networkMode '%s' is not NONE, PUBLIC or ALLOWLIST",
                         mode);
            return 1;
        }
        params->network = &c->network;
    }
    if ((v = json_object_get(args, "networkAllow")) != NULL && !json_is_null(v)) {
        if (string_array(v, "networkAllow", &c->allow, &params->n_allow, code, msg, len) < 0)
            return -1;
        params->allow = c->allow;
    }
    return 0;
}

static json_t *start_session(struct cq_mcp_context *ctx, const struct cq_mcp_call_args *c)
{
    struct cq_session_info info;
    struct cq_error err;
    if (cq_backend_start_session(ctx->backend, &c->params, &info, &err) < 0 ||
        adopt(ctx, &info, c->params.interpreter, &err) < 0)
        return error_result(&err);
    return session_result(&info, "started");
}

static int parse_list_sessions(json_t *args, struct cq_mcp_call_args *c, int *code, char *msg,
                               size_t len)
{
    const char *status;
    if (get_string(args, "status", &status, code, msg, len) < 0 ||
        get_string(args, "nextToken", &c->next_token, code, msg, len) < 0)
        return -1;
    if (status != NULL && strcmp(status, "READY") == 0)
        c->status_filter = CQ_SESSION_READY;
    else if (status != NULL && strcmp(status, "TERMINATED") == 0)
        c->status_filter = CQ_SESSION_TERMINATED;
    else if (status != NULL)
        return invalid(code, msg, len, "status '%s' is not READY or TERMINATED", status);
    json_int_t max = 10;
    json_t *v = json_object_get(args, "maxResults");
    if (v != NULL && (!json_is_integer(v) || (max = json_integer_value(v)) < 1 || max > 100))
        return invalid(code, msg, len, "argument '%s' must be an integer from 1 to 100",
                       "maxResults");
    c->max_results = (size_t)max;
    return 0;
}

/* A page of the sessions the client owns: the backend pages over everyone's, so with
 * an owner the walk goes on until max of the client's are found; the token is then
 * the last session id handed out. */
static int list_owned(struct cq_mcp_context *ctx, const struct cq_mcp_call_args *c,
                      struct cq_session_info *out, size_t *n, char next[CQ_SESSION_ID_MAX + 1],
                      struct cq_error *err)
{
    *n = 0;
    next[0] = '\0';
    if (ctx->owner.owns == NULL)
        return cq_backend_list_sessions(ctx->backend, c->status_filter, c->max_results,
                                        c->next_token, out, n, next, err);
    struct cq_session_info page[100];
    char cursor[CQ_SESSION_ID_MAX + 1] = "";
    if (c->next_token != NULL)
        snprintf(cursor, sizeof(cursor), "%s", c->next_token);
    for (;;) {
        size_t got = 0;
        char page_next[CQ_SESSION_ID_MAX + 1] = "";
        if (cq_backend_list_sessions(ctx->backend, c->status_filter, 100,
                                     cursor[0] != '\0' ? cursor : NULL, page, &got, page_next,
                                     err) < 0)
            return -1;
        size_t i = 0;
        for (; i < got && *n < c->max_results; i++)
            if (owned(ctx, page[i].session_id))
                out[(*n)++] = page[i];
        if (*n >= c->max_results) {
            if (i < got || page_next[0] != '\0')
                snprintf(next, CQ_SESSION_ID_MAX + 1, "%s", out[*n - 1].session_id);
            return 0;
        }
        if (page_next[0] == '\0')
            return 0;
        snprintf(cursor, sizeof(cursor), "%s", page_next);
    }
}

static json_t *list_sessions(struct cq_mcp_context *ctx, const struct cq_mcp_call_args *c)
{
    struct cq_session_info infos[100];
    size_t n = 0;
    char next[CQ_SESSION_ID_MAX + 1];
    struct cq_error err;
    if (list_owned(ctx, c, infos, &n, next, &err) < 0)
        return error_result(&err);
    json_t *items = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(items, cq_session_to_json(&infos[i]));
    char text[64];
    snprintf(text, sizeof(text), "%zu session%s", n, n == 1 ? "" : "s");
    json_t *sc = json_pack("{s:o}", "items", items);
    if (next[0] != '\0')
        json_object_set_new(sc, "nextToken", json_string(next));
    return json_pack("{s:[{s:s, s:s}], s:o, s:b}", "content", "type", "text", "text", text,
                     "structuredContent", sc, "isError", 0);
}

static int parse_call(const char *name, json_t *arguments, struct cq_mcp_call_args *c, int *code,
                      char *msg, size_t len, struct cq_error *err, bool *unknown)
{
    if (arguments == NULL || json_is_null(arguments))
        c->args = json_object();
    else
        c->args = json_incref(arguments);
    json_t *args = c->args;
    if (!json_is_object(args))
        return wrong_type(code, msg, len, "%sarguments must be an object", "", args);
    if (strcmp(name, "startSession") == 0) {
        c->kind = CQ_MCP_START_SESSION;
        return parse_start_session(args, c, code, msg, len, err);
    }
    if (strcmp(name, "listSessions") == 0) {
        c->kind = CQ_MCP_LIST_SESSIONS;
        return parse_list_sessions(args, c, code, msg, len);
    }
    if (strcmp(name, "stopSession") == 0 || strcmp(name, "getSession") == 0) {
        c->kind = name[0] == 's' ? CQ_MCP_STOP_SESSION : CQ_MCP_GET_SESSION;
        if (get_string(args, "sessionId", &c->session_id, code, msg, len) < 0)
            return -1;
        if (c->session_id == NULL)
            return invalid(code, msg, len, "'%s' needs a sessionId", name);
        return 0;
    }
    bool known = false;
    for (size_t i = 0; cq_tool_names[i] != NULL; i++)
        known = known || strcmp(name, cq_tool_names[i]) == 0;
    if (!known) {
        *unknown = true;
        return invalid(code, msg, len, "unknown tool '%s'", name);
    }
    c->kind = CQ_MCP_INVOKE;
    if (parse_invoke(args, c, code, msg, len) < 0)
        return -1;
    return get_string(args, "sessionId", &c->session_id, code, msg, len);
}

int cq_mcp_parse_call(const char *name, json_t *arguments, struct cq_mcp_call_args *c, int *code,
                      char *msg, size_t len, struct cq_error *err)
{
    memset(c, 0, sizeof(*c));
    bool unknown = false;
    int rc = parse_call(name, arguments, c, code, msg, len, err, &unknown);
    if (rc >= 0 || unknown)
        return rc;
    /* Arguments of the wrong type are the model's to correct: a result it reads
     * (MCP 2025-11-25, "Tool Execution Errors"), not a protocol error. */
    cq_error_set(err, CQ_EINVALID, "%s: %s", name, msg);
    return 1;
}

static json_t *run_call(struct cq_mcp_context *ctx, const char *name,
                        const struct cq_mcp_call_args *c, cq_stream_fn on_output, void *out_ctx,
                        struct cq_cancel *cancel)
{
    switch (c->kind) {
    case CQ_MCP_START_SESSION:
        return start_session(ctx, c);
    case CQ_MCP_LIST_SESSIONS:
        return list_sessions(ctx, c);
    case CQ_MCP_STOP_SESSION:
    case CQ_MCP_GET_SESSION: {
        struct cq_session_info info;
        struct cq_error err;
        bool stop = c->kind == CQ_MCP_STOP_SESSION;
        int rc = !owned(ctx, c->session_id)
                     ? cq_error_set(&err, CQ_ENOTFOUND, "session '%s' not found", c->session_id)
                 : stop ? cq_backend_stop_session(ctx->backend, c->session_id, &info, &err)
                        : cq_backend_get_session(ctx->backend, c->session_id, &info, &err);
        return rc < 0 ? error_result(&err)
                      : session_result(&info, stop                              ? "stopped"
                                              : info.status == CQ_SESSION_READY ? "is ready"
                                                                                : "has ended");
    }
    case CQ_MCP_INVOKE:
        break;
    }
    char session[CQ_SESSION_ID_MAX + 1];
    struct cq_result r;
    cq_result_init(&r);
    if (session_of(ctx, c->session_id, session, &r) == 0) {
        cq_backend_invoke_cancellable(ctx->backend, session, name, &c->invoke, on_output, out_ctx,
                                      cancel, &r);
        session_done(ctx, c->session_id);
    }
    json_t *out = cq_result_to_json(&r);
    cq_result_free(&r);
    return out;
}

json_t *cq_mcp_call(struct cq_mcp_context *ctx, const char *name, json_t *args,
                    cq_stream_fn on_output, void *out_ctx, struct cq_cancel *cancel, int *code,
                    char *msg, size_t len)
{
    struct cq_mcp_call_args c;
    struct cq_error err;
    int rc = cq_mcp_parse_call(name, args, &c, code, msg, len, &err);
    json_t *out = rc > 0    ? error_result(&err)
                  : rc == 0 ? run_call(ctx, name, &c, on_output, out_ctx, cancel)
                            : NULL;
    cq_mcp_call_args_free(&c);
    return out;
}
