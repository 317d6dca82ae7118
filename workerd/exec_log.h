/* workerd/exec_log.h - the worker's log lines about requests, and one line per
 * execution (docs/log-events.md). */
#ifndef CQ_WORKERD_EXEC_LOG_H
#define CQ_WORKERD_EXEC_LOG_H

#include <stdint.h>
#include "api/api.h"
#include "fleet/log.h"
#include "codeq.pb-c.h"

struct cq_daemon;

/* Logs the execution of req (an Invoke, with inv its arguments as they ran) in session
 * session_id, with result r, at info under "execution", unless log_executions is off.
 * started_us: cq_now_us() when the worker began on the request. */
void cq_wd_log_execution(struct cq_daemon *d, const char *session_id, const Codeq__V1__Request *req,
                         const Codeq__V1__Invoke *inv, const struct cq_result *r,
                         uint64_t started_us);

/* A line about request req: its request_id, session_id and tenant as fields, and error
 * (NULL: none) as the field "error". */
void cq_wd_log_request(enum cq_log_level level, const char *event, const Codeq__V1__Request *req,
                       const char *error, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

#endif
