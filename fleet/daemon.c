/* fleet/daemon.c - the start-up and shutdown both fleet daemons share: settings,
 * --help, logs, signals. SIGTERM and SIGINT only ask the daemon to stop; its run
 * function does the draining in normal thread context. */
#define _GNU_SOURCE
#include "fleet/daemon.h"
#include "fleet/config.h"
#include "fleet/log.h"
#include "fleet/tracing.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static const struct cq_fleet_daemon *running_ops;
static void *running;
static volatile sig_atomic_t signals_seen;

static void on_signal(int sig)
{
    (void)sig;
    signals_seen++;
    if (running != NULL)
        running_ops->stop(running);
}

/* A counter that moves as the daemon stops (a worker's sessions drained) is never
 * scraped if the process exits at once: Prometheus comes every 15 s or so. metrics_linger
 * keeps /metrics up (and /readyz at 503, draining) that long after the drain; the next
 * SIGTERM or SIGINT ends the wait, so an orchestrator's second signal is obeyed. */
static void linger(const struct cq_fleet_config *cfg)
{
    if (cfg->metrics_linger == 0 || cfg->metrics_listen[0] == '\0')
        return;
    sig_atomic_t seen = signals_seen;
    cq_log_event(CQ_LOG_INFO, "metrics_lingering", CQ_FIELDS(CQ_LI("seconds", cfg->metrics_linger)),
                 "drained; /metrics stays up %u s for a last scrape (SIGTERM ends it)",
                 cfg->metrics_linger);
    struct timespec step = {.tv_nsec = 100 * 1000 * 1000};
    for (unsigned i = 0; i < cfg->metrics_linger * 10 && signals_seen == seen; i++)
        nanosleep(&step, NULL);
}

int cq_fleet_daemon_main(const struct cq_fleet_daemon *ops, int argc, char **argv)
{
    struct cq_fleet_config cfg;
    cq_fleet_config_init(&cfg);
    struct cq_error err;
    bool help;
    if (cq_fleet_config_load(&cfg, argc, argv, &help, &err) < 0) {
        fprintf(stderr, "%s: %s (see --help)\n", ops->program, err.msg);
        return 2;
    }
    if (help) {
        printf("usage: %s [--config FILE] [--name VALUE]...\n\n%s\n\n", ops->program, ops->about);
        cq_fleet_config_usage(stdout, strcmp(ops->component, "worker") == 0);
        return 0;
    }
    cq_log_setup(ops->component, cfg.log_level);
    signal(SIGPIPE, SIG_IGN);
    if (cq_tracing_start(&cfg, ops->program, NULL, &err) < 0) {
        fprintf(stderr, "%s: %s\n", ops->program, err.msg);
        return 2;
    }
    void *daemon;
    if (ops->create(&cfg, &daemon, &err) < 0) {
        cq_tracing_stop();
        cq_log_event(CQ_LOG_ERROR, "start_failed", CQ_FIELDS(CQ_LS("error", err.msg)),
                     "cannot start: %s", err.msg);
        fprintf(stderr, "%s: %s\n", ops->program, err.msg);
        return 1;
    }
    running_ops = ops;
    running = daemon;
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    int rc = ops->run(daemon, &err);
    if (rc < 0)
        cq_log_event(CQ_LOG_ERROR, "run_failed", CQ_FIELDS(CQ_LS("error", err.msg)), "%s", err.msg);
    running = NULL;
    if (rc == 0)
        linger(&cfg); /* a drain's final counts; a daemon that failed exits at once */
    ops->destroy(daemon);
    cq_tracing_stop(); /* after the drain: the last requests' spans go too */
    return rc < 0 ? 1 : 0;
}
