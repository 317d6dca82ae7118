/* bench/fleet_bench.c - the fleet's request path against the bare Kafka floor, in one run.
 *
 *   floor:      a client produces a small message to topic A; relay 1 consumes A and
 *               produces it to B; relay 2 consumes B and produces to R; the client
 *               consumes R. Three produce+consume hops, exactly as many as a request
 *               makes (request topic -> dispatcher -> worker topic -> worker -> reply
 *               topic), with the fleet's own librdkafka settings (fleet/kafka.c) and no
 *               work at all: what the fleet cannot beat.
 *   fleet:      executeCode of a trivial cell in one live session, through
 *               fleet/client.h and a running dispatcher and workers.
 *   throughput: S sessions, each a closed loop of executeCode for T seconds.
 *
 * The floor and fleet round trips are interleaved one by one, so that a noisy neighbour
 * on this shared machine hits both series alike; compare columns of one run.
 *
 * Needs a running fleet for the fleet modes: bench/fleet_bench.sh starts one.
 * usage: codeq-bench-fleet [options]; --help lists them.
 */
#define _GNU_SOURCE
#include "common/clock.h"
#include "common/error.h"
#include "common/random.h"
#include "common/units.h"
#include "fleet/client.h"
#include "fleet/config.h"
#include "fleet/kafka.h"
#include "fleet/trace.h"

#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define FLOOR_PAYLOAD 128 /* about the size of an executeCode Request */
#define FIRST_TRIP_MS 60000

struct options {
    const char *brokers;
    const char *request_topic;
    const char *code;
    int runs, warmup, sessions, settle_s;
    double duration_s;
    int timeout_ms;
    bool floor, fleet, throughput;
    bool trace; /* stamps at each step of the latency series (fleet/trace.h) */
    const char *delete_topics, *delete_groups; /* comma-separated; NULL: none */
};

/* ---- statistics ------------------------------------------------------------------- */

struct series {
    const char *name;
    double *ms;
    size_t n, cap;
};

static int series_add(struct series *s, double ms, struct cq_error *err)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 1024;
        double *grown = realloc(s->ms, cap * sizeof(*grown));
        if (grown == NULL)
            return cq_error_sys(err, ENOMEM, "grow the samples of %s", s->name);
        s->ms = grown;
        s->cap = cap;
    }
    s->ms[s->n++] = ms;
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Nearest rank on sorted samples: p99 of 500 samples is the 495th, a sample that was
 * measured, not an interpolation. */
static double pct(const struct series *s, double q)
{
    size_t rank = (size_t)ceil(q * (double)s->n);
    return s->ms[rank > 0 ? rank - 1 : 0];
}

static double mean(const struct series *s)
{
    double sum = 0;
    for (size_t i = 0; i < s->n; i++)
        sum += s->ms[i];
    return s->n ? sum / (double)s->n : 0;
}

static void print_header(void)
{
    printf("%-44s %8s %8s %8s %8s %8s %9s %7s\n", "series (ms)", "p50", "p90", "p99", "mean", "min",
           "max", "n");
}

static void print_series(struct series *s)
{
    if (s->n == 0) {
        printf("%-44s %8s\n", s->name, "n/a");
        return;
    }
    qsort(s->ms, s->n, sizeof(double), cmp_double);
    printf("%-44s %8.3f %8.3f %8.3f %8.3f %8.3f %9.3f %7zu\n", s->name, pct(s, 0.5), pct(s, 0.9),
           pct(s, 0.99), mean(s), s->ms[0], s->ms[s->n - 1], s->n);
}

/* ---- traces: the time between consecutive steps, per pair of steps ----------------- */

#define MAX_STEPS 32

struct steps {
    size_t n;
    char names[MAX_STEPS][64];
    struct series s[MAX_STEPS];
};

static void steps_add(struct steps *st, const struct cq_trace *t)
{
    char prev[32] = "";
    unsigned long long prev_us = 0;
    for (const char *p = t->text; *p != '\0';) {
        char name[32];
        unsigned long long us;
        int used = 0;
        if (sscanf(p, "%31[^:,]:%llu%n", name, &us, &used) != 2)
            return; /* not a trace of ours: ignored */
        p += used;
        if (*p == ',')
            p++;
        if (prev[0] != '\0' && us >= prev_us) {
            char pair[64];
            snprintf(pair, sizeof(pair), "%s -> %s", prev, name);
            size_t i = 0;
            while (i < st->n && strcmp(st->names[i], pair) != 0)
                i++;
            if (i == st->n && st->n < MAX_STEPS) {
                snprintf(st->names[st->n], sizeof(st->names[0]), "%s", pair);
                st->s[st->n].name = st->names[st->n];
                st->n++;
            }
            struct cq_error ignored;
            if (i < st->n)
                series_add(&st->s[i], (double)(us - prev_us) / 1000.0, &ignored);
        }
        snprintf(prev, sizeof(prev), "%s", name);
        prev_us = us;
    }
}

static void steps_print(const char *title, struct steps *st)
{
    printf("\n%s\n", title);
    printf("%-44s %8s %8s %8s %7s\n", "step (us)", "p50", "p90", "mean", "n");
    double total = 0;
    for (size_t i = 0; i < st->n; i++) {
        struct series *s = &st->s[i];
        qsort(s->ms, s->n, sizeof(double), cmp_double);
        printf("%-44s %8.0f %8.0f %8.0f %7zu\n", s->name, pct(s, 0.5) * 1000, pct(s, 0.9) * 1000,
               mean(s) * 1000, s->n);
        total += mean(s) * 1000;
    }
    printf("%-44s %8s %8s %8.0f\n", "sum of the means", "", "", total);
}

static void steps_free(struct steps *st)
{
    for (size_t i = 0; i < st->n; i++)
        free(st->s[i].ms);
}

static double ms_since(uint64_t t0_us)
{
    return (double)(cq_now_us() - t0_us) / 1000.0;
}

static void print_load(const char *when)
{
    double load[3];
    if (getloadavg(load, 3) == 3)
        printf("load average %s: %.2f %.2f %.2f (%ld CPUs)\n", when, load[0], load[1], load[2],
               sysconf(_SC_NPROCESSORS_ONLN));
}

/* ---- the floor: three Kafka hops, no work ----------------------------------------- */

struct relay {
    rd_kafka_t *consumer, *producer;
    const char *to;
    const char *poll_step, *sent_step; /* its trace stamps */
    atomic_bool *stopping;
    pthread_t thread;
    bool started;
};

/* What a daemon's loop does minus the daemon: consume, produce the same bytes on. */
static void *relay_main(void *arg)
{
    struct relay *r = arg;
    while (!atomic_load(r->stopping)) {
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(r->consumer, 100);
        if (msg == NULL)
            continue;
        struct cq_error err;
        /* A traced trip is stamped as a daemon stamps it, so that the hops compare. */
        struct cq_trace trace;
        cq_trace_read(&trace, msg);
        cq_trace_stamp(&trace, r->poll_step);
        cq_trace_stamp(&trace, r->sent_step);
        struct cq_header h;
        size_t n = cq_trace_header(&trace, &h);
        if (msg->err == RD_KAFKA_RESP_ERR_NO_ERROR &&
            cq_kafka_send(r->producer, r->to, "floor", msg->payload, msg->len, &h, n, NULL, &err) <
                0)
            fprintf(stderr, "fleet-bench: relay to %s: %s\n", r->to, err.msg);
        rd_kafka_message_destroy(msg);
        rd_kafka_poll(r->producer, 0); /* delivery reports, not waited for */
    }
    return NULL;
}

struct floor {
    struct cq_fleet_config cfg;
    char topics[3][128]; /* A, B, R */
    struct relay relays[2];
    rd_kafka_t *producer, *consumer;
    atomic_bool stopping;
    uint64_t seq;
};

static void delete_group(rd_kafka_t *rk, const char *group)
{
    rd_kafka_DeleteGroup_t *g = rd_kafka_DeleteGroup_new(group);
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_DeleteGroups(rk, &g, 1, NULL, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 10000);
    if (ev != NULL)
        rd_kafka_event_destroy(ev);
    rd_kafka_queue_destroy(q);
    rd_kafka_DeleteGroup_destroy(g);
}

static void floor_close(struct floor *f)
{
    atomic_store(&f->stopping, true);
    for (int i = 0; i < 2; i++) {
        struct relay *r = &f->relays[i];
        if (r->started)
            pthread_join(r->thread, NULL);
        if (r->consumer != NULL) {
            rd_kafka_consumer_close(r->consumer);
            rd_kafka_destroy(r->consumer);
        }
        if (r->producer != NULL) {
            rd_kafka_flush(r->producer, 5000);
            rd_kafka_destroy(r->producer);
        }
    }
    if (f->consumer != NULL) {
        rd_kafka_consumer_close(f->consumer);
        rd_kafka_destroy(f->consumer);
    }
    if (f->producer != NULL) {
        /* Unique topics and groups per run keep runs apart; deleting them keeps the
         * broker from piling up partitions and group offsets, run after run. */
        struct cq_error ignored;
        rd_kafka_flush(f->producer, 5000);
        for (int i = 0; i < 3; i++)
            cq_kafka_delete_topic(f->producer, f->topics[i], &ignored);
        for (int i = 0; i < 2; i++) {
            char group[160];
            snprintf(group, sizeof(group), "%s-relay", f->topics[i]);
            delete_group(f->producer, group);
        }
        rd_kafka_destroy(f->producer);
    }
}

static int floor_open(struct floor *f, const char *brokers, struct cq_error *err)
{
    cq_fleet_config_init(&f->cfg);
    snprintf(f->cfg.brokers, sizeof(f->cfg.brokers), "%s", brokers);
    /* Fresh topics and groups each run: no earlier run's messages or offsets. */
    char run[17];
    cq_random_id(run, 16);
    static const char *const names[] = {"a", "b", "r"};
    for (int i = 0; i < 3; i++)
        snprintf(f->topics[i], sizeof(f->topics[i]), "codeq.bench.floor.%s.%s", run, names[i]);
    if (cq_kafka_producer(&f->cfg, &f->producer, err) < 0)
        return -1;
    for (int i = 0; i < 3; i++)
        if (cq_kafka_ensure_topic(f->producer, f->topics[i], 1, err) < 0)
            return -1;
    for (int i = 0; i < 2; i++) {
        struct relay *r = &f->relays[i];
        char group[160];
        snprintf(group, sizeof(group), "%s-relay", f->topics[i]);
        if (cq_kafka_consumer(&f->cfg, group, f->topics[i], &r->consumer, err) < 0 ||
            cq_kafka_producer(&f->cfg, &r->producer, err) < 0)
            return -1;
        r->to = f->topics[i + 1];
        r->poll_step = i == 0 ? "r1.poll" : "r2.poll";
        r->sent_step = i == 0 ? "r1.sent" : "r2.sent";
        r->stopping = &f->stopping;
        if (pthread_create(&r->thread, NULL, relay_main, r) != 0)
            return cq_error_set(err, CQ_EINTERNAL, "start a relay thread");
        r->started = true;
    }
    /* The client reads R as fleet/client.c reads its reply topic: outside any group. */
    return cq_kafka_reader(&f->cfg, f->topics[2], &f->consumer, err);
}

/* One round trip A -> B -> R in ms; the reply is recognised by its sequence number, so
 * a late copy of an earlier message can never end a later trip. */
static int floor_trip(struct floor *f, int timeout_ms, double *ms, struct cq_trace *trace,
                      struct cq_error *err)
{
    char payload[FLOOR_PAYLOAD];
    memset(payload, 'x', sizeof(payload));
    uint64_t seq = ++f->seq;
    memcpy(payload, &seq, sizeof(seq));
    uint64_t t0 = cq_now_us();
    if (trace != NULL) {
        cq_trace_begin(trace);
        cq_trace_stamp(trace, "c.sent");
    }
    struct cq_header h;
    size_t n = cq_trace_header(trace, &h);
    if (cq_kafka_send(f->producer, f->topics[0], "floor", payload, sizeof(payload), &h, n, NULL,
                      err) < 0)
        return -1;
    for (;;) {
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(f->consumer, 100);
        rd_kafka_poll(f->producer, 0);
        if (msg != NULL) {
            uint64_t got = 0;
            bool ours = msg->err == RD_KAFKA_RESP_ERR_NO_ERROR && msg->len == sizeof(payload) &&
                        (memcpy(&got, msg->payload, sizeof(got)), got == seq);
            if (ours) {
                *ms = ms_since(t0);
                if (trace != NULL) {
                    cq_trace_read(trace, msg);
                    cq_trace_stamp(trace, "c.woken");
                }
            }
            rd_kafka_message_destroy(msg);
            if (ours)
                return 0;
        }
        if (ms_since(t0) > timeout_ms)
            return cq_error_set(err, CQ_ETIMEOUT,
                                "floor: message %llu not back from %s within %d ms",
                                (unsigned long long)seq, f->topics[2], timeout_ms);
    }
}

/* ---- the fleet ---------------------------------------------------------------------- */

static void count_chunk(void *ctx, const Codeq__V1__OutputChunk *chunk)
{
    (void)chunk;
    atomic_fetch_add((atomic_ulong *)ctx, 1);
}

static atomic_ulong chunks_seen;

/* Request ids are made here, in buffers the caller owns, rather than left to the
 * client: a stack-built request then owns nothing on the heap. run_id (set once in
 * main) keeps ids of different runs apart in Redis. */
static char run_id[13];

static void next_request_id(char *out, size_t len)
{
    static atomic_ulong counter;
    snprintf(out, len, "bench-%s-%lu", run_id, atomic_fetch_add(&counter, 1));
}

static int start_session(struct cq_fleet_client *c, int timeout_ms, char *id, size_t len,
                         struct cq_error *err)
{
    char rid[64];
    next_request_id(rid, sizeof(rid));
    Codeq__V1__StartSession start = CODEQ__V1__START_SESSION__INIT;
    start.session_timeout_seconds = 3600;
    Codeq__V1__Request req = CODEQ__V1__REQUEST__INIT;
    req.request_id = rid;
    req.operation_case = CODEQ__V1__REQUEST__OPERATION_START_SESSION;
    req.start_session = &start;
    Codeq__V1__Response *resp = NULL;
    if (cq_fleet_client_call(c, &req, NULL, NULL, timeout_ms, &resp, err) < 0)
        return cq_error_prefix(err, "startSession");
    int rc = 0;
    if (resp->payload_case == CODEQ__V1__RESPONSE__PAYLOAD_SESSION)
        snprintf(id, len, "%s", resp->session->session_id);
    else
        rc = cq_error_set(err, CQ_EPROTO, "startSession: %s",
                          resp->payload_case == CODEQ__V1__RESPONSE__PAYLOAD_RESULT
                              ? resp->result->error_message
                              : "no session in the reply");
    codeq__v1__response__free_unpacked(resp, NULL);
    return rc;
}

static void stop_session(struct cq_fleet_client *c, const char *id, int timeout_ms)
{
    char rid[64];
    next_request_id(rid, sizeof(rid));
    Codeq__V1__StopSession stop = CODEQ__V1__STOP_SESSION__INIT;
    Codeq__V1__Request req = CODEQ__V1__REQUEST__INIT;
    req.request_id = rid;
    req.session_id = (char *)id;
    req.operation_case = CODEQ__V1__REQUEST__OPERATION_STOP_SESSION;
    req.stop_session = &stop;
    Codeq__V1__Response *resp = NULL;
    struct cq_error err;
    if (cq_fleet_client_call(c, &req, NULL, NULL, timeout_ms, &resp, &err) < 0)
        fprintf(stderr, "fleet-bench: stopSession %s: %s\n", id, err.msg);
    else
        codeq__v1__response__free_unpacked(resp, NULL);
}

/* One executeCode round trip in ms; a result marked as an error fails the run (a
 * benchmark of error replies measures the wrong thing). */
static int execute(struct cq_fleet_client *c, const char *session, const char *code, int timeout_ms,
                   double *ms, struct cq_trace *trace, struct cq_error *err)
{
    char rid[64];
    next_request_id(rid, sizeof(rid));
    Codeq__V1__Arguments args = CODEQ__V1__ARGUMENTS__INIT;
    args.code = (char *)code;
    args.language = "python";
    Codeq__V1__Invoke inv = CODEQ__V1__INVOKE__INIT;
    inv.tool = "executeCode";
    inv.arguments = &args;
    Codeq__V1__Request req = CODEQ__V1__REQUEST__INIT;
    req.request_id = rid;
    req.session_id = (char *)session;
    req.operation_case = CODEQ__V1__REQUEST__OPERATION_INVOKE;
    req.invoke = &inv;
    Codeq__V1__Response *resp = NULL;
    uint64_t t0 = cq_now_us();
    if (cq_fleet_client_call_traced(c, &req, count_chunk, &chunks_seen, timeout_ms, &resp, trace,
                                    err) < 0)
        return cq_error_prefix(err, "executeCode");
    *ms = ms_since(t0);
    int rc = 0;
    if (resp->payload_case != CODEQ__V1__RESPONSE__PAYLOAD_RESULT)
        rc = cq_error_set(err, CQ_EPROTO, "executeCode: no result in the reply");
    else if (resp->result->is_error)
        rc = cq_error_set(err, CQ_EPROTO, "executeCode failed: %s%s", resp->result->error_message,
                          resp->result->n_content > 0 && resp->result->content[0]->block_case ==
                                                             CODEQ__V1__CONTENT_BLOCK__BLOCK_TEXT
                              ? resp->result->content[0]->text->text
                              : "");
    codeq__v1__response__free_unpacked(resp, NULL);
    return rc;
}

/* ---- throughput: many sessions, each a closed loop ------------------------------------ */

struct loader {
    struct cq_fleet_client *c;
    const struct options *o;
    pthread_barrier_t *ready, *go, *done;
    const atomic_ullong *deadline_us;
    char session[128];
    bool ok;
    struct series lat;
    unsigned long errors;
    uint64_t end_us;
    struct cq_error err;
    pthread_t thread;
};

static void *loader_main(void *arg)
{
    struct loader *l = arg;
    /* The session's first calls (kernel start-up effects) are paid before the clock
     * starts, like the warm-up of the latency series. */
    double ms;
    l->ok = start_session(l->c, l->o->timeout_ms, l->session, sizeof(l->session), &l->err) == 0;
    for (int i = 0; l->ok && i < 3; i++)
        l->ok = execute(l->c, l->session, l->o->code, l->o->timeout_ms, &ms, NULL, &l->err) == 0;
    pthread_barrier_wait(l->ready);
    pthread_barrier_wait(l->go);
    uint64_t deadline = atomic_load(l->deadline_us);
    while (l->ok && cq_now_us() < deadline) {
        struct cq_error err;
        if (execute(l->c, l->session, l->o->code, l->o->timeout_ms, &ms, NULL, &err) < 0) {
            if (l->errors++ == 0)
                l->err = err;
            continue;
        }
        if (series_add(&l->lat, ms, &l->err) < 0)
            break;
    }
    l->end_us = cq_now_us();
    /* Sessions end only when every loop has: stopping one costs CPU that would land in
     * the others' measurements. */
    pthread_barrier_wait(l->done);
    if (l->session[0] != '\0')
        stop_session(l->c, l->session, l->o->timeout_ms);
    return NULL;
}

/* ---- cleanup of a stopped fleet --------------------------------------------------------- */

/* Every run of bench/fleet_bench.sh makes a fleet with topics of its own (the request
 * topic has 8 partitions); left behind, they pile up on a shared broker and slow its
 * controller down for everyone. */
static int delete_listed(const char *brokers, const char *topics, const char *groups)
{
    struct cq_fleet_config cfg;
    cq_fleet_config_init(&cfg);
    snprintf(cfg.brokers, sizeof(cfg.brokers), "%s", brokers);
    struct cq_error err;
    rd_kafka_t *rk;
    if (cq_kafka_producer(&cfg, &rk, &err) < 0) {
        fprintf(stderr, "fleet-bench: %s\n", err.msg);
        return 1;
    }
    int rc = 0;
    char *list = strdup(topics != NULL ? topics : "");
    char *save = NULL;
    for (char *t = list != NULL ? strtok_r(list, ",", &save) : NULL; t != NULL;
         t = strtok_r(NULL, ",", &save)) {
        if (cq_kafka_delete_topic(rk, t, &err) < 0) {
            fprintf(stderr, "fleet-bench: %s\n", err.msg);
            rc = 1;
        }
    }
    free(list);
    list = strdup(groups != NULL ? groups : "");
    for (char *g = list != NULL ? strtok_r(list, ",", &save) : NULL; g != NULL;
         g = strtok_r(NULL, ",", &save))
        delete_group(rk, g);
    free(list);
    rd_kafka_destroy(rk);
    return rc;
}

/* ---- main ------------------------------------------------------------------------------ */

static void usage(FILE *out, const char *argv0)
{
    fprintf(out,
            "usage: %s [options]\n\n"
            "The fleet's executeCode round trip against the bare floor of the same number\n"
            "of Kafka hops (two librdkafka relays, no work), interleaved; then throughput\n"
            "of many sessions in closed loops. Needs a running fleet for the fleet parts\n"
            "(bench/fleet_bench.sh starts one).\n\n"
            "  --brokers LIST        Kafka (default $CODEQ_BROKERS or 127.0.0.1:19092)\n"
            "  --request-topic NAME  the fleet's (default $CODEQ_REQUEST_TOPIC or "
            "codeq.requests)\n"
            "  --runs N              measured round trips per series (default 500)\n"
            "  --warmup N            unmeasured round trips first (default 50)\n"
            "  --sessions S          throughput: sessions in parallel (default 32)\n"
            "  --duration SECONDS    throughput: length of the measurement (default 10)\n"
            "  --code CODE           the cell executed (default: 1)\n"
            "  --timeout-ms MS       per call (default 30000)\n"
            "  --settle SECONDS      pause after starting sessions, for the workers' warm\n"
            "                        pools to refill before the clock starts (default 5)\n"
            "  --only floor|fleet|throughput  run one part (repeatable)\n"
            "  --trace               also print where each round trip's time goes: every\n"
            "                        step stamps the request (fleet/trace.h; one\n"
            "                        host only, as the stamps compare clocks)\n"
            "  --delete-topics LIST, --delete-groups LIST\n"
            "                        delete these Kafka topics and consumer groups (comma-\n"
            "                        separated) and exit, measuring nothing: the cleanup\n"
            "                        of a stopped fleet (bench/fleet_bench.sh uses it)\n",
            argv0);
}

static int parse_int(const char *name, const char *text, int min, int max, int *out)
{
    struct cq_error err;
    uint64_t v;
    if (cq_parse_uint(text, (uint64_t)min, (uint64_t)max, &v, &err) < 0) {
        fprintf(stderr, "fleet-bench: --%s: %s\n", name, err.msg);
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int parse_options(int argc, char **argv, struct options *o, bool *help)
{
    const char *env_brokers = getenv("CODEQ_BROKERS");
    const char *env_topic = getenv("CODEQ_REQUEST_TOPIC");
    *o = (struct options){
        .brokers = env_brokers && *env_brokers ? env_brokers : "127.0.0.1:19092",
        .request_topic = env_topic && *env_topic ? env_topic : "codeq.requests",
        .code = "1",
        .runs = 500,
        .warmup = 50,
        .sessions = 32,
        .duration_s = 10,
        .settle_s = 5,
        .timeout_ms = 30000,
    };
    static const struct option opts[] = {
        {"brokers", required_argument, NULL, 'b'},
        {"request-topic", required_argument, NULL, 't'},
        {"runs", required_argument, NULL, 'n'},
        {"warmup", required_argument, NULL, 'w'},
        {"sessions", required_argument, NULL, 's'},
        {"duration", required_argument, NULL, 'd'},
        {"code", required_argument, NULL, 'c'},
        {"timeout-ms", required_argument, NULL, 'T'},
        {"only", required_argument, NULL, 'o'},
        {"settle", required_argument, NULL, 'S'},
        {"delete-topics", required_argument, NULL, 'D'},
        {"delete-groups", required_argument, NULL, 'G'},
        {"trace", no_argument, NULL, 'R'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    bool only = false;
    int c, duration = 0;
    *help = false;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'b':
            o->brokers = optarg;
            break;
        case 't':
            o->request_topic = optarg;
            break;
        case 'n':
            if (parse_int("runs", optarg, 1, 10000000, &o->runs) < 0)
                return -1;
            break;
        case 'w':
            if (parse_int("warmup", optarg, 0, 1000000, &o->warmup) < 0)
                return -1;
            break;
        case 's':
            if (parse_int("sessions", optarg, 1, 1024, &o->sessions) < 0)
                return -1;
            break;
        case 'd':
            if (parse_int("duration", optarg, 1, 86400, &duration) < 0)
                return -1;
            o->duration_s = duration;
            break;
        case 'c':
            o->code = optarg;
            break;
        case 'T':
            if (parse_int("timeout-ms", optarg, 1, 3600000, &o->timeout_ms) < 0)
                return -1;
            break;
        case 'S':
            if (parse_int("settle", optarg, 0, 3600, &o->settle_s) < 0)
                return -1;
            break;
        case 'o':
            if (!only)
                o->floor = o->fleet = o->throughput = false;
            only = true;
            if (strcmp(optarg, "floor") == 0)
                o->floor = true;
            else if (strcmp(optarg, "fleet") == 0)
                o->fleet = true;
            else if (strcmp(optarg, "throughput") == 0)
                o->throughput = true;
            else {
                fprintf(stderr, "fleet-bench: --only: floor, fleet or throughput, not %s\n",
                        optarg);
                return -1;
            }
            break;
        case 'R':
            o->trace = true;
            break;
        case 'D':
            o->delete_topics = optarg;
            break;
        case 'G':
            o->delete_groups = optarg;
            break;
        case 'h':
            *help = true;
            return 0;
        default:
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "fleet-bench: unexpected argument %s\n", argv[optind]);
        return -1;
    }
    if (!only)
        o->floor = o->fleet = o->throughput = true;
    return 0;
}

/* The interleaved latency series: warm-up, then floor and fleet trips in turn. */
static int latency(const struct options *o, struct floor *f, struct cq_fleet_client *c,
                   const char *session, struct series *floor_s, struct series *fleet_s,
                   struct steps *floor_steps, struct steps *fleet_steps, struct cq_error *err)
{
    double ms;
    struct cq_trace trace;
    struct cq_trace *t = o->trace ? &trace : NULL;
    /* The first trips wait for the consumer groups to be joined and partitions
     * assigned: seconds, not part of any measurement. */
    if (f != NULL && floor_trip(f, FIRST_TRIP_MS, &ms, NULL, err) < 0)
        return -1;
    for (int i = 0; i < o->warmup + o->runs; i++) {
        bool measured = i >= o->warmup;
        if (f != NULL) {
            if (floor_trip(f, o->timeout_ms, &ms, t, err) < 0)
                return -1;
            if (measured && series_add(floor_s, ms, err) < 0)
                return -1;
            if (measured && t != NULL)
                steps_add(floor_steps, t);
        }
        if (c != NULL) {
            if (execute(c, session, o->code, o->timeout_ms, &ms, t, err) < 0)
                return -1;
            if (measured && series_add(fleet_s, ms, err) < 0)
                return -1;
            if (measured && t != NULL)
                steps_add(fleet_steps, t);
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct options o;
    bool help;
    if (parse_options(argc, argv, &o, &help) < 0) {
        usage(stderr, argv[0]);
        return 2;
    }
    if (help) {
        usage(stdout, argv[0]);
        return 0;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (o.delete_topics != NULL || o.delete_groups != NULL)
        return delete_listed(o.brokers, o.delete_topics, o.delete_groups);
    cq_random_id(run_id, 12);
    struct cq_error err;
    int rc = 1;

    printf("codeq fleet bench: brokers %s, request topic %s, cell `%s`\n", o.brokers,
           o.request_topic, o.code);
    print_load("at start");

    struct floor fl = {0};
    struct floor *f = NULL;
    struct cq_fleet_client *c = NULL;
    char session[128] = "";
    struct loader *loaders = NULL;
    pthread_barrier_t ready, go, done;
    atomic_ullong deadline_us = 0;
    int started = 0;
    struct series floor_s = {.name = "floor: 3 Kafka hops, 2 relays, no work"};
    char fleet_name[80];
    snprintf(fleet_name, sizeof(fleet_name), "fleet: executeCode `%.20s`, 1 session", o.code);
    struct series fleet_s = {.name = fleet_name};
    char tp_name[80];
    snprintf(tp_name, sizeof(tp_name), "throughput: %d sessions, closed loops", o.sessions);
    struct series tp_s = {.name = tp_name};
    struct steps floor_steps = {0}, fleet_steps = {0};

    if (o.floor) {
        if (floor_open(&fl, o.brokers, &err) < 0) {
            fprintf(stderr, "fleet-bench: floor: %s\n", err.msg);
            goto out;
        }
        f = &fl;
    }
    if (o.fleet || o.throughput) {
        if (cq_fleet_client_open(o.brokers, o.request_topic, &c, &err) < 0) {
            fprintf(stderr, "fleet-bench: %s\n", err.msg);
            goto out;
        }
        if (o.fleet && start_session(c, FIRST_TRIP_MS, session, sizeof(session), &err) < 0) {
            fprintf(stderr, "fleet-bench: %s\n", err.msg);
            goto out;
        }
    }
    if (o.throughput) {
        /* Every session is started (and warmed) before any measurement: session
         * start-ups and the warm pool's refills take CPU this machine does not spare. */
        loaders = calloc((size_t)o.sessions, sizeof(*loaders));
        if (loaders == NULL)
            goto out;
        pthread_barrier_init(&ready, NULL, (unsigned)o.sessions + 1);
        pthread_barrier_init(&go, NULL, (unsigned)o.sessions + 1);
        pthread_barrier_init(&done, NULL, (unsigned)o.sessions);
        for (int i = 0; i < o.sessions; i++) {
            struct loader *l = &loaders[i];
            *l = (struct loader){.c = c,
                                 .o = &o,
                                 .ready = &ready,
                                 .go = &go,
                                 .done = &done,
                                 .deadline_us = &deadline_us,
                                 .lat = {.name = tp_name}};
            if (pthread_create(&l->thread, NULL, loader_main, l) != 0) {
                fprintf(stderr, "fleet-bench: cannot start thread %d\n", i);
                exit(1); /* the barriers count on every thread */
            }
            started++;
        }
        pthread_barrier_wait(&ready);
        for (int i = 0; i < o.sessions; i++)
            if (!loaders[i].ok) {
                fprintf(stderr, "fleet-bench: session %d: %s\n", i, loaders[i].err.msg);
                goto release;
            }
        printf("%d sessions started\n", o.sessions);
    }
    if (o.fleet || o.throughput) {
        /* Let the workers' warm pools refill (a pooled kernel imports numpy, pandas and
         * matplotlib: ~1.2 s of CPU each) before the clock starts. */
        sleep((unsigned)o.settle_s);
    }
    if (o.floor || o.fleet) {
        if (latency(&o, f, o.fleet ? c : NULL, session, &floor_s, &fleet_s, &floor_steps,
                    &fleet_steps, &err) < 0) {
            fprintf(stderr, "fleet-bench: %s\n", err.msg);
            goto release;
        }
    }
    rc = 0;

release:
    if (o.throughput) {
        uint64_t t0 = cq_now_us();
        /* On a failure before here the loops see a past deadline and end at once. */
        atomic_store(&deadline_us, rc == 0 ? t0 + (uint64_t)(o.duration_s * 1e6) : 0);
        if (rc == 0)
            printf("throughput: %d closed loops for %.0f s\n", o.sessions, o.duration_s);
        pthread_barrier_wait(&go);
        uint64_t end = t0;
        unsigned long requests = 0, errors = 0;
        for (int i = 0; i < started; i++) {
            pthread_join(loaders[i].thread, NULL);
            struct loader *l = &loaders[i];
            if (l->end_us > end)
                end = l->end_us;
            errors += l->errors;
            if (l->errors > 0)
                fprintf(stderr, "fleet-bench: session %d: %lu errors, first: %s\n", i, l->errors,
                        l->err.msg);
            for (size_t k = 0; k < l->lat.n; k++)
                if (series_add(&tp_s, l->lat.ms[k], &err) < 0)
                    rc = 1;
            requests += l->lat.n;
            free(l->lat.ms);
        }
        pthread_barrier_destroy(&ready);
        pthread_barrier_destroy(&go);
        pthread_barrier_destroy(&done);
        if (rc == 0) {
            printf("\n");
            print_header();
            if (o.floor)
                print_series(&floor_s);
            if (o.fleet)
                print_series(&fleet_s);
            print_series(&tp_s);
            double secs = (double)(end - t0) / 1e6;
            printf("\nthroughput: %.0f requests/s (%lu requests in %.2f s, %d sessions, %lu "
                   "errors)\n",
                   (double)requests / secs, requests, secs, o.sessions, errors);
            if (errors > 0)
                rc = 1;
        }
    } else if (rc == 0) {
        printf("\n");
        print_header();
        if (o.floor)
            print_series(&floor_s);
        if (o.fleet)
            print_series(&fleet_s);
    }
    if (rc == 0 && o.floor && o.fleet && floor_s.n > 0 && fleet_s.n > 0) {
        double ratio = pct(&fleet_s, 0.5) / pct(&floor_s, 0.5);
        printf("fleet/floor at p50: %.2fx (goal: at most 1.5x, %s); at p99: %.2fx\n", ratio,
               ratio <= 1.5 ? "met" : "NOT met", pct(&fleet_s, 0.99) / pct(&floor_s, 0.99));
    }
    if (rc == 0 && o.trace && o.floor)
        steps_print("where the floor's time goes (--trace; c: this client, r1/r2: the relays)",
                    &floor_steps);
    if (rc == 0 && o.trace && o.fleet)
        steps_print("where the fleet's time goes (--trace; c: this client, d: the dispatcher, "
                    "w: the worker)",
                    &fleet_steps);
    if (rc == 0 && (o.fleet || o.throughput)) {
        printf("chunk replies seen: %lu (streamed output of the cell, before its final "
               "reply)\n",
               atomic_load(&chunks_seen));
    }
    print_load("at end");

out:
    if (c != NULL && session[0] != '\0')
        stop_session(c, session, o.timeout_ms);
    if (c != NULL)
        cq_fleet_client_close(c);
    if (o.floor)
        floor_close(&fl); /* also after a partial floor_open */
    free(loaders);
    free(floor_s.ms);
    free(fleet_s.ms);
    free(tp_s.ms);
    steps_free(&floor_steps);
    steps_free(&fleet_steps);
    return rc;
}
