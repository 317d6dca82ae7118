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
#include "api/api.h"
#include "common/error.h"
#include "common/metrics.h"
#include "sandbox/netpolicy.h"
#include "sandbox/sandbox.h"

/* ---- the worker -------------------------------------------------------------------- */

struct cq_worker;

struct cq_worker_config {
    struct cq_sandbox_limits limits; /* per-session defaults */
    const char *runtimes_dir;        /* NULL: found next to the program, or CODEQ_RUNTIMES_DIR */
    unsigned warm_pool_size;         /* sandboxes kept ready with a preloaded Python kernel */
    /* Python kernels of codeq.default are forked from a zygote that imported their
     * modules once (docs/zygote.md), as root only; a kernel it cannot fork starts the
     * usual way. */
    bool fork_kernels;
    /* The most sandboxes a warm pool grows to when starts ask for more (worker/pool.c).
     * 0: the default, 128 with fork_kernels (a ready forked session costs ~5 MiB),
     * else no growth. A pool of size 0 stays off either way. */
    unsigned warm_pool_max;
    unsigned max_sessions;
    /* Memory the host keeps beyond sessions when the worker counts how many more fit
     * (cq_worker_room_by_memory). 0: 256 MiB, or 5 % of a host larger than 5 GiB. */
    uint64_t memory_reserve_bytes;
    uint32_t default_session_ttl_s;
    double default_call_timeout_s;
    uint64_t output_limit_bytes; /* per stream and call */
    /* The network (docs/configuration.md, "Network"): the operator's policy that bounds
     * what sessions may ask for, the namespace PUBLIC and ALLOWLIST traffic leaves
     * through ("": none, so only NONE sessions start) and the upstream resolver ("": no
     * names resolve). cq_worker_net_setting() fills them from settings. */
    struct cq_netpolicy netpolicy;
    char egress_netns[256];
    char dns[64];
    /* Sandboxes kept ready in PUBLIC mode and in ALLOWLIST mode (with an empty list,
     * refusing everything until a session gives its own: cq_sandbox_network_allow),
     * beside warm_pool_size NONE ones; a mode's pool only when the policy's modes allow
     * it. -1: the default, 1 when they can be. */
    int warm_pool_public;
    int warm_pool_allowlist;
    /* Called by cq_worker_start_session for a code interpreter the worker has not
     * defined (cq_worker_define_interpreter): it defines it and returns 0, or returns -1
     * with err (CQ_ENOTFOUND: no such interpreter). It may block (a fleet worker
     * fetches or builds the runtime's layer meanwhile: the session waits, it does not
     * fail). Called without the worker's locks held, from the starting thread. NULL:
     * only interpreters defined beforehand. */
    int (*resolve_interpreter)(void *ctx, struct cq_worker *w, const char *name,
                               struct cq_error *err);
    void *resolve_interpreter_ctx;
    /* Called when a session ends (stopped or expired), from a worker thread and
     * without the worker's locks held; may be NULL. */
    void (*on_session_end)(void *ctx, const char *session_id);
    void *on_session_end_ctx;
    /* Where the core counts what it does (executions, sessions, warm pools, sandbox
     * resources: docs/operations.md); the front end serves it on /metrics. NULL: not
     * counted. It must outlive the worker. */
    struct cq_metrics *metrics;
};

void cq_worker_config_init(struct cq_worker_config *cfg);

/* ---- code interpreters (docs/configuration.md, "Code interpreters") ---------------- */

/* The built-in interpreter: the worker's own configuration, no runtime layer
 * (AgentCore's aws.codeinterpreter.v1). A session that names none runs on it. */
#define CQ_INTERPRETER_DEFAULT "codeq.default"

/* A named configuration sessions start on, as the worker core sees it: the front ends
 * read definitions (runtime/interpreter.h, or the fleet's Redis) and resolve their
 * runtime into a layer. The worker copies everything it is given. */
struct cq_interpreter {
    const char *name; /* [a-z0-9][a-z0-9._-]{0,62} */
    /* The runtime's layer, bound read-only into every sandbox of the interpreter;
     * layer.host_path NULL: none. */
    struct cq_sandbox_bind layer;
    const char *runtime;             /* its runtime's name, for getSession; NULL: none */
    const char *runtime_digest;      /* the layer's digest; NULL: none */
    const char *const *env;          /* NAME=VALUE, NULL-terminated (PYTHONPATH, NODE_PATH,
                                      * the runtime's environment); a session's own env
                                      * overrides a variable of the same name */
    const char *const *preload;      /* Python modules its warm kernels import beforehand,
                                      * NULL-terminated; may be NULL */
    struct cq_sandbox_limits limits; /* zero fields: the worker's defaults */
    /* Its network mode (NULL: the policy's default) and allowlist, admitted against the
     * worker's policy when a session starts. A session that names another mode, or
     * another list, is refused (INVALID_ARGUMENT): the interpreter decides. */
    const enum cq_network_mode *network;
    const char *const *allow;
    size_t n_allow;
    uint32_t session_timeout_s; /* the default time to live of its sessions; 0: the worker's */
    unsigned warm_pool;         /* sandboxes kept ready for it, with preload imported */
};

/* Defines an interpreter, or replaces one of the same name (its warm sandboxes are
 * made again; sessions running on it keep what they started with). The name
 * CQ_INTERPRETER_DEFAULT cannot be defined. */
int cq_worker_define_interpreter(struct cq_worker *w, const struct cq_interpreter *def,
                                 struct cq_error *err);
/* Forgets one: new sessions on it are refused (NOT_FOUND, unless resolve_interpreter
 * defines it again); sessions running on it end at their time to live. */
int cq_worker_delete_interpreter(struct cq_worker *w, const char *name, struct cq_error *err);
/* Whether the worker has it defined now (CQ_INTERPRETER_DEFAULT: always), for a fleet
 * worker's capacity report. */
bool cq_worker_has_interpreter(struct cq_worker *w, const char *name);

/* Warm sandboxes ready now, and how many the pools keep when they can, over every
 * interpreter and network mode: for a fleet worker's readiness and its heartbeat. */
void cq_worker_warm_counts(struct cq_worker *w, unsigned *ready, unsigned *target);

/* How many more sessions fit in the host's memory now: its MemAvailable, less the
 * reserve, over what a live session holds on average (its sandbox's cgroup charge, of
 * up to 32 sessions; never counted below 8 MiB for forked kernels, 64 MiB for exec'd
 * ones); UINT64_MAX when the host does not say. A fleet worker advertises the lesser
 * of this and its free session slots. */
uint64_t cq_worker_room_by_memory(struct cq_worker *w);
/* The arithmetic of it: (available - reserve) / per_session, 0 when none is left. */
uint64_t cq_room_by_memory(uint64_t available, uint64_t reserve, uint64_t per_session);
uint64_t cq_worker_memory_reserve(const struct cq_worker_config *cfg);
/* The host's MemAvailable in bytes (0: unknown). */
uint64_t cq_host_memory_available(void);

/* ---- network settings: one parser for codeq mcp, codeq exec and codeq-worker -------- */

/* The settings by name (network_modes, network_default, network_private,
 * network_allow_bounds, network_deny, network_max_allow, network_max_pinned,
 * network_max_rate, network_max_connections, dns, egress_netns, warm_pool_public,
 * warm_pool_allowlist),
 * NULL-terminated, with a line of help each (cq_worker_net_help). */
extern const char *const cq_worker_net_settings[];
const char *cq_worker_net_help(const char *name);
/* Applies one setting from source (a flag, a variable, file:line, for messages). The
 * lists (network_modes, network_private, network_allow_bounds, network_deny) take
 * comma-separated entries; add: appended to what the list holds, else they replace
 * it (a later source replaces an earlier one's list; a flag repeated adds). Refused
 * (CQ_EINVALID, naming the setting): an unknown name, a value that does not parse. */
int cq_worker_net_setting(struct cq_worker_config *cfg, const char *name, const char *value,
                          bool add, const char *source, struct cq_error *err);
/* Applies the CODEQ_<NAME> variables of the settings above that are set. */
int cq_worker_net_environment(struct cq_worker_config *cfg, struct cq_error *err);
/* Adds a service's address (HOST:PORT, [V6]:PORT or HOST) to network_deny: every address
 * HOST has now (resolved once) that a sandbox could otherwise be let reach (public, or
 * private), all ports. For the fleet's own Kafka brokers and Redis. */
int cq_worker_net_deny_service(struct cq_worker_config *cfg, const char *hostport,
                               struct cq_error *err);

int cq_worker_create(const struct cq_worker_config *cfg, struct cq_worker **out,
                     struct cq_error *err);
/* Stops every session and the pool. */
void cq_worker_destroy(struct cq_worker *w);

struct cq_session_params {
    const char *id;                  /* NULL: a new random id; else 1-40 of [A-Za-z0-9_-] */
    const char *name;                /* optional, 1-100 characters */
    uint32_t timeout_s;              /* time to live from creation; 0: the default */
    struct cq_sandbox_limits limits; /* zero fields: the worker's defaults */
    const char *const *env;          /* NAME=VALUE, NULL-terminated; may be NULL */
    /* The network mode asked for; NULL: the policy's default (network_default). */
    const enum cq_network_mode *network;
    const char *const *allow; /* ALLOWLIST: n_allow DESTs (sandbox/netpolicy.h) */
    size_t n_allow;
    /* The code interpreter (AgentCore's codeInterpreterIdentifier); NULL or "":
     * CQ_INTERPRETER_DEFAULT. Its settings are the session's defaults: fields above
     * that are set override its limits and time to live. */
    const char *interpreter;
    /* The fleet's idempotency of the start (StartSession.client_token): a second start
     * with the token gets the session the first made. NULL: none; the embedded worker
     * ignores it (its front ends keep their own). */
    const char *client_token;
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

/* ---- cancelling a call (MCP's notifications/cancelled) ------------------------------ */

/* A front end makes one per call it may cancel, passes it to
 * cq_worker_invoke_cancellable and fires it from any thread. executeCode: the cell is
 * interrupted as on its timeout (SIGINT: variables are kept; a kernel that ignores it is
 * restarted after the grace period); executeCommand: the command and everything it
 * started are killed; a cell or command not started yet does not start. The other
 * tools are short and finish. The result says "cancelled". Fire it as often as wanted;
 * free it once the call returned. */
struct cq_cancel;

int cq_cancel_create(struct cq_cancel **out, struct cq_error *err);
void cq_cancel_fire(struct cq_cancel *c);
bool cq_cancel_fired(const struct cq_cancel *c);
void cq_cancel_free(struct cq_cancel *c);
/* Sets (hook non-NULL) or clears the function cq_cancel_fire calls, on the firing
 * thread; set after firing, it is called at once. Once cleared, it is no longer running
 * nor called. One hook at a time: a command the worker core runs sets its own while it
 * waits, so a front end hooks only a cancellation it does not give the core (the
 * fleet's calls, which it cancels by sending a cancel_call). */
void cq_cancel_hook(struct cq_cancel *c, void (*hook)(void *arg), void *arg);

/* cq_worker_invoke that cancel (NULL: none) can cut short. */
void cq_worker_invoke_cancellable(struct cq_worker *w, const char *session_id, const char *tool,
                                  const struct cq_invoke_args *args, cq_stream_fn on_output,
                                  void *ctx, struct cq_cancel *cancel, struct cq_result *result);

/* ---- workspace snapshots (the fleet keeps session files in Redis) ----------------- */

/* One entry of a workspace scan: a regular file, or a symbolic link (link_target set;
 * size is the target's length, mode 0). Other kinds (fifos, sockets, devices) and empty
 * directories are skipped. path is relative to the workspace. */
struct cq_workspace_entry {
    const char *path;
    uint64_t size;
    int64_t mtime_ns;
    uint32_t mode;           /* permission bits, 0777 at most */
    const char *link_target; /* NULL: a regular file */
};
/* Called for each entry; returns 0, or -1 with err filled to stop the walk (err is
 * never NULL). */
typedef int (*cq_workspace_fn)(void *ctx, const struct cq_workspace_entry *e, struct cq_error *err);

/* Calls fn for every regular file of the session's workspace. Returns 0, or -1 with
 * err: the callback's own error when it stopped the walk (prefixed with the session),
 * or why the workspace could not be read. */
int cq_worker_scan_workspace(struct cq_worker *w, const char *session_id, cq_workspace_fn fn,
                             void *ctx, struct cq_error *err);
/* Reads one workspace file (at most CQ_WORKER_MAX_FILE_BYTES); *data is malloc'd. */
/* Makes path (normalized as writeFiles does, beneath the workspace, parents created) a
 * symbolic link to target, replacing what is there, as the sandbox's user: what the fleet
 * restores of a moved session's links. The target is not resolved here (nothing the
 * worker does follows a workspace link): in the sandbox it means what it meant. */
int cq_worker_restore_link(struct cq_worker *w, const char *session_id, const char *path,
                           const char *target, struct cq_error *err);
int cq_worker_read_workspace_file(struct cq_worker *w, const char *session_id, const char *path,
                                  uint8_t **data, size_t *len, struct cq_error *err);

/* ---- kernel state (the fleet moves a drained session's variables) ----------------- */

/* The variables of the session's kernel of one language (javascript: the Node kernel,
 * else Python) as a state of at most max_bytes (*data malloc'd), or *data NULL when the
 * session has no such kernel running. The state is made by code in the sandbox:
 * untrusted bytes, to be kept and handed back to cq_worker_restore_kernel() only. A
 * kernel that fails to give them is replaced by a fresh one at the next call. */
int cq_worker_checkpoint_kernel(struct cq_worker *w, const char *session_id, bool javascript,
                                uint64_t max_bytes, uint8_t **data, size_t *len,
                                struct cq_error *err);
/* Starts the session's kernel of that language and gives it a state that
 * cq_worker_checkpoint_kernel() made for the same session; *summary (malloc'd) says,
 * for people, what was restored and what was not. On failure the kernel is replaced
 * by a fresh one at the next call. */
int cq_worker_restore_kernel(struct cq_worker *w, const char *session_id, bool javascript,
                             const uint8_t *data, size_t len, char **summary, struct cq_error *err);

#endif
