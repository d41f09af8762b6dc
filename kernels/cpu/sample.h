/*
 * sample.h — the CPU backend's fast sampler.
 *
 * Follows the definition of ts_ref_sample (ref.h) operation for operation, so it picks the same
 * token for the same row, parameters and uniform draw, bit for bit. It avoids sorting the whole
 * vocabulary: top-k keeps a heap of k entries, and top-p sorts only the candidates above a
 * probability threshold that it lowers until their cumulative sum reaches top_p (those
 * candidates are exactly a prefix of the full sorted order, so the cut is the reference's).
 * Scratch: ts_cpu_sample_scratch_bytes(n_cols) bytes, owned by the caller; nothing allocates.
 */
#ifndef TS_KERNELS_CPU_SAMPLE_H
#define TS_KERNELS_CPU_SAMPLE_H

#include "kernels/kernels.h"

#include <stddef.h>
#include <stdint.h>

size_t ts_cpu_sample_scratch_bytes(int32_t n_cols);

int32_t ts_cpu_sample(const float *logits, int32_t n_cols, const ts_sampling *params, void *scratch,
                      float *logprob);

#endif
