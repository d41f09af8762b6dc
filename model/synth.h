/*
 * synth.h — synthetic Llama GGUF files of realistic shapes, for benchmarks and tests.
 *
 * Timing does not need trained weights, so benchmarks run on files this module writes: the
 * tensors, shapes, metadata and tokenizer of a real model, with random weights. Weights are
 * approximately N(0, 0.02²) (a sum of four uniforms, scaled; cheap enough that the 110m shape
 * is written in seconds), the attention output and FFN down projections scaled by
 * 1/sqrt(2 * n_layers) so the residual stream stays of order one through the layers, and norm
 * weights are 1. Norms are always f32; the other tensors have the requested type, quantized
 * with ts_quantize_row. The same options and seed give the same bytes on every machine.
 *
 * The tokenizer metadata (every `tokenizer.*` key) is copied from a vocab GGUF whose token count
 * must equal the shape's vocabulary; by default the bundled 32000-token SentencePiece vocab
 * models/vocab/llama-spm-32000.gguf (found with ts_find_data_file). vocab_path "none" writes no
 * tokenizer, for shapes whose vocabulary we do not ship (the model then serves token ids only).
 *
 * The file is streamed tensor by tensor through the GGUF writer (memory use is a few rows, not
 * the model) and appears under its name only when complete. Not thread-safe per call; separate
 * calls may run on separate threads.
 */
#ifndef TS_MODEL_SYNTH_H
#define TS_MODEL_SYNTH_H

#include "common/dtype.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct ts_synth_shape {
    const char *name; /* "tiny", "110m", "llama3-8b", or "custom" for explicit dims */
    int32_t dim;
    int32_t n_layers;
    int32_t n_heads;
    int32_t n_kv_heads;
    int32_t n_ff;
    int32_t n_vocab;
    int32_t n_ctx;
    float rope_theta;
    bool tied_output; /* no output.weight: the head is the embedding */
    const char *arch; /* "llama" (NULL) or "qwen2" (adds q/k/v biases; NEOX RoPE when loaded) */
} ts_synth_shape;

/* Named shapes:
 *   tiny       dim 64, 2 layers, 4 heads, 2 KV heads, FFN 128, vocab 32000, ctx 512, tied
 *   qwen2-tiny the same as tiny with architecture qwen2 (q/k/v biases), RoPE theta 1e6
 *   110m       dim 768, 12 layers, 12 heads, 12 KV heads, FFN 2048, vocab 32000, ctx 2048, tied
 *              (the llama2.c stories110M layout)
 *   llama3-8b  dim 4096, 32 layers, 32 heads, 8 KV heads, FFN 14336, vocab 128256, ctx 8192,
 *              RoPE theta 500000, separate output head
 *   qwen2.5-0.5b  qwen2, dim 896, 24 layers, 14 heads, 2 KV heads, FFN 4864, vocab 151936,
 *              ctx 32768, RoPE theta 1e6, separate output head (as the Q4_K_M file stores it)
 *   qwen2.5-1.5b  qwen2, dim 1536, 28 layers, 12 heads, 2 KV heads, FFN 8960, the rest as 0.5b
 * TS_E_INVALID naming the known shapes when `name` is not one of them. */
int ts_synth_shape_by_name(const char *name, ts_synth_shape *out);
/* "tiny, qwen2-tiny, 110m, qwen2.5-0.5b, qwen2.5-1.5b, llama3-8b" */
const char *ts_synth_shape_names(void);

/* Checks a shape for the weight type: every size positive and below a generous limit (dim 65536,
 * 1024 layers and heads, FFN 262144, vocab 4M, context 16M), heads dividing dim and each other,
 * an even head size, and for q8_0/q4_0 dim and n_ff multiples of 32. TS_E_INVALID naming the
 * offending value. */
int ts_synth_shape_check(const ts_synth_shape *shape, ts_dtype type);

/* RoPE scaling written into the file (both may be combined; zero values: none). */
typedef struct ts_synth_rope {
    /* Llama 3.1's "llama3" scaling as converters store it: rope_freqs.weight, per-dimension
     * divisors computed from factor 8, low/high frequency factors 1 and 4 and an original
     * context of the shape's context length (small shapes then cover all three bands). */
    bool llama3_freqs;
    float linear_factor; /* > 0: rope.scaling.type "linear" with this rope.scaling.factor */
} ts_synth_rope;

typedef struct ts_synth_options {
    ts_synth_shape shape;
    ts_synth_rope rope;
    /* Standard deviation of the matrices (0: 0.02, as trained models roughly have). Larger
     * values make attention and the MLP dominate the residual stream, so that small test
     * models' outputs depend on every part of the forward pass (RoPE modes, biases) rather than
     * echoing their input. */
    float std;
    ts_dtype type;          /* of the matrices and the embedding */
    const char *vocab_path; /* NULL: the bundled default; "none": no tokenizer */
    uint64_t seed;
    /* Called after each tensor with the tensor bytes written so far and their total (may be NULL). */
    void (*progress)(void *ctx, uint64_t done_bytes, uint64_t total_bytes);
    void *progress_ctx;
} ts_synth_options;

/* Writes the model to `path`. TS_E_INVALID for a bad shape or a vocab of the wrong size,
 * TS_E_IO / TS_E_FORMAT / TS_E_NOT_FOUND for the vocab file, TS_E_IO for the output. */
int ts_synth_write(const ts_synth_options *opts, const char *path);

#endif
