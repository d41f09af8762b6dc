/* error.c — thread-local error messages; see error.h for the convention. */
#include "common/error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { TS_ERROR_MESSAGE_MAX = 1024 };

static _Thread_local char error_message[TS_ERROR_MESSAGE_MAX];

int ts_error_setv(int code, const char *fmt, va_list ap) {
    vsnprintf(error_message, sizeof error_message, fmt, ap);
    return code;
}

int ts_error_set(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    ts_error_setv(code, fmt, ap);
    va_end(ap);
    return code;
}

int ts_error_wrap(int code, const char *fmt, ...) {
    char prefix[TS_ERROR_MESSAGE_MAX];
    char old[TS_ERROR_MESSAGE_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, error_message, sizeof old);
    if (old[0] != '\0')
        snprintf(error_message, sizeof error_message, "%s: %s", prefix, old);
    else
        snprintf(error_message, sizeof error_message, "%s: %s", prefix, ts_error_name(code));
    return code;
}

const char *ts_error_message(void) { return error_message; }

void ts_error_clear(void) { error_message[0] = '\0'; }

const char *ts_error_name(int code) {
    switch (code) {
    case TS_OK: return "ok";
    case TS_E_INVALID: return "invalid argument";
    case TS_E_IO: return "I/O error";
    case TS_E_FORMAT: return "malformed data";
    case TS_E_NOMEM: return "out of memory";
    case TS_E_UNSUPPORTED: return "unsupported";
    case TS_E_NOT_FOUND: return "not found";
    case TS_E_EXHAUSTED: return "resource exhausted";
    case TS_E_UNAVAILABLE: return "unavailable";
    case TS_E_TIMEOUT: return "timed out";
    case TS_E_CANCELLED: return "cancelled";
    case TS_E_INTERNAL: return "internal error";
    case TS_E_UNAUTHENTICATED: return "unauthenticated";
    default: return "unknown error";
    }
}

void ts_assert_fail(const char *expr, const char *file, int line) {
    fprintf(stderr, "tessera: internal error: assertion '%s' failed at %s:%d\n", expr, file, line);
    fflush(stderr);
    abort();
}
