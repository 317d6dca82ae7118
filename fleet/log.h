/* fleet/log.h - logs: one JSON object per line on stderr.
 *
 * A line is an event: a fixed name per kind of line ("event":"session_moved"), the ids
 * it concerns as fields of their own (session_id, request_id, worker_id, tenant, ...),
 * and a message for people. Ids never live only in the message: an operator filters
 * on fields, and a log shipper needs no parser. The trace context of the thread
 * (cq_log_set_trace) adds trace_id and span_id to every line it writes.
 */
#ifndef CQ_FLEET_LOG_H
#define CQ_FLEET_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include "common/tracectx.h"

enum cq_log_level { CQ_LOG_DEBUG, CQ_LOG_INFO, CQ_LOG_WARN, CQ_LOG_ERROR };

/* level: debug, info, warn, error or off (NULL: info). */
void cq_log_setup(const char *component, const char *level);
/* Whether a line at level would be written (to skip building costly fields). */
bool cq_log_enabled(enum cq_log_level level);

enum cq_log_kind { CQ_LOG_END, CQ_LOG_STR, CQ_LOG_INT, CQ_LOG_REAL, CQ_LOG_BOOL };

struct cq_log_field {
    enum cq_log_kind kind; /* CQ_LOG_END ends a list */
    const char *key;
    const char *text; /* CQ_LOG_STR; NULL or "": the field is left out */
    int64_t number;   /* CQ_LOG_INT, CQ_LOG_BOOL */
    double real;      /* CQ_LOG_REAL */
};

#define CQ_LS(k, v) ((struct cq_log_field){.kind = CQ_LOG_STR, .key = (k), .text = (v)})
#define CQ_LI(k, v) ((struct cq_log_field){.kind = CQ_LOG_INT, .key = (k), .number = (int64_t)(v)})
#define CQ_LR(k, v) ((struct cq_log_field){.kind = CQ_LOG_REAL, .key = (k), .real = (double)(v)})
#define CQ_LB(k, v) ((struct cq_log_field){.kind = CQ_LOG_BOOL, .key = (k), .number = (v) ? 1 : 0})
/* A field list for cq_log_event: CQ_FIELDS(CQ_LS("session_id", id), CQ_LI("fence", f)). */
#define CQ_FIELDS(...) ((const struct cq_log_field[]){__VA_ARGS__, {.kind = CQ_LOG_END}})
#define CQ_NO_FIELDS   ((const struct cq_log_field *)0)

/* Writes {"ts","level","component","event", fields..., "trace_id","span_id","msg"} as
 * one line with one write(2) (lines of different threads never interleave). A field
 * named like one of the fixed keys is written as "field_<key>" rather than replacing
 * it. The message is for people; it may repeat ids, but every id is also a field. */
void cq_log_event(enum cq_log_level level, const char *event, const struct cq_log_field *fields,
                  const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* The same with the message's arguments as a va_list, for wrappers that add fields. */
void cq_log_eventv(enum cq_log_level level, const char *event, const struct cq_log_field *fields,
                   const char *fmt, va_list ap) __attribute__((format(printf, 4, 0)));

/* The trace context lines written by this thread carry (trace_id, span_id), until
 * cleared with NULL. The context is copied. */
void cq_log_set_trace(const struct cq_tracectx *ctx);

#endif
