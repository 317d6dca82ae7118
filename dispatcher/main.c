/* codeq-dispatcher: routes requests from the request topic to workers. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include "dispatcher/dispatcher.h"

static struct cq_dispatcher *running;

static void on_signal(int sig)
{
    (void)sig;
    if (running != NULL)
        cq_dispatcher_stop(running);
}

int main(int argc, char **argv)
{
    struct cq_fleet_config cfg;
    cq_fleet_config_init(&cfg);
    struct cq_error err;
    bool help;
    if (cq_fleet_config_load(&cfg, argc, argv, &help, &err) < 0) {
        fprintf(stderr, "codeq-dispatcher: %s (see --help)\n", err.msg);
        return 2;
    }
    if (help) {
        printf("usage: codeq-dispatcher [--config FILE] [--name VALUE]...\n\n"
               "Consumes the request topic (group codeq-dispatchers), dead-letters what is\n"
               "invalid, answers session queries from Redis, and forwards each request to\n"
               "the worker that owns its session, moving sessions of dead workers.\n\n");
        cq_fleet_config_usage(stdout);
        return 0;
    }
    cq_log_setup("dispatcher", cfg.log_level);
    signal(SIGPIPE, SIG_IGN);
    struct cq_dispatcher *d;
    if (cq_dispatcher_create(&cfg, &d, &err) < 0) {
        cq_log(CQ_LOG_ERROR, "cannot start: %s", err.msg);
        fprintf(stderr, "codeq-dispatcher: %s\n", err.msg);
        return 1;
    }
    running = d;
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    int rc = cq_dispatcher_run(d, &err);
    if (rc < 0)
        cq_log(CQ_LOG_ERROR, "%s", err.msg);
    running = NULL;
    cq_dispatcher_destroy(d);
    return rc < 0 ? 1 : 0;
}
