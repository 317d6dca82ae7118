/* codeq-worker: serves the requests the dispatchers route to it. */
#include "workerd/workerd.h"
#include "fleet/daemon.h"
#include "common/fileutil.h"

static int create(const struct cq_fleet_config *cfg, void **out, struct cq_error *err)
{
    return cq_daemon_create(cfg, (struct cq_daemon **)out, err);
}

static int run(void *d, struct cq_error *err)
{
    return cq_daemon_run(d, err);
}

static void stop(void *d)
{
    cq_daemon_stop(d);
}

static void destroy(void *d)
{
    cq_daemon_destroy(d);
}

int main(int argc, char **argv)
{
    static const struct cq_fleet_daemon ops = {
        .program = "codeq-worker",
        .component = "worker",
        .about = "Runs requests routed to this worker (topic codeq.worker.<worker-id>, which it\n"
                 "creates if missing; consumer group codeq-worker-<worker-id>) in sandboxed\n"
                 "sessions, keeps session files in Redis, heartbeats its capacity.\n"
                 "SIGTERM or SIGINT drains it: no new sessions, queued work finishes, sessions\n"
                 "are handed back, then it exits. Needs root (namespaces, cgroups).",
        .create = create,
        .run = run,
        .stop = stop,
        .destroy = destroy,
    };
    /* A worker's sessions hold ~11 descriptors each. */
    cq_raise_open_files_limit();
    return cq_fleet_daemon_main(&ops, argc, argv);
}
