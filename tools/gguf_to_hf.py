#!/usr/bin/env python3
"""Writes a Hugging Face checkpoint (config.json, safetensors, tokenizer) holding a GGUF's weights.

    python3 tools/gguf_to_hf.py MODEL.gguf OUTDIR [--shards N] [--no-tokenizer] [--f32-gguf OUT]

Needs the `gguf`, `numpy`, `safetensors` and `tokenizers` packages (scripts/test-venv.py). This
is llama.cpp's convert_hf_to_gguf.py run backwards, so that Tessera's HF reader can be held to
the GGUF path on the same weights:
  - tensor names back to transformers' (token_embd.weight -> model.embed_tokens.weight, ...);
  - f32, f16 and bf16 tensors keep their exact bytes (F32, F16, BF16); quantized ones are
    dequantized to F32 with the gguf package's dequantize;
  - llama's attn_q/attn_k rows (and biases) get the inverse of the converter's rotary permutation
    (LlamaModel.permute); qwen2's are stored as they are;
  - an output.weight equal to the embedding is left out (tie_word_embeddings true);
  - rope_freqs.weight (Llama 3.1 scaling) becomes config.json's rope_scaling {"rope_type":
    "llama3", ...} with Meta's parameters (factor 8, low 1, high 4) and the original context
    (8192, or the file's context_length as `tessera model synth --rope-freqs` writes), after
    checking that they give the file's divisors;
  - config.json from the `<arch>.*` keys; tokenizer.json + tokenizer_config.json from
    tools/make_hf_tokenizer.py.
The safetensors files are written by the safetensors package (serialize_file). With --shards N
the tensors are split over N files model-0000K-of-0000N.safetensors with the usual
model.safetensors.index.json. With --f32-gguf OUT it also writes the GGUF of exactly the
checkpoint's weights (every key copied, quantized tensors dequantized as above), which the
checkpoint must then match token for token.
"""
import argparse
import json
import math
import os
import subprocess
import sys

import numpy as np
from gguf import GGMLQuantizationType as Q, GGUFReader, GGUFValueType, GGUFWriter
from gguf.quants import dequantize
from safetensors import TensorSpec, serialize_file

NAMES = {  # GGUF name (per-layer: after "blk.N.") -> transformers name (after "model.layers.N.")
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.bias": "self_attn.o_proj.bias",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
GLOBAL = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
          "output.weight": "lm_head.weight"}
RAW = {Q.F32: ("float32", np.float32), Q.F16: ("float16", np.float16),
       Q.BF16: ("bfloat16", np.uint16)}


def field(reader, key, default=None):
    f = reader.fields.get(key)
    if f is None:
        return default
    v = f.parts[f.data[0]]
    return bytes(v).decode() if f.types[0].name == "STRING" else v.tolist()[0]


def hf_name(name):
    if name in GLOBAL:
        return GLOBAL[name]
    parts = name.split(".", 2)
    if parts[0] == "blk" and parts[2] in NAMES:
        return "model.layers.%s.%s" % (parts[1], NAMES[parts[2]])
    sys.exit("%s: no transformers name for tensor '%s'" % (sys.argv[1], name))


def unpermute(w, n_head):
    """Inverse of convert_hf_to_gguf.py's permute: GGUF row (h, i, j) -> HF row (h, j, i)."""
    shape = w.shape
    return w.reshape(n_head, shape[0] // n_head // 2, 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def write_f32_gguf(reader, arch, weights, path):
    """A GGUF with the reader's keys and `weights` (GGUF name -> array as the HF side has it,
    before the rotary permutation)."""
    w = GGUFWriter(path, arch)
    for f in reader.fields.values():
        if f.name.startswith("GGUF.") or f.name == "general.architecture":
            continue
        sub = f.types[-1] if f.types[0] == GGUFValueType.ARRAY else None
        w.add_key_value(f.name, f.contents(), f.types[0], sub)
    for name, (t, a) in weights.items():
        if t == Q.BF16:
            w.add_tensor(name, a, raw_dtype=Q.BF16)
        else:
            w.add_tensor(name, a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def llama3_factors(theta, dims, original, factor=8.0, low=1.0, high=4.0):
    out = []
    for i in range(dims // 2):
        wavelen = 2.0 * math.pi * theta ** (2 * i / dims)
        if wavelen < original / high:
            out.append(1.0)
        elif wavelen > original / low:
            out.append(factor)
        else:
            smooth = (original / wavelen - low) / (high - low)
            out.append(1.0 / ((1.0 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def rope_scaling(reader, arch, tensor):
    hp = lambda k, d=None: field(reader, "%s.%s" % (arch, k), d)
    theta = hp("rope.freq_base", 10000.0)
    dims = 2 * int(tensor.shape[0])
    have = np.frombuffer(bytes(tensor.data), dtype=np.float32)
    for original in (8192, hp("context_length")):
        if np.allclose(llama3_factors(theta, dims, original), have, rtol=1e-6, atol=0):
            return {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                    "high_freq_factor": 4.0, "original_max_position_embeddings": original}
    sys.exit("%s: rope_freqs.weight is not Llama 3's scaling with its published parameters"
             % sys.argv[1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("gguf")
    ap.add_argument("out")
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--no-tokenizer", action="store_true")
    ap.add_argument("--f32-gguf")
    args = ap.parse_args()
    reader = GGUFReader(args.gguf)
    arch = field(reader, "general.architecture")
    if arch not in ("llama", "qwen2"):
        sys.exit("%s: architecture %r has no HF layout here" % (args.gguf, arch))
    hp = lambda k, d=None: field(reader, "%s.%s" % (arch, k), d)
    n_head = hp("attention.head_count")
    n_kv = hp("attention.head_count_kv", n_head)
    tensors = {t.name: t for t in reader.tensors}
    emb = tensors["token_embd.weight"]
    tied = "output.weight" not in tensors or (
        tensors["output.weight"].tensor_type == emb.tensor_type and
        bytes(tensors["output.weight"].data) == bytes(emb.data))
    out, gguf_weights, scaling = {}, {}, None
    for t in reader.tensors:
        if t.name == "output.weight" and tied:
            continue
        if t.name == "rope_freqs.weight":
            scaling = rope_scaling(reader, arch, t)
            continue
        shape = [int(d) for d in reversed(t.shape)]
        if t.tensor_type in RAW:
            dtype, np_type = RAW[t.tensor_type]
            w = np.frombuffer(bytes(t.data), dtype=np_type).reshape(shape)
        else:
            dtype, w = "float32", dequantize(t.data, t.tensor_type).astype(np.float32).reshape(shape)
        gguf_weights[t.name] = (t.tensor_type if t.tensor_type in RAW else Q.F32, w)
        if arch == "llama" and t.name.endswith(("attn_q.weight", "attn_q.bias")):
            w = unpermute(w, n_head)
        elif arch == "llama" and t.name.endswith(("attn_k.weight", "attn_k.bias")):
            w = unpermute(w, n_kv)
        out[hf_name(t.name)] = (dtype, np.ascontiguousarray(w))
    if args.f32_gguf:
        write_f32_gguf(reader, arch, gguf_weights, args.f32_gguf)
    os.makedirs(args.out, exist_ok=True)
    config = {
        "architectures": ["Qwen2ForCausalLM" if arch == "qwen2" else "LlamaForCausalLM"],
        "model_type": arch,
        "hidden_size": hp("embedding_length"),
        "num_hidden_layers": hp("block_count"),
        "intermediate_size": hp("feed_forward_length"),
        "num_attention_heads": n_head,
        "num_key_value_heads": n_kv,
        "max_position_embeddings": hp("context_length"),
        "rms_norm_eps": hp("attention.layer_norm_rms_epsilon", 1e-5),
        "rope_theta": hp("rope.freq_base", 10000.0),
        "vocab_size": int(emb.shape[1]),
        "hidden_act": "silu",
        "tie_word_embeddings": tied,
        "torch_dtype": "float32",
    }
    if scaling:
        config["rope_scaling"] = scaling
    if hp("attention.key_length") is not None:
        config["head_dim"] = hp("attention.key_length")
    if arch == "qwen2":
        config.update({"use_sliding_window": False, "sliding_window": 32768})
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    names = list(out)
    specs = {n: TensorSpec(dtype=d, shape=w.shape, data_ptr=w.ctypes.data, data_len=w.nbytes)
             for n, (d, w) in out.items()}
    if args.shards <= 1:
        serialize_file(specs, os.path.join(args.out, "model.safetensors"), {"format": "pt"})
    else:
        weight_map = {}
        per = (len(names) + args.shards - 1) // args.shards
        for k in range(args.shards):
            file = "model-%05d-of-%05d.safetensors" % (k + 1, args.shards)
            part = {n: specs[n] for n in names[k * per:(k + 1) * per]}
            serialize_file(part, os.path.join(args.out, file), {"format": "pt"})
            weight_map.update({n: file for n in part})
        size = sum(w.nbytes for _, w in out.values())
        with open(os.path.join(args.out, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": size}, "weight_map": weight_map}, f, indent=2)
    if not args.no_tokenizer:
        here = os.path.dirname(os.path.abspath(__file__))
        subprocess.run([sys.executable, os.path.join(here, "make_hf_tokenizer.py"), args.gguf,
                        args.out], check=True)


if __name__ == "__main__":
    main()
