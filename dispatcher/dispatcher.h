/* dispatcher/dispatcher.h - codeq-dispatcher: validates the requests on the request
 * topic, answers what Redis can answer, and forwards the rest to the worker that owns
 * the session (docs/fleet.md). Several dispatchers share the topic as one consumer
 * group; none holds state that Redis does not. */
#ifndef CQ_DISPATCHER_H
#define CQ_DISPATCHER_H

#include "fleet/config.h"

struct cq_dispatcher;

int cq_dispatcher_create(const struct cq_fleet_config *cfg, struct cq_dispatcher **out,
                         struct cq_error *err);
int cq_dispatcher_run(struct cq_dispatcher *d, struct cq_error *err);
void cq_dispatcher_stop(struct cq_dispatcher *d); /* async-signal-safe */
void cq_dispatcher_destroy(struct cq_dispatcher *d);

#endif
