/* tests/tools/cq_sigv4_check.c - verifies the SigV4 signature of one raw HTTP request
 * (http/sigv4.c), for tests/http/test_sigv4.py, which signs requests with botocore.
 *
 * usage: cq-sigv4-check [--now UNIX] [--skew S] [--service NAME] [--region NAME]
 *                       --key AKID:SECRET:TENANT[:TOKEN] ... < request
 *
 * The request is read from stdin as it would come off the wire: request line, header
 * lines, an empty line, the body (Content-Length bytes, or all that follows). A key with
 * TOKEN takes session credentials with exactly that token; a key without takes none.
 * Prints "ok key=AKID tenant=T payload_signed=0|1 session_token=0|1" and exits 0, or
 * "denied: REASON" and exits 1; 2 for a usage error or a failure of the tool itself.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http/sigv4.h"

#define MAX_KEYS    16
#define MAX_HEADERS 128

struct key {
    char *id, *secret, *tenant, *token;
};

struct keys {
    struct key k[MAX_KEYS];
    size_t n;
};

static int lookup(void *ctx, const char *key_id, const char *token, struct cq_sigv4_key *out,
                  struct cq_error *err)
{
    (void)err;
    struct keys *keys = ctx;
    for (size_t i = 0; i < keys->n; i++) {
        const struct key *k = &keys->k[i];
        if (strcmp(k->id, key_id) != 0)
            continue;
        if ((token == NULL) != (k->token == NULL) || (token && strcmp(token, k->token) != 0))
            return 1;
        snprintf(out->secret, sizeof(out->secret), "%s", k->secret);
        snprintf(out->tenant, sizeof(out->tenant), "%s", k->tenant);
        return 0;
    }
    return 1;
}

static char *read_all(FILE *f, size_t *len)
{
    size_t cap = 65536, n = 0;
    char *buf = malloc(cap + 1);
    for (size_t r; buf && (r = fread(buf + n, 1, cap - n, f)) > 0;) {
        n += r;
        if (n == cap)
            buf = realloc(buf, (cap *= 2) + 1);
    }
    if (buf)
        buf[n] = '\0';
    *len = n;
    return buf;
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        s[--n] = '\0';
    return s;
}

int main(int argc, char **argv)
{
    struct keys keys = {0};
    struct cq_sigv4_config cfg = {.lookup = lookup, .lookup_ctx = &keys};
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (v == NULL)
            goto usage;
        if (strcmp(argv[i], "--now") == 0) {
            cfg.now_unix = strtoll(v, NULL, 10);
        } else if (strcmp(argv[i], "--skew") == 0) {
            cfg.max_skew_s = (unsigned)strtoul(v, NULL, 10);
        } else if (strcmp(argv[i], "--service") == 0) {
            cfg.service = v;
        } else if (strcmp(argv[i], "--region") == 0) {
            cfg.region = v;
        } else if (strcmp(argv[i], "--key") == 0 && keys.n < MAX_KEYS) {
            struct key *k = &keys.k[keys.n++];
            char *s = argv[i + 1]; /* split in place */
            k->id = strsep(&s, ":");
            k->secret = strsep(&s, ":");
            k->tenant = strsep(&s, ":");
            k->token = s;
            if (k->secret == NULL || k->tenant == NULL)
                goto usage;
        } else {
            goto usage;
        }
        i++;
    }

    size_t len;
    char *raw = read_all(stdin, &len);
    char *end = raw ? strstr(raw, "\r\n\r\n") : NULL;
    if (end == NULL) {
        free(raw);
        fprintf(stderr, "cq-sigv4-check: no end of headers in the request\n");
        return 2;
    }
    *end = '\0';
    uint8_t *body = (uint8_t *)end + 4;
    size_t body_len = len - (size_t)((char *)body - raw);

    struct cq_sigv4_header headers[MAX_HEADERS];
    size_t n_headers = 0;
    char *line = raw, *next;
    next = strstr(line, "\r\n");
    if (next) {
        *next = '\0';
        next += 2;
    }
    /* request line: METHOD TARGET HTTP/1.1 */
    char *method = strsep(&line, " "), *target = strsep(&line, " ");
    if (method == NULL || target == NULL) {
        fprintf(stderr, "cq-sigv4-check: bad request line\n");
        free(raw);
        return 2;
    }
    char *query = strchr(target, '?');
    if (query)
        *query++ = '\0';
    for (line = next; line && *line; line = next) {
        next = strstr(line, "\r\n");
        if (next) {
            *next = '\0';
            next += 2;
        }
        char *colon = strchr(line, ':');
        if (colon == NULL || n_headers == MAX_HEADERS) {
            fprintf(stderr, "cq-sigv4-check: bad header line '%s'\n", line);
            free(raw);
            return 2;
        }
        *colon = '\0';
        headers[n_headers].name = line;
        headers[n_headers].value = trim(colon + 1);
        if (strcasecmp(line, "content-length") == 0) {
            size_t cl = strtoull(headers[n_headers].value, NULL, 10);
            if (cl < body_len)
                body_len = cl;
        }
        n_headers++;
    }
    struct cq_sigv4_request req = {.method = method,
                                   .path = target,
                                   .query = query,
                                   .headers = headers,
                                   .n_headers = n_headers,
                                   .body = body,
                                   .body_len = body_len};
    struct cq_sigv4_identity id;
    struct cq_error err = {0};
    if (cq_sigv4_verify(&cfg, &req, &id, &err) < 0) {
        printf("denied: %s\n", err.msg);
        free(raw);
        return err.code == CQ_EDENIED ? 1 : 2;
    }
    printf("ok key=%s tenant=%s payload_signed=%d session_token=%d\n", id.key_id, id.tenant,
           id.payload_signed, id.session_token);
    free(raw);
    return 0;
usage:
    fprintf(stderr, "usage: cq-sigv4-check [--now UNIX] [--skew S] [--service NAME] "
                    "[--region NAME] --key AKID:SECRET:TENANT[:TOKEN] ... < request\n");
    return 2;
}
