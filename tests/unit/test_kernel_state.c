/* tests/unit/test_kernel_state.c - a session's variables saved by its kernel and
 * restored into a fresh kernel (cq_worker_checkpoint_kernel, cq_worker_restore_kernel:
 * what a drained fleet worker does), and the worker's guard against a kernel that lies
 * about its state: a line over the cap, bytes that are not base64, a state over the
 * limit, a refusal.
 *
 * Needs root, python3 with dill, numpy and pandas, and node, as test_worker does. */
#define _GNU_SOURCE
#include "worker/worker.h"
#include "result_text.h"
#include "unit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef CQ_SOURCE_DIR
#error "CQ_SOURCE_DIR must name the source tree (for its runtimes/)"
#endif

static struct cq_worker *w;

static void setup(void)
{
    if (getenv("CODEQ_SANDBOX_INIT") == NULL)
        setenv("CODEQ_SANDBOX_INIT", CQ_BUILD_DIR "/bin/codeq-sandbox-init", 0);
    setenv("CODEQ_RUNTIMES_DIR", CQ_SOURCE_DIR "/runtimes", 1);
    struct cq_worker_config cfg;
    cq_worker_config_init(&cfg);
    cfg.warm_pool_size = 0;
    struct cq_error err = {0};
    ck_assert_msg(cq_worker_create(&cfg, &w, &err) == 0, "worker: %s", err.msg);
}

static void teardown(void)
{
    cq_worker_destroy(w);
    w = NULL;
}

static void start(char id[CQ_SESSION_ID_MAX + 1])
{
    struct cq_session_params p = {0};
    struct cq_session_info info;
    struct cq_error err = {0};
    ck_assert_msg(cq_worker_start_session(w, &p, &info, &err) == 0, "start: %s", err.msg);
    snprintf(id, CQ_SESSION_ID_MAX + 1, "%s", info.session_id);
}

/* Runs code; fails the test unless it succeeds, with this value when value is given. */
static void run(const char *id, const char *language, const char *code, const char *value)
{
    struct cq_invoke_args a = {.code = code, .language = language, .timeout_s = 60};
    struct cq_result r;
    cq_worker_invoke(w, id, "executeCode", &a, NULL, NULL, &r);
    ck_assert_msg(!r.is_error, "%s `%s` failed: %s", language, code, cq_unit_result_text(&r));
    if (value != NULL)
        ck_assert_msg(r.value_text != NULL && strcmp(r.value_text, value) == 0,
                      "`%s` gave %s, not %s (%s)", code, r.value_text ? r.value_text : "(none)",
                      value, cq_unit_result_text(&r));
    cq_result_free(&r);
}

static void checkpoint(const char *id, bool javascript, uint64_t max, uint8_t **data, size_t *len)
{
    struct cq_error err = {0};
    ck_assert_msg(cq_worker_checkpoint_kernel(w, id, javascript, max, data, len, &err) == 0,
                  "checkpoint: %s", err.msg);
    ck_assert_ptr_nonnull(*data);
    ck_assert_uint_le(*len, max);
}

START_TEST(python_variables_move_to_a_fresh_kernel)
{
    char a[CQ_SESSION_ID_MAX + 1], b[CQ_SESSION_ID_MAX + 1];
    start(a);
    start(b);
    run(a, "python",
        "import numpy as np\nimport pandas as pd\nx = 41\nd = {'k': [1, 2]}\n"
        "df = pd.DataFrame({'v': [1, 2, 3]})\ndef f():\n    return x + 1\n"
        "fh = open('t.txt', 'w')\ngen = (i for i in [])\nbig = b'y' * (2 << 20)\n",
        NULL);
    uint8_t *state = NULL;
    size_t len = 0;
    checkpoint(a, false, 1 << 20, &state, &len);
    char *summary = NULL;
    struct cq_error err = {0};
    ck_assert_msg(cq_worker_restore_kernel(w, b, false, state, len, &summary, &err) == 0,
                  "restore: %s", err.msg);
    ck_assert_msg(strstr(summary, "restored") && strstr(summary, "np (numpy)") &&
                      strstr(summary, "fh (an open file") && strstr(summary, "gen (TypeError") &&
                      strstr(summary, "big (too large to move"),
                  "summary: %s", summary);
    /* The function's globals are the new kernel's: it sees x, and x as it is now. */
    run(b, "python", "(f(), d, int(df.v.sum()), int(np.arange(3).sum()), 'fh' in globals())",
        "(42, {'k': [1, 2]}, 6, 3, False)");
    run(b, "python", "x = 1\nf()", "2");
    free(summary);
    free(state);
}
END_TEST

START_TEST(javascript_plain_data_moves_functions_do_not)
{
    char a[CQ_SESSION_ID_MAX + 1], b[CQ_SESSION_ID_MAX + 1];
    start(a);
    start(b);
    run(a, "javascript",
        "const o = {k: [1, 2], m: new Map([[1, 'one']])};\nlet n = 5;\nfunction g() {}\n"
        "class K {}\nconst inst = new K();\n",
        NULL);
    uint8_t *state = NULL;
    size_t len = 0;
    checkpoint(a, true, 1 << 20, &state, &len);
    char *summary = NULL;
    struct cq_error err = {0};
    ck_assert_msg(cq_worker_restore_kernel(w, b, true, state, len, &summary, &err) == 0,
                  "restore: %s", err.msg);
    ck_assert_msg(strstr(summary, "g (a function)") && strstr(summary, "K (a class)") &&
                      strstr(summary, "inst (an instance of K"),
                  "summary: %s", summary);
    run(b, "javascript", "JSON.stringify([o.k, o.m.get(1), n, typeof g])",
        "'[[1,2],\"one\",5,\"undefined\"]'");
    free(summary);
    free(state);
}
END_TEST

START_TEST(no_kernel_no_state)
{
    char a[CQ_SESSION_ID_MAX + 1];
    start(a);
    uint8_t *state = (uint8_t *)"x";
    size_t len = 1;
    struct cq_error err = {0};
    ck_assert_int_eq(cq_worker_checkpoint_kernel(w, a, true, 1 << 20, &state, &len, &err), 0);
    ck_assert_ptr_null(state);
    ck_assert_uint_eq(len, 0);
}
END_TEST

/* A cell replaces the kernel's checkpoint with what it likes: the worker refuses it and
 * the session's next call gets a fresh kernel. */
static void forged(const char *answer, int expected_code)
{
    char a[CQ_SESSION_ID_MAX + 1];
    start(a);
    char code[1024];
    snprintf(code, sizeof(code),
             "import gc, base64\n"
             "k = next(o for o in gc.get_objects() if type(o).__name__ == 'Kernel')\n"
             "k.move = lambda request: {'id': request['id'], %s}\n",
             answer);
    run(a, "python", code, NULL);
    uint8_t *state = NULL;
    size_t len = 0;
    struct cq_error err = {0};
    ck_assert_int_eq(cq_worker_checkpoint_kernel(w, a, false, 100000, &state, &len, &err), -1);
    ck_assert_ptr_null(state);
    ck_assert_msg(err.code == expected_code, "code %d: %s", err.code, err.msg);
    run(a, "python", "'k' in globals()", "False"); /* a fresh kernel */
}

START_TEST(a_line_over_the_cap_is_refused)
{
    /* base64 of 100000 bytes is 133336: the line cap is that and 64 KiB. */
    forged("'ok': True, 'state': 'A' * (1 << 20)", CQ_EINTERNAL);
}
END_TEST

START_TEST(a_state_that_is_not_base64_is_refused)
{
    forged("'ok': True, 'state': '!not base64!'", CQ_EPROTO);
}
END_TEST

START_TEST(a_state_over_the_limit_is_refused)
{
    forged("'ok': True, 'state': base64.b64encode(b'x' * 120000).decode()", CQ_ELIMIT);
}
END_TEST

START_TEST(a_refusal_is_an_error)
{
    forged("'ok': False, 'value': 'no\\nway'", CQ_EINTERNAL);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("kernel_state");
    TCase *tc = tcase_create("move");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, python_variables_move_to_a_fresh_kernel);
    tcase_add_test(tc, javascript_plain_data_moves_functions_do_not);
    tcase_add_test(tc, no_kernel_no_state);
    tcase_add_test(tc, a_line_over_the_cap_is_refused);
    tcase_add_test(tc, a_state_that_is_not_base64_is_refused);
    tcase_add_test(tc, a_state_over_the_limit_is_refused);
    tcase_add_test(tc, a_refusal_is_an_error);
    suite_add_tcase(s, tc);
    return cq_unit_run(s, true);
}
