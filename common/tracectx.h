/* common/tracectx.h - W3C Trace Context (traceparent, tracestate), level 1.
 *
 * A request that carries a traceparent (a Kafka header, MCP's _meta.traceparent, an
 * HTTP header) is continued, not replaced: each step codeq takes becomes a child span
 * of the caller's. A header that does not parse starts a new trace, as the
 * specification asks, rather than failing the request: tracing must never cost a
 * client its call.
 */
#ifndef CQ_COMMON_TRACECTX_H
#define CQ_COMMON_TRACECTX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CQ_TRACEPARENT_LEN 55  /* "00-" 32 hex "-" 16 hex "-" 2 hex */
#define CQ_TRACESTATE_MAX  512 /* longer ones are dropped, as the specification allows */

struct cq_tracectx {
    uint8_t trace_id[16];
    uint8_t span_id[8]; /* this step's span (its children's parent) */
    uint8_t parent_id[8];
    bool has_parent; /* parent_id is the caller's span */
    uint8_t flags;   /* bit 0: sampled */
    char tracestate[CQ_TRACESTATE_MAX + 1];
};

/* Parses a traceparent, and a tracestate that may be NULL (kept verbatim when it is
 * at most CQ_TRACESTATE_MAX printable characters, dropped otherwise). On success ctx
 * holds the caller's ids (span_id = the caller's span) and 0 is returned; -1 when the
 * header is absent or invalid: all-zero ids, upper-case hex, version ff, a wrong length
 * (a version above 00 may carry more fields after a '-', which are ignored). */
int cq_tracectx_parse(const char *traceparent, const char *tracestate, struct cq_tracectx *ctx);

/* A new trace: random trace and span ids, sampled, no parent. */
void cq_tracectx_new(struct cq_tracectx *ctx);

/* The context of a step inside parent's: the same trace, flags and state, a new span
 * id, parent's span as its parent. parent NULL, or not valid: a new trace. */
void cq_tracectx_child(const struct cq_tracectx *parent, struct cq_tracectx *child);

/* "00-<trace>-<span>-<flags>": out holds CQ_TRACEPARENT_LEN + 1 bytes. */
void cq_tracectx_format(const struct cq_tracectx *ctx, char *out);

/* Lower-case hex of n bytes; out holds 2n + 1. */
void cq_tracectx_hex(const uint8_t *bytes, size_t n, char *out);

#endif
