/* worker/cancel.c - cancelling a call in progress (see worker.h). A kernel's cell
 * polls the eventfd beside its pipes; a command, waited on inside the sandbox module,
 * is killed by the hook that cq_command_run sets for as long as it waits. */
#define _GNU_SOURCE
#include "worker/internal.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

struct cq_cancel {
    int fd; /* readable once fired; never read, so it stays readable */
    atomic_bool fired;
    pthread_mutex_t lock; /* hook and hook_arg */
    void (*hook)(void *arg);
    void *hook_arg;
};

int cq_cancel_create(struct cq_cancel **out, struct cq_error *err)
{
    struct cq_cancel *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return cq_error_sys(err, ENOMEM, "a cancellation");
    c->fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (c->fd < 0) {
        int e = errno;
        free(c);
        return cq_error_sys(err, e, "eventfd");
    }
    atomic_init(&c->fired, false);
    pthread_mutex_init(&c->lock, NULL);
    *out = c;
    return 0;
}

void cq_cancel_fire(struct cq_cancel *c)
{
    if (c == NULL || atomic_exchange(&c->fired, true))
        return;
    uint64_t one = 1;
    /* Cannot fail: the counter is far from overflowing after one write. */
    if (write(c->fd, &one, sizeof(one)) < 0)
        return;
    pthread_mutex_lock(&c->lock);
    if (c->hook != NULL)
        c->hook(c->hook_arg);
    pthread_mutex_unlock(&c->lock);
}

bool cq_cancel_fired(const struct cq_cancel *c)
{
    return c != NULL && atomic_load(&((struct cq_cancel *)c)->fired);
}

void cq_cancel_free(struct cq_cancel *c)
{
    if (c == NULL)
        return;
    close(c->fd);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

int cq_cancel_fd(const struct cq_cancel *c)
{
    return c != NULL ? c->fd : -1;
}

void cq_cancel_hook(struct cq_cancel *c, void (*hook)(void *arg), void *arg)
{
    if (c == NULL)
        return;
    pthread_mutex_lock(&c->lock);
    c->hook = hook;
    c->hook_arg = arg;
    /* Fired before the hook was set: cq_cancel_fire saw no hook, so run it now. */
    if (hook != NULL && atomic_load(&c->fired))
        hook(arg);
    pthread_mutex_unlock(&c->lock);
}
