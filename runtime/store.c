/* runtime/store.c - building layers into the store, and reading it.
 *
 * Security (docs/security.md, "Runtime builds"): the installers run on the host, so
 *  - they run as the unprivileged user nobody (when codeq is root), with a cleared
 *    environment and a private HOME inside the build directory;
 *  - pip installs wheels only (--only-binary=:all:): an sdist would run its setup.py;
 *  - npm runs with --ignore-scripts: install scripts are arbitrary code;
 *  - a wheelhouse is copied into the build directory first (regular files only), so
 *    the installers read nothing else of the host's that the caller named;
 *  - what the installer wrote is handed to root only where the installer owns it
 *    (lchown, never following a link), so nothing it planted can make root change the
 *    owner of a host file.
 * A build lives in STORE/tmp/ until one rename() moves it to STORE/layers/<digest>:
 * a failed or interrupted build never appears there, and a layer that exists is
 * complete. Renames and the name index change under STORE/lock. */
#define _GNU_SOURCE
#include "common/cleanup.h"
#include "common/fileutil.h"
#include "runtime/runtime.h"
#include "runtime/internal.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <jansson.h>
#include <limits.h>
#include <openssl/evp.h>
#include <pwd.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define PYTHON       "/usr/bin/python3"
#define NODE         "/usr/bin/node"
#define NPM          "/usr/bin/npm"
#define ERROR_LINES  12  /* installer lines quoted in an error */
#define ERROR_WIDTH  300 /* and their width */
#define LOG_MAX      (4u << 20)
#define MANIFEST_MAX (16u << 20)

const char *cq_runtime_store_path(const char *store)
{
    if (store != NULL && store[0] != '\0')
        return store;
    const char *env = getenv("CODEQ_RUNTIME_STORE");
    return env != NULL && env[0] != '\0' ? env : CQ_RUNTIME_DEFAULT_STORE;
}

/* --- small helpers ------------------------------------------------------------------ */

static int mkdir_p(const char *path, mode_t mode, struct cq_error *err)
{
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
        return cq_error_set(err, ENAMETOOLONG, "%s: path too long", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, mode) < 0 && errno != EEXIST)
            return cq_error_sys(err, errno, "mkdir %s", buf);
        *p = '/';
    }
    if (mkdir(buf, mode) < 0 && errno != EEXIST)
        return cq_error_sys(err, errno, "mkdir %s", buf);
    return 0;
}

/* A leftover that cannot go now is swept with the store's next leftovers. */
static void rm_rf(const char *path)
{
    struct cq_error ignored;
    (void)cq_remove_tree(path, &ignored);
}

static uid_t owner_uid;
static gid_t owner_gid;
static uid_t installer_uid;

/* Only what the installer owns changes hands: a hard link to a file of someone else
 * (refused by protected_hardlinks anyway) keeps its owner. Write bits of group and
 * others go: the layer is shared by every sandbox of the runtime. */
static int own_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)type;
    (void)ftw;
    if (st->st_uid != installer_uid)
        return 0;
    if (lchown(path, owner_uid, owner_gid) < 0)
        return -1;
    if (!S_ISLNK(st->st_mode) && chmod(path, st->st_mode & 07755 & ~(mode_t)06000) < 0)
        return -1;
    return 0;
}

static int sha256_file(const char *path, char *hex, struct cq_error *err)
{
    cq_autoclose int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return cq_error_sys(err, errno, "open %s", path);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    bool ok = md != NULL && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1;
    char buf[65536];
    ssize_t n;
    while (ok && (n = read(fd, buf, sizeof(buf))) > 0)
        ok = EVP_DigestUpdate(md, buf, (size_t)n) == 1;
    unsigned char h[EVP_MAX_MD_SIZE];
    unsigned hl = 0;
    ok = ok && n == 0 && EVP_DigestFinal_ex(md, h, &hl) == 1;
    EVP_MD_CTX_free(md);
    if (!ok)
        return cq_error_set(err, CQ_EINTERNAL, "sha256 of %s failed", path);
    for (unsigned i = 0; i < hl; i++)
        sprintf(hex + 2 * i, "%02x", h[i]);
    return 0;
}

static int copy_file(int from_dir, const char *name, const char *to_path, struct cq_error *err)
{
    cq_autoclose int in = openat(from_dir, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (in < 0)
        return cq_error_sys(err, errno, "wheelhouse: open %s", name);
    struct stat st;
    if (fstat(in, &st) < 0 || !S_ISREG(st.st_mode))
        return 0; /* a directory or a special file: not an artifact */
    cq_autoclose int out = open(to_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (out < 0)
        return cq_error_sys(err, errno, "wheelhouse: create %s", to_path);
    char buf[65536];
    ssize_t n;
    while ((n = read(in, buf, sizeof(buf))) > 0)
        if (write(out, buf, (size_t)n) != n)
            return cq_error_sys(err, errno, "wheelhouse: write %s", to_path);
    if (n < 0)
        return cq_error_sys(err, errno, "wheelhouse: read %s", name);
    return 0;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

static bool isdigit_c(char c)
{
    return c >= '0' && c <= '9';
}

static bool all_digits_dots(const char *s)
{
    if (!isdigit_c(*s))
        return false;
    for (; *s; s++)
        if (!isdigit_c(*s) && *s != '.')
            return false;
    return true;
}

/* --- running the installers ------------------------------------------------------- */

struct build {
    char dir[PATH_MAX]; /* STORE/tmp/build-XXXXXX */
    char layer[PATH_MAX];
    char log[PATH_MAX];
    uid_t uid; /* the installers' user */
    gid_t gid;
    int dir_fd; /* holds an flock on dir while the build lives: see sweep_stale */
};

/* Runs argv as the installer user in a cleared environment, its output appended to
 * the build's log. Returns its exit status (>= 0), -1 when it could not be run. */
static int run_installer(const struct build *b, char *const argv[], struct cq_error *err)
{
    char home[PATH_MAX + 8], cache[PATH_MAX + 32];
    snprintf(home, sizeof(home), "HOME=%s/home", b->dir);
    snprintf(cache, sizeof(cache), "npm_config_cache=%s/home/.npm", b->dir);
    char *const envp[] = {"PATH=/usr/bin:/bin",
                          home,
                          cache,
                          "LANG=C.UTF-8",
                          "npm_config_update_notifier=false",
                          NULL};
    pid_t pid = fork();
    if (pid < 0)
        return cq_error_sys(err, errno, "fork");
    if (pid == 0) {
        int log = open(b->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (log < 0 || null < 0 || dup2(null, 0) < 0 || dup2(log, 1) < 0 || dup2(log, 2) < 0)
            _exit(126);
        umask(022);
        if (geteuid() == 0 && (setgroups(0, NULL) < 0 || setgid(b->gid) < 0 || setuid(b->uid) < 0))
            _exit(126);
        if (chdir(b->dir) < 0) {
            dprintf(2,
                    "ERROR: the unprivileged installer cannot enter %s: %m (every parent "
                    "directory of the store must be searchable by others)\n",
                    b->dir);
            _exit(126);
        }
        execve(argv[0], argv, envp);
        dprintf(2, "ERROR: cannot run %s: %m\n", argv[0]);
        _exit(127);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return cq_error_sys(err, errno, "waitpid");
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* The installer's own error lines (those saying "error" first, else the last ones), cut
 * to ERROR_LINES lines of ERROR_WIDTH characters, appended to err's message (which
 * cuts the whole at its size). */
static int installer_failed(const struct build *b, const char *what, int status,
                            struct cq_error *err)
{
    cq_autofree uint8_t *data = NULL;
    size_t len = 0;
    cq_autoclose int fd = open(b->log, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        if (lseek(fd, 0, SEEK_END) > (off_t)LOG_MAX)
            lseek(fd, -(off_t)LOG_MAX, SEEK_END);
        else
            lseek(fd, 0, SEEK_SET);
        cq_read_fd_limit(fd, LOG_MAX, &data, &len, NULL);
    }
    char msg[sizeof(err->msg)];
    int n = snprintf(msg, sizeof(msg), "%s failed (exit status %d)", what, status);
    const char *lines[ERROR_LINES];
    size_t nlines = 0;
    for (int pass = 0; pass < 2 && nlines == 0 && data != NULL; pass++) {
        for (char *line = (char *)data, *next; line != NULL && *line; line = next) {
            next = strchr(line, '\n');
            if (next != NULL)
                *next++ = '\0';
            if (pass == 0 && strcasestr(line, "error") == NULL)
                continue;
            /* Empty, or pointing at a log of the build directory, removed by now. */
            if (line[0] == '\0' || strstr(line, "complete log of this run") != NULL)
                continue;
            if (nlines == ERROR_LINES) { /* keep the last ones: pip ends with the cause */
                memmove(lines, lines + 1, sizeof(lines) - sizeof(lines[0]));
                nlines--;
            }
            lines[nlines++] = line;
        }
        if (pass == 0 && nlines == 0) { /* the lines were cut at NUL: read again */
            for (size_t i = 0; i < len; i++)
                if (data[i] == '\0')
                    data[i] = '\n';
        }
    }
    for (size_t i = 0; i < nlines && n < (int)sizeof(msg); i++)
        n += snprintf(msg + n, sizeof(msg) - (size_t)n, "%s%.*s", i == 0 ? ": " : " | ",
                      ERROR_WIDTH, lines[i]);
    return cq_error_set(err, CQ_EINVALID, "%s", msg);
}

/* The installed distributions (dependencies too) from pip's installation report, each
 * with the sha256 of its wheel. */
static int pip_artifacts(const struct build *b, json_t *out, struct cq_error *err)
{
    char path[PATH_MAX + 16];
    snprintf(path, sizeof(path), "%s/home/report.json", b->dir);
    json_error_t jerr;
    json_t *report = json_load_file(path, 0, &jerr);
    if (report == NULL)
        return cq_error_set(err, CQ_EINTERNAL, "pip's report %s: %s", path, jerr.text);
    size_t i;
    json_t *item;
    int rc = 0;
    json_array_foreach(json_object_get(report, "install"), i, item)
    {
        json_t *meta = json_object_get(item, "metadata");
        json_t *dl = json_object_get(item, "download_info");
        const char *name = json_string_value(json_object_get(meta, "name"));
        const char *version = json_string_value(json_object_get(meta, "version"));
        const char *url = json_string_value(json_object_get(dl, "url"));
        json_t *archive = json_object_get(dl, "archive_info");
        const char *sha =
            json_string_value(json_object_get(json_object_get(archive, "hashes"), "sha256"));
        const char *hash = json_string_value(json_object_get(archive, "hash"));
        char hex[65] = "";
        if (sha == NULL && hash != NULL && strncmp(hash, "sha256=", 7) == 0)
            sha = hash + 7;
        if (sha == NULL && url != NULL && strncmp(url, "file://", 7) == 0 &&
            sha256_file(url + 7, hex, err) == 0)
            sha = hex;
        if (name == NULL || version == NULL || sha == NULL || url == NULL) {
            rc = cq_error_set(err, CQ_EINTERNAL,
                              "pip's report: entry %zu lacks a name, version, URL or sha256", i);
            break;
        }
        /* The source is recorded for people; the digest covers the hash, not where the
         * wheel came from (a mirror and a wheelhouse give the same layer). A wheelhouse
         * copy's path is the build's, gone afterwards: its file name is what helps. */
        char source[PATH_MAX + 16];
        const char *wh = strstr(url, "/wheelhouse/");
        if (strncmp(url, "file://", 7) == 0 && wh != NULL)
            snprintf(source, sizeof(source), "wheelhouse:%s", wh + strlen("/wheelhouse/"));
        else
            snprintf(source, sizeof(source), "%s", url);
        json_array_append_new(out,
                              json_pack("{s:s, s:s, s:s, s:s, s:s}", "kind", "pip", "name", name,
                                        "version", version, "sha256", sha, "source", source));
    }
    json_decref(report);
    return rc;
}

/* Artifacts of npm's lock file: every package of node_modules with its integrity. */
static int npm_artifacts(const struct build *b, json_t *out, struct cq_error *err)
{
    char path[PATH_MAX + 40];
    snprintf(path, sizeof(path), "%s/node/package-lock.json", b->layer);
    json_error_t jerr;
    json_t *lock = json_load_file(path, 0, &jerr);
    if (lock == NULL)
        return cq_error_set(err, CQ_EINTERNAL, "npm's lock file %s: %s", path, jerr.text);
    const char *key;
    json_t *pkg;
    int rc = 0;
    json_object_foreach(json_object_get(lock, "packages"), key, pkg)
    {
        if (key[0] == '\0') /* the layer's own package.json */
            continue;
        const char *name = strrchr(key, '/') ? strstr(key, "node_modules/") : NULL;
        const char *version = json_string_value(json_object_get(pkg, "version"));
        const char *integrity = json_string_value(json_object_get(pkg, "integrity"));
        if (name == NULL || version == NULL || integrity == NULL) {
            rc = cq_error_set(err, CQ_EINTERNAL,
                              "npm's lock file: '%.100s' lacks a version or an integrity", key);
            break;
        }
        const char *last = name;
        while ((name = strstr(last + 1, "node_modules/")) != NULL)
            last = name; /* nested: the innermost name */
        json_array_append_new(out, json_pack("{s:s, s:s, s:s, s:s, s:s}", "kind", "npm", "name",
                                             last + strlen("node_modules/"), "version", version,
                                             "integrity", integrity, "path", key));
    }
    json_decref(lock);
    return rc;
}

/* With a wheelhouse npm is given tarball paths: NAME or NAME@EXACT maps to the
 * NAME-VERSION.tgz that `npm pack` writes (@scope/name: scope-name-VERSION.tgz). */
static int npm_tarball(const struct build *b, const char *req, char **out, struct cq_error *err)
{
    char base[256];
    const char *p = req[0] == '@' ? req + 1 : req;
    const char *at = strchr(p, '@');
    snprintf(base, sizeof(base), "%.*s", (int)(at ? at - p : (int)strlen(p)), p);
    for (char *q = base; *q; q++)
        if (*q == '/')
            *q = '-';
    char dir[PATH_MAX + 16];
    snprintf(dir, sizeof(dir), "%s/wheelhouse", b->dir);
    if (at != NULL) {
        if (!all_digits_dots(at + 1))
            return cq_error_set(err, CQ_EINVALID,
                                "packages.npm '%s': with a wheelhouse, give NAME or NAME@X.Y.Z "
                                "(a range cannot choose among local tarballs)",
                                req);
        if (asprintf(out, "%s/%s-%s.tgz", dir, base, at + 1) < 0)
            return cq_error_sys(err, ENOMEM, "npm");
        if (access(*out, R_OK) < 0)
            return cq_error_set(err, CQ_ENOTFOUND,
                                "packages.npm '%s': no %s-%s.tgz in the wheelhouse", req, base,
                                at + 1);
        return 0;
    }
    cq_autoclosedir DIR *d = opendir(dir);
    struct dirent *e;
    size_t blen = strlen(base);
    while (d != NULL && (e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, base, blen) != 0 || e->d_name[blen] != '-' ||
            !isdigit_c(e->d_name[blen + 1]) || !ends_with(e->d_name, ".tgz"))
            continue;
        if (*out != NULL)
            return cq_error_set(err, CQ_EINVALID,
                                "packages.npm '%s': several tarballs of it in the wheelhouse; "
                                "give NAME@X.Y.Z",
                                req);
        if (asprintf(out, "%s/%s", dir, e->d_name) < 0)
            return cq_error_sys(err, ENOMEM, "npm");
    }
    if (*out == NULL)
        return cq_error_set(err, CQ_ENOTFOUND,
                            "packages.npm '%s': no %s-VERSION.tgz in the wheelhouse", req, base);
    return 0;
}

/* --- the language ------------------------------------------------------------------ */

int cq_runtime_language_check(const struct cq_runtime_spec *spec, struct cq_error *err)
{
    if (spec->n_npm > 0 && access(NPM, X_OK) < 0)
        return cq_error_set(err, CQ_EINVALID, "packages.npm: this host has no %s", NPM);
    if (strcmp(spec->language, "node") == 0) {
        if (access(NODE, X_OK) < 0)
            return cq_error_set(err, CQ_EINVALID, "language node: this host has no %s", NODE);
        return 0;
    }
    /* python3.N is what the sandboxes run: the host's /usr/bin/python3, bound read-only.
     * Its version is asked, not guessed from file names. */
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0)
        return cq_error_sys(err, errno, "pipe");
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return cq_error_sys(err, errno, "fork");
    }
    if (pid == 0) {
        dup2(fds[1], 1);
        char *const argv[] = {PYTHON, "-I", "-c",
                              "import sys; print('python%d.%d' % sys.version_info[:2])", NULL};
        char *const envp[] = {"PATH=/usr/bin:/bin", NULL};
        execve(argv[0], argv, envp);
        _exit(127);
    }
    close(fds[1]);
    char out[64] = "";
    ssize_t n = read(fds[0], out, sizeof(out) - 1);
    close(fds[0]);
    int status;
    waitpid(pid, &status, 0);
    if (n <= 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return cq_error_set(err, CQ_EINVALID, "language %s: cannot run %s", spec->language, PYTHON);
    out[strcspn(out, "\n")] = '\0';
    if (strcmp(out, spec->language) != 0)
        return cq_error_set(err, CQ_EINVALID,
                            "language %s: this host runs %s (%s); a runtime uses the host's "
                            "interpreter",
                            spec->language, out, PYTHON);
    return 0;
}

/* --- the store ---------------------------------------------------------------------- */

int cq_runtime_store_lock(const char *store, bool create, struct cq_error *err)
{
    if (create) {
        char dir[PATH_MAX];
        if (snprintf(dir, sizeof(dir), "%s", store) >= (int)sizeof(dir))
            return cq_error_set(err, ENAMETOOLONG, "%s: path too long", store);
        for (char *p = dir + 1;; p++) {
            if (*p != '/' && *p != '\0')
                continue;
            char c = *p;
            *p = '\0';
            if (mkdir(dir, 0755) < 0 && errno != EEXIST)
                return cq_error_sys(err, errno, "store: mkdir %s", dir);
            if ((*p = c) == '\0')
                break;
        }
    }
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/lock", store);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0)
        return cq_error_sys(err, errno, "open %s", path);
    while (flock(fd, LOCK_EX) < 0)
        if (errno != EINTR) {
            close(fd);
            return cq_error_sys(err, errno, "lock %s", path);
        }
    return fd;
}

/* Whether a sandbox has the layer of digest bound: some mount namespace has a mount at
 * CQ_RUNTIME_LAYERS_DIR/<digest> (mountinfo's fifth field), where sandboxes see layers.
 * Deleting the files of a layer in use would empty it under the sandbox (its mount
 * holds the directory, not what is in it): a running session's imports would fail. */
static bool layer_in_use(const char *digest)
{
    char want[160];
    snprintf(want, sizeof(want), "%s/%s", CQ_RUNTIME_LAYERS_DIR, digest);
    ino_t seen[256];
    size_t n_seen = 0;
    cq_autoclosedir DIR *proc = opendir("/proc");
    struct dirent *e;
    bool used = false;
    while (!used && proc != NULL && (e = readdir(proc)) != NULL) {
        if (!isdigit_c(e->d_name[0]))
            continue;
        char path[64];
        struct stat ns;
        snprintf(path, sizeof(path), "/proc/%.20s/ns/mnt", e->d_name);
        if (stat(path, &ns) < 0)
            continue;
        bool known = false; /* one read per mount namespace, not per process */
        for (size_t i = 0; i < n_seen; i++)
            known |= seen[i] == ns.st_ino;
        if (known)
            continue;
        if (n_seen < CQ_ARRAY_LEN(seen))
            seen[n_seen++] = ns.st_ino;
        snprintf(path, sizeof(path), "/proc/%.20s/mountinfo", e->d_name);
        cq_autofclose FILE *f = fopen(path, "re");
        cq_autofree char *line = NULL;
        size_t cap = 0;
        while (!used && f != NULL && getline(&line, &cap, f) > 0) {
            /* ID PARENT MAJ:MIN ROOT MOUNTPOINT ...: spaces in paths are escaped. */
            char *save = NULL, *field = strtok_r(line, " ", &save);
            for (int i = 1; field != NULL && i < 5; i++)
                field = strtok_r(NULL, " ", &save);
            used = field != NULL && strcmp(field, want) == 0;
        }
    }
    return used;
}

/* The digest of a trash directory rm-<digest>-XXXXXX, or NULL. */
static const char *trash_digest(const char *name, char out[CQ_RUNTIME_DIGEST_LEN + 1])
{
    if (strncmp(name, "rm-", 3) != 0 || strlen(name) < 3 + CQ_RUNTIME_DIGEST_LEN + 1 ||
        name[3 + CQ_RUNTIME_DIGEST_LEN] != '-')
        return NULL;
    memcpy(out, name + 3, CQ_RUNTIME_DIGEST_LEN);
    out[CQ_RUNTIME_DIGEST_LEN] = '\0';
    for (size_t i = 0; out[i]; i++)
        if (!isdigit_c(out[i]) && !(out[i] >= 'a' && out[i] <= 'f'))
            return NULL;
    return out;
}

/* Removes what killed builds and removals left in STORE/tmp/: a build directory nobody
 * holds the flock of (its build ended without cleaning up), and rm-* directories
 * (layers on their way out, removed under the store lock) that no sandbox uses any
 * more. */
static void sweep_stale(const char *store)
{
    cq_autoclose int lock = cq_runtime_store_lock(store, false, NULL);
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof(tmp), "%s/tmp", store);
    cq_autoclosedir DIR *d = lock >= 0 ? opendir(tmp) : NULL;
    struct dirent *e;
    while (d != NULL && (e = readdir(d)) != NULL) {
        bool build = strncmp(e->d_name, "build-", 6) == 0;
        if (!build && strncmp(e->d_name, "rm-", 3) != 0)
            continue;
        char path[PATH_MAX + NAME_MAX + 2];
        snprintf(path, sizeof(path), "%s/%s", tmp, e->d_name);
        cq_autoclose int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0 || (build && flock(fd, LOCK_EX | LOCK_NB) < 0))
            continue; /* a build under way */
        char digest[CQ_RUNTIME_DIGEST_LEN + 1];
        if (!build && trash_digest(e->d_name, digest) != NULL && layer_in_use(digest))
            continue; /* a sandbox still runs on it */
        rm_rf(path);
    }
}

static int store_init(const char *store, struct cq_error *err)
{
    static const char *const subdirs[] = {"layers", "names", "tmp"};
    /* 0755: the installers, unprivileged, work below tmp/. */
    if (mkdir_p(store, 0755, err) < 0)
        return cq_error_prefix(err, "store: ");
    for (size_t i = 0; i < CQ_ARRAY_LEN(subdirs); i++) {
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/%s", store, subdirs[i]);
        if (mkdir(path, 0755) < 0 && errno != EEXIST)
            return cq_error_sys(err, errno, "store: mkdir %s", path);
    }
    return 0;
}

int cq_runtime_set_name(const char *store, const char *name, const char *digest,
                        struct cq_error *err)
{
    char tmp[PATH_MAX], path[PATH_MAX];
    snprintf(tmp, sizeof(tmp), "%s/names/.%s.new", store, name);
    snprintf(path, sizeof(path), "%s/names/%s", store, name);
    cq_autoclose int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0)
        return cq_error_sys(err, errno, "create %s", tmp);
    if (dprintf(fd, "%s\n", digest) < 0 || fsync(fd) < 0)
        return cq_error_sys(err, errno, "write %s", tmp);
    if (rename(tmp, path) < 0)
        return cq_error_sys(err, errno, "rename %s", tmp);
    return 0;
}

static int is_digest(const char *s)
{
    size_t i = 0;
    for (; s[i]; i++)
        if (!isdigit_c(s[i]) && !(s[i] >= 'a' && s[i] <= 'f'))
            return 0;
    return i == CQ_RUNTIME_DIGEST_LEN;
}

int cq_runtime_lookup(const char *store, const char *name, char *digest_out, struct cq_error *err)
{
    store = cq_runtime_store_path(store);
    if (cq_runtime_name_check(name, err) < 0)
        return -1;
    char path[PATH_MAX], buf[128];
    snprintf(path, sizeof(path), "%s/names/%s", store, name);
    struct cq_error rerr;
    if (cq_read_file_at(AT_FDCWD, path, buf, sizeof(buf), &rerr) < 0)
        return rerr.code == ENOENT
                   ? cq_error_set(err, CQ_ENOTFOUND, "no runtime '%s' in the store %s", name, store)
                   : cq_error_set(err, rerr.code, "%s", rerr.msg);
    buf[strcspn(buf, "\n")] = '\0';
    if (!is_digest(buf))
        return cq_error_set(err, CQ_EINTERNAL, "%s: not a digest", path);
    memcpy(digest_out, buf, CQ_RUNTIME_DIGEST_LEN + 1);
    return 0;
}

/* --- building ------------------------------------------------------------------------- */

static int prepare(struct build *b, const char *store, const struct cq_runtime_build_opts *o,
                   struct cq_error *err)
{
    snprintf(b->dir, sizeof(b->dir), "%s/tmp/build-XXXXXX", store);
    {
        /* Made and locked under the store lock, which sweep_stale holds too: a sweep
         * never sees a build directory that is not locked yet. */
        cq_autoclose int lock = cq_runtime_store_lock(store, false, err);
        if (lock < 0)
            return -1;
        if (mkdtemp(b->dir) == NULL) {
            b->dir[0] = '\0';
            return cq_error_sys(err, errno, "mkdtemp %s/tmp", store);
        }
        b->dir_fd = open(b->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (b->dir_fd < 0 || flock(b->dir_fd, LOCK_EX | LOCK_NB) < 0)
            return cq_error_sys(err, errno, "lock %s", b->dir);
    }
    snprintf(b->layer, sizeof(b->layer), "%s/layer", b->dir);
    snprintf(b->log, sizeof(b->log), "%s/log", b->dir);
    b->uid = geteuid();
    b->gid = getegid();
    if (geteuid() == 0) {
        struct passwd *pw = getpwnam("nobody");
        if (pw == NULL)
            return cq_error_set(err, CQ_EINTERNAL, "no user nobody to run the installers as");
        b->uid = pw->pw_uid;
        b->gid = pw->pw_gid;
    }
    static const char *const subdirs[] = {"home", "layer", "wheelhouse"};
    for (size_t i = 0; i < CQ_ARRAY_LEN(subdirs); i++) {
        char path[PATH_MAX + 16];
        snprintf(path, sizeof(path), "%s/%s", b->dir, subdirs[i]);
        if (mkdir(path, 0755) < 0 || chown(path, b->uid, b->gid) < 0)
            return cq_error_sys(err, errno, "mkdir %s", path);
    }
    if (chmod(b->dir, 0755) < 0)
        return cq_error_sys(err, errno, "chmod %s", b->dir);
    if (o->wheelhouse == NULL)
        return 0;
    cq_autoclose int from = open(o->wheelhouse, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (from < 0)
        return cq_error_sys(err, errno, "--wheelhouse %s", o->wheelhouse);
    cq_autoclosedir DIR *d = fdopendir(dup(from));
    struct dirent *e;
    while (d != NULL && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' ||
            !(ends_with(e->d_name, ".whl") || ends_with(e->d_name, ".tgz") ||
              ends_with(e->d_name, ".tar.gz") || ends_with(e->d_name, ".zip")))
            continue;
        char to[PATH_MAX + NAME_MAX + 16];
        snprintf(to, sizeof(to), "%s/wheelhouse/%s", b->dir, e->d_name);
        if (copy_file(from, e->d_name, to, err) < 0)
            return -1;
    }
    return 0;
}

static int install_pip(struct build *b, const struct cq_runtime_spec *spec,
                       const struct cq_runtime_build_opts *o, struct cq_error *err)
{
    char target[PATH_MAX + 16], report[PATH_MAX + 16], links[PATH_MAX + 16];
    snprintf(target, sizeof(target), "%s/python", b->layer);
    snprintf(report, sizeof(report), "%s/home/report.json", b->dir);
    snprintf(links, sizeof(links), "%s/wheelhouse", b->dir);
    snprintf(b->log, sizeof(b->log), "%s/log-pip", b->dir); /* one log per installer */
    const char *argv[32 + CQ_RUNTIME_MAX_PACKAGES] = {
        PYTHON, "-I", "-m", "pip", "install", "--isolated", "--no-input",
        "--disable-pip-version-check", "--no-cache-dir", "--no-warn-script-location",
        /* Wheels only: building an sdist runs its setup.py on the host. */
        "--only-binary=:all:", "--target", target, "--report", report};
    size_t n = 15;
    if (o->wheelhouse != NULL) {
        argv[n++] = "--no-index";
        argv[n++] = "--find-links";
        argv[n++] = links;
    } else if (o->index_url != NULL) {
        argv[n++] = "--index-url";
        argv[n++] = o->index_url;
    }
    argv[n++] = "--"; /* requirements are never options, even if a check missed one */
    for (size_t i = 0; i < spec->n_pip; i++)
        argv[n++] = spec->pip[i];
    argv[n] = NULL;
    int status = run_installer(b, (char *const *)argv, err);
    if (status < 0)
        return -1;
    if (status != 0)
        return installer_failed(b, "pip install", status, err);
    return 0;
}

static int install_npm(struct build *b, const struct cq_runtime_spec *spec,
                       const struct cq_runtime_build_opts *o, struct cq_error *err)
{
    char prefix[PATH_MAX + 16];
    snprintf(prefix, sizeof(prefix), "%s/node", b->layer);
    snprintf(b->log, sizeof(b->log), "%s/log-npm", b->dir);
    if (mkdir(prefix, 0755) < 0 || chown(prefix, b->uid, b->gid) < 0)
        return cq_error_sys(err, errno, "mkdir %s", prefix);
    char *tarballs[CQ_RUNTIME_MAX_PACKAGES] = {0};
    const char *argv[16 + CQ_RUNTIME_MAX_PACKAGES] = {
        NPM, "install", "--prefix", prefix,
        /* Install scripts (preinstall, install, postinstall) are arbitrary code. */
        "--ignore-scripts", "--no-audit", "--no-fund", "--no-update-notifier", "--save-exact",
        "--loglevel=error"};
    size_t n = 10;
    int rc = 0;
    if (o->wheelhouse != NULL)
        argv[n++] = "--offline";
    for (size_t i = 0; i < spec->n_npm && rc == 0; i++) {
        if (o->wheelhouse != NULL) {
            rc = npm_tarball(b, spec->npm[i], &tarballs[i], err);
            argv[n++] = tarballs[i];
        } else {
            argv[n++] = spec->npm[i];
        }
    }
    argv[n] = NULL;
    if (rc == 0) {
        int status = run_installer(b, (char *const *)argv, err);
        rc = status < 0 ? -1 : status != 0 ? installer_failed(b, "npm install", status, err) : 0;
    }
    for (size_t i = 0; i < spec->n_npm; i++)
        free(tarballs[i]);
    return rc;
}

static int write_manifest(const struct build *b, const struct cq_runtime_spec *spec,
                          json_t *artifacts, const char *digest, struct cq_error *err)
{
    json_t *spec_obj = json_loads(spec->canonical, 0, NULL);
    json_t *m =
        json_pack("{s:s, s:s, s:o, s:O, s:s, s:s}", "digest", digest, "name", spec->name, "spec",
                  spec_obj, "artifacts", artifacts, "python_path", spec->n_pip > 0 ? "python" : "",
                  "node_path", spec->n_npm > 0 ? "node/node_modules" : "");
    if (m == NULL)
        return cq_error_set(err, CQ_EINTERNAL, "manifest: cannot build the JSON");
    char path[PATH_MAX + 16];
    snprintf(path, sizeof(path), "%s/manifest.json", b->layer);
    int rc = json_dump_file(m, path, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(m);
    if (rc < 0)
        return cq_error_sys(err, errno, "write %s", path);
    return 0;
}

static int build_in(struct build *b, const char *store, const struct cq_runtime_spec *spec,
                    const struct cq_runtime_build_opts *o, char *digest, struct cq_error *err)
{
    if (prepare(b, store, o, err) < 0)
        return -1;
    json_t *artifacts = json_array();
    int rc = 0;
    if (spec->n_pip > 0 &&
        (install_pip(b, spec, o, err) < 0 || pip_artifacts(b, artifacts, err) < 0))
        rc = -1;
    if (rc == 0 && spec->n_npm > 0 &&
        (install_npm(b, spec, o, err) < 0 || npm_artifacts(b, artifacts, err) < 0))
        rc = -1;
    if (rc == 0) {
        size_t n = json_array_size(artifacts), i;
        char **lines = calloc(n + 1, sizeof(char *));
        json_t *a;
        json_array_foreach(artifacts, i, a)
        {
            const char *hash = json_string_value(json_object_get(a, "sha256"));
            if (hash == NULL)
                hash = json_string_value(json_object_get(a, "integrity"));
            if (asprintf(&lines[i], "%s %s %s %s", json_string_value(json_object_get(a, "kind")),
                         json_string_value(json_object_get(a, "name")),
                         json_string_value(json_object_get(a, "version")), hash) < 0)
                lines[i] = NULL;
        }
        rc = cq_runtime_digest(spec->canonical, (const char *const *)lines, n, digest, err);
        for (i = 0; i < n; i++)
            free(lines[i]);
        free(lines);
    }
    if (rc == 0)
        rc = write_manifest(b, spec, artifacts, digest, err);
    json_decref(artifacts);
    if (rc < 0)
        return -1;
    owner_uid = geteuid();
    owner_gid = getegid();
    installer_uid = b->uid;
    if (nftw(b->layer, own_entry, 32, FTW_PHYS) != 0)
        return cq_error_sys(err, errno, "hand the layer %s to its owner", b->layer);
    return 0;
}

static int drop_unused_layer(const char *store, const char *digest, struct cq_error *err);

int cq_runtime_build(const struct cq_runtime_spec *spec, const struct cq_runtime_build_opts *o,
                     char *digest, struct cq_error *err)
{
    const char *given = cq_runtime_store_path(o->store);
    if (cq_runtime_language_check(spec, err) < 0 || store_init(given, err) < 0)
        return -1;
    /* Absolute: the installers run in the build directory. */
    char store[PATH_MAX];
    if (realpath(given, store) == NULL)
        return cq_error_sys(err, errno, "store %s", given);
    sweep_stale(store);
    struct build b;
    memset(&b, 0, sizeof(b));
    b.dir_fd = -1;
    int rc = build_in(&b, store, spec, o, digest, err);
    if (rc == 0) {
        cq_autoclose int lock = cq_runtime_store_lock(store, false, err);
        char final[PATH_MAX];
        snprintf(final, sizeof(final), "%s/layers/%s", store, digest);
        if (lock < 0) {
            rc = -1;
        } else if (rename(b.layer, final) < 0 && errno != EEXIST && errno != ENOTEMPTY) {
            /* EEXIST/ENOTEMPTY: the same digest was built before (or by a concurrent
             * build): the same packages, so the existing layer is the result. */
            rc = cq_error_sys(err, errno, "rename %s to %s", b.layer, final);
        } else {
            char old[CQ_RUNTIME_DIGEST_LEN + 1];
            bool had = cq_runtime_lookup(store, spec->name, old, NULL) == 0;
            rc = cq_runtime_set_name(store, spec->name, digest, err);
            /* The name's previous layer goes when nothing else names it. */
            if (rc == 0 && had && strcmp(old, digest) != 0)
                rc = drop_unused_layer(store, old, err);
        }
    }
    if (b.dir[0] != '\0')
        rm_rf(b.dir);
    if (b.dir_fd >= 0)
        close(b.dir_fd);
    return rc;
}

/* --- reading and removing --------------------------------------------------------------- */

int cq_runtime_manifest(const char *store, const char *name, char **text, struct cq_error *err)
{
    store = cq_runtime_store_path(store);
    char digest[CQ_RUNTIME_DIGEST_LEN + 1];
    if (cq_runtime_lookup(store, name, digest, err) < 0)
        return -1;
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/layers/%s/manifest.json", store, digest);
    cq_autoclose int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return cq_error_sys(err, errno, "runtime '%s': open %s", name, path);
    size_t len;
    return cq_read_fd_limit(fd, MANIFEST_MAX, (uint8_t **)text, &len, err);
}

struct name_entry {
    char name[CQ_RUNTIME_NAME_MAX + 1];
    char digest[CQ_RUNTIME_DIGEST_LEN + 1];
};

static int cmp_entry(const void *a, const void *b)
{
    return strcmp(((const struct name_entry *)a)->name, ((const struct name_entry *)b)->name);
}

/* The names of the store, sorted; *n of them in a malloc'd array. */
static int read_names(const char *store, struct name_entry **out, size_t *n, struct cq_error *err)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/names", store);
    *out = NULL;
    *n = 0;
    cq_autoclosedir DIR *d = opendir(path);
    if (d == NULL)
        return errno == ENOENT ? 0 : cq_error_sys(err, errno, "opendir %s", path);
    struct dirent *e;
    size_t cap = 0;
    while ((e = readdir(d)) != NULL) {
        struct name_entry ent;
        if (e->d_name[0] == '.' || strlen(e->d_name) > CQ_RUNTIME_NAME_MAX)
            continue;
        snprintf(ent.name, sizeof(ent.name), "%s", e->d_name);
        if (cq_runtime_lookup(store, ent.name, ent.digest, NULL) < 0)
            continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            struct name_entry *grown = realloc(*out, cap * sizeof(**out));
            if (grown == NULL) {
                free(*out);
                return cq_error_sys(err, ENOMEM, "names");
            }
            *out = grown;
        }
        (*out)[(*n)++] = ent;
    }
    if (*n > 0)
        qsort(*out, *n, sizeof(**out), cmp_entry);
    return 0;
}

int cq_runtime_list(const char *store, void (*fn)(void *ctx, const char *name, const char *digest),
                    void *ctx, struct cq_error *err)
{
    struct name_entry *names;
    size_t n;
    if (read_names(cq_runtime_store_path(store), &names, &n, err) < 0)
        return -1;
    for (size_t i = 0; i < n; i++)
        fn(ctx, names[i].name, names[i].digest);
    free(names);
    return 0;
}

/* Removes the layer of digest unless a name points to it. Called under the store lock. */
static int drop_unused_layer(const char *store, const char *digest, struct cq_error *err)
{
    struct name_entry *names;
    size_t n;
    if (read_names(store, &names, &n, err) < 0)
        return -1;
    bool shared = false;
    for (size_t i = 0; i < n; i++)
        shared |= strcmp(names[i].digest, digest) == 0;
    free(names);
    if (shared)
        return 0;
    /* Out of layers/ in one rename, then deleted: a reader never sees half a layer.
     * One that a sandbox runs on stays in tmp/ until a later build's sweep finds it
     * unused (layer_in_use). */
    char layer[PATH_MAX], trash[PATH_MAX];
    snprintf(layer, sizeof(layer), "%s/layers/%s", store, digest);
    snprintf(trash, sizeof(trash), "%s/tmp/rm-%s-XXXXXX", store, digest);
    if (mkdtemp(trash) == NULL)
        return cq_error_sys(err, errno, "mkdtemp %s", trash);
    char dest[PATH_MAX + 8];
    snprintf(dest, sizeof(dest), "%s/layer", trash);
    int rc = 0;
    if (rename(layer, dest) < 0 && errno != ENOENT)
        rc = cq_error_sys(err, errno, "rename %s", layer);
    if (rc < 0 || !layer_in_use(digest))
        rm_rf(trash);
    return rc;
}

int cq_runtime_remove(const char *store, const char *name, struct cq_error *err)
{
    store = cq_runtime_store_path(store);
    char digest[CQ_RUNTIME_DIGEST_LEN + 1];
    if (cq_runtime_lookup(store, name, digest, err) < 0)
        return -1;
    /* Again under the lock: a build may have pointed the name elsewhere meanwhile. */
    cq_autoclose int lock = cq_runtime_store_lock(store, false, err);
    if (lock < 0 || cq_runtime_lookup(store, name, digest, err) < 0)
        return -1;
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/names/%s", store, name);
    if (unlink(path) < 0)
        return cq_error_sys(err, errno, "unlink %s", path);
    return drop_unused_layer(store, digest, err);
}

int cq_runtime_sandbox_binds(const char *store, const char *name, struct cq_runtime_sandbox *rs,
                             struct cq_error *err)
{
    memset(rs, 0, sizeof(*rs));
    store = cq_runtime_store_path(store);
    char digest[CQ_RUNTIME_DIGEST_LEN + 1];
    if (cq_runtime_lookup(store, name, digest, err) < 0)
        return -1;
    char layer[PATH_MAX];
    snprintf(layer, sizeof(layer), "%s/layers/%s", store, digest);
    if (realpath(layer, rs->host_path) == NULL)
        return cq_error_sys(err, errno, "runtime '%s': layer %s", name, layer);
    snprintf(rs->sandbox_path, sizeof(rs->sandbox_path), "%s/%s", CQ_RUNTIME_LAYERS_DIR, digest);
    rs->bind.host_path = rs->host_path;
    rs->bind.sandbox_path = rs->sandbox_path;

    cq_autofree char *text = NULL;
    if (cq_runtime_manifest(store, name, &text, err) < 0)
        return -1;
    json_t *m = json_loads(text, 0, NULL);
    cq_autofree char *spec_text = m ? json_dumps(json_object_get(m, "spec"), JSON_COMPACT) : NULL;
    const char *py = json_string_value(json_object_get(m, "python_path"));
    const char *node = json_string_value(json_object_get(m, "node_path"));
    struct cq_runtime_spec spec;
    int rc = spec_text != NULL
                 ? cq_runtime_spec_parse(spec_text, strlen(spec_text), &spec, err)
                 : cq_error_set(err, CQ_EINTERNAL, "runtime '%s': bad manifest", name);
    if (rc == 0) {
        rs->env = calloc(spec.n_env + 3, sizeof(char *));
        if (rs->env == NULL)
            rc = cq_error_sys(err, ENOMEM, "runtime env");
        if (rc == 0 && py != NULL && py[0] != '\0' &&
            asprintf(&rs->env[rs->n_env++], "PYTHONPATH=%s/%s", rs->sandbox_path, py) < 0)
            rc = cq_error_sys(err, ENOMEM, "runtime env");
        if (rc == 0 && node != NULL && node[0] != '\0' &&
            asprintf(&rs->env[rs->n_env++], "NODE_PATH=%s/%s", rs->sandbox_path, node) < 0)
            rc = cq_error_sys(err, ENOMEM, "runtime env");
        for (size_t i = 0; rc == 0 && i < spec.n_env; i++)
            if ((rs->env[rs->n_env++] = strdup(spec.env[i])) == NULL)
                rc = cq_error_sys(err, ENOMEM, "runtime env");
        cq_runtime_spec_free(&spec);
    }
    json_decref(m);
    if (rc < 0)
        cq_runtime_sandbox_free(rs);
    return rc;
}

void cq_runtime_sandbox_free(struct cq_runtime_sandbox *rs)
{
    for (size_t i = 0; rs->env != NULL && i < rs->n_env; i++)
        free(rs->env[i]);
    free(rs->env);
    rs->env = NULL;
    rs->n_env = 0;
}
