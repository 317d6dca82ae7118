/* worker/tools.c - AgentCore's nine tools, on a session: argument checks, timeouts,
 * and the dispatch to kernels (kernel.c), commands and tasks (commands.c) and files
 * (files.c). */
#define _GNU_SOURCE
#include "worker/session.h"
#include "common/clock.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum tool {
    TOOL_EXECUTE_CODE,
    TOOL_EXECUTE_COMMAND,
    TOOL_READ_FILES,
    TOOL_LIST_FILES,
    TOOL_REMOVE_FILES,
    TOOL_WRITE_FILES,
    TOOL_START_COMMAND,
    TOOL_GET_TASK,
    TOOL_STOP_TASK,
};

/* The call's timeout: the argument or the default, never beyond the session's end. */
static bool call_timeout(const struct cq_worker *w, const struct cq_session *s,
                         const struct cq_invoke_args *a, uint64_t *out_ms, struct cq_result *r)
{
    double seconds = a->timeout_s;
    if (isnan(seconds) || seconds < 0 || seconds > CQ_WORKER_MAX_SESSION_TTL_S) {
        cq_result_fail(r, CQ_RESULT_INVALID_ARGUMENT, "timeout must be between 0 and %d seconds",
                       CQ_WORKER_MAX_SESSION_TTL_S);
        return false;
    }
    if (seconds == 0)
        seconds = w->cfg.default_call_timeout_s;
    uint64_t ms = (uint64_t)(seconds * 1000.0);
    uint64_t remaining = cq_session_remaining_ms(s);
    if (ms > remaining)
        ms = remaining;
    *out_ms = ms > 0 ? ms : 1;
    return true;
}

/* CLOCK_REALTIME in nanoseconds: when a call's work in the sandbox ran, for its span. */
static uint64_t unix_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static bool language_of(const struct cq_invoke_args *a, enum cq_language *out, struct cq_result *r)
{
    const char *lang = a->language != NULL && a->language[0] ? a->language : "python";
    if (strcmp(lang, "python") == 0)
        *out = CQ_LANG_PYTHON;
    else if (strcmp(lang, "javascript") == 0)
        *out = CQ_LANG_JAVASCRIPT;
    else if (strcmp(lang, "typescript") == 0)
        *out = CQ_LANG_TYPESCRIPT;
    else {
        cq_result_fail(r, CQ_RESULT_INVALID_ARGUMENT,
                       "executeCode: language '%s' is not one of python, javascript, typescript",
                       lang);
        return false;
    }
    const char *runtime = a->runtime;
    if (runtime == NULL || runtime[0] == '\0')
        return true;
    bool node = *out != CQ_LANG_PYTHON;
    if (strcmp(runtime, "deno") == 0) {
        cq_result_fail(r, CQ_RESULT_INVALID_ARGUMENT,
                       "executeCode: runtime 'deno' is not available here; use 'nodejs'");
        return false;
    }
    if ((node && strcmp(runtime, "nodejs") != 0) || (!node && strcmp(runtime, "python") != 0)) {
        cq_result_fail(r, CQ_RESULT_INVALID_ARGUMENT, "executeCode: runtime '%s' does not run %s",
                       runtime, a->language ? a->language : "python");
        return false;
    }
    return true;
}

/* A call cancelled before its cell or command started: nothing runs. */
static bool cancelled_before(const struct cq_cancel *cancel, const char *tool, struct cq_result *r)
{
    if (!cq_cancel_fired(cancel))
        return false;
    r->has_structured = true;
    r->stdout_text = strdup("");
    r->stderr_text = strdup("");
    r->exit_code = 1;
    r->is_error = true;
    r->error_message = strdup("cancelled before it started");
    char text[96];
    snprintf(text, sizeof(text), "codeq: %s cancelled before it started", tool);
    cq_result_add_text(r, text);
    return true;
}

static void execute_code(struct cq_worker *w, struct cq_session *s, const struct cq_invoke_args *a,
                         cq_stream_fn on_output, void *ctx, struct cq_cancel *cancel,
                         struct cq_result *r)
{
    enum cq_language lang;
    uint64_t timeout_ms;
    if (a->code == NULL) {
        cq_result_fail(r, CQ_RESULT_INVALID_ARGUMENT, "executeCode: 'code' is required");
        return;
    }
    if (!language_of(a, &lang, r) || !call_timeout(w, s, a, &timeout_ms, r))
        return;
    bool javascript = lang != CQ_LANG_PYTHON;
    struct kernel_slot *slot = &s->kernels[javascript];
    pthread_mutex_lock(&slot->run);
    /* A call cancelled while it waited for the kernel's previous cell. */
    if (cancelled_before(cancel, "executeCode", r)) {
        pthread_mutex_unlock(&slot->run);
        return;
    }
    struct cq_kernel *k = NULL;
    struct cq_error err;
    if (cq_session_kernel(w, s, javascript, &k, &err) < 0) {
        pthread_mutex_unlock(&slot->run);
        cq_result_fail(r, CQ_RESULT_INTERNAL, "executeCode: %s", err.msg);
        return;
    }
    struct cq_execution x = {
        .code = a->code,
        .language = lang,
        .clear_context = a->clear_context,
        .timeout_ms = timeout_ms,
        .output_limit = w->cfg.output_limit_bytes,
        .on_output = on_output,
        .ctx = ctx,
        .dropped = cq_wmetrics_dropped(w),
        .cancel = cancel,
    };
    bool dead = false;
    r->run_start_unix_ns = unix_ns();
    cq_kernel_execute(k, &x, r, &dead);
    r->run_end_unix_ns = unix_ns();
    if (dead) {
        /* Replaced on the next call: a fresh interpreter, as the result said. */
        cq_kernel_stop(k);
        slot->kernel = NULL;
    }
    pthread_mutex_unlock(&slot->run);
}

static struct cq_command command_of(struct cq_worker *w, struct cq_session *s,
                                    const struct cq_invoke_args *a, uint64_t timeout_ms,
                                    cq_stream_fn on_output, void *ctx)
{
    return (struct cq_command){
        .sandbox = s->sandbox,
        .command = a->command,
        .env = (const char *const *)s->env,
        .timeout_ms = timeout_ms,
        .output_limit = w->cfg.output_limit_bytes,
        .on_output = on_output,
        .ctx = ctx,
        .dropped = cq_wmetrics_dropped(w),
    };
}

static struct cq_task *find_task(struct cq_session *s, const char *id)
{
    for (size_t i = 0; id != NULL && i < s->n_tasks; i++)
        if (strcmp(cq_task_id(s->tasks[i]), id) == 0)
            return s->tasks[i];
    return NULL;
}

static void start_task(struct cq_worker *w, struct cq_session *s, const struct cq_invoke_args *a,
                       struct cq_result *r)
{
    /* A task may run as long as the session lives, unless a timeout is given. */
    uint64_t timeout_ms = cq_session_remaining_ms(s);
    if (a->timeout_s != 0 && !call_timeout(w, s, a, &timeout_ms, r))
        return;
    struct cq_command c = command_of(w, s, a, timeout_ms, NULL, NULL);
    struct cq_task *t;
    struct cq_error err;
    pthread_mutex_lock(&s->tasks_lock);
    struct cq_task **tasks = realloc(s->tasks, (s->n_tasks + 1) * sizeof(*tasks));
    if (tasks == NULL) {
        pthread_mutex_unlock(&s->tasks_lock);
        cq_result_fail(r, CQ_RESULT_INTERNAL, "startCommandExecution: out of memory");
        return;
    }
    s->tasks = tasks;
    if (cq_task_start(&c, &t, &err) < 0) {
        pthread_mutex_unlock(&s->tasks_lock);
        cq_result_fail(r, err.code == EAGAIN ? CQ_RESULT_LIMIT_EXCEEDED : CQ_RESULT_INTERNAL,
                       "startCommandExecution: %s", err.msg);
        return;
    }
    s->tasks[s->n_tasks++] = t;
    pthread_mutex_unlock(&s->tasks_lock);
    r->has_structured = true;
    r->task_id = strdup(cq_task_id(t));
    r->task_status = CQ_TASK_WORKING;
    char text[128];
    snprintf(text, sizeof(text), "started task %s", cq_task_id(t));
    cq_result_add_text(r, text);
}

static void task_tool(struct cq_session *s, const struct cq_invoke_args *a, bool stop,
                      struct cq_result *r)
{
    const char *tool = stop ? "stopTask" : "getTask";
    if (a->task_id == NULL || a->task_id[0] == '\0') {
        cq_result_fail(r, CQ_RESULT_INVALID_ARGUMENT, "%s: 'taskId' is required", tool);
        return;
    }
    pthread_mutex_lock(&s->tasks_lock);
    struct cq_task *t = find_task(s, a->task_id);
    if (t != NULL && stop)
        cq_task_stop(t);
    pthread_mutex_unlock(&s->tasks_lock);
    if (t == NULL) {
        cq_result_fail(r, CQ_RESULT_NOT_FOUND, "%s: no task '%s' in this session", tool,
                       a->task_id);
        return;
    }
    if (stop) {
        /* Report once it has ended, so the answer says canceled, not working. */
        for (int i = 0; i < 200; i++) {
            struct cq_result probe;
            cq_result_init(&probe);
            cq_task_report(t, &probe);
            bool ended = probe.task_status != CQ_TASK_WORKING;
            cq_result_free(&probe);
            if (ended)
                break;
            struct timespec ts = {0, 10 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    cq_task_report(t, r);
}

static int tool_index(const char *name)
{
    for (int i = 0; name != NULL && cq_tool_names[i] != NULL; i++)
        if (strcmp(name, cq_tool_names[i]) == 0)
            return i;
    return -1;
}

void cq_worker_invoke(struct cq_worker *w, const char *session_id, const char *tool,
                      const struct cq_invoke_args *a, cq_stream_fn on_output, void *ctx,
                      struct cq_result *r)
{
    cq_worker_invoke_cancellable(w, session_id, tool, a, on_output, ctx, NULL, r);
}

void cq_worker_invoke_cancellable(struct cq_worker *w, const char *session_id, const char *tool,
                                  const struct cq_invoke_args *a, cq_stream_fn on_output, void *ctx,
                                  struct cq_cancel *cancel, struct cq_result *r)
{
    cq_result_init(r);
    uint64_t started_us = cq_now_us();
    int t = tool_index(tool);
    if (t < 0) {
        cq_result_fail(r, CQ_RESULT_INVALID_ARGUMENT,
                       "unknown tool '%s'; the tools are executeCode, executeCommand, "
                       "readFiles, listFiles, removeFiles, writeFiles, startCommandExecution, "
                       "getTask, stopTask",
                       tool != NULL ? tool : "");
        cq_wmetrics_call(w, NULL, tool, a, r, started_us);
        return;
    }
    struct cq_session *s = cq_session_acquire(w, session_id);
    if (s == NULL) {
        cq_result_fail(r, CQ_RESULT_NOT_FOUND,
                       "session '%s' not found or no longer running (sessions end after their "
                       "timeout, or when stopped)",
                       session_id != NULL ? session_id : "");
        cq_wmetrics_call(w, NULL, tool, a, r, started_us);
        return;
    }
    uint64_t timeout_ms;
    /* The cgroup's CPU counter around the call: what it cost, for the audit log. */
    struct cq_sandbox_stats before, after;
    struct cq_error ignored;
    bool measured = cq_sandbox_stats(s->sandbox, &before, &ignored) == 0;
    /* And its egress filter's byte counters (sessions with network): what the call
     * sent and received, reported with its results. The sandbox's background tasks
     * count too while the call runs: the counters are the sandbox's, not a process's. */
    struct cq_sandbox_net_stats net_before, net_after;
    bool net_measured = s->network != CQ_NETWORK_NONE &&
                        cq_sandbox_net_stats(s->sandbox, &net_before, &ignored) == 0;
    if (net_measured)
        cq_wmetrics_network_begin(w, s, &net_before);
    switch ((enum tool)t) {
    case TOOL_EXECUTE_CODE:
        execute_code(w, s, a, on_output, ctx, cancel, r);
        break;
    case TOOL_EXECUTE_COMMAND:
        if (a->command == NULL || a->command[0] == '\0')
            cq_result_fail(r, CQ_RESULT_INVALID_ARGUMENT, "executeCommand: 'command' is required");
        else if (call_timeout(w, s, a, &timeout_ms, r) &&
                 !cancelled_before(cancel, "executeCommand", r)) {
            struct cq_command c = command_of(w, s, a, timeout_ms, on_output, ctx);
            c.cancel = cancel;
            r->run_start_unix_ns = unix_ns();
            cq_command_run(&c, r);
            r->run_end_unix_ns = unix_ns();
        }
        break;
    case TOOL_START_COMMAND:
        if (a->command == NULL || a->command[0] == '\0')
            cq_result_fail(r, CQ_RESULT_INVALID_ARGUMENT,
                           "startCommandExecution: 'command' is required");
        else
            start_task(w, s, a, r);
        break;
    case TOOL_GET_TASK:
        task_tool(s, a, false, r);
        break;
    case TOOL_STOP_TASK:
        task_tool(s, a, true, r);
        break;
    case TOOL_READ_FILES:
        cq_files_read(&s->files, a->paths, a->n_paths, r);
        break;
    case TOOL_WRITE_FILES:
        cq_files_write(&s->files, a->content, a->n_content, r);
        break;
    case TOOL_LIST_FILES:
        cq_files_list(&s->files, a->directory_path, r);
        break;
    case TOOL_REMOVE_FILES:
        cq_files_remove(&s->files, a->paths, a->n_paths, r);
        break;
    }
    if (measured && cq_sandbox_stats(s->sandbox, &after, &ignored) == 0) {
        if (r->cpu_ms == 0 && after.cpu_usage_us > before.cpu_usage_us)
            r->cpu_ms = (after.cpu_usage_us - before.cpu_usage_us) / 1000;
        if (after.memory_peak_bytes > r->peak_memory_bytes)
            r->peak_memory_bytes = after.memory_peak_bytes;
        cq_wmetrics_events(w, s, &after);
    }
    if (net_measured) {
        bool read = cq_sandbox_net_stats(s->sandbox, &net_after, &ignored) == 0;
        cq_wmetrics_network_end(w, s, read ? &net_after : NULL);
        if (read && r->has_structured) {
            r->has_network = true;
            r->network_bytes_sent = net_after.bytes_sent - net_before.bytes_sent;
            r->network_bytes_received = net_after.bytes_received - net_before.bytes_received;
        }
    }
    if (r->has_structured)
        r->limits_unenforced = cq_sandbox_unenforced();
    cq_wmetrics_call(w, s, tool, a, r, started_us);
    cq_session_release(w, s);
}
