/* cli/cmd_runtime.c - `codeq runtime build|list|show|rm`: custom runtimes as
 * content-addressed layers in a store (runtime/runtime.h). */
#define _GNU_SOURCE
#include "cli/cli.h"
#include "common/cleanup.h"
#include "common/clock.h"
#include "common/fileutil.h"
#include "cli/fleet_defs.h"
#include "runtime/runtime.h"

#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SPEC_MAX (1u << 20)

static void usage(FILE *out)
{
    fprintf(
        out,
        "usage: codeq runtime build SPEC.json [--wheelhouse DIR] [--index-url URL] [--store DIR]\n"
        "       codeq runtime push SPEC.json --fleet CONF [--wheelhouse DIR] [--index-url URL]\n"
        "                          [--store DIR] [--build-on-workers]\n"
        "       codeq runtime list [--store DIR | --fleet CONF]\n"
        "       codeq runtime show NAME [--store DIR | --fleet CONF]\n"
        "       codeq runtime rm NAME [--store DIR | --fleet CONF]\n"
        "\n"
        "A runtime is a spec (JSON: name, language, packages.pip, packages.npm,\n"
        "environment, preload; docs/configuration.md, \"Runtimes\") installed once on\n"
        "this host into a read-only layer, STORE/layers/<digest>, which sandboxes of the\n"
        "runtime see at %s/<digest> (codeq sandbox --runtime NAME).\n"
        "The digest covers the spec and the sha256 of every installed artifact: building\n"
        "the same spec against the same packages gives the same digest and reuses the\n"
        "layer. pip installs wheels only and npm runs no install scripts; both run as\n"
        "the user nobody with a cleared environment (docs/security.md).\n"
        "\n"
        "options:\n"
        "  --wheelhouse DIR  install from DIR only (wheels for pip; NAME-VERSION.tgz\n"
        "                    tarballs, as `npm pack` writes them, for npm); offline\n"
        "  --index-url URL   the pip index to use (default: pip's)\n"
        "  --store DIR       the store (default $CODEQ_RUNTIME_STORE, else %s)\n"
        "  -v, --verbose     show the installers' output on failure in full (the log)\n"
        "  --fleet CONF      the fleet whose daemons read CONF (its Redis): push builds\n"
        "                    the runtime here and uploads its layer to the fleet's\n"
        "                    cache, which workers fetch on first use (no index or\n"
        "                    wheelhouse needed on them); list, show and rm act on the\n"
        "                    fleet's runtimes\n"
        "  --build-on-workers  push only records the spec (and --wheelhouse, a path on\n"
        "                    the workers, or --index-url): the first worker that needs\n"
        "                    the runtime builds it for all, under a lock\n"
        "  -h, --help        show this help\n"
        "\n"
        "build prints the layer's digest. exit status: 0; 1 when the build or the\n"
        "lookup failed (the message says which package and why); 2 for bad options.\n",
        CQ_RUNTIME_LAYERS_DIR, CQ_RUNTIME_DEFAULT_STORE);
}

static int cmd_build(const char *path, struct cq_runtime_build_opts *o)
{
    struct cq_error err;
    cq_autoclose int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "codeq runtime build: cannot open %s: %s\n", path, strerror(errno));
        return 1;
    }
    cq_autofree uint8_t *text = NULL;
    size_t len;
    if (cq_read_fd_limit(fd, SPEC_MAX, &text, &len, &err) < 0) {
        fprintf(stderr, "codeq runtime build: %s: %s\n", path, err.msg);
        return 1;
    }
    struct cq_runtime_spec spec;
    if (cq_runtime_spec_parse((const char *)text, len, &spec, &err) < 0) {
        fprintf(stderr, "codeq runtime build: %s: %s\n", path, err.msg);
        return 1;
    }
    char digest[CQ_RUNTIME_DIGEST_LEN + 1];
    uint64_t start = cq_now_ms();
    int rc = cq_runtime_build(&spec, o, digest, &err);
    if (rc < 0) {
        fprintf(stderr, "codeq runtime build: runtime '%s': %s\n", spec.name, err.msg);
    } else {
        fprintf(stderr, "codeq runtime build: runtime '%s' built in %.1f s\n", spec.name,
                (double)(cq_now_ms() - start) / 1000.0);
        printf("%s\n", digest);
    }
    cq_runtime_spec_free(&spec);
    return rc < 0 ? 1 : 0;
}

static void print_entry(void *ctx, const char *name, const char *digest)
{
    (void)ctx;
    printf("%-32s %s\n", name, digest);
}

int cq_cmd_runtime(int argc, char **argv)
{
    enum { OPT_WHEELHOUSE = 256, OPT_INDEX_URL, OPT_STORE, OPT_FLEET, OPT_ON_WORKERS };
    static const struct option longopts[] = {
        {"wheelhouse", required_argument, NULL, OPT_WHEELHOUSE},
        {"index-url", required_argument, NULL, OPT_INDEX_URL},
        {"store", required_argument, NULL, OPT_STORE},
        {"fleet", required_argument, NULL, OPT_FLEET},
        {"build-on-workers", no_argument, NULL, OPT_ON_WORKERS},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct cq_runtime_build_opts o = {0};
    const char *fleet = NULL;
    bool on_workers = false;
    opterr = 0;
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'h':
            usage(stdout);
            return 0;
        case OPT_WHEELHOUSE:
            o.wheelhouse = optarg;
            break;
        case OPT_INDEX_URL:
            if (strncmp(optarg, "https://", 8) != 0 && strncmp(optarg, "http://", 7) != 0)
                return cq_usage_error("runtime", "--index-url: '%s' is not an http(s) URL", optarg);
            o.index_url = optarg;
            break;
        case OPT_STORE:
            o.store = optarg;
            break;
        case OPT_FLEET:
            fleet = optarg;
            break;
        case OPT_ON_WORKERS:
            on_workers = true;
            break;
        default:
            return cq_usage_error("runtime", "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (o.wheelhouse != NULL && o.index_url != NULL)
        return cq_usage_error("runtime", "--wheelhouse and --index-url exclude each other");
    if (optind >= argc)
        return cq_usage_error("runtime", "no subcommand (build, push, list, show or rm)");
    const char *sub = argv[optind];
    int nargs = argc - optind - 1;
    const char *arg = nargs > 0 ? argv[optind + 1] : NULL;
    bool takes_arg = strcmp(sub, "list") != 0;
    bool builds = strcmp(sub, "build") == 0 || strcmp(sub, "push") == 0;
    if (!builds && (o.wheelhouse != NULL || o.index_url != NULL))
        return cq_usage_error("runtime",
                              "--wheelhouse and --index-url are options of build and push");
    if (strcmp(sub, "build") != 0 && strcmp(sub, "push") != 0 && strcmp(sub, "list") != 0 &&
        strcmp(sub, "show") != 0 && strcmp(sub, "rm") != 0)
        return cq_usage_error("runtime", "unknown subcommand '%s' (build, push, list, show or rm)",
                              sub);
    if (nargs != (takes_arg ? 1 : 0))
        return cq_usage_error("runtime", "%s takes %s", sub,
                              takes_arg ? (builds ? "one SPEC.json" : "one NAME") : "no argument");
    if (strcmp(sub, "push") == 0 && fleet == NULL)
        return cq_usage_error("runtime",
                              "push needs --fleet CONF (build builds into a local store)");
    if (strcmp(sub, "build") == 0 && fleet != NULL)
        return cq_usage_error("runtime",
                              "build is local: push SPEC.json --fleet CONF builds for a fleet");
    if (on_workers && strcmp(sub, "push") != 0)
        return cq_usage_error("runtime", "--build-on-workers is an option of push");
    if (fleet != NULL && o.store != NULL && strcmp(sub, "push") != 0)
        return cq_usage_error("runtime", "--store and --fleet exclude each other here");
    if (strcmp(sub, "push") == 0)
        return cq_fleet_runtime_push(fleet, arg, o.wheelhouse, o.index_url, o.store, on_workers);
    if (fleet != NULL && strcmp(sub, "list") == 0)
        return cq_fleet_runtime_list(fleet);
    if (fleet != NULL && strcmp(sub, "show") == 0)
        return cq_fleet_runtime_show(fleet, arg);
    if (fleet != NULL)
        return cq_fleet_runtime_rm(fleet, arg);
    struct cq_error err;
    if (strcmp(sub, "build") == 0)
        return cmd_build(arg, &o);
    if (strcmp(sub, "list") == 0) {
        if (cq_runtime_list(o.store, print_entry, NULL, &err) < 0) {
            fprintf(stderr, "codeq runtime list: %s\n", err.msg);
            return 1;
        }
        return 0;
    }
    if (strcmp(sub, "show") == 0) {
        cq_autofree char *text = NULL;
        if (cq_runtime_manifest(o.store, arg, &text, &err) < 0) {
            fprintf(stderr, "codeq runtime show: %s\n", err.msg);
            return 1;
        }
        fputs(text, stdout);
        if (text[0] != '\0' && text[strlen(text) - 1] != '\n')
            putchar('\n');
        return 0;
    }
    if (cq_runtime_remove(o.store, arg, &err) < 0) {
        fprintf(stderr, "codeq runtime rm: %s\n", err.msg);
        return 1;
    }
    return 0;
}
