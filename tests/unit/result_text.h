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
    for (size_t i = 0; i < r->n_blocks; i++) {
        size_t used = strlen(buf);
        /* Room for the text, its '|' and the NUL; a full buffer takes no more. */
        if (r->blocks[i].type != CQ_BLOCK_TEXT || r->blocks[i].text == NULL ||
            used + 2 >= sizeof(buf))
            continue;
        strncat(buf, r->blocks[i].text, sizeof(buf) - used - 2);
        strcat(buf, "|");
    }
    return buf;
}

#endif
