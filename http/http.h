/* http/http.h - codeq's HTTP listener, on libmicrohttpd (docs/dependencies.md).
 *
 * Two users: the operations endpoints every daemon can open (/metrics, /healthz,
 * /readyz: cq_ops_start below), and `codeq serve`. A request is read whole (its body
 * bounded by max_body: 413 past it) and handed to one handler function, on the
 * connection's own thread, which fills a response: a body in full, or a stream that
 * other threads write to as they go (cq_http_respond_stream). The listener answers what
 * the handler never sees: malformed HTTP (400), a body too large (413), more
 * connections than max_connections (refused at accept), clients too slow to send a
 * request (cut).
 */
#ifndef CQ_HTTP_HTTP_H
#define CQ_HTTP_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include "common/error.h"
#include "common/metrics.h"

struct cq_http_request {
    const char *method; /* "GET", ... */
    const char *path;   /* without the query, percent-decoded by libmicrohttpd */
    /* The request target as it came off the wire, still percent-encoded, with its query
     * ("/a%2Fb?x=1"): what a signature covers (http/sigv4.h); never route on path
     * alone where the encoded form matters. */
    const char *target;
    const uint8_t *body;
    size_t body_len;
    void *connection; /* for cq_http_header */
};

/* A request header by name (case-insensitive), or NULL. */
const char *cq_http_header(const struct cq_http_request *req, const char *name);
/* A query argument by name, or NULL. */
const char *cq_http_query(const struct cq_http_request *req, const char *name);

struct cq_http_header {
    const char *name;
    const char *value;
};
/* Every request header in arrival order (a repeated one once per occurrence), the
 * first max of them into out; returns how many there are (more than max: some left). */
size_t cq_http_headers(const struct cq_http_request *req, struct cq_http_header *out, size_t max);

#define CQ_HTTP_MAX_RESPONSE_HEADERS 4
#define CQ_HTTP_HEADER_VALUE_MAX     160

struct cq_http_response {
    int status;               /* 200 unless the handler says otherwise */
    const char *content_type; /* static text; NULL: text/plain; charset=utf-8 */
    char *body;               /* malloc'd; the listener frees it; NULL: empty */
    size_t body_len;
    const char *allow; /* 405: the methods the path takes (static text), else NULL */
    /* Further headers (cq_http_add_header): static names, values copied. */
    const char *header_names[CQ_HTTP_MAX_RESPONSE_HEADERS];
    char header_values[CQ_HTTP_MAX_RESPONSE_HEADERS][CQ_HTTP_HEADER_VALUE_MAX];
    size_t n_headers;
    struct cq_http_stream *stream; /* cq_http_respond_stream; NULL: the body above */
};

/* Adds a response header (name static text); -1 when there is no room or the value is
 * too long or holds a control character (a header cannot be split by what it carries). */
int cq_http_add_header(struct cq_http_response *resp, const char *name, const char *value);

/* Fills resp (body with cq_http_respond or by hand); never fails: a handler that
 * cannot do its work answers 500 with why. */
typedef void (*cq_http_handler)(void *ctx, const struct cq_http_request *req,
                                struct cq_http_response *resp);

/* Sets status and a body printed from fmt (a 500 without a body when out of memory). */
void cq_http_respond(struct cq_http_response *resp, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- streamed responses ------------------------------------------------------------ */

/* A response whose body is written after the handler returned, by any thread, and sent
 * as it comes (chunked): server-sent events, event streams. What was written and not
 * yet sent is bounded; a writer past the bound waits for the client to read. A client
 * that goes away (its connection closed or reset) is noticed within a fraction of a
 * second even while nothing is written, and from then on writes fail. */
struct cq_http_stream;

struct cq_http_stream_options {
    size_t max_buffered;       /* bytes written and not yet sent; 0: 1 MiB */
    unsigned write_timeout_ms; /* a write waits this long for room, then the stream is
                                  cut (a client that stopped reading); 0: 30 s */
    /* Sent after heartbeat_ms without anything to send (e.g. an SSE comment, ": \n\n"),
     * so that clients and proxies with read timeouts see a live stream; NULL: none. */
    const char *heartbeat; /* static text */
    unsigned heartbeat_ms;
    /* Called once, from the listener's thread, when the stream ends before
     * cq_http_stream_end: the client went away, or the listener stopped it. Never after
     * cq_http_stream_end returned. NULL: none. */
    void (*on_close)(void *ctx);
    void *on_close_ctx;
};

/* Makes resp a streamed response (its status, content type and headers as set; no
 * body) and returns the stream for its writer, who must end it with
 * cq_http_stream_end, and may write (and end it) at once, before the handler returns.
 * The handler must return resp with the stream in it. NULL when out of memory (resp is
 * then a 500). opt may be NULL. */
struct cq_http_stream *cq_http_respond_stream(struct cq_http_response *resp,
                                              const struct cq_http_stream_options *opt);
/* Appends data to the body; waits while the stream holds more than max_buffered (a
 * single write larger than that goes through once the stream is empty). 0; -1 with err
 * (EPIPE) when the client went away, the listener stopped the stream, or a wait for
 * room ran out (the stream is then cut). Writers of one stream take turns. */
int cq_http_stream_write(struct cq_http_stream *st, const void *data, size_t len,
                         struct cq_error *err);
/* The body ends after what was written; the writer lets go of st (it must not use it
 * again). Waits for an on_close call in progress. */
void cq_http_stream_end(struct cq_http_stream *st);

struct cq_http_config {
    /* HOST:PORT, [IPV6]:PORT or :PORT (every address); PORT 0 picks a free one
     * (cq_http_port). HOST may be a name, resolved once at start. */
    const char *listen;
    cq_http_handler handler;
    void *ctx;
    void (*free_ctx)(void *ctx); /* called by cq_http_stop; may be NULL */
    size_t max_body;             /* 0: 1 MiB */
    unsigned max_connections;    /* 0: 64 */
    /* A connection idle this long is closed, and so is one whose request's headers take
     * longer to arrive, or whose body then comes slower than 4 KiB/s (http/guard.c); 0: 30 */
    unsigned idle_timeout_s;
    /* HTTPS: the certificate (chain) and its private key, PEM text; both NULL: HTTP. */
    const char *tls_cert_pem;
    const char *tls_key_pem;
};

struct cq_http_server;

int cq_http_start(const struct cq_http_config *cfg, struct cq_http_server **out,
                  struct cq_error *err);
/* The port it listens on (the one picked, for PORT 0). */
uint16_t cq_http_port(const struct cq_http_server *s);
/* Stops listening, waits until every request in progress is answered in full (idle
 * keep-alive connections are closed), frees. NULL is allowed. */
void cq_http_stop(struct cq_http_server *s);

/* ---- the operations endpoints ------------------------------------------------------ */

/* Whether the daemon can serve: 1 ready, 0 not (why says so, for the 503's body). */
typedef int (*cq_ops_ready_fn)(void *ctx, char *why, size_t why_size);

struct cq_ops_config {
    const char *listen;         /* as cq_http_config.listen */
    struct cq_metrics *metrics; /* GET /metrics renders it; NULL: 404 */
    cq_ops_ready_fn ready;      /* GET /readyz; NULL: ready while alive */
    void *ready_ctx;
};

/* GET (or HEAD) /metrics, /healthz (200 while the process answers), /readyz (200, or
 * 503 with the reason); other paths 404, other methods 405. */
int cq_ops_start(const struct cq_ops_config *cfg, struct cq_http_server **out,
                 struct cq_error *err);

#endif
