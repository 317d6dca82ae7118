/* common/error.h - the one error idiom of codeq.
 *
 * Every fallible function returns 0 on success, or -1 and fills a struct cq_error
 * with an errno value (or a CQ_E* code) and a message that says what failed and
 * with which input ("mount /usr on /newroot/usr: Operation not permitted").
 * Callers add context on the way up with cq_error_prefix() instead of logging at
 * every level; the error is reported once, where it is handled.
 *
 * A function that produces a count, a length or an id returns it (>= 0) instead of 0
 * and says so in its comment (cq_msg_recv: the message length, 0 at end of stream).
 *
 * Exceptions, each with its reason:
 *  - sandbox/init/shim.c run_command() and what it calls (drop_privileges,
 *    exec_search, init_install_filter): they run in the forked child between fork and
 *    execve and return -1 with errno, as the system calls they wrap do. The child
 *    reports one errno and a step name through the exec-error pipe, and the
 *    supervisor words the error from those ("cannot run 'x'" for the step "execve").
 *  - sandbox/seccomp_policy.c cq_seccomp_policy_build(): 0 or libseccomp's negative
 *    errno. It is linked only into the build-time tool codeq-seccomp-gen, which does
 *    not link common/, and its rule helpers chain libseccomp calls on that value.
 *  - sandbox/sandbox.h cq_process_kill() and cq_process_signal(): -1 without err
 *    means "not delivered, the process had ended", an answer callers act on (and
 *    often expect), not a failure to report.
 */
#ifndef CQ_COMMON_ERROR_H
#define CQ_COMMON_ERROR_H

#include <errno.h>
#include <stdarg.h>

/* Codes beyond errno for failures that are not a syscall's. Kept above any errno. */
enum {
    CQ_EINVALID = 1000, /* bad input from a user or client */
    CQ_ELIMIT,          /* a configured limit was hit */
    CQ_ETIMEOUT,        /* a deadline passed */
    CQ_EPROTO,          /* a peer broke the wire protocol */
    CQ_ENOTFOUND,       /* the named thing does not exist */
    CQ_EINTERNAL,       /* a bug or an impossible state */
    CQ_EDENIED,         /* a request's signature or key was refused */
};

struct cq_error {
    int code;
    char msg[512];
};

/* Fill err (if not NULL) and return -1, so call sites can `return cq_error_set(...)`. */
int cq_error_set(struct cq_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Like cq_error_set, with ": <strerror(code)>" appended. For syscall failures. */
int cq_error_sys(struct cq_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prepend context to an existing message ("create sandbox: " + msg). Returns -1. */
int cq_error_prefix(struct cq_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

void cq_error_clear(struct cq_error *err);

/* A short name for a code: "EPERM", "CQ_ELIMIT"; never NULL. */
const char *cq_error_code_name(int code);

#endif
