/* runtime/spec.c - the runtime spec: strict parsing and the layer digest.
 *
 * Every string of a spec ends up on an installer's command line or in a sandbox's
 * environment, run by root on the host for the build. So the checks are allow-lists:
 * a requirement is a package name and a version constraint, nothing that pip or npm
 * would read as an option (leading '-'), a URL, a path or a VCS reference. */
#define _GNU_SOURCE
#include "runtime/runtime.h"

#include <ctype.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REQ_MAX   200
#define VALUE_MAX 4096

int cq_runtime_name_check(const char *name, struct cq_error *err)
{
    size_t n = strlen(name);
    if (n == 0 || n > CQ_RUNTIME_NAME_MAX)
        return cq_error_set(err, CQ_EINVALID, "name '%.80s': must be 1 to %d characters", name,
                            CQ_RUNTIME_NAME_MAX);
    if (!islower((unsigned char)name[0]) && !isdigit((unsigned char)name[0]))
        return cq_error_set(err, CQ_EINVALID,
                            "name '%.80s': must start with a lower-case letter or a digit", name);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (!islower(c) && !isdigit(c) && c != '.' && c != '_' && c != '-')
            return cq_error_set(err, CQ_EINVALID,
                                "name '%.80s': only a-z, 0-9, '.', '_' and '-' are allowed "
                                "(it names a file of the store)",
                                name);
    }
    if (strstr(name, "..") != NULL)
        return cq_error_set(err, CQ_EINVALID, "name '%.80s': must not contain '..'", name);
    return 0;
}

static bool all_in(const char *s, const char *extra)
{
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && strchr(extra, *s) == NULL)
            return false;
    return true;
}

/* name[extras] followed by PEP 440 specifiers, e.g. "polars==1.*", "a[b,c]>=1,<2".
 * No '@' (a direct URL reference), ';' (markers), '/', ':' or whitespace. */
static int pip_req_check(const char *req, size_t i, struct cq_error *err)
{
    if (!isalnum((unsigned char)req[0]))
        return cq_error_set(err, CQ_EINVALID,
                            "packages.pip[%zu] '%.80s': must start with a letter or a digit "
                            "(no options, paths or URLs)",
                            i, req);
    if (!all_in(req, "._-[],=<>!~*"))
        return cq_error_set(err, CQ_EINVALID,
                            "packages.pip[%zu] '%.80s': a requirement is NAME[EXTRAS] and "
                            "version specifiers only (letters, digits and ._-[],=<>!~*); no "
                            "URLs, paths, markers or whitespace",
                            i, req);
    return 0;
}

/* [@scope/]name[@range], e.g. "lodash@4", "@types/node@^20". No "file:", "git+",
 * URLs or paths (':' and a second '/' are refused). */
static int npm_req_check(const char *req, size_t i, struct cq_error *err)
{
    const char *p = req;
    if (*p == '@') {
        const char *slash = strchr(p, '/');
        if (slash == NULL || slash == p + 1)
            return cq_error_set(err, CQ_EINVALID,
                                "packages.npm[%zu] '%.80s': a scoped name is @SCOPE/NAME", i, req);
        /* The scope is a name as the package's is: else "@git+ssh:x/y" or "@a b/c"
         * would reach npm. */
        if (!islower((unsigned char)p[1]) && !isdigit((unsigned char)p[1]))
            return cq_error_set(err, CQ_EINVALID,
                                "packages.npm[%zu] '%.80s': the scope must start with a "
                                "lower-case letter or a digit",
                                i, req);
        for (const char *c = p + 1; c < slash; c++)
            if (!islower((unsigned char)*c) && !isdigit((unsigned char)*c) &&
                strchr("._-", *c) == NULL)
                return cq_error_set(err, CQ_EINVALID,
                                    "packages.npm[%zu] '%.80s': a scope has a-z, 0-9, '.', '_' "
                                    "and '-' only",
                                    i, req);
        p = slash + 1;
    }
    if (!islower((unsigned char)*p) && !isdigit((unsigned char)*p))
        return cq_error_set(err, CQ_EINVALID,
                            "packages.npm[%zu] '%.80s': the name must start with a lower-case "
                            "letter or a digit (no options, paths or URLs)",
                            i, req);
    const char *at = strchr(p, '@');
    size_t name_len = at != NULL ? (size_t)(at - p) : strlen(p);
    for (size_t k = 0; k < name_len; k++)
        if (!islower((unsigned char)p[k]) && !isdigit((unsigned char)p[k]) &&
            strchr("._-", p[k]) == NULL)
            return cq_error_set(err, CQ_EINVALID,
                                "packages.npm[%zu] '%.80s': a package name has a-z, 0-9, "
                                "'.', '_' and '-' only",
                                i, req);
    if (at != NULL && (at[1] == '\0' || !all_in(at + 1, ".^~<>=*|+-")))
        return cq_error_set(err, CQ_EINVALID,
                            "packages.npm[%zu] '%.80s': the version after '@' is a semver "
                            "range (letters, digits and .^~<>=*|+-); no URLs, paths, tags "
                            "with other characters or whitespace",
                            i, req);
    return 0;
}

/* codeq sets these itself (the layer's paths, the sandbox's user and tools) or they
 * change how the interpreter or the loader starts: a spec must not override them. */
static bool reserved_env(const char *name)
{
    static const char *const exact[] = {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "PWD",
        "TMPDIR",
        "HOSTNAME",
        "PYTHONPATH",
        "PYTHONHOME",
        "PYTHONSTARTUP",
        "PYTHONNOUSERSITE",
        "PYTHONUSERBASE",
        "PYTHONSAFEPATH",
        "PYTHONEXECUTABLE",
        "PYTHONPLATLIBDIR",
        "NODE_PATH",
        "NODE_OPTIONS",
        "NODE_EXTRA_CA_CERTS",
        "IFS",
        "ENV",
        "BASH_ENV",
    };
    static const char *const prefix[] = {"LD_",         "PIP_",   "NPM_CONFIG_",
                                         "npm_config_", "CODEQ_", "CQ_"};
    for (size_t i = 0; i < sizeof(exact) / sizeof(exact[0]); i++)
        if (strcmp(name, exact[i]) == 0)
            return true;
    for (size_t i = 0; i < sizeof(prefix) / sizeof(prefix[0]); i++)
        if (strncasecmp(name, prefix[i], strlen(prefix[i])) == 0)
            return true;
    return false;
}

static int env_check(const char *name, json_t *value, struct cq_error *err)
{
    if (!isalpha((unsigned char)name[0]) && name[0] != '_')
        return cq_error_set(err, CQ_EINVALID,
                            "environment '%.80s': a name starts with a letter or '_'", name);
    if (!all_in(name, "_") || strlen(name) > 128)
        return cq_error_set(err, CQ_EINVALID,
                            "environment '%.80s': a name has letters, digits and '_' only "
                            "(at most 128)",
                            name);
    if (reserved_env(name))
        return cq_error_set(err, CQ_EINVALID,
                            "environment '%.80s': codeq sets this variable itself (PATH, HOME, "
                            "PYTHONPATH, NODE_PATH, LD_*, PIP_*, CODEQ_* ...)",
                            name);
    if (!json_is_string(value))
        return cq_error_set(err, CQ_EINVALID, "environment '%s': the value must be a string", name);
    const char *v = json_string_value(value);
    size_t n = json_string_length(value);
    if (n > VALUE_MAX || strlen(v) != n)
        return cq_error_set(err, CQ_EINVALID,
                            "environment '%s': the value must be at most %d bytes, without NUL",
                            name, VALUE_MAX);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)v[i] < 0x20 || v[i] == 0x7f)
            return cq_error_set(err, CQ_EINVALID,
                                "environment '%s': the value has a control character", name);
    return 0;
}

/* A JSON array of strings checked by one function each; the copies go to *out. */
static int string_list(json_t *arr, const char *field, size_t max,
                       int (*check)(const char *, size_t, struct cq_error *), char ***out,
                       size_t *n, struct cq_error *err)
{
    if (!json_is_array(arr))
        return cq_error_set(err, CQ_EINVALID, "%s: must be an array of strings", field);
    if (json_array_size(arr) > max)
        return cq_error_set(err, CQ_EINVALID, "%s: at most %zu entries", field, max);
    *out = calloc(json_array_size(arr) + 1, sizeof(char *));
    if (*out == NULL)
        return cq_error_sys(err, ENOMEM, "%s", field);
    size_t i;
    json_t *item;
    json_array_foreach(arr, i, item)
    {
        if (!json_is_string(item) || json_string_length(item) == 0 ||
            json_string_length(item) > REQ_MAX ||
            strlen(json_string_value(item)) != json_string_length(item))
            return cq_error_set(err, CQ_EINVALID,
                                "%s[%zu]: must be a non-empty string of at most %d bytes", field, i,
                                REQ_MAX);
        const char *s = json_string_value(item);
        if (check(s, i, err) < 0)
            return -1;
        for (size_t k = 0; k < i; k++)
            if (strcmp((*out)[k], s) == 0)
                return cq_error_set(err, CQ_EINVALID, "%s[%zu] '%s': listed twice", field, i, s);
        if (((*out)[i] = strdup(s)) == NULL)
            return cq_error_sys(err, ENOMEM, "%s", field);
        *n = i + 1;
    }
    return 0;
}

static int preload_check(const char *mod, size_t i, struct cq_error *err)
{
    if (!isalpha((unsigned char)mod[0]) && mod[0] != '_')
        return cq_error_set(err, CQ_EINVALID, "preload[%zu] '%.80s': not a module name", i, mod);
    if (!all_in(mod, "_.") || strstr(mod, "..") != NULL || mod[strlen(mod) - 1] == '.')
        return cq_error_set(err, CQ_EINVALID,
                            "preload[%zu] '%.80s': a module name is dotted identifiers", i, mod);
    return 0;
}

static int language_syntax(const char *lang, struct cq_error *err)
{
    if (strcmp(lang, "node") == 0)
        return 0;
    unsigned minor;
    int used = 0;
    if (sscanf(lang, "python3.%2u%n", &minor, &used) == 1 && lang[used] == '\0' &&
        isdigit((unsigned char)lang[8]))
        return 0;
    return cq_error_set(err, CQ_EINVALID,
                        "language '%.40s': must be python3.N (the host's /usr/bin/python3) or "
                        "node",
                        lang);
}

static int parse_obj(json_t *root, struct cq_runtime_spec *s, struct cq_error *err)
{
    static const char *const known[] = {"name", "language", "packages", "environment", "preload"};
    if (!json_is_object(root))
        return cq_error_set(err, CQ_EINVALID, "the spec must be a JSON object");
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v)
    {
        bool ok = false;
        for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
            ok |= strcmp(key, known[i]) == 0;
        if (!ok)
            return cq_error_set(err, CQ_EINVALID,
                                "unknown key '%.80s' (known: name, language, packages, "
                                "environment, preload)",
                                key);
    }
    json_t *name = json_object_get(root, "name");
    if (!json_is_string(name))
        return cq_error_set(err, CQ_EINVALID, "name: required, a string");
    if (cq_runtime_name_check(json_string_value(name), err) < 0)
        return -1;
    snprintf(s->name, sizeof(s->name), "%s", json_string_value(name));
    json_t *lang = json_object_get(root, "language");
    if (!json_is_string(lang))
        return cq_error_set(err, CQ_EINVALID, "language: required, a string (e.g. python3.11)");
    if (language_syntax(json_string_value(lang), err) < 0)
        return -1;
    snprintf(s->language, sizeof(s->language), "%s", json_string_value(lang));

    json_t *pkgs = json_object_get(root, "packages");
    if (pkgs != NULL) {
        if (!json_is_object(pkgs))
            return cq_error_set(err, CQ_EINVALID, "packages: must be an object with pip, npm");
        json_object_foreach(pkgs, key, v)
        {
            if (strcmp(key, "pip") == 0) {
                if (string_list(v, "packages.pip", CQ_RUNTIME_MAX_PACKAGES, pip_req_check, &s->pip,
                                &s->n_pip, err) < 0)
                    return -1;
            } else if (strcmp(key, "npm") == 0) {
                if (string_list(v, "packages.npm", CQ_RUNTIME_MAX_PACKAGES, npm_req_check, &s->npm,
                                &s->n_npm, err) < 0)
                    return -1;
            } else {
                return cq_error_set(err, CQ_EINVALID,
                                    "packages: unknown key '%.80s' (known: pip, npm)", key);
            }
        }
    }
    if (strcmp(s->language, "node") == 0 && s->n_pip > 0)
        return cq_error_set(err, CQ_EINVALID, "packages.pip: a node runtime has npm packages only");

    json_t *env = json_object_get(root, "environment");
    s->env = calloc(CQ_RUNTIME_MAX_ENV + 1, sizeof(char *));
    if (s->env == NULL)
        return cq_error_sys(err, ENOMEM, "environment");
    if (env != NULL) {
        if (!json_is_object(env))
            return cq_error_set(err, CQ_EINVALID, "environment: must be an object of strings");
        if (json_object_size(env) > CQ_RUNTIME_MAX_ENV)
            return cq_error_set(err, CQ_EINVALID, "environment: at most %d variables",
                                CQ_RUNTIME_MAX_ENV);
        json_object_foreach(env, key, v)
        {
            if (env_check(key, v, err) < 0)
                return -1;
            if (asprintf(&s->env[s->n_env], "%s=%s", key, json_string_value(v)) < 0) {
                s->env[s->n_env] = NULL;
                return cq_error_sys(err, ENOMEM, "environment");
            }
            s->n_env++;
        }
    }
    json_t *preload = json_object_get(root, "preload");
    if (preload != NULL && string_list(preload, "preload", CQ_RUNTIME_MAX_PACKAGES, preload_check,
                                       &s->preload, &s->n_preload, err) < 0)
        return -1;
    /* Canonical: sorted keys, no spaces, so that formatting and key order do not change
     * the digest. The lists keep their order: it is the user's. */
    s->canonical = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII);
    if (s->canonical == NULL)
        return cq_error_sys(err, ENOMEM, "canonical spec");
    return 0;
}

int cq_runtime_spec_parse(const char *text, size_t len, struct cq_runtime_spec *spec,
                          struct cq_error *err)
{
    memset(spec, 0, sizeof(*spec));
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL)
        return cq_error_set(err, CQ_EINVALID, "malformed JSON at line %d, column %d: %s", jerr.line,
                            jerr.column, jerr.text);
    int rc = parse_obj(root, spec, err);
    json_decref(root);
    if (rc < 0) {
        cq_runtime_spec_free(spec);
        return cq_error_prefix(err, "spec: ");
    }
    return 0;
}

static void free_list(char **l)
{
    if (l == NULL)
        return;
    for (char **p = l; *p; p++)
        free(*p);
    free(l);
}

void cq_runtime_spec_free(struct cq_runtime_spec *spec)
{
    free_list(spec->pip);
    free_list(spec->npm);
    free_list(spec->env);
    free_list(spec->preload);
    free(spec->canonical);
    memset(spec, 0, sizeof(*spec));
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int cq_runtime_digest(const char *canonical_spec, const char *const *artifacts, size_t n, char *out,
                      struct cq_error *err)
{
    const char **sorted = calloc(n + 1, sizeof(char *));
    if (sorted == NULL)
        return cq_error_sys(err, ENOMEM, "digest");
    if (n > 0) /* artifacts may be NULL then */
        memcpy(sorted, artifacts, n * sizeof(char *));
    qsort(sorted, n, sizeof(char *), cmp_str);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char hash[EVP_MAX_MD_SIZE];
    unsigned hlen = 0;
    /* A version tag and NUL separators: no spec/artifact split can collide with another. */
    bool ok = md != NULL && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1 &&
              EVP_DigestUpdate(md, "codeq-layer-v1", 15) == 1 &&
              EVP_DigestUpdate(md, canonical_spec, strlen(canonical_spec) + 1) == 1;
    for (size_t i = 0; ok && i < n; i++)
        ok = EVP_DigestUpdate(md, sorted[i], strlen(sorted[i]) + 1) == 1;
    ok = ok && EVP_DigestFinal_ex(md, hash, &hlen) == 1 && hlen == 32;
    EVP_MD_CTX_free(md);
    free(sorted);
    if (!ok)
        return cq_error_set(err, CQ_EINTERNAL, "digest: sha256 failed");
    for (unsigned i = 0; i < hlen; i++)
        sprintf(out + 2 * i, "%02x", hash[i]);
    return 0;
}
