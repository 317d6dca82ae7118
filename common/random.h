/* common/random.h - identifiers that cannot be guessed. */
#ifndef CQ_COMMON_RANDOM_H
#define CQ_COMMON_RANDOM_H

#include <stddef.h>

/* n characters of [0-9a-zA-Z] from the kernel's CSPRNG, NUL-terminated (out holds
 * n + 1): session, task and request ids and output markers. */
void cq_random_id(char *out, size_t n);

#endif
