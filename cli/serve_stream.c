/* cli/serve_stream.c - InvokeCodeInterpreter's answer as an event stream: the call's
 * result as one `result` event (what every client expects), and, when the request asks
 * for it (x-codeq-stream: output), its output as further `result` events while it runs.
 *
 * A streamed call runs on two threads of its own, as the response's body is sent only
 * after the handler returned: the runner makes the call and then writes the final
 * event; the writer turns the output gathered meanwhile into chunk events (what came
 * within GATHER_MS of a first piece makes one event per stream). The backend
 * hands output over on its own threads (in front of a fleet, the one reading every
 * call's replies), so gathering never waits: past MAX_PENDING bytes not yet written
 * (a client that reads slowly), output is dropped from the chunks and a note says how
 * much; the final result still holds it. The HTTP stream itself holds at most its
 * max_buffered bytes and cuts a client that reads nothing for its write timeout.
 *
 * A client that goes away does not cut the call short (as one that does not stream):
 * the call runs to its end and what it would have been sent is dropped. The server
 * waits for its streamed calls before it lets go of the backend.
 */
#define _GNU_SOURCE
#include "cli/mcp_trace.h"
#include "cli/result_json.h"
#include "cli/serve.h"
#include "common/utf8.h"
#include "http/eventstream.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Output gathered and not yet written, per call: beyond it, output is left out of the
 * chunks (never out of the result). */
#define MAX_PENDING (1024 * 1024)
/* A chunk event carries at most this much output, keeping events small next to the
 * event stream's 16 MiB limit whatever JSON escaping makes of them. */
#define MAX_CHUNK (64 * 1024)
/* Output that comes in bursts (a print is its text, then its newline) is gathered this
 * long into one event, rather than making an event of every write. */
#define GATHER_MS 50

int cq_serve_run_invoke(struct cq_backend *b, const char *session, const char *tool,
                        const struct cq_invoke_args *args, json_t *trace_params,
                        cq_stream_fn on_output, void *ctx, uint8_t **frame, size_t *frame_len,
                        struct cq_error *err)
{
    struct cq_mcp_trace trace;
    cq_mcp_trace_begin(&trace, trace_params);
    struct cq_result r;
    cq_result_init(&r);
    cq_backend_invoke(b, session, tool, args, on_output, ctx, &r);
    json_t *result = cq_result_to_json(&r);
    cq_result_free(&r);
    cq_mcp_trace_end(&trace, tool, result);
    char *text = result != NULL ? json_dumps(result, JSON_COMPACT | CQ_JSON_REALS) : NULL;
    json_decref(result);
    int rc = text != NULL ? cq_es_encode_event("result", text, strlen(text), frame, frame_len, err)
                          : cq_error_set(err, CQ_EINTERNAL, "out of memory");
    free(text);
    if (rc == 0)
        return 0;
    /* Past the event stream's limits (a result over 16 MiB): the stream's own
     * exception, which botocore raises while reading. */
    char msg[512];
    json_t *m = json_pack("{s:s}", "message", err->msg);
    char *mt = m != NULL ? json_dumps(m, JSON_COMPACT) : NULL;
    json_decref(m);
    snprintf(msg, sizeof(msg), "%s", mt != NULL ? mt : "{}");
    free(mt);
    return cq_es_encode_exception(err->code == CQ_ELIMIT ? "serviceQuotaExceededException"
                                                         : "internalServerException",
                                  msg, strlen(msg), frame, frame_len, err);
}

/* ---- the streamed call --------------------------------------------------------------- */

/* Output as it came, one piece per on_output. */
struct piece {
    struct piece *next;
    int stream; /* 1 stdout, 2 stderr */
    size_t len;
    char data[];
};

struct streamed {
    struct cq_serve_streams *g;
    struct cq_backend *backend;
    char session[CQ_SESSION_ID_MAX + 1];
    const char *tool; /* static (cq_tool_names) */
    struct cq_mcp_call_args args;
    json_t *trace_params;
    struct cq_http_stream *st;
    pthread_mutex_t lock; /* the fields below */
    pthread_cond_t changed;
    struct piece *head, **tail;
    size_t pending;   /* bytes in the pieces */
    size_t dropped;   /* bytes left out of the chunks since the last note */
    bool done;        /* the call returned: no more output */
    bool gone;        /* the stream is closed: output is not kept */
    char carry[2][4]; /* per stream, a character's first bytes waiting for the rest */
    size_t carry_len[2];
};

/* The backend's on_output (its threads): kept for the writer, never waiting. */
static void gather(void *ctx, int stream, const char *data, size_t len)
{
    struct streamed *c = ctx;
    if (len == 0 || (stream != 1 && stream != 2))
        return;
    pthread_mutex_lock(&c->lock);
    struct piece *p = NULL;
    if (!c->gone && c->pending + len <= MAX_PENDING)
        p = malloc(sizeof(*p) + len);
    if (p != NULL) {
        p->next = NULL;
        p->stream = stream;
        p->len = len;
        memcpy(p->data, data, len);
        *c->tail = p;
        c->tail = &p->next;
        c->pending += len;
        if (c->head == p || (c->pending >= MAX_CHUNK && c->pending - len < MAX_CHUNK))
            pthread_cond_signal(&c->changed);
    } else if (!c->gone) {
        c->dropped += len;
        pthread_cond_signal(&c->changed);
    }
    pthread_mutex_unlock(&c->lock);
}

/* One chunk event: text (valid UTF-8, NUL-terminated) as content and as the stream's
 * field of structuredContent; no isError and no exitCode, which only the final result
 * has. -1 when the stream is closed. */
static int write_chunk(struct streamed *c, int stream, const char *text)
{
    json_t *ev = json_pack("{s:[{s:s, s:s}], s:{s:s}}", "content", "type", "text", "text", text,
                           "structuredContent", stream == 2 ? "stderr" : "stdout", text);
    char *json = ev != NULL ? json_dumps(ev, JSON_COMPACT) : NULL;
    json_decref(ev);
    uint8_t *frame = NULL;
    size_t len = 0;
    struct cq_error err;
    int rc =
        json != NULL ? cq_es_encode_event("result", json, strlen(json), &frame, &len, &err) : -1;
    free(json);
    /* An event that cannot be made (out of memory) is left out, as dropped output is. */
    if (rc == 0)
        rc = cq_http_stream_write(c->st, frame, len, &err);
    else
        rc = 0;
    free(frame);
    return rc;
}

/* Output of one stream, after what it carried: written in chunks of whole characters,
 * a split character's first bytes carried to its next output (or, with flush, written
 * as they are). */
static int write_output(struct streamed *c, int stream, const char *data, size_t len, bool flush)
{
    size_t *carry_len = &c->carry_len[stream - 1];
    char *buf = malloc(*carry_len + len + 1);
    if (buf == NULL)
        return 0;
    memcpy(buf, c->carry[stream - 1], *carry_len);
    if (len > 0)
        memcpy(buf + *carry_len, data, len);
    size_t total = *carry_len + len;
    size_t whole = flush ? total : cq_utf8_whole_prefix(buf, total);
    *carry_len = total - whole;
    memcpy(c->carry[stream - 1], buf + whole, *carry_len);
    int rc = 0;
    for (size_t off = 0; rc == 0 && off < whole;) {
        size_t n = whole - off < MAX_CHUNK ? whole - off : MAX_CHUNK;
        size_t cut = n < whole - off ? cq_utf8_whole_prefix(buf + off, n) : n;
        if (cut > 0)
            n = cut;
        char *text = cq_utf8_sanitize(buf + off, n);
        if (text != NULL)
            rc = write_chunk(c, stream, text);
        free(text);
        off += n;
    }
    free(buf);
    return rc;
}

/* The writer's thread: the output gathered, as chunk events, until the call is done
 * and all of it is written (or the stream closed). */
static void *writer_main(void *arg)
{
    struct streamed *c = arg;
    pthread_mutex_lock(&c->lock);
    for (;;) {
        while (c->head == NULL && c->dropped == 0 && !c->done)
            pthread_cond_wait(&c->changed, &c->lock);
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_nsec += GATHER_MS * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        int waited = 0;
        while (!c->done && c->pending < MAX_CHUNK && waited != ETIMEDOUT)
            waited = pthread_cond_timedwait(&c->changed, &c->lock, &until);
        struct piece *list = c->head;
        size_t dropped = c->dropped;
        bool done = c->done;
        c->head = NULL;
        c->tail = &c->head;
        c->pending = 0;
        c->dropped = 0;
        bool gone = c->gone;
        pthread_mutex_unlock(&c->lock);
        int rc = gone ? -1 : 0;
        while (list != NULL) {
            struct piece *p = list;
            list = p->next;
            if (rc == 0)
                rc = write_output(c, p->stream, p->data, p->len, false);
            free(p);
        }
        if (rc == 0 && dropped > 0) {
            char note[200];
            snprintf(note, sizeof(note),
                     "[codeq: %zu bytes of output not streamed (the client reads too slowly); "
                     "the result holds them]\n",
                     dropped);
            rc = write_chunk(c, 2, note); /* apart from a character stderr carries */
        }
        for (int s = 1; rc == 0 && done && s <= 2; s++)
            if (c->carry_len[s - 1] > 0)
                rc = write_output(c, s, NULL, 0, true);
        pthread_mutex_lock(&c->lock);
        if (rc < 0)
            c->gone = true;
        if (done)
            break;
    }
    pthread_mutex_unlock(&c->lock);
    return NULL;
}

static void *runner_main(void *arg)
{
    struct streamed *c = arg;
    pthread_t writer;
    bool writing = pthread_create(&writer, NULL, writer_main, c) == 0;
    uint8_t *frame = NULL;
    size_t len = 0;
    struct cq_error err;
    int rc = cq_serve_run_invoke(c->backend, c->session, c->tool, &c->args.invoke, c->trace_params,
                                 writing ? gather : NULL, c, &frame, &len, &err);
    pthread_mutex_lock(&c->lock);
    c->done = true;
    pthread_cond_signal(&c->changed);
    pthread_mutex_unlock(&c->lock);
    if (writing)
        pthread_join(writer, NULL);
    /* The final result, as a call that does not stream gets it; a write to a closed
     * stream fails and is dropped. */
    if (rc == 0 && !c->gone)
        cq_http_stream_write(c->st, frame, len, &err);
    free(frame);
    cq_http_stream_end(c->st);
    cq_mcp_call_args_free(&c->args);
    json_decref(c->trace_params);
    pthread_cond_destroy(&c->changed);
    pthread_mutex_destroy(&c->lock);
    struct cq_serve_streams *g = c->g;
    free(c);
    pthread_mutex_lock(&g->lock);
    if (--g->running == 0)
        pthread_cond_broadcast(&g->idle);
    pthread_mutex_unlock(&g->lock);
    return NULL;
}

void cq_serve_invoke_streamed(struct cq_serve_streams *g, struct cq_backend *b, const char *session,
                              const char *tool, struct cq_mcp_call_args *args, json_t *trace_params,
                              struct cq_http_response *resp)
{
    struct streamed *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        cq_mcp_call_args_free(args);
        json_decref(trace_params);
        cq_serve_fail(resp, "InternalServerException", NULL, "out of memory");
        return;
    }
    c->g = g;
    c->backend = b;
    snprintf(c->session, sizeof(c->session), "%s", session);
    c->tool = tool;
    c->args = *args;
    c->trace_params = trace_params;
    c->tail = &c->head;
    pthread_mutex_init(&c->lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&c->changed, &attr);
    pthread_condattr_destroy(&attr);
    resp->status = 200;
    resp->content_type = "application/vnd.amazon.eventstream";
    cq_http_add_header(resp, CQ_SERVE_SESSION_HEADER, session);
    /* The response's defaults bound it: 1 MiB not yet sent, a client that reads nothing
     * for 30 s cut off. */
    c->st = cq_http_respond_stream(resp, NULL);
    pthread_attr_t pa;
    pthread_t runner;
    bool started = false;
    if (c->st != NULL) {
        pthread_mutex_lock(&g->lock);
        g->running++;
        pthread_mutex_unlock(&g->lock);
        pthread_attr_init(&pa);
        pthread_attr_setdetachstate(&pa, PTHREAD_CREATE_DETACHED);
        started = pthread_create(&runner, &pa, runner_main, c) == 0;
        pthread_attr_destroy(&pa);
        if (!started) {
            pthread_mutex_lock(&g->lock);
            if (--g->running == 0)
                pthread_cond_broadcast(&g->idle);
            pthread_mutex_unlock(&g->lock);
            /* The stream's own exception: the call did not run. */
            static const char busy[] = "{\"message\":\"cannot start the call: out of threads\"}";
            uint8_t *frame = NULL;
            size_t len = 0;
            struct cq_error err;
            if (cq_es_encode_exception("throttlingException", busy, strlen(busy), &frame, &len,
                                       &err) == 0)
                cq_http_stream_write(c->st, frame, len, &err);
            free(frame);
            cq_http_stream_end(c->st);
        }
    }
    if (!started) {
        cq_mcp_call_args_free(&c->args);
        json_decref(c->trace_params);
        pthread_cond_destroy(&c->changed);
        pthread_mutex_destroy(&c->lock);
        free(c);
    }
}

void cq_serve_streams_init(struct cq_serve_streams *g)
{
    g->running = 0;
    pthread_mutex_init(&g->lock, NULL);
    pthread_cond_init(&g->idle, NULL);
}

void cq_serve_streams_destroy(struct cq_serve_streams *g)
{
    pthread_mutex_lock(&g->lock);
    while (g->running > 0)
        pthread_cond_wait(&g->idle, &g->lock);
    pthread_mutex_unlock(&g->lock);
    pthread_cond_destroy(&g->idle);
    pthread_mutex_destroy(&g->lock);
}
