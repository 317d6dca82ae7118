/* tests/unit/test_worker.c - the worker (worker/worker.h) with real sessions: their
 * lifecycle, listing, expiry and limits; bad calls; the warm pool; and that nothing is
 * left on the host when the worker is destroyed. executeCode, timeouts, cancellation
 * and streaming: test_worker_code.c; executeCommand, background tasks and the session
 * environment: test_worker_commands.c.
 *
 * Needs root, python3 (with numpy, pandas, matplotlib) and node on the host, and the
 * runtimes of the source tree (CODEQ_RUNTIMES_DIR is pointed at them); the fixture is
 * worker_fixture.h. */
#define _GNU_SOURCE
#include "worker_fixture.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

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
