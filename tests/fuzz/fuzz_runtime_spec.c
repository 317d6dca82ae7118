/* tests/fuzz/fuzz_runtime_spec.c - a runtime spec (runtime/spec.c).
 *
 * A spec reaches the host from `codeq runtime build FILE`, from a fleet client, and
 * from a layer's manifest.json that another host packed (runtime/layer.c): its strings
 * end up on pip's and npm's command lines and in sandboxes' environments. The input is
 * the spec's JSON. Checked for every spec that parses (abort on breach):
 *  - what passed holds only what the allow-lists let through: a valid name, no
 *    requirement or module that an installer could read as an option, and no
 *    environment variable codeq sets itself or value with a control character;
 *  - the canonical text (what the digest covers) is a spec too, parsing to the same
 *    lists (the environment as a set: the canonical text sorts its names) and to
 *    itself: the digest of a layer does not depend on how it was written.
 * A refusal carries a message. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "runtime/runtime.h"

static void check(int ok)
{
    if (!ok)
        abort();
}

static int same_list(char **a, size_t na, char **b, size_t nb)
{
    if (na != nb)
        return 0;
    for (size_t i = 0; i < na; i++)
        if (strcmp(a[i], b[i]) != 0)
            return 0;
    return 1;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The environment is a set: the canonical text sorts its names, the spec need not. */
static int same_set(char **a, size_t na, char **b, size_t nb)
{
    if (na != nb)
        return 0;
    qsort(a, na, sizeof(char *), cmp_str);
    qsort(b, nb, sizeof(char *), cmp_str);
    return same_list(a, na, b, nb);
}

static void check_list(char **l, size_t n, size_t max)
{
    check(n <= max);
    for (size_t i = 0; i < n; i++) {
        check(l[i] != NULL && l[i][0] != '\0' && l[i][0] != '-');
        for (const char *c = l[i]; *c; c++)
            check((unsigned char)*c > ' ' && *c != 0x7f && *c != '/' && *c != ':' && *c != '\\');
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct cq_runtime_spec s;
    struct cq_error err = {0};
    if (cq_runtime_spec_parse((const char *)data, size, &s, &err) < 0) {
        check(err.msg[0] != '\0');
        return 0;
    }
    check(cq_runtime_name_check(s.name, NULL) == 0);
    check(strcmp(s.language, "node") == 0 || strncmp(s.language, "python3.", 8) == 0);
    check(strcmp(s.language, "node") != 0 || s.n_pip == 0);
    check_list(s.pip, s.n_pip, CQ_RUNTIME_MAX_PACKAGES);
    /* npm's scoped names are the one '/' an installer sees: "@scope/name". */
    for (size_t i = 0; i < s.n_npm; i++) {
        const char *p = s.npm[i];
        check(p[0] != '-' && strchr(p, ':') == NULL && strchr(p, '\\') == NULL);
        for (const char *c = p; *c; c++)
            check((unsigned char)*c > ' ' && *c != 0x7f);
        const char *slash = strchr(p, '/');
        check(slash == NULL || (p[0] == '@' && strchr(slash + 1, '/') == NULL));
    }
    check_list(s.preload, s.n_preload, CQ_RUNTIME_MAX_PACKAGES);
    check(s.n_env <= CQ_RUNTIME_MAX_ENV && s.env != NULL && s.env[s.n_env] == NULL);
    for (size_t i = 0; i < s.n_env; i++) {
        const char *eq = strchr(s.env[i], '=');
        check(eq != NULL && eq != s.env[i]);
        check(strncmp(s.env[i], "LD_", 3) != 0 && strncmp(s.env[i], "PATH=", 5) != 0 &&
              strncmp(s.env[i], "PYTHONPATH=", 11) != 0 && strncmp(s.env[i], "CODEQ_", 6) != 0);
        for (const char *c = s.env[i]; *c; c++)
            check((unsigned char)*c >= 0x20 && *c != 0x7f);
    }

    /* The canonical text parses to the same spec, and is its own canonical text. */
    struct cq_runtime_spec again;
    check(s.canonical != NULL);
    check(cq_runtime_spec_parse(s.canonical, strlen(s.canonical), &again, &err) == 0);
    check(strcmp(again.canonical, s.canonical) == 0);
    check(strcmp(again.name, s.name) == 0 && strcmp(again.language, s.language) == 0);
    check(same_list(again.pip, again.n_pip, s.pip, s.n_pip));
    check(same_list(again.npm, again.n_npm, s.npm, s.n_npm));
    check(same_set(again.env, again.n_env, s.env, s.n_env));
    check(same_list(again.preload, again.n_preload, s.preload, s.n_preload));
    cq_runtime_spec_free(&again);
    cq_runtime_spec_free(&s);
    return 0;
}
