/* fleet/auth.c - signing and verifying requests (fleet/auth.h has the scheme). */
#define _GNU_SOURCE /* asprintf */
#include "fleet/auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "fleet/keys.h"

#define SCHEME "CODEQ1-HMAC-SHA256"

void cq_sha256(const void *data, size_t len, uint8_t out[32])
{
    unsigned n = 32;
    EVP_Digest(data, len, out, &n, EVP_sha256(), NULL);
}

const char *cq_auth_operation(const Codeq__V1__Request *req)
{
    switch (req->operation_case) {
    case CODEQ__V1__REQUEST__OPERATION_START_SESSION:
        return "startSession";
    case CODEQ__V1__REQUEST__OPERATION_GET_SESSION:
        return "getSession";
    case CODEQ__V1__REQUEST__OPERATION_LIST_SESSIONS:
        return "listSessions";
    case CODEQ__V1__REQUEST__OPERATION_STOP_SESSION:
        return "stopSession";
    case CODEQ__V1__REQUEST__OPERATION_INVOKE:
        return req->invoke != NULL && req->invoke->tool != NULL ? req->invoke->tool : "";
    case CODEQ__V1__REQUEST__OPERATION_CANCEL_CALL:
        return "cancelCall";
    default:
        return "";
    }
}

static const char *str(const char *s)
{
    return s != NULL ? s : "";
}

/* HMAC-SHA256 of the canonical string of req (packed as digest) into mac. */
static int sign_canonical(const Codeq__V1__Request *req, const uint8_t digest[32],
                          const char *key_id, const char *secret, int64_t ts, uint8_t mac[32],
                          struct cq_error *err)
{
    char hex[65];
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", digest[i]);
    char *canonical = NULL;
    int n = asprintf(&canonical, SCHEME "\n%lld\n%s\n%s\n%s\n%s\n%s", (long long)ts, key_id,
                     str(req->tenant), str(req->request_id), cq_auth_operation(req), hex);
    if (n < 0)
        return cq_error_sys(err, ENOMEM, "sign the request");
    unsigned len = 32;
    bool ok = HMAC(EVP_sha256(), secret, (int)strlen(secret), (const uint8_t *)canonical, (size_t)n,
                   mac, &len) != NULL;
    free(canonical);
    if (!ok)
        return cq_error_set(err, CQ_EINTERNAL, "HMAC-SHA256 failed");
    return 0;
}

int cq_auth_sign(const Codeq__V1__Request *req, const char *key_id, const char *secret,
                 int64_t now_ms, uint8_t **out, size_t *len, struct cq_error *err)
{
    if (req->signed_ != NULL)
        return cq_error_set(err, CQ_EINVALID, "the request is signed already");
    size_t inner_len = codeq__v1__request__get_packed_size(req);
    uint8_t *inner = malloc(inner_len ? inner_len : 1);
    if (inner == NULL)
        return cq_error_sys(err, ENOMEM, "sign the request");
    codeq__v1__request__pack(req, inner);
    uint8_t digest[32], mac[32];
    cq_sha256(inner, inner_len, digest);
    if (sign_canonical(req, digest, key_id, secret, now_ms, mac, err) < 0) {
        free(inner);
        return -1;
    }
    Codeq__V1__Signed s = CODEQ__V1__SIGNED__INIT;
    s.request.data = inner;
    s.request.len = inner_len;
    s.key_id = (char *)key_id;
    s.timestamp_unix_ms = now_ms;
    s.signature.data = mac;
    s.signature.len = sizeof(mac);
    Codeq__V1__Request outer = CODEQ__V1__REQUEST__INIT;
    outer.signed_ = &s;
    *len = codeq__v1__request__get_packed_size(&outer);
    *out = malloc(*len);
    if (*out == NULL) {
        free(inner);
        return cq_error_sys(err, ENOMEM, "sign the request");
    }
    codeq__v1__request__pack(&outer, *out);
    free(inner);
    return 0;
}

void cq_opened_free(struct cq_opened *op)
{
    if (op->req != NULL && op->req != op->outer)
        codeq__v1__request__free_unpacked(op->req, NULL);
    if (op->outer != NULL)
        codeq__v1__request__free_unpacked(op->outer, NULL);
    memset(op, 0, sizeof(*op));
}

/* Beside `signed`, an envelope carries at most the session id the fleet gave a
 * startSession (adopt_session_id() checks that case), and nothing unknown: what the
 * dispatcher passes on must decode at the worker exactly as it did here. */
static bool outer_only_signed(const Codeq__V1__Request *r)
{
    return r->base.n_unknown_fields == 0 && r->signed_->base.n_unknown_fields == 0 &&
           str(r->request_id)[0] == '\0' && str(r->tenant)[0] == '\0' &&
           str(r->reply_topic)[0] == '\0' && r->deadline_unix_ms == 0 &&
           str(r->traceparent)[0] == '\0' &&
           r->operation_case == CODEQ__V1__REQUEST__OPERATION__NOT_SET;
}

static int verify(struct cq_keystore *ks, struct cq_opened *op, int64_t now_ms, int64_t window_ms,
                  struct cq_error *err)
{
    const Codeq__V1__Signed *s = op->outer->signed_;
    const Codeq__V1__Request *req = op->req;
    if (ks == NULL)
        return cq_error_set(err, CQ_EDENIED,
                            "this fleet has no keys (keyless: one tenant, no signatures); it "
                            "refuses a signed request rather than run it without the isolation "
                            "its tenant expects");
    if (!cq_key_id_ok(str(s->key_id)))
        return cq_error_set(err, CQ_EDENIED, "unknown key id");
    struct cq_key key;
    struct cq_error why;
    if (cq_keystore_lookup(ks, s->key_id, &key, &why) < 0)
        return cq_error_set(err, CQ_EDENIED, "unknown key id '%s'", s->key_id);
    int rc = -1;
    if (key.revoked) {
        cq_error_set(err, CQ_EDENIED, "key '%s' was revoked", key.id);
        goto out;
    }
    if (strcmp(str(req->tenant), key.tenant) != 0) {
        cq_error_set(err, CQ_EDENIED, "key '%s' is not a key of tenant '%s'", key.id,
                     str(req->tenant));
        goto out;
    }
    uint8_t mac[32];
    if (sign_canonical(req, op->digest, key.id, key.secret, s->timestamp_unix_ms, mac, err) < 0)
        goto out;
    if (s->signature.len != sizeof(mac) ||
        CRYPTO_memcmp(mac, s->signature.data, sizeof(mac)) != 0) {
        cq_error_set(err, CQ_EDENIED,
                     "bad signature: it is not the HMAC-SHA256 of the request's canonical "
                     "string under key '%s' (docs/security.md)",
                     key.id);
        goto out;
    }
    /* After the signature: only a genuine timestamp is worth reporting as expired. */
    int64_t skew = now_ms - s->timestamp_unix_ms;
    if (window_ms > 0 && (skew > window_ms || skew < -window_ms)) {
        cq_error_set(err, CQ_EDENIED,
                     "expired: signed %lld s %s the fleet's clock, outside its window of "
                     "%lld s (a replay, or a client clock that is off)",
                     (long long)((skew < 0 ? -skew : skew) / 1000),
                     skew < 0 ? "ahead of" : "behind", (long long)(window_ms / 1000));
        goto out;
    }
    rc = 0;
out:
    explicit_bzero(&key, sizeof(key));
    return rc;
}

/* A startSession's session id is the fleet's, set beside the signed bytes. */
static int adopt_session_id(struct cq_opened *op, struct cq_error *err)
{
    const char *given = str(op->outer->session_id);
    if (given[0] == '\0')
        return 0;
    if (op->req->operation_case != CODEQ__V1__REQUEST__OPERATION_START_SESSION ||
        str(op->req->session_id)[0] != '\0')
        return cq_error_set(err, CQ_EINVALID,
                            "a signed request carries nothing beside `signed` but the session "
                            "id the fleet gave a startSession");
    char *copy = strdup(given);
    if (copy == NULL)
        return cq_error_sys(err, ENOMEM, "open the request");
    /* An unset proto3 string is protobuf-c's shared empty string, never freed. */
    if (op->req->session_id != NULL && op->req->session_id != (char *)protobuf_c_empty_string)
        free(op->req->session_id);
    op->req->session_id = copy;
    return 0;
}

static int unwrap(const uint8_t *bytes, size_t len, struct cq_opened *op, struct cq_error *err)
{
    memset(op, 0, sizeof(*op));
    op->outer = codeq__v1__request__unpack(NULL, len, bytes);
    if (op->outer == NULL)
        return cq_error_set(err, CQ_EPROTO, "not a codeq.v1.Request: the protobuf does not decode");
    const Codeq__V1__Signed *s = op->outer->signed_;
    if (s == NULL) {
        op->req = op->outer;
        return 0;
    }
    op->is_signed = true;
    snprintf(op->key_id, sizeof(op->key_id), "%s", str(s->key_id));
    cq_sha256(s->request.data, s->request.len, op->digest);
    op->req = codeq__v1__request__unpack(NULL, s->request.len, s->request.data);
    if (op->req == NULL)
        return cq_error_set(err, CQ_EPROTO, "the signed request does not decode");
    if (op->req->signed_ != NULL)
        return cq_error_set(err, CQ_EINVALID, "a signed request signs an unsigned request");
    return adopt_session_id(op, err);
}

int cq_auth_unwrap(const uint8_t *bytes, size_t len, struct cq_opened *op, struct cq_error *err)
{
    return unwrap(bytes, len, op, err);
}

int cq_opened_pack(const struct cq_opened *op, uint8_t **out, size_t *len, struct cq_error *err)
{
    Codeq__V1__Request *wire = op->is_signed ? op->outer : op->req;
    char *kept = wire->session_id;
    if (op->is_signed)
        wire->session_id = op->req->operation_case == CODEQ__V1__REQUEST__OPERATION_START_SESSION
                               ? op->req->session_id
                               : (char *)protobuf_c_empty_string;
    *len = codeq__v1__request__get_packed_size(wire);
    *out = malloc(*len ? *len : 1);
    if (*out != NULL)
        codeq__v1__request__pack(wire, *out);
    wire->session_id = kept;
    if (*out == NULL)
        return cq_error_sys(err, ENOMEM, "pack the request");
    return 0;
}

void cq_opened_digest_hex(const struct cq_opened *op, char out[65])
{
    out[0] = '\0';
    if (op->is_signed)
        for (int i = 0; i < 32; i++)
            snprintf(out + 2 * i, 3, "%02x", op->digest[i]);
}

int cq_auth_open(struct cq_keystore *ks, const uint8_t *bytes, size_t len, int64_t now_ms,
                 int64_t window_ms, struct cq_opened *op, struct cq_error *err)
{
    if (unwrap(bytes, len, op, err) < 0)
        return -1;
    if (!op->is_signed) {
        if (ks != NULL)
            return cq_error_set(err, CQ_EDENIED,
                                "unsigned request: this fleet takes only requests signed with a "
                                "tenant's key (docs/security.md)");
        if (str(op->req->tenant)[0] != '\0')
            return cq_error_set(err, CQ_EINVALID,
                                "tenant '%s' named, but this fleet is keyless (no tenants); "
                                "leave tenant empty",
                                op->req->tenant);
        return 0;
    }
    if (!outer_only_signed(op->outer))
        return cq_error_set(err, CQ_EINVALID,
                            "a signed request carries nothing beside `signed` but the session "
                            "id the fleet gave a startSession");
    return verify(ks, op, now_ms, window_ms, err);
}
