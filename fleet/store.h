/* fleet/store.h - the Redis store of sessions, requests, workers and files.
 *
 * Every decision that two daemons could race on is one Lua script, so it is atomic
 * in Redis; the keys, ownership and fencing are docs/fleet.md. */
#ifndef CQ_FLEET_STORE_H
#define CQ_FLEET_STORE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "api/api.h"
#include "common/error.h"
#include "fleet/config.h"
#include "fleet/keys.h"

struct cq_store;

int cq_store_open(const struct cq_fleet_config *cfg, struct cq_store **out, struct cq_error *err);
void cq_store_close(struct cq_store *st);
/* True when values are encrypted at rest (master_key_file set; fleet/crypt.h). */
bool cq_store_encrypted(const struct cq_store *st);
/* Logs whether values are sealed (event encryption_at_rest), once at a daemon's start:
 * an operator reading the logs sees it without reading the settings. */
void cq_store_log_encryption(struct cq_store *st);
/* Once running, a command that finds Redis unreachable reconnects with backoff for up to
 * 30 s before it fails (then commands fail at once until Redis answers again); *cancel
 * set (the daemon stops) ends the waiting. */
void cq_store_set_cancel(struct cq_store *st, const atomic_bool *cancel);
/* How long one command may block before it is an error (default 10 s): shorter for a
 * connection that only answers "is Redis there" (/readyz), so that a Redis that hangs
 * rather than refuses is reported within that time. */
void cq_store_set_command_timeout(struct cq_store *st, int seconds);
/* Monotonic ms (CLOCK_MONOTONIC) when Redis last came back after an outage, or 0: the
 * heartbeats in Redis are stale until the workers have renewed them. */
int64_t cq_store_back_at(struct cq_store *st);
/* Counts this connection's commands (codeq_redis_command_seconds), failures
 * (codeq_redis_errors_total) and reconnections (codeq_redis_reconnects_total) into m;
 * NULL stops. Call before the store is shared between threads. */
struct cq_metrics;
int cq_store_set_metrics(struct cq_store *st, struct cq_metrics *m, struct cq_error *err);
/* One PING, without the waiting and retrying of other commands: whether Redis answers
 * now (for /readyz). */
int cq_store_ping(struct cq_store *st, struct cq_error *err);

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
enum cq_request_state {
    CQ_REQ_NONE,
    CQ_REQ_FORWARDED,
    CQ_REQ_RUNNING,
    CQ_REQ_DONE,
    CQ_REQ_OVER_QUOTA, /* cq_store_forward(): not forwarded, the tenant's executions are full */
};

struct cq_route {
    char owner[64];
    uint64_t fence;
    bool moved; /* the owner was dead and the session now belongs to `owner` */
    bool exists;
};

/* Tenants (fleet/keys.h): a session belongs to the tenant that started it ("" in a
 * keyless fleet). Every function that takes a tenant finds another tenant's session
 * exactly as it finds none. A request's digest (CQ_STORE_DIGEST_LEN hexadecimal digits,
 * "" for unsigned requests) is recorded with it: a request id is its sender's, and
 * another message under the same id (a replay with other content, another tenant) is
 * refused rather than answered or run. */
#define CQ_STORE_DIGEST_LEN 64

/* The session's owner, moving it to `fallback` when the owner's heartbeat expired. */
int cq_store_route(struct cq_store *st, const char *session_id, const char *tenant,
                   const char *fallback, struct cq_route *route, struct cq_error *err);
/* Records a new session of tenant owned by worker (fence 1) and reserves one of its
 * slots. For a client token the tenant used already, *existing_id gets the session it
 * made (never session_id: a run whose reply was lost and that the store sent again
 * finds its own session, and says it is new). CQ_ELIMIT when the tenant has
 * quota->sessions live sessions already; the tenant's stored_bytes quota is recorded
 * for the workers (quota:<tenant>). */
int cq_store_create_session(struct cq_store *st, const char *session_id, const char *tenant,
                            const struct cq_quota *quota, const char *worker,
                            const char *client_token, char *existing_id, size_t existing_len,
                            struct cq_error *err);
/* The request's state (NONE when unknown) and, with worker, the worker it was last
 * forwarded to ("" when none); with digest, the digest recorded ("" when none). */
int cq_store_request_state(struct cq_store *st, const char *request_id,
                           enum cq_request_state *state, char *worker, size_t worker_len,
                           char digest[CQ_STORE_DIGEST_LEN + 1], struct cq_error *err);
/* Records a forward (state forwarded, worker, body for a later re-route, digest) unless
 * the request is running or done; *state gets the state found. max_executions (0: no
 * limit): the request is one of the tenant's executions, and it is not forwarded
 * (CQ_REQ_OVER_QUOTA) when that many are running already. */
int cq_store_forward(struct cq_store *st, const char *request_id, const char *worker,
                     const char *session_id, const void *body, size_t len, const char *digest,
                     const char *tenant, uint64_t max_executions, enum cq_request_state *state,
                     struct cq_error *err);
/* The dispatcher's common case in one round trip instead of three (request state,
 * route, forward): a request id never seen, of a session whose owner is alive. Then it
 * records the forward exactly as cq_store_forward() would, fills *route (never moved)
 * and sets *routed. *routed false means it wrote nothing, as in every other case (the
 * request id is known, the session is unknown, ended or has no live owner): the caller
 * takes the general path, which decides those. */
int cq_store_route_forward(struct cq_store *st, const char *request_id, const char *session_id,
                           const char *tenant, const void *body, size_t len, const char *digest,
                           uint64_t max_executions, struct cq_route *route, bool *routed,
                           struct cq_error *err);
/* forwarded-to-me -> running. *claimed true: claimed, with *fence the session's current
 * token if this worker owns it (else 0); false: not claimed (*state says why; NONE also
 * when the message is not the request recorded under its id: another digest, or a
 * session of another tenant). */
int cq_store_claim(struct cq_store *st, const char *request_id, const char *worker,
                   const char *tenant, const char *digest, enum cq_request_state *state,
                   uint64_t *fence, bool *claimed, struct cq_error *err);
/* Stores the final reply of a request and marks it done; only by the worker that
 * claimed it (or, with worker NULL, by recovery of a request nobody finished).
 * *stored true when stored (or this very reply was already), false when another
 * outcome was stored first. */
int cq_store_finish(struct cq_store *st, const char *request_id, const char *worker,
                    const void *response, size_t len, bool *stored, struct cq_error *err);
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
/* cq_store_session_facts() for a session that has just started here, with what it was
 * started with (start: a packed codeq.v1.StartSession, without its client token), in
 * the same fenced write. The parameters stay with the session (a field of its hash)
 * until it ends, for the worker that adopts it after a failover or a drain. */
int cq_store_session_started(struct cq_store *st, const char *session_id, const char *worker,
                             uint64_t fence, const struct cq_session_info *info, const void *start,
                             size_t start_len, struct cq_error *err);
/* The start parameters cq_store_session_started() stored (malloc'd), or *start NULL:
 * none (the session ended, or was started by a worker that predates them). */
int cq_store_session_start(struct cq_store *st, const char *session_id, uint8_t **start,
                           size_t *len, struct cq_error *err);
/* Counts a request of tenant in this second (over every dispatcher): *count is the
 * count with it. */
int cq_store_count_request(struct cq_store *st, const char *tenant, uint64_t *count,
                           struct cq_error *err);
/* tenant NULL: any tenant's (the session's own worker asking). */
int cq_store_session_info(struct cq_store *st, const char *session_id, const char *tenant,
                          struct cq_session_info *info, bool *found, struct cq_error *err);
int cq_store_list_sessions(struct cq_store *st, const char *tenant, size_t max, const char *after,
                           struct cq_session_info *out, size_t *n, char *next, size_t next_len,
                           struct cq_error *err);
/* Removes the session's keys (fenced unless worker is NULL). */
int cq_store_end_session(struct cq_store *st, const char *session_id, const char *worker,
                         uint64_t fence, struct cq_error *err);
/* Ends a session whose start failed (or was never run: its deadline passed), as
 * cq_store_end_session(), and frees the start's client token (tenant's) if it still
 * names the session, so that a start sent again with it makes a new session. */
/* Recovery's: as cq_store_end_start() for a start worker was running when it was lost,
 * if the session is still STARTING (*ended false when it was not). */
int cq_store_end_lost_start(struct cq_store *st, const char *session_id, const char *worker,
                            const char *tenant, const char *client_token, bool *ended,
                            struct cq_error *err);
int cq_store_end_start(struct cq_store *st, const char *session_id, const char *worker,
                       uint64_t fence, const char *tenant, const char *client_token,
                       struct cq_error *err);
/* Gives the session up (owner ""), so that the next request moves it at once. */
int cq_store_release_session(struct cq_store *st, const char *session_id, const char *worker,
                             uint64_t fence, struct cq_error *err);
int cq_store_owner(struct cq_store *st, const char *session_id, char *owner, size_t len,
                   uint64_t *fence, struct cq_error *err);

/* Claims (fleet/claim.h): payloads too large for a Kafka message, under
 * <prefix>claim:<id> with a time to live. id must have passed cq_claim_id_ok().
 * session_id (NULL: none): the claim is deleted when that session ends. */
int cq_store_claim_put(struct cq_store *st, const char *id, const void *data, size_t len,
                       unsigned ttl_s, const char *session_id, struct cq_error *err);
/* The claim's bytes (malloc'd), which must be exactly size long: CQ_ENOTFOUND when it
 * is gone (expired, deleted), CQ_EINVALID when its size differs. */
int cq_store_claim_get(struct cq_store *st, const char *id, uint64_t size, uint8_t **data,
                       struct cq_error *err);
int cq_store_claim_delete(struct cq_store *st, const char *id, struct cq_error *err);

/* Files: one hash per session; writes are fenced. */
struct cq_stored_file {
    char *path;
    uint64_t size;
    int64_t mtime_ns;
    uint32_t mode; /* permission bits; 0644 when none were stored (an older worker's);
                    * CQ_STORE_LINK: a symbolic link, whose bytes are its target */
};
/* The mode of a stored symbolic link (beyond any permission bits). */
#define CQ_STORE_LINK 0x10000u
int cq_store_put_file(struct cq_store *st, const char *session_id, const char *worker,
                      uint64_t fence, const char *path, const uint8_t *data, size_t len,
                      int64_t mtime_ns, uint32_t mode, struct cq_error *err);
/* Whether adding bytes of files to the session keeps its tenant within its stored_bytes
 * quota (quota:<tenant>, stored:<tenant>); *why says why not. */
int cq_store_tenant_room(struct cq_store *st, const char *session_id, uint64_t adding, bool *fits,
                         struct cq_error *why, struct cq_error *err);
int cq_store_delete_file(struct cq_store *st, const char *session_id, const char *worker,
                         uint64_t fence, const char *path, struct cq_error *err);
int cq_store_list_files(struct cq_store *st, const char *session_id, struct cq_stored_file **out,
                        size_t *n, struct cq_error *err);
void cq_stored_files_free(struct cq_stored_file *files, size_t n);
int cq_store_get_file(struct cq_store *st, const char *session_id, const char *path, uint8_t **data,
                      size_t *len, struct cq_error *err);

/* Kernel state of a drained session (state:<sid>, docs/fleet.md): named byte fields,
 * written by the owner as it drains, taken once by the worker that adopts it. */
struct cq_store_field {
    char *name;
    uint8_t *data;
    size_t len;
};
#define CQ_STORE_MAX_STATE_FIELDS 16
/* Replaces the session's state with fields (fenced); CQ_ELIMIT when they and the
 * session's files together exceed its files quota. */
int cq_store_put_state(struct cq_store *st, const char *session_id, const char *worker,
                       uint64_t fence, const struct cq_store_field *fields, size_t n,
                       struct cq_error *err);
/* Reads and deletes the session's state as its new owner (fenced); *found only when it
 * was saved under the token just before fence (by the owner this worker took the
 * session from). Free *fields with cq_store_fields_free(). */
int cq_store_take_state(struct cq_store *st, const char *session_id, const char *worker,
                        uint64_t fence, struct cq_store_field **fields, size_t *n, bool *found,
                        struct cq_error *err);
void cq_store_fields_free(struct cq_store_field *fields, size_t n);

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

/* The keyring (fleet/keys.h, keys_file = redis): the keys file's text in Redis
 * (<prefix>keyring) and a version that every change raises (<prefix>keyring:version).
 * cq_store_keyring_put() replaces it only if its version is still version (CQ_EINVALID
 * otherwise: someone changed it meanwhile). *text is malloc'd. */
int cq_store_keyring_get(struct cq_store *st, char **text, int64_t *version, struct cq_error *err);
int cq_store_keyring_version(struct cq_store *st, int64_t *version, struct cq_error *err);
int cq_store_keyring_put(struct cq_store *st, const char *text, int64_t version,
                         struct cq_error *err);
/* Encryption at rest (fleet/crypt.h, docs/security.md). A new data key version for
 * tenant ("" the keyless fleet's), which new values use from then on (running daemons
 * within 30 s); *version gets it. Needs the store's master key. */
int cq_store_rotate_data_key(struct cq_store *st, const char *tenant, uint32_t *version,
                             struct cq_error *err);
struct cq_kms;
/* Re-wraps every tenant's data keys, unwrapped with from, under to; values are not
 * touched. Run again after a failure, it skips the keys already wrapped under to. */
int cq_store_rewrap_data_keys(struct cq_store *st, struct cq_kms *from, struct cq_kms *to,
                              size_t *tenants, size_t *keys, struct cq_error *err);

/* codeq serve's sessions (store_gateway.c): which of a gateway's tenants started a
 * session, shared by every replica of the gateway (the fleet's own records name the
 * gateway's key). gateway:session:<sid> lives as long as the fleet's session:<sid>
 * (the session's time to live and an hour); gateway:sessions:<tenant> indexes them. */
#define CQ_STORE_GATEWAY_TENANT_MAX 40  /* CQ_TENANT_MAX */
#define CQ_STORE_GATEWAY_INTERP_MAX 100 /* an interpreter id as a client names it */
/* A page token: the creation time (15 digits), ':' and the session id. */
#define CQ_STORE_GATEWAY_TOKEN_MAX (16 + CQ_SESSION_ID_MAX)
struct cq_gateway_session {
    char tenant[CQ_STORE_GATEWAY_TENANT_MAX + 1];
    char interpreter[CQ_STORE_GATEWAY_INTERP_MAX + 1];
    int64_t created_ms;
};
struct cq_gateway_entry {
    char session_id[CQ_SESSION_ID_MAX + 1];
    char interpreter[CQ_STORE_GATEWAY_INTERP_MAX + 1];
    char token[CQ_STORE_GATEWAY_TOKEN_MAX + 1]; /* a page after it starts after this one */
};
/* Records that tenant started sid on interpreter, kept until an hour past expires_ms;
 * a record already there is left as it is, and *existing gets it (*existed true). */
int cq_store_gateway_put(struct cq_store *st, const char *sid, const char *tenant,
                         const char *interpreter, int64_t created_ms, int64_t expires_ms,
                         struct cq_gateway_session *existing, bool *existed, struct cq_error *err);
int cq_store_gateway_get(struct cq_store *st, const char *sid, struct cq_gateway_session *out,
                         bool *found, struct cq_error *err);
/* The session was stopped: its record is kept an hour more at most. */
int cq_store_gateway_ended(struct cq_store *st, const char *sid, struct cq_error *err);
/* The fleet no longer knows the session: its record goes. */
int cq_store_gateway_forget(struct cq_store *st, const char *sid, struct cq_error *err);
/* Up to max of tenant's sessions, newest first, after the entry whose token is after
 * (NULL or "": from the newest). */
int cq_store_gateway_list(struct cq_store *st, const char *tenant, const char *after, size_t max,
                          struct cq_gateway_entry *out, size_t *n, struct cq_error *err);

#endif
