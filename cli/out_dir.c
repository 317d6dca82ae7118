/* cli/out_dir.c - `codeq exec --out DIR`, the host side of what sandboxed code sends back.
 *
 * codeq exec runs as root, and the names, kinds and bytes of the files it saves are
 * chosen by the code it just ran: hostile. Merging them into a directory the user
 * works in was an attack of its own: a `.git/config` with `core.fsmonitor` set runs a
 * command as root at the next `git status`, and `.bashrc`, `.envrc`, a `Makefile` or
 * `.vscode/tasks.json` wait for the next shell, cd, make or editor. Sparse files
 * multiplied the bytes: twenty 100 MiB files that used no space in the workspace wrote
 * 2 GB to the host. So, here:
 *
 *  - DIR is new, or an existing empty directory. A non-empty one needs --out-force,
 *    and even then nothing in it is replaced or truncated: every file is created with
 *    O_CREAT | O_EXCL, an entry already there is kept and noted. A new DIR is made 0700:
 *    the code may have read --file inputs that only root could read, and its output is
 *    not for the other users of the host (the files are 0644, readable through DIR).
 *  - DIR is opened once, O_NOFOLLOW | O_DIRECTORY, and every later step is relative to
 *    that fd: renaming DIR or swapping it for a symlink during the run cannot redirect
 *    a write. Each path component is validated (no "", ".", "..", no leading '/'),
 *    created or opened relative to its parent with O_NOFOLLOW, so no symlink, planted in
 *    DIR before the run or by anyone during it, is followed. Directories are descended
 *    into only when they are real directories.
 *  - Paths with a component starting with '.' (.git/config, .bashrc, .vscode/...) are
 *    skipped unless --out-dotfiles: those are the files that tools run or source.
 *  - Files are 0644 whatever the workspace said: never executable.
 *  - The logical bytes saved are capped (the session's workspace size by default), and
 *    zero-filled blocks are written as holes, so disk use follows the data: a sparse
 *    file in the workspace stays sparse here.
 *
 * Names of skipped and failed paths are printed escaped (bytes outside printable ASCII
 * as \xNN): a file name must not be able to send escape sequences to the terminal.
 */
#define _GNU_SOURCE
#include "cli/out_dir.h"
#include "common/cleanup.h"
#include "common/units.h"
#include "sandbox/sandbox.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define HOLE_BLOCK 4096 /* the unit written as a hole when all zero: a page, a block */
#define NOTE_NAMES 200  /* characters of names listed in one note, then "..." */

/* One kind of skip: how many, and the first names. */
struct note {
    unsigned count;
    char names[NOTE_NAMES + 1];
    bool more;
};

struct cq_out_dir {
    int fd; /* DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW: the root of every write */
    struct cq_out_dir_options opts;
    uint64_t saved_bytes; /* logical bytes of the files saved so far */
    struct note dots, existing, over_cap, other;
};

void cq_out_dir_escape(const char *rel, char *buf, size_t size)
{
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)rel; *p != '\0' && n + 5 < size; p++) {
        if (*p >= 0x20 && *p < 0x7f && *p != '\\')
            buf[n++] = (char)*p;
        else
            n += (size_t)snprintf(buf + n, size - n, "\\x%02x", *p);
    }
    buf[n] = '\0';
}

static void note_add(struct note *nt, const char *rel, const char *suffix)
{
    nt->count++;
    char name[NOTE_NAMES + 1];
    cq_out_dir_escape(rel, name, sizeof(name));
    size_t used = strlen(nt->names);
    size_t need = (used > 0 ? 2 : 0) + strlen(name) + strlen(suffix);
    if (nt->more || used + need > NOTE_NAMES) {
        nt->more = true;
        return;
    }
    snprintf(nt->names + used, sizeof(nt->names) - used, "%s%s%s", used > 0 ? ", " : "", name,
             suffix);
}

static int fail(struct cq_error *err, int code, const char *rel, const char *why)
{
    char name[256];
    cq_out_dir_escape(rel, name, sizeof(name));
    return cq_error_set(err, code, "%s: %s", name, why);
}

/* 1 when the directory fd has no entry besides "." and "..", 0 when it has, -1 (errno)
 * when it cannot be read. Reads through a dup, which closedir closes instead of fd (fd
 * is only ever used as the base of *at calls, so the shared offset does not matter). */
static int is_empty(int fd)
{
    int copy = dup(fd);
    if (copy < 0)
        return -1;
    cq_autoclosedir DIR *d = fdopendir(copy);
    if (d == NULL) {
        close(copy);
        return -1;
    }
    errno = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            return 0;
    return errno != 0 ? -1 : 1;
}

int cq_out_dir_open(const char *path, const struct cq_out_dir_options *opts,
                    struct cq_out_dir **out, struct cq_error *err)
{
    /* 0700 for a new DIR: see the top of the file. An existing DIR keeps its mode. */
    bool created = mkdir(path, 0700) == 0;
    if (!created && errno != EEXIST)
        return cq_error_sys(err, errno, "cannot create '%s'", path);
    /* O_NOFOLLOW: DIR itself must not be a symlink (one planted where the user said to
     * write would send the files anywhere). The parents of path are the user's. */
    cq_autoclose int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    struct stat st;
    if (fd < 0 && (errno == ELOOP || errno == ENOTDIR)) /* lstat only words the refusal */
        return cq_error_set(err, CQ_EINVALID, "'%s' is %s", path,
                            lstat(path, &st) == 0 && S_ISLNK(st.st_mode) ? "a symbolic link"
                                                                         : "not a directory");
    if (fd < 0)
        return cq_error_sys(err, errno, "cannot open '%s'", path);
    /* One we made must still be ours: someone who can write to its parent could have
     * put their own directory in its place between mkdir and open. */
    if (created && (fstat(fd, &st) < 0 || st.st_uid != geteuid()))
        return cq_error_set(err, CQ_EINVALID, "'%s' was replaced while it was made", path);
    int empty = is_empty(fd);
    if (empty < 0)
        return cq_error_sys(err, errno, "cannot read '%s'", path);
    if (!empty && !opts->force)
        return cq_error_set(err, CQ_EINVALID,
                            "'%s' is not empty; give a new or empty directory, or "
                            "--out-force to add new files to it (nothing is replaced)",
                            path);
    struct cq_out_dir *d = calloc(1, sizeof(*d));
    if (d == NULL)
        return cq_error_sys(err, ENOMEM, "--out");
    d->fd = cq_steal_fd(&fd);
    d->opts = *opts;
    if (d->opts.max_bytes == 0)
        d->opts.max_bytes = CQ_SANDBOX_DEFAULT_DISK;
    *out = d;
    return 0;
}

void cq_out_dir_close(struct cq_out_dir *d)
{
    if (d == NULL)
        return;
    cq_closep(&d->fd);
    free(d);
}

static bool is_dot_path(const char *rel)
{
    for (const char *p = rel;; p++) {
        if (p[0] == '.')
            return true;
        if ((p = strchr(p, '/')) == NULL)
            return false;
    }
}

static bool fits(const struct cq_out_dir *d, uint64_t size)
{
    return size <= d->opts.max_bytes && d->saved_bytes <= d->opts.max_bytes - size;
}

bool cq_out_dir_admit(struct cq_out_dir *d, const char *rel, const char *kind, uint64_t size)
{
    bool dir = strcmp(kind, "directory") == 0;
    if (!dir && strcmp(kind, "file") != 0) {
        note_add(&d->other, rel, "");
        return false;
    }
    if (!d->opts.dotfiles && is_dot_path(rel)) {
        note_add(&d->dots, rel, dir ? "/" : "");
        return false;
    }
    if (!dir && !fits(d, size)) {
        note_add(&d->over_cap, rel, "");
        return false;
    }
    return true;
}

static bool bad_component(const char *name)
{
    return name[0] == '\0' || strcmp(name, ".") == 0 || strcmp(name, "..") == 0;
}

/* Walks the directories of path (a writable copy of rel, cut at each '/') from DIR's
 * fd, creating the missing ones, and returns an O_PATH fd of the last one with *name
 * set to the file's name. -1 with err on failure; -2 when an entry that is not a real
 * directory (a file, a symlink) stands in the way, which is left alone. */
static int open_parent(struct cq_out_dir *d, const char *rel, char *path, char **name,
                       struct cq_error *err)
{
    cq_autoclose int dir = -1;
    int at = d->fd;
    char *part = path;
    for (char *slash; (slash = strchr(part, '/')) != NULL; part = slash + 1) {
        *slash = '\0';
        if (bad_component(part))
            return fail(err, CQ_EINVALID, rel, "not a plain relative path");
        /* 0755: DIR's own mode (0700 when codeq made it) decides who gets in. */
        if (mkdirat(at, part, 0755) < 0 && errno != EEXIST)
            return fail(err, errno, rel, strerror(errno));
        /* O_NOFOLLOW | O_DIRECTORY: an existing symlink (to a directory or not) fails
         * with ELOOP or ENOTDIR instead of being followed. */
        int sub = openat(at, part, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (sub < 0 && (errno == ELOOP || errno == ENOTDIR))
            return -2;
        if (sub < 0)
            return fail(err, errno, rel, strerror(errno));
        cq_closep(&dir);
        at = dir = sub;
    }
    if (bad_component(part))
        return fail(err, CQ_EINVALID, rel, "not a plain relative path");
    *name = part;
    return dir >= 0 ? cq_steal_fd(&dir) : fcntl(d->fd, F_DUPFD_CLOEXEC, 0);
}

static bool all_zero(const uint8_t *p, size_t n)
{
    return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

static int write_at(int fd, const uint8_t *p, size_t n, off_t off)
{
    while (n > 0) {
        ssize_t w = pwrite(fd, p, n, off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return w == 0 ? (errno = EIO, -1) : -1;
        p += w;
        n -= (size_t)w;
        off += w;
    }
    return 0;
}

/* Writes data into the new, empty file fd, leaving its zero-filled HOLE_BLOCK blocks
 * unwritten, then sets its size: the holes read as zeros and take no space. Each run of
 * non-zero blocks is one pwrite. -1 with errno. */
static int write_sparse(int fd, const uint8_t *data, size_t len)
{
    size_t pos = 0;
    while (pos < len) {
        size_t n = len - pos < HOLE_BLOCK ? len - pos : HOLE_BLOCK;
        if (all_zero(data + pos, n)) {
            pos += n;
            continue;
        }
        size_t end = pos + n;
        while (end < len) {
            size_t m = len - end < HOLE_BLOCK ? len - end : HOLE_BLOCK;
            if (all_zero(data + end, m))
                break;
            end += m;
        }
        if (write_at(fd, data + pos, end - pos, (off_t)pos) < 0)
            return -1;
        pos = end;
    }
    return ftruncate(fd, (off_t)len);
}

int cq_out_dir_save(struct cq_out_dir *d, const char *rel, const uint8_t *data, size_t len,
                    struct cq_error *err)
{
    char path[PATH_MAX];
    if (rel[0] == '/' || snprintf(path, sizeof(path), "%s", rel) >= (int)sizeof(path))
        return fail(err, CQ_EINVALID, rel, "not a plain relative path");
    if (!d->opts.dotfiles && is_dot_path(rel)) {
        note_add(&d->dots, rel, "");
        return 1;
    }
    if (!fits(d, len)) {
        note_add(&d->over_cap, rel, "");
        return 1;
    }
    char *name = NULL;
    cq_autoclose int dir = open_parent(d, rel, path, &name, err);
    if (dir == -2) {
        note_add(&d->existing, rel, "");
        return 1;
    }
    if (dir < 0)
        return -1;
    /* O_EXCL: never replace or truncate what is there, whatever it is (with O_CREAT it
     * also refuses a symlink at name, dangling or not, without following it). 0644,
     * whatever mode the file had in the workspace: nothing saved is executable. */
    cq_autoclose int fd =
        openat(dir, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0 && errno == EEXIST) {
        note_add(&d->existing, rel, "");
        return 1;
    }
    if (fd < 0)
        return fail(err, errno, rel, strerror(errno));
    if (write_sparse(fd, data, len) < 0) {
        int code = errno;
        unlinkat(dir, name, 0); /* ours (O_EXCL): leave no partial file behind */
        return fail(err, code, rel, strerror(code));
    }
    d->saved_bytes += len;
    return 0;
}

void cq_out_dir_report(const struct cq_out_dir *d, FILE *out)
{
    if (d->dots.count > 0)
        fprintf(out, "codeq: --out: skipped %u dot-path(s) (%s%s); --out-dotfiles saves them\n",
                d->dots.count, d->dots.names, d->dots.more ? ", ..." : "");
    if (d->existing.count > 0)
        fprintf(out,
                "codeq: --out: kept %u existing entr%s in place of what the code wrote "
                "(%s%s); nothing is replaced\n",
                d->existing.count, d->existing.count == 1 ? "y" : "ies", d->existing.names,
                d->existing.more ? ", ..." : "");
    if (d->over_cap.count > 0) {
        char limit[32];
        cq_format_size(d->opts.max_bytes, limit, sizeof(limit));
        fprintf(out, "codeq: --out: skipped %u file(s) past the limit of %s saved (%s%s)\n",
                d->over_cap.count, limit, d->over_cap.names, d->over_cap.more ? ", ..." : "");
    }
    if (d->other.count > 0)
        fprintf(out,
                "codeq: --out: skipped %u link(s) or special file(s) (%s%s); only regular "
                "files are saved\n",
                d->other.count, d->other.names, d->other.more ? ", ..." : "");
}
