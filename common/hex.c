/* common/hex.c - hexadecimal digits (common/hex.h). */
#include "common/hex.h"

int cq_hex_digit(char c, bool lower_only)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (!lower_only && c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

bool cq_hex_decode(const char *s, size_t n, uint8_t *out, bool lower_only)
{
    for (size_t i = 0; i < n; i++) {
        int hi = cq_hex_digit(s[2 * i], lower_only);
        int lo = hi < 0 ? -1 : cq_hex_digit(s[2 * i + 1], lower_only);
        if (lo < 0)
            return false;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return true;
}

void cq_hex_encode(const uint8_t *bytes, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[bytes[i] >> 4];
        out[2 * i + 1] = digits[bytes[i] & 0xf];
    }
    out[2 * n] = '\0';
}
