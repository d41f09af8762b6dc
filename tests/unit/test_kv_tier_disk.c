/* test_kv_tier_disk.c — the disk KV tier: files survive a reopen, another model's files are
 * skipped and kept, damaged and unfinished ones removed, the size is never exceeded, a checksum
 * mismatch discards the block, and a directory that cannot be written (or a full disk) is an
 * error, never a crash. */
#include "common/error.h"
#include "common/log.h"
#include "node/kv_tier_disk.h"
#include "tests/unit/test.h"

#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

enum { BS = 2, BYTES = 256 };

static char root[256];

static ts_kv_tier_disk_options opts(const char *dir, uint64_t fingerprint, size_t blocks) {
    ts_kv_tier_disk_options o = {dir, 0, fingerprint, 0, 1, BS, BYTES};
    o.size_bytes = blocks * (72 + BS * 4 + BYTES);
    return o;
}

static void fill(unsigned char *d, int seed) {
    for (int i = 0; i < BYTES; i++)
        d[i] = (unsigned char)(seed * 31 + i);
}

static int count_files(const char *dir, const char *suffix) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        size_t l = strlen(e->d_name), m = strlen(suffix);
        if (l > m && strcmp(e->d_name + l - m, suffix) == 0) n++;
    }
    closedir(d);
    return n;
}

/* Stores blocks 0 .. n-1: a chain, key i+1 after key i (tokens {i, i}). */
static void store_chain(ts_kv_tier_disk *d, int n) {
    unsigned char data[BYTES];
    for (int i = 0; i < n; i++) {
        int32_t toks[BS] = {i, i};
        fill(data, i);
        CHECK_OK(ts_kv_tier_disk_store(d, (uint64_t)i + 1, (uint64_t)i, toks, data));
    }
}

static bool load_ok(ts_kv_tier_disk *d, int i) {
    int32_t toks[BS] = {i, i};
    unsigned char data[BYTES], want[BYTES];
    fill(want, i);
    return ts_kv_tier_disk_load(d, (uint64_t)i + 1, (uint64_t)i, toks, data) == TS_OK &&
           memcmp(data, want, BYTES) == 0;
}

static void test_blocks_survive_a_reopen_and_foreign_files_are_kept(void) {
    char dir[300];
    snprintf(dir, sizeof dir, "%s/reopen", root);
    ts_kv_tier_disk_options o = opts(dir, 0xabc, 8);
    ts_kv_tier_disk *d = NULL;
    CHECK_OK(ts_kv_tier_disk_open(&o, &d));
    store_chain(d, 5);
    char rank_dir[400];
    snprintf(rank_dir, sizeof rank_dir, "%s", ts_kv_tier_disk_path(d));
    ts_kv_tier_disk_close(d);
    CHECK_EQ_INT(count_files(rank_dir, ".kvb"), 5);
    /* another model (fingerprint) sees none of them and deletes none */
    ts_kv_tier_disk_options other = opts(dir, 0xdef, 8);
    CHECK_OK(ts_kv_tier_disk_open(&other, &d));
    CHECK_EQ_INT(ts_kv_tier_disk_scan_result(d)->foreign, 5);
    CHECK_EQ_INT(ts_kv_tier_disk_n_used(d), 0);
    CHECK(!load_ok(d, 0));
    ts_kv_tier_disk_close(d);
    CHECK_EQ_INT(count_files(rank_dir, ".kvb"), 5);
    /* the same model again: all five back, with their bytes */
    CHECK_OK(ts_kv_tier_disk_open(&o, &d));
    CHECK_EQ_INT(ts_kv_tier_disk_scan_result(d)->indexed, 5);
    for (int i = 0; i < 5; i++)
        CHECK(load_ok(d, i));
    /* a second user of DIR (another group on this host) gets a directory of its own */
    ts_kv_tier_disk *second = NULL;
    CHECK_OK(ts_kv_tier_disk_open(&o, &second));
    CHECK(strcmp(ts_kv_tier_disk_path(second), rank_dir) != 0);
    CHECK_EQ_INT(ts_kv_tier_disk_n_used(second), 0);
    ts_kv_tier_disk_close(second);
    ts_kv_tier_disk_close(d);
}

static void test_damaged_and_unfinished_files_are_removed(void) {
    char dir[300];
    snprintf(dir, sizeof dir, "%s/damaged", root);
    ts_kv_tier_disk_options o = opts(dir, 7, 8);
    ts_kv_tier_disk *d = NULL;
    CHECK_OK(ts_kv_tier_disk_open(&o, &d));
    store_chain(d, 3);
    char path[600];
    /* a flipped data byte: found at load, the file removed, the block gone */
    snprintf(path, sizeof path, "%s/%016llx-%016llx.kvb", ts_kv_tier_disk_path(d), 2ull, 1ull);
    int fd = open(path, O_RDWR);
    CHECK(fd >= 0);
    unsigned char byte;
    CHECK(pread(fd, &byte, 1, 72 + BS * 4 + 10) == 1);
    byte ^= 1;
    CHECK(pwrite(fd, &byte, 1, 72 + BS * 4 + 10) == 1);
    close(fd);
    int32_t toks[BS] = {1, 1};
    unsigned char data[BYTES];
    CHECK_EQ_INT(ts_kv_tier_disk_load(d, 2, 1, toks, data), TS_E_FORMAT);
    CHECK(strstr(ts_error_message(), "recomputed") != NULL);
    CHECK(!ts_kv_tier_disk_has(d, 2, 1, toks));
    CHECK(access(path, F_OK) != 0);
    /* a flipped header byte and an unfinished write: removed at the next open */
    snprintf(path, sizeof path, "%s/%016llx-%016llx.kvb", ts_kv_tier_disk_path(d), 3ull, 2ull);
    fd = open(path, O_RDWR);
    CHECK(fd >= 0 && pwrite(fd, "X", 1, 44) == 1);
    close(fd);
    snprintf(path, sizeof path, "%s/0000-0000.tmp", ts_kv_tier_disk_path(d));
    fd = open(path, O_WRONLY | O_CREAT, 0644);
    CHECK(fd >= 0 && write(fd, "partial", 7) == 7);
    close(fd);
    ts_kv_tier_disk_close(d);
    CHECK_OK(ts_kv_tier_disk_open(&o, &d));
    const ts_kv_tier_disk_scan *s = ts_kv_tier_disk_scan_result(d);
    CHECK_EQ_INT(s->indexed, 1);
    CHECK_EQ_INT(s->removed_corrupt, 1);
    CHECK_EQ_INT(s->removed_partial, 1);
    CHECK(load_ok(d, 0));
    ts_kv_tier_disk_close(d);
}

static void test_size_is_never_exceeded(void) {
    char dir[300];
    snprintf(dir, sizeof dir, "%s/size", root);
    ts_kv_tier_disk_options o = opts(dir, 9, 4);
    ts_kv_tier_disk *d = NULL;
    CHECK_OK(ts_kv_tier_disk_open(&o, &d));
    CHECK_EQ_INT(ts_kv_tier_disk_capacity(d), 4);
    unsigned char data[BYTES];
    for (int i = 0; i < 12; i++) { /* unrelated blocks: oldest out first */
        int32_t toks[BS] = {i, -i};
        fill(data, i);
        CHECK_OK(ts_kv_tier_disk_store(d, 1000 + (uint64_t)i, 1, toks, data));
        CHECK(ts_kv_tier_disk_n_used(d) <= 4);
        CHECK(count_files(ts_kv_tier_disk_path(d), ".kvb") <= 4);
    }
    int32_t last[BS] = {11, -11}, first[BS] = {0, 0};
    CHECK(ts_kv_tier_disk_has(d, 1011, 1, last) && !ts_kv_tier_disk_has(d, 1000, 1, first));
    char rank_dir[400];
    snprintf(rank_dir, sizeof rank_dir, "%s", ts_kv_tier_disk_path(d));
    ts_kv_tier_disk_close(d);
    /* reopened smaller: the oldest files beyond the size go */
    ts_kv_tier_disk_options small = opts(dir, 9, 2);
    CHECK_OK(ts_kv_tier_disk_open(&small, &d));
    CHECK_EQ_INT(ts_kv_tier_disk_n_used(d), 2);
    CHECK_EQ_INT(count_files(rank_dir, ".kvb"), 2);
    CHECK(ts_kv_tier_disk_has(d, 1011, 1, last));
    ts_kv_tier_disk_close(d);
    /* less than one block */
    ts_kv_tier_disk_options none = opts(dir, 9, 0);
    CHECK_EQ_INT(ts_kv_tier_disk_open(&none, &d), TS_E_INVALID);
    CHECK(strstr(ts_error_message(), "--kv-disk-size") != NULL);
}

static void test_unwritable_directory_is_an_error(void) {
    char file[300];
    snprintf(file, sizeof file, "%s/a-file", root);
    FILE *f = fopen(file, "w");
    CHECK(f != NULL);
    fclose(f);
    ts_kv_tier_disk_options o = opts(file, 1, 4); /* a file where the directory should be */
    ts_kv_tier_disk *d = NULL;
    CHECK_EQ_INT(ts_kv_tier_disk_open(&o, &d), TS_E_IO);
    CHECK(strstr(ts_error_message(), "--kv-disk") != NULL);
    CHECK(d == NULL);
}

static void test_full_disk_leaves_blocks_out(void) {
    /* a 64 KiB tmpfs in a private mount namespace (root only; skipped elsewhere) */
    char dir[300];
    snprintf(dir, sizeof dir, "%s/full", root);
    mkdir(dir, 0755);
    if (unshare(CLONE_NEWNS) || mount("none", "/", NULL, MS_REC | MS_PRIVATE, NULL) ||
        mount("tmpfs", dir, "tmpfs", 0, "size=64k")) {
        printf("skip test_full_disk_leaves_blocks_out: cannot mount a small tmpfs here\n");
        return;
    }
    ts_kv_tier_disk_options o = opts(dir, 3, 10000); /* the size allows far more than fits */
    ts_kv_tier_disk *d = NULL;
    CHECK_OK(ts_kv_tier_disk_open(&o, &d));
    unsigned char data[BYTES];
    int stored = 0, failed = 0;
    for (int i = 0; i < 400; i++) {
        int32_t toks[BS] = {i, 7};
        fill(data, i);
        int rc = ts_kv_tier_disk_store(d, 5000 + (uint64_t)i, 1, toks, data);
        if (rc == TS_OK)
            stored++;
        else {
            CHECK_EQ_INT(rc, TS_E_IO);
            CHECK(strstr(ts_error_message(), "No space") != NULL);
            CHECK(!ts_kv_tier_disk_has(d, 5000 + (uint64_t)i, 1, toks));
            failed++;
        }
    }
    CHECK(stored > 0 && failed > 0);
    CHECK_EQ_INT(ts_kv_tier_disk_n_used(d), stored);
    int32_t toks0[BS] = {0, 7};
    unsigned char out[BYTES], want[BYTES];
    fill(want, 0);
    CHECK_OK(ts_kv_tier_disk_load(d, 5000, 1, toks0, out)); /* what was written still reads */
    CHECK(memcmp(out, want, BYTES) == 0);
    CHECK_EQ_INT(count_files(ts_kv_tier_disk_path(d), ".tmp"), 0);
    ts_kv_tier_disk_close(d);
    umount(dir);
}

int main(void) {
    ts_log_set_level(TS_LOG_ERROR);
    snprintf(root, sizeof root, "/tmp/tessera-kvdisk-XXXXXX");
    if (!mkdtemp(root)) return 1;
    RUN(test_blocks_survive_a_reopen_and_foreign_files_are_kept);
    RUN(test_damaged_and_unfinished_files_are_removed);
    RUN(test_size_is_never_exceeded);
    RUN(test_unwritable_directory_is_an_error);
    RUN(test_full_disk_leaves_blocks_out);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    if (system(cmd)) return 1;
    return test_summary();
}
