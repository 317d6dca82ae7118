/* codeq-dispatcher: routes requests from the request topic to workers. */
#include "dispatcher/dispatcher.h"
#include "fleet/daemon.h"

static int create(const struct cq_fleet_config *cfg, void **out, struct cq_error *err)
{
    return cq_dispatcher_create(cfg, (struct cq_dispatcher **)out, err);
}

static int run(void *d, struct cq_error *err)
{
    return cq_dispatcher_run(d, err);
}

static void stop(void *d)
{
    cq_dispatcher_stop(d);
}

static void destroy(void *d)
{
    cq_dispatcher_destroy(d);
}

int main(int argc, char **argv)
{
    static const struct cq_fleet_daemon ops = {
        .program = "codeq-dispatcher",
        .component = "dispatcher",
        .about = "Consumes the request topic (consumer group codeq-dispatchers.<request-topic>),\n"
                 "dead-letters what is invalid, answers session queries from Redis, and\n"
                 "forwards each request to the worker that owns its session, moving sessions\n"
                 "of dead workers. Creates the request and dead-letter topics if missing.\n"
                 "Reads only the settings listed first below; set heartbeat-ms as the\n"
                 "workers' (it waits that long for them after a Redis outage).",
        .create = create,
        .run = run,
        .stop = stop,
        .destroy = destroy,
    };
    return cq_fleet_daemon_main(&ops, argc, argv);
}
