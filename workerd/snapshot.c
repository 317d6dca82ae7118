/* workerd/snapshot.c - keeps a session's workspace files in Redis, so that the
 * session survives the loss of its worker.
 *
 * After a request that may have changed files, the workspace is scanned (names, sizes,
 * modification times: no contents) and compared with the last saved state (by
 * cq_manifest_diff, which does no I/O); only files that changed are read and written,
 * each under the session's fence. */
#define _GNU_SOURCE
#include "workerd/snapshot.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void cq_manifest_free(struct cq_manifest *m)
{
    for (size_t i = 0; i < m->n; i++)
        free(m->entries[i].path);
    free(m->entries);
    memset(m, 0, sizeof(*m));
}

int cq_manifest_add(struct cq_manifest *m, const char *path, uint64_t size, int64_t mtime_ns,
                    struct cq_error *err)
{
    if (m->n == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 16;
        struct cq_manifest_entry *e = realloc(m->entries, cap * sizeof(*e));
        if (e == NULL)
            return cq_error_sys(err, ENOMEM, "list %s", path);
        m->entries = e;
        m->cap = cap;
    }
    char *copy = strdup(path);
    if (copy == NULL)
        return cq_error_sys(err, ENOMEM, "list %s", path);
    m->entries[m->n++] = (struct cq_manifest_entry){copy, size, mtime_ns};
    return 0;
}

static int on_file(void *ctx, const char *path, uint64_t size, int64_t mtime_ns,
                   struct cq_error *err)
{
    return cq_manifest_add(ctx, path, size, mtime_ns, err);
}

static int by_path(const void *a, const void *b)
{
    return strcmp(((const struct cq_manifest_entry *)a)->path,
                  ((const struct cq_manifest_entry *)b)->path);
}

void cq_manifest_sort(struct cq_manifest *m)
{
    if (m->n > 1)
        qsort(m->entries, m->n, sizeof(m->entries[0]), by_path);
}

/* Scans the workspace into m, sorted by path: runs after every execution, so the
 * comparison with the last state must stay O(n log n) for large workspaces. */
static int scan(struct cq_worker *core, const char *session_id, struct cq_manifest *m,
                struct cq_error *err)
{
    if (cq_worker_scan_workspace(core, session_id, on_file, m, err) < 0)
        return -1;
    cq_manifest_sort(m);
    return 0;
}

static const struct cq_manifest_entry *find(const struct cq_manifest *m, const char *path)
{
    struct cq_manifest_entry key = {.path = (char *)path};
    return m->n == 0 ? NULL : bsearch(&key, m->entries, m->n, sizeof(key), by_path);
}

void cq_manifest_diff_free(struct cq_manifest_diff *diff)
{
    free(diff->changed);
    free(diff->removed);
    memset(diff, 0, sizeof(*diff));
}

int cq_manifest_diff(const struct cq_manifest *old, const struct cq_manifest *now,
                     struct cq_manifest_diff *diff, struct cq_error *err)
{
    memset(diff, 0, sizeof(*diff));
    /* At most every entry of each side: one allocation each, never grown. */
    if (now->n > 0 && (diff->changed = calloc(now->n, sizeof(*diff->changed))) == NULL)
        return cq_error_sys(err, ENOMEM, "compare %zu files with the saved state", now->n);
    if (old->n > 0 && (diff->removed = calloc(old->n, sizeof(*diff->removed))) == NULL) {
        cq_manifest_diff_free(diff);
        return cq_error_sys(err, ENOMEM, "compare %zu files with the saved state", old->n);
    }
    for (size_t i = 0; i < now->n; i++) {
        const struct cq_manifest_entry *e = &now->entries[i];
        const struct cq_manifest_entry *was = find(old, e->path);
        if (was == NULL || was->size != e->size || was->mtime_ns != e->mtime_ns)
            diff->changed[diff->n_changed++] = e;
    }
    for (size_t i = 0; i < old->n; i++)
        if (find(now, old->entries[i].path) == NULL)
            diff->removed[diff->n_removed++] = &old->entries[i];
    return 0;
}

int cq_snapshot_save(struct cq_worker *core, struct cq_store *st, const char *session_id,
                     const char *worker_id, uint64_t fence, struct cq_manifest *m,
                     struct cq_error *err)
{
    struct cq_manifest now = {0};
    if (scan(core, session_id, &now, err) < 0) {
        cq_manifest_free(&now);
        return -1;
    }
    struct cq_manifest_diff diff;
    if (cq_manifest_diff(m, &now, &diff, err) < 0) {
        cq_manifest_free(&now);
        return -1;
    }
    int rc = 0;
    for (size_t i = 0; i < diff.n_changed && rc == 0; i++) {
        const struct cq_manifest_entry *e = diff.changed[i];
        uint8_t *data = NULL;
        size_t len = 0;
        if (cq_worker_read_workspace_file(core, session_id, e->path, &data, &len, err) < 0) {
            /* Removed or replaced since the scan: the next save catches up. */
            cq_error_clear(err);
            continue;
        }
        rc = cq_store_put_file(st, session_id, worker_id, fence, e->path, data, len, e->mtime_ns,
                               err);
        free(data);
    }
    for (size_t i = 0; i < diff.n_removed && rc == 0; i++)
        rc = cq_store_delete_file(st, session_id, worker_id, fence, diff.removed[i]->path, err);
    cq_manifest_diff_free(&diff);
    if (rc < 0) {
        cq_manifest_free(&now);
        return -1;
    }
    cq_manifest_free(m);
    *m = now;
    return 0;
}

int cq_snapshot_restore(struct cq_worker *core, struct cq_store *st, const char *session_id,
                        struct cq_manifest *m, size_t *restored, struct cq_error *err)
{
    struct cq_stored_file *files = NULL;
    size_t n = 0;
    *restored = 0;
    if (cq_store_list_files(st, session_id, &files, &n, err) < 0)
        return -1;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        uint8_t *data = NULL;
        size_t len = 0;
        if (cq_store_get_file(st, session_id, files[i].path, &data, &len, err) < 0) {
            rc = -1;
            break;
        }
        struct cq_file_content content = {
            .path = files[i].path, .is_blob = true, .data = data, .len = len};
        struct cq_invoke_args args = {.content = &content, .n_content = 1};
        struct cq_result r;
        cq_worker_invoke(core, session_id, "writeFiles", &args, NULL, NULL, &r);
        if (r.is_error)
            rc = cq_error_set(err, CQ_EINTERNAL, "restore %s: %s", files[i].path,
                              r.n_blocks > 0 && r.blocks[0].text ? r.blocks[0].text : "failed");
        cq_result_free(&r);
        free(data);
        if (rc == 0)
            (*restored)++;
    }
    cq_stored_files_free(files, n);
    if (rc < 0)
        return -1;
    /* The restored files have new modification times: take them as the saved state. */
    cq_manifest_free(m);
    return scan(core, session_id, m, err);
}
