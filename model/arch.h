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

typedef struct ts_arch {
    const char *name;
    ts_rope_mode rope_mode;
    float rope_theta;
    ts_tensor_rule qkv_bias;
    ts_tensor_rule out_bias;
    ts_tensor_rule rope_freqs;
    const char *const *refused_keys; /* NULL-terminated; may be NULL */
} ts_arch;

extern const ts_arch ts_arch_llama;
extern const ts_arch ts_arch_qwen2;

/* The architecture of that name, or NULL. */
const ts_arch *ts_arch_find(const char *name, size_t len);
/* "llama, qwen2": the names ts_arch_find knows, for error messages. */
const char *ts_arch_names(void);

#endif
