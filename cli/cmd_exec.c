/* cli/cmd_exec.c - `codeq exec`: run code in a fresh session (of the embedded worker,
 * or of the fleet with --brokers), print its output live, save its images and files,
 * exit non-zero on error. */
#define _GNU_SOURCE
#include "cli/backend.h"
#include "cli/cli.h"
#include "cli/result_json.h"
#include "common/cleanup.h"
#include "common/units.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_CODE_BYTES (16ULL << 20)
#define MAX_INPUTS     64

static void usage(FILE *out)
{
    fprintf(out,
            "usage: codeq exec [--lang python|javascript|typescript] [--timeout SECONDS]\n"
            "                  [--file PATH]... [--json] [--out DIR]\n"
            "                  [--brokers LIST [--request-topic TOPIC]] (-c CODE | FILE | -)\n"
            "\n"
            "Runs code in a fresh sandboxed session, prints its stdout and stderr as they\n"
            "come, and the value of a final expression. The session is destroyed afterwards.\n"
            "By default it runs in this process (the embedded worker: no Kafka, no Redis);\n"
            "with --brokers (or CODEQ_BROKERS) it runs on a codeq fleet over Kafka.\n"
            "\n"
            "options:\n"
            "  -c CODE           the code to run (or give a FILE, or - for standard input)\n"
            "  --lang LANG       python (default; or from FILE's extension), javascript,\n"
            "                    typescript\n"
            "  --timeout SECONDS wall-clock limit of the run (default %.0f); on expiry the code\n"
            "                    is interrupted\n"
            "  --file PATH       copy the host file PATH into the workspace (under its name)\n"
            "                    before the code runs; repeatable\n"
            "  --json            print the whole result as JSON in AgentCore's shape (content,\n"
            "                    structuredContent, isError) instead of the output\n"
            "  --out DIR         save images the code produced (image-1.png, ...) and the\n"
            "                    files it left in its workspace into DIR\n"
            "  --brokers LIST    run on the fleet whose Kafka bootstrap servers these are\n"
            "                    (CODEQ_BROKERS)\n"
            "  --request-topic T the fleet's request topic (CODEQ_REQUEST_TOPIC; default\n"
            "                    codeq.requests)\n"
            "  -h, --help        show this help\n"
            "\n"
            "exit status: 0 on success, 1 when the code failed (an exception, a timeout),\n"
            "2 for bad options, 125 when codeq itself failed.\n",
            CQ_WORKER_DEFAULT_CALL_TIMEOUT);
}

static int usage_error(const char *msg, const char *arg)
{
    fprintf(stderr, "codeq exec: ");
    fprintf(stderr, msg, arg);
    fprintf(stderr, "\nRun 'codeq exec --help' for usage.\n");
    return CQ_EXIT_USAGE;
}

/* The whole of fd, NUL-terminated, refusing more than limit bytes (EFBIG). */
static char *read_all_limit(int fd, size_t *len, uint64_t limit)
{
    size_t cap = 65536, used = 0;
    char *buf = malloc(cap + 1);
    while (buf != NULL) {
        if (used == cap) {
            if (cap >= limit) {
                free(buf);
                errno = EFBIG;
                return NULL;
            }
            char *bigger = realloc(buf, cap * 2 + 1);
            if (bigger == NULL)
                break;
            buf = bigger;
            cap *= 2;
        }
        ssize_t n = read(fd, buf + used, cap - used);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            free(buf);
            return NULL;
        }
        if (n == 0) {
            buf[used] = '\0';
            *len = used;
            return buf;
        }
        used += (size_t)n;
    }
    free(buf);
    errno = ENOMEM;
    return NULL;
}

static const char *language_from_path(const char *path)
{
    const char *dot = strrchr(path, '.');
    if (dot == NULL)
        return NULL;
    if (strcmp(dot, ".py") == 0)
        return "python";
    if (strcmp(dot, ".js") == 0 || strcmp(dot, ".mjs") == 0 || strcmp(dot, ".cjs") == 0)
        return "javascript";
    if (strcmp(dot, ".ts") == 0)
        return "typescript";
    return NULL;
}

static void print_live(void *ctx, int stream, const char *data, size_t len)
{
    (void)ctx;
    FILE *out = stream == 1 ? stdout : stderr;
    fwrite(data, 1, len, out);
    fflush(out);
}

/* Ctrl-C, SIGTERM, SIGHUP: a thread waits for them (they are blocked everywhere
 * else) and stops the session, whose processes die at once, so the call returns and
 * everything is cleaned up as on a normal exit. */
static struct {
    pthread_mutex_t lock;
    struct cq_backend *backend;
    char session[CQ_SESSION_ID_MAX + 1];
    int signal;
} stopper = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* SIGUSR1 is ours: it tells the signal thread to quit. */
static void stop_signals(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGHUP);
    sigaddset(set, SIGUSR1);
}

static void *signal_main(void *arg)
{
    (void)arg;
    sigset_t set;
    stop_signals(&set);
    int sig;
    if (sigwait(&set, &sig) != 0 || sig == SIGUSR1)
        return NULL;
    pthread_mutex_lock(&stopper.lock);
    stopper.signal = sig;
    struct cq_session_info info;
    struct cq_error err;
    if (stopper.backend != NULL && stopper.session[0] != '\0')
        cq_backend_stop_session(stopper.backend, stopper.session, &info, &err);
    pthread_mutex_unlock(&stopper.lock);
    return NULL;
}

/* Writes rel (a workspace path, chosen by the sandboxed code and so hostile) below root.
 * Each component is created or opened relative to its parent with O_NOFOLLOW: no "..",
 * no absolute path and no symlink can take the write outside root. */
static int save_file(const char *root, const char *rel, const uint8_t *data, size_t len)
{
    char copy[PATH_MAX];
    if (rel[0] == '/' || snprintf(copy, sizeof(copy), "%s", rel) >= (int)sizeof(copy))
        return -1;
    cq_autoclose int dir = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0)
        return -1;
    char *name = copy;
    for (char *slash; (slash = strchr(name, '/')) != NULL; name = slash + 1) {
        *slash = '\0';
        if (name[0] == '\0' || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
            return -1;
        if (mkdirat(dir, name, 0755) < 0 && errno != EEXIST)
            return -1;
        int sub = openat(dir, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (sub < 0)
            return -1;
        close(dir);
        dir = sub;
    }
    if (name[0] == '\0' || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        return -1;
    cq_autoclose int fd =
        openat(dir, name, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Copies every regular file of the session's workspace (recursively) into dir. */
static int save_workspace(struct cq_backend *w, const char *session, const char *dir,
                          const char *sub, int depth)
{
    if (depth > 32)
        return 0;
    struct cq_invoke_args list = {.directory_path = sub};
    struct cq_result listing;
    cq_backend_invoke(w, session, "listFiles", &list, NULL, NULL, &listing);
    int failures = 0;
    for (size_t i = 0; i < listing.n_blocks; i++) {
        const struct cq_block *b = &listing.blocks[i];
        /* With --brokers the listing crossed the network: take nothing on trust. */
        if (b->type != CQ_BLOCK_RESOURCE_LINK || b->uri == NULL || b->description == NULL ||
            strncmp(b->uri, "file://", 7) != 0)
            continue;
        const char *path = b->uri + strlen("file://");
        if (strcmp(b->description, "directory") == 0) {
            failures += save_workspace(w, session, dir, path, depth + 1);
            continue;
        }
        if (strcmp(b->description, "file") != 0)
            continue;
        const char *paths[] = {path};
        struct cq_invoke_args read = {.paths = paths, .n_paths = 1};
        struct cq_result file;
        cq_backend_invoke(w, session, "readFiles", &read, NULL, NULL, &file);
        const struct cq_block *res = file.n_blocks > 0 ? &file.blocks[0] : NULL;
        if (res == NULL || res->type != CQ_BLOCK_RESOURCE ||
            save_file(dir, path, res->is_blob ? res->data : (const uint8_t *)res->text,
                      res->is_blob ? res->data_len : strlen(res->text)) < 0) {
            fprintf(stderr, "codeq: could not save %s into %s\n", path, dir);
            failures++;
        }
        cq_result_free(&file);
    }
    cq_result_free(&listing);
    return failures;
}

/* Copies host files into the workspace through writeFiles, like any client would. */
static int upload(struct cq_backend *w, const char *session, const char *const *paths, size_t n)
{
    struct cq_file_content content[MAX_INPUTS];
    char *data[MAX_INPUTS] = {0};
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        int fd = open(paths[i], O_RDONLY | O_CLOEXEC);
        size_t len = 0;
        data[i] = fd >= 0 ? read_all_limit(fd, &len, CQ_WORKER_MAX_FILE_BYTES) : NULL;
        if (fd >= 0)
            close(fd);
        if (data[i] == NULL) {
            fprintf(stderr, "codeq: cannot read '%s': %s\n", paths[i], strerror(errno));
            rc = -1;
            break;
        }
        const char *base = strrchr(paths[i], '/');
        content[i] = (struct cq_file_content){
            .path = base != NULL ? base + 1 : paths[i],
            .is_blob = true,
            .data = (const uint8_t *)data[i],
            .len = len,
        };
    }
    if (rc == 0) {
        struct cq_invoke_args args = {.content = content, .n_content = n};
        struct cq_result r;
        cq_backend_invoke(w, session, "writeFiles", &args, NULL, NULL, &r);
        if (r.is_error) {
            for (size_t i = 0; i < r.n_blocks; i++)
                if (r.blocks[i].type == CQ_BLOCK_TEXT)
                    fprintf(stderr, "codeq: %s\n", r.blocks[i].text);
            rc = -1;
        }
        cq_result_free(&r);
    }
    for (size_t i = 0; i < n; i++)
        free(data[i]);
    return rc;
}

int cq_cmd_exec(int argc, char **argv)
{
    enum { OPT_LANG = 256, OPT_TIMEOUT, OPT_JSON, OPT_OUT, OPT_FILE, OPT_BROKERS, OPT_TOPIC };
    static const struct option longopts[] = {
        {"lang", required_argument, NULL, OPT_LANG},
        {"file", required_argument, NULL, OPT_FILE},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"json", no_argument, NULL, OPT_JSON},
        {"out", required_argument, NULL, OPT_OUT},
        {"brokers", required_argument, NULL, OPT_BROKERS},
        {"request-topic", required_argument, NULL, OPT_TOPIC},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *lang = NULL, *code_arg = NULL, *out_dir = NULL;
    const char *brokers = NULL, *request_topic = NULL;
    const char *inputs[MAX_INPUTS];
    size_t n_inputs = 0;
    bool json = false;
    double timeout_s = 0;
    struct cq_error err;
    uint64_t ms;
    opterr = 0;
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "+hc:", longopts, NULL)) != -1) {
        switch (c) {
        case 'h':
            usage(stdout);
            return 0;
        case 'c':
            code_arg = optarg;
            break;
        case OPT_LANG:
            if (strcmp(optarg, "python") != 0 && strcmp(optarg, "javascript") != 0 &&
                strcmp(optarg, "typescript") != 0)
                return usage_error("--lang: '%s' is not python, javascript or typescript", optarg);
            lang = optarg;
            break;
        case OPT_TIMEOUT:
            if (cq_parse_duration_ms(optarg, (uint64_t)CQ_WORKER_MAX_SESSION_TTL_S * 1000, &ms,
                                     &err) < 0)
                return usage_error("--timeout: %s", err.msg);
            timeout_s = (double)ms / 1000.0;
            break;
        case OPT_JSON:
            json = true;
            break;
        case OPT_OUT:
            out_dir = optarg;
            break;
        case OPT_BROKERS:
            brokers = optarg;
            break;
        case OPT_TOPIC:
            request_topic = optarg;
            break;
        case OPT_FILE:
            if (n_inputs == MAX_INPUTS)
                return usage_error("--file: at most %s files", "64");
            if (access(optarg, R_OK) != 0)
                return usage_error("--file: cannot read '%s'", optarg);
            inputs[n_inputs++] = optarg;
            break;
        default:
            return usage_error("unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    const char *file = optind < argc ? argv[optind] : NULL;
    if ((code_arg != NULL) == (file != NULL) || optind + (file != NULL) < argc)
        return usage_error("%s", "give exactly one of -c CODE, FILE or -");
    cq_autofree char *code = NULL;
    size_t code_len = 0;
    if (code_arg != NULL) {
        code = strdup(code_arg);
        code_len = strlen(code_arg);
    } else {
        int fd = strcmp(file, "-") == 0 ? STDIN_FILENO : open(file, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            return usage_error("cannot open '%s'", file);
        code = read_all_limit(fd, &code_len, MAX_CODE_BYTES);
        if (fd != STDIN_FILENO)
            close(fd);
        if (code == NULL)
            return usage_error("cannot read the code from '%s'", file);
        if (lang == NULL)
            lang = language_from_path(file);
    }
    if (code == NULL || strlen(code) != code_len)
        return usage_error("%s", "the code contains a NUL byte");
    if (out_dir != NULL && mkdir(out_dir, 0755) < 0 && errno != EEXIST)
        return usage_error("--out: cannot create '%s'", out_dir);

    signal(SIGPIPE, SIG_IGN);
    sigset_t signals;
    stop_signals(&signals);
    pthread_sigmask(SIG_BLOCK, &signals, NULL); /* inherited by every thread made below */
    pthread_t signal_thread;
    if (pthread_create(&signal_thread, NULL, signal_main, NULL) != 0) {
        fprintf(stderr, "codeq: cannot start the signal thread\n");
        return CQ_EXIT_INTERNAL;
    }

    int status = CQ_EXIT_INTERNAL;
    struct cq_result result;
    cq_result_init(&result);
    struct cq_worker_config cfg;
    cq_worker_config_init(&cfg);
    struct cq_backend *w = NULL;
    struct cq_session_params params = {0};
    struct cq_session_info info;
    bool info_valid = false;
    int opened = cq_backend_open(&cfg, brokers, request_topic, &w, &err);
    if (opened < 0 || cq_backend_start_session(w, &params, &info, &err) < 0) {
        fprintf(stderr, "codeq: %s\n", err.msg);
        goto out;
    }
    info_valid = true;
    pthread_mutex_lock(&stopper.lock);
    stopper.backend = w;
    snprintf(stopper.session, sizeof(stopper.session), "%s", info.session_id);
    bool stopped = stopper.signal != 0;
    pthread_mutex_unlock(&stopper.lock);
    if (stopped)
        goto out;

    if (n_inputs > 0 && upload(w, info.session_id, inputs, n_inputs) < 0)
        goto out;

    struct cq_invoke_args args = {.code = code, .language = lang, .timeout_s = timeout_s};
    cq_backend_invoke(w, info.session_id, "executeCode", &args, json ? NULL : print_live, NULL,
                      &result);
    status = result.is_error ? 1 : 0;
    if (json) {
        json_t *obj = cq_result_to_json(&result);
        char *text = obj != NULL ? json_dumps(obj, JSON_INDENT(2)) : NULL;
        if (text != NULL)
            printf("%s\n", text);
        free(text);
        json_decref(obj);
    } else if (result.value_text != NULL) {
        printf("%s\n", result.value_text);
    } else if (result.error_code != CQ_RESULT_OK && result.error_code != CQ_RESULT_TIMED_OUT &&
               result.error_message != NULL) {
        fprintf(stderr, "codeq: %s\n", result.error_message);
        status = CQ_EXIT_INTERNAL;
    }
    if (out_dir != NULL) {
        int image = 0;
        for (size_t i = 0; i < result.n_blocks; i++) {
            const struct cq_block *b = &result.blocks[i];
            if (b->type != CQ_BLOCK_IMAGE)
                continue;
            char name[64];
            snprintf(name, sizeof(name), "image-%d.png", ++image);
            if (save_file(out_dir, name, b->data, b->data_len) < 0)
                fprintf(stderr, "codeq: could not save %s into %s\n", name, out_dir);
        }
        if (save_workspace(w, info.session_id, out_dir, "", 0) > 0 && status == 0)
            status = CQ_EXIT_INTERNAL;
    }
out:
    cq_result_free(&result);
    pthread_mutex_lock(&stopper.lock);
    stopper.backend = NULL;
    int sig = stopper.signal;
    pthread_mutex_unlock(&stopper.lock);
    /* In the fleet the session would outlive us until its time to live. */
    if (w != NULL && info_valid)
        cq_backend_stop_session(w, info.session_id, &info, &err);
    cq_backend_close(w);
    pthread_kill(signal_thread, SIGUSR1);
    pthread_join(signal_thread, NULL);
    if (sig != 0) {
        fprintf(stderr, "codeq: stopped by signal %d (%s)\n", sig, strsignal(sig));
        status = 128 + sig;
    }
    return status;
}
