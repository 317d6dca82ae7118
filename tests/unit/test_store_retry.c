/* tests/unit/test_store_retry.c - the store when things do not go as planned.
 *
 * A reply lost: the store sends a command again when Redis' reply did not come (a
 * timeout, a dropped connection: fleet/store.c's cq_st_command()), so a script may run
 * twice, and its second run must say what its first did. A start that made no session
 * (cq_store_end_start()): its client token must be free again for the client's retry.
 * A reply that may not have gone out: its request must still be there for recovery.
 *
 * Against a real redis-server of this test (started by main(), on a free port), with
 * the fault made by Redis itself: DEBUG SLEEP holds the server past the store's command
 * timeout, and the command the store sent meanwhile runs when the server wakes, after
 * its client gave up on it. */
#define _GNU_SOURCE
#include "fleet/config.h"
#include "fleet/keys.h"
#include "fleet/store.h"
#include "unit.h"

#include <arpa/inet.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int redis_port;
static pid_t redis_pid;
static char prefix[64];

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0) {
        perror("free port");
        exit(2);
    }
    close(fd);
    return ntohs(a.sin_port);
}

static redisContext *raw(int timeout_ms)
{
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", redis_port, tv);
    if (c != NULL && c->err == 0)
        redisSetTimeout(c, tv);
    return c;
}

/* redis-server of this test: no persistence, DEBUG allowed (the fault). */
static void redis_up(void)
{
    redis_port = free_port();
    char port[16];
    snprintf(port, sizeof(port), "%d", redis_port);
    redis_pid = fork();
    if (redis_pid == 0) {
        execlp("redis-server", "redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--enable-debug-command", "yes", "--dir", "/tmp", "--loglevel",
               "warning", (char *)NULL);
        perror("redis-server");
        _exit(127);
    }
    for (int i = 0; i < 300; i++) {
        redisContext *c = raw(200);
        redisReply *r = c != NULL && c->err == 0 ? redisCommand(c, "PING") : NULL;
        bool up = r != NULL && r->type == REDIS_REPLY_STATUS;
        if (r != NULL)
            freeReplyObject(r);
        if (c != NULL)
            redisFree(c);
        if (up)
            return;
        usleep(20000);
    }
    fprintf(stderr, "redis-server did not start on port %d\n", redis_port);
    exit(2);
}

static void redis_down(void)
{
    kill(redis_pid, SIGKILL);
    waitpid(redis_pid, NULL, 0);
}

static long long integer(const char *fmt, const char *arg)
{
    redisContext *c = raw(2000);
    ck_assert(c != NULL && c->err == 0);
    redisReply *r = redisCommand(c, fmt, prefix, arg);
    ck_assert_ptr_nonnull(r);
    long long v = r->type == REDIS_REPLY_INTEGER  ? r->integer
                  : r->type == REDIS_REPLY_STRING ? atoll(r->str)
                                                  : -1;
    freeReplyObject(r);
    redisFree(c);
    return v;
}

/* EVALs Redis ran since the last CONFIG RESETSTAT. */
static long long evals(void)
{
    redisContext *c = raw(2000);
    ck_assert(c != NULL && c->err == 0);
    redisReply *r = redisCommand(c, "INFO commandstats");
    ck_assert(r != NULL && r->type == REDIS_REPLY_STRING);
    const char *at = strstr(r->str, "cmdstat_eval:calls=");
    long long n = at != NULL ? atoll(at + strlen("cmdstat_eval:calls=")) : 0;
    freeReplyObject(r);
    redisFree(c);
    return n;
}

static struct cq_store *open_store(void)
{
    struct cq_fleet_config cfg;
    cq_fleet_config_init(&cfg);
    snprintf(cfg.redis, sizeof(cfg.redis), "127.0.0.1:%d", redis_port);
    snprintf(prefix, sizeof(prefix), "codeq:t%d:", (int)getpid());
    snprintf(cfg.prefix, sizeof(cfg.prefix), "%s", prefix);
    struct cq_store *st;
    struct cq_error err;
    ck_assert_msg(cq_store_open(&cfg, &st, &err) == 0, "%s", err.msg);
    /* A live worker with slots: each new session takes one. */
    redisContext *c = raw(2000);
    redisReply *r = redisCommand(c, "HSET %sworker:w1 capacity 5", prefix);
    freeReplyObject(r);
    freeReplyObject(redisCommand(c, "CONFIG RESETSTAT"));
    redisFree(c);
    return st;
}

static const struct cq_quota no_quota = {0};

static void create(struct cq_store *st, const char *id, const char *token, char *existing)
{
    struct cq_error err;
    ck_assert_msg(cq_store_create_session(st, id, "acme", &no_quota, "w1", token, existing,
                                          CQ_SESSION_ID_MAX + 1, &err) == 0,
                  "%s", err.msg);
}

/* The retry's second run, made directly: the same id and token again. */
START_TEST(test_create_session_run_twice_is_one_new_session)
{
    struct cq_store *st = open_store();
    char existing[CQ_SESSION_ID_MAX + 1];
    create(st, "s0000000000000000000000000000001", "tok", existing);
    ck_assert_str_eq(existing, "");
    create(st, "s0000000000000000000000000000001", "tok", existing);
    ck_assert_str_eq(existing, ""); /* its own session: still new, to be started */
    ck_assert_int_eq(integer("HGET %sworker:%s capacity", "w1"), 4);
    ck_assert_int_eq(integer("ZCARD %ssessions:%s", "acme"), 1);
    /* Another start with the token gets the session, as before. */
    create(st, "s0000000000000000000000000000002", "tok", existing);
    ck_assert_str_eq(existing, "s0000000000000000000000000000001");
    ck_assert_int_eq(integer("EXISTS %ssession:%s", "s0000000000000000000000000000002"), 0);
    /* Without a token too: one slot, one index entry. */
    create(st, "s0000000000000000000000000000003", NULL, existing);
    create(st, "s0000000000000000000000000000003", NULL, existing);
    ck_assert_str_eq(existing, "");
    ck_assert_int_eq(integer("HGET %sworker:%s capacity", "w1"), 3);
    ck_assert_int_eq(integer("ZCARD %ssessions:%s", "acme"), 2);
    cq_store_close(st);
}
END_TEST

static void *debug_sleep(void *arg)
{
    (void)arg;
    redisContext *c = raw(10000);
    redisReply *r = c != NULL && c->err == 0 ? redisCommand(c, "DEBUG SLEEP 3") : NULL;
    if (r != NULL)
        freeReplyObject(r);
    if (c != NULL)
        redisFree(c);
    return NULL;
}

/* Holds Redis asleep (3 s) from another connection; returns once it sleeps: a PING
 * no longer gets its answer. */
static pthread_t redis_asleep(void)
{
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, debug_sleep, NULL), 0);
    for (;;) {
        redisContext *c = raw(100);
        ck_assert(c != NULL && c->err == 0);
        redisReply *r = redisCommand(c, "PING");
        redisFree(c);
        if (r == NULL)
            return t;
        freeReplyObject(r);
        usleep(10000);
    }
}

/* The fault itself: the first run's reply never reaches the store (its command timeout,
 * 1 s, passes while Redis sleeps); the script runs when Redis wakes, and the store's
 * retry runs it again. The dispatcher answered such a start with a session that never
 * went to a worker. */
START_TEST(test_create_session_reply_lost)
{
    struct cq_store *st = open_store();
    cq_store_set_command_timeout(st, 1);
    char existing[CQ_SESSION_ID_MAX + 1];
    pthread_t sleeper = redis_asleep();
    create(st, "s0000000000000000000000000000004", "tok", existing);
    pthread_join(sleeper, NULL);
    ck_assert_str_eq(existing, "");
    /* It did run twice; the token names the session, and one slot was taken. */
    ck_assert_int_eq(evals(), 2);
    ck_assert_int_eq(integer("EXISTS %sstart:acme:%s", "tok"), 1);
    ck_assert_int_eq(integer("HGET %sworker:%s capacity", "w1"), 4);
    ck_assert_int_eq(integer("ZCARD %ssessions:%s", "acme"), 1);
    cq_store_close(st);
}
END_TEST

/* A start that made no session frees its client token, only while the token names it. */
START_TEST(test_failed_start_frees_its_token)
{
    struct cq_store *st = open_store();
    char existing[CQ_SESSION_ID_MAX + 1];
    struct cq_error err;
    create(st, "s0000000000000000000000000000005", "tok", existing);
    ck_assert_msg(cq_store_end_start(st, "s0000000000000000000000000000005", "w1", 1, "acme", "tok",
                                     &err) == 0,
                  "%s", err.msg);
    ck_assert_int_eq(integer("EXISTS %sstart:acme:%s", "tok"), 0);
    ck_assert_int_eq(integer("ZCARD %ssessions:%s", "acme"), 0);
    /* The token makes a new session now; the old one's end leaves it alone. */
    create(st, "s0000000000000000000000000000006", "tok", existing);
    ck_assert_str_eq(existing, "");
    ck_assert_int_eq(
        cq_store_end_start(st, "s0000000000000000000000000000005", NULL, 0, "acme", "tok", &err),
        0);
    ck_assert_int_eq(integer("EXISTS %sstart:acme:%s", "tok"), 1);
    cq_store_close(st);
}
END_TEST

/* Recovery of a dead worker's running start: a session still STARTING ends and frees
 * its token; one that became READY is left for adoption, its token kept. */
START_TEST(test_lost_start_ends_only_a_starting_session)
{
    struct cq_store *st = open_store();
    char existing[CQ_SESSION_ID_MAX + 1];
    struct cq_error err;
    bool ended = false;
    create(st, "s0000000000000000000000000000007", "lost", existing);
    ck_assert_msg(cq_store_end_lost_start(st, "s0000000000000000000000000000007", "w1", "acme",
                                          "lost", &ended, &err) == 0,
                  "%s", err.msg);
    ck_assert(ended);
    ck_assert_int_eq(integer("EXISTS %sstart:acme:%s", "lost"), 0);
    ck_assert_int_eq(integer("ZCARD %ssessions:%s", "acme"), 0);

    create(st, "s0000000000000000000000000000008", "made", existing);
    redisContext *c = raw(2000);
    freeReplyObject(redisCommand(c, "HSET %ssession:%s status READY", prefix,
                                 "s0000000000000000000000000000008"));
    redisFree(c);
    ck_assert_msg(cq_store_end_lost_start(st, "s0000000000000000000000000000008", "w1", "acme",
                                          "made", &ended, &err) == 0,
                  "%s", err.msg);
    ck_assert(!ended);
    ck_assert_int_eq(integer("EXISTS %sstart:acme:%s", "made"), 1);
    ck_assert_int_eq(integer("ZCARD %ssessions:%s", "acme"), 1);
    cq_store_close(st);
}
END_TEST

/* The request's state and whether its forwarded body is still stored. */
static bool has_body(struct cq_store *st, const char *rid, enum cq_request_state *state)
{
    uint8_t *body = NULL;
    size_t len = 0;
    struct cq_error err;
    ck_assert_msg(cq_store_request(st, rid, &body, &len, state, &err) == 0, "%s", err.msg);
    bool kept = body != NULL;
    free(body);
    return kept;
}

/* A finished request whose reply may not have gone out (still in its worker's in-flight
 * set) keeps its body: recovery needs it to publish the stored reply again once the
 * worker is gone. It goes when the reply is acknowledged (the set is left). */
START_TEST(test_finished_request_keeps_its_body_while_in_flight)
{
    struct cq_store *st = open_store();
    struct cq_error err;
    enum cq_request_state state;
    uint64_t fence;
    bool claimed, stored;
    ck_assert_msg(
        cq_store_forward(st, "r1", "w1", "s1", "request", 7, "", "acme", 0, &state, &err) == 0,
        "%s", err.msg);
    ck_assert_msg(cq_store_claim(st, "r1", "w1", "", "", &state, &fence, &claimed, &err) == 0, "%s",
                  err.msg);
    ck_assert(claimed);
    ck_assert_msg(cq_store_finish(st, "r1", "w1", "reply", 5, &stored, &err) == 0, "%s", err.msg);
    ck_assert(stored);
    ck_assert(has_body(st, "r1", &state));
    ck_assert_int_eq(state, CQ_REQ_DONE);
    ck_assert_int_eq(cq_store_inflight_done(st, "w1", "r1", &err), 0);
    ck_assert(!has_body(st, "r1", &state));
    ck_assert_int_eq(integer("ZCARD %sinflight:%s", "w1"), 0);
    cq_store_close(st);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("store_retry");
    TCase *tc = tcase_create("create_session");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_create_session_run_twice_is_one_new_session);
    tcase_add_test(tc, test_create_session_reply_lost);
    suite_add_tcase(s, tc);
    tc = tcase_create("failed_start");
    tcase_add_test(tc, test_failed_start_frees_its_token);
    tcase_add_test(tc, test_lost_start_ends_only_a_starting_session);
    suite_add_tcase(s, tc);
    tc = tcase_create("recovery");
    tcase_add_test(tc, test_finished_request_keeps_its_body_while_in_flight);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    redis_up();
    int rc = cq_unit_run(suite(), true);
    redis_down();
    return rc;
}
