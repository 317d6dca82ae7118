/* common/error.c - see error.h. */
#define _GNU_SOURCE
#include "common/error.h"

#include <stdio.h>
#include <string.h>

static void error_vformat(struct cq_error *err, int code, const char *fmt, va_list ap)
{
    err->code = code;
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
}

int cq_error_set(struct cq_error *err, int code, const char *fmt, ...)
{
    if (err == NULL)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    error_vformat(err, code, fmt, ap);
    va_end(ap);
    return -1;
}

int cq_error_sys(struct cq_error *err, int code, const char *fmt, ...)
{
    if (err == NULL)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    error_vformat(err, code, fmt, ap);
    va_end(ap);
    size_t used = strlen(err->msg);
    if (used < sizeof(err->msg))
        snprintf(err->msg + used, sizeof(err->msg) - used, ": %s", strerror(code));
    return -1;
}

int cq_error_prefix(struct cq_error *err, const char *fmt, ...)
{
    if (err == NULL)
        return -1;
    char prefix[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    /* Shift the message right and put the prefix in front; truncate the tail. */
    size_t avail = sizeof(err->msg) - 1;
    size_t plen = strlen(prefix);
    if (plen > avail - 2)
        plen = avail - 2;
    size_t mlen = strnlen(err->msg, avail);
    if (plen + 2 + mlen > avail)
        mlen = avail - plen - 2;
    memmove(err->msg + plen + 2, err->msg, mlen);
    memcpy(err->msg, prefix, plen);
    err->msg[plen] = ':';
    err->msg[plen + 1] = ' ';
    err->msg[plen + 2 + mlen] = '\0';
    return -1;
}

void cq_error_clear(struct cq_error *err)
{
    if (err == NULL)
        return;
    err->code = 0;
    err->msg[0] = '\0';
}

const char *cq_error_code_name(int code)
{
    switch (code) {
    case CQ_EINVALID:
        return "CQ_EINVALID";
    case CQ_ELIMIT:
        return "CQ_ELIMIT";
    case CQ_ETIMEOUT:
        return "CQ_ETIMEOUT";
    case CQ_EPROTO:
        return "CQ_EPROTO";
    case CQ_ENOTFOUND:
        return "CQ_ENOTFOUND";
    case CQ_EINTERNAL:
        return "CQ_EINTERNAL";
    case CQ_EDENIED:
        return "CQ_EDENIED";
    case 0:
        return "OK";
    default: {
        const char *name = strerrorname_np(code);
        return name != NULL ? name : "EUNKNOWN";
    }
    }
}
