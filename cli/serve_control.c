/* cli/serve_control.c - AgentCore's control plane for code interpreters on `codeq
 * serve`, with the shapes of botocore's service model (bedrock-agentcore-control
 * 2023-06-05), so that the SDK's create/get/list/delete_code_interpreter work
 * unmodified (BEDROCK_AGENTCORE_CP_ENDPOINT):
 *
 *   PUT    /code-interpreters         CreateCodeInterpreter (202)
 *   POST   /code-interpreters         ListCodeInterpreters (?maxResults, nextToken, type)
 *   GET    /code-interpreters/{id}    GetCodeInterpreter
 *   DELETE /code-interpreters/{id}    DeleteCodeInterpreter (202)
 *
 * The interpreters are the local store's definitions (runtime/interpreter.h), the same
 * ones `codeq interpreter` manages and the embedded worker starts sessions on; in front
 * of a fleet they live in the fleet's Redis, which serve does not reach, so the routes
 * refuse there and name the command that does it.
 *
 * Tenancy: an interpreter made through the API belongs to its tenant (its definition's
 * "tenants" is that tenant alone), so no other tenant can see, use or delete it, and an
 * id of another tenant's is answered as one that does not exist. The operator's own
 * (made with `codeq interpreter create`) are seen by the tenants they name (all, when
 * they name none) and deleted only by the operator. Without authentication (--no-auth,
 * loopback) there is one user and tenants are not asked about.
 */
#define _GNU_SOURCE
#include "cli/result_json.h"
#include "cli/serve.h"
#include "common/clock.h"
#include "common/random.h"
#include "runtime/interpreter.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define AWS_BUILTIN     "aws.codeinterpreter.v1"
#define ARN_PREFIX      "arn:aws:bedrock-agentcore:local:000000000000:"
#define ID_SUFFIX_LEN   10
#define NAME_MAX_LEN    48 /* SandboxName: [a-zA-Z][a-zA-Z0-9_]{0,47} */
#define LIST_MAX        100
#define LIST_DEFAULT    10
#define INTERPRETER_CAP 4096 /* definitions one listing looks at */

void cq_serve_control_init(struct cq_serve_control *c, bool local_store, bool authenticated,
                           enum cq_network_mode default_network)
{
    c->local_store = local_store;
    c->authenticated = authenticated;
    c->default_network = default_network;
    pthread_mutex_init(&c->create_lock, NULL);
}

void cq_serve_control_destroy(struct cq_serve_control *c)
{
    pthread_mutex_destroy(&c->create_lock);
}

static bool is_builtin(const char *id)
{
    return strcmp(id, AWS_BUILTIN) == 0 || strcmp(id, CQ_INTERPRETER_DEFAULT) == 0;
}

static bool names_tenant(const struct cq_interpreter_def *d, const char *tenant)
{
    for (size_t i = 0; i < d->n_tenants; i++)
        if (strcmp(d->tenants[i], tenant) == 0)
            return true;
    return false;
}

static bool visible(const struct cq_serve_control *c, const struct cq_interpreter_def *d,
                    const char *tenant)
{
    return !c->authenticated || d->n_tenants == 0 || names_tenant(d, tenant);
}

/* Made through the API by this tenant (or anything, for the one user of --no-auth). */
static bool deletable(const struct cq_serve_control *c, const struct cq_interpreter_def *d,
                      const char *tenant)
{
    return !c->authenticated || (d->n_tenants == 1 && strcmp(d->tenants[0], tenant) == 0);
}

int cq_serve_interpreter_usable(const struct cq_serve_control *c, const char *tenant,
                                const char *id)
{
    if (!c->local_store || !c->authenticated || is_builtin(id))
        return 1;
    struct cq_interpreter_def d;
    struct cq_error err;
    if (cq_interpreter_load(NULL, id, &d, &err) < 0)
        return 1; /* the backend's own refusal names what is wrong */
    int ok = visible(c, &d, tenant);
    cq_interpreter_def_free(&d);
    return ok;
}

/* ---- shapes ------------------------------------------------------------------------ */

/* codeq's modes in AgentCore's words: ALLOWLIST is what docs/agentcore.md maps VPC to. */
static const char *agentcore_mode(enum cq_network_mode m)
{
    switch (m) {
    case CQ_NETWORK_PUBLIC:
        return "PUBLIC";
    case CQ_NETWORK_ALLOWLIST:
        return "VPC";
    default:
        return "SANDBOX";
    }
}

static json_t *arn(const char *id)
{
    char text[200];
    if (is_builtin(id))
        snprintf(text, sizeof(text), "arn:aws:bedrock-agentcore:local:aws:code-interpreter/%s",
                 AWS_BUILTIN);
    else
        snprintf(text, sizeof(text), ARN_PREFIX "code-interpreter-custom/%s", id);
    return json_string(text);
}

/* GetCodeInterpreter's answer (summary: CodeInterpreterSummary's fields only). */
static json_t *describe(const struct cq_serve_control *c, const struct cq_interpreter_def *d,
                        bool summary)
{
    const char *id = strcmp(d->name, CQ_INTERPRETER_DEFAULT) == 0 ? AWS_BUILTIN : d->name;
    int64_t created = d->created_ms > 0 ? d->created_ms : 0;
    json_t *o = json_pack(
        "{s:s, s:o, s:s, s:s, s:o, s:o}", "codeInterpreterId", id, "codeInterpreterArn", arn(id),
        "name", d->agentcore.name != NULL ? d->agentcore.name : d->name, "status", "READY",
        "createdAt", cq_json_iso_time(created), "lastUpdatedAt", cq_json_iso_time(created));
    if (o == NULL)
        return NULL;
    if (d->agentcore.description != NULL)
        json_object_set_new(o, "description", json_string(d->agentcore.description));
    if (!summary) {
        json_object_set_new(
            o, "networkConfiguration",
            json_pack("{s:s}", "networkMode",
                      agentcore_mode(d->has_network ? d->network : c->default_network)));
        if (d->agentcore.role_arn != NULL)
            json_object_set_new(o, "executionRoleArn", json_string(d->agentcore.role_arn));
    }
    return o;
}

/* The definition id names, or the built-in one; answered NotFound when there is none
 * this tenant may see. */
static int load_visible(const struct cq_serve_control *c, const char *tenant, const char *id,
                        struct cq_interpreter_def *d, struct cq_http_response *resp)
{
    struct cq_error err;
    if (cq_interpreter_load(NULL, is_builtin(id) ? CQ_INTERPRETER_DEFAULT : id, d, &err) < 0) {
        if (err.code == CQ_ENOTFOUND)
            cq_serve_fail(resp, "ResourceNotFoundException", NULL, "no code interpreter '%s'", id);
        else
            cq_serve_fail_err(resp, &err);
        return -1;
    }
    if (!visible(c, d, tenant)) {
        cq_interpreter_def_free(d);
        cq_serve_fail(resp, "ResourceNotFoundException", NULL, "no code interpreter '%s'", id);
        return -1;
    }
    return 0;
}

/* ---- listing ----------------------------------------------------------------------- */

struct listing {
    const struct cq_serve_control *c;
    const char *tenant;
    json_t **items; /* described summaries, by id */
    char **ids;
    size_t n;
    bool system, custom;
    bool failed;
};

static void collect(void *ctx, const struct cq_interpreter_def *d)
{
    struct listing *l = ctx;
    bool builtin = strcmp(d->name, CQ_INTERPRETER_DEFAULT) == 0;
    if (l->failed || (builtin ? !l->system : !l->custom) || !visible(l->c, d, l->tenant))
        return;
    if (l->n == INTERPRETER_CAP)
        return;
    json_t *item = describe(l->c, d, true);
    char *id = strdup(builtin ? AWS_BUILTIN : d->name);
    if (item == NULL || id == NULL) {
        json_decref(item);
        free(id);
        l->failed = true;
        return;
    }
    l->items[l->n] = item;
    l->ids[l->n++] = id;
}

/* Orders indexes into a listing by the ids they point at (qsort_r's context). */
static int by_id(const void *a, const void *b, void *ids)
{
    char *const *id = ids;
    return strcmp(id[*(const size_t *)a], id[*(const size_t *)b]);
}

static void list(const struct cq_serve_control *c, const char *tenant,
                 const struct cq_http_request *req, struct cq_http_response *resp)
{
    long max = LIST_DEFAULT;
    const char *v;
    if ((v = cq_http_query(req, "maxResults")) != NULL) {
        char *end;
        errno = 0;
        max = strtol(v, &end, 10);
        if (errno != 0 || *end != '\0' || end == v || max < 1 || max > LIST_MAX) {
            cq_serve_fail(resp, "ValidationException", "FieldValidationFailed",
                          "maxResults must be an integer from 1 to %d", LIST_MAX);
            return;
        }
    }
    const char *after = cq_http_query(req, "nextToken");
    const char *type = cq_http_query(req, "type");
    struct listing l = {.c = c, .tenant = tenant, .system = true, .custom = true};
    if (type != NULL) {
        if (strcmp(type, "SYSTEM") != 0 && strcmp(type, "CUSTOM") != 0) {
            cq_serve_fail(resp, "ValidationException", "FieldValidationFailed",
                          "type must be SYSTEM or CUSTOM");
            return;
        }
        l.system = strcmp(type, "SYSTEM") == 0;
        l.custom = !l.system;
    }
    l.items = calloc(INTERPRETER_CAP, sizeof(*l.items));
    l.ids = calloc(INTERPRETER_CAP, sizeof(*l.ids));
    struct cq_error err;
    if (l.items == NULL || l.ids == NULL) {
        cq_serve_fail(resp, "InternalServerException", NULL, "out of memory");
    } else if (cq_interpreter_list(NULL, collect, &l, &err) < 0) {
        cq_serve_fail_err(resp, &err);
    } else if (l.failed) {
        cq_serve_fail(resp, "InternalServerException", NULL, "out of memory");
    } else {
        /* The store lists by name, the built-in first; pages go by id, in byte order,
         * and a page's token is its last id: a definition made or removed between
         * pages neither shifts nor repeats the others. */
        size_t *order = calloc(l.n + 1, sizeof(*order));
        if (order == NULL) {
            cq_serve_fail(resp, "InternalServerException", NULL, "out of memory");
            goto out;
        }
        for (size_t i = 0; i < l.n; i++)
            order[i] = i;
        qsort_r(order, l.n, sizeof(*order), by_id, l.ids);
        json_t *summaries = json_array();
        size_t start = 0;
        while (after != NULL && start < l.n && strcmp(l.ids[order[start]], after) <= 0)
            start++;
        size_t end = start + (size_t)max < l.n ? start + (size_t)max : l.n;
        for (size_t i = start; i < end; i++)
            json_array_append(summaries, l.items[order[i]]);
        json_t *body = json_pack("{s:o}", "codeInterpreterSummaries", summaries);
        /* More after this page: its last id is where the next one starts. */
        if (end < l.n && end > start)
            json_object_set_new(body, "nextToken", json_string(l.ids[order[end - 1]]));
        free(order);
        cq_serve_set_json(resp, 200, body);
    }
out:
    for (size_t i = 0; i < l.n; i++) {
        json_decref(l.items[i]);
        free(l.ids[i]);
    }
    free(l.items);
    free(l.ids);
}

/* ---- create ------------------------------------------------------------------------ */

static bool sandbox_name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > NAME_MAX_LEN || !isalpha((unsigned char)name[0]))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)name[i]) && name[i] != '_')
            return false;
    return true;
}

/* An earlier create of this tenant with the same name (ConflictException) or the same
 * client token (its answer again). */
struct earlier {
    const struct cq_serve_control *c;
    const char *tenant, *name, *token;
    char same_token[CQ_INTERPRETER_NAME_MAX + 1];
    int64_t same_token_created;
    bool same_token_name_differs;
    bool same_name;
};

static void find_earlier(void *ctx, const struct cq_interpreter_def *d)
{
    struct earlier *e = ctx;
    if (d->agentcore.name == NULL || !visible(e->c, d, e->tenant) ||
        (e->c->authenticated && !names_tenant(d, e->tenant)))
        return;
    if (e->token != NULL && d->agentcore.client_token != NULL &&
        strcmp(d->agentcore.client_token, e->token) == 0) {
        snprintf(e->same_token, sizeof(e->same_token), "%s", d->name);
        e->same_token_created = d->created_ms;
        e->same_token_name_differs = strcmp(d->agentcore.name, e->name) != 0;
    } else if (strcmp(d->agentcore.name, e->name) == 0) {
        e->same_name = true;
    }
}

static const char *optional_string(json_t *body, const char *key, size_t min, size_t max,
                                   struct cq_http_response *resp, bool *bad)
{
    json_t *v = json_object_get(body, key);
    if (v == NULL)
        return NULL;
    size_t n = json_string_length(v);
    if (!json_is_string(v) || n < min || n > max || strlen(json_string_value(v)) != n) {
        cq_serve_fail(resp, "ValidationException", "FieldValidationFailed",
                      "%s must be text of %zu to %zu characters", key, min, max);
        *bad = true;
        return NULL;
    }
    return json_string_value(v);
}

static void created(struct cq_http_response *resp, const char *id, int64_t created_ms)
{
    cq_serve_set_json(resp, 202,
                      json_pack("{s:s, s:o, s:o, s:s}", "codeInterpreterId", id,
                                "codeInterpreterArn", arn(id), "createdAt",
                                cq_json_iso_time(created_ms), "status", "READY"));
}

static void create(struct cq_serve_control *c, const char *tenant,
                   const struct cq_http_request *req, struct cq_http_response *resp)
{
    json_t *body = cq_serve_body_object(req, resp);
    if (body == NULL)
        return;
    bool bad = false;
    const char *name = optional_string(body, "name", 1, NAME_MAX_LEN, resp, &bad);
    const char *description =
        bad ? NULL : optional_string(body, "description", 1, 4096, resp, &bad);
    const char *role = bad ? NULL : optional_string(body, "executionRoleArn", 1, 2048, resp, &bad);
    const char *token = bad ? NULL : optional_string(body, "clientToken", 33, 256, resp, &bad);
    json_t *net = json_object_get(body, "networkConfiguration");
    const char *mode = json_string_value(json_object_get(net, "networkMode"));
    if (bad)
        goto out;
    if (name == NULL || !sandbox_name_ok(name)) {
        cq_serve_fail(resp, "ValidationException", "FieldValidationFailed",
                      "name is required: a letter, then up to 47 letters, digits or '_'");
        goto out;
    }
    if (!json_is_object(net) || mode == NULL) {
        cq_serve_fail(resp, "ValidationException", "FieldValidationFailed",
                      "networkConfiguration.networkMode is required (SANDBOX or PUBLIC)");
        goto out;
    }
    struct cq_interpreter_def d = {0};
    if (strcmp(mode, "SANDBOX") == 0) {
        d.network = CQ_NETWORK_NONE;
    } else if (strcmp(mode, "PUBLIC") == 0) {
        d.network = CQ_NETWORK_PUBLIC;
    } else if (strcmp(mode, "VPC") == 0) {
        /* Subnets and security groups name AWS resources codeq has no counterpart
         * for: taking them and not honouring them would be worse than saying so. */
        cq_serve_fail(resp, "ValidationException", "FieldValidationFailed",
                      "networkMode VPC: codeq has no VPC subnets or security groups; define an "
                      "ALLOWLIST interpreter (codeq interpreter create --network ALLOWLIST "
                      "--allow DEST) or use PUBLIC with the operator's network_private");
        goto out;
    } else {
        cq_serve_fail(resp, "ValidationException", "FieldValidationFailed",
                      "networkMode must be SANDBOX, PUBLIC or VPC");
        goto out;
    }
    d.has_network = true;
    /* What codeq cannot honour is refused rather than silently left out. */
    static const char *const unsupported[] = {"certificates", "filesystemConfigurations"};
    for (size_t i = 0; i < 2; i++) {
        json_t *v = json_object_get(body, unsupported[i]);
        if (v != NULL && !(json_is_array(v) && json_array_size(v) == 0)) {
            cq_serve_fail(resp, "ValidationException", "FieldValidationFailed",
                          "%s is not supported by codeq", unsupported[i]);
            goto out;
        }
    }
    pthread_mutex_lock(&c->create_lock);
    struct earlier e = {.c = c, .tenant = tenant, .name = name, .token = token};
    struct cq_error err;
    if (cq_interpreter_list(NULL, find_earlier, &e, &err) < 0) {
        pthread_mutex_unlock(&c->create_lock);
        cq_serve_fail_err(resp, &err);
        goto out;
    }
    if (e.same_token[0] != '\0') {
        pthread_mutex_unlock(&c->create_lock);
        if (e.same_token_name_differs)
            cq_serve_fail(resp, "ConflictException", NULL,
                          "clientToken was used to create another code interpreter");
        else
            created(resp, e.same_token, e.same_token_created);
        goto out;
    }
    if (e.same_name) {
        pthread_mutex_unlock(&c->create_lock);
        cq_serve_fail(resp, "ConflictException", NULL, "a code interpreter named '%s' exists",
                      name);
        goto out;
    }
    /* The id is AgentCore's NAME-XXXXXXXXXX, in the lower case codeq's names take. */
    char suffix[ID_SUFFIX_LEN + 1];
    cq_random_id(suffix, ID_SUFFIX_LEN);
    snprintf(d.name, sizeof(d.name), "%s-%s", name, suffix);
    for (char *p = d.name; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    char *owner[] = {(char *)tenant, NULL};
    if (c->authenticated) {
        d.tenants = owner;
        d.n_tenants = 1;
    }
    d.agentcore.name = (char *)name;
    d.agentcore.description = (char *)description;
    d.agentcore.role_arn = (char *)role;
    d.agentcore.client_token = (char *)token;
    d.created_ms = cq_unix_ms();
    int rc = cq_interpreter_save(NULL, &d, false, &err);
    pthread_mutex_unlock(&c->create_lock);
    if (rc < 0)
        cq_serve_fail_err(resp, &err);
    else
        created(resp, d.name, d.created_ms);
out:
    json_decref(body);
}

/* ---- get, delete -------------------------------------------------------------------- */

static void get(const struct cq_serve_control *c, const char *tenant, const char *id,
                struct cq_http_response *resp)
{
    struct cq_interpreter_def d;
    if (load_visible(c, tenant, id, &d, resp) < 0)
        return;
    cq_serve_set_json(resp, 200, describe(c, &d, false));
    cq_interpreter_def_free(&d);
}

static void delete (const struct cq_serve_control *c, const char *tenant, const char *id,
                    struct cq_http_response *resp)
{
    if (is_builtin(id)) {
        cq_serve_fail(resp, "ValidationException", "FieldValidationFailed",
                      "'%s' is built in: it cannot be deleted", id);
        return;
    }
    struct cq_interpreter_def d;
    if (load_visible(c, tenant, id, &d, resp) < 0)
        return;
    bool mine = deletable(c, &d, tenant);
    cq_interpreter_def_free(&d);
    if (!mine) {
        cq_serve_fail(resp, "AccessDeniedException", NULL,
                      "code interpreter '%s' was defined by the operator (codeq interpreter "
                      "create): only codeq interpreter delete removes it",
                      id);
        return;
    }
    /* Sessions running on it keep what they started with; new ones are refused. */
    struct cq_error err;
    if (cq_interpreter_remove(NULL, id, &err) < 0) {
        if (err.code == CQ_ENOTFOUND)
            cq_serve_fail(resp, "ResourceNotFoundException", NULL, "no code interpreter '%s'", id);
        else
            cq_serve_fail_err(resp, &err);
        return;
    }
    cq_serve_set_json(resp, 202,
                      json_pack("{s:s, s:s, s:o}", "codeInterpreterId", id, "status", "DELETED",
                                "lastUpdatedAt", cq_json_iso_time(cq_unix_ms())));
}

void cq_serve_control(struct cq_serve_control *c, const char *tenant, const char *id,
                      const struct cq_http_request *req, struct cq_http_response *resp)
{
    const char *takes = id == NULL ? "PUT, POST" : "GET, DELETE";
    const char *m = req->method;
    bool ok = id == NULL ? strcmp(m, "PUT") == 0 || strcmp(m, "POST") == 0
                         : strcmp(m, "GET") == 0 || strcmp(m, "DELETE") == 0;
    if (!ok) {
        cq_serve_fail(resp, "ValidationException", "CannotParse", "this route takes %s", takes);
        resp->status = 405;
        resp->allow = takes;
        return;
    }
    if (!c->local_store) {
        cq_serve_fail(resp, "ValidationException", NULL,
                      "codeq serve is a gateway to a fleet here: its code interpreters are "
                      "managed with codeq interpreter --fleet CONF");
        return;
    }
    if (id == NULL && strcmp(m, "PUT") == 0)
        create(c, tenant, req, resp);
    else if (id == NULL)
        list(c, tenant, req, resp);
    else if (strcmp(m, "GET") == 0)
        get(c, tenant, id, resp);
    else
        delete (c, tenant, id, resp);
}
