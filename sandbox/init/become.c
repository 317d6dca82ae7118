/* sandbox/init/become.c - what turns a process of the sandbox into sandboxed code:
 * the spawn request it was given, resource limits, the sandbox user without any
 * capability, its working directory and the process seccomp filter. One copy, for
 * the two ways a process starts in a sandbox: exec'd by a shim (shim.c), or forked by
 * a kernel zygote and adopted by a shim (adopted_shim.c, docs/zygote.md), which links
 * this file into the small library the zygote loads.
 */
#define _GNU_SOURCE
#include "sandbox/init/init.h"
#include "sandbox/seccomp_bpf.h"

#include <errno.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Errors are EPROTO, not CQ_EPROTO: the supervisor appends strerror(code) to what a
 * shim reports. */
int init_parse_spawn(const struct cq_msg_reader *msg, struct spawn_request *req,
                     struct cq_error *err)
{
    struct cq_msg_reader r = *msg;
    size_t argc = 0, envc = 0;
    bool have_params = false;
    uint16_t tag;
    const void *data;
    size_t len;
    int more;
    req->cwd = "/workspace";
    while ((more = cq_msg_next(&r, &tag, &data, &len, NULL)) > 0) {
        const char *s = cq_msg_str(data, len);
        switch (tag) {
        case CQ_F_ARG:
            if (s == NULL || argc == MAX_ARGS)
                return cq_error_set(err, EPROTO, "malformed spawn request: argument %zu", argc);
            req->argv[argc++] = s;
            break;
        case CQ_F_ENV:
            if (s == NULL || envc == MAX_ARGS)
                return cq_error_set(err, EPROTO, "malformed spawn request: environment %zu", envc);
            req->envp[envc++] = s;
            break;
        case CQ_F_CWD:
            if (s == NULL)
                return cq_error_set(err, EPROTO, "malformed spawn request: cwd");
            req->cwd = s;
            break;
        case CQ_F_SPAWN:
            if (len != sizeof(req->params))
                return cq_error_set(err, EPROTO, "malformed spawn request: parameters");
            memcpy(&req->params, data, len);
            have_params = true;
            break;
        default:
            break;
        }
    }
    req->argv[argc] = NULL;
    req->envp[envc] = NULL;
    if (more < 0 || argc == 0 || !have_params)
        return cq_error_set(err, EPROTO, "malformed spawn request");
    return 0;
}

int init_install_filter(const unsigned char *bpf, unsigned long len)
{
    struct sock_fprog prog = {
        .len = (unsigned short)(len / sizeof(struct sock_filter)),
        .filter = (struct sock_filter *)bpf,
    };
    return (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog);
}

/* Drops every privilege the shim holds, in the order the kernel requires:
 * bounding set and ambient set while we still have CAP_SETPCAP, then groups and
 * ids (changing uid from 0 clears the permitted and effective sets), then the
 * inheritable set, which a uid change keeps. */
static int drop_privileges(const struct cq_ids *ids, bool keep_groups)
{
    /* EINVAL marks the first capability this kernel does not know: the end. */
    for (int cap = 0; cap <= 63; cap++) {
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0)
            continue;
        if (errno == EINVAL)
            break;
        return -1;
    }
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
        return -1;
    if (!keep_groups && setgroups(0, NULL) < 0)
        return -1;
    if (setresgid(ids->user_gid, ids->user_gid, ids->user_gid) < 0)
        return -1;
    if (setresuid(ids->user_uid, ids->user_uid, ids->user_uid) < 0)
        return -1;
    struct __user_cap_header_struct header = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof(data));
    if (syscall(SYS_capset, &header, data) < 0)
        return -1;
    return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
}

int init_become_user(const struct cq_ids *ids, bool keep_groups, const struct spawn_request *req,
                     const char **step)
{
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_DFL);
    *step = "rlimits";
    struct rlimit fsize = {req->params.rlimit_fsize, req->params.rlimit_fsize};
    struct rlimit nofile = {req->params.rlimit_nofile, req->params.rlimit_nofile};
    struct rlimit core = {0, 0}; /* no core files in the workspace */
    if (setrlimit(RLIMIT_FSIZE, &fsize) < 0 || setrlimit(RLIMIT_NOFILE, &nofile) < 0 ||
        setrlimit(RLIMIT_CORE, &core) < 0)
        return -1;
    struct rlimit nproc = {req->params.rlimit_nproc, req->params.rlimit_nproc};
    if (req->params.rlimit_nproc != 0 && setrlimit(RLIMIT_NPROC, &nproc) < 0)
        return -1;
    umask(022);
    *step = "drop privileges";
    if (drop_privileges(ids, keep_groups) < 0)
        return -1;
    /* As the sandbox user, so a directory it may not enter is refused, and so that
     * a host workspace owned by it but closed to others is entered by its owner. */
    *step = "chdir";
    if (chdir(req->cwd) < 0)
        return -1;
    /* Last: the filter also binds this code, and execve is allowed by it. The
     * sandbox filter (init's) is inherited already, except by an adopted process
     * (adopted_shim.c), which installs it first; this one removes what init and the
     * shims kept for themselves. */
    *step = "seccomp";
    if (init_install_filter(cq_seccomp_process_bpf, cq_seccomp_process_bpf_len) < 0)
        return -1;
    return 0;
}
