/* worker/capture.c - bounded output of one stream of one call: the first `limit`
 * bytes are kept, the rest counted; never an unbounded buffer. */
#define _GNU_SOURCE
#include "worker/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cq_capture_init(struct cq_capture *c, size_t limit)
{
    memset(c, 0, sizeof(*c));
    c->limit = limit;
}

void cq_capture_append(struct cq_capture *c, const char *data, size_t n)
{
    c->total += n;
    size_t room = c->limit - c->len;
    size_t keep = n < room ? n : room;
    char *buf = keep > 0 ? realloc(c->buf, c->len + keep) : NULL;
    if (buf == NULL)
        keep = 0; /* counted, not kept: cq_capture_text()'s truncation note says so */
    if (c->dropped != NULL && n > keep)
        cq_metric_child_add(c->dropped, (double)(n - keep));
    if (keep == 0)
        return;
    memcpy(buf + c->len, data, keep);
    c->buf = buf;
    c->len += keep;
}

void cq_capture_note(struct cq_capture *c, const char *note)
{
    /* Notes are a few short lines written by codeq, never by user code: no limit. */
    char *notes = NULL;
    if (asprintf(&notes, "%s%s", c->notes != NULL ? c->notes : "", note) < 0)
        return;
    free(c->notes);
    c->notes = notes;
}

char *cq_capture_text(const struct cq_capture *c)
{
    char *text = cq_utf8_sanitize(c->buf != NULL ? c->buf : "", c->len);
    if (text == NULL || (c->total == c->len && c->notes == NULL))
        return text;
    char truncated[128] = "";
    if (c->total != c->len)
        snprintf(truncated, sizeof(truncated),
                 "\n[codeq: output truncated, %llu of %llu bytes shown]\n",
                 (unsigned long long)c->len, (unsigned long long)c->total);
    char *noted = NULL;
    if (asprintf(&noted, "%s%s%s", text, truncated, c->notes != NULL ? c->notes : "") < 0)
        return text;
    free(text);
    return noted;
}

void cq_capture_free(struct cq_capture *c)
{
    free(c->buf);
    free(c->notes);
    memset(c, 0, sizeof(*c));
}
