/* runtime/runtime.h - custom runtimes: a JSON spec (language, pip and npm packages,
 * environment, preload) installed once on the host into a content-addressed,
 * read-only layer that sandboxes see below /opt/codeq/layers/ (docs/configuration.md,
 * "Runtimes"; docs/security.md, "Runtime builds").
 *
 * A store (default /var/lib/codeq/runtimes, CODEQ_RUNTIME_STORE) holds
 *   layers/<digest>/   python/ (pip --target), node/ (npm --prefix), manifest.json
 *   names/<name>       the digest the name points to (replaced atomically)
 *   tmp/               builds under way; a failed build removes its directory
 * The digest is the sha256 of the canonical spec and the resolved artifacts' hashes. */
#ifndef CQ_RUNTIME_RUNTIME_H
#define CQ_RUNTIME_RUNTIME_H

#include "common/error.h"
#include "sandbox/sandbox.h"

#include <stddef.h>

#define CQ_RUNTIME_DEFAULT_STORE "/var/lib/codeq/runtimes"
#define CQ_RUNTIME_LAYERS_DIR    "/opt/codeq/layers" /* where sandboxes see layers */
#define CQ_RUNTIME_NAME_MAX      63
#define CQ_RUNTIME_MAX_PACKAGES  256
#define CQ_RUNTIME_MAX_ENV       64
#define CQ_RUNTIME_DIGEST_LEN    64 /* hex sha256 */

struct cq_runtime_spec {
    char name[CQ_RUNTIME_NAME_MAX + 1];
    char language[32]; /* "python3.N" or "node" */
    char **pip;        /* requirement strings, n_pip of them */
    size_t n_pip;
    char **npm;
    size_t n_npm;
    char **env; /* "NAME=VALUE", n_env of them, NULL-terminated */
    size_t n_env;
    char **preload; /* module names, imported by the warm pools of later slices */
    size_t n_preload;
    char *canonical; /* the spec as compact JSON with sorted keys: what the digest covers */
};

/* Parses and validates a spec (strictly: unknown keys, bad names, option-like or
 * URL/path requirements, codeq's own environment variables are refused, the message
 * naming the field). On success *spec is filled; free it with cq_runtime_spec_free. */
int cq_runtime_spec_parse(const char *json, size_t len, struct cq_runtime_spec *spec,
                          struct cq_error *err);
void cq_runtime_spec_free(struct cq_runtime_spec *spec);

/* A runtime or layer name: [a-z0-9][a-z0-9._-]{0,62}, never "." or "..". */
int cq_runtime_name_check(const char *name, struct cq_error *err);

/* The layer digest: hex sha256 over the canonical spec and the artifact lines (each
 * "KIND NAME VERSION HASH", sorted here so the installers' order does not matter).
 * out has CQ_RUNTIME_DIGEST_LEN + 1 bytes. */
int cq_runtime_digest(const char *canonical_spec, const char *const *artifacts, size_t n, char *out,
                      struct cq_error *err);

/* Checks that this host can run the spec's language (python3.N: /usr/bin/python3 is
 * that version; node: /usr/bin/node exists), and that npm exists if packages need it. */
int cq_runtime_language_check(const struct cq_runtime_spec *spec, struct cq_error *err);

struct cq_runtime_build_opts {
    const char *store;      /* NULL: cq_runtime_store_path() */
    const char *wheelhouse; /* local wheels and npm tarballs; pip and npm stay offline */
    const char *index_url;  /* a pip index (PEP 503); NULL: pip's default */
};

/* Builds the layer of spec (installers run unprivileged, without install scripts or
 * source builds), moves it to STORE/layers/<digest> atomically (an existing one is
 * reused) and points STORE/names/<name> at it. digest_out: CQ_RUNTIME_DIGEST_LEN + 1
 * bytes. On failure nothing is left in the store, and err says which installer failed
 * with its own error lines. */
int cq_runtime_build(const struct cq_runtime_spec *spec, const struct cq_runtime_build_opts *o,
                     char *digest_out, struct cq_error *err);

/* The store: the argument, or CODEQ_RUNTIME_STORE, or the default. */
const char *cq_runtime_store_path(const char *store);

/* The digest a name points to (CQ_ENOTFOUND when none). */
int cq_runtime_lookup(const char *store, const char *name, char *digest_out, struct cq_error *err);

/* The layer's manifest.json text (malloc'd) for a name. */
int cq_runtime_manifest(const char *store, const char *name, char **text, struct cq_error *err);

/* Removes a name; its layer too when no other name points to it. */
int cq_runtime_remove(const char *store, const char *name, struct cq_error *err);

/* Calls fn for each name in the store, in name order. */
int cq_runtime_list(const char *store, void (*fn)(void *ctx, const char *name, const char *digest),
                    void *ctx, struct cq_error *err);

/* What a sandbox of a runtime needs: the layer bound read-only at
 * /opt/codeq/layers/<digest>, and PYTHONPATH, NODE_PATH and the spec's environment. */
struct cq_runtime_sandbox {
    char host_path[4096];
    char sandbox_path[128];
    struct cq_sandbox_bind bind;
    char **env; /* "NAME=VALUE", n_env of them, NULL-terminated */
    size_t n_env;
};

int cq_runtime_sandbox_binds(const char *store, const char *name, struct cq_runtime_sandbox *out,
                             struct cq_error *err);
void cq_runtime_sandbox_free(struct cq_runtime_sandbox *rs);

#endif
