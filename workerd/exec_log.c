/* workerd/exec_log.c - the "execution" log line: one per call the worker core ran, for
 * operators who read logs rather than metrics (what ran, for whom, how it ended, what
 * it cost). Ids are fields of their own; the message repeats only what a person
 * scanning the log wants at a glance. */
#define _GNU_SOURCE
#include "workerd/exec_log.h"
#include "workerd/daemon_internal.h"
#include "common/clock.h"
#include "fleet/log.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void cq_wd_log_request(enum cq_log_level level, const char *event, const Codeq__V1__Request *req,
                       const char *error, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    cq_log_eventv(level, event,
                  CQ_FIELDS(CQ_LS("request_id", req->request_id),
                            CQ_LS("session_id", req->session_id), CQ_LS("tenant", req->tenant),
                            CQ_LS("error", error)),
                  fmt, ap);
    va_end(ap);
}

/* Milliseconds rounded to the microsecond: 8000.742, not 8000.7420000000002. */
static double ms_to_us(double ms)
{
    return round(ms * 1000.0) / 1000.0;
}

/* The language label the metrics use (docs/operations.md): executeCode's language,
 * python when the call names none; "none" for the other tools. */
static const char *language_of(const Codeq__V1__Request *req, const Codeq__V1__Invoke *inv)
{
    if (strcmp(req->invoke->tool, "executeCode") != 0)
        return "none";
    if (inv->arguments == NULL || inv->arguments->language == NULL ||
        inv->arguments->language[0] == '\0')
        return "python";
    return inv->arguments->language;
}

void cq_wd_log_execution(struct cq_daemon *d, const char *session_id, const Codeq__V1__Request *req,
                         const Codeq__V1__Invoke *inv, const struct cq_result *r,
                         uint64_t started_us)
{
    if (strcmp(d->cfg.log_executions, "on") != 0 || !cq_log_enabled(CQ_LOG_INFO))
        return;
    double duration_ms = (double)(cq_now_us() - started_us) / 1000.0;
    /* The session's interpreter from the core, which holds it in memory; a session
     * that ended meanwhile (expired during the call) has none to report. */
    struct cq_session_info info;
    struct cq_error ignored;
    const char *interpreter = "none";
    if (cq_worker_get_session(d->core, session_id, &info, &ignored) == 0 &&
        info.interpreter[0] != '\0')
        interpreter = info.interpreter;
    const char *outcome = cq_result_outcome(r);
    const char *error_code = cq_result_error_name(r->error_code);
    cq_log_event(
        CQ_LOG_INFO, "execution",
        CQ_FIELDS(CQ_LS("session_id", session_id), CQ_LS("request_id", req->request_id),
                  CQ_LS("tenant", req->tenant), CQ_LS("worker_id", d->cfg.worker_id),
                  CQ_LS("tool", req->invoke->tool), CQ_LS("language", language_of(req, inv)),
                  CQ_LS("interpreter", interpreter), CQ_LS("outcome", outcome),
                  CQ_LS("error_code", error_code), CQ_LI("exit_code", r->exit_code),
                  CQ_LR("duration_ms", duration_ms),
                  CQ_LR("execution_time_ms", ms_to_us(r->execution_time_ms)),
                  CQ_LI("cpu_ms", r->cpu_ms), CQ_LI("peak_memory_bytes", r->peak_memory_bytes)),
        "%s: %s in %.3f ms", req->invoke->tool, outcome, duration_ms);
}
