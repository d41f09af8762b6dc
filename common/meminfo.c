/* meminfo.c — see meminfo.h. Both files hold lines "Key:   123 kB". */
#include "common/meminfo.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static uint64_t read_kib_line(const char *path, const char *key) {
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char line[256];
    size_t key_len = strlen(key);
    uint64_t kib = 0;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, key, key_len) == 0 && line[key_len] == ':') {
            if (sscanf(line + key_len + 1, "%" SCNu64, &kib) != 1) kib = 0;
            break;
        }
    }
    fclose(f);
    return kib * 1024;
}

uint64_t ts_mem_available_bytes(void) {
    return read_kib_line("/proc/meminfo", "MemAvailable");
}
uint64_t ts_mem_resident_bytes(void) {
    return read_kib_line("/proc/self/status", "VmRSS");
}
uint64_t ts_mem_resident_peak_bytes(void) {
    return read_kib_line("/proc/self/status", "VmHWM");
}
