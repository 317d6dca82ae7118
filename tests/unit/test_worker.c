/* tests/unit/test_worker.c - the worker (worker/worker.h) with real sessions: their
 * lifecycle, listing, expiry and limits; executeCode in Python, JavaScript and
 * TypeScript with timeouts and streaming; executeCommand and background tasks; the
 * session environment; the warm pool; and that nothing is left on the host.
 *
 * Needs root, python3 (with numpy, pandas, matplotlib) and node on the host, and the
 * runtimes of the source tree (CODEQ_RUNTIMES_DIR is pointed at them). Every test runs
 * in its own process (forced fork mode), so the sandbox cgroups of a test are exactly
 * those named "<that process's pid>-<n>", and its sandbox processes its descendants. */
#define _GNU_SOURCE
#include "worker/session.h" /* the pool's state, to wait for it to fill */
#include "common/clock.h"
#include "common/units.h"
#include "host_cgroups.h"
#include "result_text.h"
#include "unit.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef CQ_SOURCE_DIR
#error "CQ_SOURCE_DIR must name the source tree (for its runtimes/)"
#endif

/* Every process in every sandbox cgroup of this process. */
static size_t own_sandbox_tasks(pid_t *pids, size_t max)
{
    struct cgroup_bases b;
    find_bases(&b);
    DIR *d = opendir(b.dir[0]);
    if (d == NULL)
        return 0;
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_type != DT_DIR || !is_ours(e->d_name))
            continue;
        char path[PATH_MAX + 300];
        snprintf(path, sizeof(path), "%s/%s/%s", b.dir[0], e->d_name,
                 b.version == 1 ? "tasks" : "cgroup.procs");
        FILE *f = fopen(path, "re");
        if (f == NULL)
            continue;
        long pid;
        while (n < max && fscanf(f, "%ld", &pid) == 1)
            pids[n++] = (pid_t)pid;
        fclose(f);
    }
    closedir(d);
    return n;
}

/* Processes on the host running as the sandbox's ids whose parent is this process
 * (sandbox inits are our children; everything else dies with them). */
static int sandbox_children(void)
{
    DIR *d = opendir("/proc");
    ck_assert_ptr_nonnull(d);
    int count = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        char path[300], line[256];
        snprintf(path, sizeof(path), "/proc/%s/status", e->d_name);
        FILE *f = fopen(path, "re");
        if (f == NULL)
            continue;
        long ppid = -1, uid = -1;
        while (fgets(line, sizeof(line), f) != NULL) {
            sscanf(line, "PPid: %ld", &ppid);
            sscanf(line, "Uid: %ld", &uid);
        }
        fclose(f);
        if (ppid == getpid() && (uid == 1600000000L || uid == 1600001000L))
            count++;
    }
    closedir(d);
    return count;
}

/* --- the worker ------------------------------------------------------------------------ */

static struct cq_worker *w;

static void setup(void)
{
    if (getenv("CODEQ_SANDBOX_INIT") == NULL)
        setenv("CODEQ_SANDBOX_INIT", CQ_BUILD_DIR "/bin/codeq-sandbox-init", 0);
    setenv("CODEQ_RUNTIMES_DIR", CQ_SOURCE_DIR "/runtimes", 1);
    w = NULL;
}

static void teardown(void)
{
    cq_worker_destroy(w);
    w = NULL;
    ck_assert_msg(count_own_cgroups() == 0, "sandbox cgroups left after cq_worker_destroy");
}

static void make_worker_cfg(const struct cq_worker_config *cfg)
{
    struct cq_error err = {0};
    ck_assert_msg(cq_worker_create(cfg, &w, &err) == 0, "worker: %s", err.msg);
}

static void make_worker(unsigned max_sessions)
{
    struct cq_worker_config cfg;
    cq_worker_config_init(&cfg);
    if (max_sessions != 0)
        cfg.max_sessions = max_sessions;
    make_worker_cfg(&cfg);
}

static struct cq_session_info start_with(const struct cq_session_params *p)
{
    struct cq_session_info info;
    struct cq_error err = {0};
    ck_assert_msg(cq_worker_start_session(w, p, &info, &err) == 0, "start session: %s", err.msg);
    return info;
}

static struct cq_session_info start(const char *name)
{
    struct cq_session_params p = {.name = name};
    return start_with(&p);
}

static void code_in(const char *id, const char *language, const char *code, double timeout_s,
                    struct cq_result *r)
{
    struct cq_invoke_args a = {.code = code, .language = language, .timeout_s = timeout_s};
    cq_worker_invoke(w, id, "executeCode", &a, NULL, NULL, r);
}

/* Runs code and fails the test unless it succeeds with exactly this value. */
static void expect_value(const char *id, const char *language, const char *code, const char *value)
{
    struct cq_result r;
    code_in(id, language, code, 60, &r);
    ck_assert_msg(!r.is_error, "%s `%s` failed: %s", language, code, cq_unit_result_text(&r));
    ck_assert_msg(r.value_text != NULL && strcmp(r.value_text, value) == 0,
                  "%s `%s`: value %s, want %s (%s)", language, code,
                  r.value_text ? r.value_text : "(none)", value, cq_unit_result_text(&r));
    cq_result_free(&r);
}

static void command_in(const char *id, const char *command, double timeout_s, struct cq_result *r)
{
    struct cq_invoke_args a = {.command = command, .timeout_s = timeout_s};
    cq_worker_invoke(w, id, "executeCommand", &a, NULL, NULL, r);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static enum cq_session_status status_of(const char *id)
{
    struct cq_session_info info;
    struct cq_error err = {0};
    ck_assert_msg(cq_worker_get_session(w, id, &info, &err) == 0, "get %s: %s", id, err.msg);
    return info.status;
}

/* --- sessions ---------------------------------------------------------------------------- */

START_TEST(session_lifecycle)
{
    make_worker(0);
    int64_t before = (int64_t)time(NULL) * 1000;
    struct cq_session_params p = {.name = "first", .timeout_s = 300};
    struct cq_session_info info = start_with(&p);
    ck_assert_uint_eq(strlen(info.session_id), 32);
    ck_assert_uint_eq(strspn(info.session_id, "0123456789abcdefghijklmnopqrstuvwxyz"
                                              "ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
                      32);
    ck_assert_str_eq(info.name, "first");
    ck_assert_int_eq(info.status, CQ_SESSION_READY);
    ck_assert_uint_eq(info.session_timeout_s, 300);
    ck_assert_msg(info.created_at_ms >= before - 1000 && info.created_at_ms <= before + 10000,
                  "created at %lld, now %lld", (long long)info.created_at_ms, (long long)before);
    ck_assert_int_ge(info.last_updated_at_ms, info.created_at_ms);

    struct cq_session_info got;
    struct cq_error err = {0};
    ck_assert_int_eq(cq_worker_get_session(w, info.session_id, &got, &err), 0);
    ck_assert_str_eq(got.session_id, info.session_id);
    ck_assert_str_eq(got.name, "first");
    ck_assert_int_eq(got.status, CQ_SESSION_READY);
    ck_assert_int_eq(got.created_at_ms, info.created_at_ms);
    /* A call counts as an update. */
    sleep_ms(20);
    struct cq_result lr;
    struct cq_invoke_args la = {.directory_path = ""};
    cq_worker_invoke(w, info.session_id, "listFiles", &la, NULL, NULL, &lr);
    ck_assert_msg(!lr.is_error, "listFiles: %s", cq_unit_result_text(&lr));
    cq_result_free(&lr);
    ck_assert_int_eq(cq_worker_get_session(w, info.session_id, &got, &err), 0);
    ck_assert_int_gt(got.last_updated_at_ms, info.last_updated_at_ms);

    /* The default time to live, and no name. */
    struct cq_session_info other = start(NULL);
    ck_assert_uint_eq(other.session_timeout_s, CQ_WORKER_DEFAULT_SESSION_TTL_S);
    ck_assert_str_eq(other.name, "");
    ck_assert_str_ne(other.session_id, info.session_id);

    struct cq_session_info stopped;
    ck_assert_int_eq(cq_worker_stop_session(w, info.session_id, &stopped, &err), 0);
    ck_assert_int_eq(stopped.status, CQ_SESSION_TERMINATED);
    ck_assert_int_eq(status_of(info.session_id), CQ_SESSION_TERMINATED);
    ck_assert_int_eq(status_of(other.session_id), CQ_SESSION_READY);
    /* Stopping again is harmless; a terminated session takes no calls. */
    ck_assert_int_eq(cq_worker_stop_session(w, info.session_id, &stopped, &err), 0);
    ck_assert_int_eq(stopped.status, CQ_SESSION_TERMINATED);
    struct cq_result r;
    command_in(info.session_id, "true", 0, &r);
    ck_assert(r.is_error);
    ck_assert_int_eq(r.error_code, CQ_RESULT_NOT_FOUND);
    cq_result_free(&r);

    ck_assert_int_eq(cq_worker_get_session(w, "no-such-session", &got, &err), -1);
    ck_assert_int_eq(err.code, CQ_ENOTFOUND);
    ck_assert_int_eq(cq_worker_stop_session(w, "no-such-session", &got, &err), -1);
    ck_assert_int_eq(err.code, CQ_ENOTFOUND);
    /* The stopped session's sandbox is gone, the other's is there. */
    struct cgroup_bases b;
    find_bases(&b);
    ck_assert_int_eq(count_own_cgroups(), b.n);
}
END_TEST

START_TEST(start_session_refusals)
{
    make_worker(1);
    struct cq_session_info info;
    struct cq_error err = {0};
    struct cq_session_params p = {.timeout_s = CQ_WORKER_MAX_SESSION_TTL_S + 1};
    ck_assert_int_eq(cq_worker_start_session(w, &p, &info, &err), -1);
    ck_assert_int_eq(err.code, CQ_EINVALID);

    char long_name[102];
    memset(long_name, 'n', 101);
    long_name[101] = '\0';
    struct cq_session_params q = {.name = long_name};
    ck_assert_int_eq(cq_worker_start_session(w, &q, &info, &err), -1);
    ck_assert_int_eq(err.code, CQ_EINVALID);

    static const char *const bad_env1[] = {"NOEQUALS", NULL};
    static const char *const bad_env2[] = {"OK=1", "=value", NULL};
    struct cq_session_params e1 = {.env = bad_env1}, e2 = {.env = bad_env2};
    ck_assert_int_eq(cq_worker_start_session(w, &e1, &info, &err), -1);
    ck_assert_int_eq(err.code, CQ_EINVALID);
    ck_assert_int_eq(cq_worker_start_session(w, &e2, &info, &err), -1);
    ck_assert_int_eq(err.code, CQ_EINVALID);

    struct cq_session_params l = {0};
    l.limits.workspace_bytes = 1; /* too small for a tmpfs */
    ck_assert_int_eq(cq_worker_start_session(w, &l, &info, &err), -1);

    /* None of that used the one session this worker allows, or left a sandbox. */
    ck_assert_int_eq(count_own_cgroups(), 0);
    memset(long_name + 100, 0, 1); /* exactly 100 characters is fine */
    info = start_with(&q);
    ck_assert_uint_eq(strlen(info.name), 100);
}
END_TEST

START_TEST(list_sessions_pages_newest_first)
{
    make_worker(0);
    char ids[5][CQ_SESSION_ID_MAX + 1];
    for (int i = 0; i < 5; i++) {
        char name[8];
        snprintf(name, sizeof(name), "s%d", i);
        struct cq_session_info info = start(name);
        snprintf(ids[i], sizeof(ids[i]), "%s", info.session_id);
    }
    struct cq_session_info stopped;
    struct cq_error err = {0};
    ck_assert_int_eq(cq_worker_stop_session(w, ids[1], &stopped, &err), 0);

    /* Pages of 2: s4 s3 | s2 s1 | s0, the token of the last page is "". */
    struct cq_session_info page[2];
    char token[CQ_SESSION_ID_MAX + 1] = "";
    char next[CQ_SESSION_ID_MAX + 1];
    int seen = 0;
    for (int pg = 0; pg < 3; pg++) {
        size_t n = 99;
        ck_assert_int_eq(cq_worker_list_sessions(w, 0, 2, token, page, &n, next, &err), 0);
        ck_assert_uint_eq(n, pg < 2 ? 2 : 1);
        for (size_t i = 0; i < n; i++, seen++)
            ck_assert_msg(strcmp(page[i].session_id, ids[4 - seen]) == 0,
                          "page %d item %zu is %s, want s%d", pg, i, page[i].name, 4 - seen);
        if (pg < 2)
            ck_assert_str_eq(next, page[n - 1].session_id);
        else
            ck_assert_str_eq(next, "");
        snprintf(token, sizeof(token), "%s", next);
    }
    ck_assert_int_eq(seen, 5);

    /* Filters. */
    struct cq_session_info all[10];
    size_t n = 0;
    ck_assert_int_eq(cq_worker_list_sessions(w, CQ_SESSION_READY, 10, NULL, all, &n, next, &err),
                     0);
    ck_assert_uint_eq(n, 4);
    for (size_t i = 0; i < n; i++)
        ck_assert_int_eq(all[i].status, CQ_SESSION_READY);
    ck_assert_str_eq(next, "");
    ck_assert_int_eq(cq_worker_list_sessions(w, CQ_SESSION_TERMINATED, 10, "", all, &n, NULL, &err),
                     0);
    ck_assert_uint_eq(n, 1);
    ck_assert_str_eq(all[0].session_id, ids[1]);
    ck_assert_int_eq(all[0].status, CQ_SESSION_TERMINATED);
    /* A page exactly as large as what is left has no next token. */
    ck_assert_int_eq(cq_worker_list_sessions(w, 0, 5, NULL, all, &n, next, &err), 0);
    ck_assert_uint_eq(n, 5);
    ck_assert_str_eq(next, "");
}
END_TEST

/* max 0 is not forbidden by the API; it must not touch memory before out[]. */
START_TEST(list_sessions_max_zero)
{
    make_worker(0);
    start("only");
    struct cq_session_info slots[3];
    memset(slots, 0, sizeof(slots));
    snprintf(slots[0].session_id, sizeof(slots[0].session_id), "GUARD-BEFORE-OUT");
    char next[CQ_SESSION_ID_MAX + 1] = "untouched";
    size_t n = 99;
    struct cq_error err = {0};
    cq_worker_list_sessions(w, 0, 0, NULL, &slots[1], &n, next, &err);
    ck_assert_uint_eq(n, 0);
    ck_assert_msg(strcmp(next, "GUARD-BEFORE-OUT") != 0,
                  "cq_worker_list_sessions(max=0) read out[-1] for its next token");
}
END_TEST

START_TEST(session_expires_after_its_ttl)
{
    make_worker(0);
    struct cq_session_params p = {.timeout_s = 1};
    uint64_t t0 = cq_now_ms();
    struct cq_session_info info = start_with(&p);
    ck_assert_uint_eq(info.session_timeout_s, 1);
    ck_assert_int_eq(status_of(info.session_id), CQ_SESSION_READY);
    while (status_of(info.session_id) == CQ_SESSION_READY && cq_now_ms() - t0 < 10000)
        sleep_ms(20);
    uint64_t took = cq_now_ms() - t0;
    ck_assert_msg(status_of(info.session_id) == CQ_SESSION_TERMINATED,
                  "a 1 s session was still ready after %llu ms", (unsigned long long)took);
    ck_assert_msg(took >= 900, "expired after %llu ms, before its time", (unsigned long long)took);
    ck_assert_msg(took < 5000, "expired only after %llu ms", (unsigned long long)took);
    struct cq_result r;
    command_in(info.session_id, "true", 0, &r);
    ck_assert_int_eq(r.error_code, CQ_RESULT_NOT_FOUND);
    cq_result_free(&r);
    /* Still listed, as terminated; its sandbox is gone. */
    struct cq_session_info all[4];
    size_t n = 0;
    struct cq_error err = {0};
    cq_worker_list_sessions(w, CQ_SESSION_TERMINATED, 4, NULL, all, &n, NULL, &err);
    ck_assert_uint_eq(n, 1);
    for (int i = 0; i < 100 && count_own_cgroups() != 0; i++)
        sleep_ms(20);
    ck_assert_int_eq(count_own_cgroups(), 0);
    sleep_ms(200); /* the reaper is waiting again: see destroy_while_a_session_expires */
}
END_TEST

START_TEST(max_sessions_is_enforced)
{
    make_worker(2);
    struct cq_session_info a = start("a");
    start("b");
    struct cq_session_info info;
    struct cq_error err = {0};
    struct cq_session_params p = {.name = "c"};
    ck_assert_int_eq(cq_worker_start_session(w, &p, &info, &err), -1);
    ck_assert_msg(err.code == CQ_ELIMIT, "error %s: %s", cq_error_code_name(err.code), err.msg);
    /* A stopped session frees its slot. */
    ck_assert_int_eq(cq_worker_stop_session(w, a.session_id, &info, &err), 0);
    start("c");
    ck_assert_int_eq(cq_worker_start_session(w, &p, &info, &err), -1);
    ck_assert_int_eq(err.code, CQ_ELIMIT);
}
END_TEST

struct stop_race {
    const char *id;
    struct cq_result result;
    uint64_t returned_ms;
};

static void *race_call(void *arg)
{
    struct stop_race *s = arg;
    struct cq_invoke_args a = {.code =
                                   "import time\nopen('started', 'w').close()\ntime.sleep(120)\n"};
    cq_worker_invoke(w, s->id, "executeCode", &a, NULL, NULL, &s->result);
    s->returned_ms = cq_now_ms();
    return NULL;
}

START_TEST(stop_while_code_runs)
{
    make_worker(0);
    struct cq_session_info info = start("busy");
    struct stop_race race = {.id = info.session_id};
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, race_call, &race), 0);
    /* The cell has started once its file exists (commands run beside a cell). */
    uint64_t t0 = cq_now_ms();
    for (;;) {
        struct cq_result r;
        command_in(info.session_id, "test -e started", 0, &r);
        int rc = r.exit_code;
        cq_result_free(&r);
        if (rc == 0)
            break;
        ck_assert_msg(cq_now_ms() - t0 < 30000, "the cell never started");
        sleep_ms(50);
    }

    t0 = cq_now_ms();
    struct cq_session_info stopped;
    struct cq_error err = {0};
    ck_assert_int_eq(cq_worker_stop_session(w, info.session_id, &stopped, &err), 0);
    uint64_t stop_ms = cq_now_ms() - t0;
    ck_assert_int_eq(stopped.status, CQ_SESSION_TERMINATED);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    ck_assert_msg(stop_ms < 10000, "stop took %llu ms", (unsigned long long)stop_ms);
    ck_assert_msg(race.returned_ms - t0 < 10000, "the call returned %llu ms after the stop",
                  (unsigned long long)(race.returned_ms - t0));
    ck_assert_msg(race.result.is_error, "the interrupted call is not an error: %s",
                  cq_unit_result_text(&race.result));
    cq_result_free(&race.result);
    ck_assert_int_eq(count_own_cgroups(), 0);
}
END_TEST

START_TEST(bad_calls)
{
    make_worker(0);
    struct cq_session_info info = start("s");
    const char *id = info.session_id;
    struct cq_result r;
    struct cq_invoke_args none = {0};

    cq_worker_invoke(w, "no-such-session", "executeCommand", &none, NULL, NULL, &r);
    ck_assert(r.is_error);
    ck_assert_int_eq(r.error_code, CQ_RESULT_NOT_FOUND);
    ck_assert_ptr_nonnull(r.error_message);
    ck_assert_uint_ge(r.n_blocks, 1);
    cq_result_free(&r);
    cq_worker_invoke(w, NULL, "listFiles", &none, NULL, NULL, &r);
    ck_assert_int_eq(r.error_code, CQ_RESULT_NOT_FOUND);
    cq_result_free(&r);

    static const char *const bad_tools[] = {"execute_code", "", "ExecuteCode", "deleteSession"};
    for (size_t i = 0; i < sizeof(bad_tools) / sizeof(bad_tools[0]); i++) {
        cq_worker_invoke(w, id, bad_tools[i], &none, NULL, NULL, &r);
        ck_assert_msg(r.is_error && r.error_code == CQ_RESULT_INVALID_ARGUMENT, "tool '%s': %s",
                      bad_tools[i], cq_result_error_name(r.error_code));
        cq_result_free(&r);
    }
    cq_worker_invoke(w, id, NULL, &none, NULL, NULL, &r);
    ck_assert_int_eq(r.error_code, CQ_RESULT_INVALID_ARGUMENT);
    cq_result_free(&r);

    size_t n_tools = 0;
    while (cq_tool_names[n_tools] != NULL)
        n_tools++;
    ck_assert_uint_eq(n_tools, 9);

    /* Arguments each tool needs, and values it refuses. */
    static const struct {
        const char *tool;
        struct cq_invoke_args args;
        enum cq_result_error code;
    } cases[] = {
        {"executeCode", {.code = NULL}, CQ_RESULT_INVALID_ARGUMENT},
        {"executeCode", {.code = "1", .language = "ruby"}, CQ_RESULT_INVALID_ARGUMENT},
        {"executeCode", {.code = "1", .runtime = "deno"}, CQ_RESULT_INVALID_ARGUMENT},
        {"executeCode", {.code = "1", .runtime = "nodejs"}, CQ_RESULT_INVALID_ARGUMENT},
        {"executeCode",
         {.code = "1", .language = "javascript", .runtime = "python"},
         CQ_RESULT_INVALID_ARGUMENT},
        {"executeCode", {.code = "1", .timeout_s = -1}, CQ_RESULT_INVALID_ARGUMENT},
        {"executeCommand", {.command = NULL}, CQ_RESULT_INVALID_ARGUMENT},
        {"executeCommand", {.command = ""}, CQ_RESULT_INVALID_ARGUMENT},
        {"executeCommand", {.command = "true", .timeout_s = 1e9}, CQ_RESULT_INVALID_ARGUMENT},
        {"startCommandExecution", {.command = NULL}, CQ_RESULT_INVALID_ARGUMENT},
        {"getTask", {.task_id = NULL}, CQ_RESULT_INVALID_ARGUMENT},
        {"getTask", {.task_id = "nope"}, CQ_RESULT_NOT_FOUND},
        {"stopTask", {.task_id = ""}, CQ_RESULT_INVALID_ARGUMENT},
        {"stopTask", {.task_id = "nope"}, CQ_RESULT_NOT_FOUND},
        {"readFiles", {.n_paths = 0}, CQ_RESULT_INVALID_ARGUMENT},
        {"writeFiles", {.n_content = 0}, CQ_RESULT_INVALID_ARGUMENT},
        {"removeFiles", {.n_paths = 0}, CQ_RESULT_INVALID_ARGUMENT},
        {"listFiles", {.directory_path = "../x"}, CQ_RESULT_INVALID_ARGUMENT},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cq_worker_invoke(w, id, cases[i].tool, &cases[i].args, NULL, NULL, &r);
        ck_assert_msg(r.is_error && r.error_code == cases[i].code, "case %zu (%s): %s, %s", i,
                      cases[i].tool, cq_result_error_name(r.error_code), cq_unit_result_text(&r));
        cq_result_free(&r);
    }
    /* None of that needed a kernel: the session has none. */
    struct cq_session *s = cq_session_acquire(w, id);
    ck_assert_ptr_nonnull(s);
    ck_assert_ptr_null(s->kernels[0].kernel);
    ck_assert_ptr_null(s->kernels[1].kernel);
    cq_session_release(w, s);
}
END_TEST

START_TEST(worker_needs_its_runtimes)
{
    struct cq_worker_config cfg;
    cq_worker_config_init(&cfg);
    cfg.runtimes_dir = "/nonexistent/runtimes";
    struct cq_error err = {0};
    struct cq_worker *bad = NULL;
    ck_assert_int_eq(cq_worker_create(&cfg, &bad, &err), -1);
    ck_assert_ptr_null(bad);
    ck_assert_msg(strstr(err.msg, "/nonexistent/runtimes") != NULL, "error: %s", err.msg);
    /* The environment variable is explicit too: wrong is an error, not a fallback. */
    setenv("CODEQ_RUNTIMES_DIR", "/nonexistent/env-runtimes", 1);
    cfg.runtimes_dir = NULL;
    ck_assert_int_eq(cq_worker_create(&cfg, &bad, &err), -1);
    ck_assert_msg(strstr(err.msg, "/nonexistent/env-runtimes") != NULL, "error: %s", err.msg);
    /* Invalid default limits are refused up front. */
    setenv("CODEQ_RUNTIMES_DIR", CQ_SOURCE_DIR "/runtimes", 1);
    cfg.limits.workspace_bytes = 1;
    ck_assert_int_eq(cq_worker_create(&cfg, &bad, &err), -1);
    ck_assert_int_eq(count_own_cgroups(), 0);
}
END_TEST

/* --- executeCode --------------------------------------------------------------------------- */

START_TEST(python_values_streams_and_errors)
{
    make_worker(0);
    struct cq_session_info info = start("py");
    const char *id = info.session_id;
    struct cq_result r;
    code_in(id, NULL, "x = 6 * 7\nx", 0, &r);
    ck_assert_msg(!r.is_error, "failed: %s", cq_unit_result_text(&r));
    ck_assert(r.has_structured);
    ck_assert_str_eq(r.value_text, "42");
    ck_assert_str_eq(r.stdout_text, "");
    ck_assert_str_eq(r.stderr_text, "");
    ck_assert_int_eq(r.exit_code, 0);
    ck_assert_int_eq(r.error_code, CQ_RESULT_OK);
    ck_assert_msg(r.n_blocks == 1 && strcmp(r.blocks[0].text, "42") == 0, "content: %s",
                  cq_unit_result_text(&r));
    ck_assert(r.execution_time_ms > 0);
    cq_result_free(&r);

    code_in(id, "python", "import sys\nprint('out')\nprint('err', file=sys.stderr)", 0, &r);
    ck_assert(!r.is_error);
    ck_assert_str_eq(r.stdout_text, "out\n");
    ck_assert_str_eq(r.stderr_text, "err\n");
    ck_assert_ptr_null(r.value_text);
    cq_result_free(&r);

    /* An exception: the code failed, not the service. */
    code_in(id, "python", "print('before')\n1 / 0", 0, &r);
    ck_assert(r.is_error);
    ck_assert_int_eq(r.error_code, CQ_RESULT_OK);
    ck_assert_int_ne(r.exit_code, 0);
    ck_assert_str_eq(r.stdout_text, "before\n");
    ck_assert_msg(strstr(r.stderr_text, "ZeroDivisionError") != NULL, "stderr: %s", r.stderr_text);
    cq_result_free(&r);

    /* State survives, and the runtime may be named. */
    struct cq_invoke_args a = {.code = "x + 1", .language = "python", .runtime = "python"};
    cq_worker_invoke(w, id, "executeCode", &a, NULL, NULL, &r);
    ck_assert_str_eq(r.value_text, "43");
    cq_result_free(&r);
    /* Until the context is cleared. */
    struct cq_invoke_args c = {.code = "x", .clear_context = true};
    cq_worker_invoke(w, id, "executeCode", &c, NULL, NULL, &r);
    ck_assert(r.is_error);
    ck_assert_ptr_nonnull(strstr(r.stderr_text, "NameError"));
    cq_result_free(&r);
    /* Output that is not UTF-8 comes back as valid text. */
    code_in(id, "python", "import os\nos.write(1, b'ok\\xff\\x00!')\nNone", 0, &r);
    ck_assert(!r.is_error);
    ck_assert(cq_utf8_valid((const uint8_t *)r.stdout_text, strlen(r.stdout_text)));
    ck_assert_str_eq(r.stdout_text, "ok\xef\xbf\xbd\xef\xbf\xbd!");
    cq_result_free(&r);
}
END_TEST

START_TEST(execute_code_reports_its_cpu_time)
{
    /* executeCode runs in a long-lived kernel: its CPU time is the sandbox cgroup's
     * (cpuacct on cgroup v1, in a hierarchy of its own on this project's machines),
     * measured around the call. */
    make_worker(0);
    struct cq_session_info info = start("cpu");
    struct cq_result r;
    code_in(info.session_id, "python",
            "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3:\n"
            "    pass\n'done'",
            60, &r);
    ck_assert_msg(!r.is_error, "failed: %s", cq_unit_result_text(&r));
    ck_assert_str_eq(r.value_text, "'done'");
    /* The kernel itself used 300 ms of CPU (its own clock, not the wall's); the
     * sandbox's cgroup counts at least that. */
    ck_assert_msg(r.cpu_ms >= 290, "cpu_ms %llu for 300 ms of CPU", (unsigned long long)r.cpu_ms);
    cq_result_free(&r);
}
END_TEST

START_TEST(javascript_and_typescript)
{
    make_worker(0);
    struct cq_session_info info = start("js");
    const char *id = info.session_id;
    expect_value(id, "javascript", "const a = 20; a + 22", "42");
    expect_value(id, "javascript", "a * 2", "40"); /* state kept */
    expect_value(id, "typescript", "const n: number = 41;\nn + 1", "42");
    expect_value(id, "typescript", "interface P { x: number }\nconst p: P = { x: 3 };\np.x", "3");
    struct cq_result r;
    code_in(id, "javascript", "console.log('hi'); console.error('oops'); undefined", 0, &r);
    ck_assert(!r.is_error);
    ck_assert_str_eq(r.stdout_text, "hi\n");
    ck_assert_str_eq(r.stderr_text, "oops\n");
    cq_result_free(&r);
    code_in(id, "javascript", "throw new Error('boom')", 0, &r);
    ck_assert(r.is_error);
    ck_assert_int_eq(r.error_code, CQ_RESULT_OK);
    ck_assert_msg(strstr(r.stderr_text, "boom") != NULL, "stderr: %s", r.stderr_text);
    cq_result_free(&r);
    struct cq_invoke_args a = {
        .code = "await Promise.resolve(7)", .language = "javascript", .runtime = "nodejs"};
    cq_worker_invoke(w, id, "executeCode", &a, NULL, NULL, &r);
    ck_assert_msg(!r.is_error && r.value_text && strcmp(r.value_text, "7") == 0, "await: %s",
                  cq_unit_result_text(&r));
    cq_result_free(&r);
    /* Python in the same session is a separate kernel. */
    expect_value(id, "python", "'a' in globals()", "False");
}
END_TEST

START_TEST(timeout_interrupts_and_keeps_variables)
{
    make_worker(0);
    struct cq_session_info info = start("t");
    const char *id = info.session_id;
    expect_value(id, "python", "y = 5\ny", "5");
    struct cq_result r;
    uint64_t t0 = cq_now_ms();
    code_in(id, "python", "import time\nprint('going', flush=True)\ntime.sleep(60)", 1, &r);
    uint64_t took = cq_now_ms() - t0;
    ck_assert(r.is_error);
    ck_assert_int_eq(r.error_code, CQ_RESULT_TIMED_OUT);
    ck_assert_msg(took >= 900 && took < 5000, "a 1 s timeout took %llu ms",
                  (unsigned long long)took);
    ck_assert_str_eq(r.stdout_text, "going\n");
    ck_assert_msg(strstr(r.stderr_text, "variables are kept") != NULL, "stderr: %s", r.stderr_text);
    ck_assert_msg(strstr(r.stderr_text, "KeyboardInterrupt") != NULL, "stderr: %s", r.stderr_text);
    cq_result_free(&r);
    expect_value(id, "python", "y", "5");
}
END_TEST

START_TEST(timeout_restarts_a_kernel_that_ignores_the_interrupt)
{
    make_worker(0);
    struct cq_session_info info = start("t");
    const char *id = info.session_id;
    expect_value(id, "python", "z = 1\nz", "1");
    struct cq_result r;
    uint64_t t0 = cq_now_ms();
    code_in(id, "python",
            "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
            "time.sleep(60)",
            1, &r);
    uint64_t took = cq_now_ms() - t0;
    ck_assert(r.is_error);
    ck_assert_int_eq(r.error_code, CQ_RESULT_TIMED_OUT);
    ck_assert_msg(took >= 1000 + CQ_WORKER_INTERRUPT_GRACE_MS - 200 && took < 8000, "took %llu ms",
                  (unsigned long long)took);
    ck_assert_msg(strstr(r.stderr_text, "restarted") != NULL, "stderr: %s", r.stderr_text);
    cq_result_free(&r);
    /* A fresh interpreter: the variable is gone, the kernel works. */
    code_in(id, "python", "z", 0, &r);
    ck_assert(r.is_error);
    ck_assert_msg(strstr(r.stderr_text, "NameError") != NULL, "stderr: %s", r.stderr_text);
    cq_result_free(&r);
    expect_value(id, "python", "1 + 1", "2");
}
END_TEST

/* Fires a cancellation after a delay, from another thread (as an MCP server does when
 * notifications/cancelled arrives). */
struct delayed_cancel {
    struct cq_cancel *cancel;
    long after_ms;
};

static void *cancel_later(void *arg)
{
    struct delayed_cancel *d = arg;
    sleep_ms(d->after_ms);
    cq_cancel_fire(d->cancel);
    return NULL;
}

/* Runs a tool with a cancellation fired after_ms later; returns how long it took. */
static uint64_t invoke_cancelled(const char *id, const char *tool, struct cq_invoke_args *a,
                                 long after_ms, struct cq_result *r)
{
    struct cq_cancel *cancel;
    struct cq_error err;
    ck_assert_msg(cq_cancel_create(&cancel, &err) == 0, "%s", err.msg);
    struct delayed_cancel d = {cancel, after_ms};
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, cancel_later, &d), 0);
    uint64_t t0 = cq_now_ms();
    cq_worker_invoke_cancellable(w, id, tool, a, NULL, NULL, cancel, r);
    uint64_t took = cq_now_ms() - t0;
    pthread_join(t, NULL);
    cq_cancel_free(cancel);
    return took;
}

START_TEST(cancel_interrupts_a_cell_and_keeps_variables)
{
    make_worker(0);
    struct cq_session_info info = start("t");
    const char *id = info.session_id;
    expect_value(id, "python", "y = 7\ny", "7");
    struct cq_result r;
    struct cq_invoke_args a = {.code = "print('going', flush=True)\nwhile True:\n    pass",
                               .timeout_s = 120};
    uint64_t took = invoke_cancelled(id, "executeCode", &a, 1000, &r);
    ck_assert(r.is_error);
    ck_assert_msg(took >= 900 && took < 5000, "cancelled after 1 s, took %llu ms",
                  (unsigned long long)took);
    ck_assert_msg(r.error_message != NULL && strstr(r.error_message, "cancelled") != NULL, "%s",
                  r.error_message ? r.error_message : "(none)");
    ck_assert_str_eq(r.stdout_text, "going\n");
    ck_assert_msg(strstr(r.stderr_text, "cancelled; the cell was interrupted (variables are kept)"),
                  "stderr: %s", r.stderr_text);
    cq_result_free(&r);
    expect_value(id, "python", "y", "7");
}
END_TEST

START_TEST(cancel_restarts_a_kernel_that_ignores_the_interrupt)
{
    make_worker(0);
    struct cq_session_info info = start("t");
    const char *id = info.session_id;
    struct cq_result r;
    struct cq_invoke_args a = {.code = "import signal, time\n"
                                       "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                                       "time.sleep(60)",
                               .timeout_s = 120};
    uint64_t took = invoke_cancelled(id, "executeCode", &a, 500, &r);
    ck_assert(r.is_error);
    ck_assert_msg(took >= 500 + CQ_WORKER_INTERRUPT_GRACE_MS - 200 && took < 8000, "took %llu ms",
                  (unsigned long long)took);
    ck_assert_msg(strstr(r.stderr_text, "cancelled; the Python kernel did not stop"), "stderr: %s",
                  r.stderr_text);
    cq_result_free(&r);
    expect_value(id, "python", "1 + 1", "2");
}
END_TEST

START_TEST(cancel_kills_a_command)
{
    make_worker(0);
    struct cq_session_info info = start("t");
    const char *id = info.session_id;
    struct cq_result r;
    struct cq_invoke_args a = {.command = "echo go; sleep 100; echo never", .timeout_s = 120};
    uint64_t took = invoke_cancelled(id, "executeCommand", &a, 500, &r);
    ck_assert(r.is_error);
    ck_assert_msg(took < 5000, "took %llu ms", (unsigned long long)took);
    ck_assert_str_eq(r.stdout_text, "go\n");
    ck_assert_msg(strstr(r.stderr_text, "codeq: cancelled; the command"), "stderr: %s",
                  r.stderr_text);
    ck_assert_msg(r.error_message != NULL && strstr(r.error_message, "cancelled"), "%s",
                  r.error_message ? r.error_message : "(none)");
    cq_result_free(&r);
    command_in(id, "echo after", 30, &r);
    ck_assert_str_eq(r.stdout_text, "after\n");
    cq_result_free(&r);
}
END_TEST

START_TEST(cancel_before_start_runs_nothing)
{
    make_worker(0);
    struct cq_session_info info = start("t");
    const char *id = info.session_id;
    struct cq_cancel *cancel;
    struct cq_error err;
    ck_assert_int_eq(cq_cancel_create(&cancel, &err), 0);
    cq_cancel_fire(cancel);
    cq_cancel_fire(cancel); /* twice is fine */
    struct cq_result r;
    struct cq_invoke_args code = {.code = "ran = True"};
    cq_worker_invoke_cancellable(w, id, "executeCode", &code, NULL, NULL, cancel, &r);
    ck_assert(r.is_error);
    cq_result_free(&r);
    struct cq_invoke_args cmd = {.command = "touch ran.txt"};
    cq_worker_invoke_cancellable(w, id, "executeCommand", &cmd, NULL, NULL, cancel, &r);
    ck_assert(r.is_error);
    cq_result_free(&r);
    cq_cancel_free(cancel);
    expect_value(id, "python", "'ran' in globals()", "False");
    command_in(id, "test -e ran.txt && echo yes || echo no", 30, &r);
    ck_assert_str_eq(r.stdout_text, "no\n");
    cq_result_free(&r);
}
END_TEST

struct chunks {
    char out[65536], err[65536];
    size_t out_len, err_len;
    uint64_t first_out_ms;
    int n_out;
};

static void collect(void *ctx, int stream, const char *data, size_t len)
{
    struct chunks *c = ctx;
    ck_assert_msg(stream == 1 || stream == 2, "stream %d", stream);
    char *buf = stream == 1 ? c->out : c->err;
    size_t *used = stream == 1 ? &c->out_len : &c->err_len;
    ck_assert_msg(*used + len < sizeof(c->out), "too much output");
    memcpy(buf + *used, data, len);
    *used += len;
    buf[*used] = '\0';
    if (stream == 1 && c->n_out++ == 0)
        c->first_out_ms = cq_now_ms();
}

START_TEST(streaming_delivers_output_while_the_call_runs)
{
    make_worker(0);
    struct cq_session_info info = start("stream");
    const char *id = info.session_id;
    expect_value(id, "python", "1", "1"); /* the kernel is up: timings are the cell's */

    static struct chunks c;
    memset(&c, 0, sizeof(c));
    struct cq_invoke_args a = {
        .code = "import sys, time\nfor i in range(4):\n    print(f'line {i}', flush=True)\n"
                "    time.sleep(0.3)\nprint('to err', file=sys.stderr)\n'done'"};
    struct cq_result r;
    cq_worker_invoke(w, id, "executeCode", &a, collect, &c, &r);
    uint64_t returned = cq_now_ms();
    ck_assert_msg(!r.is_error, "failed: %s", cq_unit_result_text(&r));
    ck_assert_msg(c.n_out >= 1, "no stdout chunk");
    ck_assert_msg(returned - c.first_out_ms >= 700,
                  "the first chunk came only %llu ms before the call returned",
                  (unsigned long long)(returned - c.first_out_ms));
    ck_assert_str_eq(c.out, r.stdout_text);
    ck_assert_str_eq(c.out, "line 0\nline 1\nline 2\nline 3\n");
    ck_assert_str_eq(c.err, r.stderr_text);
    ck_assert_str_eq(r.value_text, "'done'");
    cq_result_free(&r);
}
END_TEST

START_TEST(streaming_delivers_command_output_while_it_runs)
{
    make_worker(0);
    struct cq_session_info info = start("stream");
    const char *id = info.session_id;
    static struct chunks c;
    memset(&c, 0, sizeof(c));
    struct cq_result r;
    uint64_t returned;
    struct cq_invoke_args cmd = {.command = "echo a; sleep 1; echo b; echo e >&2"};
    cq_worker_invoke(w, id, "executeCommand", &cmd, collect, &c, &r);
    returned = cq_now_ms();
    ck_assert_msg(returned - c.first_out_ms >= 700, "command output was not streamed");
    ck_assert_str_eq(c.out, r.stdout_text);
    ck_assert_str_eq(c.out, "a\nb\n");
    ck_assert_str_eq(c.err, "e\n");
    cq_result_free(&r);
}
END_TEST

START_TEST(output_limit_applies_to_results_and_streams)
{
    struct cq_worker_config cfg;
    cq_worker_config_init(&cfg);
    cfg.output_limit_bytes = 1000;
    make_worker_cfg(&cfg);
    struct cq_session_info info = start("limit");
    static struct chunks c;
    memset(&c, 0, sizeof(c));
    struct cq_invoke_args a = {.code = "print('x' * 4999 + 'Z')"};
    struct cq_result r;
    cq_worker_invoke(w, info.session_id, "executeCode", &a, collect, &c, &r);
    /* The first 500 bytes and the last 500 ("...xZ\n"), the 4001 between noted. */
    ck_assert_msg(strncmp(r.stdout_text, "xxxxxxxxxx", 10) == 0, "stdout: %.40s", r.stdout_text);
    ck_assert_msg(strstr(r.stdout_text, "\n[codeq: output too long: 4001 bytes (0 lines) cut "
                                        "here; the first 500 and the last 500 bytes are shown]\n"),
                  "no cut note: ...%s", r.stdout_text + 490);
    ck_assert_msg(strcmp(r.stdout_text + strlen(r.stdout_text) - 3, "xZ\n") == 0,
                  "the end was lost: ...%s", r.stdout_text + strlen(r.stdout_text) - 20);
    /* Live: the first 1000 bytes, then, at the end, a note and the kept end. */
    ck_assert_msg(c.out_len <= 1000 + 500 + 100, "%zu bytes streamed (limit 1000)", c.out_len);
    ck_assert_msg(strstr(c.out, "bytes cut here; the last 500 follow]") != NULL &&
                      strcmp(c.out + c.out_len - 3, "xZ\n") == 0,
                  "streamed: ...%s", c.out + (c.out_len > 200 ? c.out_len - 200 : 0));
    cq_result_free(&r);
    command_in(info.session_id, "head -c 1500 /dev/zero | tr '\\0' y", 0, &r);
    ck_assert_int_eq(r.exit_code, 0);
    ck_assert_msg(strstr(r.stdout_text, "[codeq: output too long: 500 bytes (0 lines) cut here"),
                  "a command printed 1500 bytes; its note says: %s", r.stdout_text + 500);
    cq_result_free(&r);
}
END_TEST

struct parallel_call {
    const char *id, *language, *code;
    struct cq_result result;
};

static void *parallel_main(void *arg)
{
    struct parallel_call *c = arg;
    struct cq_invoke_args a = {.code = c->code, .language = c->language};
    cq_worker_invoke(w, c->id, "executeCode", &a, NULL, NULL, &c->result);
    return NULL;
}

/* Calls on different sessions, and on one session's two kernels, run side by side. */
START_TEST(calls_run_in_parallel)
{
    make_worker(0);
    struct cq_session_info a = start("a"), b = start("b");
    expect_value(a.session_id, "python", "import time\n1", "1"); /* kernels up first */
    expect_value(b.session_id, "python", "import time\n1", "1");
    expect_value(a.session_id, "javascript", "1", "1");
    struct parallel_call calls[3] = {
        {.id = a.session_id, .language = "python", .code = "time.sleep(1.5)\n'a'"},
        {.id = b.session_id, .language = "python", .code = "time.sleep(1.5)\n'b'"},
        {.id = a.session_id,
         .language = "javascript",
         .code = "await new Promise(r => setTimeout(r, 1500)); 'js'"},
    };
    pthread_t t[3];
    uint64_t t0 = cq_now_ms();
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(pthread_create(&t[i], NULL, parallel_main, &calls[i]), 0);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(pthread_join(t[i], NULL), 0);
    uint64_t took = cq_now_ms() - t0;
    static const char *const want[] = {"'a'", "'b'", "'js'"};
    for (int i = 0; i < 3; i++) {
        ck_assert_msg(calls[i].result.value_text != NULL &&
                          strcmp(calls[i].result.value_text, want[i]) == 0,
                      "call %d: %s", i, cq_unit_result_text(&calls[i].result));
        cq_result_free(&calls[i].result);
    }
    ck_assert_msg(took < 3000, "three 1.5 s calls took %llu ms: not in parallel",
                  (unsigned long long)took);
}
END_TEST

/* A call never outlives its session: the default timeout (300 s) is cut to the
 * session's remaining time to live. */
START_TEST(calls_end_with_the_session)
{
    make_worker(0);
    struct cq_session_params p = {.timeout_s = 3};
    struct cq_session_info info = start_with(&p);
    struct cq_result r;
    uint64_t t0 = cq_now_ms();
    code_in(info.session_id, "python", "import time\ntime.sleep(60)", 0, &r);
    uint64_t took = cq_now_ms() - t0;
    ck_assert(r.is_error);
    ck_assert_msg(took < 8000, "a call in a 3 s session took %llu ms", (unsigned long long)took);
    cq_result_free(&r);
    /* Let the expiry finish before the teardown (see destroy_while_a_session_expires). */
    for (int i = 0; i < 500 && count_own_cgroups() != 0; i++)
        sleep_ms(10);
    sleep_ms(200);
}
END_TEST

START_TEST(python_figures_become_images)
{
    make_worker(0);
    struct cq_session_info info = start("plot");
    struct cq_result r;
    code_in(info.session_id, "python",
            "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.title('t')\nNone", 120, &r);
    ck_assert_msg(!r.is_error, "failed: %s", cq_unit_result_text(&r));
    size_t images = 0;
    for (size_t i = 0; i < r.n_blocks; i++) {
        if (r.blocks[i].type != CQ_BLOCK_IMAGE)
            continue;
        images++;
        ck_assert_str_eq(r.blocks[i].mime_type, "image/png");
        ck_assert_uint_gt(r.blocks[i].data_len, 100);
        ck_assert_mem_eq(r.blocks[i].data, "\x89PNG\r\n\x1a\n", 8);
    }
    ck_assert_uint_eq(images, 1);
    cq_result_free(&r);
    /* Figures are closed after the cell: the next one has none. */
    code_in(info.session_id, "python", "1", 0, &r);
    for (size_t i = 0; i < r.n_blocks; i++)
        ck_assert_int_ne(r.blocks[i].type, CQ_BLOCK_IMAGE);
    cq_result_free(&r);
}
END_TEST

START_TEST(a_kernel_that_dies_is_replaced)
{
    make_worker(0);
    struct cq_session_params p = {.name = "mortal"};
    p.limits.memory_bytes = 160ULL << 20;
    struct cq_session_info info = start_with(&p);
    const char *id = info.session_id;
    expect_value(id, "python", "v = 1\nv", "1");
    struct cq_result r;
    code_in(id, "python", "import os\nprint('bye', flush=True)\nos._exit(3)", 0, &r);
    ck_assert(r.is_error);
    ck_assert_str_eq(r.stdout_text, "bye\n");
    ck_assert_msg(strstr(r.stderr_text, "exited with status 3") != NULL &&
                      strstr(r.stderr_text, "restarted") != NULL,
                  "stderr: %s", r.stderr_text);
    cq_result_free(&r);
    code_in(id, "python", "v", 0, &r);
    ck_assert_msg(r.is_error && strstr(r.stderr_text, "NameError"), "state survived a restart");
    cq_result_free(&r);

    /* Killed by the memory limit: said so. */
    code_in(id, "python", "x = b'\\x01' * (1 << 30)", 0, &r);
    ck_assert(r.is_error);
    ck_assert_msg(strstr(r.stderr_text, "OOM") != NULL || strstr(r.stderr_text, "MemoryError"),
                  "stderr: %s", r.stderr_text);
    cq_result_free(&r);
    expect_value(id, "python", "2 + 2", "4");
    /* The JavaScript kernel dies and comes back the same way. */
    /* (process.exit() in a cell ends the cell, not the kernel: reallyExit is below it.) */
    code_in(id, "javascript", "process.reallyExit(5)", 0, &r);
    ck_assert(r.is_error);
    ck_assert_msg(strstr(r.stderr_text, "exited with status 5") != NULL, "stderr: %s",
                  r.stderr_text);
    cq_result_free(&r);
    expect_value(id, "javascript", "6 * 7", "42");
}
END_TEST

/* A command's streams have a limit each: much output on one must not cost the other
 * its (short) output, nor make the truncation note wrong. */
START_TEST(command_streams_are_limited_separately)
{
    struct cq_worker_config cfg;
    cq_worker_config_init(&cfg);
    cfg.output_limit_bytes = 1000;
    make_worker_cfg(&cfg);
    struct cq_session_info info = start("limit");
    struct cq_result r;
    command_in(info.session_id,
               "head -c 5000 /dev/zero | tr '\\0' y; echo 'the error message' >&2; exit 2", 0, &r);
    ck_assert_int_eq(r.exit_code, 2);
    ck_assert_msg(strncmp(r.stdout_text, "yyyyyyyyyy", 10) == 0, "stdout: %.20s", r.stdout_text);
    ck_assert_msg(strstr(r.stdout_text, "[codeq: output too long: 4000 bytes (0 lines) cut here"),
                  "a command printed 5000 bytes; its note says: %s", r.stdout_text + 500);
    ck_assert_msg(strcmp(r.stderr_text, "the error message\n") == 0,
                  "after 5000 bytes of stdout (limit 1000 per stream), stderr was '%s'",
                  r.stderr_text);
    cq_result_free(&r);
}
END_TEST

/* --- commands and tasks ------------------------------------------------------------------- */

START_TEST(commands_have_exit_codes_and_separate_streams)
{
    make_worker(0);
    struct cq_session_info info = start("cmd");
    const char *id = info.session_id;
    struct cq_result r;
    command_in(id, "echo out; echo err >&2; exit 3", 0, &r);
    ck_assert(r.has_structured);
    ck_assert_int_eq(r.exit_code, 3);
    ck_assert(r.is_error);
    ck_assert_int_eq(r.error_code, CQ_RESULT_OK);
    ck_assert_str_eq(r.stdout_text, "out\n");
    ck_assert_str_eq(r.stderr_text, "err\n");
    cq_result_free(&r);

    command_in(id, "pwd; id -u", 0, &r);
    ck_assert(!r.is_error);
    ck_assert_int_eq(r.exit_code, 0);
    ck_assert_str_eq(r.stdout_text, "/workspace\n1000\n");
    cq_result_free(&r);

    command_in(id, "true", 0, &r);
    ck_assert(!r.is_error);
    ck_assert_msg(r.n_blocks == 1 && strstr(r.blocks[0].text, "exit code 0"), "content: %s",
                  cq_unit_result_text(&r));
    cq_result_free(&r);

    command_in(id, "kill -9 $$", 0, &r);
    ck_assert_int_eq(r.exit_code, 137);
    cq_result_free(&r);

    uint64_t t0 = cq_now_ms();
    command_in(id, "echo begun; sleep 30", 0.5, &r);
    ck_assert_msg(cq_now_ms() - t0 < 5000, "a 0.5 s timeout took %llu ms",
                  (unsigned long long)(cq_now_ms() - t0));
    ck_assert(r.is_error);
    ck_assert_int_eq(r.error_code, CQ_RESULT_TIMED_OUT);
    ck_assert_str_eq(r.stdout_text, "begun\n");
    ck_assert_ptr_nonnull(strstr(r.stderr_text, "timed out"));
    cq_result_free(&r);

    /* Commands, kernels and file tools share the workspace. */
    struct cq_file_content fc = {
        .path = "shared.txt", .data = (const uint8_t *)"via files", .len = 9};
    struct cq_invoke_args wa = {.content = &fc, .n_content = 1};
    cq_worker_invoke(w, id, "writeFiles", &wa, NULL, NULL, &r);
    ck_assert(!r.is_error);
    cq_result_free(&r);
    command_in(id, "cat shared.txt && printf %s ' and shell' >> shared.txt", 0, &r);
    ck_assert_str_eq(r.stdout_text, "via files");
    cq_result_free(&r);
    expect_value(id, "python", "open('shared.txt').read()", "'via files and shell'");
    const char *paths[] = {"shared.txt"};
    struct cq_invoke_args ra = {.paths = paths, .n_paths = 1};
    cq_worker_invoke(w, id, "readFiles", &ra, NULL, NULL, &r);
    ck_assert(!r.is_error);
    ck_assert_str_eq(r.blocks[0].text, "file: shared.txt (19 bytes, text/plain)");
    ck_assert_str_eq(r.blocks[1].text, "via files and shell");
    cq_result_free(&r);
}
END_TEST

static void task_call(const char *id, const char *tool, const char *task_id, const char *command,
                      struct cq_result *r)
{
    struct cq_invoke_args a = {.task_id = task_id, .command = command};
    cq_worker_invoke(w, id, tool, &a, NULL, NULL, r);
}

/* Polls getTask until the status is not working (or stdout contains want_out). */
static void poll_task(const char *id, const char *task_id, const char *want_out,
                      struct cq_result *r)
{
    uint64_t t0 = cq_now_ms();
    for (;;) {
        task_call(id, "getTask", task_id, NULL, r);
        ck_assert_msg(r->error_code == CQ_RESULT_OK || r->error_code == CQ_RESULT_TIMED_OUT,
                      "getTask: %s", cq_unit_result_text(r));
        bool done = want_out != NULL ? strstr(r->stdout_text, want_out) != NULL
                                     : r->task_status != CQ_TASK_WORKING;
        if (done)
            return;
        ck_assert_msg(cq_now_ms() - t0 < 20000, "task %s: still %s after 20 s", task_id,
                      cq_task_status_name(r->task_status));
        cq_result_free(r);
        sleep_ms(50);
    }
}

START_TEST(background_tasks)
{
    make_worker(0);
    struct cq_session_info info = start("tasks");
    const char *id = info.session_id;
    struct cq_result r;

    task_call(id, "startCommandExecution", NULL, "echo begin; sleep 60", &r);
    ck_assert_msg(!r.is_error, "start: %s", cq_unit_result_text(&r));
    ck_assert(r.has_structured);
    ck_assert_ptr_nonnull(r.task_id);
    ck_assert_int_eq(r.task_status, CQ_TASK_WORKING);
    char long_task[64];
    snprintf(long_task, sizeof(long_task), "%s", r.task_id);
    cq_result_free(&r);

    poll_task(id, long_task, "begin\n", &r);
    ck_assert_int_eq(r.task_status, CQ_TASK_WORKING);
    ck_assert_str_eq(r.task_id, long_task);
    ck_assert(!r.is_error);
    cq_result_free(&r);

    task_call(id, "startCommandExecution", NULL, "echo done", &r);
    char ok_task[64];
    snprintf(ok_task, sizeof(ok_task), "%s", r.task_id);
    cq_result_free(&r);
    task_call(id, "startCommandExecution", NULL, "echo bad >&2; exit 4", &r);
    char bad_task[64];
    snprintf(bad_task, sizeof(bad_task), "%s", r.task_id);
    cq_result_free(&r);
    ck_assert_str_ne(ok_task, bad_task);

    poll_task(id, ok_task, NULL, &r);
    ck_assert_int_eq(r.task_status, CQ_TASK_COMPLETED);
    ck_assert_int_eq(r.exit_code, 0);
    ck_assert(!r.is_error);
    ck_assert_str_eq(r.stdout_text, "done\n");
    cq_result_free(&r);
    poll_task(id, bad_task, NULL, &r);
    ck_assert_int_eq(r.task_status, CQ_TASK_FAILED);
    ck_assert_int_eq(r.exit_code, 4);
    ck_assert(r.is_error);
    ck_assert_str_eq(r.stderr_text, "bad\n");
    cq_result_free(&r);

    uint64_t t0 = cq_now_ms();
    task_call(id, "stopTask", long_task, NULL, &r);
    ck_assert_msg(cq_now_ms() - t0 < 5000, "stopTask took %llu ms",
                  (unsigned long long)(cq_now_ms() - t0));
    ck_assert_int_eq(r.task_status, CQ_TASK_CANCELED);
    cq_result_free(&r);
    task_call(id, "getTask", long_task, NULL, &r);
    ck_assert_int_eq(r.task_status, CQ_TASK_CANCELED);
    ck_assert_str_eq(r.stdout_text, "begin\n");
    cq_result_free(&r);
    /* Stopping a finished task changes nothing. */
    task_call(id, "stopTask", ok_task, NULL, &r);
    ck_assert_int_eq(r.task_status, CQ_TASK_COMPLETED);
    cq_result_free(&r);

    /* A task's own timeout: killed, failed, TIMED_OUT. */
    struct cq_invoke_args ta = {.command = "echo t; sleep 30", .timeout_s = 0.5};
    cq_worker_invoke(w, id, "startCommandExecution", &ta, NULL, NULL, &r);
    char timed[64];
    snprintf(timed, sizeof(timed), "%s", r.task_id);
    cq_result_free(&r);
    poll_task(id, timed, NULL, &r);
    ck_assert_int_eq(r.task_status, CQ_TASK_FAILED);
    ck_assert_int_eq(r.error_code, CQ_RESULT_TIMED_OUT);
    ck_assert_int_eq(r.exit_code, 137);
    ck_assert_ptr_nonnull(strstr(r.stderr_text, "timed out"));
    cq_result_free(&r);

    /* Tasks belong to their session. */
    struct cq_session_info other = start("other");
    task_call(other.session_id, "getTask", ok_task, NULL, &r);
    ck_assert_int_eq(r.error_code, CQ_RESULT_NOT_FOUND);
    cq_result_free(&r);

    /* A session stopped with a task running stops promptly. */
    task_call(id, "startCommandExecution", NULL, "sleep 60", &r);
    cq_result_free(&r);
    t0 = cq_now_ms();
    struct cq_error err = {0};
    ck_assert_int_eq(cq_worker_stop_session(w, id, &info, &err), 0);
    ck_assert_uint_lt(cq_now_ms() - t0, 5000);
}
END_TEST

START_TEST(session_environment)
{
    make_worker(0);
    static const char *const env[] = {"FOO=bar baz", "EMPTY=", "EQ=a=b", NULL};
    struct cq_session_params p = {.name = "env", .env = env};
    struct cq_session_info info = start_with(&p);
    const char *id = info.session_id;
    struct cq_result r;
    command_in(id, "printf '%s|%s|%s' \"$FOO\" \"${EMPTY-unset}\" \"$EQ\"", 0, &r);
    ck_assert_str_eq(r.stdout_text, "bar baz||a=b");
    cq_result_free(&r);
    task_call(id, "startCommandExecution", NULL, "printf %s \"$FOO\"", &r);
    char task[64];
    snprintf(task, sizeof(task), "%s", r.task_id);
    cq_result_free(&r);
    poll_task(id, task, NULL, &r);
    ck_assert_str_eq(r.stdout_text, "bar baz");
    cq_result_free(&r);
    expect_value(id, "python", "import os\n(os.environ['FOO'], os.environ['EQ'])",
                 "('bar baz', 'a=b')");
    expect_value(id, "javascript", "process.env.FOO", "'bar baz'");

    /* Another session does not see them. */
    struct cq_session_info other = start("plain");
    command_in(other.session_id, "printf %s \"${FOO-unset}\"", 0, &r);
    ck_assert_str_eq(r.stdout_text, "unset");
    cq_result_free(&r);
}
END_TEST

/* --- the warm pool ------------------------------------------------------------------------- */

static size_t pool_size(void)
{
    pthread_mutex_lock(&w->pool.lock);
    size_t n = w->pool.modes[CQ_NETWORK_NONE].n;
    pthread_mutex_unlock(&w->pool.lock);
    return n;
}

static void wait_for_pool(size_t want)
{
    uint64_t t0 = cq_now_ms();
    while (pool_size() < want) {
        ck_assert_msg(cq_now_ms() - t0 < 45000, "the warm pool did not fill in 45 s");
        sleep_ms(50);
    }
}

static void make_pooled_worker(unsigned pool)
{
    struct cq_worker_config cfg;
    cq_worker_config_init(&cfg);
    cfg.warm_pool_size = pool;
    make_worker_cfg(&cfg);
}

START_TEST(warm_pool_sessions_start_preloaded)
{
    make_pooled_worker(1);
    wait_for_pool(1);
    static const char *const env[] = {"POOLED=yes", NULL};
    struct cq_session_params p = {.env = env};
    struct cq_session_info info = start_with(&p);
    ck_assert_uint_eq(pool_size(), 0);
    /* The first call finds numpy already imported, and the session's environment. */
    expect_value(info.session_id, "python", "import sys\n'numpy' in sys.modules", "True");
    expect_value(info.session_id, "python", "import os\nos.environ.get('POOLED')", "'yes'");
    struct cq_result r;
    command_in(info.session_id, "printf %s \"$POOLED\"", 0, &r);
    ck_assert_str_eq(r.stdout_text, "yes");
    cq_result_free(&r);

    /* The pool refills; a session with its own limits does not take from it. */
    wait_for_pool(1);
    struct cq_session_params own = {0};
    own.limits.memory_bytes = 256ULL << 20;
    struct cq_session_info cold = start_with(&own);
    ck_assert_uint_eq(pool_size(), 1);
    expect_value(cold.session_id, "python", "import sys\n'numpy' in sys.modules", "False");
}
END_TEST

/* Pools whose sandboxes cannot be made (PUBLIC and ALLOWLIST, their egress namespace
 * missing) do not hold up the other one: the NONE pool still fills. */
START_TEST(a_failing_pool_does_not_starve_the_other)
{
    struct cq_worker_config cfg;
    cq_worker_config_init(&cfg);
    cfg.warm_pool_size = 1;
    cfg.warm_pool_public = 2;
    cfg.warm_pool_allowlist = 2;
    cfg.netpolicy.modes = CQ_NET_MODE_BIT(CQ_NETWORK_NONE) | CQ_NET_MODE_BIT(CQ_NETWORK_PUBLIC) |
                          CQ_NET_MODE_BIT(CQ_NETWORK_ALLOWLIST);
    snprintf(cfg.egress_netns, sizeof(cfg.egress_netns), "/run/netns/cq-test-no-such-netns");
    make_worker_cfg(&cfg);
    ck_assert_uint_eq(w->pool.modes[CQ_NETWORK_PUBLIC].size, 2);
    ck_assert_uint_eq(w->pool.modes[CQ_NETWORK_ALLOWLIST].size, 2);
    wait_for_pool(1);
    pthread_mutex_lock(&w->pool.lock);
    size_t n_public = w->pool.modes[CQ_NETWORK_PUBLIC].n,
           n_allowlist = w->pool.modes[CQ_NETWORK_ALLOWLIST].n;
    pthread_mutex_unlock(&w->pool.lock);
    ck_assert_uint_eq(n_public, 0);
    ck_assert_uint_eq(n_allowlist, 0);
}
END_TEST

/* A mode's pool only where the policy lets sessions ask for the mode; 1 by default. */
START_TEST(pools_follow_the_policy)
{
    struct cq_worker_config cfg;
    cq_worker_config_init(&cfg);
    cfg.warm_pool_size = 0;
    cfg.warm_pool_public = 3; /* PUBLIC is not allowed: no pool whatever this says */
    cfg.netpolicy.modes = CQ_NET_MODE_BIT(CQ_NETWORK_NONE) | CQ_NET_MODE_BIT(CQ_NETWORK_ALLOWLIST);
    snprintf(cfg.egress_netns, sizeof(cfg.egress_netns), "/run/netns/cq-test-no-such-netns");
    make_worker_cfg(&cfg);
    ck_assert_uint_eq(w->pool.modes[CQ_NETWORK_NONE].size, 0);
    ck_assert_uint_eq(w->pool.modes[CQ_NETWORK_PUBLIC].size, 0);
    ck_assert_uint_eq(w->pool.modes[CQ_NETWORK_ALLOWLIST].size, 1);
}
END_TEST

/* A pooled sandbox whose init died (killed from outside: OOM killer, an operator) is
 * discarded; the session then starts cold and must work. */
START_TEST(warm_pool_discards_dead_sandboxes)
{
    make_pooled_worker(1);
    wait_for_pool(1);
    pthread_mutex_lock(&w->pool.lock);
    cq_sandbox_kill(w->pool.modes[CQ_NETWORK_NONE].items[0].sandbox);
    pthread_mutex_unlock(&w->pool.lock);
    struct cq_session_info info = start("after-a-dead-pool-item");
    struct cq_result r;
    code_in(info.session_id, "python", "1 + 1", 10, &r);
    ck_assert_msg(!r.is_error && r.value_text != NULL && strcmp(r.value_text, "2") == 0,
                  "the first Python call of a session started after a dead pool item: %s",
                  cq_unit_result_text(&r));
    cq_result_free(&r);
}
END_TEST

/* --- cleanup ------------------------------------------------------------------------------ */

START_TEST(destroy_leaves_nothing_behind)
{
    make_pooled_worker(1);
    struct cq_session_info a = start("a");
    struct cq_session_info b = start("b");
    expect_value(a.session_id, "python", "1", "1");
    expect_value(b.session_id, "javascript", "1", "1");
    struct cq_result r;
    task_call(a.session_id, "startCommandExecution", NULL, "sleep 300 & sleep 300", &r);
    ck_assert(!r.is_error);
    cq_result_free(&r);
    wait_for_pool(1);
    ck_assert_int_gt(sandbox_children(), 0);

    pid_t pids[512];
    size_t n = own_sandbox_tasks(pids, 512);
    ck_assert_uint_ge(n, 3 * 2); /* at least init and a kernel in each of 3 sandboxes */

    uint64_t t0 = cq_now_ms();
    cq_worker_destroy(w);
    w = NULL;
    uint64_t took = cq_now_ms() - t0;
    ck_assert_msg(took < 15000, "destroy took %llu ms", (unsigned long long)took);
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(kill(pids[i], 0) == -1 && errno == ESRCH, "sandbox process %d survived",
                      (int)pids[i]);
    ck_assert_int_eq(count_own_cgroups(), 0);
    ck_assert_int_eq(sandbox_children(), 0);
    /* No child left, not even a zombie. */
    ck_assert_int_eq(waitpid(-1, NULL, WNOHANG | __WALL), -1);
    ck_assert_int_eq(errno, ECHILD);
}
END_TEST

/* cq_worker_destroy wakes the reaper to stop it. If the reaper is busy expiring a
 * session at that moment (it drops the lock while it frees the sandbox), the wake-up
 * must not be lost: destroy must not wait for the reaper's next scheduled round
 * (up to 60 s later). */
START_TEST(destroy_while_a_session_expires)
{
    make_worker(0);
    struct cq_session_params p = {.timeout_s = 1};
    struct cq_session_info info = start_with(&p);
    /* A kernel and a task make the expiry take a little while. */
    expect_value(info.session_id, "python", "1", "1");
    struct cq_result r;
    task_call(info.session_id, "startCommandExecution", NULL, "sleep 100 & sleep 100", &r);
    cq_result_free(&r);
    uint64_t t0 = cq_now_ms();
    while (status_of(info.session_id) == CQ_SESSION_READY) {
        ck_assert_msg(cq_now_ms() - t0 < 10000, "the session did not expire");
        struct timespec ts = {0, 200 * 1000};
        nanosleep(&ts, NULL);
    }
    /* The reaper is now freeing the expired session. */
    t0 = cq_now_ms();
    cq_worker_destroy(w);
    w = NULL;
    uint64_t took = cq_now_ms() - t0;
    ck_assert_msg(took < 5000, "cq_worker_destroy took %llu ms", (unsigned long long)took);
}
END_TEST

static Suite *worker_suite(void)
{
    Suite *s = suite_create("worker");
    TCase *tc = tcase_create("sessions");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, session_lifecycle);
    tcase_add_test(tc, start_session_refusals);
    tcase_add_test(tc, list_sessions_pages_newest_first);
    tcase_add_test(tc, list_sessions_max_zero);
    tcase_add_test(tc, session_expires_after_its_ttl);
    tcase_add_test(tc, max_sessions_is_enforced);
    tcase_add_test(tc, stop_while_code_runs);
    tcase_add_test(tc, bad_calls);
    tcase_add_test(tc, worker_needs_its_runtimes);
    suite_add_tcase(s, tc);

    tc = tcase_create("code");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, python_values_streams_and_errors);
    tcase_add_test(tc, execute_code_reports_its_cpu_time);
    tcase_add_test(tc, javascript_and_typescript);
    tcase_add_test(tc, timeout_interrupts_and_keeps_variables);
    tcase_add_test(tc, timeout_restarts_a_kernel_that_ignores_the_interrupt);
    tcase_add_test(tc, cancel_interrupts_a_cell_and_keeps_variables);
    tcase_add_test(tc, cancel_restarts_a_kernel_that_ignores_the_interrupt);
    tcase_add_test(tc, cancel_kills_a_command);
    tcase_add_test(tc, cancel_before_start_runs_nothing);
    tcase_add_test(tc, streaming_delivers_output_while_the_call_runs);
    tcase_add_test(tc, streaming_delivers_command_output_while_it_runs);
    tcase_add_test(tc, output_limit_applies_to_results_and_streams);
    tcase_add_test(tc, calls_run_in_parallel);
    tcase_add_test(tc, calls_end_with_the_session);
    tcase_add_test(tc, python_figures_become_images);
    tcase_add_test(tc, a_kernel_that_dies_is_replaced);
    suite_add_tcase(s, tc);

    tc = tcase_create("commands");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, commands_have_exit_codes_and_separate_streams);
    tcase_add_test(tc, command_streams_are_limited_separately);
    tcase_add_test(tc, background_tasks);
    tcase_add_test(tc, session_environment);
    suite_add_tcase(s, tc);

    tc = tcase_create("pool");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, warm_pool_sessions_start_preloaded);
    tcase_add_test(tc, a_failing_pool_does_not_starve_the_other);
    tcase_add_test(tc, destroy_leaves_nothing_behind);
    suite_add_tcase(s, tc);

    /* Its own case with a short timeout: with a dangling kernel pointer the first call
     * may crash or hang. */
    tc = tcase_create("pool_dead_item");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 25);
    tcase_add_test(tc, warm_pool_discards_dead_sandboxes);
    tcase_add_test(tc, pools_follow_the_policy);
    suite_add_tcase(s, tc);

    /* Its own case: when it fails it would otherwise wait a minute. */
    tc = tcase_create("shutdown");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 20);
    tcase_add_test(tc, destroy_while_a_session_expires);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    if (geteuid() != 0) {
        fprintf(stderr, "test_worker needs root\n");
        return EXIT_FAILURE;
    }
    return cq_unit_run(worker_suite(), true);
}
