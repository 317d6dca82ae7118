/* common/tracectx.c - traceparent parsing and new span ids (W3C Trace Context). */
#define _GNU_SOURCE
#include "common/tracectx.h"
#include "common/hex.h"

#include <string.h>
#include <sys/random.h>

/* Lower case only: the specification makes upper case invalid, so that one trace has
 * one spelling. */
static bool parse_hex(const char *s, uint8_t *out, size_t n)
{
    return cq_hex_decode(s, n, out, true);
}

static bool all_zero(const uint8_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (b[i] != 0)
            return false;
    return true;
}

static void keep_state(const char *tracestate, struct cq_tracectx *ctx)
{
    ctx->tracestate[0] = '\0';
    if (tracestate == NULL)
        return;
    size_t len = strlen(tracestate);
    if (len > CQ_TRACESTATE_MAX)
        return;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)tracestate[i] < 0x20 || (unsigned char)tracestate[i] > 0x7e)
            return; /* it travels in headers and logs: no control or non-ASCII bytes */
    memcpy(ctx->tracestate, tracestate, len + 1);
}

int cq_tracectx_parse(const char *traceparent, const char *tracestate, struct cq_tracectx *ctx)
{
    memset(ctx, 0, sizeof(*ctx));
    if (traceparent == NULL)
        return -1;
    size_t len = strlen(traceparent);
    uint8_t version;
    if (len < CQ_TRACEPARENT_LEN || !parse_hex(traceparent, &version, 1) || version == 0xff)
        return -1;
    /* Version 00 is exactly 55 characters; a later version may append fields. */
    if (version == 0 ? len != CQ_TRACEPARENT_LEN
                     : len > CQ_TRACEPARENT_LEN && traceparent[CQ_TRACEPARENT_LEN] != '-')
        return -1;
    const char *p = traceparent;
    if (p[2] != '-' || p[35] != '-' || p[52] != '-')
        return -1;
    if (!parse_hex(p + 3, ctx->trace_id, 16) || !parse_hex(p + 36, ctx->span_id, 8) ||
        !parse_hex(p + 53, &ctx->flags, 1))
        return -1;
    if (all_zero(ctx->trace_id, 16) || all_zero(ctx->span_id, 8)) {
        memset(ctx, 0, sizeof(*ctx));
        return -1;
    }
    keep_state(tracestate, ctx);
    return 0;
}

static void random_nonzero(uint8_t *b, size_t n)
{
    do {
        size_t done = 0;
        while (done < n) {
            ssize_t got = getrandom(b + done, n - done, 0);
            if (got > 0)
                done += (size_t)got; /* else EINTR: the CSPRNG does not fail otherwise */
        }
    } while (all_zero(b, n));
}

void cq_tracectx_new(struct cq_tracectx *ctx)
{
    memset(ctx, 0, sizeof(*ctx));
    random_nonzero(ctx->trace_id, sizeof(ctx->trace_id));
    random_nonzero(ctx->span_id, sizeof(ctx->span_id));
    ctx->flags = 0x01;
}

void cq_tracectx_child(const struct cq_tracectx *parent, struct cq_tracectx *child)
{
    if (parent == NULL || all_zero(parent->trace_id, 16) || all_zero(parent->span_id, 8)) {
        cq_tracectx_new(child);
        return;
    }
    struct cq_tracectx c = *parent;
    memcpy(c.parent_id, parent->span_id, sizeof(c.parent_id));
    c.has_parent = true;
    random_nonzero(c.span_id, sizeof(c.span_id));
    *child = c;
}

void cq_tracectx_hex(const uint8_t *bytes, size_t n, char *out)
{
    cq_hex_encode(bytes, n, out);
}

void cq_tracectx_format(const struct cq_tracectx *ctx, char *out)
{
    memcpy(out, "00-", 3);
    cq_tracectx_hex(ctx->trace_id, 16, out + 3);
    out[35] = '-';
    cq_tracectx_hex(ctx->span_id, 8, out + 36);
    out[52] = '-';
    cq_tracectx_hex(&ctx->flags, 1, out + 53);
}
