/* tests/unit/host_cgroups.h - a test process's sandbox cgroups, found from the
 * outside as an administrator would (/proc/self/cgroup and mountinfo, not the library):
 * tests check with it that nothing is left behind. Header-only, like unit.h, for the
 * unit tests that start sandboxes (test_sandbox.c, test_worker.c).
 *
 * Every such test runs in its own process (forced fork mode), so the cgroups of its
 * sandboxes are exactly those named "<that process's pid>-<n>" under the library's
 * codeq cgroup directories. */
#ifndef CQ_TESTS_HOST_CGROUPS_H
#define CQ_TESTS_HOST_CGROUPS_H

#include <check.h>
#include <dirent.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define MAX_BASES 4

struct cgroup_bases {
    int version;
    /* v1: memory, pids, cpu, and cpuacct where it is a hierarchy of its own; v2: the
     * unified one */
    char dir[MAX_BASES][PATH_MAX];
    int n;
    int cpuacct; /* index of cpuacct's own directory in dir, or -1 */
};

/* Our cgroup path for a v1 controller, or the unified one when controller is NULL. */
static bool own_cgroup(const char *controller, char *out, size_t len)
{
    FILE *f = fopen("/proc/self/cgroup", "re");
    ck_assert_ptr_nonnull(f);
    char line[4096];
    bool found = false;
    while (!found && fgets(line, sizeof(line), f) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        char *ctl = strchr(line, ':');
        char *path = ctl != NULL ? strchr(ctl + 1, ':') : NULL;
        if (path == NULL)
            continue;
        *path++ = '\0';
        ctl++;
        if (controller == NULL) {
            found = strcmp(line, "0") == 0 && ctl[0] == '\0';
        } else {
            for (char *tok = strtok(ctl, ","); tok != NULL && !found; tok = strtok(NULL, ","))
                found = strcmp(tok, controller) == 0;
        }
        if (found)
            snprintf(out, len, "%s", path);
    }
    fclose(f);
    return found;
}

/* Mount point and root of the v1 hierarchy with controller, or of cgroup2 (NULL). */
static bool cgroup_mount(const char *controller, char *point, char *root)
{
    FILE *f = fopen("/proc/self/mountinfo", "re");
    ck_assert_ptr_nonnull(f);
    char line[8192];
    bool found = false;
    while (!found && fgets(line, sizeof(line), f) != NULL) {
        char *sep = strstr(line, " - ");
        char fstype[32], source[256], options[1024];
        if (sep == NULL || sscanf(sep + 3, "%31s %255s %1023s", fstype, source, options) != 3 ||
            sscanf(line, "%*d %*d %*s %4095s %4095s", root, point) != 2)
            continue;
        if (controller == NULL) {
            found = strcmp(fstype, "cgroup2") == 0;
        } else if (strcmp(fstype, "cgroup") == 0) {
            for (char *tok = strtok(options, ","); tok != NULL && !found; tok = strtok(NULL, ","))
                found = strcmp(tok, controller) == 0;
        }
    }
    fclose(f);
    return found;
}

/* Is cpuacct mounted as a v1 hierarchy without any of the controllers that limit
 * (memory, pids, cpu)? Then sandboxes get a cgroup there too, for their CPU time. */
static bool cpuacct_apart(void)
{
    FILE *f = fopen("/proc/self/mountinfo", "re");
    ck_assert_ptr_nonnull(f);
    char line[8192];
    bool apart = false;
    while (!apart && fgets(line, sizeof(line), f) != NULL) {
        char *sep = strstr(line, " - ");
        char fstype[32], source[256], options[1024];
        if (sep == NULL || sscanf(sep + 3, "%31s %255s %1023s", fstype, source, options) != 3 ||
            strcmp(fstype, "cgroup") != 0)
            continue;
        bool acct = false, limits = false;
        for (char *tok = strtok(options, ","); tok != NULL; tok = strtok(NULL, ",")) {
            acct |= strcmp(tok, "cpuacct") == 0;
            limits |=
                strcmp(tok, "memory") == 0 || strcmp(tok, "pids") == 0 || strcmp(tok, "cpu") == 0;
        }
        apart = acct && !limits;
    }
    fclose(f);
    return apart;
}

static void add_base(struct cgroup_bases *b, const char *controller)
{
    char point[PATH_MAX], root[PATH_MAX], own[PATH_MAX];
    ck_assert(cgroup_mount(controller, point, root));
    ck_assert(own_cgroup(controller, own, sizeof(own)));
    const char *rel = own;
    if (strcmp(root, "/") != 0 && strncmp(own, root, strlen(root)) == 0)
        rel = own + strlen(root);
    /* On v2 the library may have moved us into a leaf next to its sandboxes. */
    char *leaf = strstr(own, "/codeq-supervisor");
    if (controller == NULL && leaf != NULL && leaf[17] == '\0')
        *leaf = '\0';
    snprintf(b->dir[b->n++], PATH_MAX, "%s%s/codeq", point, strcmp(rel, "/") == 0 ? "" : rel);
}

static void find_bases(struct cgroup_bases *b)
{
    memset(b, 0, sizeof(*b));
    b->cpuacct = -1;
    char point[PATH_MAX], root[PATH_MAX];
    if (cgroup_mount("memory", point, root)) {
        b->version = 1;
        add_base(b, "memory");
        add_base(b, "pids");
        add_base(b, "cpu");
        if (cpuacct_apart()) {
            b->cpuacct = b->n;
            add_base(b, "cpuacct");
        }
    } else {
        b->version = 2;
        add_base(b, NULL);
    }
}

/* Names of this process's sandbox cgroups start with "<pid>-". */
static bool is_ours(const char *name)
{
    char prefix[32];
    int n = snprintf(prefix, sizeof(prefix), "%d-", (int)getpid());
    return strncmp(name, prefix, (size_t)n) == 0;
}

/* How many cgroup directories of this process's sandboxes exist below base. */
static int count_own_cgroups_in(const char *base)
{
    DIR *d = opendir(base);
    if (d == NULL)
        return 0; /* no sandbox made yet */
    int count = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        count += e->d_type == DT_DIR && is_ours(e->d_name);
    closedir(d);
    return count;
}

/* How many cgroup directories of this process's sandboxes exist, in all hierarchies. */
static int count_own_cgroups(void)
{
    struct cgroup_bases b;
    find_bases(&b);
    int count = 0;
    for (int i = 0; i < b.n; i++)
        count += count_own_cgroups_in(b.dir[i]);
    return count;
}

#endif
