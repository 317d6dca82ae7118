/* tests/fuzz/fuzz_sigv4.c - what a client sends codeq serve's SigV4 verifier
 * (http/sigv4.c).
 *
 * Input: a raw HTTP request (request line, header lines, an empty line, the body; "\n"
 * or "\r\n"). Checked for every input:
 *  - verified as sent (a known key, a pinned clock): no crash, no leak, and a refusal
 *    is CQ_EDENIED with a message; an acceptance names the one key and its tenant;
 *  - re-signed: its own Authorization, Host, dates, token and payload headers dropped,
 *    a Host and x-amz-date added, signed by cq_sigv4_sign over every header it carries
 *    (the list sorted and unique). The verifier must accept it, unless its query is
 *    malformed (a bad escape, too many parameters) or it carries too many headers to
 *    sign; and must refuse it once a byte of its body or of its method is changed.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http/sigv4.h"

#define T0        1752669296 /* 2025-07-16T12:34:56Z */
#define AMZ_DATE  "20250716T123456Z"
#define SECRET    "fuzz-secret/+="
#define MAX_HDRS  80
#define LIST_SIZE 4096

static void check(int ok)
{
    if (!ok)
        abort();
}

static int lookup(void *ctx, const char *key_id, const char *token, struct cq_sigv4_key *key,
                  struct cq_error *err)
{
    (void)ctx;
    (void)err;
    if (strcmp(key_id, "AKIDFUZZ") != 0 || token != NULL)
        return 1;
    snprintf(key->secret, sizeof(key->secret), "%s", SECRET);
    snprintf(key->tenant, sizeof(key->tenant), "t");
    return 0;
}

static const struct cq_sigv4_config cfg = {.now_unix = T0, .lookup = lookup};

struct parsed {
    char *copy; /* owns the strings */
    char *method, *path, *query;
    struct cq_sigv4_header h[MAX_HDRS + 3];
    size_t n;
    uint8_t *body;
    size_t body_len;
};

static char *next_line(char **p, char *end)
{
    if (*p >= end)
        return NULL;
    char *line = *p, *nl = memchr(line, '\n', (size_t)(end - line));
    if (nl == NULL) {
        *p = end;
        return NULL;
    }
    *nl = '\0';
    if (nl > line && nl[-1] == '\r')
        nl[-1] = '\0';
    *p = nl + 1;
    return line;
}

static int parse(const uint8_t *data, size_t size, struct parsed *r)
{
    memset(r, 0, sizeof(*r));
    r->copy = malloc(size + 1);
    memcpy(r->copy, data, size);
    r->copy[size] = '\0';
    char *p = r->copy, *end = r->copy + size;
    char *line = next_line(&p, end);
    if (line == NULL)
        return -1;
    r->method = line;
    char *sp = strchr(line, ' ');
    if (sp == NULL)
        return -1;
    *sp = '\0';
    r->path = sp + 1;
    sp = strchr(r->path, ' ');
    if (sp)
        *sp = '\0';
    r->query = strchr(r->path, '?');
    if (r->query)
        *r->query++ = '\0';
    while ((line = next_line(&p, end)) != NULL && *line != '\0') {
        char *colon = strchr(line, ':');
        if (colon == NULL || r->n == MAX_HDRS)
            return -1;
        *colon = '\0';
        char *v = colon + 1;
        while (*v == ' ')
            v++;
        r->h[r->n++] = (struct cq_sigv4_header){line, v};
    }
    r->body = (uint8_t *)p;
    r->body_len = (size_t)(end - p);
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Signs r over all its headers; 0, or -1 when the list cannot be made. */
static int resign(struct parsed *r, char *auth, size_t auth_size, struct cq_error *err)
{
    static const char *drop[] = {"authorization", "host", "x-amz-date", "x-amz-security-token",
                                 "x-amz-content-sha256"};
    size_t k = 0;
    for (size_t i = 0; i < r->n; i++) {
        bool skip = false;
        for (size_t d = 0; d < sizeof(drop) / sizeof(drop[0]); d++)
            skip |= strcasecmp(r->h[i].name, drop[d]) == 0;
        if (!skip)
            r->h[k++] = r->h[i];
    }
    r->h[k++] = (struct cq_sigv4_header){"Host", "codeq.example"};
    r->h[k++] = (struct cq_sigv4_header){"X-Amz-Date", AMZ_DATE};
    r->n = k;
    /* lowercase, sorted, unique names; a name that is not a token cannot be signed */
    static char names[MAX_HDRS + 2][256];
    char *sorted[MAX_HDRS + 2];
    size_t ns = 0;
    for (size_t i = 0; i < r->n; i++) {
        size_t len = strlen(r->h[i].name);
        if (len == 0 || len >= 256 ||
            strspn(r->h[i].name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                 "0123456789-_.!#$%&'*+^`|~") != len)
            return -1;
        for (size_t c = 0; c <= len; c++)
            names[ns][c] =
                (char)(r->h[i].name[c] >= 'A' && r->h[i].name[c] <= 'Z' ? r->h[i].name[c] + 32
                                                                        : r->h[i].name[c]);
        sorted[ns] = names[ns];
        ns++;
    }
    qsort(sorted, ns, sizeof(char *), cmp_str);
    char list[LIST_SIZE];
    size_t off = 0;
    for (size_t i = 0; i < ns; i++) {
        if (i > 0 && strcmp(sorted[i], sorted[i - 1]) == 0)
            continue;
        int w = snprintf(list + off, sizeof(list) - off, "%s%s", off ? ";" : "", sorted[i]);
        if (w < 0 || (size_t)w >= sizeof(list) - off)
            return -1;
        off += (size_t)w;
    }
    r->h[r->n++] = (struct cq_sigv4_header){"Authorization", auth};
    struct cq_sigv4_request req = {r->method, r->path, r->query,   r->h,
                                   r->n - 1,  r->body, r->body_len};
    return cq_sigv4_sign(&req, "AKIDFUZZ", SECRET, "us-east-1", "bedrock-agentcore", AMZ_DATE, list,
                         auth, auth_size, err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct parsed r;
    if (parse(data, size, &r) < 0) {
        free(r.copy);
        return 0;
    }
    struct cq_sigv4_request req = {r.method, r.path, r.query, r.h, r.n, r.body, r.body_len};
    struct cq_sigv4_identity id;
    struct cq_error err = {0};
    if (cq_sigv4_verify(&cfg, &req, &id, &err) == 0)
        check(strcmp(id.key_id, "AKIDFUZZ") == 0 && strcmp(id.tenant, "t") == 0);
    else
        check(err.code == CQ_EDENIED && err.msg[0] != '\0' && strstr(err.msg, SECRET) == NULL);

    static char auth[8192];
    if (resign(&r, auth, sizeof(auth), &err) == 0) {
        req = (struct cq_sigv4_request){r.method, r.path, r.query, r.h, r.n, r.body, r.body_len};
        memset(&err, 0, sizeof(err));
        int rc = cq_sigv4_verify(&cfg, &req, &id, &err);
        if (rc != 0) {
            check(err.code == CQ_EDENIED);
            check(strstr(err.msg, "query") != NULL || strstr(err.msg, "signed headers") != NULL ||
                  strstr(err.msg, "longer than") != NULL);
        } else {
            check(id.payload_signed);
            if (r.body_len > 0) {
                r.body[0] ^= 1;
                check(cq_sigv4_verify(&cfg, &req, &id, &err) == -1);
                check(strstr(err.msg, "signature mismatch") != NULL);
                r.body[0] ^= 1;
            }
            if (r.method[0] != '\0') {
                r.method[0] ^= 0x20;
                check(cq_sigv4_verify(&cfg, &req, &id, &err) == -1);
                r.method[0] ^= 0x20;
            }
        }
    }
    free(r.copy);
    return 0;
}
