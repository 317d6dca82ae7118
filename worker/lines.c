/* worker/lines.c - lines from a peer that may be hostile (a kernel's control channel).
 *
 * User code runs in the kernel's own process, so whatever arrives on the control
 * channel may be forged. What the host spends on it must stay proportional to what a
 * cell may legitimately send, whatever the sandbox writes:
 * - memory: a partial line longer than the cap is refused at once, so the buffer never
 *   holds more than the cap plus one read;
 * - CPU: each byte is searched for '\n' once (scanned marks how far), and taking a line
 *   moves a start offset instead of the bytes behind it; the buffer is compacted only
 *   when the taken part is at least as large as what remains, so moves cost O(1) per
 *   byte amortised. A flood of empty lines costs a constant per line, and the caller
 *   stops at the first line that is not a valid reply anyway.
 */
#define _GNU_SOURCE
#include "worker/internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void cq_lines_init(struct cq_lines *l, size_t cap)
{
    memset(l, 0, sizeof(*l));
    l->cap = cap;
}

void cq_lines_free(struct cq_lines *l)
{
    free(l->buf);
    cq_lines_init(l, l->cap);
}

static bool has_line(const struct cq_lines *l)
{
    return l->scanned < l->len && l->buf[l->scanned] == '\n';
}

/* Advances scanned to the next '\n' (or the end), over bytes not searched before. */
static void scan(struct cq_lines *l)
{
    if (l->scanned >= l->len || has_line(l))
        return; /* nothing new (buf may still be NULL), or a line is already found */
    char *nl = memchr(l->buf + l->scanned, '\n', l->len - l->scanned);
    l->scanned = nl != NULL ? (size_t)(nl - l->buf) : l->len;
}

/* Room for n more bytes: compacts first when the taken part is worth moving over. */
static int reserve(struct cq_lines *l, size_t n, struct cq_error *err)
{
    if (l->start > 0 && l->start >= l->len - l->start) {
        memmove(l->buf, l->buf + l->start, l->len - l->start);
        l->len -= l->start;
        l->scanned -= l->start;
        l->start = 0;
    }
    if (l->len + n <= l->alloc)
        return 0;
    size_t want = l->alloc ? l->alloc : 4096;
    while (want < l->len + n)
        want *= 2;
    char *buf = realloc(l->buf, want);
    if (buf == NULL)
        return cq_error_sys(err, ENOMEM, "kernel reply buffer (%zu bytes)", want);
    l->buf = buf;
    l->alloc = want;
    return 0;
}

int cq_lines_feed(struct cq_lines *l, const void *data, size_t n, struct cq_error *err)
{
    if (n == 0)
        return 0;
    if (reserve(l, n, err) < 0)
        return -1;
    memcpy(l->buf + l->len, data, n);
    l->len += n;
    scan(l);
    /* The pending line (from start, no newline yet) may not outgrow the cap: a line
     * that can never be valid is refused as soon as it is known, not when it ends. */
    if (!has_line(l) && l->len - l->start > l->cap)
        return cq_error_set(err, CQ_EPROTO, "a reply line longer than %zu bytes", l->cap);
    return 0;
}

int cq_lines_next(struct cq_lines *l, const char **line, size_t *len, struct cq_error *err)
{
    scan(l);
    if (!has_line(l)) {
        if (l->len - l->start > l->cap)
            return cq_error_set(err, CQ_EPROTO, "a reply line longer than %zu bytes", l->cap);
        return 0;
    }
    size_t n = l->scanned - l->start;
    if (n > l->cap)
        return cq_error_set(err, CQ_EPROTO, "a reply line longer than %zu bytes", l->cap);
    *line = l->buf + l->start;
    *len = n;
    l->start = l->scanned + 1;
    l->scanned = l->start;
    return 1;
}

bool cq_lines_pending(const struct cq_lines *l)
{
    return l->len > l->start;
}
