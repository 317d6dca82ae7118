/* codeq-worker: serves the requests the dispatchers route to it. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include "worker/daemon/daemon.h"

static struct cq_daemon *running;

static void on_signal(int sig)
{
    (void)sig;
    if (running != NULL)
        cq_daemon_stop(running);
}

int main(int argc, char **argv)
{
    struct cq_fleet_config cfg;
    cq_fleet_config_init(&cfg);
    struct cq_error err;
    bool help;
    if (cq_fleet_config_load(&cfg, argc, argv, &help, &err) < 0) {
        fprintf(stderr, "codeq-worker: %s (see --help)\n", err.msg);
        return 2;
    }
    if (help) {
        printf("usage: codeq-worker [--config FILE] [--name VALUE]...\n\n"
               "Runs requests routed to this worker (topic codeq.worker.<worker-id>) in\n"
               "sandboxed sessions, keeps session files in Redis, heartbeats its capacity.\n"
               "SIGTERM or SIGINT drains it: no new sessions, queued work finishes, sessions\n"
               "are handed back, then it exits. Needs root (namespaces, cgroups).\n\n");
        cq_fleet_config_usage(stdout);
        return 0;
    }
    cq_log_setup("worker", cfg.log_level);
    signal(SIGPIPE, SIG_IGN);
    struct cq_daemon *d;
    if (cq_daemon_create(&cfg, &d, &err) < 0) {
        cq_log(CQ_LOG_ERROR, "cannot start: %s", err.msg);
        fprintf(stderr, "codeq-worker: %s\n", err.msg);
        return 1;
    }
    running = d;
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    int rc = cq_daemon_run(d, &err);
    if (rc < 0)
        cq_log(CQ_LOG_ERROR, "%s", err.msg);
    running = NULL;
    cq_daemon_destroy(d);
    return rc < 0 ? 1 : 0;
}
