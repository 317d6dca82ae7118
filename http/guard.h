/* http/guard.h - deadlines for connections that are reading a request (private to http/;
 * http/guard.c says why). */
#ifndef CQ_HTTP_GUARD_H
#define CQ_HTTP_GUARD_H

#include <microhttpd.h>
#include <stddef.h>
#include "common/error.h"

/* A body must come at least this fast on average, after timeout_s of grace. */
#define CQ_HTTP_GUARD_MIN_BODY_RATE 4096

struct cq_http_guard;

/* Starts the thread that cuts connections past their deadline: a request's headers are
 * due within timeout_s of its connection being ready for them. */
int cq_http_guard_start(unsigned timeout_s, struct cq_http_guard **out, struct cq_error *err);
/* After MHD_stop_daemon (every connection closed). NULL is allowed. */
void cq_http_guard_stop(struct cq_http_guard *g);

/* libmicrohttpd's MHD_OPTION_NOTIFY_CONNECTION callback; cls is the guard. */
void cq_http_guard_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code);

/* The request's headers are in: its body, if any, is due from now. */
void cq_http_guard_headers_done(struct cq_http_guard *g, struct MHD_Connection *conn);
/* n more bytes of the body came. */
void cq_http_guard_body(struct cq_http_guard *g, struct MHD_Connection *conn, size_t n);
/* The handler runs and the answer is sent: no deadline (the idle timeout covers a client
 * that stops reading). */
void cq_http_guard_busy(struct cq_http_guard *g, struct MHD_Connection *conn);
/* The answer was sent: the next request's headers are due within the timeout. */
void cq_http_guard_idle(struct cq_http_guard *g, struct MHD_Connection *conn);

/* Raises the soft limit on open descriptors towards the hard one; -1 when even that
 * leaves too few for max_connections (see http/guard.c). */
int cq_http_guard_nofile(unsigned max_connections, struct cq_error *err);

#endif
