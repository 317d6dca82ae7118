/* bench/crypto_bench.c - what signing and sealing cost per request, one operation at a
 * time, beside the packing every request pays anyway (docs/performance.md).
 *
 * The fleet's round trip (bench/auth_bench.sh) is milliseconds of Kafka hops and
 * sandbox work, in which microseconds of HMAC and AES-GCM drown in the noise of a
 * shared machine; this measures them alone:
 *
 *   pack           protobuf-c packs an executeCode request (the baseline)
 *   sign           the client signs it (fleet/auth.h: SHA-256 of the bytes, HMAC)
 *   verify         cq_auth_open with a keys file: what the dispatcher does, and the
 *                  worker again
 *   seal / open    a stored value's envelope (fleet/crypt.h) of SIZE bytes: a reply
 *                  kept for retries, a file's chunk
 *   claim seal     a claim's payload sealed in place (fleet/claim.h)
 *
 * usage: codeq-bench-crypto [--runs N]
 */
#define _GNU_SOURCE
#include "common/clock.h"
#include "common/error.h"
#include "fleet/auth.h"
#include "fleet/claim.h"
#include "fleet/crypt.h"
#include "fleet/keys.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Nanoseconds: the operations here take microseconds, below cq_now_us()'s grain. */
static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Prints p50, p99 and mean of samples (microseconds). */
static void report(const char *name, double *us, int n)
{
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum += us[i];
    qsort(us, (size_t)n, sizeof(*us), by_value);
    printf("%-34s %9.2f %9.2f %9.2f %7d\n", name, us[n / 2], us[(n * 99) / 100], sum / n, n);
}

static void die(const struct cq_error *err)
{
    fprintf(stderr, "codeq-bench-crypto: %s\n", err->msg);
    exit(1);
}

#define TIMED(name, runs, body)                                                                    \
    do {                                                                                           \
        double *us_ = malloc(sizeof(double) * (size_t)(runs));                                     \
        for (int i_ = 0; i_ < (runs); i_++) {                                                      \
            int64_t t0_ = now_ns();                                                                \
            body;                                                                                  \
            us_[i_] = (double)(now_ns() - t0_) / 1000.0;                                           \
        }                                                                                          \
        report(name, us_, runs);                                                                   \
        free(us_);                                                                                 \
    } while (0)

int main(int argc, char **argv)
{
    int runs = 20000;
    static const struct option opts[] = {{"runs", required_argument, NULL, 'n'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "n:h", opts, NULL)) != -1) {
        if (c == 'n' && atoi(optarg) > 0) {
            runs = atoi(optarg);
        } else {
            fprintf(c == 'h' ? stdout : stderr, "usage: codeq-bench-crypto [--runs N]\n");
            return c == 'h' ? 0 : 2;
        }
    }
    struct cq_error err;
    char dir[] = "/tmp/codeq-bench-crypto-XXXXXX", path[64];
    if (mkdtemp(dir) == NULL)
        return perror("mkdtemp"), 1;
    snprintf(path, sizeof(path), "%s/keys", dir);
    struct cq_keyfile kf;
    struct cq_key key;
    struct cq_keystore *ks;
    if (cq_keyfile_read(path, true, &kf, &err) < 0 ||
        cq_keyfile_add_tenant(&kf, "bench", &err) < 0 ||
        cq_keyfile_add_key(&kf, "bench", &key, &err) < 0 || cq_keyfile_write(path, &kf, &err) < 0 ||
        cq_keystore_open(path, NULL, &ks, &err) < 0)
        die(&err);
    cq_keyfile_free(&kf);

    /* An executeCode request as a client sends it. */
    Codeq__V1__Arguments args = CODEQ__V1__ARGUMENTS__INIT;
    args.code = "import pandas as pd\ndf = pd.read_csv('data.csv')\ndf.describe()";
    Codeq__V1__Invoke inv = CODEQ__V1__INVOKE__INIT;
    inv.tool = "executeCode";
    inv.arguments = &args;
    Codeq__V1__Request req = CODEQ__V1__REQUEST__INIT;
    req.request_id = "0123456789abcdef0123456789abcdef";
    req.session_id = "Jkic4sIJ0123456789abcdefghijklmn";
    req.tenant = "bench";
    req.reply_topic = "codeq.replies.bench.client-1";
    req.operation_case = CODEQ__V1__REQUEST__OPERATION_INVOKE;
    req.invoke = &inv;
    size_t packed_len = codeq__v1__request__get_packed_size(&req);
    uint8_t *packed = malloc(packed_len);

    printf("codeq-bench-crypto: %d runs per series; an executeCode request of %zu bytes\n\n", runs,
           packed_len);
    printf("%-34s %9s %9s %9s %7s\n", "series (us)", "p50", "p99", "mean", "n");
    TIMED("pack (every request)", runs, codeq__v1__request__pack(&req, packed));
    uint8_t *signed_bytes = NULL;
    size_t signed_len = 0;
    int64_t now = cq_unix_ms();
    TIMED("sign (client)", runs, {
        free(signed_bytes);
        if (cq_auth_sign(&req, key.id, key.secret, now, &signed_bytes, &signed_len, &err) < 0)
            die(&err);
    });
    TIMED("verify (dispatcher; worker again)", runs, {
        struct cq_opened op;
        if (cq_auth_open(ks, signed_bytes, signed_len, now, CQ_AUTH_WINDOW_MS_DEFAULT, &op, &err) <
            0)
            die(&err);
        cq_opened_free(&op);
    });

    uint8_t dek[CQ_CRYPT_KEY_LEN];
    memset(dek, 0x5a, sizeof(dek));
    static const size_t sizes[] = {1024, 64 << 10, 1 << 20};
    for (size_t s = 0; s < sizeof(sizes) / sizeof(*sizes); s++) {
        size_t n = sizes[s];
        int r = n >= (1 << 20) ? runs / 100 + 1 : n >= (64 << 10) ? runs / 10 + 1 : runs;
        uint8_t *value = calloc(1, n), *sealed = NULL, *opened = NULL;
        size_t sealed_len = 0, opened_len = 0;
        char name[64];
        snprintf(name, sizeof(name), "seal a stored value, %zu KiB", n >> 10);
        TIMED(name, r, {
            free(sealed);
            if (cq_envelope_seal("bench", 1, dek, "codeq:result:x", "", value, n, &sealed,
                                 &sealed_len, &err) < 0)
                die(&err);
        });
        struct cq_envelope_head head;
        if (cq_envelope_head(sealed, sealed_len, &head, &err) < 0)
            die(&err);
        snprintf(name, sizeof(name), "open a stored value, %zu KiB", n >> 10);
        TIMED(name, r, {
            free(opened);
            if (cq_envelope_open(&head, dek, "codeq:result:x", "", sealed, sealed_len, &opened,
                                 &opened_len, &err) < 0)
                die(&err);
        });
        uint8_t *claim = malloc(n + CQ_CRYPT_SEAL_OVERHEAD);
        snprintf(name, sizeof(name), "seal a claim in place, %zu KiB", n >> 10);
        TIMED(name, r, {
            if (cq_claim_seal("0123456789abcdef0123456789abcdef", dek, claim, n, &err) < 0)
                die(&err);
        });
        free(claim);
        free(value);
        free(sealed);
        free(opened);
    }
    free(signed_bytes);
    free(packed);
    cq_keystore_close(ks);
    unlink(path);
    rmdir(dir);
    return 0;
}
