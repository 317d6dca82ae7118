/* fleet/kafka.h - librdkafka clients tuned for the request path, delivery tracking, and the
 * headers of the fleet's protocol (docs/fleet.md). */
#ifndef CQ_FLEET_KAFKA_H
#define CQ_FLEET_KAFKA_H

#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "common/error.h"
#include "fleet/config.h"

/* Room beside the claim threshold (claim_threshold) for the rest of a message: larger
 * payloads go through Redis (fleet/claim.h), so a producer never needs more than this
 * plus the threshold, and at least Kafka's own default (1 MB) either way. Topics are
 * made with the broker's default limit. */
#define CQ_KAFKA_ENVELOPE_BYTES (64u << 10)
#define CQ_KAFKA_MIN_MESSAGE    1000000u

/* How long a producer waits for a topic it does not find to appear before it fails
 * the messages for it (librdkafka's default is 30 s). The fleet's own topics exist
 * before anything is sent to them, and a client creates its reply topic before its
 * first request: a topic still missing after this is gone (a client deleted it, a
 * request named one nobody made), and waiting longer for it only holds up the replies
 * and forwards sent after it. */
#define CQ_KAFKA_TOPIC_PROPAGATION_MS "2000"

/* A producer (*out, the caller's to rd_kafka_destroy) for the request path: no linger,
 * no Nagle, idempotent, Java-compatible key partitioning. Delivery reports complete
 * struct cq_delivery opaques. */
int cq_kafka_producer(const struct cq_fleet_config *cfg, rd_kafka_t **out, struct cq_error *err);
/* A consumer of topic in group. It commits only the offsets the caller stored
 * (rd_kafka_offset_store / rd_kafka_offsets_store), every 200 ms and on close. */
int cq_kafka_consumer(const struct cq_fleet_config *cfg, const char *group, const char *topic,
                      rd_kafka_t **out, struct cq_error *err);

/* A consumer of partition 0 of topic from its start, outside any group: for a private
 * reply topic with one partition. */
int cq_kafka_reader(const struct cq_fleet_config *cfg, const char *topic, rd_kafka_t **out,
                    struct cq_error *err);
int cq_kafka_delete_topic(rd_kafka_t *rk, const char *topic, struct cq_error *err);

/* Creates topic unless it exists (made by someone else, it needs no Create ACL here);
 * fails when Kafka cannot be reached or refuses this client's credentials (a clear
 * start-up error rather than a daemon that waits in silence). */
int cq_kafka_ensure_topic(rd_kafka_t *rk, const char *topic, int partitions, struct cq_error *err);

/* Counts produce errors (codeq_kafka_produce_errors_total{reason}) and delivery latency
 * (codeq_kafka_delivery_seconds) of every producer of this process into m; NULL stops.
 * Set by fleet/obs.c. */
struct cq_metrics;
int cq_kafka_set_metrics(struct cq_metrics *m, struct cq_error *err);

struct cq_header {
    const char *name, *value;
};

/* Tracks the acknowledgement of messages produced with it as their opaque. A tracker
 * embedded in something must outlive every delivery report of its messages; one made
 * by cq_delivery_new() is shared with them instead (each message in flight holds a
 * reference), so that whoever stops waiting for it can let go of it at any time. */
struct cq_delivery {
    int pending;
    int failed;
    rd_kafka_resp_err_t last_error;
    int refs; /* 0 for an embedded tracker */
};

struct cq_delivery *cq_delivery_new(void);
void cq_delivery_release(struct cq_delivery *d);

int cq_kafka_send(rd_kafka_t *producer, const char *topic, const char *key, const void *value,
                  size_t len, const struct cq_header *headers, size_t n_headers,
                  struct cq_delivery *delivery, struct cq_error *err);
/* True when e, a message's delivery error, is the broker's refusal of that message (too
 * large for its topic, the topic missing, not authorized, invalid): sending it again
 * cannot succeed, and the sender must not wait for it or exit over it. False for no
 * error and for a broker that did not answer in time (the message may be fine). */
bool cq_kafka_refused(rd_kafka_resp_err_t e);
/* Waits until every message counted in d is acknowledged (or failed). */
int cq_kafka_wait(rd_kafka_t *producer, struct cq_delivery *d, int timeout_ms,
                  struct cq_error *err);
/* The value of a header of msg, or NULL. */
const char *cq_kafka_header(rd_kafka_message_t *msg, const char *name, char *buf, size_t len);

/* A forward sent while Redis records it (dispatcher.c, fast_forward()) carries this
 * header. Its worker waits for the record up to CQ_FLEET_RECORD_WAIT_MS, so a
 * dispatcher that took longer than half of that to record it sends it again. And it
 * stays silent when its claim fails: the dispatcher then answers the request itself
 * (a known request id, an ended session, a moved owner). */
#define CQ_FLEET_EARLY_HEADER   "codeq-early"
#define CQ_FLEET_RECORD_WAIT_MS 2000

struct Codeq__V1__Request;
struct cq_trace;

/* Publishes a reply of req: key and headers request_id, session_id, codeq-kind (chunk or
 * final), trace's codeq-trace header if it is on (final replies only) and its W3C trace
 * context if it has one (fleet/tracing.h; trace NULL: neither). Its acknowledgement is counted in
 * delivery (NULL: not tracked), for cq_kafka_wait. */
int cq_fleet_publish(rd_kafka_t *producer, const struct Codeq__V1__Request *req, const char *kind,
                     const uint8_t *bytes, size_t len, struct cq_delivery *delivery,
                     const struct cq_trace *trace, struct cq_error *err);

#endif
