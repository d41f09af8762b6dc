/* buf.c — see buf.h. */
#include "common/buf.h"

#include "common/error.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int ts_buf_reserve(ts_buf *b, size_t extra) {
    if (b->len + extra + 1 <= b->cap) return TS_OK;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + extra + 1) {
        if (cap > ((size_t)-1) / 2) return ts_error_set(TS_E_NOMEM, "buffer size overflow");
        cap *= 2;
    }
    char *data = realloc(b->data, cap);
    if (!data) return ts_error_set(TS_E_NOMEM, "out of memory growing a buffer to %zu bytes", cap);
    b->data = data;
    b->cap = cap;
    return TS_OK;
}

int ts_buf_append(ts_buf *b, const void *data, size_t n) {
    int rc = ts_buf_reserve(b, n);
    if (rc) return rc;
    if (n) memcpy(b->data + b->len, data, n);
    b->len += n;
    b->data[b->len] = '\0';
    return TS_OK;
}

int ts_buf_append_str(ts_buf *b, const char *s) { return ts_buf_append(b, s, strlen(s)); }

int ts_buf_append_char(ts_buf *b, char c) { return ts_buf_append(b, &c, 1); }

int ts_buf_printf(ts_buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char small[256];
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) return ts_error_set(TS_E_INTERNAL, "bad format string");
    if ((size_t)n < sizeof small) return ts_buf_append(b, small, (size_t)n);
    int rc = ts_buf_reserve(b, (size_t)n);
    if (rc) return rc;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return TS_OK;
}

void ts_buf_clear(ts_buf *b) {
    b->len = 0;
    if (b->data) b->data[0] = '\0';
}

void ts_buf_free(ts_buf *b) {
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

int ts_buf_read_file(ts_buf *b, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return ts_error_set(TS_E_IO, "%s: %s", path, strerror(errno));
    char chunk[65536];
    size_t n;
    int rc = TS_OK;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        rc = ts_buf_append(b, chunk, n);
        if (rc) break;
    }
    if (!rc && ferror(f)) rc = ts_error_set(TS_E_IO, "%s: read error: %s", path, strerror(errno));
    fclose(f);
    if (!rc && !b->data) rc = ts_buf_reserve(b, 0); /* empty file: still a valid C string */
    if (!rc && b->data) b->data[b->len] = '\0';
    return rc;
}
