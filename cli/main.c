/* cli/main.c - `codeq`: dispatches to one file per subcommand, and what they share. */
#define _GNU_SOURCE
#include "cli/cli.h"
#include "sandbox/sandbox.h"
#include "worker/worker.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef CQ_VERSION
#define CQ_VERSION "0.0.0"
#endif

void cq_rootless_notes(bool say_refusal)
{
    static bool said;
    if (said)
        return;
    said = true;
    const char *note = cq_sandbox_ids_note();
    if (note != NULL)
        fprintf(stderr, "codeq: %s\n", note);
    struct cq_error err;
    if (cq_sandbox_rootless_ready(&err) < 0) {
        /* Each sandbox's creation fails with this too; a server says it once now. */
        if (say_refusal)
            fprintf(stderr, "codeq: sandboxes cannot be made: %s\n", err.msg);
        return;
    }
    unsigned unenforced = cq_sandbox_unenforced();
    if (unenforced != 0) {
        char what[64];
        cq_sandbox_unenforced_text(unenforced, what, sizeof(what));
        fprintf(stderr,
                "codeq: warning: no cgroup delegated to you, and CODEQ_ALLOW_UNLIMITED=1: "
                "sandboxes run without their %s limits\n",
                what);
    }
}

int cq_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "codeq %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nRun 'codeq %s --help' for usage.\n", cmd);
    return CQ_EXIT_USAGE;
}

void cq_signing_option(int opt, const char *value)
{
    static const struct {
        int opt;
        const char *env;
    } vars[] = {{CQ_OPT_CREDENTIALS, "CODEQ_CREDENTIALS"},
                {CQ_OPT_TENANT, "CODEQ_TENANT"},
                {CQ_OPT_KEY_ID, "CODEQ_KEY_ID"},
                {CQ_OPT_KEY_SECRET_FILE, "CODEQ_KEY_SECRET_FILE"}};
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
        if (vars[i].opt == opt)
            setenv(vars[i].env, value, 1);
    /* A flag overrides the environment: a secret file given on the command line wins
     * over a secret the environment carries (both at once would be refused). */
    if (opt == CQ_OPT_KEY_SECRET_FILE)
        unsetenv("CODEQ_KEY_SECRET");
}

int cq_network_environment(const char *cmd, struct cq_worker_config *cfg)
{
    struct cq_error err;
    if (cq_worker_net_environment(cfg, &err) < 0)
        return cq_usage_error(cmd, "%s", err.msg);
    return 0;
}

bool cq_network_is_option(int opt)
{
    return opt >= CQ_OPT_NET_FIRST && opt < CQ_OPT_NET_FIRST + CQ_NETWORK_N_OPTS;
}

int cq_network_option(const char *cmd, struct cq_worker_config *cfg, unsigned *seen, int opt,
                      const char *value)
{
    unsigned i = (unsigned)(opt - CQ_OPT_NET_FIRST);
    const char *name = cq_worker_net_settings[i];
    char flag[64] = "--";
    for (size_t j = 0; name[j] != '\0' && j + 3 < sizeof(flag); j++)
        flag[2 + j] = name[j] == '_' ? '-' : name[j];
    struct cq_error err;
    if (cq_worker_net_setting(cfg, name, value, (*seen >> i) & 1u, flag, &err) < 0)
        return cq_usage_error(cmd, "%s", err.msg);
    *seen |= 1u << i;
    return 0;
}

void cq_network_usage(FILE *out)
{
    fprintf(out, "network (docs/configuration.md, \"Network\"; each also CODEQ_<NAME>, e.g.\n"
                 "CODEQ_NETWORK_MODES; lists are comma-separated, a list flag repeated adds):\n");
    for (size_t i = 0; cq_worker_net_settings[i] != NULL; i++) {
        char flag[64];
        snprintf(flag, sizeof(flag), "--%s", cq_worker_net_settings[i]);
        for (char *p = flag; *p; p++)
            if (*p == '_')
                *p = '-';
        fprintf(out, "  %-26s %s\n", flag, cq_worker_net_help(cq_worker_net_settings[i]));
    }
}

static void usage(FILE *out)
{
    fprintf(out, "usage: codeq <command> [options]\n"
                 "\n"
                 "codeq runs untrusted code in isolated, limited sandboxes.\n"
                 "\n"
                 "commands:\n"
                 "  exec       run Python, JavaScript or TypeScript code in a fresh session\n"
                 "  mcp        serve the code-interpreter tools over MCP on stdio\n"
                 "  serve      serve AgentCore's code interpreter API over HTTP (SigV4)\n"
                 "  sandbox    run a command in a fresh sandbox and destroy it after\n"
                 "  runtime    build, list, show or remove custom runtimes (package layers)\n"
                 "  interpreter create, list, get or delete code interpreters (runtime,\n"
                 "             network, limits: what sessions start on)\n"
                 "  tenant     create, list or delete the tenants of a fleet (its keys file)\n"
                 "  key        create, list or revoke a tenant's signing keys\n"
                 "  audit      verify an audit log's chains and signatures\n"
                 "  at-rest    rotate the keys that encrypt a fleet's data in Redis\n"
                 "  fleet      a fleet's state: workers, dispatchers, backlog, dead letters\n"
                 "\n"
                 "Run 'codeq <command> --help' for the options of a command.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return CQ_EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0) {
        printf("codeq %s\n", CQ_VERSION);
        return 0;
    }
    /* The commands that make sandboxes, before any of them starts a thread: as a normal
     * user the process moves into a user namespace of its own (sandbox/rootless.c). */
    static const char *const sandboxing[] = {"sandbox", "exec", "mcp", "serve"};
    for (size_t i = 0; i < sizeof(sandboxing) / sizeof(sandboxing[0]); i++)
        if (strcmp(cmd, sandboxing[i]) == 0)
            cq_sandbox_setup_process();
    if (strcmp(cmd, "sandbox") == 0)
        return cq_cmd_sandbox(argc - 1, argv + 1);
    if (strcmp(cmd, "exec") == 0)
        return cq_cmd_exec(argc - 1, argv + 1);
    if (strcmp(cmd, "mcp") == 0)
        return cq_cmd_mcp(argc - 1, argv + 1);
    if (strcmp(cmd, "serve") == 0)
        return cq_cmd_serve(argc - 1, argv + 1);
    if (strcmp(cmd, "tenant") == 0)
        return cq_cmd_tenant(argc - 1, argv + 1);
    if (strcmp(cmd, "key") == 0)
        return cq_cmd_key(argc - 1, argv + 1);
    if (strcmp(cmd, "audit") == 0)
        return cq_cmd_audit(argc - 1, argv + 1);
    if (strcmp(cmd, "runtime") == 0)
        return cq_cmd_runtime(argc - 1, argv + 1);
    if (strcmp(cmd, "interpreter") == 0)
        return cq_cmd_interpreter(argc - 1, argv + 1);
    if (strcmp(cmd, "fleet") == 0)
        return cq_cmd_fleet(argc - 1, argv + 1);
    if (strcmp(cmd, "at-rest") == 0)
        return cq_cmd_at_rest(argc - 1, argv + 1);
    fprintf(stderr, "codeq: unknown command '%s'\n", cmd);
    usage(stderr);
    return CQ_EXIT_USAGE;
}
