/* worker/capacity.c - how many more sessions fit in this host's memory (the fleet's
 * workers advertise it in their heartbeat, and the dispatchers place sessions by it).
 *
 * A session's memory limit (2 GiB by default) says what it may take, not what it
 * takes: an idle session with a forked kernel holds ~4 MiB, an exec'd one ~50 MiB. So
 * the count is what the host has available over what live sessions hold on average,
 * measured from their sandboxes' cgroups; a worker whose sessions grow takes fewer
 * new ones, and one whose host is short of memory for other reasons takes none.
 */
#define _GNU_SOURCE
#include "worker/session.h"
#include "common/fileutil.h"

#include <fcntl.h>
#include <stdint.h>
#include <unistd.h>

/* Sessions sampled for the average: enough for a stable figure, few enough that the
 * heartbeat does not read a thousand cgroups a second under the worker's lock. */
#define SAMPLE_SESSIONS 32
/* What a session is counted at before any is measured (forked: its kernel's own pages
 * and its sandbox's processes; exec'd: a kernel with numpy, pandas and matplotlib). */
#define FORKED_SESSION_BYTES (8ULL << 20)
#define EXECD_SESSION_BYTES  (64ULL << 20)

uint64_t cq_room_by_memory(uint64_t available, uint64_t reserve, uint64_t per_session)
{
    if (per_session == 0 || available <= reserve)
        return 0;
    return (available - reserve) / per_session;
}

uint64_t cq_host_memory_available(void)
{
    char text[4096];
    struct cq_error err;
    uint64_t kb = 0;
    if (cq_read_file_at(AT_FDCWD, "/proc/meminfo", text, sizeof(text), &err) < 0 ||
        cq_keyed_u64(text, "MemAvailable:", &kb) < 0)
        return 0;
    return kb * 1024;
}

uint64_t cq_worker_memory_reserve(const struct cq_worker_config *cfg)
{
    if (cfg->memory_reserve_bytes != 0)
        return cfg->memory_reserve_bytes;
    /* The host's own needs and the worker's: 256 MiB, or 5 % of a large host. */
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    uint64_t total = pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page : 0;
    uint64_t twentieth = total / 20;
    return twentieth > (256ULL << 20) ? twentieth : 256ULL << 20;
}

/* The average charge of up to SAMPLE_SESSIONS live sessions; 0 when none is live. */
static uint64_t session_average(struct cq_worker *w)
{
    uint64_t sum = 0, n = 0;
    pthread_mutex_lock(&w->lock);
    for (struct cq_session *s = w->sessions; s != NULL && n < SAMPLE_SESSIONS; s = s->next) {
        if (s->status != CQ_SESSION_READY || s->sandbox == NULL)
            continue;
        struct cq_sandbox_stats st;
        struct cq_error err;
        if (cq_sandbox_stats(s->sandbox, &st, &err) == 0 && st.memory_current_bytes > 0) {
            sum += st.memory_current_bytes;
            n++;
        }
    }
    pthread_mutex_unlock(&w->lock);
    return n > 0 ? sum / n : 0;
}

uint64_t cq_worker_room_by_memory(struct cq_worker *w)
{
    uint64_t floor = w->cfg.fork_kernels ? FORKED_SESSION_BYTES : EXECD_SESSION_BYTES;
    uint64_t average = session_average(w);
    /* Measured sessions below the floor (just started, nothing run yet) would make
     * room look larger than the next ones will leave. */
    uint64_t per_session = average > floor ? average : floor;
    uint64_t available = cq_host_memory_available();
    /* A kernel that does not say (no MemAvailable: before Linux 3.14) leaves the count
     * to max_sessions, rather than a worker that takes nothing. */
    if (available == 0)
        return UINT64_MAX;
    return cq_room_by_memory(available, cq_worker_memory_reserve(&w->cfg), per_session);
}
