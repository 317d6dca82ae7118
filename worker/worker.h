/* worker/worker.h - the worker core: sessions and the nine AgentCore tools.
 *
 * One library behind every front end: `codeq exec` and `codeq mcp` call it in
 * process (the embedded default), the fleet's worker daemon calls it for requests
 * that arrive over Kafka. A session owns one sandbox (sandbox/sandbox.h), its
 * workspace, lazily started language kernels that keep state between calls, and
 * background command tasks. Sessions expire after their time to live.
 *
 * Thread safety: every call may come from any thread. Calls on different sessions
 * run in parallel; on one session, executions in one language are serialised (a
 * kernel runs one cell at a time) while other tools (files, tasks, commands) proceed.
 *
 * Tools never fail through the return value: every outcome, including invalid
 * arguments and internal errors, is a struct cq_result with is_error and error_code.
 */
#ifndef CQ_WORKER_WORKER_H
#define CQ_WORKER_WORKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "common/error.h"
#include "sandbox/sandbox.h"

/* Defaults (docs/configuration.md). */
#define CQ_WORKER_DEFAULT_SESSION_TTL_S 900
#define CQ_WORKER_MAX_SESSION_TTL_S     28800
#define CQ_WORKER_DEFAULT_CALL_TIMEOUT  300.0        /* seconds */
#define CQ_WORKER_DEFAULT_OUTPUT_LIMIT  (1ULL << 20) /* per stream and call */
#define CQ_WORKER_MAX_FILE_BYTES        (100ULL << 20)
#define CQ_WORKER_DEFAULT_MAX_SESSIONS  64
#define CQ_WORKER_INTERRUPT_GRACE_MS    2000

#define CQ_SESSION_ID_MAX 40

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
};

void cq_result_init(struct cq_result *r);
void cq_result_free(struct cq_result *r);
/* Marks the result as a failure of the service, with a message for people (also added
 * as a text block, since clients show content). */
void cq_result_fail(struct cq_result *r, enum cq_result_error code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Appends a text block (codeq's notes to a result); -1 when out of memory. */
int cq_result_add_text(struct cq_result *r, const char *text);
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
};

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

/* ---- the worker -------------------------------------------------------------------- */

struct cq_worker_config {
    struct cq_sandbox_limits limits; /* per-session defaults */
    const char *runtimes_dir;        /* NULL: found next to the program, or CODEQ_RUNTIMES_DIR */
    unsigned warm_pool_size;         /* sandboxes kept ready with a preloaded Python kernel */
    unsigned max_sessions;
    uint32_t default_session_ttl_s;
    double default_call_timeout_s;
    uint64_t output_limit_bytes; /* per stream and call */
    /* Called when a session ends (stopped or expired), from a worker thread and
     * without the worker's locks held; may be NULL. */
    void (*on_session_end)(void *ctx, const char *session_id);
    void *on_session_end_ctx;
};

void cq_worker_config_init(struct cq_worker_config *cfg);

struct cq_worker;

int cq_worker_create(const struct cq_worker_config *cfg, struct cq_worker **out,
                     struct cq_error *err);
/* Stops every session and the pool. */
void cq_worker_destroy(struct cq_worker *w);

enum cq_session_status { CQ_SESSION_READY = 1, CQ_SESSION_TERMINATED = 2 };

struct cq_session_info {
    char session_id[CQ_SESSION_ID_MAX + 1];
    char name[101];
    enum cq_session_status status;
    int64_t created_at_ms; /* Unix time */
    int64_t last_updated_at_ms;
    uint32_t session_timeout_s;
};

struct cq_session_params {
    const char *id;                  /* NULL: a new random id; else 1-40 of [A-Za-z0-9_-] */
    const char *name;                /* optional, 1-100 characters */
    uint32_t timeout_s;              /* time to live from creation; 0: the default */
    struct cq_sandbox_limits limits; /* zero fields: the worker's defaults */
    const char *const *env;          /* NAME=VALUE, NULL-terminated; may be NULL */
};

int cq_worker_start_session(struct cq_worker *w, const struct cq_session_params *params,
                            struct cq_session_info *info, struct cq_error *err);
int cq_worker_get_session(struct cq_worker *w, const char *session_id, struct cq_session_info *info,
                          struct cq_error *err);
/* Fills up to max entries (ready and recently terminated sessions), newest first,
 * starting after next_token (a session id, or NULL/""); *n gets the count and
 * next_token_out (if not NULL) the token of the next page or "". */
int cq_worker_list_sessions(struct cq_worker *w, int status_filter, size_t max,
                            const char *next_token, struct cq_session_info *out, size_t *n,
                            char next_token_out[CQ_SESSION_ID_MAX + 1], struct cq_error *err);
int cq_worker_stop_session(struct cq_worker *w, const char *session_id,
                           struct cq_session_info *info, struct cq_error *err);

/* Runs one of the nine tools in a session. The result is always filled (free it
 * with cq_result_free); on_output may be NULL. */
void cq_worker_invoke(struct cq_worker *w, const char *session_id, const char *tool,
                      const struct cq_invoke_args *args, cq_stream_fn on_output, void *ctx,
                      struct cq_result *result);

/* n characters of [0-9a-zA-Z] from the kernel's CSPRNG, NUL-terminated (out holds
 * n + 1): session, task and request ids that cannot be guessed. */
void cq_random_id(char *out, size_t n);

/* ---- workspace snapshots (the fleet keeps session files in Redis) ----------------- */

/* Called for each regular file of a workspace (links and special files are skipped);
 * a negative return stops the walk. path is relative to the workspace. */
typedef int (*cq_workspace_fn)(void *ctx, const char *path, uint64_t size, int64_t mtime_ns);

int cq_worker_scan_workspace(struct cq_worker *w, const char *session_id, cq_workspace_fn fn,
                             void *ctx, struct cq_error *err);
/* Reads one workspace file (at most CQ_WORKER_MAX_FILE_BYTES); *data is malloc'd. */
int cq_worker_read_workspace_file(struct cq_worker *w, const char *session_id, const char *path,
                                  uint8_t **data, size_t *len, struct cq_error *err);

/* The names of the nine tools, NULL-terminated. */
extern const char *const cq_worker_tool_names[];

#endif
