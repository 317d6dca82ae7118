/* sandbox/adopt.c - kernels forked into a sandbox by a zygote (docs/zygote.md), the
 * host side.
 *
 * The zygote runs as CQ_SANDBOX_ZYGOTE_UID without capabilities, so the privileged
 * steps stay here, with the supervisor: a pidfd of init for it to enter the sandbox
 * through (only an enterable sandbox, whose user namespace that uid owns, lets it),
 * the move of its forked child into the sandbox's cgroup before the child forks the
 * kernel, and the process object, whose status socket and stdio the adopted shim and
 * the kernel get instead of init's fork.
 */
#define _GNU_SOURCE
#include "sandbox/internal.h"
#include "common/cleanup.h"
#include "common/fileutil.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

int cq_sandbox_entry_fd(struct cq_sandbox *sb, struct cq_error *err)
{
    if (!sb->enterable)
        return cq_error_set(err, CQ_EINVALID, "the sandbox was not created enterable");
    if (!cq_sandbox_alive(sb) || sb->init_pidfd < 0)
        return cq_error_set(err, ESRCH, "the sandbox is not running");
    int fd = fcntl(sb->init_pidfd, F_DUPFD_CLOEXEC, 3);
    if (fd < 0)
        return cq_error_sys(err, errno, "entry to the sandbox");
    return fd;
}

int cq_sandbox_attach(struct cq_sandbox *sb, pid_t pid, struct cq_error *err)
{
    if (sb->cgroup.ndirs == 0)
        return cq_error_set(err, CQ_EINVALID, "the sandbox has no cgroup to join");
    char text[24];
    snprintf(text, sizeof(text), "%d", (int)pid);
    const char *file = sb->cgroup.version == 2 ? "cgroup.procs" : "tasks";
    for (int c = 0; c < sb->cgroup.ndirs; c++)
        if (cq_write_file_at(sb->cgroup.dirfd[c], file, text, err) < 0)
            return cq_error_prefix(err, "move process %d into the sandbox's cgroup", (int)pid);
    return 0;
}

int cq_sandbox_adopt(struct cq_sandbox *sb, const struct cq_spawn *req, int theirs[4],
                     struct cq_process **out, struct cq_error *err)
{
    if (!sb->enterable)
        return cq_error_set(err, CQ_EINVALID, "the sandbox was not created enterable");
    cq_autofree struct cq_msg_writer *msg = malloc(sizeof(*msg));
    if (msg == NULL)
        return cq_error_sys(err, ENOMEM, "allocate process");
    int fds[4] = {-1, -1, -1, -1};
    size_t n;
    struct cq_spawn_params params;
    struct cq_process *p;
    if (cq_process_open(sb, req, &p, fds, &n, &params, err) < 0)
        return -1;
    /* The adopted shim reads this first; the kernel applies it (become.c). No argv:
     * nothing is exec'd. */
    cq_msg_begin(msg, CQ_MSG_SPAWN);
    cq_msg_put_str(msg, CQ_F_ARG, "adopted");
    cq_process_environment(sb, req, msg);
    cq_msg_put(msg, CQ_F_SPAWN, &params, sizeof(params));
    if (msg->overflow) {
        cq_error_set(err, E2BIG, "environment exceeds %d bytes", CQ_PROTO_MAX_MSG);
        goto fail;
    }
    if (cq_msg_send(p->status_fd, msg, NULL, 0, err) < 0) {
        cq_error_prefix(err, "queue the adopted process's request");
        goto fail;
    }
    cq_cgroup_counters(&sb->cgroup, &p->oom_before, &p->pids_before);
    /* Laid out by stream, not by which ones exist: [status, stdin, stdout, stderr]. */
    const enum cq_stdio_mode modes[3] = {req->stdin_mode, req->stdout_mode, req->stderr_mode};
    theirs[0] = fds[0];
    for (size_t i = 0, next = 1; i < 3; i++)
        theirs[i + 1] = modes[i] == CQ_STDIO_NULL ? -1 : fds[next++];
    *out = p;
    return 0;
fail:
    for (size_t i = 0; i < n; i++)
        close(fds[i]);
    cq_process_free(p);
    return -1;
}

int cq_process_await_adopted(struct cq_process *p, struct cq_error *err)
{
    return cq_process_started(p, "an adopted kernel", err);
}
