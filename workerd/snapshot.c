/* workerd/snapshot.c - keeps a session's workspace files in Redis, so that the
 * session survives the loss of its worker.
 *
 * After a request that may have changed files, the workspace is scanned (names, sizes,
 * modification times: no contents) and compared with the last saved state (by
 * cq_manifest_diff, which does no I/O); only files that changed are read and written,
 * each under the session's fence. */
#define _GNU_SOURCE
#include "workerd/snapshot.h"
#include "common/utf8.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cq_manifest_free(struct cq_manifest *m)
{
    for (size_t i = 0; i < m->n; i++) {
        free(m->entries[i].path);
        free(m->entries[i].link);
    }
    free(m->entries);
    memset(m, 0, sizeof(*m));
}

int cq_manifest_add(struct cq_manifest *m, const char *path, uint64_t size, int64_t mtime_ns,
                    uint32_t mode, const char *link, struct cq_error *err)
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
    char *target = link != NULL ? strdup(link) : NULL;
    if (copy == NULL || (link != NULL && target == NULL)) {
        free(copy);
        return cq_error_sys(err, ENOMEM, "list %s", path);
    }
    m->entries[m->n++] = (struct cq_manifest_entry){copy, size, mtime_ns, mode, target};
    return 0;
}

static int on_file(void *ctx, const struct cq_workspace_entry *e, struct cq_error *err)
{
    return cq_manifest_add(ctx, e->path, e->size, e->mtime_ns, e->mode, e->link_target, err);
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
        bool same_link = was != NULL && (was->link == NULL) == (e->link == NULL) &&
                         (e->link == NULL || strcmp(was->link, e->link) == 0);
        if (was == NULL || was->size != e->size || was->mtime_ns != e->mtime_ns ||
            was->mode != e->mode || !same_link)
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
        if (e->link != NULL) {
            /* A link is kept as a file whose bytes are its target (sealed, counted in
             * the quotas as any file) and marked as a link. */
            rc = cq_store_put_file(st, session_id, worker_id, fence, e->path,
                                   (const uint8_t *)e->link, strlen(e->link), e->mtime_ns,
                                   CQ_STORE_LINK, err);
            continue;
        }
        uint8_t *data = NULL;
        size_t len = 0;
        if (cq_worker_read_workspace_file(core, session_id, e->path, &data, &len, err) < 0) {
            /* Removed or replaced since the scan: the next save catches up. */
            cq_error_clear(err);
            continue;
        }
        rc = cq_store_put_file(st, session_id, worker_id, fence, e->path, data, len, e->mtime_ns,
                               e->mode, err);
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
        if (files[i].mode == CQ_STORE_LINK) {
            /* The target as stored: text without a NUL, or the link is not made. */
            char *target =
                len > 0 && memchr(data, '\0', len) == NULL ? strndup((char *)data, len) : NULL;
            rc = target == NULL
                     ? cq_error_set(err, CQ_EINTERNAL, "restore %s: not a link target",
                                    files[i].path)
                     : cq_worker_restore_link(core, session_id, files[i].path, target, err);
            free(target);
            free(data);
            if (rc == 0)
                (*restored)++;
            continue;
        }
        struct cq_file_content content = {.path = files[i].path,
                                          .is_blob = true,
                                          .data = data,
                                          .len = len,
                                          .mode = files[i].mode | CQ_FILE_MODE_SET};
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

/* ---- kernel state: a drained session's variables ----------------------------------
 *
 * A worker that drains saves the variables of each session's kernels (the kernels
 * serialise them, worker/kernel.c) in state:<sid>, next to the files; the worker that
 * adopts the session restores them into its new kernels before the session's next
 * call. A worker that dies without a drain leaves no state, and the session comes back
 * with its files only. The state's bytes come from the sandbox: they are stored and
 * handed back to a kernel of the same session, never read here. */

static const struct {
    const char *field, *failed, *what; /* its fields in state:<sid>; the note's words */
    bool javascript;
} LANGS[] = {
    {"python", "python_failed", "Python variables", false},
    {"javascript", "javascript_failed",
     "JavaScript variables (plain data only: functions, classes and their instances do "
     "not move)",
     true},
};
#define N_LANGS (sizeof(LANGS) / sizeof(LANGS[0]))

/* The fields of state:<sid>: "drained", then per language its state, or why there is
 * none (reasons[i] non-empty). */
static size_t state_fields(struct cq_store_field *fields, uint8_t *const *states,
                           const size_t *lens, char (*reasons)[256])
{
    size_t n = 0;
    /* "drained" even when no kernel ran: the adopter then knows that the move was a
     * drain and that nothing was lost, rather than a crash. */
    fields[n++] = (struct cq_store_field){.name = "drained", .data = (uint8_t *)"1", .len = 1};
    for (size_t i = 0; i < N_LANGS; i++) {
        if (reasons[i][0] != '\0')
            fields[n++] = (struct cq_store_field){.name = (char *)LANGS[i].failed,
                                                  .data = (uint8_t *)reasons[i],
                                                  .len = strlen(reasons[i])};
        else if (states[i] != NULL)
            fields[n++] = (struct cq_store_field){
                .name = (char *)LANGS[i].field, .data = states[i], .len = lens[i]};
    }
    return n;
}

int cq_state_save(struct cq_worker *core, struct cq_store *st, const char *session_id,
                  const char *worker_id, uint64_t fence, uint64_t max_bytes, struct cq_error *err)
{
    struct cq_store_field fields[1 + N_LANGS];
    char reasons[N_LANGS][256] = {{0}};
    uint8_t *states[N_LANGS] = {NULL};
    size_t lens[N_LANGS] = {0};
    for (size_t i = 0; i < N_LANGS; i++) {
        struct cq_error why;
        if (cq_worker_checkpoint_kernel(core, session_id, LANGS[i].javascript, max_bytes,
                                        &states[i], &lens[i], &why) < 0)
            snprintf(reasons[i], sizeof(reasons[i]), "%s", why.msg);
    }
    size_t n = state_fields(fields, states, lens, reasons);
    int rc = cq_store_put_state(st, session_id, worker_id, fence, fields, n, err);
    if (rc < 0 && err->code == CQ_ELIMIT) {
        /* Too large beside the files within the session's quota: say so instead. */
        for (size_t i = 0; i < N_LANGS; i++)
            if (states[i] != NULL)
                snprintf(reasons[i], sizeof(reasons[i]),
                         "the saved variables (%zu bytes) and the session's files exceed the "
                         "session's quota in Redis",
                         lens[i]);
        cq_error_clear(err);
        n = state_fields(fields, states, lens, reasons);
        rc = cq_store_put_state(st, session_id, worker_id, fence, fields, n, err);
    }
    for (size_t i = 0; i < N_LANGS; i++)
        free(states[i]);
    return rc;
}

static const struct cq_store_field *field(const struct cq_store_field *fields, size_t n,
                                          const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(fields[i].name, name) == 0)
            return &fields[i];
    return NULL;
}

/* The note as valid UTF-8 within its buffer: the reasons in it were cut to size
 * wherever their bytes ended, and results travel as protobuf strings, which must be
 * UTF-8. */
static void note_finish(char *note, size_t len)
{
    char *clean = cq_utf8_sanitize(note, strlen(note));
    if (clean == NULL) {
        snprintf(note, len, "codeq: this session was moved to a new worker");
        return;
    }
    size_t n = strlen(clean);
    if (n >= len) {
        n = len - 1;
        while (n > 0 && ((unsigned char)clean[n] & 0xC0) == 0x80)
            n--; /* cut before a continuation byte */
    }
    memcpy(note, clean, n);
    note[n] = '\0';
    free(clean);
}

/* Appends to the note, cut at its end (note_finish() mends a split character). */
static void note_add(char *note, size_t len, const char *text)
{
    size_t used = strlen(note);
    if (used + 1 < len)
        snprintf(note + used, len - used, "%s", text);
}

int cq_state_restore(struct cq_worker *core, struct cq_store *st, const char *session_id,
                     const char *worker_id, uint64_t fence, char *note, size_t note_len,
                     struct cq_error *err)
{
    struct cq_store_field *fields = NULL;
    size_t n = 0;
    bool found = false;
    int rc = cq_store_take_state(st, session_id, worker_id, fence, &fields, &n, &found, err);
    if (rc < 0 || !found || field(fields, n, "drained") == NULL) {
        snprintf(note, note_len,
                 "codeq: this session was moved to a new worker after its worker was lost (it "
                 "stopped without a drain): only its files were kept; its variables, imports "
                 "and running tasks were lost");
        cq_store_fields_free(fields, n);
        return rc;
    }
    snprintf(note, note_len,
             "codeq: this session was moved to a new worker because its worker was stopped (a "
             "drain): its files were restored");
    bool any = false;
    for (size_t i = 0; i < N_LANGS; i++) {
        const struct cq_store_field *state = field(fields, n, LANGS[i].field);
        const struct cq_store_field *failed = field(fields, n, LANGS[i].failed);
        char part[4096];
        if (state != NULL) {
            char *summary = NULL;
            struct cq_error why;
            if (cq_worker_restore_kernel(core, session_id, LANGS[i].javascript, state->data,
                                         state->len, &summary, &why) < 0)
                snprintf(part, sizeof(part), "; its %s could not be restored: %s", LANGS[i].what,
                         why.msg);
            else
                snprintf(part, sizeof(part), "; %s: %s", LANGS[i].what, summary);
            free(summary);
        } else if (failed != NULL) {
            /* Written by the draining worker itself, not by a kernel. */
            snprintf(part, sizeof(part), "; its %s were not moved: %.*s", LANGS[i].what,
                     (int)(failed->len < 300 ? failed->len : 300), (const char *)failed->data);
        } else {
            continue;
        }
        any = true;
        note_add(note, note_len, part);
    }
    note_add(note, note_len,
             any ? "; running tasks were not moved" : "; it had no variables to move");
    note_finish(note, note_len);
    cq_store_fields_free(fields, n);
    return 0;
}
