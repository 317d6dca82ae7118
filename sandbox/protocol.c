/* sandbox/protocol.c - see protocol.h. Linked into both the library and the static
 * init binary, so it uses only libc and common/error.c. */
#define _GNU_SOURCE
#include "sandbox/protocol.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

struct field_header {
    uint16_t tag;
    uint16_t pad;
    uint32_t len;
};

static size_t align8(size_t n)
{
    return (n + 7) & ~(size_t)7;
}

void cq_msg_begin(struct cq_msg_writer *w, uint32_t type)
{
    memcpy(w->buf, &type, sizeof(type));
    w->len = 8;
    w->overflow = false;
}

static void put_two(struct cq_msg_writer *w, uint16_t tag, const void *a, size_t alen,
                    const void *b, size_t blen, const void *c, size_t clen)
{
    size_t total = alen + blen + clen;
    if (w->overflow || total > UINT32_MAX ||
        w->len + sizeof(struct field_header) + align8(total) > sizeof(w->buf)) {
        w->overflow = true;
        return;
    }
    struct field_header h = {.tag = tag, .pad = 0, .len = (uint32_t)total};
    memcpy(w->buf + w->len, &h, sizeof(h));
    uint8_t *p = w->buf + w->len + sizeof(h);
    if (alen)
        memcpy(p, a, alen);
    if (blen)
        memcpy(p + alen, b, blen);
    if (clen)
        memcpy(p + alen + blen, c, clen);
    memset(p + total, 0, align8(total) - total);
    w->len += sizeof(h) + align8(total);
}

void cq_msg_put(struct cq_msg_writer *w, uint16_t tag, const void *data, size_t len)
{
    put_two(w, tag, data, len, NULL, 0, NULL, 0);
}

void cq_msg_put_str(struct cq_msg_writer *w, uint16_t tag, const char *s)
{
    put_two(w, tag, s, strlen(s) + 1, NULL, 0, NULL, 0);
}

void cq_msg_put_mount(struct cq_msg_writer *w, const struct cq_mount_op *op, const char *src,
                      const char *dst)
{
    src = src != NULL ? src : "";
    dst = dst != NULL ? dst : "";
    put_two(w, CQ_F_MOUNT, op, sizeof(*op), src, strlen(src) + 1, dst, strlen(dst) + 1);
}

/* Room for the SCM_RIGHTS of CQ_PROTO_MAX_FDS descriptors, aligned for cmsghdr. */
union fd_control {
    char buf[CMSG_SPACE(sizeof(int) * CQ_PROTO_MAX_FDS)];
    struct cmsghdr align;
};

/* For messages: the type a buffer starts with. */
static const char *type_name(const void *buf)
{
    static const char *const names[] = {
        [CQ_MSG_CONFIG] = "CONFIG",   [CQ_MSG_READY] = "READY",
        [CQ_MSG_ERROR] = "ERROR",     [CQ_MSG_SPAWN] = "SPAWN",
        [CQ_MSG_STARTED] = "STARTED", [CQ_MSG_SPAWN_FAILED] = "SPAWN_FAILED",
        [CQ_MSG_EXITED] = "EXITED",   [CQ_MSG_KILL] = "KILL",
        [CQ_MSG_CGROUP] = "CGROUP",   [CQ_MSG_SIGNAL] = "SIGNAL",
    };
    uint32_t type;
    memcpy(&type, buf, sizeof(type));
    if (type < sizeof(names) / sizeof(names[0]) && names[type] != NULL)
        return names[type];
    return "unknown";
}

static int send_bytes(int sock, const void *buf, size_t len, const int *fds, size_t nfds,
                      struct cq_error *err)
{
    if (nfds > CQ_PROTO_MAX_FDS)
        return cq_error_set(err, EINVAL, "send %s message: %zu fds, at most %d", type_name(buf),
                            nfds, CQ_PROTO_MAX_FDS);
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
    union fd_control control;
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    if (nfds > 0) {
        memset(&control, 0, sizeof(control));
        msg.msg_control = control.buf;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * nfds);
    }
    for (;;) {
        ssize_t n = sendmsg(sock, &msg, MSG_NOSIGNAL);
        if (n >= 0 && (size_t)n == len)
            return 0;
        if (n >= 0)
            return cq_error_set(err, EIO, "send %s message: %zd of %zu bytes sent", type_name(buf),
                                n, len);
        if (errno != EINTR)
            return cq_error_sys(err, errno, "send %s message", type_name(buf));
    }
}

int cq_msg_send(int sock, const struct cq_msg_writer *w, const int *fds, size_t nfds,
                struct cq_error *err)
{
    if (w->overflow)
        return cq_error_set(err, EMSGSIZE, "send %s message: longer than %d bytes",
                            type_name(w->buf), CQ_PROTO_MAX_MSG);
    return send_bytes(sock, w->buf, w->len, fds, nfds, err);
}

int cq_msg_send_int(int sock, uint32_t type, uint16_t tag, int32_t value, struct cq_error *err)
{
    uint8_t buf[8 + sizeof(struct field_header) + 8] = {0};
    struct field_header h = {.tag = tag, .pad = 0, .len = sizeof(value)};
    memcpy(buf, &type, sizeof(type));
    memcpy(buf + 8, &h, sizeof(h));
    memcpy(buf + 8 + sizeof(h), &value, sizeof(value));
    return send_bytes(sock, buf, sizeof(buf), NULL, 0, err);
}

int cq_msg_send_type(int sock, uint32_t type, const int *fds, size_t nfds, struct cq_error *err)
{
    uint8_t header[8] = {0};
    memcpy(header, &type, sizeof(type));
    return send_bytes(sock, header, sizeof(header), fds, nfds, err);
}

/* Moves the SCM_RIGHTS fds of msg into fds (up to max_fds; the rest are closed, so
 * none leaks) and returns how many. */
static size_t take_fds(struct msghdr *msg, int *fds, size_t max_fds)
{
    size_t got = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c != NULL; c = CMSG_NXTHDR(msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        int *incoming = (int *)CMSG_DATA(c);
        for (size_t i = 0; i < count; i++) {
            if (got < max_fds)
                fds[got++] = incoming[i];
            else
                close(incoming[i]);
        }
    }
    return got;
}

ssize_t cq_msg_recv(int sock, void *buf, size_t cap, int *fds, size_t *nfds, struct cq_error *err)
{
    struct iovec iov = {.iov_base = buf, .iov_len = cap};
    union fd_control control;
    struct msghdr msg = {
        .msg_iov = &iov,
        .msg_iovlen = 1,
        .msg_control = control.buf,
        .msg_controllen = sizeof(control.buf),
    };
    size_t max_fds = nfds != NULL ? *nfds : 0;
    if (nfds != NULL)
        *nfds = 0;
    ssize_t n;
    do
        n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return cq_error_sys(err, errno, "receive a message");
    /* Collect fds first so that none leaks even when the message is then refused. */
    size_t got = take_fds(&msg, fds, max_fds);
    if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
        for (size_t i = 0; i < got; i++)
            close(fds[i]);
        return cq_error_set(err, CQ_EPROTO, "receive a message: truncated (%s, at most %zu bytes)",
                            msg.msg_flags & MSG_CTRUNC ? "too many fds" : "too long", cap);
    }
    if (nfds != NULL)
        *nfds = got;
    return n;
}

int cq_msg_await(int sock, int timeout_ms, void *buf, size_t cap, struct cq_msg_reader *r,
                 struct cq_error *err)
{
    struct pollfd pfd = {.fd = sock, .events = POLLIN};
    int rc;
    while ((rc = poll(&pfd, 1, timeout_ms)) < 0 && errno == EINTR)
        ;
    if (rc < 0)
        return cq_error_sys(err, errno, "wait for an answer");
    if (rc == 0)
        return cq_error_set(err, CQ_ETIMEOUT, "no answer within %d s", timeout_ms / 1000);
    ssize_t n = cq_msg_recv(sock, buf, cap, NULL, NULL, err);
    if (n <= 0)
        return (int)n;
    if (cq_msg_reader_init(r, buf, (size_t)n, err) < 0)
        return -1;
    return 1;
}

int cq_msg_reader_init(struct cq_msg_reader *r, const void *buf, size_t len, struct cq_error *err)
{
    if (len < 8)
        return cq_error_set(err, CQ_EPROTO, "malformed message: %zu bytes, no header", len);
    r->buf = buf;
    r->len = len;
    r->pos = 8;
    memcpy(&r->type, buf, sizeof(r->type));
    return 0;
}

int cq_msg_next(struct cq_msg_reader *r, uint16_t *tag, const void **data, size_t *len,
                struct cq_error *err)
{
    if (r->pos == r->len)
        return 0;
    struct field_header h;
    if (r->len - r->pos < sizeof(h))
        return cq_error_set(err, CQ_EPROTO, "malformed message: a field header cut at byte %zu",
                            r->pos);
    memcpy(&h, r->buf + r->pos, sizeof(h));
    size_t body = r->pos + sizeof(h);
    if (h.len > r->len - body)
        return cq_error_set(err, CQ_EPROTO,
                            "malformed message: field %u at byte %zu claims %u bytes, %zu left",
                            h.tag, r->pos, h.len, r->len - body);
    *tag = h.tag;
    *data = r->buf + body;
    *len = h.len;
    size_t next = body + align8(h.len);
    r->pos = next > r->len ? r->len : next;
    return 1;
}

const char *cq_msg_str(const void *data, size_t len)
{
    if (len == 0 || ((const char *)data)[len - 1] != '\0')
        return NULL;
    return data;
}

void cq_msg_error_fields(const struct cq_msg_reader *r, int *code, const char **text)
{
    struct cq_msg_reader copy = *r;
    uint16_t tag;
    const void *data;
    size_t len;
    while (cq_msg_next(&copy, &tag, &data, &len, NULL) > 0) {
        if (tag == CQ_F_ERRNO && len == sizeof(int32_t)) {
            int32_t value;
            memcpy(&value, data, sizeof(value));
            *code = value;
        } else if (tag == CQ_F_TEXT && cq_msg_str(data, len) != NULL) {
            *text = data;
        }
    }
}

int cq_msg_mount(const void *data, size_t len, struct cq_mount_op *op, const char **src,
                 const char **dst, struct cq_error *err)
{
    if (len < sizeof(*op))
        return cq_error_set(err, CQ_EPROTO, "malformed mount field: %zu bytes", len);
    memcpy(op, data, sizeof(*op));
    const char *strings = (const char *)data + sizeof(*op);
    size_t rest = len - sizeof(*op);
    const char *end_src = memchr(strings, '\0', rest);
    if (end_src == NULL)
        return cq_error_set(err, CQ_EPROTO, "malformed mount field: unterminated source");
    size_t used = (size_t)(end_src - strings) + 1;
    if (cq_msg_str(strings + used, rest - used) == NULL)
        return cq_error_set(err, CQ_EPROTO, "malformed mount field: unterminated destination");
    *src = strings;
    *dst = strings + used;
    return 0;
}
