/* http/sigv4.h - AWS Signature Version 4, verified on an incoming request (codeq serve).
 *
 * The AgentCore SDKs (boto3's `bedrock-agentcore` client and everything built on it) sign
 * every request with SigV4: an `Authorization: AWS4-HMAC-SHA256 Credential=AKID/DATE/
 * REGION/SERVICE/aws4_request, SignedHeaders=a;b, Signature=HEX` header over a canonical
 * form of the request. cq_sigv4_verify() rebuilds that canonical form from what arrived,
 * derives the signing key from the secret the operator configured for AKID and compares.
 *
 * The request must be handed over as it came off the wire: the path and the query still
 * percent-encoded (not the decoded path a router works on), every header (a repeated one
 * once per occurrence, in arrival order) and the whole body.
 *
 * Every refusal is -1 with err->code CQ_EDENIED and a message meant for the client (it
 * names what is wrong, never a secret or the signature the server computed): answer 403
 * AccessDeniedException with it. Any other code is the key lookup's own failure (a store
 * down): a 500, not the client's fault.
 */
#ifndef CQ_HTTP_SIGV4_H
#define CQ_HTTP_SIGV4_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "common/error.h"
#include "common/tenant.h"

#define CQ_SIGV4_SERVICE_AGENTCORE "bedrock-agentcore"
#define CQ_SIGV4_DEFAULT_SKEW_S    300 /* AWS's own: 5 minutes either way */
#define CQ_SIGV4_KEY_ID_MAX        128 /* AWS access key ids are 16 to 128 characters */
#define CQ_SIGV4_SECRET_MAX        128

struct cq_sigv4_header {
    const char *name; /* any case */
    const char *value;
};

struct cq_sigv4_request {
    const char *method; /* "GET", ... as sent */
    const char *path;   /* raw, still percent-encoded, without the query: "/a%20b" */
    const char *query;  /* raw, without '?'; NULL or "" when none */
    const struct cq_sigv4_header *headers;
    size_t n_headers;
    const uint8_t *body;
    size_t body_len;
};

/* What the lookup hands back for a known key id. The verifier wipes it after use. */
struct cq_sigv4_key {
    char secret[CQ_SIGV4_SECRET_MAX + 1];
    char tenant[CQ_TENANT_MAX + 1];
};

/* Finds key_id's secret and tenant. session_token is the request's x-amz-security-token
 * (signed, checked by the verifier), or NULL: the lookup decides whether that key takes
 * session credentials with that token. Returns 0 with key filled, 1 when the key id is
 * unknown or the token not accepted (the client is told "unknown access key"), or -1
 * with err when it cannot tell (its store failed). It must not log the secret. */
typedef int (*cq_sigv4_lookup_fn)(void *ctx, const char *key_id, const char *session_token,
                                  struct cq_sigv4_key *key, struct cq_error *err);

struct cq_sigv4_config {
    const char *service; /* the credential scope's service; NULL: bedrock-agentcore */
    const char *region;  /* required region; NULL: any (the client picks one) */
    unsigned max_skew_s; /* x-amz-date this far from now at most; 0: 300 */
    int64_t now_unix;    /* 0: the wall clock (tests pin a time) */
    cq_sigv4_lookup_fn lookup;
    void *lookup_ctx;
};

struct cq_sigv4_identity {
    char key_id[CQ_SIGV4_KEY_ID_MAX + 1];
    char tenant[CQ_TENANT_MAX + 1];
    bool payload_signed; /* false: x-amz-content-sha256 was UNSIGNED-PAYLOAD */
    bool session_token;  /* the request carried (and signed) x-amz-security-token */
};

/* Verifies req's signature. 0 with id filled, or -1 (see the top of this file). */
int cq_sigv4_verify(const struct cq_sigv4_config *cfg, const struct cq_sigv4_request *req,
                    struct cq_sigv4_identity *id, struct cq_error *err);

/* The client's side, for tests and fuzzing: the Authorization value for req signed with
 * key_id/secret at amz_date ("YYYYMMDDTHHMMSSZ", which req's x-amz-date must carry), over
 * the headers named in signed_headers ("host;x-amz-date": lowercase, sorted). The payload
 * hash is x-amz-content-sha256's value when req has one, as the verifier reads it. */
int cq_sigv4_sign(const struct cq_sigv4_request *req, const char *key_id, const char *secret,
                  const char *region, const char *service, const char *amz_date,
                  const char *signed_headers, char *out, size_t out_size, struct cq_error *err);

#endif
