/* common/base64.h - standard base64 (RFC 4648, with padding), for blobs in JSON. */
#ifndef CQ_COMMON_BASE64_H
#define CQ_COMMON_BASE64_H

#include <stddef.h>
#include <stdint.h>

/* NUL-terminated encoding of len bytes; caller frees; NULL when out of memory. */
char *cq_base64_encode(const uint8_t *data, size_t len);

/* Decodes text (padding optional, no whitespace); caller frees *out. Returns 0, or -1
 * when text is not base64 or memory runs out. */
int cq_base64_decode(const char *text, size_t len, uint8_t **out, size_t *out_len);

#endif
