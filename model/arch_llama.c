/*
 * arch_llama.c — `llama`: Llama 2, 3, 3.1 and 3.2, SmolLM, TinyLlama, Mistral 7B (without a
 * sliding window) and the other models converters write under this name.
 *
 * RoPE rotates adjacent pairs (GGML's normal mode) with base 10000 unless the file says
 * otherwise. Llama 3.1/3.2's "llama3" RoPE scaling arrives as rope_freqs.weight. Some
 * conversions carry attention biases; they are added when present. Mixtral-style experts (also
 * written as `llama`) are refused through expert_count (model.c's common list).
 *
 * Hugging Face checkpoints (model_type "llama") store q_proj/k_proj rows in the rotary layout of
 * transformers (each head's first half, then its second); the converter permutes them to GGML's
 * adjacent pairs, and so does the HF reader.
 */
#include "model/arch.h"

const ts_arch ts_arch_llama = {
    .name = "llama",
    .rope_mode = TS_ROPE_NORMAL,
    .rope_theta = 10000.0f,
    .qkv_bias = TS_TENSOR_OPTIONAL,
    .out_bias = TS_TENSOR_OPTIONAL,
    .rope_freqs = TS_TENSOR_OPTIONAL,
    .refused_keys = NULL,
    /* A Llama with a sliding window is `mistral` in transformers, so no window key here. */
    .hf = {.model_type = "llama", .refused_keys = NULL, .permute_qk = true},
};
