/* fleet/log.c - structured logs: one JSON object per line on stderr, so that log
 * shippers need no parser. Lines are written with one write(2) each: lines of
 * different threads never interleave. */
#define _GNU_SOURCE
#include "fleet/log.h"
#include "common/utf8.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *component = "codeq";
static enum cq_log_level threshold = CQ_LOG_INFO;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

/* The thread's trace context (cq_log_set_trace). */
static _Thread_local bool trace_on;
static _Thread_local char trace_id[33], span_id[17];

void cq_log_setup(const char *name, const char *level)
{
    component = name;
    threshold = CQ_LOG_INFO;
    /* "off": for command-line tools, whose own messages say what failed. */
    if (level != NULL && strcmp(level, "off") == 0)
        threshold = CQ_LOG_ERROR + 1;
    for (int i = 0; i < 4; i++)
        if (level != NULL && strcmp(level, level_names[i]) == 0)
            threshold = (enum cq_log_level)i;
}

bool cq_log_enabled(enum cq_log_level level)
{
    return level >= threshold;
}

void cq_log_set_trace(const struct cq_tracectx *ctx)
{
    trace_on = ctx != NULL;
    if (ctx != NULL) {
        cq_tracectx_hex(ctx->trace_id, sizeof(ctx->trace_id), trace_id);
        cq_tracectx_hex(ctx->span_id, sizeof(ctx->span_id), span_id);
    }
}

static bool fixed_key(const char *key)
{
    static const char *const fixed[] = {"ts",       "level",   "component", "event",
                                        "trace_id", "span_id", "msg"};
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
        if (strcmp(key, fixed[i]) == 0)
            return true;
    return false;
}

/* Ids and messages quote clients' bytes: invalid UTF-8 becomes U+FFFD rather than
 * costing the line. */
static json_t *text_value(const char *text)
{
    size_t len = strlen(text);
    if (cq_utf8_valid((const uint8_t *)text, len))
        return json_stringn_nocheck(text, len);
    char *clean = cq_utf8_sanitize(text, len);
    json_t *v = clean != NULL ? json_string(clean) : NULL;
    free(clean);
    return v;
}

static void put_field(json_t *line, const struct cq_log_field *f)
{
    json_t *v = NULL;
    switch (f->kind) {
    case CQ_LOG_STR:
        if (f->text != NULL && f->text[0] != '\0')
            v = text_value(f->text);
        break;
    case CQ_LOG_INT:
        v = json_integer((json_int_t)f->number);
        break;
    case CQ_LOG_REAL:
        v = isfinite(f->real) ? json_real(f->real) : NULL;
        break;
    case CQ_LOG_BOOL:
        v = json_boolean(f->number != 0);
        break;
    case CQ_LOG_END:
        break;
    }
    if (v == NULL || f->key == NULL)
        return (void)json_decref(v);
    char renamed[80];
    const char *key = f->key;
    if (fixed_key(key)) {
        snprintf(renamed, sizeof(renamed), "field_%s", key);
        key = renamed;
    }
    json_object_set_new(line, key, v);
}

static void write_line(enum cq_log_level level, const char *event,
                       const struct cq_log_field *fields, const char *msg)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct tm tm;
    gmtime_r(&now.tv_sec, &tm);
    char ts[40];
    snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, now.tv_nsec / 1000000);
    json_t *line = json_pack("{s:s, s:s, s:s, s:s}", "ts", ts, "level", level_names[level],
                             "component", component, "event", event);
    if (line == NULL)
        return;
    for (size_t i = 0; fields != NULL && fields[i].kind != CQ_LOG_END; i++)
        put_field(line, &fields[i]);
    if (trace_on) {
        json_object_set_new(line, "trace_id", json_string(trace_id));
        json_object_set_new(line, "span_id", json_string(span_id));
    }
    json_object_set_new(line, "msg", text_value(msg));
    /* 15 significant digits: a duration rounded to microseconds prints as 8000.742,
     * not with the binary noise of 17 (8000.7420000000002). */
    char *text = json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15));
    json_decref(line);
    if (text == NULL)
        return;
    size_t len = strlen(text);
    text[len] = '\n'; /* replaces the NUL: one write for the whole line */
    ssize_t ignored = write(STDERR_FILENO, text, len + 1);
    (void)ignored;
    free(text);
}

void cq_log_eventv(enum cq_log_level level, const char *event, const struct cq_log_field *fields,
                   const char *fmt, va_list ap)
{
    if (level < threshold)
        return;
    char msg[2048];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    write_line(level, event, fields, msg);
}

void cq_log_event(enum cq_log_level level, const char *event, const struct cq_log_field *fields,
                  const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    cq_log_eventv(level, event, fields, fmt, ap);
    va_end(ap);
}
