/* cli/cmd_exec.c - `codeq exec`: run code in a fresh session (of the embedded worker,
 * or of the fleet with --brokers), print its output live, save its images and files,
 * exit non-zero on error. */
#define _GNU_SOURCE
#include "cli/backend.h"
#include "cli/cli.h"
#include "cli/result_json.h"
#include "common/cleanup.h"
#include "common/fileutil.h"
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
    uint8_t *data[MAX_INPUTS] = {0};
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        cq_autoclose int fd = open(paths[i], O_RDONLY | O_CLOEXEC);
        size_t len = 0;
        struct cq_error err;
        int got = fd < 0 ? cq_error_sys(&err, errno, "open %s", paths[i])
                         : cq_read_fd_limit(fd, CQ_WORKER_MAX_FILE_BYTES, &data[i], &len, &err);
        if (got < 0) {
            fprintf(stderr, "codeq: cannot read '%s': %s\n", paths[i], strerror(err.code));
            rc = -1;
            break;
        }
        const char *base = strrchr(paths[i], '/');
        content[i] = (struct cq_file_content){
            .path = base != NULL ? base + 1 : paths[i],
            .is_blob = true,
            .data = data[i],
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

struct exec_options {
    const char *lang, *code_arg, *file, *out_dir;
    const char *brokers, *request_topic;
    const char *inputs[MAX_INPUTS];
    size_t n_inputs;
    bool json;
    double timeout_s;
};

/* 0; -1 when --help was printed; CQ_EXIT_USAGE for a bad command line. */
static int parse_options(int argc, char **argv, struct exec_options *o)
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
    struct cq_error err;
    uint64_t ms;
    opterr = 0;
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "+hc:", longopts, NULL)) != -1) {
        switch (c) {
        case 'h':
            usage(stdout);
            return -1;
        case 'c':
            o->code_arg = optarg;
            break;
        case OPT_LANG:
            if (strcmp(optarg, "python") != 0 && strcmp(optarg, "javascript") != 0 &&
                strcmp(optarg, "typescript") != 0)
                return cq_usage_error(
                    "exec", "--lang: '%s' is not python, javascript or typescript", optarg);
            o->lang = optarg;
            break;
        case OPT_TIMEOUT:
            if (cq_parse_duration_ms(optarg, (uint64_t)CQ_WORKER_MAX_SESSION_TTL_S * 1000, &ms,
                                     &err) < 0)
                return cq_usage_error("exec", "--timeout: %s", err.msg);
            o->timeout_s = (double)ms / 1000.0;
            break;
        case OPT_JSON:
            o->json = true;
            break;
        case OPT_OUT:
            o->out_dir = optarg;
            break;
        case OPT_BROKERS:
            o->brokers = optarg;
            break;
        case OPT_TOPIC:
            o->request_topic = optarg;
            break;
        case OPT_FILE:
            if (o->n_inputs == MAX_INPUTS)
                return cq_usage_error("exec", "--file: at most %d files", MAX_INPUTS);
            if (access(optarg, R_OK) != 0)
                return cq_usage_error("exec", "--file: cannot read '%s'", optarg);
            o->inputs[o->n_inputs++] = optarg;
            break;
        default:
            return cq_usage_error("exec", "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    o->file = optind < argc ? argv[optind] : NULL;
    if ((o->code_arg != NULL) == (o->file != NULL) || optind + (o->file != NULL) < argc)
        return cq_usage_error("exec", "give exactly one of -c CODE, FILE or -");
    return 0;
}

/* The code to run into *code (NUL-terminated; the caller frees it, also on failure):
 * -c's, or FILE's (- for standard input), whose extension then gives the language
 * unless --lang did. 0, or CQ_EXIT_USAGE. */
static int read_code(struct exec_options *o, char **code)
{
    size_t len = 0;
    if (o->code_arg != NULL) {
        *code = strdup(o->code_arg);
        len = strlen(o->code_arg);
    } else {
        int fd = strcmp(o->file, "-") == 0 ? STDIN_FILENO : open(o->file, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            return cq_usage_error("exec", "cannot open '%s'", o->file);
        struct cq_error err;
        uint8_t *data = NULL;
        int rc = cq_read_fd_limit(fd, MAX_CODE_BYTES, &data, &len, &err);
        if (fd != STDIN_FILENO)
            close(fd);
        if (rc < 0)
            return cq_usage_error("exec", "cannot read the code from '%s'", o->file);
        *code = (char *)data;
        if (o->lang == NULL)
            o->lang = language_from_path(o->file);
    }
    if (*code == NULL || strlen(*code) != len)
        return cq_usage_error("exec", "the code contains a NUL byte");
    return 0;
}

/* Ignores SIGPIPE (a closed stdout must not kill us before the session is stopped) and
 * hands the stop signals to a thread of their own. */
static int start_signal_thread(pthread_t *thread)
{
    signal(SIGPIPE, SIG_IGN);
    sigset_t signals;
    stop_signals(&signals);
    pthread_sigmask(SIG_BLOCK, &signals, NULL); /* inherited by every thread made below */
    if (pthread_create(thread, NULL, signal_main, NULL) != 0) {
        fprintf(stderr, "codeq: cannot start the signal thread\n");
        return -1;
    }
    return 0;
}

/* Opens the backend and starts the session the code runs in, which the signal thread
 * may then stop. 0; 1 when a signal came first (the session must still be stopped);
 * -1 when there is no session. */
static int start_session(const struct exec_options *o, struct cq_backend **w,
                         struct cq_session_info *info)
{
    struct cq_worker_config cfg;
    cq_worker_config_init(&cfg);
    struct cq_session_params params = {0};
    struct cq_error err;
    if (cq_backend_open(&cfg, o->brokers, o->request_topic, w, &err) < 0 ||
        cq_backend_start_session(*w, &params, info, &err) < 0) {
        fprintf(stderr, "codeq: %s\n", err.msg);
        return -1;
    }
    pthread_mutex_lock(&stopper.lock);
    stopper.backend = *w;
    snprintf(stopper.session, sizeof(stopper.session), "%s", info->session_id);
    bool stopped = stopper.signal != 0;
    pthread_mutex_unlock(&stopper.lock);
    return stopped ? 1 : 0;
}

/* Hides the session from the signal thread, stops it (in the fleet it would outlive us
 * until its time to live) and closes the backend. info is NULL when no session was
 * started. Returns the signal that stopped codeq, or 0. */
static int end_session(struct cq_backend *w, struct cq_session_info *info)
{
    pthread_mutex_lock(&stopper.lock);
    stopper.backend = NULL;
    int sig = stopper.signal;
    pthread_mutex_unlock(&stopper.lock);
    struct cq_error err;
    if (w != NULL && info != NULL)
        cq_backend_stop_session(w, info->session_id, info, &err);
    cq_backend_close(w);
    return sig;
}

/* The result on standard output: all of it as JSON with --json, else the value of a
 * final expression (the output went out live). Returns the exit status it calls for. */
static int print_result(const struct exec_options *o, const struct cq_result *result)
{
    int status = result->is_error ? 1 : 0;
    if (o->json) {
        json_t *obj = cq_result_to_json(result);
        char *text = obj != NULL ? json_dumps(obj, JSON_INDENT(2)) : NULL;
        if (text != NULL)
            printf("%s\n", text);
        free(text);
        json_decref(obj);
    } else if (result->value_text != NULL) {
        printf("%s\n", result->value_text);
    } else if (result->error_code != CQ_RESULT_OK && result->error_code != CQ_RESULT_TIMED_OUT &&
               result->error_message != NULL) {
        fprintf(stderr, "codeq: %s\n", result->error_message);
        status = CQ_EXIT_INTERNAL;
    }
    return status;
}

/* --out: the images of the result as image-1.png, ... */
static void save_images(const char *dir, const struct cq_result *result)
{
    int image = 0;
    for (size_t i = 0; i < result->n_blocks; i++) {
        const struct cq_block *b = &result->blocks[i];
        if (b->type != CQ_BLOCK_IMAGE)
            continue;
        char name[64];
        snprintf(name, sizeof(name), "image-%d.png", ++image);
        if (save_file(dir, name, b->data, b->data_len) < 0)
            fprintf(stderr, "codeq: could not save %s into %s\n", name, dir);
    }
}

/* Runs the code in the session, then reports and saves what it produced. Returns the
 * exit status. */
static int execute(const struct exec_options *o, struct cq_backend *w, const char *session,
                   const char *code)
{
    struct cq_result result;
    cq_result_init(&result);
    struct cq_invoke_args args = {.code = code, .language = o->lang, .timeout_s = o->timeout_s};
    cq_backend_invoke(w, session, "executeCode", &args, o->json ? NULL : print_live, NULL, &result);
    int status = print_result(o, &result);
    if (o->out_dir != NULL) {
        save_images(o->out_dir, &result);
        if (save_workspace(w, session, o->out_dir, "", 0) > 0 && status == 0)
            status = CQ_EXIT_INTERNAL;
    }
    cq_result_free(&result);
    return status;
}

/* A session from start to stop around the run of the code; *sig is the signal that
 * stopped codeq, or 0. Returns the exit status. */
static int run(const struct exec_options *o, const char *code, int *sig)
{
    int status = CQ_EXIT_INTERNAL;
    struct cq_backend *w = NULL;
    struct cq_session_info info;
    int started = start_session(o, &w, &info);
    if (started == 0 &&
        (o->n_inputs == 0 || upload(w, info.session_id, o->inputs, o->n_inputs) == 0))
        status = execute(o, w, info.session_id, code);
    *sig = end_session(w, started >= 0 ? &info : NULL);
    return status;
}

int cq_cmd_exec(int argc, char **argv)
{
    struct exec_options o = {0};
    int status = parse_options(argc, argv, &o);
    if (status != 0)
        return status < 0 ? 0 : status;
    cq_autofree char *code = NULL;
    if ((status = read_code(&o, &code)) != 0)
        return status;
    if (o.out_dir != NULL && mkdir(o.out_dir, 0755) < 0 && errno != EEXIST)
        return cq_usage_error("exec", "--out: cannot create '%s'", o.out_dir);

    pthread_t signal_thread;
    if (start_signal_thread(&signal_thread) < 0)
        return CQ_EXIT_INTERNAL;
    int sig = 0;
    status = run(&o, code, &sig);
    pthread_kill(signal_thread, SIGUSR1);
    pthread_join(signal_thread, NULL);
    if (sig != 0) {
        fprintf(stderr, "codeq: stopped by signal %d (%s)\n", sig, strsignal(sig));
        status = 128 + sig;
    }
    return status;
}
