/* worker/session.h - the worker's session table (private to worker/). */
#ifndef CQ_WORKER_SESSION_H
#define CQ_WORKER_SESSION_H

#include "worker/internal.h"

#define CQ_WORKER_MAX_POOL 16  /* the most a pool's floor may be (--warm-pool) */
#define CQ_WORKER_POOL_CAP 256 /* the most a pool grows to (--warm-pool-max) */
/* A pool's demand is the most starts it saw in one second of this window. */
#define CQ_POOL_DEMAND_WINDOW_S 60
#define CQ_WORKER_POOL_MODES    3 /* NONE, PUBLIC, ALLOWLIST */
#define RUNTIMES_IN_SANDBOX     "/opt/codeq/runtimes"
_Static_assert(CQ_NETWORK_ALLOWLIST == CQ_WORKER_POOL_MODES - 1, "a pool per network mode");

struct kernel_slot {
    pthread_mutex_t run; /* one cell at a time; also guards starting the kernel */
    struct cq_kernel *kernel;
};

struct cq_session {
    char id[CQ_SESSION_ID_MAX + 1];
    char name[101];
    enum cq_session_status status; /* guarded by the worker's lock */
    int64_t created_ms, updated_ms;
    uint32_t ttl_s;
    uint64_t expires_mono_ms, terminated_mono_ms;
    int refs;            /* calls in progress; guarded by the worker's lock */
    pthread_cond_t idle; /* refs reached 0 */
    struct cq_sandbox *sandbox;
    struct cq_files files;
    char **env;                        /* the session's variables, NAME=VALUE */
    enum cq_network_mode network;      /* as admitted by the worker's policy */
    char allow[CQ_SESSION_ALLOW_TEXT]; /* ALLOWLIST: its DESTs, comma-joined */
    /* What it started with, kept when its interpreter is replaced or deleted. */
    char interpreter[64], runtime[64], digest[65];
    char **base_env; /* the interpreter's environment (NULL: none), for its kernels */
    struct cq_sandbox_limits limits;
    struct kernel_slot kernels[2]; /* [0] Python, [1] Node */
    pthread_mutex_t tasks_lock;
    struct cq_task **tasks;
    size_t n_tasks;
    /* Its sandbox's OOM kills and pids-limit hits counted so far (metrics.c). */
    _Atomic uint64_t oom_seen, pids_seen;
    /* Its egress counters [sent, received] counted so far, and the calls measuring
     * them now (metrics.c): overlapping calls count their traffic once. */
    _Atomic uint64_t net_seen[2];
    _Atomic unsigned net_calls;
    struct cq_session *next;
};

/* A warm pool: sandboxes of one network mode (and code interpreter) whose Python
 * kernel has imported its preload modules. ALLOWLIST ones wait with an empty list
 * (they reach nothing, resolve nothing) for the session's own, given when one takes
 * them (cq_sandbox_network_allow). Guarded by the worker's pool lock. */
struct cq_pool {
    enum cq_network_mode mode;
    unsigned size; /* wanted at least */
    unsigned max;  /* grown to at most, with demand (cq_pool_target); <= size: fixed */
    size_t n;
    uint64_t retry_at; /* after a failed refill: not before then (monotonic ms) */
    unsigned failures; /* in a row */
    /* Starts that asked this pool, per second: [i] counts second demand_sec[i]. */
    uint64_t demand_sec[CQ_POOL_DEMAND_WINDOW_S];
    uint16_t demand_n[CQ_POOL_DEMAND_WINDOW_S];
    uint64_t last_start_ms; /* the last start that asked it (monotonic ms) */
    struct {
        struct cq_sandbox *sandbox;
        struct cq_kernel *python;
    } items[CQ_WORKER_POOL_CAP];
};

/* A code interpreter as the worker keeps it (interpreter.c): a deep copy of what
 * cq_worker_define_interpreter got. Replacing one makes a new entry; the old one lives
 * on, out of the table, while a starting session or the refill thread still holds it. */
struct cq_interp {
    char name[64];
    char *layer_host, *layer_sandbox; /* NULL: no layer */
    char runtime[64], digest[65];     /* "": none */
    char **env, **preload, **allow;   /* NULL-terminated */
    size_t n_allow;
    struct cq_sandbox_limits limits; /* as given: zero fields are the worker's */
    bool has_network;
    enum cq_network_mode network;
    uint32_t ttl_s;
    int refs;     /* the table's and its users'; guarded by the pool lock */
    bool defined; /* still in the table */
    struct cq_pool pool;
    struct cq_interp *next;
};

struct cq_worker {
    struct cq_worker_config cfg;
    char runtimes_dir[4096];     /* on the host */
    const char *runtimes_seen;   /* where sandboxes see it: runtimes_dir, or a bind */
    pthread_mutex_t lock;        /* sessions list, statuses, refs, n_live */
    struct cq_session *sessions; /* newest first */
    unsigned n_live;
    bool stopping;
    pthread_t reaper;
    pthread_cond_t reaper_cond;
    /* The warm pools (pool.c) and the code interpreters (interpreter.c), under one
     * lock: the refill thread looks at all of them. */
    struct {
        pthread_mutex_t lock;
        pthread_cond_t cond;
        pthread_t thread;
        bool running, stopping;
        struct cq_pool modes[CQ_WORKER_POOL_MODES]; /* codeq.default's, by network mode */
        struct cq_interp *interps;
    } pool;
    struct cq_wmetrics *metrics; /* NULL: cfg.metrics is */
    /* cfg.fork_kernels: the zygote (zygote.c), started at the first kernel and again
     * after it failed, no sooner than retry_at (ms, cq_now_ms). */
    struct {
        pthread_mutex_t lock;
        struct cq_zygote *z;
        uint64_t retry_at;
    } zygote;
};

/* ---- pool.c ----------------------------------------------------------------------- */

/* A sandbox for a session or a pool of interpreter ip (NULL: codeq.default), with the
 * limits given (the worker's defaults merged in already); enterable by the zygote when
 * kernels are forked. */
int cq_worker_make_sandbox(struct cq_worker *w, const struct cq_interp *ip,
                           const struct cq_sandbox_limits *limits, enum cq_network_mode network,
                           const char *const *allow, size_t n_allow, struct cq_sandbox **out,
                           struct cq_error *err);
/* What the zygote's own sandbox has besides (zygote.c). */
struct cq_sandbox_extras {
    const struct cq_sandbox_bind *bind; /* one more read-only bind, or NULL */
    bool enterable;
    const char *workspace_dir; /* a host directory as /workspace, or NULL */
};
/* The same with extras. */
int cq_worker_sandbox_with(struct cq_worker *w, const struct cq_interp *ip,
                           const struct cq_sandbox_limits *limits, enum cq_network_mode network,
                           const char *const *allow, size_t n_allow,
                           const struct cq_sandbox_extras *extras, struct cq_sandbox **out,
                           struct cq_error *err);
/* Starts a kernel and waits until it is ready. forkable: a Python kernel of
 * codeq.default in a sandbox from cq_worker_make_sandbox, which the zygote may fork
 * when the worker forks kernels (with the modules imported, whatever preload says).
 * preload: Python, import codeq's usual
 * modules and preload_modules (may be NULL). base_env: the interpreter's environment
 * (struct cq_kernel_spawn), env the session's; both may be NULL. */
int cq_worker_start_kernel(struct cq_worker *w, struct cq_sandbox *sb, bool javascript,
                           bool forkable, bool preload, const char *const *preload_modules,
                           const char *const *base_env, const char *const *env,
                           struct cq_kernel **out, struct cq_error *err);
/* Starts the refill thread; stops it and empties the pools of codeq.default. */
int cq_pool_start(struct cq_worker *w, struct cq_error *err);
void cq_pool_stop(struct cq_worker *w);
/* A warm sandbox of the pool, with its preloaded kernel; false if none. An ALLOWLIST
 * one gets allow (admitted already) on the way out. Either way the start counts toward
 * the pool's demand. */
bool cq_pool_take(struct cq_worker *w, struct cq_pool *p, const char *const *allow, size_t n_allow,
                  struct cq_sandbox **sb, struct cq_kernel **k);
/* Destroys what the pool holds (with the pool lock not held: the items were moved out
 * under it into items/n). */
void cq_pool_destroy_items(struct cq_pool *p);
/* A start that asked p for a sandboxed kernel at now_ms (pool lock held). */
void cq_pool_note_start(struct cq_pool *p, uint64_t now_ms);
/* How many sandboxes p keeps ready now (pool lock held): its size, or, for a pool that
 * grows, the most starts it saw in one second of the last CQ_POOL_DEMAND_WINDOW_S,
 * up to its max. */
unsigned cq_pool_target(const struct cq_pool *p, uint64_t now_ms);
/* The most a pool of that floor grows to under cfg (the worker's max sessions bounds
 * it: more ready sandboxes than sessions could take are never of use). */
unsigned cq_pool_max_for(const struct cq_worker_config *cfg, unsigned size, bool forked);

/* ---- interpreter.c ---------------------------------------------------------------- */

/* The interpreter of that name, held (cq_interp_put); NULL if none. */
struct cq_interp *cq_interp_get(struct cq_worker *w, const char *name);
void cq_interp_put(struct cq_worker *w, struct cq_interp *ip);
/* Forgets every interpreter and destroys their pools (the refill thread has stopped). */
void cq_interps_destroy(struct cq_worker *w);

/* ---- session.c -------------------------------------------------------------------- */

/* The worker's defaults merged into requested limits (their zero fields). */
struct cq_sandbox_limits cq_worker_limits(const struct cq_worker *w,
                                          const struct cq_sandbox_limits *req);

/* A ready session, held against termination until released; NULL if none. */
struct cq_session *cq_session_acquire(struct cq_worker *w, const char *id);
void cq_session_release(struct cq_worker *w, struct cq_session *s);
uint64_t cq_session_remaining_ms(const struct cq_session *s);
/* The session's kernel for the language, started on first use. Call with the slot's
 * run mutex held. */
int cq_session_kernel(struct cq_worker *w, struct cq_session *s, bool javascript,
                      struct cq_kernel **out, struct cq_error *err);

/* ---- metrics.c: what the core counts, when cfg.metrics is set (else no-ops) -------- */

struct cq_wmetrics;

int cq_wmetrics_create(struct cq_worker *w, struct cq_error *err);
/* Before the worker's tables go: no scrape reads them after. */
void cq_wmetrics_destroy(struct cq_worker *w);
/* A tool call that ended with r; s NULL when its session was not found. */
void cq_wmetrics_call(struct cq_worker *w, const struct cq_session *s, const char *tool,
                      const struct cq_invoke_args *a, const struct cq_result *r,
                      uint64_t started_us);
/* Around a call in a session with network: its sandbox's egress counters before it,
 * and after it (NULL: not read). Traffic while no call runs is not counted. */
void cq_wmetrics_network_begin(struct cq_worker *w, struct cq_session *s,
                               const struct cq_sandbox_net_stats *before);
void cq_wmetrics_network_end(struct cq_worker *w, struct cq_session *s,
                             const struct cq_sandbox_net_stats *after);
/* The OOM kills and pids-limit hits of the session's sandbox that st shows beyond
 * what was counted. */
void cq_wmetrics_events(struct cq_worker *w, struct cq_session *s,
                        const struct cq_sandbox_stats *st);
/* The same, read from sb (the session's sandbox, about to be destroyed). */
void cq_wmetrics_sandbox_gone(struct cq_worker *w, struct cq_session *s, struct cq_sandbox *sb);
void cq_wmetrics_session_started(struct cq_worker *w, const char *interpreter, bool pool_missed);
void cq_wmetrics_session_ended(struct cq_worker *w, bool expired);
/* A Python kernel that was to be forked (cfg.fork_kernels): forked, or started the
 * usual way because the fork failed or there was no zygote to fork from. */
enum cq_fork_outcome { CQ_FORK_FORKED, CQ_FORK_FAILED, CQ_FORK_NO_ZYGOTE, CQ_FORK_OUTCOMES };
void cq_wmetrics_kernel_fork(struct cq_worker *w, enum cq_fork_outcome outcome);
/* The counters of output dropped past the limit, [stdout, stderr], or NULL. */
struct cq_metric_child *const *cq_wmetrics_dropped(struct cq_worker *w);
/* Moves *seen up to now, a reading of a counter that only grows but that several
 * threads read in any order; true with *delta when now is beyond it. */
bool cq_counter_advance(_Atomic uint64_t *seen, uint64_t now, uint64_t *delta);

#endif
