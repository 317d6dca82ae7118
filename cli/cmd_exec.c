/* cli/cmd_exec.c - `codeq exec`: run code in a fresh session (of the embedded worker,
 * or of the fleet with --brokers), print its output live, save its images and files,
 * exit non-zero on error. */
#define _GNU_SOURCE
#include "cli/backend.h"
#include "cli/cli.h"
#include "cli/out_dir.h"
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
    char disk[32];
    cq_format_size(CQ_SANDBOX_DEFAULT_DISK, disk, sizeof(disk));
    fprintf(out,
            "usage: codeq exec [--lang python|javascript|typescript] [--timeout SECONDS]\n"
            "                  [--file PATH]... [--json] [--interpreter NAME]\n"
            "                  [--out DIR [--out-force] [--out-dotfiles]]\n"
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
            "                    files it left in its workspace into DIR, which must be new\n"
            "                    (it is made, mode 0700) or empty. Symlinks are neither\n"
            "                    saved nor followed, files are mode 0644, at most the\n"
            "                    workspace size (%s) is saved, zero blocks stay holes\n"
            "  --out-force       let DIR be non-empty: new files are added, nothing there is\n"
            "                    replaced (kept entries are listed on stderr)\n"
            "  --out-dotfiles    also save paths with a part starting with '.' (.git/config,\n"
            "                    .bashrc: files that tools run), skipped by default\n"
            "  --brokers LIST    run on the fleet whose Kafka bootstrap servers these are\n"
            "                    (CODEQ_BROKERS)\n"
            "  --request-topic T the fleet's request topic (CODEQ_REQUEST_TOPIC; default\n"
            "                    codeq.requests)\n"
            "                    Payloads over 512 KiB go through the fleet's Redis:\n"
            "                    CODEQ_REDIS, CODEQ_REDIS_PREFIX (docs/fleet.md)\n"
            "  --audit-log PATH  append an audit record per tool call to PATH (JSON lines,\n"
            "                    hash-chained; signed with CODEQ_AUDIT_KEY_FILE; check it\n"
            "                    with codeq audit verify; embedded only)\n"
            "  --credentials F   sign requests with the tenant key in file F (tenant,\n"
            "                    key_id, secret; CODEQ_CREDENTIALS); a fleet with keys\n"
            "                    takes only signed requests (docs/security.md)\n"
            "  --tenant T, --key-id ID, --key-secret-file F\n"
            "                    the same one by one, over the file's (CODEQ_TENANT,\n"
            "                    CODEQ_KEY_ID, CODEQ_KEY_SECRET or CODEQ_KEY_SECRET_FILE);\n"
            "                    a secret is never an argument: ps shows arguments\n"
            "  --interpreter NAME the code interpreter to run on (codeq interpreter list):\n"
            "                    its runtime, network and limits; default codeq.default.\n"
            "                    Embedded: read from the store ($CODEQ_RUNTIME_STORE)\n"
            "  --network MODE    the session's network: NONE, PUBLIC or ALLOWLIST (default:\n"
            "                    --network-default); within the settings below\n"
            "  --allow DEST      ALLOWLIST: a destination (NAME, *.NAME, IP, CIDR, with\n"
            "                    :PORT optionally); repeat for more\n"
            "  -h, --help        show this help\n"
            "\n"
            "exit status: 0 on success; 1 when the code raised an exception (or its kernel\n"
            "died); N when it called sys.exit(N) (Python) or process.exit(N) (JavaScript,\n"
            "TypeScript); 124 when it ran out of time (--timeout), as timeout(1); 2 for bad\n"
            "options; 125 when codeq itself failed (also when a file could not be saved\n"
            "into DIR); 128+S when signal S stopped codeq.\n",
            CQ_WORKER_DEFAULT_CALL_TIMEOUT, disk);
    cq_network_usage(out);
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

/* --out: one error, reported once ("codeq: --out: <path>: <why>"); counts a failure.
 * Both are escaped: the path is the code's, and so may be the session's message. */
static int out_error(const char *rel, const char *why)
{
    char name[256], reason[512];
    cq_out_dir_escape(rel, name, sizeof(name));
    cq_out_dir_escape(why, reason, sizeof(reason));
    fprintf(stderr, "codeq: --out: %s: %s\n", name, reason);
    return 1;
}

/* Reads the workspace file path through readFiles and saves it into out. Returns the
 * number of failures (0 or 1). */
static int save_file(struct cq_backend *w, const char *session, struct cq_out_dir *out,
                     const char *path)
{
    const char *paths[] = {path};
    struct cq_invoke_args read = {.paths = paths, .n_paths = 1};
    struct cq_result file;
    cq_backend_invoke(w, session, "readFiles", &read, NULL, NULL, &file);
    /* The resource block (a text block names the file before it). */
    const struct cq_block *res = NULL;
    for (size_t i = 0; i < file.n_blocks && res == NULL; i++)
        if (file.blocks[i].type == CQ_BLOCK_RESOURCE)
            res = &file.blocks[i];
    int failures = 0;
    struct cq_error err;
    if (file.is_error || res == NULL)
        failures = out_error(path, file.error_message != NULL ? file.error_message
                                                              : "cannot read it from the session");
    else if (cq_out_dir_save(out, path, res->is_blob ? res->data : (const uint8_t *)res->text,
                             res->is_blob ? res->data_len : strlen(res->text), &err) < 0) {
        fprintf(stderr, "codeq: --out: %s\n", err.msg); /* err.msg names the path */
        failures = 1;
    }
    cq_result_free(&file);
    return failures;
}

/* Copies every regular file of the session's workspace below sub (recursively) into
 * out, as far as out admits them. Returns the number of failures, each reported. */
static int save_workspace(struct cq_backend *w, const char *session, struct cq_out_dir *out,
                          const char *sub, int depth)
{
    if (depth > 32)
        return out_error(sub, "more than 32 directories deep; not saved");
    struct cq_invoke_args list = {.directory_path = sub};
    struct cq_result listing;
    cq_backend_invoke(w, session, "listFiles", &list, NULL, NULL, &listing);
    int failures = 0;
    if (listing.is_error)
        failures += out_error(sub[0] != '\0' ? sub : ".", listing.error_message != NULL
                                                              ? listing.error_message
                                                              : "cannot list it in the session");
    for (size_t i = 0; i < listing.n_blocks; i++) {
        const struct cq_block *b = &listing.blocks[i];
        /* With --brokers the listing crossed the network: take nothing on trust. The
         * kind and size only decide what is read; out checks the path and the bytes. */
        if (b->type != CQ_BLOCK_RESOURCE_LINK || b->uri == NULL || b->description == NULL ||
            strncmp(b->uri, "file://", 7) != 0)
            continue;
        const char *path = b->uri + strlen("file://");
        if (!cq_out_dir_admit(out, path, b->description, b->size))
            continue;
        if (strcmp(b->description, "directory") == 0)
            failures += save_workspace(w, session, out, path, depth + 1);
        else
            failures += save_file(w, session, out, path);
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
    struct cq_out_dir_options out_opts;
    struct cq_out_dir *out; /* DIR, opened before the code runs */
    const char *brokers, *request_topic;
    const char *audit_log; /* --audit-log, or NULL */
    const char *inputs[MAX_INPUTS];
    size_t n_inputs;
    bool json;
    double timeout_s;
    struct cq_worker_config cfg; /* the embedded worker's, with its network settings */
    bool has_network;
    enum cq_network_mode network; /* --network */
    const char *allow[CQ_NET_MAX_RULES];
    size_t n_allow;
    const char *interpreter; /* --interpreter */
};

/* 0; -1 when --help was printed; CQ_EXIT_USAGE for a bad command line. */
static int parse_options(int argc, char **argv, struct exec_options *o)
{
    enum {
        OPT_LANG = 256,
        OPT_TIMEOUT,
        OPT_JSON,
        OPT_OUT,
        OPT_OUT_FORCE,
        OPT_OUT_DOTFILES,
        OPT_FILE,
        OPT_BROKERS,
        OPT_TOPIC,
        OPT_AUDIT_LOG,
        OPT_NETWORK,
        OPT_ALLOW,
        OPT_INTERPRETER,
    };
    static const struct option longopts[] = {
        {"lang", required_argument, NULL, OPT_LANG},
        {"file", required_argument, NULL, OPT_FILE},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"json", no_argument, NULL, OPT_JSON},
        {"out", required_argument, NULL, OPT_OUT},
        {"out-force", no_argument, NULL, OPT_OUT_FORCE},
        {"out-dotfiles", no_argument, NULL, OPT_OUT_DOTFILES},
        {"brokers", required_argument, NULL, OPT_BROKERS},
        {"request-topic", required_argument, NULL, OPT_TOPIC},
        CQ_SIGNING_LONGOPTS,
        {"network", required_argument, NULL, OPT_NETWORK},
        {"allow", required_argument, NULL, OPT_ALLOW},
        {"interpreter", required_argument, NULL, OPT_INTERPRETER},
        CQ_NETWORK_LONGOPTS,
        {"audit-log", required_argument, NULL, OPT_AUDIT_LOG},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct cq_error err;
    uint64_t ms;
    unsigned net_seen = 0;
    cq_worker_config_init(&o->cfg);
    /* one session: a pool would only cost a second sandbox */
    o->cfg.warm_pool_public = 0;
    o->cfg.warm_pool_allowlist = 0;
    /* Whoever runs `codeq exec` chooses the session's network themselves (--network), as
     * with `codeq sandbox`: every mode is theirs unless --network-modes narrows it. A
     * service (codeq mcp, codeq-worker) lets its clients ask only for NONE by default. */
    o->cfg.netpolicy.modes = CQ_NET_MODE_BIT(CQ_NETWORK_NONE) | CQ_NET_MODE_BIT(CQ_NETWORK_PUBLIC) |
                             CQ_NET_MODE_BIT(CQ_NETWORK_ALLOWLIST);
    int net_rc = cq_network_environment("exec", &o->cfg);
    if (net_rc != 0)
        return net_rc;
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
        case OPT_OUT_FORCE:
            o->out_opts.force = true;
            break;
        case OPT_OUT_DOTFILES:
            o->out_opts.dotfiles = true;
            break;
        case OPT_BROKERS:
            o->brokers = optarg;
            break;
        case OPT_TOPIC:
            o->request_topic = optarg;
            break;
        case CQ_OPT_CREDENTIALS:
        case CQ_OPT_TENANT:
        case CQ_OPT_KEY_ID:
        case CQ_OPT_KEY_SECRET_FILE:
            cq_signing_option(c, optarg);
            break;
        case OPT_AUDIT_LOG:
            o->audit_log = optarg;
            break;
        case OPT_FILE:
            if (o->n_inputs == MAX_INPUTS)
                return cq_usage_error("exec", "--file: at most %d files", MAX_INPUTS);
            if (access(optarg, R_OK) != 0)
                return cq_usage_error("exec", "--file: cannot read '%s'", optarg);
            o->inputs[o->n_inputs++] = optarg;
            break;
        case OPT_NETWORK:
            if (cq_net_mode_parse(optarg, &o->network, &err) < 0)
                return cq_usage_error("exec", "--network: %s", err.msg);
            o->has_network = true;
            break;
        case OPT_ALLOW:
            if (o->n_allow == CQ_NET_MAX_RULES)
                return cq_usage_error("exec", "--allow: at most %d", CQ_NET_MAX_RULES);
            o->allow[o->n_allow++] = optarg;
            break;
        case OPT_INTERPRETER:
            o->interpreter = optarg;
            break;
        default:
            if (cq_network_is_option(c)) {
                if ((net_rc = cq_network_option("exec", &o->cfg, &net_seen, c, optarg)) != 0)
                    return net_rc;
                break;
            }
            return cq_usage_error("exec", "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    o->file = optind < argc ? argv[optind] : NULL;
    if ((o->code_arg != NULL) == (o->file != NULL) || optind + (o->file != NULL) < argc)
        return cq_usage_error("exec", "give exactly one of -c CODE, FILE or -");
    if ((o->out_opts.force || o->out_opts.dotfiles) && o->out_dir == NULL)
        return cq_usage_error("exec", "--out-force and --out-dotfiles go with --out DIR");
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
    struct cq_session_params params = {
        .network = o->has_network ? &o->network : NULL,
        .allow = o->allow,
        .n_allow = o->n_allow,
        .interpreter = o->interpreter,
    };
    struct cq_error err;
    if (cq_backend_open(&o->cfg, o->brokers, o->request_topic, w, &err) < 0 ||
        (o->audit_log != NULL && cq_backend_audit_log(*w, o->audit_log, &err) < 0) ||
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
    /* As a script would exit: the status sys.exit(n) or process.exit(n) gave, 1 for an
     * exception, and timeout(1)'s 124 when the run outlived --timeout. */
    int status = 0;
    if (result->error_code == CQ_RESULT_TIMED_OUT)
        status = CQ_EXIT_TIMEOUT;
    else if (result->is_error)
        status = result->exit_code > 0 && result->exit_code < 256 ? result->exit_code : 1;
    if (o->json) {
        json_t *obj = cq_result_to_json(result);
        char *text = obj != NULL ? json_dumps(obj, JSON_INDENT(2) | CQ_JSON_REALS) : NULL;
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

/* --out: the images of the result as image-1.png, ... Returns the number of failures,
 * each reported. */
static int save_images(struct cq_out_dir *out, const struct cq_result *result)
{
    int image = 0, failures = 0;
    for (size_t i = 0; i < result->n_blocks; i++) {
        const struct cq_block *b = &result->blocks[i];
        if (b->type != CQ_BLOCK_IMAGE)
            continue;
        char name[64];
        snprintf(name, sizeof(name), "image-%d.png", ++image);
        struct cq_error err;
        if (cq_out_dir_save(out, name, b->data, b->data_len, &err) < 0) {
            fprintf(stderr, "codeq: --out: %s\n", err.msg);
            failures++;
        }
    }
    return failures;
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
    if (o->out != NULL) {
        int failures = save_images(o->out, &result);
        failures += save_workspace(w, session, o->out, "", 0);
        cq_out_dir_report(o->out, stderr);
        if (failures > 0 && status == 0)
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

/* --out DIR: made or opened (and checked) before the code runs, so a bad DIR is a
 * usage error that costs no run, and held as an fd from here on. The cap on what is
 * saved is the workspace size of the session (the configured default; a fleet's
 * sessions are assumed to have it too). 0, or CQ_EXIT_USAGE. */
static int open_out_dir(struct exec_options *o)
{
    if (o->out_dir == NULL)
        return 0;
    struct cq_worker_config cfg;
    cq_worker_config_init(&cfg);
    o->out_opts.max_bytes = cfg.limits.workspace_bytes;
    struct cq_error err;
    if (cq_out_dir_open(o->out_dir, &o->out_opts, &o->out, &err) < 0)
        return cq_usage_error("exec", "--out: %s", err.msg);
    return 0;
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
    if ((status = open_out_dir(&o)) != 0)
        return status;

    pthread_t signal_thread;
    if (start_signal_thread(&signal_thread) < 0) {
        cq_out_dir_close(o.out);
        return CQ_EXIT_INTERNAL;
    }
    int sig = 0;
    status = run(&o, code, &sig);
    cq_out_dir_close(o.out);
    pthread_kill(signal_thread, SIGUSR1);
    pthread_join(signal_thread, NULL);
    if (sig != 0) {
        fprintf(stderr, "codeq: stopped by signal %d (%s)\n", sig, strsignal(sig));
        status = 128 + sig;
    }
    return status;
}
