/* common/error.h - the one error idiom of codeq.
 *
 * Every fallible function returns 0 on success, or -1 and fills a struct cq_error
 * with an errno value (or a CQ_E* code) and a message that says what failed and
 * with which input ("mount /usr on /newroot/usr: Operation not permitted").
 * Callers add context on the way up with cq_error_prefix() instead of logging at
 * every level; the error is reported once, where it is handled.
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
