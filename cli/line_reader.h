/* cli/line_reader.h - lines of an untrusted stream, in bounded memory.
 *
 * `codeq mcp` reads JSON-RPC messages, one per line, from whatever the agent writes on
 * its standard input. A line may be as long as a writeFiles of 100 MB (base64), but no
 * longer: the reader never holds more than max_line bytes plus one read, skips a longer
 * line to its end, and finds each newline once (linear in the input, whatever its
 * shape). */
#ifndef CQ_CLI_LINE_READER_H
#define CQ_CLI_LINE_READER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* read(2)'s contract: bytes read, 0 at the end, -1 with errno (EINTR is retried). */
typedef ssize_t (*cq_line_read_fn)(void *ctx, void *buf, size_t len);

struct cq_line_reader {
    cq_line_read_fn read;
    void *ctx;
    size_t max_line;
    char *buf;
    size_t len, start, cap;
    size_t scanned; /* bytes after start already known to hold no '\n' */
    bool skipping, eof;
};

void cq_line_reader_init(struct cq_line_reader *r, size_t max_line, cq_line_read_fn read,
                         void *ctx);
/* 1 and the next line (without its '\n'; valid until the next call), -1 for a line
 * longer than max_line (skipped), 0 at the end of the stream. A last line without '\n'
 * counts as a line. */
int cq_line_reader_next(struct cq_line_reader *r, const char **line, size_t *len);
void cq_line_reader_free(struct cq_line_reader *r);

#endif
