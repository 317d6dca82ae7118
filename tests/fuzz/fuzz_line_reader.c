/* tests/fuzz/fuzz_line_reader.c - `codeq mcp`'s standard input (cli/line_reader.c).
 *
 * Whatever an agent writes is split into lines in bounded memory. The input's first two
 * bytes choose the line limit (1 to 4096: small, so that lines around it are cheap) and
 * the sizes the reads return (1 to 256 bytes, cycling through the next bytes), the rest
 * is the stream. The reader's lines are compared with the stream split by hand: each
 * line, in order, is handed out whole when it is at most the limit and refused (-1)
 * when longer, a last line without '\n' included; nothing else, nothing lost. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "cli/line_reader.h"

struct stream {
    const uint8_t *data, *sizes;
    size_t len, pos, n_sizes, reads;
};

static ssize_t read_stream(void *ctx, void *buf, size_t len)
{
    struct stream *s = ctx;
    if (s->pos == s->len)
        return 0;
    size_t n = s->n_sizes ? 1 + s->sizes[s->reads++ % s->n_sizes] : 7;
    if (n > len)
        n = len;
    if (n > s->len - s->pos)
        n = s->len - s->pos;
    memcpy(buf, s->data + s->pos, n);
    s->pos += n;
    return (ssize_t)n;
}

static void check(bool ok)
{
    if (!ok)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t max_line = 1 + (((size_t)data[0] << 8 | data[1]) % 4096);
    struct stream s = {.data = data + 2, .len = size - 2, .sizes = data + 2};
    s.n_sizes = s.len < 16 ? s.len : 16;
    struct cq_line_reader r;
    cq_line_reader_init(&r, max_line, read_stream, &s);
    const uint8_t *expect = s.data, *end = s.data + s.len;
    const char *line;
    size_t len;
    int rc;
    while ((rc = cq_line_reader_next(&r, &line, &len)) != 0) {
        check(expect < end); /* a line the stream does not have */
        const uint8_t *nl = memchr(expect, '\n', (size_t)(end - expect));
        size_t want = nl != NULL ? (size_t)(nl - expect) : (size_t)(end - expect);
        if (want <= max_line) {
            check(rc == 1 && len == want && memcmp(line, expect, want) == 0);
        } else {
            check(rc == -1);
        }
        expect += want + (nl != NULL);
    }
    check(expect == end); /* every line was handed out */
    /* Memory stayed bounded: the limit and room for reads. */
    check(r.cap <= max_line + 2 * 65536);
    cq_line_reader_free(&r);
    return 0;
}
