/* common/units.c - see units.h. Hand-written because strtoull silently accepts
 * "-1" and leading spaces; limits typed by users must be rejected loudly. */
#define _GNU_SOURCE
#include "common/units.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* Parses "<digits>[.<digits>]" and returns the rest; NULL when there is no number. */
static const char *parse_decimal(const char *s, long double *value)
{
    if (!isdigit((unsigned char)*s))
        return NULL;
    char *end = NULL;
    errno = 0;
    long double v = strtold(s, &end);
    if (errno != 0 || end == s || !isfinite((double)v) || v < 0)
        return NULL;
    /* strtold accepts exponents and hex; people do not type those for limits. */
    for (const char *p = s; p < end; p++)
        if (!isdigit((unsigned char)*p) && *p != '.')
            return NULL;
    *value = v;
    return end;
}

int cq_parse_size(const char *text, uint64_t max, uint64_t *out, struct cq_error *err)
{
    long double v;
    const char *rest = text != NULL ? parse_decimal(text, &v) : NULL;
    if (rest == NULL)
        return cq_error_set(err, CQ_EINVALID,
                            "invalid size '%s' (expected a number with an optional K, M, G or T)",
                            text != NULL ? text : "");
    long double mult = 1;
    switch (toupper((unsigned char)*rest)) {
    case '\0':
        break;
    case 'B':
        if (rest[1] != '\0')
            goto bad_suffix;
        break;
    case 'K':
        mult = 1024.0L;
        break;
    case 'M':
        mult = 1024.0L * 1024;
        break;
    case 'G':
        mult = 1024.0L * 1024 * 1024;
        break;
    case 'T':
        mult = 1024.0L * 1024 * 1024 * 1024;
        break;
    default:
        goto bad_suffix;
    }
    if (mult > 1) {
        const char *tail = rest + 1;
        if (strcasecmp(tail, "") != 0 && strcasecmp(tail, "B") != 0 && strcasecmp(tail, "iB") != 0)
            goto bad_suffix;
    }
    long double bytes = v * mult;
    if (bytes > (long double)max)
        return cq_error_set(err, CQ_EINVALID, "size '%s' is above the maximum of %llu bytes", text,
                            (unsigned long long)max);
    *out = (uint64_t)bytes;
    return 0;
bad_suffix:
    return cq_error_set(err, CQ_EINVALID, "invalid size suffix in '%s' (use K, M, G or T)", text);
}

int cq_parse_duration_ms(const char *text, uint64_t max_ms, uint64_t *out, struct cq_error *err)
{
    long double v;
    const char *rest = text != NULL ? parse_decimal(text, &v) : NULL;
    if (rest == NULL)
        return cq_error_set(err, CQ_EINVALID,
                            "invalid duration '%s' (expected seconds, e.g. 30 or 0.5 or 1500ms)",
                            text != NULL ? text : "");
    long double ms;
    if (*rest == '\0' || strcmp(rest, "s") == 0)
        ms = v * 1000;
    else if (strcmp(rest, "ms") == 0)
        ms = v;
    else if (strcmp(rest, "m") == 0)
        ms = v * 60000;
    else if (strcmp(rest, "h") == 0)
        ms = v * 3600000;
    else
        return cq_error_set(err, CQ_EINVALID, "invalid duration unit in '%s' (use ms, s, m or h)",
                            text);
    if (ms < 1)
        return cq_error_set(err, CQ_EINVALID, "duration '%s' is below 1 ms", text);
    if (ms > (long double)max_ms)
        return cq_error_set(err, CQ_EINVALID, "duration '%s' is above the maximum of %llu s", text,
                            (unsigned long long)(max_ms / 1000));
    *out = (uint64_t)ms;
    return 0;
}

int cq_parse_uint(const char *text, uint64_t min, uint64_t max, uint64_t *out, struct cq_error *err)
{
    if (text == NULL || !isdigit((unsigned char)text[0]))
        return cq_error_set(err, CQ_EINVALID, "invalid number '%s'", text != NULL ? text : "");
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno != 0 || *end != '\0')
        return cq_error_set(err, CQ_EINVALID, "invalid number '%s'", text);
    if (v < min || v > max)
        return cq_error_set(err, CQ_EINVALID, "%s is out of range [%llu, %llu]", text,
                            (unsigned long long)min, (unsigned long long)max);
    *out = v;
    return 0;
}

void cq_format_size(uint64_t bytes, char *buf, size_t len)
{
    static const char units[] = {'B', 'K', 'M', 'G', 'T'};
    size_t u = 0;
    while (u + 1 < sizeof(units) && bytes >= (1ULL << (10 * (u + 1))))
        u++;
    /* One decimal of 1023.96K would print as "1024.0K": that is 1.0M. */
    if (u + 1 < sizeof(units) && bytes % (1ULL << (10 * u)) != 0 &&
        (double)bytes / (double)(1ULL << (10 * u)) >= 1023.95)
        u++;
    uint64_t unit = 1ULL << (10 * u);
    if (bytes % unit == 0)
        snprintf(buf, len, "%llu%c", (unsigned long long)(bytes / unit), units[u]);
    else
        snprintf(buf, len, "%.1f%c", (double)bytes / (double)unit, units[u]);
}
