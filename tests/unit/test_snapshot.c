/* tests/unit/test_snapshot.c - workerd/snapshot.c: the comparison of a workspace's
 * manifest (paths, sizes, modification times) with the last saved one, which decides
 * what a save writes to Redis and what it deletes. Pure: no Redis, no sandbox. */
#define _GNU_SOURCE
#include "workerd/snapshot.h"
#include "unit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct cq_manifest old_m, now_m;
static struct cq_manifest_diff diff;

static void setup(void)
{
    memset(&old_m, 0, sizeof(old_m));
    memset(&now_m, 0, sizeof(now_m));
    memset(&diff, 0, sizeof(diff));
}

static void teardown(void)
{
    cq_manifest_diff_free(&diff);
    cq_manifest_free(&old_m);
    cq_manifest_free(&now_m);
}

static void add_entry(struct cq_manifest *m, const char *path, uint64_t size, int64_t mtime_ns,
                      uint32_t mode, const char *link)
{
    struct cq_error err = {0};
    ck_assert_msg(cq_manifest_add(m, path, size, mtime_ns, mode, link, &err) == 0, "add %s: %s",
                  path, err.msg);
}

static void add_mode(struct cq_manifest *m, const char *path, uint64_t size, int64_t mtime_ns,
                     uint32_t mode)
{
    add_entry(m, path, size, mtime_ns, mode, NULL);
}

static void add(struct cq_manifest *m, const char *path, uint64_t size, int64_t mtime_ns)
{
    add_mode(m, path, size, mtime_ns, 0644);
}

/* Sorts both manifests (as a scan leaves them) and compares them. */
static void compare(void)
{
    struct cq_error err = {0};
    cq_manifest_sort(&old_m);
    cq_manifest_sort(&now_m);
    cq_manifest_diff_free(&diff);
    ck_assert_msg(cq_manifest_diff(&old_m, &now_m, &diff, &err) == 0, "diff: %s", err.msg);
}

/* A list's paths joined by ',' ("" when empty). */
static const char *joined(const struct cq_manifest_entry *const *list, size_t n)
{
    static char buf[2][4096];
    static int which;
    char *out = buf[which++ % 2];
    out[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            strcat(out, ",");
        strncat(out, list[i]->path, sizeof(buf[0]) - strlen(out) - 2);
    }
    return out;
}

static void expect(const char *changed, const char *removed)
{
    ck_assert_str_eq(joined(diff.changed, diff.n_changed), changed);
    ck_assert_str_eq(joined(diff.removed, diff.n_removed), removed);
}

START_TEST(empty_to_empty)
{
    compare();
    expect("", "");
    ck_assert_uint_eq(diff.n_changed, 0);
    ck_assert_uint_eq(diff.n_removed, 0);
}
END_TEST

START_TEST(empty_to_some)
{
    add(&now_m, "b.txt", 2, 20);
    add(&now_m, "a.txt", 1, 10);
    add(&now_m, "dir/c.csv", 3, 30);
    compare();
    expect("a.txt,b.txt,dir/c.csv", "");
    /* The changed entries are now's, with their sizes and times. */
    ck_assert_ptr_eq(diff.changed[0], &now_m.entries[0]);
    ck_assert_uint_eq(diff.changed[2]->size, 3);
    ck_assert_int_eq(diff.changed[2]->mtime_ns, 30);
}
END_TEST

START_TEST(some_to_empty)
{
    add(&old_m, "z", 1, 1);
    add(&old_m, "a", 1, 1);
    compare();
    expect("", "a,z");
    ck_assert_ptr_eq(diff.removed[0], &old_m.entries[0]);
}
END_TEST

START_TEST(unchanged_is_not_written)
{
    add(&old_m, "a", 10, 1000);
    add(&old_m, "b/c", 0, 2000);
    add(&now_m, "b/c", 0, 2000);
    add(&now_m, "a", 10, 1000);
    compare();
    expect("", "");
}
END_TEST

START_TEST(changed_size)
{
    add(&old_m, "a", 10, 1000);
    add(&old_m, "b", 5, 1000);
    add(&now_m, "a", 11, 1000);
    add(&now_m, "b", 5, 1000);
    compare();
    expect("a", "");
    ck_assert_uint_eq(diff.changed[0]->size, 11);
    /* To empty, too. */
    now_m.entries[1].size = 0;
    compare();
    expect("a,b", "");
}
END_TEST

START_TEST(changed_mtime)
{
    add(&old_m, "a", 10, 1000);
    add(&now_m, "a", 10, 1001); /* one nanosecond is a change */
    compare();
    expect("a", "");
    now_m.entries[0].mtime_ns = 999; /* and so is going back in time */
    compare();
    expect("a", "");
    now_m.entries[0].mtime_ns = -5; /* before 1970 */
    compare();
    expect("a", "");
}
END_TEST

/* chmod +x changes neither size nor mtime: the mode is compared, or a script made
 * executable after its last write would come back without its x bit after a move. */
START_TEST(changed_mode)
{
    add_mode(&old_m, "run.sh", 10, 1000, 0644);
    add_mode(&now_m, "run.sh", 10, 1000, 0755);
    compare();
    expect("run.sh", "");
    ck_assert_uint_eq(diff.changed[0]->mode, 0755);
    now_m.entries[0].mode = 0644;
    compare();
    expect("", "");
}
END_TEST

/* A link retargeted to a name of the same length at the same time, or a file replaced
 * by a link, is a change. */
START_TEST(changed_link)
{
    add_entry(&old_m, "bin/py", 4, 1000, 0, "abcd");
    add_entry(&now_m, "bin/py", 4, 1000, 0, "wxyz");
    compare();
    expect("bin/py", "");
    ck_assert_str_eq(diff.changed[0]->link, "wxyz");
    free(now_m.entries[0].link);
    now_m.entries[0].link = strdup("abcd");
    compare();
    expect("", "");
    add_mode(&old_m, "f", 4, 1000, 0);
    add_entry(&now_m, "f", 4, 1000, 0, "abcd");
    compare();
    expect("f", "");
}
END_TEST

START_TEST(renamed_is_written_and_removed)
{
    add(&old_m, "old/name.txt", 7, 70);
    add(&old_m, "kept", 1, 1);
    add(&now_m, "kept", 1, 1);
    add(&now_m, "new/name.txt", 7, 70); /* same size and time, new path */
    compare();
    expect("new/name.txt", "old/name.txt");
}
END_TEST

START_TEST(paths_match_exactly)
{
    /* Prefixes, case and a directory of the same name are other paths. */
    add(&old_m, "a", 1, 1);
    add(&old_m, "A", 1, 1);
    add(&old_m, "ab", 1, 1);
    add(&now_m, "a/b", 1, 1);
    add(&now_m, "a", 1, 1);
    add(&now_m, "ab", 1, 1);
    compare();
    expect("a/b", "A");
}
END_TEST

START_TEST(unsorted_input_is_sorted_first)
{
    static const char *const paths[] = {"m", "b", "z/y", "a", "z", "c/d", "c"};
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        add(&old_m, paths[i], i, (int64_t)i);
        add(&now_m, paths[sizeof(paths) / sizeof(paths[0]) - 1 - i],
            sizeof(paths) / sizeof(paths[0]) - 1 - i,
            (int64_t)(sizeof(paths) / sizeof(paths[0]) - 1 - i));
    }
    cq_manifest_sort(&now_m);
    static const char *const sorted[] = {"a", "b", "c", "c/d", "m", "z", "z/y"};
    for (size_t i = 0; i < now_m.n; i++)
        ck_assert_str_eq(now_m.entries[i].path, sorted[i]);
    compare();
    expect("", "");
    /* One change in the middle, in either order of the inputs. */
    for (size_t i = 0; i < now_m.n; i++)
        if (strcmp(now_m.entries[i].path, "c/d") == 0)
            now_m.entries[i].size += 1;
    compare();
    expect("c/d", "");
}
END_TEST

START_TEST(many_files)
{
    /* 20000 files: every third one changed, every fifth one gone, 1000 new ones. */
    char path[64];
    for (int i = 0; i < 20000; i++) {
        snprintf(path, sizeof(path), "data/part-%05d.csv", i);
        add(&old_m, path, (uint64_t)i, 1000 + i);
        if (i % 5 == 0)
            continue;
        add(&now_m, path, (uint64_t)i, i % 3 == 0 ? 2000 + i : 1000 + i);
    }
    for (int i = 0; i < 1000; i++) {
        snprintf(path, sizeof(path), "new/%04d", i);
        add(&now_m, path, 1, 1);
    }
    ck_assert_uint_eq(old_m.n, 20000);
    ck_assert_uint_eq(now_m.n, 16000 + 1000);
    compare();
    /* Multiples of 3 that are not multiples of 5: 6667 - 1334. */
    ck_assert_uint_eq(diff.n_changed, 6667 - 1334 + 1000);
    ck_assert_uint_eq(diff.n_removed, 4000);
    for (size_t i = 0; i < diff.n_removed; i++) {
        snprintf(path, sizeof(path), "data/part-%05zu.csv", i * 5);
        ck_assert_str_eq(diff.removed[i]->path, path);
    }
    /* In now's (sorted) order: the data parts, then the new files. */
    ck_assert_str_eq(diff.changed[0]->path, "data/part-00003.csv");
    ck_assert_str_eq(diff.changed[diff.n_changed - 1]->path, "new/0999");
    for (size_t i = 1; i < diff.n_changed; i++)
        ck_assert_int_lt(strcmp(diff.changed[i - 1]->path, diff.changed[i]->path), 0);
}
END_TEST

START_TEST(diff_does_not_touch_the_manifests)
{
    add(&old_m, "a", 1, 1);
    add(&old_m, "b", 1, 1);
    add(&now_m, "b", 2, 1);
    add(&now_m, "c", 1, 1);
    compare();
    expect("b,c", "a");
    ck_assert_uint_eq(old_m.n, 2);
    ck_assert_uint_eq(now_m.n, 2);
    ck_assert_str_eq(old_m.entries[0].path, "a");
    ck_assert_uint_eq(old_m.entries[1].size, 1);
    cq_manifest_diff_free(&diff);
    ck_assert_ptr_null(diff.changed);
    ck_assert_uint_eq(diff.n_changed, 0);
    cq_manifest_diff_free(&diff); /* twice is harmless */
}
END_TEST

START_TEST(manifest_add_copies_the_path)
{
    char path[] = "scratch";
    add(&now_m, path, 5, 6);
    path[0] = 'X';
    ck_assert_str_eq(now_m.entries[0].path, "scratch");
    ck_assert_uint_eq(now_m.entries[0].size, 5);
    ck_assert_int_eq(now_m.entries[0].mtime_ns, 6);
    cq_manifest_free(&now_m);
    ck_assert_uint_eq(now_m.n, 0);
    ck_assert_ptr_null(now_m.entries);
}
END_TEST

static Suite *snapshot_suite(void)
{
    Suite *s = suite_create("snapshot");
    TCase *tc = tcase_create("manifest_diff");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, empty_to_empty);
    tcase_add_test(tc, empty_to_some);
    tcase_add_test(tc, some_to_empty);
    tcase_add_test(tc, unchanged_is_not_written);
    tcase_add_test(tc, changed_size);
    tcase_add_test(tc, changed_mtime);
    tcase_add_test(tc, changed_mode);
    tcase_add_test(tc, changed_link);
    tcase_add_test(tc, renamed_is_written_and_removed);
    tcase_add_test(tc, paths_match_exactly);
    tcase_add_test(tc, unsorted_input_is_sorted_first);
    tcase_add_test(tc, many_files);
    tcase_add_test(tc, diff_does_not_touch_the_manifests);
    tcase_add_test(tc, manifest_add_copies_the_path);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return cq_unit_run(snapshot_suite(), false);
}
