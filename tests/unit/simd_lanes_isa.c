/*
 * simd_lanes_isa.c — compiled once per instruction set, like kernels/cpu/simd_ops.c (see
 * tests/kernels.cmake), for test_simd_lanes.c: checks simd.h's ts_v_hsum_lanes against
 * ts_v_hsum in that build. Only called where the CPU supports the instruction set.
 */
#include "kernels/cpu/simd.h"

#include <string.h>

#if defined(TS_SIMD_AVX2)
#define CHECK_FN simd_hsum_lanes_mismatches_avx2
#elif defined(TS_SIMD_AVX512)
#define CHECK_FN simd_hsum_lanes_mismatches_avx512
#else
#define CHECK_FN simd_hsum_lanes_mismatches_avx512emu
#endif

/* data: n_sets sets of 16 x 16 floats (a build of L lanes uses L x L of each set). Returns how
 * many lanes of ts_v_hsum_lanes differ in any bit from ts_v_hsum of their vector. */
int CHECK_FN(const float *data, int n_sets);
int CHECK_FN(const float *data, int n_sets) {
    int bad = 0;
    for (int s = 0; s < n_sets; s++) {
        const float *set = data + (size_t)s * 16 * 16;
        ts_v v[TS_SIMD_LANES];
        for (int j = 0; j < TS_SIMD_LANES; j++)
            v[j] = ts_v_load(set + j * 16);
        float lanes[TS_SIMD_LANES];
        ts_v_store(lanes, ts_v_hsum_lanes(v));
        for (int j = 0; j < TS_SIMD_LANES; j++) {
            float one = ts_v_hsum(v[j]);
            bad += memcmp(&one, &lanes[j], sizeof one) != 0;
        }
    }
    return bad;
}
