/* tests/fuzz/fuzz_eventstream.c - AWS event stream bytes into the decoder
 * (http/eventstream.c).
 *
 * Input: a stream of messages behind 2 bytes: the top bit of the first says "fix the
 * CRCs" (so that the fuzzer gets past them to the headers, which a CRC would otherwise
 * hide from it), the other 15 the decoder's maximum message size (big-endian, in 16-byte
 * units; 0: the format's). Checked for every input:
 *  - messages are decoded one after the other until the stream ends, is partial or is
 *    refused (CQ_EPROTO); every header and the payload lie within the message;
 *  - each decoded message, encoded again from its headers and payload, is the same
 *    bytes (the format has one encoding of a message), and decodes the same again.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/eventstream.h"

static void check(int ok)
{
    if (!ok)
        abort();
}

/* Writes the CRCs each message's prelude announces, message after message. */
static void fix_crcs(uint8_t *p, size_t size)
{
    for (size_t off = 0; size - off >= CQ_ES_PRELUDE;) {
        uint8_t *m = p + off;
        uint32_t total = (uint32_t)m[0] << 24 | (uint32_t)m[1] << 16 | (uint32_t)m[2] << 8 | m[3];
        uint32_t c = cq_es_crc32(0, m, 8);
        m[8] = (uint8_t)(c >> 24), m[9] = (uint8_t)(c >> 16), m[10] = (uint8_t)(c >> 8);
        m[11] = (uint8_t)c;
        if (total < CQ_ES_OVERHEAD || total > size - off)
            return;
        c = cq_es_crc32(0, m, total - 4);
        m[total - 4] = (uint8_t)(c >> 24), m[total - 3] = (uint8_t)(c >> 16);
        m[total - 2] = (uint8_t)(c >> 8), m[total - 1] = (uint8_t)c;
        off += total;
    }
}

static int within(const uint8_t *p, size_t n, const uint8_t *buf, size_t len)
{
    return p >= buf && (size_t)(p - buf) <= len && n <= len - (size_t)(p - buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    bool fix = data[0] & 0x80;
    size_t max = (size_t)((data[0] & 0x7f) << 8 | data[1]) * 16;
    data += 2;
    size -= 2;
    uint8_t *copy = malloc(size ? size : 1); /* ASan sees reads past the input */
    memcpy(copy, data, size);
    if (fix)
        fix_crcs(copy, size);
    size_t off = 0;
    for (;;) {
        static struct cq_es_message msg;
        struct cq_error err = {0};
        long n = cq_es_decode(copy + off, size - off, max, &msg, &err);
        if (n < 0) {
            check(err.code == CQ_EPROTO);
            break;
        }
        if (n == 0)
            break;
        const uint8_t *m = copy + off;
        check((size_t)n >= CQ_ES_OVERHEAD && (size_t)n <= size - off);
        check(max == 0 || (size_t)n <= max);
        check(msg.n_headers <= CQ_ES_MAX_HEADERS);
        check(within(msg.payload, msg.payload_len, m, (size_t)n));
        for (size_t i = 0; i < msg.n_headers; i++) {
            const struct cq_es_header *h = &msg.headers[i];
            check(h->name_len > 0 && within((const uint8_t *)h->name, h->name_len, m, (size_t)n));
            if (h->type == CQ_ES_STRING || h->type == CQ_ES_BYTES || h->type == CQ_ES_UUID)
                check(within(h->bytes, h->len, m, (size_t)n));
        }
        uint8_t *again;
        size_t again_len;
        check(cq_es_encode(msg.headers, msg.n_headers, msg.payload, msg.payload_len, &again,
                           &again_len, &err) == 0);
        check(again_len == (size_t)n && memcmp(again, m, again_len) == 0);
        static struct cq_es_message msg2;
        check(cq_es_decode(again, again_len, 0, &msg2, &err) == n);
        check(msg2.n_headers == msg.n_headers && msg2.payload_len == msg.payload_len);
        free(again);
        off += (size_t)n;
    }
    free(copy);
    return 0;
}
