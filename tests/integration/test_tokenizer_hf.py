#!/usr/bin/env python3
"""Hugging Face tokenizer.json against the `tokenizers` package, and against the GGUF it came from.

Usage: test_tokenizer_hf.py TOKENIZER_HF_CHECK

For each test vocabulary (SmolLM2, Qwen2.5-Coder, GPT-2, GPT-2's set to Llama 3's pre-tokenizer,
Llama 2's SentencePiece one) this makes a tokenizer directory with tools/make_hf_tokenizer.py (the `tokenizers` package writes the
tokenizer.json, in the model family's upstream layout; Qwen's gets a config.json whose vocab_size
is the embedding's 151936, as the real checkpoint's), tokenizes tests/data/tokenizer_corpus.json
with the package (special tokens parsed and not, and with the BOS of add_special_tokens), and runs
TOKENIZER_HF_CHECK on the directory, the GGUF and those ids: Tessera's tokenizer.json reader must
give the package's ids exactly, its GGUF reader too wherever the package's NFC normalization does
not change the text. The packages come from PyPI into a cached virtual environment
(scripts/test-venv.py); the test skips (77) only when PyPI cannot be reached.
"""
import json
import os
import subprocess
import sys
import tempfile
import unicodedata

import harness

REQUIREMENTS = ["tokenizers==0.23.3", "gguf==0.19.0", "numpy==2.4.6"]
# (vocabulary, tokenizer.ggml.pre to set, config.json vocab_size)
VOCABS = [
    ("vocab-smollm2-135m-instruct.gguf", None, None),
    ("vocab-qwen2.5-coder-0.5b-instruct.gguf", None, 151936),
    ("ggml-vocab-gpt-2.gguf", None, None),
    ("ggml-vocab-gpt-2.gguf", "llama-bpe", None),
    ("ggml-vocab-llama-spm.gguf", None, None),
]

# Run inside the virtual environment: the package's ids for every text, one JSON line each.
ENCODE = r"""
import json, sys, unicodedata
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[1])
nfc = json.load(open(sys.argv[1]))["normalizer"] == {"type": "NFC"}
for text in json.load(open(sys.argv[2])):
    for parse_special, add_bos in ((False, False), (True, False), (True, True)):
        tok.encode_special_tokens = not parse_special
        ids = tok.encode(text, add_special_tokens=add_bos).ids
        print(json.dumps({"text": text, "parse_special": parse_special, "add_bos": add_bos,
                          "ids": ids, "nfc_changes": nfc and unicodedata.normalize("NFC", text) != text}))
"""


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    check = sys.argv[1]
    python = harness.venv_python(REQUIREMENTS)
    corpus = os.path.join(harness.DATA_DIR, "tokenizer_corpus.json")
    failed = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, pre, vocab_size in VOCABS:
            gguf = os.path.join(harness.DATA_DIR, name)
            out = os.path.join(tmp, name + ("-" + pre if pre else ""))
            if pre:
                variant = out + ".gguf"
                subprocess.run([python, os.path.join(harness.SOURCE_DIR, "tools",
                                                     "make_vocab_gguf.py"), gguf, variant,
                                "--pre", pre], check=True)
                gguf = variant
            subprocess.run([python, os.path.join(harness.SOURCE_DIR, "tools",
                                                 "make_hf_tokenizer.py"), gguf, out], check=True)
            if vocab_size:
                with open(os.path.join(out, "config.json"), "w") as f:
                    json.dump({"vocab_size": vocab_size}, f)
            cases = out + ".jsonl"
            with open(cases, "w") as f:
                subprocess.run([python, "-c", ENCODE, os.path.join(out, "tokenizer.json"), corpus],
                               stdout=f, check=True)
            p = subprocess.run([check, out, gguf, cases], capture_output=True, text=True)
            sys.stderr.write(p.stderr)
            if p.returncode != 0:
                failed.append(name + (" with pre " + pre if pre else ""))
    if failed:
        sys.exit("FAIL: " + ", ".join(failed))
    print("ok: %d tokenizer directories match the tokenizers package" % len(VOCABS))


if __name__ == "__main__":
    main()
