/* worker/capture.c - bounded output of one stream of one call.
 *
 * The first half of the limit keeps the start of the output, a ring of the other half
 * its end: a program that prints too much usually says what went wrong last, so the
 * tail is worth as much as the head. What falls out between them is counted (bytes and
 * line breaks) for the note that takes its place. Memory stays bounded by the limit
 * whatever the program writes; the ring grows as it fills, so a short output costs
 * what it is. */
#define _GNU_SOURCE
#include "worker/internal.h"
#include "common/cleanup.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cq_capture_init(struct cq_capture *c, size_t limit)
{
    memset(c, 0, sizeof(*c));
    c->limit = limit;
    c->head_cap = limit - limit / 2;
}

static uint64_t count_lines(const char *p, size_t n)
{
    uint64_t lines = 0;
    for (const char *end = p + n; p < end;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (nl == NULL)
            break;
        lines++;
        p = nl + 1;
    }
    return lines;
}

/* Line breaks among the ring's n oldest bytes (before they make way). */
static uint64_t ring_lines(const struct cq_capture *c, size_t n)
{
    if (n == 0)
        return 0;
    size_t first = c->tail_alloc - c->tail_start;
    if (first > n)
        first = n;
    return count_lines(c->tail + c->tail_start, first) + count_lines(c->tail, n - first);
}

/* Makes room for want bytes in the ring (never past its cap). false: out of memory. */
static bool ring_reserve(struct cq_capture *c, size_t want)
{
    size_t cap = c->limit - c->head_cap;
    if (want > cap)
        want = cap;
    if (want <= c->tail_alloc)
        return true;
    size_t alloc = c->tail_alloc ? c->tail_alloc * 2 : 4096;
    if (alloc < want)
        alloc = want;
    if (alloc > cap)
        alloc = cap;
    char *tail = realloc(c->tail, alloc);
    if (tail == NULL)
        return false;
    /* The ring wraps only once it is full, at its cap: a ring that grows is linear. */
    c->tail = tail;
    c->tail_alloc = alloc;
    return true;
}

/* Puts n bytes at the ring's end, dropping (and counting) its oldest bytes once full. */
static void ring_put(struct cq_capture *c, const char *data, size_t n)
{
    size_t cap = c->limit - c->head_cap;
    if (cap == 0 || n == 0) {
        c->cut_lines += count_lines(data, n);
        return;
    }
    if (n >= cap) {
        /* All the ring held and the start of data are dropped. */
        c->cut_lines += count_lines(data, n - cap) + ring_lines(c, c->tail_len);
        if (!ring_reserve(c, cap)) {
            c->cut_lines += count_lines(data + n - cap, cap);
            c->tail_len = c->tail_start = 0;
            return;
        }
        memcpy(c->tail, data + n - cap, cap);
        c->tail_len = cap;
        c->tail_start = 0;
        return;
    }
    if (!ring_reserve(c, c->tail_len + n)) {
        c->cut_lines += count_lines(data, n);
        return;
    }
    if (c->tail_len + n <= c->tail_alloc && c->tail_start == 0) {
        memcpy(c->tail + c->tail_len, data, n);
        c->tail_len += n;
        return;
    }
    /* Full (tail_alloc == cap): the oldest bytes make way, counted before they go. */
    size_t evict = c->tail_len + n - cap;
    c->cut_lines += ring_lines(c, evict);
    size_t pos = (c->tail_start + c->tail_len) % cap;
    size_t first = n < cap - pos ? n : cap - pos;
    memcpy(c->tail + pos, data, first);
    memcpy(c->tail, data + first, n - first);
    c->tail_start = (c->tail_start + evict) % cap;
    c->tail_len = cap;
}

void cq_capture_append(struct cq_capture *c, const char *data, size_t n)
{
    size_t kept_before = c->len + c->tail_len;
    c->total += n;
    size_t room = c->head_cap - c->len;
    size_t take = n < room ? n : room;
    /* The ring holds only what comes after the head: while the head has room, bytes
     * that cannot be stored there are dropped rather than kept out of order. */
    if (take > 0) {
        char *buf = realloc(c->buf, c->len + take);
        if (buf != NULL) {
            memcpy(buf + c->len, data, take);
            c->buf = buf;
            c->len += take;
        } else {
            c->cut_lines += count_lines(data, take);
        }
    }
    ring_put(c, data + take, n - take);
    size_t kept_now = c->len + c->tail_len;
    uint64_t dropped = (uint64_t)n - (kept_now - kept_before);
    if (c->dropped != NULL && dropped > 0)
        cq_metric_child_add(c->dropped, (double)dropped);
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

bool cq_capture_cut(const struct cq_capture *c)
{
    return c->total != c->len + c->tail_len;
}

/* The kept end of the output, in order, into out (tail_len bytes). */
static void ring_copy(const struct cq_capture *c, char *out)
{
    if (c->tail_len == 0)
        return;
    size_t first = c->tail_alloc - c->tail_start;
    if (first > c->tail_len)
        first = c->tail_len;
    memcpy(out, c->tail + c->tail_start, first);
    memcpy(out + first, c->tail, c->tail_len - first);
}

/* How many bytes at the end of data[0..len) start a character they do not finish: cut
 * there rather than show half a character as U+FFFD. */
static size_t partial_end(const char *data, size_t len)
{
    for (size_t back = 1; back <= 4 && back <= len; back++) {
        unsigned char b = (unsigned char)data[len - back];
        if ((b & 0xC0) == 0x80)
            continue; /* a continuation byte: its lead is further back */
        size_t need = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : b >= 0xC0 ? 2 : 1;
        return need > back ? back : 0;
    }
    return 0;
}

/* How many continuation bytes data starts with (the rest of a character cut off). */
static size_t partial_start(const char *data, size_t len)
{
    size_t n = 0;
    while (n < len && n < 3 && ((unsigned char)data[n] & 0xC0) == 0x80)
        n++;
    return n;
}

char *cq_capture_text(const struct cq_capture *c)
{
    size_t kept = c->len + c->tail_len;
    char *raw = malloc(kept + 1);
    if (raw == NULL)
        return NULL;
    if (c->len > 0)
        memcpy(raw, c->buf, c->len);
    ring_copy(c, raw + c->len);
    char *text;
    if (!cq_capture_cut(c)) {
        text = cq_utf8_sanitize(raw, kept);
    } else {
        /* Cut points fall where the limit put them, maybe inside a character: both
         * sides are trimmed to whole characters, and the trimmed bytes count as cut. */
        size_t head = c->len - partial_end(raw, c->len);
        size_t skip = partial_start(raw + c->len, c->tail_len);
        size_t tail = c->tail_len - skip;
        uint64_t cut = c->total - head - tail;
        cq_autofree char *head_text = cq_utf8_sanitize(raw, head);
        cq_autofree char *tail_text = cq_utf8_sanitize(raw + c->len + skip, tail);
        text = NULL;
        if (head_text != NULL && tail_text != NULL &&
            asprintf(&text,
                     "%s%s[codeq: output too long: %llu bytes (%llu lines) cut here; the first "
                     "%zu and the last %zu bytes are shown]\n%s",
                     head_text, head > 0 && head_text[strlen(head_text) - 1] != '\n' ? "\n" : "",
                     (unsigned long long)cut, (unsigned long long)c->cut_lines, head, tail,
                     tail_text) < 0)
            text = NULL;
    }
    free(raw);
    if (text == NULL || c->notes == NULL)
        return text;
    char *noted = NULL;
    if (asprintf(&noted, "%s%s", text, c->notes) < 0)
        return text;
    free(text);
    return noted;
}

char *cq_capture_rest(const struct cq_capture *c, uint64_t streamed)
{
    if (c->total <= streamed)
        return NULL;
    uint64_t tail_from = c->total - c->tail_len;
    cq_autofree char *tail = malloc(c->tail_len + 1);
    if (tail == NULL)
        return NULL;
    ring_copy(c, tail);
    if (tail_from <= streamed) {
        /* Nothing lost between: the kept bytes not streamed yet, as they came. */
        size_t from = (size_t)(streamed - tail_from);
        return cq_utf8_sanitize(tail + from, c->tail_len - from);
    }
    size_t skip = partial_start(tail, c->tail_len);
    uint64_t cut = c->total - streamed - (c->tail_len - skip);
    cq_autofree char *tail_text = cq_utf8_sanitize(tail + skip, c->tail_len - skip);
    char *text = NULL;
    if (tail_text == NULL ||
        asprintf(&text, "\n[codeq: output too long: %llu bytes cut here; the last %zu follow]\n%s",
                 (unsigned long long)cut, c->tail_len - skip, tail_text) < 0)
        return NULL;
    return text;
}

void cq_capture_free(struct cq_capture *c)
{
    free(c->buf);
    free(c->tail);
    free(c->notes);
    memset(c, 0, sizeof(*c));
}

int cq_content_stderr(struct cq_result *r, const char *text)
{
    if (text == NULL || text[0] == '\0')
        return 0;
    char *labeled = NULL;
    if (asprintf(&labeled, "%s%s", CQ_CONTENT_STDERR_LABEL, text) < 0)
        return -1;
    int rc = cq_result_add_text(r, labeled);
    free(labeled);
    return rc;
}
