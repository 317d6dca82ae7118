/* cli/serve_mcp.c - MCP's Streamable HTTP transport at /mcp of `codeq serve`: the tools
 * and results of `codeq mcp` (cli/mcp_server.c speaks the protocol), for clients in
 * other processes and on other machines, several of which share one server's sessions.
 *
 *   POST   /mcp  one JSON-RPC message. initialize opens an MCP session and answers its
 *                id in Mcp-Session-Id, which every later request carries (400 without,
 *                404 for one that ended or is another tenant's). A notification or a
 *                client's response: 202. A request: its answer as JSON when it is ready
 *                before the handler returns (initialize, tools/list, ping), else an SSE
 *                stream of the call's progress notifications and then its response.
 *   DELETE /mcp  ends the MCP session: its calls are cancelled.
 *   GET    /mcp  with Last-Event-ID: a client whose call's stream broke reconnects to
 *                it (the events' ids are "CHANNEL-SEQ"), and gets what it missed that
 *                is still kept, then the rest. Without: 405, as codeq sends nothing
 *                unasked (it offers no server-to-client stream).
 *
 * Protocol versions 2025-03-26 (the transport's first; what a request without
 * MCP-Protocol-Version is taken for), 2025-06-18 and 2025-11-25; a header naming
 * another is refused with 400, and initialize does not negotiate 2024-11-05, whose HTTP
 * transport was another one.
 *
 * Who: every request carries "Authorization: Bearer KEY_ID:SECRET", a key of the keys
 * file (serve_auth.c); its tenant owns the MCP sessions it opens and the codeq sessions
 * those start, in one namespace with AgentCore's routes (serve_agentcore.c). With
 * --no-auth every request is the tenant "anonymous". Browsers: a request whose Origin
 * is neither a loopback one nor on --allow-origin is refused (403), so that a web page
 * cannot reach a server on the user's machine through DNS rebinding; the body must be
 * application/json, which a page cannot send elsewhere without asking first (CORS).
 *
 * State: tools called without a sessionId run in the tenant's default session, shared
 * by all its MCP sessions on this server. Clients that open an MCP session per tool
 * call (langchain-mcp-adapters by default) and several processes with the same key so
 * keep their variables and files; a client that wants state of its own starts a
 * session (startSession) and passes its sessionId. The default session is stopped after
 * the MCP idle timeout without a call, or at its time to live.
 *
 * A client that goes away in the middle of a call (its stream closed) does not cancel
 * it, as the transport says (it cancels with notifications/cancelled): the call runs
 * to its end and what it sends is kept, bounded, for a reconnect. A stream's writer never blocks
 * the MCP session for long: writes to a gone client fail at once, and a client that
 * stops reading is cut off after the stream's write timeout.
 *
 * Limits: MCP sessions per tenant at once (--mcp-max-sessions: 429 past it), and an idle
 * timeout (--mcp-idle-timeout) after which an MCP session without a request or a call
 * in progress ends. Requests count against --max-rate.
 */
#define _GNU_SOURCE
#include "cli/mcp_server.h"
#include "cli/result_json.h"
#include "cli/serve.h"
#include "common/clock.h"
#include "common/random.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* 43 characters of [0-9a-zA-Z]: 256 bits from the kernel's CSPRNG. */
#define SESSION_ID_LEN 43
/* The oldest version a client may speak here: the first with this transport. */
#define OLDEST_VERSION "2025-03-26"
/* A stream without a message for this long gets an SSE comment, so that clients and
 * proxies with read timeouts (the Python SDK's is 300 s) see it alive during a long,
 * silent cell. */
#define HEARTBEAT_MS  15000
#define REAP_EVERY_MS 1000
/* A stream's events are kept for a client that reconnects (GET with Last-Event-ID), at
 * most this many bytes of them (the oldest dropped first; the last is always kept: it
 * is the response), and for this long after the call's response. */
#define REPLAY_MAX_BYTES (256 * 1024)
#define REPLAY_LINGER_MS 60000
/* Streams kept for reconnects per MCP session; past it the oldest cannot be resumed. */
#define MAX_RESUMABLE 8

struct tenant {
    char name[CQ_TENANT_MAX + 1];
    struct cq_mcp_default dflt; /* shared by its MCP sessions */
    unsigned n_sessions;
    struct tenant *next;
};

struct mcp_session {
    char id[SESSION_ID_LEN + 1];
    struct cq_serve_mcp *m;
    struct tenant *tenant;
    struct cq_mcp_server *srv;
    /* Under m->lock: */
    uint64_t last_used_ms;
    unsigned handlers; /* HTTP requests using the session now */
    unsigned channels; /* requests not answered yet (calls in progress) */
    unsigned long next_channel;
    struct channel *streams; /* the streams a client may resume, each with a reference */
    bool ended;
    struct mcp_session *next;
};

/* One POST's way back: what the MCP server sends for the message it carried. Messages
 * wait in pending until the handler knows whether they make a JSON answer (all came at
 * once) or an SSE stream (more is to come); then they go to the stream, and stay in
 * pending (the oldest dropped past REPLAY_MAX_BYTES) for a client that reconnects: its
 * events' ids are "CHANNEL-SEQ", SEQ counting its messages from 1. */
struct channel {
    struct mcp_session *sess;
    unsigned long number; /* unique in the MCP session */
    /* Taken around a write to the stream and around replacing it (by a reconnecting
     * client), before lock; never by channel_gone. */
    pthread_mutex_t write_lock;
    pthread_mutex_t lock;
    char **pending;
    size_t n_pending;
    size_t first_seq;              /* pending[0]'s */
    size_t pending_size;           /* bytes in pending */
    struct cq_http_stream *stream; /* set once the handler chose a stream */
    bool streamed;                 /* its messages go to a stream (now or after a reconnect) */
    bool done;                     /* the last message came */
    bool gone;                     /* the client went away: keep the rest for a reconnect */
    uint64_t done_ms;
    unsigned refs;        /* the handler's, the MCP server's until done, the session's list's */
    struct channel *next; /* in sess->streams, under m->lock */
};

struct cq_serve_mcp {
    struct cq_serve *serve;
    struct cq_backend *backend;
    struct cq_serve_auth *auth;
    const char *const *allow_origins;
    unsigned max_sessions;
    uint64_t idle_ms;
    pthread_mutex_t lock; /* the fields below */
    pthread_cond_t changed;
    struct mcp_session *sessions;
    struct tenant *tenants;
    unsigned closing; /* sessions being closed by their closer threads */
    bool stopping;
    pthread_t reaper;
    bool reaper_started;
};

/* ---- answers ----------------------------------------------------------------------- */

static void json_answer(struct cq_http_response *resp, int status, char *text)
{
    free(resp->body);
    resp->status = status;
    resp->content_type = "application/json";
    resp->body = text;
    resp->body_len = text != NULL ? strlen(text) : 0;
    if (text == NULL)
        resp->status = 500;
}

/* An HTTP error with a JSON-RPC error as its body (id: the request's, NULL: null),
 * which the SDKs raise with its message. */
static void refuse(struct cq_http_response *resp, int status, json_t *id, int code, const char *fmt,
                   ...) __attribute__((format(printf, 5, 6)));
static void refuse(struct cq_http_response *resp, int status, json_t *id, int code, const char *fmt,
                   ...)
{
    char message[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);
    json_t *m = json_string(message);
    json_t *body =
        json_pack("{s:s, s:O, s:{s:i, s:o}}", "jsonrpc", "2.0", "id", id != NULL ? id : json_null(),
                  "error", "code", code, "message", m != NULL ? m : json_string("refused"));
    json_answer(resp, status, body != NULL ? json_dumps(body, JSON_COMPACT) : NULL);
    json_decref(body);
}

/* ---- request checks ---------------------------------------------------------------- */

/* A loopback origin: http(s)://localhost, 127.x.y.z or [::1], any port. */
static bool loopback_origin(const char *origin)
{
    const char *host;
    if (strncasecmp(origin, "http://", 7) == 0)
        host = origin + 7;
    else if (strncasecmp(origin, "https://", 8) == 0)
        host = origin + 8;
    else
        return false;
    size_t n = host[0] == '[' ? strcspn(host, "]") + 1 : strcspn(host, ":/");
    const char *rest = host + n;
    if (*rest != '\0' && *rest != ':')
        return false;
    if (*rest == ':' && (rest[1] == '\0' || strspn(rest + 1, "0123456789") != strlen(rest + 1)))
        return false;
    if ((n == 9 && strncasecmp(host, "localhost", 9) == 0) ||
        (n == 5 && strncmp(host, "[::1]", 5) == 0))
        return true;
    if (n < 9 || n > 15 || strncmp(host, "127.", 4) != 0)
        return false;
    unsigned parts = 0;
    for (const char *p = host; p < host + n; parts++) {
        size_t d = strspn(p, "0123456789");
        if (d == 0 || d > 3 || atoi(p) > 255)
            return false;
        p += d;
        if (p < host + n && *p++ != '.')
            return false;
    }
    return parts == 4;
}

static bool origin_allowed(const struct cq_serve_mcp *m, const char *origin)
{
    if (origin == NULL)
        return true; /* not a browser: nothing for DNS rebinding to abuse */
    if (loopback_origin(origin))
        return true;
    for (size_t i = 0; m->allow_origins != NULL && m->allow_origins[i] != NULL; i++)
        if (strcasecmp(origin, m->allow_origins[i]) == 0)
            return true;
    return false;
}

/* Whether an Accept header takes type ("application/json"): listed, or its wildcards. */
static bool accepts(const char *accept, const char *type)
{
    if (accept == NULL)
        return false;
    size_t major = strcspn(type, "/");
    for (const char *p = accept; *p != '\0';) {
        p += strspn(p, " ,");
        size_t n = strcspn(p, ",;");
        while (n > 0 && p[n - 1] == ' ')
            n--;
        if ((n == strlen(type) && strncasecmp(p, type, n) == 0) ||
            (n == 3 && strncmp(p, "*/*", 3) == 0) ||
            (n == major + 2 && strncasecmp(p, type, major + 1) == 0 && p[major + 1] == '*'))
            return true;
        p += strcspn(p, ",");
    }
    return false;
}

static bool version_ok(const char *v)
{
    for (size_t i = 0; cq_mcp_protocol_versions[i] != NULL; i++)
        if (strcmp(v, cq_mcp_protocol_versions[i]) == 0)
            return strcmp(v, OLDEST_VERSION) >= 0;
    return false;
}

/* The checks every request passes, in an order that tells an unauthenticated client
 * nothing more than that it must authenticate. 0 with the tenant; -1 with resp filled. */
static int admit(struct cq_serve_mcp *m, const struct cq_http_request *req,
                 struct cq_http_response *resp, char tenant[CQ_TENANT_MAX + 1])
{
    const char *origin = cq_http_header(req, "origin");
    if (!origin_allowed(m, origin)) {
        refuse(resp, 403, NULL, -32600,
               "origin '%.200s' is not allowed (loopback origins and --allow-origin only)", origin);
        return -1;
    }
    snprintf(tenant, CQ_TENANT_MAX + 1, "%s", CQ_SERVE_ANONYMOUS);
    struct cq_error err;
    if (m->auth != NULL && cq_serve_authenticate_bearer(m->auth, req, tenant, &err) < 0) {
        if (err.code == CQ_EDENIED) {
            refuse(resp, 401, NULL, -32600, "%s", err.msg);
            cq_http_add_header(resp, "WWW-Authenticate", "Bearer realm=\"codeq\"");
        } else
            refuse(resp, 500, NULL, -32603, "cannot check the credentials: %s", err.msg);
        return -1;
    }
    if (!cq_serve_admit(m->serve, tenant)) {
        refuse(resp, 429, NULL, -32000, "too many requests per second");
        return -1;
    }
    const char *version = cq_http_header(req, "mcp-protocol-version");
    if (version != NULL && !version_ok(version)) {
        refuse(resp, 400, NULL, -32600,
               "unsupported MCP-Protocol-Version '%.40s' (codeq speaks 2025-03-26, "
               "2025-06-18 and 2025-11-25 over HTTP)",
               version);
        return -1;
    }
    return 0;
}

/* ---- MCP sessions ------------------------------------------------------------------ */

/* Under m->lock. */
static struct tenant *tenant_of(struct cq_serve_mcp *m, const char *name)
{
    struct tenant *t = m->tenants;
    while (t != NULL && strcmp(t->name, name) != 0)
        t = t->next;
    if (t == NULL && (t = calloc(1, sizeof(*t))) != NULL) {
        snprintf(t->name, sizeof(t->name), "%s", name);
        cq_mcp_default_init(&t->dflt);
        t->next = m->tenants;
        m->tenants = t;
    }
    return t;
}

static bool owner_owns(void *ctx, const char *session_id)
{
    struct mcp_session *sess = ctx;
    return cq_serve_owns(sess->m->serve, sess->tenant->name, NULL, session_id);
}

static int owner_adopt(void *ctx, const struct cq_session_info *info, const char *interpreter)
{
    struct mcp_session *sess = ctx;
    return cq_serve_adopt(sess->m->serve, sess->tenant->name, interpreter, info);
}

static void mcp_send(void *ctx, void *channel, const char *text, size_t len, bool last);
static void channel_unref(struct channel *ch);

/* A new MCP session of tenant, with the caller counted as its handler; NULL with why
 * (429: the tenant has max_sessions; 500). */
static struct mcp_session *session_open(struct cq_serve_mcp *m, const char *tenant, int *status)
{
    struct mcp_session *sess = calloc(1, sizeof(*sess));
    *status = 500;
    if (sess == NULL)
        return NULL;
    cq_random_id(sess->id, SESSION_ID_LEN);
    sess->m = m;
    pthread_mutex_lock(&m->lock);
    sess->tenant = tenant_of(m, tenant);
    if (sess->tenant != NULL && sess->tenant->n_sessions >= m->max_sessions)
        *status = 429;
    else if (sess->tenant != NULL &&
             (sess->srv = cq_mcp_server_new(m->backend, mcp_send, sess)) != NULL) {
        struct cq_mcp_owner owner = {.owns = owner_owns, .adopt = owner_adopt, .ctx = sess};
        cq_mcp_server_share(sess->srv, &sess->tenant->dflt, &owner);
        cq_mcp_server_oldest_version(sess->srv, OLDEST_VERSION);
        sess->tenant->n_sessions++;
        sess->handlers = 1;
        sess->last_used_ms = cq_now_ms();
        sess->next = m->sessions;
        m->sessions = sess;
    }
    pthread_mutex_unlock(&m->lock);
    if (sess->srv == NULL) {
        free(sess);
        return NULL;
    }
    return sess;
}

/* Session ids are secrets of their clients: compared in a time that does not tell how
 * much of one matched. */
static bool same_id(const char *a, const char *b)
{
    if (strlen(b) != SESSION_ID_LEN)
        return false;
    volatile unsigned char diff = 0;
    for (size_t i = 0; i < SESSION_ID_LEN; i++)
        diff |= (unsigned char)(a[i] ^ b[i]);
    return diff == 0;
}

/* The live session with this id of tenant, counted as used by the caller until
 * session_put; NULL: none (also when it is another tenant's). */
static struct mcp_session *session_get(struct cq_serve_mcp *m, const char *id, const char *tenant)
{
    pthread_mutex_lock(&m->lock);
    struct mcp_session *sess = m->sessions;
    while (sess != NULL && !same_id(sess->id, id))
        sess = sess->next;
    if (sess != NULL && strcmp(sess->tenant->name, tenant) != 0)
        sess = NULL;
    if (sess != NULL) {
        sess->handlers++;
        sess->last_used_ms = cq_now_ms();
    }
    pthread_mutex_unlock(&m->lock);
    return sess;
}

static void session_put(struct cq_serve_mcp *m, struct mcp_session *sess)
{
    pthread_mutex_lock(&m->lock);
    sess->handlers--;
    sess->last_used_ms = cq_now_ms();
    pthread_cond_broadcast(&m->changed);
    pthread_mutex_unlock(&m->lock);
}

/* Cancels the session's calls, waits for them (a fleet's calls run on to their end:
 * hence a thread of its own) and frees it. */
static void *session_close(void *arg)
{
    struct mcp_session *sess = arg;
    struct cq_serve_mcp *m = sess->m;
    pthread_mutex_lock(&m->lock);
    while (sess->handlers > 0)
        pthread_cond_wait(&m->changed, &m->lock);
    pthread_mutex_unlock(&m->lock);
    cq_mcp_server_cancel_all(sess->srv);
    cq_mcp_server_free(sess->srv);
    /* No handler and no call is left to use the list. */
    for (struct channel *ch = sess->streams, *next; ch != NULL; ch = next) {
        next = ch->next;
        channel_unref(ch);
    }
    free(sess);
    pthread_mutex_lock(&m->lock);
    m->closing--;
    pthread_cond_broadcast(&m->changed);
    pthread_mutex_unlock(&m->lock);
    return NULL;
}

/* Under m->lock: sess is no longer found, and is closed. */
static void session_end_locked(struct cq_serve_mcp *m, struct mcp_session *sess)
{
    for (struct mcp_session **p = &m->sessions; *p != NULL; p = &(*p)->next)
        if (*p == sess) {
            *p = sess->next;
            break;
        }
    sess->ended = true;
    sess->tenant->n_sessions--;
    m->closing++;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_t t;
    int rc = pthread_create(&t, &attr, session_close, sess);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        /* No thread to spare: close it here, letting the lock go meanwhile. */
        pthread_mutex_unlock(&m->lock);
        session_close(sess);
        pthread_mutex_lock(&m->lock);
    }
}

static void *reaper_main(void *arg)
{
    struct cq_serve_mcp *m = arg;
    pthread_mutex_lock(&m->lock);
    while (!m->stopping) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += REAP_EVERY_MS / 1000;
        pthread_cond_timedwait(&m->changed, &m->lock, &until);
        if (m->stopping)
            break;
        uint64_t now = cq_now_ms();
        for (struct mcp_session *sess = m->sessions, *next; sess != NULL; sess = next) {
            next = sess->next;
            /* Streams of calls answered long ago are no longer resumed. */
            for (struct channel **p = &sess->streams; *p != NULL;) {
                struct channel *ch = *p;
                pthread_mutex_lock(&ch->lock);
                bool stale = ch->done && now - ch->done_ms >= REPLAY_LINGER_MS;
                pthread_mutex_unlock(&ch->lock);
                if (stale) {
                    *p = ch->next;
                    channel_unref(ch);
                } else {
                    p = &ch->next;
                }
            }
            if (sess->handlers == 0 && sess->channels == 0 &&
                now - sess->last_used_ms >= m->idle_ms)
                session_end_locked(m, sess);
        }
        /* Tenants are never freed before m: their list can be walked without the lock. */
        struct tenant *tenants = m->tenants;
        pthread_mutex_unlock(&m->lock);
        for (struct tenant *t = tenants; t != NULL; t = t->next)
            cq_mcp_default_reap(&t->dflt, m->backend, m->idle_ms);
        pthread_mutex_lock(&m->lock);
    }
    pthread_mutex_unlock(&m->lock);
    return NULL;
}

/* ---- channels ------------------------------------------------------------------------ */

static struct channel *channel_new(struct mcp_session *sess)
{
    struct channel *ch = calloc(1, sizeof(*ch));
    if (ch == NULL)
        return NULL;
    ch->sess = sess;
    ch->refs = 2;
    ch->first_seq = 1;
    pthread_mutex_init(&ch->lock, NULL);
    pthread_mutex_init(&ch->write_lock, NULL);
    pthread_mutex_lock(&sess->m->lock);
    ch->number = ++sess->next_channel;
    sess->channels++;
    pthread_mutex_unlock(&sess->m->lock);
    return ch;
}

static void channel_unref(struct channel *ch)
{
    pthread_mutex_lock(&ch->lock);
    bool last = --ch->refs == 0;
    pthread_mutex_unlock(&ch->lock);
    if (!last)
        return;
    for (size_t i = 0; i < ch->n_pending; i++)
        free(ch->pending[i]);
    free(ch->pending);
    pthread_mutex_destroy(&ch->lock);
    pthread_mutex_destroy(&ch->write_lock);
    free(ch);
}

/* The stream's client went away (listener thread). */
static void channel_gone(void *ctx)
{
    struct channel *ch = ctx;
    pthread_mutex_lock(&ch->lock);
    ch->gone = true;
    pthread_mutex_unlock(&ch->lock);
}

/* Keeps a message for its stream (and a reconnect): -1 when out of memory (it is then
 * lost). Under ch->lock. */
static int keep(struct channel *ch, const char *text, size_t len)
{
    char **p = realloc(ch->pending, (ch->n_pending + 1) * sizeof(*p));
    char *copy = strndup(text, len);
    if (p != NULL)
        ch->pending = p;
    if (p == NULL || copy == NULL) {
        free(copy);
        return -1;
    }
    ch->pending[ch->n_pending++] = copy;
    ch->pending_size += strlen(copy);
    /* A streamed call's progress may be long: only its recent part is kept. */
    while (ch->streamed && ch->pending_size > REPLAY_MAX_BYTES && ch->n_pending > 1) {
        ch->pending_size -= strlen(ch->pending[0]);
        free(ch->pending[0]);
        memmove(ch->pending, ch->pending + 1, (ch->n_pending - 1) * sizeof(*ch->pending));
        ch->n_pending--;
        ch->first_seq++;
    }
    return 0;
}

/* Writes the kept messages after seq `after` to st in one write (st is new and empty:
 * it never waits); the client is taken for gone when that fails. Under ch->lock. */
static void replay(struct channel *ch, struct cq_http_stream *st, size_t after)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = st != NULL ? open_memstream(&text, &len) : NULL;
    for (size_t i = 0; f != NULL && i < ch->n_pending; i++)
        if (ch->first_seq + i > after)
            fprintf(f, "id: %lu-%zu\nevent: message\ndata: %s\n\n", ch->number, ch->first_seq + i,
                    ch->pending[i]);
    struct cq_error err;
    if (f == NULL || fclose(f) != 0 || cq_http_stream_write(st, text, len, &err) < 0)
        ch->gone = true;
    free(text);
}

/* resp as an SSE stream whose closing marks ch gone. */
static struct cq_http_stream *open_stream(struct channel *ch, struct cq_http_response *resp)
{
    struct cq_http_stream_options opt = {
        .heartbeat = ": keepalive\n\n",
        .heartbeat_ms = HEARTBEAT_MS,
        .on_close = channel_gone,
        .on_close_ctx = ch,
    };
    resp->status = 200;
    resp->content_type = "text/event-stream";
    return cq_http_respond_stream(resp, &opt);
}

/* The MCP server's send function (cq_mcp_send_fn): ctx the MCP session, channel the
 * POST the message answers or reports on. */
static void mcp_send(void *ctx, void *channel, const char *text, size_t len, bool last)
{
    struct mcp_session *sess = ctx;
    struct channel *ch = channel;
    if (ch == NULL)
        return;
    /* Sends of one server never overlap; write_lock keeps a reconnecting client from
     * replacing the stream under a write. */
    pthread_mutex_lock(&ch->write_lock);
    pthread_mutex_lock(&ch->lock);
    size_t seq = 0;
    if (text != NULL && keep(ch, text, len) == 0)
        seq = ch->first_seq + ch->n_pending - 1;
    struct cq_http_stream *st = ch->gone ? NULL : ch->stream;
    struct cq_http_stream *end = NULL;
    bool delivered = false;
    if (last) {
        ch->done = true;
        ch->done_ms = cq_now_ms();
        end = ch->stream;
        ch->stream = NULL;
    }
    pthread_mutex_unlock(&ch->lock);
    /* Written outside the channel's lock (a write may wait for the client; channel_gone
     * must not wait behind it). */
    if (st != NULL && seq != 0) {
        char *event = NULL;
        struct cq_error err;
        if (asprintf(&event, "id: %lu-%zu\nevent: message\ndata: %.*s\n\n", ch->number, seq,
                     (int)len, text) < 0)
            event = NULL;
        if (event == NULL || cq_http_stream_write(st, event, strlen(event), &err) < 0)
            channel_gone(ch);
        free(event);
    }
    if (end != NULL) {
        pthread_mutex_lock(&ch->lock);
        delivered = !ch->gone;
        pthread_mutex_unlock(&ch->lock);
        cq_http_stream_end(end);
    }
    pthread_mutex_unlock(&ch->write_lock);
    if (!last)
        return;
    pthread_mutex_lock(&sess->m->lock);
    sess->channels--;
    sess->last_used_ms = cq_now_ms();
    /* Sent in full: no reconnect will ask for it. */
    for (struct channel **p = &sess->streams; delivered && *p != NULL; p = &(*p)->next)
        if (*p == ch) {
            *p = ch->next;
            channel_unref(ch);
            break;
        }
    pthread_mutex_unlock(&sess->m->lock);
    channel_unref(ch);
}

/* Takes ch into the streams a client may reconnect to, dropping the oldest past
 * MAX_RESUMABLE. */
static void resumable(struct mcp_session *sess, struct channel *ch)
{
    pthread_mutex_lock(&sess->m->lock);
    ch->next = sess->streams;
    sess->streams = ch;
    size_t n = 0;
    for (struct channel **p = &sess->streams; *p != NULL; p = &(*p)->next)
        if (++n > MAX_RESUMABLE) {
            struct channel *old = *p;
            *p = NULL;
            for (struct channel *c; old != NULL; old = c) {
                c = old->next;
                channel_unref(old);
            }
            break;
        }
    pthread_mutex_unlock(&sess->m->lock);
}

/* After the MCP server took the message: the answer is JSON when everything came
 * already (one response: JSON; nothing, for a notification: 202), else an SSE stream
 * that carries what came and what is to come. Lets go of the handler's reference. */
static void answer(struct channel *ch, bool request, struct cq_http_response *resp)
{
    bool streamed = false;
    pthread_mutex_lock(&ch->write_lock);
    pthread_mutex_lock(&ch->lock);
    if (ch->done && (!request || ch->n_pending == 0)) {
        /* A notification, or a request cancelled before it was answered. */
        resp->status = 202;
    } else if (ch->done && ch->n_pending == 1) {
        json_answer(resp, 200, ch->pending[0]);
        ch->pending[0] = NULL;
    } else {
        struct cq_http_stream *st = open_stream(ch, resp);
        /* What came so far, in one write: the stream is empty, so it never waits. */
        replay(ch, st, 0);
        ch->streamed = true;
        if (ch->done)
            cq_http_stream_end(st);
        else if (st != NULL)
            ch->stream = st;
        streamed = st != NULL && !ch->done;
        if (streamed)
            ch->refs++; /* the session's list's */
    }
    pthread_mutex_unlock(&ch->lock);
    pthread_mutex_unlock(&ch->write_lock);
    if (streamed)
        resumable(ch->sess, ch);
    channel_unref(ch);
}

/* GET with Last-Event-ID "CHANNEL-SEQ": a client whose stream broke reconnects to it,
 * and gets the messages after SEQ that are still kept (progress may have been dropped;
 * the response never is), then the rest as they come. */
static void resume(struct cq_serve_mcp *m, const char *tenant, const char *last_id,
                   const struct cq_http_request *req, struct cq_http_response *resp)
{
    if (!accepts(cq_http_header(req, "accept"), "text/event-stream")) {
        refuse(resp, 406, NULL, -32600, "Accept must list text/event-stream");
        return;
    }
    const char *sid = cq_http_header(req, "mcp-session-id");
    struct mcp_session *sess = sid != NULL ? session_get(m, sid, tenant) : NULL;
    if (sid == NULL) {
        refuse(resp, 400, NULL, -32600, "Mcp-Session-Id is required");
        return;
    }
    if (sess == NULL) {
        refuse(resp, 404, NULL, -32001, "no MCP session '%.60s'", sid);
        return;
    }
    unsigned long number = 0;
    size_t seq = 0;
    int used = 0;
    struct channel *ch = NULL;
    if (last_id[0] >= '0' && last_id[0] <= '9' &&
        sscanf(last_id, "%lu-%zu%n", &number, &seq, &used) == 2 && last_id[used] == '\0') {
        pthread_mutex_lock(&m->lock);
        for (ch = sess->streams; ch != NULL && ch->number != number; ch = ch->next)
            ;
        if (ch != NULL) {
            pthread_mutex_lock(&ch->lock);
            ch->refs++;
            pthread_mutex_unlock(&ch->lock);
        }
        pthread_mutex_unlock(&m->lock);
    }
    session_put(m, sess);
    if (ch == NULL) {
        refuse(resp, 404, NULL, -32001, "no stream to resume for Last-Event-ID '%.60s'", last_id);
        return;
    }
    pthread_mutex_lock(&ch->write_lock);
    pthread_mutex_lock(&ch->lock);
    /* The stream it had ends (if the server has not seen it break yet, or another
     * reader holds it: one reader at a time, the latest). Its writer lets go of it
     * without ch->lock: its on_close may be running, and takes that lock. */
    struct cq_http_stream *old = ch->stream;
    ch->stream = NULL;
    pthread_mutex_unlock(&ch->lock);
    cq_http_stream_end(old);
    pthread_mutex_lock(&ch->lock);
    struct cq_http_stream *st = open_stream(ch, resp);
    ch->gone = false;
    replay(ch, st, seq);
    if (ch->done)
        cq_http_stream_end(st);
    else if (st != NULL)
        ch->stream = st;
    pthread_mutex_unlock(&ch->lock);
    pthread_mutex_unlock(&ch->write_lock);
    channel_unref(ch);
}

/* ---- routes -------------------------------------------------------------------------- */

static void post(struct cq_serve_mcp *m, const char *tenant, const struct cq_http_request *req,
                 struct cq_http_response *resp)
{
    const char *type = cq_http_header(req, "content-type");
    if (type == NULL || strncasecmp(type, "application/json", 16) != 0 ||
        (type[16] != '\0' && type[16] != ';' && type[16] != ' ')) {
        refuse(resp, 415, NULL, -32600, "the body must be Content-Type: application/json");
        return;
    }
    const char *accept = cq_http_header(req, "accept");
    if (!accepts(accept, "application/json") || !accepts(accept, "text/event-stream")) {
        refuse(resp, 406, NULL, -32600, "Accept must list application/json and text/event-stream");
        return;
    }
    struct cq_mcp_message msg;
    int code = 0;
    char refusal[256];
    int rc = cq_mcp_parse_message((const char *)req->body, req->body_len, &msg, &code, refusal,
                                  sizeof(refusal));
    const char *sid = cq_http_header(req, "mcp-session-id");
    struct mcp_session *sess = NULL;
    if (rc < 0) {
        refuse(resp, 400, msg.id, code, "%s", refusal);
    } else if (rc == 1 && strcmp(msg.method, "initialize") == 0) {
        int status = 0;
        if (msg.id == NULL)
            refuse(resp, 400, NULL, -32600, "initialize is a request: it needs an id");
        else if (sid != NULL)
            refuse(resp, 400, msg.id, -32600,
                   "initialize opens a new MCP session: send it without Mcp-Session-Id");
        else if ((sess = session_open(m, tenant, &status)) == NULL)
            refuse(resp, status, msg.id, -32000, "%s",
                   status == 429 ? "too many MCP sessions open for this tenant: end some "
                                   "(DELETE /mcp) or wait for their idle timeout"
                                 : "out of memory");
    } else if (sid == NULL) {
        refuse(resp, 400, msg.id, -32600,
               "Mcp-Session-Id is required: initialize first and send the id it answered");
    } else if ((sess = session_get(m, sid, tenant)) == NULL) {
        refuse(resp, 404, msg.id, -32001, "no MCP session '%.60s': initialize a new one", sid);
    }
    if (sess != NULL) {
        bool request = rc == 1 && msg.id != NULL;
        bool opening = request && strcmp(msg.method, "initialize") == 0;
        struct channel *ch = channel_new(sess);
        if (ch == NULL) {
            refuse(resp, 500, msg.id, -32603, "out of memory");
        } else {
            if (rc == 1)
                cq_mcp_server_dispatch(sess->srv, &msg, ch);
            else
                mcp_send(sess, ch, NULL, 0, true); /* a client's response: nothing to do */
            answer(ch, request, resp);
            if (opening)
                cq_http_add_header(resp, "Mcp-Session-Id", sess->id);
        }
        session_put(m, sess);
    }
    cq_mcp_message_free(&msg);
}

static void delete_session(struct cq_serve_mcp *m, const char *tenant,
                           const struct cq_http_request *req, struct cq_http_response *resp)
{
    const char *sid = cq_http_header(req, "mcp-session-id");
    struct mcp_session *sess = sid != NULL ? session_get(m, sid, tenant) : NULL;
    if (sid == NULL) {
        refuse(resp, 400, NULL, -32600, "Mcp-Session-Id is required");
        return;
    }
    if (sess == NULL) {
        refuse(resp, 404, NULL, -32001, "no MCP session '%.60s'", sid);
        return;
    }
    pthread_mutex_lock(&m->lock);
    if (!sess->ended)
        session_end_locked(m, sess);
    sess->handlers--;
    pthread_cond_broadcast(&m->changed);
    pthread_mutex_unlock(&m->lock);
    resp->status = 204;
}

void cq_serve_mcp_handle(struct cq_serve_mcp *m, const struct cq_http_request *req,
                         struct cq_http_response *resp)
{
    char tenant[CQ_TENANT_MAX + 1];
    if (admit(m, req, resp, tenant) < 0)
        return;
    if (strcmp(req->method, "POST") == 0)
        post(m, tenant, req, resp);
    else if (strcmp(req->method, "DELETE") == 0)
        delete_session(m, tenant, req, resp);
    else if (strcmp(req->method, "GET") == 0 && cq_http_header(req, "last-event-id") != NULL)
        resume(m, tenant, cq_http_header(req, "last-event-id"), req, resp);
    else {
        refuse(resp, 405, NULL, -32600,
               "/mcp takes POST (messages), DELETE (end the session) and GET with "
               "Last-Event-ID (reconnect to a call's stream); codeq offers no server-to-client "
               "stream of its own");
        resp->allow = "POST, DELETE";
    }
}

int cq_serve_mcp_create(struct cq_serve *s, const struct cq_serve_config *cfg,
                        struct cq_serve_mcp **out, struct cq_error *err)
{
    struct cq_serve_mcp *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return cq_error_sys(err, ENOMEM, "serve: /mcp");
    m->serve = s;
    m->backend = cfg->backend;
    m->auth = cfg->auth;
    m->allow_origins = cfg->allow_origins;
    m->max_sessions = cfg->mcp_max_sessions ? cfg->mcp_max_sessions : CQ_SERVE_MCP_MAX_SESSIONS;
    m->idle_ms = (uint64_t)(cfg->mcp_idle_timeout_s ? cfg->mcp_idle_timeout_s
                                                    : CQ_SERVE_MCP_IDLE_TIMEOUT_S) *
                 1000;
    pthread_mutex_init(&m->lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&m->changed, &attr);
    pthread_condattr_destroy(&attr);
    int rc = pthread_create(&m->reaper, NULL, reaper_main, m);
    if (rc != 0) {
        cq_serve_mcp_free(m);
        return cq_error_sys(err, rc, "serve: /mcp: start the idle reaper");
    }
    m->reaper_started = true;
    *out = m;
    return 0;
}

void cq_serve_mcp_free(struct cq_serve_mcp *m)
{
    if (m == NULL)
        return;
    pthread_mutex_lock(&m->lock);
    m->stopping = true;
    pthread_cond_broadcast(&m->changed);
    pthread_mutex_unlock(&m->lock);
    if (m->reaper_started)
        pthread_join(m->reaper, NULL);
    pthread_mutex_lock(&m->lock);
    while (m->sessions != NULL)
        session_end_locked(m, m->sessions);
    while (m->closing > 0)
        pthread_cond_wait(&m->changed, &m->lock);
    pthread_mutex_unlock(&m->lock);
    /* The tenants' default sessions are in the server's table: it stops them. */
    for (struct tenant *t = m->tenants, *next; t != NULL; t = next) {
        next = t->next;
        cq_mcp_default_destroy(&t->dflt);
        free(t);
    }
    pthread_cond_destroy(&m->changed);
    pthread_mutex_destroy(&m->lock);
    free(m);
}
