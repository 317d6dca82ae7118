/* cli/cmd_sandbox.c - `codeq sandbox [OPTIONS] -- CMD [ARG...]`: run one command in a
 * fresh sandbox, stream its output, destroy the sandbox, exit with its status. */
#define _GNU_SOURCE
#include "cli/cli.h"
#include "common/cleanup.h"
#include "common/units.h"
#include "runtime/runtime.h"
#include "sandbox/netpolicy.h"
#include "sandbox/sandbox.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_TIMEOUT_MS (7ULL * 24 * 3600 * 1000)
#define MAX_ENV        256

static void usage(FILE *out)
{
    char mem[32], disk[32], output[32];
    cq_format_size(CQ_SANDBOX_DEFAULT_MEMORY, mem, sizeof(mem));
    cq_format_size(CQ_SANDBOX_DEFAULT_DISK, disk, sizeof(disk));
    cq_format_size(CQ_SANDBOX_DEFAULT_OUTPUT, output, sizeof(output));
    fprintf(out,
            "usage: codeq sandbox [OPTIONS] -- CMD [ARG...]\n"
            "\n"
            "Runs CMD in a fresh sandbox and destroys the sandbox afterwards. CMD runs as an\n"
            "unprivileged user without capabilities, under seccomp, with no network but\n"
            "loopback (see --network), on a read-only copy of the host's runtime (/usr,\n"
            "/etc subset), with a private /tmp and a private /workspace as its working\n"
            "directory.\n"
            "\n"
            "options:\n"
            "  --memory SIZE        memory limit, swap included (default %s)\n"
            "  --pids N             processes and threads, codeq's two helpers included\n"
            "                       (default %d)\n"
            "  --cpus FLOAT         CPU bandwidth in cores (default %.0f)\n"
            "  --timeout SECONDS    wall-clock limit; kills CMD and everything it started\n"
            "                       (default %llu)\n"
            "  --disk SIZE          size of the private /workspace; also the largest file\n"
            "                       CMD may write (default %s)\n"
            "  --workspace DIR      bind the host directory DIR read-write at /workspace\n"
            "                       instead; CMD acts as DIR's owner, who must not be root\n"
            "  --env NAME=VALUE     set a variable for CMD (repeatable); nothing of the\n"
            "                       host's environment is passed in\n"
            "  --output-limit SIZE  stdout+stderr bytes passed through; the rest is dropped\n"
            "                       (default %s)\n"
            "  --report FILE        write a JSON report: exit_code, signal, timed_out,\n"
            "                       oom_killed, wall_ms, cpu_ms, peak_memory_bytes,\n"
            "                       output_truncated, output_bytes, pids_limit_hit, and\n"
            "                       with a network network_bytes_sent/_received\n"
            "  --network MODE       none (default: only loopback), public (public\n"
            "                       addresses, TCP and UDP) or\n"
            "                       allowlist (only what --allow lists); never the host,\n"
            "                       loopback, link-local, private ranges or another\n"
            "                       sandbox. Names resolve through codeq's resolver\n"
            "  --allow DEST         with allowlist (repeatable, at least one): NAME,\n"
            "                       *.NAME, IP or CIDR, each with an optional :PORT\n"
            "                       ([IPv6]:PORT); a name reaches only the addresses\n"
            "                       codeq's resolver answered for it\n"
            "  --egress-netns PATH  the network namespace the traffic leaves through\n"
            "                       (e.g. /run/netns/NAME); default: codeq's own, joined\n"
            "                       to the host's network by pasta (package passt)\n"
            "  --dns IP             the upstream resolver codeq's resolver asks, from the\n"
            "                       egress namespace (default: the host's first nameserver)\n"
            "  --network-private CIDR\n"
            "                       a private range (with an optional :PORT) the sandbox\n"
            "                       may reach (repeatable; the operator's network_private):\n"
            "                       with public, all of it; with allowlist, what --allow\n"
            "                       lists or a listed name answers inside it\n"
            "  --network-max-rate SIZE\n"
            "                       bytes per second the sandbox may send, and receive\n"
            "                       (each way; packets over it are dropped); default none\n"
            "  --network-max-connections N\n"
            "                       connections (TCP or UDP flows) open at once; one more\n"
            "                       is refused at once; default none\n"
            "  --runtime NAME       bind the layer of the runtime NAME read-only at\n"
            "                       /opt/codeq/layers/<digest> and set PYTHONPATH,\n"
            "                       NODE_PATH and its environment (codeq runtime; the\n"
            "                       store is $CODEQ_RUNTIME_STORE or %s);\n"
            "                       --env applies after it\n"
            "  -h, --help           show this help\n"
            "\n"
            "SIZE takes K, M, G or T suffixes (powers of 1024).\n"
            "\n"
            "As a normal user (docs/security.md, \"Running as a normal user\"): the memory\n"
            "and CPU limits need a cgroup delegated to you; CODEQ_ALLOW_UNLIMITED=1 runs\n"
            "without them instead (the report's limits_not_enforced says so; --pids then\n"
            "holds through RLIMIT_NPROC).\n"
            "\n"
            "exit status: CMD's own; 128+N when a signal N killed it; 124 when it timed out;\n"
            "137 when the memory limit got it killed; 125 when codeq itself failed; 126/127\n"
            "when CMD could not be run or was not found; 2 for bad options. A line on stderr\n"
            "says which limit was hit.\n",
            mem, CQ_SANDBOX_DEFAULT_PIDS, CQ_SANDBOX_DEFAULT_CPUS,
            (unsigned long long)(CQ_SANDBOX_DEFAULT_TIMEOUT_MS / 1000), disk, output,
            CQ_RUNTIME_DEFAULT_STORE);
}

struct options {
    struct cq_sandbox_config config;
    struct cq_netpolicy policy; /* --network-private and the --network-max-* limits */
    const char *env[MAX_ENV + 1];
    size_t nenv;
    const char *allow[CQ_NET_MAX_RULES];
    size_t nallow;
    uint64_t timeout_ms;
    uint64_t output_limit;
    const char *report_path;
    int report_dirfd; /* the report's directory, opened before the sandbox exists */
    char report_name[NAME_MAX + 1];
    char *workspace;
    char **argv;
    struct cq_runtime_sandbox runtime; /* --runtime: its bind and environment */
    const char *user_env[MAX_ENV];     /* --env, after the runtime's variables */
    size_t n_user_env;
};

/* The report is written by codeq, as root, after sandboxed code has run. Its
 * directory is opened now and the file created in it with O_NOFOLLOW later, so
 * nothing done in the meantime can redirect the write. A report inside the
 * workspace is refused: sandboxed code could plant a link there or replace the
 * report with a forged one. */
static int open_report_dir(struct options *o)
{
    char copy_dir[PATH_MAX], copy_base[PATH_MAX], dir_real[PATH_MAX];
    snprintf(copy_dir, sizeof(copy_dir), "%s", o->report_path);
    snprintf(copy_base, sizeof(copy_base), "%s", o->report_path);
    const char *base = basename(copy_base);
    if (base[0] == '\0' || strcmp(base, ".") == 0 || strcmp(base, "..") == 0 ||
        strcmp(base, "/") == 0 || strlen(base) > NAME_MAX) {
        cq_usage_error("sandbox", "--report: '%s' does not name a file", o->report_path);
        return -1;
    }
    if (realpath(dirname(copy_dir), dir_real) == NULL) {
        cq_usage_error("sandbox", "--report: the directory of '%s' does not exist", o->report_path);
        return -1;
    }
    if (o->workspace != NULL) {
        size_t n = strlen(o->workspace);
        if (strncmp(dir_real, o->workspace, n) == 0 &&
            (dir_real[n] == '\0' || dir_real[n] == '/' || strcmp(o->workspace, "/") == 0)) {
            cq_usage_error("sandbox",
                           "--report: '%s' is inside --workspace, where sandboxed code could "
                           "replace it; write it elsewhere",
                           o->report_path);
            return -1;
        }
    }
    o->report_dirfd = open(dir_real, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (o->report_dirfd < 0) {
        cq_usage_error("sandbox", "--report: cannot open the directory of '%s'", o->report_path);
        return -1;
    }
    snprintf(o->report_name, sizeof(o->report_name), "%s", base);
    return 0;
}

static int parse_options(int argc, char **argv, struct options *o)
{
    enum {
        OPT_MEMORY = 256,
        OPT_PIDS,
        OPT_CPUS,
        OPT_TIMEOUT,
        OPT_DISK,
        OPT_WORKSPACE,
        OPT_ENV,
        OPT_OUTPUT_LIMIT,
        OPT_REPORT,
        OPT_NETWORK,
        OPT_EGRESS_NETNS,
        OPT_DNS,
        OPT_ALLOW,
        OPT_NETWORK_PRIVATE,
        OPT_MAX_RATE,
        OPT_MAX_CONNECTIONS,
        OPT_RUNTIME
    };
    static const struct option longopts[] = {
        {"memory", required_argument, NULL, OPT_MEMORY},
        {"pids", required_argument, NULL, OPT_PIDS},
        {"cpus", required_argument, NULL, OPT_CPUS},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"disk", required_argument, NULL, OPT_DISK},
        {"workspace", required_argument, NULL, OPT_WORKSPACE},
        {"env", required_argument, NULL, OPT_ENV},
        {"output-limit", required_argument, NULL, OPT_OUTPUT_LIMIT},
        {"report", required_argument, NULL, OPT_REPORT},
        {"network", required_argument, NULL, OPT_NETWORK},
        {"egress-netns", required_argument, NULL, OPT_EGRESS_NETNS},
        {"dns", required_argument, NULL, OPT_DNS},
        {"allow", required_argument, NULL, OPT_ALLOW},
        {"network-private", required_argument, NULL, OPT_NETWORK_PRIVATE},
        {"network-max-rate", required_argument, NULL, OPT_MAX_RATE},
        {"network-max-connections", required_argument, NULL, OPT_MAX_CONNECTIONS},
        {"runtime", required_argument, NULL, OPT_RUNTIME},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct cq_error err;
    uint64_t value;
    const char *runtime = NULL;
    cq_sandbox_config_init(&o->config);
    cq_netpolicy_init(&o->policy);
    o->timeout_ms = CQ_SANDBOX_DEFAULT_TIMEOUT_MS;
    o->output_limit = CQ_SANDBOX_DEFAULT_OUTPUT;
    opterr = 0;
    optind = 1;
    int c;
    /* '+': stop at the first non-option, which starts CMD, as after "--". */
    while ((c = getopt_long(argc, argv, "+h", longopts, NULL)) != -1) {
        switch (c) {
        case 'h':
            usage(stdout);
            return -1;
        case OPT_MEMORY:
            if (cq_parse_size(optarg, 1ULL << 50, &o->config.limits.memory_bytes, &err) < 0)
                return cq_usage_error("sandbox", "--memory: %s", err.msg);
            break;
        case OPT_PIDS:
            if (cq_parse_uint(optarg, 4, 1000000, &o->config.limits.pids, &err) < 0)
                return cq_usage_error("sandbox", "--pids: %s", err.msg);
            break;
        case OPT_CPUS: {
            char *end;
            errno = 0;
            double cpus = strtod(optarg, &end);
            if (errno != 0 || *end != '\0' || end == optarg || !(cpus > 0))
                return cq_usage_error("sandbox", "--cpus: invalid number '%s'", optarg);
            o->config.limits.cpus = cpus;
            break;
        }
        case OPT_TIMEOUT:
            if (cq_parse_duration_ms(optarg, MAX_TIMEOUT_MS, &o->timeout_ms, &err) < 0)
                return cq_usage_error("sandbox", "--timeout: %s", err.msg);
            break;
        case OPT_DISK:
            if (cq_parse_size(optarg, 1ULL << 50, &value, &err) < 0)
                return cq_usage_error("sandbox", "--disk: %s", err.msg);
            o->config.limits.workspace_bytes = value;
            o->config.limits.file_size_bytes = value;
            break;
        case OPT_WORKSPACE:
            free(o->workspace);
            o->workspace = realpath(optarg, NULL);
            if (o->workspace == NULL)
                return cq_usage_error("sandbox", "--workspace: cannot use '%s'", optarg);
            break;
        case OPT_ENV:
            if (o->n_user_env == MAX_ENV)
                return cq_usage_error("sandbox", "--env: more than %d variables", MAX_ENV);
            if (strchr(optarg, '=') == NULL)
                return cq_usage_error("sandbox", "--env: '%s' is not NAME=VALUE", optarg);
            o->user_env[o->n_user_env++] = optarg;
            break;
        case OPT_RUNTIME:
            runtime = optarg;
            break;
        case OPT_OUTPUT_LIMIT:
            if (cq_parse_size(optarg, 1ULL << 40, &o->output_limit, &err) < 0)
                return cq_usage_error("sandbox", "--output-limit: %s", err.msg);
            if (o->output_limit == 0)
                return cq_usage_error("sandbox", "--output-limit: must be above 0");
            break;
        case OPT_REPORT:
            o->report_path = optarg;
            break;
        case OPT_NETWORK:
            if (cq_net_mode_parse(optarg, &o->config.network, &err) < 0)
                return cq_usage_error("sandbox", "--network: %s", err.msg);
            break;
        case OPT_EGRESS_NETNS:
            o->config.egress_netns = optarg;
            break;
        case OPT_DNS:
            o->config.dns = optarg;
            break;
        case OPT_ALLOW:
            if (o->nallow == CQ_NET_MAX_RULES)
                return cq_usage_error("sandbox", "--allow: more than %d entries", CQ_NET_MAX_RULES);
            o->allow[o->nallow++] = optarg;
            break;
        case OPT_NETWORK_PRIVATE:
            if (cq_net_rules_add(&o->policy.private_ok, optarg, &err) < 0)
                return cq_usage_error("sandbox", "--network-private: %s", err.msg);
            if (!cq_net_dest_private(&o->policy.private_ok.d[o->policy.private_ok.n - 1]))
                return cq_usage_error("sandbox",
                                      "--network-private: '%s' is not inside one private range "
                                      "(10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7)",
                                      optarg);
            o->config.netpolicy = &o->policy;
            break;
        case OPT_MAX_RATE:
            if (cq_parse_size(optarg, 1ULL << 40, &o->policy.max_bytes_per_second, &err) < 0)
                return cq_usage_error("sandbox", "--network-max-rate: %s", err.msg);
            if (o->policy.max_bytes_per_second == 0)
                return cq_usage_error("sandbox", "--network-max-rate: must be above 0");
            o->config.netpolicy = &o->policy;
            break;
        case OPT_MAX_CONNECTIONS:
            if (cq_parse_uint(optarg, 1, UINT32_MAX, &value, &err) < 0)
                return cq_usage_error("sandbox", "--network-max-connections: %s", err.msg);
            o->policy.max_connections = (uint32_t)value;
            o->config.netpolicy = &o->policy;
            break;
        default:
            return cq_usage_error("sandbox", "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (o->config.netpolicy != NULL && o->config.network == CQ_NETWORK_NONE)
        return cq_usage_error("sandbox", "--network-private, --network-max-rate and "
                                         "--network-max-connections need a network "
                                         "(--network public or allowlist)");
    if (optind >= argc)
        return cq_usage_error("sandbox",
                              "no command given (codeq sandbox [OPTIONS] -- CMD [ARG...])");
    if (o->report_path != NULL && open_report_dir(o) < 0)
        return CQ_EXIT_USAGE;
    if (runtime != NULL) {
        if (cq_runtime_sandbox_binds(NULL, runtime, &o->runtime, &err) < 0)
            return cq_usage_error("sandbox", "--runtime: %s", err.msg);
        if (o->runtime.n_env + o->n_user_env > MAX_ENV)
            return cq_usage_error("sandbox", "--runtime and --env: more than %d variables",
                                  MAX_ENV);
        /* --env overrides the runtime's variable of the same name; a name is never
         * given twice (which one a program sees would depend on the program). */
        for (size_t i = 0; i < o->runtime.n_env; i++) {
            const char *e = o->runtime.env[i];
            size_t len = strcspn(e, "=") + 1;
            bool overridden = false;
            for (size_t k = 0; k < o->n_user_env; k++)
                overridden |= strncmp(o->user_env[k], e, len) == 0;
            if (!overridden)
                o->env[o->nenv++] = e;
        }
        o->config.binds = &o->runtime.bind;
        o->config.n_binds = 1;
    }
    for (size_t i = 0; i < o->n_user_env; i++)
        o->env[o->nenv++] = o->user_env[i];
    o->env[o->nenv] = NULL;
    o->config.env = o->env;
    o->config.workspace_dir = o->workspace;
    o->config.allow = o->allow;
    o->config.n_allow = o->nallow;
    /* The library takes an empty list (a warm sandbox given its list later); a
     * command that can never be given one would only refuse everything. */
    if (o->config.network == CQ_NETWORK_ALLOWLIST && o->nallow == 0)
        return cq_usage_error("sandbox", "--network allowlist needs at least one --allow DEST");
    o->argv = argv + optind;
    struct cq_error verr;
    if (cq_sandbox_config_validate(&o->config, &verr) < 0)
        return cq_usage_error("sandbox", "%s", verr.msg);
    return 0;
}

/* Ctrl-C, SIGTERM from a service manager, a closed terminal: stop the command and
 * still destroy the sandbox, so that nothing of it outlives codeq (a codeq killed
 * with SIGKILL leaves only empty cgroup directories, removed by the next start). */
static volatile sig_atomic_t stop_signal;
static struct cq_process *volatile running;

static void on_stop_signal(int sig)
{
    stop_signal = sig;
    struct cq_process *p = running;
    if (p != NULL)
        cq_process_kill(p); /* a sendmsg: async-signal-safe */
}

static void catch_stop_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
}

struct output_state {
    struct cq_process *proc;
    bool reader_gone; /* our stdout or stderr was closed */
};

static bool write_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        data += n;
        len -= (size_t)n;
    }
    return true;
}

static void forward_output(void *ctx, int stream, const char *data, size_t len)
{
    struct output_state *st = ctx;
    if (st->reader_gone)
        return;
    if (!write_all(stream == 1 ? STDOUT_FILENO : STDERR_FILENO, data, len) && errno == EPIPE) {
        /* As in a shell pipeline (`codeq sandbox -- yes | head -1`): the reader
         * is gone, so the writer stops. */
        st->reader_gone = true;
        cq_process_kill(st->proc);
    }
}

static int write_report(const struct options *o, const struct cq_process_report *r,
                        const struct cq_sandbox_net_stats *net)
{
    json_t *obj =
        json_pack("{s:o, s:o, s:b, s:b, s:I, s:I, s:I, s:b, s:I, s:b}", "exit_code",
                  r->signal != 0 ? json_null() : json_integer(r->exit_code), "signal",
                  r->signal != 0 ? json_integer(r->signal) : json_null(), "timed_out", r->timed_out,
                  "oom_killed", r->oom_killed, "wall_ms", (json_int_t)r->wall_ms, "cpu_ms",
                  (json_int_t)r->cpu_ms, "peak_memory_bytes", (json_int_t)r->peak_memory_bytes,
                  "output_truncated", r->output_truncated, "output_bytes",
                  (json_int_t)r->output_bytes, "pids_limit_hit", r->pids_limit_hit);
    if (obj == NULL)
        return -1;
    if (net != NULL && (json_object_set_new(obj, "network_bytes_sent",
                                            json_integer((json_int_t)net->bytes_sent)) < 0 ||
                        json_object_set_new(obj, "network_bytes_received",
                                            json_integer((json_int_t)net->bytes_received)) < 0)) {
        json_decref(obj);
        return -1;
    }
    /* A normal user's sandbox without a delegated cgroup (CODEQ_ALLOW_UNLIMITED=1). */
    unsigned unenforced = cq_sandbox_unenforced();
    if (unenforced != 0) {
        char what[64];
        cq_sandbox_unenforced_text(unenforced, what, sizeof(what));
        json_object_set_new(obj, "limits_not_enforced", json_string(what));
    }
    cq_autofree char *text = json_dumps(obj, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(obj);
    if (text == NULL)
        return -1;
    int fd = openat(o->report_dirfd, o->report_name,
                    O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    cq_autofclose FILE *f = fdopen(fd, "w");
    if (f == NULL) {
        close(fd);
        return -1;
    }
    return fprintf(f, "%s\n", text) < 0 ? -1 : 0;
}

static int exit_status(const struct options *o, const struct cq_process_report *r)
{
    char size[32];
    if (r->output_truncated) {
        cq_format_size(o->output_limit, size, sizeof(size));
        fprintf(stderr,
                "codeq: output limit: output truncated at %s of %llu bytes (--output-limit)\n",
                size, (unsigned long long)r->output_bytes);
    }
    if (r->pids_limit_hit)
        fprintf(stderr, "codeq: process limit: the sandbox refused a fork (--pids %llu)\n",
                (unsigned long long)o->config.limits.pids);
    if (r->timed_out) {
        fprintf(stderr, "codeq: time limit: killed after %.3g s (--timeout)\n",
                (double)o->timeout_ms / 1000.0);
        return CQ_EXIT_TIMEOUT;
    }
    if (r->oom_killed) {
        cq_format_size(o->config.limits.memory_bytes, size, sizeof(size));
        fprintf(stderr, "codeq: memory limit: killed by the kernel's OOM killer (--memory %s)\n",
                size);
        return CQ_EXIT_OOM;
    }
    if (r->signal != 0)
        return 128 + r->signal;
    return r->exit_code;
}

int cq_cmd_sandbox(int argc, char **argv)
{
    struct options o;
    memset(&o, 0, sizeof(o));
    o.report_dirfd = -1;
    struct cq_sandbox *sb = NULL;
    struct cq_process *proc = NULL;
    int status = parse_options(argc, argv, &o);
    if (status != 0) {
        status = status < 0 ? 0 : status;
        goto out;
    }
    /* A closed stdout of ours is handled in forward_output, not by dying before the
     * sandbox is cleaned up. */
    signal(SIGPIPE, SIG_IGN);
    catch_stop_signals();

    struct cq_error err;
    status = CQ_EXIT_INTERNAL;
    cq_rootless_notes(false);
    if (cq_sandbox_create(&o.config, &sb, &err) < 0) {
        fprintf(stderr, "codeq: cannot create the sandbox: %s\n", err.msg);
        goto out;
    }
    struct cq_spawn req;
    cq_spawn_init(&req, (const char *const *)o.argv);
    req.timeout_ms = o.timeout_ms;
    req.output_limit_bytes = o.output_limit;
    req.stdout_mode = req.stderr_mode = CQ_STDIO_PIPE;
    /* Our stdin is forwarded through a pipe: a host terminal never enters the sandbox. */
    struct stat st;
    bool have_stdin = fstat(STDIN_FILENO, &st) == 0;
    req.stdin_mode = have_stdin ? CQ_STDIO_PIPE : CQ_STDIO_NULL;

    if (stop_signal == 0 && cq_sandbox_spawn(sb, &req, &proc, &err) < 0) {
        fprintf(stderr, "codeq: %s\n", err.msg);
        status = err.code == ENOENT                            ? CQ_EXIT_NOT_FOUND
                 : (err.code == EACCES || err.code == ENOEXEC) ? CQ_EXIT_CANNOT_RUN
                                                               : CQ_EXIT_INTERNAL;
        goto out;
    }
    if (proc != NULL) {
        running = proc;
        if (stop_signal != 0) /* arrived between spawn and now */
            cq_process_kill(proc);
        struct output_state out_state = {.proc = proc};
        struct cq_wait_io io = {
            .on_output = forward_output,
            .ctx = &out_state,
            .input_fd = have_stdin ? STDIN_FILENO : -1,
        };
        struct cq_process_report report;
        int rc = cq_process_wait(proc, &io, &report, &err);
        running = NULL;
        if (rc < 0) {
            fprintf(stderr, "codeq: %s\n", err.msg);
            goto out;
        }
        status = out_state.reader_gone ? 128 + SIGPIPE : exit_status(&o, &report);
        struct cq_sandbox_net_stats net = {0};
        bool with_net = o.config.network != CQ_NETWORK_NONE;
        if (o.report_path != NULL && with_net && cq_sandbox_net_stats(sb, &net, &err) < 0) {
            fprintf(stderr, "codeq: %s\n", err.msg);
            status = CQ_EXIT_INTERNAL;
        } else if (o.report_path != NULL && write_report(&o, &report, with_net ? &net : NULL) < 0) {
            fprintf(stderr, "codeq: cannot write the report to %s: %s\n", o.report_path,
                    strerror(errno));
            status = CQ_EXIT_INTERNAL;
        }
    }
out:
    cq_process_free(proc);
    cq_sandbox_destroy(sb);
    if (stop_signal != 0) {
        fprintf(stderr, "codeq: stopped by signal %d (%s)\n", (int)stop_signal,
                strsignal(stop_signal));
        status = 128 + stop_signal;
    }
    if (o.report_dirfd >= 0)
        close(o.report_dirfd);
    free(o.workspace);
    cq_runtime_sandbox_free(&o.runtime);
    return status;
}
