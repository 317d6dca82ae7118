/* fleet/keys.c - the keys file: tenants and their signing keys.
 *
 * One record per line, fields separated by spaces (no field can hold one):
 *
 *   tenant <name> <created_unix> [<quota>=<value> ...]
 *   key <key_id> <tenant> <secret> active|revoked <created_unix> <revoked_unix>
 *
 * Plain text on purpose: an operator can read and diff it, and back it up like any
 * other secret; the commands keep it valid. */
#include "fleet/keys.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "common/cleanup.h"
#include "common/fileutil.h"
#include "common/clock.h"
#include "common/units.h"

#include "fleet/log.h"

#define KEYFILE_MAX_BYTES (16u << 20)
#define RELOAD_CHECK_MS   1000

static bool hex_digits(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return s[n] == '\0';
}

bool cq_key_id_ok(const char *id)
{
    return strncmp(id, "cqk_", 4) == 0 && hex_digits(id + 4, CQ_KEY_ID_LEN - 4);
}

/* ---- the file --------------------------------------------------------------------- */

void cq_keyfile_free(struct cq_keyfile *kf)
{
    /* Secrets do not linger in freed memory. */
    if (kf->keys != NULL)
        explicit_bzero(kf->keys, kf->n_keys * sizeof(*kf->keys));
    free(kf->keys);
    free(kf->tenants);
    memset(kf, 0, sizeof(*kf));
}

static int parse_line(struct cq_keyfile *kf, char *line, unsigned lineno, struct cq_error *err)
{
    while (*line == ' ' || *line == '\t')
        line++;
    if (line[0] == '#' || line[0] == '\0')
        return 0;
    char *save = NULL;
    char *f[8];
    size_t n = 0;
    for (char *t = strtok_r(line, " \t", &save); t != NULL; t = strtok_r(NULL, " \t", &save)) {
        if (n == 8)
            return cq_error_set(err, CQ_EINVALID, "line %u: too many fields", lineno);
        f[n++] = t;
    }
    if (n == 0)
        return 0;
    if (strcmp(f[0], "tenant") == 0 && n >= 3) {
        if (!cq_tenant_name_ok(f[1]))
            return cq_error_set(err, CQ_EINVALID, "line %u: bad tenant name", lineno);
        struct cq_quota quota = {0};
        for (size_t i = 3; i < n; i++) {
            char *eq = strchr(f[i], '=');
            if (eq == NULL)
                return cq_error_set(err, CQ_EINVALID, "line %u: '%s' is not a quota=value", lineno,
                                    f[i]);
            *eq = '\0';
            if (cq_quota_set(&quota, f[i], eq + 1, err) < 0)
                return cq_error_prefix(err, "line %u", lineno);
        }
        struct cq_keyfile_tenant *t = realloc(kf->tenants, (kf->n_tenants + 1) * sizeof(*t));
        if (t == NULL)
            return cq_error_sys(err, ENOMEM, "read the keys file");
        kf->tenants = t;
        t = &kf->tenants[kf->n_tenants++];
        snprintf(t->name, sizeof(t->name), "%s", f[1]);
        t->created_unix = strtoll(f[2], NULL, 10);
        t->quota = quota;
        return 0;
    }
    if (strcmp(f[0], "key") == 0 && n == 7) {
        if (!cq_key_id_ok(f[1]) || !cq_tenant_name_ok(f[2]) || strlen(f[3]) != CQ_KEY_SECRET_LEN ||
            !hex_digits(f[3], CQ_KEY_SECRET_LEN) ||
            (strcmp(f[4], "active") != 0 && strcmp(f[4], "revoked") != 0))
            return cq_error_set(err, CQ_EINVALID, "line %u: not a valid key record", lineno);
        struct cq_key *k = realloc(kf->keys, (kf->n_keys + 1) * sizeof(*k));
        if (k == NULL)
            return cq_error_sys(err, ENOMEM, "read the keys file");
        kf->keys = k;
        k = &kf->keys[kf->n_keys++];
        memset(k, 0, sizeof(*k));
        snprintf(k->id, sizeof(k->id), "%s", f[1]);
        snprintf(k->tenant, sizeof(k->tenant), "%s", f[2]);
        memcpy(k->secret, f[3], CQ_KEY_SECRET_LEN);
        k->revoked = strcmp(f[4], "revoked") == 0;
        k->created_unix = strtoll(f[5], NULL, 10);
        k->revoked_unix = strtoll(f[6], NULL, 10);
        return 0;
    }
    return cq_error_set(err, CQ_EINVALID, "line %u: not a tenant or key record", lineno);
}

/* The file must be private: it holds every tenant's secrets. */
static int check_private(const char *path, const struct stat *st, struct cq_error *err)
{
    if (!S_ISREG(st->st_mode))
        return cq_error_set(err, CQ_EINVALID, "keys file %s is not a regular file", path);
    if ((st->st_mode & 077) != 0)
        return cq_error_set(err, CQ_EINVALID,
                            "keys file %s is readable by others (mode %03o): it holds every "
                            "tenant's secrets; chmod 600 it",
                            path, (unsigned)(st->st_mode & 0777));
    if (st->st_uid != geteuid() && st->st_uid != 0)
        return cq_error_set(err, CQ_EINVALID, "keys file %s belongs to another user (uid %u)", path,
                            (unsigned)st->st_uid);
    return 0;
}

/* Parses the records of text (changed in place); source names it in errors. */
static int parse_text(char *text, const char *source, struct cq_keyfile *kf, struct cq_error *err)
{
    struct cq_keyfile read = {0};
    unsigned lineno = 0;
    for (char *line = text, *next; line != NULL; line = next) {
        next = strchr(line, '\n');
        if (next != NULL)
            *next++ = '\0';
        lineno++;
        if (parse_line(&read, line, lineno, err) < 0) {
            cq_error_prefix(err, "keys %s", source);
            cq_keyfile_free(&read);
            return -1;
        }
    }
    *kf = read;
    return 0;
}

/* The records of kf, as the keys file and the Redis keyring hold them. */
static void write_records(FILE *f, const struct cq_keyfile *kf)
{
    fprintf(f, "# codeq keys file: every tenant's signing keys. Keep it private (mode 600);\n"
               "# edit it with `codeq tenant` and `codeq key` (docs/security.md).\n");
    for (size_t i = 0; i < kf->n_tenants; i++) {
        const struct cq_keyfile_tenant *t = &kf->tenants[i];
        fprintf(f, "tenant %s %lld", t->name, (long long)t->created_unix);
        const struct cq_quota *q = &t->quota;
        const uint64_t values[] = {q->sessions, q->executions, q->stored_bytes, q->rps};
        static const char *const names[] = {"sessions", "executions", "stored_bytes", "rps"};
        for (size_t j = 0; j < 4; j++)
            if (values[j] != 0)
                fprintf(f, " %s=%llu", names[j], (unsigned long long)values[j]);
        fputc('\n', f);
    }
    for (size_t i = 0; i < kf->n_keys; i++) {
        const struct cq_key *k = &kf->keys[i];
        fprintf(f, "key %s %s %s %s %lld %lld\n", k->id, k->tenant, k->secret,
                k->revoked ? "revoked" : "active", (long long)k->created_unix,
                (long long)k->revoked_unix);
    }
}

static int read_fd(int fd, const char *path, struct cq_keyfile *kf, struct cq_error *err)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return cq_error_sys(err, errno, "stat %s", path);
    if (check_private(path, &st, err) < 0)
        return -1;
    if ((uint64_t)st.st_size > KEYFILE_MAX_BYTES)
        return cq_error_set(err, CQ_ELIMIT, "keys file %s is larger than %u MiB", path,
                            KEYFILE_MAX_BYTES >> 20);
    cq_autofree char *text = malloc((size_t)st.st_size + 1);
    if (text == NULL)
        return cq_error_sys(err, ENOMEM, "read %s", path);
    size_t len = 0;
    while (len < (size_t)st.st_size) {
        ssize_t r = read(fd, text + len, (size_t)st.st_size - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return cq_error_sys(err, errno, "read %s", path);
        if (r == 0)
            break;
        len += (size_t)r;
    }
    text[len] = '\0';
    int rc = parse_text(text, path, kf, err);
    explicit_bzero(text, len);
    return rc;
}

int cq_keyfile_parse(char *text, const char *source, struct cq_keyfile *kf, struct cq_error *err)
{
    return parse_text(text, source, kf, err);
}

int cq_keyfile_format(const struct cq_keyfile *kf, char **text, size_t *len, struct cq_error *err)
{
    FILE *f = open_memstream(text, len);
    if (f == NULL)
        return cq_error_sys(err, errno, "format the keys");
    write_records(f, kf);
    if (fclose(f) != 0)
        return cq_error_sys(err, errno, "format the keys");
    return 0;
}

int cq_keyfile_read(const char *path, bool missing_ok, struct cq_keyfile *kf, struct cq_error *err)
{
    memset(kf, 0, sizeof(*kf));
    cq_autoclose int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0 && errno == ENOENT && missing_ok)
        return 0;
    if (fd < 0)
        return cq_error_sys(err, errno, "open keys file %s", path);
    return read_fd(fd, path, kf, err);
}

int cq_keyfile_write(const char *path, const struct cq_keyfile *kf, struct cq_error *err)
{
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.new.%d", path, (int)getpid()) >= sizeof(tmp))
        return cq_error_set(err, CQ_EINVALID, "keys file path too long");
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return cq_error_sys(err, errno, "create %s", tmp);
    FILE *f = fdopen(fd, "w");
    if (f == NULL) {
        close(fd);
        unlink(tmp);
        return cq_error_sys(err, errno, "write %s", tmp);
    }
    write_records(f, kf);
    bool failed = fflush(f) != 0 || fsync(fileno(f)) != 0;
    int saved = errno;
    if (fclose(f) != 0 && !failed) {
        failed = true;
        saved = errno;
    }
    if (failed || rename(tmp, path) < 0) {
        if (!failed)
            saved = errno;
        unlink(tmp);
        return cq_error_sys(err, saved, "write keys file %s", path);
    }
    return 0;
}

static ssize_t find_tenant(const struct cq_keyfile *kf, const char *name)
{
    for (size_t i = 0; i < kf->n_tenants; i++)
        if (strcmp(kf->tenants[i].name, name) == 0)
            return (ssize_t)i;
    return -1;
}

int cq_keyfile_add_tenant(struct cq_keyfile *kf, const char *name, struct cq_error *err)
{
    if (!cq_tenant_name_ok(name))
        return cq_error_set(err, CQ_EINVALID,
                            "tenant name '%s': 1-%d characters of a-z, 0-9 and '-', not "
                            "starting with '-'",
                            name, CQ_TENANT_MAX);
    if (find_tenant(kf, name) >= 0)
        return cq_error_set(err, CQ_EINVALID, "tenant '%s' exists already", name);
    struct cq_keyfile_tenant *t = realloc(kf->tenants, (kf->n_tenants + 1) * sizeof(*t));
    if (t == NULL)
        return cq_error_sys(err, ENOMEM, "add tenant");
    kf->tenants = t;
    t = &kf->tenants[kf->n_tenants++];
    memset(t, 0, sizeof(*t)); /* no quotas of its own until `codeq tenant set` */
    snprintf(t->name, sizeof(t->name), "%s", name);
    t->created_unix = time(NULL);
    return 0;
}

int cq_keyfile_remove_tenant(struct cq_keyfile *kf, const char *name, struct cq_error *err)
{
    ssize_t at = find_tenant(kf, name);
    if (at < 0)
        return cq_error_set(err, CQ_ENOTFOUND, "no tenant '%s'", name);
    memmove(&kf->tenants[at], &kf->tenants[at + 1],
            (kf->n_tenants - (size_t)at - 1) * sizeof(*kf->tenants));
    kf->n_tenants--;
    size_t kept = 0;
    for (size_t i = 0; i < kf->n_keys; i++)
        if (strcmp(kf->keys[i].tenant, name) != 0)
            kf->keys[kept++] = kf->keys[i];
    explicit_bzero(&kf->keys[kept], (kf->n_keys - kept) * sizeof(*kf->keys));
    kf->n_keys = kept;
    return 0;
}

static int random_hex(char *out, size_t digits, struct cq_error *err)
{
    uint8_t bytes[32];
    size_t n = digits / 2;
    if (n > sizeof(bytes) || getrandom(bytes, n, 0) != (ssize_t)n)
        return cq_error_sys(err, errno ? errno : EIO, "getrandom");
    for (size_t i = 0; i < n; i++)
        snprintf(out + 2 * i, 3, "%02x", bytes[i]);
    explicit_bzero(bytes, sizeof(bytes));
    return 0;
}

int cq_keyfile_add_key(struct cq_keyfile *kf, const char *tenant, struct cq_key *key,
                       struct cq_error *err)
{
    if (find_tenant(kf, tenant) < 0)
        return cq_error_set(err, CQ_ENOTFOUND, "no tenant '%s' (codeq tenant create %s)", tenant,
                            tenant);
    struct cq_key k = {0};
    memcpy(k.id, "cqk_", 4);
    if (random_hex(k.id + 4, CQ_KEY_ID_LEN - 4, err) < 0 ||
        random_hex(k.secret, CQ_KEY_SECRET_LEN, err) < 0)
        return -1;
    snprintf(k.tenant, sizeof(k.tenant), "%s", tenant);
    k.created_unix = time(NULL);
    struct cq_key *keys = realloc(kf->keys, (kf->n_keys + 1) * sizeof(*keys));
    if (keys == NULL)
        return cq_error_sys(err, ENOMEM, "add key");
    kf->keys = keys;
    kf->keys[kf->n_keys++] = k;
    *key = k;
    explicit_bzero(&k, sizeof(k));
    return 0;
}

int cq_keyfile_revoke_key(struct cq_keyfile *kf, const char *key_id, struct cq_error *err)
{
    for (size_t i = 0; i < kf->n_keys; i++) {
        if (strcmp(kf->keys[i].id, key_id) != 0)
            continue;
        if (!kf->keys[i].revoked) {
            kf->keys[i].revoked = true;
            kf->keys[i].revoked_unix = time(NULL);
        }
        return 0;
    }
    return cq_error_set(err, CQ_ENOTFOUND, "no key '%s'", key_id);
}

int cq_quota_set(struct cq_quota *q, const char *name, const char *value, struct cq_error *err)
{
    uint64_t *field = strcmp(name, "sessions") == 0       ? &q->sessions
                      : strcmp(name, "executions") == 0   ? &q->executions
                      : strcmp(name, "stored_bytes") == 0 ? &q->stored_bytes
                      : strcmp(name, "rps") == 0          ? &q->rps
                                                          : NULL;
    if (field == NULL)
        return cq_error_set(err, CQ_EINVALID, "unknown quota '%s' (" CQ_QUOTA_NAMES ")", name);
    if (field == &q->stored_bytes)
        return cq_parse_size(value, 1ULL << 50, field, err) < 0
                   ? cq_error_prefix(err, "quota %s", name)
                   : 0;
    if (cq_parse_uint(value, 0, 1000000000, field, err) < 0)
        return cq_error_prefix(err, "quota %s", name);
    return 0;
}

/* ---- a client's credentials ------------------------------------------------------- */

static int set_credential(struct cq_credentials *cr, const char *name, const char *value,
                          const char *source, struct cq_error *err)
{
    char *field;
    size_t size;
    if (strcmp(name, "tenant") == 0) {
        field = cr->tenant;
        size = sizeof(cr->tenant);
    } else if (strcmp(name, "key_id") == 0) {
        field = cr->key_id;
        size = sizeof(cr->key_id);
    } else if (strcmp(name, "secret") == 0) {
        field = cr->secret;
        size = sizeof(cr->secret);
    } else {
        return cq_error_set(err, CQ_EINVALID, "%s: unknown setting '%s' (tenant, key_id, secret)",
                            source, name);
    }
    if (strlen(value) >= size)
        return cq_error_set(err, CQ_EINVALID, "%s: %s is too long", source, name);
    snprintf(field, size, "%s", value);
    return 0;
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n' || s[n - 1] == '\r'))
        s[--n] = '\0';
    return s;
}

static int read_credentials(const char *path, struct cq_credentials *cr, struct cq_error *err)
{
    cq_autoclose int fd = cq_open_private(path, "credentials file", err);
    if (fd < 0)
        return -1;
    FILE *f = fdopen(fd, "r");
    if (f == NULL)
        return cq_error_sys(err, errno, "read %s", path);
    fd = -1; /* the FILE's now */
    char line[256];
    unsigned lineno = 0;
    int rc = 0;
    while (rc == 0 && fgets(line, sizeof(line), f) != NULL) {
        lineno++;
        char *s = trim(line), *eq = strchr(s, '=');
        if (s[0] == '\0' || s[0] == '#')
            continue;
        char source[300];
        snprintf(source, sizeof(source), "%s:%u", path, lineno);
        if (eq == NULL) {
            rc = cq_error_set(err, CQ_EINVALID, "%s: not a 'key = value' line", source);
            break;
        }
        *eq = '\0';
        rc = set_credential(cr, trim(s), trim(eq + 1), source, err);
    }
    explicit_bzero(line, sizeof(line));
    fclose(f);
    return rc;
}

/* A file that holds only a key's secret (CODEQ_KEY_SECRET_FILE): kept off the command
 * line and the environment, which other users' ps and /proc can show. */
static int read_secret_file(const char *path, struct cq_credentials *cr, struct cq_error *err)
{
    cq_autoclose int fd = cq_open_private(path, "key secret file", err);
    if (fd < 0)
        return -1;
    char buf[CQ_KEY_SECRET_LEN + 8];
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    if (n < 0)
        return cq_error_sys(err, errno, "read %s", path);
    buf[n] = '\0';
    int rc = set_credential(cr, "secret", trim(buf), path, err);
    explicit_bzero(buf, sizeof(buf));
    return rc;
}

int cq_credentials_load(const char *path, struct cq_credentials *cr, bool *found,
                        struct cq_error *err)
{
    memset(cr, 0, sizeof(*cr));
    *found = false;
    if (path == NULL)
        path = getenv("CODEQ_CREDENTIALS");
    if (path != NULL && path[0] != '\0' && read_credentials(path, cr, err) < 0)
        return -1;
    static const char *const env[][2] = {
        {"CODEQ_TENANT", "tenant"}, {"CODEQ_KEY_ID", "key_id"}, {"CODEQ_KEY_SECRET", "secret"}};
    for (size_t i = 0; i < 3; i++) {
        const char *v = getenv(env[i][0]);
        if (v != NULL && v[0] != '\0' && set_credential(cr, env[i][1], v, env[i][0], err) < 0)
            return -1;
    }
    const char *secret_file = getenv("CODEQ_KEY_SECRET_FILE");
    if (secret_file != NULL && secret_file[0] != '\0') {
        const char *secret = getenv("CODEQ_KEY_SECRET");
        if (secret != NULL && secret[0] != '\0')
            return cq_error_set(err, CQ_EINVALID,
                                "a key secret and a key secret file are both given: give one");
        if (read_secret_file(secret_file, cr, err) < 0)
            return -1;
    }
    if (cr->tenant[0] == '\0' && cr->key_id[0] == '\0' && cr->secret[0] == '\0')
        return 0;
    if (!cq_tenant_name_ok(cr->tenant) || !cq_key_id_ok(cr->key_id) ||
        strlen(cr->secret) != CQ_KEY_SECRET_LEN || !hex_digits(cr->secret, CQ_KEY_SECRET_LEN)) {
        explicit_bzero(cr, sizeof(*cr));
        return cq_error_set(err, CQ_EINVALID,
                            "incomplete or malformed credentials: a tenant, a key id (cqk_...) "
                            "and its 64-digit secret are needed (codeq key create)");
    }
    *found = true;
    return 0;
}

/* ---- the daemons' view ------------------------------------------------------------ */

struct cq_keystore {
    char *path;
    const struct cq_keys_source *source; /* instead of the file (the keyring), or NULL */
    pthread_mutex_t lock;
    struct cq_keyfile keys;
    struct stat seen; /* of the file last read */
    int64_t checked_ms;
    bool complained; /* about a file that stopped being readable */
};

static bool same_file(const struct stat *a, const struct stat *b)
{
    return a->st_ino == b->st_ino && a->st_dev == b->st_dev && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

static int load(struct cq_keystore *ks, struct cq_error *err)
{
    if (ks->source != NULL) {
        int64_t version;
        if (ks->source->version(ks->source->ctx, &version, err) < 0)
            return -1;
        if (ks->checked_ms != 0 && version == ks->keys.version)
            return 0;
        struct cq_keyfile kf;
        if (ks->source->read(ks->source->ctx, &kf, err) < 0)
            return -1;
        cq_keyfile_free(&ks->keys);
        ks->keys = kf;
        return 0;
    }
    cq_autoclose int fd = open(ks->path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return cq_error_sys(err, errno, "open keys file %s", ks->path);
    struct stat st;
    if (fstat(fd, &st) < 0)
        return cq_error_sys(err, errno, "stat %s", ks->path);
    if (ks->checked_ms != 0 && same_file(&st, &ks->seen))
        return 0;
    struct cq_keyfile kf;
    if (read_fd(fd, ks->path, &kf, err) < 0)
        return -1;
    cq_keyfile_free(&ks->keys);
    ks->keys = kf;
    ks->seen = st;
    return 0;
}

int cq_keystore_open(const char *path, const struct cq_keys_source *source,
                     struct cq_keystore **out, struct cq_error *err)
{
    struct cq_keystore *ks = calloc(1, sizeof(*ks));
    if (ks == NULL || (ks->path = strdup(path)) == NULL) {
        free(ks);
        return cq_error_sys(err, ENOMEM, "open the keys file");
    }
    pthread_mutex_init(&ks->lock, NULL);
    ks->source = source;
    if (load(ks, err) < 0) {
        cq_keystore_close(ks);
        return -1;
    }
    ks->checked_ms = (int64_t)cq_now_ms();
    *out = ks;
    return 0;
}

void cq_keystore_close(struct cq_keystore *ks)
{
    if (ks == NULL)
        return;
    cq_keyfile_free(&ks->keys);
    pthread_mutex_destroy(&ks->lock);
    free(ks->path);
    free(ks);
}

static void reload(struct cq_keystore *ks, int64_t now)
{
    struct cq_error why;
    ks->checked_ms = now;
    if (load(ks, &why) < 0) {
        /* Keep serving with the keys last read: a half-written or mistyped file must not
         * lock every tenant out. */
        if (!ks->complained)
            cq_log_event(CQ_LOG_ERROR, "keys_reload_failed",
                         CQ_FIELDS(CQ_LS("path", ks->path), CQ_LS("error", why.msg)),
                         "keys file not read again, keeping the keys read before: %s", why.msg);
        ks->complained = true;
    } else {
        ks->complained = false;
    }
}

static const struct cq_key *find_key(const struct cq_keystore *ks, const char *key_id)
{
    for (size_t i = 0; i < ks->keys.n_keys; i++)
        if (strcmp(ks->keys.keys[i].id, key_id) == 0)
            return &ks->keys.keys[i];
    return NULL;
}

void cq_keystore_quota(struct cq_keystore *ks, const char *tenant, struct cq_quota *quota)
{
    memset(quota, 0, sizeof(*quota));
    pthread_mutex_lock(&ks->lock);
    for (size_t i = 0; i < ks->keys.n_tenants; i++)
        if (strcmp(ks->keys.tenants[i].name, tenant) == 0)
            *quota = ks->keys.tenants[i].quota;
    pthread_mutex_unlock(&ks->lock);
}

int cq_keystore_lookup(struct cq_keystore *ks, const char *key_id, struct cq_key *key,
                       struct cq_error *err)
{
    pthread_mutex_lock(&ks->lock);
    int64_t now = (int64_t)cq_now_ms();
    if (now - ks->checked_ms >= RELOAD_CHECK_MS)
        reload(ks, now);
    const struct cq_key *found = find_key(ks, key_id);
    /* A key made a moment ago works at once: a miss looks again. That costs an open and
     * a stat (the file is read only when it changed), so a flood of made-up key ids
     * costs next to nothing either. */
    if (found == NULL) {
        reload(ks, now);
        found = find_key(ks, key_id);
    }
    if (found != NULL)
        *key = *found;
    pthread_mutex_unlock(&ks->lock);
    return found != NULL ? 0 : cq_error_set(err, CQ_ENOTFOUND, "unknown key id");
}
