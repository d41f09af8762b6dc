/*
 * model.h — a decoder model as described by a GGUF file: its architecture (model/arch.h),
 * hyper-parameters and the validated set of weight tensors.
 *
 * ts_model_load reads `general.architecture`, finds its descriptor, reads the `<arch>.*`
 * hyper-parameters and finds every tensor the forward pass needs, checking each one's type and
 * shape against the hyper-parameters. A missing key or tensor, a shape that does not match, or
 * a type we cannot compute with gives one error naming the file and the key or tensor:
 *   "m.gguf: tensor 'blk.2.ffn_up.weight': shape [64, 171], expected [64, 172]".
 * Codes: TS_E_NOT_FOUND for a missing key or tensor, TS_E_FORMAT for a value of the wrong type,
 * out of range or inconsistent (heads that do not divide, RoPE dims odd or beyond the head, a
 * vocabulary size that disagrees with the embedding, a shape mismatch), TS_E_UNSUPPORTED for
 * an unknown architecture, value_length != key_length, a quantized norm, a hyper-parameter that
 * changes the maths in a way not implemented (a sliding window, YaRN RoPE scaling, experts…)
 * and any tensor of the file the architecture does not use (an ignored tensor would silently
 * make another model). Shapes are written GGML-style, fastest dimension first: a weight of
 * `rows` outputs and `cols` inputs has shape [cols, rows].
 *
 * Norm weights and biases are 1-D f32, f16 or bf16. When `output.weight` is absent, or holds
 * exactly the bytes of `token_embd.weight` (converters of tied models often store the embedding
 * twice), the output head is the token embedding (tied weights). The result holds pointers into
 * the ts_gguf, which must outlive it. Sharding for tensor parallelism is done by node/ from these
 * full views.
 */
#ifndef TS_MODEL_MODEL_H
#define TS_MODEL_MODEL_H

#include "kernels/kernels.h"
#include "model/arch.h"
#include "model/gguf.h"

#include <stdbool.h>
#include <stdint.h>

/* Key names below are suffixes of `<arch>.` (e.g. qwen2.block_count). */
typedef struct ts_model_hparams {
    int32_t n_vocab;
    int32_t n_ctx_train;    /* context_length */
    int32_t dim;            /* embedding_length */
    int32_t n_layers;       /* block_count */
    int32_t n_ff;           /* feed_forward_length */
    int32_t n_heads;        /* attention.head_count */
    int32_t n_kv_heads;     /* attention.head_count_kv (default n_heads) */
    int32_t head_dim;       /* attention.key_length (default dim / n_heads) */
    int32_t rope_dims;      /* rope.dimension_count (default head_dim) */
    float rope_theta;       /* rope.freq_base (default: the architecture's) */
    ts_rope_mode rope_mode; /* the architecture's */
    float rope_freq_scale;  /* 1 / rope.scaling.factor with rope.scaling.type "linear"; else 1 */
    float rms_eps;          /* attention.layer_norm_rms_epsilon (default 1e-5) */
    bool tied_output;       /* output head = token_embd.weight (no or an identical output.weight) */
} ts_model_hparams;

/* A 1-D tensor (norm weights, biases, RoPE frequency factors); n == 0 when absent. */
typedef struct ts_model_vector {
    ts_dtype type; /* f32, f16 or bf16 */
    int64_t n;
    const void *data;
} ts_model_vector;

typedef struct ts_model_layer {
    ts_model_vector attn_norm;
    ts_weight wq;                   /* [n_heads * head_dim][dim] */
    ts_weight wk;                   /* [n_kv_heads * head_dim][dim] */
    ts_weight wv;                   /* [n_kv_heads * head_dim][dim] */
    ts_weight wo;                   /* [dim][n_heads * head_dim] */
    ts_model_vector bq, bk, bv, bo; /* biases of wq, wk, wv, wo (n == 0: none) */
    ts_model_vector ffn_norm;
    ts_weight w_gate; /* [n_ff][dim] */
    ts_weight w_up;   /* [n_ff][dim] */
    ts_weight w_down; /* [dim][n_ff] */
} ts_model_layer;

typedef struct ts_model {
    const ts_gguf *gguf;
    const ts_arch *arch;
    ts_model_hparams hp;
    ts_weight token_embd; /* [n_vocab][dim] */
    ts_model_vector output_norm;
    ts_weight output;           /* [n_vocab][dim]; equals token_embd when tied */
    ts_model_vector rope_freqs; /* rope_freqs.weight: rope_dims / 2 divisors (n == 0: none) */
    ts_model_layer *layers;     /* n_layers entries, owned */
} ts_model;

/* Loads the architecture `general.architecture` names and fills *out. Weights are host views
 * (mmap). */
int ts_model_load(const ts_gguf *g, ts_model *out);
void ts_model_free(ts_model *m); /* frees `layers`; safe on a zeroed struct */

/* Total bytes of all weights the forward pass reads per token at batch 1 (every layer matrix and
 * norm, the final norm and the output head; the embedding contributes one row, so a tied output
 * counts the table once as the head plus that row). Used for the roofline figure. */
uint64_t ts_model_bytes_per_token(const ts_model *m);

/* The model's rotary embedding with the given frequency factors (host memory, rope_dims / 2
 * floats, or NULL when the model has none): the engine converts rope_freqs to f32 once. */
ts_rope ts_model_rope(const ts_model *m, const float *freq_factors);

#endif
