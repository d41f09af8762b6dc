/*
 * buf.h — a growable byte buffer (string builder).
 *
 * A ts_buf is a plain struct; zero-initialise it ({0}) and free it with ts_buf_free. The data is
 * always NUL-terminated after any successful append, so it can be used as a C string. Appends
 * return 0 or TS_E_NOMEM; after a failure the buffer keeps its previous content.
 * Not thread-safe (one owner).
 */
#ifndef TS_COMMON_BUF_H
#define TS_COMMON_BUF_H

#include <stddef.h>

typedef struct ts_buf {
    char *data;
    size_t len;
    size_t cap;
} ts_buf;

int ts_buf_reserve(ts_buf *b, size_t extra);
int ts_buf_append(ts_buf *b, const void *data, size_t n);
int ts_buf_append_str(ts_buf *b, const char *s);
int ts_buf_append_char(ts_buf *b, char c);
int ts_buf_printf(ts_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Empties the buffer but keeps its memory. */
void ts_buf_clear(ts_buf *b);
void ts_buf_free(ts_buf *b);

/* Reads a whole file into b (appending). TS_E_IO with "PATH: strerror" on failure. */
int ts_buf_read_file(ts_buf *b, const char *path);

#endif
