/* clock.h — monotonic time for timings and deadlines. */
#ifndef TS_COMMON_CLOCK_H
#define TS_COMMON_CLOCK_H

#include <stdint.h>

/* Nanoseconds on CLOCK_MONOTONIC. */
int64_t ts_now_ns(void);

static inline double ts_ns_to_ms(int64_t ns) { return (double)ns / 1e6; }
static inline double ts_ns_to_s(int64_t ns) { return (double)ns / 1e9; }

void ts_sleep_ms(int ms);

#endif
