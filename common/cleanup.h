/* common/cleanup.h - scope-bound release of fds and heap memory.
 *
 * Declare with cq_autofree / cq_autoclose and early returns cannot leak. Ownership
 * leaves a scope explicitly: cq_steal_ptr(&p) / cq_steal_fd(&fd) return the value
 * and reset the variable so the cleanup handler does nothing.
 */
#ifndef CQ_COMMON_CLEANUP_H
#define CQ_COMMON_CLEANUP_H

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <dirent.h>
#include <errno.h>

static inline void cq_freep(void *p)
{
    free(*(void **)p);
}

static inline void cq_closep(int *fd)
{
    if (*fd >= 0) {
        int saved = errno; /* close() must not clobber the errno being reported */
        close(*fd);
        errno = saved;
    }
}

static inline void cq_fclosep(FILE **f)
{
    if (*f != NULL)
        fclose(*f);
}

static inline void cq_closedirp(DIR **d)
{
    if (*d != NULL)
        closedir(*d);
}

#define cq_autofree     __attribute__((cleanup(cq_freep)))
#define cq_autoclose    __attribute__((cleanup(cq_closep)))
#define cq_autofclose   __attribute__((cleanup(cq_fclosep)))
#define cq_autoclosedir __attribute__((cleanup(cq_closedirp)))

static inline void *cq_steal_ptr_impl(void **pp)
{
    void *p = *pp;
    *pp = NULL;
    return p;
}
#define cq_steal_ptr(pp) cq_steal_ptr_impl((void **)(pp))

static inline int cq_steal_fd(int *fd)
{
    int v = *fd;
    *fd = -1;
    return v;
}

/* Close and reset, for fds that are released before the end of their scope. */
static inline void cq_close_reset(int *fd)
{
    cq_closep(fd);
    *fd = -1;
}

#define CQ_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif
