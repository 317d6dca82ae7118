/* cli/cli.h - the `codeq` command: one file per subcommand. */
#ifndef CQ_CLI_H
#define CQ_CLI_H

#include <stdbool.h>
#include <stdio.h>

/* Exit statuses of codeq itself, following the conventions of timeout(1), env(1)
 * and container runtimes, so scripts can tell codeq's failures from the command's. */
enum {
    CQ_EXIT_USAGE = 2,      /* bad options */
    CQ_EXIT_TIMEOUT = 124,  /* the command ran out of time */
    CQ_EXIT_INTERNAL = 125, /* codeq could not do its part */
    CQ_EXIT_CANNOT_RUN = 126,
    CQ_EXIT_NOT_FOUND = 127,
    CQ_EXIT_OOM = 137, /* 128 + SIGKILL, what a shell reports for an OOM kill */
};

/* A bad command line: prints "codeq <cmd>: <message>" and the hint to run
 * `codeq <cmd> --help` on stderr; returns CQ_EXIT_USAGE, the status to exit with. */
int cq_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The signing options of the fleet's clients (codeq exec, codeq mcp). The fleet client
 * reads credentials from the environment (fleet/keys.h), so each option sets its
 * variable. A secret is taken only from a file: a command line is visible to every user
 * of the machine (ps). */
enum {
    CQ_OPT_CREDENTIALS = 1000,
    CQ_OPT_TENANT,
    CQ_OPT_KEY_ID,
    CQ_OPT_KEY_SECRET_FILE,
};
/* clang-format off */
#define CQ_SIGNING_LONGOPTS                                           \
    {"credentials", required_argument, NULL, CQ_OPT_CREDENTIALS},     \
    {"tenant", required_argument, NULL, CQ_OPT_TENANT},               \
    {"key-id", required_argument, NULL, CQ_OPT_KEY_ID},               \
    {"key-secret-file", required_argument, NULL, CQ_OPT_KEY_SECRET_FILE}
/* clang-format on */
/* Handles one of CQ_SIGNING_LONGOPTS' options. */
void cq_signing_option(int opt, const char *value);

/* The network settings of the embedded worker (worker.h, cq_worker_net_settings), the
 * same for codeq exec and codeq mcp: --network-modes ... --warm-pool-allowlist, each also
 * CODEQ_<NAME>. Option values are CQ_OPT_NET_FIRST + the setting's index. */
enum { CQ_OPT_NET_FIRST = 1100 };
/* clang-format off */
#define CQ_NETWORK_LONGOPTS                                                    \
    {"network-modes", required_argument, NULL, CQ_OPT_NET_FIRST + 0},          \
    {"network-default", required_argument, NULL, CQ_OPT_NET_FIRST + 1},        \
    {"network-private", required_argument, NULL, CQ_OPT_NET_FIRST + 2},        \
    {"network-allow-bounds", required_argument, NULL, CQ_OPT_NET_FIRST + 3},   \
    {"network-deny", required_argument, NULL, CQ_OPT_NET_FIRST + 4},           \
    {"network-max-allow", required_argument, NULL, CQ_OPT_NET_FIRST + 5},      \
    {"network-max-pinned", required_argument, NULL, CQ_OPT_NET_FIRST + 6},     \
    {"network-max-rate", required_argument, NULL, CQ_OPT_NET_FIRST + 7},       \
    {"network-max-connections", required_argument, NULL, CQ_OPT_NET_FIRST + 8},\
    {"dns", required_argument, NULL, CQ_OPT_NET_FIRST + 9},                    \
    {"egress-netns", required_argument, NULL, CQ_OPT_NET_FIRST + 10},          \
    {"warm-pool-public", required_argument, NULL, CQ_OPT_NET_FIRST + 11},      \
    {"warm-pool-allowlist", required_argument, NULL, CQ_OPT_NET_FIRST + 12}
#define CQ_NETWORK_N_OPTS 13
/* clang-format on */
struct cq_worker_config;
/* Reads the CODEQ_<NAME> variables into cfg: 0, or CQ_EXIT_USAGE (printed). */
int cq_network_environment(const char *cmd, struct cq_worker_config *cfg);
/* True for one of CQ_NETWORK_LONGOPTS' options. */
bool cq_network_is_option(int opt);
/* Handles one; *seen (0 at first) makes a list flag replace the environment's list
 * and a repeated one add to it. 0, or CQ_EXIT_USAGE (printed). */
int cq_network_option(const char *cmd, struct cq_worker_config *cfg, unsigned *seen, int opt,
                      const char *value);
/* The options' help lines. */
void cq_network_usage(FILE *out);

/* As a normal user: says once on stderr what sandboxes of this process do without
 * (subordinate ids unused, limits not enforced: sandbox/rootless.c), and with
 * say_refusal (servers, before their first call) why none can be made. */
void cq_rootless_notes(bool say_refusal);

int cq_cmd_sandbox(int argc, char **argv);
int cq_cmd_exec(int argc, char **argv);
int cq_cmd_mcp(int argc, char **argv);
int cq_cmd_serve(int argc, char **argv);
int cq_cmd_tenant(int argc, char **argv);
int cq_cmd_key(int argc, char **argv);
int cq_cmd_audit(int argc, char **argv);
int cq_cmd_at_rest(int argc, char **argv);
int cq_cmd_runtime(int argc, char **argv);
int cq_cmd_interpreter(int argc, char **argv);
int cq_cmd_fleet(int argc, char **argv);

#endif
