/*
 * mapfile.h — a whole file mapped read-only (mmap), for the weight readers (GGUF, safetensors).
 *
 * ts_mapfile_open maps `path` (MAP_PRIVATE, PROT_READ) and fills *out; an empty file gives
 * data == NULL and size == 0. Errors are TS_E_IO naming the path: "PATH: No such file or
 * directory", "PATH: not a regular file", "PATH: mmap failed: ...". The mapping stays valid
 * until ts_mapfile_close, which is safe on a zeroed struct.
 */
#ifndef TS_COMMON_MAPFILE_H
#define TS_COMMON_MAPFILE_H

#include <stddef.h>

typedef struct ts_mapfile {
    const void *data; /* NULL for an empty file */
    size_t size;
} ts_mapfile;

int ts_mapfile_open(const char *path, ts_mapfile *out);
void ts_mapfile_close(ts_mapfile *m);

#endif
