/* tests/unit/test_worker_text.c - the worker's text and result helpers:
 * UTF-8 checking and sanitising (worker/result.c), bounded output capture
 * (worker/capture.c), result building (worker/result.c) and random identifiers
 * (worker/random.c). No sandbox needed. */
#define _GNU_SOURCE
#include "worker/internal.h"
#include "unit.h"
#include "common/random.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FFFD "\xef\xbf\xbd"

static bool valid_str(const char *s)
{
    return cq_utf8_valid((const uint8_t *)s, strlen(s));
}

/* s without its U+FFFD characters (whose bytes EF BF BD could match a search). */
static char *without_fffd(const char *s)
{
    char *out = strdup(s);
    ck_assert_ptr_nonnull(out);
    char *o = out;
    for (const char *p = s; *p != '\0';) {
        if (strncmp(p, FFFD, 3) == 0) {
            p += 3;
            continue;
        }
        *o++ = *p++;
    }
    *o = '\0';
    return out;
}

/* --- cq_utf8_valid / cq_utf8_sanitize ------------------------------------------------- */

static const struct {
    const char *bytes, *what;
} valid_texts[] = {
    {"", "empty"},
    {"hello, world", "ASCII"},
    {"caf\xc3\xa9", "U+00E9 (2 bytes)"},
    {"\xc2\x80", "U+0080, smallest 2-byte"},
    {"\xdf\xbf", "U+07FF, largest 2-byte"},
    {"\xe0\xa0\x80", "U+0800, smallest 3-byte"},
    {"\xe2\x82\xac", "U+20AC euro sign"},
    {"\xed\x9f\xbf", "U+D7FF, just below the surrogates"},
    {"\xee\x80\x80", "U+E000, just above the surrogates"},
    {"\xef\xbf\xbf", "U+FFFF"},
    {"\xf0\x90\x80\x80", "U+10000, smallest 4-byte"},
    {"\xf0\x9f\x98\x80", "U+1F600 emoji"},
    {"\xf4\x8f\xbf\xbf", "U+10FFFF, the largest code point"},
    {"\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xd0\xa0\xd1\x83\xd1\x81 \xce\xb1\xce\xb2", "mixed"},
};

static const struct {
    const char *bytes, *what;
} invalid_texts[] = {
    {"\x80", "lone continuation byte"},
    {"\xbf", "lone continuation byte"},
    {"\xe2\x82", "truncated 3-byte sequence"},
    {"\xf0\x9f\x98", "truncated 4-byte sequence"},
    {"\xc3", "truncated 2-byte sequence"},
    {"\xc0\x80", "overlong NUL (C0 80)"},
    {"\xc1\xbf", "overlong 2-byte"},
    {"\xe0\x80\x80", "overlong 3-byte NUL"},
    {"\xe0\x9f\xbf", "overlong 3-byte U+07FF"},
    {"\xf0\x8f\xbf\xbf", "overlong 4-byte U+FFFF"},
    {"\xed\xa0\x80", "surrogate U+D800 (ED A0 80)"},
    {"\xed\xbf\xbf", "surrogate U+DFFF"},
    {"\xed\xa0\xbd\xed\xb8\x80", "CESU-8 surrogate pair"},
    {"\xf4\x90\x80\x80", "U+110000, above U+10FFFF"},
    {"\xf5\x80\x80\x80", "lead byte F5"},
    {"\xf7\xbf\xbf\xbf", "lead byte F7"},
    {"\xf8\x88\x80\x80\x80", "5-byte form"},
    {"\xfc\x84\x80\x80\x80\x80", "6-byte form"},
    {"\xfe", "byte FE"},
    {"\xff", "byte FF"},
    {"\xe2\x28\xa1", "bad second byte"},
    {"\xe2\x82\x28", "bad third byte"},
};

START_TEST(valid_text_is_valid_and_kept)
{
    for (size_t i = 0; i < sizeof(valid_texts) / sizeof(valid_texts[0]); i++) {
        const char *t = valid_texts[i].bytes;
        ck_assert_msg(cq_utf8_valid((const uint8_t *)t, strlen(t)), "%s: reported invalid",
                      valid_texts[i].what);
        char *s = cq_utf8_sanitize(t, strlen(t));
        ck_assert_ptr_nonnull(s);
        ck_assert_msg(strcmp(s, t) == 0, "%s: sanitising changed it", valid_texts[i].what);
        free(s);
    }
}
END_TEST

START_TEST(invalid_sequences_are_invalid_and_replaced)
{
    for (size_t i = 0; i < sizeof(invalid_texts) / sizeof(invalid_texts[0]); i++) {
        const char *bad = invalid_texts[i].bytes;
        const char *what = invalid_texts[i].what;
        ck_assert_msg(!cq_utf8_valid((const uint8_t *)bad, strlen(bad)), "%s: reported valid",
                      what);
        /* Embedded between valid text: the surroundings survive, the result is valid. */
        char in[64];
        int n = snprintf(in, sizeof(in), "a\xc3\xa9%sz", bad);
        ck_assert_msg(!cq_utf8_valid((const uint8_t *)in, (size_t)n), "%s: embedded valid", what);
        char *s = cq_utf8_sanitize(in, (size_t)n);
        ck_assert_ptr_nonnull(s);
        ck_assert_msg(valid_str(s), "%s: sanitised text is not valid UTF-8", what);
        ck_assert_msg(strncmp(s, "a\xc3\xa9", 3) == 0, "%s: the valid prefix was lost", what);
        ck_assert_msg(s[strlen(s) - 1] == 'z', "%s: the valid suffix was lost (%s)", what, s);
        ck_assert_msg(strstr(s, FFFD) != NULL, "%s: no U+FFFD in '%s'", what, s);
        char *rest = without_fffd(s);
        ck_assert_msg(strcmp(rest, "a\xc3\xa9z") == 0 || strstr(rest, bad) == NULL,
                      "%s: the invalid bytes are still there", what);
        free(rest);
        /* Each invalid byte becomes at most one U+FFFD. */
        ck_assert_msg(strlen(s) <= 4 + 3 * strlen(bad), "%s: sanitised to %zu bytes", what,
                      strlen(s));
        free(s);
    }
}
END_TEST

START_TEST(truncated_sequence_does_not_swallow_next_character)
{
    /* "E2 82" then 'A': the 'A' is not eaten as a continuation byte. */
    char *s = cq_utf8_sanitize("\xe2\x82"
                               "A",
                               3);
    ck_assert_ptr_nonnull(s);
    ck_assert_msg(valid_str(s), "not valid: %s", s);
    ck_assert_msg(s[strlen(s) - 1] == 'A', "'A' was lost: '%s'", s);
    free(s);
    /* A sequence cut by the given length, though the bytes after it would complete it:
     * only len bytes are looked at. */
    s = cq_utf8_sanitize("\xe2\x82\xac", 2);
    ck_assert_str_eq(s, FFFD FFFD);
    free(s);
    ck_assert(!cq_utf8_valid((const uint8_t *)"\xe2\x82\xac", 2));
    ck_assert(cq_utf8_valid((const uint8_t *)"\xe2\x82\xac", 3));
}
END_TEST

START_TEST(nul_bytes_become_replacement_characters)
{
    char *s = cq_utf8_sanitize("a\0b\0", 4);
    ck_assert_ptr_nonnull(s);
    ck_assert_str_eq(s, "a" FFFD "b" FFFD);
    free(s);
    /* The overlong NUL must not turn into a real NUL either. */
    s = cq_utf8_sanitize("x\xc0\x80y", 4);
    ck_assert_msg(strlen(s) > 2 && s[strlen(s) - 1] == 'y', "C0 80 cut the text: '%s'", s);
    free(s);
    s = cq_utf8_sanitize("", 0);
    ck_assert_str_eq(s, "");
    free(s);
}
END_TEST

START_TEST(sanitize_random_bytes_always_valid)
{
    srandom(8);
    char buf[300];
    for (int round = 0; round < 20000; round++) {
        size_t len = (size_t)(random() % (long)sizeof(buf));
        for (size_t i = 0; i < len; i++) {
            /* Biased towards bytes that form (or almost form) multi-byte sequences. */
            long r = random();
            buf[i] = (char)(r % 3 == 0   ? 0x80 | (r >> 8 & 0x3f)
                            : r % 3 == 1 ? 0xc0 | (r >> 8 & 0x3f)
                                         : r >> 8);
        }
        char *s = cq_utf8_sanitize(buf, len);
        ck_assert_ptr_nonnull(s);
        ck_assert_msg(valid_str(s), "round %d: sanitised output is invalid", round);
        bool input_clean =
            memchr(buf, '\0', len) == NULL && cq_utf8_valid((const uint8_t *)buf, len);
        if (input_clean)
            ck_assert_msg(strlen(s) == len && memcmp(s, buf, len) == 0,
                          "round %d: valid input was changed", round);
        else
            ck_assert_msg(strstr(s, FFFD) != NULL, "round %d: invalid input without U+FFFD", round);
        free(s);
    }
}
END_TEST

/* Output read in pieces: every split of valid text keeps whole characters in the first
 * piece and carries at most 3 bytes, which with the rest make the text again. */
START_TEST(whole_prefix_never_splits_a_character)
{
    const char *t = "a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80z";
    size_t len = strlen(t);
    for (size_t cut = 0; cut <= len; cut++) {
        size_t n = cq_utf8_whole_prefix(t, cut);
        ck_assert_msg(n <= cut && cut - n <= 3, "cut %zu: %zu", cut, n);
        ck_assert_msg(cq_utf8_valid((const uint8_t *)t, n), "cut %zu: prefix %zu invalid", cut, n);
        ck_assert_msg(cq_utf8_valid((const uint8_t *)t + n, len - n), "cut %zu: rest invalid", cut);
    }
    ck_assert_uint_eq(cq_utf8_whole_prefix(t, 2), 1); /* half of U+00E9 */
    ck_assert_uint_eq(cq_utf8_whole_prefix(t, 5), 3); /* two thirds of U+20AC */
    ck_assert_uint_eq(cq_utf8_whole_prefix(t, 9), 6); /* three quarters of U+1F600 */
    ck_assert_uint_eq(cq_utf8_whole_prefix(t, 10), 10);
    /* Bytes that start no character are not held back for ever. */
    ck_assert_uint_eq(cq_utf8_whole_prefix("\x80\x80\x80\x80\x80", 5), 5);
}
END_TEST

/* --- cq_capture --------------------------------------------------------------------- */

START_TEST(capture_below_limit_keeps_everything)
{
    struct cq_capture c;
    cq_capture_init(&c, 100);
    cq_capture_append(&c, "hello ", 6);
    cq_capture_append(&c, "world", 5);
    cq_capture_append(&c, "", 0);
    ck_assert_uint_eq(c.len, 11);
    ck_assert_uint_eq(c.total, 11);
    char *t = cq_capture_text(&c);
    ck_assert_str_eq(t, "hello world");
    free(t);
    cq_capture_free(&c);
    ck_assert_ptr_null(c.buf);
    ck_assert_uint_eq(c.len, 0);
}
END_TEST

START_TEST(capture_exactly_at_limit_has_no_note)
{
    struct cq_capture c;
    cq_capture_init(&c, 5);
    cq_capture_append(&c, "hello", 5);
    char *t = cq_capture_text(&c);
    ck_assert_str_eq(t, "hello");
    free(t);
    cq_capture_free(&c);
}
END_TEST

START_TEST(capture_keeps_head_and_tail_and_counts_the_middle)
{
    struct cq_capture c;
    cq_capture_init(&c, 8); /* the first 4 bytes and the last 4 */
    cq_capture_append(&c, "hello ", 6);
    cq_capture_append(&c, "world!!", 7);
    ck_assert_uint_eq(c.len, 4);
    ck_assert_uint_eq(c.tail_len, 4);
    ck_assert_uint_eq(c.total, 13);
    ck_assert_mem_eq(c.buf, "hell", 4);
    ck_assert(cq_capture_cut(&c));
    for (int i = 0; i < 1000; i++)
        cq_capture_append(&c, "0123456789\n", 11);
    cq_capture_append(&c, "THE END", 7);
    ck_assert_uint_eq(c.len, 4);
    ck_assert_uint_eq(c.total, 13 + 11000 + 7);
    /* Memory stays within the limit whatever came. */
    ck_assert_uint_le(c.tail_alloc, 4);
    char *t = cq_capture_text(&c);
    /* 11020 bytes seen, 8 shown: 11012 cut, holding 1000 line breaks. */
    ck_assert_str_eq(t, "hell\n[codeq: output too long: 11012 bytes (1000 lines) cut here; the "
                        "first 4 and the last 4 bytes are shown]\n END");
    free(t);
    cq_capture_free(&c);
}
END_TEST

START_TEST(capture_limit_zero_keeps_nothing)
{
    struct cq_capture c;
    cq_capture_init(&c, 0);
    char *t = cq_capture_text(&c);
    ck_assert_str_eq(t, ""); /* nothing seen, nothing dropped: no note */
    free(t);
    cq_capture_append(&c, "abc", 3);
    ck_assert_uint_eq(c.len, 0);
    ck_assert_uint_eq(c.total, 3);
    t = cq_capture_text(&c);
    ck_assert_str_eq(t, "[codeq: output too long: 3 bytes (0 lines) cut here; the first 0 and "
                        "the last 0 bytes are shown]\n");
    free(t);
    cq_capture_free(&c);
}
END_TEST

START_TEST(capture_text_is_sanitised)
{
    struct cq_capture c;
    cq_capture_init(&c, 64);
    cq_capture_append(&c, "ok\0\xff\xc0\x80!", 7);
    char *t = cq_capture_text(&c);
    ck_assert_msg(valid_str(t), "capture text is not valid UTF-8");
    ck_assert_msg(strncmp(t, "ok" FFFD, 5) == 0, "got '%s'", t);
    ck_assert_msg(t[strlen(t) - 1] == '!', "the end was lost: '%s'", t);
    free(t);
    cq_capture_free(&c);

    /* A character across the head and the ring, nothing cut: kept whole. */
    cq_capture_init(&c, 8);
    cq_capture_append(&c, "abc\xe2\x82\xac", 6);
    t = cq_capture_text(&c);
    ck_assert_str_eq(t, "abc\xe2\x82\xac");
    free(t);
    cq_capture_free(&c);
}
END_TEST

/* The cut points fall inside characters: both sides are trimmed to whole characters
 * (no U+FFFD for a character codeq split), and the trimmed bytes count as cut. */
START_TEST(capture_cuts_at_character_boundaries)
{
    struct cq_capture c;
    cq_capture_init(&c, 8);
    cq_capture_append(&c, "abc\xe2\x82\xac", 6); /* "abc€": the head ends inside € */
    cq_capture_append(&c, "xxxxxxxxxx", 10);
    cq_capture_append(&c, "\xe2\x82\xacyz", 5); /* "€yz": the ring starts inside € */
    char *t = cq_capture_text(&c);
    ck_assert_msg(valid_str(t), "cut text is not valid UTF-8: '%s'", t);
    ck_assert_ptr_null(strstr(t, FFFD));
    /* 21 bytes: "abc" and "yz" shown, 16 cut. */
    ck_assert_str_eq(t, "abc\n[codeq: output too long: 16 bytes (0 lines) cut here; the first 3 "
                        "and the last 2 bytes are shown]\nyz");
    free(t);
    cq_capture_free(&c);

    /* Four-byte characters, and a lead byte right at the head's end. */
    cq_capture_init(&c, 10);
    cq_capture_append(&c, "abcd\xf0\x9f\x98\x80", 8);         /* the head: "abcd" + 1 */
    cq_capture_append(&c, "..........\xf0\x9f\x98\x80!", 15); /* the ring: 3 + 2 */
    t = cq_capture_text(&c);
    ck_assert_msg(valid_str(t), "cut text is not valid UTF-8: '%s'", t);
    ck_assert_ptr_null(strstr(t, FFFD));
    ck_assert_msg(strncmp(t, "abcd\n[codeq:", 12) == 0, "got '%s'", t);
    ck_assert_msg(strcmp(t + strlen(t) - 2, "]\n") != 0 && t[strlen(t) - 1] == '!', "got '%s'", t);
    free(t);
    cq_capture_free(&c);
}
END_TEST

/* Random chunks against a model of what must be kept: the first half of the limit, the
 * last half, the count of what fell between; and the ring's memory never past its half. */
START_TEST(capture_head_and_tail_match_a_model)
{
    static char data[200000];
    unsigned seed = 42;
    for (int round = 0; round < 200; round++) {
        size_t limit = (size_t)(rand_r(&seed) % 300);
        size_t total = (size_t)(rand_r(&seed) % (round % 10 == 0 ? sizeof(data) : 2000));
        for (size_t i = 0; i < total; i++)
            data[i] = "ab\n"[rand_r(&seed) % 3];
        struct cq_capture c;
        cq_capture_init(&c, limit);
        for (size_t done = 0; done < total;) {
            size_t n = (size_t)(rand_r(&seed) % (limit * 2 + 3));
            if (n > total - done)
                n = total - done;
            cq_capture_append(&c, data + done, n);
            done += n;
            ck_assert_uint_le(c.len, limit - limit / 2);
            ck_assert_uint_le(c.tail_alloc, limit / 2);
        }
        size_t head = limit - limit / 2, tail = limit / 2;
        char *t = cq_capture_text(&c);
        char *want = NULL;
        if (total <= limit) {
            ck_assert_int_ge(asprintf(&want, "%.*s", (int)total, data), 0);
        } else {
            size_t lines = 0;
            for (size_t i = head; i < total - tail; i++)
                lines += data[i] == '\n';
            ck_assert_int_ge(
                asprintf(&want,
                         "%.*s%s[codeq: output too long: %zu bytes (%zu lines) cut here; the "
                         "first %zu and the last %zu bytes are shown]\n%.*s",
                         (int)head, data, head > 0 && data[head - 1] != '\n' ? "\n" : "",
                         total - limit, lines, head, tail, (int)tail, data + total - tail),
                0);
        }
        ck_assert_msg(strcmp(t, want) == 0, "round %d (limit %zu, %zu bytes): got '%.200s'", round,
                      limit, total, t);
        free(want);
        free(t);
        cq_capture_free(&c);
    }
}
END_TEST

/* A live stream forwarded the first bytes: what follows at the end is the kept tail
 * past them, with a note when bytes were cut between. */
START_TEST(capture_rest_follows_a_live_stream)
{
    struct cq_capture c;
    cq_capture_init(&c, 8);
    cq_capture_append(&c, "0123456", 7);
    ck_assert_ptr_null(cq_capture_rest(&c, 7)); /* all of it went out live */
    cq_capture_append(&c, "789", 3);            /* 10 bytes; 8 went out live */
    char *t = cq_capture_rest(&c, 8);
    ck_assert_str_eq(t, "89");
    free(t);
    cq_capture_append(&c, "ABCDEFGHIJ", 10); /* 20 bytes: the ring holds "GHIJ" */
    t = cq_capture_rest(&c, 8);
    ck_assert_str_eq(t, "\n[codeq: output too long: 8 bytes cut here; the last 4 follow]\nGHIJ");
    free(t);
    cq_capture_free(&c);
}
END_TEST

/* --- results ------------------------------------------------------------------------ */

START_TEST(result_blocks_hold_copies)
{
    struct cq_result r;
    cq_result_init(&r);
    ck_assert_uint_eq(r.n_blocks, 0);
    ck_assert(!r.is_error);
    ck_assert_int_eq(r.error_code, CQ_RESULT_OK);

    char text[] = "some text";
    ck_assert_int_eq(cq_result_add_text(&r, text), 0);
    text[0] = 'X'; /* the block has its own copy */

    const uint8_t png[] = {0x89, 'P', 'N', 'G', 0, 1, 2};
    ck_assert_int_eq(cq_result_add_image(&r, png, sizeof(png), "image/png"), 0);
    const char *body = "line 1\nline 2\n";
    ck_assert_int_eq(cq_result_add_resource(&r, "dir/notes.txt", "text/plain",
                                            (const uint8_t *)body, strlen(body), false),
                     0);
    const uint8_t blob[] = {0, 0xff, 0, 0x80, 'x'};
    ck_assert_int_eq(cq_result_add_resource(&r, "data.bin", "application/octet-stream", blob,
                                            sizeof(blob), true),
                     0);
    ck_assert_int_eq(cq_result_add_link(&r, "dir/plot.png", "plot.png", "image/png", 1234, "file"),
                     0);
    ck_assert_uint_eq(r.n_blocks, 5);

    struct cq_block *b = &r.blocks[0];
    ck_assert_int_eq(b->type, CQ_BLOCK_TEXT);
    ck_assert_str_eq(b->text, "some text");

    b = &r.blocks[1];
    ck_assert_int_eq(b->type, CQ_BLOCK_IMAGE);
    ck_assert_uint_eq(b->data_len, sizeof(png));
    ck_assert_mem_eq(b->data, png, sizeof(png));
    ck_assert_ptr_ne(b->data, png);
    ck_assert_str_eq(b->mime_type, "image/png");

    b = &r.blocks[2];
    ck_assert_int_eq(b->type, CQ_BLOCK_RESOURCE);
    ck_assert(!b->is_blob);
    ck_assert_str_eq(b->uri, "file://dir/notes.txt");
    ck_assert_str_eq(b->mime_type, "text/plain");
    ck_assert_str_eq(b->text, body);

    b = &r.blocks[3];
    ck_assert_int_eq(b->type, CQ_BLOCK_RESOURCE);
    ck_assert(b->is_blob);
    ck_assert_str_eq(b->uri, "file://data.bin");
    ck_assert_uint_eq(b->data_len, sizeof(blob));
    ck_assert_mem_eq(b->data, blob, sizeof(blob));
    ck_assert_ptr_null(b->text);

    b = &r.blocks[4];
    ck_assert_int_eq(b->type, CQ_BLOCK_RESOURCE_LINK);
    ck_assert_str_eq(b->uri, "file://dir/plot.png");
    ck_assert_str_eq(b->name, "plot.png");
    ck_assert_str_eq(b->mime_type, "image/png");
    ck_assert_uint_eq(b->size, 1234);
    ck_assert_str_eq(b->description, "file");

    cq_result_free(&r);
    ck_assert_uint_eq(r.n_blocks, 0);
    ck_assert_ptr_null(r.blocks);
}
END_TEST

START_TEST(result_resource_text_takes_len_bytes)
{
    struct cq_result r;
    cq_result_init(&r);
    ck_assert_int_eq(
        cq_result_add_resource(&r, "a", "text/plain", (const uint8_t *)"abcdef", 3, false), 0);
    ck_assert_str_eq(r.blocks[0].text, "abc");
    /* Empty image and empty blob: valid blocks of length 0. */
    ck_assert_int_eq(cq_result_add_image(&r, (const uint8_t *)"", 0, "image/png"), 0);
    ck_assert_uint_eq(r.blocks[1].data_len, 0);
    ck_assert_ptr_nonnull(r.blocks[1].data);
    ck_assert_int_eq(
        cq_result_add_resource(&r, "e", "application/octet-stream", (const uint8_t *)"", 0, true),
        0);
    ck_assert_uint_eq(r.blocks[2].data_len, 0);
    cq_result_free(&r);
}
END_TEST

START_TEST(result_grows_and_keeps_order)
{
    struct cq_result r;
    cq_result_init(&r);
    for (int i = 0; i < 1000; i++) {
        char t[16];
        snprintf(t, sizeof(t), "block %d", i);
        ck_assert_int_eq(cq_result_add_text(&r, t), 0);
    }
    ck_assert_uint_eq(r.n_blocks, 1000);
    ck_assert_uint_ge(r.cap_blocks, 1000);
    for (int i = 0; i < 1000; i++) {
        char t[16];
        snprintf(t, sizeof(t), "block %d", i);
        ck_assert_str_eq(r.blocks[i].text, t);
    }
    cq_result_free(&r);
}
END_TEST

START_TEST(result_fail_sets_code_message_and_block)
{
    struct cq_result r;
    cq_result_init(&r);
    cq_result_add_text(&r, "before");
    cq_result_fail(&r, CQ_RESULT_NOT_FOUND, "session '%s' not found (%d)", "abc", 42);
    ck_assert(r.is_error);
    ck_assert_int_eq(r.error_code, CQ_RESULT_NOT_FOUND);
    ck_assert_str_eq(r.error_message, "session 'abc' not found (42)");
    ck_assert_uint_eq(r.n_blocks, 2);
    ck_assert_int_eq(r.blocks[1].type, CQ_BLOCK_TEXT);
    ck_assert_str_eq(r.blocks[1].text, "session 'abc' not found (42)");

    /* A second failure replaces code and message (the first must not leak). */
    cq_result_fail(&r, CQ_RESULT_INTERNAL, "second");
    ck_assert_int_eq(r.error_code, CQ_RESULT_INTERNAL);
    ck_assert_str_eq(r.error_message, "second");
    ck_assert_uint_eq(r.n_blocks, 3);
    cq_result_free(&r);
    ck_assert(!r.is_error);
    ck_assert_int_eq(r.error_code, CQ_RESULT_OK);
    ck_assert_ptr_null(r.error_message);
}
END_TEST

START_TEST(result_free_releases_everything_and_is_reusable)
{
    struct cq_result r;
    cq_result_init(&r);
    r.has_structured = true;
    r.stdout_text = strdup("out");
    r.stderr_text = strdup("err");
    r.value_text = strdup("42");
    r.task_id = strdup("task");
    r.task_status = CQ_TASK_WORKING;
    r.exit_code = 3;
    cq_result_add_text(&r, "t");
    cq_result_add_image(&r, (const uint8_t *)"x", 1, "image/png");
    cq_result_add_resource(&r, "p", "text/plain", (const uint8_t *)"y", 1, false);
    cq_result_add_link(&r, "p", "p", "text/plain", 1, "file");
    cq_result_fail(&r, CQ_RESULT_TIMED_OUT, "late");
    cq_result_free(&r); /* ASan/LSan: nothing may leak */
    ck_assert(!r.has_structured);
    ck_assert_ptr_null(r.stdout_text);
    ck_assert_ptr_null(r.task_id);
    ck_assert_int_eq(r.task_status, CQ_TASK_NONE);
    ck_assert_int_eq(r.exit_code, 0);
    cq_result_free(&r); /* twice is harmless */
    ck_assert_int_eq(cq_result_add_text(&r, "again"), 0);
    ck_assert_uint_eq(r.n_blocks, 1);
    cq_result_free(&r);
}
END_TEST

START_TEST(status_and_error_names)
{
    ck_assert_str_eq(cq_task_status_name(CQ_TASK_SUBMITTED), "submitted");
    ck_assert_str_eq(cq_task_status_name(CQ_TASK_WORKING), "working");
    ck_assert_str_eq(cq_task_status_name(CQ_TASK_COMPLETED), "completed");
    ck_assert_str_eq(cq_task_status_name(CQ_TASK_CANCELED), "canceled");
    ck_assert_str_eq(cq_task_status_name(CQ_TASK_FAILED), "failed");
    ck_assert_str_eq(cq_task_status_name(CQ_TASK_NONE), "");
    ck_assert_str_eq(cq_task_status_name((enum cq_task_status)99), "");

    ck_assert_str_eq(cq_result_error_name(CQ_RESULT_OK), "NONE");
    ck_assert_str_eq(cq_result_error_name(CQ_RESULT_NOT_FOUND), "NOT_FOUND");
    ck_assert_str_eq(cq_result_error_name(CQ_RESULT_INVALID_ARGUMENT), "INVALID_ARGUMENT");
    ck_assert_str_eq(cq_result_error_name(CQ_RESULT_LIMIT_EXCEEDED), "LIMIT_EXCEEDED");
    ck_assert_str_eq(cq_result_error_name(CQ_RESULT_TIMED_OUT), "TIMED_OUT");
    ck_assert_str_eq(cq_result_error_name(CQ_RESULT_INTERNAL), "INTERNAL");
    ck_assert_str_eq(cq_result_error_name((enum cq_result_error)77), "INTERNAL");
}
END_TEST

/* --- cq_random_id ------------------------------------------------------------------- */

static const char id_alphabet[] = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

START_TEST(random_id_length_and_alphabet)
{
    static const size_t lengths[] = {0, 1, 8, 32, 40, 127, 128, 129, 300, 1000};
    for (size_t i = 0; i < sizeof(lengths) / sizeof(lengths[0]); i++) {
        size_t n = lengths[i];
        char *out = malloc(n + 2);
        ck_assert_ptr_nonnull(out);
        out[n + 1] = '#'; /* nothing is written past the terminator */
        cq_random_id(out, n);
        ck_assert_msg(strlen(out) == n, "asked %zu characters, got %zu", n, strlen(out));
        ck_assert_int_eq(out[n + 1], '#');
        ck_assert_msg(strspn(out, id_alphabet) == n,
                      "id of %zu has a character outside [0-9a-zA-Z]", n);
        free(out);
    }
}
END_TEST

START_TEST(random_ids_differ_and_use_the_whole_alphabet)
{
    char ids[200][33];
    for (int i = 0; i < 200; i++) {
        cq_random_id(ids[i], 32);
        for (int j = 0; j < i; j++)
            ck_assert_msg(strcmp(ids[i], ids[j]) != 0, "ids %d and %d are both %s", i, j, ids[i]);
    }
    /* 20000 symbols: each of the 62 appears (a missing one has probability ~1e-140),
     * and none dominates (expected 323 each). */
    static char big[20001];
    cq_random_id(big, 20000);
    int counts[256] = {0};
    for (int i = 0; i < 20000; i++)
        counts[(unsigned char)big[i]]++;
    for (const char *c = id_alphabet; *c != '\0'; c++)
        ck_assert_msg(counts[(unsigned char)*c] > 200 && counts[(unsigned char)*c] < 460,
                      "'%c' appeared %d times in 20000", *c, counts[(unsigned char)*c]);
}
END_TEST

static Suite *worker_text_suite(void)
{
    Suite *s = suite_create("worker_text");
    TCase *tc = tcase_create("utf8");
    tcase_set_timeout(tc, 20);
    tcase_add_test(tc, valid_text_is_valid_and_kept);
    tcase_add_test(tc, invalid_sequences_are_invalid_and_replaced);
    tcase_add_test(tc, truncated_sequence_does_not_swallow_next_character);
    tcase_add_test(tc, nul_bytes_become_replacement_characters);
    tcase_add_test(tc, sanitize_random_bytes_always_valid);
    tcase_add_test(tc, whole_prefix_never_splits_a_character);
    suite_add_tcase(s, tc);

    tc = tcase_create("capture");
    tcase_set_timeout(tc, 10);
    tcase_add_test(tc, capture_below_limit_keeps_everything);
    tcase_add_test(tc, capture_exactly_at_limit_has_no_note);
    tcase_add_test(tc, capture_keeps_head_and_tail_and_counts_the_middle);
    tcase_add_test(tc, capture_limit_zero_keeps_nothing);
    tcase_add_test(tc, capture_text_is_sanitised);
    tcase_add_test(tc, capture_cuts_at_character_boundaries);
    tcase_add_test(tc, capture_head_and_tail_match_a_model);
    tcase_add_test(tc, capture_rest_follows_a_live_stream);
    suite_add_tcase(s, tc);

    tc = tcase_create("result");
    tcase_set_timeout(tc, 10);
    tcase_add_test(tc, result_blocks_hold_copies);
    tcase_add_test(tc, result_resource_text_takes_len_bytes);
    tcase_add_test(tc, result_grows_and_keeps_order);
    tcase_add_test(tc, result_fail_sets_code_message_and_block);
    tcase_add_test(tc, result_free_releases_everything_and_is_reusable);
    tcase_add_test(tc, status_and_error_names);
    suite_add_tcase(s, tc);

    tc = tcase_create("random");
    tcase_set_timeout(tc, 10);
    tcase_add_test(tc, random_id_length_and_alphabet);
    tcase_add_test(tc, random_ids_differ_and_use_the_whole_alphabet);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return cq_unit_run(worker_text_suite(), false);
}
