/* fleet/claim.h - messages too large for Kafka, sent by reference (the claim check).
 *
 * Stock Kafka takes messages up to 1 MB (message.max.bytes), and a broker that holds
 * 150 MB requests in memory runs out of it. So a writer whose message would be larger
 * than the claim threshold (claim_threshold, 512 KiB by default) stores the bulk in
 * Redis first (cq_store_claim_put: <prefix>claim:<id>, with a time to live) and sends a
 * small message that refers to it:
 * - a request: its Invoke's Arguments (file contents, code) as arguments_claim; every
 *   other field stays in the message, so the dispatcher routes and checks it (the
 *   claim's size and largest_file against the limits) without reading the bulk;
 * - a final reply: the whole packed Response, as a Response whose payload is a claim.
 * The reader fetches the claim and decodes it with the functions below, which treat it
 * as the hostile bytes it may be: a reference names only an id of 32 hex digits (never
 * a key of its own), and what is fetched must match the message that referred to it.
 *
 * What Redis holds is sealed (AES-256-GCM) under a key made for that claim alone and
 * carried in the message that refers to it (Claim.key). Redis alone then never yields a
 * payload, as for every other value of an encrypted fleet; the key's exposure is the
 * Kafka message's, which is what a payload small enough to travel inline has anyway.
 * Clients cannot hold the fleet's data keys (they would read every tenant's values),
 * which is why claims have keys of their own.
 *
 * Request claims are deleted by the worker once it claimed the request (it never runs
 * twice, so no one reads them again); reply claims live for claim_ttl and are deleted
 * with their session (END_SESSION in fleet/store.c). */
#ifndef CQ_FLEET_CLAIM_H
#define CQ_FLEET_CLAIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "common/error.h"
#include "codeq.pb-c.h"

struct cq_store;

#define CQ_CLAIM_ID_LEN 32
/* The largest payload a claim may carry: AgentCore's 100 MB file, twice over. */
#define CQ_CLAIM_MAX_BYTES (200ULL << 20)
/* How long a request's claim waits for its worker. */
#define CQ_CLAIM_REQUEST_TTL_S 3600

/* Whether id is exactly CQ_CLAIM_ID_LEN lowercase hexadecimal digits. */
bool cq_claim_id_ok(const char *id);
/* The bytes of a file's content (a blob's, or a text's without its NUL). */
uint64_t cq_claim_file_len(const Codeq__V1__FileContent *f);
/* Why a reference cannot be resolved, or NULL: its id, its size (1 to
 * CQ_CLAIM_MAX_BYTES, plus the seal's overhead when sealed), its key (none or 32 bytes). */
const char *cq_claim_invalid(const Codeq__V1__Claim *claim);
/* The payload's size: what is stored, less the seal's nonce and tag when sealed. */
uint64_t cq_claim_payload_size(const Codeq__V1__Claim *claim);
/* The payload of what a claim's reader fetched (data, len; checked by cq_claim_invalid):
 * a sealed claim is opened in place, and *payload points into data; an unsealed one is
 * data itself. CQ_EDENIED when the bytes do not open under the claim's key (altered,
 * another claim's, or plain text where sealed bytes must be). */
int cq_claim_open(const Codeq__V1__Claim *claim, uint8_t *data, size_t len, uint8_t **payload,
                  size_t *payload_len, struct cq_error *err);
/* Seals a claim's payload in place: buf holds payload_len bytes at buf + 12 (room for the
 * nonce before, the 16-byte tag after: payload_len + 28 bytes in all). */
int cq_claim_seal(const char *id, const uint8_t key[32], uint8_t *buf, size_t payload_len,
                  struct cq_error *err);

/* Decodes the Arguments a request's claim held (data, len: its opened payload): the size
 * must be the claim's and no file larger than its largest_file (what the edge checked).
 * *out is freed with codeq__v1__arguments__free_unpacked. */
int cq_claim_decode_arguments(const Codeq__V1__Claim *claim, const uint8_t *data, size_t len,
                              Codeq__V1__Arguments **out, struct cq_error *err);
/* Decodes the Response a reply's claim held (its opened payload): the size must be the
 * claim's, the ids
 * those of the reply that referred to it (outer), and the payload a final one (a
 * result, a session or a session list; never another claim). */
int cq_claim_decode_response(const Codeq__V1__Response *outer, const uint8_t *data, size_t len,
                             Codeq__V1__Response **out, struct cq_error *err);

/* ---- with the store (fleet/claim_store.c) ------------------------------------------- */

/* The client's side: when req packs larger than threshold, its Invoke's arguments go
 * to a new claim (ttl_s) and req refers to it instead; *moved is set, and
 * cq_claim_request_undo() puts the caller's arguments back after sending. A request too
 * large with no store (st NULL), or other than an Invoke, is CQ_ELIMIT. */
struct cq_claimed_request {
    bool moved;
    Codeq__V1__Arguments *arguments;
    Codeq__V1__Claim claim;
    char id[CQ_CLAIM_ID_LEN + 1];
    uint8_t sha256[32];
    uint8_t key[32];
};
int cq_claim_request(struct cq_store *st, Codeq__V1__Request *req, uint64_t threshold,
                     unsigned ttl_s, struct cq_claimed_request *c, struct cq_error *err);
void cq_claim_request_undo(Codeq__V1__Request *req, struct cq_claimed_request *c);
/* The worker's side: the Arguments an Invoke refers to (fetched, opened, checked against
 * the claim's size and sha256, and the claim deleted); *out NULL when the Invoke carries
 * its arguments inline. need_sha256: the request was signed, so its claim must carry
 * one. A store encrypted at rest refuses a claim stored in plain text. */
int cq_claim_fetch_arguments(struct cq_store *st, const Codeq__V1__Invoke *inv, bool need_sha256,
                             Codeq__V1__Arguments **out, struct cq_error *err);
/* The worker's side: a packed final reply larger than threshold is stored as a claim
 * (ttl_s, deleted with session_id) and *bytes, *len replaced by a small Response that
 * refers to it (the old buffer freed). Below the threshold nothing changes. */
int cq_claim_reply(struct cq_store *st, const char *request_id, const char *session_id,
                   uint64_t threshold, unsigned ttl_s, uint8_t **bytes, size_t *len,
                   struct cq_error *err);
/* The client's side: a reply that refers to a claim is replaced by the Response the
 * claim holds (*resp freed and replaced); others stay as they are. */
int cq_claim_resolve_reply(struct cq_store *st, Codeq__V1__Response **resp, struct cq_error *err);

#endif
