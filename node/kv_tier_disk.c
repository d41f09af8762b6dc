/*
 * kv_tier_disk.c — see kv_tier_disk.h.
 *
 * The index is kv_tier_host's store without bytes (its eviction hook deletes the file). A file
 * is named by its key and parent key; the header is written in this machine's byte order (the
 * magic tells another order apart, which then counts as foreign).
 */
#include "node/kv_tier_disk.h"

#include "common/error.h"
#include "common/kv_hash.h"
#include "common/log.h"
#include "node/kv_tier_host.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

enum { VERSION = 1, FIXED = 72 };
static const char MAGIC[8] = {'T', 'S', 'K', 'V', 'B', 'L', 'K', 0};

struct ts_kv_tier_disk {
    ts_kv_tier_disk_options o;
    char path[PATH_MAX];
    ts_kv_tier_host *index;
    size_t header_bytes, file_bytes;
    unsigned char *buf; /* one file */
    ts_kv_tier_disk_scan scan;
    int lock_fd; /* flock'ed: one process per directory */
};

typedef struct header {
    uint32_t version, block_size, rank, group_size;
    uint64_t fingerprint, data_bytes, hash, parent, data_sum;
} header;

static void put32(unsigned char *p, uint32_t v) {
    memcpy(p, &v, 4);
}
static void put64(unsigned char *p, uint64_t v) {
    memcpy(p, &v, 8);
}
static uint32_t get32(const unsigned char *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
static uint64_t get64(const unsigned char *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* Layout: magic 8, version 4, block_size 4, fingerprint 8, rank 4, group_size 4, data_bytes 8,
 * hash 8, parent 8, data checksum 8, header checksum 8 (of everything before it and the
 * tokens), tokens block_size × 4. */
static void encode(const ts_kv_tier_disk *d, const header *h, const int32_t *tokens,
                   unsigned char *p) {
    memcpy(p, MAGIC, 8);
    put32(p + 8, h->version);
    put32(p + 12, h->block_size);
    put64(p + 16, h->fingerprint);
    put32(p + 24, h->rank);
    put32(p + 28, h->group_size);
    put64(p + 32, h->data_bytes);
    put64(p + 40, h->hash);
    put64(p + 48, h->parent);
    put64(p + 56, h->data_sum);
    memcpy(p + FIXED, tokens, (size_t)d->o.block_size * sizeof *tokens);
    put64(p + 64, 0);
    put64(p + 64, ts_kv_block_checksum(p, d->header_bytes));
}

static void decode(const unsigned char *p, header *h) {
    h->version = get32(p + 8);
    h->block_size = get32(p + 12);
    h->fingerprint = get64(p + 16);
    h->rank = get32(p + 24);
    h->group_size = get32(p + 28);
    h->data_bytes = get64(p + 32);
    h->hash = get64(p + 40);
    h->parent = get64(p + 48);
    h->data_sum = get64(p + 56);
}

static void file_name(const ts_kv_tier_disk *d, uint64_t hash, uint64_t parent, const char *ext,
                      char *out, size_t size) {
    snprintf(out, size, "%s/%016llx-%016llx.%s", d->path, (unsigned long long)hash,
             (unsigned long long)parent, ext);
}

static void on_evict(void *user, int32_t slot, uint64_t hash, uint64_t parent,
                     const int32_t *tokens, const void *data) {
    (void)slot, (void)tokens, (void)data;
    ts_kv_tier_disk *d = user;
    char name[PATH_MAX + 64];
    file_name(d, hash, parent, "kvb", name, sizeof name);
    unlink(name);
}

static int mkdirs(const char *path) {
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(tmp, 0755) && errno != EEXIST) return -1;
        *p = '/';
    }
    return mkdir(tmp, 0755) && errno != EEXIST ? -1 : 0;
}

/* Writes the whole buffer to a temporary file and renames it into place. */
static int write_file(ts_kv_tier_disk *d, const char *final_name, const char *tmp_name) {
    int fd = open(tmp_name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return ts_error_set(TS_E_IO, "--kv-disk: cannot create %s: %s", tmp_name, strerror(errno));
    size_t done = 0;
    while (done < d->file_bytes) {
        ssize_t n = write(fd, d->buf + done, d->file_bytes - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            int err = n < 0 ? errno : ENOSPC;
            close(fd);
            unlink(tmp_name);
            return ts_error_set(TS_E_IO, "--kv-disk: writing %s: %s", tmp_name, strerror(err));
        }
        done += (size_t)n;
    }
    if (close(fd) || rename(tmp_name, final_name)) {
        int err = errno;
        unlink(tmp_name);
        return ts_error_set(TS_E_IO, "--kv-disk: finishing %s: %s", final_name, strerror(err));
    }
    return TS_OK;
}

/* ---- the scan at open ---- */

typedef struct found {
    int64_t mtime_ns;
    uint64_t hash, parent, data_sum;
    int32_t *tokens;
} found;

static int by_age(const void *a, const void *b) {
    const found *x = a, *y = b;
    return x->mtime_ns < y->mtime_ns ? -1 : x->mtime_ns > y->mtime_ns;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* Reads one file's header into d->buf; 1 = ours, 0 = foreign (skip), -1 = damaged (remove). */
static int classify(ts_kv_tier_disk *d, const char *name, const struct stat *st, header *h) {
    int fd = open(name, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t n = pread(fd, d->buf, d->header_bytes, 0);
    close(fd);
    if (n < FIXED || memcmp(d->buf, MAGIC, 8) != 0) return -1;
    decode(d->buf, h);
    if (h->version != VERSION || h->fingerprint != d->o.fingerprint ||
        h->block_size != (uint32_t)d->o.block_size || h->rank != (uint32_t)d->o.rank ||
        h->group_size != (uint32_t)d->o.group_size || h->data_bytes != d->o.block_bytes)
        return 0;
    if ((size_t)n != d->header_bytes || (size_t)st->st_size != d->file_bytes) return -1;
    uint64_t stored = get64(d->buf + 64);
    put64(d->buf + 64, 0);
    return ts_kv_block_checksum(d->buf, d->header_bytes) == stored ? 1 : -1;
}

static int scan(ts_kv_tier_disk *d) {
    DIR *dir = opendir(d->path);
    if (!dir)
        return ts_error_set(TS_E_IO, "--kv-disk: cannot read %s: %s", d->path, strerror(errno));
    found *list = NULL;
    size_t n = 0, cap = 0;
    int rc = TS_OK;
    char name[PATH_MAX + 300];
    for (struct dirent *de; !rc && (de = readdir(dir));) {
        if (de->d_name[0] == '.') continue;
        snprintf(name, sizeof name, "%s/%s", d->path, de->d_name);
        if (ends_with(de->d_name, ".tmp")) {
            if (unlink(name) == 0) d->scan.removed_partial++;
            continue;
        }
        struct stat st;
        if (!ends_with(de->d_name, ".kvb") || stat(name, &st) || !S_ISREG(st.st_mode)) continue;
        header h;
        int kind = classify(d, name, &st, &h);
        if (kind == 0) {
            d->scan.foreign++;
            continue;
        }
        if (kind < 0) {
            if (unlink(name) == 0) d->scan.removed_corrupt++;
            continue;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 256;
            found *grown = realloc(list, cap * sizeof *list);
            if (!grown) {
                rc = ts_error_set(TS_E_NOMEM, "out of memory");
                break;
            }
            list = grown;
        }
        int32_t *toks = malloc((size_t)d->o.block_size * sizeof *toks);
        if (!toks) {
            rc = ts_error_set(TS_E_NOMEM, "out of memory");
            break;
        }
        memcpy(toks, d->buf + FIXED, (size_t)d->o.block_size * sizeof *toks);
        list[n++] = (found){(int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec, h.hash,
                            h.parent, h.data_sum, toks};
    }
    closedir(dir);
    if (n > 0) qsort(list, n, sizeof *list, by_age); /* list is NULL when the directory is empty */
    int32_t cap_blocks = ts_kv_tier_host_capacity(d->index);
    for (size_t i = 0; i < n; i++) {
        if (!rc) {
            /* oldest first: when there are more than fit, reserve evicts (and deletes) the
             * oldest leaves, as if they had been stored in that order */
            if (ts_kv_tier_host_n_used(d->index) == cap_blocks) d->scan.removed_over++;
            int32_t slot =
                ts_kv_tier_host_reserve(d->index, list[i].hash, list[i].parent, list[i].tokens);
            if (slot >= 0) ts_kv_tier_host_commit_sum(d->index, slot, list[i].data_sum);
        }
        free(list[i].tokens);
    }
    free(list);
    d->scan.indexed = ts_kv_tier_host_n_used(d->index);
    return rc;
}

/* ---- public ---- */

int ts_kv_tier_disk_open(const ts_kv_tier_disk_options *o, ts_kv_tier_disk **out) {
    *out = NULL;
    ts_kv_tier_disk *d = calloc(1, sizeof *d);
    if (!d) return ts_error_set(TS_E_NOMEM, "out of memory");
    d->o = *o;
    d->header_bytes = FIXED + (size_t)o->block_size * sizeof(int32_t);
    d->file_bytes = d->header_bytes + o->block_bytes;
    int rc = TS_OK;
    if (o->size_bytes / d->file_bytes < 1)
        rc = ts_error_set(TS_E_INVALID,
                          "--kv-disk-size %zu holds no KV block (one block's file is %zu bytes on "
                          "this rank)",
                          o->size_bytes, d->file_bytes);
    d->lock_fd = -1;
    /* Several groups on one host may share DIR: each rank takes the first of rank-R-of-N,
     * rank-R-of-N.1, ... that no other process holds. Any of them serves: blocks of one model
     * and layout are the same bits whichever group computed them. */
    for (int k = 0; !rc && d->lock_fd < 0; k++) {
        char suffix[16] = "";
        if (k) snprintf(suffix, sizeof suffix, ".%d", k);
        if ((size_t)snprintf(d->path, sizeof d->path, "%s/rank-%d-of-%d%s", o->dir, o->rank,
                             o->group_size, suffix) >= sizeof d->path)
            rc = ts_error_set(TS_E_INVALID, "--kv-disk: path too long");
        if (!rc && mkdirs(d->path))
            rc = ts_error_set(TS_E_IO, "--kv-disk: cannot create %s: %s", d->path, strerror(errno));
        char lock[PATH_MAX + 16];
        snprintf(lock, sizeof lock, "%s/.lock", d->path);
        int fd = rc ? -1 : open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (!rc && fd < 0)
            rc = ts_error_set(TS_E_IO, "--kv-disk: cannot create %s: %s", lock, strerror(errno));
        if (fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) == 0)
            d->lock_fd = fd;
        else if (fd >= 0)
            close(fd);
        if (!rc && d->lock_fd < 0 && k == 63)
            rc = ts_error_set(TS_E_IO, "--kv-disk %s: 64 processes use it already", o->dir);
    }
    if (!rc) {
        d->buf = malloc(d->file_bytes);
        size_t n = o->size_bytes / d->file_bytes;
        rc = d->buf ? ts_kv_tier_host_create_index(n > (1u << 28) ? 1 << 28 : (int32_t)n,
                                                   o->block_size, &d->index)
                    : ts_error_set(TS_E_NOMEM, "out of memory");
    }
    if (!rc) { /* can we write here at all? (a read-only or full file system says so now) */
        char probe[PATH_MAX + 64];
        snprintf(probe, sizeof probe, "%s/.probe.tmp", d->path);
        memset(d->buf, 0, d->file_bytes);
        rc = write_file(d, probe, probe);
        unlink(probe);
    }
    if (!rc) {
        ts_kv_tier_host_set_evict_hook(d->index, on_evict, d);
        rc = scan(d);
    }
    if (rc) {
        ts_kv_tier_disk_close(d);
        return rc;
    }
    const ts_kv_tier_disk_scan *s = &d->scan;
    if (s->foreign || s->removed_corrupt || s->removed_partial || s->removed_over)
        TS_WARN("--kv-disk %s: %d blocks indexed; %d files of another model, TP layout or format "
                "skipped (left in place); %d damaged, %d unfinished and %d over --kv-disk-size "
                "removed",
                d->path, s->indexed, s->foreign, s->removed_corrupt, s->removed_partial,
                s->removed_over);
    else if (s->indexed)
        TS_INFO("--kv-disk %s: %d blocks from an earlier run indexed", d->path, s->indexed);
    *out = d;
    return TS_OK;
}

void ts_kv_tier_disk_close(ts_kv_tier_disk *d) {
    if (!d) return;
    ts_kv_tier_host_destroy(d->index);
    if (d->lock_fd >= 0) close(d->lock_fd);
    free(d->buf);
    free(d);
}

const ts_kv_tier_disk_scan *ts_kv_tier_disk_scan_result(const ts_kv_tier_disk *d) {
    return &d->scan;
}
int32_t ts_kv_tier_disk_capacity(const ts_kv_tier_disk *d) {
    return ts_kv_tier_host_capacity(d->index);
}
int32_t ts_kv_tier_disk_n_used(const ts_kv_tier_disk *d) {
    return ts_kv_tier_host_n_used(d->index);
}
size_t ts_kv_tier_disk_file_bytes(const ts_kv_tier_disk *d) {
    return d->file_bytes;
}
const char *ts_kv_tier_disk_path(const ts_kv_tier_disk *d) {
    return d->path;
}

bool ts_kv_tier_disk_has(const ts_kv_tier_disk *d, uint64_t hash, uint64_t parent,
                         const int32_t *tokens) {
    return ts_kv_tier_host_find(d->index, hash, parent, tokens) >= 0;
}

int ts_kv_tier_disk_store(ts_kv_tier_disk *d, uint64_t hash, uint64_t parent, const int32_t *tokens,
                          const void *data) {
    int32_t slot = ts_kv_tier_host_reserve(d->index, hash, parent, tokens);
    if (slot < 0) return TS_OK; /* held: touched */
    header h = {VERSION,
                (uint32_t)d->o.block_size,
                (uint32_t)d->o.rank,
                (uint32_t)d->o.group_size,
                d->o.fingerprint,
                d->o.block_bytes,
                hash,
                parent,
                ts_kv_block_checksum(data, d->o.block_bytes)};
    encode(d, &h, tokens, d->buf);
    memcpy(d->buf + d->header_bytes, data, d->o.block_bytes);
    char name[PATH_MAX + 64], tmp[PATH_MAX + 64];
    file_name(d, hash, parent, "kvb", name, sizeof name);
    file_name(d, hash, parent, "tmp", tmp, sizeof tmp);
    int rc = write_file(d, name, tmp);
    if (rc) {
        ts_kv_tier_host_abort(d->index, slot);
        return rc;
    }
    ts_kv_tier_host_commit_sum(d->index, slot, h.data_sum);
    return TS_OK;
}

static void forget(ts_kv_tier_disk *d, int32_t slot, uint64_t hash, uint64_t parent) {
    on_evict(d, slot, hash, parent, NULL, NULL);
    ts_kv_tier_host_remove(d->index, slot);
}

int ts_kv_tier_disk_load(ts_kv_tier_disk *d, uint64_t hash, uint64_t parent, const int32_t *tokens,
                         void *out) {
    int32_t slot = ts_kv_tier_host_find(d->index, hash, parent, tokens);
    if (slot < 0)
        return ts_error_set(TS_E_NOT_FOUND, "disk KV tier: block %016llx is not held",
                            (unsigned long long)hash);
    char name[PATH_MAX + 64];
    file_name(d, hash, parent, "kvb", name, sizeof name);
    int fd = open(name, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd < 0 ? -1 : pread(fd, d->buf, d->file_bytes, 0);
    int err = errno;
    if (fd >= 0) close(fd);
    if (n < 0) {
        forget(d, slot, hash, parent);
        return ts_error_set(TS_E_IO, "disk KV tier: reading %s: %s (it will be recomputed)", name,
                            strerror(err));
    }
    header h = {0};
    bool ok = (size_t)n == d->file_bytes && memcmp(d->buf, MAGIC, 8) == 0;
    if (ok) decode(d->buf, &h);
    ok = ok && h.hash == hash && h.parent == parent && h.data_bytes == d->o.block_bytes &&
         memcmp(d->buf + FIXED, tokens, (size_t)d->o.block_size * sizeof *tokens) == 0 &&
         h.data_sum == ts_kv_tier_host_checksum(d->index, slot) &&
         ts_kv_block_checksum(d->buf + d->header_bytes, d->o.block_bytes) == h.data_sum;
    if (!ok) {
        forget(d, slot, hash, parent);
        return ts_error_set(TS_E_FORMAT,
                            "disk KV tier: %s does not match its checksum or header: removed, "
                            "the block will be recomputed",
                            name);
    }
    memcpy(out, d->buf + d->header_bytes, d->o.block_bytes);
    return TS_OK;
}

void ts_kv_tier_disk_drop(ts_kv_tier_disk *d, uint64_t hash, uint64_t parent,
                          const int32_t *tokens) {
    int32_t slot = ts_kv_tier_host_find(d->index, hash, parent, tokens);
    if (slot >= 0) forget(d, slot, hash, parent);
}
