/*
 * error.h — the one error convention of Tessera.
 *
 * Functions that can fail return int: 0 (TS_OK) on success or a negative TS_E_* code. Before
 * returning a code they record a message in words a user can act on, e.g.
 *   "model.gguf: tensor blk.3.attn_q.weight: offset 123456 beyond file size 1000".
 * The message is thread-local: the caller on the same thread reads it with ts_error_message()
 * right after the failing call. Callers that add context use ts_error_wrap(), which prefixes the
 * current message ("loading model: " + "model.gguf: ...") and returns the code unchanged, so an
 * error climbs the stack as one readable line.
 *
 * TS_ASSERT is for broken internal invariants only (it aborts); never use it for input.
 */
#ifndef TS_COMMON_ERROR_H
#define TS_COMMON_ERROR_H

#include <stdarg.h>

enum {
    TS_OK = 0,
    TS_E_INVALID = -1,     /* bad argument, flag, request field or file content the user supplied */
    TS_E_IO = -2,          /* open/read/write/mmap failed (errno text in the message) */
    TS_E_FORMAT = -3,      /* a file or message is malformed (bad magic, truncated, out of range) */
    TS_E_NOMEM = -4,       /* allocation failed or a memory budget is exceeded */
    TS_E_UNSUPPORTED = -5, /* well-formed but not supported (tensor type, architecture, ISA) */
    TS_E_NOT_FOUND = -6,   /* a named thing (key, tensor, model, sequence) does not exist */
    TS_E_EXHAUSTED = -7,   /* a queue or pool is full right now; retry later may succeed */
    TS_E_UNAVAILABLE = -8, /* a peer (rank, node, coordinator) is gone or unreachable */
    TS_E_TIMEOUT = -9,     /* a deadline passed */
    TS_E_CANCELLED = -10,  /* the work was cancelled by its owner */
    TS_E_INTERNAL = -11,   /* a bug or an unexpected library failure */
    TS_E_UNAUTHENTICATED = -12, /* a missing or wrong credential (cluster secret, API key) */
};

/* Records a printf-style message for the calling thread and returns `code`. */
int ts_error_set(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int ts_error_setv(int code, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

/* Prefixes the current message with a printf-style context and ": "; returns `code`. */
int ts_error_wrap(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The calling thread's last message ("" if none). Valid until the next ts_error_* call. */
const char *ts_error_message(void);

/* Short stable name of a code: "invalid argument", "I/O error", ... */
const char *ts_error_name(int code);

void ts_error_clear(void);

/* Aborts with file:line and the expression when an internal invariant is broken. */
#define TS_ASSERT(cond)                                                                            \
    do {                                                                                           \
        if (!(cond)) ts_assert_fail(#cond, __FILE__, __LINE__);                                    \
    } while (0)

_Noreturn void ts_assert_fail(const char *expr, const char *file, int line);

#endif
