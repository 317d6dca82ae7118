/* fleet/trace.h - where one request's time goes, for `codeq-bench-fleet --trace`.
 *
 * A request produced with the header codeq-trace collects a CLOCK_MONOTONIC stamp at each step it
 * passes
 * ("step:microseconds", comma-separated): the dispatcher copies the header onto the
 * forward and the worker onto the final reply, each adding its steps. The stamps only
 * compare on one host (one clock). A request without the header pays a header lookup
 * and nothing else; whatever a client writes there comes back to it, never parsed. */
#ifndef CQ_FLEET_TRACE_H
#define CQ_FLEET_TRACE_H

#include <stdbool.h>
#include <stddef.h>
#include "fleet/kafka.h"
#include "fleet/tracing.h"

#define CQ_TRACE_HEADER "codeq-trace"

struct cq_trace {
    bool on;
    size_t len;
    char text[512];
    /* The request's W3C trace context (fleet/tracing.h), beside the stamps: it travels
     * the same way, so one pointer carries both through the daemons. */
    struct cq_w3c w3c;
};

/* On, with no stamps yet (the client's side). */
void cq_trace_begin(struct cq_trace *t);
/* On when msg has the header, with its stamps; and msg's W3C context looked up. */
void cq_trace_read(struct cq_trace *t, rd_kafka_message_t *msg);
/* Adds a stamp now; nothing when t is NULL or off, or full. */
void cq_trace_stamp(struct cq_trace *t, const char *step);
/* Fills h with t's W3C trace context headers (fleet/tracing.h): 0 to 2 (t NULL: 0). */
size_t cq_trace_w3c_headers(const struct cq_trace *t, struct cq_header *h);
/* Fills h with the trace's header: 1, or 0 when t is NULL or off. */
size_t cq_trace_header(const struct cq_trace *t, struct cq_header *h);

#endif
