/* common/units.h - parsing and printing of sizes and durations given by people. */
#ifndef CQ_COMMON_UNITS_H
#define CQ_COMMON_UNITS_H

#include <stdint.h>
#include <stddef.h>
#include "common/error.h"

/* "512", "64K", "256M", "1.5G", "2T" (binary multiples; a trailing "B" or "iB" is
 * accepted). Rejects negatives, garbage, overflow and values above max. */
int cq_parse_size(const char *text, uint64_t max, uint64_t *out, struct cq_error *err);

/* "60", "0.5", "2s", "1500ms", "5m", "1h" into milliseconds; at least 1 ms. */
int cq_parse_duration_ms(const char *text, uint64_t max_ms, uint64_t *out, struct cq_error *err);

/* A plain unsigned integer in [min, max]. */
int cq_parse_uint(const char *text, uint64_t min, uint64_t max, uint64_t *out,
                  struct cq_error *err);

/* "512M", "1.5G", "100K" - shortest exact-ish form for messages. */
void cq_format_size(uint64_t bytes, char *buf, size_t len);

#endif
