/* tests/unit/test_crypt.c - fleet/crypt.c: envelopes of values at rest, and the local
 * key service (tests/fleet/test_at_rest.py checks a whole fleet's Redis). */
#define _GNU_SOURCE
#include "fleet/crypt.h"
#include "unit.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const uint8_t DATA_KEY[CQ_CRYPT_KEY_LEN] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
static const uint8_t OTHER_KEY[CQ_CRYPT_KEY_LEN] = {9, 8, 7};
static const char SECRET[] = "the workspace file's secret contents";
#define KEY_NAME "codeq:chunks:s1"

static void seal(uint8_t **out, size_t *len)
{
    struct cq_error err;
    ck_assert_int_eq(cq_envelope_seal("acme", 3, DATA_KEY, KEY_NAME, "a.txt:0",
                                      (const uint8_t *)SECRET, sizeof(SECRET), out, len, &err),
                     0);
}

/* Opens env as read from key_name and field with key: 0, or -1 with err. */
static int open_env(const uint8_t *env, size_t len, const uint8_t *key, const char *key_name,
                    const char *field, uint8_t **plain, size_t *plain_len, struct cq_error *err)
{
    struct cq_envelope_head head;
    if (cq_envelope_head(env, len, &head, err) < 0)
        return -1;
    return cq_envelope_open(&head, key, key_name, field, env, len, plain, plain_len, err);
}

START_TEST(round_trip)
{
    uint8_t *env, *plain;
    size_t len, plain_len;
    seal(&env, &len);
    ck_assert_uint_eq(len, sizeof(SECRET) + cq_envelope_overhead("acme"));
    ck_assert_ptr_null(memmem(env, len, "secret", 6));
    struct cq_envelope_head head;
    struct cq_error err;
    ck_assert_int_eq(cq_envelope_head(env, len, &head, &err), 0);
    ck_assert_str_eq(head.tenant, "acme");
    ck_assert_uint_eq(head.version, 3);
    ck_assert_int_eq(open_env(env, len, DATA_KEY, KEY_NAME, "a.txt:0", &plain, &plain_len, &err),
                     0);
    ck_assert_uint_eq(plain_len, sizeof(SECRET));
    ck_assert_mem_eq(plain, SECRET, sizeof(SECRET));
    free(plain);
    /* Two seals of one value differ (random nonces): equal ciphertexts would tell a
     * reader of Redis which files are the same. */
    uint8_t *again;
    size_t again_len;
    seal(&again, &again_len);
    ck_assert_int_ne(memcmp(env, again, len), 0);
    free(again);
    free(env);
}
END_TEST

START_TEST(empty_value)
{
    uint8_t *env, *plain;
    size_t len, plain_len;
    struct cq_error err;
    ck_assert_int_eq(
        cq_envelope_seal("", 1, DATA_KEY, "codeq:result:r1", NULL, NULL, 0, &env, &len, &err), 0);
    ck_assert_int_eq(
        open_env(env, len, DATA_KEY, "codeq:result:r1", NULL, &plain, &plain_len, &err), 0);
    ck_assert_uint_eq(plain_len, 0);
    free(plain);
    free(env);
}
END_TEST

/* Every byte, header included, is covered: flipping any one is refused. */
START_TEST(tamper_any_byte)
{
    uint8_t *env, *plain = NULL;
    size_t len, plain_len;
    seal(&env, &len);
    for (size_t i = 0; i < len; i++) {
        env[i] ^= 0x01;
        struct cq_error err;
        ck_assert_msg(open_env(env, len, DATA_KEY, KEY_NAME, "a.txt:0", &plain, &plain_len, &err) <
                          0,
                      "byte %zu altered and still opened", i);
        ck_assert_int_eq(err.code, CQ_EDENIED);
        env[i] ^= 0x01;
    }
    struct cq_error err;
    ck_assert_int_lt(
        open_env(env, len - 1, DATA_KEY, KEY_NAME, "a.txt:0", &plain, &plain_len, &err), 0);
    free(env);
}
END_TEST

/* A value copied to another key, field or session does not open there. */
START_TEST(wrong_aad)
{
    uint8_t *env, *plain = NULL;
    size_t len, plain_len;
    struct cq_error err;
    seal(&env, &len);
    ck_assert_int_lt(
        open_env(env, len, DATA_KEY, "codeq:chunks:s2", "a.txt:0", &plain, &plain_len, &err), 0);
    ck_assert_int_lt(open_env(env, len, DATA_KEY, KEY_NAME, "b.txt:0", &plain, &plain_len, &err),
                     0);
    ck_assert_int_lt(open_env(env, len, DATA_KEY, KEY_NAME, "a.txt:1", &plain, &plain_len, &err),
                     0);
    /* The separator keeps key and field apart: "k" + "x:y" is not "kx" + ":y". */
    ck_assert_int_lt(open_env(env, len, DATA_KEY, KEY_NAME "a", ".txt:0", &plain, &plain_len, &err),
                     0);
    ck_assert_int_lt(open_env(env, len, OTHER_KEY, KEY_NAME, "a.txt:0", &plain, &plain_len, &err),
                     0);
    free(env);
}
END_TEST

/* A plain-text value where an envelope must be is refused, not taken as it is. */
START_TEST(plain_text_refused)
{
    struct cq_envelope_head head;
    struct cq_error err;
    ck_assert_int_lt(cq_envelope_head((const uint8_t *)SECRET, sizeof(SECRET), &head, &err), 0);
    ck_assert_int_eq(err.code, CQ_EDENIED);
    ck_assert_int_lt(cq_envelope_head((const uint8_t *)"CQE1", 4, &head, &err), 0);
    ck_assert_int_lt(cq_envelope_head((const uint8_t *)"", 0, &head, &err), 0);
}
END_TEST

START_TEST(wrap_unwrap)
{
    uint8_t master[CQ_CRYPT_KEY_LEN] = {42}, other[CQ_CRYPT_KEY_LEN] = {43};
    struct cq_kms *kms, *wrong;
    struct cq_error err;
    ck_assert_int_eq(cq_kms_local_new(master, &kms, &err), 0);
    ck_assert_int_eq(cq_kms_local_new(other, &wrong, &err), 0);
    uint8_t wrapped[CQ_KMS_WRAPPED_MAX], key[CQ_CRYPT_KEY_LEN];
    size_t n;
    ck_assert_int_eq(kms->wrap(kms, DATA_KEY, "codeq-dek:acme:1", wrapped, &n, &err), 0);
    ck_assert_uint_le(n, CQ_KMS_WRAPPED_MAX);
    ck_assert_ptr_null(memmem(wrapped, n, DATA_KEY, 9));
    ck_assert_int_eq(kms->unwrap(kms, wrapped, n, "codeq-dek:acme:1", key, &err), 0);
    ck_assert_mem_eq(key, DATA_KEY, CQ_CRYPT_KEY_LEN);
    /* Another master key, another tenant or version, or an altered wrapped key. */
    ck_assert_int_lt(wrong->unwrap(wrong, wrapped, n, "codeq-dek:acme:1", key, &err), 0);
    ck_assert_int_eq(err.code, CQ_EDENIED);
    ck_assert_int_lt(kms->unwrap(kms, wrapped, n, "codeq-dek:globex:1", key, &err), 0);
    ck_assert_int_lt(kms->unwrap(kms, wrapped, n, "codeq-dek:acme:2", key, &err), 0);
    wrapped[n - 1] ^= 1;
    ck_assert_int_lt(kms->unwrap(kms, wrapped, n, "codeq-dek:acme:1", key, &err), 0);
    ck_assert_int_lt(kms->unwrap(kms, wrapped, n - 1, "codeq-dek:acme:1", key, &err), 0);
    cq_kms_free(kms);
    cq_kms_free(wrong);
}
END_TEST

static void write_file(const char *path, const char *text, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    ck_assert_int_eq(chmod(path, mode), 0);
}

/* The master key file: 64 hex digits, its owner's only. */
START_TEST(master_key_file)
{
    char dir[] = "/tmp/codeq-test-crypt-XXXXXX", path[128];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/master", dir);
    const char *hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n";
    struct cq_kms *kms = NULL;
    struct cq_error err;
    write_file(path, hex, 0644);
    ck_assert_int_lt(cq_kms_local_open(path, &kms, &err), 0);
    ck_assert_ptr_nonnull(strstr(err.msg, "chmod 600"));
    write_file(path, "0011", 0600);
    ck_assert_int_lt(cq_kms_local_open(path, &kms, &err), 0);
    write_file(path, hex, 0600);
    ck_assert_int_eq(cq_kms_local_open(path, &kms, &err), 0);
    /* The key read is the one written: it unwraps what a key made from the bytes
     * wraps. */
    uint8_t master[CQ_CRYPT_KEY_LEN], wrapped[CQ_KMS_WRAPPED_MAX], key[CQ_CRYPT_KEY_LEN];
    for (int i = 0; i < CQ_CRYPT_KEY_LEN; i++)
        master[i] = (uint8_t)((i % 16) * 0x11);
    struct cq_kms *same;
    size_t n;
    ck_assert_int_eq(cq_kms_local_new(master, &same, &err), 0);
    ck_assert_int_eq(same->wrap(same, DATA_KEY, "codeq-dek::1", wrapped, &n, &err), 0);
    ck_assert_int_eq(kms->unwrap(kms, wrapped, n, "codeq-dek::1", key, &err), 0);
    ck_assert_mem_eq(key, DATA_KEY, CQ_CRYPT_KEY_LEN);
    cq_kms_free(same);
    cq_kms_free(kms);
    unlink(path);
    rmdir(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("crypt");
    TCase *tc = tcase_create("crypt");
    tcase_add_test(tc, round_trip);
    tcase_add_test(tc, empty_value);
    tcase_add_test(tc, tamper_any_byte);
    tcase_add_test(tc, wrong_aad);
    tcase_add_test(tc, plain_text_refused);
    tcase_add_test(tc, wrap_unwrap);
    tcase_add_test(tc, master_key_file);
    suite_add_tcase(s, tc);
    return cq_unit_run(s, false);
}
