/* sandbox/rootless.c - running sandboxes as a normal user (docs/security.md, "Running
 * as a normal user").
 *
 * As root the supervisor maps two ids no account uses into each sandbox (supervisor.c)
 * and makes cgroups anywhere. A normal user can map only its own id into a user
 * namespace it makes, and setfsuid, the egress namespace's setns and the files of a
 * sandbox's workspace all need capabilities it does not have. So, first thing in main
 * and while the process is single-threaded (unshare(CLONE_NEWUSER) refuses a process
 * with threads), a normal user's codeq moves itself into a user namespace of its own,
 * where it is root: "outer" below.
 *
 *  - With subordinate ids (/etc/subuid and /etc/subgid name a range for the user, and
 *    newuidmap/newgidmap of Debian's uidmap are installed): outer 0 is the caller and
 *    outer 1 the first subordinate uid (and gid). Sandboxes map their uid 0 (init, the
 *    shims) to outer 0 and their uid 1000 (sandboxed code) to outer 1, so code is not
 *    the caller on the host: it owns nothing there.
 *  - Without: outer 0 is the caller, and no other id exists. Sandboxes map only their
 *    uid 1000 to it; init runs as 1000 too, keeping its capabilities over the
 *    sandbox's namespaces through the ambient set (supervisor.c), and sandboxed code is
 *    the caller on the host. setgroups is denied in such a namespace (the kernel's
 *    condition for mapping one's own gid unprivileged), so code keeps the caller's
 *    supplementary groups.
 *
 * Outer root has capabilities over outer ids and the namespaces codeq makes, never
 * over the host's: files of other users stay closed, root's stay read-only, and cgroups
 * are writable only where they were delegated to the user (cgroup.c).
 *
 * Nothing here fails the program: a namespace that cannot be made (unprivileged user
 * namespaces disabled) is an error kept for cq_sandbox_create, so that commands which
 * never make a sandbox (a fleet's client) still work; subordinate ids that the helpers
 * refuse to map leave the user's own ids, with a note (cq_sandbox_ids_note).
 */
#define _GNU_SOURCE
#include "sandbox/rootless.h"
#include "sandbox/cgroup.h"
#include "common/cleanup.h"
#include "common/fileutil.h"

#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef CQ_NEWUIDMAP
#define CQ_NEWUIDMAP "/usr/bin/newuidmap"
#endif
#ifndef CQ_NEWGIDMAP
#define CQ_NEWGIDMAP "/usr/bin/newgidmap"
#endif

static struct {
    enum cq_sandbox_ids ids;
    bool setgroups_denied; /* own ids: the kernel's condition for mapping them */
    bool entered;          /* cq_sandbox_setup_process ran */
    struct cq_error error; /* ids CQ_SANDBOX_IDS_NONE: why */
    char note[256];        /* subordinate ids configured but not used: why */
} state = {.ids = CQ_SANDBOX_IDS_ROOT};

/* The first range of /etc/sub[ug]id for `name` or `id` ("name:start:count"). */
static bool find_subordinate(const char *file, const char *name, unsigned long id,
                             unsigned long *start, unsigned long *count)
{
    cq_autofclose FILE *f = fopen(file, "re");
    char line[512], idtext[24];
    snprintf(idtext, sizeof(idtext), "%lu", id);
    while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
        char *colon = strchr(line, ':');
        if (colon == NULL)
            continue;
        *colon = '\0';
        if (strcmp(line, idtext) != 0 && (name == NULL || strcmp(line, name) != 0))
            continue;
        char *end;
        unsigned long s = strtoul(colon + 1, &end, 10);
        if (*end != ':')
            continue;
        unsigned long c = strtoul(end + 1, NULL, 10);
        if (c == 0)
            continue;
        *start = s;
        *count = c;
        return true;
    }
    return false;
}

/* Why unshare(CLONE_NEWUSER) (or a map) was refused, naming what to change. */
void cq_rootless_userns_hint(int code, char *buf, size_t len)
{
    char value[32] = "";
    if (cq_read_file_at(AT_FDCWD, "/proc/sys/kernel/unprivileged_userns_clone", value,
                        sizeof(value), NULL) >= 0 &&
        atoi(value) == 0) {
        snprintf(buf, len,
                 "unprivileged user namespaces are disabled (sysctl "
                 "kernel.unprivileged_userns_clone = 0; enable them with sysctl -w "
                 "kernel.unprivileged_userns_clone=1, or run codeq as root)");
        return;
    }
    if (cq_read_file_at(AT_FDCWD, "/proc/sys/user/max_user_namespaces", value, sizeof(value),
                        NULL) >= 0 &&
        (atoi(value) == 0 || code == ENOSPC || code == EUSERS)) {
        if (atoi(value) == 0)
            snprintf(buf, len,
                     "user namespaces are disabled (sysctl user.max_user_namespaces = 0; raise "
                     "it, e.g. sysctl -w user.max_user_namespaces=15000, or run codeq as root)");
        else
            snprintf(buf, len,
                     "the limit on user namespaces is reached (sysctl user.max_user_namespaces "
                     "= %d here, or lower in a namespace above this one)",
                     atoi(value));
        return;
    }
    if (cq_read_file_at(AT_FDCWD, "/proc/sys/kernel/apparmor_restrict_unprivileged_userns", value,
                        sizeof(value), NULL) >= 0 &&
        atoi(value) == 1) {
        snprintf(buf, len,
                 "AppArmor restricts unprivileged user namespaces (sysctl "
                 "kernel.apparmor_restrict_unprivileged_userns = 1): give codeq an AppArmor "
                 "profile that allows userns, or run it as root");
        return;
    }
    snprintf(buf, len, "unprivileged user namespaces are not allowed here (%s)", strerror(code));
}

static int refuse(int code, const char *what)
{
    char hint[320];
    cq_rootless_userns_hint(code, hint, sizeof(hint));
    state.ids = CQ_SANDBOX_IDS_NONE;
    return cq_error_set(&state.error, code,
                        "as a normal user codeq needs a user namespace (%s): %s", what, hint);
}

/* Maps the user's own ids in the namespace this process has just made: what an
 * unprivileged process may write itself. A uid map newuidmap already wrote (when only
 * newgidmap failed) stays; sandboxes then use outer 0 alone all the same. */
static int map_own_ids(uid_t uid, gid_t gid)
{
    char map[64], current[64] = "";
    struct cq_error err = {0};
    cq_read_file_at(AT_FDCWD, "/proc/self/uid_map", current, sizeof(current), NULL);
    snprintf(map, sizeof(map), "0 %u 1\n", (unsigned)uid);
    if (cq_write_file_at(AT_FDCWD, "/proc/self/setgroups", "deny", &err) < 0 ||
        (current[0] == '\0' && cq_write_file_at(AT_FDCWD, "/proc/self/uid_map", map, &err) < 0))
        return refuse(err.code, "uid_map");
    snprintf(map, sizeof(map), "0 %u 1\n", (unsigned)gid);
    if (cq_write_file_at(AT_FDCWD, "/proc/self/gid_map", map, &err) < 0)
        return refuse(err.code, "gid_map");
    state.ids = CQ_SANDBOX_IDS_OWN;
    state.setgroups_denied = true;
    return 0;
}

/* Runs a new[ug]idmap with stderr on err_fd; its exit status, or -1. */
static int run_map_tool(const char *tool, char *const argv[], int err_fd)
{
    pid_t pid = fork();
    if (pid == 0) {
        dup2(err_fd, 2);
        execv(tool, argv);
        dprintf(2, "%s: %s\n", tool, strerror(errno));
        _exit(127);
    }
    int status;
    if (pid < 0 || waitpid(pid, &status, 0) != pid)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* The helper outside: waits until the parent has its namespace, then maps it. */
static _Noreturn void map_from_outside(pid_t parent, int go_fd, int err_fd, uid_t uid, gid_t gid,
                                       unsigned long subuid, unsigned long subgid)
{
    char byte = 0;
    if (read(go_fd, &byte, 1) != 1 || byte != 'g')
        _exit(0);
    char p[24], u[24], g[24], su[24], sg[24];
    snprintf(p, sizeof(p), "%d", (int)parent);
    snprintf(u, sizeof(u), "%u", (unsigned)uid);
    snprintf(g, sizeof(g), "%u", (unsigned)gid);
    snprintf(su, sizeof(su), "%lu", subuid);
    snprintf(sg, sizeof(sg), "%lu", subgid);
    char *uargv[] = {"newuidmap", p, "0", u, "1", "1", su, "1", NULL};
    char *gargv[] = {"newgidmap", p, "0", g, "1", "1", sg, "1", NULL};
    if (run_map_tool(CQ_NEWUIDMAP, uargv, err_fd) != 0 ||
        run_map_tool(CQ_NEWGIDMAP, gargv, err_fd) != 0)
        _exit(1);
    _exit(0);
}

static int enter_with_subordinate_ids(uid_t uid, gid_t gid, unsigned long subuid,
                                      unsigned long subgid)
{
    int go[2], errp[2];
    if (pipe2(go, O_CLOEXEC) < 0)
        return cq_error_sys(&state.error, errno, "pipe");
    if (pipe2(errp, O_CLOEXEC) < 0) {
        close(go[0]);
        close(go[1]);
        return cq_error_sys(&state.error, errno, "pipe");
    }
    pid_t parent = getpid();
    pid_t helper = fork();
    if (helper == 0) {
        close(go[1]);
        close(errp[0]);
        map_from_outside(parent, go[0], errp[1], uid, gid, subuid, subgid);
    }
    close(go[0]);
    close(errp[1]);
    int rc = 0, saved = 0;
    if (helper < 0) {
        rc = cq_error_sys(&state.error, errno, "fork");
    } else if (unshare(CLONE_NEWUSER) < 0) {
        saved = errno;
        rc = -1;
    }
    (void)!write(go[1], rc == 0 ? "g" : "x", 1);
    close(go[1]);
    int status = 0;
    if (helper > 0)
        while (waitpid(helper, &status, 0) < 0 && errno == EINTR)
            ;
    char text[200] = "";
    ssize_t n = read(errp[0], text, sizeof(text) - 1);
    close(errp[0]);
    text[n > 0 ? n : 0] = '\0';
    text[strcspn(text, "\n")] = '\0';
    if (saved != 0)
        return refuse(saved, "unshare");
    if (rc < 0)
        return -1;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        snprintf(state.note, sizeof(state.note),
                 "newuidmap/newgidmap could not map your subordinate ids (%.120s): sandboxed "
                 "code runs as your own uid",
                 text[0] ? text : "no message");
        return map_own_ids(uid, gid);
    }
    state.ids = CQ_SANDBOX_IDS_SUBORDINATE;
    return 0;
}

static int enter_with_own_ids(uid_t uid, gid_t gid)
{
    if (unshare(CLONE_NEWUSER) < 0)
        return refuse(errno, "unshare");
    return map_own_ids(uid, gid);
}

void cq_sandbox_setup_process(void)
{
    if (state.entered)
        return;
    state.entered = true;
    cq_raise_open_files_limit();
    uid_t uid = geteuid();
    gid_t gid = getegid();
    if (uid == 0)
        return; /* root: the sandboxes' usual maps (supervisor.c) */
    struct passwd *pw = getpwuid(uid);
    const char *name = pw != NULL ? pw->pw_name : NULL;
    unsigned long su = 0, sun = 0, sg = 0, sgn = 0;
    bool have_uid = find_subordinate("/etc/subuid", name, uid, &su, &sun);
    bool have_gid = find_subordinate("/etc/subgid", name, gid, &sg, &sgn);
    if (have_uid && have_gid) {
        if (access(CQ_NEWUIDMAP, X_OK) == 0 && access(CQ_NEWGIDMAP, X_OK) == 0) {
            enter_with_subordinate_ids(uid, gid, su, sg);
            return;
        }
        snprintf(state.note, sizeof(state.note),
                 "/etc/subuid and /etc/subgid give you subordinate ids, but %s or %s is "
                 "missing (Debian package uidmap): sandboxed code runs as your own uid",
                 CQ_NEWUIDMAP, CQ_NEWGIDMAP);
    }
    enter_with_own_ids(uid, gid);
}

enum cq_sandbox_ids cq_sandbox_ids_mode(void)
{
    return state.ids;
}

const char *cq_sandbox_ids_note(void)
{
    return state.note[0] ? state.note : NULL;
}

int cq_rootless_check(struct cq_error *err)
{
    if (state.ids == CQ_SANDBOX_IDS_NONE) {
        if (err != NULL)
            *err = state.error;
        return -1;
    }
    if (state.ids == CQ_SANDBOX_IDS_ROOT && geteuid() != 0)
        return cq_error_set(err, EPERM,
                            "codeq makes sandboxes as a normal user only after "
                            "cq_sandbox_setup_process() (at the start of main)");
    return 0;
}

bool cq_rootless_setgroups_denied(void)
{
    return state.setgroups_denied;
}

bool cq_rootless_allow_unlimited(void)
{
    const char *v = getenv("CODEQ_ALLOW_UNLIMITED");
    return state.ids != CQ_SANDBOX_IDS_ROOT && v != NULL && strcmp(v, "1") == 0;
}

int cq_rootless_cgroup_version(int *version, struct cq_error *err)
{
    struct cq_error cg_err = {0};
    if (cq_cgroup_version(version, &cg_err) == 0)
        return 0;
    if (state.ids == CQ_SANDBOX_IDS_ROOT) {
        if (err != NULL)
            *err = cg_err;
        return -1;
    }
    if (cq_rootless_allow_unlimited()) {
        *version = 0;
        return 0;
    }
    return cq_error_set(err, cg_err.code,
                        "as a normal user, codeq enforces the sandboxes' memory and CPU limits "
                        "only in a cgroup delegated to you: run it in one (e.g. systemd-run "
                        "--user --scope -p Delegate=yes codeq ...), or set "
                        "CODEQ_ALLOW_UNLIMITED=1 to run without these limits (%s)",
                        cg_err.msg);
}

int cq_sandbox_rootless_ready(struct cq_error *err)
{
    int version;
    if (state.ids == CQ_SANDBOX_IDS_ROOT)
        return 0;
    return cq_rootless_check(err) < 0 || cq_rootless_cgroup_version(&version, err) < 0 ? -1 : 0;
}

unsigned cq_sandbox_unenforced(void)
{
    int version;
    if (state.ids == CQ_SANDBOX_IDS_ROOT || state.ids == CQ_SANDBOX_IDS_NONE ||
        cq_rootless_cgroup_version(&version, NULL) < 0 || version != 0)
        return 0;
    /* pids: RLIMIT_NPROC stands in (process.c). */
    return CQ_UNENFORCED_MEMORY | CQ_UNENFORCED_CPU;
}

void cq_sandbox_unenforced_text(unsigned mask, char *buf, size_t len)
{
    static const char *const names[] = {"memory", "cpu"};
    size_t used = 0;
    buf[0] = '\0';
    for (unsigned i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (!(mask & (1u << i)))
            continue;
        int n = snprintf(buf + used, len - used, "%s%s", used ? ", " : "", names[i]);
        if (n < 0 || (size_t)n >= len - used)
            break;
        used += (size_t)n;
    }
}
