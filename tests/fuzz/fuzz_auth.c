/* tests/fuzz/fuzz_auth.c - signed requests as the daemons open them.
 *
 * Whoever reaches the request topic or a worker topic chooses these bytes; the
 * dispatcher and the workers open them with cq_auth_open() before anything else: the
 * envelope, the signed request inside it, the key lookup and the signature, and the
 * session id a startSession may carry beside it. Each input is opened without keys (a
 * keyless fleet), and with a keys file whose one key signed the seed corpus
 * (tests/fuzz/make_corpus.py), so that the fuzzer starts from envelopes that verify and
 * reaches what follows (passing the request on: cq_opened_pack, opened again). Everything
 * is freed: LeakSanitizer fails a run that leaks.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "fleet/auth.h"
#include "fleet/keys.h"

/* The seed corpus' key (make_corpus.py signs with it). */
#define KEY_ID    "cqk_f0220000000000000000"
#define SECRET    "5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed"
#define SIGNED_AT 1800000000000LL

static struct cq_keystore *keys;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    char path[] = "/tmp/codeq-fuzz-auth-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        abort();
    FILE *f = fdopen(fd, "w");
    fprintf(f, "tenant fuzz 0\nkey " KEY_ID " fuzz " SECRET " active 0 0\n");
    fclose(f);
    struct cq_error err;
    if (cq_keystore_open(path, NULL, &keys, &err) < 0)
        abort();
    unlink(path); /* the keystore keeps what it read; a missing file keeps those keys */
    return 0;
}

static void open_and_pass_on(struct cq_keystore *ks, const uint8_t *data, size_t size)
{
    struct cq_opened op;
    struct cq_error err;
    int rc = cq_auth_open(ks, data, size, SIGNED_AT, 5 * 60 * 1000, &op, &err);
    if (rc == 0) {
        char hex[65];
        cq_opened_digest_hex(&op, hex);
        uint8_t *wire;
        size_t len;
        if (cq_opened_pack(&op, &wire, &len, &err) == 0) {
            struct cq_opened again;
            /* A signed request a daemon passes on opens again, as the same request (an
             * unsigned one is packed again by protobuf-c, which does not promise to
             * give back what it accepted: its unknown fields may not survive). */
            int again_rc = cq_auth_open(ks, wire, len, SIGNED_AT, 0, &again, &err);
            if (op.is_signed &&
                (again_rc != 0 || !again.is_signed || memcmp(again.digest, op.digest, 32) != 0))
                abort();
            cq_opened_free(&again);
            free(wire);
        }
    } else if (err.code != CQ_EPROTO && err.code != CQ_EINVALID && err.code != CQ_EDENIED) {
        abort();
    }
    cq_opened_free(&op);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    open_and_pass_on(NULL, data, size);
    open_and_pass_on(keys, data, size);
    return 0;
}
