/* tests/unit/test_worker_code.c - executeCode through the worker (worker/worker.h) in
 * real sessions: Python values, streams, errors and figures, JavaScript and
 * TypeScript, CPU time; and what every call has: timeouts, cancellation (of a cell and
 * of a command), streaming while it runs, output limits, calls in parallel, calls ended
 * with their session, and a dead kernel replaced.
 *
 * Needs root, python3 (with numpy, pandas, matplotlib) and node on the host, and the
 * runtimes of the source tree (CODEQ_RUNTIMES_DIR is pointed at them); the fixture is
 * worker_fixture.h. */
#define _GNU_SOURCE
#include "worker_fixture.h"

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

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

static Suite *worker_code_suite(void)
{
    Suite *s = suite_create("worker_code");
    TCase *tc = tcase_create("code");
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
    return s;
}

int main(void)
{
    if (geteuid() != 0) {
        fprintf(stderr, "test_worker_code needs root\n");
        return EXIT_FAILURE;
    }
    return cq_unit_run(worker_code_suite(), true);
}
