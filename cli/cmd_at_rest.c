/* cli/cmd_at_rest.c - `codeq at-rest`: the keys of encryption at rest in a fleet's
 * Redis (docs/security.md, "Encryption at rest").
 *
 * Named apart from `codeq key` (tenants' signing keys) on purpose: these keys sign
 * nothing, and one letter must not separate two commands that do unrelated things to
 * secrets. The Redis connection is the daemons' (fleet/config.h: CODEQ_* environment,
 * --config FILE, --<setting> VALUE). */
#define _GNU_SOURCE
#include "cli/cli.h"
#include "fleet/config.h"
#include "fleet/crypt.h"
#include "fleet/keys.h"
#include "fleet/store.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CMD "at-rest"

static void usage(FILE *out)
{
    fprintf(out, "usage: codeq at-rest rotate-master --old FILE --new FILE [SETTINGS]\n"
                 "       codeq at-rest rotate-data TENANT [SETTINGS]\n"
                 "\n"
                 "The keys that encrypt what a fleet keeps in Redis (master_key_file).\n"
                 "\n"
                 "  rotate-master  re-wraps every tenant's data keys, now under the master key\n"
                 "                 of --old, under the one of --new; the data is not touched.\n"
                 "                 Then restart the daemons with master_key_file = the new file.\n"
                 "                 Safe to run again after a failure.\n"
                 "  rotate-data    adds a data key version for TENANT (\"\" for a keyless fleet):\n"
                 "                 new values use it (running daemons within 30 s), older\n"
                 "                 values stay readable with theirs. Needs master_key_file.\n"
                 "\n"
                 "SETTINGS: --config FILE or --<setting> VALUE, as for the daemons, over the\n"
                 "CODEQ_* environment (CODEQ_REDIS, CODEQ_REDIS_PREFIX, CODEQ_MASTER_KEY_FILE,\n"
                 "CODEQ_REDIS_PASSWORD_FILE, ...).\n");
}

static int fail(const struct cq_error *err)
{
    fprintf(stderr, "codeq " CMD ": %s\n", err->msg);
    return err->code == CQ_EINVALID || err->code == CQ_EDENIED ? 1 : CQ_EXIT_INTERNAL;
}

/* Splits argv (from the action on) into --old/--new, one positional (TENANT) and the
 * fleet settings, which go to cq_fleet_config_load() in rest (rest[0] = the action). */
static int parse(int argc, char **argv, const char **old_file, const char **new_file,
                 const char **tenant, char **rest, int *n_rest)
{
    *n_rest = 0;
    rest[(*n_rest)++] = argv[0];
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--old") == 0 || strcmp(argv[i], "--new") == 0) {
            if (i + 1 == argc)
                return cq_usage_error(CMD, "%s needs a file", argv[i]);
            *(argv[i][2] == 'o' ? old_file : new_file) = argv[i + 1];
            i++;
        } else if (strncmp(argv[i], "--", 2) == 0) {
            rest[(*n_rest)++] = argv[i];
            if (strchr(argv[i], '=') == NULL && i + 1 < argc)
                rest[(*n_rest)++] = argv[++i];
        } else if (*tenant == NULL) {
            *tenant = argv[i];
        } else {
            return cq_usage_error(CMD, "unexpected argument '%s'", argv[i]);
        }
    }
    return 0;
}

static int rotate_master(struct cq_fleet_config *cfg, const char *old_file, const char *new_file)
{
    struct cq_error err;
    struct cq_kms *from = NULL, *to = NULL;
    struct cq_store *st = NULL;
    size_t tenants = 0, keys = 0;
    /* The store needs no master key of its own here: the two are passed. */
    cfg->master_key_file[0] = '\0';
    int rc = cq_kms_local_open(old_file, &from, &err);
    if (rc == 0)
        rc = cq_kms_local_open(new_file, &to, &err);
    if (rc == 0)
        rc = cq_store_open(cfg, &st, &err);
    if (rc == 0)
        rc = cq_store_rewrap_data_keys(st, from, to, &tenants, &keys, &err);
    cq_store_close(st);
    cq_kms_free(from);
    cq_kms_free(to);
    if (rc < 0)
        return fail(&err);
    printf("re-wrapped %zu data keys of %zu tenants under the new master key\n", keys, tenants);
    return 0;
}

static int rotate_data(const struct cq_fleet_config *cfg, const char *tenant)
{
    struct cq_error err;
    if (tenant[0] != '\0' && !cq_tenant_name_ok(tenant)) {
        cq_error_set(&err, CQ_EINVALID, "'%s' is not a tenant name", tenant);
        return fail(&err);
    }
    if (cfg->master_key_file[0] == '\0') {
        cq_error_set(&err, CQ_EINVALID,
                     "no master key: set master_key_file (CODEQ_MASTER_KEY_FILE)");
        return fail(&err);
    }
    struct cq_store *st = NULL;
    uint32_t version = 0;
    int rc = cq_store_open(cfg, &st, &err);
    if (rc == 0)
        rc = cq_store_rotate_data_key(st, tenant, &version, &err);
    cq_store_close(st);
    if (rc < 0)
        return fail(&err);
    printf("tenant '%s': data key version %u is current\n", tenant, version);
    return 0;
}

int cq_cmd_at_rest(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? CQ_EXIT_USAGE : 0;
    }
    const char *action = argv[1];
    bool master = strcmp(action, "rotate-master") == 0;
    if (!master && strcmp(action, "rotate-data") != 0)
        return cq_usage_error(CMD, "unknown action '%s'", action);
    const char *old_file = NULL, *new_file = NULL, *tenant = NULL;
    char **rest = calloc((size_t)argc + 1, sizeof(*rest));
    int n_rest;
    if (rest == NULL) {
        fprintf(stderr, "codeq " CMD ": out of memory\n");
        return CQ_EXIT_INTERNAL;
    }
    int rc = parse(argc - 1, argv + 1, &old_file, &new_file, &tenant, rest, &n_rest);
    struct cq_fleet_config cfg;
    struct cq_error err;
    bool help = false;
    cq_fleet_config_init(&cfg);
    if (rc == 0 && cq_fleet_config_load(&cfg, n_rest, rest, &help, &err) < 0)
        rc = fail(&err);
    free(rest);
    if (rc != 0)
        return rc;
    if (help) {
        usage(stdout);
        return 0;
    }
    if (master) {
        if (old_file == NULL || new_file == NULL || tenant != NULL)
            return cq_usage_error(CMD, "rotate-master takes --old FILE and --new FILE only");
        return rotate_master(&cfg, old_file, new_file);
    }
    if (tenant == NULL || old_file != NULL || new_file != NULL)
        return cq_usage_error(CMD, "rotate-data takes a TENANT (\"\" for a keyless fleet)");
    return rotate_data(&cfg, tenant);
}
