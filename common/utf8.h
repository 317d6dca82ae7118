/* common/utf8.h - UTF-8 checks for text that crosses into JSON (which must be valid
 * UTF-8) from places that guarantee nothing: program output, file names. */
#ifndef CQ_COMMON_UTF8_H
#define CQ_COMMON_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Valid UTF-8: no overlongs, no surrogates, nothing above U+10FFFF. */
bool cq_utf8_valid(const uint8_t *data, size_t len);

/* A copy of bytes as valid UTF-8 (invalid sequences and NULs become U+FFFD),
 * NUL-terminated; caller frees; NULL when out of memory. */
char *cq_utf8_sanitize(const char *data, size_t len);

/* The length of data's longest start that does not end inside a character: output
 * read in pieces may split a character, whose first bytes then wait for the rest
 * (so that each piece sanitizes without turning them into U+FFFD). At most 3 bytes
 * are left over. */
size_t cq_utf8_whole_prefix(const char *data, size_t len);

#endif
