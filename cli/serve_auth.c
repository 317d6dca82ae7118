/* cli/serve_auth.c - `codeq serve`'s authentication: SigV4 (http/sigv4.h) for the
 * AgentCore routes and bearer tokens for /mcp, against the keys of `codeq tenant` /
 * `codeq key` (fleet/keys.h).
 *
 * One keys file for the fleet and for serve: the same tools hand out, rotate and revoke
 * keys, and a revoked key is refused within a second without a restart. An AgentCore
 * client uses a key id as its AWS access key id and the key's secret as its secret
 * access key; an MCP client sends "Authorization: Bearer KEY_ID:SECRET" (MCP clients
 * take a static header where they take no request signer). Either way the key's
 * tenant owns the sessions it starts.
 */
#define _GNU_SOURCE
#include "cli/serve.h"
#include "fleet/config.h"
#include "fleet/keyring.h"
#include "fleet/keys.h"
#include "http/sigv4.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* A request with more headers than this is refused: the signature covers them all. */
#define MAX_HEADERS 64

struct cq_serve_auth {
    struct cq_keystore *keys;
    struct cq_keyring *keyring; /* keys_file = redis: the keys' source */
};

int cq_serve_auth_open(const char *keys_file, struct cq_serve_auth **out, struct cq_error *err)
{
    struct cq_serve_auth *a = calloc(1, sizeof(*a));
    if (a == NULL)
        return cq_error_sys(err, ENOMEM, "keys");
    /* "redis": the fleet's keyring, found as the daemons find it (CODEQ_REDIS and the
     * other CODEQ_* settings), so that a gateway in front of a fleet takes the keys the
     * fleet's own tools hand out and revoke, with no file to copy to its machine. */
    struct cq_fleet_config cfg;
    cq_fleet_config_init(&cfg);
    snprintf(cfg.keys_file, sizeof(cfg.keys_file), "%s", keys_file);
    char *no_args[] = {"codeq", NULL};
    bool help;
    int rc = cq_keyring_named(keys_file) ? cq_fleet_config_load(&cfg, 1, no_args, &help, err) : 0;
    if (rc == 0)
        rc = cq_keys_open(&cfg, &a->keyring, &a->keys, err);
    explicit_bzero(cfg.redis_password, sizeof(cfg.redis_password));
    if (rc < 0) {
        free(a);
        return -1;
    }
    *out = a;
    return 0;
}

void cq_serve_auth_close(struct cq_serve_auth *a)
{
    if (a == NULL)
        return;
    cq_keystore_close(a->keys);
    cq_keyring_close(a->keyring);
    free(a);
}

static int lookup(void *ctx, const char *key_id, const char *session_token,
                  struct cq_sigv4_key *out, struct cq_error *err)
{
    struct cq_serve_auth *a = ctx;
    /* codeq's keys are long-term: a request with a session token was signed with
     * temporary credentials codeq never issued. */
    if (session_token != NULL)
        return 1;
    struct cq_key key;
    if (cq_keystore_lookup(a->keys, key_id, &key, err) < 0)
        return err->code == CQ_ENOTFOUND ? 1 : -1;
    int rc = 1;
    if (!key.revoked && strlen(key.secret) <= CQ_SIGV4_SECRET_MAX) {
        memcpy(out->secret, key.secret, strlen(key.secret) + 1);
        snprintf(out->tenant, sizeof(out->tenant), "%s", key.tenant);
        rc = 0;
    }
    explicit_bzero(&key, sizeof(key));
    return rc;
}

/* Whether name is in the Authorization header's SignedHeaders list. The verifier has
 * checked that list against the signature; this only reads it. */
static bool signed_header(const char *authorization, const char *name)
{
    const char *list = strstr(authorization, "SignedHeaders=");
    if (list == NULL)
        return false;
    list += strlen("SignedHeaders=");
    size_t len = strlen(name);
    for (const char *p = list; *p != '\0' && *p != ',' && *p != ' ';) {
        size_t n = strcspn(p, ";, ");
        if (n == len && strncasecmp(p, name, len) == 0)
            return true;
        p += n;
        if (*p == ';')
            p++;
    }
    return false;
}

int cq_serve_authenticate(struct cq_serve_auth *a, const struct cq_http_request *req,
                          const char *const *must_sign, char tenant[CQ_TENANT_MAX + 1],
                          struct cq_error *err)
{
    struct cq_http_header h[MAX_HEADERS];
    size_t n = cq_http_headers(req, h, MAX_HEADERS);
    if (n > MAX_HEADERS)
        return cq_error_set(err, CQ_EDENIED, "more than %d headers", MAX_HEADERS);
    if (req->target == NULL)
        return cq_error_set(err, CQ_EINTERNAL, "the request target is unknown");
    /* The signature covers the target as sent: split it, do not decode it. */
    char *path = strdup(req->target);
    if (path == NULL)
        return cq_error_sys(err, ENOMEM, "authenticate");
    char *query = strchr(path, '?');
    if (query != NULL)
        *query++ = '\0';
    struct cq_sigv4_header sh[MAX_HEADERS];
    for (size_t i = 0; i < n; i++) {
        sh[i].name = h[i].name;
        sh[i].value = h[i].value;
    }
    struct cq_sigv4_request sreq = {
        .method = req->method,
        .path = path,
        .query = query,
        .headers = sh,
        .n_headers = n,
        .body = req->body,
        .body_len = req->body_len,
    };
    struct cq_sigv4_config cfg = {
        .service = CQ_SIGV4_SERVICE_AGENTCORE,
        .lookup = lookup,
        .lookup_ctx = a,
    };
    struct cq_sigv4_identity id;
    int rc = cq_sigv4_verify(&cfg, &sreq, &id, err);
    free(path);
    if (rc < 0)
        return -1;
    /* UNSIGNED-PAYLOAD leaves the body (the code a call runs) to anyone on the path;
     * botocore signs the payload of every request of this service. */
    if (!id.payload_signed)
        return cq_error_set(err, CQ_EDENIED,
                            "the payload must be signed "
                            "(x-amz-content-sha256: UNSIGNED-PAYLOAD refused)");
    /* A header codeq acts on (the session a call runs in, its timeout) must be signed,
     * or anyone on the path could move a signed call into another session. */
    const char *authorization = cq_http_header(req, "authorization");
    for (size_t i = 0; must_sign != NULL && must_sign[i] != NULL; i++)
        if (cq_http_header(req, must_sign[i]) != NULL &&
            (authorization == NULL || !signed_header(authorization, must_sign[i])))
            return cq_error_set(err, CQ_EDENIED, "the header %s must be signed", must_sign[i]);
    snprintf(tenant, CQ_TENANT_MAX + 1, "%s", id.tenant);
    return 0;
}

/* Whether a equals b, in a time that depends on b's length only (b: what the client
 * sent), so that the time taken tells nothing of where a secret first differs. */
static bool equal_secret(const char *a, const char *b, size_t b_len)
{
    size_t a_len = strlen(a);
    volatile unsigned char diff = a_len != b_len;
    for (size_t i = 0; i < b_len; i++)
        diff |= (unsigned char)(a[i < a_len ? i : 0] ^ b[i]);
    return diff == 0;
}

int cq_serve_authenticate_bearer(struct cq_serve_auth *a, const struct cq_http_request *req,
                                 char tenant[CQ_TENANT_MAX + 1], struct cq_error *err)
{
    const char *h = cq_http_header(req, "authorization");
    if (h == NULL)
        return cq_error_set(err, CQ_EDENIED,
                            "authentication required: send Authorization: Bearer KEY_ID:SECRET "
                            "(a key of codeq key create)");
    if (strncasecmp(h, "Bearer ", 7) != 0)
        return cq_error_set(err, CQ_EDENIED,
                            "the Authorization header must be Bearer KEY_ID:SECRET");
    const char *token = h + 7;
    while (*token == ' ')
        token++;
    const char *colon = strchr(token, ':');
    size_t id_len = colon != NULL ? (size_t)(colon - token) : 0;
    if (colon == NULL || id_len == 0 || id_len > CQ_KEY_ID_LEN)
        return cq_error_set(err, CQ_EDENIED, "the bearer token must be KEY_ID:SECRET");
    char key_id[CQ_KEY_ID_LEN + 1];
    memcpy(key_id, token, id_len);
    key_id[id_len] = '\0';
    /* The token is everything after the colon: text after the secret (a space, a second
     * token, a comma) makes it another token, never the secret and something ignored. */
    const char *secret = colon + 1;
    size_t secret_len = strlen(secret);
    struct cq_key key;
    if (cq_keystore_lookup(a->keys, key_id, &key, err) < 0) {
        if (err->code != CQ_ENOTFOUND)
            return -1;
        /* The same answer for every refusal: which key ids exist is not told. */
        return cq_error_set(err, CQ_EDENIED, "unknown key, revoked key or wrong secret");
    }
    bool ok = equal_secret(key.secret, secret, secret_len) && !key.revoked;
    if (ok)
        snprintf(tenant, CQ_TENANT_MAX + 1, "%s", key.tenant);
    explicit_bzero(&key, sizeof(key));
    if (!ok)
        return cq_error_set(err, CQ_EDENIED, "unknown key, revoked key or wrong secret");
    return 0;
}
