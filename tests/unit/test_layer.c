/* tests/unit/test_layer.c - runtime/layer.c: a layer packed into a stream and unpacked
 * again is the same tree; hostile streams (absolute paths, "..", links out of the tree,
 * writes through a link, devices, truncation, a duplicate, another layer's digest) are
 * refused and write nothing outside the directory they are unpacked into; installing
 * checks the manifest against the digest. */
#define _GNU_SOURCE
#include "runtime/layer.h"
#include "runtime/runtime.h"
#include "unit.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char DIGEST[] = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

static char scratch[PATH_MAX];

static void write_file(const char *path, const char *text, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    ck_assert_int_eq(fchmod(fd, mode), 0);
    close(fd);
}

static char *path_in(const char *dir, const char *rel)
{
    static char buf[4][PATH_MAX];
    static int i;
    char *out = buf[i++ % 4];
    snprintf(out, PATH_MAX, "%s/%s", dir, rel);
    return out;
}

static void setup(void)
{
    snprintf(scratch, sizeof(scratch), "/tmp/cq-test-layer-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(scratch));
}

static int rm_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    if (type == FTW_DP)
        chmod(path, 0700), rmdir(path);
    else
        unlink(path);
    return 0;
}

static void teardown(void)
{
    nftw(scratch, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* A tree with what layers hold: directories, files (one executable, one empty), a
 * relative link like npm's node_modules/.bin ones. */
static void make_tree(const char *dir)
{
    ck_assert_int_eq(mkdir(dir, 0755), 0);
    ck_assert_int_eq(mkdir(path_in(dir, "python"), 0755), 0);
    ck_assert_int_eq(mkdir(path_in(dir, "python/pkg"), 0755), 0);
    write_file(path_in(dir, "python/pkg/__init__.py"), "VALUE = 42\n", 0644);
    write_file(path_in(dir, "python/pkg/empty"), "", 0644);
    ck_assert_int_eq(mkdir(path_in(dir, "bin"), 0755), 0);
    write_file(path_in(dir, "python/pkg/tool"), "#!/bin/sh\necho hi\n", 04755);
    ck_assert_int_eq(symlink("../python/pkg/tool", path_in(dir, "bin/tool")), 0);
    write_file(path_in(dir, "manifest.json"), "{}\n", 0644);
}

static void assert_same_file(const char *a, const char *b)
{
    char x[256] = "", y[256] = "";
    int fa = open(a, O_RDONLY), fb = open(b, O_RDONLY);
    ck_assert_int_ge(fa, 0);
    ck_assert_int_ge(fb, 0);
    ck_assert_int_ge(read(fa, x, sizeof(x) - 1), 0);
    ck_assert_int_ge(read(fb, y, sizeof(y) - 1), 0);
    close(fa);
    close(fb);
    ck_assert_str_eq(x, y);
}

START_TEST(round_trip)
{
    char *src = strdup(path_in(scratch, "src")), *dst = strdup(path_in(scratch, "dst"));
    make_tree(src);
    ck_assert_int_eq(mkdir(dst, 0755), 0);
    uint8_t *data;
    size_t len;
    struct cq_error err = {0};
    ck_assert_msg(cq_layer_pack_dir(src, DIGEST, 1 << 20, &data, &len, &err) == 0, "%s", err.msg);
    ck_assert_msg(cq_layer_unpack_dir(data, len, DIGEST, dst, &err) == 0, "%s", err.msg);
    assert_same_file(path_in(src, "python/pkg/__init__.py"),
                     path_in(dst, "python/pkg/__init__.py"));
    assert_same_file(path_in(src, "manifest.json"), path_in(dst, "manifest.json"));
    struct stat st;
    ck_assert_int_eq(stat(path_in(dst, "python/pkg/empty"), &st), 0);
    ck_assert_int_eq(st.st_size, 0);
    /* The executable stays executable; its setuid bit does not travel. */
    ck_assert_int_eq(stat(path_in(dst, "python/pkg/tool"), &st), 0);
    ck_assert_int_eq(st.st_mode & 07777, 0755);
    char target[64] = "";
    ck_assert_int_gt(readlink(path_in(dst, "bin/tool"), target, sizeof(target) - 1), 0);
    ck_assert_str_eq(target, "../python/pkg/tool");
    /* The same tree packs to the same bytes (names are sorted). */
    uint8_t *again;
    size_t again_len;
    ck_assert_int_eq(cq_layer_pack_dir(dst, DIGEST, 1 << 20, &again, &again_len, &err), 0);
    ck_assert_uint_eq(again_len, len);
    ck_assert_int_eq(memcmp(again, data, len), 0);
    /* Another digest than the stream's is refused. */
    char other[sizeof(DIGEST)];
    memcpy(other, DIGEST, sizeof(DIGEST));
    other[0] = 'f';
    char *dst2 = path_in(scratch, "dst2");
    ck_assert_int_eq(mkdir(dst2, 0755), 0);
    ck_assert_int_eq(cq_layer_unpack_dir(data, len, other, dst2, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "not "));
    /* Too large for max. */
    free(again);
    ck_assert_int_eq(cq_layer_pack_dir(src, DIGEST, len - 1, &again, &again_len, &err), -1);
    ck_assert_int_eq(err.code, CQ_ELIMIT);
    free(data);
    free(src);
    free(dst);
}
END_TEST

/* --- hostile streams, written by hand ------------------------------------------------- */

struct stream {
    uint8_t b[32768];
    size_t n;
};

static void s_bytes(struct stream *s, const void *p, size_t n)
{
    ck_assert_uint_le(s->n + n, sizeof(s->b));
    memcpy(s->b + s->n, p, n);
    s->n += n;
}

static void s_be(struct stream *s, uint64_t v, int bytes)
{
    for (int i = bytes - 1; i >= 0; i--) {
        uint8_t c = (uint8_t)(v >> (8 * i));
        s_bytes(s, &c, 1);
    }
}

static void s_init(struct stream *s)
{
    s->n = 0;
    s_bytes(s, "CQLAYER1", 8);
    s_bytes(s, DIGEST, 64);
    s_bytes(s, "\n", 1);
}

static void s_entry(struct stream *s, char type, const char *path)
{
    s_bytes(s, &type, 1);
    s_be(s, 0755, 4);
    s_be(s, strlen(path), 2);
    s_bytes(s, path, strlen(path));
}

static void s_dir(struct stream *s, const char *path)
{
    s_entry(s, 'd', path);
}

static void s_file(struct stream *s, const char *path, const char *text)
{
    s_entry(s, 'f', path);
    s_be(s, strlen(text), 8);
    s_bytes(s, text, strlen(text));
}

static void s_link(struct stream *s, const char *path, const char *target)
{
    s_entry(s, 'l', path);
    s_be(s, strlen(target), 2);
    s_bytes(s, target, strlen(target));
}

static void s_end(struct stream *s)
{
    s_bytes(s, "E", 1);
}

/* The number of entries in dir (not recursive). */
static int entries(const char *dir)
{
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return n;
}

/* Unpacks s into scratch/a/b/into (two levels of parents to climb into) and expects a
 * refusal whose message holds want, with nothing written outside into. */
static void refused(struct stream *s, const char *want)
{
    char *a = strdup(path_in(scratch, "a")), *b = strdup(path_in(a, "b"));
    char *into = strdup(path_in(b, "into"));
    ck_assert_int_eq(mkdir(a, 0755), 0);
    ck_assert_int_eq(mkdir(b, 0755), 0);
    ck_assert_int_eq(mkdir(into, 0755), 0);
    struct cq_error err = {0};
    ck_assert_int_eq(cq_layer_unpack_dir(s->b, s->n, DIGEST, into, &err), -1);
    ck_assert_int_eq(err.code != 0, 1);
    ck_assert_msg(strstr(err.msg, want) != NULL, "message '%s' lacks '%s'", err.msg, want);
    ck_assert_int_eq(entries(scratch), 1); /* a */
    ck_assert_int_eq(entries(a), 1);       /* b */
    ck_assert_int_eq(entries(b), 1);       /* into */
    ck_assert_int_eq(access("/tmp/cq-test-layer-escaped", F_OK), -1);
    free(a);
    free(b);
    free(into);
}

START_TEST(refuses_dotdot)
{
    struct stream s;
    s_init(&s);
    s_file(&s, "../escaped", "x");
    s_end(&s);
    refused(&s, "with . or .. in it");
    teardown();
    setup();
    s_init(&s);
    s_dir(&s, "d");
    s_file(&s, "d/../../escaped", "x");
    s_end(&s);
    refused(&s, "with . or .. in it");
}
END_TEST

START_TEST(refuses_absolute)
{
    struct stream s;
    s_init(&s);
    s_file(&s, "/tmp/cq-test-layer-escaped", "x");
    s_end(&s);
    refused(&s, "absolute");
}
END_TEST

START_TEST(refuses_link_out)
{
    struct stream s;
    s_init(&s);
    s_link(&s, "up", "../..");
    s_end(&s);
    refused(&s, "points out of the layer");
    teardown();
    setup();
    s_init(&s);
    s_link(&s, "abs", "/tmp");
    s_end(&s);
    refused(&s, "points out of the layer");
    teardown();
    setup();
    /* A link that climbs after a name: d/x -> ../d/../.. would leave through d. */
    s_init(&s);
    s_dir(&s, "d");
    s_link(&s, "d/x", "../d/../..");
    s_end(&s);
    refused(&s, "points out of the layer");
}
END_TEST

START_TEST(refuses_write_through_link)
{
    /* The link itself stays inside (to d), but nothing is written through a link: a
     * later entry below it must not land in whatever the link names. */
    struct stream s;
    s_init(&s);
    s_dir(&s, "d");
    s_link(&s, "l", "d");
    s_file(&s, "l/f", "x");
    s_end(&s);
    char *into = strdup(path_in(scratch, "into"));
    ck_assert_int_eq(mkdir(into, 0755), 0);
    struct cq_error err = {0};
    ck_assert_int_eq(cq_layer_unpack_dir(s.b, s.n, DIGEST, into, &err), -1);
    ck_assert_msg(strstr(err.msg, "not a directory of the layer") != NULL, "%s", err.msg);
    ck_assert_int_eq(access(path_in(into, "d/f"), F_OK), -1);
    free(into);
}
END_TEST

START_TEST(refuses_devices_and_garbage)
{
    struct stream s;
    s_init(&s);
    s_entry(&s, 'c', "null"); /* a character device */
    s_be(&s, 0x0103, 8);
    s_end(&s);
    refused(&s, "no devices");
    teardown();
    setup();
    s_init(&s);
    s_file(&s, "f", "x");
    s_file(&s, "f", "y"); /* twice */
    s_end(&s);
    refused(&s, "create f");
    teardown();
    setup();
    s_init(&s);
    s_file(&s, "f", "hello");
    s.n -= 2; /* truncated in the contents */
    refused(&s, "truncated");
    teardown();
    setup();
    s_init(&s);
    s_file(&s, "f", "x"); /* no end marker */
    refused(&s, "truncated");
    teardown();
    setup();
    s_init(&s);
    memcpy(s.b, "NOTLAYER", 8);
    s_end(&s);
    refused(&s, "not a codeq layer stream");
}
END_TEST

/* s: n directories, each in the one before ("a", "a/a", ...). */
static void s_nested(struct stream *s, int n)
{
    char path[2 * 200];
    s_init(s);
    for (int k = 1; k <= n; k++) {
        snprintf(path, sizeof(path), "a");
        for (int i = 1; i < k; i++)
            strcat(path, "/a");
        s_dir(s, path);
    }
    s_end(s);
}

/* Whatever unpacks packs again, at the depth limit too (found with fuzz_layer: a
 * directory 128 levels below the root unpacked, and its tree then did not pack). */
START_TEST(depth_limit_both_ways)
{
    static struct stream s;
    s_nested(&s, 128); /* the deepest: "a" + 127 times "/a" */
    char *into = strdup(path_in(scratch, "into"));
    ck_assert_int_eq(mkdir(into, 0755), 0);
    struct cq_error err = {0};
    ck_assert_msg(cq_layer_unpack_dir(s.b, s.n, DIGEST, into, &err) == 0, "%s", err.msg);
    uint8_t *packed;
    size_t len;
    ck_assert_msg(cq_layer_pack_dir(into, DIGEST, 1 << 20, &packed, &len, &err) == 0, "%s",
                  err.msg);
    ck_assert_uint_eq(len, s.n);
    ck_assert_int_eq(memcmp(packed, s.b, len), 0);
    free(packed);
    free(into);
    teardown();
    setup();
    s_nested(&s, 129);
    refused(&s, "too deep");
}
END_TEST

START_TEST(pack_refuses_special_files)
{
    char *src = strdup(path_in(scratch, "src"));
    ck_assert_int_eq(mkdir(src, 0755), 0);
    ck_assert_int_eq(mkfifo(path_in(src, "fifo"), 0644), 0);
    uint8_t *data;
    size_t len;
    struct cq_error err = {0};
    ck_assert_int_eq(cq_layer_pack_dir(src, DIGEST, 1 << 20, &data, &len, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "fifo"));
    unlink(path_in(src, "fifo"));
    ck_assert_int_eq(symlink("../../etc/passwd", path_in(src, "out")), 0);
    ck_assert_int_eq(cq_layer_pack_dir(src, DIGEST, 1 << 20, &data, &len, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "points out of the layer"));
    free(src);
}
END_TEST

/* --- installing into a store ------------------------------------------------------------ */

/* A layer directory whose manifest hashes to *digest. */
static void make_layer(const char *dir, char *digest)
{
    make_tree(dir);
    const char *spec_json = "{\"name\": \"t\", \"language\": \"python3.11\"}";
    struct cq_runtime_spec spec;
    struct cq_error err = {0};
    ck_assert_msg(cq_runtime_spec_parse(spec_json, strlen(spec_json), &spec, &err) == 0, "%s",
                  err.msg);
    const char *lines[] = {"pip pkg 1.0 "
                           "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"};
    ck_assert_int_eq(cq_runtime_digest(spec.canonical, lines, 1, digest, &err), 0);
    char manifest[2048];
    snprintf(manifest, sizeof(manifest),
             "{\"digest\": \"%s\", \"name\": \"t\", \"spec\": %s, \"artifacts\": [{\"kind\": "
             "\"pip\", \"name\": \"pkg\", \"version\": \"1.0\", \"sha256\": "
             "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}], "
             "\"python_path\": \"python\", \"node_path\": \"\"}",
             digest, spec.canonical);
    cq_runtime_spec_free(&spec);
    write_file(path_in(dir, "manifest.json"), manifest, 0644);
}

START_TEST(install_checks_manifest)
{
    char digest[CQ_RUNTIME_DIGEST_LEN + 1];
    char *src = strdup(path_in(scratch, "src")), *store = strdup(path_in(scratch, "store"));
    make_layer(src, digest);
    uint8_t *data;
    size_t len;
    struct cq_error err = {0};
    ck_assert_int_eq(cq_layer_pack_dir(src, digest, 1 << 20, &data, &len, &err), 0);
    ck_assert_msg(cq_layer_install(store, "t", digest, data, len, &err) == 0, "%s", err.msg);
    char got[CQ_RUNTIME_DIGEST_LEN + 1];
    ck_assert_int_eq(cq_runtime_lookup(store, "t", got, &err), 0);
    ck_assert_str_eq(got, digest);
    char layer_file[PATH_MAX];
    snprintf(layer_file, sizeof(layer_file), "%s/layers/%s/python/pkg/__init__.py", store, digest);
    ck_assert_int_eq(access(layer_file, R_OK), 0);
    /* Installed again: the layer there is kept. */
    ck_assert_int_eq(cq_layer_install(store, "t", digest, data, len, &err), 0);
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof(tmp), "%s/tmp", store);
    ck_assert_int_eq(entries(tmp), 0);
    /* Packed back out of the store: the same stream. */
    uint8_t *again;
    size_t again_len;
    ck_assert_int_eq(cq_layer_pack(store, "t", 1 << 20, got, &again, &again_len, &err), 0);
    ck_assert_uint_eq(again_len, len);
    ck_assert_int_eq(memcmp(again, data, len), 0);
    free(again);
    free(data);

    /* A manifest that does not hash to the digest (an artifact changed) is refused,
     * and leaves nothing in the store. */
    char *bad = strdup(path_in(scratch, "bad"));
    char bad_digest[CQ_RUNTIME_DIGEST_LEN + 1];
    make_layer(bad, bad_digest);
    char text[4096] = "";
    int fd = open(path_in(bad, "manifest.json"), O_RDONLY);
    ck_assert_int_gt(read(fd, text, sizeof(text) - 1), 0);
    close(fd);
    char *version = strstr(text, "\"1.0\"");
    ck_assert_ptr_nonnull(version);
    version[1] = '2';
    write_file(path_in(bad, "manifest.json"), text, 0644);
    ck_assert_int_eq(cq_layer_pack_dir(bad, bad_digest, 1 << 20, &data, &len, &err), 0);
    char *store2 = path_in(scratch, "store2");
    ck_assert_int_eq(cq_layer_install(store2, "t", bad_digest, data, len, &err), -1);
    ck_assert_msg(strstr(err.msg, "hash to") != NULL, "%s", err.msg);
    snprintf(tmp, sizeof(tmp), "%s/layers", store2);
    ck_assert_int_eq(entries(tmp), 0);
    ck_assert_int_eq(cq_runtime_lookup(store2, "t", got, &err), -1);
    free(data);
    free(bad);
    free(src);
    free(store);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("layer");
    TCase *tc = tcase_create("layer");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, round_trip);
    tcase_add_test(tc, refuses_dotdot);
    tcase_add_test(tc, refuses_absolute);
    tcase_add_test(tc, refuses_link_out);
    tcase_add_test(tc, refuses_write_through_link);
    tcase_add_test(tc, refuses_devices_and_garbage);
    tcase_add_test(tc, depth_limit_both_ways);
    tcase_add_test(tc, pack_refuses_special_files);
    tcase_add_test(tc, install_checks_manifest);
    suite_add_tcase(s, tc);
    return cq_unit_run(s, false);
}
