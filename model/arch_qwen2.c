/*
 * arch_qwen2.c — `qwen2`: Qwen2 and Qwen2.5 (base, Instruct, Coder).
 *
 * The Llama shape with three differences: q, k and v projections carry f32 biases (required),
 * RoPE rotates the two halves of each head (NEOX mode), and the frequency base is usually 1e6
 * (the files state it). The output projection has no bias. Qwen2's sliding window is off in
 * every released checkpoint; a file that turns it on is refused (model.c's common list).
 */
#include "model/arch.h"

static const char *const qwen2_hf_refused[] = {"use_sliding_window", NULL};

const ts_arch ts_arch_qwen2 = {
    .name = "qwen2",
    .rope_mode = TS_ROPE_NEOX,
    .rope_theta = 10000.0f,
    .qkv_bias = TS_TENSOR_REQUIRED,
    .out_bias = TS_TENSOR_ABSENT,
    .rope_freqs = TS_TENSOR_ABSENT,
    .refused_keys = NULL,
    /* Released configs carry "sliding_window" with "use_sliding_window": false; the switch is
     * what matters. q/k rows are used as stored (NEOX RoPE is transformers' layout). */
    .hf = {.model_type = "qwen2", .refused_keys = qwen2_hf_refused, .permute_qk = false},
};
