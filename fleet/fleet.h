/* fleet/fleet.h - what the fleet's daemons share: configuration, JSON logs, Kafka
 * clients tuned for the request path, the Redis store of sessions, requests and files,
 * and the translation between codeq.v1 protobuf and the worker core.
 *
 * The protocol (topics, headers, Redis keys, ownership and fencing) is docs/fleet.md.
 * Every function that can fail returns -1 and fills a struct cq_error.
 */
#ifndef CQ_FLEET_FLEET_H
#define CQ_FLEET_FLEET_H

#include <librdkafka/rdkafka.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "codeq.pb-c.h"
#include "common/error.h"
#include "worker/worker.h"

/* ---- configuration: one format for both daemons ------------------------------------
 * Defaults, then a file (`key = value` lines, '#' comments), then CODEQ_<KEY>
 * environment variables, then --key flags: later sources win. */

struct cq_fleet_config {
    char brokers[512];       /* brokers: Kafka bootstrap servers */
    char redis[256];         /* redis: host:port */
    char prefix[64];         /* redis_prefix: of every Redis key */
    char request_topic[200]; /* request_topic */
    char dlq_topic[200];     /* dlq_topic */
    char worker_id[64];      /* worker_id (worker only): names its topic */
    unsigned heartbeat_ms;   /* heartbeat_ms: workers' heartbeat period */
    unsigned max_sessions;   /* max_sessions (worker) */
    unsigned warm_pool;      /* warm_pool (worker) */
    uint64_t files_quota;    /* files_quota: bytes of one session's files in Redis */
    char log_level[16];      /* log_level: debug, info, warn, error */
};

void cq_fleet_config_init(struct cq_fleet_config *cfg);
/* Applies file, environment and flags; argv[optind...] must be --key value pairs.
 * Prints nothing; *help is set for -h/--help. */
int cq_fleet_config_load(struct cq_fleet_config *cfg, int argc, char **argv, bool *help,
                         struct cq_error *err);
/* The keys, their defaults and meaning, for --help. */
void cq_fleet_config_usage(FILE *out);
/* The worker topic of a worker id: "codeq.worker.<id>". */
void cq_fleet_worker_topic(const char *worker_id, char *out, size_t len);

/* ---- the daemons' main(): settings, --help, logs, signals, then run until stopped -- */

struct cq_fleet_daemon {
    const char *program;   /* "codeq-worker" */
    const char *component; /* in every log line */
    const char *about;     /* --help's description */
    int (*create)(const struct cq_fleet_config *cfg, void **out, struct cq_error *err);
    int (*run)(void *daemon, struct cq_error *err); /* returns after stop, drained */
    void (*stop)(void *daemon);                     /* async-signal-safe */
    void (*destroy)(void *daemon);
};

/* Exit status: 0, 1 (could not start or failed), 2 (bad settings). */
int cq_fleet_daemon_main(const struct cq_fleet_daemon *ops, int argc, char **argv);

/* ---- logs: one JSON object per line on stderr --------------------------------------- */

enum cq_log_level { CQ_LOG_DEBUG, CQ_LOG_INFO, CQ_LOG_WARN, CQ_LOG_ERROR };

void cq_log_setup(const char *component, const char *level);
void cq_log(enum cq_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- Kafka ------------------------------------------------------------------------ */

/* The largest message the fleet's clients produce and the topics it creates accept:
 * AgentCore's 100 MB payloads with room for the envelope. Brokers must allow requests
 * this large too (socket.request.max.bytes; scripts/services sets it). */
#define CQ_KAFKA_MAX_MESSAGE "209715200"

/* A producer for the request path: no linger, no Nagle, idempotent, Java-compatible
 * key partitioning. Delivery reports complete struct cq_delivery opaques. */
rd_kafka_t *cq_kafka_producer(const struct cq_fleet_config *cfg, struct cq_error *err);
/* A consumer of topic in group. It commits only the offsets the caller stored
 * (rd_kafka_offset_store / rd_kafka_offsets_store), every 200 ms and on close. */
rd_kafka_t *cq_kafka_consumer(const struct cq_fleet_config *cfg, const char *group,
                              const char *topic, struct cq_error *err);

/* A consumer of partition 0 of topic from its start, outside any group: for a private
 * reply topic with one partition. */
rd_kafka_t *cq_kafka_reader(const struct cq_fleet_config *cfg, const char *topic,
                            struct cq_error *err);
int cq_kafka_delete_topic(rd_kafka_t *rk, const char *topic, struct cq_error *err);

/* Creates topic unless it exists; fails when Kafka cannot be reached (a clear start-up
 * error rather than a daemon that waits in silence). */
int cq_kafka_ensure_topic(rd_kafka_t *rk, const char *topic, int partitions, struct cq_error *err);

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
/* Waits until every message counted in d is acknowledged (or failed). */
int cq_kafka_wait(rd_kafka_t *producer, struct cq_delivery *d, int timeout_ms,
                  struct cq_error *err);
/* The value of a header of msg, or NULL. */
const char *cq_kafka_header(rd_kafka_message_t *msg, const char *name, char *buf, size_t len);

/* ---- Tracing ------------------------------------------------------------------------
 * Where one request's time goes, for `codeq-bench-fleet --trace`. A request produced
 * with the header codeq-trace collects a CLOCK_MONOTONIC stamp at each step it passes
 * ("step:microseconds", comma-separated): the dispatcher copies the header onto the
 * forward and the worker onto the final reply, each adding its steps. The stamps only
 * compare on one host (one clock). A request without the header pays a header lookup
 * and nothing else; whatever a client writes there comes back to it, never parsed. */
#define CQ_TRACE_HEADER "codeq-trace"

struct cq_trace {
    bool on;
    size_t len;
    char text[512];
};

/* On, with no stamps yet (the client's side). */
void cq_trace_begin(struct cq_trace *t);
/* On when msg has the header, with its stamps. */
void cq_trace_read(struct cq_trace *t, rd_kafka_message_t *msg);
/* Adds a stamp now; nothing when t is NULL or off, or full. */
void cq_trace_stamp(struct cq_trace *t, const char *step);
/* Fills h with the trace's header: 1, or 0 when t is NULL or off. */
size_t cq_trace_header(const struct cq_trace *t, struct cq_header *h);

/* Publishes a reply of req: key and headers request_id, session_id, codeq-kind (chunk or
 * final), and trace's header if it is on (NULL: none). Its acknowledgement is counted in
 * delivery (NULL: not tracked), for cq_kafka_wait. */
int cq_fleet_publish(rd_kafka_t *producer, const Codeq__V1__Request *req, const char *kind,
                     const uint8_t *bytes, size_t len, struct cq_delivery *delivery,
                     const struct cq_trace *trace, struct cq_error *err);

/* ---- the Redis store --------------------------------------------------------------- */

struct cq_store;

int cq_store_open(const struct cq_fleet_config *cfg, struct cq_store **out, struct cq_error *err);
void cq_store_close(struct cq_store *st);
/* Once running, a command that finds Redis unreachable reconnects with backoff for up to
 * 30 s before it fails (then commands fail at once until Redis answers again); *cancel
 * set (the daemon stops) ends the waiting. */
void cq_store_set_cancel(struct cq_store *st, const atomic_bool *cancel);
/* Monotonic ms (CLOCK_MONOTONIC) when Redis last came back after an outage, or 0: the
 * heartbeats in Redis are stale until the workers have renewed them. */
int64_t cq_store_back_at(struct cq_store *st);

struct cq_worker_status {
    char id[64];
    int64_t capacity; /* sessions it can still take */
    int64_t sessions;
    bool draining;
};

int cq_store_heartbeat(struct cq_store *st, const char *worker_id, int64_t capacity,
                       int64_t sessions, bool draining, unsigned ttl_ms, struct cq_error *err);
int cq_store_worker_gone(struct cq_store *st, const char *worker_id, struct cq_error *err);
/* Live workers (at most max); *n gets the count. Dead ones are listed in dead. */
int cq_store_workers(struct cq_store *st, struct cq_worker_status *live, size_t max, size_t *n,
                     char (*dead)[64], size_t max_dead, size_t *n_dead, struct cq_error *err);

/* Request states (req:<rid>). */
enum cq_request_state { CQ_REQ_NONE, CQ_REQ_FORWARDED, CQ_REQ_RUNNING, CQ_REQ_DONE };

struct cq_route {
    char owner[64];
    uint64_t fence;
    bool moved; /* the owner was dead and the session now belongs to `owner` */
    bool exists;
};

/* The session's owner, moving it to `fallback` when the owner's heartbeat expired. */
int cq_store_route(struct cq_store *st, const char *session_id, const char *fallback,
                   struct cq_route *route, struct cq_error *err);
/* Records a new session owned by worker (fence 1) and reserves one of its slots. For a
 * client token already used, *existing_id gets the session it made. */
int cq_store_create_session(struct cq_store *st, const char *session_id, const char *worker,
                            const char *client_token, char *existing_id, size_t existing_len,
                            struct cq_error *err);
/* The request's state (NONE when unknown) and, with worker, the worker it was last
 * forwarded to ("" when none). */
int cq_store_request_state(struct cq_store *st, const char *request_id,
                           enum cq_request_state *state, char *worker, size_t worker_len,
                           struct cq_error *err);
/* Records a forward (state forwarded, worker, body for a later re-route) unless the
 * request is running or done; *state gets the state found. */
int cq_store_forward(struct cq_store *st, const char *request_id, const char *worker,
                     const char *session_id, const void *body, size_t len,
                     enum cq_request_state *state, struct cq_error *err);
/* The dispatcher's common case in one round trip instead of three (request state,
 * route, forward): a request id never seen, of a session whose owner is alive. Then it
 * records the forward exactly as cq_store_forward() would, fills *route (never moved)
 * and returns 1. Returns 0, having written nothing, in every other case (the request
 * id is known, the session is unknown, ended or has no live owner): the caller takes
 * the general path, which decides those. */
int cq_store_route_forward(struct cq_store *st, const char *request_id, const char *session_id,
                           const void *body, size_t len, struct cq_route *route,
                           struct cq_error *err);
/* A forward sent while Redis records it (dispatcher.c, fast_forward()) carries this
 * header. Its worker waits for the record up to CQ_FLEET_RECORD_WAIT_MS, so a
 * dispatcher that took longer than half of that to record it sends it again. And it
 * stays silent when its claim fails: the dispatcher then answers the request itself
 * (a known request id, an ended session, a moved owner). */
#define CQ_FLEET_EARLY_HEADER   "codeq-early"
#define CQ_FLEET_RECORD_WAIT_MS 2000

/* forwarded-to-me -> running. Returns 1 when claimed, with *fence the session's current
 * token if this worker owns it (else 0), or 0 when not claimed (*state says why). */
int cq_store_claim(struct cq_store *st, const char *request_id, const char *worker,
                   enum cq_request_state *state, uint64_t *fence, struct cq_error *err);
/* Stores the final reply of a request and marks it done; only by the worker that
 * claimed it (or, with worker NULL, by recovery of a request nobody finished).
 * Returns 1 when stored, 0 when another outcome was stored first. */
int cq_store_finish(struct cq_store *st, const char *request_id, const char *worker,
                    const void *response, size_t len, struct cq_error *err);
/* The final reply was acknowledged by Kafka: recovery has nothing left to do for it.
 * The _many form takes n ids (at most 256) in one command. */
int cq_store_inflight_done_many(struct cq_store *st, const char *worker, char (*ids)[64], size_t n,
                                struct cq_error *err);
int cq_store_inflight_done(struct cq_store *st, const char *worker, const char *request_id,
                           struct cq_error *err);
/* The stored final reply (malloc'd) or *data NULL. */
int cq_store_result(struct cq_store *st, const char *request_id, uint8_t **data, size_t *len,
                    struct cq_error *err);

/* Session facts for getSession/listSessions, written by the owner (fenced). */
int cq_store_session_facts(struct cq_store *st, const char *session_id, const char *worker,
                           uint64_t fence, const struct cq_session_info *info,
                           struct cq_error *err);
int cq_store_session_info(struct cq_store *st, const char *session_id, struct cq_session_info *info,
                          bool *found, struct cq_error *err);
int cq_store_list_sessions(struct cq_store *st, size_t max, const char *after,
                           struct cq_session_info *out, size_t *n, char *next, size_t next_len,
                           struct cq_error *err);
/* Removes the session's keys (fenced unless worker is NULL). */
int cq_store_end_session(struct cq_store *st, const char *session_id, const char *worker,
                         uint64_t fence, struct cq_error *err);
/* Gives the session up (owner ""), so that the next request moves it at once. */
int cq_store_release_session(struct cq_store *st, const char *session_id, const char *worker,
                             uint64_t fence, struct cq_error *err);
int cq_store_owner(struct cq_store *st, const char *session_id, char *owner, size_t len,
                   uint64_t *fence, struct cq_error *err);

/* Files: one hash per session; writes are fenced. */
struct cq_stored_file {
    char *path;
    uint64_t size;
    int64_t mtime_ns;
};
int cq_store_put_file(struct cq_store *st, const char *session_id, const char *worker,
                      uint64_t fence, const char *path, const uint8_t *data, size_t len,
                      int64_t mtime_ns, struct cq_error *err);
int cq_store_delete_file(struct cq_store *st, const char *session_id, const char *worker,
                         uint64_t fence, const char *path, struct cq_error *err);
int cq_store_list_files(struct cq_store *st, const char *session_id, struct cq_stored_file **out,
                        size_t *n, struct cq_error *err);
void cq_stored_files_free(struct cq_stored_file *files, size_t n);
int cq_store_get_file(struct cq_store *st, const char *session_id, const char *path, uint8_t **data,
                      size_t *len, struct cq_error *err);

/* In-flight requests of a worker, oldest first, for recovery. */
int cq_store_inflight(struct cq_store *st, const char *worker, char (*ids)[64], size_t max,
                      size_t *n, struct cq_error *err);
/* The forwarded body of a request (malloc'd), the worker it went to and its state. */
int cq_store_request(struct cq_store *st, const char *request_id, uint8_t **body, size_t *len,
                     enum cq_request_state *state, struct cq_error *err);
/* Drops a dead worker from the worker set once its requests are recovered. */
int cq_store_forget_worker(struct cq_store *st, const char *worker, struct cq_error *err);
int cq_store_lock(struct cq_store *st, const char *name, unsigned ttl_ms, bool *taken,
                  struct cq_error *err);

/* ---- recovery: the in-flight requests of a worker that is gone --------------------- */

/* Called for a request that was forwarded to the lost worker and never started. */
typedef void (*cq_reroute_fn)(void *ctx, Codeq__V1__Request *req);

/* Settles every request of inflight:<worker>: a finished one gets its stored reply
 * again, a running one the worker-lost error (never a second run), a forwarded one is
 * handed to reroute (which owns it). */
int cq_fleet_recover(struct cq_store *st, rd_kafka_t *producer, const char *worker,
                     cq_reroute_fn reroute, void *ctx, size_t *settled, struct cq_error *err);

/* ---- codec: codeq.v1 <-> the worker core ------------------------------------------- */

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
