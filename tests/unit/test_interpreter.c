/* tests/unit/test_interpreter.c - code interpreters in the worker (worker/worker.h,
 * worker/interpreter.c, worker/pool.c) with real sandboxes: a layer the test writes
 * (a Python package) bound into the sessions of an interpreter, its environment under
 * the session's own, its limits (memory, disk, CPU), its network mode against the
 * policy, lookup and the resolve callback, delete and replace, and its warm pool with
 * the preload modules imported.
 *
 * Needs root and python3 (with numpy, pandas, matplotlib) on the host, like
 * test_worker; every test runs in its own process. */
#define _GNU_SOURCE
#include "worker/session.h" /* the pools' state, to wait for them to fill */
#include "common/clock.h"
#include "host_cgroups.h"
#include "result_text.h"
#include "unit.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifndef CQ_SOURCE_DIR
#error "CQ_SOURCE_DIR must name the source tree (for its runtimes/)"
#endif

#define LAYER_IN_SANDBOX "/opt/codeq/layers/cqtest" /* where runtime/ binds layers */

static struct cq_worker *w;
static char layer[PATH_MAX];

static void write_file(const char *rel, const char *text)
{
    char path[PATH_MAX + 100];
    snprintf(path, sizeof(path), "%s/%s", layer, rel);
    FILE *f = fopen(path, "we");
    ck_assert_msg(f != NULL, "write %s: %s", path, strerror(errno));
    fputs(text, f);
    fclose(f);
    chmod(path, 0644);
}

static void make_dir(const char *rel)
{
    char path[PATH_MAX + 100];
    snprintf(path, sizeof(path), "%s/%s", layer, rel);
    ck_assert_msg(mkdir(path, 0755) == 0, "mkdir %s: %s", path, strerror(errno));
    chmod(path, 0755);
}

/* A runtime layer as the store would build one: a Python package below python/, and
 * one that fails to import (a preload of it must not kill the kernel). */
static void make_layer(void)
{
    snprintf(layer, sizeof(layer), "/tmp/cq-test-layer-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(layer));
    chmod(layer, 0755); /* the sandbox's user reads it */
    make_dir("python");
    make_dir("python/cqlayer_mod");
    write_file("python/cqlayer_mod/__init__.py", "VALUE = 42\n");
    make_dir("python/cqlayer_broken");
    write_file("python/cqlayer_broken/__init__.py", "raise RuntimeError('broken on purpose')\n");
}

static void remove_layer(void)
{
    static const char *const files[] = {"python/cqlayer_mod/__init__.py",
                                        "python/cqlayer_broken/__init__.py",
                                        "python/cqlayer_mod/__pycache__",
                                        "python/cqlayer_broken/__pycache__",
                                        "python/cqlayer_mod",
                                        "python/cqlayer_broken",
                                        "python",
                                        ""};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        char path[PATH_MAX + 100];
        snprintf(path, sizeof(path), "%s/%s", layer, files[i]);
        if (unlink(path) < 0)
            rmdir(path);
    }
}

static void setup(void)
{
    if (getenv("CODEQ_SANDBOX_INIT") == NULL)
        setenv("CODEQ_SANDBOX_INIT", CQ_BUILD_DIR "/bin/codeq-sandbox-init", 0);
    setenv("CODEQ_RUNTIMES_DIR", CQ_SOURCE_DIR "/runtimes", 1);
    w = NULL;
    make_layer();
}

static void teardown(void)
{
    cq_worker_destroy(w);
    w = NULL;
    remove_layer();
    ck_assert_msg(count_own_cgroups() == 0, "sandbox cgroups left after cq_worker_destroy");
}

static void make_worker_cfg(const struct cq_worker_config *cfg)
{
    struct cq_error err = {0};
    ck_assert_msg(cq_worker_create(cfg, &w, &err) == 0, "worker: %s", err.msg);
}

static void make_worker(void)
{
    struct cq_worker_config cfg;
    cq_worker_config_init(&cfg);
    make_worker_cfg(&cfg);
}

static const char *const layer_env[] = {"PYTHONPATH=" LAYER_IN_SANDBOX "/python",
                                        "CQLAYER_ENV=interp", "SHARED=interp", NULL};

/* The interpreter "cq.test" on the layer, as a front end would give it. */
static struct cq_interpreter test_interp(const char *name)
{
    struct cq_interpreter d = {
        .name = name,
        .layer = {.host_path = layer, .sandbox_path = LAYER_IN_SANDBOX},
        .runtime = "py-test",
        .runtime_digest = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        .env = layer_env,
    };
    return d;
}

static void define(const struct cq_interpreter *d)
{
    struct cq_error err = {0};
    ck_assert_msg(cq_worker_define_interpreter(w, d, &err) == 0, "define %s: %s", d->name, err.msg);
}

static struct cq_session_info start_with(const struct cq_session_params *p)
{
    struct cq_session_info info;
    struct cq_error err = {0};
    ck_assert_msg(cq_worker_start_session(w, p, &info, &err) == 0, "start session: %s", err.msg);
    return info;
}

static struct cq_session_info start_on(const char *interpreter)
{
    struct cq_session_params p = {.interpreter = interpreter};
    return start_with(&p);
}

/* Starting must fail with code; the message must hold want. */
static void refused(const struct cq_session_params *p, int code, const char *want)
{
    struct cq_session_info info;
    struct cq_error err = {0};
    ck_assert_msg(cq_worker_start_session(w, p, &info, &err) < 0, "a session started on %s",
                  p->interpreter);
    ck_assert_msg(err.code == code, "error code %d, want %d: %s", err.code, code, err.msg);
    ck_assert_msg(strstr(err.msg, want) != NULL, "'%s' does not say '%s'", err.msg, want);
}

static void code_in(const char *id, const char *code, struct cq_result *r)
{
    struct cq_invoke_args a = {.code = code, .language = "python", .timeout_s = 60};
    cq_worker_invoke(w, id, "executeCode", &a, NULL, NULL, r);
}

static void expect_value(const char *id, const char *code, const char *value)
{
    struct cq_result r;
    code_in(id, code, &r);
    ck_assert_msg(!r.is_error, "`%s` failed: %s", code, cq_unit_result_text(&r));
    ck_assert_msg(r.value_text != NULL && strcmp(r.value_text, value) == 0,
                  "`%s`: value %s, want %s (%s)", code, r.value_text ? r.value_text : "(none)",
                  value, cq_unit_result_text(&r));
    cq_result_free(&r);
}

static void expect_command(const char *id, const char *command, const char *out)
{
    struct cq_invoke_args a = {.command = command, .timeout_s = 30};
    struct cq_result r;
    cq_worker_invoke(w, id, "executeCommand", &a, NULL, NULL, &r);
    ck_assert_msg(r.stdout_text != NULL && strcmp(r.stdout_text, out) == 0,
                  "`%s`: out '%s', want '%s' (%s)", command, r.stdout_text ? r.stdout_text : "",
                  out, cq_unit_result_text(&r));
    cq_result_free(&r);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* --- layer, environment, what getSession says ------------------------------------------ */

START_TEST(layer_and_environment)
{
    make_worker();
    struct cq_interpreter d = test_interp("cq.test");
    d.session_timeout_s = 1234;
    define(&d);
    ck_assert(cq_worker_has_interpreter(w, "cq.test"));
    ck_assert(cq_worker_has_interpreter(w, CQ_INTERPRETER_DEFAULT));
    ck_assert(!cq_worker_has_interpreter(w, "cq.other"));

    static const char *const own[] = {"SHARED=session", NULL};
    struct cq_session_params p = {.interpreter = "cq.test", .env = own};
    struct cq_session_info info = start_with(&p);
    const char *id = info.session_id;
    expect_value(id, "import cqlayer_mod\ncqlayer_mod.VALUE", "42");
    /* The interpreter's variables, with the session's of the same name on top: in the
     * kernel, in commands. */
    expect_value(id, "import os\n(os.environ['CQLAYER_ENV'], os.environ['SHARED'])",
                 "('interp', 'session')");
    expect_command(id, "printf '%s %s' \"$CQLAYER_ENV\" \"$SHARED\"", "interp session");
    expect_command(id, "test -d " LAYER_IN_SANDBOX "/python/cqlayer_mod && printf bound", "bound");

    ck_assert_str_eq(info.interpreter, "cq.test");
    ck_assert_uint_eq(info.session_timeout_s, 1234); /* its time to live by default */
    struct cq_session_params own_ttl = {.interpreter = "cq.test", .timeout_s = 600};
    ck_assert_uint_eq(start_with(&own_ttl).session_timeout_s, 600);
    ck_assert_str_eq(info.runtime, "py-test");
    ck_assert_str_eq(info.runtime_digest, d.runtime_digest);
    ck_assert_uint_eq(info.memory_bytes, CQ_SANDBOX_DEFAULT_MEMORY);
    ck_assert_uint_eq(info.cpu_millis, (uint32_t)(CQ_SANDBOX_DEFAULT_CPUS * 1000));
    ck_assert_uint_eq(info.disk_bytes, CQ_SANDBOX_DEFAULT_DISK);

    /* codeq.default has neither: no layer, no variables. */
    struct cq_session_info plain = start_on(NULL);
    ck_assert_str_eq(plain.interpreter, CQ_INTERPRETER_DEFAULT);
    ck_assert_str_eq(plain.runtime, "");
    ck_assert_str_eq(plain.runtime_digest, "");
    expect_command(plain.session_id, "printf %s \"${CQLAYER_ENV-unset}\"", "unset");
    struct cq_result r;
    code_in(plain.session_id, "import cqlayer_mod", &r);
    ck_assert_msg(r.is_error, "codeq.default imported the layer's module");
    cq_result_free(&r);
    struct cq_session_info named = start_on(CQ_INTERPRETER_DEFAULT);
    ck_assert_str_eq(named.interpreter, CQ_INTERPRETER_DEFAULT);
}
END_TEST

/* --- limits ---------------------------------------------------------------------------------- */

START_TEST(limits_are_the_sessions_defaults)
{
    make_worker();
    struct cq_interpreter d = test_interp("cq.small");
    d.limits.memory_bytes = 160ULL << 20;
    d.limits.cpus = 0.5;
    d.limits.workspace_bytes = 1ULL << 20;
    define(&d);
    struct cq_session_info info = start_on("cq.small");
    ck_assert_uint_eq(info.memory_bytes, 160ULL << 20);
    ck_assert_uint_eq(info.cpu_millis, 500);
    ck_assert_uint_eq(info.disk_bytes, 1ULL << 20);
    ck_assert_uint_eq(info.pids, w->cfg.limits.pids);

    /* 300 MB fit the worker's default (512M) but not the interpreter's 160M. */
    static const char alloc[] = "b = bytearray(300 << 20)\nlen(b)";
    struct cq_result r;
    code_in(info.session_id, alloc, &r);
    ck_assert_msg(r.is_error, "300 MB allocated under a limit of 160M: %s",
                  cq_unit_result_text(&r));
    cq_result_free(&r);
    struct cq_session_info plain = start_on(NULL);
    expect_value(plain.session_id, alloc, "314572800");

    /* The workspace holds 1M: two files of 700K do not fit, whatever each one's size. */
    static const char disk[] = "import errno\n"
                               "open('a', 'wb').write(b'x' * 700000)\n"
                               "try:\n"
                               "    open('b', 'wb').write(b'x' * 700000)\n"
                               "    r = 'written'\n"
                               "except OSError as e:\n"
                               "    r = errno.errorcode[e.errno]\n"
                               "r";
    struct cq_session_info again = start_on("cq.small");
    expect_value(again.session_id, disk, "'ENOSPC'");
    expect_value(plain.session_id, disk, "'written'");

    /* A session's own limits override the interpreter's, field by field. */
    struct cq_session_params p = {.interpreter = "cq.small"};
    p.limits.cpus = 0.25;
    struct cq_session_info own = start_with(&p);
    ck_assert_uint_eq(own.cpu_millis, 250);
    ck_assert_uint_eq(own.memory_bytes, 160ULL << 20);
}
END_TEST

/* --- network ------------------------------------------------------------------------------- */

START_TEST(network_mode_of_the_interpreter)
{
    make_worker(); /* the policy allows NONE only */
    static const enum cq_network_mode public_mode = CQ_NETWORK_PUBLIC, none = CQ_NETWORK_NONE;
    struct cq_interpreter d = test_interp("cq.public");
    d.network = &public_mode;
    define(&d); /* defining grants nothing: the policy decides at each session */
    struct cq_session_params p = {.interpreter = "cq.public"};
    refused(&p, CQ_EINVALID, "cq.public");

    d = test_interp("cq.offline");
    d.network = &none;
    define(&d);
    struct cq_session_params other = {.interpreter = "cq.offline", .network = &public_mode};
    refused(&other, CQ_EINVALID, "cq.offline");
    static const char *const list[] = {"example.com:443"};
    struct cq_session_params listed = {.interpreter = "cq.offline", .allow = list, .n_allow = 1};
    refused(&listed, CQ_EINVALID, "cq.offline");
    struct cq_session_params same = {.interpreter = "cq.offline", .network = &none};
    struct cq_session_info info = start_with(&same);
    ck_assert_int_eq(info.network_mode, CQ_NETWORK_NONE);
}
END_TEST

/* --- lookup, resolve, delete, replace ------------------------------------------------------- */

START_TEST(unknown_interpreter_is_not_found)
{
    make_worker();
    struct cq_session_params p = {.interpreter = "cq.nope"};
    refused(&p, CQ_ENOTFOUND, "no code interpreter 'cq.nope'");
    struct cq_error err = {0};
    struct cq_interpreter d = test_interp(CQ_INTERPRETER_DEFAULT);
    ck_assert_int_eq(cq_worker_define_interpreter(w, &d, &err), -1);
    ck_assert_int_eq(err.code, CQ_EINVALID);
    ck_assert_int_eq(cq_worker_delete_interpreter(w, CQ_INTERPRETER_DEFAULT, &err), -1);
    ck_assert_int_eq(cq_worker_delete_interpreter(w, "cq.nope", &err), -1);
    ck_assert_int_eq(err.code, CQ_ENOTFOUND);
    d = test_interp("Bad Name");
    ck_assert_int_eq(cq_worker_define_interpreter(w, &d, &err), -1);
    static const char *const bad_preload[] = {"os; import x", NULL};
    d = test_interp("cq.badpreload");
    d.preload = bad_preload;
    ck_assert_int_eq(cq_worker_define_interpreter(w, &d, &err), -1);
    ck_assert_int_eq(err.code, CQ_EINVALID);
    d = test_interp("cq.forever");
    d.session_timeout_s = CQ_WORKER_MAX_SESSION_TTL_S + 1;
    ck_assert_int_eq(cq_worker_define_interpreter(w, &d, &err), -1);
    ck_assert_int_eq(err.code, CQ_EINVALID);
    d = test_interp("cq.overkernels"); /* a layer over codeq's own kernels */
    d.layer.sandbox_path = "/opt/codeq/runtimes";
    ck_assert_int_eq(cq_worker_define_interpreter(w, &d, &err), -1);
    ck_assert_int_eq(err.code, CQ_EINVALID);
}
END_TEST

static int resolved;

static int resolve(void *ctx, struct cq_worker *wk, const char *name, struct cq_error *err)
{
    ck_assert_ptr_eq(ctx, &resolved);
    resolved++;
    if (strcmp(name, "cq.resolved") != 0)
        return cq_error_set(err, CQ_ENOTFOUND, "the store has no '%s'", name);
    static const char *const env[] = {"MARK=resolved", NULL};
    struct cq_interpreter d = {.name = name, .env = env};
    return cq_worker_define_interpreter(wk, &d, err);
}

START_TEST(resolve_defines_on_demand)
{
    struct cq_worker_config cfg;
    cq_worker_config_init(&cfg);
    cfg.resolve_interpreter = resolve;
    cfg.resolve_interpreter_ctx = &resolved;
    make_worker_cfg(&cfg);
    struct cq_session_info info = start_on("cq.resolved");
    ck_assert_int_eq(resolved, 1);
    ck_assert_str_eq(info.interpreter, "cq.resolved");
    expect_command(info.session_id, "printf %s \"$MARK\"", "resolved");
    start_on("cq.resolved"); /* defined now: no second call */
    ck_assert_int_eq(resolved, 1);
    struct cq_session_params p = {.interpreter = "cq.elsewhere"};
    refused(&p, CQ_ENOTFOUND, "the store has no 'cq.elsewhere'");
    ck_assert_int_eq(resolved, 2);
}
END_TEST

START_TEST(delete_and_replace_leave_running_sessions_alone)
{
    make_worker();
    static const char *const env1[] = {"VERSION=1", NULL}, *const env2[] = {"VERSION=2", NULL};
    struct cq_interpreter d = {.name = "cq.changing", .env = env1};
    define(&d);
    struct cq_session_info first = start_on("cq.changing");
    d.env = env2;
    define(&d); /* replaced */
    struct cq_session_info second = start_on("cq.changing");
    expect_command(first.session_id, "printf %s \"$VERSION\"", "1");
    expect_command(second.session_id, "printf %s \"$VERSION\"", "2");

    struct cq_error err = {0};
    ck_assert_msg(cq_worker_delete_interpreter(w, "cq.changing", &err) == 0, "%s", err.msg);
    ck_assert(!cq_worker_has_interpreter(w, "cq.changing"));
    struct cq_session_params p = {.interpreter = "cq.changing"};
    refused(&p, CQ_ENOTFOUND, "cq.changing");
    expect_value(second.session_id, "1 + 1", "2");
    expect_command(second.session_id, "printf %s \"$VERSION\"", "2");
    struct cq_session_info info;
    ck_assert_int_eq(cq_worker_get_session(w, second.session_id, &info, &err), 0);
    ck_assert_str_eq(info.interpreter, "cq.changing");
}
END_TEST

/* --- warm pools ------------------------------------------------------------------------------ */

static size_t interp_pool(const char *name)
{
    size_t n = 0;
    pthread_mutex_lock(&w->pool.lock);
    for (struct cq_interp *ip = w->pool.interps; ip != NULL; ip = ip->next)
        if (strcmp(ip->name, name) == 0)
            n = ip->pool.n;
    pthread_mutex_unlock(&w->pool.lock);
    return n;
}

static void wait_for_interp_pool(const char *name, size_t want)
{
    uint64_t t0 = cq_now_ms();
    while (interp_pool(name) < want) {
        ck_assert_msg(cq_now_ms() - t0 < 60000, "the pool of %s did not fill in 60 s", name);
        sleep_ms(50);
    }
}

START_TEST(warm_pool_preloads_the_interpreters_modules)
{
    make_worker(); /* codeq.default's own pool: none */
    static const char *const preload[] = {"cqlayer_broken", "cqlayer_mod", NULL};
    struct cq_interpreter d = test_interp("cq.warm");
    d.preload = preload;
    d.warm_pool = 1;
    define(&d);
    wait_for_interp_pool("cq.warm", 1);
    static const char *const own[] = {"SHARED=session", NULL};
    struct cq_session_params p = {.interpreter = "cq.warm", .env = own};
    struct cq_session_info info = start_with(&p);
    ck_assert_uint_eq(interp_pool("cq.warm"), 0); /* it came from the pool */
    /* The first cell: the interpreter's module already imported (a broken one before it
     * did not stop the kernel), codeq's usual ones too, and the session's variables. */
    expect_value(info.session_id,
                 "import sys\n('cqlayer_mod' in sys.modules, 'numpy' in sys.modules)",
                 "(True, True)");
    expect_value(info.session_id, "import os\nos.environ['SHARED']", "'session'");

    /* A session with its own limits starts cold: nothing preloaded. */
    wait_for_interp_pool("cq.warm", 1);
    struct cq_session_params cold = {.interpreter = "cq.warm"};
    cold.limits.memory_bytes = 300ULL << 20;
    struct cq_session_info c = start_with(&cold);
    ck_assert_uint_eq(interp_pool("cq.warm"), 1);
    expect_value(c.session_id, "import sys\n'cqlayer_mod' in sys.modules", "False");

    /* Replacing it drains its pool and fills it anew, with the new definition. */
    static const char *const env2[] = {"PYTHONPATH=" LAYER_IN_SANDBOX "/python", "GEN=2", NULL};
    d.env = env2;
    define(&d);
    wait_for_interp_pool("cq.warm", 1);
    struct cq_session_info renewed = start_on("cq.warm");
    ck_assert_uint_eq(interp_pool("cq.warm"), 0);
    expect_value(renewed.session_id,
                 "import os, sys\n(os.environ.get('GEN'), 'cqlayer_mod' in sys.modules)",
                 "('2', True)");
    wait_for_interp_pool("cq.warm", 1);

    /* Deleting destroys its warm sandbox: of four sandboxes (three sessions and the
     * pool's), three are left (each has a cgroup per controller: compare the ratio). */
    int before = count_own_cgroups();
    struct cq_error err = {0};
    ck_assert_int_eq(cq_worker_delete_interpreter(w, "cq.warm", &err), 0);
    int after = count_own_cgroups();
    ck_assert_msg(before > 0 && after * 4 == before * 3, "%d sandbox cgroups, then %d", before,
                  after);
}
END_TEST

/* An interpreter whose sandboxes cannot be made (its layer gone) does not hold up the
 * other pools: codeq.default's and a good interpreter's still fill. */
START_TEST(a_failing_interpreter_pool_does_not_starve_others)
{
    struct cq_worker_config cfg;
    cq_worker_config_init(&cfg);
    cfg.warm_pool_size = 1;
    make_worker_cfg(&cfg);
    struct cq_interpreter bad = test_interp("cq.gone");
    bad.layer.host_path = "/nonexistent/cq-test-layer";
    bad.warm_pool = 4;
    define(&bad);
    struct cq_interpreter good = test_interp("cq.good");
    good.warm_pool = 1;
    define(&good);
    wait_for_interp_pool("cq.good", 1);
    uint64_t t0 = cq_now_ms();
    for (;;) {
        pthread_mutex_lock(&w->pool.lock);
        size_t n = w->pool.modes[CQ_NETWORK_NONE].n;
        pthread_mutex_unlock(&w->pool.lock);
        if (n == 1)
            break;
        ck_assert_msg(cq_now_ms() - t0 < 60000, "codeq.default's pool did not fill");
        sleep_ms(50);
    }
    ck_assert_uint_eq(interp_pool("cq.gone"), 0);
    struct cq_session_params p = {.interpreter = "cq.gone"};
    struct cq_session_info info;
    struct cq_error err = {0};
    ck_assert_int_eq(cq_worker_start_session(w, &p, &info, &err), -1);
}
END_TEST

static Suite *interpreter_suite(void)
{
    Suite *s = suite_create("interpreter");
    TCase *tc = tcase_create("definitions");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 90);
    tcase_add_test(tc, layer_and_environment);
    tcase_add_test(tc, limits_are_the_sessions_defaults);
    tcase_add_test(tc, network_mode_of_the_interpreter);
    tcase_add_test(tc, unknown_interpreter_is_not_found);
    tcase_add_test(tc, resolve_defines_on_demand);
    tcase_add_test(tc, delete_and_replace_leave_running_sessions_alone);
    suite_add_tcase(s, tc);

    tc = tcase_create("pool");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, warm_pool_preloads_the_interpreters_modules);
    tcase_add_test(tc, a_failing_interpreter_pool_does_not_starve_others);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    if (geteuid() != 0) {
        fprintf(stderr, "test_interpreter needs root\n");
        return EXIT_FAILURE;
    }
    return cq_unit_run(interpreter_suite(), true);
}
