/* api/result.c - building results in AgentCore's shape. */
#define _GNU_SOURCE
#include "api/api.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cq_result_init(struct cq_result *r)
{
    memset(r, 0, sizeof(*r));
}

static void block_free(struct cq_block *b)
{
    free(b->text);
    free(b->data);
    free(b->mime_type);
    free(b->uri);
    free(b->name);
    free(b->description);
}

void cq_result_free(struct cq_result *r)
{
    for (size_t i = 0; i < r->n_blocks; i++)
        block_free(&r->blocks[i]);
    free(r->blocks);
    free(r->stdout_text);
    free(r->value_text);
    free(r->stderr_text);
    free(r->task_id);
    free(r->error_message);
    cq_result_init(r);
}

static struct cq_block *new_block(struct cq_result *r, enum cq_block_type type)
{
    if (r->n_blocks == r->cap_blocks) {
        size_t cap = r->cap_blocks ? r->cap_blocks * 2 : 4;
        struct cq_block *blocks = realloc(r->blocks, cap * sizeof(*blocks));
        if (blocks == NULL)
            return NULL;
        r->blocks = blocks;
        r->cap_blocks = cap;
    }
    struct cq_block *b = &r->blocks[r->n_blocks];
    memset(b, 0, sizeof(*b));
    b->type = type;
    return b;
}

/* Commits the block new_block returned, or forgets it when an allocation failed. */
static int commit(struct cq_result *r, struct cq_block *b, bool ok)
{
    if (!ok) {
        block_free(b);
        return -1;
    }
    r->n_blocks++;
    return 0;
}

static char *file_uri(const char *path)
{
    char *uri = NULL;
    return asprintf(&uri, "file://%s", path) < 0 ? NULL : uri;
}

int cq_result_add_text(struct cq_result *r, const char *text)
{
    struct cq_block *b = new_block(r, CQ_BLOCK_TEXT);
    if (b == NULL)
        return -1;
    b->text = strdup(text);
    return commit(r, b, b->text != NULL);
}

int cq_result_add_image(struct cq_result *r, const uint8_t *data, size_t len, const char *mime)
{
    struct cq_block *b = new_block(r, CQ_BLOCK_IMAGE);
    if (b == NULL)
        return -1;
    b->data = malloc(len ? len : 1);
    b->mime_type = strdup(mime);
    if (b->data != NULL)
        memcpy(b->data, data, len);
    b->data_len = len;
    return commit(r, b, b->data != NULL && b->mime_type != NULL);
}

int cq_result_add_resource(struct cq_result *r, const char *path, const char *mime,
                           const uint8_t *data, size_t len, bool is_blob)
{
    struct cq_block *b = new_block(r, CQ_BLOCK_RESOURCE);
    if (b == NULL)
        return -1;
    b->uri = file_uri(path);
    b->mime_type = strdup(mime);
    b->is_blob = is_blob;
    bool ok = b->uri != NULL && b->mime_type != NULL;
    if (ok && is_blob) {
        b->data = malloc(len ? len : 1);
        if (b->data != NULL)
            memcpy(b->data, data, len);
        b->data_len = len;
        ok = b->data != NULL;
    } else if (ok) {
        b->text = strndup((const char *)data, len);
        ok = b->text != NULL;
    }
    return commit(r, b, ok);
}

int cq_result_add_link(struct cq_result *r, const char *path, const char *name, const char *mime,
                       uint64_t size, const char *description)
{
    struct cq_block *b = new_block(r, CQ_BLOCK_RESOURCE_LINK);
    if (b == NULL)
        return -1;
    b->uri = file_uri(path);
    b->name = strdup(name);
    b->mime_type = strdup(mime);
    b->description = strdup(description);
    b->size = size;
    return commit(
        r, b, b->uri != NULL && b->name != NULL && b->mime_type != NULL && b->description != NULL);
}

void cq_result_fail(struct cq_result *r, enum cq_result_error code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *message = NULL;
    if (vasprintf(&message, fmt, ap) < 0)
        message = NULL;
    va_end(ap);
    r->is_error = true;
    r->error_code = code;
    free(r->error_message);
    r->error_message = message;
    /* A text block too: MCP clients show content, not codeq's error fields. */
    if (message != NULL)
        cq_result_add_text(r, message);
}

const char *cq_task_status_name(enum cq_task_status s)
{
    switch (s) {
    case CQ_TASK_SUBMITTED:
        return "submitted";
    case CQ_TASK_WORKING:
        return "working";
    case CQ_TASK_COMPLETED:
        return "completed";
    case CQ_TASK_CANCELED:
        return "canceled";
    case CQ_TASK_FAILED:
        return "failed";
    default:
        return "";
    }
}

const char *cq_result_outcome(const struct cq_result *r)
{
    switch (r->error_code) {
    case CQ_RESULT_TIMED_OUT:
        return "timeout";
    case CQ_RESULT_LIMIT_EXCEEDED:
        return "limit";
    case CQ_RESULT_INTERNAL:
        return "internal";
    default:
        return r->is_error ? "user_error" : "ok";
    }
}

const char *cq_result_error_name(enum cq_result_error e)
{
    switch (e) {
    case CQ_RESULT_OK:
        return "NONE";
    case CQ_RESULT_NOT_FOUND:
        return "NOT_FOUND";
    case CQ_RESULT_INVALID_ARGUMENT:
        return "INVALID_ARGUMENT";
    case CQ_RESULT_LIMIT_EXCEEDED:
        return "LIMIT_EXCEEDED";
    case CQ_RESULT_TIMED_OUT:
        return "TIMED_OUT";
    case CQ_RESULT_ACCESS_DENIED:
        return "ACCESS_DENIED";
    default:
        return "INTERNAL";
    }
}

enum cq_result_error cq_result_error_of(int error_code)
{
    switch (error_code) {
    case CQ_ENOTFOUND:
    case ENOENT:
        return CQ_RESULT_NOT_FOUND;
    case CQ_EINVALID:
        return CQ_RESULT_INVALID_ARGUMENT;
    case CQ_ELIMIT:
    case EAGAIN:
    case ENOSPC:
    case EDQUOT:
        return CQ_RESULT_LIMIT_EXCEEDED;
    case CQ_ETIMEOUT:
        return CQ_RESULT_TIMED_OUT;
    case CQ_EDENIED:
        return CQ_RESULT_ACCESS_DENIED;
    default:
        return CQ_RESULT_INTERNAL;
    }
}
