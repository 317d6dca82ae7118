/* tests/fuzz/fuzz_interpreter_def.c - a code interpreter's definition
 * (runtime/interpreter.c).
 *
 * Definitions come from `codeq interpreter create`, from fleet clients and from the
 * fleet's Redis, where another host wrote them; a stored one is handed to workers as it
 * is. The input is the definition's JSON. Checked for every definition that parses
 * (abort on breach):
 *  - its fields are within the parser's bounds: names that name files of the store,
 *    DESTs that the network policy takes, and an allowlist only with ALLOWLIST;
 *  - cq_interpreter_def_json writes it as text that parses again to the same
 *    definition, field by field, and that text is its own serialisation: what one host
 *    stores, every other reads back unchanged.
 * A refusal carries a message. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "runtime/interpreter.h"
#include "sandbox/netpolicy.h"

static void check(int ok)
{
    if (!ok)
        abort();
}

static void check_same(const struct cq_interpreter_def *a, const struct cq_interpreter_def *b)
{
    check(strcmp(a->name, b->name) == 0 && strcmp(a->runtime, b->runtime) == 0);
    check(a->has_network == b->has_network && a->network == b->network);
    check(a->n_allow == b->n_allow);
    for (size_t i = 0; i < a->n_allow; i++)
        check(strcmp(a->allow[i], b->allow[i]) == 0);
    check(a->memory_bytes == b->memory_bytes && a->disk_bytes == b->disk_bytes);
    check(a->cpus == b->cpus); /* jansson writes reals with 17 digits: exact */
    check(a->session_timeout_s == b->session_timeout_s && a->warm_pool == b->warm_pool);
    check(a->created_ms == b->created_ms);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct cq_interpreter_def d;
    struct cq_error err = {0};
    if (cq_interpreter_def_parse((const char *)data, size, &d, &err) < 0) {
        check(err.msg[0] != '\0' && d.allow == NULL);
        return 0;
    }
    check(cq_runtime_name_check(d.name, NULL) == 0);
    check(d.runtime[0] == '\0' || cq_runtime_name_check(d.runtime, NULL) == 0);
    check(d.n_allow == 0 || (d.has_network && d.network == CQ_NETWORK_ALLOWLIST));
    check(d.n_allow <= CQ_NET_MAX_RULES);
    for (size_t i = 0; i < d.n_allow; i++) {
        struct cq_net_dest dest;
        check(cq_net_dest_parse(d.allow[i], &dest, NULL) == 0 && strchr(d.allow[i], ',') == NULL);
    }
    check(d.cpus == 0 || (d.cpus >= 0.01 && d.cpus <= 256));
    check(d.created_ms >= 0);

    char *text = cq_interpreter_def_json(&d);
    check(text != NULL);
    struct cq_interpreter_def again;
    check(cq_interpreter_def_parse(text, strlen(text), &again, &err) == 0);
    check_same(&d, &again);
    char *text2 = cq_interpreter_def_json(&again);
    check(text2 != NULL && strcmp(text, text2) == 0);
    free(text2);
    free(text);
    cq_interpreter_def_free(&again);
    cq_interpreter_def_free(&d);
    return 0;
}
