/* common/hex.h - hexadecimal digits, one way and the other. */
#ifndef CQ_COMMON_HEX_H
#define CQ_COMMON_HEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A digit's value, or -1 when c is not one. lower_only refuses A-F: W3C trace ids have
 * one spelling, lower case. */
int cq_hex_digit(char c, bool lower_only);
/* 2n digits of s into n bytes of out; false at the first character that is not a digit
 * (out then holds garbage). */
bool cq_hex_decode(const char *s, size_t n, uint8_t *out, bool lower_only);
/* Lower-case digits of n bytes: out holds 2n + 1, NUL-terminated. */
void cq_hex_encode(const uint8_t *bytes, size_t n, char *out);

#endif
