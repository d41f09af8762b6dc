#!/usr/bin/env python3
"""make_quant_reference.py — tests/data/quant_reference.jsonl: random blocks of every quantized
weight type and their values as the gguf Python package (an implementation independent of ours,
GGML's reference in numpy) dequantizes them. test_quant checks ts_dequantize_row against it, bit
for bit.

    python3 tools/make_quant_reference.py > tests/data/quant_reference.jsonl
Needs the `gguf` and `numpy` packages. One JSON object per line:
    {"type": "q4_K", "blocks": N, "data": "<hex bytes>", "values": "<hex of little-endian f32>"}
The scale fields (f16) get finite random values, the rest random bytes; a few blocks have zero,
tiny (subnormal) and large scales.
"""
import json
import sys

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize

# name -> (type, block bytes, byte offsets of the f16 scale fields)
TYPES = {
    "q4_0": (T.Q4_0, 18, [0]),
    "q4_1": (T.Q4_1, 20, [0, 2]),
    "q5_0": (T.Q5_0, 22, [0]),
    "q5_1": (T.Q5_1, 24, [0, 2]),
    "q8_0": (T.Q8_0, 34, [0]),
    "iq4_nl": (T.IQ4_NL, 18, [0]),
    "q2_K": (T.Q2_K, 84, [80, 82]),
    "q3_K": (T.Q3_K, 110, [108]),
    "q4_K": (T.Q4_K, 144, [0, 2]),
    "q5_K": (T.Q5_K, 176, [0, 2]),
    "q6_K": (T.Q6_K, 210, [208]),
}


def main():
    rng = np.random.default_rng(20261203)
    specials = [0.0, 6.0e-8, 1.0e-5, 3.0e4, -2.5]
    for name, (qtype, size, scale_at) in TYPES.items():
        n = 24
        data = rng.integers(0, 256, size=(n, size), dtype=np.uint8)
        for b in range(n):
            for k, at in enumerate(scale_at):
                if b < len(specials):
                    v = specials[b] * (1 if k == 0 else 0.5)
                else:
                    v = rng.normal(0, 0.05)
                data[b, at:at + 2] = np.frombuffer(np.float16(v).tobytes(), dtype=np.uint8)
        values = dequantize(data.reshape(1, -1), qtype).astype("<f4").reshape(-1)
        assert np.all(np.isfinite(values)), name
        print(json.dumps({"type": name, "blocks": n, "data": data.tobytes().hex(),
                          "values": values.tobytes().hex()}))


if __name__ == "__main__":
    sys.exit(main())
