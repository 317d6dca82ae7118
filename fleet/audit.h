/* fleet/audit.h - the audit log: who ran what, and what came of it.
 *
 * Every request that reaches a dispatcher yields a record (admitted or refused, and
 * why), and every tool call a worker runs yields another (its outcome, exit code,
 * duration, CPU time and peak memory). Records are JSON lines: SHA-256 digests of the
 * code or command and of file contents, never the contents themselves (secrets),
 * unless the operator asks for them (audit_content).
 *
 * Each producer (one daemon process) chains its records: a record carries its
 * sequence number and the SHA-256 of the previous record's line, and ends with an
 * HMAC-SHA256 of everything before it under the audit key, so that editing, deleting
 * or reordering a record breaks the chain where it happened, and forging one needs the
 * key. `codeq audit verify` says where a chain breaks. What the chain cannot show is
 * the loss of a producer's last records: keep the topic's retention and ACLs for that
 * (docs/security.md). */
#ifndef CQ_FLEET_AUDIT_H
#define CQ_FLEET_AUDIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "common/error.h"
#include "codeq.pb-c.h"

#define CQ_AUDIT_KEY_LEN 64 /* hexadecimal digits of the audit key (256 bits) */

/* Where records go: one line (without its newline) at a time. */
typedef int (*cq_audit_write_fn)(void *ctx, const char *line, size_t len, struct cq_error *err);

struct cq_audit_record {
    const char *event;             /* "request" (a dispatcher) or "call" (a worker, the embedded) */
    const char *outcome;           /* request: admitted, refused; call: ok, error */
    const char *error_code;        /* NONE, NOT_FOUND, ... (cq_result_error_name) */
    const char *reason;            /* a refusal's or error's message */
    const Codeq__V1__Request *req; /* tenant, ids, operation, and what it carries */
    const char *key_id;
    uint64_t bytes;  /* of the request as received */
    bool has_result; /* the fields below are a call's */
    int exit_code;
    double duration_ms;
    uint64_t cpu_ms, peak_memory_bytes;
    const char *stdout_text, *stderr_text; /* only with audit_content */
    const char *worker;
};

struct cq_audit;

/* A producer's chain: producer names it (unique per process: a daemon's id and start
 * time), key_file holds the audit key (NULL or "": records are chained but unsigned),
 * content: code, commands and outputs go into records too. */
int cq_audit_open(const char *producer, const char *key_file, bool content, cq_audit_write_fn write,
                  void *ctx, struct cq_audit **out, struct cq_error *err);
void cq_audit_close(struct cq_audit *a);
/* Appends one record (thread-safe); a failure to write is logged, not returned: an
 * audit sink that is down must not stop the service (the chain then shows the gap). */
void cq_audit_emit(struct cq_audit *a, const struct cq_audit_record *r);
/* A sink that appends lines to a file (mode 0600), for the embedded mode. */
int cq_audit_file_sink(void *ctx, const char *line, size_t len, struct cq_error *err);

/* The daemons' sink (ctx: a struct cq_audit_kafka that outlives the chain): each line
 * goes to the audit topic keyed by its producer's name, so that a chain stays in one
 * partition, in order. The Kafka producer is read at each line, as a daemon opens its
 * chain before it makes its producer. */
struct cq_audit_kafka {
    struct rd_kafka_s *const *kafka; /* the daemon's producer (rd_kafka_t) */
    const char *topic;
    char producer[128]; /* the chain's name (cq_audit_open()) */
};
int cq_audit_kafka_sink(void *ctx, const char *line, size_t len, struct cq_error *err);

/* Reads an audit key file: CQ_AUDIT_KEY_LEN hexadecimal digits, private to its owner. */
int cq_audit_read_key(const char *path, char key[CQ_AUDIT_KEY_LEN + 1], struct cq_error *err);

/* Checks every chain in the lines of in (any order of producers, each producer's
 * records in order): numbering, links and (with key) signatures. Returns the number
 * of records checked, or -1 with err naming the first record where a chain breaks
 * ("line N: ..."). */
long cq_audit_verify(FILE *in, const char *key, struct cq_error *err);

#endif
