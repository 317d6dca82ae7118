/* http/sigv4.c - AWS Signature Version 4 verification (the server's side).
 *
 * The steps follow AWS's description of SigV4 for services other than S3, and what
 * botocore's SigV4Auth produces (the tests sign with it):
 *
 *   canonical request = METHOD \n CANONICAL-URI \n CANONICAL-QUERY \n
 *                       name:value \n ... (one line per signed header) \n
 *                       SIGNED-HEADERS \n PAYLOAD-HASH
 *   string to sign    = AWS4-HMAC-SHA256 \n X-AMZ-DATE \n DATE/REGION/SERVICE/aws4_request \n
 *                       hex(SHA-256(canonical request))
 *   signing key       = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, DATE), REGION), SERVICE),
 *                       "aws4_request")
 *   signature         = hex(HMAC(signing key, string to sign))
 *
 * Threat model: the client is anyone who can reach the listener. Everything in the
 * request is hostile until the signature matches, so the parsing is strict (one form of
 * each field, bounded lengths and counts) and nothing the client sent decides how much
 * the server allocates beyond the request it already holds. What the signature protects
 * is exactly what went into the canonical request, so each part of the request a handler
 * acts on must be in it: the method, the path, the query, the body (through its hash)
 * and every header the handler reads (the caller checks its own headers are signed; this
 * file insists on Host and, when present, x-amz-security-token and x-amz-content-sha256).
 *
 * No replay protection beyond the date bound: SigV4 has no nonce, so a captured request
 * can be sent again while its x-amz-date is within the skew. TLS is what keeps requests
 * from being captured; the bound limits what a leaked request (a proxy's log) is worth.
 */
#define _GNU_SOURCE
#include "http/sigv4.h"
#include "common/hex.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "common/cleanup.h"

#define ALGORITHM          "AWS4-HMAC-SHA256"
#define TERMINATOR         "aws4_request"
#define UNSIGNED_PAYLOAD   "UNSIGNED-PAYLOAD"
#define MAX_AUTHORIZATION  4096 /* botocore's are ~300 bytes, with 20 signed headers ~600 */
#define MAX_SIGNED_HEADERS 64
#define MAX_SCOPE_PART     63 /* a region or a service name */
#define MAX_QUERY_PARAMS   256
#define AMZ_DATE_LEN       16 /* YYYYMMDDTHHMMSSZ */

static int deny(struct cq_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int deny(struct cq_error *err, const char *fmt, ...)
{
    if (err == NULL)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    err->code = CQ_EDENIED;
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
    return -1;
}

/* ---- a growing text buffer; an allocation failure sticks and is reported once ---- */

struct buf {
    char *p;
    size_t len, cap;
    bool failed;
};

static void buf_add(struct buf *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 512;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (p == NULL) {
            b->failed = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void buf_puts(struct buf *b, const char *s)
{
    buf_add(b, s, strlen(s));
}

static void buf_putc(struct buf *b, char c)
{
    buf_add(b, &c, 1);
}

/* RFC 3986's unreserved characters: the only ones SigV4 leaves unencoded. */
static bool unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.' || c == '~';
}

static void buf_encode(struct buf *b, const char *s, size_t n, bool keep_slash)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (unreserved(c) || (keep_slash && c == '/')) {
            buf_putc(b, (char)c);
        } else {
            char e[3] = {'%', hex[c >> 4], hex[c & 15]};
            buf_add(b, e, 3);
        }
    }
}

static bool is_lower_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return s[n] == '\0';
}

static void sha256_hex(const void *data, size_t n, char out[65])
{
    uint8_t md[32];
    unsigned int len = 0;
    EVP_Digest(data, n, md, &len, EVP_sha256(), NULL);
    cq_hex_encode(md, sizeof(md), out);
}

/* ---- the canonical URI ---------------------------------------------------------- */

/* The path as botocore signs it: dot segments resolved and empty segments dropped
 * (RFC 3986 5.2.4, plus AWS's "consecutive slashes are one"), then every byte that is
 * not unreserved or '/' percent-encoded, the '%' of the client's own escapes included.
 * That second encoding is SigV4's rule for every service but S3.
 *
 * The signature covers this normalized form, not the bytes sent: "/a/../b" and "/b" sign
 * alike. The router must therefore act on the same normalized path, or refuse paths
 * with dot or empty segments (codeq serve refuses "." and ".." as ids), or a request
 * signed for one resource could be read as another. */
static void canonical_uri(struct buf *b, const char *path)
{
    size_t n = strlen(path);
    if (n == 0) {
        buf_putc(b, '/');
        return;
    }
    /* Segments kept, as offsets into path; a ".." pops one. */
    size_t cap = n / 2 + 2, kept = 0;
    cq_autofree size_t *start = malloc(cap * sizeof(size_t));
    cq_autofree size_t *len = malloc(cap * sizeof(size_t));
    if (start == NULL || len == NULL) {
        b->failed = true;
        return;
    }
    for (size_t i = 0; i <= n;) {
        size_t j = i;
        while (j < n && path[j] != '/')
            j++;
        size_t l = j - i;
        if (l == 2 && path[i] == '.' && path[i + 1] == '.') {
            if (kept > 0)
                kept--;
        } else if (l > 0 && !(l == 1 && path[i] == '.')) {
            start[kept] = i;
            len[kept] = l;
            kept++;
        }
        i = j + 1;
    }
    if (path[0] == '/')
        buf_putc(b, '/');
    for (size_t k = 0; k < kept; k++) {
        if (k > 0)
            buf_putc(b, '/');
        buf_encode(b, path + start[k], len[k], false);
    }
    if (path[n - 1] == '/' && kept > 0)
        buf_putc(b, '/');
}

/* ---- the canonical query string --------------------------------------------------- */

struct param {
    char *key, *value; /* canonical (re-encoded) */
};

/* Percent-decodes s[0..n) and encodes it again the SigV4 way, so that a client's
 * equivalent spellings ("%7e" or "~") canonicalize alike. '+' stays a plus: AWS's
 * clients send a space as %20. */
static int reencode(const char *s, size_t n, char **out)
{
    struct buf raw = {0}, enc = {0};
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%') {
            if (i + 2 >= n) {
                free(raw.p);
                return -1;
            }
            int h = cq_hex_digit(s[i + 1], false), l = cq_hex_digit(s[i + 2], false);
            if (h < 0 || l < 0) {
                free(raw.p);
                return -1;
            }
            buf_putc(&raw, (char)(h << 4 | l));
            i += 2;
        } else {
            buf_putc(&raw, s[i]);
        }
    }
    buf_encode(&enc, raw.p ? raw.p : "", raw.len, false);
    bool failed = raw.failed || enc.failed;
    free(raw.p);
    if (failed) {
        free(enc.p);
        return -2;
    }
    *out = enc.p ? enc.p : strdup("");
    return *out ? 0 : -2;
}

static int param_cmp(const void *a, const void *b)
{
    const struct param *x = a, *y = b;
    int c = strcmp(x->key, y->key);
    return c != 0 ? c : strcmp(x->value, y->value);
}

/* Pairs sorted by encoded name, then encoded value; "name" alone is "name=". */
static int canonical_query(struct buf *b, const char *query, struct cq_error *err)
{
    if (query == NULL || *query == '\0')
        return 0;
    struct param params[MAX_QUERY_PARAMS];
    size_t np = 0;
    int rc = 0;
    for (const char *p = query; *p != '\0';) {
        size_t n = strcspn(p, "&");
        if (n > 0) {
            if (np == MAX_QUERY_PARAMS) {
                rc =
                    deny(err, "malformed request: more than %d query parameters", MAX_QUERY_PARAMS);
                break;
            }
            const char *eq = memchr(p, '=', n);
            size_t kn = eq ? (size_t)(eq - p) : n;
            params[np].key = params[np].value = NULL;
            int r = reencode(p, kn, &params[np].key);
            if (r == 0)
                r = eq ? reencode(eq + 1, n - kn - 1, &params[np].value)
                       : ((params[np].value = strdup("")) ? 0 : -2);
            np++;
            if (r != 0) {
                rc = r == -1 ? deny(err, "malformed query string: bad percent escape")
                             : cq_error_set(err, ENOMEM, "canonical query: out of memory");
                break;
            }
        }
        p += n;
        if (*p == '&')
            p++;
    }
    if (rc == 0) {
        qsort(params, np, sizeof(params[0]), param_cmp);
        for (size_t i = 0; i < np; i++) {
            if (i > 0)
                buf_putc(b, '&');
            buf_puts(b, params[i].key);
            buf_putc(b, '=');
            buf_puts(b, params[i].value);
        }
    }
    for (size_t i = 0; i < np; i++) {
        free(params[i].key);
        free(params[i].value);
    }
    return rc;
}

/* ---- headers ----------------------------------------------------------------------- */

static bool is_space(char c)
{
    /* What Python's str.split() takes for whitespace among ASCII (botocore trims so). */
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f' ||
           (c >= 0x1c && c <= 0x1f);
}

/* "Trimall": no space before or after, runs of spaces one space. */
static void buf_trimall(struct buf *b, const char *v)
{
    bool pending = false, any = false;
    for (; *v != '\0'; v++) {
        if (is_space(*v)) {
            pending = any;
            continue;
        }
        if (pending)
            buf_putc(b, ' ');
        pending = false;
        any = true;
        buf_putc(b, *v);
    }
}

/* The first value of header name (case-insensitive), or NULL. */
static const char *header(const struct cq_sigv4_request *req, const char *name)
{
    for (size_t i = 0; i < req->n_headers; i++)
        if (strcasecmp(req->headers[i].name, name) == 0)
            return req->headers[i].value;
    return NULL;
}

static size_t header_count(const struct cq_sigv4_request *req, const char *name)
{
    size_t n = 0;
    for (size_t i = 0; i < req->n_headers; i++)
        n += strcasecmp(req->headers[i].name, name) == 0;
    return n;
}

/* The signed header names, split in place; they must be lowercase HTTP tokens, sorted
 * and unique, which is how every AWS SDK writes them and what makes the list one
 * string per set of headers. */
static int split_signed_headers(char *list, char **names, size_t *n, struct cq_error *err)
{
    *n = 0;
    for (char *p = list;;) {
        char *end = strchr(p, ';');
        if (end != NULL)
            *end = '\0';
        if (*p == '\0' ||
            strspn(p, "abcdefghijklmnopqrstuvwxyz0123456789-_.!#$%&'*+^`|~") != strlen(p))
            return deny(err, "malformed Authorization header: SignedHeaders must be lowercase "
                             "header names separated by ';'");
        if (*n == MAX_SIGNED_HEADERS)
            return deny(err, "malformed Authorization header: more than %d signed headers",
                        MAX_SIGNED_HEADERS);
        if (*n > 0 && strcmp(names[*n - 1], p) >= 0)
            return deny(err, "malformed Authorization header: SignedHeaders must be sorted "
                             "and unique");
        names[(*n)++] = p;
        if (end == NULL)
            return 0;
        p = end + 1;
    }
}

static bool in_list(char *const *names, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(names[i], name) == 0)
            return true;
    return false;
}

/* ---- the canonical request and the signature ---------------------------------------- */

/* The canonical request of req over the given header names, hashed: hex into out. */
static int canonical_request_hash(const struct cq_sigv4_request *req, char *const *names,
                                  size_t n_names, const char *signed_list, const char *payload_hash,
                                  char out[65], struct cq_error *err)
{
    struct buf b = {0};
    buf_puts(&b, req->method);
    buf_putc(&b, '\n');
    canonical_uri(&b, req->path);
    buf_putc(&b, '\n');
    if (canonical_query(&b, req->query, err) < 0) {
        free(b.p);
        return -1;
    }
    buf_putc(&b, '\n');
    for (size_t i = 0; i < n_names; i++) {
        buf_puts(&b, names[i]);
        buf_putc(&b, ':');
        size_t found = 0;
        for (size_t h = 0; h < req->n_headers; h++) {
            if (strcasecmp(req->headers[h].name, names[i]) != 0)
                continue;
            if (found++ > 0)
                buf_putc(&b, ',');
            buf_trimall(&b, req->headers[h].value);
        }
        if (found == 0) {
            free(b.p);
            return deny(err, "signed header '%s' is not in the request", names[i]);
        }
        buf_putc(&b, '\n');
    }
    buf_putc(&b, '\n');
    buf_puts(&b, signed_list);
    buf_putc(&b, '\n');
    buf_puts(&b, payload_hash);
    if (b.failed) {
        free(b.p);
        return cq_error_set(err, ENOMEM, "canonical request: out of memory");
    }
    sha256_hex(b.p, b.len, out);
    free(b.p);
    return 0;
}

static bool hmac(const void *key, size_t key_len, const char *msg, uint8_t out[32])
{
    unsigned int len = 0;
    return HMAC(EVP_sha256(), key, (int)key_len, (const uint8_t *)msg, strlen(msg), out, &len) !=
               NULL &&
           len == 32;
}

/* The binary signature; the secret and the intermediate keys are wiped before return. */
static int signature(const char *secret, const char *date, const char *region, const char *service,
                     const char *string_to_sign, uint8_t sig[32], struct cq_error *err)
{
    char k_secret[4 + CQ_SIGV4_SECRET_MAX + 1];
    uint8_t k[32];
    int n = snprintf(k_secret, sizeof(k_secret), "AWS4%s", secret);
    bool ok = n > 0 && (size_t)n < sizeof(k_secret) && hmac(k_secret, (size_t)n, date, k) &&
              hmac(k, 32, region, k) && hmac(k, 32, service, k) && hmac(k, 32, TERMINATOR, k) &&
              hmac(k, 32, string_to_sign, sig);
    OPENSSL_cleanse(k_secret, sizeof(k_secret));
    OPENSSL_cleanse(k, sizeof(k));
    return ok ? 0 : cq_error_set(err, CQ_EINTERNAL, "HMAC-SHA256 failed");
}

static int string_to_sign(const char *amz_date, const char *date, const char *region,
                          const char *service, const char *cr_hash, char *out, size_t size,
                          struct cq_error *err)
{
    int n = snprintf(out, size, ALGORITHM "\n%s\n%s/%s/%s/" TERMINATOR "\n%s", amz_date, date,
                     region, service, cr_hash);
    if (n < 0 || (size_t)n >= size)
        return cq_error_set(err, CQ_EINTERNAL, "string to sign too long");
    return 0;
}

/* ---- the Authorization header ------------------------------------------------------- */

struct authorization {
    char key_id[CQ_SIGV4_KEY_ID_MAX + 1];
    char date[9];
    char region[MAX_SCOPE_PART + 1];
    char service[MAX_SCOPE_PART + 1];
    char signed_list[MAX_AUTHORIZATION];
    uint8_t signature[32];
};

static bool copy_part(char *dst, size_t size, const char *src, size_t n, const char *allowed)
{
    if (n == 0 || n >= size)
        return false;
    for (size_t i = 0; i < n; i++)
        if (strchr(allowed, src[i]) == NULL || src[i] == '\0')
            return false;
    memcpy(dst, src, n);
    dst[n] = '\0';
    return true;
}

#define KEY_ID_CHARS "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-."
#define SCOPE_CHARS  "abcdefghijklmnopqrstuvwxyz0123456789-"

/* Credential=AKID/YYYYMMDD/REGION/SERVICE/aws4_request */
static int parse_credential(struct authorization *a, const char *s, size_t n, struct cq_error *err)
{
    const char *part[5];
    size_t len[5], k = 0;
    for (size_t i = 0, start = 0; i <= n; i++) {
        if (i < n && s[i] != '/')
            continue;
        if (k == 5)
            return deny(err, "malformed Authorization header: Credential must be "
                             "AKID/DATE/REGION/SERVICE/aws4_request");
        part[k] = s + start;
        len[k++] = i - start;
        start = i + 1;
    }
    if (k != 5 || len[4] != strlen(TERMINATOR) || memcmp(part[4], TERMINATOR, len[4]) != 0)
        return deny(err, "malformed Authorization header: Credential must be "
                         "AKID/DATE/REGION/SERVICE/aws4_request");
    if (!copy_part(a->key_id, sizeof(a->key_id), part[0], len[0], KEY_ID_CHARS))
        return deny(err, "malformed Authorization header: bad access key id in Credential");
    if (len[1] != 8 || !copy_part(a->date, sizeof(a->date), part[1], len[1], "0123456789"))
        return deny(err, "malformed Authorization header: the Credential's date must be "
                         "YYYYMMDD");
    if (!copy_part(a->region, sizeof(a->region), part[2], len[2], SCOPE_CHARS) ||
        !copy_part(a->service, sizeof(a->service), part[3], len[3], SCOPE_CHARS))
        return deny(err, "malformed Authorization header: bad region or service in Credential");
    return 0;
}

/* "AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...": each component
 * once, in any order, separated by ',' and optional spaces. */
static int parse_authorization(const char *h, struct authorization *a, struct cq_error *err)
{
    size_t alg = strlen(ALGORITHM);
    if (strlen(h) > MAX_AUTHORIZATION)
        return deny(err, "malformed Authorization header: longer than %d bytes", MAX_AUTHORIZATION);
    if (strncmp(h, ALGORITHM, alg) != 0 || (h[alg] != ' ' && h[alg] != '\0'))
        return deny(err, "unsupported Authorization scheme: only " ALGORITHM
                         " (AWS Signature Version 4) is accepted");
    bool have_cred = false, have_list = false, have_sig = false;
    for (const char *p = h + alg; *p != '\0';) {
        p += strspn(p, " ");
        size_t n = strcspn(p, ",");
        size_t t = n; /* without trailing spaces */
        while (t > 0 && p[t - 1] == ' ')
            t--;
        const char *eq = memchr(p, '=', t);
        if (eq == NULL)
            return deny(err, "malformed Authorization header: expected NAME=VALUE components");
        size_t kn = (size_t)(eq - p), vn = t - kn - 1;
        const char *v = eq + 1;
        if (kn == 10 && memcmp(p, "Credential", 10) == 0 && !have_cred) {
            if (parse_credential(a, v, vn, err) < 0)
                return -1;
            have_cred = true;
        } else if (kn == 13 && memcmp(p, "SignedHeaders", 13) == 0 && !have_list) {
            if (vn == 0 || vn >= sizeof(a->signed_list))
                return deny(err, "malformed Authorization header: empty SignedHeaders");
            memcpy(a->signed_list, v, vn);
            a->signed_list[vn] = '\0';
            have_list = true;
        } else if (kn == 9 && memcmp(p, "Signature", 9) == 0 && !have_sig) {
            if (vn != 64)
                return deny(err, "malformed Authorization header: Signature must be 64 hex "
                                 "digits");
            if (!cq_hex_decode(v, 32, a->signature, false))
                return deny(err, "malformed Authorization header: Signature must be 64 hex "
                                 "digits");
            have_sig = true;
        } else {
            return deny(err,
                        "malformed Authorization header: unknown or repeated component "
                        "'%.*s'",
                        (int)(kn > 20 ? 20 : kn), p);
        }
        p += n;
        if (*p == ',')
            p++;
    }
    if (!have_cred || !have_list || !have_sig)
        return deny(err, "incomplete Authorization header: Credential, SignedHeaders and "
                         "Signature are all required");
    return 0;
}

/* ---- dates -------------------------------------------------------------------------- */

/* YYYYMMDDTHHMMSSZ, UTC; a date that does not exist (Feb 30) is refused, not wrapped. */
static bool parse_amz_date(const char *s, int64_t *out)
{
    if (strlen(s) != AMZ_DATE_LEN || s[8] != 'T' || s[15] != 'Z')
        return false;
    for (int i = 0; i < 15; i++)
        if (i != 8 && (s[i] < '0' || s[i] > '9'))
            return false;
    struct tm tm = {0};
    char y[5] = {s[0], s[1], s[2], s[3], 0}, mo[3] = {s[4], s[5], 0}, d[3] = {s[6], s[7], 0};
    char h[3] = {s[9], s[10], 0}, mi[3] = {s[11], s[12], 0}, se[3] = {s[13], s[14], 0};
    tm.tm_year = atoi(y) - 1900;
    tm.tm_mon = atoi(mo) - 1;
    tm.tm_mday = atoi(d);
    tm.tm_hour = atoi(h);
    tm.tm_min = atoi(mi);
    tm.tm_sec = atoi(se);
    struct tm want = tm;
    time_t t = timegm(&tm);
    if (t == (time_t)-1 || tm.tm_year != want.tm_year || tm.tm_mon != want.tm_mon ||
        tm.tm_mday != want.tm_mday || tm.tm_hour != want.tm_hour || tm.tm_min != want.tm_min ||
        tm.tm_sec != want.tm_sec)
        return false;
    *out = (int64_t)t;
    return true;
}

/* ---- verify --------------------------------------------------------------------------- */

/* What the payload hash line of the canonical request is: x-amz-content-sha256 when
 * sent, checked against the body when it claims to be its hash. */
static int payload_hash(const struct cq_sigv4_request *req, char *const *names, size_t n_names,
                        char out[65], bool *is_signed, struct cq_error *err)
{
    char actual[65];
    sha256_hex(req->body_len ? (const void *)req->body : "", req->body_len, actual);
    const char *claimed = header(req, "x-amz-content-sha256");
    *is_signed = true;
    if (claimed == NULL) {
        memcpy(out, actual, 65);
        return 0;
    }
    /* Its value is the canonical request's last line, so it is covered either way; it
     * must still be signed, as any header a handler reads (that it is UNSIGNED-PAYLOAD
     * is something the caller may act on). */
    if (!in_list(names, n_names, "x-amz-content-sha256") ||
        header_count(req, "x-amz-content-sha256") != 1)
        return deny(err, "x-amz-content-sha256 must be sent once and signed");
    if (strcmp(claimed, UNSIGNED_PAYLOAD) == 0) {
        *is_signed = false;
        memcpy(out, UNSIGNED_PAYLOAD, sizeof(UNSIGNED_PAYLOAD));
        return 0;
    }
    if (strlen(claimed) != 64 || !is_lower_hex(claimed, 64))
        return deny(err, "unsupported x-amz-content-sha256: only the body's hex SHA-256 or "
                         "UNSIGNED-PAYLOAD (no streaming signatures)");
    /* The signature covers the claimed hash, not the body: a claim that is not the
     * body's hash would let any body ride on a valid signature. */
    if (CRYPTO_memcmp(claimed, actual, 64) != 0)
        return deny(err, "x-amz-content-sha256 is not the SHA-256 of the body");
    memcpy(out, actual, 65);
    return 0;
}

static int check_date(const struct cq_sigv4_config *cfg, const struct cq_sigv4_request *req,
                      const struct authorization *a, const char **amz_date, struct cq_error *err)
{
    *amz_date = header(req, "x-amz-date");
    int64_t t;
    if (*amz_date == NULL)
        return deny(err, "missing x-amz-date header");
    if (header_count(req, "x-amz-date") != 1 || !parse_amz_date(*amz_date, &t))
        return deny(err, "malformed x-amz-date header: one YYYYMMDDTHHMMSSZ (UTC) expected");
    if (memcmp(*amz_date, a->date, 8) != 0)
        return deny(err, "the Credential's date %s is not the day of x-amz-date %s", a->date,
                    *amz_date);
    /* The bound on replays (top of the file): AWS's 5 minutes either way absorbs clock
     * drift between client and server without making a captured request good for long. */
    int64_t now = cfg->now_unix ? cfg->now_unix : (int64_t)time(NULL);
    int64_t skew = cfg->max_skew_s ? cfg->max_skew_s : CQ_SIGV4_DEFAULT_SKEW_S;
    if (t < now - skew || t > now + skew)
        return deny(err,
                    "signature expired or not yet valid: x-amz-date %s is more than %lld "
                    "s from the server's time (check the client's clock)",
                    *amz_date, (long long)skew);
    return 0;
}

static int check_scope(const struct cq_sigv4_config *cfg, const struct authorization *a,
                       struct cq_error *err)
{
    const char *service = cfg->service ? cfg->service : CQ_SIGV4_SERVICE_AGENTCORE;
    /* A signature for another service (or region) must not be good here: keys may be
     * shared between services, and the scope is what keeps their signatures apart. */
    if (strcmp(a->service, service) != 0)
        return deny(err, "credential scope names service '%s'; this endpoint is '%s'", a->service,
                    service);
    if (cfg->region != NULL && strcmp(a->region, cfg->region) != 0)
        return deny(err, "credential scope names region '%s'; this endpoint is '%s'", a->region,
                    cfg->region);
    return 0;
}

int cq_sigv4_verify(const struct cq_sigv4_config *cfg, const struct cq_sigv4_request *req,
                    struct cq_sigv4_identity *id, struct cq_error *err)
{
    memset(id, 0, sizeof(*id));
    const char *h = header(req, "authorization");
    if (h == NULL)
        return deny(err, "missing Authorization header: requests must be signed with AWS "
                         "Signature Version 4");
    if (header_count(req, "authorization") != 1)
        return deny(err, "more than one Authorization header");
    cq_autofree struct authorization *a = calloc(1, sizeof(*a));
    if (a == NULL)
        return cq_error_set(err, ENOMEM, "out of memory");
    if (parse_authorization(h, a, err) < 0 || check_scope(cfg, a, err) < 0)
        return -1;
    char *names[MAX_SIGNED_HEADERS];
    size_t n_names;
    if (split_signed_headers(a->signed_list, names, &n_names, err) < 0)
        return -1;
    /* Host must be signed: otherwise a request signed for another endpoint that shares
     * the key (a second codeq, a test server, AWS itself) could be replayed here, and
     * the Host a handler or proxy routes on would be the attacker's choice. */
    if (!in_list(names, n_names, "host"))
        return deny(err, "the host header must be signed (SignedHeaders lacks 'host')");
    /* A session token must be signed: it names the credentials the signature claims. */
    const char *token = header(req, "x-amz-security-token");
    if (token != NULL && (!in_list(names, n_names, "x-amz-security-token") ||
                          header_count(req, "x-amz-security-token") != 1))
        return deny(err, "x-amz-security-token must be sent once and signed");
    const char *amz_date;
    if (check_date(cfg, req, a, &amz_date, err) < 0)
        return -1;
    char body_hash[65];
    bool payload_signed;
    if (payload_hash(req, names, n_names, body_hash, &payload_signed, err) < 0)
        return -1;
    char cr_hash[65];
    /* split_signed_headers cut signed_list at the ';': rebuild it for the canonical request. */
    char list[MAX_AUTHORIZATION];
    size_t off = 0;
    for (size_t i = 0; i < n_names; i++)
        off += (size_t)snprintf(list + off, sizeof(list) - off, "%s%s", i ? ";" : "", names[i]);
    if (canonical_request_hash(req, names, n_names, list, body_hash, cr_hash, err) < 0)
        return -1;
    char sts[512];
    if (string_to_sign(amz_date, a->date, a->region, a->service, cr_hash, sts, sizeof(sts), err) <
        0)
        return -1;

    /* Only now, with a well-formed request in hand, is the key store asked. */
    struct cq_sigv4_key key;
    memset(&key, 0, sizeof(key));
    int found = cfg->lookup(cfg->lookup_ctx, a->key_id, token, &key, err);
    if (found != 0) {
        OPENSSL_cleanse(&key, sizeof(key));
        if (found < 0)
            return cq_error_prefix(err, "access key lookup");
        return deny(err, "unknown access key '%s'%s", a->key_id,
                    token ? " (or its session token is not accepted)" : "");
    }
    uint8_t want[32];
    int rc = signature(key.secret, a->date, a->region, a->service, sts, want, err);
    snprintf(id->tenant, sizeof(id->tenant), "%s", key.tenant);
    OPENSSL_cleanse(&key, sizeof(key));
    if (rc < 0)
        return -1;
    /* Constant time: a compare that stops at the first differing byte tells, through
     * its timing, how many leading bytes of a guess are right, and lets a client build
     * a valid signature for a request of its choice byte by byte. */
    bool match = CRYPTO_memcmp(want, a->signature, sizeof(want)) == 0;
    OPENSSL_cleanse(want, sizeof(want));
    if (!match) {
        memset(id, 0, sizeof(*id));
        return deny(err,
                    "signature mismatch: the request's signature is not the one computed "
                    "from the canonical request (method, path, query, signed headers, "
                    "body) with the secret of '%s'",
                    a->key_id);
    }
    snprintf(id->key_id, sizeof(id->key_id), "%s", a->key_id);
    id->payload_signed = payload_signed;
    id->session_token = token != NULL;
    return 0;
}

int cq_sigv4_sign(const struct cq_sigv4_request *req, const char *key_id, const char *secret,
                  const char *region, const char *service, const char *amz_date,
                  const char *signed_headers, char *out, size_t out_size, struct cq_error *err)
{
    if (strlen(amz_date) != AMZ_DATE_LEN || strlen(signed_headers) >= MAX_AUTHORIZATION ||
        strlen(secret) > CQ_SIGV4_SECRET_MAX)
        return cq_error_set(err, CQ_EINVALID, "sign: bad date, header list or secret");
    char list[MAX_AUTHORIZATION], *names[MAX_SIGNED_HEADERS];
    size_t n_names;
    snprintf(list, sizeof(list), "%s", signed_headers);
    if (split_signed_headers(list, names, &n_names, err) < 0)
        return cq_error_prefix(err, "sign");
    char body_hash[65], date[9], cr_hash[65], sts[512];
    const char *claimed = header(req, "x-amz-content-sha256");
    if (claimed != NULL && strlen(claimed) < sizeof(body_hash))
        snprintf(body_hash, sizeof(body_hash), "%s", claimed);
    else
        sha256_hex(req->body_len ? (const void *)req->body : "", req->body_len, body_hash);
    snprintf(date, sizeof(date), "%.8s", amz_date);
    uint8_t sig[32];
    char sig_hex[65];
    if (canonical_request_hash(req, names, n_names, signed_headers, body_hash, cr_hash, err) < 0 ||
        string_to_sign(amz_date, date, region, service, cr_hash, sts, sizeof(sts), err) < 0 ||
        signature(secret, date, region, service, sts, sig, err) < 0)
        return -1;
    cq_hex_encode(sig, sizeof(sig), sig_hex);
    int n =
        snprintf(out, out_size,
                 ALGORITHM " Credential=%s/%s/%s/%s/" TERMINATOR ", SignedHeaders=%s, Signature=%s",
                 key_id, date, region, service, signed_headers, sig_hex);
    if (n < 0 || (size_t)n >= out_size)
        return cq_error_set(err, CQ_ELIMIT, "sign: Authorization value longer than %zu", out_size);
    return 0;
}
