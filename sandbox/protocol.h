/* sandbox/protocol.h - messages between the supervisor (the library, on the host)
 * and codeq-sandbox-init (pid 1 inside a sandbox) and its per-process shims.
 *
 * Transport: SOCK_SEQPACKET unix sockets, so every message arrives whole or not at
 * all, and file descriptors travel with SCM_RIGHTS. Both ends are built from the
 * same source tree, so fixed-layout payloads are plain structs.
 *
 * A message is a header { u32 type } followed by fields { u16 tag, u16 pad, u32 len,
 * bytes[len] padded to 8 }. Readers check every length against the buffer.
 *
 * Channels:
 *   control socket (one per sandbox)   supervisor -> init: CONFIG, CGROUP, SPAWN
 *                                      init -> supervisor: READY, ERROR
 *   status socket (one per process)    shim -> supervisor: STARTED, SPAWN_FAILED, EXITED
 *                                      supervisor -> shim: KILL, SIGNAL
 */
#ifndef CQ_SANDBOX_PROTOCOL_H
#define CQ_SANDBOX_PROTOCOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include "common/error.h"

#define CQ_PROTO_MAX_MSG (64 * 1024)
#define CQ_PROTO_MAX_FDS 8

enum cq_msg_type {
    CQ_MSG_CONFIG = 1,
    CQ_MSG_READY,
    CQ_MSG_ERROR,
    CQ_MSG_SPAWN,
    CQ_MSG_STARTED,
    CQ_MSG_SPAWN_FAILED,
    CQ_MSG_EXITED,
    CQ_MSG_KILL,
    CQ_MSG_CGROUP, /* supervisor -> init: cgroup v1 `tasks` fds to join (SCM_RIGHTS) */
    CQ_MSG_SIGNAL, /* supervisor -> shim: deliver CQ_F_SIGNAL to the process */
};

enum cq_field_tag {
    CQ_F_HOSTNAME = 1, /* string */
    CQ_F_MOUNT,        /* struct cq_mount_op + "src\0dst\0" */
    CQ_F_IDS,          /* struct cq_ids */
    CQ_F_ARG,          /* string, repeated: argv */
    CQ_F_ENV,          /* string, repeated: NAME=VALUE */
    CQ_F_CWD,          /* string */
    CQ_F_SPAWN,        /* struct cq_spawn_params */
    CQ_F_ERRNO,        /* int32 */
    CQ_F_TEXT,         /* string: a message for people */
    CQ_F_EXIT,         /* struct cq_exit_status */
    CQ_F_INIT_FLAGS,   /* struct cq_init_flags */
    CQ_F_SIGNAL,       /* int32: a signal number */
};

/* What init does to build the sandbox's root, in order: planned by rootfs_plan.c,
 * carried out by init/rootfs.c. */
enum cq_mount_kind {
    CQ_MOUNT_DIR = 1,     /* mkdir dst (mode) */
    CQ_MOUNT_BIND_RO,     /* bind host src on dst, read-only, nosuid, nodev */
    CQ_MOUNT_BIND_RW,     /* bind host src on dst, read-write, nosuid, nodev */
    CQ_MOUNT_DEV,         /* bind a host device node src on dst (noexec, nosuid) */
    CQ_MOUNT_SYMLINK,     /* symlink: dst -> src */
    CQ_MOUNT_FILE,        /* create dst with contents src (mode) */
    CQ_MOUNT_COPY,        /* copy the host's regular file src to dst (small files only) */
    CQ_MOUNT_TMPFS,       /* tmpfs on dst (size, inodes, mode, owner) */
    CQ_MOUNT_PROC,        /* procfs of the sandbox's pid namespace on dst */
    CQ_MOUNT_MASK,        /* hide dst: /dev/null over a file, an empty read-only tmpfs over a dir */
    CQ_MOUNT_RDONLY,      /* make the mount at dst read-only */
    CQ_MOUNT_ROOT_RDONLY, /* make the mount at dst itself read-only, not those below it:
                           * the new root ("/") or a tmpfs of the plan, once every
                           * mountpoint in it exists */
};

enum {
    CQ_MOUNT_OPTIONAL = 1 << 0, /* skip when the source (or dst for MASK) is missing */
    CQ_MOUNT_NOEXEC = 1 << 1,
};

struct cq_mount_op {
    uint32_t kind;
    uint32_t flags;
    uint64_t size_bytes; /* TMPFS */
    uint64_t inodes;     /* TMPFS */
    uint32_t mode;       /* DIR, FILE, TMPFS */
    uint32_t owner;      /* TMPFS: uid and gid inside the sandbox */
};

struct cq_init_flags {
    /* 1: wait for CQ_MSG_CGROUP after building the root, join the cgroup through
     * its fds and then enter a new cgroup namespace (cgroup v1). 0: init was
     * cloned into its cgroup and cgroup namespace already (v2). */
    uint32_t join_cgroup;
    /* 1: setgroups(2) is refused in the sandbox's user namespace (a normal user's own
     * ids, sandbox/rootless.c): processes keep the groups they have. */
    uint32_t keep_groups;
};

struct cq_ids {
    uint32_t user_uid; /* the unprivileged identity code runs as, inside */
    uint32_t user_gid;
};

enum cq_stdio_kind {
    CQ_PROTO_STDIO_NULL = 0, /* init opens /dev/null */
    CQ_PROTO_STDIO_FD = 1,   /* the fd sent with the message */
};

struct cq_spawn_params {
    uint64_t timeout_ms;   /* 0: none */
    uint64_t rlimit_fsize; /* bytes */
    uint64_t rlimit_nofile;
    /* 0: none. A sandbox without a cgroup (sandbox/rootless.c): its pids limit, as
     * RLIMIT_NPROC, which the kernel counts per user namespace and uid, so per sandbox
     * (init and the shims included where they share the code's uid). */
    uint64_t rlimit_nproc;
    uint32_t stdio[3]; /* enum cq_stdio_kind for 0, 1, 2 */
};

/* What a shim reports when its process tree is gone. */
struct cq_exit_status {
    int32_t exit_code; /* -1 when killed by a signal */
    int32_t signal;
    uint32_t timed_out;
    uint32_t killed; /* stopped on request (KILL) */
    uint64_t wall_us;
    uint64_t cpu_us;
    uint64_t max_rss_bytes;
};

struct cq_msg_writer {
    uint8_t buf[CQ_PROTO_MAX_MSG];
    size_t len;
    bool overflow;
};

void cq_msg_begin(struct cq_msg_writer *w, uint32_t type);
void cq_msg_put(struct cq_msg_writer *w, uint16_t tag, const void *data, size_t len);
void cq_msg_put_str(struct cq_msg_writer *w, uint16_t tag, const char *s);
/* A mount op followed by its two strings (either may be NULL for ""). */
void cq_msg_put_mount(struct cq_msg_writer *w, const struct cq_mount_op *op, const char *src,
                      const char *dst);

/* Sending and receiving follow common/error.h: 0 (a length, a field) or -1 with err
 * filled; err may be NULL when the caller reports the failure in its own words.
 * Codes are errno values, and CQ_EPROTO where the peer broke the wire format. */

/* Sends a message that is only a type (KILL, READY, ...), with fds (may be 0). */
int cq_msg_send_type(int sock, uint32_t type, const int *fds, size_t nfds, struct cq_error *err);

/* Sends a message of one int32 field (SIGNAL), without a full writer. */
int cq_msg_send_int(int sock, uint32_t type, uint16_t tag, int32_t value, struct cq_error *err);

/* Sends the message with fds (may be 0). EMSGSIZE when the writer overflowed. */
int cq_msg_send(int sock, const struct cq_msg_writer *w, const int *fds, size_t nfds,
                struct cq_error *err);

struct cq_msg_reader {
    const uint8_t *buf;
    size_t len, pos;
    uint32_t type;
};

/* Receives one message; fds received are O_CLOEXEC. Returns the message length, 0 on
 * orderly shutdown by the peer, or -1 with err (CQ_EPROTO for a truncated message,
 * whose fds are closed; EAGAIN on an empty non-blocking socket). */
ssize_t cq_msg_recv(int sock, void *buf, size_t cap, int *fds, size_t *nfds, struct cq_error *err);

/* Waits up to timeout_ms for the answer to a request and starts reading it (into buf,
 * which *r then points into). Returns 1 with *r, 0 when the peer closed the socket
 * first, or -1 with err (CQ_ETIMEOUT when nothing came in time). The one way the
 * supervisor waits for init or a shim to answer. */
int cq_msg_await(int sock, int timeout_ms, void *buf, size_t cap, struct cq_msg_reader *r,
                 struct cq_error *err);

/* Starts reading a received buffer; -1 with err if it has no valid header. */
int cq_msg_reader_init(struct cq_msg_reader *r, const void *buf, size_t len, struct cq_error *err);
/* Next field: 1 and the field, 0 at the end, -1 with err when malformed. */
int cq_msg_next(struct cq_msg_reader *r, uint16_t *tag, const void **data, size_t *len,
                struct cq_error *err);
/* A NUL-terminated string field's text, or NULL when it is not terminated. */
const char *cq_msg_str(const void *data, size_t len);
/* The errno (CQ_F_ERRNO) and text (CQ_F_TEXT) of an ERROR or SPAWN_FAILED message;
 * *code and *text keep their values when a field is absent or malformed. */
void cq_msg_error_fields(const struct cq_msg_reader *r, int *code, const char **text);

/* The two strings after a mount op; 0, or -1 with err when malformed. */
int cq_msg_mount(const void *data, size_t len, struct cq_mount_op *op, const char **src,
                 const char **dst, struct cq_error *err);

#endif
