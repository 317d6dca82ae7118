/* runtime/layer.c - a layer as one byte stream (runtime/layer.h has the format), and
 * installing a stream into the store.
 *
 * Security: a stream comes from the fleet's Redis, written by another host. Unpacking
 * creates nothing but directories, regular files and links below a directory of its
 * own, and every name is opened relative to its parent's descriptor with O_NOFOLLOW,
 * one component at a time: no entry can be written through a link, so a link in the
 * stream cannot redirect a later entry out of the tree. A link's target must be
 * relative, and of the form "../" * k followed by plain names, with k at most the
 * depth of the link's directory: resolved from a real directory of the tree (its
 * parents were opened without following links), the k steps up stay inside, and the
 * plain names after them only descend (through links checked the same way), so no
 * chain of links climbs out either. Modes keep permission bits only, without
 * setuid/setgid and without write bits for group and others; owners are not
 * restored (the files belong to whoever unpacks). */
#define _GNU_SOURCE
#include "runtime/layer.h"
#include "runtime/internal.h"
#include "common/cleanup.h"
#include "common/fileutil.h"
#include "runtime/runtime.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define HEADER_LEN   (8 + CQ_RUNTIME_DIGEST_LEN + 1)
#define PATH_MAX_LEN 4095
#define MAX_DEPTH    128

/* --- the stream being written ---------------------------------------------------------- */

struct buf {
    uint8_t *p;
    size_t len, cap;
    uint64_t max;
};

/* Room for n more bytes at b->p + b->len. */
static int reserve(struct buf *b, uint64_t n, struct cq_error *err)
{
    if (b->len + n > b->max)
        return cq_error_set(err, CQ_ELIMIT, "the packed layer is larger than %llu bytes",
                            (unsigned long long)b->max);
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 65536;
        while (cap < b->len + n)
            cap *= 2;
        uint8_t *grown = realloc(b->p, cap);
        if (grown == NULL)
            return cq_error_sys(err, ENOMEM, "pack the layer");
        b->p = grown;
        b->cap = cap;
    }
    return 0;
}

static int put(struct buf *b, const void *data, size_t n, struct cq_error *err)
{
    if (reserve(b, n, err) < 0)
        return -1;
    memcpy(b->p + b->len, data, n);
    b->len += n;
    return 0;
}

static int put_be(struct buf *b, uint64_t v, int bytes, struct cq_error *err)
{
    uint8_t out[8];
    for (int i = 0; i < bytes; i++)
        out[i] = (uint8_t)(v >> (8 * (bytes - 1 - i)));
    return put(b, out, (size_t)bytes, err);
}

static int put_head(struct buf *b, char type, mode_t mode, const char *path, struct cq_error *err)
{
    size_t n = strlen(path);
    if (n > PATH_MAX_LEN)
        return cq_error_set(err, ENAMETOOLONG, "layer: %.64s...: path too long", path);
    /* The bits unpacking keeps, so a tree unpacked packs to the same bytes again. */
    if (put(b, &type, 1, err) < 0 || put_be(b, mode & 0755, 4, err) < 0 ||
        put_be(b, n, 2, err) < 0 || put(b, path, n, err) < 0)
        return -1;
    return 0;
}

/* --- link targets ------------------------------------------------------------------------ */

/* Whether target, a link's in a directory depth levels below the root, stays in the tree
 * (the header's comment says why this shape is enough). */
static bool target_ok(const char *target, int depth)
{
    if (target[0] == '\0' || target[0] == '/' || strlen(target) > PATH_MAX_LEN)
        return false;
    bool named = false;
    for (const char *p = target; *p;) {
        size_t n = strcspn(p, "/");
        if (n == 0 || (n == 1 && p[0] == '.'))
            ; /* "a//b" and "./" name nothing */
        else if (n == 2 && p[0] == '.' && p[1] == '.') {
            if (named || --depth < 0)
                return false;
        } else {
            named = true;
        }
        p += n;
        if (*p == '/')
            p++;
    }
    return true;
}

static int depth_of(const char *path)
{
    int depth = 0;
    for (const char *p = path; *p; p++)
        depth += *p == '/';
    return depth; /* of the entry's directory: "a/b" lives one below the root */
}

/* --- packing ------------------------------------------------------------------------------ */

static int cmp_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The names of a directory (sorted, so the same tree packs to the same bytes). */
static int names_of(int dirfd, char ***out, size_t *n, struct cq_error *err)
{
    *out = NULL;
    *n = 0;
    int fd = dup(dirfd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (d == NULL) {
        if (fd >= 0)
            close(fd);
        return cq_error_sys(err, errno, "layer: read a directory");
    }
    size_t cap = 0;
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 32;
            char **grown = realloc(*out, cap * sizeof(char *));
            if (grown == NULL) {
                rc = cq_error_sys(err, ENOMEM, "layer: read a directory");
                break;
            }
            *out = grown;
        }
        if (((*out)[*n] = strdup(e->d_name)) == NULL) {
            rc = cq_error_sys(err, ENOMEM, "layer: read a directory");
            break;
        }
        (*n)++;
    }
    closedir(d);
    if (*n > 0)
        qsort(*out, *n, sizeof(char *), cmp_name);
    return rc;
}

static int pack_file(struct buf *b, int dirfd, const char *name, const char *path,
                     const struct stat *st, struct cq_error *err)
{
    cq_autoclose int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    struct stat now;
    if (fd < 0 || fstat(fd, &now) < 0)
        return cq_error_sys(err, errno, "layer: open %s", path);
    if (!S_ISREG(now.st_mode) || now.st_size != st->st_size)
        return cq_error_set(err, CQ_EINVALID, "layer: %s changed while it was packed", path);
    if (put_head(b, 'f', st->st_mode, path, err) < 0 ||
        put_be(b, (uint64_t)st->st_size, 8, err) < 0)
        return -1;
    size_t want = (size_t)st->st_size;
    if (reserve(b, want, err) < 0)
        return -1;
    size_t got = 0;
    while (got < want) {
        ssize_t r = read(fd, b->p + b->len + got, want - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return r < 0 ? cq_error_sys(err, errno, "layer: read %s", path)
                         : cq_error_set(err, CQ_EINVALID, "layer: %s shrank while it was packed",
                                        path);
        got += (size_t)r;
    }
    b->len += want;
    return 0;
}

static int pack_walk(struct buf *b, int dirfd, const char *rel, int depth, struct cq_error *err)
{
    if (depth > MAX_DEPTH)
        return cq_error_set(err, CQ_EINVALID, "layer: %s: nested too deep", rel);
    char **names;
    size_t n;
    if (names_of(dirfd, &names, &n, err) < 0)
        return -1;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        char path[PATH_MAX_LEN + 2];
        if (snprintf(path, sizeof(path), "%s%s%s", rel, rel[0] ? "/" : "", names[i]) >=
            (int)sizeof(path)) {
            rc = cq_error_set(err, ENAMETOOLONG, "layer: %s/%s: path too long", rel, names[i]);
            break;
        }
        struct stat st;
        if (fstatat(dirfd, names[i], &st, AT_SYMLINK_NOFOLLOW) < 0) {
            rc = cq_error_sys(err, errno, "layer: stat %s", path);
        } else if (S_ISDIR(st.st_mode)) {
            int sub = openat(dirfd, names[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (sub < 0)
                rc = cq_error_sys(err, errno, "layer: open %s", path);
            else {
                rc = put_head(b, 'd', st.st_mode, path, err);
                if (rc == 0)
                    rc = pack_walk(b, sub, path, depth + 1, err);
                close(sub);
            }
        } else if (S_ISREG(st.st_mode)) {
            rc = pack_file(b, dirfd, names[i], path, &st, err);
        } else if (S_ISLNK(st.st_mode)) {
            char target[PATH_MAX_LEN + 2];
            ssize_t tl = readlinkat(dirfd, names[i], target, sizeof(target) - 1);
            if (tl < 0)
                rc = cq_error_sys(err, errno, "layer: readlink %s", path);
            else {
                target[tl] = '\0';
                if (!target_ok(target, depth_of(path)))
                    rc = cq_error_set(err, CQ_EINVALID,
                                      "layer: the link %s -> %s points out of the layer", path,
                                      target);
                else if ((rc = put_head(b, 'l', 0777, path, err)) == 0 &&
                         (rc = put_be(b, (uint64_t)tl, 2, err)) == 0)
                    rc = put(b, target, (size_t)tl, err);
            }
        } else {
            rc = cq_error_set(err, CQ_EINVALID,
                              "layer: %s is a device, fifo or socket: a layer holds only "
                              "directories, files and links",
                              path);
        }
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return rc;
}

static bool is_digest(const char *s)
{
    size_t n = strspn(s, "0123456789abcdef");
    return n == CQ_RUNTIME_DIGEST_LEN && s[n] == '\0';
}

int cq_layer_pack_dir(const char *dir, const char *digest, uint64_t max, uint8_t **out, size_t *len,
                      struct cq_error *err)
{
    *out = NULL;
    *len = 0;
    if (!is_digest(digest))
        return cq_error_set(err, CQ_EINVALID, "layer: '%s' is not a digest", digest);
    cq_autoclose int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return cq_error_sys(err, errno, "layer: open %s", dir);
    struct buf b = {.max = max};
    int rc = put(&b, CQ_LAYER_MAGIC, 8, err);
    if (rc == 0)
        rc = put(&b, digest, CQ_RUNTIME_DIGEST_LEN, err);
    if (rc == 0)
        rc = put(&b, "\n", 1, err);
    if (rc == 0)
        rc = pack_walk(&b, fd, "", 0, err);
    if (rc == 0)
        rc = put(&b, "E", 1, err);
    if (rc < 0) {
        free(b.p);
        return -1;
    }
    *out = b.p;
    *len = b.len;
    return 0;
}

/* --- unpacking ------------------------------------------------------------------------------ */

struct reader {
    const uint8_t *p;
    size_t len, at;
};

static bool get(struct reader *r, void *out, size_t n)
{
    if (r->len - r->at < n)
        return false;
    memcpy(out, r->p + r->at, n);
    r->at += n;
    return true;
}

static bool get_be(struct reader *r, int bytes, uint64_t *v)
{
    uint8_t in[8];
    if (!get(r, in, (size_t)bytes))
        return false;
    *v = 0;
    for (int i = 0; i < bytes; i++)
        *v = (*v << 8) | in[i];
    return true;
}

/* Whether path is relative, of plain components: no "", "." or ".." component, no NUL. */
static bool path_ok(const char *path, size_t n)
{
    if (n == 0 || memchr(path, '\0', n) != NULL || path[0] == '/')
        return false;
    for (size_t i = 0; i < n;) {
        size_t c = 0;
        while (i + c < n && path[i + c] != '/')
            c++;
        if (c == 0 || (c == 1 && path[i] == '.') ||
            (c == 2 && path[i] == '.' && path[i + 1] == '.'))
            return false;
        i += c + 1;
        if (i == n) /* a trailing '/' */
            return false;
    }
    return true;
}

/* The directory that holds path, opened from root one component at a time without
 * following links; *name points to path's last component. */
static int open_parent(int root, char *path, const char **name, struct cq_error *err)
{
    char *slash = strrchr(path, '/');
    if (slash == NULL) {
        *name = path;
        int fd = dup(root);
        return fd >= 0 ? fd : cq_error_sys(err, errno, "dup");
    }
    *slash = '\0';
    *name = slash + 1;
    int fd = dup(root);
    char *save = NULL;
    for (char *c = strtok_r(path, "/", &save); c != NULL && fd >= 0;
         c = strtok_r(NULL, "/", &save)) {
        int next = openat(fd, c, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (next < 0)
            cq_error_sys(err, errno,
                         "the layer's stream names a path through '%s', which is not a "
                         "directory of the layer (a link, or missing)",
                         c);
        close(fd);
        fd = next;
    }
    return fd;
}

static int unpack_entry(struct reader *r, int root, char type, struct cq_error *err)
{
    uint64_t mode, n;
    char path[PATH_MAX_LEN + 1];
    if (!get_be(r, 4, &mode) || !get_be(r, 2, &n) || n > PATH_MAX_LEN || !get(r, path, (size_t)n))
        return cq_error_set(err, CQ_EINVALID, "the layer's stream is truncated");
    path[n] = '\0';
    if (!path_ok(path, (size_t)n))
        return cq_error_set(err, CQ_EINVALID,
                            "the layer's stream holds the path '%s' (absolute, empty, or with "
                            ". or .. in it): refused",
                            path);
    int depth = depth_of(path);
    /* A directory's entries are one level deeper: at MAX_DEPTH it would be one that
     * pack_walk() refuses to descend into, so that the tree would not pack again. */
    if (depth > MAX_DEPTH || (type == 'd' && depth == MAX_DEPTH))
        return cq_error_set(err, CQ_EINVALID, "the layer's stream nests %s too deep", path);
    char shown[PATH_MAX_LEN + 1];
    memcpy(shown, path, (size_t)n + 1);
    const char *name;
    cq_autoclose int dir = open_parent(root, path, &name, err);
    if (dir < 0)
        return cq_error_prefix(err, "%s", shown);
    /* Permission bits only; no setuid/setgid/sticky, no write for group and others. */
    mode_t perm = (mode_t)mode & 0755;
    switch (type) {
    case 'd':
        if (mkdirat(dir, name, 0700) < 0)
            return cq_error_sys(err, errno, "layer: mkdir %s", shown);
        if (fchmodat(dir, name, perm | 0700, AT_SYMLINK_NOFOLLOW) < 0 && errno != ENOTSUP)
            return cq_error_sys(err, errno, "layer: chmod %s", shown);
        return 0;
    case 'f': {
        uint64_t size;
        if (!get_be(r, 8, &size) || r->len - r->at < size)
            return cq_error_set(err, CQ_EINVALID, "the layer's stream is truncated (in %s)", shown);
        cq_autoclose int fd =
            openat(dir, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, perm | 0600);
        if (fd < 0)
            return cq_error_sys(err, errno, "layer: create %s", shown);
        for (uint64_t done = 0; done < size;) {
            ssize_t w = write(fd, r->p + r->at + done, (size_t)(size - done));
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0)
                return cq_error_sys(err, w < 0 ? errno : EIO, "layer: write %s", shown);
            done += (uint64_t)w;
        }
        r->at += (size_t)size;
        if (fchmod(fd, perm) < 0)
            return cq_error_sys(err, errno, "layer: chmod %s", shown);
        return 0;
    }
    case 'l': {
        uint64_t tl;
        char target[PATH_MAX_LEN + 1];
        if (!get_be(r, 2, &tl) || tl > PATH_MAX_LEN || !get(r, target, (size_t)tl))
            return cq_error_set(err, CQ_EINVALID, "the layer's stream is truncated (in %s)", shown);
        target[tl] = '\0';
        if (memchr(target, '\0', (size_t)tl) != NULL || !target_ok(target, depth))
            return cq_error_set(err, CQ_EINVALID,
                                "the layer's stream holds the link %s -> %s, which points out "
                                "of the layer: refused",
                                shown, target);
        if (symlinkat(target, dir, name) < 0)
            return cq_error_sys(err, errno, "layer: symlink %s", shown);
        return 0;
    }
    default:
        return cq_error_set(err, CQ_EINVALID,
                            "the layer's stream holds %s of type '%c': a layer holds only "
                            "directories, files and links (no devices, fifos or sockets): "
                            "refused",
                            shown, type >= 0x20 && type < 0x7f ? type : '?');
    }
}

int cq_layer_unpack_dir(const uint8_t *data, size_t len, const char *digest, const char *dir,
                        struct cq_error *err)
{
    struct reader r = {.p = data, .len = len};
    char head[HEADER_LEN];
    if (!get(&r, head, HEADER_LEN) || memcmp(head, CQ_LAYER_MAGIC, 8) != 0 ||
        head[HEADER_LEN - 1] != '\n')
        return cq_error_set(err, CQ_EINVALID, "not a codeq layer stream");
    if (digest != NULL && memcmp(head + 8, digest, CQ_RUNTIME_DIGEST_LEN) != 0)
        return cq_error_set(err, CQ_EINVALID, "the layer's stream is of the layer %.64s, not %s",
                            head + 8, digest);
    cq_autoclose int root = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (root < 0)
        return cq_error_sys(err, errno, "layer: open %s", dir);
    for (;;) {
        char type;
        if (!get(&r, &type, 1))
            return cq_error_set(err, CQ_EINVALID, "the layer's stream is truncated (no end)");
        if (type == 'E')
            break;
        if (unpack_entry(&r, root, type, err) < 0)
            return -1;
    }
    if (r.at != r.len)
        return cq_error_set(err, CQ_EINVALID, "the layer's stream has bytes after its end");
    return 0;
}

/* --- the store ------------------------------------------------------------------------------ */

int cq_layer_pack(const char *store, const char *name, uint64_t max, char *digest_out,
                  uint8_t **out, size_t *len, struct cq_error *err)
{
    store = cq_runtime_store_path(store);
    if (cq_runtime_lookup(store, name, digest_out, err) < 0)
        return -1;
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s/layers/%s", store, digest_out);
    return cq_layer_pack_dir(dir, digest_out, max, out, len, err);
}

/* The digest the manifest's spec and artifacts hash to (as cq_runtime_build computed
 * it), which must be the one the layer is installed as. */
static int check_manifest(const char *layer, const char *digest, struct cq_error *err)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/manifest.json", layer);
    json_error_t jerr;
    json_t *m = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (m == NULL)
        return cq_error_set(err, CQ_EINVALID, "layer %s: manifest.json: %s", digest, jerr.text);
    const char *said = json_string_value(json_object_get(m, "digest"));
    json_t *artifacts = json_object_get(m, "artifacts");
    char *spec_text = json_dumps(json_object_get(m, "spec"), JSON_COMPACT);
    int rc = 0;
    if (said == NULL || strcmp(said, digest) != 0 || spec_text == NULL ||
        !json_is_array(artifacts)) {
        rc = cq_error_set(err, CQ_EINVALID, "layer %s: its manifest is of another layer", digest);
    }
    struct cq_runtime_spec spec;
    bool parsed = false;
    if (rc == 0) {
        rc = cq_runtime_spec_parse(spec_text, strlen(spec_text), &spec, err);
        parsed = rc == 0;
    }
    size_t n = json_array_size(artifacts);
    char **lines = rc == 0 ? calloc(n + 1, sizeof(char *)) : NULL;
    if (rc == 0 && lines == NULL)
        rc = cq_error_sys(err, ENOMEM, "layer manifest");
    for (size_t i = 0; rc == 0 && i < n; i++) {
        json_t *a = json_array_get(artifacts, i);
        const char *hash = json_string_value(json_object_get(a, "sha256"));
        if (hash == NULL)
            hash = json_string_value(json_object_get(a, "integrity"));
        const char *kind = json_string_value(json_object_get(a, "kind"));
        const char *aname = json_string_value(json_object_get(a, "name"));
        const char *version = json_string_value(json_object_get(a, "version"));
        if (kind == NULL || aname == NULL || version == NULL || hash == NULL)
            rc = cq_error_set(err, CQ_EINVALID,
                              "layer %s: an artifact of its manifest lacks a field", digest);
        else if (asprintf(&lines[i], "%s %s %s %s", kind, aname, version, hash) < 0) {
            lines[i] = NULL;
            rc = cq_error_sys(err, ENOMEM, "layer manifest");
        }
    }
    char computed[CQ_RUNTIME_DIGEST_LEN + 1];
    if (rc == 0 &&
        cq_runtime_digest(spec.canonical, (const char *const *)lines, n, computed, err) < 0)
        rc = -1;
    if (rc == 0 && strcmp(computed, digest) != 0)
        rc = cq_error_set(err, CQ_EINVALID,
                          "layer %s: its manifest's spec and artifacts hash to %s: refused", digest,
                          computed);
    for (size_t i = 0; lines != NULL && i < n; i++)
        free(lines[i]);
    free(lines);
    if (parsed)
        cq_runtime_spec_free(&spec);
    free(spec_text);
    json_decref(m);
    return rc;
}

static int install_in(const char *store, const char *name, const char *digest, const uint8_t *data,
                      size_t len, const char *dir, struct cq_error *err)
{
    char layer[PATH_MAX + 8];
    snprintf(layer, sizeof(layer), "%s/layer", dir);
    if (mkdir(layer, 0755) < 0)
        return cq_error_sys(err, errno, "mkdir %s", layer);
    if (cq_layer_unpack_dir(data, len, digest, layer, err) < 0 ||
        check_manifest(layer, digest, err) < 0)
        return cq_error_prefix(err, "runtime '%s'", name);
    cq_autoclose int lock = cq_runtime_store_lock(store, false, err);
    if (lock < 0)
        return -1;
    char final[PATH_MAX];
    snprintf(final, sizeof(final), "%s/layers/%s", store, digest);
    /* EEXIST/ENOTEMPTY: the store has this layer already (a build here, or another
     * install): the same digest, the same layer. */
    if (rename(layer, final) < 0 && errno != EEXIST && errno != ENOTEMPTY)
        return cq_error_sys(err, errno, "rename %s to %s", layer, final);
    return cq_runtime_set_name(store, name, digest, err);
}

int cq_layer_install(const char *store, const char *name, const char *digest, const uint8_t *data,
                     size_t len, struct cq_error *err)
{
    store = cq_runtime_store_path(store);
    if (cq_runtime_name_check(name, err) < 0)
        return -1;
    if (!is_digest(digest))
        return cq_error_set(err, CQ_EINVALID, "layer: '%s' is not a digest", digest);
    static const char *const subdirs[] = {"", "/layers", "/names", "/tmp"};
    for (size_t i = 0; i < CQ_ARRAY_LEN(subdirs); i++) {
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s%s", store, subdirs[i]);
        if (mkdir(path, 0755) < 0 && errno != EEXIST)
            return cq_error_sys(err, errno, "store: mkdir %s", path);
    }
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s/tmp/build-XXXXXX", store);
    int rc;
    cq_autoclose int dir_fd = -1;
    {
        /* Made and locked under the store lock, as a build's: the store's sweep of
         * leftovers (runtime/store.c) skips a directory whose flock is held. */
        cq_autoclose int lock = cq_runtime_store_lock(store, false, err);
        if (lock < 0)
            return -1;
        if (mkdtemp(dir) == NULL)
            return cq_error_sys(err, errno, "mkdtemp %s", dir);
        dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dir_fd < 0 || flock(dir_fd, LOCK_EX | LOCK_NB) < 0)
            rc = cq_error_sys(err, errno, "lock %s", dir);
        else
            rc = 0;
    }
    if (rc == 0)
        rc = install_in(store, name, digest, data, len, dir, err);
    struct cq_error ignored; /* a leftover is swept with the store's others */
    (void)cq_remove_tree(dir, &ignored);
    return rc;
}
