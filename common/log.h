/*
 * log.h — the one logging facility: levels, a component name, an optional request id, stderr.
 *
 * Line format (one line per call, written with a single write so lines from threads and
 * processes sharing a terminal do not interleave):
 *   2026-11-22T18:40:01.123Z I coordinator[1234] rid=7f3a…: admitted request (42 prompt tokens)
 * The component is set once per process (ts_log_init) and names the process role and rank,
 * e.g. "node p0.r1". Thread-safe. The level is global; --log-level sets it.
 */
#ifndef TS_COMMON_LOG_H
#define TS_COMMON_LOG_H

typedef enum {
    TS_LOG_DEBUG = 0,
    TS_LOG_INFO = 1,
    TS_LOG_WARN = 2,
    TS_LOG_ERROR = 3,
    TS_LOG_OFF = 4,
} ts_log_level;

/* Sets the component name shown on every line (copied). Call once at process start. */
void ts_log_init(const char *component);

void ts_log_set_level(ts_log_level level);
ts_log_level ts_log_get_level(void);

/* Parses "debug", "info", "warn", "error" or "off". Returns 0 or TS_E_INVALID (message set). */
int ts_log_parse_level(const char *text, ts_log_level *out);

/* request_id may be NULL or "". */
void ts_log(ts_log_level level, const char *request_id, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define TS_LOG_ENABLED(level) ((level) >= ts_log_get_level())
#define TS_DEBUG(...) do { if (TS_LOG_ENABLED(TS_LOG_DEBUG)) ts_log(TS_LOG_DEBUG, NULL, __VA_ARGS__); } while (0)
#define TS_INFO(...) ts_log(TS_LOG_INFO, NULL, __VA_ARGS__)
#define TS_WARN(...) ts_log(TS_LOG_WARN, NULL, __VA_ARGS__)
#define TS_ERROR(...) ts_log(TS_LOG_ERROR, NULL, __VA_ARGS__)

#endif
