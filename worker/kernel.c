/* worker/kernel.c - persistent language kernels (runtimes/python, runtimes/node).
 *
 * A kernel is a sandboxed process that keeps a language's state between calls. The
 * worker talks to it over a unix stream socket handed in as its fd 0 (JSON lines,
 * see runtimes/python/codeq_kernel.py), and reads its fds 1 and 2 through pipes it
 * owns, so that output is captured at the file-descriptor level: print(), C
 * extensions, child processes alike. A cell's output ends where the kernel writes
 * the cell's marker (a random string sent with the request) on each stream.
 *
 * Everything the kernel says is untrusted: it runs the user's code in its own
 * process, and that code can write on the control channel too. The channel is read as
 * an untrusted parser would (lines.c): a line is capped at a few times the cell's output
 * limit (the value and the figures ride in it), and the first line that breaks the
 * protocol (too long, not a JSON object, not the answer of the request in flight, or
 * anything after the answer) gets the kernel killed and replaced, with a note saying
 * why, like a kernel that closes its control channel or ignores an interrupt. So the
 * host's memory and CPU spent on a session's replies follow its output limit, not what
 * its code writes. The value and the figures of an answer are then held to the output
 * limit like the streams are.
 */
#define _GNU_SOURCE
#include "worker/internal.h"
#include "common/clock.h"
#include "common/base64.h"
#include "common/cleanup.h"
#include "common/units.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Replies outside cells (ready, env) are small. */
#define SMALL_REPLY_BYTES (64 << 10)
/* At most this many figures of one cell are kept; the output limit bounds their bytes. */
#define MAX_IMAGES 64
/* Bytes read from one output pipe before the caller looks at the clock again. More than
 * a pipe holds (pipe-max-size, 1 MiB by default), so that one slice after a cell's
 * answer still reaches the marker written before it. */
#define DRAIN_SLICE     (2 << 20)
#define MARKER_LEN      40
#define OUTPUT_QUIET_US 2000 /* see pump() */

struct stream {
    int fd;
    char *pending; /* read, not yet emitted: may hold the start of the marker */
    size_t len;
    bool done;   /* the cell's marker was seen */
    bool closed; /* the kernel closed this descriptor: no output, no markers, ever */
};

struct cq_kernel {
    struct cq_process *proc;
    int ctl_fd;
    bool javascript;
    struct stream out[2];  /* stdout, stderr */
    struct cq_lines lines; /* the control channel's input */
    char broken[200];      /* how the kernel broke the protocol, or "" */
    uint64_t next_id;
};

static int set_nonblock(int fd)
{
    int flags = fcntl(fd, F_GETFL);
    return flags < 0 ? -1 : fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

int cq_kernel_start(const struct cq_kernel_spawn *spawn, struct cq_kernel **out,
                    struct cq_error *err)
{
    struct cq_kernel *k = calloc(1, sizeof(*k));
    if (k == NULL)
        return cq_error_sys(err, ENOMEM, "allocate kernel");
    k->ctl_fd = k->out[0].fd = k->out[1].fd = -1;
    k->javascript = spawn->javascript;
    k->next_id = 1;
    cq_lines_init(&k->lines, SMALL_REPLY_BYTES);
    int sv[2] = {-1, -1}, out_pipe[2] = {-1, -1}, err_pipe[2] = {-1, -1};
    char *modules[CQ_KERNEL_MAX_PRELOAD] = {NULL};
    size_t n_modules = 0;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0 ||
        pipe2(out_pipe, O_CLOEXEC) < 0 || pipe2(err_pipe, O_CLOEXEC) < 0) {
        cq_error_sys(err, errno, "kernel channels");
        goto fail;
    }
    k->ctl_fd = sv[0];
    k->out[0].fd = out_pipe[0];
    k->out[1].fd = err_pipe[0];
    if (set_nonblock(k->out[0].fd) < 0 || set_nonblock(k->out[1].fd) < 0) {
        cq_error_sys(err, errno, "kernel pipes");
        goto fail;
    }

    char script[512];
    snprintf(script, sizeof(script), "%s/%s", spawn->runtimes_dir,
             spawn->javascript ? "node/codeq_kernel.js" : "python/codeq_kernel.py");
    /* Module names travel as "--preload-module=NAME": one argument each, never taken
     * for an option of python3 itself. */
    const char *python_argv[4 + CQ_KERNEL_MAX_PRELOAD + 1] = {"python3", "-u", script};
    size_t argc = 3;
    if (spawn->preload) {
        python_argv[argc++] = "--preload";
        for (const char *const *m = spawn->preload_modules;
             m != NULL && *m != NULL && n_modules < CQ_KERNEL_MAX_PRELOAD; m++) {
            if (asprintf(&modules[n_modules], "--preload-module=%s", *m) < 0) {
                modules[n_modules] = NULL;
                cq_error_sys(err, ENOMEM, "kernel arguments");
                goto fail;
            }
            python_argv[argc++] = modules[n_modules++];
        }
    }
    python_argv[argc] = NULL;
    const char *node_argv[] = {"node", "--max-old-space-size=4096", script, NULL};
    /* The session's variables, then what the kernels need: a non-interactive
     * matplotlib, and module lookup in the workspace for Node (before the directories
     * a code interpreter's layer or the session named, which stay). */
    const char *node_path = NULL;
    const char *const *const lists[2] = {spawn->base_env, spawn->env};
    for (size_t l = 0; l < 2; l++)
        for (const char *const *e = lists[l]; e != NULL && *e != NULL; e++)
            if (strncmp(*e, "NODE_PATH=", 10) == 0 && (*e)[10] != '\0')
                node_path = *e + 10; /* the session's, when both have one */
    char node_path_entry[4096];
    snprintf(node_path_entry, sizeof(node_path_entry), "NODE_PATH=/workspace/node_modules%s%s",
             node_path != NULL ? ":" : "", node_path != NULL ? node_path : "");
    const char *env[256 + 4];
    size_t n = 0;
    for (const char *const *e = spawn->env; e != NULL && *e != NULL && n < 256; e++)
        env[n++] = *e;
    env[n++] = "MPLBACKEND=Agg";
    env[n++] = node_path_entry;
    env[n] = NULL;

    struct cq_spawn req;
    cq_spawn_init(&req, spawn->javascript ? node_argv : python_argv);
    req.env = env;
    req.stdin_mode = req.stdout_mode = req.stderr_mode = CQ_STDIO_FD;
    req.stdin_fd = sv[1];
    req.stdout_fd = out_pipe[1];
    req.stderr_fd = err_pipe[1];
    int rc = spawn->zygote != NULL
                 ? cq_zygote_fork(spawn->zygote, spawn->sandbox, &req, &k->proc, err)
                 : cq_sandbox_spawn(spawn->sandbox, &req, &k->proc, err);
    close(sv[1]);
    close(out_pipe[1]);
    close(err_pipe[1]);
    sv[1] = out_pipe[1] = err_pipe[1] = -1;
    for (size_t i = 0; i < n_modules; i++)
        free(modules[i]);
    n_modules = 0;
    if (rc < 0) {
        cq_error_prefix(err, "start the %s kernel", spawn->javascript ? "JavaScript" : "Python");
        goto fail;
    }
    *out = k;
    return 0;
fail:
    for (size_t i = 0; i < n_modules; i++)
        free(modules[i]);
    for (int i = 0; i < 2; i++) {
        if (sv[i] >= 0 && sv[i] != k->ctl_fd)
            close(sv[i]);
        if (out_pipe[i] >= 0 && out_pipe[i] != k->out[0].fd)
            close(out_pipe[i]);
        if (err_pipe[i] >= 0 && err_pipe[i] != k->out[1].fd)
            close(err_pipe[i]);
    }
    cq_kernel_stop(k);
    return -1;
}

/* The longest answer line a cell may send: its value (JSON-escaped: up to 6 bytes a
 * byte) and its figures (base64: 4 bytes for 3) are each held to the output limit by
 * an honest kernel, so only a forged line comes near this. */
static size_t answer_cap(uint64_t output_limit)
{
    uint64_t limit = output_limit;
    if (limit > (64ULL << 20))
        limit = 64ULL << 20;
    return (size_t)(8 * limit + SMALL_REPLY_BYTES);
}

/* The kernel broke the protocol: remember why (the first reason wins); it is killed
 * and replaced by the caller. */
static void set_broken(struct cq_kernel *k, const char *why)
{
    if (k->broken[0] == '\0')
        snprintf(k->broken, sizeof(k->broken), "%s", why);
}

/* Reads what the control socket has (one read) into the line buffer. Returns 0, or -1
 * when the channel closed or failed, or the kernel broke the protocol (k->broken). */
static int read_reply_bytes(struct cq_kernel *k)
{
    char buf[65536];
    ssize_t n = recv(k->ctl_fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n < 0)
        return errno == EAGAIN || errno == EINTR ? 0 : -1;
    if (n == 0)
        return -1;
    struct cq_error err;
    if (cq_lines_feed(&k->lines, buf, (size_t)n, &err) < 0) {
        set_broken(k, err.msg);
        return -1;
    }
    return 0;
}

/* The next complete reply: 1 with *reply (a JSON object with an integer id), 0 when no
 * line is complete, -1 when the line breaks the protocol (k->broken says how). */
static int take_reply(struct cq_kernel *k, json_t **reply)
{
    const char *line;
    size_t len;
    struct cq_error err;
    int rc = cq_lines_next(&k->lines, &line, &len, &err);
    if (rc <= 0) {
        if (rc < 0)
            set_broken(k, err.msg);
        return rc;
    }
    json_t *parsed = json_loadb(line, len, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(parsed) || !json_is_integer(json_object_get(parsed, "id"))) {
        json_decref(parsed);
        set_broken(k, "a reply line that is not a JSON object with an id");
        return -1;
    }
    *reply = parsed;
    return 1;
}

/* Waits for the reply with id to a request outside cells (ready: id 0, env); any other
 * line breaks the protocol. NULL on timeout, a closed channel or a broken protocol. */
static json_t *await_reply(struct cq_kernel *k, json_int_t id, uint64_t timeout_ms, size_t cap)
{
    uint64_t deadline = cq_now_ms() + timeout_ms;
    k->lines.cap = cap;
    for (;;) {
        json_t *reply = NULL;
        int rc = take_reply(k, &reply);
        if (rc < 0)
            return NULL;
        if (rc > 0) {
            if (json_integer_value(json_object_get(reply, "id")) == id &&
                !cq_lines_pending(&k->lines))
                return reply;
            json_decref(reply);
            set_broken(k, "a reply to no request in flight");
            return NULL;
        }
        uint64_t now = cq_now_ms();
        if (now >= deadline)
            return NULL;
        struct pollfd pfd = {.fd = k->ctl_fd, .events = POLLIN};
        if (poll(&pfd, 1, (int)(deadline - now)) < 0 && errno != EINTR)
            return NULL;
        if (read_reply_bytes(k) < 0 && !cq_lines_pending(&k->lines))
            return NULL;
    }
}

int cq_kernel_wait_ready(struct cq_kernel *k, uint64_t timeout_ms, struct cq_error *err)
{
    json_t *reply = await_reply(k, 0, timeout_ms, SMALL_REPLY_BYTES);
    bool ready = reply != NULL && json_is_true(json_object_get(reply, "ready"));
    json_decref(reply);
    if (!ready)
        return cq_error_set(err, CQ_EINTERNAL, "the %s kernel did not start%s%s",
                            k->javascript ? "JavaScript" : "Python", k->broken[0] ? ": " : "",
                            k->broken);
    return 0;
}

/* Sends one line (text without its '\n'). */
static int send_line(struct cq_kernel *k, char *text, size_t len)
{
    struct iovec iov[2] = {{text, len}, {"\n", 1}};
    struct msghdr msg = {.msg_iov = iov, .msg_iovlen = 2};
    size_t total = len + 1, sent = 0;
    while (sent < total) {
        ssize_t n = sendmsg(k->ctl_fd, &msg, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        sent += (size_t)n;
        /* Advance the iovecs past what was sent. */
        size_t skip = (size_t)n;
        while (skip > 0 && msg.msg_iovlen > 0) {
            if (skip >= msg.msg_iov->iov_len) {
                skip -= msg.msg_iov->iov_len;
                msg.msg_iov++;
                msg.msg_iovlen--;
            } else {
                msg.msg_iov->iov_base = (char *)msg.msg_iov->iov_base + skip;
                msg.msg_iov->iov_len -= skip;
                skip = 0;
            }
        }
    }
    return 0;
}

static int send_request(struct cq_kernel *k, json_t *request)
{
    cq_autofree char *text = json_dumps(request, JSON_COMPACT);
    return text != NULL ? send_line(k, text, strlen(text)) : -1;
}

int cq_kernel_set_env(struct cq_kernel *k, const char *const *env, struct cq_error *err)
{
    json_t *vars = json_object();
    for (const char *const *e = env; e != NULL && *e != NULL; e++) {
        const char *eq = strchr(*e, '=');
        if (eq == NULL)
            continue;
        char name[256];
        snprintf(name, sizeof(name), "%.*s", (int)(eq - *e), *e);
        json_object_set_new(vars, name, json_string(eq + 1));
    }
    json_int_t id = (json_int_t)k->next_id++;
    json_t *req = json_pack("{s:I, s:s, s:o}", "id", id, "op", "env", "env", vars);
    int rc = req != NULL ? send_request(k, req) : -1;
    json_decref(req);
    json_t *reply = rc == 0 ? await_reply(k, id, 10000, SMALL_REPLY_BYTES) : NULL;
    bool ok = reply != NULL && json_is_true(json_object_get(reply, "ok"));
    json_decref(reply);
    return ok ? 0 : cq_error_set(err, CQ_EINTERNAL, "the kernel did not take the environment");
}

/* ---- checkpoint and restore: a session's variables moved to another worker ----------
 *
 * The state travels on the control channel, base64 in the answer's line, rather than
 * through a file the kernel writes in the sandbox: the workspace is the user's (its
 * files are listed, snapshotted, and can be swapped for a link or a FIFO by a task
 * running beside the kernel), while the channel is already read as untrusted input,
 * line by line under a cap (lines.c). So the cap on the state is the cap on one line,
 * and nothing of the host's file system is involved. The worker decodes the base64 and
 * keeps the bytes as they are: it never parses them; a fresh kernel of the same
 * session, in its own sandbox, is the only reader. */

/* The longest line that carries max_bytes of state in base64. */
static size_t state_line_cap(uint64_t max_bytes)
{
    return (size_t)((max_bytes + 2) / 3 * 4) + SMALL_REPLY_BYTES;
}

/* A reason the kernel gave, for people: cut, on one line. */
static void kernel_reason(json_t *reply, char *out, size_t len)
{
    const char *why = json_string_value(json_object_get(reply, "value"));
    snprintf(out, len, "%s", why != NULL ? why : "no reason given");
    for (char *p = out; *p != '\0'; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = ' ';
}

int cq_kernel_checkpoint(struct cq_kernel *k, uint64_t max_bytes, uint64_t timeout_ms,
                         uint8_t **data, size_t *len, struct cq_error *err)
{
    *data = NULL;
    *len = 0;
    json_int_t id = (json_int_t)k->next_id++;
    json_t *req =
        json_pack("{s:I, s:s, s:I}", "id", id, "op", "checkpoint", "limit", (json_int_t)max_bytes);
    int rc = req != NULL ? send_request(k, req) : -1;
    json_decref(req);
    json_t *reply = rc == 0 ? await_reply(k, id, timeout_ms, state_line_cap(max_bytes)) : NULL;
    if (reply == NULL)
        return cq_error_set(err, CQ_EINTERNAL, "the kernel did not save its variables%s%s",
                            k->broken[0] ? ": " : " in time", k->broken);
    if (!json_is_true(json_object_get(reply, "ok"))) {
        char why[256];
        kernel_reason(reply, why, sizeof(why));
        json_decref(reply);
        return cq_error_set(err, CQ_EINTERNAL, "the kernel could not save its variables: %s", why);
    }
    const char *b64 = json_string_value(json_object_get(reply, "state"));
    rc = b64 != NULL ? cq_base64_decode(b64, strlen(b64), data, len) : -1;
    json_decref(reply);
    if (rc < 0)
        return cq_error_set(err, CQ_EPROTO, "the kernel's saved variables are not base64");
    if (*len > max_bytes) {
        free(*data);
        *data = NULL;
        return cq_error_set(err, CQ_ELIMIT, "the kernel's saved variables exceed %llu bytes",
                            (unsigned long long)max_bytes);
    }
    return 0;
}

/* Appends text to a bounded summary (what does not fit is dropped). */
static void summary_add(char *buf, size_t cap, size_t *used, const char *text)
{
    size_t room = cap - *used - 1, n = strlen(text);
    if (n > room) {
        n = room;
        while (n > 0 && ((unsigned char)text[n] & 0xC0) == 0x80)
            n--; /* cut before a continuation byte */
    }
    for (size_t i = 0; i < n; i++) /* names and reasons come from the sandbox */
        buf[(*used)++] = (unsigned char)text[i] < 0x20 || text[i] == 0x7f ? '?' : text[i];
    buf[*used] = '\0';
}

/* One list of the restore answer, for people: "label a, b (why), c". Items are
 * strings, or [name, detail] pairs; at most MAX_LISTED are named. */
#define MAX_LISTED 40
static void summary_list(char *buf, size_t cap, size_t *used, const char *label, json_t *items)
{
    if (!json_is_array(items) || json_array_size(items) == 0)
        return;
    if (*used > 0)
        summary_add(buf, cap, used, "; ");
    summary_add(buf, cap, used, label);
    size_t i, shown = 0;
    json_t *item;
    json_array_foreach(items, i, item)
    {
        if (shown == MAX_LISTED)
            break;
        const char *name = json_is_array(item) ? json_string_value(json_array_get(item, 0))
                                               : json_string_value(item);
        const char *detail =
            json_is_array(item) ? json_string_value(json_array_get(item, 1)) : NULL;
        if (name == NULL)
            continue;
        char piece[400];
        snprintf(piece, sizeof(piece), "%s%.100s%s%.200s%s", shown > 0 ? ", " : " ", name,
                 detail != NULL ? " (" : "", detail != NULL ? detail : "",
                 detail != NULL ? ")" : "");
        summary_add(buf, cap, used, piece);
        shown++;
    }
    if (json_array_size(items) > shown) {
        char more[64];
        snprintf(more, sizeof(more), " and %zu more", json_array_size(items) - shown);
        summary_add(buf, cap, used, more);
    }
}

int cq_kernel_restore(struct cq_kernel *k, const uint8_t *data, size_t len, uint64_t timeout_ms,
                      char **summary, struct cq_error *err)
{
    *summary = NULL;
    cq_autofree char *b64 = cq_base64_encode(data, len);
    if (b64 == NULL)
        return cq_error_sys(err, ENOMEM, "encode %zu bytes of saved variables", len);
    /* Written by hand rather than by jansson: base64 needs no escaping, and the state
     * may be large enough that one more copy of it counts. */
    json_int_t id = (json_int_t)k->next_id++;
    char *line = NULL;
    if (asprintf(&line, "{\"id\":%lld,\"op\":\"restore\",\"state\":\"%s\"}", (long long)id, b64) <
        0)
        return cq_error_sys(err, ENOMEM, "the restore request");
    int rc = send_line(k, line, strlen(line));
    free(line);
    json_t *reply = rc == 0 ? await_reply(k, id, timeout_ms, SMALL_REPLY_BYTES) : NULL;
    if (reply == NULL)
        return cq_error_set(err, CQ_EINTERNAL, "the kernel did not restore the variables%s%s",
                            k->broken[0] ? ": " : " in time", k->broken);
    if (!json_is_true(json_object_get(reply, "ok"))) {
        char why[256];
        kernel_reason(reply, why, sizeof(why));
        json_decref(reply);
        return cq_error_set(err, CQ_EINTERNAL, "the kernel could not restore the variables: %s",
                            why);
    }
    char buf[3072];
    size_t used = 0;
    buf[0] = '\0';
    if (json_array_size(json_object_get(reply, "restored")) == 0)
        summary_add(buf, sizeof(buf), &used, "no variables restored");
    summary_list(buf, sizeof(buf), &used, "restored", json_object_get(reply, "restored"));
    summary_list(buf, sizeof(buf), &used, "imported again", json_object_get(reply, "modules"));
    summary_list(buf, sizeof(buf), &used, "not moved:", json_object_get(reply, "not_moved"));
    summary_list(buf, sizeof(buf), &used, "failed to restore:", json_object_get(reply, "failed"));
    json_decref(reply);
    /* %.100s and the cap above may have split a character. */
    if ((*summary = cq_utf8_sanitize(buf, used)) == NULL)
        return cq_error_sys(err, ENOMEM, "the restore summary");
    return 0;
}

/* One run of a cell, from the request to the result. */
struct cell {
    const struct cq_execution *x;
    const char *marker;
    struct cq_capture capture[2];
    json_int_t id; /* the request's: an answer with another id is not this cell's */
    uint64_t started_us;
    json_t *reply;    /* the kernel's answer, once it came */
    bool interrupted; /* SIGINT was sent */
    bool timed_out;   /* the deadline passed */
    bool cancelled;   /* the call was cancelled (worker.h, struct cq_cancel) */
    bool gone;        /* the kernel died, was killed or stopped answering */
    bool out_of_memory;
};

static void emit(struct cell *c, int s, const char *data, size_t len)
{
    if (len == 0)
        return;
    cq_capture_append(&c->capture[s], data, len);
    if (c->x->on_output != NULL && c->capture[s].total - len < c->x->output_limit) {
        uint64_t room = c->x->output_limit - (c->capture[s].total - len);
        c->x->on_output(c->x->ctx, s + 1, data, len < room ? len : (size_t)room);
    }
}

/* The length of the longest end of data[0..len) that is a start of the marker: those
 * bytes may be the first part of a marker split across two reads. */
static size_t marker_prefix_at_end(const char *data, size_t len, const char *marker, size_t mlen)
{
    size_t max = len < mlen - 1 ? len : mlen - 1;
    for (size_t n = max; n > 0; n--)
        if (memcmp(data + len - n, marker, n) == 0)
            return n;
    return 0;
}

/* Appends new bytes to a stream and emits what certainly precedes the marker. Bytes
 * after the marker stay pending: they belong to whatever runs next. */
static void feed(struct cell *c, int s, struct stream *st, const char *data, size_t len)
{
    if (len > 0) {
        char *p = realloc(st->pending, st->len + len);
        if (p == NULL)
            return;
        memcpy(p + st->len, data, len);
        st->pending = p;
        st->len += len;
    }
    if (st->done || c->marker == NULL || st->len == 0)
        return;
    size_t mlen = strlen(c->marker);
    char *hit = memmem(st->pending, st->len, c->marker, mlen);
    size_t consumed;
    if (hit != NULL) {
        size_t before = (size_t)(hit - st->pending);
        emit(c, s, st->pending, before);
        consumed = before + mlen;
        st->done = true;
    } else {
        /* Emit at once all but what could begin a marker, so output streams live. */
        consumed = st->len - marker_prefix_at_end(st->pending, st->len, c->marker, mlen);
        emit(c, s, st->pending, consumed);
    }
    memmove(st->pending, st->pending + consumed, st->len - consumed);
    st->len -= consumed;
}

/* Reads a stream until it would block. At EOF the stream is closed for good (a cell
 * closed fd 1 or 2, or the kernel died: the status channel tells which). */
static void drain(struct cell *c, int s, struct stream *st)
{
    char buf[65536];
    /* A cell that writes without pause would keep this loop reading for ever: after a
     * slice, the caller's loop gets to look at the deadline and the other fds. */
    for (size_t slice = 0; slice < DRAIN_SLICE; slice += sizeof(buf)) {
        ssize_t n = read(st->fd, buf, sizeof(buf));
        if (n > 0) {
            feed(c, s, st, buf, (size_t)n);
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        st->closed = st->done = true;
        return;
    }
}

/* The figures of an answer, at most MAX_IMAGES and limit bytes in all (the answer's
 * line came from the sandbox: its array may hold anything); returns how many were left
 * out. */
static size_t add_images(struct cq_result *r, json_t *images, uint64_t limit)
{
    static const uint8_t png_magic[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    size_t i, kept = 0, left_out = 0;
    uint64_t bytes = 0;
    json_t *item;
    json_array_foreach(images, i, item)
    {
        const char *b64 = json_string_value(item);
        size_t b64_len = b64 != NULL ? strlen(b64) : 0;
        if (b64 == NULL)
            continue;
        if (kept == MAX_IMAGES || bytes + b64_len / 4 * 3 > limit) {
            left_out++;
            continue;
        }
        uint8_t *png = NULL;
        size_t len = 0;
        /* Decoded and checked here rather than passed through: what the kernel sends
         * must be a PNG before anyone downstream treats it as one. */
        if (cq_base64_decode(b64, b64_len, &png, &len) < 0)
            continue;
        if (len >= 8 && memcmp(png, png_magic, 8) == 0 &&
            cq_result_add_image(r, png, len, "image/png") == 0) {
            kept++;
            bytes += len;
        }
        free(png);
    }
    return left_out;
}

/* The final expression's value, held to limit bytes (cut at a character boundary);
 * whole is the size the kernel says it had before it cut it (0: not cut). */
static void add_value(struct cq_result *result, const char *value, uint64_t whole, uint64_t limit)
{
    size_t len = strlen(value);
    if (whole < len)
        whole = len;
    bool cut = len > limit || whole > len;
    if (len > limit) {
        len = (size_t)limit;
        while (len > 0 && ((unsigned char)value[len] & 0xC0) == 0x80)
            len--; /* value[len] continues a character: cut before it */
    }
    result->value_text = cq_utf8_sanitize(value, len);
    if (result->value_text == NULL)
        return;
    if (cut) {
        char *noted = NULL;
        if (asprintf(&noted, "%s\n[codeq: the value was %llu bytes; the first %zu are shown]",
                     result->value_text, (unsigned long long)whole, len) >= 0) {
            free(result->value_text);
            result->value_text = noted;
        }
    }
    cq_result_add_text(result, result->value_text);
}

static const char *language_name(enum cq_language l)
{
    return l == CQ_LANG_PYTHON ? "python" : l == CQ_LANG_JAVASCRIPT ? "javascript" : "typescript";
}

/* True if the kernel's process has not reported its end within wait_ms (a process
 * that just died reports within milliseconds; one still running does not). */
static bool status_pending(struct cq_kernel *k, int wait_ms)
{
    struct pollfd pfd = {.fd = cq_process_status_fd(k->proc), .events = POLLIN};
    int rc;
    while ((rc = poll(&pfd, 1, wait_ms)) < 0 && errno == EINTR)
        ;
    return rc == 0;
}

/* Why a kernel died, for people; true when the memory limit killed it. */
static bool describe_death(struct cq_kernel *k, char *buf, size_t len)
{
    struct cq_process_report report;
    struct cq_error err;
    if (cq_process_wait(k->proc, NULL, &report, &err) < 0) {
        snprintf(buf, len, "the sandbox ended");
        return false;
    }
    if (report.oom_killed)
        snprintf(buf, len,
                 "it was killed by the kernel's OOM killer: the session's memory limit "
                 "was reached");
    else if (report.signal != 0)
        snprintf(buf, len, "it was killed by signal %d (%s)", report.signal,
                 strsignal(report.signal));
    else
        snprintf(buf, len, "it exited with status %d", report.exit_code);
    return report.oom_killed;
}

/* A fresh marker for a cell. It starts with STX, a byte output almost never ends with:
 * feed() holds back only an end of output that could begin a marker, so a line ending
 * in '\n' streams at once. */
static void make_marker(char marker[MARKER_LEN + 1])
{
    memcpy(marker, "\x02@codeq:", 8);
    cq_random_id(marker + 8, MARKER_LEN - 9);
    marker[MARKER_LEN - 1] = '@';
    marker[MARKER_LEN] = '\0';
}

/* Sends the cell to the kernel; a kernel that cannot be told is gone. */
static void send_cell(struct cq_kernel *k, struct cell *c)
{
    const struct cq_execution *x = c->x;
    /* limit: the kernel holds the value and the figures to it, so an honest answer
     * stays far below answer_cap(). */
    json_t *req =
        json_pack("{s:I, s:s, s:s, s:b, s:s, s:s, s:I}", "id", (json_int_t)k->next_id, "op", "exec",
                  "code", x->code, "clear", x->clear_context, "marker", c->marker, "language",
                  language_name(x->language), "limit", (json_int_t)x->output_limit);
    c->id = (json_int_t)k->next_id++;
    k->lines.cap = answer_cap(x->output_limit);
    c->gone = (req != NULL ? send_request(k, req) : -1) < 0;
    json_decref(req);
}

/* The deadline passed: the first time the cell is interrupted and given a grace period
 * (Python turns SIGINT into KeyboardInterrupt: the cell stops, the variables stay); the
 * second time the kernel is killed. */
static void on_deadline(struct cq_kernel *k, struct cell *c, uint64_t now, uint64_t *deadline)
{
    if (!c->interrupted) {
        c->timed_out = c->interrupted = true;
        cq_process_signal(k->proc, SIGINT);
        *deadline = now + CQ_WORKER_INTERRUPT_GRACE_MS;
        return;
    }
    cq_process_kill(k->proc);
    c->gone = true;
}

/* The call was cancelled: interrupted as on its deadline, with the same grace period
 * before the kernel is killed. A cell past its deadline already is left to that. */
static void on_cancel(struct cq_kernel *k, struct cell *c, uint64_t now, uint64_t *deadline)
{
    c->cancelled = true;
    if (c->interrupted)
        return;
    c->interrupted = true;
    cq_process_signal(k->proc, SIGINT);
    *deadline = now + CQ_WORKER_INTERRUPT_GRACE_MS;
}

/* Reads the control socket for this cell's answer. The honest kernel sends exactly one
 * line per request, after the cell: any other line (stale, forged, or following the
 * answer) breaks the protocol, and the kernel is then replaced (c->gone). */
static void read_answer(struct cq_kernel *k, struct cell *c)
{
    bool closed = read_reply_bytes(k) < 0;
    json_t *reply = NULL;
    int rc;
    while (k->broken[0] == '\0' && (rc = take_reply(k, &reply)) > 0) {
        if (c->reply != NULL || json_integer_value(json_object_get(reply, "id")) != c->id) {
            json_decref(reply);
            set_broken(k, c->reply != NULL ? "a second reply to one cell"
                                           : "a reply to no request in flight");
            break;
        }
        c->reply = reply;
    }
    if (k->broken[0] != '\0' || (closed && c->reply == NULL)) {
        json_decref(c->reply);
        c->reply = NULL;
        c->gone = true;
    }
}

/* Streams the cell's output until the kernel answers, dies, or outlives the deadline and
 * its grace period. The output pipes are left alone for the first OUTPUT_QUIET_US: a
 * short cell then wakes this thread once, for its answer, instead of once for each
 * stream's marker as well, and each wake-up is a context switch that can preempt the
 * kernel on a small host. A long cell streams from then on; one that fills a pipe
 * meanwhile waits at most that long. */
static void pump(struct cq_kernel *k, struct cell *c)
{
    uint64_t timeout_ms = c->x->timeout_ms ? c->x->timeout_ms : UINT32_MAX;
    uint64_t deadline = cq_now_ms() + timeout_ms;
    uint64_t pipes_from_us = c->started_us + OUTPUT_QUIET_US;
    while (!c->gone && c->reply == NULL) {
        uint64_t now = cq_now_ms();
        if (now >= deadline) {
            if (c->cancelled && c->interrupted && !c->timed_out) {
                cq_process_kill(k->proc); /* it ignored the interrupt */
                c->gone = true;
            } else
                on_deadline(k, c, now, &deadline);
            continue;
        }
        uint64_t now_us = cq_now_us();
        bool quiet = now_us < pipes_from_us;
        struct pollfd pfd[5] = {
            {.fd = k->ctl_fd, .events = POLLIN},
            {.fd = k->out[0].done || quiet ? -1 : k->out[0].fd, .events = POLLIN},
            {.fd = k->out[1].done || quiet ? -1 : k->out[1].fd, .events = POLLIN},
            {.fd = cq_process_status_fd(k->proc), .events = POLLIN},
            {.fd = c->cancelled ? -1 : cq_cancel_fd(c->x->cancel), .events = POLLIN},
        };
        uint64_t wait = deadline - now;
        uint64_t quiet_left_ms = quiet ? (pipes_from_us - now_us) / 1000 + 1 : wait;
        if (quiet_left_ms < wait)
            wait = quiet_left_ms;
        if (poll(pfd, 5, wait > 60000 ? 60000 : (int)wait) < 0) {
            if (errno == EINTR)
                continue;
            c->gone = true;
            break;
        }
        for (int s = 0; s < 2; s++)
            if (pfd[1 + s].revents)
                drain(c, s, &k->out[s]);
        if (pfd[0].revents)
            read_answer(k, c);
        if (pfd[3].revents)
            c->gone = true;
        if (pfd[4].revents)
            on_cancel(k, c, cq_now_ms(), &deadline);
    }
}

/* The kernel writes the markers before it answers, so once the answer is here they are
 * in the pipes: one more read finds them. A cell that closed its own stdout or stderr
 * never gets a marker there; what was read is its output. */
static void collect_markers(struct cq_kernel *k, struct cell *c)
{
    for (int s = 0; s < 2; s++) {
        if (!k->out[s].done)
            drain(c, s, &k->out[s]);
        if (!k->out[s].done || k->out[s].closed) {
            emit(c, s, k->out[s].pending, k->out[s].len);
            k->out[s].len = 0;
        }
    }
}

/* Live output stopped at the limit (emit): once the cell's output is all read, the kept
 * end of each stream follows, before codeq's notes. */
static void forward_rest(struct cell *c)
{
    for (int s = 0; c->x->on_output != NULL && s < 2; s++) {
        const struct cq_capture *cap = &c->capture[s];
        uint64_t streamed = cap->total < c->x->output_limit ? cap->total : c->x->output_limit;
        char *rest = cq_capture_rest(cap, streamed);
        if (rest != NULL && rest[0] != '\0')
            c->x->on_output(c->x->ctx, s + 1, rest, strlen(rest));
        free(rest);
    }
}

/* A note from codeq on the cell's stderr, kept past the output limit and streamed. */
static void add_note(struct cell *c, const char *note)
{
    cq_capture_note(&c->capture[1], note);
    if (c->x->on_output != NULL)
        c->x->on_output(c->x->ctx, 2, note, strlen(note));
}

/* Why the kernel is gone, for people; a kernel still alive is ended. A kernel that died
 * reports within milliseconds; one that is alive but closed its control channel (a cell
 * closed fd 0's socket) does not. */
static void bury(struct cq_kernel *k, struct cell *c, char *why, size_t len)
{
    if (k->broken[0] != '\0') {
        cq_process_kill(k->proc);
        snprintf(why, len, "%s", k->broken);
        struct cq_process_report ignored;
        struct cq_error ignored_err;
        cq_process_wait(k->proc, NULL, &ignored, &ignored_err);
        return;
    }
    if (!status_pending(k, 2000)) {
        c->out_of_memory = describe_death(k, why, len);
        return;
    }
    cq_process_kill(k->proc);
    snprintf(why, len, "it stopped answering: its control channel was closed");
    struct cq_process_report ignored;
    struct cq_error ignored_err;
    cq_process_wait(k->proc, NULL, &ignored, &ignored_err);
}

/* The kernel is gone: whatever it wrote before is still the cell's output, and the
 * note says that the context was reset. */
static void report_death(struct cq_kernel *k, struct cell *c)
{
    for (int s = 0; s < 2; s++) {
        if (!k->out[s].closed)
            drain(c, s, &k->out[s]);
        emit(c, s, k->out[s].pending, k->out[s].len);
        k->out[s].len = 0;
    }
    forward_rest(c);
    char why[200];
    bury(k, c, why, sizeof(why));
    const char *lang = k->javascript ? "JavaScript" : "Python";
    char note[512];
    if (k->broken[0] != '\0')
        snprintf(note, sizeof(note),
                 "codeq: the %s kernel's control channel carried %s, which only code "
                 "writing on it can send; the kernel was restarted: the context (variables, "
                 "imports) was reset\n",
                 lang, why);
    else if (c->cancelled && !c->timed_out)
        snprintf(note, sizeof(note),
                 "codeq: cancelled; the %s kernel did not stop within %d s of the interrupt "
                 "and was restarted: the context (variables, imports) was reset\n",
                 lang, CQ_WORKER_INTERRUPT_GRACE_MS / 1000);
    else if (c->timed_out)
        snprintf(note, sizeof(note),
                 "codeq: timed out after %.3g s; the %s kernel did not stop within %d s of "
                 "the interrupt and was restarted: the context (variables, imports) was "
                 "reset\n",
                 (double)c->x->timeout_ms / 1000.0, lang, CQ_WORKER_INTERRUPT_GRACE_MS / 1000);
    else
        snprintf(note, sizeof(note),
                 "codeq: the %s kernel died (%s) and will be restarted: the context "
                 "(variables, imports) was reset\n",
                 lang, why);
    add_note(c, note);
}

/* Content in AgentCore's order: stdout, the value of a final expression, stderr
 * (labeled, for clients that show only content), then the figures. */
static void add_content(struct cq_result *result, json_t *reply, uint64_t limit)
{
    if (result->stdout_text != NULL && result->stdout_text[0] != '\0')
        cq_result_add_text(result, result->stdout_text);
    const char *value = json_string_value(json_object_get(reply, "value"));
    json_int_t whole = json_integer_value(json_object_get(reply, "value_bytes"));
    if (value != NULL)
        add_value(result, value, whole > 0 ? (uint64_t)whole : 0, limit);
    cq_content_stderr(result, result->stderr_text);
    size_t left_out = add_images(result, json_object_get(reply, "images"), limit);
    json_int_t kernel_left_out = json_integer_value(json_object_get(reply, "images_left_out"));
    if (kernel_left_out > 0 && kernel_left_out < 1000000)
        left_out += (size_t)kernel_left_out;
    if (left_out > 0) {
        char note[160];
        snprintf(note, sizeof(note),
                 "[codeq: %zu figure(s) left out: past %d figures or the output limit]", left_out,
                 MAX_IMAGES);
        cq_result_add_text(result, note);
    }
}

static void fill_result(struct cell *c, struct cq_result *result)
{
    bool ok =
        !c->gone && !c->timed_out && !c->cancelled && json_is_true(json_object_get(c->reply, "ok"));
    result->stdout_text = cq_capture_text(&c->capture[0]);
    result->stderr_text = cq_capture_text(&c->capture[1]);
    result->exit_code = ok ? 0 : 1;
    /* sys.exit(n), process.exit(n): the status the code asked for, as a script's. */
    json_int_t exit = json_integer_value(json_object_get(c->reply, "exit"));
    if (!ok && !c->gone && !c->timed_out && exit > 0 && exit < 256)
        result->exit_code = (int)exit;
    result->is_error = !ok;
    if (c->timed_out)
        result->error_code = CQ_RESULT_TIMED_OUT;
    add_content(result, c->reply, c->x->output_limit);
    if (c->cancelled && !c->timed_out) {
        free(result->error_message);
        result->error_message = strdup(c->gone ? "cancelled; the context was reset"
                                               : "cancelled; the cell was interrupted");
    } else if (c->timed_out) {
        free(result->error_message);
        result->error_message = strdup(c->gone ? "timed out; the context was reset"
                                               : "timed out; the cell was interrupted");
    } else if (c->out_of_memory) {
        /* The one death that is a limit of the service rather than the code's own exit:
         * say so in the structured error too, since the context is gone. */
        result->error_code = CQ_RESULT_LIMIT_EXCEEDED;
        free(result->error_message);
        result->error_message =
            strdup("the session's memory limit was reached; the kernel was restarted and its "
                   "context reset");
    }
}

void cq_kernel_execute(struct cq_kernel *k, const struct cq_execution *x, struct cq_result *result,
                       bool *dead)
{
    char marker[MARKER_LEN + 1];
    make_marker(marker);
    struct cell cell = {.x = x, .marker = marker};
    cq_capture_init(&cell.capture[0], x->output_limit);
    cq_capture_init(&cell.capture[1], x->output_limit);
    for (int s = 0; x->dropped != NULL && s < 2; s++)
        cell.capture[s].dropped = x->dropped[s];
    for (int s = 0; s < 2; s++)
        k->out[s].done = k->out[s].closed;

    cell.started_us = cq_now_us();
    send_cell(k, &cell);
    /* Output that arrived between cells counts as this cell's. */
    for (int s = 0; s < 2; s++)
        feed(&cell, s, &k->out[s], NULL, 0);
    pump(k, &cell);
    if (cell.reply != NULL)
        collect_markers(k, &cell);
    result->has_structured = true;
    result->execution_time_ms = (double)(cq_now_us() - cell.started_us) / 1000.0;

    if (cell.gone)
        report_death(k, &cell);
    else
        forward_rest(&cell);
    if (!cell.gone && cell.cancelled && !cell.timed_out)
        add_note(&cell, "codeq: cancelled; the cell was interrupted (variables are kept)\n");
    else if (!cell.gone && cell.timed_out) {
        char note[200];
        snprintf(note, sizeof(note),
                 "codeq: timed out after %.3g s; the cell was interrupted "
                 "(variables are kept)\n",
                 (double)x->timeout_ms / 1000.0);
        add_note(&cell, note);
    }
    *dead = cell.gone;
    fill_result(&cell, result);
    json_decref(cell.reply);
    cq_capture_free(&cell.capture[0]);
    cq_capture_free(&cell.capture[1]);
}

void cq_kernel_stop(struct cq_kernel *k)
{
    if (k == NULL)
        return;
    cq_process_free(k->proc); /* kills the kernel's whole tree */
    if (k->ctl_fd >= 0)
        close(k->ctl_fd);
    for (int s = 0; s < 2; s++) {
        if (k->out[s].fd >= 0)
            close(k->out[s].fd);
        free(k->out[s].pending);
    }
    cq_lines_free(&k->lines);
    free(k);
}
