/* dispatcher/routes.c - see routes.h.
 *
 * A fixed table indexed by a hash of the session id, one route per slot: two sessions
 * that share a slot evict each other, which only sends one of them the slow way. No
 * lock: one dispatcher thread uses it. */
#include "dispatcher/routes.h"
#include "api/api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SLOTS 4096

struct route {
    char session[CQ_SESSION_ID_MAX + 1]; /* "" when the slot is free */
    char owner[64];
    uint64_t fence;
};

struct cq_routes {
    struct route slot[SLOTS];
};

static size_t slot_of(const char *session_id)
{
    uint64_t h = 1469598103934665603ULL;
    for (const char *p = session_id; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    return (size_t)(h % SLOTS);
}

struct cq_routes *cq_routes_new(void)
{
    return calloc(1, sizeof(struct cq_routes));
}

void cq_routes_free(struct cq_routes *routes)
{
    free(routes);
}

bool cq_routes_get(const struct cq_routes *routes, const char *session_id, char *owner,
                   size_t owner_len, uint64_t *fence)
{
    const struct route *r = &routes->slot[slot_of(session_id)];
    if (session_id[0] == '\0' || strcmp(r->session, session_id) != 0)
        return false;
    snprintf(owner, owner_len, "%s", r->owner);
    *fence = r->fence;
    return true;
}

void cq_routes_put(struct cq_routes *routes, const char *session_id, const char *owner,
                   uint64_t fence)
{
    struct route *r = &routes->slot[slot_of(session_id)];
    /* Ids or owners too long to keep whole are not kept at all. */
    if (strlen(session_id) >= sizeof(r->session) || strlen(owner) >= sizeof(r->owner) ||
        owner[0] == '\0') {
        cq_routes_forget(routes, session_id);
        return;
    }
    snprintf(r->session, sizeof(r->session), "%s", session_id);
    snprintf(r->owner, sizeof(r->owner), "%s", owner);
    r->fence = fence;
}

void cq_routes_forget(struct cq_routes *routes, const char *session_id)
{
    struct route *r = &routes->slot[slot_of(session_id)];
    if (strcmp(r->session, session_id) == 0)
        r->session[0] = '\0';
}
