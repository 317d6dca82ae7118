/* cli/fleet_defs.c - code interpreters and runtimes defined in a fleet's Redis
 * (cli/fleet_defs.h). Everything is checked here with the same parsers the workers use
 * (runtime/interpreter.h, runtime/runtime.h) before it reaches Redis, so a worker never
 * meets a definition it cannot read. */
#define _GNU_SOURCE
#include "cli/fleet_defs.h"
#include "cli/cli.h"
#include "common/cleanup.h"
#include "common/clock.h"
#include "common/fileutil.h"
#include "common/random.h"
#include "fleet/config.h"
#include "fleet/interpreters.h"
#include "fleet/log.h"
#include "fleet/store.h"
#include "runtime/interpreter.h"
#include "runtime/layer.h"
#include "runtime/runtime.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SPEC_MAX (1u << 20)
/* The CLI holds a runtime's build lock while it records the runtime and uploads its
 * layer, so that no worker starts building it from the spec meanwhile. */
#define PUSH_LOCK_MS (10 * 60 * 1000)

static int open_fleet(const char *cmd, const char *conf, struct cq_fleet_config *cfg,
                      struct cq_store **st)
{
    char *argv[] = {(char *)"codeq", (char *)"--config", (char *)conf, NULL};
    bool help = false;
    struct cq_error err;
    cq_fleet_config_init(cfg);
    if (cq_fleet_config_load(cfg, 3, argv, &help, &err) < 0 || cq_store_open(cfg, st, &err) < 0) {
        fprintf(stderr, "codeq %s: --fleet %s: %s\n", cmd, conf, err.msg);
        return 1;
    }
    return 0;
}

static int failed(const char *what, const struct cq_error *err)
{
    fprintf(stderr, "codeq %s: %s\n", what, err->msg);
    return 1;
}

/* ---- interpreters ---------------------------------------------------------------------- */

int cq_fleet_interpreter_create(const char *conf, const char *def_json, bool replace)
{
    struct cq_interpreter_def def;
    struct cq_error err;
    if (cq_interpreter_def_parse(def_json, strlen(def_json), &def, &err) < 0)
        return failed("interpreter create", &err);
    if (strcmp(def.name, CQ_INTERPRETER_DEFAULT) == 0) {
        cq_interpreter_def_free(&def);
        fprintf(stderr, "codeq interpreter create: '%s' is built in\n", CQ_INTERPRETER_DEFAULT);
        return 1;
    }
    if (def.created_ms == 0)
        def.created_ms = cq_unix_ms();
    struct cq_fleet_config cfg;
    struct cq_store *st = NULL;
    int rc = open_fleet("interpreter create", conf, &cfg, &st);
    if (rc == 0 && def.runtime[0] != '\0') {
        /* A runtime the fleet does not have would fail every session at its start. */
        struct cq_fleet_runtime rt;
        bool found;
        if (cq_store_runtime_get(st, def.runtime, &rt, &found, &err) < 0)
            rc = failed("interpreter create", &err);
        else if (!found) {
            fprintf(stderr,
                    "codeq interpreter create: the fleet has no runtime '%s' (codeq runtime "
                    "push SPEC.json --fleet CONF)\n",
                    def.runtime);
            rc = 1;
        }
        cq_fleet_runtime_free(&rt);
    }
    if (rc == 0 && def.n_tenants > 0 && cfg.keys_file[0] == '\0') {
        /* Keyless, requests name no tenant (the fleet refuses those that do): the
         * dispatcher would admit no session on it (fleet/interpreters.h). Said now,
         * rather than as NOT_FOUND at every start. */
        fprintf(stderr,
                "codeq interpreter create: tenants: the fleet of %s is keyless (no keys_file): "
                "its requests name no tenant, so no session could start on an interpreter "
                "limited to tenants\n",
                conf);
        rc = 1;
    }
    cq_autofree char *text = rc == 0 ? cq_interpreter_def_json(&def) : NULL;
    cq_autofree char *tenants = rc == 0 ? cq_interpreter_def_tenants(&def) : NULL;
    if (rc == 0 && (text == NULL || tenants == NULL))
        rc = CQ_EXIT_INTERNAL;
    if (rc == 0 &&
        cq_store_interpreter_put(st, def.name, def.runtime, tenants, text, replace, &err) < 0)
        rc = failed("interpreter create", &err);
    if (rc == 0)
        printf("%s\n", text);
    cq_interpreter_def_free(&def);
    cq_store_close(st);
    return rc;
}

int cq_fleet_interpreter_list(const char *conf)
{
    struct cq_fleet_config cfg;
    struct cq_store *st = NULL;
    if (open_fleet("interpreter list", conf, &cfg, &st) != 0)
        return 1;
    char **names;
    size_t n;
    struct cq_error err;
    int rc = 0;
    if (cq_store_interpreter_names(st, &names, &n, &err) < 0)
        rc = failed("interpreter list", &err);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        struct cq_fleet_interpreter it;
        bool found;
        if (cq_store_interpreter_get(st, names[i], &it, &found, &err) < 0) {
            rc = failed("interpreter list", &err);
            break;
        }
        if (found && !it.deleted)
            printf("%-32s %-32s %s\n", names[i], it.runtime[0] ? it.runtime : "-",
                   it.tenants[0] ? it.tenants : "*");
        cq_fleet_interpreter_free(&it);
    }
    cq_fleet_names_free(names, n);
    cq_store_close(st);
    return rc;
}

int cq_fleet_interpreter_get(const char *conf, const char *name)
{
    struct cq_fleet_config cfg;
    struct cq_store *st = NULL;
    if (open_fleet("interpreter get", conf, &cfg, &st) != 0)
        return 1;
    struct cq_fleet_interpreter it;
    bool found;
    struct cq_error err;
    int rc = 0;
    if (cq_store_interpreter_get(st, name, &it, &found, &err) < 0)
        rc = failed("interpreter get", &err);
    else if (!found || it.deleted) {
        fprintf(stderr, "codeq interpreter get: the fleet has no interpreter '%s'%s\n", name,
                found ? " (deleted)" : "");
        rc = 1;
    } else {
        printf("%s\n", it.def);
    }
    cq_fleet_interpreter_free(&it);
    cq_store_close(st);
    return rc;
}

int cq_fleet_interpreter_delete(const char *conf, const char *name)
{
    struct cq_fleet_config cfg;
    struct cq_store *st = NULL;
    if (open_fleet("interpreter delete", conf, &cfg, &st) != 0)
        return 1;
    struct cq_error err;
    int rc =
        cq_store_interpreter_delete(st, name, &err) < 0 ? failed("interpreter delete", &err) : 0;
    cq_store_close(st);
    return rc;
}

/* ---- runtimes ---------------------------------------------------------------------------- */

static int read_spec(const char *path, struct cq_runtime_spec *spec)
{
    struct cq_error err;
    cq_autoclose int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "codeq runtime push: cannot open %s: %s\n", path, strerror(errno));
        return 1;
    }
    cq_autofree uint8_t *text = NULL;
    size_t len;
    if (cq_read_fd_limit(fd, SPEC_MAX, &text, &len, &err) < 0 ||
        cq_runtime_spec_parse((const char *)text, len, spec, &err) < 0) {
        fprintf(stderr, "codeq runtime push: %s: %s\n", path, err.msg);
        return 1;
    }
    return 0;
}

/* Builds here, then records the spec and uploads the layer under the runtime's build
 * lock. */
static int push_built(struct cq_store *st, const struct cq_fleet_config *cfg,
                      const struct cq_runtime_spec *spec, const char *wheelhouse,
                      const char *index_url, const char *store)
{
    struct cq_error err;
    struct cq_runtime_build_opts o = {
        .store = store, .wheelhouse = wheelhouse, .index_url = index_url};
    char digest[CQ_RUNTIME_DIGEST_LEN + 1], packed[CQ_RUNTIME_DIGEST_LEN + 1];
    uint64_t start = cq_now_ms();
    if (cq_runtime_build(spec, &o, digest, &err) < 0) {
        fprintf(stderr, "codeq runtime push: runtime '%s': %s\n", spec->name, err.msg);
        return 1;
    }
    fprintf(stderr, "codeq runtime push: runtime '%s' built in %.1f s\n", spec->name,
            (double)(cq_now_ms() - start) / 1000.0);
    cq_autofree uint8_t *data = NULL;
    size_t len = 0;
    if (cq_layer_pack(store, spec->name, cfg->layer_cache_max, packed, &data, &len, &err) < 0) {
        fprintf(stderr, "codeq runtime push: runtime '%s': %s%s\n", spec->name, err.msg,
                err.code == CQ_ELIMIT ? " (layer_cache_max; or push it with --build-on-workers, "
                                        "and each worker builds its own)"
                                      : "");
        return 1;
    }
    char token[33];
    cq_random_id(token, 32);
    bool taken = false;
    for (int i = 0; i < 600 && !taken; i++) {
        if (cq_store_build_lock(st, spec->name, token, PUSH_LOCK_MS, &taken, &err) < 0)
            return failed("runtime push", &err);
        if (!taken) {
            if (i == 0)
                fprintf(stderr, "codeq runtime push: a worker is building '%s'; waiting for it\n",
                        spec->name);
            struct timespec ts = {.tv_nsec = 500 * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    if (!taken) {
        fprintf(stderr, "codeq runtime push: runtime '%s' stayed locked by a build for 5 minutes\n",
                spec->name);
        return 1;
    }
    char spec_sha[65];
    cq_fleet_sha256_hex(spec->canonical, strlen(spec->canonical), spec_sha);
    int rc = 0;
    if (cq_store_runtime_put(st, spec->name, spec->canonical, "", "", &err) < 0 ||
        cq_store_layer_put(st, spec->name, spec_sha, packed, data, len, "cli", token, &err) < 0)
        rc = failed("runtime push", &err);
    struct cq_error ignored;
    cq_store_build_unlock(st, spec->name, token, &ignored);
    if (rc == 0) {
        fprintf(stderr, "codeq runtime push: layer %s (%zu bytes) in the fleet's cache\n", packed,
                len);
        printf("%s\n", packed);
    }
    return rc;
}

int cq_fleet_runtime_push(const char *conf, const char *spec_path, const char *wheelhouse,
                          const char *index_url, const char *store, bool build_on_workers)
{
    struct cq_runtime_spec spec;
    if (read_spec(spec_path, &spec) != 0)
        return 1;
    struct cq_fleet_config cfg;
    struct cq_store *st = NULL;
    int rc = open_fleet("runtime push", conf, &cfg, &st);
    if (rc == 0 && !build_on_workers) {
        rc = push_built(st, &cfg, &spec, wheelhouse, index_url, store);
    } else if (rc == 0) {
        /* The workers read the wheelhouse at this path: absolute, as they see it on a
         * shared file system. */
        char abs[PATH_MAX] = "";
        struct cq_error err;
        if (wheelhouse != NULL && realpath(wheelhouse, abs) == NULL) {
            fprintf(stderr, "codeq runtime push: --wheelhouse %s: %s\n", wheelhouse,
                    strerror(errno));
            rc = 1;
        } else if (cq_store_runtime_put(st, spec.name, spec.canonical, abs,
                                        index_url != NULL ? index_url : "", &err) < 0) {
            rc = failed("runtime push", &err);
        } else {
            fprintf(stderr,
                    "codeq runtime push: runtime '%s' recorded; the first worker that needs it "
                    "builds it\n",
                    spec.name);
        }
    }
    cq_runtime_spec_free(&spec);
    cq_store_close(st);
    return rc;
}

int cq_fleet_runtime_list(const char *conf)
{
    struct cq_fleet_config cfg;
    struct cq_store *st = NULL;
    if (open_fleet("runtime list", conf, &cfg, &st) != 0)
        return 1;
    char **names;
    size_t n;
    struct cq_error err;
    int rc = 0;
    if (cq_store_runtime_names(st, &names, &n, &err) < 0)
        rc = failed("runtime list", &err);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        struct cq_fleet_runtime rt;
        bool found;
        if (cq_store_runtime_get(st, names[i], &rt, &found, &err) < 0) {
            rc = failed("runtime list", &err);
            break;
        }
        if (found)
            printf("%-32s %s\n", names[i], rt.digest[0] ? rt.digest : "(not built yet)");
        cq_fleet_runtime_free(&rt);
    }
    cq_fleet_names_free(names, n);
    cq_store_close(st);
    return rc;
}

int cq_fleet_runtime_show(const char *conf, const char *name)
{
    struct cq_fleet_config cfg;
    struct cq_store *st = NULL;
    if (open_fleet("runtime show", conf, &cfg, &st) != 0)
        return 1;
    struct cq_fleet_runtime rt;
    bool found;
    struct cq_error err;
    int rc = 0;
    if (cq_store_runtime_get(st, name, &rt, &found, &err) < 0)
        rc = failed("runtime show", &err);
    else if (!found) {
        fprintf(stderr, "codeq runtime show: the fleet has no runtime '%s'\n", name);
        rc = 1;
    } else {
        json_t *o = json_pack("{s:s, s:o, s:s, s:I, s:s, s:s, s:s, s:s, s:I}", "name", name, "spec",
                              json_loads(rt.spec, 0, NULL), "digest", rt.digest, "layerBytes",
                              (json_int_t)rt.layer_size, "layerSha256", rt.layer_sha256, "builtBy",
                              rt.built_by, "wheelhouse", rt.wheelhouse, "indexUrl", rt.index_url,
                              "updatedMs", (json_int_t)rt.updated_ms);
        char *text = o != NULL ? json_dumps(o, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
        if (text != NULL)
            printf("%s\n", text);
        else
            rc = CQ_EXIT_INTERNAL;
        free(text);
        json_decref(o);
    }
    cq_fleet_runtime_free(&rt);
    cq_store_close(st);
    return rc;
}

int cq_fleet_runtime_rm(const char *conf, const char *name)
{
    struct cq_fleet_config cfg;
    struct cq_store *st = NULL;
    if (open_fleet("runtime rm", conf, &cfg, &st) != 0)
        return 1;
    struct cq_error err;
    int rc = cq_store_runtime_delete(st, name, &err) < 0 ? failed("runtime rm", &err) : 0;
    cq_store_close(st);
    return rc;
}
