/* cli/mcp_server.c - see mcp_server.h.
 *
 * Locks, in the order they may nest: calls_lock (the calls in progress), a call's
 * progress lock, out_lock (one message out at a time). */
#define _GNU_SOURCE
#include "cli/mcp_server.h"
#include "cli/mcp_tools.h"
#include "cli/mcp_trace.h"
#include "cli/result_json.h"
#include "common/clock.h"
#include "common/utf8.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef CQ_VERSION
#define CQ_VERSION "0.0.0"
#endif

/* Calls run on threads of their own; beyond this many at once, a call is refused
 * rather than letting a flood exhaust threads and memory. A burst of startSession (a
 * batch job's hundred at once) fits: a call's thread costs its stack's touched pages,
 * and what it waits on (a sandbox, a kernel) is bounded by max sessions anyway. */
#define MAX_CALLS_RUNNING 256
/* Output is gathered and sent at most this often per call, so a cell that prints a
 * line at a time does not become a notification a line (the spec asks receivers to
 * rate-limit). */
#define PROGRESS_INTERVAL_MS 100
/* Sent at once when this much is gathered, keeping notifications of bounded size. */
#define PROGRESS_FLUSH_BYTES (64 * 1024)
/* A call that prints nothing still reports every so often: clients reset their
 * request timeouts on progress (the TypeScript SDK's resetTimeoutOnProgress). */
#define PROGRESS_HEARTBEAT_MS 10000

const char *const cq_mcp_protocol_versions[] = {"2024-11-05", "2025-03-26", "2025-06-18",
                                                CQ_MCP_PROTOCOL_LATEST, NULL};

/* The executeCode calls of one session and kernel (Python; Node for JavaScript and
 * TypeScript) run in the order they arrived: their threads start at once, and the
 * kernel's lock alone would let a later cell overtake an earlier one. Other tools run
 * at once (a getTask must not wait behind a long cell). */
struct lane {
    char *key;
    unsigned long next_ticket, serving;
    unsigned users;
    struct lane *next;
};

struct call {
    struct cq_mcp_server *srv;
    struct lane *lane; /* NULL: runs at once */
    unsigned long ticket;
    void *channel;
    json_t *id;
    char *name;
    json_t *arguments;
    json_t *params;           /* for _meta: traceparent, progressToken */
    json_t *progress_token;   /* borrowed from params; NULL: no progress wanted */
    struct cq_cancel *cancel; /* NULL: not cancellable (out of fds) */
    bool cancelled;           /* under calls_lock: answer nothing */
    struct call *next;        /* in srv->calls, under calls_lock */
    pthread_mutex_t progress; /* the fields below */
    char *buf;                /* output not yet sent */
    size_t len, cap;
    uint64_t started_ms, sent_ms;
    json_int_t n_sent; /* the progress value: 1, 2, ... */
    bool done;         /* no progress after the response */
};

struct cq_mcp_server {
    struct cq_mcp_context ctx;
    cq_mcp_send_fn send;
    void *send_ctx;
    pthread_mutex_t out_lock;
    pthread_mutex_t calls_lock;
    pthread_cond_t calls_changed;
    struct call *calls;
    struct lane *lanes;
    unsigned calls_running;
    unsigned progress_calls; /* calls with a progress token: the ticker runs */
    bool closing;
    bool ticker_started;
    pthread_t ticker;
    char protocol[16];
    const char *oldest; /* the oldest version offered */
    bool shared;        /* the default session is shared (cq_mcp_server_share) */
    struct cq_mcp_default own_default;
};

static void send_text(struct cq_mcp_server *s, void *channel, const char *text, size_t len,
                      bool last)
{
    pthread_mutex_lock(&s->out_lock);
    s->send(s->send_ctx, channel, text, len, last);
    pthread_mutex_unlock(&s->out_lock);
}

static void send_json(struct cq_mcp_server *s, void *channel, json_t *msg, bool last)
{
    char *text = msg != NULL ? json_dumps(msg, JSON_COMPACT | CQ_JSON_REALS) : NULL;
    send_text(s, channel, text, text != NULL ? strlen(text) : 0, last);
    free(text);
}

/* id: the request's id (borrowed), or NULL for null. */
static void send_error(struct cq_mcp_server *s, void *channel, json_t *id, int code,
                       const char *message)
{
    json_t *msg =
        json_pack("{s:s, s:O, s:{s:i, s:s}}", "jsonrpc", "2.0", "id", id != NULL ? id : json_null(),
                  "error", "code", code, "message", message);
    send_json(s, channel, msg, true);
    json_decref(msg);
}

static void send_result(struct cq_mcp_server *s, void *channel, json_t *id, json_t *result)
{
    json_t *msg = json_pack("{s:s, s:O, s:o}", "jsonrpc", "2.0", "id", id, "result", result);
    send_json(s, channel, msg, true);
    json_decref(msg);
}

void cq_mcp_server_refuse(struct cq_mcp_server *s, void *channel, int code, const char *message)
{
    send_error(s, channel, NULL, code, message);
}

/* ---- progress ------------------------------------------------------------------------ */

/* Sends what was gathered (or, with nothing gathered, a heartbeat). Called with
 * c->progress held. */
static void progress_send(struct call *c, bool heartbeat, bool final)
{
    size_t n = final ? c->len : cq_utf8_whole_prefix(c->buf, c->len);
    if (n == 0 && !heartbeat)
        return;
    char *text;
    if (n > 0)
        text = cq_utf8_sanitize(c->buf, n);
    else if (asprintf(&text, "running for %llu s",
                      (unsigned long long)((cq_now_ms() - c->started_ms) / 1000)) < 0)
        text = NULL;
    if (text == NULL)
        return;
    if (n > 0) {
        memmove(c->buf, c->buf + n, c->len - n);
        c->len -= n;
    }
    json_t *msg = json_pack("{s:s, s:s, s:{s:O, s:I, s:s}}", "jsonrpc", "2.0", "method",
                            "notifications/progress", "params", "progressToken", c->progress_token,
                            "progress", ++c->n_sent, "message", text);
    free(text);
    c->sent_ms = cq_now_ms();
    if (msg != NULL)
        send_json(c->srv, c->channel, msg, false);
    json_decref(msg);
}

/* The backend's on_output: gathered, sent by the ticker or when much was gathered. */
static void on_output(void *ctx, int stream, const char *data, size_t len)
{
    (void)stream;
    struct call *c = ctx;
    pthread_mutex_lock(&c->progress);
    if (!c->done && c->len + len > c->cap) {
        size_t cap = c->cap ? c->cap : 4096;
        while (cap < c->len + len)
            cap *= 2;
        char *buf = realloc(c->buf, cap);
        if (buf != NULL) {
            c->buf = buf;
            c->cap = cap;
        }
    }
    if (!c->done && c->len + len <= c->cap) {
        memcpy(c->buf + c->len, data, len);
        c->len += len;
        if (c->len >= PROGRESS_FLUSH_BYTES)
            progress_send(c, false, false);
    }
    pthread_mutex_unlock(&c->progress);
}

static void *ticker_main(void *arg)
{
    struct cq_mcp_server *s = arg;
    pthread_mutex_lock(&s->calls_lock);
    while (!s->closing) {
        if (s->progress_calls == 0) {
            pthread_cond_wait(&s->calls_changed, &s->calls_lock);
            continue;
        }
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_nsec += PROGRESS_INTERVAL_MS * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        int rc = 0;
        while (!s->closing && rc != ETIMEDOUT)
            rc = pthread_cond_timedwait(&s->calls_changed, &s->calls_lock, &until);
        uint64_t now = cq_now_ms();
        for (struct call *c = s->calls; c != NULL; c = c->next) {
            if (c->progress_token == NULL || c->cancelled)
                continue;
            pthread_mutex_lock(&c->progress);
            if (!c->done)
                progress_send(c, now - c->sent_ms >= PROGRESS_HEARTBEAT_MS, false);
            pthread_mutex_unlock(&c->progress);
        }
    }
    pthread_mutex_unlock(&s->calls_lock);
    return NULL;
}

/* ---- calls --------------------------------------------------------------------------- */

static void call_free(struct call *c)
{
    json_decref(c->id);
    json_decref(c->arguments);
    json_decref(c->params);
    free(c->name);
    free(c->buf);
    cq_cancel_free(c->cancel);
    pthread_mutex_destroy(&c->progress);
    free(c);
}

/* executeCode's lane: sessionId (or the default session) and kernel. Under calls_lock. */
static int join_lane(struct cq_mcp_server *s, struct call *c)
{
    if (strcmp(c->name, "executeCode") != 0)
        return 0;
    json_t *session = json_object_get(c->arguments, "sessionId");
    const char *language = json_string_value(json_object_get(c->arguments, "language"));
    bool node = language != NULL &&
                (strcmp(language, "javascript") == 0 || strcmp(language, "typescript") == 0);
    char *key;
    if (asprintf(&key, "%s\n%s", json_is_string(session) ? json_string_value(session) : "",
                 node ? "node" : "python") < 0)
        return -1;
    struct lane *l = s->lanes;
    while (l != NULL && strcmp(l->key, key) != 0)
        l = l->next;
    if (l == NULL) {
        if ((l = calloc(1, sizeof(*l))) == NULL) {
            free(key);
            return -1;
        }
        l->key = key;
        l->next = s->lanes;
        s->lanes = l;
    } else
        free(key);
    c->lane = l;
    c->ticket = l->next_ticket++;
    l->users++;
    return 0;
}

/* Under calls_lock: the next call of c's lane may run. */
static void leave_lane(struct cq_mcp_server *s, struct call *c)
{
    struct lane *l = c->lane;
    if (l == NULL)
        return;
    c->lane = NULL;
    l->serving++;
    if (--l->users == 0) {
        for (struct lane **p = &s->lanes; *p != NULL; p = &(*p)->next)
            if (*p == l) {
                *p = l->next;
                break;
            }
        free(l->key);
        free(l);
    }
    pthread_cond_broadcast(&s->calls_changed);
}

/* Takes c out of the calls in progress (its response is still to be sent: it stays
 * counted in calls_running until call_finished); whether it was cancelled. */
static bool call_remove(struct call *c)
{
    struct cq_mcp_server *s = c->srv;
    pthread_mutex_lock(&s->calls_lock);
    for (struct call **p = &s->calls; *p != NULL; p = &(*p)->next)
        if (*p == c) {
            *p = c->next;
            break;
        }
    if (c->progress_token != NULL)
        s->progress_calls--;
    leave_lane(s, c);
    bool cancelled = c->cancelled;
    pthread_cond_broadcast(&s->calls_changed);
    pthread_mutex_unlock(&s->calls_lock);
    return cancelled;
}

/* A call's response went out: cq_mcp_server_free may go on (and free what the send
 * function uses). */
static void call_finished(struct cq_mcp_server *s)
{
    pthread_mutex_lock(&s->calls_lock);
    s->calls_running--;
    pthread_cond_broadcast(&s->calls_changed);
    pthread_mutex_unlock(&s->calls_lock);
}

static void *call_main(void *arg)
{
    struct call *c = arg;
    struct cq_mcp_server *s = c->srv;
    int code = 0;
    char message[512] = "";
    if (c->lane != NULL) {
        /* Its turn; a call cancelled meanwhile then ends at once, running nothing. */
        pthread_mutex_lock(&s->calls_lock);
        while (c->lane->serving != c->ticket)
            pthread_cond_wait(&s->calls_changed, &s->calls_lock);
        pthread_mutex_unlock(&s->calls_lock);
    }
    struct cq_mcp_trace trace;
    cq_mcp_trace_begin(&trace, c->params);
    json_t *result =
        cq_mcp_call(&s->ctx, c->name, c->arguments, c->progress_token != NULL ? on_output : NULL, c,
                    c->cancel, &code, message, sizeof(message));
    cq_mcp_trace_end(&trace, c->name, result);
    /* The last output goes before the response: no progress may follow it. A
     * cancellation set done already: then nothing more goes out. */
    pthread_mutex_lock(&c->progress);
    if (!c->done && c->progress_token != NULL)
        progress_send(c, false, true);
    c->done = true;
    pthread_mutex_unlock(&c->progress);
    bool cancelled = call_remove(c);
    if (cancelled) {
        json_decref(result);
        send_text(s, c->channel, NULL, 0, true);
    } else if (result != NULL)
        send_result(s, c->channel, c->id, result);
    else
        send_error(s, c->channel, c->id, code != 0 ? code : -32603,
                   message[0] ? message : "internal error");
    call_free(c);
    call_finished(s);
    return NULL;
}

static void start_call(struct cq_mcp_server *s, void *channel, json_t *id, json_t *params)
{
    json_t *name = json_object_get(params, "name");
    if (!json_is_object(params) || !json_is_string(name)) {
        send_error(s, channel, id, -32602, "tools/call needs params {name, arguments}");
        return;
    }
    json_t *token = json_object_get(json_object_get(params, "_meta"), "progressToken");
    if (token != NULL && !json_is_string(token) && !json_is_integer(token)) {
        send_error(s, channel, id, -32602, "_meta.progressToken must be a string or an integer");
        return;
    }
    struct call *c = calloc(1, sizeof(*c));
    if (c == NULL || (c->name = strdup(json_string_value(name))) == NULL) {
        free(c);
        send_error(s, channel, id, -32603, "out of memory");
        return;
    }
    pthread_mutex_init(&c->progress, NULL);
    c->srv = s;
    c->channel = channel;
    c->id = json_incref(id);
    c->arguments = json_incref(json_object_get(params, "arguments"));
    c->params = json_incref(params);
    c->progress_token = token;
    c->started_ms = c->sent_ms = cq_now_ms();
    struct cq_error err;
    if (cq_cancel_create(&c->cancel, &err) < 0)
        c->cancel = NULL; /* the call runs, it cannot be cut short */
    pthread_mutex_lock(&s->calls_lock);
    bool busy = s->calls_running >= MAX_CALLS_RUNNING || join_lane(s, c) < 0;
    if (!busy) {
        s->calls_running++;
        c->next = s->calls;
        s->calls = c;
        if (token != NULL && s->progress_calls++ == 0)
            pthread_cond_broadcast(&s->calls_changed);
        if (token != NULL && !s->ticker_started)
            s->ticker_started = pthread_create(&s->ticker, NULL, ticker_main, s) == 0;
    }
    pthread_mutex_unlock(&s->calls_lock);
    if (busy) {
        send_error(s, channel, id, -32000, "server busy: too many calls in progress; retry later");
        call_free(c);
        return;
    }
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_t thread;
    int rc = pthread_create(&thread, &attr, call_main, c);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        call_remove(c);
        send_error(s, channel, id, -32603, "cannot start a thread for the call");
        call_free(c);
        call_finished(s);
    }
}

/* Under calls_lock: no response, no more progress, and the work cut short. */
static void cancel_call(struct call *c)
{
    c->cancelled = true;
    pthread_mutex_lock(&c->progress);
    c->done = true;
    pthread_mutex_unlock(&c->progress);
    cq_cancel_fire(c->cancel);
}

/* notifications/cancelled: the request it names, if still in progress, is cut short
 * and not answered. A request that already ended, or an unknown id, is ignored (the
 * spec lets the two cross). */
static void cancel_request(struct cq_mcp_server *s, json_t *params)
{
    json_t *id = json_object_get(params, "requestId");
    if (id == NULL)
        return;
    pthread_mutex_lock(&s->calls_lock);
    for (struct call *c = s->calls; c != NULL; c = c->next)
        if (!c->cancelled && json_equal(c->id, id))
            cancel_call(c);
    pthread_mutex_unlock(&s->calls_lock);
}

void cq_mcp_server_cancel_all(struct cq_mcp_server *s)
{
    pthread_mutex_lock(&s->calls_lock);
    for (struct call *c = s->calls; c != NULL; c = c->next)
        cancel_call(c);
    pthread_mutex_unlock(&s->calls_lock);
}

/* ---- the session ---------------------------------------------------------------------- */

/* The client's version when codeq speaks it, else codeq's latest (the client then
 * decides whether it can go on). */
static json_t *initialize(struct cq_mcp_server *s, json_t *params)
{
    const char *asked = json_string_value(json_object_get(params, "protocolVersion"));
    const char *version = CQ_MCP_PROTOCOL_LATEST;
    for (size_t i = 0; asked != NULL && cq_mcp_protocol_versions[i] != NULL; i++)
        if (strcmp(asked, cq_mcp_protocol_versions[i]) == 0 &&
            strcmp(asked, s->oldest) >= 0) /* the versions compare as strings */
            version = cq_mcp_protocol_versions[i];
    pthread_mutex_lock(&s->calls_lock);
    snprintf(s->protocol, sizeof(s->protocol), "%s", version);
    pthread_mutex_unlock(&s->calls_lock);
    return json_pack("{s:s, s:{s:{s:b}}, s:{s:s, s:s}, s:s}", "protocolVersion", version,
                     "capabilities", "tools", "listChanged", 0, "serverInfo", "name", "codeq",
                     "version", CQ_VERSION, "instructions",
                     s->shared ? "codeq runs code in isolated, stateful sandboxes. Tools "
                                 "without a sessionId share one default session with every "
                                 "MCP session of the same credentials; startSession gives one "
                                 "of your own."
                               : "codeq runs code in isolated, stateful sandboxes. Tools "
                                 "without a sessionId share this connection's default "
                                 "session.");
}

static json_t *tool_list(struct cq_mcp_server *s)
{
    pthread_mutex_lock(&s->calls_lock);
    /* outputSchema came with 2025-06-18; the versions compare as strings. */
    bool output_schema = strcmp(s->protocol, "2025-06-18") >= 0;
    pthread_mutex_unlock(&s->calls_lock);
    return json_pack("{s:o}", "tools", cq_mcp_tool_list(output_schema));
}

void cq_mcp_server_handle(struct cq_mcp_server *s, const char *text, size_t len, void *channel)
{
    struct cq_mcp_message msg;
    int code = 0;
    char refusal[256];
    int rc = cq_mcp_parse_message(text, len, &msg, &code, refusal, sizeof(refusal));
    if (rc < 0)
        send_error(s, channel, msg.id, code, refusal);
    else if (rc == 0)
        send_text(s, channel, NULL, 0, true);
    else
        cq_mcp_server_dispatch(s, &msg, channel);
    cq_mcp_message_free(&msg);
}

void cq_mcp_server_dispatch(struct cq_mcp_server *s, const struct cq_mcp_message *msg,
                            void *channel)
{
    json_t *id = msg->id;
    const char *m = msg->method;
    if (id == NULL) {
        /* Notifications are never answered. */
        if (strcmp(m, "notifications/cancelled") == 0)
            cancel_request(s, msg->params);
        send_text(s, channel, NULL, 0, true);
    } else if (strcmp(m, "initialize") == 0) {
        send_result(s, channel, id, initialize(s, msg->params));
    } else if (strcmp(m, "ping") == 0) {
        send_result(s, channel, id, json_object());
    } else if (strcmp(m, "tools/list") == 0) {
        send_result(s, channel, id, tool_list(s));
    } else if (strcmp(m, "tools/call") == 0) {
        start_call(s, channel, id, msg->params);
    } else {
        char message[256];
        snprintf(message, sizeof(message), "method not found: %s", m);
        send_error(s, channel, id, -32601, message);
    }
}

struct cq_mcp_server *cq_mcp_server_new(struct cq_backend *b, cq_mcp_send_fn send, void *ctx)
{
    struct cq_mcp_server *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->ctx.backend = b;
    cq_mcp_default_init(&s->own_default);
    s->ctx.dflt = &s->own_default;
    s->oldest = cq_mcp_protocol_versions[0];
    s->send = send;
    s->send_ctx = ctx;
    pthread_mutex_init(&s->out_lock, NULL);
    pthread_mutex_init(&s->calls_lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&s->calls_changed, &attr);
    pthread_condattr_destroy(&attr);
    /* Until initialize says otherwise: what codeq answered before it negotiated. */
    snprintf(s->protocol, sizeof(s->protocol), "%s", "2025-06-18");
    return s;
}

void cq_mcp_server_free(struct cq_mcp_server *s)
{
    if (s == NULL)
        return;
    pthread_mutex_lock(&s->calls_lock);
    while (s->calls_running > 0)
        pthread_cond_wait(&s->calls_changed, &s->calls_lock);
    s->closing = true;
    pthread_cond_broadcast(&s->calls_changed);
    bool ticker = s->ticker_started;
    pthread_mutex_unlock(&s->calls_lock);
    if (ticker)
        pthread_join(s->ticker, NULL);
    /* The connection's default session is this server's own: in the fleet it would
     * otherwise outlive the gateway until its time to live ran out. A shared one is
     * its owner's to stop. */
    cq_mcp_default_reap(&s->own_default, s->ctx.backend, 0);
    cq_mcp_default_destroy(&s->own_default);
    pthread_cond_destroy(&s->calls_changed);
    pthread_mutex_destroy(&s->calls_lock);
    pthread_mutex_destroy(&s->out_lock);
    free(s);
}

void cq_mcp_server_share(struct cq_mcp_server *s, struct cq_mcp_default *dflt,
                         const struct cq_mcp_owner *owner)
{
    s->ctx.dflt = dflt;
    s->ctx.owner = *owner;
    s->shared = true;
}

void cq_mcp_server_oldest_version(struct cq_mcp_server *s, const char *version)
{
    for (size_t i = 0; cq_mcp_protocol_versions[i] != NULL; i++)
        if (strcmp(version, cq_mcp_protocol_versions[i]) == 0)
            s->oldest = cq_mcp_protocol_versions[i];
}
