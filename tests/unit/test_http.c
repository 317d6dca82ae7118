/* tests/unit/test_http.c - the HTTP listener and the operations endpoints, over real
 * loopback sockets. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "http/http.h"

/* Sends raw bytes to 127.0.0.1:port (or ::1), reads the whole answer (the request
 * asks the server to close). Returns the malloc'd answer. */
static char *exchange(int family, uint16_t port, const char *request, size_t len)
{
    int fd = socket(family, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_storage ss = {0};
    socklen_t sl;
    if (family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_port = htons(port);
        a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        sl = sizeof(*a);
    } else {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(port);
        a->sin6_addr = in6addr_loopback;
        sl = sizeof(*a);
    }
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&ss, sl), 0);
    for (size_t off = 0; off < len;) {
        ssize_t n = send(fd, request + off, len - off, MSG_NOSIGNAL);
        if (n <= 0)
            break; /* the server may answer (413) and close before reading it all */
        off += (size_t)n;
    }
    size_t cap = 65536, got = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (got + 1 >= cap)
            buf = realloc(buf, cap *= 2);
        ssize_t n = read(fd, buf + got, cap - got - 1);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    buf[got] = '\0';
    close(fd);
    return buf;
}

static char *get(uint16_t port, const char *method, const char *path)
{
    char req[512];
    int n = snprintf(req, sizeof(req), "%s %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                     method, path);
    return exchange(AF_INET, port, req, (size_t)n);
}

static int ready_now;

static int ready(void *ctx, char *why, size_t n)
{
    (void)ctx;
    if (!ready_now)
        snprintf(why, n, "Redis unreachable");
    return ready_now;
}

START_TEST(test_ops_endpoints)
{
    struct cq_error err;
    struct cq_metrics *m;
    ck_assert_int_eq(cq_metrics_create(&m, &err), 0);
    struct cq_metric *c = cq_metrics_counter(m, "codeq_t_total", "T.", NULL, &err);
    cq_metric_add(c, NULL, 7);
    struct cq_ops_config cfg = {
        .listen = "127.0.0.1:0", .metrics = m, .ready = ready, .ready_ctx = NULL};
    struct cq_http_server *s;
    ck_assert_msg(cq_ops_start(&cfg, &s, &err) == 0, "%s", err.msg);
    uint16_t port = cq_http_port(s);
    ck_assert_uint_gt(port, 0);

    char *a = get(port, "GET", "/metrics");
    ck_assert_msg(strncmp(a, "HTTP/1.1 200", 12) == 0, "%s", a);
    ck_assert_ptr_nonnull(strcasestr(a, "Content-Type: text/plain; version=0.0.4; charset=utf-8"));
    ck_assert_ptr_nonnull(strstr(a, "\r\n\r\n# HELP codeq_t_total T.\n"));
    ck_assert_ptr_nonnull(strstr(a, "\ncodeq_t_total 7\n"));
    free(a);

    a = get(port, "GET", "/healthz");
    ck_assert_msg(strncmp(a, "HTTP/1.1 200", 12) == 0, "%s", a);
    free(a);

    ready_now = 0;
    a = get(port, "GET", "/readyz");
    ck_assert_msg(strncmp(a, "HTTP/1.1 503", 12) == 0, "%s", a);
    ck_assert_ptr_nonnull(strstr(a, "not ready: Redis unreachable\n"));
    free(a);
    ready_now = 1;
    a = get(port, "GET", "/readyz");
    ck_assert_msg(strncmp(a, "HTTP/1.1 200", 12) == 0, "%s", a);
    free(a);

    a = get(port, "HEAD", "/metrics");
    ck_assert_msg(strncmp(a, "HTTP/1.1 200", 12) == 0, "%s", a);
    ck_assert_ptr_null(strstr(a, "# HELP")); /* HEAD: headers only */
    free(a);

    a = get(port, "POST", "/metrics");
    ck_assert_msg(strncmp(a, "HTTP/1.1 405", 12) == 0, "%s", a);
    ck_assert_ptr_nonnull(strcasestr(a, "Allow: GET, HEAD"));
    free(a);

    a = get(port, "GET", "/nothing");
    ck_assert_msg(strncmp(a, "HTTP/1.1 404", 12) == 0, "%s", a);
    free(a);

    /* Not HTTP at all: an error status, and the listener goes on serving. */
    static const char junk[] = "\x16\x03\x01 hello\r\n\r\n";
    a = exchange(AF_INET, port, junk, sizeof(junk) - 1);
    ck_assert_msg(strncmp(a, "HTTP/1.1 4", 10) == 0 || a[0] == '\0', "%s", a);
    free(a);
    a = get(port, "GET", "/healthz");
    ck_assert_msg(strncmp(a, "HTTP/1.1 200", 12) == 0, "%s", a);
    free(a);

    cq_http_stop(s);
    cq_metrics_destroy(m);
}
END_TEST

static void echo(void *ctx, const struct cq_http_request *req, struct cq_http_response *resp)
{
    (void)ctx;
    const char *h = cq_http_header(req, "x-test");
    const char *q = cq_http_query(req, "q");
    cq_http_respond(resp, 201, "%s %s h=%s q=%s len=%zu body=%.*s", req->method, req->path,
                    h != NULL ? h : "-", q != NULL ? q : "-", req->body_len,
                    (int)(req->body_len < 32 ? req->body_len : 32), (const char *)req->body);
}

START_TEST(test_bodies_and_limits)
{
    struct cq_error err;
    struct cq_http_config cfg = {.listen = "127.0.0.1:0", .handler = echo, .max_body = 1000};
    struct cq_http_server *s;
    ck_assert_msg(cq_http_start(&cfg, &s, &err) == 0, "%s", err.msg);
    uint16_t port = cq_http_port(s);

    static const char small[] = "POST /p?q=1 HTTP/1.1\r\nHost: t\r\nX-Test: yes\r\n"
                                "Content-Length: 5\r\nConnection: close\r\n\r\nhello";
    char *a = exchange(AF_INET, port, small, sizeof(small) - 1);
    ck_assert_msg(strncmp(a, "HTTP/1.1 201", 12) == 0, "%s", a);
    ck_assert_msg(strstr(a, "POST /p h=yes q=1 len=5 body=hello") != NULL, "%s", a);
    free(a);

    /* Past max_body: 413, and the handler never sees it. */
    size_t big = 5000;
    char *req = malloc(big + 200);
    int head = snprintf(req, 200,
                        "POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: %zu\r\n"
                        "Connection: close\r\n\r\n",
                        big);
    memset(req + head, 'x', big);
    a = exchange(AF_INET, port, req, (size_t)head + big);
    ck_assert_msg(strncmp(a, "HTTP/1.1 413", 12) == 0, "%s", a);
    ck_assert_ptr_null(strstr(a, "len="));
    free(a);
    free(req);
    cq_http_stop(s);
}
END_TEST

static void slow(void *ctx, const struct cq_http_request *req, struct cq_http_response *resp)
{
    (void)ctx, (void)req;
    usleep(2500 * 1000);
    cq_http_respond(resp, 200, "slow answer");
}

START_TEST(test_slow_handler)
{
    /* A handler that runs longer than the idle timeout (a long cell) is answered. */
    struct cq_error err;
    struct cq_http_config cfg = {.listen = "127.0.0.1:0", .handler = slow, .idle_timeout_s = 1};
    struct cq_http_server *s;
    ck_assert_msg(cq_http_start(&cfg, &s, &err) == 0, "%s", err.msg);
    char *a = get(cq_http_port(s), "GET", "/slow");
    ck_assert_msg(strstr(a, "slow answer") != NULL, "%s", a);
    free(a);
    cq_http_stop(s);
}
END_TEST

START_TEST(test_listen_addresses)
{
    struct cq_error err;
    struct cq_http_config cfg = {.handler = echo};
    struct cq_http_server *s = NULL;
    static const char *const bad[] = {"",
                                      "127.0.0.1",
                                      "127.0.0.1:",
                                      "127.0.0.1:99999",
                                      "127.0.0.1:8x",
                                      "no-such-host.invalid:80"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cfg.listen = bad[i];
        ck_assert_msg(cq_http_start(&cfg, &s, &err) == -1, "'%s' accepted", bad[i]);
        ck_assert_int_eq(err.code, CQ_EINVALID);
    }

    /* A port in use: a clear error, not a listener on another port. */
    cfg.listen = "127.0.0.1:0";
    ck_assert_int_eq(cq_http_start(&cfg, &s, &err), 0);
    char taken[64];
    snprintf(taken, sizeof(taken), "127.0.0.1:%u", cq_http_port(s));
    struct cq_http_server *second = NULL;
    cfg.listen = taken;
    ck_assert_int_eq(cq_http_start(&cfg, &second, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, taken));
    cq_http_stop(s);

    /* IPv6 loopback, where the host has it. */
    int probe = socket(AF_INET6, SOCK_STREAM, 0);
    struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    bool have6 = probe >= 0 && bind(probe, (struct sockaddr *)&a6, sizeof(a6)) == 0;
    if (probe >= 0)
        close(probe);
    if (have6) {
        cfg.listen = "[::1]:0";
        ck_assert_msg(cq_http_start(&cfg, &s, &err) == 0, "%s", err.msg);
        static const char r[] = "GET /six HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
        char *ans = exchange(AF_INET6, cq_http_port(s), r, sizeof(r) - 1);
        ck_assert_msg(strstr(ans, "GET /six") != NULL, "%s", ans);
        free(ans);
        cq_http_stop(s);
    }
}
END_TEST

/* ---- streamed responses ------------------------------------------------------------ */

/* What the stream handler hands the test, which then plays the writer. */
static struct {
    pthread_mutex_t lock;
    pthread_cond_t changed;
    struct cq_http_stream *stream;
    struct cq_http_stream_options opt;
    int closed; /* on_close calls */
} sh = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, {0}, 0};

static void on_stream_close(void *ctx)
{
    (void)ctx;
    pthread_mutex_lock(&sh.lock);
    sh.closed++;
    pthread_cond_broadcast(&sh.changed);
    pthread_mutex_unlock(&sh.lock);
}

static void streamer(void *ctx, const struct cq_http_request *req, struct cq_http_response *resp)
{
    (void)ctx, (void)req;
    resp->content_type = "text/event-stream";
    struct cq_http_stream *st = cq_http_respond_stream(resp, &sh.opt);
    ck_assert_ptr_nonnull(st);
    pthread_mutex_lock(&sh.lock);
    sh.stream = st;
    pthread_cond_broadcast(&sh.changed);
    pthread_mutex_unlock(&sh.lock);
}

static struct cq_http_stream *take_stream(void)
{
    pthread_mutex_lock(&sh.lock);
    while (sh.stream == NULL)
        pthread_cond_wait(&sh.changed, &sh.lock);
    struct cq_http_stream *st = sh.stream;
    sh.stream = NULL;
    pthread_mutex_unlock(&sh.lock);
    return st;
}

static struct cq_http_server *stream_server(const struct cq_http_stream_options *opt,
                                            unsigned idle_timeout_s)
{
    struct cq_error err;
    sh.opt = *opt;
    sh.closed = 0;
    struct cq_http_config cfg = {
        .listen = "127.0.0.1:0", .handler = streamer, .idle_timeout_s = idle_timeout_s};
    struct cq_http_server *s;
    ck_assert_msg(cq_http_start(&cfg, &s, &err) == 0, "%s", err.msg);
    return s;
}

/* A connection with the request sent. */
static int open_stream(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    static const char req[] = "GET /s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    ck_assert_int_eq(send(fd, req, sizeof(req) - 1, MSG_NOSIGNAL), (ssize_t)sizeof(req) - 1);
    return fd;
}

/* Reads into buf (NUL-terminated, at most 64 KiB) until want is in it, the connection
 * closes, or 10 s pass; whether want came. */
static bool read_until(int fd, char *buf, size_t *got, const char *want)
{
    for (int waited = 0; strstr(buf, want) == NULL && waited < 10000; waited += 50) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 50) <= 0)
            continue;
        ssize_t n = read(fd, buf + *got, 65535 - *got);
        if (n <= 0)
            break;
        *got += (size_t)n;
        buf[*got] = '\0';
    }
    return strstr(buf, want) != NULL;
}

START_TEST(test_stream_sends_as_written)
{
    struct cq_http_stream_options opt = {0};
    struct cq_http_server *s = stream_server(&opt, 0);
    int fd = open_stream(cq_http_port(s));
    struct cq_http_stream *st = take_stream();
    struct cq_error err;
    static char buf[65536];
    size_t got = 0;
    buf[0] = '\0';
    ck_assert_int_eq(cq_http_stream_write(st, "data: one\n\n", 11, &err), 0);
    /* The first event arrives while the stream is still open. */
    ck_assert_msg(read_until(fd, buf, &got, "data: one\n\n"), "%s", buf);
    ck_assert_msg(strncmp(buf, "HTTP/1.1 200", 12) == 0, "%s", buf);
    ck_assert_ptr_nonnull(strcasestr(buf, "Content-Type: text/event-stream"));
    ck_assert_ptr_nonnull(strcasestr(buf, "Transfer-Encoding: chunked"));
    ck_assert_ptr_null(strstr(buf, "data: two"));
    ck_assert_int_eq(cq_http_stream_write(st, "data: two\n\n", 11, &err), 0);
    cq_http_stream_end(st);
    ck_assert_msg(read_until(fd, buf, &got, "\r\n0\r\n\r\n"), "%s", buf);
    ck_assert_ptr_nonnull(strstr(buf, "data: two\n\n"));
    close(fd);
    cq_http_stop(s);
    ck_assert_int_eq(sh.closed, 0); /* ended by its writer: no on_close */
}
END_TEST

START_TEST(test_stream_client_gone)
{
    struct cq_http_stream_options opt = {.on_close = on_stream_close};
    struct cq_http_server *s = stream_server(&opt, 0);
    int fd = open_stream(cq_http_port(s));
    struct cq_http_stream *st = take_stream();
    static char buf[65536];
    size_t got = 0;
    buf[0] = '\0';
    ck_assert(read_until(fd, buf, &got, "\r\n\r\n"));
    close(fd);
    /* Noticed although nothing is written. */
    pthread_mutex_lock(&sh.lock);
    for (int i = 0; i < 100 && sh.closed == 0; i++) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += 100000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&sh.changed, &sh.lock, &until);
    }
    int closed = sh.closed;
    pthread_mutex_unlock(&sh.lock);
    ck_assert_int_eq(closed, 1);
    struct cq_error err;
    ck_assert_int_eq(cq_http_stream_write(st, "late", 4, &err), -1);
    ck_assert_int_eq(err.code, EPIPE);
    cq_http_stream_end(st);
    cq_http_stop(s);
    ck_assert_int_eq(sh.closed, 1);
}
END_TEST

START_TEST(test_stream_bounded)
{
    /* A client that never reads: writes wait for room, then fail, instead of piling
     * up in memory. */
    struct cq_http_stream_options opt = {.max_buffered = 4096, .write_timeout_ms = 300};
    struct cq_http_server *s = stream_server(&opt, 0);
    int fd = open_stream(cq_http_port(s));
    struct cq_http_stream *st = take_stream();
    static char chunk[65536];
    memset(chunk, 'x', sizeof(chunk));
    struct cq_error err;
    int writes = 0;
    while (writes < 2000 && cq_http_stream_write(st, chunk, sizeof(chunk), &err) == 0)
        writes++;
    ck_assert_int_lt(writes, 2000); /* socket buffers hold a few MiB, not 128 */
    ck_assert_int_eq(err.code, EPIPE);
    cq_http_stream_end(st);
    close(fd);
    cq_http_stop(s);
}
END_TEST

START_TEST(test_stream_outlives_idle_timeout)
{
    /* A stream silent for longer than the idle timeout (a cell that prints nothing)
     * still delivers what comes then. */
    struct cq_http_stream_options opt = {0};
    struct cq_http_server *s = stream_server(&opt, 1);
    int fd = open_stream(cq_http_port(s));
    struct cq_http_stream *st = take_stream();
    static char buf[65536];
    size_t got = 0;
    buf[0] = '\0';
    struct cq_error err;
    ck_assert_int_eq(cq_http_stream_write(st, "early;", 6, &err), 0);
    ck_assert(read_until(fd, buf, &got, "early;"));
    usleep(2500 * 1000);
    ck_assert_int_eq(cq_http_stream_write(st, "late;", 5, &err), 0);
    cq_http_stream_end(st);
    ck_assert_msg(read_until(fd, buf, &got, "\r\n0\r\n\r\n"), "%s", buf);
    ck_assert_ptr_nonnull(strstr(buf, "late;"));
    close(fd);
    cq_http_stop(s);
}
END_TEST

static void quick_streamer(void *ctx, const struct cq_http_request *req,
                           struct cq_http_response *resp)
{
    (void)ctx, (void)req;
    struct cq_http_stream *st = cq_http_respond_stream(resp, NULL);
    struct cq_error err;
    ck_assert_int_eq(cq_http_stream_write(st, "all at once;", 12, &err), 0);
    cq_http_stream_end(st); /* before the listener has seen the stream */
}

START_TEST(test_stream_ended_in_handler)
{
    struct cq_error err;
    struct cq_http_config cfg = {.listen = "127.0.0.1:0", .handler = quick_streamer};
    struct cq_http_server *s;
    ck_assert_msg(cq_http_start(&cfg, &s, &err) == 0, "%s", err.msg);
    for (int i = 0; i < 20; i++) {
        char *a = get(cq_http_port(s), "GET", "/q");
        ck_assert_msg(strstr(a, "all at once;") != NULL && strstr(a, "\r\n0\r\n\r\n") != NULL, "%s",
                      a);
        free(a);
    }
    cq_http_stop(s);
}
END_TEST

START_TEST(test_stream_heartbeat)
{
    struct cq_http_stream_options opt = {.heartbeat = ": hb\n\n", .heartbeat_ms = 100};
    struct cq_http_server *s = stream_server(&opt, 0);
    int fd = open_stream(cq_http_port(s));
    struct cq_http_stream *st = take_stream();
    static char buf[65536];
    size_t got = 0;
    buf[0] = '\0';
    ck_assert_msg(read_until(fd, buf, &got, ": hb\n\n"), "%s", buf);
    cq_http_stream_end(st);
    ck_assert_msg(read_until(fd, buf, &got, "\r\n0\r\n\r\n"), "%s", buf);
    close(fd);
    cq_http_stop(s);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("http");
    TCase *tc = tcase_create("listener");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_ops_endpoints);
    tcase_add_test(tc, test_bodies_and_limits);
    tcase_add_test(tc, test_listen_addresses);
    tcase_add_test(tc, test_slow_handler);
    tcase_add_test(tc, test_stream_sends_as_written);
    tcase_add_test(tc, test_stream_client_gone);
    tcase_add_test(tc, test_stream_bounded);
    tcase_add_test(tc, test_stream_outlives_idle_timeout);
    tcase_add_test(tc, test_stream_heartbeat);
    tcase_add_test(tc, test_stream_ended_in_handler);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
