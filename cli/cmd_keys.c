/* cli/cmd_keys.c - `codeq tenant` and `codeq key`: the fleet's keys file.
 *
 * Every change is a read, an edit and an atomic replace of the file, under an exclusive
 * lock (flock on FILE.lock), so that two operators (or a script) never lose each
 * other's edits. The daemons pick the change up within a second. */
#define _GNU_SOURCE
#include "cli/cli.h"
#include "common/cleanup.h"
#include "fleet/config.h"
#include "fleet/keyring.h"
#include "fleet/keys.h"

#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>

#define DEFAULT_KEYS_FILE "/etc/codeq/keys"

static void tenant_usage(FILE *out)
{
    fprintf(out, "usage: codeq tenant create NAME [--quota NAME=VALUE]... [--keys FILE]\n"
                 "       codeq tenant set NAME --quota NAME=VALUE... [--keys FILE]\n"
                 "       codeq tenant list [--keys FILE]\n"
                 "       codeq tenant delete NAME [--keys FILE]\n"
                 "\n"
                 "Manages the tenants of a codeq fleet in its keys file (the daemons' keys_file;\n"
                 "docs/security.md). A tenant's sessions are its own: other tenants cannot see,\n"
                 "read, run in or stop them. Deleting a tenant deletes its keys: its clients are\n"
                 "refused from then on (its sessions run out their time).\n"
                 "\n"
                 "  --quota N=V   a quota of the tenant (repeatable; 0 removes it, and the\n"
                 "                fleet's tenant_max_* default applies): sessions (live at\n"
                 "                once), executions (code or commands running at once),\n"
                 "                stored_bytes (workspace files in Redis, e.g. 10G), rps\n"
                 "                (requests a second); past one the fleet answers\n"
                 "                LIMIT_EXCEEDED naming it\n"
                 "  --keys FILE   the keys file (CODEQ_KEYS_FILE; default " DEFAULT_KEYS_FILE ");\n"
                 "                made, mode 0600, by the first `tenant create`; or redis: the\n"
                 "                keyring in the fleet's Redis (CODEQ_REDIS, CODEQ_REDIS_PREFIX)\n"
                 "  -h, --help    show this help\n"
                 "\n"
                 "A tenant name is 1-40 characters of a-z, 0-9 and '-': it becomes part of topic\n"
                 "names (the tenant's replies go to codeq.replies.<tenant>.*).\n");
}

static void key_usage(FILE *out)
{
    fprintf(out, "usage: codeq key create TENANT [--keys FILE]\n"
                 "       codeq key list [TENANT] [--keys FILE]\n"
                 "       codeq key revoke KEY_ID [--keys FILE]\n"
                 "\n"
                 "Manages the signing keys of a fleet's tenants (docs/security.md). `create`\n"
                 "prints the new key's credentials once, in the credentials file format clients\n"
                 "read (codeq exec --credentials FILE, CODEQ_CREDENTIALS, the Python client):\n"
                 "save them where only the client can read them. A tenant may have several keys:\n"
                 "create the new one, move the clients over, then revoke the old one (the fleet\n"
                 "refuses it within a second). Secrets are never printed again, nor logged.\n"
                 "\n"
                 "  --keys FILE   the keys file (CODEQ_KEYS_FILE; default " DEFAULT_KEYS_FILE "),\n"
                 "                or redis: the keyring in the fleet's Redis (CODEQ_REDIS, ...)\n"
                 "  -h, --help    show this help\n");
}

/* keys_file = redis: the keyring of the Redis the CODEQ_* settings name, as the daemons
 * find it (one per process: this command edits once). */
static struct cq_keyring *keyring(struct cq_error *err)
{
    static struct cq_keyring *kr;
    if (kr != NULL)
        return kr;
    struct cq_fleet_config cfg;
    cq_fleet_config_init(&cfg);
    char *no_args[] = {"codeq", NULL};
    bool help;
    if (cq_fleet_config_load(&cfg, 1, no_args, &help, err) < 0 ||
        cq_keyring_open(&cfg, &kr, err) < 0)
        return NULL;
    return kr;
}

static int keys_read(const char *path, bool missing_ok, struct cq_keyfile *kf, struct cq_error *err)
{
    if (!cq_keyring_named(path))
        return cq_keyfile_read(path, missing_ok, kf, err);
    struct cq_keyring *kr = keyring(err);
    return kr != NULL ? cq_keyring_read(kr, kf, err) : -1;
}

static int keys_write(const char *path, const struct cq_keyfile *kf, struct cq_error *err)
{
    if (!cq_keyring_named(path))
        return cq_keyfile_write(path, kf, err);
    struct cq_keyring *kr = keyring(err);
    return kr != NULL ? cq_keyring_write(kr, kf, err) : -1;
}

/* The keys file locked for a change: the lock is released when the fd closes. The
 * keyring needs none: its writes check that nobody wrote since it was read. */
static int lock_file(const char *path, int *fd, struct cq_error *err)
{
    if (cq_keyring_named(path))
        return 0;
    char lock[4200];
    snprintf(lock, sizeof(lock), "%s.lock", path);
    *fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (*fd < 0)
        return cq_error_sys(err, errno, "open %s", lock);
    if (flock(*fd, LOCK_EX) < 0)
        return cq_error_sys(err, errno, "lock %s", lock);
    return 0;
}

static int fail(const char *cmd, const struct cq_error *err)
{
    fprintf(stderr, "codeq %s: %s\n", cmd, err->msg);
    return err->code == CQ_EINVALID || err->code == CQ_ENOTFOUND ? 1 : CQ_EXIT_INTERNAL;
}

/* Parses [--keys FILE], [--quota N=V] (quota not NULL) and -h around the positional
 * arguments; returns the count of positionals left in argv (from index 1 on), or -1
 * after help or a bad option (*rc set). */
static int parse(const char *cmd, int argc, char **argv, void (*usage)(FILE *), const char **keys,
                 char **pos, int max_pos, struct cq_quota *quota, bool *quota_given, int *rc)
{
    static const struct option longopts[] = {
        {"keys", required_argument, NULL, 'k'},
        {"quota", required_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct cq_error err;
    *keys = getenv("CODEQ_KEYS_FILE");
    if (*keys == NULL || (*keys)[0] == '\0')
        *keys = DEFAULT_KEYS_FILE;
    opterr = 0;
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'h':
            usage(stdout);
            *rc = 0;
            return -1;
        case 'k':
            *keys = optarg;
            break;
        case 'q': {
            char *eq = strchr(optarg, '=');
            if (quota == NULL || eq == NULL) {
                *rc = cq_usage_error(cmd, quota == NULL ? "--quota is for tenants"
                                                        : "--quota takes NAME=VALUE");
                return -1;
            }
            *eq = '\0';
            if (cq_quota_set(quota, optarg, eq + 1, &err) < 0) {
                *rc = cq_usage_error(cmd, "--quota: %s", err.msg);
                return -1;
            }
            *quota_given = true;
            break;
        }
        default:
            *rc = cq_usage_error(cmd, "unknown option '%s'", argv[optind - 1]);
            return -1;
        }
    }
    int n = 0;
    for (int i = optind; i < argc; i++) {
        if (n == max_pos) {
            *rc = cq_usage_error(cmd, "unexpected argument '%s'", argv[i]);
            return -1;
        }
        pos[n++] = argv[i];
    }
    return n;
}

static void print_time(int64_t unix_s, char *out, size_t len)
{
    time_t t = (time_t)unix_s;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

int cq_cmd_tenant(int argc, char **argv)
{
    const char *keys;
    char *pos[2];
    int rc = 0;
    /* Every quota starts unset: --quota gives the ones to set (0 unsets). */
    struct cq_quota quota = {UINT64_MAX, UINT64_MAX, UINT64_MAX, UINT64_MAX};
    bool quota_given = false;
    int n = parse("tenant", argc, argv, tenant_usage, &keys, pos, 2, &quota, &quota_given, &rc);
    if (n < 0)
        return rc;
    if (n == 0)
        return cq_usage_error("tenant", "a subcommand is needed: create, set, list or delete");
    const char *sub = pos[0];
    bool list = strcmp(sub, "list") == 0;
    if (!list && strcmp(sub, "create") != 0 && strcmp(sub, "delete") != 0 &&
        strcmp(sub, "set") != 0)
        return cq_usage_error("tenant", "unknown subcommand '%s'", sub);
    if (strcmp(sub, "set") == 0 && !quota_given)
        return cq_usage_error("tenant", "set needs --quota NAME=VALUE");
    if (quota_given && strcmp(sub, "create") != 0 && strcmp(sub, "set") != 0)
        return cq_usage_error("tenant", "--quota goes with create or set");
    if (list ? n != 1 : n != 2)
        return cq_usage_error("tenant", list ? "list takes no name" : "%s needs a tenant name",
                              sub);
    struct cq_error err;
    cq_autoclose int lock = -1;
    struct cq_keyfile kf;
    if ((!list && lock_file(keys, &lock, &err) < 0) ||
        keys_read(keys, strcmp(sub, "create") == 0, &kf, &err) < 0)
        return fail("tenant", &err);
    if (list) {
        for (size_t i = 0; i < kf.n_tenants; i++) {
            size_t active = 0;
            for (size_t k = 0; k < kf.n_keys; k++)
                active += strcmp(kf.keys[k].tenant, kf.tenants[i].name) == 0 && !kf.keys[k].revoked;
            char when[32];
            print_time(kf.tenants[i].created_unix, when, sizeof(when));
            const struct cq_quota *q = &kf.tenants[i].quota;
            printf("%-40s created %s, %zu active key%s; quotas (0: the fleet's default): "
                   "sessions=%llu executions=%llu stored_bytes=%llu rps=%llu\n",
                   kf.tenants[i].name, when, active, active == 1 ? "" : "s",
                   (unsigned long long)q->sessions, (unsigned long long)q->executions,
                   (unsigned long long)q->stored_bytes, (unsigned long long)q->rps);
        }
        cq_keyfile_free(&kf);
        return 0;
    }
    bool create = strcmp(sub, "create") == 0, set = strcmp(sub, "set") == 0;
    rc = create ? cq_keyfile_add_tenant(&kf, pos[1], &err)
         : set  ? 0
                : cq_keyfile_remove_tenant(&kf, pos[1], &err);
    struct cq_keyfile_tenant *t = NULL;
    for (size_t i = 0; rc == 0 && i < kf.n_tenants; i++)
        if (strcmp(kf.tenants[i].name, pos[1]) == 0)
            t = &kf.tenants[i];
    if (rc == 0 && set && t == NULL)
        rc = cq_error_set(&err, CQ_ENOTFOUND, "no tenant '%s'", pos[1]);
    if (rc == 0 && t != NULL) {
        uint64_t *mine[] = {&t->quota.sessions, &t->quota.executions, &t->quota.stored_bytes,
                            &t->quota.rps};
        const uint64_t given[] = {quota.sessions, quota.executions, quota.stored_bytes, quota.rps};
        for (size_t i = 0; i < 4; i++)
            if (given[i] != UINT64_MAX)
                *mine[i] = given[i];
    }
    if (rc < 0 || keys_write(keys, &kf, &err) < 0) {
        cq_keyfile_free(&kf);
        return fail("tenant", &err);
    }
    cq_keyfile_free(&kf);
    fprintf(stderr, "tenant %s %s in %s%s\n", pos[1],
            create ? "created"
            : set  ? "updated"
                   : "deleted",
            keys, create ? "; give it a key: codeq key create <tenant>" : "");
    return 0;
}

int cq_cmd_key(int argc, char **argv)
{
    const char *keys;
    char *pos[2];
    int rc = 0;
    int n = parse("key", argc, argv, key_usage, &keys, pos, 2, NULL, NULL, &rc);
    if (n < 0)
        return rc;
    if (n == 0)
        return cq_usage_error("key", "a subcommand is needed: create, list or revoke");
    const char *sub = pos[0];
    bool list = strcmp(sub, "list") == 0;
    if (!list && strcmp(sub, "create") != 0 && strcmp(sub, "revoke") != 0)
        return cq_usage_error("key", "unknown subcommand '%s'", sub);
    if (!list && n != 2)
        return cq_usage_error("key", "%s needs %s", sub,
                              strcmp(sub, "create") == 0 ? "a tenant name" : "a key id");
    struct cq_error err;
    cq_autoclose int lock = -1;
    struct cq_keyfile kf;
    if ((!list && lock_file(keys, &lock, &err) < 0) || keys_read(keys, false, &kf, &err) < 0)
        return fail("key", &err);
    if (list) {
        /* Ids, tenants and states only: secrets are shown once, at creation. */
        for (size_t i = 0; i < kf.n_keys; i++) {
            const struct cq_key *k = &kf.keys[i];
            if (n == 2 && strcmp(k->tenant, pos[1]) != 0)
                continue;
            char when[32];
            print_time(k->revoked ? k->revoked_unix : k->created_unix, when, sizeof(when));
            printf("%s  %-40s %s %s\n", k->id, k->tenant, k->revoked ? "revoked" : "active ", when);
        }
        cq_keyfile_free(&kf);
        return 0;
    }
    struct cq_key key;
    bool create = strcmp(sub, "create") == 0;
    if ((create ? cq_keyfile_add_key(&kf, pos[1], &key, &err)
                : cq_keyfile_revoke_key(&kf, pos[1], &err)) < 0 ||
        keys_write(keys, &kf, &err) < 0) {
        cq_keyfile_free(&kf);
        return fail("key", &err);
    }
    cq_keyfile_free(&kf);
    if (!create) {
        fprintf(stderr, "key %s revoked; the fleet refuses it within a second\n", pos[1]);
        return 0;
    }
    /* The credentials file format (fleet/keys.h, cq_credentials_load()). */
    printf("tenant = %s\nkey_id = %s\nsecret = %s\n", key.tenant, key.id, key.secret);
    explicit_bzero(&key, sizeof(key));
    fprintf(stderr, "key created: the secret above is shown this once; keep it where only "
                    "the client can read it (mode 600)\n");
    return 0;
}
