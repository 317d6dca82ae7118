/* dispatcher/routes.h - the routes a dispatcher learnt from Redis (session -> owner
 * worker and fencing token), remembered so that a session's next request can be
 * forwarded while Redis records it, instead of after (dispatcher.c, fast_forward()).
 * Only a hint: Redis stays the authority, and a worker refuses a forward that Redis
 * did not record for it (its claim), so a stale route costs a wasted message. */
#ifndef CQ_DISPATCHER_ROUTES_H
#define CQ_DISPATCHER_ROUTES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cq_routes;

struct cq_routes *cq_routes_new(void);
void cq_routes_free(struct cq_routes *routes);

/* True, with the owner and token, when a route for session_id is remembered. */
bool cq_routes_get(const struct cq_routes *routes, const char *session_id, char *owner,
                   size_t owner_len, uint64_t *fence);
/* Remembers a route Redis gave, replacing whatever shared its slot. */
void cq_routes_put(struct cq_routes *routes, const char *session_id, const char *owner,
                   uint64_t fence);
void cq_routes_forget(struct cq_routes *routes, const char *session_id);

#endif
