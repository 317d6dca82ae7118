/* http/eventstream.c - AWS event stream messages: the encoder codeq serve answers
 * InvokeCodeInterpreter with, and a strict decoder (tests, fuzzing, and any later
 * reader of client streams).
 *
 * The decoder trusts no length: the prelude's two lengths are checked against each
 * other, the format's minimum and the caller's maximum before anything else is read,
 * the prelude's CRC before the lengths are believed, and the message's CRC before any
 * header is parsed, so a header parser never sees bytes the sender did not frame. Each
 * header is then checked to lie within the headers section. Decoded values point into
 * the caller's buffer: nothing is allocated, so a hostile stream costs no memory.
 */
#include "http/eventstream.h"

#include <stdlib.h>
#include <string.h>

#define MAX_MESSAGE (CQ_ES_OVERHEAD + CQ_ES_MAX_HEADERS_LEN + CQ_ES_MAX_PAYLOAD)

uint32_t cq_es_crc32(uint32_t crc, const uint8_t *data, size_t len)
{
    static uint32_t table[256];
    static bool ready; /* idempotent: racing first calls write the same values */
    if (!__atomic_load_n(&ready, __ATOMIC_ACQUIRE)) {
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++)
                c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            table[i] = c;
        }
        __atomic_store_n(&ready, true, __ATOMIC_RELEASE);
    }
    crc = ~crc;
    for (size_t i = 0; i < len; i++)
        crc = table[(crc ^ data[i]) & 0xff] ^ (crc >> 8);
    return ~crc;
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t get_be(const uint8_t *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

static size_t fixed_size(enum cq_es_type t)
{
    switch (t) {
    case CQ_ES_TRUE:
    case CQ_ES_FALSE:
        return 0;
    case CQ_ES_BYTE:
        return 1;
    case CQ_ES_SHORT:
        return 2;
    case CQ_ES_INT:
        return 4;
    case CQ_ES_LONG:
    case CQ_ES_TIMESTAMP:
        return 8;
    case CQ_ES_UUID:
        return 16;
    default:
        return 0;
    }
}

/* The encoded size of one header, or 0 when it cannot be encoded. */
static size_t header_size(const struct cq_es_header *h)
{
    size_t name_len = h->name_len ? h->name_len : strlen(h->name);
    if (name_len == 0 || name_len > 255)
        return 0;
    size_t n = 1 + name_len + 1;
    if (h->type == CQ_ES_BYTES || h->type == CQ_ES_STRING)
        return n + 2 + h->len;
    if (h->type > CQ_ES_UUID)
        return 0;
    return n + fixed_size(h->type);
}

static uint8_t *put_header(uint8_t *p, const struct cq_es_header *h)
{
    size_t name_len = h->name_len ? h->name_len : strlen(h->name);
    *p++ = (uint8_t)name_len;
    memcpy(p, h->name, name_len);
    p += name_len;
    *p++ = (uint8_t)h->type;
    switch (h->type) {
    case CQ_ES_BYTES:
    case CQ_ES_STRING:
        *p++ = (uint8_t)(h->len >> 8);
        *p++ = (uint8_t)h->len;
        if (h->len)
            memcpy(p, h->bytes, h->len);
        return p + h->len;
    case CQ_ES_UUID:
        memcpy(p, h->bytes, 16);
        return p + 16;
    default: {
        size_t n = fixed_size(h->type);
        for (size_t i = 0; i < n; i++)
            p[i] = (uint8_t)((uint64_t)h->integer >> (8 * (n - 1 - i)));
        return p + n;
    }
    }
}

int cq_es_encode(const struct cq_es_header *headers, size_t n_headers, const uint8_t *payload,
                 size_t payload_len, uint8_t **out, size_t *out_len, struct cq_error *err)
{
    size_t hlen = 0;
    for (size_t i = 0; i < n_headers; i++) {
        size_t n = header_size(&headers[i]);
        if (n == 0)
            return cq_error_set(err, CQ_ELIMIT,
                                "event stream: header %zu cannot be encoded "
                                "(name of 1 to 255 bytes, a known type)",
                                i);
        hlen += n;
    }
    /* AWS's bounds, which clients enforce when decoding: a message past them would be
     * refused by botocore, so it is refused here. */
    if (hlen > CQ_ES_MAX_HEADERS_LEN || payload_len > CQ_ES_MAX_PAYLOAD)
        return cq_error_set(err, CQ_ELIMIT,
                            "event stream: headers of %zu or payload of %zu bytes past the "
                            "limits (%d, %d)",
                            hlen, payload_len, CQ_ES_MAX_HEADERS_LEN, CQ_ES_MAX_PAYLOAD);
    size_t total = CQ_ES_OVERHEAD + hlen + payload_len;
    uint8_t *m = malloc(total);
    if (m == NULL)
        return cq_error_set(err, ENOMEM, "event stream: out of memory (%zu bytes)", total);
    put32(m, (uint32_t)total);
    put32(m + 4, (uint32_t)hlen);
    put32(m + 8, cq_es_crc32(0, m, 8));
    uint8_t *p = m + CQ_ES_PRELUDE;
    for (size_t i = 0; i < n_headers; i++)
        p = put_header(p, &headers[i]);
    if (payload_len)
        memcpy(p, payload, payload_len);
    p += payload_len;
    put32(p, cq_es_crc32(0, m, total - 4));
    *out = m;
    *out_len = total;
    return 0;
}

static struct cq_es_header string_header(const char *name, const char *value)
{
    return (struct cq_es_header){.name = name,
                                 .type = CQ_ES_STRING,
                                 .bytes = (const uint8_t *)value,
                                 .len = (uint16_t)strlen(value)};
}

int cq_es_encode_event(const char *event_type, const char *json, size_t json_len, uint8_t **out,
                       size_t *out_len, struct cq_error *err)
{
    if (strlen(event_type) > 255)
        return cq_error_set(err, CQ_ELIMIT, "event stream: event type too long");
    struct cq_es_header h[] = {
        string_header(":event-type", event_type),
        string_header(":content-type", "application/json"),
        string_header(":message-type", "event"),
    };
    return cq_es_encode(h, 3, (const uint8_t *)json, json_len, out, out_len, err);
}

int cq_es_encode_exception(const char *exception_type, const char *json, size_t json_len,
                           uint8_t **out, size_t *out_len, struct cq_error *err)
{
    if (strlen(exception_type) > 255)
        return cq_error_set(err, CQ_ELIMIT, "event stream: exception type too long");
    struct cq_es_header h[] = {
        string_header(":exception-type", exception_type),
        string_header(":content-type", "application/json"),
        string_header(":message-type", "exception"),
    };
    return cq_es_encode(h, 3, (const uint8_t *)json, json_len, out, out_len, err);
}

/* Parses the headers section p[0..n), already covered by the message CRC. */
static int decode_headers(const uint8_t *p, size_t n, struct cq_es_message *msg,
                          struct cq_error *err)
{
    size_t off = 0;
    msg->n_headers = 0;
    while (off < n) {
        if (msg->n_headers == CQ_ES_MAX_HEADERS)
            return cq_error_set(err, CQ_EPROTO, "event stream: more than %d headers",
                                CQ_ES_MAX_HEADERS);
        struct cq_es_header *h = &msg->headers[msg->n_headers];
        memset(h, 0, sizeof(*h));
        uint8_t name_len = p[off++];
        /* name, then the type byte: both must lie within the section */
        if (name_len == 0 || n - off < (size_t)name_len + 1)
            return cq_error_set(err, CQ_EPROTO, "event stream: header name out of bounds");
        h->name = (const char *)p + off;
        h->name_len = name_len;
        off += name_len;
        uint8_t type = p[off++];
        if (type > CQ_ES_UUID)
            return cq_error_set(err, CQ_EPROTO, "event stream: unknown header type %u", type);
        h->type = (enum cq_es_type)type;
        size_t vlen;
        if (type == CQ_ES_BYTES || type == CQ_ES_STRING) {
            if (n - off < 2)
                return cq_error_set(err, CQ_EPROTO, "event stream: header value out of bounds");
            h->len = (uint16_t)get_be(p + off, 2);
            off += 2;
            vlen = h->len;
        } else {
            vlen = fixed_size(h->type);
        }
        if (n - off < vlen)
            return cq_error_set(err, CQ_EPROTO, "event stream: header value out of bounds");
        if (type == CQ_ES_BYTES || type == CQ_ES_STRING || type == CQ_ES_UUID) {
            h->bytes = p + off;
            if (type == CQ_ES_UUID)
                h->len = 16;
        } else if (vlen > 0) {
            /* sign-extend: byte, short, int and long are signed */
            uint64_t v = get_be(p + off, vlen);
            unsigned shift = (unsigned)(64 - 8 * vlen);
            h->integer = shift ? (int64_t)(v << shift) >> shift : (int64_t)v;
        } else {
            h->integer = type == CQ_ES_TRUE;
        }
        off += vlen;
        msg->n_headers++;
    }
    return 0;
}

long cq_es_decode(const uint8_t *buf, size_t len, size_t max_message, struct cq_es_message *msg,
                  struct cq_error *err)
{
    if (max_message == 0 || max_message > MAX_MESSAGE)
        max_message = MAX_MESSAGE;
    if (len < CQ_ES_PRELUDE)
        return 0;
    uint32_t total = get32(buf), hlen = get32(buf + 4);
    if (get32(buf + 8) != cq_es_crc32(0, buf, 8))
        return cq_error_set(err, CQ_EPROTO, "event stream: prelude CRC mismatch");
    if (total < CQ_ES_OVERHEAD || total > max_message || hlen > CQ_ES_MAX_HEADERS_LEN ||
        hlen > total - CQ_ES_OVERHEAD || total - CQ_ES_OVERHEAD - hlen > CQ_ES_MAX_PAYLOAD)
        return cq_error_set(err, CQ_EPROTO,
                            "event stream: lengths out of bounds (total %u, headers %u, "
                            "maximum %zu)",
                            total, hlen, max_message);
    if (len < total)
        return 0;
    if (get32(buf + total - 4) != cq_es_crc32(0, buf, total - 4))
        return cq_error_set(err, CQ_EPROTO, "event stream: message CRC mismatch");
    if (decode_headers(buf + CQ_ES_PRELUDE, hlen, msg, err) < 0)
        return -1;
    msg->payload = buf + CQ_ES_PRELUDE + hlen;
    msg->payload_len = total - CQ_ES_OVERHEAD - hlen;
    return (long)total;
}

const uint8_t *cq_es_header_value(const struct cq_es_message *msg, const char *name, size_t *len)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < msg->n_headers; i++) {
        const struct cq_es_header *h = &msg->headers[i];
        if (h->name_len == n && memcmp(h->name, name, n) == 0 &&
            (h->type == CQ_ES_STRING || h->type == CQ_ES_BYTES)) {
            *len = h->len;
            return h->bytes;
        }
    }
    return NULL;
}
