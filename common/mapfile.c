/* mapfile.c — see mapfile.h. */
#include "common/mapfile.h"

#include "common/error.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int ts_mapfile_open(const char *path, ts_mapfile *out) {
    out->data = NULL;
    out->size = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ts_error_set(TS_E_IO, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int err = errno;
        close(fd);
        return ts_error_set(TS_E_IO, "%s: %s", path, strerror(err));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return ts_error_set(TS_E_IO, "%s: not a regular file", path);
    }
    size_t size = (size_t)st.st_size;
    if (size > 0) {
        void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            int err = errno;
            close(fd);
            return ts_error_set(TS_E_IO, "%s: mmap failed: %s", path, strerror(err));
        }
        out->data = map;
        out->size = size;
    }
    close(fd); /* the mapping keeps the file */
    return TS_OK;
}

void ts_mapfile_close(ts_mapfile *m) {
    if (!m) return;
    if (m->data) munmap((void *)m->data, m->size);
    m->data = NULL;
    m->size = 0;
}
