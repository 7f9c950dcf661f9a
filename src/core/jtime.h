/* Clocks and RFC 3339 timestamps.
 *
 * Job timestamps are int64 milliseconds since the Unix epoch (0 = unset) and
 * appear on the wire as RFC 3339 UTC with milliseconds: 2026-11-26T10:00:00.004Z. */
#ifndef JP_CORE_JTIME_H
#define JP_CORE_JTIME_H

#include <stdbool.h>
#include <stdint.h>

#define JP_TIME_STR_MAX 32

/* Wall clock, ms since the epoch. */
int64_t jp_now_ms(void);
/* Monotonic clock, ms; only differences mean anything. */
int64_t jp_mono_ms(void);
/* The same clock in microseconds. */
int64_t jp_mono_us(void);

/* Formats `ms` as RFC 3339 UTC with milliseconds into `out` (JP_TIME_STR_MAX bytes). */
void jp_time_format(int64_t ms, char out[JP_TIME_STR_MAX]);

/* Parses an RFC 3339 timestamp (any offset, optional fraction) into *ret_ms.
 * Returns true on success; false leaves *ret_ms untouched. */
bool jp_time_parse(const char *s, int64_t *ret_ms);

#endif
