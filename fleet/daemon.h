/* fleet/daemon.h - the main() of the fleet's daemons: settings, --help, logs, signals, then
 * run until stopped. */
#ifndef CQ_FLEET_DAEMON_H
#define CQ_FLEET_DAEMON_H

#include "common/error.h"
#include "fleet/config.h"

struct cq_fleet_daemon {
    const char *program;   /* "codeq-worker" */
    const char *component; /* in every log line */
    const char *about;     /* --help's description */
    int (*create)(const struct cq_fleet_config *cfg, void **out, struct cq_error *err);
    int (*run)(void *daemon, struct cq_error *err); /* returns after stop, drained */
    void (*stop)(void *daemon);                     /* async-signal-safe */
    void (*destroy)(void *daemon);
};

/* Exit status: 0, 1 (could not start or failed), 2 (bad settings). */
int cq_fleet_daemon_main(const struct cq_fleet_daemon *ops, int argc, char **argv);

#endif
