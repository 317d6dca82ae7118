/* worker/internal.h - shared by the worker's own files (not public). */
#ifndef CQ_WORKER_INTERNAL_H
#define CQ_WORKER_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include "common/random.h"
#include "common/utf8.h"
#include "worker/worker.h"

/* ---- capture.c: bounded output of one stream of one call --------------------------- */

/* The start of the output (buf: up to head_cap, the limit's first half) and its end (a
 * ring of the other half); what fell between is counted. */
struct cq_capture {
    char *buf;
    size_t len, limit, head_cap;
    char *tail; /* the ring, linear until it first fills */
    size_t tail_len, tail_alloc, tail_start;
    uint64_t total;                  /* bytes seen, kept or not */
    uint64_t cut_lines;              /* line breaks among the bytes not kept */
    char *notes;                     /* codeq's own notes (timeouts, deaths): kept past the limit */
    struct cq_metric_child *dropped; /* counts the bytes not kept; NULL: none */
};

void cq_capture_init(struct cq_capture *c, size_t limit);
void cq_capture_append(struct cq_capture *c, const char *data, size_t n);
/* A note from codeq itself, shown after the kept bytes even when the stream filled its
 * limit: a client must learn that its cell timed out or its context was reset. */
void cq_capture_note(struct cq_capture *c, const char *note);
/* Whether bytes were dropped between the head and the tail. */
bool cq_capture_cut(const struct cq_capture *c);
/* The kept bytes as UTF-8 text: the head, a note of what was cut (bytes, lines) when
 * anything was, the tail, then codeq's notes; caller frees. */
char *cq_capture_text(const struct cq_capture *c);
/* For a live stream that forwarded the first `streamed` bytes: the kept bytes after
 * them, as text, preceded by a note when bytes were cut between; NULL when there are
 * none (or out of memory). Caller frees. */
char *cq_capture_rest(const struct cq_capture *c, uint64_t streamed);
void cq_capture_free(struct cq_capture *c);

/* Content that tells the whole story to clients that show only content (frameworks
 * drop structuredContent): stderr's block starts with this label, on its own line
 * (docs/agentcore.md). structuredContent's stderr stays as it came. */
#define CQ_CONTENT_STDERR_LABEL "stderr:\n"
/* Adds text (not NULL, not "") as stderr's labeled block; 0, or -1 out of memory. */
int cq_content_stderr(struct cq_result *r, const char *text);

/* ---- cancel.c: what a running call polls, or hooks, to learn it was cancelled ------- */

/* An fd readable once c fired; -1 for NULL. */
int cq_cancel_fd(const struct cq_cancel *c);

/* ---- lines.c: lines from a peer that may be hostile ------------------------------- */

struct cq_lines {
    char *buf;
    size_t start;   /* the first byte not yet taken */
    size_t scanned; /* buf[start..scanned) holds no '\n' */
    size_t len, alloc;
    size_t cap; /* the longest line accepted, '\n' excluded */
};

void cq_lines_init(struct cq_lines *l, size_t cap);
void cq_lines_free(struct cq_lines *l);
/* Appends n bytes. -1 (CQ_EPROTO) when the line in progress outgrew the cap, ENOMEM
 * when out of memory. Take every complete line (cq_lines_next) before feeding more. */
int cq_lines_feed(struct cq_lines *l, const void *data, size_t n, struct cq_error *err);
/* 1 with the next complete line (without its '\n'; valid until the next feed), 0 when
 * none is complete yet, -1 (CQ_EPROTO) for a line longer than the cap. */
int cq_lines_next(struct cq_lines *l, const char **line, size_t *len, struct cq_error *err);
/* Whether bytes are held that no line has taken yet. */
bool cq_lines_pending(const struct cq_lines *l);

/* ---- kernel.c: persistent language kernels inside a session's sandbox --------------- */

enum cq_language { CQ_LANG_PYTHON, CQ_LANG_JAVASCRIPT, CQ_LANG_TYPESCRIPT };

struct cq_kernel;

struct cq_zygote;

/* zygote.c: the Python kernel zygote of codeq.default (docs/zygote.md). */
int cq_zygote_start(struct cq_worker *w, struct cq_zygote **out, struct cq_error *err);
/* Forks a kernel into sb (enterable) for req, as cq_sandbox_spawn would start one. */
int cq_zygote_fork(struct cq_zygote *z, struct cq_sandbox *sb, const struct cq_spawn *req,
                   struct cq_process **out, struct cq_error *err);
void cq_zygote_stop(struct cq_zygote *z);

struct cq_kernel_spawn {
    struct cq_sandbox *sandbox;
    struct cq_zygote *zygote; /* Python: forked from it (preload is then moot); NULL: exec'd */
    bool javascript;          /* the Node kernel (JavaScript and TypeScript) */
    bool preload;             /* Python: import numpy, pandas, matplotlib at start */
    /* Python, with preload: more modules to import at start (a code interpreter's),
     * NULL-terminated, at most CQ_KERNEL_MAX_PRELOAD; may be NULL. One that fails to
     * import is reported on the kernel's stderr and skipped. */
    const char *const *preload_modules;
    const char *runtimes_dir; /* inside the sandbox */
    const char *const *env;   /* session environment, may be NULL */
    /* The environment the sandbox gives every process (a code interpreter's): read
     * for NODE_PATH only, which the Node kernel extends; may be NULL. */
    const char *const *base_env;
};

#define CQ_KERNEL_MAX_PRELOAD 64

int cq_kernel_start(const struct cq_kernel_spawn *spawn, struct cq_kernel **out,
                    struct cq_error *err);
/* Waits until the kernel reported ready (after preloading). */
int cq_kernel_wait_ready(struct cq_kernel *k, uint64_t timeout_ms, struct cq_error *err);

struct cq_execution {
    const char *code;
    enum cq_language language;
    bool clear_context;
    uint64_t timeout_ms;   /* 0: none */
    uint64_t output_limit; /* bytes kept and streamed, per stream; never 0 (the worker
                            * sets its default) */
    cq_stream_fn on_output;
    void *ctx;
    struct cq_metric_child *const *dropped; /* [stdout, stderr] (capture's); NULL: none */
    struct cq_cancel *cancel;               /* NULL: none */
};

/* Runs a cell; fills result (content, structured content, is_error). When the kernel
 * had to be killed (it ignored the interrupt, or died), *dead is set and the kernel
 * must be replaced. */
void cq_kernel_execute(struct cq_kernel *k, const struct cq_execution *x, struct cq_result *result,
                       bool *dead);
/* Sets the session's environment variables (NAME=VALUE) in the kernel's process. */
int cq_kernel_set_env(struct cq_kernel *k, const char *const *env, struct cq_error *err);
/* Asks the kernel for its variables as a state of at most max_bytes (*data malloc'd;
 * untrusted bytes: stored and handed back to cq_kernel_restore() only). */
int cq_kernel_checkpoint(struct cq_kernel *k, uint64_t max_bytes, uint64_t timeout_ms,
                         uint8_t **data, size_t *len, struct cq_error *err);
/* Gives a fresh kernel of the same session a state cq_kernel_checkpoint() made;
 * *summary (malloc'd) says, for people, what was restored and what was not. A kernel
 * that failed to answer must be replaced. */
int cq_kernel_restore(struct cq_kernel *k, const uint8_t *data, size_t len, uint64_t timeout_ms,
                      char **summary, struct cq_error *err);
/* Kills the kernel (and everything it started) and frees it; NULL is allowed. */
void cq_kernel_stop(struct cq_kernel *k);

/* ---- files.c: the workspace, from the host side ------------------------------------ */

struct cq_files {
    int workspace_fd; /* O_PATH */
    uint32_t uid, gid;
};

void cq_files_write(const struct cq_files *f, const struct cq_file_content *content, size_t n,
                    struct cq_result *r);
void cq_files_read(const struct cq_files *f, const char *const *paths, size_t n,
                   struct cq_result *r);
void cq_files_list(const struct cq_files *f, const char *directory, struct cq_result *r);
/* For snapshots: every regular file below the workspace, as the sandbox user. Returns
 * 0, or -1 with err: the callback's error as it filled it, or the failed syscall's. */
int cq_files_scan(const struct cq_files *f, cq_workspace_fn fn, void *ctx, struct cq_error *err);
int cq_files_read_raw(const struct cq_files *f, const char *path, uint8_t **data, size_t *len);
/* cq_worker_restore_link's work, as the sandbox's user; -1 with errno. */
int cq_files_link(const struct cq_files *f, const char *path, const char *target);
void cq_files_remove(const struct cq_files *f, const char *const *paths, size_t n,
                     struct cq_result *r);
/* "image/png" for "a/b.png"; "text/plain" or "application/octet-stream" otherwise. */
const char *cq_mime_type(const char *path, bool is_text);

/* ---- commands.c: executeCommand and background tasks -------------------------------- */

struct cq_task;

struct cq_command {
    struct cq_sandbox *sandbox;
    const char *command;
    const char *const *env;
    uint64_t timeout_ms;
    uint64_t output_limit;
    cq_stream_fn on_output;
    void *ctx;
    struct cq_metric_child *const *dropped; /* as in struct cq_execution */
    struct cq_cancel *cancel;               /* executeCommand's; NULL: none */
};

void cq_command_run(const struct cq_command *c, struct cq_result *r);
/* Starts the command in the background; *out is owned by the caller's task table. */
int cq_task_start(const struct cq_command *c, struct cq_task **out, struct cq_error *err);
const char *cq_task_id(const struct cq_task *t);
/* Status and the output so far into r. */
void cq_task_report(struct cq_task *t, struct cq_result *r);
/* Kills it; the task then ends as canceled. */
void cq_task_stop(struct cq_task *t);
/* Stops if needed, joins its thread, frees. */
void cq_task_free(struct cq_task *t);

#endif
