/* tests/fuzz/fuzz_mcp.c - what an MCP client sends to `codeq mcp`.
 *
 * The input is what arrives on standard input: lines (a trailing '\r' dropped, as
 * cli/cmd_mcp.c does), each checked by cq_mcp_parse_message as the server does before
 * dispatch; a tools/call request's name and arguments then go through
 * cq_mcp_parse_call, which converts them into the backend's shapes (struct
 * cq_invoke_args, struct cq_session_params) or refuses them (a JSON-RPC error for an
 * unknown tool, an error result for arguments).
 * No backend is linked: the backend functions below abort, so a parser that reached
 * one would fail the run.
 *
 * Invariants (abort on breach): refusals carry the JSON-RPC code of their kind and a
 * message; what is accepted is complete (paths and env NULL-free, content readable).
 */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "cli/mcp_tools.h"

/* ---- the backend: never called by the parsers ------------------------------------- */

int cq_backend_start_session(struct cq_backend *b, const struct cq_session_params *params,
                             struct cq_session_info *info, struct cq_error *err)
{
    (void)b, (void)params, (void)info, (void)err;
    abort();
}

int cq_backend_get_session(struct cq_backend *b, const char *session_id,
                           struct cq_session_info *info, struct cq_error *err)
{
    (void)b, (void)session_id, (void)info, (void)err;
    abort();
}

int cq_backend_list_sessions(struct cq_backend *b, int status_filter, size_t max,
                             const char *next_token, struct cq_session_info *out, size_t *n,
                             char next_token_out[CQ_SESSION_ID_MAX + 1], struct cq_error *err)
{
    (void)b, (void)status_filter, (void)max, (void)next_token, (void)out, (void)n;
    (void)next_token_out, (void)err;
    abort();
}

int cq_backend_stop_session(struct cq_backend *b, const char *session_id,
                            struct cq_session_info *info, struct cq_error *err)
{
    (void)b, (void)session_id, (void)info, (void)err;
    abort();
}

void cq_backend_invoke_cancellable(struct cq_backend *b, const char *session_id, const char *tool,
                                   const struct cq_invoke_args *args, cq_stream_fn on_output,
                                   void *ctx, struct cq_cancel *cancel, struct cq_result *result)
{
    (void)b, (void)session_id, (void)tool, (void)args, (void)on_output, (void)ctx, (void)cancel;
    (void)result;
    abort();
}

/* ---- the target ----------------------------------------------------------------- */

static volatile size_t sink;

static void check(bool ok)
{
    if (!ok)
        abort();
}

static void accepted(const struct cq_mcp_call_args *c)
{
    const struct cq_invoke_args *a = &c->invoke;
    switch (c->kind) {
    case CQ_MCP_INVOKE:
        for (size_t i = 0; i < a->n_paths; i++)
            sink += strlen(a->paths[i]);
        for (size_t i = 0; i < a->n_content; i++) {
            sink += strlen(a->content[i].path);
            for (size_t j = 0; j < a->content[i].len; j++)
                sink += a->content[i].data[j];
        }
        check(a->timeout_s >= 0);
        break;
    case CQ_MCP_START_SESSION:
        check(c->params.env != NULL && c->params.env[c->n_env] == NULL);
        for (size_t i = 0; i < c->n_env; i++)
            check(strchr(c->params.env[i], '=') != NULL);
        break;
    case CQ_MCP_STOP_SESSION:
    case CQ_MCP_GET_SESSION:
        check(c->session_id != NULL);
        break;
    case CQ_MCP_LIST_SESSIONS:
        check(c->max_results >= 1 && c->max_results <= 100);
        break;
    }
}

static void tools_call(json_t *params)
{
    json_t *name = json_object_get(params, "name");
    if (!json_is_object(params) || !json_is_string(name))
        return; /* cmd_mcp.c's start_call refuses it */
    struct cq_mcp_call_args c;
    int code = 0;
    char message[512] = "";
    struct cq_error err;
    int rc = cq_mcp_parse_call(json_string_value(name), json_object_get(params, "arguments"), &c,
                               &code, message, sizeof(message), &err);
    if (rc < 0)
        check(code == -32602 && message[0] != '\0');
    else if (rc > 0)
        check(err.msg[0] != '\0');
    else
        accepted(&c);
    cq_mcp_call_args_free(&c);
}

static void line(const char *text, size_t len)
{
    while (len > 0 && text[len - 1] == '\r')
        len--;
    if (len == 0)
        return;
    struct cq_mcp_message m;
    int code = 0;
    char message[256] = "";
    int rc = cq_mcp_parse_message(text, len, &m, &code, message, sizeof(message));
    if (rc < 0) {
        check((code == -32700 || code == -32600) && message[0] != '\0');
        check(m.id == NULL || json_is_string(m.id) || json_is_integer(m.id));
    } else if (rc > 0) {
        check(m.method != NULL);
        check(m.id == NULL || json_is_string(m.id) || json_is_integer(m.id));
        if (m.id != NULL && strcmp(m.method, "tools/call") == 0)
            tools_call(m.params);
    }
    cq_mcp_message_free(&m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    while (size > 0) {
        const char *nl = memchr(text, '\n', size);
        size_t len = nl != NULL ? (size_t)(nl - text) : size;
        line(text, len);
        size_t step = nl != NULL ? len + 1 : len;
        text += step;
        size -= step;
    }
    return 0;
}
