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
#include "codeq.pb-c.h"

/* Why a decoded request cannot be served, or NULL. */
const char *cq_codec_invalid(const Codeq__V1__Request *req);
/* Whether Kafka accepts topic as a topic name: a reply to any other would fail. */
bool cq_codec_topic_name_ok(const char *topic);
/* Arguments of an Invoke as the worker's; pointers into req (and *owned, to free). */
int cq_codec_invoke_args(const Codeq__V1__Invoke *inv, struct cq_invoke_args *a, void **owned);
/* Packs a Response with a result, session or list; *out is malloc'd. */
int cq_codec_result_response(const char *request_id, const char *session_id,
                             const struct cq_result *r, uint8_t **out, size_t *len);
int cq_codec_session_response(const char *request_id, const struct cq_session_info *info,
                              uint8_t **out, size_t *len);
int cq_codec_sessions_response(const char *request_id, const struct cq_session_info *infos,
                               size_t n, const char *next_token, uint8_t **out, size_t *len);
int cq_codec_chunk_response(const char *request_id, const char *session_id, int stream,
                            const void *data, size_t data_len, uint64_t sequence, uint8_t **out,
                            size_t *len);
/* A Response with a service error (error_code, message, is_error). */
int cq_codec_error_response(const char *request_id, const char *session_id,
                            enum cq_result_error code, const char *message, uint8_t **out,
                            size_t *len);

/* The client's side. Arguments of an Invoke from the worker's: pointers into a (and
 * *owned, to free); file contents always travel as blobs (bytes need not be UTF-8). */
int cq_codec_fill_arguments(const struct cq_invoke_args *a, Codeq__V1__Arguments *out,
                            void **owned);
/* A Result as the worker core's (copies: free with cq_result_free, even on failure). */
int cq_codec_result_from(const Codeq__V1__Result *in, struct cq_result *r);
void cq_codec_session_from(const Codeq__V1__Session *s, struct cq_session_info *info);

#endif
