/* fleet/trace.c - see fleet/trace.h. */
#define _GNU_SOURCE
#include "fleet/trace.h"
#include "common/clock.h"
#include "common/units.h"
#include "fleet/kafka.h"

#include <stdio.h>
#include <string.h>

void cq_trace_begin(struct cq_trace *t)
{
    t->on = true;
    t->len = 0;
    t->text[0] = '\0';
    t->w3c.found = t->w3c.on = t->w3c.record = false;
}

void cq_trace_read(struct cq_trace *t, rd_kafka_message_t *msg)
{
    t->on = cq_kafka_header(msg, CQ_TRACE_HEADER, t->text, sizeof(t->text)) != NULL;
    t->len = t->on ? strlen(t->text) : 0;
    if (!t->on)
        t->text[0] = '\0';
    cq_tracing_read(&t->w3c, msg);
}

void cq_trace_stamp(struct cq_trace *t, const char *step)
{
    if (t == NULL || !t->on)
        return;
    /* A full trace keeps its first stamps: a truncated one would misplace the rest. */
    int n = snprintf(t->text + t->len, sizeof(t->text) - t->len, "%s%s:%llu", t->len > 0 ? "," : "",
                     step, (unsigned long long)cq_now_us());
    if (n > 0 && (size_t)n < sizeof(t->text) - t->len)
        t->len += (size_t)n;
    else
        t->text[t->len] = '\0';
}

size_t cq_trace_w3c_headers(const struct cq_trace *t, struct cq_header *h)
{
    return t != NULL ? cq_tracing_headers(&t->w3c, h) : 0;
}

size_t cq_trace_header(const struct cq_trace *t, struct cq_header *h)
{
    if (t == NULL || !t->on)
        return 0;
    *h = (struct cq_header){CQ_TRACE_HEADER, t->text};
    return 1;
}
