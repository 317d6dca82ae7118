/* api/api.h - the shapes of codeq's tool surface that every side shares.
 *
 * Results (AgentCore's MCP CallToolResult shape), tool arguments, session facts and the
 * limits a client can count on. The worker core fills them, the fleet's codec carries
 * them over Kafka, the CLI prints them: a leaf, so that the dispatcher and the fleet's
 * plumbing never depend on the worker core or the sandbox.
 */
#ifndef CQ_API_API_H
#define CQ_API_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "common/error.h"

/* Defaults and limits of the service (docs/configuration.md): the worker core applies
 * them, the front ends and the fleet check requests against them. */
#define CQ_WORKER_DEFAULT_SESSION_TTL_S 900
#define CQ_WORKER_MAX_SESSION_TTL_S     28800
#define CQ_WORKER_DEFAULT_CALL_TIMEOUT  300.0        /* seconds */
#define CQ_WORKER_DEFAULT_OUTPUT_LIMIT  (1ULL << 20) /* per stream and call */
#define CQ_WORKER_MAX_FILE_BYTES        (100ULL << 20)
#define CQ_WORKER_DEFAULT_MAX_SESSIONS  64
#define CQ_WORKER_INTERRUPT_GRACE_MS    2000

#define CQ_SESSION_ID_MAX 40
/* Room for a session's allowlist as text (struct cq_session_info), with its NUL: a
 * longer one is refused when the session starts. */
#define CQ_SESSION_ALLOW_TEXT 2048

/* ---- results: AgentCore's (MCP CallToolResult) shape ------------------------------ */

enum cq_block_type {
    CQ_BLOCK_TEXT,
    CQ_BLOCK_IMAGE,         /* data + mime_type */
    CQ_BLOCK_RESOURCE,      /* uri, mime_type, text or blob (data) */
    CQ_BLOCK_RESOURCE_LINK, /* uri, name, mime_type, size, description */
};

struct cq_block {
    enum cq_block_type type;
    char *text; /* TEXT; RESOURCE when !is_blob */
    uint8_t *data;
    size_t data_len; /* IMAGE; RESOURCE when is_blob */
    bool is_blob;
    char *mime_type;
    char *uri;
    char *name;
    uint64_t size;
    char *description;
};

enum cq_task_status {
    CQ_TASK_NONE = 0,
    CQ_TASK_SUBMITTED,
    CQ_TASK_WORKING,
    CQ_TASK_COMPLETED,
    CQ_TASK_CANCELED,
    CQ_TASK_FAILED,
};

/* Failures of the service, not of the user's code. */
enum cq_result_error {
    CQ_RESULT_OK = 0,
    CQ_RESULT_NOT_FOUND,
    CQ_RESULT_INVALID_ARGUMENT,
    CQ_RESULT_LIMIT_EXCEEDED,
    CQ_RESULT_TIMED_OUT,
    CQ_RESULT_INTERNAL,
    CQ_RESULT_ACCESS_DENIED, /* the fleet's signed requests (docs/security.md) */
};

struct cq_result {
    struct cq_block *blocks;
    size_t n_blocks, cap_blocks;
    bool has_structured; /* structuredContent present */
    char *stdout_text;   /* NUL-terminated, UTF-8 (invalid bytes replaced) */
    char *value_text;    /* executeCode: the final expression's value, as in content */
    char *stderr_text;
    int exit_code;
    double execution_time_ms;
    char *task_id;
    enum cq_task_status task_status;
    bool is_error;
    enum cq_result_error error_code;
    char *error_message;
    /* What the call cost its session's sandbox, for the audit log: CPU time of the call
     * and the sandbox's peak memory so far; 0 when unknown (cgroup v1 without a usable
     * cpuacct hierarchy, tools that run nothing). */
    uint64_t cpu_ms;
    uint64_t peak_memory_bytes;
    /* Sessions with network (PUBLIC, ALLOWLIST), calls with structured content: bytes
     * the session's sandbox sent and received while the call ran (IP packets it
     * exchanged with the outside, its own DNS queries to codeq's resolver not counted). */
    bool has_network;
    uint64_t network_bytes_sent;
    uint64_t network_bytes_received;
    /* Calls with structured content, run by a normal user without a delegated cgroup who
     * allowed that: the limits its sandbox did not enforce (CQ_UNENFORCED_* of
     * sandbox/sandbox.h); 0 otherwise. The fleet's workers run as root: never set. */
    unsigned limits_unenforced;
    /* When the call's work in the sandbox (the kernel's cell, the command) began and
     * ended, CLOCK_REALTIME in nanoseconds, for its trace span; 0: nothing ran. */
    uint64_t run_start_unix_ns, run_end_unix_ns;
};

void cq_result_init(struct cq_result *r);
/* The outcome class of a result, for metrics and logs: "ok", "user_error" (the code
 * failed, or the request was wrong: invalid argument, not found, access denied),
 * "timeout", "limit" or "internal". */
const char *cq_result_outcome(const struct cq_result *r);
void cq_result_free(struct cq_result *r);
/* Marks the result as a failure of the service, with a message for people (also added
 * as a text block, since clients show content). */
void cq_result_fail(struct cq_result *r, enum cq_result_error code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Appends a text block (codeq's notes to a result); -1 when out of memory. */
int cq_result_add_text(struct cq_result *r, const char *text);
/* All return 0, or -1 when out of memory (the result is then left as it was). */
int cq_result_add_image(struct cq_result *r, const uint8_t *data, size_t len, const char *mime);
int cq_result_add_resource(struct cq_result *r, const char *path, const char *mime,
                           const uint8_t *data, size_t len, bool is_blob);
int cq_result_add_link(struct cq_result *r, const char *path, const char *name, const char *mime,
                       uint64_t size, const char *description);
const char *cq_task_status_name(enum cq_task_status s);   /* "working", ... */
const char *cq_result_error_name(enum cq_result_error e); /* "NOT_FOUND", ... */
/* The result error for a struct cq_error code (CQ_ENOTFOUND -> NOT_FOUND, ...). */
enum cq_result_error cq_result_error_of(int error_code);

/* ---- tool arguments: AgentCore's flat structure ---------------------------------- */

struct cq_file_content {
    const char *path;
    bool is_blob;
    const uint8_t *data; /* text or bytes */
    size_t len;
    /* Permission bits the file gets after the write, with CQ_FILE_MODE_SET (0777 at
     * most: no set-id or sticky bits); without that flag they are left (a new file is
     * 0644). AgentCore's writeFiles has none: the fleet uses it to restore a moved
     * session's executables and private files, 000 included. */
    uint32_t mode;
};
#define CQ_FILE_MODE_SET (1u << 20)

struct cq_invoke_args {
    const char *code;
    const char *language; /* python (default), javascript, typescript */
    bool clear_context;
    const char *runtime; /* python, nodejs, deno: only consistency-checked */
    const char *command;
    const char *const *paths;
    size_t n_paths;
    const struct cq_file_content *content;
    size_t n_content;
    const char *directory_path;
    const char *task_id;
    double timeout_s; /* 0: the default */
};

/* Live output of executeCode / executeCommand while they run. stream is 1 or 2. */
typedef void (*cq_stream_fn)(void *ctx, int stream, const char *data, size_t len);

/* ---- sessions ----------------------------------------------------------------------- */

enum cq_session_status { CQ_SESSION_READY = 1, CQ_SESSION_TERMINATED = 2 };

struct cq_session_info {
    char session_id[CQ_SESSION_ID_MAX + 1];
    char name[101];
    enum cq_session_status status;
    int64_t created_at_ms; /* Unix time */
    int64_t last_updated_at_ms;
    uint32_t session_timeout_s;
    /* The session's network mode (issue 13), as sandbox/sandbox.h's enum cq_network_mode
     * numbers it: 0 NONE, 1 PUBLIC, 2 ALLOWLIST; and its allowlist, the DESTs joined with
     * commas (no DEST holds one), "" outside ALLOWLIST. */
    int network_mode;
    char network_allow[CQ_SESSION_ALLOW_TEXT];
    /* Its code interpreter (issue 14: "codeq.default" for the built-in one), the
     * interpreter's runtime and layer digest ("" for none), and the limits its sandbox
     * got (the worker's defaults merged in). */
    char interpreter[64];
    char runtime[64];
    char runtime_digest[65];
    uint64_t memory_bytes;
    uint64_t pids;
    uint32_t cpu_millis; /* 1000 = one core */
    uint64_t disk_bytes; /* the workspace */
};

/* ---- tools ------------------------------------------------------------------------- */

/* AgentCore's nine tool names (executeCode, ...), NULL-terminated. */
extern const char *const cq_tool_names[];

#endif
