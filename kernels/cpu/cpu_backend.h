/*
 * cpu_backend.h — the CPU implementation of ts_backend (kernels/kernels.h), internal to kernels/.
 *
 * node/ never includes this header: it calls ts_backend_create with device "cpu". Tests use
 * ts_cpu_backend_create to pick an implementation the public ts_cpu_isa cannot name: the
 * 16-lane kernels built on pairs of AVX2 registers (TS_CPU_IMPL_AVX512_EMU), which computes
 * bit for bit what the real AVX-512 build computes, so the 16-lane logic (tails, lane order,
 * reduction tree) is tested on CPUs without AVX-512.
 *
 * Implementations:
 *   scalar     the reference kernels of ref.h, single-threaded ("cpu-scalar")
 *   avx2       8 lanes, AVX2 + FMA + F16C ("cpu-avx2")
 *   avx512     16 lanes, AVX-512 F/BW/VL/DQ ("cpu-avx512")
 *   avx512emu  16 lanes on AVX2 register pairs ("cpu-avx512emu"), for tests
 * All but scalar run on the persistent thread pool (ts_backend_options.n_threads).
 */
#ifndef TS_KERNELS_CPU_CPU_BACKEND_H
#define TS_KERNELS_CPU_CPU_BACKEND_H

#include "kernels/kernels.h"

#include <stdbool.h>

typedef enum {
    TS_CPU_IMPL_SCALAR = 0,
    TS_CPU_IMPL_AVX2 = 1,
    TS_CPU_IMPL_AVX512 = 2,
    TS_CPU_IMPL_AVX512_EMU = 3,
    TS_CPU_IMPL_COUNT = 4,
} ts_cpu_impl;

/* Creates the CPU backend with implementation impl (opts->isa and opts->device are ignored).
 * TS_E_UNSUPPORTED when this CPU cannot run impl; TS_E_NOMEM / TS_E_INTERNAL otherwise. */
int ts_cpu_backend_create(const ts_backend_options *opts, ts_cpu_impl impl, ts_backend **out);

/* Whether this CPU can run impl. */
bool ts_cpu_impl_supported(ts_cpu_impl impl);

/* "scalar", "avx2", "avx512", "avx512emu". */
const char *ts_cpu_impl_name(ts_cpu_impl impl);

#endif
