/*
 * test_simd_lanes.c — simd.h's ts_v_hsum_lanes (L horizontal sums at once, by shuffles across
 * registers) gives, lane j, exactly ts_v_hsum(v[j]) (the one summation tree) in every build:
 * attention's scores rely on it to stay bit-identical to summing key by key. Random sets with
 * magnitudes from 1e-30 to 1e30, signed zeros and cancellations, so that any change in which
 * pairs are added shows up in the rounding.
 */
#include "common/rng.h"
#include "kernels/cpu/cpu_backend.h"
#include "test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

int simd_hsum_lanes_mismatches_avx2(const float *data, int n_sets);
int simd_hsum_lanes_mismatches_avx512(const float *data, int n_sets);
int simd_hsum_lanes_mismatches_avx512emu(const float *data, int n_sets);

enum { SETS = 20000 };

static void test_hsum_lanes_equals_hsum_in_every_build(void) {
    float *data = malloc((size_t)SETS * 256 * sizeof(float));
    ts_rng rng;
    ts_rng_seed(&rng, 99);
    for (size_t i = 0; i < (size_t)SETS * 256; i++) {
        float x = ts_rng_normal(&rng) * powf(10.0f, (float)(ts_rng_next(&rng) % 61) - 30.0f);
        switch (ts_rng_next(&rng) % 16) {
        case 0: x = 0.0f; break;
        case 1: x = -0.0f; break;
        case 2: x = i ? -data[i - 1] : x; break; /* cancellations */
        default: break;
        }
        data[i] = x;
    }
    struct {
        ts_cpu_impl impl;
        int (*check)(const float *, int);
    } builds[] = {{TS_CPU_IMPL_AVX2, simd_hsum_lanes_mismatches_avx2},
                  {TS_CPU_IMPL_AVX512, simd_hsum_lanes_mismatches_avx512},
                  {TS_CPU_IMPL_AVX512_EMU, simd_hsum_lanes_mismatches_avx512emu}};
    int ran = 0;
    for (size_t b = 0; b < sizeof builds / sizeof builds[0]; b++) {
        if (!ts_cpu_impl_supported(builds[b].impl)) {
            printf("%s: not supported by this CPU, not checked\n", ts_cpu_impl_name(builds[b].impl));
            continue;
        }
        int bad = builds[b].check(data, SETS);
        printf("%s: %d lanes differ\n", ts_cpu_impl_name(builds[b].impl), bad);
        fflush(stdout);
        CHECK_EQ_INT(bad, 0);
        ran++;
    }
    free(data);
    if (!ran) test_skip("this CPU has no AVX2: no SIMD build to check");
}

int main(void) {
    RUN(test_hsum_lanes_equals_hsum_in_every_build);
    return test_summary();
}
