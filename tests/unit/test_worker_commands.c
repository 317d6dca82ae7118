/* tests/unit/test_worker_commands.c - executeCommand through the worker
 * (worker/worker.h) in real sessions: exit codes and separate streams, each with its
 * own output limit; background tasks (startCommandExecution, getTask, stopTask); the
 * session's environment.
 *
 * Needs root, python3 (with numpy, pandas, matplotlib) and node on the host, and the
 * runtimes of the source tree (CODEQ_RUNTIMES_DIR is pointed at them); the fixture is
 * worker_fixture.h. */
#define _GNU_SOURCE
#include "worker_fixture.h"

#include <unistd.h>

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

static Suite *worker_commands_suite(void)
{
    Suite *s = suite_create("worker_commands");
    TCase *tc = tcase_create("commands");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, commands_have_exit_codes_and_separate_streams);
    tcase_add_test(tc, command_streams_are_limited_separately);
    tcase_add_test(tc, background_tasks);
    tcase_add_test(tc, session_environment);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    if (geteuid() != 0) {
        fprintf(stderr, "test_worker_commands needs root\n");
        return EXIT_FAILURE;
    }
    return cq_unit_run(worker_commands_suite(), true);
}
