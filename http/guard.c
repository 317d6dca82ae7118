/* http/guard.c - what keeps slow clients from holding the listener's connections.
 *
 * libmicrohttpd's connection timeout counts idleness only: a client that sends a byte
 * of its headers every second is never idle, so it holds a connection (a thread and a
 * slot of max_connections) for ever; a few hundred such clients hold every slot
 * (slowloris), and one is enough to hold cq_http_stop, which waits for the requests in
 * progress. So each connection that is reading a request has a deadline: its headers
 * are due within the timeout of the connection being ready for them (accepted, or its
 * previous answer sent), and its body must then come at least MIN_BODY_RATE bytes a
 * second on average after another timeout of grace. While the handler runs and the
 * answer is sent there is none: a cell may run for hours, and a client that stops
 * reading its answer is idle, which libmicrohttpd's own timeout ends.
 *
 * A thread wakes every second and shuts down the socket of each connection past its
 * deadline; the connection's own thread then reads end of file and closes it as if the
 * client had left. shutdown() runs under the lock that the close notification takes,
 * and libmicrohttpd closes a connection's descriptor only after that notification
 * returns, so the guard never touches a descriptor number that was reused.
 */
#define _GNU_SOURCE
#include "http/guard.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>

struct watched {
    int fd;
    int64_t deadline_ms; /* 0: none (the handler runs or the answer is being sent) */
    int64_t body_from_ms;
    uint64_t body_bytes;
    struct watched *prev, *next;
};

struct cq_http_guard {
    int64_t timeout_ms;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    bool stopping;
    pthread_t thread;
    struct watched *head;
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void *watch(void *arg)
{
    struct cq_http_guard *g = arg;
    pthread_mutex_lock(&g->lock);
    while (!g->stopping) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += 1;
        pthread_cond_timedwait(&g->wake, &g->lock, &until);
        int64_t now = now_ms();
        for (struct watched *w = g->head; w != NULL; w = w->next)
            if (w->deadline_ms != 0 && now >= w->deadline_ms) {
                shutdown(w->fd, SHUT_RDWR);
                w->deadline_ms = 0;
            }
    }
    pthread_mutex_unlock(&g->lock);
    return NULL;
}

int cq_http_guard_start(unsigned timeout_s, struct cq_http_guard **out, struct cq_error *err)
{
    struct cq_http_guard *g = calloc(1, sizeof(*g));
    if (g == NULL)
        return cq_error_sys(err, ENOMEM, "HTTP listener");
    g->timeout_ms = (int64_t)timeout_s * 1000;
    pthread_mutex_init(&g->lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&g->wake, &attr);
    pthread_condattr_destroy(&attr);
    int rc = pthread_create(&g->thread, NULL, watch, g);
    if (rc != 0) {
        pthread_cond_destroy(&g->wake);
        pthread_mutex_destroy(&g->lock);
        free(g);
        return cq_error_sys(err, rc, "HTTP listener: start its connection guard");
    }
    *out = g;
    return 0;
}

void cq_http_guard_stop(struct cq_http_guard *g)
{
    if (g == NULL)
        return;
    pthread_mutex_lock(&g->lock);
    g->stopping = true;
    pthread_cond_signal(&g->wake);
    pthread_mutex_unlock(&g->lock);
    pthread_join(g->thread, NULL);
    while (g->head != NULL) { /* none once the daemon stopped; never leak */
        struct watched *w = g->head;
        g->head = w->next;
        free(w);
    }
    pthread_cond_destroy(&g->wake);
    pthread_mutex_destroy(&g->lock);
    free(g);
}

void cq_http_guard_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    struct cq_http_guard *g = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *info =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        /* Out of memory: the connection goes unguarded rather than refused. */
        struct watched *w = info != NULL ? calloc(1, sizeof(*w)) : NULL;
        *socket_context = w;
        if (w == NULL)
            return;
        w->fd = info->connect_fd;
        pthread_mutex_lock(&g->lock);
        w->deadline_ms = now_ms() + g->timeout_ms;
        w->next = g->head;
        if (g->head != NULL)
            g->head->prev = w;
        g->head = w;
        pthread_mutex_unlock(&g->lock);
        return;
    }
    struct watched *w = *socket_context;
    if (w == NULL)
        return;
    pthread_mutex_lock(&g->lock);
    if (w->prev != NULL)
        w->prev->next = w->next;
    else
        g->head = w->next;
    if (w->next != NULL)
        w->next->prev = w->prev;
    pthread_mutex_unlock(&g->lock);
    free(w);
    *socket_context = NULL;
}

static struct watched *watched_of(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return info != NULL ? info->socket_context : NULL;
}

void cq_http_guard_headers_done(struct cq_http_guard *g, struct MHD_Connection *conn)
{
    struct watched *w = watched_of(conn);
    if (w == NULL)
        return;
    pthread_mutex_lock(&g->lock);
    w->body_from_ms = now_ms();
    w->body_bytes = 0;
    w->deadline_ms = w->body_from_ms + g->timeout_ms;
    pthread_mutex_unlock(&g->lock);
}

void cq_http_guard_body(struct cq_http_guard *g, struct MHD_Connection *conn, size_t n)
{
    struct watched *w = watched_of(conn);
    if (w == NULL)
        return;
    pthread_mutex_lock(&g->lock);
    w->body_bytes += n;
    w->deadline_ms = w->body_from_ms + g->timeout_ms +
                     (int64_t)(w->body_bytes * 1000 / CQ_HTTP_GUARD_MIN_BODY_RATE);
    pthread_mutex_unlock(&g->lock);
}

void cq_http_guard_busy(struct cq_http_guard *g, struct MHD_Connection *conn)
{
    struct watched *w = watched_of(conn);
    if (w == NULL)
        return;
    pthread_mutex_lock(&g->lock);
    w->deadline_ms = 0;
    pthread_mutex_unlock(&g->lock);
}

void cq_http_guard_idle(struct cq_http_guard *g, struct MHD_Connection *conn)
{
    struct watched *w = watched_of(conn);
    if (w == NULL)
        return;
    pthread_mutex_lock(&g->lock);
    w->deadline_ms = now_ms() + g->timeout_ms;
    pthread_mutex_unlock(&g->lock);
}

/* Each connection holds a descriptor, and at EMFILE libmicrohttpd's listening thread
 * spins: in thread-per-connection mode it polls the listening socket whatever its
 * at-limit flag says (0.9.75, and still so upstream), so the connection it cannot
 * accept wakes it again at once, a core's worth of CPU until a descriptor frees. Many
 * systems start services with a soft limit of 1024 and a far higher hard one, which a
 * process may take for itself: up to NOFILE_WANTED, as the hard one can be a million or
 * unlimited and what the process starts outside sandboxes (which set their own) inherits
 * it. A hard limit too low for the connections (and NOFILE_SPARE more, for what the
 * handlers open) is refused at start rather than found spinning under load. */
#define NOFILE_WANTED 65536
#define NOFILE_SPARE  64

int cq_http_guard_nofile(unsigned max_connections, struct cq_error *err)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return cq_error_sys(err, errno, "getrlimit(RLIMIT_NOFILE)");
    if (rl.rlim_cur < NOFILE_WANTED && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max < NOFILE_WANTED ? rl.rlim_max : NOFILE_WANTED;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur < (rlim_t)max_connections + NOFILE_SPARE)
        return cq_error_set(err, CQ_EINVALID,
                            "%u connections need %u open files, more than the limit of %llu "
                            "(ulimit -n): allow more or take fewer connections",
                            max_connections, max_connections + NOFILE_SPARE,
                            (unsigned long long)rl.rlim_cur);
    return 0;
}
