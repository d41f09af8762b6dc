/*
 * probe.h — measured machine ceilings, the baselines that benchmarks report against.
 *
 * Decode at batch 1 is bound by memory read bandwidth and prefill by FMA throughput, so the
 * kernel and engine benchmarks print their figures as fractions of what this machine does in
 * the simplest loops that reach those limits:
 *   - ts_probe_fma_peak_gflops: every thread runs independent chains of vector FMAs (the widest
 *     the CPU has: AVX-512, AVX2, or scalar) with no memory traffic;
 *   - ts_probe_read_bandwidth_gbs: every thread sums its share of a buffer of `bytes` bytes
 *     (make it much larger than the last-level cache, e.g. 1 GiB) with vector loads, in two
 *     variants (with and without software prefetch), keeping the faster.
 * Each runs a few repetitions (about 0.1–0.5 s in all) and returns the best. Threads come from a
 * private ts_threadpool of n_threads (<= 0: all cores). On failure (out of memory) they return
 * 0 with the error message set.
 */
#ifndef TS_KERNELS_CPU_PROBE_H
#define TS_KERNELS_CPU_PROBE_H

#include <stddef.h>

double ts_probe_fma_peak_gflops(int n_threads);
double ts_probe_read_bandwidth_gbs(int n_threads, size_t bytes);

#endif
