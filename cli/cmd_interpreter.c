/* cli/cmd_interpreter.c - `codeq interpreter create|list|get|delete`: code interpreters,
 * named configurations that sessions start on (runtime/interpreter.h), in the local
 * store beside the runtimes. */
#define _GNU_SOURCE
#include "cli/cli.h"
#include "common/cleanup.h"
#include "common/fileutil.h"
#include "common/units.h"
#include "cli/fleet_defs.h"
#include "runtime/interpreter.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEF_FILE_MAX (64u << 10)

static void usage(FILE *out)
{
    char memory[32], disk[32];
    cq_format_size(CQ_SANDBOX_DEFAULT_MEMORY, memory, sizeof(memory));
    cq_format_size(CQ_SANDBOX_DEFAULT_DISK, disk, sizeof(disk));
    fprintf(out,
            "usage: codeq interpreter create --name NAME [--runtime RUNTIME] [--network MODE]\n"
            "                                [--allow DEST]... [--memory SIZE] [--cpus N]\n"
            "                                [--disk SIZE] [--session-timeout S]\n"
            "                                [--warm-pool N] [--tenant NAME]... [--replace]\n"
            "                                [--store DIR | --fleet CONF]\n"
            "       codeq interpreter create DEF.json [--replace] [--store DIR | --fleet CONF]\n"
            "       codeq interpreter list [--store DIR | --fleet CONF]\n"
            "       codeq interpreter get NAME [--store DIR | --fleet CONF]\n"
            "       codeq interpreter delete NAME [--store DIR | --fleet CONF]\n"
            "\n"
            "A code interpreter (AgentCore's CreateCodeInterpreter) is a named configuration\n"
            "sessions start on: codeq exec --interpreter NAME, or startSession's\n"
            "codeInterpreterIdentifier in codeq mcp. It names a runtime (codeq runtime\n"
            "build), a network mode and limits; what it leaves out is the worker's default.\n"
            "Definitions are JSON files, STORE/interpreters/NAME.json (docs/configuration.md,\n"
            "\"Code interpreters\"); create takes one as options or as a file DEF.json.\n"
            "'%s' is built in: the worker's own settings.\n"
            "\n"
            "options of create:\n"
            "  --name NAME           a-z, 0-9, '.', '_', '-' (at most 63; no '/', no '..')\n"
            "  --runtime RUNTIME     a runtime of the store, bound into its sandboxes\n"
            "  --network MODE        NONE, PUBLIC or ALLOWLIST (default: the server's\n"
            "                        network_default); admitted against the server's\n"
            "                        network settings when a session starts\n"
            "  --allow DEST          ALLOWLIST: a destination (NAME, *.NAME, IP, CIDR, with\n"
            "                        :PORT optionally); repeat for more\n"
            "  --memory SIZE         memory of a session, e.g. 1G (default %s)\n"
            "  --cpus N              CPU cores of a session, e.g. 0.5 (default %.0f)\n"
            "  --disk SIZE           the workspace's size, e.g. 512M (default %s)\n"
            "  --session-timeout S   the sessions' time to live in seconds (1 to %d;\n"
            "                        default %d); a session may ask for its own\n"
            "  --warm-pool N         sandboxes kept ready with the runtime's preload\n"
            "                        imported (0 to 16; default 0); codeq mcp fills them\n"
            "  --tenant NAME         in a fleet with tenants: a tenant whose sessions may\n"
            "                        start on it; repeat for more (default: every tenant).\n"
            "                        Others get NOT_FOUND, as for a name that does not\n"
            "                        exist; a keyless fleet refuses it; codeq mcp and codeq\n"
            "                        exec (one user) ignore it\n"
            "  --replace             replace an interpreter of that name (sessions running\n"
            "                        on it keep what they started with)\n"
            "  --store DIR           the store (default $CODEQ_RUNTIME_STORE, else %s)\n"
            "  --fleet CONF          define it in the fleet whose daemons read CONF (its\n"
            "                        Redis): every worker serves it, fetching or building\n"
            "                        its runtime (codeq runtime push --fleet) on first use;\n"
            "                        a deleted one takes no new sessions\n"
            "  -h, --help            show this help\n"
            "\n"
            "create and get print the definition (JSON); list prints NAME RUNTIME TENANTS\n"
            "per line ('-': no runtime; '*': every tenant). delete refuses no running\n"
            "session: they end at their time to live.\n"
            "exit status: 0; 1 when the store refused (the message says why); 2 for bad\n"
            "options.\n",
            CQ_INTERPRETER_DEFAULT, memory, CQ_SANDBOX_DEFAULT_CPUS, disk,
            CQ_WORKER_MAX_SESSION_TTL_S, CQ_WORKER_DEFAULT_SESSION_TTL_S, CQ_RUNTIME_DEFAULT_STORE);
}

static int print_def(const struct cq_interpreter_def *d)
{
    cq_autofree char *text = cq_interpreter_def_json(d);
    if (text == NULL) {
        fprintf(stderr, "codeq interpreter: out of memory\n");
        return 1;
    }
    printf("%s\n", text);
    return 0;
}

static void print_entry(void *ctx, const struct cq_interpreter_def *d)
{
    (void)ctx;
    cq_autofree char *tenants = cq_interpreter_def_tenants(d);
    printf("%-32s %-32s %s\n", d->name, d->runtime[0] != '\0' ? d->runtime : "-",
           tenants != NULL && tenants[0] != '\0' ? tenants : "*");
}

/* The options of create as a definition's JSON object: the parser of definitions is
 * then the one judge of values, and its messages name the field. */
struct create_options {
    json_t *obj;
    json_t *allow;
    json_t *tenants;
    bool replace;
    bool fields; /* an option that sets a field of the definition */
};

static int create_option(struct create_options *o, int opt, const char *value)
{
    struct cq_error err;
    uint64_t n;
    switch (opt) {
    case 'n':
        json_object_set_new(o->obj, "name", json_string(value));
        return 0;
    case 'r':
        json_object_set_new(o->obj, "runtime", json_string(value));
        return 0;
    case 'N': {
        enum cq_network_mode mode;
        if (cq_net_mode_parse(value, &mode, &err) < 0)
            return cq_usage_error("interpreter", "--network: %s", err.msg);
        json_object_set_new(o->obj, "network", json_string(cq_net_mode_name(mode)));
        return 0;
    }
    case 'a':
        if (o->allow == NULL) {
            o->allow = json_array();
            json_object_set(o->obj, "allow", o->allow);
        }
        json_array_append_new(o->allow, json_string(value));
        return 0;
    case 'T':
        if (o->tenants == NULL) {
            o->tenants = json_array();
            json_object_set(o->obj, "tenants", o->tenants);
        }
        json_array_append_new(o->tenants, json_string(value));
        return 0;
    case 'm':
    case 'd':
        if (cq_parse_size(value, 1ULL << 40, &n, &err) < 0)
            return cq_usage_error("interpreter", "--%s: %s", opt == 'm' ? "memory" : "disk",
                                  err.msg);
        json_object_set_new(o->obj, opt == 'm' ? "memory" : "disk", json_integer((json_int_t)n));
        return 0;
    case 'c': {
        char *end;
        double cpus = strtod(value, &end);
        if (end == value || *end != '\0')
            return cq_usage_error("interpreter", "--cpus: '%s' is not a number", value);
        json_object_set_new(o->obj, "cpus", json_real(cpus));
        return 0;
    }
    case 't':
    case 'w':
        if (cq_parse_uint(value, 0, 1000000, &n, &err) < 0)
            return cq_usage_error("interpreter", "--%s: %s",
                                  opt == 't' ? "session-timeout" : "warm-pool", err.msg);
        json_object_set_new(o->obj, opt == 't' ? "sessionTimeoutSeconds" : "warmPool",
                            json_integer((json_int_t)n));
        return 0;
    case 'R':
        o->replace = true;
        return 0;
    }
    return -1;
}

/* The text of the definition: DEF.json's, or the options'. malloc'd, or NULL (printed). */
static char *definition_text(const char *path, struct create_options *o)
{
    struct cq_error err;
    if (path == NULL) {
        char *text = json_dumps(o->obj, JSON_COMPACT);
        if (text == NULL)
            fprintf(stderr, "codeq interpreter create: out of memory\n");
        return text;
    }
    cq_autoclose int fd = open(path, O_RDONLY | O_CLOEXEC);
    uint8_t *text = NULL;
    size_t len;
    if (fd < 0 || cq_read_fd_limit(fd, DEF_FILE_MAX, &text, &len, &err) < 0) {
        fprintf(stderr, "codeq interpreter create: %s: %s\n", path,
                fd < 0 ? strerror(errno) : err.msg);
        return NULL;
    }
    if (strlen((char *)text) != len) {
        fprintf(stderr, "codeq interpreter create: %s: contains a NUL byte\n", path);
        free(text);
        return NULL;
    }
    return (char *)text;
}

static int cmd_create(const char *store, const char *path, struct create_options *o)
{
    if (path != NULL && o->fields)
        return cq_usage_error("interpreter", "create takes DEF.json or --name NAME ..., not both");
    if (path == NULL && json_object_get(o->obj, "name") == NULL)
        return cq_usage_error("interpreter", "create needs --name NAME (or DEF.json)");
    cq_autofree char *text = definition_text(path, o);
    if (text == NULL)
        return 1;
    struct cq_interpreter_def def;
    struct cq_error err;
    if (cq_interpreter_def_parse(text, strlen(text), &def, &err) < 0) {
        fprintf(stderr, "codeq interpreter create: %s%s%s\n", path != NULL ? path : "",
                path != NULL ? ": " : "", err.msg);
        return 1;
    }
    int rc = cq_interpreter_save(store, &def, o->replace, &err);
    char name[CQ_INTERPRETER_NAME_MAX + 1];
    snprintf(name, sizeof(name), "%s", def.name);
    cq_interpreter_def_free(&def);
    if (rc < 0) {
        fprintf(stderr, "codeq interpreter create: %s\n", err.msg);
        return 1;
    }
    /* What the store holds now, createdAt included. */
    if (cq_interpreter_load(store, name, &def, &err) < 0) {
        fprintf(stderr, "codeq interpreter create: %s\n", err.msg);
        return 1;
    }
    rc = print_def(&def);
    cq_interpreter_def_free(&def);
    return rc;
}

/* create --fleet CONF: the definition goes to the fleet's Redis (cli/fleet_defs.c). */
static int fleet_create(const char *conf, const char *path, struct create_options *o)
{
    if (path != NULL && o->fields)
        return cq_usage_error("interpreter", "create takes DEF.json or --name NAME ..., not both");
    if (path == NULL && json_object_get(o->obj, "name") == NULL)
        return cq_usage_error("interpreter", "create needs --name NAME (or DEF.json)");
    cq_autofree char *text = definition_text(path, o);
    return text != NULL ? cq_fleet_interpreter_create(conf, text, o->replace) : 1;
}

int cq_cmd_interpreter(int argc, char **argv)
{
    enum { OPT_STORE = 256, OPT_FLEET };
    static const struct option longopts[] = {
        {"name", required_argument, NULL, 'n'},
        {"runtime", required_argument, NULL, 'r'},
        {"network", required_argument, NULL, 'N'},
        {"allow", required_argument, NULL, 'a'},
        {"memory", required_argument, NULL, 'm'},
        {"cpus", required_argument, NULL, 'c'},
        {"disk", required_argument, NULL, 'd'},
        {"session-timeout", required_argument, NULL, 't'},
        {"warm-pool", required_argument, NULL, 'w'},
        {"tenant", required_argument, NULL, 'T'},
        {"replace", no_argument, NULL, 'R'},
        {"store", required_argument, NULL, OPT_STORE},
        {"fleet", required_argument, NULL, OPT_FLEET},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct create_options o = {.obj = json_object()};
    const char *store = NULL, *fleet = NULL;
    bool create_opts = false;
    int status = -1;
    opterr = 0;
    optind = 1;
    int c;
    /* '+' is not used: options may follow the subcommand, as with codeq runtime. Short
     * letters are internal (no short options are accepted: the string is "h"). */
    while (status < 0 && (c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        if (c == 'h') {
            usage(stdout);
            status = 0;
        } else if (c == OPT_STORE) {
            store = optarg;
        } else if (c == OPT_FLEET) {
            fleet = optarg;
        } else if (c != '?' && c != ':') {
            create_opts = true;
            o.fields |= c != 'R';
            int rc = create_option(&o, c, optarg);
            if (rc != 0)
                status = rc;
        } else {
            status = cq_usage_error("interpreter", "unknown or incomplete option '%s'",
                                    argv[optind - 1]);
        }
    }
    if (status < 0) {
        const char *sub = optind < argc ? argv[optind] : NULL;
        int nargs = argc - optind - 1;
        struct cq_error err;
        struct cq_interpreter_def def;
        if (sub == NULL)
            status = cq_usage_error("interpreter", "no subcommand (create, list, get or delete)");
        else if (strcmp(sub, "create") != 0 && strcmp(sub, "list") != 0 &&
                 strcmp(sub, "get") != 0 && strcmp(sub, "delete") != 0)
            status = cq_usage_error("interpreter",
                                    "unknown subcommand '%s' (create, list, get or delete)", sub);
        else if (strcmp(sub, "create") != 0 && create_opts)
            status = cq_usage_error("interpreter", "--name ... --replace are options of create");
        else if (fleet != NULL && store != NULL)
            status = cq_usage_error("interpreter", "--store and --fleet exclude each other");
        else if (strcmp(sub, "create") == 0 && nargs > 1)
            status = cq_usage_error("interpreter", "create takes one DEF.json at most");
        else if (strcmp(sub, "create") == 0 && fleet != NULL)
            status = fleet_create(fleet, nargs == 1 ? argv[optind + 1] : NULL, &o);
        else if (strcmp(sub, "create") == 0)
            status = cmd_create(store, nargs == 1 ? argv[optind + 1] : NULL, &o);
        else if (nargs != (strcmp(sub, "list") == 0 ? 0 : 1))
            status = cq_usage_error("interpreter", "%s takes %s", sub,
                                    strcmp(sub, "list") == 0 ? "no argument" : "one NAME");
        else if (fleet != NULL && strcmp(sub, "list") == 0)
            status = cq_fleet_interpreter_list(fleet);
        else if (fleet != NULL && strcmp(sub, "get") == 0)
            status = cq_fleet_interpreter_get(fleet, argv[optind + 1]);
        else if (fleet != NULL)
            status = cq_fleet_interpreter_delete(fleet, argv[optind + 1]);
        else if (strcmp(sub, "list") == 0) {
            status = cq_interpreter_list(store, print_entry, NULL, &err) < 0 ? 1 : 0;
            if (status != 0)
                fprintf(stderr, "codeq interpreter list: %s\n", err.msg);
        } else if (strcmp(sub, "get") == 0) {
            if (cq_interpreter_load(store, argv[optind + 1], &def, &err) < 0) {
                fprintf(stderr, "codeq interpreter get: %s\n", err.msg);
                status = 1;
            } else {
                status = print_def(&def);
                cq_interpreter_def_free(&def);
            }
        } else {
            status = cq_interpreter_remove(store, argv[optind + 1], &err) < 0 ? 1 : 0;
            if (status != 0)
                fprintf(stderr, "codeq interpreter delete: %s\n", err.msg);
        }
    }
    json_decref(o.allow);
    json_decref(o.tenants);
    json_decref(o.obj);
    return status;
}
