/* fleet/client.h - a C client of the fleet: sends codeq.v1 Requests to the request
 * topic and waits for their replies on a private reply topic. `codeq --brokers` and the
 * fleet benchmark use it; clients/python is its Python counterpart.
 *
 * One client serves many threads: each call waits for its own request id. There is no
 * reader thread: the waiting calls read the reply topic themselves, one at a time, and
 * the reading call hands each reply to the call waiting for its request id (then
 * passes the reading on once its own final reply is in). A final reply seen twice (the
 * fleet may repeat one after a dispatcher restart) is dropped, as are replies nobody
 * waits for.
 */
#ifndef CQ_FLEET_CLIENT_H
#define CQ_FLEET_CLIENT_H

#include "codeq.pb-c.h"
#include "common/error.h"

struct cq_trace;

struct cq_fleet_client;

/* Connects to brokers (NULL: $CODEQ_BROKERS) and creates the private reply topic;
 * request_topic NULL means $CODEQ_REQUEST_TOPIC or "codeq.requests". Fails with a
 * clear error when Kafka cannot be reached. */
int cq_fleet_client_open(const char *brokers, const char *request_topic,
                         struct cq_fleet_client **out, struct cq_error *err);
/* Deletes the reply topic and disconnects. */
void cq_fleet_client_close(struct cq_fleet_client *c);

/* Output of a running call, in order. */
typedef void (*cq_fleet_chunk_fn)(void *ctx, const Codeq__V1__OutputChunk *chunk);

/* Sends req (its request_id is made when empty; reply_topic is set) and waits up to
 * timeout_ms for the final reply; *out is freed with codeq__v1__response__free_unpacked.
 * A timeout is CQ_ETIMEOUT: the request may still run, and sending it again with the
 * same request_id returns its result without running it twice. */
int cq_fleet_client_call(struct cq_fleet_client *c, Codeq__V1__Request *req,
                         cq_fleet_chunk_fn on_chunk, void *ctx, int timeout_ms,
                         Codeq__V1__Response **out, struct cq_error *err);

/* The same, with the request traced (fleet/trace.h): *trace gets the stamps of
 * every step, from the client's send to its wake-up, when the fleet passed them on. */
int cq_fleet_client_call_traced(struct cq_fleet_client *c, Codeq__V1__Request *req,
                                cq_fleet_chunk_fn on_chunk, void *ctx, int timeout_ms,
                                Codeq__V1__Response **out, struct cq_trace *trace,
                                struct cq_error *err);

/* Sends req without waiting for its reply (which, if any, is dropped when it comes):
 * for a cancel_call, which must not wait behind the call it cancels. Its request_id is
 * made when empty; reply_topic and tenant are the client's, as for a call. */
int cq_fleet_client_send(struct cq_fleet_client *c, Codeq__V1__Request *req, struct cq_error *err);

#endif
