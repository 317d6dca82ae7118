/* common/utf8.c - see utf8.h. */
#include "common/utf8.h"

#include <stdlib.h>
#include <string.h>

/* Length of the valid UTF-8 sequence at p (1-4), or 0 if invalid. Rejects
 * overlongs, surrogates and code points above U+10FFFF. */
static size_t utf8_sequence(const uint8_t *p, size_t n)
{
    uint8_t c = p[0];
    if (c < 0x80)
        return 1;
    size_t len;
    uint32_t cp;
    if ((c & 0xe0) == 0xc0) {
        len = 2;
        cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
        len = 3;
        cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    static const uint32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

bool cq_utf8_valid(const uint8_t *data, size_t len)
{
    for (size_t i = 0; i < len;) {
        size_t n = utf8_sequence(data + i, len - i);
        if (n == 0)
            return false;
        i += n;
    }
    return true;
}

char *cq_utf8_sanitize(const char *data, size_t len)
{
    /* Worst case every byte becomes the 3-byte replacement character. */
    char *out = malloc(len * 3 + 1);
    if (out == NULL)
        return NULL;
    size_t o = 0;
    const uint8_t *p = (const uint8_t *)data;
    for (size_t i = 0; i < len;) {
        size_t n = utf8_sequence(p + i, len - i);
        if (n == 0 || (n == 1 && p[i] == 0)) {
            memcpy(out + o, "\xef\xbf\xbd", 3); /* U+FFFD; NUL too, it would cut the text */
            o += 3;
            i += 1;
        } else {
            memcpy(out + o, p + i, n);
            o += n;
            i += n;
        }
    }
    out[o] = '\0';
    return out;
}

size_t cq_utf8_whole_prefix(const char *data, size_t len)
{
    for (size_t back = 1; back <= 4 && back <= len; back++) {
        unsigned char c = (unsigned char)data[len - back];
        if ((c & 0xC0) == 0x80)
            continue; /* a continuation byte: look further back */
        size_t need = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : 4;
        return need > back ? len - back : len;
    }
    return len;
}
