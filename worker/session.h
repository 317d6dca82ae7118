/* worker/session.h - the worker's session table (private to worker/). */
#ifndef CQ_WORKER_SESSION_H
#define CQ_WORKER_SESSION_H

#include "worker/internal.h"

#define CQ_WORKER_MAX_POOL   16
#define CQ_WORKER_POOL_MODES 3 /* NONE, PUBLIC, ALLOWLIST */
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
    struct kernel_slot kernels[2];     /* [0] Python, [1] Node */
    pthread_mutex_t tasks_lock;
    struct cq_task **tasks;
    size_t n_tasks;
    struct cq_session *next;
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
    /* Warm sandboxes, one pool per network mode, indexed by it. ALLOWLIST ones wait
     * with an empty list (they reach nothing, resolve nothing) for the session's own,
     * given when one takes them (cq_sandbox_network_allow). */
    struct {
        pthread_mutex_t lock;
        pthread_cond_t cond;
        pthread_t thread;
        bool running, stopping;
        struct {
            struct cq_sandbox *sandbox;
            struct cq_kernel *python;
        } items[CQ_WORKER_POOL_MODES][CQ_WORKER_MAX_POOL];
        size_t n[CQ_WORKER_POOL_MODES];
        unsigned size[CQ_WORKER_POOL_MODES];
    } pool;
};

/* A ready session, held against termination until released; NULL if none. */
struct cq_session *cq_session_acquire(struct cq_worker *w, const char *id);
void cq_session_release(struct cq_worker *w, struct cq_session *s);
uint64_t cq_session_remaining_ms(const struct cq_session *s);
/* The session's kernel for the language, started on first use. Call with the slot's
 * run mutex held. */
int cq_session_kernel(struct cq_worker *w, struct cq_session *s, bool javascript,
                      struct cq_kernel **out, struct cq_error *err);

#endif
