/* tests/unit/worker_fixture.h - the worker core's tests' fixture and call helpers:
 * a worker per test (the static w, made by the test, destroyed by teardown, which
 * checks that no sandbox cgroup is left), sessions, and calls into them. Header-only,
 * as unit.h is: each unit test is one source file. Shared by test_worker.c,
 * test_worker_code.c and test_worker_commands.c.
 *
 * Every test runs in its own process (forced fork mode), so the sandbox cgroups of a
 * test are exactly those named "<that process's pid>-<n>", and its sandbox processes its
 * descendants. */
#ifndef CQ_TESTS_WORKER_FIXTURE_H
#define CQ_TESTS_WORKER_FIXTURE_H

#include "worker/session.h" /* the pool's state, for test_worker.c to wait for it */
#include "common/clock.h"
#include "host_cgroups.h"
#include "result_text.h"
#include "unit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef CQ_SOURCE_DIR
#error "CQ_SOURCE_DIR must name the source tree (for its runtimes/)"
#endif

static struct cq_worker *w;

static inline void setup(void)
{
    if (getenv("CODEQ_SANDBOX_INIT") == NULL)
        setenv("CODEQ_SANDBOX_INIT", CQ_BUILD_DIR "/bin/codeq-sandbox-init", 0);
    setenv("CODEQ_RUNTIMES_DIR", CQ_SOURCE_DIR "/runtimes", 1);
    w = NULL;
}

static inline void teardown(void)
{
    cq_worker_destroy(w);
    w = NULL;
    ck_assert_msg(count_own_cgroups() == 0, "sandbox cgroups left after cq_worker_destroy");
}

static inline void make_worker_cfg(const struct cq_worker_config *cfg)
{
    struct cq_error err = {0};
    ck_assert_msg(cq_worker_create(cfg, &w, &err) == 0, "worker: %s", err.msg);
}

static inline void make_worker(unsigned max_sessions)
{
    struct cq_worker_config cfg;
    cq_worker_config_init(&cfg);
    if (max_sessions != 0)
        cfg.max_sessions = max_sessions;
    make_worker_cfg(&cfg);
}

static inline struct cq_session_info start_with(const struct cq_session_params *p)
{
    struct cq_session_info info;
    struct cq_error err = {0};
    ck_assert_msg(cq_worker_start_session(w, p, &info, &err) == 0, "start session: %s", err.msg);
    return info;
}

static inline struct cq_session_info start(const char *name)
{
    struct cq_session_params p = {.name = name};
    return start_with(&p);
}

static inline void code_in(const char *id, const char *language, const char *code, double timeout_s,
                           struct cq_result *r)
{
    struct cq_invoke_args a = {.code = code, .language = language, .timeout_s = timeout_s};
    cq_worker_invoke(w, id, "executeCode", &a, NULL, NULL, r);
}

/* Runs code and fails the test unless it succeeds with exactly this value. */
static inline void expect_value(const char *id, const char *language, const char *code,
                                const char *value)
{
    struct cq_result r;
    code_in(id, language, code, 60, &r);
    ck_assert_msg(!r.is_error, "%s `%s` failed: %s", language, code, cq_unit_result_text(&r));
    ck_assert_msg(r.value_text != NULL && strcmp(r.value_text, value) == 0,
                  "%s `%s`: value %s, want %s (%s)", language, code,
                  r.value_text ? r.value_text : "(none)", value, cq_unit_result_text(&r));
    cq_result_free(&r);
}

static inline void command_in(const char *id, const char *command, double timeout_s,
                              struct cq_result *r)
{
    struct cq_invoke_args a = {.command = command, .timeout_s = timeout_s};
    cq_worker_invoke(w, id, "executeCommand", &a, NULL, NULL, r);
}

static inline void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static inline enum cq_session_status status_of(const char *id)
{
    struct cq_session_info info;
    struct cq_error err = {0};
    ck_assert_msg(cq_worker_get_session(w, id, &info, &err) == 0, "get %s: %s", id, err.msg);
    return info.status;
}

static inline void task_call(const char *id, const char *tool, const char *task_id,
                             const char *command, struct cq_result *r)
{
    struct cq_invoke_args a = {.task_id = task_id, .command = command};
    cq_worker_invoke(w, id, tool, &a, NULL, NULL, r);
}

#endif
