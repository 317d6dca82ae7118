/* tests/unit/test_files.c - worker/files.c: writeFiles, readFiles, listFiles and
 * removeFiles on a real sandbox's workspace, from the host side.
 *
 * The workspace belongs to hostile code, so most tests first plant something with
 * cq_sandbox_spawn, exactly as sandboxed code would (symlinks out of the workspace,
 * symlinked directories, FIFOs, unreadable files), and then check that the host side
 * neither follows, blocks, nor acts with more rights than the sandbox user. Every
 * call also checks that the calling thread's filesystem identity is back to what it
 * was (files.c switches it to the sandbox user for the duration of a call).
 *
 * Needs root. Every test runs in its own process with its own sandbox. */
#define _GNU_SOURCE
#include "worker/internal.h"
#include "common/clock.h"
#include "common/units.h"
#include "result_text.h"
#include "unit.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static struct cq_sandbox *sb;
static struct cq_files files;

/* --- running things in the sandbox ----------------------------------------------------- */

struct captured {
    char out[65536];
    size_t len;
};

static void capture(void *ctx, int stream, const char *data, size_t len)
{
    struct captured *c = ctx;
    if (stream != 1)
        return;
    size_t room = sizeof(c->out) - 1 - c->len;
    size_t n = len < room ? len : room;
    memcpy(c->out + c->len, data, n);
    c->len += n;
    c->out[c->len] = '\0';
}

/* Runs `sh -c script` in the sandbox (as sandboxed code: uid 1000, cwd /workspace);
 * returns its exit code, stdout in out (may be NULL). */
static int sh(const char *script, struct captured *out)
{
    static struct captured scratch;
    if (out == NULL)
        out = &scratch;
    memset(out, 0, sizeof(*out));
    const char *argv[] = {"/bin/sh", "-c", script, NULL};
    struct cq_spawn req;
    cq_spawn_init(&req, argv);
    req.stdout_mode = CQ_STDIO_PIPE;
    req.stderr_mode = CQ_STDIO_PIPE;
    req.timeout_ms = 30000;
    struct cq_process *p = NULL;
    struct cq_error err = {0};
    ck_assert_msg(cq_sandbox_spawn(sb, &req, &p, &err) == 0, "spawn: %s", err.msg);
    struct cq_wait_io io = {.on_output = capture, .ctx = out, .input_fd = -1};
    struct cq_process_report rep;
    ck_assert_msg(cq_process_wait(p, &io, &rep, &err) == 0, "wait: %s", err.msg);
    cq_process_free(p);
    return rep.exit_code;
}

static void sh_ok(const char *script)
{
    struct captured out;
    int rc = sh(script, &out);
    ck_assert_msg(rc == 0, "in the sandbox, `%s` exited with %d", script, rc);
}

static void sh_expect(const char *script, const char *expected)
{
    struct captured out;
    int rc = sh(script, &out);
    ck_assert_msg(rc == 0 && strcmp(out.out, expected) == 0,
                  "in the sandbox, `%s`: exit %d, output '%s', want '%s'", script, rc, out.out,
                  expected);
}

/* --- the thread's filesystem identity ---------------------------------------------------- */

struct fs_ids {
    long uid[4], gid[4]; /* real, effective, saved, filesystem */
};

static struct fs_ids thread_ids(void)
{
    struct fs_ids ids;
    memset(&ids, 0xff, sizeof(ids));
    FILE *f = fopen("/proc/thread-self/status", "re");
    ck_assert_ptr_nonnull(f);
    char line[512];
    int found = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        found += sscanf(line, "Uid: %ld %ld %ld %ld", &ids.uid[0], &ids.uid[1], &ids.uid[2],
                        &ids.uid[3]) == 4;
        found += sscanf(line, "Gid: %ld %ld %ld %ld", &ids.gid[0], &ids.gid[1], &ids.gid[2],
                        &ids.gid[3]) == 4;
    }
    fclose(f);
    ck_assert_int_eq(found, 2);
    return ids;
}

static void assert_ids_unchanged(const struct fs_ids *before, const char *op)
{
    struct fs_ids after = thread_ids();
    for (int i = 0; i < 4; i++) {
        ck_assert_msg(after.uid[i] == before->uid[i], "%s: uid field %d is %ld, was %ld", op, i,
                      after.uid[i], before->uid[i]);
        ck_assert_msg(after.gid[i] == before->gid[i], "%s: gid field %d is %ld, was %ld", op, i,
                      after.gid[i], before->gid[i]);
    }
}

/* --- the operations, each with the identity check --------------------------------------- */

static void do_write(const struct cq_file_content *c, size_t n, struct cq_result *r)
{
    struct fs_ids before = thread_ids();
    cq_result_init(r);
    cq_files_write(&files, c, n, r);
    assert_ids_unchanged(&before, "writeFiles");
}

static void do_read(const char *const *paths, size_t n, struct cq_result *r)
{
    struct fs_ids before = thread_ids();
    cq_result_init(r);
    cq_files_read(&files, paths, n, r);
    assert_ids_unchanged(&before, "readFiles");
}

static void do_list(const char *dir, struct cq_result *r)
{
    struct fs_ids before = thread_ids();
    cq_result_init(r);
    cq_files_list(&files, dir, r);
    assert_ids_unchanged(&before, "listFiles");
}

static void do_remove(const char *const *paths, size_t n, struct cq_result *r)
{
    struct fs_ids before = thread_ids();
    cq_result_init(r);
    cq_files_remove(&files, paths, n, r);
    assert_ids_unchanged(&before, "removeFiles");
}

static size_t count_blocks(const struct cq_result *r, enum cq_block_type type)
{
    size_t n = 0;
    for (size_t i = 0; i < r->n_blocks; i++)
        n += r->blocks[i].type == type;
    return n;
}

static void write_text(const char *path, const char *text)
{
    struct cq_file_content c = {.path = path, .data = (const uint8_t *)text, .len = strlen(text)};
    struct cq_result r;
    do_write(&c, 1, &r);
    ck_assert_msg(!r.is_error, "writing %s failed: %s", path, cq_unit_result_text(&r));
    cq_result_free(&r);
}

/* Reads one path and expects a failure whose text contains why (may be NULL). */
static void read_refused(const char *path, enum cq_result_error code, const char *why)
{
    struct cq_result r;
    do_read(&path, 1, &r);
    ck_assert_msg(r.is_error, "reading '%s' succeeded", path);
    ck_assert_msg(r.error_code == code, "reading '%s': error code %s, want %s", path,
                  cq_result_error_name(r.error_code), cq_result_error_name(code));
    ck_assert_msg(count_blocks(&r, CQ_BLOCK_RESOURCE) == 0, "reading '%s' returned content", path);
    if (why != NULL)
        ck_assert_msg(strstr(cq_unit_result_text(&r), why) != NULL, "reading '%s': '%s' lacks '%s'",
                      path, cq_unit_result_text(&r), why);
    cq_result_free(&r);
}

static void write_refused(const char *path, const char *text, enum cq_result_error code,
                          const char *why)
{
    struct cq_file_content c = {.path = path, .data = (const uint8_t *)text, .len = strlen(text)};
    struct cq_result r;
    do_write(&c, 1, &r);
    ck_assert_msg(r.is_error, "writing '%s' succeeded: %s", path, cq_unit_result_text(&r));
    ck_assert_msg(r.error_code == code, "writing '%s': error code %s, want %s (%s)", path,
                  cq_result_error_name(r.error_code), cq_result_error_name(code),
                  cq_unit_result_text(&r));
    if (why != NULL)
        ck_assert_msg(strstr(cq_unit_result_text(&r), why) != NULL, "writing '%s': '%s' lacks '%s'",
                      path, cq_unit_result_text(&r), why);
    cq_result_free(&r);
}

static void remove_refused(const char *path, enum cq_result_error code, const char *why)
{
    struct cq_result r;
    do_remove(&path, 1, &r);
    ck_assert_msg(r.is_error, "removing '%s' succeeded: %s", path, cq_unit_result_text(&r));
    ck_assert_msg(r.error_code == code, "removing '%s': error code %s, want %s (%s)", path,
                  cq_result_error_name(r.error_code), cq_result_error_name(code),
                  cq_unit_result_text(&r));
    if (why != NULL)
        ck_assert_msg(strstr(cq_unit_result_text(&r), why) != NULL,
                      "removing '%s': '%s' lacks '%s'", path, cq_unit_result_text(&r), why);
    cq_result_free(&r);
}

static void remove_ok(const char *path)
{
    struct cq_result r;
    do_remove(&path, 1, &r);
    ck_assert_msg(!r.is_error, "removing '%s' failed: %s", path, cq_unit_result_text(&r));
    cq_result_free(&r);
}

/* Reads one path expecting success; returns the resource block (result in *r). */
static const struct cq_block *read_one(const char *path, struct cq_result *r)
{
    do_read(&path, 1, r);
    ck_assert_msg(!r->is_error, "reading '%s' failed: %s", path, cq_unit_result_text(r));
    /* A text block naming the file (for clients that show only text), then the file. */
    ck_assert_uint_eq(r->n_blocks, 2);
    ck_assert_int_eq(r->blocks[0].type, CQ_BLOCK_TEXT);
    ck_assert_int_eq(r->blocks[1].type, CQ_BLOCK_RESOURCE);
    char *name = NULL; /* the path as normalised: the resource's uri says it */
    ck_assert_int_ge(
        asprintf(&name, "file: %s (%zu bytes, %s%s)", r->blocks[1].uri + strlen("file://"),
                 r->blocks[1].is_blob ? r->blocks[1].data_len : strlen(r->blocks[1].text),
                 r->blocks[1].mime_type, r->blocks[1].is_blob ? ", binary" : ""),
        0);
    ck_assert_str_eq(r->blocks[0].text, name);
    free(name);
    return &r->blocks[1];
}

/* --- fixture ------------------------------------------------------------------------- */

static struct cq_sandbox *make_sandbox(uint64_t workspace_bytes)
{
    struct cq_sandbox_config cfg;
    cq_sandbox_config_init(&cfg);
    if (workspace_bytes != 0)
        cfg.limits.workspace_bytes = workspace_bytes;
    struct cq_sandbox *s = NULL;
    struct cq_error err = {0};
    ck_assert_msg(cq_sandbox_create(&cfg, &s, &err) == 0, "create sandbox: %s", err.msg);
    return s;
}

static void use_sandbox(struct cq_sandbox *s)
{
    sb = s;
    files.workspace_fd = cq_sandbox_workspace_fd(sb);
    ck_assert_int_ge(files.workspace_fd, 0);
    cq_sandbox_user_ids(sb, &files.uid, &files.gid);
    ck_assert_uint_ne(files.uid, 0);
}

static void setup(void)
{
    if (getenv("CODEQ_SANDBOX_INIT") == NULL)
        setenv("CODEQ_SANDBOX_INIT", CQ_BUILD_DIR "/bin/codeq-sandbox-init", 0);
    umask(022);
    use_sandbox(make_sandbox(0));
}

static void teardown(void)
{
    cq_sandbox_destroy(sb);
    sb = NULL;
}

/* --- round trips ------------------------------------------------------------------------ */

START_TEST(text_round_trip)
{
    const char *text = "h\xc3\xa9llo, world\nline 2\n";
    write_text("hello.txt", text);
    struct cq_result r;
    const struct cq_block *b = read_one("hello.txt", &r);
    ck_assert(!b->is_blob);
    ck_assert_str_eq(b->text, text);
    ck_assert_str_eq(b->uri, "file://hello.txt");
    ck_assert_str_eq(b->mime_type, "text/plain");
    cq_result_free(&r);
    /* Sandboxed code sees the same bytes. */
    sh_expect("cat hello.txt", text);
    /* The write reported what it did. */
    struct cq_file_content c = {.path = "two.md", .data = (const uint8_t *)"# x\n", .len = 4};
    do_write(&c, 1, &r);
    ck_assert_msg(strstr(cq_unit_result_text(&r), "two.md") != NULL &&
                      strstr(cq_unit_result_text(&r), "4 bytes"),
                  "write said '%s'", cq_unit_result_text(&r));
    ck_assert(!r.has_structured);
    cq_result_free(&r);
    b = read_one("two.md", &r);
    ck_assert_str_eq(b->mime_type, "text/markdown");
    cq_result_free(&r);
}
END_TEST

START_TEST(binary_round_trip)
{
    uint8_t bytes[1024];
    for (size_t i = 0; i < sizeof(bytes); i++)
        bytes[i] = (uint8_t)(i * 7);
    struct cq_file_content c[3] = {
        {.path = "data.bin", .is_blob = true, .data = bytes, .len = sizeof(bytes)},
        /* No NUL but not UTF-8: bytes too. */
        {.path = "latin1.txt", .is_blob = true, .data = (const uint8_t *)"caf\xe9", .len = 4},
        {.path = "img/pic.PNG",
         .is_blob = true,
         .data = (const uint8_t *)"\x89PNG\r\n\x1a\n\0",
         .len = 9},
    };
    struct cq_result r;
    do_write(c, 3, &r);
    ck_assert_msg(!r.is_error, "write failed: %s", cq_unit_result_text(&r));
    cq_result_free(&r);

    const struct cq_block *b = read_one("data.bin", &r);
    ck_assert(b->is_blob);
    ck_assert_uint_eq(b->data_len, sizeof(bytes));
    ck_assert_mem_eq(b->data, bytes, sizeof(bytes));
    ck_assert_str_eq(b->mime_type, "application/octet-stream");
    cq_result_free(&r);

    b = read_one("latin1.txt", &r);
    ck_assert_msg(b->is_blob, "invalid UTF-8 was returned as text");
    ck_assert_uint_eq(b->data_len, 4);
    ck_assert_mem_eq(b->data, "caf\xe9", 4);
    cq_result_free(&r);

    b = read_one("img/pic.PNG", &r);
    ck_assert(b->is_blob);
    ck_assert_str_eq(b->mime_type, "image/png");
    ck_assert_uint_eq(b->data_len, 9);
    cq_result_free(&r);
    sh_expect("od -An -tx1 -N4 data.bin | tr -d ' \\n'", "00070e15");
}
END_TEST

START_TEST(several_paths_in_one_call)
{
    write_text("a.txt", "A");
    write_text("b.txt", "B");
    const char *paths[] = {"a.txt", "missing.txt", "b.txt"};
    struct cq_result r;
    do_read(paths, 3, &r);
    /* The missing one fails the call, the others are still read, in order. */
    ck_assert(r.is_error);
    ck_assert_int_eq(r.error_code, CQ_RESULT_NOT_FOUND);
    ck_assert_uint_eq(count_blocks(&r, CQ_BLOCK_RESOURCE), 2);
    const struct cq_block *first = NULL, *second = NULL;
    for (size_t i = 0; i < r.n_blocks; i++)
        if (r.blocks[i].type == CQ_BLOCK_RESOURCE)
            *(first == NULL ? &first : &second) = &r.blocks[i];
    ck_assert_str_eq(first->text, "A");
    ck_assert_str_eq(second->text, "B");
    ck_assert_ptr_nonnull(strstr(cq_unit_result_text(&r), "missing.txt"));
    cq_result_free(&r);

    struct cq_file_content c[2] = {
        {.path = "ok.txt", .data = (const uint8_t *)"ok", .len = 2},
        {.path = "../bad.txt", .data = (const uint8_t *)"no", .len = 2},
    };
    do_write(c, 2, &r);
    ck_assert(r.is_error);
    ck_assert_int_eq(r.error_code, CQ_RESULT_INVALID_ARGUMENT);
    cq_result_free(&r);
    sh_expect("cat ok.txt", "ok");
}
END_TEST

START_TEST(overwrite_and_empty_files)
{
    write_text("f.txt", "a much longer first version\n");
    write_text("f.txt", "short");
    struct cq_result r;
    const struct cq_block *b = read_one("f.txt", &r);
    ck_assert_str_eq(b->text, "short");
    cq_result_free(&r);
    write_text("empty.txt", "");
    b = read_one("empty.txt", &r);
    ck_assert(!b->is_blob);
    ck_assert_str_eq(b->text, "");
    cq_result_free(&r);
    sh_expect("wc -c < empty.txt", "0\n");
}
END_TEST

START_TEST(nested_directories_belong_to_the_sandbox_user)
{
    write_text("a/b/c/deep.txt", "deep");
    /* From inside: uid and gid 1000, ordinary modes. */
    sh_expect("stat -c '%u:%g %a' a a/b a/b/c a/b/c/deep.txt",
              "1000:1000 755\n1000:1000 755\n1000:1000 755\n1000:1000 644\n");
    /* So sandboxed code can work with them. */
    sh_ok("echo more > a/b/new.txt && rm a/b/c/deep.txt && rmdir a/b/c");
    /* From the host: the sandbox user's host ids. */
    write_text("x/y.txt", "y");
    struct stat st;
    ck_assert_int_eq(fstatat(files.workspace_fd, "x/y.txt", &st, AT_SYMLINK_NOFOLLOW), 0);
    ck_assert_uint_eq(st.st_uid, files.uid);
    ck_assert_uint_eq(st.st_gid, files.gid);
    ck_assert_int_eq(fstatat(files.workspace_fd, "x", &st, AT_SYMLINK_NOFOLLOW), 0);
    ck_assert_uint_eq(st.st_uid, files.uid);
}
END_TEST

START_TEST(paths_are_normalised)
{
    write_text("./a//b", "normal");
    sh_expect("cat a/b", "normal");
    static const char *const spellings[] = {"a/b", "./a//b/", "a/./b", "./a/b", "a//b//"};
    for (size_t i = 0; i < sizeof(spellings) / sizeof(spellings[0]); i++) {
        struct cq_result r;
        const struct cq_block *b = read_one(spellings[i], &r);
        ck_assert_msg(strcmp(b->uri, "file://a/b") == 0, "'%s' read as %s", spellings[i], b->uri);
        ck_assert_str_eq(b->text, "normal");
        cq_result_free(&r);
    }
    /* "..." is a name, not a parent. */
    write_text("...", "dots");
    sh_expect("cat ./...", "dots");
}
END_TEST

/* --- refusals -------------------------------------------------------------------------- */

START_TEST(absolute_and_parent_paths_are_refused)
{
    static const char *const bad[] = {"/etc/passwd", "/workspace/x", "../x", "a/../../x",
                                      "a/..",        "..",           "./.."};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        read_refused(bad[i], CQ_RESULT_INVALID_ARGUMENT, NULL);
        write_refused(bad[i], "x", CQ_RESULT_INVALID_ARGUMENT, NULL);
        remove_refused(bad[i], CQ_RESULT_INVALID_ARGUMENT, NULL);
        struct cq_result r;
        do_list(bad[i], &r);
        ck_assert_msg(r.is_error && r.error_code == CQ_RESULT_INVALID_ARGUMENT,
                      "listing '%s' was not refused", bad[i]);
        cq_result_free(&r);
    }
    read_refused("/etc/passwd", CQ_RESULT_INVALID_ARGUMENT, "absolute");
    read_refused("a/../b", CQ_RESULT_INVALID_ARGUMENT, "'..'");
    /* Nothing was written anywhere in the workspace. */
    sh_expect("ls -A | wc -l", "0\n");
}
END_TEST

START_TEST(workspace_itself_is_refused)
{
    static const char *const self[] = {"", ".", "./", ".//."};
    for (size_t i = 0; i < sizeof(self) / sizeof(self[0]); i++) {
        write_refused(self[i], "x", CQ_RESULT_INVALID_ARGUMENT, "workspace itself");
        read_refused(self[i], CQ_RESULT_INVALID_ARGUMENT, "workspace itself");
        remove_refused(self[i], CQ_RESULT_INVALID_ARGUMENT, "workspace itself cannot be removed");
    }
    /* Empty lists are refused too. */
    struct cq_result r;
    do_write(NULL, 0, &r);
    ck_assert(r.is_error && r.error_code == CQ_RESULT_INVALID_ARGUMENT);
    cq_result_free(&r);
    do_read(NULL, 0, &r);
    ck_assert(r.is_error && r.error_code == CQ_RESULT_INVALID_ARGUMENT);
    cq_result_free(&r);
    do_remove(NULL, 0, &r);
    ck_assert(r.is_error && r.error_code == CQ_RESULT_INVALID_ARGUMENT);
    cq_result_free(&r);
    /* And the workspace is still there, usable. */
    sh_ok("touch still-here && test -d /workspace");
}
END_TEST

START_TEST(missing_and_wrong_kinds)
{
    read_refused("nope.txt", CQ_RESULT_NOT_FOUND, "no such file");
    remove_refused("nope.txt", CQ_RESULT_NOT_FOUND, "no such file");
    sh_ok("mkdir d && echo f > f");
    read_refused("d", CQ_RESULT_INVALID_ARGUMENT, "directory");
    write_refused("d", "x", CQ_RESULT_INVALID_ARGUMENT, "directory");
    read_refused("f/x", CQ_RESULT_INVALID_ARGUMENT, "not a directory");
    write_refused("f/x", "x", CQ_RESULT_INVALID_ARGUMENT, NULL);
    struct cq_result r;
    do_list("nope", &r);
    ck_assert(r.is_error && r.error_code == CQ_RESULT_NOT_FOUND);
    cq_result_free(&r);
    do_list("f", &r);
    ck_assert(r.is_error && r.error_code == CQ_RESULT_INVALID_ARGUMENT);
    cq_result_free(&r);
}
END_TEST

/* The host side acts with the sandbox user's rights, not root's. */
START_TEST(no_more_rights_than_the_sandbox_user)
{
    sh_ok("echo secret > locked && chmod 000 locked && mkdir ro && chmod 555 ro && "
          "echo keep > ro.txt && chmod 444 ro.txt");
    read_refused("locked", CQ_RESULT_INVALID_ARGUMENT, NULL);
    write_refused("ro/new.txt", "x", CQ_RESULT_INVALID_ARGUMENT, NULL);
    write_refused("ro.txt", "overwritten", CQ_RESULT_INVALID_ARGUMENT, NULL);
    sh_expect("cat ro.txt; ls ro | wc -l", "keep\n0\n");
}
END_TEST

START_TEST(oversized_write_is_refused)
{
    size_t len = CQ_WORKER_MAX_FILE_BYTES + 1;
    void *big = mmap(NULL, len, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    ck_assert(big != MAP_FAILED);
    struct cq_file_content c = {.path = "huge.bin", .is_blob = true, .data = big, .len = len};
    struct cq_result r;
    do_write(&c, 1, &r);
    ck_assert(r.is_error);
    ck_assert_int_eq(r.error_code, CQ_RESULT_LIMIT_EXCEEDED);
    ck_assert_msg(strstr(cq_unit_result_text(&r), "limit") != NULL, "message: %s",
                  cq_unit_result_text(&r));
    cq_result_free(&r);
    munmap(big, len);
    sh_ok("test ! -e huge.bin");
}
END_TEST

START_TEST(oversized_file_is_not_read)
{
    /* Sparse, so it costs nothing: 100 MB + 1 byte. */
    char script[128];
    snprintf(script, sizeof(script), "truncate -s %llu big && truncate -s %llu fits",
             (unsigned long long)CQ_WORKER_MAX_FILE_BYTES + 1, 1024ULL * 1024);
    sh_ok(script);
    read_refused("big", CQ_RESULT_LIMIT_EXCEEDED, "100 MB");
    struct cq_result r;
    const struct cq_block *b = read_one("fits", &r);
    ck_assert(b->is_blob); /* zeros: NUL bytes make it binary */
    ck_assert_uint_eq(b->data_len, 1024 * 1024);
    cq_result_free(&r);
}
END_TEST

START_TEST(overlong_names_and_paths_are_refused)
{
    char name[300];
    memset(name, 'n', 256);
    name[256] = '\0';
    write_refused(name, "x", CQ_RESULT_INVALID_ARGUMENT, "255");
    name[255] = '\0'; /* the longest name a file system takes */
    write_text(name, "x");
    static char path[5000];
    path[0] = '\0';
    for (int i = 0; i < 1100; i++)
        strcat(path, "abc/");
    strcat(path, "f");
    write_refused(path, "x", CQ_RESULT_INVALID_ARGUMENT, "too long");
    read_refused(path, CQ_RESULT_INVALID_ARGUMENT, "too long");
    sh_expect("ls | wc -l", "1\n");
}
END_TEST

START_TEST(full_workspace_is_a_limit)
{
    teardown();
    use_sandbox(make_sandbox(1 << 20));
    size_t len = 2 << 20;
    uint8_t *data = calloc(1, len);
    ck_assert_ptr_nonnull(data);
    struct cq_file_content c = {.path = "fill.bin", .is_blob = true, .data = data, .len = len};
    struct cq_result r;
    do_write(&c, 1, &r);
    ck_assert(r.is_error);
    ck_assert_int_eq(r.error_code, CQ_RESULT_LIMIT_EXCEEDED);
    ck_assert_msg(strstr(cq_unit_result_text(&r), "full") != NULL, "message: %s",
                  cq_unit_result_text(&r));
    cq_result_free(&r);
    free(data);
}
END_TEST

/* --- what sandboxed code plants ----------------------------------------------------------- */

START_TEST(symlink_out_of_the_workspace)
{
    /* A host file the sandbox user could write, were the link followed on the host. */
    char dir[] = "/tmp/cq-files-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    ck_assert_int_eq(chmod(dir, 0755), 0);
    char target[64];
    snprintf(target, sizeof(target), "%s/target", dir);
    FILE *t = fopen(target, "we");
    ck_assert_ptr_nonnull(t);
    fputs("original\n", t);
    fclose(t);
    ck_assert_int_eq(chmod(target, 0666), 0);

    char script[256];
    snprintf(script, sizeof(script), "ln -s /etc/passwd pw && ln -s %s hostfile", target);
    sh_ok(script);

    read_refused("pw", CQ_RESULT_INVALID_ARGUMENT, "symbolic link");
    read_refused("hostfile", CQ_RESULT_INVALID_ARGUMENT, "symbolic link");
    write_refused("pw", "pwned\n", CQ_RESULT_INVALID_ARGUMENT, "symbolic link");
    write_refused("hostfile", "pwned\n", CQ_RESULT_INVALID_ARGUMENT, "symbolic link");

    char buf[64] = "";
    t = fopen(target, "re");
    ck_assert_ptr_nonnull(t);
    ck_assert_ptr_nonnull(fgets(buf, sizeof(buf), t));
    fclose(t);
    ck_assert_msg(strcmp(buf, "original\n") == 0, "the host file was written through the link");

    /* Removing the link removes the link, not its target. */
    remove_ok("pw");
    remove_ok("hostfile");
    sh_ok("test ! -L pw && test ! -L hostfile");
    ck_assert_int_eq(access(target, F_OK), 0);
    ck_assert_int_eq(access("/etc/passwd", F_OK), 0);
    unlink(target);
    rmdir(dir);
}
END_TEST

START_TEST(symlinked_directories_and_middle_components)
{
    sh_ok("mkdir real && echo inside > real/f && ln -s real dirlink && ln -s /etc etc && "
          "mkdir -p outer && ln -s ../real outer/up");
    read_refused("dirlink/f", CQ_RESULT_INVALID_ARGUMENT, "symbolic link");
    read_refused("etc/passwd", CQ_RESULT_INVALID_ARGUMENT, "symbolic link");
    read_refused("outer/up/f", CQ_RESULT_INVALID_ARGUMENT, "symbolic link");
    /* (writeFiles and removeFiles open the last directory with O_NOFOLLOW|O_DIRECTORY,
     * so a symlinked directory reads "not a directory" there: refused all the same.) */
    write_refused("dirlink/new", "x", CQ_RESULT_INVALID_ARGUMENT, NULL);
    write_refused("outer/up/new", "x", CQ_RESULT_INVALID_ARGUMENT, NULL);
    write_refused("etc/new", "x", CQ_RESULT_INVALID_ARGUMENT, NULL);
    write_refused("dirlink/sub/new", "x", CQ_RESULT_INVALID_ARGUMENT, NULL);
    sh_ok("test ! -e real/new && test ! -e real/sub");
    remove_refused("dirlink/f", CQ_RESULT_INVALID_ARGUMENT, NULL);
    remove_refused("outer/up/f", CQ_RESULT_INVALID_ARGUMENT, NULL);
    struct cq_result r;
    do_list("dirlink", &r);
    ck_assert_msg(r.is_error && count_blocks(&r, CQ_BLOCK_RESOURCE_LINK) == 0,
                  "listing through a symlink was not refused");
    cq_result_free(&r);
    do_list("etc", &r);
    ck_assert_msg(r.is_error && count_blocks(&r, CQ_BLOCK_RESOURCE_LINK) == 0,
                  "listing /etc through a symlink was not refused");
    cq_result_free(&r);
    sh_expect("ls real; cat real/f", "f\ninside\n");
    /* Removing the link to a directory removes the link only. */
    remove_ok("dirlink");
    remove_ok("outer/up");
    sh_expect("test ! -L dirlink && cat real/f", "inside\n");
}
END_TEST

START_TEST(list_shows_links_as_links)
{
    sh_ok("echo abc > f.txt && mkdir d && echo 1 > d/inner.csv && ln -s /etc/passwd pw && "
          "ln -s d dl && mkfifo p");
    struct cq_result r;
    do_list("", &r);
    ck_assert_msg(!r.is_error, "list failed: %s", cq_unit_result_text(&r));
    static const struct {
        const char *name, *mime, *kind;
    } want[] = {
        {"d", "inode/directory", "directory"},    {"dl", "inode/symlink", "symbolic link"},
        {"f.txt", "text/plain", "file"},          {"p", "application/octet-stream", "special file"},
        {"pw", "inode/symlink", "symbolic link"},
    };
    /* The text listing first (for clients that show only text), then the links. */
    ck_assert_uint_eq(r.n_blocks, 6);
    ck_assert_int_eq(r.blocks[0].type, CQ_BLOCK_TEXT);
    ck_assert_str_eq(r.blocks[0].text, ".: 5 entries\n"
                                       "d/ (directory)\n"
                                       "dl (symbolic link)\n"
                                       "f.txt (file, 4 bytes)\n"
                                       "p (special file)\n"
                                       "pw (symbolic link)");
    for (size_t i = 0; i < 5; i++) {
        const struct cq_block *b = &r.blocks[i + 1];
        char uri[64];
        snprintf(uri, sizeof(uri), "file://%s", want[i].name);
        ck_assert_int_eq(b->type, CQ_BLOCK_RESOURCE_LINK);
        ck_assert_str_eq(b->name, want[i].name);
        ck_assert_str_eq(b->uri, uri);
        ck_assert_msg(strcmp(b->mime_type, want[i].mime) == 0, "%s: %s", b->name, b->mime_type);
        ck_assert_str_eq(b->description, want[i].kind);
    }
    ck_assert_uint_eq(r.blocks[3].size, 4);                     /* "abc\n" */
    ck_assert_uint_eq(r.blocks[5].size, strlen("/etc/passwd")); /* the link, not the target */
    cq_result_free(&r);

    do_list("./d/", &r);
    ck_assert_uint_eq(r.n_blocks, 2);
    ck_assert_str_eq(r.blocks[0].text, "d: 1 entry\nd/inner.csv (file, 2 bytes)");
    ck_assert_str_eq(r.blocks[1].uri, "file://d/inner.csv");
    ck_assert_str_eq(r.blocks[1].name, "inner.csv");
    ck_assert_str_eq(r.blocks[1].mime_type, "text/csv");
    cq_result_free(&r);

    /* An empty directory is an empty listing, not an error; its text says so. */
    sh_ok("mkdir empty");
    do_list("empty", &r);
    ck_assert(!r.is_error);
    ck_assert_uint_eq(r.n_blocks, 1);
    ck_assert_str_eq(r.blocks[0].text, "empty: (empty)");
    cq_result_free(&r);
}
END_TEST

/* File names are bytes chosen by sandboxed code; results are UTF-8 (the JSON and
 * protobuf front ends need it). */
START_TEST(listed_names_are_utf8)
{
    sh_ok("touch \"$(printf 'bad\\377name.txt')\" \"$(printf 'caf\\303\\251.txt')\"");
    struct cq_result r;
    do_list("", &r);
    ck_assert(!r.is_error);
    ck_assert_uint_eq(r.n_blocks, 3);
    ck_assert_msg(cq_utf8_valid((const uint8_t *)r.blocks[0].text, strlen(r.blocks[0].text)),
                  "listFiles' listing is not UTF-8");
    ck_assert_ptr_nonnull(strstr(r.blocks[0].text, "name is not valid UTF-8"));
    for (size_t i = 1; i < r.n_blocks; i++) {
        const struct cq_block *b = &r.blocks[i];
        ck_assert_msg(cq_utf8_valid((const uint8_t *)b->name, strlen(b->name)),
                      "listFiles returned a name that is not UTF-8 (block %zu)", i);
        ck_assert_msg(cq_utf8_valid((const uint8_t *)b->uri, strlen(b->uri)),
                      "listFiles returned a uri that is not UTF-8 (block %zu)", i);
    }
    cq_result_free(&r);
}
END_TEST

static void on_alarm(int sig)
{
    (void)sig;
    static const char msg[] = "a file operation blocked on a FIFO\n";
    ssize_t n = write(2, msg, sizeof(msg) - 1);
    (void)n;
    _exit(3);
}

static void on_alarm_lease(int sig)
{
    (void)sig;
    static const char msg[] = "a file operation waited on a leased file\n";
    ssize_t n = write(2, msg, sizeof(msg) - 1);
    (void)n;
    _exit(3);
}

START_TEST(listing_is_bounded)
{
    sh_ok("mkdir big && cd big && seq -f 'f%05g' 1 10050 | xargs touch");
    struct cq_result r;
    do_list("big", &r);
    ck_assert(!r.is_error);
    ck_assert_uint_eq(count_blocks(&r, CQ_BLOCK_RESOURCE_LINK), 10000);
    /* The listing (first, long: which 10000 of the 10050 depends on the directory's
     * order) and the note (last, past cq_unit_result_text's cut). */
    ck_assert_int_eq(r.blocks[0].type, CQ_BLOCK_TEXT);
    ck_assert_msg(strncmp(r.blocks[0].text, "big: 10000 entries\nbig/f", 24) == 0, "listing: %.60s",
                  r.blocks[0].text);
    const struct cq_block *last = &r.blocks[r.n_blocks - 1];
    ck_assert_msg(last->type == CQ_BLOCK_TEXT &&
                      strstr(last->text, "only the first 10000 entries") != NULL,
                  "no note at the end");
    /* Sorted by name. */
    const char *prev = "";
    for (size_t i = 0; i < r.n_blocks; i++) {
        if (r.blocks[i].type != CQ_BLOCK_RESOURCE_LINK)
            continue;
        ck_assert_msg(strcmp(prev, r.blocks[i].name) < 0, "%s listed after %s", r.blocks[i].name,
                      prev);
        prev = r.blocks[i].name;
    }
    cq_result_free(&r);
}
END_TEST

START_TEST(fifo_never_blocks)
{
    signal(SIGALRM, on_alarm);
    sh_ok("mkfifo p && mkdir d && mkfifo d/q");
    alarm(10);
    uint64_t t0 = cq_now_ms();
    read_refused("p", CQ_RESULT_INVALID_ARGUMENT, "not a regular file");
    write_refused("p", "data", CQ_RESULT_INVALID_ARGUMENT, "not a regular file");
    read_refused("d/q", CQ_RESULT_INVALID_ARGUMENT, "not a regular file");
    read_refused("p/x", CQ_RESULT_INVALID_ARGUMENT, NULL);
    ck_assert_uint_lt(cq_now_ms() - t0, 2000);

    /* With sandboxed code holding it open for reading (so an open for writing would
     * succeed): still refused, nothing written into the pipe. */
    const char *argv[] = {"/bin/sh", "-c", "exec 3<>p; echo open; sleep 30", NULL};
    struct cq_spawn req;
    cq_spawn_init(&req, argv);
    req.stdout_mode = CQ_STDIO_FD;
    int ready[2];
    ck_assert_int_eq(pipe2(ready, O_CLOEXEC), 0);
    req.stdout_fd = ready[1];
    struct cq_process *holder = NULL;
    struct cq_error err = {0};
    ck_assert_msg(cq_sandbox_spawn(sb, &req, &holder, &err) == 0, "spawn: %s", err.msg);
    close(ready[1]);
    char buf[8];
    ck_assert_int_eq(read(ready[0], buf, 5), 5); /* "open\n": the FIFO is held */
    close(ready[0]);
    t0 = cq_now_ms();
    write_refused("p", "data", CQ_RESULT_INVALID_ARGUMENT, "not a regular file");
    read_refused("p", CQ_RESULT_INVALID_ARGUMENT, "not a regular file");
    ck_assert_uint_lt(cq_now_ms() - t0, 2000);
    alarm(0);
    cq_process_free(holder);
    /* Removing a FIFO is fine. */
    remove_ok("p");
    sh_ok("test ! -e p");
}
END_TEST

/* A lease (fcntl F_SETLEASE) makes an open for a conflicting access wait for the
 * kernel's lease-break time, 45 s by default: the file tools must refuse the file at
 * once instead of spinning on EAGAIN. Sandboxed code cannot take leases (seccomp); here
 * the test itself holds one on a workspace file, as any other process could. */
START_TEST(leased_files_are_refused_at_once)
{
    signal(SIGALRM, on_alarm_lease);
    signal(SIGIO, SIG_IGN); /* the lease holder's notice of a break */
    write_text("leased", "data");
    int fd = openat(files.workspace_fd, "leased", O_RDWR | O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    ck_assert_msg(fcntl(fd, F_SETLEASE, F_WRLCK) == 0, "F_SETLEASE: %s", strerror(errno));
    alarm(20); /* a hang guard, far below the lease-break time */
    read_refused("leased", CQ_RESULT_INVALID_ARGUMENT, "holds a lease on it");
    write_refused("leased", "new", CQ_RESULT_INVALID_ARGUMENT, "holds a lease on it");
    /* The snapshot path reads the same way. */
    uint8_t *data = NULL;
    size_t len = 0;
    ck_assert_int_eq(cq_files_read_raw(&files, "leased", &data, &len), -1);
    ck_assert_int_eq(errno, EBUSY);
    alarm(0);
    ck_assert_int_eq(fcntl(fd, F_SETLEASE, F_UNLCK), 0);
    close(fd);
    /* Without the lease the file is an ordinary file again. */
    struct cq_result r;
    const struct cq_block *b = read_one("leased", &r);
    ck_assert_str_eq(b->text, "data");
    cq_result_free(&r);
}
END_TEST

START_TEST(directory_removal_is_recursive_and_does_not_follow_links)
{
    sh_ok("mkdir -p tree/a/b/c keep many && echo 1 > tree/a/b/c/f && echo k > keep/precious && "
          "ln -s ../../keep tree/a/keeplink && ln -s /etc tree/etclink && "
          "ln -s /workspace/keep/precious tree/filelink && mkfifo tree/fifo && "
          "cd many && seq -f 'a_rather_long_file_name_to_fill_getdents_buffers_%05g' 1 3000 | "
          "xargs touch");
    remove_ok("tree");
    sh_ok("test ! -e tree && test ! -L tree");
    sh_expect("cat keep/precious", "k\n");
    ck_assert_int_eq(access("/etc/passwd", F_OK), 0);

    /* A directory with thousands of entries: every one is removed. */
    remove_ok("many");
    sh_ok("test ! -e many");
    /* Files and links alone. */
    sh_ok("echo x > lone && ln -s lone lonelink");
    const char *both[] = {"lonelink", "lone"};
    struct cq_result r;
    do_remove(both, 2, &r);
    ck_assert_msg(!r.is_error, "remove failed: %s", cq_unit_result_text(&r));
    cq_result_free(&r);
    sh_expect("ls -A", "keep\n");
}
END_TEST

/* --- identity -------------------------------------------------------------------------- */

static void *ops_in_thread(void *arg)
{
    (void)arg;
    /* Successes and failures of each operation, in a thread of its own: the checks
     * in do_* compare this thread's identity before and after. */
    write_text("t/ok.txt", "ok");
    write_refused("../no", "x", CQ_RESULT_INVALID_ARGUMENT, NULL);
    read_refused("t/missing", CQ_RESULT_NOT_FOUND, NULL);
    struct cq_result r;
    do_list("t", &r);
    cq_result_free(&r);
    do_list("../", &r);
    cq_result_free(&r);
    remove_ok("t");
    remove_refused("t", CQ_RESULT_NOT_FOUND, NULL);
    return NULL;
}

START_TEST(identity_is_restored_after_every_call)
{
    struct fs_ids start = thread_ids();
    ck_assert_int_eq(start.uid[3], 0); /* the test runs as root */
    sh_ok("ln -s /etc/passwd pw && mkfifo p && echo s > locked && chmod 000 locked");
    write_refused("pw", "x", CQ_RESULT_INVALID_ARGUMENT, NULL);
    read_refused("p", CQ_RESULT_INVALID_ARGUMENT, NULL);
    read_refused("locked", CQ_RESULT_INVALID_ARGUMENT, NULL);
    write_refused("", "x", CQ_RESULT_INVALID_ARGUMENT, NULL);
    struct cq_result r;
    do_list("pw", &r);
    cq_result_free(&r);
    remove_refused(".", CQ_RESULT_INVALID_ARGUMENT, NULL);
    remove_ok("pw");
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, ops_in_thread, NULL), 0);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    assert_ids_unchanged(&start, "all calls");
    /* Root's rights are really back: a root-only file can be created on the host. */
    char path[] = "/tmp/cq-files-rootXXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(fchown(fd, 0, 0), 0);
    close(fd);
    unlink(path);
}
END_TEST

/* --- workspace scans (snapshots) ----------------------------------------------------------- */

struct scan_log {
    const char *stop_at; /* the path whose callback fails, or NULL */
    bool stop_silently;  /* fail without filling err */
    char seen[1024];     /* "path:size;" for every call, in call order */
    char modes[256];     /* "path:mode;" (octal) of files whose mode is not 0644 */
    char links[256];     /* "path->target;" of the symbolic links */
};

static int log_file(void *ctx, const struct cq_workspace_entry *e, struct cq_error *err)
{
    struct scan_log *log = ctx;
    const char *path = e->path;
    uint64_t size = e->size;
    uint32_t mode = e->mode;
    ck_assert_ptr_nonnull(err);
    ck_assert_int_gt(e->mtime_ns, 0);
    ck_assert_uint_le(mode, 0777);
    if (e->link_target != NULL) {
        ck_assert_uint_eq(size, strlen(e->link_target));
        size_t at = strlen(log->links);
        snprintf(log->links + at, sizeof(log->links) - at, "%s->%s;", path, e->link_target);
        return 0;
    }
    if (mode != 0644) {
        size_t at = strlen(log->modes);
        snprintf(log->modes + at, sizeof(log->modes) - at, "%s:%o;", path, mode);
    }
    size_t used = strlen(log->seen);
    snprintf(log->seen + used, sizeof(log->seen) - used, "%s:%llu;", path,
             (unsigned long long)size);
    if (log->stop_at == NULL || strcmp(path, log->stop_at) != 0)
        return 0;
    if (log->stop_silently)
        return -1;
    return cq_error_set(err, CQ_ELIMIT, "the callback refused %s (%llu bytes)", path,
                        (unsigned long long)size);
}

START_TEST(scan_reports_files_and_links_only)
{
    sh_ok("mkdir -p d/e && printf 1 > a && printf 22 > d/b && printf 333 > d/e/c && "
          "ln -s a link && ln -s /etc/passwd d/outside && mkfifo fifo");
    struct scan_log log = {0};
    struct cq_error err = {0};
    struct fs_ids before = thread_ids();
    ck_assert_int_eq(cq_files_scan(&files, log_file, &log, &err), 0);
    assert_ids_unchanged(&before, "scan");
    /* readdir order is the file system's: compare as a set. */
    ck_assert_int_eq(strlen(log.seen), strlen("a:1;d/b:2;d/e/c:3;"));
    ck_assert_ptr_nonnull(strstr(log.seen, "a:1;"));
    ck_assert_ptr_nonnull(strstr(log.seen, "d/b:2;"));
    ck_assert_ptr_nonnull(strstr(log.seen, "d/e/c:3;"));
    /* Links are read, not followed: the one to the host's /etc/passwd is just a text. */
    ck_assert_int_eq(strlen(log.links), strlen("link->a;d/outside->/etc/passwd;"));
    ck_assert_ptr_nonnull(strstr(log.links, "link->a;"));
    ck_assert_ptr_nonnull(strstr(log.links, "d/outside->/etc/passwd;"));
}
END_TEST

/* What the fleet restores of a moved session's links: made beneath the workspace as the
 * sandbox's user, replacing a file, never escaping by its path. */
START_TEST(link_restores_beneath_the_workspace)
{
    sh_ok("printf old > was_file");
    ck_assert_int_eq(cq_files_link(&files, "bin/python", "/usr/bin/python3"), 0);
    ck_assert_int_eq(cq_files_link(&files, "was_file", "bin/python"), 0);
    char target[64] = {0};
    ck_assert_int_gt(readlinkat(files.workspace_fd, "bin/python", target, sizeof(target) - 1), 0);
    ck_assert_str_eq(target, "/usr/bin/python3");
    memset(target, 0, sizeof(target));
    ck_assert_int_gt(readlinkat(files.workspace_fd, "was_file", target, sizeof(target) - 1), 0);
    ck_assert_str_eq(target, "bin/python");
    struct stat st;
    ck_assert_int_eq(fstatat(files.workspace_fd, "bin/python", &st, AT_SYMLINK_NOFOLLOW), 0);
    ck_assert(S_ISLNK(st.st_mode));
    ck_assert_uint_eq(st.st_uid, files.uid);
    errno = 0;
    ck_assert_int_eq(cq_files_link(&files, "../escape", "x"), -1);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(cq_files_link(&files, "empty", ""), -1);
    /* A path through a link is refused: the link is never followed. */
    ck_assert_int_eq(cq_files_link(&files, "was_file/inside", "x"), -1);
}
END_TEST

/* The permission bits go with each file (the fleet restores a moved session's
 * executables with them), and writeFiles can set them back: permission bits only. */
START_TEST(scan_reports_modes_and_write_sets_them)
{
    sh_ok("printf 'echo hi' > run.sh && chmod 755 run.sh && printf x > plain && "
          "printf y > private && chmod 600 private");
    struct scan_log log = {0};
    struct cq_error err = {0};
    ck_assert_int_eq(cq_files_scan(&files, log_file, &log, &err), 0);
    ck_assert_ptr_nonnull(strstr(log.modes, "run.sh:755;"));
    ck_assert_ptr_nonnull(strstr(log.modes, "private:600;"));
    ck_assert_ptr_null(strstr(log.modes, "plain"));

    struct cq_file_content content[] = {
        {.path = "bin/tool",
         .data = (const uint8_t *)"#!/bin/sh\n",
         .len = 10,
         .mode = CQ_FILE_MODE_SET | 0750},
        {.path = "setid", .data = (const uint8_t *)"x", .len = 1, .mode = CQ_FILE_MODE_SET | 06755},
        {.path = "kept", .data = (const uint8_t *)"x", .len = 1},
        {.path = "locked", .data = (const uint8_t *)"x", .len = 1, .mode = CQ_FILE_MODE_SET},
    };
    struct cq_result r;
    cq_result_init(&r);
    cq_files_write(&files, content, 4, &r);
    ck_assert_msg(!r.is_error, "%s", r.n_blocks ? r.blocks[0].text : "");
    cq_result_free(&r);
    struct stat st;
    ck_assert_int_eq(fstatat(files.workspace_fd, "bin/tool", &st, 0), 0);
    ck_assert_uint_eq(st.st_mode & 07777, 0750);
    ck_assert_int_eq(fstatat(files.workspace_fd, "setid", &st, 0), 0);
    ck_assert_uint_eq(st.st_mode & 07777, 0755); /* no set-id bits from a restore */
    ck_assert_int_eq(fstatat(files.workspace_fd, "kept", &st, 0), 0);
    ck_assert_uint_eq(st.st_mode & 07777, 0644);
    ck_assert_int_eq(fstatat(files.workspace_fd, "locked", &st, 0), 0);
    ck_assert_uint_eq(st.st_mode & 07777, 0); /* 000 is a mode, not "none given" */
}
END_TEST

/* The fleet keeps a file the code made unreadable to itself (it could chmod it back),
 * but the worker's reading for it reaches no file the sandbox user does not own. */
START_TEST(read_raw_reads_own_unreadable_files_only)
{
    sh_ok("printf secret > hidden && chmod 000 hidden");
    uint8_t *data = NULL;
    size_t len = 0;
    ck_assert_int_eq(cq_files_read_raw(&files, "hidden", &data, &len), 0);
    ck_assert_uint_eq(len, 6);
    ck_assert_int_eq(memcmp(data, "secret", 6), 0);
    free(data);
    /* Owned by someone else (root, as a file the host put there could be): refused. */
    ck_assert_int_eq(fchownat(files.workspace_fd, "hidden", 0, 0, 0), 0);
    data = NULL;
    ck_assert_int_eq(cq_files_read_raw(&files, "hidden", &data, &len), -1);
    ck_assert_int_eq(errno, EACCES);
    ck_assert_ptr_null(data);
}
END_TEST

START_TEST(scan_returns_the_callbacks_error)
{
    sh_ok("mkdir -p d && printf 1 > a && printf 22 > d/b");
    struct scan_log log = {.stop_at = "d/b"};
    struct cq_error err = {0};
    struct fs_ids before = thread_ids();
    ck_assert_int_eq(cq_files_scan(&files, log_file, &log, &err), -1);
    assert_ids_unchanged(&before, "a stopped scan");
    ck_assert_int_eq(err.code, CQ_ELIMIT);
    ck_assert_str_eq(err.msg, "the callback refused d/b (2 bytes)");
    /* The walk stopped there: d/b was the last file seen. */
    size_t len = strlen(log.seen);
    ck_assert_uint_ge(len, strlen("d/b:2;"));
    ck_assert_str_eq(log.seen + len - strlen("d/b:2;"), "d/b:2;");

    /* A caller may pass no error: the callback still gets one to fill. */
    memset(log.seen, 0, sizeof(log.seen));
    ck_assert_int_eq(cq_files_scan(&files, log_file, &log, NULL), -1);

    /* A callback that stops without saying why still yields an error, not an empty one. */
    struct scan_log silent = {.stop_at = "a", .stop_silently = true};
    memset(&err, 0, sizeof(err));
    ck_assert_int_eq(cq_files_scan(&files, log_file, &silent, &err), -1);
    ck_assert_int_eq(err.code, CQ_EINTERNAL);
    ck_assert_str_eq(err.msg, "the workspace scan was stopped without a reason");
}
END_TEST

START_TEST(scan_skips_directories_the_session_made_unreadable)
{
    /* Hostile code can chmod 000 a directory; the rest of the workspace must still
     * be saved, and the scan must not fail because of it. */
    sh_ok("mkdir -p locked && printf 1 > locked/x && chmod 000 locked && printf 22 > b");
    struct scan_log log = {0};
    struct cq_error err = {0};
    ck_assert_msg(cq_files_scan(&files, log_file, &log, &err) == 0, "scan failed: %s", err.msg);
    ck_assert_str_eq(log.seen, "b:2;");
    sh_ok("chmod 755 locked");
}
END_TEST

/* --- MIME types --------------------------------------------------------------------------- */

START_TEST(mime_types)
{
    static const struct {
        const char *path;
        bool text;
        const char *mime;
    } cases[] = {
        {"a/b.png", false, "image/png"},
        {"PLOT.PNG", false, "image/png"},
        {"photo.jpeg", false, "image/jpeg"},
        {"photo.jpg", false, "image/jpeg"},
        {"x.svg", true, "image/svg+xml"},
        {"t.csv", true, "text/csv"},
        {"t.json", true, "application/json"},
        {"t.jsonl", true, "application/jsonl"},
        {"s.py", true, "text/x-python"},
        {"s.ts", true, "text/x-typescript"},
        {"r.md", true, "text/markdown"},
        {"doc.pdf", false, "application/pdf"},
        {"arch.tar.gz", false, "application/gzip"},
        {"book.xlsx", false, "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"},
        {"Makefile", true, "text/plain"},
        {"blob", false, "application/octet-stream"},
        {".bashrc", true, "text/plain"}, /* a leading dot is not an extension */
        {".png", false, "application/octet-stream"},
        {"dir.png/file", false, "application/octet-stream"}, /* only the last component */
        {"x.unknownext", true, "text/plain"},
        {"x.unknownext", false, "application/octet-stream"},
        {"trailing.", false, "application/octet-stream"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *m = cq_mime_type(cases[i].path, cases[i].text);
        ck_assert_msg(m != NULL && strcmp(m, cases[i].mime) == 0, "%s (%s): %s, want %s",
                      cases[i].path, cases[i].text ? "text" : "bytes", m ? m : "NULL",
                      cases[i].mime);
    }
}
END_TEST

static Suite *files_suite(void)
{
    Suite *s = suite_create("files");
    TCase *tc = tcase_create("round_trips");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, text_round_trip);
    tcase_add_test(tc, binary_round_trip);
    tcase_add_test(tc, several_paths_in_one_call);
    tcase_add_test(tc, overwrite_and_empty_files);
    tcase_add_test(tc, nested_directories_belong_to_the_sandbox_user);
    tcase_add_test(tc, paths_are_normalised);
    suite_add_tcase(s, tc);

    tc = tcase_create("refusals");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, absolute_and_parent_paths_are_refused);
    tcase_add_test(tc, workspace_itself_is_refused);
    tcase_add_test(tc, missing_and_wrong_kinds);
    tcase_add_test(tc, no_more_rights_than_the_sandbox_user);
    tcase_add_test(tc, oversized_write_is_refused);
    tcase_add_test(tc, oversized_file_is_not_read);
    tcase_add_test(tc, overlong_names_and_paths_are_refused);
    tcase_add_test(tc, full_workspace_is_a_limit);
    suite_add_tcase(s, tc);

    tc = tcase_create("planted");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, symlink_out_of_the_workspace);
    tcase_add_test(tc, symlinked_directories_and_middle_components);
    tcase_add_test(tc, list_shows_links_as_links);
    tcase_add_test(tc, listed_names_are_utf8);
    tcase_add_test(tc, listing_is_bounded);
    tcase_add_test(tc, fifo_never_blocks);
    tcase_add_test(tc, leased_files_are_refused_at_once);
    tcase_add_test(tc, directory_removal_is_recursive_and_does_not_follow_links);
    tcase_add_test(tc, identity_is_restored_after_every_call);
    suite_add_tcase(s, tc);

    tc = tcase_create("scan");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, scan_reports_files_and_links_only);
    tcase_add_test(tc, link_restores_beneath_the_workspace);
    tcase_add_test(tc, scan_reports_modes_and_write_sets_them);
    tcase_add_test(tc, read_raw_reads_own_unreadable_files_only);
    tcase_add_test(tc, scan_returns_the_callbacks_error);
    tcase_add_test(tc, scan_skips_directories_the_session_made_unreadable);
    suite_add_tcase(s, tc);

    tc = tcase_create("mime");
    tcase_set_timeout(tc, 10);
    tcase_add_test(tc, mime_types);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    if (geteuid() != 0) {
        fprintf(stderr, "test_files needs root\n");
        return EXIT_FAILURE;
    }
    return cq_unit_run(files_suite(), true);
}
