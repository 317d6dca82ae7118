/* tests/unit/result_text.h - a result's text blocks joined, for the worker core's tests'
 * failure messages and substring checks. Header-only, as unit.h is: each unit test is one
 * source file. */
#ifndef CQ_TESTS_RESULT_TEXT_H
#define CQ_TESTS_RESULT_TEXT_H

#include <string.h>
#include "api/api.h"

/* The text blocks of r joined by '|' (cut at 16 KiB), in a buffer the next call reuses. */
static inline const char *cq_unit_result_text(const struct cq_result *r)
{
    static char buf[16384];
    buf[0] = '\0';
    for (size_t i = 0; i < r->n_blocks; i++)
        if (r->blocks[i].type == CQ_BLOCK_TEXT && r->blocks[i].text != NULL) {
            strncat(buf, r->blocks[i].text, sizeof(buf) - strlen(buf) - 2);
            strcat(buf, "|");
        }
    return buf;
}

#endif
