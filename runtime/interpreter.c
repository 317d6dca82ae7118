/* runtime/interpreter.c - code interpreter definitions: strict parsing, the local store
 * (STORE/interpreters/<name>.json) and the profile the worker core is given.
 *
 * A definition's name becomes a file name and its DESTs a sandbox's allowlist, so both
 * are checked here with the rules that apply there (cq_runtime_name_check,
 * cq_net_dest_parse): a stored definition is one that a worker can take as it is. */
#define _GNU_SOURCE
#include "runtime/interpreter.h"
#include "runtime/internal.h"
#include "common/cleanup.h"
#include "common/clock.h"
#include "common/fileutil.h"
#include "common/tenant.h"

#include <dirent.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DEF_MAX        (64u << 10)
#define MANIFEST_MAX   (16u << 20)
#define MEMORY_MIN     (32ULL << 20) /* below this a Python kernel does not start */
#define SIZE_MAX_BYTES (1ULL << 40)
#define DISK_MIN       (1ULL << 20)
#define CPUS_MIN       0.01
#define CPUS_MAX       256.0
#define WARM_POOL_MAX  16 /* the worker's pool bound (codeq mcp --warm-pool) */
#define INTERPRETERS   "interpreters"

/* --- parsing -------------------------------------------------------------------------- */

static const char *const known_keys[] = {
    "name",     "runtime", "network",   "allow",
    "memory",   "cpus",    "disk",      "sessionTimeoutSeconds",
    "warmPool", "tenants", "createdAt", "agentcore"};

/* The keys of "agentcore" (struct cq_interpreter_def's agentcore) and their limits. */
static const struct {
    const char *key;
    size_t offset, max;
} agentcore_keys[] = {
    {"name", offsetof(struct cq_interpreter_def, agentcore.name), 48},
    {"description", offsetof(struct cq_interpreter_def, agentcore.description), 4096},
    {"executionRoleArn", offsetof(struct cq_interpreter_def, agentcore.role_arn), 2048},
    {"clientToken", offsetof(struct cq_interpreter_def, agentcore.client_token), 256},
};

static char **agentcore_field(struct cq_interpreter_def *d, size_t i)
{
    return (char **)((char *)d + agentcore_keys[i].offset);
}

static int parse_agentcore(json_t *root, struct cq_interpreter_def *d, struct cq_error *err)
{
    json_t *o = json_object_get(root, "agentcore");
    if (o == NULL)
        return 0;
    if (!json_is_object(o))
        return cq_error_set(err, CQ_EINVALID, "agentcore: must be an object");
    const char *key;
    json_t *v;
    json_object_foreach(o, key, v)
    {
        size_t i = 0;
        while (i < CQ_ARRAY_LEN(agentcore_keys) && strcmp(key, agentcore_keys[i].key) != 0)
            i++;
        if (i == CQ_ARRAY_LEN(agentcore_keys))
            return cq_error_set(err, CQ_EINVALID,
                                "agentcore: unknown key '%.80s' (known: name, description, "
                                "executionRoleArn, clientToken)",
                                key);
        size_t n = json_string_length(v);
        if (!json_is_string(v) || n == 0 || n > agentcore_keys[i].max ||
            strlen(json_string_value(v)) != n)
            return cq_error_set(err, CQ_EINVALID,
                                "agentcore.%s: must be text of 1 to %zu characters", key,
                                agentcore_keys[i].max);
        if ((*agentcore_field(d, i) = strdup(json_string_value(v))) == NULL)
            return cq_error_sys(err, ENOMEM, "agentcore");
    }
    return 0;
}

/* An integer field in [min, max]; absent leaves *out alone. */
static int get_uint(json_t *root, const char *key, uint64_t min, uint64_t max, uint64_t *out,
                    const char *unit, struct cq_error *err)
{
    json_t *v = json_object_get(root, key);
    if (v == NULL)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 0 || (uint64_t)json_integer_value(v) < min ||
        (uint64_t)json_integer_value(v) > max)
        return cq_error_set(err, CQ_EINVALID,
                            "%s: must be an integer from %llu to %llu%s (omit it for the "
                            "worker's default)",
                            key, (unsigned long long)min, (unsigned long long)max, unit);
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

/* "2026-12-07T09:21:29.123Z", as getSession writes times. */
static int parse_time(const char *s, int64_t *ms)
{
    struct tm tm = {0};
    int msec = 0, used = 0;
    if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d.%3dZ%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
               &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &msec, &used) != 7 ||
        s[used] != '\0' || strlen(s) != 24 || tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 ||
        tm.tm_mday > 31 || tm.tm_hour > 23 || tm.tm_min > 59 || tm.tm_sec > 60 ||
        tm.tm_year < 1970 || tm.tm_hour < 0 || tm.tm_min < 0 || tm.tm_sec < 0 || msec < 0)
        return -1; /* %d reads a sign: "1970-01-01T-1:..." was before the epoch */
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    time_t t = timegm(&tm);
    /* timegm normalised tm: a leap second past 9999-12-31 is in a year that
     * format_time writes with five digits, which this does not read back. */
    if (t == (time_t)-1 || tm.tm_year > 9999 - 1900)
        return -1;
    *ms = (int64_t)t * 1000 + msec;
    return 0;
}

static void format_time(int64_t ms, char buf[32])
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(buf, 32, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
}

static int parse_network(json_t *root, struct cq_interpreter_def *d, struct cq_error *err)
{
    json_t *v = json_object_get(root, "network");
    if (v != NULL) {
        /* AgentCore's casing only: a stored definition has one spelling. */
        if (!json_is_string(v) || cq_net_mode_parse(json_string_value(v), &d->network, err) < 0 ||
            strcmp(json_string_value(v), cq_net_mode_name(d->network)) != 0)
            return cq_error_set(err, CQ_EINVALID, "network: must be NONE, PUBLIC or ALLOWLIST");
        d->has_network = true;
    }
    json_t *allow = json_object_get(root, "allow");
    bool allowlist = d->has_network && d->network == CQ_NETWORK_ALLOWLIST;
    if (allow == NULL) {
        if (allowlist)
            return cq_error_set(err, CQ_EINVALID,
                                "allow: network ALLOWLIST needs at least one destination");
        return 0;
    }
    if (!allowlist)
        return cq_error_set(err, CQ_EINVALID, "allow: destinations go with network ALLOWLIST only");
    if (!json_is_array(allow) || json_array_size(allow) == 0 ||
        json_array_size(allow) > CQ_NET_MAX_RULES)
        return cq_error_set(err, CQ_EINVALID, "allow: must be an array of 1 to %d destinations",
                            CQ_NET_MAX_RULES);
    d->allow = calloc(json_array_size(allow) + 1, sizeof(char *));
    if (d->allow == NULL)
        return cq_error_sys(err, ENOMEM, "allow");
    size_t i;
    json_t *item;
    json_array_foreach(allow, i, item)
    {
        struct cq_net_dest dest;
        if (!json_is_string(item))
            return cq_error_set(err, CQ_EINVALID, "allow[%zu]: must be a string", i);
        /* A comma would split getSession's networkAllow text; no DEST has one. */
        if (strchr(json_string_value(item), ',') != NULL ||
            cq_net_dest_parse(json_string_value(item), &dest, err) < 0)
            return cq_error_set(err, CQ_EINVALID,
                                "allow[%zu] '%.80s': not a destination (NAME, *.NAME, IP or "
                                "CIDR, with an optional :PORT)",
                                i, json_string_value(item));
        if ((d->allow[i] = strdup(json_string_value(item))) == NULL)
            return cq_error_sys(err, ENOMEM, "allow");
        d->n_allow = i + 1;
    }
    return 0;
}

/* "tenants": who may start sessions on it in a fleet. A name the keys could not hold
 * would be a list that admits nobody by mistake: refused here, as a typo should be. */
static int parse_tenants(json_t *root, struct cq_interpreter_def *d, struct cq_error *err)
{
    json_t *list = json_object_get(root, "tenants");
    if (list == NULL)
        return 0;
    if (!json_is_array(list) || json_array_size(list) > CQ_INTERPRETER_TENANTS_MAX)
        return cq_error_set(err, CQ_EINVALID,
                            "tenants: must be an array of at most %d tenant names (empty: every "
                            "tenant)",
                            CQ_INTERPRETER_TENANTS_MAX);
    if (json_array_size(list) == 0)
        return 0;
    d->tenants = calloc(json_array_size(list) + 1, sizeof(char *));
    if (d->tenants == NULL)
        return cq_error_sys(err, ENOMEM, "tenants");
    size_t i;
    json_t *item;
    json_array_foreach(list, i, item)
    {
        const char *name = json_string_value(item);
        if (name == NULL || !cq_tenant_name_ok(name))
            return cq_error_set(err, CQ_EINVALID,
                                "tenants[%zu]%s%.80s%s: not a tenant name (1 to %d of a-z, 0-9 "
                                "and '-', not starting with '-')",
                                i, name != NULL ? " '" : "", name != NULL ? name : "",
                                name != NULL ? "'" : "", CQ_TENANT_MAX);
        for (size_t j = 0; j < d->n_tenants; j++)
            if (strcmp(d->tenants[j], name) == 0)
                return cq_error_set(err, CQ_EINVALID, "tenants[%zu] '%s': named twice", i, name);
        if ((d->tenants[i] = strdup(name)) == NULL)
            return cq_error_sys(err, ENOMEM, "tenants");
        d->n_tenants = i + 1;
    }
    return 0;
}

static int parse_obj(json_t *root, struct cq_interpreter_def *d, struct cq_error *err)
{
    if (!json_is_object(root))
        return cq_error_set(err, CQ_EINVALID, "a definition must be a JSON object");
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v)
    {
        bool ok = false;
        for (size_t i = 0; i < CQ_ARRAY_LEN(known_keys); i++)
            ok |= strcmp(key, known_keys[i]) == 0;
        if (!ok)
            return cq_error_set(err, CQ_EINVALID,
                                "unknown key '%.80s' (known: name, runtime, network, allow, "
                                "memory, cpus, disk, sessionTimeoutSeconds, warmPool, tenants, "
                                "createdAt, agentcore)",
                                key);
    }
    v = json_object_get(root, "name");
    if (!json_is_string(v))
        return cq_error_set(err, CQ_EINVALID, "name: required, a string");
    if (cq_runtime_name_check(json_string_value(v), err) < 0)
        return -1;
    snprintf(d->name, sizeof(d->name), "%s", json_string_value(v));
    if ((v = json_object_get(root, "runtime")) != NULL) {
        if (!json_is_string(v))
            return cq_error_set(err, CQ_EINVALID, "runtime: must be a runtime's name");
        if (cq_runtime_name_check(json_string_value(v), err) < 0)
            return cq_error_prefix(err, "runtime");
        snprintf(d->runtime, sizeof(d->runtime), "%s", json_string_value(v));
    }
    if (parse_network(root, d, err) < 0 || parse_tenants(root, d, err) < 0 ||
        parse_agentcore(root, d, err) < 0)
        return -1;
    uint64_t u = 0;
    if (get_uint(root, "memory", MEMORY_MIN, SIZE_MAX_BYTES, &d->memory_bytes, " bytes", err) < 0 ||
        get_uint(root, "disk", DISK_MIN, SIZE_MAX_BYTES, &d->disk_bytes, " bytes", err) < 0 ||
        get_uint(root, "sessionTimeoutSeconds", 1, CQ_WORKER_MAX_SESSION_TTL_S, &u, "", err) < 0)
        return -1;
    d->session_timeout_s = (uint32_t)u;
    u = 0;
    if (get_uint(root, "warmPool", 0, WARM_POOL_MAX, &u, "", err) < 0)
        return -1;
    d->warm_pool = (unsigned)u;
    if ((v = json_object_get(root, "cpus")) != NULL) {
        if (!json_is_number(v) || json_number_value(v) < CPUS_MIN ||
            json_number_value(v) > CPUS_MAX)
            return cq_error_set(err, CQ_EINVALID,
                                "cpus: must be a number from %.2f to %.0f (omit it for the "
                                "worker's default)",
                                CPUS_MIN, CPUS_MAX);
        d->cpus = json_number_value(v);
    }
    if ((v = json_object_get(root, "createdAt")) != NULL &&
        (!json_is_string(v) || parse_time(json_string_value(v), &d->created_ms) < 0))
        return cq_error_set(err, CQ_EINVALID,
                            "createdAt: must be a UTC time like 2026-01-31T12:00:00.000Z");
    return 0;
}

int cq_interpreter_def_parse(const char *json, size_t len, struct cq_interpreter_def *def,
                             struct cq_error *err)
{
    memset(def, 0, sizeof(*def));
    json_error_t jerr;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL)
        return cq_error_set(err, CQ_EINVALID,
                            "interpreter: malformed JSON at line %d, column %d: %s", jerr.line,
                            jerr.column, jerr.text);
    int rc = parse_obj(root, def, err);
    json_decref(root);
    if (rc < 0) {
        cq_interpreter_def_free(def);
        return cq_error_prefix(err, "interpreter");
    }
    return 0;
}

char *cq_interpreter_def_json(const struct cq_interpreter_def *d)
{
    json_t *o = json_object();
    if (o == NULL)
        return NULL;
    json_object_set_new(o, "name", json_string(d->name));
    if (d->runtime[0] != '\0')
        json_object_set_new(o, "runtime", json_string(d->runtime));
    if (d->has_network)
        json_object_set_new(o, "network", json_string(cq_net_mode_name(d->network)));
    if (d->n_allow > 0) {
        json_t *allow = json_array();
        for (size_t i = 0; i < d->n_allow; i++)
            json_array_append_new(allow, json_string(d->allow[i]));
        json_object_set_new(o, "allow", allow);
    }
    if (d->memory_bytes > 0)
        json_object_set_new(o, "memory", json_integer((json_int_t)d->memory_bytes));
    if (d->cpus > 0)
        json_object_set_new(o, "cpus", json_real(d->cpus));
    if (d->disk_bytes > 0)
        json_object_set_new(o, "disk", json_integer((json_int_t)d->disk_bytes));
    if (d->session_timeout_s > 0)
        json_object_set_new(o, "sessionTimeoutSeconds", json_integer(d->session_timeout_s));
    json_object_set_new(o, "warmPool", json_integer(d->warm_pool));
    if (d->n_tenants > 0) {
        json_t *tenants = json_array();
        for (size_t i = 0; i < d->n_tenants; i++)
            json_array_append_new(tenants, json_string(d->tenants[i]));
        json_object_set_new(o, "tenants", tenants);
    }
    if (d->created_ms > 0) {
        char when[32];
        format_time(d->created_ms, when);
        json_object_set_new(o, "createdAt", json_string(when));
    }
    json_t *agentcore = json_object();
    for (size_t i = 0; i < CQ_ARRAY_LEN(agentcore_keys); i++) {
        const char *value = *agentcore_field((struct cq_interpreter_def *)d, i);
        if (value != NULL)
            json_object_set_new(agentcore, agentcore_keys[i].key, json_string(value));
    }
    if (json_object_size(agentcore) > 0)
        json_object_set_new(o, "agentcore", agentcore);
    else
        json_decref(agentcore);
    char *text = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(o);
    return text;
}

char *cq_interpreter_def_tenants(const struct cq_interpreter_def *d)
{
    size_t len = 1;
    for (size_t i = 0; i < d->n_tenants; i++)
        len += strlen(d->tenants[i]) + 1;
    char *out = malloc(len), *p = out;
    if (out == NULL)
        return NULL;
    *p = '\0';
    for (size_t i = 0; i < d->n_tenants; i++)
        p += sprintf(p, "%s%s", i > 0 ? "," : "", d->tenants[i]);
    return out;
}

void cq_interpreter_def_free(struct cq_interpreter_def *def)
{
    for (size_t i = 0; def->allow != NULL && i < def->n_allow; i++)
        free(def->allow[i]);
    free(def->allow);
    def->allow = NULL;
    def->n_allow = 0;
    for (size_t i = 0; def->tenants != NULL && i < def->n_tenants; i++)
        free(def->tenants[i]);
    free(def->tenants);
    def->tenants = NULL;
    def->n_tenants = 0;
    for (size_t i = 0; i < CQ_ARRAY_LEN(agentcore_keys); i++) {
        free(*agentcore_field(def, i));
        *agentcore_field(def, i) = NULL;
    }
}

/* The built-in one: the worker's own settings (its defaults, as cq_worker_config_init
 * sets them), no runtime, the policy's default network. */
static void builtin_def(struct cq_interpreter_def *d)
{
    memset(d, 0, sizeof(*d));
    snprintf(d->name, sizeof(d->name), "%s", CQ_INTERPRETER_DEFAULT);
    d->memory_bytes = CQ_SANDBOX_DEFAULT_MEMORY;
    d->cpus = CQ_SANDBOX_DEFAULT_CPUS;
    d->disk_bytes = CQ_SANDBOX_DEFAULT_DISK;
    d->session_timeout_s = CQ_WORKER_DEFAULT_SESSION_TTL_S;
}

/* --- the local store ---------------------------------------------------------------- */

static int def_path(const char *store, const char *name, char *out, size_t len,
                    struct cq_error *err)
{
    if (cq_runtime_name_check(name, err) < 0)
        return cq_error_prefix(err, "interpreter");
    if ((size_t)snprintf(out, len, "%s/" INTERPRETERS "/%s.json", store, name) >= len)
        return cq_error_set(err, ENAMETOOLONG, "%s: path too long", store);
    return 0;
}

int cq_interpreter_save(const char *store, const struct cq_interpreter_def *def, bool replace,
                        struct cq_error *err)
{
    store = cq_runtime_store_path(store);
    if (strcmp(def->name, CQ_INTERPRETER_DEFAULT) == 0)
        return cq_error_set(err, CQ_EINVALID,
                            "interpreter '%s' is built in: it cannot be created, replaced or "
                            "deleted",
                            def->name);
    char path[PATH_MAX], tmp[PATH_MAX + 8];
    if (def_path(store, def->name, path, sizeof(path), err) < 0)
        return -1;
    /* Under the builds' lock: the runtime is checked and the definition written while
     * no build or removal changes the runtimes. */
    cq_autoclose int lock = cq_runtime_store_lock(store, true, err);
    if (lock < 0)
        return -1;
    char digest[CQ_RUNTIME_DIGEST_LEN + 1];
    if (def->runtime[0] != '\0' && cq_runtime_lookup(store, def->runtime, digest, err) < 0)
        return cq_error_prefix(err, "interpreter '%s': runtime", def->name);
    if (!replace && access(path, F_OK) == 0)
        return cq_error_set(err, EEXIST, "interpreter '%s' exists already (--replace replaces it)",
                            def->name);
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s/" INTERPRETERS, store);
    if (mkdir(dir, 0755) < 0 && errno != EEXIST)
        return cq_error_sys(err, errno, "mkdir %s", dir);

    struct cq_interpreter_def stamped = *def;
    if (stamped.created_ms == 0)
        stamped.created_ms = cq_unix_ms();
    cq_autofree char *text = cq_interpreter_def_json(&stamped);
    if (text == NULL)
        return cq_error_sys(err, ENOMEM, "interpreter '%s'", def->name);
    /* Written beside and renamed over: a reader sees the old definition or the new one,
     * never half of one. Under the lock, so two writers do not share the temporary. */
    snprintf(tmp, sizeof(tmp), "%s/" INTERPRETERS "/.%s.new", store, def->name);
    cq_autoclose int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0)
        return cq_error_sys(err, errno, "create %s", tmp);
    size_t len = strlen(text);
    if (write(fd, text, len) != (ssize_t)len || write(fd, "\n", 1) != 1 || fsync(fd) < 0) {
        int e = errno;
        unlink(tmp);
        return cq_error_sys(err, e, "write %s", tmp);
    }
    if (rename(tmp, path) < 0) {
        int e = errno;
        unlink(tmp);
        return cq_error_sys(err, e, "rename %s", tmp);
    }
    return 0;
}

int cq_interpreter_load(const char *store, const char *name, struct cq_interpreter_def *def,
                        struct cq_error *err)
{
    memset(def, 0, sizeof(*def));
    if (strcmp(name, CQ_INTERPRETER_DEFAULT) == 0) {
        builtin_def(def);
        return 0;
    }
    store = cq_runtime_store_path(store);
    char path[PATH_MAX];
    if (def_path(store, name, path, sizeof(path), err) < 0)
        return -1;
    cq_autoclose int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return errno == ENOENT ? cq_error_set(err, CQ_ENOTFOUND,
                                              "no interpreter '%s' (codeq interpreter list "
                                              "shows those of the store %s)",
                                              name, store)
                               : cq_error_sys(err, errno, "open %s", path);
    cq_autofree uint8_t *text = NULL;
    size_t len;
    if (cq_read_fd_limit(fd, DEF_MAX, &text, &len, err) < 0 ||
        cq_interpreter_def_parse((const char *)text, len, def, err) < 0)
        return cq_error_prefix(err, "%s", path);
    if (strcmp(def->name, name) != 0) {
        cq_interpreter_def_free(def);
        return cq_error_set(err, CQ_EINTERNAL, "%s: names interpreter '%s'", path, def->name);
    }
    return 0;
}

int cq_interpreter_remove(const char *store, const char *name, struct cq_error *err)
{
    if (strcmp(name, CQ_INTERPRETER_DEFAULT) == 0)
        return cq_error_set(err, CQ_EINVALID,
                            "interpreter '%s' is built in: it cannot be created, replaced or "
                            "deleted",
                            name);
    store = cq_runtime_store_path(store);
    char path[PATH_MAX];
    if (def_path(store, name, path, sizeof(path), err) < 0)
        return -1;
    cq_autoclose int lock = cq_runtime_store_lock(store, true, err);
    if (lock < 0)
        return -1;
    if (unlink(path) < 0)
        return errno == ENOENT ? cq_error_set(err, CQ_ENOTFOUND,
                                              "no interpreter '%s' in the store %s", name, store)
                               : cq_error_sys(err, errno, "unlink %s", path);
    return 0;
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int cq_interpreter_list(const char *store,
                        void (*fn)(void *ctx, const struct cq_interpreter_def *d), void *ctx,
                        struct cq_error *err)
{
    store = cq_runtime_store_path(store);
    struct cq_interpreter_def d;
    builtin_def(&d);
    fn(ctx, &d);
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s/" INTERPRETERS, store);
    cq_autoclosedir DIR *dp = opendir(dir);
    if (dp == NULL)
        return errno == ENOENT ? 0 : cq_error_sys(err, errno, "opendir %s", dir);
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(dp)) != NULL) {
        size_t len = strlen(e->d_name);
        /* Temporaries start with '.'; anything else not NAME.json is not ours. */
        if (e->d_name[0] == '.' || len <= 5 || strcmp(e->d_name + len - 5, ".json") != 0)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            char **grown = realloc(names, cap * sizeof(char *));
            if (grown == NULL) {
                rc = cq_error_sys(err, ENOMEM, "interpreters");
                break;
            }
            names = grown;
        }
        if ((names[n] = strndup(e->d_name, len - 5)) == NULL) {
            rc = cq_error_sys(err, ENOMEM, "interpreters");
            break;
        }
        n++;
    }
    if (n > 0)
        qsort(names, n, sizeof(char *), cmp_name);
    for (size_t i = 0; i < n; i++) {
        /* One unreadable file does not hide the others: it is skipped (load names it). */
        if (rc == 0 && strcmp(names[i], CQ_INTERPRETER_DEFAULT) != 0 &&
            cq_interpreter_load(store, names[i], &d, NULL) == 0) {
            fn(ctx, &d);
            cq_interpreter_def_free(&d);
        }
        free(names[i]);
    }
    free(names);
    return rc;
}

/* --- the profile ------------------------------------------------------------------------ */

/* The preload list of the layer's manifest (its spec's "preload"). */
static int manifest_preload(const char *store, const char *digest, char ***out,
                            struct cq_error *err)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/layers/%s/manifest.json", store, digest);
    cq_autoclose int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return cq_error_sys(err, errno, "open %s", path);
    cq_autofree uint8_t *text = NULL;
    size_t len;
    if (cq_read_fd_limit(fd, MANIFEST_MAX, &text, &len, err) < 0)
        return -1;
    json_t *m = json_loadb((const char *)text, len, 0, NULL);
    json_t *preload = json_object_get(json_object_get(m, "spec"), "preload");
    size_t n = json_is_array(preload) ? json_array_size(preload) : 0;
    *out = calloc(n + 1, sizeof(char *));
    int rc = *out == NULL ? cq_error_sys(err, ENOMEM, "preload") : 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const char *mod = json_string_value(json_array_get(preload, i));
        if (mod == NULL)
            rc = cq_error_set(err, CQ_EINTERNAL, "%s: bad preload list", path);
        else if (((*out)[i] = strdup(mod)) == NULL)
            rc = cq_error_sys(err, ENOMEM, "preload");
    }
    json_decref(m);
    return rc;
}

int cq_interpreter_profile(const char *store, const struct cq_interpreter_def *def,
                           struct cq_interpreter_profile *out, struct cq_error *err)
{
    memset(out, 0, sizeof(*out));
    store = cq_runtime_store_path(store);
    struct cq_interpreter *w = &out->worker;
    w->name = def->name;
    if (def->runtime[0] != '\0') {
        if (cq_runtime_sandbox_binds(store, def->runtime, &out->runtime, err) < 0)
            return cq_error_prefix(err, "interpreter '%s'", def->name);
        /* The digest of the layer bound, not a second lookup of the name: a build
         * between the two could point the name elsewhere. */
        const char *slash = strrchr(out->runtime.sandbox_path, '/');
        snprintf(out->digest, sizeof(out->digest), "%s", slash != NULL ? slash + 1 : "");
        if (manifest_preload(store, out->digest, &out->preload, err) < 0) {
            cq_interpreter_profile_free(out);
            return cq_error_prefix(err, "interpreter '%s': runtime '%s'", def->name, def->runtime);
        }
        w->layer = out->runtime.bind;
        w->runtime = def->runtime;
        w->runtime_digest = out->digest;
        w->env = (const char *const *)out->runtime.env;
        w->preload = (const char *const *)out->preload;
    }
    w->limits.memory_bytes = def->memory_bytes;
    w->limits.cpus = def->cpus;
    w->limits.workspace_bytes = def->disk_bytes;
    if (def->has_network) {
        out->network = def->network;
        w->network = &out->network;
    }
    w->allow = (const char *const *)def->allow;
    w->n_allow = def->n_allow;
    w->session_timeout_s = def->session_timeout_s;
    w->warm_pool = def->warm_pool;
    return 0;
}

void cq_interpreter_profile_free(struct cq_interpreter_profile *p)
{
    cq_runtime_sandbox_free(&p->runtime);
    for (size_t i = 0; p->preload != NULL && p->preload[i] != NULL; i++)
        free(p->preload[i]);
    free(p->preload);
    memset(p, 0, sizeof(*p));
}
