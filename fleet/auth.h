/* fleet/auth.h - signed requests: who sent a request, and that it is what they sent.
 *
 * A client signs a request with one of its tenant's keys (fleet/keys.h) in the spirit
 * of AWS SigV4: it packs the request, then sends a Request whose only field is
 * `signed`: those exact bytes, its key id, the time, and an HMAC-SHA256 under the key's
 * secret of the canonical string
 *
 *   CODEQ1-HMAC-SHA256 \n <timestamp_unix_ms> \n <key_id> \n <tenant> \n <request_id>
 *   \n <operation> \n <hex SHA-256 of the packed request>
 *
 * (operation: the tool of an invoke, else startSession, getSession, listSessions or
 * stopSession). The digest covers every field, so nothing outside the string can be
 * changed; the fields named besides are there so that a log line or a refusal can say
 * what was signed. A claim-checked payload is covered by its claim's sha256, which is
 * inside the packed request.
 *
 * Signing the bytes rather than a re-encoding of them means no canonical protobuf
 * encoding is needed (there is none across implementations: map order, unknown
 * fields): the dispatcher passes the envelope on unchanged, and a worker, or recovery
 * after a worker died, verifies the very bytes the client signed. */
#ifndef CQ_FLEET_AUTH_H
#define CQ_FLEET_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "common/error.h"
#include "codeq.pb-c.h"

struct cq_keystore;

#define CQ_AUTH_WINDOW_MS_DEFAULT (5 * 60 * 1000)

/* The operation a canonical string names. */
const char *cq_auth_operation(const Codeq__V1__Request *req);

/* Packs req (unsigned; its tenant must be the key's) into a signed envelope, signed at
 * now_ms: *out (malloc'd), *len. */
int cq_auth_sign(const Codeq__V1__Request *req, const char *key_id, const char *secret,
                 int64_t now_ms, uint8_t **out, size_t *len, struct cq_error *err);

/* A request as received, opened. */
struct cq_opened {
    Codeq__V1__Request *outer; /* what came in */
    Codeq__V1__Request *req;   /* the request: the signed one inside outer, or outer */
    bool is_signed;
    char key_id[32];
    uint8_t digest[32]; /* SHA-256 of the signed bytes (signed requests) */
};

/* Decodes a request and checks who sent it. With keys (ks not NULL) only signed
 * requests pass: by a known key that is not revoked, of the tenant the request names,
 * with a valid signature, and signed at most window_ms from now_ms (window_ms 0: no
 * window; a worker checks what the dispatcher admitted, which may have waited in a
 * queue). Without keys (the fleet is keyless) only unsigned requests without a tenant
 * pass.
 *
 * Fails with CQ_EPROTO when the bytes are not a request (op->req NULL), CQ_EINVALID when
 * the envelope is malformed, CQ_EDENIED (with why) when the sender is refused; then
 * op->req is set whenever the request itself decoded, so that the refusal can be
 * answered. Free with cq_opened_free() in every case. */
int cq_auth_open(struct cq_keystore *ks, const uint8_t *bytes, size_t len, int64_t now_ms,
                 int64_t window_ms, struct cq_opened *op, struct cq_error *err);
/* Decodes a request that was verified before it was stored (Redis' req:<rid>, which
 * only a dispatcher writes), without checking it again. */
int cq_auth_unwrap(const uint8_t *bytes, size_t len, struct cq_opened *op, struct cq_error *err);
void cq_opened_free(struct cq_opened *op);
/* The request as it travels on (forwards, the record in Redis): the envelope unchanged
 * for a signed one, with the session id the fleet gave a startSession beside it (the
 * one field outside the signature: the client cannot know it); an unsigned one packed
 * again. *out is malloc'd. */
int cq_opened_pack(const struct cq_opened *op, uint8_t **out, size_t *len, struct cq_error *err);
/* The digest as hexadecimal, "" for an unsigned request (what fleet/store.h records). */
void cq_opened_digest_hex(const struct cq_opened *op, char out[65]);

/* SHA-256 of data (for claims' sha256 and digests). */
void cq_sha256(const void *data, size_t len, uint8_t out[32]);

#endif
