/* fleet/audit.c - audit records, their chains, and their verification (fleet/audit.h). */
#define _GNU_SOURCE
#include "fleet/audit.h"

#include <fcntl.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "common/cleanup.h"
#include "common/fileutil.h"
#include "fleet/auth.h"
#include "fleet/kafka.h"
#include "fleet/log.h"

/* What ends every line: the signature over all that comes before it (its body, with
 * "}" for the "," that follows). Found by its place, not by parsing, so that checking
 * never depends on how a JSON library would write the record again. */
#define SIG_PREFIX     ",\"sig\":\""
#define SIG_SUFFIX_LEN (sizeof(SIG_PREFIX) - 1 + 64 + 2) /* ,"sig":"<64 hex>"} */
#define ZERO_HASH      "0000000000000000000000000000000000000000000000000000000000000000"

struct cq_audit {
    char *producer;
    char key[CQ_AUDIT_KEY_LEN + 1]; /* "" unsigned */
    bool content;
    cq_audit_write_fn write;
    void *ctx;
    pthread_mutex_t lock;
    uint64_t seq;
    char prev[65];
};

static void hex(const uint8_t *b, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        snprintf(out + 2 * i, 3, "%02x", b[i]);
}

static void sha256_hex(const void *data, size_t len, char out[65])
{
    uint8_t d[32];
    cq_sha256(data, len, d);
    hex(d, 32, out);
}

static void hmac_hex(const char *key, const char *data, size_t len, char out[65])
{
    uint8_t mac[32];
    unsigned n = sizeof(mac);
    HMAC(EVP_sha256(), key, (int)strlen(key), (const uint8_t *)data, len, mac, &n);
    hex(mac, 32, out);
}

int cq_audit_read_key(const char *path, char key[CQ_AUDIT_KEY_LEN + 1], struct cq_error *err)
{
    cq_autoclose int fd = cq_open_private(path, "audit key file", err);
    if (fd < 0)
        return -1;
    char buf[CQ_AUDIT_KEY_LEN + 2];
    ssize_t n = read(fd, buf, sizeof(buf));
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--;
    bool ok = n == CQ_AUDIT_KEY_LEN;
    for (ssize_t i = 0; ok && i < n; i++)
        ok = (buf[i] >= '0' && buf[i] <= '9') || (buf[i] >= 'a' && buf[i] <= 'f');
    if (!ok) {
        explicit_bzero(buf, sizeof(buf));
        return cq_error_set(err, CQ_EINVALID,
                            "audit key file %s: not %d hexadecimal digits (openssl rand -hex 32)",
                            path, CQ_AUDIT_KEY_LEN);
    }
    memcpy(key, buf, CQ_AUDIT_KEY_LEN);
    key[CQ_AUDIT_KEY_LEN] = '\0';
    explicit_bzero(buf, sizeof(buf));
    return 0;
}

int cq_audit_open(const char *producer, const char *key_file, bool content, cq_audit_write_fn write,
                  void *ctx, struct cq_audit **out, struct cq_error *err)
{
    struct cq_audit *a = calloc(1, sizeof(*a));
    if (a == NULL || (a->producer = strdup(producer)) == NULL) {
        free(a);
        return cq_error_sys(err, ENOMEM, "open the audit log");
    }
    if (key_file != NULL && key_file[0] != '\0' && cq_audit_read_key(key_file, a->key, err) < 0) {
        free(a->producer);
        free(a);
        return -1;
    }
    a->content = content;
    a->write = write;
    a->ctx = ctx;
    snprintf(a->prev, sizeof(a->prev), "%s", ZERO_HASH);
    pthread_mutex_init(&a->lock, NULL);
    *out = a;
    return 0;
}

void cq_audit_close(struct cq_audit *a)
{
    if (a == NULL)
        return;
    explicit_bzero(a->key, sizeof(a->key));
    pthread_mutex_destroy(&a->lock);
    free(a->producer);
    free(a);
}

int cq_audit_file_sink(void *ctx, const char *line, size_t len, struct cq_error *err)
{
    const char *path = ctx;
    cq_autoclose int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return cq_error_sys(err, errno, "open audit log %s", path);
    /* One write per line: O_APPEND keeps lines whole between writers. */
    char *buf = malloc(len + 1);
    if (buf == NULL)
        return cq_error_sys(err, ENOMEM, "write audit log");
    memcpy(buf, line, len);
    buf[len] = '\n';
    ssize_t n = write(fd, buf, len + 1);
    free(buf);
    if (n != (ssize_t)(len + 1))
        return cq_error_sys(err, n < 0 ? errno : EIO, "write audit log %s", path);
    return 0;
}

int cq_audit_kafka_sink(void *ctx, const char *line, size_t len, struct cq_error *err)
{
    const struct cq_audit_kafka *k = ctx;
    return cq_kafka_send(*k->kafka, k->topic, k->producer, line, len, NULL, 0, NULL, err);
}

static const char *str(const char *s)
{
    return s != NULL ? s : "";
}

static void set_str(json_t *o, const char *name, const char *value)
{
    if (value != NULL && value[0] != '\0')
        json_object_set_new(o, name, json_string(value));
}

static void set_digest(json_t *o, const char *name, const void *data, size_t len)
{
    char h[65];
    sha256_hex(data, len, h);
    json_object_set_new(o, name, json_string(h));
}

/* What the request carries, as digests (and, with content, as itself). */
static void describe_arguments(json_t *o, const Codeq__V1__Invoke *inv, bool content)
{
    const Codeq__V1__Arguments *args = inv->arguments;
    if (inv->arguments_claim != NULL) {
        const Codeq__V1__Claim *c = inv->arguments_claim;
        char h[65] = "";
        if (c->sha256.len == 32)
            hex(c->sha256.data, 32, h);
        json_object_set_new(o, "arguments_claim",
                            json_pack("{s:s, s:I, s:s}", "id", str(c->id), "size",
                                      (json_int_t)c->size, "sha256", h));
    }
    if (args == NULL)
        return;
    set_str(o, "language", args->language);
    if (args->code != NULL && args->code[0] != '\0') {
        set_digest(o, "code_sha256", args->code, strlen(args->code));
        if (content)
            json_object_set_new(o, "code", json_string(args->code));
    }
    if (args->command != NULL && args->command[0] != '\0') {
        set_digest(o, "command_sha256", args->command, strlen(args->command));
        if (content)
            json_object_set_new(o, "command", json_string(args->command));
    }
    if (args->n_content > 0) {
        json_t *files = json_array();
        for (size_t i = 0; i < args->n_content; i++) {
            const Codeq__V1__FileContent *f = args->content[i];
            const void *data = f->data_case == CODEQ__V1__FILE_CONTENT__DATA_BLOB
                                   ? (const void *)f->blob.data
                                   : (const void *)f->text;
            size_t len = f->data_case == CODEQ__V1__FILE_CONTENT__DATA_BLOB ? f->blob.len
                         : f->text != NULL                                  ? strlen(f->text)
                                                                            : 0;
            char h[65];
            sha256_hex(data != NULL ? data : "", len, h);
            json_array_append_new(files, json_pack("{s:s, s:I, s:s}", "path", str(f->path), "size",
                                                   (json_int_t)len, "sha256", h));
        }
        json_object_set_new(o, "files", files);
    }
    if (args->n_paths > 0) {
        json_t *paths = json_array();
        for (size_t i = 0; i < args->n_paths; i++)
            json_array_append_new(paths, json_string(str(args->paths[i])));
        json_object_set_new(o, "paths", paths);
    }
    set_str(o, "task_id", args->task_id);
}

static json_t *record_json(const struct cq_audit *a, const struct cq_audit_record *r)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[40];
    size_t n = strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when + n, sizeof(when) - n, ".%03ldZ", ts.tv_nsec / 1000000);
    json_t *o = json_object();
    json_object_set_new(o, "v", json_integer(1));
    json_object_set_new(o, "time", json_string(when));
    json_object_set_new(o, "producer", json_string(a->producer));
    json_object_set_new(o, "seq", json_integer((json_int_t)a->seq));
    json_object_set_new(o, "prev", json_string(a->prev));
    set_str(o, "event", r->event);
    set_str(o, "outcome", r->outcome);
    set_str(o, "error_code", r->error_code);
    set_str(o, "reason", r->reason);
    set_str(o, "key_id", r->key_id);
    set_str(o, "worker", r->worker);
    if (r->bytes > 0)
        json_object_set_new(o, "bytes", json_integer((json_int_t)r->bytes));
    const Codeq__V1__Request *req = r->req;
    if (req != NULL) {
        set_str(o, "tenant", req->tenant);
        set_str(o, "request_id", req->request_id);
        set_str(o, "session_id", req->session_id);
        set_str(o, "operation", cq_auth_operation(req));
        set_str(o, "traceparent", req->traceparent);
        if (req->operation_case == CODEQ__V1__REQUEST__OPERATION_INVOKE && req->invoke != NULL)
            describe_arguments(o, req->invoke, a->content);
    }
    if (r->has_result) {
        json_object_set_new(o, "exit_code", json_integer(r->exit_code));
        json_object_set_new(o, "duration_ms", json_real(r->duration_ms));
        if (r->cpu_ms > 0)
            json_object_set_new(o, "cpu_ms", json_integer((json_int_t)r->cpu_ms));
        if (r->peak_memory_bytes > 0)
            json_object_set_new(o, "peak_memory_bytes",
                                json_integer((json_int_t)r->peak_memory_bytes));
        if (a->content) {
            set_str(o, "stdout", r->stdout_text);
            set_str(o, "stderr", r->stderr_text);
        }
    }
    return o;
}

void cq_audit_emit(struct cq_audit *a, const struct cq_audit_record *r)
{
    if (a == NULL)
        return;
    pthread_mutex_lock(&a->lock);
    json_t *o = record_json(a, r);
    char *body =
        json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII | JSON_REAL_PRECISION(6));
    json_decref(o);
    char *line = NULL;
    int len = -1;
    if (body != NULL) {
        size_t blen = strlen(body);
        char sig[65] = "";
        if (a->key[0] != '\0')
            hmac_hex(a->key, body, blen, sig);
        else
            memset(sig, '0', 64); /* unsigned: verify without a key */
        body[blen - 1] = '\0';    /* the closing brace: the signature goes before it */
        len = asprintf(&line, "%s" SIG_PREFIX "%s\"}", body, sig);
        free(body);
    }
    if (len < 0) {
        cq_log_event(CQ_LOG_ERROR, "audit_record_lost",
                     CQ_FIELDS(CQ_LI("seq", a->seq), CQ_LS("error", "out of memory")),
                     "audit record %llu not written: out of memory", (unsigned long long)a->seq);
    } else {
        struct cq_error err;
        if (a->write(a->ctx, line, (size_t)len, &err) < 0)
            cq_log_event(CQ_LOG_ERROR, "audit_record_lost",
                         CQ_FIELDS(CQ_LI("seq", a->seq), CQ_LS("error", err.msg)),
                         "audit record %llu not written: %s", (unsigned long long)a->seq, err.msg);
        /* Chained whether or not the write succeeded: a lost record is a visible gap. */
        sha256_hex(line, (size_t)len, a->prev);
        a->seq++;
        free(line);
    }
    pthread_mutex_unlock(&a->lock);
}

/* ---- verification ----------------------------------------------------------------- */

struct chain {
    char *producer;
    json_int_t next_seq;
    char prev[65];
};

static int broken(struct cq_error *err, long lineno, const char *producer, json_int_t seq,
                  const char *why)
{
    return cq_error_set(err, CQ_EINVALID, "line %ld: producer %s, record %lld: %s", lineno,
                        producer, (long long)seq, why);
}

long cq_audit_verify(FILE *in, const char *key, struct cq_error *err)
{
    struct chain *chains = NULL;
    size_t n_chains = 0;
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    long lineno = 0, checked = 0, rc = -1;
    while ((len = getline(&line, &cap, in)) >= 0) {
        lineno++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        if (len == 0)
            continue;
        json_error_t jerr;
        json_t *o = json_loadb(line, (size_t)len, 0, &jerr);
        const char *producer = NULL, *prev = NULL;
        json_int_t seq = -1;
        if (o == NULL || json_unpack(o, "{s:s, s:I, s:s}", "producer", &producer, "seq", &seq,
                                     "prev", &prev) != 0) {
            json_decref(o);
            cq_error_set(err, CQ_EINVALID, "line %ld: not an audit record", lineno);
            goto out;
        }
        /* The signature, by its place at the end of the line. */
        size_t body_len = (size_t)len - SIG_SUFFIX_LEN;
        if ((size_t)len <= SIG_SUFFIX_LEN ||
            strncmp(line + body_len, SIG_PREFIX, sizeof(SIG_PREFIX) - 1) != 0 ||
            strcmp(line + len - 2, "\"}") != 0) {
            broken(err, lineno, producer, seq, "no signature where one must end the line");
            json_decref(o);
            goto out;
        }
        if (key != NULL) {
            char want[65];
            char *body = strndup(line, body_len + 1);
            body[body_len] = '}';
            hmac_hex(key, body, body_len + 1, want);
            free(body);
            if (CRYPTO_memcmp(want, line + body_len + sizeof(SIG_PREFIX) - 1, 64) != 0) {
                broken(err, lineno, producer, seq,
                       "bad signature: the record was changed, or not written with this key");
                json_decref(o);
                goto out;
            }
        }
        struct chain *c = NULL;
        for (size_t i = 0; i < n_chains; i++)
            if (strcmp(chains[i].producer, producer) == 0)
                c = &chains[i];
        if (c == NULL) {
            struct chain *grown = realloc(chains, (n_chains + 1) * sizeof(*chains));
            if (grown == NULL) {
                json_decref(o);
                cq_error_sys(err, ENOMEM, "verify");
                goto out;
            }
            chains = grown;
            c = &chains[n_chains++];
            c->producer = strdup(producer);
            c->next_seq = 0;
            snprintf(c->prev, sizeof(c->prev), "%s", ZERO_HASH);
        }
        const char *why = NULL;
        char text[160];
        if (seq != c->next_seq) {
            snprintf(text, sizeof(text), "expected record %lld: %s", (long long)c->next_seq,
                     seq > c->next_seq ? "records before it are missing"
                                       : "it comes again, or out of order");
            why = text;
        } else if (strcmp(prev, c->prev) != 0) {
            why = "it does not link to the record before it (that one was changed or removed)";
        }
        if (why != NULL) {
            broken(err, lineno, producer, seq, why);
            json_decref(o);
            goto out;
        }
        sha256_hex(line, (size_t)len, c->prev);
        c->next_seq++;
        checked++;
        json_decref(o);
    }
    rc = checked;
out:
    for (size_t i = 0; i < n_chains; i++)
        free(chains[i].producer);
    free(chains);
    free(line);
    return rc;
}
