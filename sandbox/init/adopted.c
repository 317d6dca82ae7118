/* sandbox/init/adopted.c - the last steps of a kernel that a zygote forked into a
 * sandbox (docs/zygote.md), in the small shared library the zygote loads: the one
 * entry point, cq_adopted_become, is called by the forked process (pid 2 below its
 * adopted shim) while it still holds the sandbox's capabilities.
 *
 * It waits for the shim to pass on the supervisor's SPAWN (so nothing runs before the
 * shim supervises it), then becomes sandboxed code exactly as an exec'd process
 * does (become.c), under both filters: the sandbox's, which an exec'd process
 * inherits from init and this one never did, and the process filter.
 */
#define _GNU_SOURCE
#include "sandbox/init/init.h"
#include "sandbox/seccomp_bpf.h"
#include "sandbox/sandbox.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

/* Returns 0 with *env the process's environment (NAME=VALUE, NULL-terminated, valid
 * for the life of the process), or -1 with a message in why. stdio must be on fds 0-2
 * already; every other fd but channel_fd is closed here, and channel_fd too. */
EXPORT int cq_adopted_become(int channel_fd, const char *const **env, char *why, size_t why_len)
{
    static uint8_t buf[CQ_PROTO_MAX_MSG];
    static struct spawn_request req;
    const char *step = "spawn request";
    struct cq_error err = {0};
    ssize_t n;
    do
        n = recv(channel_fd, buf, sizeof(buf), 0);
    while (n < 0 && errno == EINTR);
    struct cq_msg_reader r;
    if (n <= 0 || cq_msg_reader_init(&r, buf, (size_t)n, NULL) < 0 || r.type != CQ_MSG_SPAWN ||
        init_parse_spawn(&r, &req, &err) < 0) {
        errno = EPROTO;
        goto fail;
    }
    step = "close fds";
    if (syscall(SYS_close_range, 3, ~0U, 0) < 0)
        goto fail;
    /* No controlling terminal, as an exec'd process (shim.c). */
    step = "setsid";
    if (setsid() < 0)
        goto fail;
    step = "sandbox filter";
    if (init_install_filter(cq_seccomp_sandbox_bpf, cq_seccomp_sandbox_bpf_len) < 0)
        goto fail;
    const struct cq_ids ids = {.user_uid = CQ_SANDBOX_USER_UID, .user_gid = CQ_SANDBOX_USER_UID};
    if (init_become_user(&ids, false, &req, &step) < 0)
        goto fail;
    /* The uid change made it undumpable; an exec'd kernel is dumpable, so that its own
     * /proc/self belongs to it. */
    step = "dumpable";
    if (prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) < 0)
        goto fail;
    *env = req.envp;
    return 0;
fail:
    snprintf(why, why_len, "%s: %s", step, strerror(errno));
    return -1;
}
