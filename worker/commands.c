/* worker/commands.c - executeCommand, and startCommandExecution's background tasks.
 *
 * A command is `/bin/sh -c COMMAND` in the session's sandbox, working directory
 * /workspace, with stdout and stderr kept apart and the real exit code: AgentCore runs
 * commands under a terminal, merging the streams and losing the status. A task is
 * the same in the background: a thread waits for it and keeps its output (the
 * first bytes up to the output limit, per stream) for getTask.
 */
#define _GNU_SOURCE
#include "worker/internal.h"
#include "common/clock.h"
#include "common/units.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct capture_pair {
    struct cq_capture out[2];
    cq_stream_fn forward;
    void *ctx;
    pthread_mutex_t *lock; /* tasks: getTask reads while the thread appends */
};

static void on_output(void *ctx, int stream, const char *data, size_t len)
{
    struct capture_pair *cp = ctx;
    struct cq_capture *c = &cp->out[stream == 2];
    if (cp->lock != NULL)
        pthread_mutex_lock(cp->lock);
    uint64_t before = c->total;
    cq_capture_append(c, data, len);
    if (cp->lock != NULL)
        pthread_mutex_unlock(cp->lock);
    /* Live output stops at the limit, per stream; the kept end follows when the
     * command ends (forward_rest). */
    if (cp->forward != NULL && before < c->limit) {
        uint64_t room = c->limit - before;
        cp->forward(cp->ctx, stream, data, len < room ? len : (size_t)room);
    }
}

/* After the command: the end of each stream that live output did not carry (it
 * forwarded the first `limit` bytes), behind a note of what was cut between. */
static void forward_rest(struct capture_pair *cp)
{
    for (int s = 0; cp->forward != NULL && s < 2; s++) {
        const struct cq_capture *c = &cp->out[s];
        char *rest = cq_capture_rest(c, c->total < c->limit ? c->total : c->limit);
        if (rest != NULL && rest[0] != '\0')
            cp->forward(cp->ctx, s + 1, rest, strlen(rest));
        free(rest);
    }
}

/* stdout, stderr labeled, and the exit code (-1: nobody saw the end) last. */
static void add_content(struct cq_result *r)
{
    bool output = false;
    if (r->stdout_text != NULL && r->stdout_text[0] != '\0') {
        cq_result_add_text(r, r->stdout_text);
        output = true;
    }
    if (r->stderr_text != NULL && r->stderr_text[0] != '\0') {
        cq_content_stderr(r, r->stderr_text);
        output = true;
    }
    char text[64];
    if (r->exit_code < 0)
        snprintf(text, sizeof(text), "%sexit code unknown", output ? "" : "(no output) ");
    else
        snprintf(text, sizeof(text), "%sexit code %d", output ? "" : "(no output) ", r->exit_code);
    cq_result_add_text(r, text);
}

static int spawn_command(const struct cq_command *c, struct cq_process **proc, struct cq_error *err)
{
    const char *argv[] = {"/bin/sh", "-c", c->command, NULL};
    struct cq_spawn req;
    cq_spawn_init(&req, argv);
    req.env = c->env;
    req.timeout_ms = c->timeout_ms;
    req.stdout_mode = req.stderr_mode = CQ_STDIO_PIPE;
    /* Each stream is limited by its own capture: a flood on stdout must not crowd out
     * the error message on stderr. The supervisor still reads (and counts) it all. */
    req.output_limit_bytes = UINT64_MAX;
    return cq_sandbox_spawn(c->sandbox, &req, proc, err);
}

/* The exit code a shell would report, and a closing note for stderr when a limit or a
 * stop ended the command. */
static int conclude(const struct cq_process_report *rep, double timeout_s,
                    struct cq_capture *err_capture)
{
    char note[256] = "";
    if (rep->timed_out)
        snprintf(note, sizeof(note),
                 "codeq: timed out after %.3g s; the command and everything "
                 "it started were killed\n",
                 timeout_s);
    else if (rep->oom_killed)
        snprintf(note, sizeof(note),
                 "codeq: killed by the kernel's OOM killer: the session's "
                 "memory limit was reached\n");
    else if (rep->killed)
        snprintf(note, sizeof(note), "codeq: stopped\n");
    if (note[0] != '\0')
        cq_capture_note(err_capture, note);
    return rep->signal != 0 ? 128 + rep->signal : rep->exit_code;
}

static void set_timed_out(struct cq_result *r, double timeout_s)
{
    r->error_code = CQ_RESULT_TIMED_OUT;
    free(r->error_message);
    if (asprintf(&r->error_message, "timed out after %.3g s; the command was killed", timeout_s) <
        0)
        r->error_message = NULL;
}

static void kill_hook(void *proc)
{
    cq_process_kill(proc);
}

void cq_command_run(const struct cq_command *c, struct cq_result *r)
{
    struct capture_pair cp = {.forward = c->on_output, .ctx = c->ctx};
    cq_capture_init(&cp.out[0], c->output_limit);
    cq_capture_init(&cp.out[1], c->output_limit);
    for (int s = 0; c->dropped != NULL && s < 2; s++)
        cp.out[s].dropped = c->dropped[s];
    uint64_t started = cq_now_us();
    struct cq_error err;
    struct cq_process *proc = NULL;
    r->has_structured = true;
    if (spawn_command(c, &proc, &err) < 0) {
        cq_result_fail(r, err.code == EAGAIN ? CQ_RESULT_LIMIT_EXCEEDED : CQ_RESULT_INTERNAL,
                       "executeCommand: %s", err.msg);
        r->exit_code = 127;
        r->stdout_text = strdup("");
        r->stderr_text = strdup(err.msg);
        goto out;
    }
    struct cq_wait_io io = {.on_output = on_output, .ctx = &cp, .input_fd = -1};
    struct cq_process_report rep;
    /* Cleared before proc is freed: a cancellation then kills nothing that is gone. */
    cq_cancel_hook(c->cancel, kill_hook, proc);
    int waited = cq_process_wait(proc, &io, &rep, &err);
    cq_cancel_hook(c->cancel, NULL, NULL);
    bool cancelled = waited == 0 && rep.killed && cq_cancel_fired(c->cancel);
    if (cancelled) {
        rep.killed = false; /* the note below, not conclude()'s "stopped" */
        cq_capture_note(&cp.out[1], "codeq: cancelled; the command and everything it started "
                                    "were killed\n");
    }
    if (waited < 0) {
        cq_result_fail(r, CQ_RESULT_INTERNAL, "executeCommand: %s", err.msg);
        r->exit_code = -1; /* unknown: never 0 for a command whose end nobody saw */
        goto out;
    }
    forward_rest(&cp);
    r->exit_code = conclude(&rep, (double)c->timeout_ms / 1000.0, &cp.out[1]);
    r->cpu_ms = rep.cpu_ms;
    r->peak_memory_bytes = rep.peak_memory_bytes;
    if (rep.timed_out)
        set_timed_out(r, (double)c->timeout_ms / 1000.0);
    if (cancelled && r->error_message == NULL)
        r->error_message = strdup("cancelled; the command was killed");
    r->is_error = r->exit_code != 0 || cancelled;
    r->stdout_text = cq_capture_text(&cp.out[0]);
    r->stderr_text = cq_capture_text(&cp.out[1]);
    add_content(r);
out:
    r->execution_time_ms = (double)(cq_now_us() - started) / 1000.0;
    cq_process_free(proc);
    cq_capture_free(&cp.out[0]);
    cq_capture_free(&cp.out[1]);
}

struct cq_task {
    char id[33];
    struct cq_process *proc;
    pthread_t thread;
    pthread_mutex_t lock; /* guards everything below and the captures */
    struct capture_pair cp;
    enum cq_task_status status;
    int exit_code;
    bool timed_out;
    bool stop_requested;
    double timeout_s;
    uint64_t started_us, ended_us;
};

static void *task_main(void *arg)
{
    struct cq_task *t = arg;
    struct cq_wait_io io = {.on_output = on_output, .ctx = &t->cp, .input_fd = -1};
    struct cq_process_report rep;
    struct cq_error err;
    int rc = cq_process_wait(t->proc, &io, &rep, &err);
    pthread_mutex_lock(&t->lock);
    t->ended_us = cq_now_us();
    if (rc < 0) {
        t->status = CQ_TASK_FAILED;
        t->exit_code = -1;
        char note[sizeof(err.msg) + 16];
        snprintf(note, sizeof(note), "codeq: %s\n", err.msg);
        cq_capture_note(&t->cp.out[1], note);
    } else {
        t->exit_code = conclude(&rep, t->timeout_s, &t->cp.out[1]);
        t->timed_out = rep.timed_out;
        t->status = t->stop_requested   ? CQ_TASK_CANCELED
                    : t->exit_code == 0 ? CQ_TASK_COMPLETED
                                        : CQ_TASK_FAILED;
    }
    pthread_mutex_unlock(&t->lock);
    return NULL;
}

int cq_task_start(const struct cq_command *c, struct cq_task **out, struct cq_error *err)
{
    struct cq_task *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return cq_error_sys(err, ENOMEM, "allocate task");
    cq_random_id(t->id, 32);
    pthread_mutex_init(&t->lock, NULL);
    t->cp.lock = &t->lock;
    cq_capture_init(&t->cp.out[0], c->output_limit);
    cq_capture_init(&t->cp.out[1], c->output_limit);
    for (int s = 0; c->dropped != NULL && s < 2; s++)
        t->cp.out[s].dropped = c->dropped[s];
    t->status = CQ_TASK_WORKING;
    t->timeout_s = (double)c->timeout_ms / 1000.0;
    t->started_us = cq_now_us();
    struct cq_command bg = *c;
    bg.on_output = NULL; /* nobody listens live to a background task */
    if (spawn_command(&bg, &t->proc, err) < 0)
        goto fail;
    int rc = pthread_create(&t->thread, NULL, task_main, t);
    if (rc != 0) {
        cq_error_sys(err, rc, "task thread");
        goto fail;
    }
    *out = t;
    return 0;
fail:
    cq_process_free(t->proc);
    cq_capture_free(&t->cp.out[0]);
    cq_capture_free(&t->cp.out[1]);
    pthread_mutex_destroy(&t->lock);
    free(t);
    return -1;
}

const char *cq_task_id(const struct cq_task *t)
{
    return t->id;
}

void cq_task_report(struct cq_task *t, struct cq_result *r)
{
    pthread_mutex_lock(&t->lock);
    r->has_structured = true;
    r->task_id = strdup(t->id);
    r->task_status = t->status;
    r->stdout_text = cq_capture_text(&t->cp.out[0]);
    r->stderr_text = cq_capture_text(&t->cp.out[1]);
    uint64_t end = t->status == CQ_TASK_WORKING ? cq_now_us() : t->ended_us;
    r->execution_time_ms = (double)(end - t->started_us) / 1000.0;
    r->exit_code = t->status == CQ_TASK_WORKING ? 0 : t->exit_code;
    r->is_error = t->status == CQ_TASK_FAILED;
    if (t->timed_out)
        set_timed_out(r, t->timeout_s);
    enum cq_task_status status = t->status;
    pthread_mutex_unlock(&t->lock);
    char text[128];
    snprintf(text, sizeof(text), "task %s is %s", t->id, cq_task_status_name(status));
    cq_result_add_text(r, text);
    if (status != CQ_TASK_WORKING) {
        add_content(r);
        return;
    }
    /* Running: its output so far, and no exit code yet. */
    if (r->stdout_text != NULL && r->stdout_text[0] != '\0')
        cq_result_add_text(r, r->stdout_text);
    cq_content_stderr(r, r->stderr_text);
}

void cq_task_stop(struct cq_task *t)
{
    pthread_mutex_lock(&t->lock);
    bool running = t->status == CQ_TASK_WORKING;
    if (running)
        t->stop_requested = true;
    pthread_mutex_unlock(&t->lock);
    if (running)
        cq_process_kill(t->proc);
}

void cq_task_free(struct cq_task *t)
{
    if (t == NULL)
        return;
    cq_task_stop(t);
    pthread_join(t->thread, NULL);
    cq_process_free(t->proc);
    cq_capture_free(&t->cp.out[0]);
    cq_capture_free(&t->cp.out[1]);
    pthread_mutex_destroy(&t->lock);
    free(t);
}
