/*
 * arch.h — decoder architectures as data: what each `general.architecture` of a GGUF file
 * declares, so that one loader (model/model.c) reads them all.
 *
 * Every architecture Tessera runs is a pre-norm decoder of the Llama shape: RMSNorm, attention
 * with rotary embeddings and grouped KV heads, a SwiGLU MLP, residual adds, a final norm and a
 * vocabulary head. What differs between families is small and stated here, one file per
 * architecture (model/arch_<name>.c), each defining one ts_arch:
 *
 *   name           `general.architecture`, which is also the prefix of its hyper-parameter keys
 *                  (`<name>.block_count`, `<name>.attention.head_count`, ...);
 *   rope_mode      how rotary pairs are formed: adjacent elements (TS_ROPE_NORMAL, Llama) or
 *                  the two halves of the rotated dimensions (TS_ROPE_NEOX, Qwen2, GPT-NeoX);
 *   rope_theta     the frequency base when `<name>.rope.freq_base` is absent;
 *   qkv_bias       whether blk.N.attn_{q,k,v}.bias are required (TS_TENSOR_REQUIRED), allowed
 *                  (TS_TENSOR_OPTIONAL: some Llama-family conversions carry them) or refused;
 *   out_bias       the same for blk.N.attn_output.bias;
 *   rope_freqs     whether `rope_freqs.weight` (per-dimension frequency divisors, written by
 *                  converters for Llama 3.1/3.2's "llama3" RoPE scaling) may appear;
 *   refused_keys   hyper-parameter keys (suffixes after "<name>.") whose presence changes the
 *                  maths in a way this implementation does not compute: loading such a file is
 *                  TS_E_UNSUPPORTED naming the key, never a silently different model. The loader
 *                  adds a list common to every architecture (sliding windows, logit
 *                  soft-capping, experts, …; see model.c).
 *
 * The loader also refuses any tensor of the file that the architecture does not use, so a
 * feature we do not compute (an extra norm, a bias we do not add) can never be ignored.
 *
 * Hugging Face checkpoints (config.json + safetensors, model/hf.c) are read as the same GGUF
 * keys and tensors. What maps config.json keys to `<name>.*` keys and HF tensor names to GGUF
 * names is the Llama shape's, shared by every architecture here (ts_arch_hf_keys and
 * ts_arch_hf_tensors, arch.c); each descriptor adds, in `hf`:
 *   model_type     config.json's "model_type" ("llama", "qwen2");
 *   refused_keys   config.json keys that change the maths in a way not computed, refused by name
 *                  unless null, false or 0 (a list common to all is in arch.c);
 *   permute_qk     q_proj/k_proj rows (and biases) are in HF's rotary layout (each head's two
 *                  halves) and llama.cpp's converter permutes them to GGML's adjacent pairs
 *                  (convert_hf_to_gguf.py LlamaModel.permute); the reader applies the same
 *                  permutation so that the weights, and the outputs, equal the GGUF's.
 *
 * Adding an architecture (qwen3, gemma, …): write model/arch_<name>.c with its ts_arch, list it
 * in ts_arch_find (arch.c), and add the kernels and the engine steps it lacks (for example
 * per-head Q/K norms for qwen3) behind a new descriptor field that the other files leave zero.
 */
#ifndef TS_MODEL_ARCH_H
#define TS_MODEL_ARCH_H

#include "kernels/kernels.h"

#include <stdbool.h>

typedef enum {
    TS_TENSOR_ABSENT = 0,   /* refused when present */
    TS_TENSOR_OPTIONAL = 1, /* used when present */
    TS_TENSOR_REQUIRED = 2, /* missing is TS_E_NOT_FOUND */
} ts_tensor_rule;

/* A config.json key read as the hyper-parameter `<name>.<gguf>` (a positive u32 or a float). */
typedef struct ts_arch_hf_key {
    const char *config;
    const char *gguf;
    bool is_float;
    bool required;
} ts_arch_hf_key;

/* Which rows of a tensor the rotary permutation reorders (permute_qk). */
typedef enum { TS_HF_PERMUTE_NONE, TS_HF_PERMUTE_Q, TS_HF_PERMUTE_K } ts_hf_permute;

/* An HF tensor name and its GGUF name. Per-layer entries (per_layer) are suffixes after
 * "model.layers.N." and "blk.N."; the others are whole names. */
typedef struct ts_arch_hf_tensor {
    const char *hf;
    const char *gguf; /* NULL: a tensor derived from other data and skipped (rotary inv_freq) */
    bool per_layer;
    ts_hf_permute permute;
} ts_arch_hf_tensor;

typedef struct ts_arch_hf {
    const char *model_type;
    const char *const *refused_keys; /* NULL-terminated; may be NULL */
    bool permute_qk;
} ts_arch_hf;

typedef struct ts_arch {
    const char *name;
    ts_rope_mode rope_mode;
    float rope_theta;
    ts_tensor_rule qkv_bias;
    ts_tensor_rule out_bias;
    ts_tensor_rule rope_freqs;
    const char *const *refused_keys; /* NULL-terminated; may be NULL */
    ts_arch_hf hf;
} ts_arch;

/* The Llama shape's config.json keys and tensor names (NULL-terminated: config / hf NULL), and
 * the config.json keys every architecture refuses (NULL-terminated). */
extern const ts_arch_hf_key ts_arch_hf_keys[];
extern const ts_arch_hf_tensor ts_arch_hf_tensors[];
extern const char *const ts_arch_hf_refused_keys[];

extern const ts_arch ts_arch_llama;
extern const ts_arch ts_arch_qwen2;

/* The architecture of that name, or NULL. */
const ts_arch *ts_arch_find(const char *name, size_t len);
/* Llama 3.1's "llama3" RoPE scaling as the per-dimension divisors converters store in
 * rope_freqs.weight: out[i] for i < rope_dims / 2, by Meta's reference formula in double
 * (wavelengths below original / high keep their frequency, above original / low are divided by
 * `factor`, the band between blends the two). */
void ts_arch_llama3_rope_factors(double theta, int64_t rope_dims, double factor, double low,
                                 double high, double original, float *out);

/* The architecture whose checkpoints have that config.json "model_type", or NULL. */
const ts_arch *ts_arch_find_hf(const char *model_type);
/* "llama, qwen2": the names ts_arch_find knows, for error messages. */
const char *ts_arch_names(void);

#endif
