#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_safetensors: tests/fuzz/make_safetensors_corpus.py OUTDIR

Small files in the layout the safetensors package writes (u64 header length, the JSON header
padded with spaces to 8 bytes, the data), valid ones of every dtype and a few near misses, so that
the fuzzer starts from the shapes real checkpoints have. Plain Python, no packages.
"""
import json
import os
import struct
import sys

BITS = {"BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "I16": 16, "U16": 16, "F16": 16,
        "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "F64": 64, "I64": 64, "U64": 64,
        "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "F8_E8M0": 8, "F4": 4, "C64": 64}


def image(tensors, metadata=None, raw_header=None):
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape in tensors:
        n = 1
        for d in shape:
            n *= d
        size = n * BITS[dtype] // 8
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + size]}
        data += bytes((len(data) + i) & 0xFF for i in range(size))
    text = raw_header if raw_header is not None else json.dumps(header, separators=(",", ":"))
    text = text.encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    cases = {
        "empty-header": image([]),
        "metadata": image([("w", "F32", [2, 2])], {"format": "pt"}),
        "all-dtypes": image([("t_" + d, d, [2, 4]) for d in BITS]),
        "model": image([("model.embed_tokens.weight", "BF16", [10, 8]),
                        ("model.layers.0.self_attn.q_proj.weight", "F16", [8, 8]),
                        ("model.layers.0.self_attn.q_proj.bias", "F32", [8]),
                        ("model.norm.weight", "F32", [8]), ("scalar", "F64", []),
                        ("empty", "I64", [0, 3])]),
        "overlap": image([], raw_header='{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
                                        '"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}'),
        "bad-size": image([], raw_header='{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}'),
        "unknown-dtype": image([], raw_header='{"a":{"dtype":"F7","shape":[2],'
                                              '"data_offsets":[0,8]}}'),
    }
    for name, data in cases.items():
        with open(os.path.join(out, name + ".safetensors"), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
