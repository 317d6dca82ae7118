/* common/clock.h - the two clocks codeq reads.
 *
 * Deadlines, timeouts and measurements use CLOCK_MONOTONIC, which no one can set back.
 * Times that people or other hosts read (a session's creation, a request's deadline on
 * the wire, Redis heartbeats) use the Unix epoch. */
#ifndef CQ_COMMON_CLOCK_H
#define CQ_COMMON_CLOCK_H

#include <stdint.h>

/* Milliseconds of CLOCK_MONOTONIC. */
uint64_t cq_now_ms(void);
/* Microseconds of CLOCK_MONOTONIC, for measurements. */
uint64_t cq_now_us(void);
/* Milliseconds since the Unix epoch (CLOCK_REALTIME). */
int64_t cq_unix_ms(void);

#endif
