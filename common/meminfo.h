/* meminfo.h — how much memory this machine has free and this process holds (Linux /proc). */
#ifndef TS_COMMON_MEMINFO_H
#define TS_COMMON_MEMINFO_H

#include <stdint.h>

/* Bytes the kernel estimates can be allocated without swapping (MemAvailable of /proc/meminfo);
 * 0 when it cannot be read. */
uint64_t ts_mem_available_bytes(void);

/* This process's resident set (VmRSS of /proc/self/status) and its peak (VmHWM), in bytes;
 * 0 when it cannot be read. */
uint64_t ts_mem_resident_bytes(void);
uint64_t ts_mem_resident_peak_bytes(void);

#endif
