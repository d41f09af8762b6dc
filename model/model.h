/*
 * llama.h — the Llama architecture as described by a GGUF file: hyper-parameters and the
 * validated set of weight tensors.
 *
 * ts_llama_load reads the `llama.*` metadata and finds every tensor the forward pass needs,
 * checking each one's type and shape against the hyper-parameters. A missing key or tensor, a
 * shape that does not match, or a type we cannot compute with gives one error naming the file
 * and the key or tensor:
 *   "m.gguf: tensor 'blk.2.ffn_up.weight': shape [64, 171], expected [64, 172]".
 * Codes: TS_E_NOT_FOUND for a missing key or tensor, TS_E_FORMAT for a value of the wrong type,
 * out of range or inconsistent (heads that do not divide, RoPE dims odd or beyond the head, a
 * vocabulary size that disagrees with the embedding, a shape mismatch), TS_E_UNSUPPORTED for
 * another architecture, value_length != key_length or a quantized norm.
 * Shapes are written GGML-style, fastest dimension first: a weight of `rows` outputs and `cols`
 * inputs has shape [cols, rows].
 *
 * Norm weights are 1-D f32, f16 or bf16 of length dim. When `output.weight` is absent, or holds
 * exactly the bytes of `token_embd.weight` (converters of tied models often store the embedding
 * twice), the output head is the token embedding (tied weights). The result holds pointers into the ts_gguf, which
 * must outlive it. Sharding for tensor parallelism is done by node/ from these full views.
 */
#ifndef TS_MODEL_LLAMA_H
#define TS_MODEL_LLAMA_H

#include "kernels/kernels.h"
#include "model/gguf.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct ts_llama_hparams {
    int32_t n_vocab;
    int32_t n_ctx_train;   /* llama.context_length */
    int32_t dim;           /* llama.embedding_length */
    int32_t n_layers;      /* llama.block_count */
    int32_t n_ff;          /* llama.feed_forward_length */
    int32_t n_heads;       /* llama.attention.head_count */
    int32_t n_kv_heads;    /* llama.attention.head_count_kv (default n_heads) */
    int32_t head_dim;      /* llama.attention.key_length (default dim / n_heads) */
    int32_t rope_dims;     /* llama.rope.dimension_count (default head_dim) */
    float rope_theta;      /* llama.rope.freq_base (default 10000) */
    float rms_eps;         /* llama.attention.layer_norm_rms_epsilon (default 1e-5) */
    bool tied_output;      /* output head = token_embd.weight (no or an identical output.weight) */
} ts_llama_hparams;

/* A 1-D tensor (norm weights). */
typedef struct ts_llama_vector {
    ts_dtype type; /* f32, f16 or bf16 */
    int64_t n;
    const void *data;
} ts_llama_vector;

typedef struct ts_llama_layer {
    ts_llama_vector attn_norm;
    ts_weight wq;   /* [n_heads * head_dim][dim] */
    ts_weight wk;   /* [n_kv_heads * head_dim][dim] */
    ts_weight wv;   /* [n_kv_heads * head_dim][dim] */
    ts_weight wo;   /* [dim][n_heads * head_dim] */
    ts_llama_vector ffn_norm;
    ts_weight w_gate; /* [n_ff][dim] */
    ts_weight w_up;   /* [n_ff][dim] */
    ts_weight w_down; /* [dim][n_ff] */
} ts_llama_layer;

typedef struct ts_llama_model {
    const ts_gguf *gguf;
    ts_llama_hparams hp;
    ts_weight token_embd; /* [n_vocab][dim] */
    ts_llama_vector output_norm;
    ts_weight output;     /* [n_vocab][dim]; equals token_embd when tied */
    ts_llama_layer *layers; /* n_layers entries, owned */
} ts_llama_model;

/* Validates general.architecture == "llama" and fills *out. Weights are host views (mmap). */
int ts_llama_load(const ts_gguf *g, ts_llama_model *out);
void ts_llama_free(ts_llama_model *m); /* frees `layers`; safe on a zeroed struct */

/* Total bytes of all weights the forward pass reads per token at batch 1 (every layer matrix and
 * norm, the final norm and the output head; the embedding contributes one row, so a tied output
 * counts the table once as the head plus that row). Used for the roofline figure. */
uint64_t ts_llama_bytes_per_token(const ts_llama_model *m);

#endif
