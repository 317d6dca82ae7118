/* http/otlp.c - the span exporter: a bounded queue and a thread that posts batches.
 *
 * A submitted span is copied into one flat allocation (the caller's strings need not
 * outlive the call) and nothing more: turning it into OTLP's JSON takes a few
 * microseconds of jansson allocations a span, which measured at 4-5 % of a whole
 * executeCode round trip through codeq mcp when done on the caller's thread. The
 * exporter thread takes up to a batch at a time under the lock, and builds and sends it
 * without the lock, with libcurl and a hard timeout. A failed export is dropped, not retried: the
 * queue's bound is what keeps a dead collector from costing memory, and a retry would only hold
 * newer spans back behind older ones.
 */
#include "http/otlp.h"

#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DEFAULT_MAX_QUEUE   4096
#define DEFAULT_MAX_BATCH   512
#define DEFAULT_INTERVAL_MS 1000
#define DEFAULT_TIMEOUT_MS  2000

/* Copies of a span's texts: longer ones are cut (a span's attribute is for finding a
 * request, not for carrying its output). */
#define QUEUED_NAME 64
#define QUEUED_KEY  48
#define QUEUED_TEXT 160

struct queued_span {
    struct cq_tracectx ctx;
    char name[QUEUED_NAME];
    enum cq_span_kind kind;
    uint64_t start_unix_ns, end_unix_ns;
    bool error;
    char error_message[QUEUED_TEXT];
    struct {
        char key[QUEUED_KEY];
        bool is_text;
        char text[QUEUED_TEXT];
        int64_t number;
    } attrs[CQ_SPAN_MAX_ATTRS];
    size_t n_attrs;
};

struct cq_tracer {
    char *endpoint;
    char *service_name;
    size_t max_queue;
    unsigned max_batch, interval_ms, timeout_ms;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    struct queued_span **queue; /* a ring of max_queue spans */
    struct queued_span **batch; /* max_batch: the one being sent (the exporter's own) */
    size_t head, count;
    bool stopping;
    pthread_t thread;
    struct cq_tracer_stats stats; /* guarded by lock */
    struct cq_metric_child *m_exported, *m_full, *m_failed;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

/* curl_global_init is not thread-safe: once per process, before any thread uses it. */
static void init_curl(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static json_t *attribute(const char *key, json_t *value)
{
    return json_pack("{s:s, s:o}", "key", key, "value", value);
}

static json_t *span_json(const struct queued_span *s)
{
    char trace[33], span[17], parent[17], start[24], end[24];
    cq_tracectx_hex(s->ctx.trace_id, 16, trace);
    cq_tracectx_hex(s->ctx.span_id, 8, span);
    /* 64-bit integers travel as decimal strings in OTLP's JSON (protobuf's mapping), so
     * that no reader rounds them through a double. */
    snprintf(start, sizeof(start), "%llu", (unsigned long long)s->start_unix_ns);
    snprintf(end, sizeof(end), "%llu", (unsigned long long)s->end_unix_ns);
    json_t *attrs = json_array();
    for (size_t i = 0; i < s->n_attrs && attrs != NULL; i++) {
        json_t *v;
        if (s->attrs[i].is_text) {
            v = json_pack("{s:s}", "stringValue", s->attrs[i].text);
        } else {
            char n[24];
            snprintf(n, sizeof(n), "%lld", (long long)s->attrs[i].number);
            v = json_pack("{s:s}", "intValue", n);
        }
        json_array_append_new(attrs, attribute(s->attrs[i].key, v));
    }
    json_t *o =
        json_pack("{s:s, s:s, s:s, s:i, s:s, s:s, s:o}", "traceId", trace, "spanId", span, "name",
                  s->name, "kind", (int)s->kind, "startTimeUnixNano", start, "endTimeUnixNano", end,
                  "attributes", attrs != NULL ? attrs : json_array());
    if (o == NULL)
        return NULL;
    if (s->ctx.has_parent) {
        cq_tracectx_hex(s->ctx.parent_id, 8, parent);
        json_object_set_new(o, "parentSpanId", json_string(parent));
    }
    if (s->ctx.tracestate[0] != '\0')
        json_object_set_new(o, "traceState", json_string(s->ctx.tracestate));
    /* OTLP's status codes: 1 OK, 2 ERROR (0, unset, is left out). */
    if (s->error)
        json_object_set_new(o, "status",
                            json_pack("{s:i, s:s}", "code", 2, "message", s->error_message));
    return o;
}

/* Copies text into out (size bytes), cut at a UTF-8 character boundary: the exporter's
 * JSON must stay valid. */
static void copy_text(char *out, size_t size, const char *text)
{
    size_t n = text != NULL ? strlen(text) : 0;
    if (n >= size) {
        n = size - 1;
        while (n > 0 && ((unsigned char)text[n] & 0xC0) == 0x80)
            n--; /* text[n] would continue a character cut short */
    }
    if (n > 0)
        memcpy(out, text, n);
    out[n] = '\0';
}

static struct queued_span *queue_copy(const struct cq_span *span)
{
    struct queued_span *q = malloc(sizeof(*q));
    if (q == NULL)
        return NULL;
    q->ctx = *span->ctx;
    copy_text(q->name, sizeof(q->name), span->name);
    q->kind = span->kind;
    q->start_unix_ns = span->start_unix_ns;
    q->end_unix_ns = span->end_unix_ns;
    q->error = span->error;
    copy_text(q->error_message, sizeof(q->error_message), span->error_message);
    q->n_attrs = 0;
    for (size_t i = 0; i < span->n_attrs && i < CQ_SPAN_MAX_ATTRS; i++) {
        const struct cq_span_attr *a = &span->attrs[i];
        copy_text(q->attrs[i].key, sizeof(q->attrs[i].key), a->key);
        q->attrs[i].is_text = a->text != NULL;
        q->attrs[i].text[0] = '\0';
        if (a->text != NULL)
            copy_text(q->attrs[i].text, sizeof(q->attrs[i].text), a->text);
        q->attrs[i].number = a->number;
        q->n_attrs++;
    }
    return q;
}

void cq_tracer_submit(struct cq_tracer *t, const struct cq_span *span)
{
    if (t == NULL || span == NULL || span->ctx == NULL)
        return;
    struct queued_span *o = queue_copy(span);
    pthread_mutex_lock(&t->lock);
    if (o == NULL || t->count == t->max_queue || t->stopping) {
        t->stats.dropped_full++;
        /* Under the lock: cq_tracer_set_metrics(t, NULL) may be detaching a registry
         * that is about to be freed. */
        if (t->m_full != NULL)
            cq_metric_child_add(t->m_full, 1);
        pthread_mutex_unlock(&t->lock);
        free(o);
        return;
    }
    t->queue[(t->head + t->count) % t->max_queue] = o;
    t->count++;
    if (t->count >= t->max_batch)
        pthread_cond_signal(&t->wake);
    pthread_mutex_unlock(&t->lock);
}

static size_t discard_body(char *data, size_t size, size_t n, void *ctx)
{
    (void)data;
    (void)ctx;
    return size * n;
}

/* Posts one batch; true when the collector took it (2xx). */
static bool post(struct cq_tracer *t, json_t *spans)
{
    json_t *resource =
        json_pack("{s:[o]}", "attributes",
                  attribute("service.name", json_pack("{s:s}", "stringValue", t->service_name)));
    json_t *body = json_pack("{s:[{s:o, s:[{s:{s:s}, s:o}]}]}", "resourceSpans", "resource",
                             resource, "scopeSpans", "scope", "name", "codeq", "spans", spans);
    char *text = body != NULL ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (text == NULL)
        return false;
    bool ok = false;
    CURL *c = curl_easy_init();
    struct curl_slist *headers = curl_slist_append(NULL, "Content-Type: application/json");
    if (c != NULL && headers != NULL) {
        curl_easy_setopt(c, CURLOPT_URL, t->endpoint);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, text);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(text));
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)t->timeout_ms);
        curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)t->timeout_ms);
        /* No signals from libcurl (it runs on a thread of a daemon with its own
         * handlers), no redirects to somewhere else, http and https only. */
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
#if LIBCURL_VERSION_NUM >= 0x075500
        curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
#endif
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard_body);
        long status = 0;
        if (curl_easy_perform(c) == CURLE_OK &&
            curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status) == CURLE_OK)
            ok = status >= 200 && status < 300;
    }
    curl_slist_free_all(headers);
    curl_easy_cleanup(c);
    free(text);
    return ok;
}

static void *export_main(void *arg)
{
    struct cq_tracer *t = arg;
    pthread_mutex_lock(&t->lock);
    for (;;) {
        if (t->count < t->max_batch && !t->stopping) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_sec += t->interval_ms / 1000;
            until.tv_nsec += (long)(t->interval_ms % 1000) * 1000000L;
            if (until.tv_nsec >= 1000000000L) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&t->wake, &t->lock, &until);
        }
        if (t->count == 0) {
            if (t->stopping)
                break;
            continue;
        }
        size_t n = 0;
        while (t->count > 0 && n < t->max_batch) {
            t->batch[n++] = t->queue[t->head];
            t->queue[t->head] = NULL;
            t->head = (t->head + 1) % t->max_queue;
            t->count--;
        }
        pthread_mutex_unlock(&t->lock);
        json_t *spans = json_array();
        for (size_t i = 0; i < n; i++) {
            if (spans != NULL)
                json_array_append_new(spans, span_json(t->batch[i]));
            free(t->batch[i]);
            t->batch[i] = NULL;
        }
        bool ok = spans != NULL && post(t, spans);
        pthread_mutex_lock(&t->lock);
        struct cq_metric_child *m = ok ? t->m_exported : t->m_failed;
        if (m != NULL)
            cq_metric_child_add(m, (double)n);
        if (ok) {
            t->stats.exported += n;
        } else {
            t->stats.dropped_error += n;
            /* Stopping with the collector unreachable: one timeout is the most a
             * shutdown waits for it, not one per batch left. */
            if (t->stopping && t->count > 0) {
                if (t->m_failed != NULL)
                    cq_metric_child_add(t->m_failed, (double)t->count);
                t->stats.dropped_error += t->count;
                while (t->count > 0) {
                    free(t->queue[t->head]);
                    t->queue[t->head] = NULL;
                    t->head = (t->head + 1) % t->max_queue;
                    t->count--;
                }
            }
        }
    }
    pthread_mutex_unlock(&t->lock);
    return NULL;
}

int cq_tracer_create(const struct cq_tracer_config *cfg, struct cq_tracer **out,
                     struct cq_error *err)
{
    if (cfg->endpoint == NULL ||
        (strncmp(cfg->endpoint, "http://", 7) != 0 && strncmp(cfg->endpoint, "https://", 8) != 0))
        return cq_error_set(err, CQ_EINVALID,
                            "the OTLP endpoint '%s' is not an http:// or https:// URL",
                            cfg->endpoint != NULL ? cfg->endpoint : "");
    pthread_once(&curl_once, init_curl);
    if (curl_init_rc != CURLE_OK)
        return cq_error_set(err, CQ_EINTERNAL, "libcurl: %s", curl_easy_strerror(curl_init_rc));
    struct cq_tracer *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return cq_error_sys(err, ENOMEM, "tracer");
    t->max_queue = cfg->max_queue ? cfg->max_queue : DEFAULT_MAX_QUEUE;
    t->max_batch = cfg->max_batch ? cfg->max_batch : DEFAULT_MAX_BATCH;
    t->interval_ms = cfg->interval_ms ? cfg->interval_ms : DEFAULT_INTERVAL_MS;
    t->timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : DEFAULT_TIMEOUT_MS;
    t->endpoint = strdup(cfg->endpoint);
    t->service_name = strdup(cfg->service_name != NULL ? cfg->service_name : "codeq");
    t->queue = calloc(t->max_queue, sizeof(*t->queue));
    t->batch = calloc(t->max_batch, sizeof(*t->batch));
    if (t->endpoint == NULL || t->service_name == NULL || t->queue == NULL || t->batch == NULL) {
        free(t->endpoint);
        free(t->service_name);
        free(t->queue);
        free(t->batch);
        free(t);
        return cq_error_sys(err, ENOMEM, "tracer");
    }
    pthread_mutex_init(&t->lock, NULL);
    if (cfg->metrics != NULL)
        cq_tracer_set_metrics(t, cfg->metrics, err);
    pthread_cond_init(&t->wake, NULL);
    int rc = pthread_create(&t->thread, NULL, export_main, t);
    if (rc != 0) {
        pthread_mutex_destroy(&t->lock);
        pthread_cond_destroy(&t->wake);
        free(t->endpoint);
        free(t->service_name);
        free(t->queue);
        free(t->batch);
        free(t);
        return cq_error_sys(err, rc, "start the span exporter");
    }
    *out = t;
    return 0;
}

int cq_tracer_set_metrics(struct cq_tracer *t, struct cq_metrics *metrics, struct cq_error *err)
{
    if (metrics == NULL) {
        pthread_mutex_lock(&t->lock);
        t->m_exported = t->m_full = t->m_failed = NULL;
        pthread_mutex_unlock(&t->lock);
        return 0;
    }
    struct cq_metric *exported =
        cq_metrics_counter(metrics, "codeq_trace_spans_exported_total",
                           "Spans the OTLP collector accepted.", NULL, err);
    struct cq_metric *dropped =
        cq_metrics_counter(metrics, "codeq_trace_spans_dropped_total",
                           "Spans dropped: the queue was full, or their export failed.",
                           (const char *[]){"reason", NULL}, err);
    if (exported == NULL || dropped == NULL)
        return -1;
    struct cq_metric_child *e = cq_metric_child(exported, NULL);
    struct cq_metric_child *f = cq_metric_child(dropped, (const char *[]){"queue_full"});
    struct cq_metric_child *x = cq_metric_child(dropped, (const char *[]){"export_failed"});
    if (e == NULL || f == NULL || x == NULL)
        return cq_error_set(err, CQ_EINTERNAL, "the tracer's metrics");
    /* The counts since the tracer started: a registry made later still tells them all. */
    pthread_mutex_lock(&t->lock);
    cq_metric_child_add(e, (double)t->stats.exported);
    cq_metric_child_add(f, (double)t->stats.dropped_full);
    cq_metric_child_add(x, (double)t->stats.dropped_error);
    t->m_exported = e;
    t->m_full = f;
    t->m_failed = x;
    pthread_mutex_unlock(&t->lock);
    return 0;
}

void cq_tracer_stats(struct cq_tracer *t, struct cq_tracer_stats *out)
{
    pthread_mutex_lock(&t->lock);
    *out = t->stats;
    pthread_mutex_unlock(&t->lock);
}

void cq_tracer_finish(struct cq_tracer *t, struct cq_tracer_stats *out)
{
    if (t == NULL) {
        *out = (struct cq_tracer_stats){0};
        return;
    }
    pthread_mutex_lock(&t->lock);
    t->stopping = true;
    pthread_cond_signal(&t->wake);
    pthread_mutex_unlock(&t->lock);
    pthread_join(t->thread, NULL);
    *out = t->stats;
    for (size_t i = 0; i < t->count; i++)
        free(t->queue[(t->head + i) % t->max_queue]);
    pthread_mutex_destroy(&t->lock);
    pthread_cond_destroy(&t->wake);
    free(t->endpoint);
    free(t->service_name);
    free(t->queue);
    free(t->batch);
    free(t);
}

void cq_tracer_destroy(struct cq_tracer *t)
{
    struct cq_tracer_stats st;
    cq_tracer_finish(t, &st);
}
