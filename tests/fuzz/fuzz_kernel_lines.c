/* tests/fuzz/fuzz_kernel_lines.c - the kernel protocol as the worker reads it.
 *
 * User code runs in the kernel's process, so every byte on the control channel may be
 * forged. The input drives worker/lines.c as worker/kernel.c does: bytes arrive in
 * pieces of any size, every complete line is taken before the next piece, and each
 * line is checked as take_reply() checks it (a JSON object with an integer id, no
 * duplicate keys). The caps switch mid-stream as they do between a cell (a large cap)
 * and a wait for ready (a small one).
 *
 * Input: [cap A: 2 bytes][cap B: 2 bytes][4 piece sizes][stream...]. A piece size of 0
 * switches between the caps instead of feeding; n feeds n bytes.
 *
 * Invariants (abort on breach): a line never holds '\n' nor exceeds the cap in force;
 * after a successful feed the bytes held beyond those taken stay within cap + piece;
 * the buffer never grows past what that bound needs; errors are CQ_EPROTO.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "worker/internal.h"

#define HEADER 8

static void check(bool ok)
{
    if (!ok)
        abort();
}

/* take_reply()'s test: a JSON object with an integer id. */
static void take(const char *line, size_t len)
{
    json_t *reply = json_loadb(line, len, JSON_REJECT_DUPLICATES, NULL);
    if (json_is_object(reply) && json_is_integer(json_object_get(reply, "id")))
        (void)json_integer_value(json_object_get(reply, "id"));
    json_decref(reply);
}

/* Takes every complete line; false when the reader refused the stream. */
static bool drain(struct cq_lines *l)
{
    for (;;) {
        const char *line;
        size_t len;
        struct cq_error err;
        int rc = cq_lines_next(l, &line, &len, &err);
        if (rc < 0) {
            check(err.code == CQ_EPROTO);
            return false;
        }
        if (rc == 0)
            return true;
        check(len <= l->cap);
        check(len == 0 || memchr(line, '\n', len) == NULL);
        take(line, len);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < HEADER)
        return 0;
    size_t caps[2] = {((size_t)data[0] << 8 | data[1]) % 4096,
                      ((size_t)data[2] << 8 | data[3]) % 4096};
    const uint8_t *pieces = data + 4;
    data += HEADER;
    size -= HEADER;
    int which = 0;
    size_t max_cap = caps[0] > caps[1] ? caps[0] : caps[1];
    struct cq_lines l;
    cq_lines_init(&l, caps[which]);
    size_t off = 0, max_piece = 0;
    for (unsigned k = 0; off < size; k++) {
        size_t piece = pieces[k % 4];
        if (piece == 0) {
            which ^= 1;
            l.cap = caps[which];
            if (!drain(&l))
                break;
            if (pieces[0] == 0 && pieces[1] == 0 && pieces[2] == 0 && pieces[3] == 0)
                piece = 1; /* all zero: still make progress */
            else
                continue;
        }
        if (piece > size - off)
            piece = size - off;
        if (piece > max_piece)
            max_piece = piece;
        struct cq_error err;
        if (cq_lines_feed(&l, data + off, piece, &err) < 0) {
            check(err.code == CQ_EPROTO);
            break;
        }
        off += piece;
        /* Lines were all taken before this feed: what is held is what was pending
         * (within the cap) plus this piece. */
        check(l.len - l.start <= l.cap + piece || l.len - l.start <= max_cap + piece);
        size_t bound = 2 * (2 * max_cap + max_piece);
        check(l.alloc <= (bound > 4096 ? bound : 4096));
        if (!drain(&l))
            break;
        check(cq_lines_pending(&l) == (l.len > l.start));
    }
    cq_lines_free(&l);
    return 0;
}
