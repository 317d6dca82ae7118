/* tests/unit/test_rootfs_plan.c - sandbox/rootfs_plan.c: what the sandbox's root is
 * made of. The plan is decoded exactly as init decodes it, and checked for what
 * must be there (with the configured limits) and what must never be. */
#define _GNU_SOURCE
#include "sandbox/rootfs_plan.h"
#include "unit.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_OPS 256

struct plan_op {
    struct cq_mount_op op;
    const char *src;
    const char *dst;
};

struct plan {
    struct cq_msg_writer *w; /* the decoded strings point into it */
    uint32_t type;
    const char *hostname;
    int n_hostnames;
    struct cq_ids ids;
    int n_ids;
    struct plan_op ops[MAX_OPS];
    size_t n_ops;
};

/* Writes the plan for cfg and decodes it; fails the test on any malformed field. */
static struct plan *plan_of(const struct cq_sandbox_config *cfg)
{
    struct plan *p = calloc(1, sizeof(*p));
    ck_assert_ptr_nonnull(p);
    p->w = malloc(sizeof(*p->w));
    ck_assert_ptr_nonnull(p->w);
    struct cq_error err = {0};
    ck_assert_msg(cq_rootfs_plan_write(cfg, 0, p->w, &err) == 0, "plan: %s", err.msg);
    ck_assert(!p->w->overflow);

    struct cq_msg_reader r;
    ck_assert_int_eq(cq_msg_reader_init(&r, p->w->buf, p->w->len, NULL), 0);
    p->type = r.type;
    uint16_t tag;
    const void *data;
    size_t len;
    int more;
    while ((more = cq_msg_next(&r, &tag, &data, &len, NULL)) > 0) {
        switch (tag) {
        case CQ_F_HOSTNAME:
            p->hostname = cq_msg_str(data, len);
            ck_assert_ptr_nonnull(p->hostname);
            p->n_hostnames++;
            break;
        case CQ_F_IDS:
            ck_assert_uint_eq(len, sizeof(p->ids));
            memcpy(&p->ids, data, len);
            p->n_ids++;
            break;
        case CQ_F_MOUNT: {
            ck_assert_uint_lt(p->n_ops, MAX_OPS);
            struct plan_op *o = &p->ops[p->n_ops++];
            ck_assert_int_eq(cq_msg_mount(data, len, &o->op, &o->src, &o->dst, NULL), 0);
            break;
        }
        default:
            ck_abort_msg("unexpected field %u in the plan", tag);
        }
    }
    ck_assert_int_eq(more, 0);
    return p;
}

static void plan_free(struct plan *p)
{
    free(p->w);
    free(p);
}

static struct plan *default_plan(void)
{
    struct cq_sandbox_config cfg;
    cq_sandbox_config_init(&cfg);
    return plan_of(&cfg);
}

/* The index of the (only) op whose destination is dst; -1 if none. Fails on two. */
static int find_dst(const struct plan *p, const char *dst)
{
    int found = -1;
    for (size_t i = 0; i < p->n_ops; i++) {
        if (strcmp(p->ops[i].dst, dst) != 0)
            continue;
        ck_assert_msg(found < 0, "%s appears twice in the plan", dst);
        found = (int)i;
    }
    return found;
}

static const struct plan_op *must_find(const struct plan *p, const char *dst)
{
    int i = find_dst(p, dst);
    ck_assert_msg(i >= 0, "%s is missing from the plan", dst);
    return &p->ops[i];
}

/* Does path equal prefix or lie below it? */
static bool at_or_below(const char *path, const char *prefix)
{
    size_t n = strlen(prefix);
    return strncmp(path, prefix, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

/* Ops whose src is a host path (not file contents). */
static bool src_is_host_path(uint32_t kind)
{
    return kind == CQ_MOUNT_BIND_RO || kind == CQ_MOUNT_BIND_RW || kind == CQ_MOUNT_DEV ||
           kind == CQ_MOUNT_COPY;
}

/* --- tests -------------------------------------------------------------------------- */

START_TEST(is_a_config_message_with_ids)
{
    struct plan *p = default_plan();
    ck_assert_uint_eq(p->type, CQ_MSG_CONFIG);
    ck_assert_int_eq(p->n_ids, 1);
    ck_assert_uint_eq(p->ids.user_uid, CQ_SANDBOX_USER_UID);
    ck_assert_uint_eq(p->ids.user_gid, CQ_SANDBOX_USER_UID);
    ck_assert_uint_eq(p->ids.user_uid, 1000);
    ck_assert_uint_gt(p->n_ops, 20);
    plan_free(p);
}
END_TEST

START_TEST(usr_is_a_read_only_bind)
{
    struct plan *p = default_plan();
    const struct plan_op *o = must_find(p, "/usr");
    ck_assert_uint_eq(o->op.kind, CQ_MOUNT_BIND_RO);
    ck_assert_str_eq(o->src, "/usr");
    /* /usr is the runtime: never optional. */
    ck_assert_uint_eq(o->op.flags & CQ_MOUNT_OPTIONAL, 0);
    plan_free(p);
}
END_TEST

START_TEST(runtime_top_level_entries_follow_the_host)
{
    static const char *const top[] = {"/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"};
    struct plan *p = default_plan();
    for (size_t i = 0; i < sizeof(top) / sizeof(top[0]); i++) {
        struct stat st;
        int idx = find_dst(p, top[i]);
        if (lstat(top[i], &st) < 0) {
            ck_assert_msg(idx < 0, "%s does not exist on the host but is planned", top[i]);
            continue;
        }
        ck_assert_msg(idx >= 0, "%s exists on the host but is not planned", top[i]);
        const struct plan_op *o = &p->ops[idx];
        if (S_ISLNK(st.st_mode)) {
            char target[PATH_MAX];
            ssize_t n = readlink(top[i], target, sizeof(target) - 1);
            ck_assert_int_gt(n, 0);
            target[n] = '\0';
            ck_assert_uint_eq(o->op.kind, CQ_MOUNT_SYMLINK);
            ck_assert_str_eq(o->src, target);
        } else {
            ck_assert_uint_eq(o->op.kind, CQ_MOUNT_BIND_RO);
            ck_assert_str_eq(o->src, top[i]);
        }
    }
    plan_free(p);
}
END_TEST

START_TEST(host_secrets_never_appear)
{
    static const char *const never[] = {
        "/etc/shadow",
        "/etc/shadow-",
        "/etc/gshadow",
        "/etc/gshadow-",
        "/etc/sudoers",
        "/etc/sudoers.d",
        "/etc/ssh",
        "/root",
        "/home",
        "/var",
        "/etc/machine-id",
        "/etc/resolv.conf",
        "/run",
        "/sys",
        "/opt",
        "/srv",
        "/mnt",
        "/media",
        "/boot",
        "/etc/passwd-",
        "/etc/group-",
        "/etc/subuid",
        "/etc/subgid",
        "/var/lib/dbus/machine-id",
    };
    struct plan *p = default_plan();
    for (size_t i = 0; i < p->n_ops; i++) {
        const struct plan_op *o = &p->ops[i];
        for (size_t j = 0; j < sizeof(never) / sizeof(never[0]); j++) {
            ck_assert_msg(!at_or_below(o->dst, never[j]), "plan op %zu creates %s", i, o->dst);
            if (src_is_host_path(o->op.kind))
                ck_assert_msg(!at_or_below(o->src, never[j]), "plan op %zu exposes host %s", i,
                              o->src);
        }
        /* Symlinks are resolved inside the sandbox, but none should aim at them either. */
        if (o->op.kind == CQ_MOUNT_SYMLINK)
            for (size_t j = 0; j < sizeof(never) / sizeof(never[0]); j++)
                ck_assert_msg(!at_or_below(o->src, never[j]), "symlink %s -> %s", o->dst, o->src);
    }
    plan_free(p);
}
END_TEST

START_TEST(only_the_workspace_is_writable_from_the_host)
{
    struct plan *p = default_plan();
    for (size_t i = 0; i < p->n_ops; i++)
        ck_assert_msg(p->ops[i].op.kind != CQ_MOUNT_BIND_RW, "read-write bind of %s",
                      p->ops[i].src);
    plan_free(p);
}
END_TEST

START_TEST(etc_entries_are_copied_or_bound_read_only)
{
    struct plan *p = default_plan();
    int etc = find_dst(p, "/etc");
    ck_assert_int_ge(etc, 0);
    ck_assert_uint_eq(p->ops[etc].op.kind, CQ_MOUNT_DIR);
    ck_assert_uint_eq(p->ops[etc].op.mode, 0755);
    for (size_t i = 0; i < p->n_ops; i++) {
        const struct plan_op *o = &p->ops[i];
        if (!at_or_below(o->dst, "/etc") || strcmp(o->dst, "/etc") == 0)
            continue;
        ck_assert_msg((int)i > etc, "%s comes before /etc is made", o->dst);
        ck_assert_msg(o->op.kind == CQ_MOUNT_COPY || o->op.kind == CQ_MOUNT_BIND_RO ||
                          o->op.kind == CQ_MOUNT_SYMLINK || o->op.kind == CQ_MOUNT_FILE,
                      "%s has kind %u", o->dst, o->op.kind);
        if (o->op.kind == CQ_MOUNT_COPY || o->op.kind == CQ_MOUNT_BIND_RO) {
            /* The host entry itself, and optional: a host without it still works. */
            ck_assert_str_eq(o->src, o->dst);
            ck_assert_uint_ne(o->op.flags & CQ_MOUNT_OPTIONAL, 0);
        }
        if (o->op.kind == CQ_MOUNT_COPY) {
            struct stat st;
            ck_assert_int_eq(lstat(o->src, &st), 0);
            ck_assert(S_ISREG(st.st_mode));
            ck_assert_int_le(st.st_size, CQ_ROOTFS_COPY_MAX);
        }
    }
    /* The loader's cache is always wanted (copied when it is small). */
    struct stat st;
    if (lstat("/etc/ld.so.cache", &st) == 0 && S_ISREG(st.st_mode)) {
        const struct plan_op *o = must_find(p, "/etc/ld.so.cache");
        ck_assert_uint_eq(o->op.kind,
                          st.st_size <= CQ_ROOTFS_COPY_MAX ? CQ_MOUNT_COPY : CQ_MOUNT_BIND_RO);
    }
    plan_free(p);
}
END_TEST

START_TEST(passwd_and_group_are_generated)
{
    struct plan *p = default_plan();
    const struct plan_op *o = must_find(p, "/etc/passwd");
    ck_assert_uint_eq(o->op.kind, CQ_MOUNT_FILE);
    ck_assert_uint_eq(o->op.mode, 0644);
    ck_assert_ptr_nonnull(strstr(o->src, "\nsandbox:x:1000:1000:"));
    ck_assert_ptr_nonnull(strstr(o->src, ":/workspace:/bin/sh\n"));
    ck_assert_int_eq(strncmp(o->src, "root:x:0:0:", 11), 0);
    /* Exactly three accounts: no host account names leak in. */
    int lines = 0;
    for (const char *c = o->src; *c != '\0'; c++)
        lines += *c == '\n';
    ck_assert_int_eq(lines, 3);
    ck_assert_ptr_null(strstr(o->src, "daemon:"));

    o = must_find(p, "/etc/group");
    ck_assert_uint_eq(o->op.kind, CQ_MOUNT_FILE);
    ck_assert_ptr_nonnull(strstr(o->src, "\nsandbox:x:1000:\n"));
    ck_assert_ptr_null(strstr(o->src, "sudo"));
    plan_free(p);
}
END_TEST

START_TEST(proc_and_dev)
{
    struct plan *p = default_plan();
    const struct plan_op *o = must_find(p, "/proc");
    ck_assert_uint_eq(o->op.kind, CQ_MOUNT_PROC);

    int dev = find_dst(p, "/dev");
    ck_assert_int_ge(dev, 0);
    o = &p->ops[dev];
    ck_assert_uint_eq(o->op.kind, CQ_MOUNT_TMPFS);
    ck_assert_uint_ne(o->op.flags & CQ_MOUNT_NOEXEC, 0);
    ck_assert_uint_gt(o->op.size_bytes, 0);
    ck_assert_uint_le(o->op.size_bytes, 1 << 20);
    ck_assert_uint_eq(o->op.mode, 0755);
    ck_assert_uint_eq(o->op.owner, 0);

    /* Exactly the harmless device nodes, bound after /dev exists. */
    static const char *const nodes[] = {"/dev/null", "/dev/zero", "/dev/full", "/dev/random",
                                        "/dev/urandom"};
    size_t n_dev = 0;
    for (size_t i = 0; i < p->n_ops; i++) {
        if (p->ops[i].op.kind != CQ_MOUNT_DEV)
            continue;
        n_dev++;
        ck_assert_msg((int)i > dev, "%s is bound before /dev is mounted", p->ops[i].dst);
        ck_assert_str_eq(p->ops[i].src, p->ops[i].dst);
    }
    ck_assert_uint_eq(n_dev, sizeof(nodes) / sizeof(nodes[0]));
    for (size_t i = 0; i < sizeof(nodes) / sizeof(nodes[0]); i++)
        ck_assert_uint_eq(must_find(p, nodes[i])->op.kind, CQ_MOUNT_DEV);
    ck_assert_int_lt(find_dst(p, "/dev/tty"), 0);
    ck_assert_int_lt(find_dst(p, "/dev/kmsg"), 0);
    ck_assert_int_lt(find_dst(p, "/dev/mem"), 0);

    o = must_find(p, "/dev/fd");
    ck_assert_uint_eq(o->op.kind, CQ_MOUNT_SYMLINK);
    ck_assert_str_eq(o->src, "/proc/self/fd");
    plan_free(p);
}
END_TEST

START_TEST(tmpfs_mounts_use_the_configured_limits)
{
    struct cq_sandbox_config cfg;
    cq_sandbox_config_init(&cfg);
    cfg.limits.tmp_bytes = 32ULL << 20;
    cfg.limits.workspace_bytes = 100ULL << 20;
    cfg.limits.workspace_inodes = 1234;
    struct plan *p = plan_of(&cfg);

    const struct plan_op *o = must_find(p, "/dev/shm");
    ck_assert_uint_eq(o->op.kind, CQ_MOUNT_TMPFS);
    ck_assert_uint_eq(o->op.size_bytes, 32ULL << 20);
    ck_assert_uint_eq(o->op.inodes, 1234);
    ck_assert_uint_eq(o->op.mode, 01777);
    ck_assert_uint_ne(o->op.flags & CQ_MOUNT_NOEXEC, 0);
    ck_assert_int_gt(find_dst(p, "/dev/shm"), find_dst(p, "/dev"));

    o = must_find(p, "/tmp");
    ck_assert_uint_eq(o->op.kind, CQ_MOUNT_TMPFS);
    ck_assert_uint_eq(o->op.size_bytes, 32ULL << 20);
    ck_assert_uint_eq(o->op.inodes, 1234);
    ck_assert_uint_eq(o->op.mode, 01777);
    ck_assert_uint_eq(o->op.owner, 0);

    o = must_find(p, "/workspace");
    ck_assert_uint_eq(o->op.kind, CQ_MOUNT_TMPFS);
    ck_assert_uint_eq(o->op.size_bytes, 100ULL << 20);
    ck_assert_uint_eq(o->op.inodes, 1234);
    ck_assert_uint_eq(o->op.mode, 0755);
    ck_assert_uint_eq(o->op.owner, CQ_SANDBOX_USER_UID);
    plan_free(p);
}
END_TEST

START_TEST(default_limits_reach_the_plan)
{
    struct plan *p = default_plan();
    ck_assert_uint_eq(must_find(p, "/tmp")->op.size_bytes, CQ_SANDBOX_DEFAULT_TMP);
    ck_assert_uint_eq(must_find(p, "/dev/shm")->op.size_bytes, CQ_SANDBOX_DEFAULT_TMP);
    ck_assert_uint_eq(must_find(p, "/workspace")->op.size_bytes, CQ_SANDBOX_DEFAULT_DISK);
    ck_assert_uint_eq(must_find(p, "/workspace")->op.inodes, CQ_SANDBOX_DEFAULT_INODES);
    plan_free(p);
}
END_TEST

START_TEST(root_is_made_read_only_last)
{
    struct plan *p = default_plan();
    const struct plan_op *last = &p->ops[p->n_ops - 1];
    ck_assert_uint_eq(last->op.kind, CQ_MOUNT_ROOT_RDONLY);
    ck_assert_str_eq(last->dst, "/");
    for (size_t i = 0; i + 1 < p->n_ops; i++)
        ck_assert_uint_ne(p->ops[i].op.kind, CQ_MOUNT_ROOT_RDONLY);
    plan_free(p);
}
END_TEST

START_TEST(every_destination_is_absolute_and_clean)
{
    /* init refuses ".." and relative destinations; the plan must never need them. */
    struct plan *p = default_plan();
    for (size_t i = 0; i < p->n_ops; i++) {
        ck_assert_msg(p->ops[i].dst[0] == '/', "relative destination '%s'", p->ops[i].dst);
        ck_assert_msg(strstr(p->ops[i].dst, "..") == NULL, "'..' in '%s'", p->ops[i].dst);
    }
    plan_free(p);
}
END_TEST

START_TEST(workspace_dir_is_bound_read_write)
{
    struct cq_sandbox_config cfg;
    cq_sandbox_config_init(&cfg);
    cfg.workspace_dir = "/srv/some/project";
    struct plan *p = plan_of(&cfg);
    const struct plan_op *o = must_find(p, "/workspace");
    ck_assert_uint_eq(o->op.kind, CQ_MOUNT_BIND_RW);
    ck_assert_str_eq(o->src, "/srv/some/project");
    ck_assert_uint_eq(o->op.flags & CQ_MOUNT_OPTIONAL, 0);
    /* It replaces the tmpfs, and it is the only writable bind. */
    size_t rw = 0;
    for (size_t i = 0; i < p->n_ops; i++) {
        ck_assert(
            !(p->ops[i].op.kind == CQ_MOUNT_TMPFS && at_or_below(p->ops[i].dst, "/workspace")));
        rw += p->ops[i].op.kind == CQ_MOUNT_BIND_RW;
    }
    ck_assert_uint_eq(rw, 1);
    ck_assert_uint_eq(p->ops[p->n_ops - 1].op.kind, CQ_MOUNT_ROOT_RDONLY);
    plan_free(p);
}
END_TEST

START_TEST(hostname_is_honoured)
{
    struct cq_sandbox_config cfg;
    cq_sandbox_config_init(&cfg);
    cfg.hostname = "analysis-7";
    struct plan *p = plan_of(&cfg);
    ck_assert_int_eq(p->n_hostnames, 1);
    ck_assert_str_eq(p->hostname, "analysis-7");
    const struct plan_op *o = must_find(p, "/etc/hostname");
    ck_assert_uint_eq(o->op.kind, CQ_MOUNT_FILE); /* generated, never the host's */
    ck_assert_str_eq(o->src, "analysis-7\n");
    o = must_find(p, "/etc/hosts");
    ck_assert_uint_eq(o->op.kind, CQ_MOUNT_FILE);
    ck_assert_ptr_nonnull(strstr(o->src, "127.0.1.1\tanalysis-7\n"));
    ck_assert_ptr_nonnull(strstr(o->src, "127.0.0.1\tlocalhost\n"));
    plan_free(p);
}
END_TEST

START_TEST(resolv_conf_only_with_a_network)
{
    struct cq_sandbox_config cfg;
    cq_sandbox_config_init(&cfg);
    struct plan *p = plan_of(&cfg);
    ck_assert_int_eq(find_dst(p, "/etc/resolv.conf"), -1); /* NONE: never the host's */
    plan_free(p);
    /* PUBLIC and ALLOWLIST: codeq's resolver, never the upstream (--dns) itself. */
    cfg.dns = "203.0.113.53";
    for (int mode = CQ_NETWORK_PUBLIC; mode <= CQ_NETWORK_ALLOWLIST; mode++) {
        cfg.network = (enum cq_network_mode)mode;
        p = plan_of(&cfg);
        const struct plan_op *o = must_find(p, "/etc/resolv.conf");
        ck_assert_uint_eq(o->op.kind, CQ_MOUNT_FILE);
        ck_assert_str_eq(o->src, "nameserver 100.126.255.53\noptions timeout:2 attempts:2\n");
        plan_free(p);
    }
}
END_TEST

START_TEST(hostname_defaults_to_codeq)
{
    struct cq_sandbox_config cfg;
    cq_sandbox_config_init(&cfg);
    cfg.hostname = NULL;
    struct plan *p = plan_of(&cfg);
    ck_assert_str_eq(p->hostname, "codeq");
    ck_assert_str_eq(must_find(p, "/etc/hostname")->src, "codeq\n");
    plan_free(p);
}
END_TEST

START_TEST(plan_too_large_is_an_error)
{
    struct cq_sandbox_config cfg;
    cq_sandbox_config_init(&cfg);
    char *dir = malloc(CQ_PROTO_MAX_MSG + 1);
    ck_assert_ptr_nonnull(dir);
    memset(dir, 'a', CQ_PROTO_MAX_MSG);
    dir[0] = '/';
    dir[CQ_PROTO_MAX_MSG] = '\0';
    cfg.workspace_dir = dir;
    struct cq_msg_writer *w = malloc(sizeof(*w));
    ck_assert_ptr_nonnull(w);
    struct cq_error err = {0};
    ck_assert_int_eq(cq_rootfs_plan_write(&cfg, 0, w, &err), -1);
    ck_assert_int_eq(err.code, E2BIG);
    ck_assert(w->overflow);
    free(w);
    free(dir);
}
END_TEST

static Suite *rootfs_plan_suite(void)
{
    Suite *s = suite_create("rootfs_plan");
    TCase *tc = tcase_create("contents");
    tcase_add_test(tc, is_a_config_message_with_ids);
    tcase_add_test(tc, usr_is_a_read_only_bind);
    tcase_add_test(tc, runtime_top_level_entries_follow_the_host);
    tcase_add_test(tc, host_secrets_never_appear);
    tcase_add_test(tc, only_the_workspace_is_writable_from_the_host);
    tcase_add_test(tc, etc_entries_are_copied_or_bound_read_only);
    tcase_add_test(tc, passwd_and_group_are_generated);
    tcase_add_test(tc, proc_and_dev);
    tcase_add_test(tc, root_is_made_read_only_last);
    tcase_add_test(tc, every_destination_is_absolute_and_clean);
    suite_add_tcase(s, tc);

    tc = tcase_create("configuration");
    tcase_add_test(tc, tmpfs_mounts_use_the_configured_limits);
    tcase_add_test(tc, default_limits_reach_the_plan);
    tcase_add_test(tc, workspace_dir_is_bound_read_write);
    tcase_add_test(tc, hostname_is_honoured);
    tcase_add_test(tc, hostname_defaults_to_codeq);
    tcase_add_test(tc, resolv_conf_only_with_a_network);
    tcase_add_test(tc, plan_too_large_is_an_error);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return cq_unit_run(rootfs_plan_suite(), false);
}
