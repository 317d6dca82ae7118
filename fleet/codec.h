/* fleet/codec.h - codeq.v1 protobuf <-> the shapes of api/api.h.
 *
 * Requests arrive from Kafka, written by anyone who can reach the brokers: decoding
 * and checking them assumes hostile input. */
#ifndef CQ_FLEET_CODEC_H
#define CQ_FLEET_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "api/api.h"
#include "common/error.h"
#include "codeq.pb-c.h"

/* The largest Response the codec packs: what a claim may carry (CQ_CLAIM_MAX_BYTES in
 * fleet/claim.h; a reply larger than a Kafka message goes through Redis). */
#define CQ_CODEC_MAX_RESPONSE 209715200u
/* The size of the buffer cq_codec_fallback_response() fills. */
#define CQ_CODEC_FALLBACK_MAX 512

/* Why a decoded request cannot be served, or NULL. Checks what the fleet relies on
 * (ids, reply topic, an operation and its required fields); tool names and argument
 * values are the worker core's to judge. */
const char *cq_codec_invalid(const Codeq__V1__Request *req);
/* Whether name is a code interpreter's or a runtime's name: [a-z0-9][a-z0-9._-]{0,62}
 * (runtime/runtime.h's rule, which the fleet cannot include). */
bool cq_codec_interpreter_name_ok(const char *name);
/* Whether Kafka accepts topic as a topic name: a reply to any other would fail. */
bool cq_codec_topic_name_ok(const char *topic);
/* Arguments of an Invoke as the worker's; pointers into inv (and *owned, to free, NULL
 * on failure). */
int cq_codec_invoke_args(const Codeq__V1__Invoke *inv, struct cq_invoke_args *a, void **owned,
                         struct cq_error *err);

/* Each packs a Response into *out (malloc'd, NULL on failure): ENOMEM when out of
 * memory, CQ_ELIMIT when larger than CQ_CODEC_MAX_RESPONSE. A final reply that cannot
 * be packed is replaced by cq_codec_fallback_response(). */
int cq_codec_result_response(const char *request_id, const char *session_id,
                             const struct cq_result *r, uint8_t **out, size_t *len,
                             struct cq_error *err);
int cq_codec_session_response(const char *request_id, const struct cq_session_info *info,
                              uint8_t **out, size_t *len, struct cq_error *err);
int cq_codec_sessions_response(const char *request_id, const struct cq_session_info *infos,
                               size_t n, const char *next_token, uint8_t **out, size_t *len,
                               struct cq_error *err);
int cq_codec_chunk_response(const char *request_id, const char *session_id, int stream,
                            const void *data, size_t data_len, uint64_t sequence, uint8_t **out,
                            size_t *len, struct cq_error *err);
/* A Response with a service error (error_code, message, is_error). */
int cq_codec_error_response(const char *request_id, const char *session_id,
                            enum cq_result_error code, const char *message, uint8_t **out,
                            size_t *len, struct cq_error *err);
/* The final reply of last resort, for when the real one cannot be packed: an error
 * result with code (LIMIT_EXCEEDED for a reply too large, else INTERNAL; OK counts as
 * INTERNAL), is_error, error_message and one text block, packed into out without
 * allocating. Cannot fail: ids and message are cut (at a UTF-8 boundary) to fit;
 * returns the length (at most CQ_CODEC_FALLBACK_MAX). NULL strings count as "". */
size_t cq_codec_fallback_response(const char *request_id, const char *session_id,
                                  enum cq_result_error code, const char *message,
                                  uint8_t out[CQ_CODEC_FALLBACK_MAX]);

/* The client's side. Arguments of an Invoke from the worker's: pointers into a (and
 * *owned, to free, NULL on failure); file contents always travel as blobs (bytes need
 * not be UTF-8). */
int cq_codec_fill_arguments(const struct cq_invoke_args *a, Codeq__V1__Arguments *out, void **owned,
                            struct cq_error *err);
/* A Result as the worker core's (copies: free with cq_result_free, even on failure). */
int cq_codec_result_from(const Codeq__V1__Result *in, struct cq_result *r, struct cq_error *err);
void cq_codec_session_from(const Codeq__V1__Session *s, struct cq_session_info *info);

#endif
