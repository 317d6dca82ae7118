/* worker/files.c - writeFiles, readFiles, listFiles, removeFiles, on the host side.
 *
 * The worker runs as host root and the workspace is written by hostile code, which
 * may plant symlinks (`ln -s /etc/shadow x`), symlinked directories, FIFOs or
 * swap a directory for a link between two of our steps. So no path is ever resolved
 * by name from the host's root: every lookup starts at the workspace's O_PATH fd
 * (opened through the sandbox init's root before any code ran) and goes through
 * openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS |
 * RESOLVE_NO_XDEV): the kernel refuses, atomically at every component, any symlink,
 * any escape by "..", and any crossing into another mount. Files are opened with
 * O_NONBLOCK and must then be regular files, so a FIFO cannot block the worker.
 *
 * Each operation also runs with the calling thread's filesystem identity switched to
 * the sandbox user (setfsuid/setfsgid are per thread): the kernel then checks every
 * access as if sandboxed code made it, files are created owned by that user, and host
 * root's file capabilities are not in play at all. (It is also required: a tmpfs
 * mounted inside the sandbox's user namespace refuses to create inodes for host root,
 * whom that namespace does not map.)
 */
#define _GNU_SOURCE
#include "worker/internal.h"
#include "common/cleanup.h"
#include "common/fileutil.h"

#include <dirent.h>
#include <stdarg.h>
#include <strings.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MAX_LIST_ENTRIES 10000
#define MAX_REMOVE_DEPTH 128

struct fs_identity {
    int uid, gid;
};

/* setfsuid/setfsgid return the previous value; setting from 0 to another uid drops the
 * thread's filesystem capabilities, setting back restores them. */
static struct fs_identity become_sandbox_user(const struct cq_files *f)
{
    struct fs_identity old;
    old.gid = (int)syscall(SYS_setfsgid, f->gid);
    old.uid = (int)syscall(SYS_setfsuid, f->uid);
    return old;
}

static void restore_identity(struct fs_identity old)
{
    syscall(SYS_setfsuid, old.uid);
    syscall(SYS_setfsgid, old.gid);
}

/* openat2 fails with EAGAIN for two reasons. A rename or mount raced with the
 * RESOLVE_BENEATH walk: trying again is the kernel's answer, and code in the sandbox
 * renaming in a loop can make it happen every time, so the tries are bounded. And, with
 * O_NONBLOCK, the file is under a lease (fcntl F_SETLEASE) whose holder has not let go:
 * trying again would spin until the kernel's lease-break time (45 s by default), so an
 * O_PATH open of the same path, which breaks no lease, tells the two apart, and a
 * leased file is refused at once (EBUSY). The sandbox cannot take leases (its seccomp
 * policy denies F_SETLEASE); this holds for any other holder too. */
#define OPEN_RACE_TRIES 64

static int open_beneath(int dirfd, const char *path, int flags, mode_t mode)
{
    struct open_how how = {
        .flags = (uint64_t)(flags | O_CLOEXEC | O_NOFOLLOW),
        .mode = (flags & O_CREAT) ? mode : 0,
        .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV,
    };
    for (int tries = 0; tries < OPEN_RACE_TRIES; tries++) {
        long fd = syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
        if (fd >= 0 || errno != EAGAIN)
            return (int)fd;
        if (!(flags & O_NONBLOCK))
            continue;
        struct open_how probe = {.flags = O_PATH | O_CLOEXEC | O_NOFOLLOW, .resolve = how.resolve};
        long p = syscall(SYS_openat2, dirfd, path, &probe, sizeof(probe));
        if (p >= 0) {
            close((int)p);
            errno = EBUSY;
            return -1;
        }
        if (errno != EAGAIN)
            return -1;
    }
    errno = EAGAIN;
    return -1;
}

/* Normalises a user-supplied workspace path into out ("a/b/c", no "." parts, no
 * repeated or trailing slashes). "" or "." is the workspace itself. Returns NULL,
 * or why the path is refused. */
static const char *normalize(const char *in, char out[PATH_MAX])
{
    if (in == NULL)
        return "a path is missing";
    if (in[0] == '/')
        return "absolute paths are not allowed: give a path relative to the workspace";
    size_t o = 0;
    for (const char *p = in; *p != '\0';) {
        const char *end = strchrnul(p, '/');
        size_t len = (size_t)(end - p);
        if (len == 2 && p[0] == '.' && p[1] == '.')
            return "'..' is not allowed in paths";
        if (len > NAME_MAX)
            return "a path component is longer than 255 bytes";
        if (len > 0 && !(len == 1 && p[0] == '.')) {
            if (o + len + 2 > PATH_MAX)
                return "the path is too long";
            if (o > 0)
                out[o++] = '/';
            memcpy(out + o, p, len);
            o += len;
        }
        p = *end == '/' ? end + 1 : end;
    }
    out[o] = '\0';
    return NULL;
}

static void note(struct cq_result *r, bool failure, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void note(struct cq_result *r, bool failure, const char *fmt, ...)
{
    char *text = NULL;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&text, fmt, ap) < 0)
        text = NULL;
    va_end(ap);
    if (text != NULL)
        cq_result_add_text(r, text);
    if (failure) {
        r->is_error = true;
        if (r->error_code == CQ_RESULT_OK)
            r->error_code = CQ_RESULT_INVALID_ARGUMENT;
        /* The first failure names the error; the rest are in content. */
        if (r->error_message == NULL) {
            r->error_message = text;
            text = NULL;
        }
    }
    free(text);
}

static const char *describe_errno(int e)
{
    switch (e) {
    case ELOOP:
        return "it is or goes through a symbolic link, which codeq does not follow";
    case EXDEV:
        return "it leaves the workspace";
    case ENOENT:
        return "no such file or directory";
    case ENOTDIR:
        return "a part of the path is not a directory (or is a symbolic link, which codeq "
               "does not follow)";
    case EISDIR:
        return "it is a directory";
    case ENOSPC:
        return "the workspace is full";
    case EDQUOT:
        return "the workspace quota is exhausted";
    case ENXIO:
        return "it is not a regular file";
    case EBUSY:
        return "a process holds a lease on it (fcntl F_SETLEASE); codeq does not wait for "
               "leases to break";
    case EAGAIN:
        return "the workspace kept changing while the path was opened (a rename race); try "
               "again";
    default:
        return strerror(e);
    }
}

/* Opens (creating as needed, owned by the sandbox user) the directories of `dir`. */
static int make_dirs(const struct cq_files *f, const char *dir)
{
    int cur = fcntl(f->workspace_fd, F_DUPFD_CLOEXEC, 3);
    if (cur < 0 || dir[0] == '\0')
        return cur;
    char copy[PATH_MAX];
    snprintf(copy, sizeof(copy), "%s", dir);
    for (char *part = strtok(copy, "/"); part != NULL; part = strtok(NULL, "/")) {
        bool created = mkdirat(cur, part, 0755) == 0;
        if (!created && errno != EEXIST) {
            int saved = errno;
            close(cur);
            errno = saved;
            return -1;
        }
        (void)created;
        int next = open_beneath(cur, part, O_RDONLY | O_DIRECTORY, 0);
        int saved = errno;
        close(cur);
        if (next < 0) {
            errno = saved;
            return -1;
        }
        cur = next;
    }
    return cur;
}

/* The directory that holds path (a normalized workspace path), made with its parents;
 * *name points at path's last component. -1 with errno. */
static int parent_dir(const struct cq_files *f, const char *path, const char **name)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    *name = slash != NULL ? path + (slash - dir) + 1 : path;
    if (slash != NULL)
        *slash = '\0';
    else
        dir[0] = '\0';
    return make_dirs(f, dir);
}

static int write_one(const struct cq_files *f, const char *path, const uint8_t *data, size_t len,
                     uint32_t mode)
{
    const char *name;
    cq_autoclose int dirfd = parent_dir(f, path, &name);
    if (dirfd < 0)
        return -1;
    cq_autoclose int fd =
        open_beneath(dirfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_NONBLOCK, 0644);
    if (fd < 0)
        return -1;
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -1;
    if (!S_ISREG(st.st_mode)) {
        errno = ENXIO;
        return -1;
    }
    if (fcntl(fd, F_SETFL, 0) < 0)
        return -1;
    for (size_t done = 0; done < len;) {
        ssize_t n = write(fd, data + done, len - done);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        done += (size_t)n;
    }
    /* Permission bits only: a set-id or sticky bit is never the fleet's to restore. */
    if ((mode & CQ_FILE_MODE_SET) && fchmod(fd, (mode_t)(mode & 0777)) < 0)
        return -1;
    return 0;
}

static void cq_files_write_as_user(const struct cq_files *f, const struct cq_file_content *content,
                                   size_t n, struct cq_result *r)
{
    if (n == 0) {
        cq_result_fail(r, CQ_RESULT_INVALID_ARGUMENT, "writeFiles: 'content' lists no files");
        return;
    }
    size_t written = 0;
    for (size_t i = 0; i < n; i++) {
        char path[PATH_MAX];
        const char *why = normalize(content[i].path, path);
        if (why == NULL && path[0] == '\0')
            why = "the path names the workspace itself, not a file";
        if (why != NULL) {
            note(r, true, "writeFiles: %s: %s", content[i].path ? content[i].path : "", why);
            continue;
        }
        if (content[i].len > CQ_WORKER_MAX_FILE_BYTES) {
            note(r, true, "writeFiles: %s: %zu bytes is above the limit of %llu per file", path,
                 content[i].len, (unsigned long long)CQ_WORKER_MAX_FILE_BYTES);
            r->error_code = CQ_RESULT_LIMIT_EXCEEDED;
            continue;
        }
        if (write_one(f, path, content[i].data, content[i].len, content[i].mode) < 0) {
            int e = errno;
            note(r, true, "writeFiles: %s: %s", path, describe_errno(e));
            if (e == ENOSPC || e == EDQUOT)
                r->error_code = CQ_RESULT_LIMIT_EXCEEDED;
            continue;
        }
        written++;
        note(r, false, "wrote %s (%zu bytes)", path, content[i].len);
    }
    (void)written;
}

/* Reads a whole regular file from fd; *data is malloc'd. */
static int read_fd(int fd, uint8_t **data, size_t *len)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -1;
    if (S_ISDIR(st.st_mode)) {
        errno = EISDIR;
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        errno = ENXIO;
        return -1;
    }
    if ((uint64_t)st.st_size > CQ_WORKER_MAX_FILE_BYTES) {
        errno = EFBIG;
        return -1;
    }
    /* The file may grow while it is read: never past the limit (EFBIG). */
    struct cq_error err;
    if (cq_read_fd_limit(fd, CQ_WORKER_MAX_FILE_BYTES, data, len, &err) < 0) {
        errno = err.code;
        return -1;
    }
    return 0;
}

/* Reads a whole regular file below the workspace; *data is malloc'd. */
static int read_one(const struct cq_files *f, const char *path, uint8_t **data, size_t *len)
{
    cq_autoclose int fd = open_beneath(f->workspace_fd, path, O_RDONLY | O_NONBLOCK, 0);
    if (fd < 0)
        return -1;
    return read_fd(fd, data, len);
}

/* What readFiles or removeFiles does with one path, normalized and not the workspace. */
typedef void (*path_op)(const struct cq_files *f, const char *path, struct cq_result *r);

/* Runs op on each path of a tool's 'paths' argument. A path that is refused (or names
 * the workspace itself, for which `itself` says why not) is noted as a failure of the
 * tool and skipped: the other paths are still done. */
static void for_each_path(const struct cq_files *f, const char *tool, const char *const *paths,
                          size_t n, const char *itself, path_op op, struct cq_result *r)
{
    if (n == 0) {
        cq_result_fail(r, CQ_RESULT_INVALID_ARGUMENT, "%s: 'paths' lists no files", tool);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        char path[PATH_MAX];
        const char *why = normalize(paths[i], path);
        if (why == NULL && path[0] == '\0')
            why = itself;
        if (why != NULL) {
            note(r, true, "%s: %s: %s", tool, paths[i] ? paths[i] : "", why);
            continue;
        }
        op(f, path, r);
    }
}

static void read_path(const struct cq_files *f, const char *path, struct cq_result *r)
{
    uint8_t *data = NULL;
    size_t len = 0;
    if (read_one(f, path, &data, &len) < 0) {
        int e = errno;
        note(r, true, "readFiles: %s: %s", path,
             e == EFBIG ? "larger than the 100 MB limit" : describe_errno(e));
        if (e == ENOENT && r->error_code == CQ_RESULT_INVALID_ARGUMENT)
            r->error_code = CQ_RESULT_NOT_FOUND;
        if (e == EFBIG)
            r->error_code = CQ_RESULT_LIMIT_EXCEEDED;
        return;
    }
    /* Text when it is valid UTF-8 without NULs, bytes otherwise. */
    bool text = memchr(data, '\0', len) == NULL && cq_utf8_valid(data, len);
    const char *mime = cq_mime_type(path, text);
    /* Its name in a text block too: clients that show only text drop the resource's
     * uri, and with it which file the bytes are (docs/agentcore.md). */
    note(r, false, "file: %s (%zu bytes, %s%s)", path, len, mime, text ? "" : ", binary");
    cq_result_add_resource(r, path, mime, data, len, !text);
    free(data);
}

static void cq_files_read_as_user(const struct cq_files *f, const char *const *paths, size_t n,
                                  struct cq_result *r)
{
    for_each_path(f, "readFiles", paths, n, "the path names the workspace itself, not a file",
                  read_path, r);
}

/* Adds text as the result's first block (the blocks after it keep their order). */
static void insert_text_first(struct cq_result *r, const char *text)
{
    if (cq_result_add_text(r, text) < 0)
        return;
    struct cq_block block = r->blocks[r->n_blocks - 1];
    memmove(&r->blocks[1], &r->blocks[0], (r->n_blocks - 1) * sizeof(*r->blocks));
    r->blocks[0] = block;
}

struct entry {
    char name[NAME_MAX + 1];
    struct stat st;
};

static int compare_entries(const void *a, const void *b)
{
    return strcmp(((const struct entry *)a)->name, ((const struct entry *)b)->name);
}

static void cq_files_list_as_user(const struct cq_files *f, const char *directory,
                                  struct cq_result *r)
{
    char dir[PATH_MAX];
    const char *why = normalize(directory != NULL ? directory : "", dir);
    if (why != NULL) {
        cq_result_fail(r, CQ_RESULT_INVALID_ARGUMENT, "listFiles: %s: %s", directory, why);
        return;
    }
    int fd = open_beneath(f->workspace_fd, dir[0] ? dir : ".", O_RDONLY | O_DIRECTORY, 0);
    if (fd < 0) {
        int e = errno;
        cq_result_fail(r, e == ENOENT ? CQ_RESULT_NOT_FOUND : CQ_RESULT_INVALID_ARGUMENT,
                       "listFiles: %s: %s", dir[0] ? dir : ".", describe_errno(e));
        return;
    }
    cq_autoclosedir DIR *d = fdopendir(fd);
    if (d == NULL) {
        close(fd);
        cq_result_fail(r, CQ_RESULT_INTERNAL, "listFiles: %s", strerror(errno));
        return;
    }
    cq_autofree struct entry *entries = NULL;
    size_t count = 0, cap = 0;
    bool truncated = false;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (count == MAX_LIST_ENTRIES) {
            truncated = true;
            break;
        }
        if (count == cap) {
            cap = cap ? cap * 2 : 64;
            struct entry *bigger = realloc(entries, cap * sizeof(*entries));
            if (bigger == NULL)
                break;
            entries = bigger;
        }
        struct entry *en = &entries[count];
        snprintf(en->name, sizeof(en->name), "%s", e->d_name);
        /* Never follows: a link is listed as a link. */
        if (fstatat(dirfd(d), e->d_name, &en->st, AT_SYMLINK_NOFOLLOW) < 0)
            continue;
        count++;
    }
    if (entries != NULL)
        qsort(entries, count, sizeof(*entries), compare_entries);
    /* A text listing first, for clients that show only text (frameworks drop the links
     * a listing is made of); the links follow, for clients that use them. */
    char *listing = NULL;
    size_t listing_len = 0;
    FILE *text = open_memstream(&listing, &listing_len);
    if (text != NULL) {
        if (count == 0)
            fprintf(text, "%s: (empty)", dir[0] ? dir : ".");
        else
            fprintf(text, "%s: %zu entr%s", dir[0] ? dir : ".", count, count == 1 ? "y" : "ies");
    }
    for (size_t i = 0; i < count; i++) {
        const struct entry *en = &entries[i];
        char path[PATH_MAX + NAME_MAX + 2];
        snprintf(path, sizeof(path), "%s%s%s", dir, dir[0] ? "/" : "", en->name);
        const char *mime, *kind;
        if (S_ISDIR(en->st.st_mode)) {
            mime = "inode/directory";
            kind = "directory";
        } else if (S_ISLNK(en->st.st_mode)) {
            mime = "inode/symlink";
            kind = "symbolic link";
        } else if (S_ISREG(en->st.st_mode)) {
            mime = cq_mime_type(en->name, false);
            kind = "file";
        } else {
            mime = "application/octet-stream";
            kind = "special file";
        }
        bool valid = cq_utf8_valid((const uint8_t *)path, strlen(path));
        if (text != NULL) {
            cq_autofree char *shown = valid ? NULL : cq_utf8_sanitize(path, strlen(path));
            fprintf(text, "\n%s%s (%s",
                    valid           ? path
                    : shown != NULL ? shown
                                    : "?",
                    S_ISDIR(en->st.st_mode) ? "/" : "", kind);
            if (S_ISREG(en->st.st_mode))
                fprintf(text, ", %llu bytes", (unsigned long long)en->st.st_size);
            fprintf(text, "%s)", valid ? "" : "; name is not valid UTF-8");
        }
        /* Results are JSON: a name that is not UTF-8 is shown with U+FFFD (and so
         * cannot be given back as a path; the description says so). */
        if (valid) {
            cq_result_add_link(r, path, en->name, mime, (uint64_t)en->st.st_size, kind);
        } else {
            char *clean_path = cq_utf8_sanitize(path, strlen(path));
            char *clean_name = cq_utf8_sanitize(en->name, strlen(en->name));
            char description[64];
            snprintf(description, sizeof(description), "%s (name is not valid UTF-8)", kind);
            if (clean_path != NULL && clean_name != NULL)
                cq_result_add_link(r, clean_path, clean_name, mime, (uint64_t)en->st.st_size,
                                   description);
            free(clean_path);
            free(clean_name);
        }
    }
    if (truncated)
        note(r, false, "listFiles: only the first %d entries are listed", MAX_LIST_ENTRIES);
    if (text != NULL && fclose(text) == 0 && listing != NULL)
        insert_text_first(r, listing);
    free(listing);
}

static void remove_path(const struct cq_files *f, const char *path, struct cq_result *r)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    const char *name = slash != NULL ? path + (slash - dir) + 1 : path;
    if (slash != NULL)
        *slash = '\0';
    cq_autoclose int parent =
        open_beneath(f->workspace_fd, slash != NULL ? dir : ".", O_RDONLY | O_DIRECTORY, 0);
    struct stat st;
    if (parent < 0 || fstatat(parent, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
        int e = errno;
        note(r, true, "removeFiles: %s: %s", path, describe_errno(e));
        if (e == ENOENT && r->error_code == CQ_RESULT_INVALID_ARGUMENT)
            r->error_code = CQ_RESULT_NOT_FOUND;
        return;
    }
    int rc;
    if (S_ISDIR(st.st_mode)) {
        cq_autoclose int sub = open_beneath(parent, name, O_RDONLY | O_DIRECTORY, 0);
        rc = sub < 0 || cq_remove_below(sub, MAX_REMOVE_DEPTH) < 0
                 ? -1
                 : unlinkat(parent, name, AT_REMOVEDIR);
    } else {
        rc = unlinkat(parent, name, 0); /* a link is removed, not what it points to */
    }
    if (rc < 0)
        note(r, true, "removeFiles: %s: %s", path, describe_errno(errno));
    else
        note(r, false, "removed %s", path);
}

static void cq_files_remove_as_user(const struct cq_files *f, const char *const *paths, size_t n,
                                    struct cq_result *r)
{
    for_each_path(f, "removeFiles", paths, n, "the workspace itself cannot be removed", remove_path,
                  r);
}

/* Walks dir_fd's tree for snapshots. The code that made it is hostile: links are never
 * followed (fstatat with AT_SYMLINK_NOFOLLOW, openat with O_NOFOLLOW), only regular
 * files are reported, and depth and entry count are bounded. prefix holds the
 * directory's path relative to the workspace ("" for the workspace itself). */
static int scan_tree(int dir_fd, char *prefix, size_t prefix_len, int depth, size_t *budget,
                     cq_workspace_fn fn, void *ctx, struct cq_error *err)
{
    if (depth > 32)
        return 0;
    int fd = openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    /* A directory the session made unreadable (chmod 000) is skipped, not an error:
     * its files could not be read for the snapshot anyway, and failing would let one
     * `chmod` stop every later save of the session's other files. */
    if (fd < 0 && depth > 0 && errno == EACCES)
        return 0;
    if (fd < 0)
        return cq_error_sys(err, errno, "open directory '%s'", prefix_len ? prefix : ".");
    cq_autoclosedir DIR *d = fdopendir(fd);
    if (d == NULL) {
        int e = errno;
        close(fd);
        return cq_error_sys(err, e, "open directory '%s'", prefix_len ? prefix : ".");
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (*budget == 0)
            return 0;
        (*budget)--;
        size_t name_len = strlen(e->d_name);
        if (prefix_len + name_len + 2 > PATH_MAX)
            continue;
        struct stat st;
        if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
            continue;
        size_t len = prefix_len;
        if (len > 0)
            prefix[len++] = '/';
        memcpy(prefix + len, e->d_name, name_len + 1);
        int rc = 0;
        struct cq_workspace_entry entry = {
            .path = prefix,
            .size = (uint64_t)st.st_size,
            .mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec,
            .mode = (uint32_t)(st.st_mode & 0777),
        };
        char target[PATH_MAX];
        if (S_ISREG(st.st_mode)) {
            rc = fn(ctx, &entry, err);
        } else if (S_ISLNK(st.st_mode)) {
            /* Read, never followed: a link's target is the sandbox's business. */
            ssize_t n = readlinkat(dirfd(d), e->d_name, target, sizeof(target) - 1);
            if (n > 0) {
                target[n] = '\0';
                entry.link_target = target;
                entry.size = (uint64_t)n;
                entry.mode = 0;
                rc = fn(ctx, &entry, err);
            }
        } else if (S_ISDIR(st.st_mode)) {
            cq_autoclose int sub =
                openat(dirfd(d), e->d_name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (sub >= 0)
                rc = scan_tree(sub, prefix, len + name_len, depth + 1, budget, fn, ctx, err);
        }
        prefix[prefix_len] = '\0';
        if (rc < 0)
            return -1;
    }
    return 0;
}

int cq_files_scan(const struct cq_files *f, cq_workspace_fn fn, void *ctx, struct cq_error *err)
{
    /* The callback always gets an error to fill, even when the caller passed none. */
    struct cq_error walk = {0};
    struct fs_identity old = become_sandbox_user(f);
    char prefix[PATH_MAX] = "";
    size_t budget = 100000;
    int rc = scan_tree(f->workspace_fd, prefix, 0, 0, &budget, fn, ctx, &walk);
    restore_identity(old);
    if (rc < 0 && walk.code == 0 && walk.msg[0] == '\0')
        cq_error_set(&walk, CQ_EINTERNAL, "the workspace scan was stopped without a reason");
    if (rc < 0 && err != NULL)
        *err = walk;
    return rc < 0 ? -1 : 0;
}

int cq_files_read_raw(const struct cq_files *f, const char *path, uint8_t **data, size_t *len)
{
    struct fs_identity old = become_sandbox_user(f);
    int rc = read_one(f, path, data, len);
    int e = errno;
    cq_autoclose int file = -1;
    struct stat st;
    /* A file the code made unreadable to itself (chmod 000, or 0200) is still its own:
     * it could chmod it back and read it, so keeping it with the session gives nothing
     * away, and leaving it out would lose it at the next move. Found as the user (the
     * walk stays beneath the workspace, no links), then read through that same inode
     * with the host's identity, only when the sandbox user owns it. */
    if (rc < 0 && e == EACCES && (file = open_beneath(f->workspace_fd, path, O_PATH, 0)) >= 0 &&
        fstat(file, &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == (uid_t)f->uid &&
        !(st.st_mode & S_IRUSR)) {
        restore_identity(old);
        char proc[64];
        snprintf(proc, sizeof(proc), "/proc/self/fd/%d", file);
        /* Not O_NOFOLLOW: the fd's entry is a magic link, the one it must follow. */
        cq_autoclose int fd = open(proc, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
        return fd < 0 ? -1 : read_fd(fd, data, len);
    }
    restore_identity(old);
    errno = e;
    return rc;
}

static int link_one(const struct cq_files *f, const char *path, const char *target)
{
    char norm[PATH_MAX];
    if (normalize(path, norm) != NULL || norm[0] == '\0') {
        errno = EINVAL;
        return -1;
    }
    const char *name;
    cq_autoclose int dirfd = parent_dir(f, norm, &name);
    if (dirfd < 0)
        return -1;
    /* What is there goes (a restore fills a fresh workspace; a directory stays). */
    if (unlinkat(dirfd, name, 0) < 0 && errno != ENOENT)
        return -1;
    return symlinkat(target, dirfd, name);
}

int cq_files_link(const struct cq_files *f, const char *path, const char *target)
{
    if (target == NULL || target[0] == '\0' || strlen(target) >= PATH_MAX) {
        errno = EINVAL;
        return -1;
    }
    struct fs_identity old = become_sandbox_user(f);
    int rc = link_one(f, path, target);
    int e = errno;
    restore_identity(old);
    errno = e;
    return rc;
}

void cq_files_write(const struct cq_files *f, const struct cq_file_content *content, size_t n,
                    struct cq_result *r)
{
    struct fs_identity old = become_sandbox_user(f);
    cq_files_write_as_user(f, content, n, r);
    restore_identity(old);
}

void cq_files_read(const struct cq_files *f, const char *const *paths, size_t n,
                   struct cq_result *r)
{
    struct fs_identity old = become_sandbox_user(f);
    cq_files_read_as_user(f, paths, n, r);
    restore_identity(old);
}

void cq_files_list(const struct cq_files *f, const char *directory, struct cq_result *r)
{
    struct fs_identity old = become_sandbox_user(f);
    cq_files_list_as_user(f, directory, r);
    restore_identity(old);
}

void cq_files_remove(const struct cq_files *f, const char *const *paths, size_t n,
                     struct cq_result *r)
{
    struct fs_identity old = become_sandbox_user(f);
    cq_files_remove_as_user(f, paths, n, r);
    restore_identity(old);
}

const char *cq_mime_type(const char *path, bool is_text)
{
    static const struct {
        const char *ext, *mime;
    } table[] = {
        {"txt", "text/plain"},
        {"log", "text/plain"},
        {"md", "text/markdown"},
        {"csv", "text/csv"},
        {"tsv", "text/tab-separated-values"},
        {"json", "application/json"},
        {"jsonl", "application/jsonl"},
        {"xml", "application/xml"},
        {"yaml", "application/yaml"},
        {"yml", "application/yaml"},
        {"html", "text/html"},
        {"htm", "text/html"},
        {"css", "text/css"},
        {"py", "text/x-python"},
        {"js", "text/javascript"},
        {"mjs", "text/javascript"},
        {"ts", "text/x-typescript"},
        {"sh", "text/x-shellscript"},
        {"c", "text/x-c"},
        {"h", "text/x-c"},
        {"sql", "application/sql"},
        {"ipynb", "application/x-ipynb+json"},
        {"png", "image/png"},
        {"jpg", "image/jpeg"},
        {"jpeg", "image/jpeg"},
        {"gif", "image/gif"},
        {"svg", "image/svg+xml"},
        {"webp", "image/webp"},
        {"bmp", "image/bmp"},
        {"pdf", "application/pdf"},
        {"zip", "application/zip"},
        {"gz", "application/gzip"},
        {"tar", "application/x-tar"},
        {"xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"},
        {"parquet", "application/vnd.apache.parquet"},
        {"npy", "application/octet-stream"},
    };
    const char *base = strrchr(path, '/');
    base = base != NULL ? base + 1 : path;
    const char *dot = strrchr(base, '.');
    if (dot != NULL && dot != base) {
        for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
            if (strcasecmp(dot + 1, table[i].ext) == 0)
                return table[i].mime;
    }
    return is_text ? "text/plain" : "application/octet-stream";
}
