/* tests/tools/cq_eventstream.c - AWS event stream messages from the command line
 * (http/eventstream.c), for tests/http/test_eventstream.py, which reads them with
 * botocore's own decoder and writes messages for ours.
 *
 * usage: cq-eventstream event TYPE < json          an event (:event-type TYPE)
 *        cq-eventstream exception TYPE < json      a modelled exception
 *        cq-eventstream headers < spec             any headers: lines NAME TYPE VALUE
 *                                                  (TYPE a number; VALUE text or an
 *                                                  integer), an empty line, the payload
 *        cq-eventstream decode [MAX] < stream      one JSON line per message:
 *                                                  {"headers":{name:[type,value]},
 *                                                  "payload":"base64"}, then
 *                                                  "error: ..." or "partial N" or "end"
 * Encoded messages go to stdout. Exit 0, or 1 when decode met a malformed message.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base64.h"
#include "http/eventstream.h"

static uint8_t *read_all(size_t *len)
{
    size_t cap = 65536, n = 0;
    uint8_t *buf = malloc(cap + 1);
    for (size_t r; buf && (r = fread(buf + n, 1, cap - n, stdin)) > 0;) {
        n += r;
        if (n == cap)
            buf = realloc(buf, (cap *= 2) + 1);
    }
    if (buf)
        buf[n] = 0;
    *len = n;
    return buf;
}

static int emit(int rc, uint8_t *m, size_t n, const struct cq_error *err)
{
    if (rc < 0) {
        fprintf(stderr, "cq-eventstream: %s\n", err->msg);
        return 2;
    }
    fwrite(m, 1, n, stdout);
    free(m);
    return 0;
}

static int encode_spec(uint8_t *in, size_t len)
{
    struct cq_es_header h[64];
    size_t n = 0;
    char *p = (char *)in, *end = (char *)in + len, *payload = NULL;
    while (p < end) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        if (nl == NULL)
            return 2;
        *nl = '\0';
        if (*p == '\0') {
            payload = nl + 1;
            break;
        }
        /* NAME TYPE[ VALUE]: the value runs to the end of the line, NULs included */
        char *sp1 = memchr(p, ' ', (size_t)(nl - p));
        if (sp1 == NULL || n == 64)
            return 2;
        *sp1 = '\0';
        char *type = sp1 + 1, *sp2 = memchr(type, ' ', (size_t)(nl - type));
        char *v = sp2 ? sp2 + 1 : nl;
        h[n] = (struct cq_es_header){.name = p, .type = atoi(type)};
        if (h[n].type == CQ_ES_STRING || h[n].type == CQ_ES_BYTES || h[n].type == CQ_ES_UUID) {
            h[n].bytes = (const uint8_t *)v;
            h[n].len = (uint16_t)(nl - v);
        } else {
            h[n].integer = strtoll(v, NULL, 10);
        }
        n++;
        p = nl + 1;
    }
    if (payload == NULL)
        return 2;
    uint8_t *m;
    size_t mlen;
    struct cq_error err = {0};
    int rc = cq_es_encode(h, n, (uint8_t *)payload, (size_t)(end - payload), &m, &mlen, &err);
    return emit(rc, m, mlen, &err);
}

static int decode(const uint8_t *in, size_t len, size_t max)
{
    size_t off = 0;
    for (;;) {
        struct cq_es_message msg;
        struct cq_error err = {0};
        long n = cq_es_decode(in + off, len - off, max, &msg, &err);
        if (n < 0) {
            printf("error: %s\n", err.msg);
            return 1;
        }
        if (n == 0) {
            if (off == len)
                printf("end\n");
            else
                printf("partial %zu\n", len - off);
            return 0;
        }
        json_t *headers = json_object();
        for (size_t i = 0; i < msg.n_headers; i++) {
            const struct cq_es_header *h = &msg.headers[i];
            json_t *v;
            if (h->type == CQ_ES_STRING)
                v = json_stringn((const char *)h->bytes, h->len);
            else if (h->type == CQ_ES_BYTES || h->type == CQ_ES_UUID) {
                char *b64 = cq_base64_encode(h->bytes, h->len);
                v = json_string(b64);
                free(b64);
            } else
                v = json_integer(h->integer);
            json_object_setn_new(headers, h->name, h->name_len,
                                 json_pack("[io]", (int)h->type, v ? v : json_null()));
        }
        char *b64 = cq_base64_encode(msg.payload, msg.payload_len);
        json_t *line = json_pack("{s:o,s:s}", "headers", headers, "payload", b64);
        char *text = json_dumps(line, JSON_COMPACT);
        printf("%s\n", text);
        free(text);
        free(b64);
        json_decref(line);
        off += (size_t)n;
    }
}

static int run(int argc, char **argv, uint8_t *in, size_t len);

int main(int argc, char **argv)
{
    size_t len;
    uint8_t *in = read_all(&len);
    if (in == NULL)
        return 2;
    int rc = run(argc, argv, in, len);
    free(in);
    return rc;
}

static int run(int argc, char **argv, uint8_t *in, size_t len)
{
    if (argc < 2)
        goto usage;
    uint8_t *m;
    size_t mlen;
    struct cq_error err = {0};
    int rc;
    if (strcmp(argv[1], "event") == 0 && argc == 3) {
        rc = cq_es_encode_event(argv[2], (char *)in, len, &m, &mlen, &err);
        return emit(rc, m, mlen, &err);
    }
    if (strcmp(argv[1], "exception") == 0 && argc == 3) {
        rc = cq_es_encode_exception(argv[2], (char *)in, len, &m, &mlen, &err);
        return emit(rc, m, mlen, &err);
    }
    if (strcmp(argv[1], "headers") == 0 && argc == 2)
        return encode_spec(in, len);
    if (strcmp(argv[1], "decode") == 0 && argc <= 3)
        return decode(in, len, argc == 3 ? strtoull(argv[2], NULL, 10) : 0);
usage:
    fprintf(stderr, "usage: cq-eventstream event|exception TYPE < json | headers < spec | "
                    "decode [MAX] < stream\n");
    return 2;
}
