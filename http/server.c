/* http/server.c - the listener: libmicrohttpd with a thread per connection.
 *
 * A thread per connection, because handlers block: rendering metrics takes a lock,
 * and `codeq serve` runs code for as long as a cell runs. The connection limit bounds
 * the threads; libmicrohttpd refuses connections past it at accept, and closes idle
 * ones after idle_timeout_s, so that silent clients cannot hold every slot for long;
 * slow ones, never idle, are cut by the guard (http/guard.c).
 *
 * A streamed response is libmicrohttpd's content reader, which in this threading mode
 * may block: it waits on the stream's condition variable for what writers append, in
 * slices of STREAM_POLL_MS between which it asks the socket whether the client hung up
 * (nothing else would notice before the next write). libmicrohttpd counts a
 * connection idle from its last socket read or write, so a reader that waited long for
 * a cell's output would find its connection timed out on return: each slice of data
 * handed over restarts that clock (reset_timeout).
 */
#define _GNU_SOURCE
#include "http/http.h"
#include "common/cleanup.h"
#include "http/guard.h"

#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_MAX_BODY        (1u << 20)
#define DEFAULT_MAX_CONNECTIONS 64
#define DEFAULT_IDLE_TIMEOUT_S  30

#define STREAM_DEFAULT_MAX_BUFFERED  (1u << 20)
#define STREAM_DEFAULT_WRITE_TIMEOUT 30000
#define STREAM_BLOCK_SIZE            16384
/* How often a waiting reader looks whether the client hung up. */
#define STREAM_POLL_MS 200

struct cq_http_stream {
    pthread_mutex_t lock;
    pthread_cond_t changed; /* data, room, end, close (CLOCK_MONOTONIC) */
    unsigned refs;          /* the writer's, and the listener's (released by stream_release) */
    char *buf;              /* written, not yet sent: buf[off, len) */
    size_t off, len, cap;
    struct cq_http_stream_options opt;
    bool ended;       /* the writer called cq_http_stream_end */
    bool closed;      /* no more is sent: client gone, listener done, or cut */
    bool in_callback; /* on_close is running */
    uint64_t sent_ms; /* when something was last handed to the listener */
    struct MHD_Connection *conn;
    int fd; /* the connection's socket; -1 before the listener took the stream */
    unsigned timeout_s;
};

struct cq_http_server {
    struct MHD_Daemon *daemon;
    struct cq_http_guard *guard;
    cq_http_handler handler;
    void *ctx;
    void (*free_ctx)(void *ctx);
    size_t max_body;
    unsigned idle_timeout_s;
    uint16_t port;
    /* Requests between their first line and their answer's last byte, for a graceful
     * stop (cq_http_stop). */
    pthread_mutex_t lock;
    pthread_cond_t idle;
    unsigned active;
};

/* What a request accumulates between libmicrohttpd's calls of the access handler. */
struct pending {
    char *target; /* the raw request target (URI log callback) */
    bool started; /* the headers' call of the access handler came */
    uint8_t *body;
    size_t len, cap;
    bool too_large;
    bool nul_in_query;
};

/* libmicrohttpd hands the access handler a percent-decoded path; a signature covers the
 * target as sent, which only this callback sees (before any decoding). */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    struct cq_http_server *s = cls;
    (void)conn;
    struct pending *p = calloc(1, sizeof(*p));
    if (p != NULL && (p->target = strdup(uri != NULL ? uri : "")) == NULL) {
        free(p);
        p = NULL;
    }
    if (p != NULL) {
        pthread_mutex_lock(&s->lock);
        s->active++;
        pthread_mutex_unlock(&s->lock);
    }
    return p;
}

const char *cq_http_header(const struct cq_http_request *req, const char *name)
{
    return MHD_lookup_connection_value(req->connection, MHD_HEADER_KIND, name);
}

const char *cq_http_query(const struct cq_http_request *req, const char *name)
{
    return MHD_lookup_connection_value(req->connection, MHD_GET_ARGUMENT_KIND, name);
}

struct header_walk {
    struct cq_http_header *out;
    size_t max, n;
};

static enum MHD_Result walk_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                   const char *value)
{
    (void)kind;
    struct header_walk *w = cls;
    if (w->n < w->max) {
        w->out[w->n].name = key;
        w->out[w->n].value = value != NULL ? value : "";
    }
    w->n++;
    return MHD_YES;
}

size_t cq_http_headers(const struct cq_http_request *req, struct cq_http_header *out, size_t max)
{
    struct header_walk w = {.out = out, .max = max};
    MHD_get_connection_values(req->connection, MHD_HEADER_KIND, walk_header, &w);
    return w.n;
}

int cq_http_add_header(struct cq_http_response *resp, const char *name, const char *value)
{
    size_t len = strlen(value);
    if (resp->n_headers >= CQ_HTTP_MAX_RESPONSE_HEADERS || len >= CQ_HTTP_HEADER_VALUE_MAX)
        return -1;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)value[i] < 0x20 || value[i] == 0x7f)
            return -1;
    resp->header_names[resp->n_headers] = name;
    memcpy(resp->header_values[resp->n_headers], value, len + 1);
    resp->n_headers++;
    return 0;
}

void cq_http_respond(struct cq_http_response *resp, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *text = NULL;
    int n = vasprintf(&text, fmt, ap);
    va_end(ap);
    free(resp->body);
    resp->body = NULL;
    resp->body_len = 0;
    resp->status = status;
    if (n < 0) {
        resp->status = 500;
        return;
    }
    resp->body = text;
    resp->body_len = (size_t)n;
}

/* ---- streams ------------------------------------------------------------------------ */

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void wait_ms(struct cq_http_stream *st, uint64_t ms)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += (time_t)(ms / 1000);
    until.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&st->changed, &st->lock, &until);
}

static void stream_unref_locked(struct cq_http_stream *st)
{
    bool last = --st->refs == 0;
    pthread_mutex_unlock(&st->lock);
    if (last) {
        pthread_cond_destroy(&st->changed);
        pthread_mutex_destroy(&st->lock);
        free(st->buf);
        free(st);
    }
}

/* Under st->lock: nothing more is sent. The writer is told through on_close (with the
 * lock let go meanwhile: the callback may take the writer's locks, and a writer holding
 * those may be waiting here) unless it ended the stream already. */
static void stream_close_locked(struct cq_http_stream *st)
{
    if (st->closed)
        return;
    st->closed = true;
    pthread_cond_broadcast(&st->changed);
    void (*fn)(void *) = st->opt.on_close;
    st->opt.on_close = NULL;
    if (st->ended || fn == NULL)
        return;
    st->in_callback = true;
    pthread_mutex_unlock(&st->lock);
    fn(st->opt.on_close_ctx);
    pthread_mutex_lock(&st->lock);
    st->in_callback = false;
    pthread_cond_broadcast(&st->changed);
}

struct cq_http_stream *cq_http_respond_stream(struct cq_http_response *resp,
                                              const struct cq_http_stream_options *opt)
{
    free(resp->body);
    resp->body = NULL;
    resp->body_len = 0;
    struct cq_http_stream *st = calloc(1, sizeof(*st));
    if (st == NULL) {
        resp->status = 500;
        return NULL;
    }
    if (opt != NULL)
        st->opt = *opt;
    if (st->opt.max_buffered == 0)
        st->opt.max_buffered = STREAM_DEFAULT_MAX_BUFFERED;
    if (st->opt.write_timeout_ms == 0)
        st->opt.write_timeout_ms = STREAM_DEFAULT_WRITE_TIMEOUT;
    pthread_mutex_init(&st->lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&st->changed, &attr);
    pthread_condattr_destroy(&attr);
    /* The writer's, and the listener's: taken now, because the writer may be done with
     * the stream (cq_http_stream_end) before the handler returns and the listener sees
     * it. */
    st->refs = 2;
    st->fd = -1;
    st->sent_ms = mono_ms();
    resp->stream = st;
    return st;
}

int cq_http_stream_write(struct cq_http_stream *st, const void *data, size_t len,
                         struct cq_error *err)
{
    pthread_mutex_lock(&st->lock);
    uint64_t deadline = mono_ms() + st->opt.write_timeout_ms;
    while (!st->closed && st->len > st->off && st->len - st->off + len > st->opt.max_buffered) {
        uint64_t now = mono_ms();
        if (now >= deadline) {
            /* The client stopped reading: cut it off rather than hold the writer (and
             * what waits behind it) for as long as it likes. */
            st->closed = true;
            pthread_cond_broadcast(&st->changed);
            break;
        }
        wait_ms(st, deadline - now);
    }
    if (st->closed || st->ended) {
        pthread_mutex_unlock(&st->lock);
        return cq_error_sys(err, EPIPE, "the response stream is closed");
    }
    if (len == 0) {
        pthread_mutex_unlock(&st->lock);
        return 0;
    }
    if (st->off > 0) {
        memmove(st->buf, st->buf + st->off, st->len - st->off);
        st->len -= st->off;
        st->off = 0;
    }
    if (st->len + len > st->cap) {
        size_t cap = st->cap ? st->cap : 4096;
        while (cap < st->len + len)
            cap *= 2;
        char *b = realloc(st->buf, cap);
        if (b == NULL) {
            pthread_mutex_unlock(&st->lock);
            return cq_error_sys(err, ENOMEM, "response stream");
        }
        st->buf = b;
        st->cap = cap;
    }
    memcpy(st->buf + st->len, data, len);
    st->len += len;
    pthread_cond_broadcast(&st->changed);
    pthread_mutex_unlock(&st->lock);
    return 0;
}

void cq_http_stream_end(struct cq_http_stream *st)
{
    if (st == NULL)
        return;
    pthread_mutex_lock(&st->lock);
    st->ended = true;
    st->opt.on_close = NULL;
    while (st->in_callback)
        pthread_cond_wait(&st->changed, &st->lock);
    pthread_cond_broadcast(&st->changed);
    stream_unref_locked(st);
}

/* libmicrohttpd counts idleness from the last socket read or write, and resets it only
 * when the timeout is set from none: a connection whose reader waited long for data
 * would be closed as idle the moment that data came. */
static void reset_timeout(struct MHD_Connection *conn, unsigned timeout_s)
{
    if (conn == NULL)
        return;
    MHD_set_connection_option(conn, MHD_CONNECTION_OPTION_TIMEOUT, 0u);
    MHD_set_connection_option(conn, MHD_CONNECTION_OPTION_TIMEOUT, timeout_s);
}

/* Whether the client closed or reset its connection (a client that half-closes and
 * reads on is taken for gone: HTTP clients do not do that). */
static bool peer_gone(int fd)
{
    if (fd < 0)
        return false;
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    struct cq_http_stream *st = cls;
    pthread_mutex_lock(&st->lock);
    for (;;) {
        size_t n = 0;
        if (st->len > st->off) {
            n = st->len - st->off < max ? st->len - st->off : max;
            memcpy(buf, st->buf + st->off, n);
            st->off += n;
            if (st->off == st->len)
                st->off = st->len = 0;
            pthread_cond_broadcast(&st->changed); /* room for a waiting writer */
        } else if (st->ended) {
            pthread_mutex_unlock(&st->lock);
            return MHD_CONTENT_READER_END_OF_STREAM;
        } else if (st->closed) {
            pthread_mutex_unlock(&st->lock);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        } else if (peer_gone(st->fd)) {
            stream_close_locked(st);
            pthread_mutex_unlock(&st->lock);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        } else if (st->opt.heartbeat != NULL && st->opt.heartbeat_ms > 0 &&
                   mono_ms() - st->sent_ms >= st->opt.heartbeat_ms &&
                   strlen(st->opt.heartbeat) <= max) {
            n = strlen(st->opt.heartbeat);
            memcpy(buf, st->opt.heartbeat, n);
        }
        if (n > 0) {
            st->sent_ms = mono_ms();
            struct MHD_Connection *conn = st->conn;
            unsigned timeout_s = st->timeout_s;
            pthread_mutex_unlock(&st->lock);
            reset_timeout(conn, timeout_s);
            return (ssize_t)n;
        }
        wait_ms(st, STREAM_POLL_MS);
    }
}

/* libmicrohttpd is done with the response: sent in full, or the connection failed. */
static void stream_release(void *cls)
{
    struct cq_http_stream *st = cls;
    pthread_mutex_lock(&st->lock);
    stream_close_locked(st);
    stream_unref_locked(st);
}

static struct MHD_Response *stream_response(struct cq_http_server *s, struct MHD_Connection *conn,
                                            struct cq_http_stream *st)
{
    pthread_mutex_lock(&st->lock);
    st->conn = conn;
    st->timeout_s = s->idle_timeout_s;
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    st->fd = info != NULL ? info->connect_fd : -1;
    pthread_mutex_unlock(&st->lock);
    struct MHD_Response *m = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, STREAM_BLOCK_SIZE,
                                                               stream_read, st, stream_release);
    if (m == NULL)
        stream_release(st);
    return m;
}

/* ---- responses ---------------------------------------------------------------------- */

static enum MHD_Result send_response(struct cq_http_server *s, struct MHD_Connection *conn,
                                     struct cq_http_response *r)
{
    struct MHD_Response *m;
    if (r->stream != NULL) {
        free(r->body);
        r->body = NULL;
        m = stream_response(s, conn, r->stream);
        r->stream = NULL; /* the writer keeps its own reference */
        if (m == NULL)
            return MHD_NO;
    } else {
        m = MHD_create_response_from_buffer(r->body_len, r->body != NULL ? r->body : (void *)"",
                                            r->body != NULL ? MHD_RESPMEM_MUST_FREE
                                                            : MHD_RESPMEM_PERSISTENT);
        if (m == NULL) {
            free(r->body);
            return MHD_NO;
        }
        r->body = NULL; /* libmicrohttpd frees it with the response */
    }
    MHD_add_response_header(m, MHD_HTTP_HEADER_CONTENT_TYPE,
                            r->content_type != NULL ? r->content_type
                                                    : "text/plain; charset=utf-8");
    /* Nothing codeq answers is for a shared cache, or to be sniffed as another type. */
    MHD_add_response_header(m, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    MHD_add_response_header(m, "X-Content-Type-Options", "nosniff");
    if (r->allow != NULL)
        MHD_add_response_header(m, MHD_HTTP_HEADER_ALLOW, r->allow);
    for (size_t i = 0; i < r->n_headers; i++)
        MHD_add_response_header(m, r->header_names[i], r->header_values[i]);
    enum MHD_Result rc = MHD_queue_response(conn, (unsigned)r->status, m);
    /* A stream never queued is released here, which tells its writer (on_close). */
    MHD_destroy_response(m);
    return rc;
}

/* A query argument that decodes to a NUL byte (%00) would be cut there by every C
 * string after it, so that "?sessionId=ID%00junk" would name ID: refused instead. */
static enum MHD_Result find_nul(void *cls, enum MHD_ValueKind kind, const char *key,
                                size_t key_size, const char *value, size_t value_size)
{
    (void)kind;
    bool *found = cls;
    if (memchr(key, 0, key_size) != NULL || (value != NULL && memchr(value, 0, value_size)))
        *found = true;
    return *found ? MHD_NO : MHD_YES;
}

/* A client that waits for 100 Continue before its body (curl does past 1 MiB) and
 * declares one past the limit gets its 413 at once rather than an invitation to send
 * what would be thrown away; libmicrohttpd closes the connection after it. */
static bool declared_too_large(struct MHD_Connection *conn, size_t max_body)
{
    const char *expect = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_EXPECT);
    const char *length =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (expect == NULL || strcasecmp(expect, "100-continue") != 0 || length == NULL)
        return false;
    errno = 0;
    unsigned long long n = strtoull(length, NULL, 10);
    return errno == ERANGE || n > max_body;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **req_cls)
{
    (void)version;
    struct cq_http_server *s = cls;
    struct pending *p = *req_cls;
    if (p == NULL)
        return MHD_NO; /* out of memory in on_uri */
    if (!p->started) {
        /* The headers only: the body, if any, comes in later calls. */
        p->started = true;
        cq_http_guard_headers_done(s->guard, conn);
        MHD_get_connection_values_n(conn, MHD_GET_ARGUMENT_KIND, find_nul, &p->nul_in_query);
        if (!declared_too_large(conn, s->max_body))
            return MHD_YES;
        p->too_large = true; /* answered before the body: see declared_too_large */
    } else if (*upload_size > 0) {
        cq_http_guard_body(s->guard, conn, *upload_size);
        /* Keep reading past the limit without keeping, so that the client gets its
         * 413 rather than a reset connection in the middle of its upload. */
        if (!p->too_large && p->len + *upload_size > s->max_body)
            p->too_large = true;
        if (!p->too_large) {
            if (p->len + *upload_size > p->cap) {
                size_t cap = p->cap ? p->cap : 4096;
                while (cap < p->len + *upload_size)
                    cap *= 2;
                uint8_t *b = realloc(p->body, cap);
                if (b == NULL)
                    return MHD_NO;
                p->body = b;
                p->cap = cap;
            }
            memcpy(p->body + p->len, upload, *upload_size);
            p->len += *upload_size;
        }
        *upload_size = 0;
        return MHD_YES;
    }

    cq_http_guard_busy(s->guard, conn);
    struct cq_http_response resp = {.status = 200};
    if (p->too_large) {
        cq_http_respond(&resp, 413, "the request body is larger than %zu bytes\n", s->max_body);
    } else if (p->nul_in_query) {
        cq_http_respond(&resp, 400, "a query argument holds a NUL byte (%%00)\n");
    } else {
        struct cq_http_request req = {
            .method = method,
            .path = url,
            .target = p->target,
            .body = p->body,
            .body_len = p->len,
            .connection = conn,
        };
        s->handler(s->ctx, &req, &resp);
    }
    return send_response(s, conn, &resp);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct cq_http_server *s = cls;
    (void)toe;
    cq_http_guard_idle(s->guard, conn);
    struct pending *p = *req_cls;
    if (p != NULL) {
        free(p->target);
        free(p->body);
        free(p);
        *req_cls = NULL;
        pthread_mutex_lock(&s->lock);
        if (--s->active == 0)
            pthread_cond_broadcast(&s->idle);
        pthread_mutex_unlock(&s->lock);
    }
}

/* HOST:PORT, [V6]:PORT, :PORT into an address to bind. */
static int resolve_listen(const char *listen, struct addrinfo **out, struct cq_error *err)
{
    if (listen == NULL || listen[0] == '\0')
        return cq_error_set(err, CQ_EINVALID, "no address to listen on");
    const char *colon = strrchr(listen, ':');
    if (colon == NULL || colon[1] == '\0')
        return cq_error_set(err, CQ_EINVALID, "listen address '%s' is not HOST:PORT", listen);
    char host[256] = "";
    size_t host_len = (size_t)(colon - listen);
    const char *h = listen;
    if (host_len >= 2 && h[0] == '[' && h[host_len - 1] == ']') {
        h++;
        host_len -= 2;
    }
    if (host_len >= sizeof(host))
        return cq_error_set(err, CQ_EINVALID, "listen address '%s': host too long", listen);
    memcpy(host, h, host_len);
    host[host_len] = '\0';
    char *end = NULL;
    long port = strtol(colon + 1, &end, 10);
    if (*end != '\0' || port < 0 || port > 65535)
        return cq_error_set(err, CQ_EINVALID, "listen address '%s': bad port", listen);
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC,
        .ai_socktype = SOCK_STREAM,
        .ai_flags = AI_PASSIVE | AI_NUMERICSERV,
    };
    int rc = getaddrinfo(host[0] != '\0' ? host : NULL, colon + 1, &hints, out);
    if (rc != 0)
        return cq_error_set(err, CQ_EINVALID, "listen address '%s': %s", listen, gai_strerror(rc));
    return 0;
}

int cq_http_start(const struct cq_http_config *cfg, struct cq_http_server **out,
                  struct cq_error *err)
{
    struct addrinfo *ai = NULL;
    if (resolve_listen(cfg->listen, &ai, err) < 0)
        return -1;
    struct cq_http_server *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        freeaddrinfo(ai);
        return cq_error_sys(err, ENOMEM, "HTTP listener");
    }
    s->handler = cfg->handler;
    s->ctx = cfg->ctx;
    s->free_ctx = cfg->free_ctx;
    s->max_body = cfg->max_body ? cfg->max_body : DEFAULT_MAX_BODY;
    s->idle_timeout_s = cfg->idle_timeout_s ? cfg->idle_timeout_s : DEFAULT_IDLE_TIMEOUT_S;
    unsigned timeout_s = s->idle_timeout_s;
    unsigned max_connections =
        cfg->max_connections ? cfg->max_connections : DEFAULT_MAX_CONNECTIONS;
    if (cq_http_guard_nofile(max_connections, err) < 0) {
        freeaddrinfo(ai);
        free(s);
        return -1;
    }
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->idle, NULL);
    /* ITC: what lets cq_http_stop quiesce the daemon (stop accepting) while it runs. */
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
                     MHD_USE_POLL | MHD_USE_ITC;
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    bool tls = cfg->tls_cert_pem != NULL || cfg->tls_key_pem != NULL;
    if (tls && (cfg->tls_cert_pem == NULL || cfg->tls_key_pem == NULL)) {
        freeaddrinfo(ai);
        free(s);
        return cq_error_set(err, CQ_EINVALID, "TLS needs both a certificate and its key");
    }
    if (tls) {
        if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
            freeaddrinfo(ai);
            free(s);
            return cq_error_set(err, CQ_EINVALID, "this libmicrohttpd has no TLS");
        }
        flags |= MHD_USE_TLS;
    }
    if (cq_http_guard_start(timeout_s, &s->guard, err) < 0) {
        freeaddrinfo(ai);
        free(s);
        return -1;
    }
    s->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR, ai->ai_addr,
        MHD_OPTION_CONNECTION_LIMIT, max_connections, MHD_OPTION_CONNECTION_TIMEOUT, timeout_s,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_URI_LOG_CALLBACK, on_uri, s,
        MHD_OPTION_NOTIFY_CONNECTION, cq_http_guard_notify, s->guard,
        /* Without TLS the list ends here; libmicrohttpd refuses HTTPS options on a plain
         * daemon. */
        tls ? MHD_OPTION_HTTPS_MEM_CERT : MHD_OPTION_END, cfg->tls_cert_pem,
        MHD_OPTION_HTTPS_MEM_KEY, cfg->tls_key_pem, MHD_OPTION_END);
    freeaddrinfo(ai);
    if (s->daemon == NULL) {
        int e = errno;
        cq_http_guard_stop(s->guard);
        free(s);
        errno = e;
        /* libmicrohttpd says why only on its log; bind's errno is the usual cause. */
        return cq_error_sys(err, errno ? errno : EADDRINUSE, "listen on %s", cfg->listen);
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    s->port = info != NULL ? info->port : 0;
    *out = s;
    return 0;
}

uint16_t cq_http_port(const struct cq_http_server *s)
{
    return s->port;
}

void cq_http_stop(struct cq_http_server *s)
{
    if (s == NULL)
        return;
    /* Graceful: no new connections, then every request in progress answered in full
     * (MHD_stop_daemon alone shuts their sockets down under them). Idle keep-alive
     * connections hold no request and are closed by MHD_stop_daemon. */
    MHD_socket listener = MHD_quiesce_daemon(s->daemon);
    if (listener != MHD_INVALID_SOCKET)
        close(listener);
    pthread_mutex_lock(&s->lock);
    while (s->active > 0)
        pthread_cond_wait(&s->idle, &s->lock);
    pthread_mutex_unlock(&s->lock);
    MHD_stop_daemon(s->daemon);
    cq_http_guard_stop(s->guard);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->idle);
    if (s->free_ctx != NULL)
        s->free_ctx(s->ctx);
    free(s);
}
