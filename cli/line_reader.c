/* cli/line_reader.c - see line_reader.h. */
#define _GNU_SOURCE
#include "cli/line_reader.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Room kept for one read past the line limit. */
#define READ_ROOM 65536

void cq_line_reader_init(struct cq_line_reader *r, size_t max_line, cq_line_read_fn read, void *ctx)
{
    memset(r, 0, sizeof(*r));
    r->max_line = max_line;
    r->read = read;
    r->ctx = ctx;
}

void cq_line_reader_free(struct cq_line_reader *r)
{
    free(r->buf);
    r->buf = NULL;
}

/* Hands out the bytes before end (the end of the line) and moves past its newline
 * (skip: 1) or the end of the stream (0). */
static int take(struct cq_line_reader *r, size_t end, size_t skip, const char **line, size_t *len)
{
    *line = r->buf + r->start;
    *len = end - r->start;
    r->start = end + skip;
    r->scanned = 0;
    /* The read that completes a line may take it past the limit. */
    bool too_long = r->skipping || *len > r->max_line;
    r->skipping = false;
    return too_long ? -1 : 1;
}

int cq_line_reader_next(struct cq_line_reader *r, const char **line, size_t *len)
{
    for (;;) {
        size_t from = r->start + r->scanned;
        char *nl = r->len > from ? memchr(r->buf + from, '\n', r->len - from) : NULL;
        if (nl != NULL)
            return take(r, (size_t)(nl - r->buf), 1, line, len);
        r->scanned = r->len - r->start; /* memchr never rescans: linear in the line */
        if (r->eof) {
            if (r->len > r->start || r->skipping)
                return take(r, r->len, 0, line, len);
            return 0;
        }
        /* Keep only the unfinished line; drop it while skipping an oversized one. */
        if (r->skipping || r->len - r->start > r->max_line) {
            r->skipping = true;
            r->len = r->start = r->scanned = 0;
        } else if (r->start > 0) {
            memmove(r->buf, r->buf + r->start, r->len - r->start);
            r->len -= r->start;
            r->start = 0;
        }
        if (r->cap - r->len < READ_ROOM) {
            size_t cap = r->cap ? r->cap * 2 : 1 << 20;
            if (cap > r->max_line + 2 * READ_ROOM)
                cap = r->max_line + 2 * READ_ROOM;
            char *bigger = cap > r->cap ? realloc(r->buf, cap) : NULL;
            if (bigger == NULL && r->cap == 0) {
                /* Not even a first buffer: nothing can be read, so the stream ends
                 * here, with one refusal for the line that could not be read. */
                r->eof = true;
                r->skipping = false;
                return -1;
            }
            if (bigger == NULL) {
                /* Out of memory for this line: it is skipped as if too long, in the
                 * buffer there is. */
                r->skipping = true;
                r->len = r->start = r->scanned = 0;
                continue;
            }
            r->buf = bigger;
            r->cap = cap;
        }
        ssize_t n = r->read(r->ctx, r->buf + r->len, r->cap - r->len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            r->eof = true;
        else
            r->len += (size_t)n;
    }
}
