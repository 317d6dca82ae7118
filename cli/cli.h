/* cli/cli.h - the `codeq` command: one file per subcommand. */
#ifndef CQ_CLI_H
#define CQ_CLI_H

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

int cq_cmd_sandbox(int argc, char **argv);
int cq_cmd_exec(int argc, char **argv);
int cq_cmd_mcp(int argc, char **argv);
int cq_cmd_tenant(int argc, char **argv);
int cq_cmd_key(int argc, char **argv);
int cq_cmd_audit(int argc, char **argv);
int cq_cmd_at_rest(int argc, char **argv);

#endif
