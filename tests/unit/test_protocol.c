/* tests/unit/test_protocol.c - sandbox/protocol.c: the messages between the
 * supervisor, the sandbox's init and the shims. The encoding must round-trip, the
 * reader must refuse anything malformed (init parses what the host sends, the host
 * parses what a possibly compromised sandbox sends), and no received fd may leak. */
#define _GNU_SOURCE
#include "sandbox/protocol.h"
#include "unit.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

/* --- helpers ------------------------------------------------------------------------ */

static struct cq_msg_writer *new_writer(uint32_t type)
{
    /* Writers are 64K: on the heap, as the library does. */
    struct cq_msg_writer *w = malloc(sizeof(*w));
    ck_assert_ptr_nonnull(w);
    memset(w, 0xa5, sizeof(*w)); /* garbage, so that unwritten padding would show */
    cq_msg_begin(w, type);
    return w;
}

static size_t align8(size_t n)
{
    return (n + 7) & ~(size_t)7;
}

static int count_open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    ck_assert_ptr_nonnull(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

static void seqpacket_pair(int sv[2])
{
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
}

static bool same_file(int a, int b)
{
    struct stat sa, sb;
    ck_assert_int_eq(fstat(a, &sa), 0);
    ck_assert_int_eq(fstat(b, &sb), 0);
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* Expects a call to have failed: -1, err's code, and a message saying what failed. */
static void expect_failure(long rc, const struct cq_error *err, int code)
{
    ck_assert_int_eq(rc, -1);
    ck_assert_msg(err->code == code, "code %s, expected %s (%s)", cq_error_code_name(err->code),
                  cq_error_code_name(code), err->msg);
    ck_assert_msg(err->msg[0] != '\0', "no message");
}

/* Expects the next field of r to be tag with exactly len bytes equal to data. */
static void expect_field(struct cq_msg_reader *r, uint16_t tag, const void *data, size_t len)
{
    uint16_t got_tag = 0;
    const void *got = NULL;
    size_t got_len = 0;
    ck_assert_int_eq(cq_msg_next(r, &got_tag, &got, &got_len, NULL), 1);
    ck_assert_uint_eq(got_tag, tag);
    ck_assert_uint_eq(got_len, len);
    if (len > 0)
        ck_assert_int_eq(memcmp(got, data, len), 0);
}

/* --- encoding ----------------------------------------------------------------------- */

START_TEST(round_trip_of_all_field_kinds)
{
    struct cq_msg_writer *w = new_writer(CQ_MSG_SPAWN);
    struct cq_spawn_params params = {
        .timeout_ms = 1234, .rlimit_fsize = 1 << 20, .rlimit_nofile = 64, .stdio = {0, 1, 1}};
    int32_t code = -EPERM;
    const uint8_t odd[13] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13};
    struct cq_mount_op op = {.kind = CQ_MOUNT_TMPFS,
                             .flags = CQ_MOUNT_NOEXEC | CQ_MOUNT_OPTIONAL,
                             .size_bytes = 64ULL << 30,
                             .inodes = 65536,
                             .mode = 01777,
                             .owner = 1000};

    cq_msg_put_str(w, CQ_F_ARG, "python3");
    cq_msg_put_str(w, CQ_F_ARG, "");
    cq_msg_put(w, CQ_F_SPAWN, &params, sizeof(params));
    cq_msg_put(w, CQ_F_ERRNO, &code, sizeof(code));
    cq_msg_put(w, CQ_F_TEXT, NULL, 0);
    cq_msg_put(w, 0xfffe, odd, sizeof(odd)); /* unknown tags travel too */
    cq_msg_put_mount(w, &op, "/usr", "/workspace");
    ck_assert(!w->overflow);

    /* Header, then every field padded to 8 bytes. */
    size_t expected = 8 + (8 + align8(8)) + (8 + align8(1)) + (8 + align8(sizeof(params))) +
                      (8 + 8) + 8 + (8 + align8(13)) + (8 + align8(sizeof(op) + 5 + 11));
    ck_assert_uint_eq(w->len, expected);
    ck_assert_uint_eq(w->len % 8, 0);

    struct cq_msg_reader r;
    ck_assert_int_eq(cq_msg_reader_init(&r, w->buf, w->len, NULL), 0);
    ck_assert_uint_eq(r.type, CQ_MSG_SPAWN);
    expect_field(&r, CQ_F_ARG, "python3", 8);
    expect_field(&r, CQ_F_ARG, "", 1);
    expect_field(&r, CQ_F_SPAWN, &params, sizeof(params));
    expect_field(&r, CQ_F_ERRNO, &code, sizeof(code));
    expect_field(&r, CQ_F_TEXT, NULL, 0);

    uint16_t tag;
    const void *data;
    size_t len;
    ck_assert_int_eq(cq_msg_next(&r, &tag, &data, &len, NULL), 1);
    ck_assert_uint_eq(tag, 0xfffe);
    ck_assert_uint_eq(len, sizeof(odd));
    ck_assert_int_eq(memcmp(data, odd, sizeof(odd)), 0);
    /* Padding is zeroed: nothing of the writer's memory goes over the wire. */
    for (size_t i = sizeof(odd); i < align8(sizeof(odd)); i++)
        ck_assert_int_eq(((const uint8_t *)data)[i], 0);

    ck_assert_int_eq(cq_msg_next(&r, &tag, &data, &len, NULL), 1);
    ck_assert_uint_eq(tag, CQ_F_MOUNT);
    struct cq_mount_op got;
    const char *src = NULL, *dst = NULL;
    ck_assert_int_eq(cq_msg_mount(data, len, &got, &src, &dst, NULL), 0);
    ck_assert_int_eq(memcmp(&got, &op, sizeof(op)), 0);
    ck_assert_str_eq(src, "/usr");
    ck_assert_str_eq(dst, "/workspace");

    ck_assert_int_eq(cq_msg_next(&r, &tag, &data, &len, NULL), 0);
    ck_assert_int_eq(cq_msg_next(&r, &tag, &data, &len, NULL), 0); /* the end stays the end */
    free(w);
}
END_TEST

START_TEST(string_fields)
{
    ck_assert_str_eq(cq_msg_str("abc", 4), "abc");
    ck_assert_ptr_null(cq_msg_str("abc", 3)); /* not terminated */
    ck_assert_ptr_null(cq_msg_str("", 0));
    ck_assert_str_eq(cq_msg_str("", 1), "");
    /* Terminated at the end is what counts; an inner NUL just shortens the text. */
    ck_assert_str_eq(cq_msg_str("a\0b", 4), "a");
    ck_assert_ptr_null(cq_msg_str("a\0b", 3));
}
END_TEST

START_TEST(mount_with_null_strings)
{
    struct cq_msg_writer *w = new_writer(CQ_MSG_CONFIG);
    struct cq_mount_op op = {.kind = CQ_MOUNT_ROOT_RDONLY};
    cq_msg_put_mount(w, &op, NULL, NULL);
    struct cq_msg_reader r;
    ck_assert_int_eq(cq_msg_reader_init(&r, w->buf, w->len, NULL), 0);
    uint16_t tag;
    const void *data;
    size_t len;
    ck_assert_int_eq(cq_msg_next(&r, &tag, &data, &len, NULL), 1);
    ck_assert_uint_eq(len, sizeof(op) + 2);
    struct cq_mount_op got;
    const char *src = "x", *dst = "x";
    ck_assert_int_eq(cq_msg_mount(data, len, &got, &src, &dst, NULL), 0);
    ck_assert_uint_eq(got.kind, CQ_MOUNT_ROOT_RDONLY);
    ck_assert_str_eq(src, "");
    ck_assert_str_eq(dst, "");
    free(w);
}
END_TEST

START_TEST(mount_rejects_malformed)
{
    struct {
        struct cq_mount_op op;
        char strings[16];
    } f;
    memset(&f, 0, sizeof(f));
    struct cq_mount_op op;
    const char *src, *dst;
    struct cq_error err = {0};
    /* Shorter than the op itself. */
    expect_failure(cq_msg_mount(&f, sizeof(f.op) - 1, &op, &src, &dst, &err), &err, CQ_EPROTO);
    /* No strings at all. */
    expect_failure(cq_msg_mount(&f, sizeof(f.op), &op, &src, &dst, &err), &err, CQ_EPROTO);
    /* The source is not terminated. */
    memcpy(f.strings, "abcd", 4);
    expect_failure(cq_msg_mount(&f, sizeof(f.op) + 4, &op, &src, &dst, &err), &err, CQ_EPROTO);
    /* Source, but no destination. */
    memcpy(f.strings, "abc\0", 4);
    expect_failure(cq_msg_mount(&f, sizeof(f.op) + 4, &op, &src, &dst, &err), &err, CQ_EPROTO);
    /* The destination is not terminated. */
    memcpy(f.strings, "abc\0/dst", 8);
    expect_failure(cq_msg_mount(&f, sizeof(f.op) + 8, &op, &src, &dst, &err), &err, CQ_EPROTO);
    /* And well-formed it is accepted. */
    memcpy(f.strings, "abc\0/dst\0", 9);
    ck_assert_int_eq(cq_msg_mount(&f, sizeof(f.op) + 9, &op, &src, &dst, NULL), 0);
    ck_assert_str_eq(src, "abc");
    ck_assert_str_eq(dst, "/dst");
}
END_TEST

/* --- the reader on malformed input -------------------------------------------------- */

START_TEST(reader_rejects_short_header)
{
    uint8_t buf[8] = {CQ_MSG_READY};
    struct cq_msg_reader r;
    struct cq_error err = {0};
    for (size_t len = 0; len < 8; len++)
        expect_failure(cq_msg_reader_init(&r, buf, len, &err), &err, CQ_EPROTO);
    /* A bare header is a valid message without fields. */
    ck_assert_int_eq(cq_msg_reader_init(&r, buf, 8, NULL), 0);
    ck_assert_uint_eq(r.type, CQ_MSG_READY);
    uint16_t tag;
    const void *data;
    size_t len;
    ck_assert_int_eq(cq_msg_next(&r, &tag, &data, &len, NULL), 0);
}
END_TEST

START_TEST(reader_rejects_truncated_field_header)
{
    struct cq_msg_writer *w = new_writer(CQ_MSG_SPAWN);
    cq_msg_put_str(w, CQ_F_ARG, "ls");
    struct cq_msg_reader r;
    uint16_t tag;
    const void *data;
    size_t len;
    /* Cut inside the field header (8 bytes after the message header). */
    for (size_t cut = 9; cut < 16; cut++) {
        ck_assert_int_eq(cq_msg_reader_init(&r, w->buf, cut, NULL), 0);
        struct cq_error err = {0};
        ck_assert_msg(cq_msg_next(&r, &tag, &data, &len, &err) == -1, "cut at %zu accepted", cut);
        expect_failure(-1, &err, CQ_EPROTO);
    }
    free(w);
}
END_TEST

START_TEST(reader_rejects_length_beyond_buffer)
{
    struct cq_msg_writer *w = new_writer(CQ_MSG_SPAWN);
    cq_msg_put_str(w, CQ_F_ARG, "a string of some length");
    struct cq_msg_reader r;
    uint16_t tag;
    const void *data;
    size_t len;
    /* Cut inside the body: the header claims more than is there. */
    struct cq_error err = {0};
    ck_assert_int_eq(cq_msg_reader_init(&r, w->buf, 16 + 10, NULL), 0);
    expect_failure(cq_msg_next(&r, &tag, &data, &len, &err), &err, CQ_EPROTO);

    /* Lengths forged to the maximum must not wrap any bounds arithmetic. */
    uint32_t forged[] = {UINT32_MAX, UINT32_MAX - 7, 0x80000000u, 25};
    for (size_t i = 0; i < sizeof(forged) / sizeof(forged[0]); i++) {
        memcpy(w->buf + 8 + 4, &forged[i], sizeof(forged[i]));
        ck_assert_int_eq(cq_msg_reader_init(&r, w->buf, w->len, NULL), 0);
        cq_error_clear(&err);
        ck_assert_msg(cq_msg_next(&r, &tag, &data, &len, &err) == -1, "length %u accepted",
                      forged[i]);
        expect_failure(-1, &err, CQ_EPROTO);
    }
    free(w);
}
END_TEST

START_TEST(reader_accepts_unpadded_last_field)
{
    /* A last field that ends exactly at the end of the buffer, without padding. */
    struct cq_msg_writer *w = new_writer(CQ_MSG_SPAWN);
    cq_msg_put_str(w, CQ_F_CWD, "/tmp"); /* 5 bytes + 3 of padding */
    struct cq_msg_reader r;
    ck_assert_int_eq(cq_msg_reader_init(&r, w->buf, w->len - 3, NULL), 0);
    expect_field(&r, CQ_F_CWD, "/tmp", 5);
    uint16_t tag;
    const void *data;
    size_t len;
    ck_assert_int_eq(cq_msg_next(&r, &tag, &data, &len, NULL), 0);
    free(w);
}
END_TEST

START_TEST(reader_stops_at_second_bad_field)
{
    struct cq_msg_writer *w = new_writer(CQ_MSG_SPAWN);
    cq_msg_put_str(w, CQ_F_ARG, "good");
    cq_msg_put_str(w, CQ_F_ARG, "bad");
    uint32_t forged = 4096;
    memcpy(w->buf + 8 + 16 + 4, &forged, sizeof(forged));
    struct cq_msg_reader r;
    ck_assert_int_eq(cq_msg_reader_init(&r, w->buf, w->len, NULL), 0);
    expect_field(&r, CQ_F_ARG, "good", 5);
    uint16_t tag;
    const void *data;
    size_t len;
    struct cq_error err = {0};
    expect_failure(cq_msg_next(&r, &tag, &data, &len, &err), &err, CQ_EPROTO);
    free(w);
}
END_TEST

/* --- writer overflow ---------------------------------------------------------------- */

START_TEST(writer_fills_exactly_then_overflows)
{
    struct cq_msg_writer *w = new_writer(CQ_MSG_CONFIG);
    size_t room = CQ_PROTO_MAX_MSG - 8 - 8; /* message header, field header */
    uint8_t *big = calloc(1, room + 1);
    ck_assert_ptr_nonnull(big);
    cq_msg_put(w, CQ_F_TEXT, big, room);
    ck_assert(!w->overflow);
    ck_assert_uint_eq(w->len, CQ_PROTO_MAX_MSG);
    /* Not even an empty field fits now. */
    cq_msg_put(w, CQ_F_TEXT, NULL, 0);
    ck_assert(w->overflow);
    ck_assert_uint_eq(w->len, CQ_PROTO_MAX_MSG);

    /* One byte too many in a fresh message. */
    cq_msg_begin(w, CQ_MSG_CONFIG);
    ck_assert(!w->overflow);
    cq_msg_put(w, CQ_F_TEXT, big, room + 1);
    ck_assert(w->overflow);
    ck_assert_uint_eq(w->len, 8);
    free(big);
    free(w);
}
END_TEST

START_TEST(overflow_is_sticky_and_send_refuses)
{
    struct cq_msg_writer *w = new_writer(CQ_MSG_SPAWN);
    char *huge = malloc(CQ_PROTO_MAX_MSG + 100);
    ck_assert_ptr_nonnull(huge);
    memset(huge, 'a', CQ_PROTO_MAX_MSG + 99);
    huge[CQ_PROTO_MAX_MSG + 99] = '\0';
    cq_msg_put_str(w, CQ_F_ARG, "before");
    size_t before = w->len;
    cq_msg_put_str(w, CQ_F_ARG, huge);
    ck_assert(w->overflow);
    /* Small fields after an overflow are not added: the message is broken. */
    cq_msg_put_str(w, CQ_F_ARG, "after");
    ck_assert(w->overflow);
    ck_assert_uint_eq(w->len, before);
    struct cq_mount_op op = {.kind = CQ_MOUNT_DIR};
    cq_msg_put_mount(w, &op, NULL, huge);
    ck_assert_uint_eq(w->len, before);

    int sv[2];
    seqpacket_pair(sv);
    struct cq_error err = {0};
    expect_failure(cq_msg_send(sv[0], w, NULL, 0, &err), &err, EMSGSIZE);
    /* Nothing was sent. */
    uint8_t buf[64];
    ck_assert_int_eq(recv(sv[1], buf, sizeof(buf), MSG_DONTWAIT), -1);
    ck_assert_int_eq(errno, EAGAIN);
    close(sv[0]);
    close(sv[1]);
    free(huge);
    free(w);
}
END_TEST

START_TEST(send_refuses_too_many_fds)
{
    struct cq_msg_writer *w = new_writer(CQ_MSG_SPAWN);
    int sv[2];
    seqpacket_pair(sv);
    int fds[CQ_PROTO_MAX_FDS + 1];
    for (size_t i = 0; i < CQ_PROTO_MAX_FDS + 1; i++)
        fds[i] = sv[0];
    struct cq_error err = {0};
    expect_failure(cq_msg_send(sv[0], w, fds, CQ_PROTO_MAX_FDS + 1, &err), &err, EINVAL);
    close(sv[0]);
    close(sv[1]);
    free(w);
}
END_TEST

/* --- over a socket ------------------------------------------------------------------ */

START_TEST(send_and_receive_a_full_size_message)
{
    struct cq_msg_writer *w = new_writer(CQ_MSG_CONFIG);
    size_t room = CQ_PROTO_MAX_MSG - 16;
    uint8_t *big = malloc(room);
    ck_assert_ptr_nonnull(big);
    for (size_t i = 0; i < room; i++)
        big[i] = (uint8_t)(i * 7);
    cq_msg_put(w, CQ_F_TEXT, big, room);
    int sv[2];
    seqpacket_pair(sv);
    ck_assert_int_eq(cq_msg_send(sv[0], w, NULL, 0, NULL), 0);
    uint8_t *buf = malloc(CQ_PROTO_MAX_MSG);
    ck_assert_ptr_nonnull(buf);
    ck_assert_int_eq(cq_msg_recv(sv[1], buf, CQ_PROTO_MAX_MSG, NULL, NULL, NULL), CQ_PROTO_MAX_MSG);
    ck_assert_int_eq(memcmp(buf, w->buf, CQ_PROTO_MAX_MSG), 0);
    struct cq_msg_reader r;
    ck_assert_int_eq(cq_msg_reader_init(&r, buf, CQ_PROTO_MAX_MSG, NULL), 0);
    expect_field(&r, CQ_F_TEXT, big, room);
    close(sv[0]);
    close(sv[1]);
    free(buf);
    free(big);
    free(w);
}
END_TEST

START_TEST(passes_fds)
{
    int sv[2];
    seqpacket_pair(sv);
    int p[2];
    ck_assert_int_eq(pipe(p), 0); /* not CLOEXEC: the received copies must be anyway */
    int null = open("/dev/null", O_RDONLY);
    ck_assert_int_ge(null, 0);
    int sent[3] = {p[0], p[1], null};

    struct cq_msg_writer *w = new_writer(CQ_MSG_SPAWN);
    cq_msg_put_str(w, CQ_F_ARG, "true");
    ck_assert_int_eq(cq_msg_send(sv[0], w, sent, 3, NULL), 0);

    uint8_t buf[256];
    int got[CQ_PROTO_MAX_FDS];
    size_t nfds = CQ_PROTO_MAX_FDS;
    ssize_t n = cq_msg_recv(sv[1], buf, sizeof(buf), got, &nfds, NULL);
    ck_assert_int_eq(n, (ssize_t)w->len);
    ck_assert_int_eq(memcmp(buf, w->buf, w->len), 0);
    ck_assert_uint_eq(nfds, 3);
    for (size_t i = 0; i < 3; i++) {
        ck_assert_int_ge(got[i], 0);
        ck_assert_int_ne(got[i], sent[i]);
        int flags = fcntl(got[i], F_GETFD);
        ck_assert_msg(flags >= 0 && (flags & FD_CLOEXEC), "received fd %d is not CLOEXEC", got[i]);
        ck_assert_msg(same_file(got[i], sent[i]), "fd %zu refers to another file", i);
    }
    /* And they work: the received write end feeds the original read end. */
    ck_assert_int_eq(write(got[1], "x", 1), 1);
    char c = 0;
    ck_assert_int_eq(read(p[0], &c, 1), 1);
    ck_assert_int_eq(c, 'x');

    for (size_t i = 0; i < 3; i++) {
        close(got[i]);
        close(sent[i]);
    }
    close(sv[0]);
    close(sv[1]);
    free(w);
}
END_TEST

START_TEST(extra_fds_are_closed_not_leaked)
{
    int sv[2];
    seqpacket_pair(sv);
    int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
    int sent[5] = {null, null, null, null, null};
    struct cq_msg_writer *w = new_writer(CQ_MSG_CGROUP);
    ck_assert_int_eq(cq_msg_send(sv[0], w, sent, 5, NULL), 0);

    int before = count_open_fds();
    uint8_t buf[64];
    int got[2] = {-1, -1};
    size_t nfds = 2;
    ck_assert_int_eq(cq_msg_recv(sv[1], buf, sizeof(buf), got, &nfds, NULL), (ssize_t)w->len);
    ck_assert_uint_eq(nfds, 2);
    ck_assert(same_file(got[0], null) && same_file(got[1], null));
    ck_assert_int_eq(count_open_fds(), before + 2);
    close(got[0]);
    close(got[1]);
    ck_assert_int_eq(count_open_fds(), before);

    /* No fd array at all: every fd that arrives is closed. */
    ck_assert_int_eq(cq_msg_send(sv[0], w, sent, 5, NULL), 0);
    ck_assert_int_eq(cq_msg_recv(sv[1], buf, sizeof(buf), NULL, NULL, NULL), (ssize_t)w->len);
    ck_assert_int_eq(count_open_fds(), before);

    close(null);
    close(sv[0]);
    close(sv[1]);
    free(w);
}
END_TEST

START_TEST(oversized_message_is_refused_and_fds_closed)
{
    int sv[2];
    seqpacket_pair(sv);
    int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
    int sent[2] = {null, null};
    struct cq_msg_writer *w = new_writer(CQ_MSG_SPAWN);
    cq_msg_put_str(w, CQ_F_ARG, "an argument that makes the message longer than 16 bytes");
    ck_assert_int_eq(cq_msg_send(sv[0], w, sent, 2, NULL), 0);

    int before = count_open_fds();
    uint8_t buf[16];
    int got[CQ_PROTO_MAX_FDS];
    size_t nfds = CQ_PROTO_MAX_FDS;
    struct cq_error err = {0};
    expect_failure(cq_msg_recv(sv[1], buf, sizeof(buf), got, &nfds, &err), &err, CQ_EPROTO);
    ck_assert_uint_eq(nfds, 0);
    ck_assert_int_eq(count_open_fds(), before);

    /* The truncated message is gone; the channel still works for the next one. */
    cq_msg_begin(w, CQ_MSG_READY);
    ck_assert_int_eq(cq_msg_send(sv[0], w, NULL, 0, NULL), 0);
    nfds = CQ_PROTO_MAX_FDS;
    ck_assert_int_eq(cq_msg_recv(sv[1], buf, sizeof(buf), got, &nfds, NULL), 8);
    ck_assert_uint_eq(nfds, 0);

    close(null);
    close(sv[0]);
    close(sv[1]);
    free(w);
}
END_TEST

START_TEST(too_many_fds_for_control_buffer)
{
    /* A peer that does not use cq_msg_send may attach more fds than the receiver's
     * control buffer holds (MSG_CTRUNC): the message is refused, nothing leaks. */
    int sv[2];
    seqpacket_pair(sv);
    int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
    enum { N = CQ_PROTO_MAX_FDS * 2 };
    union {
        char buf[CMSG_SPACE(sizeof(int) * N)];
        struct cmsghdr align;
    } control;
    memset(&control, 0, sizeof(control));
    uint8_t payload[8] = {CQ_MSG_SPAWN};
    struct iovec iov = {.iov_base = payload, .iov_len = sizeof(payload)};
    struct msghdr msg = {.msg_iov = &iov,
                         .msg_iovlen = 1,
                         .msg_control = control.buf,
                         .msg_controllen = sizeof(control.buf)};
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * N);
    int fds[N];
    for (int i = 0; i < N; i++)
        fds[i] = null;
    memcpy(CMSG_DATA(c), fds, sizeof(fds));
    ck_assert_int_eq(sendmsg(sv[0], &msg, 0), (ssize_t)sizeof(payload));

    int before = count_open_fds();
    uint8_t buf[64];
    int got[CQ_PROTO_MAX_FDS];
    size_t nfds = CQ_PROTO_MAX_FDS;
    struct cq_error err = {0};
    expect_failure(cq_msg_recv(sv[1], buf, sizeof(buf), got, &nfds, &err), &err, CQ_EPROTO);
    ck_assert_uint_eq(nfds, 0);
    ck_assert_int_eq(count_open_fds(), before);
    close(null);
    close(sv[0]);
    close(sv[1]);
}
END_TEST

START_TEST(recv_on_closed_peer_returns_zero)
{
    int sv[2];
    seqpacket_pair(sv);
    close(sv[0]);
    uint8_t buf[64];
    int got[CQ_PROTO_MAX_FDS];
    size_t nfds = CQ_PROTO_MAX_FDS;
    ck_assert_int_eq(cq_msg_recv(sv[1], buf, sizeof(buf), got, &nfds, NULL), 0);
    ck_assert_uint_eq(nfds, 0);
    close(sv[1]);
}
END_TEST

START_TEST(recv_would_block_and_bad_fd)
{
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
    uint8_t buf[64];
    struct cq_error err = {0};
    expect_failure(cq_msg_recv(sv[1], buf, sizeof(buf), NULL, NULL, &err), &err, EAGAIN);
    close(sv[0]);
    close(sv[1]);
    expect_failure(cq_msg_recv(sv[1], buf, sizeof(buf), NULL, NULL, &err), &err, EBADF);
}
END_TEST

START_TEST(send_to_closed_peer_is_epipe)
{
    int sv[2];
    seqpacket_pair(sv);
    close(sv[1]);
    struct cq_msg_writer *w = new_writer(CQ_MSG_KILL);
    /* A shim or supervisor that went away is an error code, never a signal. */
    signal(SIGPIPE, SIG_DFL);
    struct cq_error err = {0};
    expect_failure(cq_msg_send(sv[0], w, NULL, 0, &err), &err, EPIPE);
    close(sv[0]);
    free(w);
}
END_TEST

START_TEST(await_reads_times_out_and_sees_the_peer_go)
{
    int sv[2];
    seqpacket_pair(sv);
    uint8_t buf[64];
    struct cq_msg_reader r;
    struct cq_error err = {0};
    /* Nothing comes: a timeout, with a message. */
    expect_failure(cq_msg_await(sv[1], 10, buf, sizeof(buf), &r, &err), &err, CQ_ETIMEOUT);
    /* An answer: 1 and a reader on it. */
    ck_assert_int_eq(cq_msg_send_type(sv[0], CQ_MSG_READY, NULL, 0, NULL), 0);
    ck_assert_int_eq(cq_msg_await(sv[1], 1000, buf, sizeof(buf), &r, NULL), 1);
    ck_assert_uint_eq(r.type, CQ_MSG_READY);
    /* A message too short for a header is refused. */
    ck_assert_int_eq(send(sv[0], "abc", 3, 0), 3);
    cq_error_clear(&err);
    expect_failure(cq_msg_await(sv[1], 1000, buf, sizeof(buf), &r, &err), &err, CQ_EPROTO);
    /* The peer goes away: 0. */
    close(sv[0]);
    ck_assert_int_eq(cq_msg_await(sv[1], 1000, buf, sizeof(buf), &r, NULL), 0);
    close(sv[1]);
}
END_TEST

static Suite *protocol_suite(void)
{
    Suite *s = suite_create("protocol");
    TCase *tc = tcase_create("encoding");
    tcase_add_test(tc, round_trip_of_all_field_kinds);
    tcase_add_test(tc, string_fields);
    tcase_add_test(tc, mount_with_null_strings);
    tcase_add_test(tc, mount_rejects_malformed);
    suite_add_tcase(s, tc);

    tc = tcase_create("reader");
    tcase_add_test(tc, reader_rejects_short_header);
    tcase_add_test(tc, reader_rejects_truncated_field_header);
    tcase_add_test(tc, reader_rejects_length_beyond_buffer);
    tcase_add_test(tc, reader_accepts_unpadded_last_field);
    tcase_add_test(tc, reader_stops_at_second_bad_field);
    suite_add_tcase(s, tc);

    tc = tcase_create("writer");
    tcase_add_test(tc, writer_fills_exactly_then_overflows);
    tcase_add_test(tc, overflow_is_sticky_and_send_refuses);
    tcase_add_test(tc, send_refuses_too_many_fds);
    suite_add_tcase(s, tc);

    tc = tcase_create("socket");
    tcase_add_test(tc, send_and_receive_a_full_size_message);
    tcase_add_test(tc, passes_fds);
    tcase_add_test(tc, extra_fds_are_closed_not_leaked);
    tcase_add_test(tc, oversized_message_is_refused_and_fds_closed);
    tcase_add_test(tc, too_many_fds_for_control_buffer);
    tcase_add_test(tc, recv_on_closed_peer_returns_zero);
    tcase_add_test(tc, recv_would_block_and_bad_fd);
    tcase_add_test(tc, await_reads_times_out_and_sees_the_peer_go);
    tcase_add_test(tc, send_to_closed_peer_is_epipe);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return cq_unit_run(protocol_suite(), false);
}
