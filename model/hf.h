/*
 * hf.h — Hugging Face checkpoints (a directory with config.json and model.safetensors, or
 * model.safetensors.index.json and its shards) as the same ts_gguf view a GGUF file gives, so
 * that the one loader (model/model.h), the engine and every command read them unchanged.
 *
 * ts_hf_open reads config.json, finds the architecture whose hf.model_type is its "model_type"
 * (model/arch.h), and translates:
 *   - config.json keys to `<arch>.*` hyper-parameters through ts_arch_hf_keys (hidden_size →
 *     embedding_length, ...); rope_scaling null or "default" is none, "linear" becomes
 *     rope.scaling.type/factor, "llama3" (architectures allowing rope_freqs) becomes the
 *     rope_freqs.weight divisors converters write (ts_arch_llama3_rope_factors), any other type
 *     is refused; hidden_act must be "silu"; a key of
 *     ts_arch_hf_refused_keys or of the architecture's hf.refused_keys that is not null, false or
 *     0 is refused naming it (TS_E_UNSUPPORTED), as the GGUF path refuses its keys;
 *   - tensor names through ts_arch_hf_tensors (model.layers.N.self_attn.q_proj.weight →
 *     blk.N.attn_q.weight, ...); a name it does not know keeps its HF name, so the loader refuses
 *     it as a tensor the architecture does not use; dims are reversed (row-major shape →
 *     GGML's fastest-first dims);
 *   - dtypes F32, F16 and BF16 (any other is TS_E_UNSUPPORTED naming the tensor); tensor data
 *     must be aligned to its element size (every file the safetensors package writes is).
 * Tensor data stays in the mmap'd files, except q_proj/k_proj weights and biases of
 * architectures with hf.permute_qk (llama), whose rows are permuted into an owned copy exactly as
 * llama.cpp's converter permutes them: the GGUF of the same weights then holds the same bytes.
 *
 * A sharded checkpoint's index is validated: shard names are plain file names in the directory,
 * every tensor of weight_map is in the shard it names, and every tensor of a shard is listed for
 * it. Errors name the file: "ckpt/config.json: key 'use_sliding_window' ...",
 * "ckpt/model-00002-of-00002.safetensors: tensor 'x': ...", with TS_E_IO for a directory without
 * config.json or weights, TS_E_NOT_FOUND for a missing key or listed tensor, TS_E_FORMAT for
 * malformed content and TS_E_UNSUPPORTED for what is well-formed but not computed.
 */
#ifndef TS_MODEL_HF_H
#define TS_MODEL_HF_H

#include "model/gguf.h"

#include <stdbool.h>

/* Opens the checkpoint in directory `dir` as a ts_gguf (close with ts_gguf_close). */
int ts_hf_open(const char *dir, ts_gguf **out);

/* True if `path` is a directory, which model paths mean as a Hugging Face checkpoint. */
bool ts_hf_is_checkpoint(const char *path);

/* A model path of either kind: ts_hf_open for a directory, ts_gguf_open for a file. */
int ts_hf_open_model(const char *path, ts_gguf **out);

#endif
