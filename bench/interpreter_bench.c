/* bench/interpreter_bench.c - warm session start on a code interpreter against
 * codeq.default, side by side in one run (issue 14).
 *
 * One worker (the library, as `codeq mcp` and codeq-worker embed it) with a warm pool
 * of 1 for codeq.default and a code interpreter "bench.custom" whose layer the bench
 * writes (a small Python package, cqbench_mod, on PYTHONPATH) with warm_pool 1 and
 * preload ["cqbench_mod"], and "bench.nopreload", the same without preload: what the
 * preload saves. cqbench_mod does some work when imported (it builds a table, as a real
 * package's import does), so that the preload's saving shows. Each round starts one
 * session on each (the order rotating from round to round) and times startSession to
 * the first executeCode result of
 *     codeq.default:    import numpy, pandas, matplotlib; print(1)
 *     bench.custom:     import cqbench_mod, numpy, pandas, matplotlib; print(1)
 *     bench.nopreload:  the same
 * (each cell first notes whether its modules were imported already: a warm start) and
 * stops the session; before each start it waits --refill seconds (untimed) for the
 * pools to refill, so that no start runs beside a refill's imports.
 *
 * usage: codeq-bench-interpreter [--runs N] [--refill S]   (as root; from the build tree)
 * Prints median, mean, p95 and min in milliseconds, and how many starts were warm.
 */
#define _GNU_SOURCE
#include "common/clock.h"
#include "worker/worker.h"

#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifndef CQ_SOURCE_DIR
#define CQ_SOURCE_DIR "."
#endif

static char layer[PATH_MAX];

static void put(const char *rel, const char *text)
{
    char path[PATH_MAX + 64];
    snprintf(path, sizeof(path), "%s/%s", layer, rel);
    if (text == NULL) {
        if (mkdir(path, 0755) < 0 && chmod(path, 0755) < 0) {
            perror(path);
            exit(1);
        }
        return;
    }
    FILE *f = fopen(path, "we");
    if (f == NULL) {
        perror(path);
        exit(1);
    }
    fputs(text, f);
    fclose(f);
}

static void remove_layer(void)
{
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", layer);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", layer);
}

static void sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

/* One start to the first result; returns its milliseconds, counts it warm when the
 * cell found its modules imported. */
static double one(struct cq_worker *w, const char *interp, const char *cell, int *warm)
{
    struct cq_session_params p = {.interpreter = interp};
    struct cq_session_info info;
    struct cq_error err = {0};
    uint64_t t0 = cq_now_us();
    if (cq_worker_start_session(w, &p, &info, &err) < 0) {
        fprintf(stderr, "start on %s: %s\n", interp, err.msg);
        exit(1);
    }
    struct cq_invoke_args a = {.code = cell, .language = "python", .timeout_s = 60};
    struct cq_result r;
    cq_worker_invoke(w, info.session_id, "executeCode", &a, NULL, NULL, &r);
    double ms = (double)(cq_now_us() - t0) / 1e3;
    if (r.is_error || r.stdout_text == NULL ||
        (strcmp(r.stdout_text, "1\n") != 0 && strcmp(r.stdout_text, "0\n") != 0)) {
        fprintf(stderr, "%s: %s\n", interp != NULL ? interp : CQ_INTERPRETER_DEFAULT,
                r.stdout_text != NULL ? r.stdout_text : "(no output)");
        exit(1);
    }
    *warm += r.stdout_text[0] == '1';
    cq_result_free(&r);
    cq_worker_stop_session(w, info.session_id, &info, &err);
    return ms;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void row(const char *name, double *v, int n, int warm)
{
    qsort(v, (size_t)n, sizeof(double), cmp);
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum += v[i];
    int p95 = (int)(n * 0.95);
    printf("| %s | %.3f | %.3f | %.3f | %.3f | %d / %d |\n", name, v[n / 2], sum / n,
           v[p95 < n ? p95 : n - 1], v[0], warm, n - warm);
}

int main(int argc, char **argv)
{
    int runs = 30;
    double refill = 4;
    static const struct option opts[] = {
        {"runs", required_argument, NULL, 'r'}, {"refill", required_argument, NULL, 'f'}, {0}};
    for (int c; (c = getopt_long(argc, argv, "", opts, NULL)) != -1;)
        if (c == 'r')
            runs = atoi(optarg);
        else if (c == 'f')
            refill = atof(optarg);
        else
            return 2;
    if (runs < 1 || !(refill >= 0) || geteuid() != 0) {
        fprintf(stderr, "usage: codeq-bench-interpreter [--runs N] [--refill S] (as root)\n");
        return 2;
    }
    if (getenv("CODEQ_SANDBOX_INIT") == NULL)
        setenv("CODEQ_SANDBOX_INIT", CQ_BUILD_DIR "/bin/codeq-sandbox-init", 0);
    if (getenv("CODEQ_RUNTIMES_DIR") == NULL)
        setenv("CODEQ_RUNTIMES_DIR", CQ_SOURCE_DIR "/runtimes", 0);

    snprintf(layer, sizeof(layer), "/tmp/cq-bench-layer-XXXXXX");
    if (mkdtemp(layer) == NULL || chmod(layer, 0755) < 0) {
        perror("layer");
        return 1;
    }
    put("python", NULL);
    put("python/cqbench_mod", NULL);
    put("python/cqbench_mod/__init__.py", "import json, statistics\n"
                                          "TABLE = {i: str(i) * 3 for i in range(300000)}\n"
                                          "def answer():\n"
                                          "    return statistics.mean([41, 43])\n");

    struct cq_worker_config cfg;
    cq_worker_config_init(&cfg);
    cfg.warm_pool_size = 1;
    struct cq_worker *w;
    struct cq_error err = {0};
    if (cq_worker_create(&cfg, &w, &err) < 0) {
        fprintf(stderr, "worker: %s\n", err.msg);
        return 1;
    }
    static const char *const env[] = {"PYTHONPATH=/opt/cqbench/python", NULL};
    static const char *const preload[] = {"cqbench_mod", NULL};
    struct cq_interpreter d = {
        .name = "bench.custom",
        .layer = {.host_path = layer, .sandbox_path = "/opt/cqbench"},
        .runtime = "bench",
        .env = env,
        .preload = preload,
        .warm_pool = 1,
    };
    struct cq_interpreter bare = d;
    bare.name = "bench.nopreload";
    bare.preload = NULL;
    if (cq_worker_define_interpreter(w, &d, &err) < 0 ||
        cq_worker_define_interpreter(w, &bare, &err) < 0) {
        fprintf(stderr, "define: %s\n", err.msg);
        return 1;
    }
    double *dflt = calloc((size_t)runs, sizeof(double));
    double *custom = calloc((size_t)runs, sizeof(double));
    double *nopreload = calloc((size_t)runs, sizeof(double));
    static const char cell_default[] = "import sys; w = 'pandas' in sys.modules\n"
                                       "import numpy, pandas, matplotlib; print(int(w))";
    static const char cell_custom[] =
        "import sys; w = 'cqbench_mod' in sys.modules\n"
        "import cqbench_mod, numpy, pandas, matplotlib; print(int(w))";
    static const char cell_nopreload[] =
        "import sys; w = 'pandas' in sys.modules\n"
        "import cqbench_mod, numpy, pandas, matplotlib; print(int(w))";
    int warm_default = 0, warm_custom = 0, warm_nopreload = 0;
    for (int i = 0; i < runs; i++) {
        for (int k = 0; k < 3; k++) {
            /* Each start alone: not beside another pool's refill (imports take a CPU). */
            sleep_s(refill);
            switch ((i + k) % 3) {
            case 0:
                dflt[i] = one(w, NULL, cell_default, &warm_default);
                break;
            case 1:
                custom[i] = one(w, "bench.custom", cell_custom, &warm_custom);
                break;
            default:
                nopreload[i] = one(w, "bench.nopreload", cell_nopreload, &warm_nopreload);
            }
        }
    }
    printf("| start to the first result (ms) | median | mean | p95 | min | warm / cold |\n");
    printf("|---|---|---|---|---|---|\n");
    row("codeq.default (pool)", dflt, runs, warm_default);
    row("bench.custom: a layer, PYTHONPATH, preload cqbench_mod (pool)", custom, runs, warm_custom);
    row("bench.nopreload: the same without preload (pool)", nopreload, runs, warm_nopreload);
    cq_worker_destroy(w);
    remove_layer();
    free(dflt);
    free(custom);
    free(nopreload);
    return 0;
}
