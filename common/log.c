/* log.c — see log.h. */
#include "common/log.h"

#include "common/error.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static _Atomic int log_level = TS_LOG_INFO;
static char log_component[64] = "tessera";

void ts_log_init(const char *component) {
    snprintf(log_component, sizeof log_component, "%s", component ? component : "tessera");
}

void ts_log_set_level(ts_log_level level) { atomic_store(&log_level, (int)level); }

ts_log_level ts_log_get_level(void) { return (ts_log_level)atomic_load(&log_level); }

int ts_log_parse_level(const char *text, ts_log_level *out) {
    static const char *names[] = {"debug", "info", "warn", "error", "off"};
    for (int i = 0; i < 5; i++) {
        if (strcasecmp(text, names[i]) == 0) {
            *out = (ts_log_level)i;
            return TS_OK;
        }
    }
    return ts_error_set(TS_E_INVALID, "unknown log level '%s' (expected debug, info, warn, error or off)",
                        text);
}

void ts_log(ts_log_level level, const char *request_id, const char *fmt, ...) {
    if (level < ts_log_get_level() || level >= TS_LOG_OFF) return;
    static const char letters[] = "DIWE";
    char line[2048];
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ %c %s[%d] ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, (int)(tv.tv_usec / 1000), letters[level], log_component,
                     (int)getpid());
    if (request_id && request_id[0] && n < (int)sizeof line)
        n += snprintf(line + n, sizeof line - (size_t)n, "rid=%s: ", request_id);
    if (n < (int)sizeof line) {
        va_list ap;
        va_start(ap, fmt);
        n += vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
        va_end(ap);
    }
    if (n >= (int)sizeof line - 1) n = (int)sizeof line - 2;
    line[n++] = '\n';
    ssize_t written = write(STDERR_FILENO, line, (size_t)n);
    (void)written;
}
